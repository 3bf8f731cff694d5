//! Starting Kassa for a test: a fresh data dir, a manual clock, port 0, and a reqwest client.

use crate::cassandra;
use actix_web::dev::ServerHandle;
use actix_web::web;
use kassa::auth::{TokenRequest, mint};
use kassa::config::{Config, RawConfig};
use kassa::startup::Application;
use kassa::state::AppState;
use kassa::store::embedded::EmbeddedStore;
use kassa_actors::ActorSettings;
use kassa_actors::clock::{ManualClock, SharedClock};
use kassa_actors::store::SharedStore;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC1ieXRlcw==";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub config: Config,
    pub data_dir: PathBuf,
    pub state: Option<web::Data<AppState>>,
    handle: ServerHandle,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// The config a test app runs with; `tweak` adjusts the raw keys before parsing.
/// `KASSA_TEST_STORE=scylla` puts the store on the test Cassandra node (started if needed),
/// one fresh keyspace per data dir, so that a restart on the same dir finds its data.
pub fn test_config(data_dir: &Path, tweak: impl FnOnce(&mut RawConfig)) -> Config {
    let store = match std::env::var("KASSA_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => {
            format!("embedded:{}", data_dir.join("store").display())
        }
        Ok("scylla") => {
            let file = data_dir.join("test-keyspace");
            let keyspace = match std::fs::read_to_string(&file) {
                Ok(name) => name.trim().to_string(),
                Err(_) => {
                    let name = cassandra::fresh_keyspace("api");
                    std::fs::create_dir_all(data_dir).expect("data dir");
                    std::fs::write(&file, &name).expect("remember the keyspace");
                    name
                }
            };
            format!("scylla://{}/{keyspace}", cassandra::hosts_csv())
        }
        Ok(other) => panic!("KASSA_TEST_STORE: expected `embedded` or `scylla`, got `{other}`"),
    };
    let mut raw = RawConfig {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir.display().to_string()),
        store: Some(store),
        scylla_request_timeout: Some("30s".into()),
        jwt_secret: Some("integration-test-secret".into()),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        log: Some("warn".into()),
        ..RawConfig::default()
    };
    tweak(&mut raw);
    Config::from_raw(raw).expect("test config is valid")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut RawConfig)) -> TestApp {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = start(tmp.path().to_path_buf(), ManualClock::starting_now(), tweak).await;
    app._tmp = Some(tmp);
    app
}

/// Starts Kassa on a fresh data dir over an embedded store that `wrap` may replace (a
/// store that fails or stalls on cue); `tweak` adjusts the raw keys.
pub async fn spawn_app_on_store(
    wrap: impl FnOnce(SharedStore) -> SharedStore,
    tweak: impl FnOnce(&mut RawConfig),
) -> TestApp {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&tmp.path().join("store")).expect("embedded store");
    let mut app = start_on(
        tmp.path().to_path_buf(),
        ManualClock::starting_now(),
        tweak,
        Some(wrap(Arc::new(store))),
        0,
    )
    .await;
    app._tmp = Some(tmp);
    app
}

/// Starts Kassa on an existing data dir (restart tests).
pub async fn start(
    data_dir: PathBuf,
    clock: ManualClock,
    tweak: impl FnOnce(&mut RawConfig),
) -> TestApp {
    start_on(data_dir, clock, tweak, None, 0).await
}

/// Starts Kassa on `data_dir`, over `store` when given, else over the configured one, on
/// `port` (0: any free one).
async fn start_on(
    data_dir: PathBuf,
    clock: ManualClock,
    tweak: impl FnOnce(&mut RawConfig),
    store: Option<SharedStore>,
    port: u16,
) -> TestApp {
    kassa::telemetry::init_logging("warn", kassa::config::LogFormat::Text);
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = test_config(&data_dir, |raw| {
        raw.public_url = Some(format!("http://127.0.0.1:{port}"));
        tweak(raw);
    });
    if let kassa::config::StoreSpec::Scylla { keyspace, .. } = &config.store {
        cassandra::migrate(keyspace).await;
    }
    let shared: SharedClock = Arc::new(clock.clone());
    let settings = ActorSettings {
        idle_after: time::Duration::minutes(5),
        ..ActorSettings::default()
    };
    let app = match store {
        Some(store) => {
            Application::build_on_store(listener, config.clone(), store, shared, settings).await
        }
        None => Application::build_on(listener, config.clone(), shared, settings).await,
    }
    .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = Some(app.state());
    let handle = app.handle();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        clock,
        config,
        data_dir,
        state,
        handle,
        server,
        _tmp: None,
    }
}

