//! A fake Slack for tests: the Web API on actix-web and Socket Mode on a raw
//! tokio websocket listener, both on 127.0.0.1.
//!
//! Web API (`POST {api_url}/{method}`; JSON, form or empty bodies; answered
//! HTTP 200 with `{"ok":true,…}` or `{"ok":false,"error":…}` as Slack does):
//! `auth.test`, `apps.connections.open` (the app token only; single-use
//! tickets), `chat.postMessage` (40 000 characters), `chat.update`,
//! `chat.startStream` / `chat.appendStream` / `chat.stopStream` (12 000
//! characters a chunk) and `assistant.threads.setStatus`; any other method
//! is `unknown_method`. Every other method needs the bot token. Failures can
//! be injected per method (a 429 with `Retry-After`, any Slack error, any
//! HTTP status, an answer lost after the work was done), and a method can
//! be refused for good, at once or after n more calls. A slash command's
//! `response_url` is served here too.
//!
//! Socket Mode: `hello` first, then `events_api` and `slash_commands`
//! envelopes to the newest socket (queued while none is connected), acks
//! recorded with their delay, events not acked redelivered to the next
//! connection (new envelope id, same event id, `retry_attempt` + 1), client
//! pings answered (or not, on request), `disconnect` messages followed by a
//! close [`DISCONNECT_GRACE`] later, and abrupt drops. Every message the bot
//! posts with `chat.postMessage` comes back as a `message` event from the
//! bot, as on Slack.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_codec::Framed;
use actix_http::ws::{self, CloseCode, CloseReason, Codec, Message};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The bot's user id (`auth.test` `user_id`).
pub const BOT_USER: &str = "UBOT0001";
/// The bot id (`auth.test` `bot_id`).
pub const BOT_ID: &str = "BBOT0001";
/// The workspace.
pub const TEAM: &str = "T0000001";
/// After a `disconnect` message, the fake closes that socket this much later.
pub const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// The app's id, in `hello` and in envelopes.
const APP_ID: &str = "A0FAKE";
/// The slash command envelopes carry.
const COMMAND: &str = "/hermes";
/// The longest `text` of `chat.postMessage` and `chat.update`, in characters.
const MAX_TEXT: usize = 40_000;
/// The longest `markdown_text` of one stream call, in characters.
const MAX_STREAM_CHUNK: usize = 12_000;
/// The largest handshake read.
const MAX_HANDSHAKE: usize = 16 * 1024;
/// The largest message the fake reads from the client.
const MAX_CLIENT_FRAME: usize = 1024 * 1024;
/// The largest Web API body.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// How often [`FakeSlack::wait`] looks.
const WAIT_POLL: Duration = Duration::from_millis(20);
/// The ts before the first message, in microseconds: the first is
/// `1700000000.000101`, each later one a microsecond more.
const FIRST_TS_MICROS: u64 = 1_700_000_000_000_100;
/// What `hello` says in `debug_info.approximate_connection_time`.
const HELLO_CONNECTION_TIME: u64 = 18_060;
/// The methods the fake knows.
const METHODS: [&str; 8] = [
    "auth.test",
    "apps.connections.open",
    "chat.postMessage",
    "chat.update",
    "chat.startStream",
    "chat.appendStream",
    "chat.stopStream",
    "assistant.threads.setStatus",
];

/// A user's message, for [`FakeSlack::push_message`] and [`FakeSlack::push_mention`].
#[derive(Debug, Clone, Default)]
pub struct UserMessage {
    pub channel: String,
    /// `"im"` or `"channel"`.
    pub channel_type: String,
    pub user: String,
    pub text: String,
    pub ts: String,
    pub thread_ts: Option<String>,
}

/// One Web API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// The parsed body (`{}` when empty; a string when it was not JSON).
    pub body: Value,
    pub at: Instant,
}

/// A message the bot wrote, with its history.
#[derive(Debug, Clone)]
pub struct Sent {
    pub ts: String,
    pub channel: String,
    pub thread_ts: Option<String>,
    /// What the user sees now.
    pub text: String,
    /// Made by `chat.startStream`.
    pub streamed: bool,
    pub stopped: bool,
    /// Its creation and every update, append and stop.
    pub writes: Vec<Instant>,
}

/// One `assistant.threads.setStatus` call.
#[derive(Debug, Clone)]
pub struct Status {
    pub channel: String,
    pub thread_ts: String,
    pub status: String,
    pub at: Instant,
}

/// One ack the client sent on a socket.
#[derive(Debug, Clone)]
pub struct Ack {
    pub envelope_id: String,
    pub payload: Option<Value>,
    /// Since that envelope was sent to the client (zero for an unknown one).
    pub after: Duration,
}

/// A failure for the next call of a method.
#[derive(Debug, Clone)]
pub enum Inject {
    /// HTTP 429, `Retry-After: retry_after` (seconds), `{"ok":false,"error":"ratelimited"}`.
    RateLimit { retry_after: u64 },
    /// `{"ok":false,"error":…}` with HTTP 200.
    Error(String),
    /// This HTTP status with an HTML body.
    Http(u16),
    /// The call does its work, but its answer is an HTTP 502.
    LoseAnswer,
}

