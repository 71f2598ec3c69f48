//! Reconciling after a reconnect: the payer sends `reestablish`, the payee answers with the
//! newest payment it holds and its newest checkpoint (`reconcile`), and the payer, having
//! checked its own signature on the one and the payee's on the other, stands where the payee
//! stands, then resends what is still in flight after it. A payment
//! the payer gave up on but the payee stored is taken back; lost acknowledgements are made
//! good; a payee that holds less than it acknowledged, or a payment the payer never signed, is
//! refused and changes nothing.

use paychan_testkit as common;

use std::num::NonZeroU64;

use bitcoin::{Amount, Transaction};
use common::*;
use paychan::channel::{ChannelError, CheckpointPolicy, Payee, PayerAction, Payment};
use paychan::wire::{self, ChannelId, Message, RawSignature};

fn sat(n: u64) -> Amount {
    Amount::from_sat(n)
}

fn open(policy: CheckpointPolicy) -> Pair {
    Pair::open_with_policy(policy)
}

fn to_payee(tx: &Transaction) -> Amount {
    let script = payee_config().payout.script_pubkey();
    tx.output.iter().filter(|o| o.script_pubkey == script).map(|o| o.value).sum()
}

/// The payer reconnects: returns the payee's answers to its `reestablish`, `channel_ready` and
/// `reconcile`, not yet delivered. The payee's state is unchanged.
fn ask(pair: &mut Pair) -> (Message, wire::Reconcile) {
    let asked = route(pair.payer.reestablish().unwrap(), &mut pair.out);
    let [Message::Reestablish(_)] = &asked[..] else { panic!("{asked:?}") };
    let before = pair.payee.state().clone();
    let answers = route(pair.payee.handle_message(&asked[0], pair.tip).unwrap(), &mut pair.out);
    assert_eq!(pair.payee.state(), &before, "answering a reestablish changes nothing");
    let [ready @ Message::ChannelReady(_), Message::Reconcile(reconcile)] = &answers[..] else {
        panic!("{answers:?}")
    };
    (ready.clone(), reconcile.clone())
}

/// Reconnects and delivers the payee's answers to the payer; returns what the payer sent
/// after them.
fn reconnect(pair: &mut Pair) -> Vec<Message> {
    let (ready, reconcile) = ask(pair);
    assert!(route(pair.payer.handle_message(&ready).unwrap(), &mut pair.out).is_empty());
    route(pair.payer.handle_message(&Message::Reconcile(reconcile)).unwrap(), &mut pair.out)
}

/// The payer's newest acknowledged payment.
fn payer_newest(pair: &Pair) -> Payment {
    pair.payer.funded().unwrap().funded.newest.unwrap()
}

/// The payee's newest payment, as the payer keeps it (without the payer's signature).
fn payee_newest(pair: &Pair) -> Payment {
    Payment { payer_sig: None, ..pair.payee.funded().unwrap().newest.unwrap() }
}

/// Pays `amount`, delivers the `pay` to the payee and returns the payee's answers, not yet
/// delivered (lost, or replaced on the way).
fn pay_unanswered(pair: &mut Pair, amount: Amount, checkpoint: bool) -> Vec<Message> {
    let actions = if checkpoint {
        pair.payer.pay_checkpoint(amount, pair.tip).unwrap()
    } else {
        pair.payer.pay(amount, pair.tip).unwrap()
    };
    let pay = route(actions, &mut pair.out).remove(0);
    route(pair.payee.handle_message(&pay, pair.tip).unwrap(), &mut pair.out)
}

/// What a refusal must be.
type Expected<'a> = &'a dyn Fn(&ChannelError) -> bool;

/// Closes cooperatively and checks that the settlement pays the payee exactly `paid`.
fn close_paying(pair: &mut Pair, paid: Amount) {
    assert_eq!((pair.payer.paid(), pair.payee.paid()), (paid, paid));
    let settlement = pair.close();
    pair.verify_spend(&settlement).unwrap();
    assert_eq!(to_payee(&settlement), paid);
    let payer_settled = pair.payer.funded().unwrap().funded.settlement.as_ref().unwrap().paid;
    let payee_settled = pair.payee.funded().unwrap().settlement.as_ref().unwrap().paid;
    assert_eq!((payer_settled, payee_settled), (paid, paid));
}

