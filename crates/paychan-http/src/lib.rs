//! Pay per request over HTTP, on a paychan channel.
//!
//! - [`gateway`]: the 402 gateway, a reverse proxy in front of any HTTP service that takes a
//!   payment with each priced request, inside the payee daemon (`paychan serve --http-listen`).
//! - [`client`]: the payer's HTTP client, which answers a 402 by paying on a channel to the
//!   payee (opening one if needed) and retrying, within a budget.
//! - [`headers`]: the headers both speak; [`prices`]: the gateway's price table.
//!
//! See docs/http.md for the flow, a transcript, and how this compares with L402 and x402.
#![warn(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod client;
pub mod gateway;
pub mod headers;
pub mod prices;
