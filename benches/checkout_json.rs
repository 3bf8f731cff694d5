//! JSON of the checkout: parsing the POST /api/orders body (as the handler does, into a
//! `serde_json::Value`, and straight into `CheckoutBody`) and writing its 200 answer.
//!
//! Run: `cargo bench --bench checkout_json`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kassa::routes::orders::{CheckoutBody, CheckoutResponse};
use std::hint::black_box;
use std::time::Duration;

const REQUEST: &str = r#"{"cartId":"0192f7a4-6a53-7cc1-9b8e-3f1d2c4b5a69","shippingDetails":{"name":"Alice Doe","line1":"1 Main St","line2":"Flat 2","city":"Berlin","postalCode":"10115","country":"DE","email":"alice@example.com"},"paymentMethod":"card"}"#;

fn json(c: &mut Criterion) {
    let response = CheckoutResponse {
        order_id: uuid::Uuid::now_v7(),
        payment_url: "http://127.0.0.1:8080/sandbox/pay/pay_0192f7a46a537cc19b8e".into(),
        payment_token: "tok_3f1d2c4b5a690192f7a46a537cc1".into(),
        status: "pending_payment".into(),
        total: 5997,
        currency: "EUR".into(),
        expires_at: time::OffsetDateTime::now_utc(),
    };
    let mut group = c.benchmark_group("checkout_json");
    group.throughput(Throughput::Bytes(REQUEST.len() as u64));
    group.bench_function("parse_request_to_value", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(REQUEST)).expect("json"))
    });
    group.bench_function("parse_request_typed", |b| {
        b.iter(|| serde_json::from_str::<CheckoutBody>(black_box(REQUEST)).expect("json"))
    });
    group.bench_function("write_response", |b| {
        b.iter(|| serde_json::to_vec(black_box(&response)).expect("json"))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = json
}
criterion_main!(benches);
