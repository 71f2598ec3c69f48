//! The file service inside the payee daemon: a [`Service`] that answers `file_request` with an
//! offer, and sends one chunk at a time on each channel, as its [`Sale`] allows. The daemon
//! saves the sale with the channel before a chunk leaves unpaid ([`Session::outbox`]).

use std::sync::Arc;

use bitcoin::Amount;
use paychan::channel::Payee;
use paychan::wire::{ChannelId, Extension};
use paychan_node::daemon::{Service, ServiceError, Session};
use tracing::{info, warn};

use crate::messages::{FileChunk, FileMessage, FileOffer, FileRequest};
use crate::{Catalog, CatalogError, Sale, SaleError, SaleRecord, ServedFile};

/// The paid file service: the files served and the price of each chunk.
#[derive(Debug, Clone)]
pub struct FileService {
    /// The files; `None` for a payee that serves none (it refuses every request, saying so).
    pub catalog: Option<Arc<Catalog>>,
    /// The price of one chunk.
    pub price_per_chunk: Amount,
}

/// Why the file service refused a request; its text goes back to the payer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileServiceError {
    /// The payee runs without files.
    #[error("this payee serves no files")]
    NoFileService,
    /// No file of that name.
    #[error("no file {0:?} here")]
    NoSuchFile(String),
    /// The price is above the payer's limit.
    #[error("the price is {0} sat per chunk, above the most offered")]
    Price(u64),
    /// The channel is not open.
    #[error("files are sold on open channels only; this one is {0}")]
    NotOpenForFiles(&'static str),
    /// The request does not fit the sale.
    #[error(transparent)]
    Sale(#[from] SaleError),
    // The details stay in the payee's log: they name its files.
    /// The file could not be read.
    #[error("the payee could not read the file")]
    FileRead(#[from] CatalogError),
    /// Not a file service message the payee takes.
    #[error("{0} is not a file request")]
    NotARequest(String),
}

impl Service for FileService {
    fn takes(&self, kind: &str) -> bool {
        [FileMessage::REQUEST, FileMessage::OFFER, FileMessage::CHUNK].contains(&kind)
    }

    fn session(
        &self,
        channel_id: ChannelId,
        record: Option<serde_json::Value>,
    ) -> Box<dyn Session> {
        // A record that does not parse is one this build did not write: the sale starts over,
        // said loudly, since the chunks it counted as paid are then offered at a price again.
        let record = record.and_then(|r| {
            serde_json::from_value::<SaleRecord>(r)
                .inspect_err(|e| warn!(%channel_id, "stored file sale unreadable, dropped: {e}"))
                .ok()
        });
        let sale = Sale::restore(record);
        Box::new(FileSession { service: self.clone(), channel_id, sale, next: None, refused: None })
    }
}

/// The file service on one channel.
struct FileSession {
    service: FileService,
    channel_id: ChannelId,
    sale: Sale,
    /// The chunk to send once the sale is saved.
    next: Option<(Arc<ServedFile>, u64)>,
    /// A request refused after its offer went out: the refusal follows the offer.
    refused: Option<FileServiceError>,
}

impl Session for FileSession {
    fn record(&self) -> Option<serde_json::Value> {
        let record = self.sale.record()?;
        Some(serde_json::to_value(record).expect("a sale holds only JSON-representable values"))
    }

    fn reconnected(&mut self) {
        self.sale.stop();
        self.next = None;
    }

    fn on_message(
        &mut self,
        channel: &Payee,
        msg: &Extension,
    ) -> Result<Vec<Extension>, ServiceError> {
        let request = match FileMessage::from_extension(msg) {
            Some(Ok(FileMessage::Request(request))) => request,
            Some(Err(e)) => return Err(e.into()),
            _ => return Err(FileServiceError::NotARequest(msg.kind.clone()).into()),
        };
        Ok(self.request(channel, &request)?)
    }

    fn on_paid(&mut self, paid: Amount) {
        if let Some(index) = self.sale.paid(paid) {
            let file = self.sale.file().cloned().expect("a chunk of the file on sale");
            self.next = Some((file, index));
        }
    }

    fn outbox(&mut self) -> Result<Vec<Extension>, ServiceError> {
        if let Some(refused) = self.refused.take() {
            return Err(refused.into());
        }
        let Some((file, index)) = self.next.take() else { return Ok(vec![]) };
        // A small read of a file the page cache most likely holds: not worth a blocking task.
        let data = file.read_chunk(index).inspect_err(|e| warn!("{e}"));
        let data = data.map_err(FileServiceError::from)?;
        let channel_id = self.channel_id;
        Ok(vec![FileMessage::Chunk(FileChunk { channel_id, index, data }).to_extension()])
    }
}

impl FileSession {
    /// Offers the file asked for and, if the payer accepts the price, marks the chunk asked for
    /// to go once the sale is saved: one already paid for, or the first one not paid for.
    /// Nothing goes out while a chunk of another file is owed.
    fn request(
        &mut self,
        channel: &Payee,
        request: &FileRequest,
    ) -> Result<Vec<Extension>, FileServiceError> {
        let catalog = self.service.catalog.as_ref().ok_or(FileServiceError::NoFileService)?;
        let stage = channel.state().stage.name();
        if !channel.funded().is_some_and(|f| f.ready && f.settlement.is_none()) {
            return Err(FileServiceError::NotOpenForFiles(stage));
        }
        let file = catalog
            .file(&request.name)
            .ok_or_else(|| FileServiceError::NoSuchFile(request.name.clone()))?;
        let channel_id = request.channel_id;
        let price = self.sale.price(&file, self.service.price_per_chunk);
        if request.max_price_per_chunk_sat.is_some_and(|max| price.to_sat() > max) {
            return Err(FileServiceError::Price(price.to_sat()));
        }
        let offer = FileOffer {
            channel_id,
            name: file.name.clone(),
            size: file.size,
            chunk_size: file.chunk_size,
            price_per_chunk_sat: price.to_sat(),
            sha256: file.sha256,
            owed_sat: self.sale.owed_elsewhere(&file).to_sat(),
            paid_chunks: self.sale.paid_chunks(&file),
        };
        let offer = FileMessage::Offer(offer).to_extension();
        if request.max_price_per_chunk_sat.is_none() {
            return Ok(vec![offer]);
        }
        info!(%channel_id, file = %file.name, from = request.from_chunk, "file sale starts");
        match self.sale.request(Arc::clone(&file), request.from_chunk, price, channel.paid()) {
            Ok(chunk) => self.next = chunk.map(|index| (file, index)),
            // The offer still goes (the payer learns the terms), then the refusal.
            Err(e) => self.refused = Some(e.into()),
        }
        Ok(vec![offer])
    }
}
