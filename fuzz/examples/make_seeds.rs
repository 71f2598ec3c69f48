//! Writes the seed inputs under `seeds/`: every message of the protocol for the fuzz channel,
//! framed (for `frame_decode`), and short operation sequences (for `payee_messages`, whose input
//! format is described at the top of its target).
//!
//! Run from `fuzz/`: `cargo run --example make_seeds`.

use std::fs;
use std::path::Path;

use paychan::bitcoin::hashes::Hash;
use paychan::bitcoin::Amount;
use paychan::channel::{Payee, Payer};
use paychan::net::frame::encode_frame;
use paychan::wire::{self, Message};
use paychan_fuzz::{payee_config, payer_config, sent, signer, Opened, CHANNEL_ID, TIP};

fn main() -> std::io::Result<()> {
    let opened = Opened::new();
    let msgs = every_message(&opened);

    let frames = Path::new("seeds/frame_decode");
    fs::create_dir_all(frames)?;
    let mut all = Vec::new();
    for msg in &msgs {
        let frame = encode_frame(&msg.encode()).expect("small");
        fs::write(frames.join(msg.name()), &frame)?;
        all.extend_from_slice(&frame);
    }
    fs::write(frames.join("all_messages"), &all)?;
    fs::write(frames.join("oversize"), [0x00, 0x01, 0x00, 0x01, b'{'])?;
    fs::write(frames.join("truncated"), &all[..all.len() - 3])?;

    let ops = Path::new("seeds/payee_messages");
    fs::create_dir_all(ops)?;
    let open = 2;
    let pay = |amount: u16| [vec![1], amount.to_le_bytes().to_vec()].concat();
    let mut programs: Vec<(String, Vec<u8>)> = vec![
        ("pay_pay_close".into(), [vec![open], pay(1000), pay(2000), vec![4]].concat()),
        (
            "open_then_pay".into(),
            // From awaiting funding: reconnect (funding_created), one confirmation, pay, close.
            [vec![0, 6, 5, 1], pay(10_000), vec![3, 1, 0, 0, 4]].concat(),
        ),
        (
            "pay_replay_tip".into(),
            // Pay, replay it, move the tip near the ladder's end (shutdown, close).
            [vec![open], pay(500), vec![7, 0, 3, 0, 0x42, 0x04]].concat(),
        ),
        (
            "pipelined".into(),
            // Two pays held back, a third sends all three; two more held back, then a reconnect
            // resends them; close.
            [
                vec![open],
                pay(0x8000 | 1000),
                pay(0x8000 | 2000),
                pay(500),
                pay(0x8000 | 300),
                pay(0x8000 | 400),
                vec![6, 4],
            ]
            .concat(),
        ),
        (
            "resigned_mutations".into(),
            // A fresh pay with its total changed and re-signed by the payer, then one with its
            // update number changed, not re-signed.
            [
                vec![open],
                pay(700),
                vec![2, 0, 0x82],
                3u64.to_le_bytes().to_vec(),
                vec![2, 0, 0x01],
                6u64.to_le_bytes().to_vec(),
            ]
            .concat(),
        ),
    ];
    for msg in &msgs {
        let bytes = msg.encode();
        let len = u16::try_from(bytes.len()).expect("small").to_le_bytes();
        programs
            .push((format!("raw_{}", msg.name()), [vec![open, 0], len.to_vec(), bytes].concat()));
    }
    for (name, program) in programs {
        fs::write(ops.join(name), program)?;
    }
    Ok(())
}

/// Returns one message of each kind for the fuzz channel, each as an honest party sends it.
fn every_message(opened: &Opened) -> Vec<Message> {
    let (_, actions) = Payer::open(payer_config(), signer(1), CHANNEL_ID, TIP).expect("fixed");
    let open_channel = sent(actions).remove(0);
    let Message::OpenChannel(o) = &open_channel else { unreachable!() };
    let (_, actions) = Payee::accept(o, &payee_config(), signer(2), TIP).expect("fixed");
    let accept_channel = sent(actions).remove(0);

    let mut payee = opened.awaiting_funding.payee.clone();
    let refund_signed =
        sent(payee.handle_message(&opened.funding_created, TIP).expect("honest")).remove(0);

    let (mut payer, mut payee) = (opened.open.payer.clone(), opened.open.payee.clone());
    let channel_ready = sent(payee.reestablish()).pop();
    let pay = sent(payer.pay(Amount::from_sat(1000), TIP).expect("open")).remove(0);
    let pay_ack = sent(payee.handle_message(&pay, TIP).expect("honest")).remove(0);
    payer.handle_message(&pay_ack).expect("honest");
    let shutdown = sent(payee.request_close().expect("open")).remove(0);
    let closing_signed = sent(payer.close().expect("open")).remove(0);
    let closing_ack = sent(payee.handle_message(&closing_signed, TIP).expect("honest")).remove(0);

    let channel_id = CHANNEL_ID;
    vec![
        open_channel,
        accept_channel,
        opened.funding_created.clone(),
        refund_signed,
        channel_ready.expect("an open payee repeats channel_ready"),
        pay,
        pay_ack,
        shutdown,
        closing_signed,
        closing_ack,
        Message::Reestablish(wire::Reestablish { channel_id }),
        Message::Error(wire::ErrorMessage { channel_id, message: "refused".to_owned() }),
        Message::FileRequest(wire::FileRequest {
            channel_id,
            name: "film.bin".to_owned(),
            from_chunk: 0,
            max_price_per_chunk_sat: Some(1000),
        }),
        Message::FileOffer(wire::FileOffer {
            channel_id,
            name: "film.bin".to_owned(),
            size: 5,
            chunk_size: 2,
            price_per_chunk_sat: 1000,
            sha256: Hash::hash(b"hello"),
            owed_sat: 0,
        }),
        Message::FileChunk(wire::FileChunk { channel_id, index: 2, data: b"o".to_vec() }),
    ]
}
