//! The scylla `Store`: ScyllaDB (or Apache Cassandra) over CQL, for Kassa as many replicas.
//! Owns the driver session and the prepared statements of `cql/`'s tables. Every write two
//! replicas could race is a lightweight transaction whose `[applied]` column is read by name;
//! it never overwrites on a failed condition and never retries a non-idempotent statement.
//!
//! Units of work that span partitions are sequences around one conditional write, the commit
//! point: index entries that make a record findable are written before it, entries that
//! retire it after it, all idempotent. A crash in between leaves an index entry too many
//! (readers skip it), never a record that matters missing from its index.
//!
//! The LWTs, and the race each one settles (DESIGN's "LWT wherever two replicas could race"):
//! - `stock` batch `IF version`: every replica's actor of a SKU reserves, commits and releases
//!   (its queued commands in one write; commits alone wait up to `commit_linger` for company).
//! - `carts` change `IF version`: two replicas may each hold an actor of one cart (two tabs
//!   behind a round-robin balancer). A *new* cart is a plain write: its id is fresh. An
//!   order paid while it held the cart's lock writes nothing to the cart: the lock stays
//!   stored, and the cart actor that reads a locked cart settles it from the order
//!   (`CartRecord::settle_lock`), its next change writing the settled cart.
//! - `orders` `IF NOT EXISTS` (the survivor of a replica fences its unfinished checkouts'
//!   ids) and `IF version` (a webhook on one replica races the expiry on another). That a
//!   version's effects are all done is a plain write to `order_effects_done`: no one races
//!   it.
//! - `idempotency_keys`: two replicas take the same key by design (a client's retry).
//! - `outbox` `IF NOT EXISTS` (an effect re-driven elsewhere keeps the first email and its
//!   state) and `IF body =` (every replica's mailer claims due emails). An email sent is
//!   recorded by a plain write to `outbox_sent` (no LWT writes it), which readers take over
//!   the outbox row and which refuses later claims.
//!
//! Plain writes: the indexes (`user_orders`, once, with the order's creation;
//! `outbox_unsent`; `active_orders` and `catalog` timestamped by the record's version, so
//! the newest state wins), checkout notes, sessions and heartbeats.

mod catalog;
mod lwt;
mod replicas;
mod schema;
mod statements;
mod tls;

pub use schema::{Flavor, MIGRATIONS, MigrationReport, required_version};

use lwt::Lwt;
use statements::Statements;

use crate::config::ScyllaOptions;
use anyhow::Context as _;
use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt, stream};
use kassa_actors::domain::{CartId, Currency, OrderId, ProductInfo, Sku, UserId};
use kassa_actors::idempotency::{Decision, HeldClaim, decide};
use kassa_actors::store::{
    CartRecord, CheckoutSession, IdempotencyClaim, IdempotencyRequest, InFlightCheckout,
    OrderRecord, OutboxEmail, ProductRow, ProductSnapshot, ProductWrite, Reservation, Store,
    StoreError, StoreResult, StoredResponse, WriteOutcome,
};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::DefaultRetryPolicy;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;
use uuid::Uuid;

/// Partitions of the active-order set and of the unsent-outbox index (`cql/0001`). Part of
/// the schema: changing it needs a migration that moves the entries.
const BUCKETS: i32 = 16;
/// How many stored records one listing or scan loads at once.
const LOAD_CONCURRENCY: usize = 32;
/// Rounds of claim / take-over before an idempotency key is reported contended.
const CLAIM_ROUNDS: usize = 8;
/// Cassandra's longest TTL (20 years).
const MAX_TTL_SECONDS: i64 = 630_720_000;
/// How long a checkout session's row outlives the session: the caller decides expiry with
/// its own clock, so the row must not vanish first because the clocks disagree.
const SESSION_TTL_MARGIN: time::Duration = time::Duration::hours(1);

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ScyllaTarget<'a> {
    pub hosts: &'a [String],
    pub keyspace: &'a str,
    pub options: &'a ScyllaOptions,
}

/// A `Store` on a ScyllaDB or Cassandra keyspace, with every statement prepared once.
pub struct ScyllaStore {
    session: Session,
    st: Statements,
    /// The catalog index entries this process wrote (catalog.rs).
    known: catalog::KnownEntries,
    /// This process's name among the replicas (replicas.rs).
    replica: String,
}

