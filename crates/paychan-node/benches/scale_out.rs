//! Durable payments per second through the real payee daemon, by store, in one run:
//!
//! 1. SQLite, one daemon (the data directory's store, as `benches/throughput.rs` runs it);
//! 2. PostgreSQL ([`PgStore`]), one daemon (front end);
//! 3. PostgreSQL, two daemons (front ends) in this process on the same database, payer `i`
//!    paying through daemon `i % 2` (with one channel, the second front end is idle);
//!
//! each with one channel (20,000 payments of 1 sat by default) and with 100 channels paid at once
//! (200 payments each by default). Printed: each run's rate, latency and CPU time (this
//! process's, and the PostgreSQL server's from `/proc`), the ratios of the PostgreSQL
//! configurations against SQLite's in the same round, the raw cryptography of a payment (one
//! ECDSA signature, the payer's, and one verification, the payee's) measured before and after
//! the runs as a ceiling (the cores doing nothing else), and a final JSON line.
//!
//! How: as `benches/throughput.rs`. Channels are opened in memory (the two state machines, a
//! made-up funding the stand-in chain reports confirmed and unspent) with the command line's
//! default terms; the payee side is saved into the payee's store (the SQLite file, or a fresh
//! PostgreSQL database per run), the payer side into each payer's own SQLite data directory.
//! Then the daemon(s) start (`Daemon::new`, `Daemon::run`) on loopback listeners and each payer
//! resumes its channel with [`PayerClient::resume`] (it connects and reestablishes; a daemon
//! takes connections only once it has read the tip, before which payments would be refused as
//! a stale tip) and, all together past a barrier where the clock starts, pipelines its payments ([`PayerClient::pay_pipelined`]: window 256 and batch 64 for one
//! channel, 64 and 32 for 100, as throughput.rs). "Durable": each payer saves every payment
//! before sending it, the payee saves it (SQLite `synchronous=FULL`, or a PostgreSQL commit with
//! `synchronous_commit` on) before acknowledging it. The daemons and the payers share one tokio
//! runtime with a worker thread per core; the PostgreSQL server is a throwaway one of this run's
//! own ([`PgServer`], Debian's package), on the same machine, with its default settings.
//!
//! Both front ends of configuration 3 have their own wallet from the same seed (the first's data
//! directory copied), and share only the database: the store is shared, so each daemon saves
//! with a version compare-and-swap and one of them is elected to watch the chain.
//!
//! CPU time per run: this process's (payers, daemons, SQLite, the PostgreSQL client), of it
//! the daemons' store writer threads' (the payee's saves), and the PostgreSQL server's (its
//! postmaster and every child, from `/proc`). The ceiling is the cores' count over the raw
//! crypto of a payment on one core: what the machine would do with nothing else to do.
//!
//! After each run the payee's database is read back (the SQLite file, or PostgreSQL through
//! [`Store::channels`]) and must hold every payment the payers had acknowledged.
//!
//! The configurations alternate within each round (reversed every other round) so that the
//! machine's drift shows in the rounds rather than in one configuration; the summary gives the
//! median over rounds and the ratios against SQLite.
//!
//! Run: `cargo bench -p paychan-node --bench scale_out` (release build; PostgreSQL's server
//! installed: `regtest/postgres.sh install`). Arguments after `--`: `--payments N` (one
//! channel, default 20000), `--per-channel N` (100 channels, default 200), `--rounds N`
//! (default 2).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Amount, OutPoint, PublicKey};
use common::{
    cpu_time, crypto_cost, fsync_floor, made_up_funding, ms, pay_timed, sides, us, StandIn,
    NETWORK, PAYMENT, TIP,
};
use paychan::store::{ChannelRecord, ChannelState, Store};
use paychan::wire::ChannelId;
use paychan_node::client::{ClientTimeouts, PayerClient};
use paychan_node::daemon::{Daemon, DaemonConfig};
use paychan_node::datadir::DataDir;
use paychan_postgres::PgStore;
use paychan_sqlite::{SqliteStore, STORE_FILE};
use paychan_testkit::open_channel;
use paychan_testkit::postgres::PgServer;
use paychan_wallet::{Branch, Wallet};
use tokio::net::TcpListener;

