//! The CQL of the scylla store: every statement it runs, prepared once at open with the
//! keyspace written into each table name. Marks reads and plain index writes idempotent (the
//! driver may retry them) and never a conditional statement. Runs nothing but `prepare`.

use anyhow::Context as _;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

/// Every statement the store runs, prepared once at open.
pub(super) struct Statements {
    pub(super) ping: PreparedStatement,
    pub(super) select_stock: PreparedStatement,
    pub(super) select_stock_version: PreparedStatement,
    pub(super) update_stock: PreparedStatement,
    pub(super) put_reservation: PreparedStatement,
    pub(super) remove_reservation: PreparedStatement,
    pub(super) select_cart: PreparedStatement,
    pub(super) insert_cart: PreparedStatement,
    pub(super) update_cart: PreparedStatement,
    pub(super) select_order: PreparedStatement,
    pub(super) select_effects_done: PreparedStatement,
    pub(super) insert_effects_done: PreparedStatement,
    pub(super) insert_order: PreparedStatement,
    pub(super) update_order: PreparedStatement,
    pub(super) list_user_orders: PreparedStatement,
    pub(super) list_user_orders_before: PreparedStatement,
    pub(super) insert_user_order: PreparedStatement,
    pub(super) insert_active: PreparedStatement,
    pub(super) delete_active: PreparedStatement,
    pub(super) select_active: PreparedStatement,
    pub(super) insert_idempotency: PreparedStatement,
    pub(super) take_over_idempotency: PreparedStatement,
    pub(super) idempotency_ttl: PreparedStatement,
    pub(super) complete_idempotency: PreparedStatement,
    pub(super) release_idempotency: PreparedStatement,
    pub(super) select_outbox: PreparedStatement,
    pub(super) select_sent: PreparedStatement,
    pub(super) insert_sent: PreparedStatement,
    pub(super) insert_outbox: PreparedStatement,
    pub(super) update_outbox: PreparedStatement,
    pub(super) replace_outbox: PreparedStatement,
    pub(super) insert_unsent: PreparedStatement,
    pub(super) delete_unsent: PreparedStatement,
    pub(super) select_unsent: PreparedStatement,
    pub(super) count_unsent: PreparedStatement,
    pub(super) insert_session: PreparedStatement,
    pub(super) select_session: PreparedStatement,
    pub(super) insert_catalog: PreparedStatement,
    pub(super) delete_catalog: PreparedStatement,
    pub(super) list_catalog: PreparedStatement,
    pub(super) list_catalog_after: PreparedStatement,
    pub(super) select_listing: PreparedStatement,
    pub(super) heartbeat: PreparedStatement,
    pub(super) select_replicas: PreparedStatement,
    pub(super) delete_replica: PreparedStatement,
    pub(super) insert_in_flight: PreparedStatement,
    pub(super) delete_in_flight: PreparedStatement,
    pub(super) select_in_flight: PreparedStatement,
    pub(super) release_unfinished_key: PreparedStatement,
    pub(super) fence_order: PreparedStatement,
}

