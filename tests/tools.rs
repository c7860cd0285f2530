//! The tools through their public entry point, as the model calls them:
//! names, JSON arguments, refusals and results.

mod common;

use std::sync::Arc;

use hermes::config::Config;
use hermes::testing::fake_upstream::FakeUpstream;
use hermes::tools::{SessionTools, ToolContext, ToolOutput, ToolSettings, Toolbox};
use serde_json::json;

struct Env {
    _home: tempfile::TempDir,
    cwd: tempfile::TempDir,
    ctx: ToolContext,
    tb: Toolbox,
}

fn env_with(mut f: impl FnMut(&mut Config)) -> Env {
    let (home, cwd) = common::dirs();
    let mut c = Config::defaults();
    c.terminal.cwd = Some(cwd.path().to_path_buf());
    f(&mut c);
    let settings = Arc::new(ToolSettings::from_config(&c, home.path(), None));
    let ctx = ToolContext {
        settings,
        session: SessionTools::default(),
        approved: false,
    };
    Env {
        _home: home,
        cwd,
        ctx,
        tb: Toolbox::new(&c.toolsets),
    }
}

fn env() -> Env {
    env_with(|_| {})
}

impl Env {
    async fn call(&self, name: &str, args: serde_json::Value) -> ToolOutput {
        self.tb.run(name, &args.to_string(), &self.ctx).await
    }
}

#[actix::test]
async fn write_then_read_round_trips() {
    let e = env();
    let w = e
        .call(
            "write_file",
            json!({"path": "sub/dir/a.txt", "content": "one\ntwo\nthree\n"}),
        )
        .await;
    assert!(w.ok, "{w:?}");
    assert!(
        e.cwd.path().join("sub/dir/a.txt").exists(),
        "parent directories were created"
    );
    let r = e.call("read_file", json!({"path": "sub/dir/a.txt"})).await;
    assert!(r.ok);
    assert_eq!(r.text, "     1\tone\n     2\ttwo\n     3\tthree\n");
    let r = e
        .call(
            "read_file",
            json!({"path": "sub/dir/a.txt", "offset": 2, "limit": 1}),
        )
        .await;
    assert_eq!(r.text, "     2\ttwo\n[lines 2-2 of 3]\n");
}

#[actix::test]
async fn read_file_errors_are_clear() {
    let e = env();
    std::fs::write(e.cwd.path().join("bin"), [0u8, 1, 2, 3]).unwrap_or_default();
    let r = e.call("read_file", json!({"path": "bin"})).await;
    assert!(!r.ok && r.text.contains("binary"), "{r:?}");
    let r = e.call("read_file", json!({"path": "."})).await;
    assert!(!r.ok && r.text.contains("directory"), "{r:?}");
    let r = e.call("read_file", json!({"path": "missing.txt"})).await;
    assert!(!r.ok && r.text.contains("does not exist"), "{r:?}");
}

#[actix::test]
async fn patch_refuses_ambiguous_and_absent_matches() {
    let e = env();
    std::fs::write(e.cwd.path().join("f.txt"), "x = 1\nx = 1\ny = 2\n").unwrap_or_default();
    let r = e
        .call(
            "patch",
            json!({"path": "f.txt", "old_string": "x = 1", "new_string": "x = 3"}),
        )
        .await;
    assert!(!r.ok && r.text.contains("matches 2 places"), "{r:?}");
    let unchanged = std::fs::read_to_string(e.cwd.path().join("f.txt")).unwrap_or_default();
    assert_eq!(
        unchanged, "x = 1\nx = 1\ny = 2\n",
        "an ambiguous patch changes nothing"
    );
    let r = e
        .call(
            "patch",
            json!({"path": "f.txt", "old_string": "z", "new_string": "q"}),
        )
        .await;
    assert!(!r.ok && r.text.contains("not found"), "{r:?}");
    let r = e
        .call(
            "patch",
            json!({"path": "f.txt", "old_string": "y = 2", "new_string": "y = 5"}),
        )
        .await;
    assert!(r.ok, "{r:?}");
    let r =
        e.call("patch", json!({"path": "f.txt", "old_string": "x = 1", "new_string": "x = 0", "replace_all": true})).await;
    assert!(r.ok && r.text.contains("2 occurrences"), "{r:?}");
    let text = std::fs::read_to_string(e.cwd.path().join("f.txt")).unwrap_or_default();
    assert_eq!(text, "x = 0\nx = 0\ny = 5\n");
}

