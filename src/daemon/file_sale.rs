//! The paid file service inside the daemon: offers, and one chunk at a time on each channel,
//! as its [`Sale`] allows. The sale is saved with the channel before a chunk leaves unpaid.

use std::sync::Arc;

use bitcoin::Amount;
use tracing::{info, warn};

use super::messages::Refusal;
use super::{Shared, Slot};
use crate::chain::Chain;
use crate::files::{Catalog, Sale, ServedFile};
use crate::wire::{FileChunk, FileOffer, FileRequest, Message};

/// The paid file service: the files served and the price of each chunk.
#[derive(Debug, Clone)]
pub struct FileService {
    /// The files.
    pub catalog: Arc<Catalog>,
    /// The price of one chunk.
    pub price_per_chunk: Amount,
}

impl<C: Chain + Send + Sync + 'static> Shared<C> {
    /// Offers the file asked for and, if the payer accepts the price, sends the chunk asked
    /// for: one already paid for, or the first one not paid for once the sale (which marks it
    /// out unpaid) is saved. Nothing goes out while a chunk of another file is owed.
    pub(super) async fn file_request(
        &self,
        slot: &mut Slot,
        request: &FileRequest,
    ) -> Result<(), Refusal> {
        let service = self.config.files.as_ref().ok_or(Refusal::NoFileService)?;
        let stage = slot.payee.state().stage.name();
        if !slot.payee.funded().is_some_and(|f| f.ready && f.settlement.is_none()) {
            return Err(Refusal::NotOpenForFiles(stage));
        }
        let file = service
            .catalog
            .file(&request.name)
            .ok_or_else(|| Refusal::NoSuchFile(request.name.clone()))?;
        let channel_id = request.channel_id;
        let price = slot.sale.price(&file, service.price_per_chunk);
        if request.max_price_per_chunk_sat.is_some_and(|max| price.to_sat() > max) {
            return Err(Refusal::Price(price.to_sat()));
        }
        let offer = FileOffer {
            channel_id,
            name: file.name.clone(),
            size: file.size,
            chunk_size: file.chunk_size,
            price_per_chunk_sat: price.to_sat(),
            sha256: file.sha256,
            owed_sat: slot.sale.owed_elsewhere(&file).to_sat(),
            paid_chunks: slot.sale.paid_chunks(&file),
        };
        self.send(slot, Message::FileOffer(offer));
        if request.max_price_per_chunk_sat.is_none() {
            return Ok(());
        }
        info!(%channel_id, file = %file.name, from = request.from_chunk, "file sale starts");
        let paid = slot.payee.paid();
        let before = slot.sale.record().cloned();
        let chunk = slot.sale.request(Arc::clone(&file), request.from_chunk, price, paid)?;
        if slot.sale.record() != before.as_ref() {
            if let Err(e) = self.persist(slot).await {
                slot.sale = Sale::restore(before);
                return Err(e.into());
            }
        }
        match chunk {
            Some(index) => self.send_chunk(slot, &file, index),
            None => Ok(()),
        }
    }

    /// Sends chunk `index` of `file`.
    pub(super) fn send_chunk(
        &self,
        slot: &mut Slot,
        file: &ServedFile,
        index: u64,
    ) -> Result<(), Refusal> {
        // A small read of a file the page cache most likely holds: not worth a blocking task.
        let data = file.read_chunk(index).inspect_err(|e| warn!("{e}"))?;
        let channel_id = slot.payee.state().terms.channel_id;
        self.send(slot, Message::FileChunk(FileChunk { channel_id, index, data }));
        Ok(())
    }
}
