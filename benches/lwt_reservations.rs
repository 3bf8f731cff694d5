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
use kassa::store::scylla::ScyllaStore;
use kassa_actors::ActorSettings;
use kassa_actors::clock::{SharedClock, SystemClock};
use kassa_actors::domain::{Currency, OrderId, Sku};
use kassa_actors::product::{ProductActor, Reserve, ReserveOutcome, UpsertProduct};
use kassa_actors::registry::{ActorPool, Registry};
use kassa_actors::store::{SharedStore, StoreResult};
use kassa_testkit::cassandra;
use kassa_testkit::records;
use kassa_testkit::store::{HookedStore, Hooks, Method};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PRICE: i64 = 1999;

/// Counts product writes (each one LWT) on the way to the scylla store.
#[derive(Default)]
struct CountProductWrites {
    product_writes: AtomicU64,
}

#[async_trait]
impl Hooks for CountProductWrites {
    async fn before(&self, method: Method) -> StoreResult<()> {
        if method == Method::WriteProduct {
            self.product_writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The scylla store, counting product writes.
type Counted = HookedStore<CountProductWrites, ScyllaStore>;

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
        let store = Arc::new(Counted::new(
            Arc::new(cassandra::open(&keyspace).await),
            CountProductWrites::default(),
        ));
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
        let upsert = UpsertProduct {
            info: records::product_info("Hot", PRICE),
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
            bench.store.hooks().product_writes.load(Ordering::Relaxed),
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
        let writes =
            (bench.store.hooks().product_writes.load(Ordering::Relaxed) - writes0 - skus).max(1);
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
