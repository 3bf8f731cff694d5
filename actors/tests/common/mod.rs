//! Shared test fixtures: a registry set-up like production's (an `ActorPool` of arbiters and one
//! `Registry` per actor kind) over a `MemoryStore` and a `ManualClock`, plus a store wrapper
//! that can stall, fail or conflict on demand and a payment gateway in memory.

#![allow(dead_code)] // each test binary uses a different subset

use async_trait::async_trait;
use kassa_actors::ActorSettings;
use kassa_actors::cart::CartActor;
use kassa_actors::clock::{Clock, ManualClock, SharedClock};
use kassa_actors::domain::{CartId, Currency, OrderId, ProductInfo, Sku, UserId};
use kassa_actors::gateway::{
    CancelOutcome, Gateway, GatewayError, PaymentRequest, PaymentSession, PaymentState,
    PaymentStatus,
};
use kassa_actors::product::{ProductActor, ProductView, Reserve, UpsertProduct};
use kassa_actors::registry::{ActorPool, Registry};
use kassa_actors::store::{
    CartRecord, MemoryStore, ProductSnapshot, SharedStore, Store, StoreError, StoreResult,
    WriteOutcome,
};
use kassa_testkit::store::{HookedStore, Hooks, Method};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration as StdDuration;
use time::Duration;
use tokio::sync::watch;

/// How long any polling helper waits before declaring failure.
pub const DEADLINE: StdDuration = StdDuration::from_secs(10);

pub struct Harness {
    /// The in-memory store underneath everything (read it to check what is durable).
    pub memory: Arc<MemoryStore>,
    pub clock: ManualClock,
    pub settings: ActorSettings,
    pub pool: Arc<ActorPool>,
    pub products: Registry<ProductActor>,
    pub carts: Registry<CartActor>,
}

impl Harness {
    /// Actors straight over a `MemoryStore`, default settings, a generous ask timeout.
    pub fn new() -> Self {
        let memory = Arc::new(MemoryStore::new());
        Self::over(
            memory.clone(),
            memory,
            ActorSettings::default(),
            StdDuration::from_secs(5),
        )
    }

    /// Two replicas' actors (each its own registries, as two processes) over one shared
    /// `MemoryStore`, each behind its own `ControlledStore`.
    pub fn replicas() -> [(Self, Arc<ControlledStore>); 2] {
        let memory = Arc::new(MemoryStore::shared());
        [(); 2].map(|()| {
            let control = Arc::new(ControlledStore::new(memory.clone(), StoreControls::new()));
            let harness = Self::over(
                control.clone(),
                memory.clone(),
                ActorSettings::default(),
                StdDuration::from_secs(5),
            );
            (harness, control)
        })
    }

    /// Actors over a `ControlledStore` wrapping a `MemoryStore`.
    pub fn controlled() -> (Self, Arc<ControlledStore>) {
        Self::controlled_with(ActorSettings::default(), StdDuration::from_secs(5))
    }

    pub fn controlled_with(
        settings: ActorSettings,
        ask_timeout: StdDuration,
    ) -> (Self, Arc<ControlledStore>) {
        let memory = Arc::new(MemoryStore::new());
        let control = Arc::new(ControlledStore::new(memory.clone(), StoreControls::new()));
        let harness = Self::over(control.clone(), memory, settings, ask_timeout);
        (harness, control)
    }

    /// Must be called inside an actix `System` (`#[actix_rt::test]`).
    pub fn over(
        store: SharedStore,
        memory: Arc<MemoryStore>,
        settings: ActorSettings,
        ask_timeout: StdDuration,
    ) -> Self {
        let clock = ManualClock::starting_now();
        let shared_clock: SharedClock = Arc::new(clock.clone());
        let pool = Arc::new(ActorPool::new(2));
        let products = {
            let (store, clock, settings) = (store.clone(), shared_clock.clone(), settings.clone());
            Registry::new(pool.clone(), ask_timeout, move |membership| {
                ProductActor::new(membership, store.clone(), clock.clone(), settings.clone())
            })
        };
        let carts = {
            let (store, clock, settings) = (store.clone(), shared_clock.clone(), settings.clone());
            Registry::new(pool.clone(), ask_timeout, move |membership| {
                CartActor::new(membership, store.clone(), clock.clone(), settings.clone())
            })
        };
        Self {
            memory,
            clock,
            settings,
            pool,
            products,
            carts,
        }
    }

    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Creates or replaces `sku` as a 19.99 EUR tee with `stock` units on hand.
    pub async fn upsert(&self, sku: &Sku, stock: i64) -> ProductView {
        self.products
            .ask(sku, UpsertProduct { info: tee(), stock })
            .await
            .expect("the product actor answers")
            .expect("the upsert is durable")
    }

