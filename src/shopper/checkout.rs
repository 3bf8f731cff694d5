//! The hosted checkout page (`/checkout/{sessionId}`): shows the session's cart and a form,
//! places the order through the one checkout path (`routes::orders::run_checkout`) with the
//! form's one-time key as its Idempotency-Key, and sends the shopper on to the gateway. It
//! never decides an order itself, and never shows a session that has expired.

use crate::auth::User;
use crate::http::Code;
use crate::http::error::{AppError, ConflictLine, ConflictReason, ErrorDetails};
use crate::http::store_call;
use crate::routes::carts::set_line;
use crate::routes::orders::run_checkout;
use crate::shopper::{LineView, see_other};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use base64::Engine as _;
use kassa_actors::cart::{GetCart, RemoveLine};
use kassa_actors::domain::{Quantity, display_money};
use kassa_actors::idempotency;
use kassa_actors::product::GetProduct;
use kassa_actors::store::{CartRecord, CheckoutSession};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a submit waits for a first submit with the same key still running (a double
/// click) before showing the page again.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(15);
const IN_PROGRESS_POLL: Duration = Duration::from_millis(100);

/// The payment methods the gateway takes, as the form offers them.
const METHODS: &[Method] = &[Method {
    value: "card",
    label: "Card",
}];

#[derive(Serialize)]
struct Method {
    value: &'static str,
    label: &'static str,
}

/// What the shopper typed (kept when the page comes back) and the form's one-time key.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckoutForm {
    name: String,
    line1: String,
    line2: String,
    city: String,
    postal_code: String,
    country: String,
    email: String,
    payment_method: String,
    #[serde(skip_serializing)]
    key: String,
    #[serde(skip_serializing)]
    action: String,
}

#[derive(Serialize)]
struct ConflictView {
    name: String,
    message: String,
}

#[derive(Serialize)]
struct CheckoutView<'a> {
    heading: &'static str,
    lines: Vec<LineView>,
    total: String,
    form: &'a CheckoutForm,
    errors: BTreeMap<String, String>,
    key: String,
    review_cart_url: Option<&'a str>,
    conflicts: Vec<ConflictView>,
    error: Option<&'static str>,
    notice: Option<&'static str>,
    methods: &'static [Method],
}

/// How the page comes back after a submit.
enum Outcome {
    Fresh,
    Updated,
    Invalid(BTreeMap<String, String>),
    Conflicts(Vec<ConflictLine>),
    Problem(StatusCode, &'static str),
}

/// GET: the checkout form, the email filled from the token's claim.
pub async fn show(state: web::Data<AppState>, session_id: web::Path<String>) -> HttpResponse {
    let session = match live_session(&state, &session_id).await {
        Ok(Some(session)) => session,
        Ok(None) => return expired(&state),
        Err(_) => return state.pages.unavailable(),
    };
    let form = CheckoutForm {
        email: session.email.clone().unwrap_or_default(),
        payment_method: METHODS[0].value.into(),
        ..CheckoutForm::default()
    };
    render(&state, &session, &form, Outcome::Fresh).await
}

/// POST: place the order (303 to the gateway), or "Update cart and continue".
pub async fn submit(
    state: web::Data<AppState>,
    session_id: web::Path<String>,
    form: web::Form<CheckoutForm>,
) -> HttpResponse {
    let session = match live_session(&state, &session_id).await {
        Ok(Some(session)) => session,
        Ok(None) => return expired(&state),
        Err(_) => return state.pages.unavailable(),
    };
    let form = form.into_inner();
    if form.action == "update-cart" {
        return match update_cart(&state, &session).await {
            Ok(()) => render(&state, &session, &form, Outcome::Updated).await,
            Err(outcome) => render(&state, &session, &form, outcome).await,
        };
    }
    let outcome = match place(&state, &session, &form).await {
        Ok(payment_url) => return see_other(&payment_url),
        Err(AppError::Validation(fields)) => Outcome::Invalid(
            fields
                .into_iter()
                .map(|f| {
                    let field = form_field(&f.field);
                    let message = format!("{} {}", label_of(&field), f.message);
                    (field, message)
                })
                .collect(),
        ),
        Err(AppError::Conflict {
            details: Some(ErrorDetails::Conflicts(lines)),
            ..
        }) => Outcome::Conflicts(lines),
        Err(AppError::Conflict { .. }) => Outcome::Problem(
            StatusCode::CONFLICT,
            "Your cart is still being released from an earlier order. Please try again in a moment.",
        ),
        Err(AppError::BadGateway { .. }) => Outcome::Problem(
            StatusCode::BAD_GATEWAY,
            "The payment service could not be reached. Nothing was charged.",
        ),
        Err(AppError::Unprocessable {
            code: Code::CartEmpty,
            ..
        }) => Outcome::Problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Your cart is empty: there is nothing to order.",
        ),
        Err(AppError::NotFound { .. }) => return expired(&state),
        Err(e) => {
            tracing::warn!(session = %session.id, error = %e, "hosted checkout could not place the order");
            Outcome::Problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "We could not place your order just now. Nothing was charged. Please try again in a moment.",
            )
        }
    };
    render(&state, &session, &form, outcome).await
}

