//! The payee daemon: accepts channels over TCP, watches their funding on chain, and takes
//! payments, for many channels and connections at once.
//!
//! It is the I/O around [`Payee`]: messages come from [`crate::net`] connections, states go to
//! the [`Store`] through the group-commit [`StoreWriter`], transactions go to the [`Chain`]. A
//! [`Service`] sold over the channels (the paid file service) gets the extension messages. Each channel
//! sits behind its own lock, so a slow or hostile connection holds up only the channel it talks
//! about, and a connection that misbehaves (a malformed or oversized frame, a stalled message,
//! no handshake) is closed without touching any other.
//!
//! Every [`PayeeAction::Persist`] is awaited before the actions after it: an acknowledgement never
//! leaves before the commitment it acknowledges is on disk.

mod chain_events;
mod chain_watch;
mod desk;
mod messages;
mod outbox;
mod service;

pub use desk::{PaymentDesk, PaymentRefused, Taken};
use messages::Refusal;
use outbox::{Outbox, WeakOutbox};
pub use service::{Service, ServiceError, Session};

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::secp256k1::{Secp256k1, VerifyOnly};
use bitcoin::{Network, PublicKey};
use rayon::iter::{IntoParallelIterator, ParallelIterator};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use paychan::chain::{Chain, ChainError};
use paychan::channel::{ChannelError, Payee, PayeeAction, PayeeConfig};
use paychan::closing::Closure;
use paychan::store::{ChannelRecord, ChannelState, RowVersion, Store, StoreError};
use paychan::watch::{BlockId, BlockSource, FundingWatch};
use paychan::wire::{ChannelId, Message};
use paychan_wallet::{Branch, ChannelKeys, Wallet, WalletError};

use crate::fee_bump::{self, Close, Outcome};

use crate::net::{NodeIdentity, Timeouts};
use crate::StoreWriter;

/// What the daemon accepts and how patient it is.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The chain.
    pub network: Network,
    /// Funding confirmations required before payments: at least 1 off regtest
    /// ([`Daemon::new`] refuses 0 there).
    pub min_conf: u32,
    /// See [`PayeeConfig::margin`].
    pub margin: u32,
    /// See [`PayeeConfig::min_step`].
    pub min_step: u32,
    /// See [`PayeeConfig::max_lifetime`].
    pub max_lifetime: u32,
    /// See [`PayeeConfig::min_feerate_sat_per_vb`]; `None`: the node's fee estimate for
    /// confirmation within [`MIN_FEERATE_TARGET`] blocks, read at each open and rounded down.
    pub min_feerate_sat_per_vb: Option<u64>,
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// How often the node is asked for its best block.
    pub poll_interval: Duration,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Connections served at once from one IPv4 address or IPv6 /64.
    pub max_connections_per_ip: usize,
    /// Bytes queued for one connection: a payer that reads less than this behind is cut off.
    pub max_outbox_bytes: usize,
    /// Channels accepted but not yet funded (`funding_created` not received) at once; more
    /// opens are refused until some are funded or expire.
    pub max_unfunded: usize,
    /// How long an accepted channel may wait for its `funding_created` before it is forgotten.
    /// The payee has signed nothing for it yet, so nothing is at stake.
    pub unfunded_expiry: Duration,
    /// Blocks a funding may take to confirm, from when the daemon first sees it (at its
    /// `funding_created`, or at a restart), before its channel is forgotten. The payee has
    /// signed nothing but a refund of that funding, and took no payment on it; until then the
    /// channel counts against [`DaemonConfig::max_unfunded`].
    pub funding_expiry: u32,
    /// The service sold over the channels (the paid file service), if any.
    pub service: Option<Arc<dyn Service>>,
}

impl DaemonConfig {
    /// Returns the defaults for `network`: [`PayeeConfig::default_min_conf`], a margin of 2
    /// blocks, [`PayeeConfig::default_min_step`], [`PayeeConfig::default_max_lifetime`], the
    /// node's fee estimate as the least fee rate, the default [`Timeouts`], a poll each second,
    /// 512 connections (below the usual limit of 1024 open files) and 100 per IPv4 address or
    /// IPv6 /64, 1 MiB queued for each (sixteen of the largest messages), 100
    /// channels awaiting their funding, forgotten after 10 minutes without one or 144 blocks
    /// without its confirmation, no service.
    pub fn new(network: Network) -> DaemonConfig {
        DaemonConfig {
            network,
            min_conf: PayeeConfig::default_min_conf(network),
            margin: 2,
            min_step: PayeeConfig::default_min_step(network),
            max_lifetime: PayeeConfig::default_max_lifetime(network),
            min_feerate_sat_per_vb: None,
            timeouts: Timeouts::default(),
            poll_interval: Duration::from_secs(1),
            max_connections: 512,
            max_connections_per_ip: 100,
            max_outbox_bytes: 1024 * 1024,
            max_unfunded: 100,
            unfunded_expiry: Duration::from_secs(600),
            funding_expiry: 144,
            service: None,
        }
    }
}

