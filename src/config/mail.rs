//! The mail keys: where confirmation emails go (an SMTP server, or files in the data dir by
//! default), with which credentials and sender. Checks their shape only: never connects.

use super::{ConfigError, RawConfig, non_empty, secret};
use std::path::Path;

pub(super) struct Mail {
    pub(super) smtp_url: String,
    pub(super) smtp_user: Option<String>,
    pub(super) smtp_password: Option<String>,
    pub(super) mail_from: String,
}

pub(super) fn mail(raw: &RawConfig, data_dir: &Path) -> Result<Mail, ConfigError> {
    let default_mail_dir = format!("file://{}", data_dir.join("mail").display());
    let smtp_url = non_empty(raw.smtp_url.as_deref()).unwrap_or(default_mail_dir);
    if !["smtp://", "smtps://", "file://"]
        .iter()
        .any(|p| smtp_url.starts_with(p))
    {
        return Err(ConfigError::new(
            "smtp_url",
            format!(
                "expected smtp://host:port, smtps://user:pass@host or file://dir, got `{smtp_url}`"
            ),
        ));
    }
    let smtp_user = non_empty(raw.smtp_user.as_deref());
    let smtp_password = secret(raw.smtp_password.as_deref());
    if smtp_user.is_some() != smtp_password.is_some() {
        let missing = if smtp_user.is_none() {
            "smtp_user"
        } else {
            "smtp_password"
        };
        return Err(ConfigError::new(
            missing,
            "KASSA_SMTP_USER and KASSA_SMTP_PASSWORD are set together or not at all",
        ));
    }
    let mail_from =
        non_empty(raw.mail_from.as_deref()).unwrap_or_else(|| "Kassa <orders@localhost>".into());
    Ok(Mail {
        smtp_url,
        smtp_user,
        smtp_password,
        mail_from,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::raw;

    #[test]
    fn smtp_credentials_come_together_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let err = raw(&[("data_dir", data), ("smtp_user", "kassa")]).expect_err("no password");
        assert_eq!(err.key, "KASSA_SMTP_PASSWORD");
        let err = raw(&[("data_dir", data), ("smtp_password", "pw")]).expect_err("no user");
        assert_eq!(err.key, "KASSA_SMTP_USER");
        let config = raw(&[
            ("data_dir", data),
            ("smtp_url", "smtp://127.0.0.1:2525"),
            ("smtp_user", "kassa"),
            ("smtp_password", "12345"),
        ])
        .expect("config");
        assert_eq!(config.smtp_user.as_deref(), Some("kassa"));
        assert_eq!(config.smtp_password.as_deref(), Some("12345"));
    }
}
