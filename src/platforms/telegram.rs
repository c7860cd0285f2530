//! The Telegram Bot API as plain request/response code: every call is
//! `POST {TELEGRAM_API_BASE_URL}/bot<token>/<method>` with a JSON body, and
//! every answer `{"ok": …, "result" | "description", "parameters"}` becomes
//! a value or a [`PlatformError`]. Also: turning an update into an
//! [`Inbound`], and the polling offset kept in `state.db`.
//!
//! The token is part of every URL, so no URL is ever logged, and every error
//! text passes [`BotApi::scrub`] before it leaves this module.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ChatKind, ChatRef, Inbound, Limits, Measure, PlatformError};
use crate::db::{Db, StoreError};

/// Telegram's message limit, in UTF-16 code units.
pub const MAX_MESSAGE_UNITS: usize = 4096;
/// What Telegram messages can do.
pub const LIMITS: Limits = Limits {
    max_len: MAX_MESSAGE_UNITS,
    measure: Measure::Utf16,
    can_edit: true,
};
/// Long-poll timeout sent with `getUpdates` (seconds).
pub const POLL_TIMEOUT_S: u64 = 30;
/// How long a `getUpdates` request may take before we give up on it.
pub const POLL_REQUEST_TIMEOUT: Duration = Duration::from_secs(POLL_TIMEOUT_S + 15);
/// How long any other call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect timeout for the Bot API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest Bot API answer read (a batch of 100 updates fits easily).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// Update kinds asked for: messages and edited messages.
pub const ALLOWED_UPDATES: &[&str] = &["message", "edited_message"];

/// The default Bot API server.
pub const DEFAULT_BASE_URL: &str = "https://api.telegram.org";

/// Who the bot is (from `getMe`).
#[derive(Debug, Clone, Default)]
pub struct BotIdentity {
    pub id: i64,
    pub username: String,
}

/// A Bot API endpoint with its token.
#[derive(Clone)]
pub struct BotApi {
    base: String,
    token: String,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApi")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl BotApi {
    /// An endpoint at `base` (no trailing slash needed) with `token`.
    pub fn new(base: Option<&str>, token: &str) -> Self {
        Self {
            base: base
                .unwrap_or(DEFAULT_BASE_URL)
                .trim_end_matches('/')
                .to_string(),
            token: token.to_string(),
        }
    }

    /// Removes the token from a text (error messages may quote the URL).
    pub fn scrub(&self, text: &str) -> String {
        if self.token.is_empty() {
            return text.to_string();
        }
        crate::secrets::redact(&text.replace(&self.token, "<token>"))
    }

    /// Calls `method` with `params`; the answer's `result`.
    pub async fn call(
        &self,
        method: &str,
        params: &Value,
        timeout: Duration,
    ) -> Result<Value, PlatformError> {
        let url = format!("{}/bot{}/{method}", self.base, self.token);
        let client = crate::upstream::http_client(CONNECT_TIMEOUT);
        let sent = client.post(&url).timeout(timeout).send_json(params).await;
        let mut resp = sent.map_err(|e| {
            PlatformError::Unavailable(
                self.scrub(&format!("{method}: cannot reach the Bot API: {e}")),
            )
        })?;
        let status = resp.status().as_u16();
        let body = resp.body().limit(MAX_ANSWER_BYTES).await.map_err(|e| {
            PlatformError::Unavailable(self.scrub(&format!("{method}: reading the answer: {e}")))
        })?;
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            PlatformError::Unavailable(format!(
                "{method}: HTTP {status} with a body that is not JSON"
            ))
        })?;
        if v["ok"].as_bool() == Some(true) {
            return Ok(v["result"].clone());
        }
        let description = v["description"]
            .as_str()
            .unwrap_or("no description")
            .to_string();
        let code = v["error_code"].as_u64().map_or(status, |c| c as u16);
        Err(classify(
            method,
            code,
            &self.scrub(&description),
            &v["parameters"],
        ))
    }
}

/// The error a failed call means.
fn classify(method: &str, code: u16, description: &str, parameters: &Value) -> PlatformError {
    let text = format!("{method}: {code} {description}");
    match code {
        429 => {
            let secs = parameters["retry_after"].as_f64().unwrap_or(1.0).max(0.0);
            PlatformError::RateLimited(Duration::from_secs_f64(secs))
        }
        // A token Telegram does not know answers getMe with 404.
        401 => PlatformError::Unauthorized(text),
        404 if method == "getMe" => PlatformError::Unauthorized(text),
        409 => PlatformError::Conflict(text),
        400 | 403 | 404 => PlatformError::Refused(text),
        _ => PlatformError::Unavailable(text),
    }
}

/// "message is not modified": the edit had nothing to change, which is success.
pub fn is_not_modified(e: &PlatformError) -> bool {
    matches!(e, PlatformError::Refused(t) if t.contains("message is not modified"))
}