#[test]
fn a_payment_given_up_on_that_the_payee_stored_is_taken_back() {
    let mut pair = open(CheckpointPolicy::on_request());
    pair.pay(sat(1000)).unwrap();
    // The payee stores payment 2 and acknowledges it, but what reaches the payer is an
    // `error` (forged, or the payee's from a state it then left): the payer gives it up.
    let answers = pay_unanswered(&mut pair, sat(500), false);
    assert!(matches!(answers[..], [Message::PayAck(wire::PayAck { update: 2, .. })]));
    let given_up = pair.payer.abandon_pending().unwrap();
    assert_eq!((given_up.number, given_up.paid), (2, sat(1500)));
    assert_eq!((pair.payer.paid(), pair.payee.paid()), (sat(1000), sat(1500)));

    // Reconnected, the payee tells what it holds, with the payer's own signature.
    let (ready, reconcile) = ask(&mut pair);
    assert_eq!((reconcile.update, reconcile.paid_total_sat), (2, 1500));
    assert_eq!((reconcile.locktime, reconcile.checkpoint), (rung(1), false));
    assert!(reconcile.payer_signature.is_some());
    // No checkpoint anywhere yet.
    assert_eq!((reconcile.checkpoint_update, reconcile.payee_signature.as_ref()), (0, None));
    assert!(route(pair.payer.handle_message(&ready).unwrap(), &mut pair.out).is_empty());
    // The payer takes it back, persists, and has nothing to resend.
    let actions = pair.payer.handle_message(&Message::Reconcile(reconcile)).unwrap();
    assert_eq!(actions, vec![PayerAction::Persist]);
    assert_eq!(payer_newest(&pair), payee_newest(&pair));
    assert_eq!((payer_newest(&pair).number, pair.payer.paid()), (2, sat(1500)));
    assert!(pair.payer.funded().unwrap().pending.is_empty());

    // The next payment is number 3 for both, and the close pays exactly the payee's total.
    pair.pay(sat(200)).unwrap();
    assert_eq!((payer_newest(&pair).number, payee_newest(&pair).number), (3, 3));
    assert_eq!(payer_newest(&pair), payee_newest(&pair));
    close_paying(&mut pair, sat(1700));
}

#[test]
fn a_payment_signed_again_under_a_number_the_payee_holds_is_dropped_for_the_payees() {
    let mut pair = open(CheckpointPolicy::on_request());
    pair.pay(sat(1000)).unwrap();
    pay_unanswered(&mut pair, sat(500), false);
    pair.payer.abandon_pending().unwrap();
    // Having given payment 2 up, the payer signs another payment 2; the payee holds its own
    // payment 2 and refuses it.
    let again = route(pair.payer.pay(sat(200), TIP).unwrap(), &mut pair.out).remove(0);
    let Message::Pay(p) = &again else { panic!("{again:?}") };
    assert_eq!((p.update, p.paid_total_sat), (2, 1200));
    let held = pair.payee.state().clone();
    let err = pair.payee.handle_message(&again, TIP).unwrap_err();
    assert_eq!(err, ChannelError::UnexpectedUpdate { expected: 3, got: 2 });
    assert_eq!(pair.payee.state(), &held);

    // Reconnected: the payee's payment 2 replaces the payer's, which is dropped, not resent.
    let (ready, reconcile) = ask(&mut pair);
    assert_eq!((reconcile.update, reconcile.paid_total_sat), (2, 1500));
    route(pair.payer.handle_message(&ready).unwrap(), &mut pair.out);
    let actions = pair.payer.handle_message(&Message::Reconcile(reconcile)).unwrap();
    assert_eq!(actions, vec![PayerAction::Persist]);
    assert!(pair.payer.funded().unwrap().pending.is_empty());
    assert_eq!(payer_newest(&pair), payee_newest(&pair));
    assert_eq!(pair.payer.paid(), sat(1500));
    assert_eq!(pair.payee.state(), &held);

    pair.pay(sat(200)).unwrap();
    assert_eq!((payer_newest(&pair).number, payer_newest(&pair).paid), (3, sat(1700)));
    assert_eq!(payer_newest(&pair), payee_newest(&pair));
    close_paying(&mut pair, sat(1700));
}

