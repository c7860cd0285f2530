//! `NativeStreamActor`: one per chat answer on a platform with native
//! streaming messages (Slack's `chat.startStream` / `appendStream` /
//! `stopStream`), in place of the `StreamPreviewActor`. It takes the same
//! messages ([`Delta`], [`SegmentBreak`], [`Finish`]) and, like the preview,
//! alone decides when the answer is delivered.
//!
//! - nothing is shown before `min_tokens` deltas; then one streaming message
//!   starts with the text so far, and later text is appended: only the new
//!   part, at most one start or append call every `edit_interval` (counted
//!   from when the previous call came back), at most the platform's chunk
//!   size a call;
//! - one stream per answer: a tool batch ([`SegmentBreak`]) separates the
//!   text before and after it with a blank line in the same message;
//! - at the end, what is left is appended and the stream stopped (the stop
//!   is not held to the interval); an interrupted answer ends with
//!   " (interrupted)";
//! - a rate limit holds the next call for the time asked; a platform that is
//!   unavailable is tried again, [`MAX_FAILURES`] times in a row at most;
//! - when the platform refuses the stream methods (or keeps failing), native
//!   streams are off for the rest of the process ([`NativeStream::refused`])
//!   and this answer goes on through a `StreamPreviewActor`: the whole
//!   answer, when the stream had not started; otherwise the stream is
//!   stopped with what it shows and the rest continues in a new message, so
//!   nothing is shown twice or lost.
//!
//! Calls are spawned into the actor's context, one in flight at a time, and
//! the actor's state changes only after a call succeeded.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::outbox::{AppendStream, NativeStream, Outbox, StartStream, StopStream};
use super::stream_preview::{
    Delivery, Delta, End, Finish, INTERRUPTED_MARK, PreviewSettings, SegmentBreak,
    StreamPreviewActor,
};
use crate::deliveries::{Current, Obligation};
use crate::platforms::{ChatRef, PlatformError};

/// Failed calls in a row (the platform unavailable) after which the stream
/// is given up for the post-and-edit preview.
pub const MAX_FAILURES: u32 = 3;
/// The wait before trying a call again after the platform was unavailable.
pub const RETRY_WAIT: Duration = Duration::from_secs(1);
/// What separates the text before a tool batch from the text after it.
const SEGMENT_GAP: &str = "\n\n";

/// What the answer received before its stream started (replayed to the
/// preview that takes over when the platform refuses the stream).
enum Early {
    Delta(String),
    Break,
}

/// The call a step makes.
enum Call {
    Start(String),
    Append(String),
    Stop(Option<String>),
}

/// One answer streamed natively.
pub struct NativeStreamActor {
    out: Outbox,
    stream: NativeStream,
    chat: ChatRef,
    user_id: String,
    reply_to: Option<String>,
    cfg: PreviewSettings,
    tokens: usize,
    /// The answer so far (segments joined).
    text: String,
    /// Bytes of `text` the platform has.
    sent: usize,
    /// A tool batch began since the last text.
    gap: bool,
    /// The stream's message id, once started.
    id: Option<String>,
    early: Vec<Early>,
    last_call: Option<Instant>,
    hold_until: Option<Instant>,
    failures: u32,
    in_flight: bool,
    timer: Option<SpawnHandle>,
    end: Option<End>,
    /// The turn's final text (what a preview taking over at the end sends).
    final_text: String,
    reply: Option<oneshot::Sender<Delivery>>,
    /// The preview that took over (the platform refused the stream).
    fallback: Option<Addr<StreamPreviewActor>>,
    /// Where what is on screen is recorded (for a restart to finish it).
    obligation: Option<Obligation>,
}

impl NativeStreamActor {
    /// A native stream for an answer to `user_id` in `chat`.
    pub fn new(
        out: Outbox,
        stream: NativeStream,
        chat: ChatRef,
        user_id: String,
        reply_to: Option<String>,
        cfg: PreviewSettings,
    ) -> Self {
        Self {
            out,
            stream,
            chat,
            user_id,
            reply_to,
            cfg,
            tokens: 0,
            text: String::new(),
            sent: 0,
            gap: false,
            id: None,
            early: Vec::new(),
            last_call: None,
            hold_until: None,
            failures: 0,
            in_flight: false,
            timer: None,
            end: None,
            final_text: String::new(),
            reply: None,
            fallback: None,
            obligation: None,
        }
    }

    /// Records the stream in `obligation` after every accepted call (and
    /// hands it to a preview that takes over).
    pub fn recording(mut self, obligation: Option<Obligation>) -> Self {
        self.obligation = obligation;
        self
    }

