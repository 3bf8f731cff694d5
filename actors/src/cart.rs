//! CartActor: one per cart, the single writer of its lines and its checkout lock. It
//! serialises "change a line" against "check out": a locked cart refuses changes. Answers
//! only after the change is durable; someone else's cart is simply not found. It never
//! lets a cart grow past `MAX_CART_LINES` lines or a total of `MAX_TOTAL`.

use crate::clock::SharedClock;
use crate::domain::{
    CartId, Currency, MAX_CART_LINES, MAX_TOTAL, OrderId, ProductInfo, Quantity, Sku, UserId,
};
use crate::registry::{Evict, KeyedActor, Membership, PassivateIfIdle};
use crate::store::{
    CartLine, CartRecord, CartWrite, OrderRecord, SharedStore, StoreResult, WriteOutcome,
};
use crate::{ActorError, ActorSettings};
use actix::prelude::*;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use tokio::sync::oneshot;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    /// No such cart, or not the caller's (never leak existence).
    #[error("cart not found")]
    NotFound,
    #[error("the cart is locked by a pending order")]
    Locked { order_id: OrderId },
    #[error("the cart holds {cart} lines; this product is priced in {line}")]
    CurrencyMismatch { cart: Currency, line: Currency },
    #[error("a cart with this id already exists")]
    AlreadyExists,
    #[error("the cart is empty")]
    Empty,
    /// Adding the line would take the cart above `MAX_CART_LINES`.
    #[error("the cart already holds {max} lines, the most it may")]
    Full { max: usize },
    /// The change would take the cart's total above `MAX_TOTAL`.
    #[error("the cart's total would exceed {max} minor units")]
    TotalTooLarge { max: i64 },
    #[error(transparent)]
    Actor(#[from] ActorError),
}

type CartResult = Result<CartRecord, CartError>;

#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<CartRecord, CartError>")]
pub struct CreateCart {
    pub owner: UserId,
}

#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<CartRecord, CartError>")]
pub struct GetCart {
    pub user: UserId,
}

/// Sets a line's quantity (0 removes it) at the product's current price.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<CartRecord, CartError>")]
pub struct SetLine {
    pub user: UserId,
    pub sku: Sku,
    pub quantity: Quantity,
    pub product: ProductInfo,
}

#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<CartRecord, CartError>")]
pub struct RemoveLine {
    pub user: UserId,
    pub sku: Sku,
}

/// Locks the cart for checkout by `order_id` until `locked_until` and answers it. Repeating
/// it for the same order is harmless; a live lock by another order is `Locked`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<CartRecord, CartError>")]
pub struct BeginCheckout {
    pub user: UserId,
    pub order_id: OrderId,
    pub locked_until: OffsetDateTime,
}

/// Settles the cart after `order_id`: paid, what the order bought leaves the cart,
/// otherwise its lines stay; either way the order's lock goes. Idempotent; a lock held by
/// another order is left alone.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), CartError>")]
pub struct EndCheckout {
    pub order_id: OrderId,
    /// The units the order bought (sku, quantity), when it was paid.
    pub paid: Option<Vec<(Sku, u32)>>,
}

/// `EndCheckout`, whose write (if it needs one) is lent to the order's settlement
/// (`store::Settlement`): the cart actor hands its next version over through `lend` and holds
/// every other message until the order says whether its transaction wrote it. Answered once
/// that is known; a lend the order never takes back is settled by reloading the cart. Never
/// writes the cart itself (a lend nobody takes, or a copy of a retried ask, writes nothing):
/// the order ends the cart as an effect, after its transition is durable.
#[derive(Clone, Message)]
#[rtype(result = "Result<(), CartError>")]
pub struct LendEndCheckout {
    pub end: EndCheckout,
    pub lend: CartLend,
}

/// Where a cart actor hands its next version to the order that asked for it (once: the
/// message is cloned when an ask is retried, and the clones share this).
#[derive(Clone)]
pub struct CartLend(Arc<Mutex<Option<oneshot::Sender<LentCart>>>>);

impl CartLend {
    pub fn new() -> (Self, oneshot::Receiver<LentCart>) {
        let (lend, lent) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(lend)))), lent)
    }

    fn take(&self) -> Option<oneshot::Sender<LentCart>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A cart's next version, for the order's transaction to write; `outcome` says how it went.
