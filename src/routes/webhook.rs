//! POST /webhook/payment-status: the gateway's signed verdict on a payment. The signature is
//! checked on the raw bytes before anything is parsed (Standard Webhooks, constant-time,
//! 5-minute tolerance on the shared clock); the order's actor then applies it exactly once.

use crate::http::Code;
use crate::http::error::{AppError, ErrorBody};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use kassa_actors::domain::OrderId;
use kassa_actors::order_actor::{OrderError, PaymentNotice};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// How far `webhook-timestamp` may be from now, either way.
const TOLERANCE_SECONDS: i64 = 5 * 60;

/// Body of the webhook, as the gateway sends it.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentStatusBody {
    pub order_id: uuid::Uuid,
    /// `Success` or `Failed`.
    pub status: PaymentOutcome,
    pub payment_id: String,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
pub enum PaymentOutcome {
    Success,
    Failed,
}

/// The answer to every event Kassa accepted: `{"received": true}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Received {
    /// Always true.
    pub received: bool,
}

impl Received {
    pub(crate) fn response() -> HttpResponse {
        HttpResponse::Ok().json(Self { received: true })
    }
}

fn invalid_signature(why: &str) -> AppError {
    AppError::Unauthorized {
        code: Code::InvalidSignature,
        message: format!("webhook signature rejected: {why}"),
    }
}

/// Checks the Standard Webhooks signature headers against the raw body; answers the id.
fn verify(state: &AppState, req: &HttpRequest, body: &[u8]) -> Result<String, AppError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid_signature(&format!("missing or unreadable `{name}` header")))
    };
    let id = header("webhook-id")?;
    let timestamp: i64 = header("webhook-timestamp")?
        .parse()
        .map_err(|_| invalid_signature("`webhook-timestamp` is not unix seconds"))?;
    let signatures = header("webhook-signature")?;
    let now = state.clock.now().unix_timestamp();
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(invalid_signature("timestamp is more than 5 minutes off"));
    }
    let expected = signature(&state.webhook_key, id, timestamp, body);
    let expected = expected.as_bytes();
    let matches = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .fold(false, |found, (_, sig)| {
            found | bool::from(sig.as_bytes().ct_eq(expected))
        });
    if matches {
        Ok(id.to_string())
    } else {
        Err(invalid_signature("no signature matches"))
    }
}

/// The HMAC key of a `whsec_<base64>` secret (decoded once, at start-up).
pub fn signing_key(secret: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
}

/// The base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`. Over the raw body: one that is not
/// UTF-8 still verifies (then fails as JSON), where standardwebhooks' own `sign` would refuse
/// it as if the signature were wrong.
fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac_sha256::HMAC::new(key);
    mac.update(format!("{id}.{timestamp}."));
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize())
}

#[utoipa::path(
    post, path = "/webhook/payment-status", tag = "webhooks",
    request_body = PaymentStatusBody,
    params(
        ("webhook-id" = String, Header), ("webhook-timestamp" = i64, Header, description = "unix seconds"),
        ("webhook-signature" = String, Header, description = "v1,<base64 HMAC-SHA256 of {id}.{timestamp}.{body}>"),
    ),
    responses(
        (status = 200, body = Received, description = "Also for duplicates and events that change nothing"),
        (status = 400, body = ErrorBody, description = "invalid_json or invalid_payload"),
        (status = 401, body = ErrorBody, description = "invalid_signature"),
        (status = 404, body = ErrorBody, description = "order_not_found"),
        (status = 413, body = ErrorBody, description = "payload_too_large: the body is over 64 KiB"),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn payment_status(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let body = crate::http::read_limited(payload).await?;
    let webhook_id = verify(&state, &req, &body).inspect_err(|_| {
        metrics::counter!("kassa_webhooks_total", "outcome" => "bad_signature").increment(1);
    })?;
    // Checked as JSON first (a scan that builds nothing), then read into the payload: a body
    // that is not JSON is `invalid_json` even where a field before its flaw has a wrong type.
    serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        .map_err(|e| AppError::InvalidJson(format!("the body is not valid JSON: {e}")))?;
    let payload: PaymentStatusBody =
        serde_json::from_slice(&body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => AppError::BadRequest {
                code: Code::InvalidPayload,
                message: format!("the webhook payload is not a payment status: {e}"),
            },
            // Skipped strings are not checked for UTF-8 by the scan above.
            _ => AppError::InvalidJson(format!("the body is not valid JSON: {e}")),
        })?;
    let order_id = OrderId(payload.order_id);
    let notice = PaymentNotice {
        webhook_id,
        succeeded: matches!(payload.status, PaymentOutcome::Success),
        payment_id: payload.payment_id,
        amount: payload.amount,
        currency: payload.currency,
    };
    deliver(&state, order_id, notice).await
}

/// Hands a verified payment event to its order's actor and answers the gateway.
pub(crate) async fn deliver(
    state: &AppState,
    order_id: OrderId,
    notice: PaymentNotice,
) -> Result<HttpResponse, AppError> {
    match state.orders.ask(&order_id, notice).await? {
        Ok(outcome) => {
            tracing::info!(%order_id, ?outcome, "payment event handled");
            Ok(Received::response())
        }
        // The refusals a payment event can meet answer as they do on the order routes
        // (404 `order_not_found`, 503).
        Err(e @ (OrderError::NotFound | OrderError::Overloaded | OrderError::Actor(_))) => {
            Err(e.into())
        }
        // Not the shopper answers of `From<OrderError>`: API.md gives the gateway 200, 400, 401,
        // 404 or 503 only, so any other refusal is our fault, a 500 the gateway retries.
        Err(other) => Err(AppError::Internal(anyhow::anyhow!(
            "unexpected payment event outcome: {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_standard_webhooks_for_utf8_bodies() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let ours = signature(
            &signing_key(secret).expect("key"),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        );
        let theirs = standardwebhooks::Webhook::new(secret)
            .expect("secret")
            .sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
            .expect("signs");
        assert_eq!(format!("v1,{ours}"), theirs);
    }
}
