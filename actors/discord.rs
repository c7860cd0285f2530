//! `DiscordActor`: the gateway's one connection to Discord, and the only
//! code that talks to it (its wire format is in `platforms/discord.rs`).
//! Outgoing messages go through the platform's courier over
//! [`DiscordWire`]; incoming ones reach the session router.
//!
//! The Gateway websocket (v10, JSON, over awc): `HELLO` → heartbeats every
//! `heartbeat_interval` (the first after a random part of it) →
//! `IDENTIFY` (or `RESUME` of a stored session) → `READY` → dispatches.
//! A missed heartbeat ACK, an `op 7 RECONNECT` or a close reconnects to
//! `resume_gateway_url` and resumes from the last sequence number; `op 9`
//! that cannot be resumed starts afresh. The session id, resume URL and last
//! sequence are kept in `state.db`, so a quick restart resumes too. Close
//! codes retrying cannot fix (a bad token, refused intents) mark Discord
//! failed with a reason that says what to do, and stop. Fragmented frames
//! are reassembled up to [`discord::MAX_FRAME_BYTES`].
//!
//! REST calls wait for their route's bucket and the global limit
//! ([`discord::Buckets`], fed by the `X-RateLimit-*` headers and 429s).
//! Slash commands are registered once per process, only when Discord's set
//! differs, and answered through the interaction callback within its 3 s.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use awc::ws::{Frame, Message as WsMessage};
use bytes::BytesMut;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::command_reply::{CommandReply, ReplyFn};
use super::courier::CourierActor;
use super::outbox::Outbox;
use super::session_router::Incoming;
use super::start::{PlatformStart, Started};
use crate::backoff::Backoff;
use crate::platform_status::LinkState;
use crate::platforms::access::Dedup;
use crate::platforms::consumer::Held;
use crate::platforms::courier::{Call, Wire};
use crate::platforms::discord::{self as dc, AfterClose, NAME, Ready, Session};
use crate::platforms::{ChatRef, Parsed, PlatformError};
use crate::ws::{WsEvent, next_event};

/// First wait after a failed connection; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Connect timeout for REST and the Gateway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one REST call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest REST answer read.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Wait for `HELLO` after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);
/// The state key of the stored session.
const SESSION_KEY: &str = "session";

/// Discord's REST API with the bot token, and this thread's view of its
/// rate-limit buckets.
#[derive(Clone)]
pub struct DiscordRest {
    base: String,
    token: String,
    buckets: Rc<RefCell<dc::Buckets>>,
}

impl DiscordRest {
    /// The API at `base` (default `https://discord.com/api/v10`).
    pub fn new(base: Option<&str>, token: &str) -> Self {
        Self {
            base: base
                .unwrap_or(dc::DEFAULT_BASE_URL)
                .trim_end_matches('/')
                .to_string(),
            token: token.to_string(),
            buckets: Rc::new(RefCell::new(dc::Buckets::default())),
        }
    }

    fn scrub(&self, text: &str) -> String {
        if self.token.is_empty() {
            return crate::secrets::redact(text);
        }
        crate::secrets::redact(&text.replace(&self.token, "<token>"))
    }

