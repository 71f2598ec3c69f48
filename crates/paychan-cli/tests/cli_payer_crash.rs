//! `kill -9` of the payer at many moments: `pay` killed at 40 points spread over its life, and
//! `open` killed while it waits for the confirmation. Whatever the moment, the next command
//! picks up where the channel was, both sides agree on the total, and the settlement pays it.

mod common;

use std::time::Duration;

use common::cli::{Daemon, OpenChannel, Party};
use common::node::Node;

const SAT: u64 = 1_000;
const KILLS: u64 = 40;

#[test]
fn payer_killed_at_random_moments_agrees_with_the_payee_after() {
    // The default checkpoint policy, every 10,000 sat: nine payments of 1,000 sat in ten are
    // between checkpoints, signed by the payer only.
    let terms = ["--lifetime", "400", "--step", "1", "--feerate", "2"];
    let OpenChannel { node: _node, daemon: _daemon, payee, payer, channel, .. } =
        OpenChannel::new(1_000_000, &terms, &[]);

    // Kill each `pay` at a moment spread over the whole life of the process: before it
    // connects, while it signs and persists, while it waits for the acknowledgement, after. The
    // span is three times a `show` of the channel (a process that opens the data directory and
    // asks the node, as `pay` does before it connects), at least 20 ms: a loaded machine
    // stretches both alike.
    let started = std::time::Instant::now();
    payer.channel(&channel);
    let span = (started.elapsed() * 3).max(Duration::from_millis(20));
    for k in 0..KILLS {
        let mut child = payer
            .command()
            .args(["--json", "pay", &channel, &SAT.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run pay");
        std::thread::sleep(
            span * u32::try_from(k).expect("few") / u32::try_from(KILLS).expect("few"),
        );
        let _ = child.kill();
        child.wait().expect("wait");
    }
    // One more, left alone: it first completes anything left in flight.
    let paid = payer.json(&["pay", &channel, "1"]);
    let total = paid["paid_total_sat"].as_u64().unwrap();
    eprintln!("{} of {KILLS} killed payments went through", (total - 1) / SAT);
    assert_eq!((total - 1) % SAT, 0, "only whole payments count: {total}");
    assert!(total <= KILLS * SAT + 1);
    let show = payee.channel(&channel);
    assert_eq!(show["paid_total_sat"], total);
    assert_eq!(payer.channel(&channel)["paid_total_sat"], total);
    assert_eq!(show["checkpoints"].as_u64().unwrap(), total / 10_000);
    let close = payer.json(&["close", &channel]);
    assert_eq!(close["payee_sat"], total);
}

#[test]
fn an_open_killed_before_the_confirmation_resumes_on_the_next_pay() {
    let node = Node::start();
    let payee = Party::new(&node);
    let payer = Party::new(&node);
    payer.fund(&node);
    let daemon = Daemon::start(&payee, None, &[]);
    let terms = ["--lifetime", "60", "--step", "2", "--feerate", "2"];
    let mut open = payer.spawn_open(&daemon, 100_000, &terms);
    // Wait until the funding is out, then kill `open` while it waits for the confirmation.
    let channel = loop {
        let list = payer.json(&["list"]);
        if list["channels"][0]["state"] == "awaiting channel ready" {
            break list["channels"][0]["channel_id"].as_str().unwrap().to_owned();
        }
        assert!(open.try_wait().unwrap().is_none(), "open returned without a block mined");
        std::thread::sleep(Duration::from_millis(20));
    };
    open.kill().unwrap();
    open.wait().unwrap();
    let err = payer.fails(&["--timeout", "1", "pay", &channel, "1000"]);
    assert!(err.contains("is not ready"), "{err}");
    node.mine(1);
    while payee.channel(&channel)["state"] != "open" {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(payer.json(&["pay", &channel, "1000"])["paid_total_sat"], 1000);
    assert_eq!(payer.channel(&channel)["state"], "open");
}
