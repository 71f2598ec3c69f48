//! The headers the gateway and the client speak, and how payments ride in them.
//!
//! A payment is the channel's `pay` message and an acknowledgement its `pay_ack`, each in the
//! wire's binary encoding ([`Message::encode`]) and then base64 (URL-safe, unpadded): one
//! header value, about 150 characters for a payment.

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bitcoin::Amount;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use paychan::wire::{Message, Pay, PayAck};
use paychan_node::net::PeerAddr;

/// Request: the payer's payment for this request (a `pay` message).
pub const PAYMENT: HeaderName = HeaderName::from_static("paychan-payment");
/// Request to [`PAY_PATH`]: the metered response this payment is for.
pub const STREAM: HeaderName = HeaderName::from_static("paychan-stream");
/// Request to [`PAY_PATH`]: how many KiB of the stream this payment buys.
pub const KIB: HeaderName = HeaderName::from_static("paychan-kib");
/// 402: the payee, `NODE_ID@HOST:PORT`, where a channel is opened.
pub const PEER: HeaderName = HeaderName::from_static("paychan-peer");
/// 402: the price of the request, in satoshis.
pub const PRICE: HeaderName = HeaderName::from_static("paychan-price");
/// 402 and metered responses: the price of each KiB of the response body, in satoshis.
pub const PRICE_PER_KIB: HeaderName = HeaderName::from_static("paychan-price-per-kib");
/// 402 and metered responses: how many KiB may be paid ahead at once.
pub const WINDOW_KIB: HeaderName = HeaderName::from_static("paychan-window-kib");
/// Paid responses: the acknowledgements (`pay_ack` messages), comma-separated, oldest first.
pub const ACK: HeaderName = HeaderName::from_static("paychan-ack");
/// Paid responses: the channel's total paid, in satoshis.
pub const PAID_TOTAL: HeaderName = HeaderName::from_static("paychan-paid-total");
/// Paid responses: `requested` when the payer should settle the channel now.
pub const SETTLE: HeaderName = HeaderName::from_static("paychan-settle");
/// Refusals: why, in words (the body says it too).
pub const ERROR: HeaderName = HeaderName::from_static("paychan-error");

/// Where a metered response's payments go (`POST`, with [`PAYMENT`], [`STREAM`] and [`KIB`]).
pub const PAY_PATH: &str = "/.well-known/paychan/pay";

/// Errors reading the headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A header the message needs is missing.
    #[error("no {0} header")]
    Missing(&'static str),
    /// A header does not parse.
    #[error("malformed {name} header: {reason}")]
    Malformed {
        /// The header.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// What a `402 Payment Required` offers: where to pay and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The payee.
    pub peer: PeerAddr,
    /// The price of the request.
    pub price: Amount,
    /// The price of each KiB of the response body (zero: priced per request only).
    pub per_kib: Amount,
    /// How many KiB may be paid ahead at once.
    pub window_kib: u64,
}

impl Offer {
    /// Writes the offer into `headers`.
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert(PEER, value(&self.peer.to_string()));
        headers.insert(PRICE, value(&self.price.to_sat().to_string()));
        if self.per_kib > Amount::ZERO {
            headers.insert(PRICE_PER_KIB, value(&self.per_kib.to_sat().to_string()));
            headers.insert(WINDOW_KIB, value(&self.window_kib.to_string()));
        }
    }

    /// Reads an offer from a 402's `headers`.
    ///
    /// # Errors
    /// [`HeaderError`] if one is missing or malformed.
    pub fn read(headers: &HeaderMap) -> Result<Offer, HeaderError> {
        let peer =
            parse(headers, &PEER, "paychan-peer")?.ok_or(HeaderError::Missing("paychan-peer"))?;
        let price = parse(headers, &PRICE, "paychan-price")?
            .ok_or(HeaderError::Missing("paychan-price"))?;
        let per_kib = parse(headers, &PRICE_PER_KIB, "paychan-price-per-kib")?.unwrap_or(0);
        let window_kib = parse(headers, &WINDOW_KIB, "paychan-window-kib")?.unwrap_or(0);
        if per_kib > 0 && window_kib == 0 {
            return Err(malformed("paychan-window-kib", "zero, or missing with a price per KiB"));
        }
        Ok(Offer {
            peer,
            price: Amount::from_sat(price),
            per_kib: Amount::from_sat(per_kib),
            window_kib,
        })
    }
}

