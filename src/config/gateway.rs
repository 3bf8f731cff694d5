//! The payment gateway keys: which gateway takes payments (`KASSA_GATEWAY`), how long one
//! call to it may take (`KASSA_GATEWAY_TIMEOUT`) and Stripe's credentials when it is Stripe.
//! Checks their shape only: never calls a gateway.

use super::{ConfigError, RawConfig, non_empty, parse_url, secret};
use reqwest::Url;
use std::time::Duration;

const DEFAULT_GATEWAY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer would hold a shopper's checkout (and its stock) past any browser's patience.
const MAX_GATEWAY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewaySpec {
    Sandbox,
    Http(Url),
    Stripe,
}

pub(super) struct Gateway {
    pub(super) gateway: GatewaySpec,
    pub(super) gateway_timeout: Duration,
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
    let gateway_timeout = gateway_timeout(raw)?;
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
        gateway_timeout,
        stripe_api_key,
        stripe_api_base,
        stripe_webhook_secret,
    })
}

/// A positive duration up to two minutes; 5 s when unset.
fn gateway_timeout(raw: &RawConfig) -> Result<Duration, ConfigError> {
    let Some(text) = non_empty(raw.gateway_timeout.as_deref()) else {
        return Ok(DEFAULT_GATEWAY_TIMEOUT);
    };
    humantime::parse_duration(&text)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_GATEWAY_TIMEOUT)
        .ok_or_else(|| {
            ConfigError::new(
                "gateway_timeout",
                format!(
                    "expected a positive duration up to 2m such as `5s` or `1500ms`, got `{text}`"
                ),
            )
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

    #[test]
    fn the_gateway_deadline_is_five_seconds_unless_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let default = raw(&[("data_dir", data)]).expect("config");
        assert_eq!(default.gateway_timeout, Duration::from_secs(5));
        let set = raw(&[("data_dir", data), ("gateway_timeout", "1500ms")]).expect("config");
        assert_eq!(set.gateway_timeout, Duration::from_millis(1500));
        let blank = raw(&[("data_dir", data), ("gateway_timeout", " ")]).expect("config");
        assert_eq!(blank.gateway_timeout, Duration::from_secs(5));
    }

    #[test]
    fn a_gateway_deadline_of_zero_too_long_or_unreadable_names_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        for bad in ["0s", "3m", "5", "soon", "-1s"] {
            let err = raw(&[("data_dir", data), ("gateway_timeout", bad)]).expect_err(bad);
            assert_eq!(err.key, "KASSA_GATEWAY_TIMEOUT", "{bad}");
        }
    }
}