/// What a socket's task is told to do.
enum Ctl {
    Frame(String),
    /// Send this, then close the socket [`DISCONNECT_GRACE`] later.
    Disconnect(String),
    /// Drop the TCP stream without a close frame.
    Drop,
}

/// An envelope sent to the client: when, and the event it carries.
struct SentEnvelope {
    at: Instant,
    event_id: Option<String>,
}

struct State {
    bot_token: String,
    app_token: String,
    ws_addr: Option<SocketAddr>,
    calls: Vec<Call>,
    messages: Vec<Sent>,
    statuses: Vec<Status>,
    responses: Vec<Value>,
    inject: HashMap<String, VecDeque<Inject>>,
    /// Method → (calls still allowed, the error after them).
    refuse: HashMap<String, (usize, String)>,
    next_ts: u64,
    next_event: u64,
    next_ticket: u64,
    next_response: u64,
    /// Tickets handed out and not used yet.
    tickets: HashSet<u64>,
    opens: usize,
    connections: usize,
    next_conn: u64,
    conns: HashMap<u64, UnboundedSender<Ctl>>,
    /// The newest connection: envelopes go there.
    live: Option<u64>,
    /// Connections that got `hello`.
    greeted: HashSet<u64>,
    /// Envelopes waiting for a connection.
    queue: VecDeque<Value>,
    sent: HashMap<String, SentEnvelope>,
    /// `events_api` envelopes sent and not acked, oldest first.
    unacked: Vec<Value>,
    acks: Vec<Ack>,
    pongs: bool,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn envelope_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A non-empty string field of a body.
fn field<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

impl State {
    fn new(bot_token: &str, app_token: &str) -> Self {
        Self {
            bot_token: bot_token.to_string(),
            app_token: app_token.to_string(),
            ws_addr: None,
            calls: Vec::new(),
            messages: Vec::new(),
            statuses: Vec::new(),
            responses: Vec::new(),
            inject: HashMap::new(),
            refuse: HashMap::new(),
            next_ts: FIRST_TS_MICROS,
            next_event: 0,
            next_ticket: 0,
            next_response: 0,
            tickets: HashSet::new(),
            opens: 0,
            connections: 0,
            next_conn: 0,
            conns: HashMap::new(),
            live: None,
            greeted: HashSet::new(),
            queue: VecDeque::new(),
            sent: HashMap::new(),
            unacked: Vec::new(),
            acks: Vec::new(),
            pongs: true,
        }
    }

    fn new_ts(&mut self) -> String {
        self.next_ts += 1;
        format!(
            "{}.{:06}",
            self.next_ts / 1_000_000,
            self.next_ts % 1_000_000
        )
    }

    fn to_live(&self, ctl: Ctl) {
        if let Some(tx) = self.live.and_then(|c| self.conns.get(&c)) {
            let _ = tx.send(ctl);
        }
    }

    /// Sends an envelope to the newest connection, or queues it.
    fn deliver(&mut self, envelope: Value) {
        match self.live.and_then(|c| self.conns.get(&c)).cloned() {
            Some(tx) => self.send_on(&tx, envelope),
            None => self.queue.push_back(envelope),
        }
    }

    fn send_on(&mut self, tx: &UnboundedSender<Ctl>, envelope: Value) {
        if tx.send(Ctl::Frame(envelope.to_string())).is_err() {
            self.queue.push_back(envelope);
            return;
        }
        let id = envelope["envelope_id"].as_str().unwrap_or("").to_string();
        let event_id = envelope["payload"]["event_id"].as_str().map(String::from);
        self.sent.insert(
            id,
            SentEnvelope {
                at: Instant::now(),
                event_id,
            },
        );
        if envelope["type"] == "events_api" {
            self.unacked.push(envelope);
        }
    }

    /// A new connection becomes the live one: events not acked on earlier
    /// ones are redelivered, then what waited is sent (after `hello`, which
    /// the connection writes before it reads its channel).
    fn attach(&mut self, tx: UnboundedSender<Ctl>) -> u64 {
        self.next_conn += 1;
        let conn = self.next_conn;
        self.connections += 1;
        self.conns.insert(conn, tx.clone());
        self.live = Some(conn);
        let redeliver: Vec<Value> = std::mem::take(&mut self.unacked)
            .into_iter()
            .map(|mut e| {
                let attempt = e["retry_attempt"].as_u64().unwrap_or(0) + 1;
                e["envelope_id"] = json!(envelope_id());
                e["retry_attempt"] = json!(attempt);
                e["retry_reason"] = json!("timeout");
                e
            })
            .collect();
        let queued: Vec<Value> = self.queue.drain(..).collect();
        for e in redeliver.into_iter().chain(queued) {
            self.send_on(&tx, e);
        }
        conn
    }

