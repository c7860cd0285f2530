//! The embedded database `$HERMES_HOME/state.db` (SQLite in WAL mode, file
//! mode 0600), owned by one dedicated thread.
//!
//! Async code never touches the connection: [`Db::call`] sends a closure to
//! the database thread and awaits its answer over a oneshot channel, so no
//! async worker ever blocks on disk. Schema changes are numbered migrations
//! applied at open, tracked in `PRAGMA user_version`.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

/// How long a writer waits for a lock held by another process before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Migrations, in order; entry `i` moves the schema from version `i` to `i + 1`.
/// Never edit a shipped migration: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: chat sessions and their transcripts.
    "CREATE TABLE sessions (
        key TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        title TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        turns INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_key TEXT NOT NULL REFERENCES sessions(key) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX messages_by_session ON messages(session_key, id);",
    // 2: stored Responses API responses. Each row holds its own turn and a
    // link to its predecessor, so storage grows linearly with a conversation.
    "CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        previous_id TEXT,
        session_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        instructions TEXT,
        input_items TEXT NOT NULL,
        turn_messages TEXT NOT NULL,
        response TEXT NOT NULL
    );
    CREATE INDEX responses_by_age ON responses(created_at);
    CREATE TABLE conversations (
        name TEXT PRIMARY KEY,
        response_id TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX conversations_by_response ON conversations(response_id);",
    // 3: small per-platform state that must survive restarts (the Telegram
    // polling offset).
    "CREATE TABLE platform_state (
        platform TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (platform, key)
    );",
    // 4: Responses API items clients refer back to (`item_reference`), the
    // API key that owns each response, and approvals a paused turn waits for.
    "ALTER TABLE responses ADD COLUMN owner TEXT NOT NULL DEFAULT '';
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
    CREATE INDEX approvals_by_response ON approvals(response_id);",
    // 5: delivery obligations: one per chat answer until it is delivered,
    // so an answer cut off by a restart is finished (or its user told).
    "CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        platform TEXT NOT NULL,
        session_key TEXT NOT NULL,
        chat TEXT NOT NULL,
        reply_to TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        messages TEXT NOT NULL DEFAULT '[]',
        current_id TEXT,
        current_text TEXT,
        current_stream INTEGER NOT NULL DEFAULT 0,
        final_text TEXT,
        run TEXT NOT NULL
    );
    CREATE INDEX deliveries_by_platform ON deliveries(platform, id);",
    // 6: work that outlives its connection. The events of stored responses
    // and of runs (replayed to clients that come back), runs themselves with
    // their durable idempotency keys, responses still running (`live`, so a
    // restart can end them), and the API key that created a session.
    "CREATE TABLE stream_events (
        stream_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (stream_id, seq)
    ) WITHOUT ROWID;
    ALTER TABLE responses ADD COLUMN live INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX responses_live ON responses(live) WHERE live = 1;
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        session_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        output_text TEXT NOT NULL DEFAULT '',
        usage TEXT,
        error TEXT,
        pending_approval TEXT,
        idempotency_key TEXT,
        body_hash TEXT
    );
    CREATE UNIQUE INDEX runs_by_idempotency ON runs(owner, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX runs_by_status ON runs(status);
    ALTER TABLE sessions ADD COLUMN owner TEXT;
    CREATE INDEX sessions_by_owner ON sessions(owner, updated_at);",
    // 7: leases (see `store::leases`): one holder at a time per name, with an
    // expiry in Unix milliseconds and a generation that grows with every
    // change of holder. The same table exists in the PostgreSQL schema.
    "CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        generation INTEGER NOT NULL DEFAULT 1
    );",
    // 8: the gateway instance that opened each delivery obligation, so an
    // instance taking a platform over leaves alone the answers another
    // instance, still alive (draining), is finishing.
    "ALTER TABLE deliveries ADD COLUMN instance TEXT;",
    // 9: the gateway instance running each live response and active run, so
    // a gateway starting beside a live one ends only what was cut off.
    "ALTER TABLE responses ADD COLUMN instance TEXT;
    ALTER TABLE runs ADD COLUMN instance TEXT;",
];

/// Errors of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the database thread has stopped")]
    Gone,
    #[error("cannot encode a record: {0}")]
    Encode(String),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL pool: {0}")]
    Pool(String),
    #[error("storage settings: {0}")]
    Config(String),
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A handle to the database thread; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    tx: std_mpsc::Sender<Job>,
}

impl Db {
    /// Opens (creating with mode 0600) and migrates the database, then starts its thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        create(path);
        // Create the file ourselves so it never exists with a wider mode;
        // SQLite gives its -wal and -shm files the same permissions.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // `synchronous` first: switching a new file (created here when
        // building it aside failed) to WAL writes its header through a
        // rollback journal, which the default (FULL) syncs twice and NORMAL
        // once. On a database already in WAL the switch writes nothing.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        let (tx, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("hermes-db".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|source| StoreError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self { tx })
    }

    /// Queues `f` on the database thread at once and returns a future of its
    /// result. The job runs even if the future is dropped, and jobs run in the
    /// order they were queued: a write queued before a read is seen by it.
    pub fn call<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, wait) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = done.send(f(conn));
        });
        let queued = self.tx.send(job).is_ok();
        async move {
            if !queued {
                return Err(StoreError::Gone);
            }
            wait.await.map_err(|_| StoreError::Gone)?
        }
    }
}

