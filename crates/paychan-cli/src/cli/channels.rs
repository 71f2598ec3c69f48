//! `open`, `pay`, `close`, `list`, `show`.

use paychan_node::blocking;
use paychan_sqlite::SqliteStore;
use std::time::Duration;

use bitcoin::{Amount, Transaction};
use serde_json::{json, Value};

use super::args::{Global, OpenArgs, PayArgs, TermsArgs};
use super::{connect_node, open_datadir, CliError, Output};
use paychan::chain::{Chain, TxStatus};
use paychan::channel::{ChannelParams, CheckpointPolicy, PayeeConfig};
use paychan::closing::{split, ClosingKind, Closure};
use paychan::store::{ChannelRecord, ChannelState, Store};
use paychan::wire::ChannelId;
use paychan_bitcoind::RpcChain;
use paychan_node::client::{ClientTimeouts, OpenRequest, PayerClient};
use paychan_node::datadir::DataDir;
use paychan_node::net::PeerAddr;

pub(super) async fn open(
    g: &Global,
    a: &OpenArgs,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, CliError> {
    let mut datadir = blocking(|| open_datadir(g))?;
    datadir.lock()?;
    let chain = blocking(|| connect_node(g))?;
    let client =
        open_ready(g, &mut datadir, &chain, &a.peer, a.capacity, &a.terms, progress).await?;
    let min_conf = a.terms.min_conf.unwrap_or_else(|| PayeeConfig::default_min_conf(g.network));
    opened(&chain, client, min_conf).await
}

/// Waits for the funding's `min_conf` confirmations of a channel the payee says is ready, and
/// says what was opened.
pub(super) async fn opened(
    chain: &RpcChain,
    client: PayerClient<'_, RpcChain, SqliteStore>,
    min_conf: u32,
) -> Result<Output, CliError> {
    let channel_id = client.channel_id();
    let f = client.payer().funded().expect("funded once ready");
    let funding_txid = f.funding_tx.compute_txid();
    let refund_locktime = f.funded.channel.ladder().refund();
    let capacity = f.funded.channel.params().terms.capacity.to_sat();
    drop(client);
    wait_confirmations(chain, funding_txid, min_conf).await?;
    Ok(Output {
        json: json!({
            "channel_id": channel_id.to_string(),
            "funding_txid": funding_txid.to_string(),
            "capacity_sat": capacity,
            "refund_locktime": refund_locktime,
        }),
        text: format!(
            "channel {channel_id} open: {capacity} sat, funding {funding_txid}, refund locktime {refund_locktime}\n",
        ),
    })
}

/// Opens a channel of `capacity` with `peer` and returns its client once the payee says it is
/// ready (it has seen the funding's confirmations).
pub(super) async fn open_ready<'a>(
    g: &Global,
    datadir: &'a mut DataDir,
    chain: &'a RpcChain,
    peer: &PeerAddr,
    capacity: u64,
    terms: &TermsArgs,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<PayerClient<'a, RpcChain, SqliteStore>, CliError> {
    let request = open_request(chain, capacity, terms)?;
    let timeouts = client_timeouts(g);
    let client =
        PayerClient::open(datadir.parts(), chain, peer.clone(), &request, timeouts).await?;
    wait_ready(client, progress).await
}

/// What `open` and `fetch` ask for: `terms` on a channel of `capacity`.
pub(super) fn open_request(
    chain: &RpcChain,
    capacity: u64,
    terms: &TermsArgs,
) -> Result<OpenRequest, CliError> {
    let feerate = match terms.feerate {
        Some(f) => f,
        None => blocking(|| chain.fee_rate(6))?.to_sat_per_vb_ceil(),
    };
    let capacity = Amount::from_sat(capacity);
    Ok(OpenRequest {
        capacity,
        lifetime: terms.lifetime,
        step: terms.step,
        feerate_sat_per_vb: feerate,
        margin: terms.margin,
        checkpoints: terms.checkpoint_policy(capacity),
    })
}

/// Returns `client`, whose funding was just broadcast, once the payee says the channel is
/// ready.
pub(super) async fn wait_ready<'a>(
    mut client: PayerClient<'a, RpcChain, SqliteStore>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<PayerClient<'a, RpcChain, SqliteStore>, CliError> {
    let channel_id = client.channel_id();
    let funding_txid = client.payer().funded().expect("funded").funding_tx.compute_txid();
    progress(&format!(
        "channel {channel_id}: funding {funding_txid} broadcast; waiting for the payee to see \
         it confirmed"
    ));
    if let Err(e) = client.wait_ready().await {
        // The funding is out: the channel exists. Say which, so the user resumes it rather
        // than opening another.
        return Err(CliError::NotApplicable(format!(
            "channel {channel_id} is funded but not ready yet ({e}); `paychan pay` or \
             `paychan close` on it picks up from here once the funding is confirmed"
        )));
    }
    Ok(client)
}

