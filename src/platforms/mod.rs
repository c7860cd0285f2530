//! Platform-neutral pieces of the chat front doors: who sent what from which
//! chat ([`Inbound`]), session keys, what a platform call can fail with, and
//! the pure logic every platform shares (splitting, formatting, pacing,
//! allowlists). The platform actors in `actors/` do the talking; this module
//! has no actix in it.

pub mod access;
pub mod markdown;
pub mod pacing;
pub mod split;
pub mod telegram;

use std::time::Duration;

pub use split::Measure;

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

/// One inbound chat message, already let through the platform's own checks
/// (mentions stripped, bots ignored, duplicates dropped).
#[derive(Debug, Clone)]
pub struct Inbound {
    /// `telegram`, `discord`, `slack`.
    pub platform: &'static str,
    pub chat: ChatRef,
    pub user_id: String,
    /// The platform's id of this message (answers reply to it).
    pub message_id: String,
    pub text: String,
}

/// How a text should be rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// As it is (mid-stream frames, notices).
    Plain,
    /// Markdown, converted to the platform's own formatting (final answers).
    Markdown,
}

/// What a platform can do with messages.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest message, in `measure` units.
    pub max_len: usize,
    pub measure: Measure,
    /// Whether sent messages can be edited (the stream preview needs it).
    pub can_edit: bool,
}

/// Why a platform call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlatformError {
    /// The platform asked us to wait this long.
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Duration),
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
