//! Kassa as several replicas: real `kassa` processes on different ports over one Cassandra
//! keyspace (testkit/src/cassandra.rs starts the node). Correctness across replicas comes
//! from the store's lightweight transactions alone, so these are the system's invariants
//! under the conditions they exist for: concurrent shoppers on every replica, a webhook on a
//! replica that never saw the checkout, and a replica killed mid-sale.

use kassa::store::scylla::ScyllaStore;
use kassa_actors::domain::{OrderId, Sku};
use kassa_actors::order::OrderStatus;
use kassa_actors::store::{ProductSnapshot, Store};
use kassa_testkit::{api, cassandra};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const JWT_SECRET: &str = "replica-test-secret";
const WEBHOOK_SECRET: &str = "whsec_cmVwbGljYS13ZWJob29rLXNlY3JldC1ieXRlcw==";

/// One `kassa serve` process; killed (by its own pid) when dropped.
struct Replica {
    name: &'static str,
    child: Child,
    address: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn spawn(name: &'static str, keyspace: &str, reservation_ttl: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let address = format!("http://127.0.0.1:{port}");
        let log = dir.path().join("kassa.log");
        let out = std::fs::File::create(&log).expect("log file");
        let no_config = dir.path().join("empty.toml");
        std::fs::write(&no_config, "").expect("empty config");
        let child = Command::new(env!("CARGO_BIN_EXE_kassa"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KASSA_CONFIG", &no_config)
            .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
            .env("KASSA_PUBLIC_URL", &address)
            .env(
                "KASSA_STORE",
                format!("scylla://{}/{keyspace}", cassandra::hosts_csv()),
            )
            .env("KASSA_SCYLLA_REQUEST_TIMEOUT", "30s")
            .env("KASSA_DATA_DIR", dir.path())
            .env("KASSA_JWT_SECRET", JWT_SECRET)
            .env("KASSA_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("KASSA_RESERVATION_TTL", reservation_ttl)
            .env("KASSA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn kassa");
        Self {
            name,
            child,
            address,
            log,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until it answers /healthz.
    async fn ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "replica {} exited with {status} at start-up:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok(r) = client.get(self.url("/healthz")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica {} never became healthy:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL to this replica's own pid: no shutdown, no flush, exactly a crash. The
    /// process is reaped when the replica is dropped.
    fn kill_9(&self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-9", &pid]).status();
        assert!(killed.expect("run kill").success(), "kill -9 {pid}");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(sub: &str, admin: bool) -> String {
    api::token(JWT_SECRET, sub, admin)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// One test at a time: each already runs several processes and a thousand shoppers against
/// one Cassandra node on a small machine.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Starts `count` replicas on a fresh migrated keyspace; answers them and the keyspace.
async fn replicas(count: usize, reservation_ttl: &str) -> (Vec<Replica>, String) {
    const NAMES: [&str; 3] = ["A", "B", "C"];
    let keyspace = cassandra::fresh_keyspace("replicas");
    cassandra::migrate(&keyspace).await;
    let client = client();
    let mut started = Vec::new();
    for name in NAMES.iter().take(count) {
        let mut replica = Replica::spawn(name, &keyspace, reservation_ttl);
        replica.ready(&client).await;
        started.push(replica);
    }
    (started, keyspace)
}

/// Sends `request` until it is answered with something other than 503 (an overloaded or
/// contended actor asks the client to come back, as a storefront would). At most
/// `IN_FLIGHT` requests are on the wire at once, as behind a load balancer: a thousand
/// shoppers are in the sale together, but the two small servers are not flooded with a
/// thousand simultaneous connections.
async fn send(request: reqwest::RequestBuilder) -> Result<(StatusCode, Value), reqwest::Error> {
    static IN_FLIGHT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(128);
    let mut attempt = 0u32;
    loop {
        let permit = IN_FLIGHT.acquire().await.expect("semaphore open");
        let response = request.try_clone().expect("cloneable request").send().await;
        drop(permit);
        let response = response?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        if status != StatusCode::SERVICE_UNAVAILABLE || attempt >= 50 {
            return Ok((status, body));
        }
        attempt += 1;
        let backoff = 20 * u64::from(attempt.min(10)) + u64::from(rand_jitter());
        tokio::time::sleep(Duration::from_millis(backoff)).await;
    }
}

fn rand_jitter() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32 % 50
}

async fn put_product(client: &reqwest::Client, replica: &Replica, sku: &str, stock: i64) {
    let (status, body) = send(
        client
            .put(replica.url(&format!("/api/admin/products/{sku}")))
            .bearer_auth(token("admin", true))
            .json(&json!({"name": "Flash tee", "price": 1999, "currency": "EUR", "stock": stock})),
    )
    .await
    .expect("put product");
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// What one shopper's attempt to buy came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Placed(OrderId),
    SoldOut,
    /// The replica went away (killed) while the shopper talked to it.
    Lost(String),
    Other(String),
}

/// One shopper: a cart with `qty` of `sku` on `replica`, then checkout.
async fn shop(client: &reqwest::Client, replica: &Replica, shopper: &str, sku: &str) -> Outcome {
    let token = token(shopper, false);
    let attempt = async {
        let (status, cart) =
            send(client.post(replica.url("/api/carts")).bearer_auth(&token)).await?;
        if status != StatusCode::CREATED {
            return Ok(Outcome::Other(format!("create cart: {status} {cart}")));
        }
        let cart_id = cart["cartId"].as_str().unwrap_or_default().to_string();
        let (status, body) = send(
            client
                .put(replica.url(&format!("/api/carts/{cart_id}/items/{sku}")))
                .bearer_auth(&token)
                .json(&json!({"quantity": 1})),
        )
        .await?;
        if status != StatusCode::OK {
            return Ok(Outcome::Other(format!("add item: {status} {body}")));
        }
        let (status, body) = send(
            client
                .post(replica.url("/api/orders"))
                .bearer_auth(&token)
                .json(&json!({
                    "cartId": cart_id,
                    "shippingDetails": {"name": "Shopper", "line1": "1 Main St", "city": "Berlin",
                                        "postalCode": "10115", "country": "DE"},
                    "paymentMethod": "card"
                })),
        )
        .await?;
        Ok::<_, reqwest::Error>(match status {
            StatusCode::OK => Outcome::Placed(
                OrderId::parse(body["orderId"].as_str().unwrap_or_default()).expect("order id"),
            ),
            StatusCode::CONFLICT if body["details"][0]["reason"] == "insufficient_stock" => {
                Outcome::SoldOut
            }
            other => Outcome::Other(format!("checkout: {other} {body}")),
        })
    };
    attempt
        .await
        .unwrap_or_else(|e| Outcome::Lost(with_causes(&e)))
}

/// The error and each of its causes ("error sending request" alone does not tell a refused
/// connection from one the server closed under the request).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// `shoppers` concurrent shoppers, spread round-robin over `replicas`, one unit each; the
/// i-th arrives after i * `stagger`. Each outcome with the moment its answer arrived.
/// Shopper `i` shops on replica `i % replicas.len()`; `placed[r]` counts the orders replica
/// `r` has answered 200 so far, for a test that acts mid-sale.
async fn flash_sale(
    replicas: &[Arc<Replica>],
    sku: &str,
    shoppers: usize,
    stagger: Duration,
    placed: Arc<Vec<AtomicUsize>>,
) -> Vec<(Outcome, OffsetDateTime)> {
    let client = client();
    let tasks: Vec<_> = (0..shoppers)
        .map(|i| {
            let (client, replica) = (client.clone(), replicas[i % replicas.len()].clone());
            let (sku, placed) = (sku.to_string(), placed.clone());
            let arrival = stagger * u32::try_from(i).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                tokio::time::sleep(arrival).await;
                let outcome = shop(&client, &replica, &format!("shopper-{i}"), &sku).await;
                if matches!(outcome, Outcome::Placed(_)) {
                    placed[i % placed.len()].fetch_add(1, Ordering::SeqCst);
                }
                (outcome, OffsetDateTime::now_utc())
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(shoppers);
    for task in tasks {
        outcomes.push(task.await.expect("shopper task"));
    }
    outcomes
}

/// The most orders that held a unit at one moment: each from its 200 (its reservation was
/// made before) to its expiry as its history records it (its reservation is released
/// after). More than the stock at any moment is an oversell; more orders than units over a
/// whole sale is not, when some expired and their units were sold again.
fn most_held_at_once(held: &[(OffsetDateTime, OffsetDateTime)]) -> usize {
    let mut events: Vec<(OffsetDateTime, i32)> = held
        .iter()
        .flat_map(|(from, to)| [(*from, 1), (*to, -1)])
        .collect();
    // At one instant, an expiry before a placement.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

fn placed(outcomes: &[Outcome]) -> BTreeSet<OrderId> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Placed(id) => Some(*id),
            _ => None,
        })
        .collect()
}

/// The SKU as the store holds it (what every replica reloads on a conflict).
async fn stock(store: &ScyllaStore, sku: &str) -> ProductSnapshot {
    store
        .load_product(&Sku::parse(sku).expect("sku"))
        .await
        .expect("load product")
        .expect("product exists")
}

fn reserved(snapshot: &ProductSnapshot) -> i64 {
    snapshot
        .reservations
        .iter()
        .filter(|r| !r.committed)
        .map(|r| i64::from(r.qty))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_of_100_units_to_1000_shoppers_on_two_replicas_sells_exactly_100() {
    let _serial = one_at_a_time().await;
    let (started, keyspace) = replicas(2, "15m").await;
    let started: Vec<Arc<Replica>> = started.into_iter().map(Arc::new).collect();
    put_product(&client(), &started[0], "flash-tee", 100).await;

    let outcomes: Vec<Outcome> = flash_sale(
        &started,
        "flash-tee",
        1000,
        Duration::ZERO,
        Arc::new(vec![AtomicUsize::new(0), AtomicUsize::new(0)]),
    )
    .await
    .into_iter()
    .map(|(outcome, _)| outcome)
    .collect();

    let orders = placed(&outcomes);
    let sold_out = outcomes.iter().filter(|o| **o == Outcome::SoldOut).count();
    let others: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Placed(_) | Outcome::SoldOut))
        .collect();
    assert!(others.is_empty(), "unexpected answers: {others:?}");
    assert_eq!(orders.len(), 100, "exactly 100 orders for 100 units");
    assert_eq!(sold_out, 900);

    let store = cassandra::open(&keyspace).await;
    let snapshot = stock(&store, "flash-tee").await;
    assert_eq!(
        snapshot.row.on_hand, 100,
        "nothing paid yet, nothing decremented"
    );
    assert_eq!(reserved(&snapshot), 100, "every unit held exactly once");
    assert_eq!(
        snapshot.row.on_hand - reserved(&snapshot),
        0,
        "available == 0"
    );
    let holders: BTreeSet<OrderId> = snapshot.reservations.iter().map(|r| r.order_id).collect();
    assert_eq!(
        holders, orders,
        "the units are held by exactly the placed orders"
    );
    for id in &orders {
        let order = store.load_order(*id).await.expect("load").expect("stored");
        assert_eq!(order.status, OrderStatus::PendingPayment);
    }
    drop(started);
    cassandra::drop_keyspace(&keyspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_on_one_replica_and_webhook_on_another_processes_with_one_decrement() {
    let _serial = one_at_a_time().await;
    let (started, keyspace) = replicas(2, "15m").await;
    let (a, b) = (&started[0], &started[1]);
    let client = client();
    put_product(&client, a, "tee", 5).await;
    // B has served the product before, so its actor holds a state older than the checkout.
    let (status, seen) = send(client.get(b.url("/api/products/tee")))
        .await
        .expect("get");
    assert_eq!(
        (status, seen["available"].as_i64()),
        (StatusCode::OK, Some(5))
    );

    let shopper = token("alice", false);
    let (_, cart) = send(client.post(a.url("/api/carts")).bearer_auth(&shopper))
        .await
        .expect("cart");
    let cart_id = cart["cartId"].as_str().expect("cartId").to_string();
    let (status, _) = send(
        client
            .put(a.url(&format!("/api/carts/{cart_id}/items/tee")))
            .bearer_auth(&shopper)
            .json(&json!({"quantity": 2})),
    )
    .await
    .expect("add");
    assert_eq!(status, StatusCode::OK);
    let (status, checkout) = send(
        client
            .post(a.url("/api/orders"))
            .bearer_auth(&shopper)
            .json(&json!({
                "cartId": cart_id,
                "shippingDetails": {"name": "Alice", "line1": "1 Main St", "city": "Berlin",
                                    "postalCode": "10115", "country": "DE"},
                "paymentMethod": "card"
            })),
    )
    .await
    .expect("checkout");
    assert_eq!(status, StatusCode::OK, "{checkout}");
    let order_id = checkout["orderId"].as_str().expect("orderId").to_string();

    // The gateway's webhook lands on B, which never saw this order.
    let body = json!({"orderId": order_id, "status": "Success", "paymentId": "pay_1",
                      "amount": 3998, "currency": "EUR"})
    .to_string();
    let deliver = |replica: &Replica| {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = standardwebhooks::Webhook::new(WEBHOOK_SECRET)
            .expect("secret")
            .sign("msg_1", now, body.as_bytes())
            .expect("sign");
        client
            .post(replica.url("/webhook/payment-status"))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body.clone())
    };
    let (status, answer) = send(deliver(b)).await.expect("webhook to B");
    assert_eq!(status, StatusCode::OK, "{answer}");

    let order_on = |replica: &Replica| {
        client
            .get(replica.url(&format!("/api/orders/{order_id}")))
            .bearer_auth(&shopper)
    };
    let (status, order) = send(order_on(b)).await.expect("order on B");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["status"], "processing", "{order}");

    let store = cassandra::open(&keyspace).await;
    let snapshot = stock(&store, "tee").await;
    assert_eq!(snapshot.row.on_hand, 3, "the 2 units are sold, once");
    assert_eq!(reserved(&snapshot), 0);
    assert_eq!(
        snapshot.reservations.iter().filter(|r| r.committed).count(),
        1,
        "one committed sale marker"
    );

    // The gateway redelivers, to A (whose order actor still holds `pending_payment`) and to
    // B again: 200 each time, and no second effect anywhere.
    for replica in [a, b] {
        let (status, answer) = send(deliver(replica)).await.expect("redelivery");
        assert_eq!(status, StatusCode::OK, "{} answered {answer}", replica.name);
    }
    let snapshot = stock(&store, "tee").await;
    assert_eq!(
        snapshot.row.on_hand, 3,
        "a redelivered webhook never decrements again"
    );
    let stored = store
        .load_order(OrderId::parse(&order_id).expect("id"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(stored.status, OrderStatus::Processing);
    assert_eq!(
        stored
            .history
            .iter()
            .filter(|h| h.status == OrderStatus::Processing)
            .count(),
        1,
        "processing once: {:?}",
        stored.history
    );
    let (_, on_a) = send(order_on(a)).await.expect("order on A");
    assert_eq!(on_a["status"], "processing", "A caught up: {on_a}");
    drop(started);
    cassandra::drop_keyspace(&keyspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_sale_leaves_the_invariants_to_the_survivor() {
    let _serial = one_at_a_time().await;
    const UNITS: i64 = 60;
    const SHOPPERS: usize = 300;
    let (started, keyspace) = replicas(2, "5s").await;
    let started: Vec<Arc<Replica>> = started.into_iter().map(Arc::new).collect();
    put_product(&client(), &started[0], "crash-tee", UNITS).await;

    let placed_so_far = Arc::new(vec![AtomicUsize::new(0), AtomicUsize::new(0)]);
    let sale = {
        let (started, placed_so_far) = (started.clone(), placed_so_far.clone());
        // Shoppers keep arriving (one every 20 ms, for 6 s) after B dies.
        tokio::spawn(async move {
            flash_sale(
                &started,
                "crash-tee",
                SHOPPERS,
                Duration::from_millis(20),
                placed_so_far,
            )
            .await
        })
    };
    // Kill B once it has answered some orders 200, while its shoppers are still checking
    // out. (Not once some stock is reserved: on a slow machine, B's reservations can all be
    // in flight, none answered yet, and then it has placed nothing for A to adopt.)
    let store = cassandra::open(&keyspace).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while placed_so_far[1].load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline && !sale.is_finished(),
            "B placed no order while the sale ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started[1].kill_9();
    let timed = sale.await.expect("sale");
    let outcomes: Vec<Outcome> = timed.iter().map(|(o, _)| o.clone()).collect();

    let orders = placed(&outcomes);
    assert!(
        outcomes.iter().any(|o| matches!(o, Outcome::Lost(_))),
        "B's shoppers saw it die"
    );
    // Shoppers alternate A, B, A, ...: B's are the odd ones.
    let placed_on_b = placed(
        &outcomes
            .iter()
            .skip(1)
            .step_by(2)
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert!(
        !placed_on_b.is_empty(),
        "B placed orders before it died, for the survivor to adopt"
    );

    // TTL 5 s: the survivor expires its own pending orders, and adopts B's at its periodic
    // scan of the active orders, then expires them too.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let active = store.active_orders().await.expect("active orders");
        let mut live = Vec::new();
        for id in active {
            if let Some(order) = store.load_order(id).await.expect("load")
                && order.is_active()
            {
                live.push((id, order.status));
            }
        }
        if live.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor never settled {} orders: {:?}\nA's log:\n{}",
            live.len(),
            &live[..live.len().min(5)],
            started[0].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // What B's checkouts held before their orders were stored (B died between reserving
    // and storing) is released by A once B has been silent for 10 s (API.md's crash rule,
    // for a replica that does not come back): no reservation outlives it.
    let silent_since = Instant::now();
    let snapshot = loop {
        let snapshot = stock(&store, "crash-tee").await;
        if snapshot.reservations.is_empty() {
            break snapshot;
        }
        assert!(
            silent_since.elapsed() < Duration::from_secs(60),
            "A never released what B's unfinished checkouts held: {:?}\nA's log:\n{}",
            snapshot.reservations,
            started[0].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        snapshot.row.on_hand, UNITS,
        "conservation: nothing was paid"
    );
    let mut held = Vec::new();
    for (outcome, answered_at) in &timed {
        let Outcome::Placed(id) = outcome else {
            continue;
        };
        let order = store
            .load_order(*id)
            .await
            .expect("load")
            .expect("a 200 is durable");
        assert_eq!(order.status, OrderStatus::Expired, "{id}");
        let expired_at = order
            .history
            .iter()
            .find(|h| h.status == OrderStatus::Expired)
            .expect("expired in its history")
            .at;
        held.push((*answered_at, expired_at));
    }
    let most = most_held_at_once(&held);
    assert!(
        most as i64 <= UNITS,
        "never oversold: {most} orders held a unit at once, for {UNITS} units ({} placed over \
         the sale, some sold again after an expiry)",
        orders.len()
    );
    eprintln!(
        "kill -9 mid-sale: {} orders placed ({} on B), {} shoppers lost, no reservation left \
         {:.1} s after the orders settled",
        orders.len(),
        placed_on_b.len(),
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Lost(_)))
            .count(),
        silent_since.elapsed().as_secs_f64()
    );
    drop(started);
    cassandra::drop_keyspace(&keyspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_edited_through_both_replicas_in_turn_never_needs_a_retry() {
    let _serial = one_at_a_time().await;
    let (started, _keyspace) = replicas(2, "15m").await;
    let client = client();
    put_product(&client, &started[0], "tee", 50).await;
    let shopper = token("carol", false);
    let created = client
        .post(started[0].url("/api/carts"))
        .bearer_auth(&shopper)
        .send()
        .await
        .expect("create cart");
    assert_eq!(created.status(), StatusCode::CREATED);
    let cart: Value = created.json().await.expect("cart json");
    let cart_id = cart["cartId"].as_str().expect("cartId").to_string();
    // Round robin, as a load balancer would: every edit lands on the other replica than the
    // last one, whose cart actor still holds the state from before.
    for quantity in 1..=6_i64 {
        let (here, there) = if quantity % 2 == 1 { (0, 1) } else { (1, 0) };
        let edited = client
            .put(started[here].url(&format!("/api/carts/{cart_id}/items/tee")))
            .bearer_auth(&shopper)
            .json(&json!({ "quantity": quantity }))
            .send()
            .await
            .expect("edit");
        assert_eq!(
            edited.status(),
            StatusCode::OK,
            "edit {quantity} on replica {here}"
        );
        let read: Value = client
            .get(started[there].url(&format!("/api/carts/{cart_id}")))
            .bearer_auth(&shopper)
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("cart json");
        assert_eq!(
            read["items"][0]["quantity"], quantity,
            "replica {there} reads the edit made on replica {here}"
        );
    }
}

#[test]
fn orders_held_at_once_count_an_expiry_before_a_placement_at_the_same_moment() {
    let t = |s: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s);
    assert_eq!(
        most_held_at_once(&[(t(0), t(5)), (t(1), t(6)), (t(5), t(7))]),
        2
    );
    assert_eq!(
        most_held_at_once(&[(t(0), t(9)), (t(1), t(8)), (t(2), t(7))]),
        3
    );
    assert_eq!(most_held_at_once(&[]), 0);
}

/// A crash between recording an order's effects done and leaving the active set leaves the
/// order listed as active though it needs nothing. A replica's scan of the active orders (at
/// start-up, then every 15 s) retires that entry, rather than waking the order at every scan
/// for ever.
#[tokio::test]
async fn an_active_entry_a_crash_left_behind_is_retired_by_the_scan() {
    use kassa_actors::domain::UserId;
    use kassa_actors::order::Effect;
    use kassa_actors::store::WriteOutcome;
    let _serial = one_at_a_time().await;
    let keyspace = cassandra::fresh_keyspace("replicas");
    cassandra::migrate(&keyspace).await;
    let store = cassandra::open(&keyspace).await;
    let id = OrderId::new();
    let mut paid =
        kassa_actors::conformance::order(id, &UserId("alice".into()), OrderStatus::Processing, 1);
    paid.pending_effects = vec![Effect::CommitStock];
    assert_eq!(
        store.write_order(&paid, 0).await.expect("written"),
        WriteOutcome::Applied
    );
    // The crash: its effects recorded done (as `record_effects_done` writes it), its entry
    // in the active set not yet deleted.
    cassandra::session()
        .await
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.order_effects_done (id, version) VALUES (?, 1) \
                 USING TIMESTAMP 1"
            ),
            (id.0,),
        )
        .await
        .expect("effects done");
    assert!(store.active_orders().await.expect("active").contains(&id));
    let loaded = store.load_order(id).await.expect("load").expect("stored");
    assert!(!loaded.is_active(), "it needs nothing: {loaded:?}");

    let client = client();
    let mut replica = Replica::spawn("A", &keyspace, "15m");
    replica.ready(&client).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.active_orders().await.expect("active").contains(&id) {
        assert!(
            Instant::now() < deadline,
            "still listed after 30 s; replica log:\n{}",
            replica.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(replica);
    cassandra::drop_keyspace(&keyspace).await;
}
