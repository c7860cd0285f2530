//! `search_files`: regex search over file contents, walking like ripgrep
//! (honours `.gitignore`, skips hidden files and binary files).

use serde::Deserialize;

use super::{ToolContext, ToolOutput, blocking};

/// Matches returned when the model names no limit.
const DEFAULT_MAX_RESULTS: usize = 100;
/// The most matches one call may ask for.
const MAX_RESULTS_CAP: usize = 1000;
/// Files larger than this are not searched.
const MAX_SEARCH_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Characters of a matching line shown.
const MAX_MATCH_LINE_CHARS: usize = 300;

#[derive(Deserialize)]
pub struct SearchArgs {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
}

/// Runs the search.
pub async fn search_files(a: SearchArgs, ctx: &ToolContext) -> ToolOutput {
    let re = match regex::Regex::new(&a.pattern) {
        Ok(r) => r,
        Err(e) => {
            return ToolOutput::err(format!("pattern is not a valid regular expression: {e}"));
        }
    };
    let root = a
        .path
        .as_deref()
        .map_or_else(|| ctx.settings.cwd.clone(), |p| ctx.resolve(p));
    let max = a
        .max_results
        .unwrap_or(DEFAULT_MAX_RESULTS)
        .clamp(1, MAX_RESULTS_CAP);
    let glob = a.glob;
    blocking(move || {
        if !root.exists() {
            return ToolOutput::err(format!("{} does not exist", root.display()));
        }
        let mut builder = ignore::WalkBuilder::new(&root);
        // Honour .gitignore even outside a git checkout.
        builder.require_git(false);
        if let Some(g) = glob.as_deref().filter(|g| !g.is_empty()) {
            let mut ob = ignore::overrides::OverrideBuilder::new(&root);
            if let Err(e) = ob.add(g) {
                return ToolOutput::err(format!("glob `{g}` is invalid: {e}"));
            }
            match ob.build() {
                Ok(o) => {
                    builder.overrides(o);
                }
                Err(e) => return ToolOutput::err(format!("glob `{g}` is invalid: {e}")),
            }
        }
        let mut out = Vec::new();
        let mut truncated = false;
        'files: for entry in builder.build().filter_map(Result::ok) {
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            if entry
                .metadata()
                .map(|m| m.len() > MAX_SEARCH_FILE_BYTES)
                .unwrap_or(true)
            {
                continue;
            }
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            if super::files::looks_binary(&bytes) {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            for (i, line) in text.lines().enumerate() {
                if re.is_match(line) {
                    if out.len() == max {
                        truncated = true;
                        break 'files;
                    }
                    let shown: String =
                        line.trim_end().chars().take(MAX_MATCH_LINE_CHARS).collect();
                    out.push(format!("{}:{}:{}", entry.path().display(), i + 1, shown));
                }
            }
        }
        if out.is_empty() {
            return ToolOutput::ok(format!(
                "no matches for `{}` under {}",
                a.pattern,
                root.display()
            ));
        }
        let mut text = out.join("\n");
        if truncated {
            text.push_str(&format!(
                "\n[stopped at {max} matches; narrow the pattern or raise max_results]"
            ));
        }
        ToolOutput::ok(text)
    })
    .await
}
