//! The handshake: Noise `NK` with secp256k1, ChaCha20-Poly1305 and SHA-256 (by the `snow`
//! crate, with libsecp256k1's ECDH: [`super::secp_dh`]), two messages, before any channel
//! message. It does no I/O: the caller moves the bytes.
//!
//! ```text
//! <- s                      the payee's node key, which the payer knows (NODE_ID@HOST:PORT)
//! payer -> e, es            payload (encrypted): TRANSPORT_VERSION, 2 bytes
//! payee <- e, ee            payload (encrypted): HelloReply
//! ```
//!
//! The payee's static key is its node key (the secp256k1 key `paychan init` prints), as in
//! Lightning's BOLT 8. Only its holder can read the first message (`es`) and write a second
//! that the payer can open, so the session's keys are shared with that node and nobody else,
//! and every frame after it is encrypted and authenticated ([`crate::net::session`]). A node
//! with another key cannot read the first message and closes; the payer reports that the node
//! did not prove its key.
//!
//! The payer has no static key: it proves each channel's payer key separately, by signing this
//! session's handshake hash ([`paychan::auth`]).

use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::PublicKey;
use serde::{Deserialize, Serialize};
use snow::{HandshakeState, StatelessTransportState};

use super::secp_dh::{Secp256k1Resolver, DH_NAME};
use super::session::Session;

/// The Noise protocol's name, hashed into every session.
pub const NOISE_PROTOCOL: &str = "Noise_NK_secp256k1_ChaChaPoly_SHA256";

/// The version of this transport, sent in the first message. The plaintext transport of
/// earlier releases had none; its first frame is a JSON object.
pub const TRANSPORT_VERSION: u16 = 1;

/// Bound into the handshake hash: a session of another protocol cannot pass for one of ours.
const PROLOGUE: &[u8] = b"paychan transport";

/// The largest handshake message: the second, with its encrypted [`HelloReply`].
const MAX_HANDSHAKE: usize = 1024;

/// Payee -> payer: the encrypted payload of the second handshake message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HelloReply {
    /// The payee takes the session; channel messages may follow.
    Welcome {
        /// The transport version the payee speaks.
        transport_version: u16,
    },
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
    /// The peer closed the connection without answering the first message: it could not read
    /// it, so it does not hold the node key asked for.
    #[error("the peer did not prove node key {node_id} (it closed the handshake): is NODE_ID the one its `paychan init` printed?")]
    NotProven {
        /// The node key asked for, in hex.
        node_id: String,
    },
}

fn malformed(e: impl std::fmt::Display) -> HandshakeError {
    HandshakeError::Malformed(e.to_string())
}

fn builder() -> snow::Builder<'static> {
    // `snow` names its curves by an enum without secp256k1: the pattern is parsed with one of
    // them and renamed, and the resolver gives secp256k1 for any. The name, which every
    // session's hash starts from, is the true one.
    let mut params: snow::params::NoiseParams =
        "Noise_NK_25519_ChaChaPoly_SHA256".parse().expect("a valid Noise pattern");
    params.name = NOISE_PROTOCOL.to_owned();
    debug_assert!(params.name.contains(DH_NAME));
    snow::Builder::with_resolver(params, Box::new(Secp256k1Resolver))
}

/// The payee's side of every handshake: its node key, which is its Noise static key.
#[derive(Clone)]
pub struct NodeIdentity {
    node_id: PublicKey,
    secret: [u8; 32],
}

impl NodeIdentity {
    /// The identity of the node whose key is `node_secret`.
    pub fn new(node_secret: &SecretKey) -> NodeIdentity {
        let node_id = PublicKey::new(node_secret.public_key(&Secp256k1::signing_only()));
        NodeIdentity { node_id, secret: node_secret.secret_bytes() }
    }

    /// Returns the node key.
    pub fn node_id(&self) -> PublicKey {
        self.node_id
    }
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
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
    /// first message to send, which only that node can read.
    pub fn start(expected: PublicKey) -> (Initiator, Vec<u8>) {
        Initiator::start_speaking(expected, TRANSPORT_VERSION)
    }

