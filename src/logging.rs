//! Log setup and the masking of personal identifiers in logs.
//!
//! Phones and BSUIDs identify people, so logs show only their last four
//! characters unless `log.show_identifiers` is on. Access tokens are never
//! passed to a log call at all.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// How many trailing characters of an identifier a masked log keeps.
const VISIBLE_TAIL: usize = 4;

/// An identifier as it may appear in a log line: the value itself when
/// `show` is on, else its class-revealing head and last four characters,
/// e.g. `US.…1918` or `…1234`.
pub fn mask(value: &str, show: bool) -> String {
    if show {
        return value.to_owned();
    }
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= VISIBLE_TAIL * 2 {
        return "…".repeat(usize::from(!chars.is_empty()));
    }
    let tail: String = chars[chars.len() - VISIBLE_TAIL..].iter().collect();
    // Keep a BSUID's country prefix: it tells the class without telling who.
    let head =
        if chars.len() > 3 && chars[2] == '.' && chars[..2].iter().all(char::is_ascii_uppercase) {
            chars[..3].iter().collect()
        } else {
            String::new()
        };
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks_all_but_the_tail() {
        assert_eq!(mask("US.13491208655302741918", false), "US.…1918");
        assert_eq!(mask("+1 (631) 555-1234", false), "…1234");
        assert_eq!(mask("16315551234", true), "16315551234");
        assert_eq!(mask("short", false), "…", "short values give nothing away");
        assert_eq!(mask("", false), "");
    }
}
