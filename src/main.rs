//! The `paychan` command. It stays minimal until the CLI issue: it reports its version and the
//! protocol version it speaks.

use std::process::ExitCode;

const HELP: &str = "\
paychan: a Bitcoin micropayment channel engine (decreasing-nLockTime channels)

Usage: paychan [--help | --version]

The channel engine is a library for now; see examples/offline_channel.rs for a whole
channel life, and docs/protocol.md for the protocol. The command-line tool comes next.
";

/// Errors of the command line.
#[derive(Debug)]
enum Error {
    Usage(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(arg) => write!(f, "unknown argument '{arg}' (try --help)"),
        }
    }
}

fn run() -> Result<(), Error> {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        None | Some("--help" | "-h" | "help") => print!("{HELP}"),
        Some("--version" | "-V") => println!(
            "paychan {} (protocol version {})",
            env!("CARGO_PKG_VERSION"),
            paychan::wire::PROTOCOL_VERSION
        ),
        Some(other) => return Err(Error::Usage(other.to_owned())),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
