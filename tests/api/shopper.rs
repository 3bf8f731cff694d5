//! The shopper's side of API.md v1.1 over real HTTP: checkout sessions and the hosted
//! checkout page, the order page and its token, cancel, order numbers, the catalog listing,
//! PATCH of a product, and the demo shop existing in development only.

use kassa_testkit::app::{TestApp, assert_error, json_of, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Posts a form as a browser does (urlencoded), not following the answer's redirect.
async fn post_form(url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    browser()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).expect("form"))
        .send()
        .await
        .expect("request")
}

/// The shopper pages and calls these tests make, on top of the kit's `TestApp`.
trait ShopperPages {
    async fn open_session(&self, token: &str, body: Value) -> (StatusCode, Value);
    async fn session_with(&self, sub: &str, sku: &str, quantity: i64) -> (String, String, String);
    async fn page(&self, url: &str) -> (StatusCode, String);
    async fn submit(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, String);
    async fn patch_product(&self, token: &str, sku: &str, body: Value) -> (StatusCode, Value);
    async fn wait_for_available(&self, sku: &str, available: i64);
    async fn cancel(&self, token: &str, order_id: &str) -> reqwest::Response;
}

impl ShopperPages for TestApp {
    async fn open_session(&self, token: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/api/checkout-sessions"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        json_of(response).await
    }

