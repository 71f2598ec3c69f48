//! What the daemon has to send on one connection, bounded in bytes.
//!
//! Messages are encoded as they are queued, and counted by their size. A connection whose
//! queue would pass its limit (a payer that does not read) is cut: nothing is dropped from the
//! middle of a stream the payer relies on, since an acknowledgement lost while a later message
//! went through would leave the payer believing the payee refused what it stored. The payer
//! reconnects, and the channel picks up from what each side stored.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use paychan::wire::Message;

/// The sending side of a connection's queue.
#[derive(Clone)]
pub(super) struct Outbox {
    queue: mpsc::UnboundedSender<Vec<u8>>,
    state: Arc<State>,
}

/// A handle on an [`Outbox`] that does not keep its connection open.
pub(super) struct WeakOutbox {
    queue: mpsc::WeakUnboundedSender<Vec<u8>>,
    state: Arc<State>,
}

/// The receiving side, for the connection's writer.
pub(super) struct Queue {
    queue: mpsc::UnboundedReceiver<Vec<u8>>,
    state: Arc<State>,
}

struct State {
    queued: AtomicUsize,
    limit: usize,
    /// Told when the queue overflowed: the connection is to be closed.
    cut: Notify,
}

/// The queue is full (the connection is being cut), or the connection is gone.
#[derive(Debug)]
pub(super) struct NotSent;

/// Makes a queue holding at most `limit` bytes of encoded messages.
pub(super) fn outbox(limit: usize) -> (Outbox, Queue) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(State { queued: AtomicUsize::new(0), limit, cut: Notify::new() });
    (Outbox { queue: tx, state: Arc::clone(&state) }, Queue { queue: rx, state })
}

impl Outbox {
    /// Queues `msg`, or cuts the connection if it would pass the limit.
    pub(super) fn send(&self, msg: &Message) -> Result<(), NotSent> {
        let bytes = msg.encode();
        let len = bytes.len();
        let before = self.state.queued.fetch_add(len, Ordering::SeqCst);
        if before + len > self.state.limit {
            self.state.queued.fetch_sub(len, Ordering::SeqCst);
            self.state.cut.notify_one();
            return Err(NotSent);
        }
        self.queue.send(bytes).map_err(|_| NotSent)
    }

    /// Waits until the queue has overflowed.
    pub(super) async fn cut(&self) {
        self.state.cut.notified().await;
    }

    pub(super) fn downgrade(&self) -> WeakOutbox {
        WeakOutbox { queue: self.queue.downgrade(), state: Arc::clone(&self.state) }
    }

    pub(super) fn same(&self, other: &Outbox) -> bool {
        self.queue.same_channel(&other.queue)
    }
}

impl WeakOutbox {
    pub(super) fn upgrade(&self) -> Option<Outbox> {
        let queue = self.queue.upgrade()?;
        Some(Outbox { queue, state: Arc::clone(&self.state) })
    }
}

impl Queue {
    /// Takes what is queued (waiting for something), up to `max` messages, into `out`;
    /// returns how many, 0 once every [`Outbox`] is gone.
    pub(super) async fn recv_many(&mut self, out: &mut Vec<Vec<u8>>, max: usize) -> usize {
        self.queue.recv_many(out, max).await
    }

    /// Frees the room `msgs`, written, took.
    pub(super) fn written(&self, msgs: &[Vec<u8>]) {
        let len: usize = msgs.iter().map(Vec::len).sum();
        self.state.queued.fetch_sub(len, Ordering::SeqCst);
    }
}

/// The group an address's connections count against: an IPv4 address, or an IPv6 /64 (what
/// one customer of a provider usually gets; counting single IPv6 addresses limits nothing).
/// An IPv4 address mapped into IPv6 counts as itself.
pub(super) fn ip_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paychan::wire::{ChannelId, ErrorMessage};

    fn msg(len: usize) -> Message {
        Message::Error(ErrorMessage { channel_id: ChannelId([1; 32]), message: "x".repeat(len) })
    }

    #[tokio::test]
    async fn a_queue_past_its_bytes_is_cut_and_room_comes_back_once_written() {
        let size = msg(100).encode().len();
        let (outbox, mut queue) = outbox(size * 2);
        outbox.send(&msg(100)).unwrap();
        outbox.send(&msg(100)).unwrap();
        assert!(outbox.send(&msg(0)).is_err(), "over the limit");
        // Told to cut the connection.
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.cut()).await.unwrap();
        let mut out = Vec::new();
        assert_eq!(queue.recv_many(&mut out, 10).await, 2);
        queue.written(&out);
        outbox.send(&msg(100)).unwrap();
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ip_group(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(ip_group(ip("2001:db8:1:2:ffff::9")), ip_group(ip("2001:db8:1:2::1")));
        assert_ne!(ip_group(ip("2001:db8:1:3::1")), ip_group(ip("2001:db8:1:2::1")));
        assert_eq!(ip_group(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(ip_group(ip("10.0.0.1")), ip("10.0.0.1"));
    }
}
