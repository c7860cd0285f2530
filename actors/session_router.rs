//! `SessionRouter`: the one actor every chat platform hands its messages to.
//! It owns the map from session key to the session's `AgentActor`, and
//! everything that is per chat rather than per platform:
//!
//! - **who may talk**: default deny; a denied direct message gets the
//!   private-bot reply at most once per user per hour;
//! - **commands** (`/new`, `/reset`, `/stop`, `/status`, `/help`, `/model`,
//!   `/title`, `/approve`, `/deny`), answered at once, even while a turn runs;
//! - **one turn at a time**: a message that arrives while a turn runs
//!   interrupts it (`busy_policy: interrupt`, the default) or waits for it
//!   (`queue`); messages that piled up behind an interrupted turn are
//!   answered together, as one input;
//! - **idle reset**: a session idle for `session_idle_minutes` starts fresh,
//!   and the user is told;
//! - **history in `state.db`**: a session's agent is built from its stored
//!   transcript, and every finished turn is appended, so conversations
//!   survive restarts. Each reset bumps the session's generation, and a turn
//!   of an older generation is never written back.
//!
//! A turn is driven by a task (not an actor) that feeds the agent's events to
//! the answer's `StreamPreviewActor`, refreshes the typing indicator, and
//! reports `TurnDone` back here. Nothing here waits on a platform: replies
//! are spawned.
//!
//! Idle sessions leave memory after [`EVICT_AFTER`] (their history stays in
//! the database); the router lives as long as the gateway.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::agent::{AgentActor, Interrupt, RunTurn};
use super::outbox::{Outbox, Typing};
use super::pool::ArbiterPool;
use super::stream_preview::{self, End, Finish, PreviewSettings, StreamPreviewActor};
use crate::agent::{
    AgentEvent, AgentSettings, EVENT_CHANNEL_CAPACITY, TurnInput, TurnOutcome, TurnStatus,
};
use crate::config::{BusyPolicy, Loaded};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::openai::Message;
use crate::platforms::access::{Allowlist, DenyNotices};
use crate::platforms::{ChatKind, ChatRef, Format, Inbound};
use crate::tools::{ApprovalRequest, Approver, SessionTools};
use crate::upstream::UpstreamSettings;

/// The typing indicator is refreshed this often while a turn runs (Telegram's expires after 5 s).
pub const TYPING_EVERY: Duration = Duration::from_secs(4);
/// Sessions idle this long leave memory (their history stays on disk).
pub const EVICT_AFTER: Duration = Duration::from_secs(3600);
/// How often idle sessions are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// Dangerous commands waiting for an answer, per session, before the agent waits.
const APPROVAL_QUEUE: usize = 4;
/// The chat platforms whose sessions this router serves.
const CHAT_PLATFORMS: &[&str] = &["telegram", "discord", "slack"];

/// `/help`.
const HELP: &str = "Commands:\n\
/new or /reset: start a new conversation\n\
/stop: interrupt the running answer\n\
/status: this conversation's age, size, token usage and model\n\
/model: the model in use\n\
/title <text>: name this conversation\n\
/approve, /deny: answer a pending request to run a dangerous command\n\
/help: this list\n\
Anything else goes to the agent.";
/// Said to messages that arrive while the gateway shuts down.
const DRAINING_REPLY: &str = "Restarting, please resend in a moment.";

/// The router's settings; replaced as a whole on reload.
#[derive(Clone)]
pub struct RouterSettings {
    /// Agent settings per platform, or why there is no upstream.
    pub agents: HashMap<&'static str, Result<Arc<AgentSettings>, String>>,
    pub allow: HashMap<&'static str, Allowlist>,
    pub preview: HashMap<&'static str, PreviewSettings>,
    pub busy: BusyPolicy,
    /// `None`: sessions never expire.
    pub idle: Option<Duration>,
    pub model: String,
}

