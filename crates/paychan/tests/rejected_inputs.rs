//! Every input from the other party that the engine must refuse: each gives a typed error and
//! leaves the state exactly as it was. Where it matters, the bad proposal is *correctly signed*
//! by the peer, to show that the check, not just the signature, refuses it.

use paychan_testkit as common;

use bitcoin::{Amount, Network, ScriptBuf, Transaction};
use common::*;
use paychan::channel::{ChannelError, Payee, Payer};
use paychan::keys::SignatureError;
use paychan::ladder::LadderError;
use paychan::tx::TxError;
use paychan::wire::{self, ChannelId, Message, RawSignature};

fn sat(n: u64) -> Amount {
    Amount::from_sat(n)
}

/// Feeds `msg` to the payee and returns its error, checking the state did not move.
fn payee_rejects(pair: &mut Pair, msg: &Message) -> ChannelError {
    let before = pair.payee.state().clone();
    let err = pair.payee.handle_message(msg, pair.tip).expect_err("payee accepted a bad input");
    assert_eq!(pair.payee.state(), &before, "state changed on {err}");
    err
}

/// Feeds `msg` to the payer and returns its error, checking the state did not move.
fn payer_rejects(pair: &mut Pair, msg: &Message) -> ChannelError {
    let before = pair.payer.state().clone();
    let err = pair.payer.handle_message(msg).expect_err("payer accepted a bad input");
    assert_eq!(pair.payer.state(), &before, "state changed on {err}");
    err
}

/// A `pay` for commitment (`update`, `paid`, `locktime`), correctly signed by the payer's key,
/// asking for a checkpoint (the test channels checkpoint every payment).
fn signed_pay(pair: &Pair, update: u64, paid: u64, locktime: u32) -> Message {
    let builder = pair.payee.funded().unwrap().channel.builder();
    let tx = builder.commitment(sat(paid), locktime).unwrap();
    let sig = signer(1).sign(builder.sighash(&tx).unwrap());
    pay_with(update, paid, locktime, sig.into())
}

fn pay_with(update: u64, paid: u64, locktime: u32, signature: RawSignature) -> Message {
    Message::Pay(wire::Pay {
        channel_id: ChannelId([7; 32]),
        update,
        paid_total_sat: paid,
        locktime,
        checkpoint: true,
        signature,
    })
}

fn rung(k: u32) -> u32 {
    TIP + LIFETIME - k * STEP
}

fn open_message() -> wire::OpenChannel {
    let (_, actions) =
        Payer::open(payer_config(sat(100_000)), signer(1), ChannelId([7; 32]), TIP).unwrap();
    let mut out = Outbox::default();
    let Message::OpenChannel(open) = route(actions, &mut out).remove(0) else { panic!() };
    open
}

// ---- opening ----

#[test]
fn open_on_another_network_is_refused() {
    let mut open = open_message();
    open.network = Network::Testnet;
    let err = Payee::accept(&open, &payee_config(), signer(2), TIP).unwrap_err();
    assert!(matches!(err, ChannelError::WrongNetwork { expected: Network::Regtest, .. }), "{err}");

    // The network field says regtest but the address is a mainnet one.
    let mut open = open_message();
    open.payer_address = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4".parse().unwrap();
    let err = Payee::accept(&open, &payee_config(), signer(2), TIP).unwrap_err();
    assert!(matches!(err, ChannelError::WrongNetwork { .. }), "{err}");
}

