//! Proof of a channel's payer key on one connection.
//!
//! The transport gives each connection a session, and both ends the same 32-byte handshake
//! hash, unique to it. A payer proves it holds a channel's payer key by signing that hash with
//! the channel's id ([`authenticate`]); the payee checks it ([`verify`]) and from then on takes
//! that channel's messages on that connection only. The signature is worthless anywhere else:
//! another connection has another hash.

use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::{ecdsa, Message, Secp256k1, Verification};
use bitcoin::PublicKey;

use crate::keys::ChannelSigner;
use crate::wire::{Authenticate, ChannelId, RawSignature};

/// Domain separation: the digest is no transaction's sighash and no other protocol's.
const TAG: &[u8] = b"paychan authenticate v1";

/// Errors from checking an [`Authenticate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The signature is not DER.
    #[error("malformed authentication signature")]
    Malformed,
    /// The signature is not the payer key's over this session and channel.
    #[error("the signature does not prove the payer key on this connection")]
    Invalid,
}

/// The digest a payer signs to prove `payer_key` for `channel_id` on the session whose
/// handshake hash is `session`.
pub fn digest(session: &[u8; 32], channel_id: ChannelId, payer_key: &PublicKey) -> [u8; 32] {
    let mut engine = sha256::Hash::engine();
    engine.input(TAG);
    engine.input(session);
    engine.input(&channel_id.0);
    engine.input(&payer_key.inner.serialize());
    sha256::Hash::from_engine(engine).to_byte_array()
}

/// Proves `signer`'s key for `channel_id` on the session `session`.
pub fn authenticate(
    signer: &ChannelSigner,
    session: &[u8; 32],
    channel_id: ChannelId,
) -> Authenticate {
    let payer_key = signer.public_key();
    let signature = signer.sign_digest(digest(session, channel_id, &payer_key));
    Authenticate {
        channel_id,
        payer_key,
        signature: RawSignature(signature.serialize_der().to_vec()),
    }
}

/// Checks that `auth` proves its payer key on the session `session`.
///
/// # Errors
/// [`AuthError::Malformed`] or [`AuthError::Invalid`].
pub fn verify<C: Verification>(
    secp: &Secp256k1<C>,
    auth: &Authenticate,
    session: &[u8; 32],
) -> Result<(), AuthError> {
    let sig = ecdsa::Signature::from_der(&auth.signature.0).map_err(|_| AuthError::Malformed)?;
    let msg = Message::from_digest(digest(session, auth.channel_id, &auth.payer_key));
    secp.verify_ecdsa(&msg, &sig, &auth.payer_key.inner).map_err(|_| AuthError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_for_its_session_channel_and_key_only() {
        let secp = Secp256k1::verification_only();
        let signer = ChannelSigner::from_slice(&[3; 32]).unwrap();
        let (session, id) = ([9; 32], ChannelId([4; 32]));
        let auth = authenticate(&signer, &session, id);
        assert_eq!(verify(&secp, &auth, &session), Ok(()));
        assert_eq!(verify(&secp, &auth, &[8; 32]), Err(AuthError::Invalid));
        let other_channel = Authenticate { channel_id: ChannelId([5; 32]), ..auth.clone() };
        assert_eq!(verify(&secp, &other_channel, &session), Err(AuthError::Invalid));
        let other_key = ChannelSigner::from_slice(&[6; 32]).unwrap().public_key();
        let claimed = Authenticate { payer_key: other_key, ..auth.clone() };
        assert_eq!(verify(&secp, &claimed, &session), Err(AuthError::Invalid));
        let garbage = Authenticate { signature: RawSignature(vec![1, 2, 3]), ..auth };
        assert_eq!(verify(&secp, &garbage, &session), Err(AuthError::Malformed));
    }
}
