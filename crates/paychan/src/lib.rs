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
//! confirmations through [`channel::Payee::funding_confirmed`]) and return actions
//! ([`channel::PayerAction`], [`channel::PayeeAction`]) for the caller to carry out (persist,
//! send, broadcast). This crate opens no socket, file or RPC connection, and depends on no async
//! runtime, database or RPC client.
//!
//! It also holds the traits the adapters implement: [`chain::Chain`] (what paychan asks of the
//! Bitcoin network) and [`store::Store`] (where channels are kept, and how durably). The adapters
//! are crates of their own: `paychan-bitcoind` (Bitcoin Core over RPC), `paychan-wallet` (keys
//! and coins), `paychan-sqlite` (the store on SQLite), `paychan-node` (tokio: the transport, the
//! payee daemon, the payer client), `paychan-files` (the paid file service) and `paychan-cli`
//! (the `paychan` command line). docs/architecture.md draws them.
//!
//! Every transaction a peer asks us to sign or accept is rebuilt locally from the channel
//! parameters; only a signature travels, and it is checked against our own copy.
#![warn(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod auth;
pub mod chain;
pub mod channel;
pub mod closing;
pub mod funding;
pub mod keys;
pub mod ladder;
pub mod psbt;
pub mod store;
pub mod tx;
pub mod watch;
pub mod wire;

pub use bitcoin;
pub use miniscript;
