//! The channel store: SQLite in the data directory.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a commit is on disk when it returns
//! and a crash (even `kill -9` or a power cut) leaves the last committed state. Every change is
//! one transaction. The schema carries its version in `PRAGMA user_version` and is brought up to
//! date by its numbered migrations when the store opens; a database from a newer build is refused.
//!
//! A channel's state machine state is stored as JSON, next to its role, key index, peer, the
//! file service's sale on it (payee side) and, once a watcher saw it, the transaction that
//! closed it on chain.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bitcoin::Network;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

mod writer;

pub use writer::StoreWriter;

use crate::channel::{ChannelTerms, FundedChannel, PayeeStage, PayeeState, PayerStage, PayerState};
use crate::closing::Closure;
use crate::files::SaleRecord;
use crate::wire::ChannelId;

/// The store's file name in the data directory.
pub const STORE_FILE: &str = "paychan.sqlite";

/// The schema, one migration per version: migration `i` takes the schema from version `i` to
/// `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE channels (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('payer', 'payee')),
        key_index INTEGER NOT NULL UNIQUE,
        peer TEXT,
        state TEXT NOT NULL,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL
    );
",
    "
    ALTER TABLE channels ADD COLUMN closed TEXT;
",
    "
    ALTER TABLE channels ADD COLUMN sale TEXT;
",
];

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer paychan.
    #[error("store {path} has schema version {found}; this build knows up to {supported}")]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
    /// The data directory belongs to another chain.
    #[error("this data directory is for {stored}, not {requested}")]
    WrongNetwork {
        /// The network it was created for.
        stored: Network,
        /// The network asked for.
        requested: Network,
    },
    /// The daemon's writer thread has stopped (it panicked): nothing more can be saved.
    #[error("the store's writer thread has stopped")]
    WriterStopped,
    /// A stored value does not parse.
    #[error("store {path} is corrupt: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A channel's side and state machine state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per channel
pub enum ChannelState {
    /// We pay.
    Payer(PayerState),
    /// We are paid.
    Payee(PayeeState),
}

impl ChannelState {
    /// Returns `"payer"` or `"payee"`.
    pub fn role(&self) -> &'static str {
        match self {
            ChannelState::Payer(_) => "payer",
            ChannelState::Payee(_) => "payee",
        }
    }

    /// Returns the channel id.
    pub fn channel_id(&self) -> ChannelId {
        self.terms().channel_id
    }

    /// Returns what the payer proposed.
    pub fn terms(&self) -> &ChannelTerms {
        match self {
            ChannelState::Payer(s) => &s.terms,
            ChannelState::Payee(s) => &s.terms,
        }
    }

    /// Returns the stage in words ([`PayerStage::name`], [`PayeeStage::name`]).
    pub fn stage_name(&self) -> &'static str {
        match self {
            ChannelState::Payer(s) => s.stage.name(),
            ChannelState::Payee(s) => s.stage.name(),
        }
    }

    /// Returns this side's safety margin in blocks.
    pub fn margin(&self) -> u32 {
        match self {
            ChannelState::Payer(s) => s.margin,
            ChannelState::Payee(s) => s.margin,
        }
    }

    /// Returns what both sides hold once the refund is signed.
    pub fn funded(&self) -> Option<&FundedChannel> {
        match self {
            ChannelState::Payer(PayerState { stage: PayerStage::Funded(f), .. }) => Some(&f.funded),
            ChannelState::Payee(PayeeState { stage: PayeeStage::Funded(f), .. }) => Some(f),
            _ => None,
        }
    }
}

/// A stored channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// The index of its key ([`crate::wallet::Wallet::channel_signer`]).
    pub key_index: u32,
    /// The payee, as `PUBKEY@HOST:PORT` (payer side only).
    pub peer: Option<String>,
    /// The state machine's state.
    pub state: ChannelState,
    /// The confirmed transaction that spent the funding, once a watcher saw it. Saving a record
    /// without one never erases one already stored.
    pub closed: Option<Closure>,
    /// The file service's sale on the channel (payee side), saved with every state.
    pub sale: Option<SaleRecord>,
}

