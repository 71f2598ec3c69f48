//! `serve`: the payee daemon.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::Amount;

use serde_json::json;
use tokio::net::TcpListener;

use super::args::{Global, ServeArgs};
use super::{connect_node, open_datadir, CliError, Output};
use crate::chain::Chain;
use crate::daemon::{Daemon, DaemonConfig, DaemonError, FileService};
use crate::files::Catalog;

pub(super) async fn serve(
    g: &Global,
    a: &ServeArgs,
    announce: &(dyn Fn(&Output) + Sync),
) -> Result<Output, CliError> {
    // The files first: a mistake in them needs neither the node nor the lock.
    let files = match &a.serve_dir {
        Some(dir) => Some(FileService {
            catalog: Arc::new(Catalog::read(dir, a.chunk_size).map_err(DaemonError::Files)?),
            price_per_chunk: Amount::from_sat(a.price_per_chunk),
        }),
        None => None,
    };
    let mut datadir = open_datadir(g)?;
    datadir.lock()?;
    let chain = connect_node(g)?;
    // Fail here, before announcing anything, if the node cannot tell its tip.
    chain.tip()?;
    let mut config = DaemonConfig::new(g.network);
    if let Some(n) = a.min_conf {
        config.min_conf = n;
    }
    config.margin = a.margin;
    config.min_step = a.min_step;
    config.timeouts.handshake = Duration::from_secs(a.handshake_timeout);
    config.timeouts.idle = Duration::from_secs(a.idle_timeout);
    config.timeouts.frame = Duration::from_secs(a.frame_timeout);
    config.max_connections = a.max_connections;
    config.poll_interval = Duration::from_millis(a.poll_ms.max(10));
    config.max_connections_per_ip = a.max_connections_per_ip;
    config.max_unfunded = a.max_unfunded;
    config.unfunded_expiry = Duration::from_secs(a.unfunded_expiry);
    config.files = files;
    let files = config.files.as_ref().map_or(0, |f| f.catalog.len());
    let min_conf = config.min_conf;
    let daemon = Daemon::new(datadir, chain, config)?;
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
