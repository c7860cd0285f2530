//! `StreamPreviewActor`: one per chat answer. It owns everything about
//! getting that answer onto the platform: the accumulated text, the ids of
//! the messages it wrote, the edit timer, the back-off state, and the single
//! decision that the final answer has been delivered.
//!
//! With editing on (`streaming` enabled and a platform that can edit), it
//! types the answer out:
//!
//! - nothing is shown before `min_tokens` deltas (or the end of the answer);
//! - the first frame is a new message (a reply to the user) with the cursor;
//!   later frames edit it, never two edits of one message closer than the
//!   interval, counted from the moment the previous call came back (so the
//!   floor holds as measured at the platform), and never an edit that would
//!   not change the text;
//! - text that outgrows the platform limit finalises the message at a clean
//!   split and continues in a new one; a `SegmentBreak` (a tool batch)
//!   finalises it too;
//! - a rate-limited edit waits the given time and doubles the interval for
//!   that message (up to [`MAX_EDIT_INTERVAL`]); after [`MAX_EDIT_FAILURES`]
//!   failed edits in a row editing stops, and at the end only the text not yet
//!   visible is sent, in new messages;
//! - at the end, a final edit shows the text without the cursor (formatted);
//!   an interrupted answer keeps what it had, with " (interrupted)".
//!
//! With editing off, the answer is sent once at the end (split if long).
//! Either way the one who asked with [`Finish`] is told when delivery is
//! done, and nobody else sends the answer.
//!
//! All platform calls are spawned into the actor's context (never waited on
//! with `ctx.wait`); at most one is in flight, so frames arrive in order. The
//! actor stops itself once the answer is delivered.

use std::collections::VecDeque;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::outbox::{EditText, Outbox, SendText};
use crate::deliveries::{Current, Obligation};
use crate::platforms::split::{Measure, cut};
use crate::platforms::{ChatRef, Format, PlatformError};

/// The longest the interval between edits of one message grows to after rate limits.
pub const MAX_EDIT_INTERVAL: Duration = Duration::from_secs(10);
/// Failed edits in a row after which editing stops for this answer.
pub const MAX_EDIT_FAILURES: u32 = 3;
pub use crate::agent::INTERRUPTED_MARK;

/// How one answer is shown.
#[derive(Debug, Clone)]
pub struct PreviewSettings {
    /// Type the answer out by editing (streaming on and the chat can edit).
    pub live: bool,
    /// Deltas before the first frame.
    pub min_tokens: usize,
    /// The floor between two edits of one message.
    pub edit_interval: Duration,
    /// Appended to in-progress text.
    pub cursor: String,
}

/// A piece of answer text. Sent by: the turn driver, for each `TextDelta`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Delta(pub String);

/// A tool batch begins: the current message is finalised and the text after
/// the tools starts a new one. Sent by: the turn driver.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SegmentBreak;

/// How the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The turn finished (completed, or incomplete at a limit).
    Completed,
    /// The turn was interrupted: the text so far, marked.
    Interrupted,
    /// The turn failed: the text so far, unmarked (the error goes separately).
    Failed,
}

/// The answer is over: deliver what is left and answer when done.
/// Sent by: the turn driver, once, on `Finished`.
#[derive(Message)]
#[rtype(result = "Delivery")]
pub struct Finish {
    pub end: End,
    /// The turn's final answer text (used with editing off, or when no delta came).
    pub text: String,
}

/// What the preview did with the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Ids of every message this answer wrote, in order.
    pub messages: Vec<String>,
    /// Every platform call failed: the user saw nothing (or not all of it).
    pub failed: bool,
}

/// The end being delivered, and who waits for it.
struct Finishing {
    end: End,
    reply: Option<oneshot::Sender<Delivery>>,
}

/// What a planned write does to the state once it succeeded.
enum Commit {
    /// A mid-stream frame of the open segment.
    Frame,
    /// The open segment outgrew the limit: its first `consumed` bytes are
    /// final now, the rest (fence reopened) continues in a new message.
    Overflow { consumed: usize, reopen: String },
    /// The oldest sealed segment (or its first part) is final now.
    Sealed { rest: Option<String> },
    /// The final edit of the current message; `rest` still has to be sent.
    Final { rest: String },
}

