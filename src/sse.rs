//! Server-sent events: an incremental parser for what the upstream streams.
//!
//! Bytes arrive in arbitrary pieces (a line may be split anywhere, even inside
//! a UTF-8 sequence); [`SseParser::push`] buffers until a line ends and
//! returns each complete event. Comment lines (`: keep-alive`), `id:` and
//! `retry:` fields are ignored; multi-line `data:` is joined with `\n`.

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, when one was sent.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Largest line the parser buffers; a longer one is a protocol error rather
/// than unbounded memory growth.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
}

/// The stream broke the SSE rules in a way that cannot be recovered.
#[derive(Debug, thiserror::Error)]
#[error("server-sent event line longer than {MAX_LINE_BYTES} bytes")]
pub struct LineTooLong;

impl SseParser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes and returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(ev) = self.line(&line) {
                events.push(ev);
            }
            start = end + 1;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        Ok(events)
    }

    /// Ends the stream: an event left without its blank line is still delivered
    /// (some servers close right after the last `data:` line).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.buf.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            let line = line.trim_end_matches('\r').to_string();
            if let Some(ev) = self.line(&line) {
                return Some(ev);
            }
        }
        self.dispatch()
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        if !self.has_data {
            self.event = None;
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event: self.event.take(),
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c).unwrap_or_default());
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn split_anywhere() {
        let text = b"data: {\"a\":1}\n\n: keep-alive\n\nevent: x\ndata: line1\ndata: line2\r\n\r\ndata: [DONE]\n\n";
        let whole = all(&[text]);
        for cut in 0..text.len() {
            assert_eq!(all(&[&text[..cut], &text[cut..]]), whole, "cut at {cut}");
        }
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1].event.as_deref(), Some("x"));
        assert_eq!(whole[1].data, "line1\nline2");
        assert_eq!(whole[2].data, "[DONE]");
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let text = "data: héllo ▌\n\n".as_bytes();
        for cut in 0..text.len() {
            let evs = all(&[&text[..cut], &text[cut..]]);
            assert_eq!(evs[0].data, "héllo ▌");
        }
    }

    #[test]
    fn unterminated_last_event_is_delivered() {
        assert_eq!(all(&[b"data: x"])[0].data, "x");
    }
}
