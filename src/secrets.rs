//! Secret masking and redaction.
//!
//! Two jobs, both about never letting a key or token leave the process:
//! [`mask`] shortens a known secret for display (`sk-…1234`), and [`redact`]
//! scans free text (upstream error messages, tool output that ends up in an
//! error body) for anything shaped like a secret and masks it.

use regex::Regex;
use std::sync::LazyLock;

/// How many trailing characters of a secret stay visible when masked.
const VISIBLE_TAIL: usize = 4;
/// Secrets shorter than this are masked completely: showing 4 of 8 characters
/// would give away half the key.
const MIN_LEN_FOR_TAIL: usize = 12;

/// Masks a secret for display: its first three characters, an ellipsis and its
/// last four (`sk-…1234`); short secrets become `…` alone.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.is_empty() {
        return String::new();
    }
    if chars.len() < MIN_LEN_FOR_TAIL {
        return "…".to_string();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - VISIBLE_TAIL..].iter().collect();
    format!("{head}…{tail}")
}

/// A database URL for display, with its password (if any) masked: the
/// URL form `postgres://user:password@host/db` and the key-value form
/// `host=… password=…` both hold one. The rest (host, database) stays, as
/// it is what a reader checks.
pub fn mask_url_password(url: &str) -> String {
    // `password=` in a URL's query or a key-value string, quoted or not.
    static KEY_VALUE: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&#]*)").ok());
    let masked = match KEY_VALUE.as_ref() {
        Some(re) => re.replace_all(url, "${1}…").into_owned(),
        // Cannot happen (a fixed pattern); never show what may be a secret.
        None => return mask(url),
    };
    let Some((scheme, rest)) = masked.split_once("://") else {
        return masked;
    };
    // The user-info ends at the last `@` before the query: a password may
    // hold `/` or `@`.
    let query_at = rest.find(['?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..query_at].rfind('@')
        && let Some(colon) = rest[..at].find(':')
    {
        return format!("{scheme}://{}:…{}", &rest[..colon], &rest[at..]);
    }
    masked
}

/// Patterns of secrets that may appear inside free text. Each match is passed
/// through [`mask`] (keeping any leading label such as `Bearer `).
static SECRET_PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // OpenAI / OpenRouter / Anthropic style keys.
        r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{8,}",
        // Slack tokens.
        r"\bxox[abposr]-[A-Za-z0-9\-]{8,}",
        r"\bxapp-[A-Za-z0-9\-]{8,}",
        // Telegram bot tokens: <digits>:<35 chars>.
        r"\b\d{6,12}:[A-Za-z0-9_\-]{30,}",
        // GitHub tokens.
        r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    ]
    .iter()
    .filter_map(|p| Regex::new(p).ok())
    .collect()
});

/// `Bearer <token>` and `NAME_API_KEY=value`/`NAME_TOKEN: value` forms, where
/// the label is kept and only the value is masked.
static LABELLED_PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"(?i)(bearer\s+)([A-Za-z0-9._~+/=\-]{6,})",
        r#"(?i)(\b[A-Z0-9_]*(?:API_KEY|TOKEN|SECRET|PASSWORD)\s*[=:]\s*"?)([^\s"',]{4,})"#,
        r"(?i)(/bot)(\d{6,12}:[A-Za-z0-9_\-]{20,})",
    ]
    .iter()
    .filter_map(|p| Regex::new(p).ok())
    .collect()
});

/// Masks everything in `text` that looks like a secret.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for re in LABELLED_PATTERNS.iter() {
        out = re
            .replace_all(&out, |c: &regex::Captures<'_>| {
                format!("{}{}", &c[1], mask(&c[2]))
            })
            .into_owned();
    }
    for re in SECRET_PATTERNS.iter() {
        out = re
            .replace_all(&out, |c: &regex::Captures<'_>| {
                let m = &c[0];
                // Already masked by a labelled pattern.
                if m.contains('…') {
                    m.to_string()
                } else {
                    mask(m)
                }
            })
            .into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_long_and_short() {
        assert_eq!(mask("sk-abcdefghijklmnop1234"), "sk-…1234");
        assert_eq!(mask("short"), "…");
        assert_eq!(mask(""), "");
    }

    #[test]
    fn redacts_known_shapes() {
        let t = redact("key sk-or-v1-abcdefghijklmnopqrstuvwxyz0123 failed");
        assert!(!t.contains("abcdefghijklmnop"), "{t}");
        let t = redact("Authorization: Bearer abcdefghijklmnopqrstuv");
        assert!(t.contains("Bearer abc…"), "{t}");
        assert!(!t.contains("abcdefghijklmnopqrstuv"), "{t}");
        let t = redact("OPENAI_API_KEY=supersecretvalue123 here");
        assert!(t.contains("OPENAI_API_KEY="), "{t}");
        assert!(!t.contains("supersecretvalue123"), "{t}");
        let t = redact(
            "GET https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getMe",
        );
        assert!(!t.contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"), "{t}");
        assert_eq!(redact("nothing secret here"), "nothing secret here");
    }

    #[test]
    fn database_urls_keep_everything_but_the_password() {
        assert_eq!(
            mask_url_password("postgres://hermes:p@ss:w@db.internal:5432/hermes"),
            "postgres://hermes:…@db.internal:5432/hermes"
        );
        assert_eq!(
            mask_url_password("postgres://hermes@db/x"),
            "postgres://hermes@db/x"
        );
        assert_eq!(
            mask_url_password("host=db user=h password=s3cret dbname=x"),
            "host=db user=h password=… dbname=x"
        );
        for url in [
            "postgres://u@db/x?sslmode=require&password=s3cret",
            "postgres://u:s3/cret@db/x",
            "host=db password = s3cret",
            "host=db password='s3 cret' user=u",
        ] {
            let shown = mask_url_password(url);
            assert!(!shown.contains("s3"), "{url} -> {shown}");
        }
        assert_eq!(
            mask_url_password("postgres://u@db/x?password=s3cret&sslmode=require"),
            "postgres://u@db/x?password=…&sslmode=require"
        );
    }
}
