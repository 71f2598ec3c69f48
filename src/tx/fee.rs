//! Fees and dust.
//!
//! Fees are computed from the real transaction: the weight of the unsigned transaction plus the
//! largest witness that can satisfy the funding script (miniscript's bound, which assumes 73-byte
//! signatures). Real signatures are 71 to 73 bytes, so the paid fee rate is never below the agreed
//! one and at most a few weight units above it.

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
    feerate.fee_vb(weight.to_vbytes_ceil())
}

/// Returns true if an output of `value` to `script` would be dust under Bitcoin Core's default
/// relay policy (3 sat/vB dust relay fee), and so must not be created.
pub fn is_dust(value: Amount, script: &Script) -> bool {
    value < script.minimal_non_dust()
}
