//! Slack's wire format, as pure functions: Socket Mode envelopes and their
//! acknowledgements, events turned into [`Inbound`] values (the mention
//! rule, threads, DMs, bots and edits skipped), the `/hermes` slash command,
//! Web API bodies (`chat.postMessage`, `chat.update`, the native streaming
//! methods, the assistant status), Web API answers turned into typed
//! [`PlatformError`]s, the time-bounded de-duplication Slack's redeliveries
//! need, and the app manifest. The websocket and HTTP calls live in the
//! Slack actor, the only code that talks to Slack.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Capabilities, ChatKind, ChatRef, Inbound, Measure, PaceRules, Parsed, PlatformError};

/// The platform's registry name.
pub const NAME: &str = "slack";
/// The Web API.
pub const DEFAULT_BASE_URL: &str = "https://slack.com/api";
/// The longest message part sent (Slack truncates `text` past 40 000).
pub const MAX_MESSAGE_CHARS: usize = 39_000;
/// The most `markdown_text` one streaming call may carry.
pub const MAX_STREAM_CHUNK_CHARS: usize = 12_000;
/// What the thread shows while a turn runs.
pub const STATUS_TEXT: &str = "is thinking…";
/// Slack clears an assistant status after two minutes; it is set again
/// before that.
pub const STATUS_REFRESH: Duration = Duration::from_secs(90);
/// How long event ids and message timestamps are remembered: Slack
/// redelivers unacknowledged events, also after a reconnect.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(3600);
/// The most ids remembered, whatever their age (a flood cannot grow it).
pub const DEDUP_CAPACITY: usize = 100_000;
/// The wait a rate limit without `Retry-After` gets.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The slash command.
pub const COMMAND: &str = "/hermes";

/// What Slack messages can do: 39 000 characters, edits (`chat.update`),
/// an assistant status instead of a typing indicator, mrkdwn; about one
/// message a second per channel.
pub const CAPABILITIES: Capabilities = Capabilities {
    max_len: MAX_MESSAGE_CHARS,
    measure: Measure::Chars,
    edit_floor: Some(Duration::from_secs(1)),
    typing_every: Some(STATUS_REFRESH),
    render: render_markdown,
    pace: PaceRules {
        per_chat: Duration::from_secs(1),
        per_group: Duration::from_secs(1),
    },
};

/// Markdown as Slack's mrkdwn.
fn render_markdown(markdown: &str) -> String {
    super::markup::render(markdown, super::markup::Markup::SlackMrkdwn)
}

/// One Socket Mode message.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    /// The connection is ready.
    Hello,
    /// Slack will close this connection; open another.
    Disconnect { reason: String },
    /// An Events API event.
    Event {
        envelope_id: String,
        event_id: String,
        event: Value,
    },
    /// A slash command; its reply goes in the acknowledgement.
    Slash { envelope_id: String, payload: Value },
    /// Anything else that must still be acknowledged (interactive, unknown).
    Other { envelope_id: String, kind: String },
    /// A message without an envelope id (nothing to acknowledge).
    Ignored(String),
}

/// Parses one Socket Mode message.
pub fn parse_envelope(text: &str) -> Result<Envelope, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let kind = v["type"].as_str().unwrap_or_default().to_string();
    let id = v["envelope_id"].as_str().map(String::from);
    Ok(match (kind.as_str(), id) {
        ("hello", _) => Envelope::Hello,
        ("disconnect", _) => Envelope::Disconnect {
            reason: v["reason"].as_str().unwrap_or("unknown").to_string(),
        },
        ("events_api", Some(envelope_id)) => Envelope::Event {
            envelope_id,
            event_id: v["payload"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            event: v["payload"]["event"].clone(),
        },
        ("slash_commands", Some(envelope_id)) => Envelope::Slash {
            envelope_id,
            payload: v["payload"].clone(),
        },
        (_, Some(envelope_id)) => Envelope::Other { envelope_id, kind },
        (_, None) => Envelope::Ignored(kind),
    })
}

/// The acknowledgement of an envelope, with the reply of a slash command.
pub fn ack(envelope_id: &str, payload: Option<&Value>) -> String {
    match payload {
        Some(p) => json!({"envelope_id": envelope_id, "payload": p}),
        None => json!({"envelope_id": envelope_id}),
    }
    .to_string()
}

