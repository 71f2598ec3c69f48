//! The file service's messages: `file_request`, `file_offer` and `file_chunk`, an extension of
//! the channel protocol. They travel as [`Extension`] messages in the protocol's JSON envelope,
//! with the same names and fields as before they moved out of the core (see docs/protocol.md).

use paychan::wire::{ChannelId, Extension, WireError};
use serde::{Deserialize, Serialize};

/// Payer -> payee: asks for the file `name` of the payee's paid file service, from chunk
/// `from_chunk` on. Without `max_price_per_chunk_sat` it asks only for the offer (a quote). With
/// it, the payee refuses if its price is higher, and otherwise answers `file_offer` and then
/// sends one chunk at a time, each only once the one before it is paid (see docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRequest {
    /// The channel that pays for it.
    pub channel_id: ChannelId,
    /// The file's name, as the payee lists it.
    pub name: String,
    /// The first chunk wanted (0 for the whole file).
    pub from_chunk: u64,
    /// The most the payer pays for a chunk; `None` asks for the offer only.
    pub max_price_per_chunk_sat: Option<u64>,
}

/// Payee -> payer: what a file is and costs. `sha256` is the hash of the whole file, which the
/// payer checks once it has every chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOffer {
    /// The channel.
    pub channel_id: ChannelId,
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The size of every chunk but the last.
    pub chunk_size: u32,
    /// The price of each chunk, in satoshis.
    pub price_per_chunk_sat: u64,
    /// The SHA-256 of the whole file.
    pub sha256: bitcoin::hashes::sha256::Hash,
    /// What the channel still owes for a chunk of another file sent earlier and not paid (a
    /// download broken off): the chunks start once it is paid.
    pub owed_sat: u64,
    /// How many chunks of this file, from chunk 0, this channel has paid for: a download broken
    /// off resumes from there (those below it come again free of charge, one per request).
    pub paid_chunks: u64,
}

/// Payee -> payer: chunk `index` of the file offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChunk {
    /// The channel.
    pub channel_id: ChannelId,
    /// The chunk's index, from 0.
    pub index: u64,
    /// Its bytes.
    #[serde(with = "paychan::wire::hex_bytes")]
    pub data: Vec<u8>,
}

/// A message of the file service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMessage {
    /// `file_request`, payer -> payee.
    Request(FileRequest),
    /// `file_offer`, payee -> payer.
    Offer(FileOffer),
    /// `file_chunk`, payee -> payer.
    Chunk(FileChunk),
}

impl FileMessage {
    /// The wire name of `file_request`.
    pub const REQUEST: &'static str = "file_request";
    /// The wire name of `file_offer`.
    pub const OFFER: &'static str = "file_offer";
    /// The wire name of `file_chunk`.
    pub const CHUNK: &'static str = "file_chunk";

    /// Reads an extension message as one of the file service's; `None` if it is another
    /// service's.
    ///
    /// # Errors
    /// [`WireError::Malformed`] if it has a file message's name but not its fields.
    pub fn from_extension(msg: &Extension) -> Option<Result<FileMessage, WireError>> {
        Some(match msg.kind.as_str() {
            FileMessage::REQUEST => msg.parse().map(FileMessage::Request),
            FileMessage::OFFER => msg.parse().map(FileMessage::Offer),
            FileMessage::CHUNK => msg.parse().map(FileMessage::Chunk),
            _ => return None,
        })
    }

    /// Makes the extension message that carries this one.
    pub fn to_extension(&self) -> Extension {
        match self {
            FileMessage::Request(m) => Extension::new(FileMessage::REQUEST, m),
            FileMessage::Offer(m) => Extension::new(FileMessage::OFFER, m),
            FileMessage::Chunk(m) => Extension::new(FileMessage::CHUNK, m),
        }
        .expect("file messages are JSON objects with a channel id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paychan::wire::Message;

    #[test]
    fn file_messages_round_trip_and_the_largest_chunk_fits_a_frame() {
        let id = ChannelId([2; 32]);
        let request = FileMessage::Request(FileRequest {
            channel_id: id,
            name: "film.bin".into(),
            from_chunk: 0,
            max_price_per_chunk_sat: Some(1000),
        });
        let offer = FileMessage::Offer(FileOffer {
            channel_id: id,
            name: "film.bin".into(),
            size: 5,
            chunk_size: 2,
            price_per_chunk_sat: 1000,
            sha256: bitcoin::hashes::Hash::hash(b"hello"),
            owed_sat: 0,
            paid_chunks: 0,
        });
        let size = crate::MAX_CHUNK_SIZE as usize;
        let chunk = FileMessage::Chunk(FileChunk {
            channel_id: id,
            index: u64::MAX,
            data: vec![0xab; size],
        });
        let encoded = Message::Extension(chunk.to_extension()).encode();
        assert!(encoded.len() <= paychan_node::net::MAX_MESSAGE);
        for m in [request, offer, chunk] {
            let Message::Extension(e) =
                Message::decode(&Message::Extension(m.to_extension()).encode()).unwrap()
            else {
                panic!("an extension")
            };
            assert_eq!(FileMessage::from_extension(&e).unwrap().unwrap(), m);
        }
    }

    #[test]
    fn the_wire_form_is_the_one_from_before_the_move() {
        // A `file_request` as version 2 of the protocol wrote it when it was a core message.
        let json = format!(
            r#"{{"version":2,"message":{{"type":"file_request","channel_id":"{}","name":"a.bin","from_chunk":3,"max_price_per_chunk_sat":null}}}}"#,
            ChannelId([5; 32])
        );
        let Message::Extension(e) = Message::decode(json.as_bytes()).unwrap() else {
            panic!("an extension")
        };
        let expected = FileRequest {
            channel_id: ChannelId([5; 32]),
            name: "a.bin".into(),
            from_chunk: 3,
            max_price_per_chunk_sat: None,
        };
        assert_eq!(
            FileMessage::from_extension(&e).unwrap().unwrap(),
            FileMessage::Request(expected)
        );
        let back: serde_json::Value =
            serde_json::from_slice(&Message::Extension(e).encode()).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(&json).unwrap());
        // Unknown fields are refused, as before.
        let extra = json.replace(r#""from_chunk":3"#, r#""from_chunk":3,"x":1"#);
        let Message::Extension(e) = Message::decode(extra.as_bytes()).unwrap() else { panic!() };
        assert!(FileMessage::from_extension(&e).unwrap().is_err());
    }
}
