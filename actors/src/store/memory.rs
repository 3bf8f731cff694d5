//! `MemoryStore`: the `Store` in a mutex, for unit tests of the actors. Not durable, by
//! design; never used by the service.

use super::*;
use crate::idempotency::{Decision, HeldClaim, decide};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// In-memory `Store` for unit tests of the actors. Not durable, by design.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    shared: bool,
}

#[derive(Default)]
struct Inner {
    products: HashMap<Sku, (ProductRow, BTreeMap<OrderId, Reservation>)>,
    carts: HashMap<CartId, CartRecord>,
    orders: BTreeMap<OrderId, OrderRecord>,
    idempotency: HashMap<(UserId, String), (String, OffsetDateTime, Option<StoredResponse>)>,
    outbox: BTreeMap<(OrderId, EmailKind), OutboxEmail>,
    sessions: HashMap<String, CheckoutSession>,
    product_writes: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that says other processes write to it too (`Store::is_shared`), so that the
    /// actors over it take the replicas' paths: tests write behind their backs as another
    /// replica would.
    pub fn shared() -> Self {
        Self {
            shared: true,
            ..Self::default()
        }
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
    fn is_shared(&self) -> bool {
        self.shared
    }

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
        self.write_product_with(write, Vec::new()).await
    }

    fn writes_settlements(&self) -> bool {
        !self.shared
    }

