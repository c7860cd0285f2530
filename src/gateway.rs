//! `hermes gateway`: the long-running service.
//!
//! [`start`] builds everything (database, actor pool, keys, API server) and
//! binds; tests call it in-process on port 0. [`run`] is the command: it
//! starts, tells systemd it is ready, pings the watchdog from a timer on the
//! event loop (a stuck loop stops the pings), and handles signals.
//!
//! # Shutdown (SIGTERM, SIGINT)
//!
//! 1. `STOPPING=1`; new runs are refused with 503 `gateway_draining`.
//! 2. Running turns get up to `gateway.drain_timeout` to finish on their own.
//! 3. What is left is interrupted: each stream still ends with its proper
//!    final frames (a cancelled turn closes with a finish chunk and `[DONE]`),
//!    given up to [`FINAL_FRAMES_GRACE`] to reach the client.
//! 4. The HTTP server stops, the database is checkpointed, the process exits 0.
//!
//! A second SIGINT exits at once (exit code 130).
//!
//! # Reload (SIGHUP)
//!
//! `config.yaml` and `.env` are read again. An invalid configuration is
//! rejected with the reason and the running one kept. Settings that can
//! change live are applied (model, toolsets, tool limits, CORS, streaming and
//! tool-progress defaults, admission limit, log level); those that cannot
//! (addresses, keys, store sizes) are logged as needing a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::web;

use crate::actors::pool::ArbiterPool;
use crate::actors::response_store::{Limits, ResponseStoreActor};
use crate::actors::session_router::{
    Drain, InterruptAll, RouterSettings, RouterStats, SessionRouter, SetSettings,
};
use crate::actors::start::{PlatformStart, StartFn};
use crate::api::state::ChatParts;
use crate::api::{self, AppState, auth::ApiKeys, auth::KeySource, state::Live, state::Parts};
use crate::config::{self, Config, Env, LoadOptions, Loaded};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::platform_status::{LinkState, PlatformStatus};

/// Bytes in a MiB (cache budgets are configured in MiB).
const MIB: usize = 1024 * 1024;
/// After interrupting what the drain left, how long streams get to send their final frames.
const FINAL_FRAMES_GRACE: Duration = Duration::from_secs(5);
/// How often the drain checks whether runs have finished.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] crate::db::StoreError),
    #[error(transparent)]
    Keys(#[from] api::auth::KeyError),
    #[error("cannot listen on {host}:{port}: {source} (set API_SERVER_HOST / API_SERVER_PORT)")]
    Bind {
        host: String,
        port: u16,
        source: std::io::Error,
    },
}

/// A started gateway.
pub struct Running {
    /// Where the HTTP server listens (`None` when it is off: chat platforms
    /// only, no `API_SERVER_ENABLED`, no webhook).
    pub addr: Option<SocketAddr>,
    pub state: web::Data<AppState>,
    /// The HTTP server; await it (or spawn it) to serve.
    pub server: Option<Server>,
}

