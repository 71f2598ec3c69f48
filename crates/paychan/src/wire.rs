//! Wire messages between payer and payee, with a protocol version.
//!
//! Messages carry only numbers, keys, addresses and signatures, never a transaction to be signed:
//! each side rebuilds every transaction from the channel parameters (the one exception is the
//! unsigned funding transaction, which the payee needs to learn the funding outpoint and check the
//! funding output). Amounts are whole satoshis, heights are block heights, and signatures are
//! DER plus a sighash byte, in lower-case hex.
//!
//! The encoding is JSON in an envelope `{"version": 2, "message": {"type": "pay", ...}}`, except
//! for the two messages of the payment path, `pay` and `pay_ack`, which travel in a compact
//! binary form (see [`binary`]): a channel may carry a million of them, and JSON would cost a
//! few microseconds each, next to the ~60 us of cryptography a payment needs. A message of a
//! different version is refused before it is read. Version 2 brought checkpoints: a `pay`
//! carries only the payer's signature and says whether it is a checkpoint, and `pay_ack` carries
//! the payee's signature on checkpoints only.

use std::fmt;
use std::str::FromStr;

use bitcoin::address::NetworkUnchecked;
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{Address, Network, PublicKey, Transaction};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 2;

/// Errors from decoding a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {got}, this build speaks {supported}")]
    UnsupportedVersion {
        /// The version the peer sent.
        got: u16,
        /// The version this build speaks.
        supported: u16,
    },
    /// The bytes are not a well-formed message.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The bytes are not a well-formed message in the binary form.
    #[error("malformed {message} message: {reason}")]
    MalformedBinary {
        /// The message the first byte announced.
        message: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Identifies a channel; chosen by the payer at open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub [u8; 32]);

impl ChannelId {
    /// A fresh random id.
    pub fn random() -> Self {
        use bitcoin::secp256k1::rand::RngCore;
        let mut id = [0u8; 32];
        bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut id);
        ChannelId(id)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_hex())
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

impl FromStr for ChannelId {
    type Err = bitcoin::hex::HexToArrayError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <[u8; 32]>::from_hex(s).map(ChannelId)
    }
}

impl Serialize for ChannelId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChannelId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Signature bytes as received: parsed and checked only by the state machine, so a bad signature
/// becomes a typed channel error rather than a decoding failure.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawSignature(#[serde(with = "hex_bytes")] pub Vec<u8>);

impl From<bitcoin::ecdsa::Signature> for RawSignature {
    fn from(sig: bitcoin::ecdsa::Signature) -> Self {
        RawSignature(sig.to_vec())
    }
}

impl fmt::Debug for RawSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawSignature({})", self.0.as_hex())
    }
}

/// A transaction as the hex of its consensus encoding. Decoded with
/// `consensus::encode::deserialize_hex`, which errs on bad input: bitcoin 0.32's
/// `consensus::serde::With<Hex>` panics on a transaction that ends early (found by the
/// `frame_decode` fuzz target).
mod tx_hex {
    use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
    use bitcoin::Transaction;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tx: &Transaction, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&serialize_hex(tx))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Transaction, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        deserialize_hex(&s).map_err(serde::de::Error::custom)
    }
}

pub mod hex_bytes {
    //! Bytes as lower-case hex in JSON, for `#[serde(with = "paychan::wire::hex_bytes")]` (the
    //! file service's chunks use it too).
    use bitcoin::hex::{DisplayHex, FromHex};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `bytes` as hex.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&bytes.as_hex())
    }

    /// Reads bytes from hex.
    ///
    /// # Errors
    /// The deserializer's, or odd or non-hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Vec::<u8>::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Payer -> payee: proposes a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenChannel {
    /// The new channel's id.
    pub channel_id: ChannelId,
    /// The chain the channel lives on; the payee refuses any other.
    pub network: Network,
    /// The funding output's value in satoshis.
    pub capacity_sat: u64,
    /// The fee rate of every channel transaction, in sat/vB.
    pub feerate_sat_per_vb: u64,
    /// The refund's `nLockTime` (a block height), `R`.
    pub refund_locktime: u32,
    /// Blocks between successive commitment locktimes.
    pub step: u32,
    /// The payer's funding key.
    pub payer_key: PublicKey,
    /// Where the payer's money goes.
    pub payer_address: Address<NetworkUnchecked>,
    /// The checkpoint policy: a checkpoint every this many payments (`null`: no such rule).
    pub checkpoint_every_payments: Option<u64>,
    /// The checkpoint policy: a checkpoint every this many sat paid (`null`: no such rule).
    pub checkpoint_every_sat: Option<u64>,
}

