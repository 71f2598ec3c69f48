//! A channel funded from another wallet, through the command line: `open --external` prints
//! what to pay, an independent BDK wallet (not paychan's) builds and signs the funding PSBT,
//! `fund --psbt` checks it, gets the refund signed and only then broadcasts it. Every PSBT that
//! cannot fund the channel is refused, naming the problem, with nothing broadcast.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;

use bdk_wallet::miniscript::Descriptor;
use bdk_wallet::{KeychainKind, SignOptions, Wallet};
use bitcoin::bip32::Xpriv;
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{
    Address, Amount, FeeRate, Network, OutPoint, Psbt, PublicKey, ScriptBuf, Sequence, Txid,
};
use common::cli::{mining_until_done, Daemon, Party};
use common::node::Node;
use paychan::watch::BlockSource;
use serde_json::Value;

/// A wallet of the test's own, with keys paychan never sees: what a user's Sparrow or
/// hardware signer would be.
struct OtherWallet {
    wallet: Wallet,
    xprv: Xpriv,
    /// The height of the newest block applied.
    synced: u32,
}

impl OtherWallet {
    /// A wallet on a random key, `wpkh` (native segwit) or `pkh` (legacy) descriptors.
    fn new(kind: &str) -> OtherWallet {
        let seed: [u8; 32] = bitcoin::secp256k1::rand::random();
        let xprv = Xpriv::new_master(Network::Regtest, &seed).expect("a master key");
        let purpose = if kind == "pkh" { 44 } else { 84 };
        let wallet = Wallet::create(
            format!("{kind}({xprv}/{purpose}'/1'/0'/0/*)"),
            format!("{kind}({xprv}/{purpose}'/1'/0'/1/*)"),
        )
        .network(Network::Regtest)
        .create_wallet_no_persist()
        .expect("a BDK wallet");
        OtherWallet { wallet, xprv, synced: 0 }
    }

    fn address(&mut self) -> Address {
        self.wallet.reveal_next_address(KeychainKind::External).address
    }

    /// Applies the node's blocks up to its tip.
    fn sync(&mut self, node: &Node) {
        let tip = node.height();
        for height in self.synced + 1..=tip {
            let hash = node.chain.block_hash(height).expect("block hash").expect("in the chain");
            let block = node.chain.block(hash).expect("block");
            self.wallet.apply_block(&block, height).expect("the block connects");
        }
        self.synced = tip;
    }

    /// An unsigned PSBT paying `sat` to `script`, its inputs' sequence `sequence`, 2 sat/vB.
    fn psbt(&mut self, script: ScriptBuf, sat: u64, sequence: Sequence) -> Psbt {
        let mut builder = self.wallet.build_tx();
        builder
            .add_recipient(script, Amount::from_sat(sat))
            .fee_rate(FeeRate::from_sat_per_vb(2).expect("a fee rate"))
            .set_exact_sequence(sequence);
        builder.finish().expect("the wallet builds the PSBT")
    }

    /// Signs every input with the wallet's key (the key origins come from its descriptors);
    /// finalizes too if `finalize`, as most wallets do before exporting.
    fn sign(&self, psbt: &mut Psbt, finalize: bool) {
        let secp = Secp256k1::new();
        let signed = psbt.sign(&self.xprv, &secp).expect("the key signs every input");
        assert_eq!(signed.len(), psbt.inputs.len());
        if finalize {
            let done = self.wallet.finalize_psbt(psbt, SignOptions::default()).expect("finalize");
            assert!(done, "BDK finalized the PSBT");
        }
    }

    /// A signed (and finalized) PSBT paying `sat` to `script`, without RBF.
    fn signed(&mut self, script: ScriptBuf, sat: u64) -> Psbt {
        let mut psbt = self.psbt(script, sat, Sequence::MAX);
        self.sign(&mut psbt, true);
        psbt
    }
}

/// Writes `bytes` to a new file in `dir`.
fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the PSBT file");
    path
}

/// A JSON object's keys, sorted.
fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> =
        object.as_object().expect("an object").keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    keys
}

