//! The `Store` trait: the only way actors reach durable state, and the records it keeps.
//! Every write that two writers could race is conditional on a version (compare-and-set);
//! a `WriteOutcome::Conflict` means someone else got there first: reload, never overwrite.
//! Back ends live in the `kassa` crate (embedded, scylla); `MemoryStore` is for unit tests.

use crate::domain::{CartId, Currency, OrderId, ProductInfo, Sku, UserId, line_total};
use crate::order::{Effect, OrderStatus};
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

/// A cart's next version, written if the stored one is `expected_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartWrite {
    pub cart: CartRecord,
    pub expected_version: u64,
}

/// An order's transition written in the same transaction as the stock write its transition
/// asked for (`Store::write_product_with`): the order's next version (fenced by
/// `expected_version`), the cart it empties or unlocks, and the email it queues. What was
/// three to five writes after the transition (stock, cart, email, the record of the finished
/// effects) is then one, and none of it can be durable without the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub order: OrderRecord,
    pub expected_version: u64,
    pub cart: Option<CartWrite>,
    /// Put in the outbox unless one for its order and kind is there (as `enqueue_email`).
    pub email: Option<OutboxEmail>,
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
    /// The lock lapses at this time even if its order never settled it (a checkout that
    /// crashed before its order was stored); the order's own expiry is the same moment.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub locked_until: Option<OffsetDateTime>,
    /// The last order paid from this cart: emptying for it again is a no-op.
    #[serde(default)]
    pub last_paid_order: Option<OrderId>,
    pub version: u64,
}

impl CartRecord {
    pub fn currency(&self) -> Option<Currency> {
        self.lines.first().map(|l| l.currency)
    }

    /// The order holding the lock: what its end means for the cart, if it ended. Paid, what
    /// it bought leaves the cart (once: `last_paid_order`) and the lock is lifted; failed,
    /// expired, cancelled or refused for its amount, the lock is lifted with the lines kept;
    /// still pending (or another order's), nothing changes. What the order actor's
    /// `EmptyCart` and `UnlockCart` would write, worked out by whoever reads the cart.
    pub fn settle_lock(&mut self, order: &OrderRecord) {
        if self.locked_by != Some(order.id) || order.left_pending().is_none() {
            return;
        }
        self.locked_by = None;
        self.locked_until = None;
        if order.paid_from_pending() {
            self.remove_bought(order.id, order.lines.iter().map(|l| (&l.sku, l.quantity)));
        }
    }

    /// What paid order `order_id` bought leaves the cart, once per order (a rerun does not
    /// take away lines the shopper added since).
    pub fn remove_bought<'a>(
        &mut self,
        order_id: OrderId,
        bought: impl IntoIterator<Item = (&'a Sku, u32)>,
    ) {
        if self.last_paid_order == Some(order_id) {
            return;
        }
        for (sku, quantity) in bought {
            if let Some(line) = self.lines.iter_mut().find(|l| &l.sku == sku) {
                line.quantity = line.quantity.saturating_sub(quantity);
            }
        }
        self.lines.retain(|l| l.quantity > 0);
        self.last_paid_order = Some(order_id);
    }

    /// The sum of the lines, or `None` where i64 would overflow (only a cart stored before
    /// the limits of `domain` could).
    pub fn total(&self) -> Option<i64> {
        self.lines
            .iter()
            .try_fold(0_i64, |sum, line| sum.checked_add(line.total()?))
    }
}

impl CartLine {
    /// `unit_price` times `quantity`, `None` on overflow.
    pub fn total(&self) -> Option<i64> {
        line_total(self.unit_price, self.quantity)
    }
}

/// A line of an order: what was bought at what price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub name: String,
    pub quantity: u32,
    pub unit_price: i64,
}

impl OrderLine {
    /// `unit_price` times `quantity`, `None` on overflow.
    pub fn total(&self) -> Option<i64> {
        line_total(self.unit_price, self.quantity)
    }
}

/// The total of an order's lines, or `None` where i64 would overflow.
pub fn order_total(lines: &[OrderLine]) -> Option<i64> {
    lines
        .iter()
        .try_fold(0_i64, |sum, line| sum.checked_add(line.total()?))
}

