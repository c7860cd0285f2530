//! `/v1/runs`: Hermes-native asynchronous runs. A client starts work
//! (`POST`, answered 202 at once), goes away, and comes back for the status
//! (`GET`), the events (`GET …/events`, resumable by `Last-Event-ID`), or to
//! stop, steer or answer an approval.
//!
//! Each run is driven by one task ([`drive`]) that owns the agent's events:
//! it writes the run's row and then its events to `state.db` before anyone
//! sees them (so the status a `GET` shows is never behind an event already
//! sent, and every event survives a crash), and publishes them to the run's
//! journal for live readers. Runs, their events and their sessions belong to
//! the API key that created them; other keys get 404.

use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::body::read_json;
use super::chat_format::Frame;
use super::error::ApiError;
use super::remote::{self, Op, Outcome};
use super::run::{Run, RunExtras, RunRequest, RunSession, SESSION_HEADER, storage_error};
use super::sampling::ModelParams;
use super::sse_out;
use super::state::AppState;
use crate::agent::{AgentEvent, Steer, TurnOutcome, TurnStatus};
use crate::db::StoreError;
use crate::journal::Writer;
use crate::openai::{Message, Role};
use crate::run_db::{Claim, RunRow};
use crate::tools::{APPROVAL_TIMEOUT, ApprovalRequest, Approver};

/// Route label for metrics.
const ROUTE: &str = "/v1/runs";
/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Approval requests that may wait for the run's task at once.
const APPROVAL_QUEUE: usize = 4;
/// Answers to approvals waiting for the run's task.
const DECISION_QUEUE: usize = 4;
/// How long stopping a run waits for it to write its last state.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Deltas gathered into one event write when the model is faster than the disk.
const MAX_BATCH: usize = 64;

/// A run going on in this process: how to stop it, steer it, answer it.
struct LiveRun {
    owner: String,
    /// The text streamed so far (what `GET` shows while it runs).
    text: Mutex<String>,
    cancel: CancellationToken,
    steer: Steer,
    /// The approval the run waits for (its id), if any.
    pending: Mutex<Option<String>>,
    decisions: mpsc::Sender<(String, bool)>,
}

impl LiveRun {
    /// Keeps the text streamed so far.
    fn note(&self, ev: &AgentEvent) {
        if let AgentEvent::TextDelta(d) = ev {
            self.text
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(d);
        }
    }
}

/// Ends a run's live state however its task ends (a panic included): its
/// journal closes (readers and a waiting stop finish) and it is forgotten.
struct RunGuard {
    state: web::Data<AppState>,
    id: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.state.journals.finish(&self.id);
        self.state.api_runs.lock().remove(&self.id);
    }
}

/// The runs going on in this process, by id.
#[derive(Default)]
pub struct LiveRuns {
    runs: Mutex<std::collections::HashMap<String, Arc<LiveRun>>>,
}

impl LiveRuns {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<LiveRun>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<Arc<LiveRun>> {
        self.lock().get(id).cloned()
    }

    /// Runs going on now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

fn now() -> i64 {
    crate::clock::unix_now() as i64
}

fn db_error(e: StoreError) -> ApiError {
    storage_error(&e)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Run not found: {id}"), "run_not_found")
}

/// The client's `Idempotency-Key`: 1–255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("");
    if s.is_empty() || s.len() > MAX_IDEMPOTENCY_KEY_LEN || !s.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(
            format!("Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            "Idempotency-Key",
        ));
    }
    Ok(Some(s.to_string()))
}

/// SHA-256 of the request body, hex: stable across restarts and builds.
fn body_hash(body: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A parsed `POST /v1/runs`.
#[derive(Debug, PartialEq)]
struct RunInput {
    /// Earlier messages the client sent, then the new user message.
    history: Vec<Message>,
    user: Message,
    instructions: Option<String>,
    session_id: Option<String>,
}

fn parse_input(body: &Value) -> Result<RunInput, ApiError> {
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(format!("{key} must be a string"), key)),
        }
    };
    let instructions = text("instructions")?;
    let session_id = text("session_id")?;
    text("model")?;
    let bad_input = || {
        ApiError::invalid(
            "input must be a non-empty string or an array of messages ending with a user message",
            "input",
        )
    };
    let mut messages = match body.get("input") {
        Some(Value::String(s)) if !s.trim().is_empty() => vec![Message::user(s.clone())],
        Some(v @ Value::Array(a)) if !a.is_empty() => {
            serde_json::from_value::<Vec<Message>>(v.clone()).map_err(|_| bad_input())?
        }
        _ => return Err(bad_input()),
    };
    let user = match messages.pop() {
        Some(m) if m.role == Role::User => m,
        _ => return Err(bad_input()),
    };
    Ok(RunInput {
        history: messages,
        user,
        instructions,
        session_id,
    })
}

