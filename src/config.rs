//! Configuration: the keys of API.md's "Configuration", read once at start-up from an optional
//! `kassa.toml` and the `KASSA_*` environment (figment), parsed into typed values. An invalid
//! value stops start-up with a message naming the key; nothing else reads the environment.
//! Secrets are taken verbatim, byte for byte: never trimmed, never read as numbers.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use kassa_actors::ActorSettings;
use rand::RngExt;
use reqwest::Url;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
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

/// How tokens are verified. With a public key, only that key verifies (the secret is ignored).
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    Secret(Vec<u8>),
    PublicKeyPem { path: PathBuf, pem: Vec<u8> },
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(..)"),
            Self::PublicKeyPem { path, .. } => write!(f, "PublicKeyPem({})", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewaySpec {
    Sandbox,
    Http(Url),
    Stripe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Debug shows no secret (see the manual impl below).
#[derive(Clone)]
pub struct Config {
    pub env: Environment,
    pub listen: String,
    pub public_url: Url,
    pub storefront_url: Url,
    pub store: StoreSpec,
    pub data_dir: PathBuf,
    pub jwt: JwtConfig,
    pub webhook_secret: String,
    pub gateway: GatewaySpec,
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
            .field("store", &self.store)
            .field("data_dir", &self.data_dir)
            .field("jwt", &self.jwt)
            .field("gateway", &self.gateway)
            .field("mail_from", &self.mail_from)
            .field("reservation_ttl", &self.reservation_ttl)
            .field("shutdown_delay", &self.shutdown_delay)
            .field("max_live_actors", &self.max_live_actors)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .finish_non_exhaustive()
    }
}

/// The keys as written. A secret must be a string and is kept exactly as given; any other
/// value may be any scalar (a TOML `3` is read as `"3"`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawConfig {
    #[serde(deserialize_with = "stringish")]
    pub env: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub listen: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub public_url: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub storefront_url: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub store: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub data_dir: Option<String>,
    pub jwt_secret: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub jwt_public_key_file: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub jwt_issuer: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub jwt_audience: Option<String>,
    pub webhook_secret: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub gateway: Option<String>,
    pub stripe_api_key: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub stripe_api_base: Option<String>,
    pub stripe_webhook_secret: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub smtp_url: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub smtp_user: Option<String>,
    pub smtp_password: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub mail_from: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub reservation_ttl: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub shutdown_delay: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub max_live_actors: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub scylla_replication: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub scylla_consistency: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub scylla_serial_consistency: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub scylla_request_timeout: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub scylla_local_dc: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub log: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub log_format: Option<String>,
}

/// Accepts any scalar as a string: `kassa.toml` may say `scylla_replication = 3`.
fn stringish<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| match s {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    }))
}

/// Secrets generated for development, kept in the data dir so restarts and `kassa token`
/// agree with the running server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DevSecrets {
    jwt_secret: String,
    webhook_secret: String,
}

const DEV_SECRETS_FILE: &str = "dev-secrets.json";
/// The longest reservation: stock held longer than a week is surely a mistake.
const MAX_RESERVATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest drain before stopping: the pod's grace period (45 s in the chart) must
/// cover it and the requests in flight.
const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(60);

impl RawConfig {
    /// `file` if it exists, then the `KASSA_*` variables among `vars`, which win.
    pub fn read(
        file: &Path,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ConfigError> {
        let env = environment(vars)?;
        Self::extract(
            Figment::new()
                .merge(Serialized::defaults(file_keys(file)?))
                .merge(Serialized::defaults(env)),
        )
    }

    /// The keys a config may set, as written in `kassa.toml`.
    fn known_keys() -> Vec<String> {
        match serde_json::to_value(Self::default()) {
            Ok(serde_json::Value::Object(keys)) => keys.into_iter().map(|(k, _)| k).collect(),
            _ => Vec::new(),
        }
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        figment.extract().map_err(|e| ConfigError {
            key: e.path.first().map_or_else(
                || "config".into(),
                |k| format!("KASSA_{}", k.to_ascii_uppercase()),
            ),
            problem: e.to_string(),
        })
    }
}

/// The file `KASSA_CONFIG` names, which must be one (unlike `kassa.toml`, which is read only
/// when present): a path with a typo must not start Kassa on defaults.
fn named_config_file(path: &Path) -> Result<PathBuf, ConfigError> {
    let problem = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => return Ok(path.to_path_buf()),
        Ok(_) => format!("{} is not a file", path.display()),
        Err(e) => format!("cannot read {}: {e}", path.display()),
    };
    Err(ConfigError::new("config", problem))
}

