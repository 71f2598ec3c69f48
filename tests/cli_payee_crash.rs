//! `kill -9` of the payee daemon, three times, in the middle of a stream of payments from the
//! command line.
//! After a restart the two sides agree, and the settlement pays exactly what was acknowledged:
//! every `pay` that succeeded, plus a payment reported in flight (which the next command
//! completes), and nothing for a `pay` that failed because the payee was unreachable.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::cli::{Daemon, Party};
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
    let node = Node::start();
    let payee = Party::new(&node);
    let payer = Party::new(&node);
    payer.fund(&node);
    let mut daemon = Daemon::start(&payee, None, &[]);
    let listen = daemon.listen.clone();
    let terms = ["--lifetime", "400", "--step", "1", "--feerate", "2"];
    let open = payer.open(&node, &daemon, 1_000_000, &terms);
    let channel = open["channel_id"].as_str().unwrap().to_owned();

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
    assert_eq!(payee.channel(&channel)["paid_total_sat"], expected);
    let close = payer.json(&["close", &channel]);
    assert_eq!(close["payee_sat"], expected);
    let txid = close["settlement_txid"].as_str().unwrap().parse().unwrap();
    node.mine(1);
    let (tx, confirmations, _) = node.get_tx(txid);
    assert_eq!(confirmations, 1);
    assert!(tx.output.iter().any(|out| out.value.to_sat() == expected), "{tx:?}");
}
