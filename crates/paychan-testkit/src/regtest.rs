//! One channel driven through the engine against a real regtest node: both parties in this
//! process, every broadcast the engine asks for sent to the node.

use bitcoin::{Address, Amount, FeeRate, Transaction, Txid};
use paychan::chain::{Chain, ChainError, OutputStatus, Rejection};
use paychan::channel::{CheckpointPolicy, Payee, PayeeConfig, Payer, PayerConfig};
use paychan::wire::{ChannelId, Message};
use paychan_wallet::Wallet;

use crate::bitcoind::Node;
use crate::{p2wpkh_address, payee_config, route, signer, Outbox, Step, MARGIN, NETWORK};

/// What a test chooses when it opens a channel.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    pub capacity: Amount,
    /// Blocks from the open to the refund's locktime `R`.
    pub lifetime: u32,
    pub step: u32,
    /// Funding confirmations the payee waits for.
    pub min_conf: u32,
    /// When the payer asks for a checkpoint.
    pub checkpoints: CheckpointPolicy,
}

impl Default for Terms {
    fn default() -> Self {
        Terms {
            capacity: Amount::from_sat(1_000_000),
            lifetime: 60,
            step: 2,
            min_conf: PayeeConfig::default_min_conf(NETWORK),
            checkpoints: CheckpointPolicy::every_payment(),
        }
    }
}

/// What the node said to one broadcast the engine asked for.
pub type Broadcast = (Transaction, Result<Txid, Rejection>);

/// A channel between a payer and a payee, both driven here, on a real node.
pub struct RegtestChannel<'n> {
    pub node: &'n Node,
    pub wallet: Wallet,
    _wallet_dir: tempfile::TempDir,
    pub payer: Payer,
    pub payee: Payee,
    pub terms: Terms,
    pub feerate: FeeRate,
    pub funding_tx: Transaction,
    pub payer_payout: Address,
    pub payee_payout: Address,
    /// The payee's newest commitment (completed with its signature) after each payment, oldest
    /// first. With a checkpoint at every payment it is also the payer's newest checkpoint.
    pub commitments: Vec<Transaction>,
    /// Every broadcast the engine asked for, with the node's answer.
    pub broadcasts: Vec<Broadcast>,
}

