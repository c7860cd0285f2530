//! Leases: a named right that one holder has at a time, until an expiry it
//! renews (`scale-out.md`): one consumer per platform credential, one running
//! turn per session, one instance finishing a delivery.
//!
//! Time is the database's clock, never an instance's, so instances whose
//! clocks disagree still agree on when a lease has expired. A lease's
//! generation grows with every change of holder: a holder that renews and
//! sees a generation other than its own knows it lost the lease in between.
//! Releasing sets the expiry to 0 (the row and its generation stay), so the
//! next instance can take it at once; on PostgreSQL the release is announced
//! (`NOTIFY` on [`super::pg_listen::LEASES`]), so a standby instance hears of it at
//! once ([`Store::news`]). On
//! either backend an instance's lease
//! operations land in the order it made them (PostgreSQL: the ordered lane),
//! so a renewal already on its way never lands after a release.

use std::time::Duration;

use futures_util::future::BoxFuture;
use rusqlite::OptionalExtension;

use super::Store;
use crate::db::StoreError;

/// A lease as it stands in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The instance that holds (or last held) it.
    pub holder: String,
    /// Unix milliseconds, by the database's clock; 0 once released.
    pub expires_at_ms: i64,
    /// Grows by one with every change of holder.
    pub generation: i64,
}

/// "Now" in Unix milliseconds, by each database's own clock.
const SQLITE_NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";
const PG_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// The take-or-renew statement for a backend: it writes only when the lease
/// is free, expired, or already this holder's, and returns the row it wrote.
/// `$1` name, `$2` holder, `$3` time to live in milliseconds (the same
/// placeholders work in both dialects).
fn acquire_sql(now: &str) -> String {
    format!(
        "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, {now} + $3)
         ON CONFLICT (name) DO UPDATE SET
             generation = CASE WHEN leases.holder = excluded.holder
                               THEN leases.generation ELSE leases.generation + 1 END,
             holder = excluded.holder,
             expires_at = excluded.expires_at
         WHERE leases.holder = excluded.holder OR leases.expires_at <= {now}
         RETURNING holder, expires_at, generation"
    )
}

/// The statement that takes a lease from a holder known to be gone, whatever
/// its expiry: `$1` new holder, `$2` time to live in milliseconds, `$3`
/// name, `$4` the gone holder (in the order they appear, as SQLite numbers
/// `$n` parameters by first appearance).
fn take_over_sql(now: &str) -> String {
    format!(
        "UPDATE leases SET holder = $1, expires_at = {now} + $2, generation = generation + 1
         WHERE name = $3 AND holder = $4
         RETURNING holder, expires_at, generation"
    )
}

const RELEASE_SQL: &str = "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2";
/// [`RELEASE_SQL`] that also announces the release on
/// [`super::pg_listen::LEASES`], so standby instances take the lease at once.
const PG_RELEASE_SQL: &str = "WITH r AS (
        UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 RETURNING name
    ) SELECT pg_notify('hermes_leases', name) FROM r";
const READ_SQL: &str = "SELECT holder, expires_at, generation FROM leases WHERE name = $1";

/// [`READ_SQL`] for a lease that has not expired, by the database's clock.
fn read_live_sql(now: &str) -> String {
    format!("{READ_SQL} AND expires_at > {now}")
}

/// A lease from a row of `holder, expires_at, generation`.
fn sqlite_lease(r: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        holder: r.get(0)?,
        expires_at_ms: r.get(1)?,
        generation: r.get(2)?,
    })
}

/// [`sqlite_lease`] for PostgreSQL's rows.
fn pg_lease(r: &tokio_postgres::Row) -> Lease {
    Lease {
        holder: r.get(0),
        expires_at_ms: r.get(1),
        generation: r.get(2),
    }
}

