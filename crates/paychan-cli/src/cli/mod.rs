//! The `paychan` command line: parsing ([`args`]), the commands, and their output.
//!
//! [`run`] carries out a parsed command and returns its [`Output`]; the binary prints it (JSON
//! with `--json`, text otherwise). Nothing here prints: a command that reports while it runs
//! does so through [`Ui`] (`serve` announces itself once it listens, `open` notes progress).

pub mod args;
mod channels;
mod external;
mod fetch;
mod http;
mod recovery;
mod serve;
mod wallet;
mod watch;

use std::path::PathBuf;

use bitcoin::Network;
use bitcoincore_rpc::Auth;
use serde_json::Value;

pub use args::Cli;
use args::{Command, Global};

use paychan::chain::ChainError;
use paychan::channel::ChannelError;
use paychan::store::StoreError;
use paychan::wire::ChannelId;
use paychan_bitcoind::RpcChain;
use paychan_node::client::ClientError;
use paychan_node::daemon::DaemonError;
use paychan_node::datadir::{DataDir, DataDirError};
use paychan_wallet::WalletError;

/// What a command prints: one JSON object for scripts, or text for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The JSON object (`--json`).
    pub json: Value,
    /// The text, ending with a newline.
    pub text: String,
}

/// Errors of the command line; each says what went wrong and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The data directory.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// Talking to the payee.
    #[error(transparent)]
    Client(Box<ClientError>),
    /// The files to serve cannot be read.
    #[error("cannot serve the files: {0}")]
    Files(#[source] paychan_files::CatalogError),
    /// The node.
    #[error("bitcoin node: {0}")]
    Chain(#[from] ChainError),
    /// The node does not answer, or refuses our credentials.
    #[error(
        "cannot reach bitcoind at {url} (is it running? are --rpc-url and --rpc-cookie or \
         --rpc-user/--rpc-password right?): {source}"
    )]
    NodeUnreachable {
        /// The RPC address.
        url: String,
        /// What failed.
        source: ChainError,
    },
    /// The node's RPC cookie file is not there.
    #[error(
        "no RPC cookie at {} (is bitcoind running? give --rpc-cookie, or --rpc-user and --rpc-password)",
        path.display()
    )]
    NoCookie {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The node is on another chain.
    #[error("the node at {url} is on {node}, not {requested} (use --network or --rpc-url)")]
    NodeNetwork {
        /// The RPC address.
        url: String,
        /// The node's chain.
        node: Network,
        /// The chain asked for.
        requested: Network,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The wallet.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// A channel state machine.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The daemon.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// A file download.
    #[error(transparent)]
    Fetch(Box<fetch::FetchError>),
    /// An HTTP request paid through a gateway.
    #[error(transparent)]
    Http(Box<paychan_http::client::HttpError>),
    /// The HTTP gateway's settings.
    #[error("{0}")]
    Gateway(String),
    /// No such channel.
    #[error("no channel {0} in this data directory (see: paychan list)")]
    UnknownChannel(ChannelId),
    /// The command does not apply to this channel now.
    #[error("{0}")]
    NotApplicable(String),
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Client(Box::new(e))
    }
}

/// Where a command reports while it runs, besides its final [`Output`].
pub struct Ui<'a> {
    /// What a long-running command prints as it goes (stdout): `serve` once it is up, `watch`
    /// at each event.
    pub announce: &'a (dyn Fn(&Output) + Sync),
    /// Progress for the person waiting (stderr), e.g. while `open` waits for confirmations.
    pub progress: &'a (dyn Fn(&str) + Sync),
    /// How far a transfer (`fetch`) has come, after each chunk.
    pub transfer: &'a (dyn Fn(Transfer) + Sync),
    /// A response body, as it arrives, to stdout as it is (`http` without --output or --json).
    pub body: &'a (dyn Fn(&[u8]) -> std::io::Result<()> + Sync),
}

impl Ui<'_> {
    fn progress(&self, note: &str) {
        (self.progress)(note);
    }
}

/// How far a transfer has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Chunks received and paid.
    pub chunks_done: u64,
    /// Chunks in all.
    pub chunks: u64,
    /// Bytes received.
    pub bytes_done: u64,
    /// Bytes in all.
    pub bytes: u64,
}

/// Carries out `cli`, reporting through `ui` while it runs.
///
/// # Errors
/// Any [`CliError`]. Only `serve` can fail after it announced itself (its node gone at start,
/// or its chain watcher dead).
pub async fn run(cli: Cli, ui: &Ui<'_>) -> Result<Output, CliError> {
    let g = &cli.global;
    match cli.command {
        Command::Init => wallet::init(g),
        Command::Address => wallet::address(g),
        Command::Balance => wallet::balance(g),
        Command::Serve(a) => serve::serve(g, &a, ui.announce).await,
        Command::Open(a) if a.external => external::open_external(g, &a).await,
        Command::Open(a) => channels::open(g, &a, ui.progress).await,
        Command::Fund(a) => external::fund(g, &a).await,
        Command::Pay(a) => channels::pay(g, &a).await,
        Command::Fetch(a) => fetch::fetch(g, &a, ui).await,
        Command::Http(a) => http::http(g, &a, ui).await,
        Command::Close(a) => channels::close(g, a.channel).await,
        Command::ForceClose(a) => recovery::force_close(g, a.channel),
        Command::Refund(a) => recovery::refund(g, a.channel),
        Command::Watch(a) => watch::watch(g, &a, ui.announce).await,
        Command::List => channels::list(g),
        Command::Show(a) => channels::show(g, a.channel),
    }
}

/// Opens the data directory (made by `init`).
fn open_datadir(g: &Global) -> Result<DataDir, CliError> {
    Ok(DataDir::open(&g.datadir, g.network)?)
}

/// Connects to the node and checks it is on the right chain.
fn connect_node(g: &Global) -> Result<RpcChain, CliError> {
    let url = g.rpc_url.clone().unwrap_or_else(|| {
        let port = match g.network {
            Network::Bitcoin => 8332,
            Network::Testnet => 18332,
            Network::Testnet4 => 48332,
            Network::Signet => 38332,
            _ => 18443,
        };
        format!("http://127.0.0.1:{port}")
    });
    let auth = match (&g.rpc_user, &g.rpc_password, &g.rpc_cookie) {
        (Some(user), Some(password), _) => Auth::UserPass(user.clone(), password.clone()),
        (_, _, Some(cookie)) => Auth::CookieFile(cookie.clone()),
        _ => Auth::CookieFile(default_cookie(g.network)),
    };
    if let Auth::CookieFile(path) = &auth {
        if !path.exists() {
            return Err(CliError::NoCookie { path: path.clone() });
        }
    }
    let chain = RpcChain::new(&url, auth).map_err(|e| match e {
        ChainError::Rpc { .. } => CliError::NodeUnreachable { url: url.clone(), source: e },
        other => other.into(),
    })?;
    if chain.network() != g.network {
        return Err(CliError::NodeNetwork { url, node: chain.network(), requested: g.network });
    }
    Ok(chain)
}

fn default_cookie(network: Network) -> PathBuf {
    let dir = match network {
        Network::Bitcoin => "",
        Network::Testnet => "testnet3",
        Network::Testnet4 => "testnet4",
        Network::Signet => "signet",
        _ => "regtest",
    };
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".bitcoin").join(dir).join(".cookie")
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