/// The preview of one answer.
pub struct StreamPreviewActor {
    out: Outbox,
    chat: ChatRef,
    reply_to: Option<String>,
    cfg: PreviewSettings,
    /// Still typing the answer out (false with editing off, or after failures).
    live: bool,
    /// Editing was off from the start: only the final text is sent.
    whole_at_end: bool,
    /// Deltas received.
    tokens: usize,
    /// Text of the open segment (the current message, until a break).
    segment: String,
    /// Segments a `SegmentBreak` closed whose message is not final yet.
    sealed: VecDeque<String>,
    /// Text not visible anywhere that must be sent at the end (segments
    /// finished after editing stopped).
    backlog: String,
    /// The current message and what it shows.
    msg: Option<String>,
    shown: Option<String>,
    /// The current message's edit interval (doubles on rate limits).
    interval: Duration,
    /// When the last call on the current message came back.
    last_call: Option<Instant>,
    /// Nothing is sent before this (a rate limit's `retry_after`).
    hold_until: Option<Instant>,
    failures: u32,
    in_flight: bool,
    timer: Option<SpawnHandle>,
    finishing: Option<Finishing>,
    delivery: Delivery,
    /// Where what is on screen is recorded (for a restart to finish it).
    obligation: Option<Obligation>,
}

impl StreamPreviewActor {
    /// A preview for an answer in `chat`, replying to `reply_to`.
    pub fn new(out: Outbox, chat: ChatRef, reply_to: Option<String>, cfg: PreviewSettings) -> Self {
        let live = cfg.live && out.caps.can_edit();
        let interval = cfg.edit_interval;
        Self {
            out,
            chat,
            reply_to,
            cfg,
            live,
            whole_at_end: !live,
            tokens: 0,
            segment: String::new(),
            sealed: VecDeque::new(),
            backlog: String::new(),
            msg: None,
            shown: None,
            interval,
            last_call: None,
            hold_until: None,
            failures: 0,
            in_flight: false,
            timer: None,
            finishing: None,
            delivery: Delivery::default(),
            obligation: None,
        }
    }

    /// Records what is on screen in `obligation` after every accepted write.
    pub fn recording(mut self, obligation: Option<Obligation>) -> Self {
        self.obligation = obligation;
        self
    }

    /// Records the messages written and the one still being typed out.
    fn record(&self) {
        let Some(o) = &self.obligation else { return };
        let current = match (&self.msg, &self.shown) {
            (Some(id), Some(shown)) => shown
                .strip_suffix(self.cfg.cursor.as_str())
                .filter(|_| !self.cfg.cursor.is_empty())
                .map(|text| Current {
                    id: id.clone(),
                    text: text.to_string(),
                    stream: false,
                }),
            _ => None,
        };
        o.progress(&self.delivery.messages, current);
    }

    fn measure(&self) -> Measure {
        self.out.caps.measure
    }

    /// The platform limit, less room for the cursor.
    fn frame_limit(&self) -> usize {
        let cursor = self.measure().len(&self.cfg.cursor);
        self.out.caps.max_len.saturating_sub(cursor).max(1)
    }

    /// The earliest moment the next call may go out: the interval after the
    /// last call on the current message, and never inside a rate-limit hold.
    fn earliest(&self, now: Instant) -> Instant {
        let mut t = match (&self.msg, self.last_call) {
            (Some(_), Some(l)) => l + self.interval,
            _ => now,
        };
        if let Some(h) = self.hold_until {
            t = t.max(h);
        }
        t
    }

