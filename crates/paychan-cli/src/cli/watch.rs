//! `watch`: the payer's watcher. It polls the node (no ZMQ in this build) and, for each funded
//! payer channel not yet closed on chain, broadcasts its way out once it is final (the newest
//! checkpoint, or the refund at R without one), then records the transaction that closed the
//! channel, whoever sent it.
//!
//! It stops on Ctrl-C or SIGTERM (printing what it saw), and once every channel it watches is
//! closed. It takes no lock and writes only the closure column (`Store::record_closure`), so it can run
//! next to `pay` and `close`; each poll re-reads the channels, so it sees their newest state.

use paychan_node::blocking;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bitcoin::{OutPoint, Transaction, Txid};
use serde_json::json;
use tracing::warn;

use super::args::{Global, WatchArgs};
use super::channels::closure_json;
use super::{connect_node, open_datadir, CliError, Output};
use paychan::chain::{Chain, OutputStatus, TxStatus};
use paychan::channel::{Payer, PayerAction};
use paychan::closing::{Closure, REORG_DEPTH};
use paychan::store::{ChannelState, Store};
use paychan::wire::ChannelId;
use paychan_bitcoind::RpcChain;
use paychan_node::client::broadcast;
use paychan_node::datadir::DataDir;

pub(super) async fn watch(
    g: &Global,
    a: &WatchArgs,
    announce: &(dyn Fn(&Output) + Sync),
) -> Result<Output, CliError> {
    let mut datadir = blocking(|| open_datadir(g))?;
    if let Some(id) = a.channel {
        let record = blocking(|| datadir.store.channel(id))?.ok_or(CliError::UnknownChannel(id))?;
        if !matches!(record.state, ChannelState::Payer(_)) {
            return Err(CliError::NotApplicable(format!(
                "channel {id} is one we are paid on: `paychan serve` watches those"
            )));
        }
    }
    let chain = blocking(|| connect_node(g))?;
    let poll = Duration::from_millis(a.poll_ms.max(10));
    let mut watcher = Watcher::default();
    let mut first = true;
    // Made once: a signal that comes while a poll runs still stops the next wait.
    let stop = super::stop_signal();
    tokio::pin!(stop);
    loop {
        let watched = blocking(|| watched(&mut datadir, &chain, a.channel, announce))?;
        if first {
            first = false;
            let channels: Vec<_> = watched
                .iter()
                .map(|w| {
                    let exit = w.payer.funded().map(|f| f.funded.checkpoint_locktime());
                    json!({
                        "channel_id": w.id.to_string(),
                        "refund_locktime": w.refund_locktime,
                        "checkpoint_locktime": exit,
                    })
                })
                .collect();
            let text = format!("watching {} channel(s); Ctrl-C stops\n", channels.len());
            announce(&Output { json: json!({ "event": "watching", "channels": channels }), text });
        }
        if watched.is_empty() {
            break;
        }
        match blocking(|| chain.tip()) {
            Ok(tip) => blocking(|| {
                for w in &watched {
                    if let Err(e) = watcher.check(&mut datadir, &chain, w, tip.height, announce) {
                        warn!(channel_id = %w.id, "{e}");
                    }
                }
            }),
            Err(e) => warn!("cannot reach the node: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = &mut stop => break,
        }
    }
    let closed: Vec<_> = watcher.closed.iter().map(|(id, c)| channel_closure(*id, c)).collect();
    Ok(Output {
        json: json!({ "event": "done", "closed": closed }),
        text: format!("{} channel(s) closed while watching\n", closed.len()),
    })
}

/// A payer channel to watch, as stored now.
struct Watched {
    id: ChannelId,
    payer: Payer,
    outpoint: OutPoint,
    ready: bool,
    refund_locktime: u32,
}

/// The funded payer channels (or the one asked for) not recorded as closed, or whose recorded
/// close a reorganization took out of the best chain (forgotten here, and announced).
fn watched(
    datadir: &mut DataDir,
    chain: &RpcChain,
    only: Option<ChannelId>,
    announce: &(dyn Fn(&Output) + Sync),
) -> Result<Vec<Watched>, CliError> {
    let mut out = Vec::new();
    let mut tip = None;
    for record in datadir.store.channels()? {
        let ChannelState::Payer(state) = record.state else { continue };
        let id = state.terms.channel_id;
        if only.is_some_and(|o| o != id) {
            continue;
        }
        if let Some(c) = &record.closed {
            let tip = match tip {
                Some(tip) => tip,
                None => *tip.insert(chain.tip()?.height),
            };
            if tip >= c.height.saturating_add(REORG_DEPTH)
                || matches!(chain.tx_status(c.txid)?, TxStatus::Confirmed(_))
            {
                continue;
            }
            datadir.store.forget_closure(id)?;
            announce(&Output {
                json: json!({
                    "event": "reorged", "channel_id": id.to_string(), "txid": c.txid.to_string(),
                }),
                text: format!(
                    "channel {id}: its closing transaction {} left the best chain; watching it \
                     again\n",
                    c.txid
                ),
            });
        }
        let payer = Payer::restore(datadir.wallet.channel_signer(record.key_index)?, state)?;
        let Some(f) = payer.funded() else { continue };
        let outpoint = f.funded.channel.params().funding_outpoint;
        let (ready, refund_locktime) = (f.funded.ready, f.funded.channel.ladder().refund());
        out.push(Watched { id, payer, outpoint, ready, refund_locktime });
    }
    Ok(out)
}

/// What the watcher remembers between polls.
#[derive(Default)]
struct Watcher {
    /// Broadcasts already announced (each is repeated every poll until something confirms).
    announced: HashSet<Txid>,
    /// Channels whose funding this run saw confirmed and unspent: a spend is then worth
    /// looking for in the blocks since.
    seen_confirmed: HashSet<ChannelId>,
    closed: HashMap<ChannelId, Closure>,
}

impl Watcher {
    fn check(
        &mut self,
        datadir: &mut DataDir,
        chain: &RpcChain,
        w: &Watched,
        tip: u32,
        announce: &(dyn Fn(&Output) + Sync),
    ) -> Result<(), CliError> {
        if let OutputStatus::Unspent { confirmations, .. } = chain.output_status(w.outpoint)? {
            if confirmations > 0 {
                self.seen_confirmed.insert(w.id);
            }
            for tx in due(&w.payer, tip)? {
                let kind = match tx.lock_time.to_consensus_u32() {
                    0 => "settlement",
                    l if l == w.refund_locktime => "refund",
                    _ => "checkpoint",
                };
                let txid = broadcast(chain, &tx)?;
                if self.announced.insert(txid) {
                    announce(&Output {
                        json: json!({
                            "event": "broadcast", "channel_id": w.id.to_string(), "kind": kind,
                            "txid": txid.to_string(), "tip": tip,
                        }),
                        text: format!("channel {}: {kind} {txid} broadcast at tip {tip}\n", w.id),
                    });
                }
            }
            return Ok(());
        }
        // Spent, maybe only in the mempool: wait for a block. A funding never seen confirmed
        // (no `channel_ready`) is not looked for in the blocks: it may never have been mined.
        if !(w.ready || self.seen_confirmed.contains(&w.id))
            || chain.output_status_in_blocks(w.outpoint)? != OutputStatus::SpentOrMissing
        {
            return Ok(());
        }
        let Some((tx, height)) = chain.find_spend(w.outpoint)? else { return Ok(()) };
        let params = w.payer.funded().expect("watched channels are funded").funded.channel.params();
        let closure = Closure::read(&tx, height, params);
        datadir.store.record_closure(w.id, &closure)?;
        let c = &closure;
        announce(&Output {
            json: json!({ "event": "closed", "channel_id": w.id.to_string(), "closing": closure_json(c) }),
            text: format!(
                "channel {}: closed by the {} {} at height {} (payer {} sat, payee {} sat)\n",
                w.id,
                c.kind.name(),
                c.txid,
                c.height,
                c.payer_amount.to_sat(),
                c.payee_amount.to_sat()
            ),
        });
        self.closed.insert(w.id, closure);
        Ok(())
    }
}

/// What the payer broadcasts now on an unspent funding: a settlement the payee has not (it
/// may have vanished after signing), or its newest checkpoint once final (the refund at R
/// without one).
fn due(payer: &Payer, tip: u32) -> Result<Vec<Transaction>, CliError> {
    if let Some(settlement) =
        payer.funded().map(|f| f.funded.settlement_tx()).transpose()?.flatten()
    {
        return Ok(vec![settlement]);
    }
    let actions = payer.tip_changed(tip)?;
    Ok(actions
        .into_iter()
        .filter_map(|a| match a {
            PayerAction::Broadcast(tx) => Some(tx),
            _ => None,
        })
        .collect())
}

fn channel_closure(id: ChannelId, c: &Closure) -> serde_json::Value {
    json!({ "channel_id": id.to_string(), "closing": closure_json(c) })
}
