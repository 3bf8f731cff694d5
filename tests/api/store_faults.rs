//! A store that fails or stalls under the handlers' own store calls (idempotency records and
//! the order list): the contract's overload answer, 503 with `Retry-After`, never a 500 or a
//! hang; and, with requests held open by a stalled store, admission refusing the ones beyond
//! `KASSA_MAX_IN_FLIGHT` at once.

use async_trait::async_trait;
use kassa::config::RawConfig;
use kassa_actors::store::{StoreError, StoreResult};
use kassa_testkit::app::{TestApp, assert_error, sample, spawn_app_on_store};
use kassa_testkit::store::{HookedStore, Hooks, Method};
use reqwest::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const STALLED: u8 = 2;

/// The faults of a store that delegates everything: `list_orders` and the idempotency calls
/// fail or never answer while told to.
struct Faults {
    fault: Arc<AtomicU8>,
    /// Calls that have stalled so far.
    stalls: Arc<AtomicUsize>,
}

#[async_trait]
impl Hooks for Faults {
    async fn before(&self, method: Method) -> StoreResult<()> {
        if !matches!(
            method,
            Method::ListOrders
                | Method::ClaimIdempotency
                | Method::CompleteIdempotency
                | Method::ReleaseIdempotency
        ) {
            return Ok(());
        }
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

/// An app over a store with `Faults`, and the switch of its fault.
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
        move |inner| Arc::new(HookedStore::new(inner, Faults { fault, stalls })),
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
