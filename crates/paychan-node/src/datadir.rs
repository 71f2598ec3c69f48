//! A data directory: the wallet seed ([`paychan_wallet`]), the database of the channel store
//! ([`paychan::store`]), and a lock file.
//!
//! One process at a time changes a data directory: the daemon for as long as it runs, a payer
//! command for as long as it talks to its payee. [`DataDir::lock`] takes an exclusive lock on
//! `lock` (released by the OS if the process dies, even by `kill -9`); reading commands need none,
//! SQLite's WAL mode lets them read while another process writes.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use bitcoin::Network;

use paychan::store::{Store, StoreError};
use paychan_sqlite::{SqliteStore, STORE_FILE};
use paychan_wallet::{Wallet, WalletError, SEED_FILE};

/// The lock file's name.
pub const LOCK_FILE: &str = "lock";

/// Errors from opening a data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// The directory has not been initialized.
    #[error("{path} is not a paychan data directory (run: paychan --datadir {path} init)")]
    NotInitialized {
        /// The directory.
        path: PathBuf,
    },
    /// Another process holds the lock.
    #[error(
        "{path} is in use by another paychan process (a running `serve`, or another payer command)"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// Creating or locking a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The wallet failed to open.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The store failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An open data directory.
pub struct DataDir {
    /// The directory.
    pub path: PathBuf,
    /// The wallet.
    pub wallet: Wallet,
    /// The channel store.
    pub store: SqliteStore,
    /// Held while this process changes the directory.
    lock: Option<File>,
}

impl DataDir {
    /// Creates (or reopens) the data directory at `path` for `network`.
    ///
    /// # Errors
    /// [`DataDirError::Io`], [`DataDirError::Wallet`], [`DataDirError::Store`] (including a
    /// directory made for another network).
    pub fn init(path: &Path, network: Network) -> Result<DataDir, DataDirError> {
        fs::create_dir_all(path)
            .map_err(|source| DataDirError::Io { path: path.to_owned(), source })?;
        DataDir::open_existing(path, network)
    }

    /// Opens the data directory at `path`, made by [`DataDir::init`] for `network`.
    ///
    /// # Errors
    /// [`DataDirError::NotInitialized`], and as [`DataDir::init`].
    pub fn open(path: &Path, network: Network) -> Result<DataDir, DataDirError> {
        if !path.join(SEED_FILE).exists() || !path.join(STORE_FILE).exists() {
            return Err(DataDirError::NotInitialized { path: path.to_owned() });
        }
        DataDir::open_existing(path, network)
    }

    fn open_existing(path: &Path, network: Network) -> Result<DataDir, DataDirError> {
        let mut store = SqliteStore::open(&path.join(STORE_FILE))?;
        store.check_network(network)?;
        let wallet = Wallet::open(path, &path.join(STORE_FILE), network)?;
        Ok(DataDir { path: path.to_owned(), wallet, store, lock: None })
    }

    /// Lends the wallet and the store together (what [`crate::client::PayerClient`] works with).
    pub fn parts(&mut self) -> (&mut Wallet, &mut SqliteStore) {
        (&mut self.wallet, &mut self.store)
    }

    /// Splits the directory into its wallet, its store, and its lock (taken now if this value
    /// does not hold it yet, and held for as long as the returned [`DirLock`] lives).
    ///
    /// # Errors
    /// [`DataDirError::Locked`] if another process holds it, [`DataDirError::Io`].
    pub fn into_locked_parts(mut self) -> Result<(Wallet, SqliteStore, DirLock), DataDirError> {
        if self.lock.is_none() {
            self.lock()?;
        }
        Ok((self.wallet, self.store, DirLock { _file: self.lock }))
    }

    /// Releases the lock [`DataDir::lock`] took, if this value holds it.
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// Takes the directory's exclusive lock for the life of this value, without waiting.
    ///
    /// # Errors
    /// [`DataDirError::Locked`] if another process holds it, [`DataDirError::Io`].
    pub fn lock(&mut self) -> Result<(), DataDirError> {
        let path = self.path.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| DataDirError::Io { path: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => {
                self.lock = Some(file);
                Ok(())
            }
            Err(fs::TryLockError::WouldBlock) => {
                Err(DataDirError::Locked { path: self.path.clone() })
            }
            Err(fs::TryLockError::Error(source)) => Err(DataDirError::Io { path, source }),
        }
    }
}

/// The data directory's lock, once the directory is split up ([`DataDir::into_locked_parts`]): the OS
/// releases it when this is dropped or the process dies.
pub struct DirLock {
    _file: Option<File>,
}
