//! The messages of outgoing chat traffic, and [`Outbox`], the handle the
//! session router, the turn driver and stream previews write through. An
//! outbox carries its platform's [`Capabilities`] with it, so nothing that
//! holds one needs to know which platform it is. Platforms' couriers (and
//! test doubles) answer these messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::prelude::*;

use crate::platforms::{Capabilities, ChatRef, Format, PlatformError};

/// Sends a new message; answers its platform id.
/// Sent by: the stream preview (first frame, overflow, fallback tail, final
/// answer) and the session router (notices, command replies).
///
/// The courier paces it per chat and retries it through rate limits (a
/// final answer is never dropped because of one).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<String, PlatformError>")]
pub struct SendText {
    pub chat: ChatRef,
    pub text: String,
    pub format: Format,
    /// The user's message this answers.
    pub reply_to: Option<String>,
}

/// Replaces the text of a message sent earlier.
/// Sent by: the stream preview. A rate limit is returned, not waited out:
/// the preview owns its back-off. "Not modified" counts as success.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), PlatformError>")]
pub struct EditText {
    pub chat: ChatRef,
    pub message_id: String,
    pub text: String,
    pub format: Format,
}

/// Shows the typing indicator once (it expires by itself after a few
/// seconds), or, with `done`, clears it (for platforms whose indicator is a
/// status that lasts minutes).
/// Sent by: the turn driver, refreshed at the platform's cadence, and with
/// `done` once the answer is delivered.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Typing {
    pub chat: ChatRef,
    pub done: bool,
}

/// Starts a platform-native streaming message (Slack's `chat.startStream`)
/// in the chat's thread, addressed to `user_id`, showing `text`; answers its
/// id. Sent by: the native stream actor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<String, PlatformError>")]
pub struct StartStream {
    pub chat: ChatRef,
    pub user_id: String,
    /// Markdown, as the model wrote it (the platform renders it).
    pub text: String,
}

/// Appends `text` (only the new part) to a streaming message.
/// Sent by: the native stream actor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), PlatformError>")]
pub struct AppendStream {
    pub chat: ChatRef,
    pub id: String,
    pub text: String,
}

/// Ends a streaming message, appending `text` first when given.
/// Sent by: the native stream actor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), PlatformError>")]
pub struct StopStream {
    pub chat: ChatRef,
    pub id: String,
    pub text: Option<String>,
}

/// A platform's native streaming messages, where it has them: the answer
/// streams into one message the platform renders as it grows, instead of
/// being posted and edited.
#[derive(Clone)]
pub struct NativeStream {
    pub start: Recipient<StartStream>,
    pub append: Recipient<AppendStream>,
    pub stop: Recipient<StopStream>,
    /// The most characters of text one call may carry.
    pub max_chunk: usize,
    /// Cleared, for the rest of the process, the first time the platform
    /// refuses a stream (the workspace does not allow them): answers then
    /// use the common post-and-edit preview.
    pub enabled: Arc<AtomicBool>,
}

impl NativeStream {
    /// Native streams over an actor that answers the three messages.
    pub fn of<A>(addr: &Addr<A>, max_chunk: usize) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<StartStream>
            + Handler<AppendStream>
            + Handler<StopStream>,
    {
        Self {
            start: addr.clone().recipient(),
            append: addr.clone().recipient(),
            stop: addr.clone().recipient(),
            max_chunk,
            enabled: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether answers should stream natively now.
    pub fn usable(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The platform refused a stream: says so once, and streams no more.
    pub fn refused(&self, platform: &str, why: &PlatformError) {
        if self.enabled.swap(false, Ordering::Relaxed) {
            log::warn!(
                "{platform}: native streaming messages refused ({why}); answers are posted and edited instead until restart"
            );
        }
    }
}

/// A platform's outgoing side, as the rest of the gateway sees it.
#[derive(Clone)]
pub struct Outbox {
    /// The platform's registry name (logs and metrics).
    pub platform: &'static str,
    /// What the platform can do: length, editing, typing, markup, pacing.
    pub caps: Capabilities,
    pub send: Recipient<SendText>,
    pub edit: Recipient<EditText>,
    pub typing: Recipient<Typing>,
    /// Native streaming messages, on platforms that have them.
    pub stream: Option<NativeStream>,
}

impl Outbox {
    /// The outbox over an actor that answers the three messages (a courier,
    /// or a test double).
    pub fn of<A>(platform: &'static str, caps: Capabilities, addr: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<SendText> + Handler<EditText> + Handler<Typing>,
    {
        Self {
            platform,
            caps,
            send: addr.clone().recipient(),
            edit: addr.clone().recipient(),
            typing: addr.clone().recipient(),
            stream: None,
        }
    }

    /// This outbox, streaming answers natively through `stream`.
    pub fn with_stream(mut self, stream: NativeStream) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Sends a text, split to the platform's limit; answers the ids of
    /// every part, in order. Used for notices and whole answers.
    pub async fn send_split(
        &self,
        chat: &ChatRef,
        text: &str,
        format: Format,
        reply_to: Option<String>,
    ) -> Result<Vec<String>, PlatformError> {
        let parts = crate::platforms::split::split(text, self.caps.max_len, self.caps.measure);
        let mut ids = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            if part.trim().is_empty() {
                continue;
            }
            let msg = SendText {
                chat: chat.clone(),
                text: part,
                format,
                // Only the first part is a reply; the rest follow it.
                reply_to: if i == 0 { reply_to.clone() } else { None },
            };
            let id = self
                .send
                .send(msg)
                .await
                .map_err(|e| PlatformError::Unavailable(format!("platform courier: {e}")))??;
            ids.push(id);
        }
        Ok(ids)
    }
}
