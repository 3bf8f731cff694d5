//! The HTTP surface of API.md: routing, the JSON body policy (64 KiB, application/json), the
//! OpenAPI document generated from the handlers, per-route metrics and admission (a bound on
//! requests in flight, refused at once beyond it). Handlers live in the
//! submodules and reach the store through actors, never directly, but for the idempotency
//! records and the order list, and those only through `store_call`.

pub mod carts;
pub mod catalog;
pub mod fields;
pub mod health;
pub mod orders;
pub mod sessions;
pub mod stripe_webhook;
pub mod webhook;

use crate::error::{AppError, json_error};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tracing::Instrument;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Request headers above this in all (names, values and their separators) are refused with
/// 431 before routing. Heads over 128 KiB never get here: actix-http answers those 431 itself.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

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
    components(schemas(crate::error::ErrorBody, crate::error::FieldError)),
    modifiers(&BearerAuth, &ErrorHeaders)
)]
pub struct ApiDoc;

/// The headers that come with some errors: `Retry-After` on every 503, `WWW-Authenticate`
/// on the 401 of a route that takes a bearer token (not on a webhook's `invalid_signature`);
/// and what an error status means where the route does not describe it itself.
struct ErrorHeaders;

impl Modify for ErrorHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{Header, RefOr};
        let retry_after: RefOr<Header> = Header::builder()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            ))
            .description(Some("Seconds to wait before retrying"))
            .build()
            .into();
        let www_authenticate: RefOr<Header> = Header::builder()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some(
                "`Bearer` when the token is missing, `Bearer error=\"invalid_token\"` when it is not valid",
            ))
            .build()
            .into();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let bearer = operation.security.is_some();
                for (status, response) in &mut operation.responses.responses {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if response.description.is_empty() {
                        response.description = common_description(status, bearer).into();
                    }
                    match status.as_str() {
                        "503" => {
                            response
                                .headers
                                .insert("Retry-After".into(), retry_after.clone());
                        }
                        "401" if bearer => {
                            response
                                .headers
                                .insert("WWW-Authenticate".into(), www_authenticate.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// What an error status means wherever a route does not say more.
fn common_description(status: &str, bearer: bool) -> &'static str {
    match status {
        "400" => "invalid_json: the body is not JSON",
        "401" if bearer => {
            "unauthorized: no bearer token; invalid_token: expired, wrongly signed or of another algorithm"
        }
        "401" => "invalid_signature",
        "403" => "forbidden: the token has no `admin` role",
        "413" => "payload_too_large: the body is over 64 KiB",
        "415" => "unsupported_media_type: the body is not `application/json`",
        "422" => "validation_failed: `details` names the fields",
        "502" => {
            "gateway_unavailable: the payment gateway failed; the order failed, its stock is released and the cart unlocked"
        }
        "503" => "overloaded or store_unavailable: retry after `Retry-After` seconds",
        _ => "",
    }
}

/// The whole interface to a storefront's identity provider: the claims Kassa reads.
const JWT_CLAIMS: &str = "A JWT issued by the storefront's identity provider, signed HS256 with `KASSA_JWT_SECRET` (raw UTF-8 bytes) or RS256/ES256 with the key in `KASSA_JWT_PUBLIC_KEY_FILE`. Claims: `sub` (required): the user id, owner of carts and orders; `exp` (required): expiry, unix seconds; `email` (optional): where confirmations go (else `shippingDetails.email`), and the checkout page's prefilled email; `roles` (optional array): `admin` unlocks the admin routes; `iss` / `aud`: required to equal `KASSA_JWT_ISSUER` / `KASSA_JWT_AUDIENCE` when those are set.";

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description = Some(JWT_CLAIMS.into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Mounts every route of the contract.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .content_type_required(true)
            .content_type(|mime| mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON))
            .error_handler(|err, _| json_error(err).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| AppError::invalid("path", err.to_string()).into()),
    )
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

/// CORS for browser storefronts on `origins` (`KASSA_CORS_ORIGINS`): on `/api/*` only, the
/// origin echoed for those origins, preflights answered, `Authorization` and
/// `Idempotency-Key` allowed. A request from any other origin is served without CORS headers
/// (the browser then keeps the answer from the page), never refused outright.
pub fn cors(origins: &[String]) -> actix_cors::Cors {
    let origins: Vec<String> = origins.to_vec();
    actix_cors::Cors::default()
        .allowed_origin_fn(move |origin, head| {
            head.uri.path().starts_with("/api/")
                && origin
                    .to_str()
                    .is_ok_and(|origin| origins.iter().any(|allowed| allowed == origin))
        })
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static(REQUEST_ID),
            actix_web::http::header::RETRY_AFTER,
        ])
        .block_on_origin_mismatch(false)
        .max_age(3600)
}