#[actix::test]
async fn the_secrets_file_cannot_be_written() {
    let e = env();
    let env_path = e.ctx.settings.home.join(".env");
    let r = e
        .call("write_file", json!({"path": env_path, "content": "X=1"}))
        .await;
    assert!(!r.ok && r.text.contains("secrets"), "{r:?}");
    assert!(!env_path.exists());
}

#[actix::test]
async fn search_files_honours_gitignore_and_globs() {
    let e = env();
    let root = e.cwd.path();
    std::fs::write(root.join(".gitignore"), "ignored/\n").unwrap_or_default();
    std::fs::create_dir_all(root.join("ignored")).unwrap_or_default();
    std::fs::create_dir_all(root.join("src")).unwrap_or_default();
    std::fs::write(root.join("ignored/a.rs"), "fn needle() {}\n").unwrap_or_default();
    std::fs::write(root.join("src/b.rs"), "// nothing\nfn needle() {}\n").unwrap_or_default();
    std::fs::write(root.join("src/c.txt"), "needle in text\n").unwrap_or_default();
    std::fs::write(root.join("src/d.bin"), b"needle\0binary").unwrap_or_default();
    let r = e.call("search_files", json!({"pattern": "needle"})).await;
    assert!(r.ok);
    assert!(r.text.contains("src/b.rs:2:fn needle() {}"), "{}", r.text);
    assert!(r.text.contains("src/c.txt:1:"), "{}", r.text);
    assert!(
        !r.text.contains("ignored"),
        "gitignored paths are skipped: {}",
        r.text
    );
    assert!(
        !r.text.contains("d.bin"),
        "binary files are skipped: {}",
        r.text
    );
    let r = e
        .call("search_files", json!({"pattern": "needle", "glob": "*.rs"}))
        .await;
    assert!(
        r.text.contains("b.rs") && !r.text.contains("c.txt"),
        "{}",
        r.text
    );
    let r = e
        .call("search_files", json!({"pattern": "(unclosed"}))
        .await;
    assert!(!r.ok && r.text.contains("regular expression"));
}

#[actix::test]
async fn list_directory_shows_types_and_sizes() {
    let e = env();
    std::fs::create_dir(e.cwd.path().join("d")).unwrap_or_default();
    std::fs::write(e.cwd.path().join("f"), "12345").unwrap_or_default();
    let r = e.call("list_directory", json!({"path": "."})).await;
    assert!(r.ok);
    assert!(
        r.text.contains("dir   d/") && r.text.contains("file  f (5 bytes)"),
        "{}",
        r.text
    );
}

