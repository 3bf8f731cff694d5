//! The actor keys: how long a checkout holds stock (`KASSA_RESERVATION_TTL`) and how many
//! actors of each kind stay live (`KASSA_MAX_LIVE_ACTORS`). Bounds only: starts no actor.

use super::{ConfigError, RawConfig, non_empty};
use kassa_actors::ActorSettings;
use std::time::Duration;

/// The longest reservation: stock held longer than a week is surely a mistake.
const MAX_RESERVATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub(super) struct Actors {
    pub(super) reservation_ttl: Duration,
    pub(super) max_live_actors: usize,
}

pub(super) fn actors(raw: &RawConfig) -> Result<Actors, ConfigError> {
    let reservation_ttl = match non_empty(raw.reservation_ttl.as_deref()) {
        None => Duration::from_secs(15 * 60),
        Some(s) => humantime::parse_duration(&s)
            .ok()
            .filter(|d| !d.is_zero() && *d <= MAX_RESERVATION_TTL)
            .ok_or_else(|| {
                ConfigError::new(
                    "reservation_ttl",
                    format!(
                        "expected a positive duration up to 7d such as `15m` or `90s`, got `{s}`"
                    ),
                )
            })?,
    };
    let max_live_actors = match non_empty(raw.max_live_actors.as_deref()) {
        None => ActorSettings::default().max_live,
        Some(s) => s.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ConfigError::new(
                "max_live_actors",
                format!("expected a positive number of actors such as `50000`, got `{s}`"),
            )
        })?,
    };
    Ok(Actors {
        reservation_ttl,
        max_live_actors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::raw;

    #[test]
    fn reservations_last_up_to_a_week_and_actors_are_capped_at_a_positive_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        for bad in ["soon", "0s", "8d", "3000000d"] {
            let err = raw(&[("data_dir", data), ("reservation_ttl", bad)]).expect_err(bad);
            assert_eq!(err.key, "KASSA_RESERVATION_TTL");
        }
        let week = raw(&[("data_dir", data), ("reservation_ttl", "7d")]).expect("a week");
        assert_eq!(week.reservation_ttl, MAX_RESERVATION_TTL);
        for bad in ["0", "-5", "lots"] {
            let err = raw(&[("data_dir", data), ("max_live_actors", bad)]).expect_err("bad cap");
            assert_eq!(err.key, "KASSA_MAX_LIVE_ACTORS");
        }
        let capped = raw(&[("data_dir", data), ("max_live_actors", "1234")]).expect("cap");
        assert_eq!(capped.max_live_actors, 1234);
        let default = raw(&[("data_dir", data)]).expect("defaults");
        assert_eq!(default.max_live_actors, 50_000);
    }
}
