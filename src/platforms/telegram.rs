//! Telegram's wire format, as pure functions: the Bot API's request bodies,
//! its answers (`{"ok", "result" | "description", "parameters"}`) turned into
//! a value or a typed [`PlatformError`], updates turned into [`Inbound`]
//! messages, and what Telegram messages can do ([`CAPABILITIES`]).
//! The HTTP calls themselves live in the Telegram actor, the only code that
//! talks to Telegram.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Capabilities, ChatKind, ChatRef, Inbound, Measure, PaceRules, Parsed, PlatformError};

/// The platform's registry name.
pub const NAME: &str = "telegram";
/// Telegram's message limit, in UTF-16 code units.
pub const MAX_MESSAGE_UNITS: usize = 4096;
/// What Telegram messages can do: 4096 UTF-16 units, edits (about one a
/// second per chat), a typing indicator that expires after 5 s, HTML
/// markup, and about one message a second per chat, twenty a minute per group.
pub const CAPABILITIES: Capabilities = Capabilities {
    max_len: MAX_MESSAGE_UNITS,
    measure: Measure::Utf16,
    edit_floor: Some(Duration::from_secs(1)),
    typing_every: Some(Duration::from_secs(4)),
    render: render_html,
    pace: PaceRules {
        per_chat: Duration::from_secs(1),
        per_group: Duration::from_secs(3),
    },
};
/// Markdown as Telegram HTML (`parse_mode: HTML`).
fn render_html(markdown: &str) -> String {
    super::markup::render(markdown, super::markup::Markup::TelegramHtml)
}

/// Long-poll timeout sent with `getUpdates` (seconds).
pub const POLL_TIMEOUT_S: u64 = 30;
/// How long a `getUpdates` request may take before we give up on it.
pub const POLL_REQUEST_TIMEOUT: Duration = Duration::from_secs(POLL_TIMEOUT_S + 15);
/// How long any other call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Update kinds asked for: messages and edited messages.
pub const ALLOWED_UPDATES: &[&str] = &["message", "edited_message"];
/// The header a webhook request carries its secret in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// The default Bot API server.
pub const DEFAULT_BASE_URL: &str = "https://api.telegram.org";

/// Who the bot is (from `getMe`).
#[derive(Debug, Clone, Default)]
pub struct BotIdentity {
    pub id: i64,
    pub username: String,
}

impl BotIdentity {
    /// From `getMe`'s result.
    pub fn from_me(v: &Value) -> Self {
        Self {
            id: v["id"].as_i64().unwrap_or_default(),
            username: v["username"].as_str().unwrap_or_default().to_string(),
        }
    }
}

/// A Bot API answer: its `result`, or the typed error it means. `status`
/// is the HTTP status (the body's `error_code` wins when present).
pub fn answer(method: &str, status: u16, body: &[u8]) -> Result<Value, PlatformError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        PlatformError::Unavailable(format!(
            "{method}: HTTP {status} with a body that is not JSON"
        ))
    })?;
    if v["ok"].as_bool() == Some(true) {
        return Ok(v["result"].clone());
    }
    let description = v["description"].as_str().unwrap_or("no description");
    let code = v["error_code"].as_u64().map_or(status, |c| c as u16);
    Err(classify(method, code, description, &v["parameters"]))
}

/// The error a failed call means, decided here once.
pub fn classify(method: &str, code: u16, description: &str, parameters: &Value) -> PlatformError {
    let text = format!("{method}: {code} {description}");
    match code {
        429 => {
            let secs = parameters["retry_after"].as_f64().unwrap_or(1.0).max(0.0);
            PlatformError::rate_limited(Duration::from_secs_f64(secs))
        }
        // A token Telegram does not know answers getMe with 404.
        401 => PlatformError::Unauthorized(text),
        404 if method == "getMe" => PlatformError::Unauthorized(text),
        409 => PlatformError::Conflict(text),
        400 if description.contains("message is not modified") => PlatformError::NotModified,
        400 if description.contains("can't parse entities") => PlatformError::FormatRejected(text),
        400 | 403 | 404 => PlatformError::Refused(text),
        _ => PlatformError::Unavailable(text),
    }
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
            platform: NAME,
            chat: ChatRef {
                id: chat_id.to_string(),
                kind,
                thread,
            },
            user_id,
            message_id: message_id.to_string(),
            text,
            whole_chat: false,
        },
        dedup,
    }
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
    fn answers_become_values_or_typed_errors() {
        assert_eq!(
            answer("getMe", 200, br#"{"ok":true,"result":{"id":1}}"#),
            Ok(json!({"id": 1}))
        );
        assert_eq!(
            classify(
                "sendMessage",
                429,
                "Too Many Requests",
                &json!({"retry_after": 3})
            ),
            PlatformError::rate_limited(Duration::from_secs(3))
        );
        assert!(matches!(
            answer(
                "getMe",
                401,
                br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#
            ),
            Err(PlatformError::Unauthorized(_))
        ));
        assert!(matches!(
            classify("getUpdates", 409, "Conflict", &Value::Null),
            PlatformError::Conflict(_)
        ));
        assert_eq!(
            classify(
                "editMessageText",
                400,
                "Bad Request: message is not modified",
                &Value::Null
            ),
            PlatformError::NotModified
        );
        assert!(matches!(
            classify(
                "sendMessage",
                400,
                "Bad Request: can't parse entities: x",
                &Value::Null
            ),
            PlatformError::FormatRejected(_)
        ));
        assert!(matches!(
            answer("sendMessage", 502, b"<html>Bad Gateway</html>"),
            Err(PlatformError::Unavailable(_))
        ));
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
