//! The funding output: a 2-of-2 multisig of the payer's and the payee's keys in P2WSH.
//!
//! The script comes from the miniscript descriptor `wsh(multi(2,PAYER,PAYEE))`, never from
//! hand-assembled opcodes; the same descriptor gives the address, the witness script, the
//! largest satisfaction weight (for fees) and the final witness (for signing).

use std::collections::HashMap;

use bitcoin::{ecdsa, Address, Network, PublicKey, ScriptBuf, TxIn, Weight};
use miniscript::{Descriptor, Miniscript, Segwitv0, Terminal, Threshold};

/// Errors from building or satisfying the funding descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FundingError {
    /// Both parties presented the same key; a 2-of-2 of one key is a 1-of-1.
    #[error("payer and payee keys are the same key {0}")]
    SameKey(PublicKey),
    /// Segwit scripts only take compressed keys (BIP 143 policy).
    #[error("key {0} is uncompressed; segwit needs compressed keys")]
    UncompressedKey(PublicKey),
    /// Miniscript refused the descriptor or could not satisfy it.
    #[error("miniscript: {0}")]
    Miniscript(String),
}

/// The funding script of one channel, built from its descriptor.
///
/// ```
/// use paychan::bitcoin::Network;
/// use paychan::funding::FundingScript;
/// use paychan::keys::ChannelSigner;
///
/// let payer = ChannelSigner::from_slice(&[1; 32])?.public_key();
/// let payee = ChannelSigner::from_slice(&[2; 32])?.public_key();
/// let funding = FundingScript::new(payer, payee)?;
/// assert!(funding.descriptor().to_string().starts_with(&format!("wsh(multi(2,{payer},{payee}))")));
/// assert!(funding.address(Network::Regtest).to_string().starts_with("bcrt1q"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundingScript {
    descriptor: Descriptor<PublicKey>,
    payer: PublicKey,
    payee: PublicKey,
    witness_script: ScriptBuf,
    script_pubkey: ScriptBuf,
    max_satisfaction_weight: Weight,
}

impl FundingScript {
    /// Builds `wsh(multi(2,payer,payee))`.
    ///
    /// The key order is fixed (payer first) rather than sorted: both sides know who is who, and a
    /// fixed order keeps the descriptor readable.
    ///
    /// # Errors
    /// [`FundingError::SameKey`], [`FundingError::UncompressedKey`], or a miniscript error.
    pub fn new(payer: PublicKey, payee: PublicKey) -> Result<Self, FundingError> {
        if payer == payee {
            return Err(FundingError::SameKey(payer));
        }
        for key in [payer, payee] {
            if !key.compressed {
                return Err(FundingError::UncompressedKey(key));
            }
        }
        // Built, not parsed from text: every stored channel is rebuilt at each start, and
        // parsing would decode both keys again.
        let miniscript = |e: miniscript::Error| FundingError::Miniscript(e.to_string());
        let keys = Threshold::new(2, vec![payer, payee])
            .map_err(|e| FundingError::Miniscript(e.to_string()))?;
        let multi = Miniscript::<PublicKey, Segwitv0>::from_ast(Terminal::Multi(keys));
        let descriptor = Descriptor::new_wsh(multi.map_err(miniscript)?).map_err(miniscript)?;
        descriptor.sanity_check().map_err(|e| FundingError::Miniscript(e.to_string()))?;
        let witness_script =
            descriptor.explicit_script().map_err(|e| FundingError::Miniscript(e.to_string()))?;
        let max_satisfaction_weight = descriptor
            .max_weight_to_satisfy()
            .map_err(|e| FundingError::Miniscript(e.to_string()))?;
        let script_pubkey = descriptor.script_pubkey();
        Ok(FundingScript {
            descriptor,
            payer,
            payee,
            witness_script,
            script_pubkey,
            max_satisfaction_weight,
        })
    }