/// The keys of `file` (none when it does not exist), each written either as in the table of
/// keys (`listen`) or as its variable (`KASSA_LISTEN`). A key Kassa does not know stops
/// start-up: a typo must not silently leave a default in force.
fn file_keys(file: &Path) -> Result<figment::value::Dict, ConfigError> {
    use figment::Provider;
    let in_file = |problem: String| ConfigError {
        key: file.display().to_string(),
        problem,
    };
    let mut data = Toml::file(file)
        .data()
        .map_err(|e| in_file(e.to_string()))?;
    let written = data.remove(&figment::Profile::Default).unwrap_or_default();
    let known = RawConfig::known_keys();
    let mut keys = figment::value::Dict::new();
    for (name, value) in written {
        let key = kassa_key(OsStr::new(&name)).unwrap_or_else(|| name.clone());
        if !known.contains(&key) {
            return Err(in_file(format!(
                "unknown key `{name}`; expected one of {} (or the same as KASSA_ variables, \
                 such as KASSA_LISTEN)",
                known.join(", ")
            )));
        }
        if keys.insert(key.clone(), value).is_some() {
            return Err(in_file(format!(
                "`{key}` is set twice (as `{key}` and as KASSA_{})",
                key.to_ascii_uppercase()
            )));
        }
    }
    Ok(keys)
}

/// The `KASSA_*` variables among `vars` (but `KASSA_CONFIG`), keyed as in `kassa.toml`, each
/// value the string exactly as set. figment's own `Env` would read `0123` as the number 123,
/// trim `" pad "` and parse `[x]` as an array; a secret is bytes, not a typed value.
fn environment(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut keys = BTreeMap::new();
    for (name, value) in vars {
        let Some(key) = kassa_key(&name) else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| ConfigError::new(&key, "is not valid UTF-8"))?;
        keys.insert(key, value);
    }
    Ok(keys)
}

/// `KASSA_JWT_SECRET` -> `jwt_secret` (the prefix in any case); `None` for other variables.
fn kassa_key(name: &OsStr) -> Option<String> {
    let name = name.to_str()?;
    let (prefix, key) = (name.get(..6)?, name.get(6..)?.to_ascii_lowercase());
    (prefix.eq_ignore_ascii_case("KASSA_") && !key.is_empty() && key != "config").then_some(key)
}

