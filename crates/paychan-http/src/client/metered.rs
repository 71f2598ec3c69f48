//! Reading a response priced per KiB: paying ahead as it is read, at most a window at a time,
//! and with its length known, never for more bytes than it has.

use bitcoin::Amount;
use bytes::Bytes;
use reqwest::{Method, Response};

use paychan::chain::Chain;
use paychan::store::Store;
use paychan::watch::BlockSource;

use super::{refused, HttpError, Paid, PaidClient};
use crate::headers::{self, Offer};

/// How a metered response is being paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered {
    /// The number the gateway gave it, which its payments name.
    pub stream: u64,
    /// The payee and prices.
    pub offer: Offer,
    /// KiB paid for.
    pub paid_kib: u64,
    /// Bytes received.
    pub received: u64,
    /// The body's length, if the response said.
    pub length: Option<u64>,
}

impl Metered {
    /// Reads a paid response's headers: `Some` if it is metered, with `kib` KiB paid with its
    /// request.
    pub(super) fn read(response: &Response, kib: u64) -> Result<Option<Metered>, HttpError> {
        let h = response.headers();
        let Some(stream) = headers::parse::<u64>(h, &headers::STREAM, "paychan-stream")? else {
            return Ok(None);
        };
        let offer = Offer::read(h)?;
        // Read now: reqwest's tells what is left of the body.
        let length = response.content_length();
        Ok(Some(Metered { stream, offer, paid_kib: kib, received: 0, length }))
    }
}

impl<C: Chain + BlockSource, S: Store> PaidClient<'_, C, S> {
    /// Reads the next chunk of `paid`'s body, or `None` at its end. A metered response is paid
    /// ahead first when less than half a window is paid and unread.
    ///
    /// # Errors
    /// [`HttpError::Http`] if the body cannot be read (a metered one is cut off when its
    /// payments stop), and those of paying.
    pub async fn chunk(&mut self, paid: &mut Paid) -> Result<Option<Bytes>, HttpError> {
        if let Some(m) = &paid.metered {
            let length = m.length;
            let window = m.offer.window_kib;
            let paid_bytes = m.paid_kib.saturating_mul(1024);
            let ahead = paid_bytes.saturating_sub(m.received);
            let unpaid = length.map(|l| l.saturating_sub(paid_bytes).div_ceil(1024));
            if ahead < window * 512 && unpaid != Some(0) {
                let kib = unpaid.unwrap_or(window).clamp(1, window);
                match self.top_up(paid, kib).await {
                    // Its length unknown, the response may have ended: the gateway no longer
                    // meters it, and refused the payment. The read below tells.
                    Err(HttpError::Refused { status: 404, .. }) if length.is_none() => {}
                    other => other?,
                }
            }
        }
        let chunk = paid.response.chunk().await.map_err(HttpError::Http)?;
        if let (Some(m), Some(c)) = (&mut paid.metered, &chunk) {
            m.received += c.len() as u64;
        }
        Ok(chunk)
    }

    /// Pays for `kib` more KiB of `paid`'s metered response.
    async fn top_up(&mut self, paid: &mut Paid, kib: u64) -> Result<(), HttpError> {
        let m = paid.metered.as_ref().expect("metered");
        let charge = m.offer.per_kib * kib;
        self.check_budget(paid.paid, charge)?;
        let pay = self.voucher(&m.offer.clone(), paid.paid, charge).await?;
        let url = paid.response.url().join(headers::PAY_PATH).expect("an absolute path");
        let request = self
            .http
            .request(Method::POST, url)
            .header(headers::PAYMENT, headers::encode_payment(&pay))
            .header(headers::STREAM, m.stream.to_string())
            .header(headers::KIB, kib.to_string())
            .build()
            .map_err(HttpError::Http)?;
        let response = self.deliver(Some(&pay), &request).await?;
        if !self.take_acks(&response)? || !response.status().is_success() {
            self.abandon(&pay)?;
            return Err(refused(response));
        }
        let total = headers::parse(response.headers(), &headers::PAID_TOTAL, "paychan-paid-total")?;
        let m = paid.metered.as_mut().expect("metered");
        m.paid_kib += kib;
        paid.paid += charge;
        paid.paid_total = total.map_or(paid.paid_total, Amount::from_sat);
        Ok(())
    }
}
