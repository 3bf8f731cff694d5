//! The sandbox's payments and their rules: opening one per order, the shopper's decision,
//! the shop's cancel, refunds. A change is journalled before it is answered. It knows
//! nothing of HTTP: its refusals are `SandboxError`s, which `routes` maps to statuses.

use super::delivery::{WebhookEvent, deliver, webhook_event};
use super::{SandboxGateway, journal};
use base64::Engine as _;
use kassa_actors::domain::{Currency, OrderId};
use kassa_actors::gateway::{
    DisplayLine, GatewayError, PaymentDisplay, PaymentRequest, PaymentSession, PaymentState,
    PaymentStatus,
};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Default)]
pub(super) struct Ledger {
    pub(super) payments: HashMap<String, Payment>,
    pub(super) by_order: HashMap<OrderId, String>,
    /// Decisions whose webhook is still being delivered, by payment id (journalled only).
    pub(super) undelivered: HashMap<String, WebhookEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Payment {
    pub(super) id: String,
    pub(super) url: String,
    pub(super) token: String,
    pub(super) order_id: OrderId,
    pub(super) amount: i64,
    pub(super) currency: Currency,
    pub(super) callback_url: String,
    pub(super) return_url: String,
    pub(super) state: PaymentState,
    pub(super) refund_id: Option<String>,
    /// Failed because the shop cancelled it, not because the shopper declined (lines
    /// journalled before cancels existed read as not cancelled).
    #[serde(default)]
    pub(super) cancelled: bool,
    /// What the payment page shows besides the amount (empty in lines journalled before).
    #[serde(default)]
    pub(super) details: PageDetails,
}

/// The request's `PaymentDisplay`, as the payment keeps (and journals) it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct PageDetails {
    pub(super) shop_name: String,
    pub(super) order_number: String,
    pub(super) lines: Vec<PageLine>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub(super) expires_at: Option<OffsetDateTime>,
    pub(super) cancel_url: Option<String>,
}

/// One line of the order: its name, quantity and total (minor units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PageLine {
    pub(super) name: String,
    pub(super) quantity: u32,
    pub(super) amount: i64,
}

impl From<PaymentDisplay> for PageDetails {
    fn from(display: PaymentDisplay) -> Self {
        Self {
            shop_name: display.shop_name,
            order_number: display.order_number,
            lines: display
                .lines
                .into_iter()
                .map(
                    |DisplayLine {
                         name,
                         quantity,
                         amount,
                     }| PageLine {
                        name,
                        quantity,
                        amount,
                    },
                )
                .collect(),
            expires_at: display.expires_at,
            cancel_url: display.cancel_url,
        }
    }
}

impl Payment {
    pub(super) fn session(&self) -> PaymentSession {
        PaymentSession {
            payment_id: self.id.clone(),
            payment_url: self.url.clone(),
            token: self.token.clone(),
        }
    }

    pub(super) fn status(&self) -> PaymentStatus {
        PaymentStatus {
            payment_id: self.id.clone(),
            order_id: self.order_id,
            state: self.state,
            amount: self.amount,
            currency: self.currency,
        }
    }
}

