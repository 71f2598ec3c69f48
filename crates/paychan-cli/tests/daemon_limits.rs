//! The daemon's limits against a flood of opens and connections: channels that never get a
//! funding, or whose funding never confirms, are capped and forgotten; one address cannot take
//! every connection; a payer that reads nothing is cut off; and an open cannot take the id of a
//! channel the data directory pays on.

mod common;

use std::time::{Duration, Instant};

use bitcoin::{Address, Amount, CompressedPublicKey, Network, PublicKey};
use common::cli::{Daemon, Party};
use common::node::Node;
use common::raw_peer::RawPeer;
use paychan::channel::{Payer, PayerConfig};
use paychan::keys::ChannelSigner;
use paychan::wire::{ChannelId, Message};

const ANSWER: Duration = Duration::from_secs(5);

/// An `open_channel` for a fresh channel on terms the daemon accepts, with its payer key.
fn open_message(tip: u32) -> (ChannelSigner, Message) {
    open_message_with_id(tip, ChannelId::random())
}

/// An `open_channel` for channel `id` on terms the daemon accepts, with its payer key.
fn open_message_with_id(tip: u32, id: ChannelId) -> (ChannelSigner, Message) {
    let signer = ChannelSigner::random();
    let key = CompressedPublicKey(signer.public_key().inner);
    let config = PayerConfig {
        network: Network::Regtest,
        capacity: Amount::from_sat(100_000),
        feerate_sat_per_vb: 2,
        refund_locktime: tip + 100,
        step: 2,
        margin: 6,
        payout: Address::p2wpkh(&key, Network::Regtest),
        checkpoints: paychan::channel::CheckpointPolicy::default_for(Amount::from_sat(100_000)),
    };
    let (_, actions) = Payer::open(config, signer.clone(), id, tip).unwrap();
    let open = actions
        .into_iter()
        .find_map(|a| match a {
            paychan::channel::PayerAction::Send(m) => Some(m),
            _ => None,
        })
        .unwrap();
    (signer, open)
}

/// Checks that `answer`, to `what`, is an `error` mentioning `needle`.
fn assert_error(answer: Message, needle: &str, what: &str) {
    match answer {
        Message::Error(e) => assert!(e.message.contains(needle), "{what}: {}", e.message),
        other => panic!("{what} was answered {other:?}"),
    }
}

/// Sends `open` on `peer`, after proving its payer key there, as the payer does.
fn send_open(peer: &mut RawPeer, (signer, open): &(ChannelSigner, Message)) {
    peer.authenticate(signer, open.channel_id());
    peer.send(open);
}

#[test]
fn unfunded_channels_are_capped_then_forgotten() {
    let node = Node::start();
    let payee = Party::new(&node);
    let limits = ["--max-unfunded", "2", "--unfunded-expiry", "2"];
    let daemon = Daemon::start(&payee, None, &limits);
    let node_id: PublicKey = daemon.node_id.parse().unwrap();
    let mut peer = RawPeer::handshake(&daemon.listen, &node_id);
    // Opens whose payer key this connection has not proven, or that name another key than the
    // one proven, are refused, and take no place.
    let unproven = "has not proven the channel's payer key";
    let (_, open) = open_message(node.height());
    peer.send(&open);
    assert_error(peer.recv(ANSWER), unproven, "an open without a proof");
    let (_, open) = open_message(node.height());
    peer.authenticate(&ChannelSigner::random(), open.channel_id());
    peer.send(&open);
    assert_error(peer.recv(ANSWER), unproven, "an open naming another key than the one proven");
    for _ in 0..2 {
        send_open(&mut peer, &open_message(node.height()));
        assert!(matches!(peer.recv(ANSWER), Message::AcceptChannel(_)));
    }
    send_open(&mut peer, &open_message(node.height()));
    assert_error(peer.recv(ANSWER), "too many channels", "a third unfunded open");
    assert_eq!(payee.json(&["list"])["channels"].as_array().unwrap().len(), 2);
    // Once forgotten, the two free their places (and their rows).
    let start = Instant::now();
    while !payee.json(&["list"])["channels"].as_array().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "unfunded channels never forgotten");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut peer = RawPeer::handshake(&daemon.listen, &node_id);
    send_open(&mut peer, &open_message(node.height()));
    assert!(matches!(peer.recv(ANSWER), Message::AcceptChannel(_)));
}

