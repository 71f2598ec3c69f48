//! The payer's on-chain wallet: paychan's own keys, no wallet in the node.
//!
//! This crate is an adapter beside the core: it keeps its files in the data directory and finds
//! its coins through any [`Chain`] (the `paychan-bitcoind` crate in the command line).
//!
//! A BIP32 seed lives in the data directory (`wallet.seed`, file mode 0600). Coins are received
//! on `wpkh` addresses of the [BIP 84] account `m/84'/coin'/0'` (receive branch `/0/*`, change
//! branch `/1/*`) and found with the node's `scantxoutset`, which sees the confirmed UTXO set
//! only; coins that a transaction in the node's mempool already spends are left out. The next
//! unused index of each branch is kept in `wallet.json`.
//!
//! The same seed gives the node's identity key (`m/1017'/coin'/0'`, which the payee proves in the
//! handshake) and a fresh key per channel (`m/1017'/coin'/1'/i'`, hardened so that a leaked
//! channel key reveals no other).
//!
//! [`Wallet::fund`] selects coins (largest first), adds change when it is not dust, and signs a
//! funding transaction from native segwit inputs only ([`paychan::tx::build_funding`]).
//!
//! [BIP 84]: https://github.com/bitcoin/bips/blob/master/bip-0084.mediawiki
#![warn(missing_docs)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bitcoin::bip32::{self, ChildNumber, DerivationPath, Xpriv, Xpub};
use bitcoin::secp256k1::{rand::RngCore, All, Secp256k1, SecretKey};
use bitcoin::{Address, Amount, CompressedPublicKey, FeeRate, Network, ScriptBuf, Transaction};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use serde::{Deserialize, Serialize};

use paychan::chain::{Chain, ChainError, OutputStatus, Utxo};
use paychan::keys::ChannelSigner;
use paychan::tx::{build_funding, sign_p2wpkh_input, FundingInput, TxError};

/// The seed file's name in the data directory.
pub const SEED_FILE: &str = "wallet.seed";
/// The index file's name in the data directory.
pub const INDEX_FILE: &str = "wallet.json";
/// How many addresses past the next unused one are scanned on each branch.
pub const LOOKAHEAD: u32 = 100;
/// Confirmations a coinbase output needs before it can be spent (consensus).
pub const COINBASE_MATURITY: u32 = 100;
/// The largest next index a branch may reach: non-hardened indexes end at 2^31, and the scan
/// looks [`LOOKAHEAD`] further.
const MAX_INDEX: u32 = (1 << 31) - LOOKAHEAD - 1;

/// Errors from the wallet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletError {
    /// Reading or writing a wallet file failed.
    #[error("wallet file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A wallet file exists but cannot be read as one.
    #[error("wallet file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The seed file can be read by other users.
    #[error("seed file {path} has mode {mode:o}; it must be 600 (run: chmod 600 {path})")]
    InsecureSeedFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The spendable coins do not cover the amount and the fee.
    #[error(
        "insufficient funds: {} sat spendable, {} sat needed (amount plus fee)",
        available.to_sat(),
        needed.to_sat()
    )]
    InsufficientFunds {
        /// The coins considered, together.
        available: Amount,
        /// The amount plus the fee of spending them.
        needed: Amount,
    },
    /// A branch has used up its address indexes.
    #[error("no address index left on the {branch:?} branch")]
    IndexesExhausted {
        /// The branch.
        branch: Branch,
    },
    /// Deriving a key failed.
    #[error("key derivation failed: {0}")]
    Derivation(#[from] bip32::Error),
    /// The wallet's descriptor did not parse (a bug: it is built from the wallet's own key).
    #[error("wallet descriptor: {0}")]
    Descriptor(#[from] miniscript::Error),
    /// The chain backend failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Building or signing the transaction failed.
    #[error(transparent)]
    Tx(#[from] TxError),
}

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
}

/// The next unused index of each branch, persisted in [`INDEX_FILE`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct NextIndex {
    receive: u32,
    change: u32,
}

