//! An established session: each message is sealed (ChaCha20-Poly1305) under the key of its
//! direction, with a counter as its nonce. A frame changed, forged, replayed, dropped or
//! reordered on the path fails to open, and the connection ends.
//!
//! The two halves are separate ([`Sealer`], [`Opener`]) so that one task can write while
//! another reads; they share the keys, each keeps its own counter.

use std::sync::Arc;

use snow::StatelessTransportState;

/// The largest message sealed: a Noise message is at most 65,535 bytes, tag included.
pub const MAX_MESSAGE: usize = 65_535 - TAG;

/// The authentication tag's size.
pub const TAG: usize = 16;

/// Errors of a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A message to seal is above [`MAX_MESSAGE`].
    #[error("message of {len} bytes, the limit is {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame did not open: changed, forged, replayed, dropped before it or out of order.
    #[error("a frame failed its authentication (changed, forged, replayed or out of order)")]
    Forged,
    /// 2^64 messages were sent one way.
    #[error("the session has used up its nonces")]
    Exhausted,
}

/// A session, from the handshake.
pub struct Session {
    /// Seals what we send.
    pub sealer: Sealer,
    /// Opens what we receive.
    pub opener: Opener,
    hash: [u8; 32],
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys.
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    pub(super) fn new(transport: StatelessTransportState, hash: [u8; 32]) -> Session {
        let keys = Arc::new(transport);
        Session {
            sealer: Sealer { keys: Arc::clone(&keys), nonce: 0 },
            opener: Opener { keys, nonce: 0 },
            hash,
        }
    }

    /// Returns the handshake hash: unique to this session, and the same on both sides. A payer
    /// proves its channel keys by signing it ([`paychan::auth`]).
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }
}

/// Seals the messages we send.
pub struct Sealer {
    keys: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    /// Seals `plaintext`, appending the frame to `out` (see [`Sealer::seal`]).
    ///
    /// # Errors
    /// [`SessionError::TooLarge`], [`SessionError::Exhausted`].
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        if plaintext.len() > MAX_MESSAGE {
            return Err(SessionError::TooLarge { len: plaintext.len(), max: MAX_MESSAGE });
        }
        let nonce = self.nonce;
        self.nonce = nonce.checked_add(1).ok_or(SessionError::Exhausted)?;
        let start = out.len();
        out.resize(start + plaintext.len() + TAG, 0);
        let len = self
            .keys
            .write_message(nonce, plaintext, &mut out[start..])
            .map_err(|_| SessionError::Exhausted)?;
        out.truncate(start + len);
        Ok(())
    }

    /// Seals `plaintext` into the next frame's payload.
    ///
    /// # Errors
    /// [`SessionError::TooLarge`], [`SessionError::Exhausted`].
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SessionError> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG);
        self.seal_into(plaintext, &mut out)?;
        Ok(out)
    }
}

/// Opens the messages we receive.
pub struct Opener {
    keys: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Opener {
    /// Opens the next frame's payload.
    ///
    /// # Errors
    /// [`SessionError::Forged`] for anything but the next frame the peer sealed, unchanged.
    pub fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, SessionError> {
        if sealed.len() < TAG {
            return Err(SessionError::Forged);
        }
        let mut out = vec![0u8; sealed.len() - TAG];
        let len = self
            .keys
            .read_message(self.nonce, sealed, &mut out)
            .map_err(|_| SessionError::Forged)?;
        // Only a frame that opened moves the counter: the next must follow it.
        self.nonce = self.nonce.checked_add(1).ok_or(SessionError::Exhausted)?;
        out.truncate(len);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::handshake::{answer, Answer, Initiator, NodeIdentity};
    use super::*;

    fn pair() -> (Session, Session) {
        let node = NodeIdentity::new(&bitcoin::secp256k1::SecretKey::from_slice(&[1; 32]).unwrap());
        let (initiator, first) = Initiator::start(node.node_id());
        let Answer::Welcome { reply, session } = answer(&first, &node) else { panic!() };
        (initiator.finish(&reply).unwrap(), session)
    }

    #[test]
    fn changed_replayed_dropped_and_reordered_frames_fail() {
        let (mut a, mut b) = pair();
        let frames: Vec<_> = (0..3u8).map(|i| a.sealer.seal(&[i; 40]).unwrap()).collect();
        let mut flipped = frames[0].clone();
        flipped[5] ^= 0x20;
        assert_eq!(b.opener.open(&flipped), Err(SessionError::Forged));
        assert_eq!(b.opener.open(&frames[1]), Err(SessionError::Forged), "reordered");
        assert_eq!(b.opener.open(&frames[0]).unwrap(), vec![0; 40]);
        assert_eq!(b.opener.open(&frames[0]), Err(SessionError::Forged), "replayed");
        assert_eq!(b.opener.open(&frames[2]), Err(SessionError::Forged), "one dropped");
        assert_eq!(b.opener.open(&frames[1]).unwrap(), vec![1; 40]);
        // A frame sealed one way does not open the other way.
        let back = b.sealer.seal(b"x").unwrap();
        assert_eq!(b.opener.open(&back), Err(SessionError::Forged));
        assert_eq!(a.opener.open(&back).unwrap(), b"x");
        assert_eq!(b.opener.open(&[0; 3]), Err(SessionError::Forged));
    }

    #[test]
    fn the_largest_message_fits_a_noise_message() {
        let (mut a, mut b) = pair();
        let sealed = a.sealer.seal(&vec![7; MAX_MESSAGE]).unwrap();
        assert_eq!(sealed.len(), 65_535);
        assert_eq!(b.opener.open(&sealed).unwrap().len(), MAX_MESSAGE);
        assert!(matches!(
            a.sealer.seal(&vec![7; MAX_MESSAGE + 1]),
            Err(SessionError::TooLarge { .. })
        ));
    }
}
