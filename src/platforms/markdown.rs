//! Markdown (as models write it) to Telegram's HTML subset, for final answers
//! sent with `parse_mode: HTML`.
//!
//! Handled: fenced code blocks (`<pre><code class="language-…">`), inline
//! code, bold (`**`/`__`), italic (`*`/`_`), strike-through (`~~`), links,
//! headings (shown bold) and block quotes. Everything else is text, with
//! `&`, `<` and `>` escaped. A marker without its closing partner on the same
//! line stays literal, so the output is always well-formed; if Telegram still
//! refuses it, the platform actor resends the plain text.

/// Escapes text for Telegram HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Converts a Markdown answer to Telegram HTML.
pub fn to_telegram_html(md: &str) -> String {
    let mut out = String::with_capacity(md.len() + md.len() / 8);
    let mut lines = md.split('\n').peekable();
    let mut first = true;
    let mut quote_open = false;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let is_quote = trimmed.starts_with('>');
        if quote_open && !is_quote {
            out.push_str("</blockquote>");
            quote_open = false;
        }
        if !(first || quote_open && is_quote) {
            out.push('\n');
        }
        first = false;
        if let Some(fence) = trimmed.strip_prefix("```") {
            let lang: String = fence
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "+-_#.".contains(*c))
                .collect();
            // An unclosed fence runs to the end, as Markdown renders it.
            let mut code = Vec::new();
            for l in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                code.push(l);
            }
            if lang.is_empty() {
                out.push_str("<pre><code>");
            } else {
                out.push_str(&format!("<pre><code class=\"language-{}\">", escape(&lang)));
            }
            out.push_str(&escape(&code.join("\n")));
            out.push_str("</code></pre>");
            continue;
        }
        if is_quote {
            if quote_open {
                out.push('\n');
            } else {
                out.push_str("<blockquote>");
                quote_open = true;
            }
            let body = trimmed[1..].strip_prefix(' ').unwrap_or(&trimmed[1..]);
            out.push_str(&inline(body));
            continue;
        }
        let hashes = trimmed.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
            out.push_str("<b>");
            out.push_str(&inline(trimmed[hashes..].trim()));
            out.push_str("</b>");
            continue;
        }
        if let Some(item) = trimmed
            .strip_prefix("- ")
            .or_else(|| trimmed.strip_prefix("* "))
        {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(indent);
            out.push_str("• ");
            out.push_str(&inline(item));
            continue;
        }
        out.push_str(&inline(line));
    }
    if quote_open {
        out.push_str("</blockquote>");
    }
    out
}

/// Inline spans of one line.
fn inline(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // Inline code: everything up to the next backtick, verbatim.
        if c == '`'
            && let Some(end) = find(&chars, i + 1, &['`'])
        {
            out.push_str("<code>");
            out.push_str(&escape(&chars[i + 1..end].iter().collect::<String>()));
            out.push_str("</code>");
            i = end + 1;
            continue;
        }
        // Links: [text](url)
        if c == '['
            && let Some(close) = find(&chars, i + 1, &[']'])
            && chars.get(close + 1) == Some(&'(')
            && let Some(paren) = find(&chars, close + 2, &[')'])
        {
            let text: String = chars[i + 1..close].iter().collect();
            let url: String = chars[close + 2..paren].iter().collect();
            if url.starts_with("http://") || url.starts_with("https://") || url.starts_with("tg://")
            {
                out.push_str(&format!(
                    "<a href=\"{}\">{}</a>",
                    escape(&url),
                    inline(&text)
                ));
                i = paren + 1;
                continue;
            }
        }
        // Paired emphasis markers, longest first.
        let mut matched = false;
        for (marker, tag) in [
            ("**", "b"),
            ("__", "b"),
            ("~~", "s"),
            ("*", "i"),
            ("_", "i"),
        ] {
            let m: Vec<char> = marker.chars().collect();
            if !starts_with(&chars, i, &m) {
                continue;
            }
            // `_` inside words (snake_case) is not emphasis.
            if marker == "_" && i > 0 && chars[i - 1].is_alphanumeric() {
                break;
            }
            let start = i + m.len();
            if chars.get(start).is_none_or(|c| c.is_whitespace()) {
                break;
            }
            if let Some(end) = find_marker(&chars, start, &m)
                && end > start
                && !chars[end - 1].is_whitespace()
            {
                let inner: String = chars[start..end].iter().collect();
                out.push_str(&format!("<{tag}>{}</{tag}>", inline(&inner)));
                i = end + m.len();
                matched = true;
            }
            break;
        }
        if matched {
            continue;
        }
        out.push_str(&escape(&c.to_string()));
        i += 1;
    }
    out
}

