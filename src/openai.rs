//! OpenAI Chat Completions wire types, as the upstream model server speaks them.
//!
//! Outgoing types ([`Message`], [`ToolCall`]) are exact; incoming ones
//! (`*In`) accept anything a real server sends: every field optional,
//! unknown fields ignored, so a server with extensions never breaks a turn.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A message's content: plain text, or content parts (text, images) kept as
/// the client sent them so they reach the model unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

impl Content {
    /// The visible text: the string, or the `text` parts joined with `\n`.
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// Always serialised, as `""` when absent: some servers require the key
    /// on assistant messages that only carry tool calls, and some reject
    /// `null` there (llama-cpp-python answers 500 "Input should be a valid
    /// string"). OpenAI, vLLM and Ollama accept `""`. Stored transcripts that
    /// hold `null` from older versions are sent as `""` too.
    #[serde(default, serialize_with = "content_or_empty")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(Content::Text(content.into())),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }
    /// A user message with plain text.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }
    /// An assistant answer.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }
    /// An assistant message asking for tools (with any text it said first).
    pub fn assistant_tool_calls(text: &str, calls: Vec<ToolCall>) -> Self {
        let content = if text.is_empty() {
            None
        } else {
            Some(Content::Text(text.to_string()))
        };
        Self {
            role: Role::Assistant,
            content,
            tool_calls: calls,
            tool_call_id: None,
        }
    }
    /// A tool's result for the call `call_id`.
    pub fn tool_result(call_id: &str, text: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.to_string()),
            ..Self::new(Role::Tool, text)
        }
    }
    /// The visible text of the message.
    pub fn text(&self) -> String {
        self.content.as_ref().map(Content::text).unwrap_or_default()
    }

    /// Roughly the bytes the message holds in memory: its text, every part
    /// (images included), its tool calls' arguments and ids. For cache budgets.
    pub fn approx_bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        let content = match &self.content {
            Some(Content::Text(t)) => t.len(),
            Some(Content::Parts(parts)) => parts.iter().map(value_bytes).sum(),
            None => 0,
        };
        let calls: usize = self
            .tool_calls
            .iter()
            .map(|c| OVERHEAD + c.id.len() + c.function.name.len() + c.function.arguments.len())
            .sum();
        OVERHEAD + content + calls + self.tool_call_id.as_ref().map_or(0, String::len)
    }
}

/// Roughly the bytes a JSON value holds: its strings and keys, plus a little per node.
pub fn value_bytes(v: &Value) -> usize {
    const NODE: usize = 16;
    NODE + match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(value_bytes).sum(),
        Value::Object(o) => o.iter().map(|(k, v)| k.len() + value_bytes(v)).sum(),
        _ => 0,
    }
}

fn content_or_empty<S: serde::Serializer>(c: &Option<Content>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => c.serialize(s),
        None => s.serialize_str(""),
    }
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

/// The function part of a tool call; `arguments` is JSON text, as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// Characters per token assumed when a server reports no usage (OpenAI's
/// rule of thumb for English text; documented in the README).
pub const CHARS_PER_TOKEN: usize = 4;

/// Token counts, summed over every upstream call of a turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// True when at least one call's figures are our estimate (the server
    /// reported none), not the server's count. Never read from a server.
    #[serde(default, skip_deserializing, skip_serializing_if = "is_false")]
    pub estimated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Usage {
    /// Adds another call's figures (total recomputed when a server omits it).
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += if other.total_tokens > 0 {
            other.total_tokens
        } else {
            other.prompt_tokens + other.completion_tokens
        };
        self.estimated |= other.estimated;
    }

    /// An estimate for a call the server reported no usage for: the request
    /// body's and the output's characters over [`CHARS_PER_TOKEN`], rounded up.
    pub fn estimate(prompt_chars: usize, completion_chars: usize) -> Self {
        let tokens = |chars: usize| chars.div_ceil(CHARS_PER_TOKEN) as u64;
        let (prompt, completion) = (tokens(prompt_chars), tokens(completion_chars));
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            estimated: true,
        }
    }
}

