//! ProductActor: one per SKU, the single writer of that SKU's catalog entry and stock.
//! Decisions (reserve, commit, release) are made one at a time against its state; while one
//! store write is in flight, new commands queue and the next write carries them all (group
//! commit), so a hot SKU costs one durable write per batch. Never answers before durable.

use crate::backoff::{self, Jitter};
use crate::clock::SharedClock;
use crate::domain::{Currency, OrderId, ProductInfo, Sku};
use crate::registry::{Evict, KeyedActor, Membership, PassivateIfIdle};
use crate::store::{
    ProductRow, ProductSnapshot, ProductWrite, Reservation, Settlement, SharedStore, WriteOutcome,
};
use crate::{ActorError, ActorSettings};
use actix::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// The first conflict retry waits up to this long (full jitter); each further one doubles it.
const RETRY_BACKOFF_BASE: Duration = Duration::from_millis(4);
/// No conflict retry waits longer than this.
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Most orders one passivation tick looks up for suspected lost reservations.
const MAX_LOST_CHECKS: usize = 64;

/// What the catalog shows for a SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductView {
    pub sku: Sku,
    pub info: ProductInfo,
    pub on_hand: i64,
    pub reserved: i64,
    /// on hand - reserved, never below zero.
    pub available: i64,
}

#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<ProductView>, ActorError>")]
pub struct GetProduct;

/// Creates or replaces the catalog entry; `stock` sets the on-hand units.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<ProductView, ActorError>")]
pub struct UpsertProduct {
    pub info: ProductInfo,
    pub stock: i64,
}

/// Changes only the given fields of a product in the catalog (a price edit leaves the stock
/// as it is). Answers the product as it then is, or `None` when the SKU is not in the catalog.
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "Result<Option<ProductView>, ActorError>")]
pub struct UpdateProduct {
    pub name: Option<String>,
    pub price: Option<i64>,
    pub currency: Option<crate::domain::Currency>,
    /// Sets the on-hand units.
    pub stock: Option<i64>,
}

/// Takes the SKU out of the catalog; live reservations still settle. Answers whether it was
/// in the catalog.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, ActorError>")]
pub struct DeleteProduct;

/// Holds `qty` units for `order_id` until `expires_at`. Idempotent per order.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<ReserveOutcome, ActorError>")]
pub struct Reserve {
    pub order_id: OrderId,
    pub qty: u32,
    pub expires_at: OffsetDateTime,
    /// The price the shopper saw; `None` skips the catalog checks (re-reserving for a paid
    /// order, whose price is already settled).
    pub expected_price: Option<(i64, Currency)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved,
    InsufficientStock {
        available: i64,
    },
    UnknownProduct,
    PriceChanged {
        current: i64,
        currency: Currency,
        available: i64,
    },
}

/// Turns the order's reservation into a permanent stock decrement. Idempotent.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<CommitOutcome, ActorError>")]
pub struct Commit {
    pub order_id: OrderId,
}

/// `Commit`, with the order's transition written in the same transaction as the commit
/// (`Store::write_product_with`; only on a store that `writes_settlements`). Answered
/// `Committed` once the commit and the settlement are durable; any other outcome wrote
/// nothing of the settlement. Settlements queued together share the SKU's write.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<CommitOutcome, ActorError>")]
pub struct CommitSettling {
    pub order_id: OrderId,
    pub settlement: Box<Settlement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    AlreadyCommitted,
    /// No reservation for the order (released, expired, or never made).
    NotReserved,
}

/// Gives the order's reserved units back. Idempotent; a committed sale is never undone.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<ReleaseOutcome, ActorError>")]
pub struct Release {
    pub order_id: OrderId,
}

/// `Release`, with the order's transition written in the same transaction (as
/// `CommitSettling`): answered `Released` once both are durable; any other outcome wrote
/// nothing of the settlement.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<ReleaseOutcome, ActorError>")]
pub struct ReleaseSettling {
    pub order_id: OrderId,
    pub settlement: Box<Settlement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    Released,
    NotReserved,
    AlreadyCommitted,
}

#[derive(Debug, Clone)]
enum Command {
    Upsert(UpsertProduct),
    Update(UpdateProduct),
    Delete,
    Reserve(Reserve),
    /// With the settlement to write along, if any.
    Commit(Commit, Option<Box<Settlement>>),
    Release(Release, Option<Box<Settlement>>),
    /// Drops reservations nobody settled long after they expired, those of `lost` orders
    /// (found not stored) soon after they expired, and committed markers past their
    /// retention.
    Sweep {
        lost: Vec<OrderId>,
    },
}

