//! The 402 gateway: a reverse proxy in front of an HTTP service that forwards a priced request
//! only once its payment is taken and saved, inside the payee daemon ([`PaymentDesk`]).
//!
//! - A free request (its route's price is zero) is forwarded as it is.
//! - A priced request without a payment gets `402 Payment Required` and an [`Offer`] in its
//!   headers; the upstream never sees it.
//! - A priced request with a payment ([`headers::PAYMENT`]) has it taken as exactly the
//!   request's price; a refused payment gets a 4xx saying why, and nothing is charged. The
//!   request is forwarded only once the payment is saved, and the response carries its
//!   acknowledgement ([`headers::ACK`]).
//! - A response priced per KiB streams as far as it is paid for ([`meter`]).
//!
//! The request body is read whole before the payment is taken, up to
//! [`GatewayConfig::max_body`]: a larger one is refused before anything is charged.

mod forward;
mod ledger;
mod meter;
mod reply;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::Amount;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::service::service_fn;
pub use hyper::Uri;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use paychan::chain::Chain;
use paychan::watch::BlockSource;
use paychan::wire::Pay;
use paychan_node::daemon::{PaymentDesk, Taken};
use paychan_node::net::PeerAddr;

use crate::headers::{self, Offer};
use crate::prices::{Price, PriceTable};
use ledger::{Ledger, Tracked};
use meter::Meters;
use reply::{refused, Reply};

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body.
pub type GatewayBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// What the gateway forwards to and charges.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The service behind the gateway: `http://HOST:PORT`, with a path prefix if any.
    pub upstream: Uri,
    /// The prices.
    pub prices: PriceTable,
    /// Where payers open channels with this payee: its node id and its channel port, as
    /// reachable from them.
    pub peer: PeerAddr,
    /// The largest request body taken, in bytes; a larger one is refused with 413.
    pub max_body: usize,
    /// The most KiB of a metered response paid ahead at once.
    pub window_kib: u64,
    /// How long a metered response waits for its next payment before it is cut off.
    pub stall: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive (a slow client holds a connection no
    /// longer), and how long the upstream may take to answer (504 after that: a payment taken
    /// then buys the retry).
    pub timeout: Duration,
}