impl RouterSettings {
    /// From a loaded configuration.
    pub fn from_loaded(loaded: &Loaded) -> Self {
        let c = &loaded.config;
        let upstream = UpstreamSettings::from_config(c);
        let model = upstream
            .as_ref()
            .map(|u| u.model.clone())
            .unwrap_or_default();
        let mut agents = HashMap::new();
        let mut allow = HashMap::new();
        let mut preview = HashMap::new();
        for &p in CHAT_PLATFORMS {
            let settings = upstream.clone().map(|u| {
                Arc::new(AgentSettings::for_front_door(
                    loaded,
                    p,
                    u,
                    &c.toolsets_for(p),
                ))
            });
            agents.insert(p, settings);
            let pc = match p {
                "telegram" => &c.telegram,
                "discord" => &c.discord,
                _ => &c.slack,
            };
            allow.insert(p, Allowlist::from_config(c, p, pc));
            preview.insert(
                p,
                PreviewSettings {
                    live: c.streaming.enabled_for(p),
                    min_tokens: c.streaming.min_tokens,
                    edit_interval: Duration::from_secs_f64(c.streaming.edit_interval),
                    cursor: c.streaming.cursor.clone(),
                },
            );
        }
        Self {
            agents,
            allow,
            preview,
            busy: c.gateway.busy_policy,
            idle: (c.gateway.session_idle_minutes > 0)
                .then(|| Duration::from_secs(c.gateway.session_idle_minutes * 60)),
            model,
        }
    }
}

/// A chat message and the way back to its chat.
/// Sent by: platform actors, for every message they accept.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Incoming {
    pub msg: Inbound,
    pub out: Outbox,
}

/// Replaces the settings (configuration reload). Sent by: the gateway on SIGHUP.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetSettings(pub Arc<RouterSettings>);

/// Stop starting turns; later messages get the restarting reply.
/// Sent by: the gateway's drain.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Interrupts every running turn; answers how many.
/// Sent by: the gateway's drain, when its timeout passes.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct InterruptAll;

/// A turn's end, after its answer was delivered. Sent by: the turn driver.
#[derive(Message)]
#[rtype(result = "()")]
struct TurnDone {
    key: String,
    generation: u64,
    user: Message,
    outcome: Box<TurnOutcome>,
}

/// A tool asks the session's user to approve a command. Sent by: the
/// session's approval forwarder.
#[derive(Message)]
#[rtype(result = "()")]
struct ApprovalAsked {
    key: String,
    req: ApprovalRequest,
}

/// Counters the gateway reads without asking the actor.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Chat turns running now.
    pub turns: AtomicUsize,
    /// Sessions held in memory.
    pub sessions: AtomicUsize,
}

/// One chat's session.
struct Session {
    agent: Option<Addr<AgentActor>>,
    /// Bumped by every reset; turns of an older generation are not stored.
    generation: u64,
    /// A turn is starting or running.
    busy: bool,
    queue: VecDeque<Incoming>,
    last_active: Instant,
    /// The dangerous command waiting for `/approve` or `/deny`.
    approval: Option<oneshot::Sender<bool>>,
    /// Where the latest message came from (approval prompts go there).
    last: Option<Incoming>,
}

impl Session {
    fn new() -> Self {
        Self {
            agent: None,
            generation: 0,
            busy: false,
            queue: VecDeque::new(),
            last_active: Instant::now(),
            approval: None,
            last: None,
        }
    }
}

/// The router.
pub struct SessionRouter {
    settings: Arc<RouterSettings>,
    db: Db,
    pool: ArbiterPool,
    metrics: Arc<Metrics>,
    stats: Arc<RouterStats>,
    sessions: HashMap<String, Session>,
    denied: DenyNotices,
    draining: bool,
}

impl SessionRouter {
    /// A router over `db`, starting agents and previews on `pool`.
    pub fn new(
        settings: Arc<RouterSettings>,
        db: Db,
        pool: ArbiterPool,
        metrics: Arc<Metrics>,
        stats: Arc<RouterStats>,
    ) -> Self {
        Self {
            settings,
            db,
            pool,
            metrics,
            stats,
            sessions: HashMap::new(),
            denied: DenyNotices::default(),
            draining: false,
        }
    }

    fn count(&self) {
        let turns = self.sessions.values().filter(|s| s.busy).count();
        self.stats.turns.store(turns, Ordering::Relaxed);
        self.stats
            .sessions
            .store(self.sessions.len(), Ordering::Relaxed);
    }

    /// Sends a notice to the chat of `inc` without waiting for it.
    fn reply(inc: &Incoming, text: String) {
        let (out, chat, to) = (
            inc.out.clone(),
            inc.msg.chat.clone(),
            inc.msg.message_id.clone(),
        );
        actix::spawn(async move {
            if let Err(e) = out.send_split(&chat, &text, Format::Plain, Some(to)).await {
                log::warn!(
                    "{}: could not send a notice to chat {}: {e}",
                    out.platform,
                    chat.id
                );
            }
        });
    }