/// Reads header `name` as a `T`, if present.
///
/// # Errors
/// [`HeaderError::Malformed`] if it does not parse.
pub fn parse<T: FromStr>(
    headers: &HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<Option<T>, HeaderError>
where
    T::Err: std::fmt::Display,
{
    let Some(v) = headers.get(name) else { return Ok(None) };
    let s = v.to_str().map_err(|_| malformed(label, "not ASCII"))?;
    s.trim().parse().map(Some).map_err(|e: T::Err| malformed(label, &e.to_string()))
}

/// Encodes a payment for [`PAYMENT`].
pub fn encode_payment(pay: &Pay) -> HeaderValue {
    value(&URL_SAFE_NO_PAD.encode(Message::Pay(pay.clone()).encode()))
}

/// Decodes the payment of [`PAYMENT`].
///
/// # Errors
/// [`HeaderError::Malformed`] if it is not one `pay` message.
pub fn decode_payment(v: &HeaderValue) -> Result<Pay, HeaderError> {
    match decode_message(v.as_bytes(), "paychan-payment")? {
        Message::Pay(pay) => Ok(pay),
        other => Err(malformed("paychan-payment", &format!("a {} message", other.name()))),
    }
}

/// Encodes acknowledgements for [`ACK`].
pub fn encode_acks(acks: &[PayAck]) -> HeaderValue {
    let parts: Vec<String> =
        acks.iter().map(|a| URL_SAFE_NO_PAD.encode(Message::PayAck(a.clone()).encode())).collect();
    value(&parts.join(","))
}

/// Decodes the acknowledgements of [`ACK`].
///
/// # Errors
/// [`HeaderError::Malformed`] unless each is a `pay_ack` message.
pub fn decode_acks(v: &HeaderValue) -> Result<Vec<PayAck>, HeaderError> {
    v.as_bytes()
        .split(|b| *b == b',')
        .map(|part| match decode_message(part.trim_ascii(), "paychan-ack")? {
            Message::PayAck(ack) => Ok(ack),
            other => Err(malformed("paychan-ack", &format!("a {} message", other.name()))),
        })
        .collect()
}

fn decode_message(b64: &[u8], label: &'static str) -> Result<Message, HeaderError> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|e| malformed(label, &e.to_string()))?;
    Message::decode(&bytes).map_err(|e| malformed(label, &e.to_string()))
}

fn malformed(name: &'static str, reason: &str) -> HeaderError {
    HeaderError::Malformed { name, reason: reason.to_owned() }
}

/// A header value of text this crate made (digits, base64, a peer address): always valid.
pub(crate) fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use paychan::wire::{ChannelId, RawSignature};

    #[test]
    fn a_payment_and_its_acks_survive_the_headers() {
        let pay = Pay {
            channel_id: ChannelId([7; 32]),
            update: 42,
            paid_total_sat: 4200,
            locktime: 1000,
            checkpoint: true,
            signature: RawSignature(vec![0x30; 71]),
        };
        assert_eq!(decode_payment(&encode_payment(&pay)).unwrap(), pay);
        let acks = vec![
            PayAck { channel_id: pay.channel_id, update: 41, signature: None },
            PayAck { channel_id: pay.channel_id, update: 42, signature: None },
        ];
        assert_eq!(decode_acks(&encode_acks(&acks)).unwrap(), acks);
    }

    #[test]
    fn garbage_is_refused_as_malformed() {
        for bad in ["", "!!", "AAAA", "eyJ0eXBlIjoicGF5In0"] {
            let e = decode_payment(&HeaderValue::from_static(bad)).unwrap_err();
            assert!(
                matches!(e, HeaderError::Malformed { name: "paychan-payment", .. }),
                "{bad}: {e}"
            );
        }
    }
}
