//! Payments that reach the daemon other than over its own connections: one at a time, each
//! with the price it must pay, from a front end such as the HTTP gateway (`paychan-http`).
//!
//! A payment is the payer's signature on the channel's next commitment, as in a `pay` message,
//! and it is taken exactly as one is there: checked against the daemon's own copy of the
//! commitment, countersigned if it is a checkpoint, and saved (group commit) before
//! [`PaymentDesk::take`] returns its acknowledgement. The channel's lock serializes it with the
//! channel's other payments, from any connection.

use std::sync::Arc;

use bitcoin::{Amount, PublicKey};
use tracing::warn;

use paychan::chain::Chain;
use paychan::channel::{ChannelError, PayeeAction};
use paychan::watch::BlockSource;
use paychan::wire::{ChannelId, Message, Pay, PayAck};

use super::{Shared, Slot};

/// A handle on the daemon's channels that takes payments one at a time ([`Daemon::desk`]).
/// Cloning it is cheap.
///
/// [`Daemon::desk`]: super::Daemon::desk
pub struct PaymentDesk<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for PaymentDesk<C> {
    fn clone(&self) -> Self {
        PaymentDesk { shared: Arc::clone(&self.shared) }
    }
}

/// A payment the desk took, or found it had taken already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The acknowledgements to hand the payer, oldest first: the newest payment's, with the
    /// payee's signature if it is a checkpoint (and, for a payment sent again, the newest
    /// checkpoint's before it).
    pub acks: Vec<PayAck>,
    /// Whether this payment is new. `false`: it was the channel's newest payment already (the
    /// payer sent it again, not knowing it had arrived), and nothing more is paid now.
    pub fresh: bool,
    /// The channel's total paid, this payment included.
    pub paid_total: Amount,
    /// Whether the channel's next payment would fall inside the payee's margin: the payer
    /// should settle now and open another channel.
    pub settle_requested: bool,
}

/// Why the desk refused a payment. Nothing was taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentRefused {
    /// No channel of this daemon has that id.
    #[error("unknown channel")]
    UnknownChannel,
    /// The payment does not pay the price.
    #[error("the payment pays {got} sat; the price is {expected} sat")]
    WrongAmount {
        /// The price.
        expected: u64,
        /// What it pays (its total less the channel's total before it).
        got: i128,
    },
    /// An older payment than the channel's newest, or another one of the same number: it was
    /// replaced.
    #[error("stale payment {update}: the channel's newest is {newest}")]
    Stale {
        /// The payment's number.
        update: u64,
        /// The channel's newest payment.
        newest: u64,
    },
    /// The daemon has not heard from its node recently enough to check a locktime.
    #[error("the payee cannot reach its bitcoin node; try again later")]
    StaleTip,
    /// The channel refused it (a bad signature, a wrong locktime, the channel closing).
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// It could not be saved, so it was not taken.
    #[error("the payee could not save the channel")]
    NotSaved,
}

impl<C: Chain + BlockSource + Send + Sync + 'static> PaymentDesk<C> {
    pub(super) fn new(shared: Arc<Shared<C>>) -> Self {
        PaymentDesk { shared }
    }

    /// Returns the node key payers open channels with.
    pub fn node_id(&self) -> PublicKey {
        self.shared.identity.node_id()
    }

    /// Takes `pay` as a payment of exactly `price` and returns its acknowledgement once it is
    /// saved. The channel's newest payment sent again is acknowledged again without being paid
    /// twice ([`Taken::fresh`] is then `false`, and its price is not checked: the caller decides
    /// what it still buys).
    ///
    /// # Errors
    /// [`PaymentRefused`], with nothing taken.
    pub async fn take(&self, pay: &Pay, price: Amount) -> Result<Taken, PaymentRefused> {
        let id = pay.channel_id;
        let mut slot = self.shared.lock_slot(id).await.ok_or(PaymentRefused::UnknownChannel)?;
        let tip = self.shared.fresh_tip().map_err(|_| PaymentRefused::StaleTip)?;
        // With front ends sharing the store, this copy of the channel may be behind: a payment
        // refused, or whose save finds a newer row, is taken again on the newest state.
        match self.take_on(&mut slot, pay, price, tip).await {
            Err(
                PaymentRefused::Channel(_)
                | PaymentRefused::Stale { .. }
                | PaymentRefused::NotSaved,
            ) if self.shared.refresh(&mut slot).await => {
                self.take_on(&mut slot, pay, price, tip).await
            }
            outcome => outcome,
        }
    }

    async fn take_on(
        &self,
        slot: &mut Slot,
        pay: &Pay,
        price: Amount,
        tip: u32,
    ) -> Result<Taken, PaymentRefused> {
        let shared = &self.shared;
        let id = pay.channel_id;
        let newest = slot.payee.funded().and_then(|f| f.newest.as_ref()).map_or(0, |n| n.number);
        let before = slot.payee.clone();
        let msg = Message::Pay(pay.clone());
        let fresh = pay.update > newest;
        if fresh {
            let got = i128::from(pay.paid_total_sat) - i128::from(before.paid().to_sat());
            if got != i128::from(price.to_sat()) {
                return Err(PaymentRefused::WrongAmount { expected: price.to_sat(), got });
            }
        }
        let stale = || PaymentRefused::Stale { update: pay.update, newest };
        let actions = slot.payee.handle_message(&msg, tip).map_err(|e| match e {
            _ if !fresh => stale(),
            e => PaymentRefused::Channel(e),
        })?;
        let mut acks = Vec::new();
        for action in actions {
            match action {
                PayeeAction::Persist => {
                    if let Err(e) = shared.persist(slot).await {
                        warn!(channel_id = %id, "cannot save: {e}");
                        slot.payee = before;
                        return Err(PaymentRefused::NotSaved);
                    }
                }
                PayeeAction::Send(Message::PayAck(ack)) => acks.push(ack),
                other => warn!(channel_id = %id, "a payment asked for {other:?}; ignored"),
            }
        }
        // Taken again: only exactly the newest payment (an older one is answered with the
        // newest's ack, which the payer has already).
        if !fresh && acks.last().is_none_or(|a| a.update != pay.update) {
            return Err(stale());
        }
        let settle_requested = slot.payee.near_end(tip.saturating_add(1));
        Ok(Taken { acks, fresh, paid_total: slot.payee.paid(), settle_requested })
    }

    /// Returns the channel's total paid, or `None` if the daemon has no channel `id`.
    pub async fn paid_total(&self, id: ChannelId) -> Option<Amount> {
        Some(self.shared.lock_slot(id).await?.payee.paid())
    }
}
