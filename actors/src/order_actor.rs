//! OrderActor: one per order, the only place that changes it. Checkout (lock the cart,
//! reserve every line at once, all or nothing, open the payment, persist `pending_payment`
//! with its link), webhooks, expiry and reconciliation all land in its mailbox, so they
//! never race. Each transition is persisted together with its effects (the commit point),
//! then the effects are dispatched, the caller answered, and the effects finished before the
//! next message; a crash in between is re-driven from the stored record. Never answers
//! before the order's new state is durable.

use crate::cart::{BeginCheckout, CartActor, CartError, EndCheckout};
use crate::clock::SharedClock;
use crate::domain::{CartId, MAX_TOTAL, OrderId, Sku, UserId};
use crate::gateway::{PaymentRequest, PaymentState, SharedGateway};
use crate::mailer::Handoff;
use crate::order::{Decision, OrderEvent, OrderStatus, decide};
use crate::product::{Commit, CommitOutcome, ProductActor, Release, Reserve, ReserveOutcome};
use crate::registry::{AskError, Evict, KeyedActor, Membership, PassivateIfIdle, Registry};
use crate::store::{
    Effect, EmailKind, OrderLine, OrderRecord, OutboxEmail, PaymentRef, SharedStore,
    ShippingDetails, StatusChange, WriteOutcome,
};
use crate::{ActorError, ActorSettings};
use actix::prelude::*;
use futures_util::future::join_all;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use time::{Duration, OffsetDateTime};
use tracing::Instrument;

/// How often an active order checks expiry, reconciles and re-drives unfinished effects.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How many webhook ids an order remembers (a redelivery of any of them has no effect).
const REMEMBERED_WEBHOOKS: usize = 64;

/// Checkout and settlement tuning.
#[derive(Debug, Clone)]
pub struct OrderSettings {
    pub reservation_ttl: Duration,
    /// Where the gateway posts webhooks.
    pub callback_url: String,
    /// `returnUrl` is this followed by the order id.
    pub return_url_base: String,
    /// Pending orders closer than this to expiry get their payment status queried.
    pub reconcile_window: Duration,
    /// At most one status query per order this often.
    pub reconcile_every: Duration,
}

/// Everything an order actor talks to.
pub struct OrderServices {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub gateway: SharedGateway,
    pub products: Registry<ProductActor>,
    pub carts: Registry<CartActor>,
    pub settings: OrderSettings,
    pub actors: ActorSettings,
    /// This replica's mailer, to hand a queued email straight to (None: the outbox reads
    /// send it).
    pub mail: Option<Handoff>,
}

type Services = Arc<OrderServices>;

/// Why a line cannot be bought as it is in the cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictReason {
    InsufficientStock,
    PriceChanged,
    UnknownProduct,
}

impl ConflictReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InsufficientStock => "insufficient_stock",
            Self::PriceChanged => "price_changed",
            Self::UnknownProduct => "unknown_product",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineConflict {
    pub sku: Sku,
    pub reason: ConflictReason,
    pub requested: u32,
    pub available: i64,
    pub cart_price: i64,
    pub current_price: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("cart not found")]
    CartNotFound,
    #[error("the cart is empty")]
    CartEmpty,
    /// The cart's total is above `domain::MAX_TOTAL`.
    #[error("the cart's total is too large")]
    TotalTooLarge,
    #[error("items not available or prices changed")]
    Conflicts(Vec<LineConflict>),
    /// The payment could not be initiated; the order is `failed`, stock and cart released.
    #[error("the payment gateway is unavailable")]
    GatewayUnavailable,
    #[error("an actor did not answer in time")]
    Overloaded,
    #[error(transparent)]
    Actor(#[from] ActorError),
}

impl From<AskError> for OrderError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Overloaded => Self::Overloaded,
            AskError::Unavailable => Self::Actor(ActorError::Unavailable),
        }
    }
}

/// What a checkout produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    New(Box<OrderRecord>),
    /// The cart is already locked by this pending order.
    Existing(OrderId),
}

/// Checks out `cart_id` as this actor's order.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Placed, OrderError>")]
pub struct PlaceOrder {
    pub user: UserId,
    pub cart_id: CartId,
    pub shipping: ShippingDetails,
    /// Where the confirmation goes.
    pub email: String,
}

/// The order, if `viewer` may see it (`None`: an admin, who sees every order).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<OrderRecord, OrderError>")]
pub struct GetOrder {
    pub viewer: Option<UserId>,
}

