//! What a run measured: per-operation HDR latency histograms (microseconds, 3 significant
//! digits) and outcome counts by status and error code, and the report built from them.
//! Recording is cheap and shared by every task; it never decides what counts as a failure
//! of Kassa, the caller says whether an outcome was expected.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The operations a scenario times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// GET /healthz (the baseline).
    Healthz,
    /// GET /api/products/{sku}.
    ProductGet,
    /// POST /api/carts.
    CartCreate,
    /// PUT /api/carts/{id}/items/{sku}.
    CartAdd,
    /// POST /api/orders.
    Checkout,
    /// POST {paymentUrl} with outcome success.
    Pay,
    /// POST {paymentUrl} with outcome failure.
    Decline,
    /// POST /webhook/payment-status, correctly signed.
    Webhook,
    /// POST /webhook/payment-status, forged (wrong key, tampered body or stale timestamp).
    WebhookForged,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Self::Healthz => "healthz",
            Self::ProductGet => "product_get",
            Self::CartCreate => "cart_create",
            Self::CartAdd => "cart_add",
            Self::Checkout => "checkout",
            Self::Pay => "pay",
            Self::Decline => "decline",
            Self::Webhook => "webhook",
            Self::WebhookForged => "webhook_forged",
        }
    }
}

/// Longest latency the histograms hold; longer ones are clamped to it.
const MAX_MICROS: u64 = 120_000_000;

struct OpStats {
    latency: Histogram<u64>,
    /// (status, code) -> (count, expected). Status 0 is a transport error.
    outcomes: BTreeMap<(u16, String), (u64, bool)>,
    /// Attempts that got no answer, a balancer's 502/504 or a 503 with Retry-After, and were
    /// sent again.
    interrupted: u64,
}

impl OpStats {
    fn new() -> Self {
        Self {
            // 1 µs .. 120 s at 3 significant digits; the bounds are constants that are valid.
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid")),
            outcomes: BTreeMap::new(),
            interrupted: 0,
        }
    }
}

