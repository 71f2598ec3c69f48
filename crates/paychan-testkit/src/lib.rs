//! Not published: what paychan's tests, benches and fuzz targets (`fuzz/`, a workspace of its
//! own) share. Nothing here is for embedders: it panics where a test would fail.
//!
//! - Fixed keys ([`signer`], [`wallet`]), the terms every test starts from ([`payer_config`],
//!   [`payee_config`]: regtest, opened at [`TIP`], the refund [`LIFETIME`] blocks later) and a
//!   funding signed from a made-up wallet coin ([`fund`]).
//! - The open-a-channel driver, both parties in one process: [`route`] carries out one side's
//!   actions ([`Step`]), checking that a `Persist`, if any, comes first, and returns the
//!   messages for the other side, keeping broadcasts and funding requests in an [`Outbox`];
//!   [`Pair`] runs a whole open (or one up to the funding broadcast) with the fixed keys, then
//!   payments and the close; [`Opening`] stops an open at any step so that a test can interfere
//!   there; and [`open_channel`] opens a channel with the keys and terms a caller chooses
//!   ([`Sides`]).
//! - The [`Store`](paychan::store::Store) contract as tests any backend runs
//!   ([`store::check_contract`]).
//! - With the `consensus` feature: `Pair::verify_spend`, Bitcoin Core's script interpreter
//!   (libbitcoinconsensus) on a spend of the funding.
//! - With the `regtest` feature: [`bitcoind::Node`], a throwaway regtest `bitcoind` per test
//!   (found where `regtest/bitcoind.sh install` looks for it or builds it), and
//!   [`regtest::RegtestChannel`], a channel driven through the engine against it, every
//!   broadcast sent to the node.

#[cfg(feature = "regtest")]
pub mod bitcoind;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "regtest")]
pub mod regtest;
pub mod store;

use bitcoin::hashes::Hash;
use bitcoin::{Address, Amount, Network, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use paychan::channel::{
    ChannelError, CheckpointPolicy, Payee, PayeeAction, PayeeConfig, Payer, PayerAction,
    PayerConfig,
};
use paychan::keys::ChannelSigner;
use paychan::tx::{build_funding, sign_p2wpkh_input, FundingInput};
use paychan::wire::{ChannelId, Message};

pub const NETWORK: Network = Network::Regtest;
pub const TIP: u32 = 500;
pub const LIFETIME: u32 = 1000;
pub const STEP: u32 = 2;

/// The locktime of rung `k` of the kit's ladder (rung 0 is the refund's).
pub fn rung(k: u32) -> u32 {
    TIP + LIFETIME - k * STEP
}
pub const MARGIN: u32 = 6;
pub const FEERATE: u64 = 2;

pub fn signer(byte: u8) -> ChannelSigner {
    ChannelSigner::from_slice(&[byte; 32]).expect("fixed test key")
}

pub fn p2wpkh_address(byte: u8) -> Address {
    let key = signer(byte).public_key();
    Address::p2wpkh(&key.try_into().expect("compressed"), NETWORK)
}

pub fn payer_config(capacity: Amount) -> PayerConfig {
    PayerConfig {
        network: NETWORK,
        capacity,
        feerate_sat_per_vb: FEERATE,
        refund_locktime: TIP + LIFETIME,
        step: STEP,
        margin: MARGIN,
        payout: p2wpkh_address(11),
        // The original scheme, where both sign every update; tests of checkpoints set their own.
        checkpoints: CheckpointPolicy::every_payment(),
    }
}

pub fn payee_config() -> PayeeConfig {
    PayeeConfig {
        network: NETWORK,
        payout: p2wpkh_address(12),
        margin: MARGIN,
        min_step: 1,
        // Tests choose their own terms; the policy has tests of its own.
        max_lifetime: u32::MAX,
        min_feerate_sat_per_vb: 1,
        min_conf: 1,
    }
}

/// The payer's wallet key, which owns the coin that funds the channel.
pub fn wallet() -> ChannelSigner {
    signer(3)
}

/// A coin of the wallet's, 21 BTC, at a made-up outpoint.
pub fn wallet_coin() -> (OutPoint, TxOut) {
    let key = wallet().public_key();
    let txout = TxOut {
        value: Amount::from_sat(2_100_000_000),
        script_pubkey: ScriptBuf::new_p2wpkh(&key.wpubkey_hash().expect("compressed")),
    };
    (OutPoint::new(Txid::from_byte_array([0xaa; 32]), 0), txout)
}

/// Builds and signs a funding transaction paying `amount` to `address` from the wallet coin.
pub fn fund(address: &Address, amount: Amount) -> Transaction {
    let (outpoint, coin) = wallet_coin();
    let (mut tx, _) = build_funding(
        &[FundingInput::p2wpkh(outpoint, &coin)],
        &address.script_pubkey(),
        amount,
        &coin.script_pubkey,
        bitcoin::FeeRate::from_sat_per_vb(FEERATE).unwrap(),
    )
    .expect("wallet coin covers the capacity");
    sign_p2wpkh_input(&mut tx, 0, &coin, &wallet()).expect("wallet's own coin");
    tx
}

/// One action of either party, as the driver carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Save the state.
    Persist,
    /// Deliver a message to the other party.
    Send(Message),
    /// Broadcast a transaction.
    Broadcast(Transaction),
    /// The payer asks for a funding transaction.
    Fund(Address, Amount),
}

