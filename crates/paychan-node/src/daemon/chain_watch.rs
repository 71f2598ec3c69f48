//! The daemon's view of the chain: it polls the node for the tip (there is no ZMQ in this
//! build), tells every channel of a new block, and tells channels waiting for their funding how
//! many confirmations it has.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{info, warn};

use super::{Shared, Slot};

use paychan::chain::{Chain, OutputStatus, TxStatus};
use paychan::channel::PayeeAction;
use paychan::closing::{ClosingKind, Closure, REORG_DEPTH};
use paychan::wire::ChannelId;

/// Polls until aborted.
pub(super) async fn run<C: Chain + Send + Sync + 'static>(shared: Arc<Shared<C>>) {
    let mut interval = tokio::time::interval(shared.config.poll_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tip = None;
    let mut node_down = false;
    loop {
        interval.tick().await;
        let tip = match shared.blocking(|chain| chain.tip()).await {
            Ok(tip) => tip,
            Err(e) => {
                // Once per outage, not once per poll.
                if !node_down {
                    warn!("cannot reach the node (payments are refused until it answers): {e}");
                    node_down = true;
                }
                continue;
            }
        };
        if std::mem::take(&mut node_down) {
            info!("the node answers again");
        }
        shared.set_tip(tip.height);
        // By hash: a reorganization may bring a new best block at the same height.
        let new_block = last_tip != Some(tip.hash);
        last_tip = Some(tip.hash);
        let tip = tip.height;
        let slots: Vec<_> = shared.slots().iter().map(|(id, s)| (*id, s.clone())).collect();
        let mut unfunded = 0;
        for (id, slot) in slots {
            let mut slot = slot.lock().await;
            if let Some(closure) = &slot.closed {
                // A reorganization may still take the close away: checked at each block until
                // it is REORG_DEPTH deep.
                if new_block && tip < closure.height.saturating_add(REORG_DEPTH) {
                    check_closure(&shared, &mut slot).await;
                }
                continue;
            }
            if slot.payee.funded().is_none() {
                if slot.since.elapsed() > shared.config.unfunded_expiry {
                    forget_unfunded(&shared, id).await;
                } else {
                    unfunded += 1;
                }
                continue;
            }
            if let Err(e) = check_funding(&shared, &mut slot).await {
                warn!("funding check: {e}");
            }
            let Some(f) = slot.payee.funded() else { continue };
            let (ready, holds) = (f.ready, f.newest.is_some() || f.settlement.is_some());
            if !ready && !holds {
                // Never ready: its funding may never confirm.
                let since = *slot.funding_since.get_or_insert(tip);
                if tip.saturating_sub(since) >= shared.config.funding_expiry {
                    forget_unconfirmed(&shared, id, since).await;
                } else {
                    unfunded += 1;
                }
                continue;
            }
            // Ready, or holding payments on a funding a reorganization took back: watched.
            match funding_spend(&shared, &slot).await {
                Ok(Spend::Unspent { confirmations }) => {
                    if ready && confirmations < slot.payee.state().min_conf {
                        funding_reorged(&shared, &mut slot, confirmations).await;
                    }
                    tip_changed(&shared, &mut slot, tip, new_block).await
                }
                Ok(Spend::InMempool) => {}
                Ok(Spend::Confirmed(closure)) => record_closure(&shared, &mut slot, closure).await,
                Err(e) => warn!(channel_id = %id, "cannot check the funding: {e}"),
            }
        }
        shared.unfunded.store(unfunded, Ordering::SeqCst);
    }
}

/// Forgets a channel whose payer never sent the funding: the payee signed nothing for it.
async fn forget_unfunded<C: Chain + Send + Sync + 'static>(shared: &Shared<C>, id: ChannelId) {
    match shared.store.delete(id).await {
        Ok(()) => {
            shared.slots().remove(&id);
            info!(channel_id = %id, "no funding came: channel forgotten");
        }
        Err(e) => warn!(channel_id = %id, "cannot forget an unfunded channel: {e}"),
    }
}

/// Forgets a channel whose funding did not confirm in time: the payee signed nothing but a
/// refund of it and took no payment on it (a made-up or double-spent funding never confirms).
async fn forget_unconfirmed<C: Chain + Send + Sync + 'static>(
    shared: &Shared<C>,
    id: ChannelId,
    since: u32,
) {
    match shared.store.delete(id).await {
        Ok(()) => {
            shared.slots().remove(&id);
            info!(channel_id = %id, since, "the funding did not confirm in time: channel forgotten");
        }
        Err(e) => warn!(channel_id = %id, "cannot forget an unconfirmed channel: {e}"),
    }
}

