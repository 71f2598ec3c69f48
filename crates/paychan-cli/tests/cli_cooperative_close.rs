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

    // The default checkpoint policy: every 1% of the capacity (2,000 sat) paid. A payment stays
    // on its rung until a checkpoint moves the next ones down; `--checkpoint` asks for one.
    let mut total = 0;
    let payments = [
        (1_000u64, &[][..], refund - 2, false),
        (2_500, &[][..], refund - 2, true),
        (1, &["--checkpoint"][..], refund - 4, true),
        (40_000, &[][..], refund - 6, true),
        (7, &[][..], refund - 8, false),
    ];
    for (sat, flags, locktime, checkpoint) in payments {
        let amount = sat.to_string();
        let paid = payer.json(&[&["pay", &channel, &amount][..], flags].concat());
        total += sat;
        assert_eq!(paid["channel_id"], channel.as_str());
        assert_eq!(paid["paid_total_sat"], total);
        assert_eq!(
            (&paid["locktime"], &paid["checkpoint"]),
            (&locktime.into(), &checkpoint.into())
        );
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
        assert_eq!((&show["payments"], &show["checkpoints"]), (&5.into(), &3.into()));
        assert_eq!(show["checkpoint_locktime"], refund - 6);
        assert_eq!(show["checkpoint_paid_sat"], total - 7);
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

#[test]
fn one_sat_payments_from_zero_then_close_mine_exact_amounts() {
    let node = Node::start();
    let (payee, payer) = (Party::new(&node), Party::new(&node));
    payer.fund(&node);
    let daemon = Daemon::start(&payee, None, &[]);
    // The default terms.
    let open = payer.open(&node, &daemon, 100_000, &["--feerate", "2"]);
    let channel = open["channel_id"].as_str().unwrap().to_owned();
    for total in 1..=5u64 {
        let paid = payer.json(&["pay", &channel, "1"]);
        assert_eq!((&paid["paid_total_sat"], &paid["checkpoint"]), (&total.into(), &false.into()));
    }
    assert_eq!(payee.channel(&channel)["paid_total_sat"], 5);
    let close = payer.json(&["close", &channel]);
    // 5 sat is below the payee's dust limit (294 sat): no output for it, it goes to the fee.
    assert_eq!(close["payee_sat"], 0);
    let txid: Txid = close["settlement_txid"].as_str().unwrap().parse().unwrap();
    node.mine(1);
    let (tx, confirmations, vsize) = node.get_tx(txid);
    assert_eq!((confirmations, tx.output.len()), (1, 1));
    let payer_sat = close["payer_sat"].as_u64().unwrap();
    assert_eq!(tx.output[0].value.to_sat(), payer_sat);
    let fee = node.fee(txid).to_sat();
    assert_eq!(payer_sat + fee, 100_000, "the capacity, all accounted for");
    // The fee is the agreed rate on the signed size (up to 2 vbytes more: the engine counts the
    // largest signatures), plus the 5 sat paid.
    assert!((2 * vsize..=2 * (vsize + 2)).contains(&(fee - 5)), "fee {fee} for {vsize} vB");
}