#[test]
fn open_outside_policy_is_refused() {
    let mut open = open_message();
    open.feerate_sat_per_vb = 0;
    let err = Payee::accept(&open, &payee_config(), signer(2), TIP).unwrap_err();
    assert_eq!(err, ChannelError::FeeRateTooLow { min: 1, got: 0 });

    let mut open = open_message();
    open.step = 1;
    let mut strict = payee_config();
    strict.min_step = 6;
    let err = Payee::accept(&open, &strict, signer(2), TIP).unwrap_err();
    assert_eq!(err, ChannelError::StepTooShort { min: 6, got: 1 });

    // A refund further off than the payee waits for its money.
    let open = open_message();
    let mut patient = payee_config();
    patient.max_lifetime = LIFETIME - 1;
    let err = Payee::accept(&open, &patient, signer(2), TIP).unwrap_err();
    assert_eq!(err, ChannelError::LifetimeTooLong { max: LIFETIME - 1, got: LIFETIME });
    patient.max_lifetime = LIFETIME;
    assert!(Payee::accept(&open, &patient, signer(2), TIP).is_ok());

    // A refund so close to the tip that not one commitment fits above the margin.
    let open = open_message();
    let err = Payee::accept(&open, &payee_config(), signer(2), TIP + LIFETIME).unwrap_err();
    assert!(matches!(err, ChannelError::Ladder(LadderError::Exhausted { .. })), "{err}");

    let mut open = open_message();
    open.capacity_sat = 500;
    let err = Payee::accept(&open, &payee_config(), signer(2), TIP).unwrap_err();
    assert!(matches!(err, ChannelError::Tx(TxError::CapacityTooSmall { .. })), "{err}");

    // The payer presenting the payee's own key.
    let mut open = open_message();
    open.payer_key = signer(2).public_key();
    let err = Payee::accept(&open, &payee_config(), signer(2), TIP).unwrap_err();
    assert!(matches!(err, ChannelError::Funding(_)), "{err}");

    let mut open = open_message();
    open.feerate_sat_per_vb = u64::MAX;
    let err = Payee::accept(&open, &payee_config(), signer(2), TIP).unwrap_err();
    assert_eq!(err, ChannelError::Tx(TxError::Overflow));
}

#[test]
fn accept_on_another_network_or_replayed_is_refused() {
    let (Opening { mut payer, .. }, accept) = Opening::proposed(payer_config(sat(100_000)));
    let Message::AcceptChannel(good) = accept else { panic!() };
    let mut bad = good.clone();
    bad.payee_address = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx".parse().unwrap();
    let before = payer.state().clone();
    let err = payer.handle_message(&Message::AcceptChannel(bad)).unwrap_err();
    assert!(matches!(err, ChannelError::WrongNetwork { .. }), "{err}");
    assert_eq!(payer.state(), &before);
    payer.handle_message(&Message::AcceptChannel(good.clone())).unwrap();
    let before = payer.state().clone();
    let err = payer.handle_message(&Message::AcceptChannel(good)).unwrap_err();
    assert!(matches!(err, ChannelError::Unexpected { .. }), "{err}");
    assert_eq!(payer.state(), &before);
}

// ---- funding ----

/// A payee that has accepted and waits for `funding_created`, and the genuine message.
fn awaiting_funding() -> (Payee, wire::FundingCreated) {
    let (opening, _, created) = Opening::funding_created(payer_config(sat(100_000)));
    let Message::FundingCreated(fc) = created else { panic!() };
    (opening.payee, fc)
}

fn funding_rejected(payee: &mut Payee, fc: wire::FundingCreated) -> ChannelError {
    let before = payee.state().clone();
    let err = payee.handle_message(&Message::FundingCreated(fc), TIP).unwrap_err();
    assert_eq!(payee.state(), &before);
    err
}

#[test]
fn wrong_funding_outpoint_script_or_value_is_refused() {
    let (mut payee, good) = awaiting_funding();

    let mut fc = good.clone();
    fc.vout = 7;
    assert_eq!(funding_rejected(&mut payee, fc), ChannelError::FundingOutputMissing { vout: 7 });

    let mut fc = good.clone();
    fc.vout = 1; // the change output: right index range, wrong script
    assert_eq!(funding_rejected(&mut payee, fc), ChannelError::FundingScriptMismatch);

    let mut fc = good.clone();
    fc.funding_tx.output[0].script_pubkey = ScriptBuf::new_op_return([1, 2, 3]);
    assert_eq!(funding_rejected(&mut payee, fc), ChannelError::FundingScriptMismatch);

    let mut fc = good.clone();
    fc.funding_tx.output[0].value = sat(99_999);
    assert_eq!(
        funding_rejected(&mut payee, fc),
        ChannelError::FundingValueMismatch { expected: sat(100_000), got: sat(99_999) }
    );

    let mut fc = good.clone();
    fc.funding_tx.input[0].script_sig = ScriptBuf::from_bytes(vec![0x00]);
    assert_eq!(funding_rejected(&mut payee, fc), ChannelError::FundingNotSegwit { index: 0 });

    let mut fc = good.clone();
    fc.channel_id = ChannelId([8; 32]);
    assert!(matches!(funding_rejected(&mut payee, fc), ChannelError::WrongChannel { .. }));

    // The genuine one still goes through afterwards.
    payee.handle_message(&Message::FundingCreated(good), TIP).unwrap();
}

