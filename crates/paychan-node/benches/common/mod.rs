//! What the benches share: the terms their channels open with, made-up fundings and the
//! stand-in chain that confirms them, the units they print times in, and what bounds their
//! figures: the disk's fsync floor, the raw crypto of a payment, the process's CPU time.
#![allow(dead_code)] // each bench uses a part

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Message as SecpMessage, Secp256k1, SecretKey};
use bitcoin::FeeRate;
use bitcoin::{
    absolute, transaction, Address, Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Txid, Witness,
};
use paychan::chain::{Chain, ChainError, OutputStatus, Tip, TxStatus, Utxo};
use paychan::channel::{CheckpointPolicy, PayeeConfig, PayerConfig};
use paychan::keys::ChannelSigner;
use paychan::miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use paychan::store::Store;
use paychan::watch::BlockSource;
use paychan::wire::ChannelId;
use paychan_node::client::{PayerClient, Pipelined};
use paychan_testkit::Sides;

/// The tip at which the channels open.
pub const TIP: u32 = 1_000;
/// Each payment: 1 sat, a micropayment.
pub const PAYMENT: Amount = Amount::from_sat(1);
pub const NETWORK: Network = Network::Regtest;
/// The command line's default terms (`open --help`).
const LIFETIME: u32 = 1008;
const STEP: u32 = 6;
const MARGIN: u32 = 6;

/// Both sides of a channel of `capacity` opened at [`TIP`] with the command line's default
/// terms: lifetime 1008 blocks, step 6, the payer's margin 6, a checkpoint for every 1% of the
/// capacity paid; the payee's margin 2, and funding confirmed once.
pub fn sides(
    (payer_key, payer_payout): (ChannelSigner, Address),
    (payee_key, payee_payout): (ChannelSigner, Address),
    capacity: Amount,
) -> Sides {
    let payer = PayerConfig {
        network: NETWORK,
        capacity,
        feerate_sat_per_vb: 1,
        refund_locktime: TIP + LIFETIME,
        step: STEP,
        margin: MARGIN,
        payout: payer_payout,
        checkpoints: CheckpointPolicy::default_for(capacity),
    };
    let payee = PayeeConfig {
        network: NETWORK,
        payout: payee_payout,
        margin: 2,
        min_step: 1,
        max_lifetime: PayeeConfig::default_max_lifetime(NETWORK),
        min_feerate_sat_per_vb: 1,
        min_conf: 1,
    };
    Sides { payer, payer_key, payee, payee_key }
}

/// A funding transaction from a made-up segwit coin (never broadcast: the benches' chains are
/// stand-ins).
pub fn made_up_funding(script_pubkey: ScriptBuf, value: Amount) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            // A random coin, so that every funding has a txid of its own.
            previous_output: OutPoint::new(Txid::from_byte_array(ChannelId::random().0), 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[[1u8; 72].as_slice(), [2u8; 33].as_slice()]),
        }],
        output: vec![TxOut { value, script_pubkey }],
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The chain as the payment path needs it: a fixed tip, every made-up funding confirmed and
/// unspent. Nothing is ever broadcast in these runs.
#[derive(Clone, Default)]
pub struct StandIn {
    /// The made-up fundings, by outpoint.
    pub fundings: Arc<Mutex<HashMap<OutPoint, TxOut>>>,
}

/// A chain that stays at its tip: no block ever comes.
impl BlockSource for StandIn {
    fn best_block_hash(&self) -> Result<bitcoin::BlockHash, ChainError> {
        Ok(self.tip()?.hash)
    }
    fn block_hash(&self, height: u32) -> Result<Option<bitcoin::BlockHash>, ChainError> {
        Ok((height == TIP).then(|| bitcoin::BlockHash::from_byte_array([1; 32])))
    }
    fn block(&self, hash: bitcoin::BlockHash) -> Result<bitcoin::Block, ChainError> {
        Err(ChainError::UnexpectedAnswer { method: "getblock", detail: format!("no block {hash}") })
    }
}

