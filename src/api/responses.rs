//! The Responses API routes: `POST /v1/responses` (plain and streamed),
//! `GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.
//!
//! A request's history is its chain (`previous_response_id`, or the latest
//! response of a `conversation` name) rebuilt by the `ResponseStoreActor`.
//! Streams run through a relay task that owns the run: when the client
//! leaves, the relay interrupts the turn, still receives its `Finished`, and
//! stores the response as `incomplete` with the partial text.

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::body::read_json;
use super::chat_format::Frame;
use super::error::ApiError;
use super::responses_format::{
    ResponseBuilder, ResponseHead, TRUNCATION_MAX_MESSAGES, fix_orphan_tool_results, page_items,
    parse_request, truncate,
};
use super::run::{Run, RunRequest, RunSession, SESSION_HEADER, storage_error};
use super::sse_out;
use super::state::AppState;
use crate::actors::response_store::{
    Chain, Delete, Get, Put, ResolveConversation, ResponseStoreActor,
};
use crate::agent::{AgentEvent, TurnOutcome, TurnStatus};
use crate::db::StoreError;
use crate::openai::Message;
use crate::response_db::StoredResponse;

/// Route label for metrics.
const ROUTE: &str = "/v1/responses";
/// Frames buffered between the relay and a slow client.
const FRAME_BUFFER: usize = 64;
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
    conversation: Option<String>,
    previous_id: Option<String>,
    session_id: String,
    instructions: Option<String>,
    input_items: Vec<Value>,
    /// This turn's input as chat messages (the user input last).
    turn: Vec<Message>,
}

impl Record {
    /// Stores the response (unless `store: false`) and advances the
    /// conversation name; returns once the write is committed, so neither a
    /// 200 nor `response.completed` leaves before the response is durable.
    async fn keep(self, id: &str, outcome: &TurnOutcome, object: &Value) -> Result<(), ApiError> {
        let Some(store) = self.store else {
            return Ok(());
        };
        let mut turn = self.turn;
        turn.extend(outcome.messages.iter().cloned());
        let created_at = object["created_at"].as_i64().unwrap_or(0);
        let response = StoredResponse {
            id: id.to_string(),
            previous_id: self.previous_id,
            session_id: self.session_id,
            created_at,
            instructions: self.instructions,
            input_items: Value::Array(self.input_items).to_string(),
            turn_messages: serde_json::to_string(&turn).unwrap_or_else(|_| "[]".into()),
            response: object.to_string(),
        };
        let put = Put {
            response,
            conversation: self.conversation,
        };
        let written = ask(&store, put).await?;
        written.map_err(|e| {
            log::error!("response {id} could not be stored: {e}");
            storage_error(&e)
        })
    }
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
    let store = state.responses.clone();

    // The chain this turn continues.
    let previous_id = match (&p.previous_response_id, &p.conversation) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(name)) => ask(&store, ResolveConversation { name: name.clone() })
            .await?
            .map_err(store_error)?,
        _ => None,
    };
    let mut history = Vec::new();
    let mut inherited = None;
    let mut session_id = None;
    let mut chained_from = None;
    if let Some(id) = previous_id {
        match ask(&store, Get { id: id.clone() })
            .await?
            .map_err(store_error)?
        {
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
    let system = match (&instructions, &p.system_extra) {
        (Some(a), Some(b)) => Some(format!("{a}\n{b}")),
        (a, b) => a.clone().or_else(|| b.clone()),
    };

    let mut turn = p.messages.clone();
    turn.push(p.user.clone());
    fix_orphan_tool_results(&history, &mut turn);
    let user = turn.last().cloned().unwrap_or_else(|| p.user.clone());
    history.extend(turn[..turn.len() - 1].iter().cloned());
    if p.truncation_auto {
        history = truncate(history, TRUNCATION_MAX_MESSAGES);
    }

    let run = Run::begin(
        &state,
        &req,
        ROUTE,
        RunRequest {
            user,
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
        metadata: p.metadata.clone(),
        echo: p.echo.clone(),
    };
    let record = Record {
        store: p.store.then_some(store),
        conversation: p.conversation.clone(),
        previous_id: chained_from,
        session_id: session_id.clone(),
        instructions,
        input_items: p.input_items,
        turn,
    };
    let builder = ResponseBuilder::new(head);
    if p.stream {
        let (tx, rx) = mpsc::channel(FRAME_BUFFER);
        actix::spawn(relay(run, builder, tx, record));
        let frames = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|f| (f, rx))
        }));
        return Ok(sse_out::respond(
            &req,
            frames,
            live.keep_alive,
            &state.metrics,
            &session_id,
        ));
    }
    complete(run, builder, record).await
}

