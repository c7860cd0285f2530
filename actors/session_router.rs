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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::agent::{AgentActor, Interrupt};
use super::outbox::Outbox;
use super::pool::ArbiterPool;
use super::stream_preview::PreviewSettings;
use super::turn_driver::{self, Driven, Driver};
use crate::agent::{AgentSettings, TurnOutcome, TurnStatus};
use crate::config::{BusyPolicy, Loaded};
use crate::conversation::commands::{self, Command, HELP};
use crate::conversation::session::{Admit, Session};
use crate::deliveries::Deliveries;
use crate::metrics::Metrics;
use crate::openai::Message;
use crate::platforms::access::{Allowlist, DenyNotices};
use crate::platforms::{ChatKind, Format, Inbound};
use crate::store::Store;
use crate::tools::{ApprovalRequest, Approver, SessionTools};
use crate::upstream::UpstreamSettings;

/// Sessions idle this long leave memory (their history stays on disk).
pub const EVICT_AFTER: Duration = Duration::from_secs(3600);
/// How often idle sessions are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// How often undelivered answers are checked for one older than a minute.
const OLD_DELIVERY_CHECK: Duration = Duration::from_secs(15);
/// Dangerous commands waiting for an answer, per session, before the agent waits.
const APPROVAL_QUEUE: usize = 4;
/// Said to messages that arrive while the gateway shuts down.
const DRAINING_REPLY: &str = "Restarting, please resend in a moment.";

/// The router's settings for one platform.
#[derive(Clone)]
pub struct PlatformSettings {
    /// The agent, or why there is no upstream.
    pub agent: Result<Arc<AgentSettings>, String>,
    pub allow: Allowlist,
    pub preview: PreviewSettings,
}

/// The router's settings; replaced as a whole on reload.
#[derive(Clone)]
pub struct RouterSettings {
    /// Per platform, by registry name.
    pub platforms: HashMap<&'static str, PlatformSettings>,
    pub busy: BusyPolicy,
    /// `None`: sessions never expire.
    pub idle: Option<Duration>,
    pub model: String,
}