    /// Handles a command, if `text` is one; false for anything else.
    fn command(&mut self, key: &str, inc: &Incoming) -> bool {
        let text = inc.msg.text.trim();
        let Some(first) = text
            .split_whitespace()
            .next()
            .filter(|w| w.starts_with('/'))
        else {
            return false;
        };
        // `/new@my_bot` in groups names the bot.
        let word = first
            .split('@')
            .next()
            .unwrap_or(first)
            .to_ascii_lowercase();
        let arg = text[first.len()..].trim().to_string();
        let session = self
            .sessions
            .entry(key.to_string())
            .or_insert_with(Session::new);
        match word.as_str() {
            "/new" | "/reset" => {
                session.generation += 1;
                if let Some(a) = session.agent.take()
                    && session.busy
                {
                    a.do_send(Interrupt);
                }
                session.queue.clear();
                session.approval.take();
                session.last_active = Instant::now();
                let db = self.db.clone();
                let (key2, inc2) = (key.to_string(), inc.clone());
                actix::spawn(async move {
                    if let Err(e) = crate::sessions::reset(&db, &key2).await {
                        log::warn!("session {key2}: reset failed: {e}");
                    }
                    Self::reply(&inc2, "✨ New conversation started.".into());
                });
            }
            "/stop" => {
                session.queue.clear();
                if let Some(tx) = session.approval.take() {
                    let _ = tx.send(false);
                }
                let text = match (&session.agent, session.busy) {
                    (Some(a), true) => {
                        a.do_send(Interrupt);
                        "⚡ Stopping."
                    }
                    _ => "Nothing is running.",
                };
                Self::reply(inc, text.into());
            }
            "/approve" | "/deny" => {
                let yes = word == "/approve";
                let answered = session
                    .approval
                    .take()
                    .is_some_and(|tx| tx.send(yes).is_ok());
                let text = match (answered, yes) {
                    (true, true) => "✅ Approved: running it.",
                    (true, false) => "❌ Denied.",
                    (false, _) => "Nothing is waiting for approval.",
                };
                Self::reply(inc, text.into());
            }
            "/help" => Self::reply(inc, HELP.into()),
            "/model" => Self::reply(inc, format!("Model: {}", self.model())),
            "/title" => {
                if arg.is_empty() {
                    let (db, key2, inc2) = (self.db.clone(), key.to_string(), inc.clone());
                    actix::spawn(async move {
                        let title = crate::sessions::info(&db, &key2)
                            .await
                            .ok()
                            .flatten()
                            .and_then(|i| i.title);
                        Self::reply(
                            &inc2,
                            match title {
                                Some(t) => format!("This conversation is titled: {t}"),
                                None => {
                                    "This conversation has no title. Name it with /title <text>."
                                        .into()
                                }
                            },
                        );
                    });
                } else {
                    let (db, key2, inc2) = (self.db.clone(), key.to_string(), inc.clone());
                    actix::spawn(async move {
                        let text = match crate::sessions::set_title(&db, &key2, &arg).await {
                            Ok(()) => format!("Titled: {arg}"),
                            Err(e) => {
                                log::warn!("session {key2}: cannot set the title: {e}");
                                "Could not save the title; try again.".into()
                            }
                        };
                        Self::reply(&inc2, text);
                    });
                }
            }
            "/status" => {
                let running = session.busy;
                let (db, key2, inc2, model) =
                    (self.db.clone(), key.to_string(), inc.clone(), self.model());
                actix::spawn(async move {
                    let info = crate::sessions::info(&db, &key2)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    Self::reply(&inc2, status_text(&key2, &info, &model, running));
                });
            }
            _ => return false,
        }
        true
    }

    fn model(&self) -> String {
        if self.settings.model.is_empty() {
            "none configured (set HERMES_MODEL)".into()
        } else {
            self.settings.model.clone()
        }
    }