/// What `open --external` printed, checked: the channel, its funding address and descriptor.
struct External {
    channel: String,
    address: Address,
    descriptor: Descriptor<PublicKey>,
    /// The descriptor as printed, with its checksum.
    descriptor_text: String,
}

/// `open --external` of `capacity` to `daemon`, its JSON checked against itself and `show`.
fn open_external(payer: &Party, daemon: &Daemon, capacity: u64) -> External {
    let open = payer.json(&[
        "open",
        &daemon.peer(),
        "--capacity",
        &capacity.to_string(),
        "--external",
        "--feerate",
        "2",
    ]);
    assert_eq!(
        keys(&open),
        ["amount_sat", "channel_id", "descriptor", "funding_address"],
        "{open}"
    );
    assert_eq!(open["amount_sat"], capacity);
    let channel = open["channel_id"].as_str().expect("channel_id").to_owned();
    let address = open["funding_address"].as_str().expect("funding_address");
    let address = Address::from_str(address).expect("an address").require_network(Network::Regtest);
    let address = address.expect("a regtest address");
    let text = open["descriptor"].as_str().expect("descriptor");
    assert!(text.starts_with("wsh(multi(2,") && text.contains(")#"), "{text}");
    let descriptor = Descriptor::<PublicKey>::from_str(text).expect("the descriptor parses");
    assert_eq!(descriptor.address(Network::Regtest).expect("an address"), address);
    assert!(address.script_pubkey().is_p2wsh());
    let show = payer.channel(&channel);
    assert_eq!(show["funding_descriptor"], text);
    assert_eq!(show["state"], "awaiting funding");
    assert_eq!(show["capacity_sat"], capacity);
    External { channel, address, descriptor, descriptor_text: text.to_owned() }
}

/// Runs `paychan --json fund CHANNEL --psbt FILE`, mining a block every 100 ms until it
/// returns (it waits for the funding's confirmations), and returns its JSON.
fn fund_mining(node: &Node, payer: &Party, channel: &str, psbt: &Path) -> Value {
    let child = payer
        .command()
        .args(["--json", "fund", channel, "--psbt"])
        .arg(psbt)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run paychan fund");
    mining_until_done(node, child, "fund")
}

/// Checks `fund`'s JSON and the funding on chain: `psbt`'s transaction, confirmed, paying
/// exactly `capacity` to the descriptor's script once. Returns the funding outpoint.
fn check_funded(node: &Node, ext: &External, fund: &Value, psbt: &Psbt, capacity: u64) -> OutPoint {
    assert_eq!(
        keys(fund),
        ["capacity_sat", "channel_id", "funding_txid", "refund_locktime"],
        "{fund}"
    );
    assert_eq!(fund["channel_id"], ext.channel.as_str());
    assert_eq!(fund["capacity_sat"], capacity);
    let txid: Txid = fund["funding_txid"].as_str().unwrap().parse().unwrap();
    // Segwit inputs: signing did not change the txid the refund was signed against.
    assert_eq!(txid, psbt.unsigned_tx.compute_txid());
    assert!(node.is_confirmed(txid));
    let (tx, confirmations, _) = node.get_tx(txid);
    assert!(confirmations >= 1);
    let script = ext.descriptor.script_pubkey();
    assert_eq!(script, ext.address.script_pubkey());
    let paying: Vec<_> =
        tx.output.iter().enumerate().filter(|(_, o)| o.script_pubkey == script).collect();
    assert_eq!(paying.len(), 1, "one funding output: {tx:?}");
    let (vout, out) = paying[0];
    assert_eq!(out.value, Amount::from_sat(capacity));
    OutPoint::new(txid, vout as u32)
}

