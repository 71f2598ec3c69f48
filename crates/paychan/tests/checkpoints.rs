//! Payments between checkpoints and checkpoints themselves, through both state machines: a
//! payment is the payer's signature only and stays on its rung; a checkpoint is countersigned
//! and moves the payments after it one rung down; any amount from 1 sat is paid.

use paychan_testkit as common;

use std::num::NonZeroU64;

use bitcoin::hashes::Hash;
use bitcoin::{Amount, Transaction};
use common::*;
use paychan::channel::{ChannelError, CheckpointPolicy, Payee, PayeeAction};
use paychan::wire::{self, Message, RawSignature};

fn sat(n: u64) -> Amount {
    Amount::from_sat(n)
}

fn open(policy: CheckpointPolicy) -> Pair {
    Pair::open_with_policy(policy)
}

fn every(n: u64) -> CheckpointPolicy {
    CheckpointPolicy { every_payments: NonZeroU64::new(n), every_sat: None }
}

/// Pays `amount` (a checkpoint if `force`) and returns the `pay` and the payee's answers.
fn pay_round(pair: &mut Pair, amount: Amount, force: bool) -> (wire::Pay, Vec<Message>) {
    let actions = if force {
        pair.payer.pay_checkpoint(amount, TIP).unwrap()
    } else {
        pair.payer.pay(amount, TIP).unwrap()
    };
    let Message::Pay(pay) = route(actions, &mut pair.out).remove(0) else { panic!() };
    let answers = pair.payee.handle_message(&Message::Pay(pay.clone()), TIP).unwrap();
    let answers = route(answers, &mut pair.out);
    for msg in &answers {
        route(pair.payer.handle_message(msg).unwrap(), &mut pair.out);
    }
    (pay, answers)
}

fn ack_signature(answers: &[Message]) -> Option<RawSignature> {
    let [Message::PayAck(ack)] = answers else { panic!("{answers:?}") };
    ack.signature.clone()
}

fn to_payee(tx: &Transaction) -> Amount {
    let script = payee_config().payout.script_pubkey();
    tx.output.iter().filter(|o| o.script_pubkey == script).map(|o| o.value).sum()
}

#[test]
fn payments_stay_on_their_rung_and_only_checkpoints_are_countersigned() {
    let mut pair = open(every(3));
    for (k, amount) in [(1, 1000), (2, 2000)] {
        let (pay, answers) = pay_round(&mut pair, sat(amount), false);
        assert_eq!((pay.update, pay.locktime, pay.checkpoint), (k, rung(1), false));
        assert_eq!(ack_signature(&answers), None, "a payment is not countersigned");
    }
    // The payer holds no fully signed state yet: its way out is the refund.
    assert!(pair.payer.funded().unwrap().funded.checkpoint.is_none());
    assert_eq!(pair.payer.funded().unwrap().funded.checkpoint_locktime(), TIP + LIFETIME);
    // The payee holds the newest, completed with its own signature, on rung 1.
    let newest = pair.payee.newest_commitment().unwrap().unwrap();
    assert_eq!((newest.lock_time.to_consensus_u32(), to_payee(&newest)), (rung(1), sat(3000)));
    pair.verify_spend(&newest).unwrap();

    // The third is a checkpoint, still on rung 1, countersigned.
    let (pay, answers) = pay_round(&mut pair, sat(500), false);
    assert_eq!((pay.update, pay.locktime, pay.checkpoint), (3, rung(1), true));
    assert!(ack_signature(&answers).is_some());
    let f = &pair.payer.funded().unwrap().funded;
    let checkpoint = f.checkpoint_tx().unwrap().unwrap();
    assert_eq!(checkpoint, pair.payee.newest_commitment().unwrap().unwrap());
    assert_eq!(
        (f.checkpoints(), f.checkpoint_locktime(), to_payee(&checkpoint)),
        (1, rung(1), sat(3500))
    );

    // The payments after it move one rung down: the payee's newest is final `step` blocks
    // before the payer's checkpoint.
    let (pay, _) = pay_round(&mut pair, sat(1), false);
    assert_eq!((pay.update, pay.locktime, pay.checkpoint), (4, rung(2), false));
    let newest = pair.payee.newest_commitment().unwrap().unwrap();
    assert_eq!(newest.lock_time.to_consensus_u32() + STEP, checkpoint.lock_time.to_consensus_u32());
    assert_eq!(to_payee(&newest), sat(3501));
    let settlement = pair.close();
    assert_eq!(to_payee(&settlement), sat(3501));
}

