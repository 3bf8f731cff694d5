//! The store keys: which back end holds the data (`KASSA_STORE`) and how the scylla one talks
//! to its cluster (`KASSA_SCYLLA_*`, read whatever the store). Parses only: never connects,
//! never reads the CA file, and never puts a password in a message or a `Debug` output.

use super::{ConfigError, RawConfig, non_empty, secret};
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
    /// Password authentication: from `scylla://user:password@host/...`, or
    /// `KASSA_SCYLLA_USERNAME` and `KASSA_SCYLLA_PASSWORD` when the URL carries none.
    pub credentials: Option<ScyllaCredentials>,
    /// TLS to every node, verified against a CA (`KASSA_SCYLLA_TLS_CA`); unset: plain CQL.
    pub tls: Option<ScyllaTls>,
}

/// A user of the cluster's PasswordAuthenticator. `Debug` shows the user, never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScyllaCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ScyllaCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How the scylla store checks the nodes' certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaTls {
    /// PEM file of the CA (one or more certificates) that signed the nodes' certificates;
    /// the only roots trusted (`KASSA_SCYLLA_TLS_CA`).
    pub ca_file: PathBuf,
    /// The name every node's certificate must carry (`KASSA_SCYLLA_TLS_SERVER_NAME`, such as
    /// `scylla-client.scylla.svc`); unset: the node's IP address, which is what the driver
    /// dials (nodes are found by address, so certificates then need IP subject names).
    pub server_name: Option<String>,
}

/// Keyspace replication, always NetworkTopologyStrategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// The same factor in every datacenter: `3`.
    Factor(u32),
    /// A factor per datacenter: `dc1:3,dc2:3`.
    PerDatacenter(Vec<(String, u32)>),
}

/// The store, and the credentials its `scylla://` URL carries (if any), which belong in
/// [`ScyllaOptions`] (see [`scylla_options`]).
pub(super) fn store(
    raw: &RawConfig,
) -> Result<(StoreSpec, Option<ScyllaCredentials>), ConfigError> {
    parse_store(
        non_empty(raw.store.as_deref())
            .as_deref()
            .unwrap_or("embedded:./data"),
    )
}

