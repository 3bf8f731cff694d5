//! The shop's identity as shoppers see it: its name (`KASSA_SHOP_NAME`) on the hosted pages.
//! Checks only that it fits a page title; never escapes it (the templates do).

use super::{ConfigError, RawConfig, non_empty};

const DEFAULT_SHOP_NAME: &str = "Kassa";
/// Longer does not fit a page header or an email subject.
const MAX_SHOP_NAME_CHARS: usize = 80;

/// The name, trimmed; unset or blank gives "Kassa", as a blank value of any key means unset.
pub(super) fn shop_name(raw: &RawConfig) -> Result<String, ConfigError> {
    let Some(name) = non_empty(raw.shop_name.as_deref()) else {
        return Ok(DEFAULT_SHOP_NAME.into());
    };
    if name.chars().count() > MAX_SHOP_NAME_CHARS {
        return Err(ConfigError::new(
            "shop_name",
            format!(
                "expected at most {MAX_SHOP_NAME_CHARS} characters, got {}",
                name.chars().count()
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ConfigError::new(
            "shop_name",
            "expected one line of text, got a control character (a line break or a tab)",
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{raw, read};

    #[test]
    fn the_shop_name_defaults_to_kassa_and_is_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let default = raw(&[("data_dir", data)]).expect("config");
        assert_eq!(default.shop_name, "Kassa");
        let blank = raw(&[("data_dir", data), ("shop_name", "   ")]).expect("config");
        assert_eq!(blank.shop_name, "Kassa");
        let named = raw(&[("data_dir", data), ("shop_name", "  Café Ünïcode  ")]).expect("named");
        assert_eq!(named.shop_name, "Café Ünïcode");
        let longest = "é".repeat(MAX_SHOP_NAME_CHARS);
        let fits = raw(&[("data_dir", data), ("shop_name", &longest)]).expect("80 chars");
        assert_eq!(fits.shop_name, longest);
    }

    #[test]
    fn a_shop_name_too_long_or_on_two_lines_names_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf8");
        let too_long = "x".repeat(MAX_SHOP_NAME_CHARS + 1);
        for bad in [too_long.as_str(), "Kassa\nBcc: everyone", "Tab\there"] {
            let err = raw(&[("data_dir", data), ("shop_name", bad)]).expect_err(bad);
            assert_eq!(err.key, "KASSA_SHOP_NAME");
        }
    }

    #[test]
    fn the_shop_name_and_cors_origins_are_read_from_the_environment_or_kassa_toml() {
        let config = read(
            "shop_name = \"Toml Shop\"\ncors_origins = \"https://a.example\"\n",
            &[],
        )
        .expect("config");
        assert_eq!(config.shop_name, "Toml Shop");
        assert_eq!(config.cors_origins, ["https://a.example"]);
        let config = read(
            "shop_name = \"Toml Shop\"\n",
            &[
                ("KASSA_SHOP_NAME", "Env Shop"),
                (
                    "KASSA_CORS_ORIGINS",
                    "https://b.example,http://c.example:8080",
                ),
            ],
        )
        .expect("config");
        assert_eq!(config.shop_name, "Env Shop");
        assert_eq!(
            config.cors_origins,
            ["https://b.example", "http://c.example:8080"]
        );
    }
}
