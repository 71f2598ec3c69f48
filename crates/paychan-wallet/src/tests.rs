use std::cell::RefCell;
use std::collections::HashSet;
use std::fs;
use std::io::Write;

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{
    absolute, transaction, Amount, Block, BlockHash, CompactTarget, FeeRate, OutPoint, ScriptBuf,
    Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use paychan::chain::{Chain, ChainError, OutputStatus, Tip, TxStatus, Utxo};
use paychan::watch::BlockSource;

use super::*;

const DATABASE: &str = "paychan.sqlite";

fn open_in(dir: &Path, network: Network) -> Result<Wallet, WalletError> {
    Wallet::open(dir, &dir.join(DATABASE), network)
}

fn regtest_wallet(dir: &Path) -> Wallet {
    open_in(dir, Network::Regtest).unwrap_or_else(|e| panic!("open: {e}"))
}

/// Writes a seed as an earlier release (or a restore from backup) left it: hex, mode 0600.
fn write_seed(dir: &Path, hex: &str) {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(dir.join(SEED_FILE)).unwrap();
    file.write_all(hex.as_bytes()).unwrap();
}

const OLD_SEED: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

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
    drop(wallet);
    let mut reopened = regtest_wallet(dir.path());
    assert_eq!(reopened.address(Branch::Receive, 0).unwrap(), first);
    let second = reopened.new_address().unwrap();
    assert_eq!(second, reopened.address(Branch::Receive, 1).unwrap(), "the index survived");
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
    let err = open_in(dir.path(), Network::Regtest).err().expect("refused");
    assert!(matches!(err, WalletError::InsecureSeedFile { mode: 0o644, .. }), "{err}");
}

#[test]
fn a_corrupt_legacy_index_file_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_seed(dir.path(), OLD_SEED);
    let index = dir.path().join(INDEX_FILE);
    for bad in [
        &b"not json"[..],
        br#"{"receive":2147483648,"change":0}"#,
        br#"{"receive":0,"change":4294967295}"#,
        br#"{"receive":4294967296,"change":0}"#,
    ] {
        fs::write(&index, bad).unwrap();
        // Read when the wallet moves into the database, at its first use.
        let mut wallet = open_in(dir.path(), Network::Regtest).expect("the seed opens");
        let err = wallet.new_address().expect_err("refused");
        assert!(matches!(&err, WalletError::Corrupt { path, .. } if *path == index), "{err}");
    }
    // The refusals wrote no wallet: a good file is still taken over.
    fs::write(&index, br#"{"receive":2,"change":0}"#).unwrap();
    let mut wallet = regtest_wallet(dir.path());
    assert_eq!(wallet.new_address().unwrap(), wallet.address(Branch::Receive, 2).unwrap());
}

