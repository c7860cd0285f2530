//! Loading: where `HERMES_HOME` is, reading `.env` and `config.yaml`, and the
//! masked YAML that `hermes config check` prints.
//!
//! [`load`] resolves and creates `HERMES_HOME`, reads `.env` into the
//! [`Env`], parses `config.yaml` ([`Config::from_yaml`]: unknown keys and
//! wrong types are errors naming the full key path, with the line), applies
//! the environment and validates.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{CHAT_PLATFORMS, Config, ConfigError, Env, ModelConfig};
use crate::secrets;

/// `model:` as either a model name (shorthand for `model.default`) or the
/// full mapping; `model: null` is the defaults.
pub(super) fn model_name_or_section<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<ModelConfig, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = ModelConfig;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a model name or a mapping with `default`, `base_url`, ...")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(ModelConfig {
                default: Some(v.to_string()),
                ..Default::default()
            })
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(ModelConfig::default())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            ModelConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(V)
}

impl Config {
    /// Parses `config.yaml` text. Unknown keys and wrong types are errors that
    /// name the full key path (`api_server.port`, `telegram.gateway_url`).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::defaults());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Yaml {
                path: path.to_path_buf(),
                message: yaml_message(&key, e.into_inner()),
            }
        })
    }

    /// The configuration as YAML with every secret masked (`hermes config check`).
    pub fn to_masked_yaml(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        mask_secrets(&mut value, false);
        serde_yaml::to_string(&value).unwrap_or_default()
    }
}

/// The message of a YAML error: its line, the full key path (which, for a
/// key that is not a setting, ends with that key), and for such a key the
/// keys the section takes and which other chat platform has it, if one does.
fn yaml_message(key: &str, e: serde_yaml::Error) -> String {
    let mut text = e.to_string();
    let mut line = String::new();
    if let Some(l) = e.location() {
        line = format!("line {}: ", l.line());
        // The line is said up front; the column adds nothing a reader needs.
        text = text.replace(&format!(" at line {} column {}", l.line(), l.column()), "");
    }
    let key = if key == "." || key == "?" { "" } else { key };
    let section = key.rsplit_once('.').map_or("", |(s, _)| s);
    // serde_yaml starts with its own idea of the path; ours is complete.
    for prefix in [key, section] {
        if let Some(rest) = text
            .strip_prefix(&format!("{prefix}: "))
            .filter(|_| !prefix.is_empty())
        {
            text = rest.to_string();
            break;
        }
    }
    let Some(unknown) = unknown_field(&text) else {
        return if key.is_empty() {
            format!("{line}{text}")
        } else {
            format!("{line}key `{key}`: {text}")
        };
    };
    let mut msg = format!("{line}key `{key}` is not a setting");
    if CHAT_PLATFORMS.contains(&section) {
        let owners: Vec<&str> = CHAT_PLATFORMS
            .iter()
            .copied()
            .filter(|p| platform_keys(p).iter().any(|k| k == unknown))
            .collect();
        msg.push_str(&format!(" of {section}"));
        if !owners.is_empty() {
            msg.push_str(&format!(
                " (`{unknown}` is for {} only)",
                owners.join(" and ")
            ));
        }
    }
    if let Some(i) = text.find("expected ") {
        msg.push_str(&format!("; {}", &text[i..]));
    }
    msg
}

/// The field of serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")?
        .split('`')
        .next()
        .filter(|f| !f.is_empty())
}

