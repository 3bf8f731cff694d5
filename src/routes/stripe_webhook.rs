//! POST /webhook/stripe: Stripe's `payment_intent.*` events. The `Stripe-Signature` header is
//! checked on the raw bytes before anything is parsed (HMAC-SHA256 keyed by
//! `KASSA_STRIPE_WEBHOOK_SECRET`, constant-time, 5-minute tolerance on the shared clock); a
//! verdict then takes the Standard Webhooks route's path: a `PaymentNotice` to the order's actor,
//! which applies it once. Events about other things, or intents Kassa did not open, are
//! acknowledged and ignored (an error would only make Stripe redeliver them for days).

use crate::gateway::stripe::PaymentIntent;
use crate::http::Code;
use crate::http::error::{AppError, ErrorBody};
use crate::routes::webhook::Received;
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use kassa_actors::domain::OrderId;
use kassa_actors::order_actor::PaymentNotice;
use serde::Deserialize;
use std::fmt::Write as _;
use subtle::ConstantTimeEq;

/// How far the signature's `t` may be from now, either way.
const TOLERANCE_SECONDS: i64 = 5 * 60;
const SIGNATURE_HEADER: &str = "Stripe-Signature";
const SUCCEEDED: &str = "payment_intent.succeeded";
const PAYMENT_FAILED: &str = "payment_intent.payment_failed";

/// A Stripe event, as far as Kassa reads it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StripeEvent {
    /// `evt_...`: the webhook id, so a redelivered event has no second effect.
    pub id: String,
    /// `payment_intent.succeeded` and `payment_intent.payment_failed` are acted on; any other
    /// type is acknowledged and ignored.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: StripeEventData,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StripeEventData {
    /// For `payment_intent.*`: the PaymentIntent, its order in `metadata.order_id`.
    #[schema(value_type = Object)]
    pub object: serde_json::Value,
}

fn invalid_signature(why: &str) -> AppError {
    AppError::Unauthorized {
        code: Code::InvalidSignature,
        message: format!("Stripe signature rejected: {why}"),
    }
}

fn invalid_payload(why: String) -> AppError {
    AppError::BadRequest {
        code: Code::InvalidPayload,
        message: format!("the Stripe event is not usable: {why}"),
    }
}

/// Lowercase hex of HMAC-SHA256 over `{timestamp}.{body}`, as Stripe signs (the whole
/// `whsec_...` secret is the key).
fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac_sha256::HMAC::new(secret.as_bytes());
    mac.update(format!("{timestamp}."));
    mac.update(body);
    mac.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// Checks `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]` against the raw body;
/// any one `v1` may match (Stripe sends several while a secret is being rolled).
fn verify(
    secret: Option<&str>,
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), AppError> {
    let secret = secret.ok_or_else(|| {
        invalid_signature("no endpoint secret is configured (KASSA_STRIPE_WEBHOOK_SECRET)")
    })?;
    let header = header
        .ok_or_else(|| invalid_signature("missing or unreadable `Stripe-Signature` header"))?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) if timestamp.is_none() => timestamp = Some(t),
            Some(("v1", sig)) => candidates.push(sig),
            _ => {}
        }
    }
    let timestamp: i64 = timestamp
        .ok_or_else(|| invalid_signature("no `t=` timestamp"))?
        .parse()
        .map_err(|_| invalid_signature("`t=` is not unix seconds"))?;
    if candidates.is_empty() {
        return Err(invalid_signature("no `v1=` signature"));
    }
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(invalid_signature("timestamp is more than 5 minutes off"));
    }
    let expected = signature(secret, timestamp, body);
    let matches = candidates.iter().fold(false, |found, sig| {
        found | bool::from(sig.as_bytes().ct_eq(expected.as_bytes()))
    });
    if matches {
        Ok(())
    } else {
        Err(invalid_signature("no signature matches"))
    }
}

fn ignored(event_id: &str, kind: &str, why: &str) -> HttpResponse {
    metrics::counter!("kassa_webhooks_total", "outcome" => "ignored").increment(1);
    tracing::info!(event_id, kind, why, "Stripe event ignored");
    Received::response()
}

