//! The gateway's own answers: a 402 with its offer, and every refusal, each with a JSON body
//! `{"error": "..."}` and the same words in [`headers::ERROR`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};
use tracing::info;

use paychan_node::daemon::PaymentRefused;

use super::forward::UpstreamError;
use super::ledger::Spent;
use super::GatewayBody;
use crate::headers::{self, HeaderError, Offer};

/// An answer the gateway makes itself.
#[derive(Debug)]
pub(super) struct Reply {
    status: StatusCode,
    error: String,
    offer: Option<Offer>,
}

impl Reply {
    pub(super) fn new(status: StatusCode, error: String) -> Reply {
        Reply { status, error, offer: None }
    }

    /// 402, with what to pay and where.
    pub(super) fn payment_required(offer: Offer, error: String) -> Reply {
        Reply { status: StatusCode::PAYMENT_REQUIRED, error, offer: Some(offer) }
    }

    pub(super) fn bad_request(e: HeaderError) -> Reply {
        Reply::new(StatusCode::BAD_REQUEST, e.to_string())
    }

    /// 409: the payment bought its request already, or is buying it now.
    pub(super) fn conflict(e: Spent) -> Reply {
        Reply::new(StatusCode::CONFLICT, e.to_string())
    }

    pub(super) fn into_response(self) -> Response<GatewayBody> {
        if self.status != StatusCode::PAYMENT_REQUIRED || self.offer.is_none() {
            info!(status = self.status.as_u16(), "refused: {}", self.error);
        }
        let body = serde_json::json!({ "error": self.error }).to_string();
        let mut response =
            Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
        *response.status_mut() = self.status;
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, headers::value("application/json"));
        h.insert(headers::ERROR, headers::value(&self.error.replace(['\r', '\n'], " ")));
        if let Some(offer) = self.offer {
            offer.write(h);
        }
        response
    }
}

/// The answer to a payment the desk refused: nothing was charged.
pub(super) fn refused(e: PaymentRefused, offer: Offer) -> Reply {
    let error = e.to_string();
    match e {
        // Pay again, the right amount or on a channel here.
        PaymentRefused::WrongAmount { .. } | PaymentRefused::UnknownChannel => {
            Reply::payment_required(offer, error)
        }
        PaymentRefused::Stale { .. } => Reply::new(StatusCode::CONFLICT, error),
        PaymentRefused::StaleTip | PaymentRefused::NotSaved => {
            Reply::new(StatusCode::SERVICE_UNAVAILABLE, error)
        }
        // A bad signature or locktime, a channel that is closing: this payment will not do.
        _ => Reply::payment_required(offer, error),
    }
}

impl From<UpstreamError> for Reply {
    fn from(e: UpstreamError) -> Reply {
        let status = match e {
            UpstreamError::Failed(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        };
        Reply::new(status, e.to_string())
    }
}