/// A verified payment webhook for this order.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<NoticeOutcome, OrderError>")]
pub struct PaymentNotice {
    pub webhook_id: String,
    pub succeeded: bool,
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeOutcome {
    /// The webhook id was seen before: nothing done.
    Duplicate,
    /// The order moved to this status.
    Moved(OrderStatus),
    /// The event changes nothing in the order's current status.
    Unchanged(OrderStatus),
}

/// Housekeeping: expire at the TTL, reconcile near it, re-drive unfinished effects.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct OrderTick;

pub struct OrderActor {
    membership: Membership<OrderActor>,
    services: Services,
    order: Option<OrderRecord>,
    last_active: OffsetDateTime,
    last_reconciled: Option<OffsetDateTime>,
    /// The next expiry or reconciliation-window wake-up of a pending order.
    wake_timer: Option<SpawnHandle>,
    /// The periodic tick while the order needs housekeeping.
    housekeeping: Option<SpawnHandle>,
}

impl KeyedActor for OrderActor {
    type Key = OrderId;
    const KIND: &'static str = "order";
}

impl OrderActor {
    pub fn new(membership: Membership<Self>, services: Services) -> Self {
        let last_active = services.clock.now();
        Self {
            membership,
            services,
            order: None,
            last_active,
            last_reconciled: None,
            wake_timer: None,
            housekeeping: None,
        }
    }

    fn id(&self) -> OrderId {
        *self.membership.key()
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        let store = self.services.store.clone();
        let id = self.id();
        ctx.wait(
            async move { store.load_order(id).await }
                .into_actor(self)
                .map(|loaded, act, ctx| match loaded {
                    Ok(order) => {
                        act.order = order;
                        act.after_change(ctx);
                        if act.order.as_ref().is_some_and(|o| !o.pending_effects.is_empty()) {
                            ctx.notify(OrderTick);
                        }
                    }
                    Err(e) => {
                        tracing::error!(order_id = %act.id(), error = %e, "cannot load order; stopping");
                        ctx.stop();
                    }
                }),
        );
    }

    /// Arms what the order needs next. A pending order sleeps until its reconciliation window
    /// (a timer), then ticks every second until it settles or expires; an order with effects
    /// still to run ticks until they are done; a settled one costs nothing until it
    /// passivates.
    fn after_change(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.wake_timer.take() {
            ctx.cancel_future(handle);
        }
        let now = self.services.clock.now();
        let (ticking, wake_at) = match &self.order {
            None => (false, None),
            Some(order) => {
                let effects =
                    !order.pending_effects.is_empty() || order.status == OrderStatus::RefundPending;
                let pending = order.status == OrderStatus::PendingPayment;
                let window_opens = order.expires_at - self.services.settings.reconcile_window;
                let in_window = pending && window_opens <= now;
                let wake_at = pending.then_some(if in_window {
                    order.expires_at
                } else {
                    window_opens
                });
                (effects || in_window, wake_at)
            }
        };
        match (ticking, self.housekeeping.is_some()) {
            (true, false) => {
                self.housekeeping =
                    Some(ctx.run_interval(HOUSEKEEPING_EVERY, |_, ctx| ctx.notify(OrderTick)));
            }
            (false, true) => {
                if let Some(handle) = self.housekeeping.take() {
                    ctx.cancel_future(handle);
                }
            }
            _ => {}
        }
        if let Some(at) = wake_at {
            let wait =
                std::time::Duration::try_from((at - now).max(Duration::ZERO)).unwrap_or_default();
            self.wake_timer = Some(ctx.run_later(wait, |_, ctx| ctx.notify(OrderTick)));
        }
    }

    /// Runs `flow` on a copy of the state with nothing else interleaving, then adopts the
    /// state it returns. Finished effects it left unrecorded are written after the answer
    /// goes out and before the next message is taken.
    fn run<T, F>(&mut self, flow: F) -> AtomicResponse<Self, T>
    where
        T: 'static,
        F: Future<Output = (Option<Settled>, T)> + 'static,
    {
        self.last_active = self.services.clock.now();
        let span = tracing::info_span!("order", order_id = %self.id());
        AtomicResponse::new(Box::pin(flow.instrument(span).into_actor(self).map(
            |(settled, answer), act, ctx| {
                let (order, finishing) = match settled {
                    Some(settled) => (Some(settled.order), settled.finishing),
                    None => (None, None),
                };
                act.order = order;
                if let Some(finishing) = finishing {
                    act.finish_effects(finishing, ctx);
                }
                act.after_change(ctx);
                if act.order.is_none() {
                    // No such order (or a checkout that did not place one): keep no actor.
                    ctx.stop();
                }
                answer
            },
        )))
    }

