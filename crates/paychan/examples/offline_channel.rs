//! One whole channel life, offline, with fixed keys: open, refund signature, three payments of
//! 1, 2000 and 3000 sat (a checkpoint every second payment), and the cooperative settlement.
//!
//! Both parties run in this process; their messages are handed across by hand. Nothing touches a
//! network or a chain: the funding spends a made-up coin. The output is one JSON object with every
//! transaction as raw hex, which `bitcoin-cli decoderawtransaction` will read.
//!
//! Run it with `cargo run --example offline_channel`.

use bitcoin::hashes::Hash;
use bitcoin::{Address, Amount, FeeRate, Network, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use std::num::NonZeroU64;

use paychan::channel::{
    CheckpointPolicy, Payee, PayeeAction, PayeeConfig, Payer, PayerAction, PayerConfig,
};
use paychan::keys::ChannelSigner;
use paychan::tx::{build_funding, sign_p2wpkh_input, FundingInput};
use paychan::wire::{ChannelId, Message};

/// The chain height the channel opens at, and the channel's lifetime in blocks.
const TIP: u32 = 200;
const LIFETIME: u32 = 144;

fn key(byte: u8) -> ChannelSigner {
    ChannelSigner::from_slice(&[byte; 32]).expect("a fixed, valid secret key")
}

fn p2wpkh(signer: &ChannelSigner) -> Address {
    Address::p2wpkh(&signer.public_key().try_into().expect("compressed key"), Network::Regtest)
}

/// What a driver does with a state machine's actions. Here: no disk, no network, no chain.
#[derive(Default)]
struct Outbox {
    messages: Vec<Message>,
    broadcasts: Vec<Transaction>,
    funding_request: Option<(Address, Amount)>,
}

impl Outbox {
    /// Carries out the payer's actions.
    fn payer(&mut self, actions: Vec<PayerAction>) {
        for action in actions {
            match action {
                PayerAction::Persist => {} // a real driver writes the state to disk here
                PayerAction::Send(m) => self.messages.push(m),
                PayerAction::Broadcast(tx) => self.broadcasts.push(tx),
                PayerAction::FundChannel { address, amount } => {
                    self.funding_request = Some((address, amount))
                }
                other => panic!("an action this example does not know: {other:?}"),
            }
        }
    }

    /// Carries out the payee's actions.
    fn payee(&mut self, actions: Vec<PayeeAction>) {
        for action in actions {
            match action {
                PayeeAction::Persist => {} // a real driver writes the state to disk here
                PayeeAction::Send(m) => self.messages.push(m),
                PayeeAction::Broadcast(tx) => self.broadcasts.push(tx),
                other => panic!("an action this example does not know: {other:?}"),
            }
        }
    }

    fn next_message(&mut self) -> Message {
        assert_eq!(self.messages.len(), 1, "one message at a time in this flow");
        self.messages.remove(0)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (payer_key, payee_key, wallet_key) = (key(1), key(2), key(3));
    let mut out = Outbox::default();

    // 1. The payer proposes; the payee checks the terms against its policy and accepts.
    let config = PayerConfig {
        network: Network::Regtest,
        capacity: Amount::from_sat(100_000),
        feerate_sat_per_vb: 2,
        refund_locktime: TIP + LIFETIME,
        step: 1,
        margin: 6,
        payout: p2wpkh(&key(11)),
        // The payee countersigns every second payment: a checkpoint, the payer's way out if the
        // payee vanishes. The payments in between carry the payer's signature only.
        checkpoints: CheckpointPolicy { every_payments: NonZeroU64::new(2), every_sat: None },
    };
    let (mut payer, actions) = Payer::open(config, payer_key, ChannelId([7; 32]), TIP)?;
    out.payer(actions);
    let Message::OpenChannel(open) = out.next_message() else {
        return Err("the payer opens with open_channel".into());
    };
    let policy = PayeeConfig {
        network: Network::Regtest,
        payout: p2wpkh(&key(12)),
        margin: 6,
        min_step: 1,
        max_lifetime: PayeeConfig::default_max_lifetime(Network::Regtest),
        min_feerate_sat_per_vb: 1,
        min_conf: 1,
    };
    let (mut payee, actions) = Payee::accept(&open, &policy, payee_key, TIP)?;
    out.payee(actions);
    let msg = out.next_message();
    out.payer(payer.handle_message(&msg)?);

    // 2. The payer's wallet builds and signs the funding from a segwit coin, but holds it back.
    let (address, amount) = out.funding_request.take().expect("payer asks for funding");
    let coin = TxOut {
        value: Amount::from_sat(1_000_000),
        script_pubkey: ScriptBuf::new_p2wpkh(&wallet_key.public_key().wpubkey_hash()?),
    };
    let outpoint = OutPoint::new(Txid::from_byte_array([0xaa; 32]), 0);
    let (mut funding_tx, _) = build_funding(
        &[FundingInput::p2wpkh(outpoint, &coin)],
        &address.script_pubkey(),
        amount,
        &coin.script_pubkey,
        FeeRate::from_sat_per_vb(2).expect("small"),
    )?;
    sign_p2wpkh_input(&mut funding_tx, 0, &coin, &wallet_key)?;
    out.payer(payer.funding_signed(funding_tx.clone())?);

    // 3. The payee signs the refund; only with it checked does the payer broadcast the funding.
    let msg = out.next_message();
    out.payee(payee.handle_message(&msg, TIP)?);
    assert!(out.broadcasts.is_empty());
    let msg = out.next_message();
    out.payer(payer.handle_message(&msg)?);
    assert_eq!(out.broadcasts, vec![funding_tx.clone()]);
    let refund_tx = payer.refund_tx()?;

    // 4. The funding confirms; the payee says the channel is ready.
    let outpoint = payee.funding_outpoint().expect("funding known");
    let funding_output = &funding_tx.output[outpoint.vout as usize];
    out.payee(payee.funding_confirmed(outpoint, funding_output, 1)?);
    let msg = out.next_message();
    out.payer(payer.handle_message(&msg)?);

    // 5. Three payments, each one round trip: pay -> pay_ack. The payee completes the payer's
    //    signature on the newest with its own whenever it needs to broadcast.
    let mut commitment_txs = Vec::new();
    for sat in [1, 2000, 3000] {
        out.payer(payer.pay(Amount::from_sat(sat), TIP)?);
        let msg = out.next_message();
        out.payee(payee.handle_message(&msg, TIP)?);
        let msg = out.next_message();
        out.payer(payer.handle_message(&msg)?);
        commitment_txs.push(payee.newest_commitment()?.expect("a payment was made"));
    }
    assert_eq!(payee.paid(), Amount::from_sat(5001));
    // 1 sat is below the payee's dust limit: no output for it, it goes to the fee.
    assert_eq!(commitment_txs[0].output.len(), 1);
    assert_eq!(commitment_txs[2].output[1].value, Amount::from_sat(5001));
    // Payments 1 and 2 share the first rung; payment 2, a checkpoint, moves payment 3 down.
    let locktimes: Vec<u32> =
        commitment_txs.iter().map(|tx| tx.lock_time.to_consensus_u32()).collect();
    assert_eq!(locktimes, [TIP + LIFETIME - 1, TIP + LIFETIME - 1, TIP + LIFETIME - 2]);
    let checkpoint = payer.funded().expect("funded").funded.checkpoint.as_ref().expect("one");
    assert_eq!((checkpoint.number, checkpoint.paid), (2, Amount::from_sat(2001)));

    // 6. Settlement: the payer signs, the payee checks, countersigns and broadcasts.
    out.payer(payer.close()?);
    let msg = out.next_message();
    out.payee(payee.handle_message(&msg, TIP)?);
    let msg = out.next_message();
    out.payer(payer.handle_message(&msg)?);
    let settlement_tx = out.broadcasts.last().expect("payee broadcast the settlement").clone();
    assert_eq!(settlement_tx.lock_time.to_consensus_u32(), 0);
    assert_eq!(out.broadcasts.len(), 2, "only the funding and the settlement reach the chain");

    let funded = payer.funded().expect("funded");
    let hex = |tx: &Transaction| bitcoin::consensus::encode::serialize_hex(tx);
    let report = serde_json::json!({
        "descriptor": funded.funded.channel.builder().funding().descriptor().to_string(),
        "funding_address": address.to_string(),
        "funding_tx": hex(&funding_tx),
        "refund_tx": hex(&refund_tx),
        "commitment_txs": commitment_txs.iter().map(hex).collect::<Vec<_>>(),
        "settlement_tx": hex(&settlement_tx),
    });
    println!("{report}");
    Ok(())
}
