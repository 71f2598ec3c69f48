//! The paid file service inside the daemon: offers, and one chunk at a time on each channel,
//! as its [`Sale`] allows.

use std::sync::Arc;

use bitcoin::Amount;
use tracing::{info, warn};

use super::messages::Refusal;
use super::{Shared, Slot};
use crate::chain::Chain;
use crate::files::{Catalog, Sale};
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
    /// Offers the file asked for and, if the payer accepts the price, sends its first chunk,
    /// unless a chunk is out unpaid on this channel.
    pub(super) fn file_request(
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
        let price = service.price_per_chunk;
        if request.max_price_per_chunk_sat.is_some_and(|max| price.to_sat() > max) {
            return Err(Refusal::Price(price.to_sat()));
        }
        let sale = slot.sale.get_or_insert_with(|| Sale::new(price));
        let offer = FileOffer {
            channel_id,
            name: file.name.clone(),
            size: file.size,
            chunk_size: file.chunk_size,
            price_per_chunk_sat: service.price_per_chunk.to_sat(),
            sha256: file.sha256,
            owed_sat: sale.owed().to_sat(),
        };
        self.send(slot, Message::FileOffer(offer));
        if request.max_price_per_chunk_sat.is_none() {
            return Ok(());
        }
        info!(%channel_id, file = %file.name, chunks = file.chunks(), "file sale starts");
        let paid = slot.payee.paid();
        let sale = slot.sale.as_mut().expect("made above");
        if let Some(index) = sale.request(file, request.from_chunk, paid) {
            self.send_chunk(slot, index)?;
        }
        Ok(())
    }

    /// Sends the next chunk if the payment just taken paid for the one before.
    pub(super) fn send_paid_chunk(&self, slot: &mut Slot) -> Result<(), Refusal> {
        let paid = slot.payee.paid();
        match slot.sale.as_mut().and_then(|sale| sale.paid(paid)) {
            Some(index) => self.send_chunk(slot, index),
            None => Ok(()),
        }
    }

    fn send_chunk(&self, slot: &mut Slot, index: u64) -> Result<(), Refusal> {
        let file = slot.sale.as_ref().and_then(Sale::file).expect("a chunk of the file on sale");
        // A small read of a file the page cache most likely holds: not worth a blocking task.
        let data = file.read_chunk(index).inspect_err(|e| warn!("{e}"))?;
        let channel_id = slot.payee.state().terms.channel_id;
        self.send(slot, Message::FileChunk(FileChunk { channel_id, index, data }));
        Ok(())
    }
}
