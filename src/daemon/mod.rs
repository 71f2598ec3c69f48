//! The payee daemon: accepts channels over TCP, watches their funding on chain, and takes
//! payments, for many channels and connections at once.
//!
//! It is the I/O around [`Payee`]: messages come from [`crate::net`] connections, states go to
//! SQLite through the group-commit [`StoreWriter`], transactions go to the node. Each channel
//! sits behind its own lock, so a slow or hostile connection holds up only the channel it talks
//! about, and a connection that misbehaves (a malformed or oversized frame, a stalled message,
//! no handshake) is closed without touching any other.
//!
//! Every [`Action::Persist`] is awaited before the actions after it: an acknowledgement never
//! leaves before the commitment it acknowledges is on disk.

mod chain_watch;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Amount, Network, PublicKey, Transaction};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use crate::chain::{Chain, ChainError};
use crate::channel::{Action, ChannelError, Payee, PayeeConfig};
use crate::closing::Closure;
use crate::datadir::{DataDir, DirLock};
use crate::files::{Catalog, CatalogError, Sale};
use crate::keys::ChannelSigner;
use crate::net::{Connection, NetError, Timeouts};
use crate::store::{ChannelRecord, ChannelState, StoreError, StoreWriter};
use crate::wallet::{Branch, Wallet, WalletError};
use crate::wire::{
    ChannelId, ErrorMessage, FileChunk, FileOffer, FileRequest, Message, OpenChannel, Shutdown,
};

/// What the daemon accepts and how patient it is.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The chain.
    pub network: Network,
    /// Funding confirmations required before payments.
    pub min_conf: u32,
    /// See [`PayeeConfig::margin`].
    pub margin: u32,
    /// See [`PayeeConfig::min_step`].
    pub min_step: u32,
    /// See [`PayeeConfig::min_feerate_sat_per_vb`].
    pub min_feerate_sat_per_vb: u64,
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// How often the node is asked for the tip and the fundings' confirmations.
    pub poll_interval: Duration,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Connections served at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Channels accepted but not yet funded (`funding_created` not received) at once; more
    /// opens are refused until some are funded or expire.
    pub max_unfunded: usize,
    /// How long an accepted channel may wait for its `funding_created` before it is forgotten.
    /// The payee has signed nothing for it yet, so nothing is at stake.
    pub unfunded_expiry: Duration,
    /// The paid file service, if this payee sells files.
    pub files: Option<FileService>,
}

/// The paid file service: the files served and the price of each chunk.
#[derive(Debug, Clone)]
pub struct FileService {
    /// The files.
    pub catalog: Arc<Catalog>,
    /// The price of one chunk.
    pub price_per_chunk: Amount,
}

impl DaemonConfig {
    /// Returns the defaults for `network`: [`PayeeConfig::default_min_conf`], a margin of 2
    /// blocks, a step of at least 1 block, 1 sat/vB, the default [`Timeouts`], a poll each
    /// second, 512 connections (below the usual limit of 1024 open files) and 100 per IP
    /// address, 100 channels awaiting their funding, forgotten after 10 minutes, no files.
    pub fn new(network: Network) -> DaemonConfig {
        DaemonConfig {
            network,
            min_conf: PayeeConfig::default_min_conf(network),
            margin: 2,
            min_step: 1,
            min_feerate_sat_per_vb: 1,
            timeouts: Timeouts::default(),
            poll_interval: Duration::from_secs(1),
            max_connections: 512,
            max_connections_per_ip: 100,
            max_unfunded: 100,
            unfunded_expiry: Duration::from_secs(600),
            files: None,
        }
    }
}