struct Args {
    rounds: usize,
    payments: usize,
    per_channel: usize,
}

fn args() -> Args {
    let mut a = Args { rounds: 2, payments: 20_000, per_channel: 200 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse().ok()).expect("a number after the flag");
        match flag.as_str() {
            "--rounds" => a.rounds = value(),
            "--payments" => a.payments = value(),
            "--per-channel" => a.per_channel = value(),
            _ => {} // cargo bench passes --bench
        }
    }
    a.rounds = a.rounds.max(1);
    a
}

/// Where the payee keeps its channels, and how many daemons serve them.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Postgres { fronts: usize },
}

const BACKENDS: [Backend; 3] =
    [Backend::Sqlite, Backend::Postgres { fronts: 1 }, Backend::Postgres { fronts: 2 }];

impl Backend {
    fn fronts(self) -> usize {
        match self {
            Backend::Sqlite => 1,
            Backend::Postgres { fronts } => fronts,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite, 1 daemon",
            Backend::Postgres { fronts: 1 } => "postgres, 1 daemon",
            Backend::Postgres { .. } => "postgres, 2 daemons",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { fronts: 1 } => "postgres_one_daemon",
            Backend::Postgres { .. } => "postgres_two_daemons",
        }
    }
}

/// One channel or 100.
#[derive(Clone, Copy)]
struct Size {
    channels: usize,
    per_channel: usize,
    window: usize,
    batch: usize,
}

impl Size {
    fn key(self) -> &'static str {
        if self.channels == 1 {
            "one_channel"
        } else {
            "hundred_channels"
        }
    }
}

