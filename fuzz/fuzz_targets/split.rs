//! Message splitting: the invariants `src/platforms/split.rs` property-tests,
//! on any text. Always: every part fits the limit in the platform's measure,
//! and text without fence markers comes back exactly when the parts are
//! joined. For fence lines shaped as the property test writes them: no
//! visible text is lost or added, and with `Chars` and a limit of 30 or more,
//! no part leaves a fence open when the text closes all of its own.
//!
//! Input layout: byte 0 picks the measure, bytes 1-2 the limit (16..=4096),
//! the rest is the text (lossy UTF-8).
#![no_main]

use hermes::platforms::Measure;
use hermes::platforms::split::split;
use libfuzzer_sys::fuzz_target;

/// A code fence line, as the splitter sees one (copy of its private rule).
fn is_fence(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("```") || t.starts_with("~~~")
}

/// Whether a fence is still open at the end of `text`.
fn fence_open(text: &str) -> bool {
    text.split('\n').filter(|l| is_fence(l)).count() % 2 == 1
}

/// Fence lines as the property test writes them: a line that holds "```" or
/// "~~~" is just that marker and a language name. Other shapes break the
/// invariants below (see fuzz/README.md): a cut just before backticks inside
/// a line starts the next part with a fence that was not one, and a cut inside
/// a fence line's info string moves its tail into the code. And, as the
/// splitter documents, a fence line too long to repeat (half the limit) is not
/// reopened.
fn plain_fences(text: &str, limit: usize, measure: Measure) -> bool {
    text.split('\n').all(|line| {
        if !line.contains("```") && !line.contains("~~~") {
            return true;
        }
        let lang = line
            .strip_prefix("```")
            .or_else(|| line.strip_prefix("~~~"));
        lang.is_some_and(|l| {
            l.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-_#.".contains(c))
        }) && measure.len(line) + 1 < limit / 2
    })
}

/// The text without fence lines and whitespace (what must survive a split).
fn content(s: &str) -> String {
    s.split('\n')
        .filter(|l| !is_fence(l))
        .collect::<String>()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

fuzz_target!(|input: &[u8]| {
    let [m, l0, l1, text @ ..] = input else {
        return;
    };
    let measure = if m & 1 == 0 {
        Measure::Utf16
    } else {
        Measure::Chars
    };
    let limit = 16 + usize::from(u16::from_le_bytes([*l0, *l1])) % (4096 - 16 + 1);
    let text = String::from_utf8_lossy(text);

    let parts = split(&text, limit, measure);
    assert!(!parts.is_empty(), "no parts");
    for (i, p) in parts.iter().enumerate() {
        let len = measure.len(p);
        assert!(
            len <= limit,
            "part {i}: {len} > {limit} ({measure:?}): {p:?}"
        );
    }
    if !text.contains("```") && !text.contains("~~~") {
        assert_eq!(parts.concat(), *text, "parts do not join back to the text");
    }
    // Beyond that, what the property test checks, for fences as it writes them.
    if plain_fences(&text, limit, measure) {
        assert_eq!(content(&parts.concat()), content(&text), "content changed");
        if measure == Measure::Chars && limit >= 30 && !fence_open(&text) {
            for (i, p) in parts.iter().enumerate() {
                assert!(!fence_open(p), "part {i} leaves a fence open: {p:?}");
            }
        }
    }
});
