//! Reading a chat platform's websocket (Discord's Gateway, Slack's Socket
//! Mode) over awc: whole messages out of fragmented frames, bounded in size,
//! pings answered. Written once for every platform that holds a socket.

use actix_http::ws::Item;
use awc::ws::{Frame, Message};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};

/// What the socket delivered next.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A whole text (or binary, read as text) message.
    Message(String),
    /// The answer to a ping we sent.
    Pong,
    /// The peer closed with this code (1005 when it gave none).
    Closed(u16),
    /// The socket broke, ended, or sent a message over the limit.
    Ended,
}

/// The next event. Fragments are gathered in `buf` (kept by the caller, so
/// a call cancelled between frames loses nothing) up to `max` bytes; pings
/// are answered on the way.
pub async fn next_event<S>(ws: &mut S, buf: &mut BytesMut, max: usize) -> WsEvent
where
    S: futures_util::Stream<Item = Result<Frame, awc::error::WsProtocolError>>
        + futures_util::Sink<Message>
        + Unpin,
{
    loop {
        let frame = match ws.next().await {
            None | Some(Err(_)) => return WsEvent::Ended,
            Some(Ok(f)) => f,
        };
        let whole = match frame {
            Frame::Text(b) | Frame::Binary(b) => b,
            Frame::Continuation(Item::FirstText(b) | Item::FirstBinary(b)) => {
                buf.clear();
                buf.extend_from_slice(&b);
                continue;
            }
            Frame::Continuation(Item::Continue(b)) => {
                buf.extend_from_slice(&b);
                if buf.len() > max {
                    return WsEvent::Ended;
                }
                continue;
            }
            Frame::Continuation(Item::Last(b)) => {
                buf.extend_from_slice(&b);
                buf.split().freeze()
            }
            Frame::Ping(p) => {
                let _ = ws.send(Message::Pong(p)).await;
                continue;
            }
            Frame::Pong(_) => return WsEvent::Pong,
            Frame::Close(reason) => return WsEvent::Closed(reason.map_or(1005, |r| r.code.into())),
        };
        return WsEvent::Message(String::from_utf8_lossy(&whole).into_owned());
    }
}
