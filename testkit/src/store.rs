//! `HookedStore`: the one `Store` decorator of the tests. It forwards every method of the
//! `Store` trait to the store it wraps (the provided ones too, so the wrapped store's own
//! versions run, never the trait's defaults over the decorator), and runs a hook first:
//!
//! - [`Hooks::before`] runs before every call (named by a [`Method`]): it may wait (a gate, a
//!   slow statement, a stall), count, or fail the call with a `StoreError`;
//! - [`Hooks::before_write`] runs instead of `before` for the conditional writes (those
//!   answering a `WriteOutcome`): it may also answer the write itself (`Some(Conflict)`)
//!   without reaching the wrapped store. By default it is `before`.
//!
//! The synchronous methods (`is_shared`, `replica`) are forwarded without a hook. A new
//! `Store` method needs a `Method` variant and one forwarding method here, nowhere else.

use async_trait::async_trait;
use kassa_actors::domain::{CartId, OrderId, Sku, UserId};
use kassa_actors::store::{
    CartRecord, CheckoutSession, IdempotencyClaim, IdempotencyRequest, InFlightCheckout,
    OrderRecord, OutboxEmail, ProductSnapshot, ProductWrite, Settlement, Store, StoreResult,
    StoredResponse, WriteOutcome,
};
use std::ops::Deref;
use std::sync::Arc;
use time::OffsetDateTime;

/// A method of the `Store` trait, as a hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Ping,
    LoadProduct,
    ProductVersion,
    WriteProduct,
    /// `write_product_with`: a product write carrying order settlements.
    WriteProductWith,
    LoadCart,
    WriteCart,
    LoadOrder,
    WriteOrder,
    RecordEffectsDone,
    ListOrders,
    ActiveOrders,
    ClaimIdempotency,
    CompleteIdempotency,
    ReleaseIdempotency,
    PurgeIdempotency,
    EnqueueEmail,
    EnqueueClaimedEmail,
    UpdateEmail,
    ReplaceEmail,
    DueEmails,
    OutboxDepth,
    LockedCarts,
    ReleaseUnfinishedIdempotency,
    ReleaseEmailClaims,
    Heartbeat,
    SilentReplicas,
    FenceOrder,
    BeginCheckout,
    EndCheckout,
    CheckoutsOf,
    ForgetReplica,
    ReleaseUnfinishedKey,
    ReleaseEmailClaimsOf,
    PutSession,
    LoadSession,
    PurgeSessions,
    ListProducts,
}

/// What a test does before a store call; every method defaults to letting the call through.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Runs before every call but the conditional writes: may wait, count, or fail the call
    /// (an `Err` is the call's answer; the wrapped store is not reached).
    async fn before(&self, method: Method) -> StoreResult<()> {
        let _ = method;
        Ok(())
    }

    /// Runs before a conditional write (`write_product`, `write_cart`, `write_order`,
    /// `replace_email`): as `before`, and `Ok(Some(outcome))` answers the write without
    /// reaching the wrapped store. Defaults to `before`.
    async fn before_write(&self, method: Method) -> StoreResult<Option<WriteOutcome>> {
        self.before(method).await.map(|()| None)
    }
}

/// No hooks: every call goes straight through.
impl Hooks for () {}

/// Hooks shared with the test that steers them.
#[async_trait]
impl<H: Hooks + ?Sized> Hooks for Arc<H> {
    async fn before(&self, method: Method) -> StoreResult<()> {
        (**self).before(method).await
    }

    async fn before_write(&self, method: Method) -> StoreResult<Option<WriteOutcome>> {
        (**self).before_write(method).await
    }
}

/// The store `S` (by default any `dyn Store`) behind the hooks `H`. It dereferences to its
/// hooks, so that a test holding the store steers it directly (`store.hold_loads()`).
pub struct HookedStore<H, S: ?Sized = dyn Store> {
    inner: Arc<S>,
    hooks: H,
}

impl<H: Hooks, S: Store + ?Sized> HookedStore<H, S> {
    pub fn new(inner: Arc<S>, hooks: H) -> Self {
        Self { inner, hooks }
    }

    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    /// The wrapped store (reached without the hooks).
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }
}

impl<H, S: ?Sized> Deref for HookedStore<H, S> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.hooks
    }
}

/// Runs the hook for `$method`, then the wrapped store's method.
macro_rules! forward {
    ($self:ident, $method:ident, $call:ident($($arg:expr),*)) => {{
        $self.hooks.before(Method::$method).await?;
        $self.inner.$call($($arg),*).await
    }};
}

