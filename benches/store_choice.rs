//! Which embedded store, and does group commit pay? Durable writes (fsync on every commit) of
//! ~200-byte values under SKU-like keys, on redb and fjall, one write per commit versus 64
//! writes sharing one commit. Self-contained: uses redb and fjall directly, not kassa's code.
//!
//! Run: `cargo bench --bench store_choice` (about a minute). Throughput is in writes/s.

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::time::Duration;

/// Writes per iteration in every variant, so all four report comparable writes/s.
const WRITES: usize = 64;
const VALUE_LEN: usize = 200;

const PRODUCTS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("products");

/// A fresh SKU-like key each call, so every write is an insert of a new key.
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("sku-{:010}-tee-m-blue", self.0)
    }
}

fn value() -> Vec<u8> {
    // Shaped like a serialised product row, padded to VALUE_LEN bytes.
    let mut v =
        br#"{"info":{"name":"Tee","price":1999,"currency":"EUR"},"on_hand":10,"version":7}"#
            .to_vec();
    v.resize(VALUE_LEN, b' ');
    v
}

fn redb_commit(db: &redb::Database, keys: &mut Keys, value: &[u8], per_txn: usize) {
    let mut txn = db.begin_write().expect("begin");
    txn.set_durability(redb::Durability::Immediate)
        .expect("durability");
    {
        let mut table = txn.open_table(PRODUCTS).expect("table");
        for _ in 0..per_txn {
            table.insert(keys.next().as_str(), value).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

fn bench_redb(c: &mut Criterion, per_txn: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = redb::Database::create(dir.path().join("bench.redb")).expect("create");
    let (mut keys, value) = (Keys(0), value());
    let mut group = group(c);
    group.bench_function(format!("redb/{per_txn}_per_commit"), |b| {
        b.iter(|| {
            for _ in 0..WRITES / per_txn {
                redb_commit(&db, &mut keys, &value, per_txn);
            }
        });
    });
    group.finish();
}

fn bench_fjall(c: &mut Criterion, per_batch: usize) {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::builder(dir.path()).open().expect("open");
    let products = db
        .keyspace("products", KeyspaceCreateOptions::default)
        .expect("keyspace");
    let (mut keys, value) = (Keys(0), value());
    let mut group = group(c);
    group.bench_function(format!("fjall/{per_batch}_per_commit"), |b| {
        b.iter(|| {
            for _ in 0..WRITES / per_batch {
                if per_batch == 1 {
                    products
                        .insert(keys.next(), value.as_slice())
                        .expect("insert");
                } else {
                    let mut batch = db.batch();
                    for _ in 0..per_batch {
                        batch.insert(&products, keys.next(), value.as_slice());
                    }
                    batch.commit().expect("commit");
                }
                db.persist(PersistMode::SyncAll).expect("persist");
            }
        });
    });
    group.finish();
}

fn group(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group("durable_writes");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        // Flat: the same iteration count per sample, meant for slow (fsync-bound) iterations.
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(WRITES as u64));
    group
}

fn store_choice(c: &mut Criterion) {
    bench_redb(c, 1);
    bench_redb(c, WRITES);
    bench_fjall(c, 1);
    bench_fjall(c, WRITES);
}

criterion_group!(benches, store_choice);
criterion_main!(benches);
