//! `hermes gateway`: the long-running service.
//!
//! [`start`] builds everything (database, actor pool, keys, API server) and
//! binds; tests call it in-process on port 0. [`run`] is the command: it
//! starts, then waits for SIGTERM/SIGINT and shuts down.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::web;

use crate::actors::pool::ArbiterPool;
use crate::api::{self, AppState, auth::ApiKeys, auth::KeySource, state::Live};
use crate::config::Loaded;
use crate::db::Db;
use crate::metrics::Metrics;

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
    /// Where the API listens.
    pub addr: SocketAddr,
    pub state: web::Data<AppState>,
    /// The HTTP server; await it (or spawn it) to serve.
    pub server: Server,
}

/// Platforms with a token set: (name, configured).
fn platforms(loaded: &Loaded) -> Vec<&'static str> {
    let c = &loaded.config;
    [
        ("telegram", &c.telegram),
        ("discord", &c.discord),
        ("slack", &c.slack),
    ]
    .into_iter()
    .filter(|(_, p)| p.bot_token.is_some())
    .map(|(n, _)| n)
    .collect()
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
    for p in platforms(loaded) {
        log::warn!(
            "{p} is configured, but this build does not connect to {p} yet; serving the API only"
        );
    }
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
    let state = web::Data::new(AppState::new(
        live,
        pool,
        db,
        keys,
        metrics,
        c.api_server.max_concurrent_runs,
    ));
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
        addr,
        state,
        server,
    })
}

/// Runs the gateway until SIGTERM/SIGINT; returns the exit code.
pub fn run(loaded: Loaded) -> i32 {
    let system = actix::System::new();
    system.block_on(async move {
        let running = match start(&loaded).await {
            Ok(r) => r,
            Err(e) => {
                log::error!("{e}");
                eprintln!("hermes: {e}");
                return crate::cli::EXIT_CONFIG;
            }
        };
        let handle = running.server.handle();
        let state = running.state.clone();
        actix::spawn(async move {
            wait_for_stop_signal().await;
            log::info!("stop signal received; shutting down");
            state.start_draining();
            handle.stop(true).await;
        });
        match running.server.await {
            Ok(()) => 0,
            Err(e) => {
                log::error!("the API server failed: {e}");
                crate::cli::EXIT_FAILED
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
