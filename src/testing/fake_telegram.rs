//! A fake Telegram Bot API server for tests: `getMe`, long-polling
//! `getUpdates` (with confirmed offsets, as Telegram does), `sendMessage`,
//! `editMessageText` (with "message is not modified"), `sendChatAction`,
//! `setWebhook`, `deleteWebhook`. It records every call with the time it
//! arrived, keeps every message's current text (HTML reduced to what the
//! user sees), and can be told to fail the next call of a method (a 429
//! with `retry_after`, a 409, any error).
//!
//! Runs on its own thread with its own actix system, on 127.0.0.1.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The bot the fake pretends to be.
pub const BOT_ID: i64 = 999;
pub const BOT_USERNAME: &str = "hermes_test_bot";
/// The longest a `getUpdates` waits, whatever `timeout` asks for.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub params: Value,
    pub at: Instant,
}

/// A message the bot sent, with its history.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: i64,
    pub chat_id: i64,
    /// What the user sees now.
    pub text: String,
    pub parse_mode: Option<String>,
    pub reply_to: Option<i64>,
    /// When the message was created and each time it changed.
    pub writes: Vec<Instant>,
}

/// A failure to return for the next call of a method.
#[derive(Debug, Clone)]
pub enum Inject {
    /// 429 with `parameters.retry_after`.
    RateLimit(u64),
    /// Any error code and description.
    Error(u16, String),
}

#[derive(Default)]
struct State {
    token: String,
    next_update: i64,
    updates: VecDeque<Value>,
    calls: Vec<Call>,
    messages: BTreeMap<i64, Sent>,
    next_message: i64,
    inject: HashMap<String, VecDeque<Inject>>,
    /// Numbers the `getUpdates` calls; the latest one is the live poller.
    poll_number: u64,
    /// `getUpdates` calls still waiting.
    polls_waiting: usize,
    /// Polls ended by a newer one (Telegram's 409 for two pollers).
    conflicts: usize,
}