fn main() {
    let args = args();
    let began = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sizes = [
        Size { channels: 1, per_channel: args.payments, window: 256, batch: 64 },
        Size { channels: 100, per_channel: args.per_channel, window: 64, batch: 32 },
    ];
    let pg = PgServer::start();
    let postmaster = postmaster_pid(&pg);
    println!(
        "scale_out bench: {cores} cores; a PostgreSQL server of its own on 127.0.0.1:{} (started \
         in {:.1} s)",
        pg.port,
        began.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir_in(std::env::var_os("CARGO_TARGET_TMPDIR").unwrap_or(".".into()))
        .expect("temp dir");
    let fsync = fsync_floor(dir.path(), 200);
    let crypto_before = crypto_cost(3_000);

    // results[size][backend]: one report per round.
    let mut results: Vec<Vec<Vec<Report>>> = vec![vec![Vec::new(); BACKENDS.len()]; sizes.len()];
    let mut database = 0;
    for round in 0..args.rounds {
        println!();
        println!("round {round}");
        for (s, size) in sizes.iter().enumerate() {
            let mut order: Vec<usize> = (0..BACKENDS.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for b in order {
                let backend = BACKENDS[b];
                database += 1;
                let url = match backend {
                    Backend::Sqlite => None,
                    Backend::Postgres { .. } => Some(pg.database(&format!("payee{database}"))),
                };
                let run_dir = dir.path().join(format!("run{database}"));
                let report = run(&run_dir, backend, url.as_deref(), *size, postmaster);
                // Only the figures are kept: the next run's payers need the disk.
                std::fs::remove_dir_all(&run_dir).expect("remove the run's directory");
                println!("  {:<20} {}", backend.name(), report.line(size.channels));
                results[s][b].push(report);
            }
        }
    }
    let crypto_after = crypto_cost(3_000);
    let crypto = (crypto_before + crypto_after) / 2;
    let ceiling = cores as f64 / crypto.as_secs_f64();

    println!();
    println!(
        "fsync floor (4 KiB write + fdatasync, median of 200): {:.3} ms -> at most {:.0} \
         sequential durable writes/s",
        ms(fsync),
        1.0 / fsync.as_secs_f64()
    );
    println!(
        "raw crypto per payment (1 ECDSA sign + 1 verify) on one core: {:.1} us before, {:.1} \
         us after the runs -> ceiling {:.0} payments/s on one core, {:.0}/s on {cores}",
        us(crypto_before),
        us(crypto_after),
        1.0 / crypto.as_secs_f64(),
        ceiling
    );
    println!(
        "median of {} round(s); payments/s (each round), ratio against SQLite (each round's \
         ratio), share of the crypto ceiling:",
        args.rounds
    );
    let mut json_sizes = serde_json::Map::new();
    for (s, size) in sizes.iter().enumerate() {
        let label = match size.channels {
            1 => format!("1 channel, {} payments", size.per_channel),
            n => format!("{n} channels, {} payments each", size.per_channel),
        };
        println!("{label}:");
        let sqlite = median(results[s][0].iter().map(Report::rate));
        let mut json = serde_json::Map::new();
        for (b, backend) in BACKENDS.iter().enumerate() {
            let reports = &results[s][b];
            let rates: Vec<f64> = reports.iter().map(Report::rate).collect();
            let rate = median(rates.iter().copied());
            // Each round's ratio, against SQLite in the same round.
            let ratios: Vec<f64> =
                reports.iter().zip(&results[s][0]).map(|(r, q)| r.rate() / q.rate()).collect();
            let each = |v: &[f64], f: &dyn Fn(f64) -> String| {
                v.iter().map(|x| f(*x)).collect::<Vec<_>>().join(", ")
            };
            println!(
                "  {:<20} {:>7.0}/s ({})  x{:.2} vs sqlite ({})  {:.1}% of the ceiling",
                backend.name(),
                rate,
                each(&rates, &|x| format!("{x:.0}")),
                rate / sqlite,
                each(&ratios, &|x| format!("x{x:.2}")),
                100.0 * rate / ceiling
            );
            json.insert(
                backend.key().into(),
                serde_json::json!({
                    "per_s": rate.round(),
                    "vs_sqlite": rate / sqlite,
                    "vs_sqlite_rounds": ratios,
                    "vs_crypto_ceiling": rate / ceiling,
                    "rounds": reports.iter().map(Report::json).collect::<Vec<_>>(),
                }),
            );
        }
        json.insert("channels".into(), size.channels.into());
        json.insert("payments_per_channel".into(), size.per_channel.into());
        json.insert("window".into(), size.window.into());
        json.insert("batch".into(), size.batch.into());
        json_sizes.insert(size.key().into(), json.into());
    }
    println!("the whole bench: {:.0} s", began.elapsed().as_secs_f64());
    println!(
        "{}",
        serde_json::json!({
            "bench": "scale_out",
            "cores": cores,
            "rounds": args.rounds,
            "fsync_ms": ms(fsync),
            "crypto_us": us(crypto),
            "crypto_ceiling_per_s": ceiling.round(),
            "total_s": began.elapsed().as_secs_f64(),
            "one_channel": json_sizes["one_channel"],
            "hundred_channels": json_sizes["hundred_channels"],
        })
    );
    drop(pg);
}

/// The median (the mean of the middle two for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The fields of `/proc/PID/stat` after the command name (which is in parentheses and may
/// hold spaces): state is 0, the parent's pid 1, utime 11, stime 12, cutime 13, cstime 14.
fn proc_stat(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit(')').next()?;
    Some(after.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect())
}

/// Clock ticks (USER_HZ, 100 per second on Linux) to a duration.
fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

/// The CPU time of each of this process's threads named `name`, by thread id.
fn threads_cpu(name: &str) -> HashMap<String, u64> {
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let tid = entry.file_name().to_string_lossy().into_owned();
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            if let Some(f) = proc_stat(&format!("self/task/{tid}")) {
                threads.insert(tid, f[10] + f[11]);
            }
        }
    }
    threads
}

/// The CPU time the threads named `name` used between two [`threads_cpu`] (those that ended
/// in between not counted).
fn threads_cpu_since(name: &str, before: &HashMap<String, u64>) -> Duration {
    let after = threads_cpu(name);
    ticks(
        after.iter().map(|(tid, t)| t.saturating_sub(before.get(tid).copied().unwrap_or(0))).sum(),
    )
}

