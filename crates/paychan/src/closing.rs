//! What closed a channel: the transaction that spent its funding output, read from the chain.
//!
//! Both watchers (the payee's inside `serve`, the payer's `watch`) record a [`Closure`] once they
//! see a confirmed spend, whoever broadcast it. The kind is told by the spend's `nLockTime`,
//! which the scheme fixes for each transaction: 0 for the settlement, `R` for the refund, and
//! `R - k*step` for a commitment on rung `k` (the payments after the `(k-1)`-th checkpoint). An
//! older commitment is still a commitment: its rung says which.

use bitcoin::{Amount, ScriptBuf, Transaction, Txid};
use serde::{Deserialize, Serialize};

use crate::channel::ChannelParams;

/// How deep a closing transaction must be before the watchers stop checking that it is still in
/// the best chain: until then a reorganization may take it away, and the channel is watched
/// again.
pub const REORG_DEPTH: u32 = 100;

/// Which of the channel's transactions closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosingKind {
    /// The cooperative split, `nLockTime` 0.
    Settlement,
    /// A commitment on rung `rung`, final at its locktime `R - rung*step`.
    Commitment {
        /// The rung: the checkpoints made before its payment, plus one. (Stored as `update` by
        /// releases before checkpoints, where each update had a rung of its own.)
        #[serde(alias = "update")]
        rung: u64,
    },
    /// The payer's refund, final at `R`.
    Refund,
    /// A spend with a locktime on no rung of the ladder (cannot happen with both keys honest).
    Unknown,
}

impl ClosingKind {
    /// Returns the kind in one word: `settlement`, `commitment`, `refund` or `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            ClosingKind::Settlement => "settlement",
            ClosingKind::Commitment { .. } => "commitment",
            ClosingKind::Refund => "refund",
            ClosingKind::Unknown => "unknown",
        }
    }
}

/// A confirmed transaction that spent a channel's funding output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// The spending transaction.
    pub txid: Txid,
    /// What it is.
    pub kind: ClosingKind,
    /// The height of the block that holds it.
    pub height: u32,
    /// What it pays the payer.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub payer_amount: Amount,
    /// What it pays the payee.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub payee_amount: Amount,
}

impl Closure {
    /// Reads what `tx`, confirmed at `height`, did to the channel of `params`.
    pub fn read(tx: &Transaction, height: u32, params: &ChannelParams) -> Self {
        let terms = &params.terms;
        let ladder = &terms.ladder;
        let locktime = tx.lock_time.to_consensus_u32();
        let kind = if locktime == 0 {
            ClosingKind::Settlement
        } else if locktime == ladder.refund() {
            ClosingKind::Refund
        } else {
            match ladder.rung(locktime) {
                Some(rung) => ClosingKind::Commitment { rung },
                None => ClosingKind::Unknown,
            }
        };
        let (payer_amount, payee_amount) = split(tx, params);
        Closure { txid: tx.compute_txid(), kind, height, payer_amount, payee_amount }
    }
}

/// Returns what `tx`, a transaction spending the funding of the channel of `params`, pays the
/// payer and the payee.
pub fn split(tx: &Transaction, params: &ChannelParams) -> (Amount, Amount) {
    let paid_to = |script: &ScriptBuf| -> Amount {
        tx.output.iter().filter(|o| &o.script_pubkey == script).map(|o| o.value).sum()
    };
    (paid_to(&params.terms.payer_script), paid_to(&params.payee_script))
}
