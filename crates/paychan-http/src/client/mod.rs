//! The payer's HTTP client: it sends a request, and on `402 Payment Required` pays the price
//! on a channel to the payee the gateway names, opening one if there is none, and sends the
//! request again with the payment. It never pays more than its [`Budget`].
//!
//! Each payment is saved before it leaves, as over TCP. One whose answer never comes (the
//! gateway died, the connection broke) is sent again with the retry; the gateway then serves
//! the request once for it and charges nothing more. One still unanswered after
//! [`Settings::retry_for`] stays in flight, saved, and is offered with the next request to the
//! payee, in this process or a later one.
//!
//! One request at a time: a channel's payments are numbered, so they are sent in order. To pay
//! for many requests at once, use several clients on several channels.

mod error;
mod metered;

pub use error::HttpError;
pub use metered::Metered;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bitcoin::Amount;
use reqwest::header::HeaderMap;
use reqwest::{Request, Response, StatusCode};
use tracing::{debug, info, warn};

use paychan::chain::Chain;
use paychan::channel::{ChannelError, Payer, PayerAction, PayerStage, PayerState};
use paychan::store::{ChannelRecord, ChannelState, Store};
use paychan::watch::BlockSource;
use paychan::wire::{ChannelId, Message, Pay, PayAck};
use paychan_node::blocking;
use paychan_node::client::{ClientTimeouts, OpenRequest, PayerClient};
use paychan_node::net::PeerAddr;
use paychan_wallet::Wallet;

use crate::headers::{self, Offer};

/// The most the client pays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// The most for one request (a metered response's KiB included); `None`: no limit.
    pub per_request: Option<Amount>,
    /// The most in all, over this client's life; `None`: no limit.
    pub total: Option<Amount>,
}

/// How the client pays.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The most it pays.
    pub budget: Budget,
    /// The channel to open when there is none to the payee; `None`: never open one.
    pub open: Option<OpenRequest>,
    /// Pay on this channel only.
    pub channel: Option<ChannelId>,
    /// For opening a channel.
    pub timeouts: ClientTimeouts,
    /// How long an unanswered payment is sent again before the client gives up on it for now.
    pub retry_for: Duration,
}

impl Settings {
    /// No limits, no channel opened, default timeouts, unanswered payments retried for 60 s.
    pub fn new() -> Settings {
        Settings {
            budget: Budget::default(),
            open: None,
            channel: None,
            timeouts: ClientTimeouts::default(),
            retry_for: Duration::from_secs(60),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new()
    }
}

/// A response, and what it cost.
#[derive(Debug)]
pub struct Paid {
    /// The response.
    pub response: Response,
    /// The channel that paid, if anything was paid.
    pub channel_id: Option<ChannelId>,
    /// What this request cost so far (a metered response's KiB are added as they are read
    /// through [`PaidClient::chunk`]).
    pub paid: Amount,
    /// The channel's total paid.
    pub paid_total: Amount,
    /// Whether the payee asks the payer to settle the channel now.
    pub settle_requested: bool,
    /// For a response priced per KiB: how it is being paid.
    pub metered: Option<Metered>,
}

/// The channel being paid on.
struct Active {
    payer: Payer,
    key_index: u32,
    peer: PeerAddr,
}

/// A payer's HTTP client. See the [module docs](self).
pub struct PaidClient<'a, C, S> {
    http: reqwest::Client,
    wallet: &'a mut Wallet,
    store: &'a mut S,
    chain: &'a C,
    settings: Settings,
    spent: Amount,
    active: Option<Active>,
    /// Channels found unable to pay more (balance or ladder used up).
    exhausted: Vec<ChannelId>,
    /// The prices learnt from 402s, by method and URL (without its query); `None`: free.
    offers: HashMap<String, Option<Offer>>,
    /// By gateway (its origin): the price per request last learnt there, paid for URLs not
    /// seen yet.
    guesses: HashMap<String, Offer>,
    tip: Option<(u32, Instant)>,
}

/// The most times one request is sent with a payment (a price corrected, a payment that had
/// bought its request already).
const MAX_ATTEMPTS: usize = 4;

/// How long a tip read from the node is used, as for payments over TCP.
const TIP_FRESHNESS: Duration = Duration::from_secs(1);

impl<'a, C: Chain + BlockSource, S: Store> PaidClient<'a, C, S> {
    /// A client paying from the channels in `store`, opening new ones with `wallet`'s coins.
    pub fn new(
        (wallet, store): (&'a mut Wallet, &'a mut S),
        chain: &'a C,
        http: reqwest::Client,
        settings: Settings,
    ) -> Self {
        PaidClient {
            http,
            wallet,
            store,
            chain,
            settings,
            spent: Amount::ZERO,
            active: None,
            exhausted: Vec::new(),
            offers: HashMap::new(),
            guesses: HashMap::new(),
            tip: None,
        }
    }

