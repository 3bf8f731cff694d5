//! The store conformance suite: the behaviour every `Store` back end must have. Each back
//! end's tests call `run_all` with a fresh, empty store (embedded on a temp dir, scylla on a
//! fresh keyspace). Panics, naming the failed property, on the first violation.
//! Properties share the one store: each uses fresh ids and users, and any property that
//! enqueues emails marks them sent before it returns (`due_emails` is global).

use crate::domain::{CartId, Currency, OrderId, ProductInfo, Sku, UserId};
use crate::order::{Effect, OrderStatus};
use crate::store::{
    CartLine, CartRecord, CartWrite, CheckoutSession, EmailKind, IdempotencyClaim,
    IdempotencyRequest, InFlightCheckout, OrderLine, OrderRecord, OutboxEmail, PaymentRef,
    ProductRow, ProductWrite, Reservation, Settlement, ShippingDetails, StatusChange, Store,
    StoredResponse, WriteOutcome,
};
use time::{Duration, OffsetDateTime};

pub async fn run_all(store: &dyn Store) {
    ping_answers(store).await;
    missing_records_load_as_none(store).await;
    product_write_is_conditional_on_version(store).await;
    reservations_are_put_and_removed_with_the_row(store).await;
    settlements_are_written_with_their_stock_or_not_at_all(store).await;
    cart_write_is_conditional_on_version(store).await;
    order_write_is_conditional_on_version(store).await;
    orders_are_listed_newest_first_per_user(store).await;
    active_orders_follow_is_active(store).await;
    effects_done_are_recorded_at_their_version(store).await;
    idempotency_claims_replay_and_mismatch(store).await;
    idempotency_release_allows_a_new_claim(store).await;
    idempotency_keys_expire_after_ttl(store).await;
    idempotency_purge_keeps_keys_inside_their_lifetime(store).await;
    stale_idempotency_claims_can_be_reclaimed(store).await;
    concurrent_idempotency_claims_have_one_winner(store).await;
    outbox_enqueue_keeps_the_first_email(store).await;
    outbox_claimed_enqueue_is_not_due_until_its_claim_ends(store).await;
    outbox_keeps_one_email_per_order_and_kind(store).await;
    outbox_replace_is_a_compare_and_set(store).await;
    outbox_due_emails_are_oldest_first_and_due(store).await;
    checkout_sessions_are_stored_and_purged_after_expiry(store).await;
    products_are_listed_in_sku_order_without_deleted_ones(store).await;
    a_single_writer_store_finds_what_a_crash_left_held(store).await;
    a_shared_store_fences_orders_and_notes_checkouts(store).await;
}

fn sku(s: &str) -> Sku {
    Sku::parse(s).expect("valid sku")
}

fn row(on_hand: i64, version: u64) -> ProductRow {
    ProductRow {
        info: Some(ProductInfo {
            name: "Tee".into(),
            price: 1999,
            currency: Currency::EUR,
        }),
        on_hand,
        version,
    }
}

fn reservation(qty: u32) -> Reservation {
    Reservation {
        order_id: OrderId::new(),
        qty,
        expires_at: OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("valid time"),
        committed: false,
    }
}

/// A fixed instant: `secs` seconds after a base time well clear of the epoch.
fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000 + secs).expect("valid time")
}

/// A user no other property (nor an earlier run on the same store) uses.
fn fresh_user(tag: &str) -> UserId {
    UserId(format!("conf-{tag}-{}", uuid::Uuid::new_v4()))
}

/// `count` fresh order ids, ascending (oldest first).
fn order_ids(count: usize) -> Vec<OrderId> {
    let mut ids: Vec<OrderId> = (0..count).map(|_| OrderId::new()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "order ids must be unique");
    ids
}

/// A one-line order as the cases store it (the actors' tests store it too).
pub fn order(id: OrderId, owner: &UserId, status: OrderStatus, version: u64) -> OrderRecord {
    OrderRecord {
        id,
        owner: owner.clone(),
        cart_id: CartId::new(),
        lines: vec![OrderLine {
            sku: sku("tee"),
            name: "Tee".into(),
            quantity: 2,
            unit_price: 1999,
        }],
        total: 3998,
        currency: Currency::EUR,
        shipping: ShippingDetails {
            name: "Alice Example".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
            email: Some("alice@example.com".into()),
        },
        email: "alice@example.com".into(),
        status,
        payment: Some(PaymentRef {
            payment_id: format!("pay-{id}"),
            payment_url: format!("https://pay.example.com/{id}"),
            token: "tok".into(),
        }),
        settled_payment_id: None,
        created_at: at(0),
        updated_at: at(0),
        expires_at: at(900),
        history: vec![StatusChange {
            status: OrderStatus::PendingPayment,
            at: at(0),
        }],
        pending_effects: vec![],
        seen_webhooks: vec![],
        version,
    }
}

/// Moves `record` to `status` with `effects` as the next version.
fn transition(record: &OrderRecord, status: OrderStatus, effects: &[Effect]) -> OrderRecord {
    let mut next = record.clone();
    next.status = status;
    next.pending_effects = effects.to_vec();
    next.updated_at = at(60);
    next.history.push(StatusChange { status, at: at(60) });
    next.version += 1;
    next
}

fn idempotency_request<'a>(
    user: &'a UserId,
    key: &'a str,
    fingerprint: &'a str,
    now: OffsetDateTime,
) -> IdempotencyRequest<'a> {
    IdempotencyRequest {
        user,
        key,
        claim: uuid::Uuid::new_v4(),
        fingerprint,
        now,
        ttl: Duration::hours(24),
        stale_after: Duration::minutes(5),
    }
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: body.into(),
    }
}

fn email(
    order_id: OrderId,
    subject: &str,
    created_at: OffsetDateTime,
    next_attempt_at: OffsetDateTime,
) -> OutboxEmail {
    OutboxEmail {
        order_id,
        kind: EmailKind::Confirmation,
        to: format!("{subject}@example.com"),
        created_at,
        attempts: 0,
        next_attempt_at,
        last_error: None,
        sent_at: None,
        claimed_by: None,
    }
}

/// The due emails (at most `limit`) among `ids`, in the order the store gave them.
async fn due_among(
    store: &dyn Store,
    now: OffsetDateTime,
    limit: usize,
    ids: &[OrderId],
) -> Vec<OutboxEmail> {
    store
        .due_emails(now, limit)
        .await
        .expect("due emails")
        .into_iter()
        .filter(|e| ids.contains(&e.order_id))
        .collect()
}