#[derive(Debug)]
enum Reply {
    View(ProductView),
    Updated(Option<ProductView>),
    Deleted(bool),
    Reserve(ReserveOutcome),
    Commit(CommitOutcome),
    Release(ReleaseOutcome),
    Swept,
}

struct Queued {
    command: Command,
    reply: oneshot::Sender<Result<Reply, ActorError>>,
    attempts: u32,
    /// `ProductActor::refreshed` when the command arrived.
    since: u64,
}

/// One SKU's state as last loaded or written.
#[derive(Debug, Clone, Default)]
struct Stock {
    row: Option<ProductRow>,
    reservations: BTreeMap<OrderId, Reservation>,
    /// Units held by uncommitted reservations, kept in step with `reservations` so a
    /// decision never scans them (a hot SKU keeps thousands of committed markers).
    reserved: i64,
}

/// The view of a product as stored: what a freshly started actor would answer. For readers
/// on a store other processes write, where a live actor's copy may predate their writes.
pub fn view_of(sku: &Sku, snapshot: Option<ProductSnapshot>) -> Option<ProductView> {
    Stock::from_snapshot(snapshot).view(sku)
}

impl Stock {
    fn from_snapshot(snapshot: Option<ProductSnapshot>) -> Self {
        match snapshot {
            None => Self::default(),
            Some(s) => {
                let reservations: BTreeMap<OrderId, Reservation> = s
                    .reservations
                    .into_iter()
                    .map(|r| (r.order_id, r))
                    .collect();
                let reserved = reservations
                    .values()
                    .filter(|r| !r.committed)
                    .map(|r| i64::from(r.qty))
                    .sum();
                Self {
                    row: Some(s.row),
                    reservations,
                    reserved,
                }
            }
        }
    }

    fn version(&self) -> u64 {
        self.row.as_ref().map_or(0, |r| r.version)
    }

    fn on_hand(&self) -> i64 {
        self.row.as_ref().map_or(0, |r| r.on_hand)
    }

    fn reserved(&self) -> i64 {
        self.reserved
    }

    fn available(&self) -> i64 {
        (self.on_hand() - self.reserved()).max(0)
    }

    fn view(&self, sku: &Sku) -> Option<ProductView> {
        let info = self.row.as_ref()?.info.clone()?;
        let reserved = self.reserved();
        Some(ProductView {
            sku: sku.clone(),
            info,
            on_hand: self.on_hand(),
            reserved,
            available: (self.on_hand() - reserved).max(0),
        })
    }
}

/// The changes one batch makes, turned into one conditional store write.
#[derive(Default)]
struct Changes {
    row_changed: bool,
    put: BTreeMap<OrderId, Reservation>,
    remove: BTreeSet<OrderId>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        !self.row_changed && self.put.is_empty() && self.remove.is_empty()
    }

    fn put(&mut self, r: Reservation) {
        self.remove.remove(&r.order_id);
        self.put.insert(r.order_id, r);
    }

    fn remove(&mut self, id: OrderId) {
        self.put.remove(&id);
        self.remove.insert(id);
    }
}

