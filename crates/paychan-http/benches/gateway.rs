//! Paid requests per second through the HTTP 402 gateway, against the same upstream called
//! directly, in one run; with the latency (p50, p99) of each, and the targets: at least 5,000
//! paid requests/s and at most 1 ms of latency added at the median.
//!
//! What runs, all in one process on one tokio runtime with a worker thread per core (so the
//! clients, the gateway, the daemon and the upstream share the machine's cores):
//!
//! - The upstream: a minimal hyper HTTP/1.1 server on 127.0.0.1 answering every request with
//!   the same 32-byte body.
//! - The payee, fully real and durable: the real `Daemon` with its data directory (wallet and
//!   SQLite store, `synchronous=FULL`) in a temp dir, following a stand-in chain that stays at
//!   one tip, and the real `Gateway` taking payments at its `PaymentDesk`, at 1 sat per request.
//!   Every payment is saved before its request is forwarded. After the run the payee's database
//!   is read back and must hold every payment.
//! - The clients: `--clients` of them, each with one keep-alive HTTP/1.1 connection to the
//!   upstream and one to the gateway (hyper's `client::conn::http1`, one exact connection
//!   each), and each with its own channel, opened in memory (both state machines, a made-up
//!   funding) and saved to the payee's store before the daemon starts, with the command line's
//!   default terms. The payer's state machine stays in memory: for each paid request it signs
//!   the next payment (one ECDSA signature), sends it in `Paychan-Payment`, and takes the
//!   `Paychan-Ack` of the response.
//!
//! Each round runs, one after the other: "direct", every client sending requests back to back
//! to the upstream, `--requests` in all; "gateway", the same through the gateway, each request
//! paid; the same two paced, every client sending one request at fixed intervals whatever the
//! answers so that together they offer `--paced-rate` requests/s (default 2,500, half the
//! target; at full speed the cores are saturated and the latency is mostly queueing, `clients /
//! rate` by Little's law); then the same two unloaded, one client sending
//! `--latency-requests` requests. Latency is
//! from the request's sending (after its payment is signed) to its whole body read; requests/s
//! is requests over the phase's wall time. Each round is printed, then the median of the rounds.
//!
//! In the same run, for what bounds the gateway figure: the disk's fsync floor, the raw
//! cryptography of a payment (one ECDSA signature and one verification with libsecp256k1) and
//! the whole protocol work of a paid request in memory (the payer's state machine signs, the
//! payment is encoded into its header and decoded, the payee's state machine checks it, the
//! acknowledgement goes back the same way), each on one core and the ceiling it implies on
//! every core; and the process's CPU time per request in each phase.
//!
//! Run: `cargo bench -p paychan-http --bench gateway` (release build). Arguments after `--`:
//! `--clients N` (default 64), `--requests N` (per loaded phase per round, default 20000),
//! `--rounds N` (default 3), `--latency-requests N` (per unloaded phase per round, default
//! 1000), `--paced-rate N` (default 2500), e.g. `cargo bench -p paychan-http --bench gateway -- --clients 64 --requests 20000
//! --rounds 3`.

#[path = "../../paychan-node/benches/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Address, Amount, CompressedPublicKey, OutPoint, PublicKey};
use bytes::Bytes;
use common::{
    cpu_time, crypto_cost, fsync_floor, made_up_funding, ms, sides, us, StandIn, NETWORK, PAYMENT,
    TIP,
};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HOST;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use paychan::chain::Chain;
use paychan::channel::{Payee, PayeeAction, Payer, PayerAction};
use paychan::keys::ChannelSigner;
use paychan::store::{ChannelRecord, ChannelState, Store};
use paychan::watch::BlockSource;
use paychan::wire::{ChannelId, Message, Pay, RawSignature};
use paychan_http::gateway::{Gateway, GatewayConfig};
use paychan_http::headers::{self, decode_acks, decode_payment, encode_acks, encode_payment};
use paychan_http::prices::{Price, PriceTable};
use paychan_node::daemon::{Daemon, DaemonConfig, PaymentDesk, PaymentRefused};
use paychan_node::datadir::DataDir;
use paychan_node::net::PeerAddr;
use paychan_sqlite::{SqliteStore, STORE_FILE};
use paychan_testkit::open_channel;
use paychan_wallet::Branch;
use tokio::net::{TcpListener, TcpStream};

