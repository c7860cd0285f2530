//! Discord's wire format, as pure functions: Gateway (websocket v10, JSON)
//! frames and the bodies the gateway sends (identify, resume, heartbeat),
//! what a close code means, messages and interactions turned into
//! [`Inbound`] values, REST bodies (every message with
//! `allowed_mentions: {"parse": []}` and an idempotency `nonce`), REST
//! answers turned into typed [`PlatformError`]s, the per-route rate-limit
//! buckets, and the slash commands. The websocket and HTTP calls live in the
//! Discord actor, the only code that talks to Discord.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Capabilities, ChatKind, ChatRef, Inbound, Measure, PaceRules, Parsed, PlatformError};

/// The platform's registry name.
pub const NAME: &str = "discord";
/// The REST API, version 10.
pub const DEFAULT_BASE_URL: &str = "https://discord.com/api/v10";
/// The Gateway API version and encoding asked for in the websocket URL.
pub const GATEWAY_QUERY: &str = "v=10&encoding=json";
/// Discord's message limit, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// What Discord messages can do: 2000 characters, edits (5 a channel in
/// 5 s), a typing indicator that lasts 10 s, Markdown rendered by Discord.
pub const CAPABILITIES: Capabilities = Capabilities {
    max_len: MAX_MESSAGE_CHARS,
    measure: Measure::Chars,
    edit_floor: Some(Duration::from_secs(1)),
    typing_every: Some(Duration::from_secs(8)),
    render: render_markdown,
    pace: PaceRules {
        per_chat: Duration::from_secs(1),
        per_group: Duration::from_secs(1),
    },
};
/// Intents: GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES, MESSAGE_CONTENT.
pub const INTENTS: u64 = 1 | (1 << 9) | (1 << 12) | (1 << 15);
/// The largest Gateway message accepted (frames are reassembled up to it).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// The most requests a bot may make in a second, over every route.
pub const GLOBAL_PER_SECOND: u32 = 50;
/// The longest nonce Discord accepts.
const MAX_NONCE_CHARS: usize = 25;
/// Flag of an interaction reply only its user sees.
pub const EPHEMERAL: u64 = 1 << 6;

/// Markdown as Discord shows it.
fn render_markdown(markdown: &str) -> String {
    super::markup::render(markdown, super::markup::Markup::DiscordMarkdown)
}

/// Gateway opcodes.
pub mod op {
    pub const DISPATCH: u64 = 0;
    pub const HEARTBEAT: u64 = 1;
    pub const IDENTIFY: u64 = 2;
    pub const RESUME: u64 = 6;
    pub const RECONNECT: u64 = 7;
    pub const INVALID_SESSION: u64 = 9;
    pub const HELLO: u64 = 10;
    pub const HEARTBEAT_ACK: u64 = 11;
}

/// One Gateway payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub op: u64,
    pub d: Value,
    /// Sequence number of a dispatch.
    pub s: Option<u64>,
    /// Event name of a dispatch.
    pub t: Option<String>,
}

/// Parses one Gateway message.
pub fn parse_frame(text: &str) -> Result<Frame, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let op = v["op"].as_u64().ok_or("no op")?;
    Ok(Frame {
        op,
        d: v.get("d").cloned().unwrap_or(Value::Null),
        s: v["s"].as_u64(),
        t: v["t"].as_str().map(String::from),
    })
}

/// The heartbeat, carrying the last sequence number seen.
pub fn heartbeat(seq: Option<u64>) -> String {
    json!({"op": op::HEARTBEAT, "d": seq}).to_string()
}

/// IDENTIFY: a fresh session.
pub fn identify(token: &str) -> String {
    json!({"op": op::IDENTIFY, "d": {
        "token": token,
        "intents": INTENTS,
        "properties": {"os": std::env::consts::OS, "browser": "hermes", "device": "hermes"},
    }})
    .to_string()
}

/// RESUME: the same session, from `seq` on.
pub fn resume(token: &str, session_id: &str, seq: u64) -> String {
    json!({"op": op::RESUME, "d": {"token": token, "session_id": session_id, "seq": seq}})
        .to_string()
}

