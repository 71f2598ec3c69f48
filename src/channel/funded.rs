//! What both parties hold: the terms from the start, and once the funding outpoint is known the
//! channel parameters, the newest fully signed commitment, and the settlement once both have
//! signed it.

use bitcoin::sighash::SegwitV0Sighash;
use bitcoin::{
    ecdsa, Amount, FeeRate, Network, OutPoint, PublicKey, ScriptBuf, Transaction, TxOut,
};
use serde::{Deserialize, Serialize};

use super::{ChannelError, TxKind};
use crate::funding::FundingScript;
use crate::keys::{parse_signature, ChannelSigner};
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
        let sighash = self.builder.sighash(tx)?;
        verify_raw(signer, kind, sighash, raw, &self.peer_key(signer))
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
        let sighash = self.builder.sighash(tx)?;
        let theirs = verify_raw(signer, kind, sighash, raw, &self.peer_key(signer))?;
        Ok((theirs, signer.sign(sighash)))
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

/// Parses `raw` and checks it is `key`'s `SIGHASH_ALL` signature over `sighash`.
fn verify_raw(
    signer: &ChannelSigner,
    kind: TxKind,
    sighash: SegwitV0Sighash,
    raw: &RawSignature,
    key: &PublicKey,
) -> Result<ecdsa::Signature, ChannelError> {
    let wrap = |source| ChannelError::Signature { tx: kind, source };
    let sig = parse_signature(&raw.0).map_err(wrap)?;
    signer.verify(sighash, &sig, key).map_err(wrap)?;
    Ok(sig)
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

/// A commitment both parties have signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedUpdate {
    /// The update number `k`.
    pub number: u64,
    /// The total paid to the payee.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub paid: Amount,
    /// Its `nLockTime`, `R - k*step`.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundedChannel {
    /// The parameters and builder.
    pub channel: Channel,
    /// Whether the payee has seen enough confirmations of the funding to take payments.
    pub ready: bool,
    /// The newest fully signed commitment, if any payment has been made.
    pub latest: Option<SignedUpdate>,
    /// The settlement, once both have signed it: the channel is then closed to payments.
    pub settlement: Option<SettlementSigs>,
}

/// A rung of the ladder a new commitment builds on: its number, total and locktime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rung {
    pub number: u64,
    pub paid: Amount,
    pub locktime: u32,
}

impl Rung {
    /// The newest commitment signed by both (or the refund's rung, before any payment).
    pub fn latest(f: &FundedChannel) -> Rung {
        Rung { number: f.update_number(), paid: f.paid(), locktime: f.current_locktime() }
    }
}

impl FundedChannel {
    /// Starts a funded channel with no payments.
    pub fn new(channel: Channel) -> Self {
        FundedChannel { channel, ready: false, latest: None, settlement: None }
    }

    /// Returns the total paid in the newest signed commitment.
    pub fn paid(&self) -> Amount {
        self.latest.as_ref().map_or(Amount::ZERO, |u| u.paid)
    }

    /// Returns the number of the newest signed commitment (0 before any payment).
    pub fn update_number(&self) -> u64 {
        self.latest.as_ref().map_or(0, |u| u.number)
    }

    /// Returns the locktime of the newest signed state: the newest commitment's, or the refund's.
    pub fn current_locktime(&self) -> u32 {
        self.latest.as_ref().map_or(self.channel.ladder().refund(), |u| u.locktime)
    }

    /// Checks a proposed next commitment against the channel and rebuilds it.
    ///
    /// Both parties run exactly these checks: the payer before it signs, the payee before it
    /// countersigns. `tip` is the chain height as the caller sees it, `margin` the caller's
    /// safety margin in blocks.
    ///
    /// # Errors
    /// [`ChannelError::UnexpectedUpdate`], [`ChannelError::PaidNotIncreasing`],
    /// [`ChannelError::LockTimeNotDecreasing`], [`ChannelError::LockTimeOffLadder`],
    /// [`ChannelError::Ladder`] (too close to the tip) or [`ChannelError::Tx`] (over the balance).
    pub fn next_commitment(
        &self,
        update: u64,
        paid: Amount,
        locktime: u32,
        tip: u32,
        margin: u32,
    ) -> Result<Transaction, ChannelError> {
        self.commitment_after(&Rung::latest(self), update, paid, locktime, tip, margin)
    }

