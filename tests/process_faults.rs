//! `kassa serve` as a process facing what its surroundings do wrong: a log reader that stalls
//! or goes away must not keep SIGTERM from stopping it, and clients that never finish a request
//! head they began are disconnected within the contract's 5 s (one that begins none is idle).

use kassa_testkit::process::{Process, free_port, wait_ready};
use reqwest::StatusCode;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// How a client dawdles over its request head.
#[derive(Debug, Clone, Copy)]
enum Dawdle {
    /// Connects and sends nothing.
    Silent,
    /// Sends half a head, then nothing.
    HalfAHead,
    /// Sends half a head, then a header line every second, never the blank line.
    Trickle,
    /// A whole request, its answer read, then half of a second head trickled as above.
    TrickleTheSecondHead,
}

/// Opens a connection that dawdles as told and answers how long after its (last) head began
/// the server closed it, or `None` when it was still open after `patience`.
async fn dawdle(port: u16, how: Dawdle, patience: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let half = b"GET /healthz HTTP/1.1\r\nHost: kassa\r\n";
    if let Dawdle::TrickleTheSecondHead = how {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: kassa\r\n\r\n")
            .await
            .expect("first request");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.ends_with(b"{\"status\":\"ok\"}") {
            let n = stream.read(&mut buf).await.expect("first answer");
            assert!(n > 0, "closed before answering the first request");
            answer.extend_from_slice(&buf[..n]);
        }
    }
    let began = Instant::now();
    if !matches!(how, Dawdle::Silent) {
        stream.write_all(half).await.expect("half a head");
    }
    let trickle = matches!(how, Dawdle::Trickle | Dawdle::TrickleTheSecondHead);
    let mut buf = [0u8; 4096];
    while began.elapsed() < patience {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(began.elapsed()),
            Ok(Ok(_)) => {} // a 408 before the close
            Err(_) if trickle => {
                if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return Some(began.elapsed());
                }
            }
            Err(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn clients_that_do_not_finish_a_request_head_within_5_s_are_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Process(
        serve(dir.path(), port, "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kassa"),
    );
    wait_ready(&client(), &base).await;

    let patience = Duration::from_secs(12);
    let mut clients = Vec::new();
    for how in [
        Dawdle::Silent,
        Dawdle::HalfAHead,
        Dawdle::Trickle,
        Dawdle::TrickleTheSecondHead,
    ] {
        for _ in 0..50 {
            clients.push((how, tokio::spawn(dawdle(port, how, patience))));
        }
    }
    let mut open = Vec::new();
    for (how, client) in clients {
        match (how, client.await.expect("client task")) {
            // No head begun: an idle connection, kept like an idle kept-alive one (HTTP
            // clients' pools hold connections they have not used yet).
            (Dawdle::Silent, closed) => assert_eq!(closed, None, "an idle connection closed"),
            (_, Some(closed_after)) => assert!(
                closed_after < Duration::from_millis(6_500),
                "{how:?}: closed only after {closed_after:?}"
            ),
            (_, None) => open.push(how),
        }
    }
    assert!(
        open.is_empty(),
        "{} of 150 dawdling connections still open after {patience:?}: {open:?}",
        open.len()
    );
}
