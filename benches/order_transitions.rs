//! The order transition table (`kassa_actors::order::decide`): every (status, event) cell,
//! the decision each webhook and expiry tick makes.
//!
//! Run: `cargo bench --bench order_transitions`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kassa_actors::order::{OrderEvent, OrderStatus, decide};
use std::hint::black_box;
use std::time::Duration;

const EVENTS: [OrderEvent; 8] = [
    OrderEvent::PaymentSucceeded {
        amount_matches: true,
        stock_held: true,
    },
    OrderEvent::PaymentSucceeded {
        amount_matches: true,
        stock_held: false,
    },
    OrderEvent::PaymentSucceeded {
        amount_matches: false,
        stock_held: true,
    },
    OrderEvent::PaymentSucceeded {
        amount_matches: false,
        stock_held: false,
    },
    OrderEvent::PaymentFailed,
    OrderEvent::GatewayUnavailable,
    OrderEvent::ReservationExpired,
    OrderEvent::RefundAccepted,
];

fn transitions(c: &mut Criterion) {
    let cells: Vec<(OrderStatus, OrderEvent)> = OrderStatus::ALL
        .iter()
        .flat_map(|s| EVENTS.iter().map(move |e| (*s, *e)))
        .collect();
    let mut group = c.benchmark_group("order_transitions");
    group.throughput(Throughput::Elements(cells.len() as u64));
    group.bench_function("every_cell", |b| {
        b.iter(|| {
            for (status, event) in &cells {
                black_box(decide(black_box(*status), black_box(*event)));
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = transitions
}
criterion_main!(benches);
