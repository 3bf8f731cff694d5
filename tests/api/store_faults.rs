//! A store that fails or stalls under the handlers' own store calls (idempotency records and
//! the order list): the contract's overload answer, 503 with `Retry-After`, never a 500 or a
//! hang; and, with requests held open by a stalled store, admission refusing the ones beyond
//! `KASSA_MAX_IN_FLIGHT` at once.

use crate::helpers::{TestApp, assert_error, sample, spawn_app_on_store};
use async_trait::async_trait;
use kassa::config::RawConfig;
use kassa_actors::domain::{CartId, OrderId, Sku, UserId};
use kassa_actors::store::{
    CartRecord, CheckoutSession, IdempotencyClaim, IdempotencyRequest, InFlightCheckout,
    OrderRecord, OutboxEmail, ProductSnapshot, ProductWrite, SharedStore, Store, StoreError,
    StoreResult, StoredResponse, WriteOutcome,
};
use reqwest::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const STALLED: u8 = 2;

/// Delegates everything; `list_orders` and the idempotency calls fail or never answer
/// while told to.
struct FaultyStore {
    inner: SharedStore,
    fault: Arc<AtomicU8>,
    /// Calls that have stalled so far.
    stalls: Arc<AtomicUsize>,
}

impl FaultyStore {
    async fn fault(&self) -> StoreResult<()> {
        match self.fault.load(Ordering::SeqCst) {
            FAILING => Err(StoreError::Unavailable("connection refused".into())),
            STALLED => {
                self.stalls.fetch_add(1, Ordering::SeqCst);
                std::future::pending().await
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn load_product(&self, sku: &Sku) -> StoreResult<Option<ProductSnapshot>> {
        self.inner.load_product(sku).await
    }
    async fn write_product(&self, write: ProductWrite) -> StoreResult<WriteOutcome> {
        self.inner.write_product(write).await
    }
    async fn load_cart(&self, id: CartId) -> StoreResult<Option<CartRecord>> {
        self.inner.load_cart(id).await
    }
    async fn write_cart(&self, cart: &CartRecord, expected: u64) -> StoreResult<WriteOutcome> {
        self.inner.write_cart(cart, expected).await
    }
    async fn load_order(&self, id: OrderId) -> StoreResult<Option<OrderRecord>> {
        self.inner.load_order(id).await
    }
    async fn write_order(&self, order: &OrderRecord, expected: u64) -> StoreResult<WriteOutcome> {
        self.inner.write_order(order, expected).await
    }
    async fn list_orders(
        &self,
        user: &UserId,
        before: Option<OrderId>,
        limit: usize,
    ) -> StoreResult<Vec<OrderRecord>> {
        self.fault().await?;
        self.inner.list_orders(user, before, limit).await
    }
    async fn active_orders(&self) -> StoreResult<Vec<OrderId>> {
        self.inner.active_orders().await
    }
    async fn claim_idempotency(
        &self,
        request: IdempotencyRequest<'_>,
    ) -> StoreResult<IdempotencyClaim> {
        self.fault().await?;
        self.inner.claim_idempotency(request).await
    }
    async fn complete_idempotency(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        self.fault().await?;
        self.inner.complete_idempotency(user, key, response).await
    }
    async fn release_idempotency(&self, user: &UserId, key: &str) -> StoreResult<()> {
        self.fault().await?;
        self.inner.release_idempotency(user, key).await
    }
    async fn purge_idempotency(
        &self,
        created_before: time::OffsetDateTime,
        limit: usize,
    ) -> StoreResult<usize> {
        self.inner.purge_idempotency(created_before, limit).await
    }
    async fn enqueue_email(&self, email: &OutboxEmail) -> StoreResult<()> {
        self.inner.enqueue_email(email).await
    }
    async fn enqueue_claimed_email(
        &self,
        email: &OutboxEmail,
        claimed_until: time::OffsetDateTime,
    ) -> StoreResult<bool> {
        self.inner.enqueue_claimed_email(email, claimed_until).await
    }
    async fn update_email(&self, email: &OutboxEmail) -> StoreResult<()> {
        self.inner.update_email(email).await
    }
    async fn replace_email(
        &self,
        expected: &OutboxEmail,
        next: &OutboxEmail,
    ) -> StoreResult<WriteOutcome> {
        self.inner.replace_email(expected, next).await
    }
    async fn due_emails(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<OutboxEmail>> {
        self.inner.due_emails(now, limit).await
    }
    async fn outbox_depth(&self) -> StoreResult<u64> {
        self.inner.outbox_depth().await
    }

    async fn put_session(&self, session: &CheckoutSession) -> StoreResult<()> {
        self.inner.put_session(session).await
    }
    async fn load_session(&self, id: &str) -> StoreResult<Option<CheckoutSession>> {
        self.inner.load_session(id).await
    }
    async fn purge_sessions(
        &self,
        expired_before: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<usize> {
        self.inner.purge_sessions(expired_before, limit).await
    }
    async fn list_products(&self, after: Option<&Sku>, limit: usize) -> StoreResult<Vec<Sku>> {
        self.inner.list_products(after, limit).await
    }
    async fn locked_carts(&self, limit: usize) -> StoreResult<Vec<CartRecord>> {
        self.inner.locked_carts(limit).await
    }
    async fn release_unfinished_idempotency(&self) -> StoreResult<usize> {
        self.inner.release_unfinished_idempotency().await
    }
    async fn release_email_claims(&self, now: time::OffsetDateTime) -> StoreResult<usize> {
        self.inner.release_email_claims(now).await
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    fn replica(&self) -> Option<&str> {
        self.inner.replica()
    }
    async fn heartbeat(&self, now: time::OffsetDateTime) -> StoreResult<()> {
        self.inner.heartbeat(now).await
    }
    async fn silent_replicas(
        &self,
        now: time::OffsetDateTime,
        silence: time::Duration,
    ) -> StoreResult<Vec<String>> {
        self.inner.silent_replicas(now, silence).await
    }
    async fn begin_checkout(&self, checkout: &InFlightCheckout) -> StoreResult<()> {
        self.inner.begin_checkout(checkout).await
    }
    async fn fence_order(&self, order_id: OrderId) -> StoreResult<bool> {
        self.inner.fence_order(order_id).await
    }
    async fn end_checkout(&self, replica: &str, order_id: OrderId) -> StoreResult<()> {
        self.inner.end_checkout(replica, order_id).await
    }
    async fn checkouts_of(
        &self,
        replica: &str,
        limit: usize,
    ) -> StoreResult<Vec<InFlightCheckout>> {
        self.inner.checkouts_of(replica, limit).await
    }
    async fn forget_replica(&self, replica: &str) -> StoreResult<()> {
        self.inner.forget_replica(replica).await
    }
    async fn release_unfinished_key(
        &self,
        user: &UserId,
        key: &str,
        claim: uuid::Uuid,
    ) -> StoreResult<()> {
        self.inner.release_unfinished_key(user, key, claim).await
    }
    async fn release_email_claims_of(
        &self,
        now: time::OffsetDateTime,
        replicas: &[String],
    ) -> StoreResult<usize> {
        self.inner.release_email_claims_of(now, replicas).await
    }
}

/// An app over a `FaultyStore`, and the switch of its fault.
async fn app_with_faults() -> (TestApp, Arc<AtomicU8>) {
    let (app, fault, _) = app_with_faults_and(|_| {}).await;
    (app, fault)
}

/// `app_with_faults` with the raw keys adjusted by `tweak`; also the count of stalled calls.
async fn app_with_faults_and(
    tweak: impl FnOnce(&mut RawConfig),
) -> (TestApp, Arc<AtomicU8>, Arc<AtomicUsize>) {
    let fault = Arc::new(AtomicU8::new(HEALTHY));
    let stalls = Arc::new(AtomicUsize::new(0));
    let (switch, stalled) = (fault.clone(), stalls.clone());
    let app = spawn_app_on_store(
        move |inner| {
            Arc::new(FaultyStore {
                inner,
                fault,
                stalls,
            })
        },
        tweak,
    )
    .await;
    (app, switch, stalled)
}

/// Asserts the 503 the contract promises: `store_unavailable` with a `Retry-After`.
async fn assert_retry_later(response: reqwest::Response) {
    assert!(
        response.headers().contains_key("retry-after"),
        "no Retry-After: {:?}",
        response.headers()
    );
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    )
    .await;
}

#[actix_web::test]
async fn a_failing_store_under_the_order_list_is_503_with_retry_after() {
    let (app, fault) = app_with_faults().await;
    let token = app.token("alice", false);
    let list = || {
        app.client
            .get(app.url("/api/orders"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(list().await.expect("request").status(), StatusCode::OK);
    fault.store(FAILING, Ordering::SeqCst);
    assert_retry_later(list().await.expect("request")).await;
    fault.store(HEALTHY, Ordering::SeqCst);
    assert_eq!(list().await.expect("request").status(), StatusCode::OK);
    app.stop().await;
}

#[actix_web::test]
async fn a_failing_store_under_an_idempotency_key_is_503_and_the_key_stays_usable() {
    let (app, fault) = app_with_faults().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (token, cart) = app.cart_with("alice", "tee", 1).await;
    fault.store(FAILING, Ordering::SeqCst);
    assert_retry_later(app.checkout(&token, &cart, Some("key-1")).await).await;
    assert_eq!(app.available("tee").await, 5, "nothing was reserved");
    fault.store(HEALTHY, Ordering::SeqCst);
    let response = app.checkout(&token, &cart, Some("key-1")).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}

#[actix_web::test]
async fn a_stalled_store_under_the_order_list_is_503_within_the_ask_timeout() {
    let (app, fault) = app_with_faults().await;
    let token = app.token("alice", false);
    fault.store(STALLED, Ordering::SeqCst);
    let started = Instant::now();
    let response = app
        .client
        .get(app.url("/api/orders"))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("an answer, not a hang");
    assert!(
        started.elapsed() <= kassa::http::ASK_TIMEOUT + Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    assert_retry_later(response).await;
    fault.store(HEALTHY, Ordering::SeqCst);
    app.stop().await;
}

#[actix_web::test]
async fn beyond_the_requests_in_flight_bound_a_request_is_refused_at_once_but_probes_pass() {
    let (app, fault, stalls) =
        app_with_faults_and(|raw| raw.max_in_flight = Some("2".into())).await;
    let token = app.token("alice", false);
    let list = || {
        app.client
            .get(app.url("/api/orders"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(15))
            .send()
    };
    fault.store(STALLED, Ordering::SeqCst);
    // Two order lists held open by the stalled store (until the ask timeout).
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(list())).collect();
    let deadline = Instant::now() + Duration::from_secs(4);
    while stalls.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the order lists never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The third, a product read that would not touch the store's faulty calls.
    let started = Instant::now();
    let response = app.get_product("tee").await;
    let waited = started.elapsed();
    eprintln!("the third request in flight was refused after {waited:?}");
    assert!(
        waited < Duration::from_secs(1),
        "refused after {waited:?}, not at once"
    );
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let started = Instant::now();
        let response = app.client.get(app.url(probe)).send().await.expect("probe");
        assert_eq!(response.status(), StatusCode::OK, "{probe}");
        assert!(started.elapsed() < Duration::from_secs(1), "{probe}");
    }
    assert!(sample(&app.scrape().await, "kassa_http_shed_total") >= 1.0);

    fault.store(HEALTHY, Ordering::SeqCst);
    for held in held {
        let answered = held.await.expect("joined").expect("an answer");
        assert_eq!(
            answered.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "stalled until the ask timeout"
        );
    }
    assert_eq!(
        list().await.expect("request").status(),
        StatusCode::OK,
        "places given back"
    );
    app.stop().await;
}
