//! Confirmation emails against a real SMTP server (aiosmtpd, started by
//! scripts/smtp-sink.sh): what arrives, an SMTP outage during a burst of payments, kill -9
//! between "queued" and "sent", and permanent rejects. Orders are paid through the HTTP API
//! and the sandbox gateway, as a storefront would.
//!
//! `KASSA_TEST_SMTP` (with `KASSA_TEST_SMTP_DIR`, as `scripts/smtp-sink.sh start --env`
//! prints them) names a running sink for the tests that only need one; without it they start
//! their own. Tests that stop the server always start their own. A sink that cannot be
//! started fails the test: nothing here is skipped.

use kassa::auth::{TokenRequest, mint};
use kassa::config::Config;
use kassa_actors::clock::{Clock, SharedClock, SystemClock};
use kassa_actors::domain::OrderId;
use kassa_actors::store::{EmailKind, OutboxEmail};
use kassa_testkit::api;
use kassa_testkit::app::{TestApp, WEBHOOK_SECRET, json_of, shipping, spawn_app_with, test_config};
use kassa_testkit::process::{Process, free_port, wait_ready};
use kassa_testkit::silent_server;
use mail_parser::{MessageParser, MimeHeaders};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SINK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/smtp-sink.sh");
const MAIL_FROM: &str = "Kassa Shop <orders@kassa.test>";

// ---- the SMTP sink ----

/// A running SMTP sink: its URL, and where the messages it accepted are.
struct Sink {
    url: String,
    /// The sink's directory: `messages/` and the `reject-domains` file are in it.
    dir: PathBuf,
    /// Set when this test started the sink (it is stopped on drop).
    own: Option<tempfile::TempDir>,
}

/// One message the sink accepted.
struct Received {
    raw: Vec<u8>,
}

impl Received {
    fn parsed(&self) -> mail_parser::Message<'_> {
        MessageParser::default()
            .parse(&self.raw)
            .expect("the received message parses as MIME")
    }

    fn message_id(&self) -> String {
        self.parsed().message_id().unwrap_or_default().to_string()
    }
}

fn sink_script(args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(SINK_SCRIPT)
        .args(args)
        .output()
        .expect("run scripts/smtp-sink.sh");
    assert!(
        output.status.success(),
        "scripts/smtp-sink.sh {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf8")
}

impl Sink {
    /// The sink named by `KASSA_TEST_SMTP`, or else one of this test's own.
    fn shared_or_own() -> Self {
        match std::env::var("KASSA_TEST_SMTP") {
            Ok(url) if !url.is_empty() => {
                let messages = std::env::var("KASSA_TEST_SMTP_DIR").expect(
                    "KASSA_TEST_SMTP is set, so KASSA_TEST_SMTP_DIR must name its messages directory",
                );
                let dir = Path::new(&messages)
                    .parent()
                    .expect("the sink's directory")
                    .to_path_buf();
                Self {
                    url,
                    dir,
                    own: None,
                }
            }
            _ => Self::own(),
        }
    }

    /// A sink of this test's own on a free port.
    fn own() -> Self {
        Self::own_with(None)
    }

    /// A sink of this test's own that requires AUTH with `user:password`.
    fn own_requiring_auth(user: &str, password: &str) -> Self {
        Self::own_with(Some(format!("{user}:{password}")))
    }

    fn own_with(auth: Option<String>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        if let Some(auth) = auth {
            std::fs::write(dir.join("auth"), auth).expect("write auth");
        }
        let url = sink_script(&["start", "--dir", path_str(&dir), "--port", "0"])
            .trim()
            .to_string();
        assert!(url.starts_with("smtp://127.0.0.1:"), "sink URL: {url}");
        Self {
            url,
            dir,
            own: Some(tmp),
        }
    }

    fn port(&self) -> String {
        self.url.rsplit(':').next().expect("port").to_string()
    }

    /// The server goes away: connections are refused.
    fn stop(&self) {
        assert!(self.own.is_some(), "only a test's own sink is stopped");
        sink_script(&["stop", "--dir", path_str(&self.dir)]);
    }

    /// The server comes back on the same port.
    fn start_again(&self) {
        let url = sink_script(&[
            "start",
            "--dir",
            path_str(&self.dir),
            "--port",
            &self.port(),
        ]);
        assert_eq!(url.trim(), self.url);
    }