/// Payee -> payer: accepts the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptChannel {
    /// The channel.
    pub channel_id: ChannelId,
    /// The payee's funding key.
    pub payee_key: PublicKey,
    /// Where the payee's money goes.
    pub payee_address: Address<NetworkUnchecked>,
}

/// Payer -> payee: the funding transaction, **unsigned** so that the payee cannot broadcast it
/// before signing the refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundingCreated {
    /// The channel.
    pub channel_id: ChannelId,
    /// The funding transaction with empty witnesses.
    #[serde(with = "tx_hex")]
    pub funding_tx: Transaction,
    /// The index of the funding output.
    pub vout: u32,
}

/// Payee -> payer: the payee's signature on the refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundSigned {
    /// The channel.
    pub channel_id: ChannelId,
    /// The payee's signature on the refund.
    pub signature: RawSignature,
}

/// Payee -> payer: the funding has its confirmations; payments may start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelReady {
    /// The channel.
    pub channel_id: ChannelId,
}

/// Payer -> payee: payment `update`, the payer's signature on the commitment that pays the new
/// total at the current rung's locktime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pay {
    /// The channel.
    pub channel_id: ChannelId,
    /// The payment number `k` (1 for the first payment).
    pub update: u64,
    /// The total paid so far, in satoshis, including this payment.
    pub paid_total_sat: u64,
    /// The commitment's `nLockTime`, `L_{c+1} = R - (c+1)*step` after `c` checkpoints.
    pub locktime: u32,
    /// Whether the payer asks the payee to countersign it (a checkpoint); the payments after
    /// it move one rung down.
    pub checkpoint: bool,
    /// The payer's signature on the commitment.
    pub signature: RawSignature,
}

/// Payee -> payer: payment `update` (and every one before it) is taken and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayAck {
    /// The channel.
    pub channel_id: ChannelId,
    /// The payment acknowledged.
    pub update: u64,
    /// The payee's signature on the commitment, for a checkpoint; `null` otherwise.
    pub signature: Option<RawSignature>,
}

/// Payee -> payer: asks the payer to settle now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    /// The channel.
    pub channel_id: ChannelId,
}

/// Payer -> payee: the payer's signature on the settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClosingSigned {
    /// The channel.
    pub channel_id: ChannelId,
    /// The total paid, which must equal the newest commitment's.
    pub paid_total_sat: u64,
    /// The payer's signature on the settlement.
    pub signature: RawSignature,
}

/// Payee -> payer: the payee's signature on the settlement, which it has broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClosingAck {
    /// The channel.
    pub channel_id: ChannelId,
    /// The payee's signature on the settlement.
    pub signature: RawSignature,
}

/// Payer -> payee, after a reconnect: asks the payee to repeat where it is. The payee answers
/// `channel_ready` if the channel is ready and not settled, and nothing otherwise; the payer
/// repeats its own unanswered message (`funding_created`, `pay` or `closing_signed`) itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reestablish {
    /// The channel.
    pub channel_id: ChannelId,
}

