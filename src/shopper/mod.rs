//! The shopper's pages (API.md, "Shopper pages"): the hosted checkout, the order page and, in
//! development, a demo shop. Server-rendered from templates and working without JavaScript;
//! they go through the same actors and the same checkout path as the JSON routes, and read
//! no store records but checkout sessions.

pub mod checkout;
pub mod demo;
pub mod links;
pub mod order;

use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, web};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// Inline styles and scripts are never needed: only our own stylesheet and script load. No
/// `form-action`: the checkout form's answer redirects to the payment gateway's origin.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'";

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/pages/base.html")),
    (
        "_macros.html",
        include_str!("../../templates/pages/_macros.html"),
    ),
    (
        "checkout.html",
        include_str!("../../templates/pages/checkout.html"),
    ),
    (
        "order.html",
        include_str!("../../templates/pages/order.html"),
    ),
    (
        "not_found.html",
        include_str!("../../templates/pages/not_found.html"),
    ),
    ("shop.html", include_str!("../../templates/pages/shop.html")),
];
const STYLESHEET: &str = include_str!("../../templates/pages/kassa.css");
const SCRIPT: &str = include_str!("../../templates/pages/kassa.js");

/// The page templates, compiled once at start-up (a broken template stops start-up).
pub struct Pages {
    env: Environment<'static>,
    shop_name: String,
    /// Where "Back to the shop" goes: the demo shop in development, else the storefront.
    home_url: Option<String>,
}

/// What every page's layout shows.
#[derive(Serialize)]
struct Layout<'a, T: Serialize> {
    shop_name: &'a str,
    home_url: Option<&'a str>,
    #[serde(flatten)]
    page: T,
}

impl Pages {
    pub fn new(shop_name: &str, home_url: Option<String>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        // Every page template must render its layout: checked now, not on a shopper's visit.
        for (name, _) in TEMPLATES {
            env.get_template(name)?;
        }
        Ok(Self {
            env,
            shop_name: shop_name.to_string(),
            home_url,
        })
    }

    pub fn home_url(&self) -> Option<&str> {
        self.home_url.as_deref()
    }

    /// The page `name` rendered with `page`, as an HTML response with `status`.
    pub fn render(&self, status: StatusCode, name: &str, page: impl Serialize) -> HttpResponse {
        let view = Layout {
            shop_name: &self.shop_name,
            home_url: self.home_url.as_deref(),
            page,
        };
        let rendered = self
            .env
            .get_template(name)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&view))));
        match rendered {
            Ok(body) => html(status, body),
            Err(e) => {
                tracing::error!(template = name, error = %e, "page failed to render");
                html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!DOCTYPE html><html lang=\"en\"><title>Error</title><main><h1>Something went wrong</h1><p>Please try again in a moment.</p></main></html>".into(),
                )
            }
        }
    }

    /// The HTML 404 page.
    pub fn not_found(&self, heading: &str, message: &str) -> HttpResponse {
        self.render(
            StatusCode::NOT_FOUND,
            "not_found.html",
            Message { heading, message },
        )
    }

    /// A page for a request that could not be served just now (503, with Retry-After).
    pub fn unavailable(&self) -> HttpResponse {
        let mut response = self.render(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_found.html",
            Message {
                heading: "Please try again in a moment",
                message: "We could not complete this just now. Nothing was charged.",
            },
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        response
    }
}

/// A line of a cart or an order as the pages show it, money already formatted.
#[derive(Serialize)]
struct LineView {
    name: String,
    quantity: u32,
    unit_price: String,
    line_total: String,
}

impl LineView {
    /// `line_total`: `None` where it overflowed (only data stored before the limits could).
    fn new(
        name: &str,
        quantity: u32,
        unit_price: i64,
        line_total: Option<i64>,
        money: &impl Fn(i64) -> String,
    ) -> Self {
        Self {
            name: name.to_string(),
            quantity,
            unit_price: money(unit_price),
            line_total: money(line_total.unwrap_or(i64::MAX)),
        }
    }
}

#[derive(Serialize)]
struct Message<'a> {
    heading: &'a str,
    message: &'a str,
}

/// An HTML answer with the headers every shopper page carries: never cached (it shows one
/// shopper's order), no referrer (its URL holds the session id or the order's token), a
/// strict content security policy.
pub fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(mime::TEXT_HTML_UTF_8)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// A 303 to `location` (after a form post).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

async fn stylesheet() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// Mounts the pages; the demo shop only when `demo` (development).
pub fn configure(cfg: &mut web::ServiceConfig, demo: bool) {
    use crate::http::method_not_allowed;
    cfg.app_data(
        web::FormConfig::default()
            .limit(crate::http::MAX_BODY_BYTES)
            .error_handler(|err, req| {
                let pages = req
                    .app_data::<web::Data<AppState>>()
                    .map(|s| s.pages.clone());
                let response = match pages {
                    Some(pages) => pages.render(
                        StatusCode::BAD_REQUEST,
                        "not_found.html",
                        Message {
                            heading: "That form could not be read",
                            message: "Please go back, reload the page and try again.",
                        },
                    ),
                    None => HttpResponse::BadRequest().finish(),
                };
                actix_web::error::InternalError::from_response(err, response).into()
            }),
    )
    .service(
        web::resource("/assets/kassa.css")
            .route(web::get().to(stylesheet))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/assets/kassa.js")
            .route(web::get().to(script))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/checkout/{sessionId}")
            .route(web::get().to(checkout::show))
            .route(web::post().to(checkout::submit))
            .default_service(method_not_allowed("GET, POST")),
    )
    .service(
        web::resource("/orders/{orderId}/cancel")
            .route(web::get().to(order::cancel))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/orders/{orderId}")
            .route(web::get().to(order::show))
            .default_service(method_not_allowed("GET")),
    );
    if demo {
        demo::configure(cfg);
    }
}
