//! The daemon's view of the chain, block by block (there is no ZMQ in this build: it polls the
//! node for its best block's hash).
//!
//! Each poll costs one node call when no block came, and three per new block however many
//! channels the daemon serves: [`paychan::watch::follow`] reads each block once, and the
//! [`FundingWatch`](paychan::watch::FundingWatch) in [`Shared`] turns it into channel events through its index of funding outpoints (handled in
//! [`super::chain_events`]). The blocks processed are stored after what they did, so a restart
//! replays from there and asks nothing per channel. Besides the blocks, the node is asked:
//! - once per channel newly funded, about its funding (a payer may have broadcast it early);
//! - once per poll, while some channels are due to close, which of their fundings a
//!   transaction in the mempool spends (one call for all of them), and the newest state of each
//!   of the others is broadcast again.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::{chain_events, Shared};

use crate::fee_bump::{Bumps, Close};

use crate::follow;
use paychan::chain::Chain;
use paychan::channel::PayeeAction;
use paychan::closing::REORG_DEPTH;
use paychan::watch::{BlockEvent, BlockFollower, BlockId, BlockSource, FollowError, Progress};
use paychan::wire::ChannelId;

/// The longest time between two looks at every channel for expiry, without a block.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// The name the daemon's chain position is stored under.
pub(super) const WATCHER: &str = "payee";

/// What the watcher keeps between polls.
pub(super) struct Watcher {
    follower: BlockFollower,
    /// Channels with a commitment, settlement or refund to broadcast (as of the last block):
    /// broadcast at each poll until their funding is spent.
    due: BTreeSet<ChannelId>,
    /// A save failed: the position is not stored again in this run, so that a restart replays
    /// the blocks whose effects may be missing.
    stuck: bool,
    node_down: bool,
    /// Whether the last poll brought a block.
    new_block: bool,
    /// When channels were last looked at for expiry.
    last_expire: Instant,
    /// The closes in the mempool, and which were bumped.
    bumps: Bumps,
}

impl Watcher {
    pub(super) fn tip(&self) -> u32 {
        self.follower.tip().height
    }
}

/// In a store several front ends share: waits until this front end takes the watcher's lease
/// (one front end at a time; another takes it over within a second or two of its holder's
/// death), then follows the chain from the position the last leader stored, every channel
/// brought up to date first.
pub(super) async fn lead_then_run<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: Arc<Shared<C>>,
) {
    let mut waited = false;
    let lease = loop {
        match shared.store.try_lead(WATCHER).await {
            Ok(Some(lease)) => break lease,
            Ok(None) if !waited => {
                info!("another front end watches the chain; taking over if it stops");
                waited = true;
            }
            Ok(None) => {}
            Err(e) => warn!("cannot ask for the watcher's lease: {e}"),
        }
        tokio::time::sleep(LEASE_RETRY).await;
    };
    shared.refresh_all().await;
    let position = match shared.store.chain_position(WATCHER).await {
        Ok(position) => position,
        Err(e) => {
            error!("cannot read the chain position; not watching: {e}");
            return;
        }
    };
    info!(blocks = position.len(), "leading the chain watcher");
    run(shared, position).await;
    drop(lease);
}

/// How often a front end that does not watch the chain asks for the watcher's lease.
const LEASE_RETRY: Duration = Duration::from_secs(1);

/// Follows the chain until aborted, from `position` (the blocks processed when the last run
/// stopped; empty the first time).
pub(super) async fn run<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: Arc<Shared<C>>,
    position: Vec<BlockId>,
) {
    let mut interval = tokio::time::interval(shared.config.poll_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut w = loop {
        interval.tick().await;
        let position = position.clone();
        match shared.blocking(move |chain| follow::start(chain, &position)).await {
            Ok(follower) => {
                let (due, stuck, node_down, new_block) = (BTreeSet::new(), false, false, true);
                let last_expire = Instant::now();
                let bumps = Bumps::default();
                break Watcher { follower, due, stuck, node_down, new_block, last_expire, bumps };
            }
            Err(e) => warn!("cannot start following the chain: {e}"),
        }
    };
    info!(height = w.tip(), "following the chain");
    // The wallet catches up on its own thread (a data directory of the previous release reads
    // the chain from genesis once): a bump meanwhile finds it busy and waits for a later poll.
    let (wallet, chain) = (Arc::clone(&shared.wallet), Arc::clone(&shared.chain));
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut wallet = wallet.lock().unwrap_or_else(|e| e.into_inner());
        match wallet.sync(&*chain) {
            Ok(synced) => {
                let ms = started.elapsed().as_millis();
                info!(height = synced.tip, blocks = synced.connected, ms, "wallet synced");
            }
            Err(e) => warn!("the wallet cannot follow the chain yet (it tries again): {e}"),
        }
    });
    loop {
        w.new_block = false;
        chain_events::check_fresh(&shared, &mut w).await;
        let follower = w.follower.clone();
        let followed = shared
            .blocking(move |chain| {
                let mut follower = follower;
                Ok(paychan::watch::follow(chain, &mut follower, follow::MAX_BLOCKS_PER_POLL)
                    .map(|p| (follower, p)))
            })
            .await;
        match followed {
            Ok(Ok((follower, progress))) => {
                if std::mem::take(&mut w.node_down) {
                    info!("the node answers again");
                }
                blocks(&shared, &mut w, follower, progress).await;
            }
            // Once per outage, not once per poll.
            Ok(Err(FollowError::Chain(e))) | Err(e) => {
                if !std::mem::replace(&mut w.node_down, true) {
                    warn!("cannot reach the node (payments are refused until it answers): {e}");
                }
            }
            Ok(Err(e)) => {
                if !std::mem::replace(&mut w.node_down, true) {
                    error!("cannot follow the chain (payments are refused): {e}");
                }
            }
        }
        // A walk over every channel: at each block, and otherwise often enough for the
        // unfunded expiry (a time, not a height), not at every poll.
        let every = (shared.config.unfunded_expiry / 4).min(EXPIRE_EVERY);
        if w.new_block || w.last_expire.elapsed() >= every {
            expire(&shared, w.tip()).await;
            w.last_expire = Instant::now();
        }
        broadcast_due(&shared, &mut w).await;
        interval.tick().await;
    }
}

