//! Payments and checkpoints: where each payment sits on the ladder.
//!
//! The ladder steps per **checkpoint**, not per payment. A payment is the payer's signature on
//! the commitment that pays the new total at the next rung's locktime, `L_{c+1}`, where `c` is
//! the number of checkpoints made so far. Every payment until the next checkpoint sits on that
//! same rung. A checkpoint is a payment the payee countersigns: the payer then holds a fully
//! signed state at `L_{c+1}`, and the payments after it move one rung down, to `L_{c+2}`.
//!
//! ```text
//! payments:   1    2    3*   4    5    6    7*   8 ...      (* = checkpoint)
//! rung:       1    1    1    2    2    2    2    3
//! locktime:   L_1  L_1  L_1  L_2  L_2  L_2  L_2  L_3
//! ```
//!
//! Whether a payment is a checkpoint is fixed when the payer signs it, by the
//! [`CheckpointPolicy`] agreed at open or because the payer asked for one, and travels in the
//! `pay` message: both sides then agree on every locktime.

use std::num::NonZeroU64;

use bitcoin::{ecdsa, Amount};
use serde::{Deserialize, Serialize};

use crate::ladder::LockTimeLadder;

/// When the payer asks the payee to countersign (a checkpoint), agreed at open: every
/// `every_payments` payments and/or every `every_sat` paid since the last checkpoint, whichever
/// comes first. With neither, checkpoints happen only when the payer asks.
///
/// A checkpoint gives the payer an earlier way out if the payee vanishes (its newest
/// checkpoint, final at `L_c`, instead of the refund at `R`) and spends one rung of the ladder.
/// [`CheckpointPolicy::every_payment`] is the original scheme, where both sign every update.
///
/// ```
/// use bitcoin::Amount;
/// use paychan::channel::CheckpointPolicy;
///
/// let policy = CheckpointPolicy::default_for(Amount::from_sat(1_000_000));
/// assert_eq!(policy.every_sat, Some(Amount::from_sat(10_000))); // 1% of the capacity
/// assert!(!policy.due(5_000, Amount::from_sat(9_999)));
/// assert!(policy.due(1, Amount::from_sat(10_000)));
/// assert!(paychan::channel::CheckpointPolicy::every_payment().due(1, Amount::from_sat(1)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPolicy {
    /// A checkpoint once this many payments have been made since the last one.
    pub every_payments: Option<NonZeroU64>,
    /// A checkpoint once this much has been paid since the last one (at least 1 sat).
    #[serde(with = "bitcoin::amount::serde::as_sat::opt")]
    pub every_sat: Option<Amount>,
}

impl CheckpointPolicy {
    /// The share of the capacity after which the default policy checkpoints: 1/100.
    pub const DEFAULT_SHARE: u64 = 100;

    /// Every payment is a checkpoint: the original scheme, where both sign every update and each
    /// update spends a rung.
    pub fn every_payment() -> Self {
        CheckpointPolicy { every_payments: NonZeroU64::new(1), every_sat: None }
    }

    /// No checkpoint unless the payer asks for one.
    pub fn on_request() -> Self {
        CheckpointPolicy { every_payments: None, every_sat: None }
    }

    /// The default for a channel of `capacity`: a checkpoint for every 1% of the capacity paid,
    /// however small the payments. So a channel makes at most 100 checkpoints over its whole
    /// capacity (the default terms leave 166 rungs), and the payer's way out moves one
    /// `step` earlier for each 1% it pays.
    pub fn default_for(capacity: Amount) -> Self {
        let share = (capacity.to_sat() / Self::DEFAULT_SHARE).max(1);
        CheckpointPolicy { every_payments: None, every_sat: Some(Amount::from_sat(share)) }
    }

    /// Whether a payment that brings the count since the last checkpoint to `payments` and the
    /// amount to `paid` is a checkpoint.
    pub fn due(&self, payments: u64, paid: Amount) -> bool {
        self.every_payments.is_some_and(|n| payments >= n.get())
            || self.every_sat.is_some_and(|n| paid >= n)
    }

    /// Whether the policy is well formed: an amount of at least 1 sat, if any.
    pub fn is_valid(&self) -> bool {
        self.every_sat != Some(Amount::ZERO)
    }
}

/// One payment: its number, the total it brings the payee to, the locktime of the commitment
/// that pays that total, and whether it is a checkpoint.
///
/// Stored as an array of its fields in order (`[number, paid, locktime, checkpoint,
/// since_checkpoint, paid_since_checkpoint, payer_sig]`, the signature only where kept): a
/// pipelining payer saves hundreds in flight with every batch. It also reads back from an object
/// with the fields by name, as states stored before checkpoints hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Payment {
    /// The payment's number, from 1.
    pub number: u64,
    /// The total paid to the payee, this payment included.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub paid: Amount,
    /// The commitment's `nLockTime`: `L_{c+1}`, `c` being the checkpoints made before it.
    pub locktime: u32,
    /// Whether the payee countersigns it. (States saved before checkpoints existed had both
    /// sign every update: a payment stored without this field was one.)
    #[serde(default = "yes")]
    pub checkpoint: bool,
    /// Payments since the checkpoint before this one, this one included.
    #[serde(default = "one")]
    pub since_checkpoint: u64,
    /// Paid since the checkpoint before this one, this one included.
    #[serde(default, with = "bitcoin::amount::serde::as_sat")]
    pub paid_since_checkpoint: Amount,
    /// The payer's signature on the commitment, where it is kept: the payee keeps its newest
    /// payment's, to complete and broadcast it; the payer keeps none (its signatures are
    /// deterministic: it signs again to resend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_sig: Option<ecdsa::Signature>,
}

