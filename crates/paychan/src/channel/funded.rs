//! What both parties hold: the terms from the start, and once the funding outpoint is known the
//! channel parameters, the newest payment, the newest checkpoint (the newest commitment both
//! have signed), and the settlement once both have signed it.

use bitcoin::{
    ecdsa, Amount, FeeRate, Network, OutPoint, PublicKey, ScriptBuf, Transaction, TxOut,
};
use serde::{Deserialize, Serialize};

use super::payment::NextPayment;
use super::{ChannelError, CheckpointPolicy, Payment, TxKind};
use crate::funding::FundingScript;
use crate::keys::{parse_signature, ChannelSigner, SignatureCheck};
use crate::ladder::LockTimeLadder;
use crate::tx::{ChannelTxBuilder, ChannelTxParams};
use crate::wire::{ChannelId, RawSignature};

/// The terms the payer proposes in `open_channel`, which both parties hold from the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelTerms {
    /// The channel's id.
    pub channel_id: ChannelId,
    /// Its chain.
    pub network: Network,
    /// The funding output's value.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub capacity: Amount,
    /// The fee rate of every channel transaction.
    pub feerate: FeeRate,
    /// The refund locktime and the step between commitments.
    pub ladder: LockTimeLadder,
    /// The payer's funding key.
    pub payer_key: PublicKey,
    /// Where the payer's money goes.
    pub payer_script: ScriptBuf,
    /// When the payee countersigns. Channels opened before checkpoints existed had both sign
    /// every update, and load with [`CheckpointPolicy::every_payment`].
    #[serde(default = "CheckpointPolicy::every_payment")]
    pub checkpoints: CheckpointPolicy,
}

impl ChannelTerms {
    /// Builds the channel these terms make with the payee's key and script, funded at
    /// `funding_outpoint` (`OutPoint::null()` to check the terms before the funding exists).
    ///
    /// # Errors
    /// As [`Channel::new`].
    pub fn channel(
        &self,
        payee_key: PublicKey,
        payee_script: ScriptBuf,
        funding_outpoint: OutPoint,
    ) -> Result<Channel, ChannelError> {
        Channel::new(ChannelParams {
            terms: self.clone(),
            payee_key,
            payee_script,
            funding_outpoint,
        })
    }
}

/// Everything that fixes a channel's transactions: the terms, the payee's side, the funding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelParams {
    /// What the payer proposed.
    pub terms: ChannelTerms,
    /// The payee's funding key.
    pub payee_key: PublicKey,
    /// Where the payee's money goes.
    pub payee_script: ScriptBuf,
    /// The funding output.
    pub funding_outpoint: OutPoint,
}

/// A channel's parameters with the transaction builder made from them.
///
/// Serializes as its [`ChannelParams`]; deserializing rebuilds (and so re-checks) the builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ChannelParams", into = "ChannelParams")]
pub struct Channel {
    params: ChannelParams,
    builder: ChannelTxBuilder,
}

impl Channel {
    /// Builds the funding script and transaction builder for `params`.
    ///
    /// # Errors
    /// [`ChannelError::Funding`] for unusable keys, [`ChannelError::Tx`] for a capacity too small.
    pub fn new(params: ChannelParams) -> Result<Self, ChannelError> {
        let terms = &params.terms;
        let funding = FundingScript::new(terms.payer_key, params.payee_key)?;
        let tx = ChannelTxParams {
            funding_outpoint: params.funding_outpoint,
            capacity: terms.capacity,
            feerate: terms.feerate,
            payer_script: terms.payer_script.clone(),
            payee_script: params.payee_script.clone(),
        };
        let builder = ChannelTxBuilder::new(funding, tx)?;
        Ok(Channel { params, builder })
    }

    /// Returns the parameters.
    pub fn params(&self) -> &ChannelParams {
        &self.params
    }

    /// Returns the transaction builder.
    pub fn builder(&self) -> &ChannelTxBuilder {
        &self.builder
    }

    /// Returns the ladder.
    pub fn ladder(&self) -> &LockTimeLadder {
        &self.params.terms.ladder
    }

