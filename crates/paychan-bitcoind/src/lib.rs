//! paychan's chain adapter: [`Chain`] over Bitcoin Core's JSON-RPC, with `bitcoincore-rpc`.
//!
//! [`RpcChain`] is what the `paychan` command line, the payee daemon and the payer client use to
//! learn the tip, broadcast, follow the funding and find a channel's closing transaction. Its
//! calls block: async callers run them on tokio's blocking pool.
//!
//! `rust-bitcoincore-rpc` is archived and its typed results drift from newer Core releases, so
//! every call here goes through `call()` with a small serde type of our own, checked against the
//! node the tests start.
#![warn(missing_docs)]

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::{
    Amount, Block, BlockHash, FeeRate, Network, OutPoint, ScriptBuf, Transaction, TxOut, Txid,
};
use bitcoincore_rpc::jsonrpc;
use bitcoincore_rpc::{Auth, Client, RpcApi};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, RwLock};

use paychan::chain::{Chain, ChainError, OutputStatus, Rejection, Tip, TxStatus, Utxo};
use paychan::watch::BlockSource;

/// The fee rate [`RpcChain::fee_rate`] falls back to on regtest, where `estimatesmartfee` has
/// no data until many blocks with fee-paying transactions exist: 2 sat/vB, twice the default
/// minimum relay fee.
pub const REGTEST_FALLBACK_FEERATE: FeeRate = FeeRate::from_sat_per_kwu(500);

/// Bitcoin Core's RPC error code for "no such transaction" (`RPC_INVALID_ADDRESS_OR_KEY`).
const RPC_INVALID_ADDRESS_OR_KEY: i32 = -5;
/// Bitcoin Core's RPC error code for a parameter out of range (`RPC_INVALID_PARAMETER`): a
/// height above the best block, for `getblockhash`.
const RPC_INVALID_PARAMETER: i32 = -8;
/// Bitcoin Core's RPC error codes for a transaction refused by `sendrawtransaction`:
/// `RPC_TRANSACTION_ERROR`, `RPC_TRANSACTION_REJECTED`, `RPC_TRANSACTION_ALREADY_IN_CHAIN`.
const RPC_TRANSACTION_REFUSED: [i32; 3] = [-25, -26, -27];

/// A Bitcoin Core node reached over JSON-RPC.
///
/// Confirmations of arbitrary transactions come from `getrawtransaction`, so the node must run
/// with `-txindex=1`.
pub struct RpcChain {
    /// Replaced when the node refuses our credentials: a restarted node writes a new cookie.
    client: RwLock<Arc<Client>>,
    url: String,
    auth: Auth,
    network: Network,
}

impl RpcChain {
    /// Connects to the node at `url` (e.g. `http://127.0.0.1:18443`), asks which chain it is on
    /// and checks that its transaction index is synced.
    ///
    /// # Errors
    /// [`ChainError::Rpc`] if the node cannot be reached or the credentials are refused;
    /// [`ChainError::NoTxIndex`].
    pub fn new(url: &str, auth: Auth) -> Result<RpcChain, ChainError> {
        // `HOST:PORT` as Bitcoin Core's own tools take it: HTTP.
        let url = match url.contains("://") {
            true => url.to_owned(),
            false => format!("http://{url}"),
        };
        let url = url.as_str();
        let client = connect(url, auth.clone())?;
        let client = RwLock::new(Arc::new(client));
        let mut chain = RpcChain { client, url: url.to_owned(), auth, network: Network::Regtest };
        let info: BlockchainInfo = chain.call("getblockchaininfo", &[])?;
        chain.network = Network::from_core_arg(&info.chain).map_err(|e| {
            ChainError::UnexpectedAnswer { method: "getblockchaininfo", detail: e.to_string() }
        })?;
        let indexes: Value = chain.call("getindexinfo", &[json!("txindex")])?;
        if indexes["txindex"]["synced"] != json!(true) {
            return Err(ChainError::NoTxIndex);
        }
        Ok(chain)
    }

