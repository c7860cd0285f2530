//! `TelegramActor`: the gateway's one connection to Telegram, and the only
//! code that talks to the Bot API (its wire format is in
//! `platforms/telegram.rs`). Outgoing messages go through the platform's
//! courier over [`TelegramWire`]; incoming ones reach the session router.
//!
//! At start it asks `getMe` (a rejected token marks the platform `failed`
//! with the reason and leaves every other front door running; a network
//! error is retried). Then it either registers the webhook (with its
//! mandatory secret; updates arrive through the HTTP server's inbound hook
//! as [`HookDelivery`]) or long-polls `getUpdates`. The polling offset
//! advances, and is stored in `state.db`, only after an update was handed
//! over, so a crash or restart neither loses nor repeats one;
//! de-duplication by chat and message id covers redeliveries on top.
//! Errors (a 409 from a second poller or a webhook included) reconnect with
//! exponential back-off capped at [`MAX_BACKOFF`], and the state shows in
//! `/health/detailed`. The token is never logged.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::courier::CourierActor;
use super::hook::{HookDelivery, HookReply, InboundHook, url_path};
use super::outbox::Outbox;
use super::start::{PlatformStart, Started};
use crate::backoff::Backoff;
use crate::platform_status::LinkState;
use crate::platforms::access::Dedup;
use crate::platforms::consumer::Held;
use crate::platforms::courier::{Call, Wire};
use crate::platforms::telegram::{self as tg, BotIdentity, NAME};
use crate::platforms::{ChatRef, PlatformError};

/// First wait after a failed poll or start; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Connect timeout for the Bot API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest Bot API answer read (a batch of 100 updates fits easily).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// The state key of the polling offset.
const OFFSET_KEY: &str = "offset";

/// A Bot API endpoint with its token.
#[derive(Clone)]
pub struct BotApi {
    base: String,
    token: String,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApi")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl BotApi {
    /// An endpoint at `base` (no trailing slash needed) with `token`.
    pub fn new(base: Option<&str>, token: &str) -> Self {
        Self {
            base: base
                .unwrap_or(tg::DEFAULT_BASE_URL)
                .trim_end_matches('/')
                .to_string(),
            token: token.to_string(),
        }
    }

    /// Removes the token from a text (error messages may quote the URL).
    pub fn scrub(&self, text: &str) -> String {
        if self.token.is_empty() {
            return text.to_string();
        }
        crate::secrets::redact(&text.replace(&self.token, "<token>"))
    }

    /// Calls `method` with `params`; the answer's `result`.
    pub async fn call(
        &self,
        method: &str,
        params: &Value,
        timeout: Duration,
    ) -> Result<Value, PlatformError> {
        let url = format!("{}/bot{}/{method}", self.base, self.token);
        let client = crate::upstream::http_client(CONNECT_TIMEOUT);
        let sent = client.post(&url).timeout(timeout).send_json(params).await;
        let mut resp = sent.map_err(|e| {
            PlatformError::Unavailable(
                self.scrub(&format!("{method}: cannot reach the Bot API: {e}")),
            )
        })?;
        let status = resp.status().as_u16();
        let body = resp.body().limit(MAX_ANSWER_BYTES).await.map_err(|e| {
            PlatformError::Unavailable(self.scrub(&format!("{method}: reading the answer: {e}")))
        })?;
        tg::answer(method, status, &body).map_err(|e| match e {
            PlatformError::Refused(t) => PlatformError::Refused(self.scrub(&t)),
            PlatformError::Unavailable(t) => PlatformError::Unavailable(self.scrub(&t)),
            PlatformError::Unauthorized(t) => PlatformError::Unauthorized(self.scrub(&t)),
            PlatformError::Conflict(t) => PlatformError::Conflict(self.scrub(&t)),
            PlatformError::FormatRejected(t) => PlatformError::FormatRejected(self.scrub(&t)),
            other => other,
        })
    }
}

/// Telegram's API calls for the courier.
pub struct TelegramWire(pub BotApi);

impl Wire for TelegramWire {
    fn send(
        &self,
        chat: &ChatRef,
        text: &str,
        formatted: bool,
        reply_to: Option<&str>,
        // Telegram has no idempotency key: a send is simply retried.
        _key: &str,
    ) -> Call<String> {
        let api = self.0.clone();
        let params = tg::send_params(chat, text, formatted, reply_to);
        Box::pin(async move {
            let v = api.call("sendMessage", &params, tg::CALL_TIMEOUT).await?;
            Ok(v["message_id"].as_i64().unwrap_or_default().to_string())
        })
    }

    fn edit(&self, chat: &ChatRef, id: &str, text: &str, formatted: bool) -> Call<()> {
        let api = self.0.clone();
        let params = tg::edit_params(chat, id, text, formatted);
        Box::pin(async move {
            api.call("editMessageText", &params, tg::CALL_TIMEOUT)
                .await
                .map(|_| ())
        })
    }

