//! The payee's channels in PostgreSQL (`serve --store postgres://...`), against a regtest node
//! and a PostgreSQL server of the test's own, with the real binary:
//! - payments through one front end, `kill -9` of it, and another front end (the same seed,
//!   another data directory and port) taking over from the database: every acknowledged payment
//!   is there, the channel goes on, and it settles with exactly the amounts paid;
//! - two front ends at once: payers on either, a payer moving between them and finding its
//!   newest state, two different payments of the same number raced to both (only one is
//!   accepted each time), and one front end killed in the middle of a payer's stream of
//!   payments while the payer goes on through the other; every channel settles with exactly the
//!   acknowledged amounts;
//! - the front end that leads the chain watcher killed: the other takes the lease and, its
//!   payer gone, broadcasts the newest commitment as soon as it is final.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use common::cli::{Daemon, Party};
use common::fixture::move_peer;
use common::hand::Hand;
use common::node::Node;
use paychan::wire::{ChannelId, Pay};
use paychan_http::headers;
use paychan_testkit::postgres::PgServer;

/// Copies a data directory (the seed and the wallet's database) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_front_end_killed_is_replaced_by_another_on_the_same_database() {
    let pg = PgServer::start();
    let url = pg.database("payee");
    let node = Node::start();
    let payee = Party::new(&node);
    let payer = Party::new(&node);
    payer.fund(&node);
    let store = ["--store", url.as_str()];
    let mut first = Daemon::start(&payee, None, &store);
    let open = payer.open(&node, &first, 100_000, &[]);
    let channel = open["channel_id"].as_str().unwrap().to_owned();
    for i in 1..=20u64 {
        let paid = payer.json(&["pay", &channel, "100"]);
        assert_eq!(paid["paid_total_sat"].as_u64(), Some(100 * i));
    }
    first.kill9();

    // Another front end: the payee's seed and wallet in a data directory of its own, the
    // channels from the database.
    let second_dir = tempfile::tempdir().unwrap();
    copy_dir(payee.datadir(), second_dir.path());
    let second_payee = Party::existing(&node, second_dir, &payee.node_id);
    let second = Daemon::start(&second_payee, None, &store);
    assert_eq!(second.node_id, first.node_id, "the same node key");
    move_peer(payer.datadir(), &channel, &second.peer());
    for i in 21..=30u64 {
        let paid = payer.json(&["pay", &channel, "100"]);
        assert_eq!(paid["paid_total_sat"].as_u64(), Some(100 * i), "{}", second.log());
    }
    let close = payer.json(&["close", &channel]);
    let txid = close["settlement_txid"].as_str().unwrap().parse().unwrap();
    node.mine(1);
    assert!(node.is_confirmed(txid));
    assert_eq!(close["payee_sat"].as_u64(), Some(3000));
    drop(pg);
}

const PRICES: &str = r#"
[[route]]
path = "/a/*"
per_request_sat = 3

[[route]]
path = "/b/*"
per_request_sat = 4
"#;

