//! Refund, commitment and settlement: the transactions that spend the funding output.
//!
//! All three have one input (the funding outpoint, `nSequence = 0xFFFFFFFE` so that `nLockTime`
//! is enforced) and differ only in `nLockTime` and outputs:
//!
//! | transaction   | nLockTime      | outputs                                          |
//! |---------------|----------------|--------------------------------------------------|
//! | refund        | `R`            | payer: `C - fee`                                 |
//! | commitment k  | `R - k*step`   | payer: `C - fee - paid_k`, payee: `paid_k`       |
//! | settlement    | `0`            | payer: `C - fee - paid`, payee: `paid`           |
//!
//! The fee always comes out of the payer's side. An output below its owner's dust limit is left
//! out, and its value goes to the miners with the fee, as Lightning trims dust:
//! - the payee's: while the total paid is below the payee's dust limit (294 sat for P2WPKH), a
//!   commitment or settlement pays the payee nothing on chain and that total is extra fee. Any
//!   amount from 1 sat can be paid; the payee holds at most its dust limit that it cannot yet
//!   claim on chain.
//! - the payer's: when nearly all the capacity has been paid, the payer's remainder below its dust
//!   limit is left to the miners as extra fee (moving it to the payee would change the agreed
//!   split).
//!
//! So `outputs + fee == C` always holds, where `fee` is whatever the outputs leave, and at least
//! one output always remains (the capacity covers both dust limits and the fee).

use bitcoin::sighash::{SegwitV0Sighash, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    absolute, ecdsa, Amount, EcdsaSighashType, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Witness,
};
use serde::{Deserialize, Serialize};

use super::fee::{fee_for_weight, is_dust, spending_weight};
use super::TxError;
use crate::funding::FundingScript;

/// The values that, with the funding script, fix every channel transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelTxParams {
    /// The funding output.
    pub funding_outpoint: OutPoint,
    /// The value of the funding output.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub capacity: Amount,
    /// The fee rate every channel transaction pays.
    pub feerate: FeeRate,
    /// Where the payer's money goes.
    pub payer_script: ScriptBuf,
    /// Where the payee's money goes.
    pub payee_script: ScriptBuf,
}

/// Builds the channel's transactions; both parties build the same ones from the same parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTxBuilder {
    params: ChannelTxParams,
    funding: FundingScript,
}

impl ChannelTxBuilder {
    /// Creates the builder and checks that the capacity can pay the refund, and any split: while
    /// the payee's share is below its dust limit, the payer's output must stay above its own.
    ///
    /// # Errors
    /// [`TxError::CapacityTooSmall`] if a split could be left with no output, or the payee could
    /// never be paid its dust limit.
    pub fn new(funding: FundingScript, params: ChannelTxParams) -> Result<Self, TxError> {
        let builder = ChannelTxBuilder { params, funding };
        let one_output_fee = builder.fee(&builder.template(absolute::LockTime::ZERO, 1))?;
        let split_fee = builder.fee(&builder.template(absolute::LockTime::ZERO, 2))?;
        let payer_dust = builder.params.payer_script.minimal_non_dust();
        let payee_dust = builder.params.payee_script.minimal_non_dust();
        // A total just below the payee's dust limit leaves one output, the payer's: it must not
        // be dust itself. And the payee must be payable its dust limit in a split.
        let trimmed_needs =
            one_output_fee.checked_add(payer_dust).and_then(|a| a.checked_add(payee_dust));
        let split_needs = split_fee.checked_add(payee_dust);
        let needed =
            trimmed_needs.zip(split_needs).map(|(a, b)| a.max(b)).ok_or(TxError::Overflow)?;
        if builder.params.capacity < needed {
            return Err(TxError::CapacityTooSmall { capacity: builder.params.capacity, needed });
        }
        Ok(builder)
    }

    /// Returns the funding script.
    pub fn funding(&self) -> &FundingScript {
        &self.funding
    }

    /// Returns the parameters.
    pub fn params(&self) -> &ChannelTxParams {
        &self.params
    }

    /// Returns the most the payer can pay: the capacity less a two-output commitment's fee.
    pub fn max_payable(&self) -> Amount {
        let fee = self.fee(&self.template(absolute::LockTime::ZERO, 2)).unwrap_or(Amount::MAX);
        self.params.capacity.checked_sub(fee).unwrap_or(Amount::ZERO)
    }

