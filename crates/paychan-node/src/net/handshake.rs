//! The handshake: Noise `NX` (X25519, ChaCha20-Poly1305, SHA-256, by the `snow` crate), two
//! messages, before any channel message. It does no I/O: the caller moves the bytes.
//!
//! ```text
//! payer (initiator)                                        payee (responder)
//!   -> e, payload: TRANSPORT_VERSION (2 bytes, in clear)
//!                          <- e, ee, s, es, payload: HelloReply (encrypted)
//! ```
//!
//! The payee's Noise static key `s` is made when its daemon starts, and its node key (the
//! secp256k1 key `paychan init` prints, which the payer names in `NODE_ID@HOST:PORT`) signs it:
//! the [`Welcome`] carries that certificate. The payer accepts the session only if the
//! certificate is the expected node's signature over the very static key the handshake
//! authenticated (`es`: only its holder could have sent the second message). So the session's
//! keys are shared with that node and nobody else, and every frame after it is encrypted and
//! authenticated ([`crate::net::session`]).
//!
//! `snow` offers no secp256k1 Diffie-Hellman, so the node key cannot be the Noise static key
//! itself as in Lightning's BOLT 8; it certifies it instead.
//!
//! The payer has no static key: it proves each channel's payer key separately, by signing this
//! session's handshake hash ([`paychan::auth`]).

use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::secp256k1::{ecdsa, Message, Secp256k1, SecretKey};
use bitcoin::PublicKey;
use serde::{Deserialize, Serialize};
use snow::{HandshakeState, StatelessTransportState};

use super::session::Session;

/// The Noise protocol.
pub const NOISE_PARAMS: &str = "Noise_NX_25519_ChaChaPoly_SHA256";

/// The version of this transport, sent in the first message. The plaintext transport of
/// earlier releases had none; its first byte is a `{`.
pub const TRANSPORT_VERSION: u16 = 1;

/// Bound into the handshake hash: a session of another protocol cannot pass for one of ours.
const PROLOGUE: &[u8] = b"paychan transport";

/// Domain separation for the node key's certificate of the static key.
const CERTIFICATE_TAG: &[u8] = b"paychan noise static key";

/// The largest handshake message: the second, with its encrypted [`HelloReply`].
const MAX_HANDSHAKE: usize = 1024;

/// Payee -> payer, in the second handshake message: the node key and its certificate of the
/// static key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// The transport version the payee speaks.
    pub transport_version: u16,
    /// The payee's node key.
    pub node_id: PublicKey,
    /// The node key's DER signature over the certificate digest of the static key, in hex.
    pub certificate: String,
}

/// Payee -> payer: the encrypted payload of the second handshake message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HelloReply {
    /// The payee proves its node key; channel messages may follow.
    Welcome(Welcome),
    /// The payee refuses (another transport version), and closes.
    Refused {
        /// Why, in words.
        reason: String,
    },
}

/// Errors of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A handshake message is malformed, or fails its authentication.
    #[error("malformed handshake: {0}")]
    Malformed(String),
    /// The peer speaks the plaintext transport of releases before the encrypted one.
    #[error("the peer speaks the old plaintext transport; both sides need this release")]
    Plaintext,
    /// The peer speaks another transport version.
    #[error("peer speaks transport version {got}, this build speaks {supported}")]
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
    /// The certificate does not prove the node key.
    #[error("peer failed to prove node key {node_id}")]
    BadProof {
        /// The key it claimed, in hex.
        node_id: String,
    },
}

fn malformed(e: impl std::fmt::Display) -> HandshakeError {
    HandshakeError::Malformed(e.to_string())
}

fn builder() -> snow::Builder<'static> {
    snow::Builder::new(NOISE_PARAMS.parse().expect("a valid Noise pattern"))
}

/// The payee's side of every handshake: its node key, its static key for this run, and the
/// certificate binding the two. Made once per daemon.
#[derive(Clone)]
pub struct NodeIdentity {
    node_id: PublicKey,
    static_secret: Vec<u8>,
    certificate: String,
}

impl NodeIdentity {
    /// Makes a fresh static key and has `node_secret` certify it.
    pub fn new(node_secret: &SecretKey) -> NodeIdentity {
        let keypair = builder().generate_keypair().expect("the system's random source works");
        let secp = Secp256k1::signing_only();
        let node_id = PublicKey::new(node_secret.public_key(&secp));
        let sig = secp.sign_ecdsa(&certificate_digest(&node_id, &keypair.public), node_secret);
        let certificate = sig.serialize_der().as_hex().to_string();
        NodeIdentity { node_id, static_secret: keypair.private, certificate }
    }