/// The keys of chat platform `name`'s section.
fn platform_keys(name: &str) -> Vec<String> {
    let section = match name {
        "telegram" => serde_json::to_value(super::TelegramConfig::default()),
        "discord" => serde_json::to_value(super::DiscordConfig::default()),
        "slack" => serde_json::to_value(super::SlackConfig::default()),
        _ => return Vec::new(),
    };
    match section {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Masks every string under a key that names a secret.
fn mask_secrets(v: &mut serde_json::Value, secret: bool) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "postgres_url"
                    && let serde_json::Value::String(url) = child
                {
                    *url = secrets::mask_url_password(url);
                    continue;
                }
                let is_secret =
                    secret || k.contains("key") || k.contains("token") || k.contains("secret");
                // `api_server.keys` is a list of {name, key}: only `key` is secret.
                let is_secret = is_secret && k != "keys" && k != "name";
                mask_secrets(child, is_secret);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| mask_secrets(i, secret)),
        serde_json::Value::String(s) if secret => *s = secrets::mask(s),
        _ => {}
    }
}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The settings in effect (file, environment, validated).
    pub config: Config,
    /// `HERMES_HOME`, created and writable.
    pub home: PathBuf,
    /// The `config.yaml` read, or the one that would have been.
    pub config_path: PathBuf,
    /// Whether the file existed (otherwise defaults were used).
    pub config_file_found: bool,
    /// The environment, `.env` included.
    pub env: Env,
}

