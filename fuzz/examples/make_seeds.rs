//! Writes the seed inputs under `seeds/` (emptied first): every message of the protocol for the
//! fuzz channel, framed (for `frame_decode`), short operation sequences (for `payee_messages`),
//! and handshake messages and session scripts (for `noise_transport`); the input formats are
//! described at the top of each target.
//!
//! Run from `fuzz/`: `cargo run --example make_seeds`.

use std::fs;
use std::path::Path;

use paychan::bitcoin::hashes::Hash;
use paychan::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use paychan::bitcoin::Amount;
use paychan::channel::{Payee, Payer};
use paychan::wire::{self, Extension, Message, PROTOCOL_VERSION};
use paychan_fuzz::{
    payee_config, sent, signer, Opened, CHANNEL_ID, NODE_SECRET, OTHER_NODE_SECRET, TIP,
};
use paychan_node::net::frame::encode_frame;
use paychan_node::net::handshake::{
    answer, Answer, HandshakeError, Initiator, NodeIdentity, TRANSPORT_VERSION,
};
use paychan_node::net::session::MAX_MESSAGE;
use serde_json::json;

/// `payee_messages`' first byte: the channel open, under checkpoint policy `policy` (0 the
/// default, every 1000 sat; 1 every payment; 2 on request; 3 every 3 payments or 2500 sat).
fn open(policy: u8) -> u8 {
    2 | policy << 2
}

/// `payee_messages`' first byte: the channel awaiting funding, under the default policy.
const AWAITING_FUNDING: u8 = 0;

/// A payment of `amount` sat as the policy says, sent at once.
fn pay(amount: u16) -> Vec<u8> {
    word(amount)
}

/// A checkpoint payment of `amount` sat, sent at once.
fn checkpoint(amount: u16) -> Vec<u8> {
    word(amount | 0x2000)
}

/// A payment of `amount` sat held back (pipelined); `flags` adds 0x2000 (a checkpoint).
fn held(amount: u16, flags: u16) -> Vec<u8> {
    word(amount | flags | 0x8000)
}

/// A payment of `amount` sat after which the connection drops; `flags` as for [`held`].
fn dropped(amount: u16, flags: u16) -> Vec<u8> {
    word(amount | flags | 0x4000)
}

fn word(w: u16) -> Vec<u8> {
    [vec![1], w.to_le_bytes().to_vec()].concat()
}

/// A mutated message: `base`, `field` (with 0x80: re-signed by the payer's key), `value`.
fn mutate(base: u8, field: u8, value: u64) -> Vec<u8> {
    [vec![2, base, field], value.to_le_bytes().to_vec()].concat()
}

const CLOSE: u8 = 4;
const RECONNECT: u8 = 6;

