//! Logs and metrics set up once per process: `tracing` to stdout (text or JSON, filtered by
//! KASSA_LOG) and the Prometheus recorder that /metrics renders. Never `println!` a log.
//! Logging never blocks the process: lines go through a bounded queue to a writer thread and
//! are dropped (and counted) when stdout's reader stalls; a reader that went away (EPIPE) only
//! loses the lines. Serving and shutdown never wait on stdout.
//! Every counter an alert or the dashboard reads exists at 0 from start-up, so that
//! `increase()` sees the first event of a process.

use crate::config::LogFormat;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Log lines queued for stdout at most; beyond them new lines are dropped, not waited for.
const LOG_LINES_QUEUED: usize = 16_384;
/// How long the exit waits for queued lines to reach stdout.
const LOG_FLUSH_GRACE: Duration = Duration::from_millis(1500);

/// The log writer thread's guard (taken by `flush_logs`) and its count of dropped lines.
static LOG_WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);
static LOG_LINES_DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the tracing subscriber (the first call wins; later calls are no-ops).
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_LINES_QUEUED)
        .thread_name("kassa-log")
        .finish(std::io::stdout());
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_ok() {
        let _ = LOG_LINES_DROPPED.set(dropped);
        if let Ok(mut slot) = LOG_WRITER.lock() {
            *slot = Some(guard);
        }
    }
}

/// Gives the log writer thread a moment to write the queued lines before the process exits,
/// and never more: a stalled stdout reader cannot hold the exit (the writer thread then dies
/// with the process).
pub fn flush_logs() {
    let guard = LOG_WRITER.lock().ok().and_then(|mut slot| slot.take());
    let Some(guard) = guard else {
        return;
    };
    let (done, flushed) = std::sync::mpsc::channel();
    // Dropping the guard waits for the writer, and may print if it cannot reach it: apart,
    // so that neither can hold the exit.
    let spawned = std::thread::Builder::new()
        .name("kassa-log-flush".into())
        .spawn(move || {
            drop(guard);
            let _ = done.send(());
        });
    if spawned.is_ok() {
        let _ = flushed.recv_timeout(LOG_FLUSH_GRACE);
    }
}

/// The process-wide Prometheus recorder (installed on first use, shared by every app in
/// the process, which matters for tests that start several).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let sizes = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &sizes))
                .map(|b| b.build_recorder());
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!(
                            "a metrics recorder was already installed; /metrics may be empty"
                        );
                    }
                    describe_metrics();
                    register_counters_at_zero();
                    // Alerts need the series before the first refusal.
                    metrics::counter!("kassa_http_shed_total").increment(0);
                    metrics::gauge!("kassa_build_info", "version" => env!("CARGO_PKG_VERSION"))
                        .set(1.0);
                    handle
                }
                Err(e) => {
                    tracing::error!(error = %e, "invalid metrics buckets; using defaults");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// What /metrics serves: every recorded series, and the process's own figures (`process_*`,
/// Prometheus' standard names) read now. The CPU time is written here rather than through
/// the recorder, whose counters are whole numbers: a process that used 0.9 s would read 0.
pub fn render_metrics(handle: &PrometheusHandle) -> String {
    let process = metrics_process::collector::collect();
    let gauges = [
        ("process_open_fds", process.open_fds),
        ("process_max_fds", process.max_fds),
        ("process_virtual_memory_bytes", process.virtual_memory_bytes),
        (
            "process_virtual_memory_max_bytes",
            process.virtual_memory_max_bytes,
        ),
        (
            "process_resident_memory_bytes",
            process.resident_memory_bytes,
        ),
        ("process_start_time_seconds", process.start_time_seconds),
        ("process_threads", process.threads),
    ];
    for (name, value) in gauges {
        if let Some(value) = value {
            metrics::gauge!(name).set(value as f64);
        }
    }
    if let Some(dropped) = LOG_LINES_DROPPED.get() {
        metrics::counter!("kassa_log_lines_dropped_total").absolute(dropped.dropped_lines() as u64);
    }
    let mut text = handle.render();
    if let Some(seconds) = process.cpu_seconds_total {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {seconds}\n"
        ));
    }
    text
}

