//! On a real regtest node: the payee vanishes. The payer's refund is refused as non-final before
//! `R`, accepted at `R`, and confirms, returning the capacity less the fee.

mod common;

use bitcoin::Amount;
use common::node::Node;
use common::regtest::{RegtestChannel, Terms};
use paychan::chain::Rejection;

#[test]
fn payer_refund_is_non_final_before_r_and_confirms_at_r() {
    let node = Node::start();
    let mut ch = RegtestChannel::open(&node, Terms::default());
    // Payments were made, but the payee never broadcasts a commitment: it is gone.
    for _ in 0..3 {
        ch.pay(Amount::from_sat(5_000));
    }
    let refund = ch.payer.refund_tx().unwrap();
    let r = refund.lock_time.to_consensus_u32();
    assert_eq!(r, ch.payer.state().terms.ladder.refund());

    node.mine_to(r - 1);
    assert!(ch.payer_sees_tip().is_empty(), "the payer waits for R");
    let err = node.chain_broadcast_rejection(&refund);
    assert!(matches!(err, Rejection::NonFinal { .. }), "{err:?}");

    node.mine_to(r);
    let sent = ch.payer_sees_tip();
    let [(tx, Ok(txid))] = &sent[..] else { panic!("{sent:?}") };
    assert_eq!(tx, &refund);
    node.mine(1);
    // Everything comes back to the payer, less the fee: the payments made are void.
    ch.assert_mined_split(*txid, Amount::ZERO);
}
