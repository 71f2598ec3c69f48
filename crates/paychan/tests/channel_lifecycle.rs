//! A whole channel life driven through both state machines, and the five guarantees the scheme
//! exists for.

use paychan_testkit as common;

use bitcoin::absolute::LockTime;
use bitcoin::{Amount, Sequence};
use common::*;
use paychan::channel::{ChannelError, PayerStage};
use paychan::wire::{Message, RawSignature, RefundSigned};

fn sat(n: u64) -> Amount {
    Amount::from_sat(n)
}

#[test]
fn normal_case_puts_only_funding_and_settlement_on_chain() {
    let mut pair = Pair::open(sat(100_000));
    for amount in [1000, 2000, 3000] {
        pair.pay(sat(amount)).unwrap();
    }
    let settlement = pair.close();
    assert_eq!(pair.out.broadcasts, vec![pair.funding_tx.clone(), settlement.clone()]);

    // The settlement is final at once, spends the funding output, and pays the payee exactly.
    assert_eq!(settlement.lock_time, LockTime::ZERO);
    pair.verify_spend(&settlement).unwrap();
    let payee_script = payee_config().payout.script_pubkey();
    let to_payee: Amount =
        settlement.output.iter().filter(|o| o.script_pubkey == payee_script).map(|o| o.value).sum();
    assert_eq!(to_payee, sat(6000));
    assert!(output_sum(&settlement) < sat(100_000), "a fee is paid");

    // The payer holds the same signed settlement.
    let payer_copy = pair.payer.funded().unwrap().funded.settlement_tx().unwrap().unwrap();
    assert_eq!(payer_copy, settlement);

    // The funding spends the wallet coin validly.
    let (outpoint, coin) = wallet_coin();
    pair.funding_tx.verify(|op| (*op == outpoint).then(|| coin.clone())).unwrap();
}

#[test]
fn payer_never_broadcasts_funding_without_a_valid_refund_signature() {
    // Run the open up to the refund, then send the payer a bad refund signature.
    let (Opening { mut payer, mut payee, mut out }, _, created) =
        Opening::funding_created(payer_config(sat(100_000)));

    // The payee gets the funding without witnesses: it cannot broadcast it itself.
    let Message::FundingCreated(fc) = &created else { panic!() };
    assert!(fc.funding_tx.input.iter().all(|i| i.witness.is_empty()));

    let Message::RefundSigned(good) =
        route(payee.handle_message(&created, TIP).unwrap(), &mut out).remove(0)
    else {
        panic!()
    };
    let forged = signer(2).sign(bitcoin::sighash::SegwitV0Sighash::from_byte_array([1; 32]));
    for bad in [RawSignature(forged.to_vec()), RawSignature(vec![1, 2, 3])] {
        let before = payer.state().clone();
        let msg =
            Message::RefundSigned(RefundSigned { channel_id: good.channel_id, signature: bad });
        assert!(matches!(payer.handle_message(&msg), Err(ChannelError::Signature { .. })));
        assert_eq!(payer.state(), &before);
        assert!(payer.refund_tx().is_err());
    }
    assert!(out.broadcasts.is_empty());
    assert!(matches!(payer.state().stage, PayerStage::AwaitingRefund { .. }));

    // With the genuine signature the funding goes out, and the refund is complete and valid.
    route(payer.handle_message(&Message::RefundSigned(good)).unwrap(), &mut out);
    assert_eq!(out.broadcasts.len(), 1);
    let refund = payer.refund_tx().unwrap();
    let funding = &out.broadcasts[0];
    let vout = refund.input[0].previous_output.vout as usize;
    refund
        .verify(|op| (*op == refund.input[0].previous_output).then(|| funding.output[vout].clone()))
        .unwrap();
}

use bitcoin::hashes::Hash;

