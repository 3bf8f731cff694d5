//! OrderActor: one per order, the only place that changes it. Checkout (lock the cart,
//! reserve every line at once, all or nothing, open the payment, persist `pending_payment`
//! with its link), webhooks, expiry and reconciliation all land in its mailbox, so they
//! never race. Each transition is persisted together with its effects (the commit point),
//! then the effects are dispatched, the caller answered, and the effects finished before the
//! next message; a crash in between is re-driven from the stored record. On a store only this
//! process writes, a transition that commits stock is instead written in one transaction with
//! its effects (`joint`): nothing is left to re-drive. Never answers before the order's new
//! state is durable.

use crate::backoff::{self, Jitter};
use crate::cart::CartActor;
use crate::clock::SharedClock;
use crate::domain::{CartId, OrderId, Sku, UserId};
use crate::gateway::SharedGateway;
use crate::mailer::Handoff;
use crate::order::OrderStatus;
use crate::product::ProductActor;
use crate::registry::{AskError, Evict, KeyedActor, Membership, PassivateIfIdle, Registry};
use crate::store::{OrderRecord, SharedStore, ShippingDetails};
use crate::{ActorError, ActorSettings};
use actix::prelude::*;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use tracing::Instrument;

/// How often an active order checks expiry, reconciles and re-drives unfinished effects.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The most an order waits between two re-drives of effects that keep failing (a gateway or
/// a store that is down): the waits double from one tick and are jittered, so that the
/// orders a fault left unfinished do not all call the recovering service in step.
const REDRIVE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(8);

/// How many webhook ids an order remembers (a redelivery of any of them has no effect).
const REMEMBERED_WEBHOOKS: usize = 64;

/// Checkout and settlement tuning.
#[derive(Debug, Clone)]
pub struct OrderSettings {
    pub reservation_ttl: Duration,
    /// Where the gateway posts webhooks.
    pub callback_url: String,
    /// The shop's name, shown on the hosted payment page.
    pub shop_name: String,
    /// The shop's home page: where a payment nobody is meant to pay (one opened only to be
    /// cancelled) would send the shopper back.
    pub shop_url: String,
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
    /// Only an unpaid (`pending_payment`) order can be cancelled.
    #[error("the order is {0} and can no longer be cancelled")]
    NotCancellable(OrderStatus),
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
    /// Where the gateway sends the shopper back after paying (the order page).
    pub return_url: String,
    /// Where the payment page's "cancel" link goes (it cancels the order).
    pub cancel_url: Option<String>,
}

/// Cancels the order while it is unpaid, if `viewer` may see it (`None`: an admin).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<OrderRecord, OrderError>")]
pub struct CancelOrder {
    pub viewer: Option<UserId>,
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

/// The store lists this order among the active ones (the periodic scan that adopts the
/// orders no replica hosts). An order that needs no attention (not pending, nothing left to
/// do) is listed because a crash fell between recording its effects done and leaving the
/// active set, or because it is leaving it right now on another replica: its entry is
/// retired (at its version's timestamp, so a newer, active version's entry stays), and the
/// scan stops waking it. Otherwise, a tick. Not retired: an entry written for a version
/// whose write never applied (a newer timestamp than the stored version's), and one whose
/// order was never stored (its checkout may still be running); the scan wakes those in vain.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ListedActive;

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
    /// Re-drives of unfinished effects since they were last all done, and when the next
    /// may run.
    redrives: u32,
    redrive_at: Option<OffsetDateTime>,
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
            redrives: 0,
            redrive_at: None,
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
        if self
            .order
            .as_ref()
            .is_none_or(|o| o.pending_effects.is_empty())
        {
            (self.redrives, self.redrive_at) = (0, None);
        }
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
                Err((settled, e)) => (settled, e),
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

/// A webhook or a cancel whose status change lost to another replica's write gives up at
/// once (answered 503 `overloaded`; the gateway or the shopper asks again): counted as
/// contended, as a product command is after its retries.
fn count_contended<T>(answer: &Result<T, OrderError>) {
    if matches!(answer, Err(OrderError::Actor(ActorError::Contended))) {
        metrics::counter!("kassa_contended_total", "entity" => "order").increment(1);
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
            count_contended(&answer);
            (Some(settled), answer)
        })
    }
}

