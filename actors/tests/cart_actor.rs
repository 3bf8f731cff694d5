//! CartActor, driven through its registry as production does, over a `MemoryStore`.

mod common;

use common::{Harness, JoinAll, sku, tee, user, wait_until};
use kassa_actors::ActorError;
use kassa_actors::cart::{CartError, CreateCart, GetCart, RemoveLine, SetLine};
use kassa_actors::domain::{CartId, Currency, OrderId, ProductInfo, Quantity, UserId};
use kassa_actors::registry::AskError;
use kassa_actors::store::{CartLine, CartRecord, Store, WriteOutcome};

type Answer = Result<Result<CartRecord, CartError>, AskError>;

async fn create(h: &Harness, id: CartId, owner: &UserId) -> CartRecord {
    h.carts
        .ask(
            &id,
            CreateCart {
                owner: owner.clone(),
            },
        )
        .await
        .expect("answered")
        .expect("created")
}

async fn get(h: &Harness, id: CartId, who: &UserId) -> Result<CartRecord, CartError> {
    h.carts
        .ask(&id, GetCart { user: who.clone() })
        .await
        .expect("answered")
}

fn set_line(who: &UserId, raw_sku: &str, quantity: i64, product: ProductInfo) -> SetLine {
    SetLine {
        user: who.clone(),
        sku: sku(raw_sku),
        quantity: Quantity::parse(quantity).expect("valid quantity"),
        product,
    }
}

async fn set(h: &Harness, id: CartId, msg: SetLine) -> Result<CartRecord, CartError> {
    h.carts.ask(&id, msg).await.expect("answered")
}

async fn remove(
    h: &Harness,
    id: CartId,
    who: &UserId,
    raw_sku: &str,
) -> Result<CartRecord, CartError> {
    h.carts
        .ask(
            &id,
            RemoveLine {
                user: who.clone(),
                sku: sku(raw_sku),
            },
        )
        .await
        .expect("answered")
}

fn usd_mug() -> ProductInfo {
    ProductInfo {
        name: "Mug".into(),
        price: 900,
        currency: Currency::USD,
    }
}

fn is_unavailable(answer: &Answer) -> bool {
    matches!(
        answer,
        Err(AskError::Unavailable) | Ok(Err(CartError::Actor(ActorError::Unavailable)))
    )
}

#[actix_rt::test]
async fn a_created_cart_is_empty_durable_and_owned_by_its_creator() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    let cart = create(&h, id, &alice).await;
    assert_eq!(
        (cart.id, &cart.owner, cart.lines.len(), cart.locked_by),
        (id, &alice, 0, None)
    );
    assert_eq!(h.stored_cart(id).await, Some(cart.clone()));
    assert_eq!(get(&h, id, &alice).await, Ok(cart));
}

#[actix_rt::test]
async fn creating_the_same_cart_again_is_idempotent_for_its_owner_only() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    let first = create(&h, id, &alice).await;
    assert_eq!(create(&h, id, &alice).await, first);
    let stolen = h
        .carts
        .ask(
            &id,
            CreateCart {
                owner: user("mallory"),
            },
        )
        .await
        .expect("answered");
    assert_eq!(stolen, Err(CartError::AlreadyExists));
    assert_eq!(h.stored_cart(id).await.map(|c| c.owner), Some(alice));
}

#[actix_rt::test]
async fn a_cart_that_does_not_exist_is_not_found() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    assert_eq!(get(&h, id, &alice).await, Err(CartError::NotFound));
    assert_eq!(
        set(&h, id, set_line(&alice, "tee-m", 1, tee())).await,
        Err(CartError::NotFound)
    );
    assert_eq!(h.stored_cart(id).await, None);
}

#[actix_rt::test]
async fn someone_elses_cart_is_not_found_and_cannot_be_changed() {
    let h = Harness::new();
    let (id, alice, mallory) = (CartId::new(), user("alice"), user("mallory"));
    create(&h, id, &alice).await;
    set(&h, id, set_line(&alice, "tee-m", 2, tee()))
        .await
        .expect("alice adds a line");
    let before = h.stored_cart(id).await;

    assert_eq!(get(&h, id, &mallory).await, Err(CartError::NotFound));
    assert_eq!(
        set(&h, id, set_line(&mallory, "tee-m", 9, tee())).await,
        Err(CartError::NotFound)
    );
    assert_eq!(
        remove(&h, id, &mallory, "tee-m").await,
        Err(CartError::NotFound)
    );
    assert_eq!(h.stored_cart(id).await, before);
}

