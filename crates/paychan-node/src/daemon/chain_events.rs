//! What the chain's events do to the daemon's channels: a funding confirmed or taken back by a
//! reorganization, a funding spent (the channel closed) or that spend taken back.
//!
//! Each handler saves what changed before it returns, and returns whether it could: the
//! watcher stores its chain position only after every save of the blocks before it.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{info, warn};

use super::chain_watch::Watcher;
use super::{Shared, Slot};
use crate::follow::{first_look, FirstLook};

use paychan::chain::Chain;
use paychan::closing::{ClosingKind, Closure};
use paychan::watch::{BlockSource, WatchEvent};
use paychan::wire::ChannelId;

/// Applies what one block did to the channels, with `tip` the height it leaves the chain at:
/// each channel's events in order, the channels at once (so that their saves share commits).
/// Returns whether every save succeeded.
pub(super) async fn apply_block<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Arc<Shared<C>>,
    events: Vec<WatchEvent>,
    tip: u32,
) -> bool {
    let mut by_channel: HashMap<ChannelId, Vec<WatchEvent>> = HashMap::new();
    for event in events {
        by_channel.entry(event.channel_id()).or_default().push(event);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (id, events) in by_channel {
        let shared = Arc::clone(shared);
        tasks.spawn(async move {
            let Some(slot) = shared.slot(id) else { return true };
            let mut slot = slot.lock().await;
            let mut saved = true;
            for event in events {
                saved &= apply(&shared, &mut slot, event, tip).await;
            }
            saved
        });
    }
    let mut saved = true;
    while let Some(done) = tasks.join_next().await {
        saved &= done.unwrap_or(false);
    }
    saved
}

/// Applies `event` to its channel. Returns whether every save succeeded.
async fn apply<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
    event: WatchEvent,
    tip: u32,
) -> bool {
    match event {
        WatchEvent::FundingConfirmed { height, txout, .. } => {
            funding_confirmed(shared, slot, height, &txout, tip).await
        }
        WatchEvent::FundingReorged { .. } => funding_reorged(shared, slot).await,
        WatchEvent::FundingSpent { height, tx, .. } => {
            let Some(f) = slot.payee.funded() else { return true };
            let closure = Closure::read(&tx, height, f.channel.params());
            record_closure(shared, slot, closure).await
        }
        WatchEvent::SpendReorged { .. } => closure_reorged(shared, slot).await,
    }
}

/// Asks the node about the fundings of channels just funded (a payer may have broadcast its
/// funding before sending it, and it may be in a block the watcher read already) or loaded
/// without a funding height (a data directory from before the heights were stored): one call
/// per such channel, once.
pub(super) async fn check_fresh<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Shared<C>,
    w: &mut Watcher,
) {
    let fresh = std::mem::take(&mut *shared.fresh());
    for id in fresh {
        let Some(slot) = shared.slot(id) else { continue };
        let mut slot = slot.lock().await;
        let Some(f) = slot.payee.funded() else { continue };
        let (outpoint, ready, params) =
            (f.channel.params().funding_outpoint, f.ready, f.channel.params().clone());
        let answer =
            shared.blocking(move |chain| first_look(chain, outpoint, ready, &params)).await;
        let saved = match answer {
            Ok(FirstLook::Confirmed(height, txout)) => {
                let (_, spent) = shared.funding_watch().heights(id).unwrap_or_default();
                shared.funding_watch().watch(id, outpoint, Some(height), spent);
                funding_confirmed(shared, &mut slot, height, &txout, w.tip()).await
            }
            Ok(FirstLook::Spent(closure)) => {
                let height = Some(closure.height);
                let (confirmed, _) = shared.funding_watch().heights(id).unwrap_or_default();
                shared.funding_watch().watch(id, outpoint, confirmed, height);
                record_closure(shared, &mut slot, closure).await
            }
            Ok(FirstLook::Nothing) => true,
            Err(e) => {
                warn!(channel_id = %id, "cannot check the funding: {e}");
                shared.fresh().push(id);
                true
            }
        };
        if !saved {
            shared.fresh().push(id);
        }
    }
}

