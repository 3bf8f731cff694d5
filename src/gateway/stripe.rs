//! Stripe as the payment gateway (`KASSA_GATEWAY=stripe`): PaymentIntents over Stripe's REST
//! API (`KASSA_STRIPE_API_BASE` may name any Stripe-compatible endpoint). It opens, refunds
//! and looks up intents and never decides an order's state; Stripe's verdicts arrive as
//! `payment_intent.*` events at `POST /webhook/stripe` (`routes::stripe_webhook`).
//!
//! The shopper pays on the storefront, not on a page Kassa or Stripe hosts: `paymentUrl` is
//! `{KASSA_STOREFRONT_URL}/pay/{orderId}?payment_intent={id}` and `paymentToken` the intent's
//! client secret, with which that page mounts Stripe Elements and calls
//! `stripe.confirmPayment` (its `return_url` being the storefront's `/orders/{orderId}`). Of
//! what a hosted page would show, only the order number goes to Stripe
//! (`metadata[order_number]`, for its dashboard).
//!
//! Every call may be repeated safely (the intent is created under `Idempotency-Key: <orderId>`,
//! the refund under `refund-<intent id>`, the cancel under `cancel-<intent id>`, the rest are
//! reads), so a call that got no answer, and a 408, 429 or 5xx, is retried (3 attempts,
//! `client.rs`) unless Stripe answers `Stripe-Should-Retry: false`; any other 4xx is a refusal
//! and is never retried. A call, retries included, ends at its deadline
//! (`KASSA_GATEWAY_TIMEOUT`) as unavailable.

use super::client::{self, Attempt, GatewayClient};
use anyhow::Context as _;
use async_trait::async_trait;
use kassa_actors::domain::{Currency, OrderId};
use kassa_actors::gateway::{
    CancelOutcome, Gateway, GatewayError, PaymentRequest, PaymentSession, PaymentState,
    PaymentStatus,
};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
/// How much of an unreadable error body is kept in the error message.
const SNIPPET_CHARS: usize = 200;
/// Stripe's answer when a payment was refunded already (by an operator in the dashboard, or by
/// Kassa more than 24 hours ago, after the idempotency key expired).
const ALREADY_REFUNDED: &str = "charge_already_refunded";

/// Where Stripe is and how Kassa signs in.
#[derive(Clone)]
pub struct StripeSettings {
    /// `sk_...`, or a restricted `rk_...` key that may write PaymentIntents and Refunds.
    pub api_key: String,
    /// `https://api.stripe.com`, or a Stripe-compatible endpoint.
    pub api_base: Url,
    /// `KASSA_STOREFRONT_URL`: the storefront serves the payment page under `/pay/`.
    pub storefront_url: Url,
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("api_key", &"<redacted>")
            .field("api_base", &self.api_base.as_str())
            .field("storefront_url", &self.storefront_url.as_str())
            .finish()
    }
}

/// Stripe's PaymentIntents; the API key travels as a sensitive default header.
#[derive(Debug, Clone)]
pub struct StripeGateway {
    api_base: Url,
    storefront_url: Url,
    client: GatewayClient,
}

/// A PaymentIntent as Stripe shows it, in API answers and as the `data.object` of
/// `payment_intent.*` events; only the fields Kassa reads.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    /// Minor units, as requested.
    pub amount: i64,
    /// Minor units actually received (0 until the intent succeeds).
    #[serde(default)]
    pub amount_received: Option<i64>,
    /// Lowercase ISO 4217 (`eur`).
    pub currency: String,
    pub status: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub metadata: IntentMetadata,
    /// Set while the latest attempt to pay has failed.
    #[serde(default)]
    pub last_payment_error: Option<serde_json::Value>,
}

/// The metadata Kassa writes on every intent it opens.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IntentMetadata {
    /// Absent on intents Kassa did not open.
    #[serde(default)]
    pub order_id: Option<String>,
}

impl PaymentIntent {
    /// Succeeded; failed when canceled or when the last attempt failed and the intent waits for
    /// another payment method; otherwise still pending.
    pub fn state(&self) -> PaymentState {
        match self.status.as_str() {
            "succeeded" => PaymentState::Succeeded,
            "canceled" => PaymentState::Failed,
            "requires_payment_method" if self.last_payment_error.is_some() => PaymentState::Failed,
            _ => PaymentState::Pending,
        }
    }

    /// What was received once the intent succeeded (older API versions only say `amount`),
    /// otherwise the amount requested.
    pub fn settled_amount(&self) -> i64 {
        match self.amount_received {
            Some(received) if self.status == "succeeded" => received,
            _ => self.amount,
        }
    }

