//! Kassa's domain and its actors, free of HTTP: products, carts, orders, the registry that
//! hosts them, the `Store` trait they persist through, and the idempotency rule every store
//! applies. `kassa` (src/) depends on this crate, never the reverse.

mod backoff;
pub mod cart;
pub mod clock;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod domain;
pub mod gateway;
pub mod idempotency;
pub mod mailer;
pub mod order;
pub mod order_actor;
pub mod product;
pub mod registry;
pub mod store;

use time::Duration;

/// Why an actor could not do what it was asked (beyond the domain's own answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    /// The store failed or could not be reached; nothing was changed.
    #[error("store unavailable")]
    Unavailable,
    /// Other writers kept winning the conditional write; nothing was changed.
    #[error("too much contention, try again")]
    Contended,
}

/// Tuning shared by every keyed actor.
#[derive(Debug, Clone)]
pub struct ActorSettings {
    /// Stop after this long without a message (passivation).
    pub idle_after: Duration,
    /// At most this many live actors of each kind, give or take: beyond it, the longest-lived
    /// ones idle for `evict_after` are stopped (they reload from the store when next asked).
    pub max_live: usize,
    /// How long an actor must have been idle before the cap may stop it.
    pub evict_after: Duration,
    pub mailbox_capacity: usize,
    /// An unsettled reservation is dropped this long after it expired, whatever its order.
    pub orphan_grace: Duration,
    /// An unsettled reservation whose order is not stored this long after it expired is
    /// dropped then: the checkout that made it stopped (a crash) before writing its order.
    /// Longer than a checkout takes from reserving to writing its order (the gateway's
    /// attempts included: under a minute).
    pub lost_order_grace: Duration,
    /// How long a committed reservation is remembered, so a replayed commit is recognised.
    pub committed_retention: Duration,
    /// How many times a product command whose write lost to another replica's is decided
    /// again before it is answered `Contended` (503). The waits between grow to 250 ms, so
    /// 12 retries take about 1 to 3 s, within the 5 s a request waits for its actor.
    pub max_conflict_retries: u32,
    /// On a shared store, how long a SKU's commits may wait to share a conditional write
    /// with its next reservation or release (or with each other); zero: written at once.
    pub commit_linger: std::time::Duration,
}

impl Default for ActorSettings {
    fn default() -> Self {
        Self {
            idle_after: Duration::minutes(5),
            max_live: 50_000,
            evict_after: Duration::seconds(1),
            mailbox_capacity: 4096,
            orphan_grace: Duration::hours(1),
            lost_order_grace: Duration::minutes(2),
            committed_retention: Duration::days(7),
            max_conflict_retries: 12,
            commit_linger: std::time::Duration::from_millis(250),
        }
    }
}
