//! The locktime ladder: the decreasing `nLockTime` schedule of a channel.
//!
//! Rung `k` (k = 1, 2, ...) is `nLockTime = L_k = R - k*step`, where `R` is the refund's
//! locktime. The payments after the `c`-th checkpoint sit on rung `c + 1` (see
//! [`crate::channel::Payment`]), so the newest state becomes final first and the refund last:
//!
//! ```text
//! height ->   ...  L_3        L_2        L_1        R
//!                  |--step----|--step----|--step----|
//!                  newest     older      oldest     refund
//! ```
//!
//! A transaction with `nLockTime = L` (a height) can be mined in block `L + 1`, so a node accepts it
//! into its mempool once its tip is at `L`. The payee, holding `L_k`, has `step` blocks to get it
//! confirmed before the previous state `L_{k-1}` also becomes final.
//!
//! The payee's reaction window is `step`: once the tip reaches `L_k` it must get its newest
//! commitment mined before the tip reaches `L_{k-1} = L_k + step`, when the payer's newest
//! checkpoint (or, before any, the refund) also becomes final. On top of that, a channel takes no
//! payment whose locktime is within `margin` blocks of the chain tip: the payee then always has at
//! least `margin` blocks of notice (to settle cooperatively, or to get ready to broadcast) before
//! its newest state becomes final, and no payment is ever signed whose older neighbours are
//! already final. When the ladder reaches the margin the channel must be closed.

use bitcoin::absolute::LOCK_TIME_THRESHOLD;
use serde::{Deserialize, Serialize};

/// Errors from the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LadderError {
    /// The step must be at least one block, or locktimes would not decrease.
    #[error("locktime step must be at least 1 block")]
    ZeroStep,
    /// The refund locktime is not a block height (heights are below 500,000,000).
    #[error("refund locktime {0} is not a block height")]
    NotAHeight(u32),
    /// The next payment's locktime would be at or within `margin` blocks of the tip (or below
    /// zero): no more payments; close the channel.
    #[error(
        "locktime ladder exhausted: the next payment would have {}, the tip being {tip} and the \
         safety margin {margin} blocks; close the channel (and open a new one to pay more)",
        next.map_or("no locktime left".to_owned(), |l| format!("locktime {l}"))
    )]
    Exhausted {
        /// The next payment's locktime, or `None` if it would fall below height zero.
        next: Option<u32>,
        /// The chain tip the check was made against.
        tip: u32,
        /// The safety margin in blocks.
        margin: u32,
    },
}

/// The decreasing-locktime schedule `L_k = R - k*step`.
///
/// Deserializing checks the same rules as [`LockTimeLadder::new`].
///
/// ```
/// use paychan::ladder::{LadderError, LockTimeLadder};
///
/// let ladder = LockTimeLadder::new(1000, 10)?; // R = 1000, step = 10 blocks
/// assert_eq!(ladder.locktime(1), Some(990));
/// assert_eq!(ladder.locktime(3), Some(970));
/// assert_eq!(ladder.rung(970), Some(3));
/// // At tip 950 with a 6-block margin, rung 5 (L = 950) is too close; 4 (L = 960) is fine.
/// assert_eq!(ladder.usable_locktime(4, 950, 6), Ok(960));
/// assert!(matches!(ladder.usable_locktime(5, 950, 6), Err(LadderError::Exhausted { .. })));
/// assert_eq!(ladder.remaining_rungs(0, 950, 6), 4);
/// # Ok::<(), LadderError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLadder")]
pub struct LockTimeLadder {
    refund: u32,
    step: u32,
}

/// A ladder as stored, before its checks.
#[derive(Deserialize)]
struct RawLadder {
    refund: u32,
    step: u32,
}

impl TryFrom<RawLadder> for LockTimeLadder {
    type Error = LadderError;
    fn try_from(raw: RawLadder) -> Result<Self, Self::Error> {
        LockTimeLadder::new(raw.refund, raw.step)
    }
}

impl LockTimeLadder {
    /// Creates the ladder below refund locktime `refund` (a block height) with `step` blocks
    /// between rungs.
    ///
    /// # Errors
    /// [`LadderError::ZeroStep`] or [`LadderError::NotAHeight`].
    pub fn new(refund: u32, step: u32) -> Result<Self, LadderError> {
        if step == 0 {
            return Err(LadderError::ZeroStep);
        }
        if refund >= LOCK_TIME_THRESHOLD {
            return Err(LadderError::NotAHeight(refund));
        }
        Ok(LockTimeLadder { refund, step })
    }

    /// Returns the refund locktime `R`.
    pub fn refund(&self) -> u32 {
        self.refund
    }

    /// Returns the step in blocks.
    pub fn step(&self) -> u32 {
        self.step
    }

