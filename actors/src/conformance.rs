//! The store conformance suite: the behaviour every `Store` back end must have. Each back
//! end's tests call `run_all` with a fresh, empty store (embedded on a temp dir, scylla on a
//! fresh keyspace). Panics, naming the failed property, on the first violation.

use crate::domain::{CartId, Currency, OrderId, ProductInfo, Sku, UserId};
use crate::store::{
    CartLine, CartRecord, ProductRow, ProductWrite, Reservation, Store, WriteOutcome,
};
use time::OffsetDateTime;

pub async fn run_all(store: &dyn Store) {
    ping_answers(store).await;
    missing_records_load_as_none(store).await;
    product_write_is_conditional_on_version(store).await;
    reservations_are_put_and_removed_with_the_row(store).await;
    cart_write_is_conditional_on_version(store).await;
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

    let other = sku("conf-resv-other");
    assert!(
        store.load_product(&other).await.expect("load").is_none(),
        "reservations must not leak across SKUs"
    );
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
    assert_eq!(
        store.write_cart(&cart, 0).await.expect("write"),
        WriteOutcome::Conflict
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

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_conforms() {
        super::run_all(&crate::store::MemoryStore::new()).await;
    }
}