#[actix::test]
async fn web_fetch_refuses_loopback_unless_allowed() {
    let fake = FakeUpstream::start(vec![]);
    let url = format!("{}/page", fake.url());
    let e = env();
    let r = e.call("web_fetch", json!({"url": url})).await;
    assert!(
        !r.ok && r.text.contains("refused") && r.text.contains("allow_private"),
        "{r:?}"
    );
    assert!(fake.requests().is_empty(), "nothing was sent");
    let r = e
        .call("web_fetch", json!({"url": "http://localhost:1/"}))
        .await;
    assert!(
        !r.ok && r.text.contains("refused"),
        "names resolving to loopback are refused too: {r:?}"
    );
    let r = e
        .call("web_fetch", json!({"url": "file:///etc/passwd"}))
        .await;
    assert!(!r.ok && r.text.contains("only http"), "{r:?}");

    let allowed = env_with(|c| c.tools.web_fetch.allow_private = true);
    let r = allowed.call("web_fetch", json!({"url": url})).await;
    assert!(
        r.text.contains("Status: 404") && r.text.contains("not found"),
        "{r:?}"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[actix::test]
async fn memory_add_replace_remove_and_cap() {
    let e = env_with(|c| c.tools.memory.max_chars = 60);
    assert!(
        e.call(
            "memory",
            json!({"action": "add", "content": "User prefers metric units"})
        )
        .await
        .ok
    );
    assert!(
        e.call(
            "memory",
            json!({"action": "add", "content": "Server runs Debian"})
        )
        .await
        .ok
    );
    let r = e.call("memory", json!({"action": "read"})).await;
    assert!(r.text.contains("metric") && r.text.contains("Debian"));
    let r = e
        .call(
            "memory",
            json!({"action": "replace", "old": "Debian", "content": "Server runs Ubuntu"}),
        )
        .await;
    assert!(r.ok, "{r:?}");
    let r = e
        .call(
            "memory",
            json!({"action": "add", "content": "x".repeat(50)}),
        )
        .await;
    assert!(!r.ok && r.text.contains("limit"), "{r:?}");
    assert!(
        e.call("memory", json!({"action": "remove", "old": "metric"}))
            .await
            .ok
    );
    let entries = hermes::tools::memory::read_entries(&e.ctx.settings.home);
    assert_eq!(entries, vec!["Server runs Ubuntu".to_string()]);
    // Memory shows up in the system prompt of later turns.
    let p = hermes::agent::prompt::system_prompt("cli", &e.ctx.settings.home, true, None);
    assert!(p.contains("Server runs Ubuntu"));
}

#[actix::test]
async fn todo_keeps_the_list_per_session() {
    let e = env();
    let items = json!([{"id":"1","content":"read","status":"completed"},{"id":"2","content":"write","status":"pending"}]);
    let r = e.call("todo", json!({"items": items})).await;
    assert!(r.ok);
    let r = e.call("todo", json!({})).await;
    let v: serde_json::Value = serde_json::from_str(&r.text).unwrap_or_default();
    assert_eq!(v["todos"][1]["content"], "write");
    assert_eq!(v["summary"]["open"], 1);
    let r = e
        .call(
            "todo",
            json!({"items": [{"id":"1","content":"x","status":"bogus"}]}),
        )
        .await;
    assert!(!r.ok && r.text.contains("invalid arguments"));
}

#[actix::test]
async fn terminal_reports_exit_code_and_both_streams() {
    let e = env();
    let r = e
        .call(
            "terminal",
            json!({"command": "echo out; echo err >&2; exit 3"}),
        )
        .await;
    assert!(!r.ok);
    assert!(
        r.text.contains("exit code: 3")
            && r.text.contains("stdout:\nout")
            && r.text.contains("stderr:\nerr")
    );
    let r = e
        .call("terminal", json!({"command": "pwd", "workdir": "."}))
        .await;
    assert!(
        r.ok && r.text.contains(&e.cwd.path().display().to_string()),
        "{r:?}"
    );
}

#[actix::test]
async fn disabled_toolsets_are_not_offered_or_run() {
    let e = env_with(|c| c.toolsets = vec!["file".into()]);
    assert!(
        e.tb.schemas()
            .iter()
            .all(|s| s["function"]["name"] != "terminal")
    );
    let r = e.call("terminal", json!({"command": "echo hi"})).await;
    assert!(!r.ok && r.text.contains("unknown tool"), "{r:?}");
}

#[test]
fn prompt_and_tool_schemas_stay_small() {
    // Sent on every upstream call: the target is at most 6 KB together (BENCHMARKS.md).
    let tb = Toolbox::new(
        &hermes::config::TOOLSETS
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    );
    let schemas = serde_json::to_string(tb.schemas()).unwrap_or_default();
    let prompt = hermes::agent::prompt::system_prompt(
        "api_server",
        std::path::Path::new("/nonexistent"),
        true,
        None,
    );
    let total = schemas.len() + prompt.len();
    assert!(
        total <= 6 * 1024,
        "prompt {} + schemas {} = {total} bytes",
        prompt.len(),
        schemas.len()
    );
}