#[test]
fn a_channel_funded_by_another_wallets_psbt_pays_and_closes_with_exact_amounts() {
    const CAPACITY: u64 = 200_000;
    let node = Node::start();
    let mut other = OtherWallet::new("wpkh");
    let to = other.address();
    node.mine_to_address(101, &to);
    other.sync(&node);
    assert!(other.wallet.balance().confirmed > Amount::from_sat(CAPACITY));

    let payee = Party::new(&node);
    let payer = Party::new(&node);
    let daemon = Daemon::start(&payee, None, &[]);
    // The payer's own wallet never holds a coin: the funding comes from elsewhere.
    assert_eq!(payer.json(&["balance"])["confirmed_sat"], 0);
    let tip = node.height();
    let ext = open_external(&payer, &daemon, CAPACITY);
    assert_eq!(payee.channel(&ext.channel)["state"], "awaiting funding");
    assert!(node.mempool().is_empty(), "open --external broadcasts nothing");

    let psbt = other.signed(ext.address.script_pubkey(), CAPACITY);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "funding.psbt", psbt.to_string());
    let fund = fund_mining(&node, &payer, &ext.channel, &file);
    let funding = check_funded(&node, &ext, &fund, &psbt, CAPACITY);
    let refund = fund["refund_locktime"].as_u64().unwrap();
    assert!((u64::from(tip) + 1008..=u64::from(tip) + 1008 + 10).contains(&refund), "{fund}");
    let (funding_tx, _, _) = node.get_tx(funding.txid);
    for input in &funding_tx.input {
        assert!(other.wallet.get_utxo(input.previous_output).is_some(), "the other wallet's coin");
    }
    assert_eq!(payer.json(&["balance"])["confirmed_sat"], 0);
    for party in [&payer, &payee] {
        let show = party.channel(&ext.channel);
        assert_eq!(show["state"], "open");
        assert_eq!(show["funding_outpoint"], funding.to_string());
        assert_eq!(show["funding_descriptor"], ext.descriptor_text.as_str());
    }

    let mut total = 0;
    for sat in [1_000u64, 2_500, 40_000, 7] {
        let paid = payer.json(&["pay", &ext.channel, &sat.to_string()]);
        total += sat;
        assert_eq!(paid["paid_total_sat"], total);
    }
    assert_eq!(payee.channel(&ext.channel)["paid_total_sat"], total);

    let close = payer.json(&["close", &ext.channel]);
    assert_eq!(close["payee_sat"], total);
    let payer_sat = close["payer_sat"].as_u64().unwrap();
    let txid: Txid = close["settlement_txid"].as_str().unwrap().parse().unwrap();
    node.mine(1);
    let (tx, confirmations, vsize) = node.get_tx(txid);
    assert_eq!(confirmations, 1);
    assert_eq!(tx.input.len(), 1);
    assert_eq!(tx.input[0].previous_output, funding, "the settlement spends the PSBT's funding");
    let mut values: Vec<u64> = tx.output.iter().map(|o| o.value.to_sat()).collect();
    values.sort_unstable();
    assert_eq!(values, [total, payer_sat]);
    let fee = node.fee(txid).to_sat();
    assert_eq!(payer_sat, CAPACITY - total - fee, "the capacity, all accounted for");
    assert!((2 * vsize..=2 * (vsize + 2)).contains(&fee), "fee {fee} for {vsize} vB");
    // Each side's share lands in its own paychan wallet.
    assert_eq!(payer.json(&["balance"])["confirmed_sat"], payer_sat);
    assert_eq!(payee.json(&["balance"])["confirmed_sat"], total);
    for party in [&payer, &payee] {
        assert_eq!(party.channel(&ext.channel)["state"], "settled");
    }
}