    fn record(&self) {
        if let (Some(o), Some(id)) = (&self.obligation, &self.id) {
            let current = Current {
                id: id.clone(),
                text: self.text[..self.sent].to_string(),
                stream: true,
            };
            o.progress(std::slice::from_ref(id), Some(current));
        }
    }

    /// The first `max_chunk` characters of `text`, cut at a char boundary.
    fn chunk<'a>(&self, text: &'a str) -> &'a str {
        match text.char_indices().nth(self.stream.max_chunk) {
            Some((i, _)) => &text[..i],
            None => text,
        }
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

    /// Hands the answer to a post-and-edit preview; `continuation` holds the
    /// text the stream did not show (the preview starts with it).
    fn hand_over(&mut self, continuation: Option<String>, ctx: &mut Context<Self>) {
        let mut cfg = self.cfg.clone();
        if continuation.is_some() {
            // What follows a stopped stream shows at once.
            cfg.min_tokens = 0;
        }
        let (out, chat, reply_to) = (self.out.clone(), self.chat.clone(), self.reply_to.clone());
        let preview = StreamPreviewActor::new(out, chat, reply_to, cfg)
            .recording(self.obligation.clone())
            .start();
        match continuation {
            Some(rest) if !rest.is_empty() => preview.do_send(Delta(rest)),
            Some(_) => {}
            None => {
                for e in self.early.drain(..) {
                    match e {
                        Early::Delta(t) => preview.do_send(Delta(t)),
                        Early::Break => preview.do_send(SegmentBreak),
                    }
                }
            }
        }
        self.fallback = Some(preview);
        if self.end.is_some() {
            self.finish_through_preview(ctx);
        }
    }

    /// Sends `Finish` to the preview that took over, and the delivery back.
    fn finish_through_preview(&mut self, ctx: &mut Context<Self>) {
        let (Some(preview), Some(reply), Some(end)) =
            (self.fallback.clone(), self.reply.take(), self.end)
        else {
            return;
        };
        let text = std::mem::take(&mut self.final_text);
        let streamed = self.id.clone();
        ctx.spawn(
            async move {
                let mut d = preview.send(Finish { end, text }).await.unwrap_or_default();
                if let Some(id) = streamed {
                    d.messages.insert(0, id);
                }
                let _ = reply.send(d);
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        );
    }

    /// Does the next call, if one is due.
    fn step(&mut self, ctx: &mut Context<Self>) {
        if self.fallback.is_some() || self.in_flight {
            return;
        }
        let now = Instant::now();
        if let Some(h) = self.hold_until
            && h > now
        {
            self.wake_at(h, ctx);
            return;
        }
        let pending = &self.text[self.sent..];
        let call = match (&self.id, self.end) {
            (None, Some(_)) => {
                // Nothing streamed: the whole answer goes out the common way.
                self.cfg.live = false;
                self.hand_over(None, ctx);
                return;
            }
            (None, None) => {
                if self.tokens < self.cfg.min_tokens.max(1) || pending.trim().is_empty() {
                    return;
                }
                Call::Start(self.chunk(pending).to_string())
            }
            (Some(_), Some(end)) => {
                let chunk = self.chunk(pending);
                if chunk.len() < pending.len() {
                    Call::Append(chunk.to_string())
                } else {
                    let mut last = pending.to_string();
                    if end == End::Interrupted {
                        last.truncate(last.trim_end().len());
                        // "w38  (interrupted)" would show the word's trailing
                        // space when the stream already holds it.
                        let shown = &self.text[..self.sent];
                        if last.is_empty() && shown.ends_with(char::is_whitespace) {
                            last.push_str(INTERRUPTED_MARK.trim_start());
                        } else {
                            last.push_str(INTERRUPTED_MARK);
                        }
                    }
                    Call::Stop(Some(last))
                }
            }
            (Some(_), None) => {
                if pending.is_empty() {
                    return;
                }
                let at = self.last_call.map_or(now, |l| l + self.cfg.edit_interval);
                if at > now {
                    self.wake_at(at, ctx);
                    return;
                }
                Call::Append(self.chunk(pending).to_string())
            }
        };
        self.call(call, ctx);
    }

    fn call(&mut self, call: Call, ctx: &mut Context<Self>) {
        self.in_flight = true;
        let chat = self.chat.clone();
        let s = self.stream.clone();
        let id = self.id.clone().unwrap_or_default();
        let user_id = self.user_id.clone();
        let fut = async move {
            let r = match &call {
                Call::Start(text) => s
                    .start
                    .send(StartStream {
                        chat,
                        user_id,
                        text: text.clone(),
                    })
                    .await
                    .map(|r| r.map(Some)),
                Call::Append(text) => s
                    .append
                    .send(AppendStream {
                        chat,
                        id,
                        text: text.clone(),
                    })
                    .await
                    .map(|r| r.map(|()| None)),
                Call::Stop(text) => s
                    .stop
                    .send(StopStream {
                        chat,
                        id,
                        text: text.clone(),
                    })
                    .await
                    .map(|r| r.map(|()| None)),
            };
            let r = r.unwrap_or_else(|e| Err(PlatformError::Unavailable(format!("platform: {e}"))));
            (call, r)
        };
        ctx.spawn(fut.into_actor(self).map(|(call, r), act, ctx| {
            act.in_flight = false;
            act.done(call, r, ctx);
        }));
    }

    /// What a call's answer does to the state.
    fn done(
        &mut self,
        call: Call,
        r: Result<Option<String>, PlatformError>,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        match r {
            Ok(new_id) => {
                self.failures = 0;
                self.last_call = Some(now);
                match call {
                    Call::Start(t) => {
                        self.id = new_id;
                        self.early.clear();
                        self.sent += t.len();
                        self.record();
                    }
                    Call::Append(t) => {
                        self.sent += t.len();
                        self.record();
                    }
                    Call::Stop(_) => {
                        self.sent = self.text.len();
                        if let Some(reply) = self.reply.take() {
                            let _ = reply.send(Delivery {
                                messages: self.id.iter().cloned().collect(),
                                failed: false,
                            });
                        }
                        ctx.stop();
                        return;
                    }
                }
                self.step(ctx);
            }
            Err(PlatformError::RateLimited { retry_after, .. }) => {
                self.hold_until = Some(now + retry_after);
                self.step(ctx);
            }
            Err(PlatformError::Unavailable(e)) if self.failures + 1 < MAX_FAILURES => {
                self.failures += 1;
                log::debug!(
                    "{}: a streaming call failed ({e}); trying again",
                    self.out.platform
                );
                self.hold_until = Some(now + RETRY_WAIT);
                self.step(ctx);
            }
            Err(e) => {
                self.stream.refused(self.out.platform, &e);
                if self.id.is_none() {
                    self.hand_over(None, ctx);
                    return;
                }
                // Mid-stream: end the stream with what it shows (best
                // effort), the rest in a new message.
                let stop = StopStream {
                    chat: self.chat.clone(),
                    id: self.id.clone().unwrap_or_default(),
                    text: None,
                };
                let s = self.stream.stop.clone();
                actix::spawn(async move {
                    let _ = s.send(stop).await;
                });
                let mut rest = self.text[self.sent..].to_string();
                if rest.starts_with(SEGMENT_GAP) {
                    rest.drain(..SEGMENT_GAP.len());
                }
                self.sent = self.text.len();
                self.hand_over(Some(rest), ctx);
            }
        }
    }
}