    fn detach(&mut self, conn: u64) {
        self.conns.remove(&conn);
        self.greeted.remove(&conn);
        if self.live == Some(conn) {
            self.live = None;
        }
    }

    /// A text frame from the client: an ack, or ignored.
    fn on_client_text(&mut self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let Some(id) = v.get("envelope_id").and_then(Value::as_str) else {
            return;
        };
        let (after, event_id) = self.sent.get(id).map_or((Duration::ZERO, None), |e| {
            (e.at.elapsed(), e.event_id.clone())
        });
        self.unacked.retain(|e| {
            e["envelope_id"] != id
                && (event_id.is_none() || e["payload"]["event_id"].as_str() != event_id.as_deref())
        });
        self.acks.push(Ack {
            envelope_id: id.to_string(),
            payload: v.get("payload").cloned(),
            after,
        });
    }

    /// Wraps an event in an `events_api` envelope and delivers it; answers the event id.
    fn push_event(&mut self, event: Value) -> String {
        self.next_event += 1;
        let event_id = format!("Ev{:08}", self.next_event);
        self.deliver(json!({
            "envelope_id": envelope_id(),
            "type": "events_api",
            "accepts_response_payload": false,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "token": "fake", "team_id": TEAM, "api_app_id": APP_ID,
                "event": event, "type": "event_callback",
                "event_id": event_id, "event_time": unix_now(),
                "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": true}],
            },
        }));
        event_id
    }

    fn find(&mut self, body: &Value) -> Result<&mut Sent, &'static str> {
        let channel = field(body, "channel").ok_or("channel_not_found")?;
        let ts = field(body, "ts").ok_or("message_not_found")?;
        self.messages
            .iter_mut()
            .find(|m| m.channel == channel && m.ts == ts)
            .ok_or("message_not_found")
    }
}

/// A handle on the running fake; clones share it.
#[derive(Clone)]
pub struct FakeSlack {
    api: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeSlack {
    /// Starts the fake; Web API calls must use `bot_token`,
    /// `apps.connections.open` the `app_token`.
    pub fn start(bot_token: &str, app_token: &str) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(bot_token, app_token)),
        });
        let (s2, data) = (shared.clone(), web::Data::from(shared.clone()));
        let (api, socket) = super::serve_with_socket(
            "fake slack",
            move |l| accept(l, s2),
            move |app| {
                app.app_data(data.clone())
                    .app_data(web::PayloadConfig::default().limit(MAX_BODY))
                    .default_service(web::to(web_api));
            },
        );
        shared.lock().ws_addr = Some(socket);
        Self { api, shared }
    }

    /// The Web API base: a method's URL is `{api_url}/{method}`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.api)
    }

    // --- Web API behaviour and records ---

    /// Fails the next call of `method` this way, after earlier injections.
    pub fn inject(&self, method: &str, failure: Inject) {
        self.shared
            .lock()
            .inject
            .entry(method.to_string())
            .or_default()
            .push_back(failure);
    }

    /// Every later call of `method` answers `{"ok":false,"error":error}`.
    pub fn refuse(&self, method: &str, error: &str) {
        self.refuse_after(method, 0, error);
    }

    /// The next `n` calls of `method` (counted from now, past tokens and
    /// injections) succeed; every later one is refused with `error`.
    pub fn refuse_after(&self, method: &str, n: usize, error: &str) {
        self.shared
            .lock()
            .refuse
            .insert(method.to_string(), (n, error.to_string()));
    }

    /// Every Web API call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The calls of one method, in order.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// The bot's messages in `channel`, in creation order.
    pub fn messages(&self, channel: &str) -> Vec<Sent> {
        self.shared
            .lock()
            .messages
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// The `assistant.threads.setStatus` calls that succeeded.
    pub fn statuses(&self) -> Vec<Status> {
        self.shared.lock().statuses.clone()
    }

    /// Bodies POSTed to slash commands' `response_url`s.
    pub fn responses(&self) -> Vec<Value> {
        self.shared.lock().responses.clone()
    }

    // --- Socket Mode ---

    /// A user's `message` event; answers its event id.
    pub fn push_message(&self, m: UserMessage) -> String {
        let mut event = json!({
            "type": "message", "channel": m.channel, "channel_type": m.channel_type,
            "user": m.user, "text": m.text, "ts": m.ts, "event_ts": m.ts, "team": TEAM,
        });
        if let Some(t) = m.thread_ts {
            event["thread_ts"] = json!(t);
        }
        self.push_event(event)
    }

    /// An `app_mention` event of the same fields (no `channel_type`); answers its event id.
    pub fn push_mention(&self, m: UserMessage) -> String {
        let mut event = json!({
            "type": "app_mention", "channel": m.channel, "user": m.user,
            "text": m.text, "ts": m.ts, "event_ts": m.ts, "team": TEAM,
        });
        if let Some(t) = m.thread_ts {
            event["thread_ts"] = json!(t);
        }
        self.push_event(event)
    }

    /// Any event in an `events_api` envelope; answers its event id.
    pub fn push_event(&self, event: Value) -> String {
        self.shared.lock().push_event(event)
    }

    /// `/hermes text` from `user` in `channel`; answers the envelope id.
    pub fn push_slash_command(&self, channel: &str, user: &str, text: &str) -> String {
        let mut s = self.shared.lock();
        s.next_response += 1;
        let n = s.next_response;
        let id = envelope_id();
        s.deliver(json!({
            "envelope_id": id,
            "type": "slash_commands",
            "accepts_response_payload": true,
            "payload": {
                "token": "fake", "team_id": TEAM, "channel_id": channel, "channel_name": "x",
                "user_id": user, "user_name": "u", "command": COMMAND, "text": text,
                "api_app_id": APP_ID,
                "response_url": format!("http://{}/response/{n}", self.api),
                "trigger_id": format!("{n}.fake"),
            },
        }));
        id
    }

    /// Any envelope, as it is; it must have a string `envelope_id`.
    pub fn push_envelope(&self, envelope: Value) {
        if !envelope["envelope_id"].is_string() {
            panic!("fake slack: an envelope needs an envelope_id: {envelope}");
        }
        self.shared.lock().deliver(envelope);
    }

    /// Every ack the client sent, in order.
    pub fn acks(&self) -> Vec<Ack> {
        self.shared.lock().acks.clone()
    }

    /// Sends `disconnect` on the live socket, and closes it [`DISCONNECT_GRACE`] later.
    pub fn send_disconnect(&self, reason: &str) {
        let message =
            json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}});
        self.shared
            .lock()
            .to_live(Ctl::Disconnect(message.to_string()));
    }

    /// Drops the live socket's TCP stream without a close frame.
    pub fn drop_socket(&self) {
        self.shared.lock().to_live(Ctl::Drop);
    }

    /// Whether client pings get pongs (default yes).
    pub fn set_pongs(&self, answer: bool) {
        self.shared.lock().pongs = answer;
    }

    /// `apps.connections.open` calls that succeeded.
    pub fn opens(&self) -> usize {
        self.shared.lock().opens
    }

    /// Websocket connections accepted.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Whether a socket is connected and got `hello`.
    pub fn is_live(&self) -> bool {
        let s = self.shared.lock();
        s.live.is_some_and(|c| s.greeted.contains(&c))
    }

    /// Waits (bounded by `limit`) until `cond` holds on the fake.
    pub async fn wait(&self, limit: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}

