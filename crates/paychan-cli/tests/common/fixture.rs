//! Data directories written by earlier releases, stored as fixtures (`tests/fixtures/*.tar.gz`,
//! each made by the script beside it): a payer's (alice), a payee's (bob), and their regtest
//! node's, with the id of their channel and the payee's node id.

use std::path::Path;
use std::process::Command;

/// An unpacked fixture, each data directory in a temporary directory of its own.
pub struct Fixture {
    /// The regtest node's data directory.
    pub node: tempfile::TempDir,
    /// The payer's.
    pub alice: tempfile::TempDir,
    /// The payee's.
    pub bob: tempfile::TempDir,
    /// Their channel.
    pub channel: String,
    /// The payee's node id.
    pub payee_id: String,
}

/// Unpacks `tests/fixtures/{name}`.
pub fn unpack(name: &str) -> Fixture {
    let [node, alice, bob] = ["node", "alice", "bob"].map(|part| {
        let dir = tempfile::tempdir().unwrap();
        untar(name, dir.path(), &[part], 1);
        dir
    });
    let ids = extract(name, &["channel_id", "payee_node_id"]);
    let read = |name: &str| std::fs::read_to_string(ids.path().join(name)).unwrap();
    let (channel, payee_id) =
        (read("channel_id").trim().into(), read("payee_node_id").trim().into());
    Fixture { node, alice, bob, channel, payee_id }
}

/// Extracts the files `what` of `tests/fixtures/{name}` into a temporary directory.
pub fn extract(name: &str, what: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    untar(name, dir.path(), what, 0);
    dir
}

fn untar(name: &str, dir: &Path, what: &[&str], strip: u32) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
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
}

/// Points the payer's record of `channel` at the payee's new address `peer` (the payee listens
/// elsewhere now), with SQL of the fixture's own schema.
pub fn move_peer(payer_datadir: &Path, channel: &str, peer: &str) {
    let store = rusqlite::Connection::open(payer_datadir.join("paychan.sqlite")).unwrap();
    let moved =
        store.execute("UPDATE channels SET peer = ?1 WHERE id = ?2", [peer, channel]).unwrap();
    assert_eq!(moved, 1);
}
