//! Idempotency keys: how long a claim lives, how a key and a body are read, and the one rule
//! (`decide`) every store applies to a claim it finds held. Pure: no store, clock or HTTP; the
//! stores keep the claims (claim, complete, release, purge) and call `decide` where they read
//! one back. The claim's vocabulary (`IdempotencyRequest`, `IdempotencyClaim`,
//! `StoredResponse`) stays in `store` with the `Store` trait it is the contract of, so each
//! type keeps its one path.

use crate::store::{IdempotencyClaim, IdempotencyRequest, StoredResponse};
use base64::Engine;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// A key's record lives this long; after it, the key may be used again for anything.
pub const TTL: Duration = Duration::hours(24);
/// A claim still in progress after this long is presumed dead (its process crashed).
pub const STALE_AFTER: Duration = Duration::minutes(2);

/// The key if it is one: 1 to 255 bytes. (An `Idempotency-Key` header must also be visible
/// ASCII, which the HTTP layer checks when it reads the header as text.)
pub fn parse_key(raw: &str) -> Option<&str> {
    Some(raw).filter(|k| (1..=255).contains(&k.len()))
}

/// The same JSON (whatever its key order or spacing) has the same fingerprint. Stored with
/// each claim, so it must never change for a given body.
pub fn fingerprint(body: &serde_json::Value) -> String {
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&canonical))
}

/// The claim a store read back under the requested key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldClaim<'a> {
    pub created_at: OffsetDateTime,
    pub fingerprint: &'a str,
    /// The response it completed with; none while its request is in progress.
    pub response: Option<&'a StoredResponse>,
}

/// What a request does about a claim already held on its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The held claim stands: answer `Mismatch`, `Completed` or `InProgress` (never `Claimed`).
    Answer(IdempotencyClaim),
    /// The held claim has lapsed (expired, or in progress past `stale_after`): the request
    /// claims the key in its place, whatever body the old claim had.
    TakeOver,
}

/// The claim decision, the same in every store.
pub fn decide(held: &HeldClaim<'_>, request: &IdempotencyRequest<'_>) -> Decision {
    let expired = lapsed(held.created_at, request.ttl, request.now);
    let stale =
        held.response.is_none() && lapsed(held.created_at, request.stale_after, request.now);
    if expired || stale {
        return Decision::TakeOver;
    }
    Decision::Answer(if held.fingerprint != request.fingerprint {
        IdempotencyClaim::Mismatch
    } else if let Some(response) = held.response {
        IdempotencyClaim::Completed(response.clone())
    } else {
        IdempotencyClaim::InProgress
    })
}

/// Whether `age` has passed since `since` at `now` (never, if the sum overflows: an absurd
/// duration keeps the claim rather than panicking).
fn lapsed(since: OffsetDateTime, age: Duration, now: OffsetDateTime) -> bool {
    since.checked_add(age).is_some_and(|end| end <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn start() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_000)
    }

    fn done() -> StoredResponse {
        StoredResponse {
            status: 200,
            body: r#"{"orderId":"x"}"#.into(),
        }
    }

    fn held<'a>(fingerprint: &'a str, response: Option<&'a StoredResponse>) -> HeldClaim<'a> {
        HeldClaim {
            created_at: start(),
            fingerprint,
            response,
        }
    }

    /// A request with `fingerprint`, `after` the held claim was made, with the service's
    /// TTL and stale-after.
    fn asking<'a>(
        user: &'a UserId,
        fingerprint: &'a str,
        after: Duration,
    ) -> IdempotencyRequest<'a> {
        IdempotencyRequest {
            user,
            key: "key-1",
            claim: uuid::Uuid::new_v4(),
            fingerprint,
            now: start() + after,
            ttl: TTL,
            stale_after: STALE_AFTER,
        }
    }

    #[test]
    fn another_body_under_a_live_key_is_a_mismatch() {
        let user = UserId("alice".into());
        let response = done();
        let request = asking(&user, "fp-2", Duration::seconds(1));
        for stored in [None, Some(&response)] {
            assert_eq!(
                decide(&held("fp-1", stored), &request),
                Decision::Answer(IdempotencyClaim::Mismatch)
            );
        }
    }

    #[test]
    fn an_in_progress_claim_holds_until_exactly_stale_after() {
        let user = UserId("alice".into());
        let before = asking(&user, "fp-1", STALE_AFTER - Duration::nanoseconds(1));
        assert_eq!(
            decide(&held("fp-1", None), &before),
            Decision::Answer(IdempotencyClaim::InProgress)
        );
        let at = asking(&user, "fp-1", STALE_AFTER);
        assert_eq!(decide(&held("fp-1", None), &at), Decision::TakeOver);
    }

    #[test]
    fn a_completed_claim_replays_past_stale_after_until_exactly_its_ttl() {
        let user = UserId("alice".into());
        let response = done();
        let completed = held("fp-1", Some(&response));
        for after in [STALE_AFTER, TTL - Duration::nanoseconds(1)] {
            assert_eq!(
                decide(&completed, &asking(&user, "fp-1", after)),
                Decision::Answer(IdempotencyClaim::Completed(done())),
                "{after} after the claim"
            );
        }
        let at = asking(&user, "fp-1", TTL);
        assert_eq!(decide(&completed, &at), Decision::TakeOver);
    }

    #[test]
    fn another_body_on_a_lapsed_claim_is_a_take_over_not_a_mismatch() {
        let user = UserId("alice".into());
        let response = done();
        let expired = asking(&user, "fp-2", TTL);
        assert_eq!(
            decide(&held("fp-1", Some(&response)), &expired),
            Decision::TakeOver
        );
        let stale = asking(&user, "fp-2", STALE_AFTER);
        assert_eq!(decide(&held("fp-1", None), &stale), Decision::TakeOver);
    }

    #[test]
    fn an_absurd_ttl_or_stale_after_keeps_the_claim_instead_of_panicking() {
        let user = UserId("alice".into());
        let request = IdempotencyRequest {
            ttl: Duration::MAX,
            stale_after: Duration::MAX,
            ..asking(&user, "fp-1", Duration::days(365))
        };
        assert_eq!(
            decide(&held("fp-1", None), &request),
            Decision::Answer(IdempotencyClaim::InProgress)
        );
    }

    #[test]
    fn a_key_is_one_to_255_bytes() {
        assert_eq!(parse_key("k"), Some("k"));
        assert_eq!(parse_key(&"k".repeat(255)).map(str::len), Some(255));
        assert_eq!(parse_key(""), None);
        assert_eq!(parse_key(&"k".repeat(256)), None);
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_spacing() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"a": 1, "b": {"c": 2}}"#).expect("json");
        let b: serde_json::Value = serde_json::from_str(r#"{"b":{"c":2},"a":1}"#).expect("json");
        let c: serde_json::Value = serde_json::from_str(r#"{"b":{"c":3},"a":1}"#).expect("json");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn the_fingerprint_of_a_body_never_changes() {
        // Stored claims were made with it: SHA-256 of the compact JSON, base64 unpadded.
        let body = serde_json::json!({"b": [true, null], "a": 1});
        assert_eq!(
            fingerprint(&body),
            "HMacf6I2Fsouw+5w0kOQpiJciDLbikyBTH4Of5Qvhmg"
        );
    }
}