/// Raises the open-file soft limit to the hard limit: every open stream holds
/// two sockets (client and upstream), and distributions default to 1024.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Builds and binds everything. Must run inside an actix system.
pub async fn start(loaded: &Loaded) -> Result<Running, StartError> {
    let c = &loaded.config;
    raise_fd_limit();
    let platforms = PlatformStatus::default();
    let db = Db::open(&loaded.home.join("state.db"))?;
    let pool = ArbiterPool::new(None);
    let (keys, source) = ApiKeys::resolve(&c.api_server, &loaded.home)?;
    match source {
        KeySource::Configured(n) => log::info!("{n} API key(s) configured"),
        KeySource::Generated(p) => {
            log::info!(
                "generated an API key for this loopback server; read it with: cat {}",
                p.display()
            )
        }
        KeySource::Reused(p) => log::info!(
            "using the generated API key in {} (cat it to read it)",
            p.display()
        ),
    }
    let live = Live::from_loaded(loaded);
    if let Err(reason) = &live.agent {
        log::warn!("{reason}; agent requests get 503 until this is fixed");
    }
    let metrics = Arc::new(Metrics::default());
    let max_runs = c.api_server.max_concurrent_runs;
    let responses = start_response_store(&db, &pool, &c.api_server.response_store).await?;
    let chat = start_chat(loaded, &db, &pool, &metrics, &platforms);
    let parts = Parts {
        pool,
        db,
        keys,
        metrics,
        platforms,
        responses,
        max_runs,
        chat,
        session_cache_bytes: c.api_server.session_cache_mb.saturating_mul(MIB),
        idempotency_cache_bytes: c.api_server.idempotency_cache_mb.saturating_mul(MIB),
    };
    let state = web::Data::new(AppState::new(live, parts));
    let any_platform = c.platforms().any(|(_, p)| p.bot_token.is_some());
    let hooks = state.chat.as_ref().is_some_and(|c| !c.hooks.is_empty());
    if any_platform && !c.api_server.enabled && !hooks {
        log::info!(
            "API server off (chat platforms are configured; set API_SERVER_ENABLED=true to serve it too)"
        );
        return Ok(Running {
            addr: None,
            state,
            server: None,
        });
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let (host, port) = (c.api_server.host.clone(), c.api_server.port);
    let (server, addr) =
        api::start(state.clone(), &host, port, workers).map_err(|source| StartError::Bind {
            host: host.clone(),
            port,
            source,
        })?;
    log::info!("API server listening on http://{addr}/v1");
    Ok(Running {
        addr: Some(addr),
        state,
        server: Some(server),
    })
}

/// The chat platforms this build connects to, by registry name, with
/// their start functions. A configured platform missing here is reported
/// as failed (the rest of the gateway runs).
const PLATFORM_STARTS: &[(&str, StartFn)] = &[("telegram", crate::actors::telegram::start)];

/// Starts the session router and every configured chat platform. A
/// platform that cannot start is reported in the platform status and does
/// not stop the rest. `None` when no platform is configured.
fn start_chat(
    loaded: &Loaded,
    db: &Db,
    pool: &ArbiterPool,
    metrics: &Arc<Metrics>,
    platforms: &PlatformStatus,
) -> Option<ChatParts> {
    use actix::Actor;
    let c = &loaded.config;
    let configured: Vec<&'static str> = crate::platforms::ALL
        .iter()
        .map(|p| p.name)
        .filter(|n| c.platform(n).is_some_and(|p| p.bot_token.is_some()))
        .collect();
    if configured.is_empty() {
        return None;
    }
    let stats = Arc::new(RouterStats::default());
    let settings = Arc::new(RouterSettings::from_loaded(loaded));
    let router = {
        let (db, pool2, metrics, stats) =
            (db.clone(), pool.clone(), metrics.clone(), stats.clone());
        SessionRouter::start_in_arbiter(&pool.pick(), move |_| {
            SessionRouter::new(settings, db, pool2, metrics, stats)
        })
    };
    let ctx = PlatformStart {
        loaded: Arc::new(loaded.clone()),
        db: db.clone(),
        pool: pool.clone(),
        metrics: metrics.clone(),
        status: platforms.clone(),
        router: router.clone(),
    };
    let mut hooks = Vec::new();
    for name in configured {
        let start = PLATFORM_STARTS.iter().find(|(n, _)| *n == name);
        match start.and_then(|(_, start)| start(&ctx)) {
            Some(started) => hooks.extend(started.hooks),
            None => {
                let why =
                    format!("{name} is configured, but this build does not connect to {name} yet");
                log::error!("{why}; the other front doors keep running");
                platforms.set(name, LinkState::Failed, Some(why));
            }
        }
    }
    Some(ChatParts {
        router,
        stats,
        hooks,
    })
}

/// Starts the `ResponseStoreActor` on its own arbiter.
async fn start_response_store(
    db: &Db,
    pool: &ArbiterPool,
    cfg: &crate::config::ResponseStoreConfig,
) -> Result<actix::Addr<ResponseStoreActor>, StartError> {
    use actix::Actor;
    let count = db.call(|c| crate::response_db::count(c)).await?;
    log::info!("response store: {count} stored response(s)");
    let limits = Limits {
        cache_size: cfg.cache_size,
        cache_bytes: cfg.cache_mb.saturating_mul(MIB),
        max_responses: cfg.max_responses,
        ttl: Duration::from_secs(u64::from(cfg.ttl_days) * 86_400),
    };
    let db = db.clone();
    Ok(ResponseStoreActor::start_in_arbiter(
        &pool.pick(),
        move |_| ResponseStoreActor::new(db, limits, count),
    ))
}

/// What stops the gateway at the end of a drain.
#[derive(Clone)]
struct Stopper {
    server: Option<actix_web::dev::ServerHandle>,
    /// Wakes `run` when there is no HTTP server to wait on.
    stopped: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
}

impl Stopper {
    async fn stop(&self) {
        if let Some(s) = &self.server {
            s.stop(true).await;
        }
        if let Some(tx) = self
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }
}

/// A one-line summary for systemd's `STATUS=`.
fn status_line(state: &AppState, addr: Option<SocketAddr>) -> String {
    let api = addr.map_or_else(|| "API off".to_string(), |a| format!("API on {a}"));
    format!(
        "{api}; {}; {} run(s) in flight{}",
        state.platforms.summary(),
        state.runs_in_flight(),
        if state.is_draining() {
            "; draining"
        } else {
            ""
        }
    )
}

/// Runs the gateway until SIGTERM/SIGINT; returns the exit code.
pub fn run(loaded: Loaded, opts: LoadOptions) -> i32 {
    let system = actix::System::new();
    system.block_on(async move {
        // Handlers go in before anything listens: a signal that arrives
        // while starting (a reload right after READY) must not hit the
        // default action, which for SIGHUP is to terminate.
        let Some(handlers) = SignalHandlers::install() else {
            log::error!("cannot install signal handlers");
            return crate::cli::EXIT_FAILED;
        };
        let running = match start(&loaded).await {
            Ok(r) => r,
            Err(e) => {
                log::error!("{e}");
                eprintln!("hermes: {e}");
                return crate::cli::EXIT_CONFIG;
            }
        };
        let notifier = Notifier::from_env(&loaded.env);
        let (state, addr) = (running.state.clone(), running.addr);
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        // The listener is bound: connections are accepted from here on.
        notifier.ready(&status_line(&state, addr));
        if let Some(every) = notifier.watchdog_interval() {
            let (n, st) = (notifier.clone(), state.clone());
            actix::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    n.watchdog(&status_line(&st, addr));
                }
            });
        }
        // Memory the caches let go of goes back to the system.
        actix::spawn(async {
            let mut tick = tokio::time::interval(crate::memory::TRIM_EVERY);
            loop {
                tick.tick().await;
                crate::memory::trim();
            }
        });
        actix::spawn(signals(
            handlers,
            Stopper {
                server: running.server.as_ref().map(|s| s.handle()),
                stopped: Arc::new(std::sync::Mutex::new(Some(stopped_tx))),
            },
            state.clone(),
            notifier,
            addr,
            loaded,
            opts,
        ));
        let result = match running.server {
            Some(server) => server.await,
            // No HTTP server: run until the drain says stop.
            None => {
                let _ = stopped_rx.await;
                Ok(())
            }
        };
        // Flush the store before exiting.
        if let Err(e) = state.db.checkpoint().await {
            log::warn!("database checkpoint at shutdown failed: {e}");
        }
        state.pool.stop();
        match result {
            Ok(()) => {
                log::info!("stopped");
                0
            }
            Err(e) => {
                log::error!("the API server failed: {e}");
                crate::cli::EXIT_FAILED
            }
        }
    })
}

