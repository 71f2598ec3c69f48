//! The transport: wire messages over TCP, encrypted and authenticated by Noise, in
//! length-prefixed frames.
//!
//! - [`frame`]: the framing, with its size limit and timeouts;
//! - [`handshake`]: the Noise handshake, in which the payee proves its node key;
//! - [`session`]: the sealing and opening of every frame after it;
//! - [`Connection`]: a TCP connection past the handshake, sending and receiving
//!   [`Message`]s.

pub mod frame;
pub mod handshake;
mod secp_dh;
pub mod session;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bitcoin::PublicKey;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub use frame::{FrameError, MAX_FRAME};
pub use handshake::{HandshakeError, NodeIdentity};
use paychan::wire::{Message, WireError};
use session::{Opener, Sealer};
pub use session::{SessionError, MAX_MESSAGE};

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Connecting failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The handshake did not finish in time.
    #[error("handshake timed out after {secs} s")]
    HandshakeTimeout {
        /// The timeout.
        secs: f64,
    },
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Framing failed (size, truncation, timeouts, I/O).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame failed its authentication, or a message is too large to seal.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A frame is not a message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// The peer closed the connection, saying why (an `error` about the connection).
    #[error("the peer closed the connection: {0}")]
    ClosedBecause(String),
}

/// A payee's address: `PUBKEY@HOST:PORT`, its node key and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// The node key the payee must prove.
    pub node_id: PublicKey,
    /// `HOST:PORT`.
    pub addr: String,
}

/// Errors from parsing a [`PeerAddr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed peer {input:?}: {reason} (expected NODE_ID@HOST:PORT, NODE_ID being the 66 hex digits the payee's `paychan init` prints)")]
pub struct PeerAddrError {
    input: String,
    reason: &'static str,
}

impl FromStr for PeerAddr {
    type Err = PeerAddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PeerAddrError { input: s.to_owned(), reason };
        let (key, addr) = s.split_once('@').ok_or_else(|| err("no '@'"))?;
        let node_id = PublicKey::from_str(key).map_err(|_| err("not a public key"))?;
        if !node_id.compressed {
            return Err(err("not a compressed public key"));
        }
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| err("no ':PORT'"))?;
        if host.is_empty() {
            return Err(err("no host"));
        }
        port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| err("bad port"))?;
        Ok(PeerAddr { node_id, addr: addr.to_owned() })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node_id, self.addr)
    }
}

/// How long a connection may take at each point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To connect and finish the handshake.
    pub handshake: Duration,
    /// Between messages.
    pub idle: Duration,
    /// For a message, once its first byte arrived.
    pub frame: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(300),
            frame: Duration::from_secs(10),
        }
    }
}

/// A TCP connection past the handshake.
pub struct Connection {
    /// Receives messages.
    pub reader: MessageReader,
    /// Sends messages.
    pub writer: MessageWriter,
    session_hash: [u8; 32],
}

/// The receiving half of a [`Connection`].
pub struct MessageReader {
    // Buffered: a message is three reads (prefix byte, rest of prefix, payload), and a peer that
    // pipelines sends many at once.
    read: BufReader<OwnedReadHalf>,
    opener: Opener,
    timeouts: Timeouts,
}

/// The sending half of a [`Connection`].
pub struct MessageWriter {
    write: OwnedWriteHalf,
    sealer: Sealer,
    /// How long a write may wait for the peer to take it.
    within: Duration,
}

