//! `open --external` and `fund`: a channel funded from another wallet, by PSBT.

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use bitcoin::Psbt;
use serde_json::json;

use super::args::{FundArgs, Global, OpenArgs};
use super::channels::{client_timeouts, open_request, opened, wait_ready};
use super::{connect_node, open_datadir, CliError, Output};
use paychan::channel::PayeeConfig;
use paychan_node::blocking;
use paychan_node::client::PayerClient;

/// `open PEER --capacity SAT --external`: negotiates the keys and prints what to pay.
pub(super) async fn open_external(g: &Global, a: &OpenArgs) -> Result<Output, CliError> {
    let mut datadir = blocking(|| open_datadir(g))?;
    datadir.lock()?;
    let chain = blocking(|| connect_node(g))?;
    let request = open_request(&chain, a.capacity, &a.terms)?;
    let timeouts = client_timeouts(g);
    let funding =
        PayerClient::open_external(datadir.parts(), &chain, a.peer.clone(), &request, timeouts)
            .await?;
    let (id, address, amount) = (funding.channel_id, &funding.address, funding.amount.to_sat());
    Ok(Output {
        json: json!({
            "channel_id": id.to_string(),
            "funding_address": address.to_string(),
            "amount_sat": amount,
            "descriptor": funding.descriptor,
        }),
        text: format!(
            "channel {id} waits for its funding: pay exactly {amount} sat to {address}\n\
             in a PSBT of your wallet's (native segwit inputs, no RBF), sign it, then run:\n  \
             paychan fund {id} --psbt FILE\n\
             Do not broadcast it yourself: paychan does once the payee has signed the refund.\n\
             descriptor: {}\n",
            funding.descriptor
        ),
    })
}

/// `fund CHANNEL --psbt FILE`.
pub(super) async fn fund(g: &Global, a: &FundArgs) -> Result<Output, CliError> {
    let psbt = read_psbt(&a.psbt)?;
    let mut datadir = blocking(|| open_datadir(g))?;
    datadir.lock()?;
    let chain = blocking(|| connect_node(g))?;
    let timeouts = client_timeouts(g);
    let client =
        PayerClient::fund_external(datadir.parts(), &chain, a.channel, psbt, timeouts).await?;
    let client = wait_ready(client, &|_| {}).await?;
    let min_conf = a.min_conf.unwrap_or_else(|| PayeeConfig::default_min_conf(g.network));
    opened(&chain, client, min_conf).await
}

/// Reads a PSBT from `path` (`-`: standard input), in base64 or binary.
fn read_psbt(path: &Path) -> Result<Psbt, CliError> {
    let bad = |reason: String| CliError::NotApplicable(format!("{}: {reason}", path.display()));
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    read.map_err(|e| bad(e.to_string()))?;
    // Binary PSBTs start with their magic bytes, "psbt" and 0xff.
    if bytes.starts_with(b"psbt\xff") {
        return Psbt::deserialize(&bytes).map_err(|e| bad(format!("not a PSBT: {e}")));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not a PSBT".into()))?;
    Psbt::from_str(text.trim()).map_err(|e| bad(format!("not a base64 PSBT: {e}")))
}
