//! Durable payments per second over loopback TCP, through the real payee daemon and payer client
//! with SQLite on both sides, for one channel (a million payments of 1 sat on one channel by
//! default) and for 100 channels at once; with, in the same run, the disk's fsync floor and the
//! raw cryptography of a payment (one ECDSA signature, the payer's, and one verification, the
//! payee's), and the ratios against the targets.
//!
//! Also in the same run, the encrypted transport's own cost on one core, in process: per
//! payment, the sealing and opening (ChaCha20-Poly1305, `net::session`) of one `pay` and one
//! `pay_ack` as `Message::encode` encodes them, with a real-size signature in the `pay` (an upper
//! bound: the daemon acknowledges a run of payments with one `pay_ack`), as a share of the raw
//! crypto; and per connection, one Noise handshake (`Initiator::start`, `answer`, `finish`,
//! with the payee's `NodeIdentity` made once).
//!
//! The channels have the command line's default terms: lifetime 1008 blocks, step 6, the
//! payer's margin 6, and a checkpoint for every 1% of the capacity paid (at most 100, each
//! countersigned by the payee); every other payment is the payer's signature only.
//!
//! "Durable": the payee saves every payment (`synchronous=FULL`) before its acknowledgement
//! leaves, and the payer saves every payment before it sends it. The payer pipelines: it signs a
//! batch, saves it once, sends it in one write, and keeps up to a window in flight; the daemon
//! takes what arrived together on a channel and saves once before acknowledging it all. After
//! each run the payee's database is read back and must hold every payment.
//!
//! The daemon and the payer clients share one tokio runtime with a worker thread per core (the
//! payee's store writer and the payers' commits block threads of their own while they wait for
//! the disk). Channels are opened in memory (the two state machines, a made-up funding) and written to
//! both sides' stores before the daemon starts: the chain is not on the payment path, so a
//! stand-in chain answers the daemon's polls (tip, funding confirmed and unspent).
//!
//! Run: `cargo bench --bench throughput` (release build). Arguments after `--`:
//! `--payments N` (one channel, default 1000000), `--per-channel N` (100 channels, default 2000),
//! `--rounds N` (100-channel rounds, each next to its own crypto-bound measure; default 3),
//! `--window N` and `--batch N` (default 256 and 64 for one channel; 64 and 32 for 100).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Message as SecpMessage, Secp256k1, SecretKey};
use bitcoin::{Amount, OutPoint, PublicKey};
use common::{
    cpu_time, crypto_cost, fsync_floor, made_up_funding, ms, pay_timed, sides, us, StandIn,
    NETWORK, PAYMENT, TIP,
};
use paychan::store::{ChannelRecord, ChannelState, Store};
use paychan::wire::{ChannelId, Message, Pay, PayAck, RawSignature};
use paychan_node::client::{ClientTimeouts, PayerClient};
use paychan_node::daemon::{Daemon, DaemonConfig};
use paychan_node::datadir::DataDir;
use paychan_node::net::handshake::{answer, Answer, Initiator, NodeIdentity};
use paychan_node::net::session::Session;
use paychan_sqlite::{SqliteStore, STORE_FILE};
use paychan_testkit::open_channel;
use paychan_wallet::Branch;
use tokio::net::TcpListener;

struct Args {
    rounds: usize,
    payments: usize,
    per_channel: usize,
    window: Option<usize>,
    batch: Option<usize>,
}