fn main() -> std::io::Result<()> {
    let opened = Opened::new();
    let msgs = every_message(&opened);

    let frames = Path::new("seeds/frame_decode");
    let _ = fs::remove_dir_all(frames);
    fs::create_dir_all(frames)?;
    let mut all = Vec::new();
    for (name, msg) in &msgs {
        let frame = encode_frame(&msg.encode()).expect("small");
        fs::write(frames.join(name), &frame)?;
        all.extend_from_slice(&frame);
    }
    fs::write(frames.join("all_messages"), &all)?;
    fs::write(frames.join("oversize"), [0x00, 0x01, 0x00, 0x01, b'{'])?;
    fs::write(frames.join("truncated"), &all[..all.len() - 3])?;
    // The regression input of a panic found by this target: a funding_created whose funding_tx
    // is empty (bitcoin's serde hex reader panicked on a transaction cut short).
    let empty_tx = format!(
        r#"{{"version":{PROTOCOL_VERSION},"message":{{"type":"funding_created","channel_id":"{}","funding_tx":"","vout":0}}}}"#,
        CHANNEL_ID
    );
    fs::write(
        frames.join("funding_created_empty_tx"),
        encode_frame(empty_tx.as_bytes()).expect("small"),
    )?;
    // A message of the version before checkpoints, which this build refuses.
    let old = br#"{"version":1,"message":{"type":"pay_ack","channel_id":"0707070707070707070707070707070707070707070707070707070707070707","update":1,"signature":"3044"}}"#;
    fs::write(frames.join("version_1_pay_ack"), encode_frame(old).expect("small"))?;

    let ops = Path::new("seeds/payee_messages");
    let _ = fs::remove_dir_all(ops);
    fs::create_dir_all(ops)?;
    let mut programs: Vec<(String, Vec<u8>)> = vec![
        (
            // The default policy: 1000 sat is a checkpoint, 200 is not; close.
            "pay_pay_close".into(),
            [vec![open(0)], pay(1000), pay(200), vec![CLOSE]].concat(),
        ),
        (
            "open_then_pay".into(),
            // From awaiting funding: reconnect (funding_created), one confirmation, pay, close.
            [vec![AWAITING_FUNDING, RECONNECT, 5, 1], pay(1000), vec![3, 1, 0, 0, CLOSE]].concat(),
        ),
        (
            "pay_replay_tip".into(),
            // Pay, replay it, move the tip near the ladder's end (shutdown, close).
            [vec![open(0)], pay(500), vec![7, 0, 3, 0, 0x42, 0x04]].concat(),
        ),
        (
            // Five 1-sat payments and one of 300: the payee's output appears past its dust limit.
            "dust_payments".into(),
            [vec![open(2)], pay(1), pay(1), pay(1), pay(1), pay(1), pay(300), vec![CLOSE]].concat(),
        ),
        (
            // On request only: two payments on rung 1, a checkpoint, two on rung 2, a
            // checkpoint, one on rung 3, close.
            "checkpoint_between_payments".into(),
            [
                vec![open(2)],
                pay(100),
                pay(100),
                checkpoint(100),
                pay(100),
                pay(1),
                checkpoint(1),
                pay(5),
                vec![CLOSE],
            ]
            .concat(),
        ),
        (
            // Every payment a checkpoint (the original scheme): three payments, three rungs.
            "every_payment".into(),
            [vec![open(1)], pay(10), pay(20), pay(30), vec![CLOSE]].concat(),
        ),
        (
            // Every 3 payments or 2500 sat: 1000 + 1000 then 600 (2600 sat: a checkpoint), then
            // three small ones (the third a checkpoint).
            "every_three_or_2500".into(),
            [vec![open(3)], pay(1000), pay(1000), pay(600), pay(1), pay(2), pay(3), vec![CLOSE]]
                .concat(),
        ),
        (
            // Pipelined across a checkpoint: five payments held back, the third a checkpoint,
            // then sent as one burst with a sixth; close.
            "pipelined_across_checkpoint".into(),
            [
                vec![open(2)],
                held(100, 0),
                held(100, 0),
                held(100, 0x2000),
                held(100, 0),
                held(100, 0),
                pay(100),
                vec![CLOSE],
            ]
            .concat(),
        ),
        (
            // Pipelined under the default policy: bursts crossing 1000 sat.
            "pipelined".into(),
            [
                vec![open(0)],
                held(400, 0),
                held(400, 0),
                pay(400),
                held(300, 0),
                held(400, 0),
                vec![RECONNECT, CLOSE],
            ]
            .concat(),
        ),
        (
            // A checkpoint taken, its ack lost with the connection; a payment waits; the
            // reconnect resends both: the payee answers the replay with the checkpoint's ack.
            "lost_checkpoint_ack".into(),
            [vec![open(2)], pay(50), dropped(50, 0x2000), pay(50), vec![RECONNECT, CLOSE]].concat(),
        ),
        (
            // Payments taken, then a burst whose second payment's answers are lost; reconnect.
            "lost_acks_replayed".into(),
            [
                vec![open(3)],
                pay(10),
                held(10, 0),
                dropped(10, 0),
                held(10, 0),
                pay(10),
                vec![RECONNECT],
                pay(10),
                vec![CLOSE],
            ]
            .concat(),
        ),
        (
            // A checkpoint and a payment after it go as one burst; the connection drops once
            // the payee took the payment, so both acks are lost. The reconcile names the
            // payment (not the checkpoint before it); the payer resends the payment held back.
            "lost_acks_across_checkpoint".into(),
            [
                vec![open(2)],
                pay(20),
                held(30, 0x2000),
                dropped(40, 0),
                held(50, 0),
                vec![RECONNECT],
                pay(60),
                vec![CLOSE],
            ]
            .concat(),
        ),
        (
            // Two reconnects in a row with nothing in flight, then with a checkpoint in
            // flight whose ack was lost: the reconcile carries the payee's signature.
            "reconnect_twice".into(),
            [
                vec![open(0), RECONNECT, RECONNECT],
                dropped(1500, 0),
                vec![RECONNECT, RECONNECT],
                pay(10),
                vec![CLOSE],
            ]
            .concat(),
        ),
        (
            // From funded but unconfirmed: a reconnect (the payee has no channel_ready to
            // repeat, and reconciles on no payment), one confirmation, a reconnect, a payment.
            "reconnect_before_ready".into(),
            [vec![1, RECONNECT, 5, 1, RECONNECT], pay(100), vec![CLOSE]].concat(),
        ),
        (
            // A pay with its total changed and re-signed by the payer, then one with its update
            // number changed, not re-signed.
            "resigned_mutations".into(),
            [vec![open(0)], pay(700), mutate(0, 0x82, 3), mutate(0, 0x01, 6)].concat(),
        ),
        (
            // A payment's checkpoint flag flipped (the signature covers only the commitment),
            // then a checkpoint's.
            "flipped_checkpoint_flag".into(),
            [vec![open(2)], pay(700), mutate(0, 5, 1000 << 48), mutate(1, 5, 1000 << 48)].concat(),
        ),
        (
            // A payment one rung off after a checkpoint, re-signed by the payer; then the other
            // reading of the flag on the next rung.
            "wrong_rung".into(),
            [
                vec![open(2)],
                checkpoint(700),
                mutate(0, 0x84, 4 | 1000 << 48),
                mutate(0, 0x84, 1000 << 48),
                mutate(1, 0x86, 1000 << 48),
            ]
            .concat(),
        ),
        (
            // Re-signed by the payer: a total above the dust limit, totals near the capacity
            // (the payer's output trimmed below its dust limit, then over the balance), and an
            // older payment's number with new content.
            "dust_and_old_numbers".into(),
            [
                vec![open(2)],
                pay(5),
                pay(5),
                mutate(0, 0x87, 300 << 2),
                mutate(0, 0x87, 1 | 800 << 2),
                mutate(0, 0x87, 1 | 650 << 2),
                mutate(0, 0x87, 1 | 450 << 2),
                mutate(0, 0x87, 3 | 1 << 2),
            ]
            .concat(),
        ),
        (
            // The open_channel repeated with another checkpoint policy, then an invalid one.
            "open_channel_policies".into(),
            [vec![AWAITING_FUNDING], mutate(4, 1, 3), mutate(4, 2, 0), mutate(4, 3, 0)].concat(),
        ),
    ];
    for (name, msg) in &msgs {
        let bytes = msg.encode();
        let len = u16::try_from(bytes.len()).expect("small").to_le_bytes();
        programs.push((format!("raw_{name}"), [vec![open(0), 0], len.to_vec(), bytes].concat()));
    }
    for (name, program) in programs {
        fs::write(ops.join(name), program)?;
    }

    let noise = Path::new("seeds/noise_transport");
    let _ = fs::remove_dir_all(noise);
    fs::create_dir_all(noise)?;
    for (name, program) in noise_programs(&msgs) {
        fs::write(noise.join(name), program)?;
    }
    Ok(())
}

