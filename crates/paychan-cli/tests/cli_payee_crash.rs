//! `kill -9` of the payee daemon, three times, in the middle of a stream of payments from the
//! command line.
//! After a restart the two sides agree, and the settlement pays exactly what was acknowledged:
//! every `pay` that succeeded, plus a payment reported in flight (which the next command
//! completes), and nothing for a `pay` that failed because the payee was unreachable.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::cli::{Daemon, OpenChannel, Party};
use common::node::Node;

const SAT: u64 = 1_000;
/// Times the daemon is killed and restarted.
const KILLS: u64 = 3;

/// What each `pay` reported.
#[derive(Debug, Default)]
struct Outcomes {
    acknowledged: u64,
    in_flight: u64,
    unreachable: u64,
    last_total: u64,
}

fn pay_stream(payer: &Party, channel: &str, stop: &AtomicBool, outcomes: &Mutex<Outcomes>) {
    while !stop.load(Ordering::SeqCst) {
        let out = payer
            .cmd()
            .args(["--json", "pay", channel, &SAT.to_string()])
            .output()
            .expect("run pay");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut o = outcomes.lock().unwrap();
        if out.status.success() {
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            o.acknowledged += 1;
            o.last_total = json["paid_total_sat"].as_u64().unwrap();
        } else if stderr.contains("cannot reach the payee") {
            // Nothing new sent (an earlier payment may still be in flight: counted then).
            o.unreachable += 1;
            drop(o);
            std::thread::sleep(Duration::from_millis(20));
        } else if stderr.contains("stays in flight") {
            o.in_flight += 1;
        } else {
            panic!("unexpected pay failure: {stderr}");
        }
    }
}

