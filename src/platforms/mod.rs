//! The chat platform layer's shared vocabulary, with no platform named in
//! it: who sent what from which chat ([`Inbound`]), session keys, what a
//! platform can do ([`Capabilities`], a value each platform supplies), what a
//! platform call can fail with ([`PlatformError`], typed once inside each
//! platform's own module), and the registry of platforms ([`ALL`]) that
//! configuration, the router, health and metrics read.
//!
//! Each platform is one actor in `actors/` (the only code that talks to it)
//! and one pure module here (its wire format: request bodies, parsing,
//! error classification). Everything else is shared: splitting, Markdown
//! rendering, pacing, allowlists, the courier. No actix in this module.
//!
//! Adding a platform: an entry in [`ALL`], its pure module, its actor (with
//! a [`courier::Wire`] for its API calls), and a fake server in `testing/`.

pub mod access;
pub mod consumer;
pub mod courier;
pub mod discord;
pub mod liveness;
pub mod markup;
pub mod pacing;
pub mod slack;
pub mod split;
pub mod telegram;

use std::time::Duration;

pub use pacing::PaceRules;
pub use split::Measure;

/// One chat platform, as the rest of the gateway knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformInfo {
    /// `telegram`, `discord`, `slack`: logs, metrics, health, session keys,
    /// configuration sections, environment prefixes.
    pub name: &'static str,
    /// How people write it.
    pub title: &'static str,
}

/// Every chat platform the gateway knows.
pub const ALL: &[PlatformInfo] = &[
    PlatformInfo {
        name: "telegram",
        title: "Telegram",
    },
    PlatformInfo {
        name: "discord",
        title: "Discord",
    },
    PlatformInfo {
        name: "slack",
        title: "Slack",
    },
];

/// The registry entry of `name`.
pub fn info(name: &str) -> Option<&'static PlatformInfo> {
    ALL.iter().find(|p| p.name == name)
}

/// What a platform can do with messages: everything the shared chat core
/// needs to know about it, carried with its outbox.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// The longest message, in `measure` units.
    pub max_len: usize,
    pub measure: Measure,
    /// The shortest time between two edits of one message the platform
    /// tolerates; `None` when messages cannot be edited (no live preview).
    pub edit_floor: Option<Duration>,
    /// How often the typing indicator must be refreshed while a turn runs
    /// (it expires on its own); `None` for platforms without one.
    pub typing_every: Option<Duration>,
    /// Markdown (as models write it) in the platform's own markup.
    pub render: fn(&str) -> String,
    /// Spacing of calls into one chat, so bursts queue instead of earning
    /// rate limits.
    pub pace: PaceRules,
}

impl Capabilities {
    /// Whether sent messages can be edited (the stream preview needs it).
    pub fn can_edit(&self) -> bool {
        self.edit_floor.is_some()
    }
}

/// What kind of conversation a chat is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatKind {
    /// A direct message with one user.
    Dm,
    /// A group (several people).
    Group,
    /// A broadcast channel.
    Channel,
}

/// Where a message came from and where the answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRef {
    pub id: String,
    pub kind: ChatKind,
    /// A topic or thread inside the chat, where the platform has them.
    pub thread: Option<String>,
}

impl ChatRef {
    /// The session key of this chat on `platform` (one conversation per chat):
    /// `agent:main:<platform>:dm:<chat_id>` or
    /// `agent:main:<platform>:<group|channel>:<chat_id>[:<thread_id>]`.
    pub fn session_key(&self, platform: &str) -> String {
        let kind = match self.kind {
            ChatKind::Dm => return format!("agent:main:{platform}:dm:{}", self.id),
            ChatKind::Group => "group",
            ChatKind::Channel => "channel",
        };
        match &self.thread {
            Some(t) => format!("agent:main:{platform}:{kind}:{}:{t}", self.id),
            None => format!("agent:main:{platform}:{kind}:{}", self.id),
        }
    }
}

/// What a platform's event is, for the gateway.
#[derive(Debug)]
pub enum Parsed {
    /// A message for the router; `dedup` identifies it across redeliveries.
    Message { inbound: Inbound, dedup: String },
    /// Not for us (no text, a bot, not addressed to the bot in a group, ...).
    Skip(&'static str),
}

/// One inbound chat message, already let through the platform's own checks
/// (mentions stripped, bots ignored, duplicates dropped).
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The platform's registry name ([`PlatformInfo::name`]).
    pub platform: &'static str,
    pub chat: ChatRef,
    pub user_id: String,
    /// The platform's id of this message (answers reply to it).
    pub message_id: String,
    pub text: String,
    /// A command typed where no thread can be named (Slack's slash commands
    /// in a channel): it acts on every session of the chat's threads.
    pub whole_chat: bool,
}

/// How a text should be rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// As it is (mid-stream frames, notices).
    Plain,
    /// Markdown, converted to the platform's own formatting (final answers).
    Markdown,
}

/// Why a platform call failed, decided once by the platform's own module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlatformError {
    /// Wait this long before the next call: into this chat, or into any
    /// chat when `global`.
    #[error("rate limited; retry after {retry_after:?} (global: {global})")]
    RateLimited { retry_after: Duration, global: bool },
    /// An edit that would not change the message (which is success).
    #[error("the message already shows this text")]
    NotModified,
    /// The platform could not parse the formatted text; plain text will do.
    #[error("formatting rejected: {0}")]
    FormatRejected(String),
    /// The platform refused the request (bad request, message gone, no rights).
    #[error("refused: {0}")]
    Refused(String),
    /// The platform could not be reached, or failed on its side.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The token was rejected.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Another connection holds the bot's updates (a second poller, a webhook).
    #[error("conflict: {0}")]
    Conflict(String),
}

impl PlatformError {
    /// A rate limit for one chat.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::RateLimited {
            retry_after,
            global: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys() {
        let dm = ChatRef {
            id: "42".into(),
            kind: ChatKind::Dm,
            thread: None,
        };
        assert_eq!(dm.session_key("telegram"), "agent:main:telegram:dm:42");
        let topic = ChatRef {
            id: "-100".into(),
            kind: ChatKind::Group,
            thread: Some("7".into()),
        };
        assert_eq!(
            topic.session_key("telegram"),
            "agent:main:telegram:group:-100:7"
        );
        let ch = ChatRef {
            id: "C1".into(),
            kind: ChatKind::Channel,
            thread: None,
        };
        assert_eq!(ch.session_key("slack"), "agent:main:slack:channel:C1");
    }
}
