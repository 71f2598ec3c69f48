//! The payer client's errors: each says which case a failed command is (nothing sent, in
//! flight, refused) and what to do.

use bitcoin::Amount;

use crate::net::NetError;
use paychan::chain::ChainError;
use paychan::channel::ChannelError;
use paychan::store::StoreError;
use paychan::wire::ChannelId;
use paychan_wallet::WalletError;

/// Errors of the payer's client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The payee could not be reached: nothing was signed or sent.
    #[error("cannot reach the payee, nothing was sent: {0}")]
    Unreachable(#[source] NetError),
    /// The payee could not be reached: nothing new was signed or sent, but an earlier payment is
    /// still in flight.
    #[error(
        "cannot reach the payee, nothing new was sent; the earlier payment of update {update} \
         ({} sat in total) stays in flight: {source}",
        total.to_sat()
    )]
    UnreachableInFlight {
        /// The update in flight.
        update: u64,
        /// The total it pays.
        total: Amount,
        /// Why the payee could not be reached.
        #[source]
        source: NetError,
    },
    /// A payment was sent and not acknowledged; it stays in flight.
    #[error(
        "the payee did not acknowledge the payment of update {update} ({} sat in total): \
         {reason}; it stays in flight and is offered again the next time the payee is reached",
        total.to_sat()
    )]
    InFlight {
        /// The update number.
        update: u64,
        /// The total it pays.
        total: Amount,
        /// What went wrong.
        reason: String,
    },
    /// The payee answered with an error.
    #[error("the payee refused: {0}")]
    Refused(String),
    /// The connection failed after the handshake.
    #[error("connection to the payee failed: {0}")]
    Connection(#[source] NetError),
    /// The payee did not answer in time.
    #[error("no answer from the payee within {secs} s while waiting for {waiting_for}")]
    Timeout {
        /// What was awaited.
        waiting_for: &'static str,
        /// The timeout.
        secs: u64,
    },
    /// No such channel in the data directory.
    #[error("no channel {0} in this data directory (see: paychan list)")]
    UnknownChannel(ChannelId),
    /// The channel is one this data directory is paid on.
    #[error("channel {0} is one we are paid on; only its payer can do this")]
    NotPayer(ChannelId),
    /// The channel never got its funding: nothing is at stake, nothing can be done with it.
    #[error("channel {0} was never funded ({1}); open a new one")]
    NeverFunded(ChannelId, &'static str),
    /// The channel is not waiting for a funding from another wallet (`fund --psbt`).
    #[error("channel {0} is {1}, not waiting for its funding; only a channel opened with --external and not funded yet takes a PSBT")]
    NotAwaitingFunding(ChannelId, &'static str),
    /// The PSBT cannot fund the channel; nothing was sent or broadcast.
    #[error("the PSBT cannot fund channel {0}, nothing was broadcast: {1}")]
    BadPsbt(ChannelId, String),
    /// The channel takes no more payments.
    #[error("channel {0} is {1}: it takes no more payments (open a new channel to pay more)")]
    NotOpen(ChannelId, &'static str),
    /// The payee has not seen the funding's confirmations yet.
    #[error(
        "channel {0} is not ready: the payee is still waiting for the funding's confirmations"
    )]
    NotReady(ChannelId),
    /// The wallet's spendable coins are short of the capacity.
    #[error(
        "insufficient funds: {} sat spendable besides the fee reserve, {} sat asked for the channel (plus its fee)",
        available.to_sat(),
        capacity.to_sat()
    )]
    InsufficientFunds {
        /// The spendable balance less the fee reserve.
        available: Amount,
        /// The capacity asked for.
        capacity: Amount,
    },
    /// The channel state machine refused.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The wallet failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The node failed or refused a transaction.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The state machine asked for an action this client does not know (a newer core).
    #[error("the channel asked for an action this client cannot carry out: {0}")]
    UnknownAction(String),
    /// The stored peer does not parse.
    #[error("stored peer of channel {0} is corrupt")]
    CorruptPeer(ChannelId),
}