/// The daemons' store writers' threads (`StoreWriter::spawn`): the payee's saves.
const STORE_WRITER: &str = "store-writer";

/// The PostgreSQL server's process: the first line of `postmaster.pid`.
fn postmaster_pid(pg: &PgServer) -> u32 {
    let file =
        std::fs::read_to_string(pg.data_dir().join("postmaster.pid")).expect("postmaster.pid");
    file.lines().next().and_then(|l| l.trim().parse().ok()).expect("the server's pid")
}

/// The CPU time the PostgreSQL server has used so far: the postmaster's own, that of its
/// children that have exited (reaped), and that of those alive (the backends serving the
/// connections, the WAL writer, the checkpointer...).
fn pg_cpu_time(postmaster: u32) -> Duration {
    let Some(own) = proc_stat(&postmaster.to_string()) else { return Duration::ZERO };
    let mut total = own[10] + own[11] + own[12] + own[13];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if let Some(f) = proc_stat(pid).filter(|f| f.first() == Some(&(postmaster as u64))) {
            total += f[10] + f[11];
        }
    }
    ticks(total)
}

#[derive(Clone)]
struct Report {
    payments: usize,
    elapsed: Duration,
    /// From the start of the run to the payers' start: the channels opened and saved, the
    /// daemon(s) loaded and serving, the payers connected.
    setup: Duration,
    /// CPU time used by this process (payers, daemons, SQLite) during the run.
    cpu: Duration,
    /// Of `cpu`, the daemons' store writers' (the payee's saves, on a thread of their own).
    writer_cpu: Duration,
    /// CPU time used by the PostgreSQL server during the run.
    pg_cpu: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Report {
    fn rate(&self) -> f64 {
        self.payments as f64 / self.elapsed.as_secs_f64()
    }

    /// The share of all cores' time a CPU time is of the run.
    fn busy(&self, cpu: Duration) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpu.as_secs_f64() / (self.elapsed.as_secs_f64() * cores as f64)
    }

    fn line(&self, channels: usize) -> String {
        format!(
            "{:>3} ch: {:>6} payments in {:.2} s = {:>6.0}/s; latency p50 {:.1} ms, p99 {:.1} ms, \
             max {:.0} ms; CPU of the cores: bench {:.0}% + postgres {:.0}% = {:.0}%, per payment \
             {:.0} (store writer {:.0}) + {:.0} us; setup {:.1} s",
            channels,
            self.payments,
            self.elapsed.as_secs_f64(),
            self.rate(),
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            100.0 * self.busy(self.cpu),
            100.0 * self.busy(self.pg_cpu),
            100.0 * self.busy(self.cpu + self.pg_cpu),
            us(self.cpu) / self.payments as f64,
            us(self.writer_cpu) / self.payments as f64,
            us(self.pg_cpu) / self.payments as f64,
            self.setup.as_secs_f64(),
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "payments": self.payments,
            "seconds": self.elapsed.as_secs_f64(),
            "per_s": self.rate().round(),
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
            "setup_s": self.setup.as_secs_f64(),
            "cpu_busy": self.busy(self.cpu),
            "postgres_cpu_busy": self.busy(self.pg_cpu),
            "cpu_us_per_payment": us(self.cpu) / self.payments as f64,
            "store_writer_cpu_us_per_payment": us(self.writer_cpu) / self.payments as f64,
            "postgres_cpu_us_per_payment": us(self.pg_cpu) / self.payments as f64,
        })
    }
}

/// Copies the files of directory `from` (a data directory: the seed, the database) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Each payee channel in `store`: its id, payments and amount paid.
fn held(store: &impl Store) -> HashMap<ChannelId, (u64, Amount)> {
    store
        .channels()
        .expect("the payee's channels")
        .iter()
        .filter(|r| matches!(r.state, ChannelState::Payee(_)))
        .filter_map(|r| r.state.funded().map(|f| (r.state.channel_id(), (f.payments(), f.paid()))))
        .collect()
}

