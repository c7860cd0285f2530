//! `/v1/runs` runs in the embedded database: plain functions on a
//! connection, run on the database thread.
//!
//! A row holds what `GET /v1/runs/{id}` shows and the run's durable
//! `Idempotency-Key` (kept [`IDEMPOTENCY_TTL_SECS`], per API key, with the
//! SHA-256 of the request body). Its events live in `stream_events` beside
//! those of responses (see [`crate::journal`]).

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use crate::db::StoreError;
use crate::journal;

/// How long an `Idempotency-Key` of `/v1/runs` names its run.
pub const IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;

/// Statuses a run can still leave.
pub const ACTIVE: [&str; 3] = ["queued", "running", "requires_approval"];

/// One run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunRow {
    pub id: String,
    /// The API key (by name) that created it.
    pub owner: String,
    pub session_id: String,
    pub status: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub output_text: String,
    /// Usage as JSON.
    pub usage: Option<String>,
    pub error: Option<String>,
    /// `{approval_id, command, reason, expires_at}` as JSON.
    pub pending_approval: Option<String>,
}

impl RunRow {
    /// Whether the run has ended.
    pub fn finished(&self) -> bool {
        !ACTIVE.contains(&self.status.as_str())
    }

    /// The run as `GET /v1/runs/{id}` shows it.
    pub fn to_json(&self) -> Value {
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .unwrap_or(Value::Null)
        };
        json!({
            "id": self.id,
            "object": "hermes.run",
            "status": self.status,
            "session_id": self.session_id,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "output_text": self.output_text,
            "usage": parse(&self.usage),
            "error": self.error,
            "pending_approval": parse(&self.pending_approval),
        })
    }
}

const COLUMNS: &str = "id, owner, session_id, status, created_at, started_at, finished_at, \
                       output_text, usage, error, pending_approval";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        owner: r.get(1)?,
        session_id: r.get(2)?,
        status: r.get(3)?,
        created_at: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        output_text: r.get(7)?,
        usage: r.get(8)?,
        error: r.get(9)?,
        pending_approval: r.get(10)?,
    })
}

/// A run by id.
pub fn get(c: &Connection, id: &str) -> Result<Option<RunRow>, StoreError> {
    let mut stmt = c.prepare_cached(&format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"))?;
    Ok(stmt.query_row([id], row).optional()?)
}

/// What an `Idempotency-Key` names.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key is new (or expired): the run was inserted.
    Inserted,
    /// The key names this run, created with the same body.
    Replay(Box<RunRow>),
    /// The key was used with another body.
    Conflict,
}

/// Inserts a new run, claiming `idempotency` (key, body hash) for it when
/// given; a key still held by an earlier run answers with that run instead.
pub fn insert(
    c: &mut Connection,
    run: &RunRow,
    idempotency: Option<(&str, &str)>,
    now: i64,
) -> Result<Claim, StoreError> {
    let tx = c.transaction()?;
    if let Some((key, hash)) = idempotency {
        let held: Option<(String, String, i64)> = tx
            .query_row(
                "SELECT id, body_hash, created_at FROM runs WHERE owner = ?1 AND idempotency_key = ?2",
                params![run.owner, key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((id, held_hash, at)) = held {
            if at >= now - IDEMPOTENCY_TTL_SECS {
                if held_hash != hash {
                    return Ok(Claim::Conflict);
                }
                let existing = get(&tx, &id)?;
                return Ok(existing.map_or(Claim::Conflict, |r| Claim::Replay(Box::new(r))));
            }
            // Expired: the key is free again.
            tx.execute(
                "UPDATE runs SET idempotency_key = NULL, body_hash = NULL WHERE id = ?1",
                [&id],
            )?;
        }
    }
    let (key, hash) = idempotency.unzip();
    tx.execute(
        "INSERT INTO runs (id, owner, session_id, status, created_at, idempotency_key, body_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            run.id,
            run.owner,
            run.session_id,
            run.status,
            run.created_at,
            key,
            hash
        ],
    )?;
    tx.commit()?;
    Ok(Claim::Inserted)
}

/// Forgets a run that never started (its start failed).
pub fn remove(c: &Connection, id: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM runs WHERE id = ?1", [id])?;
    journal::delete(c, id)
}

/// Writes a run's changing fields.
pub fn update(c: &Connection, r: &RunRow) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE runs SET status = ?2, started_at = ?3, finished_at = ?4, output_text = ?5,
           usage = ?6, error = ?7, pending_approval = ?8 WHERE id = ?1",
    )?
    .execute(params![
        r.id,
        r.status,
        r.started_at,
        r.finished_at,
        r.output_text,
        r.usage,
        r.error,
        r.pending_approval
    ])?;
    Ok(())
}