/// Waits for signals: SIGHUP reloads; the first SIGTERM/SIGINT drains and stops.
/// The signal streams the gateway listens on.
struct SignalHandlers {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl SignalHandlers {
    fn install() -> Option<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(Self {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
        })
    }
}

async fn signals(
    handlers: SignalHandlers,
    server: Stopper,
    state: web::Data<AppState>,
    notifier: Notifier,
    addr: Option<SocketAddr>,
    mut current: Loaded,
    opts: LoadOptions,
) {
    let SignalHandlers {
        mut term,
        mut int,
        mut hup,
    } = handlers;
    // The drain timeout in force when the signal came (a reload may change it).
    let mut draining = false;
    loop {
        let drain_timeout = Duration::from_secs_f64(current.config.gateway.drain_timeout);
        tokio::select! {
            _ = hup.recv() => {
                notifier.reloading();
                reload(&state, &mut current, &opts);
                notifier.ready(&status_line(&state, addr));
            }
            _ = term.recv() => {
                if !draining {
                    draining = true;
                    actix::spawn(drain(server.clone(), state.clone(), notifier.clone(), drain_timeout, "SIGTERM"));
                }
            }
            _ = int.recv() => {
                if draining {
                    log::warn!("second interrupt: exiting at once");
                    std::process::exit(130);
                }
                draining = true;
                actix::spawn(drain(server.clone(), state.clone(), notifier.clone(), drain_timeout, "SIGINT"));
            }
        }
    }
}

