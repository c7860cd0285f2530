//! The client's sampling parameters and tool choice, validated (pure logic).
//!
//! Chat Completions and the Responses API name them differently; both end
//! as one [`Sampling`] and one [`ToolChoice`] that the agent sends with every
//! upstream call of the turn. Wrong types and out-of-range values are 400s
//! naming the field, as OpenAI answers them. The client's own `tools` are
//! checked for shape and then not used: this is a server-side agent, its
//! tools are the gateway's (see the README).

use serde_json::{Map, Value, json};

use super::error::ApiError;
use crate::upstream::{MaxTokens, Sampling, ToolChoice};

/// Most stop sequences a request may carry (OpenAI's limit).
const MAX_STOP_SEQUENCES: usize = 4;

/// What a request asks of the model, beyond its messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelParams {
    pub sampling: Sampling,
    pub tool_choice: ToolChoice,
}

fn number(body: &Value, key: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::invalid(
                format!("{key} must be between {min} and {max}"),
                key,
            )),
        },
        Some(_) => Err(ApiError::invalid(format!("{key} must be a number"), key)),
    }
}

fn positive_int(body: &Value, key: &str) -> Result<Option<u32>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(x) if x >= 1 => Ok(Some(u32::try_from(x).unwrap_or(u32::MAX))),
            _ => Err(ApiError::invalid(
                format!("{key} must be a positive integer"),
                key,
            )),
        },
        Some(_) => Err(ApiError::invalid(
            format!("{key} must be a positive integer"),
            key,
        )),
    }
}

fn string<'a>(body: &'a Value, key: &str, param: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(
            format!("{param} must be a non-empty string"),
            param,
        )),
    }
}

fn stop(body: &Value) -> Result<Option<Value>, ApiError> {
    let bad = || {
        ApiError::invalid(
            format!("stop must be a string or an array of at most {MAX_STOP_SEQUENCES} strings"),
            "stop",
        )
    };
    match body.get("stop") {
        None | Some(Value::Null) => Ok(None),
        Some(s @ Value::String(_)) => Ok(Some(s.clone())),
        Some(Value::Array(a)) if a.is_empty() => Ok(None),
        Some(a @ Value::Array(items))
            if items.len() <= MAX_STOP_SEQUENCES && items.iter().all(Value::is_string) =>
        {
            Ok(Some(a.clone()))
        }
        Some(_) => Err(bad()),
    }
}

/// Chat Completions' `response_format`; `text` (the default) is not sent.
fn response_format(v: Option<&Value>, param: &str) -> Result<Option<Value>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") if v.get("json_schema").is_some_and(Value::is_object) => {
            Ok(Some(v.clone()))
        }
        Some("json_schema") => Err(ApiError::invalid(
            "response_format of type json_schema needs a json_schema object",
            param,
        )),
        _ => Err(ApiError::invalid(
            format!("{param}.type must be one of text, json_object, json_schema"),
            param,
        )),
    }
}

/// The client's own function tools: checked for shape, then not used.
fn check_client_tools(body: &Value, responses: bool) -> Result<(), ApiError> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(ApiError::invalid("tools must be an array", "tools")),
    };
    for (i, t) in tools.iter().enumerate() {
        let kind = t.get("type").and_then(Value::as_str);
        let name = if responses && kind == Some("function") {
            t.get("name")
        } else if kind == Some("function") {
            t.pointer("/function/name")
        } else if responses && kind.is_some() {
            // Hosted tool types (web_search, mcp, ...) carry no name to check.
            continue;
        } else {
            None
        };
        let named = name.and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        if !named {
            let shape = if responses {
                "{\"type\":\"function\",\"name\":…}"
            } else {
                "{\"type\":\"function\",\"function\":{\"name\":…}}"
            };
            return Err(ApiError::invalid(
                format!("tools[{i}] must be {shape}"),
                format!("tools[{i}]"),
            ));
        }
    }
    Ok(())
}

/// `tool_choice`: `none`, `auto`, `required`, or one function by name
/// (`{"type":"function","function":{"name"}}`, or `{"type":"function","name"}`
/// in the Responses API). The name is checked against the gateway's tools by
/// [`check_tool_choice`].
fn tool_choice(body: &Value) -> Result<ToolChoice, ApiError> {
    let bad = || {
        ApiError::invalid(
            "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":…}}",
            "tool_choice",
        )
    };
    match body.get("tool_choice") {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            _ => Err(bad()),
        },
        Some(o @ Value::Object(_)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            o.pointer("/function/name")
                .or_else(|| o.get("name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(|n| ToolChoice::Function(n.to_string()))
                .ok_or_else(bad)
        }
        Some(_) => Err(bad()),
    }
}