/// Telegram could not parse the HTML of a message.
pub fn is_parse_error(e: &PlatformError) -> bool {
    matches!(e, PlatformError::Refused(t) if t.contains("can't parse entities"))
}

/// `sendMessage` parameters.
pub fn send_params(chat: &ChatRef, text: &str, html: bool, reply_to: Option<&str>) -> Value {
    let mut p = json!({"chat_id": chat_id_value(&chat.id), "text": text});
    if html {
        p["parse_mode"] = json!("HTML");
    }
    if let Some(t) = &chat.thread {
        p["message_thread_id"] = json!(t.parse::<i64>().unwrap_or_default());
    }
    if let Some(r) = reply_to.and_then(|r| r.parse::<i64>().ok()) {
        p["reply_parameters"] = json!({"message_id": r, "allow_sending_without_reply": true});
    }
    p
}

/// `editMessageText` parameters.
pub fn edit_params(chat: &ChatRef, message_id: &str, text: &str, html: bool) -> Value {
    let mut p = json!({
        "chat_id": chat_id_value(&chat.id),
        "message_id": message_id.parse::<i64>().unwrap_or_default(),
        "text": text,
    });
    if html {
        p["parse_mode"] = json!("HTML");
    }
    p
}

/// `sendChatAction` parameters (typing).
pub fn typing_params(chat: &ChatRef) -> Value {
    let mut p = json!({"chat_id": chat_id_value(&chat.id), "action": "typing"});
    if let Some(t) = &chat.thread {
        p["message_thread_id"] = json!(t.parse::<i64>().unwrap_or_default());
    }
    p
}

/// Chat ids are numbers in the API (usernames like `@channel` stay strings).
fn chat_id_value(id: &str) -> Value {
    id.parse::<i64>().map_or_else(|_| json!(id), |n| json!(n))
}

