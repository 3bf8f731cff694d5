//! JWT authentication: the verifier built once from config, and the extractors that hand
//! handlers an authenticated `User` (or `Admin`). Only the configured algorithm family is
//! accepted, `exp` is required and checked (with `nbf` when present) against the shared clock;
//! never trust the header.
//! Claims are read as RFC 7519 writes them: `aud` a string or an array, `exp` any number.

use crate::config::{JwtConfig, JwtKey};
use crate::http::error::AppError;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kassa_actors::clock::SharedClock;
use kassa_actors::domain::UserId;
use serde::{Deserialize, Serialize};
use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

/// A longer bearer token is refused before any signature work (API.md: 401 over 8 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims Kassa reads. `iss` and `aud` are checked by jsonwebtoken's `Validation`, which
/// takes either as a string or an array, so they are not read here.
#[derive(Debug, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// A NumericDate: seconds since the epoch, possibly fractional (`1700000000.5`).
    pub exp: f64,
    /// A NumericDate like `exp`; before it the token is not valid yet.
    #[serde(default)]
    pub nbf: Option<f64>,
    #[serde(default)]
    pub email: Option<String>,
    /// Absent or null: no roles.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// The claims `kassa token` writes: whole seconds, `aud` as a single string.
#[derive(Debug, Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// The caller, as proven by a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Option<String>,
    pub admin: bool,
}

/// A caller with the admin role; anyone else gets 403.
#[derive(Debug, Clone)]
pub struct Admin(pub User);

pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    clock: SharedClock,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "KASSA_JWT_PUBLIC_KEY_FILE ({path}) holds neither an RSA nor an EC public key in PEM form"
    )]
    UnreadablePublicKey { path: String },
    #[error("tokens are verified with a public key; pass --private-key-file to sign one")]
    NeedPrivateKey,
    #[error("cannot read the private key: {0}")]
    PrivateKey(String),
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

impl Authenticator {
    pub fn new(config: &JwtConfig, clock: SharedClock) -> Result<Self, KeyError> {
        let (key, algorithm) = match &config.key {
            JwtKey::Secret(secret) => (DecodingKey::from_secret(secret), Algorithm::HS256),
            JwtKey::PublicKeyPem { path, pem } => {
                if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                    (key, Algorithm::RS256)
                } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                    (key, Algorithm::ES256)
                } else {
                    return Err(KeyError::UnreadablePublicKey {
                        path: path.display().to_string(),
                    });
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        let mut required = vec!["exp", "sub"];
        if config.issuer.is_some() {
            required.push("iss");
        }
        if config.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        // `exp` and `nbf` are checked against the shared clock below, so tests can move time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Self {
            key,
            validation,
            clock,
        })
    }

    pub fn verify(&self, token: &str) -> Result<User, AppError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AppError::InvalidToken(
                "the token is longer than 8 KiB".into(),
            ));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AppError::InvalidToken(e.to_string()))?;
        let claims = data.claims;
        let now = (self.clock.now() - time::OffsetDateTime::UNIX_EPOCH).as_seconds_f64();
        if claims.exp <= now {
            return Err(AppError::InvalidToken("the token has expired".into()));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(AppError::InvalidToken("the token is not valid yet".into()));
        }
        if claims.sub.trim().is_empty() {
            return Err(AppError::InvalidToken("`sub` is empty".into()));
        }
        Ok(User {
            id: UserId(claims.sub),
            email: claims.email.filter(|e| !e.trim().is_empty()),
            admin: claims
                .roles
                .unwrap_or_default()
                .iter()
                .any(|r| r == "admin"),
        })
    }

    fn authenticate(&self, req: &HttpRequest) -> Result<User, AppError> {
        let value = req
            .headers()
            .get(header::AUTHORIZATION)
            .ok_or(AppError::MissingToken)?;
        let value = value
            .to_str()
            .map_err(|_| AppError::InvalidToken("the Authorization header is not ASCII".into()))?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AppError::MissingToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AppError::MissingToken);
        }
        self.verify(token.trim())
    }
}

/// What `kassa token` needs to sign.
pub struct TokenRequest<'a> {
    pub sub: &'a str,
    pub email: Option<&'a str>,
    pub admin: bool,
    pub ttl: Duration,
    /// PEM private key, required when tokens are verified with a public key.
    pub private_key_pem: Option<&'a [u8]>,
}

