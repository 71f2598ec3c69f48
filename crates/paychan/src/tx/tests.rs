//! Tests of the channel transaction builders: amounts, fees, dust, and validity under Bitcoin
//! Core's script interpreter (the `bitcoinconsensus` feature, on in tests).

use bitcoin::hashes::Hash;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, TxOut, Txid, Weight};

use super::*;
use crate::funding::FundingScript;
use crate::keys::ChannelSigner;

struct Fixture {
    payer: ChannelSigner,
    payee: ChannelSigner,
    builder: ChannelTxBuilder,
}

fn p2wpkh(signer: &ChannelSigner) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&signer.public_key().wpubkey_hash().unwrap())
}

fn fixture(capacity: u64, feerate: u64) -> Result<Fixture, TxError> {
    let payer = ChannelSigner::from_slice(&[1; 32]).unwrap();
    let payee = ChannelSigner::from_slice(&[2; 32]).unwrap();
    let funding = FundingScript::new(payer.public_key(), payee.public_key()).unwrap();
    let params = ChannelTxParams {
        funding_outpoint: OutPoint::new(Txid::from_byte_array([5; 32]), 1),
        capacity: Amount::from_sat(capacity),
        feerate: FeeRate::from_sat_per_vb(feerate).unwrap(),
        payer_script: p2wpkh(&ChannelSigner::from_slice(&[11; 32]).unwrap()),
        payee_script: p2wpkh(&ChannelSigner::from_slice(&[12; 32]).unwrap()),
    };
    let builder = ChannelTxBuilder::new(funding, params)?;
    Ok(Fixture { payer, payee, builder })
}

impl Fixture {
    fn sign(&self, tx: Transaction) -> Transaction {
        let sighash = self.builder.sighash(&tx).unwrap();
        let a = self.payer.sign(sighash);
        let b = self.payee.sign(sighash);
        self.builder.finalize(tx, a, b).unwrap()
    }

    fn verify(
        &self,
        tx: &Transaction,
    ) -> Result<(), bitcoin::consensus::validation::TxVerifyError> {
        let p = self.builder.params();
        let prevout = TxOut {
            value: p.capacity,
            script_pubkey: self.builder.funding().script_pubkey().clone(),
        };
        tx.verify(|op| (*op == p.funding_outpoint).then(|| prevout.clone()))
    }

    fn fee(&self, tx: &Transaction) -> Amount {
        self.builder.params().capacity - tx.output.iter().map(|o| o.value).sum::<Amount>()
    }
}

#[test]
fn every_transaction_type_verifies_once_signed() {
    let f = fixture(100_000, 2).unwrap();
    let txs = [
        f.builder.refund(1000).unwrap(),
        f.builder.commitment(Amount::from_sat(5000), 990).unwrap(),
        f.builder.settlement(Amount::from_sat(5000)).unwrap(),
    ];
    for tx in txs {
        let signed = f.sign(tx);
        f.verify(&signed).unwrap();
    }
}

#[test]
fn fee_is_computed_from_the_signed_weight() {
    let f = fixture(100_000, 3).unwrap();
    for tx in [
        f.builder.refund(1000).unwrap(),
        f.builder.commitment(Amount::from_sat(5000), 990).unwrap(),
    ] {
        let predicted = spending_weight(&tx, f.builder.funding().max_satisfaction_weight());
        let signed = f.sign(tx);
        let actual = signed.weight();
        // Real signatures are at most as long as miniscript's bound, and at most 2 bytes shorter
        // each (72 with the sighash byte at most, 71 about half the time).
        assert!(actual <= predicted, "{actual} > {predicted}");
        assert!(predicted - actual <= Weight::from_wu(4), "{actual} vs {predicted}");
        let fee = f.fee(&signed);
        assert_eq!(fee, fee_for_weight(FeeRate::from_sat_per_vb(3).unwrap(), predicted).unwrap());
        assert!(fee.to_sat() >= 3 * signed.vsize() as u64, "fee rate below 3 sat/vB");
    }
}

#[test]
fn commitment_splits_capacity_minus_fee() {
    let f = fixture(100_000, 2).unwrap();
    let paid = Amount::from_sat(12_345);
    let tx = f.builder.commitment(paid, 990).unwrap();
    assert_eq!(tx.output.len(), 2);
    assert_eq!(tx.output[1].value, paid);
    assert_eq!(tx.lock_time.to_consensus_u32(), 990);
    // The payer's output is the capacity less `paid` and the fee at 2 sat/vB on the signed size
    // (+1 vB at most: real signatures can be a byte shorter than the bound).
    let vsize = f.sign(tx.clone()).vsize() as u64;
    let payer = tx.output[0].value.to_sat();
    assert!(payer <= 100_000 - 12_345 - 2 * vsize, "payer gets {payer} at {vsize} vB");
    assert!(payer >= 100_000 - 12_345 - 2 * (vsize + 1), "payer gets {payer} at {vsize} vB");
    let settlement = f.builder.settlement(paid).unwrap();
    assert_eq!(settlement.lock_time.to_consensus_u32(), 0);
    assert_eq!(settlement.output, tx.output, "same split, only the locktime differs");
}

