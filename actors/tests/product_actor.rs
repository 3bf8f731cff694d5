//! ProductActor, driven through its registry as production does, over a `MemoryStore` and a
//! `ManualClock`.

mod common;

use common::{Harness, JoinAll, sku, tee, wait_until};
use kassa_actors::ActorError;
use kassa_actors::ActorSettings;
use kassa_actors::domain::{Currency, OrderId, ProductInfo};
use kassa_actors::product::{
    Commit, CommitOutcome, DeleteProduct, GetProduct, ProductView, Release, ReleaseOutcome,
    ReserveOutcome, UpsertProduct,
};
use kassa_actors::registry::{AskError, PassivateIfIdle};
use kassa_actors::store::{
    MemoryStore, ProductRow, ProductWrite, Reservation, Store, StoreResult, WriteOutcome,
};
use kassa_testkit::store::{HookedStore, Hooks, Method};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;
use time::Duration;

async fn get(h: &Harness, s: &kassa_actors::domain::Sku) -> Option<ProductView> {
    h.products
        .ask(s, GetProduct)
        .await
        .expect("answered")
        .expect("get never fails on a loaded actor")
}

async fn reserve(
    h: &Harness,
    s: &kassa_actors::domain::Sku,
    order: OrderId,
    qty: u32,
) -> ReserveOutcome {
    h.products
        .ask(s, h.reserve(order, qty))
        .await
        .expect("answered")
        .expect("reserve is durable")
}

async fn commit(h: &Harness, s: &kassa_actors::domain::Sku, order_id: OrderId) -> CommitOutcome {
    h.products
        .ask(s, Commit { order_id })
        .await
        .expect("answered")
        .expect("commit is durable")
}

async fn release(h: &Harness, s: &kassa_actors::domain::Sku, order_id: OrderId) -> ReleaseOutcome {
    h.products
        .ask(s, Release { order_id })
        .await
        .expect("answered")
        .expect("release is durable")
}

fn reservation_of(
    snapshot: &kassa_actors::store::ProductSnapshot,
    order: OrderId,
) -> Option<&Reservation> {
    snapshot.reservations.iter().find(|r| r.order_id == order)
}

/// Either layer may report that the store is down: the actor (its state could not be loaded
/// or written) or the registry (fresh actors kept stopping before answering).
fn is_unavailable<T: std::fmt::Debug>(answer: &Result<Result<T, ActorError>, AskError>) -> bool {
    matches!(
        answer,
        Err(AskError::Unavailable) | Ok(Err(ActorError::Unavailable))
    )
}

// ---------------------------------------------------------------- catalog

#[actix_rt::test]
async fn an_upserted_product_shows_available_as_on_hand_minus_reserved() {
    let h = Harness::new();
    let s = sku("tee-m");
    let view = h.upsert(&s, 10).await;
    assert_eq!(
        view,
        ProductView {
            sku: s.clone(),
            info: tee(),
            on_hand: 10,
            reserved: 0,
            available: 10
        }
    );
    assert_eq!(
        reserve(&h, &s, OrderId::new(), 3).await,
        ReserveOutcome::Reserved
    );
    let view = get(&h, &s).await.expect("listed");
    assert_eq!((view.on_hand, view.reserved, view.available), (10, 3, 7));
    let stored = h.stored_product(&s).await;
    assert_eq!(stored.row.on_hand, 10);
    assert_eq!(stored.row.info, Some(tee()));
}

#[actix_rt::test]
async fn a_sku_never_upserted_has_no_view() {
    let h = Harness::new();
    assert_eq!(get(&h, &sku("nope")).await, None);
}

#[actix_rt::test]
async fn upsert_replaces_price_and_stock_but_keeps_live_reservations() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let order = OrderId::new();
    assert_eq!(reserve(&h, &s, order, 4).await, ReserveOutcome::Reserved);
    let repriced = ProductInfo {
        price: 2499,
        ..tee()
    };
    let view = h
        .products
        .ask(
            &s,
            UpsertProduct {
                info: repriced.clone(),
                stock: 6,
            },
        )
        .await
        .expect("answered")
        .expect("durable");
    assert_eq!(
        (view.info, view.on_hand, view.reserved, view.available),
        (repriced, 6, 4, 2)
    );
    assert!(reservation_of(&h.stored_product(&s).await, order).is_some());
}

#[actix_rt::test]
async fn available_never_goes_below_zero_when_stock_is_cut_under_reservations() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    assert_eq!(
        reserve(&h, &s, OrderId::new(), 8).await,
        ReserveOutcome::Reserved
    );
    let view = h.upsert(&s, 5).await;
    assert_eq!((view.on_hand, view.reserved, view.available), (5, 8, 0));
}

