//! The built-in sandbox gateway as a receiver of its webhooks sees it: every decision is
//! delivered, retried with backoff for as long as it takes to get a 2xx.

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use kassa::gateway::sandbox::{SandboxGateway, SandboxSettings, configure};
use kassa_actors::clock::{ManualClock, SharedClock};
use kassa_testkit::app::WEBHOOK_SECRET;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// More refusals than a bounded retry (say, 25 attempts) would sit through.
const REFUSALS: usize = 40;

/// Counts deliveries; answers 503 to the first `refusals`, then 200.
async fn reluctant_receiver(refusals: usize) -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = web::Data::from(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = HttpServer::new(move || {
        App::new().app_data(counter.clone()).route(
            "/webhook/payment-status",
            web::post().to(move |seen: web::Data<AtomicUsize>| async move {
                if seen.fetch_add(1, Ordering::SeqCst) < refusals {
                    HttpResponse::ServiceUnavailable().finish()
                } else {
                    HttpResponse::Ok().json(json!({"received": true}))
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .expect("receiver listens")
    .run();
    actix_web::rt::spawn(server);
    (
        format!("http://127.0.0.1:{port}/webhook/payment-status"),
        seen,
    )
}

/// Serves the sandbox `build` makes for its base URL on a port of its own; answers the base
/// URL and the server's handle.
fn serve_sandbox(build: impl FnOnce(String) -> SandboxGateway) -> (String, ServerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!(
        "http://127.0.0.1:{}/sandbox",
        listener.local_addr().expect("addr").port()
    );
    let sandbox = build(base.clone());
    let server = HttpServer::new(move || {
        let sandbox = sandbox.clone();
        App::new().service(web::scope("/sandbox").configure(move |cfg| configure(cfg, sandbox)))
    })
    .workers(1)
    .listen(listener)
    .expect("sandbox listens")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (base, handle)
}

/// The sandbox with millisecond backoff, so many attempts take little time.
fn fast_retrying_sandbox() -> String {
    let clock: SharedClock = Arc::new(ManualClock::starting_now());
    let (base, _) = serve_sandbox(|base| {
        SandboxGateway::new(
            SandboxSettings {
                retry_initial: Duration::from_millis(1),
                retry_max: Duration::from_millis(4),
                ..SandboxSettings::new(WEBHOOK_SECRET, base)
            },
            clock,
        )
    });
    base
}

/// Opens a payment for a fresh order at the sandbox; answers its JSON.
async fn open_payment(client: &reqwest::Client, base: &str, callback_url: &str) -> Value {
    let order_id = uuid::Uuid::now_v7();
    let response = client
        .post(format!("{base}/payments"))
        .header("Idempotency-Key", order_id.to_string())
        .json(&json!({
            "orderId": order_id, "amount": 1999, "currency": "EUR",
            "callbackUrl": callback_url, "returnUrl": "http://shop.test/orders/1",
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("json")
}

/// The shopper pays at the payment's page (the scripted JSON way).
async fn pay(client: &reqwest::Client, payment: &Value) {
    let decided = client
        .post(payment["paymentUrl"].as_str().expect("paymentUrl"))
        .json(&json!({"outcome": "success"}))
        .send()
        .await
        .expect("request");
    assert_eq!(decided.status(), StatusCode::OK);
}

/// Waits (at most 20 s) until `seen` reaches `count`.
async fn wait_for_deliveries(seen: &AtomicUsize, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.load(Ordering::SeqCst) < count {
        assert!(
            Instant::now() < deadline,
            "{} deliveries, waited for {count}",
            seen.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn the_sandbox_redelivers_a_webhook_past_any_attempt_budget_until_it_gets_a_2xx() {
    let (callback_url, seen) = reluctant_receiver(REFUSALS).await;
    let base = fast_retrying_sandbox();
    let client = reqwest::Client::new();
    let payment = open_payment(&client, &base, &callback_url).await;
    pay(&client, &payment).await;
    wait_for_deliveries(&seen, REFUSALS + 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        REFUSALS + 1,
        "delivered once accepted, then no more"
    );
}

#[actix_web::test]
async fn journalled_payments_come_back_and_an_undelivered_webhook_is_delivered_after_a_restart() {
    // The first delivery is refused and the next attempt is an hour away: only a restart
    // delivers it within the test.
    let (callback_url, seen) = reluctant_receiver(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("sandbox-payments.jsonl");
    let clock = ManualClock::starting_now();
    let journalled = |base: String| {
        SandboxGateway::with_journal(
            SandboxSettings {
                retry_initial: Duration::from_secs(3600),
                retry_max: Duration::from_secs(3600),
                ..SandboxSettings::new(WEBHOOK_SECRET, base)
            },
            Arc::new(clock.clone()),
            &journal,
        )
        .expect("journal opens")
    };
    let client = reqwest::Client::new();
    let status = |base: &str, id: &str| {
        let request = client.get(format!("{base}/payments/{id}")).send();
        async move {
            let response = request.await.expect("request");
            let code = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (
                code,
                body["status"].as_str().unwrap_or_default().to_string(),
            )
        }
    };

    let (first, server) = serve_sandbox(journalled);
    let paid = open_payment(&client, &first, &callback_url).await;
    let paid_id = paid["paymentId"].as_str().expect("id").to_string();
    pay(&client, &paid).await;
    let refund = client
        .post(format!("{first}/payments/{paid_id}/refunds"))
        .send()
        .await
        .expect("request");
    assert_eq!(refund.status(), StatusCode::CREATED);
    let pending = open_payment(&client, &first, &callback_url).await;
    let pending_id = pending["paymentId"].as_str().expect("id").to_string();
    wait_for_deliveries(&seen, 1).await;
    server.stop(true).await;

    let (second, server) = serve_sandbox(journalled);
    assert_eq!(
        status(&second, &paid_id).await,
        (StatusCode::OK, "succeeded".into())
    );
    assert_eq!(
        status(&second, &pending_id).await,
        (StatusCode::OK, "pending".into())
    );
    wait_for_deliveries(&seen, 2).await;
    // The delivery is journalled once the receiver has answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&journal).expect("journal");
        let last = text
            .lines()
            .rfind(|l| l.contains(&paid_id))
            .expect("the payment is in the journal")
            .to_string();
        if last.contains("\"undelivered\":null") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never journalled as delivered: {last}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop(true).await;

    // Delivered: a third start delivers nothing again.
    let (third, server) = serve_sandbox(journalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "delivered once after the restart"
    );
    assert_eq!(
        status(&third, &paid_id).await,
        (StatusCode::OK, "succeeded".into())
    );
    server.stop(true).await;

    // A month later both are forgotten.
    clock.advance(time::Duration::days(31));
    let (fourth, server) = serve_sandbox(journalled);
    assert_eq!(status(&fourth, &paid_id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(status(&fourth, &pending_id).await.0, StatusCode::NOT_FOUND);
    server.stop(true).await;
}
