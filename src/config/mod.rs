//! Configuration: the keys of API.md's "Configuration", read once at start-up from an optional
//! `kassa.toml` and the `KASSA_*` environment (raw.rs), parsed into one typed `Config` by one
//! file per subsystem. An invalid value stops start-up with a message naming the key; nothing
//! else reads the environment. Secrets are taken verbatim: never trimmed, never read as numbers.

mod actors;
mod dev_secrets;
mod gateway;
mod logging;
mod mail;
mod raw;
mod secrets;
mod server;
mod shop;
mod store;

pub use gateway::GatewaySpec;
pub use logging::LogFormat;
pub use raw::RawConfig;
pub use secrets::{JwtConfig, JwtKey};
pub use store::{Replication, ScyllaCredentials, ScyllaOptions, ScyllaTls, StoreSpec};

use reqwest::Url;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration value that cannot be used; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: &str, problem: impl Into<String>) -> Self {
        Self {
            key: format!("KASSA_{}", key.to_ascii_uppercase()),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// Debug shows no secret (see the manual impl below).
#[derive(Clone)]
pub struct Config {
    pub env: Environment,
    pub listen: String,
    pub public_url: Url,
    pub storefront_url: Url,
    /// Browser origins allowed to call the API cross-origin, each `scheme://host[:port]` as
    /// a browser sends it in `Origin` (lower-case, default port left out); none by default.
    pub cors_origins: Vec<String>,
    /// The shop's name as shoppers see it on the hosted pages ("Kassa" by default).
    pub shop_name: String,
    pub store: StoreSpec,
    pub data_dir: PathBuf,
    pub jwt: JwtConfig,
    pub webhook_secret: String,
    pub gateway: GatewaySpec,
    /// The most one call to the payment gateway may take, retries included; a checkout whose
    /// payment is not opened by then fails with 502 `gateway_unavailable` (5 s by default).
    pub gateway_timeout: Duration,
    pub stripe_api_key: Option<String>,
    pub stripe_api_base: Url,
    /// The Stripe endpoint secret (`whsec_...`) that signs `POST /webhook/stripe` events;
    /// required with `KASSA_GATEWAY=stripe`.
    pub stripe_webhook_secret: Option<String>,
    pub smtp_url: String,
    /// SMTP credentials when the URL carries none (both or neither).
    pub smtp_user: Option<String>,
    pub smtp_password: Option<String>,
    pub mail_from: String,
    pub reservation_ttl: Duration,
    /// How long a SIGTERM leaves Kassa serving while `/readyz` answers 503, so that load
    /// balancers stop sending before the listener closes (0 in development, 5 s in
    /// production by default).
    pub shutdown_delay: Duration,
    /// Requests served at once; beyond it a request is answered 503 `overloaded` at once
    /// (health, readiness and metrics are never refused).
    pub max_in_flight: usize,
    /// This process's name among the replicas sharing a scylla store (`KASSA_REPLICA_ID`;
    /// `host:port` by default): stable across restarts of one slot, unique among live ones.
    pub replica: String,
    /// Live actors of each kind (products, carts, orders) kept at most, give or take; the
    /// oldest idle ones are stopped beyond it. Bounds memory whatever the catalog size.
    pub max_live_actors: usize,
    pub scylla: ScyllaOptions,
    pub log: String,
    pub log_format: LogFormat,
    /// Set when dev secrets were generated or read from the data dir (start-up says so).
    pub dev_secrets_file: Option<PathBuf>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets (JWT and webhook keys, Stripe and SMTP credentials, the SMTP URL that may
        // carry a password) are left out on purpose.
        f.debug_struct("Config")
            .field("env", &self.env)
            .field("listen", &self.listen)
            .field("public_url", &self.public_url.as_str())
            .field("storefront_url", &self.storefront_url.as_str())
            .field("cors_origins", &self.cors_origins)
            .field("shop_name", &self.shop_name)
            .field("store", &self.store)
            .field("data_dir", &self.data_dir)
            .field("jwt", &self.jwt)
            .field("gateway", &self.gateway)
            .field("gateway_timeout", &self.gateway_timeout)
            .field("mail_from", &self.mail_from)
            .field("reservation_ttl", &self.reservation_ttl)
            .field("shutdown_delay", &self.shutdown_delay)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_live_actors", &self.max_live_actors)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// `kassa.toml` (or the file named by `KASSA_CONFIG`), then the `KASSA_*` environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = match std::env::var_os("KASSA_CONFIG") {
            Some(named) => raw::named_config_file(Path::new(&named))?,
            None => PathBuf::from("kassa.toml"),
        };
        Self::from_raw(RawConfig::read(&file, std::env::vars_os())?)
    }

    /// Each subsystem parses its own keys; the first invalid one stops here.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let env = environment(&raw)?;
        let server::Server {
            listen,
            public_url,
            storefront_url,
            cors_origins,
            shutdown_delay,
            max_in_flight,
            replica,
        } = server::server(&raw, env)?;
        let shop_name = shop::shop_name(&raw)?;
        let data_dir =
            PathBuf::from(non_empty(raw.data_dir.as_deref()).unwrap_or_else(|| "./data".into()));
        let (store, url_credentials) = store::store(&raw)?;
        let secrets::Secrets {
            jwt,
            webhook_secret,
            dev_secrets_file,
        } = secrets::secrets(&raw, env, &data_dir)?;
        let gateway::Gateway {
            gateway,
            gateway_timeout,
            stripe_api_key,
            stripe_api_base,
            stripe_webhook_secret,
        } = gateway::gateway(&raw)?;
        let mail::Mail {
            smtp_url,
            smtp_user,
            smtp_password,
            mail_from,
        } = mail::mail(&raw, &data_dir)?;
        let actors::Actors {
            reservation_ttl,
            max_live_actors,
        } = actors::actors(&raw)?;
        let scylla = store::scylla_options(&raw, url_credentials)?;
        let logging::Logging { log, log_format } = logging::logging(&raw)?;
        Ok(Self {
            env,
            listen,
            public_url,
            storefront_url,
            cors_origins,
            shop_name,
            store,
            data_dir,
            jwt,
            webhook_secret,
            gateway,
            gateway_timeout,
            stripe_api_key,
            stripe_api_base,
            stripe_webhook_secret,
            smtp_url,
            smtp_user,
            smtp_password,
            mail_from,
            reservation_ttl,
            shutdown_delay,
            max_in_flight,
            replica,
            max_live_actors,
            scylla,
            log,
            log_format,
            dev_secrets_file,
        })
    }
}

