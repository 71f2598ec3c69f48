use std::cell::RefCell;
use std::collections::HashSet;

use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, TxOut, Txid};

use super::*;
use paychan::chain::{Tip, TxStatus};

fn regtest_wallet(dir: &Path) -> Wallet {
    Wallet::open(dir, Network::Regtest).unwrap()
}

#[test]
fn seed_file_is_private_and_reopens_to_the_same_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let mut wallet = regtest_wallet(dir.path());
    let first = wallet.new_address().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(SEED_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let mut reopened = regtest_wallet(dir.path());
    assert_eq!(reopened.address(Branch::Receive, 0).unwrap(), first);
    assert_ne!(reopened.new_address().unwrap(), first, "the index survived the reopen");
    assert!(first.to_string().starts_with("bcrt1q"), "{first}");
}

#[cfg(unix)]
#[test]
fn a_readable_seed_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    drop(regtest_wallet(dir.path()));
    let path = dir.path().join(SEED_FILE);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = Wallet::open(dir.path(), Network::Regtest).err().unwrap();
    assert!(matches!(err, WalletError::InsecureSeedFile { mode: 0o644, .. }), "{err}");
}

#[test]
fn a_corrupt_index_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(regtest_wallet(dir.path()));
    fs::write(dir.path().join(INDEX_FILE), br#"{"receive":4294967295,"change":0}"#).unwrap();
    let err = Wallet::open(dir.path(), Network::Regtest).err().unwrap();
    assert!(matches!(err, WalletError::Corrupt { .. }), "{err}");
    fs::write(dir.path().join(INDEX_FILE), b"not json").unwrap();
    let err = Wallet::open(dir.path(), Network::Regtest).err().unwrap();
    assert!(matches!(err, WalletError::Corrupt { .. }), "{err}");
}

#[test]
fn fixed_seed_gives_the_bip84_test_vector() {
    // BIP 84's test mnemonic "abandon ... about" has this BIP 39 seed; its first receive and
    // change addresses on mainnet are these.
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
    // The descriptor the node scans derives the same addresses.
    for (branch, index) in [(Branch::Receive, 0), (Branch::Receive, 7), (Branch::Change, 3)] {
        let from_descriptor = wallet
            .descriptor(branch)
            .at_derivation_index(index)
            .unwrap()
            .address(Network::Bitcoin)
            .unwrap();
        assert_eq!(from_descriptor, wallet.address(branch, index).unwrap());
    }
}

/// A chain of made-up coins: the wallet's view of a node, without one.
struct FakeChain {
    height: u32,
    utxos: Vec<Utxo>,
    spent_in_mempool: RefCell<HashSet<OutPoint>>,
}

impl Chain for FakeChain {
    fn tip(&self) -> Result<Tip, ChainError> {
        let hash = bitcoin::hashes::Hash::from_byte_array([self.height as u8; 32]);
        Ok(Tip { height: self.height, hash, median_time_past: 0 })
    }
    fn test_accept(&self, _: &Transaction) -> Result<(), ChainError> {
        unimplemented!("the wallet never broadcasts")
    }
    fn broadcast(&self, _: &Transaction) -> Result<bitcoin::Txid, ChainError> {
        unimplemented!("the wallet never broadcasts")
    }
    fn tx_status(&self, _: bitcoin::Txid) -> Result<TxStatus, ChainError> {
        unimplemented!("the wallet never asks")
    }
    fn output_status(&self, outpoint: OutPoint) -> Result<OutputStatus, ChainError> {
        if self.spent_in_mempool.borrow().contains(&outpoint) {
            return Ok(OutputStatus::SpentOrMissing);
        }
        let u = self.utxos.iter().find(|u| u.outpoint == outpoint);
        Ok(u.map_or(OutputStatus::SpentOrMissing, |u| OutputStatus::Unspent {
            txout: u.txout.clone(),
            confirmations: self.height + 1 - u.height,
        }))
    }
    fn output_status_in_blocks(&self, outpoint: OutPoint) -> Result<OutputStatus, ChainError> {
        let u = self.utxos.iter().find(|u| u.outpoint == outpoint);
        Ok(u.map_or(OutputStatus::SpentOrMissing, |u| OutputStatus::Unspent {
            txout: u.txout.clone(),
            confirmations: self.height + 1 - u.height,
        }))
    }
    fn find_spend(&self, _: OutPoint) -> Result<Option<(Transaction, u32)>, ChainError> {
        unimplemented!("the wallet never asks")
    }
    fn mempool_spends(&self, outpoints: &[OutPoint]) -> Result<Vec<Option<Txid>>, ChainError> {
        unimplemented!("the wallet never asks: {outpoints:?}")
    }
    fn fee_rate(&self, _: u16) -> Result<FeeRate, ChainError> {
        Ok(FeeRate::from_sat_per_vb(1).unwrap())
    }
    fn scan_outputs(
        &self,
        _: &[Descriptor<DescriptorPublicKey>],
        _: u32,
    ) -> Result<Vec<Utxo>, ChainError> {
        Ok(self.utxos.clone())
    }
}

