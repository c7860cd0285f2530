//! Starting and finishing an agent run for an HTTP request, shared by every
//! route that starts one: drain and upstream checks, admission, the
//! `X-Hermes-Session-Id` history, a per-run `AgentActor` on the pool, and at
//! the end the transcript write and the metrics.
//!
//! The handler keeps the receiving half of the event channel. When it goes
//! away (the client disconnected and actix dropped the handler or the stream)
//! the turn notices the closed channel and is interrupted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use actix::Actor;
use actix_web::{HttpRequest, web};
use tokio::sync::mpsc;

use super::admission::Permit;
use super::error::ApiError;
use super::sampling::{ModelParams, check_tool_choice};
use super::state::{AppState, OwnedSessionGuard, PendingSessions};
use crate::actors::agent::{AgentActor, RunTurn};
use crate::agent::history::pair_tool_calls;
use crate::agent::{
    AgentEvent, EVENT_CHANNEL_CAPACITY, ResumedCall, Steer, TurnInput, TurnOutcome, TurnStatus,
};
use crate::config::ToolProgress;
use crate::db::StoreError;
use crate::metrics::Metrics;
use crate::openai::Message;
use crate::sessions;
use crate::store::Store;
use crate::tools::{Approver, SessionTools};

/// Longest `X-Hermes-Session-Id`.
const MAX_SESSION_ID_LEN: usize = 256;
/// Header carrying the session id, both ways.
pub const SESSION_HEADER: &str = "X-Hermes-Session-Id";

/// The client's `X-Hermes-Session-Id`, validated.
pub fn session_header(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get(SESSION_HEADER) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("\n");
    check_session_id(s, SESSION_HEADER)?;
    Ok(Some(s.to_string()))
}

/// A session id: 1–256 characters of `A-Z a-z 0-9 . _ : -`; else a 400
/// naming `param`.
pub fn check_session_id(s: &str, param: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SESSION_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            format!("{param} must be 1-{MAX_SESSION_ID_LEN} characters of A-Z a-z 0-9 . _ : -"),
            param,
        ))
    }
}

/// `X-Hermes-Tool-Progress: events | reasoning | off`, else the configured default.
pub fn tool_progress(req: &HttpRequest, default: ToolProgress) -> ToolProgress {
    match req
        .headers()
        .get("x-hermes-tool-progress")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
    {
        Some(v) if v == "events" => ToolProgress::Events,
        Some(v) if v == "reasoning" => ToolProgress::Reasoning,
        Some(v) if v == "off" || v == "none" => ToolProgress::Off,
        _ => default,
    }
}

/// What a route asks for.
pub struct RunRequest {
    /// The new input; `None` when the turn only goes on from `resume`.
    pub user: Option<Message>,
    /// Calls of a paused turn the client answered (Responses approvals).
    pub resume: Vec<ResumedCall>,
    /// Dangerous commands wait for the client's approval in a later
    /// request instead of being refused (`approvals.mode: ask`, Responses API).
    pub defer_approvals: bool,
    pub system: Option<String>,
    /// History sent by the client (used unless a stored session has one).
    pub history: Vec<Message>,
    /// Stream from the upstream (the client shows deltas).
    pub stream: bool,
    /// Where the history comes from and goes to.
    pub session: RunSession,
    /// Sampling parameters and tool choice from the client.
    pub params: ModelParams,
}

/// How a run finds its history and session id.
pub enum RunSession {
    /// Chat completions: `X-Hermes-Session-Id` names a stored transcript (or a
    /// fresh id is made); the turn is recorded there.
    Header,
    /// The route brings the history and keeps the turn itself (the Responses
    /// API store). `exclusive`: one turn at a time under this id.
    Fixed { id: String, exclusive: bool },
    /// A stored session named by the route (`/v1/runs`): as `Header` with
    /// this id.
    Named(String),
}

/// What only some routes add to a run.
#[derive(Default)]
pub struct RunExtras {
    /// Who answers dangerous commands (overrides `defer_approvals`).
    pub approver: Option<Approver>,
    /// Messages the client adds while the turn runs.
    pub steer: Option<Steer>,
}

