//! Commands for work another instance runs (PostgreSQL): stopping,
//! steering or answering the approval of a run, cancelling a response. The
//! work lives in the task of the instance that runs it, so a request that
//! reaches another instance is passed on: a row in `commands` addressed to
//! that instance, announced on [`pg_listen::COMMANDS`]; the instance takes
//! it once, acts, writes its answer and announces it on
//! [`pg_listen::ANSWERS`]. The asker waits up to [`COMMAND_WAIT`].
//!
//! Notifications only wake the parties early: both re-read the table on a
//! timer ([`ANSWER_POLL`], [`COMMAND_POLL`]), so a lost notification makes
//! a command slower, never lost.

use std::time::Duration;

use serde_json::Value;

use super::pg_listen;
use super::{Pg, Store};
use crate::db::StoreError;

/// How long an asker waits for the instance running the work to answer.
pub const COMMAND_WAIT: Duration = Duration::from_secs(5);
/// How often an asker re-reads its command for an answer without news.
const ANSWER_POLL: Duration = Duration::from_secs(1);
/// How often an instance looks for commands addressed to it without news.
pub const COMMAND_POLL: Duration = Duration::from_secs(2);
/// Commands older than this (by the database's clock) are removed by the
/// instance they were for (their asker gave up long ago, or died before
/// cleaning up).
const STALE_AFTER_SECS: i64 = 60;

/// A command taken by the instance it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: i64,
    /// The run or response it is about.
    pub target: String,
    pub body: Value,
}

impl Store {
    /// Sends `body` about `target` to `instance` and waits for its answer;
    /// `None` when none came within [`COMMAND_WAIT`] (twice that once the
    /// instance took the command: it is being carried out) or on SQLite, where
    /// no other instance can be asked).
    pub async fn ask(
        &self,
        instance: &str,
        target: &str,
        body: &Value,
    ) -> Result<Option<Value>, StoreError> {
        let Store::Postgres(pg) = self else {
            return Ok(None);
        };
        // Subscribed before sending: an answer cannot come before this.
        let mut news = pg.subscribe();
        let (instance, target, body) = (instance.to_string(), target.to_string(), body.to_string());
        let id: i64 = pg
            .call(move |mut c| async move {
                let tx = c.transaction().await?;
                let id = tx
                    .query_one(
                        "INSERT INTO commands (instance, target, body, created_at)
                         VALUES ($1, $2, $3, (extract(epoch FROM now()))::bigint) RETURNING id",
                        &[&instance, &target, &body],
                    )
                    .await?
                    .get(0);
                tx.execute("SELECT pg_notify('hermes_commands', $1)", &[&instance])
                    .await?;
                tx.commit().await?;
                Ok(id)
            })
            .await?;
        let mut deadline = tokio::time::Instant::now() + COMMAND_WAIT;
        let mut extended = false;
        let answer = loop {
            if let Some(a) = answer_of(pg, id).await? {
                break Some(a);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                // Withdrawn unless already taken: a command taken is being
                // carried out, so its answer is waited for once more rather
                // than reported as not done.
                if extended || withdraw(pg, id).await? {
                    break None;
                }
                extended = true;
                deadline += COMMAND_WAIT;
                continue;
            }
            pg_listen::wait_for(
                &mut news,
                pg_listen::ANSWERS,
                &id.to_string(),
                left.min(ANSWER_POLL),
            )
            .await;
        };
        pg.call(move |c| async move {
            c.execute("DELETE FROM commands WHERE id = $1", &[&id])
                .await?;
            Ok(())
        })
        .await?;
        Ok(answer.and_then(|a| serde_json::from_str(&a).ok()))
    }