/// The run `id` if this key may see it.
async fn owned(state: &AppState, req: &HttpRequest, id: &str) -> Result<RunRow, ApiError> {
    let row = state.store.run(id).await.map_err(db_error)?;
    match row {
        Some(r) if r.owner == super::edge::key_name(req) => Ok(r),
        _ => Err(not_found(id)),
    }
}

fn accepted(r: &RunRow, replayed: bool) -> HttpResponse {
    let mut res = HttpResponse::Accepted();
    res.insert_header((SESSION_HEADER, r.session_id.clone()));
    if replayed {
        res.insert_header(("Idempotency-Replayed", "true"));
    }
    res.json(
        json!({"id": r.id, "object": "hermes.run", "status": r.status, "session_id": r.session_id}),
    )
}

/// `POST /v1/runs`.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let live = state.live();
    let (body, _) = read_json(&req, payload, &live).await?;
    let idem = idempotency_key(&req)?;
    let input = parse_input(&body)?;
    let owner = super::edge::key_name(&req);
    if let Some(sid) = &input.session_id {
        super::run::check_session_id(sid, "session_id")?;
        if !input.history.is_empty() {
            // The stored history is the session's; earlier messages here would be ignored.
            return Err(ApiError::invalid(
                "with session_id, input is the new message only (a string or one user message)",
                "input",
            ));
        }
        let found = crate::sessions::owner(&state.store, &format!("api:{sid}"))
            .await
            .map_err(db_error)?;
        if found.flatten().as_deref() != Some(owner.as_str()) {
            return Err(ApiError {
                param: Some("session_id".into()),
                ..ApiError::not_found(format!("Session not found: {sid}"), "session_not_found")
            });
        }
    }
    let row = RunRow {
        id: format!("run_{}", uuid::Uuid::new_v4().simple()),
        owner: owner.clone(),
        session_id: input
            .session_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        status: "queued".into(),
        created_at: now(),
        instance: Some(state.leases.instance().to_string()),
        ..RunRow::default()
    };
    // The body as parsed, so a client that re-serialises its JSON (other
    // spacing or key order) is still recognised.
    let claim_key = idem.map(|k| (k, body_hash(body.to_string().as_bytes())));
    let claim = state
        .store
        .insert_run(row.clone(), claim_key.clone(), now())
        .await
        .map_err(db_error)?;
    match claim {
        Claim::Inserted => {}
        Claim::Replay(existing) => {
            state
                .metrics
                .inc("hermes_runs_total", vec![("outcome", "replayed".into())], 1);
            return Ok(accepted(&existing, true));
        }
        Claim::Conflict => {
            return Err(ApiError::conflict(
                "This Idempotency-Key was used with a different request body",
                "idempotency_key_conflict",
            ));
        }
    }
    // Started in a task of its own: a client that leaves now must not
    // leave a run that is recorded but never runs.
    let (tx, started) = oneshot::channel();
    let (st, rq, rw) = (state.clone(), req.clone(), row.clone());
    actix::spawn(async move {
        let result = start(&st, &rq, &rw, input).await;
        if result.is_err() {
            // Never started: nothing to find, and the key is free again.
            if let Err(err) = st.store.remove_run(&rw.id).await {
                log::error!(
                    "run {}: could not be removed after its start failed: {err}",
                    rw.id
                );
            }
        }
        let _ = tx.send(result);
    });
    match started.await {
        Ok(Ok(())) => Ok(accepted(&row, false)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::internal("the run did not start")),
    }
}