#[test]
fn the_payer_asks_for_a_checkpoint_whenever_it_likes() {
    let mut pair = open(CheckpointPolicy::on_request());
    for _ in 0..5 {
        let (pay, answers) = pay_round(&mut pair, sat(100), false);
        assert!(!pay.checkpoint);
        assert_eq!(ack_signature(&answers), None);
    }
    let (pay, answers) = pay_round(&mut pair, sat(100), true);
    assert!(pay.checkpoint && ack_signature(&answers).is_some());
    assert_eq!(pair.payer.funded().unwrap().funded.checkpoint.as_ref().unwrap().paid, sat(600));
}

#[test]
fn the_default_policy_checkpoints_every_hundredth_of_the_capacity() {
    let mut pair = open(CheckpointPolicy::default_for(sat(100_000)));
    // 1,000 sat is 1% of 100,000: 999 one-sat payments are not checkpoints, the 1000th is.
    let mut flags = Vec::new();
    for _ in 0..1000 {
        flags.push(pay_round(&mut pair, sat(1), false).0.checkpoint);
    }
    assert_eq!(flags.iter().filter(|c| **c).count(), 1);
    assert!(flags[999]);
    // A payment of the whole share at once is one.
    assert!(pay_round(&mut pair, sat(1000), false).0.checkpoint);
}

#[test]
fn one_sat_payments_from_zero_are_taken_and_trimmed_below_the_payees_dust_limit() {
    let mut pair = open(CheckpointPolicy::on_request());
    let dust = payee_config().payout.script_pubkey().minimal_non_dust().to_sat();
    for paid in 1..=dust {
        pay_round(&mut pair, sat(1), false);
        let newest = pair.payee.newest_commitment().unwrap().unwrap();
        pair.verify_spend(&newest).unwrap();
        let expected = if paid < dust { Amount::ZERO } else { sat(paid) };
        assert_eq!(to_payee(&newest), expected, "after {paid} sat");
    }
    assert_eq!((pair.payer.paid(), pair.payee.paid()), (sat(dust), sat(dust)));
}

#[test]
fn a_settlement_below_the_payees_dust_limit_pays_only_the_payer() {
    let mut pair = open(CheckpointPolicy::on_request());
    for _ in 0..3 {
        pay_round(&mut pair, sat(1), false);
    }
    let settlement = pair.close();
    pair.verify_spend(&settlement).unwrap();
    assert_eq!(settlement.output.len(), 1);
    let refund = pair.payer.refund_tx().unwrap();
    // The 3 sat went to the fee: the payer gets what the refund would give, less them.
    assert_eq!(settlement.output[0].value, refund.output[0].value - sat(3));
}

#[test]
fn a_checkpoint_acknowledged_without_its_signature_is_refused() {
    let mut pair = open(CheckpointPolicy::on_request());
    let actions = pair.payer.pay_checkpoint(sat(700), TIP).unwrap();
    let pay = route(actions, &mut pair.out).remove(0);
    let Message::PayAck(mut ack) =
        route(pair.payee.handle_message(&pay, TIP).unwrap(), &mut pair.out).remove(0)
    else {
        panic!()
    };
    let genuine = ack.signature.take();
    let before = pair.payer.state().clone();
    let err = pair.payer.handle_message(&Message::PayAck(ack.clone())).unwrap_err();
    assert_eq!(err, ChannelError::CheckpointNotSigned { update: 1 });
    // Nor with a signature on something else.
    let mut forged = genuine.clone().unwrap();
    forged.0 = signer(2).sign(bitcoin::sighash::SegwitV0Sighash::from_byte_array([3; 32])).to_vec();
    ack.signature = Some(forged);
    let err = pair.payer.handle_message(&Message::PayAck(ack.clone())).unwrap_err();
    assert!(matches!(err, ChannelError::Signature { .. }), "{err}");
    assert_eq!(pair.payer.state(), &before);
    ack.signature = genuine;
    pair.payer.handle_message(&Message::PayAck(ack)).unwrap();
    assert!(pair.payer.funded().unwrap().funded.checkpoint.is_some());
}

