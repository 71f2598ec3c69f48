//! `serve`: the payee daemon.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Amount, Network};

use serde_json::json;
use tokio::net::TcpListener;

use super::args::{GatewayArgs, Global, ServeArgs};
use super::{connect_node, open_datadir, CliError, Output};
use paychan::chain::Chain;
use paychan::store::Store;
use paychan_bitcoind::RpcChain;
use paychan_files::{Catalog, FileService};
use paychan_http::gateway::{Gateway, GatewayConfig, Uri};
use paychan_http::prices::{Price, PriceTable};
use paychan_node::blocking;
use paychan_node::daemon::{Daemon, DaemonConfig, DaemonError};
use paychan_node::net::PeerAddr;
use paychan_postgres::PgStore;

pub(super) async fn serve(
    g: &Global,
    a: &ServeArgs,
    announce: &(dyn Fn(&Output) + Sync),
) -> Result<Output, CliError> {
    if a.min_conf == Some(0) && g.network != Network::Regtest {
        return Err(CliError::NotApplicable(
            "--min-conf 0 is for regtest only: a payer could double-spend an unconfirmed funding \
             after being served"
                .into(),
        ));
    }
    // The files first: a mistake in them needs neither the node nor the lock.
    let catalog = match &a.serve_dir {
        Some(dir) => Some(Arc::new(Catalog::read(dir, a.chunk_size).map_err(CliError::Files)?)),
        None => None,
    };
    let files = catalog.as_ref().map_or(0, |c| c.len());
    // Without files too: it tells a payer that asks for one that it serves none.
    let service = FileService { catalog, price_per_chunk: Amount::from_sat(a.price_per_chunk) };
    // The gateway's settings too: checked before anything is opened.
    let prices = match &a.http.http_listen {
        Some(_) => Some((price_table(&a.http)?, upstream(&a.http)?)),
        None => None,
    };
    let mut datadir = blocking(|| open_datadir(g))?;
    datadir.lock()?;
    let chain = blocking(|| connect_node(g))?;
    // Fail here, before announcing anything, if the node cannot tell its tip.
    blocking(|| chain.tip())?;
    let mut config = DaemonConfig::new(g.network);
    if let Some(n) = a.min_conf {
        config.min_conf = n;
    }
    config.margin = a.margin;
    if let Some(n) = a.min_step {
        config.min_step = n;
    }
    if let Some(n) = a.max_lifetime {
        config.max_lifetime = n;
    }
    config.min_feerate_sat_per_vb = a.min_feerate;
    config.timeouts.handshake = Duration::from_secs(a.handshake_timeout);
    config.timeouts.idle = Duration::from_secs(a.idle_timeout);
    config.timeouts.frame = Duration::from_secs(a.frame_timeout);
    config.max_connections = a.max_connections;
    config.poll_interval = Duration::from_millis(a.poll_ms.max(10));
    config.max_connections_per_ip = a.max_connections_per_ip;
    config.max_outbox_bytes = a.max_outbox_bytes.max(paychan_node::net::MAX_MESSAGE);
    config.max_unfunded = a.max_unfunded;
    config.unfunded_expiry = Duration::from_secs(a.unfunded_expiry);
    config.funding_expiry = a.funding_expiry;
    config.service = Some(Arc::new(service));
    let min_conf = config.min_conf;
    let (wallet, sqlite, lock) = datadir.into_locked_parts()?;
    // Loading the channels blocks (the PostgreSQL client must not run on a runtime's worker).
    let daemon = match &a.store {
        None => blocking(|| Daemon::new(sqlite, wallet, chain, config))?,
        Some(url) => {
            let mut store = postgres_store(url)?;
            blocking(|| -> Result<_, CliError> {
                store.check_network(g.network)?;
                Ok(Daemon::new(store, wallet, chain, config)?)
            })?
        }
    }
    .holding(lock);
    let listener = TcpListener::bind(&a.listen).await.map_err(DaemonError::Listen)?;
    let listen = listener.local_addr().map_err(DaemonError::Listen)?;
    let node_id = daemon.node_id();
    let channels = daemon.channel_count();
    let gateway = match prices {
        Some((prices, upstream)) => {
            Some(gateway(&a.http, &daemon, (prices, upstream), listen).await?)
        }
        None => None,
    };
    let http = gateway.as_ref().map(|(_, listener)| listener.local_addr()).transpose();
    let http = http.map_err(DaemonError::Listen)?;
    let http_note = http.map(|h| format!(", HTTP gateway at {h}")).unwrap_or_default();
    announce(&Output {
        json: json!({
            "node_id": node_id.to_string(),
            "listen": listen.to_string(),
            "files": files,
            "http": http.map(|h| h.to_string()),
        }),
        text: format!(
            "serving {channels} channel(s) and {files} file(s) at {node_id}@{listen}{http_note} \
             (min_conf {min_conf}); Ctrl-C stops\n"
        ),
    });
    match gateway {
        Some((gateway, http)) => {
            // Both stop together: the gateway takes payments through the daemon.
            tokio::select! {
                r = daemon.run(listener, super::stop_signal()) => r?,
                () = gateway.serve(http, std::future::pending()) => {}
            }
        }
        None => daemon.run(listener, super::stop_signal()).await?,
    }
    // Everything was said when it started: exactly one JSON object per command.
    Ok(Output { json: serde_json::Value::Null, text: String::new() })
}

