//! The payee daemon's block-driven chain watcher with many ready, idle channels in one SQLite
//! store (100,000 by default): what a restart costs until the daemon serves, what an idle
//! channel costs in memory, what a block costs in node calls and time, and what a block does
//! to the latency of the payments taken meanwhile.
//!
//! The store: channels opened in memory (both state machines, a made-up funding) and saved to
//! the payee's store ready, each with the height of its funding, next to the watcher's chain
//! position: a restart asks the node nothing per channel. [`PAYERS`] of them also have a payer
//! data directory of their own, to pay with. A child process (this binary, `--build-store`)
//! builds it once per channel count into `target/bench-cache/watcher-v1-N/` (delete it to
//! rebuild; its build time is reported when it is built), and each run works on a copy, so the
//! measuring process never held the channels before it restarts the daemon on them.
//!
//! The chain: a fake node in this process, counting the daemon's calls by method (the payers'
//! clients ask a view of their own, not counted). Its blocks are made up (the watcher checks
//! only that each links to the one before); the bench mines by appending one, either a
//! coinbase alone or a coinbase and [`CLOSES_PER_BLOCK`] transactions that each spend a
//! channel's funding (the daemon reads each as that channel's close).
//!
//! Measured:
//! 1. Restart until it serves: from just before `Daemon::new` (which loads the store) until a
//!    payer client's first payment is acknowledged over loopback TCP by the running daemon,
//!    and the node calls made meanwhile.
//! 2. Resident memory per idle channel: the process's `VmRSS` right before `Daemon::new` and
//!    right after that payment, the difference over the number of channels.
//! 3. Node calls and time per block, empty and with closes, no payments: the fake node notes
//!    the `best_block_hash` call that first returns the new block and the next such call. The
//!    watcher does one thing at a time (follow the blocks, apply them to the channels, store
//!    the chain position, expire, check the mempool, wait for its tick of [`POLL`]), so the
//!    calls between the two are the block's, and the time between them bounds its processing
//!    from above (never under the tick, and with one more idle pass over every channel). The
//!    store also notes when the new chain position is committed, which the watcher does once
//!    every change the block made to a channel is saved: the block's own work; and it counts
//!    the transactions that save channels (each one disk flush).
//! 4. Payment latency during blocks: [`PAYERS`] payer clients pay 1 sat at a time (sent, once
//!    signed and saved, until acknowledged, which the daemon sends once it saved the payment)
//!    while blocks of closes are mined [`IDLE_GAP`] apart. A payment whose round trip overlaps
//!    a block's processing (from the poll that returned it to the next poll) counts as during
//!    a block; the others as idle.
//!
//! Run: `cargo bench -p paychan-node --bench watcher` (release build). Arguments after `--`:
//! `--channels N` (default 100000), `--blocks N` (blocks of each kind, default 5).