/// Milliseconds of a time to live, saturating.
fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Store {
    /// Takes `name` for `holder` for `ttl`, or renews it when `holder` has
    /// it already. `None` when another holder's lease has not expired.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let (name, holder, ttl) = (name.to_string(), holder.to_string(), millis(ttl));
        match self {
            Store::Sqlite(db) => {
                db.call(move |c| {
                    Ok(c.query_row(
                        &acquire_sql(SQLITE_NOW_MS),
                        rusqlite::params![name, holder, ttl],
                        sqlite_lease,
                    )
                    .optional()?)
                })
                .await
            }
            Store::Postgres(pg) => {
                pg.call_ordered(move |c| async move {
                    let row = c
                        .query_opt(&acquire_sql(PG_NOW_MS), &[&name, &holder, &ttl])
                        .await?;
                    Ok(row.as_ref().map(pg_lease))
                })
                .await
            }
        }
    }

    /// Takes `name` for `holder` from `gone`, a holder known to have ended
    /// (see `platforms::liveness`), without waiting for its lease to
    /// expire. `None` when `gone` no longer holds it.
    pub async fn take_over_lease(
        &self,
        name: &str,
        holder: &str,
        gone: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let (name, holder, gone, ttl) = (
            name.to_string(),
            holder.to_string(),
            gone.to_string(),
            millis(ttl),
        );
        match self {
            Store::Sqlite(db) => {
                db.call(move |c| {
                    Ok(c.query_row(
                        &take_over_sql(SQLITE_NOW_MS),
                        rusqlite::params![holder, ttl, name, gone],
                        sqlite_lease,
                    )
                    .optional()?)
                })
                .await
            }
            Store::Postgres(pg) => {
                pg.call_ordered(move |c| async move {
                    let sql = take_over_sql(PG_NOW_MS);
                    let row = c.query_opt(&sql, &[&holder, &ttl, &name, &gone]).await?;
                    Ok(row.as_ref().map(pg_lease))
                })
                .await
            }
        }
    }

    /// Gives `name` up if `holder` has it; `true` when it did. Queued at
    /// once, so it happens even if the returned future is dropped (a
    /// consumer giving its lease up as it ends).
    pub fn release_lease(
        &self,
        name: &str,
        holder: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + use<> {
        let (name, holder) = (name.to_string(), holder.to_string());
        let queued: BoxFuture<'static, Result<bool, StoreError>> = match self {
            Store::Sqlite(db) => {
                Box::pin(db.call(move |c| Ok(c.execute(RELEASE_SQL, [&name, &holder])? > 0)))
            }
            Store::Postgres(pg) => Box::pin(pg.call_ordered(move |c| async move {
                Ok(!c.query(PG_RELEASE_SQL, &[&name, &holder]).await?.is_empty())
            })),
        };
        queued
    }

    /// Deletes the leases named `prefix…` that expired (or were released)
    /// more than `age` ago: a session's turn lease is taken once per turn,
    /// and its row would otherwise stay for good. Returns how many.
    pub async fn forget_leases(&self, prefix: &str, age: Duration) -> Result<usize, StoreError> {
        let (pattern, age) = (format!("{}%", prefix.replace(['%', '_'], "")), millis(age));
        let sql = |now: &str| {
            format!("DELETE FROM leases WHERE name LIKE $1 AND expires_at < {now} - $2")
        };
        match self {
            Store::Sqlite(db) => {
                db.call(move |c| {
                    Ok(c.execute(&sql(SQLITE_NOW_MS), rusqlite::params![pattern, age])?)
                })
                .await
            }
            Store::Postgres(pg) => {
                pg.call(move |c| async move {
                    let n = c.execute(&sql(PG_NOW_MS), &[&pattern, &age]).await?;
                    Ok(usize::try_from(n).unwrap_or(usize::MAX))
                })
                .await
            }
        }
    }

    /// The lease on `name` as it stands (expired or not), if it was ever taken.
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.read_lease(name, READ_SQL.to_string(), READ_SQL.to_string())
            .await
    }

    /// The lease on `name` if it is held now (not expired by the database's
    /// clock, not released).
    pub async fn live_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.read_lease(name, read_live_sql(SQLITE_NOW_MS), read_live_sql(PG_NOW_MS))
            .await
    }

    /// Reads one lease row with the statement for this backend.
    async fn read_lease(
        &self,
        name: &str,
        sqlite_sql: String,
        pg_sql: String,
    ) -> Result<Option<Lease>, StoreError> {
        let name = name.to_string();
        match self {
            Store::Sqlite(db) => {
                db.call(move |c| Ok(c.query_row(&sqlite_sql, [&name], sqlite_lease).optional()?))
                    .await
            }
            Store::Postgres(pg) => {
                pg.call_ordered(move |c| async move {
                    let row = c.query_opt(&pg_sql, &[&name]).await?;
                    Ok(row.as_ref().map(pg_lease))
                })
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_backends;
    use super::*;
    use crate::store::pg_listen;

    const TTL: Duration = Duration::from_secs(10);

    fn ok<T>(r: Result<T, StoreError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_renewal_keeps_the_generation() {
        for b in test_backends::all().await {
            let s = &b.store;
            let a = ok(s.acquire_lease("telegram:bot", "a", TTL).await);
            let a = a.unwrap_or_else(|| panic!("{}: a free lease is taken", s.backend()));
            assert_eq!((a.holder.as_str(), a.generation), ("a", 1));
            // Another holder cannot take it while it runs.
            assert_eq!(ok(s.acquire_lease("telegram:bot", "b", TTL).await), None);
            // The holder renews it: same generation, an expiry not earlier.
            let renewed = ok(s.acquire_lease("telegram:bot", "a", TTL).await);
            let renewed = renewed.unwrap_or_else(|| panic!("{}: renewal", s.backend()));
            assert_eq!(renewed.generation, 1);
            assert!(renewed.expires_at_ms >= a.expires_at_ms);
            // Other names are independent.
            assert!(ok(s.acquire_lease("discord:bot", "b", TTL).await).is_some());
            assert_eq!(ok(s.lease("telegram:bot").await), Some(renewed.clone()));
            assert_eq!(ok(s.live_lease("telegram:bot").await), Some(renewed));
            assert_eq!(ok(s.lease("never").await), None);
            // Released: still readable, no longer live.
            assert!(ok(s.release_lease("discord:bot", "b").await));
            assert!(ok(s.lease("discord:bot").await).is_some());
            assert_eq!(ok(s.live_lease("discord:bot").await), None);
            // Old released rows under a prefix can be forgotten; live ones stay.
            assert_eq!(ok(s.forget_leases("discord:", Duration::ZERO).await), 1);
            assert_eq!(ok(s.lease("discord:bot").await), None);
            assert_eq!(ok(s.forget_leases("telegram:", Duration::ZERO).await), 0);
        }
    }

    #[tokio::test]
    async fn an_expired_lease_passes_to_the_next_holder_with_a_new_generation() {
        for b in test_backends::all().await {
            let s = &b.store;
            assert!(ok(s.acquire_lease("l", "a", Duration::ZERO).await).is_some());
            // The lease expired at once (time to live 0): b takes it over.
            let b_has = ok(s.acquire_lease("l", "b", TTL).await);
            let b_has = b_has.unwrap_or_else(|| panic!("{}: takeover", s.backend()));
            assert_eq!((b_has.holder.as_str(), b_has.generation), ("b", 2));
            // a comes back: it no longer holds it, and cannot renew.
            assert_eq!(ok(s.acquire_lease("l", "a", TTL).await), None);
            assert!(!ok(s.release_lease("l", "a").await));
        }
    }

    #[tokio::test]
    async fn a_gone_holders_lease_is_taken_over_before_it_expires() {
        for b in test_backends::all().await {
            let s = &b.store;
            assert!(ok(s.acquire_lease("l", "a", TTL).await).is_some());
            let taken = ok(s.take_over_lease("l", "b", "a", TTL).await);
            let taken = taken.unwrap_or_else(|| panic!("{}: take over", s.backend()));
            assert_eq!((taken.holder.as_str(), taken.generation), ("b", 2));
            // Only from the holder named: c cannot take b's lease as a's.
            assert_eq!(ok(s.take_over_lease("l", "c", "a", TTL).await), None);
            assert_eq!(ok(s.acquire_lease("l", "a", TTL).await), None);
        }
    }

    #[tokio::test]
    async fn a_released_lease_is_free_at_once() {
        for b in test_backends::all().await {
            let s = &b.store;
            assert!(ok(s.acquire_lease("l", "a", TTL).await).is_some());
            assert!(ok(s.release_lease("l", "a").await));
            let l = ok(s.lease("l").await).unwrap_or_else(|| panic!("kept"));
            assert_eq!((l.holder.as_str(), l.expires_at_ms), ("a", 0));
            let b_has = ok(s.acquire_lease("l", "b", TTL).await);
            assert_eq!(b_has.map(|l| l.generation), Some(2), "{}", s.backend());
        }
    }

    #[tokio::test]
    async fn another_instance_hears_a_release_at_once_on_postgres() {
        let Some(url) = test_backends::postgres_url() else {
            return;
        };
        let url = test_backends::fresh_postgres_db(&url).await;
        let (holder, standby) = (
            Store::Postgres(ok(super::super::Pg::connect(&url, 1).await)),
            Store::Postgres(ok(super::super::Pg::connect(&url, 1).await)),
        );
        assert!(ok(holder.acquire_lease("l", "a", TTL).await).is_some());
        let mut releases = standby.news();
        // Barrier: the standby's listener is up once it hears a probe.
        let mut heard = false;
        for _ in 0..100 {
            if let Store::Postgres(pg) = &holder {
                ok(pg
                    .call(|c| async move {
                        c.batch_execute("NOTIFY hermes_leases, 'probe'").await?;
                        Ok(())
                    })
                    .await);
            }
            let probe = releases.wait(pg_listen::LEASES, "probe", Duration::from_millis(100));
            if tokio::time::timeout(Duration::from_millis(90), probe)
                .await
                .is_ok()
            {
                heard = true;
                break;
            }
        }
        assert!(heard, "the listener never came up");
        // Released by its holder: the standby's minute-long wait ends at once.
        assert!(ok(holder.release_lease("l", "a").await));
        let woke = tokio::time::timeout(
            Duration::from_secs(10),
            releases.wait(pg_listen::LEASES, "l", Duration::from_secs(60)),
        )
        .await;
        assert!(woke.is_ok(), "the release was not heard");
        assert!(ok(standby.acquire_lease("l", "b", TTL).await).is_some());
        // SQLite has no news of releases: the wait is the whole limit.
        let mut plain = pg_listen::News::default();
        let t = std::time::Instant::now();
        plain
            .wait(pg_listen::LEASES, "l", Duration::from_millis(50))
            .await;
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn racing_instances_never_both_hold_a_lease() {
        for b in test_backends::all().await {
            let s = &b.store;
            // Eight instances (on PostgreSQL, each with its own pool: one
            // instance's lease operations are ordered) race for one free
            // lease, many rounds.
            let mut contenders = Vec::new();
            for _ in 0..8 {
                contenders.push(match &b.url {
                    Some(url) => Store::Postgres(ok(super::super::Pg::connect(url, 1).await)),
                    None => s.clone(),
                });
            }
            for round in 0..20 {
                let name = format!("race-{round}");
                let tries = contenders.iter().enumerate().map(|(i, s)| {
                    let (s, name) = (s.clone(), name.clone());
                    async move { s.acquire_lease(&name, &format!("i{i}"), TTL).await }
                });
                let won = futures_util::future::join_all(tries)
                    .await
                    .into_iter()
                    .map(ok)
                    .filter(Option::is_some)
                    .count();
                assert_eq!(won, 1, "{} round {round}", s.backend());
            }
        }
    }
}
