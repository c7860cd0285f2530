//! The PostgreSQL backend's connection pool and migrations (see
//! `scale-out.md`): several gateway instances share one PostgreSQL server.
//!
//! Connections live on a runtime thread of their own (`hermes-pg`), as the
//! SQLite connection lives on `hermes-db`: a connection's I/O task never
//! depends on which actix worker happened to open it, and a worker that is
//! busy never stalls another worker's queries. [`Pg::call`] runs a job on that
//! runtime with a pooled connection and may run beside other jobs;
//! [`Pg::call_ordered`] runs jobs one after another in the order they were
//! queued, for writes whose order matters (a polling offset).
//!
//! Migrations run at connect, in one transaction under a transaction-level
//! advisory lock, so several instances starting at once apply each step once
//! and none of them sees a half-migrated schema.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{NoTls, Socket};

use super::pg_listen::{self, Notice};
use super::pg_tls;
use crate::db::StoreError;

/// Default number of pooled connections per instance (`storage.pool_size`).
pub const DEFAULT_POOL_SIZE: usize = 16;
/// How long a job waits for a free pooled connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long opening one connection (TCP, start-up, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The advisory lock key migrations hold: "hermes" in ASCII, so it is
/// recognisable in `pg_locks` and unlikely to meet another program's key.
const MIGRATION_LOCK: i64 = 0x6865_726d_6573;

/// Migrations, in order; entry `i` moves the schema from version `i` to
/// `i + 1`. Never edit a shipped migration: add a new one. The tables mirror
/// the SQLite schema in `db.rs` as each part of the state moves behind the
/// storage interface.
const MIGRATIONS: &[&str] = &[
    // 1: small per-platform state (polling offsets, gateway sessions) and
    // leases (one holder at a time, with an expiry in Unix milliseconds and a
    // generation that grows with every change of holder).
    "CREATE TABLE platform_state (
        platform TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (platform, key)
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        generation BIGINT NOT NULL DEFAULT 1
    );",
    // 2: chat sessions and their transcripts (times in Unix seconds; a
    // message's `id` orders a session's messages).
    "CREATE TABLE sessions (
        key TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        title TEXT,
        prompt_tokens BIGINT NOT NULL DEFAULT 0,
        completion_tokens BIGINT NOT NULL DEFAULT 0,
        turns BIGINT NOT NULL DEFAULT 0,
        owner TEXT
    );
    CREATE INDEX sessions_by_owner ON sessions(owner, updated_at);
    CREATE TABLE messages (
        id BIGSERIAL PRIMARY KEY,
        session_key TEXT NOT NULL REFERENCES sessions(key) ON DELETE CASCADE,
        created_at BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX messages_by_session ON messages(session_key, id);",
    // 3: delivery obligations (see `deliveries`): one per chat answer until
    // it is delivered. `current_stream` is 0 or 1, as on SQLite.
    "CREATE TABLE deliveries (
        id BIGSERIAL PRIMARY KEY,
        platform TEXT NOT NULL,
        session_key TEXT NOT NULL,
        chat TEXT NOT NULL,
        reply_to TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        messages TEXT NOT NULL DEFAULT '[]',
        current_id TEXT,
        current_text TEXT,
        current_stream INTEGER NOT NULL DEFAULT 0,
        final_text TEXT,
        run TEXT NOT NULL
    );
    CREATE INDEX deliveries_by_platform ON deliveries(platform, id);",
    // 4: the gateway instance that opened each delivery obligation.
    "ALTER TABLE deliveries ADD COLUMN instance TEXT;",
    // 5: the HTTP API's durable state, as on SQLite: stored responses (one
    // turn each, linked to their predecessor), conversation names, the items
    // `item_reference` finds, approvals a paused turn waits on, the events of
    // responses and runs (replayed to clients that come back), and runs with
    // their idempotency keys. `live` is 0 or 1, as on SQLite; `seq` orders
    // responses created in one second as SQLite's rowid does; `instance` is
    // the gateway running a live response or an active run (a restart or
    // another instance ends it as interrupted only once that one is gone).
    "CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        previous_id TEXT,
        session_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        instructions TEXT,
        input_items TEXT NOT NULL,
        turn_messages TEXT NOT NULL,
        response TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        live INTEGER NOT NULL DEFAULT 0,
        instance TEXT,
        seq BIGSERIAL
    );
    CREATE INDEX responses_by_age ON responses(created_at, seq);
    CREATE INDEX responses_live ON responses(live) WHERE live = 1;
    CREATE TABLE conversations (
        name TEXT PRIMARY KEY,
        response_id TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX conversations_by_response ON conversations(response_id);
    CREATE TABLE response_items (
        owner TEXT NOT NULL,
        item_id TEXT NOT NULL,
        response_id TEXT NOT NULL,
        PRIMARY KEY (owner, item_id)
    );
    CREATE INDEX response_items_by_response ON response_items(response_id);
    CREATE TABLE approvals (
        approval_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        response_id TEXT NOT NULL,
        call_id TEXT NOT NULL,
        name TEXT NOT NULL,
        arguments TEXT NOT NULL,
        answered INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX approvals_by_response ON approvals(response_id);
    CREATE TABLE stream_events (
        stream_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (stream_id, seq)
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        session_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT,
        output_text TEXT NOT NULL DEFAULT '',
        usage TEXT,
        error TEXT,
        pending_approval TEXT,
        idempotency_key TEXT,
        body_hash TEXT,
        instance TEXT
    );
    CREATE UNIQUE INDEX runs_by_idempotency ON runs(owner, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX runs_by_status ON runs(status);",
    // 6: commands for work another instance runs (stop, steer or answer a
    // run's approval, cancel a response): addressed to the instance running
    // it, taken once (`taken` 0 or 1), answered in `answer`.
    "CREATE TABLE commands (
        id BIGSERIAL PRIMARY KEY,
        instance TEXT NOT NULL,
        target TEXT NOT NULL,
        body TEXT NOT NULL,
        taken INTEGER NOT NULL DEFAULT 0,
        answer TEXT,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX commands_to_take ON commands(instance) WHERE taken = 0;",
];

/// A job for the ordered lane: given the pool, a future that does the work
/// and reports through its own channel.
type OrderedJob = Box<dyn FnOnce(Pool) -> BoxFuture<'static, ()> + Send>;

/// A pool of connections to one PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct Pg {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Every notification this instance hears (see [`super::pg_listen`]).
    notices: broadcast::Sender<Notice>,
    rt: tokio::runtime::Handle,
    ordered: mpsc::UnboundedSender<OrderedJob>,
    /// Dropped with the last handle: the runtime thread then ends.
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        let s = self.inner.pool.status();
        f.debug_struct("Pg")
            .field("size", &s.size)
            .field("max_size", &s.max_size)
            .finish()
    }
}