#[test]
fn payer_refuses_a_funding_transaction_that_does_not_fund_the_channel() {
    let (Opening { mut payer, .. }, address, amount) =
        Opening::accepted(payer_config(sat(100_000)));
    let check = |payer: &mut Payer, tx: Transaction| {
        let before = payer.state().clone();
        let err = payer.funding_signed(tx).unwrap_err();
        assert_eq!(payer.state(), &before);
        err
    };
    let short = fund(&address, amount - sat(1));
    assert!(matches!(check(&mut payer, short), ChannelError::FundingValueMismatch { .. }));
    let elsewhere = fund(&p2wpkh_address(5), amount);
    assert_eq!(check(&mut payer, elsewhere), ChannelError::FundingNotPaid);
    let mut legacy = fund(&address, amount);
    legacy.input[0].script_sig = ScriptBuf::from_bytes(vec![0x00]);
    assert_eq!(check(&mut payer, legacy), ChannelError::FundingNotSegwit { index: 0 });
    let mut twice = fund(&address, amount);
    twice.output.push(twice.output[0].clone());
    assert_eq!(check(&mut payer, twice), ChannelError::FundingAmbiguous);
}

// ---- payments ----

#[test]
fn paid_total_not_increasing_is_refused() {
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(3000)).unwrap();
    let same = signed_pay(&pair, 2, 3000, rung(2));
    assert_eq!(
        payee_rejects(&mut pair, &same),
        ChannelError::PaidNotIncreasing { previous: sat(3000), proposed: sat(3000) }
    );
    let lower = signed_pay(&pair, 2, 2000, rung(2));
    assert_eq!(
        payee_rejects(&mut pair, &lower),
        ChannelError::PaidNotIncreasing { previous: sat(3000), proposed: sat(2000) }
    );
}

#[test]
fn replayed_and_out_of_order_updates_are_refused() {
    let mut pair = Pair::open(sat(100_000));
    let first = route(pair.payer.pay(sat(1000), TIP).unwrap(), &mut pair.out).remove(0);
    let ack = route(pair.payee.handle_message(&first, TIP).unwrap(), &mut pair.out).remove(0);
    route(pair.payer.handle_message(&ack).unwrap(), &mut pair.out);
    // The same message again (the payer never saw the ack): the same ack again, nothing changes.
    let before = pair.payee.state().clone();
    let again = pair.payee.handle_message(&first, TIP).unwrap();
    assert_eq!(again, vec![paychan::channel::PayeeAction::Send(ack.clone())]);
    assert_eq!(pair.payee.state(), &before);
    // Update 1 again but not the same message: a correctly signed different total.
    let other = signed_pay(&pair, 1, 2000, rung(1));
    assert_eq!(
        payee_rejects(&mut pair, &other),
        ChannelError::UnexpectedUpdate { expected: 2, got: 1 }
    );
    // The same ack again: a repeat of what the payer holds, which changes nothing.
    let before = pair.payer.state().clone();
    assert_eq!(pair.payer.handle_message(&ack).unwrap(), vec![]);
    assert_eq!(pair.payer.state(), &before);
    // Skipping an update.
    let skip = signed_pay(&pair, 3, 5000, rung(3));
    assert_eq!(
        payee_rejects(&mut pair, &skip),
        ChannelError::UnexpectedUpdate { expected: 2, got: 3 }
    );
}

