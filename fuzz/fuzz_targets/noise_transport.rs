//! The encrypted transport: the Noise handshake (`paychan_node::net::handshake`) and the sealed
//! frames after it (`net::session`, through `net::frame`).
//!
//! The input, byte by byte (reads past the end give zeros); byte 0 `% 3` picks the mode:
//!
//! - 0, **answer**: the rest of the input is a payer's first handshake message, given to the
//!   payee's `answer` (the node's key is fixed: [`paychan_fuzz::NODE_SECRET`]). Nothing panics.
//!   A first message (Noise `NK`, `e, es`) is the initiator's ephemeral key (33 bytes, a
//!   compressed secp256k1 point) and its transport version (2 bytes) encrypted to the node's
//!   key (16 more bytes of tag): 51 bytes. Only a message written to the node's key opens, so
//!   arbitrary bytes are refused as malformed, with no reply, except a JSON object, which is
//!   the plaintext transport of earlier releases and is told so in JSON. A message that opens
//!   (the seeds have some, written with the node's key by `make_seeds`) has 51 bytes; version 1
//!   is welcomed, with a session, and the same bytes do not open at another node; another
//!   version is refused with a reply for the payer (a Noise message, which fits a frame).
//! - 1, **tamper**: a real handshake between `Initiator::start` and `answer` in which the
//!   input changes the messages on the way. Byte 1: bit 0 the answering node is another node
//!   than the one the payer names; bit 1 the payer's `finish` gets the input's own bytes
//!   instead of the answer. Then an edit list for the first message, then one for the answer
//!   (each: a count `% 4`, then that many edits: flip a bit, truncate, extend, set a byte,
//!   delete one, insert one; see [`edit`]). The node refuses a changed first message as
//!   malformed, with no reply; another node refuses the payer's first message, changed or not,
//!   likewise (it cannot read it: the payer then reports `NotProven`), and the answer that
//!   other node gives to a first message meant for itself, edited as the input says, is what
//!   the payer's `finish` gets (refused, as malformed when unchanged). `finish` takes the
//!   answer only if neither message changed and the node is the one named; then both ends hold
//!   the same handshake hash and open each other's frames.
//! - 2, **session**: a real handshake, then a script of operations on the session, each an
//!   opcode byte (`% 8`; bit 3 the direction: payer to payee or back; bits 4 to 7 a small
//!   parameter) and its operands:
//!   - 0 `len: u16 LE, bytes`: seal a message of `len` bytes (the input's next bytes, then the
//!     parameter repeated): queued to be delivered. Above `MAX_MESSAGE` it is refused and uses
//!     no nonce;
//!   - 1: deliver the next frame, unchanged, in order;
//!   - 2 `delta: i8`: deliver the frame `delta` (not 0) from the next: a replay or a reorder
//!     (the frames skipped are dropped);
//!   - 3 `edits`: deliver the next frame with the edits;
//!   - 4: deliver the next frame of this direction to the other direction's opener (a frame
//!     reflected back to its sender);
//!   - 5 `where: u16 LE, chunk: u8`: stream every queued frame of this direction through the
//!     frame layer (`push_frame`, then `decode_frame` on a buffer filled in chunks of 1 to 257
//!     bytes, their sizes drawn from `chunk`), with a bit of the stream's byte at
//!     `where % len` (bit `where >> 13`) flipped when the parameter is odd; each decoded payload
//!     delivered in turn, until one is refused;
//!   - 6: the payer's `authenticate` of the channel's payer key, bound to this session, sealed
//!     and queued (payer to payee only);
//!   - 7 `len: u8, bytes`: deliver the input's bytes as a frame.
//!
//!   Checked after every delivery, whatever the bytes: an opener opens exactly the next frame
//!   its peer sealed, unchanged, to exactly its plaintext; it refuses anything else
//!   (changed, truncated, extended, replayed, out of order, after a dropped one, reflected,
//!   made up) as `Forged`, and a refusal leaves it where it was (the next frame still opens;
//!   the daemon closes the connection on a refusal, so nothing relies on more). Every sealed
//!   frame fits a frame (`MAX_FRAME`), and the frame layer gives back the frames it was given.
//!   Every opened plaintext goes to `paychan::wire::Message::decode`; a message that decodes
//!   re-encodes to an equal one, and an `authenticate` verifies against the payee's handshake
//!   hash exactly when the real payer made it on this session.
//!
//! The nodes' static keys are fixed; the payer's ephemeral keys are fresh at each handshake
//! (from the system's random source), so the checks hold for any of them.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use paychan::bitcoin::secp256k1::{Secp256k1, SecretKey, VerifyOnly};
use paychan::wire::Message;
use paychan_fuzz::{signer, Input, CHANNEL_ID, NODE_SECRET, OTHER_NODE_SECRET};
use paychan_node::net::frame::{decode_frame, encode_frame, push_frame, FrameError, MAX_FRAME};
use paychan_node::net::handshake::{
    answer, Answer, HandshakeError, Initiator, NodeIdentity, TRANSPORT_VERSION,
};
use paychan_node::net::session::{Session, SessionError, MAX_MESSAGE, TAG};

