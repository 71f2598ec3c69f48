//! The command line, as clap reads it.

use std::num::NonZeroU64;
use std::path::PathBuf;

use bitcoin::Network;
use clap::{Args, Parser, Subcommand};

use paychan::channel::CheckpointPolicy;
use paychan::wire::ChannelId;
use paychan_node::net::PeerAddr;

/// paychan: Bitcoin micropayment channels (decreasing-nLockTime, payer to payee).
///
/// A payer opens a channel to a payee, locking coins in a 2-of-2 output, then pays it any number
/// of times off-chain, any amount from 1 sat; only the funding and the settlement reach the
/// chain. A payment is one signature of the payer's. Now and then (by default for every 1% of
/// the capacity paid) a payment is a checkpoint, which the payee countersigns: the payer's way
/// out if the payee vanishes, earlier than the refund. Each checkpoint uses one step of the
/// channel's lifetime, so a channel takes about (lifetime - margin) / step checkpoints and any
/// number of payments between them. The payee runs `paychan serve` (which also sells files and
/// watches the chain); the payer runs `open`, `pay`, `fetch` and `close` against it, and `watch`
/// to take its way out if the payee vanishes.
///
/// Amounts are whole satoshis (sat); heights and lifetimes are in blocks. With --json every
/// command prints exactly one JSON object on stdout (`serve` and `watch`, which run until
/// stopped, one per event, one per line). Errors go to stderr as `error: ...` with exit status 1.
#[derive(Debug, Parser)]
#[command(name = "paychan", version, max_term_width = 100)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The data directory: the wallet seed, and the database of the wallet and the channels.
    #[arg(long, env = "PAYCHAN_DATADIR", global = true, default_value_os_t = default_datadir())]
    pub datadir: PathBuf,
    /// The chain: regtest, signet, testnet, testnet4 or bitcoin.
    #[arg(long, env = "PAYCHAN_NETWORK", global = true, default_value = "regtest", value_parser = parse_network)]
    pub network: Network,
    /// Bitcoin Core's RPC address [default: http://127.0.0.1:PORT, PORT being the network's
    /// default RPC port: 18443 on regtest].
    #[arg(long, env = "PAYCHAN_RPC_URL", global = true)]
    pub rpc_url: Option<String>,
    /// Bitcoin Core's RPC cookie file [default: ~/.bitcoin/regtest/.cookie, or the network's
    /// directory].
    #[arg(long, env = "PAYCHAN_RPC_COOKIE", global = true, conflicts_with = "rpc_user")]
    pub rpc_cookie: Option<PathBuf>,
    /// RPC user name (instead of the cookie).
    #[arg(long, env = "PAYCHAN_RPC_USER", global = true, requires = "rpc_password")]
    pub rpc_user: Option<String>,
    /// RPC password.
    #[arg(long, env = "PAYCHAN_RPC_PASSWORD", global = true, requires = "rpc_user")]
    pub rpc_password: Option<String>,
    /// Seconds to wait for each answer from the payee, and for the handshake (payer commands).
    /// Keep it below the payee's idle timeout (300 s by default).
    #[arg(long, env = "PAYCHAN_TIMEOUT", global = true, default_value_t = 30)]
    pub timeout: u64,
    /// Print exactly one JSON object on stdout, for scripts (`serve` and `watch`: one per event,
    /// one per line).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory (wallet seed, database) and print the node id payers connect to.
    Init,
    /// Hand out a new address of the wallet, to receive coins for funding channels.
    Address,
    /// Show the wallet's confirmed, spendable balance in sat, and the part of it kept to bump
    /// closes by CPFP when fees rise (follows the blocks the wallet has not seen yet).
    Balance,
    /// Run the payee daemon: accept channels, wait for their funding's confirmations, take
    /// payments. Logs go to stderr (RUST_LOG=debug for more); stops on Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Open a channel to a payee: fund it from the wallet and return once it can take payments
    /// (after the funding's confirmations; on regtest, someone must mine). With --external,
    /// another wallet funds it: print the funding address and amount, then run `fund`.
    Open(OpenArgs),
    /// (Payer) Fund a channel opened with `open --external` from another wallet's signed PSBT:
    /// check it (native segwit inputs, no RBF signal, exactly the capacity to the channel's
    /// address), get the payee's refund signature against its txid, and only then broadcast
    /// it. Do not broadcast the PSBT yourself. Returns once the channel can take payments.
    Fund(FundArgs),
    /// Pay SAT more on a channel (any amount from 1 sat); returns once the payee acknowledged
    /// it. With --checkpoint (or when the channel's checkpoint policy says so), the payee also
    /// countersigns it.
    Pay(PayArgs),
    /// Download FILE from a payee's file service (`serve --serve-dir`), paying for each chunk
    /// as it arrives, on a new channel (--capacity) or an open one (--channel); check the
    /// whole file against the hash the payee announced, then settle the channel
    /// cooperatively. A download broken off resumes when run again with --channel: from the
    /// first chunk not paid for, never paying for a chunk twice. Shows a progress bar when
    /// stderr is a terminal.
    Fetch(FetchArgs),
    /// (Payer) Send an HTTP request to a 402 gateway (`serve --http-listen`), paying for it on a
    /// channel to the gateway's payee: the open one, or a new one of --capacity (on regtest,
    /// someone must mine). Prints the body like curl (--output: to a file); with --json, one
    /// object with status, channel_id, paid_sat and paid_total_sat. A response priced per KiB
    /// is paid as it streams, never more than --max-price for the request.
    Http(HttpArgs),
    /// Settle a channel cooperatively: both sign the final split, which is broadcast at once.
    Close(ChannelArg),
    /// Broadcast the newest fully signed commitment if the node accepts it now, else say from
    /// which tip height it will. Either side may run it: the payee's is its newest payment's,
    /// the payer's its newest checkpoint.
    ForceClose(ChannelArg),
    /// (Payer) Broadcast the refund if its locktime is reached, else say from which tip height
    /// it will be.
    Refund(ChannelArg),
    /// (Payer) Watch the chain for our funded channels until each is closed: broadcast the
    /// newest checkpoint once it is final (the refund at R if there is none), again every poll
    /// until something confirms (with a child from the wallet, CPFP, if the node refuses it
    /// for its fee or it waits a block in the mempool); broadcast a cooperative settlement the
    /// payee did not; and record whatever transaction closed each channel (settlement,
    /// commitment or refund). Prints one line (one JSON object with --json) per event; safe to
    /// stop and start again, and to run next to pay.
    Watch(WatchArgs),
    /// List the channels: state, capacity, paid total, payments, checkpoints, locktimes,
    /// blocks left.
    List,
    /// Show one channel in full.
    Show(ChannelArg),
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen, HOST:PORT (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9735")]
    pub listen: String,
    /// Funding confirmations required before taking payments, at least 1 off regtest [default:
    /// 1 on regtest, 3 on test networks, 6 on bitcoin].
    #[arg(long)]
    pub min_conf: Option<u32>,
    /// Refuse a payment whose commitment becomes final within this many blocks of the tip.
    #[arg(long, default_value_t = 2)]
    pub margin: u32,
    /// Refuse channels whose locktime step is below this many blocks: the payee's window to get
    /// its newest commitment mined if the payer vanishes [default: 1 on regtest, 6 elsewhere].
    #[arg(long)]
    pub min_step: Option<u32>,
    /// Refuse channels whose refund locktime R is more than this many blocks above the tip: the
    /// payee's money may be claimable on chain only near R [default: 4032].
    #[arg(long, value_name = "BLOCKS")]
    pub max_lifetime: Option<u32>,
    /// Refuse channels whose fee rate is below this, in sat/vB [default: the node's fee
    /// estimate for confirmation within 1008 blocks, rounded down, read at each open].
    #[arg(long, value_name = "SAT_PER_VB")]
    pub min_feerate: Option<u64>,
    /// Seconds a connection may take to finish the handshake.
    #[arg(long, default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Seconds a connection may stay silent between messages.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout: u64,
    /// Seconds a message may take to arrive whole once its first byte came, and to be taken
    /// by the payer once sent.
    #[arg(long, default_value_t = 10)]
    pub frame_timeout: u64,
    /// Connections served at once (keep it below the process's open-file limit).
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Milliseconds between polls of the node for new blocks and confirmations.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Connections served at once from one IPv4 address or one IPv6 /64 (a single IPv6 host
    /// usually holds a whole /64).
    #[arg(long, default_value_t = 100)]
    pub max_connections_per_ip: usize,
    /// Bytes queued for one connection: a payer that reads less than this far behind is cut
    /// off (it reconnects, and nothing it paid is lost). Writes also give up after
    /// --frame-timeout seconds.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_outbox_bytes: usize,
    /// Channels accepted and waiting for their funding or its confirmation at once; more opens
    /// are refused.
    #[arg(long, default_value_t = 100)]
    pub max_unfunded: usize,
    /// Seconds an accepted channel may wait for its funding before it is forgotten (nothing
    /// is signed for it yet).
    #[arg(long, default_value_t = 600)]
    pub unfunded_expiry: u64,
    /// Blocks a channel's funding may take to confirm, from its `funding_created` (or from a
    /// restart of `serve`), before the channel is forgotten: nothing but a refund of it was
    /// signed, no payment taken. Until then it counts against --max-unfunded.
    #[arg(long, value_name = "BLOCKS", default_value_t = 144)]
    pub funding_expiry: u32,
    /// Sell the files in this directory (its regular files, read and hashed at start) to
    /// payers with `paychan fetch`, chunk by chunk, each chunk sent once the one before is paid.
    #[arg(long, value_name = "DIR")]
    pub serve_dir: Option<PathBuf>,
    /// The price of one chunk, in sat (with --serve-dir).
    #[arg(long, value_name = "SAT", default_value_t = 1000, requires = "serve_dir")]
    pub price_per_chunk: u64,
    /// The size of a chunk in bytes, at most 31744 (with --serve-dir).
    #[arg(long, value_name = "BYTES", default_value_t = 16384, requires = "serve_dir")]
    pub chunk_size: u32,
    /// Keep the channels in this PostgreSQL database, postgres://USER[:PASSWORD]@HOST[:PORT]/DB,
    /// instead of the data directory's SQLite file (which still holds the wallet). See
    /// docs/scale-out.md.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// The HTTP gateway's options.
    #[command(flatten)]
    pub http: GatewayArgs,
}

/// `serve`'s HTTP gateway.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Also serve HTTP at HOST:PORT: a 402 gateway in front of --upstream that forwards a
    /// priced request only once its payment, on a channel with this payee, is taken and saved.
    #[arg(long, value_name = "HOST:PORT", requires = "upstream")]
    pub http_listen: Option<String>,
    /// The HTTP service behind the gateway, http://HOST:PORT (with a path prefix if any).
    #[arg(long, value_name = "URL", requires = "http_listen")]
    pub upstream: Option<String>,
    /// The price of a request that no route of --prices matches, in sat (0: free).
    #[arg(long, value_name = "SAT", requires = "http_listen")]
    pub price_per_request: Option<u64>,
    /// Prices per route (method and path), per request and per KiB of response body, as TOML
    /// (see docs/http.md). A request no route matches costs --price-per-request, or without
    /// it is refused (404).
    #[arg(long, value_name = "FILE", requires = "http_listen")]
    pub prices: Option<PathBuf>,
    /// Where payers open channels with this payee, HOST:PORT as they reach it [default: the
    /// address --listen is bound to].
    #[arg(long, value_name = "HOST:PORT", requires = "http_listen")]
    pub advertise: Option<String>,
    /// The largest request body forwarded, in bytes; a larger one is refused (413) before
    /// anything is charged.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// The most KiB of a response priced per KiB that a payer pays ahead at once.
    #[arg(long, value_name = "KIB", default_value_t = 64)]
    pub window_kib: u64,
    /// Seconds a response priced per KiB waits for its next payment before it is cut off.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub stall_timeout: u64,
    /// Seconds an HTTP request's headers may take to arrive, and the upstream to answer (504
    /// after that; a payment taken buys the retry).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub http_timeout: u64,
}

