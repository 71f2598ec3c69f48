//! Group commit: one thread owns the daemon's [`Store`] and writes for every channel.
//!
//! Callers on the async side hand a record to [`StoreWriter::save`] and await the commit. The
//! thread takes every request waiting at that moment: it saves all the records in one
//! transaction (with many channels busy, one disk flush serves many payments), after carrying
//! out the batch's other requests (key indexes, deletes) one by one. No async task ever blocks
//! on the store. Each channel saves from behind its own lock, so a channel's saves stay in order.

use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use paychan::store::{ChannelRecord, Store, StoreError};
use paychan::wire::ChannelId;

enum Request {
    Save(Box<ChannelRecord>, oneshot::Sender<Result<(), StoreError>>),
    Delete(ChannelId, oneshot::Sender<Result<(), StoreError>>),
    ForgetClosure(ChannelId, oneshot::Sender<Result<(), StoreError>>),
    ReserveKeyIndex(oneshot::Sender<Result<u32, StoreError>>),
}

/// A handle to the writing thread. Cloning it is cheap; the thread ends with the last handle.
#[derive(Clone)]
pub struct StoreWriter {
    requests: mpsc::Sender<Request>,
}

impl StoreWriter {
    /// Moves `store` to a new writing thread.
    pub fn spawn(mut store: impl Store + Send + 'static) -> StoreWriter {
        let (requests, incoming) = mpsc::channel();
        thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                while let Ok(first) = incoming.recv() {
                    let batch: Vec<Request> =
                        std::iter::once(first).chain(incoming.try_iter()).collect();
                    write_batch(&mut store, batch);
                }
            })
            .expect("spawning a thread");
        StoreWriter { requests }
    }

    /// Saves `record` and returns once it is committed to disk.
    ///
    /// # Errors
    /// The store's error, or [`StoreError::WriterStopped`].
    pub async fn save(&self, record: ChannelRecord) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.requests
            .send(Request::Save(Box::new(record), done))
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Deletes channel `id` ([`Store::delete_channel`]).
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn delete(&self, id: ChannelId) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.requests.send(Request::Delete(id, done)).map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Forgets channel `id`'s closing transaction ([`Store::forget_closure`]).
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn forget_closure(&self, id: ChannelId) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        let request = Request::ForgetClosure(id, done);
        self.requests.send(request).map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Hands out the next channel key index ([`Store::reserve_key_index`]).
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn reserve_key_index(&self) -> Result<u32, StoreError> {
        let (done, answer) = oneshot::channel();
        let request = Request::ReserveKeyIndex(done);
        self.requests.send(request).map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

fn write_batch(store: &mut impl Store, batch: Vec<Request>) {
    let mut saves = Vec::new();
    for request in batch {
        match request {
            Request::Save(record, done) => saves.push((*record, done)),
            Request::ReserveKeyIndex(done) => {
                let _ = done.send(store.reserve_key_index());
            }
            Request::Delete(id, done) => {
                let _ = done.send(store.delete_channel(id));
            }
            Request::ForgetClosure(id, done) => {
                let _ = done.send(store.forget_closure(id));
            }
        }
    }
    if saves.is_empty() {
        return;
    }
    // A record saved twice in one batch keeps its newest state: the later one is written last.
    let records: Vec<ChannelRecord> = saves.iter().map(|(r, _)| r.clone()).collect();
    match store.save_channels(&records) {
        Ok(()) => saves.into_iter().for_each(|(_, done)| {
            let _ = done.send(Ok(()));
        }),
        // The whole batch rolled back: save each alone, so each caller gets its own outcome.
        Err(_) => saves.into_iter().for_each(|(record, done)| {
            let _ = done.send(store.save_channel(&record));
        }),
    }
}
