//! The payer's state machine: opens and funds the channel, pays (asking for a checkpoint when
//! its policy says so), and settles.

use bitcoin::{
    ecdsa, Address, Amount, FeeRate, Network, OutPoint, PublicKey, ScriptBuf, Transaction,
};
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::funded::check_id;
use super::payment::NextPayment;
use super::{
    Channel, ChannelError, ChannelTerms, CheckpointPolicy, FundedChannel, PayerAction, Payment,
    SettlementSigs, SignedUpdate, TxKind,
};
use crate::funding::FundingScript;
use crate::keys::ChannelSigner;
use crate::ladder::LockTimeLadder;
use crate::wire::{self, ChannelId, Message, RawSignature};

/// What the payer chooses when opening a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerConfig {
    /// The chain.
    pub network: Network,
    /// The funding output's value.
    pub capacity: Amount,
    /// The fee rate of every channel transaction, in whole sat/vB (as it travels on the wire).
    pub feerate_sat_per_vb: u64,
    /// The refund's `nLockTime`, `R` (a block height).
    pub refund_locktime: u32,
    /// Blocks between commitment locktimes.
    pub step: u32,
    /// The payer refuses to sign a commitment whose locktime is within this many blocks of the
    /// tip.
    pub margin: u32,
    /// Where the payer's money goes (refund and change of every split).
    pub payout: Address,
    /// When to ask the payee to countersign (the command line's default:
    /// [`CheckpointPolicy::default_for`] the capacity).
    pub checkpoints: CheckpointPolicy,
}

/// The payer's side of a funded channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayerFunded {
    /// What both sides hold.
    pub funded: FundedChannel,
    /// The signed funding transaction.
    pub funding_tx: Transaction,
    /// The payee's signature on the refund.
    pub refund_payee_sig: ecdsa::Signature,
    /// Payments signed and sent but not yet acknowledged, oldest first, each on top of the one
    /// before (pipelining: the payer need not wait for an acknowledgement to pay again). They
    /// are kept without the payer's signature, which is deterministic and signed again to
    /// resend, except a checkpoint's, which the payer needs with the payee's.
    #[serde(deserialize_with = "pending_queue")]
    pub pending: VecDeque<Payment>,
    /// The payer's signature on the settlement, once it asked to close.
    pub closing_sig: Option<ecdsa::Signature>,
}

/// Where the payer is in the channel's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one per channel, not worth boxing
pub enum PayerStage {
    /// `open_channel` sent.
    AwaitingAccept,
    /// The payee accepted; the funding transaction is to be built and signed.
    AwaitingFunding {
        /// The payee's funding key.
        payee_key: PublicKey,
        /// Where the payee's money goes.
        payee_script: ScriptBuf,
    },
    /// `funding_created` sent; waiting for the refund signature. Nothing is broadcast yet.
    AwaitingRefund {
        /// The channel.
        channel: Channel,
        /// The signed funding transaction, held back.
        funding_tx: Transaction,
    },
    /// The refund is signed and the funding broadcast.
    Funded(Box<PayerFunded>),
}

impl PayerStage {
    /// Returns the stage in words: `awaiting accept`, `awaiting funding`, `awaiting refund
    /// signature`, `awaiting channel ready`, `open`, `closing` or `settled`.
    pub fn name(&self) -> &'static str {
        match self {
            PayerStage::AwaitingAccept => "awaiting accept",
            PayerStage::AwaitingFunding { .. } => "awaiting funding",
            PayerStage::AwaitingRefund { .. } => "awaiting refund signature",
            PayerStage::Funded(f) if f.funded.settlement.is_some() => "settled",
            PayerStage::Funded(f) if f.closing_sig.is_some() => "closing",
            PayerStage::Funded(f) if !f.funded.ready => "awaiting channel ready",
            PayerStage::Funded(_) => "open",
        }
    }
}

/// The payer's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayerState {
    /// What the payer proposed.
    pub terms: ChannelTerms,
    /// The payer's safety margin in blocks.
    pub margin: u32,
    /// Where the channel is.
    pub stage: PayerStage,
}

