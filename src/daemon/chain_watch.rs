//! The daemon's view of the chain: it polls the node for the tip (there is no ZMQ in this
//! build), tells every channel of a new block, and tells channels waiting for their funding how
//! many confirmations it has.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{info, warn};

use super::{Shared, Slot};
use bitcoin::Txid;

use crate::chain::{Chain, OutputStatus, TxStatus};
use crate::wire::ChannelId;

/// Polls until aborted.
pub(super) async fn run<C: Chain + Send + Sync + 'static>(shared: Arc<Shared<C>>) {
    let mut interval = tokio::time::interval(shared.config.poll_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tip = None;
    let mut node_down = false;
    loop {
        interval.tick().await;
        let tip = match shared.blocking(|chain| chain.tip()).await {
            Ok(tip) => tip.height,
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
        shared.set_tip(tip);
        let new_block = last_tip != Some(tip);
        last_tip = Some(tip);
        let slots: Vec<_> = shared.slots().iter().map(|(id, s)| (*id, s.clone())).collect();
        let mut unfunded = 0;
        for (id, slot) in slots {
            let mut slot = slot.lock().await;
            if slot.closed_on_chain {
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
            if new_block && slot.payee.funded().is_some_and(|f| f.ready) {
                match funding_spend(&shared, &slot).await {
                    Ok(Spend::None) => tip_changed(&shared, &mut slot, tip).await,
                    Ok(Spend::InMempool) => {}
                    Ok(Spend::OursConfirmed(txid)) => {
                        info!(channel_id = %id, %txid, "closed on chain");
                        slot.closed_on_chain = true;
                    }
                    Ok(Spend::Other) => {
                        warn!(
                            channel_id = %id,
                            "funding spent by a transaction other than the payee's newest \
                             (the payer's refund or an older commitment): closed on chain"
                        );
                        slot.closed_on_chain = true;
                    }
                    Err(e) => warn!(channel_id = %id, "cannot check the funding: {e}"),
                }
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
    /// Nothing yet.
    None,
    /// A transaction in the mempool, not yet in a block: wait for it (if it is another's,
    /// ours could not replace it anyway, paying the same fee).
    InMempool,
    /// The same, confirmed.
    OursConfirmed(Txid),
    /// Something else, in a block: the payer's refund or an older commitment.
    Other,
}

async fn funding_spend<C: Chain + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &Slot,
) -> Result<Spend, super::DaemonError> {
    let (Some(f), Some(outpoint)) = (slot.payee.funded(), slot.payee.funding_outpoint()) else {
        return Ok(Spend::None);
    };
    let status = shared.blocking(move |chain| chain.output_status(outpoint)).await?;
    if let OutputStatus::Unspent { .. } = status {
        return Ok(Spend::None);
    }
    let ours = [f.settlement_tx().ok().flatten(), f.newest_commitment().ok().flatten()];
    for txid in ours.into_iter().flatten().map(|tx| tx.compute_txid()) {
        match shared.blocking(move |chain| chain.tx_status(txid)).await? {
            TxStatus::Confirmed(_) => return Ok(Spend::OursConfirmed(txid)),
            TxStatus::InMempool => return Ok(Spend::InMempool),
            TxStatus::Unknown => {}
        }
    }
    match shared.blocking(move |chain| chain.output_status_in_blocks(outpoint)).await? {
        OutputStatus::SpentOrMissing => Ok(Spend::Other),
        OutputStatus::Unspent { .. } => Ok(Spend::InMempool),
    }
}

async fn tip_changed<C: Chain + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
    tip: u32,
) {
    let channel_id = slot.payee.state().terms.channel_id;
    match slot.payee.tip_changed(tip) {
        Ok(actions) => {
            if let Err(e) = shared.carry_out(slot, actions).await {
                warn!(%channel_id, "{e}");
            }
        }
        Err(e) => warn!(%channel_id, "{e}"),
    }
}
