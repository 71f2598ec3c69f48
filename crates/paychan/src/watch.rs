//! Following the chain block by block, and reading blocks into channel events, sans-IO.
//!
//! A watcher that asks the node about every channel at every poll costs a call per channel; one
//! that reads each new block once costs a few calls per block, however many channels it
//! watches. This module is the second kind, without the I/O:
//!
//! - [`BlockFollower`] keeps the blocks processed so far (the newest [`BlockFollower::KEEP`]),
//!   takes the next block of the node's best chain, and says when that block does not extend
//!   them: the node's chain forked below our tip, and the caller disconnects our tip and tries
//!   again. [`follow`] does that against any [`BlockSource`]: three node calls per new block
//!   (the best block's hash, the next block's hash, the block), one when there is none.
//! - [`FundingWatch`] indexes the watched channels by funding txid and funding outpoint, so a
//!   block costs work in proportion to its transactions, not to the channels. It turns each
//!   connected or disconnected block into [`WatchEvent`]s: a funding confirmed or reorged out,
//!   a funding spent (by what, at which height) or that spend reorged out.
//!
//! The caller stores the follower's tip ([`BlockId`]) with its channels and starts from it
//! again after a restart, so nothing is walked back.

use std::collections::{HashMap, VecDeque};

use bitcoin::{Block, BlockHash, OutPoint, Transaction, TxOut, Txid};

use crate::chain::ChainError;
use crate::wire::ChannelId;

/// A block of the best chain, by height and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockId {
    /// Its height.
    pub height: u32,
    /// Its hash.
    pub hash: BlockHash,
}

/// Where blocks come from (Bitcoin Core's `getbestblockhash`, `getblockhash`, `getblock`).
pub trait BlockSource {
    /// Returns the hash of the best block.
    ///
    /// # Errors
    /// The node's.
    fn best_block_hash(&self) -> Result<BlockHash, ChainError>;

    /// Returns the hash of the best chain's block at `height`, `None` above the best block.
    ///
    /// # Errors
    /// The node's.
    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError>;

    /// Returns the block `hash`.
    ///
    /// # Errors
    /// The node's.
    fn block(&self, hash: BlockHash) -> Result<Block, ChainError>;
}

/// Why the follower cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// The node's chain forked below every block the follower keeps.
    #[error("the node's chain forked more than {kept} blocks below our tip at {tip}")]
    ForkTooDeep {
        /// Our tip's height.
        tip: u32,
        /// How many blocks we keep.
        kept: usize,
    },
    /// The node failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// The blocks processed so far, newest last. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct BlockFollower {
    recent: VecDeque<BlockId>,
}

/// What the follower did with a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The block extends our tip: it is our new tip.
    Connected(BlockId),
    /// The block does not extend our tip: the node's chain forked below it. Disconnect our tip
    /// ([`BlockFollower::disconnect`]) and fetch the block at the new next height.
    Forked,
}

impl BlockFollower {
    /// How many blocks are kept: a reorganization deeper than this is refused
    /// ([`FollowError::ForkTooDeep`]) rather than followed.
    pub const KEEP: usize = 144;

    /// Starts after `tip`, a block of the best chain (the genesis, or the tip stored when the
    /// last run stopped).
    pub fn new(tip: BlockId) -> BlockFollower {
        BlockFollower { recent: VecDeque::from([tip]) }
    }

    /// Starts after `blocks`, the newest blocks processed when the last run stopped, oldest
    /// first ([`BlockFollower::blocks`]); `None` if there are none.
    pub fn resume(blocks: &[BlockId]) -> Option<BlockFollower> {
        let keep = blocks.len().saturating_sub(Self::KEEP);
        let recent: VecDeque<BlockId> = blocks[keep..].iter().copied().collect();
        (!recent.is_empty()).then_some(BlockFollower { recent })
    }

    /// Returns the blocks kept, oldest first: what to store for [`BlockFollower::resume`].
    pub fn blocks(&self) -> Vec<BlockId> {
        self.recent.iter().copied().collect()
    }

    /// Returns the newest block processed.
    pub fn tip(&self) -> BlockId {
        *self.recent.back().expect("never empty")
    }

    /// Returns the height of the block to fetch next.
    pub fn next_height(&self) -> u32 {
        self.tip().height + 1
    }

