//! The paid file service from the command line against a regtest node: `serve --serve-dir`
//! sells a file chunk by chunk, `fetch` pays for each chunk, checks the file, and settles; ten
//! thousand chunks at 1 sat each on one channel; a download broken off by a `kill -9` of either
//! side resumes on the same channel and pays for each chunk exactly once.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use bitcoin::Txid;
use common::cli::{Daemon, Party};
use common::node::Node;
use serde_json::Value;

/// A payee selling `data` as `film.bin` at 1000 sat per 1000-byte chunk, and a funded payer.
struct Shop {
    daemon: Daemon,
    payer: Party,
    payee: Party,
    node: Node,
    files: tempfile::TempDir,
}

fn shop(data: &[u8], serve_args: &[&str]) -> Shop {
    shop_at(data, 1000, 1000, serve_args)
}

/// A payee selling `data` as `film.bin` at `price` sat per chunk of `chunk_size` bytes.
fn shop_at(data: &[u8], price: u64, chunk_size: u32, serve_args: &[&str]) -> Shop {
    let node = Node::start();
    let payee = Party::new(&node);
    let payer = Party::new(&node);
    payer.fund(&node);
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("film.bin"), data).unwrap();
    let dir = files.path().to_str().unwrap();
    let (price, chunk_size) = (price.to_string(), chunk_size.to_string());
    let mut args =
        vec!["--serve-dir", dir, "--price-per-chunk", &price, "--chunk-size", &chunk_size];
    args.extend_from_slice(serve_args);
    let daemon = Daemon::start(&payee, None, &args);
    Shop { daemon, payer, payee, node, files }
}