/// What the upstream answers to every request.
const BODY: &[u8; 32] = b"paychan gateway bench: 32 bytes\n";
/// The least capacity of each channel.
const CAPACITY: Amount = Amount::from_sat(10_000_000);
/// The targets.
const TARGET_PER_S: f64 = 5_000.0;
const TARGET_ADDED_P50_MS: f64 = 1.0;

struct Args {
    clients: usize,
    requests: usize,
    rounds: usize,
    latency_requests: usize,
    paced_rate: f64,
}

fn args() -> Args {
    let mut a = Args {
        clients: 64,
        requests: 20_000,
        rounds: 3,
        latency_requests: 1_000,
        paced_rate: TARGET_PER_S / 2.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse().ok()).expect("a number after the flag");
        match flag.as_str() {
            "--clients" => a.clients = value(),
            "--requests" => a.requests = value(),
            "--rounds" => a.rounds = value(),
            "--latency-requests" => a.latency_requests = value(),
            "--paced-rate" => a.paced_rate = value() as f64,
            _ => {} // cargo bench passes --bench
        }
    }
    assert!(a.clients > 0 && a.rounds > 0, "at least one client and one round");
    a
}

fn main() {
    let args = args();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "gateway bench: {cores} cores, {} clients, {} requests per loaded phase, {} per unloaded \
         phase, {} rounds; upstream body {} B, price {} sat per request",
        args.clients,
        args.requests,
        args.latency_requests,
        args.rounds,
        BODY.len(),
        PAYMENT.to_sat()
    );

    let dir = tempfile::tempdir_in(std::env::var_os("CARGO_TARGET_TMPDIR").unwrap_or(".".into()))
        .expect("temp dir");
    let fsync = fsync_floor(dir.path(), 200);
    let crypto_before = crypto_cost(3_000);
    let protocol_before = protocol_cost(2_000);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("tokio runtime");

    // Enough for every payment of every phase, the warm-up's included.
    let per_channel = 2 * args.requests.div_ceil(args.clients) * args.rounds
        + args.latency_requests * args.rounds
        + WARM_UP;
    let capacity = CAPACITY.max(PAYMENT * per_channel as u64 + Amount::from_sat(1_000_000));
    let setup_start = Instant::now();
    let mut bench = Bench::start(&rt, dir.path(), args.clients, capacity);
    let setup = setup_start.elapsed();
    println!(
        "setup: {} channels of {} sat opened in memory and saved, daemon, gateway and upstream \
         started, clients connected in {:.2} s; the desk knew the tip {:.0} ms after the daemon \
         started",
        args.clients,
        capacity.to_sat(),
        setup.as_secs_f64(),
        ms(bench.tip_wait)
    );

    // Connections made, the gateway's pool to the upstream filled, code and pages warm.
    let everyone = vec![WARM_UP; args.clients];
    bench.phase(&rt, Target::Direct, &everyone, None);
    bench.phase(&rt, Target::Gateway, &everyone, None);
    // Paced: each client sends one request every `clients / paced_rate` seconds, whatever the
    // answers (an open loop), so the offered load stays below what saturates the cores and
    // the latency is the service's, not a queue's.
    let pace = Duration::from_secs_f64(args.clients as f64 / args.paced_rate);

    let loaded = split(args.requests, args.clients);
    let mut unloaded = vec![0; args.clients];
    unloaded[0] = args.latency_requests;
    let mut rounds = Vec::new();
    for i in 0..args.rounds {
        let round = Round {
            direct: bench.phase(&rt, Target::Direct, &loaded, None),
            gateway: bench.phase(&rt, Target::Gateway, &loaded, None),
            direct_paced: bench.phase(&rt, Target::Direct, &loaded, Some(pace)),
            gateway_paced: bench.phase(&rt, Target::Gateway, &loaded, Some(pace)),
            direct_1: bench.phase(&rt, Target::Direct, &unloaded, None),
            gateway_1: bench.phase(&rt, Target::Gateway, &unloaded, None),
        };
        println!();
        println!("round {i}:");
        round.print(args.clients, cores, args.paced_rate);
        rounds.push(round);
    }

    let held = bench.stop(&rt);
    let protocol_after = protocol_cost(2_000);
    let crypto_after = crypto_cost(3_000);
    let crypto = (crypto_before + crypto_after) / 2;
    let protocol = (protocol_before + protocol_after) / 2;
    let crypto_ceiling = cores as f64 / crypto.as_secs_f64();
    let protocol_ceiling = cores as f64 / protocol.as_secs_f64();

    println!();
    println!(
        "fsync floor (4 KiB write + fdatasync, median of 200): {:.3} ms -> at most {:.0} \
         sequential durable writes/s",
        ms(fsync),
        1.0 / fsync.as_secs_f64()
    );
    println!(
        "raw crypto per payment (1 ECDSA sign + 1 verify) on one core: {:.1} us before, {:.1} us \
         after the runs -> at most {:.0} payments/s on this machine ({cores} cores) if crypto \
         were all",
        us(crypto_before),
        us(crypto_after),
        crypto_ceiling
    );
    println!(
        "protocol work per paid request in memory (payer signs, header encoded and decoded, \
         payee checks, ack back) on one core: {:.1} us before, {:.1} us after the runs = {:.2}x \
         the raw crypto -> at most {:.0} paid requests/s on {cores} cores if it were all",
        us(protocol_before),
        us(protocol_after),
        protocol.as_secs_f64() / crypto.as_secs_f64(),
        protocol_ceiling
    );

    let med = Medians::of(&rounds);
    println!();
    println!("median of {} rounds:", rounds.len());
    println!(
        "  direct  ({} clients): {:.0} requests/s; p50 {:.3} ms, p99 {:.3} ms; {:.1} us of CPU \
         per request",
        args.clients, med.direct_rate, med.direct_p50, med.direct_p99, med.direct_cpu_us
    );
    println!(
        "  gateway ({} clients): {:.0} paid requests/s; p50 {:.3} ms, p99 {:.3} ms; {:.1} us of \
         CPU per request, {:.1} us of it the client's signing",
        args.clients,
        med.gateway_rate,
        med.gateway_p50,
        med.gateway_p99,
        med.gateway_cpu_us,
        med.sign_us
    );
    println!(
        "  gateway/direct: {:.3}x the requests/s; added latency p50 {:+.3} ms, p99 {:+.3} ms",
        med.ratio, med.added_p50, med.added_p99
    );
    println!(
        "  paced at {:.0}/s ({} clients): direct p50 {:.3} ms; gateway p50 {:.3} ms, p99 {:.3} \
         ms; added p50 {:+.3} ms",
        args.paced_rate,
        args.clients,
        med.direct_paced_p50,
        med.gateway_paced_p50,
        med.gateway_paced_p99,
        med.added_paced_p50
    );
    println!(
        "  unloaded (1 client): direct p50 {:.3} ms, p99 {:.3} ms; gateway p50 {:.3} ms, p99 \
         {:.3} ms; added p50 {:+.3} ms",
        med.direct_1_p50, med.direct_1_p99, med.gateway_1_p50, med.gateway_1_p99, med.added_1_p50
    );
    println!(
        "  the gateway at {:.1}% of the raw-crypto ceiling, {:.1}% of the protocol-work ceiling",
        100.0 * med.gateway_rate / crypto_ceiling,
        100.0 * med.gateway_rate / protocol_ceiling
    );
    // Where a paid request's CPU goes: the direct path's share (the client's and the upstream's
    // HTTP), the protocol work, and the rest (the gateway's own HTTP hop, its forwarding, the
    // desk, SQLite and the store writer, the runtime).
    let rest = med.gateway_cpu_us - med.direct_cpu_us - us(protocol);
    println!(
        "  CPU per paid request {:.1} us = direct HTTP path {:.1} us + protocol work {:.1} us + \
         the rest (gateway HTTP hop and forwarding, desk, SQLite, runtime) {:.1} us",
        med.gateway_cpu_us,
        med.direct_cpu_us,
        us(protocol),
        rest
    );

    println!();
    println!("targets:");
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "  paid requests/s >= {TARGET_PER_S:.0} ({} clients): {:.0} -> {}",
        args.clients,
        med.gateway_rate,
        verdict(med.gateway_rate >= TARGET_PER_S)
    );
    println!(
        "  added p50 latency <= {TARGET_ADDED_P50_MS} ms, {} clients: {:+.3} ms -> {}",
        args.clients,
        med.added_p50,
        verdict(med.added_p50 <= TARGET_ADDED_P50_MS)
    );
    println!(
        "  added p50 latency <= {TARGET_ADDED_P50_MS} ms, {} clients paced at {:.0}/s: {:+.3} ms \
         -> {}",
        args.clients,
        args.paced_rate,
        med.added_paced_p50,
        verdict(med.added_paced_p50 <= TARGET_ADDED_P50_MS)
    );
    println!(
        "  added p50 latency <= {TARGET_ADDED_P50_MS} ms, unloaded (1 client): {:+.3} ms -> {}",
        med.added_1_p50,
        verdict(med.added_1_p50 <= TARGET_ADDED_P50_MS)
    );
    println!(
        "the payee's database: {} channels, {} payments, every one the payers had acknowledged",
        held.0, held.1
    );
    println!(
        "{}",
        serde_json::json!({
            "cores": cores,
            "clients": args.clients,
            "requests": args.requests,
            "latency_requests": args.latency_requests,
            "fsync_ms": ms(fsync),
            "crypto_us": us(crypto),
            "crypto_ceiling_per_s": crypto_ceiling.round(),
            "protocol_us": us(protocol),
            "protocol_ceiling_per_s": protocol_ceiling.round(),
            "rounds": rounds.iter().map(Round::json).collect::<Vec<_>>(),
            "median": {
                "direct_per_s": med.direct_rate.round(),
                "gateway_per_s": med.gateway_rate.round(),
                "ratio": med.ratio,
                "direct_p50_ms": med.direct_p50,
                "direct_p99_ms": med.direct_p99,
                "gateway_p50_ms": med.gateway_p50,
                "gateway_p99_ms": med.gateway_p99,
                "added_p50_ms": med.added_p50,
                "added_p99_ms": med.added_p99,
                "unloaded_added_p50_ms": med.added_1_p50,
                "direct_cpu_us": med.direct_cpu_us,
                "gateway_cpu_us": med.gateway_cpu_us,
                "sign_us": med.sign_us,
            },
            "target_per_s_met": med.gateway_rate >= TARGET_PER_S,
            "target_added_p50_met": med.added_p50 <= TARGET_ADDED_P50_MS,
            "target_unloaded_added_p50_met": med.added_1_p50 <= TARGET_ADDED_P50_MS,
        })
    );
}

