//! The built-in sandbox payment gateway: payments live in memory (and, in Kassa, in a
//! journal in the data directory, so a restart keeps them), a hosted page lets the shopper
//! pay or decline, and each decision is delivered to `callbackUrl` as a Standard
//! Webhooks-signed event, retried with capped backoff until a 2xx, however long that takes
//! (only the process stopping ends it). No money ever moves.

use super::http::describe;
use crate::error::{AppError, json_error};
use crate::routes::{MAX_BODY_BYTES, method_not_allowed};
use actix_web::dev::{Server, ServerHandle};
use actix_web::error::UrlencodedError;
use actix_web::guard::{self, GuardContext};
use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use async_trait::async_trait;
use base64::Engine as _;
use kassa_actors::clock::{SharedClock, SystemClock};
use kassa_actors::domain::{Currency, OrderId, format_money};
use kassa_actors::gateway::{
    Gateway, GatewayError, PaymentRequest, PaymentSession, PaymentState, PaymentStatus,
};
use rand::RngExt;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use standardwebhooks::{
    HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, Webhook,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use uuid::Uuid;

mod journal;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How the sandbox is reached and how hard it tries to deliver webhooks.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// `whsec_<base64>`: the Standard Webhooks key every event is signed with.
    pub webhook_secret: String,
    /// Where the sandbox's routes are reachable (`http://127.0.0.1:8080/sandbox`); every
    /// `paymentUrl` starts with it.
    pub public_base_url: String,
    /// The wait before the second delivery attempt; it doubles after each failure.
    pub retry_initial: Duration,
    /// The longest wait between two attempts; delivery never gives up.
    pub retry_max: Duration,
}

impl SandboxSettings {
    /// Delivery retried from 500 ms doubling up to one attempt a minute, until a 2xx.
    pub fn new(webhook_secret: impl Into<String>, public_base_url: impl Into<String>) -> Self {
        Self {
            webhook_secret: webhook_secret.into(),
            public_base_url: public_base_url.into(),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// The sandbox gateway; clones share the same payments.
#[derive(Clone)]
pub struct SandboxGateway {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SandboxSettings,
    clock: SharedClock,
    signer: Webhook,
    client: reqwest::Client,
    ledger: Mutex<Ledger>,
    /// Where every change is appended (`None`: memory only).
    journal: Option<journal::Journal>,
}

/// One journal line: a payment as it stands, and the webhook of its decision while that is
/// not yet delivered.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recorded<'a> {
    payment: Cow<'a, Payment>,
    undelivered: Option<Cow<'a, WebhookEvent>>,
    /// When the line was written, unix seconds.
    #[serde(default)]
    at: i64,
}

/// How long a payment is kept after its last change, unless its webhook is still to be
/// delivered (a late refund or status query still finds it).
const RETENTION: time::Duration = time::Duration::days(30);

impl Inner {
    /// Journals the payment as it now stands (queued: see [`journal`]).
    fn record(&self, payment: &Payment, undelivered: Option<&WebhookEvent>) {
        if let Some(journal) = &self.journal {
            journal.record(&self.line(payment, undelivered));
        }
    }

    /// Journals a change answered only once it is written (a payment opened, a decision, a
    /// refund); its receipt is waited for outside the ledger's lock.
    fn record_answered(
        &self,
        payment: &Payment,
        undelivered: Option<&WebhookEvent>,
    ) -> journal::Receipt {
        match &self.journal {
            Some(journal) => journal.record_with_receipt(&self.line(payment, undelivered)),
            None => journal::Receipt::none(),
        }
    }

    fn line<'a>(
        &self,
        payment: &'a Payment,
        undelivered: Option<&'a WebhookEvent>,
    ) -> Recorded<'a> {
        Recorded {
            payment: Cow::Borrowed(payment),
            undelivered: undelivered.map(Cow::Borrowed),
            at: self.clock.now().unix_timestamp(),
        }
    }
}

#[derive(Default)]
struct Ledger {
    payments: HashMap<String, Payment>,
    by_order: HashMap<OrderId, String>,
    /// Decisions whose webhook is still being delivered, by payment id (journalled only).
    undelivered: HashMap<String, WebhookEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payment {
    id: String,
    url: String,
    token: String,
    order_id: OrderId,
    amount: i64,
    currency: Currency,
    callback_url: String,
    return_url: String,
    state: PaymentState,
    refund_id: Option<String>,
}

impl Payment {
    fn session(&self) -> PaymentSession {
        PaymentSession {
            payment_id: self.id.clone(),
            payment_url: self.url.clone(),
            token: self.token.clone(),
        }
    }

