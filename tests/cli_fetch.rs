//! The paid file service from the command line against a regtest node: `serve --serve-dir`
//! sells a file chunk by chunk, `fetch` pays for each chunk, checks the file, and settles.

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
    _files: tempfile::TempDir,
}

fn shop(data: &[u8], serve_args: &[&str]) -> Shop {
    let node = Node::start();
    let payee = Party::new(&node);
    let payer = Party::new(&node);
    payer.fund(&node);
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("film.bin"), data).unwrap();
    let dir = files.path().to_str().unwrap();
    let mut args = vec!["--serve-dir", dir, "--price-per-chunk", "1000", "--chunk-size", "1000"];
    args.extend_from_slice(serve_args);
    let daemon = Daemon::start(&payee, None, &args);
    Shop { daemon, payer, payee, node, _files: files }
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
    assert_eq!(shop.payee.channel(channel)["updates"], 100);
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
    let (ok, _, stderr) = fetch(&shop, &[&args[..], &["--lifetime", "40", "--step", "2"]].concat());
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