/// Paid requests per client before the rounds, to warm up.
const WARM_UP: usize = 20;

/// `total` requests shared out among `clients`.
fn split(total: usize, clients: usize) -> Vec<usize> {
    (0..clients).map(|i| total / clients + usize::from(i < total % clients)).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Where a phase's requests go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    Gateway,
}

/// One phase's measures.
struct Report {
    requests: usize,
    elapsed: Duration,
    /// The process's CPU time during the phase.
    cpu: Duration,
    /// The clients' time signing payments and encoding them, all clients.
    signing: Duration,
    p50: Duration,
    p99: Duration,
}

impl Report {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_us(&self) -> f64 {
        us(self.cpu) / self.requests as f64
    }

    fn sign_us(&self) -> f64 {
        us(self.signing) / self.requests as f64
    }

    fn line(&self, name: &str, cores: usize) -> String {
        let busy = self.cpu.as_secs_f64() / (self.elapsed.as_secs_f64() * cores as f64);
        format!(
            "{name}: {} requests in {:.3} s = {:.0} requests/s; latency p50 {:.3} ms, p99 {:.3} \
             ms; CPU {:.0}% busy, {:.1} us per request",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.rate(),
            ms(self.p50),
            ms(self.p99),
            100.0 * busy,
            self.cpu_us()
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "seconds": self.elapsed.as_secs_f64(),
            "per_s": self.rate().round(),
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "cpu_us": self.cpu_us(),
            "sign_us": self.sign_us(),
        })
    }
}

