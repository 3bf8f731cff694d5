//! OrderActor, driven directly through the registries production starts (products, carts,
//! orders) over a `MemoryStore` behind a `ControlledStore`, a `StubGateway` and a
//! `ManualClock`. Each test asserts through the actors' answers and the store's records.

mod common;

use common::{ControlledStore, Harness, StubGateway, sku, tee, user};
use kassa_actors::cart::{CartError, CreateCart, EndCheckout, GetCart, SetLine};
use kassa_actors::clock::SharedClock;
use kassa_actors::domain::{CartId, OrderId, Quantity, Sku, UserId};
use kassa_actors::gateway::PaymentState;
use kassa_actors::order::{Effect, OrderStatus};
use kassa_actors::order_actor::{
    ConflictReason, GetOrder, LineConflict, ListedActive, NoticeOutcome, OrderActor, OrderError,
    OrderServices, OrderSettings, OrderTick, PaymentNotice, PlaceOrder, Placed,
};
use kassa_actors::product::ReserveOutcome;
use kassa_actors::registry::Registry;
use kassa_actors::store::{
    CartRecord, EmailKind, OrderRecord, OutboxEmail, Reservation, ShippingDetails, Store,
};
use kassa_actors::{ActorError, ActorSettings};
use kassa_testkit::store::Method;
use std::sync::Arc;
use std::time::Duration as StdDuration;
use time::Duration;

const TTL: Duration = Duration::minutes(15);

/// A verified webhook for the order's payment, for its full amount.
fn payment_notice(order: &OrderRecord, webhook_id: &str, succeeded: bool) -> PaymentNotice {
    let payment = order.payment.as_ref().expect("the order has a payment");
    PaymentNotice {
        webhook_id: webhook_id.into(),
        succeeded,
        payment_id: payment.payment_id.clone(),
        amount: order.total,
        currency: order.currency.code().into(),
    }
}

/// The shop around one shopper: every actor kind over one store, gateway and clock.
struct Shop {
    h: Harness,
    control: Arc<ControlledStore>,
    gateway: Arc<StubGateway>,
    orders: Registry<OrderActor>,
    shopper: UserId,
}

impl Shop {
    fn open() -> Self {
        Self::open_with(StdDuration::from_secs(5))
    }

    /// With `ask_timeout` for the product and cart actors' asks.
    fn open_with(ask_timeout: StdDuration) -> Self {
        let (h, control) = Harness::controlled_with(ActorSettings::default(), ask_timeout);
        Self::around(h, control)
    }

    /// Over a store that says other replicas write to it too (as the scylla store).
    fn open_shared() -> Self {
        let [(h, control), _] = Harness::replicas();
        Self::around(h, control)
    }

    fn around(h: Harness, control: Arc<ControlledStore>) -> Self {
        let gateway = StubGateway::new();
        let clock: SharedClock = Arc::new(h.clock.clone());
        let services = Arc::new(OrderServices {
            store: control.clone(),
            clock,
            gateway: gateway.clone(),
            products: h.products.clone(),
            carts: h.carts.clone(),
            settings: OrderSettings {
                reservation_ttl: TTL,
                callback_url: "https://kassa.test/webhook/payment-status".into(),
                shop_name: "Test shop".into(),
                shop_url: "https://shop.test/".into(),
                reconcile_window: Duration::minutes(1),
                reconcile_every: Duration::seconds(20),
            },
            actors: h.settings.clone(),
            mail: None,
        });
        let orders = Registry::new(h.pool.clone(), StdDuration::from_secs(5), move |m| {
            OrderActor::new(m, services.clone())
        });
        Self {
            h,
            control,
            gateway,
            orders,
            shopper: user("shopper"),
        }
    }

    /// A cart of the shopper's holding `lines` of 19.99 EUR tees.
    async fn cart_with(&self, lines: &[(&Sku, i64)]) -> CartId {
        let id = CartId::new();
        let create = CreateCart {
            owner: self.shopper.clone(),
        };
        self.h.carts.ask(&id, create).await.unwrap().unwrap();
        for (sku, quantity) in lines {
            let line = self.line(sku, *quantity);
            self.h.carts.ask(&id, line).await.unwrap().unwrap();
        }
        id
    }

    /// The shopper's change of a line: `quantity` 19.99 EUR tees of `sku`.
    fn line(&self, sku: &Sku, quantity: i64) -> SetLine {
        SetLine {
            user: self.shopper.clone(),
            sku: sku.clone(),
            quantity: Quantity::parse(quantity).unwrap(),
            product: tee(),
        }
    }

    /// Checks `cart` out as a fresh order, as the checkout route does.
    async fn place(&self, cart: CartId) -> (OrderId, Result<Placed, OrderError>) {
        let id = OrderId::new();
        let msg = PlaceOrder {
            user: self.shopper.clone(),
            cart_id: cart,
            shipping: ShippingDetails {
                name: "Ada".into(),
                line1: "1 Main St".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
                email: None,
            },
            email: "ada@example.test".into(),
            return_url: format!("https://shop.test/orders/{id}"),
            cancel_url: None,
        };
        (id, self.orders.ask_new(&id, msg).await.unwrap())
    }

