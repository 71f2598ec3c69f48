//! On a real regtest node: open, 20 payments, cooperative settlement. Only the funding and the
//! settlement reach the chain, and the payee receives exactly the paid total.

mod common;

use bitcoin::Amount;
use common::node::Node;
use common::regtest::{RegtestChannel, Terms};
use paychan::chain::{Chain, TxStatus};

#[test]
fn twenty_payments_then_cooperative_settlement() {
    let node = Node::start();
    let mut ch = RegtestChannel::open(&node, Terms::default());
    let price = Amount::from_sat(1_000);
    for _ in 0..20 {
        ch.pay(price);
    }
    let paid = price * 20;
    assert_eq!(ch.payer.paid(), paid);
    assert_eq!(ch.payee.paid(), paid);

    let settlement = ch.close();
    node.mine(1);
    let funding_txid = ch.funding_tx.compute_txid();
    let settlement_txid = settlement.compute_txid();
    assert!(node.is_confirmed(funding_txid));
    assert!(node.is_confirmed(settlement_txid));

    // Only the funding and the settlement were broadcast; no commitment or refund is known to
    // the node.
    let sent: Vec<_> = ch.broadcasts.iter().map(|(tx, _)| tx.compute_txid()).collect();
    assert_eq!(sent, vec![funding_txid, settlement_txid]);
    for tx in ch.commitments.iter().chain([&ch.payer.refund_tx().unwrap()]) {
        assert_eq!(node.chain.tx_status(tx.compute_txid()).unwrap(), TxStatus::Unknown);
    }

    // The settlement as mined: B gets exactly the paid total, A the rest less the fee.
    ch.assert_mined_split(settlement_txid, paid);
}
