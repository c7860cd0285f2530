//! A fake Discord for tests: the REST API (v10) on actix-web and the Gateway
//! websocket on a raw tokio listener, both on 127.0.0.1.
//!
//! REST: `GET /gateway/bot`, `POST /channels/{id}/messages` (2000-character
//! limit, `nonce` + `enforce_nonce` answered with the message already
//! created, so a retried send never posts twice), `PATCH` of a message,
//! `POST /channels/{id}/typing`, `GET`/`PUT /applications/{app}/commands`,
//! the interaction callback (refused after Discord's 3 s) and follow-ups.
//! Every answer carries `X-RateLimit-*` headers of a per-route bucket
//! (`limit` requests a `window`, per channel); a request into an exhausted
//! bucket is answered 429 and counted as a violation. Failures can be
//! injected per route (a 429, local or global; any error; a message created
//! but its answer lost).
//!
//! Gateway: `HELLO`, `IDENTIFY` → `READY` (token and privileged intents
//! checked: close 4004 / 4014), `RESUME` replaying what the session missed
//! → `RESUMED` (or `op 9` for an unknown session), heartbeats ACKed (or
//! not, on request). Dispatches are numbered per session and logged, so
//! events pushed while the client is away are replayed on resume. Tests can
//! drop the socket, close it with a code, send `op 7` or `op 9`, split
//! frames into fragments and pad `READY` past 64 KiB. Every message the bot
//! posts comes back as a `MESSAGE_CREATE` from a bot, as on Discord.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_codec::Framed;
use actix_http::ws::{self, CloseCode, CloseReason, Codec, Item, Message};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// The bot's user id and its application id.
pub const BOT_ID: &str = "900000000000000001";
pub const APP_ID: &str = "900000000000000002";
/// Discord's message limit, in characters.
const MAX_CHARS: usize = 2000;
/// An interaction must be answered within this.
const INTERACTION_DEADLINE: Duration = Duration::from_secs(3);
/// The largest handshake read.
const MAX_HANDSHAKE: usize = 16 * 1024;
/// The largest message the fake Gateway reads from the client.
const MAX_CLIENT_FRAME: usize = 1024 * 1024;
/// The Message Content intent, privileged.
const MESSAGE_CONTENT: u64 = 1 << 15;

/// One REST call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub at: Instant,
}

/// A message the bot posted, with its history.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub channel_id: String,
    /// What the user sees now.
    pub content: String,
    /// `message_reference.message_id`.
    pub reply_to: Option<String>,
    pub allowed_mentions: Value,
    pub nonce: Option<String>,
    /// When the message was created and each time it changed.
    pub writes: Vec<Instant>,
}

/// A failure to return for the next call of a route.
#[derive(Debug, Clone)]
pub enum Inject {
    /// 429 with `retry_after` seconds, global or for the route's bucket.
    RateLimit { retry_after: f64, global: bool },
    /// Any status and message.
    Error(u16, String),
    /// The call does its work, but its answer is a 502 (a lost answer).
    LoseAnswer,
}

/// An interaction callback or follow-up the bot sent.
#[derive(Debug, Clone)]
pub struct Reply {
    pub interaction: String,
    pub body: Value,
    /// How long after the interaction was created.
    pub after: Duration,
    /// A follow-up (webhook) rather than the callback.
    pub followup: bool,
}

/// What happened on the Gateway.
#[derive(Debug, Clone, Default)]
pub struct GatewayLog {
    /// Each connection's request path (with its query).
    pub connects: Vec<String>,
    /// IDENTIFY payloads (`d`).
    pub identifies: Vec<Value>,
    /// RESUME payloads (`d`).
    pub resumes: Vec<Value>,
    pub heartbeats: usize,
}

/// What the Gateway tells a connection to do.
enum Ctl {
    Frame(String),
    Close(u16),
    Drop,
}

struct Session {
    /// Every dispatch, numbered from 1.
    log: Vec<String>,
}

/// A route's bucket, per channel.
#[derive(Default, Clone, Copy)]
struct Window {
    start: Option<Instant>,
    used: u32,
}