#[test]
fn one_address_cannot_take_every_connection() {
    let node = Node::start();
    let payee = Party::new(&node);
    let daemon = Daemon::start(&payee, None, &["--max-connections-per-ip", "3"]);
    let node_id: PublicKey = daemon.node_id.parse().unwrap();
    let held: Vec<RawPeer> = (0..3).map(|_| RawPeer::connect(&daemon.listen)).collect();
    // Give the daemon a moment to count them.
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = RawPeer::connect(&daemon.listen);
    let closed = fourth.wait_closed(Duration::from_secs(1));
    assert!(closed.is_ok(), "a fourth connection from one address was kept");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    RawPeer::handshake(&daemon.listen, &node_id);
}

#[test]
fn an_open_naming_a_channel_this_directory_pays_on_is_refused_with_nothing_lost() {
    let node = Node::start();
    let (alice, bob) = (Party::new(&node), Party::new(&node));
    alice.fund(&node);
    let bobs = Daemon::start(&bob, None, &[]);
    let channel = alice.open(&node, &bobs, 100_000, &[])["channel_id"].as_str().unwrap().to_owned();
    alice.json(&["pay", &channel, "1000"]);
    let before = alice.channel(&channel);

    // Alice serves too, from the same directory; a payer names her channel's id.
    let alices = Daemon::start(&alice, None, &[]);
    let node_id: PublicKey = alices.node_id.parse().unwrap();
    let mut peer = RawPeer::handshake(&alices.listen, &node_id);
    send_open(&mut peer, &open_message_with_id(node.height(), channel.parse().unwrap()));
    match peer.recv(ANSWER) {
        Message::Error(e) => assert!(e.message.contains("already in use"), "{}", e.message),
        other => panic!("an open with a taken id was answered {other:?}"),
    }
    // Another id is served as usual.
    send_open(&mut peer, &open_message(node.height()));
    assert!(matches!(peer.recv(ANSWER), Message::AcceptChannel(_)));
    drop(alices);

    // Her channel is as it was, and pays on.
    assert_eq!(alice.channel(&channel), before);
    let paid = alice.json(&["pay", &channel, "500"]);
    assert_eq!(paid["paid_total_sat"], 1500);
}

/// Opens a channel with a funding that spends a made-up coin (the test kit's), so it can never
/// confirm: the payee signs its refund all the same (it cannot tell). Returns its id.
fn open_with_made_up_funding(peer: &mut RawPeer, tip: u32) -> Result<ChannelId, String> {
    let signer = ChannelSigner::random();
    let key = CompressedPublicKey(signer.public_key().inner);
    let capacity = Amount::from_sat(100_000);
    let config = PayerConfig {
        refund_locktime: tip + 100,
        step: 2,
        payout: Address::p2wpkh(&key, Network::Regtest),
        checkpoints: paychan::channel::CheckpointPolicy::default_for(capacity),
        ..common::payer_config(capacity)
    };
    let id = ChannelId::random();
    peer.authenticate(&signer, id);
    let (mut payer, actions) = Payer::open(config, signer, id, tip).unwrap();
    let mut out = common::Outbox::default();
    peer.send(&common::route(actions, &mut out).remove(0));
    let accept = match peer.recv(ANSWER) {
        accept @ Message::AcceptChannel(_) => accept,
        Message::Error(e) => return Err(e.message),
        other => panic!("an open was answered {other:?}"),
    };
    common::route(payer.handle_message(&accept).unwrap(), &mut out);
    let (address, amount) = out.fund_requests.pop().expect("the payer asks for its funding");
    let funding = common::fund(&address, amount);
    peer.send(&common::route(payer.funding_signed(funding).unwrap(), &mut out).remove(0));
    assert!(matches!(peer.recv(ANSWER), Message::RefundSigned(_)), "the refund is signed");
    Ok(payer.state().terms.channel_id)
}