/// The funding is in the block at `height`: recorded, and the channel ready if that is
/// `min_conf` deep at `tip`. A funding output that is not the channel's (a made-up funding) is
/// no longer watched: the channel expires.
async fn funding_confirmed<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
    height: u32,
    txout: &bitcoin::TxOut,
    tip: u32,
) -> bool {
    let channel_id = slot.payee.state().terms.channel_id;
    let Some(outpoint) = slot.payee.funding_outpoint() else { return true };
    let confirmations = (tip + 1).saturating_sub(height);
    let before = slot.payee.clone();
    let actions = match slot.payee.funding_confirmed(outpoint, txout, confirmations) {
        Ok(actions) => actions,
        Err(e) => {
            warn!(%channel_id, "funding output: {e}; no longer watched");
            shared.funding_watch().unwatch(channel_id);
            return true;
        }
    };
    if let Err(e) = shared.store.record_funding_height(channel_id, Some(height)).await {
        warn!(%channel_id, "cannot record the funding's height: {e}");
        slot.payee = before;
        return false;
    }
    if actions.is_empty() {
        return true;
    }
    info!(%channel_id, confirmations, "funding confirmed; channel ready");
    if let Err(e) = shared.carry_out(slot, actions).await {
        // Not on disk: not ready yet; the next block tries again.
        warn!(%channel_id, "cannot save: {e}");
        slot.payee = before;
        return false;
    }
    true
}

/// A new block deepened the confirmed funding of a channel not ready yet.
pub(super) async fn maturing<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
    tip: u32,
) -> bool {
    let channel_id = slot.payee.state().terms.channel_id;
    let Some((Some(height), _)) = shared.funding_watch().heights(channel_id) else { return true };
    let Some(f) = slot.payee.funded() else { return true };
    // The output the block held was checked when it confirmed.
    let txout = bitcoin::TxOut {
        value: f.channel.params().terms.capacity,
        script_pubkey: f.channel.builder().funding().script_pubkey().clone(),
    };
    funding_confirmed(shared, slot, height, &txout, tip).await
}

/// The funding lost its block (a reorganization): no payment is taken until it is back at
/// `min_conf`.
async fn funding_reorged<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
) -> bool {
    let channel_id = slot.payee.state().terms.channel_id;
    let before = slot.payee.clone();
    let actions = slot.payee.funding_reorged();
    if !actions.is_empty() {
        warn!(
            %channel_id,
            "the funding lost its confirmations (a reorganization): payments are refused until \
             it is back at min_conf"
        );
    }
    let saved = match shared.carry_out(slot, actions).await {
        Ok(()) => shared.store.record_funding_height(channel_id, None).await,
        Err(e) => Err(e),
    };
    if let Err(e) = saved {
        // Not on disk: a restart replays the block.
        slot.payee = before;
        warn!(%channel_id, "cannot save: {e}");
        return false;
    }
    true
}

/// The closing transaction left the best chain (a reorganization): forgotten, and the channel
/// watched again (its newest state broadcast again when due, unless the close is back in the
/// mempool).
async fn closure_reorged<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
) -> bool {
    let Some(closure) = &slot.closed else { return true };
    let (channel_id, txid) = (slot.payee.state().terms.channel_id, closure.txid);
    if let Err(e) = shared.store.forget_closure(channel_id).await {
        warn!(%channel_id, "cannot forget the closing transaction: {e}");
        return false;
    }
    warn!(
        %channel_id, %txid,
        "the closing transaction left the best chain (a reorganization): watching the channel \
         again"
    );
    slot.closed = None;
    true
}

/// Records the transaction that closed the channel: nothing more to do but watch it sink in.
async fn record_closure<C: Chain + BlockSource + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
    closure: Closure,
) -> bool {
    let channel_id: ChannelId = slot.payee.state().terms.channel_id;
    // The payee's own newest state: its settlement, or else its newest payment's commitment.
    let ours = slot.payee.funded().is_some_and(|f| match closure.kind {
        ClosingKind::Settlement => f.settlement.is_some(),
        ClosingKind::Commitment { .. } => {
            f.settlement.is_none() && f.newest_txid().ok().flatten() == Some(closure.txid)
        }
        ClosingKind::Refund | ClosingKind::Unknown => false,
    });
    let (txid, kind, height) = (closure.txid, closure.kind.name(), closure.height);
    let payee_sat = closure.payee_amount.to_sat();
    if ours {
        info!(%channel_id, %txid, kind, height, payee_sat, "closed on chain");
    } else {
        warn!(
            %channel_id, %txid, kind, height, payee_sat,
            "closed on chain by a transaction other than the payee's newest"
        );
    }
    slot.closed = Some(closure);
    if let Err(e) = shared.persist(slot).await {
        // Known in memory; a restart replays the block.
        warn!(%channel_id, "cannot record the closing transaction: {e}");
        return false;
    }
    true
}