impl Statements {
    /// Every table name is qualified with the keyspace: the session is bound to none.
    pub(super) async fn prepare(session: &Session, keyspace: &str) -> anyhow::Result<Self> {
        let ks = format!("\"{keyspace}\"");
        // Reads and plain index writes may be retried; conditional statements never are.
        let idempotent = |mut s: PreparedStatement| {
            s.set_is_idempotent(true);
            s
        };
        let prepare = |cql: &str| {
            let cql = cql.replace("{ks}", &ks);
            async move {
                session
                    .prepare(cql.as_str())
                    .await
                    .with_context(|| format!("cannot prepare: {cql}"))
            }
        };
        Ok(Self {
            ping: idempotent(prepare("SELECT release_version FROM system.local").await?),
            select_stock: idempotent(
                prepare(
                    "SELECT version, on_hand, name, price, currency, order_id, qty, expires_at, \
                     committed FROM {ks}.stock WHERE sku = ?",
                )
                .await?,
            ),
            // The static columns come with the first row: no reservation is read past it.
            select_stock_version: idempotent(
                prepare("SELECT version FROM {ks}.stock WHERE sku = ? LIMIT 1").await?,
            ),
            update_stock: prepare(
                "UPDATE {ks}.stock SET version = ?, on_hand = ?, name = ?, price = ?, currency = ? \
                 WHERE sku = ? IF version = ?",
            )
            .await?,
            put_reservation: prepare(
                "INSERT INTO {ks}.stock (sku, order_id, qty, expires_at, committed) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .await?,
            remove_reservation: prepare("DELETE FROM {ks}.stock WHERE sku = ? AND order_id = ?").await?,
            select_cart: idempotent(prepare("SELECT body FROM {ks}.carts WHERE id = ?").await?),
            // A new cart's id is fresh (`CartId::new`): no other writer can race its creation,
            // so it is a plain write, at the write timestamp 1 so that every later change
            // (an LWT, timestamped by its Paxos ballot) wins over it, whatever the clocks say,
            // and a retried creation is the same write again.
            insert_cart: idempotent(
                prepare(
                    "INSERT INTO {ks}.carts (id, owner, version, body) VALUES (?, ?, ?, ?) \
                     USING TIMESTAMP 1",
                )
                .await?,
            ),
            update_cart: prepare(
                "UPDATE {ks}.carts SET owner = ?, version = ?, body = ? WHERE id = ? IF version = ?",
            )
            .await?,
            select_order: idempotent(prepare("SELECT body FROM {ks}.orders WHERE id = ?").await?),
            select_effects_done: idempotent(
                prepare("SELECT version FROM {ks}.order_effects_done WHERE id = ?").await?,
            ),
            insert_effects_done: idempotent(
                prepare(
                    "INSERT INTO {ks}.order_effects_done (id, version) VALUES (?, ?) \
                     USING TIMESTAMP ?",
                )
                .await?,
            ),
            insert_order: prepare(
                "INSERT INTO {ks}.orders (id, owner, status, version, body) VALUES (?, ?, ?, ?, ?) \
                 IF NOT EXISTS",
            )
            .await?,
            update_order: prepare(
                "UPDATE {ks}.orders SET owner = ?, status = ?, version = ?, body = ? \
                 WHERE id = ? IF version = ?",
            )
            .await?,
            list_user_orders: idempotent(
                prepare("SELECT order_id FROM {ks}.user_orders WHERE owner = ? LIMIT ?").await?,
            ),
            list_user_orders_before: idempotent(
                prepare(
                    "SELECT order_id FROM {ks}.user_orders WHERE owner = ? AND order_id < ? LIMIT ?",
                )
                .await?,
            ),
            insert_user_order: idempotent(
                prepare("INSERT INTO {ks}.user_orders (owner, order_id) VALUES (?, ?)").await?,
            ),
            insert_active: idempotent(
                prepare(
                    "INSERT INTO {ks}.active_orders (bucket, order_id) VALUES (?, ?) \
                     USING TIMESTAMP ?",
                )
                .await?,
            ),
            delete_active: idempotent(
                prepare(
                    "DELETE FROM {ks}.active_orders USING TIMESTAMP ? \
                     WHERE bucket = ? AND order_id = ?",
                )
                .await?,
            ),
            select_active: idempotent(
                prepare("SELECT order_id FROM {ks}.active_orders WHERE bucket = ?").await?,
            ),
            insert_idempotency: prepare(
                "INSERT INTO {ks}.idempotency_keys (user_id, key, claim, fingerprint, created_at) \
                 VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?",
            )
            .await?,
            take_over_idempotency: prepare(
                "UPDATE {ks}.idempotency_keys USING TTL ? SET claim = ?, fingerprint = ?, \
                 created_at = ?, response_status = null, response_body = null \
                 WHERE user_id = ? AND key = ? IF claim = ?",
            )
            .await?,
            idempotency_ttl: idempotent(
                prepare("SELECT TTL(claim) FROM {ks}.idempotency_keys WHERE user_id = ? AND key = ?")
                    .await?,
            ),
            complete_idempotency: prepare(
                "UPDATE {ks}.idempotency_keys USING TTL ? SET response_status = ?, \
                 response_body = ? WHERE user_id = ? AND key = ? IF EXISTS",
            )
            .await?,
            release_idempotency: prepare(
                "DELETE FROM {ks}.idempotency_keys WHERE user_id = ? AND key = ? IF EXISTS",
            )
            .await?,
            select_outbox: idempotent(
                prepare("SELECT body FROM {ks}.outbox WHERE order_id = ? AND kind = ?").await?,
            ),
            select_sent: idempotent(
                prepare("SELECT body FROM {ks}.outbox_sent WHERE order_id = ? AND kind = ?")
                    .await?,
            ),
            insert_sent: idempotent(
                prepare("INSERT INTO {ks}.outbox_sent (order_id, kind, body) VALUES (?, ?, ?)")
                    .await?,
            ),
            insert_outbox: prepare(
                "INSERT INTO {ks}.outbox (order_id, kind, body) VALUES (?, ?, ?) IF NOT EXISTS",
            )
            .await?,
            update_outbox: prepare(
                "UPDATE {ks}.outbox SET body = ? WHERE order_id = ? AND kind = ? IF EXISTS",
            )
            .await?,
            replace_outbox: prepare(
                "UPDATE {ks}.outbox SET body = ? WHERE order_id = ? AND kind = ? IF body = ?",
            )
            .await?,
            insert_unsent: idempotent(
                prepare("INSERT INTO {ks}.outbox_unsent (bucket, order_id, kind) VALUES (?, ?, ?)")
                    .await?,
            ),
            delete_unsent: idempotent(
                prepare("DELETE FROM {ks}.outbox_unsent WHERE bucket = ? AND order_id = ? AND kind = ?")
                    .await?,
            ),
            select_unsent: idempotent(
                prepare("SELECT order_id, kind FROM {ks}.outbox_unsent WHERE bucket = ?").await?,
            ),
            count_unsent: idempotent(
                prepare("SELECT COUNT(*) FROM {ks}.outbox_unsent WHERE bucket = ?").await?,
            ),
            insert_session: idempotent(
                prepare("INSERT INTO {ks}.checkout_sessions (id, body) VALUES (?, ?) USING TTL ?")
                    .await?,
            ),
            select_session: idempotent(
                prepare("SELECT body FROM {ks}.checkout_sessions WHERE id = ?").await?,
            ),
            insert_catalog: idempotent(
                prepare("INSERT INTO {ks}.catalog (bucket, sku) VALUES (?, ?) USING TIMESTAMP ?")
                    .await?,
            ),
            delete_catalog: idempotent(
                prepare("DELETE FROM {ks}.catalog USING TIMESTAMP ? WHERE bucket = ? AND sku = ?")
                    .await?,
            ),
            list_catalog: idempotent(
                prepare("SELECT sku FROM {ks}.catalog WHERE bucket = ? LIMIT ?").await?,
            ),
            list_catalog_after: idempotent(
                prepare("SELECT sku FROM {ks}.catalog WHERE bucket = ? AND sku > ? LIMIT ?")
                    .await?,
            ),
            select_listing: idempotent(
                prepare("SELECT version, name FROM {ks}.stock WHERE sku = ? LIMIT 1").await?,
            ),
            heartbeat: idempotent(
                prepare(
                    "INSERT INTO {ks}.replicas (shard, replica, heartbeat_at) VALUES (0, ?, ?)",
                )
                .await?,
            ),
            select_replicas: idempotent(
                prepare("SELECT replica, heartbeat_at FROM {ks}.replicas WHERE shard = 0").await?,
            ),
            delete_replica: idempotent(
                prepare("DELETE FROM {ks}.replicas WHERE shard = 0 AND replica = ?").await?,
            ),
            insert_in_flight: idempotent(
                prepare(
                    "INSERT INTO {ks}.checkouts_by_minute \
                     (replica, minute, order_id, cart_id, user_id, idempotency_key, claim) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .await?,
            ),
            delete_in_flight: idempotent(
                prepare(
                    "DELETE FROM {ks}.checkouts_by_minute \
                     WHERE replica = ? AND minute = ? AND order_id = ?",
                )
                .await?,
            ),
            select_in_flight: idempotent(
                prepare(
                    "SELECT order_id, cart_id, user_id, idempotency_key, claim \
                     FROM {ks}.checkouts_by_minute WHERE replica = ? AND minute = ? LIMIT ?",
                )
                .await?,
            ),
            fence_order: prepare(
                "INSERT INTO {ks}.orders (id, status) VALUES (?, 'fenced') IF NOT EXISTS",
            )
            .await?,
            release_unfinished_key: prepare(
                "DELETE FROM {ks}.idempotency_keys WHERE user_id = ? AND key = ? \
                 IF claim = ? AND response_status = null",
            )
            .await?,
        })
    }
}
