//! The command line end to end, payer and payee as separate processes on a regtest node: init,
//! address, balance, serve, open, pay, list, show, close, and the settlement on chain.

mod common;

use bitcoin::Txid;
use common::cli::{Daemon, Party};
use common::node::Node;
use paychan::chain::{Chain, TxStatus};

#[test]
fn open_pay_close_through_the_command_line() {
    let node = Node::start();
    let payee = Party::new(&node);
    let payer = Party::new(&node);
    assert_eq!(payer.json(&["balance"])["confirmed_sat"], 0);
    payer.fund(&node);
    let balance = payer.json(&["balance"])["confirmed_sat"].as_u64().unwrap();
    assert!(balance > 0);
    let daemon = Daemon::start(&payee, None, &[]);
    assert_eq!(daemon.node_id, payee.node_id);

    let tip = node.height();
    let open =
        payer.open(&node, &daemon, 200_000, &["--lifetime", "80", "--step", "2", "--feerate", "2"]);
    let channel = open["channel_id"].as_str().unwrap().to_owned();
    assert_eq!(open["capacity_sat"], 200_000);
    let refund = open["refund_locktime"].as_u64().unwrap();
    assert!((u64::from(tip) + 80..=u64::from(tip) + 80 + 60).contains(&refund), "{open}");
    let funding: Txid = open["funding_txid"].as_str().unwrap().parse().unwrap();
    assert!(matches!(node.chain.tx_status(funding).unwrap(), TxStatus::Confirmed(_)));

    let mut total = 0;
    for (k, sat) in [1_000u64, 2_500, 1, 40_000].into_iter().enumerate() {
        let paid = payer.json(&["pay", &channel, &sat.to_string()]);
        total += sat;
        assert_eq!(paid["channel_id"], channel.as_str());
        assert_eq!(paid["paid_total_sat"], total);
        assert_eq!(paid["locktime"], refund - 2 * (k as u64 + 1));
    }
    for (party, role) in [(&payer, "payer"), (&payee, "payee")] {
        let list = party.json(&["list"]);
        let entry = &list["channels"][0];
        assert_eq!(entry["channel_id"], channel.as_str());
        assert_eq!(entry["role"], role);
        assert_eq!(entry["state"], "open");
        assert_eq!(entry["paid_total_sat"], total);
        assert_eq!(entry["refund_locktime"], refund);
        let show = party.channel(&channel);
        assert_eq!(show["current_locktime"], refund - 8);
        assert_eq!(show["blocks_left"], refund - 8 - u64::from(node.height()));
    }

    let close = payer.json(&["close", &channel]);
    assert_eq!(close["payee_sat"], total);
    let txid: Txid = close["settlement_txid"].as_str().unwrap().parse().unwrap();
    node.mine(1);
    let (tx, confirmations, _) = node.get_tx(txid);
    assert_eq!(confirmations, 1);
    let payer_sat = close["payer_sat"].as_u64().unwrap();
    let outputs: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    assert_eq!(outputs, payer_sat + total);
    assert!(tx.output.iter().any(|o| o.value.to_sat() == total));
    for party in [&payer, &payee] {
        assert_eq!(party.channel(&channel)["state"], "settled");
    }
    // Closing again broadcasts the same settlement: a script may retry. So may the payee's
    // force-close, the settlement being the newest state.
    assert_eq!(payer.json(&["close", &channel])["settlement_txid"], txid.to_string());
    assert_eq!(payee.json(&["force-close", &channel])["txid"], txid.to_string());
}
