//! Shared setup for the fuzz targets: channels opened by the real payer and payee under each of
//! a few checkpoint policies, stopped at each stage of their opening. The keys, the terms and
//! the open-a-channel driver are the test kit's (`crates/paychan-testkit`), which the
//! integration tests share: fixed keys and RFC 6979 signatures make every open the same.

use std::num::NonZeroU64;

use paychan::bitcoin::{Amount, OutPoint, TxOut};
use paychan::channel::{CheckpointPolicy, Payee, Payer, PayerConfig};
use paychan::wire::{ChannelId, Message};
use paychan_testkit::{Opening, Pair, Step};

pub use paychan_testkit::{
    p2wpkh_address, payee_config, signer, FEERATE, LIFETIME, MARGIN, NETWORK, STEP, TIP,
};

/// The refund locktime, `R`.
pub const REFUND: u32 = TIP + LIFETIME;
/// The channel's capacity.
pub const CAPACITY: Amount = Amount::from_sat(100_000);
/// The channel's id, the one the test kit opens.
pub const CHANNEL_ID: ChannelId = ChannelId([7; 32]);

/// The checkpoint policies the fuzz channels are opened with, by index: the default (a
/// checkpoint for every 1% of the capacity, 1000 sat), every payment (the original scheme), only
/// when the payer asks, and every 3 payments or 2500 sat, whichever comes first.
pub fn policies() -> [CheckpointPolicy; 4] {
    [
        CheckpointPolicy::default_for(CAPACITY),
        CheckpointPolicy::every_payment(),
        CheckpointPolicy::on_request(),
        CheckpointPolicy {
            every_payments: NonZeroU64::new(3),
            every_sat: Some(Amount::from_sat(2500)),
        },
    ]
}

/// Returns the payer's configuration, with the default checkpoint policy.
pub fn payer_config() -> PayerConfig {
    payer_config_with(CheckpointPolicy::default_for(CAPACITY))
}

/// Returns the payer's configuration with checkpoint policy `checkpoints`: the test kit's terms
/// for [`CAPACITY`] (refund at [`REFUND`]).
pub fn payer_config_with(checkpoints: CheckpointPolicy) -> PayerConfig {
    PayerConfig { checkpoints, ..paychan_testkit::payer_config(CAPACITY) }
}

/// Returns the messages among `actions` (the payer's or the payee's), in order.
pub fn sent<A: Into<Step>>(actions: Vec<A>) -> Vec<Message> {
    actions
        .into_iter()
        .filter_map(|a| match a.into() {
            Step::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// Both parties of the channel.
#[derive(Debug, Clone)]
pub struct Parties {
    /// The payer.
    pub payer: Payer,
    /// The payee.
    pub payee: Payee,
}

/// One channel opened honestly, with both parties saved at each stage of the open.
#[derive(Debug)]
pub struct Opened {
    /// The payer's `open_channel`.
    pub open_channel: Message,
    /// The payee has accepted and the payer has signed the funding; `funding_created` is not
    /// delivered yet.
    pub awaiting_funding: Parties,
    /// The payer's `funding_created`.
    pub funding_created: Message,
    /// The refund is signed and the funding broadcast, not yet confirmed.
    pub funded: Parties,
    /// The funding is confirmed and `channel_ready` delivered: payments may start.
    pub open: Parties,
    /// The funding output as the chain holds it.
    pub funding: (OutPoint, TxOut),
}

impl Opened {
    /// Runs the open with the default checkpoint policy (see [`Opened::with_checkpoints`]).
    pub fn new() -> Opened {
        Opened::with_checkpoints(CheckpointPolicy::default_for(CAPACITY))
    }

    /// Runs the open with checkpoint policy `checkpoints`, by the test kit's driver:
    /// `open_channel`, `accept_channel`, a funding transaction spending the test kit's made-up
    /// wallet coin, `funding_created`, `refund_signed`, one confirmation, `channel_ready`. Each
    /// stage is the same channel: the keys are fixed and the signatures deterministic.
    pub fn with_checkpoints(checkpoints: CheckpointPolicy) -> Opened {
        let config = payer_config_with(checkpoints);
        let (_, actions) =
            Payer::open(config.clone(), signer(1), CHANNEL_ID, TIP).expect("fixed terms");
        let mut msgs = sent(actions);
        assert_eq!(msgs.len(), 1, "open sends one message: {msgs:?}");
        let open_channel = msgs.remove(0);
        assert!(matches!(open_channel, Message::OpenChannel(_)), "{open_channel:?}");

        let (Opening { payer, payee, .. }, _, funding_created) =
            Opening::funding_created(config.clone());
        let awaiting_funding = Parties { payer, payee };

        let Pair { payer, payee, .. } = Pair::funded_with(config.clone());
        let funded = Parties { payer, payee };

        let pair = Pair::open_with(config);
        let funding = pair.funding_output();
        let open = Parties { payer: pair.payer, payee: pair.payee };
        for (stage, payee) in [("funded", &funded.payee), ("open", &open.payee)] {
            assert_eq!(payee.funding_outpoint(), Some(funding.0), "the {stage} stage's funding");
        }

        Opened { open_channel, awaiting_funding, funding_created, funded, open, funding }
    }
}

impl Default for Opened {
    fn default() -> Self {
        Opened::new()
    }
}

/// The secret key of the payee's node in `noise_transport` (its Noise static key), which
/// `make_seeds` also uses to write first handshake messages that node can read.
pub const NODE_SECRET: [u8; 32] = [0x11; 32];
/// The secret key of another node in `noise_transport`.
pub const OTHER_NODE_SECRET: [u8; 32] = [0x22; 32];

/// A fuzz input, read from the front: what is asked for past its end reads as zeros.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    /// The next `n` bytes, or fewer at the end.
    pub fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    /// The next `N` bytes, zeros past the end.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let head = self.bytes(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// The next eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}
