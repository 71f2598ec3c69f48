//! The HTTP 402 gateway against a regtest node, with the real binary (`serve --http-listen`)
//! in front of a real HTTP service the test starts, paid for by `paychan http` and by the
//! library's client:
//! - an unpaid request gets 402 and never reaches the service; a free one does;
//! - hundreds of paid requests: the service counts exactly the paid ones, and the settlement,
//!   mined, pays the payee exactly the sum of the prices;
//! - each bad payment (a wrong amount, a replay, a stale one, an unknown channel, a body over
//!   the limit) is refused with a 4xx and nothing charged;
//! - the budget stops the client;
//! - a 10 MiB response priced per KiB, streamed and paid as it goes: exactly with its length
//!   known, within a window without;
//! - `kill -9` of the daemon in the middle of a stream of paid requests: nothing acknowledged
//!   is lost, and no request is paid twice.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use bitcoin::{Amount, Network};
use common::cli::{mining_until_done, Daemon, Party};
use common::hand::Hand;
use common::node::Node;
use common::upstream::{big_byte, Upstream, BIG};
use paychan::wire::{ChannelId, Pay};
use paychan_bitcoind::RpcChain;
use paychan_http::client::{Budget, HttpError, PaidClient, Settings};
use paychan_http::headers;
use paychan_node::datadir::DataDir;
use paychan_sqlite::SqliteStore;
use serde_json::Value;

/// The price of an `/api/` request, in sat.
const PRICE: u64 = 3;
/// Per KiB of `/stream/`, and per request.
const PER_KIB: u64 = 2;
const STREAM_PRICE: u64 = 1;

const PRICES: &str = r#"
[[route]]
path = "/free/*"

[[route]]
method = "GET"
path = "/stream/*"
per_request_sat = 1
per_kib_sat = 2
"#;

/// A payee whose `serve` fronts an upstream service at `--price-per-request 3`, and a funded
/// payer.
struct World {
    daemon: Daemon,
    upstream: Upstream,
    payer: Party,
    payee: Party,
    node: Node,
    _prices: tempfile::TempDir,
    serve_args: Vec<String>,
}

impl World {
    fn new(extra: &[&str]) -> World {
        let node = Node::start();
        let payee = Party::new(&node);
        let payer = Party::new(&node);
        payer.fund(&node);
        let upstream = Upstream::start();
        let prices = tempfile::tempdir().unwrap();
        let file = prices.path().join("prices.toml");
        std::fs::write(&file, PRICES).unwrap();
        let mut serve_args: Vec<String> = [
            "--upstream",
            &upstream.url,
            "--price-per-request",
            &PRICE.to_string(),
            "--prices",
            file.to_str().unwrap(),
            "--max-body-bytes",
            "4096",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        serve_args.extend(extra.iter().map(|s| s.to_string()));
        let daemon = start(&payee, "127.0.0.1:0", "127.0.0.1:0", &serve_args);
        World { daemon, upstream, payer, payee, node, _prices: prices, serve_args }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.daemon.http())
    }

    /// `paychan --json http URL ARGS`.
    fn http(&self, path: &str, args: &[&str]) -> Value {
        self.payer.json(&[&["http", &self.url(path)], args].concat())
    }

