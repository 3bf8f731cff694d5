//! Carts: a shopper creates one, reads it, sets and removes lines. A cart belongs to the
//! token's `sub`; anyone else is told it does not exist. The CartActor decides; these
//! handlers parse, ask, and shape the answer.

use crate::auth::User;
use crate::http::domain::{cart_not_found, product_not_found};
use crate::http::error::{AppError, ErrorBody};
use crate::routes::catalog::existing_sku;
use crate::routes::fields::Fields;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use kassa_actors::cart::{CartError, CreateCart, GetCart, RemoveLine, SetLine};
use kassa_actors::domain::{CartId, ProductInfo, Quantity, Sku, UserId};
use kassa_actors::product::GetProduct;
use kassa_actors::store::CartRecord;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartItemResponse {
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    /// The price the shopper saw when setting the line (minor units, at most 10^12).
    pub unit_price: i64,
    pub currency: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartResponse {
    pub cart_id: Uuid,
    pub items: Vec<CartItemResponse>,
    /// Sum of quantity x unitPrice (minor units); never above 10^15.
    pub total: i64,
    /// The cart's currency; null while it is empty.
    #[schema(required = true)]
    pub currency: Option<String>,
    /// True while an order for this cart is pending payment.
    pub locked: bool,
}

impl From<CartRecord> for CartResponse {
    fn from(cart: CartRecord) -> Self {
        Self {
            cart_id: cart.id.0,
            // Only a cart stored before the limits can overflow; it still reads (and can be
            // emptied), showing the largest total there is.
            total: cart.total().unwrap_or(i64::MAX),
            currency: cart.currency().map(|c| c.code().to_string()),
            locked: cart.locked_by.is_some(),
            items: cart
                .lines
                .into_iter()
                .map(|l| CartItemResponse {
                    sku: l.sku.to_string(),
                    name: l.name,
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    currency: l.currency.code().to_string(),
                })
                .collect(),
        }
    }
}

/// Body of PUT /api/carts/{cartId}/items/{sku}. A cart holds at most 250 lines and totals
/// at most 10^15 minor units; a change beyond either is 422 `validation_failed` (naming
/// `sku` for a 251st line, `quantity` for the total).
#[derive(Debug, utoipa::ToSchema)]
pub struct CartItemBody {
    /// 0..=10000; 0 removes the line.
    #[schema(minimum = 0, maximum = 10000)]
    pub quantity: u32,
}

/// A cart id from the path: one that is not a UUID names no cart (404).
pub fn parse_cart_id(raw: &str) -> Result<CartId, AppError> {
    CartId::parse(raw).map_err(|_| cart_not_found())
}

#[utoipa::path(
    post, path = "/api/carts", tag = "carts",
    responses(
        (status = 201, body = CartResponse, description = "The new, empty cart"),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_cart(user: User, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let id = CartId::new();
    let cart = state
        .carts
        .ask_new(&id, CreateCart { owner: user.id })
        .await??;
    Ok(HttpResponse::Created().json(CartResponse::from(cart)))
}

#[utoipa::path(
    get, path = "/api/carts/{cartId}", tag = "carts",
    params(("cartId" = Uuid, Path, description = "Not a UUID: not found")),
    responses(
        (status = 200, body = CartResponse, description = "The cart, priced"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "cart_not_found"),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_cart(
    user: User,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_cart_id(&id)?;
    let cart = state.carts.ask(&id, GetCart { user: user.id }).await??;
    Ok(HttpResponse::Ok().json(CartResponse::from(cart)))
}

#[utoipa::path(
    put, path = "/api/carts/{cartId}/items/{sku}", tag = "carts",
    params(
        ("cartId" = Uuid, Path, description = "Not a UUID: not found"),
        ("sku" = String, Path, description = "1..64 chars of [A-Za-z0-9._-]; any other is not found"),
    ),
    request_body = CartItemBody,
    responses(
        (status = 200, body = CartResponse, description = "The cart with the line set (0 removes it)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "cart_not_found or product_not_found"),
        (status = 409, body = ErrorBody, description = "cart_locked"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed (also a 251st line, or a total above 10^15) or currency_mismatch"),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_item(
    user: User,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let (id, sku) = path.into_inner();
    let id = parse_cart_id(&id)?;
    let sku = existing_sku(&sku)?;
    let mut fields = Fields::of(&body)?;
    let quantity = fields.integer("quantity", Quantity::parse);
    fields.finish()?;
    let Some(quantity) = quantity else {
        return Err(AppError::invalid("quantity", "is required"));
    };
    let msg = if quantity.is_zero() {
        state
            .carts
            .ask(&id, RemoveLine { user: user.id, sku })
            .await??
    } else {
        let product = state
            .products
            .ask(&sku, GetProduct)
            .await??
            .ok_or_else(|| product_not_found(&sku))?;
        set_line(&state, &user.id, id, sku, quantity, product.info).await?
    };
    Ok(HttpResponse::Ok().json(CartResponse::from(msg)))
}

/// Sets a line of `user`'s cart to `quantity` at the product's price `product` (the price the
/// shopper sees now); the API, the checkout page's cart update and the demo shop share it.
pub async fn set_line(
    state: &AppState,
    user: &UserId,
    cart: CartId,
    sku: Sku,
    quantity: Quantity,
    product: ProductInfo,
) -> Result<CartRecord, AppError> {
    let msg = SetLine {
        user: user.clone(),
        sku,
        quantity,
        product,
    };
    Ok(state.carts.ask(&cart, msg).await??)
}

#[utoipa::path(
    delete, path = "/api/carts/{cartId}/items/{sku}", tag = "carts",
    params(
        ("cartId" = Uuid, Path, description = "Not a UUID: not found"),
        ("sku" = String, Path, description = "Any string; one that is no valid sku was never a line"),
    ),
    responses(
        (status = 200, body = CartResponse, description = "Also when the line was not there"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "cart_not_found"),
        (status = 409, body = ErrorBody, description = "cart_locked"),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_item(
    user: User,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (id, sku) = path.into_inner();
    let id = parse_cart_id(&id)?;
    // An impossible sku is a line that was not there: the cart as it is, unless locked (as
    // removing any absent line answers).
    let cart = match Sku::parse(&sku) {
        Ok(sku) => {
            state
                .carts
                .ask(&id, RemoveLine { user: user.id, sku })
                .await??
        }
        Err(_) => {
            let cart = state.carts.ask(&id, GetCart { user: user.id }).await??;
            if let Some(order_id) = cart.locked_by {
                return Err(CartError::Locked { order_id }.into());
            }
            cart
        }
    };
    Ok(HttpResponse::Ok().json(CartResponse::from(cart)))
}