/// Runs `fetch`, mining a block every 100 ms until it exits (its open waits for one).
fn fetch(shop: &Shop, args: &[&str]) -> (bool, Value, String) {
    let mut child: Child = shop
        .payer
        .command()
        .args(["--json", "fetch", &shop.daemon.peer()])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run paychan fetch");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "fetch did not return within 120 s");
        std::thread::sleep(Duration::from_millis(100));
        shop.node.mine(1);
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().next().map_or(Value::Null, |l| serde_json::from_str(l).unwrap());
    (out.status.success(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn film(chunks: usize) -> Vec<u8> {
    (0..chunks * 1000).map(|i| (i * 7 % 256) as u8).collect()
}

#[test]
fn a_hundred_chunks_paid_one_by_one_then_settled_in_one_channel() {
    let data = film(100);
    let shop = shop(&data, &[]);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("film.bin");
    let target = path.to_str().unwrap();
    // The default lifetime and step.
    let (ok, summary, stderr) =
        fetch(&shop, &["film.bin", "--out", target, "--capacity", "150000"]);
    assert!(ok, "{stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(
        (summary["chunks"].as_u64(), summary["paid_sat"].as_u64()),
        (Some(100), Some(100_000))
    );
    assert_eq!(summary["bytes"], 100_000);
    assert_eq!(summary["payee_sat"], 100_000);
    let txid: Txid = summary["settlement_txid"].as_str().unwrap().parse().unwrap();
    shop.node.mine(1);
    let (tx, confirmations, _) = shop.node.get_tx(txid);
    assert!(confirmations >= 1);
    assert_eq!(tx.lock_time.to_consensus_u32(), 0);
    assert!(tx.output.iter().any(|o| o.value.to_sat() == 100_000));
    let channel = summary["channel_id"].as_str().unwrap();
    assert_eq!(shop.payee.channel(channel)["paid_total_sat"], 100_000);
    assert_eq!(shop.payee.channel(channel)["payments"], 100);
}

#[test]
fn ten_thousand_chunks_at_one_sat_each_on_one_channel_with_the_default_terms() {
    const CHUNKS: usize = 10_000;
    let data: Vec<u8> = (0..CHUNKS * 64).map(|i| (i * 13 % 251) as u8).collect();
    let shop = shop_at(&data, 1, 64, &[]);
    // The command line's default terms: lifetime 1008, step 6, margin 6, a checkpoint every 1%
    // of the capacity.
    let open = shop.payer.open(&shop.node, &shop.daemon, 100_000, &[]);
    let channel = open["channel_id"].as_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("film.bin");
    let started = Instant::now();
    let summary = fetch_on(&shop, &path, channel);
    println!("{CHUNKS} chunks fetched and paid in {:?}", started.elapsed());
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(
        (summary["chunks"].as_u64(), summary["paid_sat"].as_u64()),
        (Some(CHUNKS as u64), Some(CHUNKS as u64))
    );
    let show = shop.payee.channel(channel);
    assert_eq!((&show["payments"], &show["paid_total_sat"]), (&CHUNKS.into(), &CHUNKS.into()));
    // 10,000 sat paid, a checkpoint every 1,000 sat: ten rungs for ten thousand payments.
    assert_eq!(show["checkpoints"], 10);
    let txid: Txid = summary["settlement_txid"].as_str().unwrap().parse().unwrap();
    shop.node.mine(1);
    let (tx, confirmations, _) = shop.node.get_tx(txid);
    assert_eq!(confirmations, 1);
    let payee_script = payee_address(&shop).script_pubkey();
    let to_payee: Vec<u64> = tx
        .output
        .iter()
        .filter(|o| o.script_pubkey == payee_script)
        .map(|o| o.value.to_sat())
        .collect();
    assert_eq!(to_payee, vec![CHUNKS as u64], "the payee gets exactly what the chunks cost");
    assert_eq!(summary["payee_sat"], CHUNKS as u64);
}

/// The payee's payout address for the channel, read from the settlement's other output.
fn payee_address(shop: &Shop) -> bitcoin::Address {
    use paychan::store::Store as _;
    let channels = shop.payee.json(&["list"]);
    let id = channels["channels"][0]["channel_id"].as_str().unwrap().to_owned();
    let store =
        paychan_sqlite::SqliteStore::open(&shop.payee.datadir().join(paychan_sqlite::STORE_FILE))
            .expect("the payee's store");
    let record = store.channel(id.parse().unwrap()).unwrap().unwrap();
    let paychan::store::ChannelState::Payee(state) = record.state else { panic!() };
    bitcoin::Address::from_script(&state.payee_script, bitcoin::Network::Regtest).unwrap()
}

/// Runs `fetch film.bin --out PATH --channel CHANNEL` and returns its summary.
fn fetch_on(shop: &Shop, path: &std::path::Path, channel: &str) -> Value {
    let peer = shop.daemon.peer();
    let out = path.to_str().unwrap();
    shop.payer.json(&["fetch", &peer, "film.bin", "--out", out, "--channel", channel])
}

/// Starts `fetch FILE --out PATH --channel CHANNEL` in the background.
fn spawn_fetch(shop: &Shop, path: &std::path::Path, channel: &str) -> Child {
    shop.payer
        .command()
        .args(["--json", "fetch", &shop.daemon.peer(), "film.bin", "--out"])
        .arg(path)
        .args(["--channel", channel])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run paychan fetch")
}

/// Waits until `path` holds at least `bytes` bytes.
fn wait_for_bytes(path: &std::path::Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(path).map_or(0, |m| m.len()) < bytes {
        assert!(Instant::now() < deadline, "{} did not reach {bytes} bytes", path.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The end of a resumed download: the file is whole, and the channel paid exactly the price of
/// every chunk, once each.
fn assert_paid_once_per_chunk(
    shop: &Shop,
    channel: &str,
    summary: &Value,
    data: &[u8],
    path: &std::path::Path,
) {
    assert_eq!(std::fs::read(path).unwrap(), data);
    let chunks = summary["chunks"].as_u64().unwrap();
    assert_eq!(shop.payee.channel(channel)["paid_total_sat"], chunks * 10);
    assert_eq!(summary["payee_sat"], chunks * 10);
    assert!(summary["resumed_from"].as_u64().unwrap() > 0, "{summary}");
}

#[test]
fn a_download_broken_off_by_a_payer_crash_resumes_and_pays_each_chunk_once() {
    let data: Vec<u8> = (0..400 * 100).map(|i| (i % 241) as u8).collect();
    let shop = shop_at(&data, 10, 100, &[]);
    let open = shop.payer.open(&shop.node, &shop.daemon, 100_000, &[]);
    let channel = open["channel_id"].as_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("film.bin");
    let part = out.path().join("film.bin.part");
    // Killed at some moment after 100 chunks: between a chunk written and its payment, a
    // payment in flight, or a payment acknowledged.
    let mut child = spawn_fetch(&shop, &path, channel);
    wait_for_bytes(&part, 100 * 100);
    child.kill().unwrap();
    child.wait().unwrap();
    let held = std::fs::metadata(&part).unwrap().len();
    assert!(held < data.len() as u64, "the download was cut off");
    let summary = fetch_on(&shop, &path, channel);
    assert_paid_once_per_chunk(&shop, channel, &summary, &data, &path);
}

#[test]
fn a_download_broken_off_by_a_payee_crash_resumes_and_the_chunk_out_unpaid_is_still_owed() {
    let data: Vec<u8> = (0..400 * 100).map(|i| (i % 239) as u8).collect();
    let mut shop = shop_at(&data, 10, 100, &[]);
    let open = shop.payer.open(&shop.node, &shop.daemon, 100_000, &[]);
    let channel = open["channel_id"].as_str().unwrap().to_owned();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("film.bin");
    let part = out.path().join("film.bin.part");
    let mut child = spawn_fetch(&shop, &path, &channel);
    wait_for_bytes(&part, 100 * 100);
    shop.daemon.kill9();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the fetch fails with the payee gone");
    // The payee comes back on the same address: a restart forgives nothing.
    let listen = shop.daemon.listen.clone();
    let dir = shop.files.path().to_str().unwrap().to_owned();
    shop.daemon = Daemon::start(
        &shop.payee,
        Some(&listen),
        &["--serve-dir", &dir, "--price-per-chunk", "10", "--chunk-size", "100"],
    );
    let summary = fetch_on(&shop, &path, &channel);
    assert_paid_once_per_chunk(&shop, &channel, &summary, &data, &path);
}

#[test]
fn a_file_too_dear_or_missing_costs_nothing_and_an_open_channel_can_buy_it() {
    let data = film(5);
    let shop = shop(&data, &[]);
    let open = shop.payer.open(&shop.node, &shop.daemon, 100_000, &[]);
    let channel = open["channel_id"].as_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("f");
    let target = target.to_str().unwrap();
    let peer = shop.daemon.peer();
    let on_channel = |file: &'static str, extra: &[&'static str]| -> Vec<String> {
        let args = ["fetch", &peer, file, "--out", target, "--channel", channel];
        args.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let run = |args: Vec<String>, ok: bool| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if ok {
            (shop.payer.json(&args), String::new())
        } else {
            (serde_json::Value::Null, shop.payer.fails(&args))
        }
    };
    let (_, err) = run(on_channel("film.bin", &["--max-price", "999"]), false);
    assert!(err.contains("1000 sat per chunk, more than the 999 sat allowed"), "{err}");
    let (_, err) = run(on_channel("nope.bin", &[]), false);
    assert!(err.contains("no file \"nope.bin\""), "{err}");
    assert_eq!(shop.payer.channel(channel)["paid_total_sat"], 0);
    // Then the same channel buys it.
    let (got, _) = run(on_channel("film.bin", &[]), true);
    assert_eq!((got["chunks"].as_u64(), got["paid_sat"].as_u64()), (Some(5), Some(5_000)));
    assert_eq!(std::fs::read(target).unwrap(), data);
}

#[test]
fn the_payee_asks_to_settle_when_its_ladder_nears_the_end_and_the_fetch_settles() {
    let data = film(100);
    // The payee's margin (10 blocks) ends the ladder before the payer's (6).
    let shop = shop(&data, &["--margin", "10"]);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("film.bin");
    let args = ["film.bin", "--out", path.to_str().unwrap(), "--capacity", "150000"];
    // A checkpoint at every payment, as before checkpoints: each chunk spends a rung.
    let terms = ["--lifetime", "40", "--step", "2", "--checkpoint-every", "1"];
    let (ok, _, stderr) = fetch(&shop, &[&args[..], &terms].concat());
    assert!(!ok);
    assert!(stderr.contains("near the end of its ladder after"), "{stderr}");
    let txid: Txid = stderr.split("settled in ").nth(1).unwrap()[..64].parse().unwrap();
    assert!(!path.exists(), "an unchecked file must not be left at --out");
    shop.node.mine(1);
    let (tx, confirmations, _) = shop.node.get_tx(txid);
    assert!(confirmations >= 1);
    assert_eq!(tx.lock_time.to_consensus_u32(), 0);
    let paid = tx.output.iter().map(|o| o.value.to_sat()).find(|v| v % 1000 == 0).unwrap();
    assert!((5_000..20_000).contains(&paid), "paid {paid}");
    assert!(shop.daemon.log().contains("asking the payer to settle"));
}
