//! The on-chain wallet: paychan's own keys in a [BDK] descriptor wallet, no wallet in the node.
//!
//! This crate is an adapter beside the core: it keeps its seed in the data directory, its state
//! in the data directory's database, and learns of its coins by following blocks from any
//! [`BlockSource`] (the `paychan-bitcoind` crate in the command line).
//!
//! A BIP32 seed lives in the data directory (`wallet.seed`, file mode 0600). Coins are received
//! on `wpkh` addresses of the [BIP 84] account `m/84'/coin'/0'` (receive branch `/0/*`, change
//! branch `/1/*`). BDK holds the addresses handed out, the wallet's transactions and the blocks
//! it has seen, in its own tables of the database ([`Wallet::open`]).
//!
//! [`Wallet::sync`] reads the blocks the wallet has not seen, each once, and keeps the
//! transactions that pay or spend its addresses. Where it starts:
//! - a wallet made with a fresh seed starts a day of blocks before the first block stamped two
//!   hours before the seed was made: no coin can pay a seed that did not exist, and the margins
//!   cover block times that run ahead or out of order;
//! - a seed that was there before the database held a wallet (a data directory of the previous
//!   release, which found its coins with `scantxoutset`, or a seed restored from a backup)
//!   starts at the genesis block, so every coin is found. The previous release's address
//!   indexes (`wallet.json`) are taken over.
//!
//! BDK's wallet is loaded from the database at its first use: a command that only signs (`pay`)
//! derives the channel key from the seed and never loads it.
//!
//! Spendable coins are confirmed and mature (a coinbase output after 100 blocks); those a
//! transaction in the node's mempool already spends are left out ([`Wallet::coins`]).
//!
//! The same seed gives the node's identity key (`m/1017'/coin'/0'`, which the payee proves in the
//! handshake) and a fresh key per channel (`m/1017'/coin'/1'/i'`, hardened so that a leaked
//! channel key reveals no other).
//!
//! [`Wallet::fund`] selects coins with BDK (branch and bound), adds change when it is not dust,
//! and signs a funding transaction from native segwit inputs only, that signals no
//! replace-by-fee: every input has sequence `0xffffffff`.
//!
//! [BDK]: https://bitcoindevkit.org
//! [BIP 84]: https://github.com/bitcoin/bips/blob/master/bip-0084.mediawiki
#![warn(missing_docs)]

mod bump;
mod error;
mod seed;
mod spend;
mod sync;

pub use bump::Bump;
pub use error::WalletError;
pub use spend::Coin;
pub use sync::Synced;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use bdk_wallet::rusqlite::Connection;
use bdk_wallet::{KeychainKind, PersistedWallet};
use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv, Xpub};
use bitcoin::secp256k1::{All, Secp256k1, SecretKey};
use bitcoin::{Address, Amount, CompressedPublicKey, Network};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};

use paychan::keys::ChannelSigner;
#[cfg(doc)]
use paychan::watch::BlockSource;

/// The seed file's name in the data directory.
pub const SEED_FILE: &str = "wallet.seed";
/// The previous release's index file in the data directory, read once when its wallet moves
/// into the database.
pub const INDEX_FILE: &str = "wallet.json";
/// How many addresses past the last one handed out are watched on each branch.
pub const LOOKAHEAD: u32 = 100;
/// What the wallet keeps beside its channels, to bump a close by CPFP when fees rise: a child
/// and its parent of about 350 vB together at 50 sat/vB. `open` refuses a capacity the balance
/// less this does not cover; the funding's fee comes out of it, and its change is spendable
/// once confirmed.
pub const FEE_RESERVE: Amount = Amount::from_sat(20_000);
/// Confirmations a coinbase output needs before it can be spent (consensus).
pub const COINBASE_MATURITY: u32 = 100;
/// The largest index an address may have: non-hardened indexes end at 2^31, and the wallet
/// watches [`LOOKAHEAD`] further.
const MAX_INDEX: u32 = (1 << 31) - LOOKAHEAD - 1;

