//! Checkouts per second through the whole service, embedded store against the scylla store
//! on the real Cassandra node (testkit/src/cassandra.rs starts it, or
//! `KASSA_TEST_CASSANDRA=host:port`). One in-process Kassa per store, over real HTTP: each
//! round, 64 shoppers concurrently create a cart, add one unit of one of 8 SKUs and check
//! out (sandbox gateway); the time of the round counts, its throughput is checkouts/s.
//! Run: `cargo bench --bench checkout_throughput`.

use actix::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use kassa::auth::{TokenRequest, mint};
use kassa::config::{Config, RawConfig};
use kassa::startup::Application;
use kassa_actors::ActorSettings;
use kassa_actors::clock::{SharedClock, SystemClock};
use kassa_testkit::cassandra;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SHOPPERS: usize = 64;
const SKUS: usize = 8;
const WEBHOOK_SECRET: &str = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtYnl0ZXM=";

struct Service {
    address: String,
    config: Config,
    client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    shoppers: AtomicU64,
    _dir: tempfile::TempDir,
}

impl Service {
    async fn start(store: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let store = match store {
            "embedded" => format!("embedded:{}", dir.path().join("store").display()),
            _ => {
                let keyspace = cassandra::fresh_keyspace("checkout");
                cassandra::migrate(&keyspace).await;
                format!("scylla://{}/{keyspace}", cassandra::hosts_csv())
            }
        };
        let config = Config::from_raw(RawConfig {
            listen: Some("127.0.0.1:0".into()),
            public_url: Some(format!("http://127.0.0.1:{port}")),
            data_dir: Some(dir.path().display().to_string()),
            store: Some(store),
            jwt_secret: Some("bench-secret".into()),
            webhook_secret: Some(WEBHOOK_SECRET.into()),
            scylla_request_timeout: Some("30s".into()),
            log: Some("error".into()),
            ..RawConfig::default()
        })
        .expect("config");
        let clock: SharedClock = Arc::new(SystemClock);
        let app = Application::build_on(listener, config.clone(), clock, ActorSettings::default())
            .await
            .expect("app builds");
        let handle = app.handle();
        actix_web::rt::spawn(app.run_until_stopped());
        let service = Self {
            address: format!("http://127.0.0.1:{port}"),
            config,
            client: reqwest::Client::new(),
            handle,
            shoppers: AtomicU64::new(0),
            _dir: dir,
        };
        for i in 0..SKUS {
            let response = service
                .client
                .put(service.url(&format!("/api/admin/products/sku-{i}")))
                .bearer_auth(service.token("admin", true))
                .json(&json!({"name": "Tee", "price": 1999, "currency": "EUR", "stock": 1_000_000_000}))
                .send()
                .await
                .expect("put product");
            assert_eq!(response.status(), 200);
        }
        service
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    fn token(&self, sub: &str, admin: bool) -> String {
        let clock: SharedClock = Arc::new(SystemClock);
        mint(
            &self.config.jwt,
            &clock,
            TokenRequest {
                sub,
                email: Some("shopper@example.com"),
                admin,
                ttl: Duration::from_secs(3600),
                private_key_pem: None,
            },
        )
        .expect("mint")
    }

    /// One shopper's cart and checkout; the token is minted outside the timing.
    async fn shop(&self, token: &str, sku: usize) {
        let cart: Value = self
            .client
            .post(self.url("/api/carts"))
            .bearer_auth(token)
            .send()
            .await
            .expect("create cart")
            .json()
            .await
            .expect("cart json");
        let cart_id = cart["cartId"].as_str().expect("cartId");
        let added = self
            .client
            .put(self.url(&format!("/api/carts/{cart_id}/items/sku-{sku}")))
            .bearer_auth(token)
            .json(&json!({"quantity": 1}))
            .send()
            .await
            .expect("add item");
        assert_eq!(added.status(), 200);
        let placed = self
            .client
            .post(self.url("/api/orders"))
            .bearer_auth(token)
            .json(&json!({
                "cartId": cart_id,
                "shippingDetails": {"name": "Shopper", "line1": "1 Main St", "city": "Berlin",
                                    "postalCode": "10115", "country": "DE"},
                "paymentMethod": "card"
            }))
            .send()
            .await
            .expect("checkout");
        assert_eq!(placed.status(), 200, "{:?}", placed.text().await);
    }

    async fn round(&self) -> Duration {
        let tokens: Vec<String> = (0..SHOPPERS)
            .map(|_| {
                let n = self.shoppers.fetch_add(1, Ordering::Relaxed);
                self.token(&format!("shopper-{n}"), false)
            })
            .collect();
        let start = Instant::now();
        join_all(
            tokens
                .iter()
                .enumerate()
                .map(|(i, token)| self.shop(token, i % SKUS)),
        )
        .await;
        start.elapsed()
    }
}

fn checkout_throughput(c: &mut Criterion) {
    kassa::telemetry::init_logging("error", kassa::config::LogFormat::Text);
    let mut group = c.benchmark_group("checkout_throughput");
    group.throughput(Throughput::Elements(SHOPPERS as u64));
    for store in ["embedded", "scylla"] {
        let system = System::new();
        let service = system.block_on(Service::start(store));
        group.bench_function(BenchmarkId::new(store, SHOPPERS), |b| {
            b.iter_custom(|rounds| {
                system.block_on(async {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..rounds {
                        elapsed += service.round().await;
                    }
                    elapsed
                })
            })
        });
        system.block_on(service.handle.stop(true));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    targets = checkout_throughput
}
criterion_main!(benches);