    /// The payer's library client on its data directory, for `run`.
    fn with_client<T>(
        &self,
        settings: Settings,
        run: impl AsyncFnOnce(&mut PaidClient<'_, RpcChain, SqliteStore>) -> T,
    ) -> T {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut datadir = DataDir::open(self.payer.datadir(), Network::Regtest).unwrap();
        let auth = bitcoincore_rpc::Auth::CookieFile(self.node.cookie.clone());
        let chain = RpcChain::new(&self.node.url, auth).unwrap();
        rt.block_on(async {
            let mut client =
                PaidClient::new(datadir.parts(), &chain, reqwest::Client::new(), settings);
            run(&mut client).await
        })
    }
}

trait Http {
    fn http(&self) -> String;
}

impl Http for Daemon {
    /// Where its gateway listens.
    fn http(&self) -> String {
        self.announced["http"].as_str().expect("an http address").to_owned()
    }
}

fn start(party: &Party, listen: &str, http: &str, args: &[String]) -> Daemon {
    let mut all = vec!["--http-listen", http];
    all.extend(args.iter().map(String::as_str));
    Daemon::start(party, Some(listen), &all)
}

/// An HTTP/1.1 request by hand, as curl would send it: its status, headers and body.
fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("the response");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

fn payment_header(pay: &Pay) -> (&'static str, String) {
    ("Paychan-Payment", headers::encode_payment(pay).to_str().unwrap().to_owned())
}

/// Runs `paychan --json http URL ARGS` in the background, mining until it returns (it may open
/// a channel, which waits for a confirmation).
fn http_mining(w: &World, path: &str, args: &[&str]) -> Value {
    let child: Child = w
        .payer
        .command()
        .args(["--json", "http", &w.url(path)])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    mining_until_done(&w.node, child, "http")
}

/// Settles `channel` and mines it; returns what the payee got, in sat.
fn settle(w: &World, channel: &str) -> u64 {
    let close = w.payer.json(&["close", channel]);
    let txid = close["settlement_txid"].as_str().unwrap().parse().unwrap();
    w.node.mine(1);
    assert!(w.node.is_confirmed(txid), "the settlement is mined");
    close["payee_sat"].as_u64().expect("payee_sat")
}

#[test]
fn paid_requests_through_the_gateway() {
    let w = World::new(&[]);
    let gateway = w.daemon.http();

    // Unpaid: 402 with where and what to pay, and the service never sees it.
    let (status, h, body) = raw(&gateway, "GET", "/api/hello", &[], b"");
    assert_eq!(status, 402, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["paychan-peer"], w.daemon.peer());
    assert_eq!(h["paychan-price"], PRICE.to_string());
    assert_eq!(w.upstream.count("/api/"), 0, "an unpaid request reached the service");
    // Free: forwarded as it is.
    let (status, _, body) = raw(&gateway, "GET", "/free/health", &[], b"");
    assert_eq!((status, w.upstream.count("/free/")), (200, 1), "{body:?}");

    // The first paid request opens a channel.
    let first = http_mining(&w, "/api/hello", &["--capacity", "1000000"]);
    assert_eq!(first["status"], 200, "{first}");
    assert_eq!((first["paid_sat"].as_u64(), first["paid_total_sat"].as_u64()), (Some(3), Some(3)));
    let channel = first["channel_id"].as_str().unwrap().to_owned();
    let id: ChannelId = channel.parse().unwrap();
    let body: Value = serde_json::from_str(first["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/api/hello");

    // More through the command line, which reuses the channel, then hundreds through the
    // library's client.
    for i in 0..20 {
        let paid = w.http(&format!("/api/cli/{i}"), &[]);
        assert_eq!(
            (paid["status"].as_u64(), paid["channel_id"].as_str()),
            (Some(200), Some(&*channel))
        );
        assert_eq!(paid["paid_total_sat"].as_u64(), Some(3 * (i + 2)));
    }
    let library = 300;
    let spent = w.with_client(Settings::new(), async |client| {
        for i in 0..library {
            let url = w.url(&format!("/api/lib/{}", i % 7));
            let request = reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
            let mut paid = client.send(request).await.expect("a paid request");
            assert_eq!(paid.response.status(), 200);
            assert_eq!(paid.channel_id, Some(id));
            while client.chunk(&mut paid).await.unwrap().is_some() {}
        }
        client.spent()
    });
    assert_eq!(spent, Amount::from_sat(PRICE * library));
    let mut paid_requests = 1 + 20 + library;
    assert_eq!(w.upstream.count("/api/"), paid_requests, "the service counts the paid ones");

    // A new client learns the price of /api/ and pays it up front for the next URL it has not
    // seen; a free one, paid so on a guess, is forwarded with the payment ignored and forgotten.
    let (free, spent) = w.with_client(Settings::new(), async |client| {
        for path in ["/api/learn", "/api/guessed", "/free/guessed", "/free/guessed"] {
            let url = w.url(path);
            let request = reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
            let mut paid = client.send(request).await.expect("a request");
            assert_eq!(paid.response.status(), 200, "{path}");
            while client.chunk(&mut paid).await.unwrap().is_some() {}
            if path.starts_with("/free/") {
                assert_eq!((paid.paid, paid.channel_id), (Amount::ZERO, None), "{path}");
            }
        }
        (w.upstream.count("/free/"), client.spent())
    });
    assert_eq!((free, spent), (3, Amount::from_sat(2 * PRICE)));
    paid_requests += 2;
    assert_eq!(w.upstream.count("/api/"), paid_requests);

    // The budget stops the client before it pays.
    let e = w.payer.fails(&["http", &w.url("/api/dear"), "--max-price", "2"]);
    assert!(e.contains("over budget"), "{e}");
    let budget = Budget { per_request: None, total: Some(Amount::from_sat(10)) };
    let stopped = w.with_client(Settings { budget, ..Settings::new() }, async |client| {
        let mut served = 0;
        loop {
            let url = w.url("/api/budget");
            let request = reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
            match client.send(request).await {
                Ok(_) => served += 1,
                Err(e) => return (served, e),
            }
        }
    });
    assert_eq!(stopped.0, 3, "3 sat each within 10");
    assert!(matches!(stopped.1, HttpError::OverBudget { .. }), "{}", stopped.1);
    paid_requests += 3;
    assert_eq!(w.upstream.count("/api/"), paid_requests);

    // Bad payments: each refused with a 4xx, nothing charged, the service never called.
    let total = |paid_requests: u64| PRICE * paid_requests;
    let tip = w.node.height();
    let mut hand = Hand::load(&w.payer, id);
    // A wrong amount.
    let wrong = hand.pay(PRICE + 1, tip);
    let (status, h, _) = raw(&gateway, "GET", "/api/x", &[payment_header(&wrong)], b"");
    assert_eq!(status, 402);
    assert!(h["paychan-error"].contains("the price is 3 sat"), "{h:?}");
    hand.refused();
    // An unknown channel.
    let mut unknown = hand.pay(PRICE, tip);
    unknown.channel_id = ChannelId([9; 32]);
    let (status, h, _) = raw(&gateway, "GET", "/api/x", &[payment_header(&unknown)], b"");
    assert_eq!(status, 402);
    assert!(h["paychan-error"].contains("unknown channel"), "{h:?}");
    hand.refused();
    // A body over the limit, with a good payment: refused before the payment is looked at.
    let good = hand.pay(PRICE, tip);
    let big = vec![b'x'; 5000];
    let (status, _, _) = raw(&gateway, "POST", "/api/upload", &[payment_header(&good)], &big);
    assert_eq!(status, 413);
    assert_eq!(w.upstream.count("/api/"), paid_requests);
    // The same payment then buys a request: it was not charged.
    let (status, h, _) = raw(&gateway, "POST", "/api/upload", &[payment_header(&good)], b"ok");
    assert_eq!(status, 200);
    paid_requests += 1;
    assert_eq!(h["paychan-paid-total"], total(paid_requests).to_string());
    hand.acked(&h);
    // Replayed: the payment bought its request already.
    let (status, h, _) = raw(&gateway, "GET", "/api/again", &[payment_header(&good)], b"");
    assert_eq!(status, 409, "{h:?}");
    // Stale: an older payment than the newest.
    let next = hand.pay(PRICE, tip);
    let (status, h, _) = raw(&gateway, "GET", "/api/next", &[payment_header(&next)], b"");
    assert_eq!(status, 200, "{h:?}");
    paid_requests += 1;
    hand.acked(&h);
    let (status, h, _) = raw(&gateway, "GET", "/api/old", &[payment_header(&good)], b"");
    assert_eq!(status, 409, "{h:?}");
    assert!(h["paychan-error"].contains("stale"), "{h:?}");
    // A malformed payment header.
    let (status, _, _) =
        raw(&gateway, "GET", "/api/x", &[("Paychan-Payment", "not-a-payment".into())], b"");
    assert_eq!(status, 400);
    hand.save();
    assert_eq!(w.upstream.count("/api/"), paid_requests, "only the paid ones reached it");

    // 10 MiB priced per KiB, streamed, paid as it goes: exactly its KiB and the request.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("big.bin");
    let streamed = w.http("/stream/big", &["--output", file.to_str().unwrap()]);
    let kib = (BIG as u64).div_ceil(1024);
    assert_eq!(streamed["bytes"].as_u64(), Some(BIG as u64), "{streamed}");
    assert_eq!(streamed["paid_sat"].as_u64(), Some(STREAM_PRICE + PER_KIB * kib));
    let data = std::fs::read(&file).unwrap();
    assert!(data.iter().enumerate().all(|(i, b)| *b == big_byte(i)), "the bytes as sent");
    // Without a length the payer pays a window at a time: at most a window it does not get.
    let chunked = w.http("/stream/unsized", &["--output", file.to_str().unwrap()]);
    assert_eq!(chunked["bytes"].as_u64(), Some(BIG as u64), "{chunked}");
    let unsized_paid = chunked["paid_sat"].as_u64().unwrap();
    let exact = STREAM_PRICE + PER_KIB * kib;
    assert!((exact..exact + PER_KIB * 64).contains(&unsized_paid), "{unsized_paid} sat");
    assert_eq!(w.upstream.count("/stream/"), 2);
    let stream_paid = exact + unsized_paid;

    // Settled and mined: the payee gets exactly the sum of the prices.
    let expected = total(paid_requests) + stream_paid;
    assert_eq!(settle(&w, &channel), expected);
    drop(w.payee);
}

#[test]
fn a_payee_killed_mid_stream_loses_nothing_and_charges_once() {
    let mut w = World::new(&[]);
    let first = http_mining(&w, "/api/first", &["--capacity", "1000000"]);
    let id: ChannelId = first["channel_id"].as_str().unwrap().parse().unwrap();
    let requests = 120;
    let (payer_dir, node_url, cookie) =
        (w.payer.datadir().to_owned(), w.node.url.clone(), w.node.cookie.clone());
    let url = w.url("/api/kill/");
    // The payer's stream of paid requests, in the library's client, on its own thread.
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut datadir = DataDir::open(&payer_dir, Network::Regtest).unwrap();
        let auth = bitcoincore_rpc::Auth::CookieFile(cookie);
        let chain = RpcChain::new(&node_url, auth).unwrap();
        rt.block_on(async {
            let mut client =
                PaidClient::new(datadir.parts(), &chain, reqwest::Client::new(), Settings::new());
            for i in 0..requests {
                let request = reqwest::Request::new(
                    reqwest::Method::GET,
                    format!("{url}{i}").parse().unwrap(),
                );
                let mut paid = client.send(request).await.expect("every request is served");
                assert_eq!((paid.response.status().as_u16(), paid.channel_id), (200, Some(id)));
                while client.chunk(&mut paid).await.expect("its body").is_some() {}
            }
            client.spent()
        })
    });
    // Killed in the middle, and back on the same ports.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while w.upstream.count("/api/kill/") < 40 {
        assert!(std::time::Instant::now() < deadline, "the requests did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    w.daemon.kill9();
    let served_before = w.upstream.count("/api/kill/");
    std::thread::sleep(Duration::from_millis(300));
    let (listen, http) = (w.daemon.listen.clone(), w.daemon.http());
    w.daemon = start(&w.payee, &listen, &http, &w.serve_args);
    let spent = client.join().expect("the client thread");
    assert!(served_before < requests, "killed before the end");
    // Each request paid once, whatever the crash cut off.
    assert_eq!(spent, Amount::from_sat(PRICE * requests));
    let reached = w.upstream.count("/api/kill/");
    assert!((requests..=requests + 1).contains(&reached), "{reached} requests reached it");
    // Nothing acknowledged is lost: the payee settles every payment, once.
    assert_eq!(settle(&w, &id.to_string()), PRICE * (requests + 1));
}
