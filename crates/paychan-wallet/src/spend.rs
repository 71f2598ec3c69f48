//! The wallet's coins, and spending them.

use bdk_wallet::chain::ChainPosition;
use bdk_wallet::error::CreateTxError;
use bdk_wallet::{LocalOutput, SignOptions, TxOrdering};
use bitcoin::{absolute, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction};

use paychan::chain::{Chain, Utxo};
use paychan::watch::BlockSource;

use crate::{Branch, Wallet, WalletError, COINBASE_MATURITY};

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

impl Wallet {
    /// Follows the chain ([`Wallet::sync`]) and returns the wallet's confirmed outputs that can
    /// go into the next block: coinbase outputs younger than 100 blocks are left out. Outputs
    /// that a transaction in the mempool spends are included; see [`Wallet::coins`] for the
    /// spendable ones.
    ///
    /// # Errors
    /// As [`Wallet::sync`].
    pub fn confirmed_coins(
        &mut self,
        chain: &(impl Chain + BlockSource),
    ) -> Result<Vec<Coin>, WalletError> {
        let tip = self.sync(chain)?.tip;
        Ok(confirmed_at(self.bdk()?, tip))
    }

    /// Returns the coins that can be spent now: [`Wallet::confirmed_coins`] less those a
    /// transaction in the node's mempool already spends (such as a funding not yet confirmed),
    /// asked in one call.
    ///
    /// # Errors
    /// As [`Wallet::sync`].
    pub fn coins(&mut self, chain: &(impl Chain + BlockSource)) -> Result<Vec<Coin>, WalletError> {
        let confirmed = self.confirmed_coins(chain)?;
        let outpoints: Vec<OutPoint> = confirmed.iter().map(|c| c.utxo.outpoint).collect();
        let spends = chain.mempool_spends(&outpoints)?;
        Ok(confirmed.into_iter().zip(spends).filter(|(_, s)| s.is_none()).map(|(c, _)| c).collect())
    }

    /// Returns the sum of [`Wallet::coins`].
    ///
    /// # Errors
    /// As [`Wallet::coins`].
    pub fn balance(&mut self, chain: &(impl Chain + BlockSource)) -> Result<Amount, WalletError> {
        Ok(self.coins(chain)?.iter().map(|c| c.utxo.txout.value).sum())
    }

    /// Builds and signs a transaction paying `amount` to `script` at `feerate`, from the
    /// spendable coins ([`Wallet::coins`]) that BDK selects, with change to a fresh change
    /// address. The result is not broadcast; for a channel it goes to
    /// [`paychan::channel::Payer::funding_signed`].
    ///
    /// # Errors
    /// [`WalletError::InsufficientFunds`] if the spendable coins fall short;
    /// [`WalletError::Build`], [`WalletError::Sign`], and those of [`Wallet::coins`].
    pub fn fund(
        &mut self,
        chain: &(impl Chain + BlockSource),
        script: &ScriptBuf,
        amount: Amount,
        feerate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let coins = self.coins(chain)?;
        self.spend(&coins, false, script, amount, feerate)
    }

    /// Like [`Wallet::fund`], spending exactly `coins` (coin control): every one of them is an
    /// input, change goes to a fresh change address. The coins must be the wallet's, confirmed
    /// as of its last sync.
    ///
    /// # Errors
    /// [`WalletError::InsufficientFunds`] if `coins` fall short; [`WalletError::Build`],
    /// [`WalletError::Sign`], [`WalletError::Database`].
    pub fn fund_from(
        &mut self,
        coins: &[Coin],
        script: &ScriptBuf,
        amount: Amount,
        feerate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        self.spend(coins, true, script, amount, feerate)
    }

    /// Spends from `coins` only: all of them if `every_one`, else those BDK selects.
    fn spend(
        &mut self,
        coins: &[Coin],
        every_one: bool,
        script: &ScriptBuf,
        amount: Amount,
        feerate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let allowed: Vec<OutPoint> = coins.iter().map(|c| c.utxo.outpoint).collect();
        let others: Vec<OutPoint> = self
            .bdk()?
            .list_unspent()
            .map(|o| o.outpoint)
            .filter(|o| !allowed.contains(o))
            .collect();
        let mut builder = self.bdk()?.build_tx();
        builder
            .add_recipient(script.clone(), amount)
            .fee_rate(feerate)
            .unspendable(others)
            // Final and not replaceable: a funding whose txid changed would orphan the refund.
            .set_exact_sequence(Sequence::MAX)
            // The payment first, the change after it, as the previous wallet wrote them.
            .ordering(TxOrdering::Untouched)
            .nlocktime(absolute::LockTime::ZERO);
        if every_one {
            builder.add_utxos(&allowed).map_err(|e| WalletError::Build(e.to_string()))?;
            builder.manually_selected_only();
        }
        let mut psbt = match builder.finish() {
            Ok(psbt) => psbt,
            Err(CreateTxError::CoinSelection(e)) => {
                return Err(WalletError::InsufficientFunds {
                    available: e.available,
                    needed: e.needed,
                })
            }
            Err(e) => return Err(WalletError::Build(e.to_string())),
        };
        psbt.sign(&self.master, &self.secp)
            .map_err(|(_, e)| WalletError::Sign(format!("{e:?}")))?;
        let finalized = self
            .bdk()?
            .finalize_psbt(&mut psbt, SignOptions::default())
            .map_err(|e| WalletError::Sign(e.to_string()))?;
        if !finalized {
            return Err(WalletError::Sign("not every input could be signed".into()));
        }
        let tx = psbt.extract_tx().map_err(|e| WalletError::Sign(e.to_string()))?;
        // The change index handed out is saved before the transaction leaves.
        self.persist()?;
        Ok(tx)
    }
}

/// The wallet's confirmed outputs that can go into block `tip + 1`.
fn confirmed_at(bdk: &bdk_wallet::Wallet, tip: u32) -> Vec<Coin> {
    // Spendable in block tip+1 once that block is 100 blocks after the coinbase's.
    let maturity = u64::from(COINBASE_MATURITY);
    bdk.list_unspent()
        .filter_map(|output: LocalOutput| {
            let ChainPosition::Confirmed { anchor, .. } = output.chain_position else {
                return None;
            };
            let height = anchor.block_id.height;
            let coinbase =
                bdk.get_tx(output.outpoint.txid).is_some_and(|tx| tx.tx_node.tx.is_coinbase());
            if coinbase && u64::from(tip) + 1 < u64::from(height) + maturity {
                return None;
            }
            Some(Coin {
                utxo: Utxo { outpoint: output.outpoint, txout: output.txout, height, coinbase },
                branch: Branch::of(output.keychain),
                index: output.derivation_index,
            })
        })
        .collect()
}