impl Handler<CancelOrder> for OrderActor {
    type Result = AtomicResponse<Self, Result<OrderRecord, OrderError>>;

    fn handle(&mut self, msg: CancelOrder, _: &mut Context<Self>) -> Self::Result {
        let services = self.services.clone();
        let current = self
            .order
            .clone()
            .filter(|o| msg.viewer.as_ref().is_none_or(|v| v == &o.owner));
        let unseen = current.is_none().then(|| self.order.clone()).flatten();
        self.run(async move {
            let Some(order) = current else {
                return (unseen.map(Settled::from), Err(OrderError::NotFound));
            };
            let (settled, answer) = cancel(&services, order).await;
            count_contended(&answer);
            (Some(settled), answer)
        })
    }
}

impl Handler<ListedActive> for OrderActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: ListedActive, ctx: &mut Context<Self>) -> Self::Result {
        let Some(order) = self.order.clone().filter(|o| !o.is_active()) else {
            return self.handle(OrderTick, ctx);
        };
        let services = self.services.clone();
        let last_active = self.last_active;
        let answer = self.run(async move {
            // Idempotent, and timestamped by this version on a shared store: a newer, active
            // version's entry stays.
            match services.store.record_effects_done(&order).await {
                Ok(true) => tracing::info!(order_id = %order.id, "retired the active-order entry of an order that needs no attention"),
                Ok(false) => {}
                Err(e) => tracing::warn!(order_id = %order.id, error = %e, "cannot retire a stale active-order entry; the next scan tries again"),
            }
            (Some(order.into()), ())
        });
        // Housekeeping, as a tick: it does not keep an idle order alive.
        self.last_active = last_active;
        answer
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
        let redrive = current.as_ref().is_some_and(|o| {
            o.status != OrderStatus::PendingPayment && !o.pending_effects.is_empty()
        });
        if redrive {
            if self.redrive_at.is_some_and(|at| now < at) {
                return AtomicResponse::new(Box::pin(actix::fut::ready(())));
            }
            self.redrives = self.redrives.saturating_add(1);
            self.redrive_at = Some(now + redrive_backoff(self.redrives));
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

/// The wait after the `n`-th re-drive: between half and all of a cap that doubles from the
/// housekeeping tick up to `REDRIVE_BACKOFF_MAX`.
fn redrive_backoff(n: u32) -> Duration {
    let wait = backoff::wait(HOUSEKEEPING_EVERY, REDRIVE_BACKOFF_MAX, n, Jitter::Half);
    Duration::try_from(wait).unwrap_or(Duration::MAX)
}

// The flows: plain async functions over (services, order).
mod checkout;
mod effects;
mod joint;
mod settlement;

use checkout::place;
use effects::{Finishing, Settled};
use settlement::{cancel, notice, tick};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_backoff_doubles_from_the_tick_is_jittered_and_capped() {
        let tick = Duration::try_from(HOUSEKEEPING_EVERY).unwrap_or_default();
        let max = Duration::try_from(REDRIVE_BACKOFF_MAX).unwrap_or_default();
        for _ in 0..100 {
            let first = redrive_backoff(1);
            assert!(tick / 2 <= first && first <= tick, "{first}");
            let third = redrive_backoff(3);
            assert!(tick * 2 <= third && third <= tick * 4, "{third}");
            let late = redrive_backoff(u32::MAX);
            assert!(max / 2 <= late && late <= max, "{late}");
        }
        let spread: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| redrive_backoff(6)).collect();
        assert!(spread.len() > 1, "orders must not retry in step");
    }
}