#[test]
fn locktime_off_the_payments_rung_is_refused() {
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(1000)).unwrap();
    // Payment 1 was a checkpoint: payment 2 goes one rung down, not on the same one.
    let same = signed_pay(&pair, 2, 2000, rung(1));
    assert_eq!(
        payee_rejects(&mut pair, &same),
        ChannelError::LockTimeOffLadder { expected: rung(2), proposed: rung(1) }
    );
    let refund_time = signed_pay(&pair, 2, 2000, TIP + LIFETIME);
    assert_eq!(
        payee_rejects(&mut pair, &refund_time),
        ChannelError::LockTimeOffLadder { expected: rung(2), proposed: TIP + LIFETIME }
    );
    // Lower than the previous but not the ladder's rung: skipping rungs would burn the payee's
    // window.
    let off = signed_pay(&pair, 2, 2000, rung(2) - 1);
    assert_eq!(
        payee_rejects(&mut pair, &off),
        ChannelError::LockTimeOffLadder { expected: rung(2), proposed: rung(2) - 1 }
    );
}

#[test]
fn locktime_inside_the_margin_is_refused() {
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(1000)).unwrap();
    let next = signed_pay(&pair, 2, 2000, rung(2));
    // The payee's tip has moved up to the margin below rung 2.
    pair.tip = rung(2) - MARGIN;
    assert_eq!(
        payee_rejects(&mut pair, &next),
        ChannelError::Ladder(LadderError::Exhausted {
            next: Some(rung(2)),
            tip: rung(2) - MARGIN,
            margin: MARGIN
        })
    );
    pair.tip -= 1;
    pair.payee.handle_message(&next, pair.tip).unwrap();
}

#[test]
fn amounts_beyond_the_capacity_or_overflowing_are_refused() {
    let mut pair = Pair::open(sat(100_000));
    let over = signed_pay(&pair, 1, 5000, rung(1));
    let Message::Pay(mut p) = over else { panic!() };
    p.paid_total_sat = 100_000;
    let err = payee_rejects(&mut pair, &Message::Pay(p.clone()));
    assert!(matches!(err, ChannelError::Tx(TxError::InsufficientBalance { .. })), "{err}");
    p.paid_total_sat = u64::MAX;
    let err = payee_rejects(&mut pair, &Message::Pay(p));
    assert!(matches!(err, ChannelError::Tx(TxError::InsufficientBalance { .. })), "{err}");

    // The payer refuses too, before signing anything.
    let before = pair.payer.state().clone();
    let err = pair.payer.pay(sat(100_000), TIP).unwrap_err();
    assert!(matches!(err, ChannelError::Tx(TxError::InsufficientBalance { .. })), "{err}");
    pair.pay(sat(1000)).unwrap();
    let before_overflow = pair.payer.state().clone();
    assert_eq!(
        pair.payer.pay(Amount::MAX, TIP),
        Err(ChannelError::AmountOverflow { paid: sat(1000), amount: Amount::MAX })
    );
    assert_eq!(pair.payer.state(), &before_overflow);
    assert_eq!(pair.payer.pay(Amount::ZERO, TIP), Err(ChannelError::ZeroPayment));
    assert_ne!(pair.payer.state(), &before);
}

