//! The payer's side of the file service: one file, taken chunk by chunk, resumed from what an
//! earlier download on the same channel left.

use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::Amount;

use crate::messages::{FileChunk, FileOffer};

use super::MAX_CHUNK_SIZE;

/// Errors of a download; each leaves the payer's money where it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The payee offered another file.
    #[error("asked for {asked:?}, offered {offered:?}")]
    WrongFile {
        /// The name asked for.
        asked: String,
        /// The name offered.
        offered: String,
    },
    /// The offer contradicts itself (chunk size zero or too large for a message).
    #[error("the payee's offer is malformed: chunk size {0} bytes")]
    MalformedOffer(u32),
    /// The price per chunk is above the payer's limit.
    #[error("the payee asks {} sat per chunk, more than the {} sat allowed", price.to_sat(), max.to_sat())]
    TooExpensive {
        /// The price asked.
        price: Amount,
        /// The payer's limit.
        max: Amount,
    },
    /// The chunks not yet paid for (and any chunk owed from before) cost more than the channel
    /// can still pay.
    #[error("the file costs {} sat more ({chunks} chunks not paid for yet, and any chunk owed), the channel can pay {} sat more", cost.map_or(u64::MAX, Amount::to_sat), available.to_sat())]
    CannotAfford {
        /// What is left to pay (`None`: beyond any amount).
        cost: Option<Amount>,
        /// The chunks not paid for yet.
        chunks: u64,
        /// What the channel can still pay.
        available: Amount,
    },
    /// The payee says the channel paid for more chunks than the file has.
    #[error("the payee says {paid_chunks} chunks are paid for, the file has {chunks}")]
    PaidBeyondFile {
        /// Chunks paid for, by the offer.
        paid_chunks: u64,
        /// Chunks in the file.
        chunks: u64,
    },
    /// A chunk came out of order.
    #[error("expected chunk {expected}, got chunk {got}")]
    OutOfOrder {
        /// The chunk expected.
        expected: u64,
        /// The chunk received.
        got: u64,
    },
    /// A chunk has the wrong length.
    #[error("chunk {index} has {got} bytes, expected {expected}")]
    ChunkLength {
        /// The chunk.
        index: u64,
        /// Its length by the offer.
        expected: u64,
        /// Its length.
        got: u64,
    },
    /// The whole file does not match the hash announced.
    #[error("the file's SHA-256 is {got}, the payee announced {announced}")]
    HashMismatch {
        /// The hash in the offer.
        announced: sha256::Hash,
        /// The hash of what arrived.
        got: sha256::Hash,
    },
}

/// A file being downloaded: the offer accepted, the chunks taken so far, their running hash.
///
/// The offer says how many chunks of the file the channel has already paid for
/// ([`FileOffer::paid_chunks`]): those are never paid again ([`Download::must_pay`]), and a
/// download broken off resumes from the first of them the payer does not hold
/// ([`Download::resume_from`]).
pub struct Download {
    offer: FileOffer,
    next: u64,
    engine: sha256::HashEngine,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download").field("offer", &self.offer).field("next", &self.next).finish()
    }
}

impl Download {
    /// Accepts `offer` for the file `asked`, if each chunk costs at most `max_price` (when
    /// given) and the whole file at most `available`, what the channel can still pay.
    ///
    /// # Errors
    /// [`DownloadError::WrongFile`], [`DownloadError::MalformedOffer`],
    /// [`DownloadError::TooExpensive`], [`DownloadError::CannotAfford`].
    pub fn accept(
        offer: FileOffer,
        asked: &str,
        max_price: Option<Amount>,
        available: Amount,
    ) -> Result<Download, DownloadError> {
        if offer.name != asked {
            return Err(DownloadError::WrongFile { asked: asked.into(), offered: offer.name });
        }
        if offer.chunk_size == 0 || offer.chunk_size > MAX_CHUNK_SIZE {
            return Err(DownloadError::MalformedOffer(offer.chunk_size));
        }
        let price = Amount::from_sat(offer.price_per_chunk_sat);
        if let Some(max) = max_price.filter(|max| price > *max) {
            return Err(DownloadError::TooExpensive { price, max });
        }
        let download = Download { offer, next: 0, engine: sha256::Hash::engine() };
        let (chunks, paid_chunks) = (download.chunks(), download.offer.paid_chunks);
        if paid_chunks > chunks {
            return Err(DownloadError::PaidBeyondFile { paid_chunks, chunks });
        }
        let unpaid = chunks - paid_chunks;
        let owed = Amount::from_sat(download.offer.owed_sat);
        let cost = price.checked_mul(unpaid).and_then(|c| c.checked_add(owed));
        if cost.is_none_or(|c| c > available) {
            return Err(DownloadError::CannotAfford { cost, chunks: unpaid, available });
        }
        Ok(download)
    }