    /// Wakes `step` at `at` (once; an armed timer is kept).
    fn wake_at(&mut self, at: Instant, ctx: &mut Context<Self>) {
        if self.timer.is_some() {
            return;
        }
        let delay = at.saturating_duration_since(Instant::now());
        self.timer = Some(ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.step(ctx);
        }));
    }

    /// The current message is final; the next frame starts a new one.
    fn next_message(&mut self) {
        self.msg = None;
        self.shown = None;
        self.interval = self.cfg.edit_interval;
        self.last_call = None;
    }

    /// The answer's end text: the open segment, marked when interrupted.
    fn end_text(&self, end: End) -> String {
        let mut text = self.segment.clone();
        if end == End::Interrupted && !(text.trim().is_empty() && self.backlog.is_empty()) {
            // "w38  (interrupted)" would show the word's trailing space.
            text.truncate(text.trim_end().len());
            text.push_str(INTERRUPTED_MARK);
        }
        text
    }

    /// Plans the next write (text, format, what it commits), if any is due.
    fn plan(&self) -> Option<(String, Format, Commit)> {
        let limit = self.out.caps.max_len;
        if let Some(seg) = self.sealed.front() {
            // A closed segment becomes final: in its message, or in a new one
            // when it was never shown.
            return Some(match cut(seg, limit, self.measure()) {
                Some(c) => {
                    let rest = c.rest(seg);
                    (
                        c.part,
                        Format::Markdown,
                        Commit::Sealed { rest: Some(rest) },
                    )
                }
                None => (seg.clone(), Format::Markdown, Commit::Sealed { rest: None }),
            });
        }
        if let Some(f) = &self.finishing {
            // The final edit leaves no current message: after it, or when
            // nothing was ever shown, the rest is sent by `deliver_rest`.
            self.msg.as_ref()?;
            let text = self.end_text(f.end);
            return Some(match cut(&text, limit, self.measure()) {
                Some(c) => {
                    let rest = c.rest(&text);
                    (c.part, Format::Markdown, Commit::Final { rest })
                }
                None => (
                    text,
                    Format::Markdown,
                    Commit::Final {
                        rest: String::new(),
                    },
                ),
            });
        }
        if self.msg.is_none() && self.tokens < self.cfg.min_tokens {
            return None;
        }
        if self.segment.trim().is_empty() {
            return None;
        }
        if let Some(c) = cut(&self.segment, self.frame_limit(), self.measure()) {
            return Some((
                c.part,
                Format::Markdown,
                Commit::Overflow {
                    consumed: c.consumed,
                    reopen: c.reopen,
                },
            ));
        }
        Some((
            format!("{}{}", self.segment, self.cfg.cursor),
            Format::Plain,
            Commit::Frame,
        ))
    }

    /// Does the next thing the state calls for, unless a call is in flight.
    fn step(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight {
            return;
        }
        if self.live
            && let Some((text, format, commit)) = self.plan()
        {
            if self.shown.as_deref() == Some(text.as_str()) {
                // Identical text is never sent again; a final write moves the
                // state on as if it had been sent.
                if matches!(commit, Commit::Frame) {
                    return;
                }
                return self.commit(commit, ctx);
            }
            let now = Instant::now();
            let earliest = self.earliest(now);
            if now < earliest {
                return self.wake_at(earliest, ctx);
            }
            return self.write(text, format, commit, ctx);
        }
        if self.finishing.is_some() {
            self.deliver_rest(ctx);
        }
    }

    /// Applies a successful write's effect on the state.
    fn commit(&mut self, commit: Commit, ctx: &mut Context<Self>) {
        match commit {
            Commit::Frame => {}
            Commit::Overflow { consumed, reopen } => {
                self.segment = format!("{reopen}{}", &self.segment[consumed..]);
                self.next_message();
            }
            Commit::Sealed { rest } => {
                match rest {
                    Some(r) => {
                        if let Some(front) = self.sealed.front_mut() {
                            *front = r;
                        }
                    }
                    None => {
                        self.sealed.pop_front();
                    }
                }
                self.next_message();
            }
            Commit::Final { rest } => {
                if let Some(f) = self.finishing.as_mut() {
                    // The mark, if any, is in the text already sent or in `rest`.
                    f.end = End::Completed;
                }
                self.segment = rest;
                self.next_message();
            }
        }
        self.record();
        self.step(ctx);
    }

    /// The end, once no edit is due: whatever is not visible yet goes out as
    /// new messages, then `Finish` is answered and the actor stops.
    fn deliver_rest(&mut self, ctx: &mut Context<Self>) {
        let Some(f) = self.finishing.as_mut() else {
            return;
        };
        let reply = f.reply.take();
        let end = f.end;
        let mut tail = std::mem::take(&mut self.backlog);
        for seg in self.sealed.drain(..) {
            tail.push_str(&seg);
            tail.push_str("\n\n");
        }
        tail.push_str(&self.end_text(end));
        self.segment.clear();
        let out = self.out.clone();
        let chat = self.chat.clone();
        let reply_to = if self.delivery.messages.is_empty() {
            self.reply_to.clone()
        } else {
            None
        };
        let mut delivery = std::mem::take(&mut self.delivery);
        self.in_flight = true;
        ctx.spawn(
            async move {
                if !tail.trim().is_empty() {
                    match out
                        .send_split(&chat, &tail, Format::Markdown, reply_to)
                        .await
                    {
                        Ok(ids) => delivery.messages.extend(ids),
                        Err(e) => {
                            log::warn!("{}: could not deliver an answer: {e}", out.platform);
                            delivery.failed = true;
                        }
                    }
                }
                delivery
            }
            .into_actor(self)
            .map(move |delivery, act, ctx| {
                act.in_flight = false;
                act.finishing = None;
                if let Some(r) = reply {
                    let _ = r.send(delivery);
                }
                ctx.stop();
            }),
        );
    }

    /// Sends or edits the current message.
    fn write(&mut self, text: String, format: Format, commit: Commit, ctx: &mut Context<Self>) {
        self.in_flight = true;
        let chat = self.chat.clone();
        let shown = text.clone();
        let done =
            move |res: Result<Option<String>, PlatformError>,
                  act: &mut Self,
                  ctx: &mut Context<Self>| { act.written(res, shown, commit, ctx) };
        match self.msg.clone() {
            Some(id) => {
                let edit = self.out.edit.clone();
                let msg = EditText {
                    chat,
                    message_id: id,
                    text,
                    format,
                };
                ctx.spawn(
                    async move { flatten(edit.send(msg).await).map(|()| None) }
                        .into_actor(self)
                        .map(done),
                );
            }
            None => {
                let send = self.out.send.clone();
                let reply_to = if self.delivery.messages.is_empty() {
                    self.reply_to.clone()
                } else {
                    None
                };
                let msg = SendText {
                    chat,
                    text,
                    format,
                    reply_to,
                };
                ctx.spawn(
                    async move { flatten(send.send(msg).await).map(Some) }
                        .into_actor(self)
                        .map(done),
                );
            }
        }
    }

    /// A send or edit came back.
    fn written(
        &mut self,
        res: Result<Option<String>, PlatformError>,
        shown: String,
        commit: Commit,
        ctx: &mut Context<Self>,
    ) {
        self.in_flight = false;
        let now = Instant::now();
        self.last_call = Some(now);
        match res {
            Ok(new_id) => {
                self.failures = 0;
                if let Some(id) = new_id {
                    self.delivery.messages.push(id.clone());
                    self.msg = Some(id);
                }
                self.shown = Some(shown);
                self.commit(commit, ctx);
            }
            Err(e) => {
                self.failures += 1;
                log::debug!("{}: a stream preview call failed: {e}", self.out.platform);
                if let PlatformError::RateLimited { retry_after, .. } = e {
                    self.hold_until = Some(now + retry_after);
                    self.interval = (self.interval * 2).min(MAX_EDIT_INTERVAL);
                }
                if self.failures >= MAX_EDIT_FAILURES {
                    log::warn!(
                        "{}: {} stream preview calls failed in a row; the rest of this answer is sent at the end",
                        self.out.platform,
                        self.failures
                    );
                    self.stop_editing();
                }
                self.step(ctx);
            }
        }
    }

    /// Editing stops for this answer: what the current message does not show
    /// is sent at the end, with everything after it.
    fn stop_editing(&mut self) {
        self.live = false;
        let visible = self
            .shown
            .as_deref()
            .map(|s| {
                s.strip_suffix(self.cfg.cursor.as_str())
                    .unwrap_or(s)
                    .to_string()
            })
            .unwrap_or_default();
        let current = match self.sealed.front_mut() {
            Some(front) => front,
            None => &mut self.segment,
        };
        if let Some(rest) = current.strip_prefix(visible.as_str()) {
            *current = rest.to_string();
        }
        for seg in self.sealed.drain(..) {
            self.backlog.push_str(&seg);
            self.backlog.push_str("\n\n");
        }
        self.next_message();
    }
}

