//! The funding transaction: the payer's segwit coins into the 2-of-2 output.
//!
//! Only native segwit inputs are allowed. Their signatures live in the witness, which the txid
//! does not commit to, so the txid is known before signing and cannot be changed afterwards: the
//! refund the payee signs against that txid stays valid.

use bitcoin::blockdata::transaction::{predict_weight, InputWeightPrediction};
use bitcoin::sighash::SighashCache;
use bitcoin::transaction::Version;
use bitcoin::{
    absolute, Amount, FeeRate, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Witness,
};

use super::fee::{fee_for_weight, is_dust};
use super::TxError;
use crate::keys::ChannelSigner;

/// One coin of the payer's that the funding transaction spends.
#[derive(Debug, Clone, Copy)]
pub struct FundingInput<'a> {
    /// The coin.
    pub outpoint: OutPoint,
    /// The output being spent (value and script).
    pub txout: &'a TxOut,
    /// The size of the witness that will spend it.
    pub weight: InputWeightPrediction,
}

impl<'a> FundingInput<'a> {
    /// A P2WPKH coin, with the largest possible signature counted for the fee.
    pub fn p2wpkh(outpoint: OutPoint, txout: &'a TxOut) -> Self {
        FundingInput { outpoint, txout, weight: InputWeightPrediction::P2WPKH_MAX }
    }
}

