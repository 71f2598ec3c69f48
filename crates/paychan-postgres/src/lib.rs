//! paychan's channel store on PostgreSQL: [`PgStore`] implements [`paychan::store::Store`], for
//! a payee whose front ends share one database (`serve --store postgres://...`).
//!
//! It keeps the SQLite store's contract: every change is one transaction, committed (the
//! server's WAL flushed, `synchronous_commit` on) before the call returns, so nothing
//! acknowledged is lost to a crash of the front end or of the server. The schema carries its
//! version in `paychan_schema` and is brought up to date by numbered migrations when the store
//! connects, under an advisory lock so that front ends starting together migrate once; a
//! database from a newer build is refused.
//!
//! Connections come from an `r2d2` pool over the `postgres` client. The `postgres` client is
//! blocking: call the store from a thread that may block (the daemon's store writer, or through
//! `tokio::task::block_in_place`), as any [`Store`].
//!
//! Each channel row carries a `version`, bumped by every save: [`Store::save_channels_if`]
//! saves only where the row is still at the version the caller read, so that a front end whose
//! copy of a channel is stale never overwrites a newer state.
#![warn(missing_docs)]

use std::time::Duration;

use bitcoin::Network;
use postgres::{NoTls, Row};
use r2d2_postgres::PostgresConnectionManager;
use serde_json::Value;

use paychan::closing::Closure;
use paychan::store::{
    network_setting, next_key_index, ChannelRecord, ChannelState, Lease, RowVersion, Store,
    StoreError,
};
use paychan::watch::BlockId;
use paychan::wire::ChannelId;

/// The schema, one migration per version: migration `i` takes it from version `i` to `i + 1`.
/// Append only.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE channels (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('payer', 'payee')),
        key_index BIGINT NOT NULL UNIQUE,
        peer TEXT,
        state TEXT NOT NULL,
        closed TEXT,
        sale TEXT,
        funding_height BIGINT,
        version BIGINT NOT NULL DEFAULT 1,
        created BIGINT NOT NULL,
        updated BIGINT NOT NULL,
        seq BIGSERIAL
    );
"];

