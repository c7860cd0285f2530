//! The courier: how every message leaves for every platform, written once.
//!
//! A platform supplies only its API calls ([`Wire`]: send, edit, typing, each
//! answering a typed [`PlatformError`]); the courier adds the policy around
//! them, the same for all:
//!
//! - **pacing**: calls into one chat are spaced by the platform's
//!   [`PaceRules`](super::PaceRules), so bursts queue instead of earning rate
//!   limits; a rate limit the platform answers holds that chat (or every
//!   chat, when global) for the time it asked;
//! - **sends are never dropped for a rate limit**: the wait is taken and the
//!   send tried again, however many come; a platform that is unavailable is
//!   tried again with back-off (capped at [`MAX_SEND_RETRY_WAIT`]) for up to
//!   [`SEND_RETRY_FOR`], so an outage does not lose an answer;
//! - **edits** hand a rate limit back to the stream preview (it owns its
//!   edit rhythm and back-off); "not modified" is success;
//! - **formatting**: Markdown is rendered once into the platform's markup;
//!   text the platform cannot parse goes again as plain text;
//! - **metrics**: every message sent and every edit, by outcome.
//!
//! No actix here: the courier actor (`actors/courier.rs`) owns one.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::pacing::Pacer;
use super::{Capabilities, ChatKind, ChatRef, Format, PlatformError};
use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// How long one send is tried again against an unavailable platform before
/// giving up (rate limits are waited out and do not count).
pub const SEND_RETRY_FOR: Duration = Duration::from_secs(24 * 3600);
/// First wait after an unavailable platform; doubles up to [`MAX_SEND_RETRY_WAIT`].
pub const FIRST_SEND_RETRY_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between two attempts of one send (jitter included).
pub const MAX_SEND_RETRY_WAIT: Duration = Duration::from_secs(60);

/// A platform call in flight.
pub type Call<T> = Pin<Box<dyn Future<Output = Result<T, PlatformError>>>>;

/// One platform's API calls: the only platform-specific part of sending.
/// `formatted` says whether `text` is in the platform's markup (rendered by
/// the courier) or plain.
pub trait Wire {
    /// Posts a new message in `chat`, replying to `reply_to` when given;
    /// answers the new message's id. `key` names this one logical send and
    /// is the same on every retry of it (a platform with idempotency, such
    /// as Discord's nonce, uses it so a retry never posts twice).
    fn send(
        &self,
        chat: &ChatRef,
        text: &str,
        formatted: bool,
        reply_to: Option<&str>,
        key: &str,
    ) -> Call<String>;
    /// Replaces the text of message `id`.
    fn edit(&self, chat: &ChatRef, id: &str, text: &str, formatted: bool) -> Call<()>;
    /// Shows the typing indicator once.
    fn typing(&self, chat: &ChatRef) -> Call<()>;
    /// Clears the indicator once the answer is delivered; nothing for
    /// indicators that expire within seconds by themselves.
    fn typing_done(&self, _chat: &ChatRef) -> Call<()> {
        Box::pin(async { Ok(()) })
    }
}

/// The outgoing side of one platform.
#[derive(Clone)]
pub struct Courier {
    platform: &'static str,
    caps: Capabilities,
    wire: Rc<dyn Wire>,
    pacer: Rc<RefCell<Pacer>>,
    metrics: Arc<Metrics>,
}