// --- The Web API ---

fn slack_ok(mut answer: Value) -> HttpResponse {
    if let Some(o) = answer.as_object_mut() {
        o.insert("ok".to_string(), json!(true));
    }
    HttpResponse::Ok().json(answer)
}

fn slack_error(error: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"ok": false, "error": error}))
}

fn http_status(code: u16) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY))
        .content_type("text/html")
        .body(format!("<html><body><h1>{code}</h1></body></html>"))
}

/// `a=b&c=d` into an object of strings.
fn parse_form(body: &[u8]) -> Value {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'+', _) => out.push(b' '),
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 2;
                }
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let text = String::from_utf8_lossy(body);
    let map: Map<String, Value> = text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), Value::String(decode(v)))
        })
        .collect();
    Value::Object(map)
}

/// The body as JSON: `{}` when empty, an object from a form; `None` for
/// JSON that does not parse to an object.
fn parse_body(content_type: &str, body: &[u8]) -> Option<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(json!({}));
    }
    if content_type.contains("x-www-form-urlencoded") {
        return Some(parse_form(body));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Some(v),
        _ if content_type.contains("json") => None,
        _ => Some(parse_form(body)),
    }
}

async fn web_api(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let parsed = parse_body(&content_type, &body);
    if req.path().starts_with("/response/") {
        let recorded =
            parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned()));
        shared.lock().responses.push(recorded);
        return slack_ok(json!({}));
    }
    let Some(method) = req.path().strip_prefix("/api/") else {
        return HttpResponse::NotFound().finish();
    };
    let method = method.trim_end_matches('/').to_string();
    let now = Instant::now();
    let mut s = shared.lock();
    s.calls.push(Call {
        method: method.clone(),
        body: parsed
            .clone()
            .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned())),
        at: now,
    });
    if !METHODS.contains(&method.as_str()) {
        return slack_error("unknown_method");
    }
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let app = method == "apps.connections.open";
    let expected = if app { &s.app_token } else { &s.bot_token };
    if token.is_empty() || token != expected {
        return slack_error(if app && token == s.bot_token {
            "not_allowed_token_type"
        } else {
            "invalid_auth"
        });
    }
    let Some(body) = parsed else {
        return slack_error("invalid_json");
    };
    let mut lose = false;
    if let Some(failure) = s.inject.get_mut(&method).and_then(VecDeque::pop_front) {
        match failure {
            Inject::RateLimit { retry_after } => {
                return HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", retry_after.to_string()))
                    .json(json!({"ok": false, "error": "ratelimited"}));
            }
            Inject::Error(e) => return slack_error(&e),
            Inject::Http(code) => return http_status(code),
            Inject::LoseAnswer => lose = true,
        }
    }
    let refused = match s.refuse.get_mut(&method) {
        Some((0, error)) => Some(error.clone()),
        Some((allowed, _)) => {
            *allowed -= 1;
            None
        }
        None => None,
    };
    let answer = match refused {
        Some(e) => Err(e),
        None => handle(&mut s, &method, &body, now).map_err(String::from),
    };
    drop(s);
    match answer {
        _ if lose => http_status(502),
        Ok(v) => slack_ok(v),
        Err(e) => slack_error(&e),
    }
}

