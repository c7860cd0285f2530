//! The typed settings: one struct per `config.yaml` section, with serde
//! attributes, built-in defaults and a doc comment per key.
//!
//! Every section rejects keys it does not have (`deny_unknown_fields`) and
//! fills missing keys from its `Default`. The three chat platforms have one
//! section type each, so a key of one platform (`gateway_url`) is an error in
//! another's section; [`PlatformCommon`] is the view of what they share.
//! Also here: the small derived answers code asks of a [`Config`] (the model
//! in effect, the toolsets of a front door, a platform's common settings).

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The upstream used when no `OPENAI_BASE_URL` / `model.base_url` is set.
pub const OPENROUTER_BASE_URL: &str = "https://openrouter.ai/api/v1";
/// The model used with OpenRouter when none is named (the reference's default).
pub const OPENROUTER_DEFAULT_MODEL: &str = "anthropic/claude-opus-4.6";
/// Every toolset the agent knows.
pub const TOOLSETS: &[&str] = &["file", "terminal", "web", "memory", "todo"];
/// Front doors that `platform_toolsets` and `streaming.<platform>` may name.
pub const PLATFORMS: &[&str] = &["cli", "api_server", "telegram", "discord", "slack"];
/// The chat platforms, each with its own section ([`Config::platform`]).
pub const CHAT_PLATFORMS: &[&str] = &["telegram", "discord", "slack"];

/// The whole configuration, as `config.yaml` spells it. A key the file
/// leaves out has its value from [`Config::defaults`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default = "Config::defaults")]
pub struct Config {
    /// The upstream model server; `model: name` is shorthand for `model.default`.
    #[serde(deserialize_with = "super::load::model_name_or_section")]
    pub model: ModelConfig,
    /// The turn loop.
    pub agent: AgentConfig,
    /// Toolsets enabled by default: `file`, `terminal`, `web`, `memory`, `todo`.
    pub toolsets: Vec<String>,
    /// Per front door (`cli`, `api_server`, `telegram`, ...): the toolsets it gets instead.
    pub platform_toolsets: BTreeMap<String, Vec<String>>,
    /// The `terminal` tool.
    pub terminal: TerminalConfig,
    /// Limits of the other tools.
    pub tools: ToolsConfig,
    /// Dangerous-command approvals.
    pub approvals: ApprovalsConfig,
    /// The OpenAI-compatible HTTP API.
    pub api_server: ApiServerConfig,
    /// Progressive message editing on chat platforms.
    pub streaming: StreamingConfig,
    /// The Telegram bot.
    pub telegram: TelegramConfig,
    /// The Discord bot.
    pub discord: DiscordConfig,
    /// The Slack app.
    pub slack: SlackConfig,
    /// The long-running gateway: allowlists for every platform, sessions, shutdown.
    pub gateway: GatewayConfig,
    /// `/metrics`.
    pub metrics: MetricsConfig,
    /// Logging.
    pub logging: LoggingConfig,
    /// Where durable state is kept, and this instance's name among others.
    pub storage: StorageConfig,
}

/// The upstream model server.
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
    /// The `web_fetch` tool.
    pub web_fetch: WebFetchConfig,
    /// The `memory` tool.
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
    /// `deny`, `ask` or `off`.
    pub mode: ApprovalMode,
    /// Extra regular expressions that count as dangerous.
    pub patterns: Vec<String>,
}

/// A named API key (`api_server.keys`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedKey {
    /// What logs show instead of the key.
    pub name: String,
    /// The bearer key itself.
    pub key: String,
}

