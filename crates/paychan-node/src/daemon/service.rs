//! A service sold over a channel: the hook through which the daemon serves an extension of the
//! channel protocol (the paid file service of `paychan-files`) without knowing it.
//!
//! The daemon hands the [`Service`] every [`Extension`] message a payer sends and tells it of
//! each run of payments; the service keeps a [`Session`] per channel, whose
//! [`Session::record`] is saved with the channel's state ([`ChannelRecord::service`]). What a
//! session sends is in two parts: its answers, which leave at once, and what may leave only
//! once its new record is saved ([`Session::outbox`]: the file service's chunk, which leaves
//! unpaid only once the sale records it owed).
//!
//! [`ChannelRecord::service`]: paychan::store::ChannelRecord::service

use bitcoin::Amount;
use paychan::channel::Payee;
use paychan::wire::{ChannelId, Extension};

/// Why a service refused a message; its text goes back to the payer in an `error` message.
pub type ServiceError = Box<dyn std::error::Error + Send + Sync>;

/// A service sold over the daemon's channels.
pub trait Service: std::fmt::Debug + Send + Sync + 'static {
    /// Whether the service takes the extension message `kind` (such as `file_request`) from
    /// payers.
    fn takes(&self, kind: &str) -> bool;

    /// Returns the session of channel `channel_id`, from the record its last session saved
    /// (`None` for a new channel).
    fn session(&self, channel_id: ChannelId, record: Option<serde_json::Value>)
        -> Box<dyn Session>;
}

/// A service's state on one channel.
pub trait Session: Send + Sync {
    /// What to save with the channel; saved with every state of the channel.
    fn record(&self) -> Option<serde_json::Value>;

    /// The payer now speaks on another connection: what was being sent on the old one stops.
    fn reconnected(&mut self);

    /// Takes an extension message from the payer on `channel` and returns the answers to send at
    /// once. If [`Session::record`] changed, the daemon saves it before it sends what
    /// [`Session::outbox`] returns.
    ///
    /// # Errors
    /// A refusal, sent to the payer; the session should be left as it was.
    fn on_message(
        &mut self,
        channel: &Payee,
        msg: &Extension,
    ) -> Result<Vec<Extension>, ServiceError>;

    /// The channel's payer has now paid `paid` in all (after a run of payments). If
    /// [`Session::record`] changed, the daemon saves it with the channel's state, then sends
    /// what [`Session::outbox`] returns.
    fn on_paid(&mut self, paid: Amount);

    /// Returns what may leave now that the session's record is saved.
    ///
    /// # Errors
    /// A refusal, sent to the payer (the payments are saved and acknowledged regardless).
    fn outbox(&mut self) -> Result<Vec<Extension>, ServiceError>;
}
