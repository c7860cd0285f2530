//! `TelegramActor`: the gateway's one connection to Telegram. Only this actor
//! talks to the Bot API; the rest of the gateway writes through its
//! [`Outbox`] and hears from it through the session router.
//!
//! At start it asks `getMe` (a rejected token marks the platform `failed`
//! with the reason and leaves every other front door running; a network
//! error is retried). Then it either registers the webhook (with its
//! mandatory secret; updates arrive through the HTTP server as [`Update`])
//! or long-polls `getUpdates`. The polling offset advances, and is stored in
//! `state.db`, only after an update was handed over, so a crash or restart
//! neither loses nor repeats one; de-duplication by chat and message id
//! covers redeliveries on top. Errors (a 409 from a second poller or a
//! webhook included) reconnect with exponential back-off capped at
//! [`MAX_BACKOFF`], and the state shows in `/health/detailed`.
//!
//! Outgoing calls are paced per chat (about one a second; twenty a minute in
//! groups). A send waits out `retry_after` and tries again, so a final answer
//! is never dropped for a rate limit; an edit hands the rate limit back to
//! the stream preview, which owns its back-off. Final texts go as HTML
//! converted from Markdown, and again as plain text if Telegram cannot
//! parse them. The token is never logged.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::outbox::{EditText, Outbox, SendText, Typing};
use super::session_router::{Incoming, SessionRouter};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::platform_status::PlatformStatus;
use crate::platforms::access::Dedup;
use crate::platforms::markdown::to_telegram_html;
use crate::platforms::pacing::{PaceRules, Pacer};
use crate::platforms::telegram::{self as tg, BotApi, BotIdentity, Parsed};
use crate::platforms::{ChatKind, Format, PlatformError};

/// Telegram's pacing: about one message a second per chat, twenty a minute per group.
pub const PACE: PaceRules = PaceRules {
    per_chat: Duration::from_secs(1),
    per_group: Duration::from_secs(3),
};
/// First wait after a failed poll or start; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Attempts of one `sendMessage` (rate limits and network errors) before giving up.
const MAX_SEND_ATTEMPTS: u32 = 8;
/// Wait between send attempts after a network error.
const SEND_RETRY_WAIT: Duration = Duration::from_secs(2);
/// The platform's name in logs, metrics and health.
const NAME: &str = "telegram";

/// One update from Telegram (long polling or the webhook); answers whether
/// it was accepted. Sent by: the polling loop, the webhook route.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Update(pub Value);

/// Who the bot is, once `getMe` answered. Sent by: the start-up task.
#[derive(Message)]
#[rtype(result = "()")]
struct Identity(BotIdentity);

/// How the actor is set up.
#[derive(Clone)]
pub struct TelegramSettings {
    pub api: BotApi,
    /// In groups, answer only messages that mention the bot or reply to it.
    pub require_mention: bool,
    /// Webhook mode: the public URL and its secret.
    pub webhook: Option<(String, String)>,
}

/// The Telegram platform.
pub struct TelegramActor {
    settings: TelegramSettings,
    router: Addr<SessionRouter>,
    db: Db,
    status: PlatformStatus,
    metrics: Arc<Metrics>,
    me: BotIdentity,
    pacer: Rc<RefCell<Pacer>>,
    dedup: Dedup,
}

impl TelegramActor {
    /// The actor; start it on an arbiter (its HTTP client is per thread).
    pub fn new(
        settings: TelegramSettings,
        router: Addr<SessionRouter>,
        db: Db,
        status: PlatformStatus,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            settings,
            router,
            db,
            status,
            metrics,
            me: BotIdentity::default(),
            pacer: Rc::new(RefCell::new(Pacer::default())),
            dedup: Dedup::default(),
        }
    }
}

/// Exponential back-off with a little jitter, capped at [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(FIRST_BACKOFF)
    }
    fn reset(&mut self) {
        self.0 = FIRST_BACKOFF;
    }
    /// The next wait.
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        let mut b = [0u8; 1];
        let jitter = getrandom::fill(&mut b).map_or(0, |()| u64::from(b[0]) * 2);
        (d + Duration::from_millis(jitter)).min(MAX_BACKOFF)
    }
}

