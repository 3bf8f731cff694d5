//! MailerActor: drains the durable outbox (the store's `OutboxEmail`s). It sends, then marks
//! sent, so a crash in between means a resend with the same Message-ID, never a loss; a
//! failure is retried with exponential backoff and jitter, forever, and counted. It sees only
//! the `Store` and the `MailTransport` trait: it never renders a message or speaks SMTP.

use crate::clock::SharedClock;
use crate::domain::OrderId;
use crate::store::{EmailKind, OrderRecord, OutboxEmail, SharedStore, WriteOutcome};
use actix::prelude::*;
use async_trait::async_trait;
use dashmap::DashMap;
use rand::RngExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use time::{Duration, OffsetDateTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinSet;

/// How long a mailer holds an email it claimed; longer than any send can take, so another
/// replica resends only if this one died mid-send.
const CLAIM_LEASE: time::Duration = time::Duration::minutes(2);

/// Why a message was not accepted. Both kinds are retried; they are counted apart because a
/// permanent one (a 5xx, an unusable address) needs a person to look.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying as it is: connection refused, timeout, a 4xx answer.
    #[error("{0}")]
    Transient(String),
    /// Refused as it is: a 5xx answer, a message that cannot be built.
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    /// The `kind` label of `kassa_email_send_failures_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transient(_) => "transient",
            Self::Permanent(_) => "permanent",
        }
    }
}

/// Renders an outbox email from its order and hands it to the mail system.
#[async_trait]
pub trait MailTransport: Send + Sync + 'static {
    /// `Ok` once the mail system accepted the message for delivery.
    async fn send(&self, email: &OutboxEmail, order: &OrderRecord) -> Result<(), SendError>;
}

pub type SharedTransport = Arc<dyn MailTransport>;

#[derive(Debug, Clone)]
pub struct MailerSettings {
    /// How often the outbox is read when nothing nudges the mailer.
    pub poll_every: std::time::Duration,
    /// At most this many due emails per read of the outbox.
    pub batch_size: usize,
    /// At most this many sends at once.
    pub concurrency: usize,
    /// The first retry waits up to this long; each later one up to twice the one before...
    pub retry_initial: Duration,
    /// ...but never more than this.
    pub retry_max: Duration,
    /// The outbox gauges (depth, oldest unsent) are refreshed at most this often: each
    /// refresh reads the whole unsent outbox.
    pub gauges_every: std::time::Duration,
}

impl Default for MailerSettings {
    fn default() -> Self {
        Self {
            poll_every: std::time::Duration::from_secs(1),
            batch_size: 100,
            concurrency: 4,
            retry_initial: Duration::seconds(1),
            retry_max: Duration::minutes(10),
            gauges_every: std::time::Duration::from_secs(10),
        }
    }
}

/// Everything the mailer talks to.
pub struct MailerServices {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub transport: SharedTransport,
    pub settings: MailerSettings,
}

/// How long to wait before the next attempt after `attempts` failed ones: exponential
/// backoff with "equal jitter". The ceiling is `initial * 2^(attempts-1)`, capped at `max`,
/// and the wait is drawn uniformly from its upper half: 0.5-1 s after the first failure with
/// the defaults, 5-10 min once capped. The jitter spreads a burst of failures (SMTP down
/// while many orders were paid) so they do not all retry in the same instant.
pub fn retry_delay(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(40) as i32;
    let ceiling = (initial.as_seconds_f64() * 2f64.powi(doublings))
        .min(max.as_seconds_f64())
        .max(0.0);
    let half = ceiling / 2.0;
    Duration::seconds_f64(half + rand::rng().random_range(0.0..=half))
}

/// Look at the outbox now (an email was queued, or a test moved the clock).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Nudge;

/// Stop taking new work, wait for the sends in flight to be recorded, then let go of the
/// store and the transport (shutdown).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Flush;

/// An email this replica queued already claimed, with its order, to be sent right away
/// (instead of waiting for the next read of the outbox and claiming it there).
#[derive(Message)]
#[rtype(result = "()")]
struct HandOver {
    email: OutboxEmail,
    order: OrderRecord,
    _slot: OwnedSemaphorePermit,
}

