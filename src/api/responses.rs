//! The Responses API routes: `POST /v1/responses` (plain and streamed),
//! `GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.
//!
//! A request's history is its chain (`previous_response_id`, or the latest
//! response of a `conversation` name) rebuilt by the `ResponseStoreActor`.
//! Streams run through a relay task that owns the run: when the client
//! leaves, the relay interrupts the turn, still receives its `Finished`, and
//! stores the response as `incomplete` with the partial text.

use std::collections::HashMap;
use std::sync::Arc;

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::body::read_json;
use super::chat_format::Frame;
use super::error::ApiError;
use super::remote::{self, Outcome};
use super::responses_format::{
    ResponseBuilder, ResponseHead, TRUNCATION_MAX_MESSAGES, interrupted_event, mark_cut_off,
    object_from_events, page_items, parse_request, split_input, to_messages, truncate,
};
use super::run::{Run, RunRequest, RunSession, SESSION_HEADER, storage_error};
use super::sse_out;
use super::state::AppState;
use crate::actors::response_store::{
    AnswerApprovals, Chain, Delete, FindApprovals, Get, InChain, Put, ResolveConversation,
    ResolveItems, ResponseStoreActor,
};
use crate::agent::{AgentEvent, ResumedCall, TurnOutcome, TurnStatus};
use crate::config::ToolItems;
use crate::db::StoreError;
use crate::journal;
use crate::openai::Message;
use crate::openai::{FunctionCall, ToolCall};
use crate::platforms::consumer::Leases;
use crate::response_db::{StoredApproval, StoredResponse};
use crate::store::Store;

/// Route label for metrics.
const ROUTE: &str = "/v1/responses";
/// Request header choosing how tools the agent ran appear.
pub const TOOL_ITEMS_HEADER: &str = "X-Hermes-Tool-Items";
/// Frames buffered between the relay and a slow client.
const FRAME_BUFFER: usize = 64;
/// How long cancelling (or deleting) a running response waits for it to
/// store its last state.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// `input_items` page size when none is asked for, and the largest allowed.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

fn store_error(e: StoreError) -> ApiError {
    ApiError::internal(format!("response store: {e}"))
}

async fn ask<M>(store: &Addr<ResponseStoreActor>, msg: M) -> Result<M::Result, ApiError>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    ResponseStoreActor: actix::Handler<M>,
{
    store
        .send(msg)
        .await
        .map_err(|e| ApiError::internal(format!("response store unavailable: {e}")))
}

/// What is kept once the turn ends.
struct Record {
    store: Option<Addr<ResponseStoreActor>>,
    /// The API key (by name) the response belongs to.
    owner: String,
    conversation: Option<String>,
    previous_id: Option<String>,
    session_id: String,
    instructions: Option<String>,
    input_items: Vec<Value>,
    /// This turn's input as chat messages (the user input last).
    turn: Vec<Message>,
    /// This gateway instance (recorded on a response while it runs).
    instance: String,
}

impl Record {
    /// The stored form of the response in the state `object` shows.
    fn stored(
        &self,
        builder: &ResponseBuilder,
        outcome: Option<&TurnOutcome>,
        object: &Value,
    ) -> StoredResponse {
        let id = builder.id();
        let item_ids = self
            .input_items
            .iter()
            .filter_map(|i| i["id"].as_str())
            .chain(builder.item_ids())
            .map(String::from)
            .collect();
        let approvals = builder
            .requested()
            .iter()
            .map(|(approval_id, call)| StoredApproval {
                approval_id: approval_id.clone(),
                response_id: id.to_string(),
                call_id: call.id.clone(),
                name: call.function.name.clone(),
                arguments: call.function.arguments.clone(),
                answered: false,
            })
            .collect();
        let mut turn = self.turn.clone();
        if let Some(o) = outcome {
            turn.extend(o.messages.iter().cloned());
        }
        StoredResponse {
            id: id.to_string(),
            previous_id: self.previous_id.clone(),
            session_id: self.session_id.clone(),
            created_at: object["created_at"].as_i64().unwrap_or(0),
            instructions: self.instructions.clone(),
            input_items: Value::Array(self.input_items.clone()).to_string(),
            turn_messages: serde_json::to_string(&turn).unwrap_or_else(|_| "[]".into()),
            response: object.to_string(),
            owner: self.owner.clone(),
            item_ids,
            approvals,
            live: outcome.is_none(),
            instance: outcome.is_none().then(|| self.instance.clone()),
        }
    }

