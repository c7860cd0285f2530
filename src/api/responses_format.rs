//! The Responses API on the wire: request parsing and the response object
//! with its streaming events.
//!
//! Pure logic, no actix. [`parse_request`] turns `input` (a string or items)
//! into chat messages; [`ResponseBuilder`] turns agent events into the event
//! sequence OpenAI streams (each frame's `event:` equal to its `type`,
//! `sequence_number` from 0) and builds the final response object, the same
//! one `GET /v1/responses/{id}` returns.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::chat_format::Frame;
use super::error::ApiError;
use super::sampling::{ModelParams, responses_params};
use crate::agent::{AgentEvent, FailureKind, TurnOutcome, TurnStatus};
use crate::clock::unix_now;
use crate::config::ToolItems;
use crate::openai::{Content, FunctionCall, Message, Role, ToolCall, Usage};

/// `server_label` of the tools the gateway runs.
pub const SERVER_LABEL: &str = "hermes";

/// History kept by `truncation: "auto"`.
pub const TRUNCATION_MAX_MESSAGES: usize = 100;

/// A parsed `POST /v1/responses`.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    pub model: String,
    /// This turn's input items, normalised, each with an `id` (for
    /// `input_items`); `item_reference`s are resolved by the route.
    pub input_items: Vec<Value>,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub conversation: Option<String>,
    pub store: bool,
    pub truncation_auto: bool,
    pub stream: bool,
    /// Runs on with no client attached; returns at once.
    pub background: bool,
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
    let background = opt_bool(body, "background", false)?;
    if background && !store {
        return Err(ApiError::invalid(
            "background responses must be stored: background requires store to be true",
            "background",
        ));
    }
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

    let mut normalised = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(n) = normalise_item(item, i)? {
            normalised.push(n);
        }
    }
    Ok(ResponsesRequest {
        model,
        input_items: normalised,
        instructions,
        previous_response_id,
        conversation,
        store,
        background,
        truncation_auto,
        stream,
        metadata,
        params,
        echo: Echo::of(body),
    })
}

fn item_id(item: &Value, prefix: &str) -> String {
    item.get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map_or_else(|| new_id(prefix), String::from)
}

fn required_str<'a>(item: &'a Value, key: &str, i: usize, kind: &str) -> Result<&'a str, ApiError> {
    item.get(key).and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(
            format!("input[{i}] ({kind}) needs `{key}` as a string"),
            format!("input[{i}].{key}"),
        )
    })
}

