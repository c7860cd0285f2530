//! The system prompt: the agent's core prompt (identity, tool-use guidance,
//! date, platform hint, memory) with the caller's ephemeral system prompt
//! layered on top. Short on purpose: it is sent, and paid for, on every call.

use std::path::Path;

use crate::tools::memory;

const IDENTITY: &str = "You are Hermes, a capable assistant with tools that run on the user's host. \
Use tools when they help; don't guess at facts you can check. Act, then report briefly what you did and found. \
Never run destructive commands without being asked; if a command is refused, explain and offer alternatives.";

/// A line about the front door, so answers fit where they are shown.
fn platform_hint(platform: &str) -> &'static str {
    if platform == "cli" {
        "The user is in a terminal: plain text, little formatting."
    } else if crate::platforms::info(platform).is_some() {
        "The user is on a chat app: be concise; Markdown is rendered."
    } else {
        "You are serving an API client; Markdown is fine."
    }
}

/// Builds the system prompt for one turn.
pub fn system_prompt(
    platform: &str,
    home: &Path,
    with_memory: bool,
    ephemeral: Option<&str>,
) -> String {
    let date = today();
    let mut p = format!("{IDENTITY}\nToday is {date}. {}", platform_hint(platform));
    if with_memory {
        let entries = memory::read_entries(home);
        if !entries.is_empty() {
            p.push_str("\n\nYour memory (notes you saved earlier):\n");
            for e in entries {
                p.push_str("- ");
                p.push_str(&e);
                p.push('\n');
            }
        }
    }
    if let Some(extra) = ephemeral.map(str::trim).filter(|e| !e.is_empty()) {
        p.push_str("\n\n");
        p.push_str(extra);
    }
    p
}

/// Today's date in UTC as `YYYY-MM-DD` (civil-from-days, no time crate needed).
pub fn today() -> String {
    let secs = crate::clock::unix_now();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's algorithm: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_416), (2025, 11, 24));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn ephemeral_is_layered_on_top() {
        let dir = std::env::temp_dir();
        let p = system_prompt("api_server", &dir, false, Some("Answer in French."));
        assert!(p.starts_with("You are Hermes"));
        assert!(p.ends_with("Answer in French."));
    }
}
