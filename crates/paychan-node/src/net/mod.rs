//! The transport: wire messages over TCP, in length-prefixed frames, after a handshake in which
//! the payee proves its node key.
//!
//! - [`frame`]: the framing, with its size limit and timeouts;
//! - [`handshake`]: the first frame each way;
//! - [`Connection`]: a TCP connection past the handshake, sending and receiving
//!   [`Message`]s.

pub mod frame;
pub mod handshake;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bitcoin::secp256k1::SecretKey;
use bitcoin::PublicKey;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub use frame::{FrameError, MAX_FRAME};
pub use handshake::HandshakeError;
use paychan::wire::{Message, WireError};

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
    /// A frame is not a message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
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
}

/// The receiving half of a [`Connection`].
pub struct MessageReader {
    // Buffered: a message is three reads (prefix byte, rest of prefix, payload), and a peer that
    // pipelines sends many at once.
    read: BufReader<OwnedReadHalf>,
    timeouts: Timeouts,
}

/// The sending half of a [`Connection`].
pub struct MessageWriter {
    write: OwnedWriteHalf,
}

impl Connection {
    /// Connects to the payee `peer` and checks that it proves its node key, all within the
    /// handshake timeout.
    ///
    /// # Errors
    /// [`NetError::Connect`], [`NetError::HandshakeTimeout`], [`NetError::Handshake`],
    /// [`NetError::Frame`], [`NetError::Closed`].
    pub async fn connect(peer: &PeerAddr, timeouts: Timeouts) -> Result<Connection, NetError> {
        let work = async {
            let stream = TcpStream::connect(&peer.addr)
                .await
                .map_err(|source| NetError::Connect { addr: peer.addr.clone(), source })?;
            let mut conn = Connection::new(stream, timeouts);
            let (hello, nonce) = handshake::hello();
            conn.writer.send_json(&hello).await?;
            let reply =
                conn.reader.recv_frame(timeouts.handshake).await?.ok_or(NetError::Closed)?;
            handshake::check_reply(&reply, &nonce, &peer.node_id)?;
            Ok(conn)
        };
        tokio::time::timeout(timeouts.handshake, work)
            .await
            .map_err(|_| NetError::HandshakeTimeout { secs: timeouts.handshake.as_secs_f64() })?
    }

    /// Takes an incoming connection: answers the payer's hello with proof of `node_secret`. A
    /// connection that fails the handshake is told why (a `refused` answer, best effort) before
    /// it is dropped.
    ///
    /// The hello must arrive, and the answer leave, within the handshake timeout.
    ///
    /// # Errors
    /// [`NetError::HandshakeTimeout`], [`NetError::Handshake`], [`NetError::Frame`],
    /// [`NetError::Closed`].
    pub async fn accept(
        stream: TcpStream,
        node_secret: &SecretKey,
        timeouts: Timeouts,
    ) -> Result<Connection, NetError> {
        let mut conn = Connection::new(stream, timeouts);
        let limit = timeouts.handshake;
        let timed_out = || NetError::HandshakeTimeout { secs: limit.as_secs_f64() };
        // One deadline for the whole handshake, however the peer spreads its bytes.
        let deadline = tokio::time::Instant::now() + limit;
        let read = frame::read_frame(&mut conn.reader.read, limit, limit);
        let (error, reply) = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(Some(hello))) => match handshake::answer(&hello, node_secret) {
                handshake::Answer::Welcome(reply) => {
                    let sent = conn.writer.send_json(&reply);
                    tokio::time::timeout_at(deadline, sent).await.map_err(|_| timed_out())??;
                    return Ok(conn);
                }
                handshake::Answer::Refuse { error, reply } => (error.into(), reply),
            },
            Ok(Ok(None)) => return Err(NetError::Closed),
            Err(_) | Ok(Err(FrameError::Idle { .. } | FrameError::Stalled { .. })) => {
                (timed_out(), None)
            }
            Ok(Err(e)) => (e.into(), None),
        };
        let reply = reply.unwrap_or(handshake::HelloReply::Refused { reason: error.to_string() });
        // Best effort, and briefly: the peer may not be reading.
        let _ = tokio::time::timeout(timeouts.frame, conn.writer.send_json(&reply)).await;
        Err(error)
    }

    fn new(stream: TcpStream, timeouts: Timeouts) -> Connection {
        // Messages are small and each waits for an answer: send them at once.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let read = BufReader::with_capacity(frame::MAX_FRAME + 4, read);
        Connection { reader: MessageReader { read, timeouts }, writer: MessageWriter { write } }
    }

    /// Sends `msg`.
    ///
    /// # Errors
    /// [`NetError::Frame`].
    pub async fn send(&mut self, msg: &Message) -> Result<(), NetError> {
        self.writer.send(msg).await
    }

    /// Receives the next message, waiting at most `wait` for it to start.
    ///
    /// # Errors
    /// [`NetError::Closed`], [`NetError::Frame`], [`NetError::Wire`].
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

impl MessageReader {
    /// Receives the next message, waiting at most `wait` for it to start.
    ///
    /// # Errors
    /// [`NetError::Closed`], [`NetError::Frame`], [`NetError::Wire`].
    pub async fn recv(&mut self, wait: Duration) -> Result<Message, NetError> {
        let frame = self.recv_frame(wait).await?.ok_or(NetError::Closed)?;
        Ok(Message::decode(&frame)?)
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
            Ok(Some((payload, used))) => (Message::decode(payload).map_err(NetError::from), used),
            Err(e) => return Some(Err(e.into())),
        };
        self.read.consume(used);
        Some(msg)
    }

    async fn recv_frame(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, NetError> {
        Ok(frame::read_frame(&mut self.read, wait, self.timeouts.frame).await?)
    }
}

impl MessageWriter {
    /// Sends `msg`.
    ///
    /// # Errors
    /// [`NetError::Frame`].
    pub async fn send(&mut self, msg: &Message) -> Result<(), NetError> {
        Ok(frame::write_frame(&mut self.write, &msg.encode()).await?)
    }

    /// Sends `msgs` in one write.
    ///
    /// # Errors
    /// [`NetError::Frame`] if one is too large or the write fails.
    pub async fn send_all(&mut self, msgs: &[Message]) -> Result<(), NetError> {
        let mut bytes = Vec::new();
        for msg in msgs {
            bytes.extend(frame::encode_frame(&msg.encode())?);
        }
        self.write.write_all(&bytes).await.map_err(FrameError::Io)?;
        Ok(())
    }

    async fn send_json(&mut self, value: &impl serde::Serialize) -> Result<(), NetError> {
        let bytes = serde_json::to_vec(value).expect("handshake messages serialize");
        Ok(frame::write_frame(&mut self.write, &bytes).await?)
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