struct Round {
    direct: Report,
    gateway: Report,
    direct_paced: Report,
    gateway_paced: Report,
    direct_1: Report,
    gateway_1: Report,
}

impl Round {
    fn print(&self, clients: usize, cores: usize, paced_rate: f64) {
        println!("  {}", self.direct.line(&format!("direct  ({clients} clients)"), cores));
        println!(
            "  {}; signing {:.1} us per request",
            self.gateway.line(&format!("gateway ({clients} clients)"), cores),
            self.gateway.sign_us()
        );
        println!(
            "  gateway/direct: {:.3}x the requests/s; added latency p50 {:+.3} ms, p99 {:+.3} ms",
            self.gateway.rate() / self.direct.rate(),
            ms(self.gateway.p50) - ms(self.direct.p50),
            ms(self.gateway.p99) - ms(self.direct.p99)
        );
        let paced = format!("{clients} clients paced at {paced_rate:.0}/s");
        println!("  {}", self.direct_paced.line(&format!("direct  ({paced})"), cores));
        println!("  {}", self.gateway_paced.line(&format!("gateway ({paced})"), cores));
        println!(
            "  paced: added latency p50 {:+.3} ms, p99 {:+.3} ms",
            ms(self.gateway_paced.p50) - ms(self.direct_paced.p50),
            ms(self.gateway_paced.p99) - ms(self.direct_paced.p99)
        );
        println!("  {}", self.direct_1.line("direct  (1 client)", cores));
        println!("  {}", self.gateway_1.line("gateway (1 client)", cores));
        println!(
            "  unloaded: added latency p50 {:+.3} ms, p99 {:+.3} ms",
            ms(self.gateway_1.p50) - ms(self.direct_1.p50),
            ms(self.gateway_1.p99) - ms(self.direct_1.p99)
        );
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "direct": self.direct.json(),
            "gateway": self.gateway.json(),
            "direct_paced": self.direct_paced.json(),
            "gateway_paced": self.gateway_paced.json(),
            "direct_unloaded": self.direct_1.json(),
            "gateway_unloaded": self.gateway_1.json(),
        })
    }
}

