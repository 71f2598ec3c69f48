//! Getting a close confirmed when its fee is too low: child pays for parent.
//!
//! Every channel transaction pays the fee rate agreed at open. When fees rise after that, the
//! node refuses a close (below its minimum) or leaves it waiting while older states' locktimes
//! come nearer. The side that broadcast it then spends its own output of it in a child from its
//! wallet ([`paychan_wallet::Wallet::cpfp_child`]), adding a wallet coin if that output is
//! short, and submits both as a package ([`Chain::submit_package`]): their fee rate together
//! aims at confirmation within the channel's `step` (the node's estimate), and at least 1
//! sat/vB above the mempool's minimum. The payee does this for its newest commitment and the
//! settlement (its daemon), the payer for its refund, checkpoint or settlement (`watch`).

use std::collections::{HashMap, HashSet};

use bitcoin::{Amount, FeeRate, Transaction, Txid};

use paychan::chain::{Chain, ChainError, Rejection};
use paychan::watch::BlockSource;
use paychan_wallet::{Wallet, WalletError};

/// Why a close could not be bumped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BumpError {
    /// The node failed, or refused the package.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The wallet could not build the child (no coin to pay with, no output of ours).
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The wallet is busy (following the chain); the next poll tries again.
    #[error("the wallet is busy following the chain; the bump waits for the next poll")]
    Busy,
    /// The close pays out more than the funding holds (a corrupted state).
    #[error("the close pays out more than the funding's {capacity} sat")]
    Overpaid {
        /// The funding's value.
        capacity: u64,
    },
}

/// A close to get confirmed: the presigned transaction and what its fee is measured by.
#[derive(Debug, Clone)]
pub struct Close {
    /// The commitment, settlement or refund.
    pub tx: Transaction,
    /// The funding's value, which it spends.
    pub capacity: Amount,
    /// The blocks it should confirm within: the channel's `step`.
    pub target_blocks: u32,
}

/// What broadcasting a close did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The close went out as it is.
    Broadcast,
    /// The close went out with a child: the package's txid and fee rate.
    Bumped {
        /// The child's txid.
        child: Txid,
        /// The fee rate of close and child together.
        package_feerate: FeeRate,
    },
}

/// Broadcasts `close` as it is; returns whether the node refused it for its fee (then
/// [`bump`] it). One the node has already counts as sent.
///
/// # Errors
/// [`BumpError::Chain`]: the node's refusal for another reason.
pub fn refused_for_fee(chain: &impl Chain, close: &Close) -> Result<bool, BumpError> {
    match chain.broadcast(&close.tx) {
        Ok(_) => Ok(false),
        Err(ChainError::Rejected { rejection: Rejection::FeeTooLow { .. }, .. }) => Ok(true),
        Err(ChainError::Rejected {
            rejection: Rejection::AlreadyInMempool { .. } | Rejection::AlreadyConfirmed { .. },
            ..
        }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Submits `close` with a child from `wallet` that brings their fee rate together to
/// [`target_feerate`].
///
/// # Errors
/// [`BumpError`]: the node's refusal of the package; the wallet's.
pub fn bump(
    chain: &(impl Chain + BlockSource),
    wallet: &mut Wallet,
    close: &Close,
) -> Result<Outcome, BumpError> {
    let target = target_feerate(chain, close.target_blocks)?;
    let paid: Amount = close.tx.output.iter().map(|o| o.value).sum();
    let parent_fee = close
        .capacity
        .checked_sub(paid)
        .ok_or(BumpError::Overpaid { capacity: close.capacity.to_sat() })?;
    let bump = wallet.cpfp_child(chain, &close.tx, parent_fee, target)?;
    chain.submit_package(&[close.tx.clone(), bump.child.clone()])?;
    Ok(Outcome::Bumped { child: bump.child.compute_txid(), package_feerate: bump.package_feerate })
}

/// The package fee rate to aim for: the node's estimate for `target_blocks`, and 1 sat/vB above
/// the mempool's minimum, which moves (the floor alone if the node has no estimate).
///
/// # Errors
/// The node's.
pub fn target_feerate(chain: &impl Chain, target_blocks: u32) -> Result<FeeRate, ChainError> {
    let floor = FeeRate::from_sat_per_kwu(chain.mempool_min_feerate()?.to_sat_per_kwu() + 250);
    // A node without an estimate yet (fresh, or a quiet test network): the floor alone.
    let estimate = chain.fee_rate(u16::try_from(target_blocks.max(1)).unwrap_or(u16::MAX));
    Ok(estimate.map_or(floor, |e| e.max(floor)))
}

/// Which closes waited in the mempool and which were bumped, kept by a watcher between polls.
#[derive(Debug, Default)]
pub struct Bumps {
    /// Closes seen in the mempool, with the tip when first seen there.
    in_mempool_since: HashMap<Txid, u32>,
    /// Closes already bumped: once each (a child replacing a child must pay more, and the
    /// estimate rarely moves within the window).
    bumped: HashSet<Txid>,
    /// The closes due in this poll.
    due: HashSet<Txid>,
}

impl Bumps {
    /// Says what to do with our close `txid`, due at `tip`, given the transaction in the
    /// mempool that spends its funding, if any: `None` to wait (someone's close is on its way,
    /// or ours has not waited a block yet), `Some(false)` to broadcast it, `Some(true)` to bump
    /// it (it waited a block in the mempool).
    pub fn poll(&mut self, txid: Txid, mempool_spend: Option<Txid>, tip: u32) -> Option<bool> {
        self.due.insert(txid);
        match mempool_spend {
            None => Some(false),
            Some(spend) if spend == txid => self.stuck(txid, tip).then_some(true),
            Some(_) => None,
        }
    }

    /// Records that `txid` was bumped.
    pub fn bumped(&mut self, txid: Txid) {
        self.bumped.insert(txid);
    }

    /// Ends a poll: forgets the closes not due in it (confirmed, or no longer the newest state).
    pub fn end_poll(&mut self) {
        let due = std::mem::take(&mut self.due);
        self.in_mempool_since.retain(|txid, _| due.contains(txid));
        self.bumped.retain(|txid| due.contains(txid));
    }

    /// Whether `txid`, in the mempool at `tip`, has waited a block or more there without a
    /// bump.
    fn stuck(&mut self, txid: Txid, tip: u32) -> bool {
        let since = *self.in_mempool_since.entry(txid).or_insert(tip);
        tip > since && !self.bumped.contains(&txid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    #[test]
    fn a_close_is_bumped_once_after_waiting_a_block_in_the_mempool() {
        let (a, b) = (Txid::from_byte_array([1; 32]), Txid::from_byte_array([2; 32]));
        let mut bumps = Bumps::default();
        assert_eq!(bumps.poll(a, None, 100), Some(false), "not in the mempool: broadcast");
        assert_eq!(bumps.poll(b, Some(a), 100), None, "another close is on its way");
        assert_eq!(bumps.poll(a, Some(a), 100), None, "just seen in the mempool");
        assert_eq!(bumps.poll(a, Some(a), 101), Some(true), "a block went by: bump");
        bumps.bumped(a);
        assert_eq!(bumps.poll(a, Some(a), 105), None, "bumped once");
        bumps.end_poll();
        // Confirmed, or replaced by a newer state: not due in the next poll, so forgotten.
        bumps.end_poll();
        assert_eq!(bumps.poll(a, Some(a), 106), None, "seen again from now");
        assert_eq!(bumps.poll(a, Some(a), 107), Some(true));
    }
}