impl<'n> RegtestChannel<'n> {
    /// Mines coins to a fresh payer wallet and runs the open up to the funding broadcast: the
    /// payee has signed the refund, the funding is in the mempool, unconfirmed.
    pub fn funded(node: &'n Node, terms: Terms) -> RegtestChannel<'n> {
        let wallet_dir = tempfile::tempdir().expect("temp dir");
        let database = wallet_dir.path().join("wallet.sqlite");
        let mut wallet = Wallet::open(wallet_dir.path(), &database, NETWORK).expect("wallet");
        let coinbase_address = wallet.new_address().expect("address");
        // 101 blocks: the first coinbase (50 BTC on regtest) matures.
        node.chain.mine(101, &coinbase_address).expect("mine");
        let payer_payout = wallet.new_address().expect("address");
        let payee_payout = p2wpkh_address(12);
        let feerate = node.chain.fee_rate(6).expect("fee rate (regtest fallback)");
        let tip = node.height();
        let config = PayerConfig {
            network: NETWORK,
            capacity: terms.capacity,
            feerate_sat_per_vb: feerate.to_sat_per_vb_ceil(),
            refund_locktime: tip + terms.lifetime,
            step: terms.step,
            margin: MARGIN,
            payout: payer_payout.clone(),
            checkpoints: terms.checkpoints,
        };
        let payee_config = PayeeConfig {
            payout: payee_payout.clone(),
            min_conf: terms.min_conf,
            ..payee_config()
        };
        let (mut payer, actions) =
            Payer::open(config, signer(1), ChannelId::random(), tip).unwrap();
        let Message::OpenChannel(open) = take_message(actions) else { panic!("open_channel") };
        let (mut payee, actions) = Payee::accept(&open, &payee_config, signer(2), tip).unwrap();
        let mut out = Outbox::default();
        assert!(route(payer.handle_message(&take_message(actions)).unwrap(), &mut out).is_empty());
        let (address, amount) = out.fund_requests.pop().expect("the payer asks for funding");
        let funding_tx = wallet
            .fund(&node.chain, &address.script_pubkey(), amount, feerate)
            .expect("the wallet funds the channel");
        let created = take_message(payer.funding_signed(funding_tx.clone()).unwrap());
        let refund_signed = take_message(payee.handle_message(&created, tip).unwrap());
        let mut ch = RegtestChannel {
            node,
            wallet,
            _wallet_dir: wallet_dir,
            payer,
            payee,
            terms,
            feerate,
            funding_tx,
            payer_payout,
            payee_payout,
            commitments: Vec::new(),
            broadcasts: Vec::new(),
        };
        let actions = ch.payer.handle_message(&refund_signed).unwrap();
        let msgs = ch.carry(actions);
        assert!(msgs.is_empty());
        let (tx, result) = ch.broadcasts.last().expect("the payer broadcast the funding");
        assert_eq!(tx, &ch.funding_tx);
        assert_eq!(result.as_ref().ok(), Some(&ch.funding_tx.compute_txid()), "{result:?}");
        ch
    }

    /// Opens a channel and waits (mining) for the funding's confirmations.
    pub fn open(node: &'n Node, terms: Terms) -> RegtestChannel<'n> {
        let mut ch = RegtestChannel::funded(node, terms);
        node.mine(terms.min_conf);
        assert!(ch.report_funding(), "the channel is ready after {} blocks", terms.min_conf);
        ch
    }

    /// Reads the funding output from the node and tells the payee; delivers `channel_ready` if
    /// the payee sends it. Returns whether it did.
    pub fn report_funding(&mut self) -> bool {
        let outpoint = self.payee.funding_outpoint().expect("funding known");
        let OutputStatus::Unspent { txout, confirmations } =
            self.node.chain.output_status(outpoint).expect("gettxout")
        else {
            return false;
        };
        let actions = self.payee.funding_confirmed(outpoint, &txout, confirmations).unwrap();
        let msgs = self.carry(actions);
        for msg in &msgs {
            let back = self.payer.handle_message(msg).unwrap();
            assert!(self.carry(back).is_empty());
        }
        !msgs.is_empty()
    }

    /// One payment of `amount`, round trip; records the payee's newest commitment after it.
    pub fn pay(&mut self, amount: Amount) {
        let tip = self.node.height();
        let pay = take_message(self.payer.pay(amount, tip).unwrap());
        let ack = take_message(self.payee.handle_message(&pay, tip).unwrap());
        let actions = self.payer.handle_message(&ack).unwrap();
        assert!(self.carry(actions).is_empty());
        let newest = self.payee.newest_commitment().unwrap().unwrap();
        self.commitments.push(newest);
    }

    /// Cooperative close; returns the settlement the payee broadcast.
    pub fn close(&mut self) -> Transaction {
        let tip = self.node.height();
        let closing = take_message(self.payer.close().unwrap());
        let before = self.broadcasts.len();
        let actions = self.payee.handle_message(&closing, tip).unwrap();
        let ack = self.carry(actions).remove(0);
        assert_eq!(self.broadcasts.len(), before + 1, "the payee broadcast the settlement");
        let (settlement, result) = self.broadcasts.last().cloned().expect("payee broadcast");
        assert_eq!(result.as_ref().ok(), Some(&settlement.compute_txid()), "{result:?}");
        let actions = self.payer.handle_message(&ack).unwrap();
        assert!(self.carry(actions).is_empty());
        settlement
    }

    /// Tells the payee the node's tip and returns what it broadcast (with the node's answers).
    pub fn payee_sees_tip(&mut self) -> Vec<Broadcast> {
        let before = self.broadcasts.len();
        let actions = self.payee.tip_changed(self.node.height()).unwrap();
        let msgs = self.carry(actions);
        assert!(msgs.iter().all(|m| matches!(m, Message::Shutdown(_))), "{msgs:?}");
        self.broadcasts[before..].to_vec()
    }

    /// Tells the payer the node's tip and returns what it broadcast (with the node's answers).
    pub fn payer_sees_tip(&mut self) -> Vec<Broadcast> {
        let before = self.broadcasts.len();
        let actions = self.payer.tip_changed(self.node.height()).unwrap();
        assert!(self.carry(actions).is_empty());
        self.broadcasts[before..].to_vec()
    }

    /// Carries out `actions`: broadcasts go to the node (answers recorded), messages are
    /// returned for delivery.
    pub fn carry<A: Into<Step>>(&mut self, actions: Vec<A>) -> Vec<Message> {
        let mut out = Outbox::default();
        let msgs = route(actions, &mut out);
        assert!(out.fund_requests.is_empty(), "{:?}", out.fund_requests);
        for tx in out.broadcasts {
            let result = match self.node.chain.broadcast(&tx) {
                Ok(txid) => Ok(txid),
                Err(ChainError::Rejected { rejection, .. }) => Err(rejection),
                Err(e) => panic!("the node failed: {e}"),
            };
            self.broadcasts.push((tx, result));
        }
        msgs
    }

    /// Reads the mined channel transaction `txid` back from the node and checks its amounts:
    /// the payee's output is exactly `paid` (none when zero), the payer's is the capacity less
    /// `paid` and the fee the node computed, and that fee is the channel's rate times the mined
    /// size (up to 2 vbytes more: the engine counts the largest signatures).
    pub fn assert_mined_split(&self, txid: Txid, paid: Amount) {
        let (tx, confirmations, vsize) = self.node.get_tx(txid);
        assert!(confirmations > 0, "{txid} is mined");
        let fee = self.node.fee(txid);
        let at_rate = |vb: u64| self.feerate.fee_vb(vb).unwrap();
        assert!(at_rate(vsize) <= fee && fee <= at_rate(vsize + 2), "{fee} for {vsize} vB");
        let to = |address: &Address| -> Vec<Amount> {
            let script = address.script_pubkey();
            tx.output.iter().filter(|o| o.script_pubkey == script).map(|o| o.value).collect()
        };
        let payee_expected = if paid == Amount::ZERO { vec![] } else { vec![paid] };
        assert_eq!(to(&self.payee_payout), payee_expected, "the payee's output");
        assert_eq!(to(&self.payer_payout), vec![self.terms.capacity - fee - paid], "the payer's");
        assert_eq!(tx.output.len(), 1 + payee_expected.len(), "no other output");
    }
}

/// The one message `actions` send, when they send nothing else.
fn take_message<A: Into<Step>>(actions: Vec<A>) -> Message {
    let mut out = Outbox::default();
    let msgs = route(actions, &mut out);
    assert!(out.broadcasts.is_empty() && out.fund_requests.is_empty(), "{out:?}");
    let [msg] = <[Message; 1]>::try_from(msgs).expect("exactly one message");
    msg
}