#[test]
fn bad_and_wrong_type_signatures_are_refused() {
    let mut pair = Pair::open(sat(100_000));
    // Signed by the payee's own key instead of the payer's.
    let builder = pair.payee.funded().unwrap().channel.builder().clone();
    let tx = builder.commitment(sat(1000), rung(1)).unwrap();
    let wrong_key = signer(9).sign(builder.sighash(&tx).unwrap());
    let err = payee_rejects(&mut pair, &pay_with(1, 1000, rung(1), wrong_key.into()));
    assert!(matches!(err, ChannelError::Signature { source: SignatureError::Invalid, .. }));

    // A genuine payer signature over 1000 sat, presented as a payment of 2000.
    let Message::Pay(genuine) = signed_pay(&pair, 1, 1000, rung(1)) else { panic!() };
    let err = payee_rejects(&mut pair, &pay_with(1, 2000, rung(1), genuine.signature.clone()));
    assert!(matches!(err, ChannelError::Signature { source: SignatureError::Invalid, .. }));

    // SIGHASH_NONE would let the payer change the outputs afterwards.
    let mut none = genuine.signature.0.clone();
    *none.last_mut().unwrap() = 0x02;
    let err = payee_rejects(&mut pair, &pay_with(1, 1000, rung(1), RawSignature(none)));
    assert!(matches!(
        err,
        ChannelError::Signature { source: SignatureError::WrongSighashType { .. }, .. }
    ));

    for garbage in [vec![], vec![0x30], vec![0xff; 80]] {
        let err = payee_rejects(&mut pair, &pay_with(1, 1000, rung(1), RawSignature(garbage)));
        assert!(matches!(
            err,
            ChannelError::Signature { source: SignatureError::Malformed(_), .. }
        ));
    }

    // The genuine one is accepted.
    pair.payee.handle_message(&Message::Pay(genuine), TIP).unwrap();
}

#[test]
fn payer_refuses_a_bad_acknowledgement() {
    let mut pair = Pair::open(sat(100_000));
    let pay = route(pair.payer.pay(sat(1000), TIP).unwrap(), &mut pair.out).remove(0);
    let Message::PayAck(ack) =
        route(pair.payee.handle_message(&pay, TIP).unwrap(), &mut pair.out).remove(0)
    else {
        panic!()
    };
    let mut wrong_update = ack.clone();
    wrong_update.update = 2;
    assert_eq!(
        payer_rejects(&mut pair, &Message::PayAck(wrong_update)),
        ChannelError::UnexpectedUpdate { expected: 1, got: 2 }
    );
    let mut bad_sig = ack.clone();
    bad_sig.signature =
        Some(RawSignature(signer(2).sign(bitcoin::sighash::SegwitV0Sighash::all_zeros()).to_vec()));
    assert!(matches!(
        payer_rejects(&mut pair, &Message::PayAck(bad_sig)),
        ChannelError::Signature { .. }
    ));
    // Pipelining: another payment starts while the first is in flight, on top of it.
    let second = route(pair.payer.pay(sat(500), TIP).unwrap(), &mut pair.out).remove(0);
    let Message::Pay(p) = &second else { panic!("{second:?}") };
    assert_eq!((p.update, p.paid_total_sat, p.locktime), (2, 1500, rung(2)));
    pair.payer.handle_message(&Message::PayAck(ack)).unwrap();
    assert_eq!(pair.payer.paid(), sat(1000));
    let ack2 = route(pair.payee.handle_message(&second, TIP).unwrap(), &mut pair.out).remove(0);
    pair.payer.handle_message(&ack2).unwrap();
    assert_eq!((pair.payer.paid(), pair.payee.paid()), (sat(1500), sat(1500)));
}

use bitcoin::hashes::Hash;

// ---- closing ----

#[test]
fn settlement_for_another_total_or_badly_signed_is_refused() {
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(4000)).unwrap();
    let builder = pair.payee.funded().unwrap().channel.builder().clone();
    let closing = |paid: u64, sig: RawSignature| {
        Message::ClosingSigned(wire::ClosingSigned {
            channel_id: ChannelId([7; 32]),
            paid_total_sat: paid,
            signature: sig,
        })
    };
    // A correctly signed settlement that pays the payee less than the newest commitment.
    let cheaper = builder.settlement(sat(3000)).unwrap();
    let sig = signer(1).sign(builder.sighash(&cheaper).unwrap());
    assert_eq!(
        payee_rejects(&mut pair, &closing(3000, sig.into())),
        ChannelError::PaidTotalMismatch { expected: sat(4000), proposed: sat(3000) }
    );
    assert!(matches!(
        payee_rejects(&mut pair, &closing(4000, sig.into())),
        ChannelError::Signature { tx: paychan::channel::TxKind::Settlement, .. }
    ));
    assert!(pair.out.broadcasts.len() == 1, "only the funding was broadcast");
}

