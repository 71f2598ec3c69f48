//! The payee's side of the file service, per channel: which chunk goes out next, and when.
//!
//! A channel's sale is stored with the channel ([`SaleRecord`]): the file, its price, how many of
//! its chunks (from chunk 0) the channel has paid for, and whether the next one is out unpaid.
//! A restart therefore forgives nothing, and a download broken off resumes from the first chunk
//! not yet paid, on the same channel, without paying twice for any chunk.

use std::sync::Arc;

use bitcoin::hashes::sha256;
use bitcoin::Amount;
use serde::{Deserialize, Serialize};

use super::ServedFile;

/// A channel's sale as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleRecord {
    /// The file's name.
    pub name: String,
    /// Its SHA-256: a file changed since is another file.
    pub sha256: sha256::Hash,
    /// Its chunk size: the same file cut otherwise is another sale.
    pub chunk_size: u32,
    /// The price of one chunk in this sale.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub price: Amount,
    /// Chunks `0..paid_chunks` are paid for.
    pub paid_chunks: u64,
    /// The channel's paid total when chunk `paid_chunks` went out, if it is out unpaid.
    #[serde(with = "bitcoin::amount::serde::as_sat::opt")]
    pub unpaid_since: Option<Amount>,
}

impl SaleRecord {
    fn new(file: &ServedFile, price: Amount) -> SaleRecord {
        SaleRecord {
            name: file.name.clone(),
            sha256: file.sha256,
            chunk_size: file.chunk_size,
            price,
            paid_chunks: 0,
            unpaid_since: None,
        }
    }

    fn is_of(&self, file: &ServedFile) -> bool {
        self.name == file.name && self.sha256 == file.sha256 && self.chunk_size == file.chunk_size
    }
}

/// Why a request for chunks is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaleError {
    /// The payer asked to resume past the first chunk it has not paid for.
    #[error("this channel has paid for {paid_chunks} chunk(s) of the file: resume from chunk {paid_chunks} at most")]
    ResumePastPaid {
        /// Chunks paid for, from chunk 0.
        paid_chunks: u64,
    },
}

/// One channel's sale. The payee sends a chunk only when no chunk is out unpaid: a chunk already
/// paid for whenever the payer asks for it again, and the first one not paid for when the payer
/// asks for it, or once the one before it is paid (the channel's paid total has grown by the
/// price since it went out).
#[derive(Debug, Default)]
pub struct Sale {
    record: Option<SaleRecord>,
    /// The file being sent in this process, once the payer asked for its chunks at a price.
    sending: Option<Arc<ServedFile>>,
    /// Another file asked for while a chunk of the sale's file is out unpaid: it starts once
    /// that chunk is paid, at this price.
    waiting: Option<(Arc<ServedFile>, Amount)>,
}

impl Sale {
    /// The sale stored with a channel (`None`: nothing sold on it yet).
    pub fn restore(record: Option<SaleRecord>) -> Sale {
        Sale { record, sending: None, waiting: None }
    }

    /// Returns the record to store with the channel.
    pub fn record(&self) -> Option<&SaleRecord> {
        self.record.as_ref()
    }

    /// Returns what the channel owes for a chunk sent and not paid: the sale's price, or zero.
    pub fn owed(&self) -> Amount {
        match &self.record {
            Some(r) if r.unpaid_since.is_some() => r.price,
            _ => Amount::ZERO,
        }
    }

    /// Returns what is owed for a chunk of a file other than `file` (to pay before `file`'s
    /// chunks start), zero if nothing is or the chunk owed is `file`'s own.
    pub fn owed_elsewhere(&self, file: &ServedFile) -> Amount {
        match &self.record {
            Some(r) if !r.is_of(file) => self.owed(),
            _ => Amount::ZERO,
        }
    }

    /// Returns how many chunks of `file`, from chunk 0, the channel has paid for.
    pub fn paid_chunks(&self, file: &ServedFile) -> u64 {
        self.record.as_ref().filter(|r| r.is_of(file)).map_or(0, |r| r.paid_chunks)
    }

    /// Returns the price of `file`'s chunks on this channel: the sale's, while one of its chunks
    /// is out unpaid (it was sent at that price), `current` otherwise.
    pub fn price(&self, file: &ServedFile, current: Amount) -> Amount {
        match &self.record {
            Some(r) if r.is_of(file) && r.unpaid_since.is_some() => r.price,
            _ => current,
        }
    }

    /// The payer asks for `file` from chunk `from` on at `price`, with `paid` paid on the
    /// channel so far. Replaces any file being sent. Returns the chunk to send now, if any: a
    /// chunk already paid for (free of charge), or the first one not paid for; none while a
    /// chunk of another file is out unpaid (the file starts once that one is paid).
    ///
    /// # Errors
    /// [`SaleError::ResumePastPaid`] if `from` is past the first chunk not paid for.
    pub fn request(
        &mut self,
        file: Arc<ServedFile>,
        from: u64,
        price: Amount,
        paid: Amount,
    ) -> Result<Option<u64>, SaleError> {
        let paid_chunks = self.paid_chunks(&file);
        if from > paid_chunks {
            return Err(SaleError::ResumePastPaid { paid_chunks });
        }
        if self.owed_elsewhere(&file) > Amount::ZERO {
            self.sending = None;
            self.waiting = Some((file, price));
            return Ok(None);
        }
        self.waiting = None;
        let record = match &mut self.record {
            Some(r) if r.is_of(&file) => r,
            other => other.insert(SaleRecord::new(&file, price)),
        };
        if record.unpaid_since.is_none() {
            record.price = price;
        }
        // A chunk paid for comes free of charge, one per request.
        if from < paid_chunks {
            return Ok(Some(from));
        }
        let resend = record.unpaid_since.is_some();
        self.sending = Some(file);
        if resend {
            // The chunk out unpaid, again (the payer lost it): still owed.
            return Ok(Some(from));
        }
        Ok(self.next(paid))
    }