/// A slash command's ephemeral reply.
pub fn slash_reply(text: &str) -> Value {
    json!({"response_type": "ephemeral", "text": text})
}

/// Slack escapes `&`, `<` and `>` in message text; the model reads them plain.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The text with every mention of `bot_user` (`<@U…>` or `<@U…|name>`)
/// removed, and whether there was one.
pub fn strip_mention(text: &str, bot_user: &str) -> (String, bool) {
    let open = format!("<@{bot_user}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut found = false;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(end) = after.find('>') else { break };
        // `<@UBOT2>` is someone else: only `>` or `|name>` may follow the id.
        if !(end == 0 || after.starts_with('|')) {
            out.push_str(&rest[..i + open.len()]);
            rest = after;
            continue;
        }
        found = true;
        out.push_str(&rest[..i]);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (out.trim().to_string(), found)
}

/// Whether a channel id is a direct message (`D…`).
fn is_dm(channel: &str, channel_type: Option<&str>) -> bool {
    match channel_type {
        Some(t) => t == "im",
        None => channel.starts_with('D'),
    }
}

/// The chat of a message: a DM is one session whatever the thread, a
/// channel message its thread's session (a top-level one starts a thread
/// under itself); either way answers go in that thread.
fn chat_of(
    channel: &str,
    channel_type: Option<&str>,
    ts: &str,
    thread_ts: Option<&str>,
) -> ChatRef {
    ChatRef {
        id: channel.to_string(),
        kind: if is_dm(channel, channel_type) {
            ChatKind::Dm
        } else {
            ChatKind::Channel
        },
        thread: Some(thread_ts.unwrap_or(ts).to_string()),
    }
}

/// Subtypes of messages people write; every other subtype (bot messages,
/// edits, deletions, joins) never starts a turn.
const USER_SUBTYPES: &[&str] = &["file_share", "thread_broadcast"];

/// A `message` or `app_mention` event as the gateway sees it. In channels
/// with `require_mention`, only messages that mention the bot are for it,
/// except in a thread it already answers in (`bot_in_thread(channel,
/// thread_ts)`). The de-duplication id is the message's `channel:ts`, the
/// same for both event types.
pub fn parse_event(
    event: &Value,
    bot_user: &str,
    require_mention: bool,
    bot_in_thread: impl Fn(&str, &str) -> bool,
) -> Parsed {
    let kind = event["type"].as_str().unwrap_or_default();
    if kind != "message" && kind != "app_mention" {
        return Parsed::Skip("not a message");
    }
    if event.get("bot_id").is_some_and(|b| !b.is_null()) {
        return Parsed::Skip("a bot's message");
    }
    if let Some(sub) = event["subtype"].as_str()
        && !USER_SUBTYPES.contains(&sub)
    {
        return Parsed::Skip("an edit, deletion or other non-user message");
    }
    let (Some(channel), Some(user), Some(ts)) = (
        event["channel"].as_str(),
        event["user"].as_str(),
        event["ts"].as_str(),
    ) else {
        return Parsed::Skip("no channel, user or ts");
    };
    if user == bot_user {
        return Parsed::Skip("the bot's own message");
    }
    let thread_ts = event["thread_ts"].as_str();
    let chat = chat_of(channel, event["channel_type"].as_str(), ts, thread_ts);
    let (text, mentioned) = strip_mention(event["text"].as_str().unwrap_or_default(), bot_user);
    if chat.kind != ChatKind::Dm && require_mention {
        let answered_thread = thread_ts.is_some_and(|t| bot_in_thread(channel, t));
        if !(mentioned || kind == "app_mention" || answered_thread) {
            return Parsed::Skip("not addressed to the bot");
        }
    }
    let text = unescape(&text);
    if text.trim().is_empty() {
        return Parsed::Skip("no text");
    }
    Parsed::Message {
        dedup: format!("{channel}:{ts}"),
        inbound: Inbound {
            platform: NAME,
            chat,
            user_id: user.to_string(),
            message_id: ts.to_string(),
            text,
            whole_chat: false,
        },
    }
}

/// Slack's Stop for an agent session: the chat whose turn to interrupt and
/// who pressed it.
pub fn parse_stop(event: &Value) -> Option<(ChatRef, String)> {
    if event["type"].as_str() != Some("agent_session_stopped") {
        return None;
    }
    let channel = event["channel"].as_str()?;
    let thread = event["thread_ts"].as_str()?;
    let user = event["user"].as_str().unwrap_or_default().to_string();
    Some((chat_of(channel, None, thread, Some(thread)), user))
}

/// A `/hermes` slash command.
#[derive(Debug, Clone, PartialEq)]
pub struct Slash {
    /// The DM it was typed in, or the channel (all of its threads).
    pub chat: ChatRef,
    pub user_id: String,
    /// As the router reads commands: `/new`, `/title x`, `/help` for none.
    pub command: String,
    /// Where replies after the acknowledgement go.
    pub response_url: Option<String>,
    /// The id answers are keyed on (the trigger).
    pub id: String,
}

/// The slash command in a `slash_commands` payload.
pub fn parse_slash(payload: &Value) -> Option<Slash> {
    let channel = payload["channel_id"].as_str()?;
    let user = payload["user_id"].as_str()?;
    let words = payload["text"].as_str().unwrap_or_default().trim();
    let words = words.strip_prefix('/').unwrap_or(words);
    let command = if words.is_empty() {
        "/help".to_string()
    } else {
        format!("/{words}")
    };
    Some(Slash {
        chat: ChatRef {
            id: channel.to_string(),
            kind: if is_dm(channel, None) {
                ChatKind::Dm
            } else {
                ChatKind::Channel
            },
            thread: None,
        },
        user_id: user.to_string(),
        command,
        response_url: payload["response_url"].as_str().map(String::from),
        id: payload["trigger_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// `chat.postMessage`: a message in the chat's thread. `parse: none` keeps
/// `@channel` and friends from pinging anyone.
pub fn post_body(chat: &ChatRef, text: &str, formatted: bool) -> Value {
    let mut b = json!({
        "channel": chat.id,
        "text": text,
        "mrkdwn": formatted,
        "parse": "none",
        "link_names": false,
        "unfurl_links": false,
    });
    if let Some(t) = &chat.thread {
        b["thread_ts"] = json!(t);
    }
    b
}

/// `chat.update`: a message's new text.
pub fn update_body(chat: &ChatRef, ts: &str, text: &str, formatted: bool) -> Value {
    json!({"channel": chat.id, "ts": ts, "text": text, "mrkdwn": formatted, "parse": "none", "link_names": false})
}

/// `chat.startStream`: a streaming message in the chat's thread, for the
/// user who asked.
pub fn start_stream_body(chat: &ChatRef, user: &str, team: &str, text: &str) -> Value {
    json!({
        "channel": chat.id,
        "thread_ts": chat.thread,
        "recipient_user_id": user,
        "recipient_team_id": team,
        "markdown_text": text,
    })
}

/// `chat.appendStream`: only the new text.
pub fn append_stream_body(chat: &ChatRef, ts: &str, text: &str) -> Value {
    json!({"channel": chat.id, "ts": ts, "markdown_text": text})
}

/// `chat.stopStream`, with the last text if any.
pub fn stop_stream_body(chat: &ChatRef, ts: &str, text: Option<&str>) -> Value {
    let mut b = json!({"channel": chat.id, "ts": ts});
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        b["markdown_text"] = json!(t);
    }
    b
}

/// `assistant.threads.setStatus` (`""` clears it).
pub fn status_body(chat: &ChatRef, status: &str) -> Option<Value> {
    let thread = chat.thread.as_ref()?;
    Some(json!({"channel_id": chat.id, "thread_ts": thread, "status": status}))
}

/// Web API errors that mean the token is not good.
const AUTH_ERRORS: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "not_allowed_token_type",
];
/// Web API errors on Slack's side (tried again later).
const SERVER_ERRORS: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// A Web API answer: its JSON when `ok`, else the typed error.
/// `retry_after` is the `Retry-After` header, in seconds.
pub fn classify(
    status: u16,
    body: &Value,
    retry_after: Option<u64>,
) -> Result<Value, PlatformError> {
    let error = body["error"].as_str().unwrap_or_default();
    if status == 429 || error == "ratelimited" {
        let wait = retry_after.map_or(DEFAULT_RETRY_AFTER, Duration::from_secs);
        return Err(PlatformError::rate_limited(wait));
    }
    if status >= 500 {
        return Err(PlatformError::Unavailable(format!("HTTP {status}")));
    }
    if body["ok"].as_bool() == Some(true) {
        return Ok(body.clone());
    }
    if error.is_empty() {
        return Err(PlatformError::Unavailable(format!(
            "HTTP {status} without an answer"
        )));
    }
    if AUTH_ERRORS.contains(&error) {
        return Err(PlatformError::Unauthorized(error.to_string()));
    }
    if SERVER_ERRORS.contains(&error) {
        return Err(PlatformError::Unavailable(error.to_string()));
    }
    if error == "invalid_blocks" || error == "invalid_blocks_format" {
        return Err(PlatformError::FormatRejected(error.to_string()));
    }
    Err(PlatformError::Refused(error.to_string()))
}

/// Ids seen within [`DEDUP_WINDOW`] (event ids, `channel:ts`), bounded by
/// [`DEDUP_CAPACITY`]: Slack redelivers what was not acknowledged in time,
/// and a message arrives as both `message` and `app_mention`.
#[derive(Debug, Default)]
pub struct Recent {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl Recent {
    /// True the first time `id` is seen within the window.
    pub fn first_time(&mut self, id: &str, now: Instant) -> bool {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < DEDUP_WINDOW && self.order.len() < DEDUP_CAPACITY {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains_key(id) {
            return false;
        }
        self.seen.insert(id.to_string(), now);
        self.order.push_back((now, id.to_string()));
        true
    }
}

/// Channel threads the bot answers in (where no mention is needed), the
/// most recent [`THREADS_KEPT`]: a thread forgotten after that many newer
/// ones needs a mention again.
#[derive(Debug, Default)]
pub struct Threads {
    set: std::collections::HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

/// Channel threads remembered.
pub const THREADS_KEPT: usize = 100_000;

impl Threads {
    /// Remembers that the bot answers in `thread` of `channel`.
    pub fn insert(&mut self, channel: &str, thread: &str) {
        let k = (channel.to_string(), thread.to_string());
        if self.set.insert(k.clone()) {
            self.order.push_back(k);
        }
        while self.order.len() > THREADS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Whether the bot answers in `thread` of `channel`.
    pub fn contains(&self, channel: &str, thread: &str) -> bool {
        self.set
            .contains(&(channel.to_string(), thread.to_string()))
    }
}

/// The app manifest to paste into Slack's app settings: Socket Mode, the
/// bot events, the scopes and the `/hermes` command.
pub fn manifest(name: &str) -> Value {
    json!({
        "display_information": {
            "name": name,
            "description": "A tool-using AI agent",
        },
        "features": {
            "app_home": {
                "messages_tab_enabled": true,
                "messages_tab_read_only_enabled": false,
            },
            "bot_user": {"display_name": name, "always_online": true},
            "assistant_view": {"assistant_description": "A tool-using AI agent"},
            "slash_commands": [{
                "command": COMMAND,
                "description": "Talk to the gateway: new, stop, status, model, title, approve, deny, help",
                "usage_hint": "new | stop | status | help",
                "should_escape": false,
            }],
        },
        "oauth_config": {
            "scopes": {
                "bot": [
                    "app_mentions:read",
                    "assistant:write",
                    "channels:history",
                    "chat:write",
                    "commands",
                    "groups:history",
                    "im:history",
                    "im:read",
                    "im:write",
                    "mpim:history",
                ],
            },
        },
        "settings": {
            "event_subscriptions": {
                "bot_events": [
                    "app_mention",
                    "assistant_thread_started",
                    "message.channels",
                    "message.groups",
                    "message.im",
                    "message.mpim",
                ],
            },
            "interactivity": {"is_enabled": true},
            "org_deploy_enabled": false,
            "socket_mode_enabled": true,
            "token_rotation_enabled": false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "UBOT";

    fn msg(extra: Value) -> Value {
        let mut m = json!({"type": "message", "channel": "C1", "channel_type": "channel",
            "user": "U1", "text": "<@UBOT> hi &amp; bye", "ts": "10.1"});
        if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        m
    }

    fn parsed(event: &Value, require_mention: bool) -> Option<Inbound> {
        match parse_event(event, BOT, require_mention, |c, t| c == "C1" && t == "5.0") {
            Parsed::Message { inbound, dedup } => {
                assert_eq!(dedup, format!("{}:{}", inbound.chat.id, inbound.message_id));
                Some(inbound)
            }
            Parsed::Skip(_) => None,
        }
    }

    #[test]
    fn envelopes_and_acks() {
        let e = parse_envelope(
            r#"{"envelope_id":"e1","type":"events_api","payload":{"event_id":"Ev1","event":{"type":"message"}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(e, Envelope::Event { ref envelope_id, ref event_id, .. } if envelope_id == "e1" && event_id == "Ev1")
        );
        assert_eq!(
            parse_envelope(r#"{"type":"hello"}"#).ok(),
            Some(Envelope::Hello)
        );
        assert!(matches!(
            parse_envelope(r#"{"type":"disconnect","reason":"refresh_requested"}"#),
            Ok(Envelope::Disconnect { reason }) if reason == "refresh_requested"
        ));
        assert!(matches!(
            parse_envelope(r#"{"type":"brand_new","envelope_id":"e9"}"#),
            Ok(Envelope::Other { envelope_id, .. }) if envelope_id == "e9"
        ));
        assert!(parse_envelope("nope").is_err());
        assert_eq!(ack("e1", None), r#"{"envelope_id":"e1"}"#);
        let v: Value = serde_json::from_str(&ack("e2", Some(&slash_reply("hi"))))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["payload"]["text"], "hi");
    }

    #[test]
    fn mentions_are_stripped_and_required_in_channels() {
        let m = parsed(&msg(json!({})), true).unwrap_or_else(|| panic!("skipped"));
        assert_eq!(m.text, "hi & bye");
        assert_eq!(m.chat.kind, ChatKind::Channel);
        // A top-level channel message is answered in a thread under it.
        assert_eq!(m.chat.thread.as_deref(), Some("10.1"));
        assert_eq!(m.chat.session_key(NAME), "agent:main:slack:channel:C1:10.1");
        let plain = msg(json!({"text": "hello all"}));
        assert!(parsed(&plain, true).is_none());
        assert!(parsed(&plain, false).is_some());
        // Someone else's mention is not the bot's.
        assert!(parsed(&msg(json!({"text": "<@UBOT2> hi"})), true).is_none());
        assert_eq!(strip_mention("<@UBOT|hermes> go", BOT), ("go".into(), true));
        // In a thread the bot answers, no mention is needed.
        let in_thread = msg(json!({"text": "more", "thread_ts": "5.0", "ts": "6.0"}));
        let m = parsed(&in_thread, true).unwrap_or_else(|| panic!("skipped"));
        assert_eq!(m.chat.thread.as_deref(), Some("5.0"));
        assert!(parsed(&msg(json!({"text": "more", "thread_ts": "7.0"})), true).is_none());
        // app_mention always addresses the bot.
        let mention = msg(json!({"type": "app_mention", "channel_type": null}));
        assert!(parsed(&mention, true).is_some());
    }

    #[test]
    fn dms_are_one_session_answered_in_the_message_thread() {
        let dm = msg(json!({"channel": "D9", "channel_type": "im", "text": "hey", "ts": "3.0"}));
        let m = parsed(&dm, true).unwrap_or_else(|| panic!("skipped"));
        assert_eq!(m.chat.session_key(NAME), "agent:main:slack:dm:D9");
        assert_eq!(m.chat.thread.as_deref(), Some("3.0"));
        let reply = msg(
            json!({"channel": "D9", "channel_type": "im", "text": "hey", "ts": "4.0", "thread_ts": "3.0"}),
        );
        let r = parsed(&reply, true).unwrap_or_else(|| panic!("skipped"));
        assert_eq!(r.chat.session_key(NAME), m.chat.session_key(NAME));
    }

    #[test]
    fn bots_edits_and_other_events_never_start_a_turn() {
        assert!(parsed(&msg(json!({"bot_id": "B1"})), false).is_none());
        assert!(parsed(&msg(json!({"subtype": "bot_message"})), false).is_none());
        assert!(parsed(&msg(json!({"subtype": "message_changed"})), false).is_none());
        assert!(parsed(&msg(json!({"user": "UBOT"})), false).is_none());
        assert!(parsed(&msg(json!({"type": "reaction_added"})), false).is_none());
        assert!(parsed(&msg(json!({"text": "<@UBOT>"})), true).is_none());
        assert!(parsed(&msg(json!({"subtype": "file_share"})), false).is_some());
    }

    #[test]
    fn slash_commands_act_on_the_dm_or_the_whole_channel() {
        let s = parse_slash(&json!({"channel_id": "C1", "user_id": "U1", "text": "stop",
            "response_url": "http://x/r", "trigger_id": "t1"}))
        .unwrap_or_else(|| panic!("none"));
        assert_eq!(s.command, "/stop");
        assert_eq!(s.chat.kind, ChatKind::Channel);
        assert_eq!(s.chat.thread, None);
        let s = parse_slash(&json!({"channel_id": "D1", "user_id": "U1", "text": ""}))
            .unwrap_or_else(|| panic!("none"));
        assert_eq!(s.command, "/help");
        assert_eq!(s.chat.kind, ChatKind::Dm);
        let s = parse_slash(&json!({"channel_id": "D1", "user_id": "U1", "text": "title My chat"}))
            .unwrap_or_else(|| panic!("none"));
        assert_eq!(s.command, "/title My chat");
    }

    #[test]
    fn errors_are_typed() {
        let e = |status, body: Value, ra| classify(status, &body, ra).err();
        assert_eq!(
            e(429, json!({"ok": false, "error": "ratelimited"}), Some(7)),
            Some(PlatformError::rate_limited(Duration::from_secs(7)))
        );
        assert_eq!(
            e(200, json!({"ok": false, "error": "ratelimited"}), None),
            Some(PlatformError::rate_limited(DEFAULT_RETRY_AFTER))
        );
        assert!(matches!(
            e(502, Value::Null, None),
            Some(PlatformError::Unavailable(_))
        ));
        assert!(matches!(
            e(200, json!({"ok": false, "error": "invalid_auth"}), None),
            Some(PlatformError::Unauthorized(_))
        ));
        assert!(matches!(
            e(200, json!({"ok": false, "error": "unknown_method"}), None),
            Some(PlatformError::Refused(t)) if t == "unknown_method"
        ));
        assert!(classify(200, &json!({"ok": true, "ts": "1"}), None).is_ok());
    }

    #[test]
    fn threads_are_remembered_within_a_bound() {
        let mut t = Threads::default();
        t.insert("C1", "1.0");
        t.insert("C1", "1.0");
        assert!(t.contains("C1", "1.0") && !t.contains("C1", "2.0"));
        for i in 0..THREADS_KEPT {
            t.insert("C2", &i.to_string());
        }
        assert!(!t.contains("C1", "1.0"), "the oldest is forgotten");
        assert!(t.contains("C2", &(THREADS_KEPT - 1).to_string()));
    }

    #[test]
    fn recent_ids_are_forgotten_after_an_hour() {
        let mut r = Recent::default();
        let t0 = Instant::now();
        assert!(r.first_time("a", t0));
        assert!(!r.first_time("a", t0 + Duration::from_secs(3599)));
        assert!(r.first_time("b", t0 + Duration::from_secs(3600)));
        assert!(r.first_time("a", t0 + Duration::from_secs(3601)));
    }

    #[test]
    fn bodies() {
        let chat = ChatRef {
            id: "C1".into(),
            kind: ChatKind::Channel,
            thread: Some("1.0".into()),
        };
        let p = post_body(&chat, "hi @channel", true);
        assert_eq!(p["thread_ts"], "1.0");
        assert_eq!(p["parse"], "none");
        assert_eq!(
            start_stream_body(&chat, "U1", "T1", "x")["recipient_team_id"],
            "T1"
        );
        assert!(
            stop_stream_body(&chat, "2.0", Some(""))
                .get("markdown_text")
                .is_none()
        );
        assert_eq!(
            stop_stream_body(&chat, "2.0", Some("end"))["markdown_text"],
            "end"
        );
        assert_eq!(
            status_body(&chat, "").unwrap_or_else(|| panic!("none"))["status"],
            ""
        );
        let m = manifest("Hermes");
        assert_eq!(m["settings"]["socket_mode_enabled"], true);
        assert_eq!(m["features"]["slash_commands"][0]["command"], COMMAND);
    }
}