    /// A reservation request at the catalog price, expiring in 15 minutes.
    pub fn reserve(&self, order_id: OrderId, qty: u32) -> Reserve {
        Reserve {
            order_id,
            qty,
            expires_at: self.now() + Duration::minutes(15),
            expected_price: Some((tee().price, tee().currency)),
        }
    }

    /// What the store holds for `sku` (the durable truth).
    pub async fn stored_product(&self, sku: &Sku) -> ProductSnapshot {
        self.memory
            .load_product(sku)
            .await
            .expect("memory store answers")
            .expect("the product is stored")
    }

    pub async fn stored_cart(&self, id: CartId) -> Option<CartRecord> {
        self.memory
            .load_cart(id)
            .await
            .expect("memory store answers")
    }

    /// Advances the clock past the idle period and asks every actor to passivate.
    pub fn go_idle_and_passivate(&self) {
        self.clock
            .advance(self.settings.idle_after + Duration::seconds(1));
        self.products
            .broadcast(kassa_actors::registry::PassivateIfIdle);
        self.carts
            .broadcast(kassa_actors::registry::PassivateIfIdle);
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.pool.shutdown();
    }
}

pub fn sku(raw: &str) -> Sku {
    Sku::parse(raw).expect("valid sku")
}

pub fn user(name: &str) -> UserId {
    UserId(name.to_owned())
}

/// The catalog entry every product test uses: a 19.99 EUR tee.
pub fn tee() -> ProductInfo {
    ProductInfo {
        name: "Tee".into(),
        price: 1999,
        currency: Currency::EUR,
    }
}

/// Polls `condition` until it holds, failing the test after `DEADLINE`.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(StdDuration::from_millis(2)).await;
    }
}

/// Runs many futures concurrently. `poll_once` lets a test put every ask's message into the
/// mailbox (an ask sends on its first poll) before it changes anything else.
pub struct JoinAll<F: Future> {
    futures: Vec<Pin<Box<F>>>,
    outputs: Vec<Option<F::Output>>,
}

impl<F: Future> JoinAll<F> {
    pub fn new(futures: impl IntoIterator<Item = F>) -> Self {
        let futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
        let outputs = futures.iter().map(|_| None).collect();
        Self { futures, outputs }
    }

    /// Polls every pending future once; true if all have completed.
    pub async fn poll_once(&mut self) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(self.poll_pending(cx))).await
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> bool {
        for (future, output) in self.futures.iter_mut().zip(self.outputs.iter_mut()) {
            if output.is_none()
                && let Poll::Ready(value) = future.as_mut().poll(cx)
            {
                *output = Some(value);
            }
        }
        self.outputs.iter().all(Option::is_some)
    }
}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Boxed futures make every field Unpin.
        let this = Pin::into_inner(self);
        if this.poll_pending(cx) {
            Poll::Ready(
                this.outputs
                    .iter_mut()
                    .map(|o| o.take().expect("completed"))
                    .collect(),
            )
        } else {
            Poll::Pending
        }
    }
}

impl<F: Future> Unpin for JoinAll<F> {}

/// A `Store` over a `MemoryStore` that a test can stall (gates), break (failures) or make
/// lose every conditional write (conflicts): the kit's decorator with `StoreControls` as its
/// hooks, steered through it (it dereferences to them).
pub type ControlledStore = HookedStore<StoreControls, MemoryStore>;

