//! What every handler shares: the actor registries, the store, the clock, the config.
//! Built once by `startup`; handlers reach actors only through the registries.

use crate::config::Config;
use crate::shopper::Pages;
use crate::shopper::links::OrderLinks;
use kassa_actors::cart::{CartActor, EndCheckout};
use kassa_actors::clock::SharedClock;
use kassa_actors::domain::{CartId, OrderId};
use kassa_actors::gateway::SharedGateway;
use kassa_actors::mailer::Mailer;
use kassa_actors::order_actor::{ListedActive, OrderActor, OrderTick};
use kassa_actors::product::{ProductActor, Release};
use kassa_actors::registry::{PassivateIfIdle, Registry};
use kassa_actors::store::SharedStore;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashSet;
use std::sync::Arc;

pub struct AppState {
    /// The shopper's order page, cancel and checkout links.
    pub links: OrderLinks,
    /// The shopper pages' templates.
    pub pages: Arc<Pages>,
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub clock: SharedClock,
    pub products: Registry<ProductActor>,
    pub carts: Registry<CartActor>,
    pub orders: Registry<OrderActor>,
    pub gateway: SharedGateway,
    /// Drains the email outbox; flushed and stopped at shutdown.
    pub mailer: Arc<Mailer>,
    /// The HMAC key of payment webhooks: `KASSA_WEBHOOK_SECRET` after `whsec_`, decoded.
    pub webhook_key: Vec<u8>,
    pub metrics: PrometheusHandle,
    /// Set when shutdown begins: /readyz answers 503 from then on.
    pub shutting_down: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// Asks every live actor to stop if it has been idle long enough (the passivation tick).
    pub fn passivate_idle_actors(&self) {
        self.products.broadcast(PassivateIfIdle);
        self.carts.broadcast(PassivateIfIdle);
        self.orders.broadcast(PassivateIfIdle);
    }

    /// Asks every live order to expire, reconcile or re-drive what it must now (active
    /// orders also tick themselves every second; tests call this after moving the clock).
    pub fn tick_orders(&self) {
        self.orders.broadcast(OrderTick);
    }

    /// Deletes idempotency keys past their 24 h, a batch at a time (the embedded store keeps
    /// them until then; Cassandra expires them itself). Answers how many went.
    pub async fn purge_idempotency_keys(&self) -> anyhow::Result<usize> {
        const BATCH: usize = 1_000;
        let cutoff = self.clock.now() - kassa_actors::idempotency::TTL;
        let mut purged = 0;
        loop {
            let batch = self.store.purge_idempotency(cutoff, BATCH).await?;
            purged += batch;
            if batch < BATCH {
                return Ok(purged);
            }
        }
    }

    /// API.md's crash rule, at start-up before serving: what checkouts interrupted by a
    /// crash still hold is given back at once instead of at its expiry.
    ///
    /// On a store only this process writes, every idempotency claim still in progress is
    /// released (no request runs yet), and every cart locked by an order that was never
    /// stored has that order's reservations released (the cart's lines name the SKUs: it
    /// cannot change while locked) and its lock lifted, lines kept; emails the previous run
    /// had claimed but not recorded as sent are made due at once. On a shared store the same
    /// is done for the checkouts and email claims this replica's previous run left (its name
    /// is stable across restarts); other replicas' are theirs until they fall silent
    /// (`recover_silent_replicas`). Answers (keys released, checkouts recovered, emails due).
    pub async fn recover_interrupted_checkouts(&self) -> anyhow::Result<(usize, usize, usize)> {
        let (keys, recovered, emails) = match self.store.replica() {
            Some(me) => {
                let me = me.to_string();
                self.store.heartbeat(self.clock.now()).await?;
                let (checkouts, keys) = self.recover_replica(&me).await?;
                let emails = self
                    .store
                    .release_email_claims_of(self.clock.now(), std::slice::from_ref(&me))
                    .await?;
                (keys, checkouts, emails)
            }
            None => self.recover_single_writer().await?,
        };
        count_recovered(keys, recovered, emails);
        Ok((keys, recovered, emails))
    }

    async fn recover_single_writer(&self) -> anyhow::Result<(usize, usize, usize)> {
        if self.store.is_shared() {
            return Ok((0, 0, 0));
        }
        let keys = self.store.release_unfinished_idempotency().await?;
        let emails = self.store.release_email_claims(self.clock.now()).await?;
        // Active orders (pending ones included) keep their locks: their actors settle them.
        let active: HashSet<OrderId> = self.store.active_orders().await?.into_iter().collect();
        let mut recovered = 0;
        for cart in self.store.locked_carts(usize::MAX).await? {
            let Some(order_id) = cart.locked_by.filter(|id| !active.contains(id)) else {
                continue;
            };
            if self.release_unstored(order_id, cart.id).await? {
                recovered += 1;
            }
        }
        Ok((keys, recovered, emails))
    }

