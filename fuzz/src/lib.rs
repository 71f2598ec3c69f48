//! Shared setup for the fuzz targets: fixed keys, and channels opened by the real payer and
//! payee under each of a few checkpoint policies, stopped at each stage of their opening (as
//! `tests/common` does for the integration tests).

use paychan::bitcoin::hashes::Hash;
use std::num::NonZeroU64;

use paychan::bitcoin::{Address, Amount, FeeRate, Network, OutPoint, ScriptBuf, TxOut, Txid};
use paychan::channel::{Action, CheckpointPolicy, Payee, PayeeConfig, Payer, PayerConfig};
use paychan::keys::ChannelSigner;
use paychan::tx::{build_funding, sign_p2wpkh_input, FundingInput};
use paychan::wire::{ChannelId, Message};

/// The chain.
pub const NETWORK: Network = Network::Regtest;
/// The chain height at the open.
pub const TIP: u32 = 500;
/// The refund locktime, `R`.
pub const REFUND: u32 = TIP + 1000;
/// Blocks between commitment locktimes.
pub const STEP: u32 = 2;
/// Both parties' safety margin in blocks.
pub const MARGIN: u32 = 6;
/// The fee rate of every transaction, in sat/vB.
pub const FEERATE: u64 = 2;
/// The channel's capacity.
pub const CAPACITY: Amount = Amount::from_sat(100_000);
/// The channel's id.
pub const CHANNEL_ID: ChannelId = ChannelId([7; 32]);

/// Returns the signer with the secret key `[byte; 32]`: 1 is the payer's channel key, 2 the
/// payee's, 3 the payer's wallet.
pub fn signer(byte: u8) -> ChannelSigner {
    ChannelSigner::from_slice(&[byte; 32]).expect("a fixed valid key")
}

/// Returns the regtest P2WPKH address of `signer(byte)`.
pub fn p2wpkh_address(byte: u8) -> Address {
    let key = signer(byte).public_key();
    Address::p2wpkh(&key.try_into().expect("compressed"), NETWORK)
}

/// The checkpoint policies the fuzz channels are opened with, by index: the default (a
/// checkpoint for every 1% of the capacity, 1000 sat), every payment (the original scheme), only
/// when the payer asks, and every 3 payments or 2500 sat, whichever comes first.
pub fn policies() -> [CheckpointPolicy; 4] {
    [
        CheckpointPolicy::default_for(CAPACITY),
        CheckpointPolicy::every_payment(),
        CheckpointPolicy::on_request(),
        CheckpointPolicy {
            every_payments: NonZeroU64::new(3),
            every_sat: Some(Amount::from_sat(2500)),
        },
    ]
}

/// Returns the payer's configuration, with the default checkpoint policy.
pub fn payer_config() -> PayerConfig {
    payer_config_with(CheckpointPolicy::default_for(CAPACITY))
}

/// Returns the payer's configuration with checkpoint policy `checkpoints`.
pub fn payer_config_with(checkpoints: CheckpointPolicy) -> PayerConfig {
    PayerConfig {
        network: NETWORK,
        capacity: CAPACITY,
        feerate_sat_per_vb: FEERATE,
        refund_locktime: REFUND,
        step: STEP,
        margin: MARGIN,
        payout: p2wpkh_address(11),
        checkpoints,
    }
}

/// Returns the payee's configuration.
pub fn payee_config() -> PayeeConfig {
    PayeeConfig {
        network: NETWORK,
        payout: p2wpkh_address(12),
        margin: MARGIN,
        min_step: 1,
        min_feerate_sat_per_vb: 1,
        min_conf: 1,
    }
}

/// Returns the messages among `actions`, in order.
pub fn sent(actions: Vec<Action>) -> Vec<Message> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// Returns the one message among `actions`.
fn only_message(actions: Vec<Action>) -> Message {
    let mut msgs = sent(actions);
    assert_eq!(msgs.len(), 1, "one message: {msgs:?}");
    msgs.remove(0)
}

