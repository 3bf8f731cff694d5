//! The scenarios and what they share: the run's context (client, token minter, ledger, the
//! run's unique name prefix) and the storefront steps every scenario is made of.

pub mod flash_sale;
pub mod sku_touch;
pub mod storefront;
pub mod webhook_storm;

use crate::Options;
use crate::client::{Answer, Expect, Kassa, Minter, OK};
use crate::stats::{Op, Recorder};
use crate::verify::Ledger;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Setup steps run this many requests at once (they are not measured).
pub const SETUP_CONCURRENCY: usize = 32;

pub struct Ctx {
    pub opts: Options,
    pub kassa: Kassa,
    pub minter: Minter,
    pub webhook_secret: String,
    pub ledger: Arc<Ledger>,
    /// Unique per run, so SKUs and users never collide with an earlier run's.
    pub prefix: String,
    pub recorder: Arc<Recorder>,
    /// Kassa's /metrics text when the measured part began and ended.
    pub window: Mutex<(Option<String>, Option<String>)>,
    /// This machine's CPU counters when the measured part began and ended.
    pub cpu: Mutex<(Option<CpuSample>, Option<CpuSample>)>,
}

/// CPU time so far, from /proc: the whole machine's busy time and this process's own.
/// Kassa's comes from its `process_cpu_seconds_total`; what is left is the rest of the
/// machine (the database, on one box).
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: std::time::Instant,
    machine_busy_seconds: f64,
    own_seconds: f64,
}

/// Linux reports /proc times in USER_HZ ticks, 100 a second on every mainstream build.
const USER_HZ: f64 = 100.0;

impl CpuSample {
    /// `None` off Linux or when /proc cannot be read.
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<f64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
        let busy: f64 = cpu
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| v)
            .sum();
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command's closing parenthesis; utime and stime are the 14th and
        // 15th of the line, the 12th and 13th after it.
        let after = own.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some(Self {
            at: std::time::Instant::now(),
            machine_busy_seconds: busy / USER_HZ,
            own_seconds: (utime + stime) / USER_HZ,
        })
    }
}

/// What a scenario measured, besides the recorder's per-operation figures.
pub struct Measured {
    pub elapsed: Duration,
    /// The operation compared with the baseline.
    pub primary: Op,
    pub figures: BTreeMap<String, f64>,
    /// Scenario-specific checks (the generic ones run after every scenario).
    pub passed: Vec<String>,
    pub violations: Vec<String>,
}

impl Ctx {
    /// Marks the start of the measured part (after setup).
    pub async fn begin_window(&self) {
        let text = scrape(&self.kassa).await;
        self.window.lock().unwrap_or_else(|e| e.into_inner()).0 = text;
        self.cpu.lock().unwrap_or_else(|e| e.into_inner()).0 = CpuSample::now();
    }

    /// Marks its end.
    pub async fn end_window(&self) {
        self.cpu.lock().unwrap_or_else(|e| e.into_inner()).1 = CpuSample::now();
        let text = scrape(&self.kassa).await;
        self.window.lock().unwrap_or_else(|e| e.into_inner()).1 = text;
    }