/// Text of a tool output as sent: a string, or JSON kept as its text.
fn output_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Checks one input item and gives it the stored shape (every item with
/// an `id`); `None` for items that carry nothing (`reasoning`).
fn normalise_item(item: &Value, i: usize) -> Result<Option<Value>, ApiError> {
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
    let n = match kind {
        "message" => {
            let role = item.get("role").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid(
                    format!("input[{i}].role is required"),
                    format!("input[{i}].role"),
                )
            })?;
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(ApiError::invalid(
                    format!(
                        "input[{i}].role `{role}` is not one of user, assistant, system, developer"
                    ),
                    format!("input[{i}].role"),
                ));
            }
            let (_, parts) = message_content(item.get("content"), role, i)?;
            json!({"type": "message", "id": item_id(&item, "msg"), "role": role, "content": parts, "status": "completed"})
        }
        "function_call" => {
            let call_id = required_str(&item, "call_id", i, kind)?;
            let name = required_str(&item, "name", i, kind)?;
            let arguments = item
                .get("arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            json!({"type": "function_call", "id": item_id(&item, "fc"), "call_id": call_id, "name": name,
                   "arguments": arguments, "status": "completed"})
        }
        "function_call_output" => {
            let call_id = required_str(&item, "call_id", i, kind)?;
            json!({"type": "function_call_output", "id": item_id(&item, "fco"), "call_id": call_id,
                   "output": output_text(item.get("output")), "status": "completed"})
        }
        "mcp_call" => {
            let name = required_str(&item, "name", i, kind)?;
            let arguments = match item.get("arguments") {
                None | Some(Value::Null) => "{}".to_string(),
                Some(Value::String(a)) => a.clone(),
                Some(_) => {
                    return Err(ApiError::invalid(
                        format!("input[{i}].arguments (mcp_call) must be a JSON string"),
                        format!("input[{i}].arguments"),
                    ));
                }
            };
            let error = match item.get("error") {
                None | Some(Value::Null) => Value::Null,
                Some(e) => Value::String(output_text(Some(e))),
            };
            let mut n = json!({"type": "mcp_call", "id": item_id(&item, "mcp"),
                "server_label": item.get("server_label").and_then(Value::as_str).unwrap_or(SERVER_LABEL),
                "name": name, "arguments": arguments,
                "output": item.get("output").filter(|o| !o.is_null()).map(|o| Value::String(output_text(Some(o)))),
                "error": error,
                "status": item.get("status").and_then(Value::as_str).unwrap_or("completed")});
            if let Some(a) = item.get("approval_request_id").and_then(Value::as_str) {
                n["approval_request_id"] = Value::String(a.to_string());
            }
            n
        }
        // What the client saw; nothing for the model.
        "mcp_list_tools" | "mcp_approval_request" => {
            let mut n = item.clone();
            n["id"] = Value::String(item_id(&item, "mcp"));
            n
        }
        "item_reference" => {
            let id = item
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("input[{i}] (item_reference) needs an id"),
                        format!("input[{i}].id"),
                    )
                })?;
            json!({"type": "item_reference", "id": id})
        }
        "mcp_approval_response" => {
            let param = format!("input[{i}].approval_request_id");
            let approval = item
                .get("approval_request_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("input[{i}] (mcp_approval_response) needs approval_request_id"),
                        param,
                    )
                })?;
            let approve = match item.get("approve") {
                Some(Value::Bool(b)) => *b,
                _ => {
                    return Err(ApiError::invalid(
                        format!("input[{i}].approve must be true or false"),
                        format!("input[{i}].approve"),
                    ));
                }
            };
            json!({"type": "mcp_approval_response", "id": item_id(&item, "mcpa"),
                   "approval_request_id": approval, "approve": approve,
                   "reason": item.get("reason").and_then(Value::as_str)})
        }
        // Reasoning items replayed by clients carry nothing the model needs again.
        "reasoning" => return Ok(None),
        other => {
            return Err(ApiError::invalid(
                format!(
                    "input[{i}].type `{other}` is not supported; use message, function_call, function_call_output, mcp_call, item_reference or mcp_approval_response"
                ),
                format!("input[{i}].type"),
            ));
        }
    };
    Ok(Some(n))
}

/// Chat messages of (resolved) input items, and the `system`/`developer`
/// texts among them. Items that carry nothing for the model (tool lists,
/// approval requests and answers, unresolved references) are skipped; an
/// `mcp_call` is its call and its result.
pub fn to_messages(items: &[Value]) -> (Vec<Message>, Vec<String>) {
    let mut messages: Vec<Message> = Vec::new();
    let mut system = Vec::new();
    let call = |id: &str, item: &Value| ToolCall {
        id: id.to_string(),
        kind: "function".into(),
        function: FunctionCall {
            name: item["name"].as_str().unwrap_or("").to_string(),
            arguments: item["arguments"].as_str().unwrap_or("{}").to_string(),
        },
    };
    for (i, item) in items.iter().enumerate() {
        match item["type"].as_str().unwrap_or("") {
            "message" => {
                let role = item["role"].as_str().unwrap_or("user");
                let Ok((content, _)) = message_content(item.get("content"), role, i) else {
                    continue;
                };
                let role = match role {
                    "assistant" => Role::Assistant,
                    "system" | "developer" => {
                        system.push(content.text());
                        continue;
                    }
                    _ => Role::User,
                };
                messages.push(Message {
                    role,
                    content: Some(content),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                });
            }
            "function_call" => {
                let c = call(item["call_id"].as_str().unwrap_or(""), item);
                // Consecutive calls belong to one assistant message.
                match messages.last_mut() {
                    Some(m) if m.role == Role::Assistant && !m.tool_calls.is_empty() => {
                        m.tool_calls.push(c)
                    }
                    _ => messages.push(Message::assistant_tool_calls("", vec![c])),
                }
            }
            "function_call_output" => messages.push(Message::tool_result(
                item["call_id"].as_str().unwrap_or(""),
                output_text(item.get("output")),
            )),
            "mcp_call" => {
                let id = item["id"].as_str().unwrap_or("");
                messages.push(Message::assistant_tool_calls("", vec![call(id, item)]));
                let result = match item.get("error").filter(|e| !e.is_null()) {
                    Some(e) => format!("Error: {}", output_text(Some(e))),
                    None => output_text(item.get("output")),
                };
                messages.push(Message::tool_result(id, result));
            }
            _ => {}
        }
    }
    (messages, system)
}

