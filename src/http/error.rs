//! The one error type at the HTTP edge. Handlers return `AppError`; it becomes the contract's
//! `{"error", "code", "details"?}` body with the right status. Bad input is always a 4xx;
//! every 5xx is logged here with its cause chain, and nothing else in the shell logs them.

use super::code::Code;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use kassa_actors::domain::InvalidValue;
use serde::Serialize;
use std::fmt;

/// A field that failed validation, as reported in `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl From<InvalidValue> for FieldError {
    fn from(e: InvalidValue) -> Self {
        Self {
            field: e.field.to_string(),
            message: e.message,
        }
    }
}

/// Why a cart line cannot be bought as it is in the cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictReason {
    InsufficientStock,
    PriceChanged,
    UnknownProduct,
}

/// One offending line of a `cart_conflict`, as reported in `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictLine {
    pub sku: String,
    pub reason: ConflictReason,
    pub requested: u32,
    /// On hand minus reserved now (0 for an unknown product).
    pub available: i64,
    /// The price the shopper saw when setting the line.
    pub cart_price: i64,
    /// The product's price now; null when the product is not in the catalog.
    #[schema(required = true)]
    pub current_price: Option<i64>,
}

/// The pending order holding a cart, as reported in the `details` of `cart_locked`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartLock {
    pub order_id: uuid::Uuid,
}

/// What `details` holds: the fields that failed validation (`validation_failed`), every
/// offending line (`cart_conflict`) or the order holding the cart (`cart_locked`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ErrorDetails {
    Fields(Vec<FieldError>),
    Conflicts(Vec<ConflictLine>),
    CartLock(CartLock),
}

/// The contract's error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A sentence for humans.
    pub error: String,
    /// A stable snake_case code for programs.
    #[schema(value_type = String)]
    pub code: Code,
    /// Absent when there is nothing to add.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub details: Option<ErrorDetails>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidJson(String),
    /// 400 with a specific code (`invalid_payload`).
    #[error("{message}")]
    BadRequest { code: Code, message: String },
    /// 401 that is not about bearer tokens (`invalid_signature`).
    #[error("{message}")]
    Unauthorized { code: Code, message: String },
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than 64 KiB")]
    PayloadTooLarge,
    #[error("the request headers are larger than 16 KiB in all")]
    HeadersTooLarge,
    #[error("the request has invalid values")]
    Validation(Vec<FieldError>),
    /// 422 with a specific code (`currency_mismatch`, `idempotency_key_reused`, ...).
    #[error("{message}")]
    Unprocessable { code: Code, message: String },
    #[error("authentication required")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("this route needs the admin role")]
    Forbidden,
    #[error("{message}")]
    NotFound { code: Code, message: String },
    #[error("{message}")]
    Conflict {
        code: Code,
        message: String,
        details: Option<ErrorDetails>,
    },
    #[error("the server is busy; retry shortly")]
    Overloaded,
    #[error("the store is unavailable; retry shortly")]
    StoreUnavailable,
    #[error("{message}")]
    BadGateway { code: Code, message: String },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn not_found(code: Code, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidJson(_) => Code::InvalidJson,
            Self::BadRequest { code, .. } | Self::Unauthorized { code, .. } => *code,
            Self::UnsupportedMediaType => Code::UnsupportedMediaType,
            Self::PayloadTooLarge => Code::PayloadTooLarge,
            Self::HeadersTooLarge => Code::RequestHeaderFieldsTooLarge,
            Self::Validation(_) => Code::ValidationFailed,
            Self::Unprocessable { code, .. } => *code,
            Self::MissingToken => Code::Unauthorized,
            Self::InvalidToken(_) => Code::InvalidToken,
            Self::Forbidden => Code::Forbidden,
            Self::NotFound { code, .. } => *code,
            Self::Conflict { code, .. } => *code,
            Self::Overloaded => Code::Overloaded,
            Self::StoreUnavailable => Code::StoreUnavailable,
            Self::BadGateway { code, .. } => *code,
            Self::Internal(_) => Code::InternalError,
        }
    }

    fn details(&self) -> Option<ErrorDetails> {
        match self {
            Self::Validation(fields) => Some(ErrorDetails::Fields(fields.clone())),
            Self::Conflict { details, .. } => details.clone(),
            _ => None,
        }
    }
}

impl From<InvalidValue> for AppError {
    fn from(e: InvalidValue) -> Self {
        Self::Validation(vec![e.into()])
    }
}

/// Writes `error` and its whole `source()` chain on one line.
struct Chain<'a>(&'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Validation(_) | Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MissingToken | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Overloaded | Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), code = self.code().as_str(), error = %Chain(self), "request failed");
        }
        // Internal causes stay in the log; the client gets a plain sentence.
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
            details: self.details(),
        };
        let mut response = HttpResponse::build(status);
        match self {
            Self::MissingToken => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            Self::InvalidToken(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                ));
            }
            Self::Overloaded | Self::StoreUnavailable => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            _ => {}
        }
        response.json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;
    use serde_json::Value;

    async fn body_of(e: AppError) -> (StatusCode, Value) {
        let response = e.error_response();
        let status = response.status();
        let bytes = to_bytes(response.into_body()).await.expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[actix_web::test]
    async fn validation_errors_name_their_fields() {
        let (status, body) = body_of(AppError::invalid("price", "must be >= 0")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["details"][0]["field"], "price");
    }

    #[actix_web::test]
    async fn internal_errors_do_not_leak_their_cause() {
        let (status, body) =
            body_of(AppError::Internal(anyhow::anyhow!("secret path /etc/x"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("/etc/x")
        );
    }
}
