//! JWT validation: what every authenticated request pays before its handler runs
//! (`Authenticator::verify` on an HS256 token with email and roles, and a rejected one).
//!
//! Run: `cargo bench --bench jwt`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kassa::auth::{Authenticator, TokenRequest, mint};
use kassa::config::{JwtConfig, JwtKey};
use kassa_actors::clock::{SharedClock, SystemClock};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn jwt(c: &mut Criterion) {
    let config = JwtConfig {
        key: JwtKey::Secret(b"a-bench-secret-of-reasonable-length".to_vec()),
        issuer: None,
        audience: None,
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let auth = Authenticator::new(&config, clock.clone()).expect("authenticator");
    let token = mint(
        &config,
        &clock,
        TokenRequest {
            sub: "alice",
            email: Some("alice@example.com"),
            admin: true,
            ttl: Duration::from_secs(3600),
            private_key_pem: None,
        },
    )
    .expect("mint");
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });

    let mut group = c.benchmark_group("jwt");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_hs256", |b| {
        b.iter(|| auth.verify(black_box(&token)).expect("valid"))
    });
    group.bench_function("reject_bad_signature", |b| {
        b.iter(|| auth.verify(black_box(&forged)).is_err())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = jwt
}
criterion_main!(benches);