// ---------------------------------------------------------------- reserve

#[actix_rt::test]
async fn reserve_beyond_available_is_refused_and_reports_what_is_available() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 5).await;
    assert_eq!(
        reserve(&h, &s, OrderId::new(), 3).await,
        ReserveOutcome::Reserved
    );
    let refused = OrderId::new();
    assert_eq!(
        reserve(&h, &s, refused, 3).await,
        ReserveOutcome::InsufficientStock { available: 2 }
    );
    assert!(reservation_of(&h.stored_product(&s).await, refused).is_none());
    assert_eq!(
        reserve(&h, &s, OrderId::new(), 2).await,
        ReserveOutcome::Reserved
    );
    assert_eq!(get(&h, &s).await.expect("listed").available, 0);
}

#[actix_rt::test]
async fn reserve_for_an_unknown_product_is_refused() {
    let h = Harness::new();
    let s = sku("ghost");
    assert_eq!(
        reserve(&h, &s, OrderId::new(), 1).await,
        ReserveOutcome::UnknownProduct
    );
    assert!(
        h.memory.load_product(&s).await.expect("load").is_none(),
        "a refusal writes nothing"
    );
}

#[actix_rt::test]
async fn reserve_at_a_stale_price_reports_the_current_price() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 5).await;
    let mut stale = h.reserve(OrderId::new(), 1);
    stale.expected_price = Some((1499, Currency::EUR));
    let answer = h.products.ask(&s, stale).await.expect("answered");
    assert_eq!(
        answer,
        Ok(ReserveOutcome::PriceChanged {
            current: 1999,
            currency: Currency::EUR,
            available: 5
        })
    );
    let mut other_currency = h.reserve(OrderId::new(), 1);
    other_currency.expected_price = Some((1999, Currency::USD));
    let answer = h.products.ask(&s, other_currency).await.expect("answered");
    assert_eq!(
        answer,
        Ok(ReserveOutcome::PriceChanged {
            current: 1999,
            currency: Currency::EUR,
            available: 5
        })
    );
    assert_eq!(get(&h, &s).await.expect("listed").reserved, 0);
}

#[actix_rt::test]
async fn repeated_reserve_for_the_same_order_is_one_reservation() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 5).await;
    let order = OrderId::new();
    for _ in 0..3 {
        assert_eq!(reserve(&h, &s, order, 2).await, ReserveOutcome::Reserved);
    }
    assert_eq!(get(&h, &s).await.expect("listed").reserved, 2);
    let stored = h.stored_product(&s).await;
    assert_eq!(stored.reservations.len(), 1);
    assert_eq!(reservation_of(&stored, order).map(|r| r.qty), Some(2));
}

// ---------------------------------------------------------------- commit and release

#[actix_rt::test]
async fn commit_turns_a_reservation_into_a_stock_decrement_exactly_once() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let order = OrderId::new();
    assert_eq!(reserve(&h, &s, order, 3).await, ReserveOutcome::Reserved);
    assert_eq!(commit(&h, &s, order).await, CommitOutcome::Committed);
    for _ in 0..2 {
        assert_eq!(commit(&h, &s, order).await, CommitOutcome::AlreadyCommitted);
    }
    let view = get(&h, &s).await.expect("listed");
    assert_eq!((view.on_hand, view.reserved, view.available), (7, 0, 7));
    let stored = h.stored_product(&s).await;
    assert_eq!(stored.row.on_hand, 7, "decremented once, durably");
    assert!(
        reservation_of(&stored, order).is_some_and(|r| r.committed),
        "the committed marker is kept so a replay is recognised"
    );
}

#[actix_rt::test]
async fn commit_without_a_reservation_changes_nothing() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let writes = h.memory.product_writes();
    assert_eq!(
        commit(&h, &s, OrderId::new()).await,
        CommitOutcome::NotReserved
    );
    assert_eq!(h.stored_product(&s).await.row.on_hand, 10);
    assert_eq!(h.memory.product_writes(), writes);
}

