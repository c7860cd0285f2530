//! `SlackActor`: the gateway's one connection to Slack, and the only code
//! that talks to it (its wire format is in `platforms/slack.rs`). Outgoing
//! messages go through the platform's courier over [`SlackWire`]
//! (`chat.postMessage`, `chat.update`, the assistant status); answers
//! stream natively through this actor (`chat.startStream`, `appendStream`,
//! `stopStream`) while Slack allows it; incoming ones reach the session
//! router.
//!
//! Socket Mode over awc: `auth.test` with the bot token says who the bot
//! is; `apps.connections.open` with the app token gives a websocket URL.
//! Every envelope is acknowledged as soon as it is read, before the work it
//! starts, whatever its type; a slash command's acknowledgement carries its
//! reply (waited for up to [`SLASH_REPLY_WAIT`], later replies go to its
//! `response_url`). A `disconnect` envelope opens a fresh connection at
//! once; a close, a broken socket or no pong for [`STALE_PINGS`] ping
//! intervals reconnects with back-off. Slack redelivers what was not
//! acknowledged, so event ids and message timestamps are remembered for an
//! hour. A rejected token (either one) marks Slack failed with what to do,
//! and stops: no retry loop.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use awc::ws::Message as WsMessage;
use bytes::BytesMut;
use futures_util::SinkExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::command_reply::{CommandReply, ReplyFn};
use super::courier::CourierActor;
use super::outbox::{AppendStream, NativeStream, Outbox, StartStream, StopStream};
use super::session_router::Incoming;
use super::start::{PlatformStart, Started};
use crate::backoff::Backoff;
use crate::platform_status::LinkState;
use crate::platforms::access::Dedup;
use crate::platforms::consumer::Held;
use crate::platforms::courier::{Call, Wire};
use crate::platforms::slack::{self as sl, Envelope, NAME, Recent};
use crate::platforms::{ChatKind, ChatRef, Inbound, Parsed, PlatformError};
use crate::ws::{WsEvent, next_event};

/// First wait after a failed connection; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Connect timeout for the Web API and the socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one Web API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest Web API answer read.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// The largest Socket Mode message read.
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Wait for `hello` after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the socket is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Ping intervals without a pong after which the socket counts as dead.
pub const STALE_PINGS: u32 = 4;
/// How long a slash command's acknowledgement waits for its reply (Slack
/// wants the acknowledgement within 3 s).
pub const SLASH_REPLY_WAIT: Duration = Duration::from_millis(2500);
/// Web API errors of `assistant.threads.setStatus` that mean the app has no
/// assistant feature at all (no status anywhere, for the process).
const NO_ASSISTANT: &[&str] = &["missing_scope", "not_allowed_token_type", "unknown_method"];

/// Slack's Web API with the bot and app tokens.
#[derive(Clone)]
pub struct SlackApi {
    base: String,
    bot_token: String,
    app_token: String,
}

impl SlackApi {
    /// The API at `base` (default `https://slack.com/api`).
    pub fn new(base: Option<&str>, bot_token: &str, app_token: &str) -> Self {
        Self {
            base: base
                .unwrap_or(sl::DEFAULT_BASE_URL)
                .trim_end_matches('/')
                .to_string(),
            bot_token: bot_token.to_string(),
            app_token: app_token.to_string(),
        }
    }

    fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        for token in [&self.bot_token, &self.app_token] {
            if !token.is_empty() {
                t = t.replace(token.as_str(), "<token>");
            }
        }
        crate::secrets::redact(&t)
    }

    /// One Web API method with the bot token (the app token when `app`).
    pub async fn call(
        &self,
        method: &str,
        body: Option<&Value>,
        app: bool,
    ) -> Result<Value, PlatformError> {
        let token = if app {
            &self.app_token
        } else {
            &self.bot_token
        };
        self.post(&format!("{}/{method}", self.base), body, Some(token))
            .await
            .map_err(|e| scrubbed(e, |t| self.scrub(&format!("{method}: {t}"))))
    }

    /// A POST to a slash command's `response_url` (no token: the URL is the key).
    pub async fn respond(&self, url: &str, body: &Value) -> Result<Value, PlatformError> {
        self.post(url, Some(body), None)
            .await
            .map_err(|e| scrubbed(e, |t| self.scrub(&format!("response_url: {t}"))))
    }

    async fn post(
        &self,
        url: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Value, PlatformError> {
        let client = crate::upstream::http_client(CONNECT_TIMEOUT);
        let mut req = client.post(url).timeout(CALL_TIMEOUT);
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let sent = match body {
            Some(b) => {
                req.insert_header(("Content-Type", "application/json; charset=utf-8"))
                    .send_body(b.to_string())
                    .await
            }
            None => {
                req.insert_header(("Content-Type", "application/x-www-form-urlencoded"))
                    .send_body("")
                    .await
            }
        };
        let mut resp = sent.map_err(|e| PlatformError::Unavailable(e.to_string()))?;
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let status = resp.status().as_u16();
        let bytes = resp
            .body()
            .limit(MAX_ANSWER_BYTES)
            .await
            .map_err(|e| PlatformError::Unavailable(format!("reading: {e}")))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        sl::classify(status, &v, retry_after)
    }
}