impl Config {
    /// `kassa.toml` (or the file named by `KASSA_CONFIG`), then the `KASSA_*` environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = match std::env::var_os("KASSA_CONFIG") {
            Some(named) => named_config_file(Path::new(&named))?,
            None => PathBuf::from("kassa.toml"),
        };
        Self::from_raw(RawConfig::read(&file, std::env::vars_os())?)
    }

    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let env = match non_empty(raw.env).as_deref() {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::new(
                    "env",
                    format!("expected `development` or `production`, got `{other}`"),
                ));
            }
        };
        let listen = non_empty(raw.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        parse_listen(&listen)?;
        // Unset, the public URL is where Kassa listens (a wildcard host read as loopback), so
        // moving KASSA_LISTEN alone keeps payment links and webhook callbacks reachable.
        let public_url = match non_empty(raw.public_url) {
            Some(url) => parse_url("public_url", &url)?,
            None => parse_url("listen", &format!("http://{}", local_address(&listen)))?,
        };
        let storefront_url = match non_empty(raw.storefront_url) {
            Some(u) => parse_url("storefront_url", &u)?,
            None => public_url.clone(),
        };
        let data_dir = PathBuf::from(non_empty(raw.data_dir).unwrap_or_else(|| "./data".into()));
        let store = parse_store(non_empty(raw.store).as_deref().unwrap_or("embedded:./data"))?;

        let jwt_secret = secret(raw.jwt_secret);
        let webhook_secret = secret(raw.webhook_secret);
        let public_key_file = non_empty(raw.jwt_public_key_file);
        if env == Environment::Production {
            if jwt_secret.is_none() && public_key_file.is_none() {
                return Err(ConfigError::new(
                    "jwt_secret",
                    "production needs an explicit KASSA_JWT_SECRET or KASSA_JWT_PUBLIC_KEY_FILE",
                ));
            }
            if webhook_secret.is_none() {
                return Err(ConfigError::new(
                    "webhook_secret",
                    "production needs an explicit webhook secret (whsec_<base64>)",
                ));
            }
        }
        let mut dev_secrets_file = None;
        let (jwt_secret, webhook_secret) = match (jwt_secret, webhook_secret) {
            (Some(j), Some(w)) => (j, w),
            (j, w) if public_key_file.is_some() && w.is_some() => {
                (j.unwrap_or_default(), w.unwrap_or_default())
            }
            (j, w) => {
                let (path, dev) = dev_secrets(&data_dir)?;
                dev_secrets_file = Some(path);
                (j.unwrap_or(dev.jwt_secret), w.unwrap_or(dev.webhook_secret))
            }
        };
        check_webhook_secret(&webhook_secret)?;
        let key = match public_key_file {
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|e| {
                    ConfigError::new("jwt_public_key_file", format!("cannot read `{path}`: {e}"))
                })?;
                JwtKey::PublicKeyPem {
                    path: path.into(),
                    pem,
                }
            }
            None => JwtKey::Secret(jwt_secret.into_bytes()),
        };

        let gateway = match non_empty(raw.gateway).as_deref() {
            None | Some("sandbox") => GatewaySpec::Sandbox,
            Some("stripe") => GatewaySpec::Stripe,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                GatewaySpec::Http(parse_url("gateway", url)?)
            }
            Some(other) => {
                return Err(ConfigError::new(
                    "gateway",
                    format!("expected `sandbox`, `stripe` or an http(s) URL, got `{other}`"),
                ));
            }
        };
        let stripe_api_key = secret(raw.stripe_api_key);
        if gateway == GatewaySpec::Stripe && stripe_api_key.is_none() {
            return Err(ConfigError::new(
                "stripe_api_key",
                "KASSA_GATEWAY=stripe needs a Stripe API key",
            ));
        }
        let stripe_api_base = parse_url(
            "stripe_api_base",
            non_empty(raw.stripe_api_base)
                .as_deref()
                .unwrap_or("https://api.stripe.com"),
        )?;
        let stripe_webhook_secret = secret(raw.stripe_webhook_secret);
        if let Some(secret) = &stripe_webhook_secret {
            check_stripe_webhook_secret(secret)?;
        } else if gateway == GatewaySpec::Stripe {
            return Err(ConfigError::new(
                "stripe_webhook_secret",
                "KASSA_GATEWAY=stripe needs the webhook endpoint's signing secret (whsec_...)",
            ));
        }

        let default_mail_dir = format!("file://{}", data_dir.join("mail").display());
        let smtp_url = non_empty(raw.smtp_url).unwrap_or(default_mail_dir);
        if !["smtp://", "smtps://", "file://"]
            .iter()
            .any(|p| smtp_url.starts_with(p))
        {
            return Err(ConfigError::new(
                "smtp_url",
                format!(
                    "expected smtp://host:port, smtps://user:pass@host or file://dir, got `{smtp_url}`"
                ),
            ));
        }
        let smtp_user = non_empty(raw.smtp_user);
        let smtp_password = secret(raw.smtp_password);
        if smtp_user.is_some() != smtp_password.is_some() {
            let missing = if smtp_user.is_none() {
                "smtp_user"
            } else {
                "smtp_password"
            };
            return Err(ConfigError::new(
                missing,
                "KASSA_SMTP_USER and KASSA_SMTP_PASSWORD are set together or not at all",
            ));
        }
        let mail_from =
            non_empty(raw.mail_from).unwrap_or_else(|| "Kassa <orders@localhost>".into());

        let reservation_ttl = match non_empty(raw.reservation_ttl) {
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
        let shutdown_delay = match non_empty(raw.shutdown_delay) {
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
        let max_live_actors = match non_empty(raw.max_live_actors) {
            None => ActorSettings::default().max_live,
            Some(s) => s.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError::new(
                    "max_live_actors",
                    format!("expected a positive number of actors such as `50000`, got `{s}`"),
                )
            })?,
        };
        let scylla = ScyllaOptions {
            replication: parse_replication(non_empty(raw.scylla_replication).as_deref())?,
            consistency: parse_consistency(non_empty(raw.scylla_consistency).as_deref())?,
            serial_consistency: parse_serial_consistency(
                non_empty(raw.scylla_serial_consistency).as_deref(),
            )?,
            request_timeout: parse_positive_duration(
                "scylla_request_timeout",
                non_empty(raw.scylla_request_timeout).as_deref(),
                Duration::from_secs(5),
            )?,
            local_dc: non_empty(raw.scylla_local_dc),
        };
        let log = non_empty(raw.log).unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            return Err(ConfigError::new(
                "log",
                format!(
                    "expected a log filter such as `info` or `kassa=debug,info`, got `{log}`: {e}"
                ),
            ));
        }
        let log_format = match non_empty(raw.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "log_format",
                    format!("expected `text` or `json`, got `{other}`"),
                ));
            }
        };

        Ok(Self {
            env,
            listen,
            public_url,
            storefront_url,
            store,
            data_dir,
            jwt: JwtConfig {
                key,
                issuer: non_empty(raw.jwt_issuer),
                audience: non_empty(raw.jwt_audience),
            },
            webhook_secret,
            gateway,
            stripe_api_key,
            stripe_api_base,
            stripe_webhook_secret,
            smtp_url,
            smtp_user,
            smtp_password,
            mail_from,
            reservation_ttl,
            shutdown_delay,
            max_live_actors,
            scylla,
            log,
            log_format,
            dev_secrets_file,
        })
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A secret as given, spaces and all; only the empty string means unset.
fn secret(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// `host:port` as a client on this machine reaches it (`0.0.0.0` and `[::]` are loopback).
fn local_address(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_string(),
    }
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

fn check_webhook_secret(secret: &str) -> Result<(), ConfigError> {
    use base64::Engine;
    let ok = secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|k| !k.is_empty());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "webhook_secret",
            "expected `whsec_` followed by base64 key bytes (Standard Webhooks format)",
        ))
    }
}

