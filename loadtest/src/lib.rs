//! `kassa-loadtest`: drives Kassa the way storefronts and gateways do and then proves, through
//! the API alone, that nothing was oversold, lost or applied twice. It owns the load, the
//! measurement and the checks; it never reaches into Kassa's store or process state (RSS
//! from /proc aside).
//!
//! Why tokio + reqwest + hdrhistogram rather than goose: the scenarios are not independent
//! request loops but flows with shared state (the orders a run placed, the webhooks it must
//! sign and shuffle, the ledger the invariants are checked against), and the measurement
//! must control the arrival process itself: an open loop whose latency counts from each
//! iteration's intended start (coordinated omission), next to a closed loop. A few hundred
//! lines of driver over tokio do exactly that, with HDR histograms for honest tails; reqwest
//! is already Kassa's HTTP client, so the workspace builds one HTTP stack, and the report and
//! its JSON are ours to shape (errors by status and contract code, ratio to a baseline).

pub mod client;
pub mod driver;
pub mod lwt_baseline;
pub mod scenarios;
pub mod stats;
pub mod target;
pub mod verify;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use client::{Kassa, Minter};
use driver::{Load, Plan, Progress};
use scenarios::{Ctx, Measured};
use stats::{Baseline, Kill, Op, Recorder, Report};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::{SpawnSettings, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Shoppers fill carts, check out, and pay, decline or abandon.
    Storefront,
    /// One SKU, S units, U >> S shoppers checking out at once.
    FlashSale,
    /// Every payment's webhook delivered k times, shuffled, with forgeries.
    WebhookStorm,
    /// GET many distinct unknown SKUs, then read Kassa's RSS (passivation bounds memory).
    SkuTouch,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Storefront => "storefront",
            Self::FlashSale => "flash-sale",
            Self::WebhookStorm => "webhook-storm",
            Self::SkuTouch => "sku-touch",
        }
    }
}

fn duration(raw: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(raw)
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "kassa-loadtest",
    version,
    about = "Load-tests Kassa and checks its invariants afterwards"
)]
pub struct Options {
    #[arg(long, value_enum)]
    pub scenario: Scenario,

    /// Open loop: iterations started per second (latency counted from the intended start).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: iterations running at once (the default, 32).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Stop starting iterations after this long (e.g. `30s`); the default is 10s, or the
    /// scenario's natural end (flash-sale: every shopper; webhook-storm: every delivery).
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Stop after this many iterations.
    #[arg(long)]
    pub count: Option<u64>,
    /// Open loop: iterations in flight at most.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,

    /// Start this Kassa binary on a temporary data dir with generated secrets.
    #[arg(long, conflicts_with = "target", required_unless_present = "target")]
    pub spawn: Option<PathBuf>,
    /// With --spawn: `KASSA_STORE` (e.g. `scylla://127.0.0.1:9042/kassa`); embedded otherwise.
    #[arg(long, requires = "spawn")]
    pub store: Option<String>,
    /// With --spawn: `KASSA_RESERVATION_TTL`.
    #[arg(long, default_value = "15m")]
    pub reservation_ttl: String,
    /// With --spawn: kill Kassa with SIGKILL this long after the scenario begins (setup
    /// included) and start it again on the same data and port (repeatable). Interrupted
    /// requests are retried (`--retry-interrupted`, 30s unless given), and the checks run at
    /// least 10 s after the last restart: by then nothing of a checkout the kill interrupted
    /// may be held (API.md's crash rule).
    #[arg(long = "kill-at", value_parser = duration, requires = "spawn")]
    pub kill_at: Vec<Duration>,
    /// With --kill-at: how long Kassa stays down before it is started again.
    #[arg(long, value_parser = duration, default_value = "1s")]
    pub down_for: Duration,
    /// Send a request that got no answer (connection refused or reset, timeout), a
    /// balancer's 502/504 or a 503 with Retry-After again, with the same body and Idempotency-Key, every 200 ms for up
    /// to this long; counted in the report as interrupted, not as unexpected. Checkouts then
    /// carry an Idempotency-Key.
    #[arg(long, value_parser = duration)]
    pub retry_interrupted: Option<Duration>,
    /// With --spawn: `KASSA_SMTP_URL` of a real SMTP server; `--mail-dir` is then where that
    /// server writes each message it accepts (one file each), so duplicates are counted.
    #[arg(long, requires_all = ["spawn", "mail_dir"])]
    pub smtp_url: Option<String>,
    /// With --spawn: `KASSA_LOG`.
    #[arg(long, default_value = "warn")]
    pub kassa_log: String,
    /// A running Kassa (needs --jwt-secret and --webhook-secret).
    #[arg(long, requires_all = ["jwt_secret", "webhook_secret"])]
    pub target: Option<String>,
    #[arg(long)]
    pub jwt_secret: Option<String>,
    #[arg(long)]
    pub webhook_secret: Option<String>,
    /// With --target: Kassa's pid, for RSS readings.
    #[arg(long)]
    pub kassa_pid: Option<u32>,
    /// Check that every paid order's email is a file here (with --spawn, Kassa is told to
    /// write its mail here).
    #[arg(long)]
    pub mail_dir: Option<PathBuf>,