/// The session, if it exists and has not expired.
async fn live_session(state: &AppState, id: &str) -> Result<Option<CheckoutSession>, AppError> {
    // Ids are ours (`cs_` + base64url): anything else names no session, without a store read.
    let plausible = id.starts_with("cs_")
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plausible {
        return Ok(None);
    }
    let session = store_call(state.store.load_session(id)).await?;
    let now = state.clock.now();
    Ok(session.filter(|s| s.expires_at > now))
}

fn expired(state: &AppState) -> HttpResponse {
    state.pages.not_found(
        "This checkout link has expired",
        "Checkout links work for an hour. Go back to the shop and check out again: your cart is kept.",
    )
}

/// Places the order as the session's user; answers the gateway's payment URL. A second
/// submit with the same key while the first still runs (a double click) waits for it and
/// gets the same payment.
async fn place(
    state: &AppState,
    session: &CheckoutSession,
    form: &CheckoutForm,
) -> Result<String, AppError> {
    // The email typed in the form is the one used (prefilled from the token's claim).
    let user = User {
        id: session.user.clone(),
        email: None,
        admin: false,
    };
    let mut shipping = serde_json::json!({
        "name": form.name,
        "line1": form.line1,
        "city": form.city,
        "postalCode": form.postal_code,
        "country": form.country,
    });
    if !form.line2.trim().is_empty() {
        shipping["line2"] = form.line2.clone().into();
    }
    if !form.email.trim().is_empty() {
        shipping["email"] = form.email.clone().into();
    }
    let body = serde_json::json!({
        "cartId": session.cart_id.to_string(),
        "shippingDetails": shipping,
        "paymentMethod": form.payment_method,
    });
    let mut key = idempotency::parse_key(&form.key).map(str::to_owned);
    let waited_since = std::time::Instant::now();
    loop {
        match run_checkout(state, &user, Some(&session.id), &body, key.clone()).await {
            Ok(answer) => return Ok(answer.body()?.payment_url),
            Err(AppError::Conflict {
                code: Code::IdempotencyKeyInUse,
                ..
            }) if waited_since.elapsed() < IN_PROGRESS_WAIT => {
                tokio::time::sleep(IN_PROGRESS_POLL).await;
            }
            // The same form sent again with other details (after Back): a new attempt. The
            // cart's pending order, if the first placed one, is answered again.
            Err(AppError::Unprocessable {
                code: Code::IdempotencyKeyReused,
                ..
            }) => key = Some(new_key()),
            Err(e) => return Err(e),
        }
    }
}

/// "Update cart and continue": each line set to what can be bought now at today's price
/// (quantity = min(requested, available)); a line with none left, or no longer sold, goes.
async fn update_cart(state: &AppState, session: &CheckoutSession) -> Result<(), Outcome> {
    let cart = cart_of(state, session).await.map_err(problem)?;
    for line in &cart.lines {
        let product = state
            .products
            .ask(&line.sku, GetProduct)
            .await
            .map_err(|e| problem(e.into()))?
            .map_err(|e| problem(e.into()))?;
        let quantity = product
            .as_ref()
            .map_or(0, |p| p.available.clamp(0, i64::from(line.quantity)));
        let unchanged = product.as_ref().is_some_and(|p| {
            i64::from(line.quantity) == quantity
                && p.info.price == line.unit_price
                && p.info.currency == line.currency
        });
        if unchanged {
            continue;
        }
        let updated = match (product, Quantity::parse(quantity)) {
            (Some(product), Ok(quantity)) if !quantity.is_zero() => {
                set_line(
                    state,
                    &session.user,
                    session.cart_id,
                    line.sku.clone(),
                    quantity,
                    product.info,
                )
                .await
            }
            _ => remove_line(state, session, line.sku.clone()).await,
        };
        if let Err(e) = updated {
            // A line that cannot take today's price (another currency) goes too.
            tracing::info!(sku = %line.sku, error = %e, "line removed while updating the cart");
            remove_line(state, session, line.sku.clone())
                .await
                .map_err(problem)?;
        }
    }
    Ok(())
}

async fn remove_line(
    state: &AppState,
    session: &CheckoutSession,
    sku: kassa_actors::domain::Sku,
) -> Result<CartRecord, AppError> {
    let msg = RemoveLine {
        user: session.user.clone(),
        sku,
    };
    Ok(state.carts.ask(&session.cart_id, msg).await??)
}

fn problem(e: AppError) -> Outcome {
    match e {
        AppError::Conflict { .. } => Outcome::Problem(
            StatusCode::CONFLICT,
            "Your cart is waiting for the payment of an earlier order and cannot change now.",
        ),
        _ => Outcome::Problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "We could not update your cart just now. Please try again in a moment.",
        ),
    }
}

async fn cart_of(state: &AppState, session: &CheckoutSession) -> Result<CartRecord, AppError> {
    let get = GetCart {
        user: session.user.clone(),
    };
    // A cart that is gone is `cart_not_found`, as the API says (`From<CartError>`).
    Ok(state.carts.ask(&session.cart_id, get).await??)
}