#[actix_rt::test]
async fn set_line_adds_then_replaces_a_line_at_the_price_the_shopper_saw() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    create(&h, id, &alice).await;
    let cart = set(&h, id, set_line(&alice, "tee-m", 2, tee()))
        .await
        .expect("added");
    assert_eq!(
        cart.lines,
        vec![CartLine {
            sku: sku("tee-m"),
            name: "Tee".into(),
            quantity: 2,
            unit_price: 1999,
            currency: Currency::EUR,
        }]
    );
    assert_eq!(cart.total(), Some(3998));

    let repriced = ProductInfo {
        price: 1799,
        ..tee()
    };
    let cart = set(&h, id, set_line(&alice, "tee-m", 3, repriced))
        .await
        .expect("replaced");
    assert_eq!(cart.lines.len(), 1, "one line per SKU");
    assert_eq!(
        (cart.lines[0].quantity, cart.lines[0].unit_price),
        (3, 1799)
    );
    assert_eq!(h.stored_cart(id).await, Some(cart.clone()), "durable");
    assert_eq!(get(&h, id, &alice).await, Ok(cart));
}

#[actix_rt::test]
async fn every_change_bumps_the_stored_version() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    let v0 = create(&h, id, &alice).await.version;
    let v1 = set(&h, id, set_line(&alice, "tee-m", 1, tee()))
        .await
        .expect("added")
        .version;
    let v2 = remove(&h, id, &alice, "tee-m")
        .await
        .expect("removed")
        .version;
    assert!(v0 < v1 && v1 < v2, "{v0} < {v1} < {v2}");
    assert_eq!(h.stored_cart(id).await.map(|c| c.version), Some(v2));
}

#[actix_rt::test]
async fn setting_quantity_zero_removes_the_line() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    create(&h, id, &alice).await;
    set(&h, id, set_line(&alice, "tee-m", 2, tee()))
        .await
        .expect("added");
    set(&h, id, set_line(&alice, "tee-l", 1, tee()))
        .await
        .expect("added");
    let cart = set(&h, id, set_line(&alice, "tee-m", 0, tee()))
        .await
        .expect("removed");
    assert_eq!(
        cart.lines
            .iter()
            .map(|l| l.sku.as_str())
            .collect::<Vec<_>>(),
        ["tee-l"]
    );
    assert_eq!(h.stored_cart(id).await, Some(cart));
}

#[actix_rt::test]
async fn setting_quantity_zero_on_an_absent_line_is_ok_and_writes_nothing() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    let created = create(&h, id, &alice).await;
    let cart = set(&h, id, set_line(&alice, "tee-m", 0, tee()))
        .await
        .expect("nothing to remove is fine");
    assert_eq!(cart, created);
    assert_eq!(h.stored_cart(id).await, Some(created));
}

#[actix_rt::test]
async fn a_line_in_another_currency_is_refused() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    create(&h, id, &alice).await;
    let euros = set(&h, id, set_line(&alice, "tee-m", 1, tee()))
        .await
        .expect("added");
    assert_eq!(
        set(&h, id, set_line(&alice, "mug", 1, usd_mug())).await,
        Err(CartError::CurrencyMismatch {
            cart: Currency::EUR,
            line: Currency::USD
        })
    );
    assert_eq!(h.stored_cart(id).await, Some(euros.clone()));
    assert_eq!(get(&h, id, &alice).await, Ok(euros));
}

#[actix_rt::test]
async fn removing_a_line_is_durable_and_removing_an_absent_line_is_ok() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    create(&h, id, &alice).await;
    set(&h, id, set_line(&alice, "tee-m", 2, tee()))
        .await
        .expect("added");
    let cart = remove(&h, id, &alice, "tee-m").await.expect("removed");
    assert!(cart.lines.is_empty());
    assert_eq!(h.stored_cart(id).await, Some(cart.clone()));
    let again = remove(&h, id, &alice, "tee-m")
        .await
        .expect("absent line is fine");
    assert_eq!(again, cart);
    assert_eq!(h.stored_cart(id).await, Some(cart));
}