/// The median of each figure over the rounds (each on its own: not all from one round).
struct Medians {
    direct_rate: f64,
    gateway_rate: f64,
    ratio: f64,
    direct_p50: f64,
    direct_p99: f64,
    gateway_p50: f64,
    gateway_p99: f64,
    added_p50: f64,
    added_p99: f64,
    direct_1_p50: f64,
    direct_1_p99: f64,
    gateway_1_p50: f64,
    gateway_1_p99: f64,
    added_1_p50: f64,
    direct_paced_p50: f64,
    gateway_paced_p50: f64,
    gateway_paced_p99: f64,
    added_paced_p50: f64,
    direct_cpu_us: f64,
    gateway_cpu_us: f64,
    sign_us: f64,
}

impl Medians {
    fn of(rounds: &[Round]) -> Medians {
        let m = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        Medians {
            direct_rate: m(&|r| r.direct.rate()),
            gateway_rate: m(&|r| r.gateway.rate()),
            ratio: m(&|r| r.gateway.rate() / r.direct.rate()),
            direct_p50: m(&|r| ms(r.direct.p50)),
            direct_p99: m(&|r| ms(r.direct.p99)),
            gateway_p50: m(&|r| ms(r.gateway.p50)),
            gateway_p99: m(&|r| ms(r.gateway.p99)),
            added_p50: m(&|r| ms(r.gateway.p50) - ms(r.direct.p50)),
            added_p99: m(&|r| ms(r.gateway.p99) - ms(r.direct.p99)),
            direct_1_p50: m(&|r| ms(r.direct_1.p50)),
            direct_1_p99: m(&|r| ms(r.direct_1.p99)),
            gateway_1_p50: m(&|r| ms(r.gateway_1.p50)),
            gateway_1_p99: m(&|r| ms(r.gateway_1.p99)),
            added_1_p50: m(&|r| ms(r.gateway_1.p50) - ms(r.direct_1.p50)),
            direct_paced_p50: m(&|r| ms(r.direct_paced.p50)),
            gateway_paced_p50: m(&|r| ms(r.gateway_paced.p50)),
            gateway_paced_p99: m(&|r| ms(r.gateway_paced.p99)),
            added_paced_p50: m(&|r| ms(r.gateway_paced.p50) - ms(r.direct_paced.p50)),
            direct_cpu_us: m(&|r| r.direct.cpu_us()),
            gateway_cpu_us: m(&|r| r.gateway.cpu_us()),
            sign_us: m(&|r| r.gateway.sign_us()),
        }
    }
}

/// One client: its channel's payer and its two connections.
struct Client {
    payer: Payer,
    direct: Connection,
    gateway: Connection,
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    host: String,
    sender: SendRequest<Empty<Bytes>>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.expect("the client connects");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("the HTTP/1.1 handshake");
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("a client connection ended: {e}");
            }
        });
        Connection { host: addr.to_string(), sender }
    }

    /// Sends `GET /bench` with `payment` if any, and reads the whole response.
    async fn get(&mut self, payment: Option<hyper::header::HeaderValue>) -> Response<Bytes> {
        let mut req = Request::builder().uri("/bench").header(HOST, &self.host);
        if let Some(p) = payment {
            req = req.header(headers::PAYMENT, p);
        }
        let req = req.body(Empty::new()).expect("a valid request");
        self.sender.ready().await.expect("the connection is open");
        let response = self.sender.send_request(req).await.expect("a response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the response body").to_bytes();
        Response::from_parts(parts, body)
    }
}