#[actix_rt::test]
async fn release_gives_units_back_and_is_idempotent() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 4).await;
    let order = OrderId::new();
    assert_eq!(reserve(&h, &s, order, 4).await, ReserveOutcome::Reserved);
    assert_eq!(
        reserve(&h, &s, OrderId::new(), 1).await,
        ReserveOutcome::InsufficientStock { available: 0 }
    );
    assert_eq!(release(&h, &s, order).await, ReleaseOutcome::Released);
    assert_eq!(release(&h, &s, order).await, ReleaseOutcome::NotReserved);
    let view = get(&h, &s).await.expect("listed");
    assert_eq!((view.on_hand, view.reserved, view.available), (4, 0, 4));
    assert!(h.stored_product(&s).await.reservations.is_empty());
    assert_eq!(
        reserve(&h, &s, OrderId::new(), 4).await,
        ReserveOutcome::Reserved
    );
}

#[actix_rt::test]
async fn release_never_undoes_a_commit() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let order = OrderId::new();
    assert_eq!(reserve(&h, &s, order, 3).await, ReserveOutcome::Reserved);
    assert_eq!(commit(&h, &s, order).await, CommitOutcome::Committed);
    assert_eq!(
        release(&h, &s, order).await,
        ReleaseOutcome::AlreadyCommitted
    );
    let view = get(&h, &s).await.expect("listed");
    assert_eq!((view.on_hand, view.available), (7, 7));
    assert_eq!(h.stored_product(&s).await.row.on_hand, 7);
    assert_eq!(commit(&h, &s, order).await, CommitOutcome::AlreadyCommitted);
}

#[actix_rt::test]
async fn commit_after_release_is_not_reserved() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let order = OrderId::new();
    assert_eq!(reserve(&h, &s, order, 3).await, ReserveOutcome::Reserved);
    assert_eq!(release(&h, &s, order).await, ReleaseOutcome::Released);
    assert_eq!(commit(&h, &s, order).await, CommitOutcome::NotReserved);
    assert_eq!(h.stored_product(&s).await.row.on_hand, 10);
}

#[actix_rt::test]
async fn deleting_a_product_keeps_its_reservations_settleable() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let (paid, abandoned) = (OrderId::new(), OrderId::new());
    assert_eq!(reserve(&h, &s, paid, 3).await, ReserveOutcome::Reserved);
    assert_eq!(
        reserve(&h, &s, abandoned, 2).await,
        ReserveOutcome::Reserved
    );

    let deleted = h.products.ask(&s, DeleteProduct).await.expect("answered");
    assert_eq!(deleted, Ok(true));
    assert_eq!(get(&h, &s).await, None, "gone from the catalog");
    let again = h.products.ask(&s, DeleteProduct).await.expect("answered");
    assert_eq!(again, Ok(false), "was no longer listed");

    assert_eq!(
        reserve(&h, &s, OrderId::new(), 1).await,
        ReserveOutcome::UnknownProduct,
        "new shoppers cannot reserve it"
    );
    assert_eq!(commit(&h, &s, paid).await, CommitOutcome::Committed);
    assert_eq!(release(&h, &s, abandoned).await, ReleaseOutcome::Released);
    let stored = h.stored_product(&s).await;
    assert_eq!(stored.row.info, None);
    assert_eq!(stored.row.on_hand, 7);
    assert!(reservation_of(&stored, abandoned).is_none());

    // A paid order re-reserving (no price check) still can, from what is left.
    let mut rereserve = h.reserve(OrderId::new(), 2);
    rereserve.expected_price = None;
    let answer = h.products.ask(&s, rereserve).await.expect("answered");
    assert_eq!(answer, Ok(ReserveOutcome::Reserved));
}

// ---------------------------------------------------------------- group commit