fn args() -> Args {
    let mut a =
        Args { rounds: 3, payments: 1_000_000, per_channel: 2_000, window: None, batch: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse().ok()).expect("a number after the flag");
        match flag.as_str() {
            "--rounds" => a.rounds = value(),
            "--payments" => a.payments = value(),
            "--per-channel" => a.per_channel = value(),
            "--window" => a.window = Some(value()),
            "--batch" => a.batch = Some(value()),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn main() {
    let args = args();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("throughput bench: {cores} cores");

    let dir = tempfile::tempdir_in(std::env::var_os("CARGO_TARGET_TMPDIR").unwrap_or(".".into()))
        .expect("temp dir");
    let fsync = fsync_floor(dir.path(), 300);
    let crypto_before = crypto_cost(3_000);
    let transport_before = transport_cost(30_000);
    let handshake_before = handshake_cost(300);

    let one = run(
        dir.path().join("one"),
        1,
        args.payments,
        args.window.unwrap_or(256),
        args.batch.unwrap_or(64),
    );
    // The 100-channel ratio is measured in rounds, each next to its own measure of the bound,
    // and the median round reported: the machine's speed drifts between measurements.
    let mut rounds: Vec<(f64, Report)> = (0..args.rounds)
        .map(|round| {
            // The bound for both parties on every core, measured (the cores may not scale
            // linearly), right before the run it is compared with.
            let bound = crypto_rate_parallel(cores, Duration::from_millis(1500));
            let many = run(
                dir.path().join(format!("many{round}")),
                100,
                args.per_channel,
                args.window.unwrap_or(64),
                args.batch.unwrap_or(32),
            );
            (bound, many)
        })
        .collect();
    rounds.sort_by(|a, b| (a.1.rate() / a.0).total_cmp(&(b.1.rate() / b.0)));
    let handshake_after = handshake_cost(300);
    let transport_after = transport_cost(30_000);
    let crypto_after = crypto_cost(3_000);
    let crypto = (crypto_before + crypto_after) / 2;
    let transport = (transport_before + transport_after) / 2;
    let handshake = (handshake_before + handshake_after) / 2;
    let extrapolated = cores as f64 / crypto.as_secs_f64();

    println!();
    println!(
        "fsync floor (4 KiB write + fdatasync, median of 300): {:.3} ms -> at most {:.0} \
         sequential durable writes/s",
        ms(fsync),
        1.0 / fsync.as_secs_f64()
    );
    println!(
        "raw crypto per payment (1 ECDSA sign + 1 verify) on one core: {:.1} us before, {:.1} \
         us after the runs ({:.0} payments/s; x {cores} cores = {:.0}/s)",
        us(crypto_before),
        us(crypto_after),
        1.0 / crypto.as_secs_f64(),
        extrapolated
    );
    let (pay, ack) = transport_messages();
    println!(
        "transport per payment (seal + open of a {} B `pay` and a {} B `pay_ack`, \
         ChaCha20-Poly1305) on one core: {:.2} us before, {:.2} us after the runs = {:.2}% of \
         the raw crypto",
        pay.len(),
        ack.len(),
        us(transport_before),
        us(transport_after),
        100.0 * transport.as_secs_f64() / crypto.as_secs_f64()
    );
    println!(
        "handshake per connection (Noise NK: start + answer + finish) on one core: {:.1} us \
         before, {:.1} us after the runs = {:.2}x the raw crypto of a payment",
        us(handshake_before),
        us(handshake_after),
        handshake.as_secs_f64() / crypto.as_secs_f64()
    );
    let line = |name: &str, r: &Report| {
        println!(
            "{name}: {} payments in {:.2} s = {:.0} durable payments/s; latency p50 {:.2} ms, \
             p99 {:.2} ms (window {}, batch {}); CPU {:.0}% busy, {:.1} us per payment",
            r.payments,
            r.elapsed.as_secs_f64(),
            r.rate(),
            ms(r.p50),
            ms(r.p99),
            r.window,
            r.batch,
            100.0 * r.busy(),
            us(r.cpu) / r.payments as f64
        )
    };
    line("1 channel", &one);
    for (i, (bound, many)) in rounds.iter().enumerate() {
        println!(
            "round {i}: crypto-bound rate on {cores} threads at once {bound:.0} payments/s; \
             100 channels at {:.1}% of it",
            100.0 * many.rate() / bound
        );
        line("  100 channels", many);
    }
    let (bound, many) = &rounds[rounds.len() / 2];
    println!();
    println!("1 channel vs target 20,000/s: {:.2}x", one.rate() / 20_000.0);
    println!(
        "1 channel vs the fsync floor's sequential rate: {:.2}x",
        one.rate() * fsync.as_secs_f64()
    );
    println!(
        "100 channels vs the crypto-bound rate, median of {} rounds: {:.1}% (target 80%)",
        rounds.len(),
        100.0 * many.rate() / bound
    );
    println!(
        "100 channels: {:.1} us of the {cores} cores per payment = {:.2}x the raw crypto on one core",
        1e6 * cores as f64 / many.rate(),
        cores as f64 / many.rate() / crypto.as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({
            "cores": cores,
            "fsync_ms": ms(fsync),
            "crypto_us": us(crypto),
            "transport_us": us(transport),
            "transport_vs_crypto": transport.as_secs_f64() / crypto.as_secs_f64(),
            "handshake_us": us(handshake),
            "crypto_bound_per_s": bound.round(),
            "crypto_one_core_x_cores_per_s": extrapolated.round(),
            "one_channel": one.json(),
            "hundred_channels": many.json(),
            "one_channel_vs_2500": one.rate() / 2_500.0,
            "one_channel_vs_20000": one.rate() / 20_000.0,
            "one_channel_cpu_vs_crypto": one.cpu.as_secs_f64() / one.payments as f64 / crypto.as_secs_f64(),
            "hundred_vs_crypto_bound": many.rate() / bound,
            "hundred_vs_crypto_bound_rounds":
                rounds.iter().map(|(b, m)| m.rate() / b).collect::<Vec<_>>(),
        })
    );
}

/// A `pay` and a `pay_ack` as they go on the wire ([`Message::encode`]): a payment between
/// checkpoints, with a real DER signature (and its sighash byte) in the `pay`, and no signature
/// in the `pay_ack`, as for every payment but the checkpoints.
fn transport_messages() -> (Vec<u8>, Vec<u8>) {
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[1; 32]).unwrap();
    let digest = bitcoin::hashes::sha256::Hash::hash(b"a commitment's sighash");
    let sig = secp.sign_ecdsa(&SecpMessage::from_digest(digest.to_byte_array()), &key);
    let channel_id = ChannelId([7; 32]);
    let pay = Message::Pay(Pay {
        channel_id,
        update: 123_456,
        paid_total_sat: 123_456,
        locktime: TIP + 1008 - 6,
        checkpoint: false,
        signature: RawSignature::from(bitcoin::ecdsa::Signature::sighash_all(sig)),
    });
    let ack = Message::PayAck(PayAck { channel_id, update: 123_456, signature: None });
    (pay.encode(), ack.encode())
}

/// Both ends of a session, from a handshake with a payee identity made here.
fn session_pair() -> (Session, Session) {
    let identity = NodeIdentity::new(&SecretKey::from_slice(&[2; 32]).unwrap());
    let (initiator, first) = Initiator::start(identity.node_id());
    let Answer::Welcome { reply, session } = answer(&first, &identity) else {
        panic!("the handshake refused")
    };
    (initiator.finish(&reply).expect("the handshake finishes"), session)
}

/// The median over rounds of the transport's cost of one payment on one core: the payer seals a
/// `pay`, the payee opens it, seals a `pay_ack`, the payer opens it (each frame in a buffer
/// reused, as `MessageWriter::send_encoded` does; `Opener::open` allocates its plaintext).
fn transport_cost(n: usize) -> Duration {
    use std::hint::black_box;
    let (pay, ack) = transport_messages();
    let (mut payer, mut payee) = session_pair();
    let (mut sealed_pay, mut sealed_ack) = (Vec::new(), Vec::new());
    let mut rounds: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n / 10 {
                sealed_pay.clear();
                payer.sealer.seal_into(black_box(&pay), &mut sealed_pay).unwrap();
                let opened = payee.opener.open(black_box(&sealed_pay)).unwrap();
                black_box(opened);
                sealed_ack.clear();
                payee.sealer.seal_into(black_box(&ack), &mut sealed_ack).unwrap();
                let opened = payer.opener.open(black_box(&sealed_ack)).unwrap();
                black_box(opened);
            }
            t.elapsed() / (n / 10) as u32
        })
        .collect();
    rounds.sort();
    rounds[rounds.len() / 2]
}

