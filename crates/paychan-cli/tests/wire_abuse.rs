//! The payee daemon under attack over TCP, as a real `paychan serve` on a regtest node: garbage
//! bytes, oversize lengths, truncated frames, another protocol version, replayed and
//! out-of-order payments, a payment below the previous total, messages only the payee sends,
//! silent connections and fifty idle ones. Each is refused or timed out, no channel's state
//! moves (and a payer that expects another node key refuses the daemon), and a legitimate payment on another channel still completes promptly;
//! at the end the same daemon process still serves both channels.
//!
//! One node and one daemon with two channels serve every step, set up once. The steps run one
//! after another in one test, each caught on its own, so that a failure names its step and the
//! other steps still run; the slowest wait, the daemon's fixed 10 s frame timeout, runs in a
//! thread alongside them.
//!
//! Every connection the daemon drops is told why first (a `refused` answer during the handshake,
//! an `error` with the all-zero channel id after it), and is really closed, also one that has
//! spoken for a channel (`a_connection_that_spoke_for_a_channel_is_closed_like_any_other`, which
//! found the daemon holding such connections open).

mod common;

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::rand::{thread_rng, RngCore};
use bitcoin::{Address, Amount, Network, PublicKey};
use common::cli::{Daemon, Party};
use common::node::Node;
use common::raw_peer::{Closed, FrameRead, RawPeer};
use paychan::channel::{FundedChannel, Payer, SignedUpdate};
use paychan::keys::ChannelSigner;
use paychan::store::{ChannelState, Store};
use paychan::wire::{self, ChannelId, Message, PROTOCOL_VERSION};
use paychan_node::net::frame::encode_frame;
use paychan_node::net::handshake::{hello, HandshakeError};
use paychan_node::net::{Connection, NetError, PeerAddr, Timeouts, MAX_FRAME};
use paychan_sqlite::{SqliteStore, STORE_FILE};
use paychan_wallet::Wallet;

/// The daemon's `--handshake-timeout`, in seconds.
const HANDSHAKE_TIMEOUT_S: u64 = 2;
/// Its `--idle-timeout`, in seconds.
const IDLE_TIMEOUT_S: u64 = 3;
/// What "at once" means for a refusal: well under the handshake timeout, so that a refusal is
/// not mistaken for a timeout, with room for a machine busy compiling.
const AT_ONCE: Duration = Duration::from_millis(1000);
/// How much later than its timeout the daemon may close a connection.
const SLACK: Duration = Duration::from_secs(3);
/// How much earlier than its timeout a timed-out connection may appear closed (clocks, and the
/// time our own connect took).
const EARLY: Duration = Duration::from_millis(500);
/// How long an answer to one message may take.
const ANSWER: Duration = Duration::from_secs(5);
/// The bound on a legitimate payment, a whole `paychan pay` run, while the daemon is attacked.
const PROMPT_PAYMENT: Duration = Duration::from_secs(5);
/// How long the daemon's log may lag behind what it did.
const LOG_LAG: Duration = Duration::from_secs(2);

fn handshake_timeout() -> Duration {
    Duration::from_secs(HANDSHAKE_TIMEOUT_S)
}

fn idle_timeout() -> Duration {
    Duration::from_secs(IDLE_TIMEOUT_S)
}

/// The daemon's frame timeout: not configurable, the transport's default.
fn frame_timeout() -> Duration {
    Timeouts::default().frame
}

#[test]
fn the_payee_daemon_shrugs_off_wire_abuse() {
    let start = Instant::now();
    let world = World::set_up();
    world.report(format!("node, daemon and two channels set up in {:.2?}", start.elapsed()));
    // Started first: it waits out the 10 s frame timeout while the other steps run.
    let stalled = {
        let (addr, node_id) = (world.daemon.listen.clone(), world.node_id);
        thread::spawn(move || stalled_frame_after_the_handshake(&addr, &node_id))
    };
    let mut steps = Steps::new(&world);
    steps.run("garbage instead of a hello is cut off", garbage_instead_of_a_hello_is_cut_off);
    steps.run("oversize lengths are refused before their payload", oversize_lengths_are_refused);
    steps.run("a frame cut short is timed out or dropped", truncated_first_frames_end);
    steps.run("a wrong node key or another version is refused", wrong_key_or_version_is_refused);
    steps.run("hostile channel messages are refused, state kept", hostile_channel_messages);
    steps.run("a silent connection is closed by the idle timeout", silent_connection_is_closed);
    steps.run("fifty idle connections: pay promptly, then closed", fifty_idle_connections);
    steps.run("a frame stalled after the handshake times out", |w| {
        let took = stalled.join().unwrap_or_else(|panic| resume_unwind(panic));
        w.report(format!("a frame stalled after the handshake was closed after {took:.2?}"));
    });
    steps.run("the daemon still serves both channels", the_daemon_still_serves_both_channels);
    steps.finish();
}