/// Applies one command to `stock` (in place), recording what changed. Pure domain logic.
fn decide(
    sku: &Sku,
    stock: &mut Stock,
    command: &Command,
    now: OffsetDateTime,
    settings: &ActorSettings,
    changes: &mut Changes,
) -> Result<Reply, ActorError> {
    match command {
        Command::Upsert(u) => {
            let version = stock.version();
            stock.row = Some(ProductRow {
                info: Some(u.info.clone()),
                on_hand: u.stock,
                version,
            });
            changes.row_changed = true;
            stock
                .view(sku)
                .map(Reply::View)
                .ok_or(ActorError::Unavailable)
        }
        Command::Update(u) => {
            let Some(row) = stock.row.as_mut() else {
                return Ok(Reply::Updated(None));
            };
            let Some(info) = row.info.as_mut() else {
                return Ok(Reply::Updated(None));
            };
            if let Some(name) = u.name.clone() {
                info.name = name;
            }
            if let Some(price) = u.price {
                info.price = price;
            }
            if let Some(currency) = u.currency {
                info.currency = currency;
            }
            if let Some(on_hand) = u.stock {
                row.on_hand = on_hand;
            }
            changes.row_changed = true;
            Ok(Reply::Updated(stock.view(sku)))
        }
        Command::Delete => {
            let listed = stock.row.as_ref().is_some_and(|r| r.info.is_some());
            if let Some(row) = stock.row.as_mut().filter(|_| listed) {
                row.info = None;
                changes.row_changed = true;
            }
            Ok(Reply::Deleted(listed))
        }
        Command::Reserve(r) => {
            if stock.reservations.contains_key(&r.order_id) {
                return Ok(Reply::Reserve(ReserveOutcome::Reserved));
            }
            if let Some((price, currency)) = r.expected_price {
                match stock.row.as_ref().and_then(|row| row.info.as_ref()) {
                    None => return Ok(Reply::Reserve(ReserveOutcome::UnknownProduct)),
                    Some(info) if info.price != price || info.currency != currency => {
                        return Ok(Reply::Reserve(ReserveOutcome::PriceChanged {
                            current: info.price,
                            currency: info.currency,
                            available: stock.available(),
                        }));
                    }
                    Some(_) => {}
                }
            }
            let available = stock.available();
            if available < i64::from(r.qty) || stock.row.is_none() {
                return Ok(Reply::Reserve(ReserveOutcome::InsufficientStock {
                    available,
                }));
            }
            let reservation = Reservation {
                order_id: r.order_id,
                qty: r.qty,
                expires_at: r.expires_at,
                committed: false,
            };
            stock.reservations.insert(r.order_id, reservation.clone());
            stock.reserved += i64::from(r.qty);
            changes.put(reservation);
            Ok(Reply::Reserve(ReserveOutcome::Reserved))
        }
        Command::Commit(c, _) => {
            let Some(reservation) = stock.reservations.get_mut(&c.order_id) else {
                return Ok(Reply::Commit(CommitOutcome::NotReserved));
            };
            if reservation.committed {
                return Ok(Reply::Commit(CommitOutcome::AlreadyCommitted));
            }
            reservation.committed = true;
            // Keep the marker until its retention passes, so a replay is recognised.
            reservation.expires_at = now + settings.committed_retention;
            let qty = i64::from(reservation.qty);
            let marker = reservation.clone();
            stock.reserved -= qty;
            if let Some(row) = stock.row.as_mut() {
                row.on_hand -= qty;
            }
            changes.row_changed = true;
            changes.put(marker);
            Ok(Reply::Commit(CommitOutcome::Committed))
        }
        Command::Release(r, _) => match stock.reservations.get(&r.order_id) {
            None => Ok(Reply::Release(ReleaseOutcome::NotReserved)),
            Some(res) if res.committed => Ok(Reply::Release(ReleaseOutcome::AlreadyCommitted)),
            Some(res) => {
                stock.reserved -= i64::from(res.qty);
                stock.reservations.remove(&r.order_id);
                changes.remove(r.order_id);
                Ok(Reply::Release(ReleaseOutcome::Released))
            }
        },
        Command::Sweep { lost } => {
            let stale: Vec<OrderId> = stock
                .reservations
                .values()
                .filter(|r| {
                    let deadline = if r.committed {
                        r.expires_at
                    } else if lost.contains(&r.order_id) {
                        r.expires_at + settings.lost_order_grace
                    } else {
                        r.expires_at + settings.orphan_grace
                    };
                    deadline <= now
                })
                .map(|r| r.order_id)
                .collect();
            for id in stale {
                if let Some(orphan) = stock.reservations.remove(&id).filter(|r| !r.committed) {
                    stock.reserved -= i64::from(orphan.qty);
                    metrics::counter!("kassa_reservations_orphaned_total").increment(1);
                }
                changes.remove(id);
            }
            Ok(Reply::Swept)
        }
    }
}