    /// Fails unless this channel was built from `terms` and, where given, the payee's `key`
    /// and `script`: a restored state must agree with itself.
    pub(crate) fn check_built_from(
        &self,
        terms: &ChannelTerms,
        payee: Option<(&PublicKey, &ScriptBuf)>,
    ) -> Result<(), ChannelError> {
        let p = &self.params;
        if &p.terms != terms {
            return Err(ChannelError::InconsistentState { field: "terms" });
        }
        match payee {
            Some((key, script)) if (&p.payee_key, &p.payee_script) != (key, script) => {
                Err(ChannelError::InconsistentState { field: "payee" })
            }
            _ => Ok(()),
        }
    }

    /// Fails unless `txout` is this channel's funding output: the 2-of-2 script holding the
    /// capacity.
    pub(crate) fn check_funding_output(&self, txout: &TxOut) -> Result<(), ChannelError> {
        if &txout.script_pubkey != self.builder.funding().script_pubkey() {
            return Err(ChannelError::FundingScriptMismatch);
        }
        let expected = self.params.terms.capacity;
        if txout.value != expected {
            return Err(ChannelError::FundingValueMismatch { expected, got: txout.value });
        }
        Ok(())
    }

    /// Signs `tx` with `signer`.
    pub(crate) fn sign(
        &self,
        signer: &ChannelSigner,
        tx: &Transaction,
    ) -> Result<ecdsa::Signature, ChannelError> {
        Ok(signer.sign(self.builder.sighash(tx)?))
    }

    /// Parses `raw` and checks it is the other party's signature over our own copy `tx`
    /// (the other party being whichever of payer and payee `signer` is not).
    pub(crate) fn check_signature(
        &self,
        signer: &ChannelSigner,
        kind: TxKind,
        tx: &Transaction,
        raw: &RawSignature,
    ) -> Result<ecdsa::Signature, ChannelError> {
        verified(signer, kind, &self.signature_check(signer, kind, tx, raw)?)
    }

    /// Parses `raw` as the other party's signature over our own copy `tx`, to be checked later
    /// ([`SignatureCheck::verify`], or [`verified`]).
    pub(crate) fn signature_check(
        &self,
        signer: &ChannelSigner,
        kind: TxKind,
        tx: &Transaction,
        raw: &RawSignature,
    ) -> Result<SignatureCheck, ChannelError> {
        let sighash = self.builder.sighash(tx)?;
        let wrap = |source| ChannelError::Signature { tx: kind, source };
        let signature = parse_signature(&raw.0).map_err(wrap)?;
        Ok(SignatureCheck { sighash, signature, key: self.peer_key(signer) })
    }

    /// Checks `raw` as [`Channel::check_signature`] does, then signs the same transaction with
    /// `signer`: returns (theirs, ours), computing the sighash once.
    pub(crate) fn countersign(
        &self,
        signer: &ChannelSigner,
        kind: TxKind,
        tx: &Transaction,
        raw: &RawSignature,
    ) -> Result<(ecdsa::Signature, ecdsa::Signature), ChannelError> {
        let check = self.signature_check(signer, kind, tx, raw)?;
        Ok((verified(signer, kind, &check)?, signer.sign(check.sighash)))
    }

    /// The key of the party `signer` is not.
    fn peer_key(&self, signer: &ChannelSigner) -> PublicKey {
        let payer = self.params.terms.payer_key;
        if signer.public_key() == payer {
            self.params.payee_key
        } else {
            payer
        }
    }
}

/// Returns the signature of `check` if it is valid (checked with `signer`'s context), the
/// signature error of the `kind` of transaction otherwise.
pub(crate) fn verified(
    signer: &ChannelSigner,
    kind: TxKind,
    check: &SignatureCheck,
) -> Result<ecdsa::Signature, ChannelError> {
    let wrap = |source| ChannelError::Signature { tx: kind, source };
    signer.verify(check.sighash, &check.signature, &check.key).map_err(wrap)?;
    Ok(check.signature)
}

impl TryFrom<ChannelParams> for Channel {
    type Error = ChannelError;
    fn try_from(params: ChannelParams) -> Result<Self, Self::Error> {
        Channel::new(params)
    }
}

impl From<Channel> for ChannelParams {
    fn from(channel: Channel) -> Self {
        channel.params
    }
}

