//! Closing without the other side, from the command line: the payer's refund at R after the
//! payee was killed, and a force-close of the newest commitment by either side.

mod common;

use bitcoin::Txid;
use common::cli::OpenChannel;
use serde_json::json;

const TERMS: [&str; 6] = ["--lifetime", "40", "--step", "2", "--feerate", "2"];

#[test]
fn refund_after_the_payee_is_killed() {
    let OpenChannel { node, payee, payer, mut daemon, channel, open } =
        OpenChannel::new(300_000, &TERMS, &[]);
    let refund = open["refund_locktime"].as_u64().unwrap() as u32;
    payer.json(&["pay", &channel, "5000"]);
    daemon.kill9();

    let err = payer.fails(&["close", &channel]);
    assert!(err.contains("cannot reach the payee"), "{err}");
    assert_eq!(payer.json(&["refund", &channel]), json!({ "final_at_height": refund }));
    node.mine_to(refund - 1);
    assert_eq!(payer.json(&["refund", &channel]), json!({ "final_at_height": refund }));
    node.mine_to(refund);
    let sent = payer.json(&["refund", &channel]);
    let txid: Txid = sent["txid"].as_str().expect("refund broadcast").parse().unwrap();
    node.mine(1);
    let (tx, confirmations, _) = node.get_tx(txid);
    assert_eq!(confirmations, 1);
    assert_eq!(tx.lock_time.to_consensus_u32(), refund);
    // All of it back to the payer, less the fee: the payment never settled.
    let back: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    assert!(back > 300_000 - 1_000 && back < 300_000, "{back}");
    assert_eq!(tx.output.len(), 1);
    // The payee's side cannot close any more, and both see the channel over.
    let err = payee.fails(&["force-close", &channel]);
    assert!(err.contains("closed on chain already"), "{err}");
    assert_eq!(payee.channel(&channel)["state"], "closed on chain");
    assert_eq!(payee.channel(&channel)["blocks_left"], 0);
    // The payer's refund is its own: asking again says it is confirmed.
    assert_eq!(payer.json(&["refund", &channel])["txid"], txid.to_string());
}

#[test]
fn either_side_force_closes_the_newest_commitment_once_final() {
    let OpenChannel { node, daemon: _daemon, payee, payer, channel, .. } =
        OpenChannel::new(300_000, &TERMS, &[]);
    let mut locktime = 0;
    for _ in 0..3 {
        locktime = payer.json(&["pay", &channel, "7000"])["locktime"].as_u64().unwrap() as u32;
    }
    let not_yet = json!({ "final_at_height": locktime });
    assert_eq!(payee.json(&["force-close", &channel]), not_yet);
    assert_eq!(payer.json(&["force-close", &channel]), not_yet);
    node.mine_to(locktime);
    let sent = payer.json(&["force-close", &channel]);
    let txid: Txid = sent["txid"].as_str().expect("commitment broadcast").parse().unwrap();
    // The payee's copy is the same transaction: the node already has it.
    assert_eq!(payee.json(&["force-close", &channel])["txid"], txid.to_string());
    node.mine(1);
    let (tx, confirmations, _) = node.get_tx(txid);
    assert_eq!(confirmations, 1);
    assert_eq!(tx.lock_time.to_consensus_u32(), locktime);
    assert!(tx.output.iter().any(|o| o.value.to_sat() == 21_000), "{tx:?}");
    for party in [&payer, &payee] {
        assert_eq!(party.channel(&channel)["state"], "closed on chain");
        assert_eq!(party.json(&["force-close", &channel])["txid"], txid.to_string());
    }
}
