//! The core's block follower and funding watch (`paychan::watch`) against a real node, through
//! `RpcChain`'s `BlockSource`: a channel's funding confirmed, reorged out by a competing chain
//! (`invalidateblock`, then blocks built with `generateblock` without it), confirmed again, and
//! its settlement's block reorged out the same way, the settlement then found in the mempool
//! with one call for any number of fundings. Three node calls per new block.

mod common;

use std::cell::Cell;

use bitcoin::hashes::Hash;
use bitcoin::{Block, BlockHash, OutPoint, Txid};
use bitcoincore_rpc::RpcApi;
use common::node::Node;
use common::regtest::{RegtestChannel, Terms};
use paychan::chain::Chain;
use paychan::chain::ChainError;
use paychan::watch::{follow, BlockFollower, BlockId, BlockSource, FundingWatch, WatchEvent};
use paychan::wire::ChannelId;

/// The node's blocks, counting the calls.
struct Counted<'n> {
    node: &'n Node,
    calls: Cell<usize>,
}

impl BlockSource for Counted<'_> {
    fn best_block_hash(&self) -> Result<BlockHash, ChainError> {
        self.calls.set(self.calls.get() + 1);
        self.node.chain.best_block_hash()
    }

    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        self.calls.set(self.calls.get() + 1);
        self.node.chain.block_hash(height)
    }

    fn block(&self, hash: BlockHash) -> Result<Block, ChainError> {
        self.calls.set(self.calls.get() + 1);
        self.node.chain.block(hash)
    }
}

/// Follows the node to its tip and feeds every block to `watch`; returns the watch's events.
fn sync(node: &Counted, follower: &mut BlockFollower, watch: &mut FundingWatch) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    for event in follow(node, follower, 1000).expect("follow the node").events {
        out.extend(watch.apply(&event));
    }
    out
}

/// Replaces the best block with an empty one, and mines `more` empty blocks on it.
fn reorg_out_the_tip(node: &Node, more: u32) {
    let tip = node.chain.best_block_hash().unwrap();
    node.chain.client().invalidate_block(&tip).unwrap();
    for _ in 0..=more {
        node.mine_block_with(&[]);
    }
}

#[test]
fn fundings_and_closes_reorged_out_are_seen_from_blocks_alone() {
    let node = Node::start();
    let source = Counted { node: &node, calls: Cell::new(0) };
    let mut ch = RegtestChannel::funded(&node, Terms::default());
    let funding = ch.funding_tx.clone();
    let outpoint = ch.payee.funding_outpoint().unwrap();
    let id: ChannelId = ch.payee.state().terms.channel_id;
    let start = node.height();
    let hash = node.chain.block_hash(start).unwrap().unwrap();
    let mut follower = BlockFollower::new(BlockId { height: start, hash });
    let mut watch = FundingWatch::default();
    watch.watch(id, outpoint, None, None);

    // Confirmed in the next block.
    node.mine(1);
    let events = sync(&source, &mut follower, &mut watch);
    let txout = funding.output[outpoint.vout as usize].clone();
    assert_eq!(
        events,
        vec![WatchEvent::FundingConfirmed { channel_id: id, height: start + 1, txout }]
    );
    assert_eq!(watch.confirmations(id, node.height()), Some(1));

    // A competing chain without it: its block leaves, the funding is unconfirmed again.
    reorg_out_the_tip(&node, 1);
    assert_eq!(
        sync(&source, &mut follower, &mut watch),
        vec![WatchEvent::FundingReorged { channel_id: id }]
    );
    assert_eq!(watch.confirmations(id, node.height()), Some(0));
    // Nor is it looked for in the blocks: its transaction is in none of them.
    assert_eq!(Chain::find_spend(&node.chain, outpoint).unwrap(), None);
    assert_eq!(follower.tip().hash, node.chain.best_block_hash().unwrap());

    // Back in a block: confirmed again, at the new height.
    node.mine_block_with(std::slice::from_ref(&funding));
    let events = sync(&source, &mut follower, &mut watch);
    assert!(
        matches!(&events[..], [WatchEvent::FundingConfirmed { height, .. }] if *height == start + 3),
        "{events:?}"
    );
    assert!(ch.report_funding(), "the channel is ready");
    ch.pay(bitcoin::Amount::from_sat(5_000));

    // The settlement is seen in its block, and seen leaving with it.
    let settlement = ch.close();
    node.mine(1);
    let events = sync(&source, &mut follower, &mut watch);
    assert_eq!(
        events,
        vec![WatchEvent::FundingSpent {
            channel_id: id,
            height: start + 4,
            tx: settlement.clone()
        }]
    );
    let found = Chain::find_spend(&node.chain, outpoint).unwrap();
    assert_eq!(found, Some((settlement.clone(), start + 4)));
    reorg_out_the_tip(&node, 0);
    assert_eq!(
        sync(&source, &mut follower, &mut watch),
        vec![WatchEvent::SpendReorged { channel_id: id }]
    );
    // The settlement went back to the mempool: one call tells which fundings it spends.
    let unknown = OutPoint::new(Txid::all_zeros(), 0);
    assert_eq!(
        node.chain.mempool_spends(&[outpoint, unknown]).unwrap(),
        vec![Some(settlement.compute_txid()), None]
    );

    // One new block: three node calls (the best block's hash, its hash by height, the block).
    node.mine_block_with(&[settlement]);
    source.calls.set(0);
    assert_eq!(sync(&source, &mut follower, &mut watch).len(), 1);
    assert_eq!(source.calls.get(), 3);
    // None: one.
    source.calls.set(0);
    assert!(sync(&source, &mut follower, &mut watch).is_empty());
    assert_eq!(source.calls.get(), 1);
}
