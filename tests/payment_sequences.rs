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

/// Checks one split transaction against the channel: outputs plus fee are the capacity, the fee
/// is at least the agreed rate on the signed size, and each side gets what it should.
fn check_split(pair: &Pair, tx: &Transaction, paid: Amount, feerate: u64) {
    let capacity = pair.payer.state().terms.capacity;
    let outputs = output_sum(tx);
    let fee = capacity.checked_sub(outputs).expect("outputs exceed the capacity");
    assert_eq!(outputs + fee, capacity);
    let min_fee = FeeRate::from_sat_per_vb(feerate).unwrap().fee_vb(tx.vsize() as u64).unwrap();
    assert!(fee >= min_fee, "fee {fee} below {min_fee} for {} vB", tx.vsize());
    let payee_script = payee_config().payout.script_pubkey();
    let to_payee: Amount =
        tx.output.iter().filter(|o| o.script_pubkey == payee_script).map(|o| o.value).sum();
    // The payee can claim on chain exactly the total it acknowledged.
    assert_eq!(to_payee, paid);
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
}
