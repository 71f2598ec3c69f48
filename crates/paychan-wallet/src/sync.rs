//! Following the chain: the blocks the wallet has not seen, each read once.

use bdk_wallet::chain::BlockId as BdkBlockId;
use bdk_wallet::rusqlite::{self, Connection, OptionalExtension};

use paychan::chain::Chain;
use paychan::watch::{follow, BlockEvent, BlockFollower, BlockId, BlockSource};

use crate::{db_err, Loaded, Wallet, WalletError};

/// Blocks applied and persisted together.
const BLOCKS_PER_BATCH: usize = 500;

/// The table that says where a new wallet's first sync starts, a row until it has happened:
/// `birthday` is the time its seed was made (Unix seconds), `NULL` to start at genesis.
const START_TABLE: &str = "paychan_wallet_start";

/// How far before its seed's time a block may be stamped: a block's time may run up to two
/// hours ahead of the clock (consensus), and several behind.
const CLOCK_SLACK_SECS: u64 = 2 * 60 * 60;

/// Blocks before the one found by time where the first sync starts: block times are not in
/// order (each need only pass the median of the 11 before it), a day of blocks covers that.
const START_MARGIN: u32 = 144;

/// What [`Wallet::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// The height of the wallet's tip, now the node's best block.
    pub tip: u32,
    /// Blocks connected.
    pub connected: usize,
    /// Blocks disconnected (a reorganization).
    pub disconnected: usize,
}

/// Records where the first sync of a wallet just created starts: near `birthday` for a fresh
/// seed, at genesis (`None`) for a seed that was there before.
pub(crate) fn set_start(db: &Connection, birthday: Option<u64>) -> rusqlite::Result<()> {
    db.execute(&format!("CREATE TABLE IF NOT EXISTS {START_TABLE} (birthday INTEGER)"), [])?;
    db.execute(&format!("DELETE FROM {START_TABLE}"), [])?;
    db.execute(&format!("INSERT INTO {START_TABLE} (birthday) VALUES (?1)"), [birthday])?;
    Ok(())
}