/// `noise_transport`'s inputs (its format is described at the top of its target): first
/// messages for `answer`, tampered handshakes, and session scripts.
fn noise_programs(msgs: &[(String, Message)]) -> Vec<(String, Vec<u8>)> {
    const ANSWER: u8 = 0;
    const TAMPER: u8 = 1;
    const SESSION: u8 = 2;
    // A first message to the fuzz node, from the ephemeral key `[key; 32]`, of `version`.
    let node = SecretKey::from_slice(&NODE_SECRET).expect("a valid key");
    let node_id = node.public_key(&Secp256k1::signing_only());
    let first = |key: u8, version: u16| first_message(&node_id, key, version);
    // Check them: version 1 is welcomed by the fuzz node (not another), version 2 refused.
    let identity = NodeIdentity::new(&node);
    let other = NodeIdentity::new(&SecretKey::from_slice(&OTHER_NODE_SECRET).expect("valid"));
    assert!(matches!(answer(&first(9, TRANSPORT_VERSION), &identity), Answer::Welcome { .. }));
    assert!(matches!(
        answer(&first(9, TRANSPORT_VERSION), &other),
        Answer::Refuse { error: HandshakeError::Malformed(_), reply: None }
    ));
    assert!(matches!(
        answer(&first(9, 2), &identity),
        Answer::Refuse { error: HandshakeError::UnsupportedVersion { got: 2, .. }, reply: Some(_) }
    ));
    // A real first message with its key's first byte made a brace: no key, and no plaintext.
    let mut braced = first(9, TRANSPORT_VERSION);
    braced[0] = b'{';
    let plaintext = msgs[0].1.encode();
    // Session operations; `d` is the direction, 0 payer to payee, 1 back.
    let seal = |d: u8, bytes: &[u8]| {
        let len = u16::try_from(bytes.len()).expect("small").to_le_bytes();
        [vec![d << 3], len.to_vec(), bytes.to_vec()].concat()
    };
    // A message of `len` bytes of `fill` (`fill` < 16: the fuzzer's fill byte).
    let filled =
        |d: u8, len: u16, fill: u8| [vec![fill << 4 | d << 3], len.to_le_bytes().to_vec()].concat();
    let deliver = |d: u8| vec![1 | d << 3];
    let off = |d: u8, delta: i8| vec![2 | d << 3, delta as u8];
    // Edits: flip bit `bit` of byte `pos`; truncate to `len`; extend by `n + 1` bytes.
    let flip = |pos: u16, bit: u8| [vec![0], pos.to_le_bytes().to_vec(), vec![bit]].concat();
    let truncate = |len: u16| [vec![1], len.to_le_bytes().to_vec()].concat();
    let extend = |n: u16| [vec![2], n.to_le_bytes().to_vec(), vec![0]].concat();
    let edited =
        |d: u8, edits: &[Vec<u8>]| [vec![3 | d << 3, edits.len() as u8], edits.concat()].concat();
    let reflect = |d: u8| vec![4 | d << 3];
    let stream = |d: u8, corrupt: bool, at: u16, chunk: u8| {
        [vec![5 | d << 3 | u8::from(corrupt) << 4], at.to_le_bytes().to_vec(), vec![chunk]].concat()
    };
    let authenticate = vec![6];
    let raw = |d: u8, bytes: &[u8]| [vec![7 | d << 3, bytes.len() as u8], bytes.to_vec()].concat();

    let mut every_message = vec![SESSION];
    for (i, (_, msg)) in msgs.iter().enumerate() {
        let d = u8::from(i % 2 == 1);
        every_message.extend(seal(d, &msg.encode()));
        every_message.extend(deliver(d));
    }
    let mut streamed = vec![SESSION];
    for (_, msg) in msgs {
        streamed.extend(seal(0, &msg.encode()));
    }
    streamed.extend(stream(0, false, 0, 37));

    vec![
        ("answer_first".into(), [vec![ANSWER], first(9, 1)].concat()),
        ("answer_first_other_key".into(), [vec![ANSWER], first(10, 1)].concat()),
        ("answer_brace_key".into(), [vec![ANSWER], braced].concat()),
        ("answer_version_2".into(), [vec![ANSWER], first(9, 2)].concat()),
        ("answer_version_0".into(), [vec![ANSWER], first(11, 0)].concat()),
        ("answer_random_51".into(), [vec![ANSWER], vec![9; 51]].concat()),
        ("answer_short".into(), [vec![ANSWER], vec![9; 33]].concat()),
        ("answer_plaintext".into(), [vec![ANSWER], plaintext].concat()),
        ("tamper_none".into(), vec![TAMPER, 0, 0, 0]),
        ("tamper_impostor".into(), vec![TAMPER, 1, 0, 0]),
        ("tamper_made_up".into(), [vec![TAMPER, 2, 0, 0], vec![7; 96]].concat()),
        ("tamper_first_flip".into(), [vec![TAMPER, 0, 1], flip(3, 0), vec![0]].concat()),
        // Byte 34 is the encrypted version's second byte.
        ("tamper_first_version".into(), [vec![TAMPER, 0, 1], flip(34, 1), vec![0]].concat()),
        ("tamper_first_prefix".into(), [vec![TAMPER, 0, 1], flip(0, 0), vec![0]].concat()),
        ("tamper_first_truncate".into(), [vec![TAMPER, 0, 1], truncate(33), vec![0]].concat()),
        ("tamper_answer_flip".into(), [vec![TAMPER, 0, 0, 1], flip(40, 7)].concat()),
        ("tamper_answer_truncate".into(), [vec![TAMPER, 0, 0, 1], truncate(80)].concat()),
        ("tamper_answer_extend".into(), [vec![TAMPER, 0, 0, 1], extend(2000)].concat()),
        ("session_every_message".into(), every_message),
        ("session_stream".into(), streamed),
        (
            "session_mutations".into(),
            [
                vec![SESSION],
                seal(0, b"first"),
                seal(0, b"second"),
                seal(0, b"third"),
                off(0, 1),
                edited(0, &[flip(0, 0)]),
                edited(0, &[truncate(5)]),
                edited(0, &[extend(0)]),
                reflect(0),
                raw(0, &[0; 21]),
                deliver(0),
                off(0, -1),
                deliver(0),
                deliver(0),
                seal(1, b"back"),
                off(1, 0),
                deliver(1),
            ]
            .concat(),
        ),
        (
            "session_authenticate".into(),
            [vec![SESSION], authenticate.clone(), deliver(0), authenticate, off(0, -1), deliver(0)]
                .concat(),
        ),
        (
            // The largest message, then one byte more (refused, using no nonce).
            "session_largest".into(),
            [
                vec![SESSION],
                filled(0, u16::try_from(MAX_MESSAGE).expect("fits"), 7),
                filled(0, u16::try_from(MAX_MESSAGE + 1).expect("fits"), 7),
                seal(0, b"after"),
                stream(0, false, 0, 255),
            ]
            .concat(),
        ),
        (
            "session_stream_corrupt".into(),
            [
                vec![SESSION],
                seal(0, b"one"),
                seal(0, b"two"),
                seal(1, b"three"),
                stream(0, true, 25 | 3 << 13, 5),
                stream(1, true, 1, 0),
            ]
            .concat(),
        ),
    ]
}

