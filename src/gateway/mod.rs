//! `hermes gateway`: the long-running service, in two parts.
//!
//! - This module is the composition root: [`start`] builds everything
//!   (database, actor pool, keys, response store, chat platforms, API
//!   server) and binds. Tests call it in-process on port 0.
//! - [`lifecycle`] is the process around it: [`lifecycle::run`] starts,
//!   tells systemd it is ready, pings the watchdog, reloads on SIGHUP and
//!   drains on SIGTERM (its module docs spell out the protocol).

pub mod lifecycle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::web;

use crate::actors::pool::ArbiterPool;
use crate::actors::response_store::{Limits, ResponseStoreActor};
use crate::actors::session_router::{RouterSettings, RouterStats, SessionRouter};
use crate::actors::start::{PlatformStart, StartFn};
use crate::api::state::ChatParts;
use crate::api::{self, AppState, auth::ApiKeys, auth::KeySource, state::Live, state::Parts};
use crate::config::{Loaded, StorageBackend, StorageConfig};
use crate::db::Db;
use crate::deliveries::Deliveries;
use crate::metrics::Metrics;
use crate::platform_status::{LinkState, PlatformStatus};
use crate::platforms::consumer::Leases;
use crate::platforms::liveness::Liveness;
use crate::store::Store;

