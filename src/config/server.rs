//! The HTTP side of the configuration: where Kassa listens, the URLs shoppers and gateways
//! reach it at, which browser origins may call it, how many requests it serves at once, and
//! how long it drains before stopping, and its name among the replicas.
//! Only checks what is written: never binds a socket or resolves a host.

use super::{ConfigError, Environment, RawConfig, non_empty, parse_url};
use reqwest::Url;
use std::time::Duration;

/// The longest drain before stopping: the pod's grace period (45 s in the chart) must
/// cover it and the requests in flight.
const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(60);
/// Requests in flight unless `KASSA_MAX_IN_FLIGHT` says otherwise: bursts of hundreds of
/// checkouts queue behind the actors instead of being refused.
const DEFAULT_MAX_IN_FLIGHT: usize = 2048;
const MOST_IN_FLIGHT: usize = 1_000_000;

pub(super) struct Server {
    pub(super) listen: String,
    pub(super) public_url: Url,
    pub(super) storefront_url: Url,
    pub(super) cors_origins: Vec<String>,
    pub(super) shutdown_delay: Duration,
    pub(super) max_in_flight: usize,
    pub(super) replica: String,
}

pub(super) fn server(raw: &RawConfig, env: Environment) -> Result<Server, ConfigError> {
    let listen = non_empty(raw.listen.as_deref()).unwrap_or_else(|| "127.0.0.1:8080".into());
    parse_listen(&listen)?;
    let replica = match non_empty(raw.replica_id.as_deref()) {
        Some(name) => parse_replica(&name)?,
        None => default_replica(&listen),
    };
    // Unset, the public URL is where Kassa listens (a wildcard host read as loopback), so
    // moving KASSA_LISTEN alone keeps payment links and webhook callbacks reachable.
    let public_url = match non_empty(raw.public_url.as_deref()) {
        Some(url) => parse_url("public_url", &url)?,
        None => parse_url("listen", &format!("http://{}", local_address(&listen)))?,
    };
    let storefront_url = match non_empty(raw.storefront_url.as_deref()) {
        Some(u) => parse_url("storefront_url", &u)?,
        None => public_url.clone(),
    };
    let cors_origins = match non_empty(raw.cors_origins.as_deref()) {
        None => Vec::new(),
        Some(list) => parse_cors_origins(&list)?,
    };
    let shutdown_delay = match non_empty(raw.shutdown_delay.as_deref()) {
        None if env == Environment::Production => Duration::from_secs(5),
        None => Duration::ZERO,
        Some(s) => humantime::parse_duration(&s)
            .ok()
            .filter(|d| *d <= MAX_SHUTDOWN_DELAY)
            .ok_or_else(|| {
                ConfigError::new(
                    "shutdown_delay",
                    format!("expected a duration up to 60s such as `5s` or `0s`, got `{s}`"),
                )
            })?,
    };
    let max_in_flight = match non_empty(raw.max_in_flight.as_deref()) {
        None => DEFAULT_MAX_IN_FLIGHT,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MOST_IN_FLIGHT).contains(n))
            .ok_or_else(|| {
                ConfigError::new(
                    "max_in_flight",
                    format!(
                        "expected a number of requests from 1 to 1000000 such as `2048`, got `{s}`"
                    ),
                )
            })?,
    };
    Ok(Server {
        listen,
        public_url,
        storefront_url,
        cors_origins,
        shutdown_delay,
        max_in_flight,
        replica,
    })
}

/// `https://shop.example.com, http://localhost:3000` -> each origin as a browser writes it in
/// its `Origin` header (scheme and host lower-case, the default port left out), duplicates
/// dropped. Anything but `http(s)://host[:port]` (a path, even `/`, a query, a
/// fragment, credentials, `*`, an empty entry) is refused: a browser never sends it, so
/// such an entry could only be a mistake that silently allows nothing.
fn parse_cors_origins(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut origins: Vec<String> = Vec::new();
    for written in list.split(',').map(str::trim) {
        let origin = parse_cors_origin(written).ok_or_else(|| {
            ConfigError::new(
                "cors_origins",
                format!(
                    "expected comma-separated origins such as \
                     `https://shop.example.com,http://localhost:3000` (scheme, host and \
                     optional port; no path, query or trailing slash), got `{written}`"
                ),
            )
        })?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

fn parse_cors_origin(written: &str) -> Option<String> {
    let (scheme, authority) = written.split_once("://")?;
    let authority_only = !authority.is_empty()
        && !authority.contains(['/', '\\', '?', '#', '@'])
        && !authority.chars().any(char::is_whitespace);
    let web_scheme = matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https");
    if !authority_only || !web_scheme {
        return None;
    }
    let url = Url::parse(written).ok()?;
    url.host()?;
    Some(url.origin().ascii_serialization())
}

/// `host:port` as a client on this machine reaches it (`0.0.0.0` and `[::]` are loopback).
fn local_address(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_string(),
    }
}

/// The most a replica name may hold (it is a key in the store's `replicas` table).
const MAX_REPLICA_NAME: usize = 200;

fn parse_replica(name: &str) -> Result<String, ConfigError> {
    let printable = name.chars().all(|c| c.is_ascii_graphic());
    if printable && name.len() <= MAX_REPLICA_NAME {
        Ok(name.to_string())
    } else {
        Err(ConfigError::new(
            "replica_id",
            format!(
                "expected up to {MAX_REPLICA_NAME} printable ASCII characters without spaces, \
                 such as `kassa-0`, got `{name}`"
            ),
        ))
    }
}

/// `host:port`: the host name (the pod's name in Kubernetes, `HOSTNAME`) and the port Kassa
/// listens on, so that processes on one machine differ and a process restarted in the same
/// slot (same pod, same port) keeps its name and recovers its own previous run at start-up.
fn default_replica(listen: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "kassa".into());
    let port = listen.rsplit_once(':').map_or("", |(_, port)| port);
    let mut name = format!("{host}:{port}");
    name.truncate(MAX_REPLICA_NAME);
    name
}

