//! On a real regtest node: a commitment broadcast before its locktime is refused as non-final,
//! and accepted from the tip equal to its locktime (the consensus rule `nLockTime < height`).

mod common;

use bitcoin::Amount;
use common::node::Node;
use common::regtest::{RegtestChannel, Terms};
use paychan::chain::{Chain, Rejection};

#[test]
fn commitments_are_non_final_until_the_tip_reaches_their_locktime() {
    let node = Node::start();
    let mut ch = RegtestChannel::open(&node, Terms::default());
    for _ in 0..3 {
        ch.pay(Amount::from_sat(3_000));
    }
    // Right after the payments every commitment is far from final.
    for tx in &ch.commitments {
        let err = node.chain_broadcast_rejection(tx);
        assert!(matches!(err, Rejection::NonFinal { .. }), "{err:?}");
    }
    let newest = ch.commitments.last().unwrap().clone();
    let locktime = newest.lock_time.to_consensus_u32();
    node.mine_to(locktime - 1);
    let err = node.chain_broadcast_rejection(&newest);
    assert!(matches!(err, Rejection::NonFinal { .. }), "{err:?}");
    node.mine(1);
    node.chain.test_accept(&newest).expect("final once the tip is its locktime");
}