    /// Returns the node's chain.
    pub fn network(&self) -> Network {
        self.network
    }

    /// Mines `blocks` blocks paying their coinbase to `address` (regtest only) and returns the
    /// new tip height.
    ///
    /// # Errors
    /// [`ChainError::Rpc`], e.g. off regtest.
    pub fn mine(&self, blocks: u32, address: &bitcoin::Address) -> Result<u32, ChainError> {
        let _: Vec<Value> =
            self.call("generatetoaddress", &[json!(blocks), json!(address.to_string())])?;
        Ok(self.tip()?.height)
    }

    /// Mines one block holding exactly `txs` (and no mempool transaction), regtest only. This is
    /// how a test puts a transaction on chain that the mempool would refuse to relay, such as a
    /// double-spend.
    ///
    /// # Errors
    /// [`ChainError::Rpc`] if a transaction is invalid in that block.
    pub fn mine_block_with(
        &self,
        txs: &[Transaction],
        address: &bitcoin::Address,
    ) -> Result<(), ChainError> {
        let raw: Vec<String> = txs.iter().map(serialize_hex).collect();
        let _: Value = self.call("generateblock", &[json!(address.to_string()), json!(raw)])?;
        Ok(())
    }

    /// Returns the underlying RPC client, for calls this type does not wrap.
    pub fn client(&self) -> Arc<Client> {
        Arc::clone(&self.client.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reports `tx` refused for `rejection`. Core reports a repeated broadcast of a transaction
    /// already in the best chain as missing inputs; that one is told apart here.
    fn rejected<T>(&self, tx: &Transaction, rejection: Rejection) -> Result<T, ChainError> {
        let txid = tx.compute_txid();
        let rejection = match rejection {
            Rejection::MissingOrSpent { reason }
                if matches!(self.tx_status(txid)?, TxStatus::Confirmed(_)) =>
            {
                Rejection::AlreadyConfirmed { reason }
            }
            other => other,
        };
        Err(ChainError::Rejected { txid, rejection })
    }

    /// `gettxout`, counting the mempool's spends and outputs or not.
    fn txout(&self, outpoint: OutPoint, mempool: bool) -> Result<OutputStatus, ChainError> {
        let args = [json!(outpoint.txid), json!(outpoint.vout), json!(mempool)];
        let info: Option<TxOutInfo> = self.call("gettxout", &args)?;
        Ok(match info {
            Some(i) => OutputStatus::Unspent {
                txout: TxOut { value: i.value, script_pubkey: i.script_pubkey.hex },
                confirmations: i.confirmations,
            },
            None => OutputStatus::SpentOrMissing,
        })
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        args: &[Value],
    ) -> Result<T, ChainError> {
        match self.client().call(method, args) {
            Err(e) if is_unauthorized(&e) => {
                // The node restarted with a new cookie: read it again, once.
                let fresh = Arc::new(connect(&self.url, self.auth.clone())?);
                *self.client.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&fresh);
                fresh.call(method, args).map_err(|e| rpc_failed(method, e))
            }
            result => result.map_err(|e| rpc_failed(method, e)),
        }
    }
}

/// A client that opens a connection per request (minreq). bitcoincore-rpc's own transport keeps
/// one connection open, and on it a request often waited for a delayed acknowledgement:
/// reading 473 blocks took 10.7 s with it, about 22 ms a block, against 0.4 s from Python's
/// client (`benches/wallet_sync.rs` in paychan-cli).
fn connect(url: &str, auth: Auth) -> Result<Client, ChainError> {
    let (user, pass) = auth.get_user_pass().map_err(|e| rpc_failed("connect", e))?;
    let mut transport = jsonrpc::http::minreq_http::Builder::new()
        .url(url)
        .map_err(|e| rpc_failed("connect", jsonrpc::Error::Transport(Box::new(e)).into()))?
        .timeout(RPC_TIMEOUT);
    if let Some(user) = user {
        transport = transport.basic_auth(user, pass);
    }
    Ok(Client::from_jsonrpc(jsonrpc::Client::with_transport(transport.build())))
}

/// How long a node call may take (bitcoincore-rpc's own default).
const RPC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

fn rpc_failed(method: &'static str, e: bitcoincore_rpc::Error) -> ChainError {
    ChainError::Rpc { method, source: Box::new(e) }
}

/// Whether the node refused our credentials (HTTP 401).
fn is_unauthorized(e: &bitcoincore_rpc::Error) -> bool {
    matches!(e, bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Transport(t)) if t.to_string().contains("401"))
}