    /// Takes the commands addressed to `instance` that nobody took yet
    /// (each is taken once), and removes stale ones.
    pub async fn take_commands(&self, instance: &str) -> Result<Vec<Command>, StoreError> {
        let Store::Postgres(pg) = self else {
            return Ok(Vec::new());
        };
        let instance = instance.to_string();
        pg.call(move |c| async move {
            c.execute(
                "DELETE FROM commands WHERE instance = $1
                   AND created_at < (extract(epoch FROM now()))::bigint - $2",
                &[&instance, &STALE_AFTER_SECS],
            )
            .await?;
            let rows = c
                .query(
                    "UPDATE commands SET taken = 1 WHERE instance = $1 AND taken = 0
                     RETURNING id, target, body",
                    &[&instance],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Command {
                    id: r.get(0),
                    target: r.get(1),
                    body: serde_json::from_str(r.get(2)).unwrap_or(Value::Null),
                })
                .collect())
        })
        .await
    }

    /// Answers command `id` and says so to its asker.
    pub async fn answer_command(&self, id: i64, answer: &Value) -> Result<(), StoreError> {
        let Store::Postgres(pg) = self else {
            return Ok(());
        };
        let answer = answer.to_string();
        pg.call(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "UPDATE commands SET answer = $2 WHERE id = $1",
                &[&id, &answer],
            )
            .await?;
            tx.execute("SELECT pg_notify('hermes_answers', $1)", &[&id.to_string()])
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}

/// Withdraws command `id` if nobody took it yet; whether it did.
async fn withdraw(pg: &Pg, id: i64) -> Result<bool, StoreError> {
    pg.call(move |c| async move {
        let gone = c
            .execute("DELETE FROM commands WHERE id = $1 AND taken = 0", &[&id])
            .await?;
        Ok(gone > 0)
    })
    .await
}

/// The answer of command `id`, once written.
async fn answer_of(pg: &Pg, id: i64) -> Result<Option<String>, StoreError> {
    pg.call(move |c| async move {
        Ok(
            c.query_opt("SELECT answer FROM commands WHERE id = $1", &[&id])
                .await?
                .and_then(|r| r.get(0)),
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::super::test_backends;
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_command_reaches_its_instance_once_and_its_answer_comes_back() {
        let Some(url) = test_backends::postgres_url() else {
            return;
        };
        let url = test_backends::fresh_postgres_db(&url).await;
        let asker = Store::Postgres(Pg::connect(&url, 2).await.unwrap_or_else(|e| panic!("{e}")));
        let runner = Store::Postgres(Pg::connect(&url, 2).await.unwrap_or_else(|e| panic!("{e}")));
        // The runner serves its commands: each answered with what it said.
        let serving = {
            let runner = runner.clone();
            tokio::spawn(async move {
                let mut news = runner.news();
                let mut served = Vec::new();
                while served.len() < 2 {
                    for c in runner.take_commands("gw-b").await.unwrap_or_default() {
                        let answer = json!({"ok": true, "echo": c.body, "target": c.target});
                        let _ = runner.answer_command(c.id, &answer).await;
                        served.push(c.id);
                    }
                    news.wait(pg_listen::COMMANDS, "gw-b", COMMAND_POLL).await;
                }
                served
            })
        };
        let a = asker.ask("gw-b", "run_1", &json!({"op": "stop"})).await;
        let a = a
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no answer"));
        assert_eq!(
            a,
            json!({"ok": true, "echo": {"op": "stop"}, "target": "run_1"})
        );
        let b = asker.ask("gw-b", "run_2", &json!({"op": "steer"})).await;
        assert!(matches!(b, Ok(Some(_))), "{b:?}");
        let served = serving.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(served.len(), 2, "each taken once");
        // Answered commands are removed by their asker.
        assert!(
            runner
                .take_commands("gw-b")
                .await
                .unwrap_or_default()
                .is_empty()
        );
        // Nobody serves gw-c: no answer within the wait.
        let t = std::time::Instant::now();
        let none = asker.ask("gw-c", "run_3", &json!({})).await;
        assert!(matches!(none, Ok(None)), "{none:?}");
        assert!(t.elapsed() >= COMMAND_WAIT);
        // SQLite has no other instance to ask.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db =
            crate::db::Db::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
        let local = Store::Sqlite(db);
        assert!(matches!(local.ask("gw-b", "x", &json!({})).await, Ok(None)));
    }
}
