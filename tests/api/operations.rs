//! Operator endpoints: /healthz, /readyz, /metrics, /openapi.json, and unknown routes.

use crate::helpers::{assert_error, json_of, spawn_app};
use reqwest::StatusCode;

#[actix_web::test]
async fn healthz_and_readyz_answer_200_with_the_store_open() {
    let app = spawn_app().await;
    let (status, _) = json_of(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = json_of(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
    app.stop().await;
}

#[actix_web::test]
async fn metrics_are_prometheus_text_counting_requests_by_route() {
    let app = spawn_app().await;
    app.get_product("not-there").await;
    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("body");
    assert!(
        text.lines()
            .any(|l| l.starts_with("kassa_http_requests_total{")
                && l.contains("route=\"/api/products/{sku}\"")
                && l.contains("status=\"4xx\"")),
        "no request counter for the product route in:\n{text}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn openapi_document_describes_every_route_of_the_contract() {
    let app = spawn_app().await;
    let (status, doc) = json_of(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let expected = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/api/admin/products/{sku}", "put"),
        ("/api/admin/products/{sku}", "delete"),
        ("/api/products/{sku}", "get"),
        ("/api/carts", "post"),
        ("/api/carts/{cartId}", "get"),
        ("/api/carts/{cartId}/items/{sku}", "put"),
        ("/api/carts/{cartId}/items/{sku}", "delete"),
        ("/api/orders", "post"),
        ("/api/orders", "get"),
        ("/api/orders/{orderId}", "get"),
        ("/webhook/payment-status", "post"),
        ("/webhook/stripe", "post"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    app.stop().await;
}

#[actix_web::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/nothing-here"))
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .client
        .post(app.url("/api/products/tee"))
        .send()
        .await
        .expect("request");
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn a_request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "trace-me-42")
        .send()
        .await
        .expect("request");
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-me-42")
    );
    let response = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("request");
    let generated = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a generated request id");
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    app.stop().await;
}

#[actix_web::test]
async fn metrics_carry_help_text() {
    let app = spawn_app().await;
    app.get_product("x").await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains("# HELP kassa_http_requests_total"),
        "no HELP line in:\n{text}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn readyz_says_not_ready_once_shutdown_begins() {
    let app = spawn_app().await;
    app.state()
        .shutting_down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let response = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "shutting_down").await;
    let (status, _) = json_of(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "still alive while draining");
    app.stop().await;
}
