//! The messages of outgoing chat traffic, and [`Outbox`], the handle the
//! session router, the turn driver and stream previews write through. An
//! outbox carries its platform's [`Capabilities`] with it, so nothing that
//! holds one needs to know which platform it is. Platforms' couriers (and
//! test doubles) answer these messages.

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

/// Shows the typing indicator once (it expires by itself after a few seconds).
/// Sent by: the turn driver, refreshed at the platform's cadence.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Typing {
    pub chat: ChatRef,
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
        }
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