impl Actor for NativeStreamActor {
    type Context = Context<Self>;
}

impl Handler<Delta> for NativeStreamActor {
    type Result = ();

    fn handle(&mut self, msg: Delta, ctx: &mut Context<Self>) {
        if self.end.is_some() || msg.0.is_empty() {
            return;
        }
        if let Some(p) = &self.fallback {
            p.do_send(msg);
            return;
        }
        self.tokens += 1;
        if self.gap && !self.text.trim().is_empty() {
            self.text.push_str(SEGMENT_GAP);
        }
        self.gap = false;
        self.text.push_str(&msg.0);
        if self.id.is_none() {
            self.early.push(Early::Delta(msg.0));
        }
        self.step(ctx);
    }
}

impl Handler<SegmentBreak> for NativeStreamActor {
    type Result = ();

    fn handle(&mut self, msg: SegmentBreak, _: &mut Context<Self>) {
        if self.end.is_some() {
            return;
        }
        if let Some(p) = &self.fallback {
            p.do_send(msg);
            return;
        }
        self.gap = true;
        if self.id.is_none() {
            self.early.push(Early::Break);
        }
    }
}

impl Handler<Finish> for NativeStreamActor {
    type Result = ResponseFuture<Delivery>;

    fn handle(&mut self, msg: Finish, ctx: &mut Context<Self>) -> Self::Result {
        if self.end.is_some() {
            return Box::pin(async { Delivery::default() });
        }
        let (tx, rx) = oneshot::channel();
        self.end = Some(msg.end);
        self.reply = Some(tx);
        self.final_text = msg.text;
        if self.fallback.is_some() {
            self.finish_through_preview(ctx);
        } else if self.id.is_none() && !self.in_flight {
            // Nothing streamed: the preview sends the whole answer (the
            // turn's final text, as with editing off).
            self.cfg.live = false;
            self.hand_over(None, ctx);
        } else {
            self.step(ctx);
        }
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests {
    //! On a paused clock, against the fake platform (which records each
    //! call at its virtual time).
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::actors::fake_chat::{Call, FakePlatform, Log, caps};
    use crate::platforms::ChatKind;

    const INTERVAL: Duration = Duration::from_millis(1500);

    fn settings() -> PreviewSettings {
        PreviewSettings {
            live: true,
            min_tokens: 5,
            edit_interval: INTERVAL,
            cursor: " ▌".into(),
        }
    }

    /// Runs `script` against a native stream (chunks of `max_chunk`) on a
    /// paused clock; answers the log, the delivery and whether native
    /// streams are still on.
    fn run<F, Fut>(
        max_chunk: usize,
        setup: impl FnOnce(&mut Log),
        script: F,
    ) -> (Log, Delivery, bool)
    where
        F: FnOnce(Addr<NativeStreamActor>, Rc<RefCell<Log>>) -> Fut + 'static,
        Fut: Future<Output = Delivery> + 'static,
    {
        let log = Rc::new(RefCell::new(Log::default()));
        setup(&mut log.borrow_mut());
        let l3 = log.clone();
        let sys = crate::actors::fake_chat::paused_system();
        let l2 = log.clone();
        let (delivery, on) = sys.block_on(async move {
            let platform = FakePlatform::new(l2, Duration::from_millis(50)).start();
            let stream = NativeStream::of(&platform, max_chunk);
            let enabled = stream.enabled.clone();
            let out = Outbox::of("test", caps(100_000), &platform).with_stream(stream.clone());
            let chat = ChatRef {
                id: "C1".into(),
                kind: ChatKind::Channel,
                thread: Some("1.0".into()),
            };
            let a = NativeStreamActor::new(
                out,
                stream,
                chat,
                "U1".into(),
                Some("1.0".into()),
                settings(),
            )
            .start();
            // Virtual time: a stream that never ends fails here, not hangs.
            let d = tokio::time::timeout(Duration::from_secs(600), script(a, l3))
                .await
                .unwrap_or_else(|_| panic!("the answer was never delivered"));
            (d, enabled.load(std::sync::atomic::Ordering::Relaxed))
        });
        let log = std::mem::take(&mut *log.borrow_mut());
        (log, delivery, on)
    }

    async fn stream(a: &Addr<NativeStreamActor>, from: usize, n: usize, gap: Duration) -> String {
        let mut all = String::new();
        for i in from..from + n {
            let d = format!("w{i} ");
            all.push_str(&d);
            a.do_send(Delta(d));
            tokio::time::sleep(gap).await;
        }
        all
    }

    async fn finish(a: &Addr<NativeStreamActor>, end: End, text: &str) -> Delivery {
        a.send(Finish {
            end,
            text: text.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn kinds(log: &Log) -> Vec<&'static str> {
        log.calls
            .iter()
            .map(|(_, c)| match c {
                Call::Send { .. } => "send",
                Call::Edit { .. } => "edit",
                Call::Start { .. } => "start",
                Call::Append { .. } => "append",
                Call::Stop { .. } => "stop",
            })
            .collect()
    }

    /// Start and append calls are at least the interval apart.
    fn assert_interval(log: &Log) {
        let paced: Vec<Instant> = log
            .calls
            .iter()
            .filter(|(_, c)| matches!(c, Call::Start { .. } | Call::Append { .. }))
            .map(|(t, _)| *t)
            .collect();
        for w in paced.windows(2) {
            assert!(w[1] - w[0] >= INTERVAL, "calls {:?} apart", w[1] - w[0]);
        }
    }

    #[test]
    fn one_stream_across_tool_batches_with_only_new_text_per_call() {
        let (log, d, on) = run(
            12_000,
            |_| {},
            |a, _| async move {
                stream(&a, 0, 30, Duration::from_millis(100)).await;
                a.do_send(SegmentBreak);
                tokio::time::sleep(Duration::from_secs(2)).await;
                let second = stream(&a, 30, 30, Duration::from_millis(100)).await;
                finish(&a, End::Completed, &second).await
            },
        );
        assert_eq!(d.messages, vec!["s1".to_string()]);
        assert!(on);
        assert!(!d.failed);
        let k = kinds(&log);
        assert_eq!(k.first(), Some(&"start"));
        assert_eq!(k.last(), Some(&"stop"));
        assert_eq!(k.iter().filter(|k| **k == "start").count(), 1, "{k:?}");
        assert!(k.iter().filter(|k| **k == "append").count() >= 3, "{k:?}");
        assert!(!k.contains(&"send") && !k.contains(&"edit"), "{k:?}");
        assert_interval(&log);
        let first: String = (0..30).map(|i| format!("w{i} ")).collect();
        let second: String = (30..60).map(|i| format!("w{i} ")).collect();
        assert_eq!(log.texts["s1"], format!("{first}\n\n{second}"));
    }

    #[test]
    fn long_text_goes_in_chunks_and_an_interrupted_answer_is_marked() {
        let (log, _, _) = run(
            7,
            |_| {},
            |a, _| async move {
                stream(&a, 0, 10, Duration::from_millis(10)).await;
                finish(&a, End::Interrupted, "").await
            },
        );
        for (_, c) in &log.calls {
            if let Call::Start { text, .. } | Call::Append { text, .. } = c {
                assert!(text.chars().count() <= 7, "{text:?}");
            }
        }
        let all: String = (0..10).map(|i| format!("w{i} ")).collect();
        assert_eq!(
            log.texts["s1"],
            format!("{}{INTERRUPTED_MARK}", all.trim_end())
        );
    }

    #[test]
    fn a_rate_limit_waits_and_loses_nothing() {
        let (log, _, on) = run(
            12_000,
            |l| {
                l.stream_errors
                    .push_back(PlatformError::rate_limited(Duration::from_secs(1)));
            },
            |a, _| async move {
                let text = stream(&a, 0, 40, Duration::from_millis(100)).await;
                finish(&a, End::Completed, &text).await
            },
        );
        assert!(on, "a rate limit is no refusal");
        let all: String = (0..40).map(|i| format!("w{i} ")).collect();
        let started = log.calls.iter().find_map(|(_, c)| match c {
            Call::Start { id, .. } => Some(id.clone()),
            _ => None,
        });
        let id = started.unwrap_or_else(|| panic!("no start"));
        assert_eq!(log.texts[&id], all);
        assert_eq!(kinds(&log).iter().filter(|k| **k == "start").count(), 1);
    }

    #[test]
    fn refused_before_the_start_the_answer_is_posted_and_edited() {
        let (log, d, on) = run(
            12_000,
            |l| {
                l.stream_errors
                    .push_back(PlatformError::Refused("not_allowed".into()))
            },
            |a, _| async move {
                let text = stream(&a, 0, 40, Duration::from_millis(100)).await;
                finish(&a, End::Completed, &text).await
            },
        );
        assert!(!on, "native streams are off for the process");
        let k = kinds(&log);
        assert!(!k.contains(&"start"), "{k:?}");
        assert_eq!(k.first(), Some(&"send"));
        let all: String = (0..40).map(|i| format!("w{i} ")).collect();
        assert_eq!(d.messages.len(), 1);
        assert_eq!(log.texts[&d.messages[0]], all);
    }

    #[test]
    fn refused_mid_stream_the_rest_continues_in_a_new_message() {
        let (log, d, on) = run(
            12_000,
            |_| {},
            |a, log| async move {
                let mut text = stream(&a, 0, 30, Duration::from_millis(100)).await;
                // Streaming: the next append is refused.
                log.borrow_mut()
                    .stream_errors
                    .push_back(PlatformError::Refused("feature_not_enabled".into()));
                text.push_str(&stream(&a, 30, 30, Duration::from_millis(100)).await);
                finish(&a, End::Completed, &text).await
            },
        );
        assert!(!on);
        let k = kinds(&log);
        assert_eq!(k.iter().filter(|k| **k == "start").count(), 1, "{k:?}");
        assert!(k.contains(&"stop") && k.contains(&"send"), "{k:?}");
        assert_eq!(d.messages.first().map(String::as_str), Some("s1"));
        assert_eq!(d.messages.len(), 2, "{:?}", d.messages);
        let all: String = (0..60).map(|i| format!("w{i} ")).collect();
        let shown = format!("{}{}", log.texts["s1"], log.texts[&d.messages[1]]);
        assert_eq!(shown, all, "nothing shown twice or lost");
    }
}