impl Courier {
    /// A courier for `platform` over its `wire`.
    pub fn new(
        platform: &'static str,
        caps: Capabilities,
        wire: Rc<dyn Wire>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            platform,
            caps,
            wire,
            pacer: Rc::new(RefCell::new(Pacer::default())),
            metrics,
        }
    }

    /// Waits for `chat`'s next slot.
    async fn slot(&self, chat: &ChatRef) {
        let group = chat.kind != ChatKind::Dm;
        let at = self
            .pacer
            .borrow_mut()
            .reserve(&chat.id, group, self.caps.pace, Instant::now());
        tokio::time::sleep_until(at).await;
    }

    /// Records a rate limit so nothing more goes where it applies until it passed.
    fn hold(&self, chat: &ChatRef, retry_after: Duration, global: bool) {
        let until = Instant::now() + retry_after;
        let mut p = self.pacer.borrow_mut();
        if global {
            p.hold_all(until);
        } else {
            p.hold(&chat.id, until);
        }
    }

    /// The text to send, rendered when formatted.
    fn body(&self, text: &str, format: Format) -> (String, bool) {
        match format {
            Format::Markdown => ((self.caps.render)(text), true),
            Format::Plain => (text.to_string(), false),
        }
    }

    /// Sends one message; answers its id. Rate limits are waited out.
    pub fn send(
        &self,
        chat: ChatRef,
        text: String,
        format: Format,
        reply_to: Option<String>,
    ) -> impl Future<Output = Result<String, PlatformError>> + 'static {
        let me = self.clone();
        async move {
            let (mut body, mut formatted) = me.body(&text, format);
            let key = uuid::Uuid::new_v4().simple().to_string();
            let mut backoff = Backoff::new(FIRST_SEND_RETRY_WAIT, MAX_SEND_RETRY_WAIT);
            let give_up = Instant::now() + SEND_RETRY_FOR;
            loop {
                me.slot(&chat).await;
                let sent = me
                    .wire
                    .send(&chat, &body, formatted, reply_to.as_deref(), &key)
                    .await;
                match sent {
                    Ok(id) => {
                        me.count("hermes_platform_messages_total", "direction", "out");
                        return Ok(id);
                    }
                    Err(PlatformError::RateLimited {
                        retry_after,
                        global,
                    }) => {
                        log::info!(
                            "{}: rate limited in chat {}; sending again in {retry_after:?}",
                            me.platform,
                            chat.id
                        );
                        me.hold(&chat, retry_after, global);
                    }
                    Err(PlatformError::FormatRejected(why)) if formatted => {
                        log::info!(
                            "{}: the formatted text was rejected ({why}); sending it plain",
                            me.platform
                        );
                        (body, formatted) = (text.clone(), false);
                    }
                    Err(e @ PlatformError::Unavailable(_)) => {
                        let wait = backoff.next_wait();
                        if Instant::now() + wait > give_up {
                            log::error!(
                                "{}: gave up sending after {} h of failures: {e}",
                                me.platform,
                                SEND_RETRY_FOR.as_secs() / 3600
                            );
                            return Err(e);
                        }
                        log::warn!(
                            "{}: sending failed ({e}); trying again in {wait:?}",
                            me.platform
                        );
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Edits one message. A rate limit is returned (the caller owns its
    /// rhythm); "not modified" is success.
    pub fn edit(
        &self,
        chat: ChatRef,
        id: String,
        text: String,
        format: Format,
    ) -> impl Future<Output = Result<(), PlatformError>> + 'static {
        let me = self.clone();
        async move {
            me.slot(&chat).await;
            let (mut body, mut formatted) = me.body(&text, format);
            let result = loop {
                match me.wire.edit(&chat, &id, &body, formatted).await {
                    Ok(()) | Err(PlatformError::NotModified) => break Ok(()),
                    Err(PlatformError::FormatRejected(_)) if formatted => {
                        (body, formatted) = (text.clone(), false);
                    }
                    Err(PlatformError::RateLimited {
                        retry_after,
                        global,
                    }) => {
                        me.hold(&chat, retry_after, global);
                        break Err(PlatformError::RateLimited {
                            retry_after,
                            global,
                        });
                    }
                    Err(e) => break Err(e),
                }
            };
            let outcome = match &result {
                Ok(()) => "ok",
                Err(PlatformError::RateLimited { .. }) => "rate_limited",
                Err(_) => "failed",
            };
            me.count("hermes_stream_preview_edits_total", "outcome", outcome);
            result
        }
    }

    /// Shows the typing indicator (a failure only costs the indicator).
    /// Shows the typing indicator once, or clears it when `done`.
    pub fn typing(&self, chat: ChatRef, done: bool) -> impl Future<Output = ()> + 'static {
        let me = self.clone();
        async move {
            let call = if done {
                me.wire.typing_done(&chat)
            } else {
                me.wire.typing(&chat)
            };
            if let Err(e) = call.await {
                log::debug!("{}: typing indicator failed: {e}", me.platform);
            }
        }
    }

    fn count(&self, name: &'static str, label: &'static str, value: &str) {
        self.metrics.inc(
            name,
            vec![
                ("platform", self.platform.to_string()),
                (label, value.to_string()),
            ],
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::platforms::{Measure, PaceRules};

    /// A wire that answers from a script and records what it was asked.
    #[derive(Default)]
    struct Scripted {
        answers: RefCell<VecDeque<Result<String, PlatformError>>>,
        calls: RefCell<Vec<(Instant, String, bool)>>,
    }

    impl Wire for Rc<Scripted> {
        fn send(
            &self,
            _: &ChatRef,
            text: &str,
            formatted: bool,
            _: Option<&str>,
            _: &str,
        ) -> Call<String> {
            self.calls
                .borrow_mut()
                .push((Instant::now(), text.to_string(), formatted));
            let a = self
                .answers
                .borrow_mut()
                .pop_front()
                .unwrap_or(Ok("id".into()));
            Box::pin(async move { a })
        }
        fn edit(&self, c: &ChatRef, _: &str, text: &str, formatted: bool) -> Call<()> {
            let sent = self.send(c, text, formatted, None, "edit");
            Box::pin(async move { sent.await.map(|_| ()) })
        }
        fn typing(&self, _: &ChatRef) -> Call<()> {
            Box::pin(async { Ok(()) })
        }
    }

    fn caps() -> Capabilities {
        Capabilities {
            max_len: 100,
            measure: Measure::Chars,
            edit_floor: Some(Duration::from_secs(1)),
            typing_every: None,
            render: |md| format!("<{md}>"),
            pace: PaceRules {
                per_chat: Duration::from_secs(1),
                per_group: Duration::from_secs(3),
            },
        }
    }

    fn chat() -> ChatRef {
        ChatRef {
            id: "c".into(),
            kind: ChatKind::Dm,
            thread: None,
        }
    }

    fn courier(wire: &Rc<Scripted>) -> Courier {
        Courier::new(
            "test",
            caps(),
            Rc::new(wire.clone()),
            Arc::new(Metrics::default()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_are_waited_out_however_many() {
        let wire = Rc::new(Scripted::default());
        for _ in 0..12 {
            wire.answers
                .borrow_mut()
                .push_back(Err(PlatformError::rate_limited(Duration::from_secs(2))));
        }
        let started = Instant::now();
        let id = courier(&wire)
            .send(chat(), "hi".into(), Format::Plain, None)
            .await;
        assert_eq!(id, Ok("id".into()));
        let calls = wire.calls.borrow();
        assert_eq!(calls.len(), 13);
        for pair in calls.windows(2) {
            assert!(
                pair[1].0 - pair[0].0 >= Duration::from_secs(2),
                "the wait was taken"
            );
        }
        assert!(started.elapsed() >= Duration::from_secs(24));
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_formatting_goes_again_plain_and_sends_are_paced() {
        let wire = Rc::new(Scripted::default());
        wire.answers
            .borrow_mut()
            .push_back(Err(PlatformError::FormatRejected("bad entity".into())));
        let c = courier(&wire);
        let first = c.send(chat(), "*x*".into(), Format::Markdown, None).await;
        assert!(first.is_ok());
        let second = c.send(chat(), "y".into(), Format::Plain, None).await;
        assert!(second.is_ok());
        let calls = wire.calls.borrow();
        assert_eq!((calls[0].1.as_str(), calls[0].2), ("<*x*>", true));
        assert_eq!((calls[1].1.as_str(), calls[1].2), ("*x*", false));
        assert!(
            calls[2].0 - calls[1].0 >= Duration::from_secs(1),
            "one call a second into one chat"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn edits_hand_rate_limits_back_and_not_modified_is_success() {
        let wire = Rc::new(Scripted::default());
        wire.answers.borrow_mut().extend([
            Err(PlatformError::NotModified),
            Err(PlatformError::rate_limited(Duration::from_secs(5))),
        ]);
        let c = courier(&wire);
        assert_eq!(
            c.edit(chat(), "1".into(), "a".into(), Format::Plain).await,
            Ok(())
        );
        let limited = c.edit(chat(), "1".into(), "b".into(), Format::Plain).await;
        assert!(matches!(limited, Err(PlatformError::RateLimited { .. })));
        assert_eq!(wire.calls.borrow().len(), 2, "not retried by the courier");
        // The next call into the chat waits for the hold.
        let before = Instant::now();
        let _ = c.send(chat(), "c".into(), Format::Plain, None).await;
        assert!(Instant::now() - before >= Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_of_hours_is_waited_out_and_the_answer_sent_once() {
        let wire = Rc::new(Scripted::default());
        for _ in 0..200 {
            wire.answers
                .borrow_mut()
                .push_back(Err(PlatformError::Unavailable("502".into())));
        }
        wire.answers.borrow_mut().push_back(Ok("m1".into()));
        let before = Instant::now();
        let r = courier(&wire)
            .send(chat(), "x".into(), Format::Plain, None)
            .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(wire.calls.borrow().len(), 201);
        // Waits grow to the cap and stay there: about three hours.
        let took = Instant::now() - before;
        assert!(
            took > Duration::from_secs(2 * 3600) && took < Duration::from_secs(4 * 3600),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_platform_down_for_a_day_is_given_up() {
        let wire = Rc::new(Scripted::default());
        for _ in 0..3000 {
            wire.answers
                .borrow_mut()
                .push_back(Err(PlatformError::Unavailable("502".into())));
        }
        let before = Instant::now();
        let r = courier(&wire)
            .send(chat(), "x".into(), Format::Plain, None)
            .await;
        assert!(matches!(r, Err(PlatformError::Unavailable(_))));
        let took = Instant::now() - before;
        assert!(
            took <= SEND_RETRY_FOR && took > SEND_RETRY_FOR - Duration::from_secs(120),
            "{took:?}"
        );
    }
}