/// The median over rounds of one whole handshake on one core, both sides: the payer's first
/// message, the payee's answer (with its `NodeIdentity`, made once, as the daemon does), and the
/// payer's reading of it (secp256k1 ECDH with the node key included).
fn handshake_cost(n: usize) -> Duration {
    let identity = NodeIdentity::new(&SecretKey::from_slice(&[2; 32]).unwrap());
    let node_id = identity.node_id();
    let mut rounds: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n / 10 {
                let (initiator, first) = Initiator::start(node_id);
                let Answer::Welcome { reply, session } = answer(&first, &identity) else {
                    panic!("the handshake refused")
                };
                let ours = initiator.finish(&reply).expect("the handshake finishes");
                assert_eq!(ours.hash(), session.hash());
            }
            t.elapsed() / (n / 10) as u32
        })
        .collect();
    rounds.sort();
    rounds[rounds.len() / 2]
}

/// Payments' worth of raw crypto per second with `threads` threads doing it at once for `run`.
fn crypto_rate_parallel(threads: usize, run: Duration) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let secp = Secp256k1::new();
                let key = SecretKey::from_slice(&[t as u8 + 1; 32]).unwrap();
                let public = key.public_key(&secp);
                let mut n = 0u64;
                while start.elapsed() < run {
                    let digest = bitcoin::hashes::sha256::Hash::hash(&n.to_le_bytes());
                    let msg = SecpMessage::from_digest(digest.to_byte_array());
                    let sig = secp.sign_ecdsa(&msg, &key);
                    secp.verify_ecdsa(&msg, &sig, &public).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

struct Report {
    payments: usize,
    elapsed: Duration,
    /// CPU time used by the process during the run.
    cpu: Duration,
    p50: Duration,
    p99: Duration,
    window: usize,
    batch: usize,
}

impl Report {
    /// The share of all cores' time the process was busy during the run.
    fn busy(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.cpu.as_secs_f64() / (self.elapsed.as_secs_f64() * cores as f64)
    }

    fn rate(&self) -> f64 {
        self.payments as f64 / self.elapsed.as_secs_f64()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "payments": self.payments,
            "seconds": self.elapsed.as_secs_f64(),
            "per_s": self.rate().round(),
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "cpu_busy": self.busy(),
            "window": self.window,
            "batch": self.batch,
        })
    }
}