fn starts_with(chars: &[char], at: usize, m: &[char]) -> bool {
    chars.len() >= at + m.len() && chars[at..at + m.len()] == *m
}

fn find(chars: &[char], from: usize, any: &[char]) -> Option<usize> {
    (from..chars.len()).find(|&j| any.contains(&chars[j]))
}

/// The next closing `m` after `from` that is not part of a longer run
/// (so `*` does not close on the first half of `**`).
fn find_marker(chars: &[char], from: usize, m: &[char]) -> Option<usize> {
    let mut j = from;
    while j + m.len() <= chars.len() {
        if chars[j] == '`' {
            // Skip inline code spans: markers inside them are literal.
            if let Some(end) = find(chars, j + 1, &['`']) {
                j = end + 1;
                continue;
            }
        }
        if starts_with(chars, j, m) {
            let after = chars.get(j + m.len());
            if m.len() == 1 && after == Some(&m[0]) {
                j += 2;
                continue;
            }
            if m == ['_'] && after.is_some_and(|c| c.is_alphanumeric()) {
                j += 1;
                continue;
            }
            return Some(j);
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(to_telegram_html("a < b & c > d"), "a &lt; b &amp; c &gt; d");
    }

    #[test]
    fn emphasis_code_and_links() {
        assert_eq!(
            to_telegram_html("**bold** and *it* and `x<y` and ~~no~~"),
            "<b>bold</b> and <i>it</i> and <code>x&lt;y</code> and <s>no</s>"
        );
        assert_eq!(
            to_telegram_html("see [the docs](https://ex.com/a?b=1&c=2)"),
            "see <a href=\"https://ex.com/a?b=1&amp;c=2\">the docs</a>"
        );
        assert_eq!(
            to_telegram_html("**bold _and it_**"),
            "<b>bold <i>and it</i></b>"
        );
    }

    #[test]
    fn unpaired_markers_stay_literal() {
        assert_eq!(to_telegram_html("2 * 3 = 6"), "2 * 3 = 6");
        assert_eq!(to_telegram_html("snake_case_name"), "snake_case_name");
        assert_eq!(to_telegram_html("**open"), "**open");
        assert_eq!(
            to_telegram_html("[x](javascript:alert)"),
            "[x](javascript:alert)"
        );
    }

    #[test]
    fn code_blocks_headings_lists_quotes() {
        assert_eq!(
            to_telegram_html("# Title\n```rust\nlet a = 1 < 2;\n```\n- one\n> quoted\n> more\nend"),
            "<b>Title</b>\n<pre><code class=\"language-rust\">let a = 1 &lt; 2;</code></pre>\n• one\n<blockquote>quoted\nmore</blockquote>\nend"
        );
    }

    #[test]
    fn output_tags_are_balanced_on_odd_input() {
        for md in ["*a **b* c**", "__a *b__ c*", "`a", "~~~", "[a](b", "> **x"] {
            let html = to_telegram_html(md);
            for tag in ["b", "i", "s", "code", "pre", "a", "blockquote"] {
                let opens = html.matches(&format!("<{tag}>")).count()
                    + html.matches(&format!("<{tag} ")).count();
                let closes = html.matches(&format!("</{tag}>")).count();
                assert_eq!(opens, closes, "{tag} unbalanced in {html:?} from {md:?}");
            }
        }
    }
}
