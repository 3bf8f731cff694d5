//! The payment gateway as the actors see it: initiate a payment, refund it, ask its status.
//! Adapters (the built-in sandbox, any HTTP gateway, Stripe) live in the `kassa` crate. The
//! order id is the gateway's idempotency key, so initiating twice never charges twice.

use crate::domain::{Currency, OrderId};
use async_trait::async_trait;
use std::sync::Arc;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    pub order_id: OrderId,
    /// Minor units.
    pub amount: i64,
    pub currency: Currency,
    /// Where the gateway posts the signed webhook.
    pub callback_url: String,
    /// Where the gateway sends the shopper back.
    pub return_url: String,
    /// What a hosted payment page shows the shopper (gateways without one ignore it).
    pub display: PaymentDisplay,
}

/// What the shopper sees on a hosted payment page besides the amount: whose shop, which
/// order, what is in it, how long it is held, and the way back without paying.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentDisplay {
    pub shop_name: String,
    /// The order's human-readable number (`K-7F3Q-9D2M`).
    pub order_number: String,
    pub lines: Vec<DisplayLine>,
    /// The stock is held (and the payment can be made) until then.
    pub expires_at: Option<OffsetDateTime>,
    /// Cancels the order and takes the shopper back to the shop (a plain link).
    pub cancel_url: Option<String>,
}

/// One line of the order as the payment page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayLine {
    pub name: String,
    pub quantity: u32,
    /// The line's total, minor units.
    pub amount: i64,
}

/// What cancelling a payment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The payment can no longer be paid (it was pending, or had already failed).
    Cancelled,
    /// The payment had already succeeded: its success webhook settles the order.
    AlreadySucceeded,
}

/// A payment the gateway opened for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSession {
    pub payment_id: String,
    pub payment_url: String,
    pub token: String,
}

/// As the gateway protocol names it: `pending`, `succeeded`, `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentState {
    Pending,
    Succeeded,
    Failed,
}

/// The gateway's view of one payment (the status query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentStatus {
    pub payment_id: String,
    pub order_id: OrderId,
    pub state: PaymentState,
    pub amount: i64,
    pub currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Could not reach the gateway or it answered 5xx / timed out: may be retried.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// The gateway refused the request (4xx) or answered something unreadable.
    #[error("gateway refused: {0}")]
    Refused(String),
}

#[async_trait]
pub trait Gateway: Send + Sync + 'static {
    /// Opens a payment; the same `order_id` always yields the same payment.
    async fn initiate(&self, request: PaymentRequest) -> Result<PaymentSession, GatewayError>;
    /// Refunds a settled payment; returns the gateway's refund id.
    async fn refund(&self, payment_id: &str) -> Result<String, GatewayError>;
    async fn status(&self, payment_id: &str) -> Result<PaymentStatus, GatewayError>;
    /// Cancels a payment so it can no longer be paid; cancelling again answers the same.
    async fn cancel(&self, payment_id: &str) -> Result<CancelOutcome, GatewayError>;
}

pub type SharedGateway = Arc<dyn Gateway>;