/// The error with its text rewritten (tokens scrubbed, the call named).
fn scrubbed(e: PlatformError, f: impl Fn(&str) -> String) -> PlatformError {
    match e {
        PlatformError::Refused(t) => PlatformError::Refused(f(&t)),
        PlatformError::Unavailable(t) => PlatformError::Unavailable(f(&t)),
        PlatformError::Unauthorized(t) => PlatformError::Unauthorized(f(&t)),
        other => other,
    }
}

/// Slack's API calls for the courier.
pub struct SlackWire {
    api: SlackApi,
    /// The assistant status works at all (cleared on the errors that say the
    /// app has no assistant feature).
    status_on: Rc<Cell<bool>>,
    /// Chats whose threads refused a status (not assistant threads).
    no_status: Rc<RefCell<HashSet<String>>>,
}

impl SlackWire {
    fn status(&self, chat: &ChatRef, text: &str) -> Call<()> {
        let body = sl::status_body(chat, text)
            .filter(|_| self.status_on.get() && !self.no_status.borrow().contains(&chat.id));
        let (api, on, no) = (
            self.api.clone(),
            self.status_on.clone(),
            self.no_status.clone(),
        );
        let chat_id = chat.id.clone();
        Box::pin(async move {
            let Some(body) = body else { return Ok(()) };
            match api
                .call("assistant.threads.setStatus", Some(&body), false)
                .await
            {
                Err(PlatformError::Refused(e) | PlatformError::Unauthorized(e)) => {
                    if NO_ASSISTANT.iter().any(|n| e.ends_with(n)) {
                        if on.replace(false) {
                            log::info!("{NAME}: no assistant status ({e}); threads show none");
                        }
                    } else {
                        no.borrow_mut().insert(chat_id);
                    }
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        })
    }
}

impl Wire for SlackWire {
    fn send(
        &self,
        chat: &ChatRef,
        text: &str,
        formatted: bool,
        _reply_to: Option<&str>,
        _key: &str,
    ) -> Call<String> {
        let api = self.api.clone();
        let body = sl::post_body(chat, text, formatted);
        Box::pin(async move {
            let v = api.call("chat.postMessage", Some(&body), false).await?;
            Ok(v["ts"].as_str().unwrap_or_default().to_string())
        })
    }

    fn edit(&self, chat: &ChatRef, id: &str, text: &str, formatted: bool) -> Call<()> {
        let api = self.api.clone();
        let body = sl::update_body(chat, id, text, formatted);
        Box::pin(async move {
            api.call("chat.update", Some(&body), false)
                .await
                .map(|_| ())
        })
    }

    fn typing(&self, chat: &ChatRef) -> Call<()> {
        self.status(chat, sl::STATUS_TEXT)
    }

    fn typing_done(&self, chat: &ChatRef) -> Call<()> {
        self.status(chat, "")
    }
}

/// How the actor is set up.
#[derive(Clone)]
pub struct SlackSettings {
    pub api_base: Option<String>,
    pub bot_token: String,
    pub app_token: String,
    /// In channels, answer only when mentioned (or in a thread the bot answers).
    pub require_mention: bool,
    /// Where the gateway's own notices go.
    pub home_channel: Option<String>,
}

/// Who the bot is (from `auth.test`). Sent by: the connection task.
#[derive(Message)]
#[rtype(result = "()")]
struct Identified {
    bot_user: String,
    team: String,
}

/// An event, already acknowledged. Sent by: the connection task.
#[derive(Message)]
#[rtype(result = "()")]
struct EventIn {
    event_id: String,
    event: Value,
}

/// A slash command; its first reply goes back through `ack`.
/// Sent by: the connection task.
#[derive(Message)]
#[rtype(result = "()")]
struct SlashIn {
    payload: Value,
    ack: oneshot::Sender<String>,
}

/// The Slack platform.
pub struct SlackActor {
    settings: SlackSettings,
    start: PlatformStart,
    out: Outbox,
    api: SlackApi,
    bot_user: String,
    team: String,
    /// Event ids and `channel:ts` of messages seen within the hour.
    recent: Recent,
    /// Channel threads the bot answers in (no mention needed there).
    threads: sl::Threads,
    /// What `hand_over` checks; `recent` already decided.
    dedup: Dedup,
}

/// Starts Slack when both tokens are configured (a bot token alone fails
/// Slack with what is missing).
pub fn start(ctx: &PlatformStart) -> Option<Started> {
    let c = &ctx.loaded.config.slack;
    let bot_token = c.bot_token.clone()?;
    let settings = SlackSettings {
        api_base: c.api_base_url.clone(),
        bot_token,
        app_token: c.app_token.clone().unwrap_or_default(),
        require_mention: c.require_mention.unwrap_or(true),
        home_channel: c.home_channel.clone(),
    };
    let (base, bot, app) = (
        settings.api_base.clone(),
        settings.bot_token.clone(),
        settings.app_token.clone(),
    );
    let out = CourierActor::start_outbox(
        &ctx.pool.pick(),
        NAME,
        sl::CAPABILITIES,
        ctx.metrics.clone(),
        move || {
            Rc::new(SlackWire {
                api: SlackApi::new(base.as_deref(), &bot, &app),
                status_on: Rc::new(Cell::new(true)),
                no_status: Rc::default(),
            }) as Rc<dyn Wire>
        },
    );
    let start = ctx.clone();
    SlackActor::start_in_arbiter(&ctx.pool.pick(), move |actx| {
        let out = out.with_stream(NativeStream::of(
            &actx.address(),
            sl::MAX_STREAM_CHUNK_CHARS,
        ));
        SlackActor {
            api: SlackApi::new(
                settings.api_base.as_deref(),
                &settings.bot_token,
                &settings.app_token,
            ),
            settings,
            start,
            out,
            bot_user: String::new(),
            team: String::new(),
            recent: Recent::default(),
            threads: sl::Threads::default(),
            dedup: Dedup::default(),
        }
    });
    Some(Started { hooks: Vec::new() })
}

impl SlackActor {
    fn on_event(&mut self, event_id: &str, event: &Value) {
        let now = Instant::now();
        if !event_id.is_empty() && !self.recent.first_time(&format!("event:{event_id}"), now) {
            log::debug!("{NAME}: event {event_id} redelivered; ignored");
            return;
        }
        if let Some((chat, user)) = sl::parse_stop(event) {
            // Slack's Stop button: the same as /stop in that thread.
            let msg = Inbound {
                platform: NAME,
                message_id: chat.thread.clone().unwrap_or_default(),
                chat,
                user_id: user,
                text: "/stop".into(),
                whole_chat: false,
            };
            self.start.router.do_send(Incoming {
                msg,
                out: self.out.clone(),
            });
            return;
        }
        let threads = &self.threads;
        let parsed = sl::parse_event(
            event,
            &self.bot_user,
            self.settings.require_mention,
            |c, t| threads.contains(c, t),
        );
        if let Parsed::Message { inbound, dedup } = &parsed {
            // `message` and `app_mention` of one message share the id.
            if !self.recent.first_time(dedup, now) {
                log::debug!("{NAME}: message {dedup} seen before; ignored");
                return;
            }
            if inbound.chat.kind != ChatKind::Dm
                && let Some(t) = &inbound.chat.thread
            {
                self.threads.insert(&inbound.chat.id, t);
            }
        }
        self.start
            .hand_over(parsed, &mut self.dedup, &self.out, NAME);
    }

    fn on_slash(&mut self, payload: &Value, ack: oneshot::Sender<String>) {
        let Some(s) = sl::parse_slash(payload) else {
            let _ = ack.send("Sorry, that command could not be read.".into());
            return;
        };
        let out = CommandReply::outbox(
            NAME,
            sl::CAPABILITIES,
            slash_reply(self.api.clone(), ack, s.response_url.clone(), s.id.clone()),
        );
        let msg = Inbound {
            platform: NAME,
            whole_chat: s.chat.kind != ChatKind::Dm,
            chat: s.chat,
            user_id: s.user_id,
            message_id: s.id,
            text: s.command,
        };
        self.start.router.do_send(Incoming { msg, out });
    }
}

impl Actor for SlackActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The channel threads the bot answered in before this start.
        let db = self.start.store.clone();
        let prefix = format!("agent:main:{NAME}:channel");
        ctx.spawn(
            async move { crate::sessions::keys_under(&db, &prefix).await }
                .into_actor(self)
                .map(move |keys, me: &mut Self, _| {
                    for key in keys.unwrap_or_default() {
                        let mut parts = key.rsplitn(3, ':');
                        if let (Some(thread), Some(channel)) = (parts.next(), parts.next()) {
                            me.threads.insert(channel, thread);
                        }
                    }
                }),
        );
        let fut = run(self.api.clone(), ctx.address(), self.start.clone());
        ctx.spawn(fut.into_actor(self));
    }
}