impl From<PayerAction> for Step {
    fn from(action: PayerAction) -> Step {
        match action {
            PayerAction::Persist => Step::Persist,
            PayerAction::Send(m) => Step::Send(m),
            PayerAction::Broadcast(tx) => Step::Broadcast(tx),
            PayerAction::FundChannel { address, amount } => Step::Fund(address, amount),
            other => panic!("unknown payer action {other:?}"),
        }
    }
}

impl From<PayeeAction> for Step {
    fn from(action: PayeeAction) -> Step {
        match action {
            PayeeAction::Persist => Step::Persist,
            PayeeAction::Send(m) => Step::Send(m),
            PayeeAction::Broadcast(tx) => Step::Broadcast(tx),
            other => panic!("unknown payee action {other:?}"),
        }
    }
}

/// Splits actions into the messages to deliver, recording broadcasts and requested fundings,
/// and checks that a `Persist` comes before anything leaves the party.
pub fn route<A: Into<Step>>(actions: Vec<A>, out: &mut Outbox) -> Vec<Message> {
    let steps: Vec<Step> = actions.into_iter().map(Into::into).collect();
    // A call that changed state persists first; one that did not (a repeated acknowledgement,
    // a shutdown request, a broadcast on a new tip) has no Persist at all. `Pair::pay` checks
    // that a payment does change both states.
    let persists = steps.iter().filter(|a| matches!(a, Step::Persist)).count();
    assert!(persists == 0 || (persists == 1 && steps[0] == Step::Persist), "{steps:?}");
    let mut msgs = Vec::new();
    for step in steps {
        match step {
            Step::Persist => {}
            Step::Send(m) => msgs.push(m),
            Step::Broadcast(tx) => out.broadcasts.push(tx),
            Step::Fund(address, amount) => out.fund_requests.push((address, amount)),
        }
    }
    msgs
}

/// What left the parties other than messages.
#[derive(Default, Debug)]
pub struct Outbox {
    pub broadcasts: Vec<Transaction>,
    pub fund_requests: Vec<(Address, Amount)>,
}

/// Both parties of one channel, driven in one process.
pub struct Pair {
    pub payer: Payer,
    pub payee: Payee,
    pub tip: u32,
    pub out: Outbox,
    pub funding_tx: Transaction,
}

impl Pair {
    /// Runs the whole open: proposal, acceptance, funding, refund signature, confirmation.
    pub fn open(capacity: Amount) -> Pair {
        Pair::open_with(payer_config(capacity))
    }