    /// Checks `cart` out and expects a new order.
    async fn placed(&self, cart: CartId) -> OrderRecord {
        match self.place(cart).await {
            (_, Ok(Placed::New(order))) => *order,
            (_, other) => panic!("expected a new order, got {other:?}"),
        }
    }

    /// `s` with 5 units in stock, and a pending order for 2 of them.
    async fn two_of(&self, s: &Sku) -> OrderRecord {
        self.h.upsert(s, 5).await;
        let cart = self.cart_with(&[(s, 2)]).await;
        self.placed(cart).await
    }

    /// Delivers a verified webhook for the order's payment, for its full amount.
    async fn notice(
        &self,
        order: &OrderRecord,
        webhook_id: &str,
        succeeded: bool,
    ) -> NoticeOutcome {
        let msg = payment_notice(order, webhook_id, succeeded);
        self.orders.ask(&order.id, msg).await.unwrap().unwrap()
    }

    async fn tick(&self, id: OrderId) {
        self.orders.ask(&id, OrderTick).await.unwrap();
    }

    /// The order as its actor answers it (after any effects it was finishing).
    async fn order(&self, id: OrderId) -> OrderRecord {
        self.orders
            .ask(&id, GetOrder { viewer: None })
            .await
            .unwrap()
            .unwrap()
    }

    async fn stored_order(&self, id: OrderId) -> Option<OrderRecord> {
        self.h.memory.load_order(id).await.unwrap()
    }

    async fn stored_cart(&self, id: CartId) -> CartRecord {
        self.h.stored_cart(id).await.expect("the cart is stored")
    }

    async fn on_hand(&self, sku: &Sku) -> i64 {
        self.h.stored_product(sku).await.row.on_hand
    }

    /// The order's stored reservation on `sku`, if any.
    async fn reservation(&self, sku: &Sku, order: OrderId) -> Option<Reservation> {
        let product = self.h.stored_product(sku).await;
        product
            .reservations
            .into_iter()
            .find(|r| r.order_id == order)
    }

    /// The order's emails waiting in the outbox.
    async fn outbox(&self, order: OrderId) -> Vec<OutboxEmail> {
        let later = self.h.now() + Duration::days(1);
        let due = self.h.memory.due_emails(later, 100).await.unwrap();
        due.into_iter().filter(|e| e.order_id == order).collect()
    }
}

fn statuses(order: &OrderRecord) -> Vec<OrderStatus> {
    order.history.iter().map(|c| c.status).collect()
}

#[actix_rt::test]
async fn placing_a_two_line_cart_reserves_each_line_locks_the_cart_and_opens_one_payment() {
    let shop = Shop::open();
    let (tee_m, tee_l) = (sku("tee-m"), sku("tee-l"));
    shop.h.upsert(&tee_m, 5).await;
    shop.h.upsert(&tee_l, 5).await;
    let cart = shop.cart_with(&[(&tee_m, 2), (&tee_l, 1)]).await;

    let order = shop.placed(cart).await;

    assert_eq!(order.status, OrderStatus::PendingPayment);
    let lines: Vec<_> = order
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    // The order keeps its lines in SKU order, whatever the cart's.
    assert_eq!(lines, [(tee_l.clone(), 1), (tee_m.clone(), 2)]);
    assert_eq!(order.total, 3 * tee().price);
    assert_eq!(order.expires_at, shop.h.now() + TTL);
    assert_eq!(shop.stored_order(order.id).await.as_ref(), Some(&order));

    for (sku, qty) in [(&tee_m, 2), (&tee_l, 1)] {
        let held = shop.reservation(sku, order.id).await.expect("reserved");
        assert_eq!((held.qty, held.committed), (qty, false), "{sku}");
        assert_eq!(held.expires_at, order.expires_at, "{sku}");
        assert_eq!(shop.on_hand(sku).await, 5, "reserving does not sell: {sku}");
    }
    assert_eq!(shop.stored_cart(cart).await.locked_by, Some(order.id));

    assert_eq!(shop.gateway.initiations(), 1);
    let payment = shop
        .gateway
        .payment_of(order.id)
        .expect("a payment is open");
    assert_eq!(payment.amount, order.total);
    assert_eq!(
        order.payment.map(|p| p.payment_id),
        Some(payment.payment_id)
    );
}

#[actix_rt::test]
async fn a_line_short_of_stock_is_a_conflict_that_holds_nothing_and_unlocks_the_cart() {
    let shop = Shop::open();
    let (plenty, scarce) = (sku("plenty"), sku("scarce"));
    shop.h.upsert(&plenty, 5).await;
    shop.h.upsert(&scarce, 1).await;
    let cart = shop.cart_with(&[(&plenty, 2), (&scarce, 2)]).await;

    let (id, answer) = shop.place(cart).await;

    let conflict = LineConflict {
        sku: scarce.clone(),
        reason: ConflictReason::InsufficientStock,
        requested: 2,
        available: 1,
        cart_price: tee().price,
        current_price: Some(tee().price),
    };
    assert_eq!(answer, Err(OrderError::Conflicts(vec![conflict])));
    // The line that could be reserved was, and must have been given back.
    assert_eq!(shop.reservation(&plenty, id).await, None);
    assert_eq!(shop.reservation(&scarce, id).await, None);
    let stored_cart = shop.stored_cart(cart).await;
    assert_eq!(stored_cart.locked_by, None);
    assert_eq!(stored_cart.lines.len(), 2);
    assert_eq!(shop.stored_order(id).await, None);
    assert_eq!(shop.gateway.initiations(), 0);
}

