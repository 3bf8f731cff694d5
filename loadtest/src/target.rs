//! Which Kassa to load: one this tool starts (`--spawn BINARY`: a temporary data dir,
//! generated secrets, a free port, the embedded store unless `--store` says otherwise) or a
//! running one (`--target URL` with its secrets). A spawned Kassa is killed when dropped.

use anyhow::{Context as _, bail};
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Target {
    pub base_url: String,
    pub jwt_secret: String,
    pub webhook_secret: String,
    /// Kassa's process id, when known (spawned, or `--kassa-pid`): for RSS readings.
    pub pid: Option<u32>,
    /// Where confirmation emails land as files, when the mail check is on.
    pub mail_dir: Option<PathBuf>,
    spawned: Option<Spawned>,
}

struct Spawned {
    child: Child,
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
            pid,
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
        if let Some(dir) = settings.mail_dir {
            command.env("KASSA_SMTP_URL", format!("file://{}", dir.display()));
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        let mut target = Self {
            base_url,
            jwt_secret,
            webhook_secret,
            pid: Some(pid),
            mail_dir: settings.mail_dir.map(Path::to_path_buf),
            spawned: Some(Spawned {
                child,
                log,
                _data: data,
            }),
        };
        target.wait_ready().await?;
        Ok(target)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(spawned) = self.spawned.as_mut()
                && let Some(status) = spawned.child.try_wait()?
            {
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
        let Some(spawned) = &self.spawned else {
            return String::new();
        };
        let text = std::fs::read_to_string(&spawned.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether a spawned Kassa is still running (always true for a remote one).
    pub fn alive(&mut self) -> bool {
        match self.spawned.as_mut() {
            Some(s) => matches!(s.child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// `VmRSS` and `VmHWM` of Kassa's process in KiB, when its pid is known.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
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