impl Connection {
    /// Connects to the payee `peer` and runs the handshake, which proves that the session's
    /// keys are shared with the node `peer` names, all within the handshake timeout.
    ///
    /// # Errors
    /// [`NetError::Connect`], [`NetError::HandshakeTimeout`], [`NetError::Handshake`]
    /// ([`HandshakeError::NotProven`] if the peer closes without answering), [`NetError::Frame`].
    pub async fn connect(peer: &PeerAddr, timeouts: Timeouts) -> Result<Connection, NetError> {
        let limit = timeouts.handshake;
        let work = async {
            let stream = TcpStream::connect(&peer.addr)
                .await
                .map_err(|source| NetError::Connect { addr: peer.addr.clone(), source })?;
            let (read, mut write) = split(stream);
            let (initiator, first) = handshake::Initiator::start(peer.node_id);
            frame::write_frames(&mut write, &frame::encode_frame(&first)?, limit).await?;
            let mut read = read;
            let reply = match frame::read_frame(&mut read, limit, limit).await {
                Ok(Some(reply)) => reply,
                // Closed without a word: it could not read our first message, meant for the
                // node key asked for.
                Ok(None) | Err(FrameError::Truncated) => return Err(initiator.not_proven().into()),
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(initiator.not_proven().into())
                }
                Err(e) => return Err(e.into()),
            };
            let session = initiator.finish(&reply)?;
            Ok(Connection::new(read, write, session, timeouts))
        };
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| NetError::HandshakeTimeout { secs: limit.as_secs_f64() })?
    }

    /// Takes an incoming connection: answers the payer's first handshake message as `identity`.
    /// A connection that fails the handshake is told why where it can be (another transport
    /// version, the plaintext transport of earlier releases), best effort, before it is dropped.
    ///
    /// The first message must arrive, and the answer leave, within the handshake timeout.
    ///
    /// # Errors
    /// [`NetError::HandshakeTimeout`], [`NetError::Handshake`], [`NetError::Frame`],
    /// [`NetError::Closed`].
    pub async fn accept(
        stream: TcpStream,
        identity: &NodeIdentity,
        timeouts: Timeouts,
    ) -> Result<Connection, NetError> {
        let (mut read, mut write) = split(stream);
        let limit = timeouts.handshake;
        let timed_out = || NetError::HandshakeTimeout { secs: limit.as_secs_f64() };
        // One deadline for the whole handshake, however the peer spreads its bytes.
        let deadline = tokio::time::Instant::now() + limit;
        let first = frame::read_frame(&mut read, limit, limit);
        let (error, reply) = match tokio::time::timeout_at(deadline, first).await {
            Ok(Ok(Some(first))) => match handshake::answer(&first, identity) {
                handshake::Answer::Welcome { reply, session } => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let bytes = frame::encode_frame(&reply)?;
                    frame::write_frames(&mut write, &bytes, left).await.map_err(|e| match e {
                        FrameError::WriteStalled { .. } => timed_out(),
                        e => e.into(),
                    })?;
                    return Ok(Connection::new(read, write, session, timeouts));
                }
                handshake::Answer::Refuse { error, reply } => (error.into(), reply),
            },
            Ok(Ok(None)) => return Err(NetError::Closed),
            Err(_) | Ok(Err(FrameError::Idle { .. } | FrameError::Stalled { .. })) => {
                (timed_out(), None)
            }
            Ok(Err(e)) => (e.into(), None),
        };
        if let Some(reply) = reply {
            // Best effort, and briefly: the peer may not be reading.
            if let Ok(bytes) = frame::encode_frame(&reply) {
                let _ = frame::write_frames(&mut write, &bytes, timeouts.frame).await;
            }
        }
        Err(error)
    }

    fn new(
        read: OwnedReadHalf,
        write: OwnedWriteHalf,
        session: session::Session,
        timeouts: Timeouts,
    ) -> Connection {
        let session_hash = session.hash();
        let read = BufReader::with_capacity(frame::MAX_FRAME + 4, read);
        Connection {
            reader: MessageReader { read, opener: session.opener, timeouts },
            writer: MessageWriter { write, sealer: session.sealer, within: timeouts.frame },
            session_hash,
        }
    }

    /// Returns the session's handshake hash, which the payer signs to prove a channel's payer
    /// key on this connection ([`paychan::auth`]).
    pub fn session_hash(&self) -> [u8; 32] {
        self.session_hash
    }

    /// Sends `msg`.
    ///
    /// # Errors
    /// [`NetError::Frame`], [`NetError::Session`].
    pub async fn send(&mut self, msg: &Message) -> Result<(), NetError> {
        self.writer.send(msg).await
    }

    /// Receives the next message, waiting at most `wait` for it to start.
    ///
    /// # Errors
    /// [`NetError::Closed`], [`NetError::Frame`], [`NetError::Session`], [`NetError::Wire`].
    pub async fn recv(&mut self, wait: Duration) -> Result<Message, NetError> {
        self.reader.recv(wait).await
    }

    /// See [`MessageWriter::send_all`].
    ///
    /// # Errors
    /// As [`MessageWriter::send_all`].
    pub async fn send_all(&mut self, msgs: &[Message]) -> Result<(), NetError> {
        self.writer.send_all(msgs).await
    }
}

