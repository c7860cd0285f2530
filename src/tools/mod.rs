//! The agent's tools: their schemas (a contract with the model), argument
//! validation, output caps, time limits and dispatch.
//!
//! A tool never fails a turn: bad arguments, refusals, timeouts and I/O errors
//! all come back as a [`ToolOutput`] with `ok: false` whose text the model reads.

pub mod danger;
pub mod files;
pub mod html;
pub mod memory;
pub mod search;
pub mod terminal;
pub mod todo;
pub mod web_fetch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::{ApprovalMode, Config, WebFetchConfig};

/// Tools other than `terminal` and `web_fetch` (which have their own limits)
/// get this long before they are stopped.
const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a tool hands back to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub ok: bool,
    pub text: String,
    /// The call did not run: it waits for an approval the client gives in a
    /// later request (the reason it needs one). The turn pauses.
    pub needs_approval: Option<String>,
}

impl ToolOutput {
    /// A result as it is, successful or not.
    pub fn new(ok: bool, text: String) -> Self {
        Self {
            ok,
            text,
            needs_approval: None,
        }
    }
    /// A successful result.
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            ok: true,
            text: text.into(),
            needs_approval: None,
        }
    }
    /// A failure the model should read and work around.
    pub fn err(text: impl Into<String>) -> Self {
        Self {
            ok: false,
            text: format!("Error: {}", text.into()),
            needs_approval: None,
        }
    }
    /// A call that waits for the client's approval (`reason`: why it needs one).
    pub fn needs_approval(reason: impl Into<String>) -> Self {
        Self {
            ok: false,
            text: String::new(),
            needs_approval: Some(reason.into()),
        }
    }
}

/// Settings every tool call may need; shared, read-only.
#[derive(Debug, Clone)]
pub struct ToolSettings {
    /// Working directory for relative paths and commands.
    pub cwd: PathBuf,
    /// `HERMES_HOME` (memory lives here; its `.env` is off limits).
    pub home: PathBuf,
    pub terminal_timeout: u64,
    pub terminal_max_timeout: u64,
    pub output_cap: usize,
    pub web_fetch: WebFetchConfig,
    pub memory_max_chars: usize,
    pub approvals: ApprovalMode,
    pub dangerous: danger::Patterns,
}

impl ToolSettings {
    /// Tool settings of a configuration.
    pub fn from_config(c: &Config, home: &Path, user_home: Option<&str>) -> Self {
        let cwd = c
            .terminal
            .cwd
            .clone()
            .or_else(|| user_home.map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"));
        Self {
            cwd,
            home: home.to_path_buf(),
            terminal_timeout: c.terminal.timeout,
            terminal_max_timeout: c.terminal.max_timeout,
            output_cap: c.agent.tool_output_cap,
            web_fetch: c.tools.web_fetch.clone(),
            memory_max_chars: c.tools.memory.max_chars,
            approvals: c.approvals.mode,
            dangerous: danger::Patterns::new(home, &c.approvals.patterns),
        }
    }
}

/// Per-session state some tools keep (the todo list), and the way to ask
/// the session's user for approval where there is one.
#[derive(Debug, Clone, Default)]
pub struct SessionTools {
    pub todo: Arc<Mutex<Vec<todo::TodoItem>>>,
    /// Set on chat platforms: `approvals.mode: ask` asks the user here.
    pub approver: Option<Approver>,
}

/// How long a dangerous command waits for `/approve` or `/deny` before it is refused.
pub const APPROVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A dangerous command waiting for the user's answer.
#[derive(Debug)]
pub struct ApprovalRequest {
    pub command: String,
    /// Which pattern matched, in words.
    pub reason: String,
    /// `true` runs the command; dropping it refuses.
    pub reply: tokio::sync::oneshot::Sender<bool>,
}

/// Who answers a dangerous command under `approvals.mode: ask`.
#[derive(Debug, Clone)]
pub enum Approver {
    /// The session's user, asked now (the session router asks and answers);
    /// the tool waits for the answer.
    Ask(tokio::sync::mpsc::Sender<ApprovalRequest>),
    /// The API client, in a later request (the Responses API's
    /// `mcp_approval_request`): the call does not run and the turn pauses.
    Defer,
}

impl Approver {
    /// Asks the user; `Some(answer)`, or `None` when nobody answered in time
    /// (or nobody can be asked now).
    pub async fn ask(&self, command: &str, reason: &str) -> Option<bool> {
        let Self::Ask(tx) = self else {
            return None;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let req = ApprovalRequest {
            command: command.to_string(),
            reason: reason.to_string(),
            reply,
        };
        tx.send(req).await.ok()?;
        tokio::time::timeout(APPROVAL_TIMEOUT, answer)
            .await
            .ok()?
            .ok()
    }
}

/// Everything one tool call runs with.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub settings: Arc<ToolSettings>,
    pub session: SessionTools,
    /// The user already approved this very call (a resumed approval).
    pub approved: bool,
}

impl ToolContext {
    /// Resolves a path argument: `~` expanded, relative paths under `cwd`.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = p.trim();
        if let Some(rest) = p.strip_prefix("~/")
            && let Some(h) = std::env::var_os("HOME")
        {
            return PathBuf::from(h).join(rest);
        }
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.settings.cwd.join(path)
        }
    }
}

