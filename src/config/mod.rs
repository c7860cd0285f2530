//! Configuration: typed settings, where they come from, and how they are checked.
//!
//! Precedence (lowest first): built-in defaults < `config.yaml` < `.env` <
//! real environment < command-line flags. `config.yaml` is parsed into
//! [`Config`] with unknown keys rejected by name; environment variables are
//! then applied by [`Config::apply_env`]; [`Config::validate`] rejects values
//! that parse but make no sense (a negative interval, an unknown toolset).
//! Every error names the key or variable at fault and the value it had.

pub mod env;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use env::Env;

use crate::secrets;

/// The upstream used when no `OPENAI_BASE_URL` / `model.base_url` is set.
pub const OPENROUTER_BASE_URL: &str = "https://openrouter.ai/api/v1";
/// The model used with OpenRouter when none is named (the reference's default).
pub const OPENROUTER_DEFAULT_MODEL: &str = "anthropic/claude-opus-4.6";
/// Every toolset the agent knows.
pub const TOOLSETS: &[&str] = &["file", "terminal", "web", "memory", "todo"];
/// Front doors that `platform_toolsets` and `streaming.<platform>` may name.
pub const PLATFORMS: &[&str] = &["cli", "api_server", "telegram", "discord", "slack"];

/// Everything that can go wrong while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path} line {line}: {reason}")]
    DotEnv {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("environment variable {var}={value} is invalid: expected {expected}")]
    BadEnv {
        var: String,
        value: String,
        expected: &'static str,
    },
    #[error("{key}: {value} is invalid: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "HERMES_HOME {path} is not usable: {reason}. Set HERMES_HOME (or --home) to a directory you can write to"
    )]
    Home { path: PathBuf, reason: String },
}

/// The whole configuration, as `config.yaml` spells it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub model: ModelConfig,
    pub agent: AgentConfig,
    /// Toolsets enabled by default: `file`, `terminal`, `web`, `memory`, `todo`.
    pub toolsets: Vec<String>,
    /// Per front door (`cli`, `api_server`, `telegram`, ...): the toolsets it gets instead.
    pub platform_toolsets: BTreeMap<String, Vec<String>>,
    pub terminal: TerminalConfig,
    pub tools: ToolsConfig,
    pub approvals: ApprovalsConfig,
    pub api_server: ApiServerConfig,
    pub streaming: StreamingConfig,
    pub telegram: PlatformConfig,
    pub discord: PlatformConfig,
    pub slack: PlatformConfig,
    pub gateway: GatewayConfig,
    pub metrics: MetricsConfig,
    pub logging: LoggingConfig,
}

/// The upstream model server. `model: name` is shorthand for `model.default`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model name sent upstream (`HERMES_MODEL`, then `LLM_MODEL`).
    pub default: Option<String>,
    /// OpenAI-compatible base URL (`OPENAI_BASE_URL`).
    pub base_url: Option<String>,
    /// Upstream key; otherwise `OPENAI_API_KEY` (custom URL) or `OPENROUTER_API_KEY`.
    pub api_key: Option<String>,
    /// Seconds to establish a connection.
    pub connect_timeout: f64,
    /// Seconds until the response head arrives.
    pub response_timeout: f64,
    /// Seconds allowed between two chunks of a stream.
    pub chunk_timeout: f64,
    /// Attempts for retryable failures (connect errors, 408, 429, 5xx).
    pub max_attempts: u32,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            default: None,
            base_url: None,
            api_key: None,
            connect_timeout: 10.0,
            response_timeout: 120.0,
            chunk_timeout: 120.0,
            max_attempts: 3,
        }
    }
}

/// Accepts both `model: "name"` and the full mapping.
impl<'de> Deserialize<'de> for ModelConfigField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ModelConfigField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a model name or a mapping with `default`, `base_url`, ...")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ModelConfigField(ModelConfig {
                    default: Some(v.to_string()),
                    ..Default::default()
                }))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(ModelConfigField(ModelConfig::default()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                ModelConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ModelConfigField)
            }
        }
        d.deserialize_any(V)
    }
}

/// Wrapper that lets `model:` be a string or a mapping.
struct ModelConfigField(ModelConfig);