impl Handler<Identified> for SlackActor {
    type Result = ();

    fn handle(&mut self, msg: Identified, _: &mut Context<Self>) {
        self.bot_user = msg.bot_user;
        self.team = msg.team;
        super::start::on_connected(&self.start, &self.out, &mut self.settings.home_channel);
    }
}

impl Handler<EventIn> for SlackActor {
    type Result = ();

    fn handle(&mut self, msg: EventIn, _: &mut Context<Self>) {
        self.on_event(&msg.event_id, &msg.event);
    }
}

impl Handler<SlashIn> for SlackActor {
    type Result = ();

    fn handle(&mut self, msg: SlashIn, _: &mut Context<Self>) {
        self.on_slash(&msg.payload, msg.ack);
    }
}

impl Handler<StartStream> for SlackActor {
    type Result = ResponseFuture<Result<String, PlatformError>>;

    fn handle(&mut self, m: StartStream, _: &mut Context<Self>) -> Self::Result {
        let api = self.api.clone();
        let body = sl::start_stream_body(&m.chat, &m.user_id, &self.team, &m.text);
        Box::pin(async move {
            let v = api.call("chat.startStream", Some(&body), false).await?;
            match v["ts"].as_str() {
                Some(ts) => Ok(ts.to_string()),
                None => Err(PlatformError::Refused(
                    "chat.startStream answered no ts".into(),
                )),
            }
        })
    }
}

