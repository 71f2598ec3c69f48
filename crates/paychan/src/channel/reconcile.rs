//! Reconciling after a reconnect: the payee tells the newest payment it holds, and the payer
//! stands there.
//!
//! Whatever happened to the frames of the last connection (an acknowledgement lost, a payment
//! the payer gave up on that the payee had stored after all), the payee's store holds the
//! newest payment it took, with the payer's signature: that is what the payee can close with.
//! The payer checks that signature against its own copy of the commitment, so it takes nothing
//! it did not sign, and makes that payment its newest. Then it resends what it still has in
//! flight after it. A payee that holds less than it acknowledged is refused, and the payer
//! keeps what it has.

use bitcoin::Amount;

use super::funded::check_id;
use super::{ChannelError, Payee, PayeeAction, Payer, PayerAction, Payment, SignedUpdate, TxKind};
use crate::keys::parse_signature;
use crate::wire::{self, Message, RawSignature};

impl Payee {
    /// The `reconcile` answer to a `reestablish`: the newest payment held (update 0 for none)
    /// and the newest checkpoint (0 for none).
    pub(super) fn reconcile(&self) -> Option<PayeeAction> {
        let f = self.funded()?;
        let raw = |sig: bitcoin::ecdsa::Signature| RawSignature::from(sig);
        let newest = f.newest.as_ref();
        let checkpoint = f.checkpoint.as_ref();
        let msg = wire::Reconcile {
            channel_id: self.state().terms.channel_id,
            update: newest.map_or(0, |p| p.number),
            paid_total_sat: newest.map_or(0, |p| p.paid.to_sat()),
            locktime: newest.map_or(0, |p| p.locktime),
            checkpoint: newest.is_some_and(|p| p.checkpoint),
            since_checkpoint: newest.map_or(0, |p| p.since_checkpoint),
            paid_since_checkpoint_sat: newest.map_or(0, |p| p.paid_since_checkpoint.to_sat()),
            payer_signature: newest.and_then(|p| p.payer_sig).map(raw),
            checkpoint_update: checkpoint.map_or(0, |c| c.number),
            checkpoint_paid_sat: checkpoint.map_or(0, |c| c.paid.to_sat()),
            checkpoint_locktime: checkpoint.map_or(0, |c| c.locktime),
            payee_signature: checkpoint.map(|c| raw(c.payee_sig)),
        };
        Some(PayeeAction::Send(Message::Reconcile(msg)))
    }
}

impl Payer {
    /// Takes the payee's `reconcile`: stands on the newest payment the payee holds and its
    /// newest checkpoint, then resends what is still in flight after them.
    pub(super) fn on_reconcile(
        &mut self,
        m: &wire::Reconcile,
    ) -> Result<Vec<PayerAction>, ChannelError> {
        check_id(self.state().terms.channel_id, m.channel_id)?;
        let f = self.funded().ok_or_else(|| self.unexpected("reconcile"))?;
        let ours = f.funded.payments();
        let paid = Amount::from_sat(m.paid_total_sat);
        if m.update < ours {
            return Err(ChannelError::PeerBehind { ours, theirs: m.update });
        }
        check_consistent(m)?;
        // Every change is made on a copy: an error leaves the state as it was.
        let mut after = self.clone();
        let mut actions = Vec::new();
        if m.update == ours {
            let same = f.funded.newest.as_ref().map_or(true, |p| {
                (p.paid, p.locktime, p.checkpoint) == (paid, m.locktime, m.checkpoint)
            });
            if !same {
                return Err(ChannelError::ReconcileMismatch { update: m.update });
            }
        } else {
            let in_flight = f.pending.iter().find(|p| p.number == m.update);
            let sig = m.payee_signature.as_ref().filter(|_| m.checkpoint_update == m.update);
            actions = match in_flight {
                Some(p)
                    if (p.paid, p.locktime, p.checkpoint) == (paid, m.locktime, m.checkpoint) =>
                {
                    after.on_pay_ack(m.update, sig)?
                }
                // Not the payment in flight under that number, or none: one given up on.
                _ => after.adopt(m, paid)?,
            };
        }
        if after.take_checkpoint(m)? && actions.is_empty() {
            actions.push(PayerAction::Persist);
        }
        actions.extend(after.resend_pending()?);
        *self = after;
        Ok(actions)
    }

