//! The payee daemon under attack over TCP, as a real `paychan serve` on a regtest node: garbage
//! bytes instead of the Noise handshake, a plaintext hello of the transport before it, oversize
//! lengths, truncated frames, another transport version, sealed frames changed, replayed or
//! sent in the clear, replayed and out-of-order payments, a payment below the previous total,
//! messages only the payee sends, a connection that names someone else's channel (unproven, or
//! with a forged proof of its payer key), silent connections and fifty idle ones. Each is refused
//! or timed out, no channel's state moves (and a payer that expects another node key refuses the
//! daemon), and a legitimate payment on another channel still completes promptly; at the end
//! the same daemon process still serves both channels.
//!
//! One node and one daemon with two channels serve every step, set up once. The steps run one
//! after another in one test, each caught on its own, so that a failure names its step and the
//! other steps still run; the slowest wait, the daemon's frame timeout, runs in a thread
//! alongside them.
//!
//! What a dropped connection is told: nothing, for a first message that is no Noise handshake
//! message (there is no session to say it in, and a stranger is owed no explanation); a
//! plaintext `refused` answer for a first frame in the plaintext JSON of earlier releases (their
//! payer then says why); a `refused` sealed to the payer's ephemeral key for another transport
//! version; after the handshake, an `error` with the all-zero channel id, sealed in the session.
//! The daemon's log says why in every case. A connection that has spoken for a channel is
//! really closed too (`a_connection_that_spoke_for_a_channel_is_closed_like_any_other`, which
//! found the daemon holding such connections open).

mod common;

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant};

use bitcoin::hex::DisplayHex;
use bitcoin::secp256k1::rand::{thread_rng, RngCore};
use bitcoin::{Address, Amount, Network, PublicKey};
use common::cli::{Daemon, Party};
use common::node::Node;
use common::raw_peer::{Closed, FrameRead, RawPeer};
use paychan::channel::{FundedChannel, Payer, SignedUpdate};
use paychan::keys::ChannelSigner;
use paychan::store::{ChannelState, Store};
use paychan::wire::{self, ChannelId, Message, RawSignature};
use paychan_node::net::frame::encode_frame;
use paychan_node::net::handshake::{HandshakeError, Initiator, TRANSPORT_VERSION};
use paychan_node::net::{Connection, NetError, PeerAddr, Timeouts, MAX_FRAME};
use paychan_sqlite::{SqliteStore, STORE_FILE};
use paychan_wallet::Wallet;

/// The daemon's `--handshake-timeout`, in seconds.
const HANDSHAKE_TIMEOUT_S: u64 = 2;
/// Its `--idle-timeout`, in seconds.
const IDLE_TIMEOUT_S: u64 = 3;
/// Its `--frame-timeout`, in seconds.
const FRAME_TIMEOUT_S: u64 = 5;
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
/// How long a connection is watched for anything sent unasked.
const QUIET: Duration = Duration::from_millis(500);
/// The bound on a legitimate payment, a whole `paychan pay` run, while the daemon is attacked.
const PROMPT_PAYMENT: Duration = Duration::from_secs(5);
/// How long the daemon's log may lag behind what it did.
const LOG_LAG: Duration = Duration::from_secs(2);
/// The file the daemon sells (`--serve-dir`).
const SERVED_FILE: &str = "song.bin";
/// What the daemon answers a message about a channel this connection has not proven the payer
/// key of, whether the channel exists or not.
const UNPROVEN: &str = "has not proven the channel's payer key";
/// What it answers a proof that does not hold.
const BAD_PROOF: &str = "authentication refused";
/// Why it closes a connection whose frame does not open.
const FORGED: &str = "a frame failed its authentication";
/// Why it drops a first frame in the plaintext transport of earlier releases.
const PLAINTEXT: &str = "old plaintext transport";

fn handshake_timeout() -> Duration {
    Duration::from_secs(HANDSHAKE_TIMEOUT_S)
}

fn idle_timeout() -> Duration {
    Duration::from_secs(IDLE_TIMEOUT_S)
}

fn frame_timeout() -> Duration {
    Duration::from_secs(FRAME_TIMEOUT_S)
}

