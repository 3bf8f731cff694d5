//! The middleware every request passes: the header-size limit, the request id, its span, the
//! per-route metrics, and CORS for browser storefronts.

use super::error::AppError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use std::time::Instant;
use tracing::Instrument;

/// Request headers above this in all (names, values and their separators) are refused with
/// 431 before routing. Heads over 128 KiB never get here: actix-http answers those 431 itself.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

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

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
