//! Reservations per second on one hot SKU over the scylla store, on the real Cassandra node
//! (testkit/src/cassandra.rs starts it, or `KASSA_TEST_CASSANDRA=host:port`): every
//! product write is one lightweight transaction (a conditional batch on the SKU partition).
//! - `group_commit/256`: 256 concurrent Reserves through the registry, as checkouts send
//!   them; the ProductActor turns whatever queued during one LWT into the next LWT.
//! - `one_per_write/32`: the same Reserves one after another, each awaited: what a single
//!   writer per SKU does without group commit (one LWT per reservation).
//!
//! Each round starts on a fresh SKU (created outside the timing), so every round measures
//! the same partition size. Both cases run in the same process against the same node; after
//! each case it prints the mean batch size (reservations per LWT).
//! Run: `cargo bench --bench lwt_reservations`.

use actix::prelude::*;
use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use kassa_actors::ActorSettings;
use kassa_actors::clock::{SharedClock, SystemClock};
use kassa_actors::domain::{CartId, Currency, OrderId, ProductInfo, Sku, UserId};
use kassa_actors::product::{ProductActor, Reserve, ReserveOutcome, UpsertProduct};
use kassa_actors::registry::{ActorPool, Registry};
use kassa_actors::store::{
    CartRecord, CheckoutSession, IdempotencyClaim, IdempotencyRequest, InFlightCheckout,
    OrderRecord, OutboxEmail, ProductSnapshot, ProductWrite, SharedStore, Store, StoreResult,
    StoredResponse, WriteOutcome,
};
use kassa_testkit::cassandra;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const PRICE: i64 = 1999;

/// The scylla store, counting product writes (each one LWT).
struct Counted {
    inner: kassa::store::scylla::ScyllaStore,
    product_writes: AtomicU64,
}

#[async_trait]
impl Store for Counted {
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn load_product(&self, sku: &Sku) -> StoreResult<Option<ProductSnapshot>> {
        self.inner.load_product(sku).await
    }
    async fn write_product(&self, write: ProductWrite) -> StoreResult<WriteOutcome> {
        self.product_writes.fetch_add(1, Ordering::Relaxed);
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
        self.inner.list_orders(user, before, limit).await
    }
    async fn active_orders(&self) -> StoreResult<Vec<OrderId>> {
        self.inner.active_orders().await
    }
    async fn claim_idempotency(&self, r: IdempotencyRequest<'_>) -> StoreResult<IdempotencyClaim> {
        self.inner.claim_idempotency(r).await
    }
    async fn complete_idempotency(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        self.inner.complete_idempotency(user, key, response).await
    }
    async fn release_idempotency(&self, user: &UserId, key: &str) -> StoreResult<()> {
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

struct Bench {
    pool: Arc<ActorPool>,
    products: Registry<ProductActor>,
    store: Arc<Counted>,
    clock: SharedClock,
    keyspace: String,
    reservations: AtomicU64,
    skus: AtomicU64,
}

impl Bench {
    async fn start() -> Self {
        let keyspace = cassandra::fresh_keyspace("bench");
        cassandra::migrate(&keyspace).await;
        let store = Arc::new(Counted {
            inner: cassandra::open(&keyspace).await,
            product_writes: AtomicU64::new(0),
        });
        let clock: SharedClock = Arc::new(SystemClock);
        let pool = Arc::new(ActorPool::new(2));
        let products = {
            let (clock, store): (_, SharedStore) = (clock.clone(), store.clone());
            Registry::new(pool.clone(), Duration::from_secs(60), move |m| {
                ProductActor::new(m, store.clone(), clock.clone(), ActorSettings::default())
            })
        };
        Self {
            pool,
            products,
            store,
            clock,
            keyspace,
            reservations: AtomicU64::new(0),
            skus: AtomicU64::new(0),
        }
    }

    /// A fresh SKU with a billion units.
    async fn hot_sku(&self, mode: &str) -> Sku {
        let n = self.skus.fetch_add(1, Ordering::Relaxed);
        let sku = Sku::parse(&format!("hot-{mode}-{n}")).expect("sku");
        let info = ProductInfo {
            name: "Hot".into(),
            price: PRICE,
            currency: Currency::EUR,
        };
        let upsert = UpsertProduct {
            info,
            stock: 1_000_000_000,
        };
        self.products
            .ask(&sku, upsert)
            .await
            .expect("answered")
            .expect("durable");
        sku
    }

    async fn reserve(&self, sku: &Sku) {
        let reserve = Reserve {
            order_id: OrderId::new(),
            qty: 1,
            expires_at: self.clock.now() + time::Duration::minutes(15),
            expected_price: Some((PRICE, Currency::EUR)),
        };
        let reserved = self.products.ask(sku, reserve).await;
        assert!(
            matches!(reserved, Ok(Ok(ReserveOutcome::Reserved))),
            "{reserved:?}"
        );
        self.reservations.fetch_add(1, Ordering::Relaxed);
    }
}

fn lwt_reservations(c: &mut Criterion) {
    let system = System::new();
    let bench = system.block_on(Bench::start());
    let mut group = c.benchmark_group("lwt_reservations");
    let cases: [(&str, usize); 2] = [("group_commit", 256), ("one_per_write", 32)];
    for (mode, reservers) in cases {
        let (reservations0, writes0, skus0) = (
            bench.reservations.load(Ordering::Relaxed),
            bench.store.product_writes.load(Ordering::Relaxed),
            bench.skus.load(Ordering::Relaxed),
        );
        group.throughput(Throughput::Elements(reservers as u64));
        group.bench_function(BenchmarkId::new(mode, reservers), |b| {
            b.iter_custom(|rounds| {
                system.block_on(async {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..rounds {
                        let sku = bench.hot_sku(mode).await;
                        let start = Instant::now();
                        if mode == "group_commit" {
                            join_all((0..reservers).map(|_| bench.reserve(&sku))).await;
                        } else {
                            for _ in 0..reservers {
                                bench.reserve(&sku).await;
                            }
                        }
                        elapsed += start.elapsed();
                    }
                    elapsed
                })
            })
        });
        let reservations = bench.reservations.load(Ordering::Relaxed) - reservations0;
        // Each round's SKU was created by one more product write.
        let skus = bench.skus.load(Ordering::Relaxed) - skus0;
        let writes = (bench.store.product_writes.load(Ordering::Relaxed) - writes0 - skus).max(1);
        println!(
            "lwt_reservations/{mode}/{reservers}: {reservations} reservations in {writes} LWTs, \
             mean batch {:.1}",
            reservations as f64 / writes as f64
        );
    }
    group.finish();
    bench.pool.shutdown();
    system.block_on(cassandra::drop_keyspace(&bench.keyspace));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    targets = lwt_reservations
}
criterion_main!(benches);
