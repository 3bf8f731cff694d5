//! What the domain's refusals answer at the edge: the cart and order actors' errors as
//! `AppError`s, and the not-found and empty-cart answers they share with the handlers. The
//! routes, the shopper pages and the payment webhooks use this one mapping, never their own.

use super::code::Code;
use super::error::{AppError, CartLock, ConflictLine, ConflictReason, ErrorDetails};
use kassa_actors::cart::CartError;
use kassa_actors::domain::Sku;
use kassa_actors::order_actor::{self, LineConflict, OrderError};

/// The answer for a product that does not exist.
pub fn product_not_found(sku: &Sku) -> AppError {
    AppError::not_found(
        Code::ProductNotFound,
        format!("no product with sku `{sku}`"),
    )
}

/// The answer for a cart that does not exist or is someone else's.
pub fn cart_not_found() -> AppError {
    AppError::not_found(Code::CartNotFound, "no such cart")
}

/// The answer for checking out a cart with no lines.
pub fn cart_empty() -> AppError {
    AppError::Unprocessable {
        code: Code::CartEmpty,
        message: "the cart is empty".into(),
    }
}

/// The answer for an order that does not exist or is someone else's.
pub fn order_not_found() -> AppError {
    AppError::not_found(Code::OrderNotFound, "no such order")
}

impl From<CartError> for AppError {
    fn from(e: CartError) -> Self {
        match e {
            CartError::NotFound => cart_not_found(),
            CartError::Locked { order_id } => AppError::Conflict {
                code: Code::CartLocked,
                message: "the cart is locked by a pending order".into(),
                details: Some(ErrorDetails::CartLock(CartLock {
                    order_id: order_id.0,
                })),
            },
            CartError::CurrencyMismatch { cart, line } => AppError::Unprocessable {
                code: Code::CurrencyMismatch,
                message: format!(
                    "the cart holds {} items; this product is priced in {}",
                    cart.code(),
                    line.code()
                ),
            },
            CartError::Empty => cart_empty(),
            CartError::Full { max } => AppError::invalid(
                "sku",
                format!("the cart already holds {max} lines, the most it may; remove one first"),
            ),
            CartError::TotalTooLarge { max } => AppError::invalid(
                "quantity",
                format!("would take the cart's total above {max} minor units"),
            ),
            CartError::AlreadyExists => AppError::Internal(anyhow::anyhow!("cart id collision")),
            CartError::Actor(e) => e.into(),
        }
    }
}

/// What an order's refusal answers a shopper (the payment webhooks use it for the few a
/// payment event can meet: `routes::webhook::deliver`).
impl From<OrderError> for AppError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::NotFound => order_not_found(),
            OrderError::CartNotFound => cart_not_found(),
            OrderError::CartEmpty => cart_empty(),
            OrderError::TotalTooLarge => AppError::Unprocessable {
                code: Code::TotalTooLarge,
                message: "the cart's total is above the largest order total".into(),
            },
            OrderError::Conflicts(lines) => AppError::Conflict {
                code: Code::CartConflict,
                message: "Items not available or prices changed".into(),
                details: Some(ErrorDetails::Conflicts(
                    lines.into_iter().map(conflict_line).collect(),
                )),
            },
            OrderError::GatewayUnavailable => AppError::BadGateway {
                code: Code::GatewayUnavailable,
                message: "the payment gateway is unavailable; the order failed and nothing is held"
                    .into(),
            },
            OrderError::NotCancellable(status) => AppError::Conflict {
                code: Code::OrderNotCancellable,
                message: format!("the order is {status}; only an unpaid order can be cancelled"),
                details: None,
            },
            OrderError::Overloaded => AppError::Overloaded,
            OrderError::Actor(e) => e.into(),
        }
    }
}

fn conflict_line(c: LineConflict) -> ConflictLine {
    ConflictLine {
        sku: c.sku.to_string(),
        reason: match c.reason {
            order_actor::ConflictReason::InsufficientStock => ConflictReason::InsufficientStock,
            order_actor::ConflictReason::PriceChanged => ConflictReason::PriceChanged,
            order_actor::ConflictReason::UnknownProduct => ConflictReason::UnknownProduct,
        },
        requested: c.requested,
        available: c.available,
        cart_price: c.cart_price,
        current_price: c.current_price,
    }
}