struct State {
    token: String,
    gateway_addr: Option<SocketAddr>,
    log: GatewayLog,
    sessions: HashMap<String, Session>,
    /// The session dispatches go to, and the connection attached to it.
    session: Option<String>,
    attached: Option<u64>,
    /// Dispatches pushed before any session existed.
    pending: Vec<(String, Value)>,
    conns: HashMap<u64, UnboundedSender<Ctl>>,
    current: Option<u64>,
    next_conn: u64,
    next_id: u64,
    heartbeat_ms: u64,
    ack: bool,
    deny_privileged: bool,
    fragment: Option<usize>,
    ready_padding: usize,
    replay_extra: usize,
    calls: Vec<Call>,
    messages: BTreeMap<u64, Sent>,
    nonces: HashMap<(String, String), u64>,
    /// Whether nonces are remembered (Discord forgets them after minutes).
    honour_nonces: bool,
    /// Whether the bot's own messages come back as `MESSAGE_CREATE`.
    echo: bool,
    inject: HashMap<String, VecDeque<Inject>>,
    limit: (u32, Duration),
    windows: HashMap<String, Window>,
    violations: Vec<String>,
    commands: Value,
    command_puts: usize,
    interactions: HashMap<String, Instant>,
    replies: Vec<Reply>,
    typing: Vec<(String, Instant)>,
    /// Thread → its parent channel.
    threads: HashMap<String, String>,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn id(&mut self) -> String {
        self.next_id += 1;
        (1_000_000_000_000_000_000 + self.next_id).to_string()
    }

    /// Numbers and logs a dispatch in the current session and sends it if
    /// a connection is attached (else it waits for a resume).
    fn dispatch(&mut self, t: &str, d: Value) {
        let Some(sid) = self.session.clone() else {
            self.pending.push((t.to_string(), d));
            return;
        };
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let frame = json!({"op": 0, "t": t, "s": session.log.len() + 1, "d": d}).to_string();
        session.log.push(frame.clone());
        if let Some(tx) = self.attached.and_then(|c| self.conns.get(&c)) {
            let _ = tx.send(Ctl::Frame(frame));
        }
    }

    fn to_current(&self, ctl: Ctl) {
        if let Some(tx) = self.current.and_then(|c| self.conns.get(&c)) {
            let _ = tx.send(ctl);
        }
    }
}