    /// Makes the payee's newest payment ours: one we signed (the signature is checked against
    /// our own copy) but no longer have in flight. What we have in flight was built on another
    /// history, which the payee never took: it is dropped, and so is a settlement signed for
    /// another total.
    fn adopt(
        &mut self,
        m: &wire::Reconcile,
        paid: Amount,
    ) -> Result<Vec<PayerAction>, ChannelError> {
        let f = self.funded().ok_or_else(|| self.unexpected("reconcile"))?;
        let channel = &f.funded.channel;
        let kind = TxKind::Commitment(m.update);
        // A commitment's locktime is on a rung below the refund's (rung 0).
        if !channel.ladder().rung(m.locktime).is_some_and(|r| r > 0) {
            return Err(ChannelError::ReconcileMismatch { update: m.update });
        }
        let tx = channel.builder().commitment(paid, m.locktime)?;
        let sighash = channel.builder().sighash(&tx)?;
        let wrap = |source| ChannelError::Signature { tx: kind, source };
        let raw = m
            .payer_signature
            .as_ref()
            .ok_or(ChannelError::ReconcileMismatch { update: m.update })?;
        let payer_sig = parse_signature(&raw.0).map_err(wrap)?;
        // Ours: we signed this commitment, so the payee can close with it.
        let signer = &self.signer;
        signer.verify(sighash, &payer_sig, &signer.public_key()).map_err(wrap)?;
        let newest = Payment {
            number: m.update,
            paid,
            locktime: m.locktime,
            checkpoint: m.checkpoint,
            since_checkpoint: m.since_checkpoint,
            paid_since_checkpoint: Amount::from_sat(m.paid_since_checkpoint_sat),
            payer_sig: None,
        };
        let f = self.funded_mut();
        f.pending.clear();
        f.closing_sig = None;
        f.funded.newest = Some(newest);
        Ok(vec![PayerAction::Persist])
    }

    /// Takes the payee's newest checkpoint if it is newer than ours and not past our newest
    /// payment: its commitment rebuilt, signed by us again (signatures are deterministic) and
    /// checked against the payee's signature. Returns whether it was taken.
    fn take_checkpoint(&mut self, m: &wire::Reconcile) -> Result<bool, ChannelError> {
        let f = self.funded().ok_or_else(|| self.unexpected("reconcile"))?;
        let ours = f.funded.checkpoint.as_ref().map_or(0, |c| c.number);
        if m.checkpoint_update <= ours {
            return Ok(false);
        }
        let (update, paid, locktime) =
            (m.checkpoint_update, Amount::from_sat(m.checkpoint_paid_sat), m.checkpoint_locktime);
        let mismatch = ChannelError::ReconcileMismatch { update };
        let newest = f.funded.newest.as_ref().ok_or(mismatch.clone())?;
        let ladder = f.funded.channel.ladder();
        if update > newest.number
            || paid > newest.paid
            || locktime < newest.locktime
            || !ladder.rung(locktime).is_some_and(|r| r > 0)
        {
            return Err(mismatch);
        }
        let sig = m.payee_signature.as_ref().ok_or(ChannelError::CheckpointNotSigned { update })?;
        let channel = &f.funded.channel;
        let tx = channel.builder().commitment(paid, locktime)?;
        let (payee_sig, payer_sig) =
            channel.countersign(&self.signer, TxKind::Commitment(update), &tx, sig)?;
        let checkpoint = SignedUpdate { number: update, paid, locktime, payer_sig, payee_sig };
        self.funded_mut().funded.checkpoint = Some(checkpoint);
        Ok(true)
    }
}

/// Fails unless `m` agrees with itself: its newest payment is a checkpoint exactly when it is
/// the checkpoint it names, that checkpoint is not after it, and the counts since the checkpoint
/// before fit inside it. (The next payment's rung, and when the next checkpoint is due, follow
/// from these.)
fn check_consistent(m: &wire::Reconcile) -> Result<(), ChannelError> {
    let mismatch = Err(ChannelError::ReconcileMismatch { update: m.update });
    if m.update == 0 {
        return match m.checkpoint || m.checkpoint_update != 0 {
            true => mismatch,
            false => Ok(()),
        };
    }
    let flag_agrees = m.checkpoint == (m.checkpoint_update == m.update);
    let counts_fit = (1..=m.update).contains(&m.since_checkpoint)
        && m.paid_since_checkpoint_sat <= m.paid_total_sat;
    if !flag_agrees || m.checkpoint_update > m.update || !counts_fit {
        return mismatch;
    }
    Ok(())
}