/// What a session Discord knows about lets us resume, and who the bot is
/// in it (a resume gets no `READY` to say it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub ready: Ready,
    /// The last dispatch's sequence number.
    pub seq: u64,
}

impl Session {
    /// As stored in `state.db`.
    pub fn to_json(&self) -> Value {
        json!({
            "session_id": self.ready.session_id,
            "resume_url": self.ready.resume_url,
            "bot_id": self.ready.bot_id,
            "application_id": self.ready.application_id,
            "seq": self.seq,
        })
    }

    /// Reads a stored session.
    pub fn from_json(v: &Value) -> Option<Self> {
        let text = |k: &str| v[k].as_str().map(String::from);
        Some(Self {
            ready: Ready {
                session_id: text("session_id")?,
                resume_url: text("resume_url")?,
                bot_id: text("bot_id")?,
                application_id: text("application_id").unwrap_or_default(),
            },
            seq: v["seq"].as_u64()?,
        })
    }
}

/// Who the bot is, and its session, from `READY`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ready {
    pub session_id: String,
    pub resume_url: String,
    pub bot_id: String,
    pub application_id: String,
}

/// Reads `READY`.
pub fn parse_ready(d: &Value) -> Option<Ready> {
    Some(Ready {
        session_id: d["session_id"].as_str()?.to_string(),
        resume_url: d["resume_gateway_url"].as_str().unwrap_or("").to_string(),
        bot_id: d["user"]["id"].as_str()?.to_string(),
        application_id: d["application"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// What to do after the Gateway closed the socket with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterClose {
    /// Reconnect and resume the session.
    Resume,
    /// Reconnect with a fresh IDENTIFY (the session is gone).
    Identify,
    /// Stop: retrying cannot fix this. The reason says what the operator must do.
    Fatal(String),
}

/// The meaning of a Gateway close code.
pub fn after_close(code: u16) -> AfterClose {
    match code {
        4004 => AfterClose::Fatal(
            "Discord rejected the bot token (close 4004); check DISCORD_BOT_TOKEN".into(),
        ),
        4010 | 4011 => AfterClose::Fatal(format!(
            "Discord requires sharding for this bot (close {code}); this gateway connects one shard"
        )),
        4012 => AfterClose::Fatal("Discord refused the Gateway API version (close 4012)".into()),
        4013 => AfterClose::Fatal("Discord refused the intents asked for (close 4013)".into()),
        4014 => AfterClose::Fatal(
            "Discord refused a privileged intent (close 4014): enable the Message Content intent \
             for the bot in the developer portal (Bot → Privileged Gateway Intents)"
                .into(),
        ),
        // Invalid sequence, session timed out: the session cannot be resumed.
        4007 | 4009 => AfterClose::Identify,
        _ => AfterClose::Resume,
    }
}

/// Removes `<@id>` and `<@!id>` mentions of the bot and tidies the spaces.
fn strip_mentions(text: &str, bot_id: &str) -> String {
    text.replace(&format!("<@{bot_id}>"), " ")
        .replace(&format!("<@!{bot_id}>"), " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turns a `MESSAGE_CREATE` into an [`Inbound`]. `parent_of` answers the
/// parent channel of a thread (threads are their own sessions, answered in
/// the thread). In server channels with `require_mention`, only messages
/// that mention the bot or reply to one of its messages are handled.
pub fn parse_message(
    d: &Value,
    bot_id: &str,
    require_mention: bool,
    parent_of: impl Fn(&str) -> Option<String>,
) -> Parsed {
    if d["author"]["bot"].as_bool() == Some(true) {
        return Parsed::Skip("from a bot");
    }
    let Some(author) = d["author"]["id"].as_str() else {
        return Parsed::Skip("no author");
    };
    if author == bot_id {
        return Parsed::Skip("from the gateway itself");
    }
    let (Some(id), Some(channel)) = (d["id"].as_str(), d["channel_id"].as_str()) else {
        return Parsed::Skip("no message or channel id");
    };
    let content = d["content"].as_str().unwrap_or("");
    if content.trim().is_empty() {
        return Parsed::Skip("no text");
    }
    let in_guild = d.get("guild_id").is_some_and(|g| !g.is_null());
    let chat = if !in_guild {
        ChatRef {
            id: channel.to_string(),
            kind: ChatKind::Dm,
            thread: None,
        }
    } else {
        match parent_of(channel) {
            Some(parent) => ChatRef {
                id: parent,
                kind: ChatKind::Channel,
                thread: Some(channel.to_string()),
            },
            None => ChatRef {
                id: channel.to_string(),
                kind: ChatKind::Channel,
                thread: None,
            },
        }
    };
    let mut text = content.to_string();
    if in_guild && require_mention {
        let mentioned = !bot_id.is_empty()
            && (content.contains(&format!("<@{bot_id}>"))
                || content.contains(&format!("<@!{bot_id}>")));
        let replied = d["referenced_message"]["author"]["id"].as_str() == Some(bot_id);
        if !mentioned && !replied {
            return Parsed::Skip("not addressed to the bot");
        }
    }
    if !bot_id.is_empty() {
        text = strip_mentions(&text, bot_id);
    }
    if text.is_empty() {
        return Parsed::Skip("only a mention");
    }
    Parsed::Message {
        inbound: Inbound {
            platform: NAME,
            chat,
            user_id: author.to_string(),
            message_id: id.to_string(),
            text,
            whole_chat: false,
        },
        dedup: id.to_string(),
    }
}

/// Thread channel types (announcement, public, private threads).
const THREAD_TYPES: [u64; 3] = [10, 11, 12];

/// `(thread id, parent channel id)` of a channel object that is a thread.
pub fn thread_of(channel: &Value) -> Option<(String, String)> {
    let kind = channel["type"].as_u64()?;
    if !THREAD_TYPES.contains(&kind) {
        return None;
    }
    Some((
        channel["id"].as_str()?.to_string(),
        channel["parent_id"].as_str()?.to_string(),
    ))
}

/// What a channel object says about being a thread: `(id, Some(parent))`
/// for a thread, `(id, None)` for any other channel.
pub fn kind_of(channel: &Value) -> Option<(String, Option<String>)> {
    let id = channel["id"].as_str()?.to_string();
    Some(match thread_of(channel) {
        Some((_, parent)) => (id, Some(parent)),
        None => (id, None),
    })
}

/// The channels and threads a `GUILD_CREATE` lists, as [`kind_of`] says.
pub fn channels_of_guild(d: &Value) -> Vec<(String, Option<String>)> {
    ["channels", "threads"]
        .iter()
        .flat_map(|k| d[*k].as_array().into_iter().flatten())
        .filter_map(kind_of)
        .collect()
}

/// The Gateway URL to connect to: `url` with the version and encoding
/// asked for (`wss://gateway.discord.gg/?v=10&encoding=json`).
pub fn gateway_target(url: &str) -> String {
    let url = url.trim_end_matches('/');
    let bare_host = url
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.contains(['/', '?']));
    match (url.contains('?'), bare_host) {
        (true, _) => format!("{url}&{GATEWAY_QUERY}"),
        (false, true) => format!("{url}/?{GATEWAY_QUERY}"),
        (false, false) => format!("{url}?{GATEWAY_QUERY}"),
    }
}

/// The channel a reply in `chat` goes to: the thread, or the channel.
pub fn channel_of(chat: &ChatRef) -> &str {
    chat.thread.as_deref().unwrap_or(&chat.id)
}

/// A nonce for `key` (the courier's id of one logical send, the same on
/// every retry): Discord drops a second message with the same nonce.
pub fn nonce(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(MAX_NONCE_CHARS)
        .collect()
}

/// The bot's own messages seen coming back on the Gateway, by nonce: a send
/// whose answer was lost counts as delivered once its message is seen,
/// even after Discord stopped honouring the nonce (a few minutes).
#[derive(Debug, Default)]
pub struct Echoes {
    by_nonce: HashMap<String, String>,
    order: std::collections::VecDeque<String>,
}

/// Echoes remembered (the oldest are forgotten first).
const ECHOES_KEPT: usize = 4096;

impl Echoes {
    /// Remembers that message `id` carried `nonce`.
    pub fn record(&mut self, nonce: &str, id: &str) {
        if self
            .by_nonce
            .insert(nonce.to_string(), id.to_string())
            .is_none()
        {
            self.order.push_back(nonce.to_string());
        }
        while self.order.len() > ECHOES_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_nonce.remove(&old);
            }
        }
    }

    /// The message that carried `nonce`, if it came back.
    pub fn get(&self, nonce: &str) -> Option<&str> {
        self.by_nonce.get(nonce).map(String::as_str)
    }
}

/// The nonce and id of a `MESSAGE_CREATE` the bot itself wrote.
pub fn own_echo<'a>(d: &'a Value, bot_id: &str) -> Option<(&'a str, &'a str)> {
    if d["author"]["id"].as_str()? != bot_id {
        return None;
    }
    Some((d["nonce"].as_str()?, d["id"].as_str()?))
}

/// `POST /channels/{id}/messages`: never pings anyone, replies to
/// `reply_to`, and is idempotent through its nonce.
pub fn message_body(text: &str, reply_to: Option<&str>, key: &str) -> Value {
    let mut body = json!({
        "content": text,
        "allowed_mentions": {"parse": []},
        "nonce": nonce(key),
        "enforce_nonce": true,
    });
    if let Some(r) = reply_to {
        body["message_reference"] = json!({"message_id": r, "fail_if_not_exists": false});
    }
    body
}

/// `PATCH /channels/{id}/messages/{mid}`.
pub fn edit_body(text: &str) -> Value {
    json!({"content": text, "allowed_mentions": {"parse": []}})
}

/// The error a failed REST call means. `body` is the answer's JSON (or
/// null), `retry_after_header` the `Retry-After` header in seconds.
pub fn classify(status: u16, body: &Value, retry_after_header: Option<f64>) -> PlatformError {
    let message = body["message"].as_str().unwrap_or("no message");
    let text = format!("{status} {message}");
    match status {
        429 => {
            let secs = body["retry_after"]
                .as_f64()
                .or(retry_after_header)
                .unwrap_or(1.0)
                .max(0.0);
            PlatformError::RateLimited {
                retry_after: Duration::from_secs_f64(secs),
                global: body["global"].as_bool() == Some(true),
            }
        }
        401 => PlatformError::Unauthorized(text),
        400 | 403 | 404 | 405 => PlatformError::Refused(text),
        _ => PlatformError::Unavailable(text),
    }
}

/// The rate-limit bucket a request falls in before Discord told us: its
/// route with the major parameter (the channel), e.g. `POST /channels/1/messages`.
pub fn route_key(method: &str, path: &str) -> String {
    // Message ids vary per request but share their channel's bucket.
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 4 && parts.get(1) == Some(&"channels") && parts.get(3) == Some(&"messages") {
        parts[4] = "{id}";
    }
    format!("{method} {}", parts.join("/"))
}

/// What the `X-RateLimit-*` headers of an answer said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitHeaders {
    pub bucket: Option<String>,
    pub remaining: Option<u32>,
    /// Seconds until the bucket refills.
    pub reset_after: Option<f64>,
}

