//! The sandbox over HTTP: API.md's "Payment gateway protocol" and the hosted payment page's
//! decisions, in the `{"error","code"}` shape. The one place the sandbox meets the HTTP
//! error type: handlers parse, call the ledger and map its `SandboxError`s, nothing more.

use super::ledger::{Outcome, Payment, SandboxError, state_name};
use super::{SandboxGateway, is_http_url};
use crate::http::Code;
use crate::http::error::{AppError, FieldError};
use crate::http::extract::is_json_mime;
use crate::http::{MAX_BODY_BYTES, json_config, method_not_allowed};
use actix_web::error::UrlencodedError;
use actix_web::guard::{self, GuardContext};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use kassa_actors::domain::{Currency, OrderId};
use kassa_actors::gateway::{DisplayLine, PaymentDisplay, PaymentRequest};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

impl From<SandboxError> for AppError {
    fn from(e: SandboxError) -> Self {
        let message = e.to_string();
        match e {
            SandboxError::UnknownPayment(_) => AppError::not_found(Code::PaymentNotFound, message),
            SandboxError::NegativeAmount => AppError::invalid("amount", message),
            SandboxError::OrderReused(_) => AppError::Unprocessable {
                code: Code::IdempotencyKeyReused,
                message,
            },
            SandboxError::NotRefundable(_) => AppError::Conflict {
                code: Code::PaymentNotRefundable,
                message,
                details: None,
            },
            SandboxError::AlreadyDecided(_) => AppError::Conflict {
                code: Code::PaymentAlreadyDecided,
                message,
                details: None,
            },
            SandboxError::Cancelled => AppError::Conflict {
                code: Code::PaymentCancelled,
                message,
                details: None,
            },
        }
    }
}

/// The payment page loads nothing and runs nothing: its only style is inline. (No
/// `form-action`: the decision's 303 goes to the shop, which it would block.)
const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";

/// Bounds on what a payment page shows, so a page stays a page.
const MAX_SHOP_NAME_CHARS: usize = 100;
const MAX_ORDER_NUMBER_CHARS: usize = 64;
const MAX_LINES: usize = 100;
const MAX_LINE_NAME_CHARS: usize = 200;
const MAX_URL_CHARS: usize = 2048;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatePaymentBody {
    order_id: OrderId,
    amount: i64,
    currency: Currency,
    callback_url: String,
    return_url: String,
    /// The rest is optional: what the payment page shows besides the amount.
    #[serde(default)]
    shop_name: String,
    #[serde(default)]
    order_number: String,
    #[serde(default)]
    lines: Vec<LineBody>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    cancel_url: Option<String>,
}

#[derive(Deserialize)]
struct LineBody {
    name: String,
    quantity: u32,
    amount: i64,
}

impl CreatePaymentBody {
    /// Every field that is not acceptable, named as the body names it.
    fn invalid_fields(&self) -> Vec<FieldError> {
        let mut invalid = Vec::new();
        let mut check = |ok: bool, field: String, message: &str| {
            if !ok {
                invalid.push(FieldError {
                    field,
                    message: message.into(),
                });
            }
        };
        for (field, url) in [
            ("callbackUrl", Some(&self.callback_url)),
            ("returnUrl", Some(&self.return_url)),
            ("cancelUrl", self.cancel_url.as_ref()),
        ] {
            if let Some(url) = url {
                check(
                    url.len() <= MAX_URL_CHARS && is_http_url(url),
                    field.into(),
                    "must be an absolute http(s) URL of at most 2048 characters",
                );
            }
        }
        check(
            self.shop_name.chars().count() <= MAX_SHOP_NAME_CHARS,
            "shopName".into(),
            "must be at most 100 characters",
        );
        check(
            self.order_number.chars().count() <= MAX_ORDER_NUMBER_CHARS,
            "orderNumber".into(),
            "must be at most 64 characters",
        );
        check(
            self.lines.len() <= MAX_LINES,
            "lines".into(),
            "must have at most 100 lines",
        );
        for (i, line) in self.lines.iter().enumerate().take(MAX_LINES) {
            let name_chars = line.name.chars().count();
            check(
                (1..=MAX_LINE_NAME_CHARS).contains(&name_chars),
                format!("lines[{i}].name"),
                "must be 1 to 200 characters",
            );
            check(
                line.quantity >= 1,
                format!("lines[{i}].quantity"),
                "must be at least 1",
            );
            check(
                line.amount >= 0,
                format!("lines[{i}].amount"),
                "must not be negative",
            );
        }
        invalid
    }

