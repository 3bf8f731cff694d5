//! Kassa and the sandbox gateway as separate processes, as they run in production: a 200
//! from POST /api/orders means the order survives `kill -9`, and it can still be paid; and
//! `kassa token` works next to a running server.

use kassa_testkit::api::put_product;
use kassa_testkit::process::{Process, free_port, wait_ready};
use kassa_testkit::silent_server;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const JWT_SECRET: &str = "crash-test-secret";
const WEBHOOK_SECRET: &str = "whsec_Y3Jhc2gtdGVzdC13ZWJob29rLWtleQ==";

/// `kassa sandbox-gateway` on a free port; answers the process and its base URL.
fn start_gateway() -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kassa"))
        .args([
            "sandbox-gateway",
            "--listen",
            "127.0.0.1:0",
            "--webhook-secret",
            WEBHOOK_SECRET,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the sandbox gateway");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let url = loop {
        let mut line = String::new();
        let read = stdout
            .read_line(&mut line)
            .expect("read the gateway's output");
        assert!(read > 0, "the gateway exited before announcing its address");
        if let Some(url) = line.trim().strip_prefix("listening on ") {
            break url.to_string();
        }
    };
    // Keep draining so the gateway never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (Process(child), url)
}

fn start_kassa(data_dir: &Path, port: u16, gateway: &str) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_kassa"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
        .env("KASSA_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("KASSA_DATA_DIR", data_dir)
        .env(
            "KASSA_STORE",
            format!("embedded:{}", data_dir.join("store").display()),
        )
        .env("KASSA_JWT_SECRET", JWT_SECRET)
        .env("KASSA_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("KASSA_GATEWAY", gateway)
        .env("KASSA_LOG", "warn")
        .current_dir(data_dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kassa");
    Process(child)
}

fn token(sub: &str, admin: bool) -> String {
    kassa_testkit::api::token(JWT_SECRET, sub, admin)
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn an_order_answered_200_survives_kill_9_and_can_be_paid_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_gateway, gateway_url) = start_gateway();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    let mut kassa = start_kassa(dir.path(), port, &gateway_url);
    wait_ready(&client, &base).await;
    let (admin, alice) = (token("admin", true), token("alice", false));
    put_product(&client, &base, &admin, "tee", "Tee", 1999, 3).await;
    let (_, cart) = send(client.post(format!("{base}/api/carts")).bearer_auth(&alice)).await;
    let cart = cart["cartId"].as_str().expect("cartId").to_string();
    let (status, _) = send(
        client
            .put(format!("{base}/api/carts/{cart}/items/tee"))
            .bearer_auth(&alice)
            .json(&json!({"quantity": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, checkout) = send(client.post(format!("{base}/api/orders")).bearer_auth(&alice).json(&json!({
        "cartId": cart,
        "shippingDetails": {"name": "Alice", "line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
        "paymentMethod": "card",
    })))
    .await;
    assert_eq!(status, StatusCode::OK, "{checkout}");

    // kill -9 right after the 200.
    kassa.0.kill().expect("SIGKILL");
    kassa.0.wait().expect("reaped");
    drop(kassa);

    let _kassa = start_kassa(dir.path(), port, &gateway_url);
    wait_ready(&client, &base).await;
    let order_id = checkout["orderId"].as_str().expect("orderId");
    let (status, order) = send(
        client
            .get(format!("{base}/api/orders/{order_id}"))
            .bearer_auth(&alice),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["status"], "pending_payment");
    let (_, product) = send(client.get(format!("{base}/api/products/tee"))).await;
    assert_eq!(product["available"], 1, "the reservation survived too");

    let payment_url = checkout["paymentUrl"].as_str().expect("paymentUrl");
    let (status, _) = send(
        client
            .post(payment_url)
            .json(&json!({"outcome": "success"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, order) = send(
            client
                .get(format!("{base}/api/orders/{order_id}"))
                .bearer_auth(&alice),
        )
        .await;
        if order["status"] == "processing" {
            break;
        }
        assert!(Instant::now() < deadline, "never paid: {order}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, product) = send(client.get(format!("{base}/api/products/tee"))).await;
    assert_eq!(product["available"], 1);
}

#[tokio::test]
async fn a_kill_9_during_checkouts_leaves_nothing_held_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hanging_url, accepted) = silent_server::start("http");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let mut kassa = start_kassa(dir.path(), port, &hanging_url);
    wait_ready(&client, &base).await;
    let admin = token("admin", true);
    put_product(&client, &base, &admin, "crash-tee", "Tee", 1999, 20).await;

    // Three shoppers check out 5 units each; the gateway never answers, so each checkout is
    // caught holding its stock, its cart lock and its Idempotency-Key.
    let mut shoppers = Vec::new();
    for i in 0..3 {
        let shopper = token(&format!("shopper-{i}"), false);
        let (_, cart) = send(
            client
                .post(format!("{base}/api/carts"))
                .bearer_auth(&shopper),
        )
        .await;
        let cart = cart["cartId"].as_str().expect("cartId").to_string();
        let (status, _) = send(
            client
                .put(format!("{base}/api/carts/{cart}/items/crash-tee"))
                .bearer_auth(&shopper)
                .json(&json!({"quantity": 5})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        shoppers.push((shopper, cart, format!("key-{i}")));
    }
    let checkout = |shopper: &str, cart: &str, key: &str| {
        client
            .post(format!("{base}/api/orders"))
            .bearer_auth(shopper)
            .header("Idempotency-Key", key)
            .json(&json!({
                "cartId": cart,
                "shippingDetails": {"name": "Shopper", "line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
                "paymentMethod": "card",
            }))
    };
    let in_flight: Vec<_> = shoppers
        .iter()
        .map(|(shopper, cart, key)| tokio::spawn(checkout(shopper, cart, key).send()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while silent_server::taken(&accepted) < 3 {
        assert!(
            Instant::now() < deadline,
            "the checkouts never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, product) = send(client.get(format!("{base}/api/products/crash-tee"))).await;
    assert_eq!(
        product["available"], 5,
        "15 units held by the three checkouts"
    );

    kassa.0.kill().expect("SIGKILL");
    kassa.0.wait().expect("reaped");
    drop(kassa);
    for request in in_flight {
        let _ = request.await;
    }

    let (_gateway, gateway_url) = start_gateway();
    let _kassa = start_kassa(dir.path(), port, &gateway_url);
    wait_ready(&client, &base).await;
    let ready_at = Instant::now();
    // Nothing held: the stock is back, the carts take changes, the keys take a retry.
    let (_, product) = send(client.get(format!("{base}/api/products/crash-tee"))).await;
    assert_eq!(
        product["available"], 20,
        "no unit held for an order that was never stored"
    );
    for (shopper, cart, key) in &shoppers {
        let (status, body) = send(
            client
                .put(format!("{base}/api/carts/{cart}/items/crash-tee"))
                .bearer_auth(shopper)
                .json(&json!({"quantity": 4})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "the cart is unlocked: {body}");
        let (status, body) = send(checkout(shopper, cart, key)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the same key's retry places the order: {body}"
        );
    }
    assert!(
        ready_at.elapsed() < Duration::from_secs(10),
        "all within 10 s of the restart"
    );
    let (_, product) = send(client.get(format!("{base}/api/products/crash-tee"))).await;
    assert_eq!(product["available"], 8, "the retries hold 3 x 4 units");
}

/// `kassa` with a clean environment on `data_dir`: the embedded store in it, no secrets (the
/// development ones are generated there) and `data_dir` as the working directory.
fn kassa_on_dev_secrets(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kassa"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KASSA_DATA_DIR", data_dir)
        .env(
            "KASSA_STORE",
            format!("embedded:{}", data_dir.join("store").display()),
        )
        .env("KASSA_LOG", "warn")
        .current_dir(data_dir);
    command
}

/// `kassa serve` on dev secrets in `data_dir`, listening on `port`, its output discarded.
fn serving_on_dev_secrets(data_dir: &Path, port: u16) -> Command {
    let mut command = kassa_on_dev_secrets(data_dir);
    command
        .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
        .env("KASSA_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[tokio::test]
async fn kassa_token_prints_a_token_the_running_server_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Process(
        serving_on_dev_secrets(dir.path(), port)
            .spawn()
            .expect("spawn kassa"),
    );
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;

    // The server holds the embedded store open; the token reads only config and secrets.
    let output = kassa_on_dev_secrets(dir.path())
        .args(["token", "--sub", "alice", "--email", "a@x", "--admin"])
        .output()
        .expect("run kassa token");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kassa token failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let token = stdout.lines().next().expect("a first line");
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(
        segments.len(),
        3,
        "the first line is the JWT alone: {token:?}"
    );
    assert!(
        segments.iter().all(|s| !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
        "the first line is the JWT alone: {token:?}"
    );
    let claims: Value = {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segments[1])
            .expect("base64url payload");
        serde_json::from_slice(&payload).expect("JSON claims")
    };
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "a@x");
    assert_eq!(claims["roles"], json!(["admin"]));

    put_product(&client, &base, token, "tee", "Tee", 1999, 3).await;
    let (status, cart) = send(client.post(format!("{base}/api/carts")).bearer_auth(token)).await;
    assert_eq!(status, StatusCode::CREATED, "{cart}");
}

#[tokio::test]
async fn sigterm_leaves_it_serving_but_not_ready_for_the_shutdown_delay_then_it_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Process(
        serving_on_dev_secrets(dir.path(), port)
            .env("KASSA_SHUTDOWN_DELAY", "2s")
            .spawn()
            .expect("spawn kassa"),
    );
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    // Within the delay: not ready, and every other request still served, on new connections.
    let deadline = signalled + Duration::from_secs(1);
    let mut not_ready = false;
    while Instant::now() < deadline {
        let fresh = reqwest::Client::new();
        let ready = fresh.get(format!("{base}/readyz")).send().await;
        let health = fresh.get(format!("{base}/healthz")).send().await;
        let ready = ready.expect("still accepting during the delay").status();
        assert_eq!(
            health.expect("still serving during the delay").status(),
            StatusCode::OK
        );
        not_ready |= ready == StatusCode::SERVICE_UNAVAILABLE;
        assert!(
            ready == StatusCode::OK || ready == StatusCode::SERVICE_UNAVAILABLE,
            "{ready}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(not_ready, "/readyz never answered 503 after SIGTERM");
    // Then it stops, cleanly, soon after the delay.
    let exit = loop {
        if let Some(exit) = server.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(15),
            "still running long after the delay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "stopped before its delay: {:?}",
        signalled.elapsed()
    );
}