pub struct ProductActor {
    membership: Membership<ProductActor>,
    store: SharedStore,
    clock: SharedClock,
    settings: ActorSettings,
    stock: Stock,
    queue: Vec<Queued>,
    writing: bool,
    /// Whether the stored version is being read to confirm answers that write nothing.
    confirming: bool,
    /// How often `stock` was brought up to date with the store (loads, applied writes and
    /// confirmations of its version). An answer that writes nothing is given only on a state
    /// refreshed after its command arrived: no condition checks it, and another replica may
    /// have changed the SKU.
    refreshed: u64,
    /// While a write is in flight, `stock` already holds its undurable changes; reads answer
    /// from this view of the state before the write instead.
    durable_view: Option<ProductView>,
    last_active: OffsetDateTime,
    /// Whether the orders of suspected lost reservations are being looked up.
    checking_lost: bool,
    /// Orders of reservations found stored by such a look-up (not looked up again).
    orders_found: BTreeSet<OrderId>,
    /// When the last batch was decided: commits alone wait for company until the linger
    /// has passed since then (`ActorSettings::commit_linger`); on a SKU quiet for longer they
    /// are written at once (nothing would come along to share their write).
    last_flush: Option<tokio::time::Instant>,
    /// Whether a flush is scheduled for the end of the linger.
    linger_timer: bool,
}

impl KeyedActor for ProductActor {
    type Key = Sku;
    const KIND: &'static str = "product";
}