    /// Lets effects already dispatched finish and records them, holding every other message
    /// until then (so a read after the answer sees the order with its effects done).
    fn finish_effects(&mut self, finishing: Finishing, ctx: &mut Context<Self>) {
        let span = tracing::info_span!("order", order_id = %self.id());
        ctx.wait(
            finishing
                .instrument(span)
                .into_actor(self)
                .map(|order, act, ctx| {
                    act.order = Some(order);
                    act.after_change(ctx);
                }),
        );
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.services.actors.mailbox_capacity);
        // A checkout's fresh order id has nothing stored: no read needed.
        if !self.membership.is_new() {
            self.load(ctx);
        }
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.membership.leave(&ctx.address());
        Running::Stop
    }
}

impl Handler<PlaceOrder> for OrderActor {
    type Result = AtomicResponse<Self, Result<Placed, OrderError>>;

    fn handle(&mut self, msg: PlaceOrder, _: &mut Context<Self>) -> Self::Result {
        let services = self.services.clone();
        let (id, current) = (self.id(), self.order.clone());
        self.run(async move {
            if let Some(order) = current {
                // A retried ask: the checkout already happened.
                return (Some(order.clone().into()), Ok(Placed::New(Box::new(order))));
            }
            match place(&services, id, msg).await {
                Ok(order) => (Some(order.clone().into()), Ok(Placed::New(Box::new(order)))),
                Err((order, e)) => (order.map(Settled::from), e),
            }
        })
    }
}

impl Handler<GetOrder> for OrderActor {
    type Result = AtomicResponse<Self, Result<OrderRecord, OrderError>>;

    fn handle(&mut self, msg: GetOrder, _: &mut Context<Self>) -> Self::Result {
        let services = self.services.clone();
        let (id, current) = (self.id(), self.order.clone());
        self.run(async move {
            // On a shared store another replica may have moved the order since it was loaded
            // here (a webhook that landed there): read it fresh.
            let order = if services.store.is_shared() {
                match services.store.load_order(id).await {
                    Ok(fresh) => fresh.or(current),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not refresh the order; answering from memory");
                        current
                    }
                }
            } else {
                current
            };
            let answer = order
                .clone()
                .filter(|o| msg.viewer.as_ref().is_none_or(|v| v == &o.owner))
                .ok_or(OrderError::NotFound);
            (order.map(Settled::from), answer)
        })
    }
}

impl Handler<PaymentNotice> for OrderActor {
    type Result = AtomicResponse<Self, Result<NoticeOutcome, OrderError>>;

    fn handle(&mut self, msg: PaymentNotice, _: &mut Context<Self>) -> Self::Result {
        let services = self.services.clone();
        let current = self.order.clone();
        self.run(async move {
            let Some(order) = current else {
                return (None, Err(OrderError::NotFound));
            };
            let (settled, answer) = notice(&services, order, msg).await;
            (Some(settled), answer)
        })
    }
}

impl Handler<OrderTick> for OrderActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: OrderTick, _: &mut Context<Self>) -> Self::Result {
        let services = self.services.clone();
        let current = self.order.clone();
        let now = services.clock.now();
        let reconcile = self
            .last_reconciled
            .is_none_or(|at| at + services.settings.reconcile_every <= now);
        let due_for_query = current.as_ref().is_some_and(|o| {
            o.status == OrderStatus::PendingPayment
                && o.payment.is_some()
                && (o.expires_at <= now
                    || (reconcile && o.expires_at - services.settings.reconcile_window <= now))
        });
        if due_for_query {
            self.last_reconciled = Some(now);
        }
        let last_active = self.last_active;
        let answer = self.run(async move {
            let Some(order) = current else {
                return (None, ());
            };
            (Some(tick(&services, order, due_for_query).await), ())
        });
        // A tick is housekeeping: it does not keep an idle order alive.
        self.last_active = last_active;
        answer
    }
}

impl Handler<Evict> for OrderActor {
    type Result = ();

    /// Only a settled order may go: an active one keeps its timers.
    fn handle(&mut self, _: Evict, ctx: &mut Context<Self>) {
        let idle = self.services.clock.now() - self.last_active >= self.services.actors.evict_after;
        let active = self.order.as_ref().is_some_and(OrderRecord::is_active);
        if idle && !active {
            ctx.stop();
        }
    }
}

impl Handler<PassivateIfIdle> for OrderActor {
    type Result = ();

    fn handle(&mut self, _: PassivateIfIdle, ctx: &mut Context<Self>) {
        let idle = self.services.clock.now() - self.last_active >= self.services.actors.idle_after;
        let active = self.order.as_ref().is_some_and(OrderRecord::is_active);
        if idle && !active {
            ctx.stop();
        }
    }
}

// ---- the flows: plain async functions over (services, order) ----

type Failed = (Option<OrderRecord>, Result<Placed, OrderError>);

