//! Signed webhook delivery: each decision becomes one Standard Webhooks event, posted to its
//! `callbackUrl` until a 2xx with capped backoff and no attempt limit, then journalled as
//! delivered. It never changes a payment's state.

use super::Inner;
use super::ledger::Payment;
use crate::gateway::client::describe;
use kassa_actors::gateway::PaymentState;
use serde::{Deserialize, Serialize};
use standardwebhooks::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// One signed event on its way to `callbackUrl`; every attempt carries the same `id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WebhookEvent {
    pub(super) id: String,
    pub(super) payment_id: String,
    pub(super) callback_url: String,
    pub(super) payload: String,
}

/// The event announcing `payment`'s decision.
pub(super) fn webhook_event(payment: &Payment) -> WebhookEvent {
    let status = match payment.state {
        PaymentState::Succeeded => "Success",
        PaymentState::Pending | PaymentState::Failed => "Failed",
    };
    let body = serde_json::json!({
        "orderId": payment.order_id,
        "status": status,
        "paymentId": payment.id,
        "amount": payment.amount,
        "currency": payment.currency.code(),
    });
    WebhookEvent {
        id: format!("msg_{}", Uuid::new_v4().simple()),
        payment_id: payment.id.clone(),
        callback_url: payment.callback_url.clone(),
        payload: body.to_string(),
    }
}

/// The waits between delivery attempts: `initial`, doubling, never above `max`.
fn retry_waits(initial: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(initial.min(max)), move |wait| {
        Some(wait.saturating_mul(2).min(max))
    })
}

enum Attempt {
    Delivered,
    Rejected(reqwest::StatusCode),
    Unreachable(reqwest::Error),
}

/// Posts the event until the receiver answers 2xx, as API.md promises: there is no attempt
/// limit, only the capped backoff, and the task ends with the process. Each attempt is
/// signed afresh with the clock's current time.
pub(super) async fn deliver(inner: Arc<Inner>, event: WebhookEvent) {
    let settings = &inner.settings;
    let mut waits = retry_waits(settings.retry_initial, settings.retry_max);
    for attempt in 1_u64.. {
        let outcome = match attempt_delivery(&inner, &event).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(webhook_id = %event.id, error = %e, "cannot sign the sandbox webhook; dropping it");
                return;
            }
        };
        let (label, problem) = match outcome {
            Attempt::Delivered => {
                metrics::counter!("kassa_sandbox_webhook_attempts_total", "outcome" => "delivered")
                    .increment(1);
                tracing::debug!(webhook_id = %event.id, attempt, "sandbox webhook delivered");
                if inner.journal.is_some() {
                    let mut ledger = inner.ledger();
                    ledger.undelivered.remove(&event.payment_id);
                    if let Some(payment) = ledger.payments.get(&event.payment_id) {
                        inner.record(payment, None);
                    }
                }
                return;
            }
            Attempt::Rejected(status) => ("rejected", format!("the receiver answered {status}")),
            Attempt::Unreachable(e) => ("unreachable", describe(&e)),
        };
        metrics::counter!("kassa_sandbox_webhook_attempts_total", "outcome" => label).increment(1);
        tracing::warn!(
            webhook_id = %event.id,
            payment_id = %event.payment_id,
            callback_url = %event.callback_url,
            attempt,
            error = %problem,
            "sandbox webhook delivery failed"
        );
        let wait = waits.next().unwrap_or(settings.retry_max);
        tokio::time::sleep(wait).await;
    }
}

async fn attempt_delivery(
    inner: &Inner,
    event: &WebhookEvent,
) -> Result<Attempt, standardwebhooks::WebhookError> {
    let timestamp = inner.clock.now().unix_timestamp();
    let signature = inner
        .signer
        .sign(&event.id, timestamp, event.payload.as_bytes())?;
    let sent = inner
        .client
        .post(&event.callback_url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER_WEBHOOK_ID, &event.id)
        .header(HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string())
        .header(HEADER_WEBHOOK_SIGNATURE, signature)
        .body(event.payload.clone())
        .send()
        .await;
    Ok(match sent {
        Ok(response) if response.status().is_success() => Attempt::Delivered,
        Ok(response) => Attempt::Rejected(response.status()),
        Err(e) => Attempt::Unreachable(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_retry_waits_double_up_to_the_cap() {
        let waits: Vec<_> = retry_waits(Duration::from_millis(500), Duration::from_secs(3))
            .take(5)
            .collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 3000, 3000].map(Duration::from_millis)
        );
    }
}