/// Starts the agent for a new run and the task that drives it.
async fn start(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    row: &RunRow,
    input: RunInput,
) -> Result<(), ApiError> {
    let steer = Steer::default();
    let (ask_tx, asks) = mpsc::channel(APPROVAL_QUEUE);
    // The session exists (and is this key's) from the start: a second run
    // in it is told it is busy, `/api/sessions` shows it.
    crate::sessions::open(&state.store, &format!("api:{}", row.session_id), &row.owner)
        .await
        .map_err(db_error)?;
    let run = Run::begin_with(
        state,
        req,
        ROUTE,
        RunRequest {
            user: Some(input.user),
            resume: Vec::new(),
            defer_approvals: false,
            system: input.instructions,
            history: input.history,
            stream: true,
            session: RunSession::Named(row.session_id.clone()),
            params: ModelParams::default(),
        },
        RunExtras {
            // Used only with `approvals.mode: ask`: the run waits for the client.
            approver: Some(Approver::Ask(ask_tx)),
            steer: Some(steer.clone()),
        },
    )
    .await?;
    let (decisions, decided) = mpsc::channel(DECISION_QUEUE);
    let live = Arc::new(LiveRun {
        owner: row.owner.clone(),
        text: Mutex::new(String::new()),
        cancel: CancellationToken::new(),
        steer,
        pending: Mutex::new(None),
        decisions,
    });
    state.api_runs.lock().insert(row.id.clone(), live.clone());
    let writer = Writer::new(state.store.clone(), &state.journals, &row.id, 1);
    state
        .metrics
        .inc("hermes_runs_total", vec![("outcome", "started".into())], 1);
    actix::spawn(drive(
        run,
        row.clone(),
        writer,
        live,
        Waits { asks, decided },
        state.clone(),
    ));
    Ok(())
}

/// What a run's task listens to besides the agent.
struct Waits {
    asks: mpsc::Receiver<ApprovalRequest>,
    decided: mpsc::Receiver<(String, bool)>,
}

/// The run's row and events, written together.
struct Progress {
    row: RunRow,
    writer: Writer,
}

impl Progress {
    /// Writes the events, and the row when `changed`, in one transaction:
    /// a GET is never behind an event sent, a crash never splits them.
    async fn record(&mut self, changed: bool, events: Vec<(String, String)>) {
        let row = changed.then(|| self.row.clone());
        let written = self.writer.emit_with(events, row).await;
        if let Err(e) = written {
            log::error!("run {}: its state could not be stored: {e}", self.row.id);
        }
    }
}

fn event(kind: &str, data: Value) -> (String, String) {
    (kind.to_string(), data.to_string())
}

/// The run's event for one agent event, if it has one.
fn agent_event(ev: &AgentEvent) -> Option<(String, String)> {
    match ev {
        AgentEvent::TextDelta(d) if !d.is_empty() => {
            Some(event("message.delta", json!({"delta": d})))
        }
        AgentEvent::ToolStarted(t) => Some(event(
            "tool.started",
            json!({"call_id": t.call_id, "name": t.name, "arguments": t.arguments}),
        )),
        AgentEvent::ToolFinished(t) => Some(event(
            "tool.completed",
            json!({"call_id": t.call_id, "name": t.name, "ok": t.ok, "duration_ms": t.duration.as_millis() as u64}),
        )),
        _ => None,
    }
}

/// The status and closing event of a finished turn.
fn closing(outcome: &TurnOutcome, cancelled: bool) -> (&'static str, (String, String)) {
    match outcome.status {
        _ if cancelled => ("cancelled", event("run.cancelled", json!({}))),
        TurnStatus::Completed | TurnStatus::Incomplete => (
            "completed",
            event(
                "run.completed",
                json!({"output_text": outcome.text, "usage": outcome.usage}),
            ),
        ),
        TurnStatus::Failed => (
            "failed",
            event(
                "run.failed",
                json!({"error": outcome.error.clone().unwrap_or_else(|| "the agent failed".into())}),
            ),
        ),
        // Interrupted by the drain at shutdown.
        TurnStatus::Cancelled => ("interrupted", event("run.interrupted", json!({}))),
    }
}