impl ProductActor {
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
            stock: Stock::default(),
            queue: Vec::new(),
            writing: false,
            confirming: false,
            refreshed: 0,
            durable_view: None,
            last_active,
            checking_lost: false,
            orders_found: BTreeSet::new(),
            last_flush: None,
            linger_timer: false,
        }
    }

    fn sku(&self) -> &Sku {
        self.membership.key()
    }

    /// Loads the SKU's state after `delay`; no message is handled until it is in. With
    /// `then_flush`, the queued commands are decided as soon as the fresh state is in (and
    /// not before: actix polls `ctx.wait` futures last-in first-out, so a separate wait
    /// queued after this one would run first, against the stale state).
    fn load(&mut self, ctx: &mut Context<Self>, then_flush: bool, delay: Duration) {
        let store = self.store.clone();
        let sku = self.sku().clone();
        ctx.wait(
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                store.load_product(&sku).await
            }
            .into_actor(self)
            .map(move |loaded, act, ctx| match loaded {
                Ok(snapshot) => {
                    act.stock = Stock::from_snapshot(snapshot);
                    act.refreshed += 1;
                    if then_flush {
                        act.flush(ctx);
                    }
                }
                Err(e) => {
                    tracing::error!(sku = %act.sku(), error = %e, "cannot load product; stopping");
                    act.fail_queue(ActorError::Unavailable);
                    ctx.stop();
                }
            }),
        );
    }

    fn enqueue<T: Send + 'static>(
        &mut self,
        command: Command,
        ctx: &mut Context<Self>,
        unwrap: fn(Reply) -> Option<T>,
    ) -> ResponseFuture<Result<T, ActorError>> {
        self.last_active = self.clock.now();
        let (reply, answer) = oneshot::channel();
        self.queue.push(Queued {
            command,
            reply,
            attempts: 0,
            since: self.refreshed,
        });
        self.flush(ctx);
        Box::pin(async move {
            match answer.await {
                Ok(Ok(reply)) => unwrap(reply).ok_or(ActorError::Unavailable),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ActorError::Unavailable),
            }
        })
    }

    /// Decides every queued command and writes their changes as one conditional write.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.confirming || self.queue.is_empty() || self.lingers(ctx) {
            return;
        }
        self.last_flush = Some(tokio::time::Instant::now());
        let batch = std::mem::take(&mut self.queue);
        let now = self.clock.now();
        let expected_version = self.stock.version();
        let durable_view = self.stock.view(self.sku());
        let mut changes = Changes::default();
        let mut decided = Vec::with_capacity(batch.len());
        for queued in batch {
            let sku = self.membership.key().clone();
            let reply = decide(
                &sku,
                &mut self.stock,
                &queued.command,
                now,
                &self.settings,
                &mut changes,
            );
            decided.push((queued, reply));
        }
        if changes.is_empty() {
            if self.store.is_shared()
                && decided
                    .iter()
                    .any(|(queued, _)| queued.since >= self.refreshed)
            {
                // Nothing to write means no condition checks these answers, and the state may
                // predate a reservation another replica made or released since: confirm it is
                // current before answering. `decide` changed nothing in `stock`.
                self.confirm_then_answer(decided, ctx);
                return;
            }
            for (queued, reply) in decided {
                let _ = queued.reply.send(reply);
            }
            return;
        }
        let row = match self.stock.row.as_mut() {
            Some(row) => {
                row.version = expected_version + 1;
                row.clone()
            }
            None => {
                let row = ProductRow {
                    info: None,
                    on_hand: 0,
                    version: expected_version + 1,
                };
                self.stock.row = Some(row.clone());
                row
            }
        };
        metrics::histogram!("kassa_product_batch_size").record(decided.len() as f64);
        // A settlement goes along only with a commit that changed something; any other
        // answer tells its order that nothing of it was written.
        let mut settlements = Vec::new();
        let mut carried = Vec::with_capacity(decided.len());
        for (queued, reply) in &mut decided {
            let settlement = match (&mut queued.command, reply) {
                (Command::Commit(_, settlement), Ok(Reply::Commit(CommitOutcome::Committed)))
                | (Command::Release(_, settlement), Ok(Reply::Release(ReleaseOutcome::Released))) => {
                    settlement.take()
                }
                _ => None,
            };
            carried.push(settlement.is_some());
            settlements.extend(settlement.map(|s| *s));
        }
        let write = ProductWrite {
            sku: self.sku().clone(),
            expected_version,
            row,
            put_reservations: changes.put.into_values().collect(),
            remove_reservations: changes.remove.into_iter().collect(),
        };
        self.writing = true;
        self.durable_view = durable_view;
        let store = self.store.clone();
        ctx.spawn(
            async move {
                if settlements.is_empty() {
                    store.write_product(write).await
                } else {
                    store.write_product_with(write, settlements).await
                }
            }
            .into_actor(self)
            .map(move |written, act, ctx| {
                act.writing = false;
                match written {
                    Ok(WriteOutcome::Applied) => {
                        act.refreshed += 1;
                        for (queued, reply) in decided {
                            let _ = queued.reply.send(reply);
                        }
                        act.flush(ctx);
                    }
                    Ok(WriteOutcome::Conflict) => {
                        metrics::counter!("kassa_store_conflicts_total", "entity" => "product")
                            .increment(1);
                        // A settlement's order or cart moved meanwhile: its order decides
                        // again from the stored state; the rest is retried without it.
                        let mut retry = Vec::with_capacity(decided.len());
                        for ((queued, reply), carried) in decided.into_iter().zip(carried) {
                            if carried {
                                let _ = queued.reply.send(Err(ActorError::Contended));
                            } else {
                                retry.push((queued, reply));
                            }
                        }
                        act.retry_after_reload(retry, ctx);
                    }
                    Err(e) => {
                        tracing::error!(sku = %act.sku(), error = %e, "product write failed");
                        for (queued, _) in decided {
                            let _ = queued.reply.send(Err(ActorError::Unavailable));
                        }
                        act.reload_then_flush(ctx);
                    }
                }
            }),
        );
    }

    /// Whether the queue waits for company: on a shared store, commits alone (a paid order's
    /// units becoming sold; nobody waits on them but the order's effects) are held until
    /// `commit_linger` has passed since the SKU's last write, so that they ride along with
    /// its next reservation or release, or with each other, instead of taking a conditional
    /// write each. Anything else queued flushes them at once; so does the linger's end. A
    /// quiet SKU's commit is written at once: the order's next message (the shopper's return
    /// from paying) waits for its effects.
    fn lingers(&mut self, ctx: &mut Context<Self>) -> bool {
        let commits_alone = self
            .queue
            .iter()
            .all(|q| q.attempts == 0 && matches!(q.command, Command::Commit(_, None)));
        let left = self.last_flush.map_or(Duration::ZERO, |at| {
            (at + self.settings.commit_linger)
                .saturating_duration_since(tokio::time::Instant::now())
        });
        if left.is_zero() || !self.store.is_shared() || !commits_alone {
            return false;
        }
        if !self.linger_timer {
            self.linger_timer = true;
            ctx.run_later(left, |act, ctx| {
                act.linger_timer = false;
                act.flush(ctx);
            });
        }
        true
    }

    /// Answers `decided` (which wrote nothing) once the stored version is found to be the one
    /// they were decided on: one row read, not the whole partition, so a sold-out SKU answers
    /// its late shoppers in batches at the pace of that read. Commands arriving meanwhile
    /// queue for the next confirmation. A changed version reloads and decides them again.
    fn confirm_then_answer(
        &mut self,
        decided: Vec<(Queued, Result<Reply, ActorError>)>,
        ctx: &mut Context<Self>,
    ) {
        self.confirming = true;
        // Commands queued from now on arrive after the read may have been made.
        self.refreshed += 1;
        let decided_on = self.stock.version();
        let (store, sku) = (self.store.clone(), self.sku().clone());
        ctx.spawn(
            async move { store.product_version(&sku).await }
                .into_actor(self)
                .map(move |stored, act, ctx| {
                    act.confirming = false;
                    if matches!(stored, Ok(v) if v.unwrap_or(0) == decided_on) {
                        for (queued, reply) in decided {
                            let _ = queued.reply.send(reply);
                        }
                        act.flush(ctx);
                        return;
                    }
                    let mut queue: Vec<Queued> =
                        decided.into_iter().map(|(queued, _)| queued).collect();
                    queue.append(&mut act.queue);
                    act.queue = queue;
                    act.reload_then_flush(ctx);
                }),
        );
    }

    /// Another writer changed the SKU: reload, then decide the same commands again (bounded).
    fn retry_after_reload(
        &mut self,
        decided: Vec<(Queued, Result<Reply, ActorError>)>,
        ctx: &mut Context<Self>,
    ) {
        let mut retry = Vec::new();
        let mut given_up = 0;
        for (mut queued, _) in decided {
            queued.attempts += 1;
            if queued.attempts > self.settings.max_conflict_retries {
                let _ = queued.reply.send(Err(ActorError::Contended));
                given_up += 1;
            } else {
                retry.push(queued);
            }
        }
        if given_up > 0 {
            tracing::warn!(sku = %self.sku(), commands = given_up,
                attempts = self.settings.max_conflict_retries + 1,
                "other writers kept changing the SKU; commands answered as contended");
            metrics::counter!("kassa_contended_total", "entity" => "product").increment(given_up);
        }
        // Another replica's write won: wait a jittered, growing moment before reloading, so
        // that replicas contending for one SKU stop colliding in lockstep.
        let attempt = retry.iter().map(|q| q.attempts).max().unwrap_or(0);
        metrics::counter!("kassa_lwt_retries_total", "entity" => "product")
            .increment(retry.len() as u64);
        retry.append(&mut self.queue);
        self.queue = retry;
        self.load(ctx, true, conflict_backoff(attempt));
    }

    fn reload_then_flush(&mut self, ctx: &mut Context<Self>) {
        self.load(ctx, true, Duration::ZERO);
    }

    fn fail_queue(&mut self, error: ActorError) {
        for queued in self.queue.drain(..) {
            let _ = queued.reply.send(Err(error));
        }
    }

    /// Unsettled reservations expired more than `lost_order_grace` ago and not yet past
    /// `orphan_grace`: their orders are looked up, and those not stored are swept.
    fn suspected_lost(&self, now: OffsetDateTime) -> Vec<OrderId> {
        self.stock
            .reservations
            .values()
            .filter(|r| {
                !r.committed
                    && !self.orders_found.contains(&r.order_id)
                    && r.expires_at + self.settings.lost_order_grace <= now
                    && now < r.expires_at + self.settings.orphan_grace
            })
            .map(|r| r.order_id)
            .take(MAX_LOST_CHECKS)
            .collect()
    }

    /// Looks up the orders of `suspects` in the store and sweeps the reservations of those
    /// not stored. A failed look-up counts as stored (the hour's grace still applies).
    fn check_lost_orders(&mut self, suspects: Vec<OrderId>, ctx: &mut Context<Self>) {
        self.checking_lost = true;
        let store = self.store.clone();
        let lookups = async move {
            let (mut lost, mut found) = (Vec::new(), Vec::new());
            for id in suspects {
                match store.load_order(id).await {
                    Ok(None) => lost.push(id),
                    Ok(Some(_)) => found.push(id),
                    Err(_) => {}
                }
            }
            (lost, found)
        };
        ctx.spawn(lookups.into_actor(self).map(|(lost, found), act, ctx| {
            act.checking_lost = false;
            act.orders_found.extend(found);
            if lost.is_empty() {
                return;
            }
            tracing::warn!(sku = %act.sku(), orders = lost.len(), "reservations of checkouts that never wrote their order are released");
            let (reply, _) = oneshot::channel();
            act.queue.push(Queued {
                command: Command::Sweep { lost },
                reply,
                attempts: 0,
                since: act.refreshed,
            });
            act.flush(ctx);
        }));
    }

    fn has_stale_reservations(&self, now: OffsetDateTime) -> bool {
        self.stock.reservations.values().any(|r| {
            let deadline = if r.committed {
                r.expires_at
            } else {
                r.expires_at + self.settings.orphan_grace
            };
            deadline <= now
        })
    }
}