#[actix_rt::test]
async fn a_successful_payment_sells_the_stock_empties_the_cart_and_queues_the_confirmation() {
    let shop = Shop::open();
    let (tee_m, tee_l) = (sku("tee-m"), sku("tee-l"));
    shop.h.upsert(&tee_m, 5).await;
    shop.h.upsert(&tee_l, 5).await;
    let cart = shop.cart_with(&[(&tee_m, 2), (&tee_l, 1)]).await;
    let order = shop.placed(cart).await;

    let outcome = shop.notice(&order, "wh-paid", true).await;

    assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::Processing));
    let paid = shop.order(order.id).await;
    assert_eq!(paid.status, OrderStatus::Processing);
    assert!(
        paid.pending_effects.is_empty(),
        "{:?}",
        paid.pending_effects
    );
    assert_eq!(shop.stored_order(order.id).await.as_ref(), Some(&paid));
    assert_eq!(
        paid.settled_payment_id,
        order.payment.as_ref().map(|p| p.payment_id.clone())
    );

    assert_eq!(shop.on_hand(&tee_m).await, 3);
    assert_eq!(shop.on_hand(&tee_l).await, 4);
    for sku in [&tee_m, &tee_l] {
        let sold = shop
            .reservation(sku, order.id)
            .await
            .expect("commit marker");
        assert!(sold.committed, "{sku}");
    }

    let stored_cart = shop.stored_cart(cart).await;
    assert!(stored_cart.lines.is_empty(), "{:?}", stored_cart.lines);
    assert_eq!(stored_cart.locked_by, None);
    assert_eq!(stored_cart.last_paid_order, Some(order.id));

    let emails = shop.outbox(order.id).await;
    let queued: Vec<_> = emails.iter().map(|e| (e.kind, e.to.as_str())).collect();
    assert_eq!(queued, [(EmailKind::Confirmation, "ada@example.test")]);
}

/// Checks that `order` is paid as a whole: sold, its cart emptied and usable, its email queued.
async fn assert_settled_as_paid(shop: &Shop, order: &OrderRecord, s: &Sku, on_hand: i64) {
    let paid = shop.stored_order(order.id).await.expect("stored");
    assert_eq!(paid.status, OrderStatus::Processing);
    assert!(
        paid.pending_effects.is_empty(),
        "{:?}",
        paid.pending_effects
    );
    assert_eq!(
        shop.order(order.id).await,
        paid,
        "the actor holds what is stored"
    );
    assert_eq!(shop.on_hand(s).await, on_hand);
    let sold = shop.reservation(s, order.id).await.expect("commit marker");
    assert!(sold.committed);
    // As the shopper sees it (on a shared store the stored cart may keep the paid order's
    // lock until its next change settles it).
    let cart = shop
        .h
        .carts
        .ask(
            &order.cart_id,
            GetCart {
                user: shop.shopper.clone(),
            },
        )
        .await
        .unwrap()
        .expect("the shopper's cart");
    assert!(cart.lines.is_empty(), "{:?}", cart.lines);
    assert_eq!(cart.locked_by, None);
    assert_eq!(cart.last_paid_order, Some(order.id));
    let kinds: Vec<_> = shop.outbox(order.id).await.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EmailKind::Confirmation]);
    // The cart actor took the written cart as its state: the shopper can fill it at once.
    let refilled = shop
        .h
        .carts
        .ask(&order.cart_id, shop.line(s, 1))
        .await
        .unwrap();
    assert_eq!(refilled.expect("the cart takes a line").lines.len(), 1);
    let stored = shop.stored_cart(order.cart_id).await;
    assert_eq!(
        (stored.lines.len(), stored.locked_by, stored.last_paid_order),
        (1, None, Some(order.id)),
        "the change wrote the cart as settled: {stored:?}"
    );
}

#[actix_rt::test]
async fn a_paid_webhook_is_one_write_carrying_the_order_the_stock_the_cart_and_the_email() {
    let shop = Shop::open();
    let s = sku("one-write");
    let order = shop.two_of(&s).await;
    let before = shop.control.writes().len();

    let outcome = shop.notice(&order, "wh-paid", true).await;

    assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::Processing));
    assert_eq!(shop.control.writes()[before..], [Method::WriteProductWith]);
    assert_settled_as_paid(&shop, &order, &s, 3).await;
}