#[actix_rt::test]
async fn a_locked_cart_refuses_changes_but_can_still_be_read() {
    let h = Harness::new();
    let (id, alice, order_id) = (CartId::new(), user("alice"), OrderId::new());
    let locked = CartRecord {
        id,
        owner: alice.clone(),
        lines: vec![CartLine {
            sku: sku("tee-m"),
            name: "Tee".into(),
            quantity: 2,
            unit_price: 1999,
            currency: Currency::EUR,
        }],
        locked_by: Some(order_id),
        locked_until: None,
        last_paid_order: None,
        version: 3,
    };
    assert_eq!(
        h.memory
            .write_cart(&locked, 0)
            .await
            .expect("memory store answers"),
        WriteOutcome::Applied
    );
    assert!(
        !h.carts.is_live(&id),
        "the actor loads the locked cart on first use"
    );

    assert_eq!(get(&h, id, &alice).await, Ok(locked.clone()));
    assert_eq!(
        set(&h, id, set_line(&alice, "tee-l", 1, tee())).await,
        Err(CartError::Locked { order_id })
    );
    assert_eq!(
        set(&h, id, set_line(&alice, "tee-m", 0, tee())).await,
        Err(CartError::Locked { order_id })
    );
    assert_eq!(
        remove(&h, id, &alice, "tee-m").await,
        Err(CartError::Locked { order_id })
    );
    assert_eq!(h.stored_cart(id).await, Some(locked));
    assert_eq!(
        get(&h, id, &user("mallory")).await,
        Err(CartError::NotFound),
        "a lock reveals nothing to others"
    );
}

#[actix_rt::test]
async fn a_failed_write_answers_unavailable_and_changes_nothing_until_the_store_is_back() {
    let (h, control) = Harness::controlled();
    let (id, alice) = (CartId::new(), user("alice"));
    let created = create(&h, id, &alice).await;
    control.fail_writes();
    assert_eq!(
        set(&h, id, set_line(&alice, "tee-m", 1, tee())).await,
        Err(CartError::Actor(ActorError::Unavailable))
    );
    assert_eq!(h.stored_cart(id).await, Some(created.clone()));
    assert_eq!(get(&h, id, &alice).await, Ok(created));

    control.heal();
    let cart = set(&h, id, set_line(&alice, "tee-m", 1, tee()))
        .await
        .expect("added once the store is back");
    assert_eq!(h.stored_cart(id).await, Some(cart));
}

#[actix_rt::test]
async fn a_cart_that_cannot_be_loaded_is_unavailable_not_missing() {
    let (h, control) = Harness::controlled();
    let (id, alice) = (CartId::new(), user("alice"));
    let created = create(&h, id, &alice).await;
    h.go_idle_and_passivate();
    wait_until("the cart actor passivated", || !h.carts.is_live(&id)).await;

    control.go_down();
    let answer = h
        .carts
        .ask(
            &id,
            GetCart {
                user: alice.clone(),
            },
        )
        .await;
    assert!(is_unavailable(&answer), "got {answer:?}");

    control.heal();
    assert_eq!(get(&h, id, &alice).await, Ok(created));
}

#[actix_rt::test]
async fn a_conflicting_write_is_refused_as_contended_and_the_cart_reloads() {
    let h = Harness::new();
    let (id, alice) = (CartId::new(), user("alice"));
    let created = create(&h, id, &alice).await;

    // Another writer (a replica that briefly held the same cart) adds a line behind our back.
    let mut theirs = created.clone();
    theirs.lines.push(CartLine {
        sku: sku("tee-l"),
        name: "Tee".into(),
        quantity: 1,
        unit_price: 1999,
        currency: Currency::EUR,
    });
    theirs.version = created.version + 1;
    assert_eq!(
        h.memory
            .write_cart(&theirs, created.version)
            .await
            .expect("memory store answers"),
        WriteOutcome::Applied
    );

    assert_eq!(
        set(&h, id, set_line(&alice, "tee-m", 2, tee())).await,
        Err(CartError::Actor(ActorError::Contended))
    );
    assert_eq!(
        h.stored_cart(id).await,
        Some(theirs.clone()),
        "never overwritten"
    );
    assert_eq!(get(&h, id, &alice).await, Ok(theirs));

    let cart = set(&h, id, set_line(&alice, "tee-m", 2, tee()))
        .await
        .expect("the retry applies on the reloaded cart");
    assert_eq!(
        cart.lines
            .iter()
            .map(|l| l.sku.as_str())
            .collect::<Vec<_>>(),
        ["tee-l", "tee-m"]
    );
}

