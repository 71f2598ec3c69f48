//! On a real regtest node: the payer vanishes after some payments. The payee broadcasts its
//! newest commitment as soon as the tip reaches its locktime; it confirms; an older commitment
//! is then refused by the node.

mod common;

use bitcoin::Amount;
use common::node::Node;
use common::regtest::{RegtestChannel, Terms};
use paychan::chain::Rejection;

#[test]
fn payee_broadcasts_the_newest_commitment_at_its_locktime() {
    let node = Node::start();
    let mut ch = RegtestChannel::open(&node, Terms::default());
    for _ in 0..5 {
        ch.pay(Amount::from_sat(2_000));
    }
    let newest_locktime = ch.payee.funded().unwrap().current_locktime();

    // One block short: the payee's watcher does nothing (the node would refuse it anyway).
    node.mine_to(newest_locktime - 1);
    assert!(ch.payee_sees_tip().is_empty());

    // At the locktime the payee broadcasts, and the node accepts.
    node.mine_to(newest_locktime);
    let sent = ch.payee_sees_tip();
    let [(newest, Ok(txid))] = &sent[..] else { panic!("{sent:?}") };
    assert_eq!(newest.lock_time.to_consensus_u32(), newest_locktime);
    node.mine(1);
    ch.assert_mined_split(*txid, Amount::from_sat(10_000));

    // The previous commitment becomes final one step later: the funding is already spent.
    let older = ch.commitments[3].clone();
    node.mine_to(older.lock_time.to_consensus_u32());
    let err = node.chain_broadcast_rejection(&older);
    assert!(matches!(err, Rejection::MissingOrSpent { .. }), "{err:?}");
}
