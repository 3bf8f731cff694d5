//! The `Store` trait: the only way actors reach durable state, and the records it keeps.
//! Every write that two writers could race is conditional on a version (compare-and-set);
//! a `WriteOutcome::Conflict` means someone else got there first: reload, never overwrite.
//! Back ends live in the `kassa` crate (embedded, scylla); `MemoryStore` is for unit tests.

use crate::domain::{CartId, Currency, OrderId, ProductInfo, Sku, UserId};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The answer to a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum WriteOutcome {
    Applied,
    /// The expected version did not match: another writer got there first.
    Conflict,
}

/// One SKU's catalog entry and stock counters. `version` fences every write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRow {
    /// `None` once the SKU left the catalog; reservations still settle.
    pub info: Option<ProductInfo>,
    pub on_hand: i64,
    pub version: u64,
}

/// Stock held for one order on one SKU. Kept after commit (as `committed`) so that a
/// repeated commit is recognised and never decrements twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub order_id: OrderId,
    pub qty: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub committed: bool,
}

/// Everything stored for one SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSnapshot {
    pub row: ProductRow,
    pub reservations: Vec<Reservation>,
}

/// One conditional write to a SKU's partition: the new row (carrying the new version),
/// reservations to put and to remove. Applied only if the stored version is
/// `expected_version` (0: the SKU must not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductWrite {
    pub sku: Sku,
    pub expected_version: u64,
    pub row: ProductRow,
    pub put_reservations: Vec<Reservation>,
    pub remove_reservations: Vec<OrderId>,
}

/// A cart line with the price the shopper saw when adding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub sku: Sku,
    pub name: String,
    pub quantity: u32,
    pub unit_price: i64,
    pub currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartRecord {
    pub id: CartId,
    pub owner: UserId,
    pub lines: Vec<CartLine>,
    /// Held while an order for this cart is pending payment.
    pub locked_by: Option<OrderId>,
    pub version: u64,
}

impl CartRecord {
    pub fn currency(&self) -> Option<Currency> {
        self.lines.first().map(|l| l.currency)
    }

    pub fn total(&self) -> i64 {
        self.lines
            .iter()
            .map(|l| l.unit_price * i64::from(l.quantity))
            .sum()
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip proving the store answers (for /readyz).
    async fn ping(&self) -> StoreResult<()>;

    async fn load_product(&self, sku: &Sku) -> StoreResult<Option<ProductSnapshot>>;
    async fn write_product(&self, write: ProductWrite) -> StoreResult<WriteOutcome>;

    async fn load_cart(&self, id: CartId) -> StoreResult<Option<CartRecord>>;
    /// Writes `cart` (whose `version` is the new one) if the stored version is
    /// `expected_version` (0: the cart must not exist yet).
    async fn write_cart(
        &self,
        cart: &CartRecord,
        expected_version: u64,
    ) -> StoreResult<WriteOutcome>;
}

pub type SharedStore = Arc<dyn Store>;

pub use memory::MemoryStore;

mod memory {
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;

    /// In-memory `Store` for unit tests of the actors. Not durable, by design.
    #[derive(Default)]
    pub struct MemoryStore {
        inner: Mutex<Inner>,
    }

    #[derive(Default)]
    struct Inner {
        products: HashMap<Sku, (ProductRow, BTreeMap<OrderId, Reservation>)>,
        carts: HashMap<CartId, CartRecord>,
        product_writes: u64,
    }

    impl MemoryStore {
        pub fn new() -> Self {
            Self::default()
        }

        /// How many product writes were applied (group-commit tests count them).
        pub fn product_writes(&self) -> u64 {
            self.lock().product_writes
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    #[async_trait]
    impl Store for MemoryStore {
        async fn ping(&self) -> StoreResult<()> {
            Ok(())
        }

        async fn load_product(&self, sku: &Sku) -> StoreResult<Option<ProductSnapshot>> {
            Ok(self
                .lock()
                .products
                .get(sku)
                .map(|(row, res)| ProductSnapshot {
                    row: row.clone(),
                    reservations: res.values().cloned().collect(),
                }))
        }

        async fn write_product(&self, write: ProductWrite) -> StoreResult<WriteOutcome> {
            let mut inner = self.lock();
            let current = inner.products.get(&write.sku).map_or(0, |(r, _)| r.version);
            if current != write.expected_version {
                return Ok(WriteOutcome::Conflict);
            }
            inner.product_writes += 1;
            let entry = inner
                .products
                .entry(write.sku.clone())
                .or_insert_with(|| (write.row.clone(), BTreeMap::new()));
            entry.0 = write.row;
            for id in write.remove_reservations {
                entry.1.remove(&id);
            }
            for r in write.put_reservations {
                entry.1.insert(r.order_id, r);
            }
            Ok(WriteOutcome::Applied)
        }

        async fn load_cart(&self, id: CartId) -> StoreResult<Option<CartRecord>> {
            Ok(self.lock().carts.get(&id).cloned())
        }

        async fn write_cart(
            &self,
            cart: &CartRecord,
            expected_version: u64,
        ) -> StoreResult<WriteOutcome> {
            let mut inner = self.lock();
            let current = inner.carts.get(&cart.id).map_or(0, |c| c.version);
            if current != expected_version {
                return Ok(WriteOutcome::Conflict);
            }
            inner.carts.insert(cart.id, cart.clone());
            Ok(WriteOutcome::Applied)
        }
    }
}