#[actix_rt::test]
async fn a_change_arriving_as_the_cart_passivates_is_applied_by_the_next_activation() {
    let (h, control) = Harness::controlled();
    let (id, alice) = (CartId::new(), user("alice"));
    create(&h, id, &alice).await;
    h.go_idle_and_passivate();
    wait_until("the cart actor passivated", || !h.carts.is_live(&id)).await;

    control.hold_loads();
    let addr = h.carts.addr(&id);
    wait_until("the load is held", || control.loads_waiting() >= 1).await;
    h.clock
        .advance(h.settings.idle_after + time::Duration::seconds(1));
    addr.do_send(kassa_actors::registry::PassivateIfIdle);
    let mut pending = JoinAll::new([h.carts.ask(&id, set_line(&alice, "tee-m", 1, tee()))]);
    assert!(!pending.poll_once().await);
    control.open_loads();

    let answers = pending.await;
    let cart = answers
        .into_iter()
        .next()
        .expect("one answer")
        .expect("answered")
        .expect("applied");
    assert_eq!(cart.lines.len(), 1);
    assert_eq!(h.stored_cart(id).await, Some(cart));
}

#[actix_rt::test]
async fn a_lent_end_nobody_takes_writes_nothing_and_leaves_the_cart_to_its_order() {
    use kassa_actors::cart::{BeginCheckout, CartLend, EndCheckout, LendEndCheckout};
    let h = Harness::new();
    let (id, alice, order) = (CartId::new(), user("alice"), OrderId::new());
    create(&h, id, &alice).await;
    set(&h, id, set_line(&alice, "tee-m", 2, tee()))
        .await
        .expect("set");
    let lock = BeginCheckout {
        user: alice.clone(),
        order_id: order,
        locked_until: h.now() + time::Duration::minutes(15),
    };
    let locked = h.carts.ask(&id, lock).await.unwrap().expect("locked");

    // The order stopped waiting before the cart actor got to it (its ask timed out).
    let (lend, lent) = CartLend::new();
    drop(lent);
    let end = LendEndCheckout {
        end: EndCheckout {
            order_id: order,
            paid: Some(vec![(sku("tee-m"), 2)]),
        },
        lend,
    };
    h.carts.ask(&id, end).await.unwrap().expect("answered");

    assert_eq!(
        h.stored_cart(id).await,
        Some(locked.clone()),
        "nothing written before the order's transition"
    );
    assert_eq!(get(&h, id, &alice).await.expect("read"), locked);
}

/// On a shared store a change decides on the cart the actor holds and reads nothing when its
/// conditional write lands: a new cart, two lines and the checkout lock are four writes and
/// no read.
#[actix_rt::test]
async fn on_a_shared_store_a_change_that_lands_reads_nothing() {
    use kassa_actors::cart::BeginCheckout;
    let [(h, control), _] = Harness::replicas();
    let (id, alice) = (CartId::new(), user("alice"));
    h.carts
        .ask_new(
            &id,
            CreateCart {
                owner: alice.clone(),
            },
        )
        .await
        .expect("answered")
        .expect("created");
    set(&h, id, set_line(&alice, "tee-m", 2, tee()))
        .await
        .expect("set");
    set(&h, id, set_line(&alice, "tee-l", 1, tee()))
        .await
        .expect("set");
    let lock = BeginCheckout {
        user: alice.clone(),
        order_id: OrderId::new(),
        locked_until: h.now() + time::Duration::minutes(15),
    };
    let locked = h.carts.ask(&id, lock).await.unwrap().expect("locked");
    assert_eq!(locked.lines.len(), 2);
    assert_eq!(control.writes().len(), 4);
    assert_eq!(control.loads(), [], "no read before a write that lands");
    assert_eq!(h.stored_cart(id).await, Some(locked));
}