/// Everything running: the upstream, the daemon, the gateway, and the clients.
struct Bench {
    clients: Vec<Client>,
    payee_dir: std::path::PathBuf,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    daemon: tokio::task::JoinHandle<Result<(), paychan_node::daemon::DaemonError>>,
    gateway: tokio::task::JoinHandle<()>,
    upstream: tokio::task::JoinHandle<()>,
    tip_wait: Duration,
}

impl Bench {
    fn start(rt: &tokio::runtime::Runtime, dir: &Path, clients: usize, capacity: Amount) -> Bench {
        let chain = StandIn::default();
        let payee_dir = dir.join("payee");
        let mut payee = DataDir::init(&payee_dir, NETWORK).expect("the payee's data dir");
        let node_secret = payee.wallet.node_secret().expect("the node key");
        let node_id = PublicKey::new(node_secret.public_key(&Secp256k1::signing_only()));
        let bind = || rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("a loopback port");
        let (daemon_listener, gateway_listener, upstream_listener) = (bind(), bind(), bind());
        let local = |l: &TcpListener| l.local_addr().expect("a bound address");
        let (daemon_addr, gateway_addr, upstream_addr) =
            (local(&daemon_listener), local(&gateway_listener), local(&upstream_listener));
        let peer: PeerAddr = format!("{node_id}@{daemon_addr}").parse().expect("a peer address");

        let payers: Vec<Payer> =
            (0..clients).map(|_| open_in_memory(&mut payee, &chain, capacity)).collect();

        let mut config = DaemonConfig::new(NETWORK);
        config.min_conf = 1;
        let (wallet, store, lock) = payee.into_locked_parts().expect("the payee's data dir lock");
        let daemon = Daemon::new(store, wallet, chain, config).expect("the daemon").holding(lock);
        let desk = daemon.desk();
        let (stop_daemon, daemon_stopped) = tokio::sync::oneshot::channel::<()>();
        let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon_started = Instant::now();
        let daemon = rt.spawn(daemon.run(daemon_listener, async {
            let _ = daemon_stopped.await;
        }));
        let upstream = rt.spawn(upstream(upstream_listener));
        let prices = PriceTable::flat(Price { per_request: PAYMENT, per_kib: Amount::ZERO });
        let upstream_uri = format!("http://{upstream_addr}").parse().expect("the upstream URI");
        let gateway = Gateway::new(desk.clone(), GatewayConfig::new(upstream_uri, prices, peer));
        let gateway = rt.spawn(gateway.serve(gateway_listener, async {
            let _ = gateway_stopped.await;
        }));

        // The desk refuses payments (503) until the daemon has read the chain's tip.
        let probe_channel = payers[0].state().terms.channel_id;
        rt.block_on(tip_known(&desk, probe_channel));
        let tip_wait = daemon_started.elapsed();

        let clients = rt.block_on(async {
            let mut clients = Vec::with_capacity(payers.len());
            for payer in payers {
                let direct = Connection::open(upstream_addr).await;
                let gateway = Connection::open(gateway_addr).await;
                clients.push(Client { payer, direct, gateway });
            }
            clients
        });
        Bench {
            clients,
            payee_dir,
            stop: vec![stop_gateway, stop_daemon],
            daemon,
            gateway,
            upstream,
            tip_wait,
        }
    }