#[test]
fn messages_for_another_channel_or_out_of_place_are_refused() {
    let mut pair = Pair::open(sat(100_000));
    let Message::Pay(mut p) = signed_pay(&pair, 1, 1000, rung(1)) else { panic!() };
    p.channel_id = ChannelId([8; 32]);
    assert!(matches!(
        payee_rejects(&mut pair, &Message::Pay(p)),
        ChannelError::WrongChannel { .. }
    ));
    let ready = Message::ChannelReady(wire::ChannelReady { channel_id: ChannelId([7; 32]) });
    assert!(matches!(payee_rejects(&mut pair, &ready), ChannelError::Unexpected { .. }));
    // A repeated channel_ready (after a reestablish) is no news to a ready payer; a refund
    // signature at this point is out of place.
    let before = pair.payer.state().clone();
    assert_eq!(pair.payer.handle_message(&ready).unwrap(), vec![]);
    assert_eq!(pair.payer.state(), &before);
    let refund = Message::RefundSigned(wire::RefundSigned {
        channel_id: ChannelId([7; 32]),
        signature: RawSignature(vec![0x30]),
    });
    assert!(matches!(payer_rejects(&mut pair, &refund), ChannelError::Unexpected { .. }));
    let open = Message::OpenChannel(open_message());
    assert!(matches!(payee_rejects(&mut pair, &open), ChannelError::Unexpected { .. }));
    assert!(matches!(payer_rejects(&mut pair, &open), ChannelError::Unexpected { .. }));
}

#[test]
fn a_confirmation_of_anything_but_the_funding_output_is_refused() {
    let mut pair = Pair::funded(sat(100_000));
    let (outpoint, txout) = pair.funding_output();
    let check = |pair: &mut Pair, op: bitcoin::OutPoint, out: &bitcoin::TxOut| {
        let before = pair.payee.state().clone();
        let err = pair.payee.funding_confirmed(op, out, 6).unwrap_err();
        assert_eq!(pair.payee.state(), &before);
        err
    };
    let elsewhere = bitcoin::OutPoint { vout: outpoint.vout + 1, ..outpoint };
    assert_eq!(
        check(&mut pair, elsewhere, &txout),
        ChannelError::FundingOutpointMismatch { expected: outpoint, got: elsewhere }
    );
    let mut less = txout.clone();
    less.value = sat(1);
    assert!(matches!(check(&mut pair, outpoint, &less), ChannelError::FundingValueMismatch { .. }));
    let mut other_script = txout.clone();
    other_script.script_pubkey = p2wpkh_address(5).script_pubkey();
    assert_eq!(check(&mut pair, outpoint, &other_script), ChannelError::FundingScriptMismatch);
    assert_eq!(pair.payee.funding_confirmed(outpoint, &txout, 6).unwrap().len(), 2);
}

#[test]
fn payee_with_a_payout_address_of_another_network_refuses_to_start() {
    let mut config = payee_config();
    config.payout = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
        .parse::<bitcoin::Address<_>>()
        .unwrap()
        .assume_checked();
    let err = Payee::accept(&open_message(), &config, signer(2), TIP).unwrap_err();
    assert!(matches!(err, ChannelError::WrongNetwork { .. }), "{err}");
}

#[test]
fn a_signature_for_another_total_is_refused() {
    let mut pair = Pair::open(sat(100_000));
    // The signature of a commitment paying 294 sat does not pay 100 sat.
    let Message::Pay(genuine) = signed_pay(&pair, 1, 294, rung(1)) else { panic!() };
    let err = payee_rejects(&mut pair, &pay_with(1, 100, rung(1), genuine.signature));
    assert!(matches!(err, ChannelError::Signature { .. }), "{err}");
}

