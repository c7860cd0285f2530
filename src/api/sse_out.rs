//! SSE responses: a stream of [`Frame`]s becomes the response body, with a
//! keep-alive comment after every quiet period (proxies and clients see
//! traffic during long tool runs), the open-stream gauge, and the headers
//! streaming clients and proxies need.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, Responder};
use actix_web_lab::sse;
use futures_util::{Stream, StreamExt};

use super::chat_format::Frame;
use super::run::SESSION_HEADER;
use crate::metrics::Metrics;

/// Counts an open SSE response while it lives.
struct OpenStream(Arc<Metrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        Metrics::gauge_add(&self.0.sse_streams_open, -1);
    }
}

fn to_event(f: Frame) -> sse::Event {
    match f {
        Frame::Data(d) => sse::Event::Data(sse::Data::new(d)),
        Frame::Named(name, d) => sse::Event::Data(sse::Data::new(d).event(name)),
        Frame::Logged { event, with_id } => {
            let data = sse::Data::new(event.data.clone()).event(event.kind.clone());
            sse::Event::Data(if with_id {
                data.id(event.seq.to_string())
            } else {
                data
            })
        }
    }
}

struct Body<S> {
    frames: S,
    quiet: Pin<Box<tokio::time::Sleep>>,
    every: Duration,
    _open: OpenStream,
}

/// The SSE response for `frames`; the body ends when `frames` ends. An
/// empty `session_id` sends no session header.
pub fn respond<S>(
    req: &HttpRequest,
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
    let events = futures_util::stream::unfold(body, |mut b| async move {
        tokio::select! {
            f = b.frames.next() => f.map(|f| (Ok::<_, Infallible>(to_event(f)), b)),
            _ = &mut b.quiet => {
                // A comment: every SSE client ignores it, proxies see traffic.
                let next = tokio::time::Instant::now() + b.every;
                b.quiet.as_mut().reset(next);
                Some((Ok(sse::Event::Comment("keep-alive".into())), b))
            }
        }
    });
    let mut res = sse::Sse::from_stream(events)
        .customize()
        .insert_header(("X-Accel-Buffering", "no"));
    if !session_id.is_empty() {
        res = res.insert_header((SESSION_HEADER, session_id.to_string()));
    }
    res.respond_to(req).map_into_boxed_body()
}
