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
    /// The gateway instance running it while it is active (another instance
    /// ends it as interrupted only once that one is gone).
    pub instance: Option<String>,
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
                       output_text, usage, error, pending_approval, instance";

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
        instance: r.get(11)?,
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
        "INSERT INTO runs (id, owner, session_id, status, created_at, idempotency_key, body_hash,
           instance)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            run.id,
            run.owner,
            run.session_id,
            run.status,
            run.created_at,
            key,
            hash,
            run.instance
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

/// Writes a run's changing fields, while it is still active: a run another
/// gateway ended as interrupted stays so.
pub fn update(c: &Connection, r: &RunRow) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE runs SET status = ?2, started_at = ?3, finished_at = ?4, output_text = ?5,
           usage = ?6, error = ?7, pending_approval = ?8, instance = ?9
         WHERE id = ?1 AND status IN ('queued', 'running', 'requires_approval')",
    )?
    .execute(params![
        r.id,
        r.status,
        r.started_at,
        r.finished_at,
        r.output_text,
        r.usage,
        r.error,
        r.pending_approval,
        r.instance
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

/// The runs still active (queued, running or waiting on an approval), with
/// the instance running each.
pub fn active(c: &Connection) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let mut stmt = c.prepare(
        "SELECT id, instance FROM runs WHERE status IN ('queued', 'running', 'requires_approval')",
    )?;
    Ok(stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

/// The text a run had streamed when it was cut off: what it said.
pub fn streamed_text(events: &[journal::Event]) -> String {
    events
        .iter()
        .filter(|e| e.kind == "message.delta")
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["delta"].as_str().map(String::from))
        .collect()
}

/// The `run.interrupted` event that closes run `id` after its event `last`.
pub fn interrupted_event(id: &str, last: i64) -> std::sync::Arc<journal::Event> {
    std::sync::Arc::new(journal::Event {
        seq: (last + 1).max(1) as u64,
        kind: "run.interrupted".into(),
        data: json!({"run_id": id}).to_string(),
    })
}

/// Ends run `id`, cut off while active (its instance is gone):
/// `interrupted`, with the text it had streamed and a `run.interrupted`
/// event after its last one. Nothing (`false`) when it is no longer active.
pub fn interrupt(c: &mut Connection, id: &str, now: i64) -> Result<bool, StoreError> {
    let tx = c.transaction()?;
    let events = journal::read_after(&tx, id, 0)?;
    let n = tx.execute(
        "UPDATE runs SET status = 'interrupted', finished_at = ?2, pending_approval = NULL,
           output_text = ?3, instance = NULL
         WHERE id = ?1 AND status IN ('queued', 'running', 'requires_approval')",
        params![id, now, streamed_text(&events)],
    )?;
    if n == 0 {
        return Ok(false);
    }
    let last: i64 = tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM stream_events WHERE stream_id = ?1",
        [id],
        |r| r.get(0),
    )?;
    journal::write_in(&tx, id, &[interrupted_event(id, last)])?;
    tx.commit()?;
    Ok(true)
}