/// Where the order ships; also where the confirmation goes when the token has no email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShippingDetails {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// One entry of an order's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The payment the gateway opened for the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRef {
    pub payment_id: String,
    pub payment_url: String,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub id: OrderId,
    pub owner: UserId,
    pub cart_id: CartId,
    pub lines: Vec<OrderLine>,
    pub total: i64,
    pub currency: Currency,
    pub shipping: ShippingDetails,
    /// Where the confirmation email goes.
    pub email: String,
    pub status: OrderStatus,
    /// The payment opened at checkout.
    pub payment: Option<PaymentRef>,
    /// The gateway's id of the payment that settled (from the webhook); refunds use it.
    pub settled_payment_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub history: Vec<StatusChange>,
    pub pending_effects: Vec<Effect>,
    /// Webhook ids already applied to this order (a redelivery has no second effect).
    pub seen_webhooks: Vec<String>,
    pub version: u64,
}

impl OrderRecord {
    /// Still needs the service's attention: unpaid, awaiting a refund, or steps to re-drive.
    pub fn is_active(&self) -> bool {
        matches!(
            self.status,
            OrderStatus::PendingPayment | OrderStatus::RefundPending
        ) || !self.pending_effects.is_empty()
    }

    /// How the order left `pending_payment`: the first other status of its history.
    pub fn left_pending(&self) -> Option<&StatusChange> {
        self.history
            .iter()
            .find(|c| c.status != OrderStatus::PendingPayment)
    }

    /// Whether the order was paid straight from `pending_payment`, so while it held its
    /// cart's lock unless that lapsed first (`settle_lock` works its end out from that), and
    /// not after failing, expiring or being cancelled.
    pub fn paid_from_pending(&self) -> bool {
        self.left_pending()
            .is_some_and(|c| c.status == OrderStatus::Processing)
    }
}

/// A response kept under an idempotency key, replayed as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is ours: go ahead, then complete or release it.
    Claimed,
    /// Another request with this key is still running.
    InProgress,
    /// A request with this key finished: replay its response.
    Completed(StoredResponse),
    /// The key was used with a different body.
    Mismatch,
}

/// One claim on an idempotency key (per user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRequest<'a> {
    pub user: &'a UserId,
    pub key: &'a str,
    /// This request's claim id: a shared store records it as the key's claim, so that the
    /// recovery of a dead replica releases that claim and no other.
    pub claim: uuid::Uuid,
    /// Hash of the request body; the same key with another body is a `Mismatch`.
    pub fingerprint: &'a str,
    pub now: OffsetDateTime,
    /// Records older than this are forgotten (24 h).
    pub ttl: time::Duration,
    /// An in-progress claim older than this is presumed dead (its process crashed).
    pub stale_after: time::Duration,
}

/// Which email an outbox entry is; an order has at most one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    /// The order was paid.
    Confirmation,
    /// The payment was refunded.
    Refund,
}

impl EmailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmation => "confirmation",
            Self::Refund => "refund",
        }
    }

    /// A stable small number for store keys.
    pub fn code(self) -> u8 {
        match self {
            Self::Confirmation => 1,
            Self::Refund => 2,
        }
    }
}

/// An email waiting in the outbox, keyed by (order, kind). The mailer renders it from the
/// order when it sends, so the outbox holds no copy of the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEmail {
    pub order_id: OrderId,
    pub kind: EmailKind,
    pub to: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    /// The replica whose mailer claimed it last (shared stores), so that its claim can be
    /// released when that replica dies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
}

impl OutboxEmail {
    /// A new `kind` email for `order`, to its address, unsent and due at `now`.
    pub fn new(order: &OrderRecord, kind: EmailKind, now: OffsetDateTime) -> Self {
        Self {
            order_id: order.id,
            kind,
            to: order.email.clone(),
            created_at: now,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            sent_at: None,
            claimed_by: None,
        }
    }
}