/// Per-route buckets and the global limit, from what Discord answers: no
/// request is sent into an exhausted bucket, and never more than
/// [`GLOBAL_PER_SECOND`] a second in all.
#[derive(Debug, Default)]
pub struct Buckets {
    /// Route → the bucket Discord said it is in.
    route_bucket: HashMap<String, String>,
    /// Bucket (or route, before Discord named one) → when it refills, if exhausted.
    exhausted_until: HashMap<String, Instant>,
    /// Nothing goes out before this (a global 429).
    global_until: Option<Instant>,
    /// Requests sent in the current second, and when it started.
    window: (Option<Instant>, u32),
}

/// The major parameter of a route (`POST /channels/1/messages` → `1`):
/// Discord keeps a bucket's limit per major parameter.
fn major_of(route: &str) -> &str {
    let mut parts = route.split(' ').nth(1).unwrap_or("").split('/').skip(1);
    match (parts.next(), parts.next()) {
        (Some("channels" | "guilds" | "webhooks"), Some(id)) => id,
        _ => "",
    }
}

impl Buckets {
    /// The bucket `route` is in: Discord's hash with the major parameter,
    /// or the route itself before Discord named its bucket.
    fn bucket_of(&self, route: &str) -> String {
        match self.route_bucket.get(route) {
            Some(hash) => format!("{hash}:{}", major_of(route)),
            None => route.to_string(),
        }
    }

