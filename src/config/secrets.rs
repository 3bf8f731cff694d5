//! The keys Kassa verifies with: the JWT key (a shared secret or a public key file) and the
//! webhook secret of the sandbox and HTTP gateways. Production must set them; development
//! takes the missing ones from dev_secrets.rs, and refuses keys short enough to guess (an HS256
//! key under 32 bytes, a webhook key under 24). A secret is never trimmed nor shown in Debug.

use super::dev_secrets::dev_secrets;
use super::{ConfigError, Environment, RawConfig, non_empty, secret};
use std::path::{Path, PathBuf};

/// The shortest HS256 key production accepts (RFC 7518 3.2: a key as long as the hash).
const MIN_PRODUCTION_JWT_SECRET: usize = 32;
/// The shortest decoded webhook signing key production accepts (Standard Webhooks: 24 to 64).
const MIN_PRODUCTION_WEBHOOK_KEY: usize = 24;

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

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

pub(super) struct Secrets {
    pub(super) jwt: JwtConfig,
    pub(super) webhook_secret: String,
    /// Set when some secret came from (or was generated into) the data dir.
    pub(super) dev_secrets_file: Option<PathBuf>,
}

pub(super) fn secrets(
    raw: &RawConfig,
    env: Environment,
    data_dir: &Path,
) -> Result<Secrets, ConfigError> {
    let jwt_secret = secret(raw.jwt_secret.as_deref());
    let webhook_secret = secret(raw.webhook_secret.as_deref());
    let public_key_file = non_empty(raw.jwt_public_key_file.as_deref());
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
            let (path, dev) = dev_secrets(data_dir)?;
            dev_secrets_file = Some(path);
            (j.unwrap_or(dev.jwt_secret), w.unwrap_or(dev.webhook_secret))
        }
    };
    let webhook_key = check_webhook_secret(&webhook_secret)?;
    if env == Environment::Production {
        check_production_lengths(&jwt_secret, public_key_file.is_some(), &webhook_key)?;
    }
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
    Ok(Secrets {
        jwt: JwtConfig {
            key,
            issuer: non_empty(raw.jwt_issuer.as_deref()),
            audience: non_empty(raw.jwt_audience.as_deref()),
        },
        webhook_secret,
        dev_secrets_file,
    })
}

/// The key bytes of a `whsec_<base64>` secret.
fn check_webhook_secret(secret: &str) -> Result<Vec<u8>, ConfigError> {
    use base64::Engine;
    secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                "webhook_secret",
                "expected `whsec_` followed by base64 key bytes (Standard Webhooks format)",
            )
        })
}

/// Production keys long enough not to be guessed or brute-forced offline from one signed
/// token or webhook. The JWT secret is not checked when a public key verifies tokens (it is
/// then ignored). Lengths only: a key is never shown.
fn check_production_lengths(
    jwt_secret: &str,
    public_key: bool,
    webhook_key: &[u8],
) -> Result<(), ConfigError> {
    if !public_key && jwt_secret.len() < MIN_PRODUCTION_JWT_SECRET {
        return Err(ConfigError::new(
            "jwt_secret",
            format!(
                "production needs an HS256 key of at least {MIN_PRODUCTION_JWT_SECRET} bytes, \
                 got {} (generate one with `openssl rand -base64 48`)",
                jwt_secret.len()
            ),
        ));
    }
    if webhook_key.len() < MIN_PRODUCTION_WEBHOOK_KEY {
        return Err(ConfigError::new(
            "webhook_secret",
            format!(
                "production needs a webhook key of at least {MIN_PRODUCTION_WEBHOOK_KEY} bytes \
                 once base64-decoded, got {} (generate one with \
                 `echo whsec_$(openssl rand -base64 32)`)",
                webhook_key.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::testing::raw;

    /// 32 bytes: the shortest HS256 key production takes.
    const JWT_32: &str = "0123456789abcdef0123456789abcdef";
    /// A webhook key of 24 bytes once decoded: the shortest production takes.
    const WEBHOOK_24: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3";

    #[test]
    fn production_refuses_to_start_without_explicit_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let err = raw(&[("data_dir", data), ("env", "production")]).expect_err("no secrets");
        assert_eq!(err.key, "KASSA_JWT_SECRET");
        let err = raw(&[
            ("data_dir", data),
            ("env", "production"),
            ("jwt_secret", JWT_32),
        ])
        .expect_err("no webhook secret");
        assert_eq!(err.key, "KASSA_WEBHOOK_SECRET");
        let ok = raw(&[
            ("data_dir", data),
            ("env", "production"),
            ("jwt_secret", JWT_32),
            ("webhook_secret", WEBHOOK_24),
        ])
        .expect("explicit secrets");
        assert!(ok.dev_secrets_file.is_none());
    }

    #[test]
    fn production_refuses_a_jwt_secret_under_32_bytes_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        for short in ["abc", "0123456789abcdef0123456789abcde"] {
            let err = raw(&[
                ("data_dir", data),
                ("env", "production"),
                ("jwt_secret", short),
                ("webhook_secret", WEBHOOK_24),
            ])
            .expect_err(short);
            assert_eq!(err.key, "KASSA_JWT_SECRET", "{short}");
            assert!(err.problem.contains("at least 32 bytes"), "{}", err.problem);
            assert!(!err.to_string().contains(short), "the key is never shown");
        }
    }

    #[test]
    fn production_refuses_a_webhook_key_under_24_decoded_bytes_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        // "secret" (6 bytes) and 23 bytes: long enough as text, too short as a key.
        for short in ["whsec_c2VjcmV0", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY="] {
            let err = raw(&[
                ("data_dir", data),
                ("env", "production"),
                ("jwt_secret", JWT_32),
                ("webhook_secret", short),
            ])
            .expect_err(short);
            assert_eq!(err.key, "KASSA_WEBHOOK_SECRET", "{short}");
            assert!(err.problem.contains("at least 24 bytes"), "{}", err.problem);
        }
    }

    #[test]
    fn development_still_takes_short_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        raw(&[
            ("data_dir", data),
            ("jwt_secret", "abc"),
            ("webhook_secret", "whsec_c2VjcmV0"),
        ])
        .expect("development takes any key");
    }

    #[test]
    fn production_with_a_public_key_ignores_the_secret_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let pem = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa_public.pem");
        let config = raw(&[
            ("data_dir", data),
            ("env", "production"),
            ("jwt_public_key_file", pem),
            ("jwt_secret", "abc"),
            ("webhook_secret", WEBHOOK_24),
        ])
        .expect("the public key verifies; the secret is ignored");
        assert!(matches!(
            config.jwt.key,
            crate::config::JwtKey::PublicKeyPem { .. }
        ));
    }
}