/// The confirmation target of the fee estimate that is the least fee rate accepted by default
/// ([`DaemonConfig::min_feerate_sat_per_vb`]): the node's most patient estimate, which a payer
/// using the node's estimate for a sooner confirmation meets.
pub const MIN_FEERATE_TARGET: u16 = 1008;

/// Errors of the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The data directory is in use by another process.
    #[cfg(feature = "datadir")]
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration is unsafe for its network.
    #[error("{0}")]
    Policy(&'static str),
    /// The wallet failed (a payout address or a channel key).
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The node failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A stored channel does not restore.
    #[error("channel {channel_id}: {source}")]
    Restore {
        /// The channel.
        channel_id: ChannelId,
        /// Why.
        #[source]
        source: ChannelError,
    },
    /// Listening failed.
    #[error("cannot listen: {0}")]
    Listen(#[source] std::io::Error),
    /// The task that follows the chain stopped (it panicked): without it no commitment would be
    /// broadcast in time, so the daemon stops too.
    #[error("the chain watcher stopped")]
    WatcherStopped,
}

/// One channel, behind its own lock.
struct Slot {
    payee: Payee,
    key_index: u32,
    /// The connection the payer last spoke on (authenticated for this channel), for what the
    /// daemon sends unasked. Weak, so that the connection closes when its task ends, whatever
    /// the channel still points at.
    peer: Option<WeakOutbox>,
    /// The confirmed transaction that spent the funding: nothing more to watch.
    closed: Option<Closure>,
    /// When this process accepted or loaded it.
    since: Instant,
    /// The tip when this process first saw the channel funded but not ready: its funding
    /// expires [`DaemonConfig::funding_expiry`] blocks later.
    funding_since: Option<u32>,
    /// The service's session on this channel, saved with the channel.
    session: Option<Box<dyn Session>>,
    /// The version of the channel's row this state was read or last saved at (`None`: not
    /// saved yet). In a store several front ends share, a save over another version is refused.
    version: Option<RowVersion>,
}

impl Slot {
    /// Makes `peer` the connection the payer speaks on. A new connection stops what the
    /// service was sending on the old one (the file service's chunks go to the connection that
    /// asked for them, and a payer that reconnects asks again).
    fn attach(&mut self, peer: &Outbox) {
        let current = self.peer.as_ref().and_then(WeakOutbox::upgrade);
        if !current.is_some_and(|c| c.same(peer)) {
            if let Some(session) = &mut self.session {
                session.reconnected();
            }
        }
        self.peer = Some(peer.downgrade());
    }
}

type Slots = HashMap<ChannelId, Arc<tokio::sync::Mutex<Slot>>>;

struct Shared<C> {
    config: DaemonConfig,
    /// The node key, which is the Noise static key of every handshake.
    identity: NodeIdentity,
    /// The address an `open_channel`'s terms are checked with, before a fresh one is handed
    /// out: derived once, so that no check waits for the wallet (a bump may hold it).
    stand_in_payout: bitcoin::Address,
    /// The payee's wallet: payout addresses, and the coins that pay for bumps. Locked from
    /// blocking threads only.
    wallet: Arc<Mutex<Wallet>>,
    store: StoreWriter,
    chain: Arc<C>,
    tip: AtomicU32,
    /// When the node last told the tip.
    /// When the watcher last reached the node's best block (`None`: not yet since the start,
    /// and the tip is not known).
    tip_read: Mutex<Option<Instant>>,
    /// Channels awaiting their funding, as of the last poll plus opens since.
    unfunded: AtomicUsize,
    channels: Mutex<Slots>,
    /// The ids of the data directory's payer channels: an open naming one is refused (no
    /// process adds to them while the daemon holds the directory).
    taken: HashSet<ChannelId>,
    /// For checking payers' signatures off the channel's task (see `check_signatures`).
    verifier: Arc<Secp256k1<VerifyOnly>>,
    /// The funded channels' fundings, indexed for reading blocks (see `chain_watch`).
    funding_watch: Mutex<FundingWatch>,
    /// Channels whose funding the node is asked about once (see `chain_events::check_fresh`).
    fresh: Mutex<Vec<ChannelId>>,
}

/// The payee daemon. See the [module docs](self).
pub struct Daemon<C> {
    shared: Arc<Shared<C>>,
    /// Where the chain watcher stopped last time.
    position: Vec<BlockId>,
    /// Whatever must live as long as the daemon (the data directory's lock).
    _held: Option<Box<dyn Send + Sync>>,
}

impl<C: Chain + BlockSource + Send + Sync + 'static> Daemon<C> {
    /// Loads the payee channels of `store` and prepares to serve them, with channel keys and
    /// payout addresses from `wallet`. The store moves to a writer thread of its own.
    ///
    /// Nothing is asked of the node per channel: the chain watcher goes on from the blocks it
    /// stored. Only a store from before those were stored has each funding checked once.
    ///
    /// # Errors
    /// [`DaemonError::Store`], [`DaemonError::Wallet`], [`DaemonError::Restore`].
    pub fn new(
        store: impl Store + Send + 'static,
        wallet: Wallet,
        chain: C,
        config: DaemonConfig,
    ) -> Result<Daemon<C>, DaemonError> {
        if config.min_conf == 0 && config.network != Network::Regtest {
            // A payer could double-spend an unconfirmed funding after being served.
            return Err(DaemonError::Policy("min_conf must be at least 1 off regtest"));
        }
        let mut channels = Slots::new();
        let mut taken = HashSet::new();
        let position = store.chain_position(chain_watch::WATCHER)?;
        let (mut funding_watch, mut fresh) = (FundingWatch::default(), Vec::new());
        // A channel key derived and a state restored per channel: spread over every core.
        let started = Instant::now();
        let keys = wallet.channel_keys();
        let restored: Vec<_> = store
            .channels_versioned()?
            .into_par_iter()
            .map(|(record, version)| {
                Ok((record.state.channel_id(), restore(keys, record)?, version))
            })
            .collect::<Result<_, DaemonError>>()?;
        for (channel_id, restored, version) in restored {
            let Some(Restored { payee, key_index, closed, funding_height, service }) = restored
            else {
                // The directory's payer channels: their ids are not for a payer of ours.
                taken.insert(channel_id);
                continue;
            };
            if let Some(outpoint) = payee.funding_outpoint() {
                let spent = closed.as_ref().map(|c| c.height);
                funding_watch.watch(channel_id, outpoint, funding_height, spent);
                // No blocks to replay (a store from before positions were kept, or a crash
                // before the first was): each open channel's funding is looked at once.
                if position.is_empty() && spent.is_none() {
                    fresh.push(channel_id);
                }
            }
            let slot = Slot {
                payee,
                key_index,
                peer: None,
                closed,
                since: Instant::now(),
                funding_since: None,
                session: config.service.as_ref().map(|s| s.session(channel_id, service)),
                version: Some(version),
            };
            channels.insert(channel_id, Arc::new(tokio::sync::Mutex::new(slot)));
        }
        let ms = started.elapsed().as_millis() as u64;
        info!(channels = channels.len(), ms, "channels loaded");
        let shared = Shared {
            config,
            identity: NodeIdentity::new(&wallet.node_secret()?),
            stand_in_payout: wallet.address(Branch::Receive, 0)?,
            wallet: Arc::new(Mutex::new(wallet)),
            store: StoreWriter::spawn(store),
            chain: Arc::new(chain),
            tip: AtomicU32::new(0),
            tip_read: Mutex::new(None),
            unfunded: AtomicUsize::new(0),
            channels: Mutex::new(channels),
            taken,
            verifier: Arc::new(Secp256k1::verification_only()),
            funding_watch: Mutex::new(funding_watch),
            fresh: Mutex::new(fresh),
        };
        Ok(Daemon { shared: Arc::new(shared), position, _held: None })
    }

    /// Keeps `held` (such as a lock on the data directory) for as long as the daemon lives.
    pub fn holding(mut self, held: impl Send + Sync + 'static) -> Daemon<C> {
        self._held = Some(Box::new(held));
        self
    }

    /// Returns the node key payers connect to.
    pub fn node_id(&self) -> PublicKey {
        self.shared.identity.node_id()
    }

    /// Returns a handle that takes payments on the daemon's channels from elsewhere than its
    /// connections (the HTTP gateway), for as long as the daemon runs.
    pub fn desk(&self) -> PaymentDesk<C> {
        PaymentDesk::new(Arc::clone(&self.shared))
    }

    /// Returns how many channels the daemon serves.
    pub fn channel_count(&self) -> usize {
        self.shared.slots().len()
    }

    /// Serves `listener` until `shutdown` completes, taking connections once the chain watcher
    /// has caught up with the node's best block.
    ///
    /// # Errors
    /// [`DaemonError::Chain`] if the node cannot tell the tip at start,
    /// [`DaemonError::WatcherStopped`] if the chain watcher dies.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let Daemon { shared, position, _held } = self;
        // Reachable at start, or the daemon does not start. Payments wait for the watcher to
        // reach the node's best block.
        shared.blocking(|chain| chain.tip()).await?;
        let mut watcher = match shared.store.shared() {
            false => tokio::spawn(chain_watch::run(Arc::clone(&shared), position)),
            // Several front ends: one watches the chain, elected through the store; every one
            // polls the tip, which payments are checked against.
            true => {
                tokio::spawn(poll_tip(Arc::clone(&shared)));
                tokio::spawn(chain_watch::lead_then_run(Arc::clone(&shared)))
            }
        };
        tokio::pin!(shutdown);
        // No connection is taken before the watcher has caught up with the node: every message
        // is checked against the tip (they wait in the listener's backlog meanwhile).
        let mut caught_up = tokio::time::interval(Duration::from_millis(10));
        while !shared.tip_known() {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                _ = &mut watcher => return Err(DaemonError::WatcherStopped),
                _ = caught_up.tick() => {}
            }
        }
        info!(tip = shared.tip.load(Ordering::SeqCst), "serving");
        let permits = Arc::new(Semaphore::new(shared.config.max_connections));
        let per_ip = Arc::new(Mutex::new(HashMap::new()));
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = &mut watcher => return Err(DaemonError::WatcherStopped),
                accepted = listener.accept() => {
                    let (stream, addr) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        warn!(%addr, "too many connections; closing this one");
                        continue;
                    };
                    let limit = shared.config.max_connections_per_ip;
                    let group = outbox::ip_group(addr.ip());
                    let Some(per_ip) = PerIp::take(&per_ip, group, limit) else {
                        warn!(%addr, "too many connections from this address; closing this one");
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        shared.connection(stream, addr).await;
                        drop((permit, per_ip));
                    });
                }
            }
        }
        watcher.abort();
        info!("stopped");
        Ok(())
    }
}