#[test]
fn a_bad_psbt_is_refused_and_nothing_is_broadcast() {
    const CAPACITY: u64 = 100_000;
    let node = Node::start();
    // A legacy (pkh) wallet with one mature coinbase, and a native segwit one.
    let mut legacy = OtherWallet::new("pkh");
    let to = legacy.address();
    node.mine_to_address(1, &to);
    let mut other = OtherWallet::new("wpkh");
    let to = other.address();
    node.mine_to_address(101, &to);
    legacy.sync(&node);
    other.sync(&node);
    assert!(legacy.wallet.balance().confirmed > Amount::from_sat(CAPACITY));

    let payee = Party::new(&node);
    let payer = Party::new(&node);
    let daemon = Daemon::start(&payee, None, &[]);
    let ext = open_external(&payer, &daemon, CAPACITY);
    let channel = ext.channel.as_str();
    let script = ext.address.script_pubkey();
    let dir = tempfile::tempdir().expect("temp dir");

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let short = other.signed(script.clone(), CAPACITY - 1_000);
    cases.push((
        "wrong amount",
        short.to_string().into(),
        "funding output holds 99000 sat, the channel capacity is 100000 sat",
    ));
    let elsewhere = other.address().script_pubkey();
    let elsewhere = other.signed(elsewhere, CAPACITY);
    cases.push((
        "another payment",
        elsewhere.to_string().into(),
        "pays nothing to the channel script",
    ));
    let mut rbf = other.psbt(script.clone(), CAPACITY, Sequence::ENABLE_RBF_NO_LOCKTIME);
    other.sign(&mut rbf, true);
    cases.push(("RBF", rbf.to_string().into(), "signals replace-by-fee (sequence 0xfffffffd)"));
    let non_segwit = legacy.signed(script.clone(), CAPACITY);
    assert!(non_segwit.inputs[0].witness_utxo.is_none());
    cases.push((
        "non-segwit input",
        non_segwit.to_string().into(),
        "spends a non-segwit output (OP_DUP OP_HASH160",
    ));
    let unsigned = other.psbt(script.clone(), CAPACITY, Sequence::MAX);
    cases.push(("unsigned", unsigned.to_string().into(), "the PSBT is not fully signed"));
    let mut no_utxo = other.signed(script.clone(), CAPACITY);
    no_utxo.inputs[0].witness_utxo = None;
    no_utxo.inputs[0].non_witness_utxo = None;
    cases.push((
        "no spent output",
        no_utxo.serialize(),
        "PSBT input 0 does not carry the output it spends",
    ));
    // Signed and well formed, but the node would refuse it: no refund is asked for against a
    // funding that can never confirm.
    let mut builder = other.wallet.build_tx();
    builder
        .add_recipient(script.clone(), Amount::from_sat(CAPACITY))
        .fee_rate(FeeRate::ZERO)
        .set_exact_sequence(Sequence::MAX);
    let mut free = builder.finish().expect("the wallet builds a PSBT paying no fee");
    other.sign(&mut free, true);
    cases.push(("no fee", free.to_string().into(), "the node would not accept it"));
    cases.push(("garbage", b"this is not a PSBT\n".to_vec(), "not a base64 PSBT"));
    cases.push(("garbage binary", b"psbt\xff\x01\x02\x03".to_vec(), "not a PSBT"));

    for (n, (what, bytes, reason)) in cases.into_iter().enumerate() {
        let file = write(dir.path(), &format!("bad{n}.psbt"), bytes);
        let stderr = payer.fails(&["fund", channel, "--psbt", file.to_str().unwrap()]);
        assert!(stderr.contains(reason), "{what}: {stderr}");
        if !what.starts_with("garbage") {
            assert!(stderr.contains("nothing was broadcast"), "{what}: {stderr}");
        }
        assert!(node.mempool().is_empty(), "{what}: something was broadcast");
        for party in [&payer, &payee] {
            assert_eq!(party.channel(channel)["state"], "awaiting funding", "{what}");
        }
    }
    // Nothing was spent or broken: a good PSBT still funds the channel. Signed but not
    // finalized (paychan finalizes it), and binary.
    let mut good = other.psbt(script, CAPACITY, Sequence::MAX);
    other.sign(&mut good, false);
    assert!(good.inputs.iter().all(|i| i.final_script_witness.is_none()));
    let file = write(dir.path(), "good.psbt", good.serialize());
    let fund = fund_mining(&node, &payer, channel, &file);
    check_funded(&node, &ext, &fund, &good, CAPACITY);
    for party in [&payer, &payee] {
        assert_eq!(party.channel(channel)["state"], "open");
    }
    assert_eq!(payer.json(&["pay", channel, "500"])["paid_total_sat"], 500);
    // A funded channel takes no other PSBT.
    let again = payer.fails(&["fund", channel, "--psbt", file.to_str().unwrap()]);
    assert!(again.contains("not waiting for its funding"), "{again}");
}