    /// Drive GET /healthz flat out this long first, as the baseline (`0s`: skip).
    #[arg(long, value_parser = duration, default_value = "3s")]
    pub baseline: Duration,
    /// Connections for the baseline (default: --concurrency, or 32).
    #[arg(long)]
    pub baseline_concurrency: Option<usize>,
    /// On a scylla store: drive the database's own LWTs this long first (a loop of Kassa's
    /// cart-write shape, as many tasks as the baseline has connections) and report Kassa's
    /// LWTs/s over it, then as long again the same shape as plain writes (`0s`: skip).
    #[arg(long, value_parser = duration, default_value = "3s")]
    pub lwt_baseline: Duration,
    /// The database for --lwt-baseline, as a `KASSA_STORE` URL
    /// (`scylla://[user:password@]host:port/keyspace`); default: --store.
    #[arg(long)]
    pub lwt_baseline_store: Option<String>,
    /// How long the checks wait for webhooks and emails still on their way.
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub settle_timeout: Duration,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Products (storefront; webhook-storm spreads its orders over at most this many).
    #[arg(long, default_value_t = 100)]
    pub products: usize,
    /// Units per product (storefront 100000, flash-sale 100, webhook-storm 1000000).
    #[arg(long)]
    pub stock: Option<i64>,
    /// Distinct shoppers (storefront, webhook-storm).
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Storefront: share of checkouts declined at the gateway.
    #[arg(long, default_value_t = 0.15)]
    pub decline: f64,
    /// Storefront: share of checkouts abandoned (left to expire).
    #[arg(long, default_value_t = 0.05)]
    pub abandon: f64,
    /// Flash-sale: shoppers (each wants one unit).
    #[arg(long, default_value_t = 2000)]
    pub shoppers: usize,
    /// Webhook-storm: orders placed before the storm.
    #[arg(long, default_value_t = 500)]
    pub orders: usize,
    /// Webhook-storm: deliveries of each genuine webhook.
    #[arg(long, default_value_t = 3)]
    pub copies: usize,
    /// Webhook-storm: share of orders that also get a forged webhook.
    #[arg(long, default_value_t = 0.2)]
    pub forged: f64,
    /// Webhook-storm: share of payments whose genuine outcome is a failure.
    #[arg(long, default_value_t = 0.1)]
    pub webhook_failed: f64,
    /// Sku-touch: after touching, wait this long and measure memory again (passivation).
    #[arg(long, value_parser = duration)]
    pub settle: Option<Duration>,
    /// Sku-touch: create the SKUs first (admin PUT, not measured), so every GET finds one
    /// and starts an actor with state; memory is then bounded by the live-actor cap.
    #[arg(long)]
    pub existing: bool,
}

impl Options {
    /// `--retry-interrupted`, or 30 s when `--kill-at` kills Kassa mid-run.
    fn retry_window(&self) -> Option<Duration> {
        self.retry_interrupted
            .or_else(|| (!self.kill_at.is_empty()).then_some(Duration::from_secs(30)))
    }

