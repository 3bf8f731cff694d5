//! The built-in sandbox payment gateway, where no money ever moves: the handle, its settings
//! and its `Gateway` impl. Payments and their rules live in `ledger` (kept across restarts by
//! `journal`), signed webhooks in `delivery`, HTTP in `routes` (the only part that knows the
//! HTTP error type), the page in `page`, `kassa sandbox-gateway` in `standalone`. It never
//! decides an order's state: it tells Kassa by webhook, and Kassa decides.

use anyhow::Context as _;
use async_trait::async_trait;
use kassa_actors::clock::SharedClock;
use kassa_actors::gateway::{
    CancelOutcome, Gateway, GatewayError, PaymentRequest, PaymentSession, PaymentState,
    PaymentStatus,
};
use serde::{Deserialize, Serialize};
use standardwebhooks::Webhook;
use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

mod delivery;
mod journal;
mod ledger;
mod page;
mod routes;
mod standalone;

use delivery::{WebhookEvent, deliver};
use ledger::{Ledger, Payment, SandboxError};

pub use routes::configure;
pub use standalone::{StandaloneSandbox, bind_standalone, serve_standalone};

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
    page: page::PaymentPage,
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

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SandboxGateway {
    /// # Panics
    /// If `settings.webhook_secret` is not base64 (`Config` and [`bind_standalone`] check it
    /// first), no TLS back end can be initialised or the compiled-in payment page template
    /// does not parse (its tests parse it); all only at start-up.
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
        // The webhook's callback gets the gateway clients' timeouts.
        let client = super::client::builder()
            .build()
            .expect("the HTTP client for webhook delivery builds");
        let page = page::PaymentPage::new()
            .expect("the payment page template (compiled in) parses; page.rs's tests render it");
        Self {
            inner: Arc::new(Inner {
                settings,
                clock,
                signer,
                client,
                ledger: Mutex::new(ledger),
                journal,
                page,
            }),
        }
    }

    /// Writes out what the journal has queued and stops it (shutdown).
    pub fn close_journal(&self) {
        if let Some(journal) = &self.inner.journal {
            journal.close();
        }
    }
}

#[async_trait]
impl Gateway for SandboxGateway {
    async fn cancel(&self, payment_id: &str) -> Result<CancelOutcome, GatewayError> {
        match self.cancel_payment(payment_id).await {
            Ok(_) => Ok(CancelOutcome::Cancelled),
            Err(SandboxError::AlreadyDecided(PaymentState::Succeeded)) => {
                Ok(CancelOutcome::AlreadySucceeded)
            }
            Err(other) => Err(other.into()),
        }
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

/// An absolute http(s) URL: the only kind the sandbox calls or links to.
fn is_http_url(raw: &str) -> bool {
    reqwest::Url::parse(raw)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// What the modules' unit tests share: a sandbox with no journal and a payment request.
#[cfg(test)]
mod test_support {
    use super::*;
    use kassa_actors::clock::ManualClock;
    use kassa_actors::domain::{Currency, OrderId};

    pub(super) fn gateway() -> SandboxGateway {
        SandboxGateway::new(
            SandboxSettings::new("whsec_c2VjcmV0", "http://sandbox.test/base/"),
            Arc::new(ManualClock::starting_now()),
        )
    }

    pub(super) fn request(order_id: OrderId, amount: i64) -> PaymentRequest {
        PaymentRequest {
            order_id,
            amount,
            currency: Currency::EUR,
            callback_url: "http://127.0.0.1:9/webhook".into(),
            return_url: "http://shop.test/orders/1".into(),
            display: Default::default(),
        }
    }

    /// Opens a payment without waiting for a journal (these gateways have none).
    pub(super) fn open(
        gateway: &SandboxGateway,
        request: PaymentRequest,
    ) -> Result<Payment, ledger::SandboxError> {
        gateway.open_queued(request).map(|(payment, _)| payment)
    }
}
