//! The store keys: which back end holds the data (`KASSA_STORE`) and how the scylla one talks
//! to its cluster (`KASSA_SCYLLA_*`, read whatever the store). Parses only: never connects.

use super::{ConfigError, RawConfig, non_empty};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Embedded(PathBuf),
    Scylla {
        hosts: Vec<String>,
        keyspace: String,
    },
}

/// How the scylla store talks to the cluster; read whatever the store, used only by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaOptions {
    /// Replication `kassa migrate` creates the keyspace with (`KASSA_SCYLLA_REPLICATION`).
    pub replication: Replication,
    /// Reads and the commit of writes (`KASSA_SCYLLA_CONSISTENCY`, `local_quorum`).
    pub consistency: scylla::statement::Consistency,
    /// The Paxos phase of lightweight transactions (`KASSA_SCYLLA_SERIAL_CONSISTENCY`,
    /// `local_serial`).
    pub serial_consistency: scylla::statement::SerialConsistency,
    /// Client-side limit of one request, retries included (`KASSA_SCYLLA_REQUEST_TIMEOUT`, 5s).
    pub request_timeout: Duration,
    /// Datacenter whose nodes coordinate requests (`KASSA_SCYLLA_LOCAL_DC`); unset: any.
    pub local_dc: Option<String>,
}

/// Keyspace replication, always NetworkTopologyStrategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// The same factor in every datacenter: `3`.
    Factor(u32),
    /// A factor per datacenter: `dc1:3,dc2:3`.
    PerDatacenter(Vec<(String, u32)>),
}

pub(super) fn store(raw: &RawConfig) -> Result<StoreSpec, ConfigError> {
    parse_store(
        non_empty(raw.store.as_deref())
            .as_deref()
            .unwrap_or("embedded:./data"),
    )
}

pub(super) fn scylla_options(raw: &RawConfig) -> Result<ScyllaOptions, ConfigError> {
    Ok(ScyllaOptions {
        replication: parse_replication(non_empty(raw.scylla_replication.as_deref()).as_deref())?,
        consistency: parse_consistency(non_empty(raw.scylla_consistency.as_deref()).as_deref())?,
        serial_consistency: parse_serial_consistency(
            non_empty(raw.scylla_serial_consistency.as_deref()).as_deref(),
        )?,
        request_timeout: parse_positive_duration(
            "scylla_request_timeout",
            non_empty(raw.scylla_request_timeout.as_deref()).as_deref(),
            Duration::from_secs(5),
        )?,
        local_dc: non_empty(raw.scylla_local_dc.as_deref()),
    })
}

fn parse_store(raw: &str) -> Result<StoreSpec, ConfigError> {
    if let Some(dir) = raw.strip_prefix("embedded:") {
        if dir.is_empty() {
            return Err(ConfigError::new(
                "store",
                "expected embedded:<dir>, the directory is empty",
            ));
        }
        return Ok(StoreSpec::Embedded(dir.into()));
    }
    if let Some(rest) = raw.strip_prefix("scylla://") {
        let (hosts, keyspace) = rest.split_once('/').unwrap_or((rest, ""));
        let hosts: Vec<String> = hosts
            .split(',')
            .map(str::to_string)
            .filter(|h| !h.is_empty())
            .collect();
        let keyspace_ok = !keyspace.is_empty()
            && keyspace.len() <= 48
            && keyspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !hosts.is_empty() && keyspace_ok {
            return Ok(StoreSpec::Scylla {
                hosts,
                keyspace: keyspace.into(),
            });
        }
    }
    Err(ConfigError::new(
        "store",
        format!(
            "expected `embedded:<dir>` or `scylla://host:9042[,host:9042]/keyspace`, got `{raw}`"
        ),
    ))
}