/// Deletes finished runs created before `min_created_at`, with their
/// events (runs are kept as long as stored responses); returns how many.
pub fn evict(c: &mut Connection, min_created_at: i64) -> Result<usize, StoreError> {
    let tx = c.transaction()?;
    tx.execute(
        "DELETE FROM stream_events WHERE stream_id IN (SELECT id FROM runs
           WHERE created_at < ?1 AND status NOT IN ('queued', 'running', 'requires_approval'))",
        [min_created_at],
    )?;
    let n = tx.execute(
        "DELETE FROM runs WHERE created_at < ?1
           AND status NOT IN ('queued', 'running', 'requires_approval')",
        [min_created_at],
    )?;
    tx.commit()?;
    Ok(n)
}

/// Ends every run an earlier process left going: `interrupted`, with a
/// `run.interrupted` event after its last one. Returns their ids.
pub fn interrupt_left_over(c: &mut Connection, now: i64) -> Result<Vec<String>, StoreError> {
    let tx = c.transaction()?;
    let ids: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT id FROM runs WHERE status IN ('queued', 'running', 'requires_approval')",
        )?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for id in &ids {
        // The text it had streamed is what it said.
        let text: String = journal::read_after(&tx, id, 0)?
            .iter()
            .filter(|e| e.kind == "message.delta")
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .filter_map(|v| v["delta"].as_str().map(String::from))
            .collect();
        tx.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = ?2, pending_approval = NULL,
               output_text = ?3 WHERE id = ?1",
            params![id, now, text],
        )?;
        let last: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM stream_events WHERE stream_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        let closing = std::sync::Arc::new(journal::Event {
            seq: (last + 1).max(1) as u64,
            kind: "run.interrupted".into(),
            data: json!({"run_id": id}).to_string(),
        });
        journal::write_in(&tx, id, &[closing])?;
    }
    tx.commit()?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> Connection {
        let mut c = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        crate::db::migrate(&mut c).unwrap_or_else(|e| panic!("{e}"));
        c
    }

    fn run(id: &str, owner: &str, at: i64) -> RunRow {
        RunRow {
            id: id.into(),
            owner: owner.into(),
            session_id: "s".into(),
            status: "queued".into(),
            created_at: at,
            ..RunRow::default()
        }
    }

    #[test]
    fn an_idempotency_key_replays_conflicts_and_expires_per_owner() {
        let mut c = open();
        let ins = |c: &mut Connection, r: RunRow, hash: &str, now| {
            insert(c, &r, Some(("k1", hash)), now).unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(
            ins(&mut c, run("run_a", "alice", 100), "h", 100),
            Claim::Inserted
        );
        match ins(&mut c, run("run_b", "alice", 200), "h", 200) {
            Claim::Replay(r) => assert_eq!(r.id, "run_a"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ins(&mut c, run("run_c", "alice", 200), "other", 200),
            Claim::Conflict
        );
        // Another key's namespace is its own.
        assert_eq!(
            ins(&mut c, run("run_d", "bob", 200), "x", 200),
            Claim::Inserted
        );
        // After 24 h the key is free again.
        let later = 100 + IDEMPOTENCY_TTL_SECS + 1;
        assert_eq!(
            ins(&mut c, run("run_e", "alice", later), "other", later),
            Claim::Inserted
        );
    }

    #[test]
    fn runs_left_going_end_interrupted_with_a_last_event() {
        let mut c = open();
        insert(&mut c, &run("run_a", "k", 1), None, 1).unwrap_or_else(|e| panic!("{e}"));
        let mut done = run("run_b", "k", 1);
        insert(&mut c, &done, None, 1).unwrap_or_else(|e| panic!("{e}"));
        done.status = "completed".into();
        update(&c, &done).unwrap_or_else(|e| panic!("{e}"));
        let ev = |seq, kind: &str, data: &str| {
            std::sync::Arc::new(journal::Event {
                seq,
                kind: kind.into(),
                data: data.into(),
            })
        };
        let events = [
            ev(1, "run.started", "{}"),
            ev(2, "message.delta", r#"{"delta":"Hel"}"#),
            ev(3, "message.delta", r#"{"delta":"lo"}"#),
        ];
        journal::write(&mut c, "run_a", &events).unwrap_or_else(|e| panic!("{e}"));
        let ids = interrupt_left_over(&mut c, 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids, vec!["run_a".to_string()]);
        let a = get(&c, "run_a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            a.map(|r| (r.status, r.finished_at, r.output_text)),
            Some(("interrupted".into(), Some(5), "Hello".into()))
        );
        let events = journal::read_after(&c, "run_a", 0).unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<_> = events.iter().map(|e| (e.seq, e.kind.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (1, "run.started"),
                (2, "message.delta"),
                (3, "message.delta"),
                (4, "run.interrupted")
            ]
        );
        // Old finished runs go with their events; running ones stay.
        insert(&mut c, &run("run_c", "k", 1), None, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(evict(&mut c, 2).unwrap_or_else(|e| panic!("{e}")), 2);
        assert!(get(&c, "run_c").unwrap_or_else(|e| panic!("{e}")).is_some());
        let left = journal::read_after(&c, "run_a", 0).unwrap_or_else(|e| panic!("{e}"));
        assert!(left.is_empty());
    }
}