/// The page, its status and heading following the outcome; what was typed is kept.
async fn render(
    state: &AppState,
    session: &CheckoutSession,
    form: &CheckoutForm,
    outcome: Outcome,
) -> HttpResponse {
    let cart = match cart_of(state, session).await {
        Ok(cart) => cart,
        Err(AppError::NotFound { .. }) => return expired(state),
        Err(_) => return state.pages.unavailable(),
    };
    let currency = cart.currency();
    let money = |amount: i64| currency.map_or_else(String::new, |c| display_money(amount, c));
    let name_of = |sku: &str| {
        cart.lines
            .iter()
            .find(|l| l.sku.as_str() == sku)
            .map_or_else(|| sku.to_string(), |l| l.name.clone())
    };
    let mut view = CheckoutView {
        heading: "Checkout",
        lines: cart
            .lines
            .iter()
            .map(|l| LineView::new(&l.name, l.quantity, l.unit_price, l.total(), &money))
            .collect(),
        total: money(cart.total().unwrap_or(i64::MAX)),
        form,
        errors: BTreeMap::new(),
        key: new_key(),
        review_cart_url: session.review_cart_url.as_deref(),
        conflicts: Vec::new(),
        error: None,
        notice: None,
        methods: METHODS,
    };
    let status = match outcome {
        Outcome::Fresh => StatusCode::OK,
        Outcome::Updated => {
            view.notice = Some(
                "Your cart now holds what is available, at today's prices. Check it and place your order.",
            );
            StatusCode::OK
        }
        Outcome::Invalid(errors) => {
            view.error = Some("Some details need another look: see the marked fields.");
            view.errors = errors;
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Outcome::Conflicts(lines) => {
            view.heading = "Items not available or prices changed";
            view.conflicts = lines
                .iter()
                .map(|line| ConflictView {
                    name: name_of(&line.sku),
                    message: conflict_message(line, &money),
                })
                .collect();
            StatusCode::CONFLICT
        }
        Outcome::Problem(status, message) => {
            view.error = Some(message);
            status
        }
    };
    state.pages.render(status, "checkout.html", view)
}

/// One offending line in words: "Only 3 left", "Price changed from €19.99 to €24.99", "No
/// longer available".
fn conflict_message(line: &ConflictLine, money: &impl Fn(i64) -> String) -> String {
    let stock = |available: i64| {
        if available > 0 {
            format!("Only {available} left")
        } else {
            "No longer available".to_string()
        }
    };
    match (line.reason, line.current_price) {
        (ConflictReason::PriceChanged, Some(now)) => {
            let changed = format!(
                "Price changed from {} to {}",
                money(line.cart_price),
                money(now)
            );
            if line.available < i64::from(line.requested) {
                format!("{changed}; {}", stock(line.available).to_lowercase())
            } else {
                changed
            }
        }
        (ConflictReason::InsufficientStock, _) => stock(line.available),
        _ => "No longer available".to_string(),
    }
}

/// The API's field name (`shippingDetails.postalCode`) as the form's (`postalCode`).
fn form_field(api_field: &str) -> String {
    api_field
        .strip_prefix("shippingDetails.")
        .unwrap_or(api_field)
        .to_string()
}

/// The form's label of a field, to say its message in full ("Postal code is required").
fn label_of(field: &str) -> &'static str {
    match field {
        "name" => "Full name",
        "line1" => "Address line 1",
        "line2" => "Address line 2",
        "city" => "City",
        "postalCode" => "Postal code",
        "country" => "Country",
        "email" => "Email",
        "paymentMethod" => "Payment method",
        _ => "This",
    }
}

/// A fresh one-time key for the form (128 random bits).
fn new_key() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kassa_actors::domain::Currency;

    fn line(reason: ConflictReason, available: i64, current: Option<i64>) -> ConflictLine {
        ConflictLine {
            sku: "tee".into(),
            reason,
            requested: 5,
            available,
            cart_price: 1999,
            current_price: current,
        }
    }

    #[test]
    fn conflicts_are_said_in_words() {
        let money = |a| display_money(a, Currency::EUR);
        let say = |l: ConflictLine| conflict_message(&l, &money);
        assert_eq!(
            say(line(ConflictReason::InsufficientStock, 3, Some(1999))),
            "Only 3 left"
        );
        assert_eq!(
            say(line(ConflictReason::InsufficientStock, 0, Some(1999))),
            "No longer available"
        );
        assert_eq!(
            say(line(ConflictReason::PriceChanged, 10, Some(2499))),
            "Price changed from €19.99 to €24.99"
        );
        assert_eq!(
            say(line(ConflictReason::PriceChanged, 2, Some(2499))),
            "Price changed from €19.99 to €24.99; only 2 left"
        );
        assert_eq!(
            say(line(ConflictReason::UnknownProduct, 0, None)),
            "No longer available"
        );
    }

    #[test]
    fn api_field_names_map_to_the_form() {
        assert_eq!(form_field("shippingDetails.postalCode"), "postalCode");
        assert_eq!(form_field("paymentMethod"), "paymentMethod");
    }
}