/// The daemon, and two payers with a channel each and a few payments made.
struct World {
    /// Kept running: the daemon and the payers talk to it.
    _node: Node,
    payee: Party,
    daemon: Daemon,
    node_id: PublicKey,
    a: Paying,
    b: Paying,
}

impl World {
    fn set_up() -> World {
        let node = Node::start();
        let payee = Party::new(&node);
        let (payer_a, payer_b) = (Party::new(&node), Party::new(&node));
        payer_a.fund(&node);
        payer_b.fund(&node);
        let daemon = Daemon::start(
            &payee,
            None,
            &[
                "--handshake-timeout",
                &HANDSHAKE_TIMEOUT_S.to_string(),
                "--idle-timeout",
                &IDLE_TIMEOUT_S.to_string(),
            ],
        );
        let node_id = daemon.node_id.parse().expect("the daemon's node id");
        let a = Paying::open(payer_a, &node, &daemon, &[10_000, 5_000, 2_000]);
        let b = Paying::open(payer_b, &node, &daemon, &[1_000]);
        World { _node: node, payee, daemon, node_id, a, b }
    }

    /// Prints `line` past the test harness's capture: the timings are the point.
    fn report(&self, line: String) {
        let _ = writeln!(std::io::stderr(), "wire_abuse: {line}");
    }

    /// The channel as the payee's `show` has it: total, payments, current locktime, state.
    fn payee_view(&self, channel: &str) -> (u64, u64, u64, String) {
        let show = self.payee.channel(channel);
        let n = |k: &str| show[k].as_u64().unwrap_or_else(|| panic!("{k} in {show}"));
        let state = show["state"].as_str().expect("state").to_owned();
        (n("paid_total_sat"), n("payments"), n("current_locktime"), state)
    }