/// Where to look and what overrides apply (from the command line).
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--home`: overrides `HERMES_HOME`.
    pub home: Option<PathBuf>,
    /// `--config`: a file that must exist (default `$HERMES_HOME/config.yaml`).
    pub config_path: Option<PathBuf>,
}

/// Resolves `HERMES_HOME`: `--home`, then the variable, then `~/.hermes`.
pub fn resolve_home(opts: &LoadOptions, env: &Env) -> PathBuf {
    if let Some(h) = &opts.home {
        return h.clone();
    }
    if let Some(h) = env.get("HERMES_HOME") {
        return PathBuf::from(h);
    }
    let user_home = env
        .get("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    user_home.join(".hermes")
}

/// Creates `HERMES_HOME` (mode 0700) when missing and checks it is a writable directory.
pub fn ensure_home(home: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |reason: String| ConfigError::Home {
        path: home.to_path_buf(),
        reason,
    };
    match std::fs::metadata(home) {
        Ok(m) if !m.is_dir() => return Err(err("it exists and is not a directory".into())),
        Ok(_) => {}
        Err(_) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(home)
                .map_err(|e| err(format!("cannot create it: {e}")))?;
        }
    }
    // Probe writability for real (permission bits lie for root and on read-only mounts).
    let probe = home.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| err(format!("cannot write to it: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Loads the configuration: home, `.env`, `config.yaml`, environment; validated.
pub fn load(opts: &LoadOptions, process_env: Env) -> Result<Loaded, ConfigError> {
    let mut env = process_env;
    let home = resolve_home(opts, &env);
    ensure_home(&home)?;
    env.load_dotenv(&home.join(".env"))?;
    let config_path = opts
        .config_path
        .clone()
        .unwrap_or_else(|| home.join("config.yaml"));
    let (mut config, found) = match std::fs::read_to_string(&config_path) {
        Ok(text) => (Config::from_yaml(&text, &config_path)?, true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.config_path.is_none() => {
            (Config::defaults(), false)
        }
        Err(e) => {
            return Err(ConfigError::Io {
                path: config_path,
                source: e,
            });
        }
    };
    config.apply_env(&env)?;
    config.validate()?;
    Ok(Loaded {
        config,
        home,
        config_path,
        config_file_found: found,
        env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NamedKey;

    fn parse(y: &str) -> Result<Config, String> {
        Config::from_yaml(y, Path::new("config.yaml")).map_err(|e| e.to_string())
    }

    fn rejected(y: &str) -> String {
        parse(y).err().unwrap_or_default()
    }

    #[test]
    fn unknown_key_is_named() {
        let e = rejected("api_server:\n  prot: 1\n");
        assert!(e.contains("key `api_server.prot` is not a setting"), "{e}");
        assert!(e.contains("expected one of `enabled`"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = rejected("modle: x\n");
        assert!(e.contains("`modle`"), "{e}");
    }

    #[test]
    fn bad_port_names_key_and_value() {
        let e = rejected("api_server:\n  port: abc\n");
        assert!(e.contains("api_server.port"), "{e}");
        assert!(e.contains("abc"), "{e}");
    }

    #[test]
    fn model_may_be_a_string_or_a_map() {
        let c = parse("model: gpt-4o\n").unwrap_or_default();
        assert_eq!(c.model.default.as_deref(), Some("gpt-4o"));
        let c = parse("model:\n  default: llama3\n  base_url: http://x/v1\n").unwrap_or_default();
        assert_eq!(c.model.default.as_deref(), Some("llama3"));
        assert!(!c.is_openrouter());
        assert_eq!(parse("model:\n").ok(), Some(Config::defaults()));
        let e = rejected("model:\n  nonsense: 1\n");
        assert!(e.contains("`model.nonsense`"), "{e}");
    }

    #[test]
    fn toolsets_default_unless_the_file_sets_them() {
        let c = parse("agent:\n  max_iterations: 5\n").unwrap_or_default();
        assert_eq!(c.toolsets, Config::defaults().toolsets);
        let c = parse("toolsets: []\n").unwrap_or_default();
        assert!(c.toolsets.is_empty());
    }

    #[test]
    fn a_key_of_another_platform_is_rejected_by_path() {
        let e = rejected("telegram:\n  bot_token: x\n  gateway_url: wss://gw\n");
        assert!(
            e.contains("key `telegram.gateway_url` is not a setting"),
            "{e}"
        );
        assert!(e.contains("for discord only"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = rejected("slack:\n  webhook_url: https://x/hook\n");
        assert!(e.contains("key `slack.webhook_url`"), "{e}");
        assert!(e.contains("for telegram only"), "{e}");
        let e = rejected("discord:\n  app_token: xapp-1\n");
        assert!(
            e.contains("`discord.app_token`") && e.contains("slack"),
            "{e}"
        );
        let e = rejected("telegram:\n  bot_tokn: x\n");
        assert!(e.contains("`telegram.bot_tokn`"), "{e}");
        assert!(e.contains("expected one of `bot_token`"), "{e}");
    }

    #[test]
    fn each_platform_takes_its_own_keys() {
        let c = parse(
            "telegram:\n  webhook_url: https://x/h\n  webhook_secret: s\n  home_channel: '-100'\n\
             discord:\n  gateway_url: wss://gw\n  require_mention: false\n\
             slack:\n  app_token: xapp-1\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.telegram.home_channel.as_deref(), Some("-100"));
        assert_eq!(c.discord.gateway_url.as_deref(), Some("wss://gw"));
        assert_eq!(
            c.platform("discord").map(|p| p.require_mention),
            Some(false)
        );
        assert_eq!(c.slack.app_token.as_deref(), Some("xapp-1"));
    }

    #[test]
    fn the_repository_config_yaml_parses_to_the_defaults() {
        let text = include_str!("../../config.yaml");
        let c = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, Config::defaults());
    }

    #[test]
    fn masked_output_hides_secrets() {
        let mut c = Config::defaults();
        c.model.api_key = Some("sk-secret-abcdefghijkl9999".into());
        c.telegram.bot_token = Some("123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ".into());
        c.telegram.webhook_secret = Some("hook-secret-value-0123".into());
        c.slack.app_token = Some("xapp-1-AAAAAAAAAAAAAAAAAAAA".into());
        c.api_server.keys = vec![NamedKey {
            name: "alice".into(),
            key: "alice-key-0123456789".into(),
        }];
        c.storage.postgres_url = Some("postgres://hermes:db-pass-4242@db.internal/hermes".into());
        let y = c.to_masked_yaml();
        assert!(!y.contains("db-pass-4242"), "{y}");
        assert!(y.contains("postgres://hermes:…@db.internal/hermes"), "{y}");
        assert!(!y.contains("abcdefghijkl"), "{y}");
        assert!(y.contains("sk-…9999"), "{y}");
        assert!(!y.contains("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), "{y}");
        assert!(!y.contains("hook-secret-value"), "{y}");
        assert!(!y.contains("AAAAAAAAAAAAAAAAAAAA"), "{y}");
        assert!(y.contains("alice"), "{y}");
        assert!(!y.contains("alice-key-0123456789"), "{y}");
    }
}