#[test]
fn payee_killed_mid_stream_restarts_and_settles_what_was_acknowledged() {
    // The default checkpoint policy, every 10,000 sat: nine payments of 1,000 sat in ten are
    // between checkpoints, signed by the payer only.
    let terms = ["--lifetime", "400", "--step", "1", "--feerate", "2"];
    let OpenChannel { node, payee, payer, mut daemon, channel, .. } =
        OpenChannel::new(1_000_000, &terms, &[]);
    let listen = daemon.listen.clone();

    let stop = AtomicBool::new(false);
    let outcomes = Mutex::new(Outcomes::default());
    let wait_for = |what: &str, done: &dyn Fn(&Outcomes) -> bool| {
        for _ in 0..3000 {
            if done(&outcomes.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out waiting for {what}: {:?}", outcomes.lock().unwrap());
    };
    let _daemon = std::thread::scope(|s| {
        s.spawn(|| pay_stream(&payer, &channel, &stop, &outcomes));
        for kill in 0..KILLS {
            let acknowledged = outcomes.lock().unwrap().acknowledged;
            wait_for("a few payments", &|o| o.acknowledged >= acknowledged + 5);
            // Somewhere inside the next `pay` (each takes ~10 ms here): before it connects,
            // while the payee stores it, or before the acknowledgement is read.
            let jitter =
                SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
            std::thread::sleep(Duration::from_micros(u64::from(jitter) % 10_000));
            daemon.kill9();
            let unreachable = outcomes.lock().unwrap().unreachable;
            wait_for("pays to find the payee gone", &|o| o.unreachable >= unreachable + 3);
            daemon = Daemon::start(&payee, Some(&listen), &[]);
            eprintln!("kill {kill}: {:?}", outcomes.lock().unwrap());
        }
        let acknowledged = outcomes.lock().unwrap().acknowledged;
        wait_for("payments after the last restart", &|o| o.acknowledged >= acknowledged + 5);
        stop.store(true, Ordering::SeqCst);
        daemon
    });

    let o = outcomes.lock().unwrap();
    eprintln!("outcomes: {o:?}");
    assert!(o.in_flight <= KILLS, "at most one pay in flight per kill: {o:?}");
    let expected = SAT * (o.acknowledged + o.in_flight);
    assert_eq!(o.last_total, expected, "the last acknowledged total counts every acknowledged pay");
    assert_eq!(payer.channel(&channel)["paid_total_sat"], expected);
    let show = payee.channel(&channel);
    assert_eq!(show["paid_total_sat"], expected);
    assert_eq!(show["checkpoints"].as_u64().unwrap(), expected / 10_000);
    let close = payer.json(&["close", &channel]);
    assert_eq!(close["payee_sat"], expected);
    let txid = close["settlement_txid"].as_str().unwrap().parse().unwrap();
    node.mine(1);
    let (tx, confirmations, _) = node.get_tx(txid);
    assert_eq!(confirmations, 1);
    assert!(tx.output.iter().any(|out| out.value.to_sat() == expected), "{tx:?}");
}

/// `kill -9` of the payee at a random point of each of several opens: every channel whose
/// funding went out ends up taking payments, with both sides agreeing, and every other one
/// never broadcast a funding, so no coin is stranded without a refund.
#[test]
fn payee_killed_during_opens_strands_no_funding() {
    let node = Node::start();
    let payee = Party::new(&node);
    let payer = Party::new(&node);
    let address = payer.json(&["address"]);
    let address: bitcoin::Address<_> = address["address"].as_str().unwrap().parse().unwrap();
    node.mine_to_address(110, &address.assume_checked());
    let mut daemon = Daemon::start(&payee, None, &[]);
    let listen = daemon.listen.clone();
    // The lifetime outlasts the blocks mined meanwhile: a block every 50 ms while six opens
    // run, each up to its 2 s timeout when the kill lands mid-handshake (60 blocks were too few
    // when two rounds timed out).
    let terms = ["--timeout", "2", "--lifetime", "300", "--step", "2", "--feerate", "2"];
    for round in 0..6u64 {
        let mut open = payer.spawn_open(&daemon, 100_000, &terms);
        // Kill the payee 0 to 125 ms into the open, at a different point each round: `open`
        // connects after a few tens of ms here (the wallet's sync comes first), so some kills land
        // before it connects, some while the payee accepts or signs the refund, some after.
        let jitter =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
        std::thread::sleep(Duration::from_micros(u64::from(jitter) % 100_000 + round * 5_000));
        daemon.kill9();
        daemon = Daemon::start(&payee, Some(&listen), &[]);
        while open.try_wait().unwrap().is_none() {
            node.mine(1);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    node.mine(1);
    let list = payer.json(&["list"]);
    let channels = list["channels"].as_array().unwrap();
    let mut funded = 0;
    for c in channels {
        let id = c["channel_id"].as_str().unwrap();
        match c["state"].as_str().unwrap() {
            "open" | "awaiting channel ready" => {
                funded += 1;
                // The payee may need a poll to see the confirmation after its restart.
                let mut paid = None;
                for _ in 0..50 {
                    let out = payer
                        .cmd()
                        .args(["--json", "--timeout", "2", "pay", id, "1000"])
                        .output()
                        .unwrap();
                    if out.status.success() {
                        paid =
                            Some(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap());
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let paid =
                    paid.unwrap_or_else(|| panic!("funded channel {id} never took a payment"));
                assert_eq!(paid["paid_total_sat"], 1000);
                assert_eq!(payee.channel(id)["paid_total_sat"], 1000);
            }
            "awaiting refund signature" => {
                // Signed but held back: its funding must not be on chain or in the mempool.
                assert_funding_not_broadcast(&payer, &node, id);
            }
            other => panic!("channel {id} left in state {other:?}"),
        }
    }
    eprintln!("{} opens: {funded} funded and usable, {} held back", 6, channels.len() - funded);
}

fn assert_funding_not_broadcast(payer: &Party, node: &Node, id: &str) {
    use paychan::channel::PayerStage;
    use paychan::store::{ChannelState, Store};
    use paychan_sqlite::{SqliteStore, STORE_FILE};
    let store = SqliteStore::open(&payer.datadir().join(STORE_FILE)).unwrap();
    let record = store.channel(id.parse().unwrap()).unwrap().unwrap();
    let ChannelState::Payer(state) = record.state else { panic!("not ours") };
    let PayerStage::AwaitingRefund { funding_tx, .. } = state.stage else { panic!("moved on") };
    let status = paychan::chain::Chain::tx_status(&node.chain, funding_tx.compute_txid()).unwrap();
    assert_eq!(
        status,
        paychan::chain::TxStatus::Unknown,
        "channel {id}: funding out without a refund"
    );
}