/// Two replicas each hold an actor of one cart, and each in turn decides on a copy the other
/// made stale. A write on a stale copy loses its condition, and a refusal on one may be
/// wrong: either way the cart is read and the change decided again on it, so no change is
/// lost, none is made on a locked cart, and a lock that ended does not refuse.
#[actix_rt::test]
async fn on_a_shared_store_a_decision_on_a_stale_copy_is_made_again_on_the_stored_cart() {
    use kassa_actors::cart::{BeginCheckout, EndCheckout};
    let [(a, _), (b, b_control)] = Harness::replicas();
    let (id, alice, order) = (CartId::new(), user("alice"), OrderId::new());
    create(&a, id, &alice).await;
    get(&b, id, &alice).await.expect("b holds the cart");

    set(&a, id, set_line(&alice, "tee-m", 2, tee()))
        .await
        .expect("a adds");
    let loads = b_control.loads().len();
    let both = set(&b, id, set_line(&alice, "tee-l", 1, tee()))
        .await
        .expect("b's add lands after reading the cart again");
    assert_eq!(
        b_control.loads().len(),
        loads + 1,
        "one read, after the lost condition"
    );
    assert_eq!(
        both.lines
            .iter()
            .map(|l| l.sku.as_str())
            .collect::<Vec<_>>(),
        ["tee-m", "tee-l"],
        "a's line kept"
    );

    // a's copy lacks b's line: its lock is decided again and takes both lines.
    let lock = BeginCheckout {
        user: alice.clone(),
        order_id: order,
        locked_until: a.now() + time::Duration::minutes(15),
    };
    let locked = a.carts.ask(&id, lock).await.unwrap().expect("locked");
    assert_eq!(locked.lines, both.lines);

    // b's copy is unlocked: its change loses the condition, and the stored lock refuses it.
    assert_eq!(
        set(&b, id, set_line(&alice, "mug", 1, tee())).await,
        Err(CartError::Locked { order_id: order })
    );
    assert_eq!(a.stored_cart(id).await, Some(locked.clone()));

    // The checkout ends on a; b's copy still says locked, and is not taken at its word.
    let end = EndCheckout {
        order_id: order,
        paid: None,
    };
    a.carts.ask(&id, end).await.unwrap().expect("ended");
    let added = set(&b, id, set_line(&alice, "mug", 1, tee()))
        .await
        .expect("the lock that ended does not refuse");
    assert_eq!(added.lines.len(), 3);
    assert_eq!(added.locked_by, None);
    assert_eq!(a.stored_cart(id).await, Some(added));

    // a's copy lacks the mug: removing it answers without a write there, so a reads the cart
    // and removes it.
    let removed = remove(&a, id, &alice, "mug").await.expect("removed");
    assert_eq!(removed.lines.len(), 2);
    assert_eq!(a.stored_cart(id).await, Some(removed));
}

/// A refusal decided on the copy a replica holds is not given as current when the cart
/// cannot be read to confirm it: the answer is unavailable, and once the store is back the
/// change is decided on the stored cart.
#[actix_rt::test]
async fn on_a_shared_store_a_refusal_that_cannot_be_confirmed_is_unavailable() {
    use kassa_actors::cart::{BeginCheckout, EndCheckout};
    let [(a, _), (b, b_control)] = Harness::replicas();
    let (id, alice, order) = (CartId::new(), user("alice"), OrderId::new());
    create(&a, id, &alice).await;
    set(&a, id, set_line(&alice, "tee-m", 2, tee()))
        .await
        .expect("a adds");
    let lock = BeginCheckout {
        user: alice.clone(),
        order_id: order,
        locked_until: a.now() + time::Duration::minutes(15),
    };
    a.carts.ask(&id, lock).await.unwrap().expect("locked");
    get(&b, id, &alice).await.expect("b holds the locked cart");
    let end = EndCheckout {
        order_id: order,
        paid: None,
    };
    a.carts.ask(&id, end).await.unwrap().expect("ended");

    b_control.go_down();
    assert_eq!(
        set(&b, id, set_line(&alice, "tee-l", 1, tee())).await,
        Err(CartError::Actor(ActorError::Unavailable)),
        "not the stale lock's refusal"
    );
    b_control.heal();
    let added = set(&b, id, set_line(&alice, "tee-l", 1, tee()))
        .await
        .expect("decided on the stored, unlocked cart");
    assert_eq!(added.lines.len(), 2);
}

