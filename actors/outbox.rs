//! The messages every platform actor (Telegram today; Discord and Slack
//! follow) accepts for outgoing traffic, and [`Outbox`], the platform-neutral
//! handle the session router and stream previews write through. Only
//! platform actors talk to their platform; everything else holds an `Outbox`.

use actix::prelude::*;

use crate::platforms::{ChatRef, Format, Limits, PlatformError};

/// Sends a new message; answers its platform id.
/// Sent by: the stream preview (first frame, overflow, fallback tail, final
/// answer) and the session router (notices, command replies).
///
/// The platform actor paces it per chat and retries it through rate limits
/// (a final answer is never dropped because of one).
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
/// Sent by: the session router's turn driver, refreshed while a turn runs.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Typing {
    pub chat: ChatRef,
}

/// A platform's outgoing side, as the rest of the gateway sees it.
#[derive(Clone)]
pub struct Outbox {
    /// `telegram`, `discord`, `slack`.
    pub platform: &'static str,
    pub limits: Limits,
    pub send: Recipient<SendText>,
    pub edit: Recipient<EditText>,
    pub typing: Recipient<Typing>,
}

impl Outbox {
    /// The outbox of a platform actor.
    pub fn of<A>(platform: &'static str, limits: Limits, addr: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<SendText> + Handler<EditText> + Handler<Typing>,
    {
        Self {
            platform,
            limits,
            send: addr.clone().recipient(),
            edit: addr.clone().recipient(),
            typing: addr.clone().recipient(),
        }
    }

    /// Sends a text, split to the platform's limit; answers the id of the
    /// last part. Used for notices and whole answers.
    pub async fn send_split(
        &self,
        chat: &ChatRef,
        text: &str,
        format: Format,
        reply_to: Option<String>,
    ) -> Result<String, PlatformError> {
        let parts = crate::platforms::split::split(text, self.limits.max_len, self.limits.measure);
        let mut last = String::new();
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
            last = self
                .send
                .send(msg)
                .await
                .map_err(|e| PlatformError::Unavailable(format!("platform actor: {e}")))??;
        }
        Ok(last)
    }
}