    fn status(&self) -> PaymentStatus {
        PaymentStatus {
            payment_id: self.id.clone(),
            order_id: self.order_id,
            state: self.state,
            amount: self.amount,
            currency: self.currency,
        }
    }
}

/// What the shopper decided on the payment page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    fn state(self) -> PaymentState {
        match self {
            Self::Success => PaymentState::Succeeded,
            Self::Failure => PaymentState::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SandboxError {
    #[error("no payment with id `{0}`")]
    UnknownPayment(String),
    #[error("must not be negative")]
    NegativeAmount,
    #[error("order {0} already has a payment for a different amount or currency")]
    OrderReused(OrderId),
    #[error("only a succeeded payment can be refunded; this one is {}", state_name(*.0))]
    NotRefundable(PaymentState),
    #[error("the payment has already {}", state_name(*.0))]
    AlreadyDecided(PaymentState),
}

impl From<SandboxError> for GatewayError {
    fn from(e: SandboxError) -> Self {
        Self::Refused(e.to_string())
    }
}

impl From<SandboxError> for AppError {
    fn from(e: SandboxError) -> Self {
        let message = e.to_string();
        match e {
            SandboxError::UnknownPayment(_) => AppError::not_found("payment_not_found", message),
            SandboxError::NegativeAmount => AppError::invalid("amount", message),
            SandboxError::OrderReused(_) => AppError::Unprocessable {
                code: "idempotency_key_reused",
                message,
            },
            SandboxError::NotRefundable(_) => AppError::Conflict {
                code: "payment_not_refundable",
                message,
                details: None,
            },
            SandboxError::AlreadyDecided(_) => AppError::Conflict {
                code: "payment_already_decided",
                message,
                details: None,
            },
        }
    }
}

/// One signed event on its way to `callbackUrl`; every attempt carries the same `id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookEvent {
    id: String,
    payment_id: String,
    callback_url: String,
    payload: String,
}

impl SandboxGateway {
    /// # Panics
    /// If `settings.webhook_secret` is not base64 (`Config` and [`bind_standalone`] check it
    /// first) or no TLS back end can be initialised; both only at start-up.
    pub fn new(settings: SandboxSettings, clock: SharedClock) -> Self {
        Self::build(settings, clock, Ledger::default(), None)
    }

    /// A sandbox whose payments are kept in the journal at `path` as well: the payments it
    /// holds are read back, and the webhooks of decisions not yet delivered are delivered
    /// again (their receiver treats a second delivery as the duplicate it is). Must be
    /// called inside a tokio runtime.
    pub fn with_journal(
        settings: SandboxSettings,
        clock: SharedClock,
        path: &Path,
    ) -> anyhow::Result<Self> {
        let forget_before = (clock.now() - RETENTION).unix_timestamp();
        let keep = |r: &Recorded| r.undelivered.is_some() || r.at >= forget_before;
        let (journal, entries) =
            journal::Journal::open(path, |r: &Recorded| r.payment.id.clone(), keep)
                .with_context(|| format!("the sandbox's payment journal {}", path.display()))?;
        let mut ledger = Ledger::default();
        let mut undelivered = Vec::new();
        for Recorded {
            payment,
            undelivered: event,
            ..
        } in entries
        {
            let payment = payment.into_owned();
            if let Some(event) = event {
                let event = event.into_owned();
                undelivered.push(event.clone());
                ledger.undelivered.insert(payment.id.clone(), event);
            }
            ledger.by_order.insert(payment.order_id, payment.id.clone());
            ledger.payments.insert(payment.id.clone(), payment);
        }
        if !ledger.payments.is_empty() {
            tracing::info!(
                payments = ledger.payments.len(),
                undelivered = undelivered.len(),
                path = %path.display(),
                "sandbox payments read back"
            );
        }
        let sandbox = Self::build(settings, clock, ledger, Some(journal));
        for event in undelivered {
            tokio::spawn(deliver(sandbox.inner.clone(), event));
        }
        Ok(sandbox)
    }

