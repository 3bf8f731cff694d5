//! The catalog: admins put and delete products; anyone reads one. Stock lives in the SKU's
//! ProductActor; these handlers only parse, ask, and shape the answer.

use crate::auth::Admin;
use crate::error::{AppError, ErrorBody};
use crate::routes::fields::Fields;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use kassa_actors::domain::{self, InvalidValue, ProductInfo, Sku};
use kassa_actors::product::{DeleteProduct, GetProduct, ProductView, UpsertProduct};
use serde::Serialize;
use serde_json::Value;

/// The most units one SKU can hold.
const MAX_STOCK: i64 = 1_000_000_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductResponse {
    pub sku: String,
    pub name: String,
    /// Minor units (1999 = 19.99).
    pub price: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// On hand minus reserved.
    pub available: i64,
}

impl From<ProductView> for ProductResponse {
    fn from(v: ProductView) -> Self {
        Self {
            sku: v.sku.to_string(),
            name: v.info.name,
            price: v.info.price,
            currency: v.info.currency.code().to_string(),
            available: v.available,
        }
    }
}

/// Body of PUT /api/admin/products/{sku}.
#[derive(Debug, utoipa::ToSchema)]
pub struct ProductBody {
    /// 1..200 characters.
    pub name: String,
    /// Minor units, 0..=10^12 (1000000000000).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price: i64,
    /// ISO 4217 code such as "EUR".
    pub currency: String,
    /// Sets the on-hand units (>= 0).
    pub stock: i64,
}

/// The sku of a product being written: an impossible one is 422 naming `sku`.
pub fn parse_sku(raw: &str) -> Result<Sku, AppError> {
    Sku::parse(raw).map_err(|e| AppError::invalid("sku", e.message))
}

/// The sku of a product being read or removed: an impossible one names no product (404).
pub fn existing_sku(raw: &str) -> Result<Sku, AppError> {
    Sku::parse(raw).map_err(|_| AppError::not_found("product_not_found", "no such product"))
}

fn parse_stock(raw: i64) -> Result<i64, InvalidValue> {
    if (0..=MAX_STOCK).contains(&raw) {
        Ok(raw)
    } else {
        Err(InvalidValue::new(
            "stock",
            format!("must be between 0 and {MAX_STOCK}"),
        ))
    }
}

#[utoipa::path(
    put, path = "/api/admin/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "1..64 chars of [A-Za-z0-9._-]")),
    request_body = ProductBody,
    responses(
        (status = 200, body = ProductResponse, description = "The product as GET shows it"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_product(
    _admin: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let sku = parse_sku(&sku);
    let mut fields = Fields::of(&body)?;
    let name = fields.string("name", domain::parse_product_name);
    let price = fields.integer("price", domain::parse_price);
    let currency = fields.string("currency", domain::parse_currency);
    let stock = fields.integer("stock", parse_stock);
    let sku = match (sku, fields.finish()) {
        (Ok(sku), Ok(())) => sku,
        (Err(AppError::Validation(mut first)), Err(AppError::Validation(rest))) => {
            first.extend(rest);
            return Err(AppError::Validation(first));
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let (Some(name), Some(price), Some(currency), Some(stock)) = (name, price, currency, stock)
    else {
        return Err(AppError::invalid("body", "incomplete"));
    };
    let info = ProductInfo {
        name,
        price,
        currency,
    };
    let view = state
        .products
        .ask(&sku, UpsertProduct { info, stock })
        .await??;
    tracing::info!(%sku, stock, "product upserted");
    Ok(HttpResponse::Ok().json(ProductResponse::from(view)))
}

#[utoipa::path(
    delete, path = "/api/admin/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "1..64 chars of [A-Za-z0-9._-]; any other is not found")),
    responses(
        (status = 204, description = "The SKU left the catalog; live reservations still settle"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "product_not_found"),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_product(
    _admin: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let sku = existing_sku(&sku)?;
    if state.products.ask(&sku, DeleteProduct).await?? {
        tracing::info!(%sku, "product deleted");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(product_not_found(&sku))
    }
}

#[utoipa::path(
    get, path = "/api/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "1..64 chars of [A-Za-z0-9._-]; any other is not found")),
    responses(
        (status = 200, body = ProductResponse, description = "The product; `available` = on hand - reserved"),
        (status = 404, body = ErrorBody, description = "product_not_found"),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn get_product(
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let sku = existing_sku(&sku)?;
    let view = state
        .products
        .ask(&sku, GetProduct)
        .await??
        .ok_or_else(|| product_not_found(&sku))?;
    Ok(HttpResponse::Ok().json(ProductResponse::from(view)))
}

pub fn product_not_found(sku: &Sku) -> AppError {
    AppError::not_found("product_not_found", format!("no product with sku `{sku}`"))
}