#[actix_rt::test]
async fn concurrent_reserves_on_a_hot_sku_never_oversell_and_share_few_writes() {
    let (h, control) = Harness::controlled();
    let s = sku("hot");
    h.upsert(&s, 100).await;
    let writes_before = h.memory.product_writes();

    // Hold writes so the first reservation's write stays in flight while the rest arrive.
    control.hold_writes();
    let mut asks = JoinAll::new((0..200).map(|_| h.products.ask(&s, h.reserve(OrderId::new(), 1))));
    assert!(
        !asks.poll_once().await,
        "nothing can answer while writes are held"
    );
    wait_until("the first write is in flight", || {
        control.writes_waiting() >= 1
    })
    .await;
    control.open_writes();
    let answers = asks.await;

    let mut reserved = 0;
    let mut refused = 0;
    for answer in answers {
        match answer.expect("answered").expect("durable") {
            ReserveOutcome::Reserved => reserved += 1,
            ReserveOutcome::InsufficientStock { available: 0 } => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((reserved, refused), (100, 100));

    let reserve_writes = h.memory.product_writes() - writes_before;
    assert!(
        (2..=10).contains(&reserve_writes),
        "200 reserves should be group-committed in a few writes, took {reserve_writes}"
    );
    let stored = h.stored_product(&s).await;
    assert_eq!(stored.reservations.len(), 100);
    assert_eq!(stored.row.on_hand, 100);
    let view = get(&h, &s).await.expect("listed");
    assert_eq!((view.reserved, view.available), (100, 0));
}

#[actix_rt::test]
async fn a_get_during_an_in_flight_write_shows_only_durable_state() {
    let (h, control) = Harness::controlled();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    control.hold_writes();
    let mut pending = JoinAll::new([h.products.ask(&s, h.reserve(OrderId::new(), 4))]);
    assert!(!pending.poll_once().await);
    wait_until("the reserve's write is in flight", || {
        control.writes_waiting() >= 1
    })
    .await;

    let during = get(&h, &s).await.expect("listed");
    assert_eq!(
        (during.reserved, during.available),
        (0, 10),
        "a reservation is not visible before it is durable"
    );

    control.open_writes();
    let answers = pending.await;
    assert_eq!(answers[0], Ok(Ok(ReserveOutcome::Reserved)));
    let after = get(&h, &s).await.expect("listed");
    assert_eq!((after.reserved, after.available), (4, 6));
}

// ---------------------------------------------------------------- conflicts

/// Another replica's write to the SKU, made straight through the store.
async fn write_behind_the_actors_back(
    h: &Harness,
    s: &kassa_actors::domain::Sku,
    on_hand: i64,
    put: Vec<Reservation>,
) {
    let current = h.stored_product(s).await;
    let outcome = h
        .memory
        .write_product(ProductWrite {
            sku: s.clone(),
            expected_version: current.row.version,
            row: ProductRow {
                on_hand,
                version: current.row.version + 1,
                ..current.row
            },
            put_reservations: put,
            remove_reservations: vec![],
        })
        .await
        .expect("memory store answers");
    assert_eq!(outcome, WriteOutcome::Applied);
}

#[actix_rt::test]
async fn a_write_that_loses_to_another_writer_is_reloaded_and_retried_without_losing_either() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let mine = OrderId::new();
    assert_eq!(reserve(&h, &s, mine, 2).await, ReserveOutcome::Reserved);

    // Another replica restocks to 15 and reserves 3 for its own order.
    let theirs = Reservation {
        order_id: OrderId::new(),
        qty: 3,
        expires_at: h.now() + Duration::minutes(15),
        committed: false,
    };
    write_behind_the_actors_back(&h, &s, 15, vec![theirs.clone()]).await;
    let version_behind = h.stored_product(&s).await.row.version;

    let next = OrderId::new();
    assert_eq!(reserve(&h, &s, next, 4).await, ReserveOutcome::Reserved);

    let stored = h.stored_product(&s).await;
    assert_eq!(
        stored.row.on_hand, 15,
        "the other writer's restock survives"
    );
    assert_eq!(stored.row.version, version_behind + 1);
    assert!(reservation_of(&stored, mine).is_some());
    assert_eq!(reservation_of(&stored, theirs.order_id), Some(&theirs));
    assert_eq!(
        reservation_of(&stored, next).map(|r| r.qty),
        Some(4),
        "the retried reservation is durable"
    );
    let view = get(&h, &s).await.expect("listed");
    assert_eq!((view.on_hand, view.reserved, view.available), (15, 9, 6));
}

#[actix_rt::test]
async fn a_retried_decision_is_made_again_on_the_other_writers_stock() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    h.products
        .ask(&s, GetProduct)
        .await
        .expect("answered")
        .expect("loaded");

    // Behind the actor's back, another replica takes 9 of the 10 units.
    let theirs = Reservation {
        order_id: OrderId::new(),
        qty: 9,
        expires_at: h.now() + Duration::minutes(15),
        committed: false,
    };
    write_behind_the_actors_back(&h, &s, 10, vec![theirs]).await;

    // The actor still believes 10 are free; after the conflict it must see only 1.
    let order = OrderId::new();
    assert_eq!(
        reserve(&h, &s, order, 4).await,
        ReserveOutcome::InsufficientStock { available: 1 }
    );
    let stored = h.stored_product(&s).await;
    assert!(reservation_of(&stored, order).is_none(), "never oversold");
    assert_eq!(stored.reservations.len(), 1);
}