impl Db {
    /// Writes the WAL back into the database file (at shutdown).
    pub fn checkpoint(&self) -> impl Future<Output = Result<(), StoreError>> + use<> {
        self.call(|c| {
            c.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
            Ok(())
        })
    }
}

/// The name a new database is built under, beside where it will live.
const SIDE_SUFFIX: &str = ".new";

/// Builds a database that does not exist yet beside `path`, then links it
/// into place. Built in place, a first start syncs the disk five times
/// before it can answer (the rollback journal of the switch to WAL, its
/// directory, the file, the new WAL and its directory); built aside, with
/// no journal on disk and no syncs until it is whole, twice (the file, then
/// the directory that names it): about 1.5 ms less of a first start of 12
/// (BENCHMARKS.md, Round 6). A crash meanwhile leaves no half-built
/// database under `path`, only a side file the next first start replaces.
///
/// The link never replaces a database another process created meanwhile.
/// Anything that goes wrong here only means the database is created in
/// place by [`Db::open`], as before, which reports the errors. Returns
/// whether it built the database.
fn create(path: &Path) -> bool {
    if std::fs::symlink_metadata(path).is_ok() {
        return false;
    }
    let mut side = path.as_os_str().to_owned();
    side.push(SIDE_SUFFIX);
    let side = PathBuf::from(side);
    let built = build(&side).and_then(|()| publish(&side, path));
    if let Err(e) = &built {
        log::debug!(
            "building {} aside failed ({e}); creating it in place",
            path.display()
        );
    }
    let _ = std::fs::remove_file(&side);
    built.is_ok()
}

/// Creates the database file `side` (mode 0600), migrates it and switches
/// it to WAL, then syncs it once.
fn build(side: &Path) -> Result<(), StoreError> {
    let create = |source| StoreError::Create {
        path: side.to_path_buf(),
        source,
    };
    // Left by a first start that crashed.
    let _ = std::fs::remove_file(side);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(side)
        .map_err(create)?;
    {
        let mut conn = Connection::open(side)?;
        // Nothing here needs to survive a crash before the sync below:
        // the rollback journal stays in memory and nothing is synced.
        conn.pragma_update(None, "journal_mode", "MEMORY")?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    std::fs::File::open(side)
        .and_then(|f| f.sync_all())
        .map_err(create)
}

/// Gives the built database `side` the name `path` unless `path` exists
/// (a hard link fails rather than replace), then syncs the directory so
/// the name survives a crash.
fn publish(side: &Path, path: &Path) -> Result<(), StoreError> {
    let create = |source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::hard_link(side, path) {
        Ok(()) => {}
        // Another process created it first: that one is used.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(create(e)),
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(create)
}

/// Applies the migrations the database has not seen yet, each in a transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: usize =
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if current >= MIGRATIONS.len() {
        return Ok(());
    }
    // Every pending step in one transaction: one commit (and one fsync) on a
    // fresh install instead of one per step, and a failed step leaves the
    // database at the version it had, never between versions.
    let tx = conn.transaction()?;
    for sql in &MIGRATIONS[current..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    log::info!(
        "database migrated from version {current} to {}",
        MIGRATIONS.len()
    );
    Ok(())
}

/// The schema version this build writes.
pub fn schema_version() -> usize {
    MIGRATIONS.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn opens_migrates_and_is_private() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let db = Db::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let v: i64 = db
                .call(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
                .await
                .unwrap_or_default();
            assert_eq!(v as usize, schema_version());
            let mode: String = db
                .call(|c| Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?))
                .await
                .unwrap_or_default();
            assert_eq!(mode, "wal");
        });
        let perms = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(perms, 0o600);
        // Reopening applies nothing twice.
        assert!(Db::open(&path).is_ok());
        // Built aside and linked into place: nothing of the build is left.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("state.db-"))
            .collect();
        names.sort();
        assert_eq!(names, ["state.db"]);
    }

    /// The user version of the database at `path`, read directly.
    fn version_at(path: &Path) -> i64 {
        Connection::open(path)
            .and_then(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_new_database_is_built_aside_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        assert!(create(&path));
        assert_eq!(version_at(&path) as usize, schema_version());
        assert!(!create(&path), "an existing database was built again");
    }

    #[test]
    fn a_database_built_aside_never_replaces_one_created_meanwhile() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        let side = dir.path().join("state.db.new");
        build(&side).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version_at(&side) as usize, schema_version());
        // Another process created the database while this one built its own.
        let theirs = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        theirs
            .pragma_update(None, "user_version", 42)
            .unwrap_or_else(|e| panic!("{e}"));
        publish(&side, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            version_at(&path),
            42,
            "the other process's database was replaced"
        );
    }

    #[test]
    fn a_side_file_left_by_a_crash_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        // A first start that died while writing its side file.
        std::fs::write(dir.path().join("state.db.new"), b"half a database")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(Db::open(&path).is_ok());
        assert_eq!(version_at(&path) as usize, schema_version());
        assert!(!dir.path().join("state.db.new").exists());
    }
}