/// Drives one run to its end.
async fn drive(
    mut run: Run,
    row: RunRow,
    writer: Writer,
    live: Arc<LiveRun>,
    mut waits: Waits,
    state: web::Data<AppState>,
) {
    let id = row.id.clone();
    let _live = RunGuard {
        state: state.clone(),
        id: id.clone(),
    };
    let mut p = Progress { row, writer };
    p.row.status = "running".into();
    p.row.started_at = Some(now());
    p.record(true, vec![event("run.started", json!({"run_id": id}))])
        .await;
    let mut cancelled = false;
    let mut waiting: Option<(String, oneshot::Sender<bool>)> = None;
    let mut ahead = None;
    let outcome = loop {
        let ev = match ahead.take() {
            Some(ev) => Some(ev),
            None => tokio::select! {
                // The agent's events first: a tool's start comes before its approval request.
                biased;
                ev = run.events.recv() => ev,
                Some(ask) = waits.asks.recv() => {
                    let approval_id = format!("appr_{}", uuid::Uuid::new_v4().simple());
                    let expires = now() + APPROVAL_TIMEOUT.as_secs() as i64;
                    let pending = json!({"approval_id": approval_id, "command": ask.command,
                                         "reason": ask.reason, "expires_at": expires});
                    p.row.status = "requires_approval".into();
                    p.row.pending_approval = Some(pending.to_string());
                    *live.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(approval_id.clone());
                    waiting = Some((approval_id.clone(), ask.reply));
                    let data = json!({"approval_id": approval_id, "command": ask.command, "reason": ask.reason});
                    p.record(true, vec![event("approval.required", data)]).await;
                    continue;
                }
                Some((approval_id, approve)) = waits.decided.recv() => {
                    if let Some((pending, reply)) = waiting.take() {
                        if pending == approval_id {
                            let _ = reply.send(approve);
                            resumed(&mut p, &live).await;
                        } else {
                            waiting = Some((pending, reply));
                        }
                    }
                    continue;
                }
                _ = live.cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    run.interrupt();
                    continue;
                }
            },
        };
        let ev = match ev {
            Some(AgentEvent::Finished(o)) => break *o,
            Some(ev) => ev,
            None => break TurnOutcome::failed("the agent stopped unexpectedly"),
        };
        if matches!(ev, AgentEvent::ToolFinished(_)) && waiting.take().is_some() {
            // The approval timed out: the tool refused the command.
            resumed(&mut p, &live).await;
        }
        run.observe(&ev);
        live.note(&ev);
        let mut batch: Vec<_> = agent_event(&ev).into_iter().collect();
        // Gather what is already there into one write.
        while batch.len() < MAX_BATCH {
            match run.events.try_recv() {
                Ok(AgentEvent::Finished(o)) => {
                    ahead = Some(AgentEvent::Finished(o));
                    break;
                }
                Ok(ev) => {
                    run.observe(&ev);
                    live.note(&ev);
                    batch.extend(agent_event(&ev));
                }
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            p.record(false, batch).await;
        }
    };
    // The turn's messages go into the session before the run says it ended.
    let recorded = run.finish(&outcome).await;
    let (status, last) = match recorded {
        Ok(()) => closing(&outcome, cancelled),
        Err(e) => ("failed", event("run.failed", json!({"error": e.message}))),
    };
    p.row.status = status.into();
    p.row.finished_at = Some(now());
    p.row.pending_approval = None;
    p.row.output_text = outcome.text.clone();
    p.row.usage = serde_json::to_string(&outcome.usage).ok();
    if status == "failed" {
        p.row.error = Some(
            serde_json::from_str::<Value>(&last.1)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or_default(),
        );
    }
    p.record(true, vec![last]).await;
    state
        .metrics
        .inc("hermes_runs_total", vec![("outcome", status.into())], 1);
}

/// The run goes on after an approval was answered (or timed out).
async fn resumed(p: &mut Progress, live: &LiveRun) {
    *live.pending.lock().unwrap_or_else(|e| e.into_inner()) = None;
    p.row.status = "running".into();
    p.row.pending_approval = None;
    p.record(true, Vec::new()).await;
}

/// `GET /v1/runs/{id}`.
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut row = owned(&state, &req, &id).await?;
    if let Some(live) = state.api_runs.get(&id).filter(|_| !row.finished()) {
        row.output_text = live.text.lock().unwrap_or_else(|e| e.into_inner()).clone();
    } else if !row.finished() {
        // Running on another instance: what it streamed so far is stored.
        let events = state.store.events_after(&id, 0).await.map_err(db_error)?;
        row.output_text = crate::run_db::streamed_text(&events);
    }
    Ok(HttpResponse::Ok().json(row.to_json()))
}

