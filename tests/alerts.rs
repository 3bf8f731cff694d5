//! The alerting rules and the dashboard the Helm chart ships, against a real Prometheus
//! scraping a real Kassa: every counter they read exists at 0 from start-up (so `increase()`
//! sees a process's first event), one paid order whose reservation is missing fires the
//! oversell page, and every dashboard query draws its series. Its own test binary, so no
//! other test moves the process-wide counters.

use kassa_actors::domain::{OrderId, Sku};
use kassa_actors::store::{ProductRow, ProductWrite, WriteOutcome};
use kassa_testkit::app::{TestApp, sample, spawn_app};
use kassa_testkit::prometheus::start_prometheus;
use kassa_testkit::records::product_write;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/helm/kassa/files/kassa-rules.yml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/helm/kassa/files/kassa-dashboard.json"
);

/// The dashboard's panels: title and the expressions of its targets.
fn dashboard_panels() -> Vec<(String, Vec<String>)> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("read")).expect("json");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|panel| {
            let exprs = panel["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(|t| t["expr"].as_str().expect("expr").to_string())
                .collect();
            (panel["title"].as_str().expect("title").to_string(), exprs)
        })
        .collect()
}

/// Every `kassa_*_total` counter named in `text`.
fn counters_named_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("kassa_") && word.ends_with("_total"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn has_series(scrape: &str, series: &str) -> bool {
    scrape.lines().any(|line| {
        line.strip_prefix(series)
            .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
    })
}

#[actix_web::test]
async fn every_counter_the_rules_and_dashboard_read_exists_at_zero_from_start_up() {
    let app = spawn_app().await;
    // The request counter's labels are the request's route: it exists once one was served.
    app.client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    let scrape = app.scrape().await;

    let mut read = std::fs::read_to_string(RULES).expect("rules");
    for (_, exprs) in dashboard_panels() {
        read.push_str(&exprs.join("\n"));
    }
    let counters = counters_named_in(&read);
    assert!(counters.len() >= 8, "{counters:?}");
    let missing: Vec<&String> = counters
        .iter()
        .filter(|name| !has_series(&scrape, name))
        .collect();
    assert!(
        missing.is_empty(),
        "not exported before their first event: {missing:?}"
    );
    // With the label values the alerts and panels break them down by.
    for series in [
        "kassa_commit_without_reservation_total",
        "kassa_reservation_conflicts_total",
        r#"kassa_store_conflicts_total{entity="product"}"#,
        r#"kassa_store_conflicts_total{entity="cart"}"#,
        r#"kassa_store_conflicts_total{entity="order"}"#,
        r#"kassa_contended_total{entity="product"}"#,
        r#"kassa_contended_total{entity="cart"}"#,
        r#"kassa_contended_total{entity="order"}"#,
        r#"kassa_actor_ask_overloaded_total{kind="product"}"#,
        r#"kassa_actor_ask_overloaded_total{kind="cart"}"#,
        r#"kassa_actor_ask_overloaded_total{kind="order"}"#,
        r#"kassa_checkouts_total{outcome="gateway_error"}"#,
        r#"kassa_webhooks_total{outcome="bad_signature"}"#,
        r#"kassa_order_transitions_total{from="pending_payment",to="processing"}"#,
    ] {
        assert!(
            has_series(&scrape, series),
            "{series} missing from:\n{scrape}"
        );
    }
    for kind in ["transient", "permanent"] {
        assert!(
            scrape
                .lines()
                .any(|l| l.starts_with("kassa_email_send_failures_total{")
                    && l.contains(&format!("kind=\"{kind}\""))),
            "no {kind} email failure series in:\n{scrape}"
        );
    }
    app.stop().await;
}

/// Deletes the order's reservation of `sku` in the store, behind the product actor
/// (passivated first, so the next command reloads the SKU without it).
async fn lose_reservation(app: &TestApp, sku: &str, order_id: &str) {
    app.passivate_everything().await;
    let store = app.state().store.clone();
    let sku = Sku::parse(sku).expect("sku");
    let snapshot = store
        .load_product(&sku)
        .await
        .expect("load")
        .expect("stored");
    let row = snapshot.row;
    let outcome = store
        .write_product(ProductWrite {
            remove_reservations: vec![OrderId::parse(order_id).expect("order id")],
            ..product_write(
                &sku,
                row.version,
                ProductRow {
                    version: row.version + 1,
                    ..row
                },
            )
        })
        .await
        .expect("write");
    assert_eq!(outcome, WriteOutcome::Applied);
}

#[actix_web::test]
async fn one_paid_order_without_a_reservation_fires_the_oversell_alert() {
    let app = spawn_app().await;
    let rules = Path::new(RULES);
    let prometheus = start_prometheus(app.port(), &[rules]);
    let client = reqwest::Client::new();
    // Prometheus has the counter at 0 before the event: the event is an increase.
    prometheus
        .wait_for_value(&client, "kassa_commit_without_reservation_total", 0.0)
        .await;

    app.put_product("tee", 1999, "EUR", 3).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let checkout = app.place_order(&alice, &cart).await;
    let order_id = checkout["orderId"].as_str().expect("orderId");
    lose_reservation(&app, "tee", order_id).await;
    app.decide(&checkout, "success").await;
    app.wait_for_status(&alice, order_id, "processing").await;
    assert_eq!(
        sample(
            &app.scrape().await,
            "kassa_commit_without_reservation_total"
        ),
        1.0
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut alerts = Vec::new();
    loop {
        if alerts.iter().any(|a: &Value| {
            a["labels"]["alertname"] == "KassaPaidWithoutReservation" && a["state"] == "firing"
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "KassaPaidWithoutReservation never fired; alerts: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        alerts = prometheus.alerts(&client).await;
    }

    // Every dashboard query draws something after this run; the outbox panel both its series.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (title, exprs) in dashboard_panels() {
        loop {
            let mut series = 0;
            let mut empty = Vec::new();
            for expr in &exprs {
                let result = prometheus.query(&client, expr).await;
                if result.is_empty() {
                    empty.push(expr.clone());
                }
                series += result.len();
            }
            let enough = title != "Outbox depth and oldest unsent" || series == 2;
            if empty.is_empty() && enough {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "panel `{title}` draws {series} series; empty queries: {empty:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    app.stop().await;
}
