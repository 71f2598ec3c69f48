//! What the payee daemon's watcher and the payer's `watch` share around [`paychan::watch`]:
//! where to start following the chain, and the one question about a funding that the node is
//! asked when the blocks cannot answer it.

use bitcoin::{OutPoint, TxOut};

use paychan::chain::{Chain, ChainError, OutputStatus};
use paychan::channel::ChannelParams;
use paychan::closing::Closure;
use paychan::watch::{BlockFollower, BlockId};

/// The most blocks read in one poll, so that a watcher far behind the node shows progress.
pub const MAX_BLOCKS_PER_POLL: usize = 100;

/// Returns the follower to start with: after `position` (the blocks processed when the last
/// run stopped, as stored), or the first time after the node's best block.
///
/// # Errors
/// The node's, the first time.
pub fn start(chain: &impl Chain, position: &[BlockId]) -> Result<BlockFollower, ChainError> {
    if let Some(follower) = BlockFollower::resume(position) {
        return Ok(follower);
    }
    let tip = chain.tip()?;
    Ok(BlockFollower::new(BlockId { height: tip.height, hash: tip.hash }))
}

/// What the node says of a funding the blocks read so far cannot tell about: one that may be
/// in a block read before it was watched (a payer that broadcast its funding before sending
/// it), or one from a store that kept no funding height (written before the heights were).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstLook {
    /// Confirmed at this height, with this output (for the caller to check).
    Confirmed(u32, TxOut),
    /// Spent in a block, by this closing transaction.
    Spent(Closure),
    /// Nothing to act on: unconfirmed, unknown, or spent by something the node cannot show.
    Nothing,
}

/// Asks the node about the funding `outpoint` of the channel `params` (see [`FirstLook`]): a
/// few calls, once per channel. A spent funding is looked for in the blocks only if the
/// channel was `ready` (its funding seen confirmed once): a made-up funding never is.
///
/// # Errors
/// The node's.
pub fn first_look(
    chain: &impl Chain,
    outpoint: OutPoint,
    ready: bool,
    params: &ChannelParams,
) -> Result<FirstLook, ChainError> {
    let tip = chain.tip()?.height;
    Ok(match chain.output_status(outpoint)? {
        OutputStatus::Unspent { txout, confirmations } if confirmations > 0 => {
            FirstLook::Confirmed((tip + 1).saturating_sub(confirmations), txout)
        }
        OutputStatus::Unspent { .. } => FirstLook::Nothing,
        OutputStatus::SpentOrMissing if ready => match chain.find_spend(outpoint)? {
            Some((tx, height)) => FirstLook::Spent(Closure::read(&tx, height, params)),
            None => FirstLook::Nothing,
        },
        OutputStatus::SpentOrMissing => FirstLook::Nothing,
    })
}
