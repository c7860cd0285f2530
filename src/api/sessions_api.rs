//! The sessions API and `GET /v1/capabilities`.
//!
//! - `GET /api/sessions?limit=&after=`: the caller's stored sessions, most
//!   recently updated first (ties by key), paged after a session id.
//! - `GET /api/sessions/{id}`: one session with its messages.
//! - `PATCH /api/sessions/{id}` `{"title"}`: renames it (answers the session).
//! - `DELETE /api/sessions/{id}`: forgets it, messages and all.
//! - `POST /api/sessions/{id}/chat`: exactly `POST /v1/chat/completions`
//!   with `X-Hermes-Session-Id: {id}` (plain, streamed, idempotent; the
//!   same handler), on an API session that already exists.
//! - `GET /v1/capabilities`: what this build can do and what is configured.
//!
//! Who sees what: a key sees the sessions it created (the `owner` stored with
//! the session, by key name); a key named in `api_server.admin_keys` sees
//! every session, chat platforms' too. Anything else is a 404, never a 403,
//! so a key cannot learn that another key's session exists.
//!
//! Ids: an API session's key is `api:{id}` and its id the part after
//! `api:`; any other session (`telegram:…`, `discord:…`, `slack:…`) goes by
//! its whole key. An id is looked up as `api:{id}` first, then as a key.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::read_json;
use super::error::ApiError;
use super::state::AppState;
use crate::config::{ApprovalMode, Config};
use crate::db::StoreError;
use crate::sessions::{self, Stamped, Summary, Viewer};

/// Sessions in a page when the client does not say.
const DEFAULT_LIMIT: usize = 20;
/// Most sessions in one page.
const MAX_LIMIT: usize = 100;
/// Longest session title, in characters.
const MAX_TITLE_CHARS: usize = 200;
/// Key prefix of the sessions API clients keep (`X-Hermes-Session-Id`, runs).
const API_PREFIX: &str = "api:";
/// `source` of a session whose key names no chat platform.
const OTHER_SOURCE: &str = "cli";
/// What this build can do, whatever the configuration.
const FEATURES: &[(&str, bool)] = &[
    ("runs", true),
    ("run_events_replay", true),
    ("background_responses", true),
    ("response_stream_resume", true),
    ("sessions_api", true),
    ("tool_progress", true),
    ("approvals", true),
    ("idempotency", true),
];

/// What these routes read from configuration (part of the live settings,
/// so a reload replaces it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// Names of the API keys that see every session (`api_server.admin_keys`).
    pub admin_keys: Vec<String>,
    /// `approvals.mode`, for `/v1/capabilities`.
    pub approvals_mode: ApprovalMode,
    /// The chat platforms configured, in registry order, decided as the
    /// gateway decides which to start (a bot token is set).
    pub platforms: Vec<&'static str>,
}

impl Settings {
    /// From a configuration.
    pub fn from_config(c: &Config) -> Self {
        Self {
            admin_keys: c.api_server.admin_keys.clone(),
            approvals_mode: c.approvals.mode,
            platforms: c.configured_platforms(),
        }
    }
}

/// The id clients know a session by.
fn session_id(key: &str) -> &str {
    key.strip_prefix(API_PREFIX).unwrap_or(key)
}

/// Where a session comes from: `api`, a chat platform's name, or `cli`.
fn source(key: &str) -> &str {
    if key.starts_with(API_PREFIX) {
        return "api";
    }
    key.split_once(':')
        .and_then(|(prefix, _)| crate::platforms::info(prefix))
        .map_or(OTHER_SOURCE, |p| p.name)
}

/// The keys an id may stand for, in the order they are tried: the API
/// session first, then the id as a whole key (never an `api:` key, whose id
/// is the part after `api:`).
fn candidate_keys(id: &str) -> Vec<String> {
    let mut keys = vec![format!("{API_PREFIX}{id}")];
    if !id.starts_with(API_PREFIX) {
        keys.push(id.to_string());
    }
    keys
}

/// Who a key (by name) is to the store.
fn viewer_for(name: String, admin_keys: &[String]) -> Viewer {
    if admin_keys.contains(&name) {
        Viewer::All
    } else {
        Viewer::Key(name)
    }
}

fn viewer(req: &HttpRequest, state: &AppState) -> Viewer {
    viewer_for(
        super::edge::key_name(req),
        &state.live().sessions_api.admin_keys,
    )
}

/// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            format!("limit must be an integer from 1 to {MAX_LIMIT}, not {raw:?}"),
            "limit",
        )),
    }
}

/// The `title` of a rename: a string of 1 to [`MAX_TITLE_CHARS`]
/// characters once trimmed; answers it trimmed.
fn parse_title(body: &Value) -> Result<String, ApiError> {
    let bad = || {
        ApiError::invalid(
            format!("title must be a string of 1 to {MAX_TITLE_CHARS} characters"),
            "title",
        )
    };
    let title = body.get("title").and_then(Value::as_str).ok_or_else(bad)?;
    let title = title.trim();
    let len = title.chars().count();
    if len == 0 || len > MAX_TITLE_CHARS {
        return Err(bad());
    }
    Ok(title.to_string())
}