    /// Writes the response (unless `store: false`) and, once it ended,
    /// advances the conversation name; returns once the write is
    /// committed, so neither a 200 nor `response.completed` leaves before
    /// the response is durable. Without `outcome` the response is written
    /// as running (a restart then ends it as interrupted).
    async fn keep(
        &self,
        builder: &ResponseBuilder,
        outcome: Option<&TurnOutcome>,
        object: &Value,
        events: Vec<Arc<journal::Event>>,
    ) -> Result<(), ApiError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let put = Put {
            response: self.stored(builder, outcome, object),
            conversation: self.conversation.clone().filter(|_| outcome.is_some()),
            events,
        };
        let written = ask(store, put).await?;
        written.map_err(|e| {
            log::error!("response {} could not be stored: {e}", builder.id());
            storage_error(&e)
        })
    }
}

/// `X-Hermes-Tool-Items: mcp_call | function_call | none`, else the configured default.
fn tool_items(req: &HttpRequest, default: ToolItems) -> Result<ToolItems, ApiError> {
    let Some(v) = req.headers().get(TOOL_ITEMS_HEADER) else {
        return Ok(default);
    };
    v.to_str().ok().and_then(ToolItems::parse).ok_or_else(|| {
        ApiError::invalid(
            format!("{TOOL_ITEMS_HEADER} must be mcp_call, function_call or none"),
            TOOL_ITEMS_HEADER,
        )
    })
}

/// Replaces every `item_reference` by the stored item it names (among this
/// key's responses); a reference to an approval request adds nothing. An
/// unknown id is a 404 naming `input[i].id`.
async fn resolve_references(
    store: &Addr<ResponseStoreActor>,
    owner: &str,
    items: Vec<Value>,
) -> Result<Vec<Value>, ApiError> {
    let is_ref = |v: &Value| v["type"] == "item_reference";
    let ids: Vec<String> = items
        .iter()
        .filter(|v| is_ref(v))
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect();
    if ids.is_empty() {
        return Ok(items);
    }
    let found = ask(
        store,
        ResolveItems {
            owner: owner.to_string(),
            ids,
        },
    )
    .await?
    .map_err(store_error)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if !is_ref(&item) {
            out.push(item);
            continue;
        }
        let id = item["id"].as_str().unwrap_or("");
        match found.get(id) {
            Some(v) if v["type"] == "mcp_approval_request" => {}
            Some(v) => out.push(v.clone()),
            None => {
                return Err(ApiError {
                    param: Some(format!("input[{i}].id")),
                    ..ApiError::not_found(format!("Item not found: {id}"), "item_not_found")
                });
            }
        }
    }
    Ok(out)
}

/// A paused turn the client answered.
struct Resumption {
    /// The response whose turn paused.
    response_id: String,
    calls: Vec<ResumedCall>,
    /// Call id → the approval id it answers.
    approval_of: HashMap<String, String>,
    /// The items that are new input (after the answers).
    new_input: Vec<Value>,
}