/// How tool activity shows on the API's streams.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ToolProgress {
    /// Nothing but the answer.
    #[default]
    Off,
    /// Tool activity as extra stream events.
    Events,
    /// Tool activity as reasoning text.
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
    /// Bind address (`API_SERVER_HOST`).
    pub host: String,
    /// Port (`API_SERVER_PORT`); 0 picks a free port.
    pub port: u16,
    /// The bearer key (`API_SERVER_KEY`).
    pub key: Option<String>,
    /// More keys, each with a name that logs show instead of the key.
    pub keys: Vec<NamedKey>,
    /// Names of the keys (`default` for `key`, a `keys` entry's name,
    /// `generated`) that see every stored session, chat platforms' too,
    /// through `/api/sessions`; other keys see only the sessions they created.
    pub admin_keys: Vec<String>,
    /// Browser origins allowed, or `*` (`API_SERVER_CORS_ORIGINS`).
    pub cors_origins: Vec<String>,
    /// The model id advertised by `/v1/models` (`API_SERVER_MODEL_NAME`).
    pub model_name: String,
    /// Agent runs admitted at once; 0 = unlimited (`API_SERVER_MAX_CONCURRENT_RUNS`).
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
    /// The Responses API store.
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
            admin_keys: Vec::new(),
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
    /// Telegram's override of `enabled`; when set it wins.
    pub telegram: Option<bool>,
    /// Discord's override of `enabled`; when set it wins.
    pub discord: Option<bool>,
    /// Slack's override of `enabled`; when set it wins.
    pub slack: Option<bool>,
    /// Accepted for compatibility: the API streams whenever a client asks.
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

/// The Telegram bot. It is on when `bot_token` is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// The bot token from @BotFather (`TELEGRAM_BOT_TOKEN`).
    pub bot_token: Option<String>,
    /// Numeric user ids allowed to talk to the bot (`TELEGRAM_ALLOWED_USERS`).
    pub allowed_users: Vec<String>,
    /// Anyone may talk to the bot (`TELEGRAM_ALLOW_ALL_USERS`).
    pub allow_all_users: bool,
    /// Bot API server; `None` = `https://api.telegram.org` (`TELEGRAM_API_BASE_URL`).
    pub api_base_url: Option<String>,
    /// In groups, answer only when mentioned or replied to; `None` = false
    /// (`TELEGRAM_REQUIRE_MENTION`).
    pub require_mention: Option<bool>,
    /// Chat id for the gateway's own notices (`TELEGRAM_HOME_CHANNEL`).
    pub home_channel: Option<String>,
    /// Webhook mode instead of long polling: the public URL whose path this
    /// server serves.
    pub webhook_url: Option<String>,
    /// The secret Telegram sends with each webhook call (mandatory with `webhook_url`).
    pub webhook_secret: Option<String>,
}

/// The Discord bot. It is on when `bot_token` is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {
    /// The bot token (`DISCORD_BOT_TOKEN`).
    pub bot_token: Option<String>,
    /// User ids allowed to talk to the bot (`DISCORD_ALLOWED_USERS`).
    pub allowed_users: Vec<String>,
    /// Anyone may talk to the bot (`DISCORD_ALLOW_ALL_USERS`).
    pub allow_all_users: bool,
    /// REST API; `None` = `https://discord.com/api/v10` (`DISCORD_API_BASE_URL`).
    pub api_base_url: Option<String>,
    /// In server channels, answer only when mentioned; `None` = true
    /// (`DISCORD_REQUIRE_MENTION`).
    pub require_mention: Option<bool>,
    /// Channel id for the gateway's own notices (`DISCORD_HOME_CHANNEL`).
    pub home_channel: Option<String>,
    /// Gateway websocket URL; `None` = ask `GET /gateway/bot` (`DISCORD_GATEWAY_URL`).
    pub gateway_url: Option<String>,
}

/// The Slack app (Socket Mode). It is on when `bot_token` is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// The bot token, `xoxb-…` (`SLACK_BOT_TOKEN`).
    pub bot_token: Option<String>,
    /// The app-level token for Socket Mode, `xapp-…` (`SLACK_APP_TOKEN`).
    pub app_token: Option<String>,
    /// User ids allowed to talk to the bot (`SLACK_ALLOWED_USERS`).
    pub allowed_users: Vec<String>,
    /// Anyone may talk to the bot (`SLACK_ALLOW_ALL_USERS`).
    pub allow_all_users: bool,
    /// Web API; `None` = `https://slack.com/api` (`SLACK_API_BASE_URL`).
    pub api_base_url: Option<String>,
    /// In channels, answer only when mentioned; `None` = true (`SLACK_REQUIRE_MENTION`).
    pub require_mention: Option<bool>,
    /// Channel id for the gateway's own notices (`SLACK_HOME_CHANNEL`).
    pub home_channel: Option<String>,
}

