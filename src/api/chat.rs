//! `POST /v1/chat/completions`: non-streaming (with `Idempotency-Key`) and
//! streaming. Streams relay each agent delta as a chunk the moment it
//! arrives, from the run's event channel straight into the SSE body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::Stream;

use super::body::read_json;
use super::chat_format::{ChatRequest, ChunkFramer, Frame, completion_body, parse_request};
use super::error::ApiError;
use super::idempotency::{Begin, Stored, body_hash};
use super::run::{Recording, Run, RunRequest, RunSession, SESSION_HEADER, tool_progress};
use super::sse_out;
use super::state::AppState;
use crate::agent::{AgentEvent, TurnOutcome, TurnStatus};

/// Route label for metrics.
const ROUTE: &str = "/v1/chat/completions";

use crate::clock::unix_now;

fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

/// The handler.
pub async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    completions_in(req, payload, state, None).await
}

/// Chat completions in the stored session `session` names (as if the client
/// sent it as `X-Hermes-Session-Id`), or where the header says when `None`.
pub async fn completions_in(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    session: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let live = state.live();
    let (body, raw) = read_json(&req, payload, &live).await?;
    let parsed = parse_request(&body, &live.model_name)?;
    let session = session.map_or(RunSession::Header, RunSession::Named);
    if parsed.stream {
        return stream(req, state, parsed, session).await;
    }
    let Some(key) = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
    else {
        return complete(&req, &state, parsed, session).await.map(replay);
    };
    // Keys are per API key, and per session on `/api/sessions/{id}/chat`:
    // the same key sent to two sessions names two requests.
    let principal = match &session {
        RunSession::Named(id) => format!("{}\u{0}{id}", super::edge::key_name(&req)),
        _ => super::edge::key_name(&req),
    };
    let hash = body_hash(&raw);
    loop {
        match state.idempotency.begin(&principal, &key, hash) {
            Begin::Replay(s) => return Ok(replay(s)),
            Begin::Conflict => {
                return Err(ApiError::conflict(
                    "This Idempotency-Key was used with a different request body",
                    "idempotency_key_reused",
                ));
            }
            Begin::Wait(mut rx) => {
                // A duplicate waits for the first run instead of starting another.
                let done = rx
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|s| s.clone());
                if let Some(s) = done {
                    return Ok(replay(s));
                }
                // The first run ended without a result: try again ourselves.
            }
            Begin::Fresh(claim) => {
                let stored = complete(&req, &state, parsed, session).await?;
                claim.complete(stored.clone());
                return Ok(replay(stored));
            }
        }
    }
}

fn replay(s: Stored) -> HttpResponse {
    let mut b =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(s.status).unwrap_or_default());
    b.content_type("application/json");
    for (k, v) in &s.headers {
        b.insert_header((k.as_str(), v.as_str()));
    }
    b.body(s.body)
}

/// Runs a non-streaming turn. `Err` only for refusals before the run started
/// (never replayed); a failed turn is an `Ok` 502 that an idempotent retry gets again.
async fn complete(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    p: ChatRequest,
    session: RunSession,
) -> Result<Stored, ApiError> {
    let mut run = Run::begin(
        state,
        req,
        ROUTE,
        RunRequest {
            user: Some(p.user),
            resume: Vec::new(),
            defer_approvals: false,
            system: p.system,
            history: p.history,
            stream: false,
            session,
            params: p.params,
        },
    )
    .await?;
    let (outcome, recorded) = run.outcome().await;
    recorded?;
    let mut headers = vec![(SESSION_HEADER.to_string(), run.session_id.clone())];
    if outcome.status == TurnStatus::Failed && outcome.text.is_empty() {
        let e = ApiError::turn_failed(&outcome, "messages");
        if e.status.as_u16() == 429 {
            // Worth retrying later: not kept as this key's result.
            return Err(e);
        }
        headers.extend(e.headers().into_iter().map(|(k, v)| (k.to_string(), v)));
        return Ok(Stored {
            status: e.status.as_u16(),
            headers,
            body: Bytes::from(e.body().to_string()),
        });
    }
    if matches!(outcome.status, TurnStatus::Failed | TurnStatus::Cancelled) {
        headers.push(("X-Hermes-Completed".into(), "false".into()));
    }
    Ok(Stored {
        status: 200,
        headers,
        body: completion_body(&completion_id(), unix_now(), &p.model, &outcome),
    })
}

/// A chat stream's frames, polled by the SSE body. Written by hand rather
/// than as an `async` loop: such a loop's future holds a second copy of its
/// state across every await, and an open stream keeps its future for its
/// whole life.
struct ChatFrames {
    run: Run,
    framer: ChunkFramer,
    /// Frames made and not yet taken (one list for the stream's life, so
    /// an event does not allocate a new one).
    queue: VecDeque<Frame>,
    /// The turn being written, once the agent finished.
    recording: Option<Recording>,
    done: bool,
}

impl ChatFrames {
    /// The closing frames once the turn is written (or failed to be).
    fn close(&mut self, recorded: Result<(), ApiError>, o: &TurnOutcome) {
        let out = &mut self.queue;
        match recorded {
            // The answer reached the client but is not stored: say so.
            Err(e) => out.push_back(self.framer.error(&e)),
            Ok(()) if matches!(o.status, TurnStatus::Failed) => {
                out.push_back(self.framer.error(&ApiError::turn_failed(o, "messages")));
            }
            Ok(()) => self.framer.finish(o.status, &o.usage, out),
        }
        self.end();
    }

    /// Queues `[DONE]`; nothing follows it.
    fn end(&mut self) {
        self.queue.push_back(Frame::Data("[DONE]".into()));
        self.done = true;
    }
}

impl Stream for ChatFrames {
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let this = self.get_mut();
        loop {
            if let Some(f) = this.queue.pop_front() {
                return Poll::Ready(Some(f));
            }
            if let Some(recording) = &mut this.recording {
                let (recorded, o) = ready!(recording.as_mut().poll(cx));
                this.recording = None;
                this.close(recorded, &o);
            } else if this.done {
                return Poll::Ready(None);
            } else {
                match ready!(this.run.events.poll_recv(cx)) {
                    Some(AgentEvent::Finished(o)) => {
                        this.recording = Some(this.run.finish_owned(o));
                    }
                    Some(ev) => {
                        this.run.observe(&ev);
                        this.framer.event(&ev, &mut this.queue);
                    }
                    None => {
                        let e = ApiError::agent_failed("the agent stopped unexpectedly");
                        this.queue.push_back(this.framer.error(&e));
                        this.end();
                    }
                }
            }
        }
    }
}

async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    p: ChatRequest,
    session: RunSession,
) -> Result<HttpResponse, ApiError> {
    let live = state.live();
    let progress = tool_progress(&req, live.tool_progress);
    let run = Run::begin(
        &state,
        &req,
        ROUTE,
        RunRequest {
            user: Some(p.user),
            resume: Vec::new(),
            defer_approvals: false,
            system: p.system,
            history: p.history,
            stream: true,
            session,
            params: p.params,
        },
    )
    .await?;
    let session_id = run.session_id.clone();
    let framer = ChunkFramer::new(
        &completion_id(),
        unix_now(),
        &p.model,
        p.include_usage,
        progress,
    );
    let first = framer.role();
    let frames = ChatFrames {
        run,
        framer,
        queue: VecDeque::from([first]),
        recording: None,
        done: false,
    };
    Ok(sse_out::respond(
        frames,
        live.keep_alive,
        &state.metrics,
        &session_id,
    ))
}
