//! paychan's channel store on SQLite: [`SqliteStore`] implements [`paychan::store::Store`].
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a commit is on disk when it returns
//! and a crash (even `kill -9` or a power cut) leaves the last committed state. Every change is
//! one transaction. The schema carries its version in `PRAGMA user_version` and is brought up to
//! date by its numbered migrations when the store opens; a database from a newer build is refused.
//!
//! A channel's state machine state is stored as the core's versioned JSON
//! ([`ChannelState::encode`]), next to its role, key index, peer, what a service keeps with it
//! (the file service's sale, payee side; the column is named `sale`) and, once a watcher saw it,
//! the transaction that closed it on chain.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bitcoin::Network;
use rayon::iter::{IntoParallelIterator, ParallelIterator};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use paychan::closing::Closure;
use paychan::store::{
    network_setting, next_key_index, ChannelRecord, ChannelState, Store, StoreError,
};
use paychan::watch::BlockId;
use paychan::wire::ChannelId;

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
    "
    ALTER TABLE channels ADD COLUMN funding_height INTEGER;
",
];

/// The SQLite store. See the [crate docs](crate).
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` and migrates it to the current schema.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::NewerSchema`].
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(sqlite_err(path))?;
        let mut store = SqliteStore { conn, path: path.to_owned() };
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
            return Err(StoreError::NewerSchema {
                location: location(&path),
                found: version,
                supported,
            });
        }
        for migration in &MIGRATIONS[version as usize..] {
            tx.execute_batch(migration).map_err(sqlite_err(&path))?;
        }
        tx.pragma_update(None, "user_version", supported).map_err(sqlite_err(&path))?;
        tx.commit().map_err(sqlite_err(&path))
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
}

impl Store for SqliteStore {
    /// Checks that the store is for `network`, recording it on first use.
    ///
    /// # Errors
    /// [`StoreError::WrongNetwork`] if it was created for another network,
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    fn check_network(&mut self, network: Network) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.update_setting("network", |stored| {
            Ok((network_setting(stored.as_deref(), network, &location(&path))?, ()))
        })
    }

    /// Hands out the next channel key index, durably: an index is never handed out twice, even
    /// if the channel it was for is never saved.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`] (a corrupt counter, or all 2^31 used).
    fn reserve_key_index(&mut self) -> Result<u32, StoreError> {
        let path = self.path.clone();
        self.update_setting("next_key_index", |next| {
            let (index, bumped) = next_key_index(next.as_deref())
                .map_err(|reason| StoreError::Corrupt { location: location(&path), reason })?;
            Ok((Some(bumped), index))
        })
    }

    /// Saves several channels in one transaction: one commit, one disk flush, for all of them.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`]; then none of them is saved.
    fn save_channels(&mut self, records: &[ChannelRecord]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let tx = self.begin()?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO channels (id, role, key_index, peer, state, closed, sale,
                         funding_height, created, updated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?8, ?8)
                     ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                         peer = excluded.peer, updated = excluded.updated,
                         closed = COALESCE(excluded.closed, closed), sale = excluded.sale
                     WHERE role = excluded.role",
                )
                .map_err(sqlite_err(&path))?;
            for r in records {
                let state = r.state.encode();
                let closed = r.closed.as_ref().map(|c| {
                    serde_json::to_string(c)
                        .expect("a closure holds only JSON-representable values")
                });
                let sale = r.service.as_ref().map(Value::to_string);
                let id = r.state.channel_id().to_string();
                let (role, key, peer) = (r.state.role(), r.key_index, &r.peer);
                let saved = stmt
                    .execute(params![
                        id,
                        role,
                        key,
                        peer,
                        state,
                        closed,
                        sale,
                        now,
                        r.funding_height
                    ])
                    .map_err(sqlite_err(&path))?;
                // The update skipped: the id is the other role's. The whole batch rolls back.
                if saved == 0 {
                    let other = if role == "payer" { "payee" } else { "payer" };
                    return Err(StoreError::IdInUse { id: r.state.channel_id(), role: other });
                }
            }
        }
        tx.commit().map_err(sqlite_err(&path))
    }

    /// Records the transaction that closed channel `id` on chain, leaving its state as it is (a
    /// watcher may run next to the command that writes the state).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    fn record_closure(&mut self, id: ChannelId, closure: &Closure) -> Result<(), StoreError> {
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
    fn forget_closure(&mut self, id: ChannelId) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE channels SET closed = NULL WHERE id = ?1", [id.to_string()])
            .map_err(sqlite_err(&self.path))?;
        Ok(())
    }

    fn record_funding_height(
        &mut self,
        id: ChannelId,
        height: Option<u32>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE channels SET funding_height = ?2 WHERE id = ?1",
                params![id.to_string(), height],
            )
            .map_err(sqlite_err(&self.path))?;
        Ok(())
    }

    fn chain_position(&self, watcher: &str) -> Result<Vec<BlockId>, StoreError> {
        let stored: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM settings WHERE name = ?1",
                [position_setting(watcher)],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite_err(&self.path))?;
        Ok(column(&self.path, "chain position", stored)?.unwrap_or_default())
    }

    fn save_chain_position(&mut self, watcher: &str, blocks: &[BlockId]) -> Result<(), StoreError> {
        let value = serde_json::to_string(blocks).expect("block ids are JSON-representable");
        self.update_setting(&position_setting(watcher), |_| Ok((Some(value), ())))
    }

    fn delete_channel(&mut self, id: ChannelId) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM channels WHERE id = ?1", [id.to_string()])
            .map_err(sqlite_err(&self.path))?;
        Ok(())
    }

    /// Returns the channel `id`, if stored.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    fn channel(&self, id: ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT role, key_index, peer, state, closed, sale, funding_height FROM channels
                 WHERE id = ?1",
            )
            .map_err(sqlite_err(&self.path))?;
        let row = stmt
            .query_row([id.to_string()], row_fields)
            .optional()
            .map_err(sqlite_err(&self.path))?;
        row.map(|fields| record(&self.path, fields)).transpose()
    }

    /// Returns every channel, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT role, key_index, peer, state, closed, sale, funding_height FROM channels
                 ORDER BY rowid",
            )
            .map_err(sqlite_err(&self.path))?;
        let path: &Path = &self.path;
        let mut rows = stmt.query_map([], row_fields).map_err(sqlite_err(path))?;
        let mut records = Vec::new();
        loop {
            // Decoding a state (keys, the descriptor, the funding script) costs far more than
            // reading its row: spread over every core, a daemon with many channels starts that
            // much sooner. A chunk at a time, so that the rows' text is never all held at once.
            let chunk = rows.by_ref().take(DECODE_CHUNK).collect::<Result<Vec<_>, _>>();
            let chunk = chunk.map_err(sqlite_err(path))?;
            if chunk.is_empty() {
                return Ok(records);
            }
            let decoded: Vec<_> =
                chunk.into_par_iter().map(|fields| record(path, fields)).collect();
            for r in decoded {
                records.push(r?);
            }
        }
    }
}

