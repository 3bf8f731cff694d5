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
//! reads), so connect errors, timeouts, 429
//! and 5xx are retried (3 attempts) unless Stripe answers `Stripe-Should-Retry: false`; any
//! other 4xx is a refusal and is never retried. A call, retries included, ends at its deadline
//! (`KASSA_GATEWAY_TIMEOUT`) as unavailable.

use super::http::{DEFAULT_DEADLINE, describe};
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
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per call; the waits between them start here and double.
const ATTEMPTS: u32 = 3;
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(200);
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
    client: reqwest::Client,
    /// The most one call may take, retries included.
    deadline: Duration,
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

/// Why one attempt failed: worth another try, or final.
enum AttemptError {
    Retryable(String),
    Final(CallError),
}

impl StripeGateway {
    pub fn new(settings: StripeSettings) -> anyhow::Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", settings.api_key))
            .context("KASSA_STRIPE_API_KEY cannot be sent in a header")?;
        auth.set_sensitive(true);
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kassa/", env!("CARGO_PKG_VERSION")))
            .default_headers(HeaderMap::from_iter([(AUTHORIZATION, auth)]))
            .build()
            .context("building the HTTP client for Stripe")?;
        Ok(Self {
            api_base: settings.api_base,
            storefront_url: settings.storefront_url,
            client,
            deadline: DEFAULT_DEADLINE,
        })
    }

    /// The same gateway, each call (retries included) ending after `deadline`.
    pub fn with_deadline(self, deadline: Duration) -> Self {
        Self { deadline, ..self }
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
        let started = Instant::now();
        let result = self.send_with_retries(op, request).await.and_then(|body| {
            serde_json::from_slice(&body).map_err(|e| CallError::Refused {
                code: None,
                message: format!("{op}: Stripe's answer is unreadable: {e}"),
            })
        });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(CallError::Refused { .. }) => "refused",
            Err(CallError::Unavailable(_)) => "unavailable",
        };
        metrics::histogram!("kassa_gateway_request_seconds", "op" => op, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Stripe's answer to `request`, retried while that may help, until the deadline.
    async fn send_with_retries(
        &self,
        op: &'static str,
        request: RequestBuilder,
    ) -> Result<Vec<u8>, CallError> {
        tokio::time::timeout(self.deadline, self.retry(op, request))
            .await
            .unwrap_or_else(|_| {
                Err(CallError::Unavailable(format!(
                    "{op}: no answer within {:?}, retries included",
                    self.deadline
                )))
            })
    }

    async fn retry(&self, op: &'static str, request: RequestBuilder) -> Result<Vec<u8>, CallError> {
        let request = request.build().map_err(|e| CallError::Refused {
            code: None,
            message: format!("{op}: {}", describe(&e)),
        })?;
        let mut wait = FIRST_RETRY_WAIT;
        let mut attempt = 1;
        loop {
            let this_try = request.try_clone().ok_or_else(|| CallError::Refused {
                code: None,
                message: format!("{op}: the request body cannot be resent"),
            })?;
            match self.attempt(op, this_try).await {
                Ok(body) => return Ok(body),
                Err(AttemptError::Final(e)) => return Err(e),
                Err(AttemptError::Retryable(problem)) if attempt < ATTEMPTS => {
                    tracing::warn!(op, attempt, error = %problem, "Stripe call failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                Err(AttemptError::Retryable(problem)) => {
                    return Err(CallError::Unavailable(format!(
                        "{op}: {problem} (after {ATTEMPTS} attempts)"
                    )));
                }
            }
        }
    }

    async fn attempt(
        &self,
        op: &'static str,
        request: reqwest::Request,
    ) -> Result<Vec<u8>, AttemptError> {
        let response = self
            .client
            .execute(request)
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.eq_ignore_ascii_case("true"));
        let body = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let (code, message) = stripe_error(status, &body);
        let message = format!("{op}: {message}");
        let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        if should_retry.unwrap_or(transient) {
            Err(AttemptError::Retryable(message))
        } else if transient {
            Err(AttemptError::Final(CallError::Unavailable(message)))
        } else {
            Err(AttemptError::Final(CallError::Refused { code, message }))
        }
    }

    /// The refund Stripe already holds for `payment_id`, if any did not fail.
    async fn existing_refund(&self, payment_id: &str) -> Result<Option<String>, CallError> {
        let mut url = self.endpoint(&["refunds"])?;
        url.query_pairs_mut()
            .append_pair("payment_intent", payment_id)
            .append_pair("limit", "100");
        let refunds: RefundList = self.call("refund", self.client.get(url)).await?;
        Ok(refunds
            .data
            .into_iter()
            .find(|r| !matches!(r.status.as_deref(), Some("failed" | "canceled")))
            .map(|r| r.id))
    }
}

/// Connect errors and timeouts may be retried (the call is idempotent); any other transport
/// failure may not.
fn transport_error(e: reqwest::Error) -> AttemptError {
    let problem = describe(&e);
    if e.is_connect() || e.is_timeout() {
        AttemptError::Retryable(problem)
    } else {
        AttemptError::Final(CallError::Unavailable(problem))
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