    fn build(
        settings: SandboxSettings,
        clock: SharedClock,
        ledger: Ledger,
        journal: Option<journal::Journal>,
    ) -> Self {
        let signer = Webhook::new(&settings.webhook_secret)
            .expect("the webhook secret is whsec_<base64>; configuration checks it");
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client for webhook delivery builds");
        Self {
            inner: Arc::new(Inner {
                settings,
                clock,
                signer,
                client,
                ledger: Mutex::new(ledger),
                journal,
            }),
        }
    }

    /// Writes out what the journal has queued and stops it (shutdown).
    pub fn close_journal(&self) {
        if let Some(journal) = &self.inner.journal {
            journal.close();
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.inner.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the order's payment, or returns the one it already has; answered once the new
    /// payment's line is in the journal (an order is written only after its payment opened,
    /// so a crash cannot leave an order whose payment the sandbox does not know).
    async fn open(&self, request: PaymentRequest) -> Result<Payment, SandboxError> {
        let (payment, receipt) = self.open_queued(request)?;
        receipt.wait().await;
        Ok(payment)
    }

    /// `open`, the journal line queued; its receipt tells when it is written.
    fn open_queued(
        &self,
        request: PaymentRequest,
    ) -> Result<(Payment, journal::Receipt), SandboxError> {
        if request.amount < 0 {
            return Err(SandboxError::NegativeAmount);
        }
        let mut ledger = self.ledger();
        if let Some(existing) = ledger
            .by_order
            .get(&request.order_id)
            .and_then(|id| ledger.payments.get(id))
        {
            if existing.amount != request.amount || existing.currency != request.currency {
                return Err(SandboxError::OrderReused(request.order_id));
            }
            return Ok((existing.clone(), journal::Receipt::none()));
        }
        let id = format!("pay_{}", Uuid::new_v4().simple());
        let base = self.inner.settings.public_base_url.trim_end_matches('/');
        let payment = Payment {
            url: format!("{base}/pay/{id}"),
            id: id.clone(),
            token: random_token(),
            order_id: request.order_id,
            amount: request.amount,
            currency: request.currency,
            callback_url: request.callback_url,
            return_url: request.return_url,
            state: PaymentState::Pending,
            refund_id: None,
        };
        let receipt = self.inner.record_answered(&payment, None);
        ledger.by_order.insert(request.order_id, id.clone());
        ledger.payments.insert(id, payment.clone());
        Ok((payment, receipt))
    }

    fn payment(&self, payment_id: &str) -> Result<Payment, SandboxError> {
        self.ledger()
            .payments
            .get(payment_id)
            .cloned()
            .ok_or_else(|| SandboxError::UnknownPayment(payment_id.to_string()))
    }

    /// Refunds a succeeded payment; a repeated refund answers the first refund's id.
    async fn refund_payment(&self, payment_id: &str) -> Result<String, SandboxError> {
        let (refund_id, receipt) = {
            let mut ledger = self.ledger();
            let payment = ledger
                .payments
                .get_mut(payment_id)
                .ok_or_else(|| SandboxError::UnknownPayment(payment_id.to_string()))?;
            if payment.state != PaymentState::Succeeded {
                return Err(SandboxError::NotRefundable(payment.state));
            }
            if let Some(refund_id) = &payment.refund_id {
                return Ok(refund_id.clone());
            }
            let refund_id = format!("re_{}", Uuid::new_v4().simple());
            payment.refund_id = Some(refund_id.clone());
            let payment = payment.clone();
            let receipt = self
                .inner
                .record_answered(&payment, ledger.undelivered.get(payment_id));
            (refund_id, receipt)
        };
        receipt.wait().await;
        Ok(refund_id)
    }

    /// Records the shopper's decision and starts delivering its webhook. Deciding again the
    /// same way changes nothing; deciding the other way is refused.
    async fn decide(&self, payment_id: &str, outcome: Outcome) -> Result<Payment, SandboxError> {
        let (payment, event, receipt) = {
            let mut ledger = self.ledger();
            let payment = ledger
                .payments
                .get_mut(payment_id)
                .ok_or_else(|| SandboxError::UnknownPayment(payment_id.to_string()))?;
            match payment.state {
                PaymentState::Pending => {
                    payment.state = outcome.state();
                    let event = webhook_event(payment);
                    let receipt = self.inner.record_answered(payment, Some(&event));
                    let payment = payment.clone();
                    if self.inner.journal.is_some() {
                        ledger.undelivered.insert(payment.id.clone(), event.clone());
                    }
                    (payment, Some(event), receipt)
                }
                state if state == outcome.state() => {
                    (payment.clone(), None, journal::Receipt::none())
                }
                state => return Err(SandboxError::AlreadyDecided(state)),
            }
        };
        // Answered (and delivered) once the decision is in the journal.
        receipt.wait().await;
        if let Some(event) = event {
            tracing::info!(payment_id, webhook_id = %event.id, outcome = ?outcome, "sandbox payment decided");
            tokio::spawn(deliver(self.inner.clone(), event));
        }
        Ok(payment)
    }
}

#[async_trait]
impl Gateway for SandboxGateway {
    async fn cancel(
        &self,
        payment_id: &str,
    ) -> Result<kassa_actors::gateway::CancelOutcome, GatewayError> {
        Err(GatewayError::Refused(format!(
            "cancelling payment {payment_id} is not supported yet"
        )))
    }

    async fn initiate(&self, request: PaymentRequest) -> Result<PaymentSession, GatewayError> {
        Ok(self.open(request).await?.session())
    }

    async fn refund(&self, payment_id: &str) -> Result<String, GatewayError> {
        Ok(self.refund_payment(payment_id).await?)
    }

    async fn status(&self, payment_id: &str) -> Result<PaymentStatus, GatewayError> {
        Ok(self.payment(payment_id)?.status())
    }
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    format!(
        "tok_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn state_name(state: PaymentState) -> &'static str {
    match state {
        PaymentState::Pending => "pending",
        PaymentState::Succeeded => "succeeded",
        PaymentState::Failed => "failed",
    }
}

fn webhook_event(payment: &Payment) -> WebhookEvent {
    let status = match payment.state {
        PaymentState::Succeeded => "Success",
        PaymentState::Pending | PaymentState::Failed => "Failed",
    };
    let body = serde_json::json!({
        "orderId": payment.order_id,
        "status": status,
        "paymentId": payment.id,
        "amount": payment.amount,
        "currency": payment.currency.code(),
    });
    WebhookEvent {
        id: format!("msg_{}", Uuid::new_v4().simple()),
        payment_id: payment.id.clone(),
        callback_url: payment.callback_url.clone(),
        payload: body.to_string(),
    }
}

/// The waits between delivery attempts: `initial`, doubling, never above `max`.
fn retry_waits(initial: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(initial.min(max)), move |wait| {
        Some(wait.saturating_mul(2).min(max))
    })
}

enum Attempt {
    Delivered,
    Rejected(reqwest::StatusCode),
    Unreachable(reqwest::Error),
}

/// Posts the event until the receiver answers 2xx, as API.md promises: there is no attempt
/// limit, only the capped backoff, and the task ends with the process. Each attempt is
/// signed afresh with the clock's current time.
async fn deliver(inner: Arc<Inner>, event: WebhookEvent) {
    let settings = &inner.settings;
    let mut waits = retry_waits(settings.retry_initial, settings.retry_max);
    for attempt in 1_u64.. {
        let outcome = match attempt_delivery(&inner, &event).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(webhook_id = %event.id, error = %e, "cannot sign the sandbox webhook; dropping it");
                return;
            }
        };
        let (label, problem) = match outcome {
            Attempt::Delivered => {
                metrics::counter!("kassa_sandbox_webhook_attempts_total", "outcome" => "delivered")
                    .increment(1);
                tracing::debug!(webhook_id = %event.id, attempt, "sandbox webhook delivered");
                if inner.journal.is_some() {
                    let mut ledger = inner.ledger.lock().unwrap_or_else(|e| e.into_inner());
                    ledger.undelivered.remove(&event.payment_id);
                    if let Some(payment) = ledger.payments.get(&event.payment_id) {
                        inner.record(payment, None);
                    }
                }
                return;
            }
            Attempt::Rejected(status) => ("rejected", format!("the receiver answered {status}")),
            Attempt::Unreachable(e) => ("unreachable", describe(&e)),
        };
        metrics::counter!("kassa_sandbox_webhook_attempts_total", "outcome" => label).increment(1);
        tracing::warn!(
            webhook_id = %event.id,
            payment_id = %event.payment_id,
            callback_url = %event.callback_url,
            attempt,
            error = %problem,
            "sandbox webhook delivery failed"
        );
        let wait = waits.next().unwrap_or(settings.retry_max);
        tokio::time::sleep(wait).await;
    }
}

async fn attempt_delivery(
    inner: &Inner,
    event: &WebhookEvent,
) -> Result<Attempt, standardwebhooks::WebhookError> {
    let timestamp = inner.clock.now().unix_timestamp();
    let signature = inner
        .signer
        .sign(&event.id, timestamp, event.payload.as_bytes())?;
    let sent = inner
        .client
        .post(&event.callback_url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER_WEBHOOK_ID, &event.id)
        .header(HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string())
        .header(HEADER_WEBHOOK_SIGNATURE, signature)
        .body(event.payload.clone())
        .send()
        .await;
    Ok(match sent {
        Ok(response) if response.status().is_success() => Attempt::Delivered,
        Ok(response) => Attempt::Rejected(response.status()),
        Err(e) => Attempt::Unreachable(e),
    })
}

// ---- HTTP protocol ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatePaymentBody {
    order_id: OrderId,
    amount: i64,
    currency: Currency,
    callback_url: String,
    return_url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionBody {
    payment_id: String,
    payment_url: String,
    token: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RefundBody {
    refund_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    payment_id: String,
    order_id: OrderId,
    status: &'static str,
    amount: i64,
    currency: &'static str,
}

impl From<&Payment> for PaymentBody {
    fn from(payment: &Payment) -> Self {
        Self {
            payment_id: payment.id.clone(),
            order_id: payment.order_id,
            status: state_name(payment.state),
            amount: payment.amount,
            currency: payment.currency.code(),
        }
    }
}

#[derive(Deserialize)]
struct DecisionBody {
    outcome: Outcome,
}

/// Mounts the gateway protocol and the hosted payment page relative to the current scope.
pub fn configure(cfg: &mut web::ServiceConfig, gateway: SandboxGateway) {
    cfg.app_data(web::Data::new(gateway))
        .app_data(
            web::JsonConfig::default()
                .limit(MAX_BODY_BYTES)
                .content_type_required(true)
                .content_type(is_json_mime)
                .error_handler(|err, _| json_error(err).into()),
        )
        .app_data(
            web::FormConfig::default()
                .limit(MAX_BODY_BYTES)
                .error_handler(|err, _| form_error(err).into()),
        )
        .service(
            web::resource("/payments")
                .route(web::post().to(create_payment))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/payments/{paymentId}")
                .route(web::get().to(get_payment))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/payments/{paymentId}/refunds")
                .route(web::post().to(refund_payment))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/pay/{paymentId}")
                .route(web::get().to(payment_page))
                .route(
                    web::post()
                        .guard(guard::fn_guard(has_json_body))
                        .to(decide_by_json),
                )
                .route(web::post().to(decide_by_form))
                .default_service(method_not_allowed("GET, POST")),
        );
}

fn is_json_mime(mime: mime::Mime) -> bool {
    mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON)
}

fn has_json_body(ctx: &GuardContext<'_>) -> bool {
    ctx.header::<header::ContentType>()
        .is_some_and(|content_type| is_json_mime(content_type.0))
}

fn form_error(err: UrlencodedError) -> AppError {
    match err {
        UrlencodedError::Overflow { .. } => AppError::PayloadTooLarge,
        UrlencodedError::ContentType => AppError::UnsupportedMediaType,
        other => AppError::invalid("outcome", format!("expected success or failure: {other}")),
    }
}

async fn create_payment(
    gateway: web::Data<SandboxGateway>,
    request: HttpRequest,
    body: web::Json<CreatePaymentBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.into_inner();
    let key = request
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| OrderId::parse(v).ok());
    if key != Some(body.order_id) {
        return Err(AppError::invalid(
            "Idempotency-Key",
            "the header is required and must equal the body's orderId",
        ));
    }
    let bad_urls: Vec<_> = [
        ("callbackUrl", &body.callback_url),
        ("returnUrl", &body.return_url),
    ]
    .into_iter()
    .filter(|(_, url)| !is_http_url(url))
    .map(|(field, _)| crate::error::FieldError {
        field: field.into(),
        message: "must be an absolute http(s) URL".into(),
    })
    .collect();
    if !bad_urls.is_empty() {
        return Err(AppError::Validation(bad_urls));
    }
    let payment = gateway
        .open(PaymentRequest {
            order_id: body.order_id,
            amount: body.amount,
            currency: body.currency,
            callback_url: body.callback_url,
            return_url: body.return_url,
            display: Default::default(),
        })
        .await?;
    Ok(HttpResponse::Created().json(SessionBody {
        payment_id: payment.id,
        payment_url: payment.url,
        token: payment.token,
    }))
}

