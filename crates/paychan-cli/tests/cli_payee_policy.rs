//! The payee's policy, checked at open: the longest lifetime, the smallest step and the lowest
//! fee rate it accepts (by default the node's fee estimate), and at least one confirmation of
//! the funding off regtest. A refused open leaves the payer nothing: no channel, no coin spent.

mod common;

use common::cli::{Daemon, Party, PAYCHAN};
use common::node::Node;

#[test]
fn opens_outside_the_payees_policy_are_refused_with_nothing_lost() {
    let node = Node::start();
    let (alice, bob) = (Party::new(&node), Party::new(&node));
    alice.fund(&node);
    let balance = alice.json(&["balance"]);
    let policy = ["--max-lifetime", "100", "--min-step", "3", "--min-feerate", "5"];
    let daemon = Daemon::start(&bob, None, &policy);
    let open = |terms: &[&str]| {
        let capacity = ["open", &daemon.peer(), "--capacity", "100000"];
        alice.fails(&[&capacity[..], terms].concat())
    };
    let err = open(&["--lifetime", "200", "--step", "3", "--feerate", "5"]);
    assert!(err.contains("lifetime 200 blocks") && err.contains("maximum 100"), "{err}");
    let err = open(&["--lifetime", "60", "--step", "2", "--feerate", "5"]);
    assert!(err.contains("step 2 blocks is below the minimum 3"), "{err}");
    let err = open(&["--lifetime", "60", "--step", "3", "--feerate", "4"]);
    assert!(err.contains("fee rate 4 sat/vB is below the minimum 5"), "{err}");
    // Nothing was created or spent.
    assert!(alice.json(&["list"])["channels"].as_array().unwrap().is_empty());
    assert_eq!(alice.json(&["balance"]), balance);
    // Within the policy, the open goes through (a lifetime below the most: the payee's tip may
    // lag the payer's by a block or two while blocks are mined).
    let opened =
        alice.open(&node, &daemon, 100_000, &["--lifetime", "90", "--step", "3", "--feerate", "5"]);
    assert_eq!(alice.channel(opened["channel_id"].as_str().unwrap())["state"], "open");
}

#[test]
fn by_default_the_least_fee_rate_is_the_nodes_estimate() {
    let node = Node::start();
    let (alice, bob) = (Party::new(&node), Party::new(&node));
    alice.fund(&node);
    let daemon = Daemon::start(&bob, None, &[]);
    // On a fresh regtest chain the node has no estimate: paychan's fallback there is 2 sat/vB.
    let capacity = ["open", &daemon.peer(), "--capacity", "100000"];
    let err = alice.fails(&[&capacity[..], &["--lifetime", "60", "--feerate", "1"]].concat());
    assert!(err.contains("fee rate 1 sat/vB is below the minimum 2"), "{err}");
    alice.open(&node, &daemon, 100_000, &["--lifetime", "60", "--feerate", "2"]);
}

#[test]
fn no_confirmation_is_for_regtest_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(PAYCHAN)
        .args(["--network", "testnet", "--datadir"])
        .arg(dir.path())
        .args(["serve", "--min-conf", "0"])
        .output()
        .expect("run paychan");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--min-conf 0 is for regtest only"), "{stderr}");
}