    /// Runs the open up to the funding broadcast, before any confirmation.
    pub fn funded(capacity: Amount) -> Pair {
        Pair::funded_with(payer_config(capacity))
    }

    /// A channel of 100,000 sat, open, whose payer checkpoints as `policy` says.
    pub fn open_with_policy(policy: CheckpointPolicy) -> Pair {
        let mut config = payer_config(Amount::from_sat(100_000));
        config.checkpoints = policy;
        Pair::open_with(config)
    }

    /// Runs the whole open with the payer's `config`.
    pub fn open_with(config: PayerConfig) -> Pair {
        let mut pair = Pair::funded_with(config);
        let (outpoint, txout) = pair.funding_output();
        let actions = pair.payee.funding_confirmed(outpoint, &txout, 1).unwrap();
        let ready = route(actions, &mut pair.out).remove(0);
        route(pair.payer.handle_message(&ready).unwrap(), &mut pair.out);
        pair
    }

    /// Runs the open with the payer's `config` up to the funding broadcast.
    pub fn funded_with(config: PayerConfig) -> Pair {
        let (Opening { mut payer, mut payee, mut out }, funding_tx, created) =
            Opening::funding_created(config);
        let refund_signed = route(payee.handle_message(&created, TIP).unwrap(), &mut out).remove(0);
        assert!(out.broadcasts.is_empty(), "nothing broadcast before the refund is checked");
        route(payer.handle_message(&refund_signed).unwrap(), &mut out);
        assert_eq!(out.broadcasts, vec![funding_tx.clone()], "funding broadcast after refund");
        Pair { payer, payee, tip: TIP, out, funding_tx }
    }

    /// One payment, round trip. Returns the payer's error if it refuses to sign.
    pub fn pay(&mut self, amount: Amount) -> Result<(), ChannelError> {
        let before = (self.payer.state().clone(), self.payee.state().clone());
        let pay = route(self.payer.pay(amount, self.tip)?, &mut self.out).remove(0);
        let actions = self.payee.handle_message(&pay, self.tip).unwrap();
        let ack = route(actions, &mut self.out).remove(0);
        route(self.payer.handle_message(&ack).unwrap(), &mut self.out);
        assert_ne!(&before.0, self.payer.state());
        assert_ne!(&before.1, self.payee.state());
        Ok(())
    }

    /// Cooperative close; returns the settlement the payee broadcast.
    pub fn close(&mut self) -> Transaction {
        let before = self.out.broadcasts.len();
        let closing = route(self.payer.close().unwrap(), &mut self.out).remove(0);
        let ack =
            route(self.payee.handle_message(&closing, self.tip).unwrap(), &mut self.out).remove(0);
        route(self.payer.handle_message(&ack).unwrap(), &mut self.out);
        assert_eq!(self.out.broadcasts.len(), before + 1);
        self.out.broadcasts.last().unwrap().clone()
    }

    /// The funding output as the chain would hold it.
    pub fn funding_output(&self) -> (OutPoint, TxOut) {
        let f = self.payer.funded().unwrap();
        let outpoint = f.funded.channel.builder().params().funding_outpoint;
        (outpoint, self.funding_tx.output[outpoint.vout as usize].clone())
    }

    /// Checks `tx`'s spend of the funding output with Bitcoin Core's script interpreter.
    #[cfg(feature = "consensus")]
    pub fn verify_spend(&self, tx: &Transaction) -> Result<(), String> {
        let (outpoint, txout) = self.funding_output();
        tx.verify(|op| (*op == outpoint).then(|| txout.clone())).map_err(|e| e.to_string())
    }
}

/// The terms and keys of both sides of a channel to open, for [`open_channel`].
pub struct Sides {
    /// The payer's terms.
    pub payer: PayerConfig,
    /// The payer's channel key.
    pub payer_key: ChannelSigner,
    /// The payee's policy.
    pub payee: PayeeConfig,
    /// The payee's channel key.
    pub payee_key: ChannelSigner,
}

