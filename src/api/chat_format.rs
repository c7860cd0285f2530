//! Chat Completions on the wire: request parsing and response/chunk framing.
//!
//! Pure logic, no actix: [`parse_request`] turns a client's JSON into a turn
//! (ephemeral system prompt, history, user input) with 400s that name the
//! field; [`ChunkFramer`] turns agent events into `chat.completion.chunk`
//! frames. Chunks are assembled from pre-rendered prefixes so relaying a delta
//! costs one string escape, not a JSON tree.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::sampling::{ModelParams, chat_params};
use crate::agent::{AgentEvent, INTERRUPTED_MARK, TurnOutcome, TurnStatus};
use crate::config::ToolProgress;
use crate::openai::{Content, FunctionCall, Message, Role, ToolCall, Usage};

/// A parsed `POST /v1/chat/completions` request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// Echoed in responses; does not pick the upstream model.
    pub model: String,
    /// `system` and `developer` messages joined with `\n`.
    pub system: Option<String>,
    /// Messages before the last user message.
    pub history: Vec<Message>,
    /// The last user message: the turn's input.
    pub user: Message,
    pub stream: bool,
    pub include_usage: bool,
    /// Sampling parameters and tool choice for every upstream call of the turn.
    pub params: ModelParams,
}

fn role_of(v: &Value, i: usize) -> Result<&str, ApiError> {
    match v.get("role") {
        Some(Value::String(r)) => Ok(r.as_str()),
        Some(_) => Err(ApiError::invalid(
            format!("messages[{i}].role must be a string"),
            format!("messages[{i}].role"),
        )),
        None => Err(ApiError::invalid(
            format!("messages[{i}].role is required"),
            format!("messages[{i}].role"),
        )),
    }
}

/// Parses a message's content: a string, null, or parts (`text` joined with
/// `\n`, `image_url` kept as sent; anything else is a 400).
fn parse_content(v: Option<&Value>, i: usize) -> Result<Option<Content>, ApiError> {
    let param = || format!("messages[{i}].content");
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(Content::Text(s.clone()))),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            let mut has_image = false;
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") | Some("input_text") => match p.get("text") {
                        Some(Value::String(t)) => texts.push(t.clone()),
                        _ => {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content[{j}].text must be a string"),
                                param(),
                            ));
                        }
                    },
                    Some("image_url") => {
                        let url = p
                            .pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        let ok = url.starts_with("http://")
                            || url.starts_with("https://")
                            || url.starts_with("data:image/");
                        if !ok {
                            return Err(ApiError::bad_request(
                                format!(
                                    "messages[{i}].content[{j}].image_url.url must be an http(s) or data:image/ URL"
                                ),
                                "invalid_image_url",
                                Some(&param()),
                            ));
                        }
                        has_image = true;
                    }
                    other => {
                        return Err(ApiError::bad_request(
                            format!(
                                "Unsupported content part type {} in messages[{i}].content[{j}]; use text or image_url",
                                other.map_or("(missing)".to_string(), |t| format!("`{t}`"))
                            ),
                            "unsupported_content_type",
                            Some(&param()),
                        ));
                    }
                }
            }
            if has_image {
                // Images go upstream exactly as the client sent them.
                let kept = parts
                    .iter()
                    .map(|p| {
                        if p.get("type").and_then(Value::as_str) == Some("input_text") {
                            json!({"type": "text", "text": p.get("text")})
                        } else {
                            p.clone()
                        }
                    })
                    .collect();
                Ok(Some(Content::Parts(kept)))
            } else {
                Ok(Some(Content::Text(texts.join("\n"))))
            }
        }
        Some(_) => Err(ApiError::invalid(
            format!("messages[{i}].content must be a string or an array of parts"),
            param(),
        )),
    }
}