fn is_http_url(raw: &str) -> bool {
    Url::parse(raw).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

async fn get_payment(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let payment = gateway.payment(&payment_id)?;
    Ok(HttpResponse::Ok().json(PaymentBody::from(&payment)))
}

async fn refund_payment(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let refund_id = gateway.refund_payment(&payment_id).await?;
    Ok(HttpResponse::Created().json(RefundBody { refund_id }))
}

async fn payment_page(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let payment = gateway.payment(&payment_id)?;
    Ok(HttpResponse::Ok()
        .content_type(mime::TEXT_HTML_UTF_8)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'",
        ))
        .body(render_payment_page(&payment)))
}

async fn decide_by_json(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, AppError> {
    let payment = gateway.decide(&payment_id, body.outcome).await?;
    Ok(HttpResponse::Ok().json(PaymentBody::from(&payment)))
}

async fn decide_by_form(
    gateway: web::Data<SandboxGateway>,
    payment_id: web::Path<String>,
    form: web::Form<DecisionBody>,
) -> Result<HttpResponse, AppError> {
    let payment = gateway.decide(&payment_id, form.outcome).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, payment.return_url))
        .finish())
}

fn render_payment_page(payment: &Payment) -> String {
    let amount = escape_html(&format_money(payment.amount, payment.currency));
    let order_id = escape_html(&payment.order_id.to_string());
    let actions = match payment.state {
        PaymentState::Pending => concat!(
            r#"<form method="post"><input type="hidden" name="outcome" value="success">"#,
            r#"<button type="submit">Pay</button></form>"#,
            "\n",
            r#"<form method="post"><input type="hidden" name="outcome" value="failure">"#,
            r#"<button type="submit" class="decline">Decline</button></form>"#,
        )
        .to_string(),
        decided => format!(
            r#"<p>This payment has {}.</p><p><a href="{}">Back to the shop</a></p>"#,
            state_name(decided),
            escape_html(&payment.return_url),
        ),
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox payment: {amount}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 28rem; margin: 4rem auto; padding: 0 1rem; }}
form {{ display: inline-block; margin-right: .5rem; }}
button {{ font-size: 1.1rem; padding: .5rem 1.5rem; }}
.decline {{ background: #eee; }}
</style>
</head>
<body>
<main>
<p>Kassa sandbox gateway: no money moves.</p>
<h1>{amount}</h1>
<p>Order {order_id}</p>
{actions}
</main>
</body>
</html>
"#
    )
}

