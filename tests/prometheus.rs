//! A real Prometheus scrapes Kassa during a short checkout run, and its HTTP API reports the
//! counters the run produced. `promtool` lints /metrics and the alerting rules. Its own test
//! binary, so the process-wide counters hold only this run.
//! Prometheus comes from Debian's `prometheus` package (scripts/test installs it).

// The API suite's helpers; this binary uses only some of them.
#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use helpers::{json_of, spawn_app};
use reqwest::StatusCode;
use serde_json::Value;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(name: &str) -> String {
    let found = Command::new("which")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is not installed: run scripts/test, which installs Debian's prometheus package"
    );
    name.to_string()
}

fn start_prometheus(kassa_port: u16) -> Prometheus {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: kassa\n    static_configs:\n      - targets: ['127.0.0.1:{kassa_port}']\n"
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write config");
    let child = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// The single value of an instant query, once Prometheus has one equal to `want`.
async fn wait_for_value(client: &reqwest::Client, prometheus: &str, query: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let url = reqwest::Url::parse_with_params(
            &format!("{prometheus}/api/v1/query"),
            &[("query", query)],
        )
        .expect("query url");
        if let Ok(response) = client.get(url).send().await
            && let Ok(body) = response.json::<Value>().await
        {
            let value = body["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok());
            if value == Some(want) {
                return;
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Prometheus never answered {want} for `{query}`; last answer: {last}");
}

#[actix_web::test]
async fn a_real_prometheus_scrapes_the_checkout_counters_the_run_produced() {
    let app = spawn_app().await;
    let port: u16 = app
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let prometheus = start_prometheus(port);

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
    wait_for_value(&client, &prometheus.url, "up{job=\"kassa\"}", 1.0).await;
    wait_for_value(
        &client,
        &prometheus.url,
        "sum(kassa_checkouts_total{outcome=\"placed\"})",
        f64::from(placed),
    )
    .await;
    wait_for_value(
        &client,
        &prometheus.url,
        "sum(kassa_checkouts_total{outcome=\"conflict\"})",
        f64::from(conflicts),
    )
    .await;
    wait_for_value(
        &client,
        &prometheus.url,
        "sum(kassa_http_requests_total{route=\"/api/orders\",method=\"POST\",status=\"2xx\"})",
        f64::from(placed),
    )
    .await;
    wait_for_value(
        &client,
        &prometheus.url,
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