#[test]
fn payee_always_holds_the_newest_fully_signed_commitment() {
    let mut pair = Pair::open(sat(100_000));
    assert_eq!(pair.payee.newest_commitment().unwrap(), None);
    let payee_script = payee_config().payout.script_pubkey();
    let mut total = Amount::ZERO;
    for (k, amount) in [500u64, 1000, 1, 7000, 250].into_iter().enumerate() {
        pair.pay(sat(amount)).unwrap();
        total += sat(amount);
        let tx = pair.payee.newest_commitment().unwrap().unwrap();
        pair.verify_spend(&tx).unwrap();
        let expected_lock = TIP + LIFETIME - (k as u32 + 1) * STEP;
        assert_eq!(tx.lock_time, LockTime::from_height(expected_lock).unwrap());
        let to_payee: Amount =
            tx.output.iter().filter(|o| o.script_pubkey == payee_script).map(|o| o.value).sum();
        assert_eq!(to_payee, total, "the payee can claim exactly what it acknowledged");
        // With a checkpoint at every payment (the original scheme), both hold the same
        // transaction.
        assert_eq!(pair.payer.funded().unwrap().funded.checkpoint_tx().unwrap().unwrap(), tx);
    }
}

#[test]
fn neither_side_can_alter_a_signed_transaction() {
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(5000)).unwrap();
    let signed = pair.payee.newest_commitment().unwrap().unwrap();
    pair.verify_spend(&signed).unwrap();

    let mut more_to_payee = signed.clone();
    more_to_payee.output[1].value += sat(1);
    let mut more_to_payer = signed.clone();
    more_to_payer.output[0].value += sat(1);
    let mut earlier = signed.clone();
    earlier.lock_time = LockTime::from_height(TIP).unwrap();
    let mut redirected = signed.clone();
    redirected.output[1].script_pubkey = payer_config(sat(1)).payout.script_pubkey();
    let mut no_locktime = signed.clone();
    no_locktime.input[0].sequence = Sequence::MAX;
    for altered in [more_to_payee, more_to_payer, earlier, redirected, no_locktime] {
        assert!(pair.verify_spend(&altered).is_err(), "altered transaction still verifies");
    }
}

#[test]
fn refund_becomes_final_after_every_commitment() {
    let mut pair = Pair::open(sat(100_000));
    let mut locktimes = Vec::new();
    for _ in 0..20 {
        pair.pay(sat(1000)).unwrap();
        let tx = pair.payee.newest_commitment().unwrap().unwrap();
        // nSequence below 0xFFFFFFFF: the locktime is enforced.
        assert_eq!(tx.input[0].sequence, Sequence::ENABLE_LOCKTIME_NO_RBF);
        locktimes.push(tx.lock_time.to_consensus_u32());
    }
    let refund = pair.payer.refund_tx().unwrap();
    pair.verify_spend(&refund).unwrap();
    assert_eq!(refund.input[0].sequence, Sequence::ENABLE_LOCKTIME_NO_RBF);
    let r = refund.lock_time.to_consensus_u32();
    assert_eq!(r, TIP + LIFETIME);
    assert!(locktimes.windows(2).all(|w| w[1] < w[0]), "strictly decreasing: {locktimes:?}");
    assert!(locktimes.iter().all(|&l| l < r));
    assert_eq!(refund.output.len(), 1);
    assert_eq!(refund.output[0].script_pubkey, payer_config(sat(1)).payout.script_pubkey());
}

#[test]
fn no_payment_before_the_funding_is_confirmed() {
    let mut pair = Pair::funded(sat(100_000));
    // The payer will not sign before channel_ready.
    let err = pair.payer.pay(sat(1000), TIP).unwrap_err();
    assert!(matches!(err, ChannelError::Unexpected { what: "pay", .. }), "{err}");
    // A payer that signs anyway is refused by the payee.
    let mut eager = Pair::open(sat(100_000));
    let pay = route(eager.payer.pay(sat(1000), TIP).unwrap(), &mut eager.out).remove(0);
    let before = pair.payee.state().clone();
    let err = pair.payee.handle_message(&pay, TIP).unwrap_err();
    assert!(matches!(err, ChannelError::Unexpected { what: "pay", .. }), "{err}");
    assert_eq!(pair.payee.state(), &before);
    // Below min_conf nothing happens; at min_conf the channel becomes ready, once.
    let (outpoint, txout) = pair.funding_output();
    assert_eq!(pair.payee.funding_outpoint(), Some(outpoint));
    assert_eq!(pair.payee.funding_confirmed(outpoint, &txout, 0).unwrap(), vec![]);
    assert_eq!(pair.payee.funding_confirmed(outpoint, &txout, 1).unwrap().len(), 2);
    assert_eq!(pair.payee.funding_confirmed(outpoint, &txout, 2).unwrap(), vec![]);
    pair.payee.handle_message(&pay, TIP).unwrap();
}

