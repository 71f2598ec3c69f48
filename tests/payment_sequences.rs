//! Property tests over random channels and payment sequences: amounts add up, fees are paid at
//! the agreed rate, locktimes walk down the ladder below the refund, and every transaction either
//! side can produce is valid under Bitcoin Core's own script interpreter.

mod common;

use bitcoin::{Amount, FeeRate, Transaction};
use common::*;
use paychan::channel::ChannelError;
use paychan::tx::TxError;
use paychan::wire::{self, ChannelId, Message, RawSignature};
use proptest::prelude::*;

/// Checks one signed split against the channel: the outputs never exceed the capacity; the fee
/// they leave is the agreed rate on the signed size, give or take the virtual byte or two by
/// which real signatures can be shorter than the bound the fee was computed for (unless the
/// payer's remainder was dust and went to the fee too); and each side gets what it should.
fn check_split(pair: &Pair, tx: &Transaction, paid: Amount, feerate: u64) {
    let capacity = pair.payer.state().terms.capacity;
    let fee = capacity.checked_sub(output_sum(tx)).expect("outputs exceed the capacity");
    let rate = FeeRate::from_sat_per_vb(feerate).unwrap();
    let vsize = tx.vsize() as u64;
    let min_fee = rate.fee_vb(vsize).unwrap();
    assert!(fee >= min_fee, "fee {fee} below {min_fee} for {vsize} vB");
    let payer_script = payer_config(capacity).payout.script_pubkey();
    let payee_script = payee_config().payout.script_pubkey();
    let value_to = |script: &bitcoin::ScriptBuf| -> Amount {
        tx.output.iter().filter(|o| &o.script_pubkey == script).map(|o| o.value).sum()
    };
    let to_payer = value_to(&payer_script);
    if to_payer > Amount::ZERO {
        let max_fee = rate.fee_vb(vsize + 2).unwrap();
        assert!(fee <= max_fee, "fee {fee} above {max_fee} for {vsize} vB");
        assert_eq!(to_payer + paid + fee, capacity);
    } else {
        // The payer's remainder was below its dust limit and went to the fee. The engine priced
        // the transaction with the payer's output in it: value, length byte and script.
        let output_vbytes = 8 + 1 + payer_script.len() as u64;
        let two_output_fee = rate.fee_vb(vsize + output_vbytes + 2).unwrap();
        let remainder = capacity.checked_sub(paid + two_output_fee).unwrap_or(Amount::ZERO);
        assert!(remainder < payer_script.minimal_non_dust(), "payer output {remainder} dropped");
    }
    // The payee can claim on chain exactly the total it acknowledged.
    assert_eq!(value_to(&payee_script), paid);
    for out in &tx.output {
        assert!(out.value >= out.script_pubkey.minimal_non_dust(), "dust output {out:?}");
    }
    pair.verify_spend(tx).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_payment_sequences_keep_every_invariant(
        capacity in 20_000u64..5_000_000,
        feerate in 1u64..30,
        step in 1u32..5,
        increments in prop::collection::vec(1u64..20_000, 1..60),
    ) {
        let mut config = payer_config(Amount::from_sat(capacity));
        config.feerate_sat_per_vb = feerate;
        config.step = step;
        let mut pair = Pair::open_with(config);
        let refund_locktime = TIP + LIFETIME;
        let mut total = Amount::ZERO;
        let mut locktimes = vec![refund_locktime];
        for inc in increments {
            let inc = Amount::from_sat(inc);
            match pair.pay(inc) {
                Ok(()) => total += inc,
                Err(ChannelError::Tx(TxError::InsufficientBalance { available, requested })) => {
                    // Refused exactly when the new total does not fit.
                    prop_assert_eq!(requested, total + inc);
                    prop_assert!(requested > available);
                    continue;
                }
                Err(ChannelError::Tx(TxError::PaymentBelowDust { paid, dust })) => {
                    // A first total below the payee's dust limit is refused, not lost to fees.
                    prop_assert_eq!(paid, total + inc);
                    prop_assert!(paid < dust);
                    continue;
                }
                Err(e) => panic!("unexpected refusal: {e}"),
            }
            prop_assert_eq!(pair.payer.paid(), total);
            prop_assert_eq!(pair.payee.paid(), total);
            let tx = pair.payee.newest_commitment().unwrap().unwrap();
            let locktime = tx.lock_time.to_consensus_u32();
            prop_assert!(locktime < *locktimes.last().unwrap(), "locktime did not decrease");
            prop_assert!(locktime < refund_locktime);
            prop_assert_eq!(locktime, refund_locktime - step * (locktimes.len() as u32));
            locktimes.push(locktime);
            check_split(&pair, &tx, total, feerate);
        }
        let refund = pair.payer.refund_tx().unwrap();
        prop_assert_eq!(refund.lock_time.to_consensus_u32(), refund_locktime);
        check_split(&pair, &refund, Amount::ZERO, feerate);
        let settlement = pair.close();
        prop_assert_eq!(settlement.lock_time.to_consensus_u32(), 0);
        check_split(&pair, &settlement, total, feerate);
        // Only the funding and the settlement were broadcast.
        prop_assert_eq!(pair.out.broadcasts.len(), 2);
    }

    #[test]
    fn arbitrary_payment_messages_never_panic_or_corrupt_state(
        update in prop_oneof![Just(1u64), Just(2), any::<u64>()],
        paid in prop_oneof![1u64..200_000, any::<u64>()],
        locktime in prop_oneof![Just(TIP + LIFETIME - STEP), any::<u32>()],
        signature in prop::collection::vec(any::<u8>(), 0..80),
        tip in prop_oneof![Just(TIP), any::<u32>()],
    ) {
        let mut pair = Pair::open(Amount::from_sat(100_000));
        let before = pair.payee.state().clone();
        let msg = Message::Pay(wire::Pay {
            channel_id: ChannelId([7; 32]),
            update,
            paid_total_sat: paid,
            locktime,
            signature: RawSignature(signature),
        });
        // Random signature bytes never verify, so this must fail, and fail cleanly.
        prop_assert!(pair.payee.handle_message(&msg, tip).is_err());
        prop_assert_eq!(pair.payee.state(), &before);
    }

    #[test]
    fn arbitrary_messages_of_every_type_never_panic_or_corrupt_state(
        msgs in prop::collection::vec(any_message(), 1..8),
        tip in prop_oneof![Just(TIP), any::<u32>()],
    ) {
        // Both parties at three points of a channel's life: funded but not confirmed; open with
        // one payment; open with a payment in flight.
        let funded = Pair::funded(Amount::from_sat(100_000));
        let mut open = Pair::open(Amount::from_sat(100_000));
        open.pay(Amount::from_sat(1000)).unwrap();
        let mut in_flight = Pair::open(Amount::from_sat(100_000));
        in_flight.payer.pay(Amount::from_sat(1000), TIP).unwrap();
        for mut pair in [funded, open, in_flight] {
            for msg in &msgs {
                let payee_before = pair.payee.state().clone();
                if pair.payee.handle_message(msg, tip).is_err() {
                    prop_assert_eq!(pair.payee.state(), &payee_before);
                }
                let payer_before = pair.payer.state().clone();
                if pair.payer.handle_message(msg).is_err() {
                    prop_assert_eq!(pair.payer.state(), &payer_before);
                }
            }
        }
    }
}

