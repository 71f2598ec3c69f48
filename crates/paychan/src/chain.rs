//! The chain: what paychan needs to know of and do to the Bitcoin network.
//!
//! [`Chain`] is the small trait the rest of paychan talks to, so code above it can be tested
//! without a node. The `paychan-bitcoind` crate implements it over a Bitcoin Core node's
//! JSON-RPC interface. The node needs no wallet: paychan's own keys hold the coins (the
//! `paychan-wallet` crate).

use bitcoin::{FeeRate, OutPoint, Transaction, TxOut, Txid};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};

/// The chain tip: its height, hash and median time past ([BIP 113]).
///
/// [BIP 113]: https://github.com/bitcoin/bips/blob/master/bip-0113.mediawiki
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// The height of the best block.
    pub height: u32,
    /// Its hash: a new best block at the same height (a reorganization) has another.
    pub hash: bitcoin::BlockHash,
    /// The median time past of the best block, in Unix seconds.
    pub median_time_past: u64,
}

/// Where a transaction is, as far as the node knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// The node knows nothing of it (not in a block, not in its mempool).
    Unknown,
    /// In the node's mempool, not yet in a block.
    InMempool,
    /// In the best chain, with this many confirmations (at least 1).
    Confirmed(u32),
}

/// What became of a transaction output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputStatus {
    /// Unspent, with its value and script, and how many confirmations its transaction has
    /// (0 while that transaction is in the mempool).
    Unspent {
        /// The output.
        txout: TxOut,
        /// Confirmations of the transaction that created it.
        confirmations: u32,
    },
    /// Spent (in a block, or by a transaction in the mempool), or never created.
    SpentOrMissing,
}

/// Why the node refused a transaction. The variants are the cases a channel must tell apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Its `nLockTime` (or a sequence lock) is not yet satisfied: try again at a later tip.
    #[error("non-final: its locktime is not reached yet ({reason})")]
    NonFinal {
        /// The node's reject reason.
        reason: String,
    },
    /// An input it spends does not exist or is already spent in a block.
    #[error("an input is missing or already spent ({reason})")]
    MissingOrSpent {
        /// The node's reject reason.
        reason: String,
    },
    /// It conflicts with a transaction in the mempool, which the node will not replace.
    #[error("conflicts with a transaction in the mempool ({reason})")]
    Conflict {
        /// The node's reject reason.
        reason: String,
    },
    /// Its fee rate is below what the node relays.
    #[error("fee too low ({reason})")]
    FeeTooLow {
        /// The node's reject reason.
        reason: String,
    },
    /// Already in the best chain (its outputs in the UTXO set, or the node found it confirmed
    /// when it reported its inputs spent): a repeated broadcast of a confirmed transaction.
    #[error("already confirmed ({reason})")]
    AlreadyConfirmed {
        /// The node's reject reason.
        reason: String,
    },
    /// Already in the node's mempool: a repeated broadcast (ours, or the other side's copy of
    /// the same transaction).
    #[error("already in the mempool ({reason})")]
    AlreadyInMempool {
        /// The node's reject reason.
        reason: String,
    },
    /// Any other reason (invalid script, non-standard, ...).
    #[error("rejected: {reason}")]
    Other {
        /// The node's reject reason.
        reason: String,
    },
}