/// The branch of the account an address is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// Addresses handed out to receive coins (`/0/*`).
    Receive,
    /// Change of the wallet's own transactions (`/1/*`).
    Change,
}

impl Branch {
    fn child(self) -> ChildNumber {
        ChildNumber::Normal {
            index: match self {
                Branch::Receive => 0,
                Branch::Change => 1,
            },
        }
    }

    fn of(keychain: KeychainKind) -> Branch {
        match keychain {
            KeychainKind::External => Branch::Receive,
            KeychainKind::Internal => Branch::Change,
        }
    }
}

/// The on-chain wallet. See the [module docs](self).
pub struct Wallet {
    secp: Secp256k1<All>,
    network: Network,
    /// The seed's master key: it signs the wallet's inputs, found by the key origins BDK
    /// writes into each PSBT input.
    master: Xpriv,
    /// `m/1017'/coin'`, the parent of the node key.
    keys: Xpriv,
    channel_keys: ChannelKeys,
    /// The account key `m/84'/coin'/0'`, public.
    account: Xpub,
    /// The ranged public descriptors of the receive and change branches, and their text.
    descriptors: [Descriptor<DescriptorPublicKey>; 2],
    texts: [String; 2],
    /// The BDK wallet, once loaded ([`Wallet::load`]).
    loaded: Option<Loaded>,
    db_path: PathBuf,
    legacy_index: PathBuf,
}

/// The BDK wallet and its database connection.
struct Loaded {
    bdk: PersistedWallet<Connection>,
    db: Connection,
}