    /// Takes `block`, the node's block at [`BlockFollower::next_height`].
    pub fn connect(&mut self, block: &Block) -> Step {
        let tip = self.tip();
        if block.header.prev_blockhash != tip.hash {
            return Step::Forked;
        }
        let id = BlockId { height: tip.height + 1, hash: block.block_hash() };
        self.recent.push_back(id);
        if self.recent.len() > Self::KEEP {
            self.recent.pop_front();
        }
        Step::Connected(id)
    }

    /// Drops our tip, which the node's chain no longer holds, and returns it.
    ///
    /// # Errors
    /// [`FollowError::ForkTooDeep`] if it is the only block kept.
    pub fn disconnect(&mut self) -> Result<BlockId, FollowError> {
        if self.recent.len() == 1 {
            let tip = self.tip().height;
            return Err(FollowError::ForkTooDeep { tip, kept: Self::KEEP });
        }
        Ok(self.recent.pop_back().expect("more than one"))
    }
}

/// A block's effect on the channels, as [`follow`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockEvent {
    /// `block` joined the best chain at `id`.
    Connected {
        /// Where.
        id: BlockId,
        /// The block.
        block: Block,
    },
    /// The block `id` left the best chain.
    Disconnected {
        /// Which.
        id: BlockId,
    },
}

/// What one [`follow`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The blocks disconnected and connected, in order.
    pub events: Vec<BlockEvent>,
    /// Whether the follower's tip is now the node's best block (not when it stopped at
    /// `max_blocks`): only then is its tip the chain's.
    pub at_best: bool,
}

/// Brings `follower` up to the node's best block: every block it lacks, in order, and for a
/// fork first the blocks to drop, newest first. Stops after `max_blocks` new blocks, so that a
/// caller far behind sees progress; call again until it is at the best block. Three node calls
/// per block connected (the best block's hash, the block's hash, the block: fewer per block
/// when several come at once), one if the follower is at the best block already.
///
/// # Errors
/// [`FollowError`]. The events before the error are lost with it, so the caller passes a copy
/// of its follower and keeps the copy only on success: half a call is never applied.
pub fn follow(
    source: &impl BlockSource,
    follower: &mut BlockFollower,
    max_blocks: usize,
) -> Result<Progress, FollowError> {
    let mut events = Vec::new();
    let best = source.best_block_hash()?;
    let mut connected = 0;
    while follower.tip().hash != best && connected < max_blocks {
        let Some(hash) = source.block_hash(follower.next_height())? else {
            // Above the node's best block, which is not ours: the node's chain forked below our
            // tip and is shorter than ours.
            events.push(BlockEvent::Disconnected { id: follower.disconnect()? });
            continue;
        };
        let block = source.block(hash)?;
        match follower.connect(&block) {
            Step::Connected(id) => {
                events.push(BlockEvent::Connected { id, block });
                connected += 1;
            }
            Step::Forked => events.push(BlockEvent::Disconnected { id: follower.disconnect()? }),
        }
    }
    Ok(Progress { events, at_best: follower.tip().hash == best })
}

/// What a block did to a watched channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The funding transaction is in the block at `height`, with this output.
    FundingConfirmed {
        /// The channel.
        channel_id: ChannelId,
        /// The block's height.
        height: u32,
        /// The funding output as the block holds it (the caller checks it against the
        /// channel's script and value).
        txout: TxOut,
    },
    /// The block that held the funding left the best chain: the funding is unconfirmed again.
    FundingReorged {
        /// The channel.
        channel_id: ChannelId,
    },
    /// A transaction in the block at `height` spends the funding output.
    FundingSpent {
        /// The channel.
        channel_id: ChannelId,
        /// The block's height.
        height: u32,
        /// The spending transaction.
        tx: Transaction,
    },
    /// The block that held the spend left the best chain: the funding is unspent again.
    SpendReorged {
        /// The channel.
        channel_id: ChannelId,
    },
}

impl WatchEvent {
    /// Returns the channel the event is about.
    pub fn channel_id(&self) -> ChannelId {
        match self {
            WatchEvent::FundingConfirmed { channel_id, .. }
            | WatchEvent::FundingReorged { channel_id }
            | WatchEvent::FundingSpent { channel_id, .. }
            | WatchEvent::SpendReorged { channel_id } => *channel_id,
        }
    }
}

