//! The environment as configuration sees it: the real process environment
//! layered over `$HERMES_HOME/.env`.
//!
//! The process environment is never modified (a `.env` value is not exported):
//! configuration reads through [`Env`], and tests build one from a map.

use std::collections::HashMap;
use std::path::Path;

use super::ConfigError;

/// A snapshot of environment variables, `.env` lines included.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The real process environment (non-UTF-8 variables are skipped).
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment made of exactly these variables (tests, embedding).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Adds the `KEY=VALUE` lines of a `.env` file; a variable that is already
    /// set wins (the real environment beats `.env`). A missing file is fine.
    pub fn load_dotenv(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ConfigError::Io {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        for (key, value) in parse_dotenv(&text, path)? {
            self.vars.entry(key).or_insert(value);
        }
        Ok(())
    }

    /// The variable's value, `None` when unset or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// Sets a variable in this snapshot only (tests, command-line overrides).
    pub fn set(&mut self, key: &str, value: &str) {
        self.vars.insert(key.to_string(), value.to_string());
    }

    /// A boolean variable: `true/1/yes/on` and `false/0/no/off`, anything else
    /// is an error naming the variable.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_bool(v).map(Some).ok_or_else(|| ConfigError::BadEnv {
                var: key.to_string(),
                value: v.to_string(),
                expected: "true or false",
            }),
        }
    }

    /// A numeric variable, an error naming the variable when it does not parse.
    pub fn get_parsed<T: std::str::FromStr>(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse::<T>().map(Some).map_err(|_| ConfigError::BadEnv {
                var: key.to_string(),
                value: v.to_string(),
                expected,
            }),
        }
    }

    /// A comma-separated list; empty items are dropped.
    pub fn get_list(&self, key: &str) -> Option<Vec<String>> {
        self.get(key).map(split_list)
    }
}

/// Splits `a, b,,c` into `["a", "b", "c"]`.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `true/1/yes/on` → true, `false/0/no/off` → false (case-insensitive).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses `.env` text: `KEY=VALUE`, optional `export `, `#` comments, single or
/// double quotes around the value. A line without `=` is an error with its number.
fn parse_dotenv(text: &str, path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError::DotEnv {
                path: path.to_path_buf(),
                line: i + 1,
                reason: "expected KEY=VALUE".into(),
            });
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::DotEnv {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!("`{key}` is not a valid variable name"),
            });
        }
        let mut value = value.trim();
        let quoted = value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')));
        if quoted {
            value = &value[1..value.len() - 1];
        } else if let Some(pos) = value.find(" #") {
            // An unquoted value ends at an inline comment.
            value = value[..pos].trim_end();
        }
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_parsing() {
        let p = Path::new(".env");
        let v = parse_dotenv(
            "# c\nA=1\nexport B = \"two words\"\nC='x#y'\nD=val # note\n\nE=\n",
            p,
        )
        .unwrap_or_default();
        assert_eq!(
            v,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x#y".into()),
                ("D".into(), "val".into()),
                ("E".into(), "".into()),
            ]
        );
        assert!(parse_dotenv("JUSTTEXT\n", p).is_err());
        assert!(parse_dotenv("BAD KEY=1\n", p).is_err());
    }

    #[test]
    fn real_env_wins_over_dotenv() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(".env");
        std::fs::write(&path, "A=from_file\nB=from_file\n").unwrap_or_else(|e| panic!("{e}"));
        let mut env = Env::from_pairs([("A", "real")]);
        env.load_dotenv(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(env.get("A"), Some("real"));
        assert_eq!(env.get("B"), Some("from_file"));
    }

    #[test]
    fn typed_getters_name_the_variable() {
        let env = Env::from_pairs([("P", "abc"), ("F", "maybe")]);
        let err = env
            .get_parsed::<u16>("P", "a port number")
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("P=abc"));
        assert!(env.get_bool("F").is_err());
    }
}