async fn place(svc: &Services, id: OrderId, msg: PlaceOrder) -> Result<OrderRecord, Failed> {
    let now = svc.clock.now();
    let expires_at = now + svc.settings.reservation_ttl;
    let begin = BeginCheckout {
        user: msg.user.clone(),
        order_id: id,
        locked_until: expires_at,
    };
    let cart = match svc.carts.ask(&msg.cart_id, begin).await {
        Ok(Ok(cart)) => cart,
        Ok(Err(CartError::Locked { order_id })) => {
            return Err((None, Ok(Placed::Existing(order_id))));
        }
        Ok(Err(CartError::NotFound)) => return Err((None, Err(OrderError::CartNotFound))),
        Ok(Err(CartError::Empty)) => return Err((None, Err(OrderError::CartEmpty))),
        Ok(Err(CartError::Actor(e))) => return Err((None, Err(e.into()))),
        Ok(Err(other)) => {
            tracing::error!(order_id = %id, error = %other, "unexpected cart answer at checkout");
            return Err((None, Err(ActorError::Unavailable.into())));
        }
        Err(e) => return Err((None, Err(e.into()))),
    };
    let mut lines = cart.lines.clone();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let currency = lines[0].currency;

    let unlock = || async {
        let _ = svc
            .carts
            .ask(
                &msg.cart_id,
                EndCheckout {
                    order_id: id,
                    paid: None,
                },
            )
            .await;
    };

    // Carts are bounded (domain::MAX_TOTAL), so only a cart stored before those bounds
    // can be refused here.
    if cart.total().is_none_or(|t| t > MAX_TOTAL) {
        unlock().await;
        return Err((None, Err(OrderError::TotalTooLarge)));
    }

    // 1. Reserve every line at once, all or nothing. Each SKU is its own actor, so the lines
    // share one round of group commits instead of one each, and every line is tried, so a
    // refusal lists every offending line.
    let reserves = lines.iter().map(|line| {
        let reserve = Reserve {
            order_id: id,
            qty: line.quantity,
            expires_at,
            expected_price: Some((line.unit_price, line.currency)),
        };
        svc.products.ask(&line.sku, reserve)
    });
    let outcomes = join_all(reserves).await;
    let mut conflicts = Vec::new();
    let mut failure = None;
    let mut to_release = Vec::new();
    for (line, outcome) in lines.iter().zip(outcomes) {
        match outcome {
            Ok(Ok(ReserveOutcome::Reserved)) => to_release.push(&line.sku),
            Ok(Ok(refused)) => conflicts.push(refusal(line, refused)),
            // Unknown whether it reserved: release it too (releasing nothing is harmless).
            Ok(Err(e)) => {
                to_release.push(&line.sku);
                failure = Some(OrderError::from(e));
            }
            Err(e) => {
                to_release.push(&line.sku);
                failure = Some(OrderError::from(e));
            }
        }
    }
    if failure.is_some() || !conflicts.is_empty() {
        release_skus(svc, id, to_release).await;
        unlock().await;
        let error = match failure {
            // A line whose answer is unknown makes the conflict list incomplete: retry.
            Some(e) => e,
            None => {
                metrics::counter!("kassa_checkouts_total", "outcome" => "conflict").increment(1);
                metrics::counter!("kassa_reservation_conflicts_total")
                    .increment(conflicts.len() as u64);
                OrderError::Conflicts(conflicts)
            }
        };
        return Err((None, Err(error)));
    }

    let order_lines: Vec<OrderLine> = lines
        .iter()
        .map(|l| OrderLine {
            sku: l.sku.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price,
        })
        .collect();
    let total = crate::store::order_total(&order_lines).unwrap_or(MAX_TOTAL);
    // Version 0: not stored yet.
    let mut order = OrderRecord {
        id,
        owner: msg.user,
        cart_id: msg.cart_id,
        lines: order_lines,
        total,
        currency,
        shipping: msg.shipping,
        email: msg.email,
        status: OrderStatus::PendingPayment,
        payment: None,
        settled_payment_id: None,
        created_at: now,
        updated_at: now,
        expires_at,
        history: vec![StatusChange {
            status: OrderStatus::PendingPayment,
            at: now,
        }],
        pending_effects: Vec::new(),
        seen_webhooks: Vec::new(),
        version: 0,
    };

    // 2. Open the payment before storing the order, so the order is written once, with its
    // link. Safe: nobody can pay before this checkout answers (the link is in the answer),
    // a webhook for this order queues behind this flow in the actor's mailbox, and the
    // order id is the gateway's idempotency key. A crash before step 3 leaves a payment
    // nobody can reach and reservations that lapse at their expiry, as a lost checkout
    // always did.
    let request = PaymentRequest {
        order_id: id,
        amount: total,
        currency,
        callback_url: svc.settings.callback_url.clone(),
        return_url: format!("{}{id}", svc.settings.return_url_base),
        display: Default::default(),
    };
    let started = std::time::Instant::now();
    let session = match svc.gateway.initiate(request).await {
        Ok(session) => {
            metrics::histogram!("kassa_gateway_initiate_seconds", "outcome" => "ok")
                .record(started.elapsed().as_secs_f64());
            session
        }
        Err(e) => {
            metrics::histogram!("kassa_gateway_initiate_seconds", "outcome" => "error")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("kassa_checkouts_total", "outcome" => "gateway_error").increment(1);
            tracing::error!(order_id = %id, error = %e, "payment initiation failed; failing the order");
            // Stored as failed (with its pending_payment history), then stock and cart freed.
            let order = match transition(svc, order, OrderEvent::GatewayUnavailable, |_| {}).await {
                Ok((settled, _)) => settled.finished().await,
                Err((order, _)) => order,
            };
            return Err((Some(order), Err(OrderError::GatewayUnavailable)));
        }
    };
    order.payment = Some(PaymentRef {
        payment_id: session.payment_id,
        payment_url: session.payment_url,
        token: session.token,
    });

    // 3. The order is durable from here on.
    order.version = 1;
    match svc.store.write_order(&order, 0).await {
        Ok(WriteOutcome::Applied) => {}
        outcome => {
            tracing::error!(order_id = %id, ?outcome, "cannot store the new order");
            release_skus(svc, id, lines.iter().map(|l| &l.sku)).await;
            unlock().await;
            return Err((None, Err(ActorError::Unavailable.into())));
        }
    }
    metrics::counter!("kassa_checkouts_total", "outcome" => "placed").increment(1);
    tracing::info!(order_id = %id, total, currency = currency.code(), "order placed");
    Ok(order)
}