pub(super) fn client_timeouts(g: &Global) -> ClientTimeouts {
    let wait = Duration::from_secs(g.timeout.max(1));
    let mut timeouts = ClientTimeouts { reply: wait, ..ClientTimeouts::default() };
    timeouts.net.handshake = wait;
    timeouts
}

/// Waits until `txid` has `min_conf` confirmations.
async fn wait_confirmations(
    chain: &impl Chain,
    txid: bitcoin::Txid,
    min_conf: u32,
) -> Result<(), CliError> {
    loop {
        let confs = match blocking(|| chain.tx_status(txid))? {
            TxStatus::Confirmed(n) => n,
            TxStatus::InMempool | TxStatus::Unknown => 0,
        };
        if confs >= min_conf {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(super) async fn pay(g: &Global, a: &PayArgs) -> Result<Output, CliError> {
    let mut datadir = blocking(|| open_datadir(g))?;
    require_payer(&datadir, a.channel)?;
    datadir.lock()?;
    let chain = blocking(|| connect_node(g))?;
    let timeouts = client_timeouts(g);
    let mut client = PayerClient::resume(datadir.parts(), &chain, a.channel, timeouts).await?;
    client.pay(Amount::from_sat(a.sat), a.checkpoint).await?;
    let f = &client.payer().funded().expect("paid on a funded channel").funded;
    let newest = f.newest.as_ref().expect("acknowledged");
    let (paid, locktime, checkpoint) = (newest.paid.to_sat(), newest.locktime, newest.checkpoint);
    let exit = f.checkpoint_locktime();
    let note = if client.shutdown_requested() {
        "\nthe payee asks to settle: run paychan close"
    } else {
        ""
    };
    let what = if checkpoint { "checkpoint" } else { "commitment" };
    Ok(Output {
        json: json!({
            "channel_id": a.channel.to_string(),
            "paid_total_sat": paid,
            "payment": newest.number,
            "locktime": locktime,
            "checkpoint": checkpoint,
            "checkpoint_locktime": exit,
            "settle_requested": client.shutdown_requested(),
        }),
        text: format!(
            "paid {} sat, {paid} sat in total ({what} locktime {locktime}; our newest checkpoint \
             is final at {exit}){note}\n",
            a.sat
        ),
    })
}

pub(super) async fn close(g: &Global, id: ChannelId) -> Result<Output, CliError> {
    let mut datadir = blocking(|| open_datadir(g))?;
    require_payer(&datadir, id)?;
    datadir.lock()?;
    let chain = blocking(|| connect_node(g))?;
    let timeouts = client_timeouts(g);
    let mut client = PayerClient::resume(datadir.parts(), &chain, id, timeouts).await?;
    let tx = client.close().await?;
    let params = client.payer().funded().expect("settled").funded.channel.params();
    let (payer_sat, payee_sat) = split_sat(&tx, params);
    let txid = tx.compute_txid();
    Ok(Output {
        json: json!({
            "settlement_txid": txid.to_string(),
            "payer_sat": payer_sat,
            "payee_sat": payee_sat,
        }),
        text: format!(
            "settlement {txid} broadcast: payer gets {payer_sat} sat, payee gets {payee_sat} sat\n"
        ),
    })
}

/// Checks that channel `id` is ours to pay on, before taking the lock: on the payee's side the
/// daemon holds it, and "in use" would hide the real mistake.
pub(super) fn require_payer(
    datadir: &paychan_node::datadir::DataDir,
    id: ChannelId,
) -> Result<(), CliError> {
    match datadir.store.channel(id)? {
        None => Err(CliError::UnknownChannel(id)),
        Some(r) if matches!(r.state, ChannelState::Payee(_)) => {
            Err(paychan_node::client::ClientError::NotPayer(id).into())
        }
        // A settled channel still answers `close` with its settlement, for scripts that retry.
        Some(ChannelRecord { closed: Some(c), .. }) if c.kind != ClosingKind::Settlement => {
            Err(CliError::NotApplicable(format!(
                "channel {id} is closed on chain by the {} {}",
                c.kind.name(),
                c.txid
            )))
        }
        Some(_) => Ok(()),
    }
}

/// What a settlement pays each side, in sat.
pub(super) fn split_sat(tx: &Transaction, params: &ChannelParams) -> (u64, u64) {
    let (payer, payee) = split(tx, params);
    (payer.to_sat(), payee.to_sat())
}

pub(super) fn list(g: &Global) -> Result<Output, CliError> {
    let datadir = blocking(|| open_datadir(g))?;
    let view = ChainView::connect(g);
    let channels: Vec<Value> =
        datadir.store.channels()?.iter().map(|r| summary(r, &view)).collect();
    let mut text = String::new();
    for c in &channels {
        text.push_str(&format!(
            "{} {} {}: {} sat capacity, {} sat paid in {} payment(s), {} checkpoint(s), \
             locktime {} (refund {}), {} blocks left\n",
            c["channel_id"].as_str().unwrap_or_default(),
            c["role"].as_str().unwrap_or_default(),
            c["state"].as_str().unwrap_or_default(),
            c["capacity_sat"],
            c["paid_total_sat"],
            c["payments"],
            c["checkpoints"],
            c["current_locktime"],
            c["refund_locktime"],
            c["blocks_left"],
        ));
    }
    if channels.is_empty() {
        text.push_str("no channels\n");
    }
    text.push_str(&view.note());
    let mut json = json!({ "tip": view.tip, "channels": channels });
    view.warn(&mut json);
    Ok(Output { json, text })
}

pub(super) fn show(g: &Global, id: ChannelId) -> Result<Output, CliError> {
    let datadir = blocking(|| open_datadir(g))?;
    let record = datadir.store.channel(id)?.ok_or(CliError::UnknownChannel(id))?;
    let view = ChainView::connect(g);
    let mut json = summary(&record, &view);
    json["tip"] = view.tip.into();
    json["peer"] = record.peer.clone().into();
    // `wsh(multi(2,payer,payee))#checksum`, once both keys are known: any wallet can watch
    // the output with it.
    let descriptor = record.state.funding_script().map(|f| f.descriptor().to_string());
    json["funding_descriptor"] = descriptor.into();
    view.warn(&mut json);
    let field = |name: &str| match &json[name] {
        Value::String(s) => s.clone(),
        Value::Null => "unknown".into(),
        other => other.to_string(),
    };
    let text = format!(
        "channel {id}\n  role: {}\n  state: {}\n  capacity: {} sat\n  paid: {} sat in {} \
         payment(s)\n  checkpoints: {} (newest: {} sat, final at {})\n  checkpoint policy: {}\n  \
         current locktime: {}\n  refund locktime: {}\n  tip: {}\n  blocks left: {}\n  \
         checkpoints left: {}\n  funding: {}\n  funding descriptor: {}\n  peer: {}\n{}{}",
        field("role"),
        field("state"),
        field("capacity_sat"),
        field("paid_total_sat"),
        field("payments"),
        field("checkpoints"),
        field("checkpoint_paid_sat"),
        field("checkpoint_locktime"),
        policy_text(&record.state.terms().checkpoints),
        field("current_locktime"),
        field("refund_locktime"),
        field("tip"),
        field("blocks_left"),
        field("checkpoints_left"),
        json["funding_outpoint"].as_str().unwrap_or("none yet"),
        json["funding_descriptor"].as_str().unwrap_or("not yet known (the payee has not accepted)"),
        json["peer"].as_str().unwrap_or("(we are the payee)"),
        record
            .closed
            .as_ref()
            .map_or_else(String::new, |c| format!("  closed by: {}\n", closure_text(c))),
        view.note(),
    );
    Ok(Output { json, text })
}

/// What `list` and `show` learn from the node, if it answers: they read local state and still
/// work without it, leaving out what depends on the chain.
struct ChainView {
    chain: Option<RpcChain>,
    tip: Option<u32>,
    error: Option<String>,
}

impl ChainView {
    fn connect(g: &Global) -> ChainView {
        match connect_node(g).and_then(|chain| Ok((chain.tip()?.height, chain))) {
            Ok((tip, chain)) => ChainView { chain: Some(chain), tip: Some(tip), error: None },
            Err(e) => ChainView { chain: None, tip: None, error: Some(e.to_string()) },
        }
    }

    /// Whether the funding output `outpoint` is spent in a block, if the node can tell.
    fn spent(&self, outpoint: bitcoin::OutPoint) -> Option<bool> {
        let status = self.chain.as_ref()?.output_status_in_blocks(outpoint).ok()?;
        Some(matches!(status, paychan::chain::OutputStatus::SpentOrMissing))
    }

    fn note(&self) -> String {
        self.error.as_ref().map_or_else(String::new, |e| {
            format!(
                "(the bitcoin node did not answer, so what depends on the tip is unknown: {e})\n"
            )
        })
    }

    fn warn(&self, json: &mut Value) {
        if let Some(e) = &self.error {
            json["node_error"] = e.clone().into();
        }
    }
}

/// The fields `list` and `show` print for a channel.
fn summary(record: &ChannelRecord, view: &ChainView) -> Value {
    let state = &record.state;
    let (terms, stage, funded, margin) =
        (state.terms(), state.stage_name(), state.funded(), state.margin());
    let refund = terms.ladder.refund();
    let ready = funded.filter(|f| f.ready);
    // A ready channel whose funding is spent is over, whatever closed it, whether or not a
    // watcher has recorded the spend yet.
    let closed = record.closed.is_some()
        || ready.and_then(|f| view.spent(f.channel.params().funding_outpoint)) == Some(true);
    let settled = funded.is_some_and(|f| f.settlement.is_some());
    let over = closed || settled;
    let current = funded.map_or(refund, |f| f.current_locktime());
    let checkpoints = funded.map_or(0, |f| f.checkpoints());
    let left = |tip: u32| {
        if over {
            (0, 0)
        } else {
            // The rung of the payments after the newest checkpoint is still usable (or not).
            let rungs = terms.ladder.remaining_rungs(checkpoints, tip, margin);
            (current.saturating_sub(tip), rungs.saturating_sub(1))
        }
    };
    let (blocks_left, checkpoints_left) = view.tip.map(left).unzip();
    let checkpoint = funded.and_then(|f| f.checkpoint.as_ref());
    json!({
        "channel_id": terms.channel_id.to_string(),
        "role": record.state.role(),
        "state": if closed && !settled { "closed on chain" } else { stage },
        "capacity_sat": terms.capacity.to_sat(),
        "paid_total_sat": funded.map_or(0, |f| f.paid().to_sat()),
        "payments": funded.map_or(0, |f| f.payments()),
        "checkpoints": checkpoints,
        "checkpoint_paid_sat": checkpoint.map_or(0, |c| c.paid.to_sat()),
        "checkpoint_locktime": funded.map_or(refund, |f| f.checkpoint_locktime()),
        "checkpoint_policy": policy_json(&terms.checkpoints),
        "current_locktime": current,
        "refund_locktime": refund,
        "blocks_left": blocks_left,
        "checkpoints_left": checkpoints_left,
        "funding_outpoint": funded.map(|f| f.channel.params().funding_outpoint.to_string()),
        "closing": record.closed.as_ref().map(closure_json),
    })
}

/// A checkpoint policy in words.
fn policy_text(p: &CheckpointPolicy) -> String {
    let rules: Vec<String> = p
        .every_payments
        .map(|n| format!("every {n} payment(s)"))
        .into_iter()
        .chain(p.every_sat.map(|a| format!("every {} sat", a.to_sat())))
        .collect();
    if rules.is_empty() {
        "on request only".into()
    } else {
        rules.join(" or ")
    }
}

/// A checkpoint policy as `list` and `show` print it.
fn policy_json(p: &CheckpointPolicy) -> Value {
    json!({
        "every_payments": p.every_payments.map(|n| n.get()),
        "every_sat": p.every_sat.map(Amount::to_sat),
    })
}

/// A recorded closing transaction in words, as `show` and `watch` print it: "KIND TXID at height
/// H (payer A sat, payee B sat)".
pub(super) fn closure_text(c: &Closure) -> String {
    format!(
        "{} {} at height {} (payer {} sat, payee {} sat)",
        c.kind.name(),
        c.txid,
        c.height,
        c.payer_amount.to_sat(),
        c.payee_amount.to_sat()
    )
}

/// A recorded closing transaction, as `list`, `show` and `watch` print it.
pub(super) fn closure_json(c: &Closure) -> Value {
    let rung = match c.kind {
        ClosingKind::Commitment { rung } => Some(rung),
        _ => None,
    };
    json!({
        "txid": c.txid.to_string(),
        "kind": c.kind.name(),
        "rung": rung,
        "height": c.height,
        "payer_sat": c.payer_amount.to_sat(),
        "payee_sat": c.payee_amount.to_sat(),
    })
}