/// On a shared store the paid transition is a write of its own and its effects follow; that
/// they all finished is recorded apart (`Store::record_effects_done`), not as one more
/// conditional write of the order.
#[actix_rt::test]
async fn on_a_shared_store_finished_effects_are_recorded_without_another_order_write() {
    let shop = Shop::open_shared();
    let s = sku("shared-effects");
    let order = shop.two_of(&s).await;
    let before = shop.control.writes().len();

    let outcome = shop.notice(&order, "wh-paid", true).await;
    assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::Processing));
    let held = shop.order(order.id).await;

    let writes = shop.control.writes()[before..].to_vec();
    assert_eq!(
        writes.iter().filter(|m| **m == Method::WriteOrder).count(),
        1,
        "the transition only: {writes:?}"
    );
    assert_eq!(held.version, order.version + 1, "no version for the record");
    // Paid while it held the cart's lock: the cart is not written; its next reader ends it.
    assert!(!writes.contains(&Method::WriteCart), "{writes:?}");
    assert_eq!(
        shop.stored_cart(order.cart_id).await.locked_by,
        Some(order.id)
    );
    assert_settled_as_paid(&shop, &order, &s, 3).await;
}

/// The scan that adopts the active orders no replica hosts also finds entries a crash left
/// behind (between recording an order's effects done and leaving the active set): such an
/// order needs no attention, and its entry is retired so the scan stops waking it. An order
/// that does need attention is ticked, and its entry kept.
#[actix_rt::test]
async fn an_order_listed_active_that_needs_nothing_has_its_entry_retired() {
    let shop = Shop::open_shared();
    let s = sku("listed-active");
    let paid = shop.two_of(&s).await;
    let pending = shop.two_of(&s).await;
    shop.notice(&paid, "wh-listed", true).await;
    let settled = shop.order(paid.id).await;
    assert!(!settled.is_active(), "paid, effects done: {settled:?}");

    let before = shop.control.effects_recorded();
    shop.orders.ask(&pending.id, ListedActive).await.unwrap();
    assert_eq!(
        shop.control.effects_recorded(),
        before,
        "a pending order keeps its entry"
    );
    shop.orders.ask(&paid.id, ListedActive).await.unwrap();
    assert_eq!(
        shop.control.effects_recorded(),
        before + 1,
        "the settled one's is retired"
    );
    assert_eq!(
        shop.order(paid.id).await,
        settled,
        "and nothing else changes"
    );
}

#[actix_rt::test]
async fn on_a_shared_store_a_payment_after_the_lock_lapsed_takes_what_it_bought_from_the_changed_cart()
 {
    let shop = Shop::open_shared();
    let (s, other) = (sku("late-payment"), sku("added-later"));
    shop.h.upsert(&other, 5).await;
    let order = shop.two_of(&s).await;
    // The lock lapsed with the order still pending (its expiry not swept yet): the shopper
    // changes the cart, which no longer names the order. A payment now must take what it
    // bought out of the cart itself; no reader of the cart could.
    shop.h.clock.advance(TTL + Duration::seconds(1));
    let changed = shop
        .h
        .carts
        .ask(&order.cart_id, shop.line(&other, 1))
        .await
        .unwrap();
    assert_eq!(changed.expect("the lapsed lock").locked_by, None);

    let outcome = shop.notice(&order, "wh-late", true).await;
    assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::Processing));
    assert!(shop.order(order.id).await.pending_effects.is_empty());

    assert_only_left_in_the_cart(
        &shop,
        &order,
        other,
        "the paid units left the stored cart, the line added since stayed",
    )
    .await;
}

/// The stored cart of paid `order`: only `kept` left, unlocked, the order's units taken once.
async fn assert_only_left_in_the_cart(shop: &Shop, order: &OrderRecord, kept: Sku, why: &str) {
    let stored = shop.stored_cart(order.cart_id).await;
    let skus: Vec<_> = stored.lines.iter().map(|l| l.sku.clone()).collect();
    assert_eq!(
        (skus, stored.locked_by, stored.last_paid_order),
        (vec![kept], None, Some(order.id)),
        "{why}"
    );
}

#[actix_rt::test]
async fn paid_webhooks_for_one_sku_arriving_together_share_its_write() {
    let shop = Shop::open();
    let s = sku("busy-sku");
    shop.h.upsert(&s, 10).await;
    let mut orders = Vec::new();
    for _ in 0..4 {
        let cart = shop.cart_with(&[(&s, 1)]).await;
        orders.push(shop.placed(cart).await);
    }
    let before = shop.control.writes().len();

    // The first settlement's write is held at the store; the other three queue behind it.
    shop.control.hold_writes();
    let ids: Vec<String> = orders.iter().map(|o| format!("wh-{}", o.id)).collect();
    let notices = futures_util::future::join_all(
        orders
            .iter()
            .zip(&ids)
            .map(|(order, id)| shop.notice(order, id, true)),
    );
    let opener = async {
        while shop.control.writes_waiting() == 0 {
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        // Let the other webhooks reach the SKU's queue.
        tokio::time::sleep(StdDuration::from_millis(50)).await;
        shop.control.open_writes();
    };
    let (outcomes, ()) = tokio::join!(notices, opener);

    for outcome in outcomes {
        assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::Processing));
    }
    assert_eq!(
        shop.control.writes()[before..],
        [Method::WriteProductWith, Method::WriteProductWith],
        "one write for the first, one for the three queued behind it"
    );
    for order in &orders {
        let paid = shop.stored_order(order.id).await.expect("stored");
        assert_eq!(paid.status, OrderStatus::Processing);
        assert!(
            paid.pending_effects.is_empty(),
            "{:?}",
            paid.pending_effects
        );
        assert_eq!(shop.outbox(order.id).await.len(), 1);
    }
    assert_eq!(shop.on_hand(&s).await, 6);
}

