//! `hermes-fake-upstream`: the scripted fake model server as a process, for
//! driving the real `hermes` binary with real clients (SDK compatibility
//! tests) and for benchmarks. Listens on 127.0.0.1, prints its base URL on
//! the first line of stdout, and answers by what the last message says:
//!
//! - a tool result → "The tool said: <first line of the result>"
//! - "use a tool" → a `terminal` call running `echo tool-output-42`
//! - "fail" → HTTP 400 with an OpenAI error
//! - "break" → a stream that dies after two deltas
//! - anything else → "Hello from the fake upstream." in five deltas
//!
//! Options: `--delay-ms N` between deltas (default 5), `--threads N`.

use std::io::Write;
use std::time::Duration;

use hermes::testing::fake_upstream::{FakeUpstream, Recorded, Reply, ScriptedCall, StreamEnd};
use serde_json::{Value, json};

/// The answer's deltas.
const GREETING: &[&str] = &["Hello", " from", " the fake", " upstream", "."];

fn reply(r: &Recorded, gap: Duration) -> Reply {
    let stream = r.body["stream"].as_bool().unwrap_or(false);
    let last = r.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    let text = match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    let answer = |deltas: &[&str]| {
        if stream {
            Reply::text_stream(deltas, gap, gap, (11, deltas.len() as u64))
        } else {
            Reply::completion(&deltas.concat(), "stop", (11, deltas.len() as u64))
        }
    };
    if last["role"] == "tool" {
        let line = text
            .lines()
            .find(|l| l.contains("tool-output"))
            .unwrap_or("(nothing)")
            .trim()
            .to_string();
        return answer(&["The tool said: ", &line]);
    }
    if text.contains("use a tool") {
        let call = ScriptedCall::new(
            "call_fake_1",
            "terminal",
            json!({"command": "echo tool-output-42"}),
        );
        return if stream {
            Reply::tool_stream(&[call], (9, 4))
        } else {
            Reply::tool_completion(&[call], (9, 4))
        };
    }
    if text.contains("count slowly") {
        // Long enough (4 s) to come back to, resume and cancel.
        let slow = Duration::from_millis(20);
        return Reply::numbered_stream(200, slow, slow);
    }
    if text.contains("fail") {
        return Reply::error(400, "the fake upstream was asked to fail");
    }
    if text.contains("break") && stream {
        return Reply::broken_stream(&["This answer ", "breaks"], StreamEnd::Die);
    }
    answer(GREETING)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut gap = Duration::from_millis(5);
    let mut threads = 1;
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), value) {
            ("--delay-ms", Some(v)) => gap = Duration::from_millis(v),
            ("--threads", Some(v)) => threads = v as usize,
            _ => {
                eprintln!("usage: hermes-fake-upstream [--delay-ms N] [--threads N]");
                std::process::exit(2);
            }
        }
    }
    let fake = FakeUpstream::start_threads(vec![], Box::new(move |r| reply(r, gap)), threads);
    println!("{}", fake.url());
    let _ = std::io::stdout().flush();
    // Serve until killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