fn parse_tool_calls(v: Option<&Value>, i: usize) -> Result<Vec<ToolCall>, ApiError> {
    let Some(Value::Array(calls)) = v else {
        return Ok(Vec::new());
    };
    calls
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let bad = || {
                ApiError::invalid(
                    format!("messages[{i}].tool_calls[{j}] needs an id and a function name"),
                    format!("messages[{i}].tool_calls"),
                )
            };
            let id = c.get("id").and_then(Value::as_str).ok_or_else(bad)?;
            let name = c
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            let arguments = match c.pointer("/function/arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "{}".into(),
                Some(other) => other.to_string(),
            };
            Ok(ToolCall {
                id: id.into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.into(),
                    arguments,
                },
            })
        })
        .collect()
}

/// Accepts booleans and the strings `"true"`/`"false"`.
fn parse_bool(v: Option<&Value>, param: &str) -> Result<bool, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ApiError::invalid(
            format!("{param} must be a boolean"),
            param,
        )),
    }
}

/// Parses a request body. `default_model` is echoed when the client names none.
pub fn parse_request(body: &Value, default_model: &str) -> Result<ChatRequest, ApiError> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => default_model.to_string(),
        Some(_) => return Err(ApiError::invalid("model must be a string", "model")),
    };
    let stream = parse_bool(body.get("stream"), "stream")?;
    let params = chat_params(body)?;
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(o @ Value::Object(_)) => {
            parse_bool(o.get("include_usage"), "stream_options.include_usage")?
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "stream_options must be an object",
                "stream_options",
            ));
        }
    };
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid("messages must not be empty", "messages"));
        }
        Some(_) => return Err(ApiError::invalid("messages must be an array", "messages")),
        None => return Err(ApiError::invalid("messages is required", "messages")),
    };

    let mut system = Vec::new();
    let mut convo = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        if !m.is_object() {
            return Err(ApiError::invalid(
                format!("messages[{i}] must be an object"),
                format!("messages[{i}]"),
            ));
        }
        let role = role_of(m, i)?;
        let content = parse_content(m.get("content"), i)?;
        match role {
            "system" | "developer" => {
                let text = content.map(|c| c.text()).unwrap_or_default();
                if !text.trim().is_empty() {
                    system.push(text);
                }
            }
            "user" => convo.push(Message {
                role: Role::User,
                content,
                tool_calls: Vec::new(),
                tool_call_id: None,
            }),
            "assistant" => {
                let tool_calls = parse_tool_calls(m.get("tool_calls"), i)?;
                convo.push(Message {
                    role: Role::Assistant,
                    content,
                    tool_calls,
                    tool_call_id: None,
                });
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("messages[{i}].tool_call_id is required for tool messages"),
                            format!("messages[{i}].tool_call_id"),
                        )
                    })?;
                convo.push(Message {
                    role: Role::Tool,
                    content: Some(Content::Text(content.map(|c| c.text()).unwrap_or_default())),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(id.into()),
                });
            }
            other => {
                return Err(ApiError::invalid(
                    format!(
                        "messages[{i}].role `{other}` is not one of system, developer, user, assistant, tool"
                    ),
                    format!("messages[{i}].role"),
                ));
            }
        }
    }
    let no_user = || ApiError::invalid("No user message found in messages", "messages");
    let user = match convo.pop() {
        Some(m) if m.role == Role::User && has_visible_content(&m) => m,
        _ => return Err(no_user()),
    };
    Ok(ChatRequest {
        model,
        system: (!system.is_empty()).then(|| system.join("\n")),
        history: convo,
        user,
        stream,
        include_usage,
        params,
    })
}

fn has_visible_content(m: &Message) -> bool {
    match &m.content {
        Some(Content::Text(t)) => !t.trim().is_empty(),
        Some(Content::Parts(p)) => !p.is_empty(),
        None => false,
    }
}

