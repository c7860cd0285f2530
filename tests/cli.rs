//! The `hermes` binary as a child process: `hermes chat` end to end against
//! the fake upstream, `config check`, `version`, and the error messages a
//! user needs when something is misconfigured.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hermes::testing::fake_upstream::{FakeUpstream, Reply, ScriptedCall};
use serde_json::json;

const MS: Duration = Duration::from_millis(1);

/// `hermes` with a clean environment: only PATH, HOME and what the test sets.
fn hermes(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hermes"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("HERMES_HOME", home.join("hermes-home"))
        .stdin(Stdio::null());
    c
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run hermes: {e}"));
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn chat_streams_the_answer_to_stdout() {
    let fake = FakeUpstream::start(vec![Reply::text_stream(
        &["Hello", ", ", "world"],
        MS,
        MS,
        (3, 3),
    )]);
    let dir = tmp();
    let (code, out, err) = run(hermes(dir.path())
        .env("OPENAI_BASE_URL", fake.url())
        .env("HERMES_MODEL", "fake-model")
        .args(["chat", "say hello"]));
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "Hello, world\n");
    let req = &fake.requests()[0];
    assert_eq!(req.body["model"], "fake-model");
    assert_eq!(req.body["messages"][1]["content"], "say hello");
    assert!(
        req.header("authorization").is_none(),
        "no key configured, none sent"
    );
    assert!(
        dir.path().join("hermes-home").is_dir(),
        "HERMES_HOME was created"
    );
}

#[test]
fn chat_shows_tool_activity_on_stderr_and_sends_the_key() {
    let fake = FakeUpstream::start(vec![
        Reply::tool_stream(
            &[ScriptedCall::new(
                "c1",
                "terminal",
                json!({"command": "echo from-tool"}),
            )],
            (1, 1),
        ),
        Reply::text_stream(&["The tool said from-tool."], MS, MS, (1, 1)),
    ]);
    let dir = tmp();
    let (code, out, err) = run(hermes(dir.path())
        .env("OPENAI_BASE_URL", fake.url())
        .env("OPENAI_API_KEY", "sk-test-key-0123456789")
        .env("HERMES_MODEL", "m")
        .args(["chat", "--toolsets", "terminal", "use a tool"]));
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(
        out, "The tool said from-tool.\n",
        "stdout holds only the answer"
    );
    assert!(err.contains("terminal: echo from-tool"), "{err}");
    assert!(err.contains("✓ terminal"), "{err}");
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some("Bearer sk-test-key-0123456789")
    );
    let tools = fake.requests()[0].body["tools"].as_array().map(|t| t.len());
    assert_eq!(tools, Some(1), "--toolsets picked only the terminal");
    // Servers whose default is "none" (llama-cpp-python) must be told.
    assert_eq!(fake.requests()[0].body["tool_choice"], "auto");
    // The follow-up call carries the tool call with `""` content, never
    // `null` (llama-cpp-python answers 500 to that).
    let second = &fake.requests()[1].body["messages"];
    assert_eq!(second[2]["role"], "assistant");
    assert_eq!(second[2]["content"], "");
    assert_eq!(second[3]["role"], "tool");
}

#[test]
fn chat_with_an_empty_toolset_list_sends_no_tools() {
    let fake = FakeUpstream::start(vec![Reply::text_stream(&["ok"], MS, MS, (1, 1))]);
    let dir = tmp();
    let (code, out, err) = run(hermes(dir.path())
        .env("OPENAI_BASE_URL", fake.url())
        .env("HERMES_MODEL", "m")
        .args(["chat", "--toolsets", "", "hi"]));
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "ok\n");
    let body = &fake.requests()[0].body;
    assert!(body.get("tools").is_none(), "{body}");
    assert!(
        body.get("tool_choice").is_none(),
        "no tools, no tool_choice"
    );
}

