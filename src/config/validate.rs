//! Checks of values that parse but cannot work: a negative interval, an
//! unknown toolset, webhook mode without its secret.
//!
//! [`Config::validate`] runs after the environment overlay, so it sees the
//! values in effect; every error names the key and the value at fault.

use super::{Config, ConfigError, PLATFORMS, StorageBackend, TOOLSETS};

/// The most pooled PostgreSQL connections one instance may ask for: far
/// beyond what a server allows by default (100 in all), so a larger number
/// is a typo rather than a plan.
const MAX_POOL_SIZE: usize = 1000;

impl Config {
    /// Rejects values that parse but cannot work, naming key and value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, reason: &str| {
            Err(ConfigError::BadValue {
                key: key.into(),
                value,
                reason: reason.into(),
            })
        };
        for (key, v) in [
            ("model.connect_timeout", self.model.connect_timeout),
            ("model.response_timeout", self.model.response_timeout),
            ("model.chunk_timeout", self.model.chunk_timeout),
            ("streaming.edit_interval", self.streaming.edit_interval),
            ("tools.web_fetch.timeout", self.tools.web_fetch.timeout),
            ("api_server.body_timeout", self.api_server.body_timeout),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(key, v.to_string(), "must be a positive number of seconds");
            }
        }
        if !(self.api_server.keep_alive > 0.0 && self.api_server.keep_alive <= 15.0) {
            return bad(
                "api_server.keep_alive",
                self.api_server.keep_alive.to_string(),
                "must be more than 0 and at most 15 seconds",
            );
        }
        if !(self.gateway.drain_timeout.is_finite() && self.gateway.drain_timeout >= 0.0) {
            return bad(
                "gateway.drain_timeout",
                self.gateway.drain_timeout.to_string(),
                "must be zero or a positive number of seconds",
            );
        }
        if self.model.max_attempts == 0 {
            return bad("model.max_attempts", "0".into(), "must be at least 1");
        }
        if self.agent.max_iterations == 0 {
            return bad(
                "agent.max_iterations",
                "0".into(),
                "must be at least 1 (HERMES_MAX_ITERATIONS)",
            );
        }
        if self.agent.tool_output_cap < 1000 {
            return bad(
                "agent.tool_output_cap",
                self.agent.tool_output_cap.to_string(),
                "must be at least 1000 characters",
            );
        }
        if self.terminal.timeout == 0 || self.terminal.timeout > self.terminal.max_timeout {
            return bad(
                "terminal.timeout",
                self.terminal.timeout.to_string(),
                "must be between 1 and terminal.max_timeout",
            );
        }
        if let Some(url) = &self.model.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad(
                "model.base_url",
                url.clone(),
                "must start with http:// or https:// (OPENAI_BASE_URL)",
            );
        }
        check_toolsets("toolsets", &self.toolsets)?;
        for (platform, sets) in &self.platform_toolsets {
            if !PLATFORMS.contains(&platform.as_str()) {
                return bad(
                    &format!("platform_toolsets.{platform}"),
                    platform.clone(),
                    &format!("unknown platform; expected one of {}", PLATFORMS.join(", ")),
                );
            }
            check_toolsets(&format!("platform_toolsets.{platform}"), sets)?;
        }
        for (i, p) in self.approvals.patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                return bad(
                    &format!("approvals.patterns[{i}]"),
                    p.clone(),
                    &format!("not a regular expression: {e}"),
                );
            }
        }
        for (i, k) in self.api_server.keys.iter().enumerate() {
            if k.name.trim().is_empty() {
                return bad(
                    &format!("api_server.keys[{i}].name"),
                    String::new(),
                    "a key needs a name",
                );
            }
        }
        let known = api_key_names(self);
        for (i, name) in self.api_server.admin_keys.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return bad(
                    &format!("api_server.admin_keys[{i}]"),
                    name.clone(),
                    &format!(
                        "not an API key's name; expected one of {}",
                        known.join(", ")
                    ),
                );
            }
        }
        if self.storage.backend() == StorageBackend::Postgres && self.storage.postgres_url.is_none()
        {
            return bad(
                "storage.postgres_url",
                "(unset)".into(),
                "storage.backend is postgres: set the server's URL (HERMES_DATABASE_URL)",
            );
        }
        if self.storage.pool_size == 0 || self.storage.pool_size > MAX_POOL_SIZE {
            return bad(
                "storage.pool_size",
                self.storage.pool_size.to_string(),
                &format!("must be between 1 and {MAX_POOL_SIZE}"),
            );
        }
        if self.telegram.webhook_url.is_some() && self.telegram.webhook_secret.is_none() {
            return bad(
                "telegram.webhook_secret",
                "(unset)".into(),
                "webhook mode needs a secret so strangers cannot post fake updates",
            );
        }
        Ok(())
    }
}

