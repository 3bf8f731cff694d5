//! One hot SKU's ProductActor: `n` concurrent reservers each Reserve one unit for their own
//! order and then Commit it, through the registry as checkout and the webhook do; n = 1, 16
//! and 256. Over `MemoryStore` (the actor and group commit alone) and over the embedded redb
//! store (every batch one durable transaction, fsync included). After each case it prints
//! the mean batch size: commands per product write (memory) or per store commit (embedded).
//!
//! Run: `cargo bench --bench product_actor`.

use actix::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use kassa::store::embedded::EmbeddedStore;
use kassa_actors::ActorSettings;
use kassa_actors::clock::{SharedClock, SystemClock};
use kassa_actors::domain::{Currency, OrderId, ProductInfo, Sku};
use kassa_actors::product::{
    Commit, CommitOutcome, ProductActor, Reserve, ReserveOutcome, UpsertProduct,
};
use kassa_actors::registry::{ActorPool, Registry};
use kassa_actors::store::{MemoryStore, SharedStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PRICE: i64 = 1999;

struct Bench {
    pool: Arc<ActorPool>,
    products: Registry<ProductActor>,
    sku: Sku,
    clock: SharedClock,
    commands: AtomicU64,
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
        let sku = Sku::parse("hot-sku").expect("sku");
        let info = ProductInfo {
            name: "Hot".into(),
            price: PRICE,
            currency: Currency::EUR,
        };
        products
            .ask(
                &sku,
                UpsertProduct {
                    info,
                    stock: 1_000_000_000,
                },
            )
            .await
            .expect("answered")
            .expect("durable");
        Self {
            pool,
            products,
            sku,
            clock,
            commands: AtomicU64::new(0),
        }
    }

    /// One reserver: reserve a unit for a fresh order, then commit it.
    async fn reserve_and_commit(&self) {
        let order_id = OrderId::new();
        let reserve = Reserve {
            order_id,
            qty: 1,
            expires_at: self.clock.now() + time::Duration::minutes(15),
            expected_price: Some((PRICE, Currency::EUR)),
        };
        let reserved = self.products.ask(&self.sku, reserve).await;
        assert!(matches!(reserved, Ok(Ok(ReserveOutcome::Reserved))));
        let committed = self.products.ask(&self.sku, Commit { order_id }).await;
        assert!(matches!(committed, Ok(Ok(CommitOutcome::Committed))));
        self.commands.fetch_add(2, Ordering::Relaxed);
    }

    fn run(&self, system: &SystemRunner, reservers: usize, rounds: u64) -> Duration {
        system.block_on(async {
            let start = Instant::now();
            for _ in 0..rounds {
                join_all((0..reservers).map(|_| self.reserve_and_commit())).await;
            }
            start.elapsed()
        })
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
            b.iter_custom(|rounds| bench.run(&system, reservers, rounds))
        });
        let commands = bench.commands.load(Ordering::Relaxed) - commands0;
        let written = (writes() - writes0).max(1);
        println!(
            "{name}/reserve_commit/{reservers}: mean batch size {:.1} ({commands} commands, {written} writes)",
            commands as f64 / written as f64
        );
    }
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
    targets = memory, embedded
}
criterion_main!(benches);
