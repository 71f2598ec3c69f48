//! A run of payments taken at once, their signatures checked wherever the caller likes.
//!
//! A payment's signature check (an ECDSA verification) is most of what taking it costs the
//! payee, and the checks of a run of payments do not depend on each other: each payment's
//! commitment follows from the one before. So the payee prepares a run
//! ([`Payee::prepare_payments`]): it checks every payment but for its signature's validity, as
//! if each were taken, and hands out the signatures to check ([`PaymentRun::checks`]); the
//! caller checks them (on several threads, say) and gives the results to
//! [`Payee::apply_payments`], which takes the payments in order. The outcome is exactly that of
//! [`Payee::handle_message`] on each message in turn: where a signature turns out invalid, or
//! the state is not what the run was prepared on, the rest of the run goes through
//! `handle_message` one by one.

use super::payee::CheckedPay;
use super::{ChannelError, Payee, PayeeAction, Payment, TxKind};
use crate::keys::{SignatureCheck, SignatureError};
use crate::wire::Message;

/// A run of messages prepared by [`Payee::prepare_payments`].
#[derive(Debug)]
pub struct PaymentRun {
    steps: Vec<Step>,
    checks: Vec<SignatureCheck>,
}

#[derive(Debug)]
enum Step {
    /// A payment to take if its signature checks, on top of `after`.
    Take { after: Option<Payment>, checked: Box<CheckedPay> },
    /// Anything else (a replay, a refusal, another message): handled by `handle_message` when
    /// the run is applied; it changes no state the payments after it were prepared on, or they
    /// fall back to `handle_message` too.
    OneByOne,
}

impl PaymentRun {
    /// Returns the signatures to check, in order: hand [`Payee::apply_payments`] one result
    /// for each.
    pub fn checks(&self) -> &[SignatureCheck] {
        &self.checks
    }
}

impl Payee {
    /// Prepares the run `msgs` (typically payments that arrived together): checks each payment
    /// but for its signature's validity, as if each one before it were taken. Changes nothing.
    pub fn prepare_payments(&self, msgs: &[Message], tip: u32) -> PaymentRun {
        let mut run = PaymentRun { steps: Vec::with_capacity(msgs.len()), checks: Vec::new() };
        let Ok(f) = self.open_channel("pay") else {
            run.steps.extend(msgs.iter().map(|_| Step::OneByOne));
            return run;
        };
        let mut newest = f.newest;
        for msg in msgs {
            let checked = match msg {
                Message::Pay(m) if m.channel_id == self.state.terms.channel_id => {
                    // A replay is answered from the state as it will be: one by one.
                    let replay = newest.is_some_and(|n| m.update <= n.number);
                    (!replay).then(|| self.check_pay(newest.as_ref(), m, tip).ok()).flatten()
                }
                _ => None,
            };
            run.steps.push(match checked {
                Some(checked) => {
                    let after = newest;
                    newest = Some(checked.payment);
                    run.checks.push(checked.signature);
                    Step::Take { after, checked: Box::new(checked) }
                }
                None => Step::OneByOne,
            });
        }
        run
    }

    /// Applies the run prepared from `msgs` (the same messages, at the same `tip`) with the
    /// results of its signature checks, in the order of [`PaymentRun::checks`]. Returns what
    /// [`Payee::handle_message`] would have for each message; each error leaves the state as it
    /// was.
    pub fn apply_payments(
        &mut self,
        run: PaymentRun,
        valid: &[bool],
        msgs: &[Message],
        tip: u32,
    ) -> Vec<Result<Vec<PayeeAction>, ChannelError>> {
        let mut valid = valid.iter().copied();
        let mut one_by_one = false;
        let mut out = Vec::with_capacity(msgs.len());
        for (step, msg) in run.steps.into_iter().zip(msgs) {
            match step {
                Step::Take { after, checked } if !one_by_one => {
                    let ok = valid.next();
                    // Still open, at the payment it was prepared on (a message before it, a
                    // close say, may have changed that).
                    let open = self.open_channel("pay").ok().map(|f| f.newest);
                    if open != Some(after) || ok.is_none() {
                        // Not the state the run was prepared on: from here on, one by one.
                        one_by_one = true;
                        out.push(self.handle_message(msg, tip));
                    } else if ok == Some(false) {
                        let update = checked.payment.number;
                        let (tx, source) = (TxKind::Commitment(update), SignatureError::Invalid);
                        out.push(Err(ChannelError::Signature { tx, source }));
                        // The payments after it were prepared on it: one by one.
                        one_by_one = true;
                    } else {
                        out.push(Ok(self.take_pay(*checked)));
                    }
                }
                _ => out.push(self.handle_message(msg, tip)),
            }
        }
        out
    }
}

/// Keeps, of the actions answering a run of payments, the acknowledgements the payer needs:
/// every checkpoint's (it carries the payee's signature) and the newest, which covers every
/// payment before it. Other actions stay, in order.
pub fn needed_acks(actions: Vec<PayeeAction>) -> Vec<PayeeAction> {
    let mut later_ack = false;
    let mut kept: Vec<PayeeAction> = actions
        .into_iter()
        .rev()
        .filter(|a| match a {
            PayeeAction::Send(Message::PayAck(ack)) => {
                let keep = ack.signature.is_some() || !later_ack;
                later_ack = true;
                keep
            }
            _ => true,
        })
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ChannelId, PayAck, RawSignature, Shutdown};

    fn ack(update: u64, signed: bool) -> PayeeAction {
        let signature = signed.then(|| RawSignature(vec![0x30]));
        PayeeAction::Send(Message::PayAck(PayAck {
            channel_id: ChannelId([1; 32]),
            update,
            signature,
        }))
    }

    #[test]
    fn only_checkpoint_acks_and_the_newest_are_needed() {
        let shutdown =
            PayeeAction::Send(Message::Shutdown(Shutdown { channel_id: ChannelId([1; 32]) }));
        let actions =
            vec![ack(1, false), ack(2, true), ack(3, false), shutdown.clone(), ack(4, false)];
        assert_eq!(needed_acks(actions), vec![ack(2, true), shutdown, ack(4, false)]);
        assert_eq!(needed_acks(vec![ack(5, false)]), vec![ack(5, false)]);
    }
}
