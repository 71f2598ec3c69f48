//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes of payload.
//!
//! A length above [`MAX_FRAME`] is refused before any of the payload is read, so a peer cannot
//! make us allocate more than that. [`decode_frame`] decodes from bytes already in hand (for a
//! caller that buffers them itself); [`read_frame`] and [`write_frames`] read and write frames on
//! a tokio stream, with the same limit.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

/// The largest payload accepted, in bytes: a Noise message, sealed (see
/// [`super::session::MAX_MESSAGE`] for the largest message inside). The largest messages, a
/// `funding_created` with its funding transaction in hex and a file chunk, fit with room.
pub const MAX_FRAME: usize = 65_535;

/// The length prefix's size.
const PREFIX: usize = 4;

/// Errors from framing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced length is above [`MAX_FRAME`].
    #[error("frame of {len} bytes announced, the limit is {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No frame started within the idle timeout.
    #[error("no message for {secs} s")]
    Idle {
        /// The timeout.
        secs: f64,
    },
    /// A frame started but was not whole within the frame timeout.
    #[error("a message started but did not arrive whole within {secs} s")]
    Stalled {
        /// The timeout.
        secs: f64,
    },
    /// A frame could not be written within the frame timeout: the peer does not read.
    #[error("the peer took no data for {secs} s")]
    WriteStalled {
        /// The timeout.
        secs: f64,
    },
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Reading or writing failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Returns `payload` with its length prefix.
///
/// # Errors
/// [`FrameError::TooLarge`] if the payload is above [`MAX_FRAME`].
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut frame = Vec::with_capacity(PREFIX + payload.len());
    push_frame(&mut frame, payload)?;
    Ok(frame)
}

/// Decodes the first frame of `buf`: `Some((payload, bytes consumed))` when it is whole, `None`
/// when more bytes are needed.
///
/// # Errors
/// [`FrameError::TooLarge`] as soon as the prefix announces too much.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(prefix) = buf.get(..PREFIX) else { return Ok(None) };
    let len = announced_len(prefix.try_into().expect("four bytes"))?;
    Ok(buf.get(PREFIX..PREFIX + len).map(|payload| (payload, PREFIX + len)))
}

/// Reads one frame. Returns `None` if the peer closed the connection between frames.
///
/// The frame must start within `idle` and, once started, be whole within `within`: a peer that
/// sends nothing, or half a frame, is cut off rather than holding the connection forever.
///
/// # Errors
/// [`FrameError::Idle`], [`FrameError::Stalled`], [`FrameError::TooLarge`],
/// [`FrameError::Truncated`] or [`FrameError::Io`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    idle: Duration,
    within: Duration,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; PREFIX];
    match timeout(idle, r.read(&mut prefix[..1])).await {
        Err(_) => return Err(FrameError::Idle { secs: idle.as_secs_f64() }),
        Ok(Ok(0)) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(FrameError::Io(e)),
    }
    timeout(within, read_rest(r, prefix))
        .await
        .map_err(|_| FrameError::Stalled { secs: within.as_secs_f64() })?
        .map(Some)
}

async fn read_rest<R: AsyncRead + Unpin>(
    r: &mut R,
    mut prefix: [u8; PREFIX],
) -> Result<Vec<u8>, FrameError> {
    r.read_exact(&mut prefix[1..]).await.map_err(truncated)?;
    let len = announced_len(prefix)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(truncated)?;
    Ok(payload)
}

fn truncated(e: std::io::Error) -> FrameError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    }
}

/// Writes `bytes` (whole frames) and flushes them, within `within`: a peer that does not read
/// cannot hold the writer (and what it has queued) forever.
///
/// # Errors
/// [`FrameError::WriteStalled`] or [`FrameError::Io`].
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    within: Duration,
) -> Result<(), FrameError> {
    let write = async {
        w.write_all(bytes).await?;
        w.flush().await
    };
    timeout(within, write)
        .await
        .map_err(|_| FrameError::WriteStalled { secs: within.as_secs_f64() })??;
    Ok(())
}

/// Appends `payload` with its length prefix to `out`.
///
/// # Errors
/// [`FrameError::TooLarge`] if the payload is above [`MAX_FRAME`].
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), FrameError> {
    out.extend_from_slice(&checked_len(payload.len())?.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn announced_len(prefix: [u8; PREFIX]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME });
    }
    Ok(len)
}

fn checked_len(len: usize) -> Result<u32, FrameError> {
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME });
    }
    Ok(len as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_whole_frames() {
        let frame = encode_frame(b"hello").unwrap();
        assert_eq!(frame, b"\x00\x00\x00\x05hello");
        for cut in 0..frame.len() {
            assert!(decode_frame(&frame[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let mut two = frame.clone();
        two.extend_from_slice(b"\x00\x00");
        assert_eq!(decode_frame(&two).unwrap(), Some((&b"hello"[..], 9)));
    }

    #[test]
    fn oversize_lengths_are_refused_before_the_payload() {
        let err = decode_frame(&[0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len: 0xffff_ffff, max: MAX_FRAME }));
        assert!(encode_frame(&vec![0; MAX_FRAME + 1]).is_err());
        assert!(encode_frame(&vec![0; MAX_FRAME]).is_ok());
    }

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn truncated_frames_are_an_error_and_a_clean_close_is_not() {
        let mut empty: &[u8] = b"";
        assert!(read_frame(&mut empty, SEC, SEC).await.unwrap().is_none());
        for bytes in [&b"\x00\x00"[..], b"\x00\x00\x00\x05hel"] {
            let mut r = bytes;
            let got = read_frame(&mut r, SEC, SEC).await;
            assert!(matches!(got, Err(FrameError::Truncated)), "{bytes:?}");
        }
        let mut whole: &[u8] = b"\x00\x00\x00\x02hi";
        assert_eq!(read_frame(&mut whole, SEC, SEC).await.unwrap().unwrap(), b"hi");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_stalled_peers_time_out() {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        let got = read_frame(&mut ours, SEC, SEC).await;
        assert!(matches!(got, Err(FrameError::Idle { .. })), "{got:?}");
        theirs.write_all(b"\x00\x00\x00\x05he").await.unwrap();
        let got = read_frame(&mut ours, SEC, SEC).await;
        assert!(matches!(got, Err(FrameError::Stalled { .. })), "{got:?}");
    }
}