    /// What this client has paid in all.
    pub fn spent(&self) -> Amount {
        self.spent
    }

    /// Sends `request`, paying for it if the gateway asks. The request's body must be bytes (not
    /// a stream): it may be sent more than once.
    ///
    /// The price of a URL is learnt from its first 402 and paid up front from then on. A URL
    /// not seen yet is paid as the last one on the same gateway was: if its price differs, the
    /// gateway refuses the payment, charging nothing, and its 402 tells the price.
    ///
    /// # Errors
    /// [`HttpError`]; for each, what was paid is said there.
    pub async fn send(&mut self, request: Request) -> Result<Paid, HttpError> {
        let key = format!("{} {}", request.method(), without_query(request.url()));
        let origin = request.url().origin().ascii_serialization();
        let (mut refusals, mut attempts) = (0, 0);
        loop {
            attempts += 1;
            if attempts > MAX_ATTEMPTS {
                let reason = format!("no answer settled the payment in {MAX_ATTEMPTS} tries");
                return Err(HttpError::Refused { status: 409, reason });
            }
            let offer = match (self.offers.get(&key), self.guesses.get(&origin)) {
                (Some(Some(offer)), _) => offer.clone(),
                (Some(None), _) => return Ok(unpaid(self.deliver(None, &request).await?)),
                (None, Some(guess)) => guess.clone(),
                (None, None) => {
                    let response = self.deliver(None, &request).await?;
                    if response.status() != StatusCode::PAYMENT_REQUIRED {
                        self.offers.insert(key, None);
                        return Ok(unpaid(response));
                    }
                    self.learn(&key, &origin, response.headers())?
                }
            };
            // A response priced per KiB only is paid for 1 KiB ahead with its request: a
            // payment is never of nothing.
            let kib = u64::from(offer.price == Amount::ZERO && offer.per_kib > Amount::ZERO);
            let charge = offer.per_kib * kib + offer.price;
            let pay = self.voucher(&offer, Amount::ZERO, charge).await?;
            let mut paid_request = clone(&request)?;
            paid_request.headers_mut().insert(headers::PAYMENT, headers::encode_payment(&pay));
            if kib > 0 {
                paid_request.headers_mut().insert(headers::KIB, headers::value(&kib.to_string()));
            }
            let response = self.deliver(Some(&pay), &paid_request).await?;
            let acked = self.take_acks(&response)?;
            let status = response.status();
            if !acked && status.is_success() {
                // A free URL, paid on a guess: the gateway ignored the payment.
                self.abandon(&pay)?;
                self.offers.insert(key, None);
                return Ok(unpaid(response));
            }
            if status == StatusCode::PAYMENT_REQUIRED && !acked {
                // Refused, nothing taken: the price differs, and the 402 says it.
                self.abandon(&pay)?;
                self.offers.remove(&key);
                refusals += 1;
                if refusals > 1 || self.learn(&key, &origin, response.headers()).is_err() {
                    return Err(refused(response));
                }
                continue;
            }
            if status == StatusCode::CONFLICT && acked {
                // Taken, but it had bought a request already: pay anew.
                continue;
            }
            if !acked {
                // Not taken (a 409 without an ack: the payer's state and the payee's
                // disagree, which `paychan pay` reconciles over TCP).
                self.abandon(&pay)?;
                return Err(refused(response));
            }
            self.offers.insert(key, Some(offer.clone()));
            let paid_total =
                headers::parse(response.headers(), &headers::PAID_TOTAL, "paychan-paid-total")?
                    .map_or(Amount::ZERO, Amount::from_sat);
            let settle_requested = response.headers().contains_key(headers::SETTLE);
            let metered = Metered::read(&response, kib)?;
            return Ok(Paid {
                response,
                channel_id: Some(pay.channel_id),
                paid: charge,
                paid_total,
                settle_requested,
                metered,
            });
        }
    }

    /// Takes the offer of a 402 as the price of `key`, and as the guess for other URLs of
    /// `origin` if it is a plain price per request.
    fn learn(&mut self, key: &str, origin: &str, h: &HeaderMap) -> Result<Offer, HttpError> {
        let offer = Offer::read(h)?;
        debug!(%key, price = %offer.price, per_kib = %offer.per_kib, "priced");
        self.offers.insert(key.to_owned(), Some(offer.clone()));
        if offer.per_kib == Amount::ZERO {
            self.guesses.insert(origin.to_owned(), offer.clone());
        }
        Ok(offer)
    }

