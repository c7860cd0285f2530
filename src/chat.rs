//! `hermes chat`: one agent turn from the terminal.
//!
//! Answer text goes to stdout the moment each delta arrives; tool activity
//! goes to stderr, so `hermes chat "…" > answer.txt` captures only the answer.
//! Ctrl-C interrupts the turn (the upstream request is dropped, tool processes
//! killed) and exits 130.

use std::io::{Read, Write};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::actors::agent::{AgentActor, Interrupt, RunTurn};
use crate::actors::pool::ArbiterPool;
use crate::agent::{AgentEvent, AgentSettings, EVENT_CHANNEL_CAPACITY, TurnInput, TurnStatus};
use crate::config::{self, Loaded};
use crate::openai::Message;
use crate::outcome::Outcome;
use crate::upstream::UpstreamSettings;

/// The front-door name used for `platform_toolsets` and the prompt hint.
const PLATFORM: &str = "cli";

/// What `hermes chat` was asked.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// Model for this run (overrides configuration).
    pub model: Option<String>,
    /// Toolsets for this run; `Some(empty)`: no tools.
    pub toolsets: Option<Vec<String>>,
    /// Upstream calls allowed in this turn.
    pub max_iterations: Option<u32>,
    /// The message; `-` reads it from stdin.
    pub message: String,
}

/// Runs the command.
pub fn run(mut loaded: Loaded, args: &ChatOptions) -> Outcome {
    let c = &mut loaded.config;
    if let Some(m) = &args.model {
        c.model.default = Some(m.clone());
    }
    if let Some(n) = args.max_iterations {
        if n == 0 {
            eprintln!("hermes: --max-iterations must be at least 1");
            return Outcome::BadConfig;
        }
        c.agent.max_iterations = n;
    }
    // `--toolsets ""` (or only commas and spaces) means no tools at all.
    let toolsets: Vec<String> = match &args.toolsets {
        Some(given) => given
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        None => c.toolsets_for(PLATFORM),
    };
    if let Some(bad) = toolsets
        .iter()
        .find(|t| !config::TOOLSETS.contains(&t.as_str()))
    {
        eprintln!(
            "hermes: --toolsets: unknown toolset `{bad}`; expected some of {}",
            config::TOOLSETS.join(", ")
        );
        return Outcome::BadConfig;
    }
    let upstream = match UpstreamSettings::from_config(c) {
        Ok(u) => u,
        Err(problem) => {
            eprintln!("hermes: {problem}");
            return Outcome::BadConfig;
        }
    };
    let message = if args.message == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprintln!("hermes: cannot read the message from stdin: {e}");
            return Outcome::BadConfig;
        }
        s
    } else {
        args.message.clone()
    };
    if message.trim().is_empty() {
        eprintln!("hermes: the message is empty");
        return Outcome::BadConfig;
    }
    let settings = Arc::new(AgentSettings::for_front_door(
        &loaded, PLATFORM, upstream, &toolsets,
    ));
    let system = actix::System::new();
    system.block_on(drive(settings, message))
}

async fn drive(settings: Arc<AgentSettings>, message: String) -> Outcome {
    let pool = ArbiterPool::new(Some(1));
    let agent = AgentActor::start_on(&pool, settings, Vec::new());
    let (tx, mut rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let input = TurnInput::new(Message::user(message), None, true);
    match agent.send(RunTurn { input, events: tx }).await {
        Ok(Ok(())) => {}
        _ => {
            eprintln!("hermes: the agent could not start");
            return Outcome::Failed;
        }
    }
    let mut stdout = std::io::stdout();
    let mut ended_with_newline = true;
    let mut interrupted = false;
    let code = loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                agent.do_send(Interrupt);
                continue;
            }
        };
        let Some(ev) = ev else {
            eprintln!("hermes: the agent stopped without an answer");
            break Outcome::Failed;
        };
        match ev {
            AgentEvent::TextDelta(t) => {
                let _ = stdout.write_all(t.as_bytes());
                let _ = stdout.flush();
                ended_with_newline = t.ends_with('\n');
            }
            AgentEvent::SegmentBreak => {
                if !ended_with_newline {
                    let _ = writeln!(stdout);
                    ended_with_newline = true;
                }
            }
            AgentEvent::ToolStarted(t) => eprintln!("⚙ {}: {}", t.name, t.preview),
            AgentEvent::ToolFinished(t) => {
                let mark = if t.ok { "✓" } else { "✗" };
                let first = t.result.lines().next().unwrap_or("");
                eprintln!(
                    "  {mark} {} ({:.1} s) {first}",
                    t.name,
                    t.duration.as_secs_f64()
                );
            }
            AgentEvent::ReasoningDelta(_)
            | AgentEvent::Usage(_)
            | AgentEvent::ApprovalRequired { .. } => {}
            AgentEvent::Finished(outcome) => {
                if !ended_with_newline {
                    let _ = writeln!(stdout);
                }
                break match outcome.status {
                    TurnStatus::Completed => Outcome::Done,
                    TurnStatus::Incomplete => {
                        eprintln!("hermes: the answer is incomplete (a limit was reached)");
                        Outcome::Done
                    }
                    TurnStatus::Cancelled => {
                        eprintln!("hermes: interrupted");
                        Outcome::Interrupted
                    }
                    TurnStatus::Failed => {
                        eprintln!(
                            "hermes: {}",
                            outcome.error.as_deref().unwrap_or("the turn failed")
                        );
                        Outcome::Failed
                    }
                };
            }
        }
    };
    pool.stop();
    code
}