/// What every input starts from, made once.
struct Fixture {
    /// The payee's node.
    node: NodeIdentity,
    /// Another node.
    other: NodeIdentity,
    secp: Secp256k1<VerifyOnly>,
    payer_signer: paychan::keys::ChannelSigner,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let key = |b: [u8; 32]| SecretKey::from_slice(&b).expect("a valid key");
        Fixture {
            node: NodeIdentity::new(&key(NODE_SECRET)),
            other: NodeIdentity::new(&key(OTHER_NODE_SECRET)),
            secp: Secp256k1::verification_only(),
            payer_signer: signer(1),
        }
    })
}

/// Whether `bytes` are a message of the plaintext transport of earlier releases: a JSON object.
/// (A Noise message starts with a random key, whose first byte is a `{` one time in 256.)
fn is_json_object(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes).is_ok()
}

/// The size of a first handshake message: the ephemeral key (a compressed secp256k1 point), the
/// version (2 bytes) and its tag.
const FIRST_LEN: usize = 33 + 2 + TAG;

/// How many bytes one input may seal in all, to keep each run short.
const SEAL_BUDGET: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let mut input = Input(data);
    match input.u8() % 3 {
        0 => answer_bytes(fixture, input.0),
        1 => tamper(fixture, &mut input),
        _ => session(fixture, &mut input),
    }
});

/// Mode 0: `first` as a payer's first handshake message.
fn answer_bytes(fixture: &Fixture, first: &[u8]) {
    let plaintext = is_json_object(first);
    match answer(first, &fixture.node) {
        Answer::Welcome { reply, session } => {
            assert_eq!(first.len(), FIRST_LEN, "welcomed {first:?}");
            assert!(!plaintext, "welcomed a plaintext message {first:?}");
            check_reply_frames(&reply);
            // The payee's half of a session: its sealer works (only the payer could open it).
            let mut session = session;
            let sealed = session.sealer.seal(b"x").expect("a small message seals");
            assert_eq!(sealed.len(), 1 + TAG);
            // Written to this node's key, the message does not open at another node.
            match answer(first, &fixture.other) {
                Answer::Refuse { error: HandshakeError::Malformed(_), reply: None } => {}
                Answer::Welcome { .. } => panic!("another node welcomed {first:?} too"),
                Answer::Refuse { error, .. } => panic!("another node refused {first:?}: {error}"),
            }
        }
        Answer::Refuse { error: HandshakeError::Plaintext, reply } => {
            assert!(plaintext, "{first:?} refused as plaintext");
            let reply = reply.expect("a plaintext payer is told why");
            let json: serde_json::Value =
                serde_json::from_slice(&reply).expect("the refusal is JSON");
            assert!(json["refused"]["reason"].is_string(), "{json}");
        }
        Answer::Refuse { error: HandshakeError::UnsupportedVersion { got, supported }, reply } => {
            assert!(!plaintext);
            assert_eq!(first.len(), FIRST_LEN, "{first:?} opened to version {got}");
            assert_eq!(supported, TRANSPORT_VERSION);
            assert_ne!(got, TRANSPORT_VERSION);
            let reply = reply.expect("another version is told which this one speaks");
            assert!(!is_json_object(&reply), "a Noise reply taken for plaintext");
            check_reply_frames(&reply);
        }
        Answer::Refuse { error: HandshakeError::Malformed(why), reply } => {
            assert!(!plaintext, "{first:?}: {why}");
            assert_eq!(reply, None, "{first:?}: {why}");
        }
        Answer::Refuse { error, .. } => panic!("{first:?} refused: {error}"),
    }
}

/// Checks that a handshake message goes through the frame layer unchanged.
fn check_reply_frames(msg: &[u8]) {
    let frame = encode_frame(msg).expect("a handshake message fits a frame");
    assert_eq!(decode_frame(&frame).expect("our own frame"), Some((msg, frame.len())));
}