/// The turn's input: the messages before it and the last one, which must
/// be a user message or a tool result.
pub fn split_input(mut messages: Vec<Message>) -> Result<(Vec<Message>, Message), ApiError> {
    match messages.pop() {
        Some(m) if m.role == Role::User || m.role == Role::Tool => Ok((messages, m)),
        _ => Err(ApiError::invalid(
            "input must end with a user message or a function_call_output",
            "input",
        )),
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
    pub background: bool,
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
    mode: ToolItems,
    /// Tool calls shown as items: call id → output index.
    calls: HashMap<String, usize>,
    /// Approval ids of calls that resume a paused turn (call id → `mcpr_…`).
    resumed: HashMap<String, String>,
    /// Approvals this response asks for: (approval id, the call).
    requested: Vec<(String, ToolCall)>,
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
    pub fn new(head: ResponseHead, mode: ToolItems) -> Self {
        Self {
            head,
            output: Vec::new(),
            open: None,
            seq: 0,
            mode,
            calls: HashMap::new(),
            resumed: HashMap::new(),
            requested: Vec::new(),
        }
    }

    /// Calls that resume a paused turn, with the approval id each answers
    /// (their `mcp_call` items carry it).
    pub fn resuming(mut self, resumed: HashMap<String, String>) -> Self {
        self.resumed = resumed;
        self
    }

    /// The approvals this response asks for, with the calls they hold back.
    pub fn requested(&self) -> &[(String, ToolCall)] {
        &self.requested
    }

    /// Ids of every output item (for `item_reference`).
    pub fn item_ids(&self) -> impl Iterator<Item = &str> {
        self.output.iter().filter_map(|i| i["id"].as_str())
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
            "background": self.head.background,
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
            AgentEvent::ToolStarted(t) => {
                self.close_message(out);
                match self.mode {
                    ToolItems::McpCall => {
                        self.mcp_call_started(&t.call_id, &t.name, &t.arguments, out);
                    }
                    ToolItems::FunctionCall => {
                        let item = json!({"type": "function_call", "id": new_id("fc"), "call_id": t.call_id,
                                          "name": t.name, "arguments": t.arguments, "status": "completed"});
                        self.add_item(item, out);
                    }
                    ToolItems::None => {}
                }
            }
            AgentEvent::ToolFinished(t) => match self.mode {
                ToolItems::McpCall => self.mcp_call_finished(&t.call_id, &t.result, t.ok, out),
                ToolItems::FunctionCall => {
                    let item = json!({"type": "function_call_output", "id": new_id("fco"), "call_id": t.call_id,
                                      "output": t.result, "status": "completed"});
                    self.calls.insert(t.call_id.clone(), self.output.len());
                    self.add_item(item, out);
                }
                ToolItems::None => {}
            },
            AgentEvent::ApprovalRequired(a) => {
                let (call_id, name, arguments) = (&a.call_id, &a.name, &a.arguments);
                self.close_message(out);
                let id = new_id("mcpr");
                let item = json!({"type": "mcp_approval_request", "id": id, "server_label": SERVER_LABEL,
                                  "name": name, "arguments": arguments});
                let index = self.output.len();
                self.output.push(item.clone());
                for kind in ["response.output_item.added", "response.output_item.done"] {
                    self.frame(kind, json!({"output_index": index, "item": item}), out);
                }
                let call = ToolCall {
                    id: call_id.clone(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: name.clone(),
                        arguments: arguments.clone(),
                    },
                };
                self.requested.push((id, call));
            }
            _ => {}
        }
    }

    /// An `mcp_call` begins the way OpenAI streams one: added with empty
    /// arguments, `in_progress`, the arguments as a delta, then done.
    fn mcp_call_started(
        &mut self,
        call_id: &str,
        name: &str,
        arguments: &str,
        out: &mut Vec<Frame>,
    ) {
        let id = new_id("mcp");
        let index = self.output.len();
        let mut item = json!({"type": "mcp_call", "id": id, "server_label": SERVER_LABEL, "name": name,
                              "arguments": "", "output": null, "error": null, "status": "in_progress"});
        if let Some(approval) = self.resumed.get(call_id) {
            item["approval_request_id"] = Value::String(approval.clone());
        }
        self.frame(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
            out,
        );
        let at = json!({"item_id": id, "output_index": index});
        self.frame("response.mcp_call.in_progress", at.clone(), out);
        let mut delta = at.clone();
        delta["delta"] = Value::String(arguments.to_string());
        self.frame("response.mcp_call_arguments.delta", delta, out);
        let mut done = at;
        done["arguments"] = Value::String(arguments.to_string());
        self.frame("response.mcp_call_arguments.done", done, out);
        item["arguments"] = Value::String(arguments.to_string());
        self.output.push(item);
        self.calls.insert(call_id.to_string(), index);
    }

    /// An `mcp_call` ends: `completed` with the result the model saw, or
    /// `failed` with it as the error.
    fn mcp_call_finished(&mut self, call_id: &str, result: &str, ok: bool, out: &mut Vec<Frame>) {
        let Some(&index) = self.calls.get(call_id) else {
            return;
        };
        let item = &mut self.output[index];
        set_call_result(item, result, ok);
        let item = item.clone();
        let kind = if ok {
            "response.mcp_call.completed"
        } else {
            "response.mcp_call.failed"
        };
        self.frame(
            kind,
            json!({"item_id": item["id"], "output_index": index}),
            out,
        );
        self.frame(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
            out,
        );
    }

    /// Ends the response: closes the open message, makes sure the final text
    /// has its message item, and emits the closing event. Returns the final object.
    pub fn finish(&mut self, outcome: &TurnOutcome, out: &mut Vec<Frame>) -> Value {
        self.close_message(out);
        // Tool results in the object are complete (events carried capped copies).
        for m in &outcome.messages {
            let Some(index) = m.tool_call_id.as_ref().and_then(|id| self.calls.get(id)) else {
                continue;
            };
            let item = &mut self.output[*index];
            if item["type"] == "function_call_output" {
                item["output"] = Value::String(m.text());
            } else if item["type"] == "mcp_call" {
                let ok = item["status"] == "completed";
                set_call_result(item, &m.text(), ok);
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

/// The response object as its events so far show it: what `GET` returns
/// while the response runs, and what a restart that cut it off keeps. The
/// closing event's object wins; before it, the output items added so far,
/// with the text of a message still being written. `None` without a
/// `response.created`.
pub fn object_from_events<'a>(
    events: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<Value> {
    let mut obj: Option<Value> = None;
    let mut output: Vec<Value> = Vec::new();
    let mut texts: HashMap<usize, String> = HashMap::new();
    for (kind, data) in events {
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let index = v["output_index"].as_u64().map(|i| i as usize);
        match kind {
            "response.created" | "response.in_progress" => obj = Some(v["response"].take()),
            "response.completed" | "response.failed" | "response.incomplete" => {
                return Some(v["response"].take());
            }
            "response.output_item.added" | "response.output_item.done" => {
                let Some(i) = index else { continue };
                if output.len() <= i {
                    output.resize(i + 1, Value::Null);
                }
                output[i] = v["item"].take();
                if kind == "response.output_item.done" {
                    texts.remove(&i);
                }
            }
            "response.mcp_call_arguments.done" => {
                if let (Some(item), Some(args)) = (
                    index.and_then(|i| output.get_mut(i)),
                    v["arguments"].as_str(),
                ) {
                    item["arguments"] = Value::from(args);
                }
            }
            "response.output_text.delta" => {
                if let (Some(i), Some(d)) = (index, v["delta"].as_str()) {
                    texts.entry(i).or_default().push_str(d);
                }
            }
            _ => {}
        }
    }
    let mut obj = obj?;
    for (i, text) in texts {
        if let Some(item) = output.get_mut(i) {
            item["content"] = json!([{"type": "output_text", "text": text, "annotations": []}]);
        }
    }
    output.retain(|i| !i.is_null());
    let output_text: Vec<&str> = output
        .iter()
        .filter(|i| i["type"] == "message")
        .filter_map(|i| i.pointer("/content/0/text").and_then(Value::as_str))
        .collect();
    obj["output_text"] = Value::String(output_text.join("\n\n"));
    obj["output"] = Value::Array(output);
    Some(obj)
}

/// Marks the item a stopped response was writing `incomplete`: the last
/// one, when it is a message (a cancel closes it as if it were complete).
pub fn mark_cut_off(object: &mut Value) {
    if let Some(last) = object["output"].as_array_mut().and_then(|o| o.last_mut())
        && last["type"] == "message"
    {
        last["status"] = Value::from("incomplete");
    }
}

/// The event that ends a response a restart cut off: `response.incomplete`
/// with `incomplete_details.reason: "interrupted"` and the output it had
/// (items still being written are `incomplete`).
pub fn interrupted_event(mut obj: Value, seq: u64) -> (String, String) {
    if let Some(items) = obj["output"].as_array_mut() {
        for item in items.iter_mut().filter(|i| i["status"] == "in_progress") {
            item["status"] = Value::from("incomplete");
        }
    }
    obj["status"] = Value::from("incomplete");
    obj["incomplete_details"] = json!({"reason": "interrupted"});
    let kind = "response.incomplete";
    let data = json!({"type": kind, "sequence_number": seq, "response": obj});
    (kind.to_string(), data.to_string())
}

/// Sets an `mcp_call` item's result: `output` when it ran, `error` (the
/// text the model saw, as the OpenAI SDKs type it: a string) when not.
fn set_call_result(item: &mut Value, result: &str, ok: bool) {
    if ok {
        item["output"] = Value::String(result.to_string());
        item["error"] = Value::Null;
        item["status"] = Value::from("completed");
    } else {
        item["output"] = Value::Null;
        item["error"] = Value::String(result.to_string());
        item["status"] = Value::from("failed");
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

    fn messages_of(r: &ResponsesRequest) -> (Vec<Message>, Vec<String>) {
        to_messages(&r.input_items)
    }

    #[test]
    fn string_and_item_inputs() {
        let r = parse(json!({"input": "hi"})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(messages_of(&r).0[0].text(), "hi");
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
        let (messages, system) = messages_of(&r);
        assert_eq!(system, vec!["Be brief."]);
        let (prefix, user) = split_input(messages).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user.role, Role::Tool);
        assert_eq!(prefix.len(), 2);
        assert!(
            matches!(&prefix[0].content, Some(Content::Parts(p)) if p[1]["image_url"]["url"] == "https://x/y.png")
        );
        assert_eq!(r.input_items.len(), 4);
    }

    #[test]
    fn items_clients_send_back() {
        let r = parse(json!({"input": [
            {"type":"mcp_list_tools","server_label":"hermes","tools":[]},
            {"type":"message","role":"user","content":"list files"},
            {"type":"mcp_call","id":"mcp_1","server_label":"hermes","name":"terminal","arguments":"{\"command\":\"ls\"}","output":"a b","error":null,"status":"completed"},
            {"type":"mcp_call","id":"mcp_2","name":"terminal","arguments":"{}","output":null,"error":"refused","status":"failed"},
            {"type":"mcp_approval_request","id":"mcpr_1","server_label":"hermes","name":"terminal","arguments":"{}"},
            {"type":"item_reference","id":"msg_9"},
            {"type":"mcp_approval_response","approval_request_id":"mcpr_1","approve":false},
            {"type":"reasoning","id":"rs_1","summary":[]},
            "and now?"
        ]}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.input_items.len(), 8, "reasoning carries nothing");
        let (m, _) = to_messages(&r.input_items);
        let shape: Vec<(Role, String)> = m.iter().map(|m| (m.role, m.text())).collect();
        assert_eq!(
            shape,
            vec![
                (Role::User, "list files".into()),
                (Role::Assistant, "".into()),
                (Role::Tool, "a b".into()),
                (Role::Assistant, "".into()),
                (Role::Tool, "Error: refused".into()),
                (Role::User, "and now?".into()),
            ]
        );
        assert_eq!(m[1].tool_calls[0].id, "mcp_1");
        assert_eq!(m[2].tool_call_id.as_deref(), Some("mcp_1"));
    }

    #[test]
    fn errors() {
        let param = |v: Value| parse(v).err().and_then(|e| e.param);
        assert_eq!(param(json!({})).as_deref(), Some("input"));
        assert_eq!(param(json!({"input": 5})).as_deref(), Some("input"));
        let e = parse(json!({"input": "x", "conversation": "c", "previous_response_id": "resp_1"}))
            .err();
        assert_eq!(
            e.map(|e| e.message).as_deref(),
            Some("Cannot use both 'conversation' and 'previous_response_id'")
        );
        assert_eq!(
            param(json!({"input": [{"type":"item_reference"}]})).as_deref(),
            Some("input[0].id")
        );
        assert_eq!(
            param(json!({"input": [{"type":"mcp_call","arguments":"{}"}]})).as_deref(),
            Some("input[0].name")
        );
        assert_eq!(
            param(json!({"input": [{"type":"mcp_call","name":"t","arguments":{"a":1}}]}))
                .as_deref(),
            Some("input[0].arguments")
        );
        assert_eq!(
            param(json!({"input": [{"type":"mcp_approval_response","approve":true}]})).as_deref(),
            Some("input[0].approval_request_id")
        );
        assert_eq!(
            param(json!({"input": [{"type":"mcp_approval_response","approval_request_id":"x","approve":"yes"}]}))
                .as_deref(),
            Some("input[0].approve")
        );
        assert_eq!(
            param(json!({"input": [{"type":"web_search_call"}]})).as_deref(),
            Some("input[0].type")
        );
        let r = parse(json!({"input": [{"role":"assistant","content":"x"}]}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(split_input(to_messages(&r.input_items).0).is_err());
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

    #[test]
    fn the_object_is_rebuilt_from_events_and_a_cut_off_one_ends_interrupted() {
        let head = ResponseHead {
            id: "resp_1".into(),
            created_at: 1,
            model: "m".into(),
            instructions: None,
            previous_response_id: None,
            store: true,
            background: true,
            truncation_auto: false,
            metadata: json!({}),
            echo: Echo::default(),
        };
        let mut b = ResponseBuilder::new(head, ToolItems::McpCall);
        let mut out = Vec::new();
        b.start(&mut out);
        b.event(&AgentEvent::TextDelta("Hel".into()), &mut out);
        b.event(&AgentEvent::TextDelta("lo".into()), &mut out);
        let events: Vec<(&str, String)> = out
            .iter()
            .map(|f| match f {
                Frame::Named(k, d) => (*k, d.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        let obj =
            object_from_events(events.iter().map(|(k, d)| (*k, d.as_str()))).unwrap_or_default();
        assert_eq!(obj["status"], "in_progress");
        assert_eq!(obj["output_text"], "Hello");
        assert_eq!(obj["output"][0]["status"], "in_progress");
        let (kind, data) = interrupted_event(obj, 7);
        let end: Value = serde_json::from_str(&data).unwrap_or_default();
        assert_eq!(
            (kind.as_str(), end["sequence_number"].as_u64()),
            ("response.incomplete", Some(7))
        );
        assert_eq!(
            end["response"]["incomplete_details"]["reason"],
            "interrupted"
        );
        assert_eq!(end["response"]["output"][0]["status"], "incomplete");
        // Once closed, the closing event's object is the answer.
        let mut closed = Vec::new();
        let last = b.finish(&TurnOutcome::failed("x"), &mut closed);
        let all: Vec<(&str, String)> = out
            .iter()
            .chain(&closed)
            .map(|f| match f {
                Frame::Named(k, d) => (*k, d.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        let obj = object_from_events(all.iter().map(|(k, d)| (*k, d.as_str())));
        assert_eq!(obj, Some(last));
    }
}