/// Creates at 0 the counters that alerting rules and the dashboard read, with every label
/// set they can take: a counter first seen at 1 has no earlier sample, so `increase()` and
/// `rate()` miss its first event (the first oversell of each process went unpaged).
/// Label values come from the types that record them, so they cannot drift apart.
fn register_counters_at_zero() {
    use kassa_actors::cart::CartActor;
    use kassa_actors::mailer::SendError;
    use kassa_actors::order::{Decision, OrderEvent, OrderStatus, decide};
    use kassa_actors::order_actor::OrderActor;
    use kassa_actors::product::ProductActor;
    use kassa_actors::registry::KeyedActor;
    use kassa_actors::store::EmailKind;
    use metrics::counter;

    for name in [
        "kassa_commit_without_reservation_total",
        "kassa_reservation_conflicts_total",
        "kassa_reservations_orphaned_total",
        "kassa_webhook_amount_mismatch_total",
        "kassa_orders_expired_total",
    ] {
        counter!(name).increment(0);
    }
    // The store-conflict `entity` of each actor is its kind.
    for kind in [ProductActor::KIND, CartActor::KIND, OrderActor::KIND] {
        counter!("kassa_actor_ask_overloaded_total", "kind" => kind).increment(0);
        counter!("kassa_store_conflicts_total", "entity" => kind).increment(0);
        counter!("kassa_contended_total", "entity" => kind).increment(0);
    }
    counter!("kassa_lwt_retries_total", "entity" => ProductActor::KIND).increment(0);
    for outcome in ["placed", "conflict", "gateway_error"] {
        counter!("kassa_checkouts_total", "outcome" => outcome).increment(0);
    }
    for outcome in [
        "applied",
        "unchanged",
        "duplicate",
        "bad_signature",
        "ignored",
    ] {
        counter!("kassa_webhooks_total", "outcome" => outcome).increment(0);
    }
    for email in [EmailKind::Confirmation, EmailKind::Refund] {
        let email = email.as_str();
        counter!("kassa_emails_sent_total", "email" => email).increment(0);
        for failure in [
            SendError::Transient(String::new()),
            SendError::Permanent(String::new()),
        ] {
            counter!("kassa_email_send_failures_total", "kind" => failure.kind(), "email" => email)
                .increment(0);
        }
    }
    // Every transition the order table can make.
    let events = [(true, true), (true, false), (false, true), (false, false)]
        .map(
            |(amount_matches, stock_held)| OrderEvent::PaymentSucceeded {
                amount_matches,
                stock_held,
            },
        )
        .into_iter()
        .chain([
            OrderEvent::PaymentFailed,
            OrderEvent::GatewayUnavailable,
            OrderEvent::ReservationExpired,
            OrderEvent::RefundAccepted,
            OrderEvent::CancelRequested,
        ]);
    for event in events {
        for from in OrderStatus::ALL {
            if let Decision::Move { to, .. } = decide(from, event) {
                counter!("kassa_order_transitions_total", "from" => from.as_str(), "to" => to.as_str())
                    .increment(0);
            }
        }
    }
}

