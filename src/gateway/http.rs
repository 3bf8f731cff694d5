//! A client for any payment gateway speaking API.md's "Payment gateway protocol"
//! (`KASSA_GATEWAY=http://host:port`). Every call is idempotent by its key, so connect errors,
//! timeouts and 5xx are retried (3 attempts, `client.rs`); a 4xx is never retried: a refusal,
//! except a cancel's 409 (the payment had succeeded). A call, retries included, ends at its
//! deadline (`KASSA_GATEWAY_TIMEOUT`) as `Unavailable`: a gateway that never answers holds no
//! caller longer.

use super::client::{self, Attempt, CallError, GatewayClient};
use async_trait::async_trait;
use kassa_actors::domain::{Currency, OrderId};
use kassa_actors::gateway::{
    CancelOutcome, Gateway, GatewayError, PaymentRequest, PaymentSession, PaymentState,
    PaymentStatus,
};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::OffsetDateTime;

/// How much of a refusal's body is kept in the error message.
const REFUSAL_SNIPPET_CHARS: usize = 200;

/// The gateway at `base_url`, reached over HTTP.
#[derive(Debug, Clone)]
pub struct HttpGateway {
    base: Url,
    client: GatewayClient,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatePayment<'a> {
    order_id: OrderId,
    amount: i64,
    currency: &'static str,
    callback_url: &'a str,
    return_url: &'a str,
    /// What a hosted payment page shows: optional, left out when unknown.
    #[serde(skip_serializing_if = "str::is_empty")]
    shop_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    order_number: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    lines: Vec<LineToShow<'a>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    expires_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_url: Option<&'a str>,
}