/// A checkout a replica is running, noted before it holds anything (`Store::begin_checkout`):
/// what to release if the replica dies before it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlightCheckout {
    pub order_id: OrderId,
    /// The cart, when the request named a valid one (the note is written before the body is
    /// validated, so that an Idempotency-Key claim is never left without one).
    pub cart_id: Option<CartId>,
    pub user: UserId,
    /// The request's Idempotency-Key and this request's claim id on it (only that claim is
    /// released: another request may hold the key).
    pub idempotency_key: Option<String>,
    pub claim: Option<uuid::Uuid>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether other processes write to the same data (replicas over one cluster). When
    /// false, this process's actors are the only writers and may trust their own state.
    fn is_shared(&self) -> bool {
        false
    }

    /// Cheap round trip proving the store answers (for /readyz).
    async fn ping(&self) -> StoreResult<()>;

    async fn load_product(&self, sku: &Sku) -> StoreResult<Option<ProductSnapshot>>;
    /// The stored version of the SKU's row (`None`: no such SKU), without its reservations:
    /// how a shared store's product actor confirms that its state is still current.
    async fn product_version(&self, sku: &Sku) -> StoreResult<Option<u64>> {
        Ok(self.load_product(sku).await?.map(|p| p.row.version))
    }
    async fn write_product(&self, write: ProductWrite) -> StoreResult<WriteOutcome>;
    /// Whether `write_product_with` takes settlements. Only a store this process alone
    /// writes can: the order and the cart a settlement writes are cached by their own actors,
    /// which lend their next write to it (the cart) or wait for it (the order); on a shared
    /// store another replica could write them meanwhile.
    fn writes_settlements(&self) -> bool {
        false
    }
    /// `write_product(write)` and every settlement in one transaction: all of it, or (a
    /// `Conflict`: the product's or any order's or cart's version differs) none of it. A store
    /// that does not write settlements refuses the call.
    async fn write_product_with(
        &self,
        _write: ProductWrite,
        _settlements: Vec<Settlement>,
    ) -> StoreResult<WriteOutcome> {
        Err(StoreError::Unavailable(
            "this store does not write settlements with stock".into(),
        ))
    }

    async fn load_cart(&self, id: CartId) -> StoreResult<Option<CartRecord>>;
    /// Writes `cart` (whose `version` is the new one) if the stored version is
    /// `expected_version`. 0 creates it: its id is fresh, so no other writer can race the
    /// creation, and a store may write it unconditionally (the scylla store does: one LWT
    /// fewer per cart); creating it again is then the same write, or a `Conflict`.
    async fn write_cart(
        &self,
        cart: &CartRecord,
        expected_version: u64,
    ) -> StoreResult<WriteOutcome>;
    async fn load_order(&self, id: OrderId) -> StoreResult<Option<OrderRecord>>;
    /// Writes `order` (whose `version` is the new one) if the stored version is
    /// `expected_version` (0: the order must not exist yet). Keeps the per-user listing and
    /// the set of active orders (`OrderRecord::is_active`) in step with the record.
    async fn write_order(
        &self,
        order: &OrderRecord,
        expected_version: u64,
    ) -> StoreResult<WriteOutcome>;
    /// Records that every pending effect of `order` (as stored, at its version) is done,
    /// without writing a new version: loads then answer it with no pending effects, and it
    /// leaves the set of active orders. Only for an order that needs nothing else
    /// (`is_active` once its effects are gone). Answers whether this store did; one that
    /// does not (the default) records it as the next version, through `write_order`. No
    /// replica races it: the effects are each idempotent, a later version's own effects are
    /// recorded at that version, and a record of an older version never hides a newer one's.
    async fn record_effects_done(&self, _order: &OrderRecord) -> StoreResult<bool> {
        Ok(false)
    }
    /// The user's orders, newest first (descending id; ids are time-ordered UUIDv7),
    /// strictly older than `before` when given, at most `limit`.
    async fn list_orders(
        &self,
        user: &UserId,
        before: Option<OrderId>,
        limit: usize,
    ) -> StoreResult<Vec<OrderRecord>>;
    /// Ids of every active order (pending payment, refund pending, or steps to re-drive).
    async fn active_orders(&self) -> StoreResult<Vec<OrderId>>;

    async fn claim_idempotency(
        &self,
        request: IdempotencyRequest<'_>,
    ) -> StoreResult<IdempotencyClaim>;
    /// Stores the response under a key this caller claimed.
    async fn complete_idempotency(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()>;
    /// Forgets a claim whose request failed, so the key may be retried.
    async fn release_idempotency(&self, user: &UserId, key: &str) -> StoreResult<()>;
    /// Deletes keys claimed before `created_before` (they have expired), going through at
    /// most `limit` of them; answers how many it went through (fewer than `limit`: done).
    /// A store whose rows expire by themselves (a TTL) answers 0.
    async fn purge_idempotency(
        &self,
        created_before: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<usize>;

    /// Puts the email in the outbox unless one for the same order and kind is already there.
    async fn enqueue_email(&self, email: &OutboxEmail) -> StoreResult<()>;
    /// Puts `email` in the outbox already claimed by the caller until `claimed_until` (not
    /// due before then) and answers true, unless one for the same order and kind is there
    /// (then nothing changes and it answers false). A store that cannot tell queues it as
    /// `enqueue_email` does, due as `email` says, and answers false: the caller then leaves
    /// the sending to whichever mailer reads it from the outbox.
    async fn enqueue_claimed_email(
        &self,
        email: &OutboxEmail,
        claimed_until: OffsetDateTime,
    ) -> StoreResult<bool> {
        let _ = claimed_until;
        self.enqueue_email(email).await.map(|()| false)
    }
    /// Replaces an outbox entry (attempts, next attempt, sent).
    async fn update_email(&self, email: &OutboxEmail) -> StoreResult<()>;
    /// Replaces an outbox entry only if it is still exactly `expected`. A mailer claims an
    /// email this way (pushing its next attempt past a lease) before sending it, so two
    /// replicas never both send it.
    async fn replace_email(
        &self,
        expected: &OutboxEmail,
        next: &OutboxEmail,
    ) -> StoreResult<WriteOutcome>;
    /// Unsent emails due at `now`, oldest first, at most `limit`.
    async fn due_emails(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<OutboxEmail>>;
    /// How many emails are unsent (the outbox depth gauge).
    async fn outbox_depth(&self) -> StoreResult<u64>;

    /// Carts locked by a checkout (`locked_by` set), at most `limit`, for the start-up
    /// recovery of a store only this process writes: a lock whose order was never stored
    /// belongs to a checkout a crash interrupted. A shared store answers none (another
    /// replica's checkout may be running; its locks lapse at `locked_until`).
    async fn locked_carts(&self, limit: usize) -> StoreResult<Vec<CartRecord>>;
    /// Forgets every idempotency claim still in progress (no response stored) and answers
    /// how many. Called at start-up, before serving, on a store only this process writes: no
    /// request can be running then, so each such claim is one a crash interrupted, and its
    /// key may be retried at once. A shared store forgets none (answers 0).
    async fn release_unfinished_idempotency(&self) -> StoreResult<usize>;

    /// Makes every unsent email due at `now` and answers how many were not yet. Called at
    /// start-up, before the mailer runs, on a store only this process writes: a claim still
    /// in force belongs to the previous run's mailer (a crash between claiming and recording
    /// "sent"), so the email goes out at once instead of when the claim's lease ends; an email
    /// waiting out a retry's backoff is tried once more early. A shared store answers 0
    /// (another replica's mailer may be sending it).
    async fn release_email_claims(&self, now: OffsetDateTime) -> StoreResult<usize>;

    // Crash recovery on a store several replicas share (a single-writer store recovers at
    // start-up through `locked_carts` and the two releases above, and answers these at once).

    /// This process's name among the replicas sharing the store: stable across restarts of
    /// one process slot, so a restarted process recognises what its previous run held. None
    /// for a store only this process writes.
    fn replica(&self) -> Option<&str> {
        None
    }
    /// Records that this replica is alive at `now` (every couple of seconds).
    async fn heartbeat(&self, now: OffsetDateTime) -> StoreResult<()> {
        let _ = now;
        Ok(())
    }
    /// The other replicas with no heartbeat since `now - silence`: presumed dead.
    async fn silent_replicas(
        &self,
        now: OffsetDateTime,
        silence: time::Duration,
    ) -> StoreResult<Vec<String>> {
        let _ = (now, silence);
        Ok(Vec::new())
    }
    /// Makes sure no checkout can store order `order_id` from now on, unless it is stored
    /// already; answers true when the order is absent and fenced, false when it exists. The
    /// recovery of a silent replica fences before releasing what its checkout held: a replica
    /// presumed dead may only be slow, and its order write must then fail (and release what
    /// it took) rather than land on released stock. A store only this process writes has no
    /// such writer: absent is enough.
    async fn fence_order(&self, order_id: OrderId) -> StoreResult<bool> {
        Ok(self.load_order(order_id).await?.is_none())
    }
    /// Notes a checkout this replica begins, before it claims or reserves anything.
    async fn begin_checkout(&self, checkout: &InFlightCheckout) -> StoreResult<()> {
        let _ = checkout;
        Ok(())
    }
    /// Forgets a checkout of `replica` (its own once answered, or a dead one's once
    /// recovered).
    async fn end_checkout(&self, replica: &str, order_id: OrderId) -> StoreResult<()> {
        let _ = (replica, order_id);
        Ok(())
    }
    /// The checkouts `replica` began and never ended, at most `limit`.
    async fn checkouts_of(
        &self,
        replica: &str,
        limit: usize,
    ) -> StoreResult<Vec<InFlightCheckout>> {
        let _ = (replica, limit);
        Ok(Vec::new())
    }
    /// Forgets a dead replica once its checkouts are recovered (a live one writes itself
    /// back at its next heartbeat).
    async fn forget_replica(&self, replica: &str) -> StoreResult<()> {
        let _ = replica;
        Ok(())
    }
    /// Releases the key if `claim` still holds it and no response was stored under it (a
    /// completed key stays: its retries get the stored answer; another claim stays: another
    /// request holds it).
    async fn release_unfinished_key(
        &self,
        user: &UserId,
        key: &str,
        claim: uuid::Uuid,
    ) -> StoreResult<()> {
        let _ = (user, key, claim);
        Ok(())
    }
    /// Makes due at `now` every unsent email whose claim one of `replicas` holds (their
    /// mailers are dead), and answers how many.
    async fn release_email_claims_of(
        &self,
        now: OffsetDateTime,
        replicas: &[String],
    ) -> StoreResult<usize> {
        let _ = (now, replicas);
        Ok(0)
    }

    /// Stores a checkout session (a new one; sessions are never changed).
    async fn put_session(&self, session: &CheckoutSession) -> StoreResult<()>;
    /// The session, if stored and not yet purged (the caller checks `expires_at`).
    async fn load_session(&self, id: &str) -> StoreResult<Option<CheckoutSession>>;
    /// Deletes sessions that expired before `expired_before`, at most `limit` of them;
    /// answers how many went (fewer than `limit`: done). A store whose rows expire by
    /// themselves (a TTL) answers 0.
    async fn purge_sessions(
        &self,
        expired_before: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<usize>;

    /// SKUs in the catalog (products not deleted), ascending, strictly after `after` when
    /// given, at most `limit`.
    async fn list_products(&self, after: Option<&Sku>, limit: usize) -> StoreResult<Vec<Sku>>;
}

pub type SharedStore = Arc<dyn Store>;

/// A hosted checkout session (API.md, "Shopper pages"): the checkout page acts for `user` on
/// `cart_id` without the user's token until `expires_at`. Its id is the only secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSession {
    /// At least 128 random bits, URL-safe.
    pub id: String,
    pub cart_id: CartId,
    pub user: UserId,
    /// The token's email claim, offered in the form.
    pub email: Option<String>,
    /// The storefront's cart page ("Back to cart", "Review cart").
    pub review_cart_url: Option<String>,
    /// Where a shopper who cancels at the payment page goes (else the checkout page).
    pub cancel_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

pub use memory::MemoryStore;

mod memory;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MAX_CART_LINES, MAX_PRICE, Quantity};

    fn line(unit_price: i64, quantity: u32) -> CartLine {
        CartLine {
            sku: Sku::parse("tee").expect("sku"),
            name: "Tee".into(),
            quantity,
            unit_price,
            currency: Currency::EUR,
        }
    }

    fn cart(lines: Vec<CartLine>) -> CartRecord {
        CartRecord {
            id: CartId::new(),
            owner: UserId("alice".into()),
            lines,
            locked_by: None,
            locked_until: None,
            last_paid_order: None,
            version: 1,
        }
    }

    #[test]
    fn a_cart_total_is_checked_and_never_overflows() {
        assert_eq!(cart(vec![line(1999, 2), line(1, 3)]).total(), Some(4001));
        assert_eq!(cart(vec![line(i64::MAX, 2)]).total(), None);
        assert_eq!(cart(vec![line(i64::MAX, 1), line(1, 1)]).total(), None);
        let fullest = vec![line(MAX_PRICE, Quantity::MAX); MAX_CART_LINES];
        assert!(
            cart(fullest).total().is_some(),
            "the limits keep every sum in i64"
        );
    }
}
