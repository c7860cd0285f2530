//! Turning streamed chunks into deltas and one finished [`Completion`].
//!
//! Pure logic, no I/O: tool-call fragments are merged by `index` (id and name
//! arrive first, argument text in pieces), usage is read from the final
//! usage-only chunk, reasoning is kept apart from the answer, and
//! `<think>…</think>` blocks inside `content` are routed to reasoning.

use std::collections::BTreeMap;

use crate::openai::{ChunkIn, CompletionIn, FunctionCall, ToolCall, Usage};

/// A piece of streamed output worth forwarding the moment it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Answer text.
    Text(String),
    /// Model reasoning (`reasoning`, `reasoning_content`, `<think>` blocks).
    Reasoning(String),
}

/// One finished upstream call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// Answer text with think blocks removed.
    pub content: String,
    /// Reasoning text, when the model sent any.
    pub reasoning: String,
    /// Tool calls in the order the model listed them.
    pub tool_calls: Vec<ToolCall>,
    /// `stop`, `length`, `tool_calls`, ... as the server said.
    pub finish_reason: Option<String>,
    /// The server's token counts, when it gave them.
    pub usage: Option<Usage>,
}

impl Completion {
    /// Characters the model produced: text, reasoning and tool calls (for
    /// usage estimates when the server reports none).
    pub fn output_chars(&self) -> usize {
        self.content.len()
            + self.reasoning.len()
            + self
                .tool_calls
                .iter()
                .map(|c| c.function.name.len() + c.function.arguments.len())
                .sum::<usize>()
    }
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Collects a streamed completion chunk by chunk.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    content: String,
    reasoning: String,
    calls: BTreeMap<usize, PartialCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    think: ThinkFilter,
    saw_output: bool,
}

impl StreamAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once any text, reasoning or tool-call fragment has arrived
    /// (after that, a failure can no longer be retried without duplicating output).
    pub fn saw_output(&self) -> bool {
        self.saw_output
    }

    /// Takes one chunk and returns the deltas to forward now.
    pub fn push(&mut self, chunk: ChunkIn) -> Vec<Delta> {
        let mut out = Vec::new();
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        for choice in chunk.choices {
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
            let Some(delta) = choice.delta else { continue };
            for r in [delta.reasoning, delta.reasoning_content]
                .into_iter()
                .flatten()
            {
                if !r.is_empty() {
                    self.saw_output = true;
                    self.reasoning.push_str(&r);
                    out.push(Delta::Reasoning(r));
                }
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                self.saw_output = true;
                let (visible, thinking) = self.think.push(&text);
                self.route(visible, thinking, &mut out);
            }
            for tc in delta.tool_calls.unwrap_or_default() {
                self.saw_output = true;
                // Servers that omit `index` send one call per fragment series.
                let idx = tc.index.unwrap_or(self.calls.len().saturating_sub(1));
                let entry = self.calls.entry(idx).or_default();
                if let Some(id) = tc.id.filter(|s| !s.is_empty()) {
                    entry.id = id;
                }
                if let Some(f) = tc.function {
                    if let Some(n) = f.name.filter(|s| !s.is_empty()) {
                        entry.name = n;
                    }
                    if let Some(a) = f.arguments {
                        entry.arguments.push_str(&a);
                    }
                }
            }
        }
        out
    }

    fn route(&mut self, visible: String, thinking: String, out: &mut Vec<Delta>) {
        if !thinking.is_empty() {
            self.reasoning.push_str(&thinking);
            out.push(Delta::Reasoning(thinking));
        }
        if !visible.is_empty() {
            self.content.push_str(&visible);
            out.push(Delta::Text(visible));
        }
    }

    /// Ends the stream: flushes a held-back partial tag and returns the
    /// completion together with the last deltas.
    pub fn finish(mut self) -> (Completion, Vec<Delta>) {
        let mut out = Vec::new();
        let (visible, thinking) = self.think.finish();
        self.route(visible, thinking, &mut out);
        let tool_calls = self
            .calls
            .into_values()
            .filter(|c| !c.name.is_empty())
            .enumerate()
            .map(|(i, c)| ToolCall {
                id: if c.id.is_empty() {
                    format!("call_{i}")
                } else {
                    c.id
                },
                kind: "function".into(),
                function: FunctionCall {
                    name: c.name,
                    arguments: c.arguments,
                },
            })
            .collect();
        let completion = Completion {
            content: self.content,
            reasoning: self.reasoning,
            tool_calls,
            finish_reason: self.finish_reason,
            usage: self.usage,
        };
        (completion, out)
    }
}

