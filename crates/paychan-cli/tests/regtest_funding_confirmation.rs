//! On a real regtest node: the payee takes no payment before the funding has its confirmations,
//! and a funding double-spent before it confirms leaves the channel unusable with nothing the
//! payee signed at risk.

mod common;

use bitcoin::Amount;
use common::node::Node;
use common::regtest::{RegtestChannel, Terms};
use paychan::chain::{Chain, OutputStatus, Rejection};
use paychan::channel::ChannelError;
use paychan::wire::{self, Message};

#[test]
fn no_payment_before_the_required_confirmations() {
    let node = Node::start();
    let terms = Terms { min_conf: 3, ..Terms::default() };
    let mut ch = RegtestChannel::funded(&node, terms);
    for confirmations in 0..3 {
        assert!(!ch.report_funding(), "not ready at {confirmations} confirmations");
        let err = ch.payer.pay(Amount::from_sat(1_000), node.height()).unwrap_err();
        assert!(matches!(err, ChannelError::Unexpected { .. }), "{err:?}");
        // A payer that sends a correctly signed payment anyway is refused by the payee.
        let before = ch.payee.state().clone();
        let err = ch.payee.handle_message(&early_payment(&ch), node.height()).unwrap_err();
        assert!(matches!(err, ChannelError::Unexpected { .. }), "{err:?}");
        assert_eq!(ch.payee.state(), &before);
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

    // The payer's wallet spends the same coin elsewhere (the coin is no longer offered for new
    // spends, but coin control can still cancel an unconfirmed funding), and a miner takes that.
    let spendable = ch.wallet.coins(&node.chain).unwrap();
    assert!(spendable.iter().all(|c| c.utxo.outpoint != funding.input[0].previous_output));
    let coins = ch.wallet.confirmed_coins(&node.chain).unwrap();
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
    let err = ch.payer.pay(Amount::from_sat(1_000), node.height()).unwrap_err();
    assert!(matches!(err, ChannelError::Unexpected { .. }), "{err:?}");
    let err = node.chain_broadcast_rejection(&funding);
    assert!(matches!(err, Rejection::MissingOrSpent { .. }), "{err:?}");

    // The one thing the payee signed, the refund, spends that output: void even at R.
    let refund = ch.payer.refund_tx().unwrap();
    node.mine_to(refund.lock_time.to_consensus_u32());
    let sent = ch.payer_sees_tip();
    let [(_, Err(err))] = &sent[..] else { panic!("{sent:?}") };
    assert!(matches!(err, Rejection::MissingOrSpent { .. }), "{err:?}");
}

/// Update 1 paying 1,000 sat, built and signed as the payer would, delivered before the channel
/// is ready.
fn early_payment(ch: &RegtestChannel<'_>) -> Message {
    let funded = &ch.payer.funded().unwrap().funded;
    let builder = funded.channel.builder();
    let locktime = funded.channel.ladder().locktime(1).unwrap();
    let tx = builder.commitment(Amount::from_sat(1_000), locktime).unwrap();
    let signature = common::signer(1).sign(builder.sighash(&tx).unwrap()).into();
    Message::Pay(wire::Pay {
        channel_id: ch.payer.state().terms.channel_id,
        update: 1,
        paid_total_sat: 1_000,
        locktime,
        checkpoint: false,
        signature,
    })
}