fn refusal(line: &crate::store::CartLine, outcome: ReserveOutcome) -> LineConflict {
    let (reason, available, current_price) = match outcome {
        ReserveOutcome::InsufficientStock { available } => (
            ConflictReason::InsufficientStock,
            available,
            Some(line.unit_price),
        ),
        ReserveOutcome::PriceChanged {
            current, available, ..
        } => (ConflictReason::PriceChanged, available, Some(current)),
        ReserveOutcome::UnknownProduct | ReserveOutcome::Reserved => {
            (ConflictReason::UnknownProduct, 0, None)
        }
    };
    LineConflict {
        sku: line.sku.clone(),
        reason,
        requested: line.quantity,
        available,
        cart_price: line.unit_price,
        current_price,
    }
}

/// Releases the order's reservation on each SKU, all at once; answers whether every
/// release was confirmed (one that failed is reclaimed by its product's sweep at expiry).
async fn release_skus<'a>(
    svc: &OrderServices,
    id: OrderId,
    skus: impl IntoIterator<Item = &'a Sku>,
) -> bool {
    let released = join_all(skus.into_iter().map(|sku| async move {
        let result = ask_release(svc, id, sku).await;
        if let Err(e) = &result {
            tracing::warn!(order_id = %id, %sku, error = %e, "release failed; the sweep will reclaim it");
        }
        result.is_ok()
    }))
    .await;
    released.into_iter().all(|ok| ok)
}

async fn ask_release(svc: &OrderServices, id: OrderId, sku: &Sku) -> Result<(), OrderError> {
    svc.products.ask(sku, Release { order_id: id }).await??;
    Ok(())
}

/// The rest of a transition: its effects, already dispatched, finishing and then recorded;
/// resolves to the order as it then stands.
type Finishing = Pin<Box<dyn Future<Output = OrderRecord>>>;

/// An order as a flow leaves it: durable as `order`, with its effects possibly still
/// `finishing`. The actor answers first and lets them finish before its next message.
struct Settled {
    order: OrderRecord,
    finishing: Option<Finishing>,
}

impl From<OrderRecord> for Settled {
    fn from(order: OrderRecord) -> Self {
        Self {
            order,
            finishing: None,
        }
    }
}

impl Settled {
    /// Waits for the effects, for a flow that does not hand the order back to the actor.
    async fn finished(self) -> OrderRecord {
        match self.finishing {
            Some(finishing) => finishing.await,
            None => self.order,
        }
    }
}