impl TestApp {
    /// The text of `GET /metrics`.
    pub async fn scrape(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    }

    /// The dev mail (`.eml` files) once exactly `count` messages are there and the outbox
    /// has none left unsent (each is recorded as sent); names and contents. Waits up to 5 s.
    pub async fn sent_mail(&self, count: usize) -> Vec<(String, String)> {
        let dir = self.data_dir.join("mail");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut mail: Vec<(String, String)> = std::fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .map(|e| e.expect("mail dir entry").path())
                        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                        .map(|p| {
                            let name = p.file_name().expect("name").to_string_lossy().into();
                            (name, std::fs::read_to_string(&p).expect("an .eml file"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            mail.sort();
            let unsent = self.state().store.outbox_depth().await.expect("outbox");
            if mail.len() == count && unsent == 0 {
                return mail;
            }
            assert!(
                mail.len() <= count && std::time::Instant::now() < deadline,
                "expected {count} sent emails and none unsent, found {} files and {unsent} unsent",
                mail.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn state(&self) -> &AppState {
        self.state.as_ref().expect("app is running")
    }

    /// A token for `sub`, valid for 30 days of the app's clock.
    pub fn token(&self, sub: &str, admin: bool) -> String {
        let clock: SharedClock = Arc::new(self.clock.clone());
        mint(
            &self.config.jwt,
            &clock,
            TokenRequest {
                sub,
                email: Some(&format!("{sub}@example.com")),
                admin,
                ttl: Duration::from_secs(30 * 24 * 3600),
                private_key_pem: None,
            },
        )
        .expect("mint")
    }

    pub fn admin(&self) -> String {
        self.token("admin", true)
    }

    pub async fn put_product(&self, sku: &str, price: i64, currency: &str, stock: i64) -> Response {
        self.client
            .put(self.url(&format!("/api/admin/products/{sku}")))
            .bearer_auth(self.admin())
            .json(&json!({"name": format!("Product {sku}"), "price": price, "currency": currency, "stock": stock}))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_product(&self, sku: &str) -> Response {
        self.client
            .get(self.url(&format!("/api/products/{sku}")))
            .send()
            .await
            .expect("request")
    }

    pub async fn create_cart(&self, token: &str) -> String {
        let response = self
            .client
            .post(self.url("/api/carts"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        body["cartId"].as_str().expect("cartId").to_string()
    }

    pub async fn get_cart(&self, token: &str, cart: &str) -> Response {
        self.client
            .get(self.url(&format!("/api/carts/{cart}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn set_item(&self, token: &str, cart: &str, sku: &str, quantity: i64) -> Response {
        self.client
            .put(self.url(&format!("/api/carts/{cart}/items/{sku}")))
            .bearer_auth(token)
            .json(&json!({ "quantity": quantity }))
            .send()
            .await
            .expect("request")
    }

    /// Moves time past the idle period and asks idle actors to stop; waits until they did.
    pub async fn passivate_everything(&self) {
        self.clock.advance(time::Duration::minutes(6));
        let state = self.state();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state.products.live_count() + state.carts.live_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "actors did not passivate"
            );
            state.passivate_idle_actors();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Changes the stored cart behind its actor (passivated first, so the next request
    /// reloads it): for states the API cannot produce, such as a lock or legacy lines.
    pub async fn rewrite_stored_cart(
        &self,
        cart: &str,
        change: impl FnOnce(&mut kassa_actors::store::CartRecord),
    ) {
        self.passivate_everything().await;
        let id = kassa_actors::domain::CartId::parse(cart).expect("uuid");
        let store = self.state().store.clone();
        let mut record = store.load_cart(id).await.expect("load").expect("stored");
        change(&mut record);
        let expected = record.version;
        record.version += 1;
        assert_eq!(
            store.write_cart(&record, expected).await.expect("write"),
            kassa_actors::store::WriteOutcome::Applied
        );
    }

    /// Graceful stop; returns once the store is closed.
    pub async fn stop(mut self) -> (PathBuf, ManualClock, Option<tempfile::TempDir>) {
        self.state = None;
        self.handle.stop(true).await;
        self.server
            .await
            .expect("server task")
            .expect("clean shutdown");
        (self.data_dir, self.clock, self._tmp.take())
    }

    /// Stops Kassa and starts it again on the same data dir, clock and port (so the URLs it
    /// handed out still lead to it).
    pub async fn restart(self) -> TestApp {
        let port = self.port();
        let (data_dir, clock, tmp) = self.stop().await;
        let mut app = start_on(data_dir, clock, |_| {}, None, port).await;
        app._tmp = tmp;
        app
    }

    pub fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the address ends with its port")
    }
}

/// The value of one series (`name` or `name{labels}`, exactly as exposed) in a Prometheus
/// scrape; 0 before its first increment.
pub fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

/// Status and JSON body of a response.
pub async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, body)
}

/// Asserts the contract's error shape and code.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    let (got, body) = json_of(response).await;
    assert_eq!(got, status, "body: {body}");
    assert_eq!(body["code"], code, "body: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "error sentence missing: {body}"
    );
    body
}

/// A shipping address that passes validation.
pub fn shipping() -> Value {
    json!({"name": "Alice Doe", "line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"})
}

impl TestApp {
    /// Checks `cart` out with `shipping` as the shipping details; the status and body.
    pub async fn checkout_shipped(
        &self,
        token: &str,
        cart: &str,
        shipping: Value,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/api/orders"))
            .bearer_auth(token)
            .json(&json!({"cartId": cart, "shippingDetails": shipping, "paymentMethod": "card"}))
            .send()
            .await
            .expect("request");
        json_of(response).await
    }

    pub async fn checkout(&self, token: &str, cart: &str, key: Option<&str>) -> Response {
        let mut request = self
            .client
            .post(self.url("/api/orders"))
            .bearer_auth(token)
            .json(&json!({"cartId": cart, "shippingDetails": shipping(), "paymentMethod": "card"}));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("request")
    }

    /// A cart for `sub` holding `quantity` of `sku`; answers (token, cart id).
    pub async fn cart_with(&self, sub: &str, sku: &str, quantity: i64) -> (String, String) {
        let token = self.token(sub, false);
        let cart = self.create_cart(&token).await;
        let response = self.set_item(&token, &cart, sku, quantity).await;
        assert_eq!(response.status(), StatusCode::OK);
        (token, cart)
    }

    /// Checks out and expects 200; answers the checkout body.
    pub async fn place_order(&self, token: &str, cart: &str) -> Value {
        let (status, body) = json_of(self.checkout(token, cart, None).await).await;
        assert_eq!(status, StatusCode::OK, "checkout: {body}");
        body
    }

    /// The shopper decides at the sandbox's hosted page (the scripted JSON way).
    pub async fn decide(&self, checkout: &Value, outcome: &str) {
        let url = checkout["paymentUrl"].as_str().expect("paymentUrl");
        let response = self
            .client
            .post(url)
            .json(&json!({ "outcome": outcome }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "decide at the sandbox");
    }

    pub async fn order(&self, token: &str, order_id: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/api/orders/{order_id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "order: {body}");
        body
    }

    /// Polls the order until it has `status` (webhooks arrive asynchronously).
    pub async fn wait_for_status(&self, token: &str, order_id: &str, status: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let order = self.order(token, order_id).await;
            if order["status"] == status {
                return order;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "order {order_id} never reached {status}: {order}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn available(&self, sku: &str) -> i64 {
        let (status, body) = json_of(self.get_product(sku).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["available"].as_i64().expect("available")
    }

    /// Moves the clock past the reservation TTL and lets live orders notice.
    pub async fn expire_pending_orders(&self) {
        self.clock.advance(time::Duration::minutes(16));
        self.state().tick_orders();
    }

    /// Posts a webhook signed with `secret` (the configured one unless a test forges it).
    pub async fn send_webhook(
        &self,
        id: &str,
        timestamp: i64,
        body: &str,
        secret: &str,
    ) -> Response {
        let signature = standardwebhooks::Webhook::new(secret)
            .expect("secret")
            .sign(id, timestamp, body.as_bytes())
            .expect("sign");
        self.client
            .post(self.url("/webhook/payment-status"))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_string())
            .send()
            .await
            .expect("request")
    }

    pub fn now(&self) -> i64 {
        use kassa_actors::clock::Clock;
        self.clock.now().unix_timestamp()
    }
}