    /// The same checks as [`FundedChannel::next_commitment`], for a commitment on top of
    /// `after` (the payer's newest payment in flight, when it pipelines).
    pub(crate) fn commitment_after(
        &self,
        after: &Rung,
        update: u64,
        paid: Amount,
        locktime: u32,
        tip: u32,
        margin: u32,
    ) -> Result<Transaction, ChannelError> {
        let expected = after.number.saturating_add(1);
        if update != expected {
            return Err(ChannelError::UnexpectedUpdate { expected, got: update });
        }
        let previous = after.paid;
        if paid <= previous {
            return Err(ChannelError::PaidNotIncreasing { previous, proposed: paid });
        }
        let previous = after.locktime;
        if locktime >= previous {
            return Err(ChannelError::LockTimeNotDecreasing { previous, proposed: locktime });
        }
        let ladder = self.channel.ladder();
        if let Some(expected) = ladder.locktime(update) {
            if locktime != expected {
                return Err(ChannelError::LockTimeOffLadder { expected, proposed: locktime });
            }
        }
        ladder.usable_locktime(update, tip, margin)?;
        Ok(self.channel.builder().commitment(paid, locktime)?)
    }

    /// Returns the newest commitment with both signatures, ready to broadcast once the tip
    /// reaches its locktime, or `None` before the first payment.
    ///
    /// # Errors
    /// [`ChannelError::Tx`] if it cannot be rebuilt (which would mean corrupted state).
    pub fn newest_commitment(&self) -> Result<Option<Transaction>, ChannelError> {
        let Some(u) = &self.latest else {
            return Ok(None);
        };
        let builder = self.channel.builder();
        let tx = builder.commitment(u.paid, u.locktime)?;
        Ok(Some(builder.finalize(tx, u.payer_sig, u.payee_sig)?))
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
        };
        let outpoint = OutPoint::new(bitcoin::Txid::from_byte_array([1; 32]), 0);
        let channel = terms.channel(payee.public_key(), script(&payee), outpoint).unwrap();
        (FundedChannel::new(channel), payer, payee)
    }

    #[test]
    fn a_new_channel_has_paid_nothing_and_stands_at_the_refund() {
        let (f, _, _) = funded();
        assert_eq!((f.paid(), f.update_number(), f.current_locktime()), (Amount::ZERO, 0, 1000));
        assert_eq!(f.newest_commitment(), Ok(None));
        assert_eq!(f.settlement_tx(), Ok(None));
    }

    #[test]
    fn next_commitment_checks_in_order_and_builds_the_rung() {
        let (mut f, payer, payee) = funded();
        let sat = Amount::from_sat;
        let tx = f.next_commitment(1, sat(500), 990, 900, 6).unwrap();
        assert_eq!(tx.lock_time.to_consensus_u32(), 990);
        assert_eq!(tx.output[1].value, sat(500));
        let sighash = f.channel.builder().sighash(&tx).unwrap();
        let (payer_sig, payee_sig) = (payer.sign(sighash), payee.sign(sighash));
        f.latest =
            Some(SignedUpdate { number: 1, paid: sat(500), locktime: 990, payer_sig, payee_sig });
        assert_eq!(f.newest_commitment().unwrap().unwrap().input[0].witness.len(), 4);

        let err =
            |update, paid, locktime, tip| f.next_commitment(update, sat(paid), locktime, tip, 6);
        assert_eq!(
            err(3, 600, 970, 900),
            Err(ChannelError::UnexpectedUpdate { expected: 2, got: 3 })
        );
        assert_eq!(
            err(2, 500, 980, 900),
            Err(ChannelError::PaidNotIncreasing { previous: sat(500), proposed: sat(500) })
        );
        assert_eq!(
            err(2, 600, 990, 900),
            Err(ChannelError::LockTimeNotDecreasing { previous: 990, proposed: 990 })
        );
        assert_eq!(
            err(2, 600, 981, 900),
            Err(ChannelError::LockTimeOffLadder { expected: 980, proposed: 981 })
        );
        assert!(matches!(err(2, 600, 980, 974), Err(ChannelError::Ladder(_))));
        assert!(err(2, 600, 980, 973).is_ok());
    }
}
