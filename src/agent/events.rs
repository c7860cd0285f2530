//! The typed events a turn emits to whoever listens (an SSE response, a
//! stream preview, the terminal). They are independent of the listener:
//! every front door consumes the same stream.

use std::time::Duration;

use crate::openai::{Message, ToolCall, Usage};

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnStatus {
    /// The model gave its final answer.
    Completed,
    /// A limit was reached (max iterations, continuations): the answer is partial.
    Incomplete,
    /// The upstream failed; `error` says why.
    Failed,
    /// Interrupted (`Interrupt`, a client that left, a new chat message).
    Cancelled,
}

impl TurnStatus {
    /// Lower-case name, as logs and APIs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Incomplete => "incomplete",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Appended to the text of an answer whose turn was interrupted, wherever a
/// user sees it (a chat message, an API answer cut off by a shutdown).
pub const INTERRUPTED_MARK: &str = " (interrupted)";

/// Why a failed turn failed, so a front door can answer in kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureKind {
    /// The model server or the agent failed (an API client gets a 502).
    #[default]
    Upstream,
    /// The conversation does not fit the model's context: the client's
    /// input is at fault (400 `context_length_exceeded`).
    ContextOverflow,
    /// The model server's rate limit outlasted the retries (429, with the
    /// server's `Retry-After` in seconds when it gave one).
    RateLimited { retry_after_secs: Option<u64> },
}

/// A tool call that waits for the client's approval: the turn paused
/// before it ran (the Responses API's `mcp_approval_request`).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingApproval {
    pub call: ToolCall,
    /// Why the call needs an approval, in words.
    pub reason: String,
}

/// Everything about a finished turn.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    pub status: TurnStatus,
    /// The final answer text (on cancel or failure: what was produced so far).
    pub text: String,
    /// The turn's new messages after the user input: assistant tool calls,
    /// tool results, the final answer. Always a valid conversation tail (every
    /// tool call has its result).
    pub messages: Vec<Message>,
    /// Summed over every upstream call of the turn.
    pub usage: Usage,
    /// Why the turn failed, in words for the user (already redacted).
    pub error: Option<String>,
    /// What kind of failure (meaningful only when `status` is `Failed`).
    pub failure: FailureKind,
    /// Calls the turn paused on, waiting for the client's approval. Their
    /// assistant message is the last of `messages`, without their results.
    pub pending: Vec<PendingApproval>,
    /// Time spent waiting on the upstream model (for overhead metrics).
    pub upstream_time: Duration,
    /// Time spent running tools.
    pub tool_time: Duration,
}

impl TurnOutcome {
    /// A turn that failed before producing anything.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            status: TurnStatus::Failed,
            text: String::new(),
            messages: Vec::new(),
            usage: Usage::default(),
            error: Some(error.into()),
            failure: FailureKind::Upstream,
            pending: Vec::new(),
            upstream_time: Duration::ZERO,
            tool_time: Duration::ZERO,
        }
    }
}

/// A tool call begins.
#[derive(Debug, Clone)]
pub struct ToolStart {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    pub preview: String,
}

/// A tool call ended.
#[derive(Debug, Clone)]
pub struct ToolEnd {
    pub call_id: String,
    pub name: String,
    pub result: String,
    pub ok: bool,
    pub duration: Duration,
}

/// A tool call waits for the client's approval.
#[derive(Debug, Clone)]
pub struct ApprovalAsk {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    pub reason: String,
}

/// One event of a running turn.
///
/// The rare, large events are boxed so an event is 32 bytes: every open
/// stream's event channel allocates a block of 32 slots, and at the old
/// 104 bytes that block was 3.3 KiB of each stream's memory.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    /// Answer text, as the upstream streamed it.
    TextDelta(String),
    /// Model reasoning, where the upstream sends it; never part of the answer.
    ReasoningDelta(String),
    /// A tool call begins.
    ToolStarted(Box<ToolStart>),
    /// A tool call ended.
    ToolFinished(Box<ToolEnd>),
    /// A tool call needs the client's approval before it may run; the turn
    /// ends after this batch (paused) instead of calling the model again.
    ApprovalRequired(Box<ApprovalAsk>),
    /// A tool batch begins: text after it is a new paragraph of the answer.
    SegmentBreak,
    /// Running token totals of the turn.
    Usage(Box<Usage>),
    /// The turn ended; exactly one per turn, always last.
    Finished(Box<TurnOutcome>),
}

/// Bytes one event may take: each open stream's event channel holds a block
/// of 32 of them (tokio's block size) for as long as it lives.
const EVENT_SIZE_LIMIT: usize = 32;
// An open stream holds one block of events; a new large variant must be boxed.
const _: () = assert!(std::mem::size_of::<AgentEvent>() <= EVENT_SIZE_LIMIT);
