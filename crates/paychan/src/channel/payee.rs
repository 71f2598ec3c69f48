//! The payee's state machine: accepts a channel, signs the refund, takes payments (checking and
//! storing the payer's signature on each), countersigns the checkpoints, and settles.

use bitcoin::{
    Address, Amount, FeeRate, Network, OutPoint, PublicKey, ScriptBuf, Transaction, TxOut,
};
use serde::{Deserialize, Serialize};

use super::funded::{check_id, verified};
use super::payment::NextPayment;
use super::{
    ChannelError, ChannelTerms, CheckpointPolicy, FundedChannel, PayeeAction, Payment,
    SettlementSigs, SignedUpdate, TxKind,
};
use crate::keys::{ChannelSigner, SignatureCheck};
use crate::ladder::LockTimeLadder;
use crate::wire::{self, Message};

/// The payee's policy for the channels it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayeeConfig {
    /// The chain; a channel on any other is refused.
    pub network: Network,
    /// Where the payee's money goes.
    pub payout: Address,
    /// The payee refuses a commitment whose locktime is within this many blocks of the tip: the
    /// notice it wants before its newest state becomes final.
    pub margin: u32,
    /// The least locktime step accepted, in blocks: the payee's window to get the newest
    /// commitment mined before the previous one becomes final, when the payer vanishes
    /// ([`PayeeConfig::default_min_step`]).
    pub min_step: u32,
    /// The most blocks from the tip to the refund's locktime `R` accepted: the payee's money is
    /// claimable on chain only once the payer stops paying and its newest state becomes final,
    /// which may take until near `R` ([`PayeeConfig::default_max_lifetime`]).
    pub max_lifetime: u32,
    /// The least fee rate accepted, in sat/vB, so that closing transactions relay.
    pub min_feerate_sat_per_vb: u64,
    /// Confirmations of the funding required before taking payments
    /// ([`PayeeConfig::default_min_conf`]). Zero takes payments on an unconfirmed funding, which
    /// the payer can still double-spend: the payments would then be worth nothing.
    pub min_conf: u32,
}

impl PayeeConfig {
    /// Returns the default least step for `network`: 1 block on regtest, where blocks come on
    /// demand; 6 elsewhere (an hour, on mainnet, to get the newest commitment mined).
    pub fn default_min_step(network: Network) -> u32 {
        match network {
            Network::Regtest => 1,
            _ => 6,
        }
    }

    /// Returns the default longest lifetime: 4032 blocks (four weeks on mainnet) on every
    /// network, four times the command line's default lifetime.
    pub fn default_max_lifetime(_network: Network) -> u32 {
        4032
    }

    /// Returns the default funding confirmations for `network`: 1 on regtest, where blocks come
    /// on demand and nobody reorganizes them; 3 on the test networks; 6 on mainnet, where a
    /// double-spend after a reorganization is worth attempting.
    pub fn default_min_conf(network: Network) -> u32 {
        match network {
            Network::Regtest => 1,
            Network::Bitcoin => 6,
            _ => 3,
        }
    }
}

/// Where the payee is in the channel's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one per channel, not worth boxing
pub enum PayeeStage {
    /// `accept_channel` sent; waiting for the funding transaction.
    AwaitingFunding,
    /// The refund is signed; payments are taken once the funding is confirmed (`ready`).
    Funded(FundedChannel),
}

impl PayeeStage {
    /// Returns the stage in words: `awaiting funding`, `awaiting funding confirmation`, `open`
    /// or `settled`.
    pub fn name(&self) -> &'static str {
        match self {
            PayeeStage::AwaitingFunding => "awaiting funding",
            PayeeStage::Funded(f) if f.settlement.is_some() => "settled",
            PayeeStage::Funded(f) if !f.ready => "awaiting funding confirmation",
            PayeeStage::Funded(_) => "open",
        }
    }
}

