//! `KASSA_GATEWAY=stripe` against a real Stripe-compatible server: localstripe (from PyPI),
//! at `KASSA_TEST_LOCALSTRIPE` or started here by scripts/localstripe.sh. Checkout opens a
//! PaymentIntent there, localstripe confirms it and delivers its own signed
//! `payment_intent.*` events to `POST /webhook/stripe`, and the adapter refunds and reads
//! intents there. What localstripe cannot play (retries, `Stripe-Should-Retry`, an already
//! refunded charge) is scripted by a stub Stripe on port 0.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use kassa::gateway::stripe::{StripeGateway, StripeSettings};
use kassa_actors::domain::{Currency, OrderId};
use kassa_actors::gateway::{CancelOutcome, Gateway, GatewayError, PaymentRequest, PaymentState};
use kassa_testkit::app::{TestApp, assert_error, json_of, spawn_app_with};
use kassa_testkit::records;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const API_KEY: &str = "sk_test_kassa";
const ENDPOINT_SECRET: &str = "whsec_kassa_test_endpoint_secret";
const STOREFRONT: &str = "https://shop.test";
/// A card localstripe charges.
const CARD_OK: &str = "4242424242424242";
/// A card localstripe declines when charged.
const CARD_DECLINED: &str = "4000000000000341";

/// localstripe's base URL: `KASSA_TEST_LOCALSTRIPE`, else the server scripts/localstripe.sh
/// starts (or finds running). No localstripe fails the test: it is never skipped.
fn localstripe() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = std::env::var("KASSA_TEST_LOCALSTRIPE")
            .ok()
            .filter(|u| !u.is_empty())
        {
            return url.trim_end_matches('/').to_string();
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/localstripe.sh");
        let output = std::process::Command::new(script)
            .args(["start", "--port", "0"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            output.status.success(),
            "{script} start failed (set KASSA_TEST_LOCALSTRIPE to use a running one): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("the script prints a URL")
            .trim()
            .to_string()
    })
}

/// Talks to localstripe as the storefront's backend and Stripe's dashboard would.
struct Stripe {
    base: String,
    client: reqwest::Client,
}

impl Stripe {
    fn new() -> Self {
        Self {
            base: localstripe().to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("localstripe answers");
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).expect("form"))
            .send()
            .await
            .expect("localstripe answers");
        json_of(response).await
    }

    /// Pays `intent` with `card` as Stripe Elements would: a card PaymentMethod, set on the
    /// intent, then confirmed. Answers the confirmation's status and body.
    async fn pay(&self, intent: &str, card: &str) -> (StatusCode, Value) {
        let (status, method) = self
            .post(
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", card),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "payment method: {method}");
        let method = method["id"].as_str().expect("pm id");
        let (status, body) = self
            .post(
                &format!("/v1/payment_intents/{intent}"),
                &[("payment_method", method)],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "attach: {body}");
        self.post(&format!("/v1/payment_intents/{intent}/confirm"), &[])
            .await
    }

    /// Has localstripe deliver `payment_intent.*` events to `app`, signed with the endpoint
    /// secret. Registrations are global to localstripe and cannot be removed, so each test
    /// overwrites its own under a fixed name.
    async fn deliver_events_to(&self, name: &str, app: &TestApp) {
        let response = self
            .client
            .post(format!("{}/_config/webhooks/{name}", self.base))
            .json(&json!({
                "url": app.url("/webhook/stripe"),
                "secret": ENDPOINT_SECRET,
                "events": ["payment_intent.succeeded", "payment_intent.payment_failed"],
            }))
            .send()
            .await
            .expect("localstripe answers");
        assert_eq!(response.status(), StatusCode::OK, "webhook registration");
    }
}

fn gateway_at(api_base: &str, api_key: &str) -> StripeGateway {
    StripeGateway::new(StripeSettings {
        api_key: api_key.into(),
        api_base: Url::parse(api_base).expect("url"),
        storefront_url: Url::parse(STOREFRONT).expect("url"),
    })
    .expect("gateway")
}

