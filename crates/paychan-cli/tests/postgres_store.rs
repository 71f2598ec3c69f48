//! The payee's channels in PostgreSQL (`serve --store postgres://...`), against a regtest node
//! and a PostgreSQL server of the test's own: payments through one front end, `kill -9` of it,
//! and another front end (the same seed, another data directory and port) taking over from the
//! database: every acknowledged payment is there, the channel goes on, and it settles with
//! exactly the amounts paid.

mod common;

use std::path::Path;

use common::cli::{Daemon, Party};
use common::fixture::move_peer;
use common::node::Node;
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