#[test]
fn a_signature_on_a_payment_that_is_no_checkpoint_is_refused() {
    let mut pair = open(CheckpointPolicy::on_request());
    let pay = route(pair.payer.pay(sat(700), TIP).unwrap(), &mut pair.out).remove(0);
    let Message::PayAck(mut ack) =
        route(pair.payee.handle_message(&pay, TIP).unwrap(), &mut pair.out).remove(0)
    else {
        panic!()
    };
    ack.signature = Some(RawSignature(vec![0x30]));
    let before = pair.payer.state().clone();
    assert!(pair.payer.handle_message(&Message::PayAck(ack)).is_err());
    assert_eq!(pair.payer.state(), &before);
}

#[test]
fn lost_acks_across_a_checkpoint_are_repeated_with_its_signature() {
    // Five payments in flight, the third a checkpoint; the payee takes the first three, or all
    // five, and every ack is lost.
    for taken in [3, 5] {
        let mut pair = open(every(3));
        let pays: Vec<Message> = (0..5)
            .map(|_| route(pair.payer.pay(sat(1000), TIP).unwrap(), &mut pair.out).remove(0))
            .collect();
        for pay in &pays[..taken] {
            route(pair.payee.handle_message(pay, TIP).unwrap(), &mut pair.out);
        }
        let held = pair.payee.state().clone();
        // Reconnected, the payer only asks; the payee answers with its newest payment and its
        // newest checkpoint, signature and all.
        let asked = route(pair.payer.reestablish().unwrap(), &mut pair.out);
        let [Message::Reestablish(_)] = &asked[..] else { panic!("{asked:?}") };
        let answers = route(pair.payee.handle_message(&asked[0], TIP).unwrap(), &mut pair.out);
        assert_eq!(pair.payee.state(), &held);
        let [Message::ChannelReady(_), Message::Reconcile(reconcile)] = &answers[..] else {
            panic!("{answers:?}")
        };
        assert_eq!(reconcile.update, taken as u64);
        assert_eq!((reconcile.checkpoint_update, reconcile.checkpoint_paid_sat), (3, 3000));
        assert!(reconcile.payee_signature.is_some());
        let mut resent = Vec::new();
        for msg in &answers {
            resent.extend(route(pair.payer.handle_message(msg).unwrap(), &mut pair.out));
        }
        // It acknowledges what the payee took, the checkpoint with the payee's signature; what
        // it did not take is resent, signed again, the same bytes.
        let f = &pair.payer.funded().unwrap().funded;
        assert_eq!(f.paid(), sat(1000 * taken as u64));
        assert_eq!(f.checkpoint, pair.payee.funded().unwrap().checkpoint);
        assert_eq!(f.checkpoint.as_ref().unwrap().number, 3);
        let checkpoint = f.checkpoint_tx().unwrap().unwrap();
        pair.verify_spend(&checkpoint).unwrap();
        assert_eq!(resent, pays[taken..]);
        for pay in &resent {
            let answers = route(pair.payee.handle_message(pay, TIP).unwrap(), &mut pair.out);
            assert_eq!(ack_signature(&answers), None);
            route(pair.payer.handle_message(&answers[0]).unwrap(), &mut pair.out);
        }
        let f = &pair.payer.funded().unwrap().funded;
        assert!(pair.payer.funded().unwrap().pending.is_empty());
        assert_eq!((f.paid(), f.checkpoint.as_ref().unwrap().number), (sat(5000), 3));
        assert_eq!(pair.payee.paid(), sat(5000));
    }
}

#[test]
fn a_payment_pipelined_after_a_refused_checkpoint_is_refused_too() {
    let mut pair = open(every(2));
    pay_round(&mut pair, sat(100), false);
    // The checkpoint is signed and lost on the way.
    route(pair.payer.pay(sat(100), TIP).unwrap(), &mut pair.out);
    let after = route(pair.payer.pay(sat(100), TIP).unwrap(), &mut pair.out).remove(0);
    let Message::Pay(p) = &after else { panic!() };
    assert_eq!(p.locktime, rung(2), "signed on the rung below the checkpoint");
    // The payee never took the checkpoint: the payment after it is off its rung.
    let before = pair.payee.state().clone();
    let err = pair.payee.handle_message(&after, TIP).unwrap_err();
    assert!(matches!(err, ChannelError::UnexpectedUpdate { expected: 2, got: 3 }), "{err}");
    assert_eq!(pair.payee.state(), &before);
}