    /// Returns the offer.
    pub fn offer(&self) -> &FileOffer {
        &self.offer
    }

    /// Returns the number of chunks.
    pub fn chunks(&self) -> u64 {
        self.offer.size.div_ceil(u64::from(self.offer.chunk_size))
    }

    /// Returns how many chunks have arrived (or were there from an earlier download).
    pub fn received(&self) -> u64 {
        self.next
    }

    /// Returns the chunk to resume from when the payer already holds the first `have` chunks
    /// of an earlier download on this channel: the first it does not hold, or the first not
    /// paid for if that comes before (the payer holds it, but a chunk not paid for is taken, and
    /// paid for, again).
    pub fn resume_from(&self, have: u64) -> u64 {
        have.min(self.offer.paid_chunks).min(self.chunks())
    }

    /// Takes the bytes of the chunks the payer already holds, from chunk 0 (whole chunks only,
    /// as many as [`Download::resume_from`] said): they count as received.
    ///
    /// # Errors
    /// [`DownloadError::ChunkLength`] if the bytes are not whole chunks.
    pub fn take_held(&mut self, bytes: &[u8]) -> Result<(), DownloadError> {
        let size = u64::from(self.offer.chunk_size);
        let whole = (bytes.len() as u64).div_ceil(size);
        for (i, chunk) in bytes.chunks(size as usize).enumerate() {
            let index = i as u64;
            let expected = self.offer.size.saturating_sub(index * size).min(size);
            if chunk.len() as u64 != expected {
                return Err(DownloadError::ChunkLength {
                    index,
                    expected,
                    got: chunk.len() as u64,
                });
            }
        }
        self.engine.input(bytes);
        self.next = whole;
        Ok(())
    }

    /// Whether chunk `index` is to be paid for when it arrives: the channel has not paid for it
    /// yet.
    pub fn must_pay(&self, index: u64) -> bool {
        index >= self.offer.paid_chunks
    }

    /// Returns what the channel owes for a chunk of an earlier download: pay it first.
    pub fn owed(&self) -> Amount {
        Amount::from_sat(self.offer.owed_sat)
    }

    /// Returns the price of one chunk.
    pub fn price(&self) -> Amount {
        Amount::from_sat(self.offer.price_per_chunk_sat)
    }

    /// Takes the next chunk: it must be the next in order, of the length the offer implies.
    ///
    /// # Errors
    /// [`DownloadError::OutOfOrder`], [`DownloadError::ChunkLength`].
    pub fn take(&mut self, chunk: &FileChunk) -> Result<(), DownloadError> {
        if chunk.index != self.next || self.next >= self.chunks() {
            return Err(DownloadError::OutOfOrder { expected: self.next, got: chunk.index });
        }
        let size = u64::from(self.offer.chunk_size);
        let expected = self.offer.size.saturating_sub(chunk.index * size).min(size);
        let got = chunk.data.len() as u64;
        if got != expected {
            return Err(DownloadError::ChunkLength { index: chunk.index, expected, got });
        }
        self.engine.input(&chunk.data);
        self.next += 1;
        Ok(())
    }

    /// Whether every chunk has arrived.
    pub fn is_complete(&self) -> bool {
        self.next == self.chunks()
    }