/// A tool's name, toolset and schema.
struct ToolSpec {
    name: &'static str,
    toolset: &'static str,
    description: &'static str,
    parameters: fn() -> Value,
}

/// Every tool, in the order schemas are sent. Descriptions are short on
/// purpose: they are sent, and paid for, on every upstream call.
const TOOLS: &[ToolSpec] = &[
    ToolSpec {
        name: "terminal",
        toolset: "terminal",
        description: "Run a shell command (sh -c) on the host. Returns exit code, stdout and stderr. Non-interactive; use flags like -y.",
        parameters: || {
            json!({"type":"object","properties":{
                "command":{"type":"string"},
                "timeout":{"type":"integer","description":"seconds, default 180, max 3600"},
                "workdir":{"type":"string","description":"directory to run in"}},
                "required":["command"]})
        },
    },
    ToolSpec {
        name: "read_file",
        toolset: "file",
        description: "Read a text file with line numbers.",
        parameters: || {
            json!({"type":"object","properties":{
                "path":{"type":"string"},
                "offset":{"type":"integer","description":"first line, default 1"},
                "limit":{"type":"integer","description":"lines, default 2000"}},
                "required":["path"]})
        },
    },
    ToolSpec {
        name: "write_file",
        toolset: "file",
        description: "Write a file (replacing it), creating parent directories.",
        parameters: || {
            json!({"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},
                "required":["path","content"]})
        },
    },
    ToolSpec {
        name: "patch",
        toolset: "file",
        description: "Replace exact text in a file. old_string must match once unless replace_all.",
        parameters: || {
            json!({"type":"object","properties":{
                "path":{"type":"string"},"old_string":{"type":"string"},"new_string":{"type":"string"},
                "replace_all":{"type":"boolean"}},
                "required":["path","old_string","new_string"]})
        },
    },
    ToolSpec {
        name: "search_files",
        toolset: "file",
        description: "Search file contents by regex; returns path:line:text. Honours .gitignore.",
        parameters: || {
            json!({"type":"object","properties":{
                "pattern":{"type":"string"},"path":{"type":"string"},
                "glob":{"type":"string","description":"e.g. *.rs"},
                "max_results":{"type":"integer","description":"default 100"}},
                "required":["pattern"]})
        },
    },
    ToolSpec {
        name: "list_directory",
        toolset: "file",
        description: "List a directory's entries with type and size.",
        parameters: || json!({"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}),
    },
    ToolSpec {
        name: "web_fetch",
        toolset: "web",
        description: "Fetch an http(s) URL and return its readable text.",
        parameters: || json!({"type":"object","properties":{"url":{"type":"string"}},"required":["url"]}),
    },
    ToolSpec {
        name: "memory",
        toolset: "memory",
        description: "Your persistent notes, shown to you in later conversations. Save durable facts about the user and environment.",
        parameters: || {
            json!({"type":"object","properties":{
                "action":{"type":"string","enum":["add","replace","remove","read"]},
                "content":{"type":"string","description":"text to add, or the replacement"},
                "old":{"type":"string","description":"text identifying the entry to replace or remove"}},
                "required":["action"]})
        },
    },
    ToolSpec {
        name: "todo",
        toolset: "todo",
        description: "Your task list for multi-step work. Send the full list to update it; omit items to read it.",
        parameters: || {
            json!({"type":"object","properties":{"items":{"type":"array","items":{"type":"object","properties":{
                "id":{"type":"string"},"content":{"type":"string"},
                "status":{"type":"string","enum":["pending","in_progress","completed","cancelled"]}},
                "required":["id","content","status"]}}}})
        },
    },
];

/// The tools enabled for one front door, with their schemas ready to send.
#[derive(Debug, Clone)]
pub struct Toolbox {
    names: Vec<&'static str>,
    schemas: Arc<[Value]>,
    /// `schemas` serialised once: sent on every upstream call as they are.
    schemas_json: Option<Arc<serde_json::value::RawValue>>,
}

impl Toolbox {
    /// The tools of these toolsets (unknown names were rejected by config validation).
    pub fn new(toolsets: &[String]) -> Self {
        let specs: Vec<&ToolSpec> = TOOLS
            .iter()
            .filter(|t| toolsets.iter().any(|s| s == t.toolset))
            .collect();
        let schemas = specs
            .iter()
            .map(|t| {
                json!({"type":"function","function":{
                    "name": t.name, "description": t.description, "parameters": (t.parameters)()}})
            })
            .collect();
        let schemas: Arc<[Value]> = schemas;
        let schemas_json = if schemas.is_empty() {
            None
        } else {
            serde_json::value::to_raw_value(&schemas[..])
                .ok()
                .map(Arc::from)
        };
        Self {
            names: specs.iter().map(|t| t.name).collect(),
            schemas,
            schemas_json,
        }
    }

    /// The JSON schemas sent upstream.
    pub fn schemas(&self) -> &[Value] {
        &self.schemas
    }

    /// The schemas as JSON text, `None` when no tool is enabled.
    pub fn schemas_json(&self) -> Option<&serde_json::value::RawValue> {
        self.schemas_json.as_deref()
    }

    /// Names of the enabled tools.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Why this call must wait for the client's approval before it runs, if
    /// it must: a dangerous command, `approvals.mode: ask`, a client that
    /// answers later (the Responses API), and no approval given yet.
    pub fn approval_needed(
        &self,
        name: &str,
        arguments: &str,
        ctx: &ToolContext,
    ) -> Option<String> {
        let defer = matches!(ctx.session.approver, Some(Approver::Defer));
        if name != "terminal"
            || !defer
            || ctx.approved
            || ctx.settings.approvals != ApprovalMode::Ask
        {
            return None;
        }
        let args: Value = serde_json::from_str(arguments).ok()?;
        let command = args.get("command")?.as_str()?.trim();
        ctx.settings.dangerous.check(command).map(String::from)
    }

    /// Runs one tool call. Never panics on model input; every failure is text.
    pub async fn run(&self, name: &str, arguments: &str, ctx: &ToolContext) -> ToolOutput {
        if !self.names.contains(&name) {
            return ToolOutput::err(format!(
                "unknown tool `{name}`; available: {}",
                self.names.join(", ")
            ));
        }
        let args: Value = match arguments.trim() {
            "" => json!({}),
            text => match serde_json::from_str(text) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return ToolOutput::err(format!("arguments of {name} must be a JSON object"));
                }
                Err(e) => {
                    return ToolOutput::err(format!("arguments of {name} are not valid JSON: {e}"));
                }
            },
        };
        let limit = match name {
            "terminal" => None, // enforces its own timeout and kills the process group
            "web_fetch" => Some(Duration::from_secs_f64(ctx.settings.web_fetch.timeout)),
            _ => Some(DEFAULT_TOOL_TIMEOUT),
        };
        let work = dispatch(name, args, ctx);
        let out = match limit {
            None => work.await,
            Some(d) => match tokio::time::timeout(d, work).await {
                Ok(o) => o,
                Err(_) => {
                    ToolOutput::err(format!("{name} did not finish within {} s", d.as_secs()))
                }
            },
        };
        log::debug!("tool {name} ok={} {} chars", out.ok, out.text.len());
        ToolOutput {
            text: cap_output(&out.text, ctx.settings.output_cap),
            ..out
        }
    }
}