/// Opens `size.channels` channels with the payee's store of `backend` (the PostgreSQL
/// database at `url`), starts its daemon(s), pays `size.per_channel` payments of 1 sat on each
/// at once, stops, and checks the payee's database holds every payment acknowledged.
fn run(dir: &Path, backend: Backend, url: Option<&str>, size: Size, postmaster: u32) -> Report {
    let began = Instant::now();
    std::fs::create_dir_all(dir).unwrap();
    let chain = StandIn::default();
    let payee_dir = dir.join("payee");
    let mut payee = DataDir::init(&payee_dir, NETWORK).expect("payee data dir");
    let node_secret = payee.wallet.node_secret().unwrap();
    let node_id = PublicKey::new(node_secret.public_key(&Secp256k1::signing_only()));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .enable_all()
        .build()
        .unwrap();
    let listeners: Vec<TcpListener> = (0..backend.fronts())
        .map(|_| rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap())
        .collect();
    let peers: Vec<String> =
        listeners.iter().map(|l| format!("{node_id}@{}", l.local_addr().unwrap())).collect();

    // The channels, the payee side in the payee's store; payer i pays through front end i % n.
    // The PostgreSQL client blocks: everything on it runs here, outside the runtime.
    let mut pg = url.map(|url| {
        let mut store = PgStore::connect(url, 8).expect("connect to PostgreSQL");
        store.check_network(NETWORK).unwrap();
        store
    });
    let mut payers = Vec::new();
    for i in 0..size.channels {
        let mut payer_dir =
            DataDir::init(&dir.join(format!("payer{i}")), NETWORK).expect("payer data dir");
        let peer = &peers[i % peers.len()];
        let id = match &mut pg {
            None => open_in_memory(
                &mut payer_dir,
                (&payee.wallet, &mut payee.store),
                &chain,
                peer,
                size.per_channel,
            ),
            Some(store) => open_in_memory(
                &mut payer_dir,
                (&payee.wallet, store),
                &chain,
                peer,
                size.per_channel,
            ),
        };
        payers.push((payer_dir, id));
    }

    let mut config = DaemonConfig::new(NETWORK);
    config.min_conf = 1;
    let daemons: Vec<Daemon<StandIn>> = match url {
        None => {
            let (wallet, store, lock) = payee.into_locked_parts().unwrap();
            vec![Daemon::new(store, wallet, chain.clone(), config).unwrap().holding(lock)]
        }
        Some(url) => {
            // Each front end its own wallet, from the same seed: the first's directory copied
            // (closed first, so that its database is whole in its file).
            drop(payee);
            (0..backend.fronts())
                .map(|f| {
                    let front_dir = match f {
                        0 => payee_dir.clone(),
                        f => {
                            let to = dir.join(format!("payee{f}"));
                            copy_dir(&payee_dir, &to);
                            to
                        }
                    };
                    let front = DataDir::open(&front_dir, NETWORK).expect("the front end's dir");
                    let (wallet, _sqlite, lock) = front.into_locked_parts().unwrap();
                    let store = PgStore::connect(url, 8).expect("connect to PostgreSQL");
                    let daemon = Daemon::new(store, wallet, chain.clone(), config.clone());
                    daemon.unwrap().holding(lock)
                })
                .collect()
        }
    };
    let mut stops = Vec::new();
    let mut served = Vec::new();
    for (daemon, listener) in daemons.into_iter().zip(listeners) {
        assert_eq!(daemon.node_id(), node_id, "every front end has the node's key");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        served.push(rt.spawn(daemon.run(listener, async {
            let _ = stopped.await;
        })));
    }

    // Each payer connects (once its daemon serves) before the barrier; the clock starts past it.
    let Size { channels, per_channel, window, batch } = size;
    let start = Arc::new(tokio::sync::Barrier::new(channels + 1));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = payers
        .into_iter()
        .map(|(mut payer_dir, id)| {
            let (chain, start, latencies) = (chain.clone(), start.clone(), latencies.clone());
            rt.spawn(async move {
                let timeouts = ClientTimeouts::default();
                let mut client = PayerClient::resume(payer_dir.parts(), &chain, id, timeouts)
                    .await
                    .expect("resume");
                let lat = pay_timed(&mut client, per_channel, (window, batch), &start).await;
                latencies.lock().unwrap().extend(lat);
                // What the payee acknowledged: every payment, by the payer's own account.
                let acked = client.payer().funded().and_then(|f| f.funded.newest.as_ref());
                (id, acked.map_or(0, |n| n.number), client.payer().paid())
            })
        })
        .collect();
    rt.block_on(start.wait());
    let setup = began.elapsed();
    let (t, cpu, pg_cpu) = (Instant::now(), cpu_time(), pg_cpu_time(postmaster));
    let writers = threads_cpu(STORE_WRITER);
    let acked: Vec<(ChannelId, u64, Amount)> =
        tasks.into_iter().map(|task| rt.block_on(task).expect("payer task")).collect();
    let (elapsed, cpu, pg_cpu) =
        (t.elapsed(), cpu_time() - cpu, pg_cpu_time(postmaster).saturating_sub(pg_cpu));
    let writer_cpu = threads_cpu_since(STORE_WRITER, &writers);
    for stop in stops {
        let _ = stop.send(());
    }
    for served in served {
        rt.block_on(served).unwrap().expect("daemon");
    }
    // The daemons' remaining tasks (their tip polls) and their stores' connections go too.
    rt.shutdown_timeout(Duration::from_secs(10));

    // Durable means in the payee's database: read it back.
    let held = match url {
        None => held(&SqliteStore::open(&payee_dir.join(STORE_FILE)).unwrap()),
        Some(url) => held(&PgStore::connect(url, 1).expect("connect to PostgreSQL")),
    };
    assert_eq!(held.len(), channels, "the payee's database misses channels");
    for (id, payments, paid) in acked {
        assert_eq!(payments, per_channel as u64, "every payment acknowledged");
        assert_eq!(paid, PAYMENT * per_channel as u64);
        let (held_payments, held_paid) = held.get(&id).copied().unwrap_or_default();
        assert!(
            held_payments >= payments && held_paid >= paid,
            "channel {id}: the payee's database holds {held_payments} payments ({held_paid}), \
             {payments} were acknowledged ({paid})"
        );
    }

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Report {
        payments: channels * per_channel,
        elapsed,
        setup,
        cpu,
        writer_cpu,
        pg_cpu,
        p50: pct(0.5),
        p99: pct(0.99),
        max: lat[lat.len() - 1],
    }
}

