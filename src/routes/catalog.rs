//! The catalog: admins put and delete products; anyone reads one. Stock lives in the SKU's
//! ProductActor; these handlers only parse, ask, and shape the answer.

use crate::auth::Admin;
use crate::http::Code;
use crate::http::domain::product_not_found;
use crate::http::error::{AppError, ErrorBody};
use crate::http::store_call;
use crate::routes::fields::{Fields, PageQuery};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use base64::Engine as _;
use futures_util::future::join_all;
use kassa_actors::domain::{self, InvalidValue, ProductInfo, Sku};
use kassa_actors::product::{
    DeleteProduct, GetProduct, ProductView, UpdateProduct, UpsertProduct, view_of,
};
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
    Sku::parse(raw).map_err(|_| AppError::not_found(Code::ProductNotFound, "no such product"))
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
    let view = product_view(&state, &sku)
        .await?
        .ok_or_else(|| product_not_found(&sku))?;
    Ok(HttpResponse::Ok().json(ProductResponse::from(view)))
}

/// A product as a shopper reads it. This process's actor knows every write made through
/// it; on a store other replicas write too, its copy may predate theirs (a reservation made
/// or released elsewhere), so the stored row is read instead: one partition read, and every
/// replica answers the same.
async fn product_view(state: &AppState, sku: &Sku) -> Result<Option<ProductView>, AppError> {
    if state.store.is_shared() {
        let snapshot = store_call(state.store.load_product(sku)).await?;
        return Ok(view_of(sku, snapshot));
    }
    Ok(state.products.ask(sku, GetProduct).await??)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductListResponse {
    pub products: Vec<ProductResponse>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/api/products", tag = "catalog",
    params(PageQuery),
    responses(
        (status = 200, body = ProductListResponse, description = "The catalog in sku order; `nextCursor` is null on the last page"),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn list_products(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, AppError> {
    let (limit, after) = PageQuery::parse(&req, decode_cursor)?;
    let (products, next) = catalog_page(&state, after.as_ref(), limit).await?;
    Ok(HttpResponse::Ok().json(ProductListResponse {
        products: products.into_iter().map(ProductResponse::from).collect(),
        next_cursor: next.as_ref().map(encode_cursor),
    }))
}

/// Up to `limit` products of the catalog after `after`, as their actors see them now, and
/// the sku to continue after when there are more.
pub async fn catalog_page(
    state: &AppState,
    after: Option<&Sku>,
    limit: usize,
) -> Result<(Vec<ProductView>, Option<Sku>), AppError> {
    let mut skus = store_call(state.store.list_products(after, limit + 1)).await?;
    let more = skus.len() > limit;
    skus.truncate(limit);
    let views = join_all(skus.iter().map(|sku| product_view(state, sku))).await;
    let mut products = Vec::with_capacity(views.len());
    for view in views {
        // A product deleted since the listing is simply left out.
        if let Some(view) = view? {
            products.push(view);
        }
    }
    let next = more.then(|| skus.last().cloned()).flatten();
    Ok((products, next))
}

fn encode_cursor(sku: &Sku) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sku.as_str())
}

fn decode_cursor(raw: &str) -> Option<Sku> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    Sku::parse(std::str::from_utf8(&bytes).ok()?).ok()
}

/// Body of PATCH /api/admin/products/{sku}: any of the fields.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // documents the body for OpenAPI; the handler reads it field by field
pub struct ProductPatchBody {
    /// 1..200 characters.
    pub name: Option<String>,
    /// Minor units, 0..=10^12.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price: Option<i64>,
    /// ISO 4217 code such as "EUR".
    pub currency: Option<String>,
    /// Sets the on-hand units (>= 0); absent: the stock stays as it is.
    pub stock: Option<i64>,
}

#[utoipa::path(
    patch, path = "/api/admin/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "1..64 chars of [A-Za-z0-9._-]; any other is not found")),
    request_body = ProductPatchBody,
    responses(
        (status = 200, body = ProductResponse, description = "The product with only the given fields changed"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "product_not_found"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch_product(
    _admin: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let sku = existing_sku(&sku)?;
    let present = |name: &str| body.get(name).is_some_and(|v| !v.is_null());
    let mut fields = Fields::of(&body)?;
    let update = UpdateProduct {
        name: if present("name") {
            fields.string("name", domain::parse_product_name)
        } else {
            None
        },
        price: if present("price") {
            fields.integer("price", domain::parse_price)
        } else {
            None
        },
        currency: if present("currency") {
            fields.string("currency", domain::parse_currency)
        } else {
            None
        },
        stock: if present("stock") {
            fields.integer("stock", parse_stock)
        } else {
            None
        },
    };
    fields.finish()?;
    let view = state
        .products
        .ask(&sku, update)
        .await??
        .ok_or_else(|| product_not_found(&sku))?;
    tracing::info!(%sku, "product updated");
    Ok(HttpResponse::Ok().json(ProductResponse::from(view)))
}