/// `http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// The URL, http://HOST:PORT/PATH.
    pub url: String,
    /// The method [default: GET, or POST with --data].
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: Option<String>,
    /// A header to send, "NAME: VALUE" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// The request body (the method becomes POST unless -X says otherwise); @FILE reads it
    /// from FILE.
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    pub data: Option<String>,
    /// Write the body to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Open a channel of this capacity in sat if there is no open one to the payee.
    #[arg(long, value_name = "SAT", conflicts_with = "channel")]
    pub capacity: Option<u64>,
    /// Pay on this channel only.
    #[arg(long, value_parser = parse_channel_id)]
    pub channel: Option<ChannelId>,
    /// Refuse to pay more than this for the request, in sat (a response priced per KiB
    /// included: it is cut off there).
    #[arg(long, value_name = "SAT")]
    pub max_price: Option<u64>,
    /// Seconds to keep sending a payment whose answer does not come (the gateway restarting)
    /// before giving up on it for now; it stays in flight and goes with the next request.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub retry_for: u64,
    /// The terms of the channel, if one is opened.
    #[command(flatten)]
    pub terms: TermsArgs,
}

/// `open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// The payee, as NODE_ID@HOST:PORT (NODE_ID is what its `paychan init` printed).
    #[arg(value_parser = parse_peer)]
    pub peer: PeerAddr,
    /// The channel's capacity in sat (the most it can pay, before fees).
    #[arg(long)]
    pub capacity: u64,
    /// The channel's terms.
    #[command(flatten)]
    pub terms: TermsArgs,
    /// Another wallet funds the channel: negotiate the keys, print the funding address, amount
    /// and descriptor, and return. Pay exactly that amount to that address in a PSBT, without
    /// RBF, from native segwit coins, sign it, and pass it to `fund` within the payee's limit
    /// for unfunded channels (10 minutes by default).
    #[arg(long)]
    pub external: bool,
}

