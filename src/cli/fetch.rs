//! `fetch`: buys a file from a payee's file service, paying for each chunk as it arrives.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bitcoin::Amount;
use serde_json::json;

use super::args::{FetchArgs, Global};
use super::channels::{client_timeouts, open_ready, require_payer, split_sat};
use super::{connect_node, open_datadir, CliError, Output, Transfer, Ui};
use crate::chain::RpcChain;
use crate::channel::ChannelError;
use crate::client::{ClientError, PayerClient};
use crate::files::{Download, DownloadError};
use crate::wire::{FileOffer, FileRequest, Message};

/// Errors of a fetch, besides those of the channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The download went wrong; the payments made stand.
    #[error("{0}")]
    Download(#[from] DownloadError),
    /// The payee sent something else than the offer or chunk expected.
    #[error("the payee sent {0} where a {1} was expected")]
    Unexpected(&'static str, &'static str),
    /// Writing the file failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The channel was given for another payee.
    #[error("channel {channel} is with {peer}, not the payee given")]
    OtherPeer {
        /// The channel.
        channel: crate::wire::ChannelId,
        /// Its payee.
        peer: String,
    },
    /// The channel's ladder is used up (the payee asked to settle, or the payer's margin
    /// refused another payment) before the end of the file: settled.
    #[error(
        "the channel is near the end of its ladder after {received} of {chunks} chunks; settled \
         in {settlement_txid}: fetch the file again on a new channel (a longer --lifetime or a \
         shorter --step takes more chunks)"
    )]
    Interrupted {
        /// Chunks received.
        received: u64,
        /// Chunks in the file.
        chunks: u64,
        /// The settlement broadcast.
        settlement_txid: bitcoin::Txid,
    },
}

pub(super) async fn fetch(g: &Global, a: &FetchArgs, ui: &Ui<'_>) -> Result<Output, CliError> {
    let mut datadir = open_datadir(g)?;
    if let Some(id) = a.channel {
        require_payer(&datadir, id)?;
        let peer = datadir.store.channel(id)?.and_then(|r| r.peer).unwrap_or_default();
        if peer != a.peer.to_string() {
            return Err(FetchError::OtherPeer { channel: id, peer }.into());
        }
    }
    datadir.lock()?;
    let chain = connect_node(g)?;
    let mut client = match (a.channel, a.capacity) {
        (Some(id), _) => PayerClient::resume(&mut datadir, &chain, id, client_timeouts(g)).await?,
        (None, Some(capacity)) => {
            open_ready(g, &mut datadir, &chain, &a.peer, capacity, &a.terms, ui.progress).await?
        }
        (None, None) => unreachable!("clap requires --capacity or --channel"),
    };
    let channel_id = client.channel_id();
    let paid_before = client.payer().paid();
    // A quote first: nothing is sent until the price is checked.
    let offer = request(&mut client, &a.file, None).await?;
    let f = client.payer().funded().expect("an open channel");
    let available = f.funded.channel.builder().max_payable().checked_sub(paid_before);
    let max_price = a.max_price.map(Amount::from_sat);
    let download = Download::accept(offer, &a.file, max_price, available.unwrap_or(Amount::ZERO))
        .map_err(FetchError::from)?;
    let sha256 = download.offer().sha256;
    let (chunks, size) = (download.chunks(), download.offer().size);
    ui.progress(&format!(
        "{}: {size} bytes in {chunks} chunks at {} sat each, sha256 {sha256}",
        a.file,
        download.price().to_sat()
    ));
    let offer = request(&mut client, &a.file, Some(download.price())).await?;
    if offer != *download.offer() {
        return Err(FetchError::Unexpected("another offer", "the offer quoted").into());
    }
    if download.owed() > Amount::ZERO {
        ui.progress(&format!(
            "paying {} sat owed for a chunk of an earlier download",
            download.owed().to_sat()
        ));
        client.pay(download.owed()).await?;
    }
    let part = part_path(&a.out);
    receive(&mut client, download, &part, ui).await?;
    std::fs::rename(&part, &a.out).map_err(|source| write_err(&a.out, source))?;
    let paid = client.payer().paid().checked_sub(paid_before).unwrap_or(Amount::ZERO);
    let tx = client.close().await?;
    let txid = tx.compute_txid();
    let params = client.payer().funded().expect("settled").funded.channel.params();
    let (payer_sat, payee_sat) = split_sat(&tx, params);
    let funding = params.funding_outpoint;
    Ok(Output {
        json: json!({
            "channel_id": channel_id.to_string(),
            "funding_outpoint": funding.to_string(),
            "file": a.file,
            "out": a.out.display().to_string(),
            "bytes": size,
            "chunks": chunks,
            "sha256": sha256.to_string(),
            "paid_sat": paid.to_sat(),
            "settlement_txid": txid.to_string(),
            "payer_sat": payer_sat,
            "payee_sat": payee_sat,
        }),
        text: format!(
            "{} -> {}: {size} bytes, {chunks} chunks, sha256 {sha256} checked\npaid {} sat; \
             settlement {txid} broadcast: payer gets {payer_sat} sat, payee gets {payee_sat} sat\n",
            a.file,
            a.out.display(),
            paid.to_sat()
        ),
    })
}

