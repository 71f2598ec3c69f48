//! Errors of the payer and payee state machines.
//!
//! Every error leaves the state machine exactly as it was before the call that returned it.

use bitcoin::{Amount, Network};

use crate::funding::FundingError;
use crate::keys::SignatureError;
use crate::ladder::LadderError;
use crate::tx::TxError;
use crate::wire::ChannelId;

/// Which channel transaction a signature was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxKind {
    /// The refund.
    Refund,
    /// The commitment of payment `k`.
    Commitment(u64),
    /// The settlement.
    Settlement,
}

impl std::fmt::Display for TxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxKind::Refund => write!(f, "refund"),
            TxKind::Commitment(k) => write!(f, "commitment of payment {k}"),
            TxKind::Settlement => write!(f, "settlement"),
        }
    }
}

/// Errors of the payer and payee state machines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The message is for another channel.
    #[error("message for channel {got}, this is channel {expected}")]
    WrongChannel {
        /// This channel.
        expected: ChannelId,
        /// The channel the message named.
        got: ChannelId,
    },
    /// The message or call does not fit the channel's current state (e.g. a replay).
    #[error("unexpected {what} while the channel is {state}")]
    Unexpected {
        /// The message or call.
        what: &'static str,
        /// The channel's state.
        state: &'static str,
    },
    /// The peer or an address is on another chain.
    #[error("wrong network: expected {expected}, got {got}")]
    WrongNetwork {
        /// Our chain.
        expected: Network,
        /// Theirs.
        got: String,
    },
    /// The fee rate is below what we accept.
    #[error("fee rate {got} sat/vB is below the minimum {min} sat/vB")]
    FeeRateTooLow {
        /// The least accepted.
        min: u64,
        /// Proposed.
        got: u64,
    },
    /// The locktime step is shorter than we accept.
    #[error("locktime step {got} blocks is below the minimum {min}")]
    StepTooShort {
        /// The least accepted.
        min: u32,
        /// Proposed.
        got: u32,
    },
    /// The refund's locktime is further from the tip than we accept.
    #[error("lifetime {got} blocks (to the refund's locktime) is above the maximum {max}")]
    LifetimeTooLong {
        /// The most accepted.
        max: u32,
        /// Proposed: the refund's locktime less the tip.
        got: u32,
    },
    /// The funding transaction has no output at the index given.
    #[error("funding transaction has no output {vout}")]
    FundingOutputMissing {
        /// The index given.
        vout: u32,
    },
    /// No output of the funding transaction (at a usable index) pays the channel's script.
    #[error("funding transaction pays nothing to the channel script")]
    FundingNotPaid,
    /// The funding output does not pay the channel's 2-of-2 script.
    #[error("funding output pays the wrong script")]
    FundingScriptMismatch,
    /// The funding output's value is not the agreed capacity.
    #[error(
        "funding output holds {} sat, the channel capacity is {} sat",
        got.to_sat(),
        expected.to_sat()
    )]
    FundingValueMismatch {
        /// The capacity.
        expected: Amount,
        /// The output's value.
        got: Amount,
    },
    /// A funding input carries a script signature, so it is not native segwit and the txid
    /// could change after the refund was signed.
    #[error("funding input {index} is not native segwit (its scriptSig is not empty)")]
    FundingNotSegwit {
        /// The input's position.
        index: usize,
    },
    /// A funding input signals replace-by-fee: the funding could be replaced by one the refund
    /// does not spend.
    #[error("funding input {index} signals replace-by-fee")]
    FundingSignalsRbf {
        /// The input's position.
        index: usize,
    },
    /// The confirmed funding is not the channel's funding outpoint.
    #[error("confirmed funding {got} is not the channel's funding outpoint {expected}")]
    FundingOutpointMismatch {
        /// The channel's funding outpoint.
        expected: bitcoin::OutPoint,
        /// The one reported.
        got: bitcoin::OutPoint,
    },
    /// The funding transaction has more than one output paying the channel script.
    #[error("funding transaction pays the channel script more than once")]
    FundingAmbiguous,
    /// A zero payment was asked for.
    #[error("a payment must be more than zero")]
    ZeroPayment,
    /// Adding the payment to the total overflowed.
    #[error("amount overflow: {} sat paid plus {} sat", paid.to_sat(), amount.to_sat())]
    AmountOverflow {
        /// Paid so far.
        paid: Amount,
        /// The payment.
        amount: Amount,
    },
    /// The payment number is not the next one (a replay, or out of order).
    #[error("payment {got} is out of order, expected {expected}")]
    UnexpectedUpdate {
        /// The next payment number.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// The new total does not exceed the previous one.
    #[error(
        "paid total {} sat does not exceed the previous total {} sat",
        proposed.to_sat(),
        previous.to_sat()
    )]
    PaidNotIncreasing {
        /// The previous total.
        previous: Amount,
        /// The proposed total.
        proposed: Amount,
    },
    /// The proposed locktime is not the ladder's rung for this payment: `L_{c+1}`, `c` being the
    /// checkpoints made before it.
    #[error("locktime {proposed} is not the ladder's {expected} for this payment")]
    LockTimeOffLadder {
        /// `R - (c+1)*step`.
        expected: u32,
        /// The proposed locktime.
        proposed: u32,
    },
    /// The settlement's total is not the newest payment's.
    #[error(
        "settlement pays {} sat, the newest payment's total is {} sat",
        proposed.to_sat(),
        expected.to_sat()
    )]
    PaidTotalMismatch {
        /// The newest payment's total.
        expected: Amount,
        /// The settlement's.
        proposed: Amount,
    },
    /// The checkpoint policy is malformed (a count or an amount of zero).
    #[error("malformed checkpoint policy: every 0 payments or every 0 sat")]
    BadCheckpointPolicy,
    /// The payee acknowledged a checkpoint without its signature.
    #[error("payment {update} is a checkpoint, acknowledged without the payee's signature")]
    CheckpointNotSigned {
        /// The payment.
        update: u64,
    },
    /// The payee holds fewer payments than the payer has seen acknowledged: it lost some (a
    /// restored backup, say). The payer keeps what it has, and the payee's acknowledgements.
    #[error("the payee holds payment {theirs}, but acknowledged payment {ours}")]
    PeerBehind {
        /// The newest payment acknowledged to us.
        ours: u64,
        /// The newest the payee holds.
        theirs: u64,
    },
    /// The payee holds a payment of the same number as our newest acknowledged one, but another.
    #[error("the payee holds another payment {update} than the one it acknowledged")]
    ReconcileMismatch {
        /// The payment.
        update: u64,
    },
    /// A signature from the peer is bad.
    #[error("bad signature on the {tx}: {source}")]
    Signature {
        /// The transaction it was for.
        tx: TxKind,
        /// What is wrong with it.
        source: SignatureError,
    },
    /// The signer's key is not this channel's key.
    #[error("signer key does not match the channel's key")]
    SignerMismatch,
    /// A restored state contradicts itself (e.g. a corrupted or hand-edited file).
    #[error("inconsistent channel state: {field} differs between the terms and the channel")]
    InconsistentState {
        /// The field that differs.
        field: &'static str,
    },
    /// The locktime ladder is exhausted (or the refund too close to the tip): close the channel.
    #[error(transparent)]
    Ladder(#[from] LadderError),
    /// A transaction could not be built (e.g. the payment exceeds the balance).
    #[error(transparent)]
    Tx(#[from] TxError),
    /// The funding script could not be built.
    #[error(transparent)]
    Funding(#[from] FundingError),
}