    /// When a request on `route` may go (`now` if it may go now); counts it.
    pub fn reserve(&mut self, route: &str, now: Instant) -> Instant {
        let mut at = now;
        if let Some(g) = self.global_until {
            at = at.max(g);
        }
        if let Some(t) = self.exhausted_until.get(&self.bucket_of(route)) {
            at = at.max(*t);
        }
        // The global limit: a second's window of GLOBAL_PER_SECOND requests.
        let (start, n) = self.window;
        match start {
            Some(s) if at < s + Duration::from_secs(1) => {
                if n >= GLOBAL_PER_SECOND {
                    at = s + Duration::from_secs(1);
                    self.window = (Some(at), 1);
                } else {
                    self.window = (Some(s), n + 1);
                }
            }
            _ => self.window = (Some(at), 1),
        }
        at
    }

    /// Records what an answer's headers said about `route`'s bucket.
    pub fn update(&mut self, route: &str, h: &LimitHeaders, now: Instant) {
        if let Some(b) = &h.bucket {
            self.route_bucket.insert(route.to_string(), b.clone());
        }
        let bucket = self.bucket_of(route);
        match (h.remaining, h.reset_after) {
            (Some(0), Some(secs)) => {
                self.exhausted_until
                    .insert(bucket, now + Duration::from_secs_f64(secs.max(0.0)));
            }
            (Some(_), _) => {
                self.exhausted_until.remove(&bucket);
            }
            _ => {}
        }
    }

