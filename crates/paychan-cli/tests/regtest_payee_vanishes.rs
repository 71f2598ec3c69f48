//! On a real regtest node: the payee vanishes. The payer takes its way out: its newest
//! checkpoint, refused as non-final before its locktime and confirmed from it on; or, with no
//! checkpoint, the refund at `R`.

mod common;

use std::num::NonZeroU64;

use bitcoin::Amount;
use common::node::Node;
use common::regtest::{RegtestChannel, Terms};
use paychan::chain::Rejection;
use paychan::channel::CheckpointPolicy;

#[test]
fn payer_takes_its_newest_checkpoint_at_its_locktime_well_before_r() {
    let node = Node::start();
    let every_third = CheckpointPolicy { every_payments: NonZeroU64::new(3), every_sat: None };
    let mut ch =
        RegtestChannel::open(&node, Terms { checkpoints: every_third, ..Terms::default() });
    // Five payments: the third is a checkpoint (15,000 sat, on rung 1); the payee, gone, never
    // broadcasts its newest (25,000 sat, on rung 2).
    for _ in 0..5 {
        ch.pay(Amount::from_sat(5_000));
    }
    let checkpoint = ch.payer.funded().unwrap().funded.checkpoint_tx().unwrap().unwrap();
    let at = checkpoint.lock_time.to_consensus_u32();
    let ladder = ch.payer.state().terms.ladder;
    assert_eq!(at, ladder.locktime(1).unwrap());
    assert!(at < ladder.refund());

    node.mine_to(at - 1);
    assert!(ch.payer_sees_tip().is_empty(), "the payer waits for its checkpoint's locktime");
    let err = node.chain_broadcast_rejection(&checkpoint);
    assert!(matches!(err, Rejection::NonFinal { .. }), "{err:?}");

    node.mine_to(at);
    let sent = ch.payer_sees_tip();
    let [(tx, Ok(txid))] = &sent[..] else { panic!("{sent:?}") };
    assert_eq!(tx, &checkpoint);
    node.mine(1);
    // The payer pays what its checkpoint says and takes the rest back, `step` blocks times the
    // checkpoints made before R.
    ch.assert_mined_split(*txid, Amount::from_sat(15_000));
}

#[test]
fn payer_refund_is_non_final_before_r_and_confirms_at_r() {
    let node = Node::start();
    let terms = Terms { checkpoints: CheckpointPolicy::on_request(), ..Terms::default() };
    let mut ch = RegtestChannel::open(&node, terms);
    // Payments were made, none a checkpoint, and the payee never broadcasts: it is gone.
    for _ in 0..3 {
        ch.pay(Amount::from_sat(5_000));
    }
    assert!(ch.payer.funded().unwrap().funded.checkpoint.is_none());
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
