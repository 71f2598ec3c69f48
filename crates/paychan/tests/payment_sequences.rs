//! Property tests over random channels and random sequences of payments, checkpoints, lost
//! messages, crashes and reconnects: amounts add up, fees are paid at the agreed rate, every
//! payment sits on its rung of the ladder, every transaction either side can complete is valid
//! under Bitcoin Core's own script interpreter (libbitcoinconsensus), and the payee's newest
//! state always becomes final at least `step` blocks before any other state the payer can
//! broadcast (its newest checkpoint, or the refund).

use paychan_testkit as common;

use std::collections::VecDeque;
use std::num::NonZeroU64;

use bitcoin::{Amount, FeeRate, Transaction};
use common::*;
use paychan::channel::{
    ChannelError, CheckpointPolicy, Payee, PayeeState, Payer, PayerState, Payment,
};
use paychan::tx::TxError;
use paychan::wire::{self, ChannelId, Message, RawSignature};
use proptest::prelude::*;

/// Checks one signed split against the channel: the outputs never exceed the capacity; the fee
/// they leave is the agreed rate on the signed size, give or take the virtual byte or two by
/// which real signatures can be shorter than the bound the fee was computed for (plus, where an
/// output was below its owner's dust limit, that output's value); each side gets what it should;
/// and Bitcoin Core's interpreter takes its spend of the funding.
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
    let (to_payer, to_payee) = (value_to(&payer_script), value_to(&payee_script));
    let payee_dust = payee_script.minimal_non_dust();
    if paid >= payee_dust {
        // The payee can claim on chain exactly the total it acknowledged.
        assert_eq!(to_payee, paid);
    } else {
        // Below its dust limit the payee's share is left out and goes to the fee.
        assert_eq!(to_payee, Amount::ZERO);
    }
    if to_payer > Amount::ZERO {
        // What the fee is besides the payee's trimmed share: the rate on the signed size.
        let rate_fee = fee - (paid - to_payee);
        let max_fee = rate.fee_vb(vsize + 2).unwrap();
        assert!(rate_fee <= max_fee, "fee {rate_fee} above {max_fee} for {vsize} vB");
        assert_eq!(to_payer, capacity - rate_fee - paid);
    } else {
        // The payer's remainder was below its dust limit and went to the fee. The engine priced
        // the transaction with the payer's output in it: value, length byte and script.
        let output_vbytes = 8 + 1 + payer_script.len() as u64;
        let two_output_fee = rate.fee_vb(vsize + output_vbytes + 2).unwrap();
        let remainder = capacity.checked_sub(paid + two_output_fee).unwrap_or(Amount::ZERO);
        assert!(remainder < payer_script.minimal_non_dust(), "payer output {remainder} dropped");
    }
    assert!(!tx.output.is_empty());
    for out in &tx.output {
        assert!(out.value >= out.script_pubkey.minimal_non_dust(), "dust output {out:?}");
    }
    pair.verify_spend(tx).unwrap();
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Op {
    /// The payer pays this much (a checkpoint if the policy says so, or if `force`).
    Pay { sat: u64, force: bool },
    /// The next messages on their way arrive: the payee takes `to_payee`, then the payer
    /// `to_payer`.
    Deliver { to_payee: usize, to_payer: usize },
    /// The connection breaks: what is on its way is lost; the payer reconnects, and resends
    /// what is in flight once it has the payee's `reconcile`.
    Reconnect,
    /// The payer dies and restarts from what it stored, then reconnects.
    CrashPayer,
    /// The payee dies and restarts from what it stored, then the payer reconnects.
    CrashPayee,
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop_oneof![1u64..10, 1u64..400, 1u64..20_000], prop::bool::weighted(0.1))
            .prop_map(|(sat, force)| Op::Pay { sat, force }),
        4 => (0usize..6, 0usize..6).prop_map(|(to_payee, to_payer)| Op::Deliver { to_payee, to_payer }),
        1 => Just(Op::Reconnect),
        1 => Just(Op::CrashPayer),
        1 => Just(Op::CrashPayee),
    ]
}

fn any_policy() -> impl Strategy<Value = CheckpointPolicy> {
    (prop::option::of(1u64..8), prop::option::of(1u64..30_000)).prop_map(|(n, sat)| {
        CheckpointPolicy {
            every_payments: n.and_then(NonZeroU64::new),
            every_sat: sat.map(Amount::from_sat),
        }
    })
}

/// Both parties with a connection between them: the messages on their way each way.
struct Run {
    pair: Pair,
    to_payee: VecDeque<Message>,
    to_payer: VecDeque<Message>,
    /// The total of every payment the payer has signed.
    signed: Amount,
    /// Whether the payer reconnected and has not yet taken the payee's `reconcile`: it pays
    /// nothing until then.
    reconciling: bool,
}

