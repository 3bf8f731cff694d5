//! A full disk under the embedded store, for real: the store file on a small tmpfs that a
//! filler file fills (mounting needs root, as the test machines and CI run). While the file
//! system refuses writes, every checkout is answered (503 `store_unavailable` with
//! Retry-After, never a dropped connection) and `/readyz` answers 503; once space is freed
//! Kassa writes again on its own, without a restart, and nothing it acknowledged is lost.

use kassa_testkit::api::{put_product, send, token};
use kassa_testkit::process::{free_port, ready_client, spawn_logged};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const JWT_SECRET: &str = "disk-full-test-secret-of-32-bytes!";
const WEBHOOK_SECRET: &str = "whsec_ZGlzay1mdWxsLXdlYmhvb2stc2VjcmV0";
const CARTS: usize = 30;
const STOCK: i64 = 1_000;

/// A tmpfs mounted for the test; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {size} tmpfs at {} failed: this test needs root (CI runs as root)",
            at.display()
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn checkout(
    client: &reqwest::Client,
    base: &str,
    shopper: &str,
    cart: &str,
) -> (StatusCode, Value, bool) {
    send(
        client
            .post(format!("{base}/api/orders"))
            .bearer_auth(token(JWT_SECRET, shopper, false))
            .header("idempotency-key", format!("disk-{cart}"))
            .json(&json!({
                "cartId": cart,
                "shippingDetails": {"name": "Disk Full", "line1": "1 Full St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
                "paymentMethod": "card",
            })),
    )
    .await
}

/// Writes zeros to `path` until the file system refuses: answers how many bytes it took.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler file");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC, got {e}");
                break;
            }
        }
    }
    let _ = file.sync_all();
    written
}

async fn ready_status(client: &reqwest::Client, base: &str) -> StatusCode {
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz answers")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_kassa_writes_again_once_space_is_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&dir.path().join("disk"), "24m");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let no_config = data.join("empty.toml");
    std::fs::write(&no_config, "").expect("empty config");
    let _kassa = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_kassa"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KASSA_CONFIG", &no_config)
            .env("KASSA_DATA_DIR", &data)
            // Only the store on the small disk: the sandbox's journal and the mail stay apart.
            .env(
                "KASSA_STORE",
                format!("embedded:{}", disk.0.join("store").display()),
            )
            .env(
                "KASSA_SMTP_URL",
                format!("file://{}", data.join("mail").display()),
            )
            .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
            .env("KASSA_PUBLIC_URL", &base)
            .env("KASSA_JWT_SECRET", JWT_SECRET)
            .env("KASSA_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("KASSA_LOG", "warn"),
        &data.join("kassa.log"),
    );
    let client = ready_client(&base).await;
    let admin = token(JWT_SECRET, "admin", true);
    put_product(&client, &base, &admin, "disk-tee", "Disk tee", 1500, STOCK).await;
    let mut carts = Vec::new();
    for i in 0..CARTS {
        let shopper = format!("shopper-{i}");
        let (status, body, _) = send(
            client
                .post(format!("{base}/api/carts"))
                .bearer_auth(token(JWT_SECRET, &shopper, false)),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let cart = body["cartId"].as_str().expect("cartId").to_string();
        let (status, body, _) = send(
            client
                .put(format!("{base}/api/carts/{cart}/items/disk-tee"))
                .bearer_auth(token(JWT_SECRET, &shopper, false))
                .json(&json!({"quantity": 1})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        carts.push((shopper, cart));
    }

    // The disk fills up.
    let filler = disk.0.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the filler took some space");

    // Every checkout is answered: placed while redb still had room inside its file, or 503
    // with Retry-After once it needs more.
    let mut placed = Vec::new();
    let mut refused = Vec::new();
    let answers = futures_util::future::join_all(
        carts
            .iter()
            .map(|(shopper, cart)| checkout(&client, &base, shopper, cart)),
    )
    .await;
    for ((shopper, cart), (status, body, retry_after)) in carts.iter().zip(answers) {
        match status {
            StatusCode::OK => placed.push(body["orderId"].as_str().expect("orderId").to_string()),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after, "a 503 says when to retry: {body}");
                assert_eq!(body["code"], "store_unavailable", "{body}");
                refused.push((shopper.clone(), cart.clone()));
            }
            other => panic!("checkout on a full disk answered {other}: {body}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "the full disk refused some writes ({} placed)",
        placed.len()
    );
    assert_eq!(
        ready_status(&client, &base).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while the store cannot write"
    );

    // Space comes back: Kassa finds out by itself (no request needed) and is ready again.
    std::fs::remove_file(&filler).expect("free the space");
    let freed = Instant::now();
    while ready_status(&client, &base).await != StatusCode::OK {
        assert!(
            freed.elapsed() < Duration::from_secs(15),
            "still not ready 15 s after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_in = freed.elapsed();

    // The refused checkouts, retried with their keys, go through; nothing placed was lost.
    for (shopper, cart) in &refused {
        let (status, body, _) = checkout(&client, &base, shopper, cart).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "retry after the disk came back: {body}"
        );
        placed.push(body["orderId"].as_str().expect("orderId").to_string());
    }
    for order in &placed {
        let (status, body, _) = send(
            client
                .get(format!("{base}/api/orders/{order}"))
                .bearer_auth(&admin),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "order {order} answered 200 exists: {body}"
        );
    }
    let (_, product, _) = send(client.get(format!("{base}/api/products/disk-tee"))).await;
    assert_eq!(
        product["available"],
        json!(STOCK - placed.len() as i64),
        "every placed order holds its unit, nothing more: {product}"
    );
    eprintln!(
        "full disk: {} of {CARTS} checkouts answered 503 while full, ready again {:.1} s after \
         space was freed",
        refused.len(),
        recovered_in.as_secs_f64()
    );
}