    fn typing(&self, chat: &ChatRef) -> Call<()> {
        let api = self.0.clone();
        let params = tg::typing_params(chat);
        Box::pin(async move {
            api.call("sendChatAction", &params, tg::CALL_TIMEOUT)
                .await
                .map(|_| ())
        })
    }
}

/// Who the bot is, once `getMe` answered. Sent by: the start-up task.
#[derive(Message)]
#[rtype(result = "()")]
struct Identity(BotIdentity);

/// Telegram answers (polling, or the webhook registered). Sent by: the start-up task.
#[derive(Message)]
#[rtype(result = "()")]
struct Online;

/// One update from long polling; answers whether it was accepted.
/// Sent by: the polling loop.
#[derive(Message)]
#[rtype(result = "bool")]
struct Update(Value);

/// How the actor is set up.
#[derive(Clone)]
pub struct TelegramSettings {
    pub api: BotApi,
    /// In groups, answer only messages that mention the bot or reply to it.
    pub require_mention: bool,
    /// Webhook mode: the public URL and its secret.
    pub webhook: Option<(String, String)>,
    /// Where the gateway's own notices go (`telegram.home_channel`).
    pub home_channel: Option<String>,
}

/// The Telegram platform.
pub struct TelegramActor {
    settings: TelegramSettings,
    start: PlatformStart,
    out: Outbox,
    me: BotIdentity,
    dedup: Dedup,
}

/// Starts Telegram when its token is configured: its courier, its actor,
/// and in webhook mode the inbound hook the HTTP server serves.
pub fn start(ctx: &PlatformStart) -> Option<Started> {
    let c = &ctx.loaded.config.telegram;
    let token = c.bot_token.clone()?;
    let api = BotApi::new(c.api_base_url.as_deref(), &token);
    let webhook = match (&c.webhook_url, &c.webhook_secret) {
        (Some(url), Some(secret)) => Some((url.clone(), secret.clone())),
        _ => None,
    };
    let settings = TelegramSettings {
        api: api.clone(),
        require_mention: c.require_mention.unwrap_or(false),
        webhook: webhook.clone(),
        home_channel: c.home_channel.clone(),
    };
    let out = CourierActor::start_outbox(
        &ctx.pool.pick(),
        NAME,
        tg::CAPABILITIES,
        ctx.metrics.clone(),
        move || Rc::new(TelegramWire(api)) as Rc<dyn Wire>,
    );
    let start = ctx.clone();
    let addr = TelegramActor::start_in_arbiter(&ctx.pool.pick(), move |_| TelegramActor {
        settings,
        start,
        out,
        me: BotIdentity::default(),
        dedup: Dedup::default(),
    });
    let hooks = webhook
        .map(|(url, secret)| InboundHook {
            platform: NAME,
            path: url_path(&url),
            verify: Arc::new(move |headers, _body| {
                let given = headers
                    .get(tg::SECRET_HEADER)
                    .map(|v| v.as_bytes())
                    .unwrap_or_default();
                bool::from(given.ct_eq(secret.as_bytes()))
            }),
            sink: addr.recipient(),
        })
        .into_iter()
        .collect();
    Some(Started { hooks })
}

impl TelegramActor {
    /// Parses an update and hands a new message to the router.
    fn accept(&mut self, update: &Value) {
        let parsed = tg::parse_update(update, &self.me, self.settings.require_mention);
        self.start
            .hand_over(parsed, &mut self.dedup, &self.out, NAME);
    }
}

