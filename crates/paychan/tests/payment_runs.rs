//! A run of payments taken at once (`Payee::prepare_payments`, the signatures checked by the
//! caller, `Payee::apply_payments`) ends exactly where taking them one by one
//! (`Payee::handle_message`) does, whatever the run holds: honest payments and checkpoints,
//! replays, bad signatures, wrong rungs, totals that do not grow, other messages.

use paychan_testkit as common;

use std::num::NonZeroU64;

use bitcoin::secp256k1::Secp256k1;
use bitcoin::Amount;
use common::*;
use paychan::channel::{CheckpointPolicy, Payee};
use paychan::wire::{self, Message, RawSignature};
use proptest::prelude::*;

/// What to do to an honest payment before it goes into the run.
#[derive(Debug, Clone)]
enum Twist {
    None,
    BadSignature,
    OtherTotal,
    FlipCheckpoint,
    Replay(usize),
    Shutdown,
}

fn any_twist() -> impl Strategy<Value = Twist> {
    prop_oneof![
        8 => Just(Twist::None),
        1 => Just(Twist::BadSignature),
        1 => Just(Twist::OtherTotal),
        1 => Just(Twist::FlipCheckpoint),
        1 => (0usize..8).prop_map(Twist::Replay),
        1 => Just(Twist::Shutdown),
    ]
}

/// Takes `msgs` as a run, checking the signatures here, and returns the outcomes.
fn as_a_run(
    payee: &mut Payee,
    msgs: &[Message],
) -> Vec<Result<Vec<paychan::channel::PayeeAction>, String>> {
    let secp = Secp256k1::verification_only();
    let run = payee.prepare_payments(msgs, TIP);
    let valid: Vec<bool> = run.checks().iter().map(|c| c.verify(&secp)).collect();
    payee
        .apply_payments(run, &valid, msgs, TIP)
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_run_ends_where_one_by_one_does(
        every in prop::option::of(1u64..4),
        before in 0usize..4,
        payments in prop::collection::vec((1u64..3000, any_twist()), 1..16),
    ) {
        let mut config = payer_config(Amount::from_sat(1_000_000));
        config.checkpoints = CheckpointPolicy { every_payments: every.and_then(NonZeroU64::new), every_sat: None };
        let mut pair = Pair::open_with(config);
        for _ in 0..before {
            pair.pay(Amount::from_sat(100)).unwrap();
        }
        // The messages of a pipelining payer, some twisted.
        let mut msgs: Vec<Message> = Vec::new();
        for (sat, twist) in payments {
            let Message::Pay(mut pay) =
                route(pair.payer.pay(Amount::from_sat(sat), TIP).unwrap(), &mut pair.out).remove(0)
            else {
                panic!()
            };
            match twist {
                Twist::None => {}
                Twist::BadSignature => pay.signature = RawSignature(signer(9).sign(bitcoin::sighash::SegwitV0Sighash::from_byte_array([1; 32])).to_vec()),
                Twist::OtherTotal => pay.paid_total_sat += 1,
                Twist::FlipCheckpoint => pay.checkpoint = !pay.checkpoint,
                Twist::Replay(i) => {
                    if let Some(old) = msgs.get(i).cloned() {
                        msgs.push(old);
                    }
                }
                Twist::Shutdown => msgs.push(Message::Shutdown(wire::Shutdown { channel_id: pay.channel_id })),
            }
            msgs.push(Message::Pay(pay));
        }
        let mut one_by_one = pair.payee.clone();
        let expected: Vec<_> = msgs.iter().map(|m| one_by_one.handle_message(m, TIP).map_err(|e| e.to_string())).collect();
        let got = as_a_run(&mut pair.payee, &msgs);
        prop_assert_eq!(got, expected);
        prop_assert_eq!(pair.payee.state(), one_by_one.state());
    }
}

use bitcoin::hashes::Hash;

#[test]
fn an_honest_run_is_taken_on_the_callers_checks_alone() {
    let mut pair = Pair::open_with(payer_config(Amount::from_sat(100_000)));
    let mut msgs: Vec<Message> = (0..5)
        .map(|_| route(pair.payer.pay(Amount::from_sat(10), TIP).unwrap(), &mut pair.out).remove(0))
        .collect();
    // The last signature is another key's: the caller says it checks, and apply takes its word
    // (it checks nothing itself again, unless the state moved under the run).
    let Message::Pay(last) = &mut msgs[4] else { panic!() };
    last.signature = RawSignature(
        signer(9).sign(bitcoin::sighash::SegwitV0Sighash::from_byte_array([1; 32])).to_vec(),
    );
    let run = pair.payee.prepare_payments(&msgs, TIP);
    assert_eq!(run.checks().len(), 5);
    let outcomes = pair.payee.apply_payments(run, &[true; 5], &msgs, TIP);
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(pair.payee.paid(), Amount::from_sat(50));
}

#[test]
fn a_run_after_a_close_in_it_is_refused_as_one_by_one_would() {
    let mut pair = Pair::open_with(payer_config(Amount::from_sat(100_000)));
    pair.pay(Amount::from_sat(1000)).unwrap();
    // The payer's signature on the settlement for 1000 sat, then a payment after it.
    let builder = pair.payee.funded().unwrap().channel.builder().clone();
    let settlement = builder.settlement(Amount::from_sat(1000)).unwrap();
    let signature = signer(1).sign(builder.sighash(&settlement).unwrap()).into();
    let channel_id = pair.payer.state().terms.channel_id;
    let close =
        Message::ClosingSigned(wire::ClosingSigned { channel_id, paid_total_sat: 1000, signature });
    let pay = route(pair.payer.pay(Amount::from_sat(5), TIP).unwrap(), &mut pair.out).remove(0);
    let msgs = [close, pay];
    let mut one_by_one = pair.payee.clone();
    let expected: Vec<_> =
        msgs.iter().map(|m| one_by_one.handle_message(m, TIP).map_err(|e| e.to_string())).collect();
    assert!(expected[0].is_ok() && expected[1].is_err(), "{expected:?}");
    assert_eq!(as_a_run(&mut pair.payee, &msgs), expected);
    assert_eq!(pair.payee.state(), one_by_one.state());
}