fn payment_request(amount: i64) -> PaymentRequest {
    PaymentRequest {
        amount,
        callback_url: "http://127.0.0.1:1/webhook/payment-status".into(),
        return_url: format!("{STOREFRONT}/orders/"),
        ..records::payment_request(OrderId::new())
    }
}

async fn stripe_app() -> TestApp {
    spawn_app_with(|raw| {
        raw.gateway = Some("stripe".into());
        raw.stripe_api_key = Some(API_KEY.into());
        raw.stripe_api_base = Some(localstripe().into());
        raw.stripe_webhook_secret = Some(ENDPOINT_SECRET.into());
        raw.storefront_url = Some(STOREFRONT.into());
    })
    .await
}

/// `t=...,v1=...` for `body` at `timestamp`, computed here independently of the route.
fn stripe_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mac = hmac_sha256::HMAC::mac(format!("{timestamp}.{body}"), secret);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// An event as Stripe builds it around `object`.
fn event(id: &str, kind: &str, created: i64, object: &Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": created, "livemode": false,
           "api_version": "2024-06-20", "data": {"object": object}})
    .to_string()
}

/// Stripe's webhook deliveries and a pending order, on top of the kit's `TestApp`.
trait StripeEvents {
    async fn send_stripe_event(&self, body: &str, signature: Option<&str>) -> reqwest::Response;
    async fn send_signed_event(&self, body: &str) -> reqwest::Response;
    async fn pending_order(&self, sub: &str) -> (String, Value);
}

impl StripeEvents for TestApp {
    async fn send_stripe_event(&self, body: &str, signature: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/webhook/stripe"))
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string());
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        request.send().await.expect("request")
    }

    async fn send_signed_event(&self, body: &str) -> reqwest::Response {
        let signature = stripe_signature(ENDPOINT_SECRET, self.now(), body);
        self.send_stripe_event(body, Some(&signature)).await
    }

    /// A shopper's pending order for one `tee` at 19.99 EUR; answers (token, checkout body).
    async fn pending_order(&self, sub: &str) -> (String, Value) {
        let (token, cart) = self.cart_with(sub, "tee", 1).await;
        let checkout = self.place_order(&token, &cart).await;
        (token, checkout)
    }
}

fn history(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str().map(str::to_string))
        .collect()
}

fn intent_of(checkout: &Value) -> String {
    let url = Url::parse(checkout["paymentUrl"].as_str().expect("paymentUrl")).expect("url");
    url.query_pairs()
        .find(|(k, _)| k == "payment_intent")
        .map(|(_, v)| v.into_owned())
        .expect("payment_intent in paymentUrl")
}

#[actix_web::test]
async fn checkout_opens_a_payment_intent_at_stripe_for_the_order() {
    let app = stripe_app().await;
    let stripe = Stripe::new();
    app.put_product("tee", 1999, "EUR", 5).await;
    let (token, checkout) = app.pending_order("alice").await;
    let order_id = checkout["orderId"].as_str().expect("orderId");
    let intent_id = intent_of(&checkout);
    assert_eq!(
        checkout["paymentUrl"],
        format!("{STOREFRONT}/pay/{order_id}?payment_intent={intent_id}")
    );

    let intent = stripe
        .get(&format!("/v1/payment_intents/{intent_id}"))
        .await;
    assert_eq!(intent["amount"], 1999);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["metadata"]["order_id"], order_id);
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(
        checkout["paymentToken"], intent["client_secret"],
        "the storefront mounts Elements with the client secret"
    );
    let order = app.order(&token, order_id).await;
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["paymentId"], intent_id.as_str());
    app.stop().await;
}