/// How an order hands its freshly queued email to this replica's mailer. The outbox entry is
/// written claimed by this replica (`claim_until`), so no other mailer sends it while this
/// one does; if this process dies first, the claim lapses and any replica's next read of
/// the outbox sends it. At most `HANDOFF_SLOTS` emails are handed over at once: beyond that
/// (the mail system is slow) an order queues its email unclaimed, for the outbox reads.
#[derive(Clone)]
pub struct Handoff {
    addr: Addr<MailerActor>,
    slots: Arc<Semaphore>,
    clock: SharedClock,
}

/// Handed-over emails being sent at most at once.
const HANDOFF_SLOTS: usize = 256;

/// Room to hand one email over, held until its outcome is recorded.
pub struct HandoffSlot(OwnedSemaphorePermit);

impl Handoff {
    /// Room to hand one email over, if the mailer has any.
    pub fn slot(&self) -> Option<HandoffSlot> {
        self.slots.clone().try_acquire_owned().ok().map(HandoffSlot)
    }

    /// Until when an email queued now for a hand-over is claimed.
    pub fn claim_until(&self) -> OffsetDateTime {
        self.clock.now() + CLAIM_LEASE
    }

    /// Sends `email` (queued claimed by this replica) now.
    pub fn give(&self, email: OutboxEmail, order: OrderRecord, slot: HandoffSlot) {
        self.addr.do_send(HandOver {
            email,
            order,
            _slot: slot.0,
        });
    }
}

/// What the sends share: the services, and the emails that were sent but could not be
/// recorded as sent (the store failed), so the next round records them instead of sending
/// them again.
struct Shared {
    services: MailerServices,
    unrecorded: DashMap<(OrderId, EmailKind), OffsetDateTime>,
}

pub struct MailerActor {
    /// `None` once flushed: the actor holds no store or transport any more.
    shared: Option<Arc<Shared>>,
    closing: Arc<AtomicBool>,
    draining: bool,
    /// Handed-over emails being sent.
    handed: usize,
    /// A nudge arrived while draining: drain again right after.
    again: bool,
    flushed: Vec<oneshot::Sender<()>>,
    /// When the outbox gauges were last refreshed.
    gauges_at: Option<std::time::Instant>,
}

impl MailerActor {
    pub fn new(services: MailerServices) -> Self {
        Self {
            shared: Some(Arc::new(Shared {
                services,
                unrecorded: DashMap::new(),
            })),
            closing: Arc::new(AtomicBool::new(false)),
            draining: false,
            handed: 0,
            again: false,
            flushed: Vec::new(),
            gauges_at: None,
        }
    }

    /// Sends what is due unless a round is already running (then, if `nudged`, one more
    /// round follows it).
    fn drain(&mut self, ctx: &mut Context<Self>, nudged: bool) {
        if self.closing.load(Ordering::Relaxed) {
            return;
        }
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if self.draining {
            self.again |= nudged;
            return;
        }
        self.draining = true;
        self.again = false;
        let every = shared.services.settings.gauges_every;
        let measure = self.gauges_at.is_none_or(|at| at.elapsed() >= every);
        if measure {
            self.gauges_at = Some(std::time::Instant::now());
        }
        let closing = self.closing.clone();
        ctx.spawn(
            drain_outbox(shared, closing, measure)
                .into_actor(self)
                .map(|more, act, ctx| {
                    act.draining = false;
                    if act.closing.load(Ordering::Relaxed) {
                        act.release_if_idle();
                    } else if more || act.again {
                        act.drain(ctx, false);
                    }
                }),
        );
    }

    /// Releases the store and transport once nothing is being sent (closing).
    fn release_if_idle(&mut self) {
        if !self.draining && self.handed == 0 {
            self.release();
        }
    }

    fn release(&mut self) {
        self.shared = None;
        for waiter in self.flushed.drain(..) {
            let _ = waiter.send(());
        }
    }
}

impl Actor for MailerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(shared) = &self.shared {
            let every = shared.services.settings.poll_every;
            ctx.run_interval(every, |act, ctx| act.drain(ctx, false));
        }
        // Whatever was left unsent before this start (a crash, a restart) goes out now.
        self.drain(ctx, true);
    }
}

