//! The CPU cost of one payment through the engine, next to the raw cryptography it cannot avoid.
//!
//! A payment (between checkpoints, as nearly all are: the channel's policy is the command line's
//! default, a checkpoint per 1% of the capacity, and each payment here is 1 sat of 1 BTC) is: the
//! payer builds and signs the commitment for the new total, the payee rebuilds it, checks the
//! payer's signature and stores it, and the payer takes the acknowledgement. Its floor is one
//! ECDSA signature and one verification; everything else is the engine's overhead (building
//! transactions, BIP 143 sighashes, checks, state updates).
//!
//! Besides criterion's report, the run ends with an interleaved measurement of both in the same
//! process (alternating batches, median of the per-batch ratios) so that the ratio is not skewed
//! by the machine's load drifting between two separate measurements.
//!
//! Run: `cargo bench --bench payment`. For instruction counts, see `scripts/count_instructions.sh`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::{Message as SecpMessage, Secp256k1, SecretKey};
use bitcoin::Amount;
use criterion::{criterion_group, Criterion};
use paychan::channel::{CheckpointPolicy, Payee, Payer, PayerConfig};
use paychan::wire::Message;
use paychan_testkit::{payer_config, route, Outbox, Pair, Step, TIP};

/// A ladder long enough for every iteration criterion runs: R near the highest height, step 1.
const REFUND: u32 = 499_999_999;

fn only_message<A: Into<Step>>(actions: Vec<A>) -> Message {
    let mut msgs = route(actions, &mut Outbox::default());
    assert_eq!(msgs.len(), 1, "one message: {msgs:?}");
    msgs.remove(0)
}

/// An open channel of 1 BTC between the two state machines (the test kit's driver).
fn open_channel() -> (Payer, Payee) {
    let capacity = Amount::from_sat(100_000_000);
    let config = PayerConfig {
        refund_locktime: REFUND,
        step: 1,
        checkpoints: CheckpointPolicy::default_for(capacity),
        ..payer_config(capacity)
    };
    let mut pair = Pair::open_with(config);
    // A first payment above the payee's dust limit (its output then exists, as in most of a
    // channel's life); the measured ones then add 1 sat each.
    pair.pay(Amount::from_sat(1000)).unwrap();
    (pair.payer, pair.payee)
}

/// One payment of 1 sat, end to end.
fn pay_once(payer: &mut Payer, payee: &mut Payee) {
    let pay = only_message(payer.pay(Amount::from_sat(1), TIP).unwrap());
    let ack = only_message(payee.handle_message(&pay, TIP).unwrap());
    payer.handle_message(&ack).unwrap();
}

/// One payment of 1 sat, end to end, with both messages encoded and decoded as on the wire.
fn pay_once_over_wire(payer: &mut Payer, payee: &mut Payee) {
    let pay = only_message(payer.pay(Amount::from_sat(1), TIP).unwrap()).encode();
    let ack = only_message(payee.handle_message(&Message::decode(&pay).unwrap(), TIP).unwrap());
    payer.handle_message(&Message::decode(&ack.encode()).unwrap()).unwrap();
}

/// The raw cryptography of one payment: the payer's signature and the payee's verification.
struct RawCrypto {
    secp: Secp256k1<bitcoin::secp256k1::All>,
    payer: SecretKey,
    payer_pub: bitcoin::secp256k1::PublicKey,
    counter: u64,
}

impl RawCrypto {
    fn new() -> Self {
        let secp = Secp256k1::new();
        let payer = SecretKey::from_slice(&[1; 32]).unwrap();
        let payer_pub = payer.public_key(&secp);
        RawCrypto { secp, payer, payer_pub, counter: 0 }
    }

    fn payment(&mut self) {
        // A new message each time, as each commitment has a new sighash.
        self.counter += 1;
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&self.counter.to_le_bytes());
        let msg = SecpMessage::from_digest(digest);
        let sig = self.secp.sign_ecdsa(&msg, &self.payer);
        self.secp.verify_ecdsa(&msg, &sig, &self.payer_pub).unwrap();
        black_box(sig);
    }
}

fn bench_payment(c: &mut Criterion) {
    let mut group = c.benchmark_group("payment");
    let (mut payer, mut payee) = open_channel();
    group.bench_function("engine", |b| b.iter(|| pay_once(&mut payer, &mut payee)));
    let (mut payer, mut payee) = open_channel();
    group.bench_function("engine_with_wire_encoding", |b| {
        b.iter(|| pay_once_over_wire(&mut payer, &mut payee))
    });
    let mut raw = RawCrypto::new();
    group.bench_function("raw_crypto_1_sign_1_verify", |b| b.iter(|| raw.payment()));
    group.finish();
}

criterion_group!(benches, bench_payment);

/// Alternates batches of engine payments and raw crypto and reports the median ratio.
fn interleaved_ratio() {
    const ROUNDS: usize = 41;
    const BATCH: u32 = 200;
    let (mut payer, mut payee) = open_channel();
    let mut raw = RawCrypto::new();
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..BATCH {
            f();
        }
        start.elapsed() / BATCH
    };
    let mut engine_times = Vec::new();
    let mut raw_times = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..ROUNDS {
        let e = time(&mut || pay_once(&mut payer, &mut payee));
        let r = time(&mut || raw.payment());
        engine_times.push(e);
        raw_times.push(r);
        ratios.push(e.as_secs_f64() / r.as_secs_f64());
    }
    let median_d = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    ratios.sort_by(f64::total_cmp);
    let (e, r) = (median_d(&mut engine_times), median_d(&mut raw_times));
    println!(
        "interleaved ({ROUNDS} rounds x {BATCH} payments): engine {:.1} us/payment, \
         raw crypto {:.1} us/payment, ratio {:.3} (median of per-round ratios; target <= 1.3)",
        e.as_secs_f64() * 1e6,
        r.as_secs_f64() * 1e6,
        ratios[ratios.len() / 2]
    );
}

/// Runs `n` payments of one kind and nothing else, for counting instructions under
/// `valgrind --tool=callgrind` (see docs/performance.md): counts do not depend on the machine's
/// load, so the ratio of (count at n) - (count at 0) is stable from run to run.
fn count_only(kind: &str, n: u64) {
    let (mut payer, mut payee) = open_channel();
    let mut raw = RawCrypto::new();
    for _ in 0..n {
        match kind {
            "engine" => pay_once(&mut payer, &mut payee),
            "raw" => raw.payment(),
            other => panic!("PAYCHAN_BENCH_ONLY must be engine or raw, not {other}"),
        }
    }
}

fn main() {
    if let Ok(kind) = std::env::var("PAYCHAN_BENCH_ONLY") {
        let n = std::env::var("PAYCHAN_BENCH_N").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
        count_only(&kind, n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    interleaved_ratio();
}
