//! What a client may ask of the model for one turn: sampling parameters and
//! the tool choice. Sent with every upstream call of that turn (the tool
//! choice only with the first, see [`ToolChoice`]). Validation of the
//! client's JSON lives with the API (`api::sampling`); this is the wire shape.

use serde::Serialize;
use serde_json::Value;

/// How many tokens a call may produce, under the field name the client used
/// (OpenAI's reasoning models take only `max_completion_tokens`; llama.cpp,
/// vLLM and Ollama take `max_tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokens {
    /// Sent as `max_tokens`.
    Legacy(u32),
    /// Sent as `max_completion_tokens`.
    Completion(u32),
    /// The client's API has its own name (Responses' `max_output_tokens`):
    /// `max_completion_tokens` to OpenAI itself, `max_tokens` to everyone
    /// else (the name every OpenAI-compatible server knows).
    Unnamed(u32),
}

impl MaxTokens {
    /// The limit, whatever its name.
    pub fn value(self) -> u32 {
        match self {
            Self::Legacy(n) | Self::Completion(n) | Self::Unnamed(n) => n,
        }
    }
}

/// Sampling parameters passed through to the model server, each only when
/// the client set it (a server's own defaults stay in force otherwise).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sampling {
    #[serde(skip)]
    pub max_tokens: Option<MaxTokens>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// A string or up to four strings, as the client sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Chat Completions' `response_format` object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
}

/// Which tools the model may or must call in a turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (`"auto"` is sent whenever tools are: some servers,
    /// llama-cpp-python's function-calling format among them, default to `"none"`).
    #[default]
    Auto,
    /// No tools in this turn: none are sent.
    None,
    /// The first call must call some tool; later calls of the turn are `auto`
    /// (forcing every call would loop until the iteration limit).
    Required,
    /// The first call must call this tool; later calls are `auto`.
    Function(String),
}

impl ToolChoice {
    /// The `tool_choice` value for the `call`-th upstream call (1-based).
    pub fn wire(&self, call: u32) -> Value {
        match self {
            Self::Required if call == 1 => Value::from("required"),
            Self::Function(name) if call == 1 => {
                serde_json::json!({"type": "function", "function": {"name": name}})
            }
            Self::None => Value::from("none"),
            _ => Value::from("auto"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_choice_only_on_the_first_call() {
        let f = ToolChoice::Function("todo".into());
        assert_eq!(f.wire(1)["function"]["name"], "todo");
        assert_eq!(f.wire(2), "auto");
        assert_eq!(ToolChoice::Required.wire(1), "required");
        assert_eq!(ToolChoice::Required.wire(3), "auto");
        assert_eq!(ToolChoice::Auto.wire(1), "auto");
    }

    #[test]
    fn only_set_fields_are_sent() {
        let s = Sampling {
            temperature: Some(0.2),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap_or_default(),
            serde_json::json!({"temperature": 0.2})
        );
    }
}
