//! HTML reduced to readable text for `web_fetch`: scripts, styles and markup
//! removed, block elements turned into line breaks, entities decoded,
//! whitespace collapsed. Deliberately small; a page is read by a model, not rendered.

/// Elements whose content is never text.
const SKIPPED: &[&str] = &["script", "style", "noscript", "svg", "template", "head"];
/// Elements that start a new line.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "blockquote",
    "hr",
    "title",
    "nav",
    "main",
    "aside",
    "dt",
    "dd",
];

/// Converts an HTML document to text.
pub fn to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 3);
    let mut title = None;
    let mut rest = html;
    let mut skip_until: Option<String> = None;
    while let Some(lt) = rest.find('<') {
        if skip_until.is_none() {
            out.push_str(&decode_entities(&rest[..lt]));
        }
        rest = &rest[lt..];
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if name == "title"
            && !closing
            && title.is_none()
            && let Some(end) = rest.to_ascii_lowercase().find("</title")
        {
            title = Some(decode_entities(rest[..end].trim()));
        }
        if let Some(until) = &skip_until {
            if closing && &name == until {
                skip_until = None;
            }
            continue;
        }
        if !closing && SKIPPED.contains(&name.as_str()) && !tag.ends_with('/') {
            skip_until = Some(name);
            continue;
        }
        // List items and line breaks start a line; other blocks also end one.
        let line_only = matches!(name.as_str(), "li" | "br" | "tr" | "dt" | "dd");
        if BLOCKS.contains(&name.as_str()) && !(closing && line_only) {
            out.push('\n');
        }
        if name == "li" && !closing {
            out.push_str("• ");
        }
    }
    if skip_until.is_none() {
        out.push_str(&decode_entities(rest));
    }
    let body = collapse(&out);
    match title {
        Some(t) if !t.is_empty() && !body.starts_with(&t) => format!("{t}\n\n{body}"),
        _ => body,
    }
}

/// Collapses runs of spaces and more than one blank line.
fn collapse(s: &str) -> String {
    let mut lines = Vec::new();
    let mut blank = 0;
    for line in s.lines() {
        let l = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if l.is_empty() {
            blank += 1;
            if blank == 1 && !lines.is_empty() {
                lines.push(String::new());
            }
        } else {
            blank = 0;
            lines.push(l);
        }
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines.join("\n")
}

/// Decodes the common named entities and numeric ones.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let ent = &rest[1..e];
            let c = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                "mdash" => Some('—'),
                "ndash" => Some('–'),
                "hellip" => Some('…'),
                "copy" => Some('©'),
                _ => ent.strip_prefix('#').and_then(|n| {
                    let code = match n.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => n.parse().ok(),
                    };
                    code.and_then(char::from_u32)
                }),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_markup_and_scripts() {
        let html = "<html><head><title>T &amp; U</title><style>p{}</style></head><body>\
            <script>var x = '<p>';</script><h1>Hello</h1><p>One &lt;two&gt;&#33;</p>\
            <!-- hidden --><ul><li>a</li><li>b</li></ul></body></html>";
        let t = to_text(html);
        assert_eq!(t, "T & U\n\nHello\n\nOne <two>!\n\n• a\n• b");
    }
}