/// Any message, with fields that are sometimes right for the test channel and mostly random.
fn any_message() -> impl Strategy<Value = Message> {
    let id =
        || prop_oneof![3 => Just(ChannelId([7; 32])), 1 => any::<[u8; 32]>().prop_map(ChannelId)];
    let sig = || prop::collection::vec(any::<u8>(), 0..80).prop_map(RawSignature);
    let num = || prop_oneof![0u64..3, 290u64..300, any::<u64>()];
    let height = || prop_oneof![Just(TIP + LIFETIME - STEP), Just(TIP + LIFETIME), any::<u32>()];
    let key = || prop_oneof![Just(signer(1).public_key()), Just(signer(2).public_key())];
    let address = || Just(p2wpkh_address(11).as_unchecked().clone());
    let tx =
        (prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..40)), 0..3))
            .prop_map(|outs| Transaction {
                version: bitcoin::transaction::Version::TWO,
                lock_time: bitcoin::absolute::LockTime::ZERO,
                input: vec![],
                output: outs
                    .into_iter()
                    .map(|(v, s)| bitcoin::TxOut {
                        value: Amount::from_sat(v),
                        script_pubkey: bitcoin::ScriptBuf::from_bytes(s),
                    })
                    .collect(),
            });
    prop_oneof![
        (id(), num(), num(), height(), any::<u32>(), key(), address()).prop_map(
            |(
                channel_id,
                capacity_sat,
                feerate_sat_per_vb,
                refund_locktime,
                step,
                payer_key,
                payer_address,
            )| {
                Message::OpenChannel(wire::OpenChannel {
                    channel_id,
                    network: NETWORK,
                    capacity_sat,
                    feerate_sat_per_vb,
                    refund_locktime,
                    step,
                    payer_key,
                    payer_address,
                })
            }
        ),
        (id(), key(), address()).prop_map(|(channel_id, payee_key, payee_address)| {
            Message::AcceptChannel(wire::AcceptChannel { channel_id, payee_key, payee_address })
        }),
        (id(), tx, 0u32..3).prop_map(|(channel_id, funding_tx, vout)| {
            Message::FundingCreated(wire::FundingCreated { channel_id, funding_tx, vout })
        }),
        (id(), sig()).prop_map(|(channel_id, signature)| {
            Message::RefundSigned(wire::RefundSigned { channel_id, signature })
        }),
        id().prop_map(|channel_id| Message::ChannelReady(wire::ChannelReady { channel_id })),
        (id(), num(), num(), height(), sig()).prop_map(
            |(channel_id, update, paid_total_sat, locktime, signature)| {
                Message::Pay(wire::Pay { channel_id, update, paid_total_sat, locktime, signature })
            }
        ),
        (id(), num(), sig()).prop_map(|(channel_id, update, signature)| {
            Message::PayAck(wire::PayAck { channel_id, update, signature })
        }),
        id().prop_map(|channel_id| Message::Shutdown(wire::Shutdown { channel_id })),
        (id(), num(), sig()).prop_map(|(channel_id, paid_total_sat, signature)| {
            Message::ClosingSigned(wire::ClosingSigned { channel_id, paid_total_sat, signature })
        }),
        (id(), sig()).prop_map(|(channel_id, signature)| {
            Message::ClosingAck(wire::ClosingAck { channel_id, signature })
        }),
    ]
}