pub(super) fn scylla_options(
    raw: &RawConfig,
    url_credentials: Option<ScyllaCredentials>,
) -> Result<ScyllaOptions, ConfigError> {
    Ok(ScyllaOptions {
        credentials: credentials(raw, url_credentials)?,
        tls: tls(raw)?,
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

fn parse_store(raw: &str) -> Result<(StoreSpec, Option<ScyllaCredentials>), ConfigError> {
    if let Some(dir) = raw.strip_prefix("embedded:") {
        if dir.is_empty() {
            return Err(ConfigError::new(
                "store",
                "expected embedded:<dir>, the directory is empty",
            ));
        }
        return Ok((StoreSpec::Embedded(dir.into()), None));
    }
    let expected = |got: &str| {
        ConfigError::new(
            "store",
            format!(
                "expected `embedded:<dir>` or \
                 `scylla://[user:password@]host:9042[,host:9042]/keyspace` (in the user and \
                 password, '@', ':' and '/' percent-encoded), got `{got}`"
            ),
        )
    };
    let Some(rest) = raw.strip_prefix("scylla://") else {
        return Err(expected(raw));
    };
    let (authority, keyspace) = rest.split_once('/').unwrap_or((rest, ""));
    // The password may hold any character, '@' and '/' percent-encoded; the last '@' of
    // the part before the keyspace ends it. Never echo it back.
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    // What an error may show: never a password, even one whose unencoded '/' hid its '@'.
    let shown = match rest.rsplit_once('@') {
        Some((_, after)) => format!("scylla://<credentials>@{after}"),
        None => raw.to_string(),
    };
    let credentials = userinfo
        .map(|userinfo| url_credentials(userinfo, &shown))
        .transpose()?;
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
    if hosts.is_empty() || !keyspace_ok {
        return Err(expected(&shown));
    }
    Ok((
        StoreSpec::Scylla {
            hosts,
            keyspace: keyspace.into(),
        },
        credentials,
    ))
}

/// `user:password` of a `scylla://` URL, each percent-decoded (as in any URL: `%40` for '@',
/// `%3A` for ':' in the user name, `%2F` for '/').
fn url_credentials(userinfo: &str, shown: &str) -> Result<ScyllaCredentials, ConfigError> {
    let problem = |what: &str| {
        ConfigError::new(
            "store",
            format!("{what} in `{shown}`: expected scylla://user:password@host:9042/keyspace"),
        )
    };
    let (user, password) = userinfo
        .split_once(':')
        .ok_or_else(|| problem("a user name without a password"))?;
    let decode = |part: &str, what: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| problem(&format!("the {what} is not UTF-8 once percent-decoded")))
    };
    let username = decode(user, "user name")?;
    let password = decode(password, "password")?;
    if username.is_empty() || password.is_empty() {
        return Err(problem("an empty user name or password"));
    }
    Ok(ScyllaCredentials { username, password })
}

/// The URL's credentials, or `KASSA_SCYLLA_USERNAME` and `KASSA_SCYLLA_PASSWORD` (both or
/// neither); not both ways at once, so that no one wonders which is used.
fn credentials(
    raw: &RawConfig,
    from_url: Option<ScyllaCredentials>,
) -> Result<Option<ScyllaCredentials>, ConfigError> {
    let username = non_empty(raw.scylla_username.as_deref());
    let password = secret(raw.scylla_password.as_deref());
    match (from_url, username, password) {
        (from_url, None, None) => Ok(from_url),
        (Some(_), user, _) => Err(ConfigError::new(
            if user.is_some() {
                "scylla_username"
            } else {
                "scylla_password"
            },
            "KASSA_STORE carries credentials already (scylla://user:password@...); \
             set them there or in KASSA_SCYLLA_USERNAME / KASSA_SCYLLA_PASSWORD, not both",
        )),
        (None, Some(username), Some(password)) => {
            Ok(Some(ScyllaCredentials { username, password }))
        }
        (None, user, _) => Err(ConfigError::new(
            if user.is_none() {
                "scylla_username"
            } else {
                "scylla_password"
            },
            "KASSA_SCYLLA_USERNAME and KASSA_SCYLLA_PASSWORD are set together or not at all",
        )),
    }
}

fn tls(raw: &RawConfig) -> Result<Option<ScyllaTls>, ConfigError> {
    let ca_file = non_empty(raw.scylla_tls_ca.as_deref());
    let server_name = non_empty(raw.scylla_tls_server_name.as_deref());
    match (ca_file, server_name) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(ConfigError::new(
            "scylla_tls_server_name",
            "is used with KASSA_SCYLLA_TLS_CA, the CA that verifies the nodes; it is not set",
        )),
        (Some(ca_file), server_name) => {
            if let Some(name) = &server_name
                && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
            {
                return Err(ConfigError::new(
                    "scylla_tls_server_name",
                    format!("expected a DNS name or an IP address, got `{name}`"),
                ));
            }
            Ok(Some(ScyllaTls {
                ca_file: ca_file.into(),
                server_name,
            }))
        }
    }
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
    fn scylla_credentials_come_from_the_url_percent_decoded_and_never_show() {
        let (spec, credentials) =
            parse_store("scylla://kassa:p%40ss%3Aw%2Frd@10.0.0.5:9042,10.0.0.6/shop")
                .expect("store");
        assert_eq!(
            spec,
            StoreSpec::Scylla {
                hosts: vec!["10.0.0.5:9042".into(), "10.0.0.6".into()],
                keyspace: "shop".into(),
            }
        );
        let credentials = credentials.expect("credentials");
        assert_eq!(credentials.username, "kassa");
        assert_eq!(credentials.password, "p@ss:w/rd");
        let shown = format!("{credentials:?}");
        assert!(
            shown.contains("kassa") && !shown.contains("p@ss"),
            "{shown}"
        );
        // A raw '@' in the password: the last '@' before the keyspace ends the credentials.
        let (_, credentials) = parse_store("scylla://u:a@b@host/ks").expect("store");
        assert_eq!(credentials.expect("credentials").password, "a@b");
    }

    #[test]
    fn a_bad_scylla_url_is_an_error_that_does_not_repeat_the_password() {
        for bad in [
            "scylla://kassa@host/ks",
            "scylla://:secret-pw@host/ks",
            "scylla://kassa:@host/ks",
            "scylla://kassa:secret-pw@/ks",
            "scylla://kassa:secret-pw@host/",
            "scylla://kassa:secret-pw@host/bad-keyspace",
            "scylla://kassa:secret%FF@host/ks",
            "scylla://kassa:secret/pw@host/ks",
            "scylla://",
            "scylla:/host/ks",
        ] {
            let err = parse_store(bad).expect_err(bad);
            assert_eq!(err.key, "KASSA_STORE", "{bad}");
            assert!(!err.problem.contains("secret"), "{bad}: {err}");
        }
    }

    #[test]
    fn scylla_credentials_from_keys_come_together_and_not_beside_the_urls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let store = ("store", "scylla://10.0.0.5/shop");
        let config = raw(&[
            ("data_dir", data),
            store,
            ("scylla_username", "kassa"),
            ("scylla_password", " pass word "),
        ])
        .expect("config");
        let credentials = config.scylla.credentials.expect("credentials");
        assert_eq!(credentials.username, "kassa");
        assert_eq!(
            credentials.password, " pass word ",
            "a secret is taken verbatim"
        );
        let err = raw(&[("data_dir", data), store, ("scylla_username", "kassa")])
            .expect_err("no password");
        assert_eq!(err.key, "KASSA_SCYLLA_PASSWORD");
        let err =
            raw(&[("data_dir", data), store, ("scylla_password", "pw")]).expect_err("no user");
        assert_eq!(err.key, "KASSA_SCYLLA_USERNAME");
        let err = raw(&[
            ("data_dir", data),
            ("store", "scylla://kassa:pw@10.0.0.5/shop"),
            ("scylla_password", "other"),
        ])
        .expect_err("twice");
        assert_eq!(err.key, "KASSA_SCYLLA_PASSWORD");
        let config = raw(&[("data_dir", data), store]).expect("config");
        assert_eq!(config.scylla.credentials, None);
        assert_eq!(config.scylla.tls, None);
    }

    #[test]
    fn scylla_tls_needs_a_ca_and_takes_a_server_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let config = raw(&[
            ("data_dir", data),
            ("scylla_tls_ca", "/etc/kassa/scylla/ca.crt"),
            ("scylla_tls_server_name", "scylla-client.scylla.svc"),
        ])
        .expect("config");
        assert_eq!(
            config.scylla.tls,
            Some(ScyllaTls {
                ca_file: "/etc/kassa/scylla/ca.crt".into(),
                server_name: Some("scylla-client.scylla.svc".into()),
            })
        );
        let err =
            raw(&[("data_dir", data), ("scylla_tls_server_name", "scylla")]).expect_err("no CA");
        assert_eq!(err.key, "KASSA_SCYLLA_TLS_SERVER_NAME");
        let err = raw(&[
            ("data_dir", data),
            ("scylla_tls_ca", "/ca.pem"),
            ("scylla_tls_server_name", "not a name"),
        ])
        .expect_err("bad name");
        assert_eq!(err.key, "KASSA_SCYLLA_TLS_SERVER_NAME");
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
