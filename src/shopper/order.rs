//! The order page (`/orders/{orderId}?t=`), where the gateway sends the shopper back: the
//! order's status in words, refreshing itself while the payment is pending. And the payment
//! page's cancel link. Both need the order's status token, never a login; neither changes an
//! order but through its actor.

use crate::http::error::AppError;
use crate::http::store_call;
use crate::routes::orders::{cancel as cancel_order, parse_order_id};
use crate::shopper::{LineView, see_other};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use kassa_actors::domain::{OrderId, display_money};
use kassa_actors::order::OrderStatus;
use kassa_actors::order_actor::{GetOrder, OrderError};
use kassa_actors::store::{OrderRecord, ShippingDetails};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub struct OrderQuery {
    #[serde(default)]
    t: String,
    /// The checkout session the order came from (the cancel link goes back to it).
    #[serde(default)]
    session: Option<String>,
}

#[derive(Serialize)]
struct OrderView<'a> {
    heading: &'static str,
    message: &'static str,
    /// `good`, `bad`, `wait` or `neutral`: the status's colour.
    tone: &'static str,
    pending: bool,
    order_number: String,
    lines: Vec<LineView>,
    total: String,
    shipping: &'a ShippingDetails,
    email: &'a str,
    continue_url: Option<&'a str>,
}

/// What the shopper reads for each status.
fn wording(status: OrderStatus) -> (&'static str, &'static str, &'static str) {
    match status {
        OrderStatus::Processing => (
            "Thank you! Your order is confirmed",
            "We received your payment and are preparing your order. A confirmation is on its way to your email.",
            "good",
        ),
        OrderStatus::PendingPayment => (
            "Waiting for your payment",
            "This page updates by itself as soon as the payment service tells us the outcome.",
            "wait",
        ),
        OrderStatus::Failed => (
            "Payment failed",
            "The payment did not go through and nothing was charged. Your cart is kept: you can check out again.",
            "bad",
        ),
        OrderStatus::Expired => (
            "Order expired",
            "The order was not paid in time, so the items were released. Your cart is kept: you can check out again.",
            "bad",
        ),
        OrderStatus::Cancelled => (
            "Order cancelled",
            "You cancelled this order; nothing was charged. Your cart is kept.",
            "neutral",
        ),
        OrderStatus::RefundPending | OrderStatus::Refunded => (
            "Your payment is being refunded",
            "We could not fulfil this order, so your payment is refunded in full. It may take a few days to show on your statement.",
            "neutral",
        ),
    }
}

/// GET /orders/{orderId}?t=: a wrong or missing token is a 404, as an unknown order is.
pub async fn show(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<OrderQuery>,
) -> HttpResponse {
    let Some(id) = authorised(&state, &id, &query.t) else {
        return not_found(&state);
    };
    let order = match state.orders.ask(&id, GetOrder { viewer: None }).await {
        Ok(Ok(order)) => order,
        Ok(Err(OrderError::NotFound)) => return not_found(&state),
        Ok(Err(_)) | Err(_) => return state.pages.unavailable(),
    };
    render(&state, &order)
}

/// GET /orders/{orderId}/cancel?t=[&session=]: the payment page's "Cancel and return to the
/// shop". Cancels the unpaid order (an order already settled stays as it is), then goes back
/// to the checkout session's `cancelUrl` or its checkout page, else to the order page.
pub async fn cancel(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<OrderQuery>,
) -> HttpResponse {
    let Some(id) = authorised(&state, &id, &query.t) else {
        return not_found(&state);
    };
    let order = match cancel_order(&state, id, None).await {
        Ok(order) => Some(order),
        Err(AppError::Conflict { .. }) => None,
        Err(AppError::NotFound { .. }) => return not_found(&state),
        Err(_) => return state.pages.unavailable(),
    };
    let back = match (&order, query.session.as_deref()) {
        (Some(order), Some(session)) => session_return(&state, order, session).await,
        _ => None,
    };
    see_other(&back.unwrap_or_else(|| state.links.order_page(id)))
}

/// Where a cancelled order's session sends the shopper: its `cancelUrl`, else its checkout
/// page while the session lasts. Only the session of the order's own cart counts.
async fn session_return(state: &AppState, order: &OrderRecord, session: &str) -> Option<String> {
    let session = store_call(state.store.load_session(session))
        .await
        .ok()
        .flatten()?;
    if session.cart_id != order.cart_id || session.user != order.owner {
        return None;
    }
    if let Some(url) = session.cancel_url {
        return Some(url);
    }
    (session.expires_at > state.clock.now()).then(|| state.links.checkout_page(&session.id))
}

/// The order id, when `token` is its status token.
fn authorised(state: &AppState, raw_id: &str, token: &str) -> Option<OrderId> {
    let id = parse_order_id(raw_id).ok()?;
    state.links.verify(id, token).then_some(id)
}

fn not_found(state: &AppState) -> HttpResponse {
    state.pages.not_found(
        "We could not find this order",
        "The link may be incomplete. Use the link from your email or from the shop.",
    )
}

fn render(state: &AppState, order: &OrderRecord) -> HttpResponse {
    let (heading, message, tone) = wording(order.status);
    let money = |amount: i64| display_money(amount, order.currency);
    let view = OrderView {
        heading,
        message,
        tone,
        pending: order.status == OrderStatus::PendingPayment,
        order_number: order.id.number(),
        lines: order
            .lines
            .iter()
            .map(|l| LineView::new(&l.name, l.quantity, l.unit_price, l.total(), &money))
            .collect(),
        total: money(order.total),
        shipping: &order.shipping,
        email: &order.email,
        continue_url: state.pages.home_url(),
    };
    state.pages.render(StatusCode::OK, "order.html", view)
}
