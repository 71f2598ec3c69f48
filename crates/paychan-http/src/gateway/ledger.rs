//! What each channel's newest payment has bought: one request.
//!
//! A payment is taken before its request is forwarded. If the request then fails (the upstream
//! is down, the payer's connection drops, the daemon dies), the payer sends the same payment
//! again with its retry, and the desk acknowledges it without charging twice
//! ([`paychan_node::daemon::Taken::fresh`]). This ledger decides whether that retry is served:
//! yes if no request with that payment completed, no if one did or one is under way.
//!
//! The ledger lives in memory. After a restart it is empty, so each channel's newest payment
//! may buy one more request: what the payee risks is one request per channel per restart,
//! against the payer's risk of paying twice for a request the crash cut off.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use paychan::wire::ChannelId;

use super::{BoxError, GatewayBody};

/// Where a payment's request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Forwarded, its response not yet all sent.
    UnderWay,
    /// Its response was all sent.
    Done,
    /// It failed before its response was all sent: a retry with the payment is served.
    Failed,
}

/// Each channel's newest payment seen and what became of its request.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    uses: Mutex<HashMap<ChannelId, (u64, Use)>>,
}

/// Why a payment buys no request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Spent {
    #[error("this payment has bought its request already; sign a new one")]
    Done,
    #[error("a request with this payment is under way")]
    UnderWay,
}

impl Ledger {
    fn uses(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, (u64, Use)>> {
        self.uses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks payment `update` of channel `id`, just taken, as buying a request now, unless one
    /// bought with it is done or under way.
    pub(super) fn claim(self: &Arc<Self>, id: ChannelId, update: u64) -> Result<Claim, Spent> {
        let mut uses = self.uses();
        match uses.get(&id).copied() {
            Some((u, Use::Done)) if u == update => return Err(Spent::Done),
            Some((u, Use::UnderWay)) if u == update => return Err(Spent::UnderWay),
            _ => {}
        }
        uses.insert(id, (update, Use::UnderWay));
        Ok(Claim { ledger: Arc::clone(self), id, update, ended: false })
    }

    fn end(&self, id: ChannelId, update: u64, to: Use) {
        let mut uses = self.uses();
        if let Some(entry) = uses.get_mut(&id).filter(|(u, _)| *u == update) {
            entry.1 = to;
        }
    }
}

/// A request bought with a payment, under way: dropped before [`Claim::done`], the request
/// counts as failed, and a retry with the payment is served.
pub(super) struct Claim {
    ledger: Arc<Ledger>,
    id: ChannelId,
    update: u64,
    ended: bool,
}

impl Claim {
    /// The response was all sent.
    pub(super) fn done(mut self) {
        self.ended = true;
        self.ledger.end(self.id, self.update, Use::Done);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.ended {
            self.ledger.end(self.id, self.update, Use::Failed);
        }
    }
}

/// A response body that marks its [`Claim`] done once it has all been sent: at its end, or
/// once as many bytes as it said it has (a server may stop polling a body of known length
/// then).
pub(super) struct Tracked {
    inner: GatewayBody,
    claim: Option<Claim>,
    left: Option<u64>,
}

impl Tracked {
    pub(super) fn new(inner: GatewayBody, claim: Claim) -> Tracked {
        let left = inner.size_hint().exact();
        let mut tracked = Tracked { inner, claim: Some(claim), left };
        tracked.done_if_sent();
        tracked
    }

    fn done_if_sent(&mut self) {
        if self.left == Some(0) || self.inner.is_end_stream() {
            if let Some(claim) = self.claim.take() {
                claim.done();
            }
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(claim) = self.claim.take() {
                    claim.done();
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.left = self.left.map(|left| left.saturating_sub(n));
                self.done_if_sent();
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_buys_one_request_and_a_failed_one_again() {
        let ledger = Arc::new(Ledger::default());
        let id = ChannelId([1; 32]);
        let claim = ledger.claim(id, 1).unwrap();
        assert_eq!(ledger.claim(id, 1).err(), Some(Spent::UnderWay));
        drop(claim);
        let claim = ledger.claim(id, 1).expect("failed: served again");
        claim.done();
        assert_eq!(ledger.claim(id, 1).err(), Some(Spent::Done));
        ledger.claim(id, 2).expect("a new payment buys a new request").done();
    }
}
