//! The wallet's `balance` and `open` on a node with many blocks and many UTXOs that are not
//! the wallet's: the previous release's way (`scantxoutset` over the whole UTXO set, then one
//! `gettxout` per coin, on every `balance` and twice per `open`) against the BDK wallet's
//! (follow the blocks not seen yet, then one `gettxspendingprevout` for every coin), in one
//! run on one node.
//!
//! ```text
//! cargo bench -p paychan-cli --bench wallet_sync [-- --utxos 100000 --blocks 1000 --runs 5]
//! ```
//!
//! It starts its own regtest `bitcoind` (as the tests do: `regtest/bitcoind.sh install`), mines
//! `--blocks` blocks, and fills the UTXO set with `--utxos` outputs of a key that is not the
//! wallet's, 2,000 per transaction. The wallet holds one mature coinbase.

use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use bitcoin::{
    absolute, transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Witness,
};
use paychan::chain::{Chain, OutputStatus};
use paychan::tx::sign_p2wpkh_input;
use paychan::watch::BlockSource;
use paychan_testkit::bitcoind::Node;
use paychan_testkit::{p2wpkh_address, signer};
use paychan_wallet::{Branch, Wallet, LOOKAHEAD};

/// Outputs per transaction that fills the UTXO set: 43 bytes each (P2WSH), about 86 kvB in
/// all, under the standard limit of 100 kvB.
const OUTPUTS_PER_TX: usize = 2_000;
const OUTPUT_VALUE: Amount = Amount::from_sat(10_000);

struct Args {
    utxos: usize,
    blocks: u32,
    runs: usize,
}

