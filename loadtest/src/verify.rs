//! The invariants of DESIGN.md, checked through the public API after a run: every order
//! answered 200 exists; every order settles as the run drove it (paid -> `processing`,
//! declined -> `failed`, with no step the run did not cause); no SKU is oversold; stock is
//! conserved (available = initial - sold - still held); every paid order got its email.
//! The arithmetic is pure (`check_stock`) so that it is tested on its own.

use crate::client::Kassa;
use anyhow::Context as _;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the run expects of one order it got a 200 for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Must end in this status.
    Status(&'static str),
    /// Must end in one of these (an abandoned order: still pending, or expired).
    OneOf(&'static [&'static str]),
    /// Must end in this status with exactly this history (a webhook storm: duplicates and
    /// forgeries left no trace).
    History(&'static [&'static str]),
    /// The run cannot tell (its decision never got an answer).
    Anything,
}

impl Expect {
    fn met_by(&self, status: &str, history: &[String]) -> bool {
        match self {
            Self::Status(s) => status == *s,
            Self::OneOf(set) => set.contains(&status),
            Self::History(h) => {
                h.last().is_some_and(|last| *last == status)
                    && history.iter().map(String::as_str).eq(h.iter().copied())
            }
            Self::Anything => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Status(s) => (*s).to_string(),
            Self::OneOf(set) => set.join(" or "),
            Self::History(h) => format!("history {}", h.join(" -> ")),
            Self::Anything => "anything".into(),
        }
    }
}

/// What a run did that the checks need: the stock it put, the users it acted as, the orders
/// it got a 200 for and what it expects of them.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<LedgerInner>,
}

#[derive(Default)]
struct LedgerInner {
    initial: BTreeMap<String, i64>,
    users: BTreeMap<String, String>,
    orders: BTreeMap<String, (String, Expect)>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn product(&self, sku: &str, stock: i64) {
        self.lock().initial.insert(sku.to_string(), stock);
    }

    /// A user the run acted as, with its token (for listing its orders).
    pub fn user(&self, sub: &str, token: &str) {
        self.lock().users.insert(sub.to_string(), token.to_string());
    }

    pub fn order(&self, order_id: &str, user: &str, expect: Expect) {
        self.lock()
            .orders
            .insert(order_id.to_string(), (user.to_string(), expect));
    }

    pub fn set_expectation(&self, order_id: &str, expect: Expect) {
        if let Some(entry) = self.lock().orders.get_mut(order_id) {
            entry.1 = expect;
        }
    }

    pub fn orders_placed(&self) -> usize {
        self.lock().orders.len()
    }
}

/// One order as `GET /api/orders` lists it.
#[derive(Debug, Clone)]
pub struct SeenOrder {
    pub id: String,
    pub status: String,
    pub items: Vec<(String, i64)>,
    pub history: Vec<String>,
}

/// A SKU's figures for the stock invariants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockFigures {
    pub initial: i64,
    /// Units in `processing` orders.
    pub sold: i64,
    /// Units in `pending_payment` orders (reserved).
    pub held: i64,
    /// What `GET /api/products/{sku}` says.
    pub available: i64,
}

/// Never oversold and conservation, for one SKU; answers the violations.
pub fn check_stock(sku: &str, f: StockFigures) -> Vec<String> {
    let mut violations = Vec::new();
    if f.sold + f.held > f.initial {
        violations.push(format!(
            "{sku} oversold: {} sold + {} reserved > {} ever added",
            f.sold, f.held, f.initial
        ));
    }
    let expected = (f.initial - f.sold - f.held).max(0);
    if f.available != expected {
        violations.push(format!(
            "{sku} stock not conserved: available {} but initial {} - sold {} - reserved {} = {expected}",
            f.available, f.initial, f.sold, f.held
        ));
    }
    violations
}

/// Tallies sold and held units per SKU over every listed order.
pub fn tally(orders: &[SeenOrder]) -> HashMap<String, (i64, i64)> {
    let mut per_sku: HashMap<String, (i64, i64)> = HashMap::new();
    for order in orders {
        for (sku, qty) in &order.items {
            let entry = per_sku.entry(sku.clone()).or_default();
            match order.status.as_str() {
                "processing" => entry.0 += qty,
                "pending_payment" => entry.1 += qty,
                _ => {}
            }
        }
    }
    per_sku
}