/// The RPC error's code and message, if the node answered with one.
fn rpc_error(e: &ChainError) -> Option<(i32, &str)> {
    let ChainError::Rpc { source, .. } = e else { return None };
    match source.downcast_ref::<bitcoincore_rpc::Error>()? {
        bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Rpc(err)) => {
            Some((err.code, err.message.as_str()))
        }
        _ => None,
    }
}

/// A reason that means "the node already has it in its mempool": not a failure to broadcast.
fn already_in_mempool(reason: &str) -> bool {
    reason.contains("txn-already-in-mempool")
}

/// Three calls per new block: `getbestblockhash`, `getblockhash`, and `getblock` in its raw
/// form (verbosity 0), decoded here.
impl BlockSource for RpcChain {
    fn best_block_hash(&self) -> Result<BlockHash, ChainError> {
        self.call("getbestblockhash", &[])
    }

    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        match self.call("getblockhash", &[json!(height)]) {
            Ok(hash) => Ok(Some(hash)),
            Err(e) if rpc_error(&e).is_some_and(|(c, _)| c == RPC_INVALID_PARAMETER) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn block(&self, hash: BlockHash) -> Result<Block, ChainError> {
        let hex: String = self.call("getblock", &[json!(hash), json!(0)])?;
        bitcoin::consensus::encode::deserialize_hex(&hex)
            .map_err(|e| ChainError::UnexpectedAnswer { method: "getblock", detail: e.to_string() })
    }
}

#[derive(Deserialize)]
struct BlockchainInfo {
    chain: String,
    blocks: u32,
    bestblockhash: BlockHash,
    mediantime: u64,
}

#[derive(Deserialize)]
struct MempoolAccept {
    allowed: bool,
    #[serde(rename = "reject-reason")]
    reject_reason: Option<String>,
    /// Newer nodes explain the reason here (e.g. which transaction a replacement failed against).
    #[serde(rename = "reject-details")]
    reject_details: Option<String>,
}

#[derive(Deserialize)]
struct RawTxInfo {
    confirmations: Option<u32>,
}

#[derive(Deserialize)]
struct TxOutInfo {
    confirmations: u32,
    #[serde(with = "bitcoin::amount::serde::as_btc")]
    value: Amount,
    #[serde(rename = "scriptPubKey")]
    script_pubkey: ScriptPubKeyInfo,
}

#[derive(Deserialize)]
struct ScriptPubKeyInfo {
    hex: ScriptBuf,
}

#[derive(Deserialize)]
struct SpendingPrevout {
    /// The mempool transaction spending the output, if any.
    spendingtxid: Option<Txid>,
}

#[derive(Deserialize)]
struct SmartFee {
    /// BTC per 1000 vbytes.
    feerate: Option<f64>,
}

#[derive(Deserialize)]
struct ScanResult {
    success: bool,
    unspents: Vec<ScannedOutput>,
}

#[derive(Deserialize)]
struct ScannedOutput {
    txid: Txid,
    vout: u32,
    #[serde(rename = "scriptPubKey")]
    script_pubkey: ScriptBuf,
    #[serde(with = "bitcoin::amount::serde::as_btc")]
    amount: Amount,
    height: u32,
    /// Required: a node that leaves it out would make young coinbase outputs look spendable.
    coinbase: bool,
}

impl Chain for RpcChain {
    fn tip(&self) -> Result<Tip, ChainError> {
        let info: BlockchainInfo = self.call("getblockchaininfo", &[])?;
        let hash = info.bestblockhash;
        Ok(Tip { height: info.blocks, hash, median_time_past: info.mediantime })
    }

