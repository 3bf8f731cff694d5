//! A real Prometheus for tests: Debian's `prometheus` package (scripts/test installs it),
//! scraping one Kassa every second and evaluating the given rule files every second, on a
//! temporary data dir; killed when dropped. Queries go through its HTTP API.

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command `name`, which must be installed.
pub fn tool(name: &str) -> String {
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

/// Prometheus scraping Kassa on `kassa_port`, evaluating `rule_files`.
pub fn start_prometheus(kassa_port: u16, rule_files: &[&Path]) -> Prometheus {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let rules: String = rule_files
        .iter()
        .map(|f| format!("  - '{}'\n", f.display()))
        .collect();
    let rules = if rules.is_empty() {
        String::new()
    } else {
        format!("rule_files:\n{rules}")
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rules}scrape_configs:\n  - job_name: kassa\n    static_configs:\n      - targets: ['127.0.0.1:{kassa_port}']\n"
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

impl Prometheus {
    /// The result vector of an instant query (empty while Prometheus is not up yet).
    pub async fn query(&self, client: &reqwest::Client, query: &str) -> Vec<Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", query)],
        )
        .expect("query url");
        let Ok(response) = client.get(url).send().await else {
            return Vec::new();
        };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the single value of an instant query equals `want`.
    pub async fn wait_for_value(&self, client: &reqwest::Client, query: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = Vec::new();
        while Instant::now() < deadline {
            let result = self.query(client, query).await;
            let value = result
                .first()
                .and_then(|r| r["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok());
            if value == Some(want) {
                return;
            }
            last = result;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("Prometheus never answered {want} for `{query}`; last answer: {last:?}");
    }

    /// The alerts Prometheus holds now (pending or firing), as /api/v1/alerts lists them.
    pub async fn alerts(&self, client: &reqwest::Client) -> Vec<Value> {
        let Ok(response) = client
            .get(format!("{}/api/v1/alerts", self.url))
            .send()
            .await
        else {
            return Vec::new();
        };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}