mod common;

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{
    absolute, transaction, Address, Amount, Block, BlockHash, CompactTarget, FeeRate, OutPoint,
    PublicKey, ScriptBuf, Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use common::{made_up_funding, ms, sides, NETWORK, PAYMENT, TIP};
use paychan::chain::{Chain, ChainError, OutputStatus, Tip, TxStatus, Utxo};
use paychan::channel::Payer;
use paychan::closing::Closure;
use paychan::keys::ChannelSigner;
use paychan::miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use paychan::store::{ChannelRecord, ChannelState, Store, StoreError};
use paychan::watch::{BlockId, BlockSource};
use paychan::wire::ChannelId;
use paychan_node::client::{ClientError, ClientTimeouts, PayerClient, Pipelined};
use paychan_node::daemon::{Daemon, DaemonConfig};
use paychan_node::datadir::DataDir;
use paychan_sqlite::{SqliteStore, STORE_FILE};
use paychan_testkit::open_channel;
use paychan_wallet::Branch;
use tokio::net::TcpListener;

/// Channels that pay during the blocks, each with a payer data directory.
const PAYERS: usize = 8;
/// Every channel opens at [`TIP`], its funding in the next block; the chain is 9 blocks further
/// on when the daemon restarts.
const FUNDED_AT: u32 = TIP + 1;
const RESTART_TIP: u32 = TIP + 10;
const CAPACITY: Amount = Amount::from_sat(1_000_000);
const CLOSES_PER_BLOCK: usize = 1_000;
/// The watcher's poll interval: short, so that the next poll comes soon after a block's work.
const POLL: Duration = Duration::from_millis(5);
/// Payments alone, before the first block of closes and after each.
const IDLE_GAP: Duration = Duration::from_secs(1);
/// Payments signed per call of the payer client (the stop flag is read between calls).
const PAYMENTS_PER_CALL: usize = 50;
/// Channels saved per transaction while building the store.
const BUILD_BATCH: usize = 1_000;
/// The name the daemon stores its chain position under.
const WATCHER: &str = "payee";
/// In the store's directory: the payers' channel ids, and the other channels' fundings.
const PAYER_IDS: &str = "payers.txt";
const FUNDINGS: &str = "fundings.txt";

const TARGET_RESTART_CALLS: u64 = 10;
const TARGET_BYTES_PER_CHANNEL: f64 = 4096.0;
const TARGET_CALLS_PER_BLOCK: u64 = 3;
const TARGET_P99_DURING_BLOCK: Duration = Duration::from_millis(50);

struct Args {
    channels: usize,
    blocks: usize,
    /// Internal: build the store into this directory and exit.
    build_store: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args { channels: 100_000, blocks: 5, build_store: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match flag.as_str() {
            "--channels" => a.channels = value().parse().expect("a number of channels"),
            "--blocks" => a.blocks = value().parse().expect("a number of blocks"),
            "--build-store" => a.build_store = Some(value().into()),
            _ => {} // cargo bench passes --bench
        }
    }
    assert!(a.channels > PAYERS, "more than {PAYERS} channels, please");
    assert!(a.blocks > 0, "at least one block of each kind, please");
    a
}

fn main() {
    let args = args();
    if let Some(dir) = &args.build_store {
        build_store(dir, args.channels);
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("watcher bench: {} channels, {cores} cores", args.channels);
    let (cache, built) = cached_store(args.channels);
    match built {
        Some(t) => println!("store built in {:.1} s (in a child process; cached)", t.as_secs_f64()),
        None => println!("store cached in {}", cache.display()),
    }
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    copy_dir(&cache, work.path());
    let store_bytes = file_bytes(&work.path().join("payee").join(STORE_FILE));
    let results = measure(work.path(), &args);
    results.print(args.channels, built, store_bytes);
}

// ---- The store, built once per channel count ----

/// Returns the directory holding the store of `channels` channels, and how long building it
/// took if it was not cached: a child process builds it, so that this one never holds the
/// channels before the daemon loads them.
fn cached_store(channels: usize) -> (PathBuf, Option<Duration>) {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory");
    let cache = target.join("bench-cache").join(format!("watcher-v1-{channels}"));
    if cache.is_dir() {
        return (cache, None);
    }
    let building = cache.with_extension("building");
    // Left by a build that was interrupted.
    let _ = std::fs::remove_dir_all(&building);
    let t = Instant::now();
    let status = Command::new(std::env::current_exe().expect("this binary"))
        .arg("--build-store")
        .arg(&building)
        .args(["--channels", &channels.to_string()])
        .status()
        .expect("running the store's build");
    assert!(status.success(), "building the store failed");
    // Renamed once complete: a cache directory that exists is whole.
    std::fs::rename(&building, &cache).expect("the cache directory");
    (cache, Some(t.elapsed()))
}

/// Writes the payee's data directory with `channels` ready channels into `dir`, the first
/// [`PAYERS`] with a payer data directory each, and the chain position at [`RESTART_TIP`];
/// and, beside them, the payers' channel ids and the other channels' funding outpoints.
fn build_store(dir: &Path, channels: usize) {
    let t = Instant::now();
    let mut payee = DataDir::init(&dir.join("payee"), NETWORK).expect("payee data dir");
    let payout = payee.wallet.address(Branch::Receive, 0).unwrap();
    let node_id = node_id(&payee);
    let mut payer_ids = String::new();
    for i in 0..PAYERS {
        let mut payer_dir =
            DataDir::init(&dir.join(format!("payer{i}")), NETWORK).expect("payer data dir");
        let key_index = payer_dir.store.reserve_key_index().unwrap();
        let payer_key = payer_dir.wallet.channel_signer(key_index).unwrap();
        let payer_payout = payer_dir.wallet.address(Branch::Receive, 0).unwrap();
        let (payer, record, _) = open(&mut payee, &payout, (payer_key, payer_payout));
        payee.store.save_channel(&record).unwrap();
        let payer_record = ChannelRecord {
            key_index,
            // Each run points it at the port its daemon listens on.
            peer: Some(format!("{node_id}@127.0.0.1:0")),
            state: ChannelState::Payer(payer.state().clone()),
            closed: None,
            funding_height: Some(FUNDED_AT),
            service: None,
        };
        payer_dir.store.save_channel(&payer_record).unwrap();
        writeln!(payer_ids, "{}", record.state.channel_id()).unwrap();
    }
    let mut fundings = String::new();
    // The idle channels' payers are nowhere: any key and payout will do.
    let idle_payout = paychan_testkit::p2wpkh_address(11);
    let mut left = channels - PAYERS;
    while left > 0 {
        let batch: Vec<ChannelRecord> = (0..left.min(BUILD_BATCH))
            .map(|_| {
                let payer = (ChannelSigner::random(), idle_payout.clone());
                let (_, record, funding) = open(&mut payee, &payout, payer);
                writeln!(fundings, "{funding}").unwrap();
                record
            })
            .collect();
        payee.store.save_channels(&batch).unwrap();
        left -= batch.len();
    }
    let position = BlockId { height: RESTART_TIP, hash: base_block().block_hash() };
    payee.store.save_chain_position(WATCHER, &[position]).unwrap();
    std::fs::write(dir.join(PAYER_IDS), payer_ids).unwrap();
    std::fs::write(dir.join(FUNDINGS), fundings).unwrap();
    println!("built {channels} channels in {:.1} s", t.elapsed().as_secs_f64());
}

/// Opens a channel between `payer` (its key and payout address) and the payee in memory, with
/// a made-up funding in the block at [`FUNDED_AT`]; returns the payer's side, the payee's
/// record and the funding outpoint.
fn open(
    payee: &mut DataDir,
    payout: &Address,
    payer: (ChannelSigner, Address),
) -> (Payer, ChannelRecord, OutPoint) {
    let key_index = payee.store.reserve_key_index().unwrap();
    let payee_key = payee.wallet.channel_signer(key_index).unwrap();
    let sides = sides(payer, (payee_key, payout.clone()), CAPACITY);
    let (payer, payee_side, _) =
        open_channel(sides, ChannelId::random(), TIP, |address, amount| {
            made_up_funding(address.script_pubkey(), amount)
        });
    let funding = payee_side.funding_outpoint().expect("funded");
    let record = ChannelRecord {
        key_index,
        peer: None,
        state: ChannelState::Payee(payee_side.state().clone()),
        closed: None,
        funding_height: Some(FUNDED_AT),
        service: None,
    };
    (payer, record, funding)
}

fn node_id(payee: &DataDir) -> PublicKey {
    let secret = payee.wallet.node_secret().unwrap();
    PublicKey::new(secret.public_key(&Secp256k1::signing_only()))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The size of a SQLite database with its write-ahead log.
fn file_bytes(db: &Path) -> u64 {
    let wal = db.with_extension("sqlite-wal");
    [db, wal.as_path()].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

// ---- The run ----

/// Restarts the daemon on the store in `dir` and measures it (see the module docs).
fn measure(dir: &Path, args: &Args) -> Results {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let payee = DataDir::open(&dir.join("payee"), NETWORK).expect("payee data dir");
    let peer = format!("{}@{}", node_id(&payee), listener.local_addr().unwrap());
    let mut payers = payer_dirs(dir, &peer);
    let node = FakeNode::new();
    let payers_node = node.other_user();
    let log = StoreLog::default();
    let (restart, daemon) =
        restart(&rt, payee, listener, &node, &log, &payers_node, &mut payers[0]);

    let mut closes = Closes::read(dir, args.blocks);
    let idle_poll = idle_poll_period(&node);
    let empty: Vec<BlockRun> =
        (0..args.blocks).map(|_| process_block(&node, &log, Vec::new())).collect();
    let closing: Vec<BlockRun> =
        (0..args.blocks).map(|_| process_block(&node, &log, closes.next_block())).collect();
    let payments = rt.block_on(payments_during_blocks(
        payers,
        &payers_node,
        &node,
        &log,
        &mut closes,
        args.blocks,
    ));

    daemon.stop(&rt);
    let closed = closed_in_store(&dir.join("payee").join(STORE_FILE));
    assert_eq!(closed, closes.mined, "the payee's store misses closes");
    Results { restart, idle_poll, empty, closing, payments, closes_per_block: closes.per_block }
}

/// Starts the daemon on `payee` (the restart) and pays once on `payer`'s channel, measuring
/// the time, the node calls and the memory it took.
fn restart(
    rt: &tokio::runtime::Runtime,
    payee: DataDir,
    listener: TcpListener,
    node: &FakeNode,
    log: &StoreLog,
    payers_node: &FakeNode,
    (payer, id): &mut (DataDir, ChannelId),
) -> (Restart, Running) {
    let mut config = DaemonConfig::new(NETWORK);
    config.min_conf = 1;
    config.poll_interval = POLL;
    config.min_feerate_sat_per_vb = Some(1);
    let (wallet, store, lock) = payee.into_locked_parts().unwrap();
    let store = Observed { store, log: log.clone() };

    let rss_before = memory("VmRSS");
    let calls_before = node.calls();
    let start = Instant::now();
    let daemon = Daemon::new(store, wallet, node.clone(), config).unwrap().holding(lock);
    let loaded = start.elapsed();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = rt.spawn(daemon.run(listener, async {
        let _ = stopped.await;
    }));
    let refused = rt.block_on(first_payment(payer, payers_node, *id));
    let restart = Restart {
        loaded,
        first_poll: node.first_poll().map(|t| t - start),
        served: start.elapsed(),
        refused,
        calls: node.calls().since(calls_before),
        rss_before,
        rss_after: memory("VmRSS"),
        peak: memory("VmHWM"),
    };
    (restart, Running { stop, served })
}

/// The daemon, serving.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), paychan_node::daemon::DaemonError>>,
}

impl Running {
    fn stop(self, rt: &tokio::runtime::Runtime) {
        let _ = self.stop.send(());
        rt.block_on(self.served).unwrap().expect("the daemon");
    }
}

/// Opens the payers' data directories and points their channels at the daemon at `peer`.
fn payer_dirs(dir: &Path, peer: &str) -> Vec<(DataDir, ChannelId)> {
    let ids = std::fs::read_to_string(dir.join(PAYER_IDS)).unwrap();
    ids.lines()
        .enumerate()
        .map(|(i, id)| {
            let id: ChannelId = id.parse().expect("a channel id");
            let mut payer_dir =
                DataDir::open(&dir.join(format!("payer{i}")), NETWORK).expect("payer data dir");
            let mut record = payer_dir.store.channel(id).unwrap().expect("the payer's channel");
            record.peer = Some(peer.into());
            payer_dir.store.save_channel(&record).unwrap();
            (payer_dir, id)
        })
        .collect()
}

/// Resumes channel `id` and pays once, again each time the daemon refuses (a daemon that
/// cannot tell the tip refuses payments); returns how many times it refused.
async fn first_payment(dir: &mut DataDir, node: &FakeNode, id: ChannelId) -> usize {
    let timeouts = ClientTimeouts::default();
    let mut client = PayerClient::resume(dir.parts(), node, id, timeouts).await.expect("resume");
    let mut refused = 0;
    loop {
        match client.pay(PAYMENT, false).await {
            Ok(()) => return refused,
            Err(ClientError::Refused(_)) => refused += 1,
            Err(e) => panic!("the first payment failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The daemon's poll period while no block comes, over a second.
fn idle_poll_period(node: &FakeNode) -> Duration {
    let polls = || node.calls().0[Call::BestBlockHash as usize];
    let (before, t) = (polls(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    t.elapsed() / (polls() - before).max(1) as u32
}

/// Mines a block holding `txs` (after a coinbase) and waits until the daemon processed it.
fn process_block(node: &FakeNode, log: &StoreLog, txs: Vec<Transaction>) -> BlockRun {
    let saves = log.saves();
    let height = node.mine(txs);
    let deadline = Instant::now() + Duration::from_secs(600);
    let (found, next) = loop {
        if let Some(marks) = node.probed() {
            break marks;
        }
        assert!(Instant::now() < deadline, "the daemon did not process block {height}");
        std::thread::sleep(Duration::from_millis(1));
    };
    // The watcher stores the position before its next poll, or not at all if a save failed.
    let stored = log.stored(height).expect("the chain position stored");
    BlockRun {
        calls: next.calls.since(found.calls),
        saves: log.saves() - saves,
        to_stored: stored - found.at,
        to_next_poll: next.at - found.at,
        span: (found.at, next.at),
    }
}

/// Pays on every payer's channel at once while blocks of closes are mined [`IDLE_GAP`]
/// apart, and returns the payments' round trips, during a block's processing and not.
async fn payments_during_blocks(
    payers: Vec<(DataDir, ChannelId)>,
    payers_node: &FakeNode,
    node: &FakeNode,
    log: &StoreLog,
    closes: &mut Closes,
    blocks: usize,
) -> Payments {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = payers
        .into_iter()
        .map(|(dir, id)| tokio::spawn(pay_until(dir, payers_node.clone(), id, stop.clone())))
        .collect();
    let mut spans = Vec::new();
    for _ in 0..blocks {
        tokio::time::sleep(IDLE_GAP).await;
        let txs = closes.next_block();
        // Mined and waited for off the runtime's workers, which the payers and daemon need.
        let (node, log) = (node.clone(), log.clone());
        let run = tokio::task::spawn_blocking(move || process_block(&node, &log, txs));
        spans.push(run.await.unwrap().span);
    }
    tokio::time::sleep(IDLE_GAP).await;
    stop.store(true, Ordering::SeqCst);
    let (mut during, mut idle) = (Vec::new(), Vec::new());
    for task in tasks {
        for (sent, acked) in task.await.unwrap() {
            let overlaps = spans.iter().any(|&(start, end)| sent < end && acked > start);
            let into = if overlaps { &mut during } else { &mut idle };
            into.push(acked - sent);
        }
    }
    Payments { during: Latencies::of(during), idle: Latencies::of(idle) }
}

/// Pays 1 sat at a time on channel `id` until `stop`; returns each payment's times of sending
/// and acknowledgement.
async fn pay_until(
    mut dir: DataDir,
    node: FakeNode,
    id: ChannelId,
    stop: Arc<AtomicBool>,
) -> Vec<(Instant, Instant)> {
    let timeouts = ClientTimeouts::default();
    let mut client = PayerClient::resume(dir.parts(), &node, id, timeouts).await.expect("resume");
    let mut times = Vec::new();
    let mut sent = None;
    while !stop.load(Ordering::SeqCst) {
        // One payment in flight at a time: each acknowledgement is the payment sent last.
        client
            .pay_pipelined(&[PAYMENT; PAYMENTS_PER_CALL], 1, 1, |e| match e {
                Pipelined::Sent { .. } => sent = Some(Instant::now()),
                Pipelined::Acknowledged { .. } => {
                    times.push((sent.take().expect("sent first"), Instant::now()));
                }
            })
            .await
            .expect("payments");
    }
    times
}

/// Counts the channels of the store at `path` recorded closed.
fn closed_in_store(path: &Path) -> usize {
    let store = SqliteStore::open(path).unwrap();
    store.channels().unwrap().iter().filter(|r| r.closed.is_some()).count()
}

/// The process's memory `field` of `/proc/self/status` (`VmRSS`: resident now; `VmHWM`: the
/// most resident so far).
fn memory(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("a memory figure");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("kB");
    kib * 1024
}

/// The idle channels' fundings, spent by the blocks of closes in turn.
struct Closes {
    fundings: std::vec::IntoIter<OutPoint>,
    per_block: usize,
    mined: usize,
}

impl Closes {
    /// Reads the fundings from the store's directory, for `blocks` blocks of closes alone and
    /// as many with payments: [`CLOSES_PER_BLOCK`] each, or fewer if the channels are too few.
    fn read(dir: &Path, blocks: usize) -> Closes {
        let text = std::fs::read_to_string(dir.join(FUNDINGS)).unwrap();
        let fundings: Vec<OutPoint> =
            text.lines().map(|l| l.parse().expect("an outpoint")).collect();
        let per_block = CLOSES_PER_BLOCK.min(fundings.len() / (2 * blocks));
        Closes { fundings: fundings.into_iter(), per_block, mined: 0 }
    }

    /// The next block's closing transactions.
    fn next_block(&mut self) -> Vec<Transaction> {
        self.mined += self.per_block;
        self.fundings.by_ref().take(self.per_block).map(close).collect()
    }
}

/// A transaction spending `funding` (nothing checks its signatures).
fn close(funding: OutPoint) -> Transaction {
    let input = TxIn {
        previous_output: funding,
        script_sig: ScriptBuf::new(),
        sequence: Sequence::MAX,
        witness: Witness::from_slice(&[[3u8; 72].as_slice(), [4u8; 72].as_slice()]),
    };
    let output = TxOut { value: CAPACITY - Amount::from_sat(500), script_pubkey: ScriptBuf::new() };
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![input],
        output: vec![output],
    }
}

// ---- The fake node ----

/// The node's methods, for counting.
#[derive(Clone, Copy)]
enum Call {
    BestBlockHash,
    BlockHash,
    Block,
    Tip,
    TestAccept,
    Broadcast,
    TxStatus,
    OutputStatus,
    OutputStatusInBlocks,
    FindSpend,
    MempoolSpends,
    FeeRate,
    ScanOutputs,
}

const CALLS: usize = 13;
/// In the order of [`Call`].
const CALL_NAMES: [&str; CALLS] = [
    "best_block_hash",
    "block_hash",
    "block",
    "tip",
    "test_accept",
    "broadcast",
    "tx_status",
    "output_status",
    "output_status_in_blocks",
    "find_spend",
    "mempool_spends",
    "fee_rate",
    "scan_outputs",
];

/// Calls made so far, by method.
#[derive(Clone, Copy, Default)]
struct Counts([u64; CALLS]);

impl Counts {
    fn since(self, earlier: Counts) -> Counts {
        Counts(std::array::from_fn(|i| self.0[i] - earlier.0[i]))
    }

    fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn json(&self) -> serde_json::Value {
        let by_method = CALL_NAMES.iter().zip(self.0).filter(|(_, n)| *n > 0);
        let map: serde_json::Map<String, serde_json::Value> =
            by_method.map(|(name, n)| (name.to_string(), n.into())).collect();
        map.into()
    }
}

/// `3 (best_block_hash 1, block_hash 1, block 1)`.
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by_method: Vec<String> = CALL_NAMES
            .iter()
            .zip(self.0)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        write!(f, "{} ({})", self.total(), by_method.join(", "))
    }
}

/// A poll of the daemon's: when, and the calls before it.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    calls: Counts,
}

/// The polls around a block: the first that returned it, and the next.
struct Probe {
    height: u32,
    found: Option<Mark>,
    next: Option<Mark>,
}

/// What one user of the node asked.
#[derive(Default)]
struct Seen {
    calls: [AtomicU64; CALLS],
    first_poll: OnceLock<Instant>,
    probe: Mutex<Option<Probe>>,
}

/// A node whose chain is made up in memory: a block standing for the chain up to
/// [`RESTART_TIP`], then the blocks the bench mines.
#[derive(Clone)]
struct FakeNode {
    blocks: Arc<RwLock<Vec<Block>>>,
    seen: Arc<Seen>,
}

impl FakeNode {
    fn new() -> FakeNode {
        FakeNode { blocks: Arc::new(RwLock::new(vec![base_block()])), seen: Arc::default() }
    }

    /// The same chain, its calls counted apart.
    fn other_user(&self) -> FakeNode {
        FakeNode { blocks: Arc::clone(&self.blocks), seen: Arc::default() }
    }

    fn count(&self, call: Call) {
        self.seen.calls[call as usize].fetch_add(1, Ordering::SeqCst);
    }

    fn calls(&self) -> Counts {
        Counts(std::array::from_fn(|i| self.seen.calls[i].load(Ordering::SeqCst)))
    }

    fn first_poll(&self) -> Option<Instant> {
        self.seen.first_poll.get().copied()
    }

    /// The best block's height and hash.
    fn best(&self) -> (u32, BlockHash) {
        let blocks = self.blocks.read().unwrap();
        let height = RESTART_TIP + blocks.len() as u32 - 1;
        (height, blocks.last().expect("never empty").block_hash())
    }

    /// Mines a block holding a coinbase and `txs`, watching the polls for it; returns its
    /// height.
    fn mine(&self, txs: Vec<Transaction>) -> u32 {
        let mut blocks = self.blocks.write().unwrap();
        let height = RESTART_TIP + blocks.len() as u32;
        *lock(&self.seen.probe) = Some(Probe { height, found: None, next: None });
        let prev = blocks.last().expect("never empty").block_hash();
        let txdata = std::iter::once(coinbase(height)).chain(txs).collect();
        blocks.push(block(prev, txdata));
        height
    }

    /// The polls around the block mined last, once both came.
    fn probed(&self) -> Option<(Mark, Mark)> {
        let probe = lock(&self.seen.probe);
        let p = probe.as_ref()?;
        Some((p.found?, p.next?))
    }

    fn not_here(method: &'static str) -> ChainError {
        let detail = "the bench's node has no such answer".into();
        ChainError::UnexpectedAnswer { method, detail }
    }
}

impl BlockSource for FakeNode {
    fn best_block_hash(&self) -> Result<BlockHash, ChainError> {
        let mark = Mark { at: Instant::now(), calls: self.calls() };
        self.count(Call::BestBlockHash);
        self.seen.first_poll.get_or_init(|| mark.at);
        let (height, hash) = self.best();
        if let Some(p) = lock(&self.seen.probe).as_mut() {
            if p.found.is_none() && height >= p.height {
                p.found = Some(mark);
            } else if p.found.is_some() && p.next.is_none() {
                p.next = Some(mark);
            }
        }
        Ok(hash)
    }

    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        self.count(Call::BlockHash);
        let blocks = self.blocks.read().unwrap();
        let i = height.checked_sub(RESTART_TIP).map(|i| i as usize);
        Ok(i.and_then(|i| blocks.get(i)).map(Block::block_hash))
    }

    fn block(&self, hash: BlockHash) -> Result<Block, ChainError> {
        self.count(Call::Block);
        let blocks = self.blocks.read().unwrap();
        let found = blocks.iter().rev().find(|b| b.block_hash() == hash);
        found.cloned().ok_or_else(|| FakeNode::not_here("block"))
    }
}

impl Chain for FakeNode {
    fn tip(&self) -> Result<Tip, ChainError> {
        self.count(Call::Tip);
        let (height, hash) = self.best();
        Ok(Tip { height, hash, median_time_past: 0 })
    }
    fn test_accept(&self, _: &Transaction) -> Result<(), ChainError> {
        self.count(Call::TestAccept);
        Ok(())
    }
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        self.count(Call::Broadcast);
        Ok(tx.compute_txid())
    }
    fn tx_status(&self, _: Txid) -> Result<TxStatus, ChainError> {
        self.count(Call::TxStatus);
        Ok(TxStatus::Unknown)
    }
    // The questions about one channel's funding: the store answers them at a restart, and the
    // blocks after it. Any call shows in the counts.
    fn output_status(&self, _: OutPoint) -> Result<OutputStatus, ChainError> {
        self.count(Call::OutputStatus);
        Err(FakeNode::not_here("output_status"))
    }
    fn output_status_in_blocks(&self, _: OutPoint) -> Result<OutputStatus, ChainError> {
        self.count(Call::OutputStatusInBlocks);
        Err(FakeNode::not_here("output_status_in_blocks"))
    }
    fn find_spend(&self, _: OutPoint) -> Result<Option<(Transaction, u32)>, ChainError> {
        self.count(Call::FindSpend);
        Err(FakeNode::not_here("find_spend"))
    }
    fn mempool_spends(&self, outpoints: &[OutPoint]) -> Result<Vec<Option<Txid>>, ChainError> {
        self.count(Call::MempoolSpends);
        Ok(vec![None; outpoints.len()])
    }
    fn submit_package(&self, _: &[Transaction]) -> Result<(), ChainError> {
        Err(ChainError::UnexpectedAnswer { method: "submitpackage", detail: "not here".into() })
    }
    fn mempool_min_feerate(&self) -> Result<FeeRate, ChainError> {
        Ok(FeeRate::from_sat_per_vb(1).unwrap())
    }
    fn fee_rate(&self, _: u16) -> Result<FeeRate, ChainError> {
        self.count(Call::FeeRate);
        Ok(FeeRate::from_sat_per_vb(1).unwrap())
    }
    fn scan_outputs(
        &self,
        _: &[Descriptor<DescriptorPublicKey>],
        _: u32,
    ) -> Result<Vec<Utxo>, ChainError> {
        self.count(Call::ScanOutputs);
        Ok(Vec::new())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The block at [`RESTART_TIP`], the same in the process that builds the store (which stores
/// its hash as the chain position) and the one that measures.
fn base_block() -> Block {
    block(BlockHash::all_zeros(), vec![coinbase(RESTART_TIP)])
}

/// A made-up block: no proof of work, no merkle root (the watcher checks only the links).
fn block(prev_blockhash: BlockHash, txdata: Vec<Transaction>) -> Block {
    let header = Header {
        version: Version::TWO,
        prev_blockhash,
        merkle_root: TxMerkleNode::all_zeros(),
        time: 0,
        bits: CompactTarget::from_consensus(0x207f_ffff),
        nonce: 0,
    };
    Block { header, txdata }
}

/// A coinbase-like transaction, its height making it unique.
fn coinbase(height: u32) -> Transaction {
    let input = TxIn {
        previous_output: OutPoint::null(),
        script_sig: ScriptBuf::from_bytes(height.to_le_bytes().to_vec()),
        sequence: Sequence::MAX,
        witness: Witness::new(),
    };
    let output = TxOut { value: Amount::from_sat(50), script_pubkey: ScriptBuf::new() };
    Transaction {
        version: transaction::Version::ONE,
        lock_time: absolute::LockTime::ZERO,
        input: vec![input],
        output: vec![output],
    }
}

// ---- The store, observed ----

/// What the daemon wrote to its store.
#[derive(Clone, Default)]
struct StoreLog(Arc<Written>);

#[derive(Default)]
struct Written {
    /// The chain positions committed: the watcher's tip heights, in order, and when.
    positions: Mutex<Vec<(u32, Instant)>>,
    /// Transactions saving channels (each one disk flush, for one channel or a group).
    saves: AtomicU64,
}

impl StoreLog {
    /// When a position at `height` or above was first committed.
    fn stored(&self, height: u32) -> Option<Instant> {
        let positions = lock(&self.0.positions);
        positions.iter().find(|(h, _)| *h >= height).map(|(_, at)| *at)
    }

    fn saves(&self) -> u64 {
        self.0.saves.load(Ordering::SeqCst)
    }
}

/// The payee's store, logging what the daemon writes.
struct Observed<S> {
    store: S,
    log: StoreLog,
}

impl<S: Store> Store for Observed<S> {
    fn check_network(&mut self, network: bitcoin::Network) -> Result<(), StoreError> {
        self.store.check_network(network)
    }
    fn reserve_key_index(&mut self) -> Result<u32, StoreError> {
        self.store.reserve_key_index()
    }
    fn save_channels(&mut self, records: &[ChannelRecord]) -> Result<(), StoreError> {
        self.store.save_channels(records)?;
        self.log.0.saves.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn record_closure(&mut self, id: ChannelId, closure: &Closure) -> Result<(), StoreError> {
        self.store.record_closure(id, closure)
    }
    fn forget_closure(&mut self, id: ChannelId) -> Result<(), StoreError> {
        self.store.forget_closure(id)
    }
    fn record_funding_height(&mut self, id: ChannelId, h: Option<u32>) -> Result<(), StoreError> {
        self.store.record_funding_height(id, h)
    }
    fn chain_position(&self, watcher: &str) -> Result<Vec<BlockId>, StoreError> {
        self.store.chain_position(watcher)
    }
    fn save_chain_position(&mut self, watcher: &str, blocks: &[BlockId]) -> Result<(), StoreError> {
        self.store.save_chain_position(watcher, blocks)?;
        if let Some(tip) = blocks.last() {
            lock(&self.log.0.positions).push((tip.height, Instant::now()));
        }
        Ok(())
    }
    fn delete_channel(&mut self, id: ChannelId) -> Result<(), StoreError> {
        self.store.delete_channel(id)
    }
    fn channel(&self, id: ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        self.store.channel(id)
    }
    fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.store.channels()
    }
}

// ---- Results ----

struct Restart {
    /// `Daemon::new`: loading the store.
    loaded: Duration,
    /// The watcher's first poll, from the start.
    first_poll: Option<Duration>,
    /// The first payment acknowledged, from the start.
    served: Duration,
    /// Attempts at the first payment that the daemon refused.
    refused: usize,
    calls: Counts,
    rss_before: u64,
    rss_after: u64,
    /// The most resident so far, once serving: while the store loaded.
    peak: u64,
}

impl Restart {
    fn rss_per_channel(&self, channels: usize) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / channels as f64
    }
}

/// One block's processing.
struct BlockRun {
    calls: Counts,
    /// The store's channel-saving transactions from the block's mining to the next poll: the
    /// block's own while nothing else is saved (no payments).
    saves: u64,
    to_stored: Duration,
    to_next_poll: Duration,
    span: (Instant, Instant),
}

/// Blocks of one kind, summed up: means and maxima.
struct BlockStats {
    blocks: usize,
    calls: (f64, f64),
    saves: (f64, f64),
    processed_ms: (f64, f64),
    to_next_poll_ms: (f64, f64),
    last_calls: Counts,
}

impl BlockStats {
    fn of(runs: &[BlockRun]) -> BlockStats {
        let mean_max = |measure: &dyn Fn(&BlockRun) -> f64| {
            let values: Vec<f64> = runs.iter().map(measure).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            (mean, values.iter().copied().fold(f64::MIN, f64::max))
        };
        BlockStats {
            blocks: runs.len(),
            calls: mean_max(&|b| b.calls.total() as f64),
            saves: mean_max(&|b| b.saves as f64),
            processed_ms: mean_max(&|b| ms(b.to_stored)),
            to_next_poll_ms: mean_max(&|b| ms(b.to_next_poll)),
            last_calls: runs.last().expect("blocks").calls,
        }
    }

    fn calls_met(&self) -> bool {
        self.calls.1 <= TARGET_CALLS_PER_BLOCK as f64
    }

    fn print(&self, name: &str) {
        let (calls, saves) = (self.calls, self.saves);
        let (processed, polled) = (self.processed_ms, self.to_next_poll_ms);
        println!(
            "{name} ({} blocks): node calls per block mean {:.1}, max {:.0} (target: at most \
             {TARGET_CALLS_PER_BLOCK}: {})",
            self.blocks,
            calls.0,
            calls.1,
            met(self.calls_met())
        );
        println!("  the last block's calls: {}", self.last_calls);
        println!(
            "  processed (chain position stored) mean {:.1} ms, max {:.1} ms; to the next poll \
             mean {:.1} ms, max {:.1} ms; channel-saving transactions mean {:.0}, max {:.0}",
            processed.0, processed.1, polled.0, polled.1, saves.0, saves.1
        );
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "blocks": self.blocks,
            "calls_mean": self.calls.0,
            "calls_max": self.calls.1,
            "calls_last": self.last_calls.json(),
            "saves_mean": self.saves.0,
            "saves_max": self.saves.1,
            "processed_ms_mean": self.processed_ms.0,
            "processed_ms_max": self.processed_ms.1,
            "to_next_poll_ms_mean": self.to_next_poll_ms.0,
            "to_next_poll_ms_max": self.to_next_poll_ms.1,
        })
    }
}

struct Latencies {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Latencies {
    fn of(mut times: Vec<Duration>) -> Latencies {
        times.sort();
        let at = |p: f64| {
            let i = ((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1));
            times.get(i).copied().unwrap_or_default()
        };
        Latencies { n: times.len(), p50: at(0.5), p99: at(0.99), max: at(1.0) }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "payments": self.n,
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
        })
    }
}

impl fmt::Display for Latencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p50, p99, max) = (ms(self.p50), ms(self.p99), ms(self.max));
        write!(f, "{} payments, p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms", self.n)
    }
}

