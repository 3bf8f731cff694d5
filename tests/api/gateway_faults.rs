//! A payment gateway that takes the connection and then never answers, or answers only after
//! the deadline (`KASSA_GATEWAY_TIMEOUT`): the checkout answers 502 by the deadline with
//! everything given back, and a payment the gateway opened after all is cancelled.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use kassa_testkit::app::{assert_error, json_of, spawn_app_with};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The deadline the tests run with (API.md's default is 5 s).
const GATEWAY_TIMEOUT: &str = "1s";

/// A gateway that accepts connections and never answers; its base URL.
fn silent_gateway() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}

#[actix_web::test]
async fn a_gateway_that_never_answers_is_502_by_the_deadline_and_gives_everything_back() {
    let gateway = silent_gateway();
    let app = spawn_app_with(|raw| {
        raw.gateway = Some(gateway);
        raw.gateway_timeout = Some(GATEWAY_TIMEOUT.into());
    })
    .await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;

    let started = Instant::now();
    let response = app.checkout(&alice, &cart, Some("hanging-1")).await;
    let elapsed = started.elapsed();

    assert_error(response, StatusCode::BAD_GATEWAY, "gateway_unavailable").await;
    eprintln!("checkout against a silent gateway answered 502 after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(2),
        "answered after {elapsed:?}, expected the 1 s deadline"
    );
    assert_eq!(app.available("tee").await, 5);
    let (_, cart_body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(cart_body["locked"], false);
    app.stop().await;
}

/// A gateway that opens the first payment asked for and then answers only after `stall`;
/// any later call answers at once. Remembers what it opened and what it was asked to cancel.
#[derive(Default)]
struct LateGateway {
    /// (Idempotency-Key, payment id) of each payment opened.
    opened: Mutex<Vec<(String, String)>>,
    cancelled: Mutex<Vec<String>>,
}

const LATE_BY: Duration = Duration::from_secs(3);

async fn open_late(request: HttpRequest, gateway: web::Data<LateGateway>) -> HttpResponse {
    let key = request
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (payment_id, first) = {
        let mut opened = gateway.opened.lock().expect("lock");
        let first = opened.is_empty();
        let payment_id = match opened.iter().find(|(k, _)| *k == key) {
            Some((_, id)) => id.clone(),
            None => {
                let id = format!("pay_{}", opened.len() + 1);
                opened.push((key, id.clone()));
                id
            }
        };
        (payment_id, first)
    };
    if first {
        tokio::time::sleep(LATE_BY).await;
    }
    HttpResponse::Created().json(json!({
        "paymentId": payment_id,
        "paymentUrl": format!("http://gw.test/pay/{payment_id}"),
        "token": "t",
    }))
}

async fn cancel(payment_id: web::Path<String>, gateway: web::Data<LateGateway>) -> HttpResponse {
    gateway
        .cancelled
        .lock()
        .expect("lock")
        .push(payment_id.clone());
    HttpResponse::Ok().json(json!({"paymentId": payment_id.as_str(), "status": "failed"}))
}

async fn start_late_gateway() -> (String, web::Data<LateGateway>) {
    let state = web::Data::new(LateGateway::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .route("/payments", web::post().to(open_late))
            .route("/payments/{id}/cancel", web::post().to(cancel))
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    actix_web::rt::spawn(server);
    (url, state)
}

#[actix_web::test]
async fn a_payment_the_gateway_opened_after_the_deadline_is_cancelled() {
    let (gateway_url, gateway) = start_late_gateway().await;
    let app = spawn_app_with(|raw| {
        raw.gateway = Some(gateway_url);
        raw.gateway_timeout = Some(GATEWAY_TIMEOUT.into());
    })
    .await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;

    assert_error(
        app.checkout(&alice, &cart, None).await,
        StatusCode::BAD_GATEWAY,
        "gateway_unavailable",
    )
    .await;
    assert_eq!(app.available("tee").await, 5);

    let (_, list) = json_of(
        app.client
            .get(app.url("/api/orders"))
            .bearer_auth(&alice)
            .send()
            .await
            .expect("request"),
    )
    .await;
    let order_id = list["orders"][0]["orderId"].as_str().expect("orderId");
    assert_eq!(list["orders"][0]["status"], "failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.cancelled.lock().expect("lock").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the late payment was never cancelled"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let opened = gateway.opened.lock().expect("lock").clone();
    assert_eq!(opened, [(order_id.to_string(), "pay_1".to_string())]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*gateway.cancelled.lock().expect("lock"), ["pay_1"]);
    assert_eq!(app.available("tee").await, 5);
    app.stop().await;
}