/// The switches of a `ControlledStore`. Loads are `load_product`, `load_cart` and
/// `load_order`; writes are `write_product`, `write_cart` and `write_order`; every other
/// call goes straight through.
pub struct StoreControls {
    load_gate: watch::Sender<bool>,
    write_gate: watch::Sender<bool>,
    fail_loads: AtomicBool,
    fail_writes: AtomicBool,
    fail_order_writes: AtomicBool,
    conflict_writes: AtomicBool,
    loads_waiting: AtomicUsize,
    writes_waiting: AtomicUsize,
    conflicts_reported: AtomicUsize,
    /// Calls of `record_effects_done` (they go straight through).
    effects_recorded: AtomicUsize,
    /// Every conditional write that reached the hooks, in order.
    writes: Mutex<Vec<Method>>,
    /// Every load that reached the hooks, in order.
    loads: Mutex<Vec<Method>>,
}

impl StoreControls {
    pub fn new() -> Self {
        Self {
            load_gate: watch::Sender::new(true),
            write_gate: watch::Sender::new(true),
            fail_loads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            fail_order_writes: AtomicBool::new(false),
            conflict_writes: AtomicBool::new(false),
            loads_waiting: AtomicUsize::new(0),
            writes_waiting: AtomicUsize::new(0),
            conflicts_reported: AtomicUsize::new(0),
            effects_recorded: AtomicUsize::new(0),
            writes: Mutex::new(Vec::new()),
            loads: Mutex::new(Vec::new()),
        }
    }

    /// How many times `record_effects_done` was called.
    pub fn effects_recorded(&self) -> usize {
        self.effects_recorded.load(Ordering::SeqCst)
    }

    /// The loads made so far, in order.
    pub fn loads(&self) -> Vec<Method> {
        self.loads.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The conditional writes made so far (those the gate and faults apply to), in order.
    pub fn writes(&self) -> Vec<Method> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads wait until `open_loads`.
    pub fn hold_loads(&self) {
        self.load_gate.send_replace(false);
    }

    pub fn open_loads(&self) {
        self.load_gate.send_replace(true);
    }

    /// Writes wait until `open_writes`.
    pub fn hold_writes(&self) {
        self.write_gate.send_replace(false);
    }

    pub fn open_writes(&self) {
        self.write_gate.send_replace(true);
    }

    /// How many loads are waiting at the gate right now.
    pub fn loads_waiting(&self) -> usize {
        self.loads_waiting.load(Ordering::SeqCst)
    }

    pub fn writes_waiting(&self) -> usize {
        self.writes_waiting.load(Ordering::SeqCst)
    }

    /// Every load and write fails (the store is down) until `heal`.
    pub fn go_down(&self) {
        self.fail_loads.store(true, Ordering::SeqCst);
        self.fail_writes.store(true, Ordering::SeqCst);
    }

    pub fn fail_writes(&self) {
        self.fail_writes.store(true, Ordering::SeqCst);
    }

    /// Only order writes fail (products and carts still write) until `heal`: a crash between
    /// a checkout's reservations and its order.
    pub fn fail_order_writes(&self) {
        self.fail_order_writes.store(true, Ordering::SeqCst);
    }

    /// Every product and cart write reports `Conflict` until `heal`.
    pub fn conflict_on_every_write(&self) {
        self.conflict_writes.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.fail_loads.store(false, Ordering::SeqCst);
        self.fail_writes.store(false, Ordering::SeqCst);
        self.fail_order_writes.store(false, Ordering::SeqCst);
        self.conflict_writes.store(false, Ordering::SeqCst);
    }

    pub fn conflicts_reported(&self) -> usize {
        self.conflicts_reported.load(Ordering::SeqCst)
    }

    async fn pass(gate: &watch::Sender<bool>, waiting: &AtomicUsize) {
        let mut open = gate.subscribe();
        if *open.borrow_and_update() {
            return;
        }
        waiting.fetch_add(1, Ordering::SeqCst);
        let _ = open.wait_for(|open| *open).await;
        waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Hooks for StoreControls {
    async fn before(&self, method: Method) -> StoreResult<()> {
        if method == Method::RecordEffectsDone {
            self.effects_recorded.fetch_add(1, Ordering::SeqCst);
        }
        if !matches!(
            method,
            Method::LoadProduct | Method::LoadCart | Method::LoadOrder
        ) {
            return Ok(());
        }
        self.loads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(method);
        Self::pass(&self.load_gate, &self.loads_waiting).await;
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test: loads fail".into()));
        }
        Ok(())
    }

    /// `Some(outcome)` short-circuits the write.
    async fn before_write(&self, method: Method) -> StoreResult<Option<WriteOutcome>> {
        if !matches!(
            method,
            Method::WriteProduct
                | Method::WriteProductWith
                | Method::WriteCart
                | Method::WriteOrder
        ) {
            return Ok(None);
        }
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(method);
        Self::pass(&self.write_gate, &self.writes_waiting).await;
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test: writes fail".into()));
        }
        if self.conflict_writes.load(Ordering::SeqCst) {
            self.conflicts_reported.fetch_add(1, Ordering::SeqCst);
            return Ok(Some(WriteOutcome::Conflict));
        }
        // A settlement carries an order write.
        if matches!(method, Method::WriteOrder | Method::WriteProductWith)
            && self.fail_order_writes.load(Ordering::SeqCst)
        {
            return Err(StoreError::Unavailable("test: order writes fail".into()));
        }
        Ok(None)
    }
}

/// A `Gateway` in memory: one payment per order id (the order id is the idempotency key, as
/// with the real ones), which a test can settle, and a record of every call.
#[derive(Default)]
pub struct StubGateway {
    state: Mutex<StubPayments>,
    /// Initiations open the payment but answer `Unavailable`: a gateway that took the
    /// request and then timed out.
    time_out_initiations: AtomicBool,
}

#[derive(Default)]
struct StubPayments {
    by_order: HashMap<OrderId, PaymentStatus>,
    initiations: usize,
    refunds: Vec<String>,
    cancels: Vec<String>,
}

impl StubGateway {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn time_out_initiations(&self, on: bool) {
        self.time_out_initiations.store(on, Ordering::SeqCst);
    }