    fn plan(&self) -> Plan {
        let load = match (self.rate, self.concurrency) {
            (Some(rate), _) => Load::Open { rate },
            (None, c) => Load::Closed {
                concurrency: c.unwrap_or(32),
            },
        };
        let natural_end = matches!(
            self.scenario,
            Scenario::FlashSale | Scenario::WebhookStorm | Scenario::SkuTouch
        );
        let duration = match (self.duration, self.count) {
            (None, None) if !natural_end => Some(Duration::from_secs(10)),
            (d, _) => d,
        };
        Plan {
            load,
            duration,
            count: self.count,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// Runs the scenario, the baseline and the checks; the report says whether it passed.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let target = match (&opts.spawn, &opts.target) {
        (Some(binary), _) => {
            Target::spawn(SpawnSettings {
                binary,
                store: opts.store.as_deref(),
                reservation_ttl: &opts.reservation_ttl,
                mail_dir: opts.mail_dir.as_deref(),
                smtp_url: opts.smtp_url.as_deref(),
                log: &opts.kassa_log,
            })
            .await?
        }
        (None, Some(url)) => Target::remote(
            url,
            opts.jwt_secret.clone().context("--jwt-secret")?,
            opts.webhook_secret.clone().context("--webhook-secret")?,
            opts.kassa_pid,
            opts.mail_dir.clone(),
        ),
        (None, None) => anyhow::bail!("give --spawn BINARY or --target URL"),
    };
    let plan = opts.plan();
    let recorder = Arc::new(Recorder::new());
    let ctx = Arc::new(Ctx {
        kassa: Kassa::new(&target.base_url, recorder.clone())?
            .retrying_interrupted(opts.retry_window()),
        minter: Minter::new(&target.jwt_secret),
        webhook_secret: target.webhook_secret.clone(),
        ledger: Arc::default(),
        prefix: format!("lt{:08x}", rand::random::<u32>()),
        recorder: recorder.clone(),
        window: Default::default(),
        cpu: Default::default(),
        opts: opts.clone(),
    });

    let baseline = if opts.baseline.is_zero() || opts.scenario == Scenario::SkuTouch {
        None
    } else {
        let concurrency = opts.baseline_concurrency.or(opts.concurrency).unwrap_or(32);
        Some(run_baseline(&target.base_url, concurrency, opts.baseline, opts.quiet).await?)
    };
    let lwt_node = opts
        .lwt_baseline_store
        .as_deref()
        .or(opts.store.as_deref())
        .and_then(lwt_baseline::Node::from_store_url);
    let lwt_baseline = match lwt_node {
        Some(node) if !opts.lwt_baseline.is_zero() && opts.scenario != Scenario::SkuTouch => {
            let concurrency = opts.baseline_concurrency.or(opts.concurrency).unwrap_or(32);
            if !opts.quiet {
                eprintln!(
                    "lwt baseline: {concurrency} tasks for {:?} of LWTs, then as long of plain writes, on {}",
                    opts.lwt_baseline,
                    node.hosts.join(",")
                );
            }
            Some(lwt_baseline::run(&node, concurrency, opts.lwt_baseline).await?)
        }
        _ => None,
    };

    let chaos = chaos(&target, &opts);
    let measured = match opts.scenario {
        Scenario::Storefront => scenarios::storefront::run(ctx.clone(), plan).await,
        Scenario::FlashSale => scenarios::flash_sale::run(ctx.clone(), plan).await,
        Scenario::WebhookStorm => scenarios::webhook_storm::run(ctx.clone(), plan).await,
        Scenario::SkuTouch => {
            let pid_target = &target;
            scenarios::sku_touch::run(ctx.clone(), plan, || pid_target.memory_kib()).await
        }
    };
    let Measured {
        elapsed,
        primary,
        figures,
        passed,
        violations,
    } = measured.with_context(|| format!("the run failed; Kassa's log:\n{}", target.log_tail()))?;

    let (kills, last_ready) = match chaos {
        Some(task) => task.await.context("the kill task")??,
        None => (Vec::new(), None),
    };
    if let Some(ready) = last_ready {
        // API.md: within 10 s of the restart nothing of an interrupted checkout is held.
        tokio::time::sleep_until((ready + CRASH_RULE_WINDOW).into()).await;
    }
    let mut figures = figures;
    figures.extend(store_figures(&ctx, elapsed));
    if target.pid().is_some() {
        figures.extend(ctx.cpu_figures());
    }
    figures.extend(statements_per_iteration(
        &ctx,
        recorder.iterations(),
        elapsed,
    ));
    if let Some(orders) = figures.get("orders").copied().filter(|o| *o > 0.0) {
        // The webhook storm: what settling one order cost, whatever its deliveries.
        let iterations = recorder.iterations() as f64;
        for kind in ["lwt", "write", "read"] {
            if let Some(per) = figures
                .get(&format!("store_{kind}s_per_iteration"))
                .copied()
            {
                figures.insert(
                    format!("store_{kind}s_per_order"),
                    per * iterations / orders,
                );
            }
        }
    }
    let kassa_lwts = figures.get("store_lwts_per_second").copied();
    if let (Some(kassa), Some(database)) = (kassa_lwts, &lwt_baseline) {
        figures.insert(
            "lwt_share_of_baseline".into(),
            kassa / database.lwt.per_second.max(1e-9),
        );
    }
    if let Some(database) = lwt_baseline
        .as_ref()
        .filter(|b| b.lwt.writes > 0 && b.lwt.errors == 0 && b.plain.errors == 0)
    {
        // How many plain writes of the same shape the node took for each LWT, from the same
        // tasks (docs/ownership.md); only when both loops ran clean.
        figures.insert(
            "plain_writes_per_lwt".into(),
            database.plain.per_second / database.lwt.per_second.max(1e-9),
        );
    }
    let mut checks_passed = passed;
    let mut all_violations = violations;
    if opts.scenario != Scenario::SkuTouch {
        // The checks read through a client of their own that sends a 503 with Retry-After
        // (or an answerless request) again for up to the settle time: a Kassa still working
        // off the load may shed a read, and that is not a broken invariant. Its retries are
        // not the run's interruptions.
        let checker = Kassa::new(&target.base_url, Arc::new(Recorder::new()))?
            .retrying_interrupted(Some(opts.settle_timeout));
        let outcome = verify::verify(
            &checker,
            &ctx.ledger,
            opts.settle_timeout,
            target.mail_dir.as_deref(),
        )
        .await?;
        checks_passed.extend(outcome.passed);
        all_violations.extend(outcome.violations);
        if let Some(duplicates) = outcome.duplicate_emails {
            figures.insert("duplicate_emails".into(), duplicates as f64);
        }
    }
    if !target.alive() {
        all_violations.push(format!(
            "kassa exited during the run:\n{}",
            target.log_tail()
        ));
    }

    let operations = recorder.report(elapsed);
    let (interrupted_total, longest_interruption_ms) = recorder.interruptions();
    let primary_rate = operations
        .iter()
        .find(|o| o.op == primary.name())
        .map(|o| o.succeeded_per_second);
    let ratio = baseline
        .as_ref()
        .zip(primary_rate)
        .map(|(b, p)| p / b.per_second.max(1e-9));
    Ok(Report {
        scenario: opts.scenario.name(),
        target: target.base_url.clone(),
        load: plan.load.describe(),
        elapsed_seconds: elapsed.as_secs_f64(),
        iterations: recorder.iterations(),
        operations,
        baseline,
        ratio_to_baseline: ratio,
        lwt_baseline,
        primary_op: primary.name(),
        figures,
        checks_passed,
        violations: all_violations,
        unexpected_errors: recorder.unexpected(),
        interrupted_total,
        interrupted_by: recorder.interrupted_by(),
        longest_interruption_ms,
        kills,
    })
}

/// How long after a restart API.md allows an interrupted checkout to hold anything.
const CRASH_RULE_WINDOW: Duration = Duration::from_secs(10);

type KillTask = tokio::task::JoinHandle<anyhow::Result<(Vec<Kill>, Option<Instant>)>>;

/// `--kill-at`: a task that kills and restarts the spawned Kassa at each moment, answering
/// the kills and when the last restart was ready.
fn chaos(target: &Target, opts: &Options) -> Option<KillTask> {
    if opts.kill_at.is_empty() {
        return None;
    }
    let target = target.clone();
    let mut moments = opts.kill_at.clone();
    moments.sort();
    let down = opts.down_for;
    Some(tokio::spawn(async move {
        let began = Instant::now();
        let mut kills = Vec::new();
        let mut last_ready = None;
        for at in moments {
            tokio::time::sleep_until((began + at).into()).await;
            let at_seconds = began.elapsed().as_secs_f64();
            let ready = target
                .kill_and_restart(down)
                .await
                .with_context(|| format!("restarting after the kill at {at:?}"))?;
            last_ready = Some(Instant::now());
            kills.push(Kill {
                at_seconds,
                ready_after_seconds: ready.as_secs_f64(),
            });
        }
        Ok((kills, last_ready))
    }))
}

/// Kassa's own view of the measured part: durable commits (how many, how long, how many
/// writes each carried) and the ProductActors' group-commit batches.
fn store_figures(ctx: &Ctx, elapsed: Duration) -> Vec<(String, f64)> {
    let mut figures = Vec::new();
    if let Some((seconds, commits)) = ctx.window_delta("kassa_store_commit_seconds") {
        figures.push((
            "store_commits_per_second".into(),
            commits / elapsed.as_secs_f64(),
        ));
        figures.push(("store_commit_mean_ms".into(), seconds * 1000.0 / commits));
    }
    if let Some((writes, commits)) = ctx.window_delta("kassa_store_commit_batch_size") {
        figures.push(("store_writes_per_commit".into(), writes / commits));
    }
    if let Some((commands, writes)) = ctx.window_delta("kassa_product_batch_size") {
        figures.push(("product_commands_per_write".into(), commands / writes));
    }
    figures
}

/// The durable work each iteration (a journey, a checkout, a delivery) cost Kassa's store
/// over the measured part, from `kassa_store_statements_total`: LWTs (Paxos rounds), plain
/// writes and reads on the scylla store; writes (each one of a group commit) and reads on the
/// embedded one. Setup and checks are outside the window. Also Kassa's LWTs per second, for
/// the share of the database's LWT capacity (`--lwt-baseline`).
fn statements_per_iteration(ctx: &Ctx, iterations: u64, elapsed: Duration) -> Vec<(String, f64)> {
    let window = ctx.window.lock().unwrap_or_else(|e| e.into_inner());
    let (Some(before), Some(after)) = (&window.0, &window.1) else {
        return Vec::new();
    };
    if iterations == 0 {
        return Vec::new();
    }
    let mut figures = Vec::new();
    for kind in ["lwt", "write", "read"] {
        let label = format!("kind=\"{kind}\"");
        let delta = scenarios::counter_sum(after, "kassa_store_statements_total", &label)
            - scenarios::counter_sum(before, "kassa_store_statements_total", &label);
        if delta > 0.0 {
            figures.push((
                format!("store_{kind}s_per_iteration"),
                delta / iterations as f64,
            ));
            if kind == "lwt" && !elapsed.is_zero() {
                figures.push((
                    "store_lwts_per_second".into(),
                    delta / elapsed.as_secs_f64(),
                ));
            }
        }
    }
    // Which tables the LWTs went to (`kassa_store_lwt_total{table=..}`), and every request
    // by the store operation that sent it (`kassa_store_request_seconds_count{op=..}`: plain
    // writes and reads too, a batch or a paged read as one request; an LWT's op is its
    // table, so `carts` also holds the carts' plain creations), for the scylla store.
    for (table, delta) in growth_by_label(after, before, "kassa_store_lwt_total{", "table") {
        figures.push((
            format!("store_lwts_per_iteration_{table}"),
            delta / iterations as f64,
        ));
    }
    let requests = "kassa_store_request_seconds_count{";
    for (op, delta) in growth_by_label(after, before, requests, "op") {
        figures.push((
            format!("store_requests_per_iteration_{op}"),
            delta / iterations as f64,
        ));
    }
    figures
}

/// The growth between two scrapes of the series that start with `series` (a name and `{`),
/// summed per value of `label` over their other labels, in label order; values that did not
/// grow are left out.
fn growth_by_label(after: &str, before: &str, series: &str, label: &str) -> Vec<(String, f64)> {
    let needle = format!("{label}=\"");
    // The label by its whole name: first after the `{`, or after a `,` (not `shop=` for `op=`).
    let value_of = |labels: &str| {
        let at = if labels.starts_with(needle.as_str()) {
            0
        } else {
            labels.find(&format!(",{needle}"))? + 1
        };
        let (value, _) = labels[at + needle.len()..].split_once('"')?;
        Some(value.to_owned())
    };
    let per_value = |text: &str| {
        let mut sums = std::collections::BTreeMap::<String, f64>::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(series) else {
                continue;
            };
            let Some(value) = value_of(rest) else {
                continue;
            };
            if let Some(n) = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()) {
                *sums.entry(value).or_default() += n;
            }
        }
        sums
    };
    let before = per_value(before);
    per_value(after)
        .into_iter()
        .map(|(value, n)| {
            let delta = n - before.get(&value).copied().unwrap_or(0.0);
            (value, delta)
        })
        .filter(|(_, delta)| *delta > 0.0)
        .collect()
}

