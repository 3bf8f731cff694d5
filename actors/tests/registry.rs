//! The registry: activation on first ask, passivation after idleness (state survives in the
//! store), and asks that shed load instead of hanging.

mod common;

use common::{Harness, JoinAll, sku, tee, user, wait_until};
use kassa_actors::ActorSettings;
use kassa_actors::cart::{CreateCart, GetCart, SetLine};
use kassa_actors::domain::{CartId, OrderId, Quantity};
use kassa_actors::product::{Commit, CommitOutcome, GetProduct, ReserveOutcome};
use kassa_actors::registry::{AskError, PassivateIfIdle};
use std::time::Duration as StdDuration;
use time::Duration;

#[actix_rt::test]
async fn the_first_ask_starts_one_actor_per_key_and_later_asks_share_it() {
    let h = Harness::new();
    let (a, b) = (sku("tee-m"), sku("tee-l"));
    assert_eq!(h.products.live_count(), 0);
    assert!(!h.products.is_live(&a));

    h.upsert(&a, 1).await;
    let first = h.products.addr(&a);
    assert!(h.products.is_live(&a));
    h.upsert(&a, 2).await;
    assert_eq!(h.products.addr(&a), first, "same actor for the same key");
    assert_eq!(h.products.live_count(), 1);

    h.upsert(&b, 1).await;
    assert_ne!(h.products.addr(&b), first, "one actor per key");
    assert_eq!(h.products.live_count(), 2);
    assert_eq!(h.carts.live_count(), 0, "each kind has its own registry");
}

#[actix_rt::test]
async fn an_idle_product_actor_passivates_and_the_next_ask_reloads_its_state() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let (held, sold) = (OrderId::new(), OrderId::new());
    for order in [held, sold] {
        let answer = h.products.ask(&s, h.reserve(order, 2)).await;
        assert_eq!(answer, Ok(Ok(ReserveOutcome::Reserved)));
    }
    let answer = h.products.ask(&s, Commit { order_id: sold }).await;
    assert_eq!(answer, Ok(Ok(CommitOutcome::Committed)));
    let before = h
        .products
        .ask(&s, GetProduct)
        .await
        .expect("answered")
        .expect("loaded");
    let first = h.products.addr(&s);

    h.go_idle_and_passivate();
    wait_until("the idle actor stopped", || !h.products.is_live(&s)).await;
    assert_eq!(h.products.live_count(), 0);
    assert!(!first.connected());

    let after = h
        .products
        .ask(&s, GetProduct)
        .await
        .expect("answered")
        .expect("loaded");
    assert_eq!(after, before, "state intact, reloaded from the store");
    assert!(h.products.is_live(&s));
    assert_ne!(h.products.addr(&s), first, "a fresh activation");
    let replay = h.products.ask(&s, Commit { order_id: sold }).await;
    assert_eq!(
        replay,
        Ok(Ok(CommitOutcome::AlreadyCommitted)),
        "the committed marker survived passivation"
    );
    let answer = h.products.ask(&s, Commit { order_id: held }).await;
    assert_eq!(answer, Ok(Ok(CommitOutcome::Committed)));
}

#[actix_rt::test]
async fn an_actor_that_is_not_idle_ignores_the_passivation_tick() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let addr = h.products.addr(&s);
    h.clock
        .advance(h.settings.idle_after - Duration::seconds(1));
    h.products.broadcast(PassivateIfIdle);
    // The mailbox is FIFO: once this answers, the tick has been handled.
    h.products
        .ask(&s, GetProduct)
        .await
        .expect("answered")
        .expect("loaded");
    assert!(addr.connected(), "the actor did not stop");
    assert_eq!(h.products.addr(&s), addr);
    assert_eq!(h.products.live_count(), 1);
}

#[actix_rt::test]
async fn passivation_stops_only_the_idle_actors() {
    let h = Harness::new();
    let (idle, busy) = (sku("idle"), sku("busy"));
    h.upsert(&idle, 1).await;
    h.clock.advance(h.settings.idle_after);
    h.upsert(&busy, 1).await;
    let busy_addr = h.products.addr(&busy);

    h.products.broadcast(PassivateIfIdle);
    wait_until("the idle actor stopped", || !h.products.is_live(&idle)).await;
    h.products
        .ask(&busy, GetProduct)
        .await
        .expect("answered")
        .expect("loaded");
    assert_eq!(h.products.addr(&busy), busy_addr, "the busy actor lives on");
    assert_eq!(h.products.live_count(), 1);
}

#[actix_rt::test]
async fn an_idle_cart_actor_passivates_and_the_next_ask_reloads_its_lines() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    h.carts
        .ask(
            &id,
            CreateCart {
                owner: alice.clone(),
            },
        )
        .await
        .expect("answered")
        .expect("created");
    let cart = h
        .carts
        .ask(
            &id,
            SetLine {
                user: alice.clone(),
                sku: sku("tee-m"),
                quantity: Quantity::parse(2).expect("valid"),
                product: tee(),
            },
        )
        .await
        .expect("answered")
        .expect("added");

    h.go_idle_and_passivate();
    wait_until("the idle cart actor stopped", || !h.carts.is_live(&id)).await;
    assert_eq!(h.carts.live_count(), 0);

    let reloaded = h
        .carts
        .ask(&id, GetCart { user: alice })
        .await
        .expect("answered");
    assert_eq!(reloaded, Ok(cart));
    assert_eq!(h.carts.live_count(), 1);
}

