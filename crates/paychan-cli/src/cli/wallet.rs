//! `init`, `address`, `balance`.

use bitcoin::secp256k1::Secp256k1;
use bitcoin::PublicKey;
use serde_json::json;

use super::args::Global;
use super::{connect_node, open_datadir, CliError, Output};
use paychan_node::datadir::DataDir;
use paychan_wallet::FEE_RESERVE;

pub(super) fn init(g: &Global) -> Result<Output, CliError> {
    let created = !g.datadir.join(paychan_wallet::SEED_FILE).exists();
    let datadir = DataDir::init(&g.datadir, g.network)?;
    let secret = datadir.wallet.node_secret()?;
    let node_id = PublicKey::new(secret.public_key(&Secp256k1::signing_only()));
    let path = datadir.path.display().to_string();
    Ok(Output {
        json: json!({ "node_id": node_id.to_string(), "datadir": path, "created": created }),
        text: format!(
            "node id: {node_id}\ndata directory: {path}{}\n\
             (payers connect to {node_id}@HOST:PORT once `paychan serve` runs)\n",
            if created { "" } else { " (already initialized: nothing changed)" }
        ),
    })
}

pub(super) fn address(g: &Global) -> Result<Output, CliError> {
    let mut datadir = open_datadir(g)?;
    // The daemon hands out addresses too: one writer at a time, or two would get the same.
    datadir.lock()?;
    let address = datadir.wallet.new_address()?;
    Ok(Output { json: json!({ "address": address.to_string() }), text: format!("{address}\n") })
}

pub(super) fn balance(g: &Global) -> Result<Output, CliError> {
    // No lock: what the sync saves (blocks, the wallet's transactions) is the same whoever
    // saves it, and a running daemon's wallet adds only the addresses it hands out.
    let mut datadir = open_datadir(g)?;
    let chain = connect_node(g)?;
    let balance = datadir.wallet.balance(&chain)?.to_sat();
    let reserve = FEE_RESERVE.to_sat();
    let available = balance.saturating_sub(reserve);
    Ok(Output {
        json: json!({
            "confirmed_sat": balance,
            "reserve_sat": reserve,
            "available_sat": available,
        }),
        text: format!(
            "{balance} sat confirmed and spendable: {available} sat for channels, {reserve} sat \
             kept to bump closes when fees rise\n"
        ),
    })
}