/// Start-up and the polling loop (runs on the actor's arbiter).
async fn run(
    settings: TelegramSettings,
    me_to: Addr<TelegramActor>,
    db: Db,
    status: PlatformStatus,
) {
    let api = settings.api;
    let mut backoff = Backoff::new();
    status.set(NAME, "connecting", None);
    let me = loop {
        match api.call("getMe", &json!({}), tg::CALL_TIMEOUT).await {
            Ok(v) => {
                break BotIdentity {
                    id: v["id"].as_i64().unwrap_or_default(),
                    username: v["username"].as_str().unwrap_or_default().to_string(),
                };
            }
            Err(PlatformError::Unauthorized(e)) => {
                let why = format!("the bot token was rejected ({e}); check TELEGRAM_BOT_TOKEN");
                log::error!("{NAME}: {why}; the other front doors keep running");
                status.set(NAME, "failed", Some(why));
                return;
            }
            Err(e) => {
                let wait = backoff.next();
                log::warn!(
                    "{NAME}: cannot start ({e}); retrying in {} s",
                    wait.as_secs()
                );
                status.set(NAME, "connecting", Some(e.to_string()));
                tokio::time::sleep(wait).await;
            }
        }
    };
    log::info!("{NAME}: connected as @{}", me.username);
    if me_to.send(Identity(me)).await.is_err() {
        return;
    }
    if let Some((url, secret)) = &settings.webhook {
        backoff.reset();
        loop {
            let params =
                json!({"url": url, "secret_token": secret, "allowed_updates": tg::ALLOWED_UPDATES});
            match api.call("setWebhook", &params, tg::CALL_TIMEOUT).await {
                Ok(_) => {
                    log::info!("{NAME}: webhook registered; updates arrive over HTTP");
                    status.set(NAME, "connected", None);
                    return;
                }
                Err(e) => {
                    let wait = backoff.next();
                    log::warn!(
                        "{NAME}: setWebhook failed ({e}); retrying in {} s",
                        wait.as_secs()
                    );
                    status.set(NAME, "connecting", Some(e.to_string()));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    poll(&api, &me_to, &db, &status).await;
}

/// Long polling: `getUpdates` with the offset after the last accepted update.
async fn poll(api: &BotApi, me_to: &Addr<TelegramActor>, db: &Db, status: &PlatformStatus) {
    let mut offset = match tg::load_offset(db).await {
        Ok(o) => o,
        Err(e) => {
            log::warn!(
                "{NAME}: cannot read the stored polling offset ({e}); starting from Telegram's"
            );
            0
        }
    };
    let mut backoff = Backoff::new();
    let mut connected = false;
    // Runs for the life of the gateway; each round is bounded by the poll timeout.
    loop {
        let mut params =
            json!({"timeout": tg::POLL_TIMEOUT_S, "allowed_updates": tg::ALLOWED_UPDATES});
        if offset > 0 {
            params["offset"] = json!(offset);
        }
        match api
            .call("getUpdates", &params, tg::POLL_REQUEST_TIMEOUT)
            .await
        {
            Ok(Value::Array(updates)) => {
                if !connected {
                    status.set(NAME, "connected", None);
                    log::info!("{NAME}: polling for updates");
                    connected = true;
                }
                backoff.reset();
                let mut last_saved = None;
                for u in updates {
                    let Some(id) = u["update_id"].as_i64() else {
                        continue;
                    };
                    if id < offset {
                        continue;
                    }
                    match me_to.send(Update(u)).await {
                        Ok(true) => {}
                        _ => return, // The actor is gone: the gateway is stopping.
                    }
                    offset = id + 1;
                    last_saved = Some(tg::save_offset(db, offset));
                }
                // Every save was queued in order; waiting on the last one waits for all.
                if let Some(saved) = last_saved
                    && let Err(e) = saved.await
                {
                    log::warn!("{NAME}: cannot store the polling offset: {e}");
                }
            }
            Ok(other) => {
                log::warn!(
                    "{NAME}: getUpdates answered something other than a list: {}",
                    short(&other)
                );
                tokio::time::sleep(backoff.next()).await;
            }
            Err(PlatformError::RateLimited(wait)) => tokio::time::sleep(wait).await,
            Err(e) => {
                connected = false;
                let wait = backoff.next();
                match &e {
                    PlatformError::Conflict(_) => log::error!(
                        "{NAME}: 409 Conflict: another process is polling with this bot token, or a webhook is set \
                         (stop the other poller, or remove the webhook with deleteWebhook); retrying in {} s",
                        wait.as_secs()
                    ),
                    _ => log::warn!(
                        "{NAME}: polling failed ({e}); reconnecting in {} s",
                        wait.as_secs()
                    ),
                }
                let state = if matches!(e, PlatformError::Unauthorized(_)) {
                    "failed"
                } else {
                    "connecting"
                };
                status.set(NAME, state, Some(e.to_string()));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn short(v: &Value) -> String {
    v.to_string().chars().take(200).collect()
}

impl Actor for TelegramActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let fut = run(
            self.settings.clone(),
            ctx.address(),
            self.db.clone(),
            self.status.clone(),
        );
        ctx.spawn(fut.into_actor(self));
    }
}

impl Handler<Identity> for TelegramActor {
    type Result = ();

    fn handle(&mut self, msg: Identity, _: &mut Context<Self>) {
        self.me = msg.0;
    }
}

impl Handler<Update> for TelegramActor {
    type Result = bool;

    fn handle(&mut self, msg: Update, ctx: &mut Context<Self>) -> bool {
        match tg::parse_update(&msg.0, &self.me, self.settings.require_mention) {
            Parsed::Message { inbound, dedup } => {
                if !self.dedup.first_time(&dedup) {
                    log::debug!("{NAME}: message {dedup} seen before; ignored");
                    return true;
                }
                let out = Outbox::of(NAME, tg::LIMITS, &ctx.address());
                self.router.do_send(Incoming { msg: inbound, out });
            }
            Parsed::Skip(why) => log::debug!("{NAME}: update skipped: {why}"),
        }
        true
    }
}

impl Handler<SendText> for TelegramActor {
    type Result = ResponseFuture<Result<String, PlatformError>>;

    fn handle(&mut self, msg: SendText, _: &mut Context<Self>) -> Self::Result {
        let api = self.settings.api.clone();
        let pacer = self.pacer.clone();
        Box::pin(async move {
            let SendText {
                chat,
                text,
                format,
                reply_to,
            } = msg;
            let mut use_html = format == Format::Markdown;
            let html = if use_html {
                to_telegram_html(&text)
            } else {
                String::new()
            };
            let group = chat.kind != ChatKind::Dm;
            let mut last = PlatformError::Unavailable("no attempt made".into());
            for attempt in 1..=MAX_SEND_ATTEMPTS {
                let slot = pacer
                    .borrow_mut()
                    .reserve(&chat.id, group, PACE, Instant::now());
                tokio::time::sleep_until(slot).await;
                let body = if use_html { &html } else { &text };
                let params = tg::send_params(&chat, body, use_html, reply_to.as_deref());
                match api.call("sendMessage", &params, tg::CALL_TIMEOUT).await {
                    Ok(v) => return Ok(v["message_id"].as_i64().unwrap_or_default().to_string()),
                    Err(PlatformError::RateLimited(wait)) => {
                        log::info!(
                            "{NAME}: rate limited in chat {}; sending again in {wait:?}",
                            chat.id
                        );
                        pacer.borrow_mut().hold(&chat.id, Instant::now() + wait);
                        last = PlatformError::RateLimited(wait);
                    }
                    Err(e) if use_html && tg::is_parse_error(&e) => {
                        log::info!(
                            "{NAME}: Telegram could not parse the formatted text; sending it plain"
                        );
                        use_html = false;
                        last = e;
                    }
                    Err(e @ PlatformError::Unavailable(_)) if attempt < MAX_SEND_ATTEMPTS => {
                        log::warn!("{NAME}: sendMessage failed ({e}); trying again");
                        tokio::time::sleep(SEND_RETRY_WAIT).await;
                        last = e;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last)
        })
    }
}

impl Handler<EditText> for TelegramActor {
    type Result = ResponseFuture<Result<(), PlatformError>>;

    fn handle(&mut self, msg: EditText, _: &mut Context<Self>) -> Self::Result {
        let api = self.settings.api.clone();
        let pacer = self.pacer.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let group = msg.chat.kind != ChatKind::Dm;
            let slot = pacer
                .borrow_mut()
                .reserve(&msg.chat.id, group, PACE, Instant::now());
            tokio::time::sleep_until(slot).await;
            let mut use_html = msg.format == Format::Markdown;
            let html = if use_html {
                to_telegram_html(&msg.text)
            } else {
                String::new()
            };
            let result = loop {
                let body = if use_html { &html } else { &msg.text };
                let params = tg::edit_params(&msg.chat, &msg.message_id, body, use_html);
                match api.call("editMessageText", &params, tg::CALL_TIMEOUT).await {
                    Ok(_) => break Ok(()),
                    Err(e) if tg::is_not_modified(&e) => break Ok(()),
                    Err(e) if use_html && tg::is_parse_error(&e) => use_html = false,
                    Err(PlatformError::RateLimited(wait)) => {
                        pacer.borrow_mut().hold(&msg.chat.id, Instant::now() + wait);
                        break Err(PlatformError::RateLimited(wait));
                    }
                    Err(e) => break Err(e),
                }
            };
            let outcome = match &result {
                Ok(()) => "ok",
                Err(PlatformError::RateLimited(_)) => "rate_limited",
                Err(_) => "failed",
            };
            metrics.inc(
                "hermes_stream_preview_edits_total",
                vec![("platform", NAME.into()), ("outcome", outcome.into())],
                1,
            );
            result
        })
    }
}

impl Handler<Typing> for TelegramActor {
    type Result = ();

    fn handle(&mut self, msg: Typing, ctx: &mut Context<Self>) {
        let api = self.settings.api.clone();
        ctx.spawn(
            async move {
                let params = tg::typing_params(&msg.chat);
                if let Err(e) = api.call("sendChatAction", &params, tg::CALL_TIMEOUT).await {
                    log::debug!("{NAME}: typing indicator failed: {e}");
                }
            }
            .into_actor(self),
        );
    }
}