/// Both parties of the channel.
#[derive(Debug, Clone)]
pub struct Parties {
    /// The payer.
    pub payer: Payer,
    /// The payee.
    pub payee: Payee,
}

/// One channel opened honestly, with both parties saved at each stage of the open.
#[derive(Debug)]
pub struct Opened {
    /// The payer's `open_channel`.
    pub open_channel: Message,
    /// The payee has accepted and the payer has signed the funding; `funding_created` is not
    /// delivered yet.
    pub awaiting_funding: Parties,
    /// The payer's `funding_created`.
    pub funding_created: Message,
    /// The refund is signed and the funding broadcast, not yet confirmed.
    pub funded: Parties,
    /// The funding is confirmed and `channel_ready` delivered: payments may start.
    pub open: Parties,
    /// The funding output as the chain holds it.
    pub funding: (OutPoint, TxOut),
}

impl Opened {
    /// Runs the open with the default checkpoint policy (see [`Opened::with_checkpoints`]).
    pub fn new() -> Opened {
        Opened::with_checkpoints(CheckpointPolicy::default_for(CAPACITY))
    }

    /// Runs the open with checkpoint policy `checkpoints`: `open_channel`, `accept_channel`, a
    /// funding transaction spending a made-up wallet coin, `funding_created`, `refund_signed`,
    /// one confirmation, `channel_ready`.
    pub fn with_checkpoints(checkpoints: CheckpointPolicy) -> Opened {
        let config = payer_config_with(checkpoints);
        let (mut payer, actions) =
            Payer::open(config, signer(1), CHANNEL_ID, TIP).expect("fixed terms");
        let open_channel = only_message(actions);
        let Message::OpenChannel(open) = &open_channel else { panic!("open_channel") };
        let (mut payee, actions) =
            Payee::accept(open, &payee_config(), signer(2), TIP).expect("fixed terms");
        let accept = only_message(actions);
        let actions = payer.handle_message(&accept).expect("the payee's own accept");
        let (address, amount) = actions
            .into_iter()
            .find_map(|a| match a {
                Action::FundChannel { address, amount } => Some((address, amount)),
                _ => None,
            })
            .expect("the payer asks for funding");

        // A 1 BTC coin of the wallet's, at a made-up outpoint, pays the capacity.
        let wallet = signer(3);
        let coin = TxOut {
            value: Amount::from_sat(100_000_000),
            script_pubkey: ScriptBuf::new_p2wpkh(
                &wallet.public_key().wpubkey_hash().expect("compressed"),
            ),
        };
        let coin_outpoint = OutPoint::new(Txid::from_byte_array([0xaa; 32]), 0);
        let (mut funding_tx, _) = build_funding(
            &[FundingInput::p2wpkh(coin_outpoint, &coin)],
            &address.script_pubkey(),
            amount,
            &coin.script_pubkey,
            FeeRate::from_sat_per_vb(FEERATE).expect("small"),
        )
        .expect("the coin covers the capacity");
        sign_p2wpkh_input(&mut funding_tx, 0, &coin, &wallet).expect("the wallet's own coin");

        let funding_created =
            only_message(payer.funding_signed(funding_tx.clone()).expect("a valid funding"));
        let awaiting_funding = Parties { payer: payer.clone(), payee: payee.clone() };

        let refund_signed =
            only_message(payee.handle_message(&funding_created, TIP).expect("honest funding"));
        payer.handle_message(&refund_signed).expect("the payee's own refund signature");
        let funded = Parties { payer: payer.clone(), payee: payee.clone() };

        let outpoint = payee.funding_outpoint().expect("funded");
        let txout = funding_tx.output[outpoint.vout as usize].clone();
        let ready = only_message(payee.funding_confirmed(outpoint, &txout, 1).expect("confirmed"));
        payer.handle_message(&ready).expect("channel_ready");
        let open = Parties { payer, payee };

        Opened {
            open_channel,
            awaiting_funding,
            funding_created,
            funded,
            open,
            funding: (outpoint, txout),
        }
    }
}

impl Default for Opened {
    fn default() -> Self {
        Opened::new()
    }
}
