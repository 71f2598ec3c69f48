//! `force-close` and `refund`: closing without the other side.

use bitcoin::Transaction;
use serde_json::json;

use super::args::Global;
use super::{connect_node, open_datadir, CliError, Output};
use paychan::chain::{Chain, OutputStatus, TxStatus};
use paychan::channel::{Payee, Payer};
use paychan::store::{ChannelState, Store};
use paychan::wire::ChannelId;
use paychan_node::client::broadcast;

pub(super) fn force_close(g: &Global, id: ChannelId) -> Result<Output, CliError> {
    let datadir = open_datadir(g)?;
    let record = datadir.store.channel(id)?.ok_or(CliError::UnknownChannel(id))?;
    let signer = datadir.wallet.channel_signer(record.key_index)?;
    // The newest state we can complete: the payee's newest payment (it adds its own signature
    // to the payer's), the payer's newest checkpoint.
    let (funded, newest) = match record.state {
        ChannelState::Payer(state) => {
            let payer = Payer::restore(signer, state)?;
            let funded = payer.funded().map(|f| f.funded.clone());
            let newest = funded.as_ref().map(|f| f.checkpoint_tx()).transpose()?.flatten();
            (funded, newest)
        }
        ChannelState::Payee(state) => {
            let payee = Payee::restore(signer, state)?;
            (payee.funded().cloned(), payee.newest_commitment()?)
        }
    };
    let funded = funded.ok_or_else(|| not_applicable(id, "was never funded: nothing to close"))?;
    if let Some(settlement) = funded.settlement_tx()? {
        // Settled cooperatively: the settlement is the newest state, final at once.
        let what = format!("settlement ({} sat to the payee)", funded.paid().to_sat());
        return broadcast_when_final(g, id, settlement, 0, &what);
    }
    let tx = newest.ok_or_else(|| {
        not_applicable(id, "has no fully signed commitment yet (no payment, or for the payer no checkpoint): the payer's refund is the only way out (paychan refund)")
    })?;
    let locktime = tx.lock_time.to_consensus_u32();
    let paid = paychan::closing::split(&tx, funded.channel.params()).1;
    let what = format!("commitment ({} sat to the payee on chain)", paid.to_sat());
    broadcast_when_final(g, id, tx, locktime, &what)
}

pub(super) fn refund(g: &Global, id: ChannelId) -> Result<Output, CliError> {
    let datadir = open_datadir(g)?;
    let record = datadir.store.channel(id)?.ok_or(CliError::UnknownChannel(id))?;
    let ChannelState::Payer(state) = record.state else {
        return Err(not_applicable(id, "is one we are paid on: the refund is the payer's"));
    };
    let payer = Payer::restore(datadir.wallet.channel_signer(record.key_index)?, state)?;
    let f =
        payer.funded().ok_or_else(|| not_applicable(id, "was never funded: nothing to refund"))?;
    if f.funded.settlement.is_some() {
        return Err(not_applicable(id, "is settled cooperatively: nothing to refund"));
    }
    let locktime = f.funded.channel.ladder().refund();
    let what = format!(
        "refund ({} sat back to the payer before fees)",
        f.funded.channel.params().terms.capacity.to_sat()
    );
    broadcast_when_final(g, id, payer.refund_tx()?, locktime, &what)
}

/// Broadcasts `tx` if the tip has reached `locktime` (the node accepts a transaction whose
/// `nLockTime` equals the tip), else says from which tip height it will be accepted.
fn broadcast_when_final(
    g: &Global,
    id: ChannelId,
    tx: Transaction,
    locktime: u32,
    what: &str,
) -> Result<Output, CliError> {
    let chain = connect_node(g)?;
    let txid = tx.compute_txid();
    let told = |text: String| Ok(Output { json: json!({ "txid": txid.to_string() }), text });
    // The funding first, then whether its spender is this very transaction: the other side may
    // broadcast its copy at any moment, and it must count as ours, not as another's.
    let funding = tx.input[0].previous_output;
    let spent_in_blocks = chain.output_status_in_blocks(funding)? == OutputStatus::SpentOrMissing;
    if spent_in_blocks || chain.output_status(funding)? == OutputStatus::SpentOrMissing {
        return match chain.tx_status(txid)? {
            TxStatus::Confirmed(n) => {
                told(format!("the {what} {txid} is already confirmed ({n} confirmations)\n"))
            }
            TxStatus::InMempool => {
                told(format!("the {what} {txid} is already in the mempool, waiting for a block\n"))
            }
            TxStatus::Unknown if spent_in_blocks => Err(not_applicable(
                id,
                "is closed on chain already: another transaction spends its funding (or the \
                 funding never confirmed)",
            )),
            TxStatus::Unknown => Err(not_applicable(
                id,
                "is closing: another transaction spending its funding waits in the mempool",
            )),
        };
    }
    let tip = chain.tip()?.height;
    if tip < locktime {
        return Ok(Output {
            json: json!({ "final_at_height": locktime }),
            text: format!(
                "the {what} is final at height {locktime}: {} block(s) from the tip ({tip}); run this again then\n",
                locktime - tip
            ),
        });
    }
    let txid = broadcast(&chain, &tx)?;
    Ok(Output {
        json: json!({ "txid": txid.to_string() }),
        text: format!("{what} broadcast: {txid}\n"),
    })
}

fn not_applicable(id: ChannelId, why: &str) -> CliError {
    CliError::NotApplicable(format!("channel {id} {why}"))
}
