//! Black-box tests of the agent turn loop against the scripted fake upstream:
//! streaming, tool rounds, parallel tools, interrupts, retries, fallback,
//! limits, and usage.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hermes::actors::agent::Interrupt;
use hermes::agent::{AgentEvent, FailureKind, TurnStatus};
use hermes::testing::fake_upstream::{FakeUpstream, Reply, ScriptedCall, StreamEnd};
use serde_json::{Value, json};

const MS: Duration = Duration::from_millis(1);

fn tool_messages(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .map(|msgs| {
            msgs.iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| {
                    (
                        m["tool_call_id"].as_str().unwrap_or("").to_string(),
                        m["content"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[actix::test]
async fn plain_streamed_answer() {
    let fake = FakeUpstream::start(vec![Reply::text_stream(
        &["Hel", "lo", " there"],
        20 * MS,
        10 * MS,
        (12, 3),
    )]);
    let (home, cwd) = dirs();
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (events, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.status, TurnStatus::Completed);
    assert_eq!(outcome.text, "Hello there");
    assert_eq!(text_of(&events), "Hello there");
    let deltas: Vec<_> = events
        .iter()
        .filter_map(|e| {
            if let AgentEvent::TextDelta(t) = e {
                Some(t.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        deltas,
        vec!["Hel", "lo", " there"],
        "each upstream delta is forwarded as it came"
    );
    assert_eq!(outcome.usage.total_tokens, 15);
    let req = &fake.requests()[0];
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["stream_options"]["include_usage"], true);
    assert_eq!(req.body["model"], "fake-model");
    assert_eq!(req.body["messages"][0]["role"], "system");
    assert_eq!(req.body["messages"].as_array().map(|m| m.len()), Some(2));
    assert!(req.body["tools"].as_array().is_some_and(|t| t.len() == 9));
}

#[actix::test]
async fn two_tool_rounds_carry_results_with_matching_ids_and_usage_sums() {
    let (home, cwd) = dirs();
    let file = cwd.path().join("notes.txt");
    let fake = FakeUpstream::start(vec![
        Reply::tool_stream(
            &[ScriptedCall::new(
                "call_w",
                "write_file",
                json!({"path": "notes.txt", "content": "alpha\nbeta\n"}),
            )],
            (10, 5),
        ),
        Reply::tool_stream(
            &[ScriptedCall::new(
                "call_r",
                "read_file",
                json!({"path": file}),
            )],
            (20, 6),
        ),
        Reply::text_stream(&["Done: ", "alpha, beta"], MS, MS, (30, 7)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (events, outcome) = h.run("write and read", true).await;
    assert_eq!(outcome.status, TurnStatus::Completed, "{outcome:?}");
    assert_eq!(outcome.text, "Done: alpha, beta");

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    let second = tool_messages(&reqs[1].body);
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].0, "call_w",
        "the tool result answers the call it belongs to"
    );
    assert!(second[0].1.contains("wrote 11 bytes"), "{second:?}");
    // The assistant message with the tool call precedes its result.
    let msgs = reqs[1].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let asst = &msgs[msgs.len() - 2];
    assert_eq!(asst["role"], "assistant");
    assert_eq!(asst["tool_calls"][0]["id"], "call_w");
    assert_eq!(asst["tool_calls"][0]["function"]["name"], "write_file");
    let third = tool_messages(&reqs[2].body);
    assert_eq!(
        third.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        vec!["call_w", "call_r"]
    );
    assert!(
        third[1].1.contains("alpha") && third[1].1.contains("beta"),
        "{third:?}"
    );

    // Usage is the sum over the three upstream calls.
    assert_eq!(outcome.usage.prompt_tokens, 60);
    assert_eq!(outcome.usage.completion_tokens, 18);
    assert_eq!(outcome.usage.total_tokens, 78);
    assert!(!outcome.usage.estimated, "the server's own figures");
    // Tool activity and segment breaks were reported.
    let breaks = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::SegmentBreak))
        .count();
    assert_eq!(breaks, 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolFinished(t) if t.ok && t.name == "read_file"))
    );
    // The turn's new messages form a valid transcript tail.
    let roles: Vec<_> = outcome.messages.iter().map(|m| m.role).collect();
    use hermes::openai::Role::*;
    assert_eq!(roles, vec![Assistant, Tool, Assistant, Tool, Assistant]);
}

#[actix::test]
async fn parallel_tool_calls_run_concurrently_and_answer_in_order() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        Reply::tool_stream(
            &[
                ScriptedCall::new(
                    "call_slow",
                    "terminal",
                    json!({"command": "sleep 0.5; echo SLOW"}),
                ),
                ScriptedCall::new("call_fast", "terminal", json!({"command": "echo FAST"})),
            ],
            (1, 1),
        ),
        Reply::text_stream(&["ok"], MS, MS, (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (events, outcome) = h.run("two at once", true).await;
    assert_eq!(outcome.status, TurnStatus::Completed);
    let results = tool_messages(&fake.requests()[1].body);
    assert_eq!(results[0].0, "call_slow");
    assert!(results[0].1.contains("SLOW"));
    assert_eq!(results[1].0, "call_fast");
    assert!(results[1].1.contains("FAST"));
    // The fast call finished first: they ran at the same time.
    let finished: Vec<_> = events
        .iter()
        .filter_map(|e| {
            if let AgentEvent::ToolFinished(t) = e {
                Some(t.call_id.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(finished, vec!["call_fast", "call_slow"]);
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[actix::test]
async fn terminal_timeout_kills_the_command_and_its_children() {
    let (home, cwd) = dirs();
    let pidfile = cwd.path().join("child.pid");
    let cmd = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let fake = FakeUpstream::start(vec![
        Reply::tool_stream(
            &[ScriptedCall::new(
                "c1",
                "terminal",
                json!({"command": cmd, "timeout": 1}),
            )],
            (1, 1),
        ),
        Reply::text_stream(&["it timed out"], MS, MS, (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (_, outcome) = h.run("run it", true).await;
    assert_eq!(outcome.status, TurnStatus::Completed);
    let result = &tool_messages(&fake.requests()[1].body)[0].1;
    assert!(result.contains("timed out after 1 s"), "{result}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(pid > 0, "the child wrote its pid");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !pid_alive(pid),
        "the grandchild `sleep 60` was killed with its group"
    );
}

#[actix::test]
async fn interrupt_mid_stream_closes_the_upstream_connection() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![Reply::numbered_stream(50, 10 * MS, 200 * MS)]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let mut rx = h.start("talk slowly", true).await;
    let mut seen = String::new();
    while seen.matches(' ').count() < 2 {
        match tokio::time::timeout(TURN_LIMIT, rx.recv()).await {
            Ok(Some(AgentEvent::TextDelta(t))) => seen.push_str(&t),
            Ok(Some(_)) => {}
            other => panic!("stream ended early: {other:?}"),
        }
    }
    let interrupted_at = Instant::now();
    assert!(
        h.agent.send(Interrupt).await.unwrap_or(false),
        "a turn was running"
    );
    let (_, outcome) = collect(rx).await;
    assert_eq!(outcome.status, TurnStatus::Cancelled);
    assert!(
        outcome.text.starts_with("w0 w1 "),
        "partial text kept: {:?}",
        outcome.text
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while fake.disconnects().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = fake.disconnects();
    assert!(!closed.is_empty(), "the upstream saw no disconnect");
    assert!(closed[0].duration_since(interrupted_at) < Duration::from_secs(2));
    // Interrupting an idle agent says so.
    assert!(!h.agent.send(Interrupt).await.unwrap_or(true));
}

#[actix::test]
async fn retries_503_then_succeeds() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        Reply::error(503, "overloaded").with_header("Retry-After", "0"),
        Reply::error(502, "bad gateway").with_header("Retry-After", "0"),
        Reply::text_stream(&["fine"], MS, MS, (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (_, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.status, TurnStatus::Completed, "{outcome:?}");
    assert_eq!(outcome.text, "fine");
    assert_eq!(fake.requests().len(), 3);
}

#[actix::test]
async fn gives_up_after_max_attempts_with_the_upstream_message() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start_with(vec![], |_| {
        Reply::error(429, "slow down please").with_header("Retry-After", "0")
    });
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (_, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.status, TurnStatus::Failed);
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap_or("")
            .contains("slow down please"),
        "{outcome:?}"
    );
    assert_eq!(fake.requests().len(), 3, "default max_attempts is 3");
}

#[actix::test]
async fn no_retry_on_400_and_the_message_is_kept() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![Reply::error(400, "model `x` does not exist")]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (_, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.status, TurnStatus::Failed);
    let err = outcome.error.unwrap_or_default();
    assert!(
        err.contains("400") && err.contains("model `x` does not exist"),
        "{err}"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[actix::test]
async fn falls_back_to_non_streaming_when_the_stream_fails_before_any_delta() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        Reply::broken_stream(&[], StreamEnd::Die),
        Reply::completion("from the fallback", "stop", (4, 2)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (events, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.status, TurnStatus::Completed, "{outcome:?}");
    assert_eq!(outcome.text, "from the fallback");
    assert_eq!(
        text_of(&events),
        "from the fallback",
        "listeners still get the text"
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].body["stream"], false);
}

#[actix::test]
async fn a_stream_dying_after_deltas_fails_without_duplicate_text() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        Reply::broken_stream(&["half an ", "answer"], StreamEnd::Die),
        Reply::completion("must not be used", "stop", (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (events, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.status, TurnStatus::Failed);
    assert_eq!(text_of(&events), "half an answer");
    assert_eq!(outcome.text, "half an answer");
    assert_eq!(
        fake.requests().len(),
        1,
        "no fallback after the first delta"
    );
}

#[actix::test]
async fn a_server_that_never_answers_times_out() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![Reply::Hang]);
    let mut c = config(&fake.url(), cwd.path());
    c.model.response_timeout = 0.5;
    let h = Harness::new(settings(c, home.path()));
    let started = Instant::now();
    let (_, outcome) = h.run("hi", false).await;
    assert_eq!(outcome.status, TurnStatus::Failed);
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap_or("")
            .contains("did not answer"),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[actix::test]
async fn a_stream_that_stalls_hits_the_chunk_timeout() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![Reply::broken_stream(&["partial"], StreamEnd::Hang)]);
    let mut c = config(&fake.url(), cwd.path());
    c.model.chunk_timeout = 0.5;
    let h = Harness::new(settings(c, home.path()));
    let (_, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.status, TurnStatus::Failed);
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap_or("")
            .contains("between two stream chunks"),
        "{outcome:?}"
    );
}

#[actix::test]
async fn max_iterations_ends_with_a_summary_call_without_tools() {
    let (home, cwd) = dirs();
    let call = |id: &str| {
        Reply::tool_stream(
            &[ScriptedCall::new(
                id,
                "list_directory",
                json!({"path": "."}),
            )],
            (1, 1),
        )
    };
    let fake = FakeUpstream::start(vec![
        call("c1"),
        call("c2"),
        Reply::text_stream(&["I listed twice; nothing left."], MS, MS, (1, 1)),
    ]);
    let mut c = config(&fake.url(), cwd.path());
    c.agent.max_iterations = 2;
    let h = Harness::new(settings(c, home.path()));
    let (_, outcome) = h.run("loop", true).await;
    assert_eq!(outcome.status, TurnStatus::Incomplete);
    assert_eq!(outcome.text, "I listed twice; nothing left.");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs[2].body.get("tools").is_none(),
        "the summary call offers no tools"
    );
    let msgs = reqs[2].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last = msgs.last().cloned().unwrap_or_default();
    assert_eq!(last["role"], "user");
    assert!(last["content"].as_str().unwrap_or("").contains("Summarise"));
}

#[actix::test]
async fn bad_tool_arguments_go_back_to_the_model_and_the_turn_goes_on() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        Reply::tool_stream(
            &[ScriptedCall::new("c1", "read_file", json!({"file": "x"}))],
            (1, 1),
        ),
        Reply::tool_stream(
            &[ScriptedCall {
                id: "c2".into(),
                name: "terminal".into(),
                arguments: "{not json".into(),
            }],
            (1, 1),
        ),
        Reply::tool_stream(
            &[ScriptedCall::new("c3", "no_such_tool", json!({}))],
            (1, 1),
        ),
        Reply::text_stream(&["recovered"], MS, MS, (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (events, outcome) = h.run("try", true).await;
    assert_eq!(outcome.status, TurnStatus::Completed);
    assert_eq!(outcome.text, "recovered");
    let reqs = fake.requests();
    let r1 = &tool_messages(&reqs[1].body)[0].1;
    assert!(
        r1.contains("invalid arguments for read_file") && r1.contains("path"),
        "{r1}"
    );
    let r2 = &tool_messages(&reqs[2].body)[1].1;
    assert!(r2.contains("not valid JSON"), "{r2}");
    let r3 = &tool_messages(&reqs[3].body)[2].1;
    assert!(r3.contains("unknown tool `no_such_tool`"), "{r3}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolFinished(t) if !t.ok))
    );
}

#[actix::test]
async fn a_dangerous_command_is_refused_under_deny_and_the_model_is_told_why() {
    let (home, cwd) = dirs();
    let marker = cwd.path().join("ran");
    let cmd = format!("touch {} && sudo rm -rf /", marker.display());
    let fake = FakeUpstream::start(vec![
        Reply::tool_stream(
            &[ScriptedCall::new("c1", "terminal", json!({"command": cmd}))],
            (1, 1),
        ),
        Reply::text_stream(&["I won't."], MS, MS, (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (_, outcome) = h.run("wipe it", true).await;
    assert_eq!(outcome.status, TurnStatus::Completed);
    let result = &tool_messages(&fake.requests()[1].body)[0].1;
    assert!(
        result.contains("refused") && result.contains("approvals.mode is `deny`"),
        "{result}"
    );
    assert!(!marker.exists(), "nothing of the command ran");
}

#[actix::test]
async fn length_cut_answers_are_continued() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        Reply::completion("first half, ", "length", (5, 5)),
        Reply::completion("second half.", "stop", (6, 6)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (_, outcome) = h.run("long please", false).await;
    assert_eq!(outcome.status, TurnStatus::Completed);
    assert_eq!(outcome.text, "first half, second half.");
    assert_eq!(outcome.usage.total_tokens, 22);
    let reqs = fake.requests();
    assert_eq!(
        reqs[0].body["stream"], false,
        "nobody listens for deltas: no streaming"
    );
    let msgs = reqs[1].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        msgs.last()
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .contains("Continue")
    );
    // The stored transcript holds one joined answer, not the scaffolding.
    assert_eq!(outcome.messages.len(), 1);
    assert_eq!(outcome.messages[0].text(), "first half, second half.");
}

#[actix::test]
async fn history_carries_over_between_turns() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        Reply::text_stream(&["Nice to meet you, Ada."], MS, MS, (1, 1)),
        Reply::text_stream(&["You are Ada."], MS, MS, (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    h.run("I am Ada", true).await;
    let (_, outcome) = h.run("Who am I?", true).await;
    assert_eq!(outcome.text, "You are Ada.");
    let msgs = fake.requests()[1].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let texts: Vec<_> = msgs
        .iter()
        .skip(1)
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        texts,
        vec!["I am Ada", "Nice to meet you, Ada.", "Who am I?"]
    );
}

#[actix::test]
async fn think_blocks_never_reach_the_answer() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![Reply::text_stream(
        &["<thi", "nk>secret plan</th", "ink>Answer."],
        MS,
        MS,
        (1, 1),
    )]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (events, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.text, "Answer.");
    assert_eq!(text_of(&events), "Answer.");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::ReasoningDelta(r) if r.contains("secret")))
    );
}

#[actix::test]
async fn interrupt_kills_running_tool_processes_at_once() {
    let (home, cwd) = dirs();
    let pidfile = cwd.path().join("tool.pid");
    let cmd = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let fake = FakeUpstream::start(vec![Reply::tool_stream(
        &[ScriptedCall::new("c1", "terminal", json!({"command": cmd}))],
        (1, 1),
    )]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let rx = h.start("run something long", true).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pidfile.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(pid > 0 && pid_alive(pid), "the tool is running");
    let interrupted = Instant::now();
    assert!(h.agent.send(Interrupt).await.unwrap_or(false));
    let (_, outcome) = collect(rx).await;
    assert_eq!(outcome.status, TurnStatus::Cancelled);
    while pid_alive(pid) && interrupted.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pid_alive(pid), "the tool's process group was killed");
    // The transcript stays valid: the call has a result.
    let last = outcome.messages.last().map(|m| (m.role, m.text()));
    assert_eq!(
        last,
        Some((
            hermes::openai::Role::Tool,
            "Interrupted by the user before this tool finished.".into()
        ))
    );
}

#[actix::test]
async fn streamed_calls_reuse_one_upstream_connection() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        Reply::tool_stream(
            &[ScriptedCall::new("c1", "todo", json!({"items": []}))],
            (1, 1),
        ),
        Reply::text_stream(&["one"], MS, MS, (1, 1)),
        Reply::text_stream(&["two"], MS, MS, (1, 1)),
        Reply::text_stream(&["three"], MS, MS, (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    for want in ["one", "two", "three"] {
        let (_, outcome) = h.run("hi", true).await;
        assert_eq!(outcome.text, want, "{outcome:?}");
    }
    assert_eq!(fake.requests().len(), 4);
    // The body is read to its end after `[DONE]`, so the connection goes
    // back to the pool instead of being closed after every streamed step.
    assert_eq!(
        fake.connections(),
        1,
        "one connection for four streamed calls"
    );
}

#[actix::test]
async fn a_500_is_not_retried_and_a_dropped_request_is_not_sent_again() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        Reply::error(500, "content: Input should be a valid string"),
        Reply::text_stream(&["must not be used"], MS, MS, (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (_, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.status, TurnStatus::Failed);
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap_or("")
            .contains("valid string"),
        "{outcome:?}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "a 500 is billed once, not three times"
    );

    // The server took a plain request and closed the connection without an
    // answer. (A streamed one falls back to one whole request: see below.)
    let fake = FakeUpstream::start(vec![
        Reply::Drop,
        Reply::completion("must not be used", "stop", (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (_, outcome) = h.run("hi", false).await;
    assert_eq!(outcome.status, TurnStatus::Failed, "{outcome:?}");
    assert_eq!(
        fake.requests().len(),
        1,
        "a request the server received is not resent"
    );
}

#[actix::test]
async fn a_context_overflow_is_the_clients_input_not_a_server_failure() {
    let (home, cwd) = dirs();
    for message in [
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens",
        "Requested tokens (5000) exceed context window of 4096",
    ] {
        let fake = FakeUpstream::start(vec![Reply::error(400, message)]);
        let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
        let (_, outcome) = h.run("hi", true).await;
        assert_eq!(outcome.status, TurnStatus::Failed);
        assert_eq!(outcome.failure, FailureKind::ContextOverflow, "{message}");
        assert_eq!(fake.requests().len(), 1);
    }
    let fake = FakeUpstream::start(vec![Reply::error(400, "unknown model")]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (_, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.failure, FailureKind::Upstream);
}

#[actix::test]
async fn usage_is_estimated_and_marked_when_the_server_reports_none() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        Reply::text_stream(&["12345678"], MS, MS, (0, 0)).without_usage(),
        Reply::completion("abcd", "stop", (0, 0)).without_usage(),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (_, streamed) = h.run("hi", true).await;
    assert!(streamed.usage.estimated, "{:?}", streamed.usage);
    assert_eq!(
        streamed.usage.completion_tokens, 2,
        "8 characters, 4 per token"
    );
    assert!(streamed.usage.prompt_tokens > 0);
    assert_eq!(
        streamed.usage.total_tokens,
        streamed.usage.prompt_tokens + streamed.usage.completion_tokens
    );
    let (_, whole) = h.run("hi", false).await;
    assert!(whole.usage.estimated);
    assert_eq!(whole.usage.completion_tokens, 1);
    // The request asked for usage.
    assert_eq!(
        fake.requests()[0].body["stream_options"]["include_usage"],
        true
    );
}

#[actix::test]
async fn a_server_that_cannot_stream_with_tools_is_asked_for_whole_answers() {
    let (home, cwd) = dirs();
    let fake = FakeUpstream::start(vec![
        // The server takes the streamed request and hangs up without an
        // answer (as llama-cpp-python does for streamed tool choice "auto").
        Reply::Drop,
        Reply::completion("whole answer", "stop", (1, 1)),
        Reply::completion("second, whole at once", "stop", (1, 1)),
    ]);
    let h = Harness::new(settings(config(&fake.url(), cwd.path()), home.path()));
    let (events, outcome) = h.run("hi", true).await;
    assert_eq!(outcome.text, "whole answer");
    assert_eq!(
        text_of(&events),
        "whole answer",
        "listeners still get the text"
    );
    let (events, outcome) = h.run("again", true).await;
    assert_eq!(outcome.text, "second, whole at once");
    assert_eq!(text_of(&events), "second, whole at once");
    let streamed: Vec<bool> = fake
        .requests()
        .iter()
        .map(|r| r.body["stream"] == true)
        .collect();
    assert_eq!(
        streamed,
        vec![true, false, false],
        "no second failed stream"
    );
}