/// Checks the `mcp_approval_response` items of a request and claims them:
/// each must name an open approval of this key, all of one response, in the
/// chain of `previous_response_id` when one is given. `None` without answers.
async fn resumption(
    store: &Addr<ResponseStoreActor>,
    owner: &str,
    previous: Option<&str>,
    items: &[Value],
) -> Result<Option<Resumption>, ApiError> {
    let answers: Vec<(usize, &Value)> = items
        .iter()
        .enumerate()
        .filter(|(_, v)| v["type"] == "mcp_approval_response")
        .collect();
    if answers.is_empty() {
        return Ok(None);
    }
    let ids: Vec<String> = answers
        .iter()
        .map(|(_, v)| v["approval_request_id"].as_str().unwrap_or("").to_string())
        .collect();
    let found = ask(
        store,
        FindApprovals {
            owner: owner.to_string(),
            ids: ids.clone(),
        },
    )
    .await?
    .map_err(store_error)?;
    let bad = |i: usize, why: &str| {
        ApiError::invalid(why.to_string(), format!("input[{i}].approval_request_id"))
    };
    let mut response_id: Option<&str> = None;
    let mut calls = Vec::new();
    let mut approval_of = HashMap::new();
    for ((i, answer), id) in answers.iter().zip(&ids) {
        let Some(a) = found.iter().find(|a| &a.approval_id == id) else {
            return Err(bad(*i, &format!("Unknown approval request: {id}")));
        };
        if a.answered {
            return Err(bad(
                *i,
                &format!("Approval request {id} was already answered"),
            ));
        }
        if response_id.is_some_and(|r| r != a.response_id) {
            return Err(bad(
                *i,
                "All approvals answered in one request must belong to one response",
            ));
        }
        response_id = Some(&a.response_id);
        calls.push(ResumedCall {
            call: ToolCall {
                id: a.call_id.clone(),
                kind: "function".into(),
                function: FunctionCall {
                    name: a.name.clone(),
                    arguments: a.arguments.clone(),
                },
            },
            approved: answer["approve"].as_bool().unwrap_or(false),
        });
        approval_of.insert(a.call_id.clone(), a.approval_id.clone());
    }
    let response_id = response_id.unwrap_or_default().to_string();
    let first = answers.first().map_or(0, |(i, _)| *i);
    if let Some(head) = previous {
        let inside = ask(
            store,
            InChain {
                head: head.to_string(),
                id: response_id.clone(),
            },
        )
        .await?
        .map_err(store_error)?;
        if !inside {
            return Err(bad(
                first,
                &format!("The approval request is not in the chain of {head}"),
            ));
        }
    }
    if !ask(store, AnswerApprovals { ids })
        .await?
        .map_err(store_error)?
    {
        return Err(bad(first, "The approval request was already answered"));
    }
    // Without `previous_response_id` the client resent its conversation:
    // what comes before the answers is history the store already has.
    let last = answers.last().map_or(0, |(i, _)| *i);
    let new_input = items
        .iter()
        .enumerate()
        .filter(|(i, v)| v["type"] != "mcp_approval_response" && (previous.is_some() || *i > last))
        .map(|(_, v)| v.clone())
        .collect();
    Ok(Some(Resumption {
        response_id,
        calls,
        approval_of,
        new_input,
    }))
}