/// One Web API call's effect: the answer without `ok`, or Slack's error.
fn handle(s: &mut State, method: &str, b: &Value, now: Instant) -> Result<Value, &'static str> {
    match method {
        "auth.test" => Ok(json!({
            "url": "https://fake.slack.com/", "team": "Fake", "user": "hermes",
            "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID,
        })),
        "apps.connections.open" => {
            s.next_ticket += 1;
            let ticket = s.next_ticket;
            s.tickets.insert(ticket);
            s.opens += 1;
            let addr = s.ws_addr.map_or_else(String::new, |a| a.to_string());
            Ok(json!({"url": format!("ws://{addr}/link/?ticket={ticket}")}))
        }
        "chat.postMessage" => post_message(s, b, now),
        "chat.update" => {
            let text = b["text"].as_str().unwrap_or("");
            if text.chars().count() > MAX_TEXT {
                return Err("msg_too_long");
            }
            let m = s.find(b)?;
            m.text = text.to_string();
            m.writes.push(now);
            Ok(json!({"channel": m.channel, "ts": m.ts, "text": m.text}))
        }
        "chat.startStream" => {
            let channel = field(b, "channel").ok_or("channel_not_found")?.to_string();
            let thread_ts = field(b, "thread_ts")
                .ok_or("invalid_arguments")?
                .to_string();
            let text = b["markdown_text"].as_str().unwrap_or("");
            if text.chars().count() > MAX_STREAM_CHUNK {
                return Err("msg_too_long");
            }
            let ts = s.new_ts();
            s.messages.push(Sent {
                ts: ts.clone(),
                channel: channel.clone(),
                thread_ts: Some(thread_ts),
                text: text.to_string(),
                streamed: true,
                stopped: false,
                writes: vec![now],
            });
            Ok(json!({"channel": channel, "ts": ts}))
        }
        "chat.appendStream" | "chat.stopStream" => {
            let stop = method == "chat.stopStream";
            let chunk = b["markdown_text"].as_str().unwrap_or("");
            if chunk.chars().count() > MAX_STREAM_CHUNK {
                return Err("msg_too_long");
            }
            if chunk.is_empty() && !stop {
                return Err("invalid_arguments");
            }
            let m = s.find(b)?;
            if !m.streamed || m.stopped {
                return Err("message_not_in_streaming_state");
            }
            m.text.push_str(chunk);
            m.stopped = stop;
            m.writes.push(now);
            Ok(json!({"channel": m.channel, "ts": m.ts}))
        }
        "assistant.threads.setStatus" => {
            let channel = field(b, "channel_id").ok_or("channel_not_found")?;
            let thread_ts = field(b, "thread_ts").ok_or("invalid_arguments")?;
            s.statuses.push(Status {
                channel: channel.to_string(),
                thread_ts: thread_ts.to_string(),
                status: b["status"].as_str().unwrap_or("").to_string(),
                at: now,
            });
            Ok(json!({}))
        }
        _ => Err("unknown_method"),
    }
}

fn post_message(s: &mut State, b: &Value, now: Instant) -> Result<Value, &'static str> {
    let channel = field(b, "channel").ok_or("channel_not_found")?.to_string();
    let text = field(b, "text")
        .or_else(|| field(b, "markdown_text"))
        .unwrap_or("")
        .to_string();
    if text.is_empty() && b.get("blocks").is_none() && b.get("attachments").is_none() {
        return Err("no_text");
    }
    if text.chars().count() > MAX_TEXT {
        return Err("msg_too_long");
    }
    let thread_ts = field(b, "thread_ts").map(String::from);
    let ts = s.new_ts();
    s.messages.push(Sent {
        ts: ts.clone(),
        channel: channel.clone(),
        thread_ts: thread_ts.clone(),
        text: text.clone(),
        streamed: false,
        stopped: false,
        writes: vec![now],
    });
    // The bot's own message comes back through Socket Mode, as on Slack.
    let channel_type = if channel.starts_with('D') {
        "im"
    } else {
        "channel"
    };
    let mut event = json!({
        "type": "message", "channel": channel, "channel_type": channel_type,
        "user": BOT_USER, "bot_id": BOT_ID, "text": text, "ts": ts, "event_ts": ts,
        "team": TEAM,
    });
    let mut message = json!({"text": text, "ts": ts, "bot_id": BOT_ID, "user": BOT_USER});
    if let Some(t) = &thread_ts {
        event["thread_ts"] = json!(t);
        message["thread_ts"] = json!(t);
    }
    s.push_event(event);
    Ok(json!({"channel": channel, "ts": ts, "message": message}))
}