/// Stripe's endpoint secrets are `whsec_` and an opaque string, used whole as the HMAC key.
fn check_stripe_webhook_secret(secret: &str) -> Result<(), ConfigError> {
    let ok = secret
        .strip_prefix("whsec_")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_graphic()));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "stripe_webhook_secret",
            "expected the endpoint's signing secret as Stripe shows it: `whsec_...`",
        ))
    }
}

/// Reads the dev secrets from the data dir, generating them on first use. Processes starting
/// together (the server and `kassa token`) agree: the file is published under its final
/// name only once complete and never replaced, so whoever loses the race reads the winner's.
fn dev_secrets(data_dir: &Path) -> Result<(PathBuf, DevSecrets), ConfigError> {
    let path = data_dir.join(DEV_SECRETS_FILE);
    let unreadable = |e: String| {
        ConfigError::new(
            "data_dir",
            format!("dev secrets at {}: {e}", path.display()),
        )
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let secrets = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
            return Ok((path, secrets));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unreadable(e.to_string())),
    }
    let secrets = DevSecrets::generate();
    std::fs::create_dir_all(data_dir).map_err(|e| unreadable(e.to_string()))?;
    let json = serde_json::to_vec_pretty(&secrets).map_err(|e| unreadable(e.to_string()))?;
    match publish_private(&path, &json) {
        Ok(()) => Ok((path, secrets)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(&path).map_err(|e| unreadable(e.to_string()))?;
            let theirs = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
            Ok((path, theirs))
        }
        Err(e) => Err(unreadable(e.to_string())),
    }
}