impl<C: Chain + BlockSource + Send + Sync + 'static> Shared<C> {
    fn set_tip(&self, tip: u32) {
        self.tip.store(tip, Ordering::SeqCst);
        *self.tip_read.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether the watcher has reached the node's best block since the start.
    fn tip_known(&self) -> bool {
        self.tip_read.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Returns the tip, if the node told it recently enough to check a payment against: within
    /// ten polls, and at least 30 s.
    fn fresh_tip(&self) -> Result<u32, Refusal> {
        let read = *self.tip_read.lock().unwrap_or_else(|e| e.into_inner());
        let limit = (self.config.poll_interval * 10).max(Duration::from_secs(30));
        if read.is_none_or(|r| r.elapsed() > limit) {
            return Err(Refusal::StaleTip);
        }
        Ok(self.tip.load(Ordering::SeqCst))
    }

    fn wallet(&self) -> std::sync::MutexGuard<'_, Wallet> {
        self.wallet.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns every channel, as of now.
    fn slot_list(&self) -> Vec<(ChannelId, Arc<tokio::sync::Mutex<Slot>>)> {
        self.slots().iter().map(|(id, s)| (*id, Arc::clone(s))).collect()
    }

    fn funding_watch(&self) -> std::sync::MutexGuard<'_, FundingWatch> {
        self.funding_watch.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, Vec<ChannelId>> {
        self.fresh.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches the funding of channel `id`, just funded: blocks are read for it from now on,
    /// and the node is asked about it once (its payer may have broadcast it already).
    fn watch_funding(&self, id: ChannelId, outpoint: bitcoin::OutPoint) {
        self.funding_watch().watch(id, outpoint, None, None);
        self.fresh().push(id);
    }

    fn slot(&self, id: ChannelId) -> Option<Arc<tokio::sync::Mutex<Slot>>> {
        self.slots().get(&id).cloned()
    }

    /// Locks channel `id`, if it exists still once the lock is taken (an open that failed to
    /// save removes its channel while others wait for it). In a store several front ends
    /// share, a channel this process has not seen (opened through another front end) is read
    /// from it.
    async fn lock_slot(&self, id: ChannelId) -> Option<tokio::sync::OwnedMutexGuard<Slot>> {
        let slot = match self.slot(id) {
            Some(slot) => slot,
            None if self.store.shared() => self.load_slot(id).await?,
            None => return None,
        };
        let guard = Arc::clone(&slot).lock_owned().await;
        self.slot(id).is_some_and(|s| Arc::ptr_eq(&s, &slot)).then_some(guard)
    }

    /// Reads channel `id` from the store into a new slot, if it is a payee channel there.
    async fn load_slot(&self, id: ChannelId) -> Option<Arc<tokio::sync::Mutex<Slot>>> {
        let (record, version) = match self.store.load(id).await {
            Ok(found) => found?,
            Err(e) => {
                warn!(channel_id = %id, "cannot read the channel: {e}");
                return None;
            }
        };
        let slot = Arc::new(tokio::sync::Mutex::new(self.slot_from(record, version)?));
        // Another task may have loaded it meanwhile: one slot per channel.
        Some(Arc::clone(self.slots().entry(id).or_insert(slot)))
    }

    /// A slot for a payee channel read from the store (`None` for a payer's, or one that does
    /// not restore), its funding watched.
    fn slot_from(&self, record: ChannelRecord, version: RowVersion) -> Option<Slot> {
        let id = record.state.channel_id();
        let keys = self.wallet().channel_keys().clone();
        let restored = match restore(&keys, record) {
            Ok(restored) => restored?,
            Err(e) => {
                warn!(channel_id = %id, "cannot restore the channel: {e}");
                return None;
            }
        };
        let Restored { payee, key_index, closed, funding_height, service } = restored;
        if let Some(outpoint) = payee.funding_outpoint() {
            let spent = closed.as_ref().map(|c| c.height);
            self.funding_watch().watch(id, outpoint, funding_height, spent);
        }
        let session = self.config.service.as_ref().map(|s| s.session(id, service));
        Some(Slot {
            payee,
            key_index,
            peer: None,
            closed,
            since: Instant::now(),
            funding_since: None,
            session,
            version: Some(version),
        })
    }

    /// Brings `slot` up to the store's newest state of its channel, if another front end saved
    /// a newer one. Returns whether it changed.
    async fn refresh(&self, slot: &mut Slot) -> bool {
        if !self.store.shared() {
            return false;
        }
        let id = slot.payee.state().terms.channel_id;
        match self.store.load(id).await {
            Ok(Some((record, version))) => self.renew(slot, record, version),
            Ok(None) => false,
            Err(e) => {
                warn!(channel_id = %id, "cannot read the channel: {e}");
                false
            }
        }
    }

    /// Tells the payers of channels funded here but not ready whether the front end that
    /// watches the chain has seen their funding confirmed since (it saved the channel ready).
    async fn ready_elsewhere(&self) {
        for (_, slot) in self.slot_list() {
            let mut slot = slot.lock().await;
            let waiting = slot.payee.funded().is_some_and(|f| !f.ready) && slot.closed.is_none();
            if waiting && self.refresh(&mut slot).await {
                let ready = slot.payee.reestablish().into_iter().filter_map(|a| match a {
                    PayeeAction::Send(msg @ Message::ChannelReady(_)) => Some(msg),
                    _ => None,
                });
                for msg in ready.collect::<Vec<_>>() {
                    self.send(&mut slot, msg);
                }
            }
        }
    }

    /// On a front end that does not watch the chain: counts the channels waiting for their
    /// funding here (against [`DaemonConfig::max_unfunded`]), and forgets, in memory only, those
    /// that never got one in time (the watching front end deletes them from the store).
    fn count_unfunded_here(&self) {
        let expiry = self.config.unfunded_expiry;
        let mut waiting = 0;
        let mut expired = Vec::new();
        for (id, slot) in self.slot_list() {
            // Busy: it is being used, not forgotten; counted at the next poll.
            let Ok(slot) = slot.try_lock() else { continue };
            let f = slot.payee.funded();
            if slot.closed.is_some() || f.is_some_and(|f| f.ready || f.newest.is_some()) {
                continue;
            }
            match f.is_none() && slot.since.elapsed() > expiry {
                true => expired.push(id),
                false => waiting += 1,
            }
        }
        let mut slots = self.slots();
        for id in expired {
            slots.remove(&id);
        }
        self.unfunded.store(waiting, Ordering::SeqCst);
    }

    /// Brings every channel up to the store's newest state, and takes those opened through
    /// other front ends: what the chain watcher does before each block it handles when it
    /// leads in a store several front ends share.
    async fn refresh_all(&self) {
        let records = match self.store.load_all().await {
            Ok(records) => records,
            Err(e) => return warn!("cannot read the channels: {e}"),
        };
        for (record, version) in records {
            let id = record.state.channel_id();
            match self.slot(id) {
                Some(slot) => {
                    self.renew(&mut *slot.lock().await, record, version);
                }
                None => {
                    if let Some(slot) = self.slot_from(record, version) {
                        let slot = Arc::new(tokio::sync::Mutex::new(slot));
                        self.slots().entry(id).or_insert(slot);
                    }
                }
            }
        }
    }

    /// Makes `slot` the stored `record` at `version`, if that is another version than its own.
    /// Returns whether it changed.
    fn renew(&self, slot: &mut Slot, record: ChannelRecord, version: RowVersion) -> bool {
        if slot.version == Some(version) {
            return false;
        }
        let id = record.state.channel_id();
        let keys = self.wallet().channel_keys().clone();
        match restore(&keys, record) {
            Ok(Some(Restored { payee, closed, service, .. })) => {
                info!(channel_id = %id, version, "a newer state from another front end");
                // Funded elsewhere since: its funding is watched from now on.
                let funded = payee.funding_outpoint().filter(|_| slot.payee.funded().is_none());
                if let Some(outpoint) = funded {
                    self.watch_funding(id, outpoint);
                }
                slot.payee = payee;
                slot.closed = closed.or(slot.closed.take());
                slot.version = Some(version);
                if let Some(s) = &self.config.service {
                    slot.session = Some(s.session(id, service));
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                warn!(channel_id = %id, "cannot restore the channel: {e}");
                false
            }
        }
    }

    /// Runs a node call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&C) -> Result<T, ChainError> + Send + 'static,
    ) -> Result<T, ChainError> {
        let chain = Arc::clone(&self.chain);
        tokio::task::spawn_blocking(move || call(&chain)).await.expect("node calls do not panic")
    }

    /// Sends `msg` on the payer's connection, if it is there and reading.
    fn send(&self, slot: &mut Slot, msg: Message) {
        let peer = slot.peer.as_ref().and_then(WeakOutbox::upgrade);
        if peer.is_none_or(|p| p.send(&msg).is_err()) {
            // Gone, or not reading (and being cut off): the payer asks again when it reconnects.
            slot.peer = None;
        }
    }

    /// Carries out `actions` in order. Fails only if a persist fails, and then does nothing
    /// after it.
    async fn carry_out(
        &self,
        slot: &mut Slot,
        actions: Vec<PayeeAction>,
    ) -> Result<(), StoreError> {
        for action in actions {
            match action {
                PayeeAction::Persist => self.persist(slot).await?,
                PayeeAction::Send(msg) => self.send(slot, msg),
                PayeeAction::Broadcast(tx) => {
                    let terms = &slot.payee.state().terms;
                    let (capacity, target_blocks) = (terms.capacity, terms.ladder.step());
                    // Not awaited: the payer's answer need not wait for the node (and the task
                    // may wait for the wallet).
                    let close = Close { tx, capacity, target_blocks };
                    drop(self.close(terms.channel_id, close, false, true));
                }
                other => warn!("an action this build does not know: {other:?}"),
            }
        }
        Ok(())
    }

    /// Saves the channel over the row version it was read at; [`StoreError::Stale`] if another
    /// front end saved it since (then nothing is written: [`Shared::refresh`] it and try again).
    async fn persist(&self, slot: &mut Slot) -> Result<(), StoreError> {
        let state = ChannelState::Payee(slot.payee.state().clone());
        let closed = slot.closed.clone();
        let service = slot.session.as_ref().and_then(|s| s.record());
        let key_index = slot.key_index;
        // The funding height is the watcher's to write (`StoreWriter::record_funding_height`).
        let funding_height = None;
        let record =
            ChannelRecord { key_index, peer: None, state, closed, funding_height, service };
        slot.version = Some(self.store.save(record, slot.version).await?);
        Ok(())
    }

    /// Broadcasts `close` of channel `id` on a blocking thread, bumped by CPFP if the node
    /// refuses it for its fee or `stuck` says it waited in the mempool; the task says whether
    /// it was bumped. A bump finding the wallet busy waits for it if `wait` (a task nobody
    /// awaits), else gives up until the next poll (the watcher, which must not be held up).
    fn close(
        &self,
        id: ChannelId,
        close: Close,
        stuck: bool,
        wait: bool,
    ) -> tokio::task::JoinHandle<bool> {
        let (chain, wallet) = (Arc::clone(&self.chain), Arc::clone(&self.wallet));
        tokio::task::spawn_blocking(move || {
            let txid = close.tx.compute_txid();
            // The wallet is locked only to bump: new channels take addresses from it meanwhile.
            let outcome = match stuck {
                false => fee_bump::refused_for_fee(&*chain, &close),
                true => Ok(true),
            }
            .and_then(|refused| match refused {
                false => Ok(Outcome::Broadcast),
                true => match wallet.try_lock() {
                    Ok(mut wallet) => fee_bump::bump(&*chain, &mut wallet, &close),
                    Err(std::sync::TryLockError::Poisoned(e)) => {
                        fee_bump::bump(&*chain, &mut e.into_inner(), &close)
                    }
                    // Following the chain (after a start, possibly long): the watcher asks
                    // again at the next poll, and is not held up meanwhile.
                    Err(std::sync::TryLockError::WouldBlock) if !wait => {
                        Err(fee_bump::BumpError::Busy)
                    }
                    Err(std::sync::TryLockError::WouldBlock) => {
                        let mut wallet = wallet.lock().unwrap_or_else(|e| e.into_inner());
                        fee_bump::bump(&*chain, &mut wallet, &close)
                    }
                },
            });
            match outcome {
                Ok(Outcome::Broadcast) => {
                    info!(channel_id = %id, %txid, "broadcast");
                    false
                }
                Ok(Outcome::Bumped { child, package_feerate }) => {
                    let sat_per_vb = package_feerate.to_sat_per_vb_floor();
                    info!(channel_id = %id, %txid, %child, sat_per_vb, "bumped by CPFP");
                    true
                }
                Err(e) => {
                    warn!(channel_id = %id, %txid, "close not broadcast: {e}");
                    false
                }
            }
        })
    }
}

/// Reads the node's tip every poll, for a front end that does not lead the chain watcher.
async fn poll_tip<C: Chain + BlockSource + Send + Sync + 'static>(shared: Arc<Shared<C>>) {
    let mut interval = tokio::time::interval(shared.config.poll_interval);
    loop {
        interval.tick().await;
        match shared.blocking(|chain| chain.tip()).await {
            Ok(tip) => shared.set_tip(tip.height),
            Err(e) => warn!("cannot read the tip: {e}"),
        }
        shared.ready_elsewhere().await;
        shared.count_unfunded_here();
    }
}

/// A stored payee channel, restored, with what else its record holds.
struct Restored {
    payee: Payee,
    key_index: u32,
    closed: Option<Closure>,
    funding_height: Option<u32>,
    service: Option<serde_json::Value>,
}

/// Restores a stored channel (a payee's: `None` for a payer's) with its key from `keys`.
fn restore(keys: &ChannelKeys, record: ChannelRecord) -> Result<Option<Restored>, DaemonError> {
    let ChannelRecord { key_index, state, closed, funding_height, service, .. } = record;
    let ChannelState::Payee(state) = state else { return Ok(None) };
    let channel_id = state.terms.channel_id;
    let signer = keys.signer(key_index)?;
    let payee = Payee::restore(signer, state)
        .map_err(|source| DaemonError::Restore { channel_id, source })?;
    Ok(Some(Restored { payee, key_index, closed, funding_height, service }))
}

/// A connection counted against its address group's limit ([`outbox::ip_group`]), for as long
/// as it lives.
struct PerIp {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerIp {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<PerIp> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIp { counts: Arc::clone(counts), ip })
    }
}

impl Drop for PerIp {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}