impl Run {
    fn deliver(&mut self, to_payee: usize, to_payer: usize) {
        for _ in 0..to_payee {
            let Some(msg) = self.to_payee.pop_front() else { break };
            // The same checks on both sides, against the same tip: the payee takes whatever
            // the payer signed (or repeats its acks).
            let actions = self.pair.payee.handle_message(&msg, self.pair.tip).unwrap();
            self.to_payer.extend(route(actions, &mut self.pair.out));
        }
        for _ in 0..to_payer {
            let Some(msg) = self.to_payer.pop_front() else { break };
            let actions = self.pair.payer.handle_message(&msg).unwrap();
            let sent = route(actions, &mut self.pair.out);
            if matches!(msg, Message::Reconcile(_)) {
                // Taking the payee's newest, the payer resends what is still in flight, and
                // may pay again.
                let pending = self.pair.payer.funded().unwrap().pending.len();
                assert_eq!(sent.len(), pending);
                assert!(sent.iter().all(|m| matches!(m, Message::Pay(_))), "{sent:?}");
                self.to_payee.extend(sent);
                self.reconciling = false;
            } else {
                assert!(sent.is_empty(), "{sent:?}");
            }
        }
    }

    fn reconnect(&mut self) {
        self.to_payee.clear();
        self.to_payer.clear();
        let actions = self.pair.payer.reestablish().unwrap();
        let sent = route(actions, &mut self.pair.out);
        assert!(matches!(sent[..], [Message::Reestablish(_)]), "{sent:?}");
        self.to_payee.extend(sent);
        self.reconciling = true;
    }

    /// Delivers everything until nothing is on its way.
    fn settle_down(&mut self) {
        while !(self.to_payee.is_empty() && self.to_payer.is_empty()) {
            self.deliver(usize::MAX, usize::MAX);
        }
    }

