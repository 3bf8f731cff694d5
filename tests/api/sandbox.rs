//! The built-in sandbox gateway as a receiver of its webhooks sees it: every decision is
//! delivered, retried with backoff for as long as it takes to get a 2xx.

use crate::helpers::WEBHOOK_SECRET;
use actix_web::{App, HttpResponse, HttpServer, web};
use kassa::gateway::sandbox::{SandboxGateway, SandboxSettings, configure};
use kassa_actors::clock::{ManualClock, SharedClock};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// More refusals than a bounded retry (say, 25 attempts) would sit through.
const REFUSALS: usize = 40;

/// Counts deliveries; answers 503 to the first `REFUSALS`, then 200.
async fn reluctant_receiver() -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = web::Data::from(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = HttpServer::new(move || {
        App::new().app_data(counter.clone()).route(
            "/webhook/payment-status",
            web::post().to(|seen: web::Data<AtomicUsize>| async move {
                if seen.fetch_add(1, Ordering::SeqCst) < REFUSALS {
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

/// The sandbox on port 0 with millisecond backoff, so many attempts take little time.
fn fast_retrying_sandbox() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!(
        "http://127.0.0.1:{}/sandbox",
        listener.local_addr().expect("addr").port()
    );
    let clock: SharedClock = Arc::new(ManualClock::starting_now());
    let sandbox = SandboxGateway::new(
        SandboxSettings {
            retry_initial: Duration::from_millis(1),
            retry_max: Duration::from_millis(4),
            ..SandboxSettings::new(WEBHOOK_SECRET, base.clone())
        },
        clock,
    );
    let server = HttpServer::new(move || {
        let sandbox = sandbox.clone();
        App::new().service(web::scope("/sandbox").configure(move |cfg| configure(cfg, sandbox)))
    })
    .workers(1)
    .listen(listener)
    .expect("sandbox listens")
    .run();
    actix_web::rt::spawn(server);
    base
}

#[actix_web::test]
async fn the_sandbox_redelivers_a_webhook_past_any_attempt_budget_until_it_gets_a_2xx() {
    let (callback_url, seen) = reluctant_receiver().await;
    let base = fast_retrying_sandbox();
    let client = reqwest::Client::new();
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
    let payment: Value = response.json().await.expect("json");
    let decided = client
        .post(payment["paymentUrl"].as_str().expect("paymentUrl"))
        .json(&json!({"outcome": "success"}))
        .send()
        .await
        .expect("request");
    assert_eq!(decided.status(), StatusCode::OK);

    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.load(Ordering::SeqCst) <= REFUSALS {
        assert!(
            Instant::now() < deadline,
            "delivery stopped after {} attempts",
            seen.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        REFUSALS + 1,
        "delivered once accepted, then no more"
    );
}
