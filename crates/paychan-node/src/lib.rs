//! paychan on tokio: the TCP transport, the payee daemon, the payer client and the data
//! directory.
//!
//! - [`net`]: length-prefixed frames over TCP and the handshake in which the payee proves its
//!   node key.
//! - [`daemon`]: the payee, serving many channels and connections at once, generic over its
//!   [`Store`](paychan::store::Store) and [`Chain`](paychan::chain::Chain), with a hook for a
//!   [`Service`](daemon::Service) sold over the channel (the paid file service of
//!   `paychan-files`).
//! - [`client`]: the payer, one channel through one connection, generic the same way.
//! - [`follow`]: what the daemon's watcher and the payer's `watch` share to follow the chain
//!   block by block ([`paychan::watch`]).
//! - [`datadir`] (feature `datadir`, on by default): the wallet and the SQLite store in one
//!   locked directory, as the command line keeps them.
//!
//! # Blocking calls
//! One rule: an async function never makes a blocking call (a chain RPC, a store commit, a wallet
//! scan) on its worker thread. Work that owns what it needs goes to tokio's blocking pool
//! (`spawn_blocking`: the daemon's node calls and broadcasts) or to a thread of its own (the
//! daemon's store writer); a call on borrowed state (the payer client's wallet and store) goes
//! through [`blocking`], which first moves the worker's other tasks elsewhere.
#![warn(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod client;
pub mod daemon;
#[cfg(feature = "datadir")]
pub mod datadir;
pub mod fee_bump;
pub mod follow;
pub mod net;
mod store_writer;

pub use store_writer::StoreWriter;

/// Runs the blocking call `call` from async code: on a multi-threaded runtime through
/// `tokio::task::block_in_place`, which hands the worker's other tasks to another worker first;
/// elsewhere (a current-thread runtime, which has no other worker, or no runtime) directly.
pub fn blocking<T>(call: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(call)
    } else {
        call()
    }
}