    /// How many times a payment was asked to be opened.
    pub fn initiations(&self) -> usize {
        self.lock().initiations
    }

    /// The payment ids asked to be refunded, in order.
    pub fn refunds(&self) -> Vec<String> {
        self.lock().refunds.clone()
    }

    /// The payment ids asked to be cancelled, in order.
    pub fn cancels(&self) -> Vec<String> {
        self.lock().cancels.clone()
    }

    /// The payment opened for `order`, if any.
    pub fn payment_of(&self, order: OrderId) -> Option<PaymentStatus> {
        self.lock().by_order.get(&order).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StubPayments> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, payment_id: &str) -> Result<PaymentStatus, GatewayError> {
        self.lock()
            .by_order
            .values()
            .find(|p| p.payment_id == payment_id)
            .cloned()
            .ok_or_else(|| GatewayError::Refused(format!("no payment {payment_id}")))
    }
}

#[async_trait]
impl Gateway for StubGateway {
    async fn initiate(&self, request: PaymentRequest) -> Result<PaymentSession, GatewayError> {
        let mut state = self.lock();
        state.initiations += 1;
        let payment = state
            .by_order
            .entry(request.order_id)
            .or_insert_with(|| PaymentStatus {
                payment_id: format!("pay-{}", request.order_id),
                order_id: request.order_id,
                state: PaymentState::Pending,
                amount: request.amount,
                currency: request.currency,
            });
        let session = PaymentSession {
            payment_id: payment.payment_id.clone(),
            payment_url: format!("https://pay.test/{}", payment.payment_id),
            token: "token".into(),
        };
        if self.time_out_initiations.load(Ordering::SeqCst) {
            return Err(GatewayError::Unavailable(
                "test: initiation timed out".into(),
            ));
        }
        Ok(session)
    }

    async fn refund(&self, payment_id: &str) -> Result<String, GatewayError> {
        self.find(payment_id)?;
        self.lock().refunds.push(payment_id.to_owned());
        Ok(format!("refund-{payment_id}"))
    }

    async fn status(&self, payment_id: &str) -> Result<PaymentStatus, GatewayError> {
        self.find(payment_id)
    }

    async fn cancel(&self, payment_id: &str) -> Result<CancelOutcome, GatewayError> {
        let payment = self.find(payment_id)?;
        let mut state = self.lock();
        state.cancels.push(payment_id.to_owned());
        if payment.state == PaymentState::Succeeded {
            return Ok(CancelOutcome::AlreadySucceeded);
        }
        if let Some(p) = state.by_order.get_mut(&payment.order_id) {
            p.state = PaymentState::Failed;
        }
        Ok(CancelOutcome::Cancelled)
    }
}
