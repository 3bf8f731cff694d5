//! The scylla store's cluster going away and coming back under a running Kassa: a Cassandra 5
//! node of its own (scripts/cassandra.sh with its own run dir and ports, so the shared test
//! node is never touched) is stopped and started again. While it is down every checkout is
//! answered 503 `store_unavailable` with Retry-After (never a dropped connection or a hang)
//! and `/readyz` answers 503; once it is back Kassa serves again on its own, without a
//! restart, and nothing it acknowledged is lost.

use kassa_testkit::api::{put_product, send, token};
use kassa_testkit::process::{free_port, ready_client, spawn_logged};
use reqwest::StatusCode;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cassandra.sh");
const JWT_SECRET: &str = "cassandra-outage-secret-of-32-bytes";
const WEBHOOK_SECRET: &str = "whsec_Y2Fzc2FuZHJhLW91dGFnZS13ZWJob29r";
const STOCK: i64 = 100;

/// A Cassandra node of this test's own, removed when dropped.
struct Node {
    dir: PathBuf,
    port: String,
}

impl Node {
    fn script(&self, command: &str) {
        let output = Command::new("bash")
            .arg(SCRIPT)
            .arg(command)
            .env("KASSA_CASSANDRA_DIR", &self.dir)
            .env("CASSANDRA_PORT", &self.port)
            .env("CASSANDRA_STORAGE_PORT", "17342")
            .env("CASSANDRA_HEAP", "1G")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
        assert!(
            output.status.success(),
            "{SCRIPT} {command} exited with {}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.script("clean");
    }
}

async fn ready(client: &reqwest::Client, base: &str) -> StatusCode {
    send(client.get(format!("{base}/readyz"))).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cassandra_outage_answers_503_and_kassa_serves_again_when_it_is_back() {
    let node = Node {
        dir: std::env::temp_dir().join("kassa-cassandra-outage"),
        port: "19342".into(),
    };
    node.script("clean");
    node.script("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let no_config = dir.path().join("empty.toml");
    std::fs::write(&no_config, "").expect("empty config");
    let store = format!("scylla://127.0.0.1:{}/outage", node.port);
    let kassa = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kassa"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KASSA_CONFIG", &no_config)
            .env("KASSA_DATA_DIR", dir.path())
            .env("KASSA_STORE", &store)
            .env("KASSA_SCYLLA_REQUEST_TIMEOUT", "2s")
            .env("KASSA_JWT_SECRET", JWT_SECRET)
            .env("KASSA_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("KASSA_LOG", "warn");
        command
    };
    let migrated = kassa(&["migrate"]).output().expect("kassa migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = spawn_logged(
        kassa(&["serve"])
            .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
            .env("KASSA_PUBLIC_URL", &base),
        &dir.path().join("kassa.log"),
    );
    let client = ready_client(&base).await;
    let admin = token(JWT_SECRET, "admin", true);
    put_product(
        &client,
        &base,
        &admin,
        "outage-tee",
        "Outage tee",
        1500,
        STOCK,
    )
    .await;
    let shopper = token(JWT_SECRET, "shopper", false);
    let checkout = |cart: String| {
        client
            .post(format!("{base}/api/orders"))
            .bearer_auth(&shopper)
            .header("idempotency-key", format!("outage-{cart}"))
            .json(&json!({
                "cartId": cart,
                "shippingDetails": {"name": "Out Age", "line1": "1 Down St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
                "paymentMethod": "card",
            }))
    };
    let mut carts = Vec::new();
    for _ in 0..4 {
        let (status, body, _) = send(
            client
                .post(format!("{base}/api/carts"))
                .bearer_auth(&shopper),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let cart = body["cartId"].as_str().expect("cartId").to_string();
        let (status, body, _) = send(
            client
                .put(format!("{base}/api/carts/{cart}/items/outage-tee"))
                .bearer_auth(&shopper)
                .json(&json!({"quantity": 1})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        carts.push(cart);
    }
    let (status, body, _) = send(checkout(carts[0].clone())).await;
    assert_eq!(status, StatusCode::OK, "placed before the outage: {body}");
    let mut placed = vec![body["orderId"].as_str().expect("orderId").to_string()];

    // The cluster goes away.
    node.script("stop");
    let (status, body, retry_after) = send(checkout(carts[1].clone())).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a checkout while the cluster is down: {body}"
    );
    assert!(retry_after, "a 503 says when to retry: {body}");
    assert_eq!(
        ready(&client, &base).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while the store is unreachable"
    );

    // It comes back: Kassa serves again without a restart.
    node.script("start");
    let back = Instant::now();
    while ready(&client, &base).await != StatusCode::OK {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "still not ready 60 s after the cluster came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ready_in = back.elapsed();
    for cart in &carts[1..] {
        // The refused checkout retried with its key, and two new ones.
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = loop {
            let (status, body, _) = send(checkout(cart.clone())).await;
            if status == StatusCode::OK {
                break body;
            }
            assert!(
                status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline,
                "after the cluster came back: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        placed.push(body["orderId"].as_str().expect("orderId").to_string());
    }
    for order in &placed {
        let (status, body, _) = send(
            client
                .get(format!("{base}/api/orders/{order}"))
                .bearer_auth(&shopper),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "order {order} is there: {body}");
    }
    let (_, product, _) = send(client.get(format!("{base}/api/products/outage-tee"))).await;
    assert_eq!(
        product["available"],
        json!(STOCK - placed.len() as i64),
        "each placed order holds its unit, nothing more: {product}"
    );
    eprintln!(
        "cassandra outage: 503 with Retry-After while down, ready again {:.1} s after the node was",
        ready_in.as_secs_f64()
    );
}