#[actix_rt::test]
async fn an_ask_to_a_stalled_actor_is_overloaded_within_the_ask_timeout() {
    let ask_timeout = StdDuration::from_millis(200);
    let (h, control) = Harness::controlled_with(ActorSettings::default(), ask_timeout);
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    h.go_idle_and_passivate();
    wait_until("the actor passivated", || !h.products.is_live(&s)).await;

    // The next activation cannot load its state: nothing it is sent gets an answer.
    control.hold_loads();
    let answer = tokio::time::timeout(common::DEADLINE, h.products.ask(&s, GetProduct))
        .await
        .expect("the ask gives up instead of hanging");
    assert_eq!(answer, Err(AskError::Overloaded));

    // Every caller is shed the same way, all within the one timeout.
    let asks = JoinAll::new((0..50).map(|_| h.products.ask(&s, h.reserve(OrderId::new(), 1))));
    let answers = tokio::time::timeout(common::DEADLINE, asks)
        .await
        .expect("asks give up instead of hanging");
    assert!(
        answers.iter().all(|a| *a == Err(AskError::Overloaded)),
        "{answers:?}"
    );

    // Once the store answers again, the same actor serves normally.
    control.open_loads();
    let view = h
        .products
        .ask(&s, GetProduct)
        .await
        .expect("answered")
        .expect("loaded")
        .expect("listed");
    assert_eq!(view.on_hand, 10);
}

#[actix_rt::test]
async fn an_ask_to_a_full_mailbox_is_overloaded_not_queued_forever() {
    let settings = ActorSettings {
        mailbox_capacity: 4,
        ..ActorSettings::default()
    };
    let (h, control) = Harness::controlled_with(settings, StdDuration::from_millis(200));
    let s = sku("tee-m");
    control.hold_loads();
    let asks = JoinAll::new((0..32).map(|_| h.products.ask(&s, GetProduct)));
    let answers = tokio::time::timeout(common::DEADLINE, asks)
        .await
        .expect("asks give up instead of hanging");
    assert!(
        answers.iter().all(|a| *a == Err(AskError::Overloaded)),
        "{answers:?}"
    );
    control.open_loads();
    let answer = h.products.ask(&s, GetProduct).await;
    assert_eq!(answer, Ok(Ok(None)));
}

/// Reports how its registry started it.
struct Probe {
    membership: kassa_actors::registry::Membership<Probe>,
}

impl actix::Actor for Probe {
    type Context = actix::Context<Self>;

    fn stopping(&mut self, ctx: &mut Self::Context) -> actix::Running {
        use actix::AsyncContext;
        self.membership.leave(&ctx.address());
        actix::Running::Stop
    }
}

/// A probe goes when asked to make room, unless its key is in the pinned set (a busy actor).
impl actix::Handler<kassa_actors::registry::Evict> for Probe {
    type Result = ();

    fn handle(&mut self, _: kassa_actors::registry::Evict, ctx: &mut Self::Context) {
        use actix::ActorContext;
        if !PINNED
            .lock()
            .expect("pinned")
            .contains(self.membership.key())
        {
            ctx.stop();
        }
    }
}

static PINNED: std::sync::Mutex<Vec<OrderId>> = std::sync::Mutex::new(Vec::new());

impl kassa_actors::registry::KeyedActor for Probe {
    type Key = OrderId;
    const KIND: &'static str = "probe";
}

#[derive(Clone, actix::Message)]
#[rtype(result = "bool")]
struct StartedNew;

impl actix::Handler<StartedNew> for Probe {
    type Result = bool;

    fn handle(&mut self, _: StartedNew, _: &mut Self::Context) -> bool {
        self.membership.is_new()
    }
}

#[actix_rt::test]
async fn ask_new_starts_an_actor_that_knows_nothing_is_stored_and_ask_does_not() {
    let pool = std::sync::Arc::new(kassa_actors::registry::ActorPool::new(1));
    let probes = kassa_actors::registry::Registry::new(pool, StdDuration::from_secs(5), |m| {
        Probe { membership: m }
    });
    let (fresh, existing) = (OrderId::new(), OrderId::new());
    assert_eq!(probes.ask_new(&fresh, StartedNew).await, Ok(true));
    assert_eq!(
        probes.ask(&fresh, StartedNew).await,
        Ok(true),
        "the live actor keeps how it was started"
    );
    assert_eq!(probes.ask(&existing, StartedNew).await, Ok(false));
    assert_eq!(
        probes.ask_new(&existing, StartedNew).await,
        Ok(false),
        "a live actor is used as it is"
    );
}

#[actix_rt::test]
async fn over_its_cap_a_registry_stops_the_oldest_idle_actors_and_keeps_busy_ones() {
    let pool = std::sync::Arc::new(kassa_actors::registry::ActorPool::new(1));
    let probes = kassa_actors::registry::Registry::new(pool, StdDuration::from_secs(5), |m| {
        Probe { membership: m }
    })
    .with_max_live(10);
    let busy = OrderId::new();
    PINNED.lock().expect("pinned").push(busy);
    assert_eq!(probes.ask(&busy, StartedNew).await, Ok(false));
    for _ in 0..200 {
        assert_eq!(probes.ask(&OrderId::new(), StartedNew).await, Ok(false));
    }
    wait_until("the registry is back near its cap", || {
        probes.live_count() <= 10 + 4
    })
    .await;
    assert!(probes.is_live(&busy), "the oldest, but busy: kept");
}