// --- Socket Mode ---

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        actix_web::rt::spawn(serve(stream, shared.clone()));
    }
}

/// Reads the upgrade request; a valid, unused ticket is answered 101,
/// anything else 401 (or 400 without a websocket key).
async fn handshake(stream: &mut TcpStream, shared: &Shared) -> Option<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > MAX_HANDSHAKE {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let target = head.lines().next()?.split_whitespace().nth(1)?.to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let ticket = query
        .split('&')
        .find_map(|p| p.strip_prefix("ticket="))
        .and_then(|t| t.parse::<u64>().ok());
    let valid = path.trim_end_matches('/') == "/link"
        && ticket.is_some_and(|t| shared.lock().tickets.remove(&t));
    let key = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_string())
    });
    let answer = match (valid, key) {
        (false, _) => "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_string(),
        (true, None) => {
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        }
        (true, Some(key)) => {
            let accept = ws::hash_key(key.as_bytes());
            let accept = String::from_utf8_lossy(&accept);
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
        }
    };
    stream.write_all(answer.as_bytes()).await.ok()?;
    answer.starts_with("HTTP/1.1 101").then_some(())
}

type Socket = Framed<TcpStream, Codec>;

/// One Socket Mode connection.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    if handshake(&mut stream, &shared).await.is_none() {
        return;
    }
    let (tx, mut rx) = unbounded_channel();
    let conn = shared.lock().attach(tx);
    let mut ws = Framed::new(stream, Codec::new().max_size(MAX_CLIENT_FRAME));
    let hello = json!({
        "type": "hello", "num_connections": 1,
        "debug_info": {"host": "fake", "approximate_connection_time": HELLO_CONNECTION_TIME},
        "connection_info": {"app_id": APP_ID},
    });
    if ws
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_ok()
    {
        shared.lock().greeted.insert(conn);
        run(&mut ws, &mut rx, &shared).await;
    }
    shared.lock().detach(conn);
}