    /// Starts a turn for `inc` in session `key` (which is idle).
    fn start_turn(&mut self, key: String, inc: Incoming, ctx: &mut Context<Self>) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let platform = inc.msg.platform;
        let (Some(agent_settings), Some(preview)) = (
            self.settings.agents.get(platform),
            self.settings.preview.get(platform).cloned(),
        ) else {
            log::error!("{platform}: no settings for this platform; message dropped");
            return;
        };
        let settings = match agent_settings {
            Ok(s) => s.clone(),
            Err(reason) => {
                Self::reply(&inc, format!("⚠️ The agent is not available: {reason}"));
                return;
            }
        };
        session.busy = true;
        session.last = Some(inc.clone());
        let generation = session.generation;
        let idle = self.settings.idle;
        // How long the session has been idle, when that is long enough to
        // start fresh: judged in memory for a loaded session, by its last
        // stored turn otherwise.
        let idle_in_memory = session
            .agent
            .as_ref()
            .map(|_| session.last_active.elapsed().as_secs())
            .filter(|secs| idle.is_some_and(|d| *secs >= d.as_secs()));
        if idle_in_memory.is_some() {
            session.agent = None;
        }
        let need_agent = session.agent.is_none();
        let db = self.db.clone();
        let key2 = key.clone();
        let load = async move {
            if !need_agent {
                return Ok((None, None));
            }
            let stale = match idle_in_memory {
                Some(secs) => Some(secs),
                None => crate::sessions::info(&db, &key2).await?.and_then(|i| {
                    let d = idle?;
                    let since = crate::clock::unix_now().saturating_sub(i.updated_at);
                    (i.turns > 0 && since >= d.as_secs()).then_some(since)
                }),
            };
            if stale.is_some() {
                crate::sessions::reset(&db, &key2).await?;
                return Ok((Some(Vec::new()), stale));
            }
            let history = crate::sessions::load(&db, &key2).await?;
            Ok::<_, crate::db::StoreError>((Some(history), None))
        };
        ctx.spawn(load.into_actor(self).map(move |res, act, ctx| {
            let Some(session) = act.sessions.get_mut(&key) else {
                return;
            };
            let (mut history, stale) = match res {
                Ok(x) => x,
                Err(e) => {
                    log::error!("session {key}: cannot load its history: {e}");
                    session.busy = false;
                    Self::reply(
                        &inc,
                        "⚠️ The conversation store failed; try again in a moment.".into(),
                    );
                    act.count();
                    return;
                }
            };
            if session.generation != generation {
                // Reset (`/new`) while loading: the agent, if any, was
                // dropped; start empty.
                history = Some(Vec::new());
            }
            let agent = match (&session.agent, history) {
                (Some(a), _) => a.clone(),
                (None, history) => {
                    let (tx, rx) = mpsc::channel(APPROVAL_QUEUE);
                    let tools = SessionTools {
                        approver: Some(Approver::Ask(tx)),
                        ..SessionTools::default()
                    };
                    let a = AgentActor::start_for_session(
                        &act.pool,
                        settings,
                        history.unwrap_or_default(),
                        tools,
                    );
                    forward_approvals(key.clone(), rx, ctx.address());
                    session.agent = Some(a.clone());
                    a
                }
            };
            let notice = stale.map(|secs| {
                format!(
                    "Started a new conversation after {} of inactivity.",
                    human_duration(secs)
                )
            });
            let driver = Driver {
                agent,
                inc,
                preview,
                pool: act.pool.clone(),
                router: ctx.address(),
                key: key.clone(),
                generation: session.generation,
                notice,
                metrics: act.metrics.clone(),
            };
            actix::spawn(driver.run());
            act.count();
        }));
        self.count();
    }
}

/// `/status` text.
fn status_text(
    key: &str,
    info: &crate::sessions::SessionInfo,
    model: &str,
    running: bool,
) -> String {
    let age = if info.created_at == 0 {
        "new".to_string()
    } else {
        format!(
            "started {} ago",
            human_duration(crate::clock::unix_now().saturating_sub(info.created_at))
        )
    };
    let mut s = format!(
        "Session: {key}\nAge: {age}\nMessages: {}\nTurns: {}\nTokens: {} prompt, {} completion ({} total)\nModel: {model}\nTurn running: {}",
        info.messages,
        info.turns,
        info.prompt_tokens,
        info.completion_tokens,
        info.prompt_tokens + info.completion_tokens,
        if running { "yes" } else { "no" },
    );
    if let Some(t) = &info.title {
        s.push_str(&format!("\nTitle: {t}"));
    }
    s
}