/// The SQLite store. See the [module docs](self).
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store at `path` and migrates it to the current schema.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::NewerSchema`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path).map_err(sqlite_err(path))?;
        let mut store = Store { conn, path: path.to_owned() };
        store.configure().map_err(sqlite_err(path))?;
        store.migrate()?;
        Ok(store)
    }

    fn configure(&self) -> rusqlite::Result<()> {
        // Another process (a CLI reading while the daemon writes) waits rather than fails.
        self.conn.busy_timeout(Duration::from_secs(10))?;
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let version: u32 =
            tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite_err(&path))?;
        let supported = MIGRATIONS.len() as u32;
        if version > supported {
            return Err(StoreError::NewerSchema { path, found: version, supported });
        }
        for migration in &MIGRATIONS[version as usize..] {
            tx.execute_batch(migration).map_err(sqlite_err(&path))?;
        }
        tx.pragma_update(None, "user_version", supported).map_err(sqlite_err(&path))?;
        tx.commit().map_err(sqlite_err(&path))
    }

    /// Checks that the store is for `network`, recording it on first use.
    ///
    /// # Errors
    /// [`StoreError::WrongNetwork`] if it was created for another network,
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn check_network(&mut self, network: Network) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.update_setting("network", |stored| {
            let Some(s) = stored else { return Ok((Some(network.to_core_arg().into()), ())) };
            let stored = Network::from_core_arg(&s)
                .map_err(|e| StoreError::Corrupt { path, reason: format!("network {s:?}: {e}") })?;
            if stored != network {
                return Err(StoreError::WrongNetwork { stored, requested: network });
            }
            Ok((None, ()))
        })
    }

    /// Hands out the next channel key index, durably: an index is never handed out twice, even
    /// if the channel it was for is never saved.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`] (a corrupt counter, or all 2^31 used).
    pub fn reserve_key_index(&mut self) -> Result<u32, StoreError> {
        let path = self.path.clone();
        self.update_setting("next_key_index", |next| {
            let corrupt = |reason: String| StoreError::Corrupt { path: path.clone(), reason };
            let index = match next {
                None => 0,
                Some(s) => {
                    s.parse::<u32>().map_err(|e| corrupt(format!("next_key_index {s:?}: {e}")))?
                }
            };
            let bumped = index
                .checked_add(1)
                .filter(|i| *i < 1 << 31)
                .ok_or_else(|| corrupt("channel key indexes exhausted".into()))?;
            Ok((Some(bumped.to_string()), index))
        })
    }

    /// Reads setting `name` and, in the same transaction, writes what `update` returns for it
    /// (`None`: leave it).
    fn update_setting<T>(
        &mut self,
        name: &str,
        update: impl FnOnce(Option<String>) -> Result<(Option<String>, T), StoreError>,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let stored: Option<String> = tx
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(sqlite_err(&path))?;
        let (write, result) = update(stored)?;
        if let Some(value) = write {
            tx.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [name, &value],
            )
            .map_err(sqlite_err(&path))?;
        }
        tx.commit().map_err(sqlite_err(&path))?;
        Ok(result)
    }

    /// Starts a write transaction, taking the write lock at once (so a reader that writes
    /// later cannot deadlock against another writer).
    fn begin(&mut self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_err(&self.path))
    }

    /// Saves one channel (insert or update) in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn save_channel(&mut self, record: &ChannelRecord) -> Result<(), StoreError> {
        self.save_channels(std::slice::from_ref(record))
    }

    /// Saves several channels in one transaction: one commit, one disk flush, for all of them.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`]; then none of them is saved.
    pub fn save_channels(&mut self, records: &[ChannelRecord]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let tx = self.begin()?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO channels (id, role, key_index, peer, state, closed, sale, created,
                         updated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                     ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                         peer = excluded.peer, updated = excluded.updated,
                         closed = COALESCE(excluded.closed, closed), sale = excluded.sale",
                )
                .map_err(sqlite_err(&path))?;
            for r in records {
                let state = match &r.state {
                    ChannelState::Payer(s) => serde_json::to_string(s),
                    ChannelState::Payee(s) => serde_json::to_string(s),
                }
                .expect("channel states hold only JSON-representable values");
                let closed = r.closed.as_ref().map(|c| {
                    serde_json::to_string(c)
                        .expect("a closure holds only JSON-representable values")
                });
                let sale = r.sale.as_ref().map(|s| {
                    serde_json::to_string(s).expect("a sale holds only JSON-representable values")
                });
                let id = r.state.channel_id().to_string();
                let (role, key, peer) = (r.state.role(), r.key_index, &r.peer);
                stmt.execute(params![id, role, key, peer, state, closed, sale, now])
                    .map_err(sqlite_err(&path))?;
            }
        }
        tx.commit().map_err(sqlite_err(&path))
    }

    /// Records the transaction that closed channel `id` on chain, leaving its state as it is (a
    /// watcher may run next to the command that writes the state).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn record_closure(&mut self, id: ChannelId, closure: &Closure) -> Result<(), StoreError> {
        let closed =
            serde_json::to_string(closure).expect("a closure holds only JSON-representable values");
        self.conn
            .execute("UPDATE channels SET closed = ?2 WHERE id = ?1", [id.to_string(), closed])
            .map_err(sqlite_err(&self.path))?;
        Ok(())
    }

    /// Deletes the channel `id` (one that never got a funding: nothing is at stake in it).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn delete_channel(&mut self, id: ChannelId) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM channels WHERE id = ?1", [id.to_string()])
            .map_err(sqlite_err(&self.path))?;
        Ok(())
    }

    /// Returns the channel `id`, if stored.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn channel(&self, id: ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT role, key_index, peer, state, closed, sale FROM channels WHERE id = ?1",
            )
            .map_err(sqlite_err(&self.path))?;
        let row = stmt
            .query_row([id.to_string()], row_fields)
            .optional()
            .map_err(sqlite_err(&self.path))?;
        row.map(|fields| self.record(fields)).transpose()
    }

    /// Returns every channel, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT role, key_index, peer, state, closed, sale FROM channels ORDER BY rowid",
            )
            .map_err(sqlite_err(&self.path))?;
        let rows = stmt
            .query_map([], row_fields)
            .map_err(sqlite_err(&self.path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite_err(&self.path))?;
        rows.into_iter().map(|fields| self.record(fields)).collect()
    }

    fn record(
        &self,
        (role, key_index, peer, state, closed, sale): RowFields,
    ) -> Result<ChannelRecord, StoreError> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            path: self.path.clone(),
            reason: format!("{role} channel state: {e}"),
        };
        let state = match role.as_str() {
            "payer" => ChannelState::Payer(serde_json::from_str(&state).map_err(corrupt)?),
            "payee" => ChannelState::Payee(serde_json::from_str(&state).map_err(corrupt)?),
            other => {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    reason: format!("unknown role {other:?}"),
                })
            }
        };
        let closed = self.column("closing transaction", closed)?;
        let sale = self.column("file sale", sale)?;
        Ok(ChannelRecord { key_index, peer, state, closed, sale })
    }
}