impl Rejection {
    /// Classifies one of Bitcoin Core's reject reasons (`testmempoolaccept`'s `reject-reason`,
    /// or the message of a `sendrawtransaction` error). `details` (`reject-details`, free text
    /// that may repeat any word) is kept in the text for people but never classified.
    pub fn from_reason(reason: &str, details: Option<&str>) -> Rejection {
        let lower = reason.to_ascii_lowercase();
        let r = match details {
            Some(details) => format!("{reason}: {details}"),
            None => reason.to_owned(),
        };
        if lower.contains("non-final") || lower.contains("non-bip68-final") {
            Rejection::NonFinal { reason: r }
        } else if lower.contains("missingorspent")
            || lower.contains("missing-inputs")
            || lower.contains("missing inputs")
        {
            Rejection::MissingOrSpent { reason: r }
        } else if lower.contains("already in utxo set")
            || lower.contains("already in block chain")
            || lower.contains("txn-already-known")
        {
            Rejection::AlreadyConfirmed { reason: r }
        } else if lower.contains("txn-already-in-mempool") {
            Rejection::AlreadyInMempool { reason: r }
        } else if lower.contains("conflict")
            || lower.contains("replacement")
            || lower.contains("insufficient fee")
        {
            // With full RBF a conflicting transaction that pays no more is refused with
            // "insufficient fee" (Core's reason for a failed replacement only): for a channel,
            // whose closing transactions all pay the same fee, that is a conflict.
            Rejection::Conflict { reason: r }
        } else if lower.contains("min relay fee") || lower.contains("mempool min fee") {
            Rejection::FeeTooLow { reason: r }
        } else {
            Rejection::Other { reason: r }
        }
    }
}

/// Errors from talking to the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The node refused the transaction.
    #[error("node refused transaction {txid}: {rejection}")]
    Rejected {
        /// The transaction.
        txid: Txid,
        /// Why.
        rejection: Rejection,
    },
    /// The node could not be reached or answered with an RPC error.
    #[error("rpc {method} failed: {source}")]
    Rpc {
        /// The RPC method.
        method: &'static str,
        /// The cause, as the chain adapter reported it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The node runs without `-txindex=1`, or its index is still catching up, so it cannot tell
    /// the confirmations of arbitrary transactions.
    #[error("the node has no synced transaction index: restart bitcoind with -txindex=1")]
    NoTxIndex,
    /// The node's answer could not be understood.
    #[error("unexpected answer to {method}: {detail}")]
    UnexpectedAnswer {
        /// The RPC method.
        method: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl ChainError {
    /// Returns the node's rejection, if this is one.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            ChainError::Rejected { rejection, .. } => Some(rejection),
            _ => None,
        }
    }
}

/// What paychan asks of a chain backend.
pub trait Chain {
    /// Returns the best block's height and median time past.
    ///
    /// # Errors
    /// [`ChainError::Rpc`] or [`ChainError::UnexpectedAnswer`].
    fn tip(&self) -> Result<Tip, ChainError>;

    /// Checks that the node's mempool would accept `tx` now, without broadcasting it.
    ///
    /// # Errors
    /// [`ChainError::Rejected`] with the classified reason.
    fn test_accept(&self, tx: &Transaction) -> Result<(), ChainError>;

    /// Checks `tx` with [`Chain::test_accept`], then broadcasts it.
    ///
    /// # Errors
    /// [`ChainError::Rejected`] with the classified reason.
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError>;

    /// Returns where the transaction `txid` is.
    ///
    /// # Errors
    /// [`ChainError::Rpc`] or [`ChainError::UnexpectedAnswer`].
    fn tx_status(&self, txid: Txid) -> Result<TxStatus, ChainError>;

    /// Returns whether `outpoint` is unspent (counting the mempool's spends).
    ///
    /// # Errors
    /// [`ChainError::Rpc`] or [`ChainError::UnexpectedAnswer`].
    fn output_status(&self, outpoint: OutPoint) -> Result<OutputStatus, ChainError>;

    /// Returns whether `outpoint` is unspent as of the best block: a spend waiting in the
    /// mempool does not count (and an output of an unconfirmed transaction is missing).
    ///
    /// # Errors
    /// [`ChainError::Rpc`] or [`ChainError::UnexpectedAnswer`].
    fn output_status_in_blocks(&self, outpoint: OutPoint) -> Result<OutputStatus, ChainError>;