    /// Returns the node key.
    pub fn node_id(&self) -> PublicKey {
        self.node_id
    }
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the static secret.
        f.debug_struct("NodeIdentity").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// The payer's side, between its first message and the payee's answer.
pub struct Initiator {
    state: HandshakeState,
    expected: PublicKey,
}

impl Initiator {
    /// Starts a handshake with the payee whose node key is `expected`: returns the state and the
    /// first message to send.
    pub fn start(expected: PublicKey) -> (Initiator, Vec<u8>) {
        let mut state = builder()
            .prologue(PROLOGUE)
            .and_then(snow::Builder::build_initiator)
            .expect("an initiator builds from a valid pattern");
        let mut first = vec![0u8; MAX_HANDSHAKE];
        let len = state
            .write_message(&TRANSPORT_VERSION.to_be_bytes(), &mut first)
            .expect("the first message fits");
        first.truncate(len);
        (Initiator { state, expected }, first)
    }

    /// Takes the payee's answer: returns the session if it proves the expected node key.
    ///
    /// # Errors
    /// Any [`HandshakeError`].
    pub fn finish(mut self, answer: &[u8]) -> Result<Session, HandshakeError> {
        if is_plaintext(answer) {
            return Err(HandshakeError::Plaintext);
        }
        let mut payload = vec![0u8; MAX_HANDSHAKE];
        let len = self.state.read_message(answer, &mut payload).map_err(malformed)?;
        let reply: HelloReply = serde_json::from_slice(&payload[..len]).map_err(malformed)?;
        let welcome = match reply {
            HelloReply::Welcome(w) => w,
            HelloReply::Refused { reason } => return Err(HandshakeError::Refused(reason)),
        };
        if welcome.transport_version != TRANSPORT_VERSION {
            return Err(HandshakeError::UnsupportedVersion {
                got: welcome.transport_version,
                supported: TRANSPORT_VERSION,
            });
        }
        if welcome.node_id != self.expected {
            let (expected, got) = (self.expected.to_string(), welcome.node_id.to_string());
            return Err(HandshakeError::WrongNode { expected, got });
        }
        let bad = || HandshakeError::BadProof { node_id: welcome.node_id.to_string() };
        let remote_static = self.state.get_remote_static().ok_or_else(bad)?.to_vec();
        let der = Vec::<u8>::from_hex(&welcome.certificate).map_err(|_| bad())?;
        let sig = ecdsa::Signature::from_der(&der).map_err(|_| bad())?;
        let digest = certificate_digest(&welcome.node_id, &remote_static);
        Secp256k1::verification_only()
            .verify_ecdsa(&digest, &sig, &welcome.node_id.inner)
            .map_err(|_| bad())?;
        into_session(self.state)
    }
}

/// The payee's answer to a payer's first message.
pub enum Answer {
    /// Send `reply`; the session is open.
    Welcome {
        /// The second handshake message.
        reply: Vec<u8>,
        /// The session.
        session: Session,
    },
    /// Close the connection, after sending `reply` if there is one.
    Refuse {
        /// Why.
        error: HandshakeError,
        /// What to send first, if anything.
        reply: Option<Vec<u8>>,
    },
}

/// The payee's side: answers the payer's first message `first`.
pub fn answer(first: &[u8], identity: &NodeIdentity) -> Answer {
    let refuse = |error| Answer::Refuse { error, reply: None };
    if is_plaintext(first) {
        // A payer of an earlier release: told so in its own plaintext.
        let error = HandshakeError::Plaintext;
        let reply = serde_json::json!({ "refused": { "reason": error.to_string() } });
        let reply = Some(serde_json::to_vec(&reply).expect("JSON serializes"));
        return Answer::Refuse { error, reply };
    }
    let mut state = match builder()
        .local_private_key(&identity.static_secret)
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(snow::Builder::build_responder)
    {
        Ok(state) => state,
        Err(e) => return refuse(malformed(e)),
    };
    let mut payload = [0u8; MAX_HANDSHAKE];
    let version = match state.read_message(first, &mut payload) {
        Ok(2) => u16::from_be_bytes([payload[0], payload[1]]),
        Ok(n) => return refuse(malformed(format!("a first message with {n} bytes of payload"))),
        Err(e) => return refuse(malformed(e)),
    };
    let (reply, error) = if version == TRANSPORT_VERSION {
        let welcome = Welcome {
            transport_version: TRANSPORT_VERSION,
            node_id: identity.node_id,
            certificate: identity.certificate.clone(),
        };
        (HelloReply::Welcome(welcome), None)
    } else {
        let error =
            HandshakeError::UnsupportedVersion { got: version, supported: TRANSPORT_VERSION };
        (HelloReply::Refused { reason: error.to_string() }, Some(error))
    };
    let mut second = vec![0u8; MAX_HANDSHAKE];
    let payload = serde_json::to_vec(&reply).expect("JSON serializes");
    let len = match state.write_message(&payload, &mut second) {
        Ok(len) => len,
        Err(e) => return refuse(malformed(e)),
    };
    second.truncate(len);
    match error {
        Some(error) => Answer::Refuse { error, reply: Some(second) },
        None => match into_session(state) {
            Ok(session) => Answer::Welcome { reply: second, session },
            Err(error) => refuse(error),
        },
    }
}

/// Whether `frame` is a JSON message of the plaintext transport. A Noise message starts with a
/// random public key, which begins with a `{` one time in 256: only a whole JSON object counts.
fn is_plaintext(frame: &[u8]) -> bool {
    frame.first() == Some(&b'{')
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(frame).is_ok()
}

fn into_session(state: HandshakeState) -> Result<Session, HandshakeError> {
    let hash: [u8; 32] = state.get_handshake_hash().try_into().map_err(malformed)?;
    let transport: StatelessTransportState =
        state.into_stateless_transport_mode().map_err(malformed)?;
    Ok(Session::new(transport, hash))
}

fn certificate_digest(node_id: &PublicKey, static_key: &[u8]) -> Message {
    let mut engine = sha256::Hash::engine();
    engine.input(CERTIFICATE_TAG);
    engine.input(&node_id.inner.serialize());
    engine.input(static_key);
    Message::from_digest(sha256::Hash::from_engine(engine).to_byte_array())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(byte: u8) -> NodeIdentity {
        NodeIdentity::new(&SecretKey::from_slice(&[byte; 32]).unwrap())
    }

    fn handshake(payee: &NodeIdentity, expected: PublicKey) -> Result<(Session, Session), String> {
        let (initiator, first) = Initiator::start(expected);
        let Answer::Welcome { reply, session } = answer(&first, payee) else {
            return Err("refused".into());
        };
        let ours = initiator.finish(&reply).map_err(|e| e.to_string())?;
        Ok((ours, session))
    }

    #[test]
    fn both_sides_share_a_session_with_the_expected_node() {
        let payee = identity(1);
        let (mut payer_side, mut payee_side) = handshake(&payee, payee.node_id()).unwrap();
        assert_eq!(payer_side.hash(), payee_side.hash());
        let sealed = payer_side.sealer.seal(b"pay").unwrap();
        assert_eq!(payee_side.opener.open(&sealed).unwrap(), b"pay");
        let sealed = payee_side.sealer.seal(b"ack").unwrap();
        assert_eq!(payer_side.opener.open(&sealed).unwrap(), b"ack");
    }

    #[test]
    fn another_node_is_refused() {
        let (payee, other) = (identity(1), identity(2));
        let err = handshake(&payee, other.node_id()).unwrap_err();
        assert!(err.contains("not"), "{err}");
    }

    #[test]
    fn a_certificate_of_another_static_key_is_refused() {
        // The node's certificate, replayed by an impostor with its own static key.
        let payee = identity(1);
        let mut impostor = identity(3);
        impostor.node_id = payee.node_id;
        impostor.certificate = payee.certificate.clone();
        let err = handshake(&impostor, payee.node_id()).unwrap_err();
        assert!(err.contains("failed to prove"), "{err}");
    }

    #[test]
    fn a_tampered_answer_and_garbage_are_refused() {
        let payee = identity(1);
        let (initiator, first) = Initiator::start(payee.node_id());
        let Answer::Welcome { mut reply, .. } = answer(&first, &payee) else { panic!() };
        let last = reply.len() - 1;
        reply[last] ^= 1;
        assert!(matches!(initiator.finish(&reply), Err(HandshakeError::Malformed(_))));
        for garbage in [&b""[..], b"\x00\x01", &[7u8; 40]] {
            assert!(matches!(answer(garbage, &payee), Answer::Refuse { reply: None, .. }));
        }
        let Answer::Refuse { error, reply: Some(_) } = answer(br#"{"protocol_version":2}"#, &payee)
        else {
            panic!("a plaintext hello is not told why");
        };
        assert_eq!(error, HandshakeError::Plaintext);
        // A first message whose ephemeral key happens to start with a brace is no plaintext.
        let mut braced = first.clone();
        braced[0] = b'{';
        assert!(!is_plaintext(&braced));
    }

    #[test]
    fn another_version_is_refused_with_a_reason() {
        let payee = identity(1);
        let mut state = builder().prologue(PROLOGUE).unwrap().build_initiator().unwrap();
        let mut first = vec![0u8; MAX_HANDSHAKE];
        let len = state.write_message(&(TRANSPORT_VERSION + 1).to_be_bytes(), &mut first).unwrap();
        let Answer::Refuse { error, reply: Some(reply) } = answer(&first[..len], &payee) else {
            panic!("took another version");
        };
        assert!(matches!(error, HandshakeError::UnsupportedVersion { .. }));
        let initiator = Initiator { state, expected: payee.node_id() };
        assert!(matches!(initiator.finish(&reply), Err(HandshakeError::Refused(_))));
    }
}
