//! Group commit: one thread owns the daemon's [`Store`] and writes for every channel.
//!
//! Callers on the async side hand a record to [`StoreWriter::save`] and await the commit. The
//! thread takes every request waiting at that moment: it saves all the records in one
//! transaction (with many channels busy, one disk flush serves many payments), after carrying
//! out the batch's other requests (key indexes, deletes, chain positions) one by one. No async
//! task ever blocks on the store. Each channel saves from behind its own lock, so a channel's
//! saves stay in order; a caller that needs one request after another awaits the first.
//!
//! Every save names the version of the channel's row it was read at ([`Store::save_channels_if`]):
//! in a store several front ends share, a save over a row another one changed since is refused
//! ([`StoreError::Stale`]) and writes nothing.
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use paychan::store::{ChannelRecord, Lease, RowVersion, Store, StoreError};
use paychan::watch::BlockId;
use paychan::wire::ChannelId;

/// A call on the store other than a save, carried out in the writer's thread.
type Call = Box<dyn FnOnce(&mut dyn Store) + Send>;

/// A record to save over the row version it was read at, and where its outcome goes.
type Save = (ChannelRecord, Option<RowVersion>, oneshot::Sender<Result<RowVersion, StoreError>>);

enum Request {
    Save(Box<Save>),
    Call(Call),
}

/// A handle to the writing thread. Cloning it is cheap; the thread ends with the last handle.
#[derive(Clone)]
pub struct StoreWriter {
    requests: mpsc::Sender<Request>,
    shared: bool,
}

impl StoreWriter {
    /// Moves `store` to a new writing thread.
    pub fn spawn(mut store: impl Store + Send + 'static) -> StoreWriter {
        let shared = store.shared();
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
        StoreWriter { requests, shared }
    }

    /// Whether other processes write the store too ([`Store::shared`]).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Saves `record`, read at row version `read` (`None`: a channel not stored yet), and
    /// returns its new version once it is committed to disk.
    ///
    /// # Errors
    /// [`StoreError::Stale`] if another front end saved the channel since (nothing written),
    /// the store's error, or [`StoreError::WriterStopped`].
    pub async fn save(
        &self,
        record: ChannelRecord,
        read: Option<RowVersion>,
    ) -> Result<RowVersion, StoreError> {
        let (done, answer) = oneshot::channel();
        self.requests
            .send(Request::Save(Box::new((record, read, done))))
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Reads every channel and its row version, in turn with the saves.
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn load_all(&self) -> Result<Vec<(ChannelRecord, RowVersion)>, StoreError> {
        self.call(|store| store.channels_versioned()).await
    }

    /// Reads a watcher's stored chain position ([`Store::chain_position`]).
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn chain_position(&self, watcher: &'static str) -> Result<Vec<BlockId>, StoreError> {
        self.call(move |store| store.chain_position(watcher)).await
    }

    /// Takes lease `name` if no other front end holds it ([`Store::try_lead`]).
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn try_lead(&self, name: &'static str) -> Result<Option<Lease>, StoreError> {
        self.call(move |store| store.try_lead(name)).await
    }

    /// Reads channel `id` and its row version, in turn with the saves.
    ///
    /// # Errors
    /// As [`StoreWriter::save`].
    pub async fn load(
        &self,
        id: ChannelId,
    ) -> Result<Option<(ChannelRecord, RowVersion)>, StoreError> {
        self.call(move |store| store.channel_versioned(id)).await
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
            Request::Save(save) => saves.push(*save),
            Request::Call(call) => call(store),
        }
    }
    if saves.is_empty() {
        return;
    }
    // A record saved twice in one batch keeps its newest state: the later one is written last.
    let records: Vec<_> = saves.iter().map(|(r, read, _)| (r.clone(), *read)).collect();
    match store.save_channels_if(&records) {
        Ok(versions) => {
            for ((record, _, done), version) in saves.into_iter().zip(versions) {
                let _ = done.send(outcome(&record, version));
            }
        }
        // The whole batch rolled back: save each alone, so each caller gets its own outcome.
        Err(_) => {
            for (record, read, done) in saves {
                let saved = store.save_channels_if(&[(record.clone(), read)]);
                let version = saved.map(|v| v.into_iter().next().flatten());
                let _ = done.send(version.and_then(|v| outcome(&record, v)));
            }
        }
    }
}

/// A save's outcome: its new version, or stale if another front end saved the row since.
fn outcome(record: &ChannelRecord, version: Option<RowVersion>) -> Result<RowVersion, StoreError> {
    version.ok_or(StoreError::Stale { id: record.state.channel_id() })
}