/// Query of the events route.
#[derive(serde::Deserialize)]
pub struct EventsQuery {
    after: Option<String>,
}

/// `?after=n` (wins) or `Last-Event-ID: n`: an integer ≥ 0; 0 without either.
fn resume_point(req: &HttpRequest, after: Option<&str>) -> Result<i64, ApiError> {
    let (value, param) = match after {
        Some(a) => (Some(a.to_string()), "after"),
        None => (
            req.headers()
                .get("last-event-id")
                .map(|v| v.to_str().unwrap_or("-").to_string()),
            "Last-Event-ID",
        ),
    };
    match value {
        None => Ok(0),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n),
            _ => Err(ApiError::invalid(
                format!("{param} must be an integer of at least 0"),
                param,
            )),
        },
    }
}

/// `GET /v1/runs/{id}/events`: SSE with `id: n`, replayed after the
/// client's last event and then live; ends after the run's last event.
pub async fn events(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = resume_point(&req, q.after.as_deref())?;
    let row = owned(&state, &req, &id).await?;
    let events = state
        .store
        .read_stream(&state.journals, &id, after)
        .await
        .map_err(db_error)?;
    if after > 0 {
        state.metrics.inc(
            "hermes_stream_resumes_total",
            vec![("kind", "run".into())],
            1,
        );
    }
    let frames = events.map(|event| Frame::Logged {
        event,
        with_id: true,
    });
    let keep_alive = state.live().keep_alive;
    Ok(sse_out::respond(
        frames,
        keep_alive,
        &state.metrics,
        &row.session_id,
    ))
}

/// The live run `id` of this key, or why not: 404 for another key's or an
/// unknown run, 409 `run_not_running` once it ended.
async fn live_run(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
) -> Result<(RunRow, Option<Arc<LiveRun>>), ApiError> {
    let row = owned(state, req, id).await?;
    let live = state
        .api_runs
        .get(id)
        .filter(|l| l.owner == row.owner && !row.finished());
    Ok((row, live))
}

fn not_running(id: &str) -> ApiError {
    ApiError::conflict(format!("Run {id} has finished"), "run_not_running")
}

/// `POST /v1/runs/{id}/stop`: the run ends `cancelled`; a finished run is
/// returned unchanged.
pub async fn stop(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (row, live) = live_run(&state, &req, &id).await?;
    if row.finished() {
        return Ok(HttpResponse::Ok().json(row.to_json()));
    }
    if live.is_some() {
        stop_here(&state, &id);
    } else if let Some(other) = remote::elsewhere(&state, row.instance.as_deref()) {
        remote::pass_on(&state, other, &id, Op::StopRun).await?;
    }
    // Ends once the run wrote its last state and event (read from the
    // store when another instance runs it).
    state
        .store
        .wait_until_ended(&state.journals, &id, STOP_WAIT)
        .await;
    let row = owned(&state, &req, &id).await?;
    Ok(HttpResponse::Ok().json(row.to_json()))
}

/// Stops run `id` if this instance runs it.
pub(super) fn stop_here(state: &AppState, id: &str) -> Outcome {
    match state.api_runs.get(id) {
        Some(live) => {
            live.cancel.cancel();
            Outcome::Done
        }
        None => Outcome::NotRunning,
    }
}

/// Queues `text` for run `id` if this instance runs it.
pub(super) fn steer_here(state: &AppState, id: &str, text: String) -> Outcome {
    match state.api_runs.get(id) {
        Some(live) => {
            live.steer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(text);
            Outcome::Done
        }
        None => Outcome::NotRunning,
    }
}

/// Answers the approval `approval_id` run `id` waits for, if this instance
/// runs it and that approval is pending.
pub(super) async fn decide_here(
    state: &AppState,
    id: &str,
    approval_id: &str,
    approve: bool,
) -> Outcome {
    let Some(live) = state.api_runs.get(id) else {
        return Outcome::NotPending;
    };
    {
        // Taken here, so a second answer to the same approval is 409.
        let mut pending = live.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.as_deref() != Some(approval_id) {
            return Outcome::NotPending;
        }
        *pending = None;
    }
    match live
        .decisions
        .send((approval_id.to_string(), approve))
        .await
    {
        Ok(()) => Outcome::Done,
        Err(_) => Outcome::NotPending,
    }
}