    /// One REST call; waits for its bucket first. Answers the JSON body
    /// (`null` for an empty one).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, PlatformError> {
        let route = dc::route_key(method, path);
        let at = self.buckets.borrow_mut().reserve(&route, Instant::now());
        tokio::time::sleep_until(at).await;
        let client = crate::upstream::http_client(CONNECT_TIMEOUT);
        let url = format!("{}{path}", self.base);
        let m = awc::http::Method::from_bytes(method.as_bytes())
            .map_err(|e| PlatformError::Refused(format!("method {method}: {e}")))?;
        let req = client
            .request(m, &url)
            .timeout(CALL_TIMEOUT)
            .insert_header(("Authorization", format!("Bot {}", self.token)))
            .insert_header((
                "User-Agent",
                concat!("DiscordBot (hermes, ", env!("CARGO_PKG_VERSION"), ")"),
            ));
        let sent = match body {
            Some(b) => req.send_json(b).await,
            None if method == "GET" || method == "DELETE" => req.send().await,
            // Discord answers 411 to a POST without a Content-Length.
            None => req.send_body("").await,
        };
        let mut resp = sent.map_err(|e| {
            PlatformError::Unavailable(self.scrub(&format!("{method} {path}: {e}")))
        })?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let limits = dc::LimitHeaders {
            bucket: header("x-ratelimit-bucket"),
            remaining: header("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset_after: header("x-ratelimit-reset-after").and_then(|v| v.parse().ok()),
        };
        let retry_after = header("retry-after").and_then(|v| v.parse::<f64>().ok());
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(MAX_ANSWER_BYTES).await.map_err(|e| {
            PlatformError::Unavailable(self.scrub(&format!("{method} {path}: reading: {e}")))
        })?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let now = Instant::now();
        self.buckets.borrow_mut().update(&route, &limits, now);
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let e = dc::classify(status, &v, retry_after);
        if let PlatformError::RateLimited {
            retry_after,
            global,
        } = &e
        {
            self.buckets
                .borrow_mut()
                .hold(&route, *retry_after, *global, now);
        }
        Err(match e {
            PlatformError::Refused(t) => {
                PlatformError::Refused(self.scrub(&format!("{method} {path}: {t}")))
            }
            PlatformError::Unavailable(t) => {
                PlatformError::Unavailable(self.scrub(&format!("{method} {path}: {t}")))
            }
            PlatformError::Unauthorized(t) => {
                PlatformError::Unauthorized(self.scrub(&format!("{method} {path}: {t}")))
            }
            other => other,
        })
    }
}

/// Discord's API calls for the courier.
pub struct DiscordWire {
    pub rest: DiscordRest,
    /// The bot's messages seen on the Gateway (shared with the actor).
    pub echoes: Arc<Mutex<dc::Echoes>>,
}

impl Wire for DiscordWire {
    fn send(
        &self,
        chat: &ChatRef,
        text: &str,
        _formatted: bool,
        reply_to: Option<&str>,
        key: &str,
    ) -> Call<String> {
        let rest = self.rest.clone();
        let path = format!("/channels/{}/messages", dc::channel_of(chat));
        let body = dc::message_body(text, reply_to, key);
        let nonce = dc::nonce(key);
        let echoes = self.echoes.clone();
        Box::pin(async move {
            // A retry of a send whose message already came back is done.
            let echoed = echoes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&nonce)
                .map(String::from);
            if let Some(id) = echoed {
                return Ok(id);
            }
            let v = rest.call("POST", &path, Some(&body)).await?;
            Ok(v["id"].as_str().unwrap_or_default().to_string())
        })
    }

    fn edit(&self, chat: &ChatRef, id: &str, text: &str, _formatted: bool) -> Call<()> {
        let rest = self.rest.clone();
        let path = format!("/channels/{}/messages/{id}", dc::channel_of(chat));
        let body = dc::edit_body(text);
        Box::pin(async move { rest.call("PATCH", &path, Some(&body)).await.map(|_| ()) })
    }

    fn typing(&self, chat: &ChatRef) -> Call<()> {
        let rest = self.rest.clone();
        let path = format!("/channels/{}/typing", dc::channel_of(chat));
        Box::pin(async move { rest.call("POST", &path, None).await.map(|_| ()) })
    }
}

/// How the actor is set up.
#[derive(Clone)]
pub struct DiscordSettings {
    pub api_base: Option<String>,
    pub token: String,
    /// Overrides the URL `GET /gateway/bot` gives.
    pub gateway_url: Option<String>,
    /// In server channels, answer only when mentioned (or replied to).
    pub require_mention: bool,
    /// Where the gateway's own notices go.
    pub home_channel: Option<String>,
}

/// A dispatch from the Gateway. Sent by: the connection task.
#[derive(Message)]
#[rtype(result = "()")]
struct Dispatch {
    event: String,
    d: Value,
}

/// The session is ready (after IDENTIFY). Sent by: the connection task.
#[derive(Message)]
#[rtype(result = "()")]
struct Identified(Ready);