#[actix_rt::test]
async fn a_commit_retried_after_a_conflict_decrements_once() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let order = OrderId::new();
    assert_eq!(reserve(&h, &s, order, 3).await, ReserveOutcome::Reserved);
    write_behind_the_actors_back(&h, &s, 12, vec![]).await;

    assert_eq!(commit(&h, &s, order).await, CommitOutcome::Committed);
    assert_eq!(commit(&h, &s, order).await, CommitOutcome::AlreadyCommitted);
    let stored = h.stored_product(&s).await;
    assert_eq!(
        stored.row.on_hand, 9,
        "12 restocked by the other writer, minus 3 sold once"
    );
    assert!(reservation_of(&stored, order).is_some_and(|r| r.committed));
}

#[actix_rt::test]
async fn a_writer_that_keeps_losing_gives_up_as_contended_and_recovers() {
    let (h, control) = Harness::controlled();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    control.conflict_on_every_write();
    let order = OrderId::new();
    let answer = h
        .products
        .ask(&s, h.reserve(order, 1))
        .await
        .expect("answered");
    assert_eq!(answer, Err(ActorError::Contended));
    assert_eq!(
        control.conflicts_reported(),
        h.settings.max_conflict_retries as usize + 1,
        "one first attempt plus the bounded retries"
    );
    assert!(h.stored_product(&s).await.reservations.is_empty());

    control.heal();
    assert_eq!(reserve(&h, &s, order, 1).await, ReserveOutcome::Reserved);
    assert!(reservation_of(&h.stored_product(&s).await, order).is_some());
}

// ---------------------------------------------------------------- store failures

#[actix_rt::test]
async fn a_failed_write_answers_unavailable_changes_nothing_and_the_actor_recovers() {
    let (h, control) = Harness::controlled();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let before = h.stored_product(&s).await;

    control.fail_writes();
    let order = OrderId::new();
    let answer = h
        .products
        .ask(&s, h.reserve(order, 2))
        .await
        .expect("answered");
    assert_eq!(answer, Err(ActorError::Unavailable));
    assert_eq!(h.stored_product(&s).await, before, "nothing was written");
    let view = get(&h, &s).await.expect("listed");
    assert_eq!(
        view.reserved, 0,
        "the failed reservation left no trace in the actor either"
    );

    control.heal();
    assert_eq!(reserve(&h, &s, order, 2).await, ReserveOutcome::Reserved);
    assert_eq!(commit(&h, &s, order).await, CommitOutcome::Committed);
    assert_eq!(h.stored_product(&s).await.row.on_hand, 8);
}

#[actix_rt::test]
async fn a_store_that_goes_down_mid_write_stops_the_actor_and_a_fresh_one_recovers() {
    let (h, control) = Harness::controlled();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    control.go_down();
    let order = OrderId::new();
    let answer = h.products.ask(&s, h.reserve(order, 2)).await;
    assert_eq!(answer, Ok(Err(ActorError::Unavailable)));
    // Its reload failed too: it stops rather than carry on with state it cannot trust.
    wait_until("the actor stopped", || !h.products.is_live(&s)).await;
    let answer = h.products.ask(&s, GetProduct).await;
    assert!(is_unavailable(&answer), "got {answer:?}");

    control.heal();
    assert_eq!(reserve(&h, &s, order, 2).await, ReserveOutcome::Reserved);
    let view = get(&h, &s).await.expect("listed");
    assert_eq!((view.on_hand, view.reserved), (10, 2));
}

#[actix_rt::test]
async fn an_actor_whose_state_cannot_be_loaded_answers_unavailable_never_a_domain_answer() {
    let (h, control) = Harness::controlled();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    h.go_idle_and_passivate();
    wait_until("the actor passivated", || !h.products.is_live(&s)).await;

    // The next activation's load is held, then fails, with messages waiting in the mailbox.
    control.hold_loads();
    control.go_down();
    let mut asks = JoinAll::new([
        h.products.ask(&s, h.reserve(OrderId::new(), 1)),
        h.products.ask(&s, h.reserve(OrderId::new(), 1)),
    ]);
    let mut gets = JoinAll::new([h.products.ask(&s, GetProduct)]);
    assert!(!asks.poll_once().await);
    assert!(!gets.poll_once().await);
    wait_until("the load is held", || control.loads_waiting() >= 1).await;
    control.open_loads();

    for answer in asks.await {
        assert!(
            is_unavailable(&answer),
            "a reserve must not be decided on state that never loaded, got {answer:?}"
        );
    }
    for answer in gets.await {
        assert!(
            is_unavailable(&answer),
            "an unloaded product is not an unknown product, got {answer:?}"
        );
    }

    control.heal();
    assert_eq!(get(&h, &s).await.map(|v| v.available), Some(10));
    assert_eq!(
        reserve(&h, &s, OrderId::new(), 1).await,
        ReserveOutcome::Reserved
    );
}