#[actix_web::test]
async fn a_payment_confirmed_at_stripe_is_delivered_signed_and_the_order_goes_processing() {
    let app = stripe_app().await;
    let stripe = Stripe::new();
    stripe.deliver_events_to("kassa-test-success", &app).await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (token, checkout) = app.pending_order("alice").await;
    let order_id = checkout["orderId"].as_str().expect("orderId");
    let intent_id = intent_of(&checkout);

    let before = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
    let (status, confirmed) = stripe.pay(&intent_id, CARD_OK).await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    assert_eq!(confirmed["status"], "succeeded");
    // localstripe signs `payment_intent.succeeded` with the endpoint secret and posts it.
    let order = app.wait_for_status(&token, order_id, "processing").await;
    assert_eq!(history(&order), ["pending_payment", "processing"]);
    assert_eq!(order["paymentId"], intent_id.as_str());
    assert_eq!(app.available("tee").await, 4);

    // The same event again, as Stripe redelivers: acknowledged, no second effect.
    let events = stripe
        .get(&format!(
            "/v1/events?type=payment_intent.succeeded&created[gte]={before}&limit=100"
        ))
        .await;
    let delivered = events["data"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["data"]["object"]["id"] == intent_id.as_str())
        .expect("localstripe recorded the event")
        .to_string();
    let (status, body) = json_of(app.send_signed_event(&delivered).await).await;
    assert_eq!(
        (status, &body),
        (StatusCode::OK, &json!({"received": true}))
    );
    assert_eq!(history(&app.order(&token, order_id).await).len(), 2);
    assert_eq!(app.available("tee").await, 4);
    app.stop().await;
}

#[actix_web::test]
async fn a_card_declined_at_stripe_fails_the_order() {
    let app = stripe_app().await;
    let stripe = Stripe::new();
    stripe.deliver_events_to("kassa-test-declined", &app).await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (token, checkout) = app.pending_order("alice").await;
    let order_id = checkout["orderId"].as_str().expect("orderId");

    let (status, declined) = stripe.pay(&intent_of(&checkout), CARD_DECLINED).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{declined}");
    let order = app.wait_for_status(&token, order_id, "failed").await;
    assert_eq!(history(&order), ["pending_payment", "failed"]);
    assert_eq!(app.available("tee").await, 5, "the reservation is released");
    app.stop().await;
}

#[actix_web::test]
async fn forged_stale_or_missing_stripe_signatures_are_rejected_and_change_nothing() {
    let app = stripe_app().await;
    let stripe = Stripe::new();
    app.put_product("tee", 1999, "EUR", 5).await;
    let (token, checkout) = app.pending_order("alice").await;
    let order_id = checkout["orderId"].as_str().expect("orderId");
    let intent_id = intent_of(&checkout);
    let (status, paid) = stripe.pay(&intent_id, CARD_OK).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let now = app.now();
    let success = event("evt_forgery_1", "payment_intent.succeeded", now, &paid);

    let forged = stripe_signature("whsec_guessed_by_an_attacker", now, &success);
    let stale = stripe_signature(ENDPOINT_SECRET, now - 301, &success);
    let future = stripe_signature(ENDPOINT_SECRET, now + 301, &success);
    let other_body = event("evt_forgery_2", "payment_intent.succeeded", now, &paid);
    let for_another_body = stripe_signature(ENDPOINT_SECRET, now, &other_body);
    let (_, right) = stripe_signature(ENDPOINT_SECRET, now, &success)
        .split_once(",v1=")
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .expect("signature");
    let only_v0 = format!("t={now},v0={right}");
    let no_timestamp = format!("v1={right}");
    for signature in [
        Some(forged.as_str()),
        Some(stale.as_str()),
        Some(future.as_str()),
        Some(for_another_body.as_str()),
        Some(only_v0.as_str()),
        Some(no_timestamp.as_str()),
        Some(""),
        None,
    ] {
        let response = app.send_stripe_event(&success, signature).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    }
    let order = app.order(&token, order_id).await;
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(app.available("tee").await, 4, "still only reserved");

    // Signed right, the very same bytes are accepted.
    let response = app.send_signed_event(&success).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.wait_for_status(&token, order_id, "processing").await;
    app.stop().await;
}

