//! The channel state machines: [`Payer`] and [`Payee`].
//!
//! They do no I/O. Each call takes a message from the peer (or a fact about the chain, such as
//! the tip height or the funding's confirmations) and returns the actions ([`PayerAction`], [`PayeeAction`]) the caller
//! must carry out, in order. A call that fails returns a [`ChannelError`] and leaves the state exactly as it
//! was.
//!
//! The flow (payer-first; see `docs/protocol.md`):
//!
//! ```text
//! payer                                   payee
//!   open_channel         ------------->   (terms, checkpoint policy)
//!                        <-------------   accept_channel
//!   (build + sign funding, keep it)
//!   funding_created      ------------->   (unsigned funding tx)
//!                        <-------------   refund_signed
//!   (check refund sig, then broadcast funding)
//!                        <-------------   channel_ready (after min_conf)
//!   pay k                ------------->   (rebuild, check payer's sig, persist)
//!                        <-------------   pay_ack k
//!   pay k+1, checkpoint  ------------->   (rebuild, check, countersign, persist)
//!                        <-------------   pay_ack k+1 + payee's sig
//!   closing_signed       ------------->   (rebuild, check, sign, persist, broadcast)
//!                        <-------------   closing_ack
//! ```
//!
//! After a reconnect the payer sends `reestablish`; the payee answers `reconcile` with the
//! newest payment it holds, and the payer, having checked its own signature on it, stands where
//! the payee stands before it resends what is still in flight (see `reconcile.rs`).

mod error;
mod funded;
mod payee;
mod payer;
mod payment;
mod payment_run;
mod reconcile;

pub use error::{ChannelError, TxKind};
pub use funded::{
    Channel, ChannelParams, ChannelTerms, FundedChannel, SettlementSigs, SignedUpdate,
};
pub use payee::{Payee, PayeeConfig, PayeeStage, PayeeState};
pub use payer::{Payer, PayerConfig, PayerFunded, PayerStage, PayerState};
pub use payment::{CheckpointPolicy, Payment};
pub use payment_run::{needed_acks, PaymentRun};

use bitcoin::{Address, Amount, Transaction};

use crate::wire::Message;

/// Something the caller of the [`Payer`] must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayerAction {
    /// Save the state machine's `state()` durably now, before carrying out any action after this
    /// one: a message sent or a transaction broadcast must never be ahead of what is on disk.
    Persist,
    /// Send this message to the payee.
    Send(Message),
    /// Broadcast this transaction.
    Broadcast(Transaction),
    /// Build and sign a funding transaction from segwit coins that pays `amount` to `address`,
    /// keep it, and hand it to [`Payer::funding_signed`]. Do not broadcast it: the payer
    /// broadcasts it only once the refund signature has been checked.
    FundChannel {
        /// The channel's 2-of-2 P2WSH address.
        address: Address,
        /// The capacity.
        amount: Amount,
    },
}

/// Something the caller of the [`Payee`] must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayeeAction {
    /// Save the state machine's `state()` durably now, before carrying out any action after this
    /// one: a message sent or a transaction broadcast must never be ahead of what is on disk.
    Persist,
    /// Send this message to the payer.
    Send(Message),
    /// Broadcast this transaction.
    Broadcast(Transaction),
}