/// "3 hours", "25 minutes", "2 days".
pub fn human_duration(secs: u64) -> String {
    let (n, unit) = if secs >= 2 * 86_400 {
        (secs / 86_400, "day")
    } else if secs >= 2 * 3600 {
        (secs / 3600, "hour")
    } else if secs >= 120 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Forwards a session's approval requests to the router (bounded by the
/// agent's own channel; ends when the agent drops its sender).
fn forward_approvals(
    key: String,
    mut rx: mpsc::Receiver<ApprovalRequest>,
    router: Addr<SessionRouter>,
) {
    actix::spawn(async move {
        while let Some(req) = rx.recv().await {
            router.do_send(ApprovalAsked {
                key: key.clone(),
                req,
            });
        }
    });
}

/// Drives one turn: agent events to the stream preview, typing refreshes,
/// delivery, then `TurnDone`.
struct Driver {
    agent: Addr<AgentActor>,
    inc: Incoming,
    preview: PreviewSettings,
    pool: ArbiterPool,
    router: Addr<SessionRouter>,
    key: String,
    generation: u64,
    notice: Option<String>,
    metrics: Arc<Metrics>,
}

impl Driver {
    async fn run(self) {
        let Driver {
            agent,
            inc,
            preview,
            pool,
            router,
            key,
            generation,
            notice,
            metrics,
        } = self;
        let (out, chat) = (inc.out.clone(), inc.msg.chat.clone());
        let reply_to = Some(inc.msg.message_id.clone());
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
        let user = Message::user(inc.msg.text.clone());
        let live = preview.live && out.limits.can_edit;
        log::debug!(
            "{}: answering in {key} (live preview: {live})",
            out.platform
        );
        let (p_out, p_chat, p_reply) = (out.clone(), chat.clone(), reply_to.clone());
        let preview = StreamPreviewActor::start_in_arbiter(&pool.pick(), move |_| {
            StreamPreviewActor::new(p_out, p_chat, p_reply, preview)
        });
        let (tx, mut rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        // Deltas are only worth streaming when the answer types itself out.
        let input = TurnInput::new(user.clone(), None, live);
        let started = agent.send(RunTurn { input, events: tx }).await;
        let outcome = match started {
            Ok(Ok(())) => drive_events(&mut rx, &preview, &out, &chat).await,
            Ok(Err(busy)) => Some(failed(busy.to_string())),
            Err(e) => Some(failed(format!("the session's agent is gone: {e}"))),
        };
        let outcome = outcome.unwrap_or_else(|| failed("the turn ended without an outcome".into()));
        let end = match outcome.status {
            TurnStatus::Completed | TurnStatus::Incomplete => End::Completed,
            TurnStatus::Cancelled => End::Interrupted,
            TurnStatus::Failed => End::Failed,
        };
        let delivery = preview
            .send(Finish {
                end,
                text: outcome.text.clone(),
            })
            .await
            .unwrap_or_default();
        metrics.inc(
            "hermes_platform_messages_total",
            vec![
                ("platform", out.platform.to_string()),
                ("direction", "out".into()),
            ],
            delivery.messages.len() as u64,
        );
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
        router.do_send(TurnDone {
            key,
            generation,
            user,
            outcome: Box::new(outcome),
        });
    }
}

/// Feeds a turn's events to its preview until `Finished`, refreshing the
/// typing indicator meanwhile.
async fn drive_events(
    rx: &mut mpsc::Receiver<AgentEvent>,
    preview: &Addr<StreamPreviewActor>,
    out: &Outbox,
    chat: &ChatRef,
) -> Option<TurnOutcome> {
    let mut typing = tokio::time::interval(TYPING_EVERY);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev? {
                AgentEvent::TextDelta(t) => {
                    let _ = preview.send(stream_preview::Delta(t)).await;
                }
                AgentEvent::SegmentBreak => {
                    let _ = preview.send(stream_preview::SegmentBreak).await;
                }
                AgentEvent::Finished(o) => return Some(*o),
                _ => {}
            },
            _ = typing.tick() => out.typing.do_send(Typing { chat: chat.clone() }),
        }
    }
}

fn failed(error: String) -> TurnOutcome {
    TurnOutcome::failed(error)
}

impl Actor for SessionRouter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_EVERY, |act, _| {
            act.sessions.retain(|_, s| {
                s.busy || s.approval.is_some() || s.last_active.elapsed() < EVICT_AFTER
            });
            act.count();
        });
    }
}

impl Handler<Incoming> for SessionRouter {
    type Result = ();