    /// Returns the confirmed transaction that spends `outpoint` and its block height, looking
    /// through the blocks from the tip back to the one holding `outpoint`'s own transaction
    /// (`None` if no block in between spends it, or if that transaction is in no block of the
    /// best chain).
    ///
    /// # Errors
    /// [`ChainError::Rpc`] or [`ChainError::UnexpectedAnswer`].
    fn find_spend(&self, outpoint: OutPoint) -> Result<Option<(Transaction, u32)>, ChainError>;

    /// Returns, for each of `outpoints` in order, the transaction in the node's mempool that
    /// spends it, if any: one call for every outpoint (Bitcoin Core's
    /// `gettxspendingprevout`), so that a watcher learns of closes in the mempool without a
    /// call per channel.
    ///
    /// # Errors
    /// [`ChainError::Rpc`] or [`ChainError::UnexpectedAnswer`].
    fn mempool_spends(&self, outpoints: &[OutPoint]) -> Result<Vec<Option<Txid>>, ChainError>;

    /// Submits `txs`, a child after its parents, as one package (Bitcoin Core's
    /// `submitpackage`): their fee rate together is held against the mempool's minimum, so a
    /// child can carry a parent that pays too little alone (CPFP). A parent the node has
    /// already is not submitted again.
    ///
    /// # Errors
    /// [`ChainError::Rejected`] with the classified reason of the first transaction refused.
    fn submit_package(&self, txs: &[Transaction]) -> Result<(), ChainError>;

    /// Returns the lowest fee rate the node's mempool takes now: the higher of its minimum
    /// relay fee rate and its dynamic minimum (a full mempool's).
    ///
    /// # Errors
    /// [`ChainError::Rpc`] or [`ChainError::UnexpectedAnswer`].
    fn mempool_min_feerate(&self) -> Result<FeeRate, ChainError>;

    /// Returns a fee rate for confirmation within `target_blocks`.
    ///
    /// # Errors
    /// [`ChainError::Rpc`] or [`ChainError::UnexpectedAnswer`].
    fn fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError>;

    /// Returns the confirmed unspent outputs matching the ranged public `descriptors` (such as
    /// `wpkh(tpub.../0/*)`), each scanned over indexes `0..=range_end`. Unconfirmed outputs are
    /// not included; outputs spent only in the mempool are.
    ///
    /// # Errors
    /// [`ChainError::Rpc`] or [`ChainError::UnexpectedAnswer`].
    fn scan_outputs(
        &self,
        descriptors: &[Descriptor<DescriptorPublicKey>],
        range_end: u32,
    ) -> Result<Vec<Utxo>, ChainError>;
}

/// A confirmed unspent output found by [`Chain::scan_outputs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utxo {
    /// Where it is.
    pub outpoint: OutPoint,
    /// Its value and script.
    pub txout: TxOut,
    /// The height of the block that holds it.
    pub height: u32,
    /// Whether it is a coinbase output (spendable only after 100 confirmations).
    pub coinbase: bool,
}

#[cfg(test)]
mod tests {
    use super::Rejection;

    #[test]
    fn bitcoin_core_reject_reasons_are_classified() {
        let cases = [
            ("non-final", "NonFinal"),
            ("bad-txns-inputs-missingorspent", "MissingOrSpent"),
            ("missing-inputs", "MissingOrSpent"),
            ("txn-mempool-conflict", "Conflict"),
            ("insufficient fee, rejecting replacement abc; new feerate 0.00002 <= old", "Conflict"),
            ("min relay fee not met, 100 < 110", "FeeTooLow"),
            ("mempool min fee not met", "FeeTooLow"),
            ("insufficient fee", "Conflict"),
            ("Transaction outputs already in utxo set", "AlreadyConfirmed"),
            ("txn-already-in-mempool", "AlreadyInMempool"),
            ("mandatory-script-verify-flag-failed", "Other"),
        ];
        for (reason, kind) in cases {
            let got = format!("{:?}", Rejection::from_reason(reason, None));
            assert!(got.starts_with(kind), "{reason} -> {got}");
        }
    }
}