#[actix_rt::test]
async fn a_paid_webhook_waits_for_its_write_however_long_the_store_takes() {
    // Product asks time out after 100 ms; the write is held for longer.
    let shop = Shop::open_with(StdDuration::from_millis(100));
    let s = sku("slow-write");
    let order = shop.two_of(&s).await;

    shop.control.hold_writes();
    let notice = shop.notice(&order, "wh-paid", true);
    let opener = async {
        while shop.control.writes_waiting() == 0 {
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        shop.control.open_writes();
    };
    let (outcome, ()) = tokio::join!(notice, opener);

    // Answered by how the write went, not by a timeout that guessed it had not.
    assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::Processing));
    assert_settled_as_paid(&shop, &order, &s, 3).await;
}

#[actix_rt::test]
async fn a_paid_webhook_whose_one_write_fails_changes_nothing_and_its_redelivery_settles_it() {
    let shop = Shop::open();
    let s = sku("write-fails");
    let order = shop.two_of(&s).await;
    let notice = payment_notice(&order, "wh-paid", true);

    shop.control.fail_writes();
    let failed = shop.orders.ask(&order.id, notice.clone()).await.unwrap();
    shop.control.heal();

    assert!(failed.is_err(), "{failed:?}");
    let stored = shop.stored_order(order.id).await.expect("stored");
    assert_eq!(stored.status, OrderStatus::PendingPayment);
    assert!(
        !shop
            .reservation(&s, order.id)
            .await
            .expect("held")
            .committed
    );
    assert_eq!(shop.on_hand(&s).await, 5);
    assert_eq!(
        shop.stored_cart(order.cart_id).await.locked_by,
        Some(order.id)
    );
    assert!(shop.outbox(order.id).await.is_empty());

    let redelivered = shop.orders.ask(&order.id, notice).await.unwrap();
    assert_eq!(
        redelivered.expect("settled"),
        NoticeOutcome::Moved(OrderStatus::Processing)
    );
    assert_settled_as_paid(&shop, &order, &s, 3).await;
}

#[actix_rt::test]
async fn a_failed_payment_fails_the_order_releases_the_stock_and_unlocks_the_cart() {
    let shop = Shop::open();
    let tee_m = sku("tee-m");
    shop.h.upsert(&tee_m, 5).await;
    let cart = shop.cart_with(&[(&tee_m, 2)]).await;
    let order = shop.placed(cart).await;
    let before = shop.control.writes().len();

    let outcome = shop.notice(&order, "wh-declined", false).await;

    assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::Failed));
    assert_eq!(
        shop.control.writes()[before..],
        [Method::WriteProductWith],
        "the release carries the order and the cart's unlock"
    );
    let failed = shop.order(order.id).await;
    assert_eq!(
        statuses(&failed),
        [OrderStatus::PendingPayment, OrderStatus::Failed]
    );
    assert!(
        failed.pending_effects.is_empty(),
        "{:?}",
        failed.pending_effects
    );
    assert_eq!(shop.reservation(&tee_m, order.id).await, None);
    assert_eq!(shop.on_hand(&tee_m).await, 5);
    let stored_cart = shop.stored_cart(cart).await;
    assert_eq!(stored_cart.locked_by, None);
    assert_eq!(
        stored_cart.lines.len(),
        1,
        "a failed order keeps the cart's lines"
    );
    assert!(shop.outbox(order.id).await.is_empty());
}

#[actix_rt::test]
async fn an_unpaid_order_expires_at_its_ttl_and_releases_the_stock() {
    let shop = Shop::open();
    let (tee_m, tee_l) = (sku("tee-m"), sku("tee-l"));
    shop.h.upsert(&tee_m, 5).await;
    shop.h.upsert(&tee_l, 5).await;
    let cart = shop.cart_with(&[(&tee_m, 2), (&tee_l, 1)]).await;
    let order = shop.placed(cart).await;

    // A tick before the TTL leaves it pending.
    shop.h.clock.advance(TTL - Duration::minutes(2));
    shop.tick(order.id).await;
    assert_eq!(
        shop.order(order.id).await.status,
        OrderStatus::PendingPayment
    );
    assert!(shop.reservation(&tee_m, order.id).await.is_some());

    shop.h
        .clock
        .advance(Duration::minutes(2) + Duration::seconds(1));
    shop.tick(order.id).await;

    let expired = shop.order(order.id).await;
    assert_eq!(
        statuses(&expired),
        [OrderStatus::PendingPayment, OrderStatus::Expired]
    );
    assert!(
        expired.pending_effects.is_empty(),
        "{:?}",
        expired.pending_effects
    );
    assert_eq!(shop.stored_order(order.id).await.as_ref(), Some(&expired));
    for sku in [&tee_m, &tee_l] {
        assert_eq!(shop.reservation(sku, order.id).await, None, "{sku}");
        assert_eq!(shop.on_hand(sku).await, 5, "{sku}");
    }
    assert_eq!(shop.stored_cart(cart).await.locked_by, None);
}

