//! Bad input on the command line: each gets a clear `error: ...`, exit status 1, nothing on
//! stdout, and changes nothing.

mod common;

use common::cli::{OpenChannel, PAYCHAN};

#[test]
fn bad_commands_fail_clearly_and_change_nothing() {
    let terms = ["--lifetime", "60", "--step", "2"];
    let OpenChannel { node: _node, payee, payer, daemon, channel, .. } =
        OpenChannel::new(100_000, &terms, &["--min-step", "2"]);
    payer.json(&["pay", &channel, "2000"]);
    let before = (payer.json(&["list"]), payee.json(&["list"]));
    let balance = payer.json(&["balance"])["confirmed_sat"].as_u64().unwrap();

    let unknown = "11".repeat(32);
    for args in [
        vec!["pay", &unknown, "5"],
        vec!["close", &unknown],
        vec!["show", &unknown],
        vec!["force-close", &unknown],
        vec!["refund", &unknown],
        vec!["watch", &unknown],
        vec!["fetch", &daemon.peer(), "f", "--out", "/tmp/f", "--channel", &unknown],
    ] {
        let err = payer.fails(&args);
        assert!(err.contains(&format!("no channel {unknown}")), "{args:?}: {err}");
    }
    for (args, expected) in [
        (vec!["pay", "nothex", "5"], "invalid value 'nothex'"),
        (vec!["pay", &channel, "-5"], "unexpected argument"),
        (vec!["pay", &channel, "lots"], "invalid value 'lots'"),
        (vec!["pay", &channel, "0"], "zero"),
        (vec!["pay", &channel, "99000"], "insufficient"),
        (vec!["open", "nobody@127.0.0.1:1", "--capacity", "1000"], "NODE_ID@HOST:PORT"),
        (vec!["open", &daemon.node_id, "--capacity", "1000"], "NODE_ID@HOST:PORT"),
        (
            vec!["open", &daemon.peer(), "--capacity", &(balance + 1).to_string()],
            "insufficient funds",
        ),
        (vec!["close", &channel, "extra"], "unexpected argument"),
        (vec!["frobnicate"], "unrecognized subcommand"),
        (vec!["fetch", &daemon.peer(), "f", "--out", "/tmp/f"], "--capacity"),
        (vec!["serve", "--price-per-chunk", "5"], "--serve-dir"),
        (vec!["serve", "--serve-dir", "/nonexistent/dir"], "cannot serve the files"),
        (vec!["serve", "--serve-dir", "/tmp", "--chunk-size", "0"], "chunk size 0 bytes"),
        (vec!["serve", "--serve-dir", "/tmp", "--chunk-size", "40000"], "from 1 to 31744"),
        (vec!["serve", "--http-listen", "127.0.0.1:0"], "--upstream"),
        (vec!["serve", "--upstream", "http://127.0.0.1:1"], "--http-listen"),
        (
            vec!["serve", "--http-listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1"],
            "needs --price-per-request",
        ),
        (
            vec![
                "serve",
                "--http-listen",
                ":0",
                "--upstream",
                "https://x:1",
                "--price-per-request",
                "1",
            ],
            "give http://HOST:PORT",
        ),
        (
            vec![
                "serve",
                "--http-listen",
                ":0",
                "--upstream",
                "http://x:1",
                "--prices",
                "/nonexistent",
            ],
            "cannot read the price file",
        ),
        (vec!["http", "ftp://127.0.0.1/x"], "only http://"),
        (vec!["http", "not a url"], "URL \"not a url\""),
        (vec!["http", "http://127.0.0.1:1/x", "-H", "no colon"], "no ':'"),
        (vec!["http", "http://127.0.0.1:1/x", "--max-price", "lots"], "invalid value 'lots'"),
        (vec!["http", "http://127.0.0.1:1/x", "--retry-for", "0"], "the gateway did not answer"),
        (
            vec!["http", "http://127.0.0.1:1/x", "--capacity", "1", "--channel", &channel],
            "cannot be used with",
        ),
    ] {
        let err = payer.fails(&args);
        assert!(err.to_lowercase().contains(&expected.to_lowercase()), "{args:?}: {err}");
    }
    // A payee that is not there: nothing is created.
    let nobody = format!("{}@127.0.0.1:1", payee.node_id);
    let err = payer.fails(&["open", &nobody, "--capacity", "1000"]);
    assert!(err.contains("cannot reach the payee"), "{err}");
    // A payee that is not who we asked for: nothing is created.
    let impostor = format!("{}@{}", payer.node_id, daemon.listen);
    let err = payer.fails(&["open", &impostor, "--capacity", "1000"]);
    assert!(err.contains(&format!("did not prove node key {}", payer.node_id)), "{err}");
    // A payee that refuses the terms (a step below its minimum): nothing is created.
    let err = payer.fails(&["open", &daemon.peer(), "--capacity", "1000", "--step", "1"]);
    assert!(err.contains("the payee refused") && err.contains("step"), "{err}");
    // One daemon per data directory, and nothing else writes to it while it runs.
    for args in [&["serve", "--listen", "127.0.0.1:0"][..], &["address"]] {
        let err = payee.fails(args);
        assert!(err.contains("in use by another paychan process"), "{args:?}: {err}");
    }
    // The payee's side cannot pay, refund, fetch on or watch the channel.
    assert!(payee.fails(&["pay", &channel, "5"]).contains("only its payer"));
    assert!(payee.fails(&["refund", &channel]).contains("the refund is the payer's"));
    let fetch = ["fetch", &daemon.peer(), "f", "--out", "/tmp/f", "--channel", &channel];
    assert!(payee.fails(&fetch).contains("only its payer"));
    assert!(payee.fails(&["watch", &channel]).contains("`paychan serve` watches those"));
    // A file the payee does not serve (it serves none): nothing paid.
    let fetch = ["fetch", &daemon.peer(), "f", "--out", "/tmp/f", "--channel", &channel];
    assert!(payer.fails(&fetch).contains("serves no files"));

    assert_eq!((payer.json(&["list"]), payee.json(&["list"])), before);
    assert_eq!(payer.json(&["balance"])["confirmed_sat"], balance);
    // And the channel still works.
    assert_eq!(payer.json(&["pay", &channel, "1"])["paid_total_sat"], 2001);
}

#[test]
fn a_missing_data_directory_or_node_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("none");
    let run = |args: &[&str]| {
        let out = assert_cmd::Command::new(PAYCHAN)
            .env("PAYCHAN_DATADIR", &datadir)
            .env("PAYCHAN_RPC_URL", "http://127.0.0.1:1")
            .env("PAYCHAN_RPC_COOKIE", dir.path().join("cookie"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty());
        String::from_utf8(out.stderr).unwrap()
    };
    let err = run(&["--json", "list"]);
    assert!(err.starts_with("error: ") && err.contains("paychan --datadir"), "{err}");
    assert!(!datadir.exists(), "a failed command creates nothing");
    let err = run(&["--network", "nonsense", "list"]);
    assert!(err.contains("unknown network"), "{err}");
    let init = assert_cmd::Command::new(PAYCHAN).args(["--datadir"]).arg(&datadir).arg("init").ok();
    assert!(init.is_ok() && datadir.exists(), "{init:?}");
    let err = run(&["balance"]);
    assert!(err.starts_with("error: no RPC cookie at"), "{err}");
    std::fs::write(dir.path().join("cookie"), "__cookie__:secret").unwrap();
    let err = run(&["balance"]);
    assert!(err.starts_with("error: cannot reach bitcoind at http://127.0.0.1:1"), "{err}");
}