fn escape_html(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

// ---- standalone ----

/// The sandbox bound on its own listener, routes at the root (`kassa sandbox-gateway`).
pub struct StandaloneSandbox {
    address: SocketAddr,
    server: Server,
    gateway: SandboxGateway,
}

impl StandaloneSandbox {
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// `http://{bound address}`: the base URL for `KASSA_GATEWAY`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops the server (what SIGTERM does).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT or `handle().stop()`, then writes out what its journal
    /// (if it has one) still has queued.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        let gateway = self.gateway;
        tokio::task::spawn_blocking(move || gateway.close_journal()).await?;
        Ok(served?)
    }
}

/// Binds the standalone sandbox (port 0 picks a free port); `paymentUrl`s use the bound
/// address. Its payments are kept in `journal` when given (as the built-in sandbox's are),
/// else in memory only. Serving starts with [`StandaloneSandbox::run_until_stopped`]. Must be
/// called inside a tokio runtime.
pub fn bind_standalone(
    listen: &str,
    webhook_secret: &str,
    clock: SharedClock,
    journal: Option<&Path>,
) -> anyhow::Result<StandaloneSandbox> {
    check_webhook_secret(webhook_secret)?;
    let listener =
        TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    let settings = SandboxSettings::new(webhook_secret, format!("http://{address}"));
    let gateway = match journal {
        Some(path) => SandboxGateway::with_journal(settings, clock, path)?,
        None => SandboxGateway::new(settings, clock),
    };
    let served = gateway.clone();
    let server = HttpServer::new(move || {
        App::new()
            .configure(|cfg| configure(cfg, served.clone()))
            .default_service(web::to(crate::routes::not_found))
    })
    .listen(listener)?
    .run();
    Ok(StandaloneSandbox {
        address,
        server,
        gateway,
    })
}