async fn dispatch(name: &str, args: Value, ctx: &ToolContext) -> ToolOutput {
    macro_rules! call {
        ($f:path) => {
            match parse_args(name, args) {
                Ok(a) => $f(a, ctx).await,
                Err(e) => e,
            }
        };
    }
    match name {
        "terminal" => call!(terminal::run),
        "read_file" => call!(files::read_file),
        "write_file" => call!(files::write_file),
        "patch" => call!(files::patch),
        "list_directory" => call!(files::list_directory),
        "search_files" => call!(search::search_files),
        "web_fetch" => call!(web_fetch::fetch),
        "memory" => call!(memory::run),
        "todo" => call!(todo::run),
        other => ToolOutput::err(format!("unknown tool `{other}`")),
    }
}

/// Validates arguments against the tool's typed form; the error names the field.
fn parse_args<T: DeserializeOwned>(name: &str, args: Value) -> Result<T, ToolOutput> {
    serde_json::from_value(args)
        .map_err(|e| ToolOutput::err(format!("invalid arguments for {name}: {e}")))
}

/// Cuts output longer than `cap` characters, keeping its head and tail and
/// saying how much was left out (errors are usually at the end).
pub fn cap_output(text: &str, cap: usize) -> String {
    let total = text.chars().count();
    if total <= cap {
        return text.to_string();
    }
    let head_n = cap * 7 / 10;
    let tail_n = cap - head_n;
    let head: String = text.chars().take(head_n).collect();
    let tail: String = text.chars().skip(total - tail_n).collect();
    format!(
        "{head}\n\n[output truncated: {} of {total} characters omitted]\n\n{tail}",
        total - head_n - tail_n
    )
}

/// Runs blocking file-system work off the async thread.
pub(crate) async fn blocking<F>(f: F) -> ToolOutput
where
    F: FnOnce() -> ToolOutput + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| ToolOutput::err(format!("the tool crashed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_head_and_tail() {
        let text: String = (0..2000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let out = cap_output(&text, 1000);
        assert!(out.starts_with(&text[..700]));
        assert!(out.ends_with(&text[1700..]));
        assert!(out.contains("1000 of 2000 characters omitted"));
        assert_eq!(cap_output("short", 1000), "short");
    }

    #[test]
    fn toolsets_select_tools() {
        let tb = Toolbox::new(&["file".to_string()]);
        assert_eq!(
            tb.names(),
            &[
                "read_file",
                "write_file",
                "patch",
                "search_files",
                "list_directory"
            ]
        );
        let all = Toolbox::new(
            &crate::config::TOOLSETS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        );
        assert_eq!(all.names().len(), 9);
    }
}
