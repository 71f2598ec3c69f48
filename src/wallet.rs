//! The payer's on-chain wallet: paychan's own keys, no wallet in the node.
//!
//! A BIP32 seed lives in the data directory (`wallet.seed`, file mode 0600). Coins are received
//! on `wpkh` addresses of the BIP 84 account `m/84'/coin'/0'` (receive branch `/0/*`, change
//! branch `/1/*`) and found with the node's `scantxoutset`, so they are the confirmed UTXO set,
//! not the mempool. The next unused index of each branch is kept in `wallet.json`.
//!
//! [`Wallet::fund`] selects coins (largest first), adds change when it is not dust, and signs a
//! funding transaction from native segwit inputs only ([`crate::tx::build_funding`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv, Xpub};
use bitcoin::secp256k1::{rand::RngCore, All, Secp256k1};
use bitcoin::{Address, Amount, FeeRate, Network, ScriptBuf, Transaction};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use serde::{Deserialize, Serialize};

use crate::chain::{Chain, ChainError, Utxo};
use crate::keys::ChannelSigner;
use crate::tx::{build_funding, sign_p2wpkh_input, FundingInput, TxError};

/// The seed file's name in the data directory.
pub const SEED_FILE: &str = "wallet.seed";
/// The index file's name in the data directory.
pub const INDEX_FILE: &str = "wallet.json";
/// How many addresses past the next unused one are scanned on each branch.
pub const LOOKAHEAD: u32 = 100;
/// Confirmations a coinbase output needs before it can be spent (consensus).
pub const COINBASE_MATURITY: u32 = 100;

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
    #[error("insufficient funds: {available} spendable, {needed} needed (amount plus fee)")]
    InsufficientFunds {
        /// All spendable coins together.
        available: Amount,
        /// The amount plus the fee of spending all of them.
        needed: Amount,
    },
    /// Deriving a key or a descriptor failed.
    #[error("key derivation failed: {0}")]
    Derivation(String),
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
    fn number(self) -> u32 {
        match self {
            Branch::Receive => 0,
            Branch::Change => 1,
        }
    }
}

/// The next unused index of each branch, persisted in [`INDEX_FILE`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct NextIndex {
    receive: u32,
    change: u32,
}

/// A spendable coin of the wallet's, with the key that spends it.
#[derive(Debug, Clone)]
pub struct Coin {
    /// The output and where it is.
    pub utxo: Utxo,
    /// Its branch and index.
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
    /// The account's public descriptor prefix, `[fingerprint/84'/coin'/0']tpub...`.
    account_public: String,
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
        let next = match fs::read(&index_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| WalletError::Corrupt {
                path: index_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NextIndex::default(),
            Err(e) => return Err(io_err(&index_path)(e)),
        };
        Wallet::from_seed(&seed, network, dir, next)
    }

    fn from_seed(
        seed: &[u8],
        network: Network,
        dir: &Path,
        next: NextIndex,
    ) -> Result<Wallet, WalletError> {
        let secp = Secp256k1::new();
        let derivation = |e: bitcoin::bip32::Error| WalletError::Derivation(e.to_string());
        let master = Xpriv::new_master(network, seed).map_err(derivation)?;
        let coin_type = if network == Network::Bitcoin { 0 } else { 1 };
        let path =
            DerivationPath::from_str(&format!("m/84'/{coin_type}'/0'")).map_err(derivation)?;
        let account = master.derive_priv(&secp, &path).map_err(derivation)?;
        let xpub = Xpub::from_priv(&secp, &account);
        let origin = format!("{}/84'/{coin_type}'/0'", master.fingerprint(&secp));
        let account_public = format!("[{origin}]{xpub}");
        Ok(Wallet { secp, network, account, account_public, dir: dir.to_owned(), next })
    }

    /// The public descriptor of `branch`, ranged (`wpkh([fp/84'/1'/0']tpub.../0/*)`).
    pub fn descriptor(&self, branch: Branch) -> String {
        format!("wpkh({}/{}/*)", self.account_public, branch.number())
    }

    /// The address at `index` on `branch`.
    ///
    /// # Errors
    /// [`WalletError::Derivation`] for a hardened index.
    pub fn address(&self, branch: Branch, index: u32) -> Result<Address, WalletError> {
        let derivation = |e: String| WalletError::Derivation(e);
        let desc = Descriptor::<DescriptorPublicKey>::from_str(&self.descriptor(branch))
            .map_err(|e| derivation(e.to_string()))?;
        let definite = desc.at_derivation_index(index).map_err(|e| derivation(e.to_string()))?;
        definite.address(self.network).map_err(|e| derivation(e.to_string()))
    }

    /// Hands out the next unused receive address and remembers that it was handed out.
    ///
    /// # Errors
    /// [`WalletError::Io`] if the index cannot be saved.
    pub fn new_address(&mut self) -> Result<Address, WalletError> {
        let address = self.address(Branch::Receive, self.next.receive)?;
        self.next.receive += 1;
        self.save_index()?;
        Ok(address)
    }