/// Start-up and the polling loop (runs on the actor's arbiter).
async fn run(settings: TelegramSettings, me_to: Addr<TelegramActor>, start: PlatformStart) {
    let api = settings.api;
    let status = &start.status;
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    status.set(NAME, LinkState::Connecting, None);
    let me = loop {
        match api.call("getMe", &json!({}), tg::CALL_TIMEOUT).await {
            Ok(v) => break BotIdentity::from_me(&v),
            Err(PlatformError::Unauthorized(e)) => {
                let why = format!("the bot token was rejected ({e}); check TELEGRAM_BOT_TOKEN");
                log::error!("{NAME}: {why}; the other front doors keep running");
                status.set(NAME, LinkState::Failed, Some(why));
                return;
            }
            Err(e) => {
                let wait = backoff.next_wait();
                log::warn!(
                    "{NAME}: cannot start ({e}); retrying in {} s",
                    wait.as_secs()
                );
                status.set(NAME, LinkState::Connecting, Some(e.to_string()));
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
                    status.set(NAME, LinkState::Connected, None);
                    me_to.do_send(Online);
                    return;
                }
                Err(e) => {
                    let wait = backoff.next_wait();
                    log::warn!(
                        "{NAME}: setWebhook failed ({e}); retrying in {} s",
                        wait.as_secs()
                    );
                    status.set(NAME, LinkState::Connecting, Some(e.to_string()));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    poll(&api, &me_to, &start).await;
}

/// How a stretch of polling under the consumer lease ended.
enum Tenure {
    /// The lease was lost or given up: stand by again.
    Lost,
    /// The actor is gone: the gateway is stopping.
    Stopped,
}

/// Long polling while this instance holds the bot's consumer lease
/// (`platforms::consumer`); standing by while another instance reads it.
async fn poll(api: &BotApi, me_to: &Addr<TelegramActor>, start: &PlatformStart) {
    loop {
        let Some(mut held) = start.leases.hold(NAME, &api.token, &start.status).await else {
            return;
        };
        match poll_held(api, me_to, start, &mut held).await {
            Tenure::Lost => {
                log::warn!("{NAME}: stopped polling: this instance no longer holds the bot")
            }
            Tenure::Stopped => return,
        }
    }
}

/// `getUpdates` with the offset after the last accepted update, read from
/// the store at the start (another instance may have moved it on), until
/// the lease is lost. No update is handed over once it is.
async fn poll_held(
    api: &BotApi,
    me_to: &Addr<TelegramActor>,
    start: &PlatformStart,
    held: &mut Held,
) -> Tenure {
    let (db, status) = (&start.store, &start.status);
    let stored = crate::platform_state::load(db, NAME, OFFSET_KEY).await;
    let mut offset: i64 = match stored {
        Ok(v) => v.and_then(|s| s.parse().ok()).unwrap_or(0),
        Err(e) => {
            log::warn!(
                "{NAME}: cannot read the stored polling offset ({e}); starting from Telegram's"
            );
            0
        }
    };
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut connected = false;
    // Runs for the life of the gateway; each round is bounded by the poll timeout.
    loop {
        // The first poll returns at once, so the platform shows connected
        // (or the reason it is not) right after the start, not a long poll later.
        let wait = if connected { tg::POLL_TIMEOUT_S } else { 0 };
        let mut params = json!({"timeout": wait, "allowed_updates": tg::ALLOWED_UPDATES});
        if offset > 0 {
            params["offset"] = json!(offset);
        }
        let answer = tokio::select! {
            answer = api.call("getUpdates", &params, tg::POLL_REQUEST_TIMEOUT) => answer,
            () = held.lost() => return Tenure::Lost,
        };
        match answer {
            Ok(Value::Array(updates)) => {
                if !connected {
                    status.set(NAME, LinkState::Connected, None);
                    log::info!("{NAME}: polling for updates");
                    connected = true;
                    me_to.do_send(Online);
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
                    // The new holder reads from the stored offset: it gets the rest.
                    if !held.is_held() {
                        break;
                    }
                    match me_to.send(Update(u)).await {
                        Ok(true) => {}
                        _ => return Tenure::Stopped,
                    }
                    offset = id + 1;
                    last_saved = Some(crate::platform_state::save(
                        db,
                        NAME,
                        OFFSET_KEY,
                        offset.to_string(),
                    ));
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
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(PlatformError::RateLimited { retry_after, .. }) => {
                tokio::time::sleep(retry_after).await
            }
            Err(e) => {
                connected = false;
                let wait = backoff.next_wait();
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
                    LinkState::Failed
                } else {
                    LinkState::Connecting
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
        let fut = run(self.settings.clone(), ctx.address(), self.start.clone());
        ctx.spawn(fut.into_actor(self));
    }
}

impl Handler<Identity> for TelegramActor {
    type Result = ();

    fn handle(&mut self, msg: Identity, _: &mut Context<Self>) {
        self.me = msg.0;
    }
}

impl Handler<Online> for TelegramActor {
    type Result = ();

    fn handle(&mut self, _: Online, _: &mut Context<Self>) {
        super::start::on_connected(&self.start, &self.out, &mut self.settings.home_channel);
    }
}

impl Handler<Update> for TelegramActor {
    type Result = bool;

    fn handle(&mut self, msg: Update, _: &mut Context<Self>) -> bool {
        self.accept(&msg.0);
        true
    }
}

impl Handler<HookDelivery> for TelegramActor {
    type Result = HookReply;

    fn handle(&mut self, msg: HookDelivery, _: &mut Context<Self>) -> HookReply {
        match serde_json::from_slice::<Value>(&msg.body) {
            Ok(update) if update.is_object() => {
                self.accept(&update);
                HookReply::Accepted(json!({"ok": true}))
            }
            _ => HookReply::Malformed("the update is not a JSON object".into()),
        }
    }
}
