//! Log setup and the masking of personal identifiers in logs.
//!
//! Phones and BSUIDs identify people, so logs show only their last four
//! characters unless `log.show_identifiers` is on. Access tokens are never
//! passed to a log call at all. Whatever a client sent is escaped before it
//! reaches a log line ([`Escaped`]), so no value can forge one.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub(crate) fn init(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(std::io::stdout().is_terminal()))
        .with_target(true);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// One log line in the shape of the JSON logs (`timestamp`, `level`,
/// `message`, `target`), for what is said after or without the subscriber:
/// a command's fatal error.
pub(crate) fn json_line(level: &str, message: &str, target: &str) -> String {
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    let mut timestamp = String::new();
    // Writing to a String cannot fail.
    let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    format!(
        "{{\"timestamp\":{},\"level\":{},\"message\":{},\"target\":{}}}",
        quoted(&timestamp),
        quoted(level),
        quoted(message),
        quoted(target)
    )
}

/// Whether a log stream gets colours: only for a person at a terminal (in a
/// file or a log collector the escape codes are noise), and never with
/// `NO_COLOR` set (https://no-color.org).
pub(crate) fn colour(terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    terminal && !no_color
}

/// How many trailing characters of an identifier a masked log keeps.
const VISIBLE_TAIL: usize = 4;

/// An identifier as it may appear in a log line, escaped ([`Escaped`]):
/// the value itself when `show` is on, else its class-revealing head and
/// last four characters, e.g. `US.…1918` or `…1234`.
pub(crate) fn mask(value: &str, show: bool) -> String {
    if show {
        return Escaped(value).to_string();
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
    format!("{head}…{}", Escaped(&tail))
}

/// Text that came from a client, shown in a log line so that it cannot
/// forge one: control characters (CR, LF, ESC, NUL, …), quotes,
/// backslashes and the invisible or direction-changing characters of
/// Unicode are written as escapes (`\n`, `\u{1b}`, `\"`). The same text
/// goes into text and JSON logs alike.
pub(crate) struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Most values need nothing: write them in one piece.
        if !self.0.chars().any(needs_escape) {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            if !needs_escape(c) {
                f.write_char(c)?;
            } else if c.is_ascii() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{}", c.escape_unicode())?;
            }
        }
        Ok(())
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '"' | '\\'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

#[cfg(test)]
mod tests {
    use super::{Escaped, mask};

    #[test]
    fn what_a_client_sent_cannot_break_a_line_or_reach_a_terminal() {
        let hostile = "abcdefgh\r\nX:1 \u{1b}[31mred\0 \"q\" back\\slash \u{202e}rtl \u{2028}";
        for shown in [
            mask(hostile, true),
            mask(hostile, false),
            Escaped(hostile).to_string(),
        ] {
            assert!(
                !shown
                    .chars()
                    .any(|c| c.is_control() || ('\u{2028}'..='\u{202e}').contains(&c)),
                "{shown:?}"
            );
            let unescaped_quote = shown
                .char_indices()
                .any(|(at, c)| c == '"' && !shown[..at].ends_with('\\'));
            assert!(!unescaped_quote, "{shown:?}");
        }
        assert_eq!(
            Escaped(hostile).to_string(),
            "abcdefgh\\r\\nX:1 \\u{1b}[31mred\\u{0} \\\"q\\\" back\\\\slash \\u{202e}rtl \\u{2028}"
        );
        assert_eq!(mask("abcdefgh\r\nX:1", false), "…\\nX:1");
        assert_eq!(Escaped("plain").to_string(), "plain");
    }

    #[test]
    fn a_json_line_is_one_escaped_object() {
        let line = super::json_line("ERROR", "bad \"x\"\nnext\u{1b}", "sendgate");
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["message"], "bad \"x\"\nnext\u{1b}");
        assert_eq!(parsed["level"], "ERROR");
        assert_eq!(parsed["target"], "sendgate");
        assert!(line.starts_with("{\"timestamp\":\""), "{line}");
    }

    #[test]
    fn masks_all_but_the_tail() {
        assert_eq!(mask("US.13491208655302741918", false), "US.…1918");
        assert_eq!(mask("+1 (631) 555-1234", false), "…1234");
        assert_eq!(mask("16315551234", true), "16315551234");
        assert_eq!(mask("short", false), "…", "short values give nothing away");
        assert_eq!(mask("", false), "");
    }
}
