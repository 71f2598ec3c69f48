//! A throwaway regtest `bitcoind` per test: free port, temp datadir, stopped on drop.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bitcoin::{Address, Transaction, Txid};
use bitcoincore_rpc::{Auth, RpcApi};
use paychan::chain::{Chain, Rejection, TxStatus};
use paychan_bitcoind::RpcChain;

/// How to get a bitcoind when none is found.
const INSTALL_HINT: &str = "no bitcoind found: run `regtest/bitcoind.sh install` (builds and \
    caches Bitcoin Core once), or set BITCOIND_EXE to a bitcoind binary, or put bitcoind on PATH";

/// Finds bitcoind as `regtest/bitcoind.sh install` does: `$BITCOIND_EXE`, `PATH`, then the
/// cache that script builds into.
pub fn bitcoind_exe() -> PathBuf {
    if let Some(exe) = std::env::var_os("BITCOIND_EXE") {
        return PathBuf::from(exe);
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|d| d.join("bitcoind")).find(|p| p.is_file())
    }) {
        return found;
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("paychan/bin/bitcoind"));
    match cache {
        Some(exe) if exe.is_file() => exe,
        _ => panic!("{INSTALL_HINT}"),
    }
}

/// A running regtest node of this test's own.
pub struct Node {
    child: Child,
    _dir: tempfile::TempDir,
    pub chain: RpcChain,
    /// The RPC address, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The RPC cookie file.
    pub cookie: PathBuf,
    /// An address no test key owns, for mining blocks whose coinbase nobody needs.
    burn: Address,
}

impl Node {
    /// Starts a node (`-txindex`, loopback only, cookie auth) and waits until it answers RPC.
    pub fn start() -> Node {
        Node::start_in(tempfile::tempdir().expect("temp dir"))
    }

    /// Starts a node on the data directory `dir`, which may hold a chain already.
    pub fn start_in(dir: tempfile::TempDir) -> Node {
        let exe = bitcoind_exe();
        for _attempt in 0..3 {
            if let Some((child, chain, url, cookie)) = spawn(&exe, dir.path(), free_port(), &[]) {
                let burn = Address::p2wsh(&bitcoin::ScriptBuf::new(), bitcoin::Network::Regtest);
                return Node { child, _dir: dir, chain, url, cookie, burn };
            }
        }
        let kept = dir.keep();
        panic!(
            "bitcoind {} did not start; see {}/regtest/debug.log",
            exe.display(),
            kept.display()
        );
    }

    /// Stops the node and starts it again on the same chain and RPC port, with `args` added
    /// (such as `-minrelaytxfee=0.0001`): the mempool is kept (`mempool.dat`), and a process
    /// that talks to the node reaches it again at the same address.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.stop();
        let port: u16 = self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let exe = bitcoind_exe();
        let (child, chain, _, _) = spawn(&exe, self._dir.path(), port, args)
            .unwrap_or_else(|| panic!("bitcoind did not restart with {args:?}"));
        (self.child, self.chain) = (child, chain);
    }

    fn stop(&mut self) {
        let _: Result<serde_json::Value, _> = self.chain.client().call("stop", &[]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The tip height.
    pub fn height(&self) -> u32 {
        self.chain.tip().expect("tip").height
    }

    /// Mines `n` blocks to an address nobody uses; returns the new height.
    pub fn mine(&self, n: u32) -> u32 {
        self.chain.mine(n, &self.burn).expect("generatetoaddress")
    }

    /// Mines `n` blocks paying their coinbase to `address`.
    pub fn mine_to_address(&self, n: u32, address: &Address) -> u32 {
        self.chain.mine(n, address).expect("generatetoaddress")
    }

    /// Mines until the tip is `height`.
    pub fn mine_to(&self, height: u32) {
        let tip = self.height();
        assert!(tip <= height, "tip {tip} is already past {height}");
        if height > tip {
            self.mine(height - tip);
        }
    }

    /// Mines one block holding exactly `txs`.
    pub fn mine_block_with(&self, txs: &[Transaction]) {
        self.chain.mine_block_with(txs, &self.burn).expect("generateblock");
    }

    /// The transaction `txid` as the node holds it (mempool or chain) with its confirmations
    /// and virtual size.
    pub fn get_tx(&self, txid: Txid) -> (Transaction, u32, u64) {
        let v = self.raw_tx(txid);
        let hex = v["hex"].as_str().expect("hex");
        let tx = bitcoin::consensus::encode::deserialize_hex(hex).expect("a transaction");
        let confs = v["confirmations"].as_u64().unwrap_or(0) as u32;
        (tx, confs, v["vsize"].as_u64().expect("vsize"))
    }

    /// The fee of the confirmed transaction `txid`, as the node computes it from the outputs it
    /// spends.
    pub fn fee(&self, txid: Txid) -> bitcoin::Amount {
        let fee = self.raw_tx(txid)["fee"].as_f64().expect("a confirmed transaction's fee");
        bitcoin::Amount::from_btc(fee).expect("a fee in BTC")
    }

    fn raw_tx(&self, txid: Txid) -> serde_json::Value {
        self.chain
            .client()
            .call("getrawtransaction", &[serde_json::json!(txid), serde_json::json!(2)])
            .expect("getrawtransaction")
    }

    /// The txids in the mempool.
    pub fn mempool(&self) -> Vec<Txid> {
        self.chain.client().get_raw_mempool().expect("getrawmempool")
    }

    /// Whether `txid` is in the best chain.
    pub fn is_confirmed(&self, txid: Txid) -> bool {
        matches!(self.chain.tx_status(txid).expect("tx status"), TxStatus::Confirmed(_))
    }

    /// Broadcasts `tx` expecting the node to refuse it; returns the classified reason.
    pub fn chain_broadcast_rejection(&self, tx: &Transaction) -> Rejection {
        match self.chain.broadcast(tx) {
            Ok(txid) => panic!("the node accepted {txid}"),
            Err(e) => e.rejection().cloned().unwrap_or_else(|| panic!("the node failed: {e}")),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `exe` on `dir` with RPC on `port` and `extra` arguments, and waits until it answers;
/// `None` if it exits first (most likely the port was taken between our probe and its bind)
/// or does not answer within 30 s.
fn spawn(
    exe: &Path,
    dir: &Path,
    port: u16,
    extra: &[&str],
) -> Option<(Child, RpcChain, String, PathBuf)> {
    let mut child = Command::new(exe)
        .args([
            "-regtest",
            "-listen=0",
            "-server=1",
            "-txindex=1",
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            "-printtoconsole=0",
        ])
        .arg(format!("-rpcport={port}"))
        .arg(format!("-datadir={}", dir.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL_HINT}", exe.display()));
    let cookie = dir.join("regtest/.cookie");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let _ = writeln!(std::io::stderr(), "bitcoind exited early ({status}); retrying");
            return None;
        }
        if cookie.exists() {
            if let Ok(chain) = RpcChain::new(&url, Auth::CookieFile(cookie.clone())) {
                let version: serde_json::Value =
                    chain.client().call("getnetworkinfo", &[]).unwrap_or_default();
                // Straight to stderr, past the test harness's capture, so the test output shows
                // a real node ran.
                let _ = writeln!(
                    std::io::stderr(),
                    "regtest: {} ({}) pid {} on {url}",
                    exe.display(),
                    version["subversion"],
                    child.id()
                );
                return Some((child, chain, url, cookie));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}