/// Where a finished turn's messages are written.
struct Transcript {
    store: Store,
    key: String,
    /// Messages before the user input that the store does not have yet.
    prefix: Vec<Message>,
    user: Option<Message>,
    /// `None`: a session the client named, kept in the database.
    /// `Some`: a fresh id, remembered in memory until the client opts in.
    pending: Option<(PendingSessions, String)>,
    /// The API key (by name) the session belongs to.
    owner: String,
}

/// A started run. Dropping it before its turn was recorded (the client
/// left and actix dropped the handler or the stream) interrupts the turn and
/// records it in the background: the user's message and the partial answer,
/// marked interrupted, are kept; the log and `hermes_upstream_requests_total`
/// say `cancelled`.
pub struct Run {
    pub events: mpsc::Receiver<AgentEvent>,
    /// The session id to return in `X-Hermes-Session-Id`.
    pub session_id: String,
    agent: actix::Addr<AgentActor>,
    first_text: Option<Instant>,
    /// What recording the turn needs; `None` once it was recorded.
    tail: Option<Tail>,
}

/// The end of a run: where its turn is written, its metrics, and what it
/// holds until then (an admission permit, the session).
struct Tail {
    /// `None` when the route records the turn itself.
    transcript: Option<Transcript>,
    metrics: Arc<Metrics>,
    state: web::Data<AppState>,
    run_id: u64,
    route: &'static str,
    started: Instant,
    _permit: Permit,
    _session: Option<OwnedSessionGuard>,
}

impl Tail {
    /// Writes the turn (committed before this returns) and counts it.
    async fn record(mut self, outcome: &TurnOutcome) -> Result<(), StoreError> {
        let overhead = self
            .started
            .elapsed()
            .saturating_sub(outcome.upstream_time + outcome.tool_time);
        self.metrics
            .turn(outcome.status.as_str(), self.route, overhead);
        let Some(t) = self.transcript.take() else {
            return Ok(());
        };
        if outcome.status == TurnStatus::Failed && outcome.messages.is_empty() {
            // Nothing happened: a retry must not see the question twice.
            return Ok(());
        }
        let mut msgs = t.prefix;
        msgs.extend(t.user);
        msgs.extend(outcome.messages.iter().cloned());
        match t.pending {
            Some((pending, id)) => {
                pending.put(&id, msgs);
                Ok(())
            }
            None => {
                let written =
                    sessions::append(&t.store, &t.key, msgs, outcome.usage, Some(t.owner)).await;
                if let Err(e) = &written {
                    log::error!("session {}: the turn could not be stored: {e}", t.key);
                }
                written
            }
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        Metrics::gauge_add(&self.metrics.runs_in_flight, -1);
        self.state.unregister_run(self.run_id);
    }
}

/// Claims session `id` for a turn (see [`AppState::claim_session`]).
async fn claim(
    state: &web::Data<AppState>,
    id: &str,
) -> Result<Option<super::state::OwnedSessionGuard>, ApiError> {
    AppState::claim_session(state, id)
        .await
        .map_err(|e| storage_error(&e))
}

/// The answer for a turn whose record could not be written.
pub fn storage_error(e: &StoreError) -> ApiError {
    ApiError {
        code: Some("storage_error"),
        ..ApiError::internal(format!("The answer could not be stored: {e}"))
    }
}

impl Run {
    /// Starts a run after the checks every route shares.
    pub async fn begin(
        state: &web::Data<AppState>,
        req: &HttpRequest,
        route: &'static str,
        r: RunRequest,
    ) -> Result<Run, ApiError> {
        Self::begin_with(state, req, route, r, RunExtras::default()).await
    }