/// The turn loop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Upstream calls in one turn before the final summary call (`HERMES_MAX_ITERATIONS`).
    pub max_iterations: u32,
    /// Times the model is asked to continue after `finish_reason: length`.
    pub max_continuations: u32,
    /// Characters of one tool result kept before it is cut.
    pub tool_output_cap: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_iterations: 90,
            max_continuations: 3,
            tool_output_cap: 50_000,
        }
    }
}

/// The `terminal` tool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TerminalConfig {
    /// Working directory of commands (default `$HOME`).
    pub cwd: Option<PathBuf>,
    /// Seconds a command may run when the model names no timeout.
    pub timeout: u64,
    /// The largest timeout the model may ask for.
    pub max_timeout: u64,
}

impl Default for TerminalConfig {
    fn default() -> Self {
        Self {
            cwd: None,
            timeout: 180,
            max_timeout: 3600,
        }
    }
}

/// Limits of the other tools.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    pub web_fetch: WebFetchConfig,
    pub memory: MemoryConfig,
}

/// The `web_fetch` tool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebFetchConfig {
    /// Allow loopback and private addresses (off: the agent cannot probe the LAN).
    pub allow_private: bool,
    /// Bytes of a page read at most.
    pub max_bytes: usize,
    /// Seconds for the whole fetch.
    pub timeout: f64,
}

impl Default for WebFetchConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            max_bytes: 2 * 1024 * 1024,
            timeout: 30.0,
        }
    }
}

/// The `memory` tool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Characters the memory file may hold.
    pub max_chars: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { max_chars: 8_000 }
    }
}

/// What happens to commands that match a dangerous pattern.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    /// Refuse and tell the model why.
    #[default]
    Deny,
    /// Ask the user on chat platforms; refuse where nobody can answer.
    Ask,
    /// Run everything (the operator's explicit choice).
    Off,
}

/// Dangerous-command approvals.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    pub mode: ApprovalMode,
    /// Extra regular expressions that count as dangerous.
    pub patterns: Vec<String>,
}

/// A named API key (`api_server.keys`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedKey {
    pub name: String,
    pub key: String,
}

/// How tool activity shows on the API's streams.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ToolProgress {
    #[default]
    Off,
    Events,
    Reasoning,
}

/// How the Responses API shows the tools the agent ran.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ToolItems {
    /// `mcp_call` items: tools run on the server, as OpenAI shows its own
    /// (agent libraries do not try to run them).
    #[default]
    McpCall,
    /// `function_call` + `function_call_output` pairs (the reference's shape;
    /// Open WebUI draws tool cards from them).
    FunctionCall,
    /// Only the answer's message items.
    None,
}

impl ToolItems {
    /// From the `X-Hermes-Tool-Items` header value.
    pub fn parse(v: &str) -> Option<Self> {
        match v.trim().to_ascii_lowercase().as_str() {
            "mcp_call" => Some(Self::McpCall),
            "function_call" => Some(Self::FunctionCall),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// The OpenAI-compatible HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiServerConfig {
    /// On even when chat platforms are configured (`API_SERVER_ENABLED`).
    pub enabled: bool,
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// The bearer key (`API_SERVER_KEY`).
    pub key: Option<String>,
    /// More keys, each with a name that logs show instead of the key.
    pub keys: Vec<NamedKey>,
    /// Browser origins allowed, or `*`.
    pub cors_origins: Vec<String>,
    /// The model id advertised by `/v1/models`.
    pub model_name: String,
    /// Agent runs admitted at once; 0 = unlimited.
    pub max_concurrent_runs: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Default tool progress on streams: `off`, `events`, `reasoning`.
    pub tool_progress: ToolProgress,
    /// How the Responses API shows tools the agent ran: `mcp_call`,
    /// `function_call` or `none` (`X-Hermes-Tool-Items` overrides per request).
    pub responses_tool_items: ToolItems,
    /// Seconds between SSE keep-alive comments on quiet streams (at most 15).
    pub keep_alive: f64,
    /// Seconds a client has to send a request body once its headers arrived.
    pub body_timeout: f64,
    /// MiB of stateless conversations kept in memory so a client can opt in
    /// to a session from its second turn (images and tool data count).
    pub session_cache_mb: usize,
    /// MiB of `Idempotency-Key` results kept for replay.
    pub idempotency_cache_mb: usize,
    pub response_store: ResponseStoreConfig,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 8642,
            key: None,
            keys: Vec::new(),
            cors_origins: Vec::new(),
            model_name: "hermes-agent".into(),
            max_concurrent_runs: 10,
            max_body_bytes: 10 * 1024 * 1024,
            tool_progress: ToolProgress::Off,
            responses_tool_items: ToolItems::McpCall,
            keep_alive: 10.0,
            body_timeout: 30.0,
            session_cache_mb: 64,
            idempotency_cache_mb: 64,
            response_store: ResponseStoreConfig::default(),
        }
    }
}