/// Reads a whole (non-streamed) completion.
pub fn from_whole(c: CompletionIn) -> Completion {
    let usage = c.usage;
    let Some(choice) = c.choices.into_iter().next() else {
        return Completion {
            usage,
            ..Default::default()
        };
    };
    let msg = choice.message.unwrap_or_default();
    let raw = match msg.content {
        Some(serde_json::Value::String(s)) => s,
        Some(v @ serde_json::Value::Array(_)) => {
            crate::openai::Content::Parts(v.as_array().cloned().unwrap_or_default()).text()
        }
        _ => String::new(),
    };
    let mut think = ThinkFilter::default();
    let (mut content, mut thinking) = think.push(&raw);
    let (v2, t2) = think.finish();
    content.push_str(&v2);
    thinking.push_str(&t2);
    let mut reasoning = msg.reasoning_content.or(msg.reasoning).unwrap_or_default();
    reasoning.push_str(&thinking);
    let tool_calls = msg
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, tc)| {
            let f = tc.function?;
            let name = f.name.filter(|n| !n.is_empty())?;
            Some(ToolCall {
                id: tc
                    .id
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| format!("call_{i}")),
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: f.arguments.unwrap_or_default(),
                },
            })
        })
        .collect();
    Completion {
        content,
        reasoning,
        tool_calls,
        finish_reason: choice.finish_reason,
        usage,
    }
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Splits streamed text into visible text and `<think>` content, holding back
/// a suffix that might be the start of a tag split across chunks.
#[derive(Debug, Default)]
pub struct ThinkFilter {
    inside: bool,
    pending: String,
}

impl ThinkFilter {
    /// Returns `(visible, thinking)` for this piece of text.
    pub fn push(&mut self, text: &str) -> (String, String) {
        self.pending.push_str(text);
        let (mut visible, mut thinking) = (String::new(), String::new());
        loop {
            let tag = if self.inside { THINK_CLOSE } else { THINK_OPEN };
            let target = if self.inside {
                &mut thinking
            } else {
                &mut visible
            };
            if let Some(pos) = self.pending.find(tag) {
                target.push_str(&self.pending[..pos]);
                self.pending.drain(..pos + tag.len());
                self.inside = !self.inside;
                continue;
            }
            let keep = partial_suffix(&self.pending, tag);
            let cut = self.pending.len() - keep;
            target.push_str(&self.pending[..cut]);
            self.pending.drain(..cut);
            break;
        }
        (visible, thinking)
    }

    /// Flushes what was held back.
    pub fn finish(&mut self) -> (String, String) {
        let rest = std::mem::take(&mut self.pending);
        if self.inside {
            (String::new(), rest)
        } else {
            (rest, String::new())
        }
    }
}

/// Length of the longest suffix of `s` that is a proper prefix of `tag`.
fn partial_suffix(s: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| {
            n <= s.len() && s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(json: &str) -> ChunkIn {
        serde_json::from_str(json).unwrap_or_default()
    }

    #[test]
    fn merges_tool_calls_split_across_chunks() {
        let mut acc = StreamAccumulator::new();
        for c in [
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"read_file","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"pa"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"todo","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"th\":\"x\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#,
        ] {
            assert!(acc.push(chunk(c)).is_empty());
        }
        let (c, _) = acc.finish();
        assert_eq!(c.tool_calls.len(), 2);
        assert_eq!(c.tool_calls[0].id, "call_a");
        assert_eq!(c.tool_calls[0].function.arguments, r#"{"path":"x"}"#);
        assert_eq!(c.tool_calls[1].function.name, "todo");
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(c.usage.map(|u| u.total_tokens), Some(10));
    }

    #[test]
    fn reasoning_kept_apart() {
        let mut acc = StreamAccumulator::new();
        let d = acc.push(chunk(
            r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#,
        ));
        assert_eq!(d, vec![Delta::Reasoning("hmm".into())]);
        let d = acc.push(chunk(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#));
        assert_eq!(d, vec![Delta::Text("Hi".into())]);
        let (c, _) = acc.finish();
        assert_eq!((c.content.as_str(), c.reasoning.as_str()), ("Hi", "hmm"));
    }

    #[test]
    fn think_blocks_split_anywhere() {
        let text = "<think>plan it</think>The answer <b>is</b> 42.";
        for cut in 0..=text.len() {
            if !text.is_char_boundary(cut) {
                continue;
            }
            let mut f = ThinkFilter::default();
            let (mut v, mut t) = f.push(&text[..cut]);
            let (v2, t2) = f.push(&text[cut..]);
            let (v3, t3) = f.finish();
            v += &(v2 + &v3);
            t += &(t2 + &t3);
            assert_eq!(v, "The answer <b>is</b> 42.", "cut {cut}");
            assert_eq!(t, "plan it", "cut {cut}");
        }
    }

    #[test]
    fn whole_completion() {
        let c: CompletionIn = serde_json::from_str(
            r#"{"choices":[{"message":{"role":"assistant","content":"<think>x</think>Hello","tool_calls":[{"id":"c1","type":"function","function":{"name":"terminal","arguments":"{\"command\":\"ls\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        )
        .unwrap_or_default();
        let c = from_whole(c);
        assert_eq!(c.content, "Hello");
        assert_eq!(c.reasoning, "x");
        assert_eq!(c.tool_calls[0].function.name, "terminal");
        assert_eq!(c.usage.map(|u| u.total_tokens), Some(3));
    }
}