/// Mode 1: a handshake whose messages the input changes.
fn tamper(fixture: &Fixture, input: &mut Input) {
    let flags = input.u8();
    let (impostor, made_up) = (flags & 1 != 0, flags & 2 != 0);
    let expected = fixture.node.node_id();
    let (initiator, first) = Initiator::start(expected);
    assert_eq!(first.len(), FIRST_LEN);
    assert!(matches!(first[0], 2 | 3), "the ephemeral key is a compressed point: {first:?}");
    assert!(!is_json_object(&first));
    check_reply_frames(&first);
    let mut sent = first.clone();
    edit(input, &mut sent);
    let first_changed = sent != first;
    let (reply, payee) = if impostor {
        // Another node cannot read a first message meant for ours, changed or not.
        match answer(&sent, &fixture.other) {
            Answer::Refuse { error: HandshakeError::Malformed(_), reply: None } => {}
            Answer::Welcome { .. } => panic!("node {} read {sent:?}", fixture.other.node_id()),
            Answer::Refuse { error, .. } => panic!("another node refused {sent:?}: {error}"),
        }
        let HandshakeError::NotProven { node_id } = initiator.not_proven() else {
            panic!("not_proven gave another error");
        };
        assert_eq!(node_id, expected.to_string());
        // What it could answer instead: its answer to a first message meant for itself.
        let (_, its_first) = Initiator::start(fixture.other.node_id());
        let Answer::Welcome { reply, .. } = answer(&its_first, &fixture.other) else {
            panic!("another node refused a first message meant for itself");
        };
        (reply, None)
    } else {
        match answer(&sent, &fixture.node) {
            Answer::Welcome { reply, session } => {
                assert!(!first_changed, "welcomed a changed first message {sent:?}");
                (reply, Some(session))
            }
            Answer::Refuse { error: HandshakeError::Malformed(why), reply: None } => {
                assert!(first_changed, "the real first message refused: {why}");
                return;
            }
            Answer::Refuse { error, reply } => {
                panic!("{sent:?} (changed: {first_changed}) refused: {error}, reply {reply:?}")
            }
        }
    };
    check_reply_frames(&reply);
    assert!(matches!(reply[0], 2 | 3), "the payee's ephemeral key is a compressed point");
    let mut got = if made_up { input.0.to_vec() } else { reply.clone() };
    edit(input, &mut got);
    let unchanged = !first_changed && got == reply;
    match initiator.finish(&got) {
        Ok(payer) => {
            assert!(unchanged, "the payer took a changed handshake ({first_changed}, {got:?})");
            assert!(!impostor, "the payer took node {} for {expected}", fixture.other.node_id());
            let mut payee = payee.expect("a welcome");
            let mut payer = payer;
            assert_eq!(payer.hash(), payee.hash(), "both ends hold the same handshake hash");
            let sealed = payer.sealer.seal(b"pay").expect("seals");
            assert_eq!(payee.opener.open(&sealed).expect("opens"), b"pay");
            let sealed = payee.sealer.seal(b"ack").expect("seals");
            assert_eq!(payer.opener.open(&sealed).expect("opens"), b"ack");
        }
        Err(e) if unchanged && impostor => {
            assert!(matches!(e, HandshakeError::Malformed(_)), "{e}")
        }
        Err(e) => assert!(!unchanged, "the real answer refused: {e}"),
    }
}

/// Changes `bytes` by a list of edits read from the input: a count `% 4`, then that many edits,
/// each a kind byte `% 6` and its operands (positions taken modulo the length): 0 `pos: u16,
/// bit: u8` flip a bit; 1 `len: u16` truncate; 2 `n: u16, fill: u8` extend by `n % 4096 + 1`
/// bytes; 3 `pos: u16, value: u8` set a byte; 4 `pos: u16` delete a byte; 5 `pos: u16,
/// value: u8` insert a byte. The edits may leave the bytes as they were.
fn edit(input: &mut Input, bytes: &mut Vec<u8>) {
    for _ in 0..input.u8() % 4 {
        let kind = input.u8() % 6;
        let pos = usize::from(input.u16());
        let at = |len: usize| pos.checked_rem(len);
        match kind {
            0 => {
                let bit = input.u8() % 8;
                if let Some(i) = at(bytes.len()) {
                    bytes[i] ^= 1 << bit;
                }
            }
            1 => bytes.truncate(pos % (bytes.len() + 1)),
            2 => {
                let fill = input.u8();
                bytes.resize(bytes.len() + pos % 4096 + 1, fill);
            }
            3 => {
                let value = input.u8();
                if let Some(i) = at(bytes.len()) {
                    bytes[i] = value;
                }
            }
            4 => {
                if let Some(i) = at(bytes.len()) {
                    bytes.remove(i);
                }
            }
            _ => {
                let value = input.u8();
                bytes.insert(pos % (bytes.len() + 1), value);
            }
        }
    }
}

