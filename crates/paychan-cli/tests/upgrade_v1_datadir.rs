//! A payer's and a payee's data directories written by the release before checkpoints (wire
//! version 1, store schema version 2), with their regtest chain, from the stored fixture
//! `tests/fixtures/v1_datadirs.tar.gz` (made by `tests/fixtures/make_v1_datadirs.sh`): this
//! build opens them, and their channel, three payments of 1,000 sat in, goes on and settles.

mod common;

use bitcoin::Txid;
use common::cli::{Daemon, Party};
use common::fixture;
use common::node::Node;

#[test]
fn a_channel_stored_by_the_release_before_checkpoints_goes_on_and_settles() {
    let fixture::Fixture { node, alice, bob, channel, payee_id } =
        fixture::unpack("v1_datadirs.tar.gz");
    let node = Node::start_in(node);
    let payee = Party::existing(&node, bob, &payee_id);
    let payer = Party::existing(&node, alice, "");
    let daemon = Daemon::start(&payee, None, &[]);
    assert_eq!(daemon.node_id, payee_id);
    fixture::move_peer(payer.datadir(), &channel, &daemon.peer());

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