/// Runs the sandbox alone until SIGTERM/SIGINT, announcing `listening on http://ADDR` on
/// stdout so a parent process started with `--listen 127.0.0.1:0` can find the port.
pub async fn serve_standalone(
    listen: &str,
    webhook_secret: &str,
    journal: Option<&Path>,
) -> anyhow::Result<()> {
    let sandbox = bind_standalone(listen, webhook_secret, Arc::new(SystemClock), journal)?;
    let base_url = sandbox.base_url();
    tracing::info!(address = %base_url, "sandbox gateway listening");
    println!("listening on {base_url}");
    sandbox.run_until_stopped().await
}

fn check_webhook_secret(secret: &str) -> anyhow::Result<()> {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
    match key {
        Some(key) if !key.is_empty() => Ok(()),
        _ => anyhow::bail!("the webhook secret must be `whsec_` followed by base64 key bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kassa_actors::clock::ManualClock;

    /// Opens a payment without waiting for a journal (these gateways have none).
    fn open(gateway: &SandboxGateway, request: PaymentRequest) -> Result<Payment, SandboxError> {
        gateway.open_queued(request).map(|(payment, _)| payment)
    }

    fn gateway() -> SandboxGateway {
        SandboxGateway::new(
            SandboxSettings::new("whsec_c2VjcmV0", "http://sandbox.test/base/"),
            Arc::new(ManualClock::starting_now()),
        )
    }

    fn request(order_id: OrderId, amount: i64) -> PaymentRequest {
        PaymentRequest {
            order_id,
            amount,
            currency: Currency::EUR,
            callback_url: "http://127.0.0.1:9/webhook".into(),
            return_url: "http://shop.test/orders/1".into(),
            display: Default::default(),
        }
    }

    #[test]
    fn everything_interpolated_into_the_page_is_escaped() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_decided_page_links_back_without_injecting_the_return_url() {
        let gateway = gateway();
        let mut req = request(OrderId::new(), 100);
        req.return_url = r#"http://shop.test/"><script>alert(1)</script>"#.into();
        let mut payment = open(&gateway, req).expect("opens");
        payment.state = PaymentState::Failed;
        let page = render_payment_page(&payment);
        assert!(!page.contains("<script>"));
        assert!(page.contains("This payment has failed."));
    }

    #[test]
    fn webhook_retry_waits_double_up_to_the_cap() {
        let waits: Vec<_> = retry_waits(Duration::from_millis(500), Duration::from_secs(3))
            .take(5)
            .collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 3000, 3000].map(Duration::from_millis)
        );
    }

    #[test]
    fn payment_urls_hang_off_the_public_base_url() {
        let payment = open(&gateway(), request(OrderId::new(), 100)).expect("opens");
        assert_eq!(
            payment.url,
            format!("http://sandbox.test/base/pay/{}", payment.id)
        );
        assert!(payment.id.starts_with("pay_"));
    }

    #[test]
    fn one_order_cannot_open_payments_for_two_amounts() {
        let gateway = gateway();
        let order_id = OrderId::new();
        open(&gateway, request(order_id, 100)).expect("opens");
        assert_eq!(
            open(&gateway, request(order_id, 200)).map(|p| p.id),
            Err(SandboxError::OrderReused(order_id))
        );
    }

    #[test]
    fn negative_amounts_are_refused() {
        assert_eq!(
            open(&gateway(), request(OrderId::new(), -1)).map(|p| p.id),
            Err(SandboxError::NegativeAmount)
        );
    }

    #[tokio::test]
    async fn only_succeeded_payments_can_be_refunded() {
        let gateway = gateway();
        let payment = open(&gateway, request(OrderId::new(), 100)).expect("opens");
        assert_eq!(
            gateway.refund_payment(&payment.id).await,
            Err(SandboxError::NotRefundable(PaymentState::Pending))
        );
        assert_eq!(
            gateway.refund_payment("pay_missing").await,
            Err(SandboxError::UnknownPayment("pay_missing".into()))
        );
    }

    #[test]
    fn standalone_refuses_a_secret_that_is_not_whsec_base64() {
        assert!(check_webhook_secret("whsec_c2VjcmV0").is_ok());
        assert!(check_webhook_secret("c2VjcmV0").is_err());
        assert!(check_webhook_secret("whsec_not base64!").is_err());
        assert!(check_webhook_secret("whsec_").is_err());
    }
}
