//! Markdown (as models write it) rendered in the markup each chat platform
//! speaks: Telegram HTML, Discord Markdown, Slack mrkdwn, or plain text.
//!
//! The answer is parsed once by pulldown-cmark (CommonMark with
//! strike-through, tables and task lists), and one renderer walks its events
//! for every markup; the markups differ only in their markers and escaping.
//! Parsing is the maintained parser's job, so emphasis, code spans, links and
//! block structure follow CommonMark instead of line-by-line guessing.
//!
//! Output is line-oriented. Open quotes and list items form a stack that
//! writes each line's prefix ("> ", the item's bullet on its first line and
//! indentation after). Blocks are separated by a blank line, inside list items
//! by a single newline (lists are always written tight: chat is not a page).
//! Headings become a bold line (Discord keeps `#`..`###`, which it renders),
//! a rule is a line of dashes, and a table is a code block with padded columns
//! (no chat platform renders tables, and monospace keeps the columns aligned).
//!
//! Telegram output is always well-formed HTML of the tags the Bot API takes:
//! tags are only written for Start/End event pairs, which the parser keeps
//! balanced; raw HTML in the input arrives as HTML events and is escaped as
//! text; and the Bot API's nesting rules are kept (quotes do not nest, links
//! hold neither links nor code). A link is only a link for the schemes a
//! platform opens; otherwise its text is followed by the URL in parentheses.
//!
//! `~~x~~` strikes through, but a single `~x~` stays literal: models write
//! "~5 min" for "about five minutes", so it is parsed as subscript (the
//! parser's way to keep single tildes apart) and written back as tildes.

use pulldown_cmark::{
    Alignment, CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd, TextMergeStream,
};

/// The markup a platform speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// Telegram Bot API `parse_mode: HTML`.
    TelegramHtml,
    /// Discord's Markdown dialect.
    DiscordMarkdown,
    /// Slack's mrkdwn.
    SlackMrkdwn,
    /// Text with the Markdown syntax removed.
    Plain,
}

/// The bullet of an unordered list item (Discord renders `- ` lists itself).
const BULLET: &str = "• ";
const DISCORD_BULLET: &str = "- ";
/// A thematic break: platforms have no rule, a line of dashes reads as one.
const RULE: &str = "———";
/// Task list items, in place of the checkbox a browser would draw.
const TASK_DONE: &str = "☑ ";
const TASK_OPEN: &str = "☐ ";
/// Breaks up "```" inside a code block, which would close Discord's and
/// Slack's fence early (neither has longer fences).
const ZERO_WIDTH_SPACE: char = '\u{200b}';
/// Characters kept in a code block's language label (`c++`, `f#`, `objective-c`).
const LANGUAGE_CHARS: &str = "+-_#.";
/// Discord's Markdown characters, backslash-escaped in text so they stay literal.
const DISCORD_SPECIAL: &str = "\\*~`|[]";
/// Discord's block markers, escaped when text starts a line.
const DISCORD_LINE_START: &str = "#>-+";
/// Discord (like the other two) turns bare URLs into links itself; a
/// backslash inside one would break it, so URLs in text are left alone.
const URL_STARTS: [&str; 2] = ["http://", "https://"];

/// Renders Markdown (as a model writes it) in `markup`.
pub fn render(markdown: &str, markup: Markup) -> String {
    let options = Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_SUBSCRIPT
        | Options::ENABLE_TABLES
        | Options::ENABLE_TASKLISTS;
    let mut r = Renderer::new(markup, markdown.len());
    // Merged text keeps a word whole (Discord's escaping looks at neighbours).
    for event in TextMergeStream::new(Parser::new_ext(markdown, options)) {
        r.event(event);
    }
    r.out
}

/// Escapes plain text for `markup` (what a mid-stream frame or a notice needs
/// when sent formatted), e.g. HTML-escaping for Telegram.
pub fn escape(text: &str, markup: Markup) -> String {
    escape_at(text, markup, true)
}

