//! The payment gateway adapters end to end over real sockets: the standalone sandbox on port 0,
//! a webhook receiver that verifies Standard Webhooks signatures, and `HttpGateway` speaking
//! API.md's "Payment gateway protocol" to the sandbox and to scripted stub gateways.

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use kassa::gateway::http::HttpGateway;
use kassa::gateway::sandbox::{SandboxGateway, SandboxSettings, bind_standalone, configure};
use kassa_actors::clock::{ManualClock, SharedClock, SystemClock};
use kassa_actors::domain::{Currency, OrderId};
use kassa_actors::gateway::{
    CancelOutcome, DisplayLine, Gateway, GatewayError, PaymentDisplay, PaymentRequest, PaymentState,
};
use kassa_testkit::records;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use standardwebhooks::Webhook;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC1ieXRlcw==";
/// How long a test waits for something that should happen.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long a test waits to be sure something does not happen.
const QUIET_PERIOD: Duration = Duration::from_millis(500);

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = listener.local_addr().expect("address").port();
    (listener, port)
}

/// Polls `probe` until it yields a value or the deadline passes.
async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- the webhook receiver ----

#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    timestamp: i64,
    body: Value,
    verified: bool,
}

#[derive(Default)]
struct ReceiverState {
    deliveries: Mutex<Vec<Delivery>>,
    fail_first: usize,
}

/// Records every webhook it is sent; answers 500 to the first `fail_first`, then 200.
struct Receiver {
    callback_url: String,
    state: web::Data<ReceiverState>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let state = web::Data::new(ReceiverState {
            fail_first,
            ..ReceiverState::default()
        });
        let (listener, port) = listener();
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .route("/webhook/payment-status", web::post().to(receive_webhook))
        })
        .workers(1)
        .listen(listener)
        .expect("receiver listens")
        .run();
        actix_web::rt::spawn(server);
        Self {
            callback_url: format!("http://127.0.0.1:{port}/webhook/payment-status"),
            state,
        }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.state.deliveries.lock().expect("lock").clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Delivery> {
        eventually(&format!("{count} webhook deliveries"), || {
            let deliveries = self.deliveries();
            (deliveries.len() >= count).then_some(deliveries)
        })
        .await
    }

    /// Waits `QUIET_PERIOD`, then returns everything delivered, asserting there are `count`.
    async fn assert_exactly(&self, count: usize) -> Vec<Delivery> {
        self.wait_for(count).await;
        tokio::time::sleep(QUIET_PERIOD).await;
        let deliveries = self.deliveries();
        assert_eq!(deliveries.len(), count, "deliveries: {deliveries:#?}");
        deliveries
    }
}