/// `POST /v1/responses`.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let live = state.live();
    let (body, _) = read_json(&req, payload, &live).await?;
    let p = parse_request(&body, &live.model_name)?;
    let mode = tool_items(&req, live.tool_items)?;
    let owner = super::edge::key_name(&req);
    let store = state.responses.clone();
    let items = resolve_references(&store, &owner, p.input_items.clone()).await?;

    // The chain this turn continues.
    let named = match (&p.previous_response_id, &p.conversation) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(name)) => ask(&store, ResolveConversation { name: name.clone() })
            .await?
            .map_err(store_error)?,
        _ => None,
    };
    let resumed = resumption(&store, &owner, named.as_deref(), &items).await?;
    let previous_id = named.or_else(|| resumed.as_ref().map(|r| r.response_id.clone()));
    let mut history = Vec::new();
    let mut inherited = None;
    let mut session_id = None;
    let mut chained_from = None;
    if let Some(id) = previous_id {
        let found = ask(&store, Get { id: id.clone() })
            .await?
            .map_err(store_error)?
            .filter(|prev| visible(&prev.owner, &owner));
        match found {
            Some(prev) => {
                history = ask(&store, Chain { id: id.clone() })
                    .await?
                    .map_err(store_error)?
                    .unwrap_or_default();
                inherited = prev.instructions.clone();
                session_id = Some(prev.session_id.clone());
                chained_from = Some(id);
            }
            None if p.previous_response_id.is_some() => {
                return Err(ApiError {
                    param: Some("previous_response_id".into()),
                    ..ApiError::not_found(
                        format!("Previous response not found: {id}"),
                        "response_not_found",
                    )
                });
            }
            // A name whose response is gone starts the conversation afresh.
            None => {}
        }
    }
    let session_id = session_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let instructions = p.instructions.clone().or(inherited);

    let (resume, approval_of, new_input) = match resumed {
        Some(r) => (r.calls, r.approval_of, r.new_input),
        None => (Vec::new(), HashMap::new(), items.clone()),
    };
    let (messages, system_extra) = to_messages(&new_input);
    let system = match (&instructions, system_extra.is_empty()) {
        (Some(a), false) => Some(format!("{a}\n{}", system_extra.join("\n"))),
        (Some(a), true) => Some(a.clone()),
        (None, false) => Some(system_extra.join("\n")),
        (None, true) => None,
    };
    // The turn's input: a user message or a tool result last, unless the
    // turn only goes on from answered approvals.
    let (prefix, user) = if resume.is_empty() || !messages.is_empty() {
        let (prefix, user) = split_input(messages)?;
        (prefix, Some(user))
    } else {
        (Vec::new(), None)
    };
    let mut turn = prefix.clone();
    turn.extend(user.clone());
    history.extend(prefix);
    if p.truncation_auto {
        history = truncate(history, TRUNCATION_MAX_MESSAGES);
    }

    let run = Run::begin(
        &state,
        &req,
        ROUTE,
        RunRequest {
            user,
            resume,
            // Approvals can only be answered in a later request if this
            // response is kept.
            defer_approvals: p.store,
            system,
            history,
            // Always streamed upstream: the output items are built from the deltas.
            stream: true,
            session: RunSession::Fixed {
                id: session_id.clone(),
                exclusive: p.conversation.is_some(),
            },
            params: p.params.clone(),
        },
    )
    .await?;
    let head = ResponseHead {
        id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
        created_at: crate::clock::unix_now(),
        model: p.model.clone(),
        instructions: instructions.clone(),
        previous_response_id: chained_from.clone(),
        store: p.store,
        truncation_auto: p.truncation_auto,
        background: p.background,
        metadata: p.metadata.clone(),
        echo: p.echo.clone(),
    };
    let record = Record {
        store: p.store.then_some(store),
        owner,
        conversation: p.conversation.clone(),
        previous_id: chained_from,
        session_id: session_id.clone(),
        instructions,
        input_items: items,
        turn,
        instance: state.leases.instance().to_string(),
    };
    let builder = ResponseBuilder::new(head, mode).resuming(approval_of);
    let (done_tx, done_rx) = oneshot::channel();
    let id = builder.id().to_string();
    let sink = if p.store {
        // Written as running before anyone can ask for it, so a GET, a
        // resumed stream or a restart always finds it.
        record
            .keep(
                &builder,
                None,
                &builder.object("in_progress", None, None, None),
                Vec::new(),
            )
            .await?;
        let cancel = CancellationToken::new();
        let live = LiveResponse {
            cancel: cancel.clone(),
            owner: record.owner.clone(),
        };
        state.lock_live_responses().insert(id.clone(), live);
        let writer = journal::Writer::new(state.store.clone(), &state.journals, &id, 0);
        Sink::Journal {
            writer,
            cancel,
            _live: LiveGuard {
                state: state.clone(),
                id: id.clone(),
            },
        }
    } else if p.stream {
        let (tx, rx) = mpsc::channel(FRAME_BUFFER);
        let frames = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|f| (f, rx))
        }));
        actix::spawn(drive(run, builder, record, Sink::Client(tx), done_tx));
        return Ok(sse_out::respond(
            frames,
            live.keep_alive,
            &state.metrics,
            &session_id,
        ));
    } else {
        Sink::Waiting
    };
    if p.background && !p.stream {
        let object = builder.object("in_progress", None, None, None);
        actix::spawn(drive(run, builder, record, sink, done_tx));
        return Ok(HttpResponse::Ok()
            .insert_header((SESSION_HEADER, session_id))
            .json(object));
    }
    if p.stream {
        // The client is one reader of the journal: leaving does not stop the run.
        let events = state.journals.get(&id).map(|j| j.follow(-1));
        actix::spawn(drive(run, builder, record, sink, done_tx));
        let frames = Box::pin(
            futures_util::stream::iter(events)
                .flatten()
                .map(response_frame),
        );
        return Ok(sse_out::respond(
            frames,
            live.keep_alive,
            &state.metrics,
            &session_id,
        ));
    }
    actix::spawn(drive(run, builder, record, sink, done_tx));
    let done = done_rx
        .await
        .map_err(|_| ApiError::internal("the response ended unexpectedly"))?;
    done.recorded?;
    if done.outcome.status == TurnStatus::Failed {
        // The SDKs raise on this, instead of showing an error as if it were the answer.
        return Err(ApiError::turn_failed(&done.outcome, "input"));
    }
    Ok(HttpResponse::Ok()
        .insert_header((SESSION_HEADER, session_id))
        .json(done.object))
}