    /// [`Run::begin`] with what only some routes add.
    pub async fn begin_with(
        state: &web::Data<AppState>,
        req: &HttpRequest,
        route: &'static str,
        r: RunRequest,
        extras: RunExtras,
    ) -> Result<Run, ApiError> {
        if state.is_draining() {
            return Err(ApiError::draining());
        }
        let settings = state
            .live()
            .agent
            .clone()
            .map_err(|reason| ApiError::no_upstream(&reason))?;
        check_tool_choice(&r.params.tool_choice, settings.toolbox.names())?;
        let permit = state
            .admission
            .try_admit()
            .ok_or_else(|| ApiError::too_many_runs(state.admission.limit()))?;
        let busy = |id: &str| {
            ApiError::conflict(
                format!("A turn is already running in session {id}"),
                "session_busy",
            )
        };
        let (session_id, guard, history, transcript) = match r.session {
            RunSession::Fixed { id, exclusive } => {
                let guard = if exclusive {
                    Some(claim(state, &id).await?.ok_or_else(|| busy(&id))?)
                } else {
                    None
                };
                (id, guard, r.history, None)
            }
            session @ (RunSession::Header | RunSession::Named(_)) => {
                let requested = match session {
                    RunSession::Named(id) => Some(id),
                    _ => session_header(req)?,
                };
                let session_id = requested
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let key = format!("api:{session_id}");
                if requested.is_some() {
                    // Another key's session is not there for this key (busy
                    // or not), unless it is an admin key.
                    let owner = sessions::owner(&state.store, &key)
                        .await
                        .map_err(|e| ApiError::internal(format!("cannot load the session: {e}")))?;
                    let me = super::edge::key_name(req);
                    let admin = state.live().sessions_api.admin_keys.contains(&me);
                    if let Some(Some(o)) = owner
                        && o != me
                        && !admin
                    {
                        return Err(ApiError {
                            param: Some(SESSION_HEADER.into()),
                            ..ApiError::not_found(
                                format!("Session not found: {session_id}"),
                                "session_not_found",
                            )
                        });
                    }
                }
                let guard = claim(state, &session_id)
                    .await?
                    .ok_or_else(|| busy(&session_id))?;
                let (history, prefix, pending) = match requested {
                    Some(_) => {
                        let stored = sessions::load(&state.store, &key).await.map_err(|e| {
                            ApiError::internal(format!("cannot load the session: {e}"))
                        })?;
                        if stored.is_empty() {
                            // A new named session starts from a conversation this
                            // server answered statelessly, or from the client's messages.
                            let seed = state.pending.take(&session_id).unwrap_or(r.history);
                            (seed.clone(), seed, None)
                        } else {
                            // A stored session's history wins over what the client sent.
                            (stored, Vec::new(), None)
                        }
                    }
                    None => (
                        r.history.clone(),
                        r.history,
                        Some((state.pending.clone(), session_id.clone())),
                    ),
                };
                let user = r.user.clone();
                let transcript = Transcript {
                    store: state.store.clone(),
                    key,
                    prefix,
                    user,
                    pending,
                    owner: super::edge::key_name(req),
                };
                (session_id, Some(guard), history, Some(transcript))
            }
        };
        // Whatever the history's source, the model server gets every tool
        // call answered and every result next to its call.
        let open: Vec<String> = r.resume.iter().map(|c| c.call.id.clone()).collect();
        let mut convo = history;
        convo.extend(r.user.clone());
        let mut convo = pair_tool_calls(convo, &open);
        let user = if r.user.is_some() { convo.pop() } else { None };
        let session_tools = SessionTools {
            approver: extras
                .approver
                .or_else(|| r.defer_approvals.then_some(Approver::Defer)),
            ..SessionTools::default()
        };
        // On this worker's own thread: no hop to another thread and back for
        // every event (workers are one per core, so runs still spread).
        let agent = AgentActor::new(settings, convo)
            .with_session(session_tools)
            .start();
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let input = TurnInput {
            user,
            resume: r.resume,
            system: r.system,
            stream: r.stream,
            sampling: r.params.sampling,
            tool_choice: r.params.tool_choice,
            steer: extras.steer,
        };
        agent
            .send(RunTurn { input, events: tx })
            .await
            .map_err(|e| ApiError::internal(format!("the agent did not start: {e}")))?
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Metrics::gauge_add(&state.metrics.runs_in_flight, 1);
        let run_id = state.register_run(agent.clone());
        Ok(Run {
            events: rx,
            session_id,
            agent,
            first_text: None,
            tail: Some(Tail {
                transcript,
                metrics: state.metrics.clone(),
                state: state.clone(),
                run_id,
                route,
                started: Instant::now(),
                _permit: permit,
                _session: guard,
            }),
        })
    }

