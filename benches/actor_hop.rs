//! The actor hop: one request and its reply between threads, as every handler -> actor ask
//! and every order -> product ask makes. `addr_send`: `Addr::send` from the system thread to
//! an actor on an arbiter of the pool; `registry_ask`: the same through `Registry::ask`
//! (DashMap lookup, timeout) as Kassa's code does; `pipelined_64`: 64 asks in flight.
//!
//! Run: `cargo bench --bench actor_hop`.

use actix::prelude::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use kassa_actors::registry::{ActorPool, KeyedActor, Membership, Registry};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Message)]
#[rtype(result = "u64")]
struct Ping(u64);

struct Echo {
    _membership: Option<Membership<Echo>>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl KeyedActor for Echo {
    type Key = u64;
    const KIND: &'static str = "bench_echo";
}

impl Handler<Ping> for Echo {
    type Result = u64;

    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> u64 {
        msg.0 + 1
    }
}

fn hop(c: &mut Criterion) {
    let system = System::new();
    let (pool, addr, registry) = system.block_on(async {
        let pool = Arc::new(ActorPool::new(2));
        let arbiter = Arbiter::new();
        let addr = Echo::start_in_arbiter(&arbiter.handle(), |_| Echo { _membership: None });
        let registry = Registry::new(pool.clone(), Duration::from_secs(30), |m| Echo {
            _membership: Some(m),
        });
        (pool, addr, registry)
    });
    let mut group = c.benchmark_group("actor_hop");
    group.throughput(Throughput::Elements(1));
    group.bench_function("addr_send", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    addr.send(Ping(i)).await.expect("reply");
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("registry_ask", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    registry.ask(&7, Ping(i)).await.expect("reply");
                }
                start.elapsed()
            })
        })
    });
    let keys: Vec<u64> = (0..8).collect();
    group.throughput(Throughput::Elements(64));
    group.bench_function("pipelined_64", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    join_all((0..64u64).map(|i| registry.ask(&keys[(i % 8) as usize], Ping(i))))
                        .await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    pool.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = hop
}
criterion_main!(benches);
