//! The Responses API on the wire: request parsing and the response object
//! with its streaming events.
//!
//! Pure logic, no actix. [`parse_request`] turns `input` (a string or items)
//! into chat messages; [`ResponseBuilder`] turns agent events into the event
//! sequence of `api.md` (each frame's `event:` equal to its `type`,
//! `sequence_number` from 0) and builds the final response object, the same
//! one `GET /v1/responses/{id}` returns.

use serde_json::{Map, Value, json};

use super::chat_format::Frame;
use super::error::ApiError;
use super::sampling::{ModelParams, responses_params};
use crate::agent::{AgentEvent, FailureKind, TurnOutcome, TurnStatus};
use crate::clock::unix_now;
use crate::openai::{Content, FunctionCall, Message, Role, ToolCall, Usage};

/// History kept by `truncation: "auto"`.
pub const TRUNCATION_MAX_MESSAGES: usize = 100;

/// A parsed `POST /v1/responses`.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    pub model: String,
    /// This turn's input items, normalised, each with an `id` (for `input_items`).
    pub input_items: Vec<Value>,
    /// Input messages before the last one (appended to the chain's history).
    pub messages: Vec<Message>,
    /// The last input item: a user message or a tool result.
    pub user: Message,
    /// `system`/`developer` messages found in `input`.
    pub system_extra: Option<String>,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub conversation: Option<String>,
    pub store: bool,
    pub truncation_auto: bool,
    pub stream: bool,
    pub metadata: Value,
    /// Sampling parameters and tool choice for every upstream call of the turn.
    pub params: ModelParams,
    /// What the response object echoes of them.
    pub echo: Echo,
}

/// Request settings the response object repeats, as the client sent them.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    pub temperature: Value,
    pub top_p: Value,
    pub max_output_tokens: Value,
    pub tool_choice: Value,
    pub text: Value,
    pub reasoning_effort: Value,
}

impl Default for Echo {
    fn default() -> Self {
        Self {
            temperature: Value::Null,
            top_p: Value::Null,
            max_output_tokens: Value::Null,
            tool_choice: json!("auto"),
            text: json!({"format": {"type": "text"}}),
            reasoning_effort: Value::Null,
        }
    }
}

impl Echo {
    fn of(body: &Value) -> Self {
        let d = Self::default();
        let given = |k: &str| body.get(k).filter(|v| !v.is_null()).cloned();
        Self {
            temperature: given("temperature").unwrap_or(d.temperature),
            top_p: given("top_p").unwrap_or(d.top_p),
            max_output_tokens: given("max_output_tokens").unwrap_or(d.max_output_tokens),
            tool_choice: given("tool_choice").unwrap_or(d.tool_choice),
            text: given("text")
                .filter(|t| t.get("format").is_some_and(|f| !f.is_null()))
                .unwrap_or(d.text),
            reasoning_effort: body
                .pointer("/reasoning/effort")
                .cloned()
                .unwrap_or(d.reasoning_effort),
        }
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn opt_string(body: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(format!("{key} must be a string"), key)),
    }
}

fn opt_bool(body: &Value, key: &str, default: bool) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ApiError::invalid(format!("{key} must be a boolean"), key)),
    }
}