/// A non-streaming response: run to the end, store, answer.
async fn complete(
    mut run: Run,
    mut builder: ResponseBuilder,
    record: Record,
) -> Result<HttpResponse, ApiError> {
    let mut ignored = Vec::new();
    let outcome = loop {
        match run.events.recv().await {
            Some(AgentEvent::Finished(o)) => break *o,
            Some(ev) => {
                run.observe(&ev);
                builder.event(&ev, &mut ignored);
                ignored.clear();
            }
            None => break stopped_outcome(),
        }
    };
    run.finish(&outcome).await?;
    let object = builder.finish(&outcome, &mut ignored);
    let id = builder.id().to_string();
    let session_id = record.session_id.clone();
    record.keep(&id, &outcome, &object).await?;
    if outcome.status == TurnStatus::Failed {
        // The SDKs raise on this, instead of showing an error as if it were the answer.
        return Err(ApiError::turn_failed(&outcome, "input"));
    }
    Ok(HttpResponse::Ok()
        .insert_header((SESSION_HEADER, session_id))
        .json(object))
}

fn stopped_outcome() -> TurnOutcome {
    TurnOutcome::failed("the agent stopped unexpectedly")
}

/// Relays a streamed response to the client; outlives the client if it leaves.
async fn relay(
    mut run: Run,
    mut builder: ResponseBuilder,
    tx: mpsc::Sender<Frame>,
    record: Record,
) {
    let mut out = Vec::new();
    builder.start(&mut out);
    let mut gone = false;
    loop {
        for f in out.drain(..) {
            if !gone && tx.send(f).await.is_err() {
                gone = true;
                run.interrupt();
            }
        }
        let ev = tokio::select! {
            ev = run.events.recv() => ev,
            _ = tx.closed(), if !gone => {
                gone = true;
                run.interrupt();
                continue;
            }
        };
        let outcome = match ev {
            Some(AgentEvent::Finished(o)) => *o,
            Some(ev) => {
                run.observe(&ev);
                builder.event(&ev, &mut out);
                continue;
            }
            None => stopped_outcome(),
        };
        let object = builder.finish(&outcome, &mut out);
        let id = builder.id().to_string();
        let recorded = match run.finish(&outcome).await {
            Ok(()) => record.keep(&id, &outcome, &object).await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            // The stream ends failed, never `response.completed` for a
            // response that is not stored.
            builder.replace_last_with_failure(&e.message, &mut out);
        }
        for f in out.drain(..) {
            if gone || tx.send(f).await.is_err() {
                break;
            }
        }
        return;
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Response not found: {id}"), "response_not_found")
}

/// `GET /v1/responses/{id}`: exactly what `response.completed` carried.
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let found = ask(&state.responses, Get { id: id.clone() })
        .await?
        .map_err(store_error)?;
    let r = found.ok_or_else(|| not_found(&id))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(r.response.clone()))
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
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
    let found = ask(&state.responses, Get { id: id.clone() })
        .await?
        .map_err(store_error)?;
    let r = found.ok_or_else(|| not_found(&id))?;
    let items: Vec<Value> = serde_json::from_str(&r.input_items).unwrap_or_default();
    Ok(HttpResponse::Ok().json(page_items(&items, limit, q.after.as_deref(), ascending)))
}