/// Help text and units for every metric Kassa records (shown by /metrics as `# HELP`).
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "kassa_build_info",
        "1, labelled with the running version (a deploy shows as a change of label)."
    );
    describe_counter!(
        "kassa_http_requests_total",
        "HTTP requests by method, route template and status class."
    );
    describe_counter!(
        "kassa_sandbox_journal_failures_total",
        "Lines the built-in sandbox could not write to its payment journal."
    );
    describe_counter!(
        "kassa_actor_evictions_requested_total",
        "Idle actors asked to stop because their kind was over KASSA_MAX_LIVE_ACTORS, by kind."
    );
    describe_counter!(
        "kassa_contended_total",
        "Commands given up because their writes kept losing to other writers' (a shopper's or \
         gateway's request then gets 503 overloaded): a product command after \
         max_conflict_retries; a shopper's cart change or checkout lock; a webhook's or \
         cancel's status change (orders do not retry). By entity."
    );
    describe_counter!(
        "kassa_lwt_retries_total",
        "Conditional writes retried after another writer got there first, by entity."
    );
    describe_counter!(
        "kassa_email_claims_lost_total",
        "Emails another mailer claimed first (this one did not send them)."
    );
    describe_counter!(
        "kassa_crash_recovered_total",
        "What start-up gave back that the previous run left held, by what (idempotency_key, checkout, email made due)."
    );
    describe_counter!(
        "kassa_checkout_sessions_total",
        "Hosted checkout sessions opened."
    );
    describe_counter!(
        "kassa_orders_cancelled_total",
        "Unpaid orders cancelled by their shopper or an admin."
    );
    describe_counter!(
        "kassa_http_shed_total",
        "Requests refused with 503 overloaded because KASSA_MAX_IN_FLIGHT were in flight."
    );
    describe_histogram!(
        "kassa_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route template."
    );
    describe_counter!(
        "kassa_checkouts_total",
        "Checkouts by outcome (placed, conflict, gateway_error)."
    );
    describe_counter!(
        "kassa_order_transitions_total",
        "Order status transitions by from and to status."
    );
    describe_counter!(
        "kassa_orders_expired_total",
        "Pending orders that expired unpaid."
    );
    describe_counter!(
        "kassa_reconciliations_total",
        "Payments settled by a status query instead of a webhook."
    );
    describe_counter!(
        "kassa_webhooks_total",
        "Payment webhooks by outcome (applied, unchanged, duplicate, bad_signature)."
    );
    describe_counter!(
        "kassa_webhook_amount_mismatch_total",
        "Payment webhooks whose amount or currency differed from the order."
    );
    describe_counter!(
        "kassa_reservation_conflicts_total",
        "Checkouts refused at reservation time (a line lost a race for stock)."
    );
    describe_counter!(
        "kassa_reservations_orphaned_total",
        "Reservations swept long after expiry because no order settled them."
    );
    describe_counter!(
        "kassa_commit_without_reservation_total",
        "Paid order lines that had no reservation to commit (should stay 0)."
    );
    describe_counter!(
        "kassa_store_conflicts_total",
        "Conditional store writes that lost to another writer, by entity."
    );
    describe_histogram!(
        "kassa_product_batch_size",
        "Commands carried by one ProductActor store write (group commit)."
    );
    describe_histogram!(
        "kassa_store_commit_batch_size",
        "Writes carried by one embedded store transaction (one fsync)."
    );
    describe_histogram!(
        "kassa_store_commit_seconds",
        Unit::Seconds,
        "Embedded store transaction commit latency, fsync included."
    );
    describe_gauge!("kassa_actors_live", "Live actors in this process by kind.");
    describe_counter!(
        "kassa_actor_activations_total",
        "Actor activations (state loaded from the store) by kind."
    );
    describe_counter!(
        "kassa_actor_ask_overloaded_total",
        "Asks refused with 503 because an actor's mailbox stayed full or it did not answer in time."
    );
    describe_histogram!(
        "kassa_actor_ask_seconds",
        Unit::Seconds,
        "Time from sending a message to an actor to its answer, by kind."
    );
    describe_histogram!(
        "kassa_gateway_initiate_seconds",
        Unit::Seconds,
        "Payment initiation latency at the gateway by outcome."
    );
    describe_histogram!(
        "kassa_gateway_request_seconds",
        Unit::Seconds,
        "HTTP gateway call latency (retries included) by operation and outcome."
    );
    describe_counter!(
        "kassa_sandbox_webhook_attempts_total",
        "Sandbox gateway webhook delivery attempts by outcome."
    );
    describe_counter!(
        "kassa_emails_sent_total",
        "Emails handed to the mail transport."
    );
    describe_counter!(
        "kassa_email_send_failures_total",
        "Failed email send attempts by kind (transient, permanent)."
    );
    describe_gauge!("kassa_outbox_depth", "Emails waiting in the outbox.");
    describe_counter!(
        "kassa_store_statements_total",
        "Store operations sent, by store and kind: lwt (a Paxos round), write (a plain write; on the embedded store one write of a group commit), read."
    );
    describe_gauge!(
        "kassa_store_writable",
        "1 while the embedded store commits, 0 while the file system refuses its writes (full, read-only, I/O errors)."
    );
    describe_gauge!(
        "kassa_outbox_oldest_unsent_seconds",
        Unit::Seconds,
        "Age of the oldest unsent email."
    );
    describe_histogram!(
        "kassa_smtp_send_seconds",
        Unit::Seconds,
        "Email send latency."
    );
    describe_counter!(
        "kassa_log_lines_dropped_total",
        "Log lines dropped because stdout's reader did not keep up."
    );
    describe_gauge!("process_open_fds", "Number of open file descriptors.");
    describe_gauge!(
        "process_max_fds",
        "Maximum number of open file descriptors (0: unlimited)."
    );
    describe_gauge!(
        "process_virtual_memory_bytes",
        Unit::Bytes,
        "Virtual memory size in bytes."
    );
    describe_gauge!(
        "process_virtual_memory_max_bytes",
        Unit::Bytes,
        "Maximum amount of virtual memory available in bytes (0: unlimited)."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory size in bytes."
    );
    describe_gauge!(
        "process_start_time_seconds",
        Unit::Seconds,
        "Start time of the process since the Unix epoch in seconds."
    );
    describe_gauge!("process_threads", "Number of OS threads in the process.");
}