/// Opens a channel between a payer data dir and the payee (its wallet, its store) entirely in
/// memory, with a made-up funding the stand-in chain reports confirmed, and saves both sides.
fn open_in_memory(
    payer_dir: &mut DataDir,
    (payee_wallet, payee_store): (&Wallet, &mut impl Store),
    chain: &StandIn,
    peer: &str,
    payments: usize,
) -> ChannelId {
    let channel_id = ChannelId::random();
    let payer_index = payer_dir.store.reserve_key_index().unwrap();
    let payee_index = payee_store.reserve_key_index().unwrap();
    let payer_signer = payer_dir.wallet.channel_signer(payer_index).unwrap();
    let payee_signer = payee_wallet.channel_signer(payee_index).unwrap();
    let capacity = PAYMENT * payments as u64 + Amount::from_sat(1_000_000);
    let sides = sides(
        (payer_signer, payer_dir.wallet.address(Branch::Receive, 0).unwrap()),
        (payee_signer, payee_wallet.address(Branch::Receive, 0).unwrap()),
        capacity,
    );
    let (payer, payee, _) = open_channel(sides, channel_id, TIP, |address, amount| {
        let funding = made_up_funding(address.script_pubkey(), amount);
        let outpoint = OutPoint::new(funding.compute_txid(), 0);
        chain.fundings.lock().unwrap().insert(outpoint, funding.output[0].clone());
        funding
    });
    payee_store
        .save_channel(&ChannelRecord {
            key_index: payee_index,
            peer: None,
            state: ChannelState::Payee(payee.state().clone()),
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