/// The payee's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayeeState {
    /// What the payer proposed.
    pub terms: ChannelTerms,
    /// The payee's safety margin in blocks.
    pub margin: u32,
    /// Funding confirmations required.
    pub min_conf: u32,
    /// The payee's funding key.
    pub payee_key: PublicKey,
    /// Where the payee's money goes.
    pub payee_script: ScriptBuf,
    /// Where the channel is.
    pub stage: PayeeStage,
}

/// The payee's state machine.
#[derive(Debug, Clone)]
pub struct Payee {
    pub(super) signer: ChannelSigner,
    pub(super) state: PayeeState,
}

impl Payee {
    /// Checks an `open_channel` against the payee's policy and returns the payee and the
    /// `accept_channel` message to send.
    ///
    /// `signer` must hold a key used for no other channel. The funding script depends only on the
    /// two keys, so with a reused key a payer could present one funding output for two channels
    /// and pay both from a single deposit; derive a fresh key per channel.
    ///
    /// # Errors
    /// [`ChannelError::WrongNetwork`], [`ChannelError::FeeRateTooLow`],
    /// [`ChannelError::StepTooShort`], [`ChannelError::Ladder`] (refund too close to `tip`),
    /// [`ChannelError::Funding`] (unusable key) or [`ChannelError::Tx`] (capacity too small).
    pub fn accept(
        open: &wire::OpenChannel,
        config: &PayeeConfig,
        signer: ChannelSigner,
        tip: u32,
    ) -> Result<(Payee, Vec<PayeeAction>), ChannelError> {
        let network = config.network;
        if !config.payout.as_unchecked().is_valid_for_network(network) {
            return Err(ChannelError::WrongNetwork {
                expected: network,
                got: config.payout.to_string(),
            });
        }
        if open.network != network {
            return Err(ChannelError::WrongNetwork {
                expected: network,
                got: open.network.to_string(),
            });
        }
        let payer_address = open.payer_address.clone().require_network(network).map_err(|_| {
            ChannelError::WrongNetwork {
                expected: network,
                got: open.payer_address.clone().assume_checked().to_string(),
            }
        })?;
        if open.feerate_sat_per_vb < config.min_feerate_sat_per_vb {
            return Err(ChannelError::FeeRateTooLow {
                min: config.min_feerate_sat_per_vb,
                got: open.feerate_sat_per_vb,
            });
        }
        let feerate = FeeRate::from_sat_per_vb(open.feerate_sat_per_vb)
            .ok_or(ChannelError::Tx(crate::tx::TxError::Overflow))?;
        if open.step < config.min_step {
            return Err(ChannelError::StepTooShort { min: config.min_step, got: open.step });
        }
        let lifetime = open.refund_locktime.saturating_sub(tip);
        if lifetime > config.max_lifetime {
            return Err(ChannelError::LifetimeTooLong { max: config.max_lifetime, got: lifetime });
        }
        let ladder = LockTimeLadder::new(open.refund_locktime, open.step)?;
        ladder.usable_locktime(1, tip, config.margin)?;
        let checkpoints = checkpoint_policy(open)?;
        let payee_key = signer.public_key();
        let payee_script = config.payout.script_pubkey();
        let terms = ChannelTerms {
            channel_id: open.channel_id,
            network,
            capacity: Amount::from_sat(open.capacity_sat),
            feerate,
            ladder,
            payer_key: open.payer_key,
            payer_script: payer_address.script_pubkey(),
            checkpoints,
        };
        // Checks the keys, and the capacity against the fees and dust limits.
        terms.channel(payee_key, payee_script.clone(), OutPoint::null())?;
        let state = PayeeState {
            terms,
            margin: config.margin,
            min_conf: config.min_conf,
            payee_key,
            payee_script,
            stage: PayeeStage::AwaitingFunding,
        };
        let accept = Message::AcceptChannel(wire::AcceptChannel {
            channel_id: open.channel_id,
            payee_key,
            payee_address: config.payout.as_unchecked().clone(),
        });
        Ok((Payee { signer, state }, vec![PayeeAction::Persist, PayeeAction::Send(accept)]))
    }