#[test]
fn fixed_seed_gives_the_bip84_test_vector() {
    // BIP 84's test mnemonic "abandon ... about" has this BIP 39 seed; its first receive and
    // change addresses on mainnet are these.
    let dir = tempfile::tempdir().unwrap();
    write_seed(
        dir.path(),
        "5eb00bbddcf069084889a8ab9155568165f5c453ccb85e70811aaed6f6da5fc1\
         9a5ac40b389cd370d086206dec8aa6c43daea6690f20ad3d8d48b2d2ce9e38e4",
    );
    let wallet = open_in(dir.path(), Network::Bitcoin).unwrap_or_else(|e| panic!("open: {e}"));
    let address = wallet.address(Branch::Receive, 0).unwrap();
    assert_eq!(address.to_string(), "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu");
    let change = wallet.address(Branch::Change, 0).unwrap();
    assert_eq!(change.to_string(), "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el");
    // The public descriptor derives the same addresses.
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

/// A node without a node: made-up blocks (no proof of work, no merkle roots: the wallet checks
/// only how blocks link) and the outpoints its mempool spends.
struct FakeChain {
    blocks: Vec<Block>,
    spent_in_mempool: RefCell<HashSet<OutPoint>>,
    /// Blocks mined so far, so that every block and coinbase differs from every other.
    mined: u32,
    /// The next block's time stamp; each block is ten minutes after the one before.
    time: u32,
}

impl FakeChain {
    /// The regtest genesis block alone, the one BDK's regtest wallet starts from.
    fn new() -> FakeChain {
        FakeChain {
            blocks: vec![bitcoin::constants::genesis_block(Network::Regtest)],
            spent_in_mempool: RefCell::default(),
            mined: 0,
            // Years before any seed of these tests was made.
            time: 1_600_000_000,
        }
    }

    fn height(&self) -> u32 {
        u32::try_from(self.blocks.len() - 1).unwrap()
    }

    /// Mines a block on the tip whose coinbase pays `coinbase` (an unspendable output if
    /// empty) and that holds `txs`.
    fn mine(&mut self, coinbase: Vec<TxOut>, txs: Vec<Transaction>) {
        self.mined += 1;
        self.time += 600;
        let height = self.height() + 1;
        let mut script_sig = height.to_le_bytes().to_vec();
        script_sig.extend(self.mined.to_le_bytes());
        let output = if coinbase.is_empty() {
            vec![TxOut { value: Amount::from_sat(50_0000_0000), script_pubkey: ScriptBuf::new() }]
        } else {
            coinbase
        };
        let coinbase = Transaction {
            version: transaction::Version::ONE,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output,
        };
        let header = Header {
            version: Version::TWO,
            prev_blockhash: self.blocks.last().unwrap().block_hash(),
            merkle_root: TxMerkleNode::all_zeros(),
            time: self.time,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: self.mined,
        };
        let txdata = std::iter::once(coinbase).chain(txs).collect();
        self.blocks.push(Block { header, txdata });
    }

    /// Mines empty blocks up to `height`.
    fn mine_to(&mut self, height: u32) {
        while self.height() < height {
            self.mine(vec![], vec![]);
        }
    }

    /// The output `outpoint` as the chain holds it.
    fn txout(&self, outpoint: &OutPoint) -> Option<TxOut> {
        let tx = self
            .blocks
            .iter()
            .flat_map(|b| &b.txdata)
            .find(|tx| tx.compute_txid() == outpoint.txid)?;
        tx.output.get(outpoint.vout as usize).cloned()
    }
}

/// What the wallet must never ask of its chain: it only reads blocks and the mempool's spends.
fn not_asked(method: &'static str) -> ChainError {
    ChainError::UnexpectedAnswer { method, detail: "the wallet does not ask this".into() }
}

impl BlockSource for FakeChain {
    fn best_block_hash(&self) -> Result<BlockHash, ChainError> {
        Ok(self.blocks.last().unwrap().block_hash())
    }

    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        Ok(self.blocks.get(height as usize).map(Block::block_hash))
    }

    fn block(&self, hash: BlockHash) -> Result<Block, ChainError> {
        let block = self.blocks.iter().find(|b| b.block_hash() == hash);
        block.cloned().ok_or_else(|| not_asked("getblock of a block not in the chain"))
    }
}