/// Payer -> payee, first on a connection for each channel it speaks for: proof of the channel's
/// payer key, bound to this connection. The payee takes a channel's messages only from a
/// connection that sent it ([`crate::auth`]); for a channel not yet opened, the
/// `open_channel` must name the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authenticate {
    /// The channel.
    pub channel_id: ChannelId,
    /// The channel's payer key.
    pub payer_key: PublicKey,
    /// The payer key's signature over the session's handshake hash and the channel
    /// ([`crate::auth::digest`]).
    pub signature: RawSignature,
}

/// Payee -> payer, in answer to `reestablish`: the newest payment the payee has stored, with
/// the payer's own signature on it, and its newest checkpoint with the payee's signature. The
/// payer checks the signatures against its own copies of the commitments and takes them as
/// acknowledged: whatever went missing on the way, both sides then stand on what the payee
/// holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// The channel.
    pub channel_id: ChannelId,
    /// The payment number; 0 if the payee holds none.
    pub update: u64,
    /// The total paid, in satoshis.
    pub paid_total_sat: u64,
    /// The commitment's `nLockTime`.
    pub locktime: u32,
    /// Whether it is a checkpoint.
    pub checkpoint: bool,
    /// Payments since the checkpoint before it, it included.
    pub since_checkpoint: u64,
    /// Paid since the checkpoint before it, it included, in satoshis.
    pub paid_since_checkpoint_sat: u64,
    /// The payer's signature on the commitment; `null` with no payment.
    pub payer_signature: Option<RawSignature>,
    /// The newest checkpoint the payee holds (it or one before it); 0 if none.
    pub checkpoint_update: u64,
    /// Its total paid, in satoshis.
    pub checkpoint_paid_sat: u64,
    /// Its `nLockTime`.
    pub checkpoint_locktime: u32,
    /// The payee's signature on it; `null` without one.
    pub payee_signature: Option<RawSignature>,
}

/// Either way: the peer refused the last message about this channel, and why. The state of the
/// side that sends it is unchanged. With the all-zero channel id it is about the connection (a
/// malformed or oversized frame, a timeout), which the sender then closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorMessage {
    /// The channel.
    pub channel_id: ChannelId,
    /// What was wrong, in words.
    pub message: String,
}

/// The wire names of the core's messages; any other name is an [`Extension`].
const CORE_MESSAGES: [&str; 14] = [
    "open_channel",
    "accept_channel",
    "funding_created",
    "refund_signed",
    "channel_ready",
    "pay",
    "pay_ack",
    "shutdown",
    "closing_signed",
    "closing_ack",
    "reestablish",
    "error",
    "authenticate",
    "reconcile",
];

/// A message of a service built on the channel protocol, such as the paid file service's
/// `file_request`, `file_offer` and `file_chunk` (the `paychan-files` crate). The core carries it
/// without reading it: it travels in the same versioned JSON envelope as the core's messages,
/// with its own `type` and a `channel_id`, and the service parses its fields
/// ([`Extension::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The message's name on the wire (its `type`), which no core message has.
    pub kind: String,
    /// The channel it is about.
    pub channel_id: ChannelId,
    /// Its other fields.
    pub fields: Map<String, Value>,
}

impl Extension {
    /// Makes the extension message `kind` from `body`, a struct with a `channel_id` field.
    ///
    /// # Errors
    /// [`WireError::Malformed`] if `body` is not a JSON object with a channel id.
    pub fn new<T: Serialize>(kind: &str, body: &T) -> Result<Extension, WireError> {
        let mut fields = match serde_json::to_value(body)? {
            Value::Object(fields) => fields,
            other => serde_json::from_value::<Map<String, Value>>(other)?,
        };
        fields.insert("type".into(), kind.into());
        Extension::from_map(fields)
    }

