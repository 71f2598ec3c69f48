//! `http`: a request paid through a 402 gateway, printed like curl.

use std::io::Write;
use std::time::Duration;

use bitcoin::Amount;
use serde_json::json;

use super::args::{Global, HttpArgs};
use super::channels::{client_timeouts, open_request};
use super::{connect_node, open_datadir, CliError, Output, Ui};
use paychan_http::client::{Budget, HttpError, PaidClient, Settings};
use paychan_node::blocking;

/// The most of a body `--json` carries in its `body` field (as text, if it is UTF-8).
const JSON_BODY_LIMIT: usize = 64 * 1024;

pub(super) async fn http(g: &Global, a: &HttpArgs, ui: &Ui<'_>) -> Result<Output, CliError> {
    // The request first: a mistake in it needs neither the node nor the lock.
    let request = request(a)?;
    let mut datadir = blocking(|| open_datadir(g))?;
    datadir.lock()?;
    let chain = blocking(|| connect_node(g))?;
    let open = match a.capacity {
        Some(capacity) => Some(open_request(&chain, capacity, &a.terms)?),
        None => None,
    };
    let settings = Settings {
        budget: Budget { per_request: a.max_price.map(Amount::from_sat), total: None },
        open,
        channel: a.channel,
        timeouts: client_timeouts(g),
        retry_for: Duration::from_secs(a.retry_for),
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(g.timeout.max(1)))
        .read_timeout(Duration::from_secs(g.timeout.max(1)))
        .build()
        .map_err(|e| CliError::Http(Box::new(HttpError::Http(e))))?;
    let mut client = PaidClient::new(datadir.parts(), &chain, http, settings);
    let mut paid = client.send(request).await.map_err(boxed)?;
    let mut file = match &a.output {
        Some(path) => Some(std::fs::File::create(path).map_err(|e| write_error(path, e))?),
        None => None,
    };
    let (mut bytes, mut kept) = (0u64, Vec::new());
    while let Some(chunk) = client.chunk(&mut paid).await.map_err(|e| {
        let done =
            format!("after {bytes} bytes and {} sat paid for this request", paid.paid.to_sat());
        CliError::NotApplicable(format!("{e} ({done})"))
    })? {
        bytes += chunk.len() as u64;
        match (&mut file, g.json) {
            (Some(f), _) => {
                f.write_all(&chunk).map_err(|e| write_error(a.output.as_ref().expect("file"), e))?
            }
            (None, false) => {
                (ui.body)(&chunk).map_err(|e| CliError::NotApplicable(format!("stdout: {e}")))?
            }
            (None, true) if kept.len() < JSON_BODY_LIMIT => kept.extend_from_slice(&chunk),
            (None, true) => {}
        }
    }
    if let Some(f) = file {
        f.sync_all().map_err(|e| write_error(a.output.as_ref().expect("file"), e))?;
    }
    let status = paid.response.status().as_u16();
    let body = (kept.len() as u64 == bytes).then(|| String::from_utf8(kept).ok()).flatten();
    let channel_id = paid.channel_id.map(|c| c.to_string());
    let text = match (&a.output, paid.channel_id) {
        (Some(path), Some(id)) => format!(
            "{status}: {bytes} bytes to {}; paid {} sat on channel {id} ({} sat in total)\n",
            path.display(),
            paid.paid.to_sat(),
            paid.paid_total.to_sat(),
        ),
        (Some(path), None) => format!("{status}: {bytes} bytes to {}; free\n", path.display()),
        (None, _) => String::new(),
    };
    Ok(Output {
        json: json!({
            "status": status,
            "channel_id": channel_id,
            "paid_sat": paid.paid.to_sat(),
            "paid_total_sat": paid.paid_total.to_sat(),
            "bytes": bytes,
            "settle_requested": paid.settle_requested,
            "body": body,
        }),
        text,
    })
}

/// The request `a` describes.
fn request(a: &HttpArgs) -> Result<reqwest::Request, CliError> {
    let bad = |what: String| CliError::NotApplicable(what);
    let url: reqwest::Url = a.url.parse().map_err(|e| bad(format!("URL {:?}: {e}", a.url)))?;
    if url.scheme() != "http" {
        return Err(bad(format!("URL {url}: only http:// (put TLS in a proxy in front)")));
    }
    let method = match (&a.method, &a.data) {
        (Some(m), _) => m.to_ascii_uppercase(),
        (None, Some(_)) => "POST".to_owned(),
        (None, None) => "GET".to_owned(),
    };
    let method: reqwest::Method =
        method.parse().map_err(|_| bad(format!("method {method:?} is not one")))?;
    let mut request = reqwest::Request::new(method, url);
    for header in &a.headers {
        let (name, value) =
            header.split_once(':').ok_or_else(|| bad(format!("header {header:?}: no ':'")))?;
        let name: reqwest::header::HeaderName =
            name.trim().parse().map_err(|_| bad(format!("header name {name:?}")))?;
        let value: reqwest::header::HeaderValue =
            value.trim().parse().map_err(|_| bad(format!("header value in {header:?}")))?;
        request.headers_mut().append(name, value);
    }
    if let Some(data) = &a.data {
        let body = match data.strip_prefix('@') {
            Some(path) => std::fs::read(path).map_err(|e| bad(format!("--data @{path}: {e}")))?,
            None => data.clone().into_bytes(),
        };
        *request.body_mut() = Some(body.into());
    }
    Ok(request)
}

fn boxed(e: HttpError) -> CliError {
    CliError::Http(Box::new(e))
}

fn write_error(path: &std::path::Path, e: std::io::Error) -> CliError {
    CliError::NotApplicable(format!("cannot write {}: {e}", path.display()))
}