    /// A session for a new cart of `sub` holding `quantity` of `sku`; (token, cart, page URL).
    async fn session_with(&self, sub: &str, sku: &str, quantity: i64) -> (String, String, String) {
        let (token, cart) = self.cart_with(sub, sku, quantity).await;
        let (status, session) = self
            .open_session(
                &token,
                json!({"cartId": cart, "reviewCartUrl": "https://shop.example/cart"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{session}");
        (
            token,
            cart,
            session["url"].as_str().expect("url").to_string(),
        )
    }

    async fn page(&self, url: &str) -> (StatusCode, String) {
        let response = browser().get(url).send().await.expect("request");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    /// Submits the checkout form; the status, the Location (on a 303) and the page.
    async fn submit(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, String) {
        let response = post_form(url, form).await;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().expect("ascii").to_string());
        (status, location, response.text().await.expect("body"))
    }

    async fn patch_product(&self, token: &str, sku: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .patch(self.url(&format!("/api/admin/products/{sku}")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        json_of(response).await
    }

    /// Polls until `sku` shows `available` units (reads show what is durable; a release
    /// queued behind a write in flight lands a moment later).
    async fn wait_for_available(&self, sku: &str, available: i64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let now = self.available(sku).await;
            if now == available {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{sku}: {now} available, waited for {available}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn cancel(&self, token: &str, order_id: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/orders/{order_id}/cancel")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }
}

const ADDRESS: &[(&str, &str)] = &[
    ("name", "Alice Doe"),
    ("line1", "1 Main St"),
    ("city", "Berlin"),
    ("postalCode", "10115"),
    ("country", "DE"),
    ("email", "alice@example.com"),
    ("paymentMethod", "card"),
];

fn form_with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form: Vec<_> = ADDRESS
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .copied()
        .collect();
    form.extend_from_slice(extra);
    form
}

#[actix_web::test]
async fn a_checkout_session_opens_the_hosted_page_for_the_owners_cart_only() {
    let app = spawn_app().await;
    app.put_product("sess-tee", 1999, "EUR", 10).await;
    let (token, cart) = app.cart_with("alice", "sess-tee", 2).await;
    let (status, session) = app.open_session(&token, json!({"cartId": cart})).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["sessionId"].as_str().expect("sessionId");
    assert!(id.len() >= 40, "at least 128 random bits: {id}");
    assert_eq!(session["url"], app.url(&format!("/checkout/{id}")).as_str());
    assert!(session["expiresAt"].is_string());

    let (status, page) = app.page(session["url"].as_str().expect("url")).await;
    assert_eq!(status, StatusCode::OK);
    for text in [
        "<h1>Checkout</h1>",
        "Product sess-tee",
        "€39.98",
        "Full name",
        "Address line 2 (optional)",
        "Postal code",
        "Payment method",
        "Place order",
        "alice@example.com",
    ] {
        assert!(page.contains(text), "the page lacks {text:?}");
    }
    assert!(!page.contains("Back to cart"), "no reviewCartUrl, no link");

    // Someone else's cart is not found; an empty cart cannot be checked out; URLs are checked.
    let bob = app.token("bob", false);
    let (status, _) = app.open_session(&bob, json!({"cartId": cart})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let empty = app.create_cart(&bob).await;
    let (status, body) = app.open_session(&bob, json!({"cartId": empty})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cart_empty"))
    );
    let (status, body) = app
        .open_session(
            &token,
            json!({"cartId": cart, "cancelUrl": "javascript:alert(1)"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["details"][0]["field"], "cancelUrl");
    let response = app
        .client
        .post(app.url("/api/checkout-sessions"))
        .json(&json!({"cartId": cart}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // An unknown or expired session is an HTML 404 saying the link expired.
    let (status, page) = app.page(&app.url("/checkout/cs_nothing_here")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("This checkout link has expired"), "{page}");
    app.clock.advance(time::Duration::minutes(61));
    let (status, _) = app.page(session["url"].as_str().expect("url")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[actix_web::test]
async fn a_checkout_session_survives_a_restart() {
    let app = spawn_app().await;
    app.put_product("sess-keep", 500, "EUR", 5).await;
    let (_, _, url) = app.session_with("alice", "sess-keep", 1).await;
    let app = app.restart().await;
    let (status, page) = app.page(&url).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Product sess-keep"));
    app.stop().await;
}

#[actix_web::test]
async fn placing_from_the_page_redirects_to_the_gateway_and_a_double_submit_places_one_order() {
    let app = spawn_app().await;
    app.put_product("page-tee", 1999, "EUR", 10).await;
    let (token, cart, url) = app.session_with("alice", "page-tee", 3).await;
    let form = form_with(&[("key", "one-time-key-1")]);
    let (first, second) = tokio::join!(app.submit(&url, &form), app.submit(&url, &form));
    assert_eq!(first.0, StatusCode::SEE_OTHER, "{}", first.2);
    assert_eq!(second.0, StatusCode::SEE_OTHER, "{}", second.2);
    let payment = first.1.expect("Location");
    assert_eq!(
        second.1.as_deref(),
        Some(payment.as_str()),
        "both go to one payment"
    );
    assert!(payment.contains("/sandbox/pay/"), "{payment}");
    assert_eq!(app.available("page-tee").await, 7, "reserved once");
    let list = app
        .client
        .get(app.url("/api/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    let (_, list) = json_of(list).await;
    let orders = list["orders"].as_array().expect("orders");
    assert_eq!(orders.len(), 1, "one order: {list}");
    assert_eq!(orders[0]["shippingDetails"]["email"], "alice@example.com");
    // The cart is locked by it.
    let (status, cart) = json_of(app.get_cart(&token, &cart).await).await;
    assert_eq!(
        (status, cart["locked"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    app.stop().await;
}

#[actix_web::test]
async fn invalid_fields_come_back_marked_with_what_was_typed() {
    let app = spawn_app().await;
    app.put_product("page-bad", 1999, "EUR", 10).await;
    let (_, _, url) = app.session_with("alice", "page-bad", 1).await;
    let form = form_with(&[
        ("postalCode", "12#45!"),
        ("line1", ""),
        ("key", "k-invalid"),
    ]);
    let (status, _, page) = app.submit(&url, &form).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains(r#"id="f-postalCode" name="postalCode" type="text" value="12#45!""#),
        "typed value kept"
    );
    assert!(
        page.contains(r#"aria-invalid="true" aria-describedby="e-postalCode""#),
        "marked: {page}"
    );
    assert!(page.contains(r#"id="e-postalCode">Postal code must be"#));
    assert!(page.contains(r#"id="e-line1">Address line 1 "#));
    assert!(page.contains(r#"value="Alice Doe""#));
    assert_eq!(app.available("page-bad").await, 10, "nothing reserved");
    app.stop().await;
}

#[actix_web::test]
async fn a_changed_price_and_a_sold_out_line_are_said_in_words_and_the_cart_can_be_updated() {
    let app = spawn_app().await;
    app.put_product("conf-tee", 1999, "EUR", 10).await;
    app.put_product("conf-mug", 1250, "EUR", 10).await;
    app.put_product("conf-cap", 900, "EUR", 10).await;
    let (token, cart) = app.cart_with("alice", "conf-tee", 2).await;
    app.set_item(&token, &cart, "conf-mug", 1).await;
    app.set_item(&token, &cart, "conf-cap", 5).await;
    let (_, session) = app
        .open_session(
            &token,
            json!({"cartId": cart, "reviewCartUrl": "https://shop.example/cart"}),
        )
        .await;
    let url = session["url"].as_str().expect("url");
    let admin = app.admin();
    app.patch_product(&admin, "conf-tee", json!({"price": 2499}))
        .await;
    app.patch_product(&admin, "conf-mug", json!({"stock": 0}))
        .await;
    app.patch_product(&admin, "conf-cap", json!({"stock": 3}))
        .await;

    let (status, _, page) = app.submit(url, &form_with(&[("key", "k-409")])).await;
    assert_eq!(status, StatusCode::CONFLICT);
    for text in [
        "<h1>Items not available or prices changed</h1>",
        "Price changed from €19.99 to €24.99",
        "No longer available",
        "Only 3 left",
        r#"cart">Review cart</a>"#,
        "Update cart and continue",
        r#"value="Alice Doe""#,
    ] {
        assert!(page.contains(text), "the 409 page lacks {text:?}: {page}");
    }

    let (status, _, page) = app
        .submit(
            url,
            &form_with(&[("key", "k-update"), ("action", "update-cart")]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<h1>Checkout</h1>"));
    assert!(
        page.contains(r#"value="Alice Doe""#),
        "what was typed is kept"
    );
    let (_, updated) = json_of(app.get_cart(&token, &cart).await).await;
    let lines: Vec<(String, i64, i64)> = updated["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap_or_default().to_string(),
                l["quantity"].as_i64().unwrap_or(0),
                l["unitPrice"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(lines.len(), 2, "the sold-out line went: {updated}");
    assert!(
        lines.contains(&("conf-tee".into(), 2, 2499)),
        "today's price: {lines:?}"
    );
    assert!(
        lines.contains(&("conf-cap".into(), 3, 900)),
        "what is left: {lines:?}"
    );

    let (status, location, _) = app.submit(url, &form_with(&[("key", "k-after")])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.expect("Location").contains("/sandbox/pay/"));
    assert_eq!(app.available("conf-cap").await, 0);
    app.stop().await;
}

#[actix_web::test]
async fn an_unreachable_gateway_keeps_the_form_and_says_nothing_was_charged() {
    let app = spawn_app_with(|raw| raw.gateway = Some("http://127.0.0.1:9".into())).await;
    app.put_product("page-502", 1999, "EUR", 10).await;
    let (_, _, url) = app.session_with("alice", "page-502", 1).await;
    let (status, _, page) = app.submit(&url, &form_with(&[("key", "k-502")])).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(page.contains("The payment service could not be reached. Nothing was charged."));
    assert!(page.contains(r#"value="Alice Doe""#));
    assert_eq!(app.available("page-502").await, 10);
    app.stop().await;
}

#[actix_web::test]
async fn the_order_page_needs_its_token_and_says_the_status() {
    let app = spawn_app().await;
    app.put_product("op-tee", 1999, "EUR", 10).await;
    let (_, _, url) = app.session_with("alice", "op-tee", 1).await;
    let (_, payment_url, _) = app.submit(&url, &form_with(&[("key", "k-op")])).await;
    let payment_url = payment_url.expect("Location");
    // Paying at the sandbox's page sends the shopper to the returnUrl: the order page.
    let decided = post_form(&payment_url, &[("outcome", "success")]).await;
    assert_eq!(decided.status(), StatusCode::SEE_OTHER);
    let order_page = decided.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        order_page.starts_with(&app.url("/orders/")) && order_page.contains("?t="),
        "{order_page}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let page = loop {
        let (status, page) = app.page(&order_page).await;
        assert_eq!(status, StatusCode::OK);
        if page.contains("Thank you! Your order is confirmed") {
            break page;
        }
        assert!(
            page.contains("Waiting for your payment") && page.contains(r#"http-equiv="refresh""#),
            "{page}"
        );
        assert!(std::time::Instant::now() < deadline, "never confirmed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let order_id = order_page
        .split("/orders/")
        .nth(1)
        .and_then(|rest| rest.split('?').next())
        .expect("order id");
    let admin = app.admin();
    let order = app.order(&admin, order_id).await;
    let number = order["orderNumber"].as_str().expect("orderNumber");
    assert!(page.contains(number), "the page shows {number}");
    assert!(page.contains("10115 Berlin"));
    assert!(
        !page.contains(r#"http-equiv="refresh""#),
        "a settled order stops refreshing"
    );

    for wrong in ["", "?t=", "?t=AAAAAAAAAAAAAAAAAAAAAA"] {
        let (status, page) = app
            .page(&app.url(&format!("/orders/{order_id}{wrong}")))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{wrong}");
        assert!(page.contains("We could not find this order"));
    }
    let token = order_page.split("?t=").nth(1).expect("token");
    let other = uuid::Uuid::now_v7();
    let (status, _) = app
        .page(&app.url(&format!("/orders/{other}?t={token}")))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a token opens its own order only"
    );
    app.stop().await;
}

#[actix_web::test]
async fn cancelling_a_pending_order_releases_everything_and_only_a_pending_one_can_be() {
    let app = spawn_app().await;
    app.put_product("cx-tee", 1999, "EUR", 10).await;
    let (token, cart) = app.cart_with("alice", "cx-tee", 4).await;
    let placed = app.place_order(&token, &cart).await;
    let id = placed["orderId"].as_str().expect("orderId");
    assert_eq!(app.available("cx-tee").await, 6);

    let bob = app.token("bob", false);
    assert_error(
        app.cancel(&bob, id).await,
        StatusCode::NOT_FOUND,
        "order_not_found",
    )
    .await;
    let (status, order) = json_of(app.cancel(&token, id).await).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "cancelled");
    app.wait_for_available("cx-tee", 10).await;
    let response = app.set_item(&token, &cart, "cx-tee", 2).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the cart is editable at once"
    );
    let (_, cart_now) = json_of(app.get_cart(&token, &cart).await).await;
    assert_eq!(cart_now["locked"], false);
    let statuses: Vec<_> = order["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["status"].clone())
        .collect();
    assert_eq!(statuses, [json!("pending_payment"), json!("cancelled")]);
    // Cancelling again answers the same; the payment can no longer be paid.
    let (status, again) = json_of(app.cancel(&token, id).await).await;
    assert_eq!(
        (status, again["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let payment_id = placed["paymentUrl"]
        .as_str()
        .expect("paymentUrl")
        .rsplit('/')
        .next()
        .expect("id")
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let payment = app
            .client
            .get(app.url(&format!("/sandbox/payments/{payment_id}")))
            .send()
            .await
            .expect("request");
        let (status, payment) = json_of(payment).await;
        assert_eq!(status, StatusCode::OK);
        if payment["status"] == "failed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the payment was not cancelled: {payment}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // A paid order cannot be cancelled; an admin may cancel anyone's pending order.
    let (token2, cart2) = app.cart_with("carol", "cx-tee", 1).await;
    let paid = app.place_order(&token2, &cart2).await;
    let paid_id = paid["orderId"].as_str().expect("orderId");
    app.decide(&paid, "success").await;
    app.wait_for_status(&token2, paid_id, "processing").await;
    assert_error(
        app.cancel(&token2, paid_id).await,
        StatusCode::CONFLICT,
        "order_not_cancellable",
    )
    .await;
    let (token3, cart3) = app.cart_with("dave", "cx-tee", 1).await;
    let pending = app.place_order(&token3, &cart3).await;
    let (status, _) = json_of(
        app.cancel(&app.admin(), pending["orderId"].as_str().expect("id"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[actix_web::test]
async fn the_payment_pages_cancel_link_cancels_and_returns_to_the_checkout() {
    let app = spawn_app().await;
    app.put_product("cl-tee", 1999, "EUR", 10).await;
    let (token, cart, url) = app.session_with("alice", "cl-tee", 2).await;
    let (_, _, _) = app.submit(&url, &form_with(&[("key", "k-cl")])).await;
    assert_eq!(app.available("cl-tee").await, 8);
    let list = app
        .client
        .get(app.url("/api/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    let (_, list) = json_of(list).await;
    let id = list["orders"][0]["orderId"]
        .as_str()
        .expect("orderId")
        .to_string();
    let links = &app.state().links;
    let session_id = url.rsplit('/').next().expect("session id");
    let cancel_url = links.cancel_url(
        kassa_actors::domain::OrderId::parse(&id).expect("id"),
        Some(session_id),
    );
    let response = browser().get(&cancel_url).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"].to_str().expect("ascii"),
        url,
        "back to the checkout page"
    );
    app.wait_for_available("cl-tee", 10).await;
    assert_eq!(
        app.set_item(&token, &cart, "cl-tee", 1).await.status(),
        StatusCode::OK
    );
    // A forged link changes nothing.
    let forged = cancel_url.replace("?t=", "?t=x");
    assert_eq!(
        browser()
            .get(&forged)
            .send()
            .await
            .expect("request")
            .status(),
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[actix_web::test]
async fn every_order_has_a_short_readable_number_in_the_api() {
    let app = spawn_app().await;
    app.put_product("num-tee", 100, "EUR", 1000).await;
    let mut numbers = HashSet::new();
    let token = app.token("alice", false);
    for _ in 0..40 {
        let cart = app.create_cart(&token).await;
        app.set_item(&token, &cart, "num-tee", 1).await;
        let placed = app.place_order(&token, &cart).await;
        let order = app
            .order(&token, placed["orderId"].as_str().expect("id"))
            .await;
        let number = order["orderNumber"]
            .as_str()
            .expect("orderNumber")
            .to_string();
        assert!(number.starts_with("K-") && number.len() == 13, "{number}");
        numbers.insert(number);
        app.cancel(&token, placed["orderId"].as_str().expect("id"))
            .await;
    }
    assert_eq!(numbers.len(), 40, "no two equal");
    let list = app
        .client
        .get(app.url("/api/orders?limit=5"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    let (_, list) = json_of(list).await;
    assert!(
        list["orders"]
            .as_array()
            .expect("orders")
            .iter()
            .all(|o| o["orderNumber"].is_string())
    );
    app.stop().await;
}

#[actix_web::test]
async fn the_catalog_lists_in_sku_order_a_page_at_a_time() {
    let app = spawn_app().await;
    for sku in ["zz-list-c", "zz-list-a", "zz-list-d", "zz-list-b"] {
        app.put_product(sku, 100, "EUR", 1).await;
    }
    let admin = app.admin();
    let response = app
        .client
        .delete(app.url("/api/admin/products/zz-list-c"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let mut skus = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = app.url("/api/products?limit=2");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = json_of(app.client.get(url).send().await.expect("request")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let products = page["products"].as_array().expect("products");
        assert!(products.len() <= 2);
        for p in products {
            assert!(p["available"].is_i64() && p["price"].is_i64() && p["currency"].is_string());
            skus.push(p["sku"].as_str().expect("sku").to_string());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let ours: Vec<_> = skus
        .iter()
        .filter(|s| s.starts_with("zz-list-"))
        .cloned()
        .collect();
    assert_eq!(ours, ["zz-list-a", "zz-list-b", "zz-list-d"]);
    let mut sorted = skus.clone();
    sorted.sort();
    assert_eq!(skus, sorted, "sku order across pages");
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "cursor=%%%",
        "cursor=AAAA",
    ] {
        let response = app
            .client
            .get(app.url(&format!("/api/products?{bad}")))
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
async fn patch_changes_only_the_given_fields_and_a_price_edit_keeps_the_stock() {
    let app = spawn_app().await;
    app.put_product("patch-tee", 1999, "EUR", 10).await;
    let (token, cart) = app.cart_with("alice", "patch-tee", 3).await;
    app.place_order(&token, &cart).await;
    assert_eq!(app.available("patch-tee").await, 7);
    let admin = app.admin();
    let (status, product) = app
        .patch_product(&admin, "patch-tee", json!({"price": 2499}))
        .await;
    assert_eq!(status, StatusCode::OK, "{product}");
    assert_eq!(product["price"], 2499);
    assert_eq!(
        product["available"], 7,
        "stock and reservations as they were"
    );
    assert_eq!(product["name"], "Product patch-tee");
    let (_, product) = app
        .patch_product(&admin, "patch-tee", json!({"name": "Tee", "stock": 20}))
        .await;
    assert_eq!(
        (
            product["name"].as_str(),
            product["available"].as_i64(),
            product["price"].as_i64()
        ),
        (Some("Tee"), Some(17), Some(2499))
    );

    let (status, body) = app
        .patch_product(&admin, "no-such-sku", json!({"price": 1}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("product_not_found"))
    );
    let (status, _) = app
        .patch_product(&token, "patch-tee", json!({"price": 1}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .patch_product(
            &admin,
            "patch-tee",
            json!({"price": -1, "currency": "EURO"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["details"].as_array().map(Vec::len), Some(2), "{body}");
    app.stop().await;
}

#[actix_web::test]
async fn the_demo_shop_exists_in_development_only() {
    let dev = spawn_app().await;
    let (status, page) = dev.page(&dev.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("<h1>Demo shop</h1>")
            && page.contains("Kassa T-shirt")
            && page.contains("Add to cart")
    );
    assert_eq!(
        dev.available("kassa-tee").await,
        100,
        "demo products created on an empty catalog"
    );
    dev.stop().await;

    let prod = spawn_app_with(|raw| {
        raw.env = Some("production".into());
        raw.jwt_secret = Some("integration-test-secret-of-32-bytes".into());
    })
    .await;
    let (status, _) = prod.page(&prod.url("/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = json_of(prod.get_product("kassa-tee").await).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no demo product in production"
    );
    let (status, body) = json_of(
        prod.client
            .get(prod.url("/api/products"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, body["products"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    prod.stop().await;
}

#[actix_web::test]
async fn cors_answers_the_configured_origins_only() {
    let app = spawn_app_with(|raw| {
        raw.cors_origins = Some("https://shop.example,http://localhost:3000".into());
    })
    .await;
    let preflight = |origin: &'static str, path: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://shop.example", "/api/orders")
        .await
        .expect("request");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    assert!(
        allowed_headers.contains("authorization") && allowed_headers.contains("idempotency-key"),
        "{allowed_headers}"
    );

    let refused = preflight("https://evil.example", "/api/orders")
        .await
        .expect("request");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let token = app.token("alice", false);
    let get = |origin: &'static str| {
        app.client
            .post(app.url("/api/carts"))
            .bearer_auth(&token)
            .header("Origin", origin)
            .send()
    };
    let ok = get("http://localhost:3000").await.expect("request");
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let other = get("https://evil.example").await.expect("request");
    assert_eq!(
        other.status(),
        StatusCode::CREATED,
        "served, without CORS headers"
    );
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // Only the API: the pages and operations never answer other origins.
    let health = app
        .client
        .get(app.url("/healthz"))
        .header("Origin", "https://shop.example")
        .send()
        .await
        .expect("request");
    assert!(
        health
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    app.stop().await;

    let closed = spawn_app().await;
    let response = closed
        .client
        .get(closed.url("/api/products"))
        .header("Origin", "https://shop.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no origins by default"
    );
    closed.stop().await;
}
