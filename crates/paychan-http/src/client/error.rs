//! What can go wrong paying over HTTP, and what each error means for the money.

use bitcoin::Amount;
use paychan::channel::ChannelError;
use paychan::store::StoreError;
use paychan::wire::ChannelId;
use paychan_node::client::ClientError;
use paychan_wallet::WalletError;

use crate::headers::HeaderError;

/// Errors of [`super::PaidClient`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The request could not be sent or its answer read, and nothing was paid for it.
    #[error("http: {0}")]
    Http(#[source] reqwest::Error),
    /// The gateway did not answer, even after retries; nothing was paid.
    #[error("the gateway did not answer: {0}; nothing was paid")]
    Unanswered(String),
    /// The payment was sent but its answer never came, even after retries. It stays in flight
    /// and is offered again with the next request to this payee, which it pays for if the
    /// payee has it: it is never paid twice.
    #[error("payment {update} ({total} sat in total) sent but not answered: {reason}; it is offered again with the next request")]
    InFlight {
        /// The payment's number.
        update: u64,
        /// The channel's total with it.
        total: Amount,
        /// The last failure.
        reason: String,
    },
    /// The gateway refused the payment; nothing was charged.
    #[error("the gateway refused the payment ({status}): {reason}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What it said.
        reason: String,
    },
    /// Paying would pass the budget; nothing was paid.
    #[error("over budget: this request costs {price}, {what} is {limit}")]
    OverBudget {
        /// What the request would cost.
        price: Amount,
        /// Which limit: the most per request, or what is left of the total.
        what: &'static str,
        /// The limit.
        limit: Amount,
    },
    /// There is no usable channel to the payee, and none may be opened (no capacity given).
    #[error("no open channel to {node_id} with enough left; give a capacity to open one")]
    NoChannel {
        /// The payee's node id.
        node_id: bitcoin::PublicKey,
    },
    /// The channel asked for is not one to this payee, or is not open.
    #[error("channel {0} cannot pay this gateway: {1}")]
    WrongChannel(ChannelId, String),
    /// A 402 or a paid answer whose headers do not parse.
    #[error("the gateway's answer: {0}")]
    Header(#[from] HeaderError),
    /// The request's body is a stream, which cannot be sent again to retry it.
    #[error("the request cannot be retried (its body is a stream)")]
    NotRetryable,
    /// Opening or loading the channel failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The channel's state machine refused.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The wallet failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The node failed.
    #[error(transparent)]
    Chain(#[from] paychan::chain::ChainError),
}
