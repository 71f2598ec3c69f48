//! Group commit: one thread owns the daemon's [`Store`] and writes for every channel.
//!
//! Callers on the async side hand a record to [`StoreWriter::save`] and await the commit. The
//! thread takes every request waiting at that moment: it saves all the records in one
//! transaction (with many channels busy, one disk flush serves many payments), after carrying
//! out the batch's other requests (key indexes, deletes, chain positions) one by one. No async
//! task ever blocks on the store. Each channel saves from behind its own lock, so a channel's
//! saves stay in order; a caller that needs one request after another awaits the first.
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use paychan::store::{ChannelRecord, Store, StoreError};
use paychan::watch::BlockId;
use paychan::wire::ChannelId;

/// A call on the store other than a save, carried out in the writer's thread.
type Call = Box<dyn FnOnce(&mut dyn Store) + Send>;

enum Request {
    Save(Box<ChannelRecord>, oneshot::Sender<Result<(), StoreError>>),
    Call(Call),
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
        self.call(move |store| store.delete_channel(id)).await
    }

    /// Forgets channel `id`'s closing transaction ([`Store::forget_closure`]).
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn forget_closure(&self, id: ChannelId) -> Result<(), StoreError> {
        self.call(move |store| store.forget_closure(id)).await
    }

    /// Records channel `id`'s funding height ([`Store::record_funding_height`]).
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn record_funding_height(
        &self,
        id: ChannelId,
        height: Option<u32>,
    ) -> Result<(), StoreError> {
        self.call(move |store| store.record_funding_height(id, height)).await
    }

    /// Records a watcher's chain position ([`Store::save_chain_position`]).
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn save_chain_position(
        &self,
        watcher: &'static str,
        blocks: Vec<BlockId>,
    ) -> Result<(), StoreError> {
        self.call(move |store| store.save_chain_position(watcher, &blocks)).await
    }

    /// Hands out the next channel key index ([`Store::reserve_key_index`]).
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn reserve_key_index(&self) -> Result<u32, StoreError> {
        self.call(|store| store.reserve_key_index()).await
    }

    /// Runs `call` on the store in the writer's thread, in turn with the saves.
    async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, answer) = oneshot::channel();
        let call: Call = Box::new(move |store| {
            let _ = done.send(call(store));
        });
        self.requests.send(Request::Call(call)).map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

fn write_batch(store: &mut impl Store, batch: Vec<Request>) {
    let mut saves = Vec::new();
    for request in batch {
        match request {
            Request::Save(record, done) => saves.push((*record, done)),
            Request::Call(call) => call(store),
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