impl ScyllaStore {
    /// Puts `email` in the outbox unless one for its order and kind is there; answers whether
    /// it did.
    async fn insert_email(&self, email: &OutboxEmail) -> StoreResult<bool> {
        let unsent = email.sent_at.is_none();
        if unsent {
            self.unsent(email, true).await?;
        }
        let inserted = self
            .lwt(
                "outbox",
                &self.st.insert_outbox,
                (
                    email.order_id.0,
                    i32::from(email.kind.code()),
                    encode(email)?,
                ),
            )
            .await?;
        if !inserted.applied && unsent {
            // The first email stays; if it was sent already, our index entry must go.
            let key = format!("{}/{}", email.order_id, email.kind.as_str());
            let first: OutboxEmail = match inserted.text("body") {
                Some(body) => decode(body, "outbox email", &key)?,
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "outbox email {key} has no body"
                    )));
                }
            };
            if first.sent_at.is_some() || self.is_sent(email.order_id.0, email.kind.code()).await? {
                self.unsent(email, false).await?;
            }
        }
        Ok(inserted.applied)
    }

    /// Connects, checks that the keyspace holds the schema this build needs (`kassa migrate`
    /// makes it so), and prepares every statement.
    pub async fn open(target: ScyllaTarget<'_>) -> anyhow::Result<Self> {
        let session = connect(&target).await?;
        schema::check(&session, target.keyspace).await?;
        let st = Statements::prepare(&session, target.keyspace).await?;
        tracing::info!(
            hosts = ?target.hosts, keyspace = target.keyspace,
            consistency = ?target.options.consistency,
            serial_consistency = ?target.options.serial_consistency,
            user = target.options.credentials.as_ref().map(|c| c.username.as_str()),
            tls = target.options.tls.is_some(),
            "scylla store open"
        );
        Ok(Self {
            session,
            st,
            known: catalog::KnownEntries::default(),
            replica: format!("anonymous-{}", Uuid::new_v4()),
        })
    }

    /// Names this process among the replicas (`KASSA_REPLICA_ID`): stable across restarts
    /// of one process slot, unique among the live ones. Without it the name is random, so a
    /// restarted process is recovered by another replica after its silence, not by itself.
    pub fn with_replica(mut self, name: &str) -> Self {
        self.replica = name.to_string();
        self
    }

    /// The (order id, kind) of every unsent email, from the outbox index.
    async fn unsent_ids(&self) -> StoreResult<Vec<(Uuid, i32)>> {
        let buckets: Vec<Vec<(Uuid, i32)>> = stream::iter(0..BUCKETS)
            .map(|b| self.rows("outbox_unsent", &self.st.select_unsent, (b,)))
            .buffered(BUCKETS as usize)
            .try_collect()
            .await?;
        Ok(buckets.into_iter().flatten().collect())
    }

    async fn run(
        &self,
        op: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<QueryResult> {
        let kind = if statement.get_statement().trim_start().starts_with("SELECT") {
            "read"
        } else {
            "write"
        };
        count_statement(kind);
        self.execute(op, statement, values).await
    }

    async fn execute(
        &self,
        op: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<QueryResult> {
        let started = Instant::now();
        let result = self.session.execute_unpaged(statement, values).await;
        metrics::histogram!("kassa_store_request_seconds", "store" => "scylla", "op" => op)
            .record(started.elapsed().as_secs_f64());
        result.map_err(|e| unavailable(op, e))
    }

    /// Runs a conditional statement and reads its `[applied]` column (and, when it was not
    /// applied, the stored values Cassandra and ScyllaDB send back).
    async fn lwt(
        &self,
        table: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<Lwt> {
        count_statement("lwt");
        let result = self.execute(table, statement, values).await?;
        Lwt::read(table, result)
    }

    /// Every row of a paged SELECT.
    async fn rows<R>(
        &self,
        op: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
    {
        count_statement("read");
        let started = Instant::now();
        let pager = self
            .session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|e| unavailable(op, e))?;
        let rows = pager
            .rows_stream::<R>()
            .map_err(|e| corrupt(op, e))?
            .try_collect::<Vec<R>>()
            .await
            .map_err(|e| unavailable(op, e));
        metrics::histogram!("kassa_store_request_seconds", "store" => "scylla", "op" => op)
            .record(started.elapsed().as_secs_f64());
        rows
    }

    /// The single row of a SELECT by primary key, if any.
    async fn row<R>(
        &self,
        op: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<Option<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let result = self.run(op, statement, values).await?;
        let rows = result.into_rows_result().map_err(|e| corrupt(op, e))?;
        rows.maybe_first_row::<R>().map_err(|e| corrupt(op, e))
    }

    async fn load_body<T: DeserializeOwned>(
        &self,
        what: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        key: &str,
    ) -> StoreResult<Option<T>> {
        let body: Option<(Option<String>,)> = self.row(what, statement, values).await?;
        match body {
            None => Ok(None),
            Some((Some(body),)) => decode(&body, what, key).map(Some),
            Some((None,)) => Err(StoreError::Corrupt(format!("{what} {key} has no body"))),
        }
    }

    /// Marks the order active (or not) at its version: writes carry the version as their
    /// timestamp, so the highest version written decides, whatever the arrival order.
    async fn set_active(&self, id: OrderId, version: u64, active: bool) -> StoreResult<()> {
        let timestamp = i64::try_from(version).unwrap_or(i64::MAX);
        if active {
            self.run(
                "active_orders",
                &self.st.insert_active,
                (bucket(id.0), id.0, timestamp),
            )
            .await?;
        } else {
            self.run(
                "active_orders",
                &self.st.delete_active,
                (timestamp, bucket(id.0), id.0),
            )
            .await?;
        }
        Ok(())
    }

    async fn unsent(&self, email: &OutboxEmail, unsent: bool) -> StoreResult<()> {
        let key = (
            bucket(email.order_id.0),
            email.order_id.0,
            i32::from(email.kind.code()),
        );
        let statement = if unsent {
            &self.st.insert_unsent
        } else {
            &self.st.delete_unsent
        };
        self.run("outbox_unsent", statement, key).await?;
        Ok(())
    }

    /// The email as it stands: its record as sent (`outbox_sent`) if there is one, else its
    /// outbox row.
    async fn load_email(&self, order_id: Uuid, kind: i32) -> StoreResult<Option<OutboxEmail>> {
        let key = format!("{order_id}/{kind}");
        let (sent, row) = tokio::try_join!(
            self.load_body("outbox_sent", &self.st.select_sent, (order_id, kind), &key),
            self.load_body("outbox", &self.st.select_outbox, (order_id, kind), &key),
        )?;
        Ok(sent.or(row))
    }

    /// Whether the email is recorded as sent.
    async fn is_sent(&self, order_id: Uuid, kind: u8) -> StoreResult<bool> {
        let sent: Option<(Option<String>,)> = self
            .row(
                "outbox_sent",
                &self.st.select_sent,
                (order_id, i32::from(kind)),
            )
            .await?;
        Ok(sent.is_some())
    }
}

/// Counts one statement sent: `lwt` (a Paxos round), `write` (a plain write) or `read`.
/// The load generator divides them by journeys to report the writes each one costs.
fn count_statement(kind: &'static str) {
    metrics::counter!("kassa_store_statements_total", "store" => "scylla", "kind" => kind)
        .increment(1);
}

/// Opens a session on `target.hosts` with the configured consistency, timeouts and
/// token-aware routing; not bound to a keyspace.
pub async fn connect(target: &ScyllaTarget<'_>) -> anyhow::Result<Session> {
    let options = target.options;
    let mut routing = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &options.local_dc {
        routing = routing
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false);
    }
    // The default retry policy retries a timed-out or failed request only when the
    // statement is marked idempotent; every LWT is left non-idempotent.
    let profile = ExecutionProfile::builder()
        .consistency(options.consistency)
        .serial_consistency(Some(options.serial_consistency))
        .request_timeout(Some(options.request_timeout))
        .retry_policy(Arc::new(DefaultRetryPolicy::new()))
        .load_balancing_policy(routing.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(target.hosts)
        .default_execution_profile_handle(profile.into_handle())
        .connection_timeout(options.request_timeout)
        .keyspaces_to_fetch([target.keyspace.to_string()]);
    if let Some(credentials) = &options.credentials {
        builder = builder.user(&credentials.username, &credentials.password);
    }
    if let Some(tls) = &options.tls {
        builder = builder.tls_context(Some(tls::client_config(tls)?));
    }
    builder
        .build()
        .await
        .with_context(|| format!("cannot connect to {}", target.hosts.join(",")))
}

/// `kassa migrate`: creates the keyspace if needed and applies every migration not yet
/// applied. Idempotent.
pub async fn migrate(target: ScyllaTarget<'_>) -> anyhow::Result<MigrationReport> {
    let session = connect(&target).await?;
    schema::migrate(&session, target.keyspace, &target.options.replication).await
}

/// One stock partition row: the static columns, then the reservation (if any).
type StockRow = (
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<Uuid>,
    Option<i32>,
    Option<OffsetDateTime>,
    Option<bool>,
);

#[async_trait]
impl Store for ScyllaStore {
    /// None: replicas share the keyspace, so a locked cart may be another replica's live
    /// checkout. A crashed checkout's lock lapses at its `locked_until`, and its reservations
    /// at expiry plus the lost-order grace (see the product actor).
    async fn locked_carts(&self, _limit: usize) -> StoreResult<Vec<CartRecord>> {
        Ok(Vec::new())
    }

    /// None: another replica's mailer may be sending it; a claim of a dead replica lapses at
    /// the end of its lease.
    async fn release_email_claims(&self, _now: OffsetDateTime) -> StoreResult<usize> {
        Ok(0)
    }

    /// None: a claim in progress may be another replica's running request; a crashed one is
    /// presumed dead after the claim's stale time.
    async fn release_unfinished_idempotency(&self) -> StoreResult<usize> {
        Ok(0)
    }

    fn replica(&self) -> Option<&str> {
        Some(&self.replica)
    }

    async fn heartbeat(&self, now: OffsetDateTime) -> StoreResult<()> {
        self.write_heartbeat(now).await
    }

    async fn silent_replicas(
        &self,
        now: OffsetDateTime,
        silence: time::Duration,
    ) -> StoreResult<Vec<String>> {
        self.silent(now, silence).await
    }

    async fn fence_order(&self, order_id: OrderId) -> StoreResult<bool> {
        self.fence(order_id).await
    }

    async fn begin_checkout(&self, checkout: &InFlightCheckout) -> StoreResult<()> {
        self.note_checkout(checkout).await
    }

    async fn end_checkout(&self, replica: &str, order_id: OrderId) -> StoreResult<()> {
        self.forget_checkout(replica, order_id).await
    }

    async fn checkouts_of(
        &self,
        replica: &str,
        limit: usize,
    ) -> StoreResult<Vec<InFlightCheckout>> {
        self.in_flight(replica, limit).await
    }

    async fn forget_replica(&self, replica: &str) -> StoreResult<()> {
        self.drop_replica(replica).await
    }

    async fn release_unfinished_key(
        &self,
        user: &UserId,
        key: &str,
        claim: Uuid,
    ) -> StoreResult<()> {
        self.release_key_if_unfinished(user, key, claim).await
    }

    async fn release_email_claims_of(
        &self,
        now: OffsetDateTime,
        replicas: &[String],
    ) -> StoreResult<usize> {
        self.release_claims_of(now, replicas).await
    }

    async fn put_session(&self, session: &CheckoutSession) -> StoreResult<()> {
        self.run(
            "checkout_sessions",
            &self.st.insert_session,
            (&session.id, encode(session)?, session_ttl(session)),
        )
        .await
        .map(|_| ())
    }

    async fn load_session(&self, id: &str) -> StoreResult<Option<CheckoutSession>> {
        self.load_body("checkout session", &self.st.select_session, (id,), id)
            .await
    }

    async fn purge_sessions(
        &self,
        _expired_before: OffsetDateTime,
        _limit: usize,
    ) -> StoreResult<usize> {
        // The rows' TTL deletes them (an hour after the session expired).
        Ok(0)
    }

    async fn list_products(&self, after: Option<&Sku>, limit: usize) -> StoreResult<Vec<Sku>> {
        self.list_catalog(after, limit).await
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run("ping", &self.st.ping, ()).await.map(|_| ())
    }

    async fn product_version(&self, sku: &Sku) -> StoreResult<Option<u64>> {
        let row: Option<(Option<i64>,)> = self
            .row("stock", &self.st.select_stock_version, (sku.as_str(),))
            .await?;
        row.map(|(version,)| stock_version(sku, version))
            .transpose()
    }

    async fn load_product(&self, sku: &Sku) -> StoreResult<Option<ProductSnapshot>> {
        let rows: Vec<StockRow> = self
            .rows("stock", &self.st.select_stock, (sku.as_str(),))
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let (version, on_hand, name, price, currency, ..) = first;
        let version = stock_version(sku, *version)?;
        let info = match (name, price, currency) {
            (Some(name), Some(price), Some(code)) => Some(ProductInfo {
                name: name.clone(),
                price: *price,
                currency: Currency::from_code(code).ok_or_else(|| {
                    StoreError::Corrupt(format!("stock {sku} has currency {code}"))
                })?,
            }),
            _ => None,
        };
        let row = ProductRow {
            info,
            on_hand: on_hand.unwrap_or(0),
            version,
        };
        let mut reservations = Vec::with_capacity(rows.len());
        for (.., order_id, qty, expires_at, committed) in rows {
            let Some(order_id) = order_id else { continue };
            let (Some(qty), Some(expires_at)) = (qty, expires_at) else {
                return Err(StoreError::Corrupt(format!(
                    "stock {sku} reservation {order_id} is incomplete"
                )));
            };
            reservations.push(Reservation {
                order_id: OrderId(order_id),
                qty: u32::try_from(qty).map_err(|_| {
                    StoreError::Corrupt(format!("stock {sku} reservation {order_id} has qty {qty}"))
                })?,
                expires_at,
                committed: committed.unwrap_or(false),
            });
        }
        Ok(Some(ProductSnapshot { row, reservations }))
    }

    async fn write_product(&self, write: ProductWrite) -> StoreResult<WriteOutcome> {
        // Before the commit point: the catalog entry of a product that has a name.
        let known = self.index_before_write(&write).await?;
        let sku = write.sku.as_str();
        let expected = match write.expected_version {
            0 => None,
            v => Some(to_i64(v, "expected version")?),
        };
        let info = write.row.info.as_ref();
        let mut batch = Batch::new(BatchType::Unlogged);
        let mut values: Vec<Box<dyn SerializeRow + Send + Sync>> =
            Vec::with_capacity(1 + write.put_reservations.len() + write.remove_reservations.len());
        batch.append_statement(self.st.update_stock.clone());
        values.push(Box::new((
            to_i64(write.row.version, "version")?,
            write.row.on_hand,
            info.map(|i| i.name.clone()),
            info.map(|i| i.price),
            info.map(|i| i.currency.code().to_string()),
            sku.to_string(),
            expected,
        )));
        for r in &write.put_reservations {
            batch.append_statement(self.st.put_reservation.clone());
            values.push(Box::new((
                sku.to_string(),
                r.order_id.0,
                i32::try_from(r.qty).map_err(|_| {
                    StoreError::Unavailable(format!("reservation qty {} is out of range", r.qty))
                })?,
                r.expires_at,
                r.committed,
            )));
        }
        for id in &write.remove_reservations {
            batch.append_statement(self.st.remove_reservation.clone());
            values.push(Box::new((sku.to_string(), id.0)));
        }
        metrics::histogram!("kassa_store_lwt_batch_statements", "table" => "stock")
            .record(values.len() as f64);
        // One Paxos round, whatever the batch holds.
        count_statement("lwt");
        let started = Instant::now();
        let result = self.session.batch(&batch, values).await;
        metrics::histogram!("kassa_store_request_seconds", "store" => "scylla", "op" => "stock")
            .record(started.elapsed().as_secs_f64());
        let result = result.map_err(|e| unavailable("stock", e));
        let outcome = match result.and_then(|r| Lwt::read("stock", r)) {
            Ok(lwt) => lwt.outcome(),
            Err(e) => {
                // Applied or not, unknown: so is the entry (a stale one is skipped).
                self.known.forget(write.sku.as_str());
                return Err(e);
            }
        };
        // After it: retire the entry of a product that lost its name.
        self.index_after_write(&write, known, outcome == WriteOutcome::Applied)
            .await?;
        Ok(outcome)
    }

    async fn load_cart(&self, id: CartId) -> StoreResult<Option<CartRecord>> {
        self.load_body("cart", &self.st.select_cart, (id.0,), &id.to_string())
            .await
    }

    async fn write_cart(
        &self,
        cart: &CartRecord,
        expected_version: u64,
    ) -> StoreResult<WriteOutcome> {
        let body = encode(cart)?;
        let version = to_i64(cart.version, "cart version")?;
        if expected_version == 0 {
            self.run(
                "carts",
                &self.st.insert_cart,
                (cart.id.0, &cart.owner.0, version, body),
            )
            .await?;
            return Ok(WriteOutcome::Applied);
        }
        let lwt = self
            .lwt(
                "carts",
                &self.st.update_cart,
                (
                    &cart.owner.0,
                    version,
                    body,
                    cart.id.0,
                    to_i64(expected_version, "expected version")?,
                ),
            )
            .await?;
        Ok(lwt.outcome())
    }

    async fn load_order(&self, id: OrderId) -> StoreResult<Option<OrderRecord>> {
        // Every order write carries its body; a row without one is the fence of a checkout
        // that never stored its order (replicas.rs): no order.
        let (body, done): (Option<(Option<String>,)>, Option<(Option<i64>,)>) = tokio::try_join!(
            self.row("order", &self.st.select_order, (id.0,)),
            self.row("order_effects_done", &self.st.select_effects_done, (id.0,)),
        )?;
        let mut order: OrderRecord = match body {
            Some((Some(body),)) => decode(&body, "order", &id.to_string())?,
            Some((None,)) | None => return Ok(None),
        };
        // Its effects were recorded done at this version or a later one (record_effects_done).
        let done = done.and_then(|(version,)| version).unwrap_or(0);
        if i64::try_from(order.version).is_ok_and(|version| version <= done) {
            order.pending_effects.clear();
        }
        Ok(Some(order))
    }

    async fn record_effects_done(&self, order: &OrderRecord) -> StoreResult<bool> {
        let version = to_i64(order.version, "order version")?;
        self.run(
            "order_effects_done",
            &self.st.insert_effects_done,
            (order.id.0, version, version),
        )
        .await?;
        // After it, as after any write that settles an order: out of the active set.
        self.set_active(order.id, order.version, false).await?;
        Ok(true)
    }

    async fn write_order(
        &self,
        order: &OrderRecord,
        expected_version: u64,
    ) -> StoreResult<WriteOutcome> {
        let body = encode(order)?;
        let version = to_i64(order.version, "order version")?;
        let active = order.is_active();
        // Before the commit point: the entries that make the order findable (idempotent;
        // left behind if the write below loses, where readers skip them). The owner's listing
        // entry is never removed, so the creation's holds for every later version: a later
        // write is conditional on a version that only a creation written after it can have.
        let created = expected_version == 0;
        let listed = async {
            if created {
                self.run(
                    "user_orders",
                    &self.st.insert_user_order,
                    (&order.owner.0, order.id.0),
                )
                .await?;
            }
            Ok::<_, StoreError>(())
        };
        if active {
            tokio::try_join!(listed, self.set_active(order.id, order.version, true))?;
        } else {
            listed.await?;
        }
        // The commit point.
        let lwt = if expected_version == 0 {
            self.lwt(
                "orders",
                &self.st.insert_order,
                (
                    order.id.0,
                    &order.owner.0,
                    order.status.as_str(),
                    version,
                    body,
                ),
            )
            .await?
        } else {
            self.lwt(
                "orders",
                &self.st.update_order,
                (
                    &order.owner.0,
                    order.status.as_str(),
                    version,
                    body,
                    order.id.0,
                    to_i64(expected_version, "expected version")?,
                ),
            )
            .await?
        };
        // After it: retire the entry of an order that no longer needs attention.
        if lwt.applied && !active {
            self.set_active(order.id, order.version, false).await?;
        }
        Ok(lwt.outcome())
    }

    async fn list_orders(
        &self,
        user: &UserId,
        before: Option<OrderId>,
        limit: usize,
    ) -> StoreResult<Vec<OrderRecord>> {
        let mut listed = Vec::new();
        let mut cursor = before.map(|b| b.0);
        while listed.len() < limit {
            let want = limit - listed.len();
            let page_size = i32::try_from(want).unwrap_or(i32::MAX);
            let ids: Vec<(Uuid,)> = match cursor {
                None => {
                    self.rows(
                        "user_orders",
                        &self.st.list_user_orders,
                        (&user.0, page_size),
                    )
                    .await?
                }
                Some(before) => {
                    self.rows(
                        "user_orders",
                        &self.st.list_user_orders_before,
                        (&user.0, before, page_size),
                    )
                    .await?
                }
            };
            let Some((last,)) = ids.last() else { break };
            cursor = Some(*last);
            let exhausted = ids.len() < want;
            let loaded: Vec<Option<OrderRecord>> = stream::iter(ids)
                .map(|(id,)| self.load_order(OrderId(id)))
                .buffered(LOAD_CONCURRENCY)
                .try_collect()
                .await?;
            // An entry whose order was never stored (its creation failed) is skipped.
            listed.extend(loaded.into_iter().flatten().filter(|o| &o.owner == user));
            if exhausted {
                break;
            }
        }
        Ok(listed)
    }

    async fn active_orders(&self) -> StoreResult<Vec<OrderId>> {
        let buckets: Vec<Vec<(Uuid,)>> = stream::iter(0..BUCKETS)
            .map(|b| self.rows("active_orders", &self.st.select_active, (b,)))
            .buffered(BUCKETS as usize)
            .try_collect()
            .await?;
        Ok(buckets
            .into_iter()
            .flatten()
            .map(|(id,)| OrderId(id))
            .collect())
    }

    async fn claim_idempotency(
        &self,
        request: IdempotencyRequest<'_>,
    ) -> StoreResult<IdempotencyClaim> {
        let user = &request.user.0;
        let ttl = retention_ttl(request.ttl);
        // The caller's claim id, the same in every round: the key holds it once claimed.
        let claim = request.claim;
        for _ in 0..CLAIM_ROUNDS {
            let inserted = self
                .lwt(
                    "idempotency_keys",
                    &self.st.insert_idempotency,
                    (
                        user,
                        request.key,
                        claim,
                        request.fingerprint,
                        request.now,
                        ttl,
                    ),
                )
                .await?;
            if inserted.applied {
                return Ok(IdempotencyClaim::Claimed);
            }
            // Someone holds the key: the stored claim came back with the answer.
            let held = inserted.uuid("claim");
            if let (Some(_), Some(created_at), Some(fingerprint)) = (
                held,
                inserted.timestamp("created_at"),
                inserted.text("fingerprint"),
            ) {
                let response = match (
                    inserted.int("response_status"),
                    inserted.text("response_body"),
                ) {
                    (Some(status), Some(body)) => Some(StoredResponse {
                        status: u16::try_from(status).map_err(|_| {
                            StoreError::Corrupt(format!(
                                "idempotency key {user}/{}: status {status}",
                                request.key
                            ))
                        })?,
                        body: body.to_string(),
                    }),
                    _ => None,
                };
                let held = HeldClaim {
                    created_at,
                    fingerprint,
                    response: response.as_ref(),
                };
                if let Decision::Answer(claim) = decide(&held, &request) {
                    return Ok(claim);
                }
            }
            // Expired, stale or half-expired: take it over, unless another claim did first.
            let taken = self
                .lwt(
                    "idempotency_keys",
                    &self.st.take_over_idempotency,
                    (
                        ttl,
                        claim,
                        request.fingerprint,
                        request.now,
                        user,
                        request.key,
                        held,
                    ),
                )
                .await?;
            if taken.applied {
                return Ok(IdempotencyClaim::Claimed);
            }
        }
        Err(StoreError::Unavailable(format!(
            "idempotency key {user}/{} stayed contended",
            request.key
        )))
    }

    async fn complete_idempotency(
        &self,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> StoreResult<()> {
        // The response expires with the claim it completes.
        let remaining: Option<(Option<i32>,)> = self
            .row("idempotency_keys", &self.st.idempotency_ttl, (&user.0, key))
            .await?;
        let Some((remaining,)) = remaining else {
            return Ok(());
        };
        let ttl = remaining.unwrap_or(0).max(1);
        // Not applied: the claim was released meanwhile, and stays forgotten.
        let _ = self
            .lwt(
                "idempotency_keys",
                &self.st.complete_idempotency,
                (
                    ttl,
                    i32::from(response.status),
                    &response.body,
                    &user.0,
                    key,
                ),
            )
            .await?;
        Ok(())
    }

    async fn release_idempotency(&self, user: &UserId, key: &str) -> StoreResult<()> {
        let _ = self
            .lwt(
                "idempotency_keys",
                &self.st.release_idempotency,
                (&user.0, key),
            )
            .await?;
        Ok(())
    }

    async fn purge_idempotency(
        &self,
        _created_before: time::OffsetDateTime,
        _limit: usize,
    ) -> StoreResult<usize> {
        // The rows' TTL deletes them (twice their lifetime after they were written).
        Ok(0)
    }

    async fn enqueue_email(&self, email: &OutboxEmail) -> StoreResult<()> {
        self.insert_email(email).await.map(|_| ())
    }

    async fn enqueue_claimed_email(
        &self,
        email: &OutboxEmail,
        claimed_until: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.insert_email(&OutboxEmail {
            next_attempt_at: claimed_until,
            claimed_by: Some(self.replica.clone()),
            ..email.clone()
        })
        .await
    }

    async fn update_email(&self, email: &OutboxEmail) -> StoreResult<()> {
        let key = (email.order_id.0, i32::from(email.kind.code()));
        let body = encode(email)?;
        if email.sent_at.is_some() {
            // Final, and written by the mailer that sent it: a plain write to a table no LWT
            // writes (cql/0005), which every reader takes over the outbox row.
            self.run("outbox_sent", &self.st.insert_sent, (key.0, key.1, &body))
                .await?;
            return self.unsent(email, false).await;
        }
        self.unsent(email, true).await?;
        let mut written = false;
        for _ in 0..CLAIM_ROUNDS {
            let replaced = self
                .lwt("outbox", &self.st.update_outbox, (&body, key.0, key.1))
                .await?;
            if replaced.applied {
                written = true;
                break;
            }
            let created = self
                .lwt("outbox", &self.st.insert_outbox, (key.0, key.1, &body))
                .await?;
            if created.applied {
                written = true;
                break;
            }
        }
        if !written {
            return Err(StoreError::Unavailable(format!(
                "outbox email {}/{} stayed contended",
                email.order_id,
                email.kind.as_str()
            )));
        }
        Ok(())
    }

    async fn replace_email(
        &self,
        expected: &OutboxEmail,
        next: &OutboxEmail,
    ) -> StoreResult<WriteOutcome> {
        // Recorded as sent (outbox_sent): the outbox row is no longer the email's state.
        if expected.sent_at.is_none()
            && self
                .is_sent(expected.order_id.0, expected.kind.code())
                .await?
        {
            return Ok(WriteOutcome::Conflict);
        }
        // The entry is one JSON document written by `encode`: comparing the stored text
        // with the expected entry's encoding is the compare-and-set.
        let replaced = self
            .lwt(
                "outbox",
                &self.st.replace_outbox,
                (
                    encode(next)?,
                    expected.order_id.0,
                    i32::from(expected.kind.code()),
                    encode(expected)?,
                ),
            )
            .await?;
        if !replaced.applied {
            return Ok(WriteOutcome::Conflict);
        }
        if next.sent_at.is_some() {
            self.unsent(next, false).await?;
        }
        Ok(WriteOutcome::Applied)
    }

    async fn due_emails(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<OutboxEmail>> {
        let loaded: Vec<Option<OutboxEmail>> = stream::iter(self.unsent_ids().await?)
            .map(|(order_id, kind)| self.load_email(order_id, kind))
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut due = Vec::new();
        for email in loaded.into_iter().flatten() {
            if email.sent_at.is_some() {
                // Sent, but its index entry outlived a crash: drop it now.
                self.unsent(&email, false).await?;
            } else if email.next_attempt_at <= now {
                due.push(email);
            }
        }
        due.sort_by_key(|e| (e.created_at, e.order_id, e.kind));
        due.truncate(limit);
        Ok(due)
    }

    async fn outbox_depth(&self) -> StoreResult<u64> {
        let counts: Vec<Option<(i64,)>> = stream::iter(0..BUCKETS)
            .map(|b| self.row("outbox_unsent", &self.st.count_unsent, (b,)))
            .buffered(BUCKETS as usize)
            .try_collect()
            .await?;
        Ok(counts
            .into_iter()
            .flatten()
            .map(|(n,)| u64::try_from(n).unwrap_or(0))
            .sum())
    }
}

/// The index bucket of an id: stable across processes and releases (part of the schema).
fn bucket(id: Uuid) -> i32 {
    (id.as_u128() % BUCKETS as u128) as i32
}

/// The server-side TTL of an idempotency key: twice its lifetime (expiry itself is decided
/// with the caller's clock; the TTL only collects the garbage).
fn retention_ttl(ttl: time::Duration) -> i32 {
    let seconds = ttl
        .whole_seconds()
        .saturating_mul(2)
        .clamp(1, MAX_TTL_SECONDS);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

/// The server-side TTL of a checkout session's row: the session's lifetime by the caller's
/// clock (it is stored when created) plus a margin.
/// A stock partition's `version` static column, which every stored SKU has.
fn stock_version(sku: &Sku, version: Option<i64>) -> StoreResult<u64> {
    version
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("stock {sku} has no version")))
}

fn session_ttl(session: &CheckoutSession) -> i32 {
    let lifetime = session.expires_at - session.created_at;
    let seconds = lifetime
        .saturating_add(SESSION_TTL_MARGIN)
        .whole_seconds()
        .clamp(1, MAX_TTL_SECONDS);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

fn to_i64(v: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Unavailable(format!("{what} {v} is out of range")))
}

fn unavailable(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{op}: {e}"))
}

fn corrupt(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{op}: {e}"))
}

fn encode(value: &impl Serialize) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Unavailable(format!("cannot encode: {e}")))
}

fn decode<T: DeserializeOwned>(body: &str, what: &str, key: &str) -> StoreResult<T> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("{what} {key}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_in_range() {
        let id = Uuid::parse_str("0190f5a2-7c1e-7000-8000-00000000002a").expect("uuid");
        assert_eq!(bucket(id), 0x2a % 16);
        for _ in 0..1000 {
            let b = bucket(Uuid::now_v7());
            assert!((0..BUCKETS).contains(&b));
        }
    }

    #[test]
    fn retention_ttl_is_twice_the_lifetime_within_cassandra_limits() {
        assert_eq!(retention_ttl(time::Duration::hours(24)), 172_800);
        assert_eq!(retention_ttl(time::Duration::ZERO), 1);
        assert_eq!(
            i64::from(retention_ttl(time::Duration::days(100_000))),
            MAX_TTL_SECONDS
        );
    }
}