/// Fails unless `got` is `expected`.
pub(crate) fn check_id(expected: ChannelId, got: ChannelId) -> Result<(), ChannelError> {
    if expected == got {
        Ok(())
    } else {
        Err(ChannelError::WrongChannel { expected, got })
    }
}

/// A commitment both parties have signed: a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedUpdate {
    /// The number of the payment it checkpoints.
    pub number: u64,
    /// The total paid to the payee.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub paid: Amount,
    /// Its `nLockTime`, `R - c*step` for the `c`-th checkpoint.
    pub locktime: u32,
    /// The payer's signature.
    pub payer_sig: ecdsa::Signature,
    /// The payee's signature.
    pub payee_sig: ecdsa::Signature,
}

/// The settlement both parties have signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementSigs {
    /// The total paid to the payee.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub paid: Amount,
    /// The payer's signature.
    pub payer_sig: ecdsa::Signature,
    /// The payee's signature.
    pub payee_sig: ecdsa::Signature,
}

/// A funded channel as both parties see it.
///
/// Deserializing also reads the states of releases before checkpoints (wire version 1), where
/// every update was signed by both: their newest update (`latest`) is both the newest payment
/// and the newest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredFundedChannel")]
pub struct FundedChannel {
    /// The parameters and builder.
    pub channel: Channel,
    /// Whether the payee has seen enough confirmations of the funding to take payments.
    pub ready: bool,
    /// The newest payment: the newest taken (payee) or acknowledged (payer).
    pub newest: Option<Payment>,
    /// The newest checkpoint: the newest commitment both have signed.
    pub checkpoint: Option<SignedUpdate>,
    /// The settlement, once both have signed it: the channel is then closed to payments.
    pub settlement: Option<SettlementSigs>,
}

/// A [`FundedChannel`] as stored by this release or an earlier one.
#[derive(Deserialize)]
struct StoredFundedChannel {
    channel: Channel,
    ready: bool,
    #[serde(default)]
    newest: Option<Payment>,
    #[serde(default, alias = "latest")]
    checkpoint: Option<SignedUpdate>,
    settlement: Option<SettlementSigs>,
}

impl From<StoredFundedChannel> for FundedChannel {
    fn from(s: StoredFundedChannel) -> Self {
        // Before checkpoints, the newest update was signed by both: a checkpoint payment.
        let newest = s.newest.or_else(|| {
            s.checkpoint.as_ref().map(|u| Payment {
                number: u.number,
                paid: u.paid,
                locktime: u.locktime,
                checkpoint: true,
                since_checkpoint: 1,
                paid_since_checkpoint: Amount::ZERO,
                payer_sig: Some(u.payer_sig),
            })
        });
        FundedChannel {
            channel: s.channel,
            ready: s.ready,
            newest,
            checkpoint: s.checkpoint,
            settlement: s.settlement,
        }
    }
}

impl FundedChannel {
    /// Starts a funded channel with no payments.
    pub fn new(channel: Channel) -> Self {
        FundedChannel { channel, ready: false, newest: None, checkpoint: None, settlement: None }
    }

    /// Returns the total of the newest payment.
    pub fn paid(&self) -> Amount {
        self.newest.as_ref().map_or(Amount::ZERO, |p| p.paid)
    }

    /// Returns the number of payments made (0 before any).
    pub fn payments(&self) -> u64 {
        self.newest.as_ref().map_or(0, |p| p.number)
    }

    /// Returns the number of checkpoints made: the rung of the newest checkpoint.
    pub fn checkpoints(&self) -> u64 {
        let ladder = self.channel.ladder();
        self.checkpoint.as_ref().and_then(|c| ladder.rung(c.locktime)).unwrap_or(0)
    }

    /// Returns the locktime of the newest payment's commitment, or the refund's before any.
    pub fn current_locktime(&self) -> u32 {
        self.newest.as_ref().map_or(self.channel.ladder().refund(), |p| p.locktime)
    }

    /// Returns the locktime of the newest fully signed state: the newest checkpoint's, or the
    /// refund's before any. The payer's way out if the payee vanishes is final there.
    pub fn checkpoint_locktime(&self) -> u32 {
        self.checkpoint.as_ref().map_or(self.channel.ladder().refund(), |c| c.locktime)
    }

