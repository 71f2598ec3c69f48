//! paychan: a Bitcoin micropayment channel engine.
//!
//! The scheme is the classic one-way channel with a decreasing-`nLockTime` ladder:
//!
//! 1. **Funding**: the payer locks the capacity in a `wsh(multi(2,payer,payee))` output
//!    ([`funding::FundingScript`]), spending segwit inputs only so its txid cannot change.
//! 2. **Refund**: before the funding is broadcast, the payee signs a transaction that returns the
//!    capacity to the payer with `nLockTime = R` ([`tx::ChannelTxBuilder::refund`]).
//! 3. **Commitments**: every payment is a new transaction splitting the capacity, with
//!    `nLockTime = R - k*step` ([`ladder::LockTimeLadder`]), so the newest is final first.
//! 4. **Settlement**: a final split with `nLockTime = 0`, broadcast at once.
//!
//! The core is sans-IO: [`channel::Payer`] and [`channel::Payee`] take messages
//! ([`wire::Message`]) and chain facts (the tip height through `tip_changed`, the funding's
//! confirmations through [`channel::Payee::funding_confirmed`]) and return [`channel::Action`]s
//! for the caller to carry out (persist, send, broadcast). The core (`channel`, `tx`, `funding`,
//! `ladder`, `keys`, `wire`) opens no socket, file or RPC connection.
//!
//! Around it sit the adapters: [`chain`] (Bitcoin Core over RPC), [`wallet`] (keys and coins),
//! [`store`] (SQLite), [`datadir`] (the two, locked), [`net`] (TCP frames and handshake),
//! [`daemon`] (the payee, serving many channels), [`client`] (the payer, one channel at a time)
//! and [`cli`] (the `paychan` command line).
//!
//! Every transaction a peer asks us to sign or accept is rebuilt locally from the channel
//! parameters; only a signature travels, and it is checked against our own copy.
#![warn(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod chain;
pub mod channel;
pub mod cli;
pub mod client;
pub mod closing;
pub mod daemon;
pub mod datadir;
pub mod files;
pub mod funding;
pub mod keys;
pub mod ladder;
pub mod net;
pub mod store;
pub mod tx;
pub mod wallet;
pub mod wire;

pub use bitcoin;
pub use miniscript;