    /// Waits for the daemon's log to say `needle` about the connection from `addr`, and
    /// returns that line.
    fn log_about(&self, addr: SocketAddr, needle: &str) -> String {
        let tag = format!("addr={addr}");
        let deadline = Instant::now() + LOG_LAG;
        loop {
            let log = self.daemon.log();
            let ours = || log.lines().filter(|l| l.contains(&tag));
            if let Some(line) = ours().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon's log says nothing of {needle:?} about {addr}; about it:\n{}",
                ours().collect::<Vec<_>>().join("\n")
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A payer with its channel to the daemon, and the totals of its payments so far.
struct Paying {
    party: Party,
    channel: String,
    id: ChannelId,
    totals: RefCell<Vec<u64>>,
}

impl Paying {
    fn open(party: Party, node: &Node, daemon: &Daemon, payments: &[u64]) -> Paying {
        // A long lifetime: blocks are mined while the channels open, and no payment here may
        // come near the end of the ladder (the daemon would ask to settle).
        let open = party.open(
            node,
            daemon,
            200_000,
            // Every payment a checkpoint: each payment's rung is its number, as the hostile
            // messages below assume.
            &["--lifetime", "200", "--step", "2", "--feerate", "2", "--checkpoint-every", "1"],
        );
        let channel = open["channel_id"].as_str().expect("channel_id").to_owned();
        let id = channel.parse().expect("a channel id");
        let paying = Paying { party, channel, id, totals: RefCell::new(Vec::new()) };
        for &sat in payments {
            paying.pay(sat);
        }
        paying
    }

    /// Pays `sat` through the command line, checks the new total, and returns how long the
    /// whole command took.
    fn pay(&self, sat: u64) -> Duration {
        let start = Instant::now();
        let paid = self.party.json(&["pay", &self.channel, &sat.to_string()]);
        let took = start.elapsed();
        let total = self.total() + sat;
        assert_eq!(paid["paid_total_sat"], total, "{paid}");
        self.totals.borrow_mut().push(total);
        took
    }

    /// The total paid so far.
    fn total(&self) -> u64 {
        self.totals.borrow().last().copied().unwrap_or(0)
    }

    /// The total after update `k` (1 for the first payment).
    fn total_after(&self, k: u64) -> u64 {
        self.totals.borrow()[usize::try_from(k - 1).expect("small")]
    }

    /// The channel's payer, restored from its store between commands, and its channel key:
    /// what a test needs to sign commitments the CLI never would.
    fn payer_side(&self) -> (Payer, ChannelSigner) {
        let dir = self.party.datadir();
        let store = SqliteStore::open(&dir.join(STORE_FILE)).expect("the payer's store");
        let record = store.channel(self.id).expect("read the store").expect("the channel");
        let ChannelState::Payer(state) = record.state else { panic!("not the payer's channel") };
        let wallet =
            Wallet::open(dir, &dir.join(STORE_FILE), Network::Regtest).expect("the payer's wallet");
        let signer = wallet.channel_signer(record.key_index).expect("the channel key");
        // Restoring checks that this key is the channel's payer key.
        (Payer::restore(signer.clone(), state).expect("the payer restores"), signer)
    }
}

/// A `pay` for update `update` paying `paid_sat` in total, at the ladder's locktime for it, its
/// commitment signed by `signer`.
fn signed_pay(f: &FundedChannel, signer: &ChannelSigner, update: u64, paid_sat: u64) -> Message {
    let locktime = f.channel.ladder().locktime(update).expect("a rung of the ladder");
    let builder = f.channel.builder();
    let tx = builder.commitment(Amount::from_sat(paid_sat), locktime).expect("a commitment");
    let signature = signer.sign(builder.sighash(&tx).expect("sighash"));
    Message::Pay(wire::Pay {
        channel_id: f.channel.params().terms.channel_id,
        update,
        paid_total_sat: paid_sat,
        locktime,
        checkpoint: true,
        signature: signature.into(),
    })
}

/// The `pay` that made `update`, byte for byte as the payer sent it.
fn pay_as_sent(f: &FundedChannel, update: &SignedUpdate) -> Message {
    Message::Pay(wire::Pay {
        channel_id: f.channel.params().terms.channel_id,
        update: update.number,
        paid_total_sat: update.paid.to_sat(),
        locktime: update.locktime,
        checkpoint: true,
        signature: update.payer_sig.into(),
    })
}

/// Runs named steps, each caught on its own, and fails at the end naming those that failed.
struct Steps<'w> {
    world: &'w World,
    failed: Vec<&'static str>,
}

impl<'w> Steps<'w> {
    fn new(world: &'w World) -> Steps<'w> {
        Steps { world, failed: Vec::new() }
    }

    fn run(&mut self, name: &'static str, step: impl FnOnce(&World)) {
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| step(self.world)));
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        self.world.report(format!("step {name:?}: {verdict} ({:.2?})", start.elapsed()));
        if outcome.is_err() {
            self.failed.push(name);
        }
    }

    fn finish(self) {
        let log = self.world.daemon.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        assert!(
            self.failed.is_empty(),
            "failed steps (their panics are above): {:?}\nlast lines of the daemon's log:\n{}",
            self.failed,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

/// Waits for the daemon to close `peer`'s connection within `within`, and checks what it said
/// first: one frame mentioning `told`, or (`None`) nothing more.
fn expect_closed(peer: &mut RawPeer, within: Duration, what: &str, told: Option<&str>) -> Closed {
    let closed = peer.wait_closed(within).unwrap_or_else(|received| {
        panic!(
            "{what}: the daemon did not close the connection within {within:?} (it sent {:?})",
            String::from_utf8_lossy(&received)
        )
    });
    match told {
        Some(needle) => assert_told(&closed.received, needle, what),
        None => assert!(closed.received.is_empty(), "{what}: answered {:?}", closed.received),
    }
    closed
}

/// Checks that `received` is one frame, a `refused` answer or an `error` message, whose text
/// mentions `needle`: a connection is told why before it is closed.
fn assert_told(received: &[u8], needle: &str, what: &str) {
    let Ok(Some((payload, used))) = paychan_node::net::frame::decode_frame(received) else {
        panic!("{what}: closed without a whole frame first: {received:?}");
    };
    assert_eq!(used, received.len(), "{what}: more than one frame before the close");
    let text = String::from_utf8_lossy(payload);
    assert!(text.contains("refused") || text.contains("\"error\""), "{what}: told {text}");
    assert!(text.contains(needle), "{what}: told {text}, not {needle:?}");
}

/// Expects the daemon's next message on `peer` to refuse a message about `channel` with a
/// reason mentioning `why`.
fn expect_refusal(peer: &mut RawPeer, channel: ChannelId, why: &str, what: &str) {
    match peer.recv(ANSWER) {
        Message::Error(e) => {
            assert_eq!(e.channel_id, channel, "{what}: refusal about another channel");
            assert!(e.message.contains(why), "{what}: refused for {:?}, not {why:?}", e.message);
        }
        other => panic!("{what}: answered {other:?}, not refused"),
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    encode_frame(payload).expect("a small payload")
}

/// Bytes that are not a hello: each closes the connection at once, with a `refused` answer.
fn garbage_instead_of_a_hello_is_cut_off(w: &World) {
    let (hello, _) = hello();
    let mut bad_nonce = serde_json::to_value(&hello).expect("hello");
    bad_nonce["nonce"] = "zz".repeat(32).into();
    let mut extra_field = serde_json::to_value(&hello).expect("hello");
    extra_field["admin"] = true.into();
    let reestablish = Message::Reestablish(wire::Reestablish { channel_id: w.a.id });
    let cases: [(&str, Vec<u8>); 6] = [
        // Read as a length prefix, "GET " announces some 1.2 GB.
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: paychan\r\n\r\n".to_vec()),
        ("a frame of binary junk", frame(&[0xff, 0x00, 0xfe, 0x01, 0x80, 0x7f])),
        ("a frame of JSON that is no hello", frame(br#"{"hello":"world"}"#)),
        ("a channel message before any hello", frame(&reestablish.encode())),
        ("a hello whose nonce is not hex", frame(&serde_json::to_vec(&bad_nonce).unwrap())),
        ("a hello with an extra field", frame(&serde_json::to_vec(&extra_field).unwrap())),
    ];
    for (what, bytes) in cases {
        let mut peer = RawPeer::connect(&w.daemon.listen);
        peer.send_raw(&bytes).expect("send");
        expect_closed(&mut peer, AT_ONCE, what, Some("refused"));
        w.log_about(peer.local_addr(), "handshake failed");
    }
    // Random bytes: their first four may announce a frame within the limit (odds about 1 in
    // 2^24), which the daemon then waits for until the handshake timeout; either way it ends.
    let mut junk = [0u8; 256];
    thread_rng().fill_bytes(&mut junk);
    let mut peer = RawPeer::connect(&w.daemon.listen);
    peer.send_raw(&junk).expect("send");
    expect_closed(&mut peer, handshake_timeout() + SLACK, "random bytes", Some("refused"));
}

/// A length prefix over `MAX_FRAME`, with none of its payload sent: the daemon must close at
/// once rather than wait for (or allocate) the payload.
fn oversize_lengths_are_refused(w: &World) {
    let mut peer = RawPeer::connect(&w.daemon.listen);
    peer.send_raw(&u32::MAX.to_be_bytes()).expect("send");
    let told = Some("frame of 4294967295 bytes announced");
    expect_closed(&mut peer, AT_ONCE, "4 GiB announced as the first frame", told);
    w.log_about(peer.local_addr(), "frame of 4294967295 bytes announced");

    for len in [u32::MAX, MAX_FRAME as u32 + 1] {
        let mut peer = RawPeer::handshake(&w.daemon.listen, &w.node_id);
        peer.send_raw(&len.to_be_bytes()).expect("send");
        let told = format!("frame of {len} bytes announced");
        let what = format!("{len} bytes announced after the handshake");
        expect_closed(&mut peer, AT_ONCE, &what, Some(&told));
        w.log_about(peer.local_addr(), &format!("frame of {len} bytes announced"));
    }
    // The same after the connection spoke for a channel:
    // `a_connection_that_spoke_for_a_channel_is_closed_like_any_other`.
}

/// A first frame cut short: the rest never comes (the handshake timeout ends it), or the peer
/// hangs up in the middle (the daemon drops it at once).
fn truncated_first_frames_end(w: &World) {
    let mut cut = 100u32.to_be_bytes().to_vec();
    cut.extend_from_slice(&[b'{'; 10]);

    let mut peer = RawPeer::connect(&w.daemon.listen);
    peer.send_raw(&cut).expect("send");
    let closed = expect_closed(
        &mut peer,
        handshake_timeout() + SLACK,
        "10 of 100 bytes",
        Some("handshake timed out"),
    );
    w.report(format!("a first frame cut short was closed after {:.2?}", closed.after));
    assert!(closed.after + EARLY >= handshake_timeout(), "closed before the timeout: {closed:?}");
    w.log_about(peer.local_addr(), "handshake timed out");

    let mut peer = RawPeer::connect(&w.daemon.listen);
    peer.send_raw(&cut).expect("send");
    peer.hang_up_sending();
    expect_closed(&mut peer, AT_ONCE, "10 of 100 bytes, then a hang-up", Some("refused"));
}

/// After the handshake a frame's first bytes arrive and the rest never does: the frame timeout
/// ends it. Returns how long the daemon took.
fn stalled_frame_after_the_handshake(addr: &str, node_id: &PublicKey) -> Duration {
    let mut peer = RawPeer::handshake(addr, node_id);
    let mut cut = 100u32.to_be_bytes().to_vec();
    cut.extend_from_slice(&[b'{'; 10]);
    peer.send_raw(&cut).expect("send");
    let closed = expect_closed(
        &mut peer,
        frame_timeout() + SLACK,
        "10 of 100 bytes after the handshake",
        Some("did not arrive whole"),
    );
    assert!(closed.after + EARLY >= frame_timeout(), "closed before the timeout: {closed:?}");
    closed.after
}

/// Connecting to the daemon as if it were another node fails the handshake on our side; a hello
/// of another protocol version is refused with a reason and the connection closed.
fn wrong_key_or_version_is_refused(w: &World) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let timeouts = Timeouts { handshake: ANSWER, ..Timeouts::default() };
    let connect = |node_id| {
        let peer = PeerAddr { node_id, addr: w.daemon.listen.clone() };
        runtime.block_on(Connection::connect(&peer, timeouts))
    };
    let other: PublicKey = w.a.party.node_id.parse().expect("a node id");
    match connect(other) {
        Ok(_) => panic!("connected to {} as if it were {other}", w.node_id),
        Err(NetError::Handshake(HandshakeError::WrongNode { expected, got })) => {
            assert_eq!((expected, got), (other.to_string(), w.node_id.to_string()));
        }
        Err(e) => panic!("expected a wrong node, got: {e}"),
    }
    // The refusal was about the key: the right one connects.
    connect(w.node_id).unwrap_or_else(|e| panic!("the right key: {e}"));

    for version in [PROTOCOL_VERSION + 1, 0] {
        let (mut hello, _) = hello();
        hello.protocol_version = version;
        let mut peer = RawPeer::connect(&w.daemon.listen);
        peer.send_json(&hello).expect("send");
        let FrameRead::Frame(reply) = peer.read_frame(ANSWER) else {
            panic!("version {version}: no answer")
        };
        let reply: serde_json::Value = serde_json::from_slice(&reply).expect("JSON");
        let reason = reply["refused"]["reason"].as_str().unwrap_or_else(|| panic!("{reply}"));
        assert!(reason.contains(&format!("version {version}")), "{reason}");
        expect_closed(&mut peer, AT_ONCE, &format!("version {version}"), None);
    }
}

/// On one connection, messages about channel A that the payer CLI never sends: each is answered
/// (the newest payment again: its acknowledgement again) or refused with a reason, the
/// connection stays usable, the payee's state of A does not move, and A then takes a real
/// payment.
fn hostile_channel_messages(w: &World) {
    let a = &w.a;
    let (payer, signer) = a.payer_side();
    let side = payer.funded().expect("a funded channel");
    let f = &side.funded;
    let latest = f.checkpoint.clone().expect("payments were made, each a checkpoint");
    let (next, total) = (latest.number + 1, latest.paid.to_sat());
    assert_eq!(total, a.total());
    let before = w.payee_view(&a.channel);
    assert_eq!(before, (total, latest.number, u64::from(latest.locktime), "open".into()));

    let mut peer = RawPeer::handshake(&w.daemon.listen, &w.node_id);
    let same_ack = Message::PayAck(wire::PayAck {
        channel_id: a.id,
        update: latest.number,
        signature: Some(latest.payee_sig.into()),
    });
    peer.send(&pay_as_sent(f, &latest));
    assert_eq!(peer.recv(ANSWER), same_ack, "the newest payment, replayed");

    // Signatures are deterministic (RFC 6979): these are the very bytes the payer once sent.
    // A pipelining payer resends everything it had in flight: an older one gets the newest ack.
    let older = latest.number - 1;
    peer.send(&signed_pay(f, &signer, older, a.total_after(older)));
    assert_eq!(peer.recv(ANSWER), same_ack, "an older payment, replayed");

    peer.send(&signed_pay(f, &signer, next + 1, total + 2_000));
    expect_refusal(&mut peer, a.id, "out of order", "an update skipped");

    peer.send(&signed_pay(f, &signer, next, total - 1_000));
    expect_refusal(&mut peer, a.id, "does not exceed the previous total", "a lower total");

    peer.send(&signed_pay(f, &signer, next, total));
    expect_refusal(&mut peer, a.id, "does not exceed the previous total", "the same total");

    peer.send(&signed_pay(f, &ChannelSigner::random(), next, total + 1_000));
    expect_refusal(&mut peer, a.id, "bad signature", "a payment signed by another key");

    let settlement = f.channel.builder().settlement(Amount::from_sat(total - 1_000)).unwrap();
    let signature = signer.sign(f.channel.builder().sighash(&settlement).unwrap());
    peer.send(&Message::ClosingSigned(wire::ClosingSigned {
        channel_id: a.id,
        paid_total_sat: total - 1_000,
        signature: signature.into(),
    }));
    expect_refusal(&mut peer, a.id, "settlement pays", "a settlement for less than paid");

    // The opening messages again: the same terms on an open channel are refused, and the same
    // funding is answered with the same refund signature (the payer may have lost it), as the
    // payer CLI itself would resend them.
    let terms = &payer.state().terms;
    let payer_address = Address::from_script(&terms.payer_script, Network::Regtest).unwrap();
    peer.send(&Message::OpenChannel(wire::OpenChannel {
        channel_id: a.id,
        network: Network::Regtest,
        capacity_sat: terms.capacity.to_sat(),
        feerate_sat_per_vb: terms.feerate.to_sat_per_vb_floor(),
        refund_locktime: terms.ladder.refund(),
        step: terms.ladder.step(),
        payer_key: terms.payer_key,
        payer_address: payer_address.as_unchecked().clone(),
        checkpoint_every_payments: Some(1),
        checkpoint_every_sat: Some(2_000),
    }));
    expect_refusal(&mut peer, a.id, "unexpected open_channel", "the open replayed");
    let mut funding_tx = side.funding_tx.clone();
    funding_tx.input.iter_mut().for_each(|input| input.witness.clear());
    let vout = f.channel.params().funding_outpoint.vout;
    peer.send(&Message::FundingCreated(wire::FundingCreated {
        channel_id: a.id,
        funding_tx,
        vout,
    }));
    let same_refund_sig =
        wire::RefundSigned { channel_id: a.id, signature: side.refund_payee_sig.into() };
    assert_eq!(peer.recv(ANSWER), Message::RefundSigned(same_refund_sig), "the funding replayed");

    let stranger = ChannelId::random();
    let Message::Pay(pay) = signed_pay(f, &signer, next, total + 1_000) else { unreachable!() };
    peer.send(&Message::Pay(wire::Pay { channel_id: stranger, ..pay }));
    expect_refusal(&mut peer, stranger, "unknown channel", "a payment on an unknown channel");

    let payee_only = [
        same_ack.clone(),
        Message::ChannelReady(wire::ChannelReady { channel_id: a.id }),
        Message::Shutdown(wire::Shutdown { channel_id: a.id }),
    ];
    for msg in payee_only {
        peer.send(&msg);
        expect_refusal(&mut peer, a.id, "payer messages only", msg.name());
    }

    // An error is taken note of and not answered: the next answer is the next message's.
    peer.send(&Message::Error(wire::ErrorMessage {
        channel_id: a.id,
        message: "you are wrong".into(),
    }));
    peer.send(&pay_as_sent(f, &latest));
    assert_eq!(peer.recv(ANSWER), same_ack, "after an error message");

    assert_eq!(w.payee_view(&a.channel), before, "the payee's state of A moved");
    // A real payment, with the hostile connection still open.
    let took = a.pay(3_000);
    w.report(format!("a payment on A right after the hostile messages took {took:.2?}"));
    assert_eq!(w.payee_view(&a.channel).0, total + 3_000);
}

/// A connection that goes silent after the handshake is closed by the idle timeout.
fn silent_connection_is_closed(w: &World) {
    let mut peer = RawPeer::handshake(&w.daemon.listen, &w.node_id);
    let closed = expect_closed(
        &mut peer,
        idle_timeout() + SLACK,
        "silent after the handshake",
        Some("no message for"),
    );
    w.report(format!("a silent connection was closed after {:.2?}", closed.after));
    assert!(closed.after + EARLY >= idle_timeout(), "closed before the timeout: {closed:?}");
    w.log_about(peer.local_addr(), "no message for");
}

/// Fifty connections that never say a word: a payment on channel B completes promptly while
/// they are held, and the handshake timeout closes every one of them.
fn fifty_idle_connections(w: &World) {
    let baseline = w.b.pay(1_000);
    let opened = Instant::now();
    let mut idle: Vec<RawPeer> = (0..50).map(|_| RawPeer::connect(&w.daemon.listen)).collect();
    let took = w.b.pay(1_000);
    w.report(format!(
        "a payment on B took {took:.2?} with 50 idle connections held ({baseline:.2?} without)"
    ));
    assert!(took < PROMPT_PAYMENT, "a payment took {took:?} with 50 idle connections");
    assert_eq!(w.payee_view(&w.b.channel).0, w.b.total());

    let deadline = opened + handshake_timeout() + SLACK;
    let mut still_open = 0;
    for peer in &mut idle {
        let left = deadline.saturating_duration_since(Instant::now());
        match peer.wait_closed(left) {
            Ok(closed) => {
                assert_told(&closed.received, "handshake timed out", "an idle connection")
            }
            Err(_) => still_open += 1,
        }
    }
    let all_by = opened.elapsed();
    assert_eq!(still_open, 0, "idle connections still open {all_by:?} after they were made");
    w.report(format!("all 50 idle connections were closed {all_by:.2?} after they were made"));
}

/// The same process still takes handshakes and payments on both channels, and logged no panic.
fn the_daemon_still_serves_both_channels(w: &World) {
    RawPeer::handshake(&w.daemon.listen, &w.node_id);
    for paying in [&w.a, &w.b] {
        let took = paying.pay(4_000);
        assert!(took < PROMPT_PAYMENT, "a payment took {took:?}");
        assert_eq!(w.payee_view(&paying.channel).0, paying.total());
    }
    let log = w.daemon.log();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

/// Once a connection has spoken for an existing channel, the channel remembers it (to send
/// `channel_ready` or `shutdown` unasked). That must not keep the connection alive when the
/// daemon drops it: the channel holds only a weak handle.
#[test]
fn a_connection_that_spoke_for_a_channel_is_closed_like_any_other() {
    let world = World::set_up();
    let mut steps = Steps::new(&world);
    steps.run("an oversize length after a channel message closes at once", |w| {
        let mut peer = spoke_for(w, &w.a);
        peer.send_raw(&u32::MAX.to_be_bytes()).expect("send");
        w.log_about(peer.local_addr(), "closing connection: frame of 4294967295 bytes announced");
        expect_closed(
            &mut peer,
            AT_ONCE,
            "4 GiB announced after a channel message",
            Some("frame of 4294967295"),
        );
    });
    steps.run("silence after a channel message is closed by the idle timeout", |w| {
        let mut peer = spoke_for(w, &w.b);
        thread::sleep(idle_timeout());
        w.log_about(peer.local_addr(), "closing connection: no message for");
        expect_closed(&mut peer, SLACK, "silent after a channel message", Some("no message for"));
    });
    steps.finish();
}

/// A connection past the handshake that has spoken for `paying`'s channel, as every payer's
/// connection does: a `reestablish`, answered with `channel_ready` on an open channel.
fn spoke_for(w: &World, paying: &Paying) -> RawPeer {
    let mut peer = RawPeer::handshake(&w.daemon.listen, &w.node_id);
    peer.send(&Message::Reestablish(wire::Reestablish { channel_id: paying.id }));
    match peer.recv(ANSWER) {
        Message::ChannelReady(ready) => assert_eq!(ready.channel_id, paying.id),
        other => panic!("reestablish answered with {other:?}"),
    }
    peer
}