/// Applies `event` to `order`: persists the new status with its effects (and whatever
/// `record` adds), then runs the effects. Answers the order as it now stands and whether it
/// moved.
async fn transition(
    svc: &Services,
    order: OrderRecord,
    event: OrderEvent,
    record: impl FnOnce(&mut OrderRecord),
) -> Result<(Settled, Option<OrderStatus>), (OrderRecord, OrderError)> {
    let Decision::Move { to, effects } = decide(order.status, event) else {
        return Ok((order.into(), None));
    };
    let now = svc.clock.now();
    let from = order.status;
    let mut next = order.clone();
    next.status = to;
    next.updated_at = now;
    next.history.push(StatusChange {
        status: to,
        at: now,
    });
    for effect in effects {
        if !next.pending_effects.contains(effect) {
            next.pending_effects.push(*effect);
        }
    }
    record(&mut next);
    let next = write_next(svc, order, next).await?;
    metrics::counter!("kassa_order_transitions_total", "from" => from.as_str(), "to" => to.as_str())
        .increment(1);
    tracing::info!(order_id = %next.id, %from, %to, ?event, "order transition");
    Ok((dispatch_effects(svc, next).await, Some(to)))
}

/// Writes `next` as the version after `order`'s. On a conflict answers the stored order (or
/// `order` if it cannot be read) with the error.
async fn write_next(
    svc: &Services,
    order: OrderRecord,
    mut next: OrderRecord,
) -> Result<OrderRecord, (OrderRecord, OrderError)> {
    next.version = order.version + 1;
    match svc.store.write_order(&next, order.version).await {
        Ok(WriteOutcome::Applied) => Ok(next),
        Ok(WriteOutcome::Conflict) => {
            metrics::counter!("kassa_store_conflicts_total", "entity" => "order").increment(1);
            let reloaded = svc
                .store
                .load_order(order.id)
                .await
                .ok()
                .flatten()
                .unwrap_or(order);
            Err((reloaded, ActorError::Contended.into()))
        }
        Err(e) => {
            tracing::error!(order_id = %order.id, error = %e, "order write failed");
            Err((order, ActorError::Unavailable.into()))
        }
    }
}

/// Starts the order's pending effects and answers once each has been handed to its actor
/// (or its write queued), so whatever a caller reads after the answer already sees them;
/// the rest of the work is left `finishing`. The transition that asked for them is durable,
/// so a crash before they finish only runs them again (each is idempotent).
async fn dispatch_effects(svc: &Services, order: OrderRecord) -> Settled {
    if order.pending_effects.is_empty() {
        return order.into();
    }
    let committed = order.clone();
    let svc = Arc::clone(svc);
    let mut finishing: Finishing = Box::pin(async move {
        let done = run_effects(&svc, order).await;
        record_effects(&svc, done).await
    });
    match futures_util::poll!(finishing.as_mut()) {
        Poll::Ready(order) => order.into(),
        Poll::Pending => Settled {
            order: committed,
            finishing: Some(finishing),
        },
    }
}

/// Carries out the order's pending effects, all at once (each talks to a different actor or
/// the gateway, and each is idempotent). What failed stays pending for the next tick. A
/// refund the gateway accepted moves the order on. Answers the order as it then stands,
/// not yet written.
async fn run_effects(svc: &OrderServices, order: OrderRecord) -> OrderRecord {
    let outcomes = join_all(
        order
            .pending_effects
            .iter()
            .map(|effect| run_effect(svc, &order, *effect)),
    )
    .await;
    let mut next = order.clone();
    next.pending_effects = Vec::new();
    let mut refunded = false;
    for (effect, done) in order.pending_effects.iter().zip(outcomes) {
        if !done {
            tracing::warn!(order_id = %order.id, ?effect, "effect not done yet; will retry");
            next.pending_effects.push(*effect);
        } else if *effect == Effect::RequestRefund {
            refunded = true;
        }
    }
    let now = svc.clock.now();
    if refunded
        && let Decision::Move { to, effects } = decide(next.status, OrderEvent::RefundAccepted)
    {
        next.status = to;
        for effect in effects {
            if !queue_after_refund(svc, &next, *effect).await {
                next.pending_effects.push(*effect);
            }
        }
        next.history.push(StatusChange {
            status: to,
            at: now,
        });
        metrics::counter!("kassa_order_transitions_total", "from" => order.status.as_str(), "to" => to.as_str())
            .increment(1);
    }
    next.updated_at = now;
    next
}

async fn run_effect(svc: &OrderServices, order: &OrderRecord, effect: Effect) -> bool {
    match effect {
        Effect::ReleaseStock => release_stock(svc, order).await,
        Effect::CommitStock => commit_stock(svc, order).await,
        Effect::UnlockCart | Effect::EmptyCart => {
            let end = EndCheckout {
                order_id: order.id,
                paid: (effect == Effect::EmptyCart).then(|| {
                    order
                        .lines
                        .iter()
                        .map(|l| (l.sku.clone(), l.quantity))
                        .collect()
                }),
            };
            matches!(svc.carts.ask(&order.cart_id, end).await, Ok(Ok(())))
        }
        Effect::QueueEmail => queue_email(svc, order, EmailKind::Confirmation).await,
        Effect::QueueRefundEmail => queue_email(svc, order, EmailKind::Refund).await,
        Effect::RequestRefund => request_refund(svc, order).await,
    }
}