impl Handler<Nudge> for MailerActor {
    type Result = ();

    fn handle(&mut self, _: Nudge, ctx: &mut Context<Self>) {
        self.drain(ctx, true);
    }
}

impl Handler<HandOver> for MailerActor {
    type Result = ();

    fn handle(&mut self, msg: HandOver, ctx: &mut Context<Self>) {
        // Closing: the email stays claimed until its lease ends, then the next start (or
        // another replica) sends it.
        let Some(shared) = self
            .shared
            .clone()
            .filter(|_| !self.closing.load(Ordering::Relaxed))
        else {
            return;
        };
        self.handed += 1;
        ctx.spawn(
            async move {
                let HandOver {
                    email,
                    order,
                    _slot,
                } = msg;
                let outcome = send(&shared.services, &email, &order).await;
                record_outcome(&shared, email, outcome).await;
            }
            .into_actor(self)
            .map(|(), act, _| {
                act.handed -= 1;
                if act.closing.load(Ordering::Relaxed) {
                    act.release_if_idle();
                }
            }),
        );
    }
}

impl Handler<Flush> for MailerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        self.closing.store(true, Ordering::Relaxed);
        if !self.draining && self.handed == 0 {
            self.release();
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.flushed.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// The running mailer: its actor on an arbiter of its own, so that shutdown can wait until
/// the actor and everything it holds (the store among them) are gone.
pub struct Mailer {
    addr: Addr<MailerActor>,
    arbiter: std::sync::Mutex<Option<Arbiter>>,
}

impl Mailer {
    /// Starts the mailer; it sends what is already due at once (mail left unsent before a
    /// restart), then whenever nudged and every `poll_every`. Must be called inside an actix
    /// `System`.
    pub fn start(services: MailerServices) -> Self {
        let arbiter = Arbiter::new();
        let addr =
            MailerActor::start_in_arbiter(&arbiter.handle(), move |_| MailerActor::new(services));
        Self {
            addr,
            arbiter: std::sync::Mutex::new(Some(arbiter)),
        }
    }

    /// What orders use to hand their freshly queued emails straight to this mailer.
    pub fn handoff(&self, clock: SharedClock) -> Handoff {
        Handoff {
            addr: self.addr.clone(),
            slots: Arc::new(Semaphore::new(HANDOFF_SLOTS)),
            clock,
        }
    }

    /// Looks at the outbox now instead of at the next poll.
    pub fn nudge(&self) {
        self.addr.do_send(Nudge);
    }

    /// Stops taking new work and waits, at most `within`, until the sends in flight are
    /// recorded. True if they were; unsent mail stays in the outbox for the next start.
    pub async fn flush(&self, within: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.addr.send(Flush)).await,
            Ok(Ok(()))
        )
    }

    /// Stops the mailer's arbiter and waits for its thread to end. Blocking: call it from a
    /// blocking context at shutdown, after `flush`.
    pub fn shutdown(&self) {
        let arbiter = self
            .arbiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(arbiter) = arbiter {
            arbiter.stop();
            if arbiter.join().is_err() {
                tracing::error!("the mailer's arbiter panicked");
            }
        }
    }
}

/// One round: every email due now, at most `concurrency` at a time, then the gauges if
/// `measure`. Answers whether another round should follow at once (the batch was full and
/// the store kept up).
async fn drain_outbox(shared: Arc<Shared>, closing: Arc<AtomicBool>, measure: bool) -> bool {
    let settings = &shared.services.settings;
    let now = shared.services.clock.now();
    let due = match shared
        .services
        .store
        .due_emails(now, settings.batch_size)
        .await
    {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox; will try again");
            return false;
        }
    };
    let full = due.len() >= settings.batch_size;
    let mut recorded_all = true;
    let mut in_flight = JoinSet::new();
    for email in due {
        if closing.load(Ordering::Relaxed) {
            break;
        }
        while in_flight.len() >= settings.concurrency.max(1) {
            recorded_all &= joined(in_flight.join_next().await);
        }
        in_flight.spawn(deliver(shared.clone(), email));
    }
    while let Some(result) = in_flight.join_next().await {
        recorded_all &= joined(Some(result));
    }
    if measure {
        record_gauges(&shared).await;
    }
    full && recorded_all
}

