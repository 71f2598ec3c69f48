//! Transaction builders: funding, refund, commitment and settlement, with their fees and dust.
//!
//! Each builder is a pure function of the channel parameters. Both parties call the same builder
//! with the same parameters and so get the same transaction; only signatures are exchanged.

mod channel;
mod fee;
mod funding;

pub use channel::{ChannelTxBuilder, ChannelTxParams};
pub use fee::{fee_for_weight, is_dust, spending_weight};
pub use funding::{build_funding, sign_p2wpkh_input, FundingInput};

use bitcoin::{Amount, OutPoint};

/// Errors from building channel transactions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The payer's side cannot cover the fee and the amount asked for.
    #[error(
        "insufficient channel balance: {} sat available after fees, {} sat requested",
        available.to_sat(),
        requested.to_sat()
    )]
    InsufficientBalance {
        /// What the payer's side can still pay after the fee.
        available: Amount,
        /// What was asked for.
        requested: Amount,
    },
    /// The capacity cannot keep a non-dust output in every split (the payer's, while the
    /// payee's share is below its dust limit), or cannot pay the payee a non-dust amount.
    #[error(
        "capacity {} sat is too small: covering the fees and the dust limits needs {} sat",
        capacity.to_sat(),
        needed.to_sat()
    )]
    CapacityTooSmall {
        /// The channel capacity.
        capacity: Amount,
        /// The least capacity that keeps a non-dust output in every split.
        needed: Amount,
    },
    /// An amount or fee overflowed.
    #[error("amount overflow")]
    Overflow,
    /// A locktime is not a block height.
    #[error("locktime {0} is not a block height")]
    NotAHeight(u32),
    /// A funding input does not spend a native segwit output, so the funding txid could change
    /// after the refund was signed.
    #[error("funding input {index} ({outpoint}) does not spend a native segwit output")]
    NonSegwitInput {
        /// The input's position.
        index: usize,
        /// The outpoint it spends.
        outpoint: OutPoint,
    },
    /// The funding inputs do not cover the capacity and the fee.
    #[error(
        "funding inputs hold {} sat, need {} sat (capacity plus fee)",
        available.to_sat(),
        needed.to_sat()
    )]
    InsufficientFunds {
        /// The sum of the inputs.
        available: Amount,
        /// Capacity plus fee.
        needed: Amount,
    },
    /// Signing an input failed (index out of range, wrong script type).
    #[error("cannot sign input {index}: {reason}")]
    Signing {
        /// The input's position.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The transaction given is not one this builder made (it has no input).
    #[error("not a channel transaction: it has no input")]
    NotAChannelTransaction,
    /// Satisfying the funding script failed.
    #[error(transparent)]
    Funding(#[from] crate::funding::FundingError),
}

#[cfg(test)]
mod tests;
