//! `terminal`: runs `sh -c` in its own process group.
//!
//! The whole group is killed (SIGKILL) on timeout and when the call is dropped
//! (an interrupted turn drops it), so children and grandchildren never outlive
//! the call that started them. Output is read with a cap so a chatty command
//! cannot exhaust memory. The gateway's secrets are removed from the
//! command's environment.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{ToolContext, ToolOutput};
use crate::config::ApprovalMode;
use crate::tools::Approver;

/// Bytes of stdout (and of stderr) kept; the rest is read and discarded.
const MAX_STREAM_BYTES: usize = 1024 * 1024;
/// After a kill, how long to wait for the pipes to close.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Environment variables never passed to commands (the model could print them).
const SECRET_VARS: &[&str] = &[
    "OPENAI_API_KEY",
    "OPENROUTER_API_KEY",
    "API_SERVER_KEY",
    "TELEGRAM_BOT_TOKEN",
    "DISCORD_BOT_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
];

#[derive(Deserialize)]
pub struct TerminalArgs {
    command: String,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    workdir: Option<String>,
}

/// Kills a process group when dropped, unless disarmed.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: killpg only sends a signal; a stale id fails with ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to its end, keeping at most `MAX_STREAM_BYTES`.
async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<R>) -> (Vec<u8>, usize) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                let room = MAX_STREAM_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, total)
}

fn render(code: Option<i32>, out: (Vec<u8>, usize), err: (Vec<u8>, usize)) -> String {
    let mut text = match code {
        Some(c) => format!("exit code: {c}\n"),
        None => "exit code: none (killed by a signal)\n".to_string(),
    };
    for (label, (bytes, total)) in [("stdout", out), ("stderr", err)] {
        if total == 0 {
            continue;
        }
        text.push_str(&format!("{label}:\n{}", String::from_utf8_lossy(&bytes)));
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if total > bytes.len() {
            text.push_str(&format!(
                "[{label} cut: {} of {total} bytes kept]\n",
                bytes.len()
            ));
        }
    }
    if out_empty(&text) {
        text.push_str("(no output)\n");
    }
    text
}

fn out_empty(text: &str) -> bool {
    !text.contains("stdout:") && !text.contains("stderr:")
}

/// Runs the command.
pub async fn run(a: TerminalArgs, ctx: &ToolContext) -> ToolOutput {
    let s = &ctx.settings;
    let command = a.command.trim();
    if command.is_empty() {
        return ToolOutput::err("command is empty");
    }
    if let Some(why) = s.dangerous.check(command) {
        match s.approvals {
            ApprovalMode::Ask if ctx.approved => {
                log::info!("running a dangerous command ({why}): the client approved it")
            }
            ApprovalMode::Off => {
                log::warn!("running a dangerous command ({why}) because approvals.mode is off")
            }
            ApprovalMode::Deny => {
                return ToolOutput::err(format!(
                    "refused: this command looks dangerous ({why}). The gateway's approvals.mode is `deny`, \
                     so it will not run. Tell the user what you wanted to run and why, or find a safer way."
                ));
            }
            ApprovalMode::Ask => match &ctx.session.approver {
                Some(Approver::Defer) => return ToolOutput::needs_approval(why),
                Some(approver) => match approver.ask(command, why).await {
                    Some(true) => {
                        log::info!("running a dangerous command ({why}): the user approved it")
                    }
                    Some(false) => {
                        return ToolOutput::err(format!(
                            "refused: the user denied this command ({why}). Do not retry it; ask the user how to proceed."
                        ));
                    }
                    None => {
                        return ToolOutput::err(format!(
                            "refused: this command looks dangerous ({why}) and the user did not approve it in time."
                        ));
                    }
                },
                None => {
                    return ToolOutput::err(format!(
                        "refused: this command looks dangerous ({why}) and needs the user's approval, \
                         which cannot be asked for here. Tell the user what you wanted to run and why."
                    ));
                }
            },
        }
    }
    let timeout = Duration::from_secs(
        a.timeout
            .unwrap_or(s.terminal_timeout)
            .clamp(1, s.terminal_max_timeout),
    );
    let dir = a
        .workdir
        .as_deref()
        .map_or_else(|| s.cwd.clone(), |w| ctx.resolve(w));
    if !dir.is_dir() {
        return ToolOutput::err(format!(
            "working directory {} does not exist",
            dir.display()
        ));
    }

    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for var in SECRET_VARS {
        cmd.env_remove(var);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ToolOutput::err(format!("cannot start sh: {e}")),
    };
    let mut guard = GroupGuard {
        pgid: child.id().and_then(|id| i32::try_from(id).ok()),
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut work = Box::pin(async {
        let (out, err, status) =
            tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
        (out, err, status.ok().and_then(|s| s.code()))
    });
    tokio::select! {
        (out, err, code) = &mut work => {
            // Finished on its own: background jobs it started may live on.
            guard.pgid = None;
            ToolOutput::new(code == Some(0), render(code, out, err))
        }
        _ = tokio::time::sleep(timeout) => {
            guard.kill();
            let partial = tokio::time::timeout(KILL_GRACE, &mut work).await;
            let mut text = format!(
                "Error: the command timed out after {} s; it and its child processes were killed.\n",
                timeout.as_secs()
            );
            if let Ok((out, err, _)) = partial {
                text.push_str(&render(None, out, err));
            }
            ToolOutput::new(false, text)
        }
    }
}
