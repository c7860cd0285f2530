//! File tools: `read_file`, `write_file`, `patch`, `list_directory`.
//!
//! All blocking file-system work runs on tokio's blocking pool. Writes to the
//! gateway's own `.env` are refused whatever the approval mode.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ToolContext, ToolOutput, blocking, danger};

/// Lines returned when the model names no limit.
const DEFAULT_READ_LIMIT: usize = 2000;
/// Bytes inspected for a NUL to call a file binary.
const BINARY_SNIFF_BYTES: usize = 8192;
/// Largest file `read_file` and `patch` load.
const MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;
/// Characters of one line shown before it is cut (minified files).
const MAX_LINE_CHARS: usize = 2000;

#[derive(Deserialize)]
pub struct ReadArgs {
    path: String,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
pub struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
pub struct PatchArgs {
    path: String,
    old_string: String,
    new_string: String,
    #[serde(default)]
    replace_all: bool,
}

#[derive(Deserialize)]
pub struct ListArgs {
    #[serde(default)]
    path: Option<String>,
}

/// True when the bytes look like a binary file.
pub fn looks_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(BINARY_SNIFF_BYTES)].contains(&0)
}

fn refuse_secrets(ctx: &ToolContext, path: &Path) -> Option<ToolOutput> {
    danger::is_secrets_file(&ctx.settings.home, path).then(|| {
        ToolOutput::err("that file holds the gateway's secrets; it cannot be changed by the agent")
    })
}

fn load_text(path: &Path) -> Result<String, ToolOutput> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, &e))?;
    if meta.is_dir() {
        return Err(ToolOutput::err(format!(
            "{} is a directory; use list_directory",
            path.display()
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ToolOutput::err(format!(
            "{} is {} bytes, larger than the {MAX_FILE_BYTES}-byte limit",
            path.display(),
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io_error(path, &e))?;
    if looks_binary(&bytes) {
        return Err(ToolOutput::err(format!(
            "{} is a binary file; it cannot be shown as text",
            path.display()
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| ToolOutput::err(format!("{} is not UTF-8 text", path.display())))
}

fn io_error(path: &Path, e: &std::io::Error) -> ToolOutput {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            ToolOutput::err(format!("{} does not exist", path.display()))
        }
        std::io::ErrorKind::PermissionDenied => {
            ToolOutput::err(format!("permission denied: {}", path.display()))
        }
        _ => ToolOutput::err(format!("{}: {e}", path.display())),
    }
}

/// `read_file`: numbered lines `offset..offset+limit`.
pub async fn read_file(a: ReadArgs, ctx: &ToolContext) -> ToolOutput {
    let path = ctx.resolve(&a.path);
    let offset = a.offset.unwrap_or(1).max(1);
    let limit = a.limit.unwrap_or(DEFAULT_READ_LIMIT).max(1);
    blocking(move || {
        let text = match load_text(&path) {
            Ok(t) => t,
            Err(e) => return e,
        };
        let total = text.lines().count();
        if total == 0 {
            return ToolOutput::ok(format!("{} is empty", path.display()));
        }
        if offset > total {
            return ToolOutput::err(format!("offset {offset} is past the end ({total} lines)"));
        }
        let mut out = String::new();
        for (i, line) in text.lines().enumerate().skip(offset - 1).take(limit) {
            let shown: String = line.chars().take(MAX_LINE_CHARS).collect();
            let cut = if shown.len() < line.len() {
                " […]"
            } else {
                ""
            };
            out.push_str(&format!("{:>6}\t{shown}{cut}\n", i + 1));
        }
        let last = (offset - 1 + limit).min(total);
        if offset > 1 || last < total {
            out.push_str(&format!("[lines {offset}-{last} of {total}]\n"));
        }
        ToolOutput::ok(out)
    })
    .await
}

/// `write_file`: replaces the file, creating parent directories.
pub async fn write_file(a: WriteArgs, ctx: &ToolContext) -> ToolOutput {
    let path = ctx.resolve(&a.path);
    if let Some(refusal) = refuse_secrets(ctx, &path) {
        return refusal;
    }
    blocking(move || {
        if path.is_dir() {
            return ToolOutput::err(format!("{} is a directory", path.display()));
        }
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            return io_error(parent, &e);
        }
        match std::fs::write(&path, a.content.as_bytes()) {
            Ok(()) => ToolOutput::ok(format!(
                "wrote {} bytes to {}",
                a.content.len(),
                path.display()
            )),
            Err(e) => io_error(&path, &e),
        }
    })
    .await
}

/// `patch`: exact-text replacement, refusing absent or ambiguous matches.
pub async fn patch(a: PatchArgs, ctx: &ToolContext) -> ToolOutput {
    let path = ctx.resolve(&a.path);
    if let Some(refusal) = refuse_secrets(ctx, &path) {
        return refusal;
    }
    if a.old_string.is_empty() {
        return ToolOutput::err("old_string is empty; use write_file to create a file");
    }
    blocking(move || {
        let text = match load_text(&path) {
            Ok(t) => t,
            Err(e) => return e,
        };
        let count = text.matches(&a.old_string).count();
        if count == 0 {
            return ToolOutput::err(format!(
                "old_string was not found in {}; read the file and copy the text exactly",
                path.display()
            ));
        }
        if count > 1 && !a.replace_all {
            return ToolOutput::err(format!(
                "old_string matches {count} places in {}; include more surrounding text to make it unique, or set replace_all",
                path.display()
            ));
        }
        let new_text = if a.replace_all {
            text.replace(&a.old_string, &a.new_string)
        } else {
            text.replacen(&a.old_string, &a.new_string, 1)
        };
        match std::fs::write(&path, new_text.as_bytes()) {
            Ok(()) => ToolOutput::ok(format!(
                "replaced {count} occurrence{} in {}",
                if count == 1 { "" } else { "s" },
                path.display()
            )),
            Err(e) => io_error(&path, &e),
        }
    })
    .await
}

/// `list_directory`: one entry a line, directories first.
pub async fn list_directory(a: ListArgs, ctx: &ToolContext) -> ToolOutput {
    let path: PathBuf = a
        .path
        .as_deref()
        .map_or_else(|| ctx.settings.cwd.clone(), |p| ctx.resolve(p));
    blocking(move || {
        let rd = match std::fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return ToolOutput::err(format!("{} is a file, not a directory", path.display()));
            }
            Err(e) => return io_error(&path, &e),
        };
        let mut entries: Vec<(u8, String)> = rd
            .filter_map(Result::ok)
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                match e.file_type() {
                    Ok(t) if t.is_symlink() => {
                        let target = std::fs::read_link(e.path())
                            .map(|t| t.display().to_string())
                            .unwrap_or_default();
                        (1, format!("link  {name} -> {target}"))
                    }
                    Ok(t) if t.is_dir() => (0, format!("dir   {name}/")),
                    _ => {
                        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                        (2, format!("file  {name} ({size} bytes)"))
                    }
                }
            })
            .collect();
        entries.sort();
        if entries.is_empty() {
            return ToolOutput::ok(format!("{} is empty", path.display()));
        }
        let mut out = format!("{} ({} entries)\n", path.display(), entries.len());
        for (_, line) in entries {
            out.push_str(&line);
            out.push('\n');
        }
        ToolOutput::ok(out)
    })
    .await
}
