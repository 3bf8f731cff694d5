//! The keys Kassa verifies with: the JWT key (a shared secret or a public key file) and the
//! webhook secret of the sandbox and HTTP gateways. Production must set them; development
//! takes the missing ones from dev_secrets.rs. A secret is never trimmed nor shown in Debug.

use super::dev_secrets::dev_secrets;
use super::{ConfigError, Environment, RawConfig, non_empty, secret};
use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod tests {
    use crate::config::testing::raw;

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
}
