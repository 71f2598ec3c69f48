//! Fee bumping by child-pays-for-parent: a child of a presigned transaction of ours (the
//! payee's commitment or settlement, the payer's refund), spending our output of it, with a
//! coin of the wallet's added when that output alone cannot pay.

use bdk_wallet::chain::ChainPosition;
use bdk_wallet::{KeychainKind, LocalOutput};
use bitcoin::psbt::Psbt;
use bitcoin::{
    absolute, transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Weight, Witness,
};
use miniscript::psbt::PsbtExt;

use paychan::chain::Chain;
use paychan::watch::BlockSource;

use crate::{Wallet, WalletError};

/// The witness of a `wpkh` input at most: the item count, a 72-byte signature and a 33-byte
/// key, each with its length.
const P2WPKH_WITNESS: Weight = Weight::from_wu(1 + 1 + 72 + 1 + 33);
/// The segwit marker and flag bytes, which an unsigned transaction's weight leaves out.
const SEGWIT_MARKER: Weight = Weight::from_wu(2);
/// The smallest change output Bitcoin Core relays to a `wpkh` script (its dust limit).
const MIN_CHANGE: Amount = Amount::from_sat(294);

/// A child that pays for its parent: the transaction, and the package's fee rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bump {
    /// The child, signed.
    pub child: Transaction,
    /// Its fee.
    pub fee: Amount,
    /// The fee rate of parent and child together.
    pub package_feerate: FeeRate,
}

impl Wallet {
    /// Builds and signs a child of `parent` (a transaction with an output to one of the
    /// wallet's addresses, paying `parent_fee`) so that both together pay `package_feerate`:
    /// it spends the parent's output to us and, if that is short, the wallet's largest spendable
    /// coins ([`Wallet::coins`]) until they cover the fee, all to a change address. The child
    /// signals replace-by-fee, so a later bump can replace it. Nothing is broadcast.
    ///
    /// # Errors
    /// [`WalletError::NothingToBump`] if no output of `parent` is the wallet's;
    /// [`WalletError::InsufficientFunds`] if the coins cannot pay the fee;
    /// [`WalletError::Sign`]; those of [`Wallet::coins`].
    pub fn cpfp_child(
        &mut self,
        chain: &(impl Chain + BlockSource),
        parent: &Transaction,
        parent_fee: Amount,
        package_feerate: FeeRate,
    ) -> Result<Bump, WalletError> {
        let txid = parent.compute_txid();
        let bdk = self.bdk()?;
        let (vout, ours, keychain, index) = parent
            .output
            .iter()
            .enumerate()
            .filter_map(|(vout, out)| {
                let (keychain, index) = bdk.derivation_of_spk(out.script_pubkey.clone())?;
                Some((vout, out, keychain, index))
            })
            .max_by_key(|(_, out, _, _)| out.value)
            .ok_or(WalletError::NothingToBump { txid })?;
        let parent_out = LocalOutput {
            outpoint: OutPoint::new(txid, u32::try_from(vout).expect("few outputs")),
            txout: ours.clone(),
            keychain,
            is_spent: false,
            derivation_index: index,
            chain_position: ChainPosition::Unconfirmed { first_seen: None, last_seen: None },
        };
        let coins = self.coins(chain)?;
        let bdk = self.bdk()?;
        let mut extra: Vec<LocalOutput> =
            coins.iter().filter_map(|c| bdk.get_utxo(c.utxo.outpoint)).collect();
        extra.sort_by_key(|o| std::cmp::Reverse(o.txout.value));
        // The next unused one: a bump refused and tried again at every poll hands out no new
        // address each time (two children in one run may share it until one confirms).
        let change = bdk.next_unused_address(KeychainKind::Internal).script_pubkey();
        let parent_vsize = parent.weight().to_vbytes_ceil();

        let mut shortfall = (Amount::ZERO, Amount::ZERO);
        for take in 0..=extra.len() {
            let inputs: Vec<LocalOutput> =
                std::iter::once(parent_out.clone()).chain(extra[..take].iter().cloned()).collect();
            let total: Amount = inputs.iter().map(|o| o.txout.value).sum();
            let unsigned = child_tx(&inputs, &change, total);
            // The segwit marker and flag, then each input's witness.
            let child_weight =
                unsigned.weight() + SEGWIT_MARKER + P2WPKH_WITNESS * inputs.len() as u64;
            let package_vsize = parent_vsize + child_weight.to_vbytes_ceil();
            let package_fee = package_feerate * Weight::from_vb_unchecked(package_vsize);
            // The child pays what the parent lacks, and at least its own relay fee.
            let fee = package_fee
                .checked_sub(parent_fee)
                .unwrap_or(Amount::ZERO)
                .max(Amount::from_sat(child_weight.to_vbytes_ceil()));
            match total.checked_sub(fee) {
                Some(left) if left >= MIN_CHANGE => {
                    let child = self.sign_child(child_tx(&inputs, &change, left), &inputs)?;
                    self.persist()?;
                    let weight = Weight::from_vb_unchecked(package_vsize);
                    let rate = FeeRate::from_sat_per_kwu(
                        (parent_fee + fee).to_sat() * 1000 / weight.to_wu().max(1),
                    );
                    return Ok(Bump { child, fee, package_feerate: rate });
                }
                _ => shortfall = (total, fee + MIN_CHANGE),
            }
        }
        let (available, needed) = shortfall;
        Err(WalletError::InsufficientFunds { available, needed })
    }

    fn sign_child(
        &mut self,
        tx: Transaction,
        inputs: &[LocalOutput],
    ) -> Result<Transaction, WalletError> {
        let sign_err = |e: String| WalletError::Sign(e);
        let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|e| sign_err(e.to_string()))?;
        for (slot, input) in psbt.inputs.iter_mut().zip(inputs) {
            *slot = self
                .bdk()?
                .get_psbt_input(input.clone(), None, true)
                .map_err(|e| sign_err(e.to_string()))?;
            // The parent is not in BDK's graph, so the output it spends is set here.
            slot.witness_utxo = Some(input.txout.clone());
        }
        psbt.sign(&self.master, &self.secp).map_err(|(_, e)| sign_err(format!("{e:?}")))?;
        psbt.finalize_mut(&self.secp).map_err(|e| sign_err(format!("{e:?}")))?;
        psbt.extract_tx().map_err(|e| sign_err(e.to_string()))
    }
}

/// The child spending `inputs` to `change`, `value` in all, unsigned.
fn child_tx(inputs: &[LocalOutput], change: &ScriptBuf, value: Amount) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: inputs
            .iter()
            .map(|o| TxIn {
                previous_output: o.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: vec![TxOut { value, script_pubkey: change.clone() }],
    }
}