#[test]
fn fundings_that_never_confirm_are_capped_then_forgotten_while_payments_go_on() {
    let node = Node::start();
    let (alice, bob) = (Party::new(&node), Party::new(&node));
    alice.fund(&node);
    let limits = ["--max-unfunded", "3", "--funding-expiry", "4"];
    let daemon = Daemon::start(&bob, None, &limits);
    let channel =
        alice.open(&node, &daemon, 100_000, &[])["channel_id"].as_str().unwrap().to_owned();
    let node_id: PublicKey = daemon.node_id.parse().unwrap();
    let mut peer = RawPeer::handshake(&daemon.listen, &node_id);

    // Three fundings that cannot confirm fill the cap; a fourth open is refused.
    let flood: Vec<ChannelId> =
        (0..3).map(|_| open_with_made_up_funding(&mut peer, node.height()).unwrap()).collect();
    // The daemon counts them at its next poll.
    std::thread::sleep(Duration::from_millis(1500));
    let err = open_with_made_up_funding(&mut peer, node.height()).unwrap_err();
    assert!(err.contains("too many channels"), "{err}");
    assert_eq!(bob.json(&["list"])["channels"].as_array().unwrap().len(), 4);
    alice.json(&["pay", &channel, "1000"]);

    // Blocks come and they do not confirm: forgotten after 4, their rows with them, while the
    // real channel pays on at every block.
    for paid in 2..=6 {
        node.mine(1);
        alice.json(&["pay", &channel, "1000"]);
        assert_eq!(alice.channel(&channel)["paid_total_sat"], paid * 1000);
    }
    let start = Instant::now();
    while bob.json(&["list"])["channels"].as_array().unwrap().len() > 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "unconfirmed channels never forgotten");
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in flood {
        assert!(bob.fails(&["show", &id.to_string()]).contains("no channel"));
    }
    // Their places are free again.
    open_with_made_up_funding(&mut peer, node.height()).unwrap();
    assert_eq!(bob.channel(&channel)["paid_total_sat"], 6000);
}

#[test]
fn a_payer_that_reads_nothing_is_cut_off() {
    let node = Node::start();
    let payee = Party::new(&node);
    let limits = ["--max-outbox-bytes", "65536", "--frame-timeout", "2"];
    let daemon = Daemon::start(&payee, None, &limits);
    let node_id: PublicKey = daemon.node_id.parse().unwrap();
    let mut peer = RawPeer::handshake(&daemon.listen, &node_id);
    // A channel of its own making, which does not exist: every `reestablish` on it is answered
    // with an `error`, which this peer never reads.
    let id = ChannelId::random();
    peer.authenticate(&ChannelSigner::random(), id);
    let ask = Message::Reestablish(paychan::wire::Reestablish { channel_id: id });
    let answer_len = Message::Error(paychan::wire::ErrorMessage {
        channel_id: id,
        message: "unknown channel".into(),
    })
    .encode()
    .len();
    // Far more answers than the socket buffers on both sides and the outbox hold.
    let wanted = 64 * 1024 * 1024 / answer_len;
    let start = Instant::now();
    let mut sent = 0;
    while sent < wanted {
        let mut burst = Vec::new();
        for _ in 0..1000 {
            let sealed = peer.seal(&ask.encode());
            burst.extend(paychan_node::net::frame::encode_frame(&sealed).unwrap());
        }
        if peer.send_raw(&burst).is_err() {
            break; // Cut off while still sending.
        }
        sent += 1000;
        assert!(start.elapsed() < Duration::from_secs(60), "sent {sent} asks, never cut off");
    }
    assert!(
        peer.wait_closed(Duration::from_secs(10)).is_ok(),
        "a payer that reads nothing was kept after {sent} asks"
    );
    let log = daemon.log();
    assert!(
        log.contains("reads too little") || log.contains("takes nothing"),
        "cut off without saying why: {log}"
    );
    // The daemon goes on serving others.
    let mut other = RawPeer::handshake(&daemon.listen, &node_id);
    other.authenticate(&ChannelSigner::random(), id);
    other.send(&ask);
    assert_error(other.recv(ANSWER), "unknown channel", "a reestablish after the cut");
}