/// `escape`, told whether `text` starts a line (Discord's block markers only
/// count there).
fn escape_at(text: &str, markup: Markup, mut line_start: bool) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut in_url = false;
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        match (markup, c) {
            (Markup::TelegramHtml | Markup::SlackMrkdwn, '&') => out.push_str("&amp;"),
            (Markup::TelegramHtml | Markup::SlackMrkdwn, '<') => out.push_str("&lt;"),
            (Markup::TelegramHtml | Markup::SlackMrkdwn, '>') => out.push_str("&gt;"),
            (Markup::TelegramHtml, '"') => out.push_str("&quot;"),
            (Markup::DiscordMarkdown, c) => {
                if prev.is_none_or(char::is_whitespace) {
                    in_url = URL_STARTS.iter().any(|u| text[i..].starts_with(u));
                }
                let next = text[i + c.len_utf8()..].chars().next();
                // `_` inside a word (snake_case) is no emphasis on Discord.
                let intraword = c == '_'
                    && prev.is_some_and(char::is_alphanumeric)
                    && next.is_some_and(char::is_alphanumeric);
                let special = DISCORD_SPECIAL.contains(c)
                    || (c == '_' && !intraword)
                    || (line_start && DISCORD_LINE_START.contains(c));
                if special && !in_url && !c.is_whitespace() {
                    out.push('\\');
                }
                out.push(c);
            }
            (_, c) => out.push(c),
        }
        line_start = c == '\n';
        in_url &= !c.is_whitespace();
        prev = Some(c);
    }
    out
}

/// Whether `markup` may link to `url`: Telegram opens http(s) and its own
/// `tg:`, Slack also `mailto:`; plain text has no links.
fn linkable(url: &str, markup: Markup) -> bool {
    let schemes: &[&str] = match markup {
        Markup::TelegramHtml => &["http://", "https://", "tg://"],
        Markup::DiscordMarkdown => &["http://", "https://"],
        Markup::SlackMrkdwn => &["http://", "https://", "mailto:"],
        Markup::Plain => &[],
    };
    let lower = url.to_ascii_lowercase();
    schemes.iter().any(|s| lower.starts_with(s))
}

/// Inline styles, indexing `MARKERS`.
#[derive(Debug, Clone, Copy)]
enum Style {
    Bold,
    Italic,
    Strike,
}

/// Opening and closing markers per markup (in `Markup` order) and `Style`.
const MARKERS: [[(&str, &str); 3]; 4] = [
    [("<b>", "</b>"), ("<i>", "</i>"), ("<s>", "</s>")],
    [("**", "**"), ("*", "*"), ("~~", "~~")],
    [("*", "*"), ("_", "_"), ("~", "~")],
    [("", ""); 3],
];

/// An open container, which prefixes every line written inside it.
enum Container {
    Quote,
    /// A list item: its marker (until its first line took it), then the
    /// indentation of its text.
    Item(Option<String>, usize),
}

/// An open link or image.
struct Link {
    /// What closes it.
    close: String,
    /// The URL as text, shown when the link has no text of its own.
    url: String,
    /// The output length after the opening, to tell whether text followed.
    mark: usize,
}

/// A table being collected: column alignments, then the rows of cells as
/// plain text, the header first.
struct Table(Vec<Alignment>, Vec<Vec<String>>);

struct Renderer {
    markup: Markup,
    out: String,
    containers: Vec<Container>,
    /// Newlines owed before the next output: written lazily, so a closing tag
    /// stays on its last line and the output never ends in blank lines.
    pending: usize,
    /// No prefix written yet on the current line.
    at_line_start: bool,
    /// Nothing but prefixes and block tags on the current line.
    line_empty: bool,
    /// Open bold/italic/strike spans: nested same styles write one pair.
    depth: [usize; 3],
    links: Vec<Link>,
    /// The next number of each open list (`None`: unordered).
    lists: Vec<Option<u64>>,
    /// Per open heading: whether it is written bold.
    headings: Vec<bool>,
    quotes: usize,
    /// The raw text of the code or HTML block being collected.
    capture: Option<String>,
    language: String,
    table: Option<Table>,
}

impl Renderer {
    fn new(markup: Markup, len: usize) -> Self {
        Self {
            markup,
            out: String::with_capacity(len + len / 4),
            containers: Vec::new(),
            pending: 0,
            at_line_start: true,
            line_empty: true,
            depth: [0; 3],
            links: Vec::new(),
            lists: Vec::new(),
            headings: Vec::new(),
            quotes: 0,
            capture: None,
            language: String::new(),
            table: None,
        }
    }

