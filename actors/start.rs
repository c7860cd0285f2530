//! What a chat platform gets to start with, and what it hands back: the
//! one interface between the composition root and each platform's actor
//! file. A platform's `start` reads its own configuration section, starts
//! its courier and its actor on the pool, and returns the inbound hooks (if
//! any) the HTTP server must serve for it.

use std::collections::HashSet;
use std::sync::Arc;

use actix::Addr;

use super::hook::InboundHook;
use super::outbox::Outbox;
use super::pool::ArbiterPool;
use super::session_router::Incoming;
use super::session_router::SessionRouter;
use crate::config::Loaded;
use crate::deliveries::{self, Deliveries, Recovery};
use crate::metrics::Metrics;
use crate::platform_status::PlatformStatus;
use crate::platforms::Parsed;
use crate::platforms::access::Dedup;
use crate::platforms::consumer::{Leases, STANDBY_RETRY};
use crate::store::Store;

/// Everything a platform needs to start.
#[derive(Clone)]
pub struct PlatformStart {
    pub loaded: Arc<Loaded>,
    /// Where platform state, transcripts and delivery obligations are kept.
    pub store: Store,
    /// The consumer leases: only their holder reads a bot.
    pub leases: Leases,
    pub pool: ArbiterPool,
    pub metrics: Arc<Metrics>,
    /// Where the platform reports its connection state.
    pub status: PlatformStatus,
    /// Where its messages go.
    pub router: Addr<SessionRouter>,
    /// This run's delivery obligations (and those earlier runs left).
    pub deliveries: Deliveries,
}

/// A started platform.
pub struct Started {
    /// Paths the HTTP server serves for it (webhooks, signed requests).
    pub hooks: Vec<InboundHook>,
}

impl PlatformStart {
    /// Hands a parsed message to the router with the platform's outbox,
    /// unless `dedup` has seen it (a redelivery, a replay after a resume).
    pub fn hand_over(&self, parsed: Parsed, dedup: &mut Dedup, out: &Outbox, platform: &str) {
        match parsed {
            Parsed::Message { inbound, dedup: id } => {
                if !dedup.first_time(&id) {
                    log::debug!("{platform}: message {id} seen before; ignored");
                    return;
                }
                self.router.do_send(Incoming {
                    msg: inbound,
                    out: out.clone(),
                });
            }
            Parsed::Skip(why) => log::debug!("{platform}: event skipped: {why}"),
        }
    }
}

/// A platform's start function: `None` when it is not configured.
pub type StartFn = fn(&PlatformStart) -> Option<Started>;

/// What every platform does when it is connected: finish what earlier
/// runs left undelivered, and (the first time) say in the home channel
/// that the gateway is online. `home_channel` is taken, so a reconnect is
/// not announced as a restart.
pub fn on_connected(
    start: &PlatformStart,
    out: &super::outbox::Outbox,
    home_channel: &mut Option<String>,
) {
    finish_left_over(start, out);
    if let Some(home) = home_channel.take() {
        announce_online(out, &home);
    }
}

/// Says in the platform's home channel (its `home_channel` setting) that the
/// gateway is online: after a start or a restart, the operator sees it came
/// back. Sent once per process, when the platform first connects.
fn announce_online(out: &super::outbox::Outbox, home_channel: &str) {
    use crate::platforms::{ChatKind, ChatRef, Format};
    let chat = ChatRef {
        id: home_channel.to_string(),
        // Negative ids are groups and channels on the platforms that use
        // numbers; names and other ids are chats of their own.
        kind: if home_channel.starts_with('-') {
            ChatKind::Group
        } else {
            ChatKind::Dm
        },
        thread: None,
    };
    let (out, text) = (
        out.clone(),
        format!("✅ Hermes {} is online.", env!("CARGO_PKG_VERSION")),
    );
    actix::spawn(async move {
        if let Err(e) = out.send_split(&chat, &text, Format::Plain, None).await {
            log::warn!(
                "{}: could not post to the home channel {}: {e}",
                out.platform,
                chat.id
            );
        }
    });
}