impl PayerState {
    /// Returns the payee's channel key, once it has accepted.
    pub fn payee_key(&self) -> Option<PublicKey> {
        match &self.stage {
            PayerStage::AwaitingAccept => None,
            PayerStage::AwaitingFunding { payee_key, .. } => Some(*payee_key),
            PayerStage::AwaitingRefund { channel, .. } => Some(channel.params().payee_key),
            PayerStage::Funded(f) => Some(f.funded.channel.params().payee_key),
        }
    }
}

/// The payer's state machine.
#[derive(Debug, Clone)]
pub struct Payer {
    pub(super) signer: ChannelSigner,
    state: PayerState,
}

impl Payer {
    /// Starts a channel: returns the payer and the `open_channel` message to send.
    ///
    /// `tip` is the current chain height: the ladder must leave room for at least one payment.
    ///
    /// # Errors
    /// [`ChannelError::WrongNetwork`] if the payout address is for another chain,
    /// [`ChannelError::Ladder`] for a zero step or a refund too close to the tip.
    pub fn open(
        config: PayerConfig,
        signer: ChannelSigner,
        channel_id: ChannelId,
        tip: u32,
    ) -> Result<(Payer, Vec<PayerAction>), ChannelError> {
        if !config.payout.as_unchecked().is_valid_for_network(config.network) {
            return Err(ChannelError::WrongNetwork {
                expected: config.network,
                got: config.payout.to_string(),
            });
        }
        let ladder = LockTimeLadder::new(config.refund_locktime, config.step)?;
        ladder.usable_locktime(1, tip, config.margin)?;
        if !config.checkpoints.is_valid() {
            return Err(ChannelError::BadCheckpointPolicy);
        }
        let feerate_sat_per_vb = config.feerate_sat_per_vb;
        let feerate = FeeRate::from_sat_per_vb(feerate_sat_per_vb)
            .ok_or(ChannelError::Tx(crate::tx::TxError::Overflow))?;
        let terms = ChannelTerms {
            channel_id,
            network: config.network,
            capacity: config.capacity,
            feerate,
            ladder,
            payer_key: signer.public_key(),
            payer_script: config.payout.script_pubkey(),
            checkpoints: config.checkpoints,
        };
        let open = Message::OpenChannel(wire::OpenChannel {
            channel_id,
            network: config.network,
            capacity_sat: config.capacity.to_sat(),
            feerate_sat_per_vb,
            refund_locktime: ladder.refund(),
            step: ladder.step(),
            payer_key: terms.payer_key,
            payer_address: config.payout.as_unchecked().clone(),
            checkpoint_every_payments: config.checkpoints.every_payments.map(|n| n.get()),
            checkpoint_every_sat: config.checkpoints.every_sat.map(Amount::to_sat),
        });
        let state = PayerState { terms, margin: config.margin, stage: PayerStage::AwaitingAccept };
        Ok((Payer { signer, state }, vec![PayerAction::Persist, PayerAction::Send(open)]))
    }

    /// Resumes a payer from its persisted state.
    ///
    /// # Errors
    /// [`ChannelError::SignerMismatch`] if `signer` does not hold the channel's key,
    /// [`ChannelError::InconsistentState`] if the state contradicts itself.
    pub fn restore(signer: ChannelSigner, state: PayerState) -> Result<Payer, ChannelError> {
        if signer.public_key() != state.terms.payer_key {
            return Err(ChannelError::SignerMismatch);
        }
        match &state.stage {
            PayerStage::AwaitingRefund { channel, .. } => {
                channel.check_built_from(&state.terms, None)?
            }
            PayerStage::Funded(f) => f.funded.channel.check_built_from(&state.terms, None)?,
            PayerStage::AwaitingAccept | PayerStage::AwaitingFunding { .. } => {}
        }
        Ok(Payer { signer, state })
    }

    /// Returns the state to persist.
    pub fn state(&self) -> &PayerState {
        &self.state
    }

    /// Returns the funded channel, once the refund is signed.
    pub fn funded(&self) -> Option<&PayerFunded> {
        match &self.state.stage {
            PayerStage::Funded(f) => Some(f),
            _ => None,
        }
    }

    /// Returns the total the payee has acknowledged.
    ///
    /// Payments in flight are not in it; [`PayerFunded::pending`] holds them.
    pub fn paid(&self) -> Amount {
        self.funded().map_or(Amount::ZERO, |f| f.funded.paid())
    }