/// Rows decoded together by [`SqliteStore::channels`].
const DECODE_CHUNK: usize = 1024;

type RowFields = (String, u32, Option<String>, String, Option<String>, Option<String>, Option<u32>);

fn row_fields(row: &rusqlite::Row<'_>) -> rusqlite::Result<RowFields> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
}

/// Reads a row into a record; `path` names the store in errors.
fn record(
    path: &Path,
    (role, key_index, peer, state, closed, sale, funding_height): RowFields,
) -> Result<ChannelRecord, StoreError> {
    let state = ChannelState::decode(&role, &state)
        .map_err(|e| StoreError::Corrupt { location: location(path), reason: e.to_string() })?;
    let closed = column(path, "closing transaction", closed)?;
    let service = column(path, "service record", sale)?;
    Ok(ChannelRecord { key_index, peer, state, closed, funding_height, service })
}

/// Parses an optional JSON column.
fn column<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    json: Option<String>,
) -> Result<Option<T>, StoreError> {
    json.map(|j| serde_json::from_str(&j)).transpose().map_err(|e| StoreError::Corrupt {
        location: location(path),
        reason: format!("{what}: {e}"),
    })
}

/// The setting that holds watcher `watcher`'s chain position.
fn position_setting(watcher: &str) -> String {
    format!("chain_position.{watcher}")
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Backend { location: location(path), source: Box::new(source) }
}

fn location(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keeps_the_contract_of_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        paychan_testkit::store::check_contract(|name| {
            SqliteStore::open(&dir.path().join(format!("{name}.sqlite"))).unwrap()
        });
    }

    #[test]
    fn a_newer_schema_is_refused_and_wal_and_full_sync_are_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let store = SqliteStore::open(&path).unwrap();
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
        let err = SqliteStore::open(&path).err().expect("newer schema refused");
        assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }), "{err}");
    }
}