/// The gateway's prices: the file's routes, and `--price-per-request` for the rest.
fn price_table(a: &GatewayArgs) -> Result<PriceTable, CliError> {
    let default = a
        .price_per_request
        .map(|sat| Price { per_request: Amount::from_sat(sat), per_kib: Amount::ZERO });
    match &a.prices {
        Some(file) => PriceTable::read(file, default).map_err(|e| CliError::Gateway(e.to_string())),
        None => default.map(PriceTable::flat).ok_or_else(|| {
            CliError::Gateway("--http-listen needs --price-per-request, --prices, or both".into())
        }),
    }
}

/// `--upstream`, checked: `http://HOST:PORT`, with a path prefix if any.
fn upstream(a: &GatewayArgs) -> Result<Uri, CliError> {
    let upstream = a.upstream.as_deref().unwrap_or_default();
    let bad = |why: String| CliError::Gateway(format!("--upstream {upstream:?}: {why}"));
    let uri: Uri = upstream.parse().map_err(|e| bad(format!("{e}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(bad("give http://HOST:PORT (the gateway speaks plain HTTP to it)".into()));
    }
    Ok(uri)
}

/// The gateway in front of `upstream`, taking payments through `daemon`, and its listener.
async fn gateway(
    a: &GatewayArgs,
    daemon: &Daemon<RpcChain>,
    (prices, upstream): (PriceTable, Uri),
    listen: SocketAddr,
) -> Result<(Arc<Gateway<RpcChain>>, TcpListener), CliError> {
    let advertise = a.advertise.clone().unwrap_or_else(|| listen.to_string());
    let peer: PeerAddr = format!("{}@{advertise}", daemon.node_id())
        .parse()
        .map_err(|e| CliError::Gateway(format!("--advertise: {e}")))?;
    let mut config = GatewayConfig::new(upstream, prices, peer);
    config.max_body = a.max_body_bytes;
    config.window_kib = a.window_kib.max(1);
    config.stall = Duration::from_secs(a.stall_timeout.max(1));
    config.timeout = Duration::from_secs(a.http_timeout.max(1));
    let http_listen = a.http_listen.as_deref().unwrap_or_default();
    let listener = TcpListener::bind(http_listen).await.map_err(DaemonError::Listen)?;
    Ok((Gateway::new(daemon.desk(), config), listener))
}

/// `--store`: a PostgreSQL database shared by front ends, connected and migrated.
fn postgres_store(url: &str) -> Result<PgStore, CliError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        let why = format!("--store {url:?}: give postgres://USER@HOST[:PORT]/DB");
        return Err(CliError::NotApplicable(why));
    }
    Ok(blocking(|| PgStore::connect(url, 8))?)
}