/// A journaled response event as an SSE frame (`event:` + `data:`, no `id:`,
/// as OpenAI streams them: the SDKs resume by `sequence_number`).
fn response_frame(event: std::sync::Arc<journal::Event>) -> Frame {
    Frame::Logged {
        event,
        with_id: false,
    }
}

fn stopped_outcome() -> TurnOutcome {
    TurnOutcome::failed("the agent stopped unexpectedly")
}

/// A stored response still running: how to cancel it, and whose it is.
pub struct LiveResponse {
    pub cancel: CancellationToken,
    /// The API key (by name) that created it.
    pub owner: String,
}

/// Ends a running response's live state however its task ends (a panic
/// included): its journal closes, so readers and a waiting cancel finish.
struct LiveGuard {
    state: web::Data<AppState>,
    id: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.state.journals.finish(&self.id);
        self.state.lock_live_responses().remove(&self.id);
    }
}

/// Where a response's events go.
enum Sink {
    /// A client streaming a response that is not stored: when it leaves,
    /// the turn is interrupted.
    Client(mpsc::Sender<Frame>),
    /// The journal of a stored response: readers come and go, the run goes
    /// on without them until it ends or is cancelled.
    Journal {
        writer: journal::Writer,
        cancel: CancellationToken,
        _live: LiveGuard,
    },
    /// A non-streaming client of a response that is not stored, waiting for
    /// the end: when it leaves, the turn is interrupted.
    Waiting,
}

/// The end of a response, for a client waiting for it.
struct Done {
    outcome: TurnOutcome,
    object: Value,
    recorded: Result<(), ApiError>,
}

/// Events drained from the agent before one write or send.
const MAX_BATCH: usize = 64;

impl Sink {
    /// Hands the built events on. `false` once the client left.
    async fn put(&mut self, id: &str, out: &mut Vec<Frame>) -> bool {
        match self {
            Sink::Client(tx) => {
                for f in out.drain(..) {
                    if tx.send(f).await.is_err() {
                        return false;
                    }
                }
                true
            }
            Sink::Journal { writer, .. } => {
                let events = out.drain(..).filter_map(|f| match f {
                    Frame::Named(kind, data) => Some((kind.to_string(), data)),
                    Frame::Logged { event, .. } => Some((event.kind.clone(), event.data.clone())),
                    Frame::Data(_) => None,
                });
                if let Err(e) = writer.emit(events).await {
                    log::error!("response {id}: events could not be stored: {e}");
                }
                true
            }
            Sink::Waiting => {
                out.clear();
                true
            }
        }
    }

