//! The daemon's view of the chain: it polls the node for the tip (there is no ZMQ in this
//! build), tells every channel of a new block, and tells channels waiting for their funding how
//! many confirmations it has.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{info, warn};

use super::{Shared, Slot};
use crate::chain::{Chain, OutputStatus, TxStatus};
use crate::wire::ChannelId;

/// Polls until aborted.
pub(super) async fn run<C: Chain + Send + Sync + 'static>(shared: Arc<Shared<C>>) {
    let mut interval = tokio::time::interval(shared.config.poll_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tip = None;
    loop {
        interval.tick().await;
        let tip = match shared.blocking(|chain| chain.tip()).await {
            Ok(tip) => tip.height,
            Err(e) => {
                warn!("cannot reach the node: {e}");
                continue;
            }
        };
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
            if new_block {
                if let Err(e) = check_settled(&shared, &mut slot).await {
                    warn!("settlement check: {e}");
                }
                tip_changed(&shared, &mut slot, tip).await;
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

/// Marks a settled channel closed once its settlement is confirmed: nothing more to watch.
async fn check_settled<C: Chain + Send + Sync + 'static>(
    shared: &Shared<C>,
    slot: &mut Slot,
) -> Result<(), super::DaemonError> {
    let settlement = match slot.payee.funded().map(|f| f.settlement_tx()) {
        Some(Ok(Some(tx))) => tx.compute_txid(),
        _ => return Ok(()),
    };
    if let TxStatus::Confirmed(_) = shared.blocking(move |c| c.tx_status(settlement)).await? {
        let channel_id = slot.payee.state().terms.channel_id;
        info!(%channel_id, %settlement, "settlement confirmed: channel closed on chain");
        slot.closed_on_chain = true;
    }
    Ok(())
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