/// A session as every route shows it.
fn summary_json(s: &Summary) -> Value {
    json!({
        "id": session_id(&s.key),
        "title": s.title,
        "source": source(&s.key),
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "message_count": s.messages,
    })
}

/// A stored message: `role`, `content` (a string or the parts array),
/// `tool_calls` and `tool_call_id` when it has them, and `created_at`.
fn message_json(m: &Stamped) -> Value {
    let mut v = serde_json::to_value(&m.message).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("created_at".into(), m.created_at.into());
    }
    v
}

/// The body of `GET /v1/capabilities`.
fn capabilities_body(s: &Settings) -> Value {
    let features: serde_json::Map<String, Value> = FEATURES
        .iter()
        .map(|(name, on)| ((*name).to_string(), Value::Bool(*on)))
        .collect();
    json!({
        "object": "hermes.capabilities",
        "version": env!("CARGO_PKG_VERSION"),
        "features": features,
        "approvals_mode": s.approvals_mode,
        "platforms": s.platforms,
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Session not found: {id}"), "session_not_found")
}

fn read_error(e: &StoreError) -> ApiError {
    ApiError::internal(format!("cannot read the sessions: {e}"))
}

fn write_error(e: &StoreError) -> ApiError {
    ApiError {
        code: Some("storage_error"),
        ..ApiError::internal(format!("the session could not be changed: {e}"))
    }
}

/// The key of the session `id` names, if `viewer` may see it; else 404.
async fn resolve(state: &AppState, id: &str, viewer: Viewer) -> Result<String, ApiError> {
    sessions::find(&state.store, candidate_keys(id), viewer)
        .await
        .map_err(|e| read_error(&e))?
        .ok_or_else(|| not_found(id))
}

/// The query of `GET /api/sessions` (other parameters are ignored).
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /api/sessions`.
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let viewer = viewer(&req, &state);
    let bad_after = |id: &str| {
        ApiError::invalid(
            format!("after must be the id of one of your sessions; {id:?} is not"),
            "after",
        )
    };
    let after = match query.after.as_deref() {
        None => None,
        Some(id) => Some(
            sessions::find(&state.store, candidate_keys(id), viewer.clone())
                .await
                .map_err(|e| read_error(&e))?
                .ok_or_else(|| bad_after(id))?,
        ),
    };
    let page = sessions::list(&state.store, viewer, after, limit)
        .await
        .map_err(|e| read_error(&e))?
        // The `after` session went away since it was resolved.
        .ok_or_else(|| bad_after(query.after.as_deref().unwrap_or_default()))?;
    let data: Vec<Value> = page.sessions.iter().map(summary_json).collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data, "has_more": page.has_more})))
}

/// `GET /api/sessions/{id}`.
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = resolve(&state, &id, viewer(&req, &state)).await?;
    let (summary, messages) = sessions::detail(&state.store, &key)
        .await
        .map_err(|e| read_error(&e))?
        .ok_or_else(|| not_found(&id))?;
    let mut body = summary_json(&summary);
    body["messages"] = messages.iter().map(message_json).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// `PATCH /api/sessions/{id}` `{"title"}`.
pub async fn rename(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (body, _) = read_json(&req, payload, &state.live()).await?;
    let title = parse_title(&body)?;
    let viewer = viewer(&req, &state);
    let key = resolve(&state, &id, viewer.clone()).await?;
    let summary = sessions::rename(&state.store, &key, viewer, &title)
        .await
        .map_err(|e| write_error(&e))?
        .ok_or_else(|| not_found(&id))?;
    Ok(HttpResponse::Ok().json(summary_json(&summary)))
}

/// `DELETE /api/sessions/{id}`. A session with a turn running is a 409:
/// the turn would write it again when it ends.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let viewer = viewer(&req, &state);
    let key = resolve(&state, &id, viewer.clone()).await?;
    let _busy = match key.strip_prefix(API_PREFIX) {
        Some(sid) => Some(
            AppState::claim_session(&state, sid)
                .await
                .map_err(|e| super::run::storage_error(&e))?
                .ok_or_else(|| {
                    ApiError::conflict(
                        format!("A turn is running in session {id}; delete it once the turn ended"),
                        "session_busy",
                    )
                })?,
        ),
        None => None,
    };
    let deleted = sessions::delete(&state.store, &key, viewer)
        .await
        .map_err(|e| write_error(&e))?;
    if !deleted {
        return Err(not_found(&id));
    }
    Ok(HttpResponse::Ok().json(json!({"id": session_id(&key), "deleted": true})))
}

/// `POST /api/sessions/{id}/chat`: chat completions in a stored API session.
pub async fn chat(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = resolve(&state, &id, viewer(&req, &state)).await?;
    if key != format!("{API_PREFIX}{id}") {
        return Err(ApiError::conflict(
            format!(
                "Session {id} is a {} conversation; only API sessions can be continued here",
                source(&key)
            ),
            "session_not_api",
        ));
    }
    super::chat::completions_in(req, payload, state, Some(id.into_inner())).await
}

/// `GET /v1/capabilities`.
pub async fn capabilities(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(capabilities_body(&state.live().sessions_api))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_sources_follow_the_key() {
        assert_eq!(session_id("api:trip-1"), "trip-1");
        assert_eq!(session_id("api:api:x"), "api:x");
        assert_eq!(session_id("telegram:42"), "telegram:42");
        assert_eq!(source("api:trip-1"), "api");
        assert_eq!(source("telegram:42"), "telegram");
        assert_eq!(source("discord:g:c"), "discord");
        assert_eq!(source("slack:T:C:1.0"), "slack");
        assert_eq!(source("irc:x"), "cli");
        assert_eq!(source("local"), "cli");
        assert_eq!(candidate_keys("trip-1"), vec!["api:trip-1", "trip-1"]);
        assert_eq!(
            candidate_keys("telegram:42"),
            vec!["api:telegram:42", "telegram:42"]
        );
        // `api:x` is the id of `api:api:x`; the key `api:x` goes by `x`.
        assert_eq!(candidate_keys("api:x"), vec!["api:api:x"]);
    }

    #[test]
    fn admins_see_everything_others_their_own() {
        let admins = vec!["root".to_string()];
        assert_eq!(viewer_for("root".into(), &admins), Viewer::All);
        assert_eq!(
            viewer_for("alice".into(), &admins),
            Viewer::Key("alice".into())
        );
        assert_eq!(viewer_for("root".into(), &[]), Viewer::Key("root".into()));
    }

    #[test]
    fn limit_is_one_to_a_hundred() {
        assert_eq!(parse_limit(None).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("1")).ok(), Some(1));
        assert_eq!(parse_limit(Some("100")).ok(), Some(MAX_LIMIT));
        for bad in ["0", "101", "-1", "ten", "", "1.5"] {
            let e = parse_limit(Some(bad)).err();
            assert_eq!(e.and_then(|e| e.param).as_deref(), Some("limit"), "{bad:?}");
        }
    }

    #[test]
    fn titles_are_short_strings() {
        assert_eq!(
            parse_title(&json!({"title": "  Trip plans "}))
                .ok()
                .as_deref(),
            Some("Trip plans")
        );
        let longest = "é".repeat(MAX_TITLE_CHARS);
        assert_eq!(
            parse_title(&json!({"title": longest})).ok(),
            Some(longest.clone())
        );
        for bad in [
            json!({}),
            json!({"title": null}),
            json!({"title": 7}),
            json!({"title": "   "}),
            json!({"title": format!("{longest}e")}),
        ] {
            let e = parse_title(&bad).err();
            assert_eq!(e.and_then(|e| e.param).as_deref(), Some("title"), "{bad}");
        }
    }

    #[test]
    fn messages_keep_their_content_and_omit_absent_tool_fields() {
        use crate::openai::{FunctionCall, Message, ToolCall};
        let plain = message_json(&Stamped {
            message: Message::user("hi"),
            created_at: 7,
        });
        assert_eq!(
            plain,
            json!({"role": "user", "content": "hi", "created_at": 7})
        );
        let mut call = Message::assistant("");
        call.content = None;
        call.tool_calls = vec![ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "read_file".into(),
                arguments: "{}".into(),
            },
        }];
        let v = message_json(&Stamped {
            message: call,
            created_at: 8,
        });
        assert_eq!(v["tool_calls"][0]["id"], "c1");
        assert_eq!(v["tool_calls"][0]["function"]["name"], "read_file");
        assert!(v.get("tool_call_id").is_none(), "{v}");
        let parts = crate::openai::Content::Parts(vec![json!({"type": "text", "text": "see"})]);
        let mut with_parts = Message::user("");
        with_parts.content = Some(parts);
        let v = message_json(&Stamped {
            message: with_parts,
            created_at: 9,
        });
        assert_eq!(v["content"], json!([{"type": "text", "text": "see"}]));
    }

    #[test]
    fn capabilities_name_every_feature_and_the_configuration() {
        let mut c = Config::defaults();
        c.approvals.mode = ApprovalMode::Ask;
        c.api_server.admin_keys = vec!["root".into()];
        c.discord.bot_token = Some("token".into());
        let s = Settings::from_config(&c);
        assert_eq!(s.platforms, vec!["discord"]);
        assert_eq!(s.admin_keys, vec!["root"]);
        let b = capabilities_body(&s);
        assert_eq!(b["object"], "hermes.capabilities");
        assert_eq!(b["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(b["approvals_mode"], "ask");
        assert_eq!(b["platforms"], json!(["discord"]));
        let features = b["features"].as_object().cloned().unwrap_or_default();
        assert_eq!(features.len(), FEATURES.len());
        assert!(features.values().all(|v| v == true), "{b}");
        assert!(features.contains_key("sessions_api"), "{b}");
    }
}