    /// Numbers a journal's last events, to be written with the response's
    /// final state in one transaction (nothing for other sinks).
    fn seal(&mut self, out: &mut Vec<Frame>) -> Vec<Arc<journal::Event>> {
        let Sink::Journal { writer, .. } = self else {
            return Vec::new();
        };
        writer.number(out.drain(..).filter_map(|f| match f {
            Frame::Named(kind, data) => Some((kind.to_string(), data)),
            _ => None,
        }))
    }

    /// After the final write: publishes the sealed events, or, when the
    /// write failed, takes them back as frames to send again.
    fn unseal(&mut self, sealed: Vec<Arc<journal::Event>>, written: bool) -> Vec<Frame> {
        let Sink::Journal { writer, .. } = self else {
            return Vec::new();
        };
        if written {
            writer.publish(&sealed);
            return Vec::new();
        }
        writer.rewind(&sealed);
        sealed
            .into_iter()
            .map(|event| Frame::Logged {
                event,
                with_id: false,
            })
            .collect()
    }

    /// Resolves when the client left (never for a journal).
    async fn left(&self, done: &mut oneshot::Sender<Done>) {
        match self {
            Sink::Client(tx) => tx.closed().await,
            Sink::Waiting => done.closed().await,
            Sink::Journal { .. } => std::future::pending().await,
        }
    }

    /// Resolves when the response is cancelled (only stored ones can be).
    async fn cancelled(&self) {
        match self {
            Sink::Journal { cancel, .. } => cancel.cancelled().await,
            _ => std::future::pending().await,
        }
    }
}

/// Drives one response from the agent's events to its end: builds the
/// events and the object, hands them to the sink, stores the response.
async fn drive(
    mut run: Run,
    mut builder: ResponseBuilder,
    record: Record,
    mut sink: Sink,
    mut done: oneshot::Sender<Done>,
) {
    let id = builder.id().to_string();
    let mut out = Vec::new();
    builder.start(&mut out);
    let (mut attached, mut cancelled) = (true, false);
    let mut ahead = None;
    let outcome = loop {
        if ahead.is_none() && attached && !sink.put(&id, &mut out).await {
            attached = false;
            run.interrupt();
        }
        let ev = match ahead.take() {
            Some(ev) => Some(ev),
            None => tokio::select! {
                ev = run.events.recv() => ev,
                _ = sink.left(&mut done), if attached => {
                    attached = false;
                    run.interrupt();
                    continue;
                }
                _ = sink.cancelled(), if !cancelled => {
                    cancelled = true;
                    run.interrupt();
                    continue;
                }
            },
        };
        match ev {
            Some(AgentEvent::Finished(o)) => break *o,
            Some(ev) => {
                run.observe(&ev);
                if !cancelled {
                    builder.event(&ev, &mut out);
                }
                if out.len() < MAX_BATCH {
                    ahead = run.events.try_recv().ok();
                }
            }
            None => break stopped_outcome(),
        }
    };
    let mut object = builder.finish(&outcome, &mut out);
    if cancelled {
        // A cancelled response's streams end after the last event it
        // produced, with no further event; its cut-off message says so.
        out.clear();
        object = builder.object("cancelled", Some(&outcome.usage), None, None);
        mark_cut_off(&mut object);
    }
    // The last events go to disk with the final state, in one transaction.
    let sealed = sink.seal(&mut out);
    let recorded = match run.finish(&outcome).await {
        Ok(()) => {
            record
                .keep(&builder, Some(&outcome), &object, sealed.clone())
                .await
        }
        Err(e) => Err(e),
    };
    out.extend(sink.unseal(sealed, recorded.is_ok()));
    if let Err(e) = &recorded {
        // The stream ends failed, never `response.completed` for a
        // response that is not stored.
        if !cancelled {
            builder.replace_last_with_failure(&e.message, &mut out);
        }
    }
    if attached {
        sink.put(&id, &mut out).await;
    }
    // Closes the journal (readers end) and forgets the live response.
    drop(sink);
    let _ = done.send(Done {
        outcome,
        object,
        recorded,
    });
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Response not found: {id}"), "response_not_found")
}