    /// A 429: hold the route's bucket, or everything when global.
    pub fn hold(&mut self, route: &str, retry_after: Duration, global: bool, now: Instant) {
        let until = now + retry_after;
        if global {
            self.global_until = Some(self.global_until.map_or(until, |g| g.max(until)));
        } else {
            let bucket = self.bucket_of(route);
            let e = self.exhausted_until.entry(bucket).or_insert(until);
            *e = (*e).max(until);
        }
    }
}

/// A slash command invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub id: String,
    pub token: String,
    /// The command as its text form, e.g. `/title Trip`.
    pub command: String,
    pub user_id: String,
    pub chat: ChatRef,
}

/// Reads an `INTERACTION_CREATE` that runs one of our commands.
pub fn parse_interaction(
    d: &Value,
    parent_of: impl Fn(&str) -> Option<String>,
) -> Option<Interaction> {
    // 2: an application command.
    if d["type"].as_u64() != Some(2) {
        return None;
    }
    let name = d["data"]["name"].as_str()?;
    let arg = d["data"]["options"]
        .as_array()
        .and_then(|o| o.first())
        .and_then(|o| o["value"].as_str())
        .unwrap_or("");
    let user = d["member"]["user"]["id"]
        .as_str()
        .or_else(|| d["user"]["id"].as_str())?;
    let channel = d["channel_id"].as_str()?;
    let in_guild = d.get("guild_id").is_some_and(|g| !g.is_null());
    let chat = match (in_guild, parent_of(channel)) {
        (false, _) => ChatRef {
            id: channel.to_string(),
            kind: ChatKind::Dm,
            thread: None,
        },
        (true, Some(parent)) => ChatRef {
            id: parent,
            kind: ChatKind::Channel,
            thread: Some(channel.to_string()),
        },
        (true, None) => ChatRef {
            id: channel.to_string(),
            kind: ChatKind::Channel,
            thread: None,
        },
    };
    Some(Interaction {
        id: d["id"].as_str()?.to_string(),
        token: d["token"].as_str()?.to_string(),
        command: format!("/{name} {arg}").trim_end().to_string(),
        user_id: user.to_string(),
        chat,
    })
}