/// A message item's content as chat content plus the normalised parts.
fn message_content(
    content: Option<&Value>,
    role: &str,
    i: usize,
) -> Result<(Content, Vec<Value>), ApiError> {
    let param = format!("input[{i}].content");
    let text_type = if role == "assistant" {
        "output_text"
    } else {
        "input_text"
    };
    match content {
        Some(Value::String(s)) => Ok((
            Content::Text(s.clone()),
            vec![json!({"type": text_type, "text": s})],
        )),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            let mut chat_parts = Vec::new();
            let mut has_image = false;
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        let t = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                            ApiError::invalid(
                                format!("input[{i}].content[{j}].text must be a string"),
                                &param,
                            )
                        })?;
                        texts.push(t.to_string());
                        chat_parts.push(json!({"type": "text", "text": t}));
                    }
                    Some("input_image") => {
                        let url = match p.get("image_url") {
                            Some(Value::String(u)) => Some(u.as_str()),
                            Some(o) => o.get("url").and_then(Value::as_str),
                            None => None,
                        };
                        let url = url.filter(|u| {
                            u.starts_with("http://")
                                || u.starts_with("https://")
                                || u.starts_with("data:image/")
                        });
                        let Some(url) = url else {
                            return Err(ApiError::bad_request(
                                format!(
                                    "input[{i}].content[{j}] needs an http(s) or data:image/ image_url"
                                ),
                                "invalid_image_url",
                                Some(&param),
                            ));
                        };
                        has_image = true;
                        chat_parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    other => {
                        return Err(ApiError::bad_request(
                            format!(
                                "Unsupported content part type {} in input[{i}].content[{j}]; use input_text, output_text or input_image",
                                other.map_or("(missing)".to_string(), |t| format!("`{t}`"))
                            ),
                            "unsupported_content_type",
                            Some(&param),
                        ));
                    }
                }
            }
            let content = if has_image {
                Content::Parts(chat_parts)
            } else {
                Content::Text(texts.join("\n"))
            };
            Ok((content, parts.clone()))
        }
        _ => Err(ApiError::invalid(
            format!("input[{i}].content must be a string or an array of parts"),
            param,
        )),
    }
}

/// Parses the request body.
pub fn parse_request(body: &Value, default_model: &str) -> Result<ResponsesRequest, ApiError> {
    let model = opt_string(body, "model")?.unwrap_or_else(|| default_model.to_string());
    let instructions = opt_string(body, "instructions")?;
    let previous_response_id = opt_string(body, "previous_response_id")?;
    let conversation = match body.get("conversation") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Object(o)) => match o.get("id") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => {
                return Err(ApiError::invalid(
                    "conversation.id must be a non-empty string",
                    "conversation",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::invalid(
                "conversation must be a string or {\"id\": name}",
                "conversation",
            ));
        }
    };
    if conversation.is_some() && previous_response_id.is_some() {
        return Err(ApiError::invalid(
            "Cannot use both 'conversation' and 'previous_response_id'",
            "conversation",
        ));
    }
    let store = opt_bool(body, "store", true)?;
    let stream = opt_bool(body, "stream", false)?;
    let truncation_auto = match body.get("truncation") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "auto" => true,
        Some(Value::String(s)) if s == "disabled" => false,
        Some(_) => {
            return Err(ApiError::invalid(
                "truncation must be \"auto\" or \"disabled\"",
                "truncation",
            ));
        }
    };
    let metadata = match body.get("metadata") {
        Some(m @ Value::Object(_)) => m.clone(),
        _ => json!({}),
    };

    let params = responses_params(body)?;
    let items: Vec<Value> = match body.get("input") {
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(ApiError::invalid("input must not be empty", "input"));
        }
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        Some(Value::Array(a)) if !a.is_empty() => a.clone(),
        Some(Value::Array(_)) => return Err(ApiError::invalid("input must not be empty", "input")),
        Some(_) => {
            return Err(ApiError::invalid(
                "input must be a string or an array of items",
                "input",
            ));
        }
        None => return Err(ApiError::invalid("input is required", "input")),
    };

    let mut normalised = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    let mut system = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item = match item {
            Value::String(s) => json!({"type": "message", "role": "user", "content": s}),
            Value::Object(_) => item.clone(),
            _ => {
                return Err(ApiError::invalid(
                    format!("input[{i}] must be a string or an object"),
                    format!("input[{i}]"),
                ));
            }
        };
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::invalid(
                        format!("input[{i}].role is required"),
                        format!("input[{i}].role"),
                    )
                })?;
                let (content, parts) = message_content(item.get("content"), role, i)?;
                let role = match role {
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    "system" | "developer" => {
                        system.push(content.text());
                        Role::System
                    }
                    other => {
                        return Err(ApiError::invalid(
                            format!(
                                "input[{i}].role `{other}` is not one of user, assistant, system, developer"
                            ),
                            format!("input[{i}].role"),
                        ));
                    }
                };
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| new_id("msg"), String::from);
                let role_name = item.get("role").cloned().unwrap_or(Value::Null);
                normalised.push(json!({"type": "message", "id": id, "role": role_name, "content": parts, "status": "completed"}));
                if role != Role::System {
                    messages.push(Message {
                        role,
                        content: Some(content),
                        tool_calls: Vec::new(),
                        tool_call_id: None,
                    });
                }
            }
            "function_call" => {
                let call_id = item.get("call_id").and_then(Value::as_str);
                let name = item.get("name").and_then(Value::as_str);
                let (Some(call_id), Some(name)) = (call_id, name) else {
                    return Err(ApiError::invalid(
                        format!("input[{i}] (function_call) needs call_id and name"),
                        format!("input[{i}]"),
                    ));
                };
                let arguments = item
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}")
                    .to_string();
                let call = ToolCall {
                    id: call_id.into(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: name.into(),
                        arguments: arguments.clone(),
                    },
                };
                // Consecutive calls belong to one assistant message.
                match messages.last_mut() {
                    Some(m) if m.role == Role::Assistant && !m.tool_calls.is_empty() => {
                        m.tool_calls.push(call)
                    }
                    _ => messages.push(Message::assistant_tool_calls("", vec![call])),
                }
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| new_id("fc"), String::from);
                normalised.push(
                    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
                    "arguments": arguments, "status": "completed"}),
                );
            }
            "function_call_output" => {
                let Some(call_id) = item.get("call_id").and_then(Value::as_str) else {
                    return Err(ApiError::invalid(
                        format!("input[{i}] (function_call_output) needs call_id"),
                        format!("input[{i}].call_id"),
                    ));
                };
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                messages.push(Message::tool_result(call_id, output.clone()));
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| new_id("fco"), String::from);
                normalised.push(json!({"type": "function_call_output", "id": id, "call_id": call_id, "output": output,
                    "status": "completed"}));
            }
            // Reasoning items replayed by clients carry nothing the model needs again.
            "reasoning" => {}
            other => {
                return Err(ApiError::invalid(
                    format!(
                        "input[{i}].type `{other}` is not supported; use message, function_call or function_call_output"
                    ),
                    format!("input[{i}].type"),
                ));
            }
        }
    }
    let user = match messages.pop() {
        Some(m) if m.role == Role::User || m.role == Role::Tool => m,
        _ => {
            return Err(ApiError::invalid(
                "input must end with a user message or a function_call_output",
                "input",
            ));
        }
    };
    Ok(ResponsesRequest {
        model,
        input_items: normalised,
        messages,
        user,
        system_extra: (!system.is_empty()).then(|| system.join("\n")),
        instructions,
        previous_response_id,
        conversation,
        store,
        truncation_auto,
        stream,
        metadata,
        params,
        echo: Echo::of(body),
    })
}