    fn into_request(self) -> PaymentRequest {
        PaymentRequest {
            order_id: self.order_id,
            amount: self.amount,
            currency: self.currency,
            callback_url: self.callback_url,
            return_url: self.return_url,
            display: PaymentDisplay {
                shop_name: self.shop_name,
                order_number: self.order_number,
                lines: self
                    .lines
                    .into_iter()
                    .map(|line| DisplayLine {
                        name: line.name,
                        quantity: line.quantity,
                        amount: line.amount,
                    })
                    .collect(),
                expires_at: self.expires_at,
                cancel_url: self.cancel_url,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionBody {
    payment_id: String,
    payment_url: String,
    token: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RefundBody {
    refund_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    payment_id: String,
    order_id: OrderId,
    status: &'static str,
    amount: i64,
    currency: &'static str,
}

impl From<&Payment> for PaymentBody {
    fn from(payment: &Payment) -> Self {
        Self {
            payment_id: payment.id.clone(),
            order_id: payment.order_id,
            status: state_name(payment.state),
            amount: payment.amount,
            currency: payment.currency.code(),
        }
    }
}

#[derive(Deserialize)]
struct DecisionBody {
    outcome: Outcome,
}

/// Mounts the gateway protocol and the hosted payment page relative to the current scope.
pub fn configure(cfg: &mut web::ServiceConfig, gateway: SandboxGateway) {
    cfg.app_data(web::Data::new(gateway))
        .app_data(json_config())
        .app_data(
            web::FormConfig::default()
                .limit(MAX_BODY_BYTES)
                .error_handler(|err, _| form_error(err).into()),
        )
        .service(
            web::resource("/payments")
                .route(web::post().to(create_payment))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/payments/{paymentId}")
                .route(web::get().to(get_payment))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/payments/{paymentId}/refunds")
                .route(web::post().to(refund_payment))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/payments/{paymentId}/cancel")
                .route(web::post().to(cancel_payment))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/pay/{paymentId}")
                .route(web::get().to(payment_page))
                .route(
                    web::post()
                        .guard(guard::fn_guard(has_json_body))
                        .to(decide_by_json),
                )
                .route(web::post().to(decide_by_form))
                .default_service(method_not_allowed("GET, POST")),
        );
}

fn has_json_body(ctx: &GuardContext<'_>) -> bool {
    ctx.header::<header::ContentType>()
        .is_some_and(|content_type| is_json_mime(content_type.0))
}

fn form_error(err: UrlencodedError) -> AppError {
    match err {
        UrlencodedError::Overflow { .. } => AppError::PayloadTooLarge,
        UrlencodedError::ContentType => AppError::UnsupportedMediaType,
        other => AppError::invalid("outcome", format!("expected success or failure: {other}")),
    }
}

async fn create_payment(
    gateway: web::Data<SandboxGateway>,
    request: HttpRequest,
    body: web::Json<CreatePaymentBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.into_inner();
    let key = request
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| OrderId::parse(v).ok());
    if key != Some(body.order_id) {
        return Err(AppError::invalid(
            "Idempotency-Key",
            "the header is required and must equal the body's orderId",
        ));
    }
    let invalid = body.invalid_fields();
    if !invalid.is_empty() {
        return Err(AppError::Validation(invalid));
    }
    let payment = gateway.open(body.into_request()).await?;
    Ok(HttpResponse::Created().json(SessionBody {
        payment_id: payment.id,
        payment_url: payment.url,
        token: payment.token,
    }))
}

async fn get_payment(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let payment = gateway.payment(&payment_id)?;
    Ok(HttpResponse::Ok().json(PaymentBody::from(&payment)))
}

async fn refund_payment(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let refund_id = gateway.refund_payment(&payment_id).await?;
    Ok(HttpResponse::Created().json(RefundBody { refund_id }))
}

async fn cancel_payment(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let payment = gateway.cancel_payment(&payment_id).await?;
    Ok(HttpResponse::Ok().json(PaymentBody::from(&payment)))
}

async fn payment_page(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let payment = gateway.payment(&payment_id)?;
    page_response(&gateway, &payment, StatusCode::OK)
}

/// The payment page as `payment` now stands, answered with `status`.
fn page_response(
    gateway: &SandboxGateway,
    payment: &Payment,
    status: StatusCode,
) -> Result<HttpResponse, AppError> {
    let html = gateway.render_page(payment).map_err(|e| {
        AppError::Internal(anyhow::Error::new(e).context("rendering the sandbox payment page"))
    })?;
    Ok(HttpResponse::build(status)
        .content_type(mime::TEXT_HTML_UTF_8)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
        .body(html))
}

async fn decide_by_json(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, AppError> {
    let payment = gateway.decide(&payment_id, body.outcome).await?;
    Ok(HttpResponse::Ok().json(PaymentBody::from(&payment)))
}

async fn decide_by_form(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
    form: web::Form<DecisionBody>,
) -> Result<HttpResponse, AppError> {
    match gateway.decide(&payment_id, form.outcome).await {
        Ok(payment) => Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, payment.return_url))
            .finish()),
        // A shopper whose page was stale sees why, in words, with the way back.
        Err(SandboxError::AlreadyDecided(_) | SandboxError::Cancelled) => {
            let payment = gateway.payment(&payment_id)?;
            page_response(&gateway, &payment, StatusCode::CONFLICT)
        }
        Err(other) => Err(other.into()),
    }
}