fn joined(result: Option<Result<bool, tokio::task::JoinError>>) -> bool {
    match result {
        Some(Ok(recorded)) => recorded,
        Some(Err(e)) => {
            tracing::error!(error = %e, "an email send task failed");
            false
        }
        None => true,
    }
}

/// Sends one email found due in the outbox and records the outcome. Answers whether the
/// outcome reached the store.
async fn deliver(shared: Arc<Shared>, mut email: OutboxEmail) -> bool {
    let services = &shared.services;
    let (order_id, kind) = (email.order_id, email.kind.as_str());
    if let Some(sent_at) = shared.unrecorded.get(&(order_id, email.kind)).map(|at| *at) {
        email.sent_at = Some(sent_at);
        return record_sent(&shared, &email).await;
    }
    // Claim it first: until the lease ends no other replica's mailer sees it due.
    let claimed = OutboxEmail {
        next_attempt_at: services.clock.now() + CLAIM_LEASE,
        claimed_by: services.store.replica().map(str::to_owned),
        ..email.clone()
    };
    match services.store.replace_email(&email, &claimed).await {
        Ok(WriteOutcome::Applied) => email = claimed,
        Ok(WriteOutcome::Conflict) => {
            metrics::counter!("kassa_email_claims_lost_total").increment(1);
            tracing::debug!(%order_id, email = kind, "another mailer claimed this email");
            return true;
        }
        Err(e) => {
            tracing::warn!(%order_id, email = kind, error = %e, "cannot claim the email; will try again");
            return false;
        }
    }
    let outcome = match services.store.load_order(order_id).await {
        Ok(Some(order)) => send(services, &email, &order).await,
        Ok(None) => Err(SendError::Permanent(
            "the email's order is not in the store".into(),
        )),
        Err(e) => {
            tracing::warn!(%order_id, email = kind, error = %e, "cannot load the order; will try again");
            return false;
        }
    };
    record_outcome(&shared, email, outcome).await
}

async fn send(
    services: &MailerServices,
    email: &OutboxEmail,
    order: &OrderRecord,
) -> Result<(), SendError> {
    let started = std::time::Instant::now();
    let outcome = services.transport.send(email, order).await;
    metrics::histogram!("kassa_smtp_send_seconds").record(started.elapsed().as_secs_f64());
    outcome
}

/// Records a send's outcome: sent, or the next attempt after a backoff. Answers whether it
/// reached the store.
async fn record_outcome(
    shared: &Shared,
    mut email: OutboxEmail,
    outcome: Result<(), SendError>,
) -> bool {
    let services = &shared.services;
    let (order_id, kind) = (email.order_id, email.kind.as_str());
    let now = services.clock.now();
    email.attempts = email.attempts.saturating_add(1);
    match outcome {
        Ok(()) => {
            email.sent_at = Some(now);
            metrics::counter!("kassa_emails_sent_total", "email" => kind).increment(1);
            tracing::info!(%order_id, email = kind, attempts = email.attempts, "email sent");
            record_sent(shared, &email).await
        }
        Err(e) => {
            let settings = &services.settings;
            let wait = retry_delay(email.attempts, settings.retry_initial, settings.retry_max);
            email.next_attempt_at = now + wait;
            email.last_error = Some(e.to_string());
            metrics::counter!(
                "kassa_email_send_failures_total",
                "kind" => e.kind(),
                "email" => kind
            )
            .increment(1);
            tracing::warn!(
                %order_id,
                email = kind,
                attempts = email.attempts,
                retry_in_seconds = wait.as_seconds_f64(),
                failure = e.kind(),
                error = %e,
                "email not sent; will retry"
            );
            match services.store.update_email(&email).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(%order_id, email = kind, error = %e, "cannot record the failed attempt");
                    false
                }
            }
        }
    }
}

