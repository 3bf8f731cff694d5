//! The catalog routes: admins put and delete products, anyone reads them; every bad input
//! gets its 4xx and the contract's error shape.

use kassa_testkit::app::{assert_error, json_of, spawn_app};
use reqwest::StatusCode;
use serde_json::json;

#[actix_web::test]
async fn an_admin_puts_a_product_and_anyone_reads_it_back() {
    let app = spawn_app().await;
    let (status, body) = json_of(app.put_product("tee-m", 1999, "EUR", 25).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"sku": "tee-m", "name": "Product tee-m", "price": 1999, "currency": "EUR", "available": 25})
    );
    let (status, body) = json_of(app.get_product("tee-m").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["available"], 25);

    let (_, body) = json_of(app.put_product("tee-m", 2499, "EUR", 3).await).await;
    assert_eq!(body["price"], 2499);
    assert_eq!(body["available"], 3);
    app.stop().await;
}

#[actix_web::test]
async fn an_unknown_product_is_404() {
    let app = spawn_app().await;
    assert_error(
        app.get_product("nope").await,
        StatusCode::NOT_FOUND,
        "product_not_found",
    )
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn a_deleted_product_leaves_the_catalog_and_deleting_it_again_is_404() {
    let app = spawn_app().await;
    app.put_product("mug", 900, "USD", 5).await;
    let delete = || async {
        app.client
            .delete(app.url("/api/admin/products/mug"))
            .bearer_auth(app.admin())
            .send()
            .await
            .expect("request")
    };
    assert_eq!(delete().await.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.get_product("mug").await,
        StatusCode::NOT_FOUND,
        "product_not_found",
    )
    .await;
    assert_error(delete().await, StatusCode::NOT_FOUND, "product_not_found").await;
    let (status, body) = json_of(app.put_product("mug", 950, "USD", 2).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a deleted sku can come back: {body}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn invalid_product_values_are_422_naming_every_bad_field() {
    let app = spawn_app().await;
    let put = |body: serde_json::Value| {
        app.client
            .put(app.url("/api/admin/products/tee"))
            .bearer_auth(app.admin())
            .json(&body)
            .send()
    };
    let response = put(json!({"name": "", "price": -1, "currency": "EURO", "stock": -5}))
        .await
        .expect("request");
    let body = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = body["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    assert_eq!(fields, ["name", "price", "currency", "stock"]);

    let cases = [
        json!({"price": 100, "currency": "EUR", "stock": 1}),
        json!({"name": "x".repeat(201), "price": 100, "currency": "EUR", "stock": 1}),
        json!({"name": "Tee", "price": 19.99, "currency": "EUR", "stock": 1}),
        json!({"name": "Tee", "price": "1999", "currency": "EUR", "stock": 1}),
        json!({"name": "Tee", "price": 100, "currency": "XYZ", "stock": 1}),
        json!({"name": "Tee", "price": 100, "currency": "EUR", "stock": 1.5}),
        json!(["not", "an", "object"]),
    ];
    for case in cases {
        let response = put(case.clone()).await.expect("request");
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}"
        );
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_price_above_ten_to_the_twelve_minor_units_is_422_naming_price() {
    let app = spawn_app().await;
    let (status, body) = json_of(app.put_product("gold", 1_000_000_000_000, "EUR", 1).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "10^12 is the limit, inclusive: {body}"
    );
    assert_eq!(body["price"], 1_000_000_000_000_i64);
    for price in [1_000_000_000_001, i64::MAX] {
        let body = assert_error(
            app.put_product("gold", price, "EUR", 1).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(body["details"][0]["field"], "price", "{price}: {body}");
    }
    let (_, body) = json_of(app.get_product("gold").await).await;
    assert_eq!(body["price"], 1_000_000_000_000_i64, "nothing changed");
    app.stop().await;
}

#[actix_web::test]
async fn an_impossible_sku_is_not_found_when_read_or_deleted_and_422_when_put() {
    let app = spawn_app().await;
    for sku in ["has%20space", "semi;colon", &"x".repeat(65)] {
        assert_error(
            app.get_product(sku).await,
            StatusCode::NOT_FOUND,
            "product_not_found",
        )
        .await;
        let response = app
            .client
            .delete(app.url(&format!("/api/admin/products/{sku}")))
            .bearer_auth(app.admin())
            .send()
            .await
            .expect("request");
        assert_error(response, StatusCode::NOT_FOUND, "product_not_found").await;
        let body = assert_error(
            app.put_product(sku, 1, "EUR", 1).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(body["details"][0]["field"], "sku");
    }
    let (status, _) = json_of(app.put_product(&"x".repeat(64), 1, "EUR", 1).await).await;
    assert_eq!(status, StatusCode::OK, "64 chars is the limit, inclusive");
    app.stop().await;
}

#[actix_web::test]
async fn malformed_json_wrong_content_type_and_oversized_bodies_are_refused() {
    let app = spawn_app().await;
    let url = app.url("/api/admin/products/tee");
    let response = app
        .client
        .put(&url)
        .bearer_auth(app.admin())
        .header("content-type", "application/json")
        .body("{\"name\": \"Tee\", ")
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;

    let response = app
        .client
        .put(&url)
        .bearer_auth(app.admin())
        .header("content-type", "text/plain")
        .body(r#"{"name":"Tee","price":1,"currency":"EUR","stock":1}"#)
        .send()
        .await
        .expect("request");
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let response = app
        .client
        .put(&url)
        .bearer_auth(app.admin())
        .body(r#"{"name":"Tee","price":1,"currency":"EUR","stock":1}"#)
        .send()
        .await
        .expect("request");
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let huge = json!({"name": "Tee", "price": 1, "currency": "EUR", "stock": 1, "pad": "x".repeat(70 * 1024)});
    let response = app
        .client
        .put(&url)
        .bearer_auth(app.admin())
        .json(&huge)
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let (status, _) = json_of(app.put_product("tee", 1, "EUR", 1).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the server keeps serving after bad input"
    );
    app.stop().await;
}
