//! The `paychan` command line, the top of the workspace: the wallet, payer and payee channels,
//! the payee daemon (`serve`), the watchers, and the paid file service (`serve --serve-dir`,
//! `fetch`), for a person or a script. The channel rules live in the core, `paychan`; this crate
//! wires it to the others: `paychan-bitcoind` (the node), `paychan-node` (the daemon, the payer
//! client, and the data directory with the wallet, the SQLite store and the lock) and
//! `paychan-files`. See docs/architecture.md.
//!
//! This file parses the command line, runs it (see `crate::cli`), prints the output (one JSON
//! object with `--json`, text otherwise; a progress bar on a terminal during `fetch`), and
//! reports errors as `error: ...` on stderr with exit status 1. The end-to-end tests in `tests/`
//! run the built binary.

use std::io::Write;
use std::process::ExitCode;

mod cli;

use clap::Parser;
use cli::{args::Command, Cli, Output, Transfer};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
    };
    // The daemon says what it does at `info`; a one-shot command only warns.
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    let json = cli.global.json;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let announce = move |out: &Output| print(out, json);
    // A progress bar only for a person watching (not in a log file or a pipe), made at the
    // first chunk.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = std::sync::OnceLock::<ProgressBar>::new();
    let progress = |note: &str| match bar.get() {
        Some(bar) => bar.println(note),
        None => eprintln!("{note}"),
    };
    let transfer = |t: Transfer| {
        if terminal {
            let bar = bar.get_or_init(transfer_bar);
            bar.set_length(t.bytes);
            bar.set_position(t.bytes_done);
            bar.set_message(format!("chunk {}/{}", t.chunks_done, t.chunks));
            if t.chunks_done == t.chunks {
                bar.finish();
            }
        }
    };
    let body = |bytes: &[u8]| {
        use std::io::Write;
        std::io::stdout().lock().write_all(bytes)
    };
    let ui = cli::Ui { announce: &announce, progress: &progress, transfer: &transfer, body: &body };
    match runtime.block_on(cli::run(cli, &ui)) {
        Ok(out) => {
            print(&out, json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn transfer_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {bytes}/{total_bytes} {msg} ({bytes_per_sec}, {eta})",
    )
    .expect("a valid template");
    bar.set_style(style);
    bar
}

fn print(out: &Output, json: bool) {
    let mut stdout = std::io::stdout().lock();
    let _ = if json {
        if out.json.is_null() {
            return;
        }
        writeln!(stdout, "{}", out.json)
    } else {
        write!(stdout, "{}", out.text)
    };
    let _ = stdout.flush();
}

/// Returns the error and its causes, `outer: inner: ...`, skipping causes already in the text.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}