/// Moves the clock past the order's TTL and lets it expire.
async fn expire(shop: &Shop, order: &OrderRecord) {
    shop.h.clock.advance(TTL + Duration::seconds(1));
    shop.tick(order.id).await;
    assert_eq!(shop.order(order.id).await.status, OrderStatus::Expired);
}

#[actix_rt::test]
async fn a_success_after_expiry_takes_the_stock_again_and_sells_it_when_it_is_still_there() {
    let shop = Shop::open();
    let tee_m = sku("tee-m");
    shop.h.upsert(&tee_m, 5).await;
    let cart = shop.cart_with(&[(&tee_m, 2)]).await;
    let order = shop.placed(cart).await;
    expire(&shop, &order).await;

    let outcome = shop.notice(&order, "wh-late", true).await;

    assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::Processing));
    let paid = shop.order(order.id).await;
    assert_eq!(
        statuses(&paid),
        [
            OrderStatus::PendingPayment,
            OrderStatus::Expired,
            OrderStatus::Processing
        ]
    );
    assert_eq!(shop.on_hand(&tee_m).await, 3);
    assert!(
        shop.reservation(&tee_m, order.id)
            .await
            .is_some_and(|r| r.committed)
    );
    assert!(shop.stored_cart(cart).await.lines.is_empty());
    let kinds: Vec<_> = shop.outbox(order.id).await.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EmailKind::Confirmation]);
    assert!(shop.gateway.refunds().is_empty());
}

#[actix_rt::test]
async fn a_success_after_expiry_is_refunded_when_a_line_was_sold_meanwhile() {
    let shop = Shop::open();
    let (still_there, sold_out) = (sku("a-still-there"), sku("b-sold-out"));
    shop.h.upsert(&still_there, 5).await;
    shop.h.upsert(&sold_out, 1).await;
    let cart = shop.cart_with(&[(&still_there, 2), (&sold_out, 1)]).await;
    let order = shop.placed(cart).await;
    expire(&shop, &order).await;
    let rival = OrderId::new();
    let taken = shop
        .h
        .products
        .ask(&sold_out, shop.h.reserve(rival, 1))
        .await;
    assert_eq!(taken, Ok(Ok(ReserveOutcome::Reserved)));

    let outcome = shop.notice(&order, "wh-late", true).await;

    // The table's (expired, paid without stock) cell: refund, and the refund settles it.
    assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::RefundPending));
    let refunded = shop.order(order.id).await;
    assert_eq!(
        statuses(&refunded),
        [
            OrderStatus::PendingPayment,
            OrderStatus::Expired,
            OrderStatus::RefundPending,
            OrderStatus::Refunded
        ]
    );
    assert!(
        refunded.pending_effects.is_empty(),
        "{:?}",
        refunded.pending_effects
    );
    let payment_id = order.payment.as_ref().map(|p| p.payment_id.clone());
    assert_eq!(
        shop.gateway.refunds(),
        payment_id.into_iter().collect::<Vec<_>>()
    );
    let kinds: Vec<_> = shop.outbox(order.id).await.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EmailKind::Refund]);
    // The line it could take again was given back; the rival keeps the other.
    assert_eq!(shop.reservation(&still_there, order.id).await, None);
    assert_eq!(shop.reservation(&sold_out, order.id).await, None);
    assert!(shop.reservation(&sold_out, rival).await.is_some());
    assert_eq!(shop.on_hand(&still_there).await, 5);
    assert_eq!(shop.on_hand(&sold_out).await, 1);
    assert_eq!(shop.stored_cart(cart).await.lines.len(), 2);
}

#[actix_rt::test]
async fn an_order_write_failing_after_the_reservations_leaves_nothing_held_and_no_order() {
    let shop = Shop::open();
    let (tee_m, tee_l) = (sku("tee-m"), sku("tee-l"));
    shop.h.upsert(&tee_m, 5).await;
    shop.h.upsert(&tee_l, 5).await;
    let cart = shop.cart_with(&[(&tee_m, 2), (&tee_l, 1)]).await;
    shop.control.fail_order_writes();

    let (id, answer) = shop.place(cart).await;

    assert_eq!(answer, Err(OrderError::Actor(ActorError::Unavailable)));
    assert_eq!(shop.stored_order(id).await, None);
    for sku in [&tee_m, &tee_l] {
        assert_eq!(shop.reservation(sku, id).await, None, "{sku}");
    }
    let stored_cart = shop.stored_cart(cart).await;
    assert_eq!(stored_cart.locked_by, None);
    assert_eq!(stored_cart.lines.len(), 2);
    // The payment was opened before the write; nobody holds its link: it is cancelled.
    assert_eq!(shop.gateway.initiations(), 1);
    let opened = shop
        .gateway
        .payment_of(id)
        .expect("opened before the write");
    assert_eq!(shop.gateway.cancels(), [opened.payment_id]);
    assert_eq!(opened.state, PaymentState::Failed);
}

