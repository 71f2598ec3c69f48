//! The handshake: the first frame each way, before any channel message.
//!
//! The payer knows the payee by its node key (printed by `paychan init`). It opens with a
//! [`Hello`] carrying the protocol version and a fresh random nonce; the payee answers with a
//! [`Welcome`] carrying its node key and an ECDSA signature over
//! `SHA256("paychan handshake v1" || nonce || node key)`. A payee that cannot sign for the
//! expected key, or an answer to another nonce, is refused. A payee that speaks another
//! version answers [`HelloReply::Refused`] and closes.
//!
//! The connection is not encrypted, and past the handshake not authenticated: channel messages
//! carry signatures worthless to anyone but the two parties, each checked by the state machines,
//! so no forged message moves money; but a message's other fields (a `pay`'s checkpoint flag,
//! an `error`) can be forged or dropped on the path, which can stop a channel (see
//! docs/protocol.md, Transport).

use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::secp256k1::{ecdsa, Message, Secp256k1, SecretKey};
use bitcoin::PublicKey;
use serde::{Deserialize, Serialize};

use paychan::wire::PROTOCOL_VERSION;

/// Domain separation for the signed digest.
const TAG: &[u8] = b"paychan handshake v1";

/// Payer -> payee: the first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The protocol version the payer speaks.
    pub protocol_version: u16,
    /// 32 random bytes, in hex, for the payee to sign.
    pub nonce: String,
}

/// Payee -> payer: proof of the node key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// The protocol version the payee speaks.
    pub protocol_version: u16,
    /// The payee's node key.
    pub node_id: PublicKey,
    /// DER signature over the handshake digest, in hex.
    pub signature: String,
}

/// Payee -> payer: the answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HelloReply {
    /// The payee proves its key; channel messages may follow.
    Welcome(Welcome),
    /// The payee refuses (another protocol version, a malformed or late hello), and closes.
    Refused {
        /// Why, in words.
        reason: String,
    },
}

/// Errors of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The first frame is not a handshake message.
    #[error("malformed handshake: {0}")]
    Malformed(String),
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {got}, this build speaks {supported}")]
    UnsupportedVersion {
        /// The peer's version.
        got: u16,
        /// Ours.
        supported: u16,
    },
    /// The payee refused the connection.
    #[error("payee refused the connection: {0}")]
    Refused(String),
    /// The payee is not the node asked for.
    #[error("peer is node {got}, not {expected}")]
    WrongNode {
        /// The node key asked for, in hex.
        expected: String,
        /// The node key it presented, in hex.
        got: String,
    },
    /// The signature does not prove the node key.
    #[error("peer failed to prove node key {node_id}")]
    BadProof {
        /// The key it claimed, in hex.
        node_id: String,
    },
}

/// Returns a [`Hello`] with a fresh nonce, and the nonce.
pub fn hello() -> (Hello, [u8; 32]) {
    use bitcoin::secp256k1::rand::RngCore;
    let mut nonce = [0u8; 32];
    bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut nonce);
    (Hello { protocol_version: PROTOCOL_VERSION, nonce: nonce.as_hex().to_string() }, nonce)
}

/// The payee's answer to a payer's first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this proof; channel messages may follow.
    Welcome(HelloReply),
    /// Close the connection, after sending `reply` if there is one.
    Refuse {
        /// Why.
        error: HandshakeError,
        /// What to tell the payer first, if anything.
        reply: Option<HelloReply>,
    },
}

/// The payee's side: answers the first frame `bytes`.
pub fn answer(bytes: &[u8], node_secret: &SecretKey) -> Answer {
    let malformed =
        |reason: String| Answer::Refuse { error: HandshakeError::Malformed(reason), reply: None };
    let hello: Hello = match serde_json::from_slice(bytes) {
        Ok(hello) => hello,
        Err(e) => return malformed(e.to_string()),
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let error = HandshakeError::UnsupportedVersion {
            got: hello.protocol_version,
            supported: PROTOCOL_VERSION,
        };
        let reply = Some(HelloReply::Refused { reason: error.to_string() });
        return Answer::Refuse { error, reply };
    }
    let nonce = match <[u8; 32]>::from_hex(&hello.nonce) {
        Ok(nonce) => nonce,
        Err(e) => return malformed(format!("nonce: {e}")),
    };
    let secp = Secp256k1::signing_only();
    let node_id = PublicKey::new(node_secret.public_key(&secp));
    let signature = secp.sign_ecdsa(&digest(&nonce, &node_id), node_secret);
    Answer::Welcome(HelloReply::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        node_id,
        signature: signature.serialize_der().as_hex().to_string(),
    }))
}