    fn event(&mut self, event: Event) {
        if let Some(table) = &mut self.table {
            // Inside a table only the cells' text counts; formatting is dropped.
            match event {
                Event::Start(Tag::TableHead | Tag::TableRow) => table.1.push(Vec::new()),
                Event::Start(Tag::TableCell) => table
                    .1
                    .last_mut()
                    .into_iter()
                    .for_each(|r| r.push(String::new())),
                Event::Text(t) | Event::Code(t) | Event::InlineHtml(t) | Event::Html(t) => table
                    .1
                    .last_mut()
                    .and_then(|r| r.last_mut())
                    .into_iter()
                    .for_each(|c| c.push_str(&t)),
                Event::End(TagEnd::Table) => self.end_table(),
                _ => {}
            }
            return;
        }
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            // Raw HTML from the input is text: never passed through as markup.
            Event::Text(t) | Event::Html(t) | Event::InlineHtml(t) => self.text(&t),
            Event::Code(code) => self.code_span(&code),
            Event::SoftBreak | Event::HardBreak => self.newline(),
            Event::Rule => {
                self.open_block();
                self.raw(RULE);
                self.end_block();
            }
            Event::TaskListMarker(done) => self.raw(if done { TASK_DONE } else { TASK_OPEN }),
            // Math and footnotes are not enabled in the parser's options.
            Event::InlineMath(_) | Event::DisplayMath(_) | Event::FootnoteReference(_) => {}
        }
    }

    fn start(&mut self, tag: Tag) {
        match tag {
            Tag::Heading { level, .. } => {
                self.open_block();
                let hashes = match level {
                    HeadingLevel::H1 => "# ",
                    HeadingLevel::H2 => "## ",
                    HeadingLevel::H3 => "### ",
                    _ => "",
                };
                let discord = self.markup == Markup::DiscordMarkdown && !hashes.is_empty();
                if discord {
                    self.raw(hashes);
                } else {
                    self.style(Style::Bold, true);
                }
                self.headings.push(!discord);
            }
            Tag::BlockQuote(_) => {
                self.open_block();
                // Telegram quotes do not nest: an inner quote joins the outer one.
                if self.markup == Markup::TelegramHtml && self.quotes == 0 {
                    self.prefix();
                    self.out.push_str("<blockquote>");
                }
                self.quotes += 1;
                self.containers.push(Container::Quote);
            }
            Tag::CodeBlock(kind) => {
                self.open_block();
                self.language = match kind {
                    CodeBlockKind::Fenced(info) => info
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || LANGUAGE_CHARS.contains(*c))
                        .collect(),
                    CodeBlockKind::Indented => String::new(),
                };
                self.capture = Some(String::new());
            }
            Tag::HtmlBlock => {
                self.open_block();
                self.capture = Some(String::new());
            }
            Tag::List(start) => {
                self.open_block();
                self.lists.push(start);
            }
            Tag::Item => {
                self.open_block();
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let m = format!("{n}. ");
                        *n = n.saturating_add(1);
                        m
                    }
                    _ if self.markup == Markup::DiscordMarkdown => DISCORD_BULLET.to_string(),
                    _ => BULLET.to_string(),
                };
                let indent = marker.chars().count();
                self.containers.push(Container::Item(Some(marker), indent));
            }
            Tag::Table(aligns) => {
                self.open_block();
                self.table = Some(Table(aligns, Vec::new()));
            }
            Tag::Emphasis => self.style(Style::Italic, true),
            Tag::Strong => self.style(Style::Bold, true),
            Tag::Strikethrough => self.style(Style::Strike, true),
            Tag::Subscript => self.text("~"),
            Tag::Link {
                link_type,
                dest_url,
                ..
            } => self.open_link(&dest_url, link_type),
            Tag::Image {
                link_type,
                dest_url,
                ..
            } => self.open_link(&dest_url, link_type),
            // Not enabled in the parser's options, or carried by other events.
            _ => self.open_block(),
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(_) => {
                if self.headings.pop().unwrap_or(false) {
                    self.style(Style::Bold, false);
                }
                self.end_block();
            }
            TagEnd::BlockQuote(_) => {
                self.containers.pop();
                self.quotes = self.quotes.saturating_sub(1);
                if self.markup == Markup::TelegramHtml && self.quotes == 0 {
                    self.out.push_str("</blockquote>");
                }
                self.end_block();
            }
            TagEnd::CodeBlock => {
                let code = self.capture.take().unwrap_or_default();
                let language = std::mem::take(&mut self.language);
                self.code_block(code.strip_suffix('\n').unwrap_or(&code), &language);
            }
            TagEnd::HtmlBlock => {
                let html = self.capture.take().unwrap_or_default();
                self.text(html.trim_end_matches('\n'));
                self.end_block();
            }
            TagEnd::List(_) => {
                self.lists.pop();
                self.end_block();
            }
            TagEnd::Item => {
                // An empty item still shows its bullet.
                if let Some(Container::Item(Some(_), _)) = self.containers.last() {
                    self.prefix();
                }
                self.containers.pop();
                self.pending = self.pending.max(1);
            }
            TagEnd::Emphasis => self.style(Style::Italic, false),
            TagEnd::Strong => self.style(Style::Bold, false),
            TagEnd::Strikethrough => self.style(Style::Strike, false),
            TagEnd::Subscript => self.text("~"),
            TagEnd::Link | TagEnd::Image => {
                if let Some(link) = self.links.pop() {
                    let empty = self.out.len() == link.mark;
                    if empty {
                        self.raw(&link.url);
                    }
                    // A text-less link shown as "url (url)" would say it twice.
                    if !(empty && link.close.starts_with(" (")) {
                        self.raw(&link.close);
                    }
                }
            }
            _ => self.end_block(),
        }
    }

    fn open_link(&mut self, url: &str, link_type: pulldown_cmark::LinkType) {
        use pulldown_cmark::LinkType::{Autolink, Email};
        let markup = self.markup;
        let esc = |s: &str| escape_at(s, markup, false);
        let (open, close) = if !self.links.is_empty() {
            // Links do not nest (an image inside a link): its text only.
            (String::new(), String::new())
        } else if linkable(url, self.markup) {
            match self.markup {
                Markup::TelegramHtml => (format!("<a href=\"{}\">", esc(url)), "</a>".into()),
                // Discord links a bare URL itself.
                Markup::DiscordMarkdown if link_type == Autolink => Default::default(),
                Markup::DiscordMarkdown => {
                    let url = url
                        .replace(' ', "%20")
                        .replace('(', "%28")
                        .replace(')', "%29");
                    ("[".into(), format!("]({url})"))
                }
                // A `|` in the URL would end Slack's URL part early.
                _ => (format!("<{}|", esc(url).replace('|', "%7C")), ">".into()),
            }
        } else if matches!(link_type, Autolink | Email) {
            Default::default() // The text already is the address.
        } else {
            (String::new(), format!(" ({})", esc(url)))
        };
        self.raw(&open);
        let (url, mark) = (esc(url), self.out.len());
        self.links.push(Link { close, url, mark });
    }

    /// Blank line between blocks, a single newline inside list items.
    fn gap(&self) -> usize {
        if let Some(Container::Item(..)) = self.containers.last() {
            1
        } else {
            2
        }
    }

    /// A block starts: it goes on a line of its own.
    fn open_block(&mut self) {
        if !self.line_empty {
            self.pending = self.pending.max(1);
        }
    }

    fn end_block(&mut self) {
        self.pending = self.pending.max(self.gap());
    }

    /// Writes owed newlines, then the containers' prefixes if the line has none yet.
    fn prefix(&mut self) {
        if self.pending > 0 && !self.out.is_empty() {
            for _ in 0..self.pending {
                self.out.push('\n');
            }
            self.at_line_start = true;
            self.line_empty = true;
        }
        self.pending = 0;
        if !self.at_line_start {
            return;
        }
        self.at_line_start = false;
        // Only plain text shows nested quotes: Telegram's tag, Discord's and
        // Slack's `> ` do not nest.
        let nests = self.markup == Markup::Plain;
        let mut quoted = false;
        for c in &mut self.containers {
            match c {
                Container::Quote => {
                    if self.markup != Markup::TelegramHtml && (nests || !quoted) {
                        self.out.push_str("> ");
                    }
                    quoted = true;
                }
                Container::Item(marker, indent) => match marker.take() {
                    Some(m) => self.out.push_str(&m),
                    None => self.out.extend(std::iter::repeat_n(' ', *indent)),
                },
            }
        }
    }

    /// Writes markup (or escaped text) as it is, after the line's prefix.
    fn raw(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        self.prefix();
        self.out.push_str(s);
        self.line_empty = false;
    }

    fn newline(&mut self) {
        self.out.push('\n');
        self.at_line_start = true;
        self.line_empty = true;
    }

    /// Text from the input, escaped; collected raw inside code and HTML blocks.
    fn text(&mut self, text: &str) {
        if let Some(capture) = &mut self.capture {
            capture.push_str(text);
            return;
        }
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.newline();
            }
            if !line.is_empty() {
                self.prefix();
                let escaped = escape_at(line, self.markup, self.line_empty);
                self.raw(&escaped);
            }
        }
    }

    fn style(&mut self, style: Style, open: bool) {
        let depth = &mut self.depth[style as usize];
        let (opening, closing) = MARKERS[self.markup as usize][style as usize];
        if open {
            *depth += 1;
            if *depth == 1 {
                self.raw(opening);
            }
        } else {
            *depth = depth.saturating_sub(1);
            if *depth == 0 {
                self.raw(closing);
            }
        }
    }

    fn code_span(&mut self, code: &str) {
        let code = match self.markup {
            // Telegram links cannot hold code: the code is plain text there.
            Markup::TelegramHtml if !self.links.is_empty() => escape(code, self.markup),
            Markup::TelegramHtml => format!("<code>{}</code>", escape(code, self.markup)),
            Markup::DiscordMarkdown => {
                // A fence longer than any backtick run inside; spaces keep
                // backticks at the edges from joining it.
                let longest = code.split(|c| c != '`').map(str::len).max().unwrap_or(0);
                let fence = "`".repeat(longest + 1);
                let edge = code.starts_with('`') || code.ends_with('`');
                let pad = if edge { " " } else { "" };
                format!("{fence}{pad}{code}{pad}{fence}")
            }
            Markup::SlackMrkdwn => format!("`{}`", escape(code, self.markup)),
            Markup::Plain => code.to_string(),
        };
        self.raw(&code);
    }

    fn code_block(&mut self, code: &str, language: &str) {
        let fenced = |code: &str| code.replace("```", &format!("`{ZERO_WIDTH_SPACE}``"));
        match self.markup {
            Markup::TelegramHtml => {
                let class = match language {
                    "" => String::new(),
                    l => format!(" class=\"language-{}\"", escape(l, self.markup)),
                };
                // Inside <pre> the lines keep no prefix: the code is exact.
                self.raw(&format!(
                    "<pre><code{class}>{}</code></pre>",
                    escape(code, self.markup)
                ));
            }
            Markup::DiscordMarkdown => self.lines(&format!("```{language}\n{}\n```", fenced(code))),
            // Slack shows no language label.
            Markup::SlackMrkdwn => {
                self.lines(&format!("```\n{}\n```", fenced(&escape(code, self.markup))))
            }
            Markup::Plain => self.lines(code),
        }
        self.end_block();
    }

    /// Writes lines as they are, each after the containers' prefix.
    fn lines(&mut self, text: &str) {
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.newline();
            }
            self.prefix();
            self.raw(line);
        }
        self.line_empty = false;
    }

    /// A table as a code block: columns padded to their widest cell, the
    /// header ruled off.
    fn end_table(&mut self) {
        let Some(Table(aligns, rows)) = self.table.take() else {
            return;
        };
        let mut widths: Vec<usize> = Vec::new();
        for row in &rows {
            widths.resize(widths.len().max(row.len()), 0);
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.trim().chars().count());
            }
        }
        let mut lines = Vec::with_capacity(rows.len() + 1);
        for (i, row) in rows.iter().enumerate() {
            let cells = widths.iter().enumerate().map(|(c, &w)| {
                let cell = row.get(c).map_or("", |s| s.trim());
                let pad = w - cell.chars().count();
                let left = match aligns.get(c) {
                    Some(Alignment::Right) => pad,
                    Some(Alignment::Center) => pad / 2,
                    _ => 0,
                };
                format!("{}{cell}{}", " ".repeat(left), " ".repeat(pad - left))
            });
            lines.push(cells.collect::<Vec<_>>().join(" | ").trim_end().to_string());
            if i == 0 {
                let rule = widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>();
                lines.push(rule.join("-+-"));
            }
        }
        self.code_block(&lines.join("\n"), "");
    }
}

