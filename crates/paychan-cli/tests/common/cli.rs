//! Runs the real `paychan` binary against a test's own regtest node: one data directory per
//! party, `serve` as a child process, every other command through assert_cmd with `--json`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bitcoin::Address;
use serde_json::Value;

use super::node::Node;

/// The binary under test.
pub const PAYCHAN: &str = env!("CARGO_BIN_EXE_paychan");

/// One party: a data directory and the node it talks to.
pub struct Party {
    dir: tempfile::TempDir,
    url: String,
    cookie: PathBuf,
    /// The node id `init` printed.
    pub node_id: String,
}

impl Party {
    /// Creates a party and runs `init`.
    pub fn new(node: &Node) -> Party {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut party = Party {
            dir,
            url: node.url.clone(),
            cookie: node.cookie.clone(),
            node_id: String::new(),
        };
        let init = party.json(&["init"]);
        assert_eq!(init["datadir"], party.datadir().display().to_string());
        party.node_id = init["node_id"].as_str().expect("node_id").to_owned();
        party
    }

    /// A party whose data directory `dir` exists already (written by `init` of some release).
    pub fn existing(node: &Node, dir: tempfile::TempDir, node_id: &str) -> Party {
        let (url, cookie) = (node.url.clone(), node.cookie.clone());
        Party { dir, url, cookie, node_id: node_id.to_owned() }
    }

    /// Its data directory.
    pub fn datadir(&self) -> &Path {
        self.dir.path()
    }