impl Handler<AppendStream> for SlackActor {
    type Result = ResponseFuture<Result<(), PlatformError>>;

    fn handle(&mut self, m: AppendStream, _: &mut Context<Self>) -> Self::Result {
        let api = self.api.clone();
        let body = sl::append_stream_body(&m.chat, &m.id, &m.text);
        Box::pin(async move {
            api.call("chat.appendStream", Some(&body), false)
                .await
                .map(|_| ())
        })
    }
}

impl Handler<StopStream> for SlackActor {
    type Result = ResponseFuture<Result<(), PlatformError>>;

    fn handle(&mut self, m: StopStream, _: &mut Context<Self>) -> Self::Result {
        let api = self.api.clone();
        let body = sl::stop_stream_body(&m.chat, &m.id, m.text.as_deref());
        Box::pin(async move {
            api.call("chat.stopStream", Some(&body), false)
                .await
                .map(|_| ())
        })
    }
}

/// Answers one slash command: the first reply in the envelope's
/// acknowledgement (while it waits), later ones through `response_url`;
/// all of them seen only by the user who typed it.
fn slash_reply(
    api: SlackApi,
    ack: oneshot::Sender<String>,
    response_url: Option<String>,
    id: String,
) -> ReplyFn {
    let mut ack = Some(ack);
    Box::new(move |text: String| {
        let id = id.clone();
        let text = match ack.take() {
            Some(tx) => match tx.send(text) {
                Ok(()) => return Box::pin(async move { Ok(id) }),
                // The acknowledgement went without it (too late): the response URL.
                Err(text) => text,
            },
            None => text,
        };
        let (api, url) = (api.clone(), response_url.clone());
        Box::pin(async move {
            let url = url.ok_or_else(|| PlatformError::Refused("no response_url".into()))?;
            api.respond(&url, &sl::slash_reply(&text)).await?;
            Ok(id)
        })
    })
}

/// How one Socket Mode connection ended.
enum Ended {
    /// Slack warned it would close this connection: the new one, opened
    /// before the old one was dropped.
    Replaced(Socket),
    /// The app token was rejected while replacing the connection.
    Failed(String),
    /// The socket was lost: reconnect after a back-off.
    Lost(String),
    /// The actor is gone: the gateway stops.
    Stopped,
}

