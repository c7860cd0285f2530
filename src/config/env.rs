//! The environment as configuration sees it, and what it changes.
//!
//! [`Env`] is the real process environment layered over `$HERMES_HOME/.env`
//! (a variable already set in the real environment wins). The process
//! environment is never modified (a `.env` value is not exported):
//! configuration reads through [`Env`], and tests build one from a map.
//! [`Config::apply_env`] lays the environment variables (listed in `config.yaml`) over the values
//! from `config.yaml`; a malformed value is an error naming the variable.

use std::collections::HashMap;
use std::path::Path;

use super::{CHAT_PLATFORMS, Config, ConfigError};

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

impl Config {
    /// Applies the environment variables (listed in `config.yaml`) on top of the file.
    pub fn apply_env(&mut self, env: &Env) -> Result<(), ConfigError> {
        // Upstream model.
        if let Some(m) = env.get("HERMES_MODEL").or_else(|| env.get("LLM_MODEL")) {
            self.model.default = Some(m.to_string());
        }
        if let Some(u) = env.get("OPENAI_BASE_URL") {
            self.model.base_url = Some(u.to_string());
        }
        if self.model.api_key.is_none() {
            let var = if self.is_openrouter() {
                "OPENROUTER_API_KEY"
            } else {
                "OPENAI_API_KEY"
            };
            self.model.api_key = env.get(var).map(String::from);
        }
        if let Some(n) = env.get_parsed("HERMES_MAX_ITERATIONS", "a positive whole number")? {
            self.agent.max_iterations = n;
        }

        // API server.
        if let Some(b) = env.get_bool("API_SERVER_ENABLED")? {
            self.api_server.enabled = b;
        }
        if let Some(h) = env.get("API_SERVER_HOST") {
            self.api_server.host = h.to_string();
        }
        if let Some(p) = env.get_parsed("API_SERVER_PORT", "a port number (0-65535)")? {
            self.api_server.port = p;
        }
        if let Some(k) = env.get("API_SERVER_KEY") {
            self.api_server.key = Some(k.to_string());
        }
        if let Some(o) = env.get_list("API_SERVER_CORS_ORIGINS") {
            self.api_server.cors_origins = o;
        }
        if let Some(n) = env.get("API_SERVER_MODEL_NAME") {
            self.api_server.model_name = n.to_string();
        }
        if let Some(n) = env.get_parsed("API_SERVER_MAX_CONCURRENT_RUNS", "a whole number")? {
            self.api_server.max_concurrent_runs = n;
        }

        // Streaming.
        if let Some(b) = env.get_bool("HERMES_STREAMING_ENABLED")? {
            self.streaming.enabled = b;
        }

        // This instance's name among others (leases, health), and the
        // PostgreSQL server instances share.
        if let Some(id) = env.get("HERMES_INSTANCE_ID") {
            self.storage.instance_id = Some(id.to_string());
        }
        if let Some(url) = env.get("HERMES_DATABASE_URL") {
            self.storage.postgres_url = Some(url.to_string());
        }

        // Chat platforms: `<PLATFORM>_<KEY>` for what they share, then their own.
        for &name in CHAT_PLATFORMS {
            let var = |key: &str| format!("{}_{key}", name.to_ascii_uppercase());
            let Some(p) = self.platform_mut(name) else {
                continue;
            };
            if let Some(t) = env.get(&var("BOT_TOKEN")) {
                *p.bot_token = Some(t.to_string());
            }
            if let Some(u) = env.get_list(&var("ALLOWED_USERS")) {
                *p.allowed_users = u;
            }
            if let Some(b) = env.get_bool(&var("ALLOW_ALL_USERS"))? {
                *p.allow_all_users = b;
            }
            if let Some(u) = env.get(&var("API_BASE_URL")) {
                *p.api_base_url = Some(u.to_string());
            }
            if let Some(c) = env.get(&var("HOME_CHANNEL")) {
                *p.home_channel = Some(c.to_string());
            }
            if let Some(b) = env.get_bool(&var("REQUIRE_MENTION"))? {
                *p.require_mention = Some(b);
            }
        }
        if let Some(t) = env.get("SLACK_APP_TOKEN") {
            self.slack.app_token = Some(t.to_string());
        }
        if let Some(u) = env.get("DISCORD_GATEWAY_URL") {
            self.discord.gateway_url = Some(u.to_string());
        }
        if let Some(u) = env.get_list("GATEWAY_ALLOWED_USERS") {
            self.gateway.allowed_users = u;
        }
        if let Some(b) = env.get_bool("GATEWAY_ALLOW_ALL_USERS")? {
            self.gateway.allow_all_users = b;
        }
        if let Some(m) = env.get_parsed("SESSION_IDLE_MINUTES", "a whole number of minutes")? {
            self.gateway.session_idle_minutes = m;
        }
        Ok(())
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

    #[test]
    fn env_beats_file_and_keys_go_to_their_host() {
        let mut c = Config::from_yaml("model:\n  default: from-file\n", Path::new("config.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let env = Env::from_pairs([
            ("HERMES_MODEL", "from-env"),
            ("OPENROUTER_API_KEY", "sk-or-1234567890abcdef"),
            ("OPENAI_API_KEY", "sk-openai-1234567890"),
        ]);
        c.apply_env(&env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.model.default.as_deref(), Some("from-env"));
        // Default base URL is OpenRouter: its key, never the OpenAI one.
        assert_eq!(c.model.api_key.as_deref(), Some("sk-or-1234567890abcdef"));

        let mut c = Config::defaults();
        let env = Env::from_pairs([
            ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1"),
            ("OPENROUTER_API_KEY", "sk-or-1234567890abcdef"),
        ]);
        c.apply_env(&env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.model.api_key, None,
            "the OpenRouter key must not go to another host"
        );
        assert!(
            c.upstream_problem()
                .is_some_and(|p| p.contains("HERMES_MODEL"))
        );
    }

    #[test]
    fn platform_variables_reach_their_own_section() {
        let mut c = Config::defaults();
        let env = Env::from_pairs([
            ("TELEGRAM_BOT_TOKEN", "1:tg"),
            ("TELEGRAM_HOME_CHANNEL", "-100123"),
            ("TELEGRAM_REQUIRE_MENTION", "yes"),
            ("DISCORD_ALLOWED_USERS", "7, 8"),
            ("DISCORD_GATEWAY_URL", "wss://gw.example"),
            ("SLACK_APP_TOKEN", "xapp-1"),
            ("SLACK_REQUIRE_MENTION", "false"),
            ("SLACK_API_BASE_URL", "http://127.0.0.1:9/api"),
        ]);
        c.apply_env(&env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.telegram.bot_token.as_deref(), Some("1:tg"));
        assert_eq!(c.telegram.home_channel.as_deref(), Some("-100123"));
        assert_eq!(c.telegram.require_mention, Some(true));
        assert_eq!(c.discord.allowed_users, ["7", "8"]);
        assert_eq!(c.discord.gateway_url.as_deref(), Some("wss://gw.example"));
        assert_eq!(c.discord.bot_token, None);
        assert_eq!(c.slack.app_token.as_deref(), Some("xapp-1"));
        assert_eq!(c.platform("slack").map(|p| p.require_mention), Some(false));
        assert_eq!(
            c.slack.api_base_url.as_deref(),
            Some("http://127.0.0.1:9/api")
        );
        let bad = Env::from_pairs([("DISCORD_ALLOW_ALL_USERS", "maybe")]);
        let e = c.apply_env(&bad).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("DISCORD_ALLOW_ALL_USERS=maybe")),
            "{e:?}"
        );
    }
}
