//! The agent's turn loop: one user input and everything the agent does until
//! its final answer.
//!
//! [`run_turn`] is plain async code (no actors): it calls the upstream, runs
//! tools concurrently, appends their results in the model's order, and asks
//! again, emitting [`AgentEvent`]s as it goes. Cancellation is cooperative and
//! immediate: every await point races the turn's [`CancellationToken`] and the
//! listener going away, and losing the race drops the in-flight upstream
//! request (closing its connection) and the running tool futures (killing
//! their process groups). The `AgentActor` owns the loop's lifecycle and sends
//! the single `Finished` event.

pub mod events;
pub mod history;
pub mod prompt;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use events::{
    AgentEvent, ApprovalAsk, FailureKind, INTERRUPTED_MARK, PendingApproval, ToolEnd, ToolStart,
    TurnOutcome, TurnStatus,
};

use crate::config::Loaded;
use crate::openai::{Message, ToolCall, Usage};
use crate::secrets;
use crate::tools::{SessionTools, ToolContext, ToolOutput, ToolSettings, Toolbox};
use crate::upstream::{
    ChatRequest, Delta, DeltaSink, Sampling, ToolChoice, UpstreamClient, UpstreamError,
    UpstreamSettings,
};

/// Events buffered between a turn and a slow listener before the turn waits.
pub const EVENT_CHANNEL_CAPACITY: usize = 256;
/// Characters of a tool result carried in `ToolFinished` (the model gets all of it).
const EVENT_RESULT_CHARS: usize = 4000;
/// Characters of a tool call's preview in `ToolStarted`.
const PREVIEW_CHARS: usize = 80;

/// Sent after `finish_reason: length` to get the rest of the answer.
const CONTINUE_PROMPT: &str = "Your answer was cut off by the output limit. Continue exactly where you stopped, without repeating anything.";
/// Sent, without tools, when the iteration limit is reached.
const SUMMARY_PROMPT: &str = "You have reached the maximum number of tool calls for this turn. \
Do not call tools. Summarise what you did, what you found, and what is left to do.";
/// Tool result recorded for calls that an interrupt stopped.
const INTERRUPTED_RESULT: &str = "Interrupted by the user before this tool finished.";
/// Tool result of a call whose approval the client refused.
pub const DENIED_RESULT: &str = "The user denied this command.";

/// The sending half a turn emits events into.
pub type EventSink = mpsc::Sender<AgentEvent>;

/// Everything a turn needs that does not change between turns.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub upstream: UpstreamClient,
    pub toolbox: Toolbox,
    pub tools: Arc<ToolSettings>,
    pub max_iterations: u32,
    pub max_continuations: u32,
    /// `cli`, `api_server`, `telegram`, ... (prompt hint and toolsets).
    pub platform: String,
    pub home: PathBuf,
}

impl AgentSettings {
    /// The settings of one front door (`cli`, `api_server`, ...) from configuration.
    pub fn for_front_door(
        loaded: &Loaded,
        platform: &str,
        upstream: UpstreamSettings,
        toolsets: &[String],
    ) -> Self {
        let c = &loaded.config;
        Self {
            upstream: UpstreamClient::new(upstream),
            toolbox: Toolbox::new(toolsets),
            tools: Arc::new(ToolSettings::from_config(
                c,
                &loaded.home,
                loaded.env.get("HOME"),
            )),
            max_iterations: c.agent.max_iterations,
            max_continuations: c.agent.max_continuations,
            platform: platform.to_string(),
            home: loaded.home.clone(),
        }
    }
}

/// A call of an earlier turn that paused for approval, now answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumedCall {
    pub call: ToolCall,
    pub approved: bool,
}

/// One user input.
#[derive(Debug, Clone)]
pub struct TurnInput {
    /// The user's message (text or content parts); `None` when the turn only
    /// goes on from answered approvals.
    pub user: Option<Message>,
    /// Calls of a paused turn the client answered: they run (or are refused)
    /// first, and the model is not asked for them again. Their assistant
    /// message is the last of the history.
    pub resume: Vec<ResumedCall>,
    /// The caller's ephemeral system prompt, layered over the core prompt.
    pub system: Option<String>,
    /// Stream from the upstream (someone shows deltas as they arrive).
    pub stream: bool,
    /// The client's sampling parameters, sent with every upstream call of the turn.
    pub sampling: Sampling,
    /// Which tools the model may or must call.
    pub tool_choice: ToolChoice,
    /// Messages a client adds while the turn runs (`/v1/runs/{id}/steer`):
    /// each becomes a user message before the next model call.
    pub steer: Option<Steer>,
}

