//! Orders: checkout (POST /api/orders, with Idempotency-Key replay), reading one order, and
//! the caller's order list. The OrderActor decides everything; these handlers parse, keep
//! idempotency records, and shape answers. Someone else's order is simply not found.

use crate::auth::User;
use crate::http::Code;
use crate::http::domain::order_not_found;
use crate::http::error::{AppError, CartLock, ErrorBody, ErrorDetails};
use crate::http::store_call;
use crate::routes::fields::{Fields, PageQuery};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use kassa_actors::domain::{CartId, InvalidValue, OrderId, UserId};
use kassa_actors::idempotency;
use kassa_actors::order::OrderStatus;
use kassa_actors::order_actor::{CancelOrder, GetOrder, PlaceOrder, Placed};
use kassa_actors::store::{
    IdempotencyClaim, IdempotencyRequest, InFlightCheckout, OrderRecord, ShippingDetails,
    StoredResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutResponse {
    pub order_id: Uuid,
    /// Where the shopper pays (the gateway's hosted page).
    pub payment_url: String,
    /// The gateway's token for this payment (for an embedded payment form).
    pub payment_token: String,
    /// `pending_payment`.
    #[schema(schema_with = pending_payment_schema)]
    pub status: String,
    pub total: i64,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

impl CheckoutResponse {
    /// The answer for an order whose payment is open; `None` before the gateway answered.
    fn of(o: &OrderRecord) -> Option<Self> {
        let payment = o.payment.as_ref()?;
        Some(Self {
            order_id: o.id.0,
            payment_url: payment.payment_url.clone(),
            payment_token: payment.token.clone(),
            status: o.status.as_str().to_string(),
            total: o.total,
            currency: o.currency.code().to_string(),
            expires_at: o.expires_at,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItemResponse {
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price: i64,
    pub line_total: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    #[schema(schema_with = order_status_schema)]
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}

/// Shipping address as given at checkout.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShippingBody {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// Country code or name.
    pub country: String,
    /// Where the confirmation goes when the token has no `email`.
    pub email: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderResponse {
    pub order_id: Uuid,
    /// Short and human-readable (`K-7F3QX-9D2MA`), for shoppers and support.
    pub order_number: String,
    #[schema(schema_with = order_status_schema)]
    pub status: String,
    pub items: Vec<OrderItemResponse>,
    pub total: i64,
    pub currency: String,
    #[schema(value_type = ShippingBody)]
    pub shipping_details: ShippingDetails,
    /// The gateway's id of the payment that settled; null until one did.
    #[schema(required = true)]
    pub payment_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    pub history: Vec<HistoryEntry>,
}

impl From<OrderRecord> for OrderResponse {
    fn from(o: OrderRecord) -> Self {
        Self {
            order_id: o.id.0,
            order_number: o.id.number(),
            status: o.status.as_str().to_string(),
            items: o
                .lines
                .iter()
                .map(|l| OrderItemResponse {
                    sku: l.sku.to_string(),
                    name: l.name.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    // Checked: only an order stored before the price limits could overflow.
                    line_total: l.total().unwrap_or(i64::MAX),
                })
                .collect(),
            total: o.total,
            currency: o.currency.code().to_string(),
            payment_id: o
                .settled_payment_id
                .clone()
                .or_else(|| o.payment.as_ref().map(|p| p.payment_id.clone())),
            created_at: o.created_at,
            updated_at: o.updated_at,
            expires_at: o.expires_at,
            history: o
                .history
                .iter()
                .map(|h| HistoryEntry {
                    status: h.status.as_str().to_string(),
                    at: h.at,
                })
                .collect(),
            shipping_details: o.shipping,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderListResponse {
    pub orders: Vec<OrderResponse>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Body of POST /api/orders.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutBody {
    pub cart_id: Uuid,
    pub shipping_details: ShippingBody,
    /// Only `card`.
    #[schema(schema_with = payment_method_schema)]
    pub payment_method: String,
}

/// A string schema allowing only `values`.
fn string_enum(values: impl IntoIterator<Item = &'static str>) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values))
        .build()
}

fn order_status_schema() -> utoipa::openapi::Object {
    string_enum(OrderStatus::ALL.map(OrderStatus::as_str))
}

fn pending_payment_schema() -> utoipa::openapi::Object {
    string_enum([OrderStatus::PendingPayment.as_str()])
}

fn payment_method_schema() -> utoipa::openapi::Object {
    string_enum(["card"])
}

fn text(field: &'static str, max: usize) -> impl Fn(&str) -> Result<String, InvalidValue> {
    move |raw| {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > max {
            Err(InvalidValue::new(
                field,
                format!("must be 1 to {max} characters"),
            ))
        } else {
            Ok(trimmed.to_string())
        }
    }
}

/// A postal code as the world writes them: 1 to 12 letters and digits, with spaces or hyphens
/// between (`10115`, `SW1A 1AA`, `12345-6789`).
fn postal_code(raw: &str) -> Result<String, InvalidValue> {
    let code = raw.trim();
    let ok = (1..=12).contains(&code.chars().count())
        && code.chars().any(|c| c.is_alphanumeric())
        && code
            .chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || c == '-');
    if ok {
        Ok(code.to_string())
    } else {
        Err(InvalidValue::new(
            "postalCode",
            "must be 1 to 12 letters or digits (spaces and hyphens allowed)",
        ))
    }
}

/// An address the confirmation can be sent to: one mailbox (`local@domain.tld`) as the mailer
/// parses it, so that no order is accepted whose email could never go out.
pub fn email(raw: &str) -> Result<String, InvalidValue> {
    let raw = raw.trim();
    let address = (raw.len() <= 254)
        .then(|| raw.parse::<lettre::Address>().ok())
        .flatten()
        .filter(|address| {
            let domain = address.domain();
            domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        });
    match address {
        Some(address) => Ok(address.to_string()),
        None => Err(InvalidValue::new("email", "must be an email address")),
    }
}

fn card(raw: &str) -> Result<(), InvalidValue> {
    if raw == "card" {
        Ok(())
    } else {
        Err(InvalidValue::new("paymentMethod", "must be \"card\""))
    }
}

struct Checkout {
    cart_id: kassa_actors::domain::CartId,
    shipping: ShippingDetails,
    email: String,
}

fn parse_checkout(body: &Value, user: &User) -> Result<Checkout, AppError> {
    let mut fields = Fields::of(body)?;
    let cart_id = fields.string("cartId", |raw| {
        kassa_actors::domain::CartId::parse(raw)
            .map_err(|_| InvalidValue::new("cartId", "must be a UUID"))
    });
    let shipping = fields.object("shippingDetails", |f| {
        let name = f.string("name", text("name", 200));
        let line1 = f.string("line1", text("line1", 200));
        let line2 = f.optional_string("line2", text("line2", 200));
        let city = f.string("city", text("city", 100));
        let postal_code = f.string("postalCode", postal_code);
        let country = f.string("country", text("country", 56));
        let email = f.optional_string("email", email);
        Some(ShippingDetails {
            name: name?,
            line1: line1?,
            line2: line2?,
            city: city?,
            postal_code: postal_code?,
            country: country?,
            email: email?,
        })
    });
    fields.string("paymentMethod", card);
    fields.finish()?;
    let (Some(cart_id), Some(shipping)) = (cart_id, shipping) else {
        return Err(AppError::invalid("body", "incomplete"));
    };
    // A token's claim that is not a usable address is passed over, as if absent.
    let email = user
        .email
        .as_deref()
        .and_then(|e| email(e).ok())
        .or_else(|| shipping.email.clone())
        .ok_or_else(|| {
            AppError::invalid(
                "shippingDetails.email",
                "is required when the token carries no email (the confirmation goes there)",
            )
        })?;
    Ok(Checkout {
        cart_id,
        shipping,
        email,
    })
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, AppError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .and_then(idempotency::parse_key)
        .ok_or_else(|| {
            AppError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_string()))
}

/// A stored checkout response; `replayed` marks an answer from the idempotency record.
fn stored(response: &StoredResponse, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let mut builder = HttpResponse::build(status);
    builder.content_type("application/json");
    if replayed {
        builder.insert_header(("Idempotent-Replayed", "true"));
    }
    builder.body(response.body.clone())
}

#[utoipa::path(
    post, path = "/api/orders", tag = "orders",
    request_body = CheckoutBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1..255 chars; the same key and body within 24 h replays the first response")),
    responses(
        (status = 200, body = CheckoutResponse, description = "The order, pending payment, and where to pay; also the replay of an earlier answer under the same `Idempotency-Key`, and the pending order of a cart checked out again"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "cart_not_found, also for someone else's cart"),
        (status = 409, body = ErrorBody, description = "cart_conflict (details list every offending line), cart_locked, idempotency_key_in_use"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed, cart_empty, idempotency_key_reused"),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn checkout(
    user: User,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let key = idempotency_key(&req)?;
    let answer = run_checkout(&state, &user, None, &body, key).await?;
    Ok(stored(&answer.response, answer.replayed))
}

/// A checkout's answer as `POST /api/orders` gives it (always a 200: errors are errors).
pub struct CheckoutAnswer {
    pub response: StoredResponse,
    /// Replayed from the record of an earlier request with the same key.
    pub replayed: bool,
}

impl CheckoutAnswer {
    /// The checkout response inside (for the hosted checkout page, which redirects to it).
    pub fn body(&self) -> Result<CheckoutResponse, AppError> {
        serde_json::from_str(&self.response.body).map_err(|e| AppError::Internal(e.into()))
    }
}

/// The one checkout path, behind `POST /api/orders` and the hosted checkout page: the
/// Idempotency-Key's claim (when given), the body's validation, the order placed by its
/// actor, the answer recorded under the key. `session`: the checkout session placing it, if
/// any (the payment page's cancel link goes back to it).
pub async fn run_checkout(
    state: &AppState,
    user: &User,
    session: Option<&str>,
    body: &Value,
    key: Option<String>,
) -> Result<CheckoutAnswer, AppError> {
    let order_id = OrderId::new();
    let Some(key) = key else {
        let checkout = parse_checkout(body, user)?;
        begin_checkout(state, user, order_id, Some(checkout.cart_id), None).await?;
        let response = place(state, user, checkout, session, order_id).await;
        end_checkout(state, order_id).await;
        return Ok(CheckoutAnswer {
            response: record_of(&response?)?,
            replayed: false,
        });
    };
    // Noted before the key is claimed, with this request's claim id: if the process dies
    // with the claim's LWT in flight (it may still commit), the recovery releases exactly
    // this claim and no other request's. The cart is noted when the body names one.
    let claim = Uuid::new_v4();
    let cart_id = body
        .get("cartId")
        .and_then(Value::as_str)
        .and_then(|raw| CartId::parse(raw).ok());
    let note = (key.clone(), claim);
    begin_checkout(state, user, order_id, cart_id, Some(note)).await?;
    let answer = claimed_checkout(state, user, session, body, &key, claim, order_id).await;
    // Ended once the key's outcome is recorded: a crash before leaves the note, and the
    // recovery releases the key too.
    end_checkout(state, order_id).await;
    answer
}

/// A checkout under an Idempotency-Key, from the claim to the recorded outcome.
async fn claimed_checkout(
    state: &AppState,
    user: &User,
    session: Option<&str>,
    body: &Value,
    key: &str,
    claim: Uuid,
    order_id: OrderId,
) -> Result<CheckoutAnswer, AppError> {
    // The key is looked up before the body is validated: a key reused with another body is
    // `idempotency_key_reused` whatever that body holds.
    let print = idempotency::fingerprint(body);
    let claimed = store_call(state.store.claim_idempotency(IdempotencyRequest {
        user: &user.id,
        key,
        claim,
        fingerprint: &print,
        now: state.clock.now(),
        ttl: idempotency::TTL,
        stale_after: idempotency::STALE_AFTER,
    }))
    .await?;
    match claimed {
        IdempotencyClaim::Completed(response) => {
            return Ok(CheckoutAnswer {
                response,
                replayed: true,
            });
        }
        IdempotencyClaim::InProgress => {
            return Err(AppError::Conflict {
                code: Code::IdempotencyKeyInUse,
                message: "a request with this Idempotency-Key is still being processed".into(),
                details: None,
            });
        }
        IdempotencyClaim::Mismatch => {
            return Err(AppError::Unprocessable {
                code: Code::IdempotencyKeyReused,
                message: "this Idempotency-Key was used with a different request body".into(),
            });
        }
        IdempotencyClaim::Claimed => {}
    }
    let outcome = match parse_checkout(body, user) {
        Ok(checkout) => place(state, user, checkout, session, order_id).await,
        Err(invalid) => Err(invalid),
    };
    match outcome {
        Ok(response) => {
            let record = record_of(&response)?;
            // The order stands either way; without the record a retry may place another.
            if let Err(e) =
                store_call(state.store.complete_idempotency(&user.id, key, &record)).await
            {
                tracing::error!(error = %e, "could not store the idempotent response");
            }
            Ok(CheckoutAnswer {
                response: record,
                replayed: false,
            })
        }
        Err(e) => {
            if let Err(release) = store_call(state.store.release_idempotency(&user.id, key)).await {
                tracing::error!(error = %release, "could not release an idempotency key");
            }
            Err(e)
        }
    }
}

/// Notes the checkout in the store before it claims or reserves anything, under its fresh
/// order id (nothing is stored under it: its actor starts without reading the store). On a
/// shared store the note is what any replica recovers if this process dies before
/// `end_checkout` (API.md's crash rule); a single-writer store needs none.
async fn begin_checkout(
    state: &AppState,
    user: &User,
    order_id: OrderId,
    cart_id: Option<CartId>,
    key: Option<(String, Uuid)>,
) -> Result<(), AppError> {
    let (idempotency_key, claim) = match key {
        Some((key, claim)) => (Some(key), Some(claim)),
        None => (None, None),
    };
    let note = InFlightCheckout {
        order_id,
        cart_id,
        user: user.id.clone(),
        idempotency_key,
        claim,
    };
    store_call(state.store.begin_checkout(&note)).await
}

/// Forgets the note once the checkout has answered. A note that cannot be deleted only
/// costs a recovery that finds the order stored (or nothing held) if this replica dies.
async fn end_checkout(state: &AppState, order_id: OrderId) {
    if let Some(me) = state.store.replica()
        && let Err(e) = state.store.end_checkout(me, order_id).await
    {
        tracing::warn!(%order_id, error = %e, "could not delete the checkout's note");
    }
}

fn record_of(response: &CheckoutResponse) -> Result<StoredResponse, AppError> {
    let body = serde_json::to_string(response).map_err(|e| AppError::Internal(e.into()))?;
    Ok(StoredResponse { status: 200, body })
}

async fn place(
    state: &AppState,
    user: &User,
    checkout: Checkout,
    session: Option<&str>,
    order_id: OrderId,
) -> Result<CheckoutResponse, AppError> {
    let msg = PlaceOrder {
        user: user.id.clone(),
        cart_id: checkout.cart_id,
        shipping: checkout.shipping,
        email: checkout.email,
        return_url: state.links.return_url(order_id),
        cancel_url: Some(state.links.cancel_url(order_id, session)),
    };
    match state.orders.ask_new(&order_id, msg).await? {
        Ok(Placed::New(order)) => CheckoutResponse::of(&order).ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!(
                "order {order_id} was placed without a payment"
            ))
        }),
        Ok(Placed::Existing(existing)) => {
            let viewer = GetOrder {
                viewer: Some(user.id.clone()),
            };
            // The locking order's actor answers after any checkout still running in it.
            // Not found means its checkout died before storing the order (a crash); the
            // lock then lapses at its expiry, like the order would have.
            let order = state.orders.ask(&existing, viewer).await?.ok();
            let pending = order.filter(|o| o.status == OrderStatus::PendingPayment);
            if let Some(answer) = pending.as_ref().and_then(CheckoutResponse::of) {
                Ok(answer)
            } else {
                Err(AppError::Conflict {
                    code: Code::CartLocked,
                    message:
                        "the cart is still being released from a previous order; retry shortly"
                            .into(),
                    details: Some(ErrorDetails::CartLock(CartLock {
                        order_id: existing.0,
                    })),
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// An order id from the path: one that is not a UUID names no order (404).
pub fn parse_order_id(raw: &str) -> Result<OrderId, AppError> {
    OrderId::parse(raw).map_err(|_| order_not_found())
}

#[utoipa::path(
    get, path = "/api/orders/{orderId}", tag = "orders",
    params(("orderId" = Uuid, Path, description = "Not a UUID: not found")),
    responses(
        (status = 200, body = OrderResponse, description = "The order with its history"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "order_not_found, also for someone else's order"),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_order(
    user: User,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_order_id(&id)?;
    let viewer = (!user.admin).then_some(user.id);
    let order = state.orders.ask(&id, GetOrder { viewer }).await??;
    Ok(HttpResponse::Ok().json(OrderResponse::from(order)))
}

#[utoipa::path(
    post, path = "/api/orders/{orderId}/cancel", tag = "orders",
    params(("orderId" = Uuid, Path, description = "Not a UUID: not found")),
    responses(
        (status = 200, body = OrderResponse, description = "The order, now `cancelled`: stock released, cart unlocked with its lines, the payment cancelled at the gateway; a cancelled order answers 200 again"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "order_not_found, also for someone else's order"),
        (status = 409, body = ErrorBody, description = "order_not_cancellable: the order is no longer `pending_payment`"),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_order(
    user: User,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_order_id(&id)?;
    let viewer = (!user.admin).then_some(user.id);
    let order = cancel(&state, id, viewer).await?;
    Ok(HttpResponse::Ok().json(OrderResponse::from(order)))
}

/// Cancels an unpaid order as `viewer` (`None`: an admin, or the holder of its status token).
pub async fn cancel(
    state: &AppState,
    id: OrderId,
    viewer: Option<UserId>,
) -> Result<OrderRecord, AppError> {
    let order = state.orders.ask(&id, CancelOrder { viewer }).await??;
    tracing::info!(order_id = %id, "order cancelled");
    Ok(order)
}

#[utoipa::path(
    get, path = "/api/orders", tag = "orders",
    params(PageQuery),
    responses(
        (status = 200, body = OrderListResponse, description = "The caller's orders, newest first; `nextCursor` is null on the last page"),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_orders(
    user: User,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    let (limit, before) = PageQuery::parse(&req, decode_cursor)?;
    let mut orders = store_call(state.store.list_orders(&user.id, before, limit + 1)).await?;
    let next_cursor = if orders.len() > limit {
        orders.truncate(limit);
        orders.last().map(|o| encode_cursor(o.id))
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(OrderListResponse {
        orders: orders.into_iter().map(OrderResponse::from).collect(),
        next_cursor,
    }))
}

fn encode_cursor(id: OrderId) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.0.as_bytes())
}

fn decode_cursor(raw: &str) -> Option<OrderId> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    Uuid::from_slice(&bytes).ok().map(OrderId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_email_is_one_the_mailer_can_address() {
        for good in ["alice@example.com", " bob.smith+shop@mail.example.co.uk "] {
            let accepted = email(good).expect(good);
            assert_eq!(accepted, good.trim());
            accepted
                .parse::<lettre::message::Mailbox>()
                .expect("the mailer parses what checkout accepts");
        }
        for bad in [
            "x@y.com,evil@z.com",
            "a@y.com>",
            "a@b.c;d@e.f",
            "a@b..com",
            "Alice <alice@example.com>",
            "alice@localhost",
            "alice@.example.com",
            "alice@example.com.",
            "@example.com",
            "alice",
            "al ice@example.com",
            "",
        ] {
            assert!(email(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(email(&long).is_err());
    }

    #[test]
    fn postal_codes_of_the_world_are_accepted_and_symbols_refused() {
        for good in ["10115", "SW1A 1AA", "12345-6789", "K1A 0B1", " 75001 "] {
            assert!(postal_code(good).is_ok(), "{good:?} was refused");
        }
        for bad in ["", "  ", "12#45!", "-", "1234567890123", "<script>"] {
            assert!(postal_code(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let id = OrderId::new();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor("AAAA"), None);
    }
}