struct Payments {
    during: Latencies,
    idle: Latencies,
}

impl Payments {
    fn p99_met(&self) -> bool {
        self.during.n > 0 && self.during.p99 < TARGET_P99_DURING_BLOCK
    }
}

struct Results {
    restart: Restart,
    idle_poll: Duration,
    empty: Vec<BlockRun>,
    closing: Vec<BlockRun>,
    payments: Payments,
    closes_per_block: usize,
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

impl Results {
    fn print(&self, channels: usize, built: Option<Duration>, store_bytes: u64) {
        let (empty, closing) = (BlockStats::of(&self.empty), BlockStats::of(&self.closing));
        println!();
        println!("store: {channels} channels, {:.1} MiB", mib(store_bytes));
        self.print_restart(channels);
        println!(
            "idle polls: one every {:.1} ms (the tick is {:.0} ms; longer is the poll's own work)",
            ms(self.idle_poll),
            ms(POLL)
        );
        empty.print("empty block");
        closing.print(&format!("block of {} closes", self.closes_per_block));
        let p = &self.payments;
        println!(
            "payments ({PAYERS} channels, one in flight each) during blocks of {} closes: {} \
             (target: p99 under {:.0} ms: {})",
            self.closes_per_block,
            p.during,
            ms(TARGET_P99_DURING_BLOCK),
            met(p.p99_met())
        );
        println!("payments while no block is processed: {}", p.idle);
        let r = &self.restart;
        println!(
            "{}",
            serde_json::json!({
                "channels": channels,
                "store_build_s": built.map(|t| t.as_secs_f64()),
                "store_bytes": store_bytes,
                "restart_ms": ms(r.served),
                "daemon_new_ms": ms(r.loaded),
                "first_poll_ms": r.first_poll.map(ms),
                "restart_refusals": r.refused,
                "restart_calls": r.calls.json(),
                "rss_before_bytes": r.rss_before,
                "rss_serving_bytes": r.rss_after,
                "rss_peak_bytes": r.peak,
                "rss_per_channel_bytes": r.rss_per_channel(channels),
                "idle_poll_ms": ms(self.idle_poll),
                "empty_block": empty.json(),
                "close_block": closing.json(),
                "closes_per_block": self.closes_per_block,
                "payments_during_blocks": p.during.json(),
                "payments_idle": p.idle.json(),
                "targets_met": {
                    "restart_calls": r.calls.total() <= TARGET_RESTART_CALLS,
                    "rss_per_channel": r.rss_per_channel(channels) <= TARGET_BYTES_PER_CHANNEL,
                    "calls_per_block": empty.calls_met() && closing.calls_met(),
                    "p99_during_block": p.p99_met(),
                },
            })
        );
    }

    fn print_restart(&self, channels: usize) {
        let r = &self.restart;
        let first_poll = r.first_poll.map_or("never".into(), |t| format!("{:.0} ms", ms(t)));
        println!(
            "restart until it serves: {:.0} ms (Daemon::new {:.0} ms, the watcher's first poll at \
             {first_poll}, then the first payment acknowledged; {} refused before it)",
            ms(r.served),
            ms(r.loaded),
            r.refused,
        );
        println!(
            "  node calls during the restart: {} (target: a handful, at most \
             {TARGET_RESTART_CALLS}, none per channel: {})",
            r.calls,
            met(r.calls.total() <= TARGET_RESTART_CALLS)
        );
        let per_channel = r.rss_per_channel(channels);
        println!(
            "resident memory per idle channel: {per_channel:.0} B ({:.1} MiB before Daemon::new, \
             {:.1} MiB serving, {:.1} MiB at the most while loading) (target: at most \
             {TARGET_BYTES_PER_CHANNEL} B: {})",
            mib(r.rss_before),
            mib(r.rss_after),
            mib(r.peak),
            met(per_channel <= TARGET_BYTES_PER_CHANNEL)
        );
    }
}