/// The interaction callback: a message (type 4), ephemeral or not.
pub fn callback_body(text: &str, ephemeral: bool) -> Value {
    let mut data = json!({"content": text, "allowed_mentions": {"parse": []}});
    if ephemeral {
        data["flags"] = json!(EPHEMERAL);
    }
    json!({"type": 4, "data": data})
}

/// The slash commands the gateway registers (the same as the text commands).
pub fn commands() -> Value {
    let plain = |name: &str, description: &str| json!({"name": name, "description": description, "type": 1});
    let with_text = |name: &str, description: &str, option: &str| {
        json!({"name": name, "description": description, "type": 1, "options": [
            {"name": option, "description": option, "type": 3, "required": false}
        ]})
    };
    json!([
        plain("new", "Start a new conversation"),
        plain("reset", "Start a new conversation"),
        plain("stop", "Interrupt the running answer"),
        plain("status", "This conversation's age, size, usage and model"),
        plain("help", "The commands"),
        with_text("model", "The model in use", "name"),
        with_text("title", "Name this conversation", "text"),
        plain("approve", "Run the command waiting for approval"),
        plain("deny", "Refuse the command waiting for approval"),
    ])
}

/// Whether the commands Discord has registered differ from ours (names,
/// descriptions and options compared; ids and versions ignored).
pub fn commands_differ(registered: &Value, wanted: &Value) -> bool {
    let shape = |v: &Value| -> Vec<Value> {
        let mut out: Vec<Value> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let options: Vec<Value> = c["options"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| {
                        json!([
                            o["name"],
                            o["description"],
                            o["type"],
                            o["required"].as_bool().unwrap_or(false)
                        ])
                    })
                    .collect();
                json!([c["name"], c["description"], options])
            })
            .collect();
        out.sort_by_key(|c| c[0].as_str().unwrap_or("").to_string());
        out
    };
    shape(registered) != shape(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bots_own_messages_are_remembered_by_nonce_within_a_bound() {
        let d = json!({"id": "m1", "nonce": "n1", "author": {"id": "B"}});
        assert_eq!(own_echo(&d, "B"), Some(("n1", "m1")));
        assert_eq!(own_echo(&d, "U"), None);
        assert_eq!(
            own_echo(&json!({"id": "m2", "author": {"id": "B"}}), "B"),
            None
        );
        let mut e = Echoes::default();
        e.record("n1", "m1");
        assert_eq!(e.get("n1"), Some("m1"));
        for i in 0..ECHOES_KEPT {
            e.record(&format!("x{i}"), "m");
        }
        assert_eq!(e.get("n1"), None, "the oldest is forgotten");
        assert_eq!(e.get(&format!("x{}", ECHOES_KEPT - 1)), Some("m"));
    }

    const BOT: &str = "999";

    fn msg(extra: Value) -> Value {
        let mut m =
            json!({"id": "m1", "channel_id": "c1", "author": {"id": "42"}, "content": "hello"});
        if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        m
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn direct_messages_are_always_handled() {
        match parse_message(&msg(json!({})), BOT, true, none) {
            Parsed::Message { inbound, dedup } => {
                assert_eq!(inbound.chat.session_key(NAME), "agent:main:discord:dm:c1");
                assert_eq!(
                    (inbound.user_id.as_str(), inbound.text.as_str()),
                    ("42", "hello")
                );
                assert_eq!(dedup, "m1");
            }
            Parsed::Skip(why) => panic!("{why}"),
        }
    }

    #[test]
    fn server_channels_need_a_mention_or_a_reply_and_lose_the_mention() {
        let g = |extra: Value| {
            let mut e = json!({"guild_id": "g1"});
            if let (Some(o), Some(x)) = (e.as_object_mut(), extra.as_object()) {
                for (k, v) in x {
                    o.insert(k.clone(), v.clone());
                }
            }
            parse_message(&msg(e), BOT, true, none)
        };
        assert!(matches!(g(json!({})), Parsed::Skip(_)));
        for content in ["<@999> what time is it", "what <@!999> time is it"] {
            match g(json!({"content": content})) {
                Parsed::Message { inbound, .. } => {
                    assert_eq!(inbound.text, "what time is it");
                    assert_eq!(inbound.chat.kind, ChatKind::Channel);
                }
                Parsed::Skip(why) => panic!("{why}"),
            }
        }
        assert!(matches!(
            g(json!({"referenced_message": {"author": {"id": BOT}}})),
            Parsed::Message { .. }
        ));
        assert!(matches!(
            parse_message(&msg(json!({"guild_id": "g1"})), BOT, false, none),
            Parsed::Message { .. }
        ));
    }

    #[test]
    fn bots_and_the_gateway_itself_are_ignored() {
        assert!(matches!(
            parse_message(
                &msg(json!({"author": {"id": "5", "bot": true}})),
                BOT,
                false,
                none
            ),
            Parsed::Skip(_)
        ));
        assert!(matches!(
            parse_message(&msg(json!({"author": {"id": BOT}})), BOT, false, none),
            Parsed::Skip(_)
        ));
    }

    #[test]
    fn threads_are_their_own_sessions() {
        let parent = |c: &str| (c == "t9").then(|| "c1".to_string());
        let m = msg(json!({"guild_id": "g1", "channel_id": "t9", "content": "<@999> hi"}));
        match parse_message(&m, BOT, true, parent) {
            Parsed::Message { inbound, .. } => {
                assert_eq!(
                    inbound.chat.session_key(NAME),
                    "agent:main:discord:channel:c1:t9"
                );
                assert_eq!(channel_of(&inbound.chat), "t9", "answers go in the thread");
            }
            Parsed::Skip(why) => panic!("{why}"),
        }
        assert_eq!(
            thread_of(&json!({"id": "t9", "parent_id": "c1", "type": 11})),
            Some(("t9".into(), "c1".into()))
        );
        assert_eq!(thread_of(&json!({"id": "c1", "type": 0})), None);
        let guild = json!({"channels": [{"id": "c1", "type": 0}],
            "threads": [{"id": "t9", "parent_id": "c1", "type": 11}]});
        assert_eq!(
            channels_of_guild(&guild),
            [
                ("c1".to_string(), None),
                ("t9".to_string(), Some("c1".to_string()))
            ]
        );
    }

    #[test]
    fn gateway_urls_get_the_version_and_encoding() {
        assert_eq!(
            gateway_target("wss://gateway.discord.gg"),
            "wss://gateway.discord.gg/?v=10&encoding=json"
        );
        assert_eq!(
            gateway_target("ws://127.0.0.1:9/resume/"),
            "ws://127.0.0.1:9/resume?v=10&encoding=json"
        );
        assert_eq!(
            gateway_target("ws://h/gw?compress=false"),
            "ws://h/gw?compress=false&v=10&encoding=json"
        );
    }

    #[test]
    fn close_codes() {
        assert!(matches!(after_close(4014), AfterClose::Fatal(r) if r.contains("Message Content")));
        assert!(
            matches!(after_close(4004), AfterClose::Fatal(r) if r.contains("DISCORD_BOT_TOKEN"))
        );
        assert_eq!(after_close(4009), AfterClose::Identify);
        assert_eq!(after_close(4000), AfterClose::Resume);
        assert_eq!(after_close(1006), AfterClose::Resume);
    }

    #[test]
    fn bodies_never_ping_and_carry_a_stable_nonce() {
        let b = message_body("hi", Some("m1"), "0123456789abcdef0123456789abcdef");
        assert_eq!(b["allowed_mentions"], json!({"parse": []}));
        assert_eq!(b["enforce_nonce"], true);
        assert_eq!(b["nonce"].as_str().map(str::len), Some(25));
        assert_eq!(b["message_reference"]["message_id"], "m1");
        assert_eq!(edit_body("x")["allowed_mentions"], json!({"parse": []}));
        assert_eq!(
            message_body("a", None, "k-1")["nonce"],
            message_body("b", None, "k-1")["nonce"]
        );
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(
            classify(429, &json!({"retry_after": 1.5, "global": true}), None),
            PlatformError::RateLimited {
                retry_after: Duration::from_millis(1500),
                global: true
            }
        );
        assert!(matches!(
            classify(401, &Value::Null, None),
            PlatformError::Unauthorized(_)
        ));
        assert!(matches!(
            classify(403, &Value::Null, None),
            PlatformError::Refused(_)
        ));
        assert!(matches!(
            classify(502, &Value::Null, None),
            PlatformError::Unavailable(_)
        ));
    }

    #[test]
    fn buckets_hold_exhausted_routes_and_the_global_limit() {
        let now = Instant::now();
        let mut b = Buckets::default();
        let r = route_key("POST", "/channels/1/messages");
        assert_eq!(b.reserve(&r, now), now);
        b.update(
            &r,
            &LimitHeaders {
                bucket: Some("abc".into()),
                remaining: Some(0),
                reset_after: Some(2.0),
            },
            now,
        );
        assert_eq!(b.reserve(&r, now), now + Duration::from_secs(2));
        // Another route in no bucket yet goes now.
        assert_eq!(
            b.reserve(&route_key("POST", "/channels/2/messages"), now),
            now
        );
        // The same bucket in another channel is another limit.
        let other = route_key("POST", "/channels/3/messages");
        b.update(
            &other,
            &LimitHeaders {
                bucket: Some("abc".into()),
                remaining: Some(4),
                reset_after: Some(2.0),
            },
            now,
        );
        assert_eq!(b.reserve(&other, now), now);
        assert_eq!(b.reserve(&r, now), now + Duration::from_secs(2));
        // Edits of any message in a channel share a route.
        assert_eq!(
            route_key("PATCH", "/channels/1/messages/77"),
            route_key("PATCH", "/channels/1/messages/78")
        );
        b.hold(&r, Duration::from_secs(5), true, now);
        assert_eq!(
            b.reserve(&route_key("POST", "/channels/9/typing"), now),
            now + Duration::from_secs(5)
        );
        // Fifty a second in all.
        let mut g = Buckets::default();
        let t0 = Instant::now();
        for _ in 0..GLOBAL_PER_SECOND {
            assert_eq!(g.reserve("x", t0), t0);
        }
        assert_eq!(g.reserve("x", t0), t0 + Duration::from_secs(1));
    }

    #[test]
    fn interactions_become_text_commands() {
        let d = json!({"id": "i1", "token": "tok", "type": 2, "channel_id": "c1", "guild_id": "g",
            "member": {"user": {"id": "42"}},
            "data": {"name": "title", "options": [{"name": "text", "type": 3, "value": "Trip"}]}});
        let i = parse_interaction(&d, none).unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(i.command, "/title Trip");
        assert_eq!(i.user_id, "42");
        assert_eq!(callback_body("x", true)["data"]["flags"], EPHEMERAL);
        assert!(callback_body("x", false)["data"].get("flags").is_none());
    }

    #[test]
    fn commands_are_compared_by_what_users_see() {
        let mut registered = commands();
        if let Some(a) = registered.as_array_mut() {
            a.reverse();
            for c in a.iter_mut() {
                c["id"] = json!("123");
                c["version"] = json!("1");
            }
        }
        assert!(!commands_differ(&registered, &commands()));
        assert!(commands_differ(&json!([]), &commands()));
    }

    #[test]
    fn frames_and_bodies() {
        let f = parse_frame(r#"{"op":0,"t":"READY","s":1,"d":{"session_id":"s","resume_gateway_url":"wss://r","user":{"id":"999"},"application":{"id":"a"}}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (f.op, f.s, f.t.as_deref()),
            (op::DISPATCH, Some(1), Some("READY"))
        );
        let r = parse_ready(&f.d).unwrap_or_default();
        assert_eq!((r.session_id.as_str(), r.bot_id.as_str()), ("s", "999"));
        let id: Value = serde_json::from_str(&identify("t")).unwrap_or_default();
        assert_eq!(id["d"]["intents"], INTENTS);
        assert_eq!(heartbeat(Some(5)), r#"{"d":5,"op":1}"#);
        let re: Value = serde_json::from_str(&resume("t", "s", 7)).unwrap_or_default();
        assert_eq!(re["d"]["seq"], 7);
        let session = Session { ready: r, seq: 9 };
        assert_eq!(Session::from_json(&session.to_json()), Some(session));
    }
}