/// A coin of `sat` on the wallet's receive address `index`, mined at `height`.
fn utxo(wallet: &Wallet, n: u8, index: u32, sat: u64, height: u32, coinbase: bool) -> Utxo {
    let script_pubkey = wallet.address(Branch::Receive, index).unwrap().script_pubkey();
    Utxo {
        outpoint: OutPoint::new(Txid::from_byte_array([n; 32]), 0),
        txout: TxOut { value: Amount::from_sat(sat), script_pubkey },
        height,
        coinbase,
    }
}

#[test]
fn coinbase_coins_mature_at_one_hundred_confirmations() {
    let dir = tempfile::tempdir().unwrap();
    let wallet = regtest_wallet(dir.path());
    let coinbase = utxo(&wallet, 1, 0, 50_000, 10, true);
    let plain = utxo(&wallet, 2, 1, 20_000, 108, false);
    let mut chain = FakeChain {
        height: 108,
        utxos: vec![coinbase, plain],
        spent_in_mempool: RefCell::default(),
    };
    // Block 109 holds the coinbase's 99th confirmation: not yet.
    assert_eq!(wallet.balance(&chain).unwrap(), Amount::from_sat(20_000));
    chain.height = 109;
    assert_eq!(wallet.balance(&chain).unwrap(), Amount::from_sat(70_000));
}

#[test]
fn funding_takes_the_largest_coins_first_and_skips_coins_spent_in_the_mempool() {
    let dir = tempfile::tempdir().unwrap();
    let mut wallet = regtest_wallet(dir.path());
    let small = utxo(&wallet, 1, 0, 30_000, 5, false);
    let large = utxo(&wallet, 2, 1, 80_000, 5, false);
    let middle = utxo(&wallet, 3, 2, 60_000, 5, false);
    let chain = FakeChain {
        height: 10,
        utxos: vec![small.clone(), large.clone(), middle.clone()],
        spent_in_mempool: RefCell::default(),
    };
    let to = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::all_zeros());
    let feerate = FeeRate::from_sat_per_vb(1).unwrap();
    let inputs = |tx: &Transaction| -> Vec<OutPoint> {
        tx.input.iter().map(|i| i.previous_output).collect()
    };

    let tx = wallet.fund(&chain, &to, Amount::from_sat(100_000), feerate).unwrap();
    assert_eq!(inputs(&tx), vec![large.outpoint, middle.outpoint]);
    let change = wallet.address(Branch::Change, 0).unwrap().script_pubkey();
    assert_eq!(tx.output[1].script_pubkey, change, "change to the first change address");
    // Every input is signed with its own key: the transaction verifies.
    let prevouts = [large.clone(), middle.clone()];
    tx.verify(|op| prevouts.iter().find(|u| u.outpoint == *op).map(|u| u.txout.clone()))
        .expect("signed inputs verify");

    // Once the large coin is spent by that (unconfirmed) transaction, it is not offered again.
    chain.spent_in_mempool.borrow_mut().insert(large.outpoint);
    let tx = wallet.fund(&chain, &to, Amount::from_sat(50_000), feerate).unwrap();
    assert_eq!(inputs(&tx), vec![middle.outpoint]);
    let next_change = wallet.address(Branch::Change, 1).unwrap().script_pubkey();
    assert_eq!(tx.output[1].script_pubkey, next_change, "a fresh change address");

    let err = wallet.fund(&chain, &to, Amount::from_sat(90_000), feerate).unwrap_err();
    assert!(
        matches!(err, WalletError::InsufficientFunds { available, .. } if available == Amount::from_sat(90_000)),
        "{err}"
    );
}