    fn test_accept(&self, tx: &Transaction) -> Result<(), ChainError> {
        let results: Vec<MempoolAccept> =
            self.call("testmempoolaccept", &[json!([serialize_hex(tx)])])?;
        let [result] = &results[..] else {
            return Err(ChainError::UnexpectedAnswer {
                method: "testmempoolaccept",
                detail: format!("{} results for one transaction", results.len()),
            });
        };
        match (&result.allowed, &result.reject_reason) {
            (true, _) => Ok(()),
            (false, Some(reason)) if already_in_mempool(reason) => Ok(()),
            (false, reason) => {
                let reason = reason.as_deref().unwrap_or("no reason given");
                self.rejected(tx, Rejection::from_reason(reason, result.reject_details.as_deref()))
            }
        }
    }

    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        self.test_accept(tx)?;
        let txid = tx.compute_txid();
        match self.call::<Txid>("sendrawtransaction", &[json!(serialize_hex(tx))]) {
            Ok(sent) => Ok(sent),
            Err(e) => match rpc_error(&e) {
                Some((_, message)) if already_in_mempool(message) => Ok(txid),
                // The mempool may have changed since the test: report the node's reason.
                Some((code, message)) if RPC_TRANSACTION_REFUSED.contains(&code) => {
                    self.rejected(tx, Rejection::from_reason(message, None))
                }
                _ => Err(e),
            },
        }
    }

    fn tx_status(&self, txid: Txid) -> Result<TxStatus, ChainError> {
        match self.call::<RawTxInfo>("getrawtransaction", &[json!(txid), json!(true)]) {
            Ok(RawTxInfo { confirmations: Some(n) }) if n > 0 => Ok(TxStatus::Confirmed(n)),
            // Without a confirmations field it is in the mempool; with 0 it is in a block that
            // is no longer in the best chain.
            Ok(RawTxInfo { confirmations: None }) => Ok(TxStatus::InMempool),
            Ok(RawTxInfo { confirmations: Some(_) }) => Ok(TxStatus::Unknown),
            Err(e) if rpc_error(&e).is_some_and(|(c, _)| c == RPC_INVALID_ADDRESS_OR_KEY) => {
                Ok(TxStatus::Unknown)
            }
            Err(e) => Err(e),
        }
    }

    fn output_status(&self, outpoint: OutPoint) -> Result<OutputStatus, ChainError> {
        self.txout(outpoint, true)
    }

    fn output_status_in_blocks(&self, outpoint: OutPoint) -> Result<OutputStatus, ChainError> {
        self.txout(outpoint, false)
    }

    fn find_spend(&self, outpoint: OutPoint) -> Result<Option<(Transaction, u32)>, ChainError> {
        let tip = self.tip()?.height;
        // No walk past the output's own block (the transaction index tells its depth), and none
        // at all if its transaction is in no block of the best chain (a reorganization took it
        // away): without this a reorganized funding was looked for back to the genesis block.
        let TxStatus::Confirmed(confirmations) = self.tx_status(outpoint.txid)? else {
            return Ok(None);
        };
        let lowest = (tip + 1).saturating_sub(confirmations);
        for height in (lowest..=tip).rev() {
            let Some(hash) = self.block_hash(height)? else { continue };
            let block = self.block(hash)?;
            let spends = |tx: &&Transaction| tx.input.iter().any(|i| i.previous_output == outpoint);
            if let Some(tx) = block.txdata.iter().find(spends) {
                return Ok(Some((tx.clone(), height)));
            }
        }
        Ok(None)
    }

    fn mempool_spends(&self, outpoints: &[OutPoint]) -> Result<Vec<Option<Txid>>, ChainError> {
        if outpoints.is_empty() {
            return Ok(Vec::new());
        }
        let asked: Vec<Value> =
            outpoints.iter().map(|o| json!({ "txid": o.txid, "vout": o.vout })).collect();
        let answers: Vec<SpendingPrevout> = self.call("gettxspendingprevout", &[json!(asked)])?;
        if answers.len() != outpoints.len() {
            return Err(ChainError::UnexpectedAnswer {
                method: "gettxspendingprevout",
                detail: format!("{} answers for {} outputs", answers.len(), outpoints.len()),
            });
        }
        Ok(answers.into_iter().map(|a| a.spendingtxid).collect())
    }