/// The running fake.
pub struct FakeDiscord {
    rest: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeDiscord {
    /// Starts the fake; calls and IDENTIFY must use `token`.
    pub fn start(token: &str) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                token: token.to_string(),
                gateway_addr: None,
                log: GatewayLog::default(),
                sessions: HashMap::new(),
                session: None,
                attached: None,
                pending: Vec::new(),
                conns: HashMap::new(),
                current: None,
                next_conn: 0,
                next_id: 0,
                heartbeat_ms: 45_000,
                ack: true,
                deny_privileged: false,
                fragment: None,
                ready_padding: 0,
                replay_extra: 0,
                calls: Vec::new(),
                messages: BTreeMap::new(),
                nonces: HashMap::new(),
                honour_nonces: true,
                echo: true,
                inject: HashMap::new(),
                limit: (50, Duration::from_secs(1)),
                windows: HashMap::new(),
                violations: Vec::new(),
                commands: json!([]),
                command_puts: 0,
                interactions: HashMap::new(),
                replies: Vec::new(),
                typing: Vec::new(),
                threads: HashMap::new(),
            }),
        });
        let (s2, data) = (shared.clone(), web::Data::from(shared.clone()));
        let (rest, gateway) = super::serve_with_socket(
            "fake discord",
            move |l| accept(l, s2),
            move |app| {
                app.app_data(data.clone())
                    .app_data(web::PayloadConfig::default().limit(8 * 1024 * 1024))
                    .default_service(web::to(rest_api));
            },
        );
        shared.lock().gateway_addr = Some(gateway);
        Self { rest, shared }
    }

    /// The REST base URL (`DISCORD_API_BASE_URL`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v10", self.rest)
    }

    /// Whether the bot's own messages come back on the Gateway (default yes;
    /// off, only the nonce keeps a retried send from posting twice).
    pub fn set_echo(&self, echo: bool) {
        self.shared.lock().echo = echo;
    }

    /// Forgets nonces at once, as Discord does after a few minutes: a send
    /// retried later would post again.
    pub fn forget_nonces(&self) {
        let mut s = self.shared.lock();
        s.honour_nonces = false;
        s.nonces.clear();
    }

    /// The Gateway URL (`DISCORD_GATEWAY_URL`; also what `GET /gateway/bot` answers).
    pub fn gateway_url(&self) -> String {
        gateway_url(&self.shared.lock())
    }

    // --- Gateway behaviour ---

    /// The heartbeat interval HELLO announces (default 45 s).
    pub fn set_heartbeat_interval(&self, ms: u64) {
        self.shared.lock().heartbeat_ms = ms;
    }

    /// Whether heartbeats are ACKed (default yes).
    pub fn set_ack(&self, ack: bool) {
        self.shared.lock().ack = ack;
    }

    /// IDENTIFY asking for the Message Content intent is closed with 4014.
    pub fn deny_privileged_intents(&self) {
        self.shared.lock().deny_privileged = true;
    }

    /// Sends every Gateway message in fragments of this many bytes.
    pub fn fragment_frames(&self, bytes: usize) {
        self.shared.lock().fragment = Some(bytes.max(1));
    }

    /// Pads `READY` with this many bytes.
    pub fn pad_ready(&self, bytes: usize) {
        self.shared.lock().ready_padding = bytes;
    }

    /// A resume replays this many events the client had already seen too
    /// (a redelivery).
    pub fn replay_extra_on_resume(&self, n: usize) {
        self.shared.lock().replay_extra = n;
    }

    /// Drops the current connection without a close frame.
    pub fn drop_socket(&self) {
        self.shared.lock().to_current(Ctl::Drop);
    }

    /// Closes the current connection with `code`.
    pub fn close(&self, code: u16) {
        self.shared.lock().to_current(Ctl::Close(code));
    }

    /// Sends `op 7 RECONNECT`.
    pub fn ask_reconnect(&self) {
        self.shared
            .lock()
            .to_current(Ctl::Frame(json!({"op": 7, "d": null}).to_string()));
    }

    /// Sends `op 9 INVALID_SESSION`; a session that cannot be resumed is forgotten.
    pub fn invalidate_session(&self, resumable: bool) {
        let mut s = self.shared.lock();
        if !resumable && let Some(id) = s.session.take() {
            s.sessions.remove(&id);
            s.attached = None;
        }
        s.to_current(Ctl::Frame(json!({"op": 9, "d": resumable}).to_string()));
    }

    /// What happened on the Gateway so far.
    pub fn gateway_log(&self) -> GatewayLog {
        self.shared.lock().log.clone()
    }

    /// Whether a connection is attached to a session (after READY or RESUMED).
    pub fn is_live(&self) -> bool {
        self.shared.lock().attached.is_some()
    }

    // --- Events ---

    /// Dispatches any event.
    pub fn dispatch(&self, t: &str, d: Value) {
        self.shared.lock().dispatch(t, d);
    }

    /// A user's message; `guild` `None` for a DM. Returns its id.
    pub fn push_message(
        &self,
        channel: &str,
        guild: Option<&str>,
        author: &str,
        content: &str,
    ) -> String {
        self.push_message_with(channel, guild, author, content, json!({}))
    }

    /// A user's message with more fields (`referenced_message`, an author
    /// that is a bot…). Returns its id.
    pub fn push_message_with(
        &self,
        channel: &str,
        guild: Option<&str>,
        author: &str,
        content: &str,
        extra: Value,
    ) -> String {
        let mut s = self.shared.lock();
        let id = s.id();
        let mut d = json!({
            "id": id, "channel_id": channel, "content": content, "type": 0,
            "author": {"id": author, "username": format!("user{author}"), "bot": false},
            "timestamp": "2026-12-01T00:00:00+00:00",
        });
        if let Some(g) = guild {
            d["guild_id"] = json!(g);
        }
        if let (Some(o), Some(e)) = (d.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        s.dispatch("MESSAGE_CREATE", d);
        id
    }

    /// A thread `thread` under `parent` in `guild`, announced with
    /// `THREAD_CREATE` or (`announce` false) only known to `GET /channels/{id}`.
    pub fn create_thread(&self, guild: &str, parent: &str, thread: &str, announce: bool) {
        let mut s = self.shared.lock();
        s.threads.insert(thread.to_string(), parent.to_string());
        if !announce {
            return;
        }
        s.dispatch(
            "THREAD_CREATE",
            json!({"id": thread, "parent_id": parent, "guild_id": guild, "type": 11, "name": "t"}),
        );
    }

    /// A slash command `name` (with an optional string option) from `user`.
    /// Returns the interaction id.
    pub fn push_command(
        &self,
        channel: &str,
        guild: Option<&str>,
        user: &str,
        name: &str,
        option: Option<&str>,
    ) -> String {
        let mut s = self.shared.lock();
        let id = s.id();
        let options: Vec<Value> = option
            .map(|v| json!({"name": "text", "type": 3, "value": v}))
            .into_iter()
            .collect();
        let mut d = json!({
            "id": id, "application_id": APP_ID, "type": 2, "token": format!("itoken-{id}"),
            "channel_id": channel, "version": 1,
            "data": {"id": "cmd", "name": name, "type": 1, "options": options},
        });
        let who = json!({"id": user, "username": format!("user{user}")});
        match guild {
            Some(g) => {
                d["guild_id"] = json!(g);
                d["member"] = json!({"user": who});
            }
            None => d["user"] = who,
        }
        s.interactions.insert(id.clone(), Instant::now());
        s.dispatch("INTERACTION_CREATE", d);
        id
    }

    // --- REST behaviour and records ---

    /// Fails the next call of `route` (e.g. `POST /channels/{id}/messages`,
    /// as [`route_of`] names it) this way, after earlier injections.
    pub fn inject(&self, route: &str, failure: Inject) {
        self.shared
            .lock()
            .inject
            .entry(route.to_string())
            .or_default()
            .push_back(failure);
    }

    /// Each route's bucket allows `limit` requests a `window`, per channel.
    pub fn set_bucket(&self, limit: u32, window: Duration) {
        self.shared.lock().limit = (limit.max(1), window);
    }

    /// Requests sent into an exhausted bucket.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// The slash commands registered, and how many times they were replaced.
    pub fn commands(&self) -> (Value, usize) {
        let s = self.shared.lock();
        (s.commands.clone(), s.command_puts)
    }

    /// Every REST call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// REST calls of one route (as [`route_of`] names it).
    pub fn calls_of(&self, route: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| route_of(&c.method, &c.path) == route)
            .collect()
    }

    /// Typing indicators: channel and time.
    pub fn typing(&self) -> Vec<(String, Instant)> {
        self.shared.lock().typing.clone()
    }

    /// Interaction callbacks and follow-ups.
    pub fn replies(&self) -> Vec<Reply> {
        self.shared.lock().replies.clone()
    }

    /// The bot's messages in `channel`, oldest first.
    pub fn messages(&self, channel: &str) -> Vec<Sent> {
        self.shared
            .lock()
            .messages
            .values()
            .filter(|m| m.channel_id == channel)
            .cloned()
            .collect()
    }

    /// Waits (bounded) until `cond` holds on the fake.
    pub async fn wait(&self, limit: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn gateway_url(s: &State) -> String {
    s.gateway_addr
        .map_or_else(String::new, |a| format!("ws://{a}"))
}

/// A route's name, with ids other than the channel's replaced:
/// `POST /channels/{id}/messages`, `PATCH /channels/{id}/messages/{mid}`,
/// `POST /channels/{id}/typing`, `PUT /applications/{app}/commands`…
pub fn route_of(method: &str, path: &str) -> String {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let named: Vec<&str> = match parts.as_slice() {
        ["channels", _, "messages", _] => vec!["channels", "{id}", "messages", "{mid}"],
        ["channels", _, rest @ ..] => [&["channels", "{id}"][..], rest].concat(),
        ["applications", _, rest @ ..] => [&["applications", "{app}"][..], rest].concat(),
        ["interactions", _, _, rest @ ..] => {
            [&["interactions", "{id}", "{token}"][..], rest].concat()
        }
        ["webhooks", _, _] => vec!["webhooks", "{app}", "{token}"],
        other => other.to_vec(),
    };
    format!("{method} /{}", named.join("/"))
}

fn error(status: u16, code: u64, message: &str) -> HttpResponse {
    let s = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(s).json(json!({"code": code, "message": message}))
}

/// The REST API.
async fn rest_api(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let method = req.method().as_str().to_string();
    let Some(path) = req.path().strip_prefix("/api/v10") else {
        return error(404, 0, "404: Not Found");
    };
    let path = path.to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let route = route_of(&method, &path);
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(String::from)
        .collect();
    let now = Instant::now();
    let mut s = shared.lock();
    s.calls.push(Call {
        method: method.clone(),
        path: path.clone(),
        body: body.clone(),
        at: now,
    });
    // Interaction callbacks and follow-ups carry the interaction's token, not the bot's.
    let by_token = parts[0] == "interactions" || parts[0] == "webhooks";
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !by_token && auth != format!("Bot {}", s.token) {
        return error(401, 0, "401: Unauthorized");
    }
    // As Discord's edge: a write needs its length.
    if method != "GET" && method != "DELETE" && !req.headers().contains_key("content-length") {
        return HttpResponse::LengthRequired().body("411 Length Required");
    }
    // The bucket: per route, per channel (the major parameter).
    let major = if parts[0] == "channels" {
        parts.get(1).cloned().unwrap_or_default()
    } else {
        String::new()
    };
    let (limit, window) = s.limit;
    let key = format!("{route} {major}");
    let w = s.windows.entry(key.clone()).or_default();
    if w.start.is_none_or(|t| now >= t + window) {
        *w = Window {
            start: Some(now),
            used: 0,
        };
    }
    let start = w.start.unwrap_or(now);
    let reset_after = (start + window)
        .saturating_duration_since(now)
        .as_secs_f64();
    if w.used >= limit {
        s.violations.push(key);
        let retry_after = (reset_after * 1000.0).ceil() / 1000.0;
        return HttpResponse::TooManyRequests()
            .insert_header(("x-ratelimit-bucket", bucket_hash(&route)))
            .insert_header(("x-ratelimit-remaining", "0"))
            .insert_header(("x-ratelimit-reset-after", format!("{retry_after:.3}")))
            .insert_header(("retry-after", format!("{}", retry_after.ceil())))
            .json(json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false}));
    }
    w.used += 1;
    let remaining = limit - w.used;
    let hash = bucket_hash(&route);
    let limit_headers = move |mut b: actix_web::HttpResponseBuilder| {
        b.insert_header(("x-ratelimit-limit", limit.to_string()))
            .insert_header(("x-ratelimit-remaining", remaining.to_string()))
            .insert_header(("x-ratelimit-reset-after", format!("{reset_after:.3}")))
            .insert_header(("x-ratelimit-bucket", hash.clone()));
        b
    };
    let mut lose = false;
    if let Some(inj) = s.inject.get_mut(&route).and_then(VecDeque::pop_front) {
        match inj {
            Inject::RateLimit {
                retry_after,
                global,
            } => {
                let mut b = limit_headers(HttpResponse::TooManyRequests());
                b.insert_header(("retry-after", format!("{}", retry_after.ceil())));
                if global {
                    b.insert_header(("x-ratelimit-global", "true"));
                    b.insert_header(("x-ratelimit-scope", "global"));
                }
                return b.json(json!({"message": "You are being rate limited.",
                    "retry_after": retry_after, "global": global}));
            }
            Inject::Error(status, message) => return error(status, 0, &message),
            Inject::LoseAnswer => lose = true,
        }
    }
    let answer = handle(&mut s, &method, &parts, &body, now);
    drop(s);
    match answer {
        Ok(_) if lose => error(502, 0, "502: Bad Gateway"),
        Ok(Value::Null) => limit_headers(HttpResponse::NoContent()).finish(),
        Ok(v) => limit_headers(HttpResponse::Ok()).json(v),
        Err((status, code, message)) => error(status, code, message),
    }
}

