//! The SSE parser gives the same events whatever pieces the bytes arrive in.
//!
//! Input layout: byte 0 says how many of the next bytes (0..=15) are piece
//! lengths; the rest is the stream. The pieces are pushed in order (a length
//! may be 0: an empty push), then whatever is left, then `finish()`. The
//! result must equal one push of the whole stream, and one byte at a time.
#![no_main]

use hermes::sse::{SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

/// Pushes `pieces` in order, then finishes. `None` when a push fails (a line
/// over the parser's limit; not reachable with the fuzzer's `-max_len`).
fn run<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<SseEvent>> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(parser.push(piece).ok()?);
    }
    events.extend(parser.finish());
    Some(events)
}

fuzz_target!(|input: &[u8]| {
    let Some((&count, rest)) = input.split_first() else {
        return;
    };
    let count = usize::from(count % 16).min(rest.len());
    let (lengths, stream) = rest.split_at(count);

    let mut pieces = Vec::with_capacity(count + 1);
    let mut left = stream;
    for &len in lengths {
        let (piece, more) = left.split_at(usize::from(len).min(left.len()));
        pieces.push(piece);
        left = more;
    }
    pieces.push(left);

    let Some(whole) = run([stream]) else {
        return;
    };
    let split = run(pieces.iter().copied());
    assert_eq!(split.as_ref(), Some(&whole), "split at {lengths:?}");
    let bytewise = run(stream.chunks(1));
    assert_eq!(bytewise.as_ref(), Some(&whole), "one byte at a time");
});