#[test]
fn lost_acks_of_pipelined_payments_are_made_good_by_reconcile() {
    // Six payments signed and sent without waiting, every second a checkpoint; the payee takes
    // the first four (its newest the checkpoint) or five (its newest after the checkpoint), and
    // every ack is lost.
    for taken in [4, 5] {
        let policy = CheckpointPolicy { every_payments: NonZeroU64::new(2), every_sat: None };
        let mut pair = open(policy);
        let pays: Vec<Message> = (0..6)
            .map(|_| route(pair.payer.pay(sat(1000), TIP).unwrap(), &mut pair.out).remove(0))
            .collect();
        for pay in &pays[..taken] {
            route(pair.payee.handle_message(pay, TIP).unwrap(), &mut pair.out);
        }
        let total = sat(1000 * taken as u64);
        assert_eq!((pair.payer.paid(), pair.payee.paid()), (sat(0), total));

        let (ready, reconcile) = ask(&mut pair);
        assert_eq!((reconcile.update, reconcile.paid_total_sat), (taken as u64, total.to_sat()));
        assert_eq!(reconcile.checkpoint, taken == 4);
        assert_eq!((reconcile.checkpoint_update, reconcile.checkpoint_paid_sat), (4, 4000));
        assert!(reconcile.payee_signature.is_some());
        route(pair.payer.handle_message(&ready).unwrap(), &mut pair.out);
        // The payee's newest is the payer's own in flight: the reconcile is its ack, and the
        // checkpoint's, with its signature; what the payee did not take is resent, the same
        // bytes, after the Persist.
        let actions = pair.payer.handle_message(&Message::Reconcile(reconcile)).unwrap();
        let mut expected = vec![PayerAction::Persist];
        expected.extend(pays[taken..].iter().cloned().map(PayerAction::Send));
        assert_eq!(actions, expected, "{taken} taken");
        let f = pair.payer.funded().unwrap();
        let in_flight: Vec<u64> = f.pending.iter().map(|p| p.number).collect();
        assert_eq!(in_flight, (taken as u64 + 1..=6).collect::<Vec<_>>());
        assert_eq!(payer_newest(&pair), payee_newest(&pair));
        assert_eq!(f.funded.checkpoint.as_ref().unwrap().number, 4);
        assert_eq!(f.funded.checkpoint, pair.payee.funded().unwrap().checkpoint);
        pair.verify_spend(&f.funded.checkpoint_tx().unwrap().unwrap()).unwrap();

        // The payee takes what was resent and acknowledges it.
        for pay in &pays[taken..] {
            for ack in route(pair.payee.handle_message(pay, TIP).unwrap(), &mut pair.out) {
                route(pair.payer.handle_message(&ack).unwrap(), &mut pair.out);
            }
        }
        let f = pair.payer.funded().unwrap();
        assert!(f.pending.is_empty());
        assert_eq!(f.funded.checkpoint.as_ref().unwrap().number, 6);
        assert_eq!(payer_newest(&pair), payee_newest(&pair));

        // Another reconnect finds both in the same place: nothing to persist or resend.
        let state = pair.payer.state().clone();
        assert_eq!(reconnect(&mut pair), vec![]);
        assert_eq!(pair.payer.state(), &state);
        close_paying(&mut pair, sat(6000));
    }
}

#[test]
fn a_payee_that_holds_less_than_it_acknowledged_is_refused() {
    let mut pair = open(CheckpointPolicy::on_request());
    let empty = pair.payee.state().clone();
    pair.pay(sat(1000)).unwrap();
    let one = pair.payee.state().clone();
    pair.pay(sat(500)).unwrap();
    pair.pay(sat(250)).unwrap();
    // And one in flight.
    route(pair.payer.pay(sat(100), TIP).unwrap(), &mut pair.out);
    // The payee restarts from an old backup: it holds payment 1, or none at all.
    for (backup, theirs) in [(one, 1), (empty, 0)] {
        pair.payee = Payee::restore(signer(2), backup).unwrap();
        let (ready, reconcile) = ask(&mut pair);
        assert_eq!(reconcile.update, theirs);
        route(pair.payer.handle_message(&ready).unwrap(), &mut pair.out);
        let before = pair.payer.state().clone();
        let err = pair.payer.handle_message(&Message::Reconcile(reconcile)).unwrap_err();
        assert_eq!(err, ChannelError::PeerBehind { ours: 3, theirs });
        assert_eq!(pair.payer.state(), &before);
        assert_eq!(pair.payer.paid(), sat(1750));
        assert_eq!(pair.payer.funded().unwrap().pending.len(), 1);
    }
}