/// `finish_reason` for an outcome. An interrupted turn stopped (clients read
/// `length` as "the token limit was hit"); its text carries
/// [`INTERRUPTED_MARK`] instead.
pub fn finish_reason(status: TurnStatus) -> &'static str {
    match status {
        TurnStatus::Completed | TurnStatus::Cancelled => "stop",
        TurnStatus::Incomplete | TurnStatus::Failed => "length",
    }
}

/// The answer text a client gets: an interrupted one is marked as such.
pub fn answer_text(outcome: &TurnOutcome) -> String {
    if outcome.status == TurnStatus::Cancelled {
        format!("{}{INTERRUPTED_MARK}", outcome.text)
            .trim_start()
            .to_string()
    } else {
        outcome.text.clone()
    }
}

/// The non-streaming response body.
pub fn completion_body(id: &str, created: u64, model: &str, outcome: &TurnOutcome) -> Bytes {
    let body = CompletionOut {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [ChoiceOut {
            index: 0,
            message: MessageOut {
                role: "assistant",
                content: answer_text(outcome),
            },
            logprobs: None,
            finish_reason: finish_reason(outcome.status),
        }],
        usage: &outcome.usage,
    };
    // Serialised straight from borrowed fields: building a `Value` tree
    // and printing it through `Display` was 3 % of a plain request's CPU.
    // These fields cannot fail to serialise.
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// A `chat.completion` object, as [`completion_body`] writes it.
#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut; 1],
    /// Serialises as Chat Completions shows usage, `"estimated": true`
    /// included when some of it is our estimate.
    usage: &'a Usage,
}