/// Where a command about an active run `row` goes: this instance's live
/// task (`live`), or the instance running it.
async fn act(state: &AppState, row: &RunRow, live: bool, op: Op) -> Result<Outcome, ApiError> {
    if live {
        return Ok(remote::here(state, &row.id, op).await);
    }
    match remote::elsewhere(state, row.instance.as_deref()).filter(|_| !row.finished()) {
        Some(other) => remote::pass_on(state, other, &row.id, op).await,
        None => Ok(Outcome::NotRunning),
    }
}

/// The `input` text of a steer body.
fn steer_text(body: &Value) -> Result<String, ApiError> {
    match body.get("input") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(ApiError::invalid(
            "input must be a non-empty string",
            "input",
        )),
    }
}

/// `POST /v1/runs/{id}/steer` `{input}`: the text becomes a user message
/// before the run's next model call.
pub async fn steer(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (body, _) = read_json(&req, payload, &state.live()).await?;
    let text = steer_text(&body)?;
    let (row, live) = live_run(&state, &req, &id).await?;
    if act(&state, &row, live.is_some(), Op::SteerRun(text)).await? != Outcome::Done {
        return Err(not_running(&id));
    }
    Ok(HttpResponse::Accepted()
        .json(json!({"id": row.id, "object": "hermes.run.steer", "queued": true})))
}

/// `POST /v1/runs/{id}/approval` `{approval_id, decision}`.
pub async fn approval(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (body, _) = read_json(&req, payload, &state.live()).await?;
    let approve = match body.get("decision").and_then(Value::as_str) {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return Err(ApiError::invalid(
                "decision must be \"approve\" or \"deny\"",
                "decision",
            ));
        }
    };
    let Some(approval_id) = body.get("approval_id").and_then(Value::as_str) else {
        return Err(ApiError::invalid(
            "approval_id must be a string",
            "approval_id",
        ));
    };
    let (row, live) = live_run(&state, &req, &id).await?;
    let op = Op::Decide {
        approval_id: approval_id.to_string(),
        approve,
    };
    if act(&state, &row, live.is_some(), op).await? != Outcome::Done {
        return Err(ApiError::conflict(
            format!("Approval {approval_id} is not pending"),
            "approval_not_pending",
        ));
    }
    let decision = if approve { "approve" } else { "deny" };
    Ok(HttpResponse::Ok()
        .json(json!({"id": *id, "approval_id": approval_id, "decision": decision})))
}

/// Ends the runs left going by a gateway that is gone (see
/// [`super::responses::interrupt_left_over`] for `at_start`).
pub async fn interrupt_left_over(
    store: &crate::store::Store,
    leases: &crate::platforms::consumer::Leases,
    at_start: bool,
) -> Result<usize, StoreError> {
    let mut ended = 0;
    for (id, instance) in store.active_runs().await? {
        if leases.cut_off(instance.as_deref(), at_start).await
            && store.interrupt_run(&id, now()).await?
        {
            ended += 1;
        }
    }
    if ended > 0 {
        log::warn!("{ended} run(s) cut off by a stopped gateway end interrupted");
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_a_string_or_messages_ending_with_the_user() {
        let r = parse_input(&json!({"input": "hi", "session_id": "s1"}))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (r.user.text(), r.session_id.as_deref()),
            ("hi".into(), Some("s1"))
        );
        let r = parse_input(&json!({"input": [
            {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}]}))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((r.history.len(), r.user.text()), (2, "c".into()));
        for bad in [
            json!({}),
            json!({"input": ""}),
            json!({"input": []}),
            json!({"input": 3}),
            json!({"input": [{"role": "assistant", "content": "b"}]}),
            json!({"input": "x", "session_id": 4}),
        ] {
            assert!(parse_input(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_body_hash_is_stable_hex_sha256() {
        assert_eq!(
            body_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn closing_events_follow_the_outcome() {
        let mut o = TurnOutcome::failed("boom");
        assert_eq!(closing(&o, false).0, "failed");
        assert!(closing(&o, false).1.1.contains("boom"));
        o.status = TurnStatus::Completed;
        assert_eq!(closing(&o, false).1.0, "run.completed");
        assert_eq!(closing(&o, true).0, "cancelled");
        o.status = TurnStatus::Cancelled;
        assert_eq!(closing(&o, false).0, "interrupted");
    }
}
