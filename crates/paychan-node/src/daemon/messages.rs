//! What the daemon does with a payer's connection: the handshake, then its messages, in order:
//! opens, channel messages one by one, and payments that arrive together on a channel as one
//! burst with one save. Each refusal goes back to the payer as an `error` message saying why.
//!
//! A connection speaks for a channel only once it has proven the channel's payer key on this
//! session (`authenticate`, [`paychan::auth`]): until then every message about the channel is
//! refused the same way, whether the channel exists or not, and nothing is sent to it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use bitcoin::secp256k1::{Secp256k1, VerifyOnly};
use bitcoin::PublicKey;
use paychan::chain::Chain;
use paychan::channel::{needed_acks, ChannelError, Payee, PayeeAction, PayeeConfig};
use paychan::keys::{ChannelSigner, SignatureCheck};
use paychan::store::StoreError;
use paychan::watch::BlockSource;
use paychan::wire::{Authenticate, ChannelId, ErrorMessage, Extension, Message, OpenChannel};
use paychan_wallet::WalletError;

use super::outbox::{self, Outbox};
use super::{ServiceError, Shared, Slot, MIN_FEERATE_TARGET};
use crate::net::{Connection, NetError};

/// Why a message was refused; sent back to the payer in an `error` message.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    #[error("unknown channel")]
    UnknownChannel,
    #[error("this connection has not proven the channel's payer key (authenticate first)")]
    NotAuthenticated,
    #[error("authentication refused: {0}")]
    BadAuthentication(paychan::auth::AuthError),
    #[error("this connection speaks for too many channels")]
    TooManyChannels,
    #[error("the payee's node gives no fee estimate yet; try again later")]
    NoFeeEstimate,
    #[error("this channel id is already in use here; open with another")]
    IdInUse,
    #[error("too many channels are waiting for their funding; try again later")]
    TooManyUnfunded,
    #[error("the payee cannot reach its bitcoin node; try again later")]
    StaleTip,
    #[error("payer messages only: {0} is not one")]
    NotFromPayer(&'static str),
    #[error("this payee serves nothing that takes {0}")]
    NoService(String),
    #[error("{0}")]
    Service(ServiceError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    // The details stay in the payee's log: they name its files.
    #[error("the payee could not save the channel")]
    Store(#[from] StoreError),
    #[error("the payee could not save the channel")]
    NotSaved,
    #[error("the payee's wallet failed")]
    Wallet(#[from] WalletError),
}

/// The most messages written together.
const WRITE_BATCH: usize = 1024;

/// The most channels one connection may speak for.
const MAX_CHANNELS_PER_CONNECTION: usize = 4096;

/// A connection's session: its handshake hash and the channels it has proven the payer key of.
pub(super) struct Peer {
    outbox: Outbox,
    session_hash: [u8; 32],
    channels: HashMap<ChannelId, PublicKey>,
}

impl Peer {
    /// Whether this connection may speak for channel `msg` is about: it proved the payer key,
    /// and an `open_channel` names that key.
    fn speaks_for(&self, msg: &Message) -> bool {
        self.channels.get(&msg.channel_id()).is_some_and(|key| match msg {
            Message::OpenChannel(open) => open.payer_key == *key,
            _ => true,
        })
    }
}

/// The most messages taken together from one connection.
const MAX_BATCH: usize = 256;

impl<C: Chain + BlockSource + Send + Sync + 'static> Shared<C> {
    pub(super) async fn connection(self: Arc<Self>, stream: TcpStream, addr: SocketAddr) {
        let conn = match Connection::accept(stream, &self.identity, self.config.timeouts).await {
            Ok(conn) => conn,
            Err(e) => {
                info!(%addr, "handshake failed: {e}");
                return;
            }
        };
        debug!(%addr, "payer connected");
        let session_hash = conn.session_hash();
        let Connection { mut reader, mut writer, .. } = conn;
        let (outbox, mut queue) = outbox::outbox(self.config.max_outbox_bytes);
        let mut writing = tokio::spawn(async move {
            let mut msgs = Vec::new();
            // Whatever is queued goes out in one write, within the frame timeout.
            while queue.recv_many(&mut msgs, WRITE_BATCH).await > 0 {
                if let Err(e) = writer.send_encoded(&msgs).await {
                    debug!(%addr, "send failed: {e}");
                    return;
                }
                queue.written(&msgs);
                msgs.clear();
            }
        });
        let mut peer = Peer { outbox, session_hash, channels: HashMap::new() };
        loop {
            let first = tokio::select! {
                first = reader.recv_idle() => first,
                () = peer.outbox.cut() => {
                    info!(%addr, "the payer reads too little of what it is sent; closing");
                    writing.abort();
                    return;
                }
                _ = &mut writing => {
                    info!(%addr, "the payer takes nothing it is sent; closing");
                    return;
                }
            };
            let mut batch = Vec::new();
            let mut end = first.map(|msg| batch.push(msg)).err();
            // A pipelining payer's messages come in bursts: take what has arrived together.
            while end.is_none() && batch.len() < MAX_BATCH {
                match reader.try_recv_buffered() {
                    Some(Ok(msg)) => batch.push(msg),
                    Some(Err(e)) => end = Some(e),
                    None => break,
                }
            }
            self.on_messages(&batch, &mut peer).await;
            match end {
                None => {}
                Some(NetError::Closed) => break,
                Some(e) => {
                    info!(%addr, "closing connection: {e}");
                    // The all-zero channel id: about the connection, not a channel.
                    let message = e.to_string();
                    let error = ErrorMessage { channel_id: ChannelId([0; 32]), message };
                    let _ = peer.outbox.send(&Message::Error(error));
                    break;
                }
            }
        }
        drop(peer);
        // Let queued answers go out (the writer ends once they are), but do not wait on a peer
        // that does not read.
        if tokio::time::timeout(self.config.timeouts.frame, &mut writing).await.is_err() {
            writing.abort();
        }
        debug!(%addr, "connection closed");
    }

    /// Handles messages received together, in order: a run of payments on one channel at
    /// once (one save for the run), anything else one by one.
    async fn on_messages(&self, batch: &[Message], peer: &mut Peer) {
        let mut rest = batch;
        while let Some(first) = rest.first() {
            let id = first.channel_id();
            let run = match first {
                Message::Pay(_) => rest
                    .iter()
                    .take_while(|m| matches!(m, Message::Pay(p) if p.channel_id == id))
                    .count(),
                _ => 1,
            };
            let (now, later) = rest.split_at(run);
            rest = later;
            let refused = match first {
                Message::Authenticate(auth) => {
                    self.authenticate(auth, peer).await.err().map(|e| vec![(first, e)])
                }
                // About the connection (the payer closes it), or from a connection that does
                // not speak for the channel: nothing to answer.
                Message::Error(e)
                    if e.channel_id == ChannelId([0; 32]) || !peer.speaks_for(first) =>
                {
                    None
                }
                _ if !peer.speaks_for(first) => {
                    Some(now.iter().map(|m| (m, Refusal::NotAuthenticated)).collect())
                }
                Message::Pay(_) => self.payments(now, &peer.outbox).await,
                Message::OpenChannel(open) if self.slot(id).is_none() => {
                    self.open_channel(open, &peer.outbox).await.err().map(|e| vec![(first, e)])
                }
                _ => {
                    self.channel_message(first, &peer.outbox).await.err().map(|e| vec![(first, e)])
                }
            };
            for (msg, e) in refused.into_iter().flatten() {
                refuse(&peer.outbox, msg, &e);
            }
        }
    }

    /// Takes a payer's proof of a channel's payer key on this connection: for a channel that
    /// exists, the key must be its payer's; for one that does not, the `open_channel` must name
    /// it.
    async fn authenticate(&self, auth: &Authenticate, peer: &mut Peer) -> Result<(), Refusal> {
        paychan::auth::verify(&self.verifier, auth, &peer.session_hash)
            .map_err(Refusal::BadAuthentication)?;
        if let Some(mut slot) = self.lock_slot(auth.channel_id).await {
            // A payer that moved here from another front end finds its newest state.
            self.refresh(&mut slot).await;
            if slot.payee.state().terms.payer_key != auth.payer_key {
                // Told as if nothing were proven: whether the channel exists stays unsaid.
                return Err(Refusal::NotAuthenticated);
            }
        }
        if peer.channels.len() >= MAX_CHANNELS_PER_CONNECTION
            && !peer.channels.contains_key(&auth.channel_id)
        {
            return Err(Refusal::TooManyChannels);
        }
        peer.channels.insert(auth.channel_id, auth.payer_key);
        Ok(())
    }

    async fn open_channel(&self, open: &OpenChannel, peer: &Outbox) -> Result<(), Refusal> {
        if self.taken.contains(&open.channel_id) {
            return Err(Refusal::IdInUse);
        }
        if self.unfunded.load(Ordering::SeqCst) >= self.config.max_unfunded {
            return Err(Refusal::TooManyUnfunded);
        }
        let tip = self.fresh_tip()?;
        let c = &self.config;
        let min_feerate_sat_per_vb = match c.min_feerate_sat_per_vb {
            Some(rate) => rate,
            None => {
                let estimate = self.blocking(|chain| chain.fee_rate(MIN_FEERATE_TARGET)).await;
                estimate.map_err(|_| Refusal::NoFeeEstimate)?.to_sat_per_vb_floor().max(1)
            }
        };
        let mut config = PayeeConfig {
            network: c.network,
            payout: self.stand_in_payout.clone(),
            margin: c.margin,
            min_step: c.min_step,
            max_lifetime: c.max_lifetime,
            min_feerate_sat_per_vb,
            min_conf: c.min_conf,
        };
        // Check the terms with a stand-in key and address first: a refused open uses up
        // neither a key index nor an address.
        Payee::accept(open, &config, ChannelSigner::random(), tip)?;
        // A fresh key per channel: the funding script must be new (see `Payee::accept`).
        let key_index = self.store.reserve_key_index().await?;
        // The wallet saves the address it hands out in its database (and may be busy with a
        // bump meanwhile).
        let signer = crate::blocking(|| -> Result<_, Refusal> {
            let mut wallet = self.wallet();
            config.payout = wallet.new_address()?;
            Ok(wallet.channel_signer(key_index)?)
        })?;
        let (payee, actions) = Payee::accept(open, &config, signer, tip)?;
        self.unfunded.fetch_add(1, Ordering::SeqCst);
        let peer = Some(peer.downgrade());
        let since = Instant::now();
        let session = self.config.service.as_ref().map(|s| s.session(open.channel_id, None));
        let funding_since = None;
        let (closed, version) = (None, None);
        let slot = Slot { payee, key_index, peer, closed, since, funding_since, session, version };
        let slot = Arc::new(tokio::sync::Mutex::new(slot));
        let mut guard = Arc::clone(&slot).lock_owned().await;
        match self.slots().entry(open.channel_id) {
            Entry::Vacant(v) => v.insert(slot),
            // Two opens of one id raced and the other one won.
            Entry::Occupied(_) => {
                let e = ChannelError::Unexpected { what: "open_channel", state: "already open" };
                return Err(e.into());
            }
        };
        info!(channel_id = %open.channel_id, capacity_sat = open.capacity_sat, "channel proposed");
        if let Err(e) = self.carry_out(&mut guard, actions).await {
            self.slots().remove(&open.channel_id);
            return Err(e.into());
        }
        Ok(())
    }

    async fn channel_message(&self, msg: &Message, peer: &Outbox) -> Result<(), Refusal> {
        if matches!(msg, Message::Error(_)) {
            // The payer refused something we sent; it has said why, and our state stands.
            return Ok(());
        }
        let id = msg.channel_id();
        let mut guard = self.lock_slot(id).await.ok_or(Refusal::UnknownChannel)?;
        let slot = &mut *guard;
        if let Message::Extension(extension) = msg {
            slot.attach(peer);
            return self.extension(slot, extension).await;
        }
        // With front ends sharing the store, a message refused, or whose save finds a newer
        // row, is taken again on the channel's newest state.
        match self.channel_step(slot, msg, peer).await {
            Err(Refusal::Store(_) | Refusal::Channel(_)) if self.refresh(slot).await => {
                self.channel_step(slot, msg, peer).await
            }
            outcome => outcome,
        }
    }

    /// Hands `msg` to the locked channel `slot` and carries out what it asks; a save that fails
    /// leaves the channel as it was.
    async fn channel_step(
        &self,
        slot: &mut Slot,
        msg: &Message,
        peer: &Outbox,
    ) -> Result<(), Refusal> {
        let id = msg.channel_id();
        let tip = self.tip.load(Ordering::SeqCst);
        let before = slot.payee.clone();
        let actions = slot.payee.handle_message(msg, tip).map_err(|e| refusal(msg, e))?;
        // A message the channel took: this connection is now where its payer is.
        slot.attach(peer);
        // Just funded: watched before the refund's signature leaves, so no block that may hold
        // the funding is read before the watcher knows of it.
        let funded = slot.payee.funding_outpoint().filter(|_| before.funded().is_none());
        if let Some(outpoint) = funded {
            self.watch_funding(id, outpoint);
            // Its funding expires `funding_expiry` blocks from now.
            slot.funding_since = Some(tip);
        }
        if let Err(e) = self.carry_out(slot, actions).await {
            // Not on disk, so not done: go back to what is.
            warn!(channel_id = %id, "cannot save: {e}");
            slot.payee = before;
            if funded.is_some() {
                self.funding_watch().unwatch(id);
                slot.funding_since = None;
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Takes payments on one channel, received together: each is checked in turn (and
    /// countersigned if it is a checkpoint), the channel is saved once for all of them, with
    /// the file sale's next chunk marked out, and only then do their acknowledgements leave:
    /// those of checkpoints, which carry the payee's signature, and the newest (an ack covers
    /// every payment before it). Returns the ones refused.
    async fn payments<'m>(
        &self,
        pays: &'m [Message],
        peer: &Outbox,
    ) -> Option<Vec<(&'m Message, Refusal)>> {
        let id = pays.first()?.channel_id();
        let all = |e: &dyn Fn() -> Refusal| Some(pays.iter().map(|m| (m, e())).collect());
        let Some(mut guard) = self.lock_slot(id).await else {
            return all(&|| Refusal::UnknownChannel);
        };
        let slot = &mut *guard;
        let tip = match self.fresh_tip() {
            Ok(tip) => tip,
            Err(_) => return all(&|| Refusal::StaleTip),
        };
        // With front ends sharing the store, this copy of the channel may be behind: a run
        // refused whole, or whose save finds a newer row, is taken again on the newest state.
        let mut outcome = self.payment_run(slot, pays, peer, tip).await;
        let stale = match &outcome {
            Err(StoreError::Stale { .. }) => true,
            Ok(refused) => refused.len() == pays.len(),
            Err(_) => false,
        };
        if stale && self.refresh(slot).await {
            outcome = self.payment_run(slot, pays, peer, tip).await;
        }
        match outcome {
            Ok(refused) => Some(refused),
            Err(e) => {
                warn!(channel_id = %id, "cannot save: {e}");
                all(&|| Refusal::NotSaved)
            }
        }
    }

    /// Takes a run of payments on the locked channel `slot` (see [`Shared::payments`]). Returns
    /// the ones refused; if the save fails, the error, and the channel is as it was.
    async fn payment_run<'m>(
        &self,
        slot: &mut Slot,
        pays: &'m [Message],
        peer: &Outbox,
        tip: u32,
    ) -> Result<Vec<(&'m Message, Refusal)>, StoreError> {
        let id = slot.payee.state().terms.channel_id;
        let before = (slot.payee.clone(), service_record(slot));
        let mut refused = Vec::new();
        let mut actions = Vec::new();
        let run = slot.payee.prepare_payments(pays, tip);
        let valid = self.check_signatures(run.checks()).await;
        for (msg, outcome) in pays.iter().zip(slot.payee.apply_payments(run, &valid, pays, tip)) {
            match outcome {
                Ok(more) => actions.extend(more),
                Err(e) => refused.push((msg, refusal(msg, e))),
            }
        }
        slot.attach(peer);
        let save = actions.iter().any(|a| matches!(a, PayeeAction::Persist));
        // One save for the run (below), and the acks the payer needs.
        actions.retain(|a| !matches!(a, PayeeAction::Persist));
        let mut actions = needed_acks(actions);
        // The payer is here now: ask it to settle while it can, rather than wait for a block
        // and maybe find it gone. Nothing more from the service then: it could not be paid for.
        // Asked as of the next block: one may come before the payer's next payment, which the
        // payee would then refuse, and the payer would have a chunk it cannot pay for.
        let near_end = slot.payee.near_end(tip.saturating_add(1));
        if let (false, Some(session)) = (near_end, &mut slot.session) {
            session.on_paid(slot.payee.paid());
        }
        // One save, first: every acknowledgement follows a state at least as new as its own,
        // and what the service sends next leaves only once its record is saved (the file
        // service's chunk, out unpaid).
        if save || service_record(slot) != before.1 {
            actions.insert(0, PayeeAction::Persist);
        }
        if let Err(e) = self.carry_out(slot, actions).await {
            slot.payee = before.0;
            self.restore_session(slot, before.1);
            return Err(e);
        }
        if near_end {
            info!(channel_id = %id, "ladder near its end: asking the payer to settle");
            let ask = slot.payee.request_close().unwrap_or_default();
            if let Err(e) = self.carry_out(slot, ask).await {
                warn!(channel_id = %id, "{e}");
            }
        } else if let Err(e) = self.service_outbox(slot) {
            refused.push((pays.last().expect("not empty"), e));
        }
        Ok(refused)
    }

    /// Hands an extension message to the channel's service session: its answers leave at once,
    /// its record is saved if it changed, and only then does what it holds back leave.
    async fn extension(&self, slot: &mut Slot, msg: &Extension) -> Result<(), Refusal> {
        let service = self.config.service.as_ref();
        let (Some(session), true) =
            (&mut slot.session, service.is_some_and(|s| s.takes(&msg.kind)))
        else {
            return Err(Refusal::NoService(msg.kind.clone()));
        };
        let before = session.record();
        let answers = session.on_message(&slot.payee, msg).map_err(Refusal::Service)?;
        for answer in answers {
            self.send(slot, Message::Extension(answer));
        }
        if service_record(slot) != before {
            if let Err(e) = self.persist(&mut *slot).await {
                self.restore_session(slot, before);
                return Err(e.into());
            }
        }
        self.service_outbox(slot)
    }

    /// Sends what the channel's service session holds back until its record is saved.
    fn service_outbox(&self, slot: &mut Slot) -> Result<(), Refusal> {
        let Some(session) = &mut slot.session else { return Ok(()) };
        let out = session.outbox().map_err(Refusal::Service)?;
        for msg in out {
            self.send(slot, Message::Extension(msg));
        }
        Ok(())
    }

    /// Puts the channel's service session back to the state its `record` describes.
    fn restore_session(&self, slot: &mut Slot, record: Option<serde_json::Value>) {
        if let Some(service) = &self.config.service {
            let channel_id = slot.payee.state().terms.channel_id;
            slot.session = Some(service.session(channel_id, record));
        }
    }
}

/// What the channel's service session would save now.
fn service_record(slot: &Slot) -> Option<serde_json::Value> {
    slot.session.as_ref().and_then(|s| s.record())
}

/// Runs of payments shorter than this have their signatures checked on the channel's task;
/// longer ones half there and half on another thread, so that one busy channel uses two cores.
const PARALLEL_CHECKS: usize = 16;

impl<C: Chain + BlockSource + Send + Sync + 'static> Shared<C> {
    /// Checks the payers' signatures of a run of payments (`Payee::prepare_payments`): the
    /// second half on the blocking pool while this task checks the first.
    async fn check_signatures(&self, checks: &[SignatureCheck]) -> Vec<bool> {
        let verify = |secp: &Secp256k1<VerifyOnly>, c: &[SignatureCheck]| -> Vec<bool> {
            c.iter().map(|c| c.verify(secp)).collect()
        };
        if checks.len() < PARALLEL_CHECKS {
            return verify(&self.verifier, checks);
        }
        let (first, second) = checks.split_at(checks.len() / 2);
        let (secp, second) = (Arc::clone(&self.verifier), second.to_vec());
        let other = tokio::task::spawn_blocking(move || verify(&secp, &second));
        let mut valid = verify(&self.verifier, first);
        // Not checked if the pool is shutting down: `apply_payments` then checks them itself.
        if let Ok(rest) = other.await {
            valid.extend(rest);
        }
        valid
    }
}

/// Tells the payer why `msg` was refused.
fn refuse(peer: &Outbox, msg: &Message, e: &Refusal) {
    let channel_id = msg.channel_id();
    info!(%channel_id, "refused {}: {e}", msg.name());
    let message = e.to_string();
    let _ = peer.send(&Message::Error(ErrorMessage { channel_id, message }));
}

/// Why the channel refused `msg`.
fn refusal(msg: &Message, e: ChannelError) -> Refusal {
    match e {
        ChannelError::Unexpected { what, .. } if is_payee_message(msg) => {
            Refusal::NotFromPayer(what)
        }
        e => Refusal::Channel(e),
    }
}

/// Whether `msg` is one the payee sends (and so never takes).
fn is_payee_message(msg: &Message) -> bool {
    matches!(
        msg,
        Message::AcceptChannel(_)
            | Message::RefundSigned(_)
            | Message::ChannelReady(_)
            | Message::PayAck(_)
            | Message::Shutdown(_)
            | Message::ClosingAck(_)
            | Message::Reconcile(_)
    )
}