    /// A `paychan` command for this party, with its data directory and the node's RPC.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(PAYCHAN);
        cmd.env("PAYCHAN_DATADIR", self.datadir())
            .env("PAYCHAN_RPC_URL", &self.url)
            .env("PAYCHAN_RPC_COOKIE", &self.cookie)
            .env_remove("PAYCHAN_NETWORK")
            .env_remove("RUST_LOG");
        cmd
    }

    /// The same, through assert_cmd.
    pub fn cmd(&self) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.command())
    }

    /// Runs `paychan --json ARGS`, checks it succeeds with exactly one JSON object on stdout, and
    /// returns it.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cmd().arg("--json").args(args).output().expect("run paychan");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "paychan {args:?} failed: {stderr}");
        one_json_object(&stdout)
    }

    /// Runs `paychan --json ARGS`, checks it fails with status 1, nothing on stdout and
    /// `error: ...` on stderr, and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd().arg("--json").args(args).output().expect("run paychan");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "paychan {args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "paychan {args:?} printed {:?}", out.stdout);
        assert!(stderr.starts_with("error: "), "paychan {args:?}: {stderr}");
        stderr
    }

    /// Hands out an address and mines 101 blocks to it: spendable coinbases (two on a fresh chain).
    pub fn fund(&self, node: &Node) {
        let address = self.json(&["address"]);
        let address: Address<_> = address["address"].as_str().unwrap().parse().unwrap();
        node.mine_to_address(101, &address.assume_checked());
    }

    /// Opens a channel to `daemon`, mining a block every 100 ms until `open` returns, and
    /// returns its JSON.
    pub fn open(&self, node: &Node, daemon: &Daemon, capacity: u64, extra: &[&str]) -> Value {
        mining_until_done(node, self.spawn_open(daemon, capacity, extra), "open")
    }

    /// Starts `paychan --json open` to `daemon` in the background (it returns once the funding
    /// is confirmed, so someone must mine).
    pub fn spawn_open(&self, daemon: &Daemon, capacity: u64, extra: &[&str]) -> Child {
        self.command()
            .args(["--json", "open", &daemon.peer(), "--capacity", &capacity.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run paychan open")
    }

    /// `show CHANNEL`.
    pub fn channel(&self, channel: &str) -> Value {
        let show = self.json(&["show", channel]);
        assert_eq!(show["channel_id"], channel);
        show
    }
}

/// A running `paychan --json watch`, its events read as they come.
pub struct Watch {
    child: Child,
    events: std::sync::mpsc::Receiver<Value>,
}

impl Watch {
    /// Starts `paychan --json watch ARGS --poll-ms 100` for `party`.
    pub fn start(party: &Party, args: &[&str]) -> Watch {
        let mut child = party
            .command()
            .args(["--json", "watch", "--poll-ms", "100"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run paychan watch");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (send, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line).expect("watch prints JSON lines");
                if send.send(event).is_err() {
                    break;
                }
            }
        });
        Watch { child, events }
    }

    /// The next event, within `wait`.
    pub fn next(&self, wait: Duration) -> Value {
        self.events.recv_timeout(wait).expect("a watch event in time")
    }

    /// Whether an event came within `wait`.
    pub fn quiet_for(&self, wait: Duration) -> Option<Value> {
        self.events.recv_timeout(wait).ok()
    }

    /// Sends it SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    }

    /// Waits for it to exit on its own; returns whether it succeeded.
    pub fn wait(mut self) -> bool {
        self.child.wait().expect("wait").success()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn one_json_object(stdout: &str) -> Value {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line of JSON, got {stdout:?}");
    let value: Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    assert!(value.is_object(), "{value}");
    value
}

/// A regtest node, a payee serving, a funded payer, and a channel between them, opened with
/// `open` arguments `terms` to a `serve` run with `serve_args`. When destructuring it, bind
/// `node` and `daemon` (`node: _node`): fields left to `..` are dropped at once, stopping them.
pub struct OpenChannel {
    // Dropped in this order: the daemon before the node it talks to.
    pub daemon: Daemon,
    pub payer: Party,
    pub payee: Party,
    pub node: Node,
    /// The channel id.
    pub channel: String,
    /// What `open` printed.
    pub open: Value,
}

impl OpenChannel {
    pub fn new(capacity: u64, terms: &[&str], serve_args: &[&str]) -> OpenChannel {
        let node = Node::start();
        let payee = Party::new(&node);
        let payer = Party::new(&node);
        payer.fund(&node);
        let daemon = Daemon::start(&payee, None, serve_args);
        let open = payer.open(&node, &daemon, capacity, terms);
        let channel = open["channel_id"].as_str().expect("channel_id").to_owned();
        OpenChannel { daemon, payer, payee, node, channel, open }
    }
}

/// A running `paychan serve`.
pub struct Daemon {
    child: Child,
    /// Where it listens.
    pub listen: String,
    /// Its node id.
    pub node_id: String,
    /// Its stderr log, a file.
    pub log: PathBuf,
    /// What it announced.
    pub announced: Value,
}

impl Daemon {
    /// Starts `paychan serve` for `party` on a free loopback port (or `listen`), with a fast
    /// poll, and waits for its announcement.
    pub fn start(party: &Party, listen: Option<&str>, extra: &[&str]) -> Daemon {
        let log = unique(party.datadir().join("serve"));
        let mut child = party
            .command()
            .args([
                "--json",
                "serve",
                "--listen",
                listen.unwrap_or("127.0.0.1:0"),
                "--poll-ms",
                "100",
            ])
            .args(extra)
            .env("RUST_LOG", "paychan=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("run paychan serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        let announced: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "serve announced {line:?} ({e}); log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Daemon {
            child,
            listen: announced["listen"].as_str().expect("listen").to_owned(),
            node_id: announced["node_id"].as_str().expect("node_id").to_owned(),
            log,
            announced,
        }
    }

    /// `NODE_ID@HOST:PORT`.
    pub fn peer(&self) -> String {
        format!("{}@{}", self.node_id, self.listen)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mines a block every 100 ms until `child` (a `paychan --json` command that waits for
/// confirmations, such as `open` or `fund`) exits, checks it succeeded, and returns its JSON.
pub fn mining_until_done(node: &Node, mut child: Child, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "{what} did not return within 60 s");
        std::thread::sleep(Duration::from_millis(100));
        node.mine(1);
    }
    let out = child.wait_with_output().expect("the command's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {stderr}");
    one_json_object(&String::from_utf8_lossy(&out.stdout))
}

fn unique(path: PathBuf) -> PathBuf {
    let mut n = 0;
    loop {
        let candidate = path.with_extension(format!("{n}.log"));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}