/// As `forward!`, for a conditional write the hook may answer.
macro_rules! forward_write {
    ($self:ident, $method:ident, $call:ident($($arg:expr),*)) => {{
        if let Some(outcome) = $self.hooks.before_write(Method::$method).await? {
            return Ok(outcome);
        }
        $self.inner.$call($($arg),*).await
    }};
}

#[async_trait]
impl<H: Hooks, S: Store + ?Sized> Store for HookedStore<H, S> {
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    async fn ping(&self) -> StoreResult<()> {
        forward!(self, Ping, ping())
    }

    async fn load_product(&self, sku: &Sku) -> StoreResult<Option<ProductSnapshot>> {
        forward!(self, LoadProduct, load_product(sku))
    }

    async fn product_version(&self, sku: &Sku) -> StoreResult<Option<u64>> {
        forward!(self, ProductVersion, product_version(sku))
    }

    async fn write_product(&self, write: ProductWrite) -> StoreResult<WriteOutcome> {
        forward_write!(self, WriteProduct, write_product(write))
    }

    fn writes_settlements(&self) -> bool {
        self.inner.writes_settlements()
    }

    async fn write_product_with(
        &self,
        write: ProductWrite,
        settlements: Vec<Settlement>,
    ) -> StoreResult<WriteOutcome> {
        forward_write!(
            self,
            WriteProductWith,
            write_product_with(write, settlements)
        )
    }

    async fn load_cart(&self, id: CartId) -> StoreResult<Option<CartRecord>> {
        forward!(self, LoadCart, load_cart(id))
    }

    async fn write_cart(
        &self,
        cart: &CartRecord,
        expected_version: u64,
    ) -> StoreResult<WriteOutcome> {
        forward_write!(self, WriteCart, write_cart(cart, expected_version))
    }

    async fn load_order(&self, id: OrderId) -> StoreResult<Option<OrderRecord>> {
        forward!(self, LoadOrder, load_order(id))
    }

    async fn write_order(
        &self,
        order: &OrderRecord,
        expected_version: u64,
    ) -> StoreResult<WriteOutcome> {
        forward_write!(self, WriteOrder, write_order(order, expected_version))
    }

    async fn record_effects_done(&self, order: &OrderRecord) -> StoreResult<bool> {
        forward!(self, RecordEffectsDone, record_effects_done(order))
    }

    async fn list_orders(
        &self,
        user: &UserId,
        before: Option<OrderId>,
        limit: usize,
    ) -> StoreResult<Vec<OrderRecord>> {
        forward!(self, ListOrders, list_orders(user, before, limit))
    }

    async fn active_orders(&self) -> StoreResult<Vec<OrderId>> {
        forward!(self, ActiveOrders, active_orders())
    }

    async fn claim_idempotency(
        &self,
        request: IdempotencyRequest<'_>,
    ) -> StoreResult<IdempotencyClaim> {
        forward!(self, ClaimIdempotency, claim_idempotency(request))
    }

    async fn complete_idempotency(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        forward!(
            self,
            CompleteIdempotency,
            complete_idempotency(user, key, response)
        )
    }

    async fn release_idempotency(&self, user: &UserId, key: &str) -> StoreResult<()> {
        forward!(self, ReleaseIdempotency, release_idempotency(user, key))
    }