/// The Responses API store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseStoreConfig {
    /// Responses kept in memory.
    pub cache_size: usize,
    /// MiB those responses may take in memory, whatever their number.
    pub cache_mb: usize,
    /// Responses kept on disk; the oldest go first.
    pub max_responses: usize,
    /// Days a response is kept.
    pub ttl_days: u32,
}

impl Default for ResponseStoreConfig {
    fn default() -> Self {
        Self {
            cache_size: 1_000,
            cache_mb: 64,
            max_responses: 100_000,
            ttl_days: 30,
        }
    }
}

/// Progressive message editing on chat platforms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Master switch (`HERMES_STREAMING_ENABLED`).
    pub enabled: bool,
    /// Seconds between two edits of one message.
    pub edit_interval: f64,
    /// Deltas before the first message appears.
    pub min_tokens: usize,
    /// Appended to in-progress text.
    pub cursor: String,
    /// Per-platform overrides; when set they win over `enabled`.
    pub telegram: Option<bool>,
    pub discord: Option<bool>,
    pub slack: Option<bool>,
    pub api_server: Option<bool>,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            edit_interval: 1.5,
            min_tokens: 20,
            cursor: " ▌".into(),
            telegram: None,
            discord: None,
            slack: None,
            api_server: None,
        }
    }
}

impl StreamingConfig {
    /// Whether answers on `platform` type themselves out.
    pub fn enabled_for(&self, platform: &str) -> bool {
        let over = match platform {
            "telegram" => self.telegram,
            "discord" => self.discord,
            "slack" => self.slack,
            "api_server" => self.api_server,
            _ => None,
        };
        over.unwrap_or(self.enabled)
    }
}

/// One chat platform. It is on when its token is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformConfig {
    pub bot_token: Option<String>,
    /// Slack only: the app-level token (xapp) for Socket Mode.
    pub app_token: Option<String>,
    pub allowed_users: Vec<String>,
    pub allow_all_users: bool,
    pub api_base_url: Option<String>,
    pub home_channel: Option<String>,
    /// Discord and Slack: in channels, answer only when mentioned.
    pub require_mention: Option<bool>,
    /// Discord only: gateway websocket URL override.
    pub gateway_url: Option<String>,
    /// Telegram only: webhook mode instead of long polling.
    pub webhook_url: Option<String>,
    /// Telegram only: the secret the webhook must carry (mandatory with webhook_url).
    pub webhook_secret: Option<String>,
}

/// What a chat session does with a message that arrives while a turn runs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BusyPolicy {
    #[default]
    Interrupt,
    Queue,
}

/// The long-running gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Users allowed on every platform (`GATEWAY_ALLOWED_USERS`).
    pub allowed_users: Vec<String>,
    pub allow_all_users: bool,
    pub busy_policy: BusyPolicy,
    /// Seconds running turns get to finish at shutdown.
    pub drain_timeout: f64,
    /// Minutes of inactivity after which a chat session starts fresh; 0 = never.
    pub session_idle_minutes: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            allowed_users: Vec::new(),
            allow_all_users: false,
            busy_policy: BusyPolicy::Interrupt,
            drain_timeout: 30.0,
            session_idle_minutes: 1440,
        }
    }
}

/// `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` without auth.
    pub public: bool,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// env_logger filter used when `RUST_LOG` is unset.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// `Config` with `model:` accepting a plain string; serde reads this, then