pub struct Outcome {
    pub passed: Vec<String>,
    pub violations: Vec<String>,
    /// Copies beyond the first of paid orders' emails, when the mail check ran (only a
    /// real SMTP sink keeps copies apart: a dev mail file is replaced by its resend).
    pub duplicate_emails: Option<u64>,
}

/// Runs every check; waits up to `settle` for webhooks and emails still on their way.
pub async fn verify(
    kassa: &Kassa,
    ledger: &Ledger,
    settle: Duration,
    mail_dir: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let (initial, users, expected) = {
        let inner = ledger.lock();
        (
            inner.initial.clone(),
            inner.users.clone(),
            inner.orders.clone(),
        )
    };
    let mut passed = Vec::new();
    let mut violations = Vec::new();
    let deadline = Instant::now() + settle;

    // Orders settle asynchronously (the sandbox delivers webhooks): poll until every
    // expectation holds or the deadline passes.
    let orders = loop {
        let orders = list_all(kassa, &users).await?;
        let unmet = unmet(&orders, &expected);
        if unmet.is_empty() || Instant::now() >= deadline {
            break orders;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let problems = unmet(&orders, &expected);
    if problems.is_empty() {
        passed.push(format!(
            "all {} orders answered 200 exist and settled as driven",
            expected.len()
        ));
    }
    violations.extend(problems);

    let tallies = tally(&orders);
    let mut stock_violations = Vec::new();
    for (sku, initial) in &initial {
        let answer = kassa
            .get_json(&format!("/api/products/{sku}"), None)
            .await?;
        anyhow::ensure!(
            answer.is(200),
            "GET /api/products/{sku} answered {}",
            answer.status
        );
        let available = answer
            .body
            .get("available")
            .and_then(Value::as_i64)
            .context("product without `available`")?;
        let (sold, held) = tallies.get(sku).copied().unwrap_or_default();
        stock_violations.extend(check_stock(
            sku,
            StockFigures {
                initial: *initial,
                sold,
                held,
                available,
            },
        ));
    }
    if stock_violations.is_empty() {
        let sold: i64 = tallies.values().map(|t| t.0).sum();
        passed.push(format!(
            "{} SKUs never oversold and stock conserved ({sold} units sold)",
            initial.len()
        ));
    }
    violations.extend(stock_violations);

    let mut duplicate_emails = None;
    if let Some(dir) = mail_dir {
        let paid: BTreeSet<&str> = orders
            .iter()
            .filter(|o| o.status == "processing")
            .map(|o| o.id.as_str())
            .collect();
        let copies = loop {
            let copies = emails_per_order(dir, &paid);
            let all_there = copies.values().all(|n| *n > 0);
            if all_there || Instant::now() >= deadline {
                break copies;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let missing: Vec<&str> = copies
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| *id)
            .collect();
        if missing.is_empty() {
            passed.push(format!(
                "all {} paid orders have an email in {}",
                paid.len(),
                dir.display()
            ));
        }
        for id in missing.iter().take(20) {
            violations.push(format!("paid order {id} has no email in {}", dir.display()));
        }
        if missing.len() > 20 {
            violations.push(format!("... and {} more without email", missing.len() - 20));
        }
        duplicate_emails = Some(copies.values().map(|n| n.saturating_sub(1) as u64).sum());
    }
    Ok(Outcome {
        passed,
        violations,
        duplicate_emails,
    })
}

fn unmet(orders: &[SeenOrder], expected: &BTreeMap<String, (String, Expect)>) -> Vec<String> {
    let by_id: HashMap<&str, &SeenOrder> = orders.iter().map(|o| (o.id.as_str(), o)).collect();
    let mut problems = Vec::new();
    for (id, (user, expect)) in expected {
        match by_id.get(id.as_str()) {
            None => problems.push(format!(
                "order {id} of {user} was answered 200 but does not exist"
            )),
            Some(o) if !expect.met_by(&o.status, &o.history) => problems.push(format!(
                "order {id} is {} (history {}), expected {}",
                o.status,
                o.history.join(" -> "),
                expect.describe()
            )),
            Some(_) => {}
        }
    }
    problems
}

/// Every order of every user, through `GET /api/orders` page by page.
async fn list_all(
    kassa: &Kassa,
    users: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<SeenOrder>> {
    use futures_util::StreamExt;
    let pages = futures_util::stream::iter(users.iter().map(|(sub, token)| async move {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/orders?limit=100&cursor={c}"),
                None => "/api/orders?limit=100".to_string(),
            };
            let answer = kassa.get_json(&path, Some(token)).await?;
            anyhow::ensure!(
                answer.is(200),
                "listing the orders of {sub}: {} {}",
                answer.status,
                answer.code
            );
            for o in answer
                .body
                .get("orders")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                orders.push(parse_order(o)?);
            }
            cursor = answer
                .body
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_string);
            if cursor.is_none() {
                return Ok(orders);
            }
        }
    }))
    .buffer_unordered(16)
    .collect::<Vec<anyhow::Result<Vec<SeenOrder>>>>()
    .await;
    let mut all = Vec::new();
    for page in pages {
        all.extend(page?);
    }
    Ok(all)
}

