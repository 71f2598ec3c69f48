//! Closes that pay too little once fees rise, on a real node: the channel's transactions pay
//! the 2 sat/vB agreed at open, then the node restarts with `-minrelaytxfee` at 10 sat/vB, so
//! that it refuses each of them alone. The side that needs the close confirmed bumps it by
//! child-pays-for-parent from its wallet, submitted with it as a package.

mod common;

use std::time::{Duration, Instant};

use bitcoin::{Amount, Transaction, Txid};
use common::cli::{Daemon, Party, Watch};
use common::node::Node;
use serde_json::Value;

/// 10 sat/vB, five times what the channels pay.
const HIGH_RELAY_FEE: &str = "-minrelaytxfee=0.00010000";
const TERMS: [&str; 6] = ["--lifetime", "40", "--step", "4", "--feerate", "2"];

/// Waits until the mempool holds a close of the channel funded by `funding` and a child of it:
/// returns them, the close first.
fn package_in_mempool(
    node: &Node,
    funding: Txid,
    within: Duration,
) -> Option<(Transaction, Transaction)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let txs: Vec<Transaction> = node.mempool().into_iter().map(|t| node.get_tx(t).0).collect();
        let close = txs.iter().find(|t| t.input.iter().any(|i| i.previous_output.txid == funding));
        if let Some(close) = close {
            let txid = close.compute_txid();
            let child = txs.iter().find(|t| t.input.iter().any(|i| i.previous_output.txid == txid));
            if let Some(child) = child {
                return Some((close.clone(), child.clone()));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// The fee rate of `close` and `child` together, in sat/vB, as the node computes their fees.
fn package_rate(node: &Node, close: &Transaction, child: &Transaction) -> f64 {
    let (c, k) = (close.compute_txid(), child.compute_txid());
    let fees = node.fee(c) + node.fee(k);
    let vsize = node.get_tx(c).2 + node.get_tx(k).2;
    fees.to_sat() as f64 / vsize as f64
}

/// A node, a payee with its daemon and a funded payer, and a channel of 200,000 sat between
/// them; the payee's wallet gets coins too if `payee_coins`.
struct Setup {
    node: Node,
    payee: Party,
    payer: Party,
    daemon: Daemon,
    channel: String,
    funding: Txid,
}

fn setup(payee_coins: bool) -> Setup {
    let node = Node::start();
    let (payee, payer) = (Party::new(&node), Party::new(&node));
    payer.fund(&node);
    if payee_coins {
        payee.fund(&node);
    }
    let daemon = Daemon::start(&payee, None, &[]);
    let open = payer.open(&node, &daemon, 200_000, &TERMS);
    let channel = open["channel_id"].as_str().unwrap().to_owned();
    let funding = open["funding_txid"].as_str().unwrap().parse().unwrap();
    Setup { node, payee, payer, daemon, channel, funding }
}

/// Restarts the node with the high relay fee, the payee's daemon stopped meanwhile (it reads
/// the node's RPC cookie once, and the node writes a new one), and starts the daemon again on
/// the same address.
fn raise_relay_fee(node: &mut Node, payee: &Party, daemon: Daemon) -> Daemon {
    let listen = daemon.listen.clone();
    drop(daemon);
    node.restart_with(&[HIGH_RELAY_FEE]);
    Daemon::start(payee, Some(&listen), &[])
}

fn confirmed_height(node: &Node, txid: Txid) -> u32 {
    let (_, confirmations, _) = node.get_tx(txid);
    assert!(confirmations >= 1, "{txid} is not confirmed");
    node.height() + 1 - confirmations
}

#[test]
fn the_payees_commitment_below_the_relay_minimum_confirms_by_cpfp_and_the_older_state_is_refused() {
    // The payee's 2,000 sat output cannot pay the bump alone: a wallet coin joins it.
    let Setup { mut node, payee, payer, daemon, channel, funding } = setup(true);
    // A checkpoint at 1,000 sat, the payer's way out; then a payment on the next rung, the
    // payee's newest state, final `step` blocks before that checkpoint.
    payer.json(&["pay", &channel, "1000", "--checkpoint"]);
    payer.json(&["pay", &channel, "1000"]);
    let show = payee.channel(&channel);
    let newest = show["current_locktime"].as_u64().unwrap() as u32;
    let checkpoint = payer.channel(&channel)["checkpoint_locktime"].as_u64().unwrap() as u32;
    assert_eq!(checkpoint, newest + 4, "{show}");

    // The payer vanishes; fees rise.
    let daemon = raise_relay_fee(&mut node, &payee, daemon);
    // Nothing is final before the newest state's locktime.
    node.mine_to(newest - 1);
    let mut package = None;
    while package.is_none() {
        assert!(
            node.height() < checkpoint,
            "no bumped commitment before the checkpoint's locktime"
        );
        node.mine(1);
        package = package_in_mempool(&node, funding, Duration::from_secs(3));
    }
    let (commitment, child) = package.unwrap();
    // The close is the payee's newest commitment, refused alone: 2 sat/vB.
    assert_eq!(commitment.lock_time.to_consensus_u32(), newest, "{}", daemon.log());
    assert!(child.input.len() >= 2, "the payee's output and a wallet coin: {child:?}");
    node.mine(1);
    let at = confirmed_height(&node, commitment.compute_txid());
    assert!(at <= newest + 4, "confirmed at {at}, within the step after {newest}");
    let rate = package_rate(&node, &commitment, &child);
    assert!(rate >= 10.0, "the package pays {rate} sat/vB");
    assert!(commitment.output.iter().any(|o| o.value == Amount::from_sat(2_000)));

    // The payer's checkpoint, an older state, is refused once final: the funding is spent.
    node.mine_to(checkpoint);
    let refused = payer.fails(&["force-close", &channel]);
    assert!(refused.contains("closed on chain already"), "{refused}");
    drop(daemon);
}

#[test]
fn a_settlement_below_the_relay_minimum_is_bumped_by_the_payee() {
    let Setup { mut node, payee, payer, daemon, channel, funding } = setup(true);
    payer.json(&["pay", &channel, "30000"]);
    let daemon = raise_relay_fee(&mut node, &payee, daemon);

    // Both sign the settlement; the node refuses it alone, so `close` says so. The payee's
    // daemon bumps it at once.
    let refused = payer.fails(&["close", &channel]);
    assert!(refused.contains("fee"), "{refused}");
    let (settlement, child) = package_in_mempool(&node, funding, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no bumped settlement; log: {}", daemon.log()));
    assert_eq!(settlement.lock_time.to_consensus_u32(), 0);
    node.mine(1);
    confirmed_height(&node, settlement.compute_txid());
    confirmed_height(&node, child.compute_txid());
    assert!(package_rate(&node, &settlement, &child) >= 10.0);
    // The payee got exactly what was paid.
    assert!(settlement.output.iter().any(|o| o.value == Amount::from_sat(30_000)));
    drop(daemon);
}

#[test]
fn the_payers_refund_below_the_relay_minimum_is_bumped_by_its_watch() {
    let Setup { mut node, payer, daemon, channel, funding, .. } = setup(false);
    let refund: Value = payer.channel(&channel)["refund_locktime"].clone();
    let refund = refund.as_u64().unwrap() as u32;
    // The payee vanishes, with nothing paid: the refund is the payer's way out.
    drop(daemon);
    node.restart_with(&[HIGH_RELAY_FEE]);
    let watch = Watch::start(&payer, &[&channel]);
    node.mine_to(refund);
    let mut bumped = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while bumped.is_none() {
        assert!(Instant::now() < deadline, "the watch did not bump the refund");
        if let Some(event) = watch.quiet_for(Duration::from_secs(2)) {
            if event["event"] == "bumped" {
                bumped = Some(event);
            }
        }
    }
    let bumped = bumped.unwrap();
    assert_eq!(bumped["kind"], "refund", "{bumped}");
    let (refund_tx, child) = package_in_mempool(&node, funding, Duration::from_secs(5)).unwrap();
    assert_eq!(refund_tx.compute_txid().to_string(), bumped["txid"].as_str().unwrap());
    assert_eq!(child.compute_txid().to_string(), bumped["child_txid"].as_str().unwrap());
    node.mine(1);
    let at = confirmed_height(&node, refund_tx.compute_txid());
    assert_eq!(at, refund + 1, "confirmed in the first block it could be in");
    assert!(package_rate(&node, &refund_tx, &child) >= 10.0);
    drop(watch);
}