/// A forced function must be one of the gateway's tools in this turn.
pub fn check_tool_choice(choice: &ToolChoice, available: &[&str]) -> Result<(), ApiError> {
    match choice {
        ToolChoice::Function(name) if !available.contains(&name.as_str()) => {
            Err(ApiError::invalid(
                format!(
                    "tool_choice names `{name}`, which is not one of this agent's tools ({})",
                    available.join(", ")
                ),
                "tool_choice",
            ))
        }
        ToolChoice::Required if available.is_empty() => Err(ApiError::invalid(
            "tool_choice is \"required\" but this agent has no tools enabled",
            "tool_choice",
        )),
        _ => Ok(()),
    }
}

/// The parameters of a `POST /v1/chat/completions` body.
pub fn chat_params(body: &Value) -> Result<ModelParams, ApiError> {
    match body.get("n") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 1) => {
            return Err(ApiError::invalid(
                "n must be 1: the agent produces one answer per turn",
                "n",
            ));
        }
        Some(_) => return Err(ApiError::invalid("n must be a positive integer", "n")),
    }
    let max_tokens = match (
        positive_int(body, "max_completion_tokens")?,
        positive_int(body, "max_tokens")?,
    ) {
        (Some(n), _) => Some(MaxTokens::Completion(n)),
        (None, Some(n)) => Some(MaxTokens::Legacy(n)),
        (None, None) => None,
    };
    let seed = match body.get("seed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
        Some(_) => return Err(ApiError::invalid("seed must be an integer", "seed")),
    };
    check_client_tools(body, false)?;
    let sampling = Sampling {
        max_tokens,
        temperature: number(body, "temperature", 0.0, 2.0)?,
        top_p: number(body, "top_p", 0.0, 1.0)?,
        stop: stop(body)?,
        seed,
        presence_penalty: number(body, "presence_penalty", -2.0, 2.0)?,
        frequency_penalty: number(body, "frequency_penalty", -2.0, 2.0)?,
        response_format: response_format(body.get("response_format"), "response_format")?,
        reasoning_effort: string(body, "reasoning_effort", "reasoning_effort")?.map(String::from),
    };
    Ok(ModelParams {
        sampling,
        tool_choice: tool_choice(body)?,
    })
}

