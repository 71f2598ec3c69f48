//! `watch`: the payer's watcher. It follows the node's chain block by block (polling for the
//! best block's hash: no ZMQ in this build), as the payee's daemon does: each new block is read
//! once, whatever the number of channels, and what it does to the payer's channels (a funding
//! confirmed, a funding spent, either taken back by a reorganization) is recorded and
//! announced. For each funded payer channel not yet closed on chain it broadcasts its way out
//! once final (the newest checkpoint, or the refund at R without one), unless a transaction in
//! the mempool already spends the funding (one node call for all of them), and records the
//! transaction that closed the channel, whoever sent it.
//!
//! The blocks it processed are stored (apart for `watch CHANNEL`, which follows one channel),
//! so that the next `watch` goes on from there: a close a reorganization took away while no
//! watcher ran is found then. A channel the blocks cannot tell about (one it has not seen
//! before without a recorded funding height) costs one look at the node, once.
//!
//! It stops on Ctrl-C or SIGTERM (printing what it saw), and once every channel it watches is
//! closed. It takes no lock and writes only the watcher's columns (the closure, the funding
//! height, its chain position), so it can run next to `pay` and `close`; each poll re-reads
//! the channels, so it sees their newest state.

use paychan_node::blocking;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bitcoin::{OutPoint, Transaction, Txid};
use serde_json::json;
use tracing::warn;

use super::args::{Global, WatchArgs};
use super::channels::{closure_json, closure_text};
use super::{connect_node, open_datadir, CliError, Output};
use paychan::chain::Chain;
use paychan::channel::{ChannelParams, Payer, PayerAction};
use paychan::closing::{Closure, REORG_DEPTH};
use paychan::store::{ChannelState, Store};
use paychan::watch::{follow, BlockFollower, FollowError, FundingWatch, WatchEvent};
use paychan::wire::ChannelId;
use paychan_bitcoind::RpcChain;
use paychan_node::datadir::DataDir;
use paychan_node::fee_bump::{self, Bumps, Close, Outcome};
use paychan_node::follow::{first_look, start, FirstLook, MAX_BLOCKS_PER_POLL};

type Announce<'a> = &'a (dyn Fn(&Output) + Sync);

pub(super) async fn watch(
    g: &Global,
    a: &WatchArgs,
    announce: Announce<'_>,
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
    // One channel's watch stores its own position: the payer's would skip the blocks' effects
    // on the channels it did not look at.
    let name = a.channel.map_or_else(|| "payer".to_owned(), |id| format!("payer.{id}"));
    let position = blocking(|| datadir.store.chain_position(&name))?;
    let follower = blocking(|| start(&chain, &position))?;
    let mut w = Watcher {
        first_run: position.is_empty(),
        name,
        only: a.channel,
        follower,
        fundings: FundingWatch::default(),
        params: HashMap::new(),
        fresh: Vec::new(),
        announced: HashSet::new(),
        closed: HashMap::new(),
        node_down: false,
        bumps: Bumps::default(),
    };
    let mut first = true;
    // Made once: a signal that comes while a poll runs still stops the next wait.
    let stop = super::stop_signal();
    tokio::pin!(stop);
    loop {
        let open = blocking(|| w.round(&mut datadir, &chain, announce, first))?;
        first = false;
        if open == 0 {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = &mut stop => break,
        }
    }
    let closed: Vec<_> = w.closed.iter().map(|(id, c)| channel_closure(*id, c)).collect();
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
    refund_locktime: u32,
}

/// What the watcher keeps between polls.
struct Watcher {
    /// The name its chain position is stored under.
    name: String,
    /// Whether no position was stored under it: nothing before the node's tip is replayed.
    first_run: bool,
    only: Option<ChannelId>,
    follower: BlockFollower,
    fundings: FundingWatch,
    /// The channels indexed in `fundings`, with their parameters (to read a close).
    params: HashMap<ChannelId, ChannelParams>,
    /// Channels to look up at the node once (see [`FirstLook`]).
    fresh: Vec<ChannelId>,
    /// Broadcasts already announced (each is repeated every poll until something spends the
    /// funding).
    announced: HashSet<Txid>,
    closed: HashMap<ChannelId, Closure>,
    node_down: bool,
    /// Our closes in the mempool, and which were bumped.
    bumps: Bumps,
}