/// Opens `channels` channels, starts the daemon, pays `per_channel` payments of 1 sat on each
/// at once, stops, and checks the payee's database holds them all.
fn run(
    dir: std::path::PathBuf,
    channels: usize,
    per_channel: usize,
    window: usize,
    batch: usize,
) -> Report {
    std::fs::create_dir_all(&dir).unwrap();
    let chain = StandIn::default();
    let payee_dir = dir.join("payee");
    let mut payee = DataDir::init(&payee_dir, NETWORK).expect("payee data dir");
    let node_secret = payee.wallet.node_secret().unwrap();
    let node_id = PublicKey::new(node_secret.public_key(&Secp256k1::signing_only()));

    let daemon_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .enable_all()
        .build()
        .unwrap();
    let listener = daemon_rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let peer = format!("{node_id}@{}", listener.local_addr().unwrap());

    let mut payers = Vec::new();
    for i in 0..channels {
        let mut payer_dir =
            DataDir::init(&dir.join(format!("payer{i}")), NETWORK).expect("payer data dir");
        let id = open_in_memory(&mut payer_dir, &mut payee, &chain, &peer, per_channel);
        payers.push((payer_dir, id));
    }
    let mut config = DaemonConfig::new(NETWORK);
    config.min_conf = 1;
    let (wallet, store, lock) = payee.into_locked_parts().unwrap();
    let daemon = Daemon::new(store, wallet, chain.clone(), config).unwrap().holding(lock);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = daemon_rt.spawn(daemon.run(listener, async {
        let _ = stopped.await;
    }));

    let payer_rt = &daemon_rt;
    let start = Arc::new(tokio::sync::Barrier::new(channels + 1));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = payers
        .into_iter()
        .map(|(mut payer_dir, id)| {
            let (chain, start, latencies) = (chain.clone(), start.clone(), latencies.clone());
            payer_rt.spawn(async move {
                let timeouts = ClientTimeouts::default();
                let mut client = PayerClient::resume(payer_dir.parts(), &chain, id, timeouts)
                    .await
                    .expect("resume");
                let lat = pay_timed(&mut client, per_channel, (window, batch), &start).await;
                assert_eq!(client.payer().paid(), PAYMENT * per_channel as u64);
                latencies.lock().unwrap().extend(lat);
            })
        })
        .collect();
    payer_rt.block_on(start.wait());
    let (t, cpu) = (Instant::now(), cpu_time());
    for task in tasks {
        payer_rt.block_on(task).expect("payer task");
    }
    let (elapsed, cpu) = (t.elapsed(), cpu_time() - cpu);
    let _ = stop.send(());
    daemon_rt.block_on(served).unwrap().expect("daemon");

    // Durable means on disk: read the payee's database back.
    let store = SqliteStore::open(&payee_dir.join(STORE_FILE)).unwrap();
    let held: Vec<(u64, u64)> = store
        .channels()
        .unwrap()
        .iter()
        .filter_map(|r| r.state.funded().map(|f| (f.payments(), f.paid().to_sat())))
        .collect();
    let expected = (per_channel as u64, (PAYMENT * per_channel as u64).to_sat());
    assert_eq!(held, vec![expected; channels], "the payee's database misses payments");

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Report {
        payments: channels * per_channel,
        elapsed,
        cpu,
        p50: pct(0.5),
        p99: pct(0.99),
        window,
        batch,
    }
}