    /// Reads the message's fields (its `channel_id` included) as a `T`.
    ///
    /// # Errors
    /// [`WireError::Malformed`] if they are not a `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, WireError> {
        let mut fields = self.fields.clone();
        fields.insert("channel_id".into(), self.channel_id.to_string().into());
        Ok(serde_json::from_value(Value::Object(fields))?)
    }

    fn from_map(mut fields: Map<String, Value>) -> Result<Extension, WireError> {
        let kind = serde_json::from_value(fields.remove("type").unwrap_or(Value::Null))?;
        let channel_id =
            serde_json::from_value(fields.remove("channel_id").unwrap_or(Value::Null))?;
        Ok(Extension { kind, channel_id, fields })
    }

    fn to_map(&self) -> Map<String, Value> {
        let mut map = self.fields.clone();
        map.insert("type".into(), self.kind.clone().into());
        map.insert("channel_id".into(), self.channel_id.to_string().into());
        map
    }
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(missing_docs)] // each variant is documented on its struct
pub enum Message {
    OpenChannel(OpenChannel),
    AcceptChannel(AcceptChannel),
    FundingCreated(FundingCreated),
    RefundSigned(RefundSigned),
    ChannelReady(ChannelReady),
    Pay(Pay),
    PayAck(PayAck),
    Shutdown(Shutdown),
    ClosingSigned(ClosingSigned),
    ClosingAck(ClosingAck),
    Reestablish(Reestablish),
    Error(ErrorMessage),
    Authenticate(Authenticate),
    Reconcile(Reconcile),
    /// A message of a service built on the channel protocol; see [`Extension`].
    #[serde(skip)]
    Extension(Extension),
}

impl Message {
    /// Returns the channel the message is about.
    pub fn channel_id(&self) -> ChannelId {
        match self {
            Message::OpenChannel(m) => m.channel_id,
            Message::AcceptChannel(m) => m.channel_id,
            Message::FundingCreated(m) => m.channel_id,
            Message::RefundSigned(m) => m.channel_id,
            Message::ChannelReady(m) => m.channel_id,
            Message::Pay(m) => m.channel_id,
            Message::PayAck(m) => m.channel_id,
            Message::Shutdown(m) => m.channel_id,
            Message::ClosingSigned(m) => m.channel_id,
            Message::ClosingAck(m) => m.channel_id,
            Message::Reestablish(m) => m.channel_id,
            Message::Error(m) => m.channel_id,
            Message::Authenticate(m) => m.channel_id,
            Message::Reconcile(m) => m.channel_id,
            Message::Extension(m) => m.channel_id,
        }
    }

    /// Returns the message's name as it appears on the wire; `extension` for an [`Extension`],
    /// whose own name is its [`Extension::kind`].
    pub fn name(&self) -> &'static str {
        match self {
            Message::OpenChannel(_) => "open_channel",
            Message::AcceptChannel(_) => "accept_channel",
            Message::FundingCreated(_) => "funding_created",
            Message::RefundSigned(_) => "refund_signed",
            Message::ChannelReady(_) => "channel_ready",
            Message::Pay(_) => "pay",
            Message::PayAck(_) => "pay_ack",
            Message::Shutdown(_) => "shutdown",
            Message::ClosingSigned(_) => "closing_signed",
            Message::ClosingAck(_) => "closing_ack",
            Message::Reestablish(_) => "reestablish",
            Message::Error(_) => "error",
            Message::Authenticate(_) => "authenticate",
            Message::Reconcile(_) => "reconcile",
            Message::Extension(_) => "extension",
        }
    }

    /// Encodes the message: `pay` and `pay_ack` in their binary form, the others in the
    /// versioned JSON envelope.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Pay(m) => return binary::encode_pay(m),
            Message::PayAck(m) => return binary::encode_pay_ack(m),
            _ => {}
        }
        #[derive(Serialize)]
        struct Envelope<'a, M> {
            version: u16,
            message: &'a M,
        }
        let version = PROTOCOL_VERSION;
        match self {
            Message::Extension(m) => {
                serde_json::to_vec(&Envelope { version, message: &m.to_map() })
            }
            _ => serde_json::to_vec(&Envelope { version, message: self }),
        }
        .expect("messages hold only JSON-representable values")
    }

    /// Decodes a message from its binary form or its versioned JSON envelope.
    ///
    /// # Errors
    /// [`WireError::UnsupportedVersion`] for another protocol version, [`WireError::Malformed`]
    /// or [`WireError::MalformedBinary`] for anything that is not a message of this version.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if let Some(message) = binary::decode(bytes) {
            return message;
        }
        #[derive(Deserialize)]
        struct Version {
            version: u16,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Envelope {
            #[allow(dead_code)] // checked through `Version` first
            version: u16,
            message: Map<String, Value>,
        }
        let Version { version } = serde_json::from_slice(bytes)?;
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion {
                got: version,
                supported: PROTOCOL_VERSION,
            });
        }
        let message = serde_json::from_slice::<Envelope>(bytes)?.message;
        match message.get("type").and_then(Value::as_str) {
            Some(kind) if !CORE_MESSAGES.contains(&kind) => {
                Ok(Message::Extension(Extension::from_map(message)?))
            }
            _ => Ok(serde_json::from_value(Value::Object(message))?),
        }
    }
}