/// Marks `email` sent; if the store fails, remembers it so that it is not sent again.
async fn record_sent(shared: &Shared, email: &OutboxEmail) -> bool {
    let key = (email.order_id, email.kind);
    match shared.services.store.update_email(email).await {
        Ok(()) => {
            shared.unrecorded.remove(&key);
            true
        }
        Err(e) => {
            if let Some(sent_at) = email.sent_at {
                shared.unrecorded.insert(key, sent_at);
            }
            tracing::warn!(
                order_id = %email.order_id,
                email = email.kind.as_str(),
                error = %e,
                "email sent but not yet recorded as sent; will record it"
            );
            false
        }
    }
}

/// `kassa_outbox_depth` and `kassa_outbox_oldest_unsent_seconds`.
async fn record_gauges(shared: &Shared) {
    let store = &shared.services.store;
    let depth = match store.outbox_depth().await {
        Ok(depth) => depth,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox depth");
            return;
        }
    };
    metrics::gauge!("kassa_outbox_depth").set(depth as f64);
    let mut oldest_age = 0.0;
    if depth > 0 {
        // Every unsent email is due by the end of time; the oldest comes first.
        let now = shared.services.clock.now();
        match store.due_emails(now + Duration::days(365 * 1000), 1).await {
            Ok(oldest) => {
                oldest_age = oldest
                    .first()
                    .map_or(0.0, |e| (now - e.created_at).as_seconds_f64().max(0.0));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the oldest unsent email");
                return;
            }
        }
    }
    metrics::gauge!("kassa_outbox_oldest_unsent_seconds").set(oldest_age);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::{CartId, Currency, Sku, UserId};
    use crate::order::OrderStatus;
    use crate::store::{MemoryStore, OrderLine, ShippingDetails, Store, WriteOutcome};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    /// A transport that records what it sent and fails while told to.
    #[derive(Default)]
    struct FakeTransport {
        sent: Mutex<Vec<(OrderId, EmailKind)>>,
        failing: Mutex<Option<SendError>>,
        delay: Option<std::time::Duration>,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    impl FakeTransport {
        fn fail_with(&self, error: Option<SendError>) {
            *self.failing.lock().expect("lock") = error;
        }

        fn sent(&self) -> Vec<(OrderId, EmailKind)> {
            self.sent.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl MailTransport for FakeTransport {
        async fn send(&self, email: &OutboxEmail, order: &OrderRecord) -> Result<(), SendError> {
            assert_eq!(
                email.order_id, order.id,
                "the email is rendered from its order"
            );
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some(error) = self.failing.lock().expect("lock").clone() {
                return Err(error);
            }
            self.sent
                .lock()
                .expect("lock")
                .push((email.order_id, email.kind));
            Ok(())
        }
    }

    fn order(now: OffsetDateTime) -> OrderRecord {
        OrderRecord {
            id: OrderId::new(),
            owner: UserId("alice".into()),
            cart_id: CartId::new(),
            lines: vec![OrderLine {
                sku: Sku::parse("tee").expect("sku"),
                name: "Tee".into(),
                quantity: 1,
                unit_price: 1999,
            }],
            total: 1999,
            currency: Currency::EUR,
            shipping: ShippingDetails {
                name: "Alice".into(),
                line1: "1 Main St".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
                email: None,
            },
            email: "alice@example.com".into(),
            status: OrderStatus::Processing,
            payment: None,
            settled_payment_id: None,
            created_at: now,
            updated_at: now,
            expires_at: now,
            history: Vec::new(),
            pending_effects: Vec::new(),
            seen_webhooks: Vec::new(),
            version: 1,
        }
    }

    /// Stores a paid order with its confirmation queued; answers the order id.
    async fn paid_order(store: &MemoryStore, clock: &ManualClock) -> OrderId {
        use crate::clock::Clock;
        let now = clock.now();
        let order = order(now);
        assert_eq!(
            store.write_order(&order, 0).await.expect("write"),
            WriteOutcome::Applied
        );
        store
            .enqueue_email(&OutboxEmail::new(&order, EmailKind::Confirmation, now))
            .await
            .expect("enqueue");
        order.id
    }

    struct Fixture {
        store: Arc<MemoryStore>,
        clock: ManualClock,
        transport: Arc<FakeTransport>,
    }

    impl Fixture {
        fn new(transport: FakeTransport) -> Self {
            Self {
                store: Arc::new(MemoryStore::new()),
                clock: ManualClock::starting_now(),
                transport: Arc::new(transport),
            }
        }

        fn start(&self, settings: MailerSettings) -> Mailer {
            Mailer::start(MailerServices {
                store: self.store.clone(),
                clock: Arc::new(self.clock.clone()),
                transport: self.transport.clone(),
                settings,
            })
        }

        /// The email while it is unsent (`due_emails` lists only unsent ones).
        async fn email(&self, id: OrderId) -> OutboxEmail {
            use crate::clock::Clock;
            let far = self.clock.now() + Duration::days(3650);
            self.store
                .due_emails(far, usize::MAX)
                .await
                .expect("outbox")
                .into_iter()
                .find(|e| e.order_id == id)
                .expect("the email is in the outbox, unsent")
        }

        /// Polls `check` every 10 ms for up to 5 s.
        async fn eventually(&self, what: &str, check: impl Fn(&Self) -> bool) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !check(self) {
                assert!(std::time::Instant::now() < deadline, "timed out: {what}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }

    fn quick() -> MailerSettings {
        MailerSettings {
            poll_every: std::time::Duration::from_millis(20),
            ..MailerSettings::default()
        }
    }

    /// Queues `order`'s confirmation claimed for a hand-over, as an order does; answers the
    /// email as queued.
    async fn queue_claimed(fx: &Fixture, handoff: &Handoff, order: &OrderRecord) -> OutboxEmail {
        use crate::clock::Clock;
        assert_eq!(
            fx.store.write_order(order, 0).await.expect("write"),
            WriteOutcome::Applied
        );
        let email = OutboxEmail::new(order, EmailKind::Confirmation, fx.clock.now());
        let until = handoff.claim_until();
        assert!(
            fx.store
                .enqueue_claimed_email(&email, until)
                .await
                .expect("enqueue")
        );
        OutboxEmail {
            next_attempt_at: until,
            ..email
        }
    }

    #[actix_rt::test]
    async fn a_handed_over_email_is_sent_at_once_without_reading_the_outbox() {
        use crate::clock::Clock;
        let fx = Fixture::new(FakeTransport::default());
        // The outbox is read only at start-up: what is sent later was handed over.
        let mailer = fx.start(MailerSettings {
            poll_every: std::time::Duration::from_secs(3600),
            ..MailerSettings::default()
        });
        let handoff = mailer.handoff(Arc::new(fx.clock.clone()));
        let order = order(fx.clock.now());
        let email = queue_claimed(&fx, &handoff, &order).await;
        // Claimed: no mailer reading the outbox would take it before the lease ends.
        assert!(
            fx.store
                .due_emails(fx.clock.now() + Duration::seconds(60), 10)
                .await
                .expect("outbox")
                .is_empty()
        );
        // A second queueing of the same email (an effect run again) is refused.
        assert!(
            !fx.store
                .enqueue_claimed_email(&email, handoff.claim_until())
                .await
                .expect("enqueue")
        );
        let slot = handoff.slot().expect("a free slot");
        handoff.give(email, order.clone(), slot);
        fx.eventually("the handed-over email is sent", |fx| {
            fx.transport.sent() == vec![(order.id, EmailKind::Confirmation)]
        })
        .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while fx.store.outbox_depth().await.expect("depth") > 0 {
            assert!(std::time::Instant::now() < deadline, "never marked sent");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(mailer.flush(std::time::Duration::from_secs(5)).await);
    }

    #[actix_rt::test]
    async fn a_claimed_email_whose_mailer_is_gone_is_sent_once_its_lease_ends() {
        use crate::clock::Clock;
        let fx = Fixture::new(FakeTransport::default());
        let mailer = fx.start(quick());
        let handoff = mailer.handoff(Arc::new(fx.clock.clone()));
        let order = order(fx.clock.now());
        // Queued claimed, never handed over (the process died in between).
        queue_claimed(&fx, &handoff, &order).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(fx.transport.sent().is_empty(), "sent while still claimed");
        fx.clock.advance(CLAIM_LEASE + Duration::seconds(1));
        fx.eventually("the email is sent after the lease", |fx| {
            fx.transport.sent() == vec![(order.id, EmailKind::Confirmation)]
        })
        .await;
        assert!(mailer.flush(std::time::Duration::from_secs(5)).await);
    }

    #[actix_rt::test]
    async fn a_queued_email_is_sent_once_and_marked_sent() {
        let fx = Fixture::new(FakeTransport::default());
        let id = paid_order(&fx.store, &fx.clock).await;
        let mailer = fx.start(quick());
        fx.eventually("the email is sent", |fx| !fx.transport.sent().is_empty())
            .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while fx.store.outbox_depth().await.expect("depth") > 0 {
            assert!(std::time::Instant::now() < deadline, "never marked sent");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Several more polls: nothing is sent twice.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(fx.transport.sent(), vec![(id, EmailKind::Confirmation)]);
        assert!(mailer.flush(std::time::Duration::from_secs(5)).await);
        mailer.shutdown();
    }

    #[actix_rt::test]
    async fn two_replicas_mailers_over_one_outbox_send_each_email_once() {
        let fx = Fixture::new(FakeTransport::default());
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(paid_order(&fx.store, &fx.clock).await);
        }
        let (a, b) = (fx.start(quick()), fx.start(quick()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fx.store.outbox_depth().await.expect("depth") > 0 {
            assert!(std::time::Instant::now() < deadline, "never all sent");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut sent = fx.transport.sent();
        sent.sort();
        let mut want: Vec<_> = ids
            .iter()
            .map(|id| (*id, EmailKind::Confirmation))
            .collect();
        want.sort();
        assert_eq!(sent, want, "every email exactly once across both mailers");
        assert!(a.flush(std::time::Duration::from_secs(5)).await);
        assert!(b.flush(std::time::Duration::from_secs(5)).await);
        a.shutdown();
        b.shutdown();
    }

    #[actix_rt::test]
    async fn a_failed_send_backs_off_keeping_the_attempt_count_and_the_error() {
        let transport = FakeTransport::default();
        transport.fail_with(Some(SendError::Transient("connection refused".into())));
        let fx = Fixture::new(transport);
        let id = paid_order(&fx.store, &fx.clock).await;
        let mailer = fx.start(quick());

        let mut attempts_seen = 0;
        for attempt in 1..=4u32 {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let email = loop {
                let email = fx.email(id).await;
                if email.attempts == attempt {
                    break email;
                }
                assert!(std::time::Instant::now() < deadline, "attempt {attempt}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            };
            attempts_seen = email.attempts;
            assert_eq!(email.last_error.as_deref(), Some("connection refused"));
            assert!(email.sent_at.is_none());
            // Not retried before the backoff has passed, however often it polls.
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
            assert_eq!(fx.email(id).await.attempts, attempt);
            let wait = email.next_attempt_at - {
                use crate::clock::Clock;
                fx.clock.now()
            };
            let ceiling = Duration::seconds(1 << (attempt - 1));
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "attempt {attempt}: waits {wait}, expected half to all of {ceiling}"
            );
            fx.clock.advance(wait);
        }
        assert_eq!(attempts_seen, 4);

        fx.transport.fail_with(None);
        fx.clock.advance(Duration::minutes(10));
        mailer.nudge();
        fx.eventually("sent once the server is back", |fx| {
            fx.transport.sent() == vec![(id, EmailKind::Confirmation)]
        })
        .await;
        assert!(mailer.flush(std::time::Duration::from_secs(5)).await);
        mailer.shutdown();
    }

    #[actix_rt::test]
    async fn permanent_rejects_are_retried_not_dropped() {
        let transport = FakeTransport::default();
        transport.fail_with(Some(SendError::Permanent("550 mailbox unavailable".into())));
        let fx = Fixture::new(transport);
        let id = paid_order(&fx.store, &fx.clock).await;
        let mailer = fx.start(quick());
        for attempt in 1..=3u32 {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while fx.email(id).await.attempts < attempt {
                assert!(std::time::Instant::now() < deadline, "attempt {attempt}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            fx.clock.advance(Duration::minutes(10));
            mailer.nudge();
        }
        let email = fx.email(id).await;
        assert!(email.sent_at.is_none(), "still in the outbox");
        assert_eq!(email.last_error.as_deref(), Some("550 mailbox unavailable"));
        fx.transport.fail_with(None);
        fx.clock.advance(Duration::minutes(10));
        mailer.nudge();
        fx.eventually("sent once accepted", |fx| fx.transport.sent().len() == 1)
            .await;
        assert!(mailer.flush(std::time::Duration::from_secs(5)).await);
        mailer.shutdown();
    }

    #[actix_rt::test]
    async fn sends_never_exceed_the_concurrency_bound() {
        let fx = Fixture::new(FakeTransport {
            delay: Some(std::time::Duration::from_millis(30)),
            ..FakeTransport::default()
        });
        for _ in 0..24 {
            paid_order(&fx.store, &fx.clock).await;
        }
        let mailer = fx.start(MailerSettings {
            concurrency: 3,
            batch_size: 10,
            ..quick()
        });
        fx.eventually("all 24 sent", |fx| fx.transport.sent().len() == 24)
            .await;
        let most = fx.transport.most_in_flight.load(Ordering::SeqCst);
        assert!(
            (2..=3).contains(&most),
            "{most} sends at once, expected up to 3"
        );
        let mut sent = fx.transport.sent();
        sent.sort();
        sent.dedup();
        assert_eq!(sent.len(), 24, "none twice");
        assert!(mailer.flush(std::time::Duration::from_secs(5)).await);
        mailer.shutdown();
    }

    #[actix_rt::test]
    async fn mail_left_unsent_by_a_previous_run_goes_out_at_start() {
        let fx = Fixture::new(FakeTransport::default());
        let first = paid_order(&fx.store, &fx.clock).await;
        // A previous run failed once and was stopped before the retry.
        let mut email = fx.email(first).await;
        email.attempts = 1;
        email.last_error = Some("connection refused".into());
        fx.store.update_email(&email).await.expect("update");
        let mailer = fx.start(MailerSettings {
            poll_every: std::time::Duration::from_secs(3600),
            ..MailerSettings::default()
        });
        fx.eventually("resumed at start", |fx| fx.transport.sent().len() == 1)
            .await;
        assert!(mailer.flush(std::time::Duration::from_secs(5)).await);
        mailer.shutdown();
    }

    #[actix_rt::test]
    async fn flush_waits_for_the_send_in_flight_and_then_sends_nothing_more() {
        let fx = Fixture::new(FakeTransport {
            delay: Some(std::time::Duration::from_millis(200)),
            ..FakeTransport::default()
        });
        paid_order(&fx.store, &fx.clock).await;
        let mailer = fx.start(quick());
        fx.eventually("a send is in flight", |fx| {
            fx.transport.in_flight.load(Ordering::SeqCst) == 1
        })
        .await;
        assert!(mailer.flush(std::time::Duration::from_secs(5)).await);
        assert_eq!(fx.transport.sent().len(), 1, "the send in flight finished");
        assert_eq!(
            fx.store.outbox_depth().await.expect("depth"),
            0,
            "and was recorded"
        );
        paid_order(&fx.store, &fx.clock).await;
        mailer.nudge();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(fx.transport.sent().len(), 1, "nothing new after the flush");
        mailer.shutdown();
        assert_eq!(
            Arc::strong_count(&fx.transport),
            1,
            "the mailer let go of its transport"
        );
    }

    #[test]
    fn retry_delay_doubles_with_jitter_up_to_ten_minutes() {
        let (initial, max) = (Duration::seconds(1), Duration::minutes(10));
        for attempts in 1..=30u32 {
            let ceiling = (Duration::seconds(1) * 2f64.powi(attempts as i32 - 1)).min(max);
            for _ in 0..50 {
                let wait = retry_delay(attempts, initial, max);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "attempt {attempts}: {wait} outside {} to {ceiling}",
                    ceiling / 2
                );
            }
        }
        let waits: std::collections::HashSet<i128> = (0..50)
            .map(|_| retry_delay(3, initial, max).whole_milliseconds())
            .collect();
        assert!(waits.len() > 10, "jittered, not fixed");
        assert!(retry_delay(u32::MAX, initial, max) <= max);
    }
}
