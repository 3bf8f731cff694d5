//! The keys as written: `kassa.toml` (or the file `KASSA_CONFIG` names) merged under the
//! `KASSA_*` environment, every value kept as a string. Owns reading; never interprets a value
//! (the subsystem files do) and never trims or retypes a secret.

use super::ConfigError;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

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
    pub cors_origins: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub shop_name: Option<String>,
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
    #[serde(deserialize_with = "stringish")]
    pub gateway_timeout: Option<String>,
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
    pub replica_id: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub max_in_flight: Option<String>,
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
    pub scylla_username: Option<String>,
    pub scylla_password: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub scylla_tls_ca: Option<String>,
    #[serde(deserialize_with = "stringish")]
    pub scylla_tls_server_name: Option<String>,
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

    pub(super) fn extract(figment: Figment) -> Result<Self, ConfigError> {
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
pub(super) fn named_config_file(path: &Path) -> Result<PathBuf, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::read;
    use crate::config::{JwtKey, Replication};

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
}
