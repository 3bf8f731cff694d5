//! Crash recovery across replicas (`cql/0003`, `cql/0004`): each replica's heartbeat, and the
//! checkouts it is running, noted before they hold anything (by replica and minute, so that
//! no partition read meets more than a minute of deleted notes). When a replica dies, any
//! other finds its silence, reads its checkouts and releases what they held; a restarted
//! process (same replica name) does it for its previous run at start-up. Owns the rows; what
//! releasing means (stock, cart, key) is the caller's (`AppState::recover_replicas`).

use super::{LOAD_CONCURRENCY, ScyllaStore};
use futures_util::{StreamExt, TryStreamExt, stream};
use kassa_actors::domain::{CartId, OrderId, UserId};
use kassa_actors::store::{InFlightCheckout, OutboxEmail, Store, StoreResult, WriteOutcome};
use time::OffsetDateTime;
use uuid::Uuid;

/// How far back recovery looks for a replica's notes, in minutes: a checkout answers within
/// seconds, so an older note is one whose delete failed, and what it held has lapsed.
const RECOVERY_MINUTES: i64 = 30;

/// The minute a checkout's note is filed under: its order id's own time (a UUIDv7 carries
/// its creation in milliseconds), so that ending the checkout finds the note from the id
/// alone. An id without a time (not a UUIDv7; Kassa makes none) goes to minute 0, which
/// recovery reads too.
fn minute_of(order_id: OrderId) -> i64 {
    order_id
        .0
        .get_timestamp()
        .map_or(0, |t| i64::try_from(t.to_unix().0).unwrap_or(i64::MAX) / 60)
}

/// The minutes whose notes may belong to checkouts still unanswered, newest first: the
/// current minute on the ids' own clock (a fresh id's), one ahead for a replica whose clock
/// runs ahead, the last `RECOVERY_MINUTES`, and minute 0.
fn recent_minutes() -> Vec<i64> {
    let now = minute_of(OrderId::new());
    (now - RECOVERY_MINUTES..=now + 1)
        .rev()
        .chain(std::iter::once(0))
        .collect()
}

impl ScyllaStore {
    pub(super) async fn write_heartbeat(&self, now: OffsetDateTime) -> StoreResult<()> {
        self.run("replicas", &self.st.heartbeat, (&self.replica, now))
            .await
            .map(|_| ())
    }

    pub(super) async fn silent(
        &self,
        now: OffsetDateTime,
        silence: time::Duration,
    ) -> StoreResult<Vec<String>> {
        let rows: Vec<(String, Option<OffsetDateTime>)> =
            self.rows("replicas", &self.st.select_replicas, ()).await?;
        Ok(rows
            .into_iter()
            .filter(|(name, at)| *name != self.replica && at.is_none_or(|at| at + silence < now))
            .map(|(name, _)| name)
            .collect())
    }

    pub(super) async fn note_checkout(&self, c: &InFlightCheckout) -> StoreResult<()> {
        self.run(
            "checkouts_by_minute",
            &self.st.insert_in_flight,
            (
                &self.replica,
                minute_of(c.order_id),
                c.order_id.0,
                c.cart_id.map(|cart| cart.0),
                &c.user.0,
                c.idempotency_key.as_deref(),
                c.claim,
            ),
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn forget_checkout(
        &self,
        replica: &str,
        order_id: OrderId,
    ) -> StoreResult<()> {
        self.run(
            "checkouts_by_minute",
            &self.st.delete_in_flight,
            (replica, minute_of(order_id), order_id.0),
        )
        .await
        .map(|_| ())
    }

    /// Up to `limit` of `replica`'s notes, from the minutes recovery reads.
    pub(super) async fn in_flight(
        &self,
        replica: &str,
        limit: usize,
    ) -> StoreResult<Vec<InFlightCheckout>> {
        type Row = (Uuid, Option<Uuid>, String, Option<String>, Option<Uuid>);
        let per_minute = i32::try_from(limit).unwrap_or(i32::MAX);
        let minutes: Vec<Vec<Row>> = stream::iter(recent_minutes())
            .map(|minute| {
                self.rows(
                    "checkouts_by_minute",
                    &self.st.select_in_flight,
                    (replica, minute, per_minute),
                )
            })
            .buffered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(minutes
            .into_iter()
            .flatten()
            .take(limit)
            .map(|(order, cart, user, key, claim)| InFlightCheckout {
                order_id: OrderId(order),
                cart_id: cart.map(CartId),
                user: UserId(user),
                idempotency_key: key,
                claim,
            })
            .collect())
    }

    /// A bodiless `fenced` row under the order's id, if no order is there: the checkout's
    /// own `INSERT ... IF NOT EXISTS` then fails, so a replica presumed dead that was only
    /// slow cannot store the order after its stock was released. Readers take such a row
    /// for no order (`load_order`).
    pub(super) async fn fence(&self, order_id: OrderId) -> StoreResult<bool> {
        let inserted = self
            .lwt("orders", &self.st.fence_order, (order_id.0,))
            .await?;
        // Not applied: a row is there, an order or an earlier fence; read it to tell.
        Ok(inserted.applied || self.load_order(order_id).await?.is_none())
    }

    pub(super) async fn drop_replica(&self, replica: &str) -> StoreResult<()> {
        self.run("replicas", &self.st.delete_replica, (replica,))
            .await
            .map(|_| ())
    }

    pub(super) async fn release_key_if_unfinished(
        &self,
        user: &UserId,
        key: &str,
        claim: Uuid,
    ) -> StoreResult<()> {
        self.lwt(
            "idempotency_keys",
            &self.st.release_unfinished_key,
            (&user.0, key, claim),
        )
        .await
        .map(|_| ())
    }

    /// Every unsent email claimed by one of `replicas` and not yet due is made due at `now`
    /// (the claim is dropped with a compare-and-set: a live mailer's newer write wins).
    pub(super) async fn release_claims_of(
        &self,
        now: OffsetDateTime,
        replicas: &[String],
    ) -> StoreResult<usize> {
        if replicas.is_empty() {
            return Ok(0);
        }
        let ids = self.unsent_ids().await?;
        let loaded: Vec<Option<OutboxEmail>> = stream::iter(ids)
            .map(|(order_id, kind)| self.load_email(order_id, kind))
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut released = 0;
        for email in loaded.into_iter().flatten() {
            let held = email.sent_at.is_none()
                && email.next_attempt_at > now
                && email
                    .claimed_by
                    .as_ref()
                    .is_some_and(|by| replicas.contains(by));
            if !held {
                continue;
            }
            let due = OutboxEmail {
                next_attempt_at: now,
                claimed_by: None,
                ..email.clone()
            };
            if let WriteOutcome::Applied = self.replace_email(&email, &due).await? {
                released += 1;
            }
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_filed_under_its_order_ids_minute_and_recovery_reads_it() {
        let id = OrderId::new();
        let minute = minute_of(id);
        let seconds = id.0.get_timestamp().expect("v7").to_unix().0;
        assert_eq!(minute, i64::try_from(seconds).unwrap() / 60);
        let minutes = recent_minutes();
        assert!(minutes.contains(&minute), "{minute} not in {minutes:?}");
        assert!(minutes.contains(&(minute - RECOVERY_MINUTES)));
        assert!(!minutes.contains(&(minute - RECOVERY_MINUTES - 2)));
        assert!(minutes.contains(&0), "ids without a time");
        assert_eq!(minute_of(OrderId(Uuid::new_v4())), 0);
    }
}