#[test]
fn the_payee_daemon_shrugs_off_wire_abuse() {
    let start = Instant::now();
    let world = World::set_up();
    world.report(format!("node, daemon and two channels set up in {:.2?}", start.elapsed()));
    // Started first: it waits out the frame timeout while the other steps run.
    let stalled = {
        let (addr, node_id) = (world.daemon.listen.clone(), world.node_id);
        thread::spawn(move || stalled_frame_after_the_handshake(&addr, &node_id))
    };
    let mut steps = Steps::new(&world);
    steps.run("garbage instead of a first message is cut off", garbage_instead_of_a_first_message);
    steps.run("oversize lengths are refused before their payload", oversize_lengths_are_refused);
    steps.run("a frame cut short is timed out or dropped", truncated_first_frames_end);
    steps.run("a wrong node key or another version is refused", wrong_key_or_version_is_refused);
    steps.run("a brace by chance is no plaintext", a_brace_by_chance_is_no_plaintext);
    steps.run("an authenticated payer's messages get through", authenticated_payer_gets_through);
    steps.run("hostile channel messages are refused, state kept", hostile_channel_messages);
    steps.run(
        "a second connection that names someone else's channel gets nothing and bills nothing",
        someone_elses_channel,
    );
    steps.run("a changed or replayed sealed frame closes the connection", changed_frames_close);
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
    /// The daemon's `--serve-dir`, with [`SERVED_FILE`] in it.
    _served: tempfile::TempDir,
}