#[test]
fn a_funding_reorged_out_takes_no_payment_until_it_is_back_at_min_conf() {
    use paychan::channel::PayeeAction;
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(1000)).unwrap();
    assert_eq!(pair.payee.funding_reorged(), vec![PayeeAction::Persist]);
    assert_eq!(pair.payee.funding_reorged(), vec![], "once");
    assert_eq!(pair.payee.state().stage.name(), "awaiting funding confirmation");
    // A payment now is refused, and changes nothing.
    let pay = route(pair.payer.pay(sat(500), pair.tip).unwrap(), &mut pair.out).remove(0);
    let before = pair.payee.state().clone();
    let err = pair.payee.handle_message(&pay, pair.tip).unwrap_err();
    assert!(matches!(err, ChannelError::Unexpected { what: "pay", .. }), "{err}");
    assert_eq!(pair.payee.state(), &before);
    // What the payee holds is still broadcast once final.
    let newest = pair.payee.newest_commitment().unwrap().unwrap();
    let at = newest.lock_time.to_consensus_u32();
    assert_eq!(pair.payee.tip_changed(at).unwrap(), vec![PayeeAction::Broadcast(newest)]);
    // Back at min_conf: ready again, channel_ready again, and the payment is taken.
    let (outpoint, txout) = pair.funding_output();
    assert_eq!(pair.payee.funding_confirmed(outpoint, &txout, 0).unwrap(), vec![]);
    let ready = route(pair.payee.funding_confirmed(outpoint, &txout, 1).unwrap(), &mut pair.out);
    assert!(matches!(&ready[..], [Message::ChannelReady(_)]), "{ready:?}");
    assert!(route(pair.payer.handle_message(&ready[0]).unwrap(), &mut pair.out).is_empty());
    let ack = route(pair.payee.handle_message(&pay, pair.tip).unwrap(), &mut pair.out).remove(0);
    route(pair.payer.handle_message(&ack).unwrap(), &mut pair.out);
    assert_eq!(pair.payee.paid(), sat(1500));
}

#[test]
fn ladder_exhaustion_stops_payments_with_a_typed_error() {
    let mut pair = Pair::open(sat(100_000));
    // Move the tip so that only two more rungs are above tip + margin.
    pair.tip = TIP + LIFETIME - 3 * STEP - MARGIN;
    pair.pay(sat(1000)).unwrap();
    pair.pay(sat(10)).unwrap();
    let before = pair.payer.state().clone();
    let err = pair.pay(sat(10)).unwrap_err();
    let l3 = TIP + LIFETIME - 3 * STEP;
    assert!(
        matches!(
            err,
            ChannelError::Ladder(paychan::ladder::LadderError::Exhausted { next: Some(l), .. })
                if l == l3
        ),
        "{err}"
    );
    assert_eq!(pair.payer.state(), &before);
    // Closing still works.
    pair.close();
}

#[test]
fn payee_can_ask_the_payer_to_close() {
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(4000)).unwrap();
    let shutdown = route(pair.payee.request_close().unwrap(), &mut pair.out).remove(0);
    let closing = route(pair.payer.handle_message(&shutdown).unwrap(), &mut pair.out).remove(0);
    let ack = route(pair.payee.handle_message(&closing, TIP).unwrap(), &mut pair.out).remove(0);
    route(pair.payer.handle_message(&ack).unwrap(), &mut pair.out);
    let settlement = pair.out.broadcasts.last().unwrap();
    pair.verify_spend(settlement).unwrap();
    // Settled: no more payments either way.
    assert!(pair.payer.pay(sat(1), TIP).is_err());
}