/// The advisory lock key migrations run under ("paychan" in ASCII).
const MIGRATION_LOCK: i64 = 0x7061_7963_6861_6e00;

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// The PostgreSQL store. See the [crate docs](crate).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: postgres::Config,
    location: String,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`) with a
    /// pool of up to `pool_size` connections, and migrates it to the current schema.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if it cannot connect within 10 s, [`StoreError::NewerSchema`].
    pub fn connect(url: &str, pool_size: u32) -> Result<PgStore, StoreError> {
        let location = redacted(url);
        let backend = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Backend {
            location: location.clone(),
            source: e,
        };
        let config: postgres::Config = url.parse().map_err(|e| backend(Box::new(e)))?;
        let manager = PostgresConnectionManager::new(config.clone(), NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| backend(Box::new(e)))?;
        let store = PgStore { pool, config, location };
        store.migrate()?;
        Ok(store)
    }

    /// Where the store is: its URL without a password.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, StoreError> {
        self.pool.get().map_err(|e| self.backend(e))
    }

    fn backend(&self, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend { location: self.location.clone(), source: Box::new(e) }
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt { location: self.location.clone(), reason }
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.backend(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| self.backend(e))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS paychan_schema (version INTEGER NOT NULL)")
            .map_err(|e| self.backend(e))?;
        let row =
            tx.query_opt("SELECT version FROM paychan_schema", &[]).map_err(|e| self.backend(e))?;
        let version = row.map_or(0, |r| r.get::<_, i32>(0)) as u32;
        let supported = MIGRATIONS.len() as u32;
        if version > supported {
            let location = self.location.clone();
            return Err(StoreError::NewerSchema { location, found: version, supported });
        }
        for migration in &MIGRATIONS[version as usize..] {
            tx.batch_execute(migration).map_err(|e| self.backend(e))?;
        }
        tx.execute("DELETE FROM paychan_schema", &[]).map_err(|e| self.backend(e))?;
        tx.execute("INSERT INTO paychan_schema (version) VALUES ($1)", &[&(supported as i32)])
            .map_err(|e| self.backend(e))?;
        tx.commit().map_err(|e| self.backend(e))
    }

    /// Reads setting `name` and, in the same transaction with its row locked, writes what
    /// `update` returns for it (`None`: leave it).
    fn update_setting<T>(
        &self,
        name: &str,
        update: impl FnOnce(Option<String>) -> Result<(Option<String>, T), StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.backend(e))?;
        // The row exists before it is locked, so that two front ends serialize on it.
        tx.execute(
            "INSERT INTO settings (name, value) VALUES ($1, '') ON CONFLICT (name) DO NOTHING",
            &[&name],
        )
        .map_err(|e| self.backend(e))?;
        let stored: String = tx
            .query_one("SELECT value FROM settings WHERE name = $1 FOR UPDATE", &[&name])
            .map_err(|e| self.backend(e))?
            .get(0);
        let (write, result) = update(Some(stored).filter(|s| !s.is_empty()))?;
        if let Some(value) = write {
            tx.execute("UPDATE settings SET value = $2 WHERE name = $1", &[&name, &value])
                .map_err(|e| self.backend(e))?;
        }
        tx.commit().map_err(|e| self.backend(e))?;
        Ok(result)
    }

    fn save_if(
        &self,
        records: &[(ChannelRecord, Option<RowVersion>)],
    ) -> Result<Vec<Option<RowVersion>>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.backend(e))?;
        let insert = tx
            .prepare(
                "INSERT INTO channels (id, role, key_index, peer, state, closed, sale,
                     funding_height, created, updated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING version",
            )
            .map_err(|e| self.backend(e))?;
        let update = tx
            .prepare(
                "UPDATE channels SET state = $2, peer = $3, updated = $4,
                     closed = COALESCE($5, closed), sale = $6, version = version + 1
                 WHERE id = $1 AND role = $7 AND version = $8
                 RETURNING version",
            )
            .map_err(|e| self.backend(e))?;
        let mut versions = Vec::with_capacity(records.len());
        for (r, expected) in records {
            let f = Fields::of(r);
            let row = match expected {
                None => tx.query_opt(
                    &insert,
                    &[
                        &f.id, &f.role, &f.key, &r.peer, &f.state, &f.closed, &f.sale, &f.height,
                        &f.now,
                    ],
                ),
                Some(v) => tx.query_opt(
                    &update,
                    &[&f.id, &f.state, &r.peer, &f.now, &f.closed, &f.sale, &f.role, v],
                ),
            }
            .map_err(|e| self.backend(e))?;
            versions.push(row.map(|row| row.get::<_, i64>(0)));
        }
        tx.commit().map_err(|e| self.backend(e))?;
        Ok(versions)
    }

    fn read_one(&self, id: ChannelId) -> Result<Option<(ChannelRecord, RowVersion)>, StoreError> {
        let mut conn = self.conn()?;
        let row = conn
            .query_opt(&format!("{SELECT} WHERE id = $1"), &[&id.to_string()])
            .map_err(|e| self.backend(e))?;
        row.map(|row| self.versioned(&row)).transpose()
    }

    fn read_all(&self) -> Result<Vec<(ChannelRecord, RowVersion)>, StoreError> {
        let mut conn = self.conn()?;
        let rows =
            conn.query(&format!("{SELECT} ORDER BY seq"), &[]).map_err(|e| self.backend(e))?;
        rows.iter().map(|row| self.versioned(row)).collect()
    }

    fn versioned(&self, row: &Row) -> Result<(ChannelRecord, RowVersion), StoreError> {
        let (role, state): (String, String) = (row.get("role"), row.get("state"));
        let state = ChannelState::decode(&role, &state).map_err(|e| self.corrupt(e.to_string()))?;
        let key_index = u32::try_from(row.get::<_, i64>("key_index"))
            .map_err(|e| self.corrupt(format!("key index: {e}")))?;
        let funding_height = row
            .get::<_, Option<i64>>("funding_height")
            .map(u32::try_from)
            .transpose()
            .map_err(|e| self.corrupt(format!("funding height: {e}")))?;
        let record = ChannelRecord {
            key_index,
            peer: row.get("peer"),
            state,
            closed: self.column("closing transaction", row.get("closed"))?,
            funding_height,
            service: self.column("service record", row.get("sale"))?,
        };
        Ok((record, row.get("version")))
    }

    fn column<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        json: Option<String>,
    ) -> Result<Option<T>, StoreError> {
        json.map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| self.corrupt(format!("{what}: {e}")))
    }

    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        conn.execute(sql, params).map_err(|e| self.backend(e))
    }
}

/// The columns every read takes.
const SELECT: &str = "SELECT role, key_index, peer, state, closed, sale, funding_height, version
    FROM channels";

/// A record's columns, as written.
struct Fields {
    id: String,
    role: &'static str,
    key: i64,
    state: String,
    closed: Option<String>,
    sale: Option<String>,
    height: Option<i64>,
    now: i64,
}

impl Fields {
    fn of(r: &ChannelRecord) -> Fields {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Fields {
            id: r.state.channel_id().to_string(),
            role: r.state.role(),
            key: i64::from(r.key_index),
            state: r.state.encode(),
            closed: r.closed.as_ref().map(|c| {
                serde_json::to_string(c).expect("a closure holds only JSON-representable values")
            }),
            sale: r.service.as_ref().map(Value::to_string),
            height: r.funding_height.map(i64::from),
            now,
        }
    }
}

impl Store for PgStore {
    fn check_network(&mut self, network: Network) -> Result<(), StoreError> {
        self.update_setting("network", |stored| {
            Ok((network_setting(stored.as_deref(), network, &self.location)?, ()))
        })
    }

    /// Hands out the next channel key index, durably and once across every front end: the
    /// counter's row is locked while it is bumped.
    fn reserve_key_index(&mut self) -> Result<u32, StoreError> {
        self.update_setting("next_key_index", |next| {
            let (index, bumped) = next_key_index(next.as_deref()).map_err(|r| self.corrupt(r))?;
            Ok((Some(bumped), index))
        })
    }

    /// Saves several channels in one transaction (one commit for all), whatever their rows'
    /// versions: [`Store::save_channels_if`] is the compare-and-swap.
    fn save_channels(&mut self, records: &[ChannelRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.backend(e))?;
        let stmt = tx
            .prepare(
                "INSERT INTO channels (id, role, key_index, peer, state, closed, sale,
                     funding_height, created, updated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                     peer = excluded.peer, updated = excluded.updated,
                     closed = COALESCE(excluded.closed, channels.closed), sale = excluded.sale,
                     version = channels.version + 1
                 WHERE channels.role = excluded.role",
            )
            .map_err(|e| self.backend(e))?;
        for r in records {
            let f = Fields::of(r);
            let saved = tx
                .execute(
                    &stmt,
                    &[
                        &f.id, &f.role, &f.key, &r.peer, &f.state, &f.closed, &f.sale, &f.height,
                        &f.now,
                    ],
                )
                .map_err(|e| self.backend(e))?;
            // The update skipped: the id is the other role's. The whole batch rolls back.
            if saved == 0 {
                let other = if f.role == "payer" { "payee" } else { "payer" };
                return Err(StoreError::IdInUse { id: r.state.channel_id(), role: other });
            }
        }
        tx.commit().map_err(|e| self.backend(e))
    }

    fn record_closure(&mut self, id: ChannelId, closure: &Closure) -> Result<(), StoreError> {
        let closed =
            serde_json::to_string(closure).expect("a closure holds only JSON-representable values");
        self.execute("UPDATE channels SET closed = $2 WHERE id = $1", &[&id.to_string(), &closed])?;
        Ok(())
    }

    fn forget_closure(&mut self, id: ChannelId) -> Result<(), StoreError> {
        self.execute("UPDATE channels SET closed = NULL WHERE id = $1", &[&id.to_string()])?;
        Ok(())
    }

    fn record_funding_height(
        &mut self,
        id: ChannelId,
        height: Option<u32>,
    ) -> Result<(), StoreError> {
        let height = height.map(i64::from);
        self.execute(
            "UPDATE channels SET funding_height = $2 WHERE id = $1",
            &[&id.to_string(), &height],
        )?;
        Ok(())
    }

    fn chain_position(&self, watcher: &str) -> Result<Vec<BlockId>, StoreError> {
        let mut conn = self.conn()?;
        let row = conn
            .query_opt("SELECT value FROM settings WHERE name = $1", &[&position_setting(watcher)])
            .map_err(|e| self.backend(e))?;
        let stored = row.map(|r| r.get::<_, String>(0)).filter(|s| !s.is_empty());
        Ok(self.column("chain position", stored)?.unwrap_or_default())
    }

    fn save_chain_position(&mut self, watcher: &str, blocks: &[BlockId]) -> Result<(), StoreError> {
        let value = serde_json::to_string(blocks).expect("block ids are JSON-representable");
        self.execute(
            "INSERT INTO settings (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            &[&position_setting(watcher), &value],
        )?;
        Ok(())
    }

    fn delete_channel(&mut self, id: ChannelId) -> Result<(), StoreError> {
        self.execute("DELETE FROM channels WHERE id = $1", &[&id.to_string()])?;
        Ok(())
    }

    fn channel(&self, id: ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        Ok(self.read_one(id)?.map(|(r, _)| r))
    }

    fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        Ok(self.read_all()?.into_iter().map(|(r, _)| r).collect())
    }

    /// Several front ends write it.
    fn shared(&self) -> bool {
        true
    }

    fn save_channels_if(
        &mut self,
        records: &[(ChannelRecord, Option<RowVersion>)],
    ) -> Result<Vec<Option<RowVersion>>, StoreError> {
        self.save_if(records)
    }

    fn channel_versioned(
        &self,
        id: ChannelId,
    ) -> Result<Option<(ChannelRecord, RowVersion)>, StoreError> {
        self.read_one(id)
    }

    fn channels_versioned(&self) -> Result<Vec<(ChannelRecord, RowVersion)>, StoreError> {
        self.read_all()
    }

    /// A session-level advisory lock on a connection of its own, outside the pool, held by a
    /// thread of its own until the lease is dropped. If the process dies, its connection closes
    /// and the server releases the lock at once.
    fn try_lead(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let key = lease_key(name);
        let config = self.config.clone();
        let (granted, answer) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("lease-{name}"))
            .spawn(move || {
                let mut client = match config.connect(NoTls) {
                    Ok(client) => client,
                    Err(e) => return drop(granted.send(Err(e))),
                };
                let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]);
                let held = row.map(|r| r.get::<_, bool>(0));
                let holding = matches!(held, Ok(true));
                let _ = granted.send(held);
                if holding {
                    // Until the lease is dropped (its sender with it).
                    let _ = released.recv();
                }
            })
            .map_err(|e| self.backend(e))?;
        let held = answer.recv().map_err(|e| self.backend(e))?.map_err(|e| self.backend(e))?;
        Ok(held.then(|| Box::new(release) as Lease))
    }
}

/// The advisory lock key of lease `name`: its SHA-256's first 8 bytes, as a bigint.
fn lease_key(name: &str) -> i64 {
    use bitcoin::hashes::{sha256, Hash};
    let hash = sha256::Hash::hash(format!("paychan lease {name}").as_bytes());
    i64::from_be_bytes(hash.to_byte_array()[..8].try_into().expect("8 bytes"))
}

/// The setting that holds watcher `watcher`'s chain position.
fn position_setting(watcher: &str) -> String {
    format!("chain_position.{watcher}")
}

/// `url` without its password, to name the store in errors and logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paychan_testkit::postgres::PgServer;
    use paychan_testkit::store::payer_record;

    #[test]
    fn the_store_keeps_the_contract_of_the_trait_and_saves_only_over_the_version_read() {
        let server = PgServer::start();
        paychan_testkit::store::check_contract(|name| {
            PgStore::connect(&server.database(&name.to_ascii_lowercase()), 4).unwrap()
        });

        // Compare-and-swap: two front ends read version 1; the first save wins, the second
        // writes nothing, and reads the newer state back.
        let url = server.database("versions");
        let mut a = PgStore::connect(&url, 2).unwrap();
        let mut b = PgStore::connect(&url, 2).unwrap();
        let record = payer_record(7);
        assert_eq!(a.save_channels_if(&[(record.clone(), None)]).unwrap(), vec![Some(1)]);
        assert_eq!(b.save_channels_if(&[(record.clone(), None)]).unwrap(), vec![None], "exists");
        let read = b.channel_versioned(record.state.channel_id()).unwrap().unwrap();
        assert_eq!(read, (record.clone(), 1));
        let mut newer = record.clone();
        newer.peer = Some("newer".into());
        assert_eq!(a.save_channels_if(&[(newer.clone(), Some(1))]).unwrap(), vec![Some(2)]);
        let mut stale = record.clone();
        stale.peer = Some("stale".into());
        assert_eq!(b.save_channels_if(&[(stale, Some(1))]).unwrap(), vec![None]);
        let (read, version) = b.channel_versioned(record.state.channel_id()).unwrap().unwrap();
        assert_eq!((read.peer.as_deref(), version), (Some("newer"), 2));
    }

    #[test]
    fn one_front_end_leads_at_a_time_and_another_takes_over_when_it_lets_go() {
        let server = PgServer::start();
        let url = server.database("leases");
        let (a, b) = (PgStore::connect(&url, 1).unwrap(), PgStore::connect(&url, 1).unwrap());
        let lease = a.try_lead("watcher").unwrap().expect("the first one leads");
        assert!(b.try_lead("watcher").unwrap().is_none(), "not two at once");
        assert!(b.try_lead("other").unwrap().is_some(), "leases are per name");
        drop(lease);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while b.try_lead("watcher").unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "the lease was let go");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_newer_schema_is_refused_and_passwords_stay_out_of_messages() {
        let server = PgServer::start();
        let url = server.database("schema");
        let store = PgStore::connect(&url, 1).unwrap();
        store.execute("UPDATE paychan_schema SET version = 99", &[]).unwrap();
        let err = PgStore::connect(&url, 1).err().expect("newer schema refused");
        assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }), "{err}");
        assert_eq!(redacted("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redacted("postgres://u@h/db"), "postgres://u@h/db");
    }
}