/// Asks for `file` (the chunks too, at up to `max_price` each) and returns the offer.
async fn request(
    client: &mut PayerClient<'_, RpcChain>,
    file: &str,
    max_price: Option<Amount>,
) -> Result<FileOffer, CliError> {
    let request = FileRequest {
        channel_id: client.channel_id(),
        name: file.to_owned(),
        from_chunk: 0,
        max_price_per_chunk_sat: max_price.map(Amount::to_sat),
    };
    client.send_service(&Message::FileRequest(request)).await?;
    match client.recv_service().await? {
        Message::FileOffer(offer) => Ok(offer),
        other => Err(FetchError::Unexpected(other.name(), "file_offer").into()),
    }
}

/// Takes every chunk, writing it to `part` and paying for it, then checks the file's hash.
async fn receive(
    client: &mut PayerClient<'_, RpcChain>,
    mut download: Download,
    part: &Path,
    ui: &Ui<'_>,
) -> Result<(), CliError> {
    let mut file = File::create(part).map_err(|e| write_err(part, e))?;
    let (chunks, size) = (download.chunks(), download.offer().size);
    let mut bytes = 0;
    (ui.transfer)(Transfer { chunks_done: 0, chunks, bytes_done: 0, bytes: size });
    while !download.is_complete() {
        let chunk = match client.recv_service().await? {
            Message::FileChunk(chunk) => chunk,
            Message::Shutdown(_) => return Err(interrupted(client, &download).await),
            other => return Err(FetchError::Unexpected(other.name(), "file_chunk").into()),
        };
        download.take(&chunk).map_err(FetchError::from)?;
        file.write_all(&chunk.data).map_err(|e| write_err(part, e))?;
        match client.pay(download.price()).await {
            Err(ClientError::Channel(ChannelError::Ladder(_))) => {
                return Err(interrupted(client, &download).await)
            }
            paid => paid?,
        }
        bytes += chunk.data.len() as u64;
        let done = download.received();
        (ui.transfer)(Transfer { chunks_done: done, chunks, bytes_done: bytes, bytes: size });
    }
    file.sync_all().map_err(|e| write_err(part, e))?;
    download.verify().map_err(FetchError::from)?;
    Ok(())
}

/// Settles a channel whose ladder ended before the file did, and says so.
async fn interrupted(client: &mut PayerClient<'_, RpcChain>, download: &Download) -> CliError {
    match client.close().await {
        Ok(tx) => FetchError::Interrupted {
            received: download.received(),
            chunks: download.chunks(),
            settlement_txid: tx.compute_txid(),
        }
        .into(),
        Err(e) => e.into(),
    }
}

fn part_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

fn write_err(path: &Path, source: std::io::Error) -> FetchError {
    FetchError::Write { path: path.to_owned(), source }
}

impl From<FetchError> for CliError {
    fn from(e: FetchError) -> Self {
        CliError::Fetch(Box::new(e))
    }
}