    /// Where the machine's cores went over the measured part, in cores (1.0 = one core
    /// busy throughout): Kassa, this load generator, and the rest (the database, when it
    /// runs here). Only meaningful when Kassa runs on this machine.
    pub fn cpu_figures(&self) -> Vec<(String, f64)> {
        let (Some(begin), Some(end)) = *self.cpu.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Vec::new();
        };
        let seconds = (end.at - begin.at).as_secs_f64();
        if seconds <= 0.0 {
            return Vec::new();
        }
        let machine = (end.machine_busy_seconds - begin.machine_busy_seconds) / seconds;
        let own = (end.own_seconds - begin.own_seconds) / seconds;
        let mut figures = vec![
            ("cpu_machine_busy_cores".to_string(), machine),
            ("cpu_loadtest_cores".to_string(), own),
        ];
        let window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(before), Some(after)) = (&window.0, &window.1) {
            let kassa = (counter_sum(after, "process_cpu_seconds_total", "")
                - counter_sum(before, "process_cpu_seconds_total", ""))
                / seconds;
            figures.push(("cpu_kassa_cores".to_string(), kassa));
            figures.push((
                "cpu_rest_cores".to_string(),
                (machine - own - kassa).max(0.0),
            ));
        }
        figures
    }

    /// How much a histogram's `_sum` and `_count` grew over the measured part.
    pub fn window_delta(&self, name: &str) -> Option<(f64, f64)> {
        let window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(before), Some(after)) = (&window.0, &window.1) else {
            return None;
        };
        let (s0, c0) = sum_count(before, name);
        let (s1, c1) = sum_count(after, name);
        (c1 > c0).then_some((s1 - s0, c1 - c0))
    }

    pub fn admin(&self) -> anyhow::Result<String> {
        self.minter.token(&format!("{}-admin", self.prefix), true)
    }

    /// A shopper's id and token, registered in the ledger.
    pub fn shopper(&self, name: &str) -> anyhow::Result<(String, String)> {
        let sub = format!("{}-{name}", self.prefix);
        let token = self.minter.token(&sub, false)?;
        self.ledger.user(&sub, &token);
        Ok((sub, token))
    }

    pub async fn put_product(
        &self,
        admin: &str,
        sku: &str,
        price: i64,
        stock: i64,
    ) -> anyhow::Result<()> {
        let request = self
            .kassa
            .http
            .put(self.kassa.url(&format!("/api/admin/products/{sku}")))
            .bearer_auth(admin)
            .json(&json!({"name": format!("Load test {sku}"), "price": price, "currency": "EUR", "stock": stock}));
        let answer = self.kassa.call(None, Instant::now(), request, &[]).await;
        anyhow::ensure!(
            answer.is(200),
            "PUT product {sku}: {} {}",
            answer.status,
            answer.code
        );
        self.ledger.product(sku, stock);
        Ok(())
    }

    /// POST /api/carts; the cart id on 201.
    pub async fn create_cart(&self, op: Option<Op>, start: Instant, token: &str) -> Option<String> {
        let request = self
            .kassa
            .http
            .post(self.kassa.url("/api/carts"))
            .bearer_auth(token);
        let answer = self
            .kassa
            .call(op, start, request, &[Expect(201, None)])
            .await;
        answer
            .is(201)
            .then(|| answer.str("cartId").map(str::to_string))?
    }

    pub async fn set_item(
        &self,
        op: Option<Op>,
        start: Instant,
        token: &str,
        cart: &str,
        sku: &str,
        quantity: i64,
    ) -> bool {
        let request = self
            .kassa
            .http
            .put(self.kassa.url(&format!("/api/carts/{cart}/items/{sku}")))
            .bearer_auth(token)
            .json(&json!({ "quantity": quantity }));
        self.kassa.call(op, start, request, &[OK]).await.is(200)
    }

    /// POST /api/orders; a 409 `cart_conflict` (sold out, price changed) is expected. When
    /// interrupted requests are retried, it carries an Idempotency-Key, so that a retry after
    /// a crash cannot place a second order (without retries it does not: the key is a durable
    /// write of its own, and the figures stay comparable with earlier runs).
    pub async fn checkout(
        &self,
        op: Option<Op>,
        start: Instant,
        token: &str,
        cart: &str,
    ) -> Answer {
        let mut request = self
            .kassa
            .http
            .post(self.kassa.url("/api/orders"))
            .bearer_auth(token);
        if self.kassa.retries() {
            request = request.header(
                "idempotency-key",
                format!("lt-{:032x}", rand::random::<u128>()),
            );
        }
        let request = request
            .json(&json!({
                "cartId": cart,
                "shippingDetails": {"name": "Load Tester", "line1": "1 Bench St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
                "paymentMethod": "card",
            }));
        self.kassa
            .call(
                op,
                start,
                request,
                &[OK, Expect(409, Some("cart_conflict"))],
            )
            .await
    }

    /// Decides the payment at the sandbox's hosted page (the scripted JSON way).
    pub async fn decide(
        &self,
        op: Option<Op>,
        start: Instant,
        payment_url: &str,
        success: bool,
    ) -> bool {
        let outcome = if success { "success" } else { "failure" };
        let request = self
            .kassa
            .http
            .post(payment_url)
            .json(&json!({ "outcome": outcome }));
        self.kassa.call(op, start, request, &[OK]).await.is(200)
    }

    /// `count` copies of `f(i)` run `SETUP_CONCURRENCY` at a time; the first error stops it.
    pub async fn setup<T, F, Fut>(&self, count: usize, f: F) -> anyhow::Result<Vec<T>>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        use futures_util::StreamExt;
        let results: Vec<anyhow::Result<T>> = futures_util::stream::iter((0..count).map(f))
            .buffered(SETUP_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

/// Kassa's Prometheus text.
pub async fn scrape(kassa: &Kassa) -> Option<String> {
    kassa
        .http
        .get(kassa.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// A histogram's `_sum` and `_count`, summed over its label sets.
pub fn sum_count(text: &str, name: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        let series = format!("{name}{suffix}");
        text.lines()
            .filter(|l| {
                l.strip_prefix(&series)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (value("_sum"), value("_count"))
}

/// A counter's value summed over its label sets that contain `label` (`kind="lwt"`); 0
/// when it has none yet.
pub fn counter_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A gauge's value (summed over its label sets matching `labels`).
pub async fn metric_gauge(kassa: &Kassa, name: &str, labels: &str) -> Option<f64> {
    let text = scrape(kassa).await?;
    let found: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!found.is_empty()).then(|| found.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::CpuSample;

    #[test]
    fn cpu_samples_read_this_machine_and_this_process() {
        let before = CpuSample::now().expect("/proc/stat and /proc/self/stat parse");
        // Burn some CPU of our own so the process's time must move.
        let mut x = 0u64;
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = CpuSample::now().expect("parse again");
        let own = after.own_seconds - before.own_seconds;
        let machine = after.machine_busy_seconds - before.machine_busy_seconds;
        assert!(own >= 0.05, "own CPU grew by {own} s over a 200 ms spin");
        assert!(
            machine >= own * 0.5,
            "machine busy {machine} s, own {own} s"
        );
    }
}