    /// The ISO 4217 code as Kassa writes it (`EUR` for Stripe's `eur`).
    pub fn currency_code(&self) -> String {
        self.currency.to_ascii_uppercase()
    }
}

#[derive(Deserialize)]
struct Refund {
    id: String,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct RefundList {
    data: Vec<Refund>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: StripeError,
}

#[derive(Deserialize)]
struct StripeError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Why a call failed, keeping Stripe's error code for the one refusal Kassa handles itself.
#[derive(Debug)]
enum CallError {
    Refused {
        code: Option<String>,
        message: String,
    },
    Unavailable(String),
}

impl From<CallError> for GatewayError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Refused { message, .. } => Self::Refused(message),
            CallError::Unavailable(message) => Self::Unavailable(message),
        }
    }
}

impl client::CallError for CallError {
    fn refused(message: String) -> Self {
        Self::Refused {
            code: None,
            message,
        }
    }

    fn unavailable(message: String) -> Self {
        Self::Unavailable(message)
    }

    fn outcome(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "refused",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl StripeGateway {
    pub fn new(settings: StripeSettings) -> anyhow::Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", settings.api_key))
            .context("KASSA_STRIPE_API_KEY cannot be sent in a header")?;
        auth.set_sensitive(true);
        let client = client::builder()
            .user_agent(concat!("kassa/", env!("CARGO_PKG_VERSION")))
            .default_headers(HeaderMap::from_iter([(AUTHORIZATION, auth)]))
            .build()
            .context("building the HTTP client for Stripe")?;
        Ok(Self {
            api_base: settings.api_base,
            storefront_url: settings.storefront_url,
            client: GatewayClient::new(client, "Stripe"),
        })
    }

    /// The same gateway, each call (retries included) ending after `deadline`.
    pub fn with_deadline(self, deadline: Duration) -> Self {
        Self {
            client: self.client.with_deadline(deadline),
            ..self
        }
    }

    /// `{api_base}/v1/{segments}`, each segment percent-encoded; a path on the base is kept.
    fn endpoint(&self, segments: &[&str]) -> Result<Url, CallError> {
        let mut url = self.api_base.clone();
        url.path_segments_mut()
            .map_err(|()| CallError::Refused {
                code: None,
                message: format!("`{}` cannot be a base URL", self.api_base),
            })?
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        Ok(url)
    }

    /// The storefront page that mounts Stripe Elements for this intent.
    fn payment_url(&self, order_id: OrderId, intent_id: &str) -> Result<String, CallError> {
        let mut url = self.storefront_url.clone();
        url.path_segments_mut()
            .map_err(|()| CallError::Refused {
                code: None,
                message: format!("`{}` cannot be a base URL", self.storefront_url),
            })?
            .pop_if_empty()
            .extend(["pay", &order_id.to_string()]);
        url.query_pairs_mut()
            .append_pair("payment_intent", intent_id);
        Ok(url.into())
    }

    /// A form-encoded POST, as Stripe's API takes them.
    fn post_form(
        &self,
        url: Url,
        idempotency_key: &str,
        form: &[(&str, &str)],
    ) -> Result<RequestBuilder, CallError> {
        let body = serde_urlencoded::to_string(form).map_err(|e| CallError::Refused {
            code: None,
            message: format!("the form cannot be encoded: {e}"),
        })?;
        Ok(self
            .client
            .http()
            .post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("Idempotency-Key", idempotency_key)
            .body(body))
    }

    /// Sends `request`, retrying what may be retried, and reads the JSON answer; the whole
    /// call (retries included) is timed in `kassa_gateway_request_seconds`.
    async fn call<T: DeserializeOwned>(
        &self,
        op: &'static str,
        request: RequestBuilder,
    ) -> Result<T, CallError> {
        self.client
            .call(op, request, |status, headers, body| {
                judge(op, status, headers, body)?;
                serde_json::from_slice(body).map_err(|e| {
                    Attempt::Final(CallError::Refused {
                        code: None,
                        message: format!("{op}: Stripe's answer is unreadable: {e}"),
                    })
                })
            })
            .await
    }

    /// The refund Stripe already holds for `payment_id`, if any did not fail.
    async fn existing_refund(&self, payment_id: &str) -> Result<Option<String>, CallError> {
        let mut url = self.endpoint(&["refunds"])?;
        url.query_pairs_mut()
            .append_pair("payment_intent", payment_id)
            .append_pair("limit", "100");
        let refunds: RefundList = self.call("refund", self.client.http().get(url)).await?;
        Ok(refunds
            .data
            .into_iter()
            .find(|r| !matches!(r.status.as_deref(), Some("failed" | "canceled")))
            .map(|r| r.id))
    }
}

/// A 2xx is Stripe's answer; 408, 429 and 5xx are worth another attempt unless Stripe answers
/// `Stripe-Should-Retry: false` (and any other status is, when it says `true`); the rest is a
/// refusal.
fn judge(
    op: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Attempt<CallError>> {
    if status.is_success() {
        return Ok(());
    }
    let should_retry = headers
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.eq_ignore_ascii_case("true"));
    let (code, message) = stripe_error(status, body);
    let message = format!("{op}: {message}");
    let transient = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    if should_retry.unwrap_or(transient) {
        Err(Attempt::Retryable(message))
    } else if transient {
        Err(Attempt::Final(CallError::Unavailable(message)))
    } else {
        Err(Attempt::Final(CallError::Refused { code, message }))
    }
}

/// Stripe's error code and a one-line description of an error answer.
fn stripe_error(status: StatusCode, body: &[u8]) -> (Option<String>, String) {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error }) => {
            let what = error.message.unwrap_or_else(|| "no message".into());
            let message = match &error.code {
                Some(code) => format!("Stripe answered {status} ({code}): {what}"),
                None => format!("Stripe answered {status}: {what}"),
            };
            (error.code, message)
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let snippet: String = text.chars().take(SNIPPET_CHARS).collect();
            (None, format!("Stripe answered {status}: {snippet}"))
        }
    }
}

