//! API keys: the start-up rules and the per-request check.
//!
//! Rules: configured keys must be at least 16 characters and
//! not placeholders; with no key on a loopback bind a random key is generated
//! into `$HERMES_HOME/api_server.key` (0600) and reused; with no key on any
//! other address the server refuses to start. Requests are checked in
//! constant time against every key; logs name the key, never show it.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::config::ApiServerConfig;

/// Shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;
/// Random bytes in a generated key (hex-encoded: 48 characters).
const GENERATED_KEY_BYTES: usize = 24;
/// Words that mark a key as a placeholder copied from an example.
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "your-api-key",
    "your_api_key",
    "yourapikey",
    "placeholder",
    "example",
    "dummy",
    "replace-me",
    "replaceme",
    "xxxxxxxx",
    "secret-key-here",
];

/// Why the API server cannot start with its keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "API key `{name}` is {len} characters long; API_SERVER_KEY must be at least {MIN_KEY_LEN} characters"
    )]
    TooShort { name: String, len: usize },
    #[error(
        "API key `{name}` looks like a placeholder; set API_SERVER_KEY to a random secret (e.g. `openssl rand -hex 24`)"
    )]
    Placeholder { name: String },
    #[error(
        "refusing to listen on {host} without an API key: set API_SERVER_KEY (16+ characters) or bind 127.0.0.1"
    )]
    NoKeyOnPublicBind { host: String },
    #[error("cannot use the generated key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
}

/// The keys requests are checked against.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(n, _)| n))
            .finish()
    }
}

/// Where the keys came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Configured(usize),
    Generated(PathBuf),
    Reused(PathBuf),
}

/// True for loopback addresses and `localhost`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_strength(name: &str, key: &str) -> Result<(), KeyError> {
    let len = key.chars().count();
    if len < MIN_KEY_LEN {
        return Err(KeyError::TooShort {
            name: name.into(),
            len,
        });
    }
    let lower = key.to_ascii_lowercase();
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return Err(KeyError::Placeholder { name: name.into() });
    }
    Ok(())
}

impl ApiKeys {
    /// Keys from configuration, or the generated key, by the rules above.
    pub fn resolve(cfg: &ApiServerConfig, home: &Path) -> Result<(Self, KeySource), KeyError> {
        let mut keys = Vec::new();
        if let Some(k) = &cfg.key {
            check_strength("default", k)?;
            keys.push(("default".to_string(), k.as_bytes().to_vec()));
        }
        for nk in &cfg.keys {
            check_strength(&nk.name, &nk.key)?;
            keys.push((nk.name.clone(), nk.key.as_bytes().to_vec()));
        }
        if !keys.is_empty() {
            let n = keys.len();
            return Ok((Self { keys }, KeySource::Configured(n)));
        }
        if !is_loopback(&cfg.host) {
            return Err(KeyError::NoKeyOnPublicBind {
                host: cfg.host.clone(),
            });
        }
        let path = home.join("api_server.key");
        let (key, source) = load_or_generate(&path)?;
        Ok((
            Self {
                keys: vec![("generated".into(), key.into_bytes())],
            },
            source,
        ))
    }

    /// Keys given directly (tests, embedding).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self {
            keys: pairs
                .iter()
                .map(|(n, k)| (n.to_string(), k.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// The name of the key an `Authorization` header carries, if any matches.
    /// Every key is compared, in constant time, whatever matches first.
    pub fn check(&self, authorization: Option<&[u8]>) -> Option<&str> {
        let token = authorization.and_then(|h| {
            let h = trim_ascii(h);
            let scheme = h.get(..7)?;
            if scheme.eq_ignore_ascii_case(b"bearer ") {
                Some(trim_ascii(&h[7..]))
            } else {
                None
            }
        })?;
        let mut found = None;
        for (name, key) in &self.keys {
            if bool::from(key.as_slice().ct_eq(token)) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn load_or_generate(path: &Path) -> Result<(String, KeySource), KeyError> {
    let err = |reason: String| KeyError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim().to_string();
            check_strength("generated", &key).map_err(|e| err(e.to_string()))?;
            return Ok((key, KeySource::Reused(path.to_path_buf())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let mut bytes = [0u8; GENERATED_KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| err(e.to_string()))?;
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let key = format!("hermes-{key}");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    writeln!(f, "{key}").map_err(|e| err(e.to_string()))?;
    Ok((key, KeySource::Generated(path.to_path_buf())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NamedKey;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn strength_rules() {
        let mut c = ApiServerConfig {
            key: Some("short".into()),
            ..Default::default()
        };
        let home = std::env::temp_dir();
        assert!(matches!(
            ApiKeys::resolve(&c, &home),
            Err(KeyError::TooShort { .. })
        ));
        c.key = Some("changeme-changeme-changeme".into());
        assert!(matches!(
            ApiKeys::resolve(&c, &home),
            Err(KeyError::Placeholder { .. })
        ));
        c.key = Some("a-real-random-key-0123456789".into());
        assert!(ApiKeys::resolve(&c, &home).is_ok());
    }

    #[test]
    fn generated_on_loopback_reused_and_private() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let c = ApiServerConfig::default();
        let (k1, s1) = ApiKeys::resolve(&c, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(s1, KeySource::Generated(_)));
        let (k2, s2) = ApiKeys::resolve(&c, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(s2, KeySource::Reused(_)));
        assert_eq!(k1.keys, k2.keys);
        let mode = std::fs::metadata(dir.path().join("api_server.key"))
            .map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        let public = ApiServerConfig {
            host: "0.0.0.0".into(),
            ..Default::default()
        };
        assert!(matches!(
            ApiKeys::resolve(&public, dir.path()),
            Err(KeyError::NoKeyOnPublicBind { .. })
        ));
    }

    #[test]
    fn check_names_the_key() {
        let c = ApiServerConfig {
            key: Some("primary-key-0123456789".into()),
            keys: vec![NamedKey {
                name: "alice".into(),
                key: "alice-key-0123456789".into(),
            }],
            ..Default::default()
        };
        let (keys, _) =
            ApiKeys::resolve(&c, &std::env::temp_dir()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            keys.check(Some(b"Bearer alice-key-0123456789")),
            Some("alice")
        );
        assert_eq!(
            keys.check(Some(b"bearer primary-key-0123456789 ")),
            Some("default")
        );
        assert_eq!(keys.check(Some(b"Bearer nope")), None);
        assert_eq!(keys.check(Some("Bearer ключ".as_bytes())), None);
        assert_eq!(keys.check(Some(b"Basic abc")), None);
        assert_eq!(keys.check(None), None);
    }
}