/// A stored cart locked by `order_id`, with two tees and a mug.
fn cart_locked_by(h: &Harness, id: CartId, owner: &UserId, order_id: OrderId) -> CartRecord {
    let line = |raw_sku: &str, quantity| CartLine {
        sku: sku(raw_sku),
        name: "Tee".into(),
        quantity,
        unit_price: 1999,
        currency: Currency::EUR,
    };
    CartRecord {
        id,
        owner: owner.clone(),
        lines: vec![line("tee", 2), line("mug", 1)],
        locked_by: Some(order_id),
        locked_until: Some(h.now() + time::Duration::minutes(15)),
        last_paid_order: None,
        version: 3,
    }
}

/// Order `id`, `status` since now (its history says so), at `version`.
fn order_now(
    h: &Harness,
    id: OrderId,
    owner: &UserId,
    status: kassa_actors::order::OrderStatus,
    version: u64,
) -> kassa_actors::store::OrderRecord {
    let mut record = kassa_actors::conformance::order(id, owner, status, version);
    record.history.push(kassa_actors::store::StatusChange {
        status,
        at: h.now(),
    });
    record
}

/// Writes `order` (over `expected`) and `cart` (new) straight to the store, as another
/// replica would have.
async fn store_order_and_cart(
    h: &Harness,
    order: &kassa_actors::store::OrderRecord,
    expected: u64,
    cart: &CartRecord,
) {
    let written = h.memory.write_order(order, expected).await.expect("stored");
    assert_eq!(written, WriteOutcome::Applied);
    let written = h.memory.write_cart(cart, 0).await.expect("stored");
    assert_eq!(written, WriteOutcome::Applied);
}

/// On a shared store an order paid while it held its cart's lock does not write the cart:
/// whoever reads the cart next settles the lock from the order. Paid: what it bought (two
/// tees) leaves the cart and the lock is lifted; failed: the lock is lifted, lines kept;
/// pending: the cart stays locked. A change then writes the settled cart.
#[actix_rt::test]
async fn on_a_shared_store_a_lock_is_settled_from_its_order_by_the_next_reader() {
    use kassa_actors::conformance::order;
    use kassa_actors::order::OrderStatus;
    let [(h, _), _] = Harness::replicas();
    let alice = user("alice");
    let ended = |id, status| order_now(&h, id, &alice, status, 2);
    let (paid, failed, pending) = (OrderId::new(), OrderId::new(), OrderId::new());
    for record in [
        ended(paid, OrderStatus::Processing),
        ended(failed, OrderStatus::Failed),
        order(pending, &alice, OrderStatus::PendingPayment, 1),
    ] {
        let written = h.memory.write_order(&record, 0).await.expect("stored");
        assert_eq!(written, WriteOutcome::Applied);
    }
    let carts = [paid, failed, pending].map(|order_id| {
        let cart = cart_locked_by(&h, CartId::new(), &alice, order_id);
        (cart.id, cart)
    });
    for (_, cart) in &carts {
        let written = h.memory.write_cart(cart, 0).await.expect("stored");
        assert_eq!(written, WriteOutcome::Applied);
    }
    let [(paid_cart, _), (failed_cart, _), (pending_cart, _)] = carts.clone();

    let seen = get(&h, paid_cart, &alice)
        .await
        .expect("the paid order's cart");
    let skus: Vec<_> = seen.lines.iter().map(|l| l.sku.to_string()).collect();
    assert_eq!(
        (skus, seen.locked_by, seen.last_paid_order),
        (vec!["mug".to_string()], None, Some(paid))
    );
    let seen = get(&h, failed_cart, &alice)
        .await
        .expect("the failed order's cart");
    assert_eq!((seen.lines.len(), seen.locked_by), (2, None));
    assert_eq!(
        set(&h, pending_cart, set_line(&alice, "cap", 1, tee())).await,
        Err(CartError::Locked { order_id: pending })
    );

    let changed = set(&h, paid_cart, set_line(&alice, "cap", 1, tee()))
        .await
        .expect("a settled cart takes a line");
    let stored = h.stored_cart(paid_cart).await.expect("stored");
    assert_eq!(stored, changed);
    let skus: Vec<_> = stored.lines.iter().map(|l| l.sku.to_string()).collect();
    assert_eq!(
        (skus, stored.locked_by, stored.last_paid_order),
        (vec!["mug".to_string(), "cap".to_string()], None, Some(paid)),
        "written as settled, once: the paid tees do not come back, nor leave again"
    );
    assert_eq!(h.stored_cart(pending_cart).await, Some(carts[2].1.clone()));
}