#[utoipa::path(
    post, path = "/webhook/stripe", tag = "webhooks",
    request_body(content = StripeEvent, description = "A Stripe event, sent by Stripe to the endpoint registered for this Kassa"),
    params(
        ("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of {t}.{body} keyed by the endpoint secret>"),
    ),
    responses(
        (status = 200, body = Received, description = "Also for duplicates, events that change nothing, other event types and intents Kassa did not open"),
        (status = 400, body = ErrorBody, description = "invalid_json or invalid_payload"),
        (status = 401, body = ErrorBody, description = "invalid_signature"),
        (status = 404, body = ErrorBody, description = "order_not_found"),
        (status = 413, body = ErrorBody, description = "payload_too_large: the body is over 64 KiB"),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn stripe_event(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let body = crate::http::read_limited(payload).await?;
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let now = state.clock.now().unix_timestamp();
    verify(
        state.config.stripe_webhook_secret.as_deref(),
        header,
        &body,
        now,
    )
    .inspect_err(|_| {
        metrics::counter!("kassa_webhooks_total", "outcome" => "bad_signature").increment(1);
    })?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| AppError::InvalidJson(format!("the body is not valid JSON: {e}")))?;
    let event: StripeEvent =
        serde_json::from_value(json).map_err(|e| invalid_payload(e.to_string()))?;
    let succeeded = match event.kind.as_str() {
        SUCCEEDED => true,
        PAYMENT_FAILED => false,
        other => return Ok(ignored(&event.id, other, "not a payment verdict")),
    };
    let intent: PaymentIntent = serde_json::from_value(event.data.object)
        .map_err(|e| invalid_payload(format!("data.object is not a PaymentIntent: {e}")))?;
    let Some(raw_order_id) = intent.metadata.order_id.as_deref() else {
        return Ok(ignored(
            &event.id,
            &event.kind,
            "the intent has no metadata.order_id",
        ));
    };
    let order_id = OrderId::parse(raw_order_id).map_err(|_| {
        invalid_payload(format!("metadata.order_id `{raw_order_id}` is not a UUID"))
    })?;
    let notice = PaymentNotice {
        webhook_id: event.id,
        succeeded,
        amount: intent.settled_amount(),
        currency: intent.currency_code(),
        payment_id: intent.id,
    };
    crate::routes::webhook::deliver(&state, order_id, notice).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;
    /// Python: hmac.new(b"whsec_test_secret", b'1700000000.{"id":"evt_1"}', sha256).hexdigest()
    const KNOWN: &str = "248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a";
    const T: i64 = 1_700_000_000;

    fn check(header: &str, body: &[u8], now: i64) -> Result<(), AppError> {
        verify(Some(SECRET), Some(header), body, now)
    }

    #[test]
    fn signs_as_stripe_does() {
        assert_eq!(signature(SECRET, T, BODY), KNOWN);
    }

    #[test]
    fn a_matching_v1_within_tolerance_verifies() {
        check(&format!("t={T},v1={KNOWN}"), BODY, T).expect("verifies");
        check(&format!("t={T},v1=00ff,v0=abc,v1={KNOWN}"), BODY, T + 300)
            .expect("any v1 may match");
        check(&format!("t={T},v1={KNOWN}"), BODY, T - 300).expect("up to 5 minutes ahead");
    }

    #[test]
    fn anything_else_is_rejected() {
        let other_body = br#"{"id":"evt_2"}"#;
        for (header, body, now) in [
            (format!("t={T},v1={KNOWN}"), other_body.as_slice(), T),
            (format!("t={T},v1={KNOWN}"), BODY, T + 301),
            (format!("t={T},v1={KNOWN}"), BODY, T - 301),
            (format!("t={T},v0={KNOWN}"), BODY, T),
            (format!("v1={KNOWN}"), BODY, T),
            (format!("t=soon,v1={KNOWN}"), BODY, T),
            (format!("t={},v1={KNOWN}", T + 1), BODY, T),
            (format!("t={T},v1={}", KNOWN.to_ascii_uppercase()), BODY, T),
            (String::new(), BODY, T),
        ] {
            assert!(check(&header, body, now).is_err(), "{header} at {now}");
        }
        assert!(verify(Some(SECRET), None, BODY, T).is_err(), "no header");
        let header = format!("t={T},v1={KNOWN}");
        assert!(verify(None, Some(&header), BODY, T).is_err(), "no secret");
        assert!(
            verify(Some("whsec_other"), Some(&header), BODY, T).is_err(),
            "another secret"
        );
    }
}
