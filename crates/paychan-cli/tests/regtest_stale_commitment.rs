//! On a real regtest node: the payer broadcasts a stale commitment the moment it becomes final.
//!
//! If the payee broadcast its newest commitment in time, the stale one is refused. If the payee
//! was late (offline through its whole step window), the stale one is accepted and confirms: the
//! payee loses the difference. This is the scheme's known weak spot; see docs/protocol.md.

mod common;

use bitcoin::Amount;
use common::node::Node;
use common::regtest::{RegtestChannel, Terms};
use paychan::chain::{Chain, Rejection};

const PRICE: Amount = Amount::from_sat(4_000);

fn channel_with_five_payments(node: &Node) -> RegtestChannel<'_> {
    let mut ch = RegtestChannel::open(node, Terms::default());
    for _ in 0..5 {
        ch.pay(PRICE);
    }
    ch
}

#[test]
fn stale_commitment_is_refused_after_the_newest_confirmed() {
    let node = Node::start();
    let mut ch = channel_with_five_payments(&node);
    node.mine_to(ch.payee.funded().unwrap().current_locktime());
    let sent = ch.payee_sees_tip();
    let [(_, Ok(newest_txid))] = &sent[..] else { panic!("{sent:?}") };
    node.mine(1);
    assert!(node.is_confirmed(*newest_txid));

    // The payer's best stale state (update 4) is final `step` blocks later: refused.
    let stale = ch.commitments[3].clone();
    node.mine_to(stale.lock_time.to_consensus_u32());
    let err = node.chain_broadcast_rejection(&stale);
    assert!(matches!(err, Rejection::MissingOrSpent { .. }), "{err:?}");
}

#[test]
fn late_payee_loses_to_a_stale_commitment() {
    let node = Node::start();
    let mut ch = channel_with_five_payments(&node);
    let stale = ch.commitments[3].clone();
    let stale_locktime = stale.lock_time.to_consensus_u32();

    // The payee sleeps through its window: the tip passes the newest locktime and reaches the
    // stale one, and the payer broadcasts first.
    node.mine_to(stale_locktime);
    let stale_txid = node.chain.broadcast(&stale).expect("a final stale commitment relays");

    // The payee wakes up in the same block interval: its newest commitment conflicts with the
    // stale one in the mempool and, paying the same fee, cannot replace it.
    let sent = ch.payee_sees_tip();
    let [(_, Err(err))] = &sent[..] else { panic!("{sent:?}") };
    assert!(matches!(err, Rejection::Conflict { .. }), "{err:?}");

    node.mine(1);
    assert!(node.is_confirmed(stale_txid));
    ch.assert_mined_split(stale_txid, PRICE * 4);
    assert_eq!(ch.payee.paid(), PRICE * 5, "it had been paid for 5");

    // Afterwards the newest commitment can never confirm.
    let sent = ch.payee_sees_tip();
    let [(_, Err(err))] = &sent[..] else { panic!("{sent:?}") };
    assert!(matches!(err, Rejection::MissingOrSpent { .. }), "{err:?}");
}