    /// The invariants that hold at every moment, messages in flight or not.
    fn check(&self, feerate: u64) {
        let pair = &self.pair;
        let (payer_f, payee_f) = (pair.payer.funded().unwrap(), pair.payee.funded().unwrap());
        let step = payee_f.channel.ladder().step();
        let refund = pair.payer.refund_tx().unwrap();
        check_split(pair, &refund, Amount::ZERO, feerate);
        // The payee never acknowledged less than the payer counts as paid, nor took more than
        // the payer signed.
        assert!(pair.payer.paid() <= pair.payee.paid());
        assert!(pair.payee.paid() <= self.signed);
        let Some(newest) = pair.payee.newest_commitment().unwrap() else {
            assert!(payer_f.funded.checkpoint.is_none());
            return;
        };
        check_split(pair, &newest, pair.payee.paid(), feerate);
        let newest_at = newest.lock_time.to_consensus_u32();
        let p = payee_f.newest.as_ref().unwrap();
        // The payment sits on the rung after the checkpoints before it.
        let checkpoints_before = payee_f.checkpoints() - u64::from(p.checkpoint);
        let rung = payee_f.channel.ladder().locktime(checkpoints_before + 1).unwrap();
        assert_eq!(newest_at, rung);
        assert!(refund.lock_time.to_consensus_u32() >= newest_at + step);
        if let Some(checkpoint) = payer_f.funded.checkpoint_tx().unwrap() {
            let cp = payer_f.funded.checkpoint.as_ref().unwrap();
            check_split(pair, &checkpoint, cp.paid, feerate);
            if cp.number == p.number {
                // The payee's newest payment is the payer's checkpoint: the same transaction.
                assert_eq!(checkpoint, newest);
            } else {
                assert!(cp.number < p.number && cp.paid < p.paid);
                let at = checkpoint.lock_time.to_consensus_u32();
                assert!(
                    at >= newest_at + step,
                    "checkpoint at {at}, payee's newest at {newest_at}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_runs_keep_every_invariant(
        capacity in 20_000u64..5_000_000,
        feerate in 1u64..30,
        step in 1u32..5,
        policy in any_policy(),
        ops in prop::collection::vec(any_op(), 1..60),
    ) {
        let mut config = payer_config(Amount::from_sat(capacity));
        config.feerate_sat_per_vb = feerate;
        config.step = step;
        config.checkpoints = policy;
        let mut run = Run {
            pair: Pair::open_with(config),
            to_payee: VecDeque::new(),
            to_payer: VecDeque::new(),
            signed: Amount::ZERO,
            reconciling: false,
        };
        for op in ops {
            match op {
                // Reconnected, the payer waits for the payee's reconcile before it pays.
                Op::Pay { .. } if run.reconciling => {}
                Op::Pay { sat, force } => {
                    let (amount, tip) = (Amount::from_sat(sat), run.pair.tip);
                    let before = run.pair.payer.state().clone();
                    let paid = if force {
                        run.pair.payer.pay_checkpoint(amount, tip)
                    } else {
                        run.pair.payer.pay(amount, tip)
                    };
                    match paid {
                        Ok(actions) => {
                            run.signed += amount;
                            run.to_payee.extend(route(actions, &mut run.pair.out));
                        }
                        Err(ChannelError::Tx(TxError::InsufficientBalance { .. })) => {
                            prop_assert_eq!(run.pair.payer.state(), &before);
                        }
                        Err(e) => panic!("unexpected refusal: {e}"),
                    }
                }
                Op::Deliver { to_payee, to_payer } => run.deliver(to_payee, to_payer),
                Op::Reconnect => run.reconnect(),
                Op::CrashPayer => {
                    let stored: PayerState =
                        serde_json::from_str(&serde_json::to_string(run.pair.payer.state()).unwrap()).unwrap();
                    run.pair.payer = Payer::restore(signer(1), stored).unwrap();
                    run.reconnect();
                }
                Op::CrashPayee => {
                    let stored: PayeeState =
                        serde_json::from_str(&serde_json::to_string(run.pair.payee.state()).unwrap()).unwrap();
                    run.pair.payee = Payee::restore(signer(2), stored).unwrap();
                    run.reconnect();
                }
            }
            run.check(feerate);
        }
        // Reconnected and quiet: both agree on every payment signed, counted once.
        run.reconnect();
        run.settle_down();
        run.check(feerate);
        prop_assert!(!run.reconciling);
        let (payer_f, payee_f) = (run.pair.payer.funded().unwrap(), run.pair.payee.funded().unwrap());
        prop_assert!(payer_f.pending.is_empty());
        // The same newest payment and the same newest checkpoint on both sides.
        let payee_newest = payee_f.newest.map(|p| Payment { payer_sig: None, ..p });
        prop_assert_eq!(payer_f.funded.newest, payee_newest);
        prop_assert_eq!(&payer_f.funded.checkpoint, &payee_f.checkpoint);
        prop_assert_eq!(run.pair.payer.paid(), run.signed);
        prop_assert_eq!(run.pair.payee.paid(), run.signed);
        let settlement = run.pair.close();
        prop_assert_eq!(settlement.lock_time.to_consensus_u32(), 0);
        check_split(&run.pair, &settlement, run.signed, feerate);
        // Only the funding and the settlement were broadcast.
        prop_assert_eq!(run.pair.out.broadcasts.len(), 2);
    }

    #[test]
    fn arbitrary_payment_messages_never_panic_or_corrupt_state(
        update in prop_oneof![Just(1u64), Just(2), any::<u64>()],
        paid in prop_oneof![1u64..200_000, any::<u64>()],
        locktime in prop_oneof![Just(TIP + LIFETIME - STEP), any::<u32>()],
        signature in prop::collection::vec(any::<u8>(), 0..80),
        checkpoint in any::<bool>(),
        tip in prop_oneof![Just(TIP), any::<u32>()],
    ) {
        let mut pair = Pair::open(Amount::from_sat(100_000));
        let before = pair.payee.state().clone();
        let msg = Message::Pay(wire::Pay {
            channel_id: ChannelId([7; 32]),
            update,
            paid_total_sat: paid,
            locktime,
            checkpoint,
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
                    checkpoint_every_payments: Some(capacity_sat % 4),
                    checkpoint_every_sat: Some(feerate_sat_per_vb),
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
        (id(), num(), num(), height(), any::<bool>(), sig()).prop_map(
            |(channel_id, update, paid_total_sat, locktime, checkpoint, signature)| {
                Message::Pay(wire::Pay {
                    channel_id,
                    update,
                    paid_total_sat,
                    locktime,
                    checkpoint,
                    signature,
                })
            }
        ),
        (id(), num(), prop::option::of(sig())).prop_map(|(channel_id, update, signature)| {
            Message::PayAck(wire::PayAck { channel_id, update, signature })
        }),
        id().prop_map(|channel_id| Message::Shutdown(wire::Shutdown { channel_id })),
        (id(), num(), sig()).prop_map(|(channel_id, paid_total_sat, signature)| {
            Message::ClosingSigned(wire::ClosingSigned { channel_id, paid_total_sat, signature })
        }),
        (id(), sig()).prop_map(|(channel_id, signature)| {
            Message::ClosingAck(wire::ClosingAck { channel_id, signature })
        }),
        (
            (id(), num(), num(), height(), any::<bool>()),
            (num(), num(), prop::option::of(sig())),
            (num(), num(), height(), prop::option::of(sig())),
        )
            .prop_map(
                |(
                    (channel_id, update, paid_total_sat, locktime, checkpoint),
                    (since_checkpoint, paid_since_checkpoint_sat, payer_signature),
                    (checkpoint_update, checkpoint_paid_sat, checkpoint_locktime, payee_signature),
                )| {
                    Message::Reconcile(wire::Reconcile {
                        channel_id,
                        update,
                        paid_total_sat,
                        locktime,
                        checkpoint,
                        since_checkpoint,
                        paid_since_checkpoint_sat,
                        payer_signature,
                        checkpoint_update,
                        checkpoint_paid_sat,
                        checkpoint_locktime,
                        payee_signature,
                    })
                }
            ),
    ]
}