fn parse_order(o: &Value) -> anyhow::Result<SeenOrder> {
    let text = |v: &Value, f: &str| {
        v.get(f)
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("order without `{f}`: {v}"))
    };
    let items = o
        .get("items")
        .and_then(Value::as_array)
        .context("order without items")?
        .iter()
        .map(|i| {
            Ok((
                text(i, "sku")?,
                i.get("quantity")
                    .and_then(Value::as_i64)
                    .context("item without quantity")?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let history = o
        .get("history")
        .and_then(Value::as_array)
        .context("order without history")?
        .iter()
        .map(|h| text(h, "status"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(SeenOrder {
        id: text(o, "orderId")?,
        status: text(o, "status")?,
        items,
        history,
    })
}

/// How many files in `dir` name each paid order, in their file name or their text (dev
/// mail files are `<order>.<kind>.eml`; an SMTP sink's files carry the order id in the
/// Message-ID and the links).
fn emails_per_order<'a>(dir: &Path, paid: &BTreeSet<&'a str>) -> BTreeMap<&'a str, usize> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let mut text = entry.file_name().to_string_lossy().into_owned();
            text.push('\n');
            text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            files.push(text);
        }
    }
    paid.iter()
        .map(|id| (*id, files.iter().filter(|f| f.contains(id)).count()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(initial: i64, sold: i64, held: i64, available: i64) -> StockFigures {
        StockFigures {
            initial,
            sold,
            held,
            available,
        }
    }

    #[test]
    fn a_sku_sold_beyond_its_stock_is_a_violation() {
        let v = check_stock("tee", figures(10, 9, 2, 0));
        assert!(v.iter().any(|v| v.contains("oversold")), "{v:?}");
    }

    #[test]
    fn stock_that_went_missing_is_a_violation() {
        let v = check_stock("tee", figures(10, 3, 2, 4));
        assert!(v.iter().any(|v| v.contains("not conserved")), "{v:?}");
        assert!(check_stock("tee", figures(10, 3, 2, 5)).is_empty());
    }

    #[test]
    fn only_processing_sells_and_only_pending_holds() {
        let order = |status: &str, qty| SeenOrder {
            id: "o".into(),
            status: status.into(),
            items: vec![("tee".into(), qty)],
            history: vec![],
        };
        let t = tally(&[
            order("processing", 2),
            order("pending_payment", 3),
            order("failed", 5),
            order("expired", 7),
            order("refund_pending", 11),
        ]);
        assert_eq!(t["tee"], (2, 3));
    }

    #[test]
    fn a_storm_order_with_an_extra_step_in_its_history_is_unmet() {
        let expect = Expect::History(&["pending_payment", "processing"]);
        let ok = ["pending_payment", "processing"].map(String::from);
        let detour = ["pending_payment", "failed", "processing"].map(String::from);
        assert!(expect.met_by("processing", &ok));
        assert!(!expect.met_by("processing", &detour));
    }
}