/// Errors of the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The data directory is in use by another process.
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// The files to serve cannot be read.
    #[error("cannot serve the files: {0}")]
    Files(#[source] CatalogError),
    /// Listening failed.
    #[error("cannot listen: {0}")]
    Listen(#[source] std::io::Error),
    /// The task that follows the chain stopped (it panicked): without it no commitment would be
    /// broadcast in time, so the daemon stops too.
    #[error("the chain watcher stopped")]
    WatcherStopped,
}

/// Why a message was refused; sent back to the payer in an `error` message.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("unknown channel")]
    UnknownChannel,
    #[error("too many channels are waiting for their funding; try again later")]
    TooManyUnfunded,
    #[error("the payee cannot reach its bitcoin node; try again later")]
    StaleTip,
    #[error("payer messages only: {0} is not one")]
    NotFromPayer(&'static str),
    #[error("this payee serves no files")]
    NoFileService,
    #[error("no file {0:?} here")]
    NoSuchFile(String),
    #[error("the price is {0} sat per chunk, above the most offered")]
    Price(u64),
    #[error("files are sold on open channels only; this one is {0}")]
    NotOpenForFiles(&'static str),
    // The details stay in the payee's log: they name its files.
    #[error("the payee could not read the file")]
    FileRead(#[from] CatalogError),
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

/// One channel, behind its own lock.
struct Slot {
    payee: Payee,
    key_index: u32,
    /// The connection the payer last spoke on, for what the daemon sends unasked. Weak, so
    /// that the connection closes when its task ends, whatever the channel still points at.
    peer: Option<mpsc::WeakSender<Message>>,
    /// The confirmed transaction that spent the funding: nothing more to watch.
    closed: Option<Closure>,
    /// When this process accepted or loaded it.
    since: Instant,
    /// The file service's sale on this channel, once the payer asked for a file.
    sale: Option<Sale>,
}

/// Messages queued for one connection. A payer that stops reading loses its messages beyond
/// this (it asks again when it reconnects); a pipelining payer must keep fewer in flight.
const OUTBOX: usize = 1024;

/// The most messages taken together from one connection.
const MAX_BATCH: usize = 256;

type Slots = HashMap<ChannelId, Arc<tokio::sync::Mutex<Slot>>>;

struct Shared<C> {
    config: DaemonConfig,
    node_secret: SecretKey,
    wallet: Mutex<Wallet>,
    store: StoreWriter,
    chain: Arc<C>,
    tip: AtomicU32,
    /// When the node last told the tip.
    tip_read: Mutex<Instant>,
    /// Channels awaiting their funding, as of the last poll plus opens since.
    unfunded: AtomicUsize,
    channels: Mutex<Slots>,
}

/// The payee daemon. See the [module docs](self).
pub struct Daemon<C> {
    shared: Arc<Shared<C>>,
    /// The data directory stays ours while the daemon lives.
    _lock: DirLock,
}

impl<C: Chain + Send + Sync + 'static> Daemon<C> {
    /// Takes `datadir`'s lock (for the daemon's life), loads its payee channels and prepares to
    /// serve them.
    ///
    /// # Errors
    /// [`DaemonError::DataDir`] (another process uses it), [`DaemonError::Store`],
    /// [`DaemonError::Wallet`], [`DaemonError::Restore`].
    pub fn new(datadir: DataDir, chain: C, config: DaemonConfig) -> Result<Daemon<C>, DaemonError> {
        let (wallet, store, lock) = datadir.into_locked_parts()?;
        let mut channels = Slots::new();
        for record in store.channels()? {
            let ChannelState::Payee(state) = record.state else { continue };
            let channel_id = state.terms.channel_id;
            let signer = wallet.channel_signer(record.key_index)?;
            let payee = Payee::restore(signer, state)
                .map_err(|source| DaemonError::Restore { channel_id, source })?;
            let slot = Slot {
                payee,
                key_index: record.key_index,
                peer: None,
                closed: record.closed,
                since: Instant::now(),
                sale: None,
            };
            channels.insert(channel_id, Arc::new(tokio::sync::Mutex::new(slot)));
        }
        let shared = Shared {
            config,
            node_secret: wallet.node_secret()?,
            wallet: Mutex::new(wallet),
            store: StoreWriter::spawn(store),
            chain: Arc::new(chain),
            tip: AtomicU32::new(0),
            tip_read: Mutex::new(Instant::now()),
            unfunded: AtomicUsize::new(0),
            channels: Mutex::new(channels),
        };
        Ok(Daemon { shared: Arc::new(shared), _lock: lock })
    }

    /// Returns the node key payers connect to.
    pub fn node_id(&self) -> PublicKey {
        PublicKey::new(self.shared.node_secret.public_key(&Secp256k1::signing_only()))
    }

    /// Returns how many channels the daemon serves.
    pub fn channel_count(&self) -> usize {
        self.shared.slots().len()
    }

    /// Serves `listener` until `shutdown` completes.
    ///
    /// # Errors
    /// [`DaemonError::Chain`] if the node cannot tell the tip at start,
    /// [`DaemonError::WatcherStopped`] if the chain watcher dies.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let Daemon { shared, _lock } = self;
        let tip = shared.blocking(|chain| chain.tip()).await?.height;
        shared.set_tip(tip);
        let mut watcher = tokio::spawn(chain_watch::run(Arc::clone(&shared)));
        let permits = Arc::new(Semaphore::new(shared.config.max_connections));
        let per_ip = Arc::new(Mutex::new(HashMap::new()));
        tokio::pin!(shutdown);
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
                    let Some(per_ip) = PerIp::take(&per_ip, addr.ip(), limit) else {
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

impl<C: Chain + Send + Sync + 'static> Shared<C> {
    fn set_tip(&self, tip: u32) {
        self.tip.store(tip, Ordering::SeqCst);
        *self.tip_read.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Returns the tip, if the node told it recently enough to check a payment against: within
    /// ten polls, and at least 30 s.
    fn fresh_tip(&self) -> Result<u32, Refusal> {
        let read = *self.tip_read.lock().unwrap_or_else(|e| e.into_inner());
        let limit = (self.config.poll_interval * 10).max(Duration::from_secs(30));
        if read.elapsed() > limit {
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

    fn slot(&self, id: ChannelId) -> Option<Arc<tokio::sync::Mutex<Slot>>> {
        self.slots().get(&id).cloned()
    }

    /// Runs a node call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&C) -> Result<T, ChainError> + Send + 'static,
    ) -> Result<T, ChainError> {
        let chain = Arc::clone(&self.chain);
        tokio::task::spawn_blocking(move || call(&chain)).await.expect("node calls do not panic")
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, addr: SocketAddr) {
        let conn = match Connection::accept(stream, &self.node_secret, self.config.timeouts).await {
            Ok(conn) => conn,
            Err(e) => {
                info!(%addr, "handshake failed: {e}");
                return;
            }
        };
        debug!(%addr, "payer connected");
        let Connection { mut reader, mut writer } = conn;
        let (outbox, mut outgoing) = mpsc::channel::<Message>(OUTBOX);
        let writing = tokio::spawn(async move {
            let mut msgs = Vec::new();
            // Whatever is queued goes out in one write.
            while outgoing.recv_many(&mut msgs, OUTBOX).await > 0 {
                if let Err(e) = writer.send_all(&msgs).await {
                    debug!(%addr, "send failed: {e}");
                    break;
                }
                msgs.clear();
            }
        });
        loop {
            let first = reader.recv_idle().await;
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
            self.on_messages(&batch, &outbox).await;
            match end {
                None => {}
                Some(NetError::Closed) => break,
                Some(e) => {
                    info!(%addr, "closing connection: {e}");
                    // The all-zero channel id: about the connection, not a channel.
                    let message = e.to_string();
                    let error = ErrorMessage { channel_id: ChannelId([0; 32]), message };
                    let _ = outbox.try_send(Message::Error(error));
                    break;
                }
            }
        }
        drop(outbox);
        // Let queued answers go out (the writer ends once they are), but do not wait on a peer
        // that does not read.
        let mut writing = writing;
        if tokio::time::timeout(self.config.timeouts.frame, &mut writing).await.is_err() {
            writing.abort();
        }
        debug!(%addr, "connection closed");
    }

    /// Handles messages received together, in order: a run of payments on one channel at
    /// once (one save for the run), anything else one by one.
    async fn on_messages(&self, batch: &[Message], peer: &mpsc::Sender<Message>) {
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
                Message::Pay(_) => self.payments(now, peer).await,
                Message::OpenChannel(open) if self.slot(id).is_none() => {
                    self.open_channel(open, peer).await.err().map(|e| vec![(first, e)])
                }
                _ => self.channel_message(first, peer).await.err().map(|e| vec![(first, e)]),
            };
            for (msg, e) in refused.into_iter().flatten() {
                refuse(peer, msg, &e);
            }
        }
    }

    async fn open_channel(
        &self,
        open: &OpenChannel,
        peer: &mpsc::Sender<Message>,
    ) -> Result<(), Refusal> {
        if self.unfunded.load(Ordering::SeqCst) >= self.config.max_unfunded {
            return Err(Refusal::TooManyUnfunded);
        }
        let tip = self.fresh_tip()?;
        let c = &self.config;
        let mut config = PayeeConfig {
            network: c.network,
            payout: self.wallet().address(Branch::Receive, 0)?,
            margin: c.margin,
            min_step: c.min_step,
            min_feerate_sat_per_vb: c.min_feerate_sat_per_vb,
            min_conf: c.min_conf,
        };
        // Check the terms with a stand-in key and address first: a refused open uses up
        // neither a key index nor an address.
        Payee::accept(open, &config, ChannelSigner::random(), tip)?;
        // A fresh key per channel: the funding script must be new (see `Payee::accept`).
        let key_index = self.store.reserve_key_index().await?;
        let signer = {
            let mut wallet = self.wallet();
            config.payout = wallet.new_address()?;
            wallet.channel_signer(key_index)?
        };
        let (payee, actions) = Payee::accept(open, &config, signer, tip)?;
        self.unfunded.fetch_add(1, Ordering::SeqCst);
        let peer = Some(peer.downgrade());
        let since = Instant::now();
        let slot = Slot { payee, key_index, peer, closed: None, since, sale: None };
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

    async fn channel_message(
        &self,
        msg: &Message,
        peer: &mpsc::Sender<Message>,
    ) -> Result<(), Refusal> {
        if matches!(msg, Message::Error(_)) {
            // The payer refused something we sent; it has said why, and our state stands.
            return Ok(());
        }
        let id = msg.channel_id();
        let slot = self.slot(id).ok_or(Refusal::UnknownChannel)?;
        let mut guard = slot.lock().await;
        if !self.slot(id).is_some_and(|s| Arc::ptr_eq(&s, &slot)) {
            // Its open failed to save while we waited: it is gone.
            return Err(Refusal::UnknownChannel);
        }
        let slot = &mut *guard;
        if let Message::FileRequest(request) = msg {
            slot.peer = Some(peer.downgrade());
            return self.file_request(slot, request);
        }
        let tip = self.tip.load(Ordering::SeqCst);
        let before = slot.payee.clone();
        let actions = slot.payee.handle_message(msg, tip).map_err(|e| refusal(msg, e))?;
        // A message the channel took: this connection is now where its payer is.
        slot.peer = Some(peer.downgrade());
        if let Err(e) = self.carry_out(slot, actions).await {
            // Not on disk, so not done: go back to what is.
            warn!(channel_id = %id, "cannot save: {e}");
            slot.payee = before;
            return Err(e.into());
        }
        Ok(())
    }

    /// Takes payments on one channel, received together: each is checked and countersigned in
    /// turn, the channel is saved once for all of them, and only then do their
    /// acknowledgements leave. Returns the ones refused.
    async fn payments<'m>(
        &self,
        pays: &'m [Message],
        peer: &mpsc::Sender<Message>,
    ) -> Option<Vec<(&'m Message, Refusal)>> {
        let id = pays.first()?.channel_id();
        let all = |e: &dyn Fn() -> Refusal| Some(pays.iter().map(|m| (m, e())).collect());
        let Some(slot) = self.slot(id) else { return all(&|| Refusal::UnknownChannel) };
        let mut guard = slot.lock().await;
        if !self.slot(id).is_some_and(|s| Arc::ptr_eq(&s, &slot)) {
            return all(&|| Refusal::UnknownChannel);
        }
        let slot = &mut *guard;
        let tip = match self.fresh_tip() {
            Ok(tip) => tip,
            Err(_) => return all(&|| Refusal::StaleTip),
        };
        let before = slot.payee.clone();
        let mut refused = Vec::new();
        let mut actions = Vec::new();
        for msg in pays {
            match slot.payee.handle_message(msg, tip) {
                Ok(more) => actions.extend(more),
                Err(e) => refused.push((msg, refusal(msg, e))),
            }
        }
        slot.peer = Some(peer.downgrade());
        // One save, first: every acknowledgement follows a state at least as new as its own.
        let save = actions.iter().any(|a| matches!(a, Action::Persist));
        actions.retain(|a| !matches!(a, Action::Persist));
        if save {
            actions.insert(0, Action::Persist);
        }
        if let Err(e) = self.carry_out(slot, actions).await {
            warn!(channel_id = %id, "cannot save: {e}");
            slot.payee = before;
            return all(&|| Refusal::NotSaved);
        }
        // The payer is here now: ask it to settle while it can, rather than wait for a block
        // and maybe find it gone. No next chunk then: it could not be paid for.
        if slot.payee.near_end(tip) {
            info!(channel_id = %id, "ladder near its end: asking the payer to settle");
            self.send(slot, Message::Shutdown(Shutdown { channel_id: id }));
        } else if let Err(e) = self.send_paid_chunk(slot) {
            refused.push((pays.last().expect("not empty"), e));
        }
        Some(refused)
    }

    /// Offers the file asked for and, if the payer accepts the price, sends its first chunk,
    /// unless a chunk is out unpaid on this channel.
    fn file_request(&self, slot: &mut Slot, request: &FileRequest) -> Result<(), Refusal> {
        let service = self.config.files.as_ref().ok_or(Refusal::NoFileService)?;
        let stage = slot.payee.state().stage.name();
        if !slot.payee.funded().is_some_and(|f| f.ready && f.settlement.is_none()) {
            return Err(Refusal::NotOpenForFiles(stage));
        }
        let file = service
            .catalog
            .file(&request.name)
            .ok_or_else(|| Refusal::NoSuchFile(request.name.clone()))?;
        let channel_id = request.channel_id;
        let price = service.price_per_chunk;
        if request.max_price_per_chunk_sat.is_some_and(|max| price.to_sat() > max) {
            return Err(Refusal::Price(price.to_sat()));
        }
        let sale = slot.sale.get_or_insert_with(|| Sale::new(price));
        let offer = FileOffer {
            channel_id,
            name: file.name.clone(),
            size: file.size,
            chunk_size: file.chunk_size,
            price_per_chunk_sat: service.price_per_chunk.to_sat(),
            sha256: file.sha256,
            owed_sat: sale.owed().to_sat(),
        };
        self.send(slot, Message::FileOffer(offer));
        if request.max_price_per_chunk_sat.is_none() {
            return Ok(());
        }
        info!(%channel_id, file = %file.name, chunks = file.chunks(), "file sale starts");
        let paid = slot.payee.paid();
        let sale = slot.sale.as_mut().expect("made above");
        if let Some(index) = sale.request(file, request.from_chunk, paid) {
            self.send_chunk(slot, index)?;
        }
        Ok(())
    }

    /// Sends the next chunk if the payment just taken paid for the one before.
    fn send_paid_chunk(&self, slot: &mut Slot) -> Result<(), Refusal> {
        let paid = slot.payee.paid();
        match slot.sale.as_mut().and_then(|sale| sale.paid(paid)) {
            Some(index) => self.send_chunk(slot, index),
            None => Ok(()),
        }
    }

    fn send_chunk(&self, slot: &mut Slot, index: u64) -> Result<(), Refusal> {
        let file = slot.sale.as_ref().and_then(Sale::file).expect("a chunk of the file on sale");
        // A small read of a file the page cache most likely holds: not worth a blocking task.
        let data = file.read_chunk(index).inspect_err(|e| warn!("{e}"))?;
        let channel_id = slot.payee.state().terms.channel_id;
        self.send(slot, Message::FileChunk(FileChunk { channel_id, index, data }));
        Ok(())
    }

    /// Sends `msg` on the payer's connection, if it is there and reading.
    fn send(&self, slot: &mut Slot, msg: Message) {
        let peer = slot.peer.as_ref().and_then(mpsc::WeakSender::upgrade);
        if peer.is_none_or(|p| p.try_send(msg).is_err()) {
            // Gone, or not reading: the payer asks again when it reconnects.
            slot.peer = None;
        }
    }

    /// Carries out `actions` in order. Fails only if a persist fails, and then does nothing
    /// after it.
    async fn carry_out(&self, slot: &mut Slot, actions: Vec<Action>) -> Result<(), StoreError> {
        for action in actions {
            match action {
                Action::Persist => self.persist(slot).await?,
                Action::Send(msg) => self.send(slot, msg),
                Action::Broadcast(tx) => self.broadcast(tx),
                Action::FundChannel { .. } => unreachable!("only the payer funds"),
            }
        }
        Ok(())
    }

    async fn persist(&self, slot: &Slot) -> Result<(), StoreError> {
        let state = ChannelState::Payee(slot.payee.state().clone());
        let closed = slot.closed.clone();
        self.store
            .save(ChannelRecord { key_index: slot.key_index, peer: None, state, closed })
            .await
    }

    fn broadcast(&self, tx: Transaction) {
        let chain = Arc::clone(&self.chain);
        tokio::task::spawn_blocking(move || {
            let txid = tx.compute_txid();
            match chain.broadcast(&tx) {
                Ok(_) => info!(%txid, "broadcast"),
                Err(e) => warn!(%txid, "broadcast refused: {e}"),
            }
        });
    }
}

/// A connection counted against its IP address's limit, for as long as it lives.
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

/// Tells the payer why `msg` was refused.
fn refuse(peer: &mpsc::Sender<Message>, msg: &Message, e: &Refusal) {
    let channel_id = msg.channel_id();
    info!(%channel_id, "refused {}: {e}", msg.name());
    let message = e.to_string();
    let _ = peer.try_send(Message::Error(ErrorMessage { channel_id, message }));
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
            | Message::FileOffer(_)
            | Message::FileChunk(_)
    )
}