/// Turns tool results whose call is not open in the conversation into user
/// messages, so the upstream never sees a tool message without its call.
pub fn fix_orphan_tool_results(history: &[Message], turn: &mut [Message]) {
    let mut open: Vec<String> = Vec::new();
    let mut check = |m: &mut Message, rewrite: bool| match m.role {
        Role::Assistant => open = m.tool_calls.iter().map(|c| c.id.clone()).collect(),
        Role::Tool => {
            let id = m.tool_call_id.clone().unwrap_or_default();
            if let Some(pos) = open.iter().position(|o| *o == id) {
                open.remove(pos);
            } else if rewrite {
                *m = Message::user(format!("Output of function call {id}:\n{}", m.text()));
            }
        }
        _ => open.clear(),
    };
    for m in history {
        check(&mut m.clone(), false);
    }
    for m in turn.iter_mut() {
        check(m, true);
    }
}

/// `truncation: "auto"`: keeps the last `max` messages, never starting with
/// a tool result whose call was cut off.
pub fn truncate(mut history: Vec<Message>, max: usize) -> Vec<Message> {
    if history.len() > max {
        history.drain(..history.len() - max);
    }
    let lead = history.iter().take_while(|m| m.role == Role::Tool).count();
    history.drain(..lead);
    history
}

/// The open message item while text streams.
struct OpenMessage {
    id: String,
    index: usize,
    text: String,
}

/// Everything of the response object that does not change while it runs.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub store: bool,
    pub truncation_auto: bool,
    pub metadata: Value,
    pub echo: Echo,
}

/// Builds a response from agent events, emitting the streaming events.
pub struct ResponseBuilder {
    head: ResponseHead,
    output: Vec<Value>,
    open: Option<OpenMessage>,
    seq: u64,
}