/// A coin of the wallet's, with where its key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    /// The output and where it is.
    pub utxo: Utxo,
    /// Its branch.
    pub branch: Branch,
    /// Its index on the branch.
    pub index: u32,
}

/// The payer's on-chain wallet. See the [module docs](self).
pub struct Wallet {
    secp: Secp256k1<All>,
    network: Network,
    /// The account key `m/84'/coin'/0'`.
    account: Xpriv,
    /// Its public half.
    account_xpub: Xpub,
    /// `m/1017'/coin'`, the parent of the node key.
    keys: Xpriv,
    /// `m/1017'/coin'/1'`, the parent of the channel keys, derived once (a daemon derives a
    /// channel key for each of its channels at every start).
    channel_keys: Xpriv,
    /// The ranged public descriptors of the receive and change branches.
    descriptors: [Descriptor<DescriptorPublicKey>; 2],
    dir: PathBuf,
    next: NextIndex,
}

impl Wallet {
    /// Opens the wallet in `dir`, creating a fresh random seed (mode 0600) if there is none.
    ///
    /// # Errors
    /// [`WalletError::Io`], [`WalletError::Corrupt`] or [`WalletError::InsecureSeedFile`].
    pub fn open(dir: &Path, network: Network) -> Result<Wallet, WalletError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let seed_path = dir.join(SEED_FILE);
        let seed = match read_seed(&seed_path)? {
            Some(seed) => seed,
            None => create_seed(&seed_path)?,
        };
        let index_path = dir.join(INDEX_FILE);
        let next: NextIndex = match fs::read(&index_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| WalletError::Corrupt {
                path: index_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NextIndex::default(),
            Err(e) => return Err(io_err(&index_path)(e)),
        };
        if next.receive.max(next.change) > MAX_INDEX {
            let reason = format!("index {next:?} beyond {MAX_INDEX}");
            return Err(WalletError::Corrupt { path: index_path, reason });
        }
        Wallet::from_seed(&seed, network, dir, next)
    }