impl GatewayConfig {
    /// Returns a configuration with `prices` in front of `upstream`, for payers opening
    /// channels at `peer`: request bodies up to 1 MiB, metered responses paid 64 KiB ahead and
    /// cut off after 30 s without a payment, 1024 connections, 30 s for a request's headers and
    /// for the upstream's answer.
    pub fn new(upstream: Uri, prices: PriceTable, peer: PeerAddr) -> GatewayConfig {
        GatewayConfig {
            upstream,
            prices,
            peer,
            max_body: 1024 * 1024,
            window_kib: 64,
            stall: Duration::from_secs(30),
            max_connections: 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The gateway. See the [module docs](self).
pub struct Gateway<C> {
    desk: PaymentDesk<C>,
    config: GatewayConfig,
    upstream: forward::Upstream,
    ledger: Arc<Ledger>,
    meters: Arc<Meters>,
}

impl<C: Chain + BlockSource + Send + Sync + 'static> Gateway<C> {
    /// A gateway taking payments at `desk`.
    pub fn new(desk: PaymentDesk<C>, config: GatewayConfig) -> Arc<Gateway<C>> {
        let upstream = forward::Upstream::new(config.upstream.clone(), config.timeout);
        let (ledger, meters) = Default::default();
        Arc::new(Gateway { desk, config, upstream, ledger, meters })
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` completes.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let permits = Arc::new(Semaphore::new(self.config.max_connections));
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => return,
                p = Arc::clone(&permits).acquire_owned() => p.expect("never closed"),
            };
            let (stream, addr) = tokio::select! {
                () = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("http accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let gateway = Arc::clone(&self);
            let timeout = self.config.timeout;
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let gateway = Arc::clone(&gateway);
                    async move { Ok::<_, Infallible>(gateway.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    debug!(%addr, "http connection ended: {e}");
                }
                drop(permit);
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<GatewayBody> {
        let reply = if req.uri().path() == headers::PAY_PATH {
            self.top_up(req).await
        } else {
            self.request(req).await
        };
        reply.unwrap_or_else(Reply::into_response)
    }

    /// A request for the upstream.
    async fn request(&self, req: Request<Incoming>) -> Result<Response<GatewayBody>, Reply> {
        let price = self
            .config
            .prices
            .price(req.method().as_str(), req.uri().path())
            .ok_or_else(|| Reply::new(StatusCode::NOT_FOUND, "no such route".into()))?;
        if price.is_free() {
            let req = self.read_body(req).await?;
            return Ok(self.upstream.forward(req).await?.map(|b| b.map_err(Into::into).boxed()));
        }
        let Some(payment) = req.headers().get(headers::PAYMENT) else {
            let why = "payment required".to_owned();
            return Err(Reply::payment_required(self.offer(price), why));
        };
        let pay = headers::decode_payment(payment).map_err(Reply::bad_request)?;
        // Prepaid KiB of a metered response, with the request.
        let kib = headers::parse::<u64>(req.headers(), &headers::KIB, "paychan-kib")
            .map_err(Reply::bad_request)?
            .unwrap_or(0);
        if price.per_kib == Amount::ZERO && kib > 0 || kib > self.config.window_kib {
            let why = format!("paychan-kib: at most {} KiB ahead here", self.window(price));
            return Err(Reply::new(StatusCode::BAD_REQUEST, why));
        }
        let req = self.read_body(req).await?;
        let charge = kib_price(price.per_kib, kib)
            .and_then(|k| price.per_request.checked_add(k))
            .ok_or_else(|| {
            Reply::new(StatusCode::BAD_REQUEST, "paychan-kib: too many".into())
        })?;
        let taken =
            self.desk.take(&pay, charge).await.map_err(|e| refused(e, self.offer(price)))?;
        // The payee holds the payment now; whether it still buys this request is the ledger's
        // to say. Two requests with one payment racing here: one is served.
        let claim = match self.ledger.claim(pay.channel_id, pay.update) {
            Ok(claim) => claim,
            Err(spent) => {
                let mut response = Reply::conflict(spent).into_response();
                paid_headers(response.headers_mut(), &taken);
                return Ok(response);
            }
        };
        debug!(channel_id = %pay.channel_id, update = pay.update, fresh = taken.fresh, "paid");
        // Forwarded only now: the payment is saved. A failure from here on leaves the claim
        // failed, and the payer's retry with the same payment is served.
        let response = self.upstream.forward(req).await?;
        let (mut parts, body) = response.into_parts();
        paid_headers(&mut parts.headers, &taken);
        let body = if price.per_kib > Amount::ZERO {
            let metered = (pay.channel_id, price.per_kib, kib);
            let (stream, body) = self.meters.start(metered, body, claim, self.config.stall);
            parts.headers.insert(headers::STREAM, headers::value(&stream.to_string()));
            self.offer(price).write(&mut parts.headers);
            body.boxed()
        } else {
            Tracked::new(body.map_err(Into::into).boxed(), claim).boxed()
        };
        Ok(Response::from_parts(parts, body))
    }

    /// A payment for more of a metered response.
    async fn top_up(&self, req: Request<Incoming>) -> Result<Response<GatewayBody>, Reply> {
        if req.method() != Method::POST {
            return Err(Reply::new(StatusCode::METHOD_NOT_ALLOWED, "POST payments here".into()));
        }
        let h = req.headers();
        let stream = headers::parse::<u64>(h, &headers::STREAM, "paychan-stream");
        let kib = headers::parse::<u64>(h, &headers::KIB, "paychan-kib");
        let (stream, kib, payment) = match (stream, kib, h.get(headers::PAYMENT)) {
            (Ok(Some(s)), Ok(Some(k)), Some(p)) => (s, k, p),
            (Err(e), _, _) | (_, Err(e), _) => return Err(Reply::bad_request(e)),
            _ => {
                let why = "a payment, paychan-stream and paychan-kib are needed".into();
                return Err(Reply::new(StatusCode::BAD_REQUEST, why));
            }
        };
        let pay: Pay = headers::decode_payment(payment).map_err(Reply::bad_request)?;
        let meter = self.meters.get(stream).ok_or_else(|| {
            Reply::new(StatusCode::NOT_FOUND, format!("no metered response {stream} under way"))
        })?;
        if meter.channel_id != pay.channel_id {
            let why = "this payment is not on the channel paying for that response".into();
            return Err(Reply::new(StatusCode::FORBIDDEN, why));
        }
        let mut newest = meter.top_up.lock().await;
        let left = meter.length.map(|l| l.div_ceil(1024).saturating_sub(meter.paid_kib()));
        if kib == 0 || kib > self.config.window_kib || left.is_some_and(|left| kib > left) {
            let why = format!(
                "paychan-kib: 1 to {} KiB, and no more than the response has left ({})",
                self.config.window_kib,
                left.map_or("unknown".to_owned(), |l| format!("{l} KiB")),
            );
            return Err(Reply::new(StatusCode::BAD_REQUEST, why));
        }
        let charge = kib_price(meter.per_kib, kib)
            .ok_or_else(|| Reply::new(StatusCode::BAD_REQUEST, "paychan-kib: too many".into()))?;
        let taken = self.desk.take(&pay, charge).await.map_err(|e| {
            let price = Price { per_request: Amount::ZERO, per_kib: meter.per_kib };
            refused(e, self.offer(price))
        })?;
        // One sent again (its ack was lost) counts once.
        if taken.fresh {
            meter.pay(kib);
            *newest = Some(pay.update);
        } else if *newest != Some(pay.update) {
            return Err(Reply::conflict(ledger::Spent::Done));
        }
        let mut response = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
        paid_headers(response.headers_mut(), &taken);
        Ok(response)
    }

    /// Reads the request body whole, up to the limit.
    async fn read_body(&self, req: Request<Incoming>) -> Result<Request<Full<Bytes>>, Reply> {
        let limit = self.config.max_body;
        let too_large = || {
            let why = format!("the request body is over the limit of {limit} bytes");
            Reply::new(StatusCode::PAYLOAD_TOO_LARGE, why)
        };
        let declared = headers::parse::<u64>(req.headers(), &CONTENT_LENGTH, "content-length")
            .map_err(Reply::bad_request)?;
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let (parts, body) = req.into_parts();
        let body = Limited::new(body, limit).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Reply::new(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))
            }
        })?;
        Ok(Request::from_parts(parts, Full::new(body.to_bytes())))
    }

    fn window(&self, price: Price) -> u64 {
        if price.per_kib == Amount::ZERO {
            0
        } else {
            self.config.window_kib
        }
    }

    fn offer(&self, price: Price) -> Offer {
        Offer {
            peer: self.config.peer.clone(),
            price: price.per_request,
            per_kib: price.per_kib,
            window_kib: self.window(price),
        }
    }
}

/// The price of `kib` KiB, if it fits.
fn kib_price(per_kib: Amount, kib: u64) -> Option<Amount> {
    per_kib.checked_mul(kib)
}

/// Adds what a paid response carries: the acknowledgements, the channel's total, and whether
/// to settle.
fn paid_headers(h: &mut hyper::HeaderMap, taken: &Taken) {
    h.insert(headers::ACK, headers::encode_acks(&taken.acks));
    h.insert(headers::PAID_TOTAL, headers::value(&taken.paid_total.to_sat().to_string()));
    if taken.settle_requested {
        info!("a channel nears the end of its ladder: asking its payer to settle");
        h.insert(headers::SETTLE, headers::value("requested"));
    }
}
