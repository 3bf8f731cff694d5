//! `kassa serve` as a process facing what its surroundings do wrong: a log reader that stalls
//! or goes away must not keep SIGTERM from stopping it.

use reqwest::StatusCode;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped (a failed test leaves nothing running).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `kassa serve` on `port` with development secrets in `data_dir`, logging at `log`, no
/// shutdown delay; its output is the caller's to direct.
fn serve(data_dir: &Path, port: u16, log: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kassa"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KASSA_DATA_DIR", data_dir)
        .env(
            "KASSA_STORE",
            format!("embedded:{}", data_dir.join("store").display()),
        )
        .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
        .env("KASSA_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("KASSA_LOG", log)
        .env("KASSA_SHUTDOWN_DELAY", "0s")
        .current_dir(data_dir);
    command
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == StatusCode::OK
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

/// Sends SIGTERM and waits for the exit, at most `within`.
async fn terminate(server: &mut Process, within: Duration) -> ExitStatus {
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    loop {
        if let Some(exit) = server.0.try_wait().expect("wait") {
            return exit;
        }
        assert!(
            signalled.elapsed() < within,
            "still running {within:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests that each log a few debug lines: enough to fill a pipe several times over. Every
/// one must be answered at once, whatever became of the log output.
async fn log_a_lot(client: &reqwest::Client, base: &str) {
    for i in 0..1_500 {
        let response = client
            .get(format!("{base}/api/products/sku-{i}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} not answered: {e}"));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client")
}

#[tokio::test]
async fn sigterm_stops_it_while_nobody_reads_its_log_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // stdout is a pipe that this test holds open and never reads: it fills and stays full.
    let mut server = Process(
        serve(dir.path(), port, "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kassa"),
    );
    let _unread = server.0.stdout.take().expect("stdout");
    let client = client();
    wait_ready(&client, &base).await;
    log_a_lot(&client, &base).await;

    let exit = terminate(&mut server, Duration::from_secs(6)).await;
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn sigterm_stops_it_after_its_log_reader_went_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // `kassa serve 2>&1 | head -1`: stdout and stderr on one pipe whose reader leaves after a
    // line, so every later write fails with EPIPE.
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut server = Process(
        serve(dir.path(), port, "debug")
            .stdout(writer.try_clone().expect("clone the pipe"))
            .stderr(writer)
            .spawn()
            .expect("spawn kassa"),
    );
    let mut first = String::new();
    BufReader::new(reader)
        .read_line(&mut first)
        .expect("a first line");
    assert!(!first.is_empty());
    let client = client();
    wait_ready(&client, &base).await;
    log_a_lot(&client, &base).await;

    let exit = terminate(&mut server, Duration::from_secs(6)).await;
    assert!(exit.success(), "{exit:?}");
}
