//! `serve`: the payee daemon.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Amount, Network};

use serde_json::json;
use tokio::net::TcpListener;

use super::args::{Global, ServeArgs};
use super::{connect_node, open_datadir, CliError, Output};
use paychan::chain::Chain;
use paychan_files::{Catalog, FileService};
use paychan_node::blocking;
use paychan_node::daemon::{Daemon, DaemonConfig, DaemonError};

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
    let (wallet, store, lock) = datadir.into_locked_parts()?;
    let daemon = Daemon::new(store, wallet, chain, config)?.holding(lock);
    let listener = TcpListener::bind(&a.listen).await.map_err(DaemonError::Listen)?;
    let listen = listener.local_addr().map_err(DaemonError::Listen)?;
    let node_id = daemon.node_id();
    let channels = daemon.channel_count();
    announce(&Output {
        json: json!({
            "node_id": node_id.to_string(),
            "listen": listen.to_string(),
            "files": files,
        }),
        text: format!(
            "serving {channels} channel(s) and {files} file(s) at {node_id}@{listen} (min_conf \
             {min_conf}); Ctrl-C stops\n"
        ),
    });
    daemon.run(listener, super::stop_signal()).await?;
    // Everything was said when it started: exactly one JSON object per command.
    Ok(Output { json: serde_json::Value::Null, text: String::new() })
}
