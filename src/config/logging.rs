//! The logging keys: the tracing filter (`KASSA_LOG`) and the output format
//! (`KASSA_LOG_FORMAT`). Checks the filter parses; installing it is telemetry.rs's job.

use super::{ConfigError, RawConfig, non_empty};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub(super) struct Logging {
    pub(super) log: String,
    pub(super) log_format: LogFormat,
}

pub(super) fn logging(raw: &RawConfig) -> Result<Logging, ConfigError> {
    let log = non_empty(raw.log.as_deref()).unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        return Err(ConfigError::new(
            "log",
            format!("expected a log filter such as `info` or `kassa=debug,info`, got `{log}`: {e}"),
        ));
    }
    let log_format = match non_empty(raw.log_format.as_deref()).as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::new(
                "log_format",
                format!("expected `text` or `json`, got `{other}`"),
            ));
        }
    };
    Ok(Logging { log, log_format })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::raw;

    #[test]
    fn an_invalid_log_filter_stops_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        for bad in ["kassa=loud", "info,[", "=info"] {
            let err = raw(&[("data_dir", data), ("log", bad)]).expect_err(bad);
            assert_eq!(err.key, "KASSA_LOG", "{bad}");
        }
        for good in ["debug", "kassa=debug,info", "warn,actix_web=error"] {
            let config = raw(&[("data_dir", data), ("log", good)]).expect(good);
            assert_eq!(config.log, good);
        }
    }
}
