//! The `paychan` command: parses the command line, runs it (see `paychan::cli`), prints the
//! output (one JSON object with `--json`, text otherwise), and reports errors as `error: ...` on
//! stderr with exit status 1.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use paychan::cli::{self, args::Command, Cli, Output};
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
    let progress = |note: &str| eprintln!("{note}");
    let ui = cli::Ui { announce: &announce, progress: &progress };
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