/// Marks Slack failed for a rejected token.
fn failed(start: &PlatformStart, why: String) {
    log::error!("{NAME}: {why}; the other front doors keep running");
    start.status.set(NAME, LinkState::Failed, Some(why));
}

/// The connection loop, for the life of the gateway.
async fn run(api: SlackApi, me: Addr<SlackActor>, start: PlatformStart) {
    let status = start.status.clone();
    status.set(NAME, LinkState::Connecting, None);
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    loop {
        match api.call("auth.test", None, false).await {
            Ok(v) => {
                let who = Identified {
                    bot_user: v["user_id"].as_str().unwrap_or_default().to_string(),
                    team: v["team_id"].as_str().unwrap_or_default().to_string(),
                };
                if me.send(who).await.is_err() {
                    return;
                }
                break;
            }
            Err(PlatformError::Unauthorized(e)) => {
                return failed(
                    &start,
                    format!("the bot token was rejected ({e}); check SLACK_BOT_TOKEN (xoxb-…)"),
                );
            }
            Err(e) => status.set(NAME, LinkState::Connecting, Some(e.to_string())),
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
    if api.app_token.is_empty() {
        return failed(
            &start,
            "no app token: set SLACK_APP_TOKEN (xapp-…, with connections:write) for Socket Mode"
                .into(),
        );
    }
    // Only the holder of the app's consumer lease keeps a socket open; the
    // other instances stand by (`platforms::consumer`).
    while let Some(held) = start.leases.hold(NAME, &api.app_token, &status).await {
        if !read_while_held(&api, held, &me, &start, &mut backoff).await {
            return;
        }
        log::warn!("{NAME}: disconnected: this instance no longer holds the app");
    }
}

/// Opens sockets and reads them until the consumer lease is lost (`true`:
/// stand by again) or the platform stops (`false`).
async fn read_while_held(
    api: &SlackApi,
    mut held: Held,
    me: &Addr<SlackActor>,
    start: &PlatformStart,
    backoff: &mut Backoff,
) -> bool {
    let status = &start.status;
    let mut next: Option<Socket> = None;
    loop {
        let ws = match next.take() {
            Some(ws) => ws,
            None => {
                let opened = tokio::select! {
                    opened = open_socket(api, start, backoff) => opened,
                    () = held.lost() => return true,
                };
                match opened {
                    Some(ws) => ws,
                    None => return false,
                }
            }
        };
        let ended = tokio::select! {
            ended = connection(ws, api, me, start, backoff) => ended,
            () = held.lost() => return true,
        };
        match ended {
            Ended::Stopped => return false,
            Ended::Replaced(ws) => {
                log::info!("{NAME}: moved to a new connection, as Slack asked");
                next = Some(ws);
            }
            Ended::Failed(why) => {
                failed(start, why);
                return false;
            }
            Ended::Lost(why) => {
                let wait = backoff.next_wait();
                log::warn!("{NAME}: {why}; reconnecting in {} ms", wait.as_millis());
                status.set(NAME, LinkState::Connecting, Some(why));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A Socket Mode websocket.
type Socket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// Why a new socket could not be had.
enum OpenError {
    /// The app token was rejected: say what to do and stop.
    Fatal(String),
    /// Try again later.
    Later(String),
}

/// `apps.connections.open`, then the websocket it names.
async fn open_once(api: &SlackApi) -> Result<Socket, OpenError> {
    let url = match api.call("apps.connections.open", None, true).await {
        Ok(v) => v["url"].as_str().unwrap_or_default().to_string(),
        Err(PlatformError::Unauthorized(e)) => {
            return Err(OpenError::Fatal(format!(
                "the app token was rejected ({e}); check SLACK_APP_TOKEN (xapp-…, with connections:write) and that Socket Mode is on"
            )));
        }
        Err(e) => return Err(OpenError::Later(format!("cannot open a connection: {e}"))),
    };
    let client = crate::upstream::http_client(CONNECT_TIMEOUT);
    match client
        .ws(url)
        .max_frame_size(MAX_FRAME_BYTES)
        .connect()
        .await
    {
        Ok((_, ws)) => Ok(ws),
        // The URL holds a ticket: it is not logged.
        Err(e) => Err(OpenError::Later(format!("cannot open the socket: {e}"))),
    }
}

/// A new socket, trying with back-off until one opens; `None` (Slack
/// failed, with its reason) when the app token is rejected.
async fn open_socket(
    api: &SlackApi,
    start: &PlatformStart,
    backoff: &mut Backoff,
) -> Option<Socket> {
    loop {
        match open_once(api).await {
            Ok(ws) => return Some(ws),
            Err(OpenError::Fatal(why)) => {
                failed(start, why);
                return None;
            }
            Err(OpenError::Later(why)) => {
                let wait = backoff.next_wait();
                log::warn!("{NAME}: {why}; again in {} ms", wait.as_millis());
                start.status.set(NAME, LinkState::Connecting, Some(why));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One Socket Mode connection, from connect to its end.
async fn connection(
    mut ws: Socket,
    api: &SlackApi,
    me: &Addr<SlackActor>,
    start: &PlatformStart,
    backoff: &mut Backoff,
) -> Ended {
    // Acknowledgements that wait for a reply (slash commands) come back here.
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<String>();
    let mut buf = BytesMut::new();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    let mut last_pong = Instant::now();
    let hello_by = Instant::now() + HELLO_TIMEOUT;
    let mut greeted = false;
    loop {
        let event = tokio::select! {
            _ = ping.tick() => {
                if last_pong.elapsed() > PING_INTERVAL * STALE_PINGS {
                    return Ended::Lost("no pong from Slack".into());
                }
                if !greeted && Instant::now() > hello_by {
                    return Ended::Lost("no hello from Slack".into());
                }
                if ws.send(WsMessage::Ping(bytes::Bytes::new())).await.is_err() {
                    return Ended::Lost("the socket broke".into());
                }
                continue;
            }
            Some(a) = ack_rx.recv() => {
                if ws.send(WsMessage::Text(a.into())).await.is_err() {
                    return Ended::Lost("the socket broke".into());
                }
                continue;
            }
            e = next_event(&mut ws, &mut buf, MAX_FRAME_BYTES) => e,
        };
        let text = match event {
            WsEvent::Message(t) => t,
            WsEvent::Pong => {
                last_pong = Instant::now();
                continue;
            }
            WsEvent::Closed(code) => {
                return Ended::Lost(format!("Slack closed the socket ({code})"));
            }
            WsEvent::Ended => return Ended::Lost("the socket closed".into()),
        };
        last_pong = Instant::now();
        let envelope = match sl::parse_envelope(&text) {
            Ok(e) => e,
            Err(e) => {
                log::warn!("{NAME}: a socket message that is not an envelope was ignored ({e})");
                continue;
            }
        };
        // Acknowledge first, then work: Slack wants it within 3 s.
        let ack = match &envelope {
            Envelope::Event { envelope_id, .. } | Envelope::Other { envelope_id, .. } => {
                Some(sl::ack(envelope_id, None))
            }
            _ => None,
        };
        if let Some(a) = ack
            && ws.send(WsMessage::Text(a.into())).await.is_err()
        {
            return Ended::Lost("the socket broke".into());
        }
        let delivered = match envelope {
            Envelope::Hello => {
                greeted = true;
                backoff.reset();
                start.status.set(NAME, LinkState::Connected, None);
                log::info!("{NAME}: connected (Socket Mode)");
                Ok(())
            }
            Envelope::Disconnect { reason } => {
                // Open the next socket while this one still delivers (what
                // it does not acknowledge now, Slack sends again there).
                log::info!("{NAME}: Slack will close this connection ({reason})");
                return match open_once(api).await {
                    Ok(next) => Ended::Replaced(next),
                    Err(OpenError::Fatal(why)) => Ended::Failed(why),
                    Err(OpenError::Later(why)) => Ended::Lost(why),
                };
            }
            Envelope::Event {
                event_id, event, ..
            } => me.send(EventIn { event_id, event }).await,
            Envelope::Slash {
                envelope_id,
                payload,
            } => {
                let (tx, rx) = oneshot::channel::<String>();
                let acks = ack_tx.clone();
                actix::spawn(async move {
                    let reply = tokio::time::timeout(SLASH_REPLY_WAIT, rx).await;
                    let payload = match reply {
                        Ok(Ok(text)) => Some(sl::slash_reply(&text)),
                        _ => None,
                    };
                    let _ = acks.send(sl::ack(&envelope_id, payload.as_ref()));
                });
                me.send(SlashIn { payload, ack: tx }).await
            }
            Envelope::Other { kind, .. } => {
                log::debug!("{NAME}: acknowledged a {kind} envelope");
                Ok(())
            }
            Envelope::Ignored(kind) => {
                log::debug!("{NAME}: ignored a {kind} message");
                Ok(())
            }
        };
        if delivered.is_err() {
            return Ended::Stopped;
        }
    }
}
