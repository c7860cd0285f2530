//! Architecture rules checked on the source: the shared chat core (router,
//! turn driver, stream preview, courier, outbox, hooks, conversation rules,
//! the agent) never names a chat platform. What differs between platforms
//! is data (`Capabilities`) or lives in the platform's own actor and module.

use std::path::Path;

/// The files of the shared chat core.
const CORE: &[&str] = &[
    "actors/session_router.rs",
    "actors/turn_driver.rs",
    "actors/stream_preview.rs",
    "actors/courier.rs",
    "actors/outbox.rs",
    "actors/hook.rs",
    "actors/start.rs",
    "src/platforms/courier.rs",
    "src/platforms/split.rs",
    "src/platforms/pacing.rs",
    "src/platforms/access.rs",
    "src/conversation/mod.rs",
    "src/conversation/commands.rs",
    "src/conversation/session.rs",
    "src/api/hooks.rs",
    "src/agent/mod.rs",
    "src/agent/prompt.rs",
    "src/agent/events.rs",
];

/// Names of the platforms, as code would spell them.
const PLATFORM_NAMES: &[&str] = &["telegram", "discord", "slack"];

/// The code of a file: comments and the test module left out.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_shared_chat_core_names_no_platform() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for file in CORE {
        let code = code_of(&root.join(file)).to_ascii_lowercase();
        for name in PLATFORM_NAMES {
            if code.contains(name) {
                found.push(format!("{file} names {name}"));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_check_sees_a_platform_name_in_code_but_not_in_comments() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let f = dir.path().join("x.rs");
    std::fs::write(&f, "// Telegram is fine here\nlet p = \"slack\";\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let code = code_of(&f).to_ascii_lowercase();
    assert!(code.contains("slack") && !code.contains("telegram"));
}