/// Waits until no run is in flight, or `limit` passes; true when none is left.
async fn runs_finished(state: &AppState, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while state.runs_in_flight() > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    true
}

/// The drain protocol (see the module docs).
async fn drain(
    server: Stopper,
    state: web::Data<AppState>,
    notifier: Notifier,
    timeout: Duration,
    signal: &str,
) {
    let running = state.runs_in_flight();
    log::info!(
        "{signal}: draining; {running} run(s) in flight get up to {} s",
        timeout.as_secs_f64()
    );
    notifier.stopping(&format!("draining {running} run(s)"));
    state.start_draining();
    if let Some(chat) = &state.chat {
        chat.router.do_send(Drain);
    }
    if !runs_finished(&state, timeout).await {
        let mut n = state.interrupt_all();
        if let Some(chat) = &state.chat {
            n += chat.router.send(InterruptAll).await.unwrap_or(0);
        }
        log::warn!("drain timeout: interrupting {n} run(s)");
        if !runs_finished(&state, FINAL_FRAMES_GRACE).await {
            log::warn!(
                "{} run(s) did not end in time; stopping anyway",
                state.runs_in_flight()
            );
        }
    }
    server.stop().await;
}

/// Re-reads the configuration and applies what can change while running.
fn reload(state: &AppState, current: &mut Loaded, opts: &LoadOptions) {
    let new = match config::load(opts, Env::from_process()) {
        Ok(n) => n,
        Err(e) => {
            log::error!("reload rejected, keeping the running configuration: {e}");
            return;
        }
    };
    for what in needs_restart(&current.config, &new.config) {
        log::warn!("reload: {what} changed; that takes effect after a restart");
    }
    state.set_live(Live::from_loaded(&new));
    if let Some(chat) = &state.chat {
        // Allowlists, streaming, model, toolsets and session policy apply to the next message.
        chat.router
            .do_send(SetSettings(Arc::new(RouterSettings::from_loaded(&new))));
    }
    state
        .admission
        .set_limit(new.config.api_server.max_concurrent_runs);
    if new.env.get("RUST_LOG").is_none()
        && let Ok(level) = new.config.logging.level.parse::<log::LevelFilter>()
    {
        log::set_max_level(level);
    }
    if let Err(reason) = &Live::from_loaded(&new).agent {
        log::warn!("reload: {reason}");
    }
    log::info!("configuration reloaded from {}", new.config_path.display());
    *current = new;
}

/// Settings that changed but only apply after a restart.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.api_server, &new.api_server);
    let mut out = Vec::new();
    if a.host != b.host || a.port != b.port {
        out.push("api_server.host/port");
    }
    if a.key != b.key || a.keys != b.keys {
        out.push("api_server.key/keys");
    }
    if a.response_store != b.response_store {
        out.push("api_server.response_store");
    }
    let (x, y) = (&old.telegram, &new.telegram);
    if x.bot_token != y.bot_token || x.webhook_url != y.webhook_url {
        out.push("telegram tokens/webhook");
    }
    if old.discord.bot_token != new.discord.bot_token {
        out.push("discord tokens");
    }
    if old.slack.bot_token != new.slack.bot_token || old.slack.app_token != new.slack.app_token {
        out.push("slack tokens");
    }
    out
}
