//! Responses priced per KiB, paid as they stream.
//!
//! The payee never sends a byte it has not been paid for: a metered response goes out as far
//! as its payments reach and then waits for the next one, for at most the stall timeout, after
//! which it is cut off. The payer pays ahead, at most a window at a time, on
//! [`crate::headers::PAY_PATH`] while it reads. With the response's length known
//! (`Content-Length`), it pays exactly for the bytes there are; without, up to a window it does
//! not receive. See docs/http.md.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::Amount;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use tokio::sync::{mpsc, watch};

use paychan::wire::ChannelId;

use super::ledger::Claim;
use super::BoxError;

/// One metered response under way.
pub(super) struct Meter {
    /// The channel that pays for it.
    pub(super) channel_id: ChannelId,
    /// The price of a KiB.
    pub(super) per_kib: Amount,
    /// Its length, if the upstream said.
    pub(super) length: Option<u64>,
    /// Bytes paid for.
    paid: watch::Sender<u64>,
    /// Top-ups, one at a time: the newest payment taken for this response, so that one sent
    /// again is not counted twice.
    pub(super) top_up: tokio::sync::Mutex<Option<u64>>,
}

impl Meter {
    /// KiB paid for.
    pub(super) fn paid_kib(&self) -> u64 {
        *self.paid.borrow() / 1024
    }

    /// Adds `kib` KiB paid.
    pub(super) fn pay(&self, kib: u64) {
        self.paid.send_modify(|paid| *paid = paid.saturating_add(kib.saturating_mul(1024)));
    }
}

/// The metered responses under way, by the number their payer names them with.
#[derive(Default)]
pub(super) struct Meters {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Meter>>>,
}

impl Meters {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Meter>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get(&self, stream: u64) -> Option<Arc<Meter>> {
        self.live().get(&stream).cloned()
    }

    /// Starts metering `body` for channel `channel_id` with `kib` KiB paid already: returns its
    /// number and the body to send, which goes no further than the payments and ends, cut off,
    /// after waiting `stall` for one.
    pub(super) fn start(
        self: &Arc<Self>,
        (channel_id, per_kib, kib): (ChannelId, Amount, u64),
        body: Incoming,
        claim: Claim,
        stall: Duration,
    ) -> (u64, Pumped) {
        let length = body.size_hint().exact();
        let (paid, _) = watch::channel(kib.saturating_mul(1024));
        let top_up = tokio::sync::Mutex::new(None);
        let meter = Arc::new(Meter { channel_id, per_kib, length, paid, top_up });
        let stream = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.live().insert(stream, Arc::clone(&meter));
        let (tx, rx) = mpsc::channel(4);
        let meters = Arc::clone(self);
        tokio::spawn(async move {
            if pump(body, &meter, &tx, stall).await {
                claim.done();
            }
            meters.live().remove(&stream);
        });
        (stream, Pumped { rx, length })
    }
}

/// Sends `body` on `tx` as far as `meter` is paid. Returns whether all of it was sent.
async fn pump(
    mut body: Incoming,
    meter: &Meter,
    tx: &mpsc::Sender<Result<Bytes, BoxError>>,
    stall: Duration,
) -> bool {
    let mut paid = meter.paid.subscribe();
    let mut sent = 0u64;
    while let Some(frame) = body.frame().await {
        let mut data = match frame.map(Frame::into_data) {
            Ok(Ok(data)) => data,
            Ok(Err(_trailers)) => continue,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return false;
            }
        };
        while !data.is_empty() {
            let allowed = *paid.borrow_and_update();
            if allowed <= sent {
                if let Ok(Ok(())) = tokio::time::timeout(stall, paid.changed()).await {
                    continue;
                }
                let _ = tx.send(Err("cut off: the next KiB was not paid for in time".into())).await;
                return false;
            }
            let n = usize::try_from(allowed - sent).unwrap_or(usize::MAX).min(data.len());
            sent += n as u64;
            if tx.send(Ok(data.split_to(n))).await.is_err() {
                // The payer is gone.
                return false;
            }
        }
    }
    true
}

/// A metered response's body, as [`pump`] lets it through.
pub(super) struct Pumped {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
    length: Option<u64>,
}

impl Body for Pumped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.length.map(hyper::body::SizeHint::with_exact).unwrap_or_default()
    }
}