/// Signs a token that the configured verifier accepts.
pub fn mint(
    config: &JwtConfig,
    clock: &SharedClock,
    req: TokenRequest<'_>,
) -> Result<String, KeyError> {
    let (key, algorithm) = match (&config.key, req.private_key_pem) {
        (JwtKey::Secret(secret), _) => (EncodingKey::from_secret(secret), Algorithm::HS256),
        (JwtKey::PublicKeyPem { .. }, None) => return Err(KeyError::NeedPrivateKey),
        (JwtKey::PublicKeyPem { .. }, Some(pem)) => {
            if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
                (key, Algorithm::RS256)
            } else {
                let key = EncodingKey::from_ec_pem(pem)
                    .map_err(|e| KeyError::PrivateKey(e.to_string()))?;
                (key, Algorithm::ES256)
            }
        }
    };
    let ttl = i64::try_from(req.ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let claims = MintedClaims {
        sub: req.sub,
        exp: clock.now().unix_timestamp().saturating_add(ttl),
        email: req.email,
        roles: if req.admin { vec!["admin"] } else { Vec::new() },
        iss: config.issuer.as_deref(),
        aud: config.audience.as_deref(),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &key,
    )?)
}

fn authenticate(req: &HttpRequest) -> Result<User, AppError> {
    let auth = req
        .app_data::<web::Data<Arc<Authenticator>>>()
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("no Authenticator in app data")))?;
    auth.authenticate(req)
}

impl FromRequest for User {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

impl FromRequest for Admin {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|user| {
            if user.admin {
                Ok(Admin(user))
            } else {
                Err(AppError::Forbidden)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use kassa_actors::clock::{Clock, ManualClock};

    fn config() -> JwtConfig {
        JwtConfig {
            key: JwtKey::Secret(b"test-secret".to_vec()),
            issuer: None,
            audience: None,
        }
    }

    fn token(clock: &SharedClock, admin: bool) -> String {
        mint(
            &config(),
            clock,
            TokenRequest {
                sub: "alice",
                email: Some("alice@example.com"),
                admin,
                ttl: Duration::from_secs(3600),
                private_key_pem: None,
            },
        )
        .expect("mint")
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let manual = ManualClock::starting_now();
        let clock: SharedClock = Arc::new(manual.clone());
        let auth = Authenticator::new(&config(), clock.clone()).expect("auth");
        let user = auth.verify(&token(&clock, true)).expect("valid");
        assert_eq!(user.id, UserId("alice".into()));
        assert!(user.admin);
        let t = token(&clock, false);
        manual.advance(time::Duration::hours(2));
        assert!(matches!(auth.verify(&t), Err(AppError::InvalidToken(_))));
        assert!(clock.now() > manual.now() - time::Duration::seconds(1));
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"test-secret"),
        )
        .expect("sign")
    }

    #[test]
    fn an_audience_may_be_an_array_holding_ours() {
        let clock: SharedClock = Arc::new(ManualClock::starting_now());
        let exp = clock.now().unix_timestamp() + 600;
        let open = Authenticator::new(&config(), clock.clone()).expect("auth");
        let listed = signed(serde_json::json!({"sub": "a", "exp": exp, "aud": ["kassa", "other"]}));
        assert!(open.verify(&listed).is_ok(), "no audience configured");
        let checked = Authenticator::new(
            &JwtConfig {
                audience: Some("kassa".into()),
                ..config()
            },
            clock,
        )
        .expect("auth");
        assert!(checked.verify(&listed).is_ok());
        let single = signed(serde_json::json!({"sub": "a", "exp": exp, "aud": "kassa"}));
        assert!(checked.verify(&single).is_ok());
        let others = signed(serde_json::json!({"sub": "a", "exp": exp, "aud": ["x", "y"]}));
        assert!(matches!(
            checked.verify(&others),
            Err(AppError::InvalidToken(_))
        ));
    }

    #[test]
    fn a_fractional_exp_is_honoured_to_the_fraction() {
        let manual = ManualClock::starting_now();
        let clock: SharedClock = Arc::new(manual.clone());
        let auth = Authenticator::new(&config(), clock.clone()).expect("auth");
        let now = (clock.now() - time::OffsetDateTime::UNIX_EPOCH).as_seconds_f64();
        let token = signed(serde_json::json!({"sub": "a", "exp": now + 1.5}));
        assert!(auth.verify(&token).is_ok());
        manual.advance(time::Duration::milliseconds(1400));
        assert!(auth.verify(&token).is_ok(), "0.1 s left");
        manual.advance(time::Duration::milliseconds(200));
        assert!(matches!(
            auth.verify(&token),
            Err(AppError::InvalidToken(_))
        ));
    }

    #[test]
    fn alg_none_is_rejected() {
        let clock: SharedClock = Arc::new(ManualClock::starting_now());
        let auth = Authenticator::new(&config(), clock.clone()).expect("auth");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let exp = clock.now().unix_timestamp() + 600;
        let body = b64.encode(format!(
            r#"{{"sub":"mallory","exp":{exp},"roles":["admin"]}}"#
        ));
        let forged = format!("{header}.{body}.");
        assert!(matches!(
            auth.verify(&forged),
            Err(AppError::InvalidToken(_))
        ));
    }
}
