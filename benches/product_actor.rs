//! One hot SKU's ProductActor: `n` concurrent reservers each Reserve one unit for their own
//! order and then Commit it, through the registry as checkout and the webhook do; n = 1, 16
//! and 256. Over `MemoryStore` (the actor and group commit alone) and over the embedded redb
//! store (every batch one durable transaction, fsync included). After each case it prints
//! the mean batch size: commands per product write (memory) or per store commit (embedded).
//! Every sample starts on a fresh SKU: a commit leaves a marker in the SKU's reservations
//! (kept for `committed_retention`), and the actor's cost grows with them, which
//! `memory_10k_sold` measures on its own: the same as n = 16 on a SKU that already sold
//! 10,000 units.
//!
//! Run: `cargo bench --bench product_actor`.

use actix::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use kassa::store::embedded::EmbeddedStore;
use kassa_actors::ActorSettings;
use kassa_actors::clock::{SharedClock, SystemClock};
use kassa_actors::domain::{Currency, OrderId, Sku};
use kassa_actors::product::{
    Commit, CommitOutcome, ProductActor, Reserve, ReserveOutcome, UpsertProduct,
};
use kassa_actors::registry::{ActorPool, Registry};
use kassa_actors::store::{MemoryStore, SharedStore};
use kassa_testkit::records;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PRICE: i64 = 1999;

struct Bench {
    pool: Arc<ActorPool>,
    products: Registry<ProductActor>,
    clock: SharedClock,
    commands: AtomicU64,
    skus: AtomicU64,
}

impl Bench {
    async fn start(store: SharedStore) -> Self {
        let clock: SharedClock = Arc::new(SystemClock);
        let pool = Arc::new(ActorPool::new(2));
        let products = {
            let clock = clock.clone();
            Registry::new(pool.clone(), Duration::from_secs(60), move |m| {
                ProductActor::new(m, store.clone(), clock.clone(), ActorSettings::default())
            })
        };
        Self {
            pool,
            products,
            clock,
            commands: AtomicU64::new(0),
            skus: AtomicU64::new(0),
        }
    }

    /// A SKU nobody reserved yet, with plenty of stock.
    async fn fresh_sku(&self) -> Sku {
        let n = self.skus.fetch_add(1, Ordering::Relaxed);
        let sku = Sku::parse(&format!("hot-{n}")).expect("sku");
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

    /// One reserver: reserve a unit for a fresh order, then commit it.
    async fn reserve_and_commit(&self, sku: &Sku) {
        let order_id = OrderId::new();
        let reserve = Reserve {
            order_id,
            qty: 1,
            expires_at: self.clock.now() + time::Duration::minutes(15),
            expected_price: Some((PRICE, Currency::EUR)),
        };
        let reserved = self.products.ask(sku, reserve).await;
        assert!(matches!(reserved, Ok(Ok(ReserveOutcome::Reserved))));
        let committed = self.products.ask(sku, Commit { order_id }).await;
        assert!(matches!(committed, Ok(Ok(CommitOutcome::Committed))));
        self.commands.fetch_add(2, Ordering::Relaxed);
    }

    /// `rounds` rounds of `reservers` concurrent reserve+commit on `sku` (a fresh SKU when
    /// `None`, set up outside the timing); answers the time they took.
    fn run(
        &self,
        system: &SystemRunner,
        sku: Option<&Sku>,
        reservers: usize,
        rounds: u64,
    ) -> Duration {
        system.block_on(async {
            let fresh;
            let sku = match sku {
                Some(sku) => sku,
                None => {
                    fresh = self.fresh_sku().await;
                    &fresh
                }
            };
            let start = Instant::now();
            for _ in 0..rounds {
                join_all((0..reservers).map(|_| self.reserve_and_commit(sku))).await;
            }
            start.elapsed()
        })
    }
}

fn print_batch_size(case: &str, commands: u64, writes: u64) {
    if commands > 0 {
        println!(
            "{case}: mean batch size {:.1} ({commands} commands, {writes} writes)",
            commands as f64 / writes.max(1) as f64
        );
    }
}

fn group_commit(c: &mut Criterion, name: &str, store: SharedStore, writes: &dyn Fn() -> u64) {
    let system = System::new();
    let bench = system.block_on(Bench::start(store));
    let mut group = c.benchmark_group(name);
    for reservers in [1usize, 16, 256] {
        let (commands0, writes0) = (bench.commands.load(Ordering::Relaxed), writes());
        group.throughput(Throughput::Elements(reservers as u64));
        group.bench_function(BenchmarkId::new("reserve_commit", reservers), |b| {
            b.iter_custom(|rounds| bench.run(&system, None, reservers, rounds))
        });
        print_batch_size(
            &format!("{name}/reserve_commit/{reservers}"),
            bench.commands.load(Ordering::Relaxed) - commands0,
            writes() - writes0,
        );
    }
    group.finish();
    bench.pool.shutdown();
}

/// n = 16 on one SKU that already sold 10,000 units (their commit markers are kept).
fn memory_10k_sold(c: &mut Criterion) {
    let system = System::new();
    let store = Arc::new(MemoryStore::new());
    let bench = system.block_on(Bench::start(store));
    let sku = system.block_on(bench.fresh_sku());
    bench.run(&system, Some(&sku), 100, 100);
    let mut group = c.benchmark_group("product_actor_memory_10k_sold");
    group.throughput(Throughput::Elements(16));
    group.bench_function(BenchmarkId::new("reserve_commit", 16), |b| {
        b.iter_custom(|rounds| bench.run(&system, Some(&sku), 16, rounds))
    });
    group.finish();
    bench.pool.shutdown();
}

fn memory(c: &mut Criterion) {
    let store = Arc::new(MemoryStore::new());
    let counter = store.clone();
    group_commit(c, "product_actor_memory", store, &|| {
        counter.product_writes()
    });
}

fn embedded(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("embedded store"));
    let counter = store.clone();
    group_commit(c, "product_actor_embedded", store, &|| counter.commits());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = memory, embedded, memory_10k_sold
}
criterion_main!(benches);