    /// Checks the whole file against the hash announced; call once complete.
    ///
    /// # Errors
    /// [`DownloadError::HashMismatch`].
    pub fn verify(self) -> Result<sha256::Hash, DownloadError> {
        let got = sha256::Hash::from_engine(self.engine);
        if got != self.offer.sha256 {
            return Err(DownloadError::HashMismatch { announced: self.offer.sha256, got });
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paychan::wire::ChannelId;

    fn offer(data: &[u8], chunk_size: u32, price: u64) -> FileOffer {
        FileOffer {
            channel_id: ChannelId([1; 32]),
            name: "f".into(),
            size: data.len() as u64,
            chunk_size,
            price_per_chunk_sat: price,
            sha256: sha256::Hash::hash(data),
            owed_sat: 0,
            paid_chunks: 0,
        }
    }

    fn chunk(data: &[u8], index: u64, size: usize) -> FileChunk {
        let start = index as usize * size;
        let data = data[start..(start + size).min(data.len())].to_vec();
        FileChunk { channel_id: ChannelId([1; 32]), index, data }
    }

    #[test]
    fn chunks_in_order_make_the_announced_file() {
        let data = b"0123456789abcdefghij-".to_vec();
        let mut d = Download::accept(offer(&data, 10, 5), "f", None, Amount::from_sat(15)).unwrap();
        assert_eq!(d.chunks(), 3);
        assert!(matches!(d.take(&chunk(&data, 1, 10)), Err(DownloadError::OutOfOrder { .. })));
        for i in 0..3 {
            d.take(&chunk(&data, i, 10)).unwrap();
        }
        assert!(d.is_complete());
        assert_eq!(d.verify().unwrap(), sha256::Hash::hash(&data));
    }

    #[test]
    fn a_resumed_download_pays_only_for_chunks_not_paid_for() {
        let data = b"0123456789abcdefghij-".to_vec();
        let mut o = offer(&data, 10, 5);
        o.paid_chunks = 2;
        // Only the one chunk not paid for must be affordable.
        let mut d = Download::accept(o, "f", None, Amount::from_sat(5)).unwrap();
        assert_eq!(d.resume_from(3), 2, "the chunk not paid for comes again");
        assert_eq!(d.resume_from(1), 1);
        d.take_held(&data[..10]).unwrap();
        assert!(!d.must_pay(1));
        d.take(&chunk(&data, 1, 10)).unwrap();
        assert!(d.must_pay(2));
        d.take(&chunk(&data, 2, 10)).unwrap();
        assert_eq!(d.verify().unwrap(), sha256::Hash::hash(&data));
        let mut o = offer(&data, 10, 5);
        o.paid_chunks = 4;
        assert!(matches!(
            Download::accept(o, "f", None, Amount::ZERO),
            Err(DownloadError::PaidBeyondFile { paid_chunks: 4, chunks: 3 })
        ));
    }

    #[test]
    fn bad_offers_and_bad_bytes_are_refused() {
        let data = vec![7u8; 25];
        let o = offer(&data, 10, 5);
        let afford = |n| Amount::from_sat(n);
        assert!(matches!(
            Download::accept(o.clone(), "f", None, afford(14)),
            Err(DownloadError::CannotAfford { chunks: 3, .. })
        ));
        assert!(matches!(
            Download::accept(o.clone(), "f", Some(afford(4)), afford(99)),
            Err(DownloadError::TooExpensive { .. })
        ));
        assert!(matches!(
            Download::accept(o.clone(), "g", None, afford(99)),
            Err(DownloadError::WrongFile { .. })
        ));
        let mut huge = o.clone();
        huge.price_per_chunk_sat = u64::MAX;
        assert!(matches!(
            Download::accept(huge, "f", None, afford(99)),
            Err(DownloadError::CannotAfford { cost: None, .. })
        ));
        let mut d = Download::accept(o, "f", None, afford(99)).unwrap();
        let mut short = chunk(&data, 0, 10);
        short.data.pop();
        assert!(matches!(d.take(&short), Err(DownloadError::ChunkLength { .. })));
        let mut wrong = chunk(&data, 0, 10);
        wrong.data[0] = 0;
        d.take(&wrong).unwrap();
        d.take(&chunk(&data, 1, 10)).unwrap();
        d.take(&chunk(&data, 2, 10)).unwrap();
        assert!(matches!(d.verify(), Err(DownloadError::HashMismatch { .. })));
    }
}
