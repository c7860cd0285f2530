//! Splitting a long answer into messages that fit a platform's limit
//! (Telegram 4096 UTF-16 code units, Discord 2000 characters, Slack 39 000).
//!
//! A part ends at the last paragraph break inside the window, else the last
//! line break, else the last space, else at the window's edge. A part that
//! ends inside a fenced code block gets the fence closed, and the next part
//! reopens it with the same language, so every part renders on its own.
//! Separators stay with the part before them: for text without code fences
//! the parts concatenate back to the answer exactly.

/// How a platform counts the length of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// UTF-16 code units (Telegram).
    Utf16,
    /// Unicode scalar values (Discord, Slack).
    Chars,
}

impl Measure {
    /// The length of `s` in this unit.
    pub fn len(self, s: &str) -> usize {
        match self {
            Self::Utf16 => s.encode_utf16().count(),
            Self::Chars => s.chars().count(),
        }
    }

    fn char_len(self, c: char) -> usize {
        match self {
            Self::Utf16 => c.len_utf16(),
            Self::Chars => 1,
        }
    }

    /// The longest prefix of `s` (a byte index on a char boundary) whose
    /// length is at most `budget`.
    pub fn prefix_within(self, s: &str, budget: usize) -> usize {
        let mut used = 0;
        for (i, c) in s.char_indices() {
            used += self.char_len(c);
            if used > budget {
                return i;
            }
        }
        s.len()
    }
}

/// A code fence line opens or closes a block: "```" or "~~~" at the line start.
fn fence_marker(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with("```") || t.starts_with("~~~") {
        Some(t.trim_end())
    } else {
        None
    }
}

/// The opening fence line still open at the end of `text`, if any
/// (`open` is the one open at its start).
fn open_fence_after(text: &str, mut open: Option<String>) -> Option<String> {
    for line in text.split('\n') {
        if let Some(marker) = fence_marker(line) {
            open = match open {
                Some(_) => None,
                None => Some(marker.to_string()),
            };
        }
    }
    open
}

/// The closing line for an opening fence ("```rust" closes with "```").
fn closing_for(opening: &str) -> &'static str {
    if opening.starts_with("~~~") {
        "~~~"
    } else {
        "```"
    }
}

/// Whether cutting `text` at `at`, inside a line, would break a code fence:
/// backticks right after the cut would open a fence that is not one (they
/// start the next part's first line), or the line is a fence line whose
/// info string would be split off into the code.
fn splits_a_fence_line(text: &str, at: usize) -> bool {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    fence_marker(&text[at..line_end]).is_some()
        || fence_marker(&text[line_start..line_end]).is_some()
}

/// Where to cut `text` within its first `window_end` bytes (a byte index >
/// 0): after the last paragraph break, else line break, else space; else
/// the whole window. A cut inside a line never breaks a fence line.
/// `lead` bytes at the start (a reopened fence line) must stay in the part.
fn cut_point(text: &str, window_end: usize, lead: usize) -> usize {
    let window = &text[..window_end];
    // Cutting in the first few characters would make a tiny part; only a
    // hard cut is worse.
    let min = (window.len() / 4).max(lead);
    for sep in ["\n\n", "\n", " "] {
        for (i, _) in window.rmatch_indices(sep) {
            let at = i + sep.len();
            if at <= min {
                break;
            }
            if sep == " " && splits_a_fence_line(text, at) {
                continue;
            }
            return at;
        }
    }
    // A hard cut inside a fence line moves to the start of that line.
    if splits_a_fence_line(text, window_end) {
        let line_start = window.rfind('\n').map_or(0, |i| i + 1);
        if line_start > lead {
            return line_start;
        }
    }
    window_end
}

/// Room a part may need to close a fence ("\n```") on top of its text.
const CLOSE_ROOM: usize = 4;

/// Where a too-long text is cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The first part, with a fence closed if one is open at the cut.
    pub part: String,
    /// Bytes of the text the part took.
    pub consumed: usize,
    /// What the rest starts with: the open fence line again, or nothing.
    pub reopen: String,
}

impl Cut {
    /// The rest of `text` after this cut (fence reopened).
    pub fn rest(&self, text: &str) -> String {
        format!("{}{}", self.reopen, &text[self.consumed..])
    }
}

/// When `text` is longer than `limit`, its first part (fence closed if one is
/// open there) and the rest (that fence reopened); `None` when it fits.
pub fn split_first(text: &str, limit: usize, measure: Measure) -> Option<(String, String)> {
    cut(text, limit, measure).map(|c| {
        let rest = c.rest(text);
        (c.part, rest)
    })
}

/// Where to cut `text` so its first part fits `limit`; `None` when it fits.
pub fn cut(text: &str, limit: usize, measure: Measure) -> Option<Cut> {
    if measure.len(text) <= limit {
        return None;
    }
    // A part that starts by reopening a fence must carry more than that line.
    let first_line = text.split('\n').next().unwrap_or("");
    let lead = if fence_marker(first_line).is_some() {
        first_line.len() + 1
    } else {
        0
    };
    let cut_within = |budget: usize| {
        let window_end = measure.prefix_within(text, budget.max(1)).max(
            // A first character wider than the budget still moves on.
            text.chars().next().map(char::len_utf8).unwrap_or(0),
        );
        let cut = cut_point(text, window_end, lead);
        // A fence line too long to repeat is not reopened (the split could
        // not make progress); such a block just continues as text.
        let open =
            open_fence_after(&text[..cut], None).filter(|open| measure.len(open) + 1 < limit / 2);
        (cut, open)
    };
    let (mut cut, mut open) = cut_within(limit);
    if open.is_some() {
        // Closing the fence needs room: cut again inside a smaller window.
        (cut, open) = cut_within(limit.saturating_sub(CLOSE_ROOM));
    }
    let mut part = text[..cut].to_string();
    let mut reopen = String::new();
    if let Some(open) = open {
        if !part.ends_with('\n') {
            part.push('\n');
        }
        part.push_str(closing_for(&open));
        reopen = format!("{open}\n");
    }
    Some(Cut {
        part,
        consumed: cut,
        reopen,
    })
}