#[test]
fn chat_reads_the_message_from_stdin_and_takes_flags() {
    let fake = FakeUpstream::start(vec![Reply::text_stream(&["ok"], MS, MS, (1, 1))]);
    let dir = tmp();
    let mut cmd = hermes(dir.path());
    cmd.env("OPENAI_BASE_URL", fake.url())
        .env("HERMES_MODEL", "from-env")
        .args(["chat", "-m", "from-flag", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(b"question from stdin");
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let req = &fake.requests()[0];
    assert_eq!(req.body["model"], "from-flag", "flags beat the environment");
    assert_eq!(req.body["messages"][1]["content"], "question from stdin");
}

#[test]
fn chat_without_a_model_says_what_to_set() {
    let dir = tmp();
    let (code, out, err) = run(hermes(dir.path()).args(["chat", "hi"]));
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("OPENROUTER_API_KEY") && err.contains("HERMES_MODEL"),
        "{err}"
    );
    let (code, _, err) = run(hermes(dir.path())
        .env("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
        .args(["chat", "hi"]));
    assert_eq!(code, 2);
    assert!(err.contains("HERMES_MODEL"), "{err}");
}

#[test]
fn chat_with_an_unreachable_upstream_fails_clearly() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    let dir = tmp();
    let (code, _, err) = run(hermes(dir.path())
        .env("OPENAI_BASE_URL", format!("http://127.0.0.1:{port}/v1"))
        .env("HERMES_MODEL", "m")
        .args(["chat", "hi"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the model server") && err.contains("OPENAI_BASE_URL"),
        "{err}"
    );
}

#[test]
fn chat_with_a_bad_key_names_the_key_settings() {
    let fake = FakeUpstream::start(vec![Reply::error(401, "Incorrect API key provided")]);
    let dir = tmp();
    let (code, _, err) = run(hermes(dir.path())
        .env("OPENAI_BASE_URL", fake.url())
        .env("OPENAI_API_KEY", "sk-wrong-000000000000")
        .env("HERMES_MODEL", "m")
        .args(["chat", "hi"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("401") && err.contains("Incorrect API key provided"),
        "{err}"
    );
    assert!(err.contains("OPENAI_API_KEY"), "{err}");
    assert!(
        !err.contains("sk-wrong-000000000000"),
        "the key never appears: {err}"
    );
    assert_eq!(fake.requests().len(), 1, "401 is not retried");
}

#[test]
fn config_unknown_key_is_named() {
    let dir = tmp();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "api_server:\n  portt: 9000\n").unwrap_or_default();
    let (code, _, err) = run(hermes(dir.path())
        .args(["--config"])
        .arg(&cfg)
        .args(["config", "check"]));
    assert_eq!(code, 2);
    assert!(err.contains("portt") && err.contains("api_server"), "{err}");
}

#[test]
fn config_bad_port_names_key_and_value() {
    let dir = tmp();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "api_server:\n  port: eighty\n").unwrap_or_default();
    let (code, _, err) = run(hermes(dir.path())
        .arg("--config")
        .arg(&cfg)
        .args(["config", "check"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("api_server.port") && err.contains("eighty"),
        "{err}"
    );
    let (code, _, err) = run(hermes(dir.path())
        .env("API_SERVER_PORT", "99999")
        .args(["config", "check"]));
    assert_eq!(code, 2);
    assert!(err.contains("API_SERVER_PORT=99999"), "{err}");
}

#[test]
fn unwritable_home_is_explained() {
    let dir = tmp();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap_or_default();
    // A home below a regular file cannot be created, even by root.
    let (code, _, err) = run(hermes(dir.path())
        .env("HERMES_HOME", file.join("home"))
        .args(["config", "check"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("HERMES_HOME") && err.contains("a-file/home"),
        "{err}"
    );
    let (code, _, err) = run(hermes(dir.path())
        .env("HERMES_HOME", &file)
        .args(["config", "check"]));
    assert_eq!(code, 2);
    assert!(err.contains("not a directory"), "{err}");
}

#[test]
fn config_check_masks_secrets_and_reads_dotenv() {
    let dir = tmp();
    let home = dir.path().join("hermes-home");
    std::fs::create_dir_all(&home).unwrap_or_default();
    std::fs::write(
        home.join(".env"),
        "OPENROUTER_API_KEY=sk-or-v1-secretsecretsecret9876\nHERMES_MODEL=from-dotenv\n",
    )
    .unwrap_or_default();
    let (code, out, err) = run(hermes(dir.path())
        .env("HERMES_MODEL", "from-real-env")
        .args(["config", "check"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sk-…9876"), "{out}");
    assert!(!out.contains("secretsecret"), "{out}");
    assert!(
        out.contains("from-real-env"),
        "the real environment beats .env: {out}"
    );
}

#[test]
fn the_repository_config_yaml_passes() {
    let dir = tmp();
    let (code, out, err) = run(hermes(dir.path())
        .arg("--config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml"))
        .args(["config", "check"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("model_name: hermes-agent"), "{out}");
}

#[test]
fn version_and_help() {
    let dir = tmp();
    let (code, out, _) = run(hermes(dir.path()).arg("version"));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("hermes {}", env!("CARGO_PKG_VERSION")));
    let (code, out, _) = run(hermes(dir.path()).arg("--version"));
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
    let (code, out, _) = run(hermes(dir.path()).args(["chat", "--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("--max-iterations") && out.contains("--toolsets"));
}

#[test]
fn slack_manifest_is_json_slack_accepts() {
    let dir = tmp();
    let (code, out, err) = run(hermes(dir.path()).args(["slack", "manifest", "--name", "Ada"]));
    assert_eq!(code, 0, "{err}");
    let m: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(m["display_information"]["name"], "Ada");
    assert_eq!(m["settings"]["socket_mode_enabled"], true);
    assert_eq!(m["features"]["slash_commands"][0]["command"], "/hermes");
    let events = m["settings"]["event_subscriptions"]["bot_events"].to_string();
    for e in ["app_mention", "message.im", "message.channels"] {
        assert!(events.contains(e), "{events}");
    }
    let scopes = m["oauth_config"]["scopes"]["bot"].to_string();
    for s in ["chat:write", "commands", "assistant:write", "im:history"] {
        assert!(scopes.contains(s), "{scopes}");
    }
}