    /// Checks a proposed payment against the channel and rebuilds its commitment.
    ///
    /// Both parties run exactly these checks: the payer before it signs, the payee before it
    /// takes the payer's signature. `after` is the payment it follows (the payer's newest in
    /// flight, when it pipelines; the newest otherwise), `tip` the chain height as the caller
    /// sees it, `margin` the caller's safety margin in blocks.
    ///
    /// # Errors
    /// [`ChannelError::UnexpectedUpdate`], [`ChannelError::PaidNotIncreasing`],
    /// [`ChannelError::LockTimeOffLadder`], [`ChannelError::Ladder`] (too close to the tip) or
    /// [`ChannelError::Tx`] (over the balance).
    #[allow(clippy::too_many_arguments)] // each is one field of the payment, checked here
    pub(crate) fn payment_after(
        &self,
        after: Option<&Payment>,
        update: u64,
        paid: Amount,
        locktime: u32,
        checkpoint: bool,
        tip: u32,
        margin: u32,
    ) -> Result<(Payment, Transaction), ChannelError> {
        let next = NextPayment::after(after, self.channel.ladder());
        if update != next.number {
            return Err(ChannelError::UnexpectedUpdate { expected: next.number, got: update });
        }
        let previous = next.previous_paid;
        if paid <= previous {
            return Err(ChannelError::PaidNotIncreasing { previous, proposed: paid });
        }
        if let Some(expected) = next.locktime.filter(|l| *l != locktime) {
            return Err(ChannelError::LockTimeOffLadder { expected, proposed: locktime });
        }
        LockTimeLadder::usable(next.locktime, tip, margin)?;
        let tx = self.channel.builder().commitment(paid, locktime)?;
        Ok((next.to(paid, locktime, checkpoint), tx))
    }

    /// Returns the txid of the newest payment's commitment (a txid does not cover the
    /// signatures), or `None` before the first payment.
    ///
    /// # Errors
    /// [`ChannelError::Tx`] if it cannot be rebuilt (which would mean corrupted state).
    pub fn newest_txid(&self) -> Result<Option<bitcoin::Txid>, ChannelError> {
        let Some(p) = &self.newest else { return Ok(None) };
        Ok(Some(self.channel.builder().commitment(p.paid, p.locktime)?.compute_txid()))
    }

    /// Returns the newest checkpoint with both signatures, ready to broadcast once the tip
    /// reaches its locktime, or `None` before the first checkpoint.
    ///
    /// # Errors
    /// [`ChannelError::Tx`] if it cannot be rebuilt (which would mean corrupted state).
    pub fn checkpoint_tx(&self) -> Result<Option<Transaction>, ChannelError> {
        let Some(c) = &self.checkpoint else {
            return Ok(None);
        };
        let builder = self.channel.builder();
        let tx = builder.commitment(c.paid, c.locktime)?;
        Ok(Some(builder.finalize(tx, c.payer_sig, c.payee_sig)?))
    }