pub struct LentCart {
    pub write: CartWrite,
    pub outcome: oneshot::Sender<LendOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LendOutcome {
    /// Durable: the cart actor takes it as its state.
    Written,
    /// Nothing of it was written: the cart stays as it was (the order ends it later).
    NotWritten,
    /// The order cannot tell (its write failed or timed out): the cart is read again.
    Unknown,
}

/// The most a cart waits for the order it lent its write to: longer than the order's
/// transaction can take (an actor ask's own timeout), after which the cart is read again.
const LEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct CartActor {
    membership: Membership<CartActor>,
    store: SharedStore,
    clock: SharedClock,
    settings: ActorSettings,
    cart: Option<CartRecord>,
    /// Set by `reread_then`, for the decision it runs next: whether its read failed, so that
    /// `cart` is this replica's copy and may be stale.
    unconfirmed: bool,
    /// The order that held the stored cart's lock, once it left `pending_payment`: how it
    /// settles the lock never changes (`CartRecord::settle_lock`), so later reads of the
    /// cart settle it without reading the order again.
    ended_lock: Option<Arc<OrderRecord>>,
    last_active: OffsetDateTime,
}

impl KeyedActor for CartActor {
    type Key = CartId;
    const KIND: &'static str = "cart";
}

impl CartActor {
    pub fn new(
        membership: Membership<Self>,
        store: SharedStore,
        clock: SharedClock,
        settings: ActorSettings,
    ) -> Self {
        let last_active = clock.now();
        Self {
            membership,
            store,
            clock,
            settings,
            cart: None,
            unconfirmed: false,
            ended_lock: None,
            last_active,
        }
    }

    fn id(&self) -> CartId {
        *self.membership.key()
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let id = self.id();
        ctx.wait(
            async move { store.load_cart(id).await }
                .into_actor(self)
                .map(|loaded, act, ctx| match loaded {
                    Ok(cart) => act.cart = cart,
                    Err(e) => {
                        tracing::error!(cart_id = %act.id(), error = %e, "cannot load cart; stopping");
                        ctx.stop();
                    }
                }),
        );
    }

    /// The caller's cart, or `NotFound`.
    fn owned_by(&self, user: &UserId) -> Result<&CartRecord, CartError> {
        self.cart
            .as_ref()
            .filter(|c| &c.owner == user)
            .ok_or(CartError::NotFound)
    }

    fn unlocked_for(&self, user: &UserId) -> Result<CartRecord, CartError> {
        let cart = self.owned_by(user)?;
        match self.live_lock(cart) {
            Some(order_id) => Err(CartError::Locked { order_id }),
            None => Ok(Self::without_lock(cart.clone())),
        }
    }

    /// The order holding the cart, unless its lock lapsed.
    fn live_lock(&self, cart: &CartRecord) -> Option<OrderId> {
        let lapsed = cart.locked_until.is_some_and(|t| t <= self.clock.now());
        cart.locked_by.filter(|_| !lapsed)
    }

    fn without_lock(mut cart: CartRecord) -> CartRecord {
        cart.locked_by = None;
        cart.locked_until = None;
        cart
    }

    /// Runs `decide` with nothing else interleaving, on the cart as stored. On a shared store
    /// the cart is read again first: another replica may have changed it since it was loaded
    /// here. For `GetCart`, which writes nothing, and for a lent end, whose decision hands
    /// its write over and so must run once; every other change takes `optimistic`.
    fn fresh<R: 'static>(
        &mut self,
        decide: impl FnOnce(&mut Self, &mut Context<Self>) -> ResponseActFuture<Self, R> + 'static,
        ctx: &mut Context<Self>,
    ) -> AtomicResponse<Self, R> {
        self.touch();
        if !self.store.is_shared() {
            return AtomicResponse::new(decide(self, ctx));
        }
        AtomicResponse::new(self.reread_then(decide))
    }