/// How long to wait before retrying after the `attempt`-th conflict: uniformly random up to
/// a cap that doubles per attempt ("full jitter").
fn conflict_backoff(attempt: u32) -> Duration {
    backoff::wait(RETRY_BACKOFF_BASE, RETRY_BACKOFF_MAX, attempt, Jitter::Full)
}

impl Actor for ProductActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        self.load(ctx, false, Duration::ZERO);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.membership.leave(&ctx.address());
        Running::Stop
    }
}

impl Handler<GetProduct> for ProductActor {
    type Result = Result<Option<ProductView>, ActorError>;

    fn handle(&mut self, _: GetProduct, ctx: &mut Context<Self>) -> Self::Result {
        self.last_active = self.clock.now();
        if self.writing {
            return Ok(self.durable_view.clone());
        }
        if self.stock.row.is_none() && self.queue.is_empty() {
            // Nothing stored for this SKU: keep no actor for it, so lookups of unknown SKUs
            // (typos, scrapers) cost no memory.
            ctx.stop();
        }
        Ok(self.stock.view(self.sku()))
    }
}

macro_rules! queued_handler {
    ($msg:ty, $out:ty, $variant:ident, $command:expr) => {
        impl Handler<$msg> for ProductActor {
            type Result = ResponseFuture<Result<$out, ActorError>>;

            fn handle(&mut self, msg: $msg, ctx: &mut Context<Self>) -> Self::Result {
                #[allow(clippy::redundant_closure_call)]
                let command = ($command)(msg);
                self.enqueue(command, ctx, |reply| match reply {
                    Reply::$variant(v) => Some(v),
                    _ => None,
                })
            }
        }
    };
}