impl RouterSettings {
    /// From a loaded configuration: every platform of the registry.
    pub fn from_loaded(loaded: &Loaded) -> Self {
        let c = &loaded.config;
        let upstream = UpstreamSettings::from_config(c);
        let model = upstream
            .as_ref()
            .map(|u| u.model.clone())
            .unwrap_or_default();
        let platforms = crate::platforms::ALL
            .iter()
            .map(|p| {
                let agent = upstream.clone().map(|u| {
                    Arc::new(AgentSettings::for_front_door(
                        loaded,
                        p.name,
                        u,
                        &c.toolsets_for(p.name),
                    ))
                });
                let settings = PlatformSettings {
                    agent,
                    allow: Allowlist::from_config(c, p.name),
                    preview: PreviewSettings {
                        live: c.streaming.enabled_for(p.name),
                        min_tokens: c.streaming.min_tokens,
                        edit_interval: Duration::from_secs_f64(c.streaming.edit_interval),
                        cursor: c.streaming.cursor.clone(),
                    },
                };
                (p.name, settings)
            })
            .collect();
        Self {
            platforms,
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

/// One chat's session: its state machine plus what lives beside it.
struct Entry {
    state: Session<Incoming>,
    agent: Option<Addr<AgentActor>>,
    /// The dangerous command waiting for `/approve` or `/deny`.
    approval: Option<oneshot::Sender<bool>>,
    /// Where the latest message came from (approval prompts go there).
    last: Option<Incoming>,
}

impl Entry {
    fn new() -> Self {
        Self {
            state: Session::new(Instant::now()),
            agent: None,
            approval: None,
            last: None,
        }
    }

    /// Interrupts the running turn, if any.
    fn interrupt(&self) {
        if let Some(a) = &self.agent {
            a.do_send(Interrupt);
        }
    }
}

/// Messages that piled up behind an interrupted turn, as one input: the
/// texts joined, answered as a reply to the last.
fn merge(earlier: Vec<Incoming>, mut last: Incoming) -> Incoming {
    let mut texts: Vec<String> = earlier.into_iter().map(|i| i.msg.text).collect();
    texts.push(std::mem::take(&mut last.msg.text));
    last.msg.text = texts.join("\n\n");
    last
}

/// The router.
pub struct SessionRouter {
    settings: Arc<RouterSettings>,
    /// Where session transcripts are kept.
    store: Store,
    pool: ArbiterPool,
    metrics: Arc<Metrics>,
    stats: Arc<RouterStats>,
    /// Each chat answer's delivery obligation is opened through this.
    deliveries: Deliveries,
    sessions: HashMap<String, Entry>,
    denied: DenyNotices,
    draining: bool,
}

impl SessionRouter {
    /// A router over the transcripts in `store`, starting agents and
    /// previews on `pool`.
    pub fn new(
        settings: Arc<RouterSettings>,
        store: Store,
        pool: ArbiterPool,
        metrics: Arc<Metrics>,
        stats: Arc<RouterStats>,
        deliveries: Deliveries,
    ) -> Self {
        Self {
            settings,
            store,
            pool,
            metrics,
            stats,
            deliveries,
            sessions: HashMap::new(),
            denied: DenyNotices::default(),
            draining: false,
        }
    }

    fn count(&self) {
        let turns = self.sessions.values().filter(|s| s.state.is_busy()).count();
        self.stats.turns.store(turns, Ordering::Relaxed);
        self.stats
            .sessions
            .store(self.sessions.len(), Ordering::Relaxed);
    }

    fn entry(&mut self, key: &str) -> &mut Entry {
        self.sessions
            .entry(key.to_string())
            .or_insert_with(Entry::new)
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

    /// Answers a command, at once, even while a turn runs.
    fn command(&mut self, key: &str, cmd: Command, inc: &Incoming) {
        let model = self.model();
        let db = self.store.clone();
        let entry = self.entry(key);
        match cmd {
            Command::New => {
                if entry.state.reset(Instant::now()) {
                    entry.interrupt();
                }
                entry.agent = None;
                entry.approval = None;
                let (key, inc) = (key.to_string(), inc.clone());
                actix::spawn(async move {
                    if let Err(e) = crate::sessions::reset(&db, &key).await {
                        log::warn!("session {key}: reset failed: {e}");
                    }
                    Self::reply(&inc, "✨ New conversation started.".into());
                });
            }
            Command::Stop => {
                if let Some(tx) = entry.approval.take() {
                    let _ = tx.send(false);
                }
                let text = if entry.state.stop() && entry.agent.is_some() {
                    entry.interrupt();
                    "⚡ Stopping."
                } else {
                    "Nothing is running."
                };
                Self::reply(inc, text.into());
            }
            Command::Approve | Command::Deny => {
                let yes = cmd == Command::Approve;
                let answered = entry.approval.take().is_some_and(|tx| tx.send(yes).is_ok());
                let text = match (answered, yes) {
                    (true, true) => "✅ Approved: running it.",
                    (true, false) => "❌ Denied.",
                    (false, _) => "Nothing is waiting for approval.",
                };
                Self::reply(inc, text.into());
            }
            Command::Help => Self::reply(inc, HELP.into()),
            Command::Model => Self::reply(inc, format!("Model: {model}")),
            Command::Title(title) => {
                let (key, inc) = (key.to_string(), inc.clone());
                actix::spawn(async move {
                    let text = if title.is_empty() {
                        match crate::sessions::info(&db, &key)
                            .await
                            .ok()
                            .flatten()
                            .and_then(|i| i.title)
                        {
                            Some(t) => format!("This conversation is titled: {t}"),
                            None => {
                                "This conversation has no title. Name it with /title <text>.".into()
                            }
                        }
                    } else {
                        match crate::sessions::set_title(&db, &key, &title).await {
                            Ok(()) => format!("Titled: {title}"),
                            Err(e) => {
                                log::warn!("session {key}: cannot set the title: {e}");
                                "Could not save the title; try again.".into()
                            }
                        }
                    };
                    Self::reply(&inc, text);
                });
            }
            Command::Status => {
                let running = entry.state.is_busy();
                let (key, inc) = (key.to_string(), inc.clone());
                actix::spawn(async move {
                    let info = crate::sessions::info(&db, &key)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    let now = crate::clock::unix_now();
                    Self::reply(
                        &inc,
                        commands::status_text(&key, &info, &model, running, now),
                    );
                });
            }
        }
    }

    /// A command for every session of a chat's threads (typed where no
    /// thread can be named): `/new` resets them all, `/stop` stops what runs
    /// in them, `/approve` and `/deny` answer what waits in them. Sessions
    /// of other chats are never touched.
    fn whole_chat_command(&mut self, prefix: &str, cmd: Option<Command>, inc: &Incoming) {
        let under =
            |k: &str| k == prefix || (k.starts_with(prefix) && k[prefix.len()..].starts_with(':'));
        let keys: Vec<String> = self.sessions.keys().filter(|k| under(k)).cloned().collect();
        let now = Instant::now();
        match cmd {
            Some(Command::New) => {
                for k in &keys {
                    let entry = self.entry(k);
                    if entry.state.reset(now) {
                        entry.interrupt();
                    }
                    entry.agent = None;
                    entry.approval = None;
                }
                let (db, prefix, inc) = (self.store.clone(), prefix.to_string(), inc.clone());
                actix::spawn(async move {
                    let stored = crate::sessions::keys_under(&db, &prefix)
                        .await
                        .unwrap_or_else(|e| {
                            log::warn!("sessions under {prefix}: cannot list them: {e}");
                            Vec::new()
                        });
                    for k in &stored {
                        if let Err(e) = crate::sessions::reset(&db, k).await {
                            log::warn!("session {k}: reset failed: {e}");
                        }
                    }
                    Self::reply(
                        &inc,
                        "✨ New conversations: every thread here starts fresh.".into(),
                    );
                });
            }
            Some(Command::Stop) => {
                let mut stopped = 0;
                for k in &keys {
                    let entry = self.entry(k);
                    if let Some(tx) = entry.approval.take() {
                        let _ = tx.send(false);
                    }
                    if entry.state.stop() && entry.agent.is_some() {
                        entry.interrupt();
                        stopped += 1;
                    }
                }
                let text = match stopped {
                    0 => "Nothing is running.".to_string(),
                    1 => "⚡ Stopping.".to_string(),
                    n => format!("⚡ Stopping {n} conversations."),
                };
                Self::reply(inc, text);
            }
            Some(c @ (Command::Approve | Command::Deny)) => {
                let yes = c == Command::Approve;
                let mut answered = 0;
                for k in &keys {
                    if self
                        .entry(k)
                        .approval
                        .take()
                        .is_some_and(|tx| tx.send(yes).is_ok())
                    {
                        answered += 1;
                    }
                }
                let text = match (answered, yes) {
                    (0, _) => "Nothing is waiting for approval.",
                    (_, true) => "✅ Approved: running it.",
                    (_, false) => "❌ Denied.",
                };
                Self::reply(inc, text.into());
            }
            Some(Command::Status) => {
                let running = keys
                    .iter()
                    .filter(|k| self.entry(k).state.is_busy())
                    .count();
                let text = format!(
                    "Model: {}\nConversations here in memory: {}, running: {running}.\nAsk in a thread for its own status.",
                    self.model(),
                    keys.len()
                );
                Self::reply(inc, text);
            }
            Some(Command::Title(_)) => Self::reply(
                inc,
                "A title belongs to one conversation: set it from a direct message.".into(),
            ),
            Some(c @ (Command::Help | Command::Model)) => self.command(prefix, c, inc),
            None => Self::reply(inc, HELP.into()),
        }
    }

    fn model(&self) -> String {
        if self.settings.model.is_empty() {
            "none configured (set HERMES_MODEL)".into()
        } else {
            self.settings.model.clone()
        }
    }

    /// Starts a turn for `inc` in session `key` (which `admit` made busy).
    fn start_turn(&mut self, key: String, inc: Incoming, ctx: &mut Context<Self>) {
        let Some(ps) = self.settings.platforms.get(inc.msg.platform).cloned() else {
            log::error!(
                "{}: no settings for this platform; message dropped",
                inc.msg.platform
            );
            if let Some(e) = self.sessions.get_mut(&key) {
                e.state.abandon();
            }
            return;
        };
        let Some(entry) = self.sessions.get_mut(&key) else {
            return;
        };
        let settings = match ps.agent {
            Ok(s) => s,
            Err(reason) => {
                entry.state.abandon();
                Self::reply(&inc, format!("⚠️ The agent is not available: {reason}"));
                return;
            }
        };
        entry.last = Some(inc.clone());
        let generation = entry.state.generation();
        let idle = self.settings.idle;
        // How long the session has been idle, when that is long enough to
        // start fresh: judged in memory for a loaded session, by its last
        // stored turn otherwise.
        let idle_in_memory = entry
            .agent
            .as_ref()
            .and_then(|_| entry.state.stale_for(Instant::now(), idle))
            .map(|d| d.as_secs());
        if idle_in_memory.is_some() {
            entry.agent = None;
        }
        let need_agent = entry.agent.is_none();
        let db = self.store.clone();
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
            let pool = act.pool.clone();
            let Some(entry) = act.sessions.get_mut(&key) else {
                return;
            };
            let (mut history, stale) = match res {
                Ok(x) => x,
                Err(e) => {
                    log::error!("session {key}: cannot load its history: {e}");
                    entry.state.abandon();
                    Self::reply(
                        &inc,
                        "⚠️ The conversation store failed; try again in a moment.".into(),
                    );
                    act.count();
                    return;
                }
            };
            if entry.state.generation() != generation {
                // Reset (`/new`) while loading: the agent, if any, was
                // dropped; start empty.
                history = Some(Vec::new());
            }
            let agent = match (&entry.agent, history) {
                (Some(a), _) => a.clone(),
                (None, history) => {
                    let (tx, rx) = mpsc::channel(APPROVAL_QUEUE);
                    let tools = SessionTools {
                        approver: Some(Approver::Ask(tx)),
                        ..SessionTools::default()
                    };
                    let a = AgentActor::start_for_session(
                        &pool,
                        settings,
                        history.unwrap_or_default(),
                        tools,
                    );
                    forward_approvals(key.clone(), rx, ctx.address());
                    entry.agent = Some(a.clone());
                    a
                }
            };
            let notice = stale.map(|secs| {
                format!(
                    "Started a new conversation after {} of inactivity.",
                    commands::human_duration(secs)
                )
            });
            log::debug!("{}: answering in {key}", inc.out.platform);
            let driver = Driver {
                agent,
                msg: inc.msg,
                out: inc.out,
                preview: ps.preview,
                pool,
                notice,
                deliveries: act.deliveries.clone(),
            };
            let (router, generation) = (ctx.address(), entry.state.generation());
            turn_driver::spawn(driver, move |d: Driven| {
                router.do_send(TurnDone {
                    key,
                    generation,
                    user: d.user,
                    outcome: Box::new(d.outcome),
                });
            });
            act.count();
        }));
        self.count();
    }
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

impl Actor for SessionRouter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_EVERY, |act, _| {
            let now = Instant::now();
            act.sessions
                .retain(|_, s| s.approval.is_some() || !s.state.evictable(now, EVICT_AFTER));
            act.count();
        });
        ctx.run_interval(OLD_DELIVERY_CHECK, |act, _| {
            for (id, age) in act.metrics.deliveries.newly_old(crate::clock::unix_now()) {
                log::warn!(
                    "delivery {id}: an answer has waited {age} s to be delivered (the platform is failing; it is tried again)"
                );
            }
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
        let allow = self.settings.platforms.get(m.platform).map(|p| &p.allow);
        if !allow.is_some_and(|a| a.allows(&m.user_id)) {
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
                && let Some(a) = allow
            {
                Self::reply(&inc, a.private_reply(&m.user_id));
            }
            return;
        }
        let key = m.chat.session_key(m.platform);
        if m.whole_chat {
            self.whole_chat_command(&key, commands::parse(&m.text), &inc);
            return;
        }
        if let Some(cmd) = commands::parse(&m.text) {
            self.command(&key, cmd, &inc);
            return;
        }
        if self.draining {
            Self::reply(&inc, DRAINING_REPLY.into());
            return;
        }
        let policy = self.settings.busy;
        let entry = self.entry(&key);
        match entry.state.admit(inc, policy) {
            Admit::Start(inc) => self.start_turn(key, inc, ctx),
            Admit::Wait { interrupt } => {
                if interrupt {
                    entry.interrupt();
                }
            }
        }
    }
}

impl Handler<TurnDone> for SessionRouter {
    type Result = ();