#[actix_rt::test]
async fn a_payment_that_cannot_be_opened_fails_the_order_and_cancels_a_late_opened_one() {
    let shop = Shop::open();
    let tee_m = sku("tee-m");
    shop.h.upsert(&tee_m, 5).await;
    let cart = shop.cart_with(&[(&tee_m, 2)]).await;
    // The gateway opens the payment but the answer never arrives.
    shop.gateway.time_out_initiations(true);

    let (id, answer) = shop.place(cart).await;

    assert_eq!(answer, Err(OrderError::GatewayUnavailable));
    let failed = shop.stored_order(id).await.expect("stored as failed");
    assert_eq!(
        statuses(&failed),
        [OrderStatus::PendingPayment, OrderStatus::Failed]
    );
    assert_eq!(failed.payment, None);
    assert_eq!(shop.reservation(&tee_m, id).await, None);
    assert_eq!(shop.on_hand(&tee_m).await, 5);
    assert_eq!(shop.stored_cart(cart).await.locked_by, None);

    // Until the gateway answers, the payment it may have opened stays to be cancelled.
    let waiting = shop.order(id).await.pending_effects;
    assert_eq!(waiting, [Effect::CancelLatePayment]);
    assert!(shop.gateway.cancels().is_empty());
    shop.gateway.time_out_initiations(false);
    shop.tick(id).await;

    assert!(shop.order(id).await.pending_effects.is_empty());
    let late = shop.gateway.payment_of(id).expect("the gateway opened one");
    assert_eq!(shop.gateway.cancels(), [late.payment_id]);
    assert_eq!(late.state, PaymentState::Failed);
}

#[actix_rt::test]
async fn effects_that_keep_failing_are_re_driven_less_and_less_often() {
    let shop = Shop::open();
    let tee_m = sku("tee-m");
    shop.h.upsert(&tee_m, 5).await;
    let cart = shop.cart_with(&[(&tee_m, 2)]).await;
    // The gateway stays down: the late payment's cancel cannot be asked for.
    shop.gateway.time_out_initiations(true);
    let (id, _) = shop.place(cart).await;
    let asked = shop.gateway.initiations();

    // The first re-drive runs at the next tick; the ticks of the next moment wait.
    shop.tick(id).await;
    assert_eq!(shop.gateway.initiations(), asked + 1);
    shop.tick(id).await;
    shop.tick(id).await;
    assert_eq!(
        shop.gateway.initiations(),
        asked + 1,
        "no re-drive within its wait"
    );
    // Waits double from one tick (each between half and all of its cap).
    shop.h.clock.advance(Duration::seconds(1));
    shop.tick(id).await;
    assert_eq!(shop.gateway.initiations(), asked + 2);
    shop.h.clock.advance(Duration::milliseconds(900));
    shop.tick(id).await;
    assert_eq!(
        shop.gateway.initiations(),
        asked + 2,
        "the second wait is 1-2 s"
    );
    shop.h.clock.advance(Duration::milliseconds(1100));
    shop.tick(id).await;
    assert_eq!(shop.gateway.initiations(), asked + 3);

    // The gateway is back: the next re-drive finishes the effect.
    shop.gateway.time_out_initiations(false);
    shop.h.clock.advance(Duration::seconds(4));
    shop.tick(id).await;
    assert!(shop.order(id).await.pending_effects.is_empty());
    let late = shop.gateway.payment_of(id).expect("the gateway opened one");
    assert_eq!(shop.gateway.cancels(), [late.payment_id]);
}

#[actix_rt::test]
async fn a_payment_that_cannot_be_opened_nor_its_failure_stored_leaves_no_order_held() {
    let shop = Shop::open();
    let tee_m = sku("tee-m");
    shop.h.upsert(&tee_m, 5).await;
    let cart = shop.cart_with(&[(&tee_m, 2)]).await;
    shop.gateway.time_out_initiations(true);
    shop.control.fail_order_writes();

    let (id, answer) = shop.place(cart).await;

    assert_eq!(answer, Err(OrderError::GatewayUnavailable));
    assert_eq!(shop.stored_order(id).await, None);
    let asked = shop.orders.ask(&id, GetOrder { viewer: None }).await;
    assert_eq!(asked.unwrap(), Err(OrderError::NotFound), "no order held");
    assert_eq!(shop.reservation(&tee_m, id).await, None);
    assert_eq!(shop.on_hand(&tee_m).await, 5);
    assert_eq!(shop.stored_cart(cart).await.locked_by, None);
}

#[actix_rt::test]
async fn a_redelivered_webhook_changes_nothing_the_second_time() {
    let shop = Shop::open();
    let tee_m = sku("tee-m");
    shop.h.upsert(&tee_m, 5).await;
    let cart = shop.cart_with(&[(&tee_m, 2)]).await;
    let order = shop.placed(cart).await;
    assert_eq!(
        shop.notice(&order, "wh-1", true).await,
        NoticeOutcome::Moved(OrderStatus::Processing)
    );
    let after_first = shop.order(order.id).await;

    let outcome = shop.notice(&order, "wh-1", true).await;

    assert_eq!(outcome, NoticeOutcome::Duplicate);
    // Not even the order's version moves (a new webhook id would be remembered).
    assert_eq!(shop.stored_order(order.id).await, Some(after_first));
    assert_eq!(shop.on_hand(&tee_m).await, 3);
    assert_eq!(shop.outbox(order.id).await.len(), 1);
}

