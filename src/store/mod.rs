//! The storage interface: one [`Store`], two backends.
//!
//! - [`Store::Sqlite`]: the embedded `state.db` on its own thread
//!   ([`crate::db`]), the default: nothing to install or run beside the
//!   gateway.
//! - [`Store::Postgres`]: a pool of connections to a PostgreSQL server
//!   ([`pg`]) that several gateway instances share (`scale-out.md`).
//!
//! Each part of the durable state is a set of whole operations on `Store`
//! (one transaction each), written once per backend and tested against both
//! by the same behaviour tests ([`test_backends`]). The dispatch is a plain
//! `match`, not a trait object: two backends, known at compile time, and no
//! boxed futures on the hot path.
//!
//! Behind the interface: platform state ([`crate::platform_state`]), leases
//! ([`leases`]), session transcripts ([`crate::sessions`]), delivery
//! obligations ([`crate::deliveries`]), stored responses and runs with their
//! idempotency keys ([`responses`]) and the events of both ([`events`]).
//! `pg_*` files hold the PostgreSQL side of each; [`pg_listen`] hears what
//! other instances announce (`NOTIFY`).

pub mod commands;
pub mod events;
pub mod leases;
pub mod pg;
pub mod pg_listen;
pub mod pg_responses;
pub mod pg_runs;
pub mod pg_sessions;
pub mod pg_tls;
pub mod responses;

use futures_util::future::BoxFuture;

use crate::db::{Db, StoreError};
pub use pg::Pg;

/// What an operation on either backend answers: one boxed future, started
/// when the operation was called.
pub type Answer<T> = BoxFuture<'static, Result<T, StoreError>>;

/// Where durable state is kept; cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    /// The embedded SQLite database of this instance's home.
    Sqlite(Db),
    /// A PostgreSQL database shared with other instances.
    Postgres(Pg),
}

impl Store {
    /// The backend's name, as `/health/detailed` and the logs show it.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }
}

impl Store {
    /// Whether other gateway instances may share this store (PostgreSQL):
    /// their writes and deletes do not pass through this process.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// What other instances announce from now on (a released lease, a
    /// command, new events); nothing on SQLite.
    pub fn news(&self) -> pg_listen::News {
        match self {
            Store::Sqlite(_) => pg_listen::News::default(),
            Store::Postgres(pg) => pg_listen::News::from_receiver(pg.subscribe()),
        }
    }
}

impl From<Db> for Store {
    fn from(db: Db) -> Self {
        Store::Sqlite(db)
    }
}

/// The stores the storage behaviour tests run against: a fresh SQLite
/// database always, and a fresh PostgreSQL database when
/// `HERMES_TEST_POSTGRES_URL` names a server (`tests/postgres/start.sh`
/// starts one; `.ci/run` does). With `HERMES_REQUIRE_POSTGRES=1` (set by
/// `.ci/run`) a missing server fails the test instead of skipping its
/// PostgreSQL half, so CI can never pass without running it.
#[cfg(test)]
pub mod test_backends {
    use super::*;
    pub use crate::testing::postgres::{fresh_postgres_db, postgres_url};

    /// A store and what keeps it alive (the SQLite file's directory).
    pub struct Backend {
        pub store: Store,
        /// The PostgreSQL database's URL, for tests that open more
        /// instances on it.
        pub url: Option<String>,
        _dir: Option<tempfile::TempDir>,
    }

