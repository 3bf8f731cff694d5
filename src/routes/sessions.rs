//! Checkout sessions (`POST /api/checkout-sessions`): a storefront opens one for its shopper's
//! cart and sends the shopper to the hosted checkout page at its `url`. The session then acts
//! for the token's user without the token, for an hour; it never outlives that.

use crate::auth::User;
use crate::http::error::{AppError, ErrorBody, FieldError};
use crate::http::store_call;
use crate::routes::fields::Fields;
use crate::routes::orders::email;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use base64::Engine as _;
use kassa_actors::cart::GetCart;
use kassa_actors::domain::{CartId, InvalidValue};
use kassa_actors::store::CheckoutSession;
use rand::RngExt;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

/// How long a checkout session's page works.
pub const SESSION_TTL: time::Duration = time::Duration::hours(1);
/// The longest URL a session keeps.
const MAX_URL: usize = 2048;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutSessionResponse {
    /// Unguessable (256 random bits); the only key to the page.
    pub session_id: String,
    /// The hosted checkout page: `KASSA_PUBLIC_URL/checkout/{sessionId}`.
    pub url: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

/// Body of POST /api/checkout-sessions.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // documents the body for OpenAPI; the handler reads it field by field
pub struct CheckoutSessionBody {
    pub cart_id: uuid::Uuid,
    /// The storefront's cart page ("Back to cart", "Review cart"); absolute http(s) URL.
    pub review_cart_url: Option<String>,
    /// Where a shopper who cancels at the payment page goes; absolute http(s) URL. Without
    /// it, the checkout page again.
    pub cancel_url: Option<String>,
}

fn absolute_url(field: &'static str) -> impl Fn(&str) -> Result<String, InvalidValue> {
    move |raw| {
        let ok = raw.len() <= MAX_URL
            && reqwest::Url::parse(raw)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if ok {
            Ok(raw.to_string())
        } else {
            Err(InvalidValue::new(
                field,
                "must be an absolute http(s) URL of at most 2048 characters",
            ))
        }
    }
}

#[utoipa::path(
    post, path = "/api/checkout-sessions", tag = "orders",
    request_body = CheckoutSessionBody,
    responses(
        (status = 201, body = CheckoutSessionResponse, description = "The session and its hosted checkout page, valid for 1 h; it acts for the token's user (`sub`, `email`)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "cart_not_found, also for someone else's cart"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed, cart_empty"),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_checkout_session(
    user: User,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let mut fields = Fields::of(&body)?;
    let cart_id = fields.string("cartId", |raw| {
        CartId::parse(raw).map_err(|_| InvalidValue::new("cartId", "must be a UUID"))
    });
    let review_cart_url = fields.optional_string("reviewCartUrl", absolute_url("reviewCartUrl"));
    let cancel_url = fields.optional_string("cancelUrl", absolute_url("cancelUrl"));
    fields.finish()?;
    let (Some(cart_id), Some(review_cart_url), Some(cancel_url)) =
        (cart_id, review_cart_url, cancel_url)
    else {
        return Err(AppError::Validation(vec![FieldError {
            field: "body".into(),
            message: "incomplete".into(),
        }]));
    };
    let session = open_session(&state, &user, cart_id, review_cart_url, cancel_url).await?;
    Ok(HttpResponse::Created().json(CheckoutSessionResponse {
        url: state.links.checkout_page(&session.id),
        session_id: session.id,
        expires_at: session.expires_at,
    }))
}

/// Opens a checkout session for `user`'s non-empty cart and stores it.
pub async fn open_session(
    state: &AppState,
    user: &User,
    cart_id: CartId,
    review_cart_url: Option<String>,
    cancel_url: Option<String>,
) -> Result<CheckoutSession, AppError> {
    let cart = state
        .carts
        .ask(
            &cart_id,
            GetCart {
                user: user.id.clone(),
            },
        )
        .await??;
    if cart.lines.is_empty() {
        return Err(crate::http::domain::cart_empty());
    }
    let now = state.clock.now();
    let session = CheckoutSession {
        id: new_session_id(),
        cart_id,
        user: user.id.clone(),
        // Only a claim the mailer could use is offered in the form.
        email: user.email.as_deref().and_then(|e| email(e).ok()),
        review_cart_url,
        cancel_url,
        created_at: now,
        expires_at: now + SESSION_TTL,
    };
    store_call(state.store.put_session(&session)).await?;
    metrics::counter!("kassa_checkout_sessions_total").increment(1);
    Ok(session)
}

/// `cs_` and 256 random bits, base64url.
fn new_session_id() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!(
        "cs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}