fn parse_listen(listen: &str) -> Result<(), ConfigError> {
    let ok = listen
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "listen",
            format!("expected host:port such as 127.0.0.1:8080, got `{listen}`"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::raw;

    #[test]
    fn requests_in_flight_are_bounded_at_2048_unless_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        assert_eq!(
            raw(&[("data_dir", data)]).expect("config").max_in_flight,
            2048
        );
        let set = raw(&[("data_dir", data), ("max_in_flight", "2")]).expect("config");
        assert_eq!(set.max_in_flight, 2);
        for bad in ["0", "-1", "many", "2.5", "1000001"] {
            let err = raw(&[("data_dir", data), ("max_in_flight", bad)]).expect_err(bad);
            assert_eq!(err.key, "KASSA_MAX_IN_FLIGHT", "{bad}");
        }
    }

    #[test]
    fn the_shutdown_delay_defaults_to_none_in_development_and_5s_in_production() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let dev = raw(&[("data_dir", data)]).expect("dev");
        assert_eq!(dev.shutdown_delay, Duration::ZERO);
        let secrets = [
            ("data_dir", data),
            ("env", "production"),
            ("jwt_secret", "0123456789abcdef0123456789abcdef"),
            (
                "webhook_secret",
                "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
        ];
        let prod = raw(&secrets).expect("production");
        assert_eq!(prod.shutdown_delay, Duration::from_secs(5));
        let set = raw(&[("data_dir", data), ("shutdown_delay", "2s")]).expect("set");
        assert_eq!(set.shutdown_delay, Duration::from_secs(2));
    }

    #[test]
    fn an_invalid_listen_address_or_shutdown_delay_names_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let err = raw(&[("data_dir", data), ("listen", "nonsense")]).expect_err("bad listen");
        assert_eq!(err.key, "KASSA_LISTEN");
        for bad in ["soon", "-1s", "61s"] {
            let err = raw(&[("data_dir", data), ("shutdown_delay", bad)]).expect_err(bad);
            assert_eq!(err.key, "KASSA_SHUTDOWN_DELAY");
        }
    }

    #[test]
    fn cors_origins_default_to_none_and_are_kept_as_browsers_send_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let default = raw(&[("data_dir", data)]).expect("config");
        assert!(default.cors_origins.is_empty());
        let blank = raw(&[("data_dir", data), ("cors_origins", "  ")]).expect("config");
        assert!(blank.cors_origins.is_empty());
        let listed = raw(&[
            ("data_dir", data),
            (
                "cors_origins",
                "https://Shop.Example.com, http://localhost:3000,HTTPS://shop.example.com:443,\
                 http://127.0.0.1:80,http://[::1]:8080",
            ),
        ])
        .expect("config");
        assert_eq!(
            listed.cors_origins,
            [
                "https://shop.example.com",
                "http://localhost:3000",
                "http://127.0.0.1",
                "http://[::1]:8080",
            ]
        );
    }

    #[test]
    fn a_cors_origin_with_a_path_query_or_other_scheme_names_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        for bad in [
            "https://shop.example.com/",
            "https://shop.example.com/checkout",
            "https://shop.example.com?x=1",
            "https://shop.example.com?",
            "https://shop.example.com#top",
            "https://user@shop.example.com",
            "https://shop.example.com:99999",
            "https://",
            "ftp://shop.example.com",
            "shop.example.com",
            "*",
            "null",
            "https://shop.example.com,,http://localhost:3000",
            "https://shop.example.com,",
            "https://shop example.com",
        ] {
            let err = raw(&[("data_dir", data), ("cors_origins", bad)]).expect_err(bad);
            assert_eq!(err.key, "KASSA_CORS_ORIGINS", "{bad}");
        }
    }

    #[test]
    fn the_public_url_defaults_to_where_kassa_listens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let default = raw(&[("data_dir", data)]).expect("config");
        assert_eq!(default.public_url.as_str(), "http://127.0.0.1:8080/");
        let moved = raw(&[("data_dir", data), ("listen", "0.0.0.0:9000")]).expect("config");
        assert_eq!(moved.public_url.as_str(), "http://127.0.0.1:9000/");
        let explicit = raw(&[
            ("data_dir", data),
            ("listen", "0.0.0.0:9000"),
            ("public_url", "https://shop.example.com"),
        ])
        .expect("config");
        assert_eq!(explicit.public_url.as_str(), "https://shop.example.com/");
    }
}