/// Opens a channel between a payer data dir and the payee's entirely in memory, with a
/// made-up funding the stand-in chain reports confirmed, and saves both sides.
fn open_in_memory(
    payer_dir: &mut DataDir,
    payee: &mut DataDir,
    chain: &StandIn,
    peer: &str,
    payments: usize,
) -> ChannelId {
    let channel_id = ChannelId::random();
    let payer_index = payer_dir.store.reserve_key_index().unwrap();
    let payee_index = payee.store.reserve_key_index().unwrap();
    let payer_signer = payer_dir.wallet.channel_signer(payer_index).unwrap();
    let payee_signer = payee.wallet.channel_signer(payee_index).unwrap();
    let capacity = PAYMENT * payments as u64 + Amount::from_sat(1_000_000);
    let sides = sides(
        (payer_signer, payer_dir.wallet.address(Branch::Receive, 0).unwrap()),
        (payee_signer, payee.wallet.address(Branch::Receive, 0).unwrap()),
        capacity,
    );
    let (payer, payee_sm, _) = open_channel(sides, channel_id, TIP, |address, amount| {
        let funding = made_up_funding(address.script_pubkey(), amount);
        let outpoint = OutPoint::new(funding.compute_txid(), 0);
        chain.fundings.lock().unwrap().insert(outpoint, funding.output[0].clone());
        funding
    });
    payee
        .store
        .save_channel(&ChannelRecord {
            key_index: payee_index,
            peer: None,
            state: ChannelState::Payee(payee_sm.state().clone()),
            closed: None,
            funding_height: None,
            service: None,
        })
        .unwrap();
    payer_dir
        .store
        .save_channel(&ChannelRecord {
            key_index: payer_index,
            peer: Some(peer.into()),
            state: ChannelState::Payer(payer.state().clone()),
            closed: None,
            funding_height: None,
            service: None,
        })
        .unwrap();
    channel_id
}