#[actix_web::test]
async fn malformed_foreign_and_unknown_events_get_the_contracts_answers() {
    let app = stripe_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (token, checkout) = app.pending_order("alice").await;
    let order_id = checkout["orderId"].as_str().expect("orderId");
    let now = app.now();
    let intent = |order: Value| {
        json!({"id": "pi_test_1", "object": "payment_intent", "amount": 1999,
               "amount_received": 1999, "currency": "eur", "status": "succeeded",
               "metadata": order, "last_payment_error": null})
    };
    let ours = intent(json!({ "order_id": order_id }));

    let response = app.send_signed_event("{not json").await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
    for body in [
        json!({"id": "evt_1", "type": "payment_intent.succeeded"}).to_string(),
        json!({"type": "payment_intent.succeeded", "data": {"object": ours}}).to_string(),
        event(
            "evt_2",
            "payment_intent.succeeded",
            now,
            &json!({"id": "pi_1"}),
        ),
        event(
            "evt_3",
            "payment_intent.succeeded",
            now,
            &intent(json!({"order_id": "not-a-uuid"})),
        ),
    ] {
        let response = app.send_signed_event(&body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_payload").await;
    }
    let unknown = intent(json!({"order_id": OrderId::new().to_string()}));
    let response = app
        .send_signed_event(&event("evt_4", "payment_intent.succeeded", now, &unknown))
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "order_not_found").await;

    // Other event types, and intents Kassa did not open, are acknowledged and ignored.
    for body in [
        event("evt_5", "charge.refunded", now, &json!({"id": "ch_1"})),
        event("evt_6", "payment_intent.created", now, &ours),
        event("evt_7", "payment_intent.succeeded", now, &intent(json!({}))),
    ] {
        let (status, answer) = json_of(app.send_signed_event(&body).await).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        assert_eq!(answer, json!({"received": true}));
    }
    assert_eq!(
        app.order(&token, order_id).await["status"],
        "pending_payment"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_late_payment_without_stock_left_is_refunded_at_stripe() {
    let app = stripe_app().await;
    let stripe = Stripe::new();
    app.put_product("tee", 1999, "EUR", 1).await;
    let (alice, checkout) = app.pending_order("alice").await;
    let order_id = checkout["orderId"].as_str().expect("orderId");
    let intent_id = intent_of(&checkout);
    app.expire_pending_orders().await;
    app.wait_for_status(&alice, order_id, "expired").await;
    // Bob takes the last unit meanwhile.
    let (_bob, bobs) = app.pending_order("bob").await;
    assert_eq!(bobs["status"], "pending_payment");

    // Alice pays the intent she still holds; Stripe reports it.
    let (status, paid) = stripe.pay(&intent_id, CARD_OK).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let body = event("evt_late_1", "payment_intent.succeeded", app.now(), &paid);
    assert_eq!(app.send_signed_event(&body).await.status(), StatusCode::OK);

    let order = app.wait_for_status(&alice, order_id, "refunded").await;
    assert_eq!(
        history(&order),
        ["pending_payment", "expired", "refund_pending", "refunded"]
    );
    let refunds = stripe
        .get(&format!("/v1/refunds?payment_intent={intent_id}"))
        .await;
    let refunds = refunds["data"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["amount"], 1999);
    assert_eq!(refunds[0]["status"], "succeeded");
    assert_eq!(app.available("tee").await, 0, "bob's reservation stands");
    app.stop().await;
}

#[actix_web::test]
async fn the_adapter_reads_intent_states_and_refunds_at_stripe() {
    let stripe = Stripe::new();
    let gateway = gateway_at(localstripe(), API_KEY);

    let request = payment_request(2500);
    let session = gateway.initiate(request.clone()).await.expect("initiate");
    assert!(session.payment_id.starts_with("pi_"), "{session:?}");
    let status = gateway.status(&session.payment_id).await.expect("status");
    assert_eq!(status.state, PaymentState::Pending);
    assert_eq!(status.order_id, request.order_id);
    assert_eq!((status.amount, status.currency), (2500, Currency::EUR));

    let (code, _) = stripe.pay(&session.payment_id, CARD_OK).await;
    assert_eq!(code, StatusCode::OK);
    let status = gateway.status(&session.payment_id).await.expect("status");
    assert_eq!(status.state, PaymentState::Succeeded);
    let refund_id = gateway.refund(&session.payment_id).await.expect("refund");
    let refund = stripe.get(&format!("/v1/refunds/{refund_id}")).await;
    assert_eq!(refund["payment_intent"], session.payment_id.as_str());
    assert_eq!(refund["amount"], 2500);
    assert_eq!(refund["status"], "succeeded");

    let declined = gateway
        .initiate(payment_request(700))
        .await
        .expect("initiate");
    let (code, _) = stripe.pay(&declined.payment_id, CARD_DECLINED).await;
    assert_eq!(code, StatusCode::PAYMENT_REQUIRED);
    let status = gateway.status(&declined.payment_id).await.expect("status");
    assert_eq!(
        status.state,
        PaymentState::Failed,
        "declined, waiting for another card"
    );

    let abandoned = gateway
        .initiate(payment_request(900))
        .await
        .expect("initiate");
    let (code, body) = stripe
        .post(
            &format!("/v1/payment_intents/{}/cancel", abandoned.payment_id),
            &[],
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let status = gateway.status(&abandoned.payment_id).await.expect("status");
    assert_eq!(status.state, PaymentState::Failed, "canceled");
}

#[actix_web::test]
async fn the_adapter_cancels_intents_at_stripe_and_tells_a_paid_one_apart() {
    let stripe = Stripe::new();
    let gateway = gateway_at(localstripe(), API_KEY);

    let mut request = payment_request(900);
    request.display.order_number = "K-7F3Q-9D2M".into();
    let abandoned = gateway.initiate(request).await.expect("initiate");
    assert_eq!(
        gateway.cancel(&abandoned.payment_id).await,
        Ok(CancelOutcome::Cancelled)
    );
    let intent = stripe
        .get(&format!("/v1/payment_intents/{}", abandoned.payment_id))
        .await;
    assert_eq!(intent["status"], "canceled");
    assert_eq!(intent["metadata"]["order_number"], "K-7F3Q-9D2M");
    let status = gateway.status(&abandoned.payment_id).await.expect("status");
    assert_eq!(status.state, PaymentState::Failed);
    assert_eq!(
        gateway.cancel(&abandoned.payment_id).await,
        Ok(CancelOutcome::Cancelled),
        "cancelling again (localstripe refuses it) answers the same"
    );
    let (code, _) = stripe.pay(&abandoned.payment_id, CARD_OK).await;
    assert_ne!(code, StatusCode::OK, "a canceled intent cannot be paid");

    let paid = gateway
        .initiate(payment_request(1200))
        .await
        .expect("initiate");
    let (code, _) = stripe.pay(&paid.payment_id, CARD_OK).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        gateway.cancel(&paid.payment_id).await,
        Ok(CancelOutcome::AlreadySucceeded)
    );
    let status = gateway.status(&paid.payment_id).await.expect("status");
    assert_eq!(status.state, PaymentState::Succeeded);

    let err = gateway
        .cancel("pi_does_not_exist")
        .await
        .expect_err("unknown intent");
    assert!(matches!(err, GatewayError::Refused(_)), "{err:?}");
}

#[actix_web::test]
async fn the_adapter_tells_refusals_from_outages() {
    let gateway = gateway_at(localstripe(), API_KEY);
    let err = gateway
        .status("pi_does_not_exist")
        .await
        .expect_err("unknown intent");
    assert!(matches!(err, GatewayError::Refused(_)), "{err:?}");
    let unauthorized = gateway_at(localstripe(), "not-a-secret-key");
    let err = unauthorized
        .initiate(payment_request(100))
        .await
        .expect_err("bad key");
    assert!(matches!(err, GatewayError::Refused(_)), "{err:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let err = gateway_at(&format!("http://127.0.0.1:{port}"), API_KEY)
        .initiate(payment_request(100))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, GatewayError::Unavailable(_)), "{err:?}");
}

// ---- a scripted Stripe, for answers localstripe never gives ----

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: String,
    idempotency_key: Option<String>,
    body: String,
}