/// The payer's side: checks the payee's reply `bytes` to our `nonce` against `expected`.
///
/// # Errors
/// Any [`HandshakeError`].
pub fn check_reply(
    bytes: &[u8],
    nonce: &[u8; 32],
    expected: &PublicKey,
) -> Result<(), HandshakeError> {
    let reply: HelloReply =
        serde_json::from_slice(bytes).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let welcome = match reply {
        HelloReply::Welcome(w) => w,
        HelloReply::Refused { reason } => return Err(HandshakeError::Refused(reason)),
    };
    if welcome.protocol_version != PROTOCOL_VERSION {
        return Err(HandshakeError::UnsupportedVersion {
            got: welcome.protocol_version,
            supported: PROTOCOL_VERSION,
        });
    }
    if welcome.node_id != *expected {
        let (expected, got) = (expected.to_string(), welcome.node_id.to_string());
        return Err(HandshakeError::WrongNode { expected, got });
    }
    let bad = || HandshakeError::BadProof { node_id: welcome.node_id.to_string() };
    let der = Vec::<u8>::from_hex(&welcome.signature).map_err(|_| bad())?;
    let sig = ecdsa::Signature::from_der(&der).map_err(|_| bad())?;
    Secp256k1::verification_only()
        .verify_ecdsa(&digest(nonce, &welcome.node_id), &sig, &welcome.node_id.inner)
        .map_err(|_| bad())
}

fn digest(nonce: &[u8; 32], node_id: &PublicKey) -> Message {
    let mut engine = sha256::Hash::engine();
    engine.input(TAG);
    engine.input(nonce);
    engine.input(&node_id.inner.serialize());
    Message::from_digest(sha256::Hash::from_engine(engine).to_byte_array())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> (SecretKey, PublicKey) {
        let secret = SecretKey::from_slice(&[byte; 32]).unwrap();
        (secret, PublicKey::new(secret.public_key(&Secp256k1::new())))
    }

    fn reply_bytes(hello: &Hello, secret: &SecretKey) -> Vec<u8> {
        let Answer::Welcome(reply) = answer(&serde_json::to_vec(hello).unwrap(), secret) else {
            panic!("refused a good hello");
        };
        serde_json::to_vec(&reply).unwrap()
    }

    #[test]
    fn the_payee_proves_its_key() {
        let (secret, public) = key(1);
        let (hello, nonce) = hello();
        check_reply(&reply_bytes(&hello, &secret), &nonce, &public).unwrap();
    }

    #[test]
    fn another_key_or_a_replayed_proof_is_refused() {
        let (secret, _) = key(1);
        let (_, other) = key(2);
        let (hello, nonce) = hello();
        let bytes = reply_bytes(&hello, &secret);
        let err = check_reply(&bytes, &nonce, &other).unwrap_err();
        assert!(matches!(err, HandshakeError::WrongNode { .. }), "{err}");
        // A proof recorded for one nonce does not pass for another.
        let (_, fresh) = super::hello();
        let (_, public) = key(1);
        let err = check_reply(&bytes, &fresh, &public).unwrap_err();
        assert!(matches!(err, HandshakeError::BadProof { .. }), "{err}");
    }

    #[test]
    fn another_version_is_refused_with_a_reason() {
        let (secret, _) = key(1);
        let (mut hello, _) = hello();
        hello.protocol_version = PROTOCOL_VERSION + 1;
        let Answer::Refuse { error, reply } = answer(&serde_json::to_vec(&hello).unwrap(), &secret)
        else {
            panic!("took another version");
        };
        assert!(matches!(error, HandshakeError::UnsupportedVersion { .. }));
        assert!(matches!(reply, Some(HelloReply::Refused { .. })));
        let garbage = answer(b"\xff garbage", &secret);
        assert!(matches!(garbage, Answer::Refuse { reply: None, .. }), "{garbage:?}");
    }
}