fn split(stream: TcpStream) -> (OwnedReadHalf, OwnedWriteHalf) {
    // Messages are small and each waits for an answer: send them at once.
    let _ = stream.set_nodelay(true);
    stream.into_split()
}

impl MessageReader {
    /// Receives the next message, waiting at most `wait` for it to start.
    ///
    /// # Errors
    /// [`NetError::Closed`], [`NetError::Frame`], [`NetError::Session`], [`NetError::Wire`].
    pub async fn recv(&mut self, wait: Duration) -> Result<Message, NetError> {
        let frame = frame::read_frame(&mut self.read, wait, self.timeouts.frame).await?;
        let sealed = frame.ok_or(NetError::Closed)?;
        Ok(Message::decode(&self.opener.open(&sealed)?)?)
    }

    /// Receives the next message, waiting at most the idle timeout for it to start.
    ///
    /// # Errors
    /// As [`MessageReader::recv`].
    pub async fn recv_idle(&mut self) -> Result<Message, NetError> {
        self.recv(self.timeouts.idle).await
    }

    /// Returns the next message if it has already arrived whole (it is in the buffer), without
    /// waiting: to take a burst of pipelined messages together. `None` if it has not.
    ///
    /// # Errors
    /// As [`MessageReader::recv`].
    pub fn try_recv_buffered(&mut self) -> Option<Result<Message, NetError>> {
        let (msg, used) = match frame::decode_frame(self.read.buffer()) {
            Ok(None) => return None,
            Ok(Some((sealed, used))) => {
                let msg = self.opener.open(sealed).map_err(NetError::from);
                (msg.and_then(|plain| Ok(Message::decode(&plain)?)), used)
            }
            Err(e) => return Some(Err(e.into())),
        };
        self.read.consume(used);
        Some(msg)
    }
}

impl MessageWriter {
    /// Sends `msg`.
    ///
    /// # Errors
    /// [`NetError::Frame`], [`NetError::Session`].
    pub async fn send(&mut self, msg: &Message) -> Result<(), NetError> {
        self.send_all(std::slice::from_ref(msg)).await
    }

    /// Sends `msgs` in one write.
    ///
    /// # Errors
    /// [`NetError::Session`] if one is too large, [`NetError::Frame`] if the write fails or
    /// the peer takes nothing within the frame timeout.
    pub async fn send_all(&mut self, msgs: &[Message]) -> Result<(), NetError> {
        let encoded: Vec<Vec<u8>> = msgs.iter().map(Message::encode).collect();
        self.send_encoded(&encoded).await
    }

    /// Sends messages already encoded ([`Message::encode`]), sealed, in one write.
    ///
    /// # Errors
    /// As [`MessageWriter::send_all`].
    pub async fn send_encoded(&mut self, msgs: &[Vec<u8>]) -> Result<(), NetError> {
        let mut bytes = Vec::with_capacity(msgs.iter().map(|m| m.len() + 20).sum());
        let mut sealed = Vec::new();
        for msg in msgs {
            sealed.clear();
            self.sealer.seal_into(msg, &mut sealed)?;
            frame::push_frame(&mut bytes, &sealed)?;
        }
        Ok(frame::write_frames(&mut self.write, &bytes, self.within).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_print_back() {
        let key = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        for input in [format!("{key}@127.0.0.1:9735"), format!("{key}@[::1]:9735")] {
            let peer: PeerAddr = input.parse().unwrap();
            assert_eq!(peer.to_string(), input);
        }
        for bad in [
            "127.0.0.1:9735".to_owned(),
            format!("{key}@127.0.0.1"),
            format!("{key}@:9735"),
            format!("{key}@host:0"),
            format!("{key}@host:99999"),
            format!("02{}@host:1", &key[2..10]),
        ] {
            let err = bad.parse::<PeerAddr>().unwrap_err();
            assert!(err.to_string().contains("NODE_ID@HOST:PORT"), "{bad}: {err}");
        }
    }
}