#[test]
fn two_front_ends_share_the_channels_and_never_both_take_one_update() {
    let pg = PgServer::start();
    let url = pg.database("payees");
    let node = Node::start();
    let payee = Party::new(&node);
    let second_dir = tempfile::tempdir().unwrap();
    copy_dir(payee.datadir(), second_dir.path());
    let second_payee = Party::existing(&node, second_dir, &payee.node_id);
    let prices = tempfile::tempdir().unwrap();
    let prices_file = prices.path().join("prices.toml");
    std::fs::write(&prices_file, PRICES).unwrap();
    let args = |upstream: &str| -> Vec<String> {
        ["--store", &url, "--http-listen", "127.0.0.1:0", "--upstream", upstream]
            .into_iter()
            .chain(["--prices", prices_file.to_str().unwrap()])
            .map(String::from)
            .collect()
    };
    // The gateways forward to a port nobody listens on: a 502 after the payment is taken is
    // enough to tell which took it.
    let upstream = "http://127.0.0.1:9";
    let args = args(upstream);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Daemon::start(&payee, None, &args);
    let b = Daemon::start(&second_payee, None, &args);
    assert_eq!(a.node_id, b.node_id);

    // Payers on either front end.
    let (alice, bob) = (Party::new(&node), Party::new(&node));
    alice.fund(&node);
    bob.fund(&node);
    let alice_channel =
        alice.open(&node, &a, 100_000, &[])["channel_id"].as_str().unwrap().to_owned();
    let bob_channel = bob.open(&node, &b, 100_000, &[])["channel_id"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        alice.json(&["pay", &alice_channel, "100"]);
        bob.json(&["pay", &bob_channel, "100"]);
    }
    // Alice moves to the other front end and back: each finds her newest state.
    move_peer(alice.datadir(), &alice_channel, &b.peer());
    for i in 6..=10u64 {
        assert_eq!(
            alice.json(&["pay", &alice_channel, "100"])["paid_total_sat"].as_u64(),
            Some(100 * i)
        );
    }
    move_peer(alice.datadir(), &alice_channel, &a.peer());
    assert_eq!(alice.json(&["pay", &alice_channel, "100"])["paid_total_sat"].as_u64(), Some(1100));

    // Two payments of the same number, different amounts, raced to the two front ends: only
    // one is taken each time.
    let bob_id: ChannelId = bob_channel.parse().unwrap();
    let mut bob_paid = 500;
    for round in 0..6 {
        let mut hand = Hand::load(&bob, bob_id);
        let tip = node.height();
        let three = hand.pay(3, tip);
        hand.payer.abandon_pending();
        let four = hand.pay(4, tip);
        hand.payer.abandon_pending();
        assert_eq!(three.update, four.update);
        let (gw_a, gw_b) = (http_of(&a), http_of(&b));
        let (first, second) = if round % 2 == 0 { (gw_a, gw_b) } else { (gw_b, gw_a) };
        let t3 = std::thread::spawn(move || raw_get(&first, "/a/x", &three));
        let t4 = std::thread::spawn(move || raw_get(&second, "/b/x", &four));
        let (r3, r4) = (t3.join().unwrap(), t4.join().unwrap());
        // 502: taken, the upstream unreachable. Anything else: refused.
        let taken: Vec<_> = [(&r3, 3), (&r4, 4)].into_iter().filter(|(r, _)| r.0 == 502).collect();
        assert_eq!(taken.len(), 1, "round {round}: {:?} and {:?}", r3, r4);
        let (response, amount) = taken[0];
        assert!(!response.1.contains_key("paychan-ack"), "a 502 carries no ack");
        // Bob learns which one the payee holds as he reconnects: `paychan pay` reconciles.
        bob_paid += amount;
        let paid = bob.json(&["pay", &bob_channel, "1"]);
        bob_paid += 1;
        assert_eq!(paid["paid_total_sat"].as_u64(), Some(bob_paid), "round {round}");
    }

    // A front end killed in the middle of Alice's stream of payments: she goes on through the
    // other, and her channel settles at exactly the total acknowledged last.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stream = {
        let (cmd, channel) = (alice.command(), alice_channel.clone());
        let progress = std::sync::Arc::clone(&progress);
        std::thread::spawn(move || stream_payments(cmd, &channel, &progress))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while progress.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        assert!(std::time::Instant::now() < deadline, "the stream did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    a.kill9();
    let before = stream.join().unwrap();
    assert!(before >= 1100, "{before} sat acknowledged before the kill");
    move_peer(alice.datadir(), &alice_channel, &b.peer());
    let mut alice_paid = 0;
    for _ in 0..4 {
        alice_paid =
            alice.json(&["pay", &alice_channel, "100"])["paid_total_sat"].as_u64().unwrap();
    }
    // The one cut off by the kill was taken or not; either way it is settled once, and the
    // totals only grew by what was acknowledged.
    assert!((before + 400..=before + 500).contains(&alice_paid), "{before} then {alice_paid}");
    for (payer, channel, paid) in
        [(&alice, &alice_channel, alice_paid), (&bob, &bob_channel, bob_paid)]
    {
        move_peer(payer.datadir(), channel, &b.peer());
        let close = payer.json(&["close", channel]);
        let txid = close["settlement_txid"].as_str().unwrap().parse().unwrap();
        node.mine(1);
        assert!(node.is_confirmed(txid));
        assert_eq!(close["payee_sat"].as_u64(), Some(paid), "{channel}");
    }
    drop(pg);
}

/// Pays 100 sat at a time with `paychan pay` (`cmd`, the payer's command) until a payment
/// fails, counting them in `progress`; returns the total acknowledged last.
fn stream_payments(
    cmd: std::process::Command,
    channel: &str,
    progress: &std::sync::atomic::AtomicU64,
) -> u64 {
    let mut acknowledged = 0;
    for _ in 0..200 {
        let mut pay = std::process::Command::new(cmd.get_program());
        pay.envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
        let out = pay.args(["--json", "--timeout", "5", "pay", channel, "100"]).output().unwrap();
        if !out.status.success() {
            return acknowledged;
        }
        let paid: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        acknowledged = paid["paid_total_sat"].as_u64().unwrap();
        progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    panic!("the front end was not killed");
}

fn http_of(d: &Daemon) -> String {
    d.announced["http"].as_str().expect("an http address").to_owned()
}

/// `GET path` with payment `pay`, by hand: the status and the headers.
fn raw_get(addr: &str, path: &str, pay: &Pay) -> (u16, HashMap<String, String>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
    let payment = headers::encode_payment(pay);
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nPaychan-Payment: {}\r\n\r\n",
        payment.to_str().unwrap()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let mut lines = text.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// Waits until `daemon`'s log says `what`.
fn log_says(daemon: &Daemon, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !daemon.log().contains(what) {
        assert!(std::time::Instant::now() < deadline, "never logged {what:?}: {}", daemon.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_watcher_leader_killed_the_other_front_end_broadcasts_the_newest_commitment() {
    let pg = PgServer::start();
    let url = pg.database("watch");
    let node = Node::start();
    let payee = Party::new(&node);
    let second_dir = tempfile::tempdir().unwrap();
    copy_dir(payee.datadir(), second_dir.path());
    let second_payee = Party::existing(&node, second_dir, &payee.node_id);
    let store = ["--store", url.as_str()];
    let mut leader = Daemon::start(&payee, None, &store);
    log_says(&leader, "leading the chain watcher");
    let other = Daemon::start(&second_payee, None, &store);
    log_says(&other, "another front end watches the chain");

    // Payments through the front end that does not watch: the watcher's copy of the channel is
    // behind, and must read the newest from the database.
    let payer = Party::new(&node);
    payer.fund(&node);
    let terms = ["--lifetime", "40", "--step", "2", "--checkpoint-every", "1"];
    let open = payer.open(&node, &other, 100_000, &terms);
    let channel = open["channel_id"].as_str().unwrap().to_owned();
    let mut newest = 0;
    for _ in 0..3 {
        newest = payer.json(&["pay", &channel, "1000"])["locktime"].as_u64().unwrap() as u32;
    }
    node.mine(1);
    // The leader dies; the payer vanishes too.
    leader.kill9();
    let killed = std::time::Instant::now();
    log_says(&other, "leading the chain watcher");
    let took = killed.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "took over in {took:?}");
    node.mine_to(newest - 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(node.mempool().is_empty(), "nothing broadcast before the newest commitment is final");
    node.mine(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let txid = loop {
        if let Some(txid) = node.mempool().first() {
            break *txid;
        }
        assert!(std::time::Instant::now() < deadline, "no broadcast: {}", other.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    node.mine(1);
    let (tx, ..) = node.get_tx(txid);
    assert_eq!(tx.lock_time.to_consensus_u32(), newest, "the newest commitment");
    assert!(tx.output.iter().any(|o| o.value.to_sat() == 3000), "pays the payee 3000 sat: {tx:?}");
    drop(pg);
}