impl Chain for StandIn {
    fn tip(&self) -> Result<Tip, ChainError> {
        let hash = bitcoin::BlockHash::from_byte_array([1; 32]);
        Ok(Tip { height: TIP, hash, median_time_past: 0 })
    }
    fn test_accept(&self, _: &Transaction) -> Result<(), ChainError> {
        Ok(())
    }
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        Ok(tx.compute_txid())
    }
    fn tx_status(&self, _: Txid) -> Result<TxStatus, ChainError> {
        Ok(TxStatus::Confirmed(6))
    }
    fn output_status(&self, outpoint: OutPoint) -> Result<OutputStatus, ChainError> {
        Ok(match self.fundings.lock().expect("the fundings").get(&outpoint) {
            Some(txout) => OutputStatus::Unspent { txout: txout.clone(), confirmations: 6 },
            None => OutputStatus::SpentOrMissing,
        })
    }
    fn output_status_in_blocks(&self, outpoint: OutPoint) -> Result<OutputStatus, ChainError> {
        self.output_status(outpoint)
    }
    fn find_spend(&self, _: OutPoint) -> Result<Option<(Transaction, u32)>, ChainError> {
        Ok(None)
    }
    fn mempool_spends(&self, outpoints: &[OutPoint]) -> Result<Vec<Option<Txid>>, ChainError> {
        Ok(vec![None; outpoints.len()])
    }
    fn submit_package(&self, _: &[Transaction]) -> Result<(), ChainError> {
        Err(ChainError::UnexpectedAnswer { method: "submitpackage", detail: "not here".into() })
    }
    fn mempool_min_feerate(&self) -> Result<FeeRate, ChainError> {
        Ok(FeeRate::from_sat_per_vb(1).expect("a fee rate"))
    }
    fn fee_rate(&self, _: u16) -> Result<FeeRate, ChainError> {
        Ok(FeeRate::from_sat_per_vb(1).expect("a fee rate"))
    }
    fn scan_outputs(
        &self,
        _: &[Descriptor<DescriptorPublicKey>],
        _: u32,
    ) -> Result<Vec<Utxo>, ChainError> {
        Ok(Vec::new())
    }
}

// What bounds the figures, measured in the same run as them.

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The median time of writing 4 KiB and flushing it to disk, in `dir`.
pub fn fsync_floor(dir: &Path, n: usize) -> Duration {
    use std::io::Write;
    let path = dir.join("fsync");
    let mut file = std::fs::File::create(&path).expect("file");
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            file.write_all(&[7; 4096]).expect("write");
            file.sync_data().expect("fdatasync");
            t.elapsed()
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(path);
    times.sort();
    times[n / 2]
}

/// The median over rounds of the time of one ECDSA signature and one verification with
/// libsecp256k1 (the `secp256k1` crate that `bitcoin` re-exports), on one core.
pub fn crypto_cost(n: usize) -> Duration {
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[1; 32]).expect("a valid key");
    let public = key.public_key(&secp);
    let mut rounds: Vec<Duration> = (0..10)
        .map(|round| {
            let t = Instant::now();
            for i in 0..n / 10 {
                let msg = SecpMessage::from_digest(
                    bitcoin::hashes::sha256::Hash::hash(&((round * n + i) as u64).to_le_bytes())
                        .to_byte_array(),
                );
                let sig = secp.sign_ecdsa(&msg, &key);
                secp.verify_ecdsa(&msg, &sig, &public).expect("a valid signature");
            }
            t.elapsed() / (n / 10) as u32
        })
        .collect();
    rounds.sort();
    rounds[rounds.len() / 2]
}

/// The CPU time this process has used so far, all threads (from `/proc/self/stat`, whose times
/// are in USER_HZ = 100 ticks per second on Linux).
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Pays `n` payments of [`PAYMENT`] pipelined (`window` in flight, `batch` signed and saved
/// together), starting when `start` lets every payer go, and returns each payment's latency:
/// from its batch's sending to its acknowledgement.
pub async fn pay_timed<C: Chain + BlockSource, S: Store>(
    client: &mut PayerClient<'_, C, S>,
    n: usize,
    (window, batch): (usize, usize),
    start: &tokio::sync::Barrier,
) -> Vec<Duration> {
    let amounts = vec![PAYMENT; n];
    // The batches sent and not yet wholly acknowledged, oldest first.
    let mut sent: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut latencies = Vec::with_capacity(n);
    let mut next_acked = 1u64;
    start.wait().await;
    client
        .pay_pipelined(&amounts, window, batch, |e| match e {
            Pipelined::Sent { up_to } => sent.push_back((up_to, Instant::now())),
            Pipelined::Acknowledged { up_to } => {
                let now = Instant::now();
                while next_acked <= up_to {
                    while sent.front().is_some_and(|(u, _)| *u < next_acked) {
                        sent.pop_front();
                    }
                    let at = sent.front().expect("sent before acked").1;
                    latencies.push(now - at);
                    next_acked += 1;
                }
            }
        })
        .await
        .expect("payments");
    latencies
}
