//! Configuration: typed settings, where they come from, and how they are checked.
//!
//! Precedence (lowest first): built-in defaults < `config.yaml` < `.env` <
//! real environment < command-line flags. Every error names the key or
//! variable at fault and the value it had.
//!
//! One file per job:
//! - `schema.rs`: the typed sections ([`Config`], one struct per
//!   `config.yaml` section, one per chat platform) with their defaults and
//!   docs; [`PlatformCommon`], what every chat platform has, by name
//!   ([`Config::platform`]); the derived answers (model in effect, toolsets).
//! - `env.rs`: [`Env`], the process environment over `$HERMES_HOME/.env`, and
//!   [`Config::apply_env`], the environment variables (listed in `config.yaml` beside their keys) over the file.
//! - `validate.rs`: [`Config::validate`], values that parse but cannot work.
//! - `load.rs`: `HERMES_HOME` ([`resolve_home`], [`ensure_home`]),
//!   [`Config::from_yaml`] (unknown keys rejected by full path, so a key of
//!   another platform's section is an error), [`load`] into [`Loaded`], and
//!   [`Config::to_masked_yaml`] for `hermes config check`.
//!
//! Command-line flags are applied by their commands, after [`load`].

pub mod env;
mod load;
mod schema;
mod validate;

use std::path::PathBuf;

pub use env::Env;
pub use load::{LoadOptions, Loaded, ensure_home, load, resolve_home};
pub use schema::*;

/// Everything that can go wrong while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `config.yaml` does not parse, or has a key that is not a setting.
    #[error("{path}: {message}")]
    Yaml { path: PathBuf, message: String },
    /// A `.env` line that is not `KEY=VALUE`.
    #[error("{path} line {line}: {reason}")]
    DotEnv {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// An environment variable whose value does not parse.
    #[error("environment variable {var}={value} is invalid: expected {expected}")]
    BadEnv {
        var: String,
        value: String,
        expected: &'static str,
    },
    /// A value that parses but cannot work.
    #[error("{key}: {value} is invalid: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    /// `HERMES_HOME` cannot be created or written.
    #[error(
        "HERMES_HOME {path} is not usable: {reason}. Set HERMES_HOME (or --home) to a directory you can write to"
    )]
    Home { path: PathBuf, reason: String },
}