    fn from_seed(
        seed: &[u8],
        network: Network,
        dir: &Path,
        next: NextIndex,
    ) -> Result<Wallet, WalletError> {
        let secp = Secp256k1::new();
        let master = Xpriv::new_master(network, seed)?;
        let coin_type = if network == Network::Bitcoin { 0 } else { 1 };
        let path = DerivationPath::from_str(&format!("m/84'/{coin_type}'/0'"))?;
        let account = master.derive_priv(&secp, &path)?;
        let account_xpub = Xpub::from_priv(&secp, &account);
        let origin = format!("{}/84'/{coin_type}'/0'", master.fingerprint(&secp));
        let descriptor = |branch: u32| {
            Descriptor::from_str(&format!("wpkh([{origin}]{account_xpub}/{branch}/*)"))
        };
        let descriptors = [descriptor(0)?, descriptor(1)?];
        let keys = master
            .derive_priv(&secp, &DerivationPath::from_str(&format!("m/1017'/{coin_type}'"))?)?;
        let channel_keys = keys.derive_priv(&secp, &[ChildNumber::from_hardened_idx(1)?])?;
        let dir = dir.to_owned();
        Ok(Wallet {
            secp,
            network,
            account,
            account_xpub,
            keys,
            channel_keys,
            descriptors,
            dir,
            next,
        })
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
        let child = ChildNumber::from_hardened_idx(index)?;
        Ok(ChannelSigner::new(self.channel_keys.derive_priv(&self.secp, &[child])?.private_key))
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
    /// [`WalletError::Derivation`] for an index of 2^31 or more.
    pub fn address(&self, branch: Branch, index: u32) -> Result<Address, WalletError> {
        let path = [branch.child(), ChildNumber::from_normal_idx(index)?];
        let key = self.account_xpub.derive_pub(&self.secp, &path)?;
        Ok(Address::p2wpkh(&CompressedPublicKey(key.public_key), self.network))
    }

    /// Hands out the next unused receive address and remembers, durably, that it was handed out.
    ///
    /// # Errors
    /// [`WalletError::Io`] if the index cannot be saved, [`WalletError::IndexesExhausted`].
    pub fn new_address(&mut self) -> Result<Address, WalletError> {
        let address = self.address(Branch::Receive, self.next.receive)?;
        self.next.receive = bump(self.next.receive, Branch::Receive)?;
        self.save_index()?;
        Ok(address)
    }

    /// Returns the wallet's outputs in the node's UTXO set that can go into the next block:
    /// coinbase outputs younger than 100 blocks are left out. Outputs that a transaction in the
    /// mempool spends are included; see [`Wallet::coins`] for the spendable ones.
    ///
    /// # Errors
    /// [`WalletError::Chain`] if the node cannot scan.
    pub fn confirmed_coins(&self, chain: &impl Chain) -> Result<Vec<Coin>, WalletError> {
        let tip = chain.tip()?.height;
        let end = self.next.receive.max(self.next.change) + LOOKAHEAD;
        let utxos = chain.scan_outputs(&self.descriptors, end)?;
        let mut scripts = Vec::new();
        for branch in [Branch::Receive, Branch::Change] {
            for index in 0..=end {
                scripts.push((self.address(branch, index)?.script_pubkey(), branch, index));
            }
        }
        // Spendable in block tip+1 once that block is 100 blocks after the coinbase's.
        let maturity = u64::from(COINBASE_MATURITY);
        let mature = |u: &Utxo| !u.coinbase || u64::from(tip) + 1 >= u64::from(u.height) + maturity;
        Ok(utxos
            .into_iter()
            .filter(mature)
            .filter_map(|utxo| {
                let (_, branch, index) =
                    scripts.iter().find(|(s, _, _)| *s == utxo.txout.script_pubkey)?;
                Some(Coin { utxo, branch: *branch, index: *index })
            })
            .collect())
    }

    /// Returns the coins that can be spent now: [`Wallet::confirmed_coins`] less those a
    /// transaction in the node's mempool already spends (such as a funding not yet confirmed).
    ///
    /// # Errors
    /// [`WalletError::Chain`] if the node cannot answer.
    pub fn coins(&self, chain: &impl Chain) -> Result<Vec<Coin>, WalletError> {
        let mut spendable = Vec::new();
        for coin in self.confirmed_coins(chain)? {
            if matches!(chain.output_status(coin.utxo.outpoint)?, OutputStatus::Unspent { .. }) {
                spendable.push(coin);
            }
        }
        Ok(spendable)
    }

    /// Returns the sum of [`Wallet::coins`].
    ///
    /// # Errors
    /// [`WalletError::Chain`] if the node cannot answer.
    pub fn balance(&self, chain: &impl Chain) -> Result<Amount, WalletError> {
        Ok(self.coins(chain)?.iter().map(|c| c.utxo.txout.value).sum())
    }

    /// Builds and signs a transaction paying `amount` to `script` at `feerate`: the largest coins
    /// first until they cover amount and fee, change to a fresh change address. The result is not
    /// broadcast; for a channel it goes to [`paychan::channel::Payer::funding_signed`].
    ///
    /// # Errors
    /// [`WalletError::InsufficientFunds`] if all spendable coins together fall short;
    /// [`WalletError::Chain`], [`WalletError::Tx`] or [`WalletError::Io`].
    pub fn fund(
        &mut self,
        chain: &impl Chain,
        script: &ScriptBuf,
        amount: Amount,
        feerate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let mut coins = self.coins(chain)?;
        coins.sort_by_key(|c| std::cmp::Reverse(c.utxo.txout.value));
        let mut shortfall = (Amount::ZERO, amount);
        for take in 1..=coins.len() {
            match self.fund_from(&coins[..take], script, amount, feerate) {
                Err(WalletError::InsufficientFunds { available, needed }) => {
                    shortfall = (available, needed);
                }
                result => return result,
            }
        }
        let (available, needed) = shortfall;
        Err(WalletError::InsufficientFunds { available, needed })
    }

    /// Like [`Wallet::fund`], spending exactly `coins` (coin control): every one of them is an
    /// input, change goes to a fresh change address.
    ///
    /// # Errors
    /// [`WalletError::InsufficientFunds`] if `coins` fall short; [`WalletError::Tx`] or
    /// [`WalletError::Io`].
    pub fn fund_from(
        &mut self,
        coins: &[Coin],
        script: &ScriptBuf,
        amount: Amount,
        feerate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let change = self.address(Branch::Change, self.next.change)?.script_pubkey();
        let inputs: Vec<FundingInput<'_>> =
            coins.iter().map(|c| FundingInput::p2wpkh(c.utxo.outpoint, &c.utxo.txout)).collect();
        let (mut tx, _) = match build_funding(&inputs, script, amount, &change, feerate) {
            Ok(built) => built,
            Err(TxError::InsufficientFunds { available, needed }) => {
                return Err(WalletError::InsufficientFunds { available, needed })
            }
            Err(e) => return Err(e.into()),
        };
        for (i, coin) in coins.iter().enumerate() {
            let signer = self.signer(coin.branch, coin.index)?;
            sign_p2wpkh_input(&mut tx, i, &coin.utxo.txout, &signer)?;
        }
        if tx.output.iter().any(|o| o.script_pubkey == change) {
            self.next.change = bump(self.next.change, Branch::Change)?;
            self.save_index()?;
        }
        Ok(tx)
    }

    fn signer(&self, branch: Branch, index: u32) -> Result<ChannelSigner, WalletError> {
        let path = [branch.child(), ChildNumber::from_normal_idx(index)?];
        let key = self.account.derive_priv(&self.secp, &path)?;
        Ok(ChannelSigner::new(key.private_key))
    }

    fn save_index(&self) -> Result<(), WalletError> {
        let path = self.dir.join(INDEX_FILE);
        let json = serde_json::to_vec(&self.next).expect("two integers serialize");
        write_durably(&path, &json, true)
    }
}

fn bump(index: u32, branch: Branch) -> Result<u32, WalletError> {
    match index.checked_add(1) {
        Some(next) if next <= MAX_INDEX => Ok(next),
        _ => Err(WalletError::IndexesExhausted { branch }),
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> WalletError + '_ {
    move |source| WalletError::Io { path: path.to_owned(), source }
}

/// Reads the hex seed at `path`, refusing a file others can read. `None` if there is no file.
fn read_seed(path: &Path) -> Result<Option<Vec<u8>>, WalletError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    // The mode of the file we opened, not of whatever the path names a moment later.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(io_err(path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(WalletError::InsecureSeedFile { path: path.to_owned(), mode });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err(path))?;
    let corrupt = |reason: String| WalletError::Corrupt { path: path.to_owned(), reason };
    let seed: Vec<u8> = bitcoin::hex::FromHex::from_hex(text.trim())
        .map_err(|e: bitcoin::hex::HexToBytesError| corrupt(e.to_string()))?;
    if !(16..=64).contains(&seed.len()) {
        return Err(corrupt(format!("a seed is 16 to 64 bytes, found {}", seed.len())));
    }
    Ok(Some(seed))
}

/// Writes a fresh 32-byte random seed to `path` (mode 0600). If another process created one
/// first, that seed wins and is returned: a seed file is never overwritten.
fn create_seed(path: &Path) -> Result<Vec<u8>, WalletError> {
    let mut seed = vec![0u8; 32];
    bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut seed);
    let hex = bitcoin::hex::DisplayHex::to_lower_hex_string(&seed[..]);
    write_durably(path, hex.as_bytes(), false)?;
    match read_seed(path)? {
        Some(on_disk) => Ok(on_disk),
        None => Err(WalletError::Corrupt { path: path.to_owned(), reason: "vanished".into() }),
    }
}

/// Writes `bytes` to `path` through a fresh temporary file (mode 0600) in the same directory,
/// fsync and rename, so a crash leaves either the old file or the new one. Without `overwrite`,
/// an existing file at `path` is kept and the write is dropped.
fn write_durably(path: &Path, bytes: &[u8], overwrite: bool) -> Result<(), WalletError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).map_err(io_err(tmp.path()))?;
    if overwrite {
        tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    } else {
        match tmp.persist_noclobber(path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_err(path)(e.error)),
        }
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests;
