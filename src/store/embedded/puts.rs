//! The record writes of the embedded store, each in two halves for the writer thread: `check`
//! reads the stored version (and nothing is written when any check of a job fails), `apply`
//! writes the record and keeps its indexes in step. Encoded on the caller's thread (`new`):
//! the writer thread is the one thing every write shares. One store call runs one of them
//! (`write_product`, `write_cart`, ...); a settlement (`write_product_with`) runs several in
//! one job, all checks before any write.

use super::{
    ACTIVE_ORDERS, CARTS, LOCKED_CARTS, ORDERS, OUTBOX, OUTBOX_UNSENT, OrderHead, PRODUCTS,
    RESERVATIONS, USER_ORDERS, db_err, decode, encode, stored_version,
};
use kassa_actors::store::{CartRecord, OrderRecord, OutboxEmail, ProductWrite, StoreResult};
use redb::{ReadableTable, WriteTransaction};

/// A SKU's row and reservation changes, fenced by the row's version.
pub(super) struct ProductPut {
    write: ProductWrite,
    row: Vec<u8>,
    put: Vec<(u128, Vec<u8>)>,
}

impl ProductPut {
    pub(super) fn new(write: ProductWrite) -> StoreResult<Self> {
        let row = encode(&write.row)?;
        let put = write
            .put_reservations
            .iter()
            .map(|r| Ok((r.order_id.0.as_u128(), encode(r)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Self { write, row, put })
    }

    pub(super) fn check(&self, txn: &WriteTransaction) -> StoreResult<bool> {
        let sku = self.write.sku.as_str();
        let products = txn.open_table(PRODUCTS).map_err(db_err)?;
        let current = match products.get(sku).map_err(db_err)? {
            Some(stored) => stored_version(stored.value(), "product", sku)?,
            None => 0,
        };
        Ok(current == self.write.expected_version)
    }

    pub(super) fn apply(&self, txn: &WriteTransaction) -> StoreResult<()> {
        let sku = self.write.sku.as_str();
        let mut products = txn.open_table(PRODUCTS).map_err(db_err)?;
        products.insert(sku, self.row.as_slice()).map_err(db_err)?;
        let mut reservations = txn.open_table(RESERVATIONS).map_err(db_err)?;
        for order in &self.write.remove_reservations {
            reservations
                .remove((sku, order.0.as_u128()))
                .map_err(db_err)?;
        }
        for (order, encoded) in &self.put {
            reservations
                .insert((sku, *order), encoded.as_slice())
                .map_err(db_err)?;
        }
        Ok(())
    }
}

/// A cart's next version, fenced by the stored one; keeps `locked_carts` in step.
pub(super) struct CartPut {
    key: u128,
    id: String,
    encoded: Vec<u8>,
    locked_by: Option<u128>,
    expected_version: u64,
}

impl CartPut {
    pub(super) fn new(cart: &CartRecord, expected_version: u64) -> StoreResult<Self> {
        Ok(Self {
            key: cart.id.0.as_u128(),
            id: cart.id.to_string(),
            encoded: encode(cart)?,
            locked_by: cart.locked_by.map(|o| o.0.as_u128()),
            expected_version,
        })
    }

    pub(super) fn check(&self, txn: &WriteTransaction) -> StoreResult<bool> {
        let carts = txn.open_table(CARTS).map_err(db_err)?;
        let current = match carts.get(self.key).map_err(db_err)? {
            Some(stored) => stored_version(stored.value(), "cart", &self.id)?,
            None => 0,
        };
        Ok(current == self.expected_version)
    }

    pub(super) fn apply(&self, txn: &WriteTransaction) -> StoreResult<()> {
        let mut carts = txn.open_table(CARTS).map_err(db_err)?;
        carts
            .insert(self.key, self.encoded.as_slice())
            .map_err(db_err)?;
        let mut locked = txn.open_table(LOCKED_CARTS).map_err(db_err)?;
        match self.locked_by {
            Some(order) => locked.insert(self.key, order).map_err(db_err)?,
            None => locked.remove(self.key).map_err(db_err)?,
        };
        Ok(())
    }
}

/// An order's next version, fenced by the stored one; keeps the per-user listing and the
/// active set in step. `check` also finds the stored owner, which `apply` needs.
pub(super) struct OrderPut {
    key: u128,
    id: String,
    owner: String,
    active_now: bool,
    encoded: Vec<u8>,
    expected_version: u64,
    /// The stored owner, found by `check` (`None`: a new order).
    previous_owner: Option<String>,
}

impl OrderPut {
    pub(super) fn new(order: &OrderRecord, expected_version: u64) -> StoreResult<Self> {
        Ok(Self {
            key: order.id.0.as_u128(),
            id: order.id.to_string(),
            owner: order.owner.0.clone(),
            active_now: order.is_active(),
            encoded: encode(order)?,
            expected_version,
            previous_owner: None,
        })
    }

    pub(super) fn check(&mut self, txn: &WriteTransaction) -> StoreResult<bool> {
        let orders = txn.open_table(ORDERS).map_err(db_err)?;
        let previous = match orders.get(self.key).map_err(db_err)? {
            Some(stored) => {
                let head: OrderHead = decode(stored.value(), "order", &self.id)?;
                Some((head.version, head.owner.into_owned()))
            }
            None => None,
        };
        if previous.as_ref().map_or(0, |(version, _)| *version) != self.expected_version {
            return Ok(false);
        }
        self.previous_owner = previous.map(|(_, owner)| owner);
        Ok(true)
    }

    pub(super) fn apply(&self, txn: &WriteTransaction) -> StoreResult<()> {
        let key = self.key;
        let mut orders = txn.open_table(ORDERS).map_err(db_err)?;
        let mut user_orders = txn.open_table(USER_ORDERS).map_err(db_err)?;
        let mut active = txn.open_table(ACTIVE_ORDERS).map_err(db_err)?;
        orders
            .insert(key, self.encoded.as_slice())
            .map_err(db_err)?;
        match &self.previous_owner {
            Some(previous_owner) if previous_owner == &self.owner => {}
            Some(previous_owner) => {
                // The owner never changes in practice; if it did, the old entry must go.
                user_orders
                    .remove((previous_owner.as_str(), key))
                    .map_err(db_err)?;
                user_orders
                    .insert((self.owner.as_str(), key), ())
                    .map_err(db_err)?;
            }
            None => {
                user_orders
                    .insert((self.owner.as_str(), key), ())
                    .map_err(db_err)?;
            }
        }
        if self.active_now {
            active.insert(key, ()).map_err(db_err)?;
        } else {
            active.remove(key).map_err(db_err)?;
        }
        Ok(())
    }
}

/// An email put in the outbox unless one for its order and kind is there (no check fails).
pub(super) struct EmailPut {
    key: (u128, u8),
    encoded: Vec<u8>,
    unsent: bool,
}

impl EmailPut {
    pub(super) fn new(email: &OutboxEmail) -> StoreResult<Self> {
        Ok(Self {
            key: (email.order_id.0.as_u128(), email.kind.code()),
            encoded: encode(email)?,
            unsent: email.sent_at.is_none(),
        })
    }

    /// Answers whether it put the email (false: one was there, and nothing changed).
    pub(super) fn apply(&self, txn: &WriteTransaction) -> StoreResult<bool> {
        let mut outbox = txn.open_table(OUTBOX).map_err(db_err)?;
        if outbox.get(self.key).map_err(db_err)?.is_some() {
            return Ok(false);
        }
        outbox
            .insert(self.key, self.encoded.as_slice())
            .map_err(db_err)?;
        if self.unsent {
            let mut unsent = txn.open_table(OUTBOX_UNSENT).map_err(db_err)?;
            unsent.insert(self.key, ()).map_err(db_err)?;
        }
        Ok(true)
    }
}