/// converts. Kept private so the public type stays a plain struct.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    model: ModelConfigField,
    agent: AgentConfig,
    toolsets: Vec<String>,
    platform_toolsets: BTreeMap<String, Vec<String>>,
    terminal: TerminalConfig,
    tools: ToolsConfig,
    approvals: ApprovalsConfig,
    api_server: ApiServerConfig,
    streaming: StreamingConfig,
    telegram: PlatformConfig,
    discord: PlatformConfig,
    slack: PlatformConfig,
    gateway: GatewayConfig,
    metrics: MetricsConfig,
    logging: LoggingConfig,
}

impl Default for ConfigFile {
    fn default() -> Self {
        let c = Config::defaults();
        Self {
            model: ModelConfigField(c.model),
            agent: c.agent,
            toolsets: c.toolsets,
            platform_toolsets: c.platform_toolsets,
            terminal: c.terminal,
            tools: c.tools,
            approvals: c.approvals,
            api_server: c.api_server,
            streaming: c.streaming,
            telegram: c.telegram,
            discord: c.discord,
            slack: c.slack,
            gateway: c.gateway,
            metrics: c.metrics,
            logging: c.logging,
        }
    }
}

impl From<ConfigFile> for Config {
    fn from(f: ConfigFile) -> Self {
        Self {
            model: f.model.0,
            agent: f.agent,
            toolsets: f.toolsets,
            platform_toolsets: f.platform_toolsets,
            terminal: f.terminal,
            tools: f.tools,
            approvals: f.approvals,
            api_server: f.api_server,
            streaming: f.streaming,
            telegram: f.telegram,
            discord: f.discord,
            slack: f.slack,
            gateway: f.gateway,
            metrics: f.metrics,
            logging: f.logging,
        }
    }
}

impl Config {
    /// Built-in defaults (every toolset on).
    pub fn defaults() -> Self {
        Self {
            toolsets: TOOLSETS.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Parses `config.yaml` text. Unknown keys and wrong types are errors that
    /// name the full key path (`api_server.port`).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::defaults());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let file: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let message = if key == "." || key.is_empty() {
                inner
            } else {
                format!("key `{key}`: {inner}")
            };
            ConfigError::Yaml {
                path: path.to_path_buf(),
                message,
            }
        })?;
        Ok(file.into())
    }

    /// Applies the environment variables of `contract.md` on top of the file.
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

        // Chat platforms.
        for (name, platform) in [
            ("TELEGRAM", &mut self.telegram),
            ("DISCORD", &mut self.discord),
            ("SLACK", &mut self.slack),
        ] {
            if let Some(t) = env.get(&format!("{name}_BOT_TOKEN")) {
                platform.bot_token = Some(t.to_string());
            }
            if let Some(u) = env.get_list(&format!("{name}_ALLOWED_USERS")) {
                platform.allowed_users = u;
            }
            if let Some(b) = env.get_bool(&format!("{name}_ALLOW_ALL_USERS"))? {
                platform.allow_all_users = b;
            }
            if let Some(u) = env.get(&format!("{name}_API_BASE_URL")) {
                platform.api_base_url = Some(u.to_string());
            }
            if let Some(c) = env.get(&format!("{name}_HOME_CHANNEL")) {
                platform.home_channel = Some(c.to_string());
            }
            if let Some(b) = env.get_bool(&format!("{name}_REQUIRE_MENTION"))? {
                platform.require_mention = Some(b);
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
        if self.telegram.webhook_url.is_some() && self.telegram.webhook_secret.is_none() {
            return bad(
                "telegram.webhook_secret",
                "(unset)".into(),
                "webhook mode needs a secret so strangers cannot post fake updates",
            );
        }
        Ok(())
    }

    /// True when the upstream is OpenRouter (the default base URL).
    pub fn is_openrouter(&self) -> bool {
        match &self.model.base_url {
            None => true,
            Some(u) => url_host(u) == Some("openrouter.ai"),
        }
    }

    /// The base URL in effect, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.model
            .base_url
            .as_deref()
            .unwrap_or(OPENROUTER_BASE_URL)
            .trim_end_matches('/')
            .to_string()
    }

    /// The model to ask for, or `None` when the upstream is not configured.
    /// OpenRouter with a key and no model name uses the reference's default.
    pub fn model_name(&self) -> Option<String> {
        match &self.model.default {
            Some(m) if !m.trim().is_empty() => Some(m.trim().to_string()),
            _ if self.is_openrouter() && self.model.api_key.is_some() => {
                Some(OPENROUTER_DEFAULT_MODEL.to_string())
            }
            _ => None,
        }
    }

    /// Why the upstream cannot be used, in words a user can act on; `None` when it can.
    pub fn upstream_problem(&self) -> Option<String> {
        if self.is_openrouter() && self.model.api_key.is_none() {
            return Some(
                "no upstream model configured: set OPENROUTER_API_KEY (and optionally HERMES_MODEL), \
                 or point OPENAI_BASE_URL at an OpenAI-compatible server and set HERMES_MODEL \
                 (config.yaml: model.base_url, model.default)"
                    .into(),
            );
        }
        if self.model_name().is_none() {
            return Some(format!(
                "no model name configured for {}: set HERMES_MODEL (or model.default in config.yaml)",
                self.base_url()
            ));
        }
        None
    }

    /// The toolsets a front door gets.
    pub fn toolsets_for(&self, platform: &str) -> Vec<String> {
        self.platform_toolsets
            .get(platform)
            .cloned()
            .unwrap_or_else(|| self.toolsets.clone())
    }

    /// The configuration as YAML with every secret masked (`hermes config check`).
    pub fn to_masked_yaml(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        mask_secrets(&mut value, false);
        serde_yaml::to_string(&value).unwrap_or_default()
    }
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