    /// Resumes a payee from its persisted state.
    ///
    /// # Errors
    /// [`ChannelError::SignerMismatch`] if `signer` does not hold the channel's key,
    /// [`ChannelError::InconsistentState`] if the state contradicts itself.
    pub fn restore(signer: ChannelSigner, state: PayeeState) -> Result<Payee, ChannelError> {
        if signer.public_key() != state.payee_key {
            return Err(ChannelError::SignerMismatch);
        }
        if let PayeeStage::Funded(f) = &state.stage {
            let payee = (&state.payee_key, &state.payee_script);
            f.channel.check_built_from(&state.terms, Some(payee))?;
        }
        Ok(Payee { signer, state })
    }

    /// Returns the state to persist.
    pub fn state(&self) -> &PayeeState {
        &self.state
    }

    /// Returns the funded channel, once the refund is signed.
    pub fn funded(&self) -> Option<&FundedChannel> {
        match &self.state.stage {
            PayeeStage::Funded(f) => Some(f),
            PayeeStage::AwaitingFunding => None,
        }
    }

    /// Returns the total of the newest payment taken.
    pub fn paid(&self) -> Amount {
        self.funded().map_or(Amount::ZERO, FundedChannel::paid)
    }

    /// Returns the newest payment's commitment with both signatures (the payee's claim if the
    /// payer vanishes: the payee completes the payer's signature with its own), or `None` before
    /// the first payment.
    ///
    /// # Errors
    /// [`ChannelError::Tx`] if it cannot be rebuilt.
    pub fn newest_commitment(&self) -> Result<Option<Transaction>, ChannelError> {
        let Some((f, p)) = self.funded().and_then(|f| Some(f).zip(f.newest.as_ref())) else {
            return Ok(None);
        };
        if f.checkpoint.as_ref().is_some_and(|c| c.number == p.number) {
            return f.checkpoint_tx();
        }
        let payer_sig = p.payer_sig.ok_or(ChannelError::InconsistentState { field: "newest" })?;
        let builder = f.channel.builder();
        let tx = builder.commitment(p.paid, p.locktime)?;
        let payee_sig = f.channel.sign(&self.signer, &tx)?;
        Ok(Some(builder.finalize(tx, payer_sig, payee_sig)?))
    }

    /// Handles a message from the payer. `tip` is the current chain height, against which a
    /// payment's locktime is checked.
    ///
    /// # Errors
    /// Any [`ChannelError`]; the state is then unchanged.
    pub fn handle_message(
        &mut self,
        msg: &Message,
        tip: u32,
    ) -> Result<Vec<PayeeAction>, ChannelError> {
        check_id(self.state.terms.channel_id, msg.channel_id())?;
        match msg {
            Message::OpenChannel(m) => self.on_repeated_open(m),
            Message::FundingCreated(m) => self.on_funding_created(m),
            Message::Pay(m) => self.on_pay(m, tip),
            Message::ClosingSigned(m) => self.on_closing_signed(m),
            Message::Reestablish(_) => Ok(self.reestablish()),
            other => Err(self.unexpected(other.name())),
        }
    }

    /// Returns what the payee repeats to a payer that reconnected: `channel_ready` if the channel
    /// is ready and not settled (the first one may have been lost), then, once funded,
    /// `reconcile` with the newest payment it holds.
    pub fn reestablish(&self) -> Vec<PayeeAction> {
        let mut actions = Vec::new();
        if self.funded().is_some_and(|f| f.ready && f.settlement.is_none()) {
            let channel_id = self.state.terms.channel_id;
            actions
                .push(PayeeAction::Send(Message::ChannelReady(wire::ChannelReady { channel_id })));
        }
        actions.extend(self.reconcile());
        actions
    }

    /// Returns the funding outpoint to watch on chain, once known.
    pub fn funding_outpoint(&self) -> Option<OutPoint> {
        self.funded().map(|f| f.channel.builder().params().funding_outpoint)
    }

