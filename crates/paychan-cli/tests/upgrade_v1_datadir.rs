//! A payer's and a payee's data directories written by the release before checkpoints (wire
//! version 1, store schema version 2), with their regtest chain, from the stored fixture
//! `tests/fixtures/v1_datadirs.tar.gz` (made by `tests/fixtures/make_v1_datadirs.sh`): this
//! build opens them, and their channel, three payments of 1,000 sat in, goes on and settles.

mod common;

use std::path::Path;
use std::process::Command;

use bitcoin::Txid;
use common::cli::{Daemon, Party};
use common::node::Node;

/// Unpacks the fixture: the node's data directory, the payer's (alice), the payee's (bob), each
/// in a temporary directory of its own, then the channel id and the payee's node id.
fn unpack() -> (tempfile::TempDir, tempfile::TempDir, tempfile::TempDir, String, String) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1_datadirs.tar.gz");
    let untar = |dir: &Path, what: &[&str], strip: u32| {
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&fixture)
            .arg("-C")
            .arg(dir)
            .arg(format!("--strip-components={strip}"))
            .args(what)
            .status()
            .expect("run tar");
        assert!(status.success(), "unpacking {what:?} from {}", fixture.display());
    };
    let [node, alice, bob] = ["node", "alice", "bob"].map(|name| {
        let dir = tempfile::tempdir().unwrap();
        untar(dir.path(), &[name], 1);
        dir
    });
    let ids = tempfile::tempdir().unwrap();
    untar(ids.path(), &["channel_id", "payee_node_id"], 0);
    let read = |name: &str| std::fs::read_to_string(ids.path().join(name)).unwrap();
    (node, alice, bob, read("channel_id").trim().into(), read("payee_node_id").trim().into())
}

#[test]
fn a_channel_stored_by_the_release_before_checkpoints_goes_on_and_settles() {
    let (node_dir, alice_dir, bob_dir, channel, payee_id) = unpack();
    let node = Node::start_in(node_dir);
    let payee = Party::existing(&node, bob_dir, &payee_id);
    let payer = Party::existing(&node, alice_dir, "");
    let daemon = Daemon::start(&payee, None, &[]);
    assert_eq!(daemon.node_id, payee_id);
    // The payee listens elsewhere now: point the payer's record of the channel at it.
    let store = rusqlite::Connection::open(payer.datadir().join("paychan.sqlite")).unwrap();
    let moved = store
        .execute("UPDATE channels SET peer = ?1 WHERE id = ?2", [&daemon.peer(), &channel])
        .unwrap();
    assert_eq!(moved, 1);
    drop(store);

    // Both read the old states: three payments, each one signed by both (a checkpoint).
    for party in [&payer, &payee] {
        let show = party.channel(&channel);
        assert_eq!(show["state"], "open", "{show}");
        assert_eq!((&show["paid_total_sat"], &show["payments"]), (&3000.into(), &3.into()));
        assert_eq!(show["checkpoints"], 3);
        assert_eq!(show["checkpoint_policy"]["every_payments"], 1);
    }
    let refund = payer.channel(&channel)["refund_locktime"].as_u64().unwrap();
    let step = 6;

    // It goes on: a payment on the next rung, as the old release would have made it.
    let paid = payer.json(&["pay", &channel, "500"]);
    assert_eq!((&paid["paid_total_sat"], &paid["checkpoint"]), (&3500.into(), &true.into()));
    assert_eq!(paid["locktime"], refund - 4 * step);
    assert_eq!(payee.channel(&channel)["payments"], 4);

    // And settles, exactly.
    let close = payer.json(&["close", &channel]);
    assert_eq!(close["payee_sat"], 3500);
    let txid: Txid = close["settlement_txid"].as_str().unwrap().parse().unwrap();
    node.mine(1);
    let (tx, confirmations, _) = node.get_tx(txid);
    assert_eq!(confirmations, 1);
    assert!(tx.output.iter().any(|o| o.value.to_sat() == 3500));
    assert_eq!(node.fee(txid).to_sat() + close["payer_sat"].as_u64().unwrap() + 3500, 100_000);
    drop(daemon);
}