#[test]
fn outputs_below_dust_are_left_out_and_their_value_goes_to_the_fee() {
    let f = fixture(100_000, 2).unwrap();
    let dust = f.builder.params().payee_script.minimal_non_dust();
    assert_eq!(dust, Amount::from_sat(294), "P2WPKH dust limit at 3 sat/vB");
    // The payee's total below its dust limit: no payee output, the total goes to the fee, and
    // the payer's output is what it would be with that total paid.
    let refund_value = f.builder.refund(1000).unwrap().output[0].value;
    for small in [Amount::from_sat(1), dust - Amount::from_sat(1)] {
        for tx in [f.builder.commitment(small, 990).unwrap(), f.builder.settlement(small).unwrap()]
        {
            assert_eq!(tx.output.len(), 1, "{small}");
            assert_eq!(tx.output[0].value, refund_value - small);
            assert_eq!(f.fee(&tx), f.fee(&f.builder.refund(1000).unwrap()) + small);
            f.verify(&f.sign(tx)).unwrap();
        }
    }
    // Exactly at the dust limit the output exists; a settlement of nothing pays only the payer.
    assert_eq!(f.builder.commitment(dust, 990).unwrap().output.len(), 2);
    assert_eq!(f.builder.settlement(Amount::ZERO).unwrap().output.len(), 1);
    // Payer's side below dust: only the payee's output remains, the remainder is fee.
    let max = f.builder.max_payable();
    let tx = f.builder.commitment(max - Amount::from_sat(10), 990).unwrap();
    assert_eq!(tx.output.len(), 1);
    assert_eq!(tx.output[0].value, max - Amount::from_sat(10));
    f.verify(&f.sign(tx)).unwrap();
    // Paying everything is allowed.
    assert_eq!(f.builder.commitment(max, 990).unwrap().output.len(), 1);
}

#[test]
fn the_smallest_capacity_keeps_an_output_in_every_split() {
    let Err(TxError::CapacityTooSmall { needed, .. }) = fixture(300, 2) else { panic!() };
    let f = fixture(needed.to_sat(), 2).unwrap();
    let dust = f.builder.params().payee_script.minimal_non_dust();
    for paid in [0, 1, dust.to_sat() - 1, dust.to_sat(), f.builder.max_payable().to_sat()] {
        let tx = f.builder.settlement(Amount::from_sat(paid)).unwrap();
        assert!(!tx.output.is_empty(), "{paid}");
        assert!(tx.output.iter().all(|o| o.value >= o.script_pubkey.minimal_non_dust()));
    }
}

#[test]
fn overpaying_reports_what_is_available() {
    let f = fixture(100_000, 2).unwrap();
    let max = f.builder.max_payable();
    let requested = max + Amount::from_sat(1);
    assert_eq!(
        f.builder.commitment(requested, 990),
        Err(TxError::InsufficientBalance { available: max, requested })
    );
    assert!(matches!(
        f.builder.commitment(Amount::MAX, 990),
        Err(TxError::InsufficientBalance { .. })
    ));
}

#[test]
fn capacity_must_cover_the_refund() {
    assert!(matches!(fixture(300, 2), Err(TxError::CapacityTooSmall { .. })));
    let Err(TxError::CapacityTooSmall { needed, .. }) = fixture(300, 2) else { panic!() };
    assert!(fixture(needed.to_sat(), 2).is_ok());
    assert!(fixture(needed.to_sat() - 1, 2).is_err());
}

#[test]
fn locktimes_must_be_heights() {
    let f = fixture(100_000, 2).unwrap();
    assert_eq!(f.builder.refund(500_000_000), Err(TxError::NotAHeight(500_000_000)));
    assert_eq!(
        f.builder.commitment(Amount::from_sat(1000), 600_000_000),
        Err(TxError::NotAHeight(600_000_000))
    );
}

#[test]
fn a_transaction_without_input_is_not_a_channel_transaction() {
    let f = fixture(100_000, 2).unwrap();
    let mut tx = f.builder.refund(10).unwrap();
    tx.input.clear();
    assert_eq!(f.builder.sighash(&tx), Err(TxError::NotAChannelTransaction));
}