/// Query of `GET /v1/responses/{id}`.
#[derive(serde::Deserialize)]
pub struct GetQuery {
    stream: Option<String>,
    starting_after: Option<String>,
}

/// `starting_after`: an integer ≥ −1 (−1: from the first event).
fn starting_after(v: Option<&str>) -> Result<i64, ApiError> {
    match v {
        None => Ok(-1),
        Some(s) => match s.trim().parse::<i64>() {
            Ok(n) if n >= -1 => Ok(n),
            _ => Err(ApiError::invalid(
                "starting_after must be an integer of at least -1",
                "starting_after",
            )),
        },
    }
}

/// Whether the key `who` may see a response owned by `owner` (responses
/// stored before owners were recorded have none).
fn visible(owner: &str, who: &str) -> bool {
    owner.is_empty() || owner == who
}

/// The stored response `id` if this key may see it, else 404 (a running
/// one is stored from its start, so it is found too).
async fn owned(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
) -> Result<Arc<StoredResponse>, ApiError> {
    let found = ask(&state.responses, Get { id: id.to_string() })
        .await?
        .map_err(store_error)?;
    found
        .filter(|r| visible(&r.owner, &super::edge::key_name(req)))
        .ok_or_else(|| not_found(id))
}

/// Cancels `id` if it is running and waits (bounded) until it stored its
/// last state and closed its streams.
async fn stop_running(state: &AppState, r: &StoredResponse) -> Result<(), ApiError> {
    let id = &r.id;
    if cancel_here(state, id) == Outcome::NotRunning {
        // Running on another instance: it cancels it there.
        match remote::elsewhere(state, r.instance.as_deref()).filter(|_| r.live) {
            Some(other) => {
                remote::pass_on(state, other, id, remote::Op::CancelResponse).await?;
            }
            None => return Ok(()),
        }
    }
    // Ends once its last state and event are written (read from the store
    // when another instance runs it).
    state
        .store
        .wait_until_ended(&state.journals, id, CANCEL_WAIT)
        .await;
    Ok(())
}

/// Cancels response `id` if this instance runs it.
pub(super) fn cancel_here(state: &AppState, id: &str) -> Outcome {
    let cancel = state
        .lock_live_responses()
        .get(id)
        .map(|l| l.cancel.clone());
    match cancel {
        Some(cancel) => {
            cancel.cancel();
            Outcome::Done
        }
        None => Outcome::NotRunning,
    }
}

/// The response object now: built from its events while it runs, else as stored.
async fn current(state: &AppState, req: &HttpRequest, id: &str) -> Result<Value, ApiError> {
    let r = owned(state, req, id).await?;
    if let Some(j) = state.journals.get(id) {
        let events = j.snapshot();
        if let Some(obj) =
            object_from_events(events.iter().map(|e| (e.kind.as_str(), e.data.as_str())))
        {
            return Ok(obj);
        }
    } else if r.live {
        // Running on another instance: its events so far are in the store.
        let events = state
            .store
            .events_after(id, -1)
            .await
            .map_err(|e| storage_error(&e))?;
        if let Some(obj) =
            object_from_events(events.iter().map(|e| (e.kind.as_str(), e.data.as_str())))
        {
            return Ok(obj);
        }
    }
    serde_json::from_str(&r.response)
        .map_err(|e| ApiError::internal(format!("stored response: {e}")))
}