/// Splits `text` into parts of at most `limit` units.
pub fn split(text: &str, limit: usize, measure: Measure) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.to_string();
    // Bounded: every round removes at least one character of the original.
    while let Some((part, more)) = split_first(&rest, limit, measure) {
        parts.push(part);
        rest = more;
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split("hello", 10, Measure::Chars), vec!["hello"]);
        assert_eq!(split("", 10, Measure::Chars), vec![""]);
    }

    #[test]
    fn prefers_paragraph_then_line_then_space() {
        let parts = split("aaaa bbbb\ncccc\n\ndddd", 16, Measure::Chars);
        assert_eq!(parts, vec!["aaaa bbbb\ncccc\n\n", "dddd"]);
        let parts = split("aaaa bbbb\ncccc dddd", 16, Measure::Chars);
        assert_eq!(parts, vec!["aaaa bbbb\n", "cccc dddd"]);
        let parts = split("aaaa bbbb cccc dddd", 16, Measure::Chars);
        assert_eq!(parts, vec!["aaaa bbbb cccc ", "dddd"]);
    }

    #[test]
    fn hard_cut_without_separators() {
        let parts = split(&"x".repeat(25), 10, Measure::Chars);
        assert!(parts.iter().all(|p| p.len() <= 10));
        assert_eq!(parts.concat(), "x".repeat(25));
    }

    #[test]
    fn utf16_counts_surrogate_pairs() {
        // Each emoji is two UTF-16 units: 3000 of them are 6000 units.
        let text = "😀".repeat(3000);
        let parts = split(&text, 4096, Measure::Utf16);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| Measure::Utf16.len(p) <= 4096));
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn code_fence_is_closed_and_reopened_with_its_language() {
        let code: String = (0..40).map(|i| format!("let x{i} = {i};\n")).collect();
        let text = format!("Intro\n\n```rust\n{code}```\nAfter");
        let parts = split(&text, 200, Measure::Chars);
        assert!(parts.len() > 2);
        for (i, p) in parts.iter().enumerate() {
            assert!(p.chars().count() <= 200, "part {i} too long");
            let fences = p.lines().filter(|l| fence_marker(l).is_some()).count();
            assert_eq!(fences % 2, 0, "part {i} leaves a fence open: {p}");
        }
        assert!(
            parts[1..parts.len() - 1]
                .iter()
                .all(|p| p.starts_with("```rust\n"))
        );
    }

    /// Text without fence lines, then with its fence lines and whitespace
    /// removed: what must survive a split unchanged.
    fn content(s: &str) -> String {
        s.split('\n')
            .filter(|l| fence_marker(l).is_none())
            .collect::<String>()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect()
    }

    fn answer() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-zé😀 ]{0,30}",
            Just("\n".to_string()),
            Just("\n\n".to_string()),
            Just("\n```py\n".to_string()),
            Just("\n```\n".to_string()),
        ];
        proptest::collection::vec(piece, 0..80).prop_map(|v| v.concat())
    }

    #[test]
    fn backticks_after_a_cut_do_not_become_a_fence() {
        // Found by fuzzing: a cut at the space before mid-line backticks
        // left the next part starting with "```", a fence that was not one.
        let text = "aaaa bbbb cccc dddd eeee fff ```xyzxyzxyzxyz and more words after it";
        for p in split(text, 32, Measure::Chars) {
            assert!(!p.starts_with("```"), "{p:?}");
        }
        assert_eq!(split(text, 32, Measure::Chars).concat(), text);
    }

    #[test]
    fn a_fence_line_is_never_cut_in_two() {
        // Found by fuzzing: a cut inside a fence line's info string moved the
        // rest of it into the code.
        let text = ".k\n```= kk.k.k.k.k\ncode\n```\n";
        let parts = split(text, 16, Measure::Chars);
        for p in &parts {
            for line in p.lines() {
                if line.starts_with("```") {
                    assert!(line == "```" || line == "```= kk.k.k.k.k", "{parts:?}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn parts_fit_and_keep_everything(text in answer(), limit in 20usize..120) {
            for measure in [Measure::Utf16, Measure::Chars] {
                let parts = split(&text, limit, measure);
                for p in &parts {
                    prop_assert!(measure.len(p) <= limit, "{} > {limit}: {p:?}", measure.len(p));
                }
                prop_assert_eq!(content(&parts.concat()), content(&text));
                if !text.contains("```") {
                    prop_assert_eq!(parts.concat(), text.clone());
                }
            }
        }

        #[test]
        fn every_part_balances_its_fences(text in answer(), limit in 30usize..120) {
            let parts = split(&text, limit, Measure::Chars);
            // Only fences the answer itself balances are checked.
            if open_fence_after(&text, None).is_none() {
                for p in &parts {
                    prop_assert!(open_fence_after(p, None).is_none(), "open fence in {p:?}");
                }
            }
        }
    }
}