/// An update turned into what the gateway handles, or why it is skipped.
#[derive(Debug)]
pub enum Parsed {
    /// A message for the router; `dedup` identifies it across redeliveries.
    Message { inbound: Inbound, dedup: String },
    /// Not for us (no text, a bot, not addressed to the bot in a group, ...).
    Skip(&'static str),
}

/// Turns one update into an [`Inbound`]. In groups where `require_mention`
/// is on, only messages that mention the bot or reply to it are handled,
/// and the mention is removed from the text.
pub fn parse_update(update: &Value, me: &BotIdentity, require_mention: bool) -> Parsed {
    let (msg, edited) = match (update.get("message"), update.get("edited_message")) {
        (Some(m), _) => (m, false),
        (None, Some(m)) => (m, true),
        _ => return Parsed::Skip("not a message"),
    };
    let Some(text) = msg["text"].as_str().or_else(|| msg["caption"].as_str()) else {
        return Parsed::Skip("no text");
    };
    if msg["from"]["is_bot"].as_bool() == Some(true) {
        return Parsed::Skip("from a bot");
    }
    let Some(chat_id) = msg["chat"]["id"].as_i64() else {
        return Parsed::Skip("no chat id");
    };
    let Some(message_id) = msg["message_id"].as_i64() else {
        return Parsed::Skip("no message id");
    };
    let user_id = msg["from"]["id"]
        .as_i64()
        .map(|u| u.to_string())
        .unwrap_or_else(|| chat_id.to_string());
    let kind = match msg["chat"]["type"].as_str() {
        Some("private") => ChatKind::Dm,
        Some("channel") => ChatKind::Channel,
        _ => ChatKind::Group,
    };
    let thread = if msg["is_topic_message"].as_bool() == Some(true) {
        msg["message_thread_id"].as_i64().map(|t| t.to_string())
    } else {
        None
    };
    let mut text = text.to_string();
    if kind != ChatKind::Dm && require_mention {
        let handle = format!("@{}", me.username);
        let mentioned = !me.username.is_empty() && text.contains(&handle);
        let replied = msg["reply_to_message"]["from"]["id"].as_i64() == Some(me.id);
        if !mentioned && !replied {
            return Parsed::Skip("not addressed to the bot");
        }
        if mentioned {
            text = text
                .replace(&handle, " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    let dedup = match (edited, msg["edit_date"].as_i64()) {
        (true, Some(d)) => format!("{chat_id}:{message_id}:{d}"),
        _ => format!("{chat_id}:{message_id}"),
    };
    Parsed::Message {
        inbound: Inbound {
            platform: "telegram",
            chat: ChatRef {
                id: chat_id.to_string(),
                kind,
                thread,
            },
            user_id,
            message_id: message_id.to_string(),
            text,
        },
        dedup,
    }
}

/// The `update_id` after the last accepted one (0 when none was stored).
pub async fn load_offset(db: &Db) -> Result<i64, StoreError> {
    db.call(|c| {
        let v: Option<String> = c
            .query_row(
                "SELECT value FROM platform_state WHERE platform = 'telegram' AND key = 'offset'",
                [],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
    })
    .await
}

/// Records the next offset. Queued at once (before the call returns).
pub fn save_offset(db: &Db, offset: i64) -> impl Future<Output = Result<(), StoreError>> + use<> {
    db.call(move |c| {
        c.execute(
            "INSERT INTO platform_state (platform, key, value) VALUES ('telegram', 'offset', ?1)
             ON CONFLICT(platform, key) DO UPDATE SET value = ?1",
            [offset.to_string()],
        )?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> BotIdentity {
        BotIdentity {
            id: 99,
            username: "hermes_bot".into(),
        }
    }

    #[test]
    fn private_message() {
        let u = json!({"update_id": 5, "message": {"message_id": 7, "from": {"id": 42, "is_bot": false},
            "chat": {"id": 42, "type": "private"}, "text": "hello"}});
        match parse_update(&u, &me(), true) {
            Parsed::Message { inbound, dedup } => {
                assert_eq!(
                    inbound.chat.session_key("telegram"),
                    "agent:main:telegram:dm:42"
                );
                assert_eq!(
                    (inbound.user_id.as_str(), inbound.text.as_str()),
                    ("42", "hello")
                );
                assert_eq!(dedup, "42:7");
            }
            Parsed::Skip(why) => panic!("{why}"),
        }
    }

    #[test]
    fn groups_need_a_mention_when_asked_and_lose_it() {
        let group = |text: &str, reply_from: Option<i64>| {
            let mut m = json!({"message_id": 1, "from": {"id": 1}, "chat": {"id": -100, "type": "supergroup"},
                "text": text, "is_topic_message": true, "message_thread_id": 3});
            if let Some(f) = reply_from {
                m["reply_to_message"] = json!({"from": {"id": f}});
            }
            parse_update(&json!({"update_id": 1, "message": m}), &me(), true)
        };
        assert!(matches!(group("hi all", None), Parsed::Skip(_)));
        match group("@hermes_bot what time is it", None) {
            Parsed::Message { inbound, .. } => {
                assert_eq!(inbound.text, "what time is it");
                assert_eq!(
                    inbound.chat.session_key("telegram"),
                    "agent:main:telegram:group:-100:3"
                );
            }
            Parsed::Skip(why) => panic!("{why}"),
        }
        assert!(matches!(
            group("and now?", Some(99)),
            Parsed::Message { .. }
        ));
        assert!(matches!(
            parse_update(
                &json!({"update_id": 1, "message": {"message_id": 1, "from": {"id": 1},
                "chat": {"id": -1, "type": "group"}, "text": "hi"}}),
                &me(),
                false
            ),
            Parsed::Message { .. }
        ));
    }

    #[test]
    fn skips_bots_and_non_text() {
        let bot = json!({"update_id": 1, "message": {"message_id": 1, "from": {"id": 5, "is_bot": true},
            "chat": {"id": 5, "type": "private"}, "text": "x"}});
        assert!(matches!(parse_update(&bot, &me(), false), Parsed::Skip(_)));
        let sticker = json!({"update_id": 1, "message": {"message_id": 1, "from": {"id": 5},
            "chat": {"id": 5, "type": "private"}, "sticker": {}}});
        assert!(matches!(
            parse_update(&sticker, &me(), false),
            Parsed::Skip(_)
        ));
    }

    #[test]
    fn errors_are_classified_and_scrubbed() {
        let api = BotApi::new(None, "123456:SECRET_TOKEN_VALUE");
        assert_eq!(
            api.scrub("GET https://api.telegram.org/bot123456:SECRET_TOKEN_VALUE/getMe failed"),
            "GET https://api.telegram.org/bot<token>/getMe failed"
        );
        assert_eq!(
            classify(
                "sendMessage",
                429,
                "Too Many Requests",
                &json!({"retry_after": 3})
            ),
            PlatformError::RateLimited(Duration::from_secs(3))
        );
        assert!(matches!(
            classify("getMe", 401, "Unauthorized", &Value::Null),
            PlatformError::Unauthorized(_)
        ));
        assert!(matches!(
            classify("getUpdates", 409, "Conflict", &Value::Null),
            PlatformError::Conflict(_)
        ));
        let nm = classify(
            "editMessageText",
            400,
            "Bad Request: message is not modified",
            &Value::Null,
        );
        assert!(is_not_modified(&nm));
        let pe = classify(
            "sendMessage",
            400,
            "Bad Request: can't parse entities: x",
            &Value::Null,
        );
        assert!(is_parse_error(&pe));
    }

    #[test]
    fn send_params_reply_and_topic() {
        let chat = ChatRef {
            id: "-100".into(),
            kind: ChatKind::Group,
            thread: Some("3".into()),
        };
        let p = send_params(&chat, "<b>x</b>", true, Some("7"));
        assert_eq!(p["chat_id"], json!(-100));
        assert_eq!(p["parse_mode"], json!("HTML"));
        assert_eq!(p["message_thread_id"], json!(3));
        assert_eq!(p["reply_parameters"]["message_id"], json!(7));
    }
}