    /// Returns the confirmed coins that can be spent in the next block: every wallet output the
    /// node's UTXO set holds, less coinbase outputs younger than 100 blocks.
    ///
    /// # Errors
    /// [`WalletError::Chain`] if the node cannot scan.
    pub fn coins(&self, chain: &impl Chain) -> Result<Vec<Coin>, WalletError> {
        let tip = chain.tip()?.height;
        let end = self.next.receive.max(self.next.change) + LOOKAHEAD;
        let descriptors = [self.descriptor(Branch::Receive), self.descriptor(Branch::Change)];
        let utxos = chain.scan_outputs(&descriptors, end)?;
        let mut scripts = Vec::new();
        for branch in [Branch::Receive, Branch::Change] {
            for index in 0..=end {
                scripts.push((self.address(branch, index)?.script_pubkey(), branch, index));
            }
        }
        let mature = |u: &Utxo| !u.coinbase || tip + 1 >= u.height + COINBASE_MATURITY;
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

    /// The sum of [`Wallet::coins`].
    ///
    /// # Errors
    /// [`WalletError::Chain`] if the node cannot scan.
    pub fn balance(&self, chain: &impl Chain) -> Result<Amount, WalletError> {
        Ok(self.coins(chain)?.iter().map(|c| c.utxo.txout.value).sum())
    }

    /// Builds and signs a transaction paying `amount` to `script` at `feerate`: the largest coins
    /// first until they cover amount and fee, change to a fresh change address. The result is not
    /// broadcast; for a channel it goes to [`crate::channel::Payer::funding_signed`].
    ///
    /// # Errors
    /// [`WalletError::InsufficientFunds`] if all spendable coins together fall short;
    /// [`WalletError::Chain`] or [`WalletError::Tx`].
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
    /// [`WalletError::InsufficientFunds`] if `coins` fall short; [`WalletError::Tx`].
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
            self.next.change += 1;
            self.save_index()?;
        }
        Ok(tx)
    }

    fn signer(&self, branch: Branch, index: u32) -> Result<ChannelSigner, WalletError> {
        let path =
            [ChildNumber::from_normal_idx(branch.number()), ChildNumber::from_normal_idx(index)]
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| WalletError::Derivation(e.to_string()))?;
        let key = self
            .account
            .derive_priv(&self.secp, &path)
            .map_err(|e| WalletError::Derivation(e.to_string()))?;
        Ok(ChannelSigner::new(key.private_key))
    }

    fn save_index(&self) -> Result<(), WalletError> {
        let path = self.dir.join(INDEX_FILE);
        let json = serde_json::to_vec(&self.next).expect("two integers serialize");
        write_durably(&path, &json, 0o644)
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> WalletError + '_ {
    move |source| WalletError::Io { path: path.to_owned(), source }
}

/// Reads the hex seed at `path`, refusing a file others can read. `None` if there is no file.
fn read_seed(path: &Path) -> Result<Option<Vec<u8>>, WalletError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(io_err(path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(WalletError::InsecureSeedFile { path: path.to_owned(), mode });
        }
    }
    let corrupt = |reason: String| WalletError::Corrupt { path: path.to_owned(), reason };
    let seed: Vec<u8> = bitcoin::hex::FromHex::from_hex(text.trim())
        .map_err(|e: bitcoin::hex::HexToBytesError| corrupt(e.to_string()))?;
    if !(16..=64).contains(&seed.len()) {
        return Err(corrupt(format!("a seed is 16 to 64 bytes, found {}", seed.len())));
    }
    Ok(Some(seed))
}

/// Writes a fresh 32-byte random seed to `path` with mode 0600.
fn create_seed(path: &Path) -> Result<Vec<u8>, WalletError> {
    let mut seed = vec![0u8; 32];
    bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut seed);
    let hex = bitcoin::hex::DisplayHex::to_lower_hex_string(&seed[..]);
    write_durably(path, hex.as_bytes(), 0o600)?;
    Ok(seed)
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename, so a crash leaves either
/// the old file or the new one.
fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WalletError> {
    let tmp = path.with_extension("tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(parent) = path.parent() {
        File::open(parent).and_then(|d| d.sync_all()).map_err(io_err(parent))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_file_is_private_and_reopens_to_the_same_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let mut wallet = Wallet::open(dir.path(), Network::Regtest).unwrap();
        let first = wallet.new_address().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(SEED_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut reopened = Wallet::open(dir.path(), Network::Regtest).unwrap();
        assert_eq!(reopened.address(Branch::Receive, 0).unwrap(), first);
        assert_ne!(reopened.new_address().unwrap(), first, "the index survived the reopen");
        assert!(first.to_string().starts_with("bcrt1q"), "{first}");
    }

    #[test]
    fn a_readable_seed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Wallet::open(dir.path(), Network::Regtest).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(SEED_FILE);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            let err = Wallet::open(dir.path(), Network::Regtest).err().unwrap();
            assert!(matches!(err, WalletError::InsecureSeedFile { mode: 0o644, .. }), "{err}");
        }
    }

    #[test]
    fn fixed_seed_gives_the_bip84_test_vector() {
        // BIP 84's test mnemonic "abandon ... about" has this BIP 39 seed; its first receive
        // address on mainnet is bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu.
        let seed: Vec<u8> = bitcoin::hex::FromHex::from_hex(
            "5eb00bbddcf069084889a8ab9155568165f5c453ccb85e70811aaed6f6da5fc1\
             9a5ac40b389cd370d086206dec8aa6c43daea6690f20ad3d8d48b2d2ce9e38e4",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wallet =
            Wallet::from_seed(&seed, Network::Bitcoin, dir.path(), NextIndex::default()).unwrap();
        let address = wallet.address(Branch::Receive, 0).unwrap();
        assert_eq!(address.to_string(), "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu");
        let change = wallet.address(Branch::Change, 0).unwrap();
        assert_eq!(change.to_string(), "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el");
    }
}
