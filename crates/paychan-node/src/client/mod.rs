//! The payer's side of a channel over TCP: open, pay and close, through one connection to the
//! payee.
//!
//! It is the I/O around [`Payer`]: every [`PayerAction::Persist`] is committed to the [`Store`]
//! before the message after it leaves, funding comes from the [`Wallet`], transactions go to
//! the [`Chain`]. The store, wallet and chain calls block: each runs under [`crate::blocking`].
//!
//! What a failed payment means depends on where it failed, and the errors say which:
//! - [`ClientError::Unreachable`]: the payee could not be reached, so nothing was signed or sent
//!   and nothing will be charged ([`ClientError::UnreachableInFlight`]: the same, but an earlier
//!   payment is still in flight);
//! - [`ClientError::InFlight`]: the payment was signed and sent but not acknowledged. It stays
//!   in flight: the next connection offers it again, and the payee takes it or has it already.
//!   Nothing else can be paid until then.

mod error;

pub use error::ClientError;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Amount, Psbt, Transaction, Txid};
use tracing::{debug, info};

use paychan::chain::{Chain, Rejection};
use paychan::channel::{
    CheckpointPolicy, Payer, PayerAction, PayerConfig, PayerStage, PayerState, Payment,
};
use paychan::store::{ChannelRecord, ChannelState, Store};
use paychan::watch::BlockSource;
use paychan::wire::{self, ChannelId, Extension, Message};
use paychan_wallet::{Wallet, FEE_RESERVE};

use crate::blocking;
use crate::net::{Connection, FrameError, NetError, PeerAddr, Timeouts};

/// How long the payer waits for the payee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Connecting, the handshake, and frames.
    pub net: Timeouts,
    /// An answer to a message (an acknowledgement, a signature).
    pub reply: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts { net: Timeouts::default(), reply: Duration::from_secs(30) }
    }
}

/// What the payer asks for when opening a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The capacity.
    pub capacity: Amount,
    /// Blocks from the tip to the refund's locktime `R`.
    pub lifetime: u32,
    /// Blocks between commitment locktimes.
    pub step: u32,
    /// The fee rate of the funding and of every channel transaction, sat/vB.
    pub feerate_sat_per_vb: u64,
    /// The payer's margin: it signs no commitment final within this many blocks of the tip.
    pub margin: u32,
    /// When to ask the payee to countersign (a checkpoint).
    pub checkpoints: CheckpointPolicy,
}

/// What another wallet must pay to fund a channel ([`PayerClient::open_external`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalFunding {
    /// The channel.
    pub channel_id: ChannelId,
    /// The funding output's descriptor, `wsh(multi(2,payer,payee))#checksum`, for a wallet to
    /// watch it.
    pub descriptor: String,
    /// The channel's funding address.
    pub address: bitcoin::Address,
    /// The exact amount: the capacity.
    pub amount: Amount,
}

/// What [`PayerClient::pay_pipelined`] reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipelined {
    /// A batch was saved and sent; its newest update is `up_to`.
    Sent {
        /// The newest update sent.
        up_to: u64,
    },
    /// Every update up to `up_to` is acknowledged (not necessarily saved yet).
    Acknowledged {
        /// The newest update acknowledged.
        up_to: u64,
    },
}

/// A payer channel with a live connection to its payee.
pub struct PayerClient<'a, C, S> {
    wallet: &'a mut Wallet,
    store: &'a mut S,
    chain: &'a C,
    conn: Connection,
    payer: Payer,
    key_index: u32,
    peer: PeerAddr,
    timeouts: ClientTimeouts,
    shutdown_requested: bool,
    /// Messages of a service riding on the channel (and `shutdown`), received while waiting
    /// for the channel.
    service_inbox: VecDeque<Message>,
    /// A state change not yet on disk (only while pipelining, see [`PayerClient::pay_pipelined`]):
    /// saved before anything else leaves.
    unsaved: bool,
    /// Whether persists wait for the next send (pipelining).
    defer_persist: bool,
    /// What opening the channel sends first ([`PayerClient::begin`]).
    pending_open: Vec<PayerAction>,
    /// Whether another wallet pays the funding ([`PayerClient::open_external`]): then what it
    /// must pay is kept here once the payee has accepted, instead of funding from our wallet.
    external: Option<Option<ExternalFunding>>,
    /// Whether the payee's `reconcile` was taken on this connection.
    reconciled: bool,
    /// The tip as last read, and when: a payment checks its locktime against a tip at most
    /// [`TIP_FRESHNESS`] old (a block takes minutes; a stream of payments need not ask the node
    /// for each).
    tip: Option<(u32, Instant)>,
}