/// A payer's first handshake message (Noise `NK`: `e, es`, the version sealed) to the node
/// `node_id`, as the real initiator writes it. Its ephemeral key is fresh at each run (`snow`
/// takes it from the system's random source), so the seed's bytes change when they are made
/// again; what it exercises does not. (`_key` only tells the seeds apart.)
fn first_message(node_id: &PublicKey, _key: u8, version: u16) -> Vec<u8> {
    let node_id = paychan::bitcoin::PublicKey::new(*node_id);
    Initiator::start_speaking(node_id, version).1
}

/// Returns one message of each kind for the fuzz channel (two of `pay` and `pay_ack`: a
/// payment and a checkpoint), each as an honest party sends it, with its seed's name.
fn every_message(opened: &Opened) -> Vec<(String, Message)> {
    let open_channel = opened.open_channel.clone();
    let Message::OpenChannel(o) = &open_channel else { unreachable!() };
    let (_, actions) = Payee::accept(o, &payee_config(), signer(2), TIP).expect("fixed");
    let accept_channel = sent(actions).remove(0);

    let mut payee = opened.awaiting_funding.payee.clone();
    let refund_signed =
        sent(payee.handle_message(&opened.funding_created, TIP).expect("honest")).remove(0);

    let (mut payer, mut payee) = (opened.open.payer.clone(), opened.open.payee.clone());
    // The open payee answers a reestablish with channel_ready and a reconcile (no payment yet).
    let reestablish_answer = |payee: &Payee, name: &str| {
        sent(payee.reestablish())
            .into_iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("an open payee answers a reestablish with {name}"))
    };
    let channel_ready = reestablish_answer(&payee, "channel_ready");
    let reconcile_none = reestablish_answer(&payee, "reconcile");
    // The payer's proof of its key on a session (any handshake hash will do for a seed).
    let authenticate = payer.authenticate(&[0x5a; 32]);
    // Under the default policy (every 1000 sat), 400 is a payment and 700 more a checkpoint.
    let round = |payer: &mut Payer, payee: &mut Payee, amount| {
        let pay = sent(payer.pay(Amount::from_sat(amount), TIP).expect("open")).remove(0);
        let ack = sent(payee.handle_message(&pay, TIP).expect("honest")).remove(0);
        payer.handle_message(&ack).expect("honest");
        (pay, ack)
    };
    let (pay, pay_ack) = round(&mut payer, &mut payee, 400);
    let reconcile = reestablish_answer(&payee, "reconcile");
    let (pay_checkpoint, pay_ack_checkpoint) = round(&mut payer, &mut payee, 700);
    let reconcile_checkpoint = reestablish_answer(&payee, "reconcile");
    let Message::Reconcile(r) = &reconcile_checkpoint else { unreachable!() };
    assert!(r.checkpoint && r.payee_signature.is_some(), "{r:?}");
    let Message::Pay(p) = &pay_checkpoint else { unreachable!() };
    assert!(p.checkpoint, "700 sat more crosses 1000 sat");
    let shutdown = sent(payee.request_close().expect("open")).remove(0);
    let closing_signed = sent(payer.close().expect("open")).remove(0);
    let closing_ack = sent(payee.handle_message(&closing_signed, TIP).expect("honest")).remove(0);

    let channel_id = CHANNEL_ID;
    // The file service's messages (`paychan-files`), extensions to the core.
    let extension = |kind: &str, body: serde_json::Value| {
        Message::Extension(Extension::new(kind, &body).expect("an object with a channel id"))
    };
    let sha256: paychan::bitcoin::hashes::sha256::Hash = Hash::hash(b"hello");
    let file_offer = |paid_chunks: u64| {
        extension(
            "file_offer",
            json!({
                "channel_id": channel_id,
                "name": "film.bin",
                "size": 5,
                "chunk_size": 2,
                "price_per_chunk_sat": 1000,
                "sha256": sha256,
                "owed_sat": 0,
                "paid_chunks": paid_chunks,
            }),
        )
    };
    let named = |m: Message| (m.name().to_owned(), m);
    vec![
        named(open_channel),
        named(accept_channel),
        named(opened.funding_created.clone()),
        named(refund_signed),
        named(channel_ready),
        named(pay),
        ("pay_checkpoint".into(), pay_checkpoint),
        named(pay_ack),
        ("pay_ack_checkpoint".into(), pay_ack_checkpoint),
        named(shutdown),
        named(closing_signed),
        named(closing_ack),
        named(Message::Reestablish(wire::Reestablish { channel_id })),
        named(Message::Error(wire::ErrorMessage { channel_id, message: "refused".to_owned() })),
        named(authenticate),
        ("reconcile_none".into(), reconcile_none),
        named(reconcile),
        ("reconcile_checkpoint".into(), reconcile_checkpoint),
        (
            "file_request".into(),
            extension(
                "file_request",
                json!({
                    "channel_id": channel_id,
                    "name": "film.bin",
                    "from_chunk": 0,
                    "max_price_per_chunk_sat": 1000,
                }),
            ),
        ),
        ("file_offer".into(), file_offer(0)),
        ("file_offer_resumed".into(), file_offer(2)),
        (
            "file_chunk".into(),
            extension("file_chunk", json!({ "channel_id": channel_id, "index": 2, "data": "6f" })),
        ),
    ]
}