/// Why a URL or a pool could not be set up. Never quotes the URL, which may
/// hold a password.
fn config_error(what: &str) -> StoreError {
    StoreError::Config(what.to_string())
}

/// Where `url` points, for the logs: hosts, ports and database, never the
/// user or password.
pub fn describe(url: &str) -> String {
    let Ok(c) = tokio_postgres::Config::from_str(&pg_tls::prepare(url).url) else {
        return "(an invalid URL)".into();
    };
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match c.get_ports().get(i).or(c.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        c.get_dbname().or(c.get_user()).unwrap_or("")
    )
}

impl Pg {
    /// Parses `url`, starts the runtime thread, opens the pool and applies
    /// the migrations this database has not seen. Fails when the server
    /// cannot be reached, so a gateway never reports ready without its store.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let prepared = pg_tls::prepare(url);
        let mut config = tokio_postgres::Config::from_str(&prepared.url).map_err(|_| {
            config_error("the PostgreSQL URL is not a valid connection string or URL")
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("hermes");
        }
        let (rt, stop) = spawn_runtime()?;
        let (notices, _) = broadcast::channel(pg_listen::BUFFER);
        let pool = if config.get_ssl_mode() == SslMode::Require {
            let tls = pg_tls::connector(prepared.root_cert.as_deref())?;
            open_pool(config, tls, pool_size, &rt, &notices)?
        } else {
            open_pool(config, NoTls, pool_size, &rt, &notices)?
        };
        let (ordered, jobs) = mpsc::unbounded_channel::<OrderedJob>();
        rt.spawn(run_ordered(pool.clone(), jobs));
        let pg = Self {
            inner: Arc::new(Inner {
                pool,
                notices,
                rt,
                ordered,
                _stop: stop,
            }),
        };
        pg.call(|mut c| async move { migrate(&mut c).await })
            .await?;
        Ok(pg)
    }

