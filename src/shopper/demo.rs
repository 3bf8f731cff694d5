//! The development demo shop at `/`: a catalog with "Add to cart", a cart and "Checkout",
//! over the same actors and checkout sessions a real storefront uses, so `cargo run` walks
//! the whole checkout sequence in a browser. Mounted only in development; it never creates
//! anything in production.

use crate::auth::User;
use crate::http::Code;
use crate::http::domain::product_not_found;
use crate::http::error::AppError;
use crate::http::method_not_allowed;
use crate::routes::carts::set_line;
use crate::routes::catalog::catalog_page;
use crate::routes::sessions::open_session;
use crate::state::AppState;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use kassa_actors::cart::{CartError, CreateCart, GetCart, RemoveLine};
use kassa_actors::domain::{CartId, Currency, ProductInfo, Quantity, Sku, UserId, display_money};
use kassa_actors::product::{GetProduct, UpsertProduct};
use kassa_actors::store::CartRecord;
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// The demo shopper's id (one per browser) and cart.
const SHOPPER_COOKIE: &str = "kassa_demo_shopper";
const CART_COOKIE: &str = "kassa_demo_cart";
/// Where the demo shopper's confirmations go (dev mail: files in the data directory).
const SHOPPER_EMAIL: &str = "demo@example.com";
/// The products created when the catalog is empty: (sku, name, price in cents, stock).
const DEMO_PRODUCTS: &[(&str, &str, i64, i64)] = &[
    ("kassa-tee", "Kassa T-shirt", 1999, 100),
    ("kassa-mug", "Kassa mug", 1250, 50),
    ("kassa-hoodie", "Kassa hoodie", 4999, 20),
    ("kassa-stickers", "Sticker pack", 499, 500),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(shop))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/demo/cart/items")
            .route(web::post().to(add_item))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/demo/cart/remove")
            .route(web::post().to(remove_item))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/demo/checkout")
            .route(web::post().to(checkout))
            .default_service(method_not_allowed("POST")),
    );
}

/// Creates the demo products when the catalog is empty (development start-up).
pub async fn seed_catalog(state: &AppState) -> Result<usize, AppError> {
    let existing = crate::http::store_call(state.store.list_products(None, 1)).await?;
    if !existing.is_empty() {
        return Ok(0);
    }
    for (sku, name, price, stock) in DEMO_PRODUCTS {
        let sku = Sku::parse(sku).map_err(|e| AppError::invalid("sku", e.message))?;
        let info = ProductInfo {
            name: (*name).to_string(),
            price: *price,
            currency: Currency::EUR,
        };
        state
            .products
            .ask(
                &sku,
                UpsertProduct {
                    info,
                    stock: *stock,
                },
            )
            .await??;
    }
    Ok(DEMO_PRODUCTS.len())
}

#[derive(Serialize)]
struct ProductView {
    sku: String,
    name: String,
    price: String,
    available: i64,
}

#[derive(Serialize)]
struct LineView {
    sku: String,
    name: String,
    quantity: u32,
    line_total: String,
}

#[derive(Serialize)]
struct ShopView {
    products: Vec<ProductView>,
    lines: Vec<LineView>,
    total: String,
    locked: bool,
    error: Option<&'static str>,
}