/// Opens channel `id` at `tip` between the two sides, in one process: `open_channel`,
/// `accept_channel`, the funding that `fund` signs for the address and amount asked,
/// `funding_created`, `refund_signed`, `min_conf` confirmations, `channel_ready`. Returns both
/// state machines, ready for payments, and the funding.
pub fn open_channel(
    sides: Sides,
    id: ChannelId,
    tip: u32,
    fund: impl FnOnce(&Address, Amount) -> Transaction,
) -> (Payer, Payee, Transaction) {
    let Sides { payer: config, payer_key, payee: policy, payee_key } = sides;
    let min_conf = policy.min_conf;
    let mut out = Outbox::default();
    let (mut payer, actions) = Payer::open(config, payer_key, id, tip).expect("valid terms");
    let [Message::OpenChannel(open)] = &route(actions, &mut out)[..] else { panic!("an open") };
    let (mut payee, actions) = Payee::accept(open, &policy, payee_key, tip).expect("accepted");
    let accept = route(actions, &mut out).remove(0);
    assert!(route(payer.handle_message(&accept).expect("accept"), &mut out).is_empty());
    let (address, amount) = out.fund_requests.pop().expect("the payer asks for funding");
    let funding_tx = fund(&address, amount);
    let created = route(payer.funding_signed(funding_tx.clone()).expect("funding"), &mut out);
    let refund = route(payee.handle_message(&created[0], tip).expect("refund"), &mut out);
    route(payer.handle_message(&refund[0]).expect("refund signature"), &mut out);
    let outpoint = payee.funding_outpoint().expect("funded");
    let txout = &funding_tx.output[outpoint.vout as usize];
    let ready = route(payee.funding_confirmed(outpoint, txout, min_conf).expect("ok"), &mut out);
    route(payer.handle_message(&ready[0]).expect("channel_ready"), &mut out);
    (payer, payee, funding_tx)
}

/// The value of all outputs of `tx`.
pub fn output_sum(tx: &Transaction) -> Amount {
    tx.output.iter().map(|o| o.value).sum()
}

/// A channel being opened, stopped at one step so that a test can interfere there.
pub struct Opening {
    pub payer: Payer,
    pub payee: Payee,
    pub out: Outbox,
}

impl Opening {
    /// `open_channel` delivered; returns the payee's `accept_channel`, not yet delivered.
    pub fn proposed(config: PayerConfig) -> (Opening, Message) {
        let mut out = Outbox::default();
        let (payer, actions) = Payer::open(config, signer(1), ChannelId([7; 32]), TIP).unwrap();
        let [Message::OpenChannel(open)] = &route(actions, &mut out)[..] else { panic!() };
        let (payee, actions) = Payee::accept(open, &payee_config(), signer(2), TIP).unwrap();
        let accept = route(actions, &mut out).remove(0);
        (Opening { payer, payee, out }, accept)
    }

    /// `accept_channel` delivered; returns the funding the payer asked for.
    pub fn accepted(config: PayerConfig) -> (Opening, Address, Amount) {
        let (mut o, accept) = Opening::proposed(config);
        let msgs = route(o.payer.handle_message(&accept).unwrap(), &mut o.out);
        assert!(msgs.is_empty());
        let (address, amount) = o.out.fund_requests.pop().expect("payer asks for funding");
        (o, address, amount)
    }

    /// The signed funding given to the payer; returns it and the payer's `funding_created`, not
    /// yet delivered.
    pub fn funding_created(config: PayerConfig) -> (Opening, Transaction, Message) {
        let (mut o, address, amount) = Opening::accepted(config);
        let funding_tx = fund(&address, amount);
        let actions = o.payer.funding_signed(funding_tx.clone()).unwrap();
        let created = route(actions, &mut o.out).remove(0);
        (o, funding_tx, created)
    }
}