/// `GET /v1/responses/{id}`: the response as it stands (exactly what
/// `response.completed` carried once it ended); with `stream=true`, its
/// events after `starting_after`, replayed and then live.
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let stream = match q.stream.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("stream must be true or false", "stream")),
    };
    let after = starting_after(q.starting_after.as_deref())?;
    let object = current(&state, &req, &id).await?;
    if !stream {
        return Ok(HttpResponse::Ok().json(object));
    }
    let events = state
        .store
        .read_stream(&state.journals, &id, after)
        .await
        .map_err(store_error)?;
    state.metrics.inc(
        "hermes_stream_resumes_total",
        vec![("kind", "response".into())],
        1,
    );
    let frames = events.map(response_frame);
    let keep_alive = state.live().keep_alive;
    Ok(sse_out::respond(frames, keep_alive, &state.metrics, ""))
}

/// `POST /v1/responses/{id}/cancel`: stops a running response; it is
/// returned `cancelled` (a finished one unchanged).
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = owned(&state, &req, &id).await?;
    stop_running(&state, &r).await?;
    let r = owned(&state, &req, &id).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(r.response.clone()))
}

/// `DELETE /v1/responses/{id}`: a running response is cancelled first, so
/// nothing writes it again.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = owned(&state, &req, &id).await?;
    stop_running(&state, &r).await?;
    let existed = ask(&state.responses, Delete { id: id.clone() })
        .await?
        .map_err(store_error)?;
    if !existed {
        return Err(not_found(&id));
    }
    Ok(HttpResponse::Ok().json(json!({"id": *id, "object": "response", "deleted": true})))
}

/// Query of `input_items`.
#[derive(serde::Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
    order: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`.
pub async fn input_items(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    format!("limit must be between 1 and {MAX_PAGE}"),
                    "limit",
                ));
            }
        },
    };
    let ascending = match q.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "order must be \"asc\" or \"desc\"",
                "order",
            ));
        }
    };
    let r = owned(&state, &req, &id).await?;
    let items: Vec<Value> = serde_json::from_str(&r.input_items).unwrap_or_default();
    Ok(HttpResponse::Ok().json(page_items(&items, limit, q.after.as_deref(), ascending)))
}

/// Ends the responses left running by a gateway that is gone (this one's
/// earlier process at start, or another instance that died): `incomplete`
/// with `incomplete_details.reason: "interrupted"`, the output they had,
/// and a closing `response.incomplete` event so a replay ends as a stream
/// does. `at_start`: this instance's own id marks what its earlier process
/// left; later, what it runs now.
pub async fn interrupt_left_over(
    store: &Store,
    leases: &Leases,
    at_start: bool,
) -> Result<usize, StoreError> {
    let mut ended = 0;
    for (id, instance) in store.live_responses().await? {
        if !leases.cut_off(instance.as_deref(), at_start).await {
            continue;
        }
        let events = store.events_after(&id, -1).await?;
        let next = events.last().map_or(0, |e| e.seq + 1);
        let stored = store
            .response(&id)
            .await?
            .and_then(|r| serde_json::from_str::<Value>(&r.response).ok());
        let Some(obj) =
            object_from_events(events.iter().map(|e| (e.kind.as_str(), e.data.as_str())))
                .or(stored)
        else {
            continue;
        };
        let (kind, data) = interrupted_event(obj, next);
        let object = serde_json::from_str::<Value>(&data)
            .map(|v| v["response"].to_string())
            .unwrap_or_default();
        let last = Arc::new(journal::Event {
            seq: next,
            kind,
            data,
        });
        if store.settle_response(&id, object, vec![last]).await? {
            ended += 1;
        }
    }
    if ended > 0 {
        log::warn!("{ended} response(s) cut off by a stopped gateway end incomplete (interrupted)");
    }
    Ok(ended)
}