fn parse_replication(raw: Option<&str>) -> Result<Replication, ConfigError> {
    let problem = |raw: &str| {
        ConfigError::new(
            "scylla_replication",
            format!(
                "expected a replication factor such as `3` or per datacenter such as `dc1:3,dc2:3`, got `{raw}`"
            ),
        )
    };
    let factor = |raw: &str, f: &str| {
        f.parse::<u32>()
            .ok()
            .filter(|f| *f > 0)
            .ok_or_else(|| problem(raw))
    };
    let Some(raw) = raw else {
        return Ok(Replication::Factor(1));
    };
    if !raw.contains(':') {
        return factor(raw, raw).map(Replication::Factor);
    }
    let mut per_dc = Vec::new();
    for part in raw.split(',') {
        let (dc, f) = part.split_once(':').ok_or_else(|| problem(raw))?;
        let dc = dc.trim();
        let dc_ok = !dc.is_empty()
            && dc
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !dc_ok {
            return Err(problem(raw));
        }
        per_dc.push((dc.to_string(), factor(raw, f.trim())?));
    }
    Ok(Replication::PerDatacenter(per_dc))
}

fn parse_consistency(raw: Option<&str>) -> Result<scylla::statement::Consistency, ConfigError> {
    use scylla::statement::Consistency as C;
    Ok(match raw.map(str::to_ascii_lowercase).as_deref() {
        None | Some("local_quorum") => C::LocalQuorum,
        Some("quorum") => C::Quorum,
        Some("each_quorum") => C::EachQuorum,
        Some("all") => C::All,
        Some("one") => C::One,
        Some("local_one") => C::LocalOne,
        Some(other) => {
            return Err(ConfigError::new(
                "scylla_consistency",
                format!(
                    "expected local_quorum, quorum, each_quorum, all, one or local_one, got `{other}`"
                ),
            ));
        }
    })
}

fn parse_serial_consistency(
    raw: Option<&str>,
) -> Result<scylla::statement::SerialConsistency, ConfigError> {
    use scylla::statement::SerialConsistency as S;
    Ok(match raw.map(str::to_ascii_lowercase).as_deref() {
        None | Some("local_serial") => S::LocalSerial,
        Some("serial") => S::Serial,
        Some(other) => {
            return Err(ConfigError::new(
                "scylla_serial_consistency",
                format!("expected local_serial or serial, got `{other}`"),
            ));
        }
    })
}

fn parse_positive_duration(
    key: &str,
    raw: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    humantime::parse_duration(raw)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ConfigError::new(
                key,
                format!("expected a positive duration such as `5s` or `500ms`, got `{raw}`"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::raw;

    #[test]
    fn an_invalid_store_or_scylla_option_names_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let err = raw(&[("data_dir", data), ("store", "mysql://x")]).expect_err("bad store");
        assert_eq!(err.key, "KASSA_STORE");
        for (key, value) in [
            ("scylla_replication", "dc1:zero"),
            ("scylla_consistency", "most"),
            ("scylla_serial_consistency", "quorum"),
            ("scylla_request_timeout", "0s"),
        ] {
            let err = raw(&[("data_dir", data), (key, value)]).expect_err(key);
            assert_eq!(err.key, format!("KASSA_{}", key.to_ascii_uppercase()));
        }
    }

    #[test]
    fn scylla_options_default_to_local_quorum_and_parse_replication() {
        use scylla::statement::{Consistency, SerialConsistency};
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let config = raw(&[("data_dir", data)]).expect("config");
        assert_eq!(config.scylla.consistency, Consistency::LocalQuorum);
        assert_eq!(
            config.scylla.serial_consistency,
            SerialConsistency::LocalSerial
        );
        assert_eq!(config.scylla.replication, Replication::Factor(1));
        assert_eq!(config.scylla.request_timeout, Duration::from_secs(5));
        let config = raw(&[
            ("data_dir", data),
            ("scylla_replication", "eu-west:3, us_east:2"),
            ("scylla_consistency", "QUORUM"),
            ("scylla_serial_consistency", "serial"),
            ("scylla_request_timeout", "750ms"),
        ])
        .expect("config");
        assert_eq!(
            config.scylla.replication,
            Replication::PerDatacenter(vec![("eu-west".into(), 3), ("us_east".into(), 2)])
        );
        assert_eq!(config.scylla.consistency, Consistency::Quorum);
        assert_eq!(config.scylla.serial_consistency, SerialConsistency::Serial);
        assert_eq!(config.scylla.request_timeout, Duration::from_millis(750));
    }
}