#[derive(Serialize)]
struct LineToShow<'a> {
    name: &'a str,
    quantity: u32,
    amount: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedPayment {
    payment_id: String,
    payment_url: String,
    token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedRefund {
    refund_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    payment_id: String,
    order_id: OrderId,
    status: PaymentState,
    amount: i64,
    currency: Currency,
}

impl HttpGateway {
    /// # Panics
    /// If no TLS back end can be initialised (as `reqwest::Client::new`); only at start-up.
    pub fn new(base_url: Url) -> Self {
        let client = client::builder()
            .build()
            .expect("the HTTP client for the payment gateway builds");
        Self {
            base: base_url,
            client: GatewayClient::new(client, "payment gateway"),
        }
    }

    /// The same gateway, each call (retries included) ending after `deadline`.
    pub fn with_deadline(self, deadline: Duration) -> Self {
        Self {
            client: self.client.with_deadline(deadline),
            ..self
        }
    }

    /// `base` + `segments`, each segment percent-encoded; a path on `base` is kept.
    fn endpoint(&self, segments: &[&str]) -> Result<Url, GatewayError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| GatewayError::Refused(format!("`{}` cannot be a base URL", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends `request`, retrying what may be retried, and reads the JSON answer of a 2xx (any
    /// other answer is a refusal).
    async fn call<T: DeserializeOwned>(
        &self,
        op: &'static str,
        request: RequestBuilder,
    ) -> Result<T, GatewayError> {
        self.client
            .call(op, request, |status, _, body| {
                retry_server_errors(status)?;
                if !status.is_success() {
                    return Err(Attempt::Final(GatewayError::Refused(refusal(status, body))));
                }
                serde_json::from_slice(body).map_err(|e| {
                    Attempt::Final(GatewayError::Refused(format!(
                        "{op}: the gateway's answer is unreadable: {e}"
                    )))
                })
            })
            .await
    }
}

/// A 5xx is worth another attempt, and so is a 408 (the gateway closed the connection before
/// it had the request); any other answer is final.
fn retry_server_errors(status: StatusCode) -> Result<(), Attempt<GatewayError>> {
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        Err(Attempt::Retryable(format!("the gateway answered {status}")))
    } else {
        Ok(())
    }
}

impl CallError for GatewayError {
    fn refused(message: String) -> Self {
        Self::Refused(message)
    }

    fn unavailable(message: String) -> Self {
        Self::Unavailable(message)
    }

    fn outcome(&self) -> &'static str {
        match self {
            Self::Refused(_) => "refused",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

fn refusal(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let snippet: String = text.chars().take(REFUSAL_SNIPPET_CHARS).collect();
    format!("the gateway answered {status}: {snippet}")
}

#[async_trait]
impl Gateway for HttpGateway {
    /// 200: cancelled (or failed already); 409: it had succeeded; any other 4xx a refusal.
    async fn cancel(&self, payment_id: &str) -> Result<CancelOutcome, GatewayError> {
        let http = self
            .client
            .http()
            .post(self.endpoint(&["payments", payment_id, "cancel"])?)
            .header("Idempotency-Key", format!("cancel-{payment_id}"));
        self.client
            .call("cancel", http, |status, _, body| {
                retry_server_errors(status)?;
                match status {
                    StatusCode::CONFLICT => Ok(CancelOutcome::AlreadySucceeded),
                    status if status.is_success() => Ok(CancelOutcome::Cancelled),
                    status => Err(Attempt::Final(GatewayError::Refused(refusal(status, body)))),
                }
            })
            .await
    }

    async fn initiate(&self, request: PaymentRequest) -> Result<PaymentSession, GatewayError> {
        let body = CreatePayment {
            order_id: request.order_id,
            amount: request.amount,
            currency: request.currency.code(),
            callback_url: &request.callback_url,
            return_url: &request.return_url,
            shop_name: &request.display.shop_name,
            order_number: &request.display.order_number,
            lines: request
                .display
                .lines
                .iter()
                .map(|line| LineToShow {
                    name: &line.name,
                    quantity: line.quantity,
                    amount: line.amount,
                })
                .collect(),
            expires_at: request.display.expires_at,
            cancel_url: request.display.cancel_url.as_deref(),
        };
        let http = self
            .client
            .http()
            .post(self.endpoint(&["payments"])?)
            .header("Idempotency-Key", request.order_id.to_string())
            .json(&body);
        let created: CreatedPayment = self.call("initiate", http).await?;
        Ok(PaymentSession {
            payment_id: created.payment_id,
            payment_url: created.payment_url,
            token: created.token,
        })
    }

    async fn refund(&self, payment_id: &str) -> Result<String, GatewayError> {
        let http = self
            .client
            .http()
            .post(self.endpoint(&["payments", payment_id, "refunds"])?)
            .header("Idempotency-Key", format!("refund-{payment_id}"));
        let created: CreatedRefund = self.call("refund", http).await?;
        Ok(created.refund_id)
    }

    async fn status(&self, payment_id: &str) -> Result<PaymentStatus, GatewayError> {
        let http = self
            .client
            .http()
            .get(self.endpoint(&["payments", payment_id])?);
        let payment: PaymentBody = self.call("status", http).await?;
        Ok(PaymentStatus {
            payment_id: payment.payment_id,
            order_id: payment.order_id,
            state: payment.status,
            amount: payment.amount,
            currency: payment.currency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(base: &str) -> HttpGateway {
        HttpGateway::new(Url::parse(base).expect("url"))
    }

    #[test]
    fn endpoints_keep_the_base_path_with_or_without_a_trailing_slash() {
        for base in [
            "http://gw.test:9000/sandbox",
            "http://gw.test:9000/sandbox/",
        ] {
            let url = gateway(base)
                .endpoint(&["payments", "pay_1", "refunds"])
                .expect("url");
            assert_eq!(
                url.as_str(),
                "http://gw.test:9000/sandbox/payments/pay_1/refunds"
            );
        }
        let url = gateway("http://gw.test:9000")
            .endpoint(&["payments"])
            .expect("url");
        assert_eq!(url.as_str(), "http://gw.test:9000/payments");
    }

    #[test]
    fn payment_ids_cannot_escape_their_path_segment() {
        let url = gateway("http://gw.test")
            .endpoint(&["payments", "../admin?x=1"])
            .expect("url");
        assert_eq!(url.as_str(), "http://gw.test/payments/..%2Fadmin%3Fx=1");
    }
}