/// A mailbox error (the platform actor is gone) as a platform error.
fn flatten<T>(r: Result<Result<T, PlatformError>, MailboxError>) -> Result<T, PlatformError> {
    r.map_err(|e| PlatformError::Unavailable(format!("platform actor: {e}")))?
}

impl Actor for StreamPreviewActor {
    type Context = Context<Self>;
}

impl Handler<Delta> for StreamPreviewActor {
    type Result = ();

    fn handle(&mut self, msg: Delta, ctx: &mut Context<Self>) {
        if self.finishing.is_some() || self.whole_at_end || msg.0.is_empty() {
            return;
        }
        self.tokens += 1;
        log::trace!("preview: delta {} ({} bytes)", self.tokens, msg.0.len());
        self.segment.push_str(&msg.0);
        self.step(ctx);
    }
}

impl Handler<SegmentBreak> for StreamPreviewActor {
    type Result = ();

    fn handle(&mut self, _: SegmentBreak, ctx: &mut Context<Self>) {
        if self.finishing.is_some() || self.whole_at_end || self.segment.trim().is_empty() {
            return;
        }
        let seg = std::mem::take(&mut self.segment);
        if self.live {
            self.sealed.push_back(seg);
            self.step(ctx);
        } else {
            self.backlog.push_str(&seg);
            self.backlog.push_str("\n\n");
        }
    }
}

