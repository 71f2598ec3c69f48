//! On a real regtest node: the on-chain size of each channel transaction as mined, next to the
//! smallest size the same transaction could have. Prints a table (recorded in
//! docs/performance.md) and checks that the only slack is in the ECDSA signatures' encoding.

mod common;

use std::io::Write;

use bitcoin::{Amount, Transaction, Txid};
use common::node::Node;
use common::regtest::{RegtestChannel, Terms};

/// The smallest DER signature with its sighash byte that an honest signer produces: 70 bytes of
/// DER with a low R and a low S (as Bitcoin Core's signer grinds for), plus one.
const MIN_SIG_LEN: usize = 71;

/// The size of `tx` with every signature at its smallest encoding, in vbytes.
fn smallest_vsize(tx: &Transaction) -> u64 {
    let excess: usize = tx
        .input
        .iter()
        .flat_map(|i| i.witness.iter())
        // Signatures are the DER elements (0x30 ...) of 71 to 73 bytes.
        .filter(|e| e.first() == Some(&0x30) && (MIN_SIG_LEN..=73).contains(&e.len()))
        .map(|e| e.len() - MIN_SIG_LEN)
        .sum();
    (tx.weight().to_wu() - excess as u64).div_ceil(4)
}

fn row(node: &Node, name: &str, txid: Txid) -> (String, u64, u64) {
    let (tx, confirmations, vsize) = node.get_tx(txid);
    assert!(confirmations > 0, "{name} is mined");
    assert_eq!(vsize, tx.vsize() as u64);
    let smallest = smallest_vsize(&tx);
    // Each signature is at most 2 bytes above the smallest: half a vbyte each, witness-discounted.
    assert!(vsize >= smallest && vsize <= smallest + 1, "{name}: {vsize} vs {smallest}");
    (name.to_owned(), vsize, smallest)
}

#[test]
fn channel_transactions_as_mined() {
    let node = Node::start();
    let mut rows = Vec::new();

    // Funding and settlement: the cooperative life.
    let mut ch = RegtestChannel::open(&node, Terms::default());
    ch.pay(Amount::from_sat(10_000));
    let settlement = ch.close();
    node.mine(1);
    rows.push(row(
        &node,
        "funding (1 P2WPKH in, P2WSH + P2WPKH change out)",
        ch.funding_tx.compute_txid(),
    ));
    rows.push(row(&node, "settlement (2-of-2 P2WSH in, 2 P2WPKH out)", settlement.compute_txid()));

    // A commitment: the payee's force-close.
    let mut ch = RegtestChannel::open(&node, Terms::default());
    ch.pay(Amount::from_sat(10_000));
    node.mine_to(ch.commitments[0].lock_time.to_consensus_u32());
    let sent = ch.payee_sees_tip();
    let [(commitment, Ok(_))] = &sent[..] else { panic!("{sent:?}") };
    node.mine(1);
    rows.push(row(&node, "commitment (2-of-2 P2WSH in, 2 P2WPKH out)", commitment.compute_txid()));

    // The refund: the payer's way out.
    let mut ch = RegtestChannel::open(&node, Terms::default());
    node.mine_to(ch.payer.refund_tx().unwrap().lock_time.to_consensus_u32());
    let sent = ch.payer_sees_tip();
    let [(refund, Ok(_))] = &sent[..] else { panic!("{sent:?}") };
    node.mine(1);
    rows.push(row(&node, "refund (2-of-2 P2WSH in, 1 P2WPKH out)", refund.compute_txid()));

    let mut err = std::io::stderr();
    let _ = writeln!(err, "| transaction | vbytes as mined | smallest possible |");
    let _ = writeln!(err, "|---|---|---|");
    for (name, vsize, smallest) in &rows {
        let _ = writeln!(err, "| {name} | {vsize} | {smallest} |");
    }
}
