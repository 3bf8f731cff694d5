//! Retry waits that double per attempt up to a cap, jittered so that retriers (replicas on
//! one SKU, orders after one outage) spread out instead of retrying in step.

use rand::RngExt;
use std::time::Duration;

/// How much of the attempt's cap a wait may fall short of.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Jitter {
    /// Anywhere from nothing to the cap ("full jitter").
    Full,
    /// From half the cap to the cap: a floor that still spreads.
    Half,
}

/// A random wait for the `attempt`-th retry (1 is the first): its cap is `base` doubled per
/// attempt after the first, at most `max`.
pub(crate) fn wait(base: Duration, max: Duration, attempt: u32, jitter: Jitter) -> Duration {
    let cap = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(max);
    let micros = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
    let least = match jitter {
        Jitter::Full => 0,
        Jitter::Half => micros / 2,
    };
    Duration::from_micros(rand::rng().random_range(least..=micros))
}