#[test]
fn state_survives_a_serde_round_trip() {
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(1234)).unwrap();
    let payer_json = serde_json::to_string(pair.payer.state()).unwrap();
    let payee_json = serde_json::to_string(pair.payee.state()).unwrap();
    pair.payer =
        paychan::channel::Payer::restore(signer(1), serde_json::from_str(&payer_json).unwrap())
            .unwrap();
    pair.payee =
        paychan::channel::Payee::restore(signer(2), serde_json::from_str(&payee_json).unwrap())
            .unwrap();
    pair.pay(sat(1)).unwrap();
    assert_eq!(pair.payee.paid(), sat(1235));
    // The wrong key cannot take over a channel.
    let state = pair.payer.state().clone();
    assert!(matches!(
        paychan::channel::Payer::restore(signer(9), state),
        Err(ChannelError::SignerMismatch)
    ));
}

#[test]
fn a_state_saved_before_pipelining_still_loads() {
    use paychan::channel::{PayerStage, PayerState};
    let mut pair = Pair::open(sat(100_000));
    route(pair.payer.pay(sat(700), TIP).unwrap(), &mut pair.out);
    let queue = serde_json::to_value(pair.payer.state()).unwrap();
    let stored = &queue["stage"]["Funded"]["pending"][0];
    assert!(stored.is_array(), "{queue}");
    // The older form: one optional payment in flight, by name, with its signature; or none.
    let sig = pair.payer.funded().unwrap().pending[0].payer_sig.unwrap();
    let in_flight = serde_json::json!({
        "number": stored[0], "paid": stored[1], "locktime": stored[2], "payer_sig": sig,
    });
    for (old, expected) in [(in_flight, 1), (serde_json::Value::Null, 0)] {
        let mut state = queue.clone();
        state["stage"]["Funded"]["pending"] = old;
        let state: PayerState = serde_json::from_value(state).unwrap();
        let PayerStage::Funded(f) = &state.stage else { panic!() };
        assert_eq!(f.pending.len(), expected);
    }
}

#[test]
fn lost_messages_are_recovered_by_resending() {
    let mut pair = Pair::open(sat(100_000));
    assert!(pair.payer.resend_pending().unwrap().is_empty(), "nothing in flight");

    // The pay is lost on the way: resend it.
    route(pair.payer.pay(sat(1000), TIP).unwrap(), &mut pair.out);
    let pay = route(pair.payer.resend_pending().unwrap(), &mut pair.out).remove(0);
    // The ack is lost on the way back: the payee answers the repeated pay with the same ack.
    let ack = route(pair.payee.handle_message(&pay, TIP).unwrap(), &mut pair.out).remove(0);
    let pay_again = route(pair.payer.resend_pending().unwrap(), &mut pair.out).remove(0);
    assert_eq!(pay_again, pay);
    let ack_again = route(pair.payee.handle_message(&pay_again, TIP).unwrap(), &mut pair.out);
    assert_eq!(ack_again, vec![ack]);
    route(pair.payer.handle_message(&ack_again[0]).unwrap(), &mut pair.out);
    assert_eq!(pair.payer.paid(), sat(1000));
    assert!(pair.payer.resend_pending().unwrap().is_empty());

    // The same for the close: the closing_ack is lost, the payee answers the repeat, and
    // broadcasts the same settlement again (its first broadcast may have been lost too).
    let closing = route(pair.payer.close().unwrap(), &mut pair.out).remove(0);
    let ack = route(pair.payee.handle_message(&closing, TIP).unwrap(), &mut pair.out).remove(0);
    let broadcasts = pair.out.broadcasts.len();
    let closing_again = route(pair.payer.resend_pending().unwrap(), &mut pair.out).remove(0);
    assert_eq!(closing_again, closing);
    let before = pair.payee.state().clone();
    let ack_again = route(pair.payee.handle_message(&closing_again, TIP).unwrap(), &mut pair.out);
    assert_eq!(ack_again, vec![ack]);
    assert_eq!(pair.payee.state(), &before);
    assert_eq!(pair.out.broadcasts.len(), broadcasts + 1);
    assert_eq!(pair.out.broadcasts[broadcasts], pair.out.broadcasts[broadcasts - 1]);
    route(pair.payer.handle_message(&ack_again[0]).unwrap(), &mut pair.out);
    assert!(pair.payer.funded().unwrap().funded.settlement.is_some());
}