    /// Releases the reservations and the cart lock of checkout `order_id` unless its order
    /// was stored (then its actor settles it). The order id is fenced first, so that a
    /// checkout still running (a replica presumed dead that was only slow) cannot store its
    /// order on the stock released here: its write fails and it releases what it took.
    /// Answers whether it released anything.
    async fn release_unstored(&self, order_id: OrderId, cart_id: CartId) -> anyhow::Result<bool> {
        if !self.store.fence_order(order_id).await? {
            return Ok(false);
        }
        let Some(cart) = self.store.load_cart(cart_id).await? else {
            return Ok(false);
        };
        for line in &cart.lines {
            self.products
                .ask(&line.sku, Release { order_id })
                .await
                .map_err(anyhow::Error::from)?
                .map_err(anyhow::Error::from)?;
        }
        if cart.locked_by == Some(order_id) {
            let end = EndCheckout {
                order_id,
                paid: None,
            };
            self.carts
                .ask(&cart.id, end)
                .await
                .map_err(anyhow::Error::from)?
                .map_err(anyhow::Error::from)?;
        }
        tracing::warn!(%order_id, cart_id = %cart.id, "released what a checkout interrupted by a crash held");
        Ok(true)
    }

    /// Every checkout `replica` began and never ended: reservations and cart lock released
    /// unless its order was stored, its Idempotency-Key released unless a response was
    /// stored under it, its note deleted. Answers (checkouts released, keys released).
    async fn recover_replica(&self, replica: &str) -> anyhow::Result<(usize, usize)> {
        const BATCH: usize = 500;
        let (mut checkouts, mut keys) = (0, 0);
        loop {
            let batch = self.store.checkouts_of(replica, BATCH).await?;
            for checkout in &batch {
                if let Some(cart_id) = checkout.cart_id
                    && self.release_unstored(checkout.order_id, cart_id).await?
                {
                    checkouts += 1;
                }
                if let (Some(key), Some(claim)) = (&checkout.idempotency_key, checkout.claim) {
                    self.store
                        .release_unfinished_key(&checkout.user, key, claim)
                        .await?;
                    keys += 1;
                }
                self.store.end_checkout(replica, checkout.order_id).await?;
            }
            if batch.len() < BATCH {
                return Ok((checkouts, keys));
            }
        }
    }

    /// On a shared store: the replicas silent for longer than `silence` are presumed dead;
    /// what their unfinished checkouts held is released, their email claims made due, and
    /// they are forgotten. Any replica may run it at any time (every step is idempotent).
    /// Answers how many replicas it recovered.
    pub async fn recover_silent_replicas(&self, silence: time::Duration) -> anyhow::Result<usize> {
        let silent = self
            .store
            .silent_replicas(self.clock.now(), silence)
            .await?;
        if silent.is_empty() {
            return Ok(0);
        }
        let (mut checkouts, mut keys) = (0, 0);
        for replica in &silent {
            let (c, k) = self.recover_replica(replica).await?;
            checkouts += c;
            keys += k;
        }
        let emails = self
            .store
            .release_email_claims_of(self.clock.now(), &silent)
            .await?;
        for replica in &silent {
            self.store.forget_replica(replica).await?;
        }
        tracing::warn!(replicas = ?silent, checkouts, idempotency_keys = keys, emails, "recovered replicas that fell silent");
        count_recovered(keys, checkouts, emails);
        Ok(silent.len())
    }

    /// Wakes every order the store lists as active (start-up: expiries and unfinished steps
    /// that were due while the process was down).
    pub async fn resume_active_orders(&self) -> anyhow::Result<usize> {
        let active = self.store.active_orders().await?;
        for id in active.iter().filter(|id| !self.orders.is_live(id)) {
            let _ = self.orders.addr(id).try_send(ListedActive);
        }
        Ok(active.len())
    }
}

fn count_recovered(keys: usize, checkouts: usize, emails: usize) {
    metrics::counter!("kassa_crash_recovered_total", "what" => "idempotency_key")
        .increment(keys as u64);
    metrics::counter!("kassa_crash_recovered_total", "what" => "checkout")
        .increment(checkouts as u64);
    metrics::counter!("kassa_crash_recovered_total", "what" => "email").increment(emails as u64);
}