/// The names the API keys go by (what logs and `api_server.admin_keys`
/// use, as `api::auth` names them): `default` for `api_server.key`, each
/// `api_server.keys` name, or `generated` when neither is set.
fn api_key_names(c: &Config) -> Vec<&str> {
    let mut names: Vec<&str> = c.api_server.key.iter().map(|_| "default").collect();
    names.extend(c.api_server.keys.iter().map(|k| k.name.as_str()));
    if names.is_empty() {
        names.push("generated");
    }
    names
}

fn check_toolsets(key: &str, sets: &[String]) -> Result<(), ConfigError> {
    for s in sets {
        if !TOOLSETS.contains(&s.as_str()) {
            return Err(ConfigError::BadValue {
                key: key.into(),
                value: s.clone(),
                reason: format!("unknown toolset; expected some of {}", TOOLSETS.join(", ")),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn invalid(y: &str) -> String {
        Config::from_yaml(y, Path::new("config.yaml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn negative_interval_rejected() {
        let e = invalid("streaming:\n  edit_interval: -1\n");
        assert!(
            e.contains("streaming.edit_interval") && e.contains("-1"),
            "{e}"
        );
    }

    #[test]
    fn storage_backend_follows_the_url_and_postgres_needs_one() {
        let c = |y: &str| {
            Config::from_yaml(y, Path::new("config.yaml")).unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(c("").storage.backend(), StorageBackend::Sqlite);
        let url = "storage:\n  postgres_url: postgres://h@db/h\n";
        assert_eq!(c(url).storage.backend(), StorageBackend::Postgres);
        // An explicit backend wins over a URL.
        let explicit = format!("{url}  backend: sqlite\n");
        assert_eq!(c(&explicit).storage.backend(), StorageBackend::Sqlite);
        let e = invalid("storage:\n  backend: postgres\n");
        assert!(
            e.contains("storage.postgres_url") && e.contains("HERMES_DATABASE_URL"),
            "{e}"
        );
        let e = invalid("storage:\n  pool_size: 0\n");
        assert!(e.contains("storage.pool_size"), "{e}");
        assert_eq!(invalid(url), "");
        // The environment's URL wins over the file's.
        let mut with_env = c(url);
        let env = crate::config::Env::from_pairs([("HERMES_DATABASE_URL", "postgres://h@other/h")]);
        with_env.apply_env(&env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            with_env.storage.postgres_url.as_deref(),
            Some("postgres://h@other/h")
        );
    }

    #[test]
    fn unknown_toolset_and_platform_named() {
        let e = invalid("toolsets: [file, shell]\n");
        assert!(e.contains("toolsets") && e.contains("shell"), "{e}");
        let e = invalid("platform_toolsets:\n  irc: [file]\n");
        assert!(e.contains("platform_toolsets.irc"), "{e}");
    }

    #[test]
    fn admin_keys_must_name_api_keys() {
        let keys = "api_server:\n  key: primary-key-0123456789\n  keys: [{name: alice, key: alice-key-0123456789}]\n";
        assert_eq!(
            invalid(&format!("{keys}  admin_keys: [default, alice]\n")),
            ""
        );
        let e = invalid(&format!("{keys}  admin_keys: [alice, bob]\n"));
        assert!(
            e.contains("api_server.admin_keys[1]") && e.contains("bob"),
            "{e}"
        );
        assert!(e.contains("default, alice"), "{e}");
        // With no key configured the server generates one, named `generated`.
        assert_eq!(invalid("api_server:\n  admin_keys: [generated]\n"), "");
        let e = invalid("api_server:\n  admin_keys: [default]\n");
        assert!(e.contains("api_server.admin_keys[0]"), "{e}");
    }

    #[test]
    fn telegram_webhook_needs_a_secret() {
        let e = invalid("telegram:\n  webhook_url: https://bot.example.com/hook\n");
        assert!(e.contains("telegram.webhook_secret"), "{e}");
        assert!(Config::defaults().validate().is_ok());
    }
}