#[test]
fn payee_asks_to_settle_near_the_end_and_broadcasts_the_newest_commitment_once_final() {
    use paychan::channel::PayeeAction as Action;
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(1000)).unwrap();
    pair.pay(sat(1000)).unwrap();
    let newest = pair.payee.newest_commitment().unwrap().unwrap();
    let l2 = TIP + LIFETIME - 2 * STEP;
    let l3 = l2 - STEP;
    let shutdown = Action::Send(Message::Shutdown(paychan::wire::Shutdown {
        channel_id: paychan::wire::ChannelId([7; 32]),
    }));
    // Far from the end: nothing to do.
    assert_eq!(pair.payee.tip_changed(TIP).unwrap(), vec![]);
    assert_eq!(pair.payee.tip_changed(l3 - MARGIN - 1).unwrap(), vec![]);
    // The next rung is inside the margin: ask the payer to settle; nothing is final yet.
    assert_eq!(pair.payee.tip_changed(l3 - MARGIN).unwrap(), vec![shutdown.clone()]);
    assert_eq!(pair.payee.tip_changed(l2 - 1).unwrap(), vec![shutdown.clone()]);
    // The newest commitment is final: broadcast it (and keep asking).
    assert_eq!(pair.payee.tip_changed(l2).unwrap(), vec![Action::Broadcast(newest), shutdown]);
    // Settled: only the settlement, again, until the caller sees it confirmed.
    let settlement = pair.close();
    assert_eq!(pair.payee.tip_changed(l2 + 100).unwrap(), vec![Action::Broadcast(settlement)]);
}

#[test]
fn payer_takes_its_newest_checkpoint_once_final_or_the_refund_at_r_unless_settled() {
    use paychan::channel::{CheckpointPolicy, PayerAction as Action};
    let r = TIP + LIFETIME;
    // No checkpoint (payments only): the refund, at R.
    let mut config = payer_config(sat(100_000));
    config.checkpoints = CheckpointPolicy::on_request();
    let mut pair = Pair::open_with(config);
    pair.pay(sat(1000)).unwrap();
    assert!(pair.payer.funded().unwrap().funded.checkpoint.is_none());
    assert_eq!(pair.payer.tip_changed(r - 1).unwrap(), vec![]);
    let refund = pair.payer.refund_tx().unwrap();
    assert_eq!(refund.lock_time.to_consensus_u32(), r);
    assert_eq!(pair.payer.tip_changed(r).unwrap(), vec![Action::Broadcast(refund)]);
    // A checkpoint: its commitment, from its locktime on, instead of waiting for R.
    pair.payer.pay_checkpoint(sat(500), TIP).map(|a| route(a, &mut pair.out)).unwrap();
    let pay = pair.payer.resend_pending().unwrap();
    let Action::Send(pay) = &pay[0] else { panic!() };
    let ack = route(pair.payee.handle_message(pay, TIP).unwrap(), &mut pair.out).remove(0);
    route(pair.payer.handle_message(&ack).unwrap(), &mut pair.out);
    let l1 = r - STEP;
    let checkpoint = pair.payer.funded().unwrap().funded.checkpoint_tx().unwrap().unwrap();
    assert_eq!(checkpoint.lock_time.to_consensus_u32(), l1);
    pair.verify_spend(&checkpoint).unwrap();
    assert_eq!(pair.payer.tip_changed(l1 - 1).unwrap(), vec![]);
    assert_eq!(pair.payer.tip_changed(l1).unwrap(), vec![Action::Broadcast(checkpoint.clone())]);
    assert_eq!(pair.payer.tip_changed(r).unwrap(), vec![Action::Broadcast(checkpoint)]);
    pair.close();
    assert_eq!(pair.payer.tip_changed(r).unwrap(), vec![]);
}
