//! The embedded `Store` on redb: owns `kassa.redb` in the data directory and the one writer
//! thread that group-commits every write (many callers' writes, one transaction, one fsync).
//! It must never acknowledge a write before its transaction committed durably, and never write
//! a record without first checking its stored version in the same transaction.

use async_trait::async_trait;
use kassa_actors::domain::{CartId, OrderId, Sku, UserId};
use kassa_actors::idempotency::{Decision, HeldClaim, decide};
use kassa_actors::store::{
    CartRecord, CheckoutSession, IdempotencyClaim, IdempotencyRequest, OrderRecord, OutboxEmail,
    ProductRow, ProductSnapshot, ProductWrite, Reservation, Settlement, Store, StoreError,
    StoreResult, StoredResponse, WriteOutcome,
};
use puts::{CartPut, EmailPut, OrderPut, ProductPut};
use redb::{
    ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use writer::{Handle, Job, QUEUE_CAPACITY, TypedJob, open_file, run_prober, run_writer};

mod puts;
mod writer;

/// sku -> JSON `ProductRow`.
const PRODUCTS: TableDefinition<&str, &[u8]> = TableDefinition::new("products");
/// (sku, order uuid) -> JSON `Reservation`; one SKU's reservations are one range scan.
const RESERVATIONS: TableDefinition<(&str, u128), &[u8]> = TableDefinition::new("reservations");
/// cart uuid -> JSON `CartRecord`.
const CARTS: TableDefinition<u128, &[u8]> = TableDefinition::new("carts");
/// order uuid -> JSON `OrderRecord`.
const ORDERS: TableDefinition<u128, &[u8]> = TableDefinition::new("orders");
/// (user, order uuid) -> (): one user's orders, newest last (ids are UUIDv7).
const USER_ORDERS: TableDefinition<(&str, u128), ()> = TableDefinition::new("user_orders");
/// order uuid -> (), present iff the stored order `is_active()`.
const ACTIVE_ORDERS: TableDefinition<u128, ()> = TableDefinition::new("active_orders");
/// (user, key) -> JSON `IdempotencyRow`.
const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency");
/// (unix seconds of `created_at`, user, key) for every row of `idempotency`, oldest first:
/// what the purge deletes without reading the whole table.
const IDEMPOTENCY_BY_AGE: TableDefinition<(i64, &str, &str), ()> =
    TableDefinition::new("idempotency_by_age");
/// order uuid -> JSON `OutboxEmail`.
const OUTBOX: TableDefinition<(u128, u8), &[u8]> = TableDefinition::new("outbox");
/// (order uuid, email kind) -> (), present iff the outbox entry is unsent.
const OUTBOX_UNSENT: TableDefinition<(u128, u8), ()> = TableDefinition::new("outbox_unsent");

/// cart id -> the order locking it: every locked cart, for crash recovery at start-up.
const LOCKED_CARTS: TableDefinition<u128, u128> = TableDefinition::new("locked_carts");
/// (user, key) of every idempotency claim still in progress, for crash recovery at start-up.
const IDEMPOTENCY_UNFINISHED: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("idempotency_unfinished");
/// session id -> JSON `CheckoutSession`.
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkout_sessions");

const FILE_NAME: &str = "kassa.redb";

/// Waits for an `EmbeddedStore`'s file to be closed: the store dropped by whoever held it
/// last, its writer done and every read finished.
pub struct CloseWaiter(std::sync::mpsc::Receiver<()>);

impl CloseWaiter {
    /// Blocks until the file is closed or `limit` has passed; answers whether it closed.
    pub fn wait(self, limit: std::time::Duration) -> bool {
        matches!(
            self.0.recv_timeout(limit),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        )
    }
}

/// A durable `Store` in one redb file, with group commit.
pub struct EmbeddedStore {
    db: Arc<Handle>,
    path: PathBuf,
    /// `None` once shut down.
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    writer: Option<JoinHandle<()>>,
    close_waiter: std::sync::Mutex<Option<CloseWaiter>>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) `dir/kassa.redb` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(FILE_NAME);
        let db = open_file(&path)?;
        // Create every table up front so that reads never meet a missing table.
        let txn = db.begin_write().map_err(db_err)?;
        let existing: Vec<String> = txn
            .list_tables()
            .map_err(db_err)?
            .map(|t| t.name().to_string())
            .collect();
        let is_new = |table: &str| !existing.iter().any(|name| name == table);
        let (index_locks, index_unfinished) = (
            is_new(LOCKED_CARTS.name()),
            is_new(IDEMPOTENCY_UNFINISHED.name()),
        );
        txn.open_table(PRODUCTS).map_err(db_err)?;
        txn.open_table(RESERVATIONS).map_err(db_err)?;
        txn.open_table(CARTS).map_err(db_err)?;
        txn.open_table(ORDERS).map_err(db_err)?;
        txn.open_table(USER_ORDERS).map_err(db_err)?;
        txn.open_table(ACTIVE_ORDERS).map_err(db_err)?;
        txn.open_table(IDEMPOTENCY).map_err(db_err)?;
        txn.open_table(OUTBOX).map_err(db_err)?;
        txn.open_table(OUTBOX_UNSENT).map_err(db_err)?;
        txn.open_table(SESSIONS).map_err(db_err)?;
        txn.open_table(LOCKED_CARTS).map_err(db_err)?;
        txn.open_table(IDEMPOTENCY_UNFINISHED).map_err(db_err)?;
        index_idempotency_keys(&txn)?;
        // A database written before these indexes existed gets them built once.
        if index_locks {
            index_locked_carts(&txn)?;
        }
        if index_unfinished {
            index_unfinished_claims(&txn)?;
        }
        txn.commit().map_err(db_err)?;

        let (closed, close_waiter) = std::sync::mpsc::channel();
        let db = Arc::new(Handle::new(path.clone(), db, closed));
        metrics::gauge!("kassa_store_writable").set(1.0);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = {
            let db = Arc::clone(&db);
            std::thread::Builder::new()
                .name("kassa-store-writer".into())
                .spawn(move || run_writer(&db, rx))
                .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?
        };
        {
            let (db, jobs) = (Arc::downgrade(&db), tx.downgrade());
            std::thread::Builder::new()
                .name("kassa-store-prober".into())
                .spawn(move || run_prober(db, jobs))
                .map_err(|e| StoreError::Unavailable(format!("cannot start prober thread: {e}")))?;
        }
        tracing::info!(path = %path.display(), "embedded store open");
        Ok(Self {
            db,
            path,
            jobs: Some(tx),
            writer: Some(writer),
            close_waiter: std::sync::Mutex::new(Some(CloseWaiter(close_waiter))),
        })
    }

    /// What tells when the file is closed (`None` after the first call): shutdown waits on it
    /// so that the next open of the same directory (a restart in the same process) finds the
    /// file free, whichever thread drops the store last.
    pub fn close_waiter(&self) -> Option<CloseWaiter> {
        self.close_waiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many write transactions committed so far (each is one fsync).
    pub fn commits(&self) -> u64 {
        self.db.commits()
    }

    /// Stops the writer thread once it has committed every write already queued, then closes
    /// the file. Dropping the store does the same.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // The writer drains the queue, then sees the channel closed and returns.
        self.jobs = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "store writer thread panicked");
        }
    }

    /// Puts `email` in the outbox unless one for its order and kind is there; answers whether
    /// it did.
    async fn insert_email(&self, email: OutboxEmail) -> StoreResult<bool> {
        let put = EmailPut::new(&email)?;
        self.write(move |txn| put.apply(txn)).await
    }

    /// Runs `f` in the next group-commit transaction and answers once that transaction
    /// committed durably. `f` must check its conditions by reading before it writes anything:
    /// a failed job aborts its whole batch, and every job in it is answered with an error.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
        metrics::counter!("kassa_store_statements_total", "store" => "embedded", "kind" => "write")
            .increment(1);
        let (reply, answer) = oneshot::channel();
        let job = TypedJob {
            run: Some(f),
            result: None,
            reply,
        };
        jobs.send(Box::new(job))
            .await
            .map_err(|_| StoreError::Unavailable("store writer thread stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("store writer thread stopped".into()))?
    }

    /// Runs `f` on a fresh read snapshot. On the blocking pool rather than inline: reads happen
    /// mostly on actor activation, so they are rare and likely cold (a disk read, or a long
    /// range scan of reservations), and must not stall a runtime worker other actors share; the
    /// hand-off costs microseconds, which is nothing next to that.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        metrics::counter!("kassa_store_statements_total", "store" => "embedded", "kind" => "read")
            .increment(1);
        let db = self.db.db()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(db_err)?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store read task failed: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn ping(&self) -> StoreResult<()> {
        if let Some(why) = self.db.unwritable() {
            return Err(StoreError::Unavailable(format!("cannot write: {why}")));
        }
        self.read(|txn| {
            txn.open_table(PRODUCTS).map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn load_product(&self, sku: &Sku) -> StoreResult<Option<ProductSnapshot>> {
        let sku = sku.clone();
        self.read(move |txn| {
            let products = txn.open_table(PRODUCTS).map_err(db_err)?;
            let Some(stored) = products.get(sku.as_str()).map_err(db_err)? else {
                return Ok(None);
            };
            let row: ProductRow = decode(stored.value(), "product", sku.as_str())?;
            let reservations = txn.open_table(RESERVATIONS).map_err(db_err)?;
            let range = reservations
                .range((sku.as_str(), 0u128)..=(sku.as_str(), u128::MAX))
                .map_err(db_err)?;
            let mut held = Vec::new();
            for entry in range {
                let (_, value) = entry.map_err(db_err)?;
                held.push(decode::<Reservation>(
                    value.value(),
                    "reservation",
                    sku.as_str(),
                )?);
            }
            Ok(Some(ProductSnapshot {
                row,
                reservations: held,
            }))
        })
        .await
    }

    async fn write_product(&self, write: ProductWrite) -> StoreResult<WriteOutcome> {
        self.write_product_with(write, Vec::new()).await
    }

    fn writes_settlements(&self) -> bool {
        true
    }

    async fn write_product_with(
        &self,
        write: ProductWrite,
        settlements: Vec<Settlement>,
    ) -> StoreResult<WriteOutcome> {
        let product = ProductPut::new(write)?;
        let mut puts = Vec::with_capacity(settlements.len());
        for s in &settlements {
            let cart = s
                .cart
                .as_ref()
                .map(|c| CartPut::new(&c.cart, c.expected_version))
                .transpose()?;
            let email = s.email.as_ref().map(EmailPut::new).transpose()?;
            puts.push((OrderPut::new(&s.order, s.expected_version)?, cart, email));
        }
        self.write(move |txn| {
            if !product.check(txn)? {
                return Ok(WriteOutcome::Conflict);
            }
            for (order, cart, _) in &mut puts {
                if !order.check(txn)? || !cart.as_ref().map_or(Ok(true), |c| c.check(txn))? {
                    return Ok(WriteOutcome::Conflict);
                }
            }
            product.apply(txn)?;
            for (order, cart, email) in &puts {
                order.apply(txn)?;
                if let Some(cart) = cart {
                    cart.apply(txn)?;
                }
                if let Some(email) = email {
                    // An email already there (a transition re-driven after a crash) stays.
                    email.apply(txn)?;
                }
            }
            Ok(WriteOutcome::Applied)
        })
        .await
    }

    async fn load_cart(&self, id: CartId) -> StoreResult<Option<CartRecord>> {
        self.read(move |txn| {
            let carts = txn.open_table(CARTS).map_err(db_err)?;
            let stored = carts.get(id.0.as_u128()).map_err(db_err)?;
            stored
                .map(|v| decode(v.value(), "cart", &id.to_string()))
                .transpose()
        })
        .await
    }

    async fn write_cart(
        &self,
        cart: &CartRecord,
        expected_version: u64,
    ) -> StoreResult<WriteOutcome> {
        let put = CartPut::new(cart, expected_version)?;
        self.write(move |txn| {
            if !put.check(txn)? {
                return Ok(WriteOutcome::Conflict);
            }
            put.apply(txn)?;
            Ok(WriteOutcome::Applied)
        })
        .await
    }

    async fn load_order(&self, id: OrderId) -> StoreResult<Option<OrderRecord>> {
        self.read(move |txn| {
            let orders = txn.open_table(ORDERS).map_err(db_err)?;
            let stored = orders.get(id.0.as_u128()).map_err(db_err)?;
            stored
                .map(|v| decode(v.value(), "order", &id.to_string()))
                .transpose()
        })
        .await
    }

    async fn write_order(
        &self,
        order: &OrderRecord,
        expected_version: u64,
    ) -> StoreResult<WriteOutcome> {
        let mut put = OrderPut::new(order, expected_version)?;
        self.write(move |txn| {
            if !put.check(txn)? {
                return Ok(WriteOutcome::Conflict);
            }
            put.apply(txn)?;
            Ok(WriteOutcome::Applied)
        })
        .await
    }

    async fn list_orders(
        &self,
        user: &UserId,
        before: Option<OrderId>,
        limit: usize,
    ) -> StoreResult<Vec<OrderRecord>> {
        let user = user.clone();
        self.read(move |txn| {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let user = user.0.as_str();
            let user_orders = txn.open_table(USER_ORDERS).map_err(db_err)?;
            let range = match before {
                Some(before) => user_orders.range((user, 0u128)..(user, before.0.as_u128())),
                None => user_orders.range((user, 0u128)..=(user, u128::MAX)),
            }
            .map_err(db_err)?;
            let orders = txn.open_table(ORDERS).map_err(db_err)?;
            let mut listed = Vec::new();
            for entry in range.rev().take(limit) {
                let (key, _) = entry.map_err(db_err)?;
                let (_, id) = key.value();
                let name = Uuid::from_u128(id).to_string();
                let Some(stored) = orders.get(id).map_err(db_err)? else {
                    return Err(StoreError::Corrupt(format!(
                        "user {user} lists order {name}, which is not stored"
                    )));
                };
                listed.push(decode::<OrderRecord>(stored.value(), "order", &name)?);
            }
            Ok(listed)
        })
        .await
    }

    async fn active_orders(&self) -> StoreResult<Vec<OrderId>> {
        self.read(|txn| {
            let active = txn.open_table(ACTIVE_ORDERS).map_err(db_err)?;
            let mut ids = Vec::new();
            for entry in active.iter().map_err(db_err)? {
                let (key, _) = entry.map_err(db_err)?;
                ids.push(OrderId(Uuid::from_u128(key.value())));
            }
            Ok(ids)
        })
        .await
    }

    async fn claim_idempotency(
        &self,
        request: IdempotencyRequest<'_>,
    ) -> StoreResult<IdempotencyClaim> {
        let user = request.user.clone();
        let key = request.key.to_owned();
        let fingerprint = request.fingerprint.to_owned();
        let (now, ttl, stale_after) = (request.now, request.ttl, request.stale_after);
        let claim = request.claim;
        self.write(move |txn| {
            // The request again, over the copies this closure owns (it runs on the writer).
            let request = IdempotencyRequest {
                user: &user,
                key: &key,
                claim,
                fingerprint: &fingerprint,
                now,
                ttl,
                stale_after,
            };
            let mut table = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
            let k = (user.0.as_str(), key.as_str());
            let existing = match table.get(k).map_err(db_err)? {
                Some(stored) => Some(IdempotencyRow::decode(stored.value(), k)?),
                None => None,
            };
            let mut by_age = txn.open_table(IDEMPOTENCY_BY_AGE).map_err(db_err)?;
            if let Some(row) = existing {
                let held = HeldClaim {
                    created_at: row.created_at,
                    fingerprint: &row.fingerprint,
                    response: row.response.as_ref(),
                };
                if let Decision::Answer(claim) = decide(&held, &request) {
                    return Ok(claim);
                }
                by_age
                    .remove((row.created_at.unix_timestamp(), k.0, k.1))
                    .map_err(db_err)?;
            }
            let row = IdempotencyRow {
                fingerprint,
                created_at: now,
                response: None,
            };
            table.insert(k, encode(&row)?.as_slice()).map_err(db_err)?;
            by_age
                .insert((now.unix_timestamp(), k.0, k.1), ())
                .map_err(db_err)?;
            txn.open_table(IDEMPOTENCY_UNFINISHED)
                .map_err(db_err)?
                .insert(k, ())
                .map_err(db_err)?;
            Ok(IdempotencyClaim::Claimed)
        })
        .await
    }

    async fn complete_idempotency(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        let (user, key, response) = (user.0.clone(), key.to_owned(), response.clone());
        self.write(move |txn| {
            let mut table = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
            let k = (user.as_str(), key.as_str());
            let existing = match table.get(k).map_err(db_err)? {
                Some(stored) => Some(IdempotencyRow::decode(stored.value(), k)?),
                None => None,
            };
            // A claim that was released (or expired and was removed) stays forgotten.
            if let Some(mut row) = existing {
                row.response = Some(response);
                table.insert(k, encode(&row)?.as_slice()).map_err(db_err)?;
            }
            txn.open_table(IDEMPOTENCY_UNFINISHED)
                .map_err(db_err)?
                .remove(k)
                .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn release_idempotency(&self, user: &UserId, key: &str) -> StoreResult<()> {
        let (user, key) = (user.0.clone(), key.to_owned());
        self.write(move |txn| {
            let mut table = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
            let k = (user.as_str(), key.as_str());
            let removed = match table.remove(k).map_err(db_err)? {
                Some(stored) => Some(IdempotencyRow::decode(stored.value(), k)?),
                None => None,
            };
            if let Some(row) = removed {
                txn.open_table(IDEMPOTENCY_BY_AGE)
                    .map_err(db_err)?
                    .remove((row.created_at.unix_timestamp(), k.0, k.1))
                    .map_err(db_err)?;
            }
            txn.open_table(IDEMPOTENCY_UNFINISHED)
                .map_err(db_err)?
                .remove(k)
                .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn purge_idempotency(
        &self,
        created_before: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<usize> {
        let cutoff = created_before.unix_timestamp();
        self.write(move |txn| {
            let mut by_age = txn.open_table(IDEMPOTENCY_BY_AGE).map_err(db_err)?;
            let mut table = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
            let mut unfinished = txn.open_table(IDEMPOTENCY_UNFINISHED).map_err(db_err)?;
            let doomed = by_age
                .range(..(cutoff, "", ""))
                .map_err(db_err)?
                .take(limit)
                .map(|entry| {
                    let (key, _) = entry.map_err(db_err)?;
                    let (at, user, key) = key.value();
                    Ok((at, user.to_owned(), key.to_owned()))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            for (at, user, key) in &doomed {
                by_age
                    .remove((*at, user.as_str(), key.as_str()))
                    .map_err(db_err)?;
                // Only the row this entry indexes: one claimed again since has its own.
                let k = (user.as_str(), key.as_str());
                let indexed = match table.get(k).map_err(db_err)? {
                    Some(stored) => IdempotencyRow::decode(stored.value(), k)
                        .map_or(true, |row| row.created_at.unix_timestamp() == *at),
                    None => false,
                };
                if indexed {
                    table.remove(k).map_err(db_err)?;
                    unfinished.remove(k).map_err(db_err)?;
                }
            }
            Ok(doomed.len())
        })
        .await
    }

    async fn enqueue_email(&self, email: &OutboxEmail) -> StoreResult<()> {
        self.insert_email(email.clone()).await.map(|_| ())
    }

    async fn enqueue_claimed_email(
        &self,
        email: &OutboxEmail,
        claimed_until: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.insert_email(OutboxEmail {
            next_attempt_at: claimed_until,
            ..email.clone()
        })
        .await
    }

    async fn update_email(&self, email: &OutboxEmail) -> StoreResult<()> {
        let email = email.clone();
        self.write(move |txn| {
            let key = (email.order_id.0.as_u128(), email.kind.code());
            let encoded = encode(&email)?;
            let mut outbox = txn.open_table(OUTBOX).map_err(db_err)?;
            let mut unsent = txn.open_table(OUTBOX_UNSENT).map_err(db_err)?;
            outbox.insert(key, encoded.as_slice()).map_err(db_err)?;
            if email.sent_at.is_none() {
                unsent.insert(key, ()).map_err(db_err)?;
            } else {
                unsent.remove(key).map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn replace_email(
        &self,
        expected: &OutboxEmail,
        next: &OutboxEmail,
    ) -> StoreResult<WriteOutcome> {
        let (expected, next) = (expected.clone(), next.clone());
        self.write(move |txn| {
            let key = (expected.order_id.0.as_u128(), expected.kind.code());
            let mut outbox = txn.open_table(OUTBOX).map_err(db_err)?;
            let name = format!("{}/{}", expected.order_id, expected.kind.as_str());
            let current: Option<OutboxEmail> = match outbox.get(key).map_err(db_err)? {
                Some(stored) => Some(decode(stored.value(), "outbox email", &name)?),
                None => None,
            };
            if current.as_ref() != Some(&expected) {
                return Ok(WriteOutcome::Conflict);
            }
            let encoded = encode(&next)?;
            outbox.insert(key, encoded.as_slice()).map_err(db_err)?;
            let mut unsent = txn.open_table(OUTBOX_UNSENT).map_err(db_err)?;
            if next.sent_at.is_none() {
                unsent.insert(key, ()).map_err(db_err)?;
            } else {
                unsent.remove(key).map_err(db_err)?;
            }
            Ok(WriteOutcome::Applied)
        })
        .await
    }

    async fn due_emails(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<OutboxEmail>> {
        self.read(move |txn| {
            let unsent = txn.open_table(OUTBOX_UNSENT).map_err(db_err)?;
            let outbox = txn.open_table(OUTBOX).map_err(db_err)?;
            let mut due = Vec::new();
            for entry in unsent.iter().map_err(db_err)? {
                let (key, _) = entry.map_err(db_err)?;
                let id = key.value();
                let name = format!("{}/{}", Uuid::from_u128(id.0), id.1);
                let Some(stored) = outbox.get(id).map_err(db_err)? else {
                    return Err(StoreError::Corrupt(format!(
                        "outbox email {name} is listed as unsent but not stored"
                    )));
                };
                let email: OutboxEmail = decode(stored.value(), "outbox email", &name)?;
                if email.sent_at.is_none() && email.next_attempt_at <= now {
                    due.push(email);
                }
            }
            due.sort_by_key(|e| (e.created_at, e.order_id, e.kind));
            due.truncate(limit);
            Ok(due)
        })
        .await
    }

    async fn outbox_depth(&self) -> StoreResult<u64> {
        self.read(|txn| {
            let unsent = txn.open_table(OUTBOX_UNSENT).map_err(db_err)?;
            unsent.len().map_err(db_err)
        })
        .await
    }

    async fn release_email_claims(&self, now: OffsetDateTime) -> StoreResult<usize> {
        self.write(move |txn| {
            let unsent = txn.open_table(OUTBOX_UNSENT).map_err(db_err)?;
            let mut outbox = txn.open_table(OUTBOX).map_err(db_err)?;
            let keys = unsent
                .iter()
                .map_err(db_err)?
                .map(|entry| entry.map(|(key, _)| key.value()).map_err(db_err))
                .collect::<StoreResult<Vec<_>>>()?;
            let mut released = 0;
            for key in keys {
                let id = format!("{}/{}", Uuid::from_u128(key.0), key.1);
                let Some(stored) = outbox.get(key).map_err(db_err)? else {
                    continue;
                };
                let mut email: OutboxEmail = decode(stored.value(), "outbox email", &id)?;
                drop(stored);
                if email.sent_at.is_none() && email.next_attempt_at > now {
                    email.next_attempt_at = now;
                    outbox
                        .insert(key, encode(&email)?.as_slice())
                        .map_err(db_err)?;
                    released += 1;
                }
            }
            Ok(released)
        })
        .await
    }

    async fn locked_carts(&self, limit: usize) -> StoreResult<Vec<CartRecord>> {
        self.read(move |txn| {
            let locked = txn.open_table(LOCKED_CARTS).map_err(db_err)?;
            let carts = txn.open_table(CARTS).map_err(db_err)?;
            let mut found = Vec::new();
            for entry in locked.iter().map_err(db_err)?.take(limit) {
                let (cart, _) = entry.map_err(db_err)?;
                let id = Uuid::from_u128(cart.value());
                if let Some(stored) = carts.get(cart.value()).map_err(db_err)? {
                    found.push(decode(stored.value(), "cart", &id.to_string())?);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn release_unfinished_idempotency(&self) -> StoreResult<usize> {
        self.write(move |txn| {
            let mut unfinished = txn.open_table(IDEMPOTENCY_UNFINISHED).map_err(db_err)?;
            let mut table = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
            let mut by_age = txn.open_table(IDEMPOTENCY_BY_AGE).map_err(db_err)?;
            let claims = unfinished
                .iter()
                .map_err(db_err)?
                .map(|entry| {
                    let (key, _) = entry.map_err(db_err)?;
                    let (user, key) = key.value();
                    Ok((user.to_owned(), key.to_owned()))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            for (user, key) in &claims {
                let k = (user.as_str(), key.as_str());
                let row = match table.get(k).map_err(db_err)? {
                    Some(stored) => IdempotencyRow::decode(stored.value(), k).ok(),
                    None => None,
                };
                // Only a claim still without its response; a completed one is kept.
                if let Some(row) = row.filter(|r| r.response.is_none()) {
                    table.remove(k).map_err(db_err)?;
                    by_age
                        .remove((row.created_at.unix_timestamp(), k.0, k.1))
                        .map_err(db_err)?;
                }
                unfinished.remove(k).map_err(db_err)?;
            }
            Ok(claims.len())
        })
        .await
    }

    async fn put_session(&self, session: &CheckoutSession) -> StoreResult<()> {
        let encoded = encode(session)?;
        let id = session.id.clone();
        self.write(move |txn| {
            let mut sessions = txn.open_table(SESSIONS).map_err(db_err)?;
            sessions
                .insert(id.as_str(), encoded.as_slice())
                .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn load_session(&self, id: &str) -> StoreResult<Option<CheckoutSession>> {
        let id = id.to_string();
        self.read(move |txn| {
            let sessions = txn.open_table(SESSIONS).map_err(db_err)?;
            let Some(stored) = sessions.get(id.as_str()).map_err(db_err)? else {
                return Ok(None);
            };
            decode(stored.value(), "checkout session", &id).map(Some)
        })
        .await
    }

    async fn purge_sessions(
        &self,
        expired_before: OffsetDateTime,
        limit: usize,
    ) -> StoreResult<usize> {
        // Sessions live an hour, so the table stays small: a scan finds the expired ones.
        let doomed: Vec<String> = self
            .read(move |txn| {
                let sessions = txn.open_table(SESSIONS).map_err(db_err)?;
                let mut doomed = Vec::new();
                for entry in sessions.iter().map_err(db_err)? {
                    let (id, body) = entry.map_err(db_err)?;
                    let expired = serde_json::from_slice::<CheckoutSession>(body.value())
                        .map_or(true, |s| s.expires_at < expired_before);
                    if expired {
                        doomed.push(id.value().to_string());
                        if doomed.len() == limit {
                            break;
                        }
                    }
                }
                Ok(doomed)
            })
            .await?;
        let count = doomed.len();
        if count > 0 {
            self.write(move |txn| {
                let mut sessions = txn.open_table(SESSIONS).map_err(db_err)?;
                for id in &doomed {
                    sessions.remove(id.as_str()).map_err(db_err)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(count)
    }

    async fn list_products(&self, after: Option<&Sku>, limit: usize) -> StoreResult<Vec<Sku>> {
        let after = after.cloned();
        self.read(move |txn| {
            let products = txn.open_table(PRODUCTS).map_err(db_err)?;
            let range = match &after {
                Some(after) => products.range::<&str>((
                    std::ops::Bound::Excluded(after.as_str()),
                    std::ops::Bound::Unbounded,
                )),
                None => products.range::<&str>(..),
            }
            .map_err(db_err)?;
            let mut skus = Vec::with_capacity(limit);
            for entry in range {
                if skus.len() == limit {
                    break;
                }
                let (sku, body) = entry.map_err(db_err)?;
                let row: ProductRow = decode(body.value(), "product", sku.value())?;
                if row.info.is_some() {
                    let sku = Sku::parse(sku.value())
                        .map_err(|e| StoreError::Corrupt(format!("product key: {e}")))?;
                    skus.push(sku);
                }
            }
            Ok(skus)
        })
        .await
    }
}

/// What an idempotency key holds: the request it was claimed for and, once finished, the
/// response to replay.
#[derive(Serialize, Deserialize)]
struct IdempotencyRow {
    fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    response: Option<StoredResponse>,
}

impl IdempotencyRow {
    /// The stored row of `(user, key)`.
    fn decode(bytes: &[u8], (user, key): (&str, &str)) -> StoreResult<Self> {
        decode(bytes, "idempotency key", &format!("{user}/{key}"))
    }
}

/// Fills `idempotency_by_age` for a database written before it existed (once: afterwards
/// every claim keeps it up to date).
fn index_idempotency_keys(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut by_age = txn.open_table(IDEMPOTENCY_BY_AGE).map_err(db_err)?;
    let table = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
    if !by_age.is_empty().map_err(db_err)? || table.is_empty().map_err(db_err)? {
        return Ok(());
    }
    for entry in table.iter().map_err(db_err)? {
        let (key, value) = entry.map_err(db_err)?;
        let (user, key) = key.value();
        // A row that cannot be read is indexed as the oldest: the next purge removes it.
        let at = match IdempotencyRow::decode(value.value(), (user, key)) {
            Ok(row) => row.created_at.unix_timestamp(),
            Err(e) => {
                tracing::warn!(error = %e, "an idempotency key cannot be read; it will be purged");
                i64::MIN
            }
        };
        by_age.insert((at, user, key), ()).map_err(db_err)?;
    }
    Ok(())
}

/// Builds the index of locked carts from the carts (a database from before it existed).
fn index_locked_carts(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut locked = txn.open_table(LOCKED_CARTS).map_err(db_err)?;
    let carts = txn.open_table(CARTS).map_err(db_err)?;
    for entry in carts.iter().map_err(db_err)? {
        let (key, value) = entry.map_err(db_err)?;
        let id = Uuid::from_u128(key.value()).to_string();
        match decode::<CartRecord>(value.value(), "cart", &id) {
            Ok(cart) => {
                if let Some(order) = cart.locked_by {
                    locked
                        .insert(key.value(), order.0.as_u128())
                        .map_err(db_err)?;
                }
            }
            Err(e) => tracing::warn!(error = %e, "a cart cannot be read; not indexed"),
        }
    }
    Ok(())
}

/// Builds the index of unfinished idempotency claims (a database from before it existed).
fn index_unfinished_claims(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut unfinished = txn.open_table(IDEMPOTENCY_UNFINISHED).map_err(db_err)?;
    let table = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
    for entry in table.iter().map_err(db_err)? {
        let (key, value) = entry.map_err(db_err)?;
        let (user, key) = key.value();
        if IdempotencyRow::decode(value.value(), (user, key)).is_ok_and(|r| r.response.is_none()) {
            unfinished.insert((user, key), ()).map_err(db_err)?;
        }
    }
    Ok(())
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(msg) => StoreError::Corrupt(msg),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn encode(value: &impl Serialize) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Unavailable(format!("cannot encode: {e}")))
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str, key: &str) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what} {key}: {e}")))
}

/// The `version` of a stored record, read without decoding the rest of it (the writer
/// thread checks one per conditional write).
#[derive(Deserialize)]
struct VersionHead {
    version: u64,
}

fn stored_version(bytes: &[u8], what: &str, key: &str) -> StoreResult<u64> {
    decode::<VersionHead>(bytes, what, key).map(|head| head.version)
}

/// What a conditional order write needs of the stored order.
#[derive(Deserialize)]
struct OrderHead<'a> {
    version: u64,
    #[serde(borrow)]
    owner: Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kassa_actors::domain::{Currency, ProductInfo};

    fn create(sku: &str, on_hand: i64) -> ProductWrite {
        ProductWrite {
            sku: Sku::parse(sku).expect("valid sku"),
            expected_version: 0,
            row: ProductRow {
                info: Some(ProductInfo {
                    name: format!("Product {sku}"),
                    price: 1999,
                    currency: Currency::EUR,
                }),
                on_hand,
                version: 1,
            },
            put_reservations: vec![],
            remove_reservations: vec![],
        }
    }

    /// Writes `count` products concurrently, one task each; returns once all are answered.
    async fn write_concurrently(store: &Arc<EmbeddedStore>, count: i64) {
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let store = Arc::clone(store);
                tokio::spawn(
                    async move { store.write_product(create(&format!("sku-{i}"), i)).await },
                )
            })
            .collect();
        for task in tasks {
            let outcome = task.await.expect("task").expect("write");
            assert_eq!(outcome, WriteOutcome::Applied);
        }
    }

    #[tokio::test]
    async fn embedded_store_conforms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        kassa_actors::conformance::run_all(&store).await;
        store.close();
    }

    /// Rows in the idempotency table and in its by-age index.
    fn idempotency_rows(store: &EmbeddedStore) -> (u64, u64) {
        let txn = store.db.db().expect("open").begin_read().expect("read");
        let rows = txn
            .open_table(IDEMPOTENCY)
            .expect("table")
            .len()
            .expect("len");
        let index = txn.open_table(IDEMPOTENCY_BY_AGE).expect("index");
        (rows, index.len().expect("len"))
    }

    #[tokio::test]
    async fn expired_idempotency_keys_are_purged_and_the_rest_kept() {
        use kassa_actors::domain::UserId;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let user = UserId("alice".into());
        let t0 = time::macros::datetime!(2026-11-01 12:00 UTC);
        let claim = |key: &'static str, now: OffsetDateTime| {
            let user = &user;
            let store = &store;
            async move {
                store
                    .claim_idempotency(IdempotencyRequest {
                        user,
                        key,
                        claim: uuid::Uuid::new_v4(),
                        fingerprint: "body",
                        now,
                        ttl: time::Duration::hours(24),
                        stale_after: time::Duration::minutes(2),
                    })
                    .await
                    .expect("claim")
            }
        };
        let hour = time::Duration::hours(1);
        assert_eq!(claim("old", t0).await, IdempotencyClaim::Claimed);
        assert_eq!(claim("released", t0).await, IdempotencyClaim::Claimed);
        store
            .release_idempotency(&user, "released")
            .await
            .expect("release");
        // Claimed at t0, stale by t0 + 1 h and claimed again: its index entry moves with it.
        assert_eq!(claim("again", t0).await, IdempotencyClaim::Claimed);
        assert_eq!(claim("again", t0 + hour).await, IdempotencyClaim::Claimed);
        assert_eq!(
            claim("recent", t0 + 20 * hour).await,
            IdempotencyClaim::Claimed
        );
        let done = StoredResponse {
            status: 200,
            body: "{}".into(),
        };
        store
            .complete_idempotency(&user, "recent", &done)
            .await
            .expect("complete");
        assert_eq!(idempotency_rows(&store), (3, 3));

        // An index entry left by an older binary for a row claimed again since.
        store
            .write(move |txn| {
                txn.open_table(IDEMPOTENCY_BY_AGE)
                    .map_err(db_err)?
                    .insert((t0.unix_timestamp() - 1, "alice", "recent"), ())
                    .map_err(db_err)?;
                Ok(())
            })
            .await
            .expect("stale entry");
        assert_eq!(idempotency_rows(&store), (3, 4));

        // At t0 + 25 h 30 min everything claimed before t0 + 1 h 30 min has expired; the
        // stale entry goes, the row it named (claimed at t0 + 20 h) stays.
        let cutoff = t0 + 90 * time::Duration::minutes(1);
        assert_eq!(
            store.purge_idempotency(cutoff, 1000).await.expect("purge"),
            3
        );
        assert_eq!(idempotency_rows(&store), (1, 1));
        assert_eq!(
            store.purge_idempotency(cutoff, 1000).await.expect("purge"),
            0
        );
        assert_eq!(
            claim("recent", t0 + 21 * hour).await,
            IdempotencyClaim::Completed(done),
            "the key inside its 24 h is kept"
        );
        // The index of a database written before it existed is built at open.
        store
            .write(|txn| {
                txn.open_table(IDEMPOTENCY_BY_AGE)
                    .map_err(db_err)?
                    .retain(|_, _| false)
                    .map_err(db_err)
            })
            .await
            .expect("drop the index");
        assert_eq!(idempotency_rows(&store), (1, 0));
        store.close();
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(idempotency_rows(&store), (1, 1));
        let later = t0 + 45 * hour;
        assert_eq!(
            store.purge_idempotency(later, 1000).await.expect("purge"),
            1
        );
        assert_eq!(idempotency_rows(&store), (0, 0));
        store.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_survive_close_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        write_concurrently(&store, 200).await;
        Arc::try_unwrap(store).ok().expect("sole owner").close();

        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        for i in 0..200 {
            let sku = Sku::parse(&format!("sku-{i}")).expect("valid sku");
            let loaded = store
                .load_product(&sku)
                .await
                .expect("load")
                .expect("present");
            assert_eq!(loaded.row, create(sku.as_str(), i).row);
        }
        store.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_shares_commits_between_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        write_concurrently(&store, 500).await;
        let commits = store.commits();
        assert!(commits >= 1);
        assert!(
            commits < 500,
            "500 concurrent writes took {commits} commits: no batching"
        );
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        match EmbeddedStore::open(dir.path()) {
            Err(StoreError::Unavailable(msg)) => {
                assert!(msg.contains("is another kassa running?"), "{msg}");
                assert!(msg.contains(FILE_NAME), "{msg}");
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("the same file opened twice"),
        }
        store.close();
        EmbeddedStore::open(dir.path())
            .expect("open after close")
            .close();
    }

    #[tokio::test]
    async fn corrupt_records_are_reported_and_fail_only_their_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        store
            .write(|txn| {
                let mut products = txn.open_table(PRODUCTS).map_err(db_err)?;
                products
                    .insert("broken", b"{not json".as_slice())
                    .map_err(db_err)?;
                Ok(())
            })
            .await
            .expect("raw write");
        let broken = Sku::parse("broken").expect("valid sku");
        assert!(matches!(
            store.load_product(&broken).await,
            Err(StoreError::Corrupt(_))
        ));
        let mut update = create("broken", 1);
        update.expected_version = 1;
        assert!(matches!(
            store.write_product(update).await,
            Err(StoreError::Corrupt(_))
        ));
        // The writer thread is still alive and later batches commit.
        assert_eq!(
            store.write_product(create("fine", 1)).await.expect("write"),
            WriteOutcome::Applied
        );
        store.close();
    }

    #[tokio::test]
    async fn reservations_are_scoped_to_their_sku() {
        use kassa_actors::domain::OrderId;
        use time::OffsetDateTime;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let reservation = |qty| Reservation {
            order_id: OrderId::new(),
            qty,
            expires_at: OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("valid time"),
            committed: false,
        };
        // "a" sorts right before "a-b" and "a." and would share a naive prefix.
        for sku in ["a", "a-b", "a.", "b"] {
            let mut w = create(sku, 10);
            w.put_reservations = vec![reservation(1), reservation(2)];
            assert_eq!(
                store.write_product(w).await.expect("write"),
                WriteOutcome::Applied
            );
        }
        for sku in ["a", "a-b", "a.", "b"] {
            let sku = Sku::parse(sku).expect("valid sku");
            let loaded = store
                .load_product(&sku)
                .await
                .expect("load")
                .expect("present");
            assert_eq!(loaded.reservations.len(), 2, "{sku}");
        }
        store.close();
    }
}