queued_handler!(UpsertProduct, ProductView, View, Command::Upsert);
queued_handler!(UpdateProduct, Option<ProductView>, Updated, Command::Update);
queued_handler!(DeleteProduct, bool, Deleted, |_| Command::Delete);
queued_handler!(Reserve, ReserveOutcome, Reserve, Command::Reserve);
queued_handler!(Commit, CommitOutcome, Commit, |c| Command::Commit(c, None));
queued_handler!(
    CommitSettling,
    CommitOutcome,
    Commit,
    |c: CommitSettling| {
        Command::Commit(
            Commit {
                order_id: c.order_id,
            },
            Some(c.settlement),
        )
    }
);
queued_handler!(Release, ReleaseOutcome, Release, |r| Command::Release(
    r, None
));
queued_handler!(
    ReleaseSettling,
    ReleaseOutcome,
    Release,
    |r: ReleaseSettling| {
        Command::Release(
            Release {
                order_id: r.order_id,
            },
            Some(r.settlement),
        )
    }
);

impl Handler<PassivateIfIdle> for ProductActor {
    type Result = ();

    fn handle(&mut self, _: PassivateIfIdle, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let suspects = self.suspected_lost(now);
        if !suspects.is_empty() && !self.checking_lost {
            self.check_lost_orders(suspects, ctx);
        }
        if self.checking_lost {
            // Stays live until the look-ups answer (stopping would drop them).
            return;
        }
        if self.has_stale_reservations(now) {
            let (reply, _) = oneshot::channel();
            self.queue.push(Queued {
                command: Command::Sweep { lost: Vec::new() },
                reply,
                attempts: 0,
                since: self.refreshed,
            });
            self.flush(ctx);
            return;
        }
        let idle = now - self.last_active >= self.settings.idle_after;
        if idle && !self.writing && !self.confirming && self.queue.is_empty() {
            ctx.stop();
        }
    }
}

impl Handler<Evict> for ProductActor {
    type Result = ();

    fn handle(&mut self, _: Evict, ctx: &mut Context<Self>) {
        let idle = self.clock.now() - self.last_active >= self.settings.evict_after;
        if idle && !self.writing && !self.confirming && self.queue.is_empty() {
            ctx.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_backoff_is_jittered_growing_and_capped() {
        for _ in 0..100 {
            assert!(conflict_backoff(1) <= RETRY_BACKOFF_BASE);
            assert!(conflict_backoff(3) <= RETRY_BACKOFF_BASE * 4);
            assert!(conflict_backoff(u32::MAX) <= RETRY_BACKOFF_MAX);
        }
        let spread: BTreeSet<Duration> = (0..50).map(|_| conflict_backoff(6)).collect();
        assert!(spread.len() > 1, "two replicas must not retry in lockstep");
    }
}