fn args() -> Args {
    let mut a = Args { utxos: 100_000, blocks: 1_000, runs: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<usize>().ok()).expect("a number");
        match arg.as_str() {
            "--utxos" => a.utxos = value(),
            "--blocks" => a.blocks = u32::try_from(value()).expect("blocks"),
            "--runs" => a.runs = value().max(1),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn main() {
    let a = args();
    let node = Node::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("wallet.sqlite");
    // A seed written before the wallet's database, as the previous release left it: its first
    // sync follows the chain from genesis.
    write_seed(&dir.path().join(paychan_wallet::SEED_FILE));
    let mut wallet = Wallet::open(dir.path(), &db, bitcoin::Network::Regtest).expect("wallet");
    let ours = wallet.new_address().expect("address");

    // Blocks, and coinbases of a key of the bench's own to pay the outputs that are not ours.
    let txs = a.utxos.div_ceil(OUTPUTS_PER_TX);
    let filler = signer(41);
    let filler_address = p2wpkh_address(41);
    node.mine_to_address(u32::try_from(txs).expect("txs"), &filler_address);
    node.mine_to_address(1, &ours);
    node.mine(a.blocks.max(101));
    let started = Instant::now();
    fill_utxo_set(&node, &filler, txs, a.utxos);
    // About eleven such transactions fit in a block.
    while !node.mempool().is_empty() {
        node.mine(1);
    }
    let tip = node.height();
    eprintln!(
        "node: {tip} blocks, {} outputs not ours ({} transactions), filled in {:.1} s",
        a.utxos,
        txs,
        started.elapsed().as_secs_f64()
    );

    // What the node's side of a sync from genesis costs: every block read, nothing applied.
    let started = Instant::now();
    for height in 1..=tip {
        let hash = node.chain.block_hash(height).expect("hash").expect("in the chain");
        node.chain.block(hash).expect("block");
    }
    let reads = started.elapsed();

    // The BDK wallet's first sync: from genesis for a seed made before it (the migration);
    // a fresh seed starts near its birth.
    let started = Instant::now();
    let synced = wallet.sync(&node.chain).expect("first sync");
    let first_sync = started.elapsed();
    let ours_sat = wallet.balance(&node.chain).expect("balance");
    assert!(ours_sat > Amount::ZERO, "the wallet sees its coinbase");

    let descriptors =
        [wallet.descriptor(Branch::Receive).clone(), wallet.descriptor(Branch::Change).clone()];
    let old_balance = || {
        // The previous release's `balance`: scan, then each coin's status.
        let found = node.chain.scan_outputs(&descriptors, 1 + LOOKAHEAD).expect("scantxoutset");
        let mut sum = Amount::ZERO;
        for utxo in found {
            if matches!(node.chain.output_status(utxo.outpoint), Ok(OutputStatus::Unspent { .. })) {
                sum += utxo.txout.value;
            }
        }
        sum
    };
    assert_eq!(old_balance(), ours_sat, "both ways find the same coins");

    let funding = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([9; 32]));
    let feerate = FeeRate::from_sat_per_vb(2).expect("fee rate");
    let mut rows = Vec::new();
    let old_b = time(a.runs, || {
        old_balance();
    });
    let new_b = time(a.runs, || {
        wallet.balance(&node.chain).expect("balance");
    });
    // `open`: the previous release asked for the balance, then scanned again to fund.
    let old_o = time(a.runs, || {
        old_balance();
        old_balance();
    });
    let new_o = time(a.runs, || {
        wallet.balance(&node.chain).expect("balance");
        wallet.fund(&node.chain, &funding, Amount::from_sat(100_000), feerate).expect("fund");
    });
    // After a new block: one block to read.
    let new_b_block = time(a.runs, || {
        node.mine(1);
        wallet.balance(&node.chain).expect("balance");
    });
    rows.push(("balance", old_b, new_b));
    rows.push(("open (wallet part)", old_o, new_o));
    println!("| operation | scantxoutset (previous release) | BDK, blocks followed | ratio |");
    println!("|---|---|---|---|");
    for (what, old, new) in rows {
        println!(
            "| {what} | {:.1} ms | {:.2} ms | {:.0}x |",
            ms(old),
            ms(new),
            old.as_secs_f64() / new.as_secs_f64()
        );
    }
    println!(
        "| balance after one new block (includes mining it) | | {:.2} ms | |",
        ms(new_b_block)
    );
    println!(
        "| first sync from genesis ({} blocks, once per wallet of the previous release) | | {:.0} ms | |",
        synced.connected,
        ms(first_sync)
    );
    println!("| reading those blocks from the node, nothing applied | | {:.0} ms | |", ms(reads));
    println!("(median of {} runs; {} blocks, {} outputs not ours)", a.runs, tip, a.utxos);
}

/// Pays `utxos` outputs of [`OUTPUT_VALUE`] to made-up keys, from the first `txs` coinbases
/// (which pay `filler`), in transactions of [`OUTPUTS_PER_TX`] outputs.
fn fill_utxo_set(node: &Node, filler: &paychan::keys::ChannelSigner, txs: usize, utxos: usize) {
    let mut left = utxos;
    for height in 1..=u32::try_from(txs).expect("txs") {
        let hash = node.chain.block_hash(height).expect("hash").expect("mined");
        let coinbase = node.chain.block(hash).expect("block").txdata.remove(0);
        let spent = coinbase.output[0].clone();
        let n = left.min(OUTPUTS_PER_TX);
        left -= n;
        let output: Vec<TxOut> = (0..n)
            .map(|i| TxOut {
                value: OUTPUT_VALUE,
                // A distinct script per output, none of them the wallet's.
                script_pubkey: ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array(
                    distinct(height, i),
                )),
            })
            .collect();
        let fee = Amount::from_sat(100_000 + 40 * n as u64);
        let change = spent.value - OUTPUT_VALUE * n as u64 - fee;
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(coinbase.compute_txid(), 0),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output,
        };
        tx.output.push(TxOut { value: change, script_pubkey: spent.script_pubkey.clone() });
        sign_p2wpkh_input(&mut tx, 0, &spent, filler).expect("sign");
        node.chain.broadcast(&tx).expect("broadcast the filler");
    }
}

fn write_seed(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("seed file");
    std::io::Write::write_all(&mut file, "2a".repeat(32).as_bytes()).expect("write the seed");
}

fn distinct(height: u32, i: usize) -> [u8; 32] {
    let mut bytes = [7u8; 32];
    bytes[..4].copy_from_slice(&height.to_le_bytes());
    bytes[4..12].copy_from_slice(&(i as u64).to_le_bytes());
    bytes
}

/// The median time of `runs` runs of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
