//! `AgentActor`: one per chat session, or one per HTTP run. It owns the
//! session's history, the running turn and that turn's cancel handle.
//!
//! A turn runs as a future spawned into the actor's context, so the actor
//! keeps answering `Interrupt` while the turn waits on the upstream or tools.
//! When the turn ends, the actor records the new messages in its history first
//! and only then sends the single `Finished` event: a listener that reacts to
//! `Finished` with a new `RunTurn` always finds the actor idle and up to date.
//! With no `Addr` left and no turn running, the actor stops by itself.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::agent::{
    AgentEvent, AgentSettings, EventSink, TurnInput, TurnOutcome, TurnStatus, run_turn,
};
use crate::openai::Message;
use crate::tools::SessionTools;

/// Runs one turn and streams its events into `events`.
/// Sent by: front doors (`hermes chat`, HTTP handlers, the session router).
#[derive(Message)]
#[rtype(result = "Result<(), AgentBusy>")]
pub struct RunTurn {
    pub input: TurnInput,
    pub events: EventSink,
}

/// Stops the running turn at once; answers whether one was running.
/// Sent by: front doors (a client that left, `/stop`, a new chat message).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Interrupt;

/// A turn is already running in this session.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a turn is already running in this session")]
pub struct AgentBusy;

/// The agent of one session.
pub struct AgentActor {
    settings: Arc<AgentSettings>,
    /// Shared with the running turn, replaced (not mutated) when a turn ends.
    history: Arc<Vec<Message>>,
    session: SessionTools,
    running: Option<CancellationToken>,
}

impl AgentActor {
    /// An agent with this history (empty for a new session).
    pub fn new(settings: Arc<AgentSettings>, history: Vec<Message>) -> Self {
        Self {
            settings,
            history: Arc::new(history),
            session: SessionTools::default(),
            running: None,
        }
    }

    /// Starts the agent on the next arbiter of the pool.
    pub fn start_on(
        pool: &super::pool::ArbiterPool,
        settings: Arc<AgentSettings>,
        history: Vec<Message>,
    ) -> Addr<Self> {
        Self::start_in_arbiter(&pool.pick(), move |_| Self::new(settings, history))
    }

    /// Starts a chat session's agent, whose tools can ask its user for approval.
    pub fn start_for_session(
        pool: &super::pool::ArbiterPool,
        settings: Arc<AgentSettings>,
        history: Vec<Message>,
        session: SessionTools,
    ) -> Addr<Self> {
        Self::start_in_arbiter(&pool.pick(), move |_| {
            Self::new(settings, history).with_session(session)
        })
    }

    /// Gives the agent's tools this session state (the HTTP API's deferred
    /// approvals).
    pub fn with_session(mut self, session: SessionTools) -> Self {
        self.session = session;
        self
    }

    fn record(&mut self, user: Option<Message>, outcome: &TurnOutcome) {
        // A turn that failed before producing anything leaves no trace, so a
        // retry does not see the same question twice.
        if outcome.status == TurnStatus::Failed && outcome.messages.is_empty() {
            return;
        }
        let mut h = Vec::with_capacity(self.history.len() + 1 + outcome.messages.len());
        h.extend_from_slice(&self.history);
        h.extend(user);
        h.extend(outcome.messages.iter().cloned());
        self.history = Arc::new(h);
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;
}

impl Handler<RunTurn> for AgentActor {
    type Result = Result<(), AgentBusy>;

    fn handle(&mut self, msg: RunTurn, ctx: &mut Context<Self>) -> Self::Result {
        if self.running.is_some() {
            return Err(AgentBusy);
        }
        let cancel = CancellationToken::new();
        self.running = Some(cancel.clone());
        let settings = self.settings.clone();
        let history = self.history.clone();
        let session = self.session.clone();
        let user = msg.input.user.clone();
        let events = msg.events;
        let mut input = msg.input;
        let turn = async move {
            // The input by reference: a turn future holds one copy of it
            // for its whole life, not two.
            let run = run_turn(&settings, &history, &mut input, session, &events, &cancel);
            // A panic in one turn must not take the arbiter thread with it.
            let outcome = AssertUnwindSafe(run)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    log::error!("a turn panicked; reporting it as failed");
                    TurnOutcome::failed("internal error in the agent")
                });
            (outcome, events)
        };
        ctx.spawn(
            turn.into_actor(self)
                .map(move |(outcome, events), act, _ctx| {
                    act.running = None;
                    act.record(user, &outcome);
                    actix::spawn(async move {
                        let _ = events.send(AgentEvent::Finished(Box::new(outcome))).await;
                    });
                }),
        );
        Ok(())
    }
}

impl Handler<Interrupt> for AgentActor {
    type Result = bool;

    fn handle(&mut self, _: Interrupt, _: &mut Context<Self>) -> bool {
        match &self.running {
            Some(cancel) => {
                cancel.cancel();
                true
            }
            None => false,
        }
    }
}
