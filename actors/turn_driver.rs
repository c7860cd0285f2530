//! The turn driver: the task (not an actor) the session router spawns for
//! each chat turn. It sends the idle-reset notice if there is one, starts a
//! `StreamPreviewActor` for the answer (a `NativeStreamActor` where the
//! outbox streams natively and the platform has not refused it), runs the
//! turn on the session's agent, feeds the agent's events to it, refreshes
//! the typing indicator at the platform's cadence (and clears it after),
//! waits for the [`Delivery`], reports a failure to the user, and tells the
//! router the turn is done. It knows no platform: everything it needs is in the
//! outbox's capabilities.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use super::agent::{AgentActor, RunTurn};
use super::native_stream::NativeStreamActor;
use super::outbox::{Outbox, Typing};
use super::pool::ArbiterPool;
use super::stream_preview::{self, Delivery, End, Finish, PreviewSettings, StreamPreviewActor};
use crate::agent::{AgentEvent, EVENT_CHANNEL_CAPACITY, TurnInput, TurnOutcome, TurnStatus};
use crate::deliveries::{Deliveries, Obligation};
use crate::openai::Message;
use crate::platforms::{ChatRef, Format, Inbound};

/// How a driven turn ended, for the router.
pub struct Driven {
    pub user: Message,
    pub outcome: TurnOutcome,
    pub delivery: Delivery,
}

/// One chat turn to drive.
pub struct Driver {
    pub agent: Addr<AgentActor>,
    pub msg: Inbound,
    pub out: Outbox,
    pub preview: PreviewSettings,
    pub pool: ArbiterPool,
    /// Said before the answer (a session that started fresh after being idle).
    pub notice: Option<String>,
    /// Where the answer's delivery obligation is recorded.
    pub deliveries: Deliveries,
}