    /// Returns the descriptor, e.g. `wsh(multi(2,02..,03..))#checksum`.
    pub fn descriptor(&self) -> &Descriptor<PublicKey> {
        &self.descriptor
    }

    /// Returns the payer's key.
    pub fn payer(&self) -> PublicKey {
        self.payer
    }

    /// Returns the payee's key.
    pub fn payee(&self) -> PublicKey {
        self.payee
    }

    /// Returns the witness script (`OP_2 <payer> <payee> OP_2 OP_CHECKMULTISIG`).
    pub fn witness_script(&self) -> &ScriptBuf {
        &self.witness_script
    }

    /// Returns the P2WSH output script the funding transaction pays.
    pub fn script_pubkey(&self) -> &ScriptBuf {
        &self.script_pubkey
    }

    /// Returns the funding address on `network`.
    pub fn address(&self, network: Network) -> Address {
        Address::p2wsh(&self.witness_script, network)
    }

    /// Returns the largest weight a satisfying witness can add to a spending input, as miniscript
    /// computes it: the largest low-S signatures, 72 bytes with the sighash byte.
    pub fn max_satisfaction_weight(&self) -> Weight {
        self.max_satisfaction_weight
    }

    /// Puts the witness that spends the funding output into `txin`, given both signatures.
    ///
    /// # Errors
    /// A miniscript error if the satisfaction cannot be built.
    pub fn satisfy(
        &self,
        txin: &mut TxIn,
        payer_sig: ecdsa::Signature,
        payee_sig: ecdsa::Signature,
    ) -> Result<(), FundingError> {
        let sigs: HashMap<PublicKey, ecdsa::Signature> =
            [(self.payer, payer_sig), (self.payee, payee_sig)].into_iter().collect();
        self.descriptor.satisfy(txin, sigs).map_err(|e| FundingError::Miniscript(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ChannelSigner;

    fn keys() -> (PublicKey, PublicKey) {
        (
            ChannelSigner::from_slice(&[1; 32]).unwrap().public_key(),
            ChannelSigner::from_slice(&[2; 32]).unwrap().public_key(),
        )
    }

    #[test]
    fn fixed_keys_give_fixed_descriptor_and_address() {
        let (a, b) = keys();
        let f = FundingScript::new(a, b).unwrap();
        assert_eq!(
            f.descriptor().to_string(),
            "wsh(multi(2,031b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f,\
             024d4b6cd1361032ca9bd2aeb9d900aa4d45d9ead80ac9423374c451a7254d0766))#7ypraegm"
        );
        assert_eq!(
            f.address(Network::Regtest).to_string(),
            "bcrt1qv4mkpjsp2967gtl4k3rs2caj8tw0p55h8gzsdgtk54tfdyxkgsmsvc0c37"
        );
        assert_eq!(f.address(Network::Regtest), f.descriptor().address(Network::Regtest).unwrap());
        // The witness script, written out by hand here only to check miniscript's:
        // OP_2 <33-byte payer key> <33-byte payee key> OP_2 OP_CHECKMULTISIG.
        let expected = format!("5221{a}21{b}52ae");
        assert_eq!(f.witness_script().to_hex_string(), expected);
        assert!(f.script_pubkey().is_p2wsh());
        // Built from its parts, it is what the text parses to.
        let parsed = <Descriptor<PublicKey> as std::str::FromStr>::from_str(&format!(
            "wsh(multi(2,{a},{b}))"
        ));
        assert_eq!(f.descriptor(), &parsed.unwrap());
    }

    #[test]
    fn same_key_twice_is_refused() {
        let (a, _) = keys();
        assert_eq!(FundingScript::new(a, a), Err(FundingError::SameKey(a)));
    }

    #[test]
    fn uncompressed_key_is_refused() {
        let (a, b) = keys();
        let mut u = b;
        u.compressed = false;
        assert_eq!(FundingScript::new(a, u), Err(FundingError::UncompressedKey(u)));
    }
}