/// Bytes in a MiB (cache budgets are configured in MiB).
const MIB: usize = 1024 * 1024;

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] crate::db::StoreError),
    #[error(transparent)]
    Keys(#[from] api::auth::KeyError),
    #[error(transparent)]
    Instance(#[from] crate::platforms::liveness::ClaimError),
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
    /// The worker threads actors run on (stopped at the very end).
    pub pool: ArbiterPool,
    /// The session router, when a chat platform is configured (drain, reload).
    pub router: Option<actix::Addr<SessionRouter>>,
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

/// How often each gateway looks for responses and runs left going by a
/// gateway that has died (sharing the store): with the 10 s presence lease,
/// such work ends within about 15 s.
const LEFT_OVER_SWEEP: Duration = Duration::from_secs(5);
/// The names of the API sessions' turn leases (see `AppState::claim_session`).
const SESSION_LEASES: &str = "session:";
/// How long a session's ended turn lease is kept before its row goes.
const FORGET_LEASES_AFTER: Duration = Duration::from_secs(3600);
/// How often a start whose instance id is in use tries to claim it again.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(1);

/// Builds and binds everything. Must run inside an actix system.
pub async fn start(loaded: &Loaded) -> Result<Running, StartError> {
    let c = &loaded.config;
    raise_fd_limit();
    let platforms = PlatformStatus::default();
    let db = Db::open(&loaded.home.join("state.db"))?;
    // What has moved behind the storage interface goes through `store`;
    // the rest still uses this instance's `db` (see `store`).
    let store = open_store(&c.storage, &db).await?;
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
    let instance = c
        .storage
        .instance_id
        .clone()
        .unwrap_or_else(crate::platforms::consumer::default_instance_id);
    // The gateways of one home are on one machine: a lock each holds for
    // its life tells exactly which have ended (see `platforms::liveness`).
    let liveness = Liveness::claim(&loaded.home, &instance)?;
    let leases = Leases::new(store.clone(), &instance, Some(liveness));
    // Instances on other machines see this one through the shared store.
    if store.is_shared() {
        announce(&leases).await?;
    }
    log::info!("instance {instance}, storage {}", leases.backend());
    let responses = start_response_store(&leases, &pool, &c.api_server.response_store).await?;
    let (router, chat) = match start_chat(loaded, &leases, &pool, &metrics, &platforms) {
        Some((router, chat)) => (Some(router), Some(chat)),
        None => (None, None),
    };
    let parts = Parts {
        store,
        db,
        leases,
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
    // Requests about its work that reach other instances come here.
    api::remote::serve(state.clone());
    let any_platform = !c.configured_platforms().is_empty();
    let hooks = state.chat.as_ref().is_some_and(|c| !c.hooks.is_empty());
    if any_platform && !c.api_server.enabled && !hooks {
        log::info!(
            "API server off (chat platforms are configured; set API_SERVER_ENABLED=true to serve it too)"
        );
        return Ok(Running {
            addr: None,
            state,
            server: None,
            pool,
            router,
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
        pool,
        router,
    })
}

/// Says this instance runs ([`Leases::announce`]). Another process with
/// its id may be this one's predecessor that died (a fixed id, or
/// `<hostname>-<pid>` in a container where the pid is always 1): its
/// presence lasts until its lease runs out, so the claim is tried again
/// until then before the id is refused as taken.
async fn announce(leases: &Leases) -> Result<(), StartError> {
    use crate::platforms::consumer::{LEASE_TTL, RENEW_EVERY};
    let deadline = tokio::time::Instant::now() + LEASE_TTL + RENEW_EVERY;
    let mut told = false;
    while !leases.announce().await? {
        if tokio::time::Instant::now() >= deadline {
            let id = leases.instance().to_string();
            return Err(crate::platforms::liveness::ClaimError::Taken(id).into());
        }
        if !told {
            log::warn!(
                "instance id {} is in use (a previous process that died?); waiting for it to expire",
                leases.instance()
            );
            told = true;
        }
        tokio::time::sleep(ANNOUNCE_RETRY).await;
    }
    Ok(())
}

/// The store `storage` names: this home's `state.db` (`db`), or the
/// PostgreSQL server, connected and migrated (a gateway never serves
/// without its store, so `/health` answers only once this is done).
async fn open_store(storage: &StorageConfig, db: &Db) -> Result<Store, StartError> {
    match (storage.backend(), &storage.postgres_url) {
        (StorageBackend::Postgres, Some(url)) => {
            let pg = crate::store::Pg::connect(url, storage.pool_size).await?;
            log::info!(
                "storage: PostgreSQL at {} ({} connections at most)",
                crate::store::pg::describe(url),
                storage.pool_size
            );
            Ok(Store::Postgres(pg))
        }
        (StorageBackend::Postgres, None) => Err(crate::db::StoreError::Config(
            "storage.backend is postgres but no URL is set (HERMES_DATABASE_URL)".into(),
        )
        .into()),
        (StorageBackend::Sqlite, url) => {
            if url.is_some() {
                log::warn!("storage.backend is sqlite: the PostgreSQL URL set is not used");
            }
            Ok(Store::from(db.clone()))
        }
    }
}

/// The chat platforms this build connects to, by registry name, with
/// their start functions. A configured platform missing here is reported
/// as failed (the rest of the gateway runs).
const PLATFORM_STARTS: &[(&str, StartFn)] = &[
    ("telegram", crate::actors::telegram::start),
    ("discord", crate::actors::discord::start),
    ("slack", crate::actors::slack::start),
];

/// Starts the session router and every configured chat platform. A
/// platform that cannot start is reported in the platform status and does
/// not stop the rest. `None` when no platform is configured.
fn start_chat(
    loaded: &Loaded,
    leases: &Leases,
    pool: &ArbiterPool,
    metrics: &Arc<Metrics>,
    platforms: &PlatformStatus,
) -> Option<(actix::Addr<SessionRouter>, ChatParts)> {
    use actix::Actor;
    let c = &loaded.config;
    let configured = c.configured_platforms();
    if configured.is_empty() {
        return None;
    }
    let stats = Arc::new(RouterStats::default());
    let settings = Arc::new(RouterSettings::from_loaded(loaded));
    // This run's delivery obligations; those of earlier runs are finished
    // by each platform once it is connected.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let deliveries = Deliveries::new(
        leases.store().clone(),
        metrics.deliveries.clone(),
        &run,
        leases.instance(),
    );
    let router = {
        let (store, pool2, metrics, stats, d) = (
            leases.store().clone(),
            pool.clone(),
            metrics.clone(),
            stats.clone(),
            deliveries.clone(),
        );
        SessionRouter::start_in_arbiter(&pool.pick(), move |_| {
            SessionRouter::new(settings, store, pool2, metrics, stats, d)
        })
    };
    let ctx = PlatformStart {
        loaded: Arc::new(loaded.clone()),
        store: leases.store().clone(),
        leases: leases.clone(),
        pool: pool.clone(),
        metrics: metrics.clone(),
        status: platforms.clone(),
        router: router.clone(),
        deliveries,
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
    Some((router, ChatParts { stats, hooks }))
}

/// Starts the `ResponseStoreActor` on its own arbiter.
async fn start_response_store(
    leases: &Leases,
    pool: &ArbiterPool,
    cfg: &crate::config::ResponseStoreConfig,
) -> Result<actix::Addr<ResponseStoreActor>, StartError> {
    use actix::Actor;
    // What the last stop cut off ends before anyone can ask for it.
    let store = leases.store().clone();
    crate::api::responses::interrupt_left_over(&store, leases, true).await?;
    crate::api::runs::interrupt_left_over(&store, leases, true).await?;
    // Later, what other gateways sharing the store leave when they die.
    let sweeper = leases.clone();
    actix::spawn(async move {
        let mut tick = tokio::time::interval(LEFT_OVER_SWEEP);
        tick.tick().await;
        loop {
            tick.tick().await;
            let store = sweeper.store();
            let swept = async {
                crate::api::responses::interrupt_left_over(store, &sweeper, false).await?;
                crate::api::runs::interrupt_left_over(store, &sweeper, false).await?;
                store
                    .forget_leases(SESSION_LEASES, FORGET_LEASES_AFTER)
                    .await
            };
            if let Err(e) = swept.await {
                log::warn!("cannot end the work of stopped gateways: {e}");
            }
        }
    });
    let count = store.response_count().await?;
    log::info!("response store: {count} stored response(s)");
    let limits = Limits {
        cache_size: cfg.cache_size,
        cache_bytes: cfg.cache_mb.saturating_mul(MIB),
        max_responses: cfg.max_responses,
        ttl: Duration::from_secs(u64::from(cfg.ttl_days) * 86_400),
    };
    Ok(ResponseStoreActor::start_in_arbiter(
        &pool.pick(),
        move |_| ResponseStoreActor::new(store, limits, count),
    ))
}