    /// Tells the payee that the chain holds `txout` at `outpoint` with `confirmations`. Once the
    /// channel's funding output has `min_conf`, the channel is ready and `channel_ready` is sent
    /// (once).
    ///
    /// # Errors
    /// [`ChannelError::FundingOutpointMismatch`], [`ChannelError::FundingScriptMismatch`] or
    /// [`ChannelError::FundingValueMismatch`] if that is not the channel's funding output;
    /// [`ChannelError::Unexpected`] before the funding transaction is known.
    pub fn funding_confirmed(
        &mut self,
        outpoint: OutPoint,
        txout: &TxOut,
        confirmations: u32,
    ) -> Result<Vec<PayeeAction>, ChannelError> {
        let min_conf = self.state.min_conf;
        let channel_id = self.state.terms.channel_id;
        let f = self.funded().ok_or_else(|| self.unexpected("funding confirmation"))?;
        let expected = f.channel.params().funding_outpoint;
        if outpoint != expected {
            return Err(ChannelError::FundingOutpointMismatch { expected, got: outpoint });
        }
        f.channel.check_funding_output(txout)?;
        if f.ready || confirmations < min_conf {
            return Ok(Vec::new());
        }
        self.funded_mut().ready = true;
        let msg = Message::ChannelReady(wire::ChannelReady { channel_id });
        Ok(vec![PayeeAction::Persist, PayeeAction::Send(msg)])
    }

    /// Tells the payee that its channel's funding has fewer than `min_conf` confirmations again:
    /// a reorganization took its block away. No payment is taken until the funding is back at
    /// `min_conf` ([`Payee::funding_confirmed`] then sends `channel_ready` again). What the payee
    /// holds stays its own: [`Payee::tip_changed`] still broadcasts its newest state when due.
    pub fn funding_reorged(&mut self) -> Vec<PayeeAction> {
        match self.funded() {
            Some(f) if f.ready => {
                self.funded_mut().ready = false;
                vec![PayeeAction::Persist]
            }
            _ => Vec::new(),
        }
    }

    /// Tells the payee the chain tip is now `tip` (call it on every new block) and returns what
    /// that calls for. Changes no state.
    ///
    /// - Settled: broadcast the settlement again. The first broadcast may have failed or been
    ///   lost in a crash, and until it confirms the payer could still use the refund at `R`.
    ///   Stop calling once a transaction spending the funding is confirmed.
    /// - The newest payment's commitment is final (`tip >= L_{c+1}`) and the channel is not
    ///   settled: complete it with the payee's signature and broadcast it. The payer has not settled in time and may have vanished; every block of delay brings
    ///   the older, cheaper commitments closer to final. Repeating the broadcast is harmless.
    /// - The next payment would fall inside the margin: ask the payer to settle (`shutdown`).
    ///
    /// # Errors
    /// [`ChannelError::Tx`] if a transaction cannot be rebuilt (corrupted state).
    pub fn tip_changed(&self, tip: u32) -> Result<Vec<PayeeAction>, ChannelError> {
        // A channel that was ready once, even one whose funding a reorganization took back to
        // the mempool: what it holds is still to be claimed in time.
        let held = |f: &&FundedChannel| f.ready || f.newest.is_some() || f.settlement.is_some();
        let Some(f) = self.funded().filter(held) else {
            return Ok(Vec::new());
        };
        if f.settlement.is_some() {
            return Ok(f.settlement_tx()?.map(PayeeAction::Broadcast).into_iter().collect());
        }
        let mut actions = Vec::new();
        if f.newest.as_ref().is_some_and(|p| tip >= p.locktime) {
            if let Some(tx) = self.newest_commitment()? {
                actions.push(PayeeAction::Broadcast(tx));
            }
        }
        if self.near_end(tip) {
            actions.extend(self.request_close()?);
        }
        Ok(actions)
    }

    /// Whether the channel is open and its next payment would fall inside the payee's margin
    /// of `tip`: time to settle (see [`Payee::request_close`]).
    pub fn near_end(&self, tip: u32) -> bool {
        self.open_channel("").is_ok_and(|f| {
            let next = NextPayment::after(f.newest.as_ref(), f.channel.ladder());
            LockTimeLadder::usable(next.locktime, tip, self.state.margin).is_err()
        })
    }