impl Serialize for Payment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut fields = s.serialize_tuple(6 + usize::from(self.payer_sig.is_some()))?;
        fields.serialize_element(&self.number)?;
        fields.serialize_element(&self.paid.to_sat())?;
        fields.serialize_element(&self.locktime)?;
        fields.serialize_element(&self.checkpoint)?;
        fields.serialize_element(&self.since_checkpoint)?;
        fields.serialize_element(&self.paid_since_checkpoint.to_sat())?;
        if let Some(sig) = &self.payer_sig {
            fields.serialize_element(sig)?;
        }
        fields.end()
    }
}

fn yes() -> bool {
    true
}

fn one() -> u64 {
    1
}

/// Where the next payment goes: its number, its locktime, and the counts since the last
/// checkpoint that it continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NextPayment {
    pub number: u64,
    pub previous_paid: Amount,
    pub locktime: Option<u32>,
    since_checkpoint: u64,
    paid_since_checkpoint: Amount,
}

impl NextPayment {
    /// The payment after `previous` (`None`: the first one) on `ladder`. Its locktime is
    /// `None` if the ladder has no rung left below zero.
    pub fn after(previous: Option<&Payment>, ladder: &LockTimeLadder) -> NextPayment {
        match previous {
            None => NextPayment {
                number: 1,
                previous_paid: Amount::ZERO,
                locktime: ladder.locktime(1),
                since_checkpoint: 0,
                paid_since_checkpoint: Amount::ZERO,
            },
            Some(p) if p.checkpoint => NextPayment {
                number: p.number.saturating_add(1),
                previous_paid: p.paid,
                locktime: p.locktime.checked_sub(ladder.step()),
                since_checkpoint: 0,
                paid_since_checkpoint: Amount::ZERO,
            },
            Some(p) => NextPayment {
                number: p.number.saturating_add(1),
                previous_paid: p.paid,
                locktime: Some(p.locktime),
                since_checkpoint: p.since_checkpoint,
                paid_since_checkpoint: p.paid_since_checkpoint,
            },
        }
    }

    /// The payment bringing the total to `paid` at `locktime` (checked by the caller), a
    /// checkpoint if `checkpoint`. `paid` must be above the previous total.
    pub fn to(&self, paid: Amount, locktime: u32, checkpoint: bool) -> Payment {
        let amount = paid.checked_sub(self.previous_paid).unwrap_or(Amount::ZERO);
        Payment {
            number: self.number,
            paid,
            locktime,
            checkpoint,
            since_checkpoint: self.since_checkpoint.saturating_add(1),
            paid_since_checkpoint: self
                .paid_since_checkpoint
                .checked_add(amount)
                .unwrap_or(Amount::MAX),
            payer_sig: None,
        }
    }

    /// Whether `policy` makes a payment bringing the total to `paid` a checkpoint.
    pub fn due(&self, policy: &CheckpointPolicy, paid: Amount) -> bool {
        let p = self.to(paid, 0, false);
        policy.due(p.since_checkpoint, p.paid_since_checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payments_stay_on_a_rung_until_a_checkpoint() {
        let ladder = LockTimeLadder::new(1000, 10).unwrap();
        let sat = Amount::from_sat;
        let first = NextPayment::after(None, &ladder);
        assert_eq!((first.number, first.locktime), (1, Some(990)));
        let p1 = first.to(sat(5), 990, false);
        assert_eq!((p1.since_checkpoint, p1.paid_since_checkpoint), (1, sat(5)));
        let second = NextPayment::after(Some(&p1), &ladder);
        assert_eq!((second.number, second.locktime), (2, Some(990)));
        let p2 = second.to(sat(12), 990, true);
        assert_eq!((p2.since_checkpoint, p2.paid_since_checkpoint), (2, sat(12)));
        let third = NextPayment::after(Some(&p2), &ladder);
        assert_eq!((third.number, third.locktime), (3, Some(980)));
        let p3 = third.to(sat(13), 980, false);
        assert_eq!((p3.since_checkpoint, p3.paid_since_checkpoint), (1, sat(1)));
    }

    #[test]
    fn policies_trigger_on_either_count() {
        let sat = Amount::from_sat;
        let both =
            CheckpointPolicy { every_payments: NonZeroU64::new(3), every_sat: Some(sat(100)) };
        assert!(!both.due(2, sat(99)));
        assert!(both.due(3, sat(1)));
        assert!(both.due(1, sat(100)));
        assert!(!CheckpointPolicy::on_request().due(u64::MAX, Amount::MAX));
        assert_eq!(CheckpointPolicy::default_for(sat(50)).every_sat, Some(sat(1)));
        let zero = CheckpointPolicy { every_payments: None, every_sat: Some(Amount::ZERO) };
        assert!(!zero.is_valid());
    }

    #[test]
    fn a_payment_is_stored_as_an_array_and_reads_back_from_either_form() {
        let ladder = LockTimeLadder::new(1000, 10).unwrap();
        let p = NextPayment::after(None, &ladder).to(Amount::from_sat(5), 990, true);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "[1,5,990,true,1,5]");
        assert_eq!(serde_json::from_str::<Payment>(&json).unwrap(), p);
        let named = r#"{"number":1,"paid":5,"locktime":990}"#;
        let old: Payment = serde_json::from_str(named).unwrap();
        assert_eq!((old.number, old.checkpoint, old.since_checkpoint), (1, true, 1));
    }

    #[test]
    fn the_ladder_bottom_has_no_rung() {
        let ladder = LockTimeLadder::new(5, 10).unwrap();
        assert_eq!(NextPayment::after(None, &ladder).locktime, None);
    }
}
