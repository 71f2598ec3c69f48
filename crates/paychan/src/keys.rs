//! Channel keys: signing and checking the ECDSA signatures on channel transactions.
//!
//! Every channel transaction spends the 2-of-2 P2WSH funding output, so every signature here is
//! a segwit v0 signature ([BIP 143]) with `SIGHASH_ALL`: any other sighash type would let the
//! other party change outputs after the fact, so it is refused.
//!
//! [BIP 143]: https://github.com/bitcoin/bips/blob/master/bip-0143.mediawiki

use std::fmt;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{self, All, Message, Secp256k1, SecretKey, Verification};
use bitcoin::sighash::SegwitV0Sighash;
use bitcoin::{ecdsa, EcdsaSighashType, PublicKey};

/// Errors from parsing or checking a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The bytes are not a DER signature followed by a sighash byte.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// The signature commits to a sighash type other than `SIGHASH_ALL`.
    #[error("signature has sighash type {found}, only SIGHASH_ALL is accepted")]
    WrongSighashType {
        /// The sighash type the signature carried.
        found: String,
    },
    /// The signature does not verify against the locally rebuilt transaction.
    #[error("signature does not verify against the rebuilt transaction")]
    Invalid,
}

/// Errors from loading a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not a valid secp256k1 secret key.
    #[error("invalid secret key: {0}")]
    InvalidSecretKey(secp256k1::Error),
}

/// The process's secp256k1 context, shared by every signer.
fn context() -> &'static Secp256k1<All> {
    static CONTEXT: std::sync::OnceLock<Secp256k1<All>> = std::sync::OnceLock::new();
    CONTEXT.get_or_init(Secp256k1::new)
}

/// Holds one party's channel secret key and signs channel transactions with it.
///
/// Kept behind this small type so that tests can use fixed keys and a host application can keep
/// the key wherever it likes. Every signer shares one secp256k1 context, created (and
/// randomized) once per process: one per signer cost a daemon with 100,000 channels seconds at
/// each start, and memory for as long as it ran.
#[derive(Clone)]
pub struct ChannelSigner {
    secp: &'static Secp256k1<All>,
    secret: SecretKey,
    public: PublicKey,
}

impl ChannelSigner {
    /// Creates a signer for `secret`.
    pub fn new(secret: SecretKey) -> Self {
        let secp = context();
        let public = PublicKey::new(secret.public_key(secp));
        ChannelSigner { secp, secret, public }
    }

    /// Creates a signer from 32 secret-key bytes.
    ///
    /// # Errors
    /// [`KeyError::InvalidSecretKey`] if the bytes are zero or not below the curve order.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        SecretKey::from_slice(bytes).map(Self::new).map_err(KeyError::InvalidSecretKey)
    }

    /// Creates a signer with a fresh random key.
    pub fn random() -> Self {
        Self::new(SecretKey::new(&mut secp256k1::rand::thread_rng()))
    }

    /// Returns the compressed public key that goes into the funding script.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs a segwit v0 sighash with `SIGHASH_ALL`.
    pub fn sign(&self, sighash: SegwitV0Sighash) -> ecdsa::Signature {
        let msg = Message::from_digest(sighash.to_byte_array());
        ecdsa::Signature::sighash_all(self.secp.sign_ecdsa(&msg, &self.secret))
    }

    /// Signs `digest`, a hash of our own making that is no transaction's (the proof of a
    /// channel key on a connection, [`crate::auth`]).
    pub fn sign_digest(&self, digest: [u8; 32]) -> secp256k1::ecdsa::Signature {
        self.secp.sign_ecdsa(&Message::from_digest(digest), &self.secret)
    }

    /// Checks that `sig` is a `SIGHASH_ALL` signature by `key` over `sighash`.
    ///
    /// # Errors
    /// [`SignatureError::WrongSighashType`] or [`SignatureError::Invalid`].
    pub fn verify(
        &self,
        sighash: SegwitV0Sighash,
        sig: &ecdsa::Signature,
        key: &PublicKey,
    ) -> Result<(), SignatureError> {
        if sig.sighash_type != EcdsaSighashType::All {
            return Err(SignatureError::WrongSighashType { found: sig.sighash_type.to_string() });
        }
        let check = SignatureCheck { sighash, signature: *sig, key: *key };
        check.verify(self.secp).then_some(()).ok_or(SignatureError::Invalid)
    }
}