#[test]
fn restoring_a_state_that_contradicts_itself_is_refused() {
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(1000)).unwrap();
    let mut payee_state = pair.payee.state().clone();
    payee_state.terms.capacity = sat(200_000);
    assert_eq!(
        Payee::restore(signer(2), payee_state).unwrap_err(),
        ChannelError::InconsistentState { field: "terms" }
    );
    let mut payer_state = pair.payer.state().clone();
    payer_state.terms.ladder =
        paychan::ladder::LockTimeLadder::new(TIP + 2 * LIFETIME, STEP).unwrap();
    assert_eq!(
        Payer::restore(signer(1), payer_state).unwrap_err(),
        ChannelError::InconsistentState { field: "terms" }
    );
    let mut payee_state = pair.payee.state().clone();
    payee_state.payee_script = p2wpkh_address(5).script_pubkey();
    assert_eq!(
        Payee::restore(signer(2), payee_state).unwrap_err(),
        ChannelError::InconsistentState { field: "payee" }
    );
    // A stored ladder with a zero step does not even deserialize.
    let json = serde_json::to_string(pair.payee.state()).unwrap();
    let broken = json.replace(&format!("\"step\":{STEP}"), "\"step\":0");
    assert_ne!(json, broken);
    assert!(serde_json::from_str::<paychan::channel::PayeeState>(&broken).is_err());
}

#[test]
fn payer_refuses_bad_keys_and_signatures_from_the_payee() {
    // accept_channel with the payer's own key, or an uncompressed key.
    let (Opening { mut payer, .. }, accept) = Opening::proposed(payer_config(sat(100_000)));
    let Message::AcceptChannel(good) = accept else { panic!() };
    let mut own_key = good.clone();
    own_key.payee_key = signer(1).public_key();
    let mut uncompressed = good.clone();
    uncompressed.payee_key.compressed = false;
    for bad in [own_key, uncompressed] {
        let before = payer.state().clone();
        let err = payer.handle_message(&Message::AcceptChannel(bad)).unwrap_err();
        assert!(matches!(err, ChannelError::Funding(_)), "{err}");
        assert_eq!(payer.state(), &before);
    }

    // refund_signed with the payee's genuine signature bytes but another sighash type.
    let (Opening { payer: mut fresh, mut payee, mut out }, _, created) =
        Opening::funding_created(payer_config(sat(100_000)));
    let Message::RefundSigned(mut refund) =
        route(payee.handle_message(&created, TIP).unwrap(), &mut out).remove(0)
    else {
        panic!()
    };
    *refund.signature.0.last_mut().unwrap() = 0x81; // SIGHASH_ALL|ANYONECANPAY
    let before = fresh.state().clone();
    let err = fresh.handle_message(&Message::RefundSigned(refund)).unwrap_err();
    assert!(matches!(
        err,
        ChannelError::Signature {
            tx: paychan::channel::TxKind::Refund,
            source: SignatureError::WrongSighashType { .. }
        }
    ));
    assert_eq!(fresh.state(), &before);
    assert!(out.broadcasts.is_empty());
}

#[test]
fn payer_refuses_a_bad_settlement_signature() {
    let mut pair = Pair::open(sat(100_000));
    pair.pay(sat(4000)).unwrap();
    let closing = route(pair.payer.close().unwrap(), &mut pair.out).remove(0);
    let Message::ClosingAck(ack) =
        route(pair.payee.handle_message(&closing, TIP).unwrap(), &mut pair.out).remove(0)
    else {
        panic!()
    };
    let mut wrong_type = ack.clone();
    *wrong_type.signature.0.last_mut().unwrap() = 0x03; // SIGHASH_SINGLE
    let mut wrong_tx = ack.clone();
    wrong_tx.signature =
        RawSignature(signer(2).sign(bitcoin::sighash::SegwitV0Sighash::all_zeros()).to_vec());
    for bad in [wrong_type, wrong_tx] {
        let err = payer_rejects(&mut pair, &Message::ClosingAck(bad));
        assert!(
            matches!(err, ChannelError::Signature { tx: paychan::channel::TxKind::Settlement, .. }),
            "{err}"
        );
    }
    pair.payer.handle_message(&Message::ClosingAck(ack)).unwrap();
}
