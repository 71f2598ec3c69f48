//! Funding from another wallet: the payer's funding as a PSBT that wallet built and signed
//! (Bitcoin Core's `walletcreatefundedpsbt` and `walletprocesspsbt`, Sparrow, a hardware
//! signer).
//!
//! [`funding_tx`] checks what only the PSBT can tell, finalizes it and extracts the
//! transaction; [`crate::channel::Payer::funding_signed`] then checks the transaction as it
//! checks one from paychan's own wallet (the exact amount to the channel's script, once; no
//! script signature; no replace-by-fee signal) before the refund is asked for. Nothing is
//! broadcast here.

use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{Secp256k1, Verification};
use bitcoin::{Transaction, TxOut};
use miniscript::psbt::PsbtExt;

/// Why a PSBT cannot fund a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PsbtError {
    /// The PSBT does not say what an input spends, so its script cannot be checked.
    #[error("PSBT input {index} does not carry the output it spends (witness_utxo)")]
    MissingUtxo {
        /// The input's position.
        index: usize,
    },
    /// An input spends an output that is not native segwit: the funding's txid could change
    /// after the refund was signed against it.
    #[error("PSBT input {index} spends a non-segwit output ({script}); fund from native segwit outputs only")]
    NotSegwit {
        /// The input's position.
        index: usize,
        /// The script it spends, in assembly.
        script: String,
    },
    /// An input signals replace-by-fee: the payer's wallet could replace the funding, and the
    /// refund would then spend nothing.
    #[error("PSBT input {index} signals replace-by-fee (sequence {sequence:#x}); build the PSBT without RBF")]
    SignalsRbf {
        /// The input's position.
        index: usize,
        /// Its sequence.
        sequence: u32,
    },
    /// Some input is not signed, or its signatures do not satisfy its script.
    #[error("the PSBT is not fully signed: {0}")]
    NotSigned(String),
    /// The signed transaction cannot be extracted (an absurd fee, a missing input value).
    #[error("the PSBT's transaction cannot be extracted: {0}")]
    Extract(String),
}

/// Returns the funding transaction a signed `psbt` carries, finalized: every input must say
/// what it spends (a native segwit output), none may signal replace-by-fee, and every input
/// must be signed.
///
/// # Errors
/// [`PsbtError`].
pub fn funding_tx<C: Verification>(
    secp: &Secp256k1<C>,
    mut psbt: Psbt,
) -> Result<Transaction, PsbtError> {
    for (index, (txin, input)) in psbt.unsigned_tx.input.iter().zip(&psbt.inputs).enumerate() {
        let spent: Option<&TxOut> = input.witness_utxo.as_ref().or_else(|| {
            let prev = input.non_witness_utxo.as_ref()?;
            let out = prev.output.get(usize::try_from(txin.previous_output.vout).ok()?)?;
            (prev.compute_txid() == txin.previous_output.txid).then_some(out)
        });
        let spent = spent.ok_or(PsbtError::MissingUtxo { index })?;
        if !spent.script_pubkey.is_witness_program() {
            let script = spent.script_pubkey.to_asm_string();
            return Err(PsbtError::NotSegwit { index, script });
        }
        if txin.sequence.is_rbf() {
            let sequence = txin.sequence.to_consensus_u32();
            return Err(PsbtError::SignalsRbf { index, sequence });
        }
    }
    let finalized = psbt.inputs.iter().all(|i| i.final_script_witness.is_some());
    if !finalized {
        psbt.finalize_mut(secp).map_err(|errors| {
            let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
            PsbtError::NotSigned(reasons.join("; "))
        })?;
    }
    psbt.extract_tx().map_err(|e| PsbtError::Extract(e.to_string()))
}