/// Applies what one [`paychan::watch::follow`] did, then stores the position.
async fn blocks<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Arc<Shared<C>>,
    w: &mut Watcher,
    follower: BlockFollower,
    progress: Progress,
) {
    let Progress { events: block_events, at_best } = progress;
    let new_blocks = !block_events.is_empty();
    w.new_block = new_blocks;
    // Other front ends take payments too: act on the channels' newest states.
    if new_blocks && shared.store.shared() {
        shared.refresh_all().await;
    }
    let mut saved = true;
    for event in &block_events {
        let tip = match event {
            BlockEvent::Connected { id, .. } => id.height,
            BlockEvent::Disconnected { id } => id.height.saturating_sub(1),
        };
        let events = shared.funding_watch().apply(event);
        if !events.is_empty() {
            saved &= chain_events::apply_block(shared, events, tip).await;
        }
    }
    w.follower = follower;
    let tip = w.tip();
    if new_blocks {
        feed_wallet(shared, block_events);
        saved &= tip_changed(shared, w, tip).await;
        if !saved && !std::mem::replace(&mut w.stuck, true) {
            warn!("a channel could not be saved: the chain position is no longer stored, so a restart replays these blocks");
        }
        if !w.stuck {
            if let Err(e) = shared.store.save_chain_position(WATCHER, w.follower.blocks()).await {
                warn!("cannot store the chain position: {e}");
            }
        }
    }
    if at_best {
        shared.set_tip(tip);
    }
}

/// Hands the blocks just read to the payee's wallet, so that it follows the chain without
/// reading them again, and a bump finds it up to date. A wallet that is not at the block below
/// (the daemon just started) refuses them, and then syncs on this blocking thread.
fn feed_wallet<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Arc<Shared<C>>,
    events: Vec<BlockEvent>,
) {
    // Taken, not copied: up to a poll's 100 blocks.
    let blocks: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            BlockEvent::Connected { id, block } => Some((block, id.height)),
            BlockEvent::Disconnected { .. } => None,
        })
        .collect();
    let (wallet, chain) = (Arc::clone(&shared.wallet), Arc::clone(&shared.chain));
    tokio::task::spawn_blocking(move || {
        let mut wallet = wallet.lock().unwrap_or_else(|e| e.into_inner());
        let fed = blocks.iter().all(|(block, height)| wallet.apply_block(block, *height).is_ok());
        let saved = match fed {
            true => wallet.save(),
            // Behind (just started, or a node outage): it reads what it lacks, here rather
            // than in the middle of a bump.
            false => wallet.sync(&*chain).map(|_| ()),
        };
        if let Err(e) = saved {
            warn!("the wallet cannot follow the chain (bumps will try again): {e}");
        }
    });
}

