//! Carts: created by a user, visible only to that user, lines at the price the shopper saw,
//! single currency, locked while an order is pending.

use futures_util::future::join_all;
use kassa_actors::domain::{Currency, OrderId, Sku};
use kassa_actors::store::CartLine;
use kassa_testkit::app::{assert_error, json_of, spawn_app};
use reqwest::StatusCode;
use serde_json::json;

#[actix_web::test]
async fn a_new_cart_is_empty_and_belongs_to_its_creator() {
    let app = spawn_app().await;
    let alice = app.token("alice", false);
    let response = app
        .client
        .post(app.url("/api/carts"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request");
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::CREATED);
    let cart = body["cartId"].as_str().expect("cartId");
    assert!(uuid::Uuid::parse_str(cart).is_ok());
    assert_eq!(body["items"], json!([]));
    assert_eq!(body["total"], 0);
    assert_eq!(body["currency"], json!(null));

    let (status, body) = json_of(app.get_cart(&alice, cart).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["locked"], false);
    app.stop().await;
}

#[actix_web::test]
async fn someone_elses_cart_is_404_for_every_route() {
    let app = spawn_app().await;
    app.put_product("tee", 1000, "EUR", 5).await;
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let cart = app.create_cart(&alice).await;
    app.set_item(&alice, &cart, "tee", 1).await;

    assert_error(
        app.get_cart(&bob, &cart).await,
        StatusCode::NOT_FOUND,
        "cart_not_found",
    )
    .await;
    assert_error(
        app.set_item(&bob, &cart, "tee", 3).await,
        StatusCode::NOT_FOUND,
        "cart_not_found",
    )
    .await;
    let response = app
        .client
        .delete(app.url(&format!("/api/carts/{cart}/items/tee")))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::NOT_FOUND, "cart_not_found").await;
    let (_, body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(body["items"][0]["quantity"], 1, "bob changed nothing");

    let missing = uuid::Uuid::now_v7().to_string();
    assert_error(
        app.get_cart(&alice, &missing).await,
        StatusCode::NOT_FOUND,
        "cart_not_found",
    )
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn a_line_records_the_price_seen_and_zero_removes_it() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    app.put_product("mug", 500, "EUR", 1).await;
    let alice = app.token("alice", false);
    let cart = app.create_cart(&alice).await;

    let (status, body) = json_of(app.set_item(&alice, &cart, "tee", 2).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["items"],
        json!([{"sku": "tee", "name": "Product tee", "quantity": 2, "unitPrice": 1999, "currency": "EUR"}])
    );
    assert_eq!(body["total"], 3998);
    assert_eq!(body["currency"], "EUR");

    // More than available is accepted: checkout decides.
    let (status, body) = json_of(app.set_item(&alice, &cart, "mug", 7).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 3998 + 3500);

    // A later price change does not rewrite what the shopper saw.
    app.put_product("tee", 2500, "EUR", 5).await;
    let (_, body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(body["items"][0]["unitPrice"], 1999);

    let (status, body) = json_of(app.set_item(&alice, &cart, "tee", 0).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["total"], 3500);

    let response = app
        .client
        .delete(app.url(&format!("/api/carts/{cart}/items/mug")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request");
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], json!([]));
    assert_eq!(body["currency"], json!(null));

    let response = app
        .client
        .delete(app.url(&format!("/api/carts/{cart}/items/never-there")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "deleting an absent line is fine"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_line_in_another_currency_is_currency_mismatch() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    app.put_product("cap", 1500, "USD", 5).await;
    let alice = app.token("alice", false);
    let cart = app.create_cart(&alice).await;
    app.set_item(&alice, &cart, "tee", 1).await;
    assert_error(
        app.set_item(&alice, &cart, "cap", 1).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "currency_mismatch",
    )
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn bad_cart_inputs_are_4xx() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let alice = app.token("alice", false);
    let cart = app.create_cart(&alice).await;

    assert_error(
        app.set_item(&alice, &cart, "ghost", 1).await,
        StatusCode::NOT_FOUND,
        "product_not_found",
    )
    .await;
    for quantity in [-1, 10_001] {
        let body = assert_error(
            app.set_item(&alice, &cart, "tee", quantity).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(body["details"][0]["field"], "quantity");
    }
    assert_eq!(
        app.set_item(&alice, &cart, "tee", 10_000).await.status(),
        StatusCode::OK
    );
    for body in [
        json!({"quantity": "2"}),
        json!({"quantity": 1.5}),
        json!({}),
        json!({"quantity": null}),
    ] {
        let response = app
            .client
            .put(app.url(&format!("/api/carts/{cart}/items/tee")))
            .bearer_auth(&alice)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    app.stop().await;
}

#[actix_web::test]
async fn an_impossible_cart_id_or_sku_in_the_path_is_not_found() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    assert_error(
        app.get_cart(&alice, "not-a-uuid").await,
        StatusCode::NOT_FOUND,
        "cart_not_found",
    )
    .await;
    assert_error(
        app.set_item(&alice, "not-a-uuid", "tee", 1).await,
        StatusCode::NOT_FOUND,
        "cart_not_found",
    )
    .await;
    for sku in ["bad%20sku", "semi;colon", &"x".repeat(65)] {
        assert_error(
            app.set_item(&alice, &cart, sku, 1).await,
            StatusCode::NOT_FOUND,
            "product_not_found",
        )
        .await;
    }
    let delete = |cart: &str, sku: &str| {
        app.client
            .delete(app.url(&format!("/api/carts/{cart}/items/{sku}")))
            .bearer_auth(&alice)
            .send()
    };
    assert_error(
        delete("not-a-uuid", "tee").await.expect("request"),
        StatusCode::NOT_FOUND,
        "cart_not_found",
    )
    .await;
    // A line with an impossible sku was never there: the cart as it is, as for any absent line.
    let (status, body) = json_of(delete(&cart, "bad%20sku").await.expect("request")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["sku"], "tee");
    let bob = app.token("bob", false);
    let response = app
        .client
        .delete(app.url(&format!("/api/carts/{cart}/items/bad%20sku")))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::NOT_FOUND, "cart_not_found").await;
    app.place_order(&alice, &cart).await;
    let locked = delete(&cart, "bad%20sku").await.expect("request");
    assert_error(locked, StatusCode::CONFLICT, "cart_locked").await;
    app.stop().await;
}

#[actix_web::test]
async fn a_locked_cart_refuses_changes_with_409_cart_locked() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let alice = app.token("alice", false);
    let cart = app.create_cart(&alice).await;
    app.set_item(&alice, &cart, "tee", 1).await;

    // Until checkout lands, lock the cart the way an order will: in the store.
    let order = OrderId::new();
    app.rewrite_stored_cart(&cart, |record| record.locked_by = Some(order))
        .await;

    let body = assert_error(
        app.set_item(&alice, &cart, "tee", 2).await,
        StatusCode::CONFLICT,
        "cart_locked",
    )
    .await;
    assert_eq!(body["details"]["orderId"], order.to_string());
    let response = app
        .client
        .delete(app.url(&format!("/api/carts/{cart}/items/tee")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::CONFLICT, "cart_locked").await;
    let (_, body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(body["locked"], true);
    assert_eq!(body["items"][0]["quantity"], 1);
    app.stop().await;
}

#[actix_web::test]
async fn a_change_that_takes_the_total_above_ten_to_the_fifteen_is_422_naming_quantity() {
    let app = spawn_app().await;
    app.put_product("gold", 1_000_000_000_000, "EUR", 10_000)
        .await;
    app.put_product("pin", 1, "EUR", 10).await;
    let alice = app.token("alice", false);
    let cart = app.create_cart(&alice).await;
    let (status, body) = json_of(app.set_item(&alice, &cart, "gold", 1000).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "10^15 is the limit, inclusive: {body}"
    );
    assert_eq!(body["total"], 1_000_000_000_000_000_i64);

    for (sku, quantity) in [("gold", 1001), ("gold", 10_000), ("pin", 1)] {
        let body = assert_error(
            app.set_item(&alice, &cart, sku, quantity).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(
            body["details"][0]["field"], "quantity",
            "{sku} x {quantity}"
        );
    }
    let (status, body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["total"], 1_000_000_000_000_000_i64);
    assert_eq!(
        app.set_item(&alice, &cart, "gold", 999).await.status(),
        StatusCode::OK,
        "lowering a line is always possible"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_cart_holds_at_most_250_lines_and_a_251st_is_422_naming_sku() {
    let app = spawn_app().await;
    let skus: Vec<String> = (0..=250).map(|i| format!("sku-{i}")).collect();
    for batch in skus.chunks(25) {
        join_all(batch.iter().map(|sku| app.put_product(sku, 100, "EUR", 5))).await;
    }
    let alice = app.token("alice", false);
    let cart = app.create_cart(&alice).await;
    for sku in &skus[..250] {
        let response = app.set_item(&alice, &cart, sku, 1).await;
        assert_eq!(response.status(), StatusCode::OK, "{sku}");
    }
    let body = assert_error(
        app.set_item(&alice, &cart, &skus[250], 1).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(body["details"][0]["field"], "sku", "{body}");
    assert_eq!(
        app.set_item(&alice, &cart, &skus[0], 2).await.status(),
        StatusCode::OK,
        "an existing line can still change"
    );
    assert_eq!(
        app.set_item(&alice, &cart, &skus[1], 0).await.status(),
        StatusCode::OK
    );
    let (status, body) = json_of(app.set_item(&alice, &cart, &skus[250], 1).await).await;
    assert_eq!(status, StatusCode::OK, "room again after a removal: {body}");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(250));
    app.stop().await;
}

#[actix_web::test]
async fn a_stored_cart_whose_total_overflows_still_reads_and_can_be_emptied() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let alice = app.token("alice", false);
    let cart = app.create_cart(&alice).await;
    app.set_item(&alice, &cart, "tee", 1).await;

    // A cart saved before prices were bounded: i64::MAX x 2 overflows any sum.
    app.rewrite_stored_cart(&cart, |record| {
        record.lines.push(CartLine {
            sku: Sku::parse("legacy").expect("sku"),
            name: "Legacy".into(),
            quantity: 2,
            unit_price: i64::MAX,
            currency: Currency::EUR,
        })
    })
    .await;

    for _ in 0..2 {
        let (status, body) = json_of(app.get_cart(&alice, &cart).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["items"].as_array().map(Vec::len), Some(2));
    }
    assert_error(
        app.set_item(&alice, &cart, "tee", 2).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let response = app
        .client
        .delete(app.url(&format!("/api/carts/{cart}/items/legacy")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request");
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 1999);
    app.stop().await;
}
