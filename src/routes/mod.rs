//! The routes of API.md and the OpenAPI document generated from their handlers. The edge they
//! share with the pages and the sandbox (error shape, body policy, middleware, timeouts) is
//! `crate::http`. Handlers live in the submodules and reach the store through actors, never
//! directly, but for the idempotency records and the order list, and those only through
//! `http::store_call`.

pub mod carts;
pub mod catalog;
pub mod fields;
pub mod health;
pub mod orders;
pub mod sessions;
pub mod stripe_webhook;
pub mod webhook;

use crate::http::openapi::{BearerAuth, ErrorHeaders};
use crate::http::{json_config, method_not_allowed, path_config};
use actix_web::web;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Kassa", description = "Checkout backend: catalog, carts, orders, payment webhooks."),
    paths(
        health::healthz, health::readyz, health::metrics, health::openapi,
        catalog::put_product, catalog::delete_product, catalog::get_product,
        catalog::list_products, catalog::patch_product,
        carts::create_cart, carts::get_cart, carts::put_item, carts::delete_item,
        orders::checkout, orders::get_order, orders::list_orders, orders::cancel_order,
        sessions::create_checkout_session,
        webhook::payment_status, stripe_webhook::stripe_event,
    ),
    components(schemas(crate::http::ErrorBody, crate::http::FieldError)),
    modifiers(&BearerAuth, &ErrorHeaders)
)]
pub struct ApiDoc;

/// Mounts every route of the contract.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(path_config())
        .service(
            web::resource("/healthz")
                .route(web::get().to(health::healthz))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/readyz")
                .route(web::get().to(health::readyz))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/metrics")
                .route(web::get().to(health::metrics))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/openapi.json")
                .route(web::get().to(health::openapi))
                .default_service(method_not_allowed("GET")),
        )
        // Static paths first, then the busiest patterns: the router tries resources in this
        // order, and every pattern with a `{segment}` it passes costs a regex match.
        .service(
            web::resource("/api/orders")
                .route(web::post().to(orders::checkout))
                .route(web::get().to(orders::list_orders))
                .default_service(method_not_allowed("POST, GET")),
        )
        .service(
            web::resource("/api/checkout-sessions")
                .route(web::post().to(sessions::create_checkout_session))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/api/products")
                .route(web::get().to(catalog::list_products))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/api/carts")
                .route(web::post().to(carts::create_cart))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/webhook/payment-status")
                .route(web::post().to(webhook::payment_status))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/webhook/stripe")
                .route(web::post().to(stripe_webhook::stripe_event))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/api/carts/{cartId}/items/{sku}")
                .route(web::put().to(carts::put_item))
                .route(web::delete().to(carts::delete_item))
                .default_service(method_not_allowed("PUT, DELETE")),
        )
        .service(
            web::resource("/api/products/{sku}")
                .route(web::get().to(catalog::get_product))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/api/orders/{orderId}/cancel")
                .route(web::post().to(orders::cancel_order))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/api/orders/{orderId}")
                .route(web::get().to(orders::get_order))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/api/carts/{cartId}")
                .route(web::get().to(carts::get_cart))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/api/admin/products/{sku}")
                .route(web::put().to(catalog::put_product))
                .route(web::patch().to(catalog::patch_product))
                .route(web::delete().to(catalog::delete_product))
                .default_service(method_not_allowed("PUT, PATCH, DELETE")),
        );
}
