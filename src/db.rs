//! The embedded database `$HERMES_HOME/state.db` (SQLite in WAL mode, file
//! mode 0600), owned by one dedicated thread.
//!
//! Async code never touches the connection: [`Db::call`] sends a closure to
//! the database thread and awaits its answer over a oneshot channel, so no
//! async worker ever blocks on disk. Schema changes are numbered migrations
//! applied at open, tracked in `PRAGMA user_version`.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
/// database under `path`, only a side file the next start removes or
/// rebuilds.
///
/// Two processes starting on one fresh home never share the side file: it
/// is locked while it is built, and only the holder of the lock on the file
/// the side name points to may remove that name. The link never replaces a
/// database that exists. Anything that goes wrong here only means the
/// database is created in place by [`Db::open`], as before, which reports
/// the errors. Returns whether it built a database (linked to `path`
/// unless another process created one there first).
fn create(path: &Path) -> bool {
    let side = side_path(path);
    if std::fs::symlink_metadata(path).is_ok() {
        // A side file nobody is building is left from a crash (after the
        // link, a second name of the database).
        if lock_side(&side, false).is_some() {
            let _ = std::fs::remove_file(&side);
        }
        return false;
    }
    let Some(file) = lock_side(&side, true) else {
        return false;
    };
    // Created meanwhile, or the side file is also another file's name (a
    // crash after the link, then a rename): emptying it would destroy that.
    if std::fs::symlink_metadata(path).is_ok() || file.metadata().map_or(true, |m| m.nlink() != 1) {
        let _ = std::fs::remove_file(&side);
        return false;
    }
    let built = build(&side, &file).and_then(|()| publish(&side, &file, path));
    if names(&side, &file) {
        let _ = std::fs::remove_file(&side);
    }
    // The directory that names the database, synced once the side name is
    // gone.
    let synced = built.and_then(|()| sync_dir(path));
    if let Err(e) = &synced {
        log::debug!(
            "building {} aside failed ({e}); creating it in place",
            path.display()
        );
    }
    synced.is_ok()
}

/// Where the database `path` is built: beside it, with [`SIDE_SUFFIX`].
fn side_path(path: &Path) -> PathBuf {
    let mut side = path.as_os_str().to_owned();
    side.push(SIDE_SUFFIX);
    PathBuf::from(side)
}

/// Opens the side file (creating it, mode 0600, when `create`) and locks it
/// without waiting. `None` when another process holds it, or when its name
/// no longer points to it (its holder removed the name before letting go).
fn lock_side(side: &Path, create: bool) -> Option<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .open(side)
        .ok()?;
    file.try_lock().ok()?;
    names(side, &file).then_some(file)
}

/// Whether the name `side` points to the open file `file`.
fn names(side: &Path, file: &std::fs::File) -> bool {
    match (std::fs::symlink_metadata(side), file.metadata()) {
        (Ok(n), Ok(f)) => n.dev() == f.dev() && n.ino() == f.ino(),
        _ => false,
    }
}

/// Empties the locked side file `file` (a crash may have left half a
/// database in it), migrates it as a new database through SQLite and
/// switches it to WAL, then syncs it once.
fn build(side: &Path, file: &std::fs::File) -> Result<(), StoreError> {
    let create = |source| StoreError::Create {
        path: side.to_path_buf(),
        source,
    };
    file.set_len(0).map_err(create)?;
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
    file.sync_all().map_err(create)
}

/// Gives the built database the name `path` unless `path` exists (a hard
/// link fails rather than replace one). SQLite wrote it through the name
/// `side`; that name still pointing to the locked `file` shows it is the
/// file that was synced.
fn publish(side: &Path, file: &std::fs::File, path: &Path) -> Result<(), StoreError> {
    let create = |source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    };
    if !names(side, file) {
        return Err(create(std::io::Error::other("the side file was replaced")));
    }
    match std::fs::hard_link(side, path) {
        Ok(()) => Ok(()),
        // Another process created it first: that one is used.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(create(e)),
    }
}

/// Syncs the directory holding `path`, so a new name in it survives a crash.
fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Create {
            path: dir.to_path_buf(),
            source,
        })
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

    /// An empty home: its directory, the database's path and its side file's.
    fn fresh_home() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        let side = side_path(&path);
        (dir, path, side)
    }

    #[test]
    fn a_new_database_is_built_aside_once() {
        let (_dir, path, _) = fresh_home();
        assert!(create(&path));
        assert_eq!(version_at(&path) as usize, schema_version());
        // Already in WAL, so opening it writes nothing.
        let mode: String = Connection::open(&path)
            .and_then(|c| c.pragma_query_value(None, "journal_mode", |r| r.get(0)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode, "wal");
        assert!(!create(&path), "an existing database was built again");
    }

    #[test]
    fn a_database_built_aside_never_replaces_one_created_meanwhile() {
        let (_dir, path, side) = fresh_home();
        let file = lock_side(&side, true).unwrap_or_else(|| panic!("cannot lock the side file"));
        build(&side, &file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version_at(&side) as usize, schema_version());
        // Another process created the database while this one built its own.
        let theirs = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        theirs
            .pragma_update(None, "user_version", 42)
            .unwrap_or_else(|e| panic!("{e}"));
        publish(&side, &file, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            version_at(&path),
            42,
            "the other process's database was replaced"
        );
    }

    #[test]
    fn a_side_file_left_by_a_crash_is_rebuilt() {
        let (_dir, path, side) = fresh_home();
        // A first start that died while writing its side file.
        std::fs::write(&side, b"half a database").unwrap_or_else(|e| panic!("{e}"));
        assert!(create(&path));
        assert_eq!(version_at(&path) as usize, schema_version());
        assert!(!side.exists());
    }

    #[test]
    fn a_side_file_another_process_is_building_is_left_alone() {
        let (_dir, path, side) = fresh_home();
        let _theirs = lock_side(&side, true).unwrap_or_else(|| panic!("cannot lock the side file"));
        std::fs::write(&side, b"their half").unwrap_or_else(|e| panic!("{e}"));
        assert!(!create(&path));
        assert_eq!(std::fs::read(&side).unwrap_or_default(), b"their half");
        assert!(!path.exists());
    }

    #[test]
    fn a_second_name_left_by_a_crash_after_the_link_is_removed() {
        let (_dir, path, side) = fresh_home();
        assert!(create(&path));
        std::fs::hard_link(&path, &side).unwrap_or_else(|e| panic!("{e}"));
        assert!(!create(&path));
        assert!(!side.exists());
        assert_eq!(version_at(&path) as usize, schema_version());
    }

    #[test]
    fn a_side_name_shared_with_another_file_never_empties_it() {
        let (dir, path, side) = fresh_home();
        // A crash after the link left a second name; the database was then
        // renamed away (a backup), so only the side name is next to it.
        let backup = dir.path().join("backup.db");
        std::fs::write(&backup, b"the user's data").unwrap_or_else(|e| panic!("{e}"));
        std::fs::hard_link(&backup, &side).unwrap_or_else(|e| panic!("{e}"));
        assert!(!create(&path));
        assert_eq!(
            std::fs::read(&backup).unwrap_or_default(),
            b"the user's data"
        );
        assert!(!side.exists());
    }
}
