//! paychan's paid file service: a payee serves the files of a directory chunk by chunk, and the
//! payer pays for each chunk as it arrives. It is an extension of the channel protocol: its
//! messages ([`messages`]) travel as the core's extension messages, and [`FileService`] plugs
//! into the payee daemon as its [`Service`](paychan_node::daemon::Service).
//!
//! - [`Catalog`] (I/O): the files served, with their sizes and SHA-256, and their chunks read
//!   from disk.
//! - [`Sale`] (sans-IO, payee): per channel, which chunk goes out next, and when. At most one
//!   chunk is ever out unpaid on a channel, across every request on it and every restart (the
//!   sale is stored with the channel, [`SaleRecord`]), so a payer that asks again and again gets
//!   no chunk it has not paid for, but the one out; a download broken off resumes from the first
//!   chunk not paid for.
//! - [`Download`] (sans-IO, payer): checks an offer against what the payer will pay, takes the
//!   chunks in order, and checks the whole file against the announced hash.
//!
//! The messages are `file_request`, `file_offer` and `file_chunk` ([`messages`]); payments are
//! ordinary `pay` messages. See docs/protocol.md.
#![warn(missing_docs)]

mod catalog;
mod download;
pub mod messages;
mod sale;
mod service;

pub use catalog::{Catalog, CatalogError, ServedFile, MAX_CHUNK_SIZE};
pub use download::{Download, DownloadError};
pub use messages::{FileChunk, FileMessage, FileOffer, FileRequest};
pub use sale::{Sale, SaleError, SaleRecord};
pub use service::{FileService, FileServiceError};