impl Driver {
    /// Runs the turn to its delivered end.
    pub async fn run(self) -> Driven {
        let Driver {
            agent,
            msg,
            out,
            mut preview,
            pool,
            notice,
            deliveries,
        } = self;
        let chat = msg.chat.clone();
        let reply_to = Some(msg.message_id.clone());
        if let Some(n) = notice
            && let Err(e) = out
                .send_split(&chat, &n, Format::Plain, reply_to.clone())
                .await
        {
            log::warn!(
                "{}: could not send the idle-reset notice: {e}",
                out.platform
            );
        }
        let user = Message::user(msg.text.clone());
        // Edits are never closer than the platform tolerates, whatever the setting.
        match out.caps.edit_floor {
            Some(floor) => preview.edit_interval = preview.edit_interval.max(floor),
            None => preview.live = false,
        }
        let live = preview.live;
        // Recorded (committed) before anything is sent: a restart from here
        // on finishes the answer or tells the user.
        let key = chat.session_key(out.platform);
        let obligation = deliveries
            .open(out.platform, &key, &chat, reply_to.as_deref())
            .await;
        let preview = Answer::start(&out, &msg, preview, &pool, obligation.clone());
        let (tx, mut rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        // Deltas are only worth streaming when the answer types itself out.
        let input = TurnInput::new(user.clone(), None, live);
        let started = agent.send(RunTurn { input, events: tx }).await;
        let outcome = match started {
            Ok(Ok(())) => drive_events(&mut rx, &preview, &out, &chat).await,
            Ok(Err(busy)) => Some(TurnOutcome::failed(busy.to_string())),
            Err(e) => Some(TurnOutcome::failed(format!(
                "the session's agent is gone: {e}"
            ))),
        };
        let outcome =
            outcome.unwrap_or_else(|| TurnOutcome::failed("the turn ended without an outcome"));
        let end = match outcome.status {
            TurnStatus::Completed | TurnStatus::Incomplete => End::Completed,
            TurnStatus::Cancelled => End::Interrupted,
            TurnStatus::Failed => End::Failed,
        };
        if let Some(o) = &obligation
            && end == End::Completed
        {
            o.answered(&outcome.text);
        }
        let delivery = preview
            .finish
            .send(Finish {
                end,
                text: outcome.text.clone(),
            })
            .await
            .unwrap_or_default();
        if let Some(o) = &obligation {
            o.close();
        }
        if out.caps.typing_every.is_some() {
            out.typing.do_send(Typing {
                chat: chat.clone(),
                done: true,
            });
        }
        if outcome.status == TurnStatus::Failed {
            let why = outcome
                .error
                .clone()
                .unwrap_or_else(|| "unknown error".into());
            let text = format!("⚠️ The agent failed: {why}");
            if let Err(e) = out.send_split(&chat, &text, Format::Plain, reply_to).await {
                log::warn!("{}: could not report a failed turn: {e}", out.platform);
            }
        }
        Driven {
            user,
            outcome,
            delivery,
        }
    }
}

/// Whatever shows one answer: a native stream where the platform has one
/// (and has not refused it), else the post-and-edit preview.
struct Answer {
    delta: Recipient<stream_preview::Delta>,
    segment_break: Recipient<stream_preview::SegmentBreak>,
    finish: Recipient<Finish>,
}

impl Answer {
    fn start(
        out: &Outbox,
        msg: &Inbound,
        cfg: PreviewSettings,
        pool: &ArbiterPool,
        obligation: Option<Obligation>,
    ) -> Self {
        let (out, chat, reply_to) = (out.clone(), msg.chat.clone(), Some(msg.message_id.clone()));
        match out.stream.clone().filter(|s| cfg.live && s.usable()) {
            Some(stream) => {
                let user = msg.user_id.clone();
                let a = NativeStreamActor::start_in_arbiter(&pool.pick(), move |_| {
                    NativeStreamActor::new(out, stream, chat, user, reply_to, cfg)
                        .recording(obligation)
                });
                Self {
                    delta: a.clone().recipient(),
                    segment_break: a.clone().recipient(),
                    finish: a.recipient(),
                }
            }
            None => {
                let a = StreamPreviewActor::start_in_arbiter(&pool.pick(), move |_| {
                    StreamPreviewActor::new(out, chat, reply_to, cfg).recording(obligation)
                });
                Self {
                    delta: a.clone().recipient(),
                    segment_break: a.clone().recipient(),
                    finish: a.recipient(),
                }
            }
        }
    }
}

/// The period of the (unused) typing timer of a platform without an indicator.
const NO_TYPING: Duration = Duration::from_secs(3600);

/// Feeds a turn's events to its preview until `Finished`, refreshing the
/// typing indicator meanwhile.
async fn drive_events(
    rx: &mut mpsc::Receiver<AgentEvent>,
    preview: &Answer,
    out: &Outbox,
    chat: &ChatRef,
) -> Option<TurnOutcome> {
    let every = out.caps.typing_every;
    let mut typing = tokio::time::interval(every.unwrap_or(NO_TYPING));
    loop {
        tokio::select! {
            // The interval's first tick is ready at once: the indicator is
            // shown as the turn starts, even when the answer is ready too.
            biased;
            _ = typing.tick(), if every.is_some() => {
                out.typing.do_send(Typing { chat: chat.clone(), done: false });
            }
            ev = rx.recv() => match ev? {
                AgentEvent::TextDelta(t) => {
                    let _ = preview.delta.send(stream_preview::Delta(t)).await;
                }
                AgentEvent::SegmentBreak => {
                    let _ = preview.segment_break.send(stream_preview::SegmentBreak).await;
                }
                AgentEvent::Finished(o) => return Some(*o),
                _ => {}
            },
        }
    }
}

/// The turn driver as the router uses it: run, then hand the result back.
pub fn spawn<F>(driver: Driver, done: F)
where
    F: FnOnce(Driven) + 'static,
{
    actix::spawn(async move {
        let driven = driver.run().await;
        done(driven);
    });
}