    async fn purge_idempotency(
        &self,
        created_before: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<usize> {
        forward!(
            self,
            PurgeIdempotency,
            purge_idempotency(created_before, limit)
        )
    }

    async fn enqueue_email(&self, email: &OutboxEmail) -> StoreResult<()> {
        forward!(self, EnqueueEmail, enqueue_email(email))
    }

    async fn enqueue_claimed_email(
        &self,
        email: &OutboxEmail,
        claimed_until: OffsetDateTime,
    ) -> StoreResult<bool> {
        forward!(
            self,
            EnqueueClaimedEmail,
            enqueue_claimed_email(email, claimed_until)
        )
    }

    async fn update_email(&self, email: &OutboxEmail) -> StoreResult<()> {
        forward!(self, UpdateEmail, update_email(email))
    }

    async fn replace_email(
        &self,
        expected: &OutboxEmail,
        next: &OutboxEmail,
    ) -> StoreResult<WriteOutcome> {
        forward_write!(self, ReplaceEmail, replace_email(expected, next))
    }

    async fn due_emails(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<OutboxEmail>> {
        forward!(self, DueEmails, due_emails(now, limit))
    }

    async fn outbox_depth(&self) -> StoreResult<u64> {
        forward!(self, OutboxDepth, outbox_depth())
    }

    async fn locked_carts(&self, limit: usize) -> StoreResult<Vec<CartRecord>> {
        forward!(self, LockedCarts, locked_carts(limit))
    }

    async fn release_unfinished_idempotency(&self) -> StoreResult<usize> {
        forward!(
            self,
            ReleaseUnfinishedIdempotency,
            release_unfinished_idempotency()
        )
    }

    async fn release_email_claims(&self, now: OffsetDateTime) -> StoreResult<usize> {
        forward!(self, ReleaseEmailClaims, release_email_claims(now))
    }

    fn replica(&self) -> Option<&str> {
        self.inner.replica()
    }

    async fn heartbeat(&self, now: OffsetDateTime) -> StoreResult<()> {
        forward!(self, Heartbeat, heartbeat(now))
    }

    async fn silent_replicas(
        &self,
        now: OffsetDateTime,
        silence: time::Duration,
    ) -> StoreResult<Vec<String>> {
        forward!(self, SilentReplicas, silent_replicas(now, silence))
    }

    async fn fence_order(&self, order_id: OrderId) -> StoreResult<bool> {
        forward!(self, FenceOrder, fence_order(order_id))
    }

    async fn begin_checkout(&self, checkout: &InFlightCheckout) -> StoreResult<()> {
        forward!(self, BeginCheckout, begin_checkout(checkout))
    }

    async fn end_checkout(&self, replica: &str, order_id: OrderId) -> StoreResult<()> {
        forward!(self, EndCheckout, end_checkout(replica, order_id))
    }

    async fn checkouts_of(
        &self,
        replica: &str,
        limit: usize,
    ) -> StoreResult<Vec<InFlightCheckout>> {
        forward!(self, CheckoutsOf, checkouts_of(replica, limit))
    }

    async fn forget_replica(&self, replica: &str) -> StoreResult<()> {
        forward!(self, ForgetReplica, forget_replica(replica))
    }

    async fn release_unfinished_key(
        &self,
        user: &UserId,
        key: &str,
        claim: uuid::Uuid,
    ) -> StoreResult<()> {
        forward!(
            self,
            ReleaseUnfinishedKey,
            release_unfinished_key(user, key, claim)
        )
    }

    async fn release_email_claims_of(
        &self,
        now: OffsetDateTime,
        replicas: &[String],
    ) -> StoreResult<usize> {
        forward!(
            self,
            ReleaseEmailClaimsOf,
            release_email_claims_of(now, replicas)
        )
    }

    async fn put_session(&self, session: &CheckoutSession) -> StoreResult<()> {
        forward!(self, PutSession, put_session(session))
    }

    async fn load_session(&self, id: &str) -> StoreResult<Option<CheckoutSession>> {
        forward!(self, LoadSession, load_session(id))
    }

    async fn purge_sessions(
        &self,
        expired_before: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<usize> {
        forward!(self, PurgeSessions, purge_sessions(expired_before, limit))
    }

    async fn list_products(&self, after: Option<&Sku>, limit: usize) -> StoreResult<Vec<Sku>> {
        forward!(self, ListProducts, list_products(after, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kassa_actors::store::{MemoryStore, StoreError};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails `load_cart`, answers every conditional write with a conflict, counts the rest.
    #[derive(Default)]
    struct Probe {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Hooks for Probe {
        async fn before(&self, method: Method) -> StoreResult<()> {
            if method == Method::LoadCart {
                return Err(StoreError::Unavailable("probe".into()));
            }
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        async fn before_write(&self, _: Method) -> StoreResult<Option<WriteOutcome>> {
            Ok(Some(WriteOutcome::Conflict))
        }
    }

    #[tokio::test]
    async fn hooks_run_before_the_wrapped_store_and_may_answer_for_it() {
        let store = HookedStore::new(Arc::new(MemoryStore::new()), Probe::default());
        store.ping().await.expect("ping passes");
        assert!(store.load_cart(CartId::new()).await.is_err());
        let order = store.load_order(OrderId::new()).await.expect("passes");
        assert!(order.is_none());
        let sku = Sku::parse("tee").expect("sku");
        let write = ProductWrite {
            sku: sku.clone(),
            expected_version: 0,
            row: kassa_actors::store::ProductRow {
                info: None,
                on_hand: 1,
                version: 1,
            },
            put_reservations: Vec::new(),
            remove_reservations: Vec::new(),
        };
        assert_eq!(
            store.write_product(write).await.expect("answered"),
            WriteOutcome::Conflict
        );
        assert!(
            store
                .inner()
                .load_product(&sku)
                .await
                .expect("ok")
                .is_none(),
            "the hook answered: the write never reached the store"
        );
        assert_eq!(store.calls.load(Ordering::SeqCst), 2, "ping and load_order");
        assert!(!store.is_shared());
    }
}
