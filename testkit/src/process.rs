//! Kassa (or the sandbox) as a child process in a test: killed when dropped, on a free
//! loopback port, waited for until ready.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped (a failed test leaves nothing running).
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with no input and its output in the file `log`, for reading after a
/// failure.
pub fn spawn_logged(command: &mut Command, log: &Path) -> Process {
    let log = std::fs::File::create(log).expect("log");
    Process(
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn"),
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits (at most 30 s) until `base`/readyz answers 200.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == reqwest::StatusCode::OK
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kassa at {base} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client (30 s per request) for the Kassa at `base`, once it is ready.
pub async fn ready_client(base: &str) -> reqwest::Client {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    wait_ready(&client, base).await;
    client
}