/// Tells every channel of the new tip: a channel maturing may become ready, a close deep
/// enough is no longer watched, what a channel holds becomes due. Returns whether every save
/// succeeded.
async fn tip_changed<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Shared<C>,
    w: &mut Watcher,
    tip: u32,
) -> bool {
    let mut saved = true;
    for (id, slot) in shared.slot_list() {
        let mut slot = slot.lock().await;
        if let Some(closure) = &slot.closed {
            // A reorganization may still take the close away until it is REORG_DEPTH deep.
            if tip >= closure.height.saturating_add(REORG_DEPTH) {
                shared.funding_watch().unwatch(id);
            }
            continue;
        }
        let Some(f) = slot.payee.funded() else { continue };
        if !f.ready {
            saved &= chain_events::maturing(shared, &mut slot, tip).await;
        }
        match slot.payee.tip_changed(tip) {
            Ok(actions) => {
                let due = actions.iter().any(|a| matches!(a, PayeeAction::Broadcast(_)));
                if due {
                    w.due.insert(id);
                }
                // Broadcasts go out in `broadcast_due`, once the mempool is checked.
                let rest = actions.into_iter().filter(|a| !matches!(a, PayeeAction::Broadcast(_)));
                if let Err(e) = shared.carry_out(&mut slot, rest.collect()).await {
                    warn!(channel_id = %id, "{e}");
                    saved = false;
                }
            }
            Err(e) => warn!(channel_id = %id, "{e}"),
        }
    }
    saved
}

/// Forgets the channels whose funding never came or never confirmed in time, and counts the
/// others still waiting (against `max_unfunded`).
async fn expire<C: Chain + BlockSource + Send + Sync + 'static>(shared: &Shared<C>, tip: u32) {
    let mut waiting = 0;
    for (id, slot) in shared.slot_list() {
        let mut slot = slot.lock().await;
        if slot.closed.is_some() {
            continue;
        }
        // Another front end may have taken its funding since this copy was read.
        let waiting_here = slot.payee.funded().is_none_or(|f| !f.ready);
        if waiting_here && shared.refresh(&mut slot).await {
            waiting += 1;
            continue;
        }
        let Some(f) = slot.payee.funded() else {
            if slot.since.elapsed() > shared.config.unfunded_expiry {
                forget(shared, id, "no funding came").await;
            } else {
                waiting += 1;
            }
            continue;
        };
        if f.ready || f.newest.is_some() || f.settlement.is_some() {
            continue;
        }
        // Never ready: its funding may never confirm.
        let since = *slot.funding_since.get_or_insert(tip);
        if tip.saturating_sub(since) >= shared.config.funding_expiry {
            forget(shared, id, "the funding did not confirm in time").await;
        } else {
            waiting += 1;
        }
    }
    shared.unfunded.store(waiting, Ordering::SeqCst);
}

/// Forgets a channel on which the payee signed nothing but a refund (if anything) and took no
/// payment.
async fn forget<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Shared<C>,
    id: ChannelId,
    why: &str,
) {
    match shared.store.delete(id).await {
        Ok(()) => {
            shared.slots().remove(&id);
            shared.funding_watch().unwatch(id);
            info!(channel_id = %id, "{why}: channel forgotten");
        }
        Err(e) => warn!(channel_id = %id, "cannot forget a channel ({why}): {e}"),
    }
}

/// Broadcasts the newest state of each channel due to close, unless a transaction in the
/// mempool already spends its funding (a close on its way: ours, or the payer's).
async fn broadcast_due<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Shared<C>,
    w: &mut Watcher,
) {
    let mut due = Vec::new();
    for id in std::mem::take(&mut w.due) {
        let Some(slot) = shared.slot(id) else { continue };
        let slot = slot.lock().await;
        if let (None, Some(outpoint)) = (&slot.closed, slot.payee.funding_outpoint()) {
            due.push((id, outpoint));
        }
    }
    if due.is_empty() {
        w.bumps.end_poll();
        return;
    }
    let outpoints: Vec<_> = due.iter().map(|(_, o)| *o).collect();
    let spends = match shared.blocking(move |chain| chain.mempool_spends(&outpoints)).await {
        Ok(spends) => spends,
        Err(e) => {
            warn!("cannot check the mempool: {e}");
            w.due.extend(due.iter().map(|(id, _)| *id));
            return;
        }
    };
    let tip = w.tip();
    for ((id, _), spend) in due.into_iter().zip(spends) {
        w.due.insert(id);
        let Some(slot) = shared.slot(id) else { continue };
        // What to broadcast, read under the channel's lock; the node is asked without it.
        let closes: Vec<Close> = {
            let slot = slot.lock().await;
            let terms = &slot.payee.state().terms;
            let (capacity, target_blocks) = (terms.capacity, terms.ladder.step());
            let actions = slot.payee.tip_changed(tip).unwrap_or_default();
            actions
                .into_iter()
                .filter_map(|a| match a {
                    PayeeAction::Broadcast(tx) => Some(Close { tx, capacity, target_blocks }),
                    _ => None,
                })
                .collect()
        };
        for close in closes {
            let txid = close.tx.compute_txid();
            let Some(stuck) = w.bumps.poll(txid, spend, tip) else { continue };
            if shared.close(id, close, stuck, false).await.unwrap_or(false) {
                w.bumps.bumped(txid);
            }
        }
    }
    w.bumps.end_poll();
}