#[test]
fn a_reconcile_the_payer_did_not_sign_is_refused_and_changes_nothing() {
    let mut pair = open(CheckpointPolicy::on_request());
    pair.pay(sat(1000)).unwrap();
    pay_unanswered(&mut pair, sat(500), false);
    pair.payer.abandon_pending().unwrap();
    let (ready, genuine) = ask(&mut pair);
    route(pair.payer.handle_message(&ready).unwrap(), &mut pair.out);
    assert_eq!((genuine.update, genuine.paid_total_sat), (2, 1500));

    let channel = pair.payer.funded().unwrap().funded.channel.clone();
    let sighash = |paid: u64, locktime: u32| {
        let tx = channel.builder().commitment(sat(paid), locktime).unwrap();
        channel.builder().sighash(&tx).unwrap()
    };
    let real_sig = genuine.payer_signature.clone().unwrap();
    let claim_checkpoint = |m: &mut wire::Reconcile| {
        (m.checkpoint_update, m.checkpoint_paid_sat) = (m.update, m.paid_total_sat);
        m.checkpoint_locktime = m.locktime;
    };
    let forge = |f: &dyn Fn(&mut wire::Reconcile)| {
        let mut m = genuine.clone();
        f(&mut m);
        Message::Reconcile(m)
    };
    let is_signature = |e: &ChannelError| matches!(e, ChannelError::Signature { .. });
    let mismatch = |e: &ChannelError| *e == ChannelError::ReconcileMismatch { update: 2 };
    let refused: Vec<(&str, Message, Expected)> = vec![
        (
            "signed by the payee's key",
            forge(&|m| {
                m.payer_signature = Some(RawSignature::from(signer(2).sign(sighash(1500, rung(1)))))
            }),
            &is_signature,
        ),
        (
            "signed by some other key",
            forge(&|m| {
                m.payer_signature = Some(RawSignature::from(signer(9).sign(sighash(1500, rung(1)))))
            }),
            &is_signature,
        ),
        (
            "another total with the payer's real signature",
            forge(&|m| m.paid_total_sat = 1600),
            &is_signature,
        ),
        (
            "another rung with the payer's real signature",
            forge(&|m| m.locktime = rung(2)),
            &is_signature,
        ),
        ("a locktime off the ladder", forge(&|m| m.locktime = rung(1) + 1), &mismatch),
        ("the refund's locktime", forge(&|m| m.locktime = rung(0)), &mismatch),
        ("no signature", forge(&|m| m.payer_signature = None), &mismatch),
        (
            "garbage for a signature",
            forge(&|m| m.payer_signature = Some(RawSignature(vec![0x30, 1, 2]))),
            &is_signature,
        ),
        (
            "a checkpoint the payee did not sign",
            forge(&|m| {
                m.checkpoint = true;
                claim_checkpoint(m);
            }),
            &|e| *e == ChannelError::CheckpointNotSigned { update: 2 },
        ),
        (
            "a checkpoint signed by the payer's key for the payee",
            forge(&|m| {
                m.checkpoint = true;
                claim_checkpoint(m);
                m.payee_signature = Some(real_sig.clone());
            }),
            &is_signature,
        ),
        (
            "the acknowledged number with another total",
            forge(&|m| {
                m.update = 1;
                m.paid_total_sat = 1100;
            }),
            &|e| *e == ChannelError::ReconcileMismatch { update: 1 },
        ),
        ("another channel", forge(&|m| m.channel_id = ChannelId([8; 32])), &|e| {
            !matches!(e, ChannelError::Signature { .. })
        }),
    ];
    let before = pair.payer.state().clone();
    for (what, msg, expected) in refused {
        let Err(err) = pair.payer.handle_message(&msg) else { panic!("{what}: taken") };
        assert!(expected(&err), "{what}: {err:?}");
        assert_eq!(pair.payer.state(), &before, "{what}");
    }
    // The genuine one is taken.
    pair.payer.handle_message(&Message::Reconcile(genuine)).unwrap();
    assert_eq!(payer_newest(&pair), payee_newest(&pair));
    close_paying(&mut pair, sat(1500));
}

