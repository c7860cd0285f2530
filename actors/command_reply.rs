//! `CommandReply`: the outbox of one slash command. Platforms answer a
//! slash command through a channel of its own (Discord's interaction
//! callback, Slack's envelope acknowledgement), not as a chat message; the
//! router replies to it as to any message, and this actor hands each reply
//! to the platform's own send function. Replies are never edited and show
//! no typing indicator.

use actix::prelude::*;

use super::outbox::{EditText, Outbox, SendText, Typing};
use crate::platforms::courier::Call;
use crate::platforms::{Capabilities, PlatformError};

/// Sends one reply text; answers an id for it.
pub type ReplyFn = Box<dyn FnMut(String) -> Call<String>>;

/// The replies to one slash command.
pub struct CommandReply {
    send: ReplyFn,
}

impl CommandReply {
    /// Starts the reply actor and answers the outbox the router writes to.
    pub fn outbox(platform: &'static str, caps: Capabilities, send: ReplyFn) -> Outbox {
        let caps = Capabilities {
            edit_floor: None,
            typing_every: None,
            ..caps
        };
        Outbox::of(platform, caps, &Self { send }.start())
    }
}

impl Actor for CommandReply {
    type Context = Context<Self>;
}

impl Handler<SendText> for CommandReply {
    type Result = ResponseFuture<Result<String, PlatformError>>;

    fn handle(&mut self, m: SendText, _: &mut Context<Self>) -> Self::Result {
        (self.send)(m.text)
    }
}

impl Handler<EditText> for CommandReply {
    type Result = ResponseFuture<Result<(), PlatformError>>;

    fn handle(&mut self, _: EditText, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async {
            Err(PlatformError::Refused(
                "command replies are not edited".into(),
            ))
        })
    }
}

impl Handler<Typing> for CommandReply {
    type Result = ();

    fn handle(&mut self, _: Typing, _: &mut Context<Self>) {}
}
