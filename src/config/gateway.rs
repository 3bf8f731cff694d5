//! The payment gateway keys: which gateway takes payments (`KASSA_GATEWAY`) and Stripe's
//! credentials when it is Stripe. Checks their shape only: never calls a gateway.

use super::{ConfigError, RawConfig, non_empty, parse_url, secret};
use reqwest::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewaySpec {
    Sandbox,
    Http(Url),
    Stripe,
}

pub(super) struct Gateway {
    pub(super) gateway: GatewaySpec,
    pub(super) stripe_api_key: Option<String>,
    pub(super) stripe_api_base: Url,
    pub(super) stripe_webhook_secret: Option<String>,
}

pub(super) fn gateway(raw: &RawConfig) -> Result<Gateway, ConfigError> {
    let gateway = match non_empty(raw.gateway.as_deref()).as_deref() {
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
    let stripe_api_key = secret(raw.stripe_api_key.as_deref());
    if gateway == GatewaySpec::Stripe && stripe_api_key.is_none() {
        return Err(ConfigError::new(
            "stripe_api_key",
            "KASSA_GATEWAY=stripe needs a Stripe API key",
        ));
    }
    let stripe_api_base = parse_url(
        "stripe_api_base",
        non_empty(raw.stripe_api_base.as_deref())
            .as_deref()
            .unwrap_or("https://api.stripe.com"),
    )?;
    let stripe_webhook_secret = secret(raw.stripe_webhook_secret.as_deref());
    if let Some(secret) = &stripe_webhook_secret {
        check_stripe_webhook_secret(secret)?;
    } else if gateway == GatewaySpec::Stripe {
        return Err(ConfigError::new(
            "stripe_webhook_secret",
            "KASSA_GATEWAY=stripe needs the webhook endpoint's signing secret (whsec_...)",
        ));
    }
    Ok(Gateway {
        gateway,
        stripe_api_key,
        stripe_api_base,
        stripe_webhook_secret,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::raw;

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
}