/// `fund`.
#[derive(Debug, Args)]
pub struct FundArgs {
    /// The channel id `open --external` printed.
    #[arg(value_parser = parse_channel_id)]
    pub channel: ChannelId,
    /// The signed PSBT: a file holding it in base64 (what `walletprocesspsbt` and Sparrow
    /// write) or binary, or `-` for standard input.
    #[arg(long, value_name = "FILE")]
    pub psbt: PathBuf,
    /// Confirmations of the funding to wait for, besides the payee's [default: 1 on regtest, 3
    /// on test networks, 6 on bitcoin].
    #[arg(long)]
    pub min_conf: Option<u32>,
}

/// The terms of a new channel, for `open` and `fetch`.
#[derive(Debug, Args)]
pub struct TermsArgs {
    /// Blocks from now to the refund's locktime R: how long the channel can stay open.
    #[arg(long, default_value_t = 1008)]
    pub lifetime: u32,
    /// Blocks between commitment locktimes: the payee's window to react if the payer vanishes.
    /// Each checkpoint uses one step of the lifetime, so the channel takes about
    /// (lifetime - margin) / step checkpoints (166 by default), and any number of payments.
    #[arg(long, default_value_t = 6)]
    pub step: u32,
    /// Fee rate of the funding and channel transactions, sat/vB [default: the node's estimate
    /// for 6 blocks; 2 sat/vB on regtest without one].
    #[arg(long)]
    pub feerate: Option<u64>,
    /// Confirmations of the funding to wait for, besides the payee's [default: 1 on regtest, 3
    /// on test networks, 6 on bitcoin].
    #[arg(long)]
    pub min_conf: Option<u32>,
    /// Refuse to sign a commitment final within this many blocks of the tip.
    #[arg(long, default_value_t = 6)]
    pub margin: u32,
    /// Make a payment a checkpoint (the payee countersigns it: the payer's way out if the payee
    /// vanishes, final `step` blocks after the payee's newest state) once this much has been
    /// paid since the last one; 0: never by amount [default: 1% of the capacity, so at most
    /// 100 checkpoints however small the payments].
    #[arg(long, value_name = "SAT")]
    pub checkpoint_sat: Option<u64>,
    /// Make a payment a checkpoint once this many payments have been made since the last one
    /// (1: every payment, the original scheme where both sign every update); 0: never by count.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub checkpoint_every: u64,
}