/// Writes `order` (whose effects ran) as the next version; on a failed write, the stored
/// record wins and its effects run again.
async fn record_effects(svc: &OrderServices, order: OrderRecord) -> OrderRecord {
    let mut next = order.clone();
    next.version = order.version + 1;
    match svc.store.write_order(&next, order.version).await {
        Ok(WriteOutcome::Applied) => next,
        outcome => {
            tracing::warn!(order_id = %order.id, ?outcome, "could not record finished effects; they will run again");
            svc.store
                .load_order(order.id)
                .await
                .ok()
                .flatten()
                .unwrap_or(order)
        }
    }
}

/// Effects of the refund's acceptance, run right away (only the refund email so far).
async fn queue_after_refund(svc: &OrderServices, order: &OrderRecord, effect: Effect) -> bool {
    match effect {
        Effect::QueueRefundEmail => queue_email(svc, order, EmailKind::Refund).await,
        other => {
            tracing::error!(order_id = %order.id, ?other, "unexpected effect after a refund");
            true
        }
    }
}

async fn release_stock(svc: &OrderServices, order: &OrderRecord) -> bool {
    release_skus(svc, order.id, order.lines.iter().map(|l| &l.sku)).await
}

async fn commit_stock(svc: &OrderServices, order: &OrderRecord) -> bool {
    let committed = join_all(order.lines.iter().map(|line| async move {
        let answer = svc
            .products
            .ask(&line.sku, Commit { order_id: order.id })
            .await;
        match answer {
            Ok(Ok(CommitOutcome::Committed | CommitOutcome::AlreadyCommitted)) => true,
            Ok(Ok(CommitOutcome::NotReserved)) => {
                metrics::counter!("kassa_commit_without_reservation_total").increment(1);
                tracing::error!(order_id = %order.id, sku = %line.sku, "paid order had no reservation to commit");
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(order_id = %order.id, sku = %line.sku, error = %e, "commit failed");
                false
            }
            Err(e) => {
                tracing::warn!(order_id = %order.id, sku = %line.sku, error = %e, "commit failed");
                false
            }
        }
    }))
    .await;
    committed.into_iter().all(|ok| ok)
}

async fn queue_email(svc: &OrderServices, order: &OrderRecord, kind: EmailKind) -> bool {
    let email = OutboxEmail::new(order, kind, svc.clock.now());
    // Queued claimed by this replica and handed to its mailer: sent now, without the
    // mailer reading the outbox, claiming the email and loading the order again.
    let handoff = svc
        .mail
        .as_ref()
        .and_then(|mail| mail.slot().map(|slot| (mail, slot)));
    let queued = match handoff {
        Some((mail, slot)) => {
            let claimed_until = mail.claim_until();
            let queued = svc.store.enqueue_claimed_email(&email, claimed_until).await;
            if let Ok(true) = queued {
                let claimed = OutboxEmail {
                    next_attempt_at: claimed_until,
                    ..email
                };
                mail.give(claimed, order.clone(), slot);
            }
            queued.map(|_| ())
        }
        None => svc.store.enqueue_email(&email).await,
    };
    match queued {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(order_id = %order.id, error = %e, kind = kind.as_str(), "could not queue an email");
            false
        }
    }
}

async fn request_refund(svc: &OrderServices, order: &OrderRecord) -> bool {
    let payment_id = order
        .settled_payment_id
        .clone()
        .or_else(|| order.payment.as_ref().map(|p| p.payment_id.clone()));
    let Some(payment_id) = payment_id else {
        tracing::error!(order_id = %order.id, "refund requested without a payment id");
        return false;
    };
    match svc.gateway.refund(&payment_id).await {
        Ok(refund_id) => {
            tracing::info!(order_id = %order.id, %payment_id, %refund_id, "refund accepted");
            true
        }
        Err(e) => {
            tracing::warn!(order_id = %order.id, %payment_id, error = %e, "refund failed; will retry");
            false
        }
    }
}

/// Holds the order's units again (a late payment for a failed or expired order).
async fn reacquire(svc: &OrderServices, order: &OrderRecord) -> bool {
    let expires_at = svc.clock.now() + svc.settings.reservation_ttl;
    for (i, line) in order.lines.iter().enumerate() {
        let reserve = Reserve {
            order_id: order.id,
            qty: line.quantity,
            expires_at,
            expected_price: None,
        };
        if !matches!(
            svc.products.ask(&line.sku, reserve).await,
            Ok(Ok(ReserveOutcome::Reserved))
        ) {
            release_skus(svc, order.id, order.lines[..=i].iter().map(|l| &l.sku)).await;
            return false;
        }
    }
    true
}