    /// Handles a message from the payee.
    ///
    /// # Errors
    /// Any [`ChannelError`]; the state is then unchanged.
    pub fn handle_message(&mut self, msg: &Message) -> Result<Vec<PayerAction>, ChannelError> {
        check_id(self.state.terms.channel_id, msg.channel_id())?;
        match msg {
            Message::AcceptChannel(m) => self.on_accept(m),
            Message::RefundSigned(m) => self.on_refund_signed(&m.signature),
            Message::ChannelReady(_) => self.on_channel_ready(),
            Message::PayAck(m) => self.on_pay_ack(m.update, m.signature.as_ref()),
            Message::Shutdown(_) => self.close(),
            Message::ClosingAck(m) => self.on_closing_ack(&m.signature),
            Message::Reconcile(m) => self.on_reconcile(m),
            other => Err(self.unexpected(other.name())),
        }
    }

    /// Takes the signed funding transaction asked for by [`PayerAction::FundChannel`] and returns the
    /// `funding_created` message. The transaction is kept, not broadcast: that happens only
    /// after the refund signature has been checked.
    ///
    /// # Errors
    /// [`ChannelError::FundingNotPaid`], [`ChannelError::FundingAmbiguous`],
    /// [`ChannelError::FundingValueMismatch`], [`ChannelError::FundingNotSegwit`] or
    /// [`ChannelError::FundingSignalsRbf`].
    pub fn funding_signed(
        &mut self,
        funding_tx: Transaction,
    ) -> Result<Vec<PayerAction>, ChannelError> {
        let PayerStage::AwaitingFunding { payee_key, payee_script } = &self.state.stage else {
            return Err(self.unexpected("funding transaction"));
        };
        if let Some(index) = funding_tx.input.iter().position(|i| !i.script_sig.is_empty()) {
            return Err(ChannelError::FundingNotSegwit { index });
        }
        if let Some(index) = funding_tx.input.iter().position(|i| i.sequence.is_rbf()) {
            return Err(ChannelError::FundingSignalsRbf { index });
        }
        let funding = FundingScript::new(self.state.terms.payer_key, *payee_key)?;
        let mut paying = funding_tx
            .output
            .iter()
            .enumerate()
            .filter(|(_, o)| &o.script_pubkey == funding.script_pubkey());
        let (vout, out) = paying.next().ok_or(ChannelError::FundingNotPaid)?;
        if paying.next().is_some() {
            return Err(ChannelError::FundingAmbiguous);
        }
        if out.value != self.state.terms.capacity {
            return Err(ChannelError::FundingValueMismatch {
                expected: self.state.terms.capacity,
                got: out.value,
            });
        }
        let vout = u32::try_from(vout).map_err(|_| ChannelError::FundingNotPaid)?;
        let outpoint = OutPoint::new(funding_tx.compute_txid(), vout);
        let channel = self.state.terms.channel(*payee_key, payee_script.clone(), outpoint)?;
        let msg = funding_created(self.state.terms.channel_id, &funding_tx, vout);
        self.state.stage = PayerStage::AwaitingRefund { channel, funding_tx };
        Ok(vec![PayerAction::Persist, PayerAction::Send(msg)])
    }

    /// Signs a payment of `amount` on top of the total so far (including payments still in
    /// flight) and returns the `pay` message. It is a checkpoint if the channel's
    /// [`CheckpointPolicy`] says one is due.
    ///
    /// `tip` is the current chain height: the payer refuses a payment whose locktime is within
    /// its margin of the tip.
    ///
    /// # Errors
    /// [`ChannelError::ZeroPayment`], [`ChannelError::AmountOverflow`],
    /// [`ChannelError::Ladder`] (close the channel), [`ChannelError::Tx`] with
    /// `InsufficientBalance`, or [`ChannelError::Unexpected`] when not open.
    pub fn pay(&mut self, amount: Amount, tip: u32) -> Result<Vec<PayerAction>, ChannelError> {
        self.pay_with(amount, tip, false)
    }