    fn handle(&mut self, done: TurnDone, ctx: &mut Context<Self>) {
        let policy = self.settings.busy;
        let Some(entry) = self.sessions.get_mut(&done.key) else {
            return;
        };
        entry.approval = None;
        let o = &done.outcome;
        let keep = !(o.status == TurnStatus::Failed && o.messages.is_empty());
        if entry.state.generation() == done.generation && keep {
            let mut messages = Vec::with_capacity(o.messages.len() + 1);
            messages.push(done.user);
            messages.extend(o.messages.iter().cloned());
            let write = crate::sessions::append(&self.store, &done.key, messages, o.usage, None);
            let key = done.key.clone();
            actix::spawn(async move {
                if let Err(e) = write.await {
                    log::error!("session {key}: cannot store the turn: {e}");
                }
            });
        }
        // What waited behind this turn goes next.
        match entry.state.finished(Instant::now(), policy, merge) {
            Some(inc) if !self.draining => self.start_turn(done.key, inc, ctx),
            Some(inc) => {
                entry.state.abandon();
                Self::reply(&inc, DRAINING_REPLY.into());
            }
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
            if s.state.stop() && s.agent.is_some() {
                s.interrupt();
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    //! The router at actor level: a fake platform outbox (no pacing, no
    //! network) and the scripted fake model server, with a fast live
    //! preview, so each rule is checked without paying a platform's rhythm.
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::actors::fake_chat::{FakePlatform, Log, caps};
    use crate::config::{ApprovalMode, Config, Env};
    use crate::platforms::{Capabilities, ChatRef};
    use crate::testing::fake_upstream::{FakeUpstream, Reply, ScriptedCall};

    /// The platform name the tests' messages come from.
    const TEST: &str = "test";
    /// No test waits longer than this for an effect.
    const LIMIT: Duration = Duration::from_secs(15);

    struct Rig {
        router: Addr<SessionRouter>,
        out: Outbox,
        log: Rc<RefCell<Log>>,
        fake: FakeUpstream,
        pool: ArbiterPool,
        next_id: u32,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.pool.stop();
        }
    }

    fn rig_with(
        script: Vec<Reply>,
        capabilities: Capabilities,
        tweak: impl FnOnce(&mut Config),
    ) -> Rig {
        let fake = FakeUpstream::start(script);
        let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cwd = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut c = Config::defaults();
        c.model.base_url = Some(fake.url());
        c.model.default = Some("fake-model".into());
        c.model.response_timeout = 5.0;
        c.model.chunk_timeout = 5.0;
        c.terminal.cwd = Some(cwd.path().to_path_buf());
        c.gateway.allow_all_users = true;
        c.streaming.enabled = true;
        c.streaming.edit_interval = 0.05;
        c.streaming.min_tokens = 1;
        tweak(&mut c);
        let loaded = Loaded {
            config: c,
            home: home.path().to_path_buf(),
            config_path: home.path().join("config.yaml"),
            config_file_found: false,
            env: Env::default(),
        };
        let mut settings = RouterSettings::from_loaded(&loaded);
        let mut ps = settings.platforms[crate::platforms::ALL[0].name].clone();
        ps.allow = Allowlist::from_config(&loaded.config, crate::platforms::ALL[0].name);
        settings.platforms.insert(TEST, ps);
        let db =
            crate::db::Db::open(&home.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
        let db2 = db.clone();
        let pool = ArbiterPool::new(Some(1));
        let router = SessionRouter::new(
            Arc::new(settings),
            db.into(),
            pool.clone(),
            Arc::new(Metrics::default()),
            Arc::new(RouterStats::default()),
            Deliveries::new(db2.into(), Arc::default(), "test", "gw"),
        )
        .start();
        let log = Rc::new(RefCell::new(Log::default()));
        let platform = FakePlatform::new(log.clone(), Duration::ZERO).start();
        let out = Outbox::of(TEST, capabilities, &platform);
        Rig {
            router,
            out,
            log,
            fake,
            pool,
            next_id: 0,
            _dirs: (home, cwd),
        }
    }

    fn rig(script: Vec<Reply>) -> Rig {
        rig_with(script, caps(4096), |_| {})
    }

    impl Rig {
        /// A direct message from `user`.
        fn say(&mut self, user: &str, text: &str) {
            self.next_id += 1;
            let msg = Inbound {
                platform: TEST,
                chat: ChatRef {
                    id: user.into(),
                    kind: ChatKind::Dm,
                    thread: None,
                },
                user_id: user.into(),
                message_id: self.next_id.to_string(),
                text: text.into(),
                whole_chat: false,
            };
            self.router.do_send(Incoming {
                msg,
                out: self.out.clone(),
            });
        }

        /// A message in `thread` of channel `chat`, or (`thread: None`) a
        /// command for the whole channel.
        fn say_in(&mut self, chat: &str, thread: Option<&str>, text: &str) {
            self.next_id += 1;
            let msg = Inbound {
                platform: TEST,
                chat: ChatRef {
                    id: chat.into(),
                    kind: ChatKind::Channel,
                    thread: thread.map(String::from),
                },
                user_id: "1".into(),
                message_id: self.next_id.to_string(),
                text: text.into(),
                whole_chat: thread.is_none(),
            };
            self.router.do_send(Incoming {
                msg,
                out: self.out.clone(),
            });
        }

        /// What every message written so far shows now, oldest first.
        fn sent(&self) -> Vec<String> {
            let log = self.log.borrow();
            let mut ids: Vec<u32> = log.texts.keys().filter_map(|k| k.parse().ok()).collect();
            ids.sort_unstable();
            ids.iter()
                .filter_map(|id| log.texts.get(&id.to_string()).cloned())
                .collect()
        }

        /// Waits (bounded) until a sent text satisfies `f`; returns it.
        async fn until_sent(&self, f: impl Fn(&str) -> bool) -> String {
            let deadline = Instant::now() + LIMIT;
            loop {
                if let Some(t) = self.sent().into_iter().find(|t| f(t)) {
                    return t;
                }
                assert!(
                    Instant::now() < deadline,
                    "not sent; sent so far: {:?}",
                    self.sent()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        /// Waits (bounded) until the model server got `n` requests.
        async fn until_requests(&self, n: usize) {
            let deadline = Instant::now() + LIMIT;
            while self.fake.requests().len() < n {
                assert!(
                    Instant::now() < deadline,
                    "the model got {} requests",
                    self.fake.requests().len()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        /// The user texts of the upstream request number `i`.
        fn user_texts(&self, i: usize) -> Vec<String> {
            self.fake.requests()[i].body["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter(|x| x["role"] == "user")
                        .map(|x| x["content"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        }
    }

    fn slow() -> Reply {
        Reply::numbered_stream(100, Duration::from_millis(20), Duration::from_millis(50))
    }

    /// An answer streamed at once.
    fn says(text: &str) -> Reply {
        Reply::text_stream(&[text], Duration::ZERO, Duration::ZERO, (1, 1))
    }

    #[actix::test]
    async fn commands_are_answered_at_once_even_mid_turn() {
        let mut r = rig(vec![slow()]);
        r.say("1", "talk for a while");
        r.until_requests(1).await;
        r.say("1", "/status");
        r.until_sent(|t| t.contains("Turn running: yes")).await;
        r.say("1", "/help");
        r.until_sent(|t| t.starts_with("Commands:")).await;
        // The answer must have begun, or there is no partial text to mark.
        r.until_sent(|t| t.starts_with("w0 ")).await;
        r.say("1", "/stop");
        r.until_sent(|t| t == "⚡ Stopping.").await;
        let partial = r.until_sent(|t| t.ends_with(" (interrupted)")).await;
        assert!(partial.starts_with("w0 "), "{partial}");
        r.say("1", "/stop");
        r.until_sent(|t| t == "Nothing is running.").await;
        assert_eq!(r.fake.requests().len(), 1, "commands never reach the model");
    }

    #[actix::test]
    async fn whole_channel_commands_reach_every_thread_of_that_channel_only() {
        let mut r = rig(vec![slow(), slow(), slow()]);
        r.say_in("C1", Some("t1"), "go");
        r.say_in("C1", Some("t2"), "go");
        r.say_in("C10", Some("t1"), "go");
        r.until_requests(3).await;
        r.say_in("C1", None, "/stop");
        r.until_sent(|t| t == "⚡ Stopping 2 conversations.").await;
        // Barrier: C10's turn was still running, so this stops it.
        r.say_in("C10", None, "/stop");
        r.until_sent(|t| t == "⚡ Stopping.").await;
        r.say_in("C1", None, "/status");
        r.until_sent(|t| t.contains("Conversations here in memory: 2"))
            .await;
        r.say_in("C1", None, "hello?");
        r.until_sent(|t| t.starts_with("Commands:")).await;
        assert_eq!(r.fake.requests().len(), 3, "nothing reached the model");
    }

    #[actix::test]
    async fn messages_during_a_turn_interrupt_it_and_are_answered_together() {
        let mut r = rig(vec![slow(), says("both answered")]);
        r.say("1", "first");
        r.until_requests(1).await;
        r.say("1", "second");
        r.say("1", "third");
        r.until_sent(|t| t == "both answered").await;
        assert_eq!(r.fake.requests().len(), 2);
        let texts = r.user_texts(1);
        assert_eq!(
            texts.first().map(String::as_str),
            Some("first"),
            "{texts:?}"
        );
        assert_eq!(texts.last().map(String::as_str), Some("second\n\nthird"));
    }

    #[actix::test]
    async fn with_queue_each_message_waits_its_turn() {
        let script = vec![
            Reply::text_stream(&["one"], Duration::from_millis(300), Duration::ZERO, (1, 1)),
            says("two"),
            says("three"),
        ];
        let mut r = rig_with(script, caps(4096), |c| {
            c.gateway.busy_policy = BusyPolicy::Queue
        });
        r.say("1", "a");
        r.until_requests(1).await;
        r.say("1", "b");
        r.say("1", "c");
        r.until_sent(|t| t == "three").await;
        let answers: Vec<String> = r.sent().into_iter().filter(|t| t.len() <= 5).collect();
        assert_eq!(
            answers,
            vec!["one", "two", "three"],
            "nothing interrupted, in order"
        );
        assert_eq!(r.user_texts(2).last().map(String::as_str), Some("c"));
    }

    #[actix::test]
    async fn strangers_get_the_private_reply_once_and_never_reach_the_model() {
        let mut r = rig_with(vec![says("hello friend")], caps(4096), |c| {
            c.gateway.allow_all_users = false;
            c.gateway.allowed_users = vec!["friend".into()];
        });
        r.say("stranger", "hi");
        r.until_sent(|t| t.contains("This bot is private") && t.contains("stranger"))
            .await;
        r.say("stranger", "hello?");
        // Barrier: a later message from a friend is answered.
        r.say("friend", "hi");
        r.until_sent(|t| t == "hello friend").await;
        let private = r
            .sent()
            .iter()
            .filter(|t| t.contains("This bot is private"))
            .count();
        assert_eq!(private, 1, "{:?}", r.sent());
        assert_eq!(
            r.fake.requests().len(),
            1,
            "only the friend reached the model"
        );
    }

    #[actix::test]
    async fn new_starts_fresh_and_the_old_turn_is_not_stored() {
        let mut r = rig(vec![slow(), says("fresh")]);
        r.say("1", "remember the old topic");
        r.until_requests(1).await;
        r.say("1", "/new");
        r.until_sent(|t| t == "✨ New conversation started.").await;
        r.say("1", "what now?");
        r.until_sent(|t| t == "fresh").await;
        assert_eq!(
            r.user_texts(1),
            vec!["what now?"],
            "the interrupted turn of the old conversation is not history"
        );
    }

    #[actix::test]
    async fn dangerous_commands_wait_for_approve_or_deny() {
        let touch = |f: &str| {
            Reply::tool_stream(
                &[ScriptedCall::new(
                    "c",
                    "terminal",
                    serde_json::json!({"command": format!("touch {f}")}),
                )],
                (1, 1),
            )
        };
        let script = vec![
            touch("yes-marker"),
            says("ran it"),
            touch("no-marker"),
            says("did not"),
        ];
        let mut r = rig_with(script, caps(4096), |c| {
            c.approvals.mode = ApprovalMode::Ask;
            c.approvals.patterns = vec![r"\btouch\b".into()];
        });
        let cwd = r._dirs.1.path().to_path_buf();
        r.say("1", "make a marker");
        r.until_sent(|t| t.contains("Reply /approve")).await;
        assert!(!cwd.join("yes-marker").exists());
        r.say("1", "/approve");
        r.until_sent(|t| t == "ran it").await;
        assert!(cwd.join("yes-marker").exists());
        r.say("1", "another");
        r.until_sent(|t| t.contains("touch no-marker")).await;
        r.say("1", "/deny");
        r.until_sent(|t| t == "did not").await;
        assert!(!cwd.join("no-marker").exists());
        r.say("1", "/approve");
        r.until_sent(|t| t == "Nothing is waiting for approval.")
            .await;
    }

    #[actix::test]
    async fn typing_follows_the_platforms_cadence_or_is_never_shown() {
        let every = Duration::from_millis(100);
        let with = Capabilities {
            typing_every: Some(every),
            ..caps(4096)
        };
        let slowish = || {
            Reply::text_stream(
                &["done"],
                Duration::from_millis(600),
                Duration::ZERO,
                (1, 1),
            )
        };
        let mut r = rig_with(vec![slowish()], with, |_| {});
        r.say("1", "hi");
        r.until_sent(|t| t == "done").await;
        let shown = r.log.borrow().typing.len();
        assert!(shown >= 3, "refreshed while the turn ran: {shown}");

        let without = Capabilities {
            typing_every: None,
            ..caps(4096)
        };
        let mut r = rig_with(vec![slowish()], without, |_| {});
        r.say("1", "hi");
        r.until_sent(|t| t == "done").await;
        assert!(
            r.log.borrow().typing.is_empty(),
            "no indicator on this platform"
        );
    }

    #[actix::test]
    async fn while_draining_messages_are_told_to_come_back() {
        let mut r = rig(vec![]);
        r.router.do_send(Drain);
        r.say("1", "hi");
        r.until_sent(|t| t == DRAINING_REPLY).await;
        assert!(r.fake.requests().is_empty());
    }
}