/// The host part of an http(s) URL.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next();
    }
    host_port.split(':').next()
}

/// Masks every string under a key that names a secret.
fn mask_secrets(v: &mut serde_json::Value, secret: bool) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
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
    pub config: Config,
    pub home: PathBuf,
    pub config_path: PathBuf,
    /// Whether the file existed (otherwise defaults were used).
    pub config_file_found: bool,
    pub env: Env,
}

/// Where to look and what overrides apply (from the command line).
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub home: Option<PathBuf>,
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

    fn parse(y: &str) -> Result<Config, String> {
        Config::from_yaml(y, Path::new("config.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("api_server:\n  prot: 1\n").err().unwrap_or_default();
        assert!(e.contains("prot"), "{e}");
        assert!(e.contains("api_server"), "{e}");
    }

    #[test]
    fn bad_port_names_key_and_value() {
        let e = parse("api_server:\n  port: abc\n")
            .err()
            .unwrap_or_default();
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
        assert!(parse("model:\n  nonsense: 1\n").is_err());
    }

    #[test]
    fn negative_interval_rejected() {
        let c = parse("streaming:\n  edit_interval: -1\n").unwrap_or_default();
        let e = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("streaming.edit_interval") && e.contains("-1"),
            "{e}"
        );
    }

    #[test]
    fn env_beats_file_and_keys_go_to_their_host() {
        let mut c = parse("model:\n  default: from-file\n").unwrap_or_default();
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
    fn masked_output_hides_secrets() {
        let mut c = Config::defaults();
        c.model.api_key = Some("sk-secret-abcdefghijkl9999".into());
        c.telegram.bot_token = Some("123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ".into());
        c.api_server.keys = vec![NamedKey {
            name: "alice".into(),
            key: "alice-key-0123456789".into(),
        }];
        let y = c.to_masked_yaml();
        assert!(!y.contains("abcdefghijkl"), "{y}");
        assert!(y.contains("sk-…9999"), "{y}");
        assert!(!y.contains("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), "{y}");
        assert!(y.contains("alice"), "{y}");
        assert!(!y.contains("alice-key-0123456789"), "{y}");
    }

    #[test]
    fn streaming_override_wins() {
        let mut s = StreamingConfig {
            enabled: true,
            ..Default::default()
        };
        s.telegram = Some(false);
        assert!(!s.enabled_for("telegram"));
        assert!(s.enabled_for("discord"));
    }

    #[test]
    fn url_host_parsing() {
        assert_eq!(
            url_host("https://openrouter.ai/api/v1"),
            Some("openrouter.ai")
        );
        assert_eq!(
            url_host("http://user:pw@127.0.0.1:8080/x"),
            Some("127.0.0.1")
        );
        assert_eq!(url_host("http://[::1]:80/"), Some("::1"));
    }
}
