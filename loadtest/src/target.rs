//! Which Kassa to load: one this tool starts (`--spawn BINARY`: a temporary data dir,
//! generated secrets, a free port, the embedded store unless `--store` says otherwise) or a
//! running one (`--target URL` with its secrets). A spawned Kassa is killed when dropped;
//! `--kill-at` kills it with SIGKILL mid-run and starts it again on the same data and port.

use anyhow::{Context as _, bail};
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Target {
    pub base_url: String,
    pub jwt_secret: String,
    pub webhook_secret: String,
    /// `--kassa-pid` of a remote Kassa: for RSS readings.
    remote_pid: Option<u32>,
    /// Where confirmation emails land as files, when the mail check is on.
    pub mail_dir: Option<PathBuf>,
    spawned: Option<Arc<Mutex<Spawned>>>,
}

struct Spawned {
    child: Child,
    /// What started it, to start it again after a kill.
    command: Command,
    log: PathBuf,
    /// Removed when the run ends.
    _data: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct SpawnSettings<'a> {
    pub binary: &'a Path,
    pub store: Option<&'a str>,
    pub reservation_ttl: &'a str,
    pub mail_dir: Option<&'a Path>,
    /// `KASSA_SMTP_URL` (a real SMTP server) instead of files in `mail_dir`.
    pub smtp_url: Option<&'a str>,
    pub log: &'a str,
}

impl Target {
    pub fn remote(
        url: &str,
        jwt_secret: String,
        webhook_secret: String,
        pid: Option<u32>,
        mail_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            base_url: url.trim_end_matches('/').to_string(),
            jwt_secret,
            webhook_secret,
            remote_pid: pid,
            mail_dir,
            spawned: None,
        }
    }

    /// Starts Kassa and waits until `/readyz` answers 200.
    pub async fn spawn(settings: SpawnSettings<'_>) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("kassa-loadtest-")
            .tempdir()
            .context("creating a temporary data dir")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .context("finding a free port")?;
        let base_url = format!("http://127.0.0.1:{port}");
        let jwt_secret = random_secret();
        let webhook_secret = format!("whsec_{}", random_secret());
        let store = match settings.store {
            Some(store) => store.to_string(),
            None => format!("embedded:{}", data.path().join("store").display()),
        };
        let log = data.path().join("kassa.log");
        let log_file = std::fs::File::create(&log).context("creating kassa.log")?;
        // Absolute: the child runs in the data dir.
        let binary = std::fs::canonicalize(settings.binary)
            .with_context(|| format!("no Kassa binary at {}", settings.binary.display()))?;
        // An empty config file: neither a `kassa.toml` nor a KASSA_CONFIG of the caller's is read.
        let no_config = data.path().join("empty.toml");
        std::fs::write(&no_config, "").context("writing empty.toml")?;
        let mut command = Command::new(&binary);
        command
            .env("KASSA_LISTEN", format!("127.0.0.1:{port}"))
            .env("KASSA_PUBLIC_URL", &base_url)
            .env("KASSA_DATA_DIR", data.path())
            .env("KASSA_STORE", store)
            .env("KASSA_JWT_SECRET", &jwt_secret)
            .env("KASSA_WEBHOOK_SECRET", &webhook_secret)
            .env("KASSA_RESERVATION_TTL", settings.reservation_ttl)
            .env("KASSA_LOG", settings.log)
            .env("KASSA_CONFIG", &no_config)
            .current_dir(data.path())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("kassa.log")?)
            .stderr(log_file);
        match (settings.smtp_url, settings.mail_dir) {
            (Some(url), _) => {
                command.env("KASSA_SMTP_URL", url);
            }
            (None, Some(dir)) => {
                command.env("KASSA_SMTP_URL", format!("file://{}", dir.display()));
            }
            (None, None) => {}
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let target = Self {
            base_url,
            jwt_secret,
            webhook_secret,
            remote_pid: None,
            mail_dir: settings.mail_dir.map(Path::to_path_buf),
            spawned: Some(Arc::new(Mutex::new(Spawned {
                child,
                command,
                log,
                _data: data,
            }))),
        };
        target.wait_ready().await?;
        Ok(target)
    }

    fn spawned(&self) -> Option<std::sync::MutexGuard<'_, Spawned>> {
        self.spawned
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Kassa's process id, when known (spawned, or `--kassa-pid`): for RSS readings.
    pub fn pid(&self) -> Option<u32> {
        match self.spawned() {
            Some(spawned) => Some(spawned.child.id()),
            None => self.remote_pid,
        }
    }

    /// SIGKILLs the spawned Kassa, leaves it down for `down`, starts it again on the same
    /// data dir and port, and answers how long after the kill it was ready.
    pub async fn kill_and_restart(&self, down: Duration) -> anyhow::Result<Duration> {
        let killed = Instant::now();
        {
            let mut spawned = self.spawned().context("--kill-at needs --spawn")?;
            // std's kill is SIGKILL on Unix: no shutdown code runs.
            spawned.child.kill().context("SIGKILL")?;
            spawned.child.wait().context("reaping the killed Kassa")?;
        }
        tokio::time::sleep(down).await;
        {
            let mut spawned = self.spawned().context("--kill-at needs --spawn")?;
            spawned.child = spawned.command.spawn().context("starting Kassa again")?;
        }
        self.wait_ready().await?;
        Ok(killed.elapsed())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let exited = match self.spawned() {
                Some(mut spawned) => spawned.child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                bail!(
                    "kassa exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base_url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kassa never became ready:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines Kassa logged (spawned only), for error messages.
    pub fn log_tail(&self) -> String {
        let Some(log) = self.spawned().map(|s| s.log.clone()) else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether a spawned Kassa is still running (always true for a remote one).
    pub fn alive(&self) -> bool {
        match self.spawned() {
            Some(mut s) => matches!(s.child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// `VmRSS` and `VmHWM` of Kassa's process in KiB, when its pid is known.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