    /// Pays as [`Payer::pay`] does and asks the payee to countersign this payment whatever the
    /// policy: a checkpoint. Once acknowledged, the payer holds a fully signed commitment for
    /// the new total, its way out if the payee vanishes, and the payments after it move one
    /// rung down the ladder.
    ///
    /// # Errors
    /// As [`Payer::pay`].
    pub fn pay_checkpoint(
        &mut self,
        amount: Amount,
        tip: u32,
    ) -> Result<Vec<PayerAction>, ChannelError> {
        self.pay_with(amount, tip, true)
    }

    fn pay_with(
        &mut self,
        amount: Amount,
        tip: u32,
        checkpoint: bool,
    ) -> Result<Vec<PayerAction>, ChannelError> {
        let margin = self.state.margin;
        let f = self.open_channel("pay")?;
        if amount == Amount::ZERO {
            return Err(ChannelError::ZeroPayment);
        }
        let after = f.pending.back().or(f.funded.newest.as_ref());
        let next = NextPayment::after(after, f.funded.channel.ladder());
        let paid = next.previous_paid;
        let total =
            paid.checked_add(amount).ok_or(ChannelError::AmountOverflow { paid, amount })?;
        let checkpoint = checkpoint || next.due(&self.state.terms.checkpoints, total);
        let locktime = LockTimeLadder::usable(next.locktime, tip, margin)?;
        let (mut payment, tx) =
            f.funded.payment_after(after, next.number, total, locktime, checkpoint, tip, margin)?;
        let payer_sig = f.funded.channel.sign(&self.signer, &tx)?;
        // A checkpoint's signature is kept until the payee's comes to complete it.
        payment.payer_sig = checkpoint.then_some(payer_sig);
        let msg = pay_message(self.state.terms.channel_id, &payment, payer_sig);
        self.funded_mut().pending.push_back(payment);
        Ok(vec![PayerAction::Persist, PayerAction::Send(msg)])
    }

    /// Signs the settlement for the total acknowledged so far and returns `closing_signed`.
    ///
    /// # Errors
    /// [`ChannelError::Unexpected`] when not open or while a payment is in flight.
    pub fn close(&mut self) -> Result<Vec<PayerAction>, ChannelError> {
        let f = self.open_channel("close")?;
        if !f.pending.is_empty() {
            return Err(self.unexpected("close while a payment is in flight"));
        }
        let paid = f.funded.paid();
        let tx = f.funded.channel.builder().settlement(paid)?;
        let sig = f.funded.channel.sign(&self.signer, &tx)?;
        let msg = Message::ClosingSigned(wire::ClosingSigned {
            channel_id: self.state.terms.channel_id,
            paid_total_sat: paid.to_sat(),
            signature: sig.into(),
        });
        self.funded_mut().closing_sig = Some(sig);
        Ok(vec![PayerAction::Persist, PayerAction::Send(msg)])
    }

    /// Returns the messages still waiting for their answer, to send again after a lost message
    /// or a reconnect: the `pay`s not yet acknowledged, in order (signed again: the signatures
    /// are deterministic, so they are the ones sent before), or the `closing_signed` not yet
    /// answered. The payee answers a repeat of a payment it holds with the acknowledgements of
    /// its newest checkpoint and its newest payment; it changes nothing for either.
    ///
    /// Returns no action when nothing is waiting.
    ///
    /// # Errors
    /// [`ChannelError::Tx`] if a commitment cannot be rebuilt (corrupted state).
    pub fn resend_pending(&self) -> Result<Vec<PayerAction>, ChannelError> {
        let Some(f) = self.funded() else { return Ok(Vec::new()) };
        let channel_id = self.state.terms.channel_id;
        if !f.pending.is_empty() {
            let channel = &f.funded.channel;
            return f
                .pending
                .iter()
                .map(|p| {
                    let tx = channel.builder().commitment(p.paid, p.locktime)?;
                    let sig = channel.sign(&self.signer, &tx)?;
                    Ok(PayerAction::Send(pay_message(channel_id, p, sig)))
                })
                .collect();
        }
        Ok(match (f.closing_sig, &f.funded.settlement) {
            (Some(sig), None) => {
                vec![PayerAction::Send(Message::ClosingSigned(wire::ClosingSigned {
                    channel_id,
                    paid_total_sat: f.funded.paid().to_sat(),
                    signature: sig.into(),
                }))]
            }
            _ => Vec::new(),
        })
    }