#[async_trait]
impl Gateway for StripeGateway {
    /// Cancels the intent. Stripe refuses to cancel one that succeeded, is processing or was
    /// cancelled already: the intent as it now stands then says which.
    async fn cancel(&self, payment_id: &str) -> Result<CancelOutcome, GatewayError> {
        let http = self.post_form(
            self.endpoint(&["payment_intents", payment_id, "cancel"])?,
            &format!("cancel-{payment_id}"),
            &[],
        )?;
        let refusal = match self.call::<PaymentIntent>("cancel", http).await {
            Ok(_) => return Ok(CancelOutcome::Cancelled),
            Err(CallError::Refused { message, .. }) => message,
            Err(other) => return Err(other.into()),
        };
        let http = self
            .client
            .http()
            .get(self.endpoint(&["payment_intents", payment_id])?);
        let intent: PaymentIntent = self.call("cancel", http).await?;
        match intent.status.as_str() {
            "succeeded" => Ok(CancelOutcome::AlreadySucceeded),
            "canceled" => Ok(CancelOutcome::Cancelled),
            "processing" => Err(GatewayError::Unavailable(format!(
                "cancel: intent {payment_id} is processing; ask again once Stripe has decided"
            ))),
            _ => Err(GatewayError::Refused(refusal)),
        }
    }

    async fn initiate(&self, request: PaymentRequest) -> Result<PaymentSession, GatewayError> {
        let order_id = request.order_id.to_string();
        let amount = request.amount.to_string();
        let currency = request.currency.code().to_ascii_lowercase();
        let mut form = vec![
            ("amount", amount.as_str()),
            ("currency", &currency),
            ("metadata[order_id]", &order_id),
        ];
        // The number the shopper and the shop know the order by, for Stripe's dashboard.
        if !request.display.order_number.is_empty() {
            form.push(("metadata[order_number]", &request.display.order_number));
        }
        let http = self.post_form(self.endpoint(&["payment_intents"])?, &order_id, &form)?;
        let intent: PaymentIntent = self.call("initiate", http).await?;
        let token = intent.client_secret.clone().ok_or_else(|| {
            GatewayError::Refused(format!(
                "initiate: intent {} has no client_secret",
                intent.id
            ))
        })?;
        Ok(PaymentSession {
            payment_url: self.payment_url(request.order_id, &intent.id)?,
            payment_id: intent.id,
            token,
        })
    }

