//! Decodes arbitrary bytes as a stream of frames, and each frame's payload as a message.
//!
//! Checks that a frame never claims more bytes than the buffer holds, that re-framing a payload
//! gives back the same bytes and decodes to the same payload, that only an announced length
//! above `MAX_FRAME` is refused, and that every message that decodes re-encodes to bytes that
//! decode to an equal message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paychan::wire::Message;
use paychan_node::net::frame::{decode_frame, encode_frame, FrameError, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match decode_frame(rest) {
            Ok(None) => {
                // Only a short prefix or a short payload waits for more bytes.
                if let Some(prefix) = rest.get(..4) {
                    let len = u32::from_be_bytes(prefix.try_into().expect("four bytes"));
                    assert!((len as usize) <= MAX_FRAME && rest.len() < 4 + len as usize);
                }
                break;
            }
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(max, MAX_FRAME);
                assert!(len > MAX_FRAME, "refused a frame of {len} bytes");
                let prefix = rest.get(..4).expect("refused on the prefix alone");
                assert_eq!(
                    len,
                    u32::from_be_bytes(prefix.try_into().expect("four bytes")) as usize
                );
                break;
            }
            Err(e) => panic!("decode_frame does no I/O, yet: {e}"),
            Ok(Some((payload, used))) => {
                assert!(used <= rest.len(), "consumed {used} of {} bytes", rest.len());
                assert_eq!(used, 4 + payload.len());
                assert_eq!(payload, &rest[4..used]);
                let frame = encode_frame(payload).expect("a decoded payload is within the limit");
                assert_eq!(frame, &rest[..used]);
                let again = decode_frame(&frame).expect("our own frame");
                assert_eq!(again, Some((payload, used)));
                if let Ok(msg) = Message::decode(payload) {
                    let encoded = msg.encode();
                    let decoded = Message::decode(&encoded).unwrap_or_else(|e| {
                        panic!("{msg:?} encodes to {:?}, which fails: {e}", bytes(&encoded))
                    });
                    assert_eq!(decoded, msg, "round trip through {:?}", bytes(&encoded));
                }
                rest = &rest[used..];
            }
        }
    }
});

fn bytes(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