/// What every chat platform's section has, read by platform name
/// ([`Config::platform`]). `require_mention` is the value in effect: the
/// section's, or the platform's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformCommon<'a> {
    /// The bot token; the platform is on when it is set.
    pub bot_token: Option<&'a str>,
    /// The platform's own allowlist (`gateway.allowed_users` comes on top).
    pub allowed_users: &'a [String],
    /// Anyone may talk to the bot.
    pub allow_all_users: bool,
    /// In group chats, answer only when mentioned (default applied).
    pub require_mention: bool,
    /// Chat/channel id for the gateway's own notices.
    pub home_channel: Option<&'a str>,
    /// The platform API override; `None` = the platform's public API.
    pub api_base_url: Option<&'a str>,
}

/// [`PlatformCommon`] for writing: the environment overlay sets these by
/// platform name.
pub(super) struct PlatformCommonMut<'a> {
    pub bot_token: &'a mut Option<String>,
    pub allowed_users: &'a mut Vec<String>,
    pub allow_all_users: &'a mut bool,
    pub require_mention: &'a mut Option<bool>,
    pub home_channel: &'a mut Option<String>,
    pub api_base_url: &'a mut Option<String>,
}

/// The section types of the chat platforms, with their mention default.
macro_rules! chat_platform {
    ($t:ty, $require_mention:expr) => {
        impl $t {
            /// `require_mention` when the section leaves it unset.
            pub const REQUIRE_MENTION_DEFAULT: bool = $require_mention;

            /// The settings every chat platform has.
            pub fn common(&self) -> PlatformCommon<'_> {
                PlatformCommon {
                    bot_token: self.bot_token.as_deref(),
                    allowed_users: &self.allowed_users,
                    allow_all_users: self.allow_all_users,
                    require_mention: self.require_mention.unwrap_or($require_mention),
                    home_channel: self.home_channel.as_deref(),
                    api_base_url: self.api_base_url.as_deref(),
                }
            }

            pub(super) fn common_mut(&mut self) -> PlatformCommonMut<'_> {
                PlatformCommonMut {
                    bot_token: &mut self.bot_token,
                    allowed_users: &mut self.allowed_users,
                    allow_all_users: &mut self.allow_all_users,
                    require_mention: &mut self.require_mention,
                    home_channel: &mut self.home_channel,
                    api_base_url: &mut self.api_base_url,
                }
            }
        }
    };
}

chat_platform!(TelegramConfig, false);
chat_platform!(DiscordConfig, true);
chat_platform!(SlackConfig, true);

/// What a chat session does with a message that arrives while a turn runs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BusyPolicy {
    /// Stop the running turn and start on the new message.
    #[default]
    Interrupt,
    /// Run the new message after the running turn.
    Queue,
}

/// The long-running gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Users allowed on every platform (`GATEWAY_ALLOWED_USERS`).
    pub allowed_users: Vec<String>,
    /// Anyone may talk to the bot on every platform (`GATEWAY_ALLOW_ALL_USERS`).
    pub allow_all_users: bool,
    /// A message during a running turn: `interrupt` or `queue`.
    pub busy_policy: BusyPolicy,
    /// Seconds running turns get to finish at shutdown.
    pub drain_timeout: f64,
    /// Minutes of inactivity after which a chat session starts fresh; 0 = never
    /// (`SESSION_IDLE_MINUTES`).
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

/// Which storage backend keeps the durable state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// The embedded `state.db` in `HERMES_HOME`.
    Sqlite,
    /// A PostgreSQL server several instances share.
    Postgres,
}

