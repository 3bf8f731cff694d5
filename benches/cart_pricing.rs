//! Cart pricing (`CartRecord::total`): what every cart answer and checkout computes, for a
//! typical cart and a large one.
//!
//! Run: `cargo bench --bench cart_pricing`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kassa_actors::domain::{CartId, Currency, Sku, UserId};
use kassa_actors::store::{CartLine, CartRecord};
use std::hint::black_box;
use std::time::Duration;

fn cart(lines: usize) -> CartRecord {
    CartRecord {
        id: CartId::new(),
        owner: UserId("alice".into()),
        lines: (0..lines)
            .map(|i| CartLine {
                sku: Sku::parse(&format!("sku-{i}")).expect("sku"),
                name: format!("Product {i}"),
                quantity: 1 + (i % 3) as u32,
                unit_price: 999 + i as i64 * 100,
                currency: Currency::EUR,
            })
            .collect(),
        locked_by: None,
        locked_until: None,
        last_paid_order: None,
        version: 1,
    }
}

fn pricing(c: &mut Criterion) {
    let mut group = c.benchmark_group("cart_pricing");
    for lines in [3, 50] {
        let cart = cart(lines);
        group.throughput(Throughput::Elements(lines as u64));
        group.bench_with_input(BenchmarkId::new("total", lines), &cart, |b, cart| {
            b.iter(|| black_box(cart).total())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = pricing
}
criterion_main!(benches);
