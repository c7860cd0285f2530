//! `memory`: the agent's persistent notes in `$HERMES_HOME/memories/MEMORY.md`.
//!
//! Entries are separated by a line holding `§`. The file is shown in the
//! system prompt of later turns, so it is size-capped. Writes go through a
//! temporary file and a rename, under a process-wide lock, so concurrent
//! sessions never interleave or corrupt it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{ToolContext, ToolOutput, blocking};

/// The line between two entries.
const SEPARATOR: &str = "\n§\n";
/// Serialises writers across sessions.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Add,
    Replace,
    Remove,
    Read,
}

#[derive(Deserialize)]
pub struct MemoryArgs {
    action: Action,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    old: Option<String>,
}

/// The memory file under a home.
pub fn memory_path(home: &Path) -> PathBuf {
    home.join("memories").join("MEMORY.md")
}

/// What identifies one version of the memory file (a write renames a new
/// file into place: a new inode); `None` when there is no file.
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

/// How long turns trust the last look at the memory file before they look
/// again (one `stat`, a path walk in the kernel: about 2.5 % of a stateless
/// request's CPU when done every turn). A hand edit of the file shows up
/// within this; the agent's own writes at once.
const RECHECK: Duration = Duration::from_secs(1);

/// The memory file as last read, and when its stamp was last checked.
struct Seen {
    path: PathBuf,
    stamp: Stamp,
    entries: Vec<String>,
    checked: Instant,
}

/// Every turn's system prompt shows the file, so turns share one read of it.
static LAST_READ: Mutex<Option<Seen>> = Mutex::new(None);

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The entries stored under `home` (empty when there is no file), as of at
/// most [`RECHECK`] ago.
pub fn read_entries(home: &Path) -> Vec<String> {
    entries(home, RECHECK)
}

/// The entries, reading the file again when it changed since it was last
/// read; its stamp is trusted for `max_age`.
fn entries(home: &Path, max_age: Duration) -> Vec<String> {
    let path = memory_path(home);
    let mut last = LAST_READ.lock().unwrap_or_else(|p| p.into_inner());
    let now = match last.as_mut() {
        Some(seen) if seen.path == path => {
            if seen.checked.elapsed() < max_age {
                return seen.entries.clone();
            }
            let now = stamp(&path);
            if seen.stamp == now {
                seen.checked = Instant::now();
                return seen.entries.clone();
            }
            now
        }
        _ => stamp(&path),
    };
    let entries: Vec<String> = std::fs::read_to_string(&path)
        .map(|t| {
            t.split(SEPARATOR)
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    *last = Some(Seen {
        path,
        stamp: now,
        entries: entries.clone(),
        checked: Instant::now(),
    });
    entries
}

fn write_entries(home: &Path, entries: &[String]) -> std::io::Result<()> {
    let path = memory_path(home);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, entries.join(SEPARATOR))?;
    let renamed = std::fs::rename(&tmp, &path);
    // The next turn reads what was just written, not the trusted old copy.
    *LAST_READ.lock().unwrap_or_else(|p| p.into_inner()) = None;
    renamed
}

/// Runs a memory action.
pub async fn run(a: MemoryArgs, ctx: &ToolContext) -> ToolOutput {
    let home = ctx.settings.home.clone();
    let cap = ctx.settings.memory_max_chars;
    blocking(move || {
        let _lock = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        // A read-modify-write starts from the file as it is now.
        let mut entries = entries(&home, Duration::ZERO);
        let content = a.content.as_deref().map(str::trim).filter(|c| !c.is_empty());
        let find = |entries: &[String], old: Option<&str>| -> Result<usize, ToolOutput> {
            let old = old.map(str::trim).filter(|o| !o.is_empty()).ok_or_else(|| {
                ToolOutput::err("`old` is required: a piece of text from the entry to change")
            })?;
            let hits: Vec<usize> =
                entries.iter().enumerate().filter(|(_, e)| e.contains(old)).map(|(i, _)| i).collect();
            match hits.as_slice() {
                [i] => Ok(*i),
                [] => Err(ToolOutput::err(format!("no memory entry contains `{old}`"))),
                _ => Err(ToolOutput::err(format!("{} entries contain `{old}`; be more specific", hits.len()))),
            }
        };
        match a.action {
            Action::Read => {
                return if entries.is_empty() {
                    ToolOutput::ok("(memory is empty)")
                } else {
                    ToolOutput::ok(entries.join(SEPARATOR))
                };
            }
            Action::Add => {
                let Some(c) = content else { return ToolOutput::err("`content` is required to add") };
                if entries.iter().any(|e| e == c) {
                    return ToolOutput::ok("already remembered");
                }
                entries.push(c.to_string());
            }
            Action::Replace => {
                let Some(c) = content else { return ToolOutput::err("`content` is required to replace") };
                match find(&entries, a.old.as_deref()) {
                    Ok(i) => entries[i] = c.to_string(),
                    Err(e) => return e,
                }
            }
            Action::Remove => match find(&entries, a.old.as_deref()) {
                Ok(i) => {
                    entries.remove(i);
                }
                Err(e) => return e,
            },
        }
        let used = entries.join(SEPARATOR).chars().count();
        if used > cap {
            return ToolOutput::err(format!(
                "memory would hold {used} characters, over the {cap} limit; remove or shorten entries first"
            ));
        }
        match write_entries(&home, &entries) {
            Ok(()) => ToolOutput::ok(format!("saved ({} entries, {used}/{cap} characters)", entries.len())),
            Err(e) => ToolOutput::err(format!("cannot write the memory file: {e}")),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_writes_show_at_once_and_hand_edits_once_looked_at() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let home = dir.path();
        assert!(read_entries(home).is_empty());
        // Within the recheck window: the agent's own write is seen at once.
        write_entries(home, &["one".to_string()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_entries(home), vec!["one".to_string()]);
        // A hand edit (a new size, so a new stamp) is seen once the file is
        // looked at again.
        std::fs::write(memory_path(home), "two\n§\nthree").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            entries(home, Duration::ZERO),
            vec!["two".to_string(), "three".to_string()]
        );
    }
}
