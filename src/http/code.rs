//! The contract's error codes (API.md): the `code` of every error body, as one enum, so that
//! no call site spells one as a string. The wire strings are `as_str`'s, exactly.

use serde::{Serialize, Serializer};
use std::fmt;

/// A stable snake_case code for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    // The request itself.
    InvalidJson,
    InvalidPayload,
    UnsupportedMediaType,
    PayloadTooLarge,
    RequestHeaderFieldsTooLarge,
    ValidationFailed,
    // Who asks.
    Unauthorized,
    InvalidToken,
    InvalidSignature,
    Forbidden,
    // What is asked for.
    NotFound,
    MethodNotAllowed,
    ProductNotFound,
    CartNotFound,
    OrderNotFound,
    // Carts and checkout.
    CartEmpty,
    CartConflict,
    CartLocked,
    CurrencyMismatch,
    TotalTooLarge,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    OrderNotCancellable,
    GatewayUnavailable,
    // The sandbox gateway's protocol.
    PaymentNotFound,
    PaymentNotRefundable,
    PaymentAlreadyDecided,
    PaymentCancelled,
    // The service.
    Overloaded,
    StoreUnavailable,
    ShuttingDown,
    InternalError,
}

impl Code {
    /// Every code, for tests and documentation.
    pub const ALL: [Code; 32] = [
        Code::InvalidJson,
        Code::InvalidPayload,
        Code::UnsupportedMediaType,
        Code::PayloadTooLarge,
        Code::RequestHeaderFieldsTooLarge,
        Code::ValidationFailed,
        Code::Unauthorized,
        Code::InvalidToken,
        Code::InvalidSignature,
        Code::Forbidden,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::ProductNotFound,
        Code::CartNotFound,
        Code::OrderNotFound,
        Code::CartEmpty,
        Code::CartConflict,
        Code::CartLocked,
        Code::CurrencyMismatch,
        Code::TotalTooLarge,
        Code::IdempotencyKeyInUse,
        Code::IdempotencyKeyReused,
        Code::OrderNotCancellable,
        Code::GatewayUnavailable,
        Code::PaymentNotFound,
        Code::PaymentNotRefundable,
        Code::PaymentAlreadyDecided,
        Code::PaymentCancelled,
        Code::Overloaded,
        Code::StoreUnavailable,
        Code::ShuttingDown,
        Code::InternalError,
    ];

    /// The code as the contract writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::InvalidJson => "invalid_json",
            Code::InvalidPayload => "invalid_payload",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::PayloadTooLarge => "payload_too_large",
            Code::RequestHeaderFieldsTooLarge => "request_header_fields_too_large",
            Code::ValidationFailed => "validation_failed",
            Code::Unauthorized => "unauthorized",
            Code::InvalidToken => "invalid_token",
            Code::InvalidSignature => "invalid_signature",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::ProductNotFound => "product_not_found",
            Code::CartNotFound => "cart_not_found",
            Code::OrderNotFound => "order_not_found",
            Code::CartEmpty => "cart_empty",
            Code::CartConflict => "cart_conflict",
            Code::CartLocked => "cart_locked",
            Code::CurrencyMismatch => "currency_mismatch",
            Code::TotalTooLarge => "total_too_large",
            Code::IdempotencyKeyInUse => "idempotency_key_in_use",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::OrderNotCancellable => "order_not_cancellable",
            Code::GatewayUnavailable => "gateway_unavailable",
            Code::PaymentNotFound => "payment_not_found",
            Code::PaymentNotRefundable => "payment_not_refundable",
            Code::PaymentAlreadyDecided => "payment_already_decided",
            Code::PaymentCancelled => "payment_cancelled",
            Code::Overloaded => "overloaded",
            Code::StoreUnavailable => "store_unavailable",
            Code::ShuttingDown => "shutting_down",
            Code::InternalError => "internal_error",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_the_snake_case_of_its_name_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let name = format!("{code:?}");
            let mut snake = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            assert_eq!(code.as_str(), snake);
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(
                serde_json::to_value(code).expect("serializes"),
                serde_json::Value::String(snake)
            );
        }
    }
}
