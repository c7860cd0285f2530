//! Making a conversation acceptable to a model server: every tool call
//! answered, every tool result right after its call.
//!
//! Clients send histories in many shapes (a Responses client resends items
//! in its own order, a chat client drops a tool message, a stored turn was
//! cut by an interrupt), but OpenAI and vLLM reject a conversation with a
//! tool call that has no result, or a result without its call, with a 400.
//! [`pair_tool_calls`] is the one place that fixes this, used by every route
//! that builds a history. Pure logic.

use std::collections::{HashMap, HashSet};

use crate::openai::{Content, Message, Role};

/// Pairs tool calls with their results by id:
/// - a result is moved right after the assistant message that holds its call;
/// - a result whose call is nowhere becomes a user message saying whose
///   output it is (the model still sees it, the server does not refuse it);
/// - a call without a result is dropped from its assistant message (and the
///   message too when nothing else is left in it), unless its id is in
///   `open`: calls the turn is about to answer itself (an approval resumed);
/// - a second result for the same call is dropped.
pub fn pair_tool_calls(messages: Vec<Message>, open: &[String]) -> Vec<Message> {
    let called: HashSet<String> = messages
        .iter()
        .flat_map(|m| m.tool_calls.iter().map(|c| c.id.clone()))
        .collect();
    // The first result of every call that exists, taken out of the stream.
    let mut results: HashMap<String, Message> = HashMap::new();
    let mut rest = Vec::with_capacity(messages.len());
    for m in messages {
        match (&m.role, &m.tool_call_id) {
            (Role::Tool, Some(id)) if called.contains(id) => {
                results.entry(id.clone()).or_insert(m);
            }
            (Role::Tool, id) => {
                let id = id.as_deref().unwrap_or("(no id)");
                rest.push(Message::user(format!(
                    "Output of function call {id}:\n{}",
                    m.text()
                )));
            }
            _ => rest.push(m),
        }
    }
    let mut out = Vec::with_capacity(rest.len() + results.len());
    for mut m in rest {
        if m.tool_calls.is_empty() {
            out.push(m);
            continue;
        }
        m.tool_calls
            .retain(|c| results.contains_key(&c.id) || open.contains(&c.id));
        let answers: Vec<Message> = m
            .tool_calls
            .iter()
            .filter_map(|c| results.remove(&c.id))
            .collect();
        let empty = match &m.content {
            None => true,
            Some(Content::Text(t)) => t.is_empty(),
            Some(Content::Parts(p)) => p.is_empty(),
        };
        if !(m.tool_calls.is_empty() && empty) {
            out.push(m);
        }
        out.extend(answers);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{FunctionCall, ToolCall};

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "t".into(),
                arguments: "{}".into(),
            },
        }
    }

    fn shape(ms: &[Message]) -> Vec<String> {
        ms.iter()
            .map(|m| match m.role {
                Role::Assistant if !m.tool_calls.is_empty() => format!(
                    "A[{}]",
                    m.tool_calls
                        .iter()
                        .map(|c| c.id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Role::Tool => format!("T{}", m.tool_call_id.as_deref().unwrap_or("")),
                Role::User => format!("U:{}", m.text()),
                _ => format!("{:?}:{}", m.role, m.text()),
            })
            .collect()
    }

    #[test]
    fn results_move_next_to_their_calls() {
        let ms = vec![
            Message::user("q"),
            Message::assistant_tool_calls("", vec![call("a"), call("b")]),
            Message::user("between"),
            Message::tool_result("b", "rb"),
            Message::tool_result("a", "ra"),
        ];
        assert_eq!(
            shape(&pair_tool_calls(ms, &[])),
            vec!["U:q", "A[a,b]", "Ta", "Tb", "U:between"]
        );
    }

    #[test]
    fn orphans_become_user_messages_and_unanswered_calls_go() {
        let ms = vec![
            Message::tool_result("ghost", "42"),
            Message::user("q"),
            Message::assistant_tool_calls("", vec![call("a"), call("b")]),
            Message::tool_result("a", "ra"),
            Message::tool_result("a", "again"),
            Message::assistant_tool_calls("", vec![call("c")]),
            Message::user("next"),
        ];
        let out = pair_tool_calls(ms, &[]);
        assert_eq!(
            shape(&out),
            vec![
                "U:Output of function call ghost:\n42",
                "U:q",
                "A[a]",
                "Ta",
                "U:next"
            ]
        );
        assert_eq!(out[3].text(), "ra", "the first result wins");
    }

    #[test]
    fn calls_being_answered_now_stay_open() {
        let ms = vec![
            Message::user("q"),
            Message::assistant_tool_calls("doing it", vec![call("a"), call("p")]),
            Message::tool_result("a", "ra"),
        ];
        let out = pair_tool_calls(ms.clone(), &["p".to_string()]);
        assert_eq!(shape(&out), vec!["U:q", "A[a,p]", "Ta"]);
        // Without it, the open call goes but the text stays.
        let out = pair_tool_calls(ms, &[]);
        assert_eq!(shape(&out), vec!["U:q", "A[a]", "Ta"]);
    }
}
