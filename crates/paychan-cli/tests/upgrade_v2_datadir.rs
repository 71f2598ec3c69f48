//! A payer's and a payee's data directories written by the release before the workspace (wire
//! version 2, store schema version 3, channel states stored without a version number), with
//! their regtest chain, from the stored fixture `tests/fixtures/v2_datadirs.tar.gz` (made by
//! `tests/fixtures/make_v2_datadirs.sh`). On their channel the payer was buying a file of 200
//! chunks at 100 sat when its `fetch` was killed: the payee holds one payment more than the
//! payer saw acknowledged, and its sale has a chunk out unpaid. This build shows both sides as
//! that release did, reads the sale, and the download resumes, pays each chunk once, and
//! settles.

mod common;

use bitcoin::Txid;
use common::cli::{Daemon, Party};
use common::fixture;
use common::node::Node;
use paychan::store::Store as _;
use serde_json::Value;

/// The file on sale: 200 chunks of 1000 bytes, as the script made it.
fn the_file() -> Vec<u8> {
    (0..800).flat_map(|_| 0..250u8).collect()
}

/// `show`, without what depends on the tip or on where the payee listens now, nor what later
/// builds added (the funding descriptor).
fn stable(mut show: Value) -> Value {
    for moving in ["tip", "blocks_left", "checkpoints_left", "peer", "funding_descriptor"] {
        show.as_object_mut().expect("an object").remove(moving);
    }
    show
}

#[test]
fn a_channel_and_a_file_sale_stored_by_the_release_before_the_workspace_go_on_and_settle() {
    let fixture::Fixture { node, alice, bob, channel, payee_id } =
        fixture::unpack("v2_datadirs.tar.gz");
    let shows = fixture::extract("v2_datadirs.tar.gz", &["alice_show.json", "bob_show.json"]);
    let then = |who: &str| -> Value {
        let text = std::fs::read_to_string(shows.path().join(format!("{who}_show.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };

    let node = Node::start_in(node);
    let payee = Party::existing(&node, bob, &payee_id);
    let payer = Party::existing(&node, alice, "");

    // Both sides read as that release wrote them.
    let (payer_then, payee_then) = (then("alice"), then("bob"));
    assert_eq!(stable(payer.channel(&channel)), stable(payer_then.clone()));
    assert_eq!(stable(payee.channel(&channel)), stable(payee_then.clone()));
    assert!(payer_then["checkpoints"].as_u64().unwrap() >= 1, "{payer_then}");

    // The payee's sale is read back: the chunks paid for, and the one out unpaid.
    let store =
        paychan_sqlite::SqliteStore::open(&payee.datadir().join(paychan_sqlite::STORE_FILE))
            .unwrap();
    let record = store.channel(channel.parse().unwrap()).unwrap().unwrap();
    drop(store);
    let sale = record.service.expect("the sale is stored with the channel");
    assert_eq!(sale["name"], "data.bin");
    assert_eq!(sale["paid_chunks"], payee_then["payments"], "one payment per chunk: {sale}");
    assert_eq!(sale["unpaid_since"], payee_then["paid_total_sat"], "{sale}");

    // Served again, the download resumes on the channel: each chunk is paid for once, so the
    // payee gets exactly the file's price, and the channel settles.
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("data.bin"), the_file()).unwrap();
    let dir = files.path().to_str().unwrap();
    let serve = ["--serve-dir", dir, "--price-per-chunk", "100", "--chunk-size", "1000"];
    let daemon = Daemon::start(&payee, None, &serve);
    assert_eq!(daemon.node_id, payee_id);
    fixture::move_peer(payer.datadir(), &channel, &daemon.peer());
    let out = payer.datadir().join("data.out");
    let fetch = ["fetch", &daemon.peer(), "data.bin", "--out", out.to_str().unwrap()];
    let summary = payer.json(&[&fetch[..], &["--channel", &channel]].concat());
    assert_eq!(std::fs::read(&out).unwrap(), the_file(), "{summary}");
    assert_eq!(summary["payee_sat"], 200 * 100, "{summary}");
    let txid: Txid = summary["settlement_txid"].as_str().unwrap().parse().unwrap();
    node.mine(1);
    let (tx, confirmations, _) = node.get_tx(txid);
    assert_eq!(confirmations, 1);
    assert!(tx.output.iter().any(|o| o.value.to_sat() == 200 * 100));
    drop(daemon);
}