    /// Returns `L_k = R - k*step`, or `None` if it would fall below zero. `L_0` is `R`.
    pub fn locktime(&self, rung: u64) -> Option<u32> {
        let drop = u64::from(self.step).checked_mul(rung)?;
        u64::from(self.refund).checked_sub(drop).and_then(|l| u32::try_from(l).ok())
    }

    /// Returns the rung `k` whose locktime is `locktime`, if it is on the ladder.
    pub fn rung(&self, locktime: u32) -> Option<u64> {
        let below = self.refund.checked_sub(locktime)?;
        (below % self.step == 0).then_some(u64::from(below / self.step))
    }

    /// Returns the locktime of rung `rung` if it is more than `margin` blocks above `tip`.
    ///
    /// # Errors
    /// [`LadderError::Exhausted`] if the rung is too close to the tip, or below zero.
    pub fn usable_locktime(&self, rung: u64, tip: u32, margin: u32) -> Result<u32, LadderError> {
        Self::usable(self.locktime(rung), tip, margin)
    }

    /// Returns `locktime` if it is more than `margin` blocks above `tip`.
    ///
    /// # Errors
    /// [`LadderError::Exhausted`] if it is too close to the tip, or `None` (below zero).
    pub fn usable(locktime: Option<u32>, tip: u32, margin: u32) -> Result<u32, LadderError> {
        match locktime {
            Some(l) if u64::from(l) > u64::from(tip) + u64::from(margin) => Ok(l),
            next => Err(LadderError::Exhausted { next, tip, margin }),
        }
    }

    /// Returns how many more rungs below rung `done` can still be used at `tip` with `margin`:
    /// how many more checkpoints the channel can make, the payments after the last one
    /// included.
    pub fn remaining_rungs(&self, done: u64, tip: u32, margin: u32) -> u64 {
        // L_k > tip + margin  <=>  k < (R - tip - margin) / step, rounded up.
        let floor = u64::from(tip) + u64::from(margin);
        let room = u64::from(self.refund).saturating_sub(floor);
        let last = room.saturating_sub(1) / u64::from(self.step);
        last.saturating_sub(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_decrease_by_step_below_refund() {
        let l = LockTimeLadder::new(1000, 10).unwrap();
        assert_eq!(l.locktime(0), Some(1000));
        assert_eq!(l.locktime(1), Some(990));
        assert_eq!(l.locktime(100), Some(0));
        assert_eq!(l.locktime(101), None);
        assert_eq!(l.locktime(u64::MAX), None);
    }

    #[test]
    fn margin_stops_the_ladder() {
        let l = LockTimeLadder::new(1000, 10).unwrap();
        // tip 900, margin 6: L_k must be > 906, so k <= 9 (L_9 = 910), k = 10 gives 900.
        assert_eq!(l.usable_locktime(9, 900, 6), Ok(910));
        assert_eq!(
            l.usable_locktime(10, 900, 6),
            Err(LadderError::Exhausted { next: Some(900), tip: 900, margin: 6 })
        );
        assert_eq!(l.remaining_rungs(0, 900, 6), 9);
        assert_eq!(l.remaining_rungs(9, 900, 6), 0);
        assert_eq!(l.remaining_rungs(0, 995, 6), 0);
    }

    #[test]
    fn remaining_rungs_agrees_with_usable_locktime() {
        for refund in [50u32, 101, 1000] {
            for step in [1u32, 3, 7] {
                let l = LockTimeLadder::new(refund, step).unwrap();
                for tip in [0u32, 10, 49, 60] {
                    let n = l.remaining_rungs(0, tip, 2);
                    assert!(n == 0 || l.usable_locktime(n, tip, 2).is_ok());
                    assert!(l.usable_locktime(n + 1, tip, 2).is_err());
                }
            }
        }
    }

    #[test]
    fn rungs_are_read_back_from_their_locktimes() {
        let l = LockTimeLadder::new(1000, 10).unwrap();
        assert_eq!(l.rung(1000), Some(0));
        assert_eq!(l.rung(990), Some(1));
        assert_eq!(l.rung(995), None);
        assert_eq!(l.rung(1010), None);
    }

    #[test]
    fn deserializing_checks_the_parameters() {
        let l: LockTimeLadder = serde_json::from_str(r#"{"refund":1000,"step":10}"#).unwrap();
        assert_eq!(l, LockTimeLadder::new(1000, 10).unwrap());
        assert!(serde_json::from_str::<LockTimeLadder>(r#"{"refund":1000,"step":0}"#).is_err());
        assert!(serde_json::from_str::<LockTimeLadder>(r#"{"refund":500000000,"step":1}"#).is_err());
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(LockTimeLadder::new(1000, 0), Err(LadderError::ZeroStep));
        assert_eq!(
            LockTimeLadder::new(LOCK_TIME_THRESHOLD, 1),
            Err(LadderError::NotAHeight(LOCK_TIME_THRESHOLD))
        );
    }
}