pub async fn ping_answers(store: &dyn Store) {
    store.ping().await.expect("ping");
}

pub async fn missing_records_load_as_none(store: &dyn Store) {
    assert!(
        store
            .load_product(&sku("conf-missing"))
            .await
            .expect("load")
            .is_none()
    );
    assert_eq!(
        store
            .product_version(&sku("conf-missing"))
            .await
            .expect("version"),
        None
    );
    assert!(
        store
            .load_cart(CartId::new())
            .await
            .expect("load")
            .is_none()
    );
}

pub async fn product_write_is_conditional_on_version(store: &dyn Store) {
    let s = sku("conf-cas");
    let create = ProductWrite {
        sku: s.clone(),
        expected_version: 0,
        row: row(10, 1),
        put_reservations: vec![],
        remove_reservations: vec![],
    };
    assert_eq!(
        store.write_product(create.clone()).await.expect("write"),
        WriteOutcome::Applied
    );
    assert_eq!(
        store.write_product(create).await.expect("write"),
        WriteOutcome::Conflict,
        "creating an existing SKU must conflict"
    );
    let stale = ProductWrite {
        sku: s.clone(),
        expected_version: 5,
        row: row(3, 6),
        put_reservations: vec![],
        remove_reservations: vec![],
    };
    assert_eq!(
        store.write_product(stale).await.expect("write"),
        WriteOutcome::Conflict
    );
    let loaded = store
        .load_product(&s)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(
        loaded.row,
        row(10, 1),
        "a conflicting write must change nothing"
    );
}

pub async fn reservations_are_put_and_removed_with_the_row(store: &dyn Store) {
    let s = sku("conf-resv");
    let (a, b) = (reservation(2), reservation(3));
    let first = ProductWrite {
        sku: s.clone(),
        expected_version: 0,
        row: row(10, 1),
        put_reservations: vec![a.clone(), b.clone()],
        remove_reservations: vec![],
    };
    assert_eq!(
        store.write_product(first).await.expect("write"),
        WriteOutcome::Applied
    );
    let mut committed_b = b.clone();
    committed_b.committed = true;
    let second = ProductWrite {
        sku: s.clone(),
        expected_version: 1,
        row: row(7, 2),
        put_reservations: vec![committed_b.clone()],
        remove_reservations: vec![a.order_id],
    };
    assert_eq!(
        store.write_product(second).await.expect("write"),
        WriteOutcome::Applied
    );
    let loaded = store
        .load_product(&s)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(loaded.row, row(7, 2));
    assert_eq!(loaded.reservations, vec![committed_b]);
    assert_eq!(
        store.product_version(&s).await.expect("version"),
        Some(2),
        "the version alone, read past the reservations"
    );

    let other = sku("conf-resv-other");
    assert!(
        store.load_product(&other).await.expect("load").is_none(),
        "reservations must not leak across SKUs"
    );
}