    fn submit_package(&self, txs: &[Transaction]) -> Result<(), ChainError> {
        let hexes: Vec<String> = txs.iter().map(serialize_hex).collect();
        let answer: Value = self.call("submitpackage", &[json!(hexes)])?;
        if answer["package_msg"] == "success" {
            return Ok(());
        }
        // The first transaction refused, with the node's reason.
        let results = answer["tx-results"].as_object();
        for tx in txs {
            let refused = results.into_iter().flat_map(|r| r.values()).find(|r| {
                r["txid"].as_str() == Some(&tx.compute_txid().to_string()) && r["error"].is_string()
            });
            if let Some(result) = refused {
                let reason = result["error"].as_str().unwrap_or("no reason given");
                return self.rejected(tx, Rejection::from_reason(reason, None));
            }
        }
        Err(ChainError::UnexpectedAnswer {
            method: "submitpackage",
            detail: format!("package refused: {}", answer["package_msg"]),
        })
    }

    fn mempool_min_feerate(&self) -> Result<FeeRate, ChainError> {
        let info: Value = self.call("getmempoolinfo", &[])?;
        let rate = |field: &str| -> Result<u64, ChainError> {
            let btc_per_kvb = info[field].as_f64().ok_or_else(|| ChainError::UnexpectedAnswer {
                method: "getmempoolinfo",
                detail: format!("no {field}"),
            })?;
            let sat_per_kvb = Amount::from_btc(btc_per_kvb).map_err(|e| {
                ChainError::UnexpectedAnswer { method: "getmempoolinfo", detail: e.to_string() }
            })?;
            Ok(sat_per_kvb.to_sat())
        };
        let sat_per_kvb = rate("minrelaytxfee")?.max(rate("mempoolminfee")?);
        Ok(FeeRate::from_sat_per_kwu(sat_per_kvb.div_ceil(4)))
    }

    fn fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError> {
        let estimate: SmartFee = self.call("estimatesmartfee", &[json!(target_blocks)])?;
        match estimate.feerate {
            Some(btc_per_kvb) => {
                let sat_per_kvb =
                    Amount::from_btc(btc_per_kvb).map_err(|e| ChainError::UnexpectedAnswer {
                        method: "estimatesmartfee",
                        detail: e.to_string(),
                    })?;
                // sat/kvB to sat/kwu: a vbyte is four weight units.
                Ok(FeeRate::from_sat_per_kwu(sat_per_kvb.to_sat().div_ceil(4)))
            }
            None if self.network == Network::Regtest => Ok(REGTEST_FALLBACK_FEERATE),
            None => Err(ChainError::UnexpectedAnswer {
                method: "estimatesmartfee",
                detail: format!("no estimate for {target_blocks} blocks yet"),
            }),
        }
    }

    fn scan_outputs(
        &self,
        descriptors: &[Descriptor<DescriptorPublicKey>],
        range_end: u32,
    ) -> Result<Vec<Utxo>, ChainError> {
        let objects: Vec<Value> = descriptors
            .iter()
            .map(|d| json!({ "desc": d.to_string(), "range": range_end }))
            .collect();
        let result: ScanResult = self.call("scantxoutset", &[json!("start"), json!(objects)])?;
        if !result.success {
            return Err(ChainError::UnexpectedAnswer {
                method: "scantxoutset",
                detail: "the scan did not complete".into(),
            });
        }
        Ok(result
            .unspents
            .into_iter()
            .map(|u| Utxo {
                outpoint: OutPoint::new(u.txid, u.vout),
                txout: TxOut { value: u.amount, script_pubkey: u.script_pubkey },
                height: u.height,
                coinbase: u.coinbase,
            })
            .collect())
    }
}