/// What the shopper decided on the payment page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    fn state(self) -> PaymentState {
        match self {
            Self::Success => PaymentState::Succeeded,
            Self::Failure => PaymentState::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum SandboxError {
    #[error("no payment with id `{0}`")]
    UnknownPayment(String),
    #[error("must not be negative")]
    NegativeAmount,
    #[error("order {0} already has a payment for a different amount or currency")]
    OrderReused(OrderId),
    #[error("only a succeeded payment can be refunded; this one is {}", state_name(*.0))]
    NotRefundable(PaymentState),
    #[error("the payment has already {}", state_name(*.0))]
    AlreadyDecided(PaymentState),
    #[error("the payment was cancelled by the shop and can no longer be paid")]
    Cancelled,
}

impl From<SandboxError> for GatewayError {
    fn from(e: SandboxError) -> Self {
        Self::Refused(e.to_string())
    }
}

/// As the gateway protocol names the state.
pub(super) fn state_name(state: PaymentState) -> &'static str {
    match state {
        PaymentState::Pending => "pending",
        PaymentState::Succeeded => "succeeded",
        PaymentState::Failed => "failed",
    }
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    format!(
        "tok_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl SandboxGateway {
    /// Opens the order's payment, or returns the one it already has; answered once the new
    /// payment's line is in the journal (an order is written only after its payment opened,
    /// so a crash cannot leave an order whose payment the sandbox does not know).
    pub(super) async fn open(&self, request: PaymentRequest) -> Result<Payment, SandboxError> {
        let (payment, receipt) = self.open_queued(request)?;
        receipt.wait().await;
        Ok(payment)
    }

    /// `open`, the journal line queued; its receipt tells when it is written.
    pub(super) fn open_queued(
        &self,
        request: PaymentRequest,
    ) -> Result<(Payment, journal::Receipt), SandboxError> {
        if request.amount < 0 {
            return Err(SandboxError::NegativeAmount);
        }
        let mut ledger = self.inner.ledger();
        if let Some(existing) = ledger
            .by_order
            .get(&request.order_id)
            .and_then(|id| ledger.payments.get(id))
        {
            if existing.amount != request.amount || existing.currency != request.currency {
                return Err(SandboxError::OrderReused(request.order_id));
            }
            return Ok((existing.clone(), journal::Receipt::none()));
        }
        let id = format!("pay_{}", Uuid::new_v4().simple());
        let base = self.inner.settings.public_base_url.trim_end_matches('/');
        let payment = Payment {
            url: format!("{base}/pay/{id}"),
            id: id.clone(),
            token: random_token(),
            order_id: request.order_id,
            amount: request.amount,
            currency: request.currency,
            callback_url: request.callback_url,
            return_url: request.return_url,
            state: PaymentState::Pending,
            refund_id: None,
            cancelled: false,
            details: request.display.into(),
        };
        let receipt = self.inner.record_answered(&payment, None);
        ledger.by_order.insert(request.order_id, id.clone());
        ledger.payments.insert(id, payment.clone());
        Ok((payment, receipt))
    }

    pub(super) fn payment(&self, payment_id: &str) -> Result<Payment, SandboxError> {
        self.inner
            .ledger()
            .payments
            .get(payment_id)
            .cloned()
            .ok_or_else(|| SandboxError::UnknownPayment(payment_id.to_string()))
    }

    /// Refunds a succeeded payment; a repeated refund answers the first refund's id.
    pub(super) async fn refund_payment(&self, payment_id: &str) -> Result<String, SandboxError> {
        let (refund_id, receipt) = {
            let mut ledger = self.inner.ledger();
            let payment = ledger
                .payments
                .get_mut(payment_id)
                .ok_or_else(|| SandboxError::UnknownPayment(payment_id.to_string()))?;
            if payment.state != PaymentState::Succeeded {
                return Err(SandboxError::NotRefundable(payment.state));
            }
            if let Some(refund_id) = &payment.refund_id {
                return Ok(refund_id.clone());
            }
            let refund_id = format!("re_{}", Uuid::new_v4().simple());
            payment.refund_id = Some(refund_id.clone());
            let payment = payment.clone();
            let receipt = self
                .inner
                .record_answered(&payment, ledger.undelivered.get(payment_id));
            (refund_id, receipt)
        };
        receipt.wait().await;
        Ok(refund_id)
    }

    /// Records the shopper's decision and starts delivering its webhook. Deciding again the
    /// same way changes nothing; deciding the other way is refused.
    pub(super) async fn decide(
        &self,
        payment_id: &str,
        outcome: Outcome,
    ) -> Result<Payment, SandboxError> {
        let (payment, event, receipt) = {
            let mut ledger = self.inner.ledger();
            let payment = ledger
                .payments
                .get_mut(payment_id)
                .ok_or_else(|| SandboxError::UnknownPayment(payment_id.to_string()))?;
            if payment.cancelled {
                return Err(SandboxError::Cancelled);
            }
            match payment.state {
                PaymentState::Pending => {
                    payment.state = outcome.state();
                    let event = webhook_event(payment);
                    let receipt = self.inner.record_answered(payment, Some(&event));
                    let payment = payment.clone();
                    if self.inner.journal.is_some() {
                        ledger.undelivered.insert(payment.id.clone(), event.clone());
                    }
                    (payment, Some(event), receipt)
                }
                state if state == outcome.state() => {
                    (payment.clone(), None, journal::Receipt::none())
                }
                state => return Err(SandboxError::AlreadyDecided(state)),
            }
        };
        // Answered (and delivered) once the decision is in the journal.
        receipt.wait().await;
        if let Some(event) = event {
            tracing::info!(payment_id, webhook_id = %event.id, outcome = ?outcome, "sandbox payment decided");
            tokio::spawn(deliver(self.inner.clone(), event));
        }
        Ok(payment)
    }

    /// The shop cancels the payment: a pending one fails and can no longer be paid, with no
    /// webhook (the shop asked); a failed one stays as it is; a succeeded one is refused
    /// (its webhook settles the order). Answered once the change is in the journal.
    pub(super) async fn cancel_payment(&self, payment_id: &str) -> Result<Payment, SandboxError> {
        let (payment, receipt) = {
            let mut ledger = self.inner.ledger();
            let payment = ledger
                .payments
                .get_mut(payment_id)
                .ok_or_else(|| SandboxError::UnknownPayment(payment_id.to_string()))?;
            match payment.state {
                PaymentState::Pending => {
                    payment.state = PaymentState::Failed;
                    payment.cancelled = true;
                    let payment = payment.clone();
                    let receipt = self
                        .inner
                        .record_answered(&payment, ledger.undelivered.get(payment_id));
                    (payment, receipt)
                }
                PaymentState::Failed => (payment.clone(), journal::Receipt::none()),
                PaymentState::Succeeded => {
                    return Err(SandboxError::AlreadyDecided(PaymentState::Succeeded));
                }
            }
        };
        receipt.wait().await;
        if payment.cancelled {
            tracing::info!(payment_id, "sandbox payment cancelled");
        }
        Ok(payment)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{gateway, open, request};
    use super::*;

    #[test]
    fn payment_urls_hang_off_the_public_base_url() {
        let payment = open(&gateway(), request(OrderId::new(), 100)).expect("opens");
        assert_eq!(
            payment.url,
            format!("http://sandbox.test/base/pay/{}", payment.id)
        );
        assert!(payment.id.starts_with("pay_"));
    }

    #[test]
    fn one_order_cannot_open_payments_for_two_amounts() {
        let gateway = gateway();
        let order_id = OrderId::new();
        open(&gateway, request(order_id, 100)).expect("opens");
        assert_eq!(
            open(&gateway, request(order_id, 200)).map(|p| p.id),
            Err(SandboxError::OrderReused(order_id))
        );
    }

    #[test]
    fn negative_amounts_are_refused() {
        assert_eq!(
            open(&gateway(), request(OrderId::new(), -1)).map(|p| p.id),
            Err(SandboxError::NegativeAmount)
        );
    }

    #[tokio::test]
    async fn only_succeeded_payments_can_be_refunded() {
        let gateway = gateway();
        let payment = open(&gateway, request(OrderId::new(), 100)).expect("opens");
        assert_eq!(
            gateway.refund_payment(&payment.id).await,
            Err(SandboxError::NotRefundable(PaymentState::Pending))
        );
        assert_eq!(
            gateway.refund_payment("pay_missing").await,
            Err(SandboxError::UnknownPayment("pay_missing".into()))
        );
    }

    #[tokio::test]
    async fn a_cancelled_payment_fails_and_can_no_longer_be_paid_nor_declined() {
        let gateway = gateway();
        let payment = open(&gateway, request(OrderId::new(), 100)).expect("opens");

        let cancelled = gateway.cancel_payment(&payment.id).await.expect("cancels");

        assert_eq!(cancelled.state, PaymentState::Failed);
        assert!(cancelled.cancelled);
        for outcome in [Outcome::Success, Outcome::Failure] {
            assert_eq!(
                gateway.decide(&payment.id, outcome).await.map(|p| p.id),
                Err(SandboxError::Cancelled),
                "{outcome:?}"
            );
        }
        let again = gateway.cancel_payment(&payment.id).await.expect("again");
        assert_eq!(again.state, PaymentState::Failed);
        assert!(gateway.inner.ledger().undelivered.is_empty());
    }

    #[tokio::test]
    async fn cancelling_a_declined_payment_changes_nothing_and_a_paid_one_is_refused() {
        let gateway = gateway();
        let declined = open(&gateway, request(OrderId::new(), 100)).expect("opens");
        gateway
            .decide(&declined.id, Outcome::Failure)
            .await
            .expect("declined");
        let after = gateway.cancel_payment(&declined.id).await.expect("cancel");
        assert_eq!(
            (after.state, after.cancelled),
            (PaymentState::Failed, false)
        );

        let paid = open(&gateway, request(OrderId::new(), 100)).expect("opens");
        gateway
            .decide(&paid.id, Outcome::Success)
            .await
            .expect("paid");
        assert_eq!(
            gateway.cancel_payment(&paid.id).await.map(|p| p.id),
            Err(SandboxError::AlreadyDecided(PaymentState::Succeeded))
        );
        assert_eq!(
            gateway.cancel_payment("pay_missing").await.map(|p| p.id),
            Err(SandboxError::UnknownPayment("pay_missing".into()))
        );
    }

    #[test]
    fn a_payment_journalled_before_cancels_existed_reads_as_not_cancelled() {
        let line = serde_json::json!({
            "id": "pay_1", "url": "http://sandbox.test/pay/pay_1", "token": "tok_1",
            "orderId": OrderId::new(), "amount": 100, "currency": "EUR",
            "callbackUrl": "http://shop.test/webhook", "returnUrl": "http://shop.test/orders/1",
            "state": "pending", "refundId": null,
        });
        let payment: Payment = serde_json::from_value(line).expect("reads");
        assert!(!payment.cancelled);
        assert_eq!(payment.details, PageDetails::default());
    }

    #[tokio::test]
    async fn what_the_page_shows_is_kept_and_journalled_with_the_payment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("payments.jsonl");
        let settings =
            || super::super::SandboxSettings::new("whsec_c2VjcmV0", "http://sandbox.test");
        let clock: kassa_actors::clock::SharedClock =
            std::sync::Arc::new(kassa_actors::clock::ManualClock::starting_now());
        let expires_at = clock.now() + time::Duration::minutes(15);
        let mut req = request(OrderId::new(), 2998);
        req.display = PaymentDisplay {
            shop_name: "Kassa Demo Shop".into(),
            order_number: "K-7F3Q-9D2M".into(),
            lines: vec![DisplayLine {
                name: "Tee".into(),
                quantity: 2,
                amount: 2998,
            }],
            expires_at: Some(expires_at),
            cancel_url: Some("http://shop.test/cancel".into()),
        };
        let sandbox =
            SandboxGateway::with_journal(settings(), clock.clone(), &path).expect("opens");
        let opened = sandbox.open(req).await.expect("opens");
        sandbox.close_journal();

        let reopened = SandboxGateway::with_journal(settings(), clock, &path).expect("opens");
        let read_back = reopened.payment(&opened.id).expect("known");
        reopened.close_journal();

        assert_eq!(read_back.details, opened.details);
        assert_eq!(read_back.details.order_number, "K-7F3Q-9D2M");
        assert_eq!(read_back.details.expires_at, Some(expires_at));
        assert_eq!(read_back.details.lines[0].quantity, 2);
    }
}