    /// Runs one phase: client `i` sends `counts[i]` requests, all clients at once: back to back,
    /// or one every `pace` (client `i` starting `i * pace / clients` in).
    fn phase(
        &mut self,
        rt: &tokio::runtime::Runtime,
        target: Target,
        counts: &[usize],
        pace: Option<Duration>,
    ) -> Report {
        let clients = counts.len() as u32;
        let start = Arc::new(tokio::sync::Barrier::new(counts.len() + 1));
        let tasks: Vec<_> = std::mem::take(&mut self.clients)
            .into_iter()
            .zip(counts)
            .enumerate()
            .map(|(i, (client, &n))| {
                let schedule = pace.map(|p| (p, p * i as u32 / clients));
                rt.spawn(client_run(client, target, (n, schedule), Arc::clone(&start)))
            })
            .collect();
        let (elapsed, cpu, done) = rt.block_on(async {
            start.wait().await;
            let (t, cpu) = (Instant::now(), cpu_time());
            let mut done = Vec::with_capacity(tasks.len());
            for task in tasks {
                done.push(task.await.expect("a client task"));
            }
            (t.elapsed(), cpu_time() - cpu, done)
        });
        let mut latencies = Vec::with_capacity(counts.iter().sum());
        let mut signing = Duration::ZERO;
        for (client, lat, sign) in done {
            self.clients.push(client);
            latencies.extend(lat);
            signing += sign;
        }
        latencies.sort();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Report { requests: latencies.len(), elapsed, cpu, signing, p50: pct(0.5), p99: pct(0.99) }
    }

    /// Stops everything and checks that the payee's database holds every payment the payers
    /// had acknowledged. Returns how many channels and payments it holds.
    fn stop(self, rt: &tokio::runtime::Runtime) -> (usize, u64) {
        for stop in self.stop {
            let _ = stop.send(());
        }
        rt.block_on(self.gateway).expect("the gateway task");
        rt.block_on(self.daemon).expect("the daemon task").expect("the daemon");
        self.upstream.abort();
        let expected: HashMap<ChannelId, u64> = self
            .clients
            .iter()
            .map(|c| (c.payer.state().terms.channel_id, c.payer.paid().to_sat()))
            .collect();
        let store = SqliteStore::open(&self.payee_dir.join(STORE_FILE)).expect("the payee's store");
        let held: HashMap<ChannelId, u64> = store
            .channels()
            .expect("the payee's channels")
            .iter()
            .filter_map(|r| Some((r.state.channel_id(), r.state.funded()?.paid().to_sat())))
            .collect();
        assert_eq!(held, expected, "the payee's database and the payers disagree");
        (held.len(), held.values().sum::<u64>() / PAYMENT.to_sat())
    }
}