async fn receive_webhook(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers() {
        let name = HeaderName::from_bytes(name.as_str().as_bytes()).expect("header name");
        let value = HeaderValue::from_bytes(value.as_bytes()).expect("header value");
        headers.append(name, value);
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let verified = Webhook::new(WEBHOOK_SECRET)
        .expect("secret")
        .verify(&body, &headers)
        .is_ok();
    let delivery = Delivery {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or_default(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        verified,
    };
    let mut deliveries = state.deliveries.lock().expect("lock");
    deliveries.push(delivery);
    if deliveries.len() <= state.fail_first {
        HttpResponse::InternalServerError().finish()
    } else {
        HttpResponse::Ok().json(json!({"received": true}))
    }
}

// ---- the sandbox ----

/// The standalone sandbox on port 0 and an `HttpGateway` pointed at it.
struct Sandbox {
    base_url: String,
    gateway: HttpGateway,
    handle: ServerHandle,
}

impl Sandbox {
    async fn start() -> Self {
        let clock: SharedClock = Arc::new(SystemClock);
        let sandbox =
            bind_standalone("127.0.0.1:0", WEBHOOK_SECRET, clock, None).expect("sandbox binds");
        let base_url = sandbox.base_url();
        assert_eq!(base_url, format!("http://127.0.0.1:{}", sandbox.port()));
        let handle = sandbox.handle();
        actix_web::rt::spawn(sandbox.run_until_stopped());
        Self {
            gateway: HttpGateway::new(Url::parse(&base_url).expect("url")),
            base_url,
            handle,
        }
    }
}

fn payment_request(order_id: OrderId, receiver: &Receiver) -> PaymentRequest {
    PaymentRequest {
        callback_url: receiver.callback_url.clone(),
        ..records::payment_request(order_id)
    }
}

async fn decide_by_json(payment_url: &str, outcome: &str) -> reqwest::Response {
    http_client()
        .post(payment_url)
        .json(&json!({ "outcome": outcome }))
        .send()
        .await
        .expect("decision sent")
}

async fn decide_by_form(payment_url: &str, outcome: &str) -> reqwest::Response {
    http_client()
        .post(payment_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("outcome={outcome}"))
        .send()
        .await
        .expect("decision sent")
}

#[actix_web::test]
async fn initiating_twice_for_one_order_opens_one_payment() {
    let sandbox = Sandbox::start().await;
    let receiver = Receiver::start(0).await;
    let order_id = OrderId::new();

    let first = sandbox
        .gateway
        .initiate(payment_request(order_id, &receiver))
        .await
        .expect("first initiation");
    let second = sandbox
        .gateway
        .initiate(payment_request(order_id, &receiver))
        .await
        .expect("second initiation");

    assert_eq!(first, second);
    assert!(first.payment_id.starts_with("pay_"));
    assert_eq!(
        first.payment_url,
        format!("{}/pay/{}", sandbox.base_url, first.payment_id)
    );
    assert!(!first.token.is_empty());
    let other = sandbox
        .gateway
        .initiate(payment_request(OrderId::new(), &receiver))
        .await
        .expect("another order");
    assert_ne!(other.payment_id, first.payment_id);
    sandbox.handle.stop(false).await;
}

#[actix_web::test]
async fn the_payment_page_shows_the_order_with_pay_decline_and_the_way_back() {
    let sandbox = Sandbox::start().await;
    let receiver = Receiver::start(0).await;
    let order_id = OrderId::new();
    let mut request = payment_request(order_id, &receiver);
    request.display = displayed(order_id, "http://shop.test/checkout/cancel");
    request.display.expires_at =
        Some(time::OffsetDateTime::now_utc() + time::Duration::minutes(15));
    let order_number = request.display.order_number.clone();
    let session = sandbox.gateway.initiate(request).await.expect("initiated");

    let response = http_client()
        .get(&session.payment_url)
        .send()
        .await
        .expect("page");

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let page = response.text().await.expect("html").replace("&#x2f;", "/");
    for shown in [
        "Pay €19.99",
        "Kassa Demo Shop",
        &format!("Order {order_number}"),
        "Organic cotton tee",
        "€16.00",
        "Time left: 14 minutes",
        "No money moves.",
        r#"<a href="http://shop.test/checkout/cancel">Cancel and return to the shop</a>"#,
    ] {
        assert!(page.contains(shown), "{shown} missing: {page}");
    }
    assert!(page.contains(r#"name="outcome" value="success""#));
    assert!(page.contains(r#"name="outcome" value="failure""#));
    assert!(page.contains(">Pay</button>") && page.contains(">Decline</button>"));
    sandbox.handle.stop(false).await;
}

#[actix_web::test]
async fn paying_delivers_one_signed_success_webhook_and_the_payment_can_be_refunded_once() {
    let sandbox = Sandbox::start().await;
    let receiver = Receiver::start(0).await;
    let order_id = OrderId::new();
    let session = sandbox
        .gateway
        .initiate(payment_request(order_id, &receiver))
        .await
        .expect("initiated");

    let response = decide_by_json(&session.payment_url, "success").await;
    assert_eq!(response.status(), StatusCode::OK);
    let payment: Value = response.json().await.expect("json");
    assert_eq!(
        payment,
        json!({
            "paymentId": session.payment_id,
            "orderId": order_id.to_string(),
            "status": "succeeded",
            "amount": 1999,
            "currency": "EUR",
        })
    );
    let again = decide_by_json(&session.payment_url, "success").await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "the same decision is idempotent"
    );

    let deliveries = receiver.assert_exactly(1).await;
    let delivery = &deliveries[0];
    assert!(delivery.verified, "signature verifies: {delivery:?}");
    assert!(delivery.id.starts_with("msg_"));
    assert_eq!(
        delivery.body,
        json!({
            "orderId": order_id.to_string(),
            "status": "Success",
            "paymentId": session.payment_id,
            "amount": 1999,
            "currency": "EUR",
        })
    );

    let status = sandbox
        .gateway
        .status(&session.payment_id)
        .await
        .expect("status");
    assert_eq!(status.state, PaymentState::Succeeded);
    assert_eq!(
        (status.order_id, status.amount, status.currency),
        (order_id, 1999, Currency::EUR)
    );

    let refund = sandbox
        .gateway
        .refund(&session.payment_id)
        .await
        .expect("refund");
    assert!(refund.starts_with("re_"));
    let repeated = sandbox
        .gateway
        .refund(&session.payment_id)
        .await
        .expect("repeated refund");
    assert_eq!(refund, repeated);
}

#[actix_web::test]
async fn declining_by_form_redirects_to_the_return_url_and_delivers_a_failed_webhook() {
    let sandbox = Sandbox::start().await;
    let receiver = Receiver::start(0).await;
    let order_id = OrderId::new();
    let request = payment_request(order_id, &receiver);
    let return_url = request.return_url.clone();
    let session = sandbox.gateway.initiate(request).await.expect("initiated");

    let response = decide_by_form(&session.payment_url, "failure").await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], return_url.as_str());
    let deliveries = receiver.wait_for(1).await;
    assert!(deliveries[0].verified);
    assert_eq!(deliveries[0].body["status"], "Failed");
    assert_eq!(deliveries[0].body["orderId"], order_id.to_string());
    assert_eq!(deliveries[0].body["paymentId"], session.payment_id);
    let status = sandbox
        .gateway
        .status(&session.payment_id)
        .await
        .expect("status");
    assert_eq!(status.state, PaymentState::Failed);
}

#[actix_web::test]
async fn a_decided_payment_cannot_be_decided_the_other_way_nor_refunded_unless_paid() {
    let sandbox = Sandbox::start().await;
    let receiver = Receiver::start(0).await;
    let session = sandbox
        .gateway
        .initiate(payment_request(OrderId::new(), &receiver))
        .await
        .expect("initiated");
    assert_eq!(
        decide_by_form(&session.payment_url, "failure")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );

    let conflict = decide_by_json(&session.payment_url, "success").await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let body: Value = conflict.json().await.expect("json");
    assert_eq!(body["code"], "payment_already_decided");
    assert!(matches!(
        sandbox.gateway.refund(&session.payment_id).await,
        Err(GatewayError::Refused(_))
    ));
    let page = http_client()
        .get(&session.payment_url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("This payment was declined."), "{page}");
    assert!(!page.contains(">Pay</button>"));
    receiver.assert_exactly(1).await;
}

async fn cancel_over_http(base_url: &str, payment_id: &str) -> reqwest::Response {
    http_client()
        .post(format!("{base_url}/payments/{payment_id}/cancel"))
        .send()
        .await
        .expect("cancel sent")
}

#[actix_web::test]
async fn a_cancelled_payment_is_failed_sends_no_webhook_and_can_no_longer_be_paid() {
    let sandbox = Sandbox::start().await;
    let receiver = Receiver::start(0).await;
    let order_id = OrderId::new();
    let session = sandbox
        .gateway
        .initiate(payment_request(order_id, &receiver))
        .await
        .expect("initiated");

    let outcome = sandbox.gateway.cancel(&session.payment_id).await;

    assert_eq!(outcome, Ok(CancelOutcome::Cancelled));
    let status = sandbox
        .gateway
        .status(&session.payment_id)
        .await
        .expect("status");
    assert_eq!(status.state, PaymentState::Failed);
    let again = cancel_over_http(&sandbox.base_url, &session.payment_id).await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "cancelling again answers 200"
    );
    let shown: Value = again.json().await.expect("json");
    assert_eq!(
        shown,
        json!({
            "paymentId": session.payment_id,
            "orderId": order_id.to_string(),
            "status": "failed",
            "amount": 1999,
            "currency": "EUR",
        })
    );
    for outcome in ["success", "failure"] {
        let refused = decide_by_json(&session.payment_url, outcome).await;
        assert_eq!(refused.status(), StatusCode::CONFLICT);
        let error: Value = refused.json().await.expect("json");
        assert_eq!(error["code"], "payment_cancelled");
        assert!(error["error"].is_string(), "{error}");
        // A shopper's stale page posts the form: the page answers why, in words.
        let refused = decide_by_form(&session.payment_url, outcome).await;
        assert_eq!(refused.status(), StatusCode::CONFLICT);
        let page = refused.text().await.expect("html");
        assert!(page.contains("was cancelled by the shop"), "{page}");
    }
    let page = http_client()
        .get(&session.payment_url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("cancelled"), "{page}");
    assert!(!page.contains(">Pay</button>") && !page.contains(">Decline</button>"));
    assert_eq!(
        sandbox.gateway.cancel(&session.payment_id).await,
        Ok(CancelOutcome::Cancelled)
    );
    receiver.assert_exactly(0).await;
    sandbox.handle.stop(false).await;
}

#[actix_web::test]
async fn cancelling_a_paid_payment_answers_409_and_the_success_stands() {
    let sandbox = Sandbox::start().await;
    let receiver = Receiver::start(0).await;
    let session = sandbox
        .gateway
        .initiate(payment_request(OrderId::new(), &receiver))
        .await
        .expect("initiated");
    assert_eq!(
        decide_by_json(&session.payment_url, "success")
            .await
            .status(),
        StatusCode::OK
    );

    let refused = cancel_over_http(&sandbox.base_url, &session.payment_id).await;

    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["code"], "payment_already_decided");
    assert!(error["error"].is_string(), "{error}");
    assert_eq!(
        sandbox.gateway.cancel(&session.payment_id).await,
        Ok(CancelOutcome::AlreadySucceeded)
    );
    let status = sandbox
        .gateway
        .status(&session.payment_id)
        .await
        .expect("status");
    assert_eq!(status.state, PaymentState::Succeeded);
    let deliveries = receiver.assert_exactly(1).await;
    assert_eq!(deliveries[0].body["status"], "Success");

    let unknown = cancel_over_http(&sandbox.base_url, "pay_unknown").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let error: Value = unknown.json().await.expect("json");
    assert_eq!(error["code"], "payment_not_found");
    assert!(matches!(
        sandbox.gateway.cancel("pay_unknown").await,
        Err(GatewayError::Refused(_))
    ));
    sandbox.handle.stop(false).await;
}

#[actix_web::test]
async fn the_protocol_answers_in_the_contract_shapes() {
    let sandbox = Sandbox::start().await;
    let client = http_client();
    let order_id = OrderId::new();
    let body = json!({
        "orderId": order_id,
        "amount": 500,
        "currency": "JPY",
        "callbackUrl": "http://127.0.0.1:9/webhook/payment-status",
        "returnUrl": "http://shop.test/orders/1",
    });
    let create = |key: Option<String>, body: Value| {
        let mut request = client
            .post(format!("{}/payments", sandbox.base_url))
            .json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send()
    };

    let created = create(Some(order_id.to_string()), body.clone())
        .await
        .expect("sent");
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("json");
    let payment_id = created["paymentId"].as_str().expect("paymentId");
    assert!(created["paymentUrl"].is_string() && created["token"].is_string());
    let shown: Value = client
        .get(format!("{}/payments/{payment_id}", sandbox.base_url))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        shown,
        json!({"paymentId": payment_id, "orderId": order_id, "status": "pending", "amount": 500, "currency": "JPY"})
    );

    let missing_key = create(None, body.clone()).await.expect("sent");
    assert_eq!(missing_key.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = missing_key.json().await.expect("json");
    assert_eq!(error["code"], "validation_failed");
    assert_eq!(error["details"][0]["field"], "Idempotency-Key");

    let wrong_key = create(Some(OrderId::new().to_string()), body.clone())
        .await
        .expect("sent");
    assert_eq!(wrong_key.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let mut bad_url = body.clone();
    bad_url["returnUrl"] = json!("javascript:alert(1)");
    let bad_url = create(Some(order_id.to_string()), bad_url)
        .await
        .expect("sent");
    assert_eq!(bad_url.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let mut shown = body.clone();
    shown["orderId"] = json!(OrderId::new());
    shown["shopName"] = json!("Kassa Demo Shop");
    shown["orderNumber"] = json!("K-7F3Q-9D2M");
    shown["lines"] = json!([{"name": "Tee", "quantity": 2, "amount": 500}]);
    shown["expiresAt"] = json!("2030-01-01T12:00:00Z");
    shown["cancelUrl"] = json!("https://shop.test/checkout/cancel");
    let accepted = create(
        Some(shown["orderId"].as_str().expect("id").into()),
        shown.clone(),
    )
    .await
    .expect("sent");
    assert_eq!(accepted.status(), StatusCode::CREATED);

    let mut overlong = shown.clone();
    overlong["orderId"] = json!(OrderId::new());
    overlong["shopName"] = json!("x".repeat(101));
    overlong["orderNumber"] = json!("K".repeat(65));
    overlong["lines"] = json!([{"name": "", "quantity": 0, "amount": -1}]);
    overlong["cancelUrl"] = json!("javascript:history.back()");
    let refused = create(
        Some(overlong["orderId"].as_str().expect("id").into()),
        overlong,
    )
    .await
    .expect("sent");
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["code"], "validation_failed");
    let fields: Vec<_> = error["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        [
            "cancelUrl",
            "shopName",
            "orderNumber",
            "lines[0].name",
            "lines[0].quantity",
            "lines[0].amount"
        ]
    );
    let mut bad_time = shown.clone();
    bad_time["orderId"] = json!(OrderId::new());
    bad_time["expiresAt"] = json!("in fifteen minutes");
    let bad_time = create(
        Some(bad_time["orderId"].as_str().expect("id").into()),
        bad_time,
    )
    .await
    .expect("sent");
    assert_eq!(bad_time.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let mut other_amount = body.clone();
    other_amount["amount"] = json!(501);
    let reused = create(Some(order_id.to_string()), other_amount)
        .await
        .expect("sent");
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = reused.json().await.expect("json");
    assert_eq!(error["code"], "idempotency_key_reused");

    let malformed = client
        .post(format!("{}/payments", sandbox.base_url))
        .header("content-type", "application/json")
        .header("Idempotency-Key", order_id.to_string())
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let error: Value = malformed.json().await.expect("json");
    assert_eq!(error["code"], "invalid_json");

    let unknown = client
        .get(format!("{}/payments/pay_unknown", sandbox.base_url))
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let error: Value = unknown.json().await.expect("json");
    assert_eq!(error["code"], "payment_not_found");

    let bad_outcome =
        decide_by_form(&format!("{}/pay/{payment_id}", sandbox.base_url), "maybe").await;
    assert_eq!(bad_outcome.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[actix_web::test]
async fn a_webhook_is_redelivered_with_the_same_id_and_a_fresh_signature_until_accepted() {
    let receiver = Receiver::start(2).await;
    let clock = ManualClock::starting_now();
    let (listener, port) = listener();
    let sandbox = SandboxGateway::new(
        SandboxSettings {
            webhook_secret: WEBHOOK_SECRET.into(),
            public_base_url: format!("http://127.0.0.1:{port}/sandbox"),
            retry_initial: Duration::from_millis(300),
            retry_max: Duration::from_millis(600),
        },
        Arc::new(clock.clone()),
    );
    let server = HttpServer::new(move || {
        let sandbox = sandbox.clone();
        App::new().service(web::scope("/sandbox").configure(move |cfg| configure(cfg, sandbox)))
    })
    .workers(1)
    .listen(listener)
    .expect("listens")
    .run();
    actix_web::rt::spawn(server);
    let gateway =
        HttpGateway::new(Url::parse(&format!("http://127.0.0.1:{port}/sandbox")).expect("url"));
    let session = gateway
        .initiate(payment_request(OrderId::new(), &receiver))
        .await
        .expect("initiated");
    assert!(
        session
            .payment_url
            .starts_with(&format!("http://127.0.0.1:{port}/sandbox/pay/"))
    );

    assert_eq!(
        decide_by_json(&session.payment_url, "success")
            .await
            .status(),
        StatusCode::OK
    );
    receiver.wait_for(1).await;
    clock.advance(time::Duration::minutes(1));
    let deliveries = receiver.assert_exactly(3).await;

    assert!(deliveries.iter().all(|d| d.verified), "{deliveries:#?}");
    assert!(deliveries.iter().all(|d| d.id == deliveries[0].id));
    assert!(deliveries.iter().all(|d| d.body == deliveries[0].body));
    assert_eq!(deliveries[1].timestamp, deliveries[0].timestamp + 60);
    assert_eq!(deliveries[2].timestamp, deliveries[0].timestamp + 60);
}

// ---- HttpGateway against scripted gateways ----

#[derive(Default)]
struct StubState {
    script: Vec<(u16, Value)>,
    idempotency_keys: Mutex<Vec<String>>,
    bodies: Mutex<Vec<Value>>,
}

/// A gateway that answers each request with the next `(status, body)` of its script and
/// records the `Idempotency-Key` it was sent. Returns its base URL.
async fn start_stub(script: Vec<(u16, Value)>) -> (Url, web::Data<StubState>) {
    let state = web::Data::new(StubState {
        script,
        ..StubState::default()
    });
    let (listener, port) = listener();
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .default_service(web::to(answer_from_script))
    })
    .workers(1)
    .listen(listener)
    .expect("stub listens")
    .run();
    actix_web::rt::spawn(server);
    let base = Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    (base, state)
}

async fn answer_from_script(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<StubState>,
) -> HttpResponse {
    state
        .bodies
        .lock()
        .expect("lock")
        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    let key = request
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut keys = state.idempotency_keys.lock().expect("lock");
    keys.push(key);
    let (status, body) = state.script[(keys.len() - 1).min(state.script.len() - 1)].clone();
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).json(body)
}

#[actix_web::test]
async fn a_gateway_answering_5xx_is_retried_with_the_same_idempotency_key() {
    let created =
        json!({"paymentId": "pay_1", "paymentUrl": "http://gw.test/pay/pay_1", "token": "t"});
    let (base, stub) = start_stub(vec![(503, json!({})), (500, json!({})), (201, created)]).await;
    let order_id = OrderId::new();

    let session = HttpGateway::new(base)
        .initiate(records::payment_request(order_id))
        .await
        .expect("third attempt succeeds");

    assert_eq!(session.payment_id, "pay_1");
    let keys = stub.idempotency_keys.lock().expect("lock").clone();
    assert_eq!(keys, vec![order_id.to_string(); 3]);
}

#[actix_web::test]
async fn a_408_is_retried_with_the_same_idempotency_key() {
    let created =
        json!({"paymentId": "pay_1", "paymentUrl": "http://gw.test/pay/pay_1", "token": "t"});
    let (base, stub) = start_stub(vec![(408, json!({})), (201, created)]).await;
    let order_id = OrderId::new();

    let session = HttpGateway::new(base)
        .initiate(records::payment_request(order_id))
        .await
        .expect("the second attempt succeeds");

    assert_eq!(session.payment_id, "pay_1");
    let keys = stub.idempotency_keys.lock().expect("lock").clone();
    assert_eq!(keys, vec![order_id.to_string(); 2]);
}

/// Reads one request (head and `Content-Length` body) from `socket`; returns its
/// Idempotency-Key, or `None` when the client closed the connection first.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let header = |name: &str| {
                head.lines()
                    .find_map(|line| line.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            let length: usize = header("content-length:").map_or(0, |v| v.parse().unwrap_or(0));
            if buffer.len() >= end + 4 + length {
                return header("idempotency-key:");
            }
        }
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// The race of a keep-alive that ends on the gateway's side: the client reuses a pooled
/// connection just as the gateway closes it, so the request goes out and no answer comes
/// back ("connection closed before message completed"). The call is idempotent by its key,
/// so it is sent again on a new connection, not failed (it failed the checkout before).
#[actix_web::test]
async fn a_request_lost_on_a_connection_the_gateway_closed_is_sent_again() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = Url::parse(&format!(
        "http://{}",
        listener.local_addr().expect("address")
    ))
    .expect("url");
    let seen = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let recorded = seen.clone();
    actix_web::rt::spawn(async move {
        let mut connection = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            connection += 1;
            let recorded = recorded.clone();
            actix_web::rt::spawn(async move {
                let mut served = 0;
                while let Some(key) = read_request(&mut socket).await {
                    recorded
                        .lock()
                        .expect("lock")
                        .push((connection, key.clone()));
                    served += 1;
                    if connection == 1 && served == 2 {
                        // The first connection's keep-alive ends as its second request arrives.
                        return;
                    }
                    let body = json!({"paymentId": format!("pay_{key}"),
                        "paymentUrl": "http://gw.test/pay", "token": "t"})
                    .to_string();
                    let answer = format!(
                        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gateway = HttpGateway::new(base);
    let (first, second) = (OrderId::new(), OrderId::new());

    gateway
        .initiate(records::payment_request(first))
        .await
        .expect("the first call is answered");
    let session = gateway
        .initiate(records::payment_request(second))
        .await
        .expect("the lost request is sent again and answered");

    assert_eq!(session.payment_id, format!("pay_{second}"));
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![
            (1, first.to_string()),
            (1, second.to_string()),
            (2, second.to_string())
        ],
        "the second call went out on the pooled connection, then on a new one"
    );
}

fn displayed(order_id: OrderId, cancel_url: &str) -> PaymentDisplay {
    PaymentDisplay {
        shop_name: "Kassa Demo Shop".into(),
        order_number: format!("K-{}", &order_id.to_string()[..4]),
        lines: vec![
            DisplayLine {
                name: "Organic cotton tee".into(),
                quantity: 1,
                amount: 1999,
            },
            DisplayLine {
                name: "Mug".into(),
                quantity: 2,
                amount: 1600,
            },
        ],
        expires_at: Some(time::OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time")),
        cancel_url: Some(cancel_url.into()),
    }
}

#[actix_web::test]
async fn what_the_payment_page_shows_is_sent_as_optional_camel_case_fields() {
    let created =
        json!({"paymentId": "pay_1", "paymentUrl": "http://gw.test/pay/pay_1", "token": "t"});
    let (base, stub) = start_stub(vec![(201, created)]).await;
    let order_id = OrderId::new();
    let mut request = records::payment_request(order_id);
    request.display = displayed(order_id, "http://shop.test/cancel");
    let order_number = request.display.order_number.clone();
    let gateway = HttpGateway::new(base);

    gateway.initiate(request).await.expect("initiated");
    gateway
        .initiate(records::payment_request(OrderId::new()))
        .await
        .expect("initiated without a display");

    let bodies = stub.bodies.lock().expect("lock").clone();
    let sent = &bodies[0];
    assert_eq!(sent["shopName"], "Kassa Demo Shop");
    assert_eq!(sent["orderNumber"], order_number.as_str());
    assert_eq!(
        sent["lines"],
        json!([{"name": "Organic cotton tee", "quantity": 1, "amount": 1999},
               {"name": "Mug", "quantity": 2, "amount": 1600}])
    );
    assert_eq!(sent["expiresAt"], "2030-03-17T17:46:40Z");
    assert_eq!(sent["cancelUrl"], "http://shop.test/cancel");
    let bare = bodies[1].as_object().expect("object");
    for field in ["shopName", "orderNumber", "lines", "expiresAt", "cancelUrl"] {
        assert!(!bare.contains_key(field), "{field} left out: {bare:?}");
    }
}

#[actix_web::test]
async fn a_gateway_that_keeps_failing_is_unavailable_after_three_attempts() {
    let (base, stub) = start_stub(vec![(502, json!({}))]).await;

    let result = HttpGateway::new(base).refund("pay_1").await;

    assert!(
        matches!(result, Err(GatewayError::Unavailable(_))),
        "{result:?}"
    );
    let keys = stub.idempotency_keys.lock().expect("lock").clone();
    assert_eq!(keys, vec!["refund-pay_1".to_string(); 3]);
}

#[actix_web::test]
async fn a_cancel_is_retried_on_5xx_and_a_409_means_the_payment_had_succeeded() {
    let failed = json!({"paymentId": "pay_1", "orderId": OrderId::new(), "status": "failed",
                        "amount": 1999, "currency": "EUR"});
    let (base, stub) = start_stub(vec![(503, json!({})), (200, failed)]).await;
    assert_eq!(
        HttpGateway::new(base).cancel("pay_1").await,
        Ok(CancelOutcome::Cancelled)
    );
    let keys = stub.idempotency_keys.lock().expect("lock").clone();
    assert_eq!(keys, vec!["cancel-pay_1".to_string(); 2]);

    let conflict = json!({"error": "the payment has already succeeded",
                          "code": "payment_already_decided"});
    let (base, stub) = start_stub(vec![(409, conflict)]).await;
    assert_eq!(
        HttpGateway::new(base).cancel("pay_1").await,
        Ok(CancelOutcome::AlreadySucceeded)
    );
    assert_eq!(stub.idempotency_keys.lock().expect("lock").len(), 1);

    let (base, _stub) = start_stub(vec![(
        404,
        json!({"error": "no", "code": "payment_not_found"}),
    )])
    .await;
    assert!(matches!(
        HttpGateway::new(base).cancel("pay_1").await,
        Err(GatewayError::Refused(_))
    ));
    let (base, stub) = start_stub(vec![(500, json!({}))]).await;
    assert!(matches!(
        HttpGateway::new(base).cancel("pay_1").await,
        Err(GatewayError::Unavailable(_))
    ));
    assert_eq!(stub.idempotency_keys.lock().expect("lock").len(), 3);
}

#[actix_web::test]
async fn a_refusal_is_not_retried() {
    let (base, stub) = start_stub(vec![(
        422,
        json!({"error": "bad amount", "code": "validation_failed"}),
    )])
    .await;

    let result = HttpGateway::new(base)
        .initiate(records::payment_request(OrderId::new()))
        .await;

    match result {
        Err(GatewayError::Refused(message)) => assert!(message.contains("422"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(stub.idempotency_keys.lock().expect("lock").len(), 1);
}

#[actix_web::test]
async fn an_unreadable_answer_is_a_refusal() {
    let (base, _stub) = start_stub(vec![(200, json!({"unexpected": true}))]).await;

    let result = HttpGateway::new(base).status("pay_1").await;

    assert!(
        matches!(result, Err(GatewayError::Refused(_))),
        "{result:?}"
    );
}

#[actix_web::test]
async fn a_gateway_on_a_closed_port_is_unavailable_within_seconds() {
    let (listener, port) = listener();
    drop(listener);
    let gateway = HttpGateway::new(Url::parse(&format!("http://127.0.0.1:{port}")).expect("url"));
    let started = Instant::now();

    let result = gateway.status("pay_1").await;

    assert!(
        matches!(result, Err(GatewayError::Unavailable(_))),
        "{result:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600),
        "retried twice: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "gave up promptly: {elapsed:?}"
    );
}

#[actix_web::test]
async fn a_gateway_that_never_answers_is_unavailable_at_the_deadline_retries_included() {
    let (listener, port) = listener();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let base = Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    let gateway = HttpGateway::new(base).with_deadline(Duration::from_millis(800));
    let started = Instant::now();

    let result = gateway
        .initiate(records::payment_request(OrderId::new()))
        .await;

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

// ---- the `kassa sandbox-gateway` process ----

/// `kassa sandbox-gateway` on a free port with `extra` arguments; the process and the
/// address it announced.
async fn start_sandbox_process(extra: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kassa"))
        .args(["sandbox-gateway", "--listen", "127.0.0.1:0"])
        .args(["--webhook-secret", WEBHOOK_SECRET])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kassa starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let announced = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = stdout.next_line().await.expect("stdout readable") {
            if let Some(url) = line.strip_prefix("listening on ") {
                return url.to_string();
            }
        }
        panic!("the sandbox exited without announcing its address");
    })
    .await
    .expect("announced in time");
    (child, announced)
}

/// Sends SIGTERM and asserts a clean exit in time.
async fn stop_sandbox_process(mut child: tokio::process::Child) {
    let pid = child.id().expect("still running").to_string();
    let signalled = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(signalled.success());
    let exit = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("stops in time")
        .expect("exit status");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn the_standalone_process_announces_its_address_and_stops_on_sigterm() {
    let (child, announced) = start_sandbox_process(&[]).await;
    let unknown = http_client()
        .get(format!("{announced}/payments/pay_unknown"))
        .send()
        .await
        .expect("the announced address answers");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    stop_sandbox_process(child).await;
}

#[tokio::test]
async fn the_standalone_process_keeps_its_payments_and_cancels_in_a_journal_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = dir.path().join("payments.jsonl");
    let journal = journal.to_str().expect("utf-8 path");
    let (child, announced) = start_sandbox_process(&["--journal", journal]).await;
    let gateway = HttpGateway::new(Url::parse(&announced).expect("url"));
    let session = gateway
        .initiate(records::payment_request(OrderId::new()))
        .await
        .expect("payment opened");
    let cancelled = gateway
        .initiate(records::payment_request(OrderId::new()))
        .await
        .expect("payment opened");
    assert_eq!(
        gateway.cancel(&cancelled.payment_id).await,
        Ok(CancelOutcome::Cancelled)
    );
    stop_sandbox_process(child).await;

    let (child, announced) = start_sandbox_process(&["--journal", journal]).await;
    let gateway = HttpGateway::new(Url::parse(&announced).expect("url"));
    let status = gateway
        .status(&session.payment_id)
        .await
        .expect("the payment is known after the restart");
    assert_eq!(status.state, PaymentState::Pending);
    assert_eq!(status.amount, 1999);
    let status = gateway
        .status(&cancelled.payment_id)
        .await
        .expect("the cancelled payment is known after the restart");
    assert_eq!(status.state, PaymentState::Failed);
    let pay_url = format!("{announced}/pay/{}", cancelled.payment_id);
    assert_eq!(
        decide_by_json(&pay_url, "success").await.status(),
        StatusCode::CONFLICT,
        "still cancelled after the restart"
    );
    stop_sandbox_process(child).await;
}
