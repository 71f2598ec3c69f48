//! On a real regtest node: the payee takes no payment before the funding has its confirmations,
//! and a funding double-spent before it confirms leaves the channel unusable with nothing the
//! payee signed at risk.

mod common;

use bitcoin::Amount;
use common::node::Node;
use common::regtest::{RegtestChannel, Terms};
use paychan::chain::{Chain, OutputStatus, Rejection};
use paychan::channel::ChannelError;

#[test]
fn no_payment_before_the_required_confirmations() {
    let node = Node::start();
    let terms = Terms { min_conf: 3, ..Terms::default() };
    let mut ch = RegtestChannel::funded(&node, terms);
    for confirmations in 0..3 {
        assert!(!ch.report_funding(), "not ready at {confirmations} confirmations");
        let err = ch.payer.pay(Amount::from_sat(1_000), node.height()).unwrap_err();
        assert!(matches!(err, ChannelError::Unexpected { .. }), "{err:?}");
        node.mine(1);
    }
    assert!(ch.report_funding(), "ready at 3 confirmations");
    ch.pay(Amount::from_sat(1_000));
    assert_eq!(ch.payee.paid(), Amount::from_sat(1_000));
}

#[test]
fn double_spent_funding_leaves_the_channel_unusable_and_the_refund_void() {
    let node = Node::start();
    let mut ch = RegtestChannel::funded(&node, Terms::default());
    let funding = ch.funding_tx.clone();

    // The payer's wallet spends the same coin elsewhere, and a miner takes that instead.
    let coins = ch.wallet.coins(&node.chain).unwrap();
    let spent = funding.input[0].previous_output;
    let coin = coins.into_iter().find(|c| c.utxo.outpoint == spent).expect("still unconfirmed");
    let elsewhere = ch.wallet.new_address().unwrap().script_pubkey();
    let feerate = bitcoin::FeeRate::from_sat_per_vb(10).unwrap();
    let double_spend =
        ch.wallet.fund_from(&[coin], &elsewhere, Amount::from_sat(100_000), feerate).unwrap();
    node.mine_block_with(std::slice::from_ref(&double_spend));
    assert!(node.is_confirmed(double_spend.compute_txid()));

    // The funding output will never exist: the payee never sees it and the channel never opens.
    let outpoint = ch.payee.funding_outpoint().unwrap();
    assert_eq!(node.chain.output_status(outpoint).unwrap(), OutputStatus::SpentOrMissing);
    node.mine(5);
    assert!(!ch.report_funding());
    assert!(ch.payer.pay(Amount::from_sat(1_000), node.height()).is_err());
    let err = node.chain_broadcast_rejection(&funding);
    assert!(matches!(err, Rejection::MissingOrSpent { .. }), "{err:?}");

    // The one thing the payee signed, the refund, spends that output: void even at R.
    let refund = ch.payer.refund_tx().unwrap();
    node.mine_to(refund.lock_time.to_consensus_u32());
    let sent = ch.payer_sees_tip();
    let [(_, Err(err))] = &sent[..] else { panic!("{sent:?}") };
    assert!(matches!(err, Rejection::MissingOrSpent { .. }), "{err:?}");
}