impl Chain for FakeChain {
    fn tip(&self) -> Result<Tip, ChainError> {
        let hash = self.blocks.last().unwrap().block_hash();
        Ok(Tip { height: self.height(), hash, median_time_past: 0 })
    }
    fn test_accept(&self, _: &Transaction) -> Result<(), ChainError> {
        Err(not_asked("testmempoolaccept"))
    }
    fn broadcast(&self, _: &Transaction) -> Result<Txid, ChainError> {
        Err(not_asked("sendrawtransaction"))
    }
    fn tx_status(&self, _: Txid) -> Result<TxStatus, ChainError> {
        Err(not_asked("getrawtransaction"))
    }
    fn output_status(&self, _: OutPoint) -> Result<OutputStatus, ChainError> {
        Err(not_asked("gettxout"))
    }
    fn output_status_in_blocks(&self, _: OutPoint) -> Result<OutputStatus, ChainError> {
        Err(not_asked("gettxout"))
    }
    fn find_spend(&self, _: OutPoint) -> Result<Option<(Transaction, u32)>, ChainError> {
        Err(not_asked("getblock"))
    }
    fn mempool_spends(&self, outpoints: &[OutPoint]) -> Result<Vec<Option<Txid>>, ChainError> {
        let spent = self.spent_in_mempool.borrow();
        let spender = Txid::from_byte_array([0xee; 32]);
        Ok(outpoints.iter().map(|o| spent.contains(o).then_some(spender)).collect())
    }
    fn submit_package(&self, _: &[Transaction]) -> Result<(), ChainError> {
        Err(ChainError::UnexpectedAnswer { method: "submitpackage", detail: "not here".into() })
    }
    fn mempool_min_feerate(&self) -> Result<FeeRate, ChainError> {
        Ok(FeeRate::from_sat_per_vb(1).unwrap())
    }
    fn fee_rate(&self, _: u16) -> Result<FeeRate, ChainError> {
        Ok(FeeRate::from_sat_per_vb(1).unwrap())
    }
    fn scan_outputs(
        &self,
        _: &[Descriptor<DescriptorPublicKey>],
        _: u32,
    ) -> Result<Vec<Utxo>, ChainError> {
        Err(not_asked("scantxoutset"))
    }
}

/// An output of `sat` to the wallet's address `index` on `branch`.
fn pay(wallet: &Wallet, branch: Branch, index: u32, sat: u64) -> TxOut {
    let script_pubkey = wallet.address(branch, index).unwrap().script_pubkey();
    TxOut { value: Amount::from_sat(sat), script_pubkey }
}

/// A transaction from someone else (spending a made-up coin `n`) with `output`.
fn payment(n: u8, output: Vec<TxOut>) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array([n; 32]), 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output,
    }
}

fn sat(sat: u64) -> Amount {
    Amount::from_sat(sat)
}