    /// Runs `decide` with nothing else interleaving. On a shared store it decides first on
    /// the cart held here, without reading it: a change it writes is conditional on the
    /// version that decision saw, so a write that lands proves the copy was current (the
    /// common case: one statement, no read). Any other outcome (a refusal, an answer without
    /// a write, a lost condition) may rest on a copy another replica made stale, so the cart
    /// is read and `decide` runs again on it; if that read fails, the answer is `Unavailable`.
    /// A store that failed is answered as it is. A copy whose lock lapsed is read first
    /// (`read_settled`).
    fn optimistic<T: 'static>(
        &mut self,
        decide: impl Fn(&mut Self, &mut Context<Self>) -> ResponseActFuture<Self, Result<T, CartError>>
        + 'static,
        ctx: &mut Context<Self>,
    ) -> AtomicResponse<Self, Result<T, CartError>> {
        AtomicResponse::new(self.optimistic_answer(decide, ctx))
    }

    /// `optimistic` for a shopper's request (create the cart, change a line, lock it for
    /// checkout): an answer `Contended` (the last write lost to another writer's) reaches
    /// the shopper as 503 `overloaded`, and is counted as contended.
    fn optimistic_for_shopper(
        &mut self,
        decide: impl Fn(&mut Self, &mut Context<Self>) -> ResponseActFuture<Self, CartResult> + 'static,
        ctx: &mut Context<Self>,
    ) -> AtomicResponse<Self, CartResult> {
        let answer = self.optimistic_answer(decide, ctx);
        AtomicResponse::new(Box::pin(answer.map(|result, _, _| {
            if matches!(result, Err(CartError::Actor(ActorError::Contended))) {
                metrics::counter!("kassa_contended_total", "entity" => "cart").increment(1);
            }
            result
        })))
    }

    /// What `optimistic` answers, before it is made atomic.
    fn optimistic_answer<T: 'static>(
        &mut self,
        decide: impl Fn(&mut Self, &mut Context<Self>) -> ResponseActFuture<Self, Result<T, CartError>>
        + 'static,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<T, CartError>> {
        self.touch();
        if !self.store.is_shared() {
            return decide(self, ctx);
        }
        // A lock held here may belong to an order that ended without writing the cart (paid
        // while it held the lock). While the lock is live a decision on it refuses, and the
        // refusal is decided again on the cart as read and settled; once it lapsed, the
        // decision would take the cart as unlocked, paid units and all: read it first.
        if let Some(cart) = &self.cart
            && cart.locked_by.is_some()
            && self.live_lock(cart).is_none()
        {
            return self.decide_again(decide);
        }
        // Only a write that lands moves the held version (a lost condition reloads nothing
        // here: the second pass reads the cart).
        let version = self.cart.as_ref().map(|c| c.version);
        Box::pin(decide(self, ctx).then(move |result, act: &mut Self, _| {
            let settled = act.cart.as_ref().map(|c| c.version) != version
                || matches!(result, Err(CartError::Actor(ActorError::Unavailable)));
            if settled {
                Box::pin(fut::ready(result))
            } else {
                act.decide_again(decide)
            }
        }))
    }

    /// The second pass of `optimistic`: reads the cart and runs `decide` on it. The first
    /// answer rested on a copy that may be stale, so if the read fails it is not given as
    /// current: the answer is `Unavailable`.
    fn decide_again<T: 'static>(
        &mut self,
        decide: impl FnOnce(
            &mut Self,
            &mut Context<Self>,
        ) -> ResponseActFuture<Self, Result<T, CartError>>
        + 'static,
    ) -> ResponseActFuture<Self, Result<T, CartError>> {
        let (store, known) = (self.store.clone(), self.ended_lock.clone());
        let id = self.id();
        Box::pin(
            async move { read_settled(&store, id, known).await }
                .into_actor(self)
                .then(move |loaded, act, ctx| match loaded {
                    Ok((cart, ended)) => {
                        (act.cart, act.ended_lock) = (cart, ended);
                        decide(act, ctx)
                    }
                    Err(e) => {
                        tracing::warn!(cart_id = %id, error = %e, "cannot read the cart again");
                        Self::refuse(CartError::Actor(ActorError::Unavailable))
                    }
                }),
        )
    }

    /// Reads the cart, takes it as this actor's state, and runs `decide` on it.
    fn reread_then<R: 'static>(
        &mut self,
        decide: impl FnOnce(&mut Self, &mut Context<Self>) -> ResponseActFuture<Self, R> + 'static,
    ) -> ResponseActFuture<Self, R> {
        let (store, known) = (self.store.clone(), self.ended_lock.clone());
        let id = self.id();
        Box::pin(
            async move { read_settled(&store, id, known).await }
                .into_actor(self)
                .then(move |loaded, act, ctx| {
                    act.unconfirmed = loaded.is_err();
                    match loaded {
                        Ok((cart, ended)) => (act.cart, act.ended_lock) = (cart, ended),
                        // The write stays conditional, so deciding on what we hold is safe.
                        Err(e) => {
                            tracing::warn!(cart_id = %id, error = %e, "cannot refresh the cart")
                        }
                    }
                    decide(act, ctx)
                }),
        )
    }

    /// Persists `next` (conditional on the version we hold), then makes it our state.
    fn write(&mut self, mut next: CartRecord) -> ResponseActFuture<Self, CartResult> {
        let expected = self.cart.as_ref().map_or(0, |c| c.version);
        next.version = expected + 1;
        let store = self.store.clone();
        Box::pin(
            async move {
                let outcome = store.write_cart(&next, expected).await;
                (outcome, next)
            }
            .into_actor(self)
            .map(|(outcome, next), act, ctx| match outcome {
                Ok(WriteOutcome::Applied) => {
                    act.cart = Some(next.clone());
                    Ok(next)
                }
                Ok(WriteOutcome::Conflict) => {
                    metrics::counter!("kassa_store_conflicts_total", "entity" => "cart")
                        .increment(1);
                    // On a shared store `optimistic` reads the cart and decides again.
                    if !act.store.is_shared() {
                        act.load(ctx);
                    }
                    Err(CartError::Actor(ActorError::Contended))
                }
                Err(e) => {
                    tracing::error!(cart_id = %next.id, error = %e, "cart write failed");
                    Err(CartError::Actor(ActorError::Unavailable))
                }
            }),
        )
    }

    fn refuse<T: 'static>(error: CartError) -> ResponseActFuture<Self, Result<T, CartError>> {
        Box::pin(fut::ready(Err(error)))
    }

    fn answer<T: 'static>(value: T) -> ResponseActFuture<Self, Result<T, CartError>> {
        Box::pin(fut::ready(Ok(value)))
    }

    fn touch(&mut self) {
        self.last_active = self.clock.now();
    }
}