impl TermsArgs {
    /// The checkpoint policy these terms ask for on a channel of `capacity`.
    pub fn checkpoint_policy(&self, capacity: bitcoin::Amount) -> CheckpointPolicy {
        let every_sat = match self.checkpoint_sat {
            None => CheckpointPolicy::default_for(capacity).every_sat,
            Some(0) => None,
            Some(sat) => Some(bitcoin::Amount::from_sat(sat)),
        };
        CheckpointPolicy { every_payments: NonZeroU64::new(self.checkpoint_every), every_sat }
    }
}

/// `fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The payee, as NODE_ID@HOST:PORT.
    #[arg(value_parser = parse_peer)]
    pub peer: PeerAddr,
    /// The file's name, as the payee serves it.
    pub file: String,
    /// Where to write it (first to PATH.part, renamed once its hash checks out).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Open a new channel of this capacity in sat to pay with.
    #[arg(
        long,
        value_name = "SAT",
        required_unless_present = "channel",
        conflicts_with = "channel"
    )]
    pub capacity: Option<u64>,
    /// Pay on this open channel with the payee instead (and resume a download of the file
    /// broken off on it: PATH.part is kept up to the chunks the channel has paid for).
    #[arg(long, value_parser = parse_channel_id)]
    pub channel: Option<ChannelId>,
    /// Refuse the file if one chunk costs more than this, in sat.
    #[arg(long, value_name = "SAT")]
    pub max_price: Option<u64>,
    /// The terms of the channel, if one is opened.
    #[command(flatten)]
    pub terms: TermsArgs,
}

