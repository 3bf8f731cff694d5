//! POST /webhook/payment-status as a gateway (or an attacker) would call it: signatures,
//! malformed payloads, duplicates, reordering and amount mismatches.

use kassa_testkit::app::{WEBHOOK_SECRET, assert_error, json_of, spawn_app};
use reqwest::StatusCode;
use serde_json::json;

fn body(order_id: &str, status: &str, amount: i64, currency: &str) -> String {
    json!({"orderId": order_id, "status": status, "paymentId": "pay_test_1", "amount": amount, "currency": currency})
        .to_string()
}

const FORGED_SECRET: &str = "whsec_Zm9yZ2VkLWJ5LWFuLWF0dGFja2VyLWJ5dGVz";

#[actix_web::test]
async fn forged_and_stale_signatures_change_nothing() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let checkout = app.place_order(&alice, &cart).await;
    let id = checkout["orderId"].as_str().expect("id");
    let success = body(id, "Success", 1999, "EUR");
    let now = app.now();

    let forged = app
        .send_webhook("msg_forged", now, &success, FORGED_SECRET)
        .await;
    assert_error(forged, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let stale = app
        .send_webhook("msg_stale", now - 301, &success, WEBHOOK_SECRET)
        .await;
    assert_error(stale, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let future = app
        .send_webhook("msg_future", now + 301, &success, WEBHOOK_SECRET)
        .await;
    assert_error(future, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    // Signed for one body, sent with another.
    let signature = standardwebhooks::Webhook::new(WEBHOOK_SECRET)
        .expect("secret")
        .sign("msg_swap", now, body(id, "Failed", 1999, "EUR").as_bytes())
        .expect("sign");
    let swapped = app
        .client
        .post(app.url("/webhook/payment-status"))
        .header("webhook-id", "msg_swap")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signature)
        .body(success.clone())
        .send()
        .await
        .expect("request");
    assert_error(swapped, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    let unsigned = app
        .client
        .post(app.url("/webhook/payment-status"))
        .body(success.clone())
        .send()
        .await
        .expect("request");
    assert_error(unsigned, StatusCode::UNAUTHORIZED, "invalid_signature").await;

    assert_eq!(app.order(&alice, id).await["status"], "pending_payment");
    assert_eq!(app.available("tee").await, 4);

    // Within tolerance and correctly signed: accepted.
    let fine = app
        .send_webhook("msg_ok", now - 299, &success, WEBHOOK_SECRET)
        .await;
    assert_eq!(fine.status(), StatusCode::OK);
    assert_eq!(app.order(&alice, id).await["status"], "processing");
    app.stop().await;
}

#[actix_web::test]
async fn malformed_and_unknown_webhooks_are_refused_after_verification() {
    let app = spawn_app().await;
    let now = app.now();
    let not_json = app
        .send_webhook("msg_1", now, "{nope", WEBHOOK_SECRET)
        .await;
    assert_error(not_json, StatusCode::BAD_REQUEST, "invalid_json").await;
    let order = uuid::Uuid::now_v7().to_string();
    for payload in [
        json!({"orderId": order, "status": "Success", "paymentId": "p", "amount": 1}).to_string(),
        json!({"orderId": order, "status": "Maybe", "paymentId": "p", "amount": 1, "currency": "EUR"}).to_string(),
        json!({"orderId": order, "status": "Success", "paymentId": "p", "amount": "1", "currency": "EUR"}).to_string(),
        json!({"orderId": "not-a-uuid", "status": "Success", "paymentId": "p", "amount": 1, "currency": "EUR"}).to_string(),
        json!([1, 2, 3]).to_string(),
    ] {
        let response = app.send_webhook("msg_2", now, &payload, WEBHOOK_SECRET).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_payload").await;
    }
    let unknown = app
        .send_webhook(
            "msg_3",
            now,
            &body(&order, "Success", 1, "EUR"),
            WEBHOOK_SECRET,
        )
        .await;
    assert_error(unknown, StatusCode::NOT_FOUND, "order_not_found").await;
    app.stop().await;
}

/// `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}." and the raw bytes>`, computed here
/// from the spec rather than with a library that only signs UTF-8.
fn sign_bytes(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.trim_start_matches("whsec_"))
        .expect("base64 key");
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", b64.encode(hmac_sha256::HMAC::mac(&signed, &key)))
}

#[actix_web::test]
async fn a_signed_body_that_is_not_utf8_is_400_invalid_json_and_unsigned_it_is_401() {
    let app = spawn_app().await;
    let now = app.now();
    let body: &[u8] = b"{\"orderId\": \"\xff\xfe\"}";
    let post = |signature: Option<String>| {
        let mut request = app
            .client
            .post(app.url("/webhook/payment-status"))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_bytes")
            .header("webhook-timestamp", now.to_string())
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("webhook-signature", signature);
        }
        request.send()
    };
    let signed = post(Some(sign_bytes(WEBHOOK_SECRET, "msg_bytes", now, body)))
        .await
        .expect("request");
    assert_error(signed, StatusCode::BAD_REQUEST, "invalid_json").await;
    let forged = post(Some(sign_bytes(FORGED_SECRET, "msg_bytes", now, body)))
        .await
        .expect("request");
    assert_error(forged, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let unsigned = post(None).await.expect("request");
    assert_error(unsigned, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    app.stop().await;
}

#[actix_web::test]
async fn duplicate_and_reordered_webhooks_have_one_effect() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;

    // Duplicates: the same success delivered three times sells once.
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;
    let checkout = app.place_order(&alice, &cart).await;
    let id = checkout["orderId"].as_str().expect("id");
    let success = body(id, "Success", 3998, "EUR");
    for _ in 0..3 {
        let (status, answer) = json_of(
            app.send_webhook("msg_dup", app.now(), &success, WEBHOOK_SECRET)
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer, json!({"received": true}));
    }
    // A later failure for a paid order changes nothing.
    let failed = body(id, "Failed", 3998, "EUR");
    assert_eq!(
        app.send_webhook("msg_late_fail", app.now(), &failed, WEBHOOK_SECRET)
            .await
            .status(),
        StatusCode::OK
    );
    let order = app.order(&alice, id).await;
    assert_eq!(order["status"], "processing");
    assert_eq!(order["history"].as_array().map(Vec::len), Some(2));
    assert_eq!(order["paymentId"], "pay_test_1");
    assert_eq!(app.available("tee").await, 3);

    // Reordered: a failure arrives first, then the success of a second attempt.
    let (bob, bob_cart) = app.cart_with("bob", "tee", 1).await;
    let checkout = app.place_order(&bob, &bob_cart).await;
    let id = checkout["orderId"].as_str().expect("id");
    assert_eq!(
        app.send_webhook(
            "msg_b1",
            app.now(),
            &body(id, "Failed", 1999, "EUR"),
            WEBHOOK_SECRET
        )
        .await
        .status(),
        StatusCode::OK
    );
    assert_eq!(app.order(&bob, id).await["status"], "failed");
    assert_eq!(app.available("tee").await, 3);
    assert_eq!(
        app.send_webhook(
            "msg_b2",
            app.now(),
            &body(id, "Success", 1999, "EUR"),
            WEBHOOK_SECRET
        )
        .await
        .status(),
        StatusCode::OK
    );
    assert_eq!(app.order(&bob, id).await["status"], "processing");
    assert_eq!(app.available("tee").await, 2);
    // And the failure redelivered after that changes nothing either.
    assert_eq!(
        app.send_webhook(
            "msg_b1",
            app.now(),
            &body(id, "Failed", 1999, "EUR"),
            WEBHOOK_SECRET
        )
        .await
        .status(),
        StatusCode::OK
    );
    assert_eq!(app.order(&bob, id).await["status"], "processing");
    assert_eq!(app.available("tee").await, 2);

    // One confirmation per paid order, sent.
    app.sent_mail(2).await;
    app.stop().await;
}

#[actix_web::test]
async fn an_amount_mismatch_is_not_paid_but_refunded() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let checkout = app.place_order(&alice, &cart).await;
    let id = checkout["orderId"].as_str().expect("id");
    // Settle it at the sandbox so the refund has a real payment to refund.
    app.decide(&checkout, "failure").await;
    app.wait_for_status(&alice, id, "failed").await;
    let cheap = body(id, "Success", 1, "EUR");
    let response = app
        .send_webhook("msg_cheap", app.now(), &cheap, WEBHOOK_SECRET)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let order = app.order(&alice, id).await;
    assert!(
        ["refund_pending", "refunded"].contains(&order["status"].as_str().unwrap_or_default()),
        "{order}"
    );
    assert_eq!(
        app.available("tee").await,
        5,
        "nothing sold for a wrong amount"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_wrong_currency_on_a_pending_order_releases_and_refunds() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let checkout = app.place_order(&alice, &cart).await;
    let id = checkout["orderId"].as_str().expect("id");
    app.decide(&checkout, "success").await;
    // The sandbox's own (correct) webhook may land first; send a mismatching one for a fresh
    // order instead to see the pending -> refund_pending path.
    let (bob, bob_cart) = app.cart_with("bob", "tee", 1).await;
    let bobs = app.place_order(&bob, &bob_cart).await;
    let bob_id = bobs["orderId"].as_str().expect("id");
    let usd = body(bob_id, "Success", 1999, "USD");
    assert_eq!(
        app.send_webhook("msg_usd", app.now(), &usd, WEBHOOK_SECRET)
            .await
            .status(),
        StatusCode::OK
    );
    let order = app.order(&bob, bob_id).await;
    assert_eq!(order["history"][1]["status"], "refund_pending", "{order}");
    let (_, cart_body) = json_of(app.get_cart(&bob, &bob_cart).await).await;
    assert_eq!(cart_body["locked"], false);
    assert_eq!(cart_body["items"][0]["quantity"], 1, "lines kept");
    app.wait_for_status(&alice, id, "processing").await;
    assert_eq!(app.available("tee").await, 4, "alice's sale only");
    app.stop().await;
}

/// The webhook is answered at its commit point, but only once every effect has been handed
/// to its actor: whatever the shopper reads next already shows the payment's effects.
#[actix_web::test]
async fn what_is_read_right_after_a_paid_webhook_shows_its_effects() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 100).await;
    app.put_product("mug", 900, "EUR", 100).await;
    for round in 0..20 {
        let (alice, cart) = app.cart_with(&format!("alice{round}"), "tee", 1).await;
        assert_eq!(
            app.set_item(&alice, &cart, "mug", 2).await.status(),
            StatusCode::OK
        );
        let checkout = app.place_order(&alice, &cart).await;
        let id = checkout["orderId"].as_str().expect("id");
        let paid = body(id, "Success", 3799, "EUR");
        let webhook_id = format!("msg_effects_{round}");
        let answer = app
            .send_webhook(&webhook_id, app.now(), &paid, WEBHOOK_SECRET)
            .await;
        assert_eq!(answer.status(), StatusCode::OK);

        let (status, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cart_body["items"], json!([]), "round {round}: cart emptied");
        assert_eq!(cart_body["locked"], false, "round {round}: cart unlocked");
        assert_eq!(app.order(&alice, id).await["status"], "processing");
    }
    assert_eq!(app.available("tee").await, 80);
    assert_eq!(app.available("mug").await, 60);
    app.stop().await;
}

/// The value of an unlabelled counter, scraped now.
async fn counter(app: &kassa_testkit::app::TestApp, name: &str) -> f64 {
    kassa_testkit::app::sample(&app.scrape().await, name)
}

#[actix_web::test]
async fn an_amount_mismatch_is_counted_in_metrics() {
    const MISMATCHES: &str = "kassa_webhook_amount_mismatch_total";
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let checkout = app.place_order(&alice, &cart).await;
    let id = checkout["orderId"].as_str().expect("id");
    let before = counter(&app, MISMATCHES).await;
    let cheap = body(id, "Success", 1, "EUR");
    let response = app
        .send_webhook("msg_counted", app.now(), &cheap, WEBHOOK_SECRET)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    app.wait_for_status(&alice, id, "refund_pending").await;
    let after = counter(&app, MISMATCHES).await;
    assert!(
        after >= before + 1.0,
        "{MISMATCHES} went from {before} to {after}"
    );
    app.stop().await;
}