/// Builds the unsigned funding transaction: output 0 pays `capacity` to `funding_script`,
/// output 1 (if not dust) returns the change to `change_script`.
///
/// Returns the transaction and the index of the funding output.
///
/// # Errors
/// [`TxError::NonSegwitInput`] if any input spends a non-segwit output,
/// [`TxError::InsufficientFunds`] if the inputs do not cover capacity plus fee.
pub fn build_funding(
    inputs: &[FundingInput<'_>],
    funding_script: &Script,
    capacity: Amount,
    change_script: &Script,
    feerate: FeeRate,
) -> Result<(Transaction, u32), TxError> {
    for (index, input) in inputs.iter().enumerate() {
        if !input.txout.script_pubkey.is_witness_program() {
            return Err(TxError::NonSegwitInput { index, outpoint: input.outpoint });
        }
    }
    let available = inputs
        .iter()
        .try_fold(Amount::ZERO, |sum, i| sum.checked_add(i.txout.value))
        .ok_or(TxError::Overflow)?;
    // The fee of the signed transaction, with and without the change output.
    let fee = |scripts: &[&Script]| {
        let weight =
            predict_weight(inputs.iter().map(|i| i.weight), scripts.iter().map(|s| s.len()));
        fee_for_weight(feerate, weight).ok_or(TxError::Overflow)
    };
    let needed = capacity.checked_add(fee(&[funding_script])?).ok_or(TxError::Overflow)?;
    if available < needed {
        return Err(TxError::InsufficientFunds { available, needed });
    }
    let mut output = vec![TxOut { value: capacity, script_pubkey: funding_script.to_owned() }];
    let with_change = capacity.checked_add(fee(&[funding_script, change_script])?);
    let change = with_change.and_then(|n| available.checked_sub(n)).unwrap_or(Amount::ZERO);
    // Change below the dust limit is left to the miners rather than creating an output nobody
    // would spend.
    if !is_dust(change, change_script) {
        output.push(TxOut { value: change, script_pubkey: change_script.to_owned() });
    }
    let input = inputs
        .iter()
        .map(|i| TxIn {
            previous_output: i.outpoint,
            script_sig: ScriptBuf::new(),
            // No replace-by-fee signal: a replacement would have another txid and orphan the
            // refund the payee signed. A funding that must be bumped needs a new refund first.
            sequence: Sequence::MAX,
            witness: Witness::new(),
        })
        .collect();
    let tx =
        Transaction { version: Version::TWO, lock_time: absolute::LockTime::ZERO, input, output };
    Ok((tx, 0))
}

/// Signs input `index` of `tx`, which spends the P2WPKH output `txout` of `signer`'s key.
///
/// # Errors
/// [`TxError::Signing`] if the index is out of range or `txout` is not `signer`'s P2WPKH output.
pub fn sign_p2wpkh_input(
    tx: &mut Transaction,
    index: usize,
    txout: &TxOut,
    signer: &ChannelSigner,
) -> Result<(), TxError> {
    let key = signer.public_key();
    let expected = ScriptBuf::new_p2wpkh(
        &key.wpubkey_hash().map_err(|e| TxError::Signing { index, reason: e.to_string() })?,
    );
    if txout.script_pubkey != expected {
        return Err(TxError::Signing { index, reason: "output is not this key's P2WPKH".into() });
    }
    let sighash = SighashCache::new(&*tx)
        .p2wpkh_signature_hash(
            index,
            &txout.script_pubkey,
            txout.value,
            bitcoin::EcdsaSighashType::All,
        )
        .map_err(|e| TxError::Signing { index, reason: e.to_string() })?;
    let sig = signer.sign(sighash);
    tx.input[index].witness = Witness::p2wpkh(&sig, &key.inner);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::Txid;

    fn coin(signer: &ChannelSigner, sat: u64) -> TxOut {
        TxOut {
            value: Amount::from_sat(sat),
            script_pubkey: ScriptBuf::new_p2wpkh(&signer.public_key().wpubkey_hash().unwrap()),
        }
    }

    fn funding_script() -> ScriptBuf {
        ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::all_zeros())
    }

    /// Funds 100,000 sat from `prev` (at a made-up outpoint), change back to `prev`'s script.
    fn fund_from(prev: &TxOut, sat_per_vb: u64) -> Result<(Transaction, u32), TxError> {
        build_funding(
            &[FundingInput::p2wpkh(OutPoint::new(Txid::all_zeros(), 0), prev)],
            &funding_script(),
            Amount::from_sat(100_000),
            &prev.script_pubkey,
            FeeRate::from_sat_per_vb(sat_per_vb).unwrap(),
        )
    }

    #[test]
    fn pays_capacity_and_change_and_the_signed_weight_fits_the_fee() {
        let signer = ChannelSigner::from_slice(&[3; 32]).unwrap();
        let prev = coin(&signer, 200_000);
        let feerate = FeeRate::from_sat_per_vb(2).unwrap();
        let (mut tx, vout) = fund_from(&prev, 2).unwrap();
        assert_eq!(tx.output[vout as usize].value, Amount::from_sat(100_000));
        let txid_before = tx.compute_txid();
        sign_p2wpkh_input(&mut tx, 0, &prev, &signer).unwrap();
        // Signing fills only the witness: the txid is the one the refund was signed against.
        assert_eq!(tx.compute_txid(), txid_before);
        let fee = prev.value - tx.output.iter().map(|o| o.value).sum::<Amount>();
        assert!(fee >= fee_for_weight(feerate, tx.weight()).unwrap());
    }

    #[test]
    fn dust_change_is_left_to_the_fee() {
        let signer = ChannelSigner::from_slice(&[3; 32]).unwrap();
        let feerate = FeeRate::from_sat_per_vb(1).unwrap();
        let build = |sat| fund_from(&coin(&signer, sat), 1).unwrap().0;
        // Find the smallest coin that still gets a change output; one sat less gets none.
        let mut sat = 100_122; // capacity plus the fee without change at 1 sat/vB
        assert_eq!(build(sat).output.len(), 1);
        while build(sat).output.len() == 1 {
            sat += 1;
        }
        let with_change = build(sat);
        assert_eq!(with_change.output[1].value, Amount::from_sat(294), "P2WPKH dust limit");
        let without = build(sat - 1);
        assert_eq!(without.output.len(), 1);
        // Without change the fee is everything above the capacity, at least the rate.
        let fee = Amount::from_sat(sat - 1) - Amount::from_sat(100_000);
        let mut signed = without.clone();
        sign_p2wpkh_input(&mut signed, 0, &coin(&signer, sat - 1), &signer).unwrap();
        assert!(fee >= fee_for_weight(feerate, signed.weight()).unwrap());
    }

    #[test]
    fn non_segwit_input_is_refused() {
        let signer = ChannelSigner::from_slice(&[3; 32]).unwrap();
        let prev = TxOut {
            value: Amount::from_sat(200_000),
            script_pubkey: ScriptBuf::new_p2pkh(&signer.public_key().pubkey_hash()),
        };
        let err = fund_from(&prev, 1).unwrap_err();
        let outpoint = OutPoint::new(Txid::all_zeros(), 0);
        assert_eq!(err, TxError::NonSegwitInput { index: 0, outpoint });
    }

    #[test]
    fn insufficient_inputs_are_refused() {
        let signer = ChannelSigner::from_slice(&[3; 32]).unwrap();
        let err = fund_from(&coin(&signer, 100_000), 1).unwrap_err();
        let (available, needed) = (Amount::from_sat(100_000), Amount::from_sat(100_122));
        assert_eq!(err, TxError::InsufficientFunds { available, needed });
    }

    #[test]
    fn signing_someone_elses_coin_is_refused() {
        let signer = ChannelSigner::from_slice(&[3; 32]).unwrap();
        let other = ChannelSigner::from_slice(&[4; 32]).unwrap();
        let prev = coin(&other, 200_000);
        let (mut tx, _) = fund_from(&prev, 1).unwrap();
        assert!(matches!(
            sign_p2wpkh_input(&mut tx, 0, &prev, &signer),
            Err(TxError::Signing { index: 0, .. })
        ));
        assert!(matches!(
            sign_p2wpkh_input(&mut tx, 5, &coin(&signer, 1), &signer),
            Err(TxError::Signing { index: 5, .. })
        ));
    }
}