/// Where durable state is kept (`scale-out.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite` or `postgres`. Unset: `postgres` when a URL is given
    /// (`storage.postgres_url` or `HERMES_DATABASE_URL`), else `sqlite`.
    pub backend: Option<StorageBackend>,
    /// The PostgreSQL server (`HERMES_DATABASE_URL` wins).
    pub postgres_url: Option<String>,
    /// Pooled PostgreSQL connections per instance.
    pub pool_size: usize,
    /// This instance's name in leases and `/health/detailed`; default
    /// `<hostname>-<pid>`.
    pub instance_id: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: None,
            postgres_url: None,
            pool_size: crate::store::pg::DEFAULT_POOL_SIZE,
            instance_id: None,
        }
    }
}

impl StorageConfig {
    /// The backend in effect: the one set, else PostgreSQL when a URL is
    /// given, else SQLite.
    pub fn backend(&self) -> StorageBackend {
        match (self.backend, &self.postgres_url) {
            (Some(b), _) => b,
            (None, Some(_)) => StorageBackend::Postgres,
            (None, None) => StorageBackend::Sqlite,
        }
    }
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

impl Config {
    /// Built-in defaults (every toolset on).
    pub fn defaults() -> Self {
        Self {
            toolsets: TOOLSETS.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// The common settings of chat platform `name` (`telegram`, `discord`,
    /// `slack`); `None` for any other name.
    pub fn platform(&self, name: &str) -> Option<PlatformCommon<'_>> {
        match name {
            "telegram" => Some(self.telegram.common()),
            "discord" => Some(self.discord.common()),
            "slack" => Some(self.slack.common()),
            _ => None,
        }
    }

    /// Every chat platform with its common settings, in [`CHAT_PLATFORMS`] order.
    pub fn platforms(&self) -> impl Iterator<Item = (&'static str, PlatformCommon<'_>)> {
        CHAT_PLATFORMS
            .iter()
            .filter_map(|&n| self.platform(n).map(|p| (n, p)))
    }

    /// The chat platforms that are configured (have a bot token), in
    /// [`CHAT_PLATFORMS`] order.
    pub fn configured_platforms(&self) -> Vec<&'static str> {
        self.platforms()
            .filter(|(_, p)| p.bot_token.is_some())
            .map(|(n, _)| n)
            .collect()
    }

    /// [`Config::platform`] for writing (the environment overlay).
    pub(super) fn platform_mut(&mut self, name: &str) -> Option<PlatformCommonMut<'_>> {
        match name {
            "telegram" => Some(self.telegram.common_mut()),
            "discord" => Some(self.discord.common_mut()),
            "slack" => Some(self.slack.common_mut()),
            _ => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_mention_defaults_per_platform() {
        let mut c = Config::defaults();
        let mention = |c: &Config, p| c.platform(p).map(|p| p.require_mention);
        assert_eq!(mention(&c, "telegram"), Some(false));
        assert_eq!(mention(&c, "discord"), Some(true));
        assert_eq!(mention(&c, "slack"), Some(true));
        assert_eq!(mention(&c, "api_server"), None);
        c.telegram.require_mention = Some(true);
        c.slack.require_mention = Some(false);
        assert_eq!(mention(&c, "telegram"), Some(true));
        assert_eq!(mention(&c, "slack"), Some(false));
    }

    #[test]
    fn platform_view_reads_each_section() {
        let mut c = Config::defaults();
        c.discord.bot_token = Some("d".into());
        c.slack.home_channel = Some("C123".into());
        c.telegram.allowed_users = vec!["42".into()];
        assert_eq!(c.platform("discord").and_then(|p| p.bot_token), Some("d"));
        assert_eq!(
            c.platform("slack").and_then(|p| p.home_channel),
            Some("C123")
        );
        assert_eq!(
            c.platform("telegram").map(|p| p.allowed_users.to_vec()),
            Some(vec!["42".to_string()])
        );
        let names: Vec<_> = c.platforms().map(|(n, _)| n).collect();
        assert_eq!(names, CHAT_PLATFORMS);
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