/// A handler's own store call (idempotency records, order listing), bounded like an actor
/// ask: a store that fails or does not answer in time is a 503 with `Retry-After`, never a
/// 500 or a hang.
pub async fn store_call<T>(
    call: impl Future<Output = kassa_actors::store::StoreResult<T>>,
) -> Result<T, AppError> {
    match tokio::time::timeout(crate::startup::ASK_TIMEOUT, call).await {
        Ok(answer) => answer.map_err(AppError::from),
        Err(_) => {
            tracing::warn!(
                timeout = ?crate::startup::ASK_TIMEOUT,
                "the store did not answer in time"
            );
            Err(AppError::StoreUnavailable)
        }
    }
}

/// Unknown paths get the contract's error shape too.
pub async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::not_found("not_found", "no such route"))
}

/// A resource's default service: any other method is 405 in the contract's error shape,
/// with `Allow` naming the methods the resource takes (`"GET"`, `"PUT, DELETE"`).
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move || async move {
        HttpResponse::MethodNotAllowed()
            .insert_header((actix_web::http::header::ALLOW, allow))
            .json(crate::error::ErrorBody {
                error: "this method is not allowed on this route".into(),
                code: "method_not_allowed".into(),
                details: None,
            })
    })
}

/// Refuses a request whose headers are over `MAX_HEADER_BYTES` in all (431, in the error
/// shape), counting each as its `name: value` line with the CRLF.
pub async fn limit_header_size<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        let response = actix_web::ResponseError::error_response(&AppError::HeadersTooLarge);
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Every request: a request id (from `X-Request-Id` or a new one, echoed in the response), a
/// tracing span carrying it with the method and path, and the request counted and timed by
/// method, route template and status class (never the raw path: label cardinality stays
/// bounded).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string);
    let method = req.method().to_string();
    // HEAD is GET without the body (RFC 9110 9.3.2): routed as GET, and the HTTP layer, which
    // still knows the request was HEAD, sends the headers only.
    let mut req = req;
    if req.method() == actix_web::http::Method::HEAD {
        req.head_mut().method = actix_web::http::Method::GET;
    }
    let span = tracing::info_span!("request", request_id = %request_id, %method, path = req.path());
    let mut response = next.call(req).instrument(span.clone()).await?;
    // Asked after routing, the template comes from the matched resource; asked before, it
    // would match every pattern again.
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!("kassa_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status_class(status))
        .increment(1);
    metrics::histogram!("kassa_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    tracing::debug!(parent: &span, status, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "request done");
    Ok(response)
}

const REQUEST_ID: &str = "x-request-id";

/// The bound on requests in flight (`KASSA_MAX_IN_FLIGHT`), shared by every worker.
#[derive(Debug)]
pub struct Admission {
    in_flight: AtomicUsize,
    bound: usize,
}

impl Admission {
    pub fn new(bound: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            bound,
        }
    }

    /// A place among the requests in flight, held until dropped; none when all are taken.
    fn enter(admission: web::Data<Admission>) -> Option<Admitted> {
        admission
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < admission.bound).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted(admission))
    }
}

/// One request's place in flight, given back when the response is ready.
struct Admitted(web::Data<Admission>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Probes and scrapes pass whatever the load: a busy Kassa is alive, and says so.
fn never_refused(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Admission: with `KASSA_MAX_IN_FLIGHT` requests in flight, the next is answered at once with
/// 503 `overloaded` and `Retry-After: 1` (counted in `kassa_http_shed_total`, not logged one by
/// one), never queued; below the bound requests pass untouched. Needs `web::Data<Admission>`
/// in the app (without it every request passes).
pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let admission = req
        .app_data::<web::Data<Admission>>()
        .filter(|_| !never_refused(req.path()))
        .cloned();
    let _admitted = match admission.map(Admission::enter) {
        Some(None) => {
            metrics::counter!("kassa_http_shed_total").increment(1);
            let refusal = HttpResponse::ServiceUnavailable()
                .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
                .json(crate::error::ErrorBody {
                    error: AppError::Overloaded.to_string(),
                    code: "overloaded".into(),
                    details: None,
                });
            return Ok(req.into_response(refusal).map_into_right_body());
        }
        Some(admitted) => admitted,
        None => None,
    };
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