    /// Returns the settlement with both signatures, once both have signed.
    ///
    /// # Errors
    /// [`ChannelError::Tx`] if it cannot be rebuilt (which would mean corrupted state).
    pub fn settlement_tx(&self) -> Result<Option<Transaction>, ChannelError> {
        let Some(s) = &self.settlement else {
            return Ok(None);
        };
        let builder = self.channel.builder();
        let tx = builder.settlement(s.paid)?;
        Ok(Some(builder.finalize(tx, s.payer_sig, s.payee_sig)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    fn funded() -> (FundedChannel, ChannelSigner, ChannelSigner) {
        let (payer, payee) = (
            ChannelSigner::from_slice(&[1; 32]).unwrap(),
            ChannelSigner::from_slice(&[2; 32]).unwrap(),
        );
        let script =
            |s: &ChannelSigner| ScriptBuf::new_p2wpkh(&s.public_key().wpubkey_hash().unwrap());
        let terms = ChannelTerms {
            channel_id: ChannelId([7; 32]),
            network: Network::Regtest,
            capacity: Amount::from_sat(100_000),
            feerate: FeeRate::from_sat_per_vb(1).unwrap(),
            ladder: LockTimeLadder::new(1000, 10).unwrap(),
            payer_key: payer.public_key(),
            payer_script: script(&payer),
            checkpoints: CheckpointPolicy::on_request(),
        };
        let outpoint = OutPoint::new(bitcoin::Txid::from_byte_array([1; 32]), 0);
        let channel = terms.channel(payee.public_key(), script(&payee), outpoint).unwrap();
        (FundedChannel::new(channel), payer, payee)
    }

    #[test]
    fn a_new_channel_has_paid_nothing_and_stands_at_the_refund() {
        let (f, _, _) = funded();
        assert_eq!((f.paid(), f.payments(), f.current_locktime()), (Amount::ZERO, 0, 1000));
        assert_eq!((f.checkpoints(), f.checkpoint_locktime()), (0, 1000));
        assert_eq!(f.checkpoint_tx(), Ok(None));
        assert_eq!(f.settlement_tx(), Ok(None));
    }

    #[test]
    fn payments_are_checked_in_order_on_their_rung() {
        let (mut f, payer, payee) = funded();
        let sat = Amount::from_sat;
        let (p1, tx) = f.payment_after(None, 1, sat(500), 990, false, 900, 6).unwrap();
        assert_eq!(tx.lock_time.to_consensus_u32(), 990);
        assert_eq!(tx.output[1].value, sat(500));
        f.newest = Some(p1);
        // The next payment stays on rung 1 until a checkpoint.
        let (p2, tx) = f.payment_after(Some(&p1), 2, sat(600), 990, true, 900, 6).unwrap();
        let sighash = f.channel.builder().sighash(&tx).unwrap();
        let (payer_sig, payee_sig) = (payer.sign(sighash), payee.sign(sighash));
        f.checkpoint =
            Some(SignedUpdate { number: 2, paid: sat(600), locktime: 990, payer_sig, payee_sig });
        f.newest = Some(p2);
        assert_eq!(f.checkpoint_tx().unwrap().unwrap().input[0].witness.len(), 4);
        assert_eq!((f.checkpoints(), f.checkpoint_locktime()), (1, 990));

        let next = |update, paid, locktime, tip| {
            f.payment_after(f.newest.as_ref(), update, sat(paid), locktime, false, tip, 6)
        };
        assert_eq!(
            next(4, 700, 980, 900),
            Err(ChannelError::UnexpectedUpdate { expected: 3, got: 4 })
        );
        assert_eq!(
            next(3, 600, 980, 900),
            Err(ChannelError::PaidNotIncreasing { previous: sat(600), proposed: sat(600) })
        );
        // After the checkpoint, the payments move one rung down.
        assert_eq!(
            next(3, 700, 990, 900),
            Err(ChannelError::LockTimeOffLadder { expected: 980, proposed: 990 })
        );
        assert!(matches!(next(3, 700, 980, 974), Err(ChannelError::Ladder(_))));
        assert!(next(3, 700, 980, 973).is_ok());
    }

    #[test]
    fn a_state_from_before_checkpoints_loads_its_newest_update_as_a_checkpoint() {
        let (f, payer, payee) = funded();
        let sat = Amount::from_sat;
        let tx = f.channel.builder().commitment(sat(700), 980).unwrap();
        let sighash = f.channel.builder().sighash(&tx).unwrap();
        let (payer_sig, payee_sig) = (payer.sign(sighash), payee.sign(sighash));
        let latest =
            SignedUpdate { number: 2, paid: sat(700), locktime: 980, payer_sig, payee_sig };
        let mut v1 = serde_json::to_value(&f).unwrap();
        let fields = v1.as_object_mut().unwrap();
        fields.remove("newest");
        fields.remove("checkpoint");
        fields.insert("latest".into(), serde_json::to_value(&latest).unwrap());
        let loaded: FundedChannel = serde_json::from_value(v1).unwrap();
        assert_eq!(loaded.checkpoint, Some(latest));
        let newest = loaded.newest.unwrap();
        assert_eq!((newest.number, newest.paid, newest.locktime), (2, sat(700), 980));
        assert!(newest.checkpoint);
        assert_eq!(loaded.checkpoints(), 2);
        // And the next payment goes one rung down, as the next update did.
        let next = NextPayment::after(Some(&newest), loaded.channel.ladder());
        assert_eq!((next.number, next.locktime), (3, Some(970)));
    }
}