/// One chunk of a streamed completion.
#[derive(Debug, Default, Deserialize)]
pub struct ChunkIn {
    #[serde(default)]
    pub choices: Vec<ChoiceDeltaIn>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub error: Option<Value>,
}

/// A choice inside a chunk.
#[derive(Debug, Default, Deserialize)]
pub struct ChoiceDeltaIn {
    #[serde(default)]
    pub delta: Option<DeltaIn>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The delta of a chunk.
#[derive(Debug, Default, Deserialize)]
pub struct DeltaIn {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub reasoning: Option<String>,
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDeltaIn>>,
}

/// A fragment of a tool call: id and name first, argument text in pieces.
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallDeltaIn {
    #[serde(default)]
    pub index: Option<usize>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDeltaIn>,
}

/// The function part of a tool-call fragment.
#[derive(Debug, Default, Deserialize)]
pub struct FunctionDeltaIn {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

/// A whole (non-streamed) completion.
#[derive(Debug, Default, Deserialize)]
pub struct CompletionIn {
    #[serde(default)]
    pub choices: Vec<ChoiceIn>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// A choice of a whole completion.
#[derive(Debug, Default, Deserialize)]
pub struct ChoiceIn {
    #[serde(default)]
    pub message: Option<MessageIn>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The message of a whole completion.
#[derive(Debug, Default, Deserialize)]
pub struct MessageIn {
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub reasoning: Option<String>,
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallIn>>,
}

/// A tool call of a whole completion (ids are sometimes missing on small servers).
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallIn {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDeltaIn>,
}

/// Pulls the human-readable message out of an error body: OpenAI's
/// `{"error":{"message"}}`, `{"error":"..."}`, `{"message"}`, or the raw text.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let found = v
            .pointer("/error/message")
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .and_then(Value::as_str);
        if let Some(m) = found {
            return m.to_string();
        }
    }
    let t = text.trim();
    const MAX: usize = 500;
    if t.len() > MAX {
        let mut end = MAX;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &t[..end])
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assistant_tool_calls_serialise_with_empty_content() {
        let m = Message::assistant_tool_calls(
            "",
            vec![ToolCall {
                id: "c1".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "t".into(),
                    arguments: "{}".into(),
                },
            }],
        );
        let v = serde_json::to_value(&m).unwrap_or_default();
        assert_eq!(v["content"], "");
        // A transcript stored with `null` by an older version is sent as `""`.
        let old: Message = serde_json::from_str(
            r#"{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"t","arguments":"{}"}}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_value(&old).unwrap_or_default()["content"],
            ""
        );
        assert_eq!(v["tool_calls"][0]["type"], "function");
        assert!(v.get("tool_call_id").is_none());
    }

    #[test]
    fn sizes_count_images_and_tool_arguments() {
        let image = format!("data:image/png;base64,{}", "A".repeat(4_000_000));
        let m = Message {
            role: Role::User,
            content: Some(Content::Parts(vec![
                serde_json::json!({"type": "image_url", "image_url": {"url": image}}),
            ])),
            tool_calls: Vec::new(),
            tool_call_id: None,
        };
        assert!(m.approx_bytes() > 4_000_000);
        let call = ToolCall {
            id: "c".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "t".into(),
                arguments: "x".repeat(3_000_000),
            },
        };
        assert!(Message::assistant_tool_calls("", vec![call]).approx_bytes() > 3_000_000);
    }

    #[test]
    fn error_message_shapes() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad key"}}"#),
            "bad key"
        );
        assert_eq!(error_message(br#"{"error":"nope"}"#), "nope");
        assert_eq!(error_message(b"plain failure"), "plain failure");
    }

    #[test]
    fn usage_sum() {
        let mut u = Usage::default();
        u.add(&Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            total_tokens: 5,
            estimated: false,
        });
        u.add(&Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
            total_tokens: 0,
            estimated: false,
        });
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 4,
                completion_tokens: 3,
                total_tokens: 7,
                estimated: false,
            }
        );
        u.add(&Usage::estimate(9, 4));
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.estimated),
            (7, 4, true)
        );
    }
}