/// Usage as the Responses API shows it; `"estimated": true` when some of it
/// is our estimate because the model server reported none.
fn usage_json(u: &Usage) -> Value {
    let mut v = json!({"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
           "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
           "total_tokens": u.total_tokens});
    if u.estimated {
        v["estimated"] = Value::Bool(true);
    }
    v
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    };
    json!({"type": "message", "id": id, "role": "assistant", "status": status, "content": content})
}

impl ResponseBuilder {
    /// A builder for one response.
    pub fn new(head: ResponseHead) -> Self {
        Self {
            head,
            output: Vec::new(),
            open: None,
            seq: 0,
        }
    }

    /// The response id.
    pub fn id(&self) -> &str {
        &self.head.id
    }

    fn frame(&mut self, kind: &'static str, fields: Value, out: &mut Vec<Frame>) {
        let mut obj = Map::new();
        obj.insert("type".into(), Value::String(kind.into()));
        obj.insert("sequence_number".into(), Value::from(self.seq));
        if let Value::Object(f) = fields {
            obj.extend(f);
        }
        self.seq += 1;
        out.push(Frame::Named(kind, Value::Object(obj).to_string()));
    }

    /// The response object in a given state.
    pub fn object(
        &self,
        status: &str,
        usage: Option<&Usage>,
        error: Option<Value>,
        incomplete: Option<&str>,
    ) -> Value {
        let output_text: String = self
            .output
            .iter()
            .filter(|i| i["type"] == "message")
            .filter_map(|i| i.pointer("/content/0/text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n");
        json!({
            "id": self.head.id,
            "object": "response",
            "created_at": self.head.created_at,
            "status": status,
            "completed_at": if status == "completed" { Value::from(unix_now()) } else { Value::Null },
            "error": error,
            "incomplete_details": incomplete.map(|r| json!({"reason": r})),
            "instructions": self.head.instructions,
            "model": self.head.model,
            "output": self.output,
            "output_text": output_text,
            "parallel_tool_calls": true,
            "previous_response_id": self.head.previous_response_id,
            "store": self.head.store,
            "temperature": self.head.echo.temperature,
            "top_p": self.head.echo.top_p,
            "max_output_tokens": self.head.echo.max_output_tokens,
            "tool_choice": self.head.echo.tool_choice,
            "tools": [],
            "truncation": if self.head.truncation_auto { "auto" } else { "disabled" },
            "metadata": self.head.metadata,
            "text": self.head.echo.text,
            "reasoning": {"effort": self.head.echo.reasoning_effort, "summary": null},
            "user": null,
            "usage": usage.map(usage_json),
        })
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self, out: &mut Vec<Frame>) {
        let obj = self.object("in_progress", None, None, None);
        self.frame("response.created", json!({"response": obj}), out);
        let obj = self.object("in_progress", None, None, None);
        self.frame("response.in_progress", json!({"response": obj}), out);
    }

    fn open_message(&mut self, out: &mut Vec<Frame>) {
        let id = new_id("msg");
        let index = self.output.len();
        self.output.push(message_item(&id, "", "in_progress"));
        let item = self.output[index].clone();
        self.frame(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
            out,
        );
        self.frame(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}}),
            out,
        );
        self.open = Some(OpenMessage {
            id,
            index,
            text: String::new(),
        });
    }

    fn close_message(&mut self, out: &mut Vec<Frame>) {
        let Some(m) = self.open.take() else { return };
        let part = json!({"type": "output_text", "text": m.text, "annotations": []});
        self.frame(
            "response.output_text.done",
            json!({"item_id": m.id, "output_index": m.index, "content_index": 0, "text": m.text, "logprobs": []}),
            out,
        );
        self.frame(
            "response.content_part.done",
            json!({"item_id": m.id, "output_index": m.index, "content_index": 0, "part": part}),
            out,
        );
        self.output[m.index] = message_item(&m.id, &m.text, "completed");
        let item = self.output[m.index].clone();
        self.frame(
            "response.output_item.done",
            json!({"output_index": m.index, "item": item}),
            out,
        );
    }

    fn add_item(&mut self, item: Value, out: &mut Vec<Frame>) {
        let index = self.output.len();
        let mut added = item.clone();
        added["status"] = Value::String("in_progress".into());
        self.output.push(item.clone());
        self.frame(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
            out,
        );
        self.frame(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
            out,
        );
    }

    /// The events for one agent event.
    pub fn event(&mut self, ev: &AgentEvent, out: &mut Vec<Frame>) {
        match ev {
            AgentEvent::TextDelta(t) if !t.is_empty() => {
                if self.open.is_none() {
                    self.open_message(out);
                }
                let (id, index) = match &mut self.open {
                    Some(m) => {
                        m.text.push_str(t);
                        (m.id.clone(), m.index)
                    }
                    None => return,
                };
                self.frame(
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []}),
                    out,
                );
            }
            AgentEvent::SegmentBreak => self.close_message(out),
            AgentEvent::ToolStarted {
                call_id,
                name,
                arguments,
                ..
            } => {
                self.close_message(out);
                let item = json!({"type": "function_call", "id": new_id("fc"), "call_id": call_id, "name": name,
                                  "arguments": arguments, "status": "completed"});
                self.add_item(item, out);
            }
            AgentEvent::ToolFinished {
                call_id, result, ..
            } => {
                let item = json!({"type": "function_call_output", "id": new_id("fco"), "call_id": call_id,
                                  "output": result, "status": "completed"});
                self.add_item(item, out);
            }
            _ => {}
        }
    }

    /// Ends the response: closes the open message, makes sure the final text
    /// has its message item, and emits the closing event. Returns the final object.
    pub fn finish(&mut self, outcome: &TurnOutcome, out: &mut Vec<Frame>) -> Value {
        self.close_message(out);
        // Tool results in the object are complete (events carried capped copies).
        for item in self
            .output
            .iter_mut()
            .filter(|i| i["type"] == "function_call_output")
        {
            let call_id = item["call_id"].as_str().unwrap_or("").to_string();
            if let Some(full) = outcome
                .messages
                .iter()
                .find(|m| m.tool_call_id.as_deref() == Some(call_id.as_str()))
            {
                item["output"] = Value::String(full.text());
            }
        }
        let last_text = self
            .output
            .last()
            .filter(|i| i["type"] == "message")
            .and_then(|i| i.pointer("/content/0/text"));
        let has_final = last_text.and_then(Value::as_str) == Some(outcome.text.as_str());
        if !outcome.text.is_empty() && !has_final && outcome.status != TurnStatus::Failed {
            // The answer came without deltas (no streaming upstream call).
            self.event(&AgentEvent::TextDelta(outcome.text.clone()), out);
            self.close_message(out);
        }
        let (status, kind, error, incomplete) = match outcome.status {
            TurnStatus::Completed => ("completed", "response.completed", None, None),
            TurnStatus::Incomplete => (
                "incomplete",
                "response.incomplete",
                None,
                Some("max_output_tokens"),
            ),
            TurnStatus::Cancelled => (
                "incomplete",
                "response.incomplete",
                None,
                Some("interrupted"),
            ),
            TurnStatus::Failed => {
                let message = outcome
                    .error
                    .clone()
                    .unwrap_or_else(|| "the agent failed".into());
                let code = match outcome.failure {
                    FailureKind::ContextOverflow => "context_length_exceeded",
                    FailureKind::RateLimited { .. } => "rate_limit_exceeded",
                    FailureKind::Upstream => "server_error",
                };
                (
                    "failed",
                    "response.failed",
                    Some(json!({"code": code, "message": message})),
                    None,
                )
            }
        };
        let obj = self.object(status, Some(&outcome.usage), error, incomplete);
        self.frame(kind, json!({"response": obj.clone()}), out);
        obj
    }
}