// ---------------------------------------------------------------- sweeping and passivation

/// Stores a pending order with id `id` (as its checkout would have).
async fn store_pending_order(h: &Harness, id: OrderId) {
    let order = kassa_actors::conformance::order(
        id,
        &kassa_actors::domain::UserId("alice".into()),
        kassa_actors::order::OrderStatus::PendingPayment,
        1,
    );
    assert_eq!(
        h.memory.write_order(&order, 0).await.expect("write"),
        WriteOutcome::Applied
    );
}

/// The stored product once `done` holds of it (polled; the sweep's write is asynchronous).
async fn stored_once(
    h: &Harness,
    s: &kassa_actors::domain::Sku,
    what: &str,
    done: impl Fn(&kassa_actors::store::ProductSnapshot) -> bool,
) -> kassa_actors::store::ProductSnapshot {
    let deadline = std::time::Instant::now() + common::DEADLINE;
    loop {
        let snapshot = h.stored_product(s).await;
        if done(&snapshot) {
            return snapshot;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(StdDuration::from_millis(2)).await;
    }
}

#[actix_rt::test]
async fn a_reservation_whose_checkout_never_wrote_its_order_is_released_soon_after_it_expired() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let lost = OrderId::new();
    let pending = OrderId::new();
    assert_eq!(reserve(&h, &s, lost, 3).await, ReserveOutcome::Reserved);
    assert_eq!(reserve(&h, &s, pending, 2).await, ReserveOutcome::Reserved);
    store_pending_order(&h, pending).await;
    let expires_at = reservation_of(&h.stored_product(&s).await, lost)
        .expect("stored")
        .expires_at;

    // Within the short grace nothing is looked up or dropped.
    h.clock
        .advance(expires_at - h.now() + h.settings.lost_order_grace - Duration::seconds(1));
    h.products.broadcast(PassivateIfIdle);
    wait_until("the idle actor passivated", || !h.products.is_live(&s)).await;
    assert_eq!(h.stored_product(&s).await.reservations.len(), 2);

    // Past it, the next tick finds no order for `lost` and releases its units; the
    // reservation of the order that is stored waits for its order (or the hour's grace).
    h.clock.advance(Duration::seconds(1));
    assert_eq!(get(&h, &s).await.map(|v| v.available), Some(5));
    h.products.broadcast(PassivateIfIdle);
    let stored = stored_once(&h, &s, "the lost order's reservation is released", |p| {
        reservation_of(p, lost).is_none()
    })
    .await;
    assert!(reservation_of(&stored, pending).is_some());
    assert_eq!(stored.row.on_hand, 10, "releasing sells nothing");
    assert_eq!(get(&h, &s).await.map(|v| v.available), Some(8));
}

#[actix_rt::test]
async fn orphaned_reservations_are_swept_only_after_expiry_plus_grace() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let orphan = OrderId::new();
    assert_eq!(reserve(&h, &s, orphan, 3).await, ReserveOutcome::Reserved);
    // Its order is stored (but never settles it): only the hour's grace applies.
    store_pending_order(&h, orphan).await;
    let expires_at = reservation_of(&h.stored_product(&s).await, orphan)
        .expect("stored")
        .expires_at;

    // Just inside the grace period the order may still settle it: the idle actor passivates,
    // and the reservation stays in the store.
    // (The first tick looks its order up; a later one passivates.)
    h.clock
        .advance(expires_at - h.now() + h.settings.orphan_grace - Duration::seconds(1));
    wait_until("the idle actor passivated", || {
        h.products.broadcast(PassivateIfIdle);
        !h.products.is_live(&s)
    })
    .await;
    assert!(reservation_of(&h.stored_product(&s).await, orphan).is_some());

    // Reactivated (with the orphan loaded from the store) by a new reservation.
    let fresh = OrderId::new();
    assert_eq!(reserve(&h, &s, fresh, 1).await, ReserveOutcome::Reserved);
    store_pending_order(&h, fresh).await;
    assert_eq!(get(&h, &s).await.map(|v| v.available), Some(6));

    // Past expiry plus grace, the next passivation tick sweeps the orphan, durably.
    h.clock.advance(Duration::seconds(1));
    let addr = h.products.addr(&s);
    h.products.broadcast(PassivateIfIdle);
    let memory = h.memory.clone();
    let sku_for_poll = s.clone();
    let swept = async move {
        loop {
            let snapshot = memory
                .load_product(&sku_for_poll)
                .await
                .expect("load")
                .expect("stored");
            if reservation_of(&snapshot, orphan).is_none() {
                return snapshot;
            }
            tokio::time::sleep(StdDuration::from_millis(2)).await;
        }
    };
    let stored = tokio::time::timeout(common::DEADLINE, swept)
        .await
        .expect("the orphan is swept");
    assert!(
        reservation_of(&stored, fresh).is_some(),
        "a reservation within its grace is kept"
    );
    assert_eq!(
        stored.row.on_hand, 10,
        "sweeping gives units back, it sells nothing"
    );
    let view = get(&h, &s).await.expect("listed");
    assert_eq!((view.reserved, view.available), (1, 9));
    assert_eq!(h.products.addr(&s), addr, "the sweeping actor stays live");
    assert_eq!(commit(&h, &s, orphan).await, CommitOutcome::NotReserved);
}