#[test]
fn a_checkpoint_adopted_by_reconcile_becomes_the_payers_checkpoint() {
    let mut pair = open(CheckpointPolicy::on_request());
    pair.pay(sat(1000)).unwrap();
    // A checkpoint the payee countersigned and stored, given up on by the payer.
    let answers = pay_unanswered(&mut pair, sat(500), true);
    let [Message::PayAck(ack)] = &answers[..] else { panic!("{answers:?}") };
    assert!(ack.signature.is_some());
    pair.payer.abandon_pending().unwrap();
    assert!(pair.payer.funded().unwrap().funded.checkpoint.is_none());

    let (ready, reconcile) = ask(&mut pair);
    assert_eq!((reconcile.update, reconcile.locktime, reconcile.checkpoint), (2, rung(1), true));
    assert_eq!(reconcile.payee_signature, ack.signature);
    route(pair.payer.handle_message(&ready).unwrap(), &mut pair.out);
    // Stripped of the payee's signature, or with one on another commitment, it is refused.
    let before = pair.payer.state().clone();
    let mut unsigned = reconcile.clone();
    unsigned.payee_signature = None;
    let err = pair.payer.handle_message(&Message::Reconcile(unsigned)).unwrap_err();
    assert_eq!(err, ChannelError::CheckpointNotSigned { update: 2 });
    let mut forged = reconcile.clone();
    let channel = pair.payer.funded().unwrap().funded.channel.clone();
    let other = channel.builder().commitment(sat(1000), rung(1)).unwrap();
    let sig = signer(2).sign(channel.builder().sighash(&other).unwrap());
    forged.payee_signature = Some(RawSignature::from(sig));
    let err = pair.payer.handle_message(&Message::Reconcile(forged)).unwrap_err();
    assert!(matches!(err, ChannelError::Signature { .. }), "{err:?}");
    assert_eq!(pair.payer.state(), &before);

    let actions = pair.payer.handle_message(&Message::Reconcile(reconcile)).unwrap();
    assert_eq!(actions, vec![PayerAction::Persist]);
    let f = &pair.payer.funded().unwrap().funded;
    let checkpoint = f.checkpoint.as_ref().unwrap();
    assert_eq!((checkpoint.number, checkpoint.paid, checkpoint.locktime), (2, sat(1500), rung(1)));
    assert_eq!(f.checkpoint, pair.payee.funded().unwrap().checkpoint);
    assert_eq!((f.checkpoints(), f.checkpoint_locktime()), (1, rung(1)));
    // Both signatures, valid: the payer's way out, the same transaction as the payee's.
    let tx = f.checkpoint_tx().unwrap().unwrap();
    pair.verify_spend(&tx).unwrap();
    assert_eq!(Some(tx), pair.payee.newest_commitment().unwrap());
    assert_eq!(payer_newest(&pair), payee_newest(&pair));

    // The next payment goes one rung down, and both take it.
    let pay = route(pair.payer.pay(sat(200), TIP).unwrap(), &mut pair.out).remove(0);
    let Message::Pay(p) = &pay else { panic!("{pay:?}") };
    assert_eq!((p.update, p.locktime, p.checkpoint), (3, rung(2), false));
    let ack = route(pair.payee.handle_message(&pay, TIP).unwrap(), &mut pair.out).remove(0);
    route(pair.payer.handle_message(&ack).unwrap(), &mut pair.out);
    close_paying(&mut pair, sat(1700));
}

#[test]
fn a_checkpoint_flag_that_disagrees_with_the_checkpoint_is_refused() {
    // The payer's next payment goes one rung down after a checkpoint and stays on its rung
    // otherwise: a flag that disagrees with the checkpoint the reconcile claims would put the
    // payer's next payment on the wrong rung (a rung wasted, or the rung of its own
    // checkpoint).
    for flagged in [true, false] {
        let mut pair = open(CheckpointPolicy::on_request());
        pair.pay(sat(1000)).unwrap();
        pay_unanswered(&mut pair, sat(500), !flagged);
        pair.payer.abandon_pending().unwrap();
        let (ready, mut reconcile) = ask(&mut pair);
        route(pair.payer.handle_message(&ready).unwrap(), &mut pair.out);
        assert_eq!((reconcile.update, reconcile.checkpoint), (2, !flagged));
        reconcile.checkpoint = flagged;
        let before = pair.payer.state().clone();
        let taken = pair.payer.handle_message(&Message::Reconcile(reconcile));
        assert!(taken.is_err(), "flagged {flagged}: {taken:?}");
        assert_eq!(pair.payer.state(), &before);
    }
}
