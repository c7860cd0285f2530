//! Markdown → Telegram HTML always gives well-formed HTML: only Telegram's
//! tags, every tag closed in the order it was opened, nothing left open, and
//! no stray `<`, `>` or `&` outside tags and entities.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The tags the converter may emit (a subset of Telegram's).
const TAGS: &[&str] = &["b", "i", "s", "code", "pre", "a", "blockquote"];

/// Checks tag balance; `Err` says what is wrong where.
fn check(html: &str) -> Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = html;
    let mut at = 0;
    while let Some(i) = rest.find(['<', '>', '&']) {
        let pos = at + i;
        let tail = &rest[i..];
        let used = if let Some(entity) = tail.strip_prefix('&') {
            let end = entity
                .find(';')
                .ok_or(format!("`&` without `;` at {pos}"))?;
            let name = &entity[..end];
            if !["amp", "lt", "gt", "quot"].contains(&name) {
                return Err(format!("unknown entity &{name}; at {pos}"));
            }
            end + 2
        } else if tail.starts_with('>') {
            return Err(format!("stray `>` at {pos}"));
        } else {
            let end = tail.find('>').ok_or(format!("unterminated tag at {pos}"))?;
            let inner = &tail[1..end];
            if inner.contains('<') {
                return Err(format!("`<` inside tag at {pos}"));
            }
            if let Some(name) = inner.strip_prefix('/') {
                match open.pop() {
                    Some(top) if top == name => {}
                    top => return Err(format!("</{name}> at {pos} closes {top:?}")),
                }
            } else {
                let (name, attrs) = inner.split_once(' ').unwrap_or((inner, ""));
                if !TAGS.contains(&name) {
                    return Err(format!("unexpected tag <{name}> at {pos}"));
                }
                if attrs.matches('"').count() % 2 != 0 {
                    return Err(format!("unbalanced quotes in <{inner}> at {pos}"));
                }
                open.push(name);
            }
            end + 1
        };
        at = pos + used;
        rest = &html[at..];
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(format!("left open: {open:?}"))
    }
}

fuzz_target!(|input: &[u8]| {
    let md = String::from_utf8_lossy(input);
    let html = hermes::platforms::markup::render(&md, hermes::platforms::markup::Markup::TelegramHtml);
    if let Err(e) = check(&html) {
        panic!("malformed HTML: {e}\nmarkdown: {md:?}\nhtml: {html:?}");
    }
});