#[derive(Debug, Deserialize)]
pub struct ShopQuery {
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SkuForm {
    sku: String,
}

/// GET /: the catalog and the shopper's cart.
pub async fn shop(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ShopQuery>,
) -> HttpResponse {
    let (products, _) = match catalog_page(&state, None, 100).await {
        Ok(page) => page,
        Err(_) => return state.pages.unavailable(),
    };
    let cart = match (shopper(&req), cart_id(&req)) {
        (Some(user), Some(cart)) => state
            .carts
            .ask(&cart, GetCart { user: user.id })
            .await
            .ok()
            .and_then(Result::ok),
        _ => None,
    };
    let currency = cart.as_ref().and_then(CartRecord::currency);
    let money = |amount: i64| currency.map_or_else(String::new, |c| display_money(amount, c));
    let view = ShopView {
        products: products
            .into_iter()
            .map(|p| ProductView {
                sku: p.sku.to_string(),
                price: display_money(p.info.price, p.info.currency),
                name: p.info.name,
                available: p.available,
            })
            .collect(),
        lines: cart.as_ref().map_or_else(Vec::new, |c| {
            c.lines
                .iter()
                .map(|l| LineView {
                    sku: l.sku.to_string(),
                    name: l.name.clone(),
                    quantity: l.quantity,
                    line_total: money(l.total().unwrap_or(i64::MAX)),
                })
                .collect()
        }),
        total: money(cart.as_ref().and_then(CartRecord::total).unwrap_or(0)),
        locked: cart.as_ref().is_some_and(|c| c.locked_by.is_some()),
        error: match query.error.as_deref() {
            Some("locked") => Some(
                "Your cart is waiting for the payment of an order; finish or cancel that payment first.",
            ),
            Some("currency") => Some("That product is priced in another currency than your cart."),
            Some("unavailable") => Some("That did not work just now. Please try again."),
            _ => None,
        },
    };
    state.pages.render(StatusCode::OK, "shop.html", view)
}

/// POST /demo/cart/items: one more of the product.
pub async fn add_item(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<SkuForm>,
) -> HttpResponse {
    let (user, cart, cookies) = match shopper_and_cart(&state, &req).await {
        Ok(found) => found,
        Err(e) => return back_to_shop(Some(&e), Vec::new()),
    };
    let added = async {
        let sku = Sku::parse(&form.sku).map_err(|e| AppError::invalid("sku", e.message))?;
        let product = state
            .products
            .ask(&sku, GetProduct)
            .await??
            .ok_or_else(|| product_not_found(&sku))?;
        let current = state
            .carts
            .ask(
                &cart,
                GetCart {
                    user: user.id.clone(),
                },
            )
            .await??;
        let held = current
            .lines
            .iter()
            .find(|l| l.sku == sku)
            .map_or(0, |l| l.quantity);
        let quantity = Quantity::parse(i64::from(held) + 1)
            .map_err(|e| AppError::invalid("quantity", e.message))?;
        set_line(&state, &user.id, cart, sku, quantity, product.info).await
    }
    .await;
    back_to_shop(added.err().as_ref(), cookies)
}

/// POST /demo/cart/remove: the line goes.
pub async fn remove_item(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<SkuForm>,
) -> HttpResponse {
    let (Some(user), Some(cart)) = (shopper(&req), cart_id(&req)) else {
        return back_to_shop(None, Vec::new());
    };
    let removed = async {
        let sku = Sku::parse(&form.sku).map_err(|e| AppError::invalid("sku", e.message))?;
        Ok::<_, AppError>(
            state
                .carts
                .ask(&cart, RemoveLine { user: user.id, sku })
                .await??,
        )
    }
    .await;
    back_to_shop(removed.err().as_ref(), Vec::new())
}

/// POST /demo/checkout: a checkout session for the cart, as a storefront's backend opens one,
/// then its hosted checkout page.
pub async fn checkout(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (Some(user), Some(cart)) = (shopper(&req), cart_id(&req)) else {
        return back_to_shop(None, Vec::new());
    };
    let shop_url = state.links.shop_page();
    match open_session(&state, &user, cart, Some(shop_url.clone()), Some(shop_url)).await {
        Ok(session) => crate::shopper::see_other(&state.links.checkout_page(&session.id)),
        Err(e) => back_to_shop(Some(&e), Vec::new()),
    }
}

/// The demo shopper of this browser (a random user id in a cookie).
fn shopper(req: &HttpRequest) -> Option<User> {
    let id = req.cookie(SHOPPER_COOKIE)?.value().to_string();
    let plausible = id.starts_with("demo-") && id.len() <= 64;
    plausible.then(|| User {
        id: UserId(id),
        email: Some(SHOPPER_EMAIL.into()),
        admin: false,
    })
}

fn cart_id(req: &HttpRequest) -> Option<CartId> {
    CartId::parse(req.cookie(CART_COOKIE)?.value()).ok()
}

/// The shopper and a cart of theirs, created (with the cookies to set) when missing.
async fn shopper_and_cart(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(User, CartId, Vec<Cookie<'static>>), AppError> {
    let mut cookies = Vec::new();
    let user = match shopper(req) {
        Some(user) => user,
        None => {
            let bytes: [u8; 12] = rand::rng().random();
            let id = format!(
                "demo-{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            );
            cookies.push(cookie(SHOPPER_COOKIE, id.clone()));
            User {
                id: UserId(id),
                email: Some(SHOPPER_EMAIL.into()),
                admin: false,
            }
        }
    };
    if let Some(cart) = cart_id(req) {
        let get = GetCart {
            user: user.id.clone(),
        };
        match state.carts.ask(&cart, get).await? {
            Ok(_) => return Ok((user, cart, cookies)),
            Err(CartError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let cart = CartId::new();
    let create = CreateCart {
        owner: user.id.clone(),
    };
    state.carts.ask_new(&cart, create).await??;
    cookies.push(cookie(CART_COOKIE, cart.to_string()));
    Ok((user, cart, cookies))
}

fn cookie(name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::days(30))
        .finish()
}

/// 303 to the shop, saying what went wrong if something did.
fn back_to_shop(error: Option<&AppError>, cookies: Vec<Cookie<'static>>) -> HttpResponse {
    let location = match error {
        None => "/",
        Some(AppError::Conflict { .. }) => "/?error=locked",
        Some(AppError::Unprocessable {
            code: Code::CurrencyMismatch,
            ..
        }) => "/?error=currency",
        Some(_) => "/?error=unavailable",
    };
    let mut response = HttpResponse::SeeOther();
    response.insert_header((actix_web::http::header::LOCATION, location));
    for cookie in cookies {
        response.cookie(cookie);
    }
    response.finish()
}