/// The parameters of a `POST /v1/responses` body. `text.format` becomes the
/// Chat Completions `response_format`; `reasoning.effort` becomes `reasoning_effort`.
pub fn responses_params(body: &Value) -> Result<ModelParams, ApiError> {
    let reasoning_effort = match body.get("reasoning") {
        None | Some(Value::Null) => None,
        Some(r @ Value::Object(_)) => string(r, "effort", "reasoning.effort")?.map(String::from),
        Some(_) => {
            return Err(ApiError::invalid(
                "reasoning must be an object",
                "reasoning",
            ));
        }
    };
    let response_format = match body.get("text") {
        None | Some(Value::Null) => None,
        Some(t @ Value::Object(_)) => match t.get("format") {
            None | Some(Value::Null) => None,
            Some(f) if f.get("type").and_then(Value::as_str) == Some("json_schema") => {
                // The Responses API puts the schema's fields beside `type`.
                let mut schema = Map::new();
                for key in ["name", "schema", "strict", "description"] {
                    if let Some(v) = f.get(key) {
                        schema.insert(key.into(), v.clone());
                    }
                }
                if !schema.contains_key("schema") {
                    return Err(ApiError::invalid(
                        "text.format of type json_schema needs a schema",
                        "text.format",
                    ));
                }
                Some(json!({"type": "json_schema", "json_schema": schema}))
            }
            Some(f) => response_format(Some(f), "text.format")?,
        },
        Some(_) => return Err(ApiError::invalid("text must be an object", "text")),
    };
    check_client_tools(body, true)?;
    let sampling = Sampling {
        max_tokens: positive_int(body, "max_output_tokens")?.map(MaxTokens::Unnamed),
        temperature: number(body, "temperature", 0.0, 2.0)?,
        top_p: number(body, "top_p", 0.0, 1.0)?,
        response_format,
        reasoning_effort,
        ..Sampling::default()
    };
    Ok(ModelParams {
        sampling,
        tool_choice: tool_choice(body)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(r: Result<ModelParams, ApiError>) -> Option<String> {
        r.err().and_then(|e| e.param)
    }

    #[test]
    fn chat_parameters_are_kept() {
        let p = chat_params(&json!({
            "max_tokens": 16, "temperature": 0.2, "top_p": 0.9, "stop": ["\n"], "seed": 7,
            "presence_penalty": 0.5, "frequency_penalty": -0.5, "n": 1,
            "response_format": {"type": "json_object"}, "reasoning_effort": "low",
            "tool_choice": {"type": "function", "function": {"name": "todo"}},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let s = &p.sampling;
        assert_eq!(s.max_tokens, Some(MaxTokens::Legacy(16)));
        assert_eq!(
            (s.temperature, s.top_p, s.seed),
            (Some(0.2), Some(0.9), Some(7))
        );
        assert_eq!(s.stop, Some(json!(["\n"])));
        assert_eq!(s.response_format, Some(json!({"type": "json_object"})));
        assert_eq!(s.reasoning_effort.as_deref(), Some("low"));
        assert_eq!(p.tool_choice, ToolChoice::Function("todo".into()));
        let p = chat_params(&json!({"max_tokens": 9, "max_completion_tokens": 5}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.sampling.max_tokens, Some(MaxTokens::Completion(5)));
        assert_eq!(
            chat_params(&json!({})).unwrap_or_else(|e| panic!("{e}")),
            ModelParams::default()
        );
    }

    #[test]
    fn chat_wrong_types_name_the_field() {
        for (body, param) in [
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"temperature": 3}), "temperature"),
            (json!({"max_tokens": -1}), "max_tokens"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (
                json!({"max_completion_tokens": 1.5}),
                "max_completion_tokens",
            ),
            (json!({"top_p": 2}), "top_p"),
            (json!({"stop": 3}), "stop"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"seed": "x"}), "seed"),
            (json!({"presence_penalty": 9}), "presence_penalty"),
            (
                json!({"response_format": {"type": "yaml"}}),
                "response_format",
            ),
            (json!({"reasoning_effort": 3}), "reasoning_effort"),
            (json!({"n": 2}), "n"),
            (json!({"n": "1"}), "n"),
            (json!({"tools": "all"}), "tools"),
            (json!({"tools": [{"type": "function"}]}), "tools[0]"),
            (json!({"tool_choice": "sometimes"}), "tool_choice"),
        ] {
            assert_eq!(
                param_of(chat_params(&body)).as_deref(),
                Some(param),
                "{body}"
            );
        }
    }

    #[test]
    fn responses_parameters_are_translated() {
        let p = responses_params(&json!({
            "max_output_tokens": 32, "temperature": 0.1, "top_p": 0.5,
            "reasoning": {"effort": "high"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            "tool_choice": {"type": "function", "name": "terminal"}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.sampling.max_tokens, Some(MaxTokens::Unnamed(32)));
        assert_eq!(p.sampling.reasoning_effort.as_deref(), Some("high"));
        assert_eq!(
            p.sampling.response_format,
            Some(
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}})
            )
        );
        assert_eq!(p.tool_choice, ToolChoice::Function("terminal".into()));
        for (body, param) in [
            (json!({"max_output_tokens": "many"}), "max_output_tokens"),
            (json!({"temperature": -1}), "temperature"),
            (json!({"reasoning": {"effort": 1}}), "reasoning.effort"),
            (
                json!({"text": {"format": {"type": "json_schema"}}}),
                "text.format",
            ),
            (json!({"tools": [{"type": "function"}]}), "tools[0]"),
        ] {
            assert_eq!(
                param_of(responses_params(&body)).as_deref(),
                Some(param),
                "{body}"
            );
        }
    }

    #[test]
    fn forced_tools_must_exist() {
        let tools = ["terminal", "todo"];
        assert!(check_tool_choice(&ToolChoice::Function("todo".into()), &tools).is_ok());
        let e = check_tool_choice(&ToolChoice::Function("rm".into()), &tools).err();
        assert_eq!(e.and_then(|e| e.param).as_deref(), Some("tool_choice"));
        assert!(check_tool_choice(&ToolChoice::Required, &[]).is_err());
        assert!(check_tool_choice(&ToolChoice::None, &[]).is_ok());
    }
}