#[test]
fn a_seed_older_than_the_database_is_scanned_from_genesis_and_keeps_its_indexes() {
    let dir = tempfile::tempdir().unwrap();
    // The previous release's data directory: a seed, and the next unused index of each branch.
    write_seed(dir.path(), OLD_SEED);
    fs::write(dir.path().join(INDEX_FILE), br#"{"receive":3,"change":1}"#).unwrap();
    let mut wallet = regtest_wallet(dir.path());
    let mut chain = FakeChain::new();
    chain.mine_to(4);
    let paid = payment(1, vec![pay(&wallet, Branch::Receive, 2, 40_000)]);
    let outpoint = OutPoint::new(paid.compute_txid(), 0);
    chain.mine(vec![], vec![paid]);
    chain.mine_to(8);

    let synced = wallet.sync(&chain).unwrap();
    assert_eq!(synced, Synced { tip: 8, connected: 8, disconnected: 0 }, "from genesis");
    assert_eq!(wallet.balance(&chain).unwrap(), sat(40_000));
    let coins = wallet.coins(&chain).unwrap();
    assert_eq!(coins.len(), 1);
    assert_eq!((coins[0].utxo.outpoint, coins[0].utxo.height), (outpoint, 5));
    assert_eq!(
        (coins[0].branch, coins[0].index, coins[0].utxo.coinbase),
        (Branch::Receive, 2, false)
    );
    // Indexes 0 to 2 were handed out by the previous release: the next is 3, and change 0 is
    // taken too.
    assert_eq!(wallet.new_address().unwrap(), wallet.address(Branch::Receive, 3).unwrap());
    assert_eq!(wallet.bdk().unwrap().next_derivation_index(KeychainKind::Internal), 1);

    // Reopened, it goes on from its tip and keeps what it found.
    drop(wallet);
    let mut wallet = regtest_wallet(dir.path());
    assert_eq!(wallet.synced_height().unwrap(), 8);
    assert_eq!(wallet.sync(&chain).unwrap(), Synced { tip: 8, connected: 0, disconnected: 0 });
    assert_eq!(wallet.balance(&chain).unwrap(), sat(40_000));
    assert_eq!(wallet.new_address().unwrap(), wallet.address(Branch::Receive, 4).unwrap());
}

#[test]
fn a_fresh_seed_starts_a_day_of_blocks_before_its_birthday() {
    let dir = tempfile::tempdir().unwrap();
    let mut wallet = regtest_wallet(dir.path());
    // Built after the seed, before the first sync: as if someone had paid the seed before it
    // existed. No one can, so the first sync starts a day (144 blocks) below the last block
    // stamped before the seed was made: every block here is stamped years before, so at 156.
    let mut chain = FakeChain::new();
    chain.mine_to(149);
    chain.mine(vec![], vec![payment(1, vec![pay(&wallet, Branch::Receive, 0, 10_000)])]);
    chain.mine_to(199);
    chain.mine(vec![], vec![payment(2, vec![pay(&wallet, Branch::Receive, 1, 15_000)])]);
    chain.mine_to(300);
    let synced = wallet.sync(&chain).unwrap();
    assert_eq!(synced, Synced { tip: 300, connected: 144, disconnected: 0 }, "from 156");
    assert_eq!(wallet.balance(&chain).unwrap(), sat(15_000), "block 150 was not read");

    // Blocks after its first sync are all read.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    chain.time = u32::try_from(now.as_secs()).unwrap();
    chain.mine(vec![], vec![payment(3, vec![pay(&wallet, Branch::Receive, 0, 25_000)])]);
    assert_eq!(wallet.sync(&chain).unwrap(), Synced { tip: 301, connected: 1, disconnected: 0 });
    assert_eq!(wallet.balance(&chain).unwrap(), sat(40_000));
}

#[test]
fn coinbase_coins_mature_at_one_hundred_confirmations() {
    let dir = tempfile::tempdir().unwrap();
    let mut wallet = regtest_wallet(dir.path());
    let mut chain = FakeChain::new();
    wallet.sync(&chain).unwrap();
    let plain = payment(1, vec![pay(&wallet, Branch::Receive, 1, 20_000)]);
    chain.mine(vec![pay(&wallet, Branch::Receive, 0, 50_000)], vec![plain]);
    let to = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::all_zeros());
    let feerate = FeeRate::from_sat_per_vb(1).unwrap();

    // At tip 99 the next block, 100, is only 99 blocks after the coinbase's: not yet.
    chain.mine_to(99);
    assert_eq!(wallet.balance(&chain).unwrap(), sat(20_000));
    let err = wallet.fund(&chain, &to, sat(30_000), feerate).expect_err("immature");
    assert!(matches!(err, WalletError::InsufficientFunds { .. }), "{err}");

    // At tip 100 block 101 can spend it: the wallet and BDK agree on the boundary.
    chain.mine_to(100);
    assert_eq!(wallet.balance(&chain).unwrap(), sat(70_000));
    let coinbase: Vec<bool> =
        wallet.confirmed_coins(&chain).unwrap().iter().map(|c| c.utxo.coinbase).collect();
    assert_eq!(coinbase.iter().filter(|c| **c).count(), 1, "{coinbase:?}");
    wallet.fund(&chain, &to, sat(30_000), feerate).unwrap();
}