/// The decisions, one per message, run by `optimistic` (`GetCart` by `fresh`): on a shared
/// store a decision may run twice, first on the copy held here, then on the stored cart.
impl CartActor {
    fn create(
        &mut self,
        msg: CreateCart,
        _ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, CartResult> {
        // `None` means nothing is stored: CreateCart comes through `Registry::ask_new` with an
        // id just generated, or to an actor that loaded the cart (a retried ask). A shared
        // store may write a new cart unconditionally (scylla), so this must hold.
        match &self.cart {
            Some(existing) if existing.owner == msg.owner => Self::answer(existing.clone()),
            Some(_) => Self::refuse(CartError::AlreadyExists),
            None => {
                let cart = CartRecord {
                    id: self.id(),
                    owner: msg.owner,
                    lines: Vec::new(),
                    locked_by: None,
                    locked_until: None,
                    last_paid_order: None,
                    version: 0,
                };
                self.write(cart)
            }
        }
    }

    fn get(
        &mut self,
        msg: GetCart,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, CartResult> {
        if self.cart.is_none() {
            // No such cart: keep no actor for it (stopping once this answer is out).
            ctx.run_later(std::time::Duration::ZERO, |_, ctx| ctx.stop());
        }
        let cart = match self.owned_by(&msg.user) {
            Ok(cart) => cart,
            Err(e) => return Self::refuse(e),
        };
        // A copy the store could not confirm is not shown as the cart: another replica may
        // have changed it since, or locked it for an order that was then paid, which leaves the
        // lock for the next reader to settle (`read_settled`). Unread, this copy could show
        // the cart with what was paid for still in it.
        if self.unconfirmed {
            return Self::refuse(CartError::Actor(ActorError::Unavailable));
        }
        Self::answer(match self.live_lock(cart) {
            Some(_) => cart.clone(),
            None => Self::without_lock(cart.clone()),
        })
    }

    fn set_line(
        &mut self,
        msg: SetLine,
        _ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, CartResult> {
        let mut next = match self.unlocked_for(&msg.user) {
            Ok(cart) => cart,
            Err(e) => return Self::refuse(e),
        };
        let position = next.lines.iter().position(|l| l.sku == msg.sku);
        if msg.quantity.is_zero() {
            match position {
                Some(i) => {
                    next.lines.remove(i);
                }
                None => return Self::answer(next),
            }
            return self.write(next);
        }
        let others_currency = next
            .lines
            .iter()
            .find(|l| l.sku != msg.sku)
            .map(|l| l.currency);
        if let Some(cart) = others_currency.filter(|c| *c != msg.product.currency) {
            return Self::refuse(CartError::CurrencyMismatch {
                cart,
                line: msg.product.currency,
            });
        }
        let line = CartLine {
            sku: msg.sku,
            name: msg.product.name,
            quantity: msg.quantity.get(),
            unit_price: msg.product.price,
            currency: msg.product.currency,
        };
        match position {
            Some(i) => next.lines[i] = line,
            None if next.lines.len() >= MAX_CART_LINES => {
                return Self::refuse(CartError::Full {
                    max: MAX_CART_LINES,
                });
            }
            None => next.lines.push(line),
        }
        if next.total().is_none_or(|total| total > MAX_TOTAL) {
            return Self::refuse(CartError::TotalTooLarge { max: MAX_TOTAL });
        }
        self.write(next)
    }

    fn remove_line(
        &mut self,
        msg: RemoveLine,
        _ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, CartResult> {
        let mut next = match self.unlocked_for(&msg.user) {
            Ok(cart) => cart,
            Err(e) => return Self::refuse(e),
        };
        let before = next.lines.len();
        next.lines.retain(|l| l.sku != msg.sku);
        if next.lines.len() == before {
            return Self::answer(next);
        }
        self.write(next)
    }

    fn begin_checkout(
        &mut self,
        msg: BeginCheckout,
        _ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, CartResult> {
        let cart = match self.owned_by(&msg.user) {
            Ok(cart) => cart,
            Err(e) => return Self::refuse(e),
        };
        match self.live_lock(cart) {
            Some(holder) if holder == msg.order_id => {
                return Self::answer(cart.clone());
            }
            Some(holder) => return Self::refuse(CartError::Locked { order_id: holder }),
            None => {}
        }
        if cart.lines.is_empty() {
            return Self::refuse(CartError::Empty);
        }
        let mut next = cart.clone();
        next.locked_by = Some(msg.order_id);
        next.locked_until = Some(msg.locked_until);
        self.write(next)
    }

    fn end_checkout(
        &mut self,
        msg: EndCheckout,
        lend: Option<CartLend>,
    ) -> ResponseActFuture<Self, Result<(), CartError>> {
        let Some(cart) = &self.cart else {
            return Self::answer(());
        };
        let mut next = cart.clone();
        if cart.locked_by == Some(msg.order_id) {
            next = Self::without_lock(next);
        }
        // What a paid order bought leaves the cart: all of it when the order held the lock
        // (the lines could not change), and for a late payment only those units, whatever
        // the shopper added since, also while a newer checkout holds the lock (when that
        // one fails, the cart unlocks without what was already paid for).
        if let Some(bought) = &msg.paid {
            next.remove_bought(msg.order_id, bought.iter().map(|(sku, q)| (sku, *q)));
        }
        if &next == cart {
            return Self::answer(());
        }
        match lend.map(|lend| lend.take()) {
            Some(Some(to)) => self.lend(next, to),
            // Lent already (a copy of a retried ask): the order's own write carries it, or the
            // order ends the cart later as an effect. Never written here, where it could come
            // before the order's transition.
            Some(None) => Self::answer(()),
            None => Box::pin(self.write(next).map(|result, _, _| result.map(|_| ()))),
        }
    }

    /// Hands `next` to the order's transaction instead of writing it, and takes it as the
    /// cart's state once the order says it is durable.
    fn lend(
        &mut self,
        mut next: CartRecord,
        to: oneshot::Sender<LentCart>,
    ) -> ResponseActFuture<Self, Result<(), CartError>> {
        let expected_version = self.cart.as_ref().map_or(0, |c| c.version);
        next.version = expected_version + 1;
        let (outcome, written) = oneshot::channel();
        let lent = LentCart {
            write: CartWrite {
                cart: next.clone(),
                expected_version,
            },
            outcome,
        };
        if to.send(lent).is_err() {
            // The order stopped waiting (its ask timed out): it ends the cart later as an
            // effect, once its transition is durable. Not before.
            return Self::answer(());
        }
        Box::pin(
            async move { tokio::time::timeout(LEND_TIMEOUT, written).await }
                .into_actor(self)
                .map(move |outcome, act, ctx| {
                    match outcome {
                        Ok(Ok(LendOutcome::Written)) => act.cart = Some(next),
                        Ok(Ok(LendOutcome::NotWritten)) => {}
                        _ => {
                            tracing::warn!(cart_id = %act.id(), "a lent cart write ended unknown; reading the cart again");
                            act.load(ctx);
                        }
                    }
                    Ok(())
                }),
        )
    }
}

/// Reads cart `id`. On a shared store, a lock whose order has ended is settled as that
/// order's end would have written it (`CartRecord::settle_lock`): an order paid while it held
/// the lock does not write the cart (`OrderRecord::paid_from_pending`), so the lock stays
/// stored until the cart's next change. One more read, only for a locked cart, and only once
/// per order: `known` is the ended order an earlier read found, and the answer carries the
/// one this read settled with, if it ended.
async fn read_settled(
    store: &SharedStore,
    id: CartId,
    known: Option<Arc<OrderRecord>>,
) -> StoreResult<(Option<CartRecord>, Option<Arc<OrderRecord>>)> {
    let Some(mut cart) = store.load_cart(id).await? else {
        return Ok((None, None));
    };
    let Some(order_id) = cart.locked_by.filter(|_| store.is_shared()) else {
        return Ok((Some(cart), None));
    };
    let order = match known.filter(|order| order.id == order_id) {
        Some(order) => Some(order),
        None => store.load_order(order_id).await?.map(Arc::new),
    };
    if let Some(order) = &order {
        cart.settle_lock(order);
    }
    let ended = order.filter(|order| order.left_pending().is_some());
    Ok((Some(cart), ended))
}

impl Actor for CartActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        // A cart id just generated (`Registry::ask_new`) has nothing stored: no read needed.
        if !self.membership.is_new() {
            self.load(ctx);
        }
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.membership.leave(&ctx.address());
        Running::Stop
    }
}

impl Handler<CreateCart> for CartActor {
    type Result = AtomicResponse<Self, CartResult>;

    fn handle(&mut self, msg: CreateCart, ctx: &mut Context<Self>) -> Self::Result {
        self.optimistic_for_shopper(move |act, ctx| act.create(msg.clone(), ctx), ctx)
    }
}

impl Handler<GetCart> for CartActor {
    type Result = AtomicResponse<Self, CartResult>;

    fn handle(&mut self, msg: GetCart, ctx: &mut Context<Self>) -> Self::Result {
        self.fresh(move |act, ctx| act.get(msg, ctx), ctx)
    }
}

impl Handler<SetLine> for CartActor {
    type Result = AtomicResponse<Self, CartResult>;

    fn handle(&mut self, msg: SetLine, ctx: &mut Context<Self>) -> Self::Result {
        self.optimistic_for_shopper(move |act, ctx| act.set_line(msg.clone(), ctx), ctx)
    }
}

impl Handler<RemoveLine> for CartActor {
    type Result = AtomicResponse<Self, CartResult>;

    fn handle(&mut self, msg: RemoveLine, ctx: &mut Context<Self>) -> Self::Result {
        self.optimistic_for_shopper(move |act, ctx| act.remove_line(msg.clone(), ctx), ctx)
    }
}

impl Handler<PassivateIfIdle> for CartActor {
    type Result = ();

    fn handle(&mut self, _: PassivateIfIdle, ctx: &mut Context<Self>) {
        if self.clock.now() - self.last_active >= self.settings.idle_after {
            ctx.stop();
        }
    }
}

impl Handler<Evict> for CartActor {
    type Result = ();

    /// Handled between messages (every cart write is atomic in the mailbox), so nothing
    /// of this cart is in flight.
    fn handle(&mut self, _: Evict, ctx: &mut Context<Self>) {
        if self.clock.now() - self.last_active >= self.settings.evict_after {
            ctx.stop();
        }
    }
}

impl Handler<BeginCheckout> for CartActor {
    type Result = AtomicResponse<Self, CartResult>;

    fn handle(&mut self, msg: BeginCheckout, ctx: &mut Context<Self>) -> Self::Result {
        self.optimistic_for_shopper(move |act, ctx| act.begin_checkout(msg.clone(), ctx), ctx)
    }
}

impl Handler<EndCheckout> for CartActor {
    type Result = AtomicResponse<Self, Result<(), CartError>>;

    fn handle(&mut self, msg: EndCheckout, ctx: &mut Context<Self>) -> Self::Result {
        self.optimistic(move |act, _| act.end_checkout(msg.clone(), None), ctx)
    }
}

impl Handler<LendEndCheckout> for CartActor {
    type Result = AtomicResponse<Self, Result<(), CartError>>;

    fn handle(&mut self, msg: LendEndCheckout, ctx: &mut Context<Self>) -> Self::Result {
        self.fresh(move |act, _| act.end_checkout(msg.end, Some(msg.lend)), ctx)
    }
}