/// Waits until the daemon's desk checks payments against a tip: a probe it must refuse for its
/// amount (nothing is taken) is refused for something else than a stale tip.
async fn tip_known<C: Chain + BlockSource + Send + Sync + 'static>(
    desk: &PaymentDesk<C>,
    channel_id: ChannelId,
) {
    let probe = Pay {
        channel_id,
        update: u64::MAX,
        paid_total_sat: 0,
        locktime: 0,
        checkpoint: false,
        signature: RawSignature(Vec::new()),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match desk.take(&probe, PAYMENT).await {
            Err(PaymentRefused::StaleTip) => {
                assert!(Instant::now() < deadline, "the daemon never read the stand-in's tip");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(PaymentRefused::WrongAmount { .. }) => return,
            other => panic!("the probe payment: unexpected {other:?}"),
        }
    }
}

/// One client's phase: `n` requests, back to back or on a schedule (`pace`, first at `offset`),
/// each paid if through the gateway. Returns
/// the client, each request's latency, and its time signing and encoding payments.
async fn client_run(
    mut client: Client,
    target: Target,
    (n, schedule): (usize, Option<(Duration, Duration)>),
    start: Arc<tokio::sync::Barrier>,
) -> (Client, Vec<Duration>, Duration) {
    let mut latencies = Vec::with_capacity(n);
    let mut signing = Duration::ZERO;
    start.wait().await;
    let began = tokio::time::Instant::now();
    for k in 0..n {
        if let Some((pace, offset)) = schedule {
            // Behind schedule (a slow answer): at once.
            tokio::time::sleep_until(began + offset + pace * k as u32).await;
        }
        match target {
            Target::Direct => {
                let t = Instant::now();
                let response = client.direct.get(None).await;
                latencies.push(t.elapsed());
                assert_eq!(response.status(), StatusCode::OK, "the upstream's answer");
                assert_eq!(response.body().as_ref(), BODY, "the upstream's body");
            }
            Target::Gateway => {
                let t = Instant::now();
                let payment = encode_payment(&sign(&mut client.payer));
                let t_sent = Instant::now();
                signing += t_sent - t;
                let response = client.gateway.get(Some(payment)).await;
                latencies.push(t_sent.elapsed());
                let why = response.headers().get(headers::ERROR).cloned();
                assert_eq!(response.status(), StatusCode::OK, "the gateway refused: {why:?}");
                assert_eq!(response.body().as_ref(), BODY, "the body through the gateway");
                let acks = response.headers().get(headers::ACK).expect("a paid response's ack");
                for ack in decode_acks(acks).expect("well-formed acks") {
                    client.payer.handle_message(&Message::PayAck(ack)).expect("the ack is taken");
                }
            }
        }
    }
    (client, latencies, signing)
}

/// The payer's next payment of one [`PAYMENT`] (its state is kept in memory only).
fn sign(payer: &mut Payer) -> Pay {
    let actions = payer.pay(PAYMENT, TIP).expect("the payer pays");
    actions
        .into_iter()
        .find_map(|a| match a {
            PayerAction::Send(Message::Pay(pay)) => Some(pay),
            _ => None,
        })
        .expect("a pay message")
}

/// The upstream: answers every request on every connection with [`BODY`].
async fn upstream(listener: TcpListener) {
    loop {
        let (stream, _) = listener.accept().await.expect("the upstream accepts");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        tokio::spawn(async move {
            let service = service_fn(|_: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                eprintln!("an upstream connection ended: {e}");
            }
        });
    }
}

/// Opens a channel to the payee entirely in memory, with a made-up funding the stand-in chain
/// reports confirmed, and saves the payee's side. Returns the payer's state machine.
fn open_in_memory(payee: &mut DataDir, chain: &StandIn, capacity: Amount) -> Payer {
    let channel_id = ChannelId::random();
    let payee_index = payee.store.reserve_key_index().expect("a key index");
    let payee_signer = payee.wallet.channel_signer(payee_index).expect("a channel key");
    let payee_payout = payee.wallet.address(Branch::Receive, 0).expect("a payout address");
    let (payer, payee_sm) = open_pair(payee_signer, payee_payout, channel_id, capacity, chain);
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
        .expect("the payee's channel saved");
    payer
}

/// Both state machines of a channel opened in memory, the payer's key made up.
fn open_pair(
    payee_signer: ChannelSigner,
    payee_payout: Address,
    channel_id: ChannelId,
    capacity: Amount,
    chain: &StandIn,
) -> (Payer, Payee) {
    let payer_signer = ChannelSigner::random();
    let payer_key = CompressedPublicKey::try_from(payer_signer.public_key()).expect("compressed");
    let payer_payout = Address::p2wpkh(&payer_key, NETWORK);
    let sides = sides((payer_signer, payer_payout), (payee_signer, payee_payout), capacity);
    let (payer, payee, _) = open_channel(sides, channel_id, TIP, |address, amount| {
        let funding = made_up_funding(address.script_pubkey(), amount);
        let outpoint = OutPoint::new(funding.compute_txid(), 0);
        chain.fundings.lock().expect("fundings").insert(outpoint, funding.output[0].clone());
        funding
    });
    (payer, payee)
}

/// The median over rounds of a paid request's protocol work, in memory on one core: the payer's
/// state machine signs the payment, it is encoded into its header and decoded, the payee's
/// state machine checks it, and the acknowledgement goes back through its header to the payer.
/// No HTTP, no disk.
fn protocol_cost(n: usize) -> Duration {
    let chain = StandIn::default();
    let payee_signer = ChannelSigner::random();
    let payee_key = CompressedPublicKey::try_from(payee_signer.public_key()).expect("compressed");
    let payee_payout = Address::p2wpkh(&payee_key, NETWORK);
    let (mut payer, mut payee) =
        open_pair(payee_signer, payee_payout, ChannelId::random(), CAPACITY, &chain);
    let mut rounds: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n / 10 {
                let header = encode_payment(&sign(&mut payer));
                let pay = decode_payment(&header).expect("a payment");
                let actions = payee.handle_message(&Message::Pay(pay), TIP).expect("taken");
                let acks: Vec<_> = actions
                    .into_iter()
                    .filter_map(|a| match a {
                        PayeeAction::Send(Message::PayAck(ack)) => Some(ack),
                        _ => None,
                    })
                    .collect();
                for ack in decode_acks(&encode_acks(&acks)).expect("acks") {
                    payer.handle_message(&Message::PayAck(ack)).expect("the ack is taken");
                }
            }
            t.elapsed() / (n / 10) as u32
        })
        .collect();
    rounds.sort();
    rounds[rounds.len() / 2]
}
