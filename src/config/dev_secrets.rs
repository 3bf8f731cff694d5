//! Secrets generated for development, kept in the data dir so restarts and `kassa token` agree
//! with the running server. Owns the file `dev-secrets.json`: written once, atomically, owner
//! readable only; never replaced, and never used in production (secrets.rs decides).

use super::ConfigError;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DevSecrets {
    pub(super) jwt_secret: String,
    pub(super) webhook_secret: String,
}

const DEV_SECRETS_FILE: &str = "dev-secrets.json";

/// Reads the dev secrets from the data dir, generating them on first use. Processes starting
/// together (the server and `kassa token`) agree: the file is published under its final
/// name only once complete and never replaced, so whoever loses the race reads the winner's.
pub(super) fn dev_secrets(data_dir: &Path) -> Result<(PathBuf, DevSecrets), ConfigError> {
    let path = data_dir.join(DEV_SECRETS_FILE);
    let unreadable = |e: String| {
        ConfigError::new(
            "data_dir",
            format!("dev secrets at {}: {e}", path.display()),
        )
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let secrets = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
            return Ok((path, secrets));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unreadable(e.to_string())),
    }
    let secrets = DevSecrets::generate();
    std::fs::create_dir_all(data_dir).map_err(|e| unreadable(e.to_string()))?;
    let json = serde_json::to_vec_pretty(&secrets).map_err(|e| unreadable(e.to_string()))?;
    match publish_private(&path, &json) {
        Ok(()) => Ok((path, secrets)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(&path).map_err(|e| unreadable(e.to_string()))?;
            let theirs = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
            Ok((path, theirs))
        }
        Err(e) => Err(unreadable(e.to_string())),
    }
}

impl DevSecrets {
    fn generate() -> Self {
        use base64::Engine;
        let mut rng = rand::rng();
        let jwt: [u8; 32] = rng.random();
        let webhook: [u8; 32] = rng.random();
        Self {
            jwt_secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jwt),
            webhook_secret: format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(webhook)
            ),
        }
    }
}

/// Creates `path`, readable by the owner only, holding `bytes`; `AlreadyExists` if it is
/// there. The bytes go to a temporary file of this caller's own first, which is then
/// hard-linked to `path` (a link never replaces a file): nobody ever sees half a secret,
/// and a crash leaves at most a stray temporary file.
fn publish_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        rand::rng().random::<u64>()
    ));
    let tmp = PathBuf::from(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let published = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    published
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::raw;

    #[test]
    fn dev_secrets_are_generated_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let first = raw(&[("data_dir", data)]).expect("config");
        let second = raw(&[("data_dir", data)]).expect("config");
        assert!(first.dev_secrets_file.is_some());
        assert_eq!(first.webhook_secret, second.webhook_secret);
        assert_eq!(first.jwt.key, second.jwt.key);
    }

    #[test]
    fn processes_starting_together_agree_on_the_generated_dev_secrets() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let data_dir = dir.path().join("data");
            let start = std::sync::Barrier::new(4);
            let answers: Vec<(String, String)> = std::thread::scope(|s| {
                let racers: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            let (_, secrets) = dev_secrets(&data_dir).expect("dev secrets");
                            (secrets.jwt_secret, secrets.webhook_secret)
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|r| r.join().expect("racer"))
                    .collect()
            });
            let (_, on_disk) = dev_secrets(&data_dir).expect("dev secrets");
            for answer in &answers {
                assert_eq!(
                    answer,
                    &(on_disk.jwt_secret.clone(), on_disk.webhook_secret.clone())
                );
            }
            let files: Vec<_> = std::fs::read_dir(&data_dir)
                .expect("data dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(files, [DEV_SECRETS_FILE], "no temporary file left");
        }
    }
}