/// Returns the start recorded by [`set_start`], if the first sync has not happened yet.
fn start(db: &Connection) -> rusqlite::Result<Option<Option<u64>>> {
    let exists: bool = db.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [START_TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    db.query_row(&format!("SELECT birthday FROM {START_TABLE}"), [], |r| r.get(0)).optional()
}

/// Returns a height below every block that can pay a seed made at `birthday`: a binary search
/// over block times (about 2 log2(tip) node calls), then [`START_MARGIN`] blocks back.
fn height_before(chain: &(impl Chain + BlockSource), birthday: u64) -> Result<u32, WalletError> {
    let before = birthday.saturating_sub(CLOCK_SLACK_SECS);
    let time = |height: u32| -> Result<u64, WalletError> {
        match chain.block_hash(height)? {
            Some(hash) => Ok(u64::from(chain.block(hash)?.header.time)),
            None => Ok(u64::MAX),
        }
    };
    // The highest height whose block is stamped before `before`, taking the times as ordered.
    let (mut low, mut high) = (0, chain.tip()?.height);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if time(middle)? < before {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    Ok(low.saturating_sub(START_MARGIN))
}

impl Wallet {
    /// Brings the wallet up to the node's best block: reads every block it has not seen, in
    /// order (three node calls per block, one if there is none), and keeps the transactions
    /// that pay or spend its addresses. A block the node no longer has in its best chain is
    /// replaced by the node's. What it learns is saved every [`BLOCKS_PER_BATCH`] blocks, so an
    /// interrupted sync goes on from there.
    ///
    /// # Errors
    /// [`WalletError::Chain`], [`WalletError::Follow`], [`WalletError::BlockDoesNotConnect`],
    /// [`WalletError::Database`].
    pub fn sync(&mut self, chain: &(impl Chain + BlockSource)) -> Result<Synced, WalletError> {
        let mut follower = self.follower(chain)?;
        let mut synced = Synced { tip: follower.tip().height, connected: 0, disconnected: 0 };
        loop {
            let mut next = follower.clone();
            let progress = follow(chain, &mut next, BLOCKS_PER_BATCH)?;
            for event in &progress.events {
                match event {
                    BlockEvent::Connected { id, block } => {
                        self.apply_block(block, id.height)?;
                        synced.connected += 1;
                    }
                    // The block that replaces it, at the same height, takes its place in BDK's
                    // chain and drops what it confirmed.
                    BlockEvent::Disconnected { .. } => synced.disconnected += 1,
                }
            }
            self.persist()?;
            follower = next;
            synced.tip = follower.tip().height;
            if progress.at_best {
                return Ok(synced);
            }
        }
    }

    /// Applies a block of the best chain at `height` (the daemon's watcher hands it the blocks
    /// it reads, so that both follow the chain with one read per block). Not saved until the
    /// next [`Wallet::sync`] or [`Wallet::save`].
    ///
    /// # Errors
    /// [`WalletError::BlockDoesNotConnect`] if the block's parent is not the wallet's block
    /// below it.
    pub fn apply_block(&mut self, block: &bitcoin::Block, height: u32) -> Result<(), WalletError> {
        let connected_to = match height.checked_sub(1) {
            Some(below) => BdkBlockId { height: below, hash: block.header.prev_blockhash },
            None => BdkBlockId { height, hash: block.block_hash() },
        };
        self.bdk()?
            .apply_block_connected_to(block, height, connected_to)
            .map_err(|e| WalletError::BlockDoesNotConnect { height, reason: e.to_string() })
    }

    /// Saves what the blocks applied since the last save taught the wallet.
    ///
    /// # Errors
    /// [`WalletError::Database`].
    pub fn save(&mut self) -> Result<(), WalletError> {
        self.persist()
    }

    /// Returns the height of the newest block the wallet has seen.
    ///
    /// # Errors
    /// Those of loading the wallet from the database.
    pub fn synced_height(&mut self) -> Result<u32, WalletError> {
        Ok(self.bdk()?.latest_checkpoint().height())
    }

    /// The follower that resumes where the wallet's chain ends, starting a new wallet where
    /// [`set_start`] said.
    fn follower(
        &mut self,
        chain: &(impl Chain + BlockSource),
    ) -> Result<BlockFollower, WalletError> {
        let db_path = self.db_path.clone();
        let Loaded { bdk, db } = self.load(None)?;
        if let Some(birthday) = start(db).map_err(db_err(&db_path))? {
            let height = match birthday {
                Some(birthday) => height_before(chain, birthday)?,
                None => 0,
            };
            if let Some(hash) = chain.block_hash(height)?.filter(|_| height > 0) {
                // Start there, as if every block below had been seen: none pays this seed.
                let block = chain.block(hash)?;
                // Hung from the genesis block, the only one a new wallet's chain holds.
                let genesis = bdk.latest_checkpoint().block_id();
                bdk.apply_block_connected_to(&block, height, genesis).map_err(|e| {
                    WalletError::BlockDoesNotConnect { height, reason: e.to_string() }
                })?;
            }
            // The start and the wallet's first block are saved together.
            let tx = db.transaction().map_err(db_err(&db_path))?;
            tx.execute(&format!("DROP TABLE {START_TABLE}"), []).map_err(db_err(&db_path))?;
            if let Some(changeset) = bdk.staged() {
                changeset.persist_to_sqlite(&tx).map_err(db_err(&db_path))?;
            }
            tx.commit().map_err(db_err(&db_path))?;
            let _ = bdk.take_staged();
        }
        let mut blocks: Vec<BlockId> = bdk
            .checkpoints()
            .take(BlockFollower::KEEP)
            .map(|cp| BlockId { height: cp.height(), hash: cp.hash() })
            .collect();
        blocks.reverse();
        // A BDK chain holds at least its genesis block.
        let genesis = || {
            let hash = bitcoin::constants::genesis_block(self.network).block_hash();
            BlockFollower::new(BlockId { height: 0, hash })
        };
        Ok(BlockFollower::resume(&blocks).unwrap_or_else(genesis))
    }
}