/// Text waiting to be added to a running turn, shared with whoever steers it.
pub type Steer = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Whether text waits in `steer`.
fn has_steered(steer: Option<&Steer>) -> bool {
    steer.is_some_and(|s| !s.lock().unwrap_or_else(|p| p.into_inner()).is_empty())
}

/// Takes what waits in `steer` (nothing without one).
fn take_steered(steer: Option<&Steer>) -> Vec<String> {
    steer.map_or_else(Vec::new, |s| {
        std::mem::take(&mut *s.lock().unwrap_or_else(|p| p.into_inner()))
    })
}

impl TurnInput {
    /// Plain input: the server's defaults for sampling, tools as the model likes.
    pub fn new(user: Message, system: Option<String>, stream: bool) -> Self {
        Self {
            user: Some(user),
            resume: Vec::new(),
            system,
            stream,
            sampling: Sampling::default(),
            tool_choice: ToolChoice::Auto,
            steer: None,
        }
    }
}

/// What the turn has produced so far; survives the cancellation of any step.
#[derive(Default)]
struct TurnState {
    usage: Usage,
    /// Text of the current segment (since the last tool batch).
    segment: String,
    /// Text of earlier parts of an answer that was continued after `length`.
    continued: String,
    /// The turn's new messages (valid conversation tail at every step).
    messages: Vec<Message>,
    /// Calls the turn paused on.
    pending: Vec<PendingApproval>,
    upstream_time: Duration,
    tool_time: Duration,
}

impl TurnState {
    fn outcome(self, status: TurnStatus, error: Option<String>) -> TurnOutcome {
        self.outcome_with(status, error, FailureKind::Upstream)
    }

    fn outcome_with(
        self,
        status: TurnStatus,
        error: Option<String>,
        failure: FailureKind,
    ) -> TurnOutcome {
        let text = format!("{}{}", self.continued, self.segment);
        let mut messages = self.messages;
        if status != TurnStatus::Completed && status != TurnStatus::Incomplete && !text.is_empty() {
            // Keep what the user saw so the next turn's history matches it;
            // an interrupted answer says so (the model then knows it was cut).
            let kept = if status == TurnStatus::Cancelled {
                format!("{text}{INTERRUPTED_MARK}")
            } else {
                text.clone()
            };
            messages.push(Message::assistant(kept));
        }
        TurnOutcome {
            status,
            text,
            messages,
            usage: self.usage,
            error: error.map(|e| secrets::redact(&e)),
            failure,
            pending: self.pending,
            upstream_time: self.upstream_time,
            tool_time: self.tool_time,
        }
    }
}

/// Forwards upstream deltas as events and keeps the segment's text.
struct Forward<'a> {
    events: &'a EventSink,
    text: &'a mut String,
}

impl DeltaSink for Forward<'_> {
    async fn delta(&mut self, delta: Delta) {
        let ev = match delta {
            Delta::Text(t) => {
                self.text.push_str(&t);
                AgentEvent::TextDelta(t)
            }
            Delta::Reasoning(r) => AgentEvent::ReasoningDelta(r),
        };
        // A closed channel is noticed by `stopped()`; nothing to do here.
        let _ = self.events.send(ev).await;
    }
}

/// Resolves when the turn must stop: interrupted, or nobody listens any more.
async fn stopped(cancel: &CancellationToken, events: &EventSink) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = events.closed() => {}
    }
}

