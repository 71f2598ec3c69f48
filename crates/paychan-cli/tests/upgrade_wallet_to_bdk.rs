//! A wallet written before the move to BDK: the seed and `wallet.json` of the stored fixture
//! `tests/fixtures/v2_datadirs.tar.gz` (made by `tests/fixtures/make_v2_datadirs.sh`; the
//! wallet's files kept that format up to the release before BDK), with its regtest chain. This
//! build finds the wallet's coins by following the chain from genesis, exactly those the old
//! release's `scantxoutset` found, hands out no address twice, and funds a new channel from them.

mod common;

use std::str::FromStr;

use bitcoin::{Address, Amount};
use common::cli::{Daemon, Party};
use common::fixture;
use common::node::Node;
use paychan::chain::Chain;
use paychan_wallet::{Branch, Wallet, SEED_FILE};

#[test]
fn a_wallet_from_before_bdk_finds_its_coins_and_funds_a_channel() {
    let fixture::Fixture { node, alice, bob, payee_id, .. } = fixture::unpack("v2_datadirs.tar.gz");
    let node = Node::start_in(node);
    let old_index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(alice.path().join("wallet.json")).unwrap()).unwrap();
    let next_receive = u32::try_from(old_index["receive"].as_u64().unwrap()).unwrap();
    assert!(next_receive >= 1, "the old wallet handed out addresses: {old_index}");
    assert!(alice.path().join(SEED_FILE).exists());

    // What the old release saw: the node's UTXO set scanned for the wallet's descriptors. The
    // descriptors come from a copy of the wallet, so that the payer's own directory is first
    // opened by the command line below.
    let copy = tempfile::tempdir().unwrap();
    for file in [SEED_FILE, "wallet.json"] {
        std::fs::copy(alice.path().join(file), copy.path().join(file)).unwrap();
    }
    let probe =
        Wallet::open(copy.path(), &copy.path().join("db.sqlite"), bitcoin::Network::Regtest)
            .unwrap();
    let descriptors =
        [probe.descriptor(Branch::Receive).clone(), probe.descriptor(Branch::Change).clone()];
    let tip = node.chain.tip().unwrap().height;
    let old_coins = node.chain.scan_outputs(&descriptors, next_receive + 100).unwrap();
    let scanned: Amount = old_coins
        .iter()
        .filter(|u| !u.coinbase || tip + 1 >= u.height + 100)
        .map(|u| u.txout.value)
        .sum();
    assert!(scanned > Amount::ZERO, "the fixture's wallet holds coins");

    // This build, on the old directory: the same coins, found from the blocks.
    let payer = Party::existing(&node, alice, "");
    let balance = payer.json(&["balance"])["confirmed_sat"].as_u64().unwrap();
    assert_eq!(balance, scanned.to_sat());

    // The next address is the old wallet's next one: none is handed out twice.
    let address = payer.json(&["address"])["address"].as_str().unwrap().to_owned();
    let expected = probe.address(Branch::Receive, next_receive).unwrap();
    assert_eq!(Address::from_str(&address).unwrap().assume_checked(), expected);

    // And the coins fund a new channel.
    let payee = Party::existing(&node, bob, &payee_id);
    let daemon = Daemon::start(&payee, None, &[]);
    let open = payer.open(&node, &daemon, 150_000, &["--feerate", "2"]);
    assert_eq!(open["capacity_sat"], 150_000);
    let funding: bitcoin::Txid = open["funding_txid"].as_str().unwrap().parse().unwrap();
    let (funding, _, _) = node.get_tx(funding);
    for input in &funding.input {
        let coin = old_coins.iter().any(|u| u.outpoint == input.previous_output);
        assert!(coin, "the funding spends {} of the old wallet's", input.previous_output);
    }
    drop(daemon);
}