pub mod binary {
    //! The binary form of `pay` and `pay_ack`: a tag byte that no JSON envelope starts with
    //! (`{` is 0x7b), the protocol version, then the fields at fixed places, integers
    //! big-endian:
    //!
    //! ```text
    //! pay      0x01 | version u16 | channel_id [32] | update u64 | paid_total_sat u64
    //!          | locktime u32 | checkpoint u8 (0 or 1) | signature (the rest of the frame)
    //! pay_ack  0x02 | version u16 | channel_id [32] | update u64
    //!          | has_signature u8 (0 or 1) | signature (the rest; nothing without one)
    //! ```
    //!
    //! The signature is DER plus the sighash byte, as in JSON; the state machine parses it (the
    //! frame bounds its length).

    use super::{ChannelId, Message, Pay, PayAck, RawSignature, WireError, PROTOCOL_VERSION};

    /// The first byte of a binary `pay`.
    pub const PAY: u8 = 0x01;
    /// The first byte of a binary `pay_ack`.
    pub const PAY_ACK: u8 = 0x02;

    pub(super) fn encode_pay(m: &Pay) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + 32 + 8 + 8 + 4 + 1 + m.signature.0.len());
        out.push(PAY);
        out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        out.extend_from_slice(&m.channel_id.0);
        out.extend_from_slice(&m.update.to_be_bytes());
        out.extend_from_slice(&m.paid_total_sat.to_be_bytes());
        out.extend_from_slice(&m.locktime.to_be_bytes());
        out.push(u8::from(m.checkpoint));
        out.extend_from_slice(&m.signature.0);
        out
    }

    pub(super) fn encode_pay_ack(m: &PayAck) -> Vec<u8> {
        let signature = m.signature.as_ref().map_or(&[][..], |s| &s.0);
        let mut out = Vec::with_capacity(3 + 32 + 8 + 1 + signature.len());
        out.push(PAY_ACK);
        out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        out.extend_from_slice(&m.channel_id.0);
        out.extend_from_slice(&m.update.to_be_bytes());
        out.push(u8::from(m.signature.is_some()));
        out.extend_from_slice(signature);
        out
    }

    /// Decodes `bytes` if they are in the binary form; `None` if they are not (JSON, or
    /// nothing).
    pub(super) fn decode(bytes: &[u8]) -> Option<Result<Message, WireError>> {
        let (&tag, rest) = bytes.split_first()?;
        let message = match tag {
            PAY => "pay",
            PAY_ACK => "pay_ack",
            _ => return None,
        };
        let mut r = Reader { rest, message };
        Some((|| {
            let version = u16::from_be_bytes(r.take()?);
            if version != PROTOCOL_VERSION {
                return Err(WireError::UnsupportedVersion {
                    got: version,
                    supported: PROTOCOL_VERSION,
                });
            }
            let channel_id = ChannelId(r.take()?);
            let update = u64::from_be_bytes(r.take()?);
            if tag == PAY_ACK {
                let signature = match r.flag()? {
                    false if r.rest.is_empty() => None,
                    false => return Err(r.malformed("a signature follows a flag that says none")),
                    true => Some(r.signature()),
                };
                return Ok(Message::PayAck(PayAck { channel_id, update, signature }));
            }
            let paid_total_sat = u64::from_be_bytes(r.take()?);
            let locktime = u32::from_be_bytes(r.take()?);
            let checkpoint = r.flag()?;
            let signature = r.signature();
            Ok(Message::Pay(Pay {
                channel_id,
                update,
                paid_total_sat,
                locktime,
                checkpoint,
                signature,
            }))
        })())
    }

    struct Reader<'a> {
        rest: &'a [u8],
        message: &'static str,
    }

    impl Reader<'_> {
        fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
            let (field, rest) =
                self.rest.split_first_chunk::<N>().ok_or(self.malformed("it ends early"))?;
            self.rest = rest;
            Ok(*field)
        }

        /// A byte that is 0 or 1.
        fn flag(&mut self) -> Result<bool, WireError> {
            match self.take::<1>()? {
                [0] => Ok(false),
                [1] => Ok(true),
                _ => Err(self.malformed("a flag is neither 0 nor 1")),
            }
        }

        /// The rest: the signature's bytes.
        fn signature(&mut self) -> RawSignature {
            RawSignature(std::mem::take(&mut self.rest).to_vec())
        }

        fn malformed(&self, reason: &'static str) -> WireError {
            WireError::MalformedBinary { message: self.message, reason }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ChannelSigner;

    fn pay() -> Message {
        Message::Pay(Pay {
            channel_id: ChannelId([9; 32]),
            update: 3,
            paid_total_sat: 6000,
            locktime: 990,
            checkpoint: false,
            signature: RawSignature(vec![0x30, 0x01, 0x01]),
        })
    }

    #[test]
    fn messages_round_trip() {
        let key = ChannelSigner::from_slice(&[1; 32]).unwrap().public_key();
        let open = Message::OpenChannel(OpenChannel {
            channel_id: ChannelId([1; 32]),
            network: Network::Regtest,
            capacity_sat: 100_000,
            feerate_sat_per_vb: 2,
            refund_locktime: 1000,
            step: 1,
            payer_key: key,
            payer_address: "bcrt1qv4mkpjsp2967gtl4k3rs2caj8tw0p55h8gzsdgtk54tfdyxkgsmsvc0c37"
                .parse()
                .unwrap(),
            checkpoint_every_payments: None,
            checkpoint_every_sat: Some(1000),
        });
        for m in [open, pay()] {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn extension_messages_round_trip_in_the_json_envelope() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Hello {
            channel_id: ChannelId,
            greeting: String,
        }
        let hello = Hello { channel_id: ChannelId([2; 32]), greeting: "hi".into() };
        let message = Message::Extension(Extension::new("hello", &hello).unwrap());
        let json: serde_json::Value = serde_json::from_slice(&message.encode()).unwrap();
        assert_eq!(json["version"], 2);
        assert_eq!(json["message"]["type"], "hello");
        assert_eq!(json["message"]["greeting"], "hi");
        let Message::Extension(decoded) = Message::decode(&message.encode()).unwrap() else {
            panic!("not an extension")
        };
        assert_eq!(decoded.kind, "hello");
        assert_eq!(message.name(), "extension");
        assert_eq!(decoded.parse::<Hello>().unwrap(), hello);
        // A core message's name is never read as an extension.
        assert!(Extension::new("shutdown", &hello).is_ok());
        let bad = Message::Extension(Extension::new("shutdown", &hello).unwrap());
        assert!(Message::decode(&bad.encode()).is_err());
    }

    #[test]
    fn a_truncated_funding_transaction_is_malformed_not_a_panic() {
        for tx in ["", "02", "0200000001"] {
            let json = format!(
                r#"{{"version":2,"message":{{"type":"funding_created","channel_id":"{}","funding_tx":"{tx}","vout":0}}}}"#,
                ChannelId([7; 32])
            );
            assert!(
                matches!(Message::decode(json.as_bytes()), Err(WireError::Malformed(_))),
                "{tx:?}"
            );
        }
    }

    #[test]
    fn envelope_is_versioned_json() {
        let shutdown = Message::Shutdown(Shutdown { channel_id: ChannelId([9; 32]) });
        let json: serde_json::Value = serde_json::from_slice(&shutdown.encode()).unwrap();
        assert_eq!(json["version"], 2);
        assert_eq!(json["message"]["type"], "shutdown");
        // pay and pay_ack read from JSON too.
        let pay_json = r#"{"version":2,"message":{"type":"pay","channel_id":"0909090909090909090909090909090909090909090909090909090909090909","update":3,"paid_total_sat":6000,"locktime":990,"checkpoint":false,"signature":"300101"}}"#;
        assert_eq!(Message::decode(pay_json.as_bytes()).unwrap(), pay());
    }

    #[test]
    fn pay_and_pay_ack_travel_in_binary() {
        let bytes = pay().encode();
        assert_eq!(bytes.len(), 3 + 32 + 8 + 8 + 4 + 1 + 3);
        assert_eq!(&bytes[..3], &[binary::PAY, 0, 2]);
        assert_eq!(&bytes[35..43], &3u64.to_be_bytes());
        for signature in [None, Some(RawSignature(vec![])), Some(RawSignature(vec![0x30; 73]))] {
            let ack =
                Message::PayAck(PayAck { channel_id: ChannelId([1; 32]), update: 7, signature });
            assert_eq!(Message::decode(&ack.encode()).unwrap(), ack);
        }
    }

    #[test]
    fn malformed_binary_is_refused() {
        let good = pay().encode();
        let mut bad_flag = good.clone();
        bad_flag[55] = 2;
        let ack = PayAck { channel_id: ChannelId([1; 32]), update: 7, signature: None };
        let mut ack_short = Message::PayAck(ack).encode();
        let mut ack_extra = ack_short.clone();
        ack_extra.push(0x30);
        ack_short.truncate(20);
        for bytes in [&good[..3], &good[..55], &bad_flag[..], &ack_short[..], &ack_extra[..]] {
            let err = Message::decode(bytes).unwrap_err();
            assert!(matches!(err, WireError::MalformedBinary { .. }), "{err}");
        }
        let mut other_version = good;
        other_version[2] = 1;
        let err = Message::decode(&other_version).unwrap_err();
        assert!(matches!(err, WireError::UnsupportedVersion { got: 1, supported: 2 }));
    }

    #[test]
    fn other_versions_are_refused() {
        let shutdown = Message::Shutdown(Shutdown { channel_id: ChannelId([9; 32]) });
        let mut json: serde_json::Value = serde_json::from_slice(&shutdown.encode()).unwrap();
        json["version"] = 1.into();
        let err = Message::decode(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(matches!(err, WireError::UnsupportedVersion { got: 1, supported: 2 }));
    }

    #[test]
    fn garbage_and_unknown_fields_are_malformed() {
        for bytes in [
            &b""[..],
            b"\xff\x00",
            b"{}",
            br#"{"version":2}"#,
            br#"{"version":2,"message":{"type":"nope"}}"#,
            br#"{"version":2,"message":{"type":"shutdown","channel_id":"00"}}"#,
        ] {
            assert!(matches!(Message::decode(bytes), Err(WireError::Malformed(_))), "{bytes:?}");
        }
        let shutdown = Message::Shutdown(Shutdown { channel_id: ChannelId([9; 32]) });
        let mut json: serde_json::Value = serde_json::from_slice(&shutdown.encode()).unwrap();
        json["message"]["extra"] = 1.into();
        assert!(Message::decode(&serde_json::to_vec(&json).unwrap()).is_err());
    }
}