/// A product write with settlements (`Store::write_product_with`) writes the stock, each
/// order, its cart and its email together, or, when any version differs, nothing. A store
/// that does not take settlements refuses them and writes nothing either.
pub async fn settlements_are_written_with_their_stock_or_not_at_all(store: &dyn Store) {
    let s = sku(&format!("settle-{}", uuid::Uuid::new_v4().simple()));
    let held = reservation(2);
    let create = ProductWrite {
        sku: s.clone(),
        expected_version: 0,
        row: row(10, 1),
        put_reservations: vec![held.clone()],
        remove_reservations: vec![],
    };
    assert_eq!(
        store.write_product(create).await.expect("write"),
        WriteOutcome::Applied
    );
    let owner = fresh_user("settle");
    let pending = order(held.order_id, &owner, OrderStatus::PendingPayment, 1);
    assert_eq!(
        store.write_order(&pending, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    let cart = CartRecord {
        id: pending.cart_id,
        owner: owner.clone(),
        lines: vec![CartLine {
            sku: s.clone(),
            name: "Tee".into(),
            quantity: 2,
            unit_price: 1999,
            currency: Currency::EUR,
        }],
        locked_by: Some(pending.id),
        locked_until: Some(at(900)),
        last_paid_order: None,
        version: 1,
    };
    assert_eq!(
        store.write_cart(&cart, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    let commit = |expected_version: u64| ProductWrite {
        sku: s.clone(),
        expected_version,
        row: row(8, expected_version + 1),
        put_reservations: vec![Reservation {
            committed: true,
            ..held.clone()
        }],
        remove_reservations: vec![],
    };
    let paid = transition(&pending, OrderStatus::Processing, &[]);
    let emptied = CartRecord {
        lines: vec![],
        locked_by: None,
        locked_until: None,
        last_paid_order: Some(pending.id),
        version: 2,
        ..cart.clone()
    };
    let settlement = |cart_expected: u64| Settlement {
        order: paid.clone(),
        expected_version: 1,
        cart: Some(CartWrite {
            cart: emptied.clone(),
            expected_version: cart_expected,
        }),
        email: Some(email(pending.id, "settled", at(0), at(0))),
    };
    let untouched = async {
        let product = store.load_product(&s).await.expect("load").expect("stored");
        assert_eq!(
            product.row,
            row(10, 1),
            "settlements: the stock is untouched"
        );
        assert_eq!(product.reservations, vec![held.clone()]);
        assert_eq!(
            store.load_order(pending.id).await.expect("load"),
            Some(pending.clone()),
            "settlements: the order is untouched"
        );
        assert_eq!(
            store.load_cart(cart.id).await.expect("load"),
            Some(cart.clone()),
            "settlements: the cart is untouched"
        );
        assert!(
            due_among(store, at(1), 1000, &[pending.id])
                .await
                .is_empty(),
            "settlements: no email is queued"
        );
    };
    if !store.writes_settlements() {
        assert!(
            store
                .write_product_with(commit(1), vec![settlement(1)])
                .await
                .is_err(),
            "a store that does not write settlements refuses them"
        );
        untouched.await;
        return;
    }
    // A stale cart version: nothing of the write happens, not even the stock's part.
    assert_eq!(
        store
            .write_product_with(commit(1), vec![settlement(0)])
            .await
            .expect("write"),
        WriteOutcome::Conflict
    );
    untouched.await;
    assert_eq!(
        store
            .write_product_with(commit(1), vec![settlement(1)])
            .await
            .expect("write"),
        WriteOutcome::Applied
    );
    let product = store.load_product(&s).await.expect("load").expect("stored");
    assert_eq!(product.row, row(8, 2));
    assert!(product.reservations.iter().all(|r| r.committed));
    assert_eq!(
        store.load_order(paid.id).await.expect("load"),
        Some(paid.clone())
    );
    assert!(
        !store
            .active_orders()
            .await
            .expect("active")
            .contains(&paid.id),
        "a settled order with nothing pending is not active"
    );
    assert_eq!(store.load_cart(cart.id).await.expect("load"), Some(emptied));
    let queued = due_among(store, at(1), 1000, &[pending.id]).await;
    assert_eq!(queued.len(), 1, "the email is queued with the order");
    // Leave nothing unsent for other properties.
    let sent = OutboxEmail {
        sent_at: Some(at(1)),
        attempts: 1,
        ..queued[0].clone()
    };
    store.update_email(&sent).await.expect("update");
}

pub async fn cart_write_is_conditional_on_version(store: &dyn Store) {
    let mut cart = CartRecord {
        id: CartId::new(),
        owner: UserId("alice".into()),
        lines: vec![],
        locked_by: None,
        locked_until: None,
        last_paid_order: None,
        version: 1,
    };
    assert_eq!(
        store.write_cart(&cart, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    // Creating it again (a retry) changes nothing: a store that checks answers `Conflict`,
    // one that writes a creation unconditionally (its id is fresh) writes the same again.
    let _either = store.write_cart(&cart, 0).await.expect("write");
    assert_eq!(
        store.load_cart(cart.id).await.expect("load"),
        Some(cart.clone())
    );
    cart.lines.push(CartLine {
        sku: sku("tee"),
        name: "Tee".into(),
        quantity: 2,
        unit_price: 1999,
        currency: Currency::EUR,
    });
    cart.locked_by = Some(OrderId::new());
    cart.version = 2;
    assert_eq!(
        store.write_cart(&cart, 1).await.expect("write"),
        WriteOutcome::Applied
    );
    assert_eq!(
        store.load_cart(cart.id).await.expect("load"),
        Some(cart.clone())
    );
    let mut stale = cart.clone();
    stale.version = 3;
    stale.lines.clear();
    assert_eq!(
        store.write_cart(&stale, 1).await.expect("write"),
        WriteOutcome::Conflict
    );
    assert_eq!(store.load_cart(cart.id).await.expect("load"), Some(cart));
}

pub async fn order_write_is_conditional_on_version(store: &dyn Store) {
    let owner = fresh_user("order-cas");
    let [id] = order_ids(1)[..] else {
        unreachable!()
    };
    assert!(store.load_order(id).await.expect("load").is_none());
    let created = order(id, &owner, OrderStatus::PendingPayment, 1);
    assert_eq!(
        store.write_order(&created, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    assert_eq!(
        store.load_order(id).await.expect("load"),
        Some(created.clone())
    );
    assert_eq!(
        store.write_order(&created, 0).await.expect("write"),
        WriteOutcome::Conflict,
        "creating an existing order must conflict"
    );
    let mut stale = transition(&created, OrderStatus::Failed, &[Effect::ReleaseStock]);
    stale.version = 6;
    assert_eq!(
        store.write_order(&stale, 5).await.expect("write"),
        WriteOutcome::Conflict
    );
    assert_eq!(
        store.load_order(id).await.expect("load"),
        Some(created.clone()),
        "a conflicting order write must change nothing"
    );
    let paid = transition(
        &created,
        OrderStatus::Processing,
        &[Effect::CommitStock, Effect::EmptyCart, Effect::QueueEmail],
    );
    assert_eq!(
        store.write_order(&paid, 1).await.expect("write"),
        WriteOutcome::Applied
    );
    assert_eq!(
        store.load_order(id).await.expect("load"),
        Some(paid.clone())
    );
    // A second writer that also read version 1 loses.
    let racing = transition(&created, OrderStatus::Expired, &[Effect::ReleaseStock]);
    assert_eq!(
        store.write_order(&racing, 1).await.expect("write"),
        WriteOutcome::Conflict
    );
    assert_eq!(
        store.load_order(id).await.expect("load"),
        Some(paid.clone())
    );
    let listed = store.list_orders(&owner, None, 10).await.expect("list");
    assert_eq!(listed, vec![paid], "a conflict must not touch the listing");
}

pub async fn orders_are_listed_newest_first_per_user(store: &dyn Store) {
    let (alice, bob) = (fresh_user("list-a"), fresh_user("list-b"));
    let ids = order_ids(7);
    let alice_ids = &ids[..5];
    let bob_ids = &ids[5..];
    // Written out of id order: the listing order must come from the ids.
    for i in [2, 0, 4, 1, 3] {
        let o = order(alice_ids[i], &alice, OrderStatus::PendingPayment, 1);
        assert_eq!(
            store.write_order(&o, 0).await.expect("write"),
            WriteOutcome::Applied
        );
    }
    for &id in bob_ids {
        let o = order(id, &bob, OrderStatus::PendingPayment, 1);
        assert_eq!(
            store.write_order(&o, 0).await.expect("write"),
            WriteOutcome::Applied
        );
    }
    // An update is listed once, as its latest version.
    let first = order(alice_ids[0], &alice, OrderStatus::PendingPayment, 1);
    let failed = transition(&first, OrderStatus::Failed, &[]);
    assert_eq!(
        store.write_order(&failed, 1).await.expect("write"),
        WriteOutcome::Applied
    );

    let newest_first: Vec<OrderId> = alice_ids.iter().rev().copied().collect();
    let ids_of = |orders: &[OrderRecord]| orders.iter().map(|o| o.id).collect::<Vec<_>>();

    let all = store.list_orders(&alice, None, 100).await.expect("list");
    assert_eq!(ids_of(&all), newest_first, "newest first, only alice's");
    assert_eq!(all.last(), Some(&failed), "the latest version is listed");
    assert!(all.iter().all(|o| o.owner == alice));

    let top = store.list_orders(&alice, None, 2).await.expect("list");
    assert_eq!(ids_of(&top), newest_first[..2], "limit is respected");
    assert!(
        store
            .list_orders(&alice, None, 0)
            .await
            .expect("list")
            .is_empty(),
        "limit 0 lists nothing"
    );

    // Paging with `before` = the last id of the previous page: no gaps, no duplicates.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_orders(&alice, before, 2).await.expect("list");
        assert!(page.len() <= 2, "a page exceeded its limit");
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        paged.extend(ids_of(&page));
        assert!(paged.len() <= 5, "paging does not terminate");
    }
    assert_eq!(paged, newest_first, "paging must neither skip nor repeat");

    // `before` is exclusive, and need not be one of the user's ids.
    let below = store
        .list_orders(&alice, Some(alice_ids[3]), 100)
        .await
        .expect("list");
    assert_eq!(ids_of(&below), newest_first[2..]);
    let below_bob = store
        .list_orders(&alice, Some(bob_ids[0]), 100)
        .await
        .expect("list");
    assert_eq!(ids_of(&below_bob), newest_first);
    assert!(
        store
            .list_orders(&alice, Some(alice_ids[0]), 100)
            .await
            .expect("list")
            .is_empty()
    );

    let bobs = store.list_orders(&bob, None, 100).await.expect("list");
    let bob_newest_first: Vec<OrderId> = bob_ids.iter().rev().copied().collect();
    assert_eq!(ids_of(&bobs), bob_newest_first, "scoped per user");
    assert!(
        store
            .list_orders(&fresh_user("list-none"), None, 100)
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn active_orders_follow_is_active(store: &dyn Store) {
    let owner = fresh_user("active");
    let ids = order_ids(4);
    let is_listed = |active: &[OrderId], id: OrderId| active.contains(&id);

    // Pending payment: active.
    let pending = order(ids[0], &owner, OrderStatus::PendingPayment, 1);
    assert_eq!(
        store.write_order(&pending, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    let active = store.active_orders().await.expect("active");
    assert!(is_listed(&active, ids[0]), "a pending order is active");

    // Paid, steps still to do: active.
    let paid = transition(
        &pending,
        OrderStatus::Processing,
        &[Effect::CommitStock, Effect::EmptyCart, Effect::QueueEmail],
    );
    assert_eq!(
        store.write_order(&paid, 1).await.expect("write"),
        WriteOutcome::Applied
    );
    let active = store.active_orders().await.expect("active");
    assert!(
        is_listed(&active, ids[0]),
        "processing with pending effects is active"
    );

    // Paid, every step done: no longer active.
    let done = transition(&paid, OrderStatus::Processing, &[]);
    assert_eq!(
        store.write_order(&done, 2).await.expect("write"),
        WriteOutcome::Applied
    );
    let active = store.active_orders().await.expect("active");
    assert!(
        !is_listed(&active, ids[0]),
        "processing with no pending effects is not active"
    );

    // A conflicting write must not put it back.
    assert_eq!(
        store.write_order(&paid, 1).await.expect("write"),
        WriteOutcome::Conflict
    );
    let active = store.active_orders().await.expect("active");
    assert!(
        !is_listed(&active, ids[0]),
        "a conflict changed the active set"
    );

    // Created settled with nothing to do: never active.
    let settled = order(ids[1], &owner, OrderStatus::Processing, 1);
    assert_eq!(
        store.write_order(&settled, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    // Awaiting a refund: active even with no pending effects.
    let refunding = order(ids[2], &owner, OrderStatus::RefundPending, 1);
    assert_eq!(
        store.write_order(&refunding, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    // Failed with its release still to do: active.
    let failed = order(ids[3], &owner, OrderStatus::Failed, 1);
    let failed = OrderRecord {
        pending_effects: vec![Effect::ReleaseStock, Effect::UnlockCart],
        ..failed
    };
    assert_eq!(
        store.write_order(&failed, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    let active = store.active_orders().await.expect("active");
    assert!(!is_listed(&active, ids[1]), "a settled order is not active");
    assert!(is_listed(&active, ids[2]), "refund pending is active");
    assert!(is_listed(&active, ids[3]), "pending effects make it active");
    for id in &ids {
        assert_eq!(
            active.iter().filter(|a| *a == id).count(),
            usize::from(is_listed(&active, *id)),
            "an active order is listed once"
        );
    }
}

/// A store that records finished effects apart from the order's write (`record_effects_done`)
/// answers the order at the same version with no pending effects and out of the active set;
/// a later version's own effects are not hidden by it, even when an older record arrives
/// after them. A store that does not answers `false` and changes nothing.
pub async fn effects_done_are_recorded_at_their_version(store: &dyn Store) {
    let owner = fresh_user("effects");
    let [id] = order_ids(1)[..] else {
        unreachable!()
    };
    let pending = order(id, &owner, OrderStatus::PendingPayment, 1);
    assert_eq!(
        store.write_order(&pending, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    let paid = transition(
        &pending,
        OrderStatus::Processing,
        &[Effect::CommitStock, Effect::EmptyCart, Effect::QueueEmail],
    );
    assert_eq!(
        store.write_order(&paid, 1).await.expect("write"),
        WriteOutcome::Applied
    );
    if !store.record_effects_done(&paid).await.expect("record") {
        assert_eq!(store.load_order(id).await.expect("load"), Some(paid));
        return;
    }
    let finished = OrderRecord {
        pending_effects: vec![],
        ..paid.clone()
    };
    assert_eq!(
        store.load_order(id).await.expect("load"),
        Some(finished.clone())
    );
    let active = store.active_orders().await.expect("active");
    assert!(!active.contains(&id), "every effect done: not active");

    // A later transition brings effects of its own, at its own version.
    let refunded = transition(
        &finished,
        OrderStatus::Refunded,
        &[Effect::QueueRefundEmail],
    );
    assert_eq!(
        store.write_order(&refunded, 2).await.expect("write"),
        WriteOutcome::Applied
    );
    // A record of the earlier version arriving late (a slow or repeated one).
    assert!(store.record_effects_done(&paid).await.expect("record"));
    assert_eq!(
        store.load_order(id).await.expect("load"),
        Some(refunded.clone()),
        "an older record hides no newer effects"
    );
    let active = store.active_orders().await.expect("active");
    assert!(active.contains(&id), "the refund's effects keep it active");

    // The newer version's record, then the older one's again: the newer one stands.
    assert!(store.record_effects_done(&refunded).await.expect("record"));
    assert!(store.record_effects_done(&paid).await.expect("record"));
    let refund_done = OrderRecord {
        pending_effects: vec![],
        ..refunded
    };
    assert_eq!(
        store.load_order(id).await.expect("load"),
        Some(refund_done),
        "a late record of an older version does not undo a newer one's"
    );
    let active = store.active_orders().await.expect("active");
    assert!(!active.contains(&id));
}

pub async fn idempotency_claims_replay_and_mismatch(store: &dyn Store) {
    let (alice, bob) = (fresh_user("idem-a"), fresh_user("idem-b"));
    let claim = |user, fingerprint, secs| idempotency_request(user, "key-1", fingerprint, at(secs));
    assert_eq!(
        store
            .claim_idempotency(claim(&alice, "fp-1", 0))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        store
            .claim_idempotency(claim(&alice, "fp-1", 1))
            .await
            .expect("claim"),
        IdempotencyClaim::InProgress,
        "a running request's key is in progress"
    );
    assert_eq!(
        store
            .claim_idempotency(claim(&alice, "fp-2", 1))
            .await
            .expect("claim"),
        IdempotencyClaim::Mismatch,
        "another body under the same key is a mismatch"
    );
    assert_eq!(
        store
            .claim_idempotency(claim(&bob, "fp-2", 1))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed,
        "keys are scoped per user"
    );
    let done = response(r#"{"orderId":"x"}"#);
    store
        .complete_idempotency(&alice, "key-1", &done)
        .await
        .expect("complete");
    assert_eq!(
        store
            .claim_idempotency(claim(&alice, "fp-1", 2))
            .await
            .expect("claim"),
        IdempotencyClaim::Completed(done.clone()),
        "a finished request is replayed"
    );
    assert_eq!(
        store
            .claim_idempotency(claim(&alice, "fp-1", 3))
            .await
            .expect("claim"),
        IdempotencyClaim::Completed(done),
        "replaying does not consume the response"
    );
    assert_eq!(
        store
            .claim_idempotency(claim(&alice, "fp-2", 3))
            .await
            .expect("claim"),
        IdempotencyClaim::Mismatch
    );
    assert_eq!(
        store
            .claim_idempotency(claim(&bob, "fp-2", 3))
            .await
            .expect("claim"),
        IdempotencyClaim::InProgress,
        "completing alice's key must not complete bob's"
    );
}

pub async fn idempotency_release_allows_a_new_claim(store: &dyn Store) {
    let user = fresh_user("idem-release");
    let claim = |fingerprint, secs| idempotency_request(&user, "key-r", fingerprint, at(secs));
    assert_eq!(
        store
            .claim_idempotency(claim("fp-1", 0))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed
    );
    store
        .release_idempotency(&user, "key-r")
        .await
        .expect("release");
    assert_eq!(
        store
            .claim_idempotency(claim("fp-1", 1))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed,
        "a released key may be retried"
    );
    store
        .release_idempotency(&user, "key-r")
        .await
        .expect("release");
    // Completing a key nobody holds stores nothing.
    store
        .complete_idempotency(&user, "key-r", &response("late"))
        .await
        .expect("complete");
    assert_eq!(
        store
            .claim_idempotency(claim("fp-2", 2))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed,
        "a released key is forgotten, body and all"
    );
    store
        .release_idempotency(&user, "key-never-claimed")
        .await
        .expect("releasing an unknown key is a no-op");
}

/// A purge deletes expired keys only (a store with a TTL may delete none: either way a key
/// inside its 24 h still replays, and an expired one can be claimed afresh).
pub async fn idempotency_purge_keeps_keys_inside_their_lifetime(store: &dyn Store) {
    let user = fresh_user("idem-purge");
    let day = Duration::hours(24).whole_seconds();
    let claim = |key, secs| idempotency_request(&user, key, "fp", at(secs));
    for (key, secs) in [("old", 0), ("recent", day / 2)] {
        assert_eq!(
            store
                .claim_idempotency(claim(key, secs))
                .await
                .expect("claim"),
            IdempotencyClaim::Claimed
        );
        store
            .complete_idempotency(&user, key, &response(key))
            .await
            .expect("complete");
    }
    // At `day + 60`, what was claimed before `at(60)` has expired.
    const BATCH: usize = 2;
    while store.purge_idempotency(at(60), BATCH).await.expect("purge") == BATCH {}
    assert_eq!(
        store
            .claim_idempotency(claim("recent", day + 60))
            .await
            .expect("claim"),
        IdempotencyClaim::Completed(response("recent")),
        "a key inside its 24 h survives the purge"
    );
    assert_eq!(
        store
            .claim_idempotency(claim("old", day + 60))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed,
        "an expired key is gone"
    );
}

pub async fn idempotency_keys_expire_after_ttl(store: &dyn Store) {
    let user = fresh_user("idem-ttl");
    let day = Duration::hours(24).whole_seconds();
    let claim = |fingerprint, secs| idempotency_request(&user, "key-t", fingerprint, at(secs));
    assert_eq!(
        store
            .claim_idempotency(claim("fp-1", 0))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed
    );
    let done = response("first");
    store
        .complete_idempotency(&user, "key-t", &done)
        .await
        .expect("complete");
    assert_eq!(
        store
            .claim_idempotency(claim("fp-1", day - 1))
            .await
            .expect("claim"),
        IdempotencyClaim::Completed(done),
        "a completed key is replayed until its ttl"
    );
    assert_eq!(
        store
            .claim_idempotency(claim("fp-2", day - 1))
            .await
            .expect("claim"),
        IdempotencyClaim::Mismatch
    );
    assert_eq!(
        store
            .claim_idempotency(claim("fp-2", day))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed,
        "after its ttl a key is forgotten and may be claimed with any body"
    );
    assert_eq!(
        store
            .claim_idempotency(claim("fp-2", day + 1))
            .await
            .expect("claim"),
        IdempotencyClaim::InProgress,
        "the new claim holds the key"
    );
    assert_eq!(
        store
            .claim_idempotency(claim("fp-1", day + 1))
            .await
            .expect("claim"),
        IdempotencyClaim::Mismatch,
        "the new claim's body is the one compared"
    );
}

pub async fn stale_idempotency_claims_can_be_reclaimed(store: &dyn Store) {
    let user = fresh_user("idem-stale");
    let stale = Duration::minutes(5).whole_seconds();
    let claim = |key, secs| idempotency_request(&user, key, "fp", at(secs));
    assert_eq!(
        store
            .claim_idempotency(claim("crashed", 0))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        store
            .claim_idempotency(claim("crashed", stale - 1))
            .await
            .expect("claim"),
        IdempotencyClaim::InProgress,
        "a young in-progress claim holds"
    );
    assert_eq!(
        store
            .claim_idempotency(claim("crashed", stale))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed,
        "an in-progress claim older than stale_after is presumed dead"
    );
    assert_eq!(
        store
            .claim_idempotency(claim("crashed", stale + 1))
            .await
            .expect("claim"),
        IdempotencyClaim::InProgress,
        "the re-claim starts a fresh claim"
    );

    // A completed key is not stale: it replays until its ttl.
    assert_eq!(
        store
            .claim_idempotency(claim("finished", 0))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed
    );
    let done = response("finished");
    store
        .complete_idempotency(&user, "finished", &done)
        .await
        .expect("complete");
    assert_eq!(
        store
            .claim_idempotency(claim("finished", stale * 10))
            .await
            .expect("claim"),
        IdempotencyClaim::Completed(done)
    );
}

pub async fn concurrent_idempotency_claims_have_one_winner(store: &dyn Store) {
    let user = fresh_user("idem-race");
    let claim = || store.claim_idempotency(idempotency_request(&user, "race", "fp", at(0)));
    let (a, b, c, d) = tokio::join!(claim(), claim(), claim(), claim());
    let outcomes = [a, b, c, d].map(|r| r.expect("claim"));
    let winners = outcomes
        .iter()
        .filter(|o| **o == IdempotencyClaim::Claimed)
        .count();
    assert_eq!(
        winners, 1,
        "exactly one concurrent claim wins: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, IdempotencyClaim::Claimed | IdempotencyClaim::InProgress)),
        "the losers see the claim in progress: {outcomes:?}"
    );
}

pub async fn outbox_replace_is_a_compare_and_set(store: &dyn Store) {
    let [id] = order_ids(1)[..] else {
        unreachable!()
    };
    let queued = email(id, "claim", at(-100), at(-100));
    store.enqueue_email(&queued).await.expect("enqueue");
    let claimed = OutboxEmail {
        next_attempt_at: at(500),
        ..queued.clone()
    };
    assert_eq!(
        store.replace_email(&queued, &claimed).await.expect("claim"),
        WriteOutcome::Applied,
        "replacing the entry as it is applies"
    );
    let rival = OutboxEmail {
        next_attempt_at: at(600),
        ..queued.clone()
    };
    assert_eq!(
        store.replace_email(&queued, &rival).await.expect("claim"),
        WriteOutcome::Conflict,
        "a second claim from the same old entry loses"
    );
    assert!(
        due_among(store, at(0), 1000, &[id]).await.is_empty(),
        "a claimed email is not due until its lease ends"
    );
    assert_eq!(
        due_among(store, at(501), 1000, &[id]).await,
        vec![claimed.clone()]
    );
    let sent = OutboxEmail {
        sent_at: Some(at(2)),
        attempts: 1,
        ..claimed.clone()
    };
    assert_eq!(
        store.replace_email(&claimed, &sent).await.expect("replace"),
        WriteOutcome::Applied
    );
    assert!(due_among(store, at(10_000), 1000, &[id]).await.is_empty());
    let missing = email(order_ids(1)[0], "never queued", at(0), at(0));
    assert_eq!(
        store
            .replace_email(&missing, &missing)
            .await
            .expect("replace"),
        WriteOutcome::Conflict,
        "an entry that is not there cannot be replaced"
    );
}

pub async fn outbox_keeps_one_email_per_order_and_kind(store: &dyn Store) {
    let [id] = order_ids(1)[..] else {
        unreachable!()
    };
    let depth = store.outbox_depth().await.expect("depth");
    let confirmation = email(id, "confirmation", at(-100), at(-100));
    let refund = OutboxEmail {
        kind: EmailKind::Refund,
        ..email(id, "refund", at(-90), at(-90))
    };
    store.enqueue_email(&confirmation).await.expect("enqueue");
    store.enqueue_email(&refund).await.expect("enqueue");
    assert_eq!(
        store.outbox_depth().await.expect("depth"),
        depth + 2,
        "a confirmation and a refund email of one order are two entries"
    );
    assert_eq!(
        due_among(store, at(0), 1000, &[id]).await,
        vec![confirmation.clone(), refund.clone()]
    );
    for sent in [confirmation, refund] {
        let sent = OutboxEmail {
            sent_at: Some(at(1)),
            ..sent
        };
        store.update_email(&sent).await.expect("update");
    }
    assert_eq!(store.outbox_depth().await.expect("depth"), depth);
}

pub async fn outbox_enqueue_keeps_the_first_email(store: &dyn Store) {
    let [id] = order_ids(1)[..] else {
        unreachable!()
    };
    let depth = store.outbox_depth().await.expect("depth");
    let first = email(id, "Your order", at(-100), at(-100));
    store.enqueue_email(&first).await.expect("enqueue");
    assert_eq!(store.outbox_depth().await.expect("depth"), depth + 1);
    let second = email(id, "Your order, again", at(-50), at(-50));
    store.enqueue_email(&second).await.expect("enqueue");
    assert_eq!(
        store.outbox_depth().await.expect("depth"),
        depth + 1,
        "one email per order"
    );
    assert_eq!(
        due_among(store, at(0), 1000, &[id]).await,
        vec![first.clone()],
        "a second enqueue for the same order must not replace the first"
    );
    // Leave nothing unsent for other properties.
    let sent = OutboxEmail {
        sent_at: Some(at(1)),
        attempts: 1,
        ..first
    };
    store.update_email(&sent).await.expect("update");
    assert_eq!(
        store.outbox_depth().await.expect("depth"),
        depth,
        "a sent email is not counted"
    );
    // Once sent, enqueueing again does not bring it back either.
    store.enqueue_email(&second).await.expect("enqueue");
    assert_eq!(store.outbox_depth().await.expect("depth"), depth);
    assert!(due_among(store, at(0), 1000, &[id]).await.is_empty());
}

pub async fn outbox_claimed_enqueue_is_not_due_until_its_claim_ends(store: &dyn Store) {
    let [id] = order_ids(1)[..] else {
        unreachable!()
    };
    let depth = store.outbox_depth().await.expect("depth");
    let queued = email(id, "Your order", at(-100), at(-100));
    assert!(
        store
            .enqueue_claimed_email(&queued, at(120))
            .await
            .expect("enqueue"),
        "the first claimed enqueue puts the email there"
    );
    assert_eq!(store.outbox_depth().await.expect("depth"), depth + 1);
    assert!(
        due_among(store, at(0), 1000, &[id]).await.is_empty(),
        "claimed: not due before the claim ends"
    );
    // A shared store records whose claim it is (released if that replica dies).
    let claimed = OutboxEmail {
        next_attempt_at: at(120),
        claimed_by: store.replica().map(str::to_owned),
        ..queued.clone()
    };
    assert_eq!(
        due_among(store, at(121), 1000, &[id]).await,
        vec![claimed.clone()]
    );
    assert!(
        !store
            .enqueue_claimed_email(&queued, at(500))
            .await
            .expect("enqueue"),
        "a second enqueue for the same order and kind changes nothing"
    );
    assert_eq!(
        due_among(store, at(121), 1000, &[id]).await,
        vec![claimed.clone()]
    );
    let sent = OutboxEmail {
        sent_at: Some(at(1)),
        attempts: 1,
        ..claimed.clone()
    };
    store.update_email(&sent).await.expect("update");
    assert_eq!(store.outbox_depth().await.expect("depth"), depth);

    // Once sent it stays sent: a claim made from its unsent entry loses (a mailer that took
    // it over after a lease ended must not send it again), a re-driven enqueue changes
    // nothing, and it is never due again.
    let taken_over = OutboxEmail {
        next_attempt_at: at(700),
        claimed_by: None,
        ..claimed.clone()
    };
    assert_eq!(
        store
            .replace_email(&claimed, &taken_over)
            .await
            .expect("claim"),
        WriteOutcome::Conflict,
        "a claim from the unsent entry loses once the email is sent"
    );
    store
        .enqueue_email(&queued)
        .await
        .expect("re-driven enqueue");
    assert!(
        !store
            .enqueue_claimed_email(&queued, at(800))
            .await
            .expect("enqueue"),
        "a re-driven claimed enqueue changes nothing"
    );
    assert_eq!(store.outbox_depth().await.expect("depth"), depth);
    assert!(
        due_among(store, at(100_000), 1000, &[id]).await.is_empty(),
        "a sent email is never due again"
    );
}

pub async fn outbox_due_emails_are_oldest_first_and_due(store: &dyn Store) {
    let ids = order_ids(4);
    let depth = store.outbox_depth().await.expect("depth");
    // Enqueued out of age order; ids[3] is not due until later.
    let emails = [
        email(ids[0], "b", at(-200), at(-200)),
        email(ids[1], "a", at(-300), at(-300)),
        email(ids[2], "c", at(-100), at(0)),
        email(ids[3], "late", at(-400), at(500)),
    ];
    for e in &emails {
        store.enqueue_email(e).await.expect("enqueue");
    }
    assert_eq!(store.outbox_depth().await.expect("depth"), depth + 4);
    let [b, a, c, late] = emails;

    assert_eq!(
        due_among(store, at(0), 1000, &ids).await,
        vec![a.clone(), b.clone(), c.clone()],
        "due emails, oldest first; one not yet due is left out"
    );
    assert_eq!(
        due_among(store, at(-1), 1000, &ids).await,
        vec![a.clone(), b.clone()],
        "next_attempt_at <= now"
    );
    // Unfiltered: every other property leaves no unsent email behind.
    assert_eq!(
        store.due_emails(at(0), 2).await.expect("due"),
        vec![a.clone(), b.clone()],
        "limit keeps the oldest"
    );
    assert!(store.due_emails(at(0), 0).await.expect("due").is_empty());

    // A failed attempt pushes it back.
    let retry = OutboxEmail {
        attempts: 1,
        next_attempt_at: at(60),
        ..a.clone()
    };
    store.update_email(&retry).await.expect("update");
    assert_eq!(
        due_among(store, at(0), 1000, &ids).await,
        vec![b.clone(), c.clone()]
    );
    assert_eq!(store.outbox_depth().await.expect("depth"), depth + 4);

    // Sent: neither due nor counted, even once its next attempt time comes.
    let sent = OutboxEmail {
        attempts: 1,
        sent_at: Some(at(1)),
        ..b.clone()
    };
    store.update_email(&sent).await.expect("update");
    assert_eq!(store.outbox_depth().await.expect("depth"), depth + 3);
    assert_eq!(
        due_among(store, at(1000), 1000, &ids).await,
        vec![late.clone(), retry.clone(), c.clone()],
        "a sent email is never due; a retried one keeps its age"
    );

    // Leave nothing unsent for other properties.
    for e in [retry, c, late] {
        let sent = OutboxEmail {
            sent_at: Some(at(2)),
            ..e
        };
        store.update_email(&sent).await.expect("update");
    }
    assert_eq!(store.outbox_depth().await.expect("depth"), depth);
    assert!(due_among(store, at(1000), 1000, &ids).await.is_empty());
}

pub async fn checkout_sessions_are_stored_and_purged_after_expiry(store: &dyn Store) {
    let session = |id: &str, expires_at| CheckoutSession {
        id: id.to_string(),
        cart_id: CartId::new(),
        user: fresh_user("session"),
        email: Some("alice@example.com".into()),
        review_cart_url: Some("https://shop.test/cart".into()),
        cancel_url: None,
        created_at: at(0),
        expires_at,
    };
    let tag = OrderId::new().0.simple().to_string();
    let live = session(&format!("cs_live_{tag}"), at(7200));
    let gone = session(&format!("cs_gone_{tag}"), at(60));
    store.put_session(&live).await.expect("put");
    store.put_session(&gone).await.expect("put");
    assert_eq!(
        store.load_session(&live.id).await.expect("load"),
        Some(live.clone()),
        "a session reads back as stored"
    );
    assert_eq!(
        store
            .load_session(&format!("cs_missing_{tag}"))
            .await
            .expect("load"),
        None
    );
    // A store with a TTL has nothing to purge; one without must purge only expired sessions.
    let mut purged = 0;
    loop {
        let batch = store.purge_sessions(at(3600), 1).await.expect("purge");
        purged += batch;
        if batch < 1 {
            break;
        }
    }
    if purged > 0 {
        assert_eq!(store.load_session(&gone.id).await.expect("load"), None);
    }
    assert_eq!(
        store.load_session(&live.id).await.expect("load"),
        Some(live),
        "a live session is never purged"
    );
}

pub async fn products_are_listed_in_sku_order_without_deleted_ones(store: &dyn Store) {
    let tag = &OrderId::new().0.simple().to_string()[..12];
    let prefix = format!("list-{tag}");
    for (suffix, listed) in [("-d", true), ("-a", true), ("-c", false), ("-b", true)] {
        let mut row = row(5, 1);
        if !listed {
            row.info = None;
        }
        let write = ProductWrite {
            sku: sku(&format!("{prefix}{suffix}")),
            expected_version: 0,
            row,
            put_reservations: vec![],
            remove_reservations: vec![],
        };
        assert_eq!(
            store.write_product(write).await.expect("write"),
            WriteOutcome::Applied
        );
    }
    let start = sku(&prefix);
    let first = store.list_products(Some(&start), 2).await.expect("list");
    assert_eq!(
        first,
        vec![sku(&format!("{prefix}-a")), sku(&format!("{prefix}-b"))],
        "the first page, in sku order"
    );
    let next = store.list_products(first.last(), 2).await.expect("list");
    assert_eq!(
        next.first(),
        Some(&sku(&format!("{prefix}-d"))),
        "the next page skips the deleted product"
    );
    let all = store.list_products(None, 100_000).await.expect("list");
    let ours: Vec<_> = all
        .iter()
        .filter(|s| s.as_str().starts_with(&prefix))
        .cloned()
        .collect();
    assert_eq!(ours.len(), 3);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
}

pub async fn a_single_writer_store_finds_what_a_crash_left_held(store: &dyn Store) {
    let order = OrderId::new();
    let mut cart = CartRecord {
        id: CartId::new(),
        owner: fresh_user("crash"),
        lines: vec![],
        locked_by: Some(order),
        locked_until: Some(at(900)),
        last_paid_order: None,
        version: 1,
    };
    assert_eq!(
        store.write_cart(&cart, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    let user = fresh_user("crash-key");
    let claim = |key| idempotency_request(&user, key, "print", at(0));
    assert_eq!(
        store
            .claim_idempotency(claim("unfinished"))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        store
            .claim_idempotency(claim("finished"))
            .await
            .expect("claim"),
        IdempotencyClaim::Claimed
    );
    store
        .complete_idempotency(&user, "finished", &response("done"))
        .await
        .expect("complete");
    let claimed = email(OrderId::new(), "crash-mail", at(0), at(0));
    let queued = store
        .enqueue_claimed_email(&claimed, at(10_000))
        .await
        .expect("enqueue");
    let mails = store
        .release_email_claims(at(100))
        .await
        .expect("release claims");
    let due_now = due_among(store, at(100), 100_000, &[claimed.order_id]).await;
    let locked = store.locked_carts(100_000).await.expect("locked carts");
    let released = store
        .release_unfinished_idempotency()
        .await
        .expect("release");
    if store.is_shared() {
        // Another replica's checkout or mailer may be running: a shared store reports nothing.
        assert!(locked.is_empty() && released == 0 && mails == 0);
    } else {
        assert!(queued && mails >= 1, "a claimed email is released");
        assert_eq!(due_now.len(), 1, "and due at once");
        assert!(
            locked
                .iter()
                .any(|c| c.id == cart.id && c.locked_by == Some(order)),
            "a locked cart is found"
        );
        assert!(released >= 1);
        assert_eq!(
            store
                .claim_idempotency(claim("unfinished"))
                .await
                .expect("claim"),
            IdempotencyClaim::Claimed,
            "an interrupted claim's key is free again"
        );
        assert_eq!(
            store
                .claim_idempotency(claim("finished"))
                .await
                .expect("claim"),
            IdempotencyClaim::Completed(response("done")),
            "a finished one still replays"
        );
        cart.locked_by = None;
        cart.locked_until = None;
        cart.version = 2;
        assert_eq!(
            store.write_cart(&cart, 1).await.expect("write"),
            WriteOutcome::Applied
        );
        let locked = store.locked_carts(100_000).await.expect("locked carts");
        assert!(
            !locked.iter().any(|c| c.id == cart.id),
            "an unlocked cart is not"
        );
    }
    let sent = OutboxEmail {
        sent_at: Some(at(200)),
        ..claimed
    };
    store.update_email(&sent).await.expect("mark sent");
}

/// On a store replicas share (single-writer stores recover at start-up instead, the case
/// above): a fenced order id can no longer be stored, so a replica presumed dead that was
/// only slow cannot store an order whose stock the recovery released; an order already
/// stored is never fenced; a checkout's note is listed under its replica until it ends; a
/// replica is never silent to itself.
pub async fn a_shared_store_fences_orders_and_notes_checkouts(store: &dyn Store) {
    if !store.is_shared() {
        return;
    }
    let owner = fresh_user("fence");
    let fenced = OrderId::new();
    assert!(store.fence_order(fenced).await.expect("fence"));
    assert!(
        store.fence_order(fenced).await.expect("fence again"),
        "a fenced id is still absent"
    );
    let late = order(fenced, &owner, OrderStatus::PendingPayment, 1);
    assert_eq!(
        store.write_order(&late, 0).await.expect("write"),
        WriteOutcome::Conflict,
        "a fenced order cannot be stored"
    );
    assert!(store.load_order(fenced).await.expect("load").is_none());

    let stored = OrderId::new();
    let placed = order(stored, &owner, OrderStatus::PendingPayment, 1);
    assert_eq!(
        store.write_order(&placed, 0).await.expect("write"),
        WriteOutcome::Applied
    );
    assert!(
        !store.fence_order(stored).await.expect("fence"),
        "it exists"
    );
    assert_eq!(
        store.load_order(stored).await.expect("load"),
        Some(placed),
        "fencing an existing order leaves it alone"
    );

    let me = store
        .replica()
        .expect("a shared store names its replica")
        .to_string();
    let note = InFlightCheckout {
        order_id: OrderId::new(),
        cart_id: Some(CartId::new()),
        user: owner.clone(),
        idempotency_key: Some("key-1".into()),
        claim: Some(uuid::Uuid::new_v4()),
    };
    store.begin_checkout(&note).await.expect("note");
    let noted = store.checkouts_of(&me, 100).await.expect("list");
    assert!(noted.contains(&note), "{noted:?}");
    store.end_checkout(&me, note.order_id).await.expect("end");
    let noted = store.checkouts_of(&me, 100).await.expect("list");
    assert!(!noted.contains(&note), "ended: {noted:?}");

    let now = OffsetDateTime::now_utc();
    store.heartbeat(now).await.expect("heartbeat");
    let silent = store
        .silent_replicas(now + Duration::hours(1), Duration::seconds(10))
        .await
        .expect("silent");
    assert!(!silent.contains(&me), "never silent to itself: {silent:?}");
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    #[tokio::test]
    async fn memory_store_conforms() {
        super::run_all(&crate::store::MemoryStore::new()).await;
    }

    /// The shared memory store stands for the scylla store in the actors' tests: it records
    /// finished effects apart from the order's write, as that store does.
    #[tokio::test]
    async fn shared_memory_store_records_effects_done_at_their_version() {
        let store = crate::store::MemoryStore::shared();
        assert!(
            store
                .record_effects_done(&super::order(
                    crate::domain::OrderId::new(),
                    &super::fresh_user("missing"),
                    crate::order::OrderStatus::Processing,
                    1
                ))
                .await
                .expect("record")
        );
        super::effects_done_are_recorded_at_their_version(&store).await;
    }
}