#[actix_rt::test]
async fn a_committed_marker_outlives_the_orphan_grace_and_is_dropped_after_retention() {
    let h = Harness::new();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let order = OrderId::new();
    assert_eq!(reserve(&h, &s, order, 3).await, ReserveOutcome::Reserved);
    assert_eq!(commit(&h, &s, order).await, CommitOutcome::Committed);

    h.clock
        .advance(Duration::minutes(15) + h.settings.orphan_grace + Duration::minutes(1));
    h.products.broadcast(PassivateIfIdle);
    assert_eq!(
        commit(&h, &s, order).await,
        CommitOutcome::AlreadyCommitted,
        "a replayed commit is still recognised"
    );

    h.clock.advance(h.settings.committed_retention);
    h.products.broadcast(PassivateIfIdle);
    let memory = h.memory.clone();
    let sku_for_poll = s.clone();
    tokio::time::timeout(common::DEADLINE, async move {
        loop {
            let snapshot = memory
                .load_product(&sku_for_poll)
                .await
                .expect("load")
                .expect("stored");
            if snapshot.reservations.is_empty() {
                return;
            }
            tokio::time::sleep(StdDuration::from_millis(2)).await;
        }
    })
    .await
    .expect("the marker is dropped after its retention");
    assert_eq!(h.stored_product(&s).await.row.on_hand, 7);
}

#[actix_rt::test]
async fn a_reserve_arriving_as_the_actor_passivates_is_still_served() {
    let (h, control) = Harness::controlled();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    h.go_idle_and_passivate();
    wait_until("the actor passivated", || !h.products.is_live(&s)).await;

    // A fresh activation, held in its load so that the passivation tick and a reserve queue
    // up behind it in that order.
    control.hold_loads();
    let addr = h.products.addr(&s);
    wait_until("the load is held", || control.loads_waiting() >= 1).await;
    h.clock
        .advance(h.settings.idle_after + Duration::seconds(1));
    addr.do_send(PassivateIfIdle);
    let order = OrderId::new();
    let mut pending = JoinAll::new([h.products.ask(&s, h.reserve(order, 2))]);
    assert!(!pending.poll_once().await);
    control.open_loads();

    let answers = pending.await;
    assert_eq!(answers[0], Ok(Ok(ReserveOutcome::Reserved)));
    assert!(reservation_of(&h.stored_product(&s).await, order).is_some());
}

// ---------------------------------------------------------------- a shared store

/// Counts the store calls the actors make, by method; version reads can be held.
struct Calls {
    counts: Mutex<HashMap<Method, usize>>,
    versions_open: tokio::sync::watch::Sender<bool>,
}

impl Default for Calls {
    fn default() -> Self {
        Self {
            counts: Mutex::default(),
            versions_open: tokio::sync::watch::Sender::new(true),
        }
    }
}

#[async_trait::async_trait]
impl Hooks for Calls {
    async fn before(&self, method: Method) -> StoreResult<()> {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(method)
            .or_default() += 1;
        if method == Method::ProductVersion {
            let _ = self.versions_open.subscribe().wait_for(|open| *open).await;
        }
        Ok(())
    }
}

impl Calls {
    fn of(&self, method: Method) -> usize {
        let calls = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        calls.get(&method).copied().unwrap_or(0)
    }
}

/// Actors over a memory store that says other replicas write to it, counting their calls.
fn over_a_shared_store() -> (Harness, Arc<Calls>) {
    let memory = Arc::new(MemoryStore::shared());
    let calls = Arc::new(Calls::default());
    let store = Arc::new(HookedStore::new(memory.clone(), calls.clone()));
    let harness = Harness::over(
        store,
        memory,
        ActorSettings::default(),
        StdDuration::from_secs(5),
    );
    (harness, calls)
}

