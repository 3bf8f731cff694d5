//! Operator endpoints: liveness, readiness (the store answers), the Prometheus scrape and
//! the OpenAPI document. None of them needs a token.

use crate::http::Code;
use crate::http::error::ErrorBody;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use std::time::Duration;
use utoipa::OpenApi;

/// How long readiness waits for the store before saying no.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "The store is reachable"), (status = 503, body = ErrorBody))
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state
        .shutting_down
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return not_ready("shutting down".into(), Code::ShuttingDown);
    }
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: store ping failed");
            not_ready(format!("store unreachable: {e}"), Code::StoreUnavailable)
        }
        Err(_) => {
            tracing::warn!("not ready: store ping timed out");
            not_ready(
                "store did not answer in time".into(),
                Code::StoreUnavailable,
            )
        }
    }
}

fn not_ready(error: String, code: Code) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "5"))
        .json(ErrorBody {
            error,
            code,
            details: None,
        })
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::render_metrics(&state.metrics))
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This API's OpenAPI document")))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::routes::ApiDoc::openapi())
}