    /// Every backend the tests can reach, each with a fresh, migrated database.
    pub async fn all() -> Vec<Backend> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = Db::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
        let mut out = vec![Backend {
            store: Store::Sqlite(db),
            url: None,
            _dir: Some(dir),
        }];
        if let Some(url) = postgres_url() {
            let url = fresh_postgres_db(&url).await;
            let pg = Pg::connect(&url, 4).await.unwrap_or_else(|e| panic!("{e}"));
            out.push(Backend {
                store: Store::Postgres(pg),
                url: Some(url),
                _dir: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_backends::*;
    use super::*;

    #[tokio::test]
    async fn postgres_migrations_run_once_when_instances_start_together() {
        let Some(url) = postgres_url() else { return };
        let url = fresh_postgres_db(&url).await;
        // Three instances start at once: each must come up on a whole schema.
        let (a, b, c) = tokio::join!(
            Pg::connect(&url, 2),
            Pg::connect(&url, 2),
            Pg::connect(&url, 2)
        );
        let pgs: Vec<Pg> = [a, b, c]
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let version: i32 = pgs[0]
            .call(|c| async move {
                Ok(c.query_one("SELECT version FROM hermes_schema", &[])
                    .await?
                    .get(0))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version as usize, pg::schema_version());
        let rows: i64 = pgs[2]
            .call(|c| async move {
                Ok(c.query_one("SELECT count(*) FROM hermes_schema", &[])
                    .await?
                    .get(0))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows, 1);
    }

    #[tokio::test]
    async fn postgres_errors_never_quote_the_url() {
        let secret = "s3cret-password";
        for url in [
            format!("postgres://u:{secret}@[::1"),
            format!("postgres://u:{secret}@127.0.0.1:1/x?sslmode=require"),
            format!("postgres://u:{secret}@127.0.0.1:1/x?sslmode=require&sslrootcert=/none"),
        ] {
            let e = Pg::connect(&url, 1).await.err().map(|e| e.to_string());
            let e = e.unwrap_or_else(|| panic!("{url} connected"));
            assert!(!e.contains(secret), "{e}");
        }
        // Nothing listens on port 1: a clear connection error, no password.
        let e = Pg::connect(&format!("postgres://u:{secret}@127.0.0.1:1/x"), 1)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("PostgreSQL"), "{e}");
        assert!(!e.contains(secret), "{e}");
        // What the logs show of a URL: where it points, not who logs in.
        let shown = pg::describe(&format!("postgres://u:{secret}@db.internal:6543/hermes"));
        assert_eq!(shown, "db.internal:6543/hermes");
        assert_eq!(pg::describe("host=/run/pg dbname=x"), "/run/pg/x");
    }

    /// Whether `pg`'s connections are encrypted, as the server sees them.
    async fn encrypted(pg: &Pg) -> bool {
        pg.call(|c| async move {
            let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
            Ok(c.query_one(sql, &[]).await?.get(0))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn tls_is_used_when_the_url_asks_and_the_certificate_is_verified() {
        let Some(url) = postgres_url() else { return };
        let url = fresh_postgres_db(&url).await;
        let ca = std::env::var("HERMES_TEST_POSTGRES_CA").unwrap_or_default();
        // Verified against the test CA: connected, and the server says TLS.
        let tls = Pg::connect(&format!("{url}?sslmode=verify-full&sslrootcert={ca}"), 1).await;
        let tls = tls.unwrap_or_else(|e| panic!("{e}"));
        assert!(encrypted(&tls).await, "the connection is encrypted");
        // A certificate no known CA signed: refused, and said why.
        let e = Pg::connect(&format!("{url}?sslmode=require"), 1)
            .await
            .err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(e.to_lowercase().contains("certificate"), "{e}");
        // Without sslmode=require: plain, as before.
        let plain = Pg::connect(&url, 1).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!encrypted(&plain).await);
    }

    #[tokio::test]
    async fn ordered_jobs_land_in_the_order_they_were_queued() {
        let Some(url) = postgres_url() else { return };
        let pg = Pg::connect(&fresh_postgres_db(&url).await, 8)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Queue 50 writes without awaiting them, then wait on the last one.
        let mut last = None;
        for i in 0..50i32 {
            last = Some(pg.call_ordered(move |c| async move {
                c.execute(
                    "INSERT INTO platform_state (platform, key, value) VALUES ('t', 'k', $1)
                     ON CONFLICT (platform, key) DO UPDATE SET value = EXCLUDED.value",
                    &[&i.to_string()],
                )
                .await?;
                Ok(())
            }));
        }
        if let Some(last) = last {
            last.await.unwrap_or_else(|e| panic!("{e}"));
        }
        let v: String = pg
            .call(|c| async move {
                Ok(c.query_one("SELECT value FROM platform_state", &[])
                    .await?
                    .get(0))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, "49");
    }
}
