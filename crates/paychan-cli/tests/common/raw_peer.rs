//! A hand-driven peer of the payee daemon over a blocking `TcpStream`: raw bytes, raw frames, the
//! Noise handshake and wire messages sealed in its session, every read bounded by a deadline. A
//! test sends through it what the real payer never would, and sees exactly what comes back, or
//! that the daemon hung up.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bitcoin::PublicKey;
use paychan::keys::ChannelSigner;
use paychan::wire::{ChannelId, Message};
use paychan_node::net::frame::encode_frame;
use paychan_node::net::handshake::Initiator;
use paychan_node::net::session::Session;

/// What came of waiting for a frame.
#[derive(Debug)]
pub enum FrameRead {
    /// A whole frame's payload.
    Frame(Vec<u8>),
    /// The daemon closed the connection (end of stream, or a reset).
    Closed,
    /// Nothing whole arrived before the deadline; the connection is still open.
    TimedOut,
}

/// How a connection ended, as seen from our side.
#[derive(Debug)]
pub struct Closed {
    /// From the start of the wait to the end of the stream.
    pub after: Duration,
    /// Whatever arrived before the end (a `refused` answer, say).
    pub received: Vec<u8>,
}

/// One TCP connection to the daemon.
pub struct RawPeer {
    stream: TcpStream,
    /// The session, once the handshake is done.
    session: Option<Session>,
}

impl RawPeer {
    /// Connects, sending nothing.
    pub fn connect(addr: &str) -> RawPeer {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        // Frames are small and each part should leave when the test says so, not later.
        stream.set_nodelay(true).expect("nodelay");
        RawPeer { stream, session: None }
    }

    /// Connects and runs the payer's side of the handshake, checking the daemon proves
    /// `node_id`.
    pub fn handshake(addr: &str, node_id: &PublicKey) -> RawPeer {
        let mut peer = RawPeer::connect(addr);
        let (initiator, first) = Initiator::start(*node_id);
        peer.send_frame(&first).expect("send the first handshake message");
        let reply = match peer.read_frame(Duration::from_secs(5)) {
            FrameRead::Frame(reply) => reply,
            other => panic!("no answer to a good first message: {other:?}"),
        };
        let session = initiator.finish(&reply).unwrap_or_else(|e| panic!("handshake: {e}"));
        peer.session = Some(session);
        peer
    }

    /// The session's handshake hash, for proving a channel key on it.
    pub fn session_hash(&self) -> [u8; 32] {
        self.session.as_ref().expect("handshake done").hash()
    }

    /// Our end's address, as the daemon logs it (`addr=...`).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Stops sending (a FIN), keeping the read side open.
    pub fn hang_up_sending(&self) {
        self.stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
    }

    /// Sends `bytes` as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends `payload` in one frame.
    pub fn send_frame(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.send_raw(&encode_frame(payload).expect("a payload within the frame limit"))
    }

    /// Seals `plaintext` as the session's next frame and returns it, unsent: to send it changed,
    /// or more than once.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let session = self.session.as_mut().expect("handshake done");
        session.sealer.seal(plaintext).expect("a message within the limit")
    }

    /// Seals `plaintext` in the session and sends it in one frame.
    pub fn send_sealed(&mut self, plaintext: &[u8]) -> std::io::Result<()> {
        let sealed = self.seal(plaintext);
        self.send_frame(&sealed)
    }

    /// Sends a wire message, sealed.
    pub fn send(&mut self, msg: &Message) {
        self.send_sealed(&msg.encode()).unwrap_or_else(|e| panic!("send {}: {e}", msg.name()));
    }

    /// Proves `signer`'s key for channel `channel_id` on this connection, as the payer does
    /// first for each channel it speaks for. The daemon answers nothing unless it refuses it.
    pub fn authenticate(&mut self, signer: &ChannelSigner, channel_id: ChannelId) {
        let auth = paychan::auth::authenticate(signer, &self.session_hash(), channel_id);
        self.send(&Message::Authenticate(auth));
    }

    /// Receives the next wire message within `wait`, panicking on anything else.
    pub fn recv(&mut self, wait: Duration) -> Message {
        match self.read_frame(wait) {
            FrameRead::Frame(sealed) => {
                let bytes = self.open(&sealed);
                Message::decode(&bytes).unwrap_or_else(|e| {
                    panic!("not a message: {e}: {}", String::from_utf8_lossy(&bytes))
                })
            }
            other => panic!("expected a message within {wait:?}, got {other:?}"),
        }
    }

    /// Opens a frame received raw (from [`RawPeer::read_frame`] or [`RawPeer::wait_closed`]).
    pub fn open(&mut self, sealed: &[u8]) -> Vec<u8> {
        let session = self.session.as_mut().expect("handshake done");
        session.opener.open(sealed).expect("a frame sealed by the daemon")
    }

    /// Reads one frame within `wait`.
    pub fn read_frame(&mut self, wait: Duration) -> FrameRead {
        let deadline = Instant::now() + wait;
        let mut prefix = [0u8; 4];
        if let Some(end) = self.read_exact_by(&mut prefix, deadline) {
            return end;
        }
        let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
        if let Some(end) = self.read_exact_by(&mut payload, deadline) {
            return end;
        }
        FrameRead::Frame(payload)
    }

    /// Reads (and keeps) whatever arrives until the daemon closes the connection, for at most
    /// `within`. `Err` holds what arrived if the connection is still open then.
    pub fn wait_closed(&mut self, within: Duration) -> Result<Closed, Vec<u8>> {
        let start = Instant::now();
        let deadline = start + within;
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.read_by(&mut buf, deadline) {
                Some(Ok(0)) | None => {
                    return Ok(Closed { after: start.elapsed(), received });
                }
                Some(Ok(n)) => received.extend_from_slice(&buf[..n]),
                Some(Err(())) => return Err(received),
            }
        }
    }

    /// Fills `buf` before `deadline`; `None` when it did, else how it ended.
    fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant) -> Option<FrameRead> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read_by(&mut buf[filled..], deadline) {
                Some(Ok(0)) | None => return Some(FrameRead::Closed),
                Some(Ok(n)) => filled += n,
                Some(Err(())) => return Some(FrameRead::TimedOut),
            }
        }
        None
    }

    /// One read that gives up at `deadline`: `Some(Ok(n))` bytes read (0 at the end of the
    /// stream), `Some(Err(()))` at the deadline, `None` when the connection was reset or broke.
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> Option<Result<usize, ()>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Some(Err(()));
            }
            // A zero timeout means "block forever" to the OS: never pass one.
            let left = left.max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(left)).expect("read timeout");
            match self.stream.read(buf) {
                Ok(n) => return Some(Ok(n)),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A reset is how a socket closed with our bytes unread ends: closed all the same.
                Err(_) => return None,
            }
        }
    }
}