/// Writes what the fake is told to, reads acks and pings, until the socket ends.
async fn run(ws: &mut Socket, rx: &mut UnboundedReceiver<Ctl>, shared: &Shared) {
    let mut close_at: Option<tokio::time::Instant> = None;
    loop {
        let closing = async move {
            match close_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ctl = rx.recv() => match ctl {
                Some(Ctl::Frame(text)) => {
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Some(Ctl::Disconnect(text)) => {
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                    close_at = Some(tokio::time::Instant::now() + DISCONNECT_GRACE);
                }
                Some(Ctl::Drop) | None => return,
            },
            () = closing => {
                let reason = CloseReason { code: CloseCode::Normal, description: None };
                let _ = ws.send(Message::Close(Some(reason))).await;
                let _ = ws.flush().await;
                return;
            }
            frame = ws.next() => match frame {
                Some(Ok(ws::Frame::Text(b))) => {
                    shared.lock().on_client_text(&String::from_utf8_lossy(&b));
                }
                Some(Ok(ws::Frame::Ping(p))) => {
                    let pong = shared.lock().pongs;
                    if pong && ws.send(Message::Pong(p)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(ws::Frame::Close(reason))) => {
                    let _ = ws.send(Message::Close(reason)).await;
                    let _ = ws.flush().await;
                    return;
                }
                Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a test waits for one frame or condition.
    const LIMIT: Duration = Duration::from_secs(5);
    const BOT: &str = "xoxb-test";
    const APP: &str = "xapp-test";

    type Client = Framed<awc::BoxedSocket, Codec>;

    fn ok<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e:?}"))
    }

    async fn call(fake: &FakeSlack, token: &str, method: &str, body: Value) -> (u16, Value) {
        let mut resp = ok(awc::Client::default()
            .post(format!("{}/{method}", fake.api_url()))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send_json(&body)
            .await);
        let status = resp.status().as_u16();
        let body = ok(resp.body().await);
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn connect(fake: &FakeSlack) -> Client {
        let (_, open) = call(fake, APP, "apps.connections.open", json!({})).await;
        let url = open["url"].as_str().unwrap_or_default().to_string();
        let (_, socket) = ok(awc::Client::default().ws(url).connect().await);
        socket
    }

    /// The next text frame, as JSON.
    async fn next_json(socket: &mut Client) -> Value {
        for _ in 0..10 {
            let frame = ok(tokio::time::timeout(LIMIT, socket.next()).await);
            match frame {
                Some(Ok(ws::Frame::Text(b))) => return ok(serde_json::from_slice(&b)),
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
        panic!("no text frame");
    }

    fn user_message(text: &str) -> UserMessage {
        UserMessage {
            channel: "D0001".into(),
            channel_type: "im".into(),
            user: "U0001".into(),
            text: text.into(),
            ts: "1700000001.000001".into(),
            thread_ts: None,
        }
    }

    #[actix_web::test]
    async fn tokens_and_messages() {
        let fake = FakeSlack::start(BOT, APP);
        let (_, auth) = call(&fake, BOT, "auth.test", json!({})).await;
        assert_eq!(auth["ok"], true);
        assert_eq!(auth["user_id"], BOT_USER);
        assert_eq!(auth["bot_id"], BOT_ID);
        let (_, bad) = call(&fake, "xoxb-wrong", "auth.test", json!({})).await;
        assert_eq!(bad["error"], "invalid_auth");
        let (_, wrong) = call(&fake, BOT, "apps.connections.open", json!({})).await;
        assert_eq!(wrong["error"], "not_allowed_token_type");
        let (_, unknown) = call(&fake, BOT, "chat.nothing", json!({})).await;
        assert_eq!(unknown["error"], "unknown_method");

        let post = json!({"channel": "C1", "text": "hi", "thread_ts": "1.000001"});
        let (_, posted) = call(&fake, BOT, "chat.postMessage", post).await;
        assert_eq!(posted["ok"], true);
        let ts = posted["ts"].as_str().unwrap_or_default().to_string();
        assert_eq!(ts, "1700000000.000101");
        assert_eq!(posted["message"]["bot_id"], BOT_ID);
        let update = json!({"channel": "C1", "ts": ts, "text": "hello"});
        let (_, updated) = call(&fake, BOT, "chat.update", update).await;
        assert_eq!(updated["text"], "hello");
        let missing = json!({"channel": "C1", "ts": "1.1", "text": "x"});
        let (_, missing) = call(&fake, BOT, "chat.update", missing).await;
        assert_eq!(missing["error"], "message_not_found");
        let long = json!({"channel": "C1", "text": "x".repeat(MAX_TEXT + 1)});
        let (_, long) = call(&fake, BOT, "chat.postMessage", long).await;
        assert_eq!(long["error"], "msg_too_long");

        let sent = fake.messages("C1");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].text, "hello");
        assert_eq!(sent[0].thread_ts.as_deref(), Some("1.000001"));
        assert_eq!(sent[0].writes.len(), 2);
        assert_eq!(fake.calls().len(), 8);
        assert_eq!(fake.calls_of("chat.update").len(), 2);
    }

    #[actix_web::test]
    async fn streams_and_statuses() {
        let fake = FakeSlack::start(BOT, APP);
        let start = json!({"channel": "D1", "recipient_user_id": "U1", "recipient_team_id": TEAM});
        let (_, refused) = call(&fake, BOT, "chat.startStream", start.clone()).await;
        assert_eq!(refused["error"], "invalid_arguments");
        let mut start = start;
        start["thread_ts"] = json!("5.000001");
        start["markdown_text"] = json!("a");
        let (_, started) = call(&fake, BOT, "chat.startStream", start).await;
        let ts = started["ts"].as_str().unwrap_or_default().to_string();
        let append = json!({"channel": "D1", "ts": ts, "markdown_text": "b"});
        let (_, appended) = call(&fake, BOT, "chat.appendStream", append.clone()).await;
        assert_eq!(appended["ok"], true);
        let (_, empty) = call(
            &fake,
            BOT,
            "chat.appendStream",
            json!({"channel": "D1", "ts": ts}),
        )
        .await;
        assert_eq!(empty["error"], "invalid_arguments");
        let stop = json!({"channel": "D1", "ts": ts, "markdown_text": "c"});
        let (_, stopped) = call(&fake, BOT, "chat.stopStream", stop).await;
        assert_eq!(stopped["ok"], true);
        let (_, late) = call(&fake, BOT, "chat.appendStream", append).await;
        assert_eq!(late["error"], "message_not_in_streaming_state");
        let sent = fake.messages("D1");
        assert_eq!(sent.len(), 1);
        assert!(sent[0].streamed && sent[0].stopped);
        assert_eq!(sent[0].text, "abc");

        let status = json!({"channel_id": "D1", "thread_ts": "5.000001", "status": "is thinking…"});
        let (_, set) = call(&fake, BOT, "assistant.threads.setStatus", status).await;
        assert_eq!(set["ok"], true);
        assert_eq!(fake.statuses()[0].status, "is thinking…");
    }

    #[actix_web::test]
    async fn injected_failures_and_refusals() {
        let fake = FakeSlack::start(BOT, APP);
        fake.inject("auth.test", Inject::RateLimit { retry_after: 3 });
        fake.inject("auth.test", Inject::Http(503));
        fake.inject("chat.postMessage", Inject::LoseAnswer);
        let resp = ok(awc::Client::default()
            .post(format!("{}/auth.test", fake.api_url()))
            .insert_header(("Authorization", format!("Bearer {BOT}")))
            .send()
            .await);
        assert_eq!(resp.status().as_u16(), 429);
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok());
        assert_eq!(retry_after, Some("3"));
        assert_eq!(call(&fake, BOT, "auth.test", json!({})).await.0, 503);
        assert_eq!(call(&fake, BOT, "auth.test", json!({})).await.1["ok"], true);
        let post = json!({"channel": "C1", "text": "hi"});
        assert_eq!(
            call(&fake, BOT, "chat.postMessage", post.clone()).await.0,
            502
        );
        assert_eq!(fake.messages("C1").len(), 1);

        fake.refuse_after("chat.postMessage", 1, "channel_not_found");
        assert_eq!(
            call(&fake, BOT, "chat.postMessage", post.clone()).await.1["ok"],
            true
        );
        let (_, refused) = call(&fake, BOT, "chat.postMessage", post).await;
        assert_eq!(refused["error"], "channel_not_found");
        fake.refuse("auth.test", "account_inactive");
        let (_, refused) = call(&fake, BOT, "auth.test", json!({})).await;
        assert_eq!(refused["error"], "account_inactive");
    }

    #[actix_web::test]
    async fn socket_mode_delivers_acks_and_redelivers() {
        let fake = FakeSlack::start(BOT, APP);
        // Pushed before any connection: queued until after hello.
        let event_id = fake.push_message(user_message("first"));
        let mut socket = connect(&fake).await;
        assert_eq!(next_json(&mut socket).await["type"], "hello");
        assert!(fake.wait(LIMIT, FakeSlack::is_live).await);
        let envelope = next_json(&mut socket).await;
        assert_eq!(envelope["type"], "events_api");
        assert_eq!(envelope["payload"]["event_id"], event_id.as_str());
        assert_eq!(envelope["payload"]["event"]["text"], "first");
        let id = envelope["envelope_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ack = json!({"envelope_id": id}).to_string();
        ok(socket.send(awc::ws::Message::Text(ack.into())).await);
        ok(socket.send(awc::ws::Message::Text("not json".into())).await);
        assert!(fake.wait(LIMIT, |f| f.acks().len() == 1).await);
        assert_eq!(fake.acks()[0].envelope_id, id);

        // A slash command, acked with a payload.
        let command = fake.push_slash_command("C1", "U1", "status");
        let envelope = next_json(&mut socket).await;
        assert_eq!(envelope["envelope_id"], command.as_str());
        assert_eq!(envelope["payload"]["command"], COMMAND);
        let ack = json!({"envelope_id": command, "payload": {"text": "ok"}}).to_string();
        ok(socket.send(awc::ws::Message::Text(ack.into())).await);
        assert!(fake.wait(LIMIT, |f| f.acks().len() == 2).await);
        assert_eq!(fake.acks()[1].payload, Some(json!({"text": "ok"})));

        // Not acked, the socket dropped: redelivered on the next connection.
        let mention = fake.push_mention(user_message("second"));
        assert_ne!(mention, event_id);
        assert_eq!(
            next_json(&mut socket).await["payload"]["event_id"],
            mention.as_str()
        );
        fake.drop_socket();
        assert!(fake.wait(LIMIT, |f| !f.is_live()).await);
        let mut socket = connect(&fake).await;
        assert_eq!(next_json(&mut socket).await["type"], "hello");
        let again = next_json(&mut socket).await;
        assert_eq!(again["payload"]["event_id"], mention.as_str());
        assert_eq!(again["retry_attempt"], 1);
        assert_eq!(again["retry_reason"], "timeout");
        assert_eq!((fake.opens(), fake.connections()), (2, 2));

        // The bot's own message comes back as an event from the bot.
        let post = json!({"channel": "C1", "text": "mine"});
        call(&fake, BOT, "chat.postMessage", post).await;
        let own = next_json(&mut socket).await;
        assert_eq!(own["payload"]["event"]["bot_id"], BOT_ID);

        fake.send_disconnect("refresh_requested");
        let disconnect = next_json(&mut socket).await;
        assert_eq!(disconnect["type"], "disconnect");
        let closed = ok(tokio::time::timeout(LIMIT, socket.next()).await);
        assert!(matches!(closed, Some(Ok(ws::Frame::Close(_)))));
    }

    #[actix_web::test]
    async fn tickets_are_single_use() {
        let fake = FakeSlack::start(BOT, APP);
        let (_, open) = call(&fake, APP, "apps.connections.open", json!({})).await;
        let url = open["url"].as_str().unwrap_or_default().to_string();
        let (_, mut socket) = ok(awc::Client::default().ws(url.clone()).connect().await);
        let reused = awc::Client::default().ws(url).connect().await;
        assert!(matches!(
            reused,
            Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s.as_u16() == 401
        ));
        assert_eq!(fake.connections(), 1);

        assert_eq!(next_json(&mut socket).await["type"], "hello");
        ok(socket.send(awc::ws::Message::Ping("p".into())).await);
        let pong = ok(tokio::time::timeout(LIMIT, socket.next()).await);
        assert!(matches!(pong, Some(Ok(ws::Frame::Pong(_)))));
        fake.set_pongs(false);
        ok(socket.send(awc::ws::Message::Ping("q".into())).await);
        let quiet = Duration::from_millis(300);
        assert!(tokio::time::timeout(quiet, socket.next()).await.is_err());
    }
}