/// One scripted answer: status, `Stripe-Should-Retry` (if sent) and JSON body.
struct Answer {
    status: u16,
    should_retry: Option<&'static str>,
    body: Value,
}

#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Script {
    fn answer(&self, status: u16, should_retry: Option<&'static str>, body: Value) {
        self.answers.lock().expect("lock").push_back(Answer {
            status,
            should_retry,
            body,
        });
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn scripted(req: HttpRequest, body: web::Bytes, script: web::Data<Script>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    script.seen.lock().expect("lock").push(Seen {
        path: req.uri().to_string(),
        authorization: header("authorization").unwrap_or_default(),
        idempotency_key: header("idempotency-key"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let next = script.answers.lock().expect("lock").pop_front();
    let answer = next.expect("an answer was scripted");
    let status = actix_web::http::StatusCode::from_u16(answer.status).expect("status");
    let mut response = HttpResponse::build(status);
    if let Some(value) = answer.should_retry {
        response.insert_header(("Stripe-Should-Retry", value));
    }
    response.json(answer.body)
}

/// A stub Stripe on port 0 answering from `script`; answers its base URL.
fn scripted_stripe(script: &Script) -> (String, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let data = web::Data::new(script.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(scripted))
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (format!("http://127.0.0.1:{port}"), handle)
}

fn intent_json(id: &str, order_id: OrderId) -> Value {
    json!({"id": id, "object": "payment_intent", "amount": 1999, "currency": "eur",
           "status": "requires_payment_method", "client_secret": format!("{id}_secret_x"),
           "metadata": {"order_id": order_id.to_string()}})
}

#[actix_web::test]
async fn creation_is_form_encoded_and_retried_under_the_order_id_as_idempotency_key() {
    let script = Script::default();
    let (base, server) = scripted_stripe(&script);
    let gateway = gateway_at(&base, API_KEY);
    let request = payment_request(1999);
    let overloaded = json!({"error": {"type": "api_error", "message": "try again"}});
    script.answer(500, None, overloaded.clone());
    script.answer(429, None, json!({"error": {"type": "rate_limit_error"}}));
    script.answer(200, None, intent_json("pi_retried", request.order_id));

    let session = gateway.initiate(request.clone()).await.expect("initiate");
    assert_eq!(session.payment_id, "pi_retried");
    assert_eq!(session.token, "pi_retried_secret_x");
    let seen = script.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let order_id = request.order_id.to_string();
    for attempt in &seen {
        assert_eq!(attempt.path, "/v1/payment_intents");
        assert_eq!(attempt.authorization, format!("Bearer {API_KEY}"));
        assert_eq!(attempt.idempotency_key.as_deref(), Some(order_id.as_str()));
        assert_eq!(
            attempt.body,
            format!("amount=1999&currency=eur&metadata%5Border_id%5D={order_id}")
        );
    }

    // Stripe says a retry would not help: one attempt, reported as an outage.
    script.answer(500, Some("false"), overloaded);
    let err = gateway
        .initiate(payment_request(1999))
        .await
        .expect_err("500");
    assert!(matches!(err, GatewayError::Unavailable(_)), "{err:?}");
    // A card error is a refusal, never retried.
    let declined = json!({"error": {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}});
    script.answer(402, None, declined);
    let err = gateway
        .initiate(payment_request(1999))
        .await
        .expect_err("402");
    assert!(
        matches!(&err, GatewayError::Refused(m) if m.contains("card_declined")),
        "{err:?}"
    );
    assert_eq!(script.seen().len(), 5);
    server.stop(true).await;
}

#[actix_web::test]
async fn a_refund_stripe_already_holds_is_answered_with_that_refund() {
    let script = Script::default();
    let (base, server) = scripted_stripe(&script);
    let gateway = gateway_at(&base, API_KEY);
    script.answer(
        400,
        None,
        json!({"error": {"type": "invalid_request_error", "code": "charge_already_refunded",
                          "message": "Charge ch_1 has already been refunded."}}),
    );
    script.answer(
        200,
        None,
        json!({"object": "list", "has_more": false, "data": [
            {"id": "re_failed", "status": "failed"},
            {"id": "re_dashboard", "status": "succeeded"},
        ]}),
    );

    let refund_id = gateway.refund("pi_paid").await.expect("refund");
    assert_eq!(refund_id, "re_dashboard");
    let seen = script.seen();
    assert_eq!(seen[0].path, "/v1/refunds");
    assert_eq!(seen[0].idempotency_key.as_deref(), Some("refund-pi_paid"));
    assert_eq!(seen[0].body, "payment_intent=pi_paid");
    assert_eq!(seen[1].path, "/v1/refunds?payment_intent=pi_paid&limit=100");
    server.stop(true).await;
}

#[actix_web::test]
async fn a_cancel_stripe_refuses_is_judged_by_the_intent_as_it_stands() {
    let script = Script::default();
    let (base, server) = scripted_stripe(&script);
    let gateway = gateway_at(&base, API_KEY);
    let unexpected_state = |status: &str| {
        json!({"error": {"type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                          "message": format!("You cannot cancel this PaymentIntent because it has a status of {status}.")}})
    };
    let order_id = OrderId::new();
    let intent = |status: &str| {
        let mut intent = intent_json("pi_x", order_id);
        intent["status"] = json!(status);
        intent
    };

    script.answer(400, None, unexpected_state("succeeded"));
    script.answer(200, None, intent("succeeded"));
    assert_eq!(
        gateway.cancel("pi_x").await,
        Ok(CancelOutcome::AlreadySucceeded)
    );
    let seen = script.seen();
    assert_eq!(seen[0].path, "/v1/payment_intents/pi_x/cancel");
    assert_eq!(seen[0].idempotency_key.as_deref(), Some("cancel-pi_x"));
    assert_eq!(seen[1].path, "/v1/payment_intents/pi_x");

    script.answer(400, None, unexpected_state("canceled"));
    script.answer(200, None, intent("canceled"));
    assert_eq!(gateway.cancel("pi_x").await, Ok(CancelOutcome::Cancelled));

    // Processing: Stripe has not decided yet; asking again later may tell.
    script.answer(400, None, unexpected_state("processing"));
    script.answer(200, None, intent("processing"));
    let err = gateway.cancel("pi_x").await.expect_err("processing");
    assert!(matches!(err, GatewayError::Unavailable(_)), "{err:?}");

    script.answer(503, None, json!({"error": {"type": "api_error"}}));
    script.answer(200, None, intent("canceled"));
    assert_eq!(gateway.cancel("pi_x").await, Ok(CancelOutcome::Cancelled));
    let retried: Vec<_> = script.seen().into_iter().skip(6).collect();
    assert!(
        retried
            .iter()
            .all(|s| s.path == "/v1/payment_intents/pi_x/cancel"
                && s.idempotency_key.as_deref() == Some("cancel-pi_x")),
        "{retried:?}"
    );
    server.stop(true).await;
}

#[actix_web::test]
async fn a_stripe_that_never_answers_is_unavailable_at_the_deadline_retries_included() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let api_base = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let stripe = gateway_at(&api_base, "sk_test_silent").with_deadline(Duration::from_millis(800));
    let started = std::time::Instant::now();

    let result = stripe.initiate(payment_request(1999)).await;

    let elapsed = started.elapsed();
    match result {
        Err(GatewayError::Unavailable(message)) => {
            assert!(message.contains("no answer within"), "{message}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_millis(1500),
        "ended at the deadline: {elapsed:?}"
    );
}

#[actix_web::test]
async fn the_openapi_document_describes_the_stripe_webhook() {
    let app = stripe_app().await;
    let (status, doc) = json_of(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let operation = &doc["paths"]["/webhook/stripe"]["post"];
    assert!(operation.is_object(), "{doc}");
    assert!(
        operation["parameters"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "Stripe-Signature")),
        "{operation}"
    );
    app.stop().await;
}
