//! On a real regtest node: the chain backend's answers and the payer wallet's coins.

mod common;

use bitcoin::{Amount, FeeRate, OutPoint};
use common::node::Node;
use paychan::chain::{Chain, OutputStatus, Rejection, TxStatus};
use paychan_bitcoind::REGTEST_FALLBACK_FEERATE;
use paychan_wallet::{Wallet, WalletError};

#[test]
fn wallet_coins_mature_fund_and_are_tracked_by_the_backend() {
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("wallet.sqlite");
    let mut wallet = Wallet::open(dir.path(), &database, bitcoin::Network::Regtest).unwrap();
    let address = wallet.new_address().unwrap();

    // 99 blocks to the wallet: none of those coinbases is spendable in the next block yet.
    node.chain.mine(99, &address).unwrap();
    assert_eq!(wallet.balance(&node.chain).unwrap(), Amount::ZERO);
    // At tip 100 the coinbase of block 1 (50 BTC on regtest) can go into block 101: 100
    // confirmations. The broadcast below shows the node agrees.
    node.mine(1);
    let tip = node.chain.tip().unwrap();
    assert_eq!(tip.height, 100);
    assert!(tip.median_time_past > 1_600_000_000, "{tip:?}");
    assert_eq!(wallet.balance(&node.chain).unwrap(), Amount::from_btc(50.0).unwrap());

    // No fee data on a fresh regtest chain: the documented fallback.
    assert_eq!(node.chain.fee_rate(6).unwrap(), REGTEST_FALLBACK_FEERATE);

    let too_much = Amount::from_btc(60.0).unwrap();
    let to = wallet.new_address().unwrap().script_pubkey();
    let err = wallet.fund(&node.chain, &to, too_much, REGTEST_FALLBACK_FEERATE).unwrap_err();
    assert!(
        matches!(err, WalletError::InsufficientFunds { available, .. } if available == Amount::from_btc(50.0).unwrap()),
        "{err}"
    );

    // A transaction paying no fee is refused as such (and changes nothing in the wallet).
    let free = wallet.fund(&node.chain, &to, Amount::from_sat(1_000_000), FeeRate::ZERO).unwrap();
    let err = node.chain_broadcast_rejection(&free);
    assert!(matches!(err, Rejection::FeeTooLow { .. }), "{err:?}");

    let feerate = FeeRate::from_sat_per_vb(3).unwrap();
    let tx = wallet.fund(&node.chain, &to, Amount::from_sat(1_000_000), feerate).unwrap();
    let txid = tx.compute_txid();
    assert_eq!(node.chain.tx_status(txid).unwrap(), TxStatus::Unknown);
    let spent = tx.input[0].previous_output;
    assert!(matches!(node.chain.output_status(spent).unwrap(), OutputStatus::Unspent { .. }));

    assert_eq!(node.chain.broadcast(&tx).unwrap(), txid);
    assert_eq!(node.chain.broadcast(&tx).unwrap(), txid, "a repeated broadcast is harmless");
    assert_eq!(node.chain.tx_status(txid).unwrap(), TxStatus::InMempool);
    assert_eq!(node.chain.output_status(spent).unwrap(), OutputStatus::SpentOrMissing);
    let OutputStatus::Unspent { txout, confirmations } =
        node.chain.output_status(OutPoint::new(txid, 0)).unwrap()
    else {
        panic!("the new output is in the mempool")
    };
    assert_eq!((txout.value, confirmations), (Amount::from_sat(1_000_000), 0));

    node.mine(2);
    assert_eq!(node.chain.tx_status(txid).unwrap(), TxStatus::Confirmed(2));
    let (_, _, vsize) = node.get_tx(txid);
    // BDK pays the rate on the weight (not on the virtual size rounded up) of the transaction
    // as it estimates it, with signatures at their largest: at least the rate on the mined
    // weight, at most a virtual byte's worth above the rate on the mined size. The change is
    // exactly what is left.
    let fee = node.fee(txid);
    let at_rate = |vb: u64| feerate.fee_vb(vb).unwrap();
    let on_weight = feerate.fee_wu(tx.weight()).unwrap();
    assert!(on_weight <= fee && fee <= at_rate(vsize + 1), "{fee} for {vsize} vB");
    let coin = Amount::from_btc(50.0).unwrap();
    assert_eq!(tx.output.len(), 2);
    assert_eq!(tx.output[1].value, coin - Amount::from_sat(1_000_000) - fee, "the change");
    // Sending it again once it is confirmed is told apart from a double-spend.
    let err = node.chain_broadcast_rejection(&tx);
    assert!(matches!(err, Rejection::AlreadyConfirmed { .. }), "{err:?}");
    // The change came back to the wallet (and coinbases kept maturing meanwhile).
    let coins = wallet.coins(&node.chain).unwrap();
    assert!(coins.iter().any(|c| c.utxo.outpoint.txid == txid), "{coins:?}");
}
