//! The wallet's errors.

use std::path::PathBuf;

use bitcoin::bip32;
use bitcoin::Amount;

use paychan::chain::ChainError;
use paychan::watch::FollowError;

use crate::Branch;

/// Errors from the wallet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletError {
    /// Reading or writing a wallet file failed.
    #[error("wallet file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A wallet file exists but cannot be read as one.
    #[error("wallet file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The seed file can be read by other users.
    #[error("seed file {path} has mode {mode:o}; it must be 600 (run: chmod 600 {path})")]
    InsecureSeedFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The wallet's database failed.
    #[error("wallet database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: bdk_wallet::rusqlite::Error,
    },
    /// The database holds a wallet that is not this seed's on this network, or one that BDK
    /// cannot read.
    #[error("the database's wallet does not match the seed and network: {0}")]
    Mismatch(String),
    /// The spendable coins do not cover the amount and the fee.
    #[error(
        "insufficient funds: {} sat spendable, {} sat needed (amount plus fee)",
        available.to_sat(),
        needed.to_sat()
    )]
    InsufficientFunds {
        /// The coins considered, together.
        available: Amount,
        /// The amount plus the fee of spending them.
        needed: Amount,
    },
    /// A branch has used up its address indexes.
    #[error("no address index left on the {branch:?} branch")]
    IndexesExhausted {
        /// The branch.
        branch: Branch,
    },
    /// Deriving a key failed.
    #[error("key derivation failed: {0}")]
    Derivation(#[from] bip32::Error),
    /// The wallet's descriptor did not parse (a bug: it is built from the wallet's own key).
    #[error("wallet descriptor: {0}")]
    Descriptor(#[from] miniscript::Error),
    /// The chain backend failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Following the node's blocks failed.
    #[error("following the chain: {0}")]
    Follow(#[from] FollowError),
    /// A block did not connect to the wallet's chain (the node's chain and the wallet's
    /// disagree below every block the wallet keeps).
    #[error("block {height} does not connect to the wallet's chain: {reason}")]
    BlockDoesNotConnect {
        /// The block's height.
        height: u32,
        /// BDK's reason.
        reason: String,
    },
    /// No output of the transaction to bump is the wallet's, so no child can spend one.
    #[error("no output of {txid} is this wallet's: nothing to bump it with")]
    NothingToBump {
        /// The transaction.
        txid: bitcoin::Txid,
    },
    /// BDK could not build the transaction.
    #[error("building the transaction: {0}")]
    Build(String),
    /// BDK could not sign every input of the transaction.
    #[error("signing the transaction: {0}")]
    Sign(String),
}