    /// The notifications this instance hears from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.notices.subscribe()
    }

    /// Runs `f` with a pooled connection on the PostgreSQL runtime. The job is
    /// started at once and runs to its end even if the returned future is
    /// dropped; jobs may run at the same time as others.
    pub fn call<T, F, Fut>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<T, StoreError>> + use<T, F, Fut>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let pool = self.inner.pool.clone();
        let job = self
            .inner
            .rt
            .spawn(async move { f(get(&pool).await?).await });
        async move { job.await.map_err(|_| StoreError::Gone)? }
    }

    /// Like [`Pg::call`], but jobs queued this way run one at a time, in the
    /// order they were queued (as every job does on SQLite): a write queued
    /// after another never lands before it.
    pub fn call_ordered<T, F, Fut>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<T, StoreError>> + use<T, F, Fut>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (done, wait) = oneshot::channel();
        let job: OrderedJob = Box::new(move |pool| {
            Box::pin(async move {
                let result = match get(&pool).await {
                    Ok(c) => f(c).await,
                    Err(e) => Err(e),
                };
                let _ = done.send(result);
            })
        });
        let queued = self.inner.ordered.send(job).is_ok();
        async move {
            if !queued {
                return Err(StoreError::Gone);
            }
            wait.await.map_err(|_| StoreError::Gone)?
        }
    }
}

/// The pool of connections to `config` over `tls` (plain or rustls), and
/// the notification listener beside it on the runtime `rt`.
fn open_pool<T>(
    config: tokio_postgres::Config,
    tls: T,
    pool_size: usize,
    rt: &tokio::runtime::Handle,
    notices: &broadcast::Sender<Notice>,
) -> Result<Pool, StoreError>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    rt.spawn(pg_listen::run(config.clone(), tls.clone(), notices.clone()));
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| config_error(&format!("cannot build the PostgreSQL pool: {e}")))
}

/// A pooled connection, or why there is none.
async fn get(pool: &Pool) -> Result<Object, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Pool(with_causes(&e)))
}

/// An error and its causes, "outer: inner: innermost" (a failed TLS
/// handshake says why only in its cause). Never a URL: the driver's errors
/// do not quote the connection string.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.ends_with(&part) {
            text = format!("{text}: {part}");
        }
        cause = c.source();
    }
    text
}

/// Runs the ordered lane's jobs one after another until every handle is gone.
async fn run_ordered(pool: Pool, mut jobs: mpsc::UnboundedReceiver<OrderedJob>) {
    while let Some(job) = jobs.recv().await {
        job(pool.clone()).await;
    }
}

/// Starts the `hermes-pg` thread with its runtime; it runs until the returned
/// sender is dropped.
fn spawn_runtime() -> Result<(tokio::runtime::Handle, oneshot::Sender<()>), StoreError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| config_error(&format!("cannot start the PostgreSQL runtime: {e}")))?;
    let handle = rt.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("hermes-pg".into())
        .spawn(move || {
            let _ = rt.block_on(stopped);
        })
        .map_err(|e| config_error(&format!("cannot start the PostgreSQL thread: {e}")))?;
    Ok((handle, stop))
}

/// Applies the migrations the database has not seen yet, all in one
/// transaction under the migration lock. An instance that waits for the lock
/// finds the schema already current and applies nothing.
async fn migrate(c: &mut Object) -> Result<(), StoreError> {
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // "already exists, skipping" notices are expected here, not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hermes_schema (version INTEGER NOT NULL);
         INSERT INTO hermes_schema (version)
             SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM hermes_schema);",
    )
    .await?;
    let current: i32 = tx
        .query_one("SELECT version FROM hermes_schema", &[])
        .await?
        .get(0);
    let current = usize::try_from(current).unwrap_or(0);
    if current >= MIGRATIONS.len() {
        // A newer build may have migrated further; its steps only add.
        tx.commit().await?;
        return Ok(());
    }
    for sql in &MIGRATIONS[current..] {
        tx.batch_execute(sql).await?;
    }
    let version = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    tx.execute("UPDATE hermes_schema SET version = $1", &[&version])
        .await?;
    tx.commit().await?;
    log::info!(
        "PostgreSQL schema migrated from version {current} to {}",
        MIGRATIONS.len()
    );
    Ok(())
}

/// The PostgreSQL schema version this build writes.
pub fn schema_version() -> usize {
    MIGRATIONS.len()
}
