//! Forwarding to the upstream service over pooled keep-alive connections.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HOST};
use hyper::{Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The upstream could not be reached, or did not answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum UpstreamError {
    #[error("the upstream service failed: {0}")]
    Failed(String),
    #[error("the upstream service did not answer within {0:?}")]
    Timeout(Duration),
}

/// The service behind the gateway.
pub(super) struct Upstream {
    base: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1), and
/// the payment's own: none is passed on.
const NOT_FORWARDED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Upstream {
    pub(super) fn new(base: Uri, timeout: Duration) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Upstream { base, client, timeout }
    }

    /// Sends `req` to the upstream, at the same path below its base.
    pub(super) async fn forward(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        let base = self.base.to_string();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("{}{path}", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| UpstreamError::Failed(format!("bad path: {e}")))?;
        strip(&mut parts.headers);
        parts.headers.remove(HOST);
        let request = self.client.request(Request::from_parts(parts, body));
        let mut response = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        strip(response.headers_mut());
        // Ours to the payer is HTTP/1.1 with keep-alive, whatever the upstream spoke.
        *response.version_mut() = Version::HTTP_11;
        Ok(response)
    }
}

fn strip(headers: &mut HeaderMap) {
    for name in NOT_FORWARDED {
        headers.remove(name);
    }
    let ours: Vec<HeaderName> =
        headers.keys().filter(|k| k.as_str().starts_with("paychan-")).cloned().collect();
    for name in ours {
        headers.remove(name);
    }
}