#[test]
fn a_malformed_checkpoint_policy_is_refused() {
    let mut config = payer_config(sat(100_000));
    config.checkpoints = CheckpointPolicy { every_payments: None, every_sat: Some(Amount::ZERO) };
    let err = paychan::channel::Payer::open(config, signer(1), wire::ChannelId([7; 32]), TIP)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err, ChannelError::BadCheckpointPolicy);
    let (_, actions) = paychan::channel::Payer::open(
        payer_config(sat(100_000)),
        signer(1),
        wire::ChannelId([7; 32]),
        TIP,
    )
    .unwrap();
    let Message::OpenChannel(mut open) = route(actions, &mut Outbox::default()).remove(0) else {
        panic!()
    };
    for (payments, sats) in [(Some(0), None), (None, Some(0))] {
        open.checkpoint_every_payments = payments;
        open.checkpoint_every_sat = sats;
        let err = Payee::accept(&open, &payee_config(), signer(2), TIP).map(|_| ()).unwrap_err();
        assert_eq!(err, ChannelError::BadCheckpointPolicy);
    }
}

#[test]
fn a_payer_state_from_before_checkpoints_loads_and_goes_on() {
    // The form the release before checkpoints stored: the newest update signed by both as
    // `latest`, a payment in flight with its signature, no policy in the terms.
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(1000)).unwrap();
    let in_flight = route(pair.payer.pay(sat(500), TIP).unwrap(), &mut pair.out).remove(0);
    let Message::Pay(sent) = &in_flight else { panic!() };
    let mut v1 = serde_json::to_value(pair.payer.state()).unwrap();
    let checkpoint = v1["stage"]["Funded"]["funded"]["checkpoint"].take();
    let funded = v1["stage"]["Funded"]["funded"].as_object_mut().unwrap();
    funded.remove("checkpoint");
    funded.remove("newest");
    funded.insert("latest".into(), checkpoint);
    v1["terms"].as_object_mut().unwrap().remove("checkpoints");
    v1["stage"]["Funded"]["pending"] = serde_json::json!([{
        "number": 2, "paid": 1500, "locktime": sent.locktime,
        "payer_sig": serde_json::to_value(pair.payer.funded().unwrap().funded.checkpoint.as_ref().unwrap().payer_sig).unwrap(),
    }]);
    let state = serde_json::from_value(v1).unwrap();
    pair.payer = paychan::channel::Payer::restore(signer(1), state).unwrap();
    assert_eq!(pair.payer.state().terms.checkpoints, CheckpointPolicy::every_payment());
    // Reconnected, the payee holds payment 1, as the payer does; the payment in flight is
    // resent as it was, a checkpoint, and completes.
    let asked = route(pair.payer.reestablish().unwrap(), &mut pair.out);
    let [Message::Reestablish(_)] = &asked[..] else { panic!("{asked:?}") };
    let answers = route(pair.payee.handle_message(&asked[0], TIP).unwrap(), &mut pair.out);
    let [Message::ChannelReady(_), Message::Reconcile(reconcile)] = &answers[..] else {
        panic!("{answers:?}")
    };
    assert_eq!((reconcile.update, reconcile.paid_total_sat), (1, 1000));
    let mut resent = Vec::new();
    for msg in &answers {
        resent.extend(route(pair.payer.handle_message(msg).unwrap(), &mut pair.out));
    }
    assert_eq!(resent, vec![in_flight.clone()]);
    let answers = pair.payee.handle_message(&in_flight, TIP).unwrap();
    let PayeeAction::Send(ack) = &answers[1] else { panic!() };
    route(pair.payer.handle_message(ack).unwrap(), &mut pair.out);
    pair.pay(sat(1)).unwrap();
    assert_eq!(pair.payer.paid(), sat(1501));
    assert_eq!(pair.payer.funded().unwrap().funded.checkpoints(), 3);
}
