//! Checkout and orders through real HTTP, with the sandbox gateway delivering real signed
//! webhooks back to the app: the contract of POST /api/orders, GET /api/orders[/{id}],
//! idempotency, the cart lock, expiry and the no-oversell guarantees.

use futures_util::future::join_all;
use kassa_testkit::app::{TestApp, assert_error, json_of, shipping, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

#[actix_web::test]
async fn checkout_reserves_stock_locks_the_cart_and_answers_the_payment() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;

    let body = app.place_order(&alice, &cart).await;
    assert_eq!(body["status"], "pending_payment");
    assert_eq!(body["total"], 3998);
    assert_eq!(body["currency"], "EUR");
    assert!(
        body["paymentUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with("http"))
    );
    assert!(body["paymentToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(uuid::Uuid::parse_str(body["orderId"].as_str().expect("orderId")).is_ok());
    let expires = time::OffsetDateTime::parse(
        body["expiresAt"].as_str().expect("expiresAt"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    let ttl = expires.unix_timestamp() - app.now();
    assert!(
        (14 * 60..=15 * 60).contains(&ttl),
        "reservation TTL is 15 min, got {ttl}s"
    );

    assert_eq!(app.available("tee").await, 3, "two units are reserved");
    let (_, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(cart_body["locked"], true);
    assert_error(
        app.set_item(&alice, &cart, "tee", 1).await,
        StatusCode::CONFLICT,
        "cart_locked",
    )
    .await;

    // A second checkout of the locked cart answers the same pending order.
    let again = app.place_order(&alice, &cart).await;
    assert_eq!(again["orderId"], body["orderId"]);
    assert_eq!(again["paymentUrl"], body["paymentUrl"]);

    let order = app
        .order(&alice, body["orderId"].as_str().expect("id"))
        .await;
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(
        order["items"],
        json!([{"sku": "tee", "name": "Product tee", "quantity": 2, "unitPrice": 1999, "lineTotal": 3998}])
    );
    assert_eq!(order["shippingDetails"], shipping());
    assert_eq!(order["history"].as_array().map(Vec::len), Some(1));
    assert_eq!(order["history"][0]["status"], "pending_payment");
    assert!(order["paymentId"].as_str().is_some());
    app.stop().await;
}

#[actix_web::test]
async fn a_paid_order_sells_the_stock_empties_the_cart_and_sends_the_confirmation() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;
    let checkout = app.place_order(&alice, &cart).await;
    let order_id = checkout["orderId"].as_str().expect("id");

    app.decide(&checkout, "success").await;
    let order = app.wait_for_status(&alice, order_id, "processing").await;
    let statuses: Vec<&str> = order["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(statuses, ["pending_payment", "processing"]);
    assert_eq!(app.available("tee").await, 3);

    // The sale is permanent: expiry no longer releases it.
    app.expire_pending_orders().await;
    assert_eq!(app.available("tee").await, 3);

    let (_, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(cart_body["items"], json!([]));
    assert_eq!(cart_body["locked"], false);

    // The confirmation is sent and recorded as sent.
    let mail = app.sent_mail(1).await;
    assert_eq!(mail[0].0, format!("{order_id}.confirmation.eml"));
    assert!(mail[0].1.contains("To: alice@example.com"), "{}", mail[0].1);
    app.stop().await;
}

#[actix_web::test]
async fn a_declined_payment_fails_the_order_releases_stock_and_unlocks_the_cart() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;
    let checkout = app.place_order(&alice, &cart).await;
    app.decide(&checkout, "failure").await;
    app.wait_for_status(&alice, checkout["orderId"].as_str().expect("id"), "failed")
        .await;
    assert_eq!(app.available("tee").await, 5);
    let (_, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(cart_body["locked"], false);
    assert_eq!(cart_body["items"][0]["quantity"], 2, "lines are kept");
    assert_eq!(
        app.set_item(&alice, &cart, "tee", 1).await.status(),
        StatusCode::OK
    );
    app.stop().await;
}

#[actix_web::test]
async fn two_shoppers_and_the_last_unit_sell_once() {
    let app = spawn_app().await;
    app.put_product("last", 5000, "EUR", 1).await;
    let (alice, alice_cart) = app.cart_with("alice", "last", 1).await;
    let (bob, bob_cart) = app.cart_with("bob", "last", 1).await;
    let (a, b) = futures_util::join!(
        app.checkout(&alice, &alice_cart, None),
        app.checkout(&bob, &bob_cart, None)
    );
    let (a, b) = (json_of(a).await, json_of(b).await);
    let statuses = [a.0, b.0];
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::CONFLICT), "{statuses:?}");
    let loser = if a.0 == StatusCode::CONFLICT {
        &a.1
    } else {
        &b.1
    };
    assert_eq!(loser["code"], "cart_conflict");
    assert_eq!(loser["details"][0]["reason"], "insufficient_stock");
    assert_eq!(loser["details"][0]["available"], 0);
    assert_eq!(app.available("last").await, 0);
    app.stop().await;
}

#[actix_web::test]
async fn fifty_concurrent_checkouts_for_ten_units_give_exactly_ten_orders() {
    let app = spawn_app().await;
    app.put_product("hot", 1000, "EUR", 10).await;
    let mut carts = Vec::new();
    for i in 0..50 {
        carts.push(app.cart_with(&format!("shopper-{i}"), "hot", 1).await);
    }
    let responses = join_all(
        carts
            .iter()
            .map(|(token, cart)| app.checkout(token, cart, None)),
    )
    .await;
    let mut placed = Vec::new();
    let mut refused = 0;
    for response in responses {
        let (status, body) = json_of(response).await;
        match status {
            StatusCode::OK => placed.push(body),
            StatusCode::CONFLICT => {
                assert_eq!(body["code"], "cart_conflict");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(placed.len(), 10);
    assert_eq!(refused, 40);
    assert_eq!(app.available("hot").await, 0);
    for order in &placed {
        app.decide(order, "success").await;
    }
    let admin = app.admin();
    for order in &placed {
        app.wait_for_status(&admin, order["orderId"].as_str().expect("id"), "processing")
            .await;
    }
    app.expire_pending_orders().await;
    assert_eq!(app.available("hot").await, 0);
    app.stop().await;
}

#[actix_web::test]
async fn checkout_lists_every_offending_line_and_reserves_nothing() {
    let app = spawn_app().await;
    app.put_product("a-ok", 100, "EUR", 10).await;
    app.put_product("b-price", 200, "EUR", 10).await;
    app.put_product("c-short", 300, "EUR", 10).await;
    app.put_product("d-gone", 400, "EUR", 10).await;
    let alice = app.token("alice", false);
    let cart = app.create_cart(&alice).await;
    for (sku, qty) in [("a-ok", 1), ("b-price", 1), ("c-short", 5), ("d-gone", 1)] {
        assert_eq!(
            app.set_item(&alice, &cart, sku, qty).await.status(),
            StatusCode::OK
        );
    }
    app.put_product("b-price", 250, "EUR", 10).await;
    app.put_product("c-short", 300, "EUR", 2).await;
    let deleted = app
        .client
        .delete(app.url("/api/admin/products/d-gone"))
        .bearer_auth(app.admin())
        .send()
        .await
        .expect("request");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let body = assert_error(
        app.checkout(&alice, &cart, None).await,
        StatusCode::CONFLICT,
        "cart_conflict",
    )
    .await;
    assert_eq!(body["error"], "Items not available or prices changed");
    assert_eq!(
        body["details"],
        json!([
            {"sku": "b-price", "reason": "price_changed", "requested": 1, "available": 10, "cartPrice": 200, "currentPrice": 250},
            {"sku": "c-short", "reason": "insufficient_stock", "requested": 5, "available": 2, "cartPrice": 300, "currentPrice": 300},
            {"sku": "d-gone", "reason": "unknown_product", "requested": 1, "available": 0, "cartPrice": 400, "currentPrice": null},
        ])
    );
    assert_eq!(app.available("a-ok").await, 10, "nothing reserved");
    let (_, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(
        cart_body["locked"], false,
        "a refused checkout leaves the cart open"
    );
    app.stop().await;
}

/// A token for alice with `email` as its claim (or none).
fn token_with_email(app: &TestApp, email: Option<&str>) -> String {
    use kassa::auth::{TokenRequest, mint};
    let clock: kassa_actors::clock::SharedClock = std::sync::Arc::new(app.clock.clone());
    mint(
        &app.config.jwt,
        &clock,
        TokenRequest {
            sub: "alice",
            email,
            admin: false,
            ttl: std::time::Duration::from_secs(3600),
            private_key_pem: None,
        },
    )
    .expect("mint")
}

#[actix_web::test]
async fn a_token_email_that_is_no_address_gives_way_to_the_shipping_email() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let token = token_with_email(&app, Some("a@b..com"));
    let cart = app.create_cart(&token).await;
    app.set_item(&token, &cart, "tee", 1).await;
    let mut shipping = shipping();
    shipping["email"] = json!("alice@shop.example");
    let (status, checkout) = app.checkout_shipped(&token, &cart, shipping).await;
    assert_eq!(status, StatusCode::OK, "{checkout}");
    app.decide(&checkout, "success").await;
    let order_id = checkout["orderId"].as_str().expect("id");
    app.wait_for_status(&token, order_id, "processing").await;
    let mail = app.sent_mail(1).await;
    assert!(
        mail[0].1.contains("To: alice@shop.example"),
        "{}",
        mail[0].1
    );
    app.stop().await;
}

#[actix_web::test]
async fn bad_checkout_requests_are_4xx() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let post = |token: String, body: Value| {
        let request = app
            .client
            .post(app.url("/api/orders"))
            .bearer_auth(token)
            .json(&body);
        async move { request.send().await.expect("request") }
    };
    let ok_body = |cart: &str| json!({"cartId": cart, "shippingDetails": shipping(), "paymentMethod": "card"});

    let bob = app.token("bob", false);
    assert_error(
        post(bob, ok_body(&cart)).await,
        StatusCode::NOT_FOUND,
        "cart_not_found",
    )
    .await;
    let missing = uuid::Uuid::now_v7().to_string();
    assert_error(
        post(alice.clone(), ok_body(&missing)).await,
        StatusCode::NOT_FOUND,
        "cart_not_found",
    )
    .await;

    let empty = app.create_cart(&alice).await;
    assert_error(
        post(alice.clone(), ok_body(&empty)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "cart_empty",
    )
    .await;

    let mut body = ok_body(&cart);
    body["paymentMethod"] = json!("bitcoin");
    let err = assert_error(
        post(alice.clone(), body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(err["details"][0]["field"], "paymentMethod");

    let mut body = ok_body(&cart);
    body["shippingDetails"]["postalCode"] = json!("");
    body["cartId"] = json!("nope");
    let err = assert_error(
        post(alice.clone(), body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = err["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    assert_eq!(fields, ["cartId", "shippingDetails.postalCode"]);

    // Neither a token email nor a shipping email: nowhere to send the confirmation.
    let anonymous = token_with_email(&app, None);
    let err = assert_error(
        post(anonymous.clone(), ok_body(&cart)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(err["details"][0]["field"], "shippingDetails.email");
    // Nor a shipping email the mailer could never address.
    for bad in ["x@y.com,evil@z.com", "a@y.com>", "a@b..com"] {
        let mut body = ok_body(&cart);
        body["shippingDetails"]["email"] = json!(bad);
        let err = assert_error(
            post(anonymous.clone(), body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(err["details"][0]["field"], "shippingDetails.email", "{bad}");
    }
    let mut with_email = ok_body(&cart);
    with_email["shippingDetails"]["email"] = json!("alice@shop.example");
    assert_eq!(post(anonymous, with_email).await.status(), StatusCode::OK);

    let response = app
        .client
        .post(app.url("/api/orders"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
    let response = app
        .client
        .post(app.url("/api/orders"))
        .json(&ok_body(&cart))
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.stop().await;
}

#[actix_web::test]
async fn the_same_idempotency_key_replays_the_first_response_and_never_places_twice() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;

    let (status, first) = json_of(app.checkout(&alice, &cart, Some("key-1")).await).await;
    assert_eq!(status, StatusCode::OK);
    app.decide(&first, "success").await;
    app.wait_for_status(&alice, first["orderId"].as_str().expect("id"), "processing")
        .await;

    let replay = app.checkout(&alice, &cart, Some("key-1")).await;
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let (status, replayed) = json_of(replay).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        replayed, first,
        "replayed as it was, though the order moved on"
    );

    let different = app
        .client
        .post(app.url("/api/orders"))
        .bearer_auth(&alice)
        .header("Idempotency-Key", "key-1")
        .json(&json!({"cartId": cart, "shippingDetails": {"name": "Someone Else", "line1": "2 Side St", "city": "Paris", "postalCode": "75001", "country": "FR"}, "paymentMethod": "card"}))
        .send()
        .await
        .expect("request");
    assert_error(
        different,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;

    // Keys are per user: bob's key-1 is his own.
    app.put_product("mug", 500, "EUR", 5).await;
    let (bob, bob_cart) = app.cart_with("bob", "mug", 1).await;
    let (status, bobs) = json_of(app.checkout(&bob, &bob_cart, Some("key-1")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(bobs["orderId"], first["orderId"]);

    let too_long = "k".repeat(256);
    assert_error(
        app.checkout(&bob, &bob_cart, Some(&too_long)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn a_used_idempotency_key_with_another_body_is_reused_even_when_that_body_is_invalid() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let (status, _) = json_of(app.checkout(&alice, &cart, Some("key-1")).await).await;
    assert_eq!(status, StatusCode::OK);

    let post = |key: &'static str| {
        app.client
            .post(app.url("/api/orders"))
            .bearer_auth(&alice)
            .header("Idempotency-Key", key)
    };
    for invalid in [
        json!({"cartId": cart, "shippingDetails": shipping(), "paymentMethod": "cash"}),
        json!({"cartId": "not-a-uuid"}),
        json!([]),
    ] {
        let response = post("key-1").json(&invalid).send().await.expect("request");
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
        )
        .await;
    }
    let malformed = post("key-1")
        .header("content-type", "application/json")
        .body("{\"cartId\": ")
        .send()
        .await
        .expect("request");
    assert_error(malformed, StatusCode::BAD_REQUEST, "invalid_json").await;

    // A fresh key with an invalid body is plain validation, and the key stays usable.
    let invalid = json!({"cartId": cart, "shippingDetails": shipping(), "paymentMethod": "cash"});
    let response = post("key-2").json(&invalid).send().await.expect("request");
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let (status, body) = json_of(app.checkout(&alice, &cart, Some("key-2")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}

#[actix_web::test]
async fn concurrent_duplicates_with_one_idempotency_key_make_one_order() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 50).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let responses = join_all((0..8).map(|_| app.checkout(&alice, &cart, Some("same-key")))).await;
    let mut order_ids = std::collections::BTreeSet::new();
    for response in responses {
        let (status, body) = json_of(response).await;
        match status {
            StatusCode::OK => {
                order_ids.insert(body["orderId"].as_str().expect("id").to_string());
            }
            StatusCode::CONFLICT => assert_eq!(body["code"], "idempotency_key_in_use"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(order_ids.len(), 1, "{order_ids:?}");
    assert_eq!(app.available("tee").await, 49);
    let (_, list) = json_of(
        app.client
            .get(app.url("/api/orders"))
            .bearer_auth(&alice)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(list["orders"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

#[actix_web::test]
async fn an_unreachable_gateway_is_502_and_gives_everything_back() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let app = spawn_app_with(|raw| raw.gateway = Some(format!("http://127.0.0.1:{port}"))).await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;
    assert_error(
        app.checkout(&alice, &cart, None).await,
        StatusCode::BAD_GATEWAY,
        "gateway_unavailable",
    )
    .await;
    assert_eq!(app.available("tee").await, 5);
    let (_, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(cart_body["locked"], false);
    let (_, list) = json_of(
        app.client
            .get(app.url("/api/orders"))
            .bearer_auth(&alice)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(list["orders"][0]["status"], "failed");
    let statuses: Vec<&str> = list["orders"][0]["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(statuses, ["pending_payment", "failed"]);
    app.stop().await;
}

#[actix_web::test]
async fn someone_elses_order_is_404_but_an_admin_sees_it() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let checkout = app.place_order(&alice, &cart).await;
    let id = checkout["orderId"].as_str().expect("id");
    let response = app
        .client
        .get(app.url(&format!("/api/orders/{id}")))
        .bearer_auth(app.token("bob", false))
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::NOT_FOUND, "order_not_found").await;
    assert_eq!(app.order(&app.admin(), id).await["orderId"], id);
    let response = app
        .client
        .get(app.url("/api/orders/not-a-uuid"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::NOT_FOUND, "order_not_found").await;
    app.stop().await;
}

#[actix_web::test]
async fn the_order_list_pages_newest_first_with_a_cursor() {
    let app = spawn_app().await;
    app.put_product("tee", 100, "EUR", 100).await;
    let alice = app.token("alice", false);
    let mut placed = Vec::new();
    for _ in 0..5 {
        let cart = app.create_cart(&alice).await;
        app.set_item(&alice, &cart, "tee", 1).await;
        placed.push(
            app.place_order(&alice, &cart).await["orderId"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    placed.reverse();
    let page = |query: String| {
        let request = app
            .client
            .get(app.url(&format!("/api/orders{query}")))
            .bearer_auth(&alice);
        async move { json_of(request.send().await.expect("request")).await }
    };
    let (status, first) = page("?limit=2".into()).await;
    assert_eq!(status, StatusCode::OK);
    let ids = |page: &Value| -> Vec<String> {
        page["orders"]
            .as_array()
            .expect("orders")
            .iter()
            .map(|o| o["orderId"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(ids(&first), placed[..2]);
    let cursor = first["nextCursor"].as_str().expect("cursor").to_string();
    let (_, second) = page(format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second), placed[2..4]);
    let cursor = second["nextCursor"].as_str().expect("cursor").to_string();
    let (_, last) = page(format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&last), placed[4..]);
    assert_eq!(last["nextCursor"], Value::Null);
    let (_, all) = page(String::new()).await;
    assert_eq!(ids(&all), placed, "default limit is 20");

    let (_, bobs) = json_of(
        app.client
            .get(app.url("/api/orders"))
            .bearer_auth(app.token("bob", false))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(bobs["orders"], json!([]));

    for bad in ["?limit=0", "?limit=101", "?limit=ten", "?cursor=%25%25%25"] {
        let (status, body) = page(bad.into()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["code"], "validation_failed");
    }
    app.stop().await;
}

#[actix_web::test]
async fn expiry_releases_stock_and_unlocks_the_cart() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 3).await;
    let checkout = app.place_order(&alice, &cart).await;
    assert_eq!(app.available("tee").await, 2);
    app.expire_pending_orders().await;
    let order = app
        .wait_for_status(&alice, checkout["orderId"].as_str().expect("id"), "expired")
        .await;
    assert_eq!(order["history"][1]["status"], "expired");
    assert_eq!(app.available("tee").await, 5);
    let (_, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(cart_body["locked"], false);
    assert_eq!(cart_body["items"][0]["quantity"], 3);
    app.stop().await;
}

#[actix_web::test]
async fn late_payment_after_expiry_with_stock_left_re_reserves_and_processes() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;
    let checkout = app.place_order(&alice, &cart).await;
    let id = checkout["orderId"].as_str().expect("id");
    app.expire_pending_orders().await;
    app.wait_for_status(&alice, id, "expired").await;

    app.decide(&checkout, "success").await;
    let order = app.wait_for_status(&alice, id, "processing").await;
    let statuses: Vec<&str> = order["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(statuses, ["pending_payment", "expired", "processing"]);
    assert_eq!(app.available("tee").await, 3);
    let (_, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(cart_body["items"], json!([]));
    app.stop().await;
}

#[actix_web::test]
async fn a_late_payment_takes_what_it_bought_out_of_the_cart_even_while_a_newer_checkout_holds_it()
{
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    app.put_product("mug", 899, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;
    let first = app.place_order(&alice, &cart).await;
    let first_id = first["orderId"].as_str().expect("id");
    app.expire_pending_orders().await;
    app.wait_for_status(&alice, first_id, "expired").await;
    // Alice adds a mug and checks the cart out again; then the first payment goes through.
    app.set_item(&alice, &cart, "mug", 1).await;
    let second = app.place_order(&alice, &cart).await;
    let second_id = second["orderId"].as_str().expect("id");
    assert_ne!(first_id, second_id);
    app.decide(&first, "success").await;
    app.wait_for_status(&alice, first_id, "processing").await;
    assert_eq!(
        app.available("tee").await,
        1,
        "both orders hold their 2 tees"
    );
    let (_, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
    let skus: Vec<&str> = cart_body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["sku"].as_str())
        .collect();
    assert_eq!(
        skus,
        ["mug"],
        "the tees paid for left the cart: {cart_body}"
    );
    assert_eq!(
        cart_body["locked"], true,
        "the newer checkout still holds it"
    );
    // The newer order is declined: the cart unlocks with the mug, not the tees already bought.
    app.decide(&second, "failure").await;
    app.wait_for_status(&alice, second_id, "failed").await;
    let (_, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(cart_body["locked"], false);
    assert_eq!(cart_body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(cart_body["items"][0]["sku"], "mug");
    assert_eq!(cart_body["items"][0]["quantity"], 1);
    assert_eq!(app.available("tee").await, 3);
    app.stop().await;
}

#[actix_web::test]
async fn late_payment_after_expiry_without_stock_left_is_refunded() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 2).await;
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;
    let checkout = app.place_order(&alice, &cart).await;
    let id = checkout["orderId"].as_str().expect("id");
    app.expire_pending_orders().await;
    app.wait_for_status(&alice, id, "expired").await;

    // Bob buys the units meanwhile.
    let (bob, bob_cart) = app.cart_with("bob", "tee", 2).await;
    let bobs = app.place_order(&bob, &bob_cart).await;
    app.decide(&bobs, "success").await;
    app.wait_for_status(&bob, bobs["orderId"].as_str().expect("id"), "processing")
        .await;

    app.decide(&checkout, "success").await;
    let order = app.wait_for_status(&alice, id, "refunded").await;
    let statuses: Vec<&str> = order["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["pending_payment", "expired", "refund_pending", "refunded"]
    );
    assert_eq!(
        app.available("tee").await,
        0,
        "bob's sale stands, nothing oversold"
    );
    app.stop().await;
}

#[actix_web::test]
async fn stock_is_conserved_after_a_randomized_run_of_checkouts_payments_declines_and_expiries() {
    use rand::{RngExt, SeedableRng};
    let app = spawn_app().await;
    let skus = ["s-a", "s-b", "s-c", "s-d"];
    let initial = 12;
    for sku in skus {
        app.put_product(sku, 250, "EUR", initial).await;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b_6173_7361);
    let mut placed = Vec::new();
    for shopper in 0..40 {
        let token = app.token(&format!("r-{shopper}"), false);
        let cart = app.create_cart(&token).await;
        for _ in 0..rng.random_range(1..=3) {
            let sku = skus[rng.random_range(0..skus.len())];
            app.set_item(&token, &cart, sku, rng.random_range(1..=3))
                .await;
        }
        let (status, body) = json_of(app.checkout(&token, &cart, None).await).await;
        match status {
            StatusCode::OK => placed.push((token, body, rng.random_range(0..10))),
            StatusCode::CONFLICT => assert_eq!(body["code"], "cart_conflict"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        placed.len() >= 5,
        "the run should place a fair number of orders"
    );
    for (_, checkout, fate) in &placed {
        match fate {
            0..=5 => app.decide(checkout, "success").await,
            6..=7 => app.decide(checkout, "failure").await,
            _ => {} // abandoned: left to expire
        }
    }
    for (token, checkout, fate) in &placed {
        let want = match fate {
            0..=5 => "processing",
            6..=7 => "failed",
            _ => continue,
        };
        app.wait_for_status(token, checkout["orderId"].as_str().expect("id"), want)
            .await;
    }
    app.expire_pending_orders().await;
    let mut sold = std::collections::BTreeMap::new();
    for (token, checkout, fate) in &placed {
        let id = checkout["orderId"].as_str().expect("id");
        let want = if *fate >= 8 {
            "expired"
        } else if *fate >= 6 {
            "failed"
        } else {
            "processing"
        };
        let order = app.wait_for_status(token, id, want).await;
        if want == "processing" {
            for item in order["items"].as_array().expect("items") {
                *sold
                    .entry(item["sku"].as_str().expect("sku").to_string())
                    .or_insert(0) += item["quantity"].as_i64().expect("quantity");
            }
        }
    }
    for sku in skus {
        let sold = sold.get(sku).copied().unwrap_or(0);
        assert_eq!(
            app.available(sku).await,
            initial - sold,
            "{sku}: on hand = initial - paid"
        );
    }
    app.stop().await;
}

#[actix_web::test]
async fn bodies_that_are_not_json_not_typed_json_or_too_large_are_refused_on_cart_lines_and_checkout()
 {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let line = app.url(&format!("/api/carts/{cart}/items/tee"));
    let checkout = app.url("/api/orders");
    let huge = format!(
        "{{\"quantity\": 1, \"padding\": \"{}\"}}",
        "x".repeat(70 * 1024)
    );
    for (method, url) in [
        (reqwest::Method::PUT, &line),
        (reqwest::Method::POST, &checkout),
    ] {
        let send = |content_type: &'static str, body: String| {
            app.client
                .request(method.clone(), url.as_str())
                .bearer_auth(&alice)
                .header("content-type", content_type)
                .body(body)
                .send()
        };
        let response = send("application/json", "{\"quantity\": ".into())
            .await
            .expect("request");
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
        let response = send("text/plain", "{\"quantity\": 1}".into())
            .await
            .expect("request");
        assert_error(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
        let response = send("application/json", huge.clone())
            .await
            .expect("request");
        assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    }
    let (_, body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(body["items"][0]["quantity"], 1, "the cart is as it was");
    assert_eq!(app.available("tee").await, 5, "no order was placed");
    app.stop().await;
}

/// An RFC 3339 time in UTC, as API.md wants every time: `...Z`.
fn assert_utc_rfc3339(what: &str, value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{what} `{text}` is not RFC 3339: {e}"));
    assert!(parsed.offset().is_utc(), "{what} `{text}` is not UTC");
    assert!(text.ends_with('Z'), "{what} `{text}` does not end in Z");
}

#[actix_web::test]
async fn every_time_is_rfc3339_in_utc() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let checkout = app.place_order(&alice, &cart).await;
    assert_utc_rfc3339("checkout expiresAt", &checkout["expiresAt"]);
    let id = checkout["orderId"].as_str().expect("id");
    app.decide(&checkout, "success").await;
    let order = app.wait_for_status(&alice, id, "processing").await;
    for field in ["createdAt", "updatedAt", "expiresAt"] {
        assert_utc_rfc3339(field, &order[field]);
    }
    let history = order["history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{order}");
    for entry in history {
        assert_utc_rfc3339("history[].at", &entry["at"]);
    }
    app.stop().await;
}

#[actix_web::test]
async fn the_order_list_defaults_to_20_a_page_and_takes_up_to_100() {
    let app = spawn_app().await;
    app.put_product("tee", 100, "EUR", 100).await;
    let alice = app.token("alice", false);
    for _ in 0..21 {
        let cart = app.create_cart(&alice).await;
        app.set_item(&alice, &cart, "tee", 1).await;
        app.place_order(&alice, &cart).await;
    }
    let page = |query: &str| {
        let request = app
            .client
            .get(app.url(&format!("/api/orders{query}")))
            .bearer_auth(&alice);
        async move { json_of(request.send().await.expect("request")).await }
    };
    let (status, default) = page("").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(default["orders"].as_array().map(Vec::len), Some(20));
    assert!(
        default["nextCursor"].is_string(),
        "{}",
        default["nextCursor"]
    );
    let (status, most) = page("?limit=100").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(most["orders"].as_array().map(Vec::len), Some(21));
    assert_eq!(most["nextCursor"], Value::Null);
    let (status, body) = page("?limit=101").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["details"][0]["field"], "limit");
    app.stop().await;
}

#[actix_web::test]
async fn a_second_address_line_is_kept_and_read_back() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let mut shipping = shipping();
    shipping["line2"] = json!("Apartment 4B");
    let (status, checkout) = app.checkout_shipped(&alice, &cart, shipping).await;
    assert_eq!(status, StatusCode::OK, "{checkout}");
    let order = app
        .order(&alice, checkout["orderId"].as_str().expect("id"))
        .await;
    assert_eq!(order["shippingDetails"]["line2"], "Apartment 4B");
    assert_eq!(order["shippingDetails"]["line1"], "1 Main St");
    app.stop().await;
}

#[actix_web::test]
async fn an_idempotency_key_is_1_to_255_characters() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    for bad in [String::new(), "k".repeat(256)] {
        let body = assert_error(
            app.checkout(&alice, &cart, Some(&bad)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(body["details"][0]["field"], "Idempotency-Key", "{body}");
    }
    assert_eq!(app.available("tee").await, 5, "nothing placed");
    let longest = "k".repeat(255);
    let (status, first) = json_of(app.checkout(&alice, &cart, Some(&longest)).await).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let replay = app.checkout(&alice, &cart, Some(&longest)).await;
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true"),
        "the 255-character key was stored"
    );
    app.stop().await;
}

/// What a recording gateway was sent on `POST /payments`.
#[derive(Debug, Clone)]
struct PaymentCall {
    idempotency_key: Option<String>,
    body: Value,
}

/// A gateway speaking API.md's protocol that records every `POST /payments`; answers its
/// base URL and the calls.
async fn recording_gateway() -> (String, Arc<Mutex<Vec<PaymentCall>>>) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = HttpServer::new(move || {
        let recorded = recorded.clone();
        App::new().route(
            "/payments",
            web::post().to(move |req: HttpRequest, body: web::Json<Value>| {
                let recorded = recorded.clone();
                async move {
                    let call = PaymentCall {
                        idempotency_key: req
                            .headers()
                            .get("Idempotency-Key")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                        body: body.into_inner(),
                    };
                    recorded.lock().expect("lock").push(call);
                    HttpResponse::Created().json(json!({
                        "paymentId": "pay_recorded",
                        "paymentUrl": "https://gateway.test/pay/pay_recorded",
                        "token": "tok_recorded",
                    }))
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .expect("gateway listens")
    .run();
    actix_web::rt::spawn(server);
    (format!("http://127.0.0.1:{port}"), calls)
}

#[actix_web::test]
async fn an_http_gateway_is_asked_with_the_order_id_as_key_and_the_storefront_return_url() {
    let (gateway, calls) = recording_gateway().await;
    let app = spawn_app_with(|raw| {
        raw.gateway = Some(gateway);
        raw.storefront_url = Some("https://shop.example/store".into());
    })
    .await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;
    let checkout = app.place_order(&alice, &cart).await;
    let order_id = checkout["orderId"].as_str().expect("id");
    assert_eq!(
        checkout["paymentUrl"],
        "https://gateway.test/pay/pay_recorded"
    );
    assert_eq!(checkout["paymentToken"], "tok_recorded");
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].idempotency_key.as_deref(), Some(order_id));
    let body = &calls[0].body;
    for (field, want) in [
        ("orderId", json!(order_id)),
        ("amount", json!(3998)),
        ("currency", json!("EUR")),
        (
            "callbackUrl",
            json!(format!("{}/webhook/payment-status", app.address)),
        ),
        (
            "returnUrl",
            json!(format!("https://shop.example/store/orders/{order_id}")),
        ),
        // What the gateway's hosted page may show (optional fields of the protocol).
        ("shopName", json!("Kassa")),
        (
            "lines",
            json!([{"name": "Product tee", "quantity": 2, "amount": 3998}]),
        ),
    ] {
        assert_eq!(body[field], want, "{field} in {body}");
    }
    let order = app.order(&alice, order_id).await;
    assert_eq!(body["orderNumber"], order["orderNumber"]);
    let cancel = body["cancelUrl"].as_str().expect("cancelUrl");
    assert!(
        cancel.starts_with(&format!("{}/orders/{order_id}/cancel?t=", app.address)),
        "{cancel}"
    );
    assert!(body["expiresAt"].is_string());
    app.stop().await;
}