    /// Asks the payer to settle (e.g. when the ladder nears its end).
    ///
    /// # Errors
    /// [`ChannelError::Unexpected`] unless the channel is open.
    pub fn request_close(&self) -> Result<Vec<PayeeAction>, ChannelError> {
        self.open_channel("shutdown")?;
        let msg = Message::Shutdown(wire::Shutdown { channel_id: self.state.terms.channel_id });
        Ok(vec![PayeeAction::Send(msg)])
    }

    /// Answers an `open_channel` for this channel again with the same `accept_channel`, if the
    /// terms are exactly those accepted and the funding has not come yet: the payer lost the
    /// answer or restarted.
    fn on_repeated_open(&self, m: &wire::OpenChannel) -> Result<Vec<PayeeAction>, ChannelError> {
        let t = &self.state.terms;
        let same = matches!(self.state.stage, PayeeStage::AwaitingFunding)
            && m.network == t.network
            && m.capacity_sat == t.capacity.to_sat()
            && FeeRate::from_sat_per_vb(m.feerate_sat_per_vb) == Some(t.feerate)
            && m.refund_locktime == t.ladder.refund()
            && m.step == t.ladder.step()
            && m.payer_key == t.payer_key
            && m.payer_address.assume_checked_ref().script_pubkey() == t.payer_script
            && checkpoint_policy(m).ok() == Some(t.checkpoints);
        if !same {
            return Err(self.unexpected("open_channel"));
        }
        let payout = Address::from_script(&self.state.payee_script, t.network)
            .map_err(|_| self.unexpected("open_channel"))?;
        let accept = Message::AcceptChannel(wire::AcceptChannel {
            channel_id: t.channel_id,
            payee_key: self.state.payee_key,
            payee_address: payout.as_unchecked().clone(),
        });
        Ok(vec![PayeeAction::Send(accept)])
    }

    fn on_funding_created(
        &mut self,
        m: &wire::FundingCreated,
    ) -> Result<Vec<PayeeAction>, ChannelError> {
        if let PayeeStage::Funded(f) = &self.state.stage {
            // The payer lost our refund signature or restarted: sign the same refund again
            // (deterministic nonces make it the same signature), for the same funding only.
            let outpoint = OutPoint::new(m.funding_tx.compute_txid(), m.vout);
            if outpoint != f.channel.params().funding_outpoint || f.settlement.is_some() {
                return Err(self.unexpected("funding_created"));
            }
            let refund = f.channel.builder().refund(self.state.terms.ladder.refund())?;
            let sig = f.channel.sign(&self.signer, &refund)?;
            let msg = Message::RefundSigned(wire::RefundSigned {
                channel_id: self.state.terms.channel_id,
                signature: sig.into(),
            });
            return Ok(vec![PayeeAction::Send(msg)]);
        }
        let s = &self.state;
        let out = usize::try_from(m.vout)
            .ok()
            .and_then(|v| m.funding_tx.output.get(v))
            .ok_or(ChannelError::FundingOutputMissing { vout: m.vout })?;
        let outpoint = OutPoint::new(m.funding_tx.compute_txid(), m.vout);
        let channel = s.terms.channel(s.payee_key, s.payee_script.clone(), outpoint)?;
        channel.check_funding_output(out)?;
        if let Some(index) = m.funding_tx.input.iter().position(|i| !i.script_sig.is_empty()) {
            // Not the payee's risk, but a refund against a txid that will change is worthless to
            // the payer: say so now rather than let it fund.
            return Err(ChannelError::FundingNotSegwit { index });
        }
        let refund = channel.builder().refund(s.terms.ladder.refund())?;
        let sig = channel.sign(&self.signer, &refund)?;
        let msg = Message::RefundSigned(wire::RefundSigned {
            channel_id: s.terms.channel_id,
            signature: sig.into(),
        });
        self.state.stage = PayeeStage::Funded(FundedChannel::new(channel));
        Ok(vec![PayeeAction::Persist, PayeeAction::Send(msg)])
    }