    /// Forgets the payments in flight after the payee refused the oldest (it answered `error`;
    /// those after it build on it and are refused too), so that the channel can go on or
    /// close. Returns the oldest update forgotten.
    ///
    /// The payee holds the payer's signatures on them all the same; a payee that lied about
    /// refusing could complete one of those commitments and broadcast it, for at most the
    /// amounts in flight, and only before a settlement confirms. Do not call it for payments
    /// that merely went unanswered: resend those ([`Payer::reestablish`]).
    pub fn abandon_pending(&mut self) -> Option<Payment> {
        match &mut self.state.stage {
            PayerStage::Funded(f) => std::mem::take(&mut f.pending).pop_front(),
            _ => None,
        }
    }

    /// Returns the proof of this channel's payer key on the connection whose session has the
    /// handshake hash `session`: the first message on every connection ([`crate::auth`]).
    pub fn authenticate(&self, session: &[u8; 32]) -> Message {
        let channel_id = self.state.terms.channel_id;
        Message::Authenticate(crate::auth::authenticate(&self.signer, session, channel_id))
    }

    /// Returns what to do after (re)connecting to the payee, to pick up where the channel was:
    ///
    /// - waiting for the refund signature: send `funding_created` again;
    /// - funded but not ready: broadcast the funding again (the first broadcast may not have
    ///   happened before a crash; a repeat is harmless) and send `reestablish`, which the payee
    ///   answers with `channel_ready` once the funding has its confirmations;
    /// - open: send `reestablish`, which the payee answers with `reconcile`, the newest payment
    ///   it holds; taking it ([`Payer::handle_message`]) resends what is still in flight
    ///   ([`Payer::resend_pending`]). Nothing may be paid before it came.
    ///
    /// Returns no action before the payee accepted (nothing is committed yet). A settled channel
    /// sends `reestablish` too: the payee's `reconcile` then changes nothing.
    ///
    /// # Errors
    /// As [`Payer::resend_pending`].
    pub fn reestablish(&self) -> Result<Vec<PayerAction>, ChannelError> {
        let channel_id = self.state.terms.channel_id;
        match &self.state.stage {
            PayerStage::AwaitingRefund { channel, funding_tx } => {
                let vout = channel.params().funding_outpoint.vout;
                Ok(vec![PayerAction::Send(funding_created(channel_id, funding_tx, vout))])
            }
            PayerStage::Funded(f) if !f.funded.ready => Ok(vec![
                PayerAction::Broadcast(f.funding_tx.clone()),
                PayerAction::Send(Message::Reestablish(wire::Reestablish { channel_id })),
            ]),
            PayerStage::Funded(_) => {
                Ok(vec![PayerAction::Send(Message::Reestablish(wire::Reestablish { channel_id }))])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Tells the payer the chain tip is now `tip` (call it on every new block) and returns what
    /// that calls for, while the channel is not settled:
    ///
    /// - once `tip` reaches the newest checkpoint's locktime, broadcast it: the payer's way out
    ///   if the payee has vanished, paying the payee what that checkpoint owes it. A payee that
    ///   is there has broadcast its newer state at least `step` blocks earlier, and the node
    ///   refuses this one;
    /// - without a checkpoint, once `tip >= R`, broadcast the refund.
    ///
    /// If a commitment or the settlement already spent the funding, the node refuses what the
    /// payer broadcasts and nothing is lost. Changes no state.
    ///
    /// # Errors
    /// [`ChannelError::Tx`] if the transaction cannot be rebuilt (corrupted state).
    pub fn tip_changed(&self, tip: u32) -> Result<Vec<PayerAction>, ChannelError> {
        let Some(f) = self.funded().filter(|f| f.funded.settlement.is_none()) else {
            return Ok(Vec::new());
        };
        if tip < f.funded.checkpoint_locktime() {
            return Ok(Vec::new());
        }
        let exit = match f.funded.checkpoint_tx()? {
            Some(checkpoint) => checkpoint,
            None => self.refund_tx()?,
        };
        Ok(vec![PayerAction::Broadcast(exit)])
    }

    /// Returns the refund with both signatures, to broadcast once the tip reaches `R`.
    ///
    /// # Errors
    /// [`ChannelError::Unexpected`] before the refund is signed.
    pub fn refund_tx(&self) -> Result<Transaction, ChannelError> {
        let f = self.funded().ok_or_else(|| self.unexpected("refund"))?;
        let builder = f.funded.channel.builder();
        let tx = builder.refund(f.funded.channel.ladder().refund())?;
        let payer_sig = f.funded.channel.sign(&self.signer, &tx)?;
        Ok(builder.finalize(tx, payer_sig, f.refund_payee_sig)?)
    }

    fn on_accept(&mut self, m: &wire::AcceptChannel) -> Result<Vec<PayerAction>, ChannelError> {
        if !matches!(self.state.stage, PayerStage::AwaitingAccept) {
            return Err(self.unexpected("accept_channel"));
        }
        let network = self.state.terms.network;
        let payee_address = m.payee_address.clone().require_network(network).map_err(|_| {
            ChannelError::WrongNetwork {
                expected: network,
                got: m.payee_address.clone().assume_checked().to_string(),
            }
        })?;
        // Building the channel now checks the keys, and the capacity against the fees and dust
        // limits, before any coin is committed; the funding outpoint is not known yet.
        let payee_script = payee_address.script_pubkey();
        let channel =
            self.state.terms.channel(m.payee_key, payee_script.clone(), OutPoint::null())?;
        let action = PayerAction::FundChannel {
            address: channel.builder().funding().address(network),
            amount: self.state.terms.capacity,
        };
        self.state.stage = PayerStage::AwaitingFunding { payee_key: m.payee_key, payee_script };
        Ok(vec![PayerAction::Persist, action])
    }

    fn on_refund_signed(&mut self, sig: &RawSignature) -> Result<Vec<PayerAction>, ChannelError> {
        let PayerStage::AwaitingRefund { channel, funding_tx } = &self.state.stage else {
            return Err(self.unexpected("refund_signed"));
        };
        let refund = channel.builder().refund(channel.ladder().refund())?;
        let refund_payee_sig =
            channel.check_signature(&self.signer, TxKind::Refund, &refund, sig)?;
        let funding_tx = funding_tx.clone();
        let funded = PayerFunded {
            funded: FundedChannel::new(channel.clone()),
            funding_tx: funding_tx.clone(),
            refund_payee_sig,
            pending: VecDeque::new(),
            closing_sig: None,
        };
        self.state.stage = PayerStage::Funded(Box::new(funded));
        // Only now, with a valid refund in hand, may the funding reach the chain.
        Ok(vec![PayerAction::Persist, PayerAction::Broadcast(funding_tx)])
    }

    fn on_channel_ready(&mut self) -> Result<Vec<PayerAction>, ChannelError> {
        match &self.state.stage {
            PayerStage::Funded(f) if !f.funded.ready => {}
            // A repeat, after a reestablish: nothing to do.
            PayerStage::Funded(_) => return Ok(Vec::new()),
            _ => return Err(self.unexpected("channel_ready")),
        }
        self.funded_mut().funded.ready = true;
        Ok(vec![PayerAction::Persist])
    }

    /// Takes the payee's acknowledgement of pending payment `update`: every pending payment up
    /// to it is done, and it becomes the newest. A checkpoint's acknowledgement carries the
    /// payee's signature, checked against our own copy of the commitment; it becomes the newest
    /// checkpoint. Acknowledgements normally come in order; after a reconnect the payee may
    /// acknowledge its newest checkpoint and its newest payment directly. An acknowledgement of
    /// a payment already acknowledged is a repeat and changes nothing.
    pub(super) fn on_pay_ack(
        &mut self,
        update: u64,
        sig: Option<&RawSignature>,
    ) -> Result<Vec<PayerAction>, ChannelError> {
        let f = self.funded().ok_or_else(|| self.unexpected("pay_ack"))?;
        if update <= f.funded.payments() {
            return Ok(Vec::new());
        }
        let pending = f.pending.iter().find(|p| p.number == update).ok_or_else(|| {
            match f.pending.front() {
                Some(p) => ChannelError::UnexpectedUpdate { expected: p.number, got: update },
                None => self.unexpected("pay_ack"),
            }
        })?;
        let checkpoint = match (pending.payer_sig.filter(|_| pending.checkpoint), sig) {
            (Some(payer_sig), Some(sig)) => {
                let channel = &f.funded.channel;
                let tx = channel.builder().commitment(pending.paid, pending.locktime)?;
                let kind = TxKind::Commitment(update);
                let payee_sig = channel.check_signature(&self.signer, kind, &tx, sig)?;
                let (number, paid, locktime) = (pending.number, pending.paid, pending.locktime);
                Some(SignedUpdate { number, paid, locktime, payer_sig, payee_sig })
            }
            (Some(_), None) => return Err(ChannelError::CheckpointNotSigned { update }),
            (None, Some(_)) => return Err(self.unexpected("signature on a payment")),
            (None, None) => None,
        };
        let newest = Payment { payer_sig: None, ..*pending };
        let f = self.funded_mut();
        f.pending.retain(|p| p.number > update);
        f.funded.newest = Some(newest);
        if checkpoint.is_some() {
            f.funded.checkpoint = checkpoint;
        }
        Ok(vec![PayerAction::Persist])
    }

    fn on_closing_ack(&mut self, sig: &RawSignature) -> Result<Vec<PayerAction>, ChannelError> {
        let f = self.funded().ok_or_else(|| self.unexpected("closing_ack"))?;
        let (Some(payer_sig), None) = (f.closing_sig, &f.funded.settlement) else {
            return Err(self.unexpected("closing_ack"));
        };
        let channel = &f.funded.channel;
        let paid = f.funded.paid();
        let tx = channel.builder().settlement(paid)?;
        let payee_sig = channel.check_signature(&self.signer, TxKind::Settlement, &tx, sig)?;
        self.funded_mut().funded.settlement = Some(SettlementSigs { paid, payer_sig, payee_sig });
        Ok(vec![PayerAction::Persist])
    }

    /// Returns the funded channel if it can take payments or a close.
    fn open_channel(&self, what: &'static str) -> Result<&PayerFunded, ChannelError> {
        match &self.state.stage {
            PayerStage::Funded(f)
                if f.funded.ready && f.closing_sig.is_none() && f.funded.settlement.is_none() =>
            {
                Ok(f)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    pub(super) fn funded_mut(&mut self) -> &mut PayerFunded {
        match &mut self.state.stage {
            PayerStage::Funded(f) => f,
            // Only called after a check that the stage is `Funded`.
            _ => unreachable!("funded_mut called before funding"),
        }
    }

    pub(super) fn unexpected(&self, what: &'static str) -> ChannelError {
        ChannelError::Unexpected { what, state: self.state.stage.name() }
    }
}

/// The `pay` message of payment `p`, signed `sig`.
fn pay_message(channel_id: ChannelId, p: &Payment, sig: ecdsa::Signature) -> Message {
    Message::Pay(wire::Pay {
        channel_id,
        update: p.number,
        paid_total_sat: p.paid.to_sat(),
        locktime: p.locktime,
        checkpoint: p.checkpoint,
        signature: sig.into(),
    })
}

/// Reads the pending payments as a list, or as the single optional payment that states saved
/// before pipelining hold. (Payments saved before checkpoints read as checkpoints: then both
/// signed every update.)
fn pending_queue<'de, D: serde::Deserializer<'de>>(d: D) -> Result<VecDeque<Payment>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Saved {
        Queue(VecDeque<Payment>),
        One(Option<Payment>),
    }
    Ok(match Saved::deserialize(d)? {
        Saved::Queue(q) => q,
        Saved::One(one) => one.into_iter().collect(),
    })
}

/// Returns `funding_created` for `funding_tx`. The payee gets the transaction without witnesses:
/// enough to check the output and learn the txid, not enough to broadcast it and hold the
/// payer's coins hostage.
fn funding_created(channel_id: ChannelId, funding_tx: &Transaction, vout: u32) -> Message {
    let mut unsigned = funding_tx.clone();
    unsigned.input.iter_mut().for_each(|i| i.witness.clear());
    Message::FundingCreated(wire::FundingCreated { channel_id, funding_tx: unsigned, vout })
}
