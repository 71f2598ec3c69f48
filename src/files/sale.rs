//! The payee's side of the file service, per channel: which chunk goes out next, and when.

use std::sync::Arc;

use bitcoin::Amount;

use super::ServedFile;

/// One channel's sale. The payee sends a chunk only when no chunk is out unpaid: the first one
/// when the payer asks, each next one once the channel's paid total has grown by the price since
/// the one before went out.
#[derive(Debug)]
pub struct Sale {
    price: Amount,
    /// The channel's paid total when the chunk still unpaid went out, if one is.
    unpaid_since: Option<Amount>,
    /// The file being sent and the index of the next chunk.
    sending: Option<(Arc<ServedFile>, u64)>,
}

impl Sale {
    /// A sale at `price` per chunk, nothing sent yet.
    pub fn new(price: Amount) -> Sale {
        Sale { price, unpaid_since: None, sending: None }
    }

    /// The payer asks for `file` from chunk `from` on, with `paid` paid on the channel so far.
    /// Replaces any file being sent. Returns the chunk to send now, if any: none while an
    /// earlier chunk is still unpaid (it goes out once that one is paid).
    pub fn request(&mut self, file: Arc<ServedFile>, from: u64, paid: Amount) -> Option<u64> {
        self.sending = Some((file, from));
        self.next(paid)
    }

    /// The channel's paid total is now `paid`. Returns the chunk to send now, if any.
    pub fn paid(&mut self, paid: Amount) -> Option<u64> {
        if let Some(since) = self.unpaid_since {
            if since.checked_add(self.price).is_some_and(|due| paid >= due) {
                self.unpaid_since = None;
            }
        }
        self.next(paid)
    }

    /// Returns what the channel owes for a chunk sent and not paid: the price, or zero.
    pub fn owed(&self) -> Amount {
        if self.unpaid_since.is_some() {
            self.price
        } else {
            Amount::ZERO
        }
    }

    /// Returns the file being sent.
    pub fn file(&self) -> Option<&Arc<ServedFile>> {
        self.sending.as_ref().map(|(f, _)| f)
    }

    fn next(&mut self, paid: Amount) -> Option<u64> {
        if self.unpaid_since.is_some() {
            return None;
        }
        let (file, next) = self.sending.as_mut()?;
        if *next >= file.chunks() {
            self.sending = None;
            return None;
        }
        let index = *next;
        *next += 1;
        self.unpaid_since = Some(paid);
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::{sha256, Hash};

    fn file(chunks: u64) -> Arc<ServedFile> {
        Arc::new(ServedFile::for_tests("f", chunks * 10, sha256::Hash::hash(b""), 10))
    }

    #[test]
    fn a_chunk_goes_out_only_once_the_one_before_is_paid() {
        let sats = Amount::from_sat;
        let mut sale = Sale::new(sats(1000));
        assert_eq!(sale.request(file(3), 0, sats(0)), Some(0));
        assert_eq!(sale.paid(sats(999)), None);
        assert_eq!(sale.paid(sats(1000)), Some(1));
        // Asking again does not bring another chunk while one is unpaid.
        assert_eq!(sale.owed(), sats(1000));
        assert_eq!(sale.request(file(3), 2, sats(1000)), None);
        assert_eq!(sale.paid(sats(2000)), Some(2));
        assert_eq!(sale.paid(sats(3000)), None);
        assert!(sale.file().is_none());
        // A new request after everything was paid starts at once.
        assert_eq!(sale.request(file(3), 0, sats(3000)), Some(0));
    }
}
