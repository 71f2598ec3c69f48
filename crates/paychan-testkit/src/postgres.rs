//! A throwaway PostgreSQL server per test: `initdb` in a temp directory, a free loopback port,
//! trust authentication for one superuser, stopped and removed on drop.
//!
//! It runs Debian's `postgresql` package (`regtest/postgres.sh install` installs it). As root,
//! the server runs as the package's unprivileged `postgres` user (through `setpriv`):
//! PostgreSQL refuses to run as root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to get PostgreSQL when it is not found.
const INSTALL_HINT: &str = "PostgreSQL's server (initdb, postgres) is not installed: run \
    `regtest/postgres.sh install` (Debian's postgresql package), or set PG_BIN to the directory \
    holding initdb and postgres";

/// Finds the directory of `initdb` and `postgres`: `$PG_BIN`, Debian's newest
/// `/usr/lib/postgresql/N/bin`, then `PATH`.
pub fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|versions| {
        versions
            .filter_map(|v| v.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .max()
            .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
    });
    let on_path = || {
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths).find(|d| d.join("initdb").is_file())
    };
    match debian.filter(|d| d.join("initdb").is_file()).or_else(on_path) {
        Some(dir) => dir,
        None => panic!("{INSTALL_HINT}"),
    }
}

/// A running PostgreSQL server of this test's own.
pub struct PgServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Where it listens.
    pub port: u16,
}

impl PgServer {
    /// Initializes a cluster and starts it; returns once it takes connections.
    pub fn start() -> PgServer {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let as_user = run_as();
        if let Some((_, uid, gid)) = &as_user {
            // The unprivileged user owns the cluster (and may enter the directory above it).
            std::os::unix::fs::chown(dir.path(), Some(*uid), Some(*gid)).expect("chown");
        }
        let run = |exe: &str, args: &[&str]| -> Command {
            let exe = bin.join(exe);
            match &as_user {
                // setpriv execs the server itself (no process in between to forward signals).
                Some((_, uid, gid)) => {
                    let mut c = Command::new("setpriv");
                    c.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}"));
                    c.arg("--clear-groups").arg(exe).args(args);
                    c.env("HOME", "/tmp");
                    c
                }
                None => {
                    let mut c = Command::new(exe);
                    c.args(args);
                    c
                }
            }
        };
        let data_arg = data.to_str().expect("a UTF-8 temp path");
        let init = run("initdb", &["-D", data_arg, "-U", "paychan", "--auth=trust", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("initdb: {e} ({INSTALL_HINT})"));
        assert!(init.status.success(), "initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        let log = dir.path().join("postgres.log");
        for _ in 0..3 {
            let port = free_port();
            let (port_arg, sockets) = (port.to_string(), dir.path().display().to_string());
            let mut child = run(
                "postgres",
                &[
                    "-D",
                    data_arg,
                    "-p",
                    &port_arg,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    &format!("unix_socket_directories={sockets}"),
                    "-c",
                    "max_connections=200",
                ],
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("start postgres");
            if wait_ready(&mut child, port, dir.path(), Duration::from_secs(30)) {
                eprintln!("postgres: a server of this test's own on 127.0.0.1:{port}");
                return PgServer { child: Some(child), dir, port };
            }
            // Another process took the port first: another one.
            stop(child);
        }
        panic!("postgres did not start: {}", std::fs::read_to_string(&log).unwrap_or_default())
    }

    /// The URL of database `name` on it, created if it does not exist yet.
    pub fn database(&self, name: &str) -> String {
        let psql = pg_bin().join("psql");
        let exe = if psql.is_file() { psql } else { PathBuf::from("psql") };
        let sql = format!("CREATE DATABASE \"{name}\"");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&exe)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "paychan"])
                .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", &sql])
                .output()
                .expect("run psql");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || stderr.contains("already exists") {
                break;
            }
            // It listens before it takes connections: "the database system is starting up".
            let starting = stderr.contains("starting up");
            assert!(starting && Instant::now() < deadline, "{stderr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        format!("postgres://paychan@127.0.0.1:{}/{name}", self.port)
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops it (a fast shutdown: SIGINT), waiting for it to exit.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// As root, the unprivileged user to run the server as: Debian's `postgres`.
fn run_as() -> Option<(String, u32, u32)> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Some(("postgres".to_owned(), uid, gid)),
        _ => panic!(
            "running as root, and there is no `postgres` user to run the server as: {INSTALL_HINT}"
        ),
    }
}

/// Waits until the server `child` listens on `port` and its socket is in `sockets`.
fn wait_ready(child: &mut Child, port: u16, sockets: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        let socket = sockets.join(format!(".s.PGSQL.{port}"));
        if socket.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A fast shutdown (SIGINT), then a kill if it takes more than 10 s.
fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its port").port()
}