    fn on_pay(&mut self, m: &wire::Pay, tip: u32) -> Result<Vec<PayeeAction>, ChannelError> {
        let f = self.open_channel("pay")?;
        if let Some(acks) = self.replayed_pay(f, m) {
            // The payer did not get our acks (lost, or it restarted) and resends what it had in
            // flight: the acks of our newest checkpoint and newest payment answer them all.
            return Ok(acks.into_iter().map(PayeeAction::Send).collect());
        }
        let checked = self.check_pay(f.newest.as_ref(), m, tip)?;
        verified(&self.signer, TxKind::Commitment(m.update), &checked.signature)?;
        Ok(self.take_pay(checked))
    }

    /// Checks payment `m` as the one after `after`, all but its signature's validity: returns
    /// it, its commitment, and the signature to check.
    pub(super) fn check_pay(
        &self,
        after: Option<&Payment>,
        m: &wire::Pay,
        tip: u32,
    ) -> Result<CheckedPay, ChannelError> {
        let f = self.open_channel("pay")?;
        let paid = Amount::from_sat(m.paid_total_sat);
        let margin = self.state.margin;
        let (payment, tx) =
            f.payment_after(after, m.update, paid, m.locktime, m.checkpoint, tip, margin)?;
        let kind = TxKind::Commitment(m.update);
        let signature = f.channel.signature_check(&self.signer, kind, &tx, &m.signature)?;
        // As the payee will store it.
        let payment = Payment { payer_sig: Some(signature.signature), ..payment };
        Ok(CheckedPay { payment, signature })
    }

    /// Takes a payment whose signature is checked and valid: countersigns it if it is a
    /// checkpoint, makes it the newest, and acknowledges it once persisted.
    pub(super) fn take_pay(&mut self, checked: CheckedPay) -> Vec<PayeeAction> {
        let CheckedPay { payment, signature } = checked;
        let payer_sig = signature.signature;
        let checkpoint = if payment.checkpoint {
            // The same digest the payer signed: our copy of its commitment.
            let payee_sig = self.signer.sign(signature.sighash);
            let (number, paid, locktime) = (payment.number, payment.paid, payment.locktime);
            Some(SignedUpdate { number, paid, locktime, payer_sig, payee_sig })
        } else {
            None
        };
        let ack = self.ack(payment.number, checkpoint.as_ref());
        let f = self.funded_mut();
        f.newest = Some(payment);
        if checkpoint.is_some() {
            f.checkpoint = checkpoint;
        }
        // Persist before acknowledging: an acknowledged payment must survive a crash.
        vec![PayeeAction::Persist, PayeeAction::Send(ack)]
    }

    fn on_closing_signed(
        &mut self,
        m: &wire::ClosingSigned,
    ) -> Result<Vec<PayeeAction>, ChannelError> {
        if let Some(f) = self.funded() {
            if let Some(s) = f.settlement.as_ref().filter(|s| {
                s.paid.to_sat() == m.paid_total_sat && s.payer_sig.to_vec() == m.signature.0
            }) {
                // Already settled with exactly this: broadcast and acknowledge again, change
                // nothing.
                let ack = Message::ClosingAck(wire::ClosingAck {
                    channel_id: self.state.terms.channel_id,
                    signature: s.payee_sig.into(),
                });
                let settlement = f.settlement_tx()?.expect("settled");
                return Ok(vec![PayeeAction::Broadcast(settlement), PayeeAction::Send(ack)]);
            }
        }
        let f = self.open_channel("closing_signed")?;
        let expected = f.paid();
        let proposed = Amount::from_sat(m.paid_total_sat);
        if proposed != expected {
            return Err(ChannelError::PaidTotalMismatch { expected, proposed });
        }
        let channel = &f.channel;
        let tx = channel.builder().settlement(expected)?;
        let kind = TxKind::Settlement;
        let (payer_sig, payee_sig) = channel.countersign(&self.signer, kind, &tx, &m.signature)?;
        let signed = channel.builder().finalize(tx, payer_sig, payee_sig)?;
        self.funded_mut().settlement =
            Some(SettlementSigs { paid: expected, payer_sig, payee_sig });
        let ack = Message::ClosingAck(wire::ClosingAck {
            channel_id: self.state.terms.channel_id,
            signature: payee_sig.into(),
        });
        Ok(vec![PayeeAction::Persist, PayeeAction::Broadcast(signed), PayeeAction::Send(ack)])
    }