/// Shared by every task of a run.
pub struct Recorder {
    ops: Mutex<BTreeMap<Op, OpStats>>,
    unexpected: AtomicU64,
    iterations: AtomicU64,
    /// The longest a request took from its first interrupted attempt to its answer (µs).
    longest_interruption: AtomicU64,
    /// Retried attempts of every request, measured or not, by what interrupted them
    /// (`interrupted_by` in the report; their sum is `interrupted_total`).
    interrupted_by: Mutex<BTreeMap<String, u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            ops: Mutex::new(BTreeMap::new()),
            unexpected: AtomicU64::new(0),
            iterations: AtomicU64::new(0),
            longest_interruption: AtomicU64::new(0),
            interrupted_by: Mutex::new(BTreeMap::new()),
        }
    }

    /// An attempt of `op` (or of an unmeasured request) got no answer and is sent again;
    /// `status` and `code` say what it got instead (status 0: no answer).
    pub fn interrupted(&self, op: Option<Op>, status: u16, code: &str) {
        *self
            .interrupted_by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(interruption(status, code))
            .or_default() += 1;
        if let Some(op) = op {
            let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
            ops.entry(op).or_insert_with(OpStats::new).interrupted += 1;
        }
    }

    /// A request that was interrupted got its answer (or gave up) this long after.
    pub fn interruption_lasted(&self, lasted: Duration) {
        let micros = u64::try_from(lasted.as_micros()).unwrap_or(u64::MAX);
        self.longest_interruption
            .fetch_max(micros, Ordering::Relaxed);
    }

    /// Retried attempts in all, and the longest interruption in ms.
    pub fn interruptions(&self) -> (u64, f64) {
        (
            self.interrupted_by().values().sum(),
            ms(self.longest_interruption.load(Ordering::Relaxed)),
        )
    }

    /// Retried attempts by what interrupted them: `"0 connect"`, `"502 no_code"` (a
    /// balancer's), `"503 overloaded"`.
    pub fn interrupted_by(&self) -> BTreeMap<String, u64> {
        self.interrupted_by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn record(&self, op: Op, latency: Duration, status: u16, code: &str, expected: bool) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        if !expected {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
        }
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let stats = ops.entry(op).or_insert_with(OpStats::new);
        stats.latency.saturating_record(micros);
        let entry = stats
            .outcomes
            .entry((status, code.to_string()))
            .or_insert((0, expected));
        entry.0 += 1;
    }

    /// One scenario iteration (a journey, a delivery) finished.
    pub fn iteration_done(&self) {
        self.iterations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn iterations(&self) -> u64 {
        self.iterations.load(Ordering::Relaxed)
    }

    pub fn unexpected(&self) -> u64 {
        self.unexpected.load(Ordering::Relaxed)
    }

    /// The count and p99 (ms) of `op` so far, for the progress line.
    pub fn glance(&self, op: Op) -> (u64, f64) {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.get(&op).map_or((0, 0.0), |s| {
            (s.latency.len(), ms(s.latency.value_at_quantile(0.99)))
        })
    }

    /// Every operation's figures over `elapsed`.
    pub fn report(&self, elapsed: Duration) -> Vec<OpReport> {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.iter()
            .map(|(op, s)| {
                let h = &s.latency;
                let ok: u64 = s
                    .outcomes
                    .values()
                    .filter(|(_, expected)| *expected)
                    .map(|(n, _)| n)
                    .sum();
                let succeeded: u64 = s
                    .outcomes
                    .iter()
                    .filter(|((status, _), _)| (200..300).contains(status))
                    .map(|(_, (n, _))| n)
                    .sum();
                OpReport {
                    op: op.name(),
                    count: h.len(),
                    expected: ok,
                    unexpected: h.len() - ok,
                    interrupted: s.interrupted,
                    per_second: h.len() as f64 / secs,
                    expected_per_second: ok as f64 / secs,
                    succeeded,
                    succeeded_per_second: succeeded as f64 / secs,
                    latency_ms: Latency {
                        mean: h.mean() / 1000.0,
                        p50: ms(h.value_at_quantile(0.50)),
                        p90: ms(h.value_at_quantile(0.90)),
                        p99: ms(h.value_at_quantile(0.99)),
                        p999: ms(h.value_at_quantile(0.999)),
                        max: ms(h.max()),
                    },
                    outcomes: s
                        .outcomes
                        .iter()
                        .map(|((status, code), (count, expected))| Outcome {
                            status: *status,
                            code: code.clone(),
                            count: *count,
                            expected: *expected,
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// HTTP status; 0 when no response came (timeout, connection refused).
    pub status: u16,
    /// The contract's error `code`, `ok` for a 2xx, or the transport failure.
    pub code: String,
    pub count: u64,
    /// Whether the scenario expects this answer (a 409 `cart_conflict` in a sold-out flash
    /// sale, a 401 for a forged webhook); the others are errors.
    pub expected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    pub op: &'static str,
    pub count: u64,
    pub expected: u64,
    pub unexpected: u64,
    /// Attempts sent again after no answer, a balancer's 502/504 or a 503 with Retry-After
    /// (`--retry-interrupted`).
    pub interrupted: u64,
    pub per_second: f64,
    pub expected_per_second: f64,
    /// Answered 2xx (a checkout that reserved, a webhook acknowledged).
    pub succeeded: u64,
    pub succeeded_per_second: f64,
    pub latency_ms: Latency,
    pub outcomes: Vec<Outcome>,
}

/// The baseline: the bare JSON endpoint driven flat out in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub endpoint: &'static str,
    pub concurrency: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Everything a run found; rendered as text and written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub target: String,
    /// `open` (rate/s) or `closed` (concurrency).
    pub load: String,
    pub elapsed_seconds: f64,
    pub iterations: u64,
    pub operations: Vec<OpReport>,
    pub baseline: Option<Baseline>,
    /// The scenario's main operation (checkouts answered 200, webhooks acknowledged) per
    /// second over the baseline's requests per second.
    pub ratio_to_baseline: Option<f64>,
    /// `--lwt-baseline`: the database's own LWTs per second in the same run.
    pub lwt_baseline: Option<crate::lwt_baseline::LwtBaseline>,
    pub primary_op: &'static str,
    /// Scenario figures: reservations/s, mean batch size, RSS, ...
    pub figures: BTreeMap<String, f64>,
    /// Invariant checks that ran and passed.
    pub checks_passed: Vec<String>,
    /// Invariant violations; any makes the run fail.
    pub violations: Vec<String>,
    pub unexpected_errors: u64,
    /// Attempts sent again after no answer, a balancer's 502/504 or a 503 with Retry-After,
    /// over every request.
    pub interrupted_total: u64,
    /// `interrupted_total` by what the attempt got: `"0 <transport failure>"` for no answer,
    /// else the status and, for Kassa's own answers, the error code (`"503 overloaded"`).
    pub interrupted_by: BTreeMap<String, u64>,
    /// The longest a request waited from its first interrupted attempt to its answer.
    pub longest_interruption_ms: f64,
    /// `--kill-at`: each SIGKILL, and how long the restarted Kassa took to be ready.
    pub kills: Vec<Kill>,
}

/// One SIGKILL of the spawned Kassa and its restart on the same data.
#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    /// Seconds after the scenario began.
    pub at_seconds: f64,
    /// From the kill until `/readyz` answered 200 again.
    pub ready_after_seconds: f64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "kassa-loadtest {} against {} ({}): {} iterations in {:.1}s",
            self.scenario, self.target, self.load, self.iterations, self.elapsed_seconds
        );
        let _ = writeln!(
            out,
            "{:<15} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "operation",
            "count",
            "all/s",
            "2xx/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9",
            "max ms",
            "errors"
        );
        for op in &self.operations {
            let l = &op.latency_ms;
            let _ = writeln!(
                out,
                "{:<15} {:>8} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>7}",
                op.op,
                op.count,
                op.per_second,
                op.succeeded_per_second,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max,
                op.unexpected
            );
        }
        for op in &self.operations {
            for o in op.outcomes.iter().filter(|o| o.status / 100 != 2) {
                let _ = writeln!(
                    out,
                    "  {} -> {} {}: {}{}",
                    op.op,
                    o.status,
                    o.code,
                    o.count,
                    if o.expected { " (expected)" } else { "" }
                );
            }
        }
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                out,
                "baseline {}: {:.0}/s (p99 {:.2} ms, {} connections, {:.1}s)",
                b.endpoint, b.per_second, b.p99_ms, b.concurrency, b.seconds
            );
        }
        if let Some(r) = self.ratio_to_baseline {
            let _ = writeln!(out, "{} / baseline = {r:.3}", self.primary_op);
        }
        if let Some(b) = &self.lwt_baseline {
            for (name, unit, l) in [
                ("lwt baseline", "LWTs", &b.lwt),
                ("plain-write baseline", "writes", &b.plain),
            ] {
                let _ = writeln!(
                    out,
                    "{name} ({}): {:.0} {unit}/s (p50 {:.2} ms, p99 {:.2} ms, {} tasks, {:.1}s, {} errors)",
                    l.statement,
                    l.per_second,
                    l.p50_ms,
                    l.p99_ms,
                    b.concurrency,
                    l.seconds,
                    l.errors
                );
            }
        }
        for kill in &self.kills {
            let _ = writeln!(
                out,
                "killed (SIGKILL) at {:.1}s, ready again {:.2}s later",
                kill.at_seconds, kill.ready_after_seconds
            );
        }
        if self.interrupted_total > 0 {
            let _ = writeln!(
                out,
                "interrupted attempts sent again: {} (longest wait for an answer {:.0} ms): {}",
                self.interrupted_total,
                self.longest_interruption_ms,
                self.interrupted_by
                    .iter()
                    .map(|(what, n)| format!("{what} x{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for (name, value) in &self.figures {
            let _ = writeln!(out, "{name}: {value:.2}");
        }
        for check in &self.checks_passed {
            let _ = writeln!(out, "ok: {check}");
        }
        for v in &self.violations {
            let _ = writeln!(out, "VIOLATION: {v}");
        }
        let _ = writeln!(
            out,
            "{}: {} violation(s), {} unexpected answer(s)",
            if self.ok() { "PASS" } else { "FAIL" },
            self.violations.len(),
            self.unexpected_errors
        );
        out
    }
}

/// The key of `Recorder::interrupted_by`: the status, and the code when there is one.
fn interruption(status: u16, code: &str) -> String {
    if code.is_empty() {
        status.to_string()
    } else {
        format!("{status} {code}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_and_unexpected_outcomes_are_counted_apart() {
        let r = Recorder::new();
        r.record(Op::Checkout, Duration::from_millis(2), 200, "ok", true);
        r.record(
            Op::Checkout,
            Duration::from_millis(3),
            409,
            "cart_conflict",
            true,
        );
        r.record(
            Op::Checkout,
            Duration::from_millis(900),
            503,
            "overloaded",
            false,
        );
        let report = r.report(Duration::from_secs(1));
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].count, 3);
        assert_eq!(report[0].expected, 2);
        assert_eq!(report[0].unexpected, 1);
        assert_eq!(r.unexpected(), 1);
        assert!(report[0].latency_ms.max >= 899.0);
    }
}