/// A signature to check: `key`'s signature over `sighash`, parsed and of type `SIGHASH_ALL`.
///
/// The payee's state machine makes these for a run of payments
/// ([`crate::channel::Payee::prepare_payments`]) so that the caller can check them wherever it
/// likes, on several threads say, and hand the results back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureCheck {
    /// The BIP 143 digest signed.
    pub sighash: SegwitV0Sighash,
    /// The signature.
    pub signature: ecdsa::Signature,
    /// The key that must have made it.
    pub key: PublicKey,
}

impl SignatureCheck {
    /// Whether the signature is valid.
    pub fn verify<C: Verification>(&self, secp: &Secp256k1<C>) -> bool {
        let msg = Message::from_digest(self.sighash.to_byte_array());
        secp.verify_ecdsa(&msg, &self.signature.signature, &self.key.inner).is_ok()
    }
}

impl fmt::Debug for ChannelSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("ChannelSigner").field("public", &self.public).finish_non_exhaustive()
    }
}

/// Parses a signature as it travels on the wire: DER followed by one sighash-type byte.
///
/// # Errors
/// [`SignatureError::Malformed`] for bytes that are not a signature, and
/// [`SignatureError::WrongSighashType`] for anything but `SIGHASH_ALL`.
pub fn parse_signature(bytes: &[u8]) -> Result<ecdsa::Signature, SignatureError> {
    let (sighash_byte, der) = bytes
        .split_last()
        .ok_or_else(|| SignatureError::Malformed("empty signature".to_owned()))?;
    let signature = secp256k1::ecdsa::Signature::from_der(der)
        .map_err(|e| SignatureError::Malformed(e.to_string()))?;
    let sighash_type = EcdsaSighashType::from_standard(u32::from(*sighash_byte))
        .map_err(|_| SignatureError::WrongSighashType { found: format!("0x{sighash_byte:02x}") })?;
    if sighash_type != EcdsaSighashType::All {
        return Err(SignatureError::WrongSighashType { found: sighash_type.to_string() });
    }
    Ok(ecdsa::Signature { signature, sighash_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighash(byte: u8) -> SegwitV0Sighash {
        SegwitV0Sighash::from_byte_array([byte; 32])
    }

    #[test]
    fn signature_round_trips_through_wire_bytes() {
        let signer = ChannelSigner::from_slice(&[7; 32]).unwrap();
        let sig = signer.sign(sighash(1));
        let parsed = parse_signature(&sig.to_vec()).unwrap();
        assert_eq!(parsed, sig);
        signer.verify(sighash(1), &parsed, &signer.public_key()).unwrap();
    }

    #[test]
    fn signature_over_other_message_or_key_is_invalid() {
        let a = ChannelSigner::from_slice(&[7; 32]).unwrap();
        let b = ChannelSigner::from_slice(&[8; 32]).unwrap();
        let sig = a.sign(sighash(1));
        assert_eq!(a.verify(sighash(2), &sig, &a.public_key()), Err(SignatureError::Invalid));
        assert_eq!(a.verify(sighash(1), &sig, &b.public_key()), Err(SignatureError::Invalid));
    }

    #[test]
    fn other_sighash_types_are_refused() {
        let a = ChannelSigner::from_slice(&[7; 32]).unwrap();
        let mut bytes = a.sign(sighash(1)).to_vec();
        *bytes.last_mut().unwrap() = 0x02; // SIGHASH_NONE
        assert!(matches!(parse_signature(&bytes), Err(SignatureError::WrongSighashType { .. })));
        *bytes.last_mut().unwrap() = 0x07; // not a standard type at all
        assert!(matches!(parse_signature(&bytes), Err(SignatureError::WrongSighashType { .. })));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(parse_signature(&[]), Err(SignatureError::Malformed(_))));
        assert!(matches!(parse_signature(&[0x30, 0x01]), Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn invalid_secret_key_is_an_error() {
        assert!(ChannelSigner::from_slice(&[0; 32]).is_err());
        assert!(ChannelSigner::from_slice(&[1; 31]).is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let a = ChannelSigner::from_slice(&[7; 32]).unwrap();
        assert!(!format!("{a:?}").contains("0707"));
    }
}
