//! `CourierActor`: one per chat platform, the only way messages leave for
//! it. It owns the platform's [`Courier`] (pacing, rate-limit holds,
//! retries, plain-text fallback, metrics; see `platforms/courier.rs`) over
//! the [`Wire`] the platform's actor supplies, and answers the
//! [`SendText`], [`EditText`] and [`Typing`] messages every [`Outbox`]
//! carries. Calls run concurrently (each paced by its chat's slots), so a
//! slow chat never holds up another.

use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;

use super::outbox::{EditText, Outbox, SendText, Typing};
use crate::metrics::Metrics;
use crate::platforms::courier::{Courier, Wire};
use crate::platforms::{Capabilities, PlatformError};

/// The courier of one platform.
pub struct CourierActor {
    courier: Courier,
}

impl CourierActor {
    /// A courier for `platform`, sending over `wire`.
    pub fn new(
        platform: &'static str,
        caps: Capabilities,
        wire: Rc<dyn Wire>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            courier: Courier::new(platform, caps, wire, metrics),
        }
    }

    /// Starts a courier on `arbiter` (the wire is built there: platform
    /// clients are per thread) and returns the platform's outbox.
    pub fn start_outbox<F>(
        arbiter: &ArbiterHandle,
        platform: &'static str,
        caps: Capabilities,
        metrics: Arc<Metrics>,
        wire: F,
    ) -> Outbox
    where
        F: FnOnce() -> Rc<dyn Wire> + Send + 'static,
    {
        let addr =
            Self::start_in_arbiter(arbiter, move |_| Self::new(platform, caps, wire(), metrics));
        Outbox::of(platform, caps, &addr)
    }
}

impl Actor for CourierActor {
    type Context = Context<Self>;
}

impl Handler<SendText> for CourierActor {
    type Result = ResponseFuture<Result<String, PlatformError>>;

    fn handle(&mut self, m: SendText, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.courier.send(m.chat, m.text, m.format, m.reply_to))
    }
}

impl Handler<EditText> for CourierActor {
    type Result = ResponseFuture<Result<(), PlatformError>>;

    fn handle(&mut self, m: EditText, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.courier.edit(m.chat, m.message_id, m.text, m.format))
    }
}

impl Handler<Typing> for CourierActor {
    type Result = ();

    fn handle(&mut self, m: Typing, ctx: &mut Context<Self>) {
        ctx.spawn(self.courier.typing(m.chat, m.done).into_actor(self));
    }
}