impl Watcher {
    /// One poll: the new blocks, then (the first time) the announcement of what is watched,
    /// then the channels the blocks cannot tell about, then the broadcasts due. Returns how
    /// many channels are still open.
    fn round(
        &mut self,
        datadir: &mut DataDir,
        chain: &RpcChain,
        announce: Announce<'_>,
        first: bool,
    ) -> Result<usize, CliError> {
        self.sync(datadir)?;
        self.follow(datadir, chain, announce)?;
        if first {
            let open = self.sync(datadir)?;
            let channels: Vec<_> = open
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
        self.first_looks(datadir, chain, announce)?;
        let open = self.sync(datadir)?;
        if let Err(e) = self.broadcast_due(chain, datadir, &open, announce) {
            warn!("{e}");
        }
        Ok(open.len())
    }

    /// Reads the funded payer channels (or the one asked for) and indexes the new ones;
    /// returns those not closed. A close `REORG_DEPTH` deep is no longer watched.
    fn sync(&mut self, datadir: &mut DataDir) -> Result<Vec<Watched>, CliError> {
        let tip = self.follower.tip().height;
        let mut open = Vec::new();
        for record in datadir.store.channels()? {
            let ChannelState::Payer(state) = record.state else { continue };
            let id = state.terms.channel_id;
            if self.only.is_some_and(|o| o != id) {
                continue;
            }
            let spent = record.closed.as_ref().map(|c| c.height);
            if spent.is_some_and(|h| tip >= h.saturating_add(REORG_DEPTH)) {
                self.fundings.unwatch(id);
                self.params.remove(&id);
                continue;
            }
            let payer = Payer::restore(datadir.wallet.channel_signer(record.key_index)?, state)?;
            let Some(f) = payer.funded() else { continue };
            let params = f.funded.channel.params();
            let outpoint = params.funding_outpoint;
            if !self.params.contains_key(&id) {
                self.fundings.watch(id, outpoint, record.funding_height, spent);
                self.params.insert(id, params.clone());
                // Unconfirmed as far as the store knows, or this watcher has no blocks of its
                // own to replay (its first run): the node is asked once.
                if (record.funding_height.is_none() || self.first_run) && spent.is_none() {
                    self.fresh.push(id);
                }
            }
            if spent.is_none() {
                let refund_locktime = f.funded.channel.ladder().refund();
                open.push(Watched { id, payer, outpoint, refund_locktime });
            }
        }
        Ok(open)
    }

    /// Reads the new blocks, records and announces what they did, and stores the position.
    fn follow(
        &mut self,
        datadir: &mut DataDir,
        chain: &RpcChain,
        announce: Announce<'_>,
    ) -> Result<(), CliError> {
        let mut follower = self.follower.clone();
        let progress = match follow(chain, &mut follower, MAX_BLOCKS_PER_POLL) {
            Ok(progress) => progress,
            Err(FollowError::Chain(e)) => {
                if !std::mem::replace(&mut self.node_down, true) {
                    warn!("cannot reach the node: {e}");
                }
                return Ok(());
            }
            Err(e) => return Err(CliError::NotApplicable(e.to_string())),
        };
        self.node_down = false;
        for block in &progress.events {
            for event in self.fundings.apply(block) {
                self.apply(datadir, event, announce)?;
            }
        }
        self.follower = follower;
        if !progress.events.is_empty() {
            datadir.store.save_chain_position(&self.name, &self.follower.blocks())?;
        }
        Ok(())
    }

    /// Records and announces what a block did to a channel.
    fn apply(
        &mut self,
        datadir: &mut DataDir,
        event: WatchEvent,
        announce: Announce<'_>,
    ) -> Result<(), CliError> {
        match event {
            WatchEvent::FundingConfirmed { channel_id, height, .. } => {
                datadir.store.record_funding_height(channel_id, Some(height))?;
            }
            WatchEvent::FundingReorged { channel_id } => {
                datadir.store.record_funding_height(channel_id, None)?;
            }
            WatchEvent::FundingSpent { channel_id, height, tx } => {
                let Some(params) = self.params.get(&channel_id) else { return Ok(()) };
                let closure = Closure::read(&tx, height, params);
                self.record_closure(datadir, channel_id, closure, announce)?;
            }
            WatchEvent::SpendReorged { channel_id } => {
                let Some(c) = datadir.store.channel(channel_id)?.and_then(|r| r.closed) else {
                    return Ok(());
                };
                datadir.store.forget_closure(channel_id)?;
                self.closed.remove(&channel_id);
                announce(&Output {
                    json: json!({
                        "event": "reorged", "channel_id": channel_id.to_string(),
                        "txid": c.txid.to_string(),
                    }),
                    text: format!(
                        "channel {channel_id}: its closing transaction {} left the best chain; \
                         watching it again\n",
                        c.txid
                    ),
                });
            }
        }
        Ok(())
    }

    /// Asks the node about each channel the blocks cannot tell about (see [`FirstLook`]).
    fn first_looks(
        &mut self,
        datadir: &mut DataDir,
        chain: &RpcChain,
        announce: Announce<'_>,
    ) -> Result<(), CliError> {
        for id in std::mem::take(&mut self.fresh) {
            let Some(params) = self.params.get(&id) else { continue };
            let outpoint = params.funding_outpoint;
            let (confirmed, spent) = self.fundings.heights(id).unwrap_or_default();
            // The payer's funding is its own, never made up: a spend of it is looked for.
            match first_look(chain, outpoint, true, params) {
                Ok(FirstLook::Confirmed(height, _)) => {
                    self.fundings.watch(id, outpoint, Some(height), spent);
                    datadir.store.record_funding_height(id, Some(height))?;
                }
                Ok(FirstLook::Spent(closure)) => {
                    self.fundings.watch(id, outpoint, confirmed, Some(closure.height));
                    self.record_closure(datadir, id, closure, announce)?;
                }
                Ok(FirstLook::Nothing) => {}
                Err(e) => {
                    warn!(channel_id = %id, "cannot check the funding: {e}");
                    self.fresh.push(id);
                }
            }
        }
        Ok(())
    }

    fn record_closure(
        &mut self,
        datadir: &mut DataDir,
        id: ChannelId,
        closure: Closure,
        announce: Announce<'_>,
    ) -> Result<(), CliError> {
        datadir.store.record_closure(id, &closure)?;
        let c = &closure;
        announce(&Output {
            json: json!({ "event": "closed", "channel_id": id.to_string(), "closing": closure_json(c) }),
            text: format!("channel {id}: closed by the {}\n", closure_text(c)),
        });
        self.closed.insert(id, closure);
        Ok(())
    }

    /// Broadcasts what is due on the open channels whose funding nothing in the mempool spends
    /// yet, bumped by a child of the wallet's if the node refuses it for its fee; bumps ours
    /// once it has waited a block in the mempool.
    fn broadcast_due(
        &mut self,
        chain: &RpcChain,
        datadir: &mut DataDir,
        open: &[Watched],
        announce: Announce<'_>,
    ) -> Result<(), CliError> {
        let tip = self.follower.tip().height;
        let mut due = Vec::new();
        for w in open {
            let txs = due_now(&w.payer, tip)?;
            if !txs.is_empty() {
                due.push((w, txs));
            }
        }
        if due.is_empty() {
            self.bumps.end_poll();
            return Ok(());
        }
        let outpoints: Vec<OutPoint> = due.iter().map(|(w, _)| w.outpoint).collect();
        let spends = chain.mempool_spends(&outpoints)?;
        for ((w, txs), spend) in due.into_iter().zip(spends) {
            let terms = &w.payer.state().terms;
            for tx in txs {
                let kind = match tx.lock_time.to_consensus_u32() {
                    0 => "settlement",
                    l if l == w.refund_locktime => "refund",
                    _ => "checkpoint",
                };
                let txid = tx.compute_txid();
                let Some(stuck) = self.bumps.poll(txid, spend, tip) else { continue };
                let close =
                    Close { tx, capacity: terms.capacity, target_blocks: terms.ladder.step() };
                let bumped = match broadcast_or_bump(chain, datadir, &close, stuck) {
                    Ok(Outcome::Broadcast) => None,
                    Ok(Outcome::Bumped { child, package_feerate }) => {
                        self.bumps.bumped(txid);
                        Some((child, package_feerate.to_sat_per_vb_floor()))
                    }
                    Err(e) => {
                        warn!(channel_id = %w.id, %txid, "{kind} not broadcast: {e}");
                        continue;
                    }
                };
                if let Some((child, sat_per_vb)) = bumped {
                    announce(&Output {
                        json: json!({
                            "event": "bumped", "channel_id": w.id.to_string(), "kind": kind,
                            "txid": txid.to_string(), "child_txid": child.to_string(),
                            "package_sat_per_vb": sat_per_vb, "tip": tip,
                        }),
                        text: format!(
                            "channel {}: {kind} {txid} bumped by child {child} to {sat_per_vb} \
                             sat/vB at tip {tip}\n",
                            w.id
                        ),
                    });
                }
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
        }
        self.bumps.end_poll();
        Ok(())
    }
}

/// Broadcasts `close`, and bumps it if the node refuses it for its fee or `stuck` says it waited
/// in the mempool. The watch runs next to `pay` and `open` without the directory's lock: it
/// takes the lock for the bump only (so that an `open` does not spend the same coin), and reads
/// the wallet from the database again first. Busy, it tries again at the next poll.
fn broadcast_or_bump(
    chain: &RpcChain,
    datadir: &mut DataDir,
    close: &Close,
    stuck: bool,
) -> Result<Outcome, CliError> {
    let refused = stuck || fee_bump::refused_for_fee(chain, close).map_err(bump_failed)?;
    if !refused {
        return Ok(Outcome::Broadcast);
    }
    datadir.lock()?;
    datadir.wallet.reload();
    let bumped = fee_bump::bump(chain, &mut datadir.wallet, close);
    datadir.unlock();
    bumped.map_err(bump_failed)
}

fn bump_failed(e: fee_bump::BumpError) -> CliError {
    CliError::NotApplicable(e.to_string())
}

/// What the payer broadcasts now on an unspent funding: a settlement the payee has not (it
/// may have vanished after signing), or its newest checkpoint once final (the refund at R
/// without one).
fn due_now(payer: &Payer, tip: u32) -> Result<Vec<Transaction>, CliError> {
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