    /// Notes an event on its way to the client (time to first token, tools).
    pub fn observe(&mut self, ev: &AgentEvent) {
        let Some(tail) = &self.tail else { return };
        match ev {
            AgentEvent::TextDelta(_) if self.first_text.is_none() => {
                let now = Instant::now();
                self.first_text = Some(now);
                tail.metrics.first_token(now - tail.started);
            }
            AgentEvent::ToolFinished(t) => {
                tail.metrics.tool_call(&t.name, t.ok);
            }
            _ => {}
        }
    }

    /// Records the finished turn: the transcript, committed before this
    /// returns (so an answer never leaves before its turn is stored, and the
    /// client's next request sees it), and the metrics. A failed write is an
    /// ERROR log line and a `500 storage_error` for the client.
    pub async fn finish(&mut self, outcome: &TurnOutcome) -> Result<(), ApiError> {
        // Boxed: the storage write's future is large and runs once, while
        // the streams that await this hold their futures for their whole
        // life (it would size every open stream's state).
        Box::pin(record(self.tail.take(), outcome)).await
    }

    /// As [`Run::finish`], as a future that owns the outcome and gives it
    /// back: for a stream polled by hand, which cannot hold a borrow of
    /// itself across polls.
    pub fn finish_owned(&mut self, outcome: Box<TurnOutcome>) -> Recording {
        let tail = self.tail.take();
        Box::pin(async move { (record(tail, &outcome).await, outcome) })
    }

    /// Waits for the turn's end, observing every event; records it.
    pub async fn outcome(&mut self) -> (TurnOutcome, Result<(), ApiError>) {
        let o = loop {
            match self.events.recv().await {
                Some(AgentEvent::Finished(o)) => break *o,
                Some(ev) => self.observe(&ev),
                // The agent went away without Finished (it cannot, but never hang).
                None => break TurnOutcome::failed("the agent stopped unexpectedly"),
            }
        };
        let recorded = self.finish(&o).await;
        (o, recorded)
    }

    /// Interrupts the turn (the client left, or the drain ran out of time).
    pub fn interrupt(&self) {
        self.agent.do_send(crate::actors::agent::Interrupt);
    }
}

/// The write of a finished turn: whether it was stored, and the outcome.
pub type Recording = Pin<Box<dyn Future<Output = (Result<(), ApiError>, Box<TurnOutcome>)>>>;

/// Writes the turn if it still needs writing (`tail` is `None` once it was).
async fn record(tail: Option<Tail>, outcome: &TurnOutcome) -> Result<(), ApiError> {
    match tail {
        Some(tail) => tail.record(outcome).await.map_err(|e| storage_error(&e)),
        None => Ok(()),
    }
}

/// Receives events until `Finished`, dropping the others.
async fn finished(events: &mut mpsc::Receiver<AgentEvent>) -> TurnOutcome {
    while let Some(ev) = events.recv().await {
        if let AgentEvent::Finished(o) = ev {
            return *o;
        }
    }
    TurnOutcome::failed("the agent stopped unexpectedly")
}

impl Drop for Run {
    fn drop(&mut self) {
        let Some(tail) = self.tail.take() else { return };
        // The client left before the turn was recorded. Stop the turn, and
        // record what it did once its `Finished` arrives: the events stay
        // open so the turn ends as interrupted, not as "nobody listens".
        let (_, closed) = mpsc::channel(1);
        let mut events = std::mem::replace(&mut self.events, closed);
        self.interrupt();
        let Some(arbiter) = actix::Arbiter::try_current() else {
            return;
        };
        arbiter.spawn(async move {
            let outcome = finished(&mut events).await;
            log::info!(
                "{}: the client left; turn {} after {} ms",
                tail.route,
                outcome.status.as_str(),
                tail.started.elapsed().as_millis()
            );
            // A failed write is logged by `record`.
            let _ = tail.record(&outcome).await;
        });
    }
}