#[cfg(test)]
mod tests {
    use super::Markup::*;
    use super::*;
    use proptest::prelude::*;

    const ALL: [Markup; 4] = [TelegramHtml, DiscordMarkdown, SlackMrkdwn, Plain];

    fn tg(md: &str) -> String {
        render(md, TelegramHtml)
    }

    /// Each case is "markdown => expected output".
    fn check(markup: Markup, cases: &[&str]) {
        for case in cases {
            let (md, want) = case.split_once(" => ").unwrap_or((case, ""));
            assert_eq!(render(md, markup), want, "{markup:?} of {md:?}");
        }
    }

    /// Checks Telegram HTML: only the Bot API's tags, closed in order, nested
    /// as it allows (no quote in a quote, nothing in code but code in pre, no
    /// link or code in a link), and no bare `<`, `>` or `&` in text.
    fn well_formed(html: &str) -> Result<(), String> {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = html;
        while let Some(i) = rest.find(['<', '>', '&']) {
            let at = &rest[i..];
            if let Some(after) = at.strip_prefix('&') {
                if !["amp;", "lt;", "gt;", "quot;"]
                    .iter()
                    .any(|e| after.starts_with(e))
                {
                    return Err(format!("bare & at {at:?}"));
                }
                rest = after;
                continue;
            }
            let end = at.find('>').filter(|_| at.starts_with('<'));
            let end = end.ok_or(format!("bare < or > at {at:?}"))?;
            let tag = &at[1..end];
            rest = &at[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if open.pop() != Some(name) {
                    return Err(format!("</{name}> closes no open tag in {html:?}"));
                }
                continue;
            }
            let quoted = |p: &str| {
                tag.starts_with(p)
                    && tag.ends_with('"')
                    && !tag[p.len()..tag.len() - 1].contains(['"', '<'])
            };
            let name = match tag {
                "b" | "i" | "u" | "s" | "code" | "pre" | "blockquote" => tag,
                _ if quoted("code class=\"language-") => "code",
                _ if quoted("a href=\"") => "a",
                _ => return Err(format!("unsupported tag <{tag}>")),
            };
            let inside = |t: &str| open.contains(&t);
            let parent = open.last().copied();
            if parent == Some("code")
                || parent == Some("pre") && name != "code"
                || name == "blockquote" && inside("blockquote")
                || (name == "a" || name == "code") && inside("a")
            {
                return Err(format!("<{tag}> inside {open:?}"));
            }
            open.push(name);
        }
        if open.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {open:?}"))
        }
    }

    #[test]
    fn checker_rejects_bad_html() {
        let bad = [
            "<b>x",
            "<b><i>x</b></i>",
            "<p>x</p>",
            "a < b",
            "a & b",
            "x>",
            "<a href=\"u\"><a href=\"v\">x</a></a>",
            "<blockquote><blockquote>x</blockquote></blockquote>",
            "<code><b>x</b></code>",
            "<a href=\"u\"><code>x</code></a>",
        ];
        for html in bad {
            assert!(well_formed(html).is_err(), "{html:?} passed");
        }
        assert_eq!(
            well_formed("<pre><code class=\"language-rs\">&lt;</code></pre>"),
            Ok(())
        );
    }

    // Ported from the hand-written converter.

    #[test]
    fn escapes_html() {
        assert_eq!(tg("a < b & c > d"), "a &lt; b &amp; c &gt; d");
        assert_eq!(
            escape("<b>\"x\" & y", TelegramHtml),
            "&lt;b&gt;&quot;x&quot; &amp; y"
        );
    }

    #[test]
    fn emphasis_code_and_links() {
        check(
            TelegramHtml,
            &[
                "**bold** and *it* and `x<y` and ~~no~~ => <b>bold</b> and <i>it</i> and <code>x&lt;y</code> and <s>no</s>",
                "see [the docs](https://ex.com/a?b=1&c=2) => see <a href=\"https://ex.com/a?b=1&amp;c=2\">the docs</a>",
                "**bold _and it_** => <b>bold <i>and it</i></b>",
            ],
        );
    }

    #[test]
    fn unpaired_markers_stay_literal() {
        check(
            TelegramHtml,
            &[
                "2 * 3 = 6 => 2 * 3 = 6",
                "snake_case_name => snake_case_name",
                "**open => **open",
                // The old converter left the link syntax; now text and URL.
                "[x](javascript:alert) => x (javascript:alert)",
            ],
        );
    }

    #[test]
    fn code_blocks_headings_lists_quotes() {
        // CommonMark: a line after a quote continues it unless a blank line
        // ends the quote; blocks are now separated by a blank line.
        assert_eq!(
            tg("# Title\n```rust\nlet a = 1 < 2;\n```\n- one\n> quoted\n> more\n\nend"),
            "<b>Title</b>\n\n<pre><code class=\"language-rust\">let a = 1 &lt; 2;</code></pre>\n\n\
             • one\n\n<blockquote>quoted\nmore</blockquote>\n\nend"
        );
    }

    #[test]
    fn output_tags_are_balanced_on_odd_input() {
        let odd = [
            "*a **b* c**",
            "__a *b__ c*",
            "`a",
            "~~~",
            "[a](b",
            "> **x",
            "<b>x",
        ];
        for md in odd {
            assert_eq!(well_formed(&tg(md)), Ok(()), "{md:?}");
        }
        // CommonMark pairs these differently from the old converter.
        check(
            TelegramHtml,
            &[
                "*a **b* c** => <i>a b c</i>", // em(a em(em(b) c)): nested italics are one
                "__a *b__ c* => <b>a *b</b> c*",
                "*a*b* => <i>a</i>b*",
            ],
        );
    }

    #[test]
    fn telegram() {
        check(
            TelegramHtml,
            &[
                "- a\n  - b\n    1. c\n    2. d\n- e => • a\n  • b\n    1. c\n    2. d\n• e",
                "3. x\n\n   more\n4. y => 3. x\n   more\n4. y",
                "- [ ] todo\n- [x] done\n-  => • ☐ todo\n• ☑ done\n• ",
                "a\n\n---\n\n#### deep => a\n\n———\n\n<b>deep</b>",
                "# **bold** title => <b>bold title</b>",
                "one  \ntwo\nthree => one\ntwo\nthree",
                "> a\n> > b => <blockquote>a\n\nb</blockquote>",
                "    indented <code> => <pre><code>indented &lt;code&gt;</code></pre>",
                "```c++ x\na && b\n``` => <pre><code class=\"language-c++\">a &amp;&amp; b</code></pre>",
                "[**b** *i*](https://x) => <a href=\"https://x\"><b>b</b> <i>i</i></a>",
                "[`c`](tg://user?id=1) => <a href=\"tg://user?id=1\">c</a>",
                "[a](https://x/\"q\") => <a href=\"https://x/&quot;q&quot;\">a</a>",
                "![alt](https://i/x.png) => <a href=\"https://i/x.png\">alt</a>",
                "![](https://i/y.png) => <a href=\"https://i/y.png\">https://i/y.png</a>",
                "[![i](https://i)](https://l) => <a href=\"https://l\">i</a>",
                "<https://a.b> <me@x.io> => <a href=\"https://a.b\">https://a.b</a> me@x.io",
                "[a](ftp://x) [](ftp://y) => a (ftp://x) ftp://y",
                // Raw HTML is text; code keeps Markdown and HTML characters verbatim.
                "<b>hi</b> <script> => &lt;b&gt;hi&lt;/b&gt; &lt;script&gt;",
                "<div>\n*x*\n</div>\n\nafter => &lt;div&gt;\n*x*\n&lt;/div&gt;\n\nafter",
                "`a *b* <c>` => <code>a *b* &lt;c&gt;</code>",
                "about ~5 min, ~~gone~~ => about ~5 min, <s>gone</s>",
            ],
        );
    }

    #[test]
    fn tables_are_code_blocks() {
        let md = "| a | bb |\n|--:|:--|\n| 1 | 2 |\n| 333 | **x** |";
        let table = "  a | bb\n----+---\n  1 | 2\n333 | x";
        assert_eq!(tg(md), format!("<pre><code>{table}</code></pre>"));
        assert_eq!(render(md, DiscordMarkdown), format!("```\n{table}\n```"));
        assert_eq!(render(md, Plain), table);
    }

    #[test]
    fn discord() {
        check(
            DiscordMarkdown,
            &[
                "**b** *i* ~~s~~ `c*` => **b** *i* ~~s~~ `c*`",
                "# one\n\n### three\n\n#### four => # one\n\n### three\n\n**four**",
                "2 * 3, snake_case, _x => 2 \\* 3, snake_case, \\_x",
                "\\# not a heading => \\# not a heading",
                "see https://x.io/a_b*c => see https://x.io/a_b*c",
                "[a](https://x/(1)) <https://y> => [a](https://x/%281%29) https://y",
                "![alt](https://i) => [alt](https://i)",
                "``a`b`` => ``a`b``",
                "```py\nx = '```'\n``` => ```py\nx = '`\u{200b}``'\n```",
                "- a\n  - b\n> q\n> > r => - a\n  - b\n\n> q\n\n> r",
                "<b>raw</b> => <b>raw</b>",
            ],
        );
    }

    #[test]
    fn slack() {
        check(
            SlackMrkdwn,
            &[
                "**b** *i* ~~s~~ `a<b` => *b* _i_ ~s~ `a&lt;b`",
                "## Head\n\n- x & y\n- <z> => *Head*\n\n• x &amp; y\n• &lt;z&gt;",
                "[**t**](https://x?a=1&b=2) => <https://x?a=1&amp;b=2|*t*>",
                "[m](mailto:a@b.c) => <mailto:a@b.c|m>",
                "```rust\nif a<b {}\n``` => ```\nif a&lt;b {}\n```",
                "> quote\n\ntext => > quote\n\ntext",
            ],
        );
        assert_eq!(escape("a<b>&", SlackMrkdwn), "a&lt;b&gt;&amp;");
    }

    #[test]
    fn plain() {
        check(
            Plain,
            &[
                "# T\n\n**b** _i_ `c` [l](https://x) ![a](https://i) => T\n\nb i c l (https://x) a (https://i)",
                "```\n<x>\n```\n\n1. a\n2. b\n\n> q\n> > r => <x>\n\n1. a\n2. b\n\n> q\n\n> > r",
            ],
        );
        assert_eq!(escape("<*>", Plain), "<*>");
    }

    #[test]
    fn empty_input_is_empty() {
        for m in ALL {
            assert_eq!(render("", m), "");
            assert_eq!(render("\n\n  \n", m), "");
        }
    }

    /// Markdown-ish fragments, so generated answers hit every construct.
    fn markdownish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[*_`~<>&#\\\\\n ()a\\[\\]!|\"-]{0,12}",
            prop::sample::select(vec![
                "**",
                "*",
                "__",
                "~~",
                "`",
                "```",
                "```py\n",
                "\n",
                "\n\n",
                "> ",
                "- ",
                "1. ",
                "# ",
                "#### ",
                "[a](https://x)",
                "![i](tg://y)",
                "](",
                "<b>",
                "</b>",
                "<https://z>",
                "---\n",
                "| a | b |\n|---|---|\n| 1 | 2 |\n",
                "- [ ] ",
                "  ",
                "\\",
                "&amp;",
            ])
            .prop_map(str::to_string),
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn telegram_output_is_well_formed(md in markdownish()) {
            let html = tg(&md);
            prop_assert_eq!(well_formed(&html), Ok(()), "from {:?}: {:?}", md, html);
        }

        #[test]
        fn any_text_renders_in_every_markup(md in any::<String>()) {
            prop_assert_eq!(well_formed(&tg(&md)), Ok(()));
            prop_assert_eq!(well_formed(&escape(&md, TelegramHtml)), Ok(()));
            for m in ALL {
                render(&md, m);
                escape(&md, m);
            }
        }
    }
}
