//! The gateway process: [`run`] starts the service (see [`super::start`]),
//! tells systemd it is ready, pings the watchdog from a timer on the event
//! loop (a stuck loop stops the pings), trims freed memory, and handles
//! signals.
//!
//! # Shutdown (SIGTERM, SIGINT)
//!
//! 1. `STOPPING=1`; new runs are refused with 503 `gateway_draining`; the
//!    chat platforms' consumer leases are released, so a standby gateway
//!    reads the bots from now on.
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

use actix_web::web;

use super::start;
use crate::actors::session_router::{Drain, InterruptAll, RouterSettings, SetSettings};
use crate::api::{AppState, state::Live};
use crate::config::{self, Config, Env, LoadOptions, Loaded};
use crate::notify::Notifier;
use crate::outcome::Outcome;

/// After interrupting what the drain left, how long streams get to send their final frames.
const FINAL_FRAMES_GRACE: Duration = Duration::from_secs(5);
/// How often the drain checks whether runs have finished.
const DRAIN_POLL: Duration = Duration::from_millis(50);

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

/// Runs the gateway until SIGTERM/SIGINT.
pub fn run(loaded: Loaded, opts: LoadOptions) -> Outcome {
    let system = actix::System::new();
    system.block_on(async move {
        // Handlers go in before anything listens: a signal that arrives
        // while starting (a reload right after READY) must not hit the
        // default action, which for SIGHUP is to terminate.
        let Some(handlers) = SignalHandlers::install() else {
            log::error!("cannot install signal handlers");
            return Outcome::Failed;
        };
        let running = match start(&loaded).await {
            Ok(r) => r,
            Err(e) => {
                log::error!("{e}");
                eprintln!("hermes: {e}");
                return Outcome::BadConfig;
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
            Control {
                state: state.clone(),
                router: running.router.clone(),
            },
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
        // Whatever way it stopped, a standby instance may read the bots now.
        state.leases.release_all().await;
        // Its own answers are finished: other gateways may take up what is left.
        state.leases.depart().await;
        // Flush the store before exiting.
        if let Err(e) = state.db.checkpoint().await {
            log::warn!("database checkpoint at shutdown failed: {e}");
        }
        running.pool.stop();
        match result {
            Ok(()) => {
                log::info!("stopped");
                Outcome::Done
            }
            Err(e) => {
                log::error!("the API server failed: {e}");
                Outcome::Failed
            }
        }
    })
}

/// What the process controls beyond the HTTP handlers' state.
#[derive(Clone)]
struct Control {
    state: web::Data<AppState>,
    /// The session router, when a chat platform is configured.
    router: Option<actix::Addr<crate::actors::session_router::SessionRouter>>,
}

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

/// Waits for signals: SIGHUP reloads; the first SIGTERM/SIGINT drains and stops.
async fn signals(
    handlers: SignalHandlers,
    server: Stopper,
    ctl: Control,
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
                reload(&ctl, &mut current, &opts);
                notifier.ready(&status_line(&ctl.state, addr));
            }
            _ = term.recv() => {
                if !draining {
                    draining = true;
                    actix::spawn(drain(server.clone(), ctl.clone(), notifier.clone(), drain_timeout, "SIGTERM"));
                }
            }
            _ = int.recv() => {
                if draining {
                    log::warn!("second interrupt: exiting at once");
                    std::process::exit(130);
                }
                draining = true;
                actix::spawn(drain(server.clone(), ctl.clone(), notifier.clone(), drain_timeout, "SIGINT"));
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
async fn drain(server: Stopper, ctl: Control, notifier: Notifier, timeout: Duration, signal: &str) {
    let Control { state, router } = ctl;
    let running = state.runs_in_flight();
    log::info!(
        "{signal}: draining; {running} run(s) in flight get up to {} s",
        timeout.as_secs_f64()
    );
    notifier.stopping(&format!("draining {running} run(s)"));
    state.start_draining();
    // Stop reading the bots and hand them over at once: a standby gateway
    // takes them at its next try and answers what comes now, while this one
    // finishes its own answers (the standby leaves those to it while it
    // lives; see `actors::start::finish_left_over`).
    state.leases.release_all().await;
    if let Some(router) = &router {
        router.do_send(Drain);
    }
    if !runs_finished(&state, timeout).await {
        let mut n = state.interrupt_all();
        if let Some(router) = &router {
            n += router.send(InterruptAll).await.unwrap_or(0);
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
fn reload(ctl: &Control, current: &mut Loaded, opts: &LoadOptions) {
    let state = &ctl.state;
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
    if let Some(router) = &ctl.router {
        // Allowlists, streaming, model, toolsets and session policy apply to the next message.
        router.do_send(SetSettings(Arc::new(RouterSettings::from_loaded(&new))));
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
