//! A funding reorganized out of the best chain, with the real binary: the payee (`serve`) sees
//! its funding back at 0 confirmations, refuses payments (nothing is lost: the payer forgets the
//! payment refused), and takes them again once the funding is back in a block.

mod common;

use std::time::{Duration, Instant};

use bitcoin::{BlockHash, Txid};
use bitcoincore_rpc::RpcApi;
use common::cli::{Daemon, Party};
use common::node::Node;

/// Waits until the payee shows `channel` in `state`.
fn wait_state(payee: &Party, channel: &str, state: &str) {
    let start = Instant::now();
    while payee.channel(channel)["state"] != state {
        assert!(start.elapsed() < Duration::from_secs(15), "the payee never showed {state}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn payments_stop_while_the_funding_is_reorged_out_and_resume_once_it_is_back() {
    let node = Node::start();
    let (alice, bob) = (Party::new(&node), Party::new(&node));
    alice.fund(&node);
    let daemon = Daemon::start(&bob, None, &[]);
    let terms = ["--lifetime", "60", "--step", "2", "--feerate", "2"];
    let opened = alice.open(&node, &daemon, 100_000, &terms);
    let channel = opened["channel_id"].as_str().unwrap().to_owned();
    alice.json(&["pay", &channel, "1000"]);

    // A competing chain without the funding: its block is invalidated, and empty blocks built
    // past the old tip. The funding goes back to the mempool.
    let funding: Txid = opened["funding_txid"].as_str().unwrap().parse().unwrap();
    let client = node.chain.client();
    let info = client.get_raw_transaction_info(&funding, None).unwrap();
    let block: BlockHash = info.blockhash.expect("the funding is in a block");
    let tip = node.height();
    client.invalidate_block(&block).unwrap();
    while node.height() <= tip {
        node.mine_block_with(&[]);
    }
    assert!(node.mempool().contains(&funding));
    wait_state(&bob, &channel, "awaiting funding confirmation");

    // No payment is taken meanwhile, and the refused one is not owed.
    let err = alice.fails(&["pay", &channel, "500"]);
    assert!(err.contains("refused"), "{err}");
    assert_eq!(bob.channel(&channel)["paid_total_sat"], 1000);
    assert_eq!(alice.channel(&channel)["paid_total_sat"], 1000);

    // Back in a block: ready again, and payments go on.
    let (tx, _, _) = node.get_tx(funding);
    node.mine_block_with(&[tx]);
    wait_state(&bob, &channel, "open");
    let paid = alice.json(&["pay", &channel, "500"]);
    assert_eq!(paid["paid_total_sat"], 1500);
    assert_eq!(bob.channel(&channel)["paid_total_sat"], 1500);
}
