//! `fetch`: buys a file from a payee's file service, paying for each chunk as it arrives, and
//! resumes a download broken off on the same channel from the first chunk not paid for.

use paychan_node::blocking;
use paychan_sqlite::SqliteStore;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bitcoin::Amount;
use serde_json::json;

use super::args::{FetchArgs, Global};
use super::channels::{client_timeouts, open_ready, require_payer, split_sat};
use super::{connect_node, open_datadir, CliError, Output, Transfer, Ui};
use paychan::channel::ChannelError;
use paychan::store::Store;
use paychan::wire::Message;
use paychan_bitcoind::RpcChain;
use paychan_files::{Download, DownloadError};
use paychan_files::{FileMessage, FileOffer, FileRequest};
use paychan_node::client::{ClientError, PayerClient};

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
    /// The payee sent a file message that does not parse.
    #[error("the payee sent a malformed file message: {0}")]
    Malformed(#[source] paychan::wire::WireError),
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
        channel: paychan::wire::ChannelId,
        /// Its payee.
        peer: String,
    },
    /// The channel's ladder is used up (the payee asked to settle, or the payer's margin
    /// refused another payment) before the end of the file: settled.
    #[error(
        "the channel is near the end of its ladder after {received} of {chunks} chunks; settled \
         in {settlement_txid}: fetch the file again on a new channel (a longer --lifetime, a \
         shorter --step or fewer checkpoints take more)"
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
    let mut datadir = blocking(|| open_datadir(g))?;
    if let Some(id) = a.channel {
        require_payer(&datadir, id)?;
        let peer = blocking(|| datadir.store.channel(id))?.and_then(|r| r.peer).unwrap_or_default();
        if peer != a.peer.to_string() {
            return Err(FetchError::OtherPeer { channel: id, peer }.into());
        }
    }
    datadir.lock()?;
    let chain = blocking(|| connect_node(g))?;
    let mut client = match (a.channel, a.capacity) {
        (Some(id), _) => {
            PayerClient::resume(datadir.parts(), &chain, id, client_timeouts(g)).await?
        }
        (None, Some(capacity)) => {
            open_ready(g, &mut datadir, &chain, &a.peer, capacity, &a.terms, ui.progress).await?
        }
        (None, None) => unreachable!("clap requires --capacity or --channel"),
    };
    let channel_id = client.channel_id();
    let paid_before = client.payer().paid();
    // A quote first: nothing is sent until the price is checked.
    let offer = request(&mut client, &a.file, None, 0).await?;
    let f = client.payer().funded().expect("an open channel");
    let available = f.funded.channel.builder().max_payable().checked_sub(paid_before);
    let max_price = a.max_price.map(Amount::from_sat);
    let mut download =
        Download::accept(offer, &a.file, max_price, available.unwrap_or(Amount::ZERO))
            .map_err(FetchError::from)?;
    let sha256 = download.offer().sha256;
    let (chunks, size) = (download.chunks(), download.offer().size);
    ui.progress(&format!(
        "{}: {size} bytes in {chunks} chunks at {} sat each, sha256 {sha256}",
        a.file,
        download.price().to_sat()
    ));
    // What an earlier download on this channel left: resume from the first chunk not held, or
    // not paid for.
    let part = part_path(&a.out);
    let (file, from) = resume(&part, &mut download)?;
    if from > 0 {
        ui.progress(&format!(
            "resuming from chunk {from}: {} chunk(s) paid for on this channel",
            download.offer().paid_chunks
        ));
    }
    let offer = request(&mut client, &a.file, Some(download.price()), from).await?;
    if offer != *download.offer() {
        return Err(FetchError::Unexpected("another offer", "the offer quoted").into());
    }
    if download.owed() > Amount::ZERO {
        ui.progress(&format!(
            "paying {} sat owed for a chunk of an earlier download",
            download.owed().to_sat()
        ));
        client.pay(download.owed(), false).await?;
    }
    receive(&mut client, download, file, &part, ui).await?;
    std::fs::rename(&part, &a.out).map_err(|source| write_err(&a.out, source))?;
    let paid = client.payer().paid().checked_sub(paid_before).unwrap_or(Amount::ZERO);
    let tx = client.close().await?;
    let txid = tx.compute_txid();
    let funded = &client.payer().funded().expect("settled").funded;
    let params = funded.channel.params();
    let (payer_sat, payee_sat) = split_sat(&tx, params);
    let funding = params.funding_outpoint;
    let (payments, checkpoints) = (funded.payments(), funded.checkpoints());
    Ok(Output {
        json: json!({
            "channel_id": channel_id.to_string(),
            "funding_outpoint": funding.to_string(),
            "file": a.file,
            "out": a.out.display().to_string(),
            "bytes": size,
            "chunks": chunks,
            "resumed_from": from,
            "sha256": sha256.to_string(),
            "paid_sat": paid.to_sat(),
            "payments": payments,
            "checkpoints": checkpoints,
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

/// Asks for `file` (the chunks too, from chunk `from`, at up to `max_price` each) and returns
/// the offer.
async fn request(
    client: &mut PayerClient<'_, RpcChain, SqliteStore>,
    file: &str,
    max_price: Option<Amount>,
    from: u64,
) -> Result<FileOffer, CliError> {
    ask(client, file, max_price, from).await?;
    match file_message(client.recv_service().await?)? {
        FileReply::Message(FileMessage::Offer(offer)) => Ok(offer),
        other => Err(FetchError::Unexpected(other.name(), "file_offer").into()),
    }
}

/// What the payee sent while the payer waits on the file service.
enum FileReply {
    /// A message of the file service.
    Message(FileMessage),
    /// `shutdown`: the payee asks to settle.
    Shutdown,
    /// Another service's message.
    Other,
}

impl FileReply {
    fn name(&self) -> &'static str {
        match self {
            FileReply::Message(FileMessage::Request(_)) => FileMessage::REQUEST,
            FileReply::Message(FileMessage::Offer(_)) => FileMessage::OFFER,
            FileReply::Message(FileMessage::Chunk(_)) => FileMessage::CHUNK,
            FileReply::Shutdown => "shutdown",
            FileReply::Other => "another service's message",
        }
    }
}

/// Reads what [`PayerClient::recv_service`] returned.
fn file_message(msg: Message) -> Result<FileReply, CliError> {
    match msg {
        Message::Extension(e) => match FileMessage::from_extension(&e) {
            Some(m) => Ok(FileReply::Message(m.map_err(FetchError::Malformed)?)),
            None => Ok(FileReply::Other),
        },
        Message::Shutdown(_) => Ok(FileReply::Shutdown),
        _ => Ok(FileReply::Other),
    }
}

/// Sends a `file_request`.
async fn ask(
    client: &mut PayerClient<'_, RpcChain, SqliteStore>,
    file: &str,
    max_price: Option<Amount>,
    from: u64,
) -> Result<(), CliError> {
    let request = FileRequest {
        channel_id: client.channel_id(),
        name: file.to_owned(),
        from_chunk: from,
        max_price_per_chunk_sat: max_price.map(Amount::to_sat),
    };
    Ok(client.send_service(FileMessage::Request(request).to_extension()).await?)
}

/// Opens `part` to go on writing it: keeps the chunks an earlier download left there that the
/// download resumes with ([`Download::resume_from`]), cuts the rest, and hands the kept bytes to
/// the download. Returns the file and the chunk to ask for first.
fn resume(part: &Path, download: &mut Download) -> Result<(File, u64), CliError> {
    let held = match std::fs::read(part) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(write_err(part, e).into()),
    };
    let size = u64::from(download.offer().chunk_size);
    let whole = if held.len() as u64 >= download.offer().size {
        download.chunks()
    } else {
        held.len() as u64 / size
    };
    let from = download.resume_from(whole);
    let keep = (from * size).min(download.offer().size);
    download.take_held(&held[..keep as usize]).map_err(FetchError::from)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(part)
        .map_err(|e| write_err(part, e))?;
    file.set_len(keep).map_err(|e| write_err(part, e))?;
    file.seek(SeekFrom::End(0)).map_err(|e| write_err(part, e))?;
    Ok((file, from))
}

/// Takes every chunk, writing it to `part` and paying for each one not paid for yet (a chunk
/// paid for earlier comes free, one per request), then checks the file's hash.
async fn receive(
    client: &mut PayerClient<'_, RpcChain, SqliteStore>,
    mut download: Download,
    mut file: File,
    part: &Path,
    ui: &Ui<'_>,
) -> Result<(), CliError> {
    let (chunks, size) = (download.chunks(), download.offer().size);
    let chunk_size = u64::from(download.offer().chunk_size);
    let mut bytes = (download.received() * chunk_size).min(size);
    let done = download.received();
    (ui.transfer)(Transfer { chunks_done: done, chunks, bytes_done: bytes, bytes: size });
    while !download.is_complete() {
        let chunk = match file_message(client.recv_service().await?)? {
            FileReply::Message(FileMessage::Chunk(chunk)) => chunk,
            FileReply::Shutdown => return Err(interrupted(client, &download).await),
            // The answer to a request for a chunk paid for earlier comes first.
            FileReply::Message(FileMessage::Offer(offer)) if offer == *download.offer() => continue,
            other => return Err(FetchError::Unexpected(other.name(), "file_chunk").into()),
        };
        download.take(&chunk).map_err(FetchError::from)?;
        file.write_all(&chunk.data).map_err(|e| write_err(part, e))?;
        if download.must_pay(chunk.index) {
            match client.pay(download.price(), false).await {
                Err(ClientError::Channel(ChannelError::Ladder(_))) => {
                    return Err(interrupted(client, &download).await)
                }
                paid => paid?,
            }
        } else if !download.is_complete() {
            // Paid for on this channel before: free, and the next comes when asked for.
            ask(client, &download.offer().name.clone(), Some(download.price()), chunk.index + 1)
                .await?;
        }
        bytes += chunk.data.len() as u64;
        let done = download.received();
        (ui.transfer)(Transfer { chunks_done: done, chunks, bytes_done: bytes, bytes: size });
    }
    file.sync_all().map_err(|e| write_err(part, e))?;
    if let Err(e) = download.verify() {
        // Not the file announced: start afresh next time (the chunks paid for come again free).
        let _ = std::fs::remove_file(part);
        return Err(FetchError::from(e).into());
    }
    Ok(())
}

/// Settles a channel whose ladder ended before the file did, and says so.
async fn interrupted(
    client: &mut PayerClient<'_, RpcChain, SqliteStore>,
    download: &Download,
) -> CliError {
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