    /// Builds the refund: everything but the fee back to the payer, final at height `locktime`.
    ///
    /// # Errors
    /// [`TxError::NotAHeight`] for a locktime that is not a block height.
    pub fn refund(&self, locktime: u32) -> Result<Transaction, TxError> {
        let lock_time = height(locktime)?;
        let mut tx = self.template(lock_time, 1);
        let fee = self.fee(&tx)?;
        // `new` checked that the capacity covers the fee and a non-dust output.
        tx.output[0].value = self.params.capacity.checked_sub(fee).ok_or(TxError::Overflow)?;
        Ok(tx)
    }

    /// Builds the commitment paying `paid` to the payee, final at height `locktime`.
    ///
    /// # Errors
    /// [`TxError::InsufficientBalance`] if the payer's side cannot cover `paid` plus the fee,
    /// [`TxError::NotAHeight`] for a locktime that is not a block height.
    pub fn commitment(&self, paid: Amount, locktime: u32) -> Result<Transaction, TxError> {
        self.split(paid, height(locktime)?)
    }

    /// Builds the settlement paying `paid` to the payee, with `nLockTime = 0`.
    ///
    /// # Errors
    /// [`TxError::InsufficientBalance`] if the payer's side cannot cover `paid` plus the fee.
    pub fn settlement(&self, paid: Amount) -> Result<Transaction, TxError> {
        self.split(paid, absolute::LockTime::ZERO)
    }

    /// Returns the BIP 143 sighash (`SIGHASH_ALL`) both parties sign for `tx`, a transaction
    /// from this builder.
    ///
    /// # Errors
    /// [`TxError::NotAChannelTransaction`] if `tx` has no input.
    pub fn sighash(&self, tx: &Transaction) -> Result<SegwitV0Sighash, TxError> {
        SighashCache::new(tx)
            .p2wsh_signature_hash(
                0,
                self.funding.witness_script(),
                self.params.capacity,
                EcdsaSighashType::All,
            )
            .map_err(|_| TxError::NotAChannelTransaction)
    }

    /// Adds the witness that spends the funding output, with both signatures.
    ///
    /// # Errors
    /// [`TxError::NotAChannelTransaction`] if `tx` has no input, [`TxError::Funding`] if
    /// miniscript cannot satisfy the script with the signatures.
    pub fn finalize(
        &self,
        mut tx: Transaction,
        payer_sig: ecdsa::Signature,
        payee_sig: ecdsa::Signature,
    ) -> Result<Transaction, TxError> {
        let txin = tx.input.first_mut().ok_or(TxError::NotAChannelTransaction)?;
        self.funding.satisfy(txin, payer_sig, payee_sig)?;
        Ok(tx)
    }

    /// Builds a split of the capacity: the payer's change first, then the payee's `paid`, each
    /// left out below its owner's dust limit (see the [module docs](self)).
    fn split(&self, paid: Amount, lock_time: absolute::LockTime) -> Result<Transaction, TxError> {
        let pays_payee = !is_dust(paid, &self.params.payee_script);
        let mut tx = self.template(lock_time, if pays_payee { 2 } else { 1 });
        let fee = self.fee(&tx)?;
        let available = self.params.capacity.checked_sub(fee).unwrap_or(Amount::ZERO);
        let payer_value = available
            .checked_sub(paid)
            .ok_or(TxError::InsufficientBalance { available, requested: paid })?;
        if pays_payee {
            tx.output[1].value = paid;
        }
        // `new` made sure a split without the payee's output keeps a non-dust payer output, so
        // removing the payer's here only happens when the payee's output exists.
        if is_dust(payer_value, &self.params.payer_script) {
            tx.output.remove(0);
        } else {
            tx.output[0].value = payer_value;
        }
        Ok(tx)
    }

    /// The fee for `tx` once its witness is in place.
    fn fee(&self, tx: &Transaction) -> Result<Amount, TxError> {
        let weight = spending_weight(tx, self.funding.max_satisfaction_weight());
        fee_for_weight(self.params.feerate, weight).ok_or(TxError::Overflow)
    }

    /// A transaction spending the funding output with `outputs` outputs (payer, then payee), all
    /// of value zero for now.
    fn template(&self, lock_time: absolute::LockTime, outputs: usize) -> Transaction {
        let scripts = [&self.params.payer_script, &self.params.payee_script];
        Transaction {
            version: Version::TWO,
            lock_time,
            input: vec![TxIn {
                previous_output: self.params.funding_outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
                witness: Witness::new(),
            }],
            output: scripts[..outputs]
                .iter()
                .map(|s| TxOut { value: Amount::ZERO, script_pubkey: (*s).clone() })
                .collect(),
        }
    }
}

fn height(locktime: u32) -> Result<absolute::LockTime, TxError> {
    absolute::LockTime::from_height(locktime).map_err(|_| TxError::NotAHeight(locktime))
}