#[actix_rt::test]
async fn on_a_shared_store_sold_out_answers_are_confirmed_by_the_stored_version_in_batches() {
    let (h, calls) = over_a_shared_store();
    let s = sku("last-units");
    h.upsert(&s, 2).await;
    let first = OrderId::new();
    assert_eq!(reserve(&h, &s, first, 2).await, ReserveOutcome::Reserved);
    let loads = calls.of(Method::LoadProduct);

    // 50 late shoppers at once. The first version read is held until the others have
    // reached the actor (however slow the machine), so they all wait for the same next read.
    calls.versions_open.send_replace(false);
    let mut late = JoinAll::new((0..50).map(|_| h.products.ask(&s, h.reserve(OrderId::new(), 1))));
    assert!(!late.poll_once().await);
    wait_until("the first version read", || {
        calls.of(Method::ProductVersion) == 1
    })
    .await;
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    calls.versions_open.send_replace(true);
    let answers = late.await;
    for answer in answers {
        assert_eq!(
            answer.expect("answered").expect("durable"),
            ReserveOutcome::InsufficientStock { available: 0 }
        );
    }
    assert_eq!(
        calls.of(Method::LoadProduct),
        loads,
        "a sold-out answer reads the version, not the SKU's every reservation"
    );
    let confirmations = calls.of(Method::ProductVersion);
    assert!(
        (1..=10).contains(&confirmations),
        "50 sold-out answers should share a few version reads, took {confirmations}"
    );

    // Another replica releases the 2 units: the next confirmation finds a newer version,
    // reloads, and decides again on the released stock.
    let stored = h.stored_product(&s).await;
    let released = h
        .memory
        .write_product(ProductWrite {
            sku: s.clone(),
            expected_version: stored.row.version,
            row: ProductRow {
                version: stored.row.version + 1,
                ..stored.row
            },
            put_reservations: vec![],
            remove_reservations: vec![first],
        })
        .await
        .expect("memory store answers");
    assert_eq!(released, WriteOutcome::Applied);
    let late = OrderId::new();
    assert_eq!(reserve(&h, &s, late, 1).await, ReserveOutcome::Reserved);
    assert_eq!(calls.of(Method::LoadProduct), loads + 1, "one reload");
    let stored = h.stored_product(&s).await;
    assert_eq!(stored.reservations.len(), 1);
    assert!(reservation_of(&stored, late).is_some());
}

/// On a shared store a commit (a paid order's units becoming sold) waits up to
/// `commit_linger` to share a conditional write: with the other commits queued meanwhile,
/// or with the SKU's next reservation, which writes it at once.
#[actix_rt::test]
async fn on_a_shared_store_commits_wait_to_share_a_write() {
    let [(h, control), _] = Harness::replicas();
    let s = sku("tee-m");
    h.upsert(&s, 10).await;
    let orders: Vec<OrderId> = (0..4).map(|_| OrderId::new()).collect();
    for order in &orders {
        assert_eq!(reserve(&h, &s, *order, 1).await, ReserveOutcome::Reserved);
    }
    let product_writes = || {
        control
            .writes()
            .iter()
            .filter(|m| **m == Method::WriteProduct)
            .count()
    };

    let before = product_writes();
    let (first, second) = tokio::join!(commit(&h, &s, orders[0]), commit(&h, &s, orders[1]));
    assert_eq!(
        (first, second),
        (CommitOutcome::Committed, CommitOutcome::Committed)
    );
    assert_eq!(product_writes(), before + 1, "two commits, one write");

    let reservation = OrderId::new();
    let (committed, reserved) =
        tokio::join!(commit(&h, &s, orders[2]), reserve(&h, &s, reservation, 2));
    assert_eq!(committed, CommitOutcome::Committed);
    assert_eq!(reserved, ReserveOutcome::Reserved);
    assert_eq!(
        product_writes(),
        before + 2,
        "the commit rode with the reservation"
    );

    let stored = h.stored_product(&s).await;
    assert_eq!(stored.row.on_hand, 7, "three sold");
    for order in &orders[..3] {
        assert!(reservation_of(&stored, *order).is_some_and(|r| r.committed));
    }
    assert!(reservation_of(&stored, orders[3]).is_some_and(|r| !r.committed));
    assert_eq!(reservation_of(&stored, reservation).map(|r| r.qty), Some(2));
}