/// Asks the node about the funding of a channel that is not ready yet.
async fn check_funding<C: Chain + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
) -> Result<(), super::DaemonError> {
    let Some(outpoint) =
        slot.payee.funded().filter(|f| !f.ready).map(|_| ()).and(slot.payee.funding_outpoint())
    else {
        return Ok(());
    };
    let status = shared.blocking(move |chain| chain.output_status(outpoint)).await?;
    let OutputStatus::Unspent { txout, confirmations } = status else { return Ok(()) };
    let channel_id = slot.payee.state().terms.channel_id;
    let before = slot.payee.clone();
    match slot.payee.funding_confirmed(outpoint, &txout, confirmations) {
        Ok(actions) if !actions.is_empty() => {
            info!(%channel_id, confirmations, "funding confirmed; channel ready");
            if let Err(e) = shared.carry_out(slot, actions).await {
                // Not on disk: not ready yet; the next poll tries again.
                slot.payee = before;
                return Err(e.into());
            }
        }
        Ok(_) => {}
        Err(e) => warn!(%channel_id, "funding output: {e}"),
    }
    Ok(())
}

/// What spends a ready channel's funding output.
enum Spend {
    /// Nothing yet; the funding has this many confirmations (0 in the mempool).
    Unspent {
        /// The funding's confirmations.
        confirmations: u32,
    },
    /// A transaction in the mempool, not yet in a block: wait for it (if it is another's,
    /// ours could not replace it anyway, paying the same fee).
    InMempool,
    /// A transaction in a block, whoever sent it.
    Confirmed(Closure),
}

async fn funding_spend<C: Chain + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &Slot,
) -> Result<Spend, super::DaemonError> {
    let (Some(f), Some(outpoint)) = (slot.payee.funded(), slot.payee.funding_outpoint()) else {
        return Ok(Spend::InMempool);
    };
    if let OutputStatus::Unspent { confirmations, .. } =
        shared.blocking(move |chain| chain.output_status(outpoint)).await?
    {
        return Ok(Spend::Unspent { confirmations });
    }
    if let OutputStatus::Unspent { .. } =
        shared.blocking(move |chain| chain.output_status_in_blocks(outpoint)).await?
    {
        return Ok(Spend::InMempool);
    }
    let params = f.channel.params().clone();
    Ok(match shared.blocking(move |chain| chain.find_spend(outpoint)).await? {
        Some((tx, height)) => Spend::Confirmed(Closure::read(&tx, height, &params)),
        // Spent in a block that a reorganization has just taken away: look again next time.
        None => Spend::InMempool,
    })
}

/// The funding of a ready channel lost its confirmations (a reorganization took its block
/// away): no payment is taken until it is back at `min_conf`.
async fn funding_reorged<C: Chain + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
    confirmations: u32,
) {
    let channel_id = slot.payee.state().terms.channel_id;
    let before = slot.payee.clone();
    let actions = slot.payee.funding_reorged();
    warn!(
        %channel_id, confirmations,
        "the funding lost its confirmations (a reorganization): payments are refused until it is \
         back at min_conf"
    );
    if let Err(e) = shared.carry_out(slot, actions).await {
        // Not on disk: still ready; the next poll tries again.
        slot.payee = before;
        warn!(%channel_id, "cannot save: {e}");
    }
}

/// Checks that the transaction recorded as closing the channel is still in the best chain; if a
/// reorganization took it away, forgets it, and the channel is watched again (its newest state
/// broadcast again when due, if the close is not back in the mempool).
async fn check_closure<C: Chain + Send + Sync + 'static>(shared: &Shared<C>, slot: &mut Slot) {
    let Some(closure) = &slot.closed else { return };
    let (channel_id, txid) = (slot.payee.state().terms.channel_id, closure.txid);
    match shared.blocking(move |chain| chain.tx_status(txid)).await {
        Ok(TxStatus::Confirmed(_)) => {}
        Ok(status) => match shared.store.forget_closure(channel_id).await {
            Ok(()) => {
                warn!(
                    %channel_id, %txid, ?status,
                    "the closing transaction left the best chain (a reorganization): watching \
                     the channel again"
                );
                slot.closed = None;
            }
            Err(e) => warn!(%channel_id, "cannot forget the closing transaction: {e}"),
        },
        Err(e) => warn!(%channel_id, "cannot check the closing transaction: {e}"),
    }
}

/// Records the transaction that closed the channel: nothing more to watch.
async fn record_closure<C: Chain + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
    closure: Closure,
) {
    let channel_id = slot.payee.state().terms.channel_id;
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
        // Still known in memory; the next start finds the spend again.
        warn!(%channel_id, "cannot record the closing transaction: {e}");
    }
}

/// Carries out what the tip calls for. Broadcasts go out at every poll until something spends
/// the funding (a dropped broadcast is retried within a poll interval); messages to the payer
/// (`shutdown`) only once per block.
async fn tip_changed<C: Chain + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
    tip: u32,
    new_block: bool,
) {
    let channel_id = slot.payee.state().terms.channel_id;
    match slot.payee.tip_changed(tip) {
        Ok(mut actions) => {
            actions.retain(|a| new_block || matches!(a, PayeeAction::Broadcast(_)));
            if let Err(e) = shared.carry_out(slot, actions).await {
                warn!(%channel_id, "{e}");
            }
        }
        Err(e) => warn!(%channel_id, "{e}"),
    }
}