/// One direction of a session: what its sender sealed, and how far its receiver opened.
#[derive(Default)]
struct Direction {
    /// Each frame sealed: its plaintext, the sealed bytes, and whether it is the real payer's
    /// `authenticate` on this session.
    sealed: Vec<(Vec<u8>, Vec<u8>, bool)>,
    /// The next frame the receiver must open.
    next: usize,
}

/// Mode 2: a script of operations on an established session.
fn session(fixture: &Fixture, input: &mut Input) {
    let (initiator, first) = Initiator::start(fixture.node.node_id());
    let Answer::Welcome { reply, session: payee } = answer(&first, &fixture.node) else {
        panic!("the real first message {first:?} refused");
    };
    let payer = match initiator.finish(&reply) {
        Ok(payer) => payer,
        Err(e) => panic!("the real answer {reply:?} refused: {e}"),
    };
    assert_eq!(payer.hash(), payee.hash());
    let mut run = Run {
        fixture,
        sessions: [payer, payee],
        dirs: [Direction::default(), Direction::default()],
        budget: SEAL_BUDGET,
    };
    while !input.0.is_empty() {
        run.step(input);
    }
}

/// An established session, both ends: `sessions[0]` the payer's, `sessions[1]` the payee's;
/// `dirs[0]` payer to payee, `dirs[1]` back.
struct Run<'a> {
    fixture: &'a Fixture,
    sessions: [Session; 2],
    dirs: [Direction; 2],
    /// Bytes left to seal.
    budget: usize,
}