struct Shared {
    state: Mutex<State>,
    updates_ready: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running fake.
pub struct FakeTelegram {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeTelegram {
    /// Starts the fake; calls must use `token`.
    pub fn start(token: &str) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                token: token.to_string(),
                next_update: 100,
                next_message: 1,
                ..State::default()
            }),
            updates_ready: Notify::new(),
        });
        let data = web::Data::from(shared.clone());
        let addr = super::serve_on_thread(
            "fake telegram",
            || {},
            move |app| {
                app.app_data(data.clone())
                    .app_data(web::JsonConfig::default().limit(64 * 1024 * 1024))
                    .route("/{bot}/{method}", web::post().to(handle));
            },
        );
        Self { addr, shared }
    }

    /// The base URL (`TELEGRAM_API_BASE_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues an update as it is (its `update_id` kept: a redelivery).
    pub fn push_raw(&self, update: Value) {
        self.shared.lock().updates.push_back(update);
        self.shared.updates_ready.notify_waiters();
    }

    /// Queues a text message from `user` in a private chat; returns `(update_id, message_id)`.
    pub fn push_dm(&self, user: i64, text: &str) -> (i64, i64) {
        self.push_message(user, "private", user, text)
    }

    /// Queues a text message in chat `chat` of `kind` (`private`, `group`, `supergroup`).
    pub fn push_message(&self, chat: i64, kind: &str, user: i64, text: &str) -> (i64, i64) {
        let (update_id, message_id) = {
            let mut s = self.shared.lock();
            s.next_update += 1;
            s.next_message += 1;
            (s.next_update, s.next_message)
        };
        self.push_raw(json!({
            "update_id": update_id,
            "message": {
                "message_id": message_id,
                "from": {"id": user, "is_bot": false, "first_name": "Test"},
                "chat": {"id": chat, "type": kind},
                "date": 0,
                "text": text,
            }
        }));
        (update_id, message_id)
    }

    /// Fails the next call of `method` this way (queued after earlier injections).
    pub fn inject(&self, method: &str, failure: Inject) {
        self.shared
            .lock()
            .inject
            .entry(method.to_string())
            .or_default()
            .push_back(failure);
    }

    /// How many `getUpdates` calls came while another was waiting (two
    /// pollers of one bot, which Telegram answers with a 409).
    pub fn conflicts(&self) -> usize {
        self.shared.lock().conflicts
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// Calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// The bot's messages in `chat`, oldest first.
    pub fn messages(&self, chat: i64) -> Vec<Sent> {
        self.shared
            .lock()
            .messages
            .values()
            .filter(|m| m.chat_id == chat)
            .cloned()
            .collect()
    }

    /// Waits (bounded) until `cond` holds on the messages of `chat`.
    pub async fn wait_for(
        &self,
        chat: i64,
        limit: Duration,
        cond: impl Fn(&[Sent]) -> bool,
    ) -> Vec<Sent> {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.messages(chat);
            if cond(&m) || Instant::now() >= deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn ok(result: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({"ok": true, "result": result}))
}

fn fail(code: u16, description: &str, parameters: Option<Value>) -> HttpResponse {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    let status = actix_web::http::StatusCode::from_u16(code)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(status).json(body)
}

/// What a user sees of a message sent with `parse_mode: HTML`. Unbalanced
/// tags are a parse error, as in Telegram.
fn visible(text: &str, parse_mode: Option<&str>) -> Result<String, String> {
    if parse_mode != Some("HTML") {
        return Ok(text.to_string());
    }
    let mut out = String::new();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find('>') else {
            return Err("Bad Request: can't parse entities: unclosed tag".into());
        };
        let tag = &rest[i + 1..i + j];
        if let Some(name) = tag.strip_prefix('/') {
            if stack.pop().as_deref() != Some(name) {
                return Err(format!(
                    "Bad Request: can't parse entities: unexpected end tag {name}"
                ));
            }
        } else {
            stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
        }
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    if !stack.is_empty() {
        return Err("Bad Request: can't parse entities: unclosed tag".into());
    }
    Ok(out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&"))
}

async fn handle(
    shared: web::Data<Shared>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> HttpResponse {
    let (bot, method) = path.into_inner();
    let p = body.into_inner();
    {
        let mut s = shared.lock();
        s.calls.push(Call {
            method: method.clone(),
            params: p.clone(),
            at: Instant::now(),
        });
        if bot != format!("bot{}", s.token) {
            return fail(401, "Unauthorized", None);
        }
        if let Some(inj) = s.inject.get_mut(&method).and_then(|q| q.pop_front()) {
            return match inj {
                Inject::RateLimit(secs) => fail(
                    429,
                    &format!("Too Many Requests: retry after {secs}"),
                    Some(json!({"retry_after": secs})),
                ),
                Inject::Error(code, d) => fail(code, &d, None),
            };
        }
    }
    match method.as_str() {
        "getMe" => ok(
            json!({"id": BOT_ID, "is_bot": true, "username": BOT_USERNAME, "first_name": "Hermes"}),
        ),
        "getUpdates" => get_updates(&shared, &p).await,
        "sendMessage" => {
            let mut s = shared.lock();
            let chat_id = p["chat_id"].as_i64().unwrap_or_default();
            let mode = p["parse_mode"].as_str();
            let text = match visible(p["text"].as_str().unwrap_or(""), mode) {
                Ok(t) => t,
                Err(e) => return fail(400, &e, None),
            };
            if text.trim().is_empty() {
                return fail(400, "Bad Request: message text is empty", None);
            }
            if text.encode_utf16().count() > 4096 {
                return fail(400, "Bad Request: message is too long", None);
            }
            s.next_message += 1;
            let id = s.next_message;
            s.messages.insert(
                id,
                Sent {
                    id,
                    chat_id,
                    text: text.clone(),
                    parse_mode: mode.map(String::from),
                    reply_to: p["reply_parameters"]["message_id"].as_i64(),
                    writes: vec![Instant::now()],
                },
            );
            ok(json!({"message_id": id, "chat": {"id": chat_id}, "text": text}))
        }
        "editMessageText" => {
            let mut s = shared.lock();
            let id = p["message_id"].as_i64().unwrap_or_default();
            let mode = p["parse_mode"].as_str();
            let text = match visible(p["text"].as_str().unwrap_or(""), mode) {
                Ok(t) => t,
                Err(e) => return fail(400, &e, None),
            };
            if text.encode_utf16().count() > 4096 {
                return fail(400, "Bad Request: MESSAGE_TOO_LONG", None);
            }
            let Some(m) = s.messages.get_mut(&id) else {
                return fail(400, "Bad Request: message to edit not found", None);
            };
            if m.text == text && m.parse_mode.as_deref() == mode {
                return fail(
                    400,
                    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
                    None,
                );
            }
            m.text = text.clone();
            m.parse_mode = mode.map(String::from);
            m.writes.push(Instant::now());
            ok(json!({"message_id": id, "text": text}))
        }
        "sendChatAction" | "setWebhook" | "deleteWebhook" => ok(json!(true)),
        _ => fail(404, "Not Found", None),
    }
}

/// Counts a waiting poll until it answers (or its client goes away).
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().polls_waiting -= 1;
    }
}

/// Long polling, as Telegram does it: updates from `offset` on (which
/// confirms the ones before), or `[]` after `timeout` s. A poll that comes
/// while another waits ends the waiting one with Telegram's 409 ("terminated
/// by other getUpdates request"), counted in [`FakeTelegram::conflicts`].
async fn get_updates(shared: &Shared, p: &Value) -> HttpResponse {
    let offset = p["offset"].as_i64().unwrap_or(0);
    let wait = Duration::from_secs(p["timeout"].as_u64().unwrap_or(0)).min(MAX_POLL_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let me = {
        let mut s = shared.lock();
        if s.polls_waiting > 0 {
            s.conflicts += 1;
        }
        s.polls_waiting += 1;
        s.poll_number += 1;
        s.poll_number
    };
    let _waiting = Waiting(shared);
    shared.updates_ready.notify_waiters();
    loop {
        let notified = shared.updates_ready.notified();
        {
            let mut s = shared.lock();
            if s.poll_number != me {
                return fail(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                    None,
                );
            }
            // An offset confirms every update before it, as in Telegram.
            s.updates
                .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            if !s.updates.is_empty() {
                let batch: Vec<Value> = s.updates.iter().take(100).cloned().collect();
                return ok(Value::Array(batch));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return ok(json!([]));
        }
    }
}