impl Wallet {
    /// Opens the wallet whose seed is in `dir` and whose state is in the SQLite database at
    /// `database` (the data directory's; BDK's tables sit beside the channel store's). A fresh
    /// random seed (mode 0600) is made if there is none, and a wallet in the database if there
    /// is none.
    ///
    /// # Errors
    /// [`WalletError::Io`], [`WalletError::Corrupt`], [`WalletError::InsecureSeedFile`],
    /// [`WalletError::Database`], or [`WalletError::Mismatch`] for a database that holds the
    /// wallet of another seed or network.
    pub fn open(dir: &Path, database: &Path, network: Network) -> Result<Wallet, WalletError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let seed_path = dir.join(SEED_FILE);
        let (seed, fresh) = match seed::read_seed(&seed_path)? {
            Some(seed) => (seed, false),
            None => (seed::create_seed(&seed_path)?, true),
        };
        let mut wallet = Wallet::from_seed(&seed, network, database, &dir.join(INDEX_FILE))?;
        if fresh {
            // Made now, with the seed: its first sync starts by the seed's time. A seed found
            // without a wallet in the database is older, and followed from genesis.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            wallet.load(Some(now.map_or(0, |d| d.as_secs())))?;
        }
        Ok(wallet)
    }

    fn from_seed(
        seed: &[u8],
        network: Network,
        db_path: &Path,
        legacy_index: &Path,
    ) -> Result<Wallet, WalletError> {
        let secp = Secp256k1::new();
        let master = Xpriv::new_master(network, seed)?;
        let coin_type = if network == Network::Bitcoin { 0 } else { 1 };
        let account_path = DerivationPath::from_str(&format!("m/84'/{coin_type}'/0'"))?;
        let account = Xpub::from_priv(&secp, &master.derive_priv(&secp, &account_path)?);
        let origin = format!("{}/84'/{coin_type}'/0'", master.fingerprint(&secp));
        // Public descriptors: BDK never holds a private key; the wallet signs with its seed.
        let descriptor = |branch: u32| format!("wpkh([{origin}]{account}/{branch}/*)");
        let texts = [descriptor(0), descriptor(1)];
        let descriptors = [Descriptor::from_str(&texts[0])?, Descriptor::from_str(&texts[1])?];
        let keys = master
            .derive_priv(&secp, &DerivationPath::from_str(&format!("m/1017'/{coin_type}'"))?)?;
        let parent = keys.derive_priv(&secp, &[ChildNumber::from_hardened_idx(1)?])?;
        let channel_keys = ChannelKeys { secp: secp.clone(), parent };
        Ok(Wallet {
            secp,
            network,
            master,
            account,
            keys,
            channel_keys,
            descriptors,
            texts,
            loaded: None,
            db_path: db_path.to_owned(),
            legacy_index: legacy_index.to_owned(),
        })
    }

    /// The BDK wallet, loaded from the database at its first use (the commands that only sign,
    /// such as `pay`, never load it: deriving its addresses is most of a start), created there
    /// if the database has none. `birthday` is for a wallet made with a fresh seed.
    fn load(&mut self, birthday: Option<u64>) -> Result<&mut Loaded, WalletError> {
        if let Some(loaded) = self.loaded.take() {
            return Ok(self.loaded.insert(loaded));
        }
        let db_path = &self.db_path;
        let mut db = Connection::open(db_path).map_err(db_err(db_path))?;
        let [receive, change] = self.texts.clone();
        let load = |db: &mut Connection| {
            bdk_wallet::Wallet::load()
                .descriptor(KeychainKind::External, Some(receive.clone()))
                .descriptor(KeychainKind::Internal, Some(change.clone()))
                .check_network(self.network)
                .lookahead(LOOKAHEAD)
                .load_wallet(db)
                .map_err(|e| WalletError::Mismatch(e.to_string()))
        };
        let mut bdk = match load(&mut db)? {
            Some(bdk) => bdk,
            None => {
                self.create(&mut db, birthday)?;
                let missing =
                    || WalletError::Mismatch("the wallet just saved does not load".into());
                load(&mut db)?.ok_or_else(missing)?
            }
        };
        // BDK keeps in memory only that a change address went into a transaction not yet
        // confirmed: every change address handed out is taken, so none is reused.
        for index in 0..bdk.next_derivation_index(KeychainKind::Internal) {
            bdk.mark_used(KeychainKind::Internal, index);
        }
        Ok(self.loaded.insert(Loaded { bdk, db }))
    }

    /// Forgets what was loaded from the database, so that the next use reads it again: another
    /// process may have changed it (a `watch` runs next to `open`).
    pub fn reload(&mut self) {
        self.loaded = None;
    }

    /// Saves a new wallet in `db`: the descriptors, the previous release's address indexes
    /// (`wallet.json`, read before anything is written, so that a corrupt file changes nothing)
    /// and where its first sync starts, in one transaction, so that a crash leaves all of it or
    /// none.
    fn create(&self, db: &mut Connection, birthday: Option<u64>) -> Result<(), WalletError> {
        let legacy = seed::read_legacy_index(&self.legacy_index)?;
        let [receive, change] = self.texts.clone();
        let mut bdk = bdk_wallet::Wallet::create(receive, change)
            .network(self.network)
            .lookahead(LOOKAHEAD)
            .create_wallet_no_persist()
            .map_err(|e| WalletError::Mismatch(e.to_string()))?;
        // The previous release handed out indexes below its next ones.
        for (keychain, next) in
            [(KeychainKind::External, legacy.receive), (KeychainKind::Internal, legacy.change)]
        {
            if let Some(last) = next.checked_sub(1) {
                let _ = bdk.reveal_addresses_to(keychain, last);
            }
        }
        let db_err = db_err(&self.db_path);
        let tx = db.transaction().map_err(&db_err)?;
        bdk_wallet::ChangeSet::init_sqlite_tables(&tx).map_err(&db_err)?;
        if let Some(changeset) = bdk.take_staged() {
            changeset.persist_to_sqlite(&tx).map_err(&db_err)?;
        }
        sync::set_start(&tx, birthday).map_err(&db_err)?;
        tx.commit().map_err(&db_err)
    }

    /// The BDK wallet, loaded if it was not.
    fn bdk(&mut self) -> Result<&mut PersistedWallet<Connection>, WalletError> {
        Ok(&mut self.load(None)?.bdk)
    }

    /// Returns the wallet's network.
    pub fn network(&self) -> Network {
        self.network
    }

    /// Returns the node's identity key, `m/1017'/coin'/0'`.
    ///
    /// # Errors
    /// [`WalletError::Derivation`] (practically never: a derived key out of range).
    pub fn node_secret(&self) -> Result<SecretKey, WalletError> {
        let path = [ChildNumber::from_hardened_idx(0)?];
        Ok(self.keys.derive_priv(&self.secp, &path)?.private_key)
    }

    /// Returns the signer of channel number `index`, `m/1017'/coin'/1'/index'`. Each channel
    /// must get its own index (the store hands them out).
    ///
    /// # Errors
    /// [`WalletError::Derivation`] for an index of 2^31 or more.
    pub fn channel_signer(&self, index: u32) -> Result<ChannelSigner, WalletError> {
        self.channel_keys.signer(index)
    }

    /// Returns the channel keys' parent, to derive channel signers on other threads (the
    /// wallet itself, with its database connection, stays on one).
    pub fn channel_keys(&self) -> &ChannelKeys {
        &self.channel_keys
    }

    /// Returns the ranged public descriptor of `branch`, `wpkh([fp/84'/1'/0']tpub.../0/*)`.
    pub fn descriptor(&self, branch: Branch) -> &Descriptor<DescriptorPublicKey> {
        match branch {
            Branch::Receive => &self.descriptors[0],
            Branch::Change => &self.descriptors[1],
        }
    }

    /// Returns the address at `index` on `branch`.
    ///
    /// # Errors
    /// [`WalletError::IndexesExhausted`] for an index beyond the last the wallet watches.
    pub fn address(&self, branch: Branch, index: u32) -> Result<Address, WalletError> {
        if index > MAX_INDEX {
            return Err(WalletError::IndexesExhausted { branch });
        }
        let path = [branch.child(), ChildNumber::from_normal_idx(index)?];
        let key = self.account.derive_pub(&self.secp, &path)?;
        Ok(Address::p2wpkh(&CompressedPublicKey(key.public_key), self.network))
    }

    /// Hands out the next unused receive address and remembers, durably, that it was handed out.
    ///
    /// # Errors
    /// [`WalletError::Database`] if that cannot be saved, [`WalletError::IndexesExhausted`].
    pub fn new_address(&mut self) -> Result<Address, WalletError> {
        let bdk = self.bdk()?;
        if bdk.next_derivation_index(KeychainKind::External) > MAX_INDEX {
            return Err(WalletError::IndexesExhausted { branch: Branch::Receive });
        }
        let address = bdk.reveal_next_address(KeychainKind::External).address;
        self.persist()?;
        Ok(address)
    }

    /// Writes what changed in the wallet to the database, in one transaction.
    fn persist(&mut self) -> Result<(), WalletError> {
        let db_path = self.db_path.clone();
        let loaded = self.load(None)?;
        loaded.bdk.persist(&mut loaded.db).map_err(db_err(&db_path))?;
        Ok(())
    }
}

/// The parent of the channel keys, `m/1017'/coin'/1'`, derived once (a daemon derives a
/// channel key for each of its channels at every start, on every core).
#[derive(Clone)]
pub struct ChannelKeys {
    secp: Secp256k1<All>,
    parent: Xpriv,
}

impl ChannelKeys {
    /// Returns the signer of channel number `index`, `m/1017'/coin'/1'/index'`.
    ///
    /// # Errors
    /// [`WalletError::Derivation`] for an index of 2^31 or more.
    pub fn signer(&self, index: u32) -> Result<ChannelSigner, WalletError> {
        let child = ChildNumber::from_hardened_idx(index)?;
        Ok(ChannelSigner::new(self.parent.derive_priv(&self.secp, &[child])?.private_key))
    }
}

impl std::fmt::Debug for ChannelKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelKeys(..)")
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> WalletError + '_ {
    move |source| WalletError::Io { path: path.to_owned(), source }
}

fn db_err(path: &Path) -> impl Fn(bdk_wallet::rusqlite::Error) -> WalletError + '_ {
    move |source| WalletError::Database { path: path.to_owned(), source }
}

#[cfg(test)]
mod tests;