/// On a shared store a replica may hold a cart still locked by an order another replica has
/// since settled as paid, which leaves the lock for the next reader to settle. Once that lock
/// lapsed, the copy held here would show the cart unlocked with what was paid for still in
/// it; so when the cart cannot be read again, the answer is unavailable, not that copy (nor
/// any other unconfirmed copy).
#[actix_rt::test]
async fn on_a_shared_store_a_lapsed_lock_that_cannot_be_read_again_is_not_shown_as_the_cart() {
    use kassa_actors::conformance::order;
    use kassa_actors::order::OrderStatus;
    let [(h, control), _] = Harness::replicas();
    let (alice, order_id) = (user("alice"), OrderId::new());
    let pending = order(order_id, &alice, OrderStatus::PendingPayment, 1);
    let cart = cart_locked_by(&h, CartId::new(), &alice, order_id);
    store_order_and_cart(&h, &pending, 0, &cart).await;
    let held = get(&h, cart.id, &alice).await.expect("the locked cart");
    assert_eq!(held.locked_by, Some(order_id), "held here, locked");

    // Paid elsewhere: the order moves on, the cart keeps its lock as stored.
    let paid = order_now(&h, order_id, &alice, OrderStatus::Processing, 2);
    assert_eq!(
        h.memory.write_order(&paid, 1).await.expect("stored"),
        WriteOutcome::Applied
    );
    h.clock.advance(time::Duration::minutes(16));

    control.go_down();
    assert_eq!(
        get(&h, cart.id, &alice).await,
        Err(CartError::Actor(ActorError::Unavailable)),
        "not the held copy, paid tees and all"
    );
    control.heal();
    let seen = get(&h, cart.id, &alice).await.expect("read and settled");
    let skus: Vec<_> = seen.lines.iter().map(|l| l.sku.to_string()).collect();
    assert_eq!((skus, seen.locked_by), (vec!["mug".to_string()], None));
}

/// How an ended order settles its cart's lock never changes, so a replica reads that order
/// once: a cart left locked by a paid order, viewed again and again until it changes, costs
/// one read of the cart per view, not the order's read too.
#[actix_rt::test]
async fn on_a_shared_store_the_order_that_ended_a_lock_is_read_once() {
    use kassa_actors::conformance::order;
    use kassa_actors::order::OrderStatus;
    use kassa_testkit::store::Method;
    let [(h, control), _] = Harness::replicas();
    let (alice, order_id) = (user("alice"), OrderId::new());
    let paid = order_now(&h, order_id, &alice, OrderStatus::Processing, 2);
    let cart = cart_locked_by(&h, CartId::new(), &alice, order_id);
    store_order_and_cart(&h, &paid, 0, &cart).await;
    for _ in 0..3 {
        let seen = get(&h, cart.id, &alice).await.expect("settled");
        let skus: Vec<_> = seen.lines.iter().map(|l| l.sku.to_string()).collect();
        assert_eq!((skus, seen.locked_by), (vec!["mug".to_string()], None));
    }
    let loads = control.loads();
    let count = |m: Method| loads.iter().filter(|l| **l == m).count();
    // The cart: once as the actor starts, then once per view.
    assert_eq!(
        (count(Method::LoadCart), count(Method::LoadOrder)),
        (4, 1),
        "{loads:?}"
    );

    // Another replica settles the cart and locks it for a new order: that one is read.
    let next_order = OrderId::new();
    let pending = order(next_order, &alice, OrderStatus::PendingPayment, 1);
    assert_eq!(
        h.memory.write_order(&pending, 0).await.expect("stored"),
        WriteOutcome::Applied
    );
    let mut relocked = get(&h, cart.id, &alice).await.expect("settled");
    relocked.locked_by = Some(next_order);
    relocked.locked_until = Some(h.now() + time::Duration::minutes(15));
    relocked.version = cart.version + 1;
    assert_eq!(
        h.memory
            .write_cart(&relocked, cart.version)
            .await
            .expect("stored"),
        WriteOutcome::Applied
    );
    let seen = get(&h, cart.id, &alice).await.expect("locked again");
    assert_eq!(seen.locked_by, Some(next_order));
    let loads = control.loads();
    assert_eq!(
        loads.iter().filter(|l| **l == Method::LoadOrder).count(),
        2,
        "the new lock's order is read: {loads:?}"
    );
}