    async fn refund(&self, payment_id: &str) -> Result<String, GatewayError> {
        let http = self.post_form(
            self.endpoint(&["refunds"])?,
            &format!("refund-{payment_id}"),
            &[("payment_intent", payment_id)],
        )?;
        match self.call::<Refund>("refund", http).await {
            Ok(refund) => Ok(refund.id),
            Err(CallError::Refused { code, message })
                if code.as_deref() == Some(ALREADY_REFUNDED) =>
            {
                match self.existing_refund(payment_id).await? {
                    Some(id) => Ok(id),
                    None => Err(GatewayError::Refused(message)),
                }
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn status(&self, payment_id: &str) -> Result<PaymentStatus, GatewayError> {
        let http = self
            .client
            .http()
            .get(self.endpoint(&["payment_intents", payment_id])?);
        let intent: PaymentIntent = self.call("status", http).await?;
        let order_id = intent
            .metadata
            .order_id
            .as_deref()
            .and_then(|raw| OrderId::parse(raw).ok())
            .ok_or_else(|| {
                GatewayError::Refused(format!(
                    "status: intent {} carries no Kassa order id in metadata[order_id]",
                    intent.id
                ))
            })?;
        let currency = Currency::from_code(&intent.currency_code()).ok_or_else(|| {
            GatewayError::Refused(format!(
                "status: intent {} has an unknown currency `{}`",
                intent.id, intent.currency
            ))
        })?;
        Ok(PaymentStatus {
            state: intent.state(),
            amount: intent.settled_amount(),
            currency,
            order_id,
            payment_id: intent.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(api_base: &str, storefront: &str) -> StripeGateway {
        StripeGateway::new(StripeSettings {
            api_key: "sk_test_kassa".into(),
            api_base: Url::parse(api_base).expect("url"),
            storefront_url: Url::parse(storefront).expect("url"),
        })
        .expect("gateway")
    }

    fn intent(status: &str, last_payment_error: Option<serde_json::Value>) -> PaymentIntent {
        PaymentIntent {
            id: "pi_1".into(),
            amount: 1999,
            amount_received: Some(0),
            currency: "eur".into(),
            status: status.into(),
            client_secret: None,
            metadata: IntentMetadata::default(),
            last_payment_error,
        }
    }

    #[test]
    fn endpoints_are_under_v1_and_keep_the_base_path() {
        let stripe = gateway("https://api.stripe.com", "https://shop.test");
        let url = stripe.endpoint(&["payment_intents", "pi_1"]).expect("url");
        assert_eq!(
            url.as_str(),
            "https://api.stripe.com/v1/payment_intents/pi_1"
        );
        let proxied = gateway("http://127.0.0.1:8420/stripe/", "https://shop.test");
        let url = proxied.endpoint(&["refunds"]).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:8420/stripe/v1/refunds");
        let url = stripe
            .endpoint(&["payment_intents", "../refunds"])
            .expect("url");
        assert_eq!(
            url.as_str(),
            "https://api.stripe.com/v1/payment_intents/..%2Frefunds"
        );
    }

    #[test]
    fn the_payment_url_is_the_storefronts_pay_page_for_the_intent() {
        let order = OrderId::parse("0192f0c4-0000-7000-8000-000000000001").expect("id");
        for storefront in ["https://shop.test", "https://shop.test/"] {
            let url = gateway("https://api.stripe.com", storefront)
                .payment_url(order, "pi_3Abc")
                .expect("url");
            assert_eq!(
                url,
                "https://shop.test/pay/0192f0c4-0000-7000-8000-000000000001?payment_intent=pi_3Abc"
            );
        }
    }

    #[test]
    fn intent_states_map_to_payment_states() {
        let failure = Some(serde_json::json!({"code": "card_declined"}));
        assert_eq!(intent("succeeded", None).state(), PaymentState::Succeeded);
        assert_eq!(intent("canceled", None).state(), PaymentState::Failed);
        assert_eq!(
            intent("requires_payment_method", failure.clone()).state(),
            PaymentState::Failed
        );
        for pending in [
            "requires_payment_method",
            "requires_confirmation",
            "requires_action",
            "processing",
            "requires_capture",
        ] {
            assert_eq!(
                intent(pending, None).state(),
                PaymentState::Pending,
                "{pending}"
            );
        }
    }

    #[test]
    fn the_settled_amount_is_what_was_received_once_succeeded() {
        let mut paid = intent("succeeded", None);
        paid.amount_received = Some(1500);
        assert_eq!(paid.settled_amount(), 1500);
        paid.amount_received = None;
        assert_eq!(paid.settled_amount(), 1999);
        assert_eq!(intent("processing", None).settled_amount(), 1999);
        assert_eq!(intent("processing", None).currency_code(), "EUR");
    }

    #[test]
    fn stripe_errors_keep_their_code_and_message() {
        let body = br#"{"error": {"code": "charge_already_refunded", "message": "Charge ch_1 has already been refunded.", "type": "invalid_request_error"}}"#;
        let (code, message) = stripe_error(StatusCode::BAD_REQUEST, body);
        assert_eq!(code.as_deref(), Some(ALREADY_REFUNDED));
        assert!(message.contains("has already been refunded"), "{message}");
        let (code, message) = stripe_error(StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert_eq!(code, None);
        assert!(message.contains("<html>oops"), "{message}");
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let settings = StripeSettings {
            api_key: "sk_live_very_secret".into(),
            api_base: Url::parse("https://api.stripe.com").expect("url"),
            storefront_url: Url::parse("https://shop.test").expect("url"),
        };
        assert!(!format!("{settings:?}").contains("very_secret"));
        let stripe = StripeGateway::new(settings).expect("gateway");
        assert!(!format!("{stripe:?}").contains("very_secret"));
    }
}