/// One watched channel.
#[derive(Debug, Clone)]
struct Watched {
    outpoint: OutPoint,
    /// The height of the block holding the funding, once seen.
    confirmed: Option<u32>,
    /// The height of the block holding the spend, once seen.
    spent: Option<u32>,
}

/// The watched channels, indexed by funding txid and outpoint. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct FundingWatch {
    channels: HashMap<ChannelId, Watched>,
    by_txid: HashMap<Txid, Vec<ChannelId>>,
    by_outpoint: HashMap<OutPoint, ChannelId>,
}

impl FundingWatch {
    /// Watches channel `id`'s funding `outpoint`; `confirmed` and `spent` are the heights at
    /// which it is already known to be confirmed and spent (from the store, after a restart).
    pub fn watch(
        &mut self,
        id: ChannelId,
        outpoint: OutPoint,
        confirmed: Option<u32>,
        spent: Option<u32>,
    ) {
        self.unwatch(id);
        self.by_txid.entry(outpoint.txid).or_default().push(id);
        self.by_outpoint.insert(outpoint, id);
        self.channels.insert(id, Watched { outpoint, confirmed, spent });
    }

    /// Stops watching channel `id`.
    pub fn unwatch(&mut self, id: ChannelId) {
        let Some(w) = self.channels.remove(&id) else { return };
        self.by_outpoint.remove(&w.outpoint);
        if let Some(ids) = self.by_txid.get_mut(&w.outpoint.txid) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_txid.remove(&w.outpoint.txid);
            }
        }
    }

    /// Returns how many channels are watched.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether no channel is watched.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Returns the heights at which channel `id`'s funding is known to be confirmed and spent,
    /// if watched.
    pub fn heights(&self, id: ChannelId) -> Option<(Option<u32>, Option<u32>)> {
        self.channels.get(&id).map(|w| (w.confirmed, w.spent))
    }

    /// Returns channel `id`'s funding confirmations at `tip` (0 while unconfirmed), if watched.
    pub fn confirmations(&self, id: ChannelId, tip: u32) -> Option<u32> {
        let w = self.channels.get(&id)?;
        Some(w.confirmed.map_or(0, |h| tip.saturating_add(1).saturating_sub(h)))
    }

    /// Reads what `event` did to the watched channels ([`FundingWatch::block_connected`] or
    /// [`FundingWatch::block_disconnected`]).
    pub fn apply(&mut self, event: &BlockEvent) -> Vec<WatchEvent> {
        match event {
            BlockEvent::Connected { id, block } => self.block_connected(block, id.height),
            BlockEvent::Disconnected { id } => self.block_disconnected(id.height),
        }
    }

    /// Reads `block`, connected at `height`: the fundings it confirms and the spends it holds.
    pub fn block_connected(&mut self, block: &Block, height: u32) -> Vec<WatchEvent> {
        let mut events = Vec::new();
        for tx in &block.txdata {
            if let Some(ids) = self.by_txid.get(&tx.compute_txid()) {
                for id in ids {
                    let w = self.channels.get_mut(id).expect("indexed");
                    let Some(txout) = tx.output.get(w.outpoint.vout as usize) else { continue };
                    if w.confirmed.is_none() {
                        w.confirmed = Some(height);
                        let txout = txout.clone();
                        events.push(WatchEvent::FundingConfirmed {
                            channel_id: *id,
                            height,
                            txout,
                        });
                    }
                }
            }
            for input in &tx.input {
                let Some(id) = self.by_outpoint.get(&input.previous_output) else { continue };
                let w = self.channels.get_mut(id).expect("indexed");
                if w.spent.is_none() {
                    w.spent = Some(height);
                    events.push(WatchEvent::FundingSpent {
                        channel_id: *id,
                        height,
                        tx: tx.clone(),
                    });
                }
            }
        }
        events
    }

    /// The block at `height` left the best chain: what it confirmed or spent is undone (spends
    /// first: a funding and its spend in one block leave together).
    pub fn block_disconnected(&mut self, height: u32) -> Vec<WatchEvent> {
        // Every watched channel is looked at: a reorganization is rare, and its blocks few.
        let mut undone: Vec<(ChannelId, bool, bool)> = Vec::new();
        for (id, w) in self.channels.iter_mut() {
            let spent = w.spent.is_some_and(|h| h >= height);
            let confirmed = w.confirmed.is_some_and(|h| h >= height);
            if spent {
                w.spent = None;
            }
            if confirmed {
                w.confirmed = None;
            }
            if spent || confirmed {
                undone.push((*id, spent, confirmed));
            }
        }
        undone.sort();
        let spends =
            undone.iter().filter(|u| u.1).map(|u| WatchEvent::SpendReorged { channel_id: u.0 });
        let fundings =
            undone.iter().filter(|u| u.2).map(|u| WatchEvent::FundingReorged { channel_id: u.0 });
        spends.chain(fundings).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::block::{Header, Version};
    use bitcoin::hashes::Hash;
    use bitcoin::{
        absolute, transaction, Amount, CompactTarget, ScriptBuf, Sequence, TxIn, TxMerkleNode,
        Witness,
    };
    use std::cell::Cell;

    /// A chain of made-up blocks (no proof of work: the follower checks only the links).
    struct Chain {
        blocks: Vec<Block>,
        calls: Cell<usize>,
    }

    impl Chain {
        fn new() -> Chain {
            Chain { blocks: vec![block(BlockHash::all_zeros(), 0, vec![])], calls: Cell::new(0) }
        }

        fn id(&self, height: u32) -> BlockId {
            BlockId { height, hash: self.blocks[height as usize].block_hash() }
        }

        /// Mines a block on the tip holding `txs`; `salt` tells competing blocks apart.
        fn mine(&mut self, txs: Vec<Transaction>, salt: u32) {
            let prev = self.blocks.last().unwrap().block_hash();
            self.blocks.push(block(prev, salt, txs));
        }
    }

    impl BlockSource for Chain {
        fn best_block_hash(&self) -> Result<BlockHash, ChainError> {
            self.calls.set(self.calls.get() + 1);
            Ok(self.blocks.last().unwrap().block_hash())
        }

        fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
            self.calls.set(self.calls.get() + 1);
            Ok(self.blocks.get(height as usize).map(Block::block_hash))
        }

        fn block(&self, hash: BlockHash) -> Result<Block, ChainError> {
            self.calls.set(self.calls.get() + 1);
            Ok(self.blocks.iter().find(|b| b.block_hash() == hash).unwrap().clone())
        }
    }

    fn block(prev_blockhash: BlockHash, salt: u32, txdata: Vec<Transaction>) -> Block {
        let header = Header {
            version: Version::TWO,
            prev_blockhash,
            merkle_root: TxMerkleNode::all_zeros(),
            time: salt,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: 0,
        };
        Block { header, txdata }
    }

    fn tx(spends: Vec<OutPoint>, value: u64) -> Transaction {
        let input = spends
            .into_iter()
            .map(|previous_output| TxIn {
                previous_output,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect();
        let output =
            vec![TxOut { value: Amount::from_sat(value), script_pubkey: ScriptBuf::new() }];
        Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input,
            output,
        }
    }

    fn connected(events: &[BlockEvent]) -> Vec<u32> {
        events
            .iter()
            .filter_map(|e| match e {
                BlockEvent::Connected { id, .. } => Some(id.height),
                BlockEvent::Disconnected { .. } => None,
            })
            .collect()
    }

    #[test]
    fn new_blocks_cost_three_calls_each_and_none_one() {
        let mut chain = Chain::new();
        let mut follower = BlockFollower::new(chain.id(0));
        for _ in 0..5 {
            chain.mine(vec![], 0);
        }
        let events = follow(&chain, &mut follower, 100).unwrap().events;
        assert_eq!(connected(&events), vec![1, 2, 3, 4, 5]);
        assert_eq!(follower.tip(), chain.id(5));
        // One best-hash call, then two per block.
        assert_eq!(chain.calls.replace(0), 1 + 2 * 5);
        let idle = follow(&chain, &mut follower, 100).unwrap();
        assert!(idle.events.is_empty() && idle.at_best);
        assert_eq!(chain.calls.replace(0), 1);
        chain.mine(vec![], 0);
        chain.mine(vec![], 0);
        let one = follow(&chain, &mut follower, 1).unwrap();
        assert_eq!((connected(&one.events), one.at_best), (vec![6], false), "stopped at one");
        assert_eq!(chain.calls.replace(0), 3, "one block: three calls");
        let rest = follow(&chain, &mut follower, 1).unwrap();
        assert_eq!((connected(&rest.events), rest.at_best), (vec![7], true));
    }

    #[test]
    fn a_fork_disconnects_our_blocks_newest_first_then_connects_the_node_s() {
        let mut chain = Chain::new();
        for _ in 0..4 {
            chain.mine(vec![], 0);
        }
        let mut follower = BlockFollower::new(chain.id(0));
        follow(&chain, &mut follower, 100).unwrap();
        let (old3, old4) = (chain.id(3), chain.id(4));
        // The node switches to a longer branch from height 2.
        chain.blocks.truncate(3);
        for _ in 0..3 {
            chain.mine(vec![], 1);
        }
        let events = follow(&chain, &mut follower, 100).unwrap().events;
        let ids: Vec<(bool, BlockId)> = events
            .iter()
            .map(|e| match e {
                BlockEvent::Connected { id, .. } => (true, *id),
                BlockEvent::Disconnected { id } => (false, *id),
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                (false, old4),
                (false, old3),
                (true, chain.id(3)),
                (true, chain.id(4)),
                (true, chain.id(5))
            ]
        );
        assert_eq!(follower.tip(), chain.id(5));
    }

    #[test]
    fn a_shorter_node_chain_is_followed_back() {
        let mut chain = Chain::new();
        for _ in 0..4 {
            chain.mine(vec![], 0);
        }
        let mut follower = BlockFollower::new(chain.id(0));
        follow(&chain, &mut follower, 100).unwrap();
        chain.blocks.truncate(3);
        chain.mine(vec![], 1);
        let events = follow(&chain, &mut follower, 100).unwrap().events;
        assert_eq!(connected(&events), vec![3]);
        assert_eq!(events.len(), 3, "two blocks disconnected, one connected: {events:?}");
        assert_eq!(follower.tip(), chain.id(3));
    }

    #[test]
    fn a_fork_below_every_block_kept_is_refused() {
        let mut chain = Chain::new();
        chain.mine(vec![], 0);
        let mut follower = BlockFollower::new(chain.id(1));
        chain.blocks.truncate(1);
        chain.mine(vec![], 1);
        chain.mine(vec![], 1);
        let err = follow(&chain, &mut follower, 100).unwrap_err();
        assert!(matches!(err, FollowError::ForkTooDeep { tip: 1, .. }), "{err}");
    }

    #[test]
    fn fundings_and_spends_are_read_from_blocks_and_undone_by_a_reorg() {
        let funding = tx(vec![OutPoint::new(Txid::all_zeros(), 7)], 100_000);
        let outpoint = OutPoint::new(funding.compute_txid(), 0);
        let (a, b) = (ChannelId([1; 32]), ChannelId([2; 32]));
        let mut watch = FundingWatch::default();
        watch.watch(a, outpoint, None, None);
        watch.watch(b, OutPoint::new(Txid::all_zeros(), 9), None, None);
        assert_eq!(watch.confirmations(a, 10), Some(0));

        let unrelated = block(BlockHash::all_zeros(), 0, vec![tx(vec![], 5)]);
        assert!(watch.block_connected(&unrelated, 10).is_empty());
        let holding = block(BlockHash::all_zeros(), 1, vec![funding.clone()]);
        let txout = funding.output[0].clone();
        assert_eq!(
            watch.block_connected(&holding, 11),
            vec![WatchEvent::FundingConfirmed { channel_id: a, height: 11, txout }]
        );
        assert_eq!(watch.confirmations(a, 13), Some(3));
        let close = tx(vec![outpoint], 99_000);
        let spending = block(BlockHash::all_zeros(), 2, vec![close.clone()]);
        assert_eq!(
            watch.block_connected(&spending, 14),
            vec![WatchEvent::FundingSpent { channel_id: a, height: 14, tx: close }]
        );
        // The block of the spend leaves, then the funding's: undone in that order.
        assert_eq!(watch.block_disconnected(14), vec![WatchEvent::SpendReorged { channel_id: a }]);
        assert!(watch.block_disconnected(12).is_empty());
        assert_eq!(
            watch.block_disconnected(11),
            vec![WatchEvent::FundingReorged { channel_id: a }]
        );
        assert_eq!(watch.confirmations(a, 14), Some(0));

        watch.unwatch(a);
        assert!(watch.block_connected(&holding, 15).is_empty());
        assert_eq!(watch.len(), 1);
    }
}