#[derive(Serialize)]
struct ChoiceOut {
    index: u32,
    message: MessageOut,
    /// Always `null`: no log probabilities are relayed.
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct MessageOut {
    role: &'static str,
    content: String,
}

/// Usage as Chat Completions shows it; `"estimated": true` when some of it
/// is our estimate because the model server reported none.
fn usage_json(u: &Usage) -> String {
    serde_json::to_string(u).unwrap_or_default()
}

/// One SSE frame of a chat stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `data: <json>` (no event name, as strict clients require).
    Data(String),
    /// `event: <name>` + `data: <json>` (opt-in tool progress only).
    Named(&'static str, String),
    /// A journaled event (`event: <kind>` + `data`), with `id: <seq>`
    /// when `with_id` (run events, which clients resume by id).
    Logged {
        event: std::sync::Arc<crate::journal::Event>,
        with_id: bool,
    },
}

/// The event name of tool-progress frames.
pub const TOOL_PROGRESS_EVENT: &str = "hermes.tool.progress";

/// Turns agent events into `chat.completion.chunk` frames.
pub struct ChunkFramer {
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,` (with `"usage":null,` when asked).
    prefix: String,
    include_usage: bool,
    progress: ToolProgress,
    /// A tool batch happened after text: the next text starts a new paragraph.
    pending_break: bool,
    sent_text: bool,
}

impl ChunkFramer {
    /// A framer for one stream.
    pub fn new(
        id: &str,
        created: u64,
        model: &str,
        include_usage: bool,
        progress: ToolProgress,
    ) -> Self {
        let mut prefix = format!(
            "{{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{},",
            json_str(id),
            json_str(model)
        );
        if include_usage {
            prefix.push_str("\"usage\":null,");
        }
        Self {
            prefix,
            include_usage,
            progress,
            pending_break: false,
            sent_text: false,
        }
    }

    fn chunk(&self, delta: &str, finish: Option<&str>) -> Frame {
        let finish = finish.map_or("null".to_string(), json_str);
        Frame::Data(format!(
            "{}\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}",
            self.prefix
        ))
    }

    /// The first frame: the assistant role.
    pub fn role(&self) -> Frame {
        self.chunk("{\"role\":\"assistant\",\"content\":\"\"}", None)
    }

    /// Frames for one agent event (none for events the client does not see).
    pub fn event(&mut self, ev: &AgentEvent, out: &mut VecDeque<Frame>) {
        match ev {
            AgentEvent::TextDelta(t) => {
                if t.is_empty() {
                    return;
                }
                let text = if self.pending_break && self.sent_text {
                    format!("\n\n{t}")
                } else {
                    t.clone()
                };
                self.pending_break = false;
                self.sent_text = true;
                out.push_back(self.chunk(&format!("{{\"content\":{}}}", json_str(&text)), None));
            }
            AgentEvent::SegmentBreak => self.pending_break = true,
            AgentEvent::ReasoningDelta(r) if self.progress == ToolProgress::Reasoning => {
                out.push_back(
                    self.chunk(&format!("{{\"reasoning_content\":{}}}", json_str(r)), None),
                );
            }
            AgentEvent::ToolStarted(t) => match self.progress {
                ToolProgress::Off => {}
                ToolProgress::Events => {
                    out.push_back(progress_frame(&t.name, &t.call_id, &t.preview, "running"));
                }
                ToolProgress::Reasoning => {
                    let line = format!("🔧 {}\n", label(&t.name, &t.preview));
                    out.push_back(self.chunk(
                        &format!("{{\"reasoning_content\":{}}}", json_str(&line)),
                        None,
                    ));
                }
            },
            AgentEvent::ToolFinished(t) if self.progress == ToolProgress::Events => {
                out.push_back(progress_frame(&t.name, &t.call_id, "", "completed"));
            }
            _ => {}
        }
    }

    /// The closing frames after a turn ended with text (completed,
    /// incomplete, or cancelled at shutdown: then the interrupted mark first),
    /// the finish chunk and the optional usage chunk.
    pub fn finish(&self, status: TurnStatus, usage: &Usage, out: &mut VecDeque<Frame>) {
        if status == TurnStatus::Cancelled {
            let mark = if self.sent_text {
                INTERRUPTED_MARK
            } else {
                INTERRUPTED_MARK.trim_start()
            };
            out.push_back(self.chunk(&format!("{{\"content\":{}}}", json_str(mark)), None));
        }
        out.push_back(self.chunk("{}", Some(finish_reason(status))));
        if self.include_usage {
            // The usage chunk replaces `"usage":null` with the figures.
            let prefix = self.prefix.trim_end_matches("\"usage\":null,");
            out.push_back(Frame::Data(format!(
                "{prefix}\"choices\":[],\"usage\":{}}}",
                usage_json(usage)
            )));
        }
    }

    /// The error chunk for a turn that failed after the stream started.
    pub fn error(&self, e: &ApiError) -> Frame {
        Frame::Data(e.body().to_string())
    }
}

fn label(name: &str, preview: &str) -> String {
    if preview.is_empty() {
        name.to_string()
    } else {
        format!("{name}: {preview}")
    }
}

fn progress_frame(name: &str, call_id: &str, preview: &str, status: &str) -> Frame {
    Frame::Named(
        TOOL_PROGRESS_EVENT,
        json!({"tool": name, "toolCallId": call_id, "label": label(name, preview), "status": status}).to_string(),
    )
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ChatRequest, ApiError> {
        parse_request(&v, "hermes-agent")
    }

    #[test]
    fn layering_history_and_input() {
        let r = parse(json!({"model":"x","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"developer","content":[{"type":"text","text":"Use French."}]},
            {"role":"user","content":"hi"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"t","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"result"},
            {"role":"assistant","content":"hello"},
            {"role":"user","content":[{"type":"text","text":"line1"},{"type":"text","text":"line2"}]}
        ],"stream":"true","temperature":0.2,"n":1}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.system.as_deref(), Some("Be brief.\nUse French."));
        assert_eq!(r.history.len(), 4);
        assert_eq!(r.history[1].tool_calls[0].id, "c1");
        assert_eq!(r.history[2].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(r.user.text(), "line1\nline2");
        assert!(r.stream);
        assert_eq!(r.model, "x");
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(json!({}))
            .err()
            .unwrap_or_else(ApiError::unauthorized);
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = parse(json!({"messages":[]}))
            .err()
            .unwrap_or_else(ApiError::unauthorized);
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = parse(json!({"messages":[{"role":"assistant","content":"x"}]}))
            .err()
            .unwrap_or_else(ApiError::unauthorized);
        assert_eq!(e.message, "No user message found in messages");
        let e = parse(json!({"messages":[{"role":"user","content":"  "}]}))
            .err()
            .unwrap_or_else(ApiError::unauthorized);
        assert_eq!(e.message, "No user message found in messages");
        let e = parse(json!({"messages":[{"role":"user","content":[{"type":"input_audio"}]}]}))
            .err()
            .unwrap_or_else(ApiError::unauthorized);
        assert_eq!(e.code, Some("unsupported_content_type"));
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        let e = parse(json!({"messages":[{"role":"user","content":"x"}],"stream":3}))
            .err()
            .unwrap_or_else(ApiError::unauthorized);
        assert_eq!(e.param.as_deref(), Some("stream"));
        let e = parse(json!({"messages":"hi"}))
            .err()
            .unwrap_or_else(ApiError::unauthorized);
        assert_eq!(e.status.as_u16(), 400);
    }

    #[test]
    fn images_pass_through() {
        let r = parse(json!({"messages":[{"role":"user","content":[
            {"type":"text","text":"what is this?"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}))
        .unwrap_or_else(|e| panic!("{e}"));
        match &r.user.content {
            Some(Content::Parts(p)) => {
                assert_eq!(p[1]["image_url"]["url"], "data:image/png;base64,AAAA")
            }
            other => panic!("{other:?}"),
        }
    }

    /// The JSON of each data frame (`null` for named ones).
    fn parsed(out: &VecDeque<Frame>) -> Vec<Value> {
        out.iter()
            .map(|fr| match fr {
                Frame::Data(d) => serde_json::from_str(d).unwrap_or(Value::Null),
                Frame::Named(..) | Frame::Logged { .. } => Value::Null,
            })
            .collect()
    }

    #[test]
    fn frames_are_valid_chunks() {
        let mut f = ChunkFramer::new("chatcmpl-1", 7, "m", true, ToolProgress::Off);
        let mut out = VecDeque::from([f.role()]);
        f.event(&AgentEvent::TextDelta("a\"b".into()), &mut out);
        f.event(&AgentEvent::SegmentBreak, &mut out);
        f.event(&AgentEvent::TextDelta("c".into()), &mut out);
        f.finish(
            TurnStatus::Completed,
            &Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
                total_tokens: 3,
                estimated: false,
            },
            &mut out,
        );
        let v = parsed(&out);
        assert_eq!(v[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(v[1]["choices"][0]["delta"]["content"], "a\"b");
        assert_eq!(v[2]["choices"][0]["delta"]["content"], "\n\nc");
        assert_eq!(v[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(v[3]["usage"], Value::Null);
        assert_eq!(v[4]["choices"], json!([]));
        assert_eq!(v[4]["usage"]["total_tokens"], 3);
        for x in &v {
            assert_eq!(x["id"], "chatcmpl-1");
            assert_eq!(x["created"], 7);
            assert_eq!(x["object"], "chat.completion.chunk");
        }
    }

    #[test]
    fn an_interrupted_stream_stops_with_the_mark_not_length() {
        let mut f = ChunkFramer::new("c", 1, "m", false, ToolProgress::Off);
        let mut out = VecDeque::new();
        f.event(&AgentEvent::TextDelta("half".into()), &mut out);
        f.finish(TurnStatus::Cancelled, &Usage::default(), &mut out);
        let v = parsed(&out);
        assert_eq!(v[1]["choices"][0]["delta"]["content"], " (interrupted)");
        assert_eq!(v[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish_reason(TurnStatus::Incomplete), "length");
    }
}