impl Store {
    /// Parses an optional JSON column.
    fn column<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        json: Option<String>,
    ) -> Result<Option<T>, StoreError> {
        json.map(|j| serde_json::from_str(&j)).transpose().map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            reason: format!("{what}: {e}"),
        })
    }
}

type RowFields = (String, u32, Option<String>, String, Option<String>, Option<String>);

fn row_fields(row: &rusqlite::Row<'_>) -> rusqlite::Result<RowFields> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite { path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Payer, PayerConfig};
    use crate::keys::ChannelSigner;
    use bitcoin::{Address, Amount, CompressedPublicKey};

    fn payer_record(key_index: u32) -> ChannelRecord {
        let signer = ChannelSigner::from_slice(&[key_index as u8 + 1; 32]).unwrap();
        let key = CompressedPublicKey(signer.public_key().inner);
        let config = PayerConfig {
            network: Network::Regtest,
            capacity: Amount::from_sat(100_000),
            feerate_sat_per_vb: 2,
            refund_locktime: 1_000,
            step: 2,
            margin: 6,
            payout: Address::p2wpkh(&key, Network::Regtest),
            checkpoints: crate::channel::CheckpointPolicy::on_request(),
        };
        let (payer, _) =
            Payer::open(config, signer, ChannelId([key_index as u8; 32]), 500).unwrap();
        ChannelRecord {
            key_index,
            peer: Some("peer".into()),
            state: ChannelState::Payer(payer.state().clone()),
            closed: None,
            sale: None,
        }
    }

    #[test]
    fn channels_round_trip_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let mut store = Store::open(&path).unwrap();
        let (a, b) = (payer_record(0), payer_record(1));
        store.save_channels(&[a.clone(), b.clone()]).unwrap();
        let mut a2 = a.clone();
        a2.peer = Some("moved".into());
        store.save_channel(&a2).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.channels().unwrap(), vec![a2.clone(), b]);
        assert_eq!(store.channel(a.state.channel_id()).unwrap(), Some(a2));
        assert_eq!(store.channel(ChannelId([9; 32])).unwrap(), None);
    }

    #[test]
    fn a_closure_stays_recorded_when_the_state_is_saved_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
        let record = payer_record(0);
        let id = record.state.channel_id();
        store.save_channel(&record).unwrap();
        let closure = Closure {
            txid: "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
                .parse()
                .unwrap(),
            kind: crate::closing::ClosingKind::Commitment { rung: 3 },
            height: 812,
            payer_amount: bitcoin::Amount::from_sat(60_000),
            payee_amount: bitcoin::Amount::from_sat(39_000),
        };
        store.record_closure(id, &closure).unwrap();
        store.save_channel(&record).unwrap();
        assert_eq!(store.channel(id).unwrap().unwrap().closed, Some(closure));
    }

    #[test]
    fn a_file_sale_is_saved_with_its_channel() {
        use bitcoin::hashes::Hash;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let mut store = Store::open(&path).unwrap();
        let mut record = payer_record(0);
        record.sale = Some(SaleRecord {
            name: "film.bin".into(),
            sha256: bitcoin::hashes::sha256::Hash::hash(b"film"),
            chunk_size: 1000,
            price: bitcoin::Amount::from_sat(10),
            paid_chunks: 7,
            unpaid_since: Some(bitcoin::Amount::from_sat(70)),
        });
        store.save_channel(&record).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let id = record.state.channel_id();
        assert_eq!(store.channel(id).unwrap(), Some(record));
    }

    #[test]
    fn key_indexes_are_never_handed_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.reserve_key_index().unwrap(), 0);
        assert_eq!(store.reserve_key_index().unwrap(), 1);
        drop(store);
        assert_eq!(Store::open(&path).unwrap().reserve_key_index().unwrap(), 2);
    }

    #[test]
    fn the_network_is_fixed_at_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
        store.check_network(Network::Regtest).unwrap();
        store.check_network(Network::Regtest).unwrap();
        let err = store.check_network(Network::Bitcoin).unwrap_err();
        assert!(matches!(
            err,
            StoreError::WrongNetwork { stored: Network::Regtest, requested: Network::Bitcoin }
        ));
    }

    #[test]
    fn a_newer_schema_is_refused_and_wal_and_full_sync_are_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let store = Store::open(&path).unwrap();
        let pragma = |name| -> String {
            store
                .conn
                .pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
        assert_eq!(pragma("synchronous"), "Integer(2)"); // FULL
        assert_eq!(pragma("user_version"), format!("Integer({})", MIGRATIONS.len()));
        store.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        let err = Store::open(&path).err().expect("newer schema refused");
        assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }), "{err}");
    }
}