/// A refused call: status, Discord's error code, message.
type Refusal = (u16, u64, &'static str);

fn bucket_hash(route: &str) -> String {
    let h = route.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    });
    format!("{h:016x}")
}

/// One REST call's effect: `Ok(Null)` for 204.
fn handle(
    s: &mut State,
    method: &str,
    parts: &[String],
    body: &Value,
    now: Instant,
) -> Result<Value, Refusal> {
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    match (method, p.as_slice()) {
        ("GET", ["gateway", "bot"]) => Ok(json!({"url": gateway_url(s), "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}})),
        ("POST", ["channels", channel, "messages"]) => create_message(s, channel, body, now),
        ("PATCH", ["channels", channel, "messages", mid]) => {
            let content = body["content"].as_str().unwrap_or("");
            if content.chars().count() > MAX_CHARS {
                return Err((
                    400,
                    50035,
                    "Invalid Form Body: content: Must be 2000 or fewer in length.",
                ));
            }
            let id = mid.parse::<u64>().unwrap_or(0);
            match s.messages.get_mut(&id) {
                Some(m) if m.channel_id == *channel => {
                    m.content = content.to_string();
                    m.writes.push(now);
                    Ok(json!({"id": mid, "channel_id": channel, "content": content}))
                }
                _ => Err((404, 10008, "Unknown Message")),
            }
        }
        ("GET", ["channels", channel]) => Ok(match s.threads.get(*channel) {
            Some(parent) => json!({"id": channel, "type": 11, "parent_id": parent}),
            None => json!({"id": channel, "type": 0}),
        }),
        ("POST", ["channels", channel, "typing"]) => {
            s.typing.push((channel.to_string(), now));
            Ok(Value::Null)
        }
        ("GET", ["applications", "@me"]) => Ok(json!({"id": APP_ID, "name": "hermes"})),
        ("GET", ["applications", app, "commands"]) if *app == APP_ID => Ok(s.commands.clone()),
        ("PUT", ["applications", app, "commands"]) if *app == APP_ID => {
            let mut registered = body.clone();
            if let Some(list) = registered.as_array_mut() {
                for c in list.iter_mut() {
                    c["id"] = json!("1");
                    c["application_id"] = json!(APP_ID);
                    c["version"] = json!("1");
                }
            }
            s.commands = registered.clone();
            s.command_puts += 1;
            Ok(registered)
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            let Some(created) = s.interactions.get(*id).copied() else {
                return Err((404, 10062, "Unknown interaction"));
            };
            let after = now.duration_since(created);
            if after > INTERACTION_DEADLINE
                || *token != format!("itoken-{id}")
                || s.replies
                    .iter()
                    .any(|r| r.interaction == *id && !r.followup)
            {
                return Err((404, 10062, "Unknown interaction"));
            }
            s.replies.push(Reply {
                interaction: id.to_string(),
                body: body.clone(),
                after,
                followup: false,
            });
            Ok(Value::Null)
        }
        ("POST", ["webhooks", app, token]) if *app == APP_ID => {
            let Some(id) = token.strip_prefix("itoken-") else {
                return Err((404, 10015, "Unknown Webhook"));
            };
            let Some(created) = s.interactions.get(id).copied() else {
                return Err((404, 10015, "Unknown Webhook"));
            };
            s.replies.push(Reply {
                interaction: id.to_string(),
                body: body.clone(),
                after: now.duration_since(created),
                followup: true,
            });
            Ok(json!({"id": s.id(), "content": body["content"]}))
        }
        _ => Err((404, 0, "404: Not Found")),
    }
}

fn create_message(
    s: &mut State,
    channel: &str,
    body: &Value,
    now: Instant,
) -> Result<Value, Refusal> {
    let content = body["content"].as_str().unwrap_or("");
    if content.trim().is_empty() {
        return Err((400, 50006, "Cannot send an empty message"));
    }
    if content.chars().count() > MAX_CHARS {
        return Err((
            400,
            50035,
            "Invalid Form Body: content: Must be 2000 or fewer in length.",
        ));
    }
    let nonce = body["nonce"].as_str().map(String::from);
    let message = |m: &Sent| json!({"id": m.id, "channel_id": m.channel_id, "content": m.content});
    if let Some(n) = &nonce
        && body["enforce_nonce"] == true
        && let Some(existing) = s.nonces.get(&(channel.to_string(), n.clone()))
        && let Some(m) = s.messages.get(existing)
    {
        return Ok(message(m));
    }
    let id = s.id();
    let num = id.parse::<u64>().unwrap_or(0);
    let sent = Sent {
        id: id.clone(),
        channel_id: channel.to_string(),
        content: content.to_string(),
        reply_to: body["message_reference"]["message_id"]
            .as_str()
            .map(String::from),
        allowed_mentions: body["allowed_mentions"].clone(),
        nonce: nonce.clone(),
        writes: vec![now],
    };
    let answer = message(&sent);
    s.messages.insert(num, sent);
    if let Some(n) = &nonce
        && s.honour_nonces
    {
        s.nonces.insert((channel.to_string(), n.clone()), num);
    }
    // The bot's own message comes back through the Gateway, as on Discord
    // (with its nonce).
    if s.echo {
        s.dispatch(
            "MESSAGE_CREATE",
            json!({"id": id, "channel_id": channel, "content": content, "type": 0, "nonce": nonce,
                "author": {"id": BOT_ID, "username": "hermes", "bot": true}}),
        );
    }
    Ok(answer)
}

// --- The Gateway ---

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        actix_web::rt::spawn(serve(stream, shared.clone()));
    }
}

/// Reads the HTTP upgrade request and answers 101; returns the request path.
async fn handshake(stream: &mut TcpStream) -> Option<String> {
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
    let path = head.lines().next()?.split_whitespace().nth(1)?.to_string();
    let key = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_string())
    })?;
    let accept = ws::hash_key(key.as_bytes());
    let accept = String::from_utf8_lossy(&accept);
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(answer.as_bytes()).await.ok()?;
    Some(path)
}