async fn notice(
    svc: &Services,
    order: OrderRecord,
    msg: PaymentNotice,
) -> (Settled, Result<NoticeOutcome, OrderError>) {
    if order.seen_webhooks.contains(&msg.webhook_id) {
        metrics::counter!("kassa_webhooks_total", "outcome" => "duplicate").increment(1);
        return (order.into(), Ok(NoticeOutcome::Duplicate));
    }
    let amount_matches = msg.amount == order.total && msg.currency == order.currency.code();
    let event = if msg.succeeded {
        if !amount_matches {
            metrics::counter!("kassa_webhook_amount_mismatch_total").increment(1);
            tracing::warn!(
                order_id = %order.id, amount = msg.amount, currency = %msg.currency,
                expected = order.total, expected_currency = order.currency.code(),
                "payment amount differs from the order; refunding"
            );
        }
        let stock_held = match order.status {
            OrderStatus::PendingPayment => true,
            OrderStatus::Failed | OrderStatus::Expired if amount_matches => {
                reacquire(svc, &order).await
            }
            _ => false,
        };
        OrderEvent::PaymentSucceeded {
            amount_matches,
            stock_held,
        }
    } else {
        OrderEvent::PaymentFailed
    };
    let status = order.status;
    if let Decision::Stay = decide(status, event) {
        // Nothing moves, but the id is remembered: a redelivery is then a duplicate, not
        // logged and counted (a mismatch, say) a second time.
        // If that write fails the event is still answered 200 (it changes nothing); a
        // redelivery is then counted again, nothing worse.
        let mut next = order.clone();
        remember_webhook(&mut next, msg.webhook_id);
        metrics::counter!("kassa_webhooks_total", "outcome" => "unchanged").increment(1);
        let order = match write_next(svc, order, next).await {
            Ok(order) => order,
            Err((order, e)) => {
                tracing::warn!(order_id = %order.id, error = %e, "could not remember a webhook that changed nothing");
                order
            }
        };
        return (order.into(), Ok(NoticeOutcome::Unchanged(status)));
    }
    let webhook_id = msg.webhook_id.clone();
    let settled = msg.succeeded.then(|| msg.payment_id.clone());
    match transition(svc, order, event, move |next| {
        remember_webhook(next, webhook_id);
        if settled.is_some() {
            next.settled_payment_id = settled;
        }
    })
    .await
    {
        Ok((settled, Some(to))) => {
            metrics::counter!("kassa_webhooks_total", "outcome" => "applied").increment(1);
            (settled, Ok(NoticeOutcome::Moved(to)))
        }
        // Not reached: `decide` answered `Move` above, and it is a pure function.
        Ok((settled, None)) => (settled, Ok(NoticeOutcome::Unchanged(status))),
        Err((order, e)) => (order.into(), Err(e)),
    }
}

/// Adds a webhook id to the order's most recent ones.
fn remember_webhook(order: &mut OrderRecord, webhook_id: String) {
    order.seen_webhooks.push(webhook_id);
    let excess = order
        .seen_webhooks
        .len()
        .saturating_sub(REMEMBERED_WEBHOOKS);
    order.seen_webhooks.drain(..excess);
}

async fn tick(svc: &Services, order: OrderRecord, query_gateway: bool) -> Settled {
    if order.status != OrderStatus::PendingPayment {
        return dispatch_effects(svc, order).await;
    }
    // A pending order has no effects to run (none of its transitions into it asks for any).
    if query_gateway && let Some(payment) = order.payment.clone() {
        match svc.gateway.status(&payment.payment_id).await {
            Ok(status) if status.state != PaymentState::Pending => {
                metrics::counter!("kassa_reconciliations_total", "outcome" => "settled")
                    .increment(1);
                tracing::info!(order_id = %order.id, state = ?status.state, "reconciled a payment the webhook had not reported");
                let msg = PaymentNotice {
                    webhook_id: format!("reconcile:{}", payment.payment_id),
                    succeeded: status.state == PaymentState::Succeeded,
                    payment_id: status.payment_id,
                    amount: status.amount,
                    currency: status.currency.code().to_string(),
                };
                return notice(svc, order, msg).await.0;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(order_id = %order.id, error = %e, "payment status query failed")
            }
        }
    }
    if order.expires_at <= svc.clock.now() {
        metrics::counter!("kassa_orders_expired_total").increment(1);
        return match transition(svc, order, OrderEvent::ReservationExpired, |_| {}).await {
            Ok((settled, _)) => settled,
            Err((order, _)) => order.into(),
        };
    }
    order.into()
}