/// Runs one turn over `history` and returns how it ended. Emits every event
/// except `Finished`, which the caller sends once it has recorded the outcome.
pub async fn run_turn(
    settings: &AgentSettings,
    history: &[Message],
    input: &mut TurnInput,
    session: SessionTools,
    events: &EventSink,
    cancel: &CancellationToken,
) -> TurnOutcome {
    let with_memory = settings.toolbox.names().contains(&"memory");
    let system = prompt::system_prompt(
        &settings.platform,
        &settings.home,
        with_memory,
        input.system.as_deref(),
    );
    let mut convo = Vec::with_capacity(history.len() + 8);
    convo.push(Message::system(system));
    convo.extend_from_slice(history);

    let ctx = ToolContext {
        settings: settings.tools.clone(),
        session,
        approved: false,
    };
    let mut st = TurnState::default();
    if !input.resume.is_empty() {
        // The answered calls first: the model asked for them already.
        let results = tokio::select! {
            biased;
            _ = stopped(cancel, events) => None,
            r = run_resumed(&settings.toolbox, &input.resume, &ctx, events) => Some(r),
        };
        let Some(results) = results else {
            for r in &input.resume {
                st.messages
                    .push(Message::tool_result(&r.call.id, INTERRUPTED_RESULT));
            }
            return st.outcome(TurnStatus::Cancelled, None);
        };
        for (r, out) in input.resume.iter().zip(results) {
            let m = Message::tool_result(&r.call.id, out.text);
            convo.push(m.clone());
            st.messages.push(m);
        }
    }
    if let Some(user) = input.user.take() {
        convo.push(user);
    }
    let mut calls = 0;
    let mut continuations = 0;
    // A client that set a token limit meant it: a cut-off answer ends the
    // turn instead of being continued past the limit.
    let max_continuations = if input.sampling.max_tokens.is_some() {
        0
    } else {
        settings.max_continuations
    };
    loop {
        for text in take_steered(input.steer.as_ref()) {
            let m = Message::user(text);
            convo.push(m.clone());
            st.messages.push(m);
        }
        let summary = calls >= settings.max_iterations;
        if summary {
            convo.push(Message::user(SUMMARY_PROMPT));
        }
        calls += 1;
        let tools = if summary || input.tool_choice == ToolChoice::None {
            None
        } else {
            settings.toolbox.schemas_json()
        };
        let req = ChatRequest {
            messages: &convo,
            tools,
            tool_choice: input.tool_choice.wire(calls),
            stream: input.stream,
            sampling: &input.sampling,
        };
        let started = Instant::now();
        let result = {
            let mut sink = Forward {
                events,
                text: &mut st.segment,
            };
            tokio::select! {
                biased;
                _ = stopped(cancel, events) => None,
                r = settings.upstream.chat(&req, &mut sink) => Some(r),
            }
        };
        st.upstream_time += started.elapsed();
        let completion = match result {
            None => return st.outcome(TurnStatus::Cancelled, None),
            Some(Err(e)) => {
                log::warn!("upstream call {calls} failed: {e}");
                let kind = failure_kind(&e);
                return st.outcome_with(TurnStatus::Failed, Some(format!("{e}{}", e.hint())), kind);
            }
            Some(Ok(c)) => c,
        };
        if let Some(u) = &completion.usage {
            st.usage.add(u);
        }
        let _ = events.send(AgentEvent::Usage(Box::new(st.usage))).await;

        if !completion.tool_calls.is_empty() && !summary {
            let msg =
                Message::assistant_tool_calls(&completion.content, completion.tool_calls.clone());
            convo.push(msg.clone());
            st.messages.push(msg);
            st.segment.clear();
            let _ = events.send(AgentEvent::SegmentBreak).await;
            let started = Instant::now();
            let results = tokio::select! {
                biased;
                _ = stopped(cancel, events) => None,
                r = run_tools(&settings.toolbox, &completion.tool_calls, &ctx, events) => Some(r),
            };
            st.tool_time += started.elapsed();
            let Some(results) = results else {
                // Every call needs a result, or the history is unusable upstream.
                for tc in &completion.tool_calls {
                    st.messages
                        .push(Message::tool_result(&tc.id, INTERRUPTED_RESULT));
                }
                return st.outcome(TurnStatus::Cancelled, None);
            };
            for (tc, out) in completion.tool_calls.iter().zip(results) {
                if let Some(reason) = out.needs_approval {
                    st.pending.push(PendingApproval {
                        call: tc.clone(),
                        reason,
                    });
                    continue;
                }
                let m = Message::tool_result(&tc.id, out.text);
                convo.push(m.clone());
                st.messages.push(m);
            }
            if !st.pending.is_empty() {
                // Paused: the client answers the approvals in a later request,
                // which goes on from here without asking the model again.
                return st.outcome(TurnStatus::Completed, None);
            }
            continue;
        }

        let cut_off = completion.finish_reason.as_deref() == Some("length");
        if cut_off && continuations < max_continuations && !summary {
            continuations += 1;
            convo.push(Message::assistant(completion.content.clone()));
            convo.push(Message::user(CONTINUE_PROMPT));
            // The completion's content, not the segment: without streaming
            // no deltas filled the segment.
            st.continued.push_str(&completion.content);
            st.segment.clear();
            continue;
        }
        if !summary && has_steered(input.steer.as_ref()) {
            // Text steered in while the model answered: the answer so far is
            // kept, and the model is asked again with the new message.
            let m = Message::assistant(format!("{}{}", st.continued, completion.content));
            convo.push(m.clone());
            st.messages.push(m);
            st.continued.clear();
            st.segment.clear();
            let _ = events.send(AgentEvent::SegmentBreak).await;
            continue;
        }
        let status = if cut_off || summary {
            TurnStatus::Incomplete
        } else {
            TurnStatus::Completed
        };
        // The final text is what the model said in this segment (think blocks
        // already removed by the upstream client).
        st.segment = completion.content;
        let text = format!("{}{}", st.continued, st.segment);
        st.messages.push(Message::assistant(text));
        return st.outcome(status, None);
    }
}

