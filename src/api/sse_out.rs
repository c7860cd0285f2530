//! SSE responses: a stream of [`Frame`]s becomes the response body, with a
//! keep-alive comment at a steady interval (proxies and clients see
//! traffic during long tool runs), the open-stream gauge, and the headers
//! streaming clients and proxies need.
//!
//! The body is written here rather than by a library: the encoding is a few
//! lines (<https://html.spec.whatwg.org/multipage/server-sent-events.html>),
//! and the crate that offered it pulled in the full `regex` engine for the
//! router, whose compilation of the `{id}` routes was a quarter of start-up.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;

use super::chat_format::Frame;
use super::run::SESSION_HEADER;
use crate::metrics::Metrics;

/// The comment sent after each quiet period.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Counts an open SSE response while it lives.
struct OpenStream(Arc<Metrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        Metrics::gauge_add(&self.0.sse_streams_open, -1);
    }
}

/// Appends `data` as `prefix` lines: one per line of it (CRLF, CR and LF
/// all end a line), so a line break inside the data cannot end the event.
fn put_lines(out: &mut BytesMut, prefix: &str, data: &str) {
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']);
        let line = end.map_or(rest, |i| &rest[..i]);
        out.put_slice(prefix.as_bytes());
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
        let Some(i) = end else { break };
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
}

/// Appends a one-line field (`event`, `id`): line breaks in it would start
/// a new field, so they become spaces.
fn put_field(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    for (i, piece) in value.split(['\r', '\n']).enumerate() {
        if i > 0 {
            out.put_u8(b' ');
        }
        out.put_slice(piece.as_bytes());
    }
    out.put_u8(b'\n');
}

/// One frame as it goes on the wire: `id`, `event`, the `data` lines, and
/// the blank line that ends the event.
pub fn encode(frame: &Frame) -> Bytes {
    let (id, event, data) = match frame {
        Frame::Data(d) => (None, None, d.as_str()),
        Frame::Named(name, d) => (None, Some(*name), d.as_str()),
        Frame::Logged { event, with_id } => (
            with_id.then_some(event.seq),
            Some(event.kind.as_str()),
            event.data.as_str(),
        ),
    };
    let mut out = BytesMut::with_capacity(data.len() + 64);
    if let Some(id) = id {
        put_field(&mut out, "id", &id.to_string());
    }
    if let Some(event) = event {
        put_field(&mut out, "event", event);
    }
    put_lines(&mut out, "data: ", data);
    out.put_u8(b'\n');
    out.freeze()
}

/// The response body: the frames as they come, and a keep-alive comment
/// every `every` (a timer that frames do not reset: resetting it for every
/// delta would cost a timer update on the hot path).
struct Body<S> {
    frames: S,
    quiet: Pin<Box<tokio::time::Sleep>>,
    every: Duration,
    _open: OpenStream,
}

impl<S> MessageBody for Body<S>
where
    S: Stream<Item = Frame> + Unpin,
{
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self.get_mut();
        if let Poll::Ready(f) = Pin::new(&mut this.frames).poll_next(cx) {
            return Poll::Ready(f.map(|f| Ok(encode(&f))));
        }
        if this.quiet.as_mut().poll(cx).is_ready() {
            // A comment: every SSE client ignores it, proxies see traffic.
            let next = tokio::time::Instant::now() + this.every;
            this.quiet.as_mut().reset(next);
            return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE))));
        }
        Poll::Pending
    }
}

/// The SSE response for `frames`; the body ends when `frames` ends. An
/// empty `session_id` sends no session header.
pub fn respond<S>(
    frames: S,
    keep_alive: Duration,
    metrics: &Arc<Metrics>,
    session_id: &str,
) -> HttpResponse
where
    S: Stream<Item = Frame> + Unpin + 'static,
{
    Metrics::gauge_add(&metrics.sse_streams_open, 1);
    let body = Body {
        frames,
        quiet: Box::pin(tokio::time::sleep(keep_alive)),
        every: keep_alive,
        _open: OpenStream(metrics.clone()),
    };
    let mut res = HttpResponse::Ok();
    res.content_type("text/event-stream")
        // Never compressed: a compressor would hold frames back.
        .insert_header((header::CONTENT_ENCODING, "identity"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"));
    if !session_id.is_empty() {
        res.insert_header((SESSION_HEADER, session_id.to_string()));
    }
    res.body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: Frame) -> String {
        String::from_utf8_lossy(&encode(&f)).into_owned()
    }

    #[test]
    fn frames_encode_as_sse_events() {
        assert_eq!(text(Frame::Data("{\"a\":1}".into())), "data: {\"a\":1}\n\n");
        assert_eq!(text(Frame::Data(String::new())), "data: \n\n");
        assert_eq!(
            text(Frame::Named("hermes.tool.progress", "{}".into())),
            "event: hermes.tool.progress\ndata: {}\n\n"
        );
    }

    #[test]
    fn line_breaks_in_data_stay_inside_the_event() {
        assert_eq!(
            text(Frame::Data("first\r\nsecond\rthird\n".into())),
            "data: first\ndata: second\ndata: third\ndata: \n\n"
        );
        let mut out = BytesMut::new();
        put_field(&mut out, "event", "a\nb");
        assert_eq!(&out[..], b"event: a b\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_keep_alive_comments_and_ends_with_its_frames() {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(4);
        let frames = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|f| (f, rx))
        }));
        let res = respond(frames, Duration::from_millis(20), &metrics, "s1");
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("content-type"), Some("text/event-stream"));
        assert_eq!(header("cache-control"), Some("no-cache"));
        assert_eq!(header("content-encoding"), Some("identity"));
        assert_eq!(header(SESSION_HEADER), Some("s1"));
        let mut body = res.into_body();
        // The bytes of the next chunk; `None` at the end (or on an error,
        // which this body never gives).
        let mut next = async || {
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx))
                .await
                .and_then(Result::ok)
        };
        // Nothing to send: a comment after the quiet period.
        assert_eq!(next().await, Some(Bytes::from_static(KEEP_ALIVE)));
        assert!(tx.send(Frame::Data("x".into())).await.is_ok());
        assert_eq!(next().await, Some(Bytes::from_static(b"data: x\n\n")));
        drop(tx);
        assert!(next().await.is_none());
    }
}