    /// Recipients at `domain` get `550` until `accept` is called.
    fn reject(&self, domain: &str) {
        std::fs::write(self.dir.join("reject-domains"), format!("{domain}\n"))
            .expect("write reject-domains");
    }

    fn accept_all(&self) {
        let _ = std::fs::remove_file(self.dir.join("reject-domains"));
    }

    fn messages(&self) -> Vec<Received> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("messages")) else {
            return Vec::new();
        };
        entries
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .map(|p| Received {
                raw: std::fs::read(&p).expect("read .eml"),
            })
            .collect()
    }

    /// Messages whose Message-ID is one of `ids`, by Message-ID (the sink may be shared).
    fn received(&self, ids: &BTreeSet<String>) -> BTreeMap<String, Vec<Received>> {
        let mut found: BTreeMap<String, Vec<Received>> = BTreeMap::new();
        for message in self.messages() {
            let id = message.message_id();
            if ids.contains(&id) {
                found.entry(id).or_default().push(message);
            }
        }
        found
    }

    /// Waits until every one of `ids` arrived; answers them by Message-ID.
    async fn wait_for(
        &self,
        ids: &BTreeSet<String>,
        within: Duration,
    ) -> BTreeMap<String, Vec<Received>> {
        let deadline = Instant::now() + within;
        loop {
            let found = self.received(ids);
            if found.len() == ids.len() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} emails arrived at the sink within {within:?}",
                found.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.own.is_some() {
            let _ = Command::new("bash")
                .arg(SINK_SCRIPT)
                .args(["stop", "--dir", path_str(&self.dir)])
                .output();
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}

/// The Message-ID as the parser reports it (without angle brackets).
fn confirmation_id(order_id: &str) -> String {
    format!("{order_id}.confirmation@kassa")
}

// ---- driving Kassa ----

async fn app_sending_to(sink: &Sink) -> TestApp {
    let url = sink.url.clone();
    spawn_app_with(move |raw| {
        raw.smtp_url = Some(url);
        raw.mail_from = Some(MAIL_FROM.into());
    })
    .await
}

async fn put_product(app: &TestApp, sku: &str, name: &str, price: i64, stock: i64) {
    let admin = app.admin();
    api::put_product(&app.client, &app.address, &admin, sku, name, price, stock).await;
}

/// A token whose `email` claim is `email` (the confirmation's recipient).
fn token_for(app: &TestApp, sub: &str, email: &str) -> String {
    let clock: SharedClock = Arc::new(app.clock.clone());
    mint(
        &app.config.jwt,
        &clock,
        TokenRequest {
            sub,
            email: Some(email),
            admin: false,
            ttl: Duration::from_secs(30 * 24 * 3600),
            private_key_pem: None,
        },
    )
    .expect("mint")
}

/// Checks out a cart holding `lines` and pays at the sandbox; answers the order once it is
/// `processing`.
async fn paid_order(app: &TestApp, token: &str, lines: &[(&str, i64)]) -> Value {
    let cart = app.create_cart(token).await;
    for (sku, quantity) in lines {
        let response = app.set_item(token, &cart, sku, *quantity).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let checkout = app.place_order(token, &cart).await;
    app.decide(&checkout, "success").await;
    let order_id = checkout["orderId"].as_str().expect("orderId");
    app.wait_for_status(token, order_id, "processing").await
}

/// The order's outbox entry while it is unsent.
async fn unsent(app: &TestApp, order_id: &str) -> Option<OutboxEmail> {
    let id = OrderId::parse(order_id).expect("order id");
    let far = app.clock.now() + time::Duration::days(3650);
    app.state()
        .store
        .due_emails(far, usize::MAX)
        .await
        .expect("outbox")
        .into_iter()
        .find(|e| e.order_id == id && e.kind == EmailKind::Confirmation)
}

/// Sum of a counter's samples whose labels include every one of `labels`.
fn counter(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- the tests ----

#[actix_web::test]
async fn the_confirmation_arrives_with_the_expected_headers_and_body() {
    let sink = Sink::shared_or_own();
    let app = app_sending_to(&sink).await;
    put_product(&app, "tee", "T-shirt <M> & \"Co\"", 1999, 10).await;
    put_product(&app, "mug", "Mug", 850, 10).await;
    let recipient = format!("alice-{}@example.com", uuid::Uuid::new_v4().simple());
    let alice = token_for(&app, "alice", &recipient);
    let order = paid_order(&app, &alice, &[("tee", 2), ("mug", 1)]).await;
    let order_id = order["orderId"].as_str().expect("orderId");
    let short = order_number(order_id);

    let ids = BTreeSet::from([confirmation_id(order_id)]);
    let arrived = sink.wait_for(&ids, Duration::from_secs(20)).await;
    let copies = &arrived[&confirmation_id(order_id)];
    assert_eq!(copies.len(), 1, "exactly one confirmation");
    let message = copies[0].parsed();

    let from = message.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.address(), Some("orders@kassa.test"));
    assert_eq!(from.name(), Some("Kassa Shop"));
    let to = message.to().and_then(|a| a.first()).expect("To");
    assert_eq!(to.address(), Some(recipient.as_str()));
    assert_eq!(
        message.subject(),
        Some(format!("Your order {short} is confirmed").as_str())
    );
    assert!(message.date().is_some(), "a Date header");
    let root = message.root_part().content_type().expect("Content-Type");
    assert_eq!(
        (root.ctype(), root.subtype()),
        ("multipart", Some("alternative"))
    );
    assert_eq!(message.text_body_count(), 1);
    let html_part = message.html_part(0).expect("an HTML part");
    assert_eq!(
        html_part.content_type().and_then(|c| c.subtype()),
        Some("html"),
        "a real text/html part, not one derived from the text"
    );

    let text = message.body_text(0).expect("text body");
    for expected in [
        "2 x T-shirt <M> & \"Co\" at 19.99 EUR: 39.98 EUR",
        "1 x Mug at 8.50 EUR: 8.50 EUR",
        "Total: 48.48 EUR",
        "Alice Doe",
        "1 Main St",
        "10115 Berlin",
        "DE",
        order_id,
    ] {
        assert!(text.contains(expected), "text lacks {expected:?}:\n{text}");
    }
    let html = message.body_html(0).expect("html body");
    for expected in [
        "T-shirt &lt;M&gt; &amp; &quot;Co&quot;",
        "19.99 EUR",
        "39.98 EUR",
        "48.48 EUR",
        "1 Main St",
        order_id,
    ] {
        assert!(html.contains(expected), "html lacks {expected:?}:\n{html}");
    }
    assert!(!html.contains("<M>"), "the product name is escaped in HTML");

    wait_until("the outbox is empty", Duration::from_secs(10), || async {
        app.state().store.outbox_depth().await.expect("depth") == 0
    })
    .await;
    let metrics = app.state().metrics.render();
    assert!(
        counter(
            &metrics,
            "kassa_emails_sent_total",
            &["email=\"confirmation\""]
        ) >= 1.0
    );
    assert!(metrics.contains("kassa_smtp_send_seconds"), "{metrics}");
    app.stop().await;
}

#[actix_web::test]
async fn smtp_down_for_20_seconds_while_50_orders_are_paid_then_all_50_arrive_once() {
    let sink = Sink::own();
    let app = app_sending_to(&sink).await;
    put_product(&app, "tee", "T-shirt", 1999, 100).await;
    sink.stop();
    let down_since = Instant::now();

    let orders = futures_util::future::join_all((0..50).map(|i| {
        let app = &app;
        async move {
            let token = token_for(
                app,
                &format!("shopper-{i}"),
                &format!("shopper-{i}@example.com"),
            );
            let order = paid_order(app, &token, &[("tee", 1)]).await;
            order["orderId"].as_str().expect("orderId").to_string()
        }
    }))
    .await;
    let ids: BTreeSet<String> = orders.iter().map(|id| confirmation_id(id)).collect();
    assert_eq!(ids.len(), 50);

    // Every email is queued and has failed at least once against the dead server.
    wait_until("50 failed attempts", Duration::from_secs(30), || async {
        let mut failed = 0;
        for id in &orders {
            if unsent(&app, id).await.is_some_and(|e| e.attempts >= 1) {
                failed += 1;
            }
        }
        failed == 50
    })
    .await;
    let email = unsent(&app, &orders[0]).await.expect("unsent");
    assert!(
        email
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Connection")),
        "last error: {:?}",
        email.last_error
    );
    // The rest of the 20 s: time moves on and the mailer keeps retrying (and failing).
    while down_since.elapsed() < Duration::from_secs(20) {
        app.clock.advance(time::Duration::seconds(5));
        app.state().mailer.nudge();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let retried = unsent(&app, &orders[0]).await.expect("still unsent");
    assert!(retried.attempts >= 2, "retried while down: {retried:?}");
    assert!(sink.messages().is_empty());

    sink.start_again();
    app.clock.advance(time::Duration::minutes(11));
    app.state().mailer.nudge();
    let arrived = sink.wait_for(&ids, Duration::from_secs(60)).await;
    wait_until("the outbox is empty", Duration::from_secs(10), || async {
        app.state().store.outbox_depth().await.expect("depth") == 0
    })
    .await;
    // More rounds of the mailer change nothing.
    app.clock.advance(time::Duration::minutes(11));
    app.state().mailer.nudge();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let twice: Vec<_> = arrived.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(twice.is_empty(), "{} emails arrived twice", twice.len());
    assert_eq!(sink.messages().len(), 50, "all 50, none twice");
    app.stop().await;
}

#[actix_web::test]
async fn permanent_smtp_rejects_are_retried_and_counted_not_dropped() {
    let sink = Sink::shared_or_own();
    let app = app_sending_to(&sink).await;
    put_product(&app, "tee", "T-shirt", 1999, 10).await;
    let domain = format!("reject-{}.test", uuid::Uuid::new_v4().simple());
    sink.reject(&domain);
    let carol = token_for(&app, "carol", &format!("carol@{domain}"));
    let order = paid_order(&app, &carol, &[("tee", 1)]).await;
    let order_id = order["orderId"].as_str().expect("orderId").to_string();
    let permanent = |app: &TestApp| {
        counter(
            &app.state().metrics.render(),
            "kassa_email_send_failures_total",
            &["kind=\"permanent\"", "email=\"confirmation\""],
        )
    };

    wait_until("the 550 is recorded", Duration::from_secs(20), || async {
        unsent(&app, &order_id)
            .await
            .is_some_and(|e| e.attempts >= 1)
    })
    .await;
    let first = unsent(&app, &order_id).await.expect("unsent");
    assert!(
        first
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("550")),
        "last error: {:?}",
        first.last_error
    );
    let counted = permanent(&app);
    assert!(counted >= 1.0, "counted as permanent");

    // Retried with backoff, not dropped.
    app.clock.advance(time::Duration::minutes(11));
    app.state().mailer.nudge();
    wait_until("a second attempt", Duration::from_secs(20), || async {
        unsent(&app, &order_id)
            .await
            .is_some_and(|e| e.attempts >= 2)
    })
    .await;
    assert!(permanent(&app) >= counted + 1.0, "every attempt is counted");
    assert!(
        unsent(&app, &order_id).await.is_some(),
        "still in the outbox"
    );

    // Once the server accepts the recipient, the email goes out.
    sink.accept_all();
    app.clock.advance(time::Duration::minutes(11));
    app.state().mailer.nudge();
    let ids = BTreeSet::from([confirmation_id(&order_id)]);
    let arrived = sink.wait_for(&ids, Duration::from_secs(20)).await;
    assert_eq!(arrived[&confirmation_id(&order_id)].len(), 1);
    app.stop().await;
}

#[actix_web::test]
async fn a_late_payment_that_is_refunded_gets_the_refund_email_by_the_same_path() {
    let sink = Sink::shared_or_own();
    let app = app_sending_to(&sink).await;
    put_product(&app, "tee", "T-shirt", 1999, 2).await;
    let recipient = format!("erin-{}@example.com", uuid::Uuid::new_v4().simple());
    let erin = token_for(&app, "erin", &recipient);
    let cart = app.create_cart(&erin).await;
    app.set_item(&erin, &cart, "tee", 2).await;
    let late = app.place_order(&erin, &cart).await;
    let late_id = late["orderId"].as_str().expect("orderId").to_string();
    app.expire_pending_orders().await;
    app.wait_for_status(&erin, &late_id, "expired").await;
    // Someone else buys the units meanwhile; then Erin's payment arrives, too late.
    let frank = token_for(&app, "frank", "frank@example.com");
    paid_order(&app, &frank, &[("tee", 2)]).await;
    app.decide(&late, "success").await;
    app.wait_for_status(&erin, &late_id, "refunded").await;

    let refund_id = format!("{late_id}.refund@kassa");
    let arrived = sink
        .wait_for(
            &BTreeSet::from([refund_id.clone()]),
            Duration::from_secs(20),
        )
        .await;
    let copies = &arrived[&refund_id];
    assert_eq!(copies.len(), 1);
    let message = copies[0].parsed();
    assert_eq!(
        message.subject(),
        Some(format!("Your order {} has been refunded", order_number(&late_id)).as_str())
    );
    let to = message.to().and_then(|a| a.first()).expect("To");
    assert_eq!(to.address(), Some(recipient.as_str()));
    let text = message.body_text(0).expect("text");
    assert!(text.contains("refunded your payment"), "{text}");
    assert!(
        text.contains("2 x T-shirt at 19.99 EUR: 39.98 EUR"),
        "{text}"
    );
    assert!(text.contains(&late_id), "{text}");
    assert!(
        sink.received(&BTreeSet::from([confirmation_id(&late_id)]))
            .is_empty(),
        "an order that was never paid gets no confirmation"
    );
    app.stop().await;
}

#[actix_web::test]
async fn smtp_credentials_come_from_the_url_or_kassa_smtp_user_and_password() {
    let sink = Sink::own_requiring_auth("kassa", "s3cret pass");
    let port = sink.port();
    let with_url_credentials = format!("smtp://kassa:s3cret%20pass@127.0.0.1:{port}");
    for (smtp_url, user, password) in [
        (sink.url.clone(), Some("kassa"), Some("s3cret pass")),
        // The URL's credentials win over the environment's.
        (with_url_credentials, Some("kassa"), Some("wrong")),
        (sink.url.clone(), None, None),
    ] {
        let app = spawn_app_with(|raw| {
            raw.smtp_url = Some(smtp_url.clone());
            raw.smtp_user = user.map(Into::into);
            raw.smtp_password = password.map(Into::into);
        })
        .await;
        put_product(&app, "tee", "T-shirt", 1999, 10).await;
        let token = token_for(&app, "dora", "dora@example.com");
        let order = paid_order(&app, &token, &[("tee", 1)]).await;
        let order_id = order["orderId"].as_str().expect("orderId").to_string();
        if user.is_some() {
            let ids = BTreeSet::from([confirmation_id(&order_id)]);
            sink.wait_for(&ids, Duration::from_secs(20)).await;
        } else {
            wait_until(
                "refused without credentials",
                Duration::from_secs(20),
                || async {
                    unsent(&app, &order_id)
                        .await
                        .is_some_and(|e| e.last_error.is_some_and(|err| err.contains("530")))
                },
            )
            .await;
        }
        app.stop().await;
    }
}

// ---- kill -9 of a real kassa process ----

/// A `kassa` process killed when dropped (a failed test leaves nothing running).
fn start_kassa(data_dir: &Path, port: u16, smtp_url: &str) -> Process {
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
        .env("KASSA_JWT_SECRET", "integration-test-secret")
        .env("KASSA_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("KASSA_SMTP_URL", smtp_url)
        .env("KASSA_MAIL_FROM", MAIL_FROM)
        .env("KASSA_LOG", "warn")
        .current_dir(data_dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kassa");
    Process(child)
}

fn wall_clock_token(config: &Config, sub: &str, email: Option<&str>, admin: bool) -> String {
    let clock: SharedClock = Arc::new(SystemClock);
    mint(
        &config.jwt,
        &clock,
        TokenRequest {
            sub,
            email,
            admin,
            ttl: Duration::from_secs(3600),
            private_key_pem: None,
        },
    )
    .expect("mint")
}

async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    json_of(request.send().await.expect("request")).await
}

/// Alice buys one `tee` and pays at the sandbox; answers the order id once it is processing
/// (its confirmation queued).
async fn a_paid_order(client: &reqwest::Client, base: &str, config: &Config) -> String {
    let alice = wall_clock_token(config, "alice", Some("alice@example.com"), false);
    let (status, cart) = call(client.post(format!("{base}/api/carts")).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::CREATED);
    let cart = cart["cartId"].as_str().expect("cartId").to_string();
    let (status, _) = call(
        client
            .put(format!("{base}/api/carts/{cart}/items/tee"))
            .bearer_auth(&alice)
            .json(&json!({"quantity": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, checkout) = call(
        client
            .post(format!("{base}/api/orders"))
            .bearer_auth(&alice)
            .json(&json!({"cartId": cart, "shippingDetails": shipping(), "paymentMethod": "card"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{checkout}");
    let order_id = checkout["orderId"].as_str().expect("orderId").to_string();
    let (status, _) = call(
        client
            .post(checkout["paymentUrl"].as_str().expect("paymentUrl"))
            .json(&json!({"outcome": "success"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    wait_until("the order is paid", Duration::from_secs(30), || async {
        let (_, order) = call(
            client
                .get(format!("{base}/api/orders/{order_id}"))
                .bearer_auth(&alice),
        )
        .await;
        order["status"] == "processing"
    })
    .await;
    order_id
}

#[tokio::test]
async fn kill_9_between_queued_and_sent_still_delivers_the_email_after_restart() {
    let sink = Sink::own();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path(), |_| {});
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let kassa = start_kassa(dir.path(), port, &sink.url);
    wait_ready(&client, &base).await;

    let admin = wall_clock_token(&config, "admin", None, true);
    api::put_product(&client, &base, &admin, "tee", "T-shirt", 1999, 5).await;

    // The SMTP server is down while the order is paid: the email is queued, not sent.
    sink.stop();
    let order_id = a_paid_order(&client, &base, &config).await;
    wait_until("a failed send attempt", Duration::from_secs(30), || async {
        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        counter(&metrics, "kassa_email_send_failures_total", &[]) >= 1.0
    })
    .await;

    // kill -9, the server comes back, Kassa restarts on the same data dir.
    drop(kassa);
    assert!(
        sink.messages().is_empty(),
        "nothing was sent before the kill"
    );
    sink.start_again();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _kassa = start_kassa(dir.path(), port, &sink.url);
    wait_ready(&client, &base).await;

    let ids = BTreeSet::from([confirmation_id(&order_id)]);
    let arrived = sink.wait_for(&ids, Duration::from_secs(60)).await;
    assert_eq!(arrived[&confirmation_id(&order_id)].len(), 1);
    let message = arrived[&confirmation_id(&order_id)][0].parsed();
    assert_eq!(
        message.subject(),
        Some(format!("Your order {} is confirmed", order_number(&order_id)).as_str())
    );
}

/// The order number shoppers see for the order with id `order_id` (a function of the id).
fn order_number(order_id: &str) -> String {
    kassa_actors::domain::OrderId::parse(order_id)
        .expect("an order id")
        .number()
}

#[tokio::test]
async fn an_email_a_killed_process_was_sending_goes_out_at_once_after_the_restart() {
    let sink = Sink::own();
    let (silent, connections) = silent_server::start("smtp");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path(), |_| {});
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let kassa = start_kassa(dir.path(), port, &silent);
    wait_ready(&client, &base).await;
    let admin = wall_clock_token(&config, "admin", None, true);
    api::put_product(&client, &base, &admin, "tee", "T-shirt", 1999, 5).await;
    let order_id = a_paid_order(&client, &base, &config).await;
    // The confirmation is claimed by this process and on its way to a server that never
    // answers: kill -9 now, between claiming it and recording it sent.
    wait_until("the mailer is sending", Duration::from_secs(30), || async {
        silent_server::taken(&connections) >= 1
    })
    .await;
    drop(kassa);

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _kassa = start_kassa(dir.path(), port, &sink.url);
    wait_ready(&client, &base).await;
    let restarted = Instant::now();
    let ids = BTreeSet::from([confirmation_id(&order_id)]);
    // Its claim would last two minutes; the restarted process sends it at once.
    let arrived = sink.wait_for(&ids, Duration::from_secs(20)).await;
    assert_eq!(arrived[&confirmation_id(&order_id)].len(), 1);
    assert!(
        restarted.elapsed() < Duration::from_secs(20),
        "sent {:?} after the restart",
        restarted.elapsed()
    );
}
