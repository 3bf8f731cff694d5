//! Operator endpoints: /healthz, /readyz, /metrics, /openapi.json, and unknown routes.

use kassa_testkit::app::{assert_error, json_of, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

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
    // The process's own figures and the running version, for restarts, leaks and deploys.
    use kassa_testkit::app::sample;
    assert!(
        sample(&text, "process_resident_memory_bytes") > 1e6,
        "{text}"
    );
    assert!(
        sample(&text, "process_start_time_seconds") > 1.7e9,
        "{text}"
    );
    assert!(sample(&text, "process_open_fds") > 0.0, "{text}");
    let version = format!(
        "kassa_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &version), 1.0, "{text}");
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

async fn openapi_document(app: &kassa_testkit::app::TestApp) -> Value {
    let (status, doc) = json_of(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    doc
}

/// API.md's table of operations: the success status, then every error it names, plus the
/// conventions (401 where a token is needed, 400/413/415 where a JSON body is read).
const CONTRACT: [(&str, &str, u16, &[u16]); 16] = [
    ("/healthz", "get", 200, &[]),
    ("/readyz", "get", 200, &[503]),
    ("/metrics", "get", 200, &[]),
    ("/openapi.json", "get", 200, &[]),
    (
        "/api/admin/products/{sku}",
        "put",
        200,
        &[400, 401, 403, 413, 415, 422],
    ),
    ("/api/admin/products/{sku}", "delete", 204, &[401, 403, 404]),
    ("/api/products/{sku}", "get", 200, &[404]),
    ("/api/carts", "post", 201, &[401]),
    ("/api/carts/{cartId}", "get", 200, &[401, 404]),
    (
        "/api/carts/{cartId}/items/{sku}",
        "put",
        200,
        &[400, 401, 404, 409, 413, 415, 422],
    ),
    (
        "/api/carts/{cartId}/items/{sku}",
        "delete",
        200,
        &[401, 404, 409],
    ),
    (
        "/api/orders",
        "post",
        200,
        &[400, 401, 404, 409, 413, 415, 422, 502, 503],
    ),
    ("/api/orders/{orderId}", "get", 200, &[401, 404]),
    ("/api/orders", "get", 200, &[401, 422]),
    (
        "/webhook/payment-status",
        "post",
        200,
        &[400, 401, 404, 413],
    ),
    ("/webhook/stripe", "post", 200, &[400, 401, 404, 413]),
];

#[actix_web::test]
async fn openapi_lists_the_contracts_status_codes_for_every_operation() {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await;
    for (path, method, success, errors) in CONTRACT {
        let responses = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        let successes: Vec<&str> = responses
            .keys()
            .map(String::as_str)
            .filter(|code| code.starts_with('2'))
            .collect();
        assert_eq!(
            successes,
            [success.to_string()],
            "{method} {path}: success status"
        );
        for code in errors {
            assert!(
                responses.contains_key(&code.to_string()),
                "{method} {path} does not document {code}"
            );
        }
        for (code, response) in responses {
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.trim().is_empty()),
                "{method} {path}: {code} has no description"
            );
        }
    }
    app.stop().await;
}

#[actix_web::test]
async fn openapi_describes_the_order_list_query_and_the_checkout_answer_as_served() {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await;
    let parameters = doc["paths"]["/api/orders"]["get"]["parameters"]
        .as_array()
        .expect("GET /api/orders has parameters");
    let parameter = |name: &str| {
        parameters
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` parameter in {parameters:?}"))
    };
    assert_eq!(parameters.len(), 2, "{parameters:?}");
    let limit = parameter("limit");
    assert_eq!(limit["in"], "query", "{limit}");
    assert_ne!(limit["required"], true, "{limit}");
    assert_eq!(limit["schema"]["type"], "integer", "{limit}");
    assert_eq!(limit["schema"]["minimum"], 1, "{limit}");
    assert_eq!(limit["schema"]["maximum"], 100, "{limit}");
    let cursor = parameter("cursor");
    assert_eq!(cursor["in"], "query", "{cursor}");
    assert_ne!(cursor["required"], true, "{cursor}");
    assert_eq!(cursor["schema"]["type"], "string", "{cursor}");

    let checkout = &doc["components"]["schemas"]["CheckoutResponse"];
    let required: Vec<&str> = checkout["required"]
        .as_array()
        .expect("required fields")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for field in [
        "orderId",
        "paymentUrl",
        "paymentToken",
        "status",
        "total",
        "currency",
        "expiresAt",
    ] {
        assert!(
            required.contains(&field),
            "{field} not required: {checkout}"
        );
        assert_ne!(
            checkout["properties"][field]["type"],
            json!(["string", "null"]),
            "{field} is never null: {checkout}"
        );
    }
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

/// This process's CPU time (user and system) as the kernel counts it, in seconds.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // After the command name: state is field 3 of proc(5), so utime (14) and stime (15)
    // are the 12th and 13th.
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .expect("a command name")
        .1
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("ticks"))
        .collect();
    let ticks_per_second: f64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf")
            .stdout,
    )
    .expect("utf8")
    .trim()
    .parse()
    .expect("CLK_TCK");
    fields.iter().sum::<f64>() / ticks_per_second
}

#[actix_web::test]
async fn process_cpu_seconds_are_the_real_cpu_time_not_whole_seconds() {
    let app = spawn_app().await;
    // Spend CPU until this process is well inside a second (x.3 to x.7), where a value cut
    // to whole seconds is plainly wrong.
    let burn_until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(0.3..0.7).contains(&own_cpu_seconds().fract()) {
        assert!(
            std::time::Instant::now() < burn_until,
            "CPU time never moved"
        );
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(10) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }
    let before = own_cpu_seconds();
    let scrape = app.scrape().await;
    let after = own_cpu_seconds();
    let reported = kassa_testkit::app::sample(&scrape, "process_cpu_seconds_total");
    let tick = 0.011;
    assert!(
        before - tick <= reported && reported <= after + tick,
        "process_cpu_seconds_total is {reported}; the kernel counted {before} to {after}"
    );
    assert!(
        scrape.contains("# TYPE process_cpu_seconds_total counter"),
        "{scrape}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn request_headers_over_16_kib_in_all_are_431_in_the_error_shape() {
    let app = spawn_app().await;
    let get_with = |headers: Vec<(String, String)>| {
        let mut request = app.client.get(app.url("/api/products/tee"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    // 15 headers of 1 KiB: under the limit, served (404: no such product).
    let kib = |n: usize| {
        (0..n)
            .map(|i| (format!("x-pad-{i}"), "v".repeat(1000)))
            .collect()
    };
    let response = get_with(kib(15)).await.expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // 17 of them, and one header of 100 KB (the fault run's): refused.
    for headers in [kib(17), vec![("x-big".to_string(), "v".repeat(100_000))]] {
        let response = get_with(headers).await.expect("request");
        assert_error(
            response,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
        )
        .await;
    }
    // And the server keeps serving.
    let response = get_with(Vec::new()).await.expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[actix_web::test]
async fn metrics_carry_help_text() {
    let app = spawn_app().await;
    app.get_product("x").await;
    let text = app.scrape().await;
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

/// The names listed as `required` by an object schema.
fn required(schema: &Value) -> Vec<&str> {
    schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[actix_web::test]
async fn openapi_describes_error_details_and_headers_exactly() {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await;
    let schemas = &doc["components"]["schemas"];
    let details = &schemas["ErrorBody"]["properties"]["details"];
    assert_eq!(
        details["$ref"], "#/components/schemas/ErrorDetails",
        "details is never null, only absent: {details}"
    );
    assert_eq!(required(&schemas["ErrorBody"]), ["error", "code"]);
    assert_eq!(
        schemas["ErrorDetails"]["oneOf"],
        json!([
            {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
            {"type": "array", "items": {"$ref": "#/components/schemas/ConflictLine"}},
            {"$ref": "#/components/schemas/CartLock"},
        ])
    );
    let line = &schemas["ConflictLine"];
    assert_eq!(
        required(line),
        [
            "sku",
            "reason",
            "requested",
            "available",
            "cartPrice",
            "currentPrice"
        ]
    );
    assert_eq!(
        line["properties"]["currentPrice"]["type"],
        json!(["integer", "null"])
    );
    assert_eq!(
        schemas["ConflictReason"]["enum"],
        json!(["insufficient_stock", "price_changed", "unknown_product"])
    );
    assert_eq!(required(&schemas["CartLock"]), ["orderId"]);

    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let responses = &operation["responses"];
            if responses.get("503").is_some() {
                assert!(
                    responses["503"]["headers"]["Retry-After"].is_object(),
                    "{method} {path}: 503 without Retry-After"
                );
            }
            if operation.get("security").is_some() {
                assert!(
                    responses["401"]["headers"]["WWW-Authenticate"].is_object(),
                    "{method} {path}: 401 without WWW-Authenticate"
                );
            }
        }
    }
    // A path id that cannot be valid names nothing: 404, never 422, where only reading.
    for (path, method) in [
        ("/api/products/{sku}", "get"),
        ("/api/admin/products/{sku}", "delete"),
        ("/api/carts/{cartId}", "get"),
        ("/api/carts/{cartId}/items/{sku}", "delete"),
        ("/api/orders/{orderId}", "get"),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        assert!(responses.get("422").is_none(), "{method} {path}: 422");
        assert!(responses["404"].is_object(), "{method} {path}: no 404");
    }
    let stripe = &doc["paths"]["/webhook/stripe"]["post"]["responses"];
    assert!(stripe["413"].is_object(), "/webhook/stripe: no 413");
    app.stop().await;
}

#[actix_web::test]
async fn openapi_describes_enums_required_fields_and_the_webhook_answer_as_served() {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["CheckoutBody"]["properties"]["paymentMethod"]["enum"],
        json!(["card"])
    );
    let statuses = json!([
        "pending_payment",
        "processing",
        "failed",
        "expired",
        "refund_pending",
        "refunded",
        "cancelled"
    ]);
    assert_eq!(
        schemas["OrderResponse"]["properties"]["status"]["enum"],
        statuses
    );
    assert_eq!(
        schemas["HistoryEntry"]["properties"]["status"]["enum"],
        statuses
    );
    assert_eq!(
        schemas["CheckoutResponse"]["properties"]["status"]["enum"],
        json!(["pending_payment"])
    );
    for (schema, field) in [
        ("OrderResponse", "paymentId"),
        ("OrderResponse", "shippingDetails"),
        ("OrderResponse", "history"),
        ("OrderListResponse", "nextCursor"),
        ("CartResponse", "currency"),
    ] {
        assert!(
            required(&schemas[schema]).contains(&field),
            "{schema}.{field} is always sent: {}",
            schemas[schema]
        );
    }
    for path in ["/webhook/payment-status", "/webhook/stripe"] {
        assert_eq!(
            doc["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/Received",
            "{path}"
        );
    }
    assert_eq!(required(&schemas["Received"]), ["received"]);
    assert_eq!(
        schemas["Received"]["properties"]["received"]["type"],
        "boolean"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_wrong_method_anywhere_is_405_in_the_error_shape_naming_the_allowed_ones() {
    let app = spawn_app().await;
    let cases = [
        (reqwest::Method::POST, "/healthz", "GET"),
        (reqwest::Method::DELETE, "/readyz", "GET"),
        (reqwest::Method::PUT, "/metrics", "GET"),
        (reqwest::Method::POST, "/openapi.json", "GET"),
        (reqwest::Method::POST, "/api/products/tee", "GET"),
        (reqwest::Method::PATCH, "/api/orders", "POST, GET"),
        (reqwest::Method::GET, "/sandbox/payments", "POST"),
        (reqwest::Method::DELETE, "/sandbox/payments/pay_1", "GET"),
        (
            reqwest::Method::GET,
            "/sandbox/payments/pay_1/refunds",
            "POST",
        ),
        (reqwest::Method::DELETE, "/sandbox/pay/pay_1", "GET, POST"),
    ];
    for (method, path, allow) in cases {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
    app.stop().await;
}

#[actix_web::test]
async fn head_answers_as_get_does_without_the_body() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 7).await;
    for (path, expected) in [
        ("/healthz", StatusCode::OK),
        ("/api/products/tee", StatusCode::OK),
        ("/api/products/nope", StatusCode::NOT_FOUND),
    ] {
        let get = app.client.get(app.url(path)).send().await.expect("GET");
        let head = app.client.head(app.url(path)).send().await.expect("HEAD");
        assert_eq!(get.status(), expected, "GET {path}");
        assert_eq!(head.status(), expected, "HEAD {path}");
        for header in ["content-type", "content-length"] {
            assert_eq!(
                head.headers().get(header),
                get.headers().get(header),
                "{header} of HEAD {path}"
            );
        }
        assert!(get.headers().get("content-length").is_some(), "GET {path}");
        assert!(head.bytes().await.expect("body").is_empty(), "HEAD {path}");
    }
    app.stop().await;
}