/// `pay`.
#[derive(Debug, Args)]
pub struct PayArgs {
    /// The channel id (see: paychan list).
    #[arg(value_parser = parse_channel_id)]
    pub channel: ChannelId,
    /// How much more to pay, in sat (from 1).
    pub sat: u64,
    /// Make this payment a checkpoint whatever the policy: the payee countersigns it, and the
    /// payer then holds a fully signed state for the new total.
    #[arg(long)]
    pub checkpoint: bool,
}

/// `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch only this channel [default: every funded payer channel not closed yet].
    #[arg(value_parser = parse_channel_id)]
    pub channel: Option<ChannelId>,
    /// Milliseconds between polls of the node.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
}

/// A command that takes a channel.
#[derive(Debug, Args)]
pub struct ChannelArg {
    /// The channel id (see: paychan list).
    #[arg(value_parser = parse_channel_id)]
    pub channel: ChannelId,
}

fn default_datadir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".paychan"))
        .unwrap_or_else(|| PathBuf::from(".paychan"))
}

fn parse_peer(s: &str) -> Result<PeerAddr, String> {
    s.parse().map_err(|e: paychan_node::net::PeerAddrError| e.to_string())
}

fn parse_channel_id(s: &str) -> Result<ChannelId, String> {
    s.parse().map_err(|_| "a channel id is 64 hex digits (see: paychan list)".to_owned())
}

fn parse_network(s: &str) -> Result<Network, String> {
    match s {
        "bitcoin" | "mainnet" => Ok(Network::Bitcoin),
        "testnet" | "testnet3" => Ok(Network::Testnet),
        "testnet4" => Ok(Network::Testnet4),
        "signet" => Ok(Network::Signet),
        "regtest" => Ok(Network::Regtest),
        _ => Err(format!("unknown network {s:?} (regtest, signet, testnet, testnet4, bitcoin)")),
    }
}