/// GET /healthz from `concurrency` connections for `length`.
async fn run_baseline(
    base: &str,
    concurrency: usize,
    length: Duration,
    quiet: bool,
) -> anyhow::Result<Baseline> {
    let recorder = Arc::new(Recorder::new());
    let kassa = Kassa::new(base, recorder.clone())?;
    let plan = Plan {
        load: Load::Closed { concurrency },
        duration: Some(length),
        count: None,
        max_in_flight: concurrency,
    };
    let progress = Progress {
        label: "baseline",
        op: Op::Healthz,
        recorder: recorder.clone(),
        quiet,
    };
    let started = Instant::now();
    let elapsed = driver::drive(plan, progress, move |_, start| {
        let kassa = kassa.clone();
        async move {
            let request = kassa.http.get(kassa.url("/healthz"));
            kassa
                .call(Some(Op::Healthz), start, request, &[client::OK])
                .await;
            kassa.recorder.iteration_done();
        }
    })
    .await;
    let report = recorder.report(elapsed);
    let healthz = report
        .first()
        .context("the baseline made no request")?
        .clone();
    Ok(Baseline {
        endpoint: "GET /healthz",
        concurrency,
        seconds: started.elapsed().as_secs_f64(),
        per_second: healthz.expected_per_second,
        p99_ms: healthz.latency_ms.p99,
        errors: healthz.unexpected,
    })
}