/// Finishes the delivery obligations earlier runs of the gateway left on
/// this platform (answers a restart cut off): a message still being typed
/// out is finalised and marked, a complete answer never shown is sent, and
/// the user of a cut-off turn gets one notice to send it again. Turns are
/// never re-run (their tools may have side effects). Called whenever the
/// platform connects; only the first call of a process does it.
///
/// Obligations another gateway opened are left to it while it is alive (a
/// gateway that handed the platform over as it stopped is still finishing
/// its answers): they are looked at again every [`STANDBY_RETRY`] and taken
/// up only if it ends before closing them.
fn finish_left_over(start: &PlatformStart, out: &super::outbox::Outbox) {
    if !start.deliveries.claim_recovery(out.platform) {
        return;
    }
    let (d, leases, out) = (start.deliveries.clone(), start.leases.clone(), out.clone());
    actix::spawn(async move {
        let mut taken_up = HashSet::new();
        let mut told_waiting = false;
        // Ends once nothing is left that another live gateway is finishing.
        loop {
            let left = match d.left_over(out.platform).await {
                Ok(l) => l,
                Err(e) => {
                    log::error!("{}: cannot read undelivered answers: {e}", out.platform);
                    return;
                }
            };
            let (mut theirs, mut ours) = (Vec::new(), Vec::new());
            for p in left.into_iter().filter(|p| !taken_up.contains(&p.id)) {
                if leases.alive_elsewhere(p.instance.as_deref()).await {
                    theirs.push(p);
                } else {
                    ours.push(p);
                }
            }
            if !ours.is_empty() {
                log::warn!(
                    "{}: finishing {} answer(s) an earlier run did not deliver",
                    out.platform,
                    ours.len()
                );
            }
            for p in ours {
                taken_up.insert(p.id);
                finish_one(&d, &out, p).await;
            }
            if theirs.is_empty() {
                if told_waiting {
                    log::info!(
                        "{}: the answers another gateway was finishing are done",
                        out.platform
                    );
                }
                return;
            }
            if !told_waiting {
                told_waiting = true;
                log::info!(
                    "{}: {} answer(s) are being finished by the gateway that opened them",
                    out.platform,
                    theirs.len()
                );
            }
            tokio::time::sleep(STANDBY_RETRY).await;
        }
    });
}

/// Finishes one left-over obligation (see [`finish_left_over`]).
async fn finish_one(d: &Deliveries, out: &super::outbox::Outbox, p: deliveries::Pending) {
    use super::outbox::{EditText, StopStream};
    use crate::platforms::Format;
    let reply_to = p.reply_to.clone();
    let done = match deliveries::recovery(&p) {
        Recovery::Deliver(text) => out
            .send_split(&p.chat, &text, Format::Markdown, reply_to)
            .await
            .map(|_| ()),
        Recovery::CutOff { finalise } => {
            if let Some(c) = finalise {
                let r = match (&out.stream, c.stream) {
                    (Some(s), true) => s
                        .stop
                        .send(StopStream {
                            chat: p.chat.clone(),
                            id: c.id.clone(),
                            text: Some(deliveries::RESTART_MARK.to_string()),
                        })
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string())),
                    _ => out
                        .edit
                        .send(EditText {
                            chat: p.chat.clone(),
                            message_id: c.id.clone(),
                            text: c.text.clone(),
                            format: Format::Markdown,
                        })
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string())),
                };
                if let Err(e) = r {
                    log::warn!("{}: could not finalise message {}: {e}", out.platform, c.id);
                }
            }
            out.send_split(&p.chat, deliveries::CUT_OFF_NOTICE, Format::Plain, reply_to)
                .await
                .map(|_| ())
        }
    };
    match done {
        Ok(()) => {
            if let Err(e) = d.finished(p.id).await {
                log::warn!("{}: delivery {}: {e}", out.platform, p.id);
            }
        }
        Err(e) => log::error!(
            "{}: could not finish an undelivered answer in chat {}: {e}",
            out.platform,
            p.chat.id
        ),
    }
}