/// How long a tip read from the node is used for payments.
const TIP_FRESHNESS: Duration = Duration::from_secs(1);

impl<'a, C: Chain + BlockSource, S: Store> PayerClient<'a, C, S> {
    /// Opens a channel with `peer` and returns once the payee has signed the refund and the
    /// funding is broadcast; [`PayerClient::wait_ready`] then waits for its confirmations.
    ///
    /// Connects before anything is created: if the payee cannot be reached, nothing changes.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`], [`ClientError::InsufficientFunds`], [`ClientError::Refused`],
    /// and the others.
    pub async fn open(
        (wallet, store): (&'a mut Wallet, &'a mut S),
        chain: &'a C,
        peer: PeerAddr,
        request: &OpenRequest,
        timeouts: ClientTimeouts,
    ) -> Result<PayerClient<'a, C, S>, ClientError> {
        // The fee reserve stays in the wallet, to bump the refund or a checkpoint.
        let balance = blocking(|| wallet.balance(chain))?;
        let available = balance.checked_sub(FEE_RESERVE).unwrap_or(Amount::ZERO);
        if available < request.capacity {
            return Err(ClientError::InsufficientFunds { available, capacity: request.capacity });
        }
        let mut client =
            PayerClient::begin((wallet, store), chain, peer, request, timeouts).await?;
        client.opening(Awaited::RefundSignature).await?;
        info!(channel_id = %client.channel_id(), "funding broadcast");
        Ok(client)
    }

    /// Opens a channel with `peer` that another wallet funds: returns once the payee has
    /// accepted, with the address and amount to pay. The channel waits for
    /// [`PayerClient::fund_external`], within the payee's limit for unfunded channels (10
    /// minutes by default); nothing of ours is spent.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`], [`ClientError::Refused`], and the others.
    pub async fn open_external(
        (wallet, store): (&'a mut Wallet, &'a mut S),
        chain: &'a C,
        peer: PeerAddr,
        request: &OpenRequest,
        timeouts: ClientTimeouts,
    ) -> Result<ExternalFunding, ClientError> {
        let mut client =
            PayerClient::begin((wallet, store), chain, peer, request, timeouts).await?;
        client.external = Some(None);
        client.opening(Awaited::Accepted).await?;
        let request = client.external.take().flatten();
        request.ok_or(ClientError::UnknownAction("accepted without a funding request".into()))
    }

    /// Funds channel `id`, opened with [`PayerClient::open_external`], with the signed PSBT of
    /// another wallet: checks it ([`paychan::psbt::funding_tx`], then as a funding of our own),
    /// gets the payee's refund signature against its txid, and only then broadcasts it.
    ///
    /// # Errors
    /// [`ClientError::BadPsbt`] with nothing sent, [`ClientError::NotAwaitingFunding`],
    /// [`ClientError::Unreachable`], [`ClientError::Refused`], and the others.
    pub async fn fund_external(
        (wallet, store): (&'a mut Wallet, &'a mut S),
        chain: &'a C,
        id: ChannelId,
        psbt: Psbt,
        timeouts: ClientTimeouts,
    ) -> Result<PayerClient<'a, C, S>, ClientError> {
        let (state, key_index, peer) = payer_record(store, id)?;
        if !matches!(state.stage, PayerStage::AwaitingFunding { .. }) {
            return Err(ClientError::NotAwaitingFunding(id, state.stage.name()));
        }
        let mut payer = Payer::restore(wallet.channel_signer(key_index)?, state)?;
        let bad = |e: String| ClientError::BadPsbt(id, e);
        let tx = paychan::psbt::funding_tx(&Secp256k1::verification_only(), psbt)
            .map_err(|e| bad(e.to_string()))?;
        // The node must take it before the payee signs a refund against it: one it refuses (a
        // fee below the relay minimum, inputs spent or unknown) would leave the channel waiting
        // for a funding that never comes. One it has already is let through: whoever broadcast
        // it still needs the refund.
        match blocking(|| chain.test_accept(&tx)) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.rejection(),
                    Some(Rejection::AlreadyConfirmed { .. } | Rejection::AlreadyInMempool { .. })
                ) => {}
            Err(e) => return Err(bad(format!("the node would not accept it: {e}"))),
        }
        // Checked before anything is sent.
        let actions = payer.funding_signed(tx).map_err(|e| bad(e.to_string()))?;
        let conn =
            Connection::connect(&peer, timeouts.net).await.map_err(ClientError::Unreachable)?;
        let mut client =
            PayerClient::new((wallet, store), chain, conn, payer, key_index, peer, timeouts);
        client.authenticate().await?;
        client.apply(actions).await?;
        let reply = client.timeouts.reply;
        client.until(Awaited::RefundSignature, reply).await?;
        info!(channel_id = %id, "funding from the PSBT broadcast");
        Ok(client)
    }

    /// Connects to `peer` and creates the channel: the payer's side, saved, and `open_channel`
    /// about to leave. Connects before anything is created: if the payee cannot be reached,
    /// nothing changes.
    async fn begin(
        (wallet, store): (&'a mut Wallet, &'a mut S),
        chain: &'a C,
        peer: PeerAddr,
        request: &OpenRequest,
        timeouts: ClientTimeouts,
    ) -> Result<PayerClient<'a, C, S>, ClientError> {
        let conn =
            Connection::connect(&peer, timeouts.net).await.map_err(ClientError::Unreachable)?;
        let tip = blocking(|| chain.tip())?.height;
        let key_index = blocking(|| store.reserve_key_index())?;
        let signer = wallet.channel_signer(key_index)?;
        let config = PayerConfig {
            network: wallet.network(),
            capacity: request.capacity,
            feerate_sat_per_vb: request.feerate_sat_per_vb,
            refund_locktime: tip.saturating_add(request.lifetime),
            step: request.step,
            margin: request.margin,
            payout: blocking(|| wallet.new_address())?,
            checkpoints: request.checkpoints,
        };
        let (payer, actions) = Payer::open(config, signer, ChannelId::random(), tip)?;
        let mut client =
            PayerClient::new((wallet, store), chain, conn, payer, key_index, peer, timeouts);
        client.authenticate().await?;
        client.pending_open = actions;
        Ok(client)
    }

    /// Sends `open_channel` and goes on until `awaited`. If that fails before any funding was
    /// signed, nothing is at stake and the channel goes as if it had never been.
    async fn opening(&mut self, awaited: Awaited) -> Result<(), ClientError> {
        let reply = self.timeouts.reply;
        let actions = std::mem::take(&mut self.pending_open);
        let result = async {
            self.apply(actions).await?;
            self.until(awaited, reply).await
        };
        if let Err(e) = result.await {
            let unfunded = matches!(
                self.payer.state().stage,
                PayerStage::AwaitingAccept | PayerStage::AwaitingFunding { .. }
            );
            if unfunded {
                let id = self.channel_id();
                blocking(|| self.store.delete_channel(id))?;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Reconnects to the payee of channel `id` and picks up where the channel was: a message
    /// left unanswered is sent again and its answer awaited.
    ///
    /// # Errors
    /// [`ClientError::UnknownChannel`], [`ClientError::NotPayer`], [`ClientError::NeverFunded`],
    /// [`ClientError::Unreachable`], and the others.
    pub async fn resume(
        (wallet, store): (&'a mut Wallet, &'a mut S),
        chain: &'a C,
        id: ChannelId,
        timeouts: ClientTimeouts,
    ) -> Result<PayerClient<'a, C, S>, ClientError> {
        let (state, key_index, peer) = payer_record(store, id)?;
        match state.stage {
            PayerStage::AwaitingAccept => return Err(ClientError::NeverFunded(id, "not accepted")),
            PayerStage::AwaitingFunding { .. } => {
                return Err(ClientError::NeverFunded(
                    id,
                    "no funding yet; one opened with --external takes `fund CHANNEL --psbt FILE`",
                ))
            }
            _ => {}
        }
        let signer = wallet.channel_signer(key_index)?;
        let payer = Payer::restore(signer, state)?;
        let conn = match Connection::connect(&peer, timeouts.net).await {
            Ok(conn) => conn,
            Err(e) => {
                return Err(match payer.funded().and_then(|f| f.pending.back()) {
                    // Nothing new was sent, but an earlier payment is still out there.
                    Some(p) => ClientError::UnreachableInFlight {
                        update: p.number,
                        total: p.paid,
                        source: e,
                    },
                    None => ClientError::Unreachable(e),
                });
            }
        };
        let mut client =
            PayerClient::new((wallet, store), chain, conn, payer, key_index, peer, timeouts);
        if let Err(e) = client.authenticate().await {
            return Err(match client.payer.funded().and_then(|f| f.pending.back()) {
                Some(p) => in_flight(p, e),
                None => e,
            });
        }
        client.reestablish().await?;
        Ok(client)
    }

    /// Proves the channel's payer key on this connection: the payee takes nothing about the
    /// channel from a connection that has not.
    async fn authenticate(&mut self) -> Result<(), ClientError> {
        let msg = self.payer.authenticate(&self.conn.session_hash());
        self.conn.send(&msg).await.map_err(ClientError::Connection)
    }

    async fn reestablish(&mut self) -> Result<(), ClientError> {
        let pending = self.payer.funded().and_then(|f| f.pending.back().cloned());
        let actions = self.payer.reestablish()?;
        if let Err(e) = self.apply(actions).await {
            return Err(match pending {
                Some(p) => in_flight(&p, e),
                None => e,
            });
        }
        let reply = self.timeouts.reply;
        if matches!(self.payer.state().stage, PayerStage::AwaitingRefund { .. }) {
            self.until(Awaited::RefundSignature, reply).await?;
        }
        // The payee answers `reestablish` with the newest payment it holds; taking it resends
        // what is still in flight after it.
        while self.payer.funded().is_some() && !self.reconciled {
            if let Err(e) = self.receive("reconcile", reply).await {
                return Err(match pending {
                    Some(p) if !matches!(e, ClientError::Refused(_)) => in_flight(&p, e),
                    _ => e,
                });
            }
        }
        if !Awaited::Ready.arrived(&self.payer) {
            // The payee answers `reestablish` with `channel_ready` at once if it is.
            match self.until(Awaited::Ready, reply).await {
                Err(ClientError::Timeout { .. }) => {
                    return Err(ClientError::NotReady(self.channel_id()))
                }
                other => other?,
            }
        }
        if let Some(p) = pending {
            match self.until(Awaited::Acknowledgement, reply).await {
                Ok(()) => info!(update = p.number, "payment in flight acknowledged"),
                Err(ClientError::Refused(reason)) => {
                    self.abandon(reason.clone())?;
                    return Err(ClientError::Refused(reason));
                }
                Err(e) => return Err(in_flight(&p, e)),
            }
        }
        if self.payer.funded().is_some_and(|f| f.closing_sig.is_some()) {
            self.until(Awaited::SettlementSignature, reply).await?;
        }
        Ok(())
    }

    /// Waits until the payee says the funding has its confirmations, for as long as it takes
    /// (someone must mine); every `reply` timeout it asks again, which also keeps the connection
    /// alive.
    ///
    /// # Errors
    /// [`ClientError::Connection`], [`ClientError::Refused`], and the others.
    pub async fn wait_ready(&mut self) -> Result<(), ClientError> {
        let id = self.channel_id();
        loop {
            match self.until(Awaited::Ready, self.timeouts.reply).await {
                Ok(()) => return Ok(()),
                Err(ClientError::Timeout { .. }) => {
                    debug!(channel_id = %id, "still waiting for the funding's confirmations");
                    let msg = Message::Reestablish(wire::Reestablish { channel_id: id });
                    self.conn.send(&msg).await.map_err(ClientError::Connection)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Pays `amount` more and returns once the payee acknowledged it. The payment is a
    /// checkpoint if the channel's policy says one is due, or if `checkpoint` asks for one:
    /// the payee's signature then comes with the acknowledgement.
    ///
    /// # Errors
    /// [`ClientError::NotOpen`] (closing or settled), [`ClientError::Channel`] (a payment in
    /// flight, balance, ladder exhausted) or [`ClientError::Chain`] with nothing sent;
    /// [`ClientError::InFlight`] once sent; [`ClientError::Refused`] if the payee refused it
    /// (then it is forgotten); [`ClientError::Store`] if it cannot be saved.
    pub async fn pay(&mut self, amount: Amount, checkpoint: bool) -> Result<(), ClientError> {
        if self.payer.funded().is_some_and(|f| f.closing_sig.is_some()) {
            return Err(ClientError::NotOpen(self.channel_id(), self.payer.state().stage.name()));
        }
        let tip = self.tip()?;
        let actions = if checkpoint {
            self.payer.pay_checkpoint(amount, tip)?
        } else {
            self.payer.pay(amount, tip)?
        };
        let pending = *self.payer.funded().and_then(|f| f.pending.back()).expect("just signed");
        let sent = async {
            self.apply(actions).await?;
            self.until(Awaited::Acknowledgement, self.timeouts.reply).await
        };
        match sent.await {
            Ok(()) => Ok(()),
            Err(ClientError::Refused(reason)) => {
                self.abandon(reason.clone())?;
                Err(ClientError::Refused(reason))
            }
            Err(e @ ClientError::Store(_)) => Err(e),
            Err(e) => Err(in_flight(&pending, e)),
        }
    }

    /// Pays each of `amounts` without waiting for each acknowledgement: up to `window` payments
    /// in flight, signed `batch` at a time and saved with one disk flush per batch (which also
    /// saves the acknowledgements taken since the last one) before the batch is sent in one
    /// write. Acknowledgements are taken as they come, several at once when they arrive
    /// together. Returns once every payment is acknowledged; `on_event` is told when each batch
    /// leaves and how far the acknowledgements have come (to measure latency).
    ///
    /// Durability is as for [`PayerClient::pay`]: nothing is sent before it is on disk. An
    /// acknowledgement not yet saved when the process dies is asked for again on the next
    /// connection ([`Payer::reestablish`] resends what was in flight).
    ///
    /// # Errors
    /// As [`PayerClient::pay`]; payments already acknowledged stay paid.
    pub async fn pay_pipelined(
        &mut self,
        amounts: &[Amount],
        window: usize,
        batch: usize,
        mut on_event: impl FnMut(Pipelined),
    ) -> Result<(), ClientError> {
        let (window, batch) = (window.max(1), batch.clamp(1, window.max(1)));
        self.defer_persist = true;
        let result = async {
            let mut next = 0;

            let mut acked = self.payer.funded().map_or(0, |f| f.funded.payments());
            loop {
                let in_flight = self.payer.funded().map_or(0, |f| f.pending.len());
                if next == amounts.len() && in_flight == 0 {
                    break;
                }
                if next < amounts.len() && in_flight + batch <= window {
                    let tip = self.tip()?;
                    let end = (next + batch).min(amounts.len());
                    let mut sends = Vec::with_capacity(end - next);
                    for amount in &amounts[next..end] {
                        for action in self.payer.pay(*amount, tip)? {
                            match action {
                                PayerAction::Send(msg) => sends.push(msg),
                                PayerAction::Persist => self.unsaved = true,
                                other => {
                                    return Err(ClientError::UnknownAction(format!("{other:?}")))
                                }
                            }
                        }
                    }
                    next = end;
                    self.save_if_unsaved()?;
                    self.conn.send_all(&sends).await.map_err(ClientError::Connection)?;
                    let last = self.payer.funded().and_then(|f| f.pending.back()).map(|p| p.number);
                    on_event(Pipelined::Sent { up_to: last.unwrap_or(0) });
                    continue;
                }
                self.receive("a payment acknowledgement", self.timeouts.reply).await?;
                while let Some(msg) = self.conn.reader.try_recv_buffered() {
                    self.take(msg.map_err(ClientError::Connection)?).await?;
                }
                let now = self.payer.funded().map_or(0, |f| f.funded.payments());
                if now > acked {
                    on_event(Pipelined::Acknowledged { up_to: now });
                    acked = now;
                }
            }
            self.save_if_unsaved()
        }
        .await;
        self.defer_persist = false;
        match result {
            Err(ClientError::Refused(reason)) => {
                self.abandon(reason.clone())?;
                Err(ClientError::Refused(reason))
            }
            other => other,
        }
    }

    /// Settles cooperatively: signs the settlement for the total acknowledged, gets the payee's
    /// signature, broadcasts it and returns it. Repeating it on a settled channel broadcasts the
    /// same settlement again.
    ///
    /// # Errors
    /// [`ClientError::Channel`] (not open, a payment in flight), [`ClientError::Refused`],
    /// [`ClientError::Chain`] if the node refuses the settlement.
    pub async fn close(&mut self) -> Result<Transaction, ClientError> {
        if self.payer.funded().is_some_and(|f| f.funded.settlement.is_none()) {
            let actions = self.payer.close()?;
            self.apply(actions).await?;
            self.until(Awaited::SettlementSignature, self.timeouts.reply).await?;
        }
        let f =
            self.payer.funded().ok_or(ClientError::NeverFunded(self.channel_id(), "not funded"))?;
        let tx = f.funded.settlement_tx()?.expect("settled above");
        blocking(|| broadcast(self.chain, &tx))?;
        Ok(tx)
    }

    fn new(
        (wallet, store): (&'a mut Wallet, &'a mut S),
        chain: &'a C,
        conn: Connection,
        payer: Payer,
        key_index: u32,
        peer: PeerAddr,
        timeouts: ClientTimeouts,
    ) -> Self {
        PayerClient {
            wallet,
            store,
            chain,
            conn,
            payer,
            key_index,
            peer,
            timeouts,
            shutdown_requested: false,
            service_inbox: VecDeque::new(),
            unsaved: false,
            defer_persist: false,
            pending_open: Vec::new(),
            external: None,
            reconciled: false,
            tip: None,
        }
    }

    /// Returns the chain tip, read from the node at most [`TIP_FRESHNESS`] ago.
    fn tip(&mut self) -> Result<u32, ClientError> {
        match self.tip {
            Some((tip, read)) if read.elapsed() < TIP_FRESHNESS => Ok(tip),
            _ => {
                let tip = blocking(|| self.chain.tip())?.height;
                self.tip = Some((tip, Instant::now()));
                Ok(tip)
            }
        }
    }

    /// Returns the channel's id.
    pub fn channel_id(&self) -> ChannelId {
        self.payer.state().terms.channel_id
    }

    /// Returns the state machine.
    pub fn payer(&self) -> &Payer {
        &self.payer
    }

    /// Whether the payee asked to settle (`shutdown`) during this connection.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown_requested
    }

    fn abandon(&mut self, reason: String) -> Result<(), ClientError> {
        if let Some(p) = self.payer.abandon_pending() {
            info!(update = p.number, "payee refused the payment ({reason}); forgotten");
            self.persist()?;
        }
        Ok(())
    }

    /// Receives and handles messages until `awaited` has arrived, waiting at most `wait` for
    /// each.
    async fn until(&mut self, awaited: Awaited, wait: Duration) -> Result<(), ClientError> {
        while !awaited.arrived(&self.payer) {
            self.receive(awaited.what(), wait).await?;
        }
        Ok(())
    }

    /// Sends a message of a service that rides on the channel (the file service's
    /// `file_request`).
    ///
    /// # Errors
    /// [`ClientError::Connection`].
    pub async fn send_service(&mut self, msg: Extension) -> Result<(), ClientError> {
        self.conn.send(&Message::Extension(msg)).await.map_err(ClientError::Connection)
    }

    /// Returns the next service message ([`Message::Extension`]: the file service's
    /// `file_offer`, `file_chunk`), or `shutdown` if the payee asked to settle, handling the
    /// channel's own messages that come before it.
    ///
    /// # Errors
    /// [`ClientError::Refused`] (the payee answered `error`), [`ClientError::Timeout`],
    /// [`ClientError::Connection`], and those of handling a channel message.
    pub async fn recv_service(&mut self) -> Result<Message, ClientError> {
        loop {
            if let Some(msg) = self.service_inbox.pop_front() {
                return Ok(msg);
            }
            self.receive("a file chunk or offer", self.timeouts.reply).await?;
        }
    }

    /// Receives one message and handles it: a channel message goes to the state machine, a
    /// service message to the service inbox.
    async fn receive(
        &mut self,
        waiting_for: &'static str,
        wait: Duration,
    ) -> Result<(), ClientError> {
        let msg = match self.conn.recv(wait).await {
            Ok(msg) => msg,
            Err(NetError::Frame(FrameError::Idle { .. })) => {
                return Err(ClientError::Timeout { waiting_for, secs: wait.as_secs() })
            }
            Err(e) => return Err(ClientError::Connection(e)),
        };
        self.take(msg).await
    }

    /// Handles one message received.
    async fn take(&mut self, msg: Message) -> Result<(), ClientError> {
        match msg {
            // About the connection, which the payee closes: not a refusal of what is in flight.
            Message::Error(e) if e.channel_id == ChannelId([0; 32]) => {
                return Err(ClientError::Connection(NetError::ClosedBecause(e.message)))
            }
            Message::Error(e) => return Err(ClientError::Refused(e.message)),
            msg @ Message::Reconcile(_) => {
                let actions = self.payer.handle_message(&msg)?;
                self.apply(actions).await?;
                self.reconciled = true;
            }
            // Answered by the close command (or a service); a payment in progress goes on.
            msg @ Message::Shutdown(_) => {
                self.shutdown_requested = true;
                self.service_inbox.push_back(msg);
            }
            msg @ Message::Extension(_) => self.service_inbox.push_back(msg),
            msg => {
                let actions = self.payer.handle_message(&msg)?;
                self.apply(actions).await?;
            }
        }
        Ok(())
    }

    /// Carries out `actions` in order; a persist that fails stops everything after it.
    async fn apply(&mut self, actions: Vec<PayerAction>) -> Result<(), ClientError> {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                PayerAction::Persist if self.defer_persist => self.unsaved = true,
                PayerAction::Persist => self.persist()?,
                PayerAction::Send(msg) => {
                    self.save_if_unsaved()?;
                    self.conn.send(&msg).await.map_err(ClientError::Connection)?
                }
                PayerAction::Broadcast(tx) => {
                    self.save_if_unsaved()?;
                    let txid = blocking(|| broadcast(self.chain, &tx))?;
                    info!(%txid, "broadcast");
                }
                PayerAction::FundChannel { address, amount } if self.external.is_some() => {
                    let channel_id = self.channel_id();
                    let state = ChannelState::Payer(self.payer.state().clone());
                    let descriptor = state
                        .funding_script()
                        .map(|f| f.descriptor().to_string())
                        .ok_or(ClientError::UnknownAction("funding before accept".into()))?;
                    let request = ExternalFunding { channel_id, address, amount, descriptor };
                    self.external = Some(Some(request));
                }
                PayerAction::FundChannel { address, amount } => {
                    let feerate = self.payer.state().terms.feerate;
                    let script = address.script_pubkey();
                    let (wallet, chain) = (&mut *self.wallet, self.chain);
                    let tx = blocking(|| wallet.fund(chain, &script, amount, feerate))?;
                    let more = self.payer.funding_signed(tx)?;
                    more.into_iter().rev().for_each(|a| queue.push_front(a));
                }
                other => return Err(ClientError::UnknownAction(format!("{other:?}"))),
            }
        }
        Ok(())
    }

    fn save_if_unsaved(&mut self) -> Result<(), ClientError> {
        if std::mem::take(&mut self.unsaved) {
            self.persist()?;
        }
        Ok(())
    }

    fn persist(&mut self) -> Result<(), ClientError> {
        let state = self.payer.state().clone();
        let record = ChannelRecord::payer(self.key_index, self.peer.to_string(), state);
        // A commit waits for the disk: let the worker's other tasks move to another thread
        // meanwhile (many channels pay from one process in the benchmark).
        Ok(blocking(|| self.store.save_channel(&record))?)
    }
}

/// An answer from the payee that a call waits for, told by the payer's state once it came.
#[derive(Debug, Clone, Copy)]
enum Awaited {
    Accepted,
    RefundSignature,
    Ready,
    Acknowledgement,
    SettlementSignature,
}

impl Awaited {
    fn what(self) -> &'static str {
        match self {
            Awaited::Accepted => "accept_channel",
            Awaited::RefundSignature => "the refund signature",
            Awaited::Ready => "channel_ready",
            Awaited::Acknowledgement => "a payment acknowledgement",
            Awaited::SettlementSignature => "the settlement signature",
        }
    }

    fn arrived(self, payer: &Payer) -> bool {
        let f = payer.funded();
        match self {
            Awaited::Accepted => !matches!(payer.state().stage, PayerStage::AwaitingAccept),
            Awaited::RefundSignature => f.is_some(),
            Awaited::Ready => f.is_some_and(|f| f.funded.ready),
            Awaited::Acknowledgement => f.is_some_and(|f| f.pending.is_empty()),
            Awaited::SettlementSignature => f.is_some_and(|f| f.funded.settlement.is_some()),
        }
    }
}

/// Broadcasts `tx`; one the node already has (in its mempool or a block) counts as sent.
///
/// # Errors
/// [`ClientError::Chain`] with the node's refusal.
pub fn broadcast(chain: &impl Chain, tx: &Transaction) -> Result<Txid, ClientError> {
    match chain.broadcast(tx) {
        Ok(txid) => Ok(txid),
        Err(e)
            if matches!(
                e.rejection(),
                Some(Rejection::AlreadyConfirmed { .. } | Rejection::AlreadyInMempool { .. })
            ) =>
        {
            Ok(tx.compute_txid())
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads payer channel `id`: its state, key index and payee.
fn payer_record(
    store: &mut impl Store,
    id: ChannelId,
) -> Result<(PayerState, u32, PeerAddr), ClientError> {
    let record = blocking(|| store.channel(id))?.ok_or(ClientError::UnknownChannel(id))?;
    let ChannelState::Payer(state) = record.state else {
        return Err(ClientError::NotPayer(id));
    };
    let peer = record.peer.as_deref().and_then(|p| p.parse().ok());
    Ok((state, record.key_index, peer.ok_or(ClientError::CorruptPeer(id))?))
}

fn in_flight(p: &Payment, e: ClientError) -> ClientError {
    ClientError::InFlight { update: p.number, total: p.paid, reason: e.to_string() }
}