    /// As [`Initiator::start`], claiming transport version `version`: for tests of the
    /// payee's refusal of other versions (the version travels encrypted).
    pub fn start_speaking(expected: PublicKey, version: u16) -> (Initiator, Vec<u8>) {
        let remote = expected.inner.serialize();
        let mut state = builder()
            .prologue(PROLOGUE)
            .and_then(|b| b.remote_public_key(&remote))
            .and_then(snow::Builder::build_initiator)
            .expect("an initiator builds from a valid pattern and key");
        let mut first = vec![0u8; MAX_HANDSHAKE];
        let len = state
            .write_message(&version.to_be_bytes(), &mut first)
            .expect("the first message fits");
        first.truncate(len);
        (Initiator { state, expected }, first)
    }

    /// The error for a payee that closed without answering: it could not read the first
    /// message.
    pub fn not_proven(&self) -> HandshakeError {
        HandshakeError::NotProven { node_id: self.expected.to_string() }
    }

    /// Takes the payee's answer: returns the session. Only the expected node could have
    /// written an answer that opens.
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
        match reply {
            HelloReply::Welcome { transport_version: TRANSPORT_VERSION } => {
                into_session(self.state)
            }
            HelloReply::Welcome { transport_version } => Err(HandshakeError::UnsupportedVersion {
                got: transport_version,
                supported: TRANSPORT_VERSION,
            }),
            HelloReply::Refused { reason } => Err(HandshakeError::Refused(reason)),
        }
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

/// The payee's side: answers the payer's first message `first`. One it cannot read (garbage,
/// or meant for another node) gets no answer.
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
        .local_private_key(&identity.secret)
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
        (HelloReply::Welcome { transport_version: TRANSPORT_VERSION }, None)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(byte: u8) -> NodeIdentity {
        NodeIdentity::new(&SecretKey::from_slice(&[byte; 32]).unwrap())
    }

    fn handshake(payee: &NodeIdentity, expected: PublicKey) -> Result<(Session, Session), String> {
        let (initiator, first) = Initiator::start(expected);
        match answer(&first, payee) {
            Answer::Welcome { reply, session } => {
                let ours = initiator.finish(&reply).map_err(|e| e.to_string())?;
                Ok((ours, session))
            }
            Answer::Refuse { error, reply: None } => {
                Err(format!("{} / {error}", initiator.not_proven()))
            }
            Answer::Refuse { error, .. } => Err(error.to_string()),
        }
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
    fn another_node_cannot_read_the_first_message() {
        let (payee, other) = (identity(1), identity(2));
        let err = handshake(&payee, other.node_id()).unwrap_err();
        assert!(err.contains("did not prove node key"), "{err}");
    }

    #[test]
    fn an_answer_from_another_node_does_not_open() {
        // An impostor that saw the first message answers with its own keys.
        let (payee, impostor) = (identity(1), identity(3));
        let (initiator, first) = Initiator::start(payee.node_id());
        let (_, first_for_impostor) = Initiator::start(impostor.node_id());
        let Answer::Welcome { reply, .. } = answer(&first_for_impostor, &impostor) else {
            panic!()
        };
        assert!(matches!(answer(&first, &impostor), Answer::Refuse { reply: None, .. }));
        assert!(matches!(initiator.finish(&reply), Err(HandshakeError::Malformed(_))));
    }

    #[test]
    fn a_tampered_answer_and_garbage_are_refused() {
        let payee = identity(1);
        let (initiator, first) = Initiator::start(payee.node_id());
        let Answer::Welcome { mut reply, .. } = answer(&first, &payee) else { panic!() };
        let last = reply.len() - 1;
        reply[last] ^= 1;
        assert!(matches!(initiator.finish(&reply), Err(HandshakeError::Malformed(_))));
        let mut flipped = first.clone();
        flipped[40] ^= 1;
        assert!(matches!(answer(&flipped, &payee), Answer::Refuse { reply: None, .. }));
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
        let (initiator, first) = Initiator::start_speaking(payee.node_id(), TRANSPORT_VERSION + 1);
        let Answer::Refuse { error, reply: Some(reply) } = answer(&first, &payee) else {
            panic!("took another version");
        };
        assert!(matches!(error, HandshakeError::UnsupportedVersion { .. }));
        assert!(matches!(initiator.finish(&reply), Err(HandshakeError::Refused(_))));
    }

    #[test]
    fn nothing_in_the_first_message_is_in_the_clear_but_a_point() {
        let payee = identity(1);
        let (_, first) = Initiator::start(payee.node_id());
        // e (33 bytes), then the version, sealed (2 + 16).
        assert_eq!(first.len(), 33 + 2 + 16);
        assert!(matches!(first[0], 2 | 3), "a compressed point");
    }
}