    async fn write_product_with(
        &self,
        write: ProductWrite,
        settlements: Vec<Settlement>,
    ) -> StoreResult<WriteOutcome> {
        if !self.writes_settlements() && !settlements.is_empty() {
            return Err(StoreError::Unavailable(
                "this store does not write settlements with stock".into(),
            ));
        }
        let mut inner = self.lock();
        let current = inner.products.get(&write.sku).map_or(0, |(r, _)| r.version);
        if current != write.expected_version {
            return Ok(WriteOutcome::Conflict);
        }
        for s in &settlements {
            let order = inner.orders.get(&s.order.id).map_or(0, |o| o.version);
            let cart = s.cart.as_ref().map(|c| {
                let stored = inner.carts.get(&c.cart.id).map_or(0, |c| c.version);
                stored == c.expected_version
            });
            if order != s.expected_version || cart == Some(false) {
                return Ok(WriteOutcome::Conflict);
            }
        }
        for s in settlements {
            inner.orders.insert(s.order.id, s.order);
            if let Some(c) = s.cart {
                inner.carts.insert(c.cart.id, c.cart);
            }
            if let Some(email) = s.email {
                inner
                    .outbox
                    .entry((email.order_id, email.kind))
                    .or_insert(email);
            }
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

    async fn load_order(&self, id: OrderId) -> StoreResult<Option<OrderRecord>> {
        Ok(self.lock().orders.get(&id).cloned())
    }

    async fn write_order(
        &self,
        order: &OrderRecord,
        expected_version: u64,
    ) -> StoreResult<WriteOutcome> {
        let mut inner = self.lock();
        let current = inner.orders.get(&order.id).map_or(0, |o| o.version);
        if current != expected_version {
            return Ok(WriteOutcome::Conflict);
        }
        inner.orders.insert(order.id, order.clone());
        Ok(WriteOutcome::Applied)
    }

    /// Shared (as the scylla store): the order keeps its version, its effects go.
    async fn record_effects_done(&self, order: &OrderRecord) -> StoreResult<bool> {
        if !self.shared {
            return Ok(false);
        }
        let mut inner = self.lock();
        if let Some(stored) = inner.orders.get_mut(&order.id)
            && stored.version == order.version
        {
            stored.pending_effects.clear();
        }
        Ok(true)
    }

    async fn list_orders(
        &self,
        user: &UserId,
        before: Option<OrderId>,
        limit: usize,
    ) -> StoreResult<Vec<OrderRecord>> {
        let inner = self.lock();
        Ok(inner
            .orders
            .values()
            .rev()
            .filter(|o| &o.owner == user && before.is_none_or(|b| o.id < b))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn active_orders(&self) -> StoreResult<Vec<OrderId>> {
        let inner = self.lock();
        Ok(inner
            .orders
            .values()
            .filter(|o| o.is_active())
            .map(|o| o.id)
            .collect())
    }

    async fn claim_idempotency(
        &self,
        request: IdempotencyRequest<'_>,
    ) -> StoreResult<IdempotencyClaim> {
        let mut inner = self.lock();
        let key = (request.user.clone(), request.key.to_string());
        if let Some((fingerprint, created_at, response)) = inner.idempotency.get(&key) {
            let held = HeldClaim {
                created_at: *created_at,
                fingerprint,
                response: response.as_ref(),
            };
            if let Decision::Answer(claim) = decide(&held, &request) {
                return Ok(claim);
            }
        }
        inner
            .idempotency
            .insert(key, (request.fingerprint.to_string(), request.now, None));
        Ok(IdempotencyClaim::Claimed)
    }

    async fn complete_idempotency(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        let mut inner = self.lock();
        if let Some(entry) = inner.idempotency.get_mut(&(user.clone(), key.to_string())) {
            entry.2 = Some(response.clone());
        }
        Ok(())
    }

    async fn release_idempotency(&self, user: &UserId, key: &str) -> StoreResult<()> {
        self.lock()
            .idempotency
            .remove(&(user.clone(), key.to_string()));
        Ok(())
    }

    async fn purge_idempotency(
        &self,
        created_before: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<usize> {
        let mut inner = self.lock();
        let doomed: Vec<_> = inner
            .idempotency
            .iter()
            .filter(|(_, (_, at, _))| *at < created_before)
            .map(|(key, _)| key.clone())
            .take(limit)
            .collect();
        for key in &doomed {
            inner.idempotency.remove(key);
        }
        Ok(doomed.len())
    }

    async fn enqueue_email(&self, email: &OutboxEmail) -> StoreResult<()> {
        self.lock()
            .outbox
            .entry((email.order_id, email.kind))
            .or_insert_with(|| email.clone());
        Ok(())
    }

    async fn enqueue_claimed_email(
        &self,
        email: &OutboxEmail,
        claimed_until: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut state = self.lock();
        let key = (email.order_id, email.kind);
        if state.outbox.contains_key(&key) {
            return Ok(false);
        }
        let claimed = OutboxEmail {
            next_attempt_at: claimed_until,
            ..email.clone()
        };
        state.outbox.insert(key, claimed);
        Ok(true)
    }

    async fn update_email(&self, email: &OutboxEmail) -> StoreResult<()> {
        self.lock()
            .outbox
            .insert((email.order_id, email.kind), email.clone());
        Ok(())
    }

    async fn replace_email(
        &self,
        expected: &OutboxEmail,
        next: &OutboxEmail,
    ) -> StoreResult<WriteOutcome> {
        let mut inner = self.lock();
        let key = (expected.order_id, expected.kind);
        if inner.outbox.get(&key) != Some(expected) {
            return Ok(WriteOutcome::Conflict);
        }
        inner.outbox.insert(key, next.clone());
        Ok(WriteOutcome::Applied)
    }

    async fn due_emails(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<OutboxEmail>> {
        let inner = self.lock();
        let mut due: Vec<OutboxEmail> = inner
            .outbox
            .values()
            .filter(|e| e.sent_at.is_none() && e.next_attempt_at <= now)
            .cloned()
            .collect();
        due.sort_by_key(|e| (e.created_at, e.order_id, e.kind));
        due.truncate(limit);
        Ok(due)
    }

    async fn outbox_depth(&self) -> StoreResult<u64> {
        let inner = self.lock();
        Ok(inner
            .outbox
            .values()
            .filter(|e| e.sent_at.is_none())
            .count() as u64)
    }

    async fn put_session(&self, session: &CheckoutSession) -> StoreResult<()> {
        self.lock()
            .sessions
            .insert(session.id.clone(), session.clone());
        Ok(())
    }

    async fn load_session(&self, id: &str) -> StoreResult<Option<CheckoutSession>> {
        Ok(self.lock().sessions.get(id).cloned())
    }

    async fn purge_sessions(
        &self,
        expired_before: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<usize> {
        let mut inner = self.lock();
        let doomed: Vec<String> = inner
            .sessions
            .values()
            .filter(|s| s.expires_at < expired_before)
            .map(|s| s.id.clone())
            .take(limit)
            .collect();
        for id in &doomed {
            inner.sessions.remove(id);
        }
        Ok(doomed.len())
    }

    async fn list_products(&self, after: Option<&Sku>, limit: usize) -> StoreResult<Vec<Sku>> {
        let inner = self.lock();
        let mut skus: Vec<Sku> = inner
            .products
            .iter()
            .filter(|(sku, (row, _))| row.info.is_some() && after.is_none_or(|a| *sku > a))
            .map(|(sku, _)| sku.clone())
            .collect();
        skus.sort();
        skus.truncate(limit);
        Ok(skus)
    }

    async fn locked_carts(&self, limit: usize) -> StoreResult<Vec<CartRecord>> {
        Ok(self
            .lock()
            .carts
            .values()
            .filter(|c| c.locked_by.is_some())
            .take(limit)
            .cloned()
            .collect())
    }

    async fn release_unfinished_idempotency(&self) -> StoreResult<usize> {
        let mut inner = self.lock();
        let before = inner.idempotency.len();
        inner
            .idempotency
            .retain(|_, (_, _, response)| response.is_some());
        Ok(before - inner.idempotency.len())
    }

    async fn release_email_claims(&self, now: OffsetDateTime) -> StoreResult<usize> {
        let mut inner = self.lock();
        let mut released = 0;
        for email in inner.outbox.values_mut() {
            if email.sent_at.is_none() && email.next_attempt_at > now {
                email.next_attempt_at = now;
                released += 1;
            }
        }
        Ok(released)
    }
}