impl World {
    fn set_up() -> World {
        let node = Node::start();
        let payee = Party::new(&node);
        let (payer_a, payer_b) = (Party::new(&node), Party::new(&node));
        payer_a.fund(&node);
        payer_b.fund(&node);
        // A file for sale: what a connection that names someone else's channel must not get.
        let served = tempfile::tempdir().expect("a directory to serve");
        let mut song = vec![0u8; 40_000];
        thread_rng().fill_bytes(&mut song);
        std::fs::write(served.path().join(SERVED_FILE), song).expect("write the file served");
        let daemon = Daemon::start(
            &payee,
            None,
            &[
                "--handshake-timeout",
                &HANDSHAKE_TIMEOUT_S.to_string(),
                "--idle-timeout",
                &IDLE_TIMEOUT_S.to_string(),
                "--frame-timeout",
                &FRAME_TIMEOUT_S.to_string(),
                "--serve-dir",
                served.path().to_str().expect("a UTF-8 path"),
            ],
        );
        let node_id = daemon.node_id.parse().expect("the daemon's node id");
        let a = Paying::open(payer_a, &node, &daemon, &[10_000, 5_000, 2_000]);
        let b = Paying::open(payer_b, &node, &daemon, &[1_000]);
        World { _node: node, payee, daemon, node_id, a, b, _served: served }
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

    /// A connection past the handshake that has proven `paying`'s payer key for its channel.
    fn payer_connection(&self, paying: &Paying, signer: &ChannelSigner) -> RawPeer {
        let mut peer = RawPeer::handshake(&self.daemon.listen, &self.node_id);
        peer.authenticate(signer, paying.id);
        peer
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

/// The payee's acknowledgement of `update`, as it sent it.
fn ack_of(f: &FundedChannel, update: &SignedUpdate) -> Message {
    Message::PayAck(wire::PayAck {
        channel_id: f.channel.params().terms.channel_id,
        update: update.number,
        signature: Some(update.payee_sig.into()),
    })
}

/// A settlement of channel `f` paying `paid_sat`, signed by `signer`.
fn closing_signed(f: &FundedChannel, signer: &ChannelSigner, paid_sat: u64) -> Message {
    let builder = f.channel.builder();
    let settlement = builder.settlement(Amount::from_sat(paid_sat)).expect("a settlement");
    let signature = signer.sign(builder.sighash(&settlement).expect("sighash"));
    Message::ClosingSigned(wire::ClosingSigned {
        channel_id: f.channel.params().terms.channel_id,
        paid_total_sat: paid_sat,
        signature: signature.into(),
    })
}

/// The `open_channel` of `payer`'s channel again, as the payer CLI would resend it.
fn open_again(payer: &Payer) -> Message {
    let terms = &payer.state().terms;
    let payer_address = Address::from_script(&terms.payer_script, Network::Regtest).unwrap();
    Message::OpenChannel(wire::OpenChannel {
        channel_id: terms.channel_id,
        network: Network::Regtest,
        capacity_sat: terms.capacity.to_sat(),
        feerate_sat_per_vb: terms.feerate.to_sat_per_vb_floor(),
        refund_locktime: terms.ladder.refund(),
        step: terms.ladder.step(),
        payer_key: terms.payer_key,
        payer_address: payer_address.as_unchecked().clone(),
        checkpoint_every_payments: Some(1),
        checkpoint_every_sat: Some(2_000),
    })
}

/// The `funding_created` of `payer`'s channel again, as the payer CLI would resend it.
fn funding_again(payer: &Payer) -> Message {
    let side = payer.funded().expect("a funded channel");
    let mut funding_tx = side.funding_tx.clone();
    funding_tx.input.iter_mut().for_each(|input| input.witness.clear());
    Message::FundingCreated(wire::FundingCreated {
        channel_id: side.funded.channel.params().terms.channel_id,
        funding_tx,
        vout: side.funded.channel.params().funding_outpoint.vout,
    })
}

/// A `file_request` for [`SERVED_FILE`] paid by `channel`: a quote without `max_price`, the
/// file's chunks with it.
fn file_request(channel_id: ChannelId, max_price: Option<u64>) -> Message {
    let body = serde_json::json!({
        "channel_id": channel_id,
        "name": SERVED_FILE,
        "from_chunk": 0,
        "max_price_per_chunk_sat": max_price,
    });
    Message::Extension(wire::Extension::new("file_request", &body).expect("an extension"))
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

/// What the daemon says on a connection before it closes it.
#[derive(Debug, Clone, Copy)]
enum Told<'a> {
    /// Nothing at all.
    Nothing,
    /// A plaintext JSON `refused` answer whose reason mentions this.
    Plain(&'a str),
    /// An `error` about the connection (the all-zero channel id), sealed in its session,
    /// mentioning this.
    Sealed(&'a str),
}

/// Waits for the daemon to close `peer`'s connection within `within`, and checks what it said
/// first.
fn expect_closed(peer: &mut RawPeer, within: Duration, what: &str, told: Told) -> Closed {
    let closed = peer.wait_closed(within).unwrap_or_else(|received| {
        panic!(
            "{what}: the daemon did not close the connection within {within:?} (it sent {:?})",
            String::from_utf8_lossy(&received)
        )
    });
    match told {
        Told::Nothing => {
            assert!(closed.received.is_empty(), "{what}: answered {:?}", closed.received)
        }
        Told::Plain(needle) => {
            let payload = one_frame(&closed.received, what);
            let reply: serde_json::Value = serde_json::from_slice(payload).unwrap_or_else(|e| {
                panic!("{what}: told {:?}, not JSON: {e}", String::from_utf8_lossy(payload))
            });
            let reason = reply["refused"]["reason"].as_str();
            let reason = reason.unwrap_or_else(|| panic!("{what}: told {reply}, not refused"));
            assert!(reason.contains(needle), "{what}: told {reason:?}, not {needle:?}");
        }
        Told::Sealed(needle) => {
            let sealed = one_frame(&closed.received, what).to_vec();
            match Message::decode(&peer.open(&sealed)) {
                Ok(Message::Error(e)) => {
                    assert_eq!(
                        e.channel_id,
                        ChannelId([0; 32]),
                        "{what}: not about the connection"
                    );
                    assert!(
                        e.message.contains(needle),
                        "{what}: told {:?}, not {needle:?}",
                        e.message
                    );
                }
                other => panic!("{what}: told {other:?}, not an error"),
            }
        }
    }
    closed
}

/// The payload of `received`, which must be one whole frame.
fn one_frame<'r>(received: &'r [u8], what: &str) -> &'r [u8] {
    let Ok(Some((payload, used))) = paychan_node::net::frame::decode_frame(received) else {
        panic!("{what}: closed without a whole frame first: {received:?}");
    };
    assert_eq!(used, received.len(), "{what}: more than one frame before the close");
    payload
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

/// Expects nothing more on `peer` for a while: the daemon sends it nothing unasked.
fn expect_quiet(peer: &mut RawPeer, what: &str) {
    match peer.read_frame(QUIET) {
        FrameRead::TimedOut => {}
        FrameRead::Frame(sealed) => {
            let msg = Message::decode(&peer.open(&sealed));
            panic!("{what}: sent {msg:?} unasked")
        }
        FrameRead::Closed => panic!("{what}: the daemon closed the connection"),
    }
}

fn reestablish(channel_id: ChannelId) -> Message {
    Message::Reestablish(wire::Reestablish { channel_id })
}

fn frame(payload: &[u8]) -> Vec<u8> {
    encode_frame(payload).expect("a small payload")
}

/// A first handshake message of the current transport, for a payee with node key `node_id`,
/// with the initiator's state.
fn start(node_id: PublicKey) -> (Initiator, Vec<u8>) {
    let (initiator, first) = Initiator::start(node_id);
    // Noise `NK`'s first message is the initiator's ephemeral key (a compressed secp256k1
    // point) and then its payload, the version, sealed to the payee's node key.
    assert_eq!(first.len(), 33 + 2 + 16, "an ephemeral key and a sealed version");
    assert!(matches!(first[0], 2 | 3), "a compressed point");
    (initiator, first)
}

/// A first handshake message as [`start`] makes it.
fn first_message(node_id: PublicKey) -> Vec<u8> {
    start(node_id).1
}

/// Bytes that are no first handshake message: each closes the connection at once. Only the
/// plaintext JSON of earlier releases is told why (in plaintext); the daemon logs every one.
fn garbage_instead_of_a_first_message(w: &World) {
    let first = first_message(w.node_id);
    let mut longer = first.clone();
    longer.extend_from_slice(&[0, 0]);
    let mut nonce = [0u8; 32];
    thread_rng().fill_bytes(&mut nonce);
    let v2_hello =
        serde_json::json!({ "protocol_version": 2, "nonce": nonce.as_hex().to_string() });
    let reestablish = reestablish(w.a.id);
    let pay_ack = Message::PayAck(wire::PayAck { channel_id: w.a.id, update: 1, signature: None });
    let http = format!("frame of {} bytes announced", u32::from_be_bytes(*b"GET "));
    let malformed = "malformed handshake";
    // Dropped without a word: there is no session to say it in.
    let silent = [
        // Read as a length prefix, "GET " announces some 1.2 GB.
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: paychan\r\n\r\n".to_vec(), http.as_str()),
        ("a frame of binary junk", frame(&[0xff, 0x00, 0xfe, 0x01, 0x80, 0x7f]), malformed),
        ("an empty frame", frame(&[]), malformed),
        ("a first message cut short in its frame", frame(&first[..20]), malformed),
        ("a first message with bytes added", frame(&longer), malformed),
        ("a binary pay_ack before any handshake", frame(&pay_ack.encode()), malformed),
    ];
    // The plaintext JSON of earlier releases: told why, in plaintext, for their payer to say.
    let plaintext = [
        ("a frame of JSON that is no hello", frame(br#"{"hello":"world"}"#)),
        ("a v2 plaintext hello", frame(&serde_json::to_vec(&v2_hello).unwrap())),
        ("a channel message before any handshake", frame(&reestablish.encode())),
    ];
    let cases =
        silent.into_iter().map(|(what, bytes, logged)| (what, bytes, Told::Nothing, logged));
    let cases = cases.chain(
        plaintext.into_iter().map(|(what, bytes)| (what, bytes, Told::Plain(PLAINTEXT), PLAINTEXT)),
    );
    for (what, bytes, told, logged) in cases {
        let mut peer = RawPeer::connect(&w.daemon.listen);
        peer.send_raw(&bytes).expect("send");
        expect_closed(&mut peer, AT_ONCE, what, told);
        let line = w.log_about(peer.local_addr(), "handshake failed");
        assert!(line.contains(logged), "{what}: logged {line:?}, not {logged:?}");
    }
    // Random bytes: their first four may announce a frame within the limit (odds about 1 in
    // 2^16), which the daemon then waits for until the handshake timeout; either way it ends,
    // and says nothing.
    let mut junk = [0u8; 256];
    thread_rng().fill_bytes(&mut junk);
    let mut peer = RawPeer::connect(&w.daemon.listen);
    peer.send_raw(&junk).expect("send");
    expect_closed(&mut peer, handshake_timeout() + SLACK, "random bytes", Told::Nothing);
}

/// A length prefix over `MAX_FRAME`, with none of its payload sent: the daemon must close at
/// once rather than wait for (or allocate) the payload.
fn oversize_lengths_are_refused(w: &World) {
    for len in [u32::MAX, MAX_FRAME as u32 + 1] {
        let mut peer = RawPeer::connect(&w.daemon.listen);
        peer.send_raw(&len.to_be_bytes()).expect("send");
        let what = format!("{len} bytes announced as the first frame");
        expect_closed(&mut peer, AT_ONCE, &what, Told::Nothing);
        w.log_about(peer.local_addr(), &format!("frame of {len} bytes announced"));
    }

    for len in [u32::MAX, MAX_FRAME as u32 + 1] {
        let mut peer = RawPeer::handshake(&w.daemon.listen, &w.node_id);
        peer.send_raw(&len.to_be_bytes()).expect("send");
        let told = format!("frame of {len} bytes announced");
        let what = format!("{len} bytes announced after the handshake");
        expect_closed(&mut peer, AT_ONCE, &what, Told::Sealed(&told));
        w.log_about(peer.local_addr(), &format!("frame of {len} bytes announced"));
    }
    // The same after the connection spoke for a channel:
    // `a_connection_that_spoke_for_a_channel_is_closed_like_any_other`.
}

/// A first frame cut short: the rest never comes (the handshake timeout ends it), or the peer
/// hangs up in the middle (the daemon drops it at once).
fn truncated_first_frames_end(w: &World) {
    let mut cut = frame(&first_message(w.node_id));
    cut.truncate(4 + 10);

    let mut peer = RawPeer::connect(&w.daemon.listen);
    peer.send_raw(&cut).expect("send");
    let what = "10 of the first message's 51 bytes";
    let closed = expect_closed(&mut peer, handshake_timeout() + SLACK, what, Told::Nothing);
    w.report(format!("a first frame cut short was closed after {:.2?}", closed.after));
    assert!(closed.after + EARLY >= handshake_timeout(), "closed before the timeout: {closed:?}");
    w.log_about(peer.local_addr(), "handshake timed out");

    let mut peer = RawPeer::connect(&w.daemon.listen);
    peer.send_raw(&cut).expect("send");
    peer.hang_up_sending();
    expect_closed(&mut peer, AT_ONCE, "10 of 51 bytes, then a hang-up", Told::Nothing);
    w.log_about(peer.local_addr(), "connection closed in the middle of a frame");
}

/// After the handshake a frame's first bytes arrive and the rest never does: the frame timeout
/// ends it. Returns how long the daemon took.
fn stalled_frame_after_the_handshake(addr: &str, node_id: &PublicKey) -> Duration {
    let mut peer = RawPeer::handshake(addr, node_id);
    let mut cut = frame(&peer.seal(&[b'{'; 84]));
    cut.truncate(4 + 10);
    peer.send_raw(&cut).expect("send");
    let closed = expect_closed(
        &mut peer,
        frame_timeout() + SLACK,
        "10 of 100 bytes after the handshake",
        Told::Sealed("did not arrive whole"),
    );
    assert!(closed.after + EARLY >= frame_timeout(), "closed before the timeout: {closed:?}");
    closed.after
}

/// Connecting to the daemon as if it were another node fails: it cannot read a first message
/// sealed to another node key, and closes; a first message of another transport version is
/// answered with a sealed refusal, which our side reads, and the connection closed.
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
        Err(NetError::Handshake(HandshakeError::NotProven { node_id })) => {
            assert_eq!(node_id, other.to_string());
        }
        Err(e) => panic!("expected a wrong node, got: {e}"),
    }
    // The refusal was about the key: the right one connects.
    connect(w.node_id).unwrap_or_else(|e| panic!("the right key: {e}"));

    for version in [TRANSPORT_VERSION + 1, 0, u16::MAX] {
        let (initiator, first) = Initiator::start_speaking(w.node_id, version);
        let mut peer = RawPeer::connect(&w.daemon.listen);
        peer.send_frame(&first).expect("send");
        let FrameRead::Frame(reply) = peer.read_frame(ANSWER) else {
            panic!("version {version}: no answer")
        };
        // A second handshake message, not a plaintext JSON answer, which reads as a refusal.
        let json = serde_json::from_slice::<serde_json::Value>(&reply);
        assert!(json.is_err(), "version {version}: {reply:?}");
        match initiator.finish(&reply) {
            Err(HandshakeError::Refused(why)) => assert!(why.contains("transport version")),
            other => panic!("version {version} answered {other:?}"),
        }
        expect_closed(&mut peer, AT_ONCE, &format!("version {version}"), Told::Nothing);
        let why = format!("peer speaks transport version {version}, this build speaks");
        w.log_about(peer.local_addr(), &why);
    }
}

/// The plaintext transport's frames are JSON objects, starting with `{` (0x7b). A handshake
/// message of this transport starts with a compressed secp256k1 point (0x02 or 0x03), so
/// neither side can take one for the other, whatever the random keys. (With X25519 keys,
/// random bytes, one connection in 128 failed so: "the peer speaks the old plaintext
/// transport".) And the plaintext transport's answer is still told apart.
fn a_brace_by_chance_is_no_plaintext(w: &World) {
    for _ in 0..20 {
        let (initiator, first) = start(w.node_id);
        let mut peer = RawPeer::connect(&w.daemon.listen);
        peer.send_frame(&first).expect("send");
        let answer = match peer.read_frame(ANSWER) {
            FrameRead::Frame(answer) => answer,
            other => panic!("no answer to a first message: {other:?}"),
        };
        assert!(matches!(answer[0], 2 | 3), "an answer starting with {:#04x}", answer[0]);
        initiator.finish(&answer).unwrap_or_else(|e| panic!("an answer: {e}"));
    }
    let (initiator, _) = start(w.node_id);
    let refused = br#"{"refused":{"reason":"this payee speaks only the plaintext transport"}}"#;
    match initiator.finish(refused) {
        Err(HandshakeError::Plaintext) => {}
        other => panic!("a plaintext refusal taken as {other:?}"),
    }
}

/// A connection that proved channel A's payer key takes its messages to the channel: a
/// `reestablish` is answered with `channel_ready` and `reconcile` (the newest payment), the
/// newest payment again with its acknowledgement again, a file request with the offer. Nothing
/// moves, and nothing more comes.
fn authenticated_payer_gets_through(w: &World) {
    let a = &w.a;
    let (payer, signer) = a.payer_side();
    let f = &payer.funded().expect("a funded channel").funded;
    let latest = f.checkpoint.clone().expect("payments were made, each a checkpoint");
    assert_eq!(latest.paid.to_sat(), a.total());
    let before = w.payee_view(&a.channel);

    let mut peer = w.payer_connection(a, &signer);
    peer.send(&reestablish(a.id));
    let ready = Message::ChannelReady(wire::ChannelReady { channel_id: a.id });
    assert_eq!(peer.recv(ANSWER), ready, "reestablish");
    match peer.recv(ANSWER) {
        Message::Reconcile(r) => {
            assert_eq!(r.channel_id, a.id);
            assert_eq!((r.update, r.paid_total_sat), (latest.number, latest.paid.to_sat()));
            assert_eq!(r.payer_signature, Some(latest.payer_sig.into()));
            assert_eq!(r.payee_signature, Some(latest.payee_sig.into()));
        }
        other => panic!("reestablish then answered {other:?}, not reconcile"),
    }
    peer.send(&pay_as_sent(f, &latest));
    assert_eq!(peer.recv(ANSWER), ack_of(f, &latest), "the newest payment, replayed");
    peer.send(&file_request(a.id, None));
    match peer.recv(ANSWER) {
        Message::Extension(offer) if offer.kind == "file_offer" => {
            assert_eq!(offer.channel_id, a.id);
            assert_eq!(offer.fields["name"], SERVED_FILE, "{offer:?}");
        }
        other => panic!("a file quote answered {other:?}"),
    }
    expect_quiet(&mut peer, "an authenticated payer");
    assert_eq!(w.payee_view(&a.channel), before, "the payee's state of A moved");
}

/// On one connection that proved channel A's payer key, messages about channel A that the
/// payer CLI never sends: each is answered (the newest payment again: its acknowledgement
/// again) or refused with a reason, the connection stays usable, the payee's state of A does not
/// move, and A then takes a real payment.
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

    let mut peer = w.payer_connection(a, &signer);
    let same_ack = ack_of(f, &latest);
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

    peer.send(&closing_signed(f, &signer, total - 1_000));
    expect_refusal(&mut peer, a.id, "settlement pays", "a settlement for less than paid");

    // The opening messages again: the same terms on an open channel are refused, and the same
    // funding is answered with the same refund signature (the payer may have lost it), as the
    // payer CLI itself would resend them.
    peer.send(&open_again(&payer));
    expect_refusal(&mut peer, a.id, "unexpected open_channel", "the open replayed");
    peer.send(&funding_again(&payer));
    let same_refund_sig =
        wire::RefundSigned { channel_id: a.id, signature: side.refund_payee_sig.into() };
    assert_eq!(peer.recv(ANSWER), Message::RefundSigned(same_refund_sig), "the funding replayed");

    // A channel that does not exist, once this connection has proven a key for it: now it
    // may hear that there is no such channel.
    let stranger = ChannelId::random();
    peer.authenticate(&signer, stranger);
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

/// A second connection on live, paid channel A that has not proven A's payer key: whatever it
/// sends about A (a payer's messages, the payer's own newest payment replayed, a file request)
/// is refused alike, as a message about a channel that does not exist is, also after it proves
/// its own key for A, claims the payer's key with a forged signature, or replays the payer's
/// proof from another connection. It gets nothing but those refusals (no `channel_ready`,
/// `reconcile`, `pay_ack`, refund signature or file data), not even while the real payer pays,
/// and the payee's state of A does not move.
fn someone_elses_channel(w: &World) {
    let a = &w.a;
    let (payer, signer) = a.payer_side();
    let f = &payer.funded().expect("a funded channel").funded;
    let latest = f.checkpoint.clone().expect("payments were made, each a checkpoint");
    let (next, total) = (latest.number + 1, latest.paid.to_sat());
    assert_eq!(total, a.total());
    let before = w.payee_view(&a.channel);

    let thief_key = ChannelSigner::random();
    let stranger = ChannelId::random();
    let Message::Pay(pay) = signed_pay(f, &thief_key, next, total + 1_000) else { unreachable!() };
    let messages: Vec<(&str, Message)> = vec![
        ("a reestablish", reestablish(a.id)),
        ("the payer's newest payment, replayed", pay_as_sent(f, &latest)),
        ("a payment signed by another key", Message::Pay(pay.clone())),
        ("a file request", file_request(a.id, Some(1_000_000))),
        ("a file quote", file_request(a.id, None)),
        ("a settlement signed by another key", closing_signed(f, &thief_key, total)),
        ("the funding, replayed", funding_again(&payer)),
        ("the open, replayed", open_again(&payer)),
        ("a payee's message", Message::Shutdown(wire::Shutdown { channel_id: a.id })),
        // Told alike: whether a channel exists is not for a stranger to learn.
        ("a reestablish of an unknown channel", reestablish(stranger)),
        (
            "a payment on an unknown channel",
            Message::Pay(wire::Pay { channel_id: stranger, ..pay }),
        ),
    ];
    let refused_alike = |peer: &mut RawPeer, when: &str| {
        for (what, msg) in &messages {
            peer.send(msg);
            expect_refusal(peer, msg.channel_id(), UNPROVEN, &format!("{what}, {when}"));
        }
    };

    let mut thief = RawPeer::handshake(&w.daemon.listen, &w.node_id);
    refused_alike(&mut thief, "unproven");
    // An error about the channel is ignored, not answered: the next answer is the next
    // message's.
    let error = wire::ErrorMessage { channel_id: a.id, message: "stop paying".into() };
    thief.send(&Message::Error(error));
    thief.send(&reestablish(a.id));
    expect_refusal(&mut thief, a.id, UNPROVEN, "a reestablish after an error");

    // Its own key, proven, for A: refused as if nothing were proven.
    thief.authenticate(&thief_key, a.id);
    expect_refusal(&mut thief, a.id, UNPROVEN, "its own key, claiming A");
    refused_alike(&mut thief, "after claiming A with its own key");

    // The payer's key, claimed with another key's signature over what the payer would sign.
    let payer_key = signer.public_key();
    let digest = paychan::auth::digest(&thief.session_hash(), a.id, &payer_key);
    let forged = RawSignature(thief_key.sign_digest(digest).serialize_der().to_vec());
    let forged = wire::Authenticate { channel_id: a.id, payer_key, signature: forged };
    thief.send(&Message::Authenticate(forged.clone()));
    expect_refusal(&mut thief, a.id, BAD_PROOF, "a forged signature for the payer's key");
    let garbage = wire::Authenticate { signature: RawSignature(vec![0x30, 0x02, 0x01]), ..forged };
    thief.send(&Message::Authenticate(garbage));
    expect_refusal(&mut thief, a.id, BAD_PROOF, "a malformed signature for the payer's key");
    // The payer's own proof, made on another connection: bound to that session, worthless here.
    let elsewhere = RawPeer::handshake(&w.daemon.listen, &w.node_id);
    let proof = paychan::auth::authenticate(&signer, &elsewhere.session_hash(), a.id);
    drop(elsewhere);
    thief.send(&Message::Authenticate(proof));
    expect_refusal(&mut thief, a.id, BAD_PROOF, "the payer's proof from another connection");
    refused_alike(&mut thief, "after forged proofs of the payer's key");

    expect_quiet(&mut thief, "a connection that names A unproven");
    assert_eq!(w.payee_view(&a.channel), before, "the payee's state of A moved");
    // The real payer pays on, the thief still connected: nothing of it reaches the thief.
    let took = a.pay(1_000);
    w.report(format!("a payment on A beside a connection naming it unproven took {took:.2?}"));
    assert_eq!(w.payee_view(&a.channel).0, total + 1_000);
    expect_quiet(&mut thief, "a connection that names A unproven, while A's payer pays");
    thief.send(&reestablish(a.id));
    expect_refusal(&mut thief, a.id, UNPROVEN, "a reestablish after A's payer paid");
}

/// A sealed frame changed in one bit (of the message, or of its tag), one replayed, one dropped,
/// one sealed in another session, a message in the clear and a frame shorter than a tag: each
/// closes the connection at once, told why, the daemon logs it, and channel A does not move,
/// though the frame with a bit of its tag changed, and the one after a frame dropped, held a
/// valid new payment.
fn changed_frames_close(w: &World) {
    let a = &w.a;
    let (payer, signer) = a.payer_side();
    let f = &payer.funded().expect("a funded channel").funded;
    let latest = f.checkpoint.clone().expect("payments were made, each a checkpoint");
    let (next, total) = (latest.number + 1, latest.paid.to_sat());
    let before = w.payee_view(&a.channel);
    // Taken, it would move the channel: a new payment the payer signed.
    let new_pay = signed_pay(f, &signer, next, total + 1_000).encode();

    let closes = |peer: &mut RawPeer, what: &str| {
        expect_closed(peer, AT_ONCE, what, Told::Sealed(FORGED));
        w.log_about(peer.local_addr(), &format!("closing connection: {FORGED}"));
    };
    for (what, at) in [("one bit of the message flipped", Some(5)), ("one bit of the tag", None)] {
        let mut peer = w.payer_connection(a, &signer);
        let mut sealed = peer.seal(&new_pay);
        let byte = at.unwrap_or(sealed.len() - 1);
        sealed[byte] ^= 0x01;
        peer.send_frame(&sealed).expect("send");
        closes(&mut peer, what);
    }

    // Replayed: the first is taken (the newest payment: its ack again), the second is not.
    let mut peer = w.payer_connection(a, &signer);
    let sealed = peer.seal(&pay_as_sent(f, &latest).encode());
    peer.send_frame(&sealed).expect("send");
    assert_eq!(peer.recv(ANSWER), ack_of(f, &latest), "the newest payment");
    peer.send_frame(&sealed).expect("send");
    closes(&mut peer, "a sealed frame replayed");

    // Dropped: the next frame sealed, sent without the one before it.
    let mut peer = w.payer_connection(a, &signer);
    let _dropped = peer.seal(&pay_as_sent(f, &latest).encode());
    let after = peer.seal(&new_pay);
    peer.send_frame(&after).expect("send");
    closes(&mut peer, "a sealed frame after one dropped");

    // Sealed in another session: another connection's first frame after its handshake, with
    // the very nonce this one expects.
    let mut other = RawPeer::handshake(&w.daemon.listen, &w.node_id);
    let mut peer = RawPeer::handshake(&w.daemon.listen, &w.node_id);
    let auth = paychan::auth::authenticate(&signer, &other.session_hash(), a.id);
    let theirs = other.seal(&Message::Authenticate(auth).encode());
    peer.send_frame(&theirs).expect("send");
    closes(&mut peer, "a frame sealed in another session");
    drop(other);

    // In the clear, and too short to hold a tag.
    let reestablish = reestablish(a.id).encode();
    for (what, payload) in [("a message in the clear", reestablish), ("3 bytes", vec![7; 3])] {
        let mut peer = RawPeer::handshake(&w.daemon.listen, &w.node_id);
        peer.send_frame(&payload).expect("send");
        closes(&mut peer, what);
    }

    assert_eq!(w.payee_view(&a.channel), before, "a frame that did not open moved A");
    a.pay(1_000);
    assert_eq!(w.payee_view(&a.channel).0, total + 1_000);
}

/// A connection that goes silent after the handshake is closed by the idle timeout.
fn silent_connection_is_closed(w: &World) {
    let mut peer = RawPeer::handshake(&w.daemon.listen, &w.node_id);
    let closed = expect_closed(
        &mut peer,
        idle_timeout() + SLACK,
        "silent after the handshake",
        Told::Sealed("no message for"),
    );
    w.report(format!("a silent connection was closed after {:.2?}", closed.after));
    assert!(closed.after + EARLY >= idle_timeout(), "closed before the timeout: {closed:?}");
    w.log_about(peer.local_addr(), "no message for");
}

/// Fifty connections that never say a word: a payment on channel B completes promptly while
/// they are held, and the handshake timeout closes every one of them, telling them nothing.
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
                assert!(closed.received.is_empty(), "an idle connection was told {closed:?}")
            }
            Err(_) => still_open += 1,
        }
    }
    let all_by = opened.elapsed();
    assert_eq!(still_open, 0, "idle connections still open {all_by:?} after they were made");
    w.report(format!("all 50 idle connections were closed {all_by:.2?} after they were made"));
    w.log_about(idle[0].local_addr(), "handshake timed out");
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
            Told::Sealed("frame of 4294967295"),
        );
    });
    steps.run("silence after a channel message is closed by the idle timeout", |w| {
        let mut peer = spoke_for(w, &w.b);
        thread::sleep(idle_timeout());
        w.log_about(peer.local_addr(), "closing connection: no message for");
        let what = "silent after a channel message";
        expect_closed(&mut peer, SLACK, what, Told::Sealed("no message for"));
    });
    steps.finish();
}

/// A connection past the handshake that has spoken for `paying`'s channel, as every payer's
/// connection does: it proves the payer key, then a `reestablish`, answered with
/// `channel_ready` on an open channel and `reconcile`.
fn spoke_for(w: &World, paying: &Paying) -> RawPeer {
    let (_, signer) = paying.payer_side();
    let mut peer = w.payer_connection(paying, &signer);
    peer.send(&reestablish(paying.id));
    match peer.recv(ANSWER) {
        Message::ChannelReady(ready) => assert_eq!(ready.channel_id, paying.id),
        other => panic!("reestablish answered with {other:?}"),
    }
    match peer.recv(ANSWER) {
        Message::Reconcile(reconcile) => assert_eq!(reconcile.channel_id, paying.id),
        other => panic!("reestablish then answered with {other:?}"),
    }
    peer
}