/// What kind of failure an upstream error is, for the front door.
fn failure_kind(e: &UpstreamError) -> FailureKind {
    if e.is_context_overflow() {
        FailureKind::ContextOverflow
    } else if let Some(wait) = e.rate_limited() {
        FailureKind::RateLimited {
            retry_after_secs: wait.map(|d| d.as_secs().max(1)),
        }
    } else {
        FailureKind::Upstream
    }
}

/// Runs a batch of tool calls concurrently; results in the model's order.
/// A call that must wait for the client's approval does not run: it is
/// announced with `ApprovalRequired` and its output says so.
async fn run_tools(
    toolbox: &Toolbox,
    calls: &[ToolCall],
    ctx: &ToolContext,
    events: &EventSink,
) -> Vec<ToolOutput> {
    join_all(calls.iter().map(|tc| async move {
        if let Some(reason) =
            toolbox.approval_needed(&tc.function.name, &tc.function.arguments, ctx)
        {
            let _ = events
                .send(AgentEvent::ApprovalRequired(Box::new(ApprovalAsk {
                    call_id: tc.id.clone(),
                    name: tc.function.name.clone(),
                    arguments: tc.function.arguments.clone(),
                    reason: reason.clone(),
                })))
                .await;
            return ToolOutput::needs_approval(reason);
        }
        run_one(toolbox, tc, ctx, events).await
    }))
    .await
}

/// Runs the calls of a paused turn the client answered: approved ones run,
/// refused ones get [`DENIED_RESULT`]; results in order.
async fn run_resumed(
    toolbox: &Toolbox,
    resumed: &[ResumedCall],
    ctx: &ToolContext,
    events: &EventSink,
) -> Vec<ToolOutput> {
    let approved = ToolContext {
        approved: true,
        ..ctx.clone()
    };
    join_all(resumed.iter().map(|r| {
        let approved = &approved;
        async move {
            if r.approved {
                return run_one(toolbox, &r.call, approved, events).await;
            }
            let out = ToolOutput::new(false, DENIED_RESULT.to_string());
            announce(&r.call, events).await;
            finished(&r.call, &out, Duration::ZERO, events).await;
            out
        }
    }))
    .await
}

/// Runs one call between its `ToolStarted` and `ToolFinished`.
async fn run_one(
    toolbox: &Toolbox,
    tc: &ToolCall,
    ctx: &ToolContext,
    events: &EventSink,
) -> ToolOutput {
    announce(tc, events).await;
    let started = Instant::now();
    let out = toolbox
        .run(&tc.function.name, &tc.function.arguments, ctx)
        .await;
    finished(tc, &out, started.elapsed(), events).await;
    out
}

async fn announce(tc: &ToolCall, events: &EventSink) {
    let _ = events
        .send(AgentEvent::ToolStarted(Box::new(ToolStart {
            call_id: tc.id.clone(),
            name: tc.function.name.clone(),
            arguments: tc.function.arguments.clone(),
            preview: preview(&tc.function.arguments),
        })))
        .await;
}

async fn finished(tc: &ToolCall, out: &ToolOutput, duration: Duration, events: &EventSink) {
    let _ = events
        .send(AgentEvent::ToolFinished(Box::new(ToolEnd {
            call_id: tc.id.clone(),
            name: tc.function.name.clone(),
            result: out.text.chars().take(EVENT_RESULT_CHARS).collect(),
            ok: out.ok,
            duration,
        })))
        .await;
}

/// A one-line summary of a call's arguments: its first string argument.
pub fn preview(arguments: &str) -> String {
    let v: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
    let first = v
        .as_object()
        .and_then(|m| m.values().find_map(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| arguments.to_string());
    let line = first.lines().next().unwrap_or("").to_string();
    if line.chars().count() > PREVIEW_CHARS {
        format!("{}…", line.chars().take(PREVIEW_CHARS).collect::<String>())
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews() {
        assert_eq!(preview(r#"{"command":"ls -la\nmore"}"#), "ls -la");
        assert_eq!(preview("not json"), "not json");
        let long = format!(r#"{{"url":"{}"}}"#, "x".repeat(200));
        assert_eq!(preview(&long).chars().count(), PREVIEW_CHARS + 1);
    }
}