    /// The channel's paid total is now `paid`. Returns the chunk to send now, if any.
    pub fn paid(&mut self, paid: Amount) -> Option<u64> {
        let record = self.record.as_mut()?;
        let due = record.unpaid_since.and_then(|since| since.checked_add(record.price));
        if due.is_some_and(|due| paid >= due) {
            record.unpaid_since = None;
            record.paid_chunks += 1;
            if let Some((file, price)) = self.waiting.take() {
                self.record = Some(SaleRecord::new(&file, price));
                self.sending = Some(file);
            }
        }
        self.next(paid)
    }

    /// Stops sending (the payer went away): nothing goes out until it asks again. The chunk
    /// out unpaid, if any, stays owed.
    pub fn stop(&mut self) {
        self.sending = None;
        self.waiting = None;
    }

    /// Returns the file being sent.
    pub fn file(&self) -> Option<&Arc<ServedFile>> {
        self.sending.as_ref()
    }

    /// Sends the first chunk not paid for, if none is out unpaid and the file has it.
    fn next(&mut self, paid: Amount) -> Option<u64> {
        let (record, file) = (self.record.as_mut()?, self.sending.as_ref()?);
        if record.unpaid_since.is_some() {
            return None;
        }
        if record.paid_chunks >= file.chunks() {
            self.sending = None;
            return None;
        }
        record.unpaid_since = Some(paid);
        Some(record.paid_chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    fn file(name: &str, chunks: u64) -> Arc<ServedFile> {
        Arc::new(ServedFile::for_tests(name, chunks * 10, sha256::Hash::hash(name.as_bytes()), 10))
    }

    const PRICE: Amount = Amount::from_sat(1000);

    fn sats(n: u64) -> Amount {
        Amount::from_sat(n)
    }

    #[test]
    fn a_chunk_goes_out_only_once_the_one_before_is_paid() {
        let mut sale = Sale::default();
        let f = file("f", 3);
        assert_eq!(sale.request(f.clone(), 0, PRICE, sats(0)), Ok(Some(0)));
        assert_eq!(sale.paid(sats(999)), None);
        assert_eq!(sale.paid(sats(1000)), Some(1));
        assert_eq!(sale.owed(), PRICE);
        assert_eq!(sale.paid(sats(2000)), Some(2));
        assert_eq!(sale.paid(sats(3000)), None);
        assert!(sale.file().is_none());
        assert_eq!(sale.paid_chunks(&f), 3);
        // Everything paid: asked again, the chunks come free of charge, one per request.
        assert_eq!(sale.request(f.clone(), 0, PRICE, sats(3000)), Ok(Some(0)));
        assert_eq!(sale.owed(), Amount::ZERO);
        assert_eq!(sale.request(f.clone(), 3, PRICE, sats(3000)), Ok(None));
    }

    #[test]
    fn a_broken_off_download_resumes_from_the_first_chunk_not_paid() {
        let mut sale = Sale::default();
        let f = file("f", 5);
        assert_eq!(sale.request(f.clone(), 0, PRICE, sats(0)), Ok(Some(0)));
        assert_eq!(sale.paid(sats(1000)), Some(1));
        // The payee restarts with chunk 1 out unpaid: stored, not forgiven.
        let stored = sale.record().cloned();
        let mut sale = Sale::restore(stored);
        assert_eq!(sale.owed(), PRICE);
        assert_eq!(sale.paid_chunks(&f), 1);
        assert_eq!(
            sale.request(f.clone(), 2, PRICE, sats(1000)),
            Err(SaleError::ResumePastPaid { paid_chunks: 1 })
        );
        // Chunk 0 again is free; chunk 1 again is the one still owed, sent again.
        assert_eq!(sale.request(f.clone(), 0, PRICE, sats(1000)), Ok(Some(0)));
        assert_eq!(sale.owed(), PRICE);
        assert_eq!(sale.request(f.clone(), 1, sats(5), sats(1000)), Ok(Some(1)));
        // Its price stays the one it went out at.
        assert_eq!(sale.price(&f, sats(5)), PRICE);
        assert_eq!(sale.paid(sats(2000)), Some(2));
        assert_eq!(sale.price(&f, sats(5)), PRICE);
        // The payer goes away with chunk 2 out: its payment, resent on a new connection, sends
        // nothing more until the payer asks.
        sale.stop();
        assert_eq!(sale.paid(sats(3000)), None);
        assert_eq!(sale.paid_chunks(&f), 3);
        assert_eq!(sale.request(f.clone(), 3, PRICE, sats(3000)), Ok(Some(3)));
    }

    #[test]
    fn another_file_waits_until_the_chunk_owed_is_paid() {
        let mut sale = Sale::default();
        let (f, g) = (file("f", 3), file("g", 2));
        assert_eq!(sale.request(f.clone(), 0, PRICE, sats(0)), Ok(Some(0)));
        assert_eq!(sale.owed_elsewhere(&g), PRICE);
        assert_eq!(sale.request(g.clone(), 0, PRICE, sats(0)), Ok(None));
        assert_eq!(sale.paid(sats(1000)), Some(0));
        assert_eq!(sale.paid_chunks(&g), 0);
        assert_eq!(sale.paid_chunks(&f), 0, "the sale is now g's");
        assert_eq!(sale.file().map(|f| f.name.as_str()), Some("g"));
    }
}