/// The Discord platform.
pub struct DiscordActor {
    settings: DiscordSettings,
    start: PlatformStart,
    out: Outbox,
    rest: DiscordRest,
    bot_id: String,
    application_id: String,
    /// Server channel → its parent when it is a thread (`None`: not a thread).
    channels: HashMap<String, Option<String>>,
    /// Messages in server channels not yet in `channels`, waiting (in
    /// arrival order) for the lookup of what their channel is.
    waiting: HashMap<String, Vec<Value>>,
    dedup: Dedup,
    /// Slash commands were checked (once per process).
    commands_checked: bool,
    /// The bot's own messages seen on the Gateway, by nonce (the wire reads them).
    echoes: Arc<Mutex<dc::Echoes>>,
}

/// Starts Discord when its token is configured.
pub fn start(ctx: &PlatformStart) -> Option<Started> {
    let c = &ctx.loaded.config.discord;
    let token = c.bot_token.clone()?;
    let settings = DiscordSettings {
        api_base: c.api_base_url.clone(),
        token: token.clone(),
        gateway_url: c.gateway_url.clone(),
        require_mention: c.require_mention.unwrap_or(true),
        home_channel: c.home_channel.clone(),
    };
    let (base, t) = (settings.api_base.clone(), token.clone());
    let echoes = Arc::new(Mutex::new(dc::Echoes::default()));
    let wire_echoes = echoes.clone();
    let out = CourierActor::start_outbox(
        &ctx.pool.pick(),
        NAME,
        dc::CAPABILITIES,
        ctx.metrics.clone(),
        move || {
            Rc::new(DiscordWire {
                rest: DiscordRest::new(base.as_deref(), &t),
                echoes: wire_echoes,
            }) as Rc<dyn Wire>
        },
    );
    let start = ctx.clone();
    DiscordActor::start_in_arbiter(&ctx.pool.pick(), move |_| DiscordActor {
        rest: DiscordRest::new(settings.api_base.as_deref(), &settings.token),
        settings,
        start,
        out,
        bot_id: String::new(),
        application_id: String::new(),
        channels: HashMap::new(),
        waiting: HashMap::new(),
        dedup: Dedup::default(),
        commands_checked: false,
        echoes,
    });
    Some(Started { hooks: Vec::new() })
}

impl DiscordActor {
    fn parent_of(&self, channel: &str) -> Option<String> {
        self.channels.get(channel).cloned().flatten()
    }

    fn parse(&self, d: &Value) -> Parsed {
        dc::parse_message(d, &self.bot_id, self.settings.require_mention, |c| {
            self.parent_of(c)
        })
    }

    fn on_message(&mut self, d: Value, ctx: &mut Context<Self>) {
        if let Some((nonce, id)) = dc::own_echo(&d, &self.bot_id) {
            self.echoes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(nonce, id);
            return;
        }
        let parsed = self.parse(&d);
        let channel = d["channel_id"].as_str().unwrap_or_default().to_string();
        let in_guild = d.get("guild_id").is_some_and(|g| !g.is_null());
        if in_guild
            && matches!(parsed, Parsed::Message { .. })
            && !self.channels.contains_key(&channel)
        {
            // A channel the Gateway did not describe (a thread from before
            // the start, say): ask what it is before choosing the session.
            let queue = self.waiting.entry(channel.clone()).or_default();
            queue.push(d);
            if queue.len() == 1 {
                self.look_up(channel, ctx);
            }
            return;
        }
        self.start
            .hand_over(parsed, &mut self.dedup, &self.out, NAME);
    }

    /// `GET /channels/{id}`, then the messages that waited for it.
    fn look_up(&self, channel: String, ctx: &mut Context<Self>) {
        let rest = self.rest.clone();
        let path = format!("/channels/{channel}");
        ctx.spawn(
            async move { rest.call("GET", &path, None).await }
                .into_actor(self)
                .map(move |answer, me: &mut Self, _| {
                    match answer.map(|v| dc::kind_of(&v)) {
                        Ok(Some((_, parent))) => {
                            me.channels.insert(channel.clone(), parent);
                        }
                        // Not cached: a later message asks again.
                        Ok(None) | Err(_) => {
                            log::warn!("{NAME}: cannot tell what channel {channel} is");
                        }
                    }
                    for d in me.waiting.remove(&channel).unwrap_or_default() {
                        let parsed = me.parse(&d);
                        me.start.hand_over(parsed, &mut me.dedup, &me.out, NAME);
                    }
                }),
        );
    }