impl DevSecrets {
    fn generate() -> Self {
        use base64::Engine;
        let mut rng = rand::rng();
        let jwt: [u8; 32] = rng.random();
        let webhook: [u8; 32] = rng.random();
        Self {
            jwt_secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jwt),
            webhook_secret: format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(webhook)
            ),
        }
    }
}

/// Creates `path`, readable by the owner only, holding `bytes`; `AlreadyExists` if it is
/// there. The bytes go to a temporary file of this caller's own first, which is then
/// hard-linked to `path` (a link never replaces a file): nobody ever sees half a secret,
/// and a crash leaves at most a stray temporary file.
fn publish_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        rand::rng().random::<u64>()
    ));
    let tmp = PathBuf::from(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let published = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    published
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        RawConfig::extract(Figment::from(Serialized::defaults(map))).and_then(Config::from_raw)
    }

    /// The config `kassa.toml` holding `toml` (none when empty) and `vars` would give.
    fn read(toml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
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
    fn a_config_file_named_by_kassa_config_must_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("kassa.toml");
        for (path, says) in [
            (dir.path().join("missing.toml"), "cannot read"),
            (dir.path().to_path_buf(), "is not a file"),
        ] {
            let err = named_config_file(&path).expect_err("refused");
            assert_eq!(err.key, "KASSA_CONFIG");
            assert!(err.problem.contains(says), "{err}");
        }
        std::fs::write(&file, "").expect("write");
        assert_eq!(named_config_file(&file).expect("a file"), file);
    }

    #[test]
    fn an_invalid_value_names_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let err = raw(&[("data_dir", data), ("listen", "nonsense")]).expect_err("bad listen");
        assert_eq!(err.key, "KASSA_LISTEN");
        for bad in ["soon", "0s", "8d", "3000000d"] {
            let err = raw(&[("data_dir", data), ("reservation_ttl", bad)]).expect_err(bad);
            assert_eq!(err.key, "KASSA_RESERVATION_TTL");
        }
        let week = raw(&[("data_dir", data), ("reservation_ttl", "7d")]).expect("a week");
        assert_eq!(week.reservation_ttl, MAX_RESERVATION_TTL);
        for bad in ["soon", "-1s", "61s"] {
            let err = raw(&[("data_dir", data), ("shutdown_delay", bad)]).expect_err(bad);
            assert_eq!(err.key, "KASSA_SHUTDOWN_DELAY");
        }
        for bad in ["0", "-5", "lots"] {
            let err = raw(&[("data_dir", data), ("max_live_actors", bad)]).expect_err("bad cap");
            assert_eq!(err.key, "KASSA_MAX_LIVE_ACTORS");
        }
        let capped = raw(&[("data_dir", data), ("max_live_actors", "1234")]).expect("cap");
        assert_eq!(capped.max_live_actors, 1234);
        let default = raw(&[("data_dir", data)]).expect("defaults");
        assert_eq!(default.max_live_actors, 50_000);
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

    #[test]
    fn dev_secrets_are_generated_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let first = raw(&[("data_dir", data)]).expect("config");
        let second = raw(&[("data_dir", data)]).expect("config");
        assert!(first.dev_secrets_file.is_some());
        assert_eq!(first.webhook_secret, second.webhook_secret);
        assert_eq!(first.jwt.key, second.jwt.key);
    }

    #[test]
    fn processes_starting_together_agree_on_the_generated_dev_secrets() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let data_dir = dir.path().join("data");
            let start = std::sync::Barrier::new(4);
            let answers: Vec<(String, String)> = std::thread::scope(|s| {
                let racers: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            let (_, secrets) = dev_secrets(&data_dir).expect("dev secrets");
                            (secrets.jwt_secret, secrets.webhook_secret)
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|r| r.join().expect("racer"))
                    .collect()
            });
            let (_, on_disk) = dev_secrets(&data_dir).expect("dev secrets");
            for answer in &answers {
                assert_eq!(
                    answer,
                    &(on_disk.jwt_secret.clone(), on_disk.webhook_secret.clone())
                );
            }
            let files: Vec<_> = std::fs::read_dir(&data_dir)
                .expect("data dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(files, [DEV_SECRETS_FILE], "no temporary file left");
        }
    }

    #[test]
    fn production_refuses_to_start_without_explicit_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let err = raw(&[("data_dir", data), ("env", "production")]).expect_err("no secrets");
        assert_eq!(err.key, "KASSA_JWT_SECRET");
        let err = raw(&[
            ("data_dir", data),
            ("env", "production"),
            ("jwt_secret", "s3cret"),
        ])
        .expect_err("no webhook secret");
        assert_eq!(err.key, "KASSA_WEBHOOK_SECRET");
        let ok = raw(&[
            ("data_dir", data),
            ("env", "production"),
            ("jwt_secret", "s3cret"),
            ("webhook_secret", "whsec_c2VjcmV0"),
        ])
        .expect("explicit secrets");
        assert!(ok.dev_secrets_file.is_none());
    }

    #[test]
    fn secrets_from_the_environment_are_taken_verbatim() {
        for given in ["0123", " pad ", "[x]", "true", "1e3", "{a = 1}", "0x1F\n"] {
            let config = read("", &[("KASSA_JWT_SECRET", given)]).expect(given);
            assert_eq!(config.jwt.key, JwtKey::Secret(given.as_bytes().to_vec()));
        }
        let config = read(
            "",
            &[
                ("KASSA_SMTP_URL", "smtp://127.0.0.1:2525"),
                ("KASSA_SMTP_USER", "kassa"),
                ("KASSA_SMTP_PASSWORD", " 007 "),
                ("KASSA_STRIPE_WEBHOOK_SECRET", "whsec_0123"),
                ("KASSA_WEBHOOK_SECRET", "whsec_c2VjcmV0"),
            ],
        )
        .expect("config");
        assert_eq!(config.smtp_password.as_deref(), Some(" 007 "));
        assert_eq!(config.stripe_webhook_secret.as_deref(), Some("whsec_0123"));
        assert_eq!(config.webhook_secret, "whsec_c2VjcmV0");
        let padded = read("", &[("KASSA_WEBHOOK_SECRET", " whsec_c2VjcmV0")]);
        assert_eq!(
            padded.expect_err("not whsec_<base64>").key,
            "KASSA_WEBHOOK_SECRET"
        );
    }

    #[test]
    fn other_environment_values_are_strings_too_and_only_kassa_keys_count() {
        let config = read(
            "",
            &[
                ("KASSA_SCYLLA_REPLICATION", "3"),
                ("kassa_listen", "0.0.0.0:9000"),
                ("KASSA_CONFIG", "elsewhere.toml"),
                ("LISTEN", "nonsense"),
            ],
        )
        .expect("config");
        assert_eq!(config.scylla.replication, Replication::Factor(3));
        assert_eq!(config.listen, "0.0.0.0:9000");
    }

    #[test]
    fn an_environment_value_that_is_not_utf8_names_its_key() {
        use std::os::unix::ffi::OsStringExt;
        let vars = [(
            OsString::from("KASSA_JWT_SECRET"),
            OsString::from_vec(vec![0x30, 0xff]),
        )];
        let err = environment(vars).expect_err("not UTF-8");
        assert_eq!(err.key, "KASSA_JWT_SECRET");
    }

    #[test]
    fn secrets_in_kassa_toml_must_be_strings_and_are_kept_verbatim() {
        let config = read("jwt_secret = \" 0123 \"\n", &[]).expect("config");
        assert_eq!(config.jwt.key, JwtKey::Secret(b" 0123 ".to_vec()));
        let err = read("jwt_secret = 123\n", &[]).expect_err("a number is not a secret");
        assert_eq!(err.key, "KASSA_JWT_SECRET");
        let config = read("scylla_replication = 3\n", &[]).expect("config");
        assert_eq!(config.scylla.replication, Replication::Factor(3));
        let config = read(
            "jwt_secret = \"from-file\"\n",
            &[("KASSA_JWT_SECRET", "from-env")],
        )
        .expect("config");
        assert_eq!(config.jwt.key, JwtKey::Secret(b"from-env".to_vec()));
    }

    #[test]
    fn an_unknown_key_in_kassa_toml_stops_start_up_naming_it() {
        let err = read("listen = \"0.0.0.0:9000\"\nlisen = \"x\"\n", &[]).expect_err("typo");
        assert!(err.key.ends_with("kassa.toml"), "{err}");
        assert!(err.problem.contains("unknown key `lisen`"), "{err}");
        assert!(
            err.problem.contains("listen"),
            "names the expected keys: {err}"
        );
        let err = read("[scylla]\nreplication = 3\n", &[]).expect_err("a table");
        assert!(err.problem.contains("unknown key `scylla`"), "{err}");
        let err = read("KASSA_CONFIG = \"other.toml\"\n", &[]).expect_err("not a file key");
        assert!(err.problem.contains("KASSA_CONFIG"), "{err}");
    }

    #[test]
    fn kassa_toml_also_takes_the_variable_spelling_of_a_key() {
        let config = read("KASSA_LISTEN = \"0.0.0.0:9000\"\n", &[]).expect("config");
        assert_eq!(config.listen, "0.0.0.0:9000");
        let config = read(
            "KASSA_SCYLLA_REPLICATION = 3\n",
            &[("KASSA_LISTEN", "0.0.0.0:9100")],
        )
        .expect("config");
        assert_eq!(config.scylla.replication, Replication::Factor(3));
        assert_eq!(config.listen, "0.0.0.0:9100");
        let err = read(
            "listen = \"0.0.0.0:9000\"\nKASSA_LISTEN = \"0.0.0.0:9001\"\n",
            &[],
        )
        .expect_err("set twice");
        assert!(err.problem.contains("set twice"), "{err}");
    }

    #[test]
    fn an_invalid_log_filter_stops_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        for bad in ["kassa=loud", "info,[", "=info"] {
            let err = raw(&[("data_dir", data), ("log", bad)]).expect_err(bad);
            assert_eq!(err.key, "KASSA_LOG", "{bad}");
        }
        for good in ["debug", "kassa=debug,info", "warn,actix_web=error"] {
            let config = raw(&[("data_dir", data), ("log", good)]).expect(good);
            assert_eq!(config.log, good);
        }
    }

    #[test]
    fn stripe_needs_an_api_key_and_a_webhook_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let err = raw(&[("data_dir", data), ("gateway", "stripe")]).expect_err("no key");
        assert_eq!(err.key, "KASSA_STRIPE_API_KEY");
        let stripe = |webhook_secret| {
            raw(&[
                ("data_dir", data),
                ("gateway", "stripe"),
                ("stripe_api_key", "sk_test_kassa"),
                ("stripe_webhook_secret", webhook_secret),
            ])
        };
        for bad in ["", "hunter2", "whsec_"] {
            let err = stripe(bad).expect_err(bad);
            assert_eq!(err.key, "KASSA_STRIPE_WEBHOOK_SECRET");
        }
        let config = stripe("whsec_abc123").expect("config");
        assert_eq!(config.gateway, GatewaySpec::Stripe);
        assert_eq!(
            config.stripe_webhook_secret.as_deref(),
            Some("whsec_abc123")
        );
        let sandbox = raw(&[("data_dir", data)]).expect("config");
        assert_eq!(sandbox.stripe_webhook_secret, None);
    }

    #[test]
    fn smtp_credentials_come_together_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let err = raw(&[("data_dir", data), ("smtp_user", "kassa")]).expect_err("no password");
        assert_eq!(err.key, "KASSA_SMTP_PASSWORD");
        let err = raw(&[("data_dir", data), ("smtp_password", "pw")]).expect_err("no user");
        assert_eq!(err.key, "KASSA_SMTP_USER");
        let config = raw(&[
            ("data_dir", data),
            ("smtp_url", "smtp://127.0.0.1:2525"),
            ("smtp_user", "kassa"),
            ("smtp_password", "12345"),
        ])
        .expect("config");
        assert_eq!(config.smtp_user.as_deref(), Some("kassa"));
        assert_eq!(config.smtp_password.as_deref(), Some("12345"));
    }
}
