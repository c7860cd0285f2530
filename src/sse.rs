//! Server-sent events: an incremental parser for what the upstream streams.
//!
//! Bytes arrive in arbitrary pieces (a line may be split anywhere, even inside
//! a UTF-8 sequence); [`SseParser::push`] buffers until a line ends and
//! returns each complete event. Comment lines (`: keep-alive`), `id:` and
//! `retry:` fields are ignored; multi-line `data:` is joined with `\n`.
//!
//! The work is linear in the input: a partial line is never scanned twice
//! (the parser remembers how far it looked for the line's end), so a 15 MB
//! line arriving in 1 KB pieces costs one pass, not 15 000. A line, or an
//! event's data, longer than [`MAX_LINE_BYTES`] fails the stream instead of
//! growing without bound.
//!
//! Hand-written rather than a crate: the maintained SSE parsers
//! (eventsource-stream and its forks) come with their own stream plumbing
//! around a parser of the same size, and none documents a line cap.

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, when one was sent.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Largest line (and largest event data) the parser buffers; a longer one is
/// a protocol error rather than unbounded memory growth.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a line end (none was there).
    scanned: usize,
    /// Bytes looked at in all, for the linearity test.
    #[cfg(test)]
    examined: usize,
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
        // Only the bytes not searched before: linear however the line is cut.
        let mut from = self.scanned;
        while let Some(pos) = self.buf[from..].iter().position(|&b| b == b'\n') {
            #[cfg(test)]
            {
                self.examined += pos + 1;
            }
            let end = from + pos;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(ev) = self.line(&line) {
                events.push(ev);
            }
            start = end + 1;
            from = start;
        }
        #[cfg(test)]
        {
            self.examined += self.buf.len() - from;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_LINE_BYTES || self.data.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        Ok(events)
    }

    /// Ends the stream: an event left without its blank line is still delivered
    /// (some servers close right after the last `data:` line).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.buf.is_empty() {
            self.scanned = 0;
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
    fn a_long_line_in_small_pieces_is_read_in_one_pass() {
        let line = format!("data: {}\n\n", "x".repeat(1_000_000));
        let mut p = SseParser::new();
        let mut events = Vec::new();
        for piece in line.as_bytes().chunks(1024) {
            events.extend(p.push(piece).unwrap_or_default());
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), 1_000_000);
        assert!(
            p.examined <= line.len(),
            "each byte looked at once: {} for {}",
            p.examined,
            line.len()
        );
    }

    #[test]
    fn a_line_over_the_cap_fails_the_stream() {
        let mut p = SseParser::new();
        let piece = vec![b'x'; 1024 * 1024];
        let mut failed = false;
        for _ in 0..=MAX_LINE_BYTES / piece.len() {
            if p.push(&piece).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "a line longer than the cap is refused");
    }

    #[test]
    fn unterminated_last_event_is_delivered() {
        assert_eq!(all(&[b"data: x"])[0].data, "x");
    }
}