impl ResponseBuilder {
    /// Replaces the closing event just built (`response.completed`, ...) by
    /// `response.failed` with a `storage_error`: the answer exists but could
    /// not be stored.
    pub fn replace_last_with_failure(&mut self, message: &str, out: &mut Vec<Frame>) {
        if out.pop().is_some() {
            self.seq = self.seq.saturating_sub(1);
        }
        let error = json!({"code": "storage_error", "message": message});
        let obj = self.object("failed", None, Some(error), None);
        self.frame("response.failed", json!({"response": obj}), out);
    }
}

/// A page of `input_items`: newest first unless `order=asc`, after an item id.
pub fn page_items(items: &[Value], limit: usize, after: Option<&str>, ascending: bool) -> Value {
    let ordered: Vec<&Value> = if ascending {
        items.iter().collect()
    } else {
        items.iter().rev().collect()
    };
    let start = after
        .and_then(|a| {
            ordered
                .iter()
                .position(|i| i["id"].as_str() == Some(a))
                .map(|p| p + 1)
        })
        .unwrap_or(0);
    let page: Vec<Value> = ordered
        .iter()
        .skip(start)
        .take(limit)
        .map(|v| (*v).clone())
        .collect();
    let has_more = start + page.len() < ordered.len();
    json!({
        "object": "list",
        "data": page,
        "first_id": page.first().map(|i| i["id"].clone()),
        "last_id": page.last().map(|i| i["id"].clone()),
        "has_more": has_more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ResponsesRequest, ApiError> {
        parse_request(&v, "hermes-agent")
    }

    #[test]
    fn string_and_item_inputs() {
        let r = parse(json!({"input": "hi"})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.user.text(), "hi");
        assert!(r.store && !r.stream);
        assert_eq!(
            r.input_items[0]["content"][0],
            json!({"type":"input_text","text":"hi"})
        );
        let r = parse(json!({"input": [
            {"role":"developer","content":"Be brief."},
            {"type":"message","role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_image","image_url":"https://x/y.png"}]},
            {"type":"function_call","call_id":"c1","name":"t","arguments":"{}"},
            {"type":"function_call_output","call_id":"c1","output":"res"}
        ]}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.system_extra.as_deref(), Some("Be brief."));
        assert_eq!(r.user.role, Role::Tool);
        assert_eq!(r.messages.len(), 2);
        assert!(
            matches!(&r.messages[0].content, Some(Content::Parts(p)) if p[1]["image_url"]["url"] == "https://x/y.png")
        );
        assert_eq!(r.input_items.len(), 4);
    }

    #[test]
    fn errors() {
        let e = parse(json!({})).err().map(|e| e.param).unwrap_or_default();
        assert_eq!(e.as_deref(), Some("input"));
        let e = parse(json!({"input": 5}))
            .err()
            .map(|e| e.param)
            .unwrap_or_default();
        assert_eq!(e.as_deref(), Some("input"));
        let e = parse(json!({"input": "x", "conversation": "c", "previous_response_id": "resp_1"}))
            .err();
        assert_eq!(
            e.map(|e| e.message).as_deref(),
            Some("Cannot use both 'conversation' and 'previous_response_id'")
        );
        let e = parse(json!({"input": [{"type":"item_reference","id":"x"}]}))
            .err()
            .map(|e| e.param)
            .unwrap_or_default();
        assert_eq!(e.as_deref(), Some("input[0].type"));
        let e = parse(json!({"input": [{"role":"assistant","content":"x"}]}))
            .err()
            .map(|e| e.status.as_u16());
        assert_eq!(e, Some(400));
    }

    #[test]
    fn truncation_never_starts_with_a_tool_result() {
        let call = ToolCall {
            id: "c".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "t".into(),
                arguments: "{}".into(),
            },
        };
        let mut h = vec![
            Message::user("u0"),
            Message::assistant_tool_calls("", vec![call]),
            Message::tool_result("c", "r"),
        ];
        h.extend((0..4).map(|i| Message::user(format!("u{}", i + 1))));
        let t = truncate(h, 5);
        assert_eq!(t.first().map(|m| m.role), Some(Role::User));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn orphan_results_become_user_messages() {
        let mut turn = vec![Message::tool_result("nope", "42")];
        fix_orphan_tool_results(&[], &mut turn);
        assert_eq!(turn[0].role, Role::User);
        assert!(turn[0].text().contains("nope") && turn[0].text().contains("42"));
    }

    #[test]
    fn paging() {
        let items: Vec<Value> = (0..5).map(|i| json!({"id": format!("i{i}")})).collect();
        let p = page_items(&items, 2, None, false);
        assert_eq!(p["data"][0]["id"], "i4");
        assert_eq!(p["has_more"], true);
        let p = page_items(&items, 2, Some("i3"), false);
        assert_eq!(p["first_id"], "i2");
        assert_eq!(p["last_id"], "i1");
        let p = page_items(&items, 10, None, true);
        assert_eq!(p["data"][0]["id"], "i0");
        assert_eq!(p["has_more"], false);
    }
}