#[cfg(test)]
mod tests {
    use super::growth_by_label;

    #[test]
    fn growth_is_summed_per_label_value_over_the_other_labels_and_idle_values_left_out() {
        let before = "kassa_store_lwt_total{table=\"carts\",outcome=\"applied\"} 10\n\
                      kassa_store_lwt_total{table=\"orders\",outcome=\"applied\"} 4\n";
        let after = "# TYPE kassa_store_lwt_total counter\n\
                     kassa_store_lwt_total{table=\"carts\",outcome=\"applied\"} 25\n\
                     kassa_store_lwt_total{table=\"carts\",outcome=\"not_applied\"} 2\n\
                     kassa_store_lwt_total{table=\"orders\",outcome=\"applied\"} 4\n\
                     kassa_store_lwt_total{table=\"outbox\",outcome=\"applied\"} 7\n\
                     kassa_store_statements_total{kind=\"lwt\"} 38\n";
        assert_eq!(
            growth_by_label(after, before, "kassa_store_lwt_total{", "table"),
            vec![("carts".to_owned(), 17.0), ("outbox".to_owned(), 7.0)]
        );
        assert!(growth_by_label(after, before, "kassa_store_lwt_total{", "op").is_empty());
        let requests = "kassa_store_request_seconds_count{store=\"scylla\",op=\"carts\"} 9\n\
                        kassa_store_request_seconds_count{shop=\"x\",op=\"stock\"} 4\n";
        assert_eq!(
            growth_by_label(requests, "", "kassa_store_request_seconds_count{", "op"),
            vec![("carts".to_owned(), 9.0), ("stock".to_owned(), 4.0)]
        );
    }
}