/// The cart of an order paid while it held the lock keeps that lock as stored, and the lock
/// lapses with the order's expiry. A change after the lapse must not take the cart as it was
/// locked, paid units and all: the lock is settled from the order first.
#[actix_rt::test]
async fn on_a_shared_store_a_change_after_the_paid_lock_lapsed_does_not_bring_back_the_paid_units()
{
    let shop = Shop::open_shared();
    let (s, other) = (sku("paid-then-lapsed"), sku("added-after"));
    shop.h.upsert(&other, 5).await;
    let order = shop.two_of(&s).await;
    let outcome = shop.notice(&order, "wh-paid", true).await;
    assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::Processing));
    assert!(shop.order(order.id).await.pending_effects.is_empty());
    assert_eq!(
        shop.stored_cart(order.cart_id).await.locked_by,
        Some(order.id)
    );

    shop.h.clock.advance(TTL + Duration::seconds(1));
    let changed = shop
        .h
        .carts
        .ask(&order.cart_id, shop.line(&other, 1))
        .await
        .unwrap();
    let skus: Vec<_> = changed
        .expect("the cart takes a line")
        .lines
        .iter()
        .map(|l| l.sku.clone())
        .collect();
    assert_eq!(skus, vec![other], "the paid units stay out of the cart");
    let stored = shop.stored_cart(order.cart_id).await;
    assert_eq!(
        (stored.lines.len(), stored.locked_by, stored.last_paid_order),
        (1, None, Some(order.id))
    );
}

/// A payment stamped while the lock was live but stored only after it lapsed (a slow or
/// timed-out write completed later). Meanwhile another replica read the order as pending and
/// the lock as lapsed, and the shopper changed the cart there: the order must take what it
/// bought out of the cart itself, since the cart no longer names it.
#[actix_rt::test]
async fn on_a_shared_store_a_payment_stored_after_the_lock_lapsed_ends_the_cart_itself() {
    let [(h, control), (other, _)] = Harness::replicas();
    let shop = Shop::around(h, control);
    let (s, added) = (sku("stored-late"), sku("added-elsewhere"));
    let order = shop.two_of(&s).await;
    shop.control.hold_writes();
    let elsewhere = async {
        while shop.control.writes_waiting() == 0 {
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        shop.h.clock.advance(TTL + Duration::seconds(1));
        other.clock.advance(TTL + Duration::seconds(1));
        let changed = other
            .carts
            .ask(&order.cart_id, shop.line(&added, 1))
            .await
            .unwrap();
        assert_eq!(changed.expect("the lapsed lock").lines.len(), 2);
        shop.control.open_writes();
    };
    let (outcome, ()) = tokio::join!(shop.notice(&order, "wh-slow", true), elsewhere);
    assert_eq!(outcome, NoticeOutcome::Moved(OrderStatus::Processing));
    assert!(shop.order(order.id).await.pending_effects.is_empty());

    assert_only_left_in_the_cart(
        &shop,
        &order,
        added,
        "the paid units left the cart changed meanwhile",
    )
    .await;
}

type CounterSample = (
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    metrics_util::debugging::DebugValue,
);

/// `kassa_contended_total{entity}` as the recorder drained it (its growth since the last
/// snapshot).
fn contended(snapshot: &[CounterSample], entity: &str) -> u64 {
    snapshot
        .iter()
        .filter(|(key, ..)| {
            key.key().name() == "kassa_contended_total"
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "entity" && l.value() == entity)
        })
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => *n,
            other => panic!("not a counter: {other:?}"),
        })
        .sum()
}

/// A cart change and a webhook whose writes keep losing to another replica's answer
/// `Contended` (503 at the edge), and each is counted as contended under its entity, as a
/// product command is (an order's own end of its cart, which no client waits for, is not), so that the metric explains every 503 `overloaded`. No other test of
/// this binary leaves a cart or an order answered `Contended`, so none moves these counters
/// (the recorder is the process's, installed here).
#[actix_rt::test]
async fn a_cart_change_and_a_webhook_that_lose_every_write_are_counted_as_contended() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    recorder.install().expect("the binary's only recorder");
    let shop = Shop::open_shared();
    let s = sku("contended");
    let order = shop.two_of(&s).await;
    let cart = shop.cart_with(&[]).await;
    snapshots.snapshot();

    shop.control.conflict_on_every_write();
    let changed = shop.h.carts.ask(&cart, shop.line(&s, 1)).await.unwrap();
    assert_eq!(changed, Err(CartError::Actor(ActorError::Contended)));
    // An order's own end of its cart (an effect, retried later) is no shopper's 503.
    let end = EndCheckout {
        order_id: order.id,
        paid: None,
    };
    let ended = shop.h.carts.ask(&order.cart_id, end).await.unwrap();
    assert_eq!(ended, Err(CartError::Actor(ActorError::Contended)));
    let notice = payment_notice(&order, "wh-contended", true);
    let answer = shop.orders.ask(&order.id, notice).await.unwrap();
    assert_eq!(
        answer.map(|_| ()),
        Err(OrderError::Actor(ActorError::Contended))
    );

    let drained = snapshots.snapshot().into_vec();
    assert_eq!(
        (contended(&drained, "cart"), contended(&drained, "order")),
        (1, 1)
    );
}