    fn on_interaction(&mut self, d: &Value) {
        // An interaction describes its channel.
        if let Some((id, parent)) = dc::kind_of(&d["channel"]) {
            self.channels.insert(id, parent);
        }
        let Some(i) = dc::parse_interaction(d, |c| self.parent_of(c)) else {
            return;
        };
        if !self.dedup.first_time(&format!("interaction:{}", i.id)) {
            return;
        }
        // The interaction names its application.
        let application_id = d["application_id"]
            .as_str()
            .map_or_else(|| self.application_id.clone(), String::from);
        let out = CommandReply::outbox(
            NAME,
            dc::CAPABILITIES,
            interaction_reply(
                self.rest.clone(),
                i.id.clone(),
                i.token.clone(),
                application_id,
            ),
        );
        let msg = crate::platforms::Inbound {
            platform: NAME,
            chat: i.chat,
            user_id: i.user_id,
            message_id: i.id,
            text: i.command,
            whole_chat: false,
        };
        self.start.router.do_send(Incoming { msg, out });
    }

    /// Registers the slash commands when Discord's set differs (once per process).
    fn check_commands(&mut self, ctx: &mut Context<Self>) {
        if self.commands_checked {
            return;
        }
        self.commands_checked = true;
        let rest = self.rest.clone();
        let known = self.application_id.clone();
        ctx.spawn(
            async move {
                // READY names the application; without it, ask.
                let app = if known.is_empty() {
                    match rest.call("GET", "/applications/@me", None).await {
                        Ok(v) => v["id"].as_str().unwrap_or_default().to_string(),
                        Err(e) => {
                            log::warn!("{NAME}: cannot tell the application id: {e}");
                            return;
                        }
                    }
                } else {
                    known
                };
                let path = format!("/applications/{app}/commands");
                let wanted = dc::commands();
                match rest.call("GET", &path, None).await {
                    Ok(have) if !dc::commands_differ(&have, &wanted) => {
                        log::debug!("{NAME}: slash commands up to date");
                    }
                    Ok(_) => match rest.call("PUT", &path, Some(&wanted)).await {
                        Ok(_) => log::info!("{NAME}: slash commands registered"),
                        Err(e) => log::warn!("{NAME}: cannot register slash commands: {e}"),
                    },
                    Err(e) => log::warn!("{NAME}: cannot read the slash commands: {e}"),
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for DiscordActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let fut = run(
            self.settings.clone(),
            self.rest.clone(),
            ctx.address(),
            self.start.clone(),
        );
        ctx.spawn(fut.into_actor(self));
    }
}

impl Handler<Identified> for DiscordActor {
    type Result = ();

    fn handle(&mut self, msg: Identified, ctx: &mut Context<Self>) {
        self.bot_id = msg.0.bot_id;
        if !msg.0.application_id.is_empty() {
            self.application_id = msg.0.application_id;
        }
        self.check_commands(ctx);
        super::start::on_connected(&self.start, &self.out, &mut self.settings.home_channel);
    }
}

impl Handler<Dispatch> for DiscordActor {
    type Result = ();

    fn handle(&mut self, msg: Dispatch, ctx: &mut Context<Self>) {
        match msg.event.as_str() {
            "MESSAGE_CREATE" => self.on_message(msg.d, ctx),
            "INTERACTION_CREATE" => self.on_interaction(&msg.d),
            "THREAD_CREATE" | "THREAD_UPDATE" | "CHANNEL_CREATE" | "CHANNEL_UPDATE" => {
                self.channels.extend(dc::kind_of(&msg.d));
            }
            "THREAD_DELETE" | "CHANNEL_DELETE" => {
                if let Some(id) = msg.d["id"].as_str() {
                    self.channels.remove(id);
                }
            }
            "GUILD_CREATE" => self.channels.extend(dc::channels_of_guild(&msg.d)),
            "THREAD_LIST_SYNC" => {
                let threads = msg.d["threads"].as_array().into_iter().flatten();
                self.channels.extend(threads.filter_map(dc::kind_of));
            }
            _ => {}
        }
    }
}

/// Answers one slash command: the first reply through the interaction
/// callback (within Discord's 3 s), later ones as follow-ups; all of them
/// seen only by the user who asked.
fn interaction_reply(
    rest: DiscordRest,
    id: String,
    token: String,
    application_id: String,
) -> ReplyFn {
    let mut answered = false;
    Box::new(move |text: String| {
        let first = !answered;
        answered = true;
        let (path, body) = if first {
            (
                format!("/interactions/{id}/{token}/callback"),
                dc::callback_body(&text, true),
            )
        } else {
            (
                format!("/webhooks/{application_id}/{token}"),
                json!({"content": text, "flags": dc::EPHEMERAL, "allowed_mentions": {"parse": []}}),
            )
        };
        let (rest, id) = (rest.clone(), id.clone());
        Box::pin(async move {
            let v = rest.call("POST", &path, Some(&body)).await?;
            Ok(v["id"].as_str().map_or(id, String::from))
        })
    })
}

/// How one Gateway connection ended.
enum Ended {
    /// Reconnect and resume (a close, op 7, a missed ACK, a dropped socket).
    Resume(String),
    /// Reconnect with a fresh IDENTIFY (the session cannot be resumed).
    Identify(String),
    /// Stop: retrying cannot fix it.
    Fatal(String),
    /// The actor is gone: the gateway stops.
    Stopped,
}

/// The stored session, if any.
async fn load_session(start: &PlatformStart) -> Option<Session> {
    let v = crate::platform_state::load(&start.store, NAME, SESSION_KEY)
        .await
        .ok()
        .flatten()?;
    Session::from_json(&serde_json::from_str(&v).ok()?)
}

/// Stores the session (queued at once; writes land in order).
fn save_session(start: &PlatformStart, s: Option<&Session>) {
    let value = s.map_or_else(|| "null".to_string(), |s| s.to_json().to_string());
    drop(crate::platform_state::save(
        &start.store,
        NAME,
        SESSION_KEY,
        value,
    ));
}

/// The connection loop, for the life of the gateway.
async fn run(
    settings: DiscordSettings,
    rest: DiscordRest,
    me: Addr<DiscordActor>,
    start: PlatformStart,
) {
    let status = start.status.clone();
    status.set(NAME, LinkState::Connecting, None);
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let url = match &settings.gateway_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => loop {
            match rest.call("GET", "/gateway/bot", None).await {
                Ok(v) => match v["url"].as_str() {
                    Some(u) => break u.trim_end_matches('/').to_string(),
                    None => {
                        let why = "GET /gateway/bot answered no url".to_string();
                        status.set(NAME, LinkState::Connecting, Some(why));
                    }
                },
                Err(PlatformError::Unauthorized(e)) => {
                    let why = format!("the bot token was rejected ({e}); check DISCORD_BOT_TOKEN");
                    log::error!("{NAME}: {why}; the other front doors keep running");
                    status.set(NAME, LinkState::Failed, Some(why));
                    return;
                }
                Err(e) => status.set(NAME, LinkState::Connecting, Some(e.to_string())),
            }
            tokio::time::sleep(backoff.next_wait()).await;
        },
    };
    // Only the holder of the bot's consumer lease keeps a Gateway session;
    // the other instances stand by (`platforms::consumer`).
    while let Some(held) = start.leases.hold(NAME, &settings.token, &status).await {
        if !connect_while_held(&settings, &url, held, &me, &start, &mut backoff).await {
            return;
        }
        log::warn!("{NAME}: disconnected: this instance no longer holds the bot");
    }
}

/// Connects and reconnects (resuming the stored session, read anew at the
/// start: another instance may have moved it on) until the consumer lease
/// is lost (`true`: stand by again) or the platform stops (`false`).
async fn connect_while_held(
    settings: &DiscordSettings,
    url: &str,
    mut held: Held,
    me: &Addr<DiscordActor>,
    start: &PlatformStart,
    backoff: &mut Backoff,
) -> bool {
    let status = &start.status;
    let mut session = load_session(start).await;
    loop {
        let target = match &session {
            Some(s) if !s.ready.resume_url.is_empty() => s.ready.resume_url.clone(),
            _ => url.to_string(),
        };
        let state = if session.is_some() {
            LinkState::Resuming
        } else {
            LinkState::Connecting
        };
        status.set(NAME, state, None);
        let ended = tokio::select! {
            ended = connection(settings, &target, &mut session, me, start, backoff) => ended,
            () = held.lost() => return true,
        };
        let why = match ended {
            Ended::Stopped => return false,
            Ended::Fatal(why) => {
                log::error!("{NAME}: {why}; the other front doors keep running");
                status.set(NAME, LinkState::Failed, Some(why));
                return false;
            }
            Ended::Identify(why) => {
                session = None;
                save_session(start, None);
                why
            }
            Ended::Resume(why) => why,
        };
        let wait = backoff.next_wait();
        log::warn!("{NAME}: {why}; reconnecting in {} ms", wait.as_millis());
        status.set(NAME, LinkState::Connecting, Some(why));
        tokio::time::sleep(wait).await;
    }
}

/// A random share (0..1) of a heartbeat interval: the first beat's delay.
fn jittered(interval: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = getrandom::fill(&mut b).map_or(0.5, |()| {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
    });
    interval.mul_f64(r)
}

/// One Gateway connection, from connect to its end.
async fn connection(
    settings: &DiscordSettings,
    url: &str,
    session: &mut Option<Session>,
    me: &Addr<DiscordActor>,
    start: &PlatformStart,
    backoff: &mut Backoff,
) -> Ended {
    let client = crate::upstream::http_client(CONNECT_TIMEOUT);
    let full = dc::gateway_target(url);
    let connected = client
        .ws(full)
        .max_frame_size(dc::MAX_FRAME_BYTES)
        .connect()
        .await;
    let mut ws = match connected {
        Ok((_, ws)) => ws,
        Err(e) => return Ended::Resume(format!("cannot open the Gateway: {e}")),
    };
    let mut text_buf = BytesMut::new();
    // HELLO first.
    let hello = tokio::time::timeout(HELLO_TIMEOUT, next_text(&mut ws, &mut text_buf)).await;
    let interval = match hello {
        Ok(Ok(Some(t))) => match dc::parse_frame(&t) {
            Ok(f) if f.op == dc::op::HELLO => {
                Duration::from_millis(f.d["heartbeat_interval"].as_u64().unwrap_or(41_250))
            }
            _ => return Ended::Resume("the Gateway did not start with HELLO".into()),
        },
        Ok(Ok(None)) => return Ended::Resume("the Gateway closed before HELLO".into()),
        Ok(Err(code)) => return close_ended(code),
        Err(_) => return Ended::Resume("no HELLO from the Gateway".into()),
    };
    let opening = match session {
        Some(s) => dc::resume(&settings.token, &s.ready.session_id, s.seq),
        None => dc::identify(&settings.token),
    };
    if ws.send(WsMessage::Text(opening.into())).await.is_err() {
        return Ended::Resume("the Gateway closed before IDENTIFY".into());
    }
    let status = &start.status;
    let mut seq = session.as_ref().map(|s| s.seq);
    let mut beat = tokio::time::interval_at(Instant::now() + jittered(interval), interval);
    let mut acked = true;
    let mut sent_at = Instant::now();
    loop {
        tokio::select! {
            _ = beat.tick() => {
                if !acked {
                    // A zombied connection: drop it (not with 1000/1001,
                    // which would end the session) and resume.
                    return Ended::Resume("no heartbeat ACK from the Gateway".into());
                }
                acked = false;
                sent_at = Instant::now();
                if ws.send(WsMessage::Text(dc::heartbeat(seq).into())).await.is_err() {
                    return Ended::Resume("the Gateway socket broke".into());
                }
            }
            next = next_text(&mut ws, &mut text_buf) => {
                let text = match next {
                    Ok(Some(t)) => t,
                    Ok(None) => return Ended::Resume("the Gateway socket closed".into()),
                    Err(code) => return close_ended(code),
                };
                let Ok(f) = dc::parse_frame(&text) else {
                    log::warn!("{NAME}: a Gateway message that is not a payload was ignored");
                    continue;
                };
                match f.op {
                    dc::op::DISPATCH => {
                        if let Some(s) = f.s {
                            seq = Some(s);
                            status.detail(NAME, "last_sequence", json!(s));
                        }
                        let event = f.t.unwrap_or_default();
                        match event.as_str() {
                            "READY" => {
                                let Some(mut ready) = dc::parse_ready(&f.d) else {
                                    return Ended::Identify("READY without a session".into());
                                };
                                ready.resume_url = ready.resume_url.trim_end_matches('/').to_string();
                                *session = Some(Session {
                                    ready: ready.clone(),
                                    seq: seq.unwrap_or(0),
                                });
                                save_session(start, session.as_ref());
                                backoff.reset();
                                status.set(NAME, LinkState::Connected, None);
                                log::info!("{NAME}: connected (session ready)");
                                if me.send(Identified(ready)).await.is_err() {
                                    return Ended::Stopped;
                                }
                            }
                            "RESUMED" => {
                                backoff.reset();
                                status.set(NAME, LinkState::Connected, None);
                                log::info!("{NAME}: session resumed");
                                // After a restart, who the bot is comes from the stored session.
                                if let Some(s) = session.as_ref()
                                    && me.send(Identified(s.ready.clone())).await.is_err()
                                {
                                    return Ended::Stopped;
                                }
                            }
                            _ => {
                                if me.send(Dispatch { event: event.clone(), d: f.d }).await.is_err() {
                                    return Ended::Stopped;
                                }
                            }
                        }
                        if let (Some(s), Some(sess)) = (seq, session.as_mut()) {
                            sess.seq = s;
                            if event == "MESSAGE_CREATE" || event == "INTERACTION_CREATE" {
                                save_session(start, Some(sess));
                            }
                        }
                    }
                    // The Gateway asks for a heartbeat now.
                    dc::op::HEARTBEAT
                        if ws.send(WsMessage::Text(dc::heartbeat(seq).into())).await.is_err() =>
                    {
                        return Ended::Resume("the Gateway socket broke".into());
                    }
                    dc::op::HEARTBEAT_ACK => {
                        acked = true;
                        let latency = sent_at.elapsed();
                        status.detail(NAME, "heartbeat_latency_ms", json!(latency.as_millis() as u64));
                    }
                    dc::op::RECONNECT => return Ended::Resume("the Gateway asked to reconnect".into()),
                    dc::op::INVALID_SESSION => {
                        return if f.d.as_bool() == Some(true) {
                            Ended::Resume("the Gateway invalidated the session (resumable)".into())
                        } else {
                            Ended::Identify("the Gateway invalidated the session".into())
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The end a close code means.
fn close_ended(code: u16) -> Ended {
    match dc::after_close(code) {
        AfterClose::Resume => Ended::Resume(format!("the Gateway closed the socket ({code})")),
        AfterClose::Identify => Ended::Identify(format!("the Gateway closed the session ({code})")),
        AfterClose::Fatal(why) => Ended::Fatal(why),
    }
}

/// The next whole text message: `Ok(None)` when the socket ended, `Err(code)`
/// for a close frame (pongs, unasked for, are skipped).
async fn next_text<S>(ws: &mut S, buf: &mut BytesMut) -> Result<Option<String>, u16>
where
    S: futures_util::Stream<Item = Result<Frame, awc::error::WsProtocolError>>
        + futures_util::Sink<WsMessage>
        + Unpin,
{
    loop {
        return match next_event(ws, buf, dc::MAX_FRAME_BYTES).await {
            WsEvent::Message(t) => Ok(Some(t)),
            WsEvent::Pong => continue,
            WsEvent::Closed(code) => Err(code),
            WsEvent::Ended => Ok(None),
        };
    }
}