#[test]
fn funding_skips_coins_spent_in_the_mempool_and_signs_a_final_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut wallet = regtest_wallet(dir.path());
    let mut chain = FakeChain::new();
    wallet.sync(&chain).unwrap();
    let paid = payment(
        1,
        vec![
            pay(&wallet, Branch::Receive, 0, 30_000),
            pay(&wallet, Branch::Receive, 1, 80_000),
            pay(&wallet, Branch::Receive, 2, 60_000),
        ],
    );
    let txid = paid.compute_txid();
    let (small, large, middle) =
        (OutPoint::new(txid, 0), OutPoint::new(txid, 1), OutPoint::new(txid, 2));
    chain.mine(vec![], vec![paid]);
    chain.mine_to(3);
    assert_eq!(wallet.balance(&chain).unwrap(), sat(170_000));

    // The large coin funds a transaction waiting in the mempool: it is still confirmed, but
    // not spendable.
    chain.spent_in_mempool.borrow_mut().insert(large);
    let outpoints =
        |coins: Vec<Coin>| -> HashSet<OutPoint> { coins.iter().map(|c| c.utxo.outpoint).collect() };
    assert_eq!(
        outpoints(wallet.confirmed_coins(&chain).unwrap()),
        HashSet::from([small, large, middle])
    );
    assert_eq!(outpoints(wallet.coins(&chain).unwrap()), HashSet::from([small, middle]));
    assert_eq!(wallet.balance(&chain).unwrap(), sat(90_000));

    let to = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::all_zeros());
    let feerate = FeeRate::from_sat_per_vb(1).unwrap();
    let tx = wallet.fund(&chain, &to, sat(50_000), feerate).unwrap();
    assert!(tx.input.iter().all(|i| i.previous_output != large), "{tx:?}");
    // Final and not replaceable: the funding's txid must not change.
    assert!(tx.input.iter().all(|i| i.sequence == Sequence::MAX), "{tx:?}");
    assert_eq!(tx.lock_time, absolute::LockTime::ZERO);
    let to_script: Vec<&TxOut> = tx.output.iter().filter(|o| o.script_pubkey == to).collect();
    assert_eq!(to_script.len(), 1, "{tx:?}");
    assert_eq!(to_script[0].value, sat(50_000));
    let change = wallet.address(Branch::Change, 0).unwrap().script_pubkey();
    assert!(
        tx.output.iter().all(|o| o.script_pubkey == to || o.script_pubkey == change),
        "change to the first change address: {tx:?}"
    );
    // Every input is signed with its own key: the transaction verifies against the chain's
    // outputs, and pays at least 1 sat/vB.
    tx.verify(|op| chain.txout(op)).expect("signed inputs verify");
    let spent: Amount =
        tx.input.iter().map(|i| chain.txout(&i.previous_output).unwrap().value).sum();
    let fee = spent - tx.output.iter().map(|o| o.value).sum();
    assert!(fee.to_sat() >= u64::try_from(tx.vsize()).unwrap(), "fee {fee} for {tx:?}");

    // The next funding gets a fresh change address.
    let tx = wallet.fund(&chain, &to, sat(20_000), feerate).unwrap();
    let next_change = wallet.address(Branch::Change, 1).unwrap().script_pubkey();
    assert!(tx.output.iter().any(|o| o.script_pubkey == next_change), "{tx:?}");

    let err = wallet.fund(&chain, &to, sat(90_000), feerate).expect_err("short");
    assert!(
        matches!(err, WalletError::InsufficientFunds { available, .. } if available == sat(90_000)),
        "{err}"
    );
}

#[test]
fn a_reorganization_drops_the_coins_of_the_blocks_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let mut wallet = regtest_wallet(dir.path());
    let mut chain = FakeChain::new();
    wallet.sync(&chain).unwrap();
    chain.mine(vec![], vec![]);
    let paid = payment(1, vec![pay(&wallet, Branch::Receive, 0, 40_000)]);
    chain.mine(vec![], vec![paid.clone()]);
    assert_eq!(wallet.balance(&chain).unwrap(), sat(40_000));

    // The node switches to a longer branch from height 1 without the payment.
    chain.blocks.truncate(2);
    chain.mine_to(3);
    assert_eq!(wallet.sync(&chain).unwrap(), Synced { tip: 3, connected: 2, disconnected: 1 });
    assert_eq!(wallet.balance(&chain).unwrap(), Amount::ZERO);
    assert!(wallet.confirmed_coins(&chain).unwrap().is_empty());

    // Mined again in a later block, the coin is back, at its new height.
    chain.mine(vec![], vec![paid]);
    let coins = wallet.coins(&chain).unwrap();
    assert_eq!(coins.iter().map(|c| c.utxo.height).collect::<Vec<_>>(), vec![4]);
}