    fn handle(&mut self, inc: Incoming, ctx: &mut Context<Self>) {
        let m = &inc.msg;
        self.metrics.inc(
            "hermes_platform_messages_total",
            vec![
                ("platform", m.platform.to_string()),
                ("direction", "in".into()),
            ],
            1,
        );
        let allowed = self
            .settings
            .allow
            .get(m.platform)
            .is_some_and(|a| a.allows(&m.user_id));
        if !allowed {
            log::warn!(
                "{}: denied a message from user {} in chat {} (not in the allowlist)",
                m.platform,
                m.user_id,
                m.chat.id
            );
            if m.chat.kind == ChatKind::Dm
                && self
                    .denied
                    .should_reply(&format!("{}:{}", m.platform, m.user_id), Instant::now())
                && let Some(a) = self.settings.allow.get(m.platform)
            {
                Self::reply(&inc, a.private_reply(&m.user_id));
            }
            return;
        }
        let key = m.chat.session_key(m.platform);
        if self.command(&key, &inc) {
            return;
        }
        if self.draining {
            Self::reply(&inc, DRAINING_REPLY.into());
            return;
        }
        let busy_policy = self.settings.busy;
        let session = self
            .sessions
            .entry(key.clone())
            .or_insert_with(Session::new);
        if session.busy {
            if busy_policy == BusyPolicy::Interrupt
                && let Some(a) = &session.agent
            {
                a.do_send(Interrupt);
            }
            session.queue.push_back(inc);
            return;
        }
        self.start_turn(key, inc, ctx);
    }
}

impl Handler<TurnDone> for SessionRouter {
    type Result = ();

    fn handle(&mut self, done: TurnDone, ctx: &mut Context<Self>) {
        let Some(session) = self.sessions.get_mut(&done.key) else {
            return;
        };
        session.busy = false;
        session.approval = None;
        session.last_active = Instant::now();
        let o = &done.outcome;
        let keep = !(o.status == TurnStatus::Failed && o.messages.is_empty());
        if session.generation == done.generation && keep {
            let mut messages = Vec::with_capacity(o.messages.len() + 1);
            messages.push(done.user);
            messages.extend(o.messages.iter().cloned());
            let write = crate::sessions::append(&self.db, &done.key, messages, o.usage);
            let key = done.key.clone();
            actix::spawn(async move {
                if let Err(e) = write.await {
                    log::error!("session {key}: cannot store the turn: {e}");
                }
            });
        }
        // What waited behind this turn goes next: one message at a time with
        // `queue`; everything at once after an interrupt.
        let next = match self.settings.busy {
            BusyPolicy::Queue => session.queue.pop_front(),
            BusyPolicy::Interrupt => {
                let mut all: Vec<Incoming> = session.queue.drain(..).collect();
                all.pop().map(|mut last| {
                    if !all.is_empty() {
                        let mut texts: Vec<String> = all.into_iter().map(|i| i.msg.text).collect();
                        texts.push(last.msg.text);
                        last.msg.text = texts.join("\n\n");
                    }
                    last
                })
            }
        };
        match next {
            Some(inc) if !self.draining => self.start_turn(done.key, inc, ctx),
            Some(inc) => Self::reply(&inc, DRAINING_REPLY.into()),
            None => {}
        }
        self.count();
    }
}

impl Handler<ApprovalAsked> for SessionRouter {
    type Result = ();

    fn handle(&mut self, msg: ApprovalAsked, _: &mut Context<Self>) {
        let Some(session) = self.sessions.get_mut(&msg.key) else {
            return;
        };
        let Some(last) = session.last.clone() else {
            return;
        };
        // A newer question replaces an unanswered one (which is refused).
        session.approval = Some(msg.req.reply);
        Self::reply(
            &last,
            format!(
                "⚠️ The agent wants to run a command that looks dangerous ({}):\n\n{}\n\nReply /approve to run it or /deny to refuse.",
                msg.req.reason, msg.req.command
            ),
        );
    }
}

impl Handler<SetSettings> for SessionRouter {
    type Result = ();

    fn handle(&mut self, msg: SetSettings, _: &mut Context<Self>) {
        self.settings = msg.0;
    }
}

impl Handler<Drain> for SessionRouter {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.draining = true;
    }
}

impl Handler<InterruptAll> for SessionRouter {
    type Result = usize;

    fn handle(&mut self, _: InterruptAll, _: &mut Context<Self>) -> usize {
        let mut n = 0;
        for s in self.sessions.values_mut() {
            s.queue.clear();
            if s.busy
                && let Some(a) = &s.agent
            {
                a.do_send(Interrupt);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(300), "5 minutes");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(86_400), "24 hours");
        assert_eq!(human_duration(5 * 86_400), "5 days");
    }
}