    /// Returns the acks to send again if `m` is exactly the newest payment taken again, or an
    /// older one (a pipelining payer resending everything it had in flight): the ack of the
    /// newest checkpoint, with its signature, if `m` is not newer than it (the payer may lack
    /// that signature), then the ack of the newest payment. They only repeat what the payer
    /// already holds or is owed; nothing changes.
    pub(super) fn replayed_pay(&self, f: &FundedChannel, m: &wire::Pay) -> Option<Vec<Message>> {
        let newest = f.newest.as_ref()?;
        let same = newest.number == m.update
            && newest.paid.to_sat() == m.paid_total_sat
            && newest.locktime == m.locktime
            && newest.checkpoint == m.checkpoint
            && newest.payer_sig.is_some_and(|s| s.to_vec() == m.signature.0);
        if !(same || m.update < newest.number) {
            return None;
        }
        let checkpoint = f.checkpoint.as_ref().filter(|c| c.number >= m.update);
        let mut acks: Vec<Message> =
            checkpoint.map(|c| self.ack(c.number, Some(c))).into_iter().collect();
        if !checkpoint.is_some_and(|c| c.number == newest.number) {
            let newest_checkpoint = f.checkpoint.as_ref().filter(|c| c.number == newest.number);
            acks.push(self.ack(newest.number, newest_checkpoint));
        }
        Some(acks)
    }

    /// The ack of payment `update`: with the payee's signature if it is `checkpoint`.
    fn ack(&self, update: u64, checkpoint: Option<&SignedUpdate>) -> Message {
        Message::PayAck(wire::PayAck {
            channel_id: self.state.terms.channel_id,
            update,
            signature: checkpoint.map(|c| c.payee_sig.into()),
        })
    }

    /// Returns the funded channel if it is ready and not settled.
    pub(super) fn open_channel(&self, what: &'static str) -> Result<&FundedChannel, ChannelError> {
        match &self.state.stage {
            PayeeStage::Funded(f) if f.ready && f.settlement.is_none() => Ok(f),
            _ => Err(self.unexpected(what)),
        }
    }

    fn funded_mut(&mut self) -> &mut FundedChannel {
        match &mut self.state.stage {
            PayeeStage::Funded(f) => f,
            // Only called after a check that the stage is `Funded`.
            PayeeStage::AwaitingFunding => unreachable!("funded_mut called before funding"),
        }
    }

    fn unexpected(&self, what: &'static str) -> ChannelError {
        ChannelError::Unexpected { what, state: self.state.stage.name() }
    }
}

/// A payment checked but for its signature's validity.
#[derive(Debug, Clone)]
pub(super) struct CheckedPay {
    pub payment: Payment,
    /// The payer's signature over the commitment's digest.
    pub signature: SignatureCheck,
}

/// Reads the checkpoint policy an `open_channel` proposes.
fn checkpoint_policy(open: &wire::OpenChannel) -> Result<CheckpointPolicy, ChannelError> {
    let policy = CheckpointPolicy {
        every_payments: match open.checkpoint_every_payments {
            Some(n) => Some(std::num::NonZeroU64::new(n).ok_or(ChannelError::BadCheckpointPolicy)?),
            None => None,
        },
        every_sat: open.checkpoint_every_sat.map(Amount::from_sat),
    };
    if !policy.is_valid() {
        return Err(ChannelError::BadCheckpointPolicy);
    }
    Ok(policy)
}
