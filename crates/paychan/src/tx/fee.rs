//! Fees and dust.
//!
//! Fees are computed from the real transaction: the weight of the unsigned transaction plus the
//! largest witness that can satisfy the funding script (miniscript's bound, which counts the
//! largest low-S signatures: 71 bytes of DER plus the sighash byte). Real signatures are that long
//! or a byte or two shorter, so the paid fee rate is never below the agreed one and at most a
//! virtual byte's worth above it (very rarely two).

use bitcoin::{Amount, FeeRate, Script, Transaction, Weight};

/// Segwit marker and flag bytes, counted once per transaction (BIP 141).
const SEGWIT_MARKER_AND_FLAG: Weight = Weight::from_wu(2);

/// Returns the weight of `unsigned`, a transaction whose inputs all spend segwit outputs and carry
/// no witness yet, once every input gets a witness of at most `max_witness_weight_per_input`.
pub fn spending_weight(unsigned: &Transaction, max_witness_weight_per_input: Weight) -> Weight {
    // Without witnesses `weight()` counts the legacy serialization. Each input adds its witness
    // (miniscript's bound counts the stack items, and the empty witness is one byte of count).
    let per_input = max_witness_weight_per_input + Weight::from_wu(1);
    let inputs = unsigned.input.len() as u64;
    unsigned.weight() + SEGWIT_MARKER_AND_FLAG + per_input * inputs
}

/// Returns the fee at `feerate` for `weight`, on the virtual size rounded up as nodes count it.
///
/// # Errors
/// `None` on overflow.
pub fn fee_for_weight(feerate: FeeRate, weight: Weight) -> Option<Amount> {
    // `div_ceil` on the raw count: `Weight::to_vbytes_ceil` can overflow near `Weight::MAX`.
    feerate.fee_vb(weight.to_wu().div_ceil(4))
}

/// Returns true if an output of `value` to `script` would be dust under Bitcoin Core's default
/// relay policy (3 sat/vB dust relay fee), and so must not be created.
pub fn is_dust(value: Amount, script: &Script) -> bool {
    value < script.minimal_non_dust()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funding::FundingScript;
    use crate::keys::ChannelSigner;
    use bitcoin::hashes::Hash;
    use bitcoin::transaction::Version;
    use bitcoin::{absolute, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Witness};

    #[test]
    fn spending_weight_equals_the_weight_with_the_largest_witness() {
        let a = ChannelSigner::from_slice(&[1; 32]).unwrap().public_key();
        let b = ChannelSigner::from_slice(&[2; 32]).unwrap().public_key();
        let funding = FundingScript::new(a, b).unwrap();
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::all_zeros()),
            }],
        };
        let predicted = spending_weight(&tx, funding.max_satisfaction_weight());
        // The witness of a 2-of-2 CHECKMULTISIG spend, written out with the largest low-S
        // signatures: 71 bytes of DER plus the sighash byte.
        let script = funding.witness_script().to_bytes();
        tx.input[0].witness = Witness::from_slice(&[vec![], vec![0; 72], vec![0; 72], script]);
        assert_eq!(predicted, tx.weight());
    }

    #[test]
    fn fee_rounds_the_virtual_size_up() {
        let rate = FeeRate::from_sat_per_vb(2).unwrap();
        assert_eq!(fee_for_weight(rate, Weight::from_wu(561)), Some(Amount::from_sat(282)));
        assert_eq!(fee_for_weight(rate, Weight::from_wu(560)), Some(Amount::from_sat(280)));
        assert_eq!(fee_for_weight(FeeRate::MAX, Weight::MAX), None);
    }

    #[test]
    fn p2wpkh_dust_limit_is_294_sat() {
        let script = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::all_zeros());
        assert!(is_dust(Amount::from_sat(293), &script));
        assert!(!is_dust(Amount::from_sat(294), &script));
    }
}