type Socket = Framed<TcpStream, Codec>;

/// Sends one text message, in fragments if asked.
async fn send_text(ws: &mut Socket, text: String, fragment: Option<usize>) -> bool {
    let bytes = bytes::Bytes::from(text.into_bytes());
    let Some(size) = fragment.filter(|n| *n < bytes.len()) else {
        return ws
            .send(Message::Text(
                String::from_utf8_lossy(&bytes).into_owned().into(),
            ))
            .await
            .is_ok();
    };
    let pieces: Vec<bytes::Bytes> = (0..bytes.len())
        .step_by(size)
        .map(|i| bytes.slice(i..(i + size).min(bytes.len())))
        .collect();
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let item = match i {
            0 => Item::FirstText(piece),
            i if i == last => Item::Last(piece),
            _ => Item::Continue(piece),
        };
        if ws.send(Message::Continuation(item)).await.is_err() {
            return false;
        }
    }
    true
}

/// One Gateway connection.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let Some(path) = handshake(&mut stream).await else {
        return;
    };
    let (tx, mut rx) = unbounded_channel();
    let (conn, hello) = {
        let mut s = shared.lock();
        s.log.connects.push(path);
        s.next_conn += 1;
        let conn = s.next_conn;
        s.conns.insert(conn, tx);
        s.current = Some(conn);
        (
            conn,
            json!({"op": 10, "d": {"heartbeat_interval": s.heartbeat_ms}}).to_string(),
        )
    };
    let mut ws = Framed::new(stream, Codec::new().max_size(MAX_CLIENT_FRAME));
    let fragment = shared.lock().fragment;
    if send_text(&mut ws, hello, fragment).await {
        loop {
            tokio::select! {
                ctl = rx.recv() => match ctl {
                    Some(Ctl::Frame(t)) => {
                        let fragment = shared.lock().fragment;
                        if !send_text(&mut ws, t, fragment).await {
                            break;
                        }
                    }
                    Some(Ctl::Close(code)) => {
                        let reason = CloseReason { code: CloseCode::from(code), description: None };
                        let _ = ws.send(Message::Close(Some(reason))).await;
                        let _ = ws.flush().await;
                        break;
                    }
                    Some(Ctl::Drop) | None => break,
                },
                frame = ws.next() => match frame {
                    Some(Ok(ws::Frame::Text(b))) => {
                        let text = String::from_utf8_lossy(&b).into_owned();
                        on_payload(&shared, conn, &text);
                    }
                    Some(Ok(ws::Frame::Ping(p))) => {
                        let _ = ws.send(Message::Pong(p)).await;
                    }
                    Some(Ok(ws::Frame::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    let mut s = shared.lock();
    s.conns.remove(&conn);
    if s.attached == Some(conn) {
        s.attached = None;
    }
    if s.current == Some(conn) {
        s.current = None;
    }
}

/// What the client sent: heartbeat, IDENTIFY, RESUME.
fn on_payload(shared: &Shared, conn: u64, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let mut s = shared.lock();
    let reply = |s: &State, ctl: Ctl| {
        if let Some(tx) = s.conns.get(&conn) {
            let _ = tx.send(ctl);
        }
    };
    match v["op"].as_u64() {
        Some(1) => {
            s.log.heartbeats += 1;
            if s.ack {
                reply(&s, Ctl::Frame(json!({"op": 11}).to_string()));
            }
        }
        Some(2) => {
            s.log.identifies.push(v["d"].clone());
            if v["d"]["token"].as_str() != Some(s.token.as_str()) {
                return reply(&s, Ctl::Close(4004));
            }
            let intents = v["d"]["intents"].as_u64().unwrap_or(0);
            if s.deny_privileged && intents & MESSAGE_CONTENT != 0 {
                return reply(&s, Ctl::Close(4014));
            }
            let sid = format!("session-{}", s.sessions.len() + 1);
            s.sessions.insert(sid.clone(), Session { log: Vec::new() });
            s.session = Some(sid.clone());
            s.attached = Some(conn);
            let ready = json!({
                "v": 10, "session_id": sid,
                "resume_gateway_url": format!("{}/resume", gateway_url(&s)),
                "user": {"id": BOT_ID, "username": "hermes", "bot": true},
                "application": {"id": APP_ID, "flags": 0},
                "guilds": [], "_trace": ["x".repeat(s.ready_padding)],
            });
            s.dispatch("READY", ready);
            for (t, d) in std::mem::take(&mut s.pending) {
                s.dispatch(&t, d);
            }
        }
        Some(6) => {
            s.log.resumes.push(v["d"].clone());
            if v["d"]["token"].as_str() != Some(s.token.as_str()) {
                return reply(&s, Ctl::Close(4004));
            }
            let sid = v["d"]["session_id"].as_str().unwrap_or("").to_string();
            let seq = v["d"]["seq"].as_u64().unwrap_or(0) as usize;
            let replay = match s.sessions.get(&sid) {
                Some(session) if seq <= session.log.len() => {
                    let from = seq.saturating_sub(s.replay_extra);
                    session.log[from..].to_vec()
                }
                _ => return reply(&s, Ctl::Frame(json!({"op": 9, "d": false}).to_string())),
            };
            for frame in replay {
                reply(&s, Ctl::Frame(frame));
            }
            s.session = Some(sid);
            s.attached = Some(conn);
            s.dispatch("RESUMED", json!({"_trace": ["fake"]}));
        }
        _ => {}
    }
}