    /// Sends `request` (with payment `pay`, if any), and again while its answer does not come
    /// (the gateway is restarting, or cannot save), for at most [`Settings::retry_for`].
    async fn deliver(&self, pay: Option<&Pay>, request: &Request) -> Result<Response, HttpError> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            let reason = match self.http.execute(clone(request)?).await {
                Ok(r) if !retry_status(r.status()) || r.headers().contains_key(headers::ACK) => {
                    return Ok(r)
                }
                Ok(r) => format!("{}", r.status()),
                Err(e) if e.is_builder() => return Err(HttpError::Http(e)),
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= self.settings.retry_for {
                return Err(match pay {
                    Some(p) => {
                        let total = Amount::from_sat(p.paid_total_sat);
                        HttpError::InFlight { update: p.update, total, reason }
                    }
                    None => HttpError::Unanswered(reason),
                });
            }
            warn!(update = pay.map(|p| p.update), "no answer ({reason}); sending it again");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Returns the payment for `charge` (on top of `so_far` for this request) to the payee
    /// `offer` names: the one in flight, if a
    /// request before left one, or a new one, saved before it is returned.
    async fn voucher(
        &mut self,
        offer: &Offer,
        so_far: Amount,
        charge: Amount,
    ) -> Result<Pay, HttpError> {
        loop {
            self.ensure_active(offer).await?;
            let active = self.active.as_mut().expect("just ensured");
            if let Some(pay) = in_flight(&active.payer)? {
                info!(update = pay.update, "offering the payment in flight again");
                return Ok(pay);
            }
            self.check_budget(so_far, charge)?;
            let tip = self.tip()?;
            let active = self.active.as_mut().expect("just ensured");
            let actions = match active.payer.pay(charge, tip) {
                Ok(actions) => actions,
                // Used up: another channel, or a new one.
                Err(e @ (ChannelError::Tx(_) | ChannelError::Ladder(_))) => {
                    let id = active.payer.state().terms.channel_id;
                    info!(channel_id = %id, "channel cannot pay {charge}: {e}");
                    self.exhausted.push(id);
                    self.active = None;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut pay = None;
            for action in actions {
                match action {
                    PayerAction::Persist => self.persist()?,
                    PayerAction::Send(Message::Pay(p)) => pay = Some(p),
                    other => warn!("a payment asked for {other:?}; ignored"),
                }
            }
            self.spent += charge;
            return pay.ok_or_else(|| {
                ChannelError::Unexpected { what: "pay", state: "no payment" }.into()
            });
        }
    }

    /// Checks that paying `charge` more for a request that cost `so_far` keeps to the budget.
    fn check_budget(&self, so_far: Amount, charge: Amount) -> Result<(), HttpError> {
        let Budget { per_request, total } = self.settings.budget;
        let request = so_far.checked_add(charge).unwrap_or(Amount::MAX);
        if let Some(limit) = per_request.filter(|l| request > *l) {
            let what = "the most per request";
            return Err(HttpError::OverBudget { price: request, what, limit });
        }
        if let Some(total) = total {
            let left = total.checked_sub(self.spent).unwrap_or(Amount::ZERO);
            if charge > left {
                let what = "what is left of the budget";
                return Err(HttpError::OverBudget { price: charge, what, limit: left });
            }
        }
        Ok(())
    }

    /// Makes the channel to pay `offer` on active: the one active, one in the store, or a new one.
    async fn ensure_active(&mut self, offer: &Offer) -> Result<(), HttpError> {
        let node_id = offer.peer.node_id;
        if self.active.as_ref().is_some_and(|a| a.peer.node_id == node_id) {
            return Ok(());
        }
        self.active = None;
        if let Some(found) = self.find_channel(offer)? {
            self.active = Some(found);
            return Ok(());
        }
        if let Some(id) = self.settings.channel {
            return Err(HttpError::WrongChannel(id, "not an open channel to this payee".into()));
        }
        let Some(request) = self.settings.open.clone() else {
            return Err(HttpError::NoChannel { node_id });
        };
        info!(peer = %offer.peer, capacity = %request.capacity, "opening a channel");
        let parts = (&mut *self.wallet, &mut *self.store);
        let timeouts = self.settings.timeouts;
        let mut client =
            PayerClient::open(parts, self.chain, offer.peer.clone(), &request, timeouts).await?;
        client.wait_ready().await?;
        drop(client);
        self.active = self.find_channel(offer)?;
        self.active.is_some().then_some(()).ok_or(HttpError::NoChannel { node_id })
    }

    /// The newest open channel of the store to `offer`'s payee, not used up.
    fn find_channel(&mut self, offer: &Offer) -> Result<Option<Active>, HttpError> {
        let records = blocking(|| self.store.channels())?;
        let mut found: Option<(ChannelRecord, PayerState, PeerAddr)> = None;
        for record in records {
            let ChannelState::Payer(state) = &record.state else { continue };
            let id = state.terms.channel_id;
            let peer = record.peer.as_deref().and_then(|p| p.parse::<PeerAddr>().ok());
            let Some(peer) = peer.filter(|p| p.node_id == offer.peer.node_id) else { continue };
            let open = match &state.stage {
                PayerStage::Funded(f) => {
                    f.funded.ready && f.closing_sig.is_none() && f.funded.settlement.is_none()
                }
                _ => false,
            };
            let wanted = self.settings.channel.is_none_or(|c| c == id);
            let newer = found.as_ref().is_none_or(|(r, ..)| r.key_index < record.key_index);
            if open && wanted && !self.exhausted.contains(&id) && newer {
                let state = state.clone();
                found = Some((record, state, peer));
            }
        }
        let Some((record, state, peer)) = found else { return Ok(None) };
        let signer = self.wallet.channel_signer(record.key_index)?;
        let payer = Payer::restore(signer, state)?;
        Ok(Some(Active { payer, key_index: record.key_index, peer }))
    }

    /// Takes the acknowledgements a response carries. Returns whether there were any: then
    /// the payee holds the payment.
    fn take_acks(&mut self, response: &Response) -> Result<bool, HttpError> {
        let Some(value) = response.headers().get(headers::ACK) else { return Ok(false) };
        let acks: Vec<PayAck> = headers::decode_acks(value)?;
        let Some(active) = self.active.as_mut() else { return Ok(true) };
        let mut save = false;
        for ack in acks {
            // An ack of what the payer holds already (a checkpoint's, sent again) is no news;
            // one of a payment in flight must check out (a checkpoint's signature).
            let pending = active
                .payer
                .funded()
                .is_some_and(|f| f.pending.iter().any(|p| p.number == ack.update));
            if pending {
                let actions = active.payer.handle_message(&Message::PayAck(ack))?;
                save |= actions.iter().any(|a| matches!(a, PayerAction::Persist));
            }
        }
        if save {
            self.persist()?;
        }
        Ok(true)
    }

    /// Forgets payment `pay`, which the payee refused.
    fn abandon(&mut self, pay: &Pay) -> Result<(), HttpError> {
        let Some(active) = self.active.as_mut() else { return Ok(()) };
        if active.payer.abandon_pending().is_some() {
            info!(update = pay.update, "the gateway refused the payment; forgotten");
            self.spent = self.spent.checked_sub(self.last_charge(pay)).unwrap_or(Amount::ZERO);
            self.persist()?;
        }
        Ok(())
    }

    /// What payment `pay` paid, as the payer now holds the channel (before it).
    fn last_charge(&self, pay: &Pay) -> Amount {
        let before = self.active.as_ref().map_or(Amount::ZERO, |a| a.payer.paid());
        Amount::from_sat(pay.paid_total_sat).checked_sub(before).unwrap_or(Amount::ZERO)
    }

    fn persist(&mut self) -> Result<(), HttpError> {
        let active = self.active.as_ref().expect("a channel is active");
        let state = active.payer.state().clone();
        let record = ChannelRecord::payer(active.key_index, active.peer.to_string(), state);
        Ok(blocking(|| self.store.save_channel(&record))?)
    }

    fn tip(&mut self) -> Result<u32, HttpError> {
        match self.tip {
            Some((tip, read)) if read.elapsed() < TIP_FRESHNESS => Ok(tip),
            _ => {
                let tip = blocking(|| self.chain.tip())?.height;
                self.tip = Some((tip, Instant::now()));
                Ok(tip)
            }
        }
    }
}

/// The payment in flight on `payer`, signed again (it is kept unsigned), if there is one.
fn in_flight(payer: &Payer) -> Result<Option<Pay>, HttpError> {
    let pending = payer.funded().is_some_and(|f| !f.pending.is_empty());
    if !pending {
        return Ok(None);
    }
    // The oldest first: the payee takes them in order.
    Ok(payer.resend_pending()?.into_iter().find_map(|a| match a {
        PayerAction::Send(Message::Pay(p)) => Some(p),
        _ => None,
    }))
}

fn unpaid(response: Response) -> Paid {
    Paid {
        response,
        channel_id: None,
        paid: Amount::ZERO,
        paid_total: Amount::ZERO,
        settle_requested: false,
        metered: None,
    }
}

/// The gateway's refusal as an error: its status and its words.
fn refused(response: Response) -> HttpError {
    let reason = response
        .headers()
        .get(headers::ERROR)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no reason given")
        .to_owned();
    HttpError::Refused { status: response.status().as_u16(), reason }
}

/// Statuses after which a payment is sent again: the gateway could not take it now (503), or
/// took it and could not reach the upstream (502), or is a proxy in front of it failing.
fn retry_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

fn clone(request: &Request) -> Result<Request, HttpError> {
    request.try_clone().ok_or(HttpError::NotRetryable)
}

fn without_query(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}