impl Handler<Finish> for StreamPreviewActor {
    type Result = ResponseFuture<Delivery>;

    fn handle(&mut self, msg: Finish, ctx: &mut Context<Self>) -> Self::Result {
        if self.finishing.is_some() {
            // Only one end is delivered; a second Finish learns nothing.
            return Box::pin(async { Delivery::default() });
        }
        let (tx, rx) = oneshot::channel();
        let nothing_yet = self.tokens == 0 && self.sealed.is_empty() && self.backlog.is_empty();
        if self.whole_at_end || nothing_yet {
            // Editing was never on (or no delta came): the final answer is the text.
            self.segment = msg.text;
        }
        self.finishing = Some(Finishing {
            end: msg.end,
            reply: Some(tx),
        });
        self.step(ctx);
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests {
    //! Time-controlled tests: a paused tokio clock and a fake platform actor
    //! that records every call with its (virtual) time.
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::actors::fake_chat::{Call, FakePlatform, Log, caps};
    use crate::platforms::ChatKind;

    fn chat() -> ChatRef {
        ChatRef {
            id: "1".into(),
            kind: ChatKind::Dm,
            thread: None,
        }
    }

    fn settings(live: bool) -> PreviewSettings {
        PreviewSettings {
            live,
            min_tokens: 20,
            edit_interval: Duration::from_millis(1500),
            cursor: " ▌".into(),
        }
    }

    /// Runs `script` against a preview on a paused clock; returns the log.
    fn run<F, Fut>(
        cfg: PreviewSettings,
        max_len: usize,
        setup: impl FnOnce(&mut Log),
        script: F,
    ) -> (Log, Delivery)
    where
        F: FnOnce(Addr<StreamPreviewActor>) -> Fut + 'static,
        Fut: Future<Output = Delivery> + 'static,
    {
        let log = Rc::new(RefCell::new(Log::default()));
        setup(&mut log.borrow_mut());
        let sys = crate::actors::fake_chat::paused_system();
        let l2 = log.clone();
        let delivery = sys.block_on(async move {
            let platform = FakePlatform::new(l2, Duration::from_millis(50)).start();
            let out = Outbox::of("test", caps(max_len), &platform);
            let preview = StreamPreviewActor::new(out, chat(), Some("9".into()), cfg).start();
            script(preview).await
        });
        let log = std::mem::take(&mut *log.borrow_mut());
        (log, delivery)
    }

    /// Sends `n` deltas `gap` apart; returns the answer text.
    async fn stream(p: &Addr<StreamPreviewActor>, n: usize, gap: Duration) -> String {
        let mut all = String::new();
        for i in 0..n {
            let d = format!("w{i} ");
            all.push_str(&d);
            p.do_send(Delta(d));
            tokio::time::sleep(gap).await;
        }
        all
    }

    async fn finish(p: &Addr<StreamPreviewActor>, end: End, text: &str) -> Delivery {
        p.send(Finish {
            end,
            text: text.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Edits of one message are at least `floor` apart, by platform time.
    fn assert_edit_floor(log: &Log, floor: Duration) {
        let mut last: std::collections::HashMap<String, Instant> = Default::default();
        for (t, c) in &log.calls {
            let id = match c {
                Call::Send { id, .. }
                | Call::Edit { id, .. }
                | Call::Start { id, .. }
                | Call::Append { id, .. }
                | Call::Stop { id, .. } => id,
            };
            if let Some(prev) = last.get(id) {
                assert!(
                    *t - *prev >= floor,
                    "message {id} written {:?} apart",
                    *t - *prev
                );
            }
            last.insert(id.clone(), *t);
        }
    }

    #[test]
    fn a_six_second_answer_types_itself_out_in_one_message() {
        let (log, delivery) = run(
            settings(true),
            4096,
            |_| {},
            |p| async move {
                let text = stream(&p, 60, Duration::from_millis(100)).await;
                let d = finish(&p, End::Completed, &text).await;
                assert_eq!(d.messages, vec!["1".to_string()]);
                d
            },
        );
        let sends: Vec<_> = log
            .calls
            .iter()
            .filter(|(_, c)| matches!(c, Call::Send { .. }))
            .collect();
        assert_eq!(sends.len(), 1, "one message: {:?}", log.calls);
        let edits = log.calls.len() - 1;
        assert!(edits >= 3, "it typed itself out: {edits} edits");
        assert_edit_floor(&log, Duration::from_millis(1500));
        // The first frame waited for min_tokens and carried the cursor.
        match &log.calls[0].1 {
            Call::Send { text, .. } => assert!(text.ends_with(" ▌") && text.starts_with("w0 ")),
            other => panic!("{other:?}"),
        }
        let expected: String = (0..60).map(|i| format!("w{i} ")).collect();
        assert_eq!(log.texts["1"], expected, "final text without cursor");
        assert!(!delivery.failed);
        // No identical edits.
        for w in log.calls.windows(2) {
            assert_ne!(w[0].1, w[1].1);
        }
    }

    #[test]
    fn with_editing_off_the_answer_is_sent_once_at_the_end() {
        let (log, d) = run(
            settings(false),
            4096,
            |_| {},
            |p| async move {
                let text = stream(&p, 60, Duration::from_millis(100)).await;
                finish(&p, End::Completed, &text).await
            },
        );
        assert_eq!(log.calls.len(), 1, "{:?}", log.calls);
        assert!(
            matches!(&log.calls[0].1, Call::Send { text, .. } if text.starts_with("w0 ") && !text.contains('▌'))
        );
        assert_eq!(d.messages.len(), 1);
    }

    #[test]
    fn short_answers_below_min_tokens_are_sent_once() {
        let (log, _) = run(
            settings(true),
            4096,
            |_| {},
            |p| async move {
                let text = stream(&p, 5, Duration::from_millis(10)).await;
                finish(&p, End::Completed, &text).await
            },
        );
        assert_eq!(log.calls.len(), 1);
        assert_eq!(log.texts["1"], "w0 w1 w2 w3 w4 ");
    }

    #[test]
    fn overflow_continues_in_a_new_message_at_a_clean_split() {
        let (log, d) = run(
            settings(true),
            100,
            |_| {},
            |p| async move {
                let text = stream(&p, 120, Duration::from_millis(50)).await;
                finish(&p, End::Completed, &text).await
            },
        );
        let expected: String = (0..120).map(|i| format!("w{i} ")).collect();
        let finals: Vec<&String> = d.messages.iter().map(|id| &log.texts[id]).collect();
        assert!(finals.len() >= 6, "{finals:?}");
        for t in &finals {
            assert!(t.encode_utf16().count() <= 100 && !t.contains('▌'));
            assert!(
                t.ends_with(' ') || *t == finals[finals.len() - 1],
                "split at a space: {t:?}"
            );
        }
        assert_eq!(
            finals.iter().map(|s| s.as_str()).collect::<String>(),
            expected
        );
        assert_edit_floor(&log, Duration::from_millis(1500));
    }

    #[test]
    fn a_tool_batch_starts_a_new_message() {
        let (log, d) = run(
            settings(true),
            4096,
            |_| {},
            |p| async move {
                let a = stream(&p, 25, Duration::from_millis(100)).await;
                p.do_send(SegmentBreak);
                tokio::time::sleep(Duration::from_secs(1)).await;
                let b = stream(&p, 25, Duration::from_millis(100)).await;
                finish(&p, End::Completed, &format!("{a}{b}")).await
            },
        );
        assert_eq!(d.messages.len(), 2, "{:?}", log.calls);
        assert_eq!(
            log.texts["1"],
            (0..25).map(|i| format!("w{i} ")).collect::<String>()
        );
        assert_eq!(
            log.texts["2"],
            (0..25).map(|i| format!("w{i} ")).collect::<String>()
        );
        assert_edit_floor(&log, Duration::from_millis(1500));
    }

    #[test]
    fn rate_limits_back_off_and_lose_nothing() {
        let (log, d) = run(
            settings(true),
            4096,
            |l| {
                l.edit_errors
                    .push_back(PlatformError::rate_limited(Duration::from_secs(2)));
                l.edit_errors
                    .push_back(PlatformError::rate_limited(Duration::from_secs(2)));
            },
            |p| async move {
                let text = stream(&p, 300, Duration::from_millis(100)).await;
                finish(&p, End::Completed, &text).await
            },
        );
        let sends = log
            .calls
            .iter()
            .filter(|(_, c)| matches!(c, Call::Send { .. }))
            .count();
        assert_eq!(sends, 1, "no duplicate message: {:?}", log.calls);
        assert_eq!(d.messages, vec!["1".to_string()]);
        assert_eq!(
            log.texts["1"],
            (0..300).map(|i| format!("w{i} ")).collect::<String>()
        );
        // After two rate limits the interval has doubled twice (6 s): the
        // 30 s answer has room for several edits, each 6 s from the last.
        let edits: Vec<Instant> = log
            .calls
            .iter()
            .filter(|(_, c)| matches!(c, Call::Edit { .. }))
            .map(|(t, _)| *t)
            .collect();
        assert!(edits.len() >= 3, "several edits to compare: {edits:?}");
        assert!(
            edits
                .windows(2)
                .all(|w| w[1] - w[0] >= Duration::from_secs(6)),
            "{edits:?}"
        );
    }

    #[test]
    fn after_three_failures_only_the_missing_tail_is_sent() {
        let (log, d) = run(
            settings(true),
            4096,
            |l| {
                for _ in 0..3 {
                    l.edit_errors
                        .push_back(PlatformError::Refused("message can't be edited".into()));
                }
            },
            |p| async move {
                let text = stream(&p, 80, Duration::from_millis(100)).await;
                finish(&p, End::Completed, &text).await
            },
        );
        let expected: String = (0..80).map(|i| format!("w{i} ")).collect();
        assert_eq!(d.messages.len(), 2, "{:?}", log.calls);
        let first = log.texts["1"].trim_end_matches(" ▌").to_string();
        let second = &log.texts[&d.messages[1]];
        assert!(!first.is_empty());
        assert_eq!(
            format!("{first}{second}"),
            expected,
            "no second full copy, nothing lost"
        );
    }

    #[test]
    fn an_interrupted_answer_keeps_its_text_marked() {
        let (log, _) = run(
            settings(true),
            4096,
            |_| {},
            |p| async move {
                let text = stream(&p, 30, Duration::from_millis(100)).await;
                finish(&p, End::Interrupted, &text).await
            },
        );
        let expected: String = (0..30).map(|i| format!("w{i} ")).collect();
        assert_eq!(
            log.texts["1"],
            format!("{} (interrupted)", expected.trim_end())
        );
        assert_eq!(
            log.calls
                .iter()
                .filter(|(_, c)| matches!(c, Call::Send { .. }))
                .count(),
            1
        );
    }
}
