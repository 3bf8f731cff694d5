//! A real Prometheus scrapes Kassa during a short checkout run, and its HTTP API reports the
//! counters the run produced. `promtool` lints /metrics and the alerting rules. Its own test
//! binary, so the process-wide counters hold only this run.
//! Prometheus comes from Debian's `prometheus` package (scripts/test installs it).

use kassa_testkit::app::{json_of, spawn_app};
use kassa_testkit::prometheus::{start_prometheus, tool};
use reqwest::StatusCode;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

#[actix_web::test]
async fn a_real_prometheus_scrapes_the_checkout_counters_the_run_produced() {
    let app = spawn_app().await;
    let port: u16 = app
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let prometheus = start_prometheus(port, &[]);

    app.put_product("tee", 1999, "EUR", 3).await;
    let mut placed = 0;
    let mut conflicts = 0;
    for shopper in 0..5 {
        let (token, cart) = app.cart_with(&format!("p-{shopper}"), "tee", 1).await;
        let (status, body) = json_of(app.checkout(&token, &cart, None).await).await;
        match status {
            StatusCode::OK => {
                placed += 1;
                app.decide(&body, "success").await;
                app.wait_for_status(&token, body["orderId"].as_str().expect("id"), "processing")
                    .await;
            }
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((placed, conflicts), (3, 2));

    let client = reqwest::Client::new();
    prometheus
        .wait_for_value(&client, "up{job=\"kassa\"}", 1.0)
        .await;
    prometheus
        .wait_for_value(
            &client,
            "sum(kassa_checkouts_total{outcome=\"placed\"})",
            f64::from(placed),
        )
        .await;
    prometheus
        .wait_for_value(
            &client,
            "sum(kassa_checkouts_total{outcome=\"conflict\"})",
            f64::from(conflicts),
        )
        .await;
    prometheus
        .wait_for_value(
            &client,
            "sum(kassa_http_requests_total{route=\"/api/orders\",method=\"POST\",status=\"2xx\"})",
            f64::from(placed),
        )
        .await;
    prometheus
        .wait_for_value(
            &client,
            "sum(kassa_order_transitions_total{from=\"pending_payment\",to=\"processing\"})",
            f64::from(placed),
        )
        .await;

    // promtool lints what /metrics serves.
    let metrics = app.scrape().await;
    let mut promtool = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write metrics");
    let out = promtool.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}

#[test]
fn the_alerting_rules_pass_promtool() {
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/helm/kassa/files/kassa-rules.yml"
    );
    let out = Command::new(tool("promtool"))
        .args(["check", "rules", rules])
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dashboard_is_valid_json_with_panels() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/helm/kassa/files/kassa-dashboard.json"
    );
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for panel in panels {
        let expr = panel["targets"][0]["expr"].as_str().expect("expr");
        assert!(expr.contains("kassa_"), "{expr}");
    }
}