fn environment(raw: &RawConfig) -> Result<Environment, ConfigError> {
    match non_empty(raw.env.as_deref()).as_deref() {
        None | Some("development") | Some("dev") => Ok(Environment::Development),
        Some("production") | Some("prod") => Ok(Environment::Production),
        Some(other) => Err(ConfigError::new(
            "env",
            format!("expected `development` or `production`, got `{other}`"),
        )),
    }
}

/// A plain value, trimmed; blank means unset.
fn non_empty(v: Option<&str>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A secret as given, spaces and all; only the empty string means unset.
fn secret(v: Option<&str>) -> Option<String> {
    v.filter(|s| !s.is_empty()).map(str::to_string)
}

fn parse_url(key: &str, raw: &str) -> Result<Url, ConfigError> {
    Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            ConfigError::new(
                key,
                format!("expected an http(s) URL such as http://127.0.0.1:8080, got `{raw}`"),
            )
        })
}

/// Helpers shared by the subsystems' tests.
#[cfg(test)]
mod testing {
    use super::{Config, ConfigError, RawConfig};
    use figment::Figment;
    use figment::providers::Serialized;
    use std::collections::BTreeMap;
    use std::ffi::OsString;

    /// The config the keys `pairs` (written as in `kassa.toml`) give.
    pub(super) fn raw(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        RawConfig::extract(Figment::from(Serialized::defaults(map))).and_then(Config::from_raw)
    }

    /// The config `kassa.toml` holding `toml` (none when empty) and `vars` would give.
    pub(super) fn read(toml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("kassa.toml");
        if !toml.is_empty() {
            std::fs::write(&file, toml).expect("write kassa.toml");
        }
        let data = format!("KASSA_DATA_DIR={}", dir.path().display());
        let vars = vars
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .chain(data.split_once('=').map(|(k, v)| (k.into(), v.into())));
        RawConfig::read(&file, vars).and_then(Config::from_raw)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::raw;
    use super::*;

    #[test]
    fn an_unknown_environment_names_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let err = raw(&[("data_dir", data), ("env", "staging")]).expect_err("bad env");
        assert_eq!(err.key, "KASSA_ENV");
        let prod = raw(&[
            ("data_dir", data),
            ("env", "prod"),
            ("jwt_secret", "0123456789abcdef0123456789abcdef"),
            ("webhook_secret", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"),
        ])
        .expect("prod");
        assert_eq!(prod.env, Environment::Production);
    }
}