impl Run<'_> {
    fn step(&mut self, input: &mut Input) {
        let op = input.u8();
        let (d, param) = (usize::from(op >> 3 & 1), op >> 4);
        match op % 8 {
            0 => {
                let len = usize::from(input.u16());
                let len = if len > self.budget { len % 256 } else { len };
                let mut plain = input.bytes(len).to_vec();
                plain.resize(len, param);
                self.seal(d, plain, false);
            }
            1 => {
                if let Some((_, sealed, _)) = self.dirs[d].sealed.get(self.dirs[d].next) {
                    let sealed = sealed.clone();
                    assert!(self.deliver(d, &sealed), "the next frame, unchanged, refused");
                }
            }
            2 => {
                let delta = match input.u8() as i8 {
                    0 => 1,
                    delta => isize::from(delta),
                };
                let i = self.dirs[d].next.checked_add_signed(delta);
                if let Some((_, sealed, _)) = i.and_then(|i| self.dirs[d].sealed.get(i)) {
                    let sealed = sealed.clone();
                    assert!(!self.deliver(d, &sealed), "frame {i:?} opened out of order");
                }
            }
            3 => {
                if let Some((_, sealed, _)) = self.dirs[d].sealed.get(self.dirs[d].next) {
                    let mut bytes = sealed.clone();
                    edit(input, &mut bytes);
                    self.deliver(d, &bytes);
                }
            }
            4 => {
                if let Some((_, sealed, _)) = self.dirs[d].sealed.get(self.dirs[d].next) {
                    let sealed = sealed.clone();
                    assert!(!self.deliver(1 - d, &sealed), "a reflected frame opened");
                }
            }
            5 => self.stream(d, param & 1 != 0, input),
            6 => {
                let session = self.sessions[0].hash();
                let auth = self.fixture.payer_signer.public_key();
                let msg = Message::Authenticate(paychan::auth::authenticate(
                    &self.fixture.payer_signer,
                    &session,
                    CHANNEL_ID,
                ));
                let Message::Authenticate(a) = &msg else { unreachable!() };
                assert_eq!(a.payer_key, auth);
                self.seal(0, msg.encode(), true);
            }
            _ => {
                let len = usize::from(input.u8());
                let bytes = input.bytes(len).to_vec();
                self.deliver(d, &bytes);
            }
        }
    }

    /// Seals `plain` in direction `d`, and queues it.
    fn seal(&mut self, d: usize, plain: Vec<u8>, genuine_auth: bool) {
        match self.sessions[d].sealer.seal(&plain) {
            Ok(sealed) => {
                assert!(plain.len() <= MAX_MESSAGE, "sealed {} bytes", plain.len());
                assert_eq!(sealed.len(), plain.len() + TAG);
                assert!(sealed.len() <= MAX_FRAME, "a sealed message beyond a frame");
                self.budget = self.budget.saturating_sub(plain.len());
                self.dirs[d].sealed.push((plain, sealed, genuine_auth));
            }
            Err(SessionError::TooLarge { len, max }) => {
                assert_eq!((len, max), (plain.len(), MAX_MESSAGE));
                assert!(len > MAX_MESSAGE, "{len} bytes refused");
            }
            Err(e) => panic!("sealing {} bytes: {e}", plain.len()),
        }
    }

    /// Gives `bytes` to the opener of direction `d`; returns whether it opened. It opens
    /// exactly the next frame sealed, unchanged, to its plaintext.
    fn deliver(&mut self, d: usize, bytes: &[u8]) -> bool {
        let receiver = 1 - d;
        let dir = &mut self.dirs[d];
        let expected = dir.sealed.get(dir.next);
        match self.sessions[receiver].opener.open(bytes) {
            Ok(plain) => {
                let (want, sealed, genuine_auth) =
                    expected.expect("a frame opened before its peer sealed it");
                assert_eq!(bytes, &sealed[..], "a frame other than the next one opened");
                assert_eq!(&plain, want, "a frame opened to another plaintext");
                let genuine_auth = *genuine_auth;
                dir.next += 1;
                self.decode(d, &plain, genuine_auth);
                true
            }
            Err(SessionError::Forged) => {
                if let Some((_, sealed, _)) = expected {
                    assert_ne!(bytes, &sealed[..], "the next frame, unchanged, refused");
                }
                false
            }
            Err(e) => panic!("opening {} bytes: {e}", bytes.len()),
        }
    }

    /// Decodes an opened plaintext as a message: a message that decodes re-encodes to an equal
    /// one, and an `authenticate` to the payee verifies exactly when the real payer made it.
    fn decode(&self, d: usize, plain: &[u8], genuine_auth: bool) {
        let Ok(msg) = Message::decode(plain) else {
            assert!(!genuine_auth, "our own authenticate does not decode");
            return;
        };
        let again = Message::decode(&msg.encode()).expect("a decoded message re-encodes");
        assert_eq!(again, msg);
        if let (Message::Authenticate(auth), 0) = (&msg, d) {
            let session = self.sessions[1].hash();
            let verified = paychan::auth::verify(&self.fixture.secp, auth, &session).is_ok();
            assert_eq!(verified, genuine_auth, "{auth:?} on this session");
        } else {
            assert!(!genuine_auth, "our own authenticate decoded as {msg:?}");
        }
    }

    /// Streams every queued frame of direction `d` through the frame layer, a bit of the byte
    /// at a position from the input flipped if `corrupt`, in chunks of sizes from the input, and
    /// delivers each decoded payload until one is refused.
    fn stream(&mut self, d: usize, corrupt: bool, input: &mut Input) {
        let dir = &self.dirs[d];
        let frames: Vec<Vec<u8>> = dir.sealed[dir.next..].iter().map(|s| s.1.clone()).collect();
        let mut bytes = Vec::new();
        for frame in &frames {
            push_frame(&mut bytes, frame).expect("a sealed frame fits a frame");
        }
        let at = usize::from(input.u16());
        if corrupt && !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] ^= 1 << (at >> 13);
        }
        // The k-th chunk has `(seed * (k + 1)) % 257 + 1` bytes: 1 to 257, the seed 0 giving
        // one byte at a time.
        let seed = usize::from(input.u8());
        let mut buf = Vec::new();
        let mut rest = &bytes[..];
        let mut decoded = 0;
        for k in 1.. {
            if rest.is_empty() {
                break;
            }
            let n = seed * k % 257 + 1;
            let (chunk, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            buf.extend_from_slice(chunk);
            loop {
                match decode_frame(&buf) {
                    Ok(None) => break,
                    Err(FrameError::TooLarge { len, max }) => {
                        assert!(corrupt, "our own stream announced {len} bytes");
                        assert!(len > max);
                        return;
                    }
                    Err(e) => panic!("decode_frame does no I/O, yet: {e}"),
                    Ok(Some((payload, used))) => {
                        let payload = payload.to_vec();
                        if !corrupt {
                            assert_eq!(payload, frames[decoded], "frame {decoded} of the stream");
                        }
                        decoded += 1;
                        buf.drain(..used);
                        if !self.deliver(d, &payload) {
                            assert!(corrupt, "an unchanged stream's frame refused");
                            // The connection ends.
                            return;
                        }
                    }
                }
            }
        }
        if !corrupt {
            assert_eq!(decoded, frames.len(), "the stream's frames");
            assert!(buf.is_empty(), "{} bytes left over", buf.len());
        }
    }
}
