//! `/v1/runs` runs and the event journals of runs and responses on
//! PostgreSQL: the same operations as the SQLite side in [`crate::run_db`]
//! and [`crate::journal`], one transaction each where they have more than
//! one statement.
//!
//! Events are written with a `NOTIFY` on [`super::pg_listen::EVENTS`]
//! carrying the stream's id: it is delivered when the transaction commits,
//! so other instances following a live stream read the new events as soon
//! as they are there.
//!
//! The event functions take any [`GenericClient`] (deadpool's, implemented
//! for a pooled [`Object`] and for a [`deadpool_postgres::Transaction`]), so
//! they run alone or inside the transaction of what they go with.

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::db::StoreError;
use crate::journal::Event;
use crate::run_db::{
    ACTIVE, Claim, IDEMPOTENCY_TTL_SECS, RunRow, interrupted_event, streamed_text,
};

/// The unique index that keeps an `Idempotency-Key` to one run per owner.
const IDEMPOTENCY_INDEX: &str = "runs_by_idempotency";
/// How many times [`insert`] tries again when the key it found free was
/// claimed by a concurrent insert and then freed again before it looked.
const CLAIM_ATTEMPTS: usize = 3;

/// The statuses a run can still leave, as a `text[]` parameter.
fn active_statuses() -> &'static [&'static str] {
    &ACTIVE
}

/// Writes events of a stream (one statement; an event already stored under
/// its number is kept) and announces the stream on
/// [`super::pg_listen::EVENTS`], which other instances hear when the
/// transaction commits.
pub async fn write_events(
    c: &impl GenericClient,
    id: &str,
    events: &[Arc<Event>],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    // The first event written with a number keeps it (as SQLite's
    // `INSERT OR IGNORE`): a writer cut off by another instance never
    // overwrites the event that ended its stream.
    let mut seen = HashSet::new();
    let batch: Vec<&Event> = events
        .iter()
        .filter(|e| seen.insert(e.seq))
        .map(|e| e.as_ref())
        .collect();
    let seqs: Vec<i64> = batch.iter().map(|e| e.seq as i64).collect();
    let kinds: Vec<&str> = batch.iter().map(|e| e.kind.as_str()).collect();
    let data: Vec<&str> = batch.iter().map(|e| e.data.as_str()).collect();
    c.execute(
        "INSERT INTO stream_events (stream_id, seq, kind, data)
         SELECT $1, seq, kind, data FROM unnest($2::bigint[], $3::text[], $4::text[])
           AS t(seq, kind, data)
         ON CONFLICT (stream_id, seq) DO NOTHING",
        &[&id, &seqs, &kinds, &data],
    )
    .await?;
    c.execute(
        "SELECT pg_notify($1, $2)",
        &[&super::pg_listen::EVENTS, &id],
    )
    .await?;
    Ok(())
}

/// The stored events of a stream after `after`, in order.
pub async fn read_events_after(
    c: &impl GenericClient,
    id: &str,
    after: i64,
) -> Result<Vec<Event>, StoreError> {
    let rows = c
        .query(
            "SELECT seq, kind, data FROM stream_events
             WHERE stream_id = $1 AND seq > $2 ORDER BY seq",
            &[&id, &after],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Event {
            seq: r.get::<_, i64>(0).max(0) as u64,
            kind: r.get(1),
            data: r.get(2),
        })
        .collect())
}

/// Forgets a stream's events.
pub async fn delete_events(c: &impl GenericClient, id: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM stream_events WHERE stream_id = $1", &[&id])
        .await?;
    Ok(())
}

const COLUMNS: &str = "id, owner, session_id, status, created_at, started_at, finished_at, \
                       output_text, usage, error, pending_approval, instance";

fn row(r: &Row) -> RunRow {
    RunRow {
        id: r.get(0),
        owner: r.get(1),
        session_id: r.get(2),
        status: r.get(3),
        created_at: r.get(4),
        started_at: r.get(5),
        finished_at: r.get(6),
        output_text: r.get(7),
        usage: r.get(8),
        error: r.get(9),
        pending_approval: r.get(10),
        instance: r.get(11),
    }
}

async fn get_in(c: &impl GenericClient, id: &str) -> Result<Option<RunRow>, tokio_postgres::Error> {
    let found = c
        .query_opt(&format!("SELECT {COLUMNS} FROM runs WHERE id = $1"), &[&id])
        .await?;
    Ok(found.as_ref().map(row))
}

/// A run by id.
pub async fn get(c: &Object, id: &str) -> Result<Option<RunRow>, StoreError> {
    Ok(get_in(c, id).await?)
}

/// Who holds an `Idempotency-Key` of one owner.
enum Holder {
    /// Nobody.
    Free,
    /// A run whose hold expired (the key is free again once cleared).
    Expired(String),
    /// A run that holds it still: what the new request is answered.
    Held(Claim),
}

async fn holder(
    c: &impl GenericClient,
    owner: &str,
    key: &str,
    hash: &str,
    now: i64,
) -> Result<Holder, tokio_postgres::Error> {
    let held = c
        .query_opt(
            "SELECT id, body_hash, created_at FROM runs WHERE owner = $1 AND idempotency_key = $2",
            &[&owner, &key],
        )
        .await?;
    let Some(held) = held else {
        return Ok(Holder::Free);
    };
    let (id, held_hash, at): (String, Option<String>, i64) =
        (held.get(0), held.get(1), held.get(2));
    if at < now - IDEMPOTENCY_TTL_SECS {
        return Ok(Holder::Expired(id));
    }
    if held_hash.as_deref() != Some(hash) {
        return Ok(Holder::Held(Claim::Conflict));
    }
    let existing = get_in(c, &id).await?;
    Ok(Holder::Held(
        existing.map_or(Claim::Conflict, |r| Claim::Replay(Box::new(r))),
    ))
}

/// One attempt of [`insert`], in one transaction.
async fn try_insert(
    c: &mut Object,
    run: &RunRow,
    idempotency: Option<(&str, &str)>,
    now: i64,
) -> Result<Claim, tokio_postgres::Error> {
    let tx = c.transaction().await?;
    if let Some((key, hash)) = idempotency {
        match holder(&tx, &run.owner, key, hash, now).await? {
            Holder::Free => {}
            Holder::Held(claim) => return Ok(claim),
            Holder::Expired(id) => {
                tx.execute(
                    "UPDATE runs SET idempotency_key = NULL, body_hash = NULL WHERE id = $1",
                    &[&id],
                )
                .await?;
            }
        }
    }
    let (key, hash) = idempotency.unzip();
    tx.execute(
        "INSERT INTO runs (id, owner, session_id, status, created_at, idempotency_key, body_hash, instance)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &run.id,
            &run.owner,
            &run.session_id,
            &run.status,
            &run.created_at,
            &key,
            &hash,
            &run.instance,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(Claim::Inserted)
}

/// Whether `e` is another run taking the same `Idempotency-Key` first.
fn lost_claim(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|d| d.constraint()) == Some(IDEMPOTENCY_INDEX)
}

/// Inserts a new run, claiming `idempotency` (key, body hash) for it when
/// given; a key still held by an earlier run answers with that run instead
/// (`Replay` with the same body, `Conflict` with another), and a key held
/// longer than [`IDEMPOTENCY_TTL_SECS`] is free again. Of two concurrent
/// inserts with one key, one inserts and the other answers with its run.
pub async fn insert(
    c: &mut Object,
    run: &RunRow,
    idempotency: Option<(&str, &str)>,
    now: i64,
) -> Result<Claim, StoreError> {
    let mut attempt = 1;
    loop {
        let e = match try_insert(c, run, idempotency, now).await {
            Ok(claim) => return Ok(claim),
            Err(e) => e,
        };
        let Some((key, hash)) = idempotency.filter(|_| lost_claim(&e)) else {
            return Err(e.into());
        };
        // The transaction was rolled back; the run that won answers.
        if let Holder::Held(claim) = holder(&*c, &run.owner, key, hash, now).await? {
            return Ok(claim);
        }
        if attempt >= CLAIM_ATTEMPTS {
            return Err(e.into());
        }
        attempt += 1;
    }
}

/// Forgets a run that never started (its start failed), with its events.
pub async fn remove(c: &mut Object, id: &str) -> Result<(), StoreError> {
    let tx = c.transaction().await?;
    tx.execute("DELETE FROM runs WHERE id = $1", &[&id]).await?;
    delete_events(&tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// Writes a run's changing fields (and the instance running it), while it
/// is still active: a run another instance ended as interrupted stays so.
pub async fn update(c: &impl GenericClient, r: &RunRow) -> Result<(), StoreError> {
    c.execute(
        "UPDATE runs SET status = $2, started_at = $3, finished_at = $4, output_text = $5,
           usage = $6, error = $7, pending_approval = $8, instance = $9
         WHERE id = $1 AND status IN ('queued', 'running', 'requires_approval')",
        &[
            &r.id,
            &r.status,
            &r.started_at,
            &r.finished_at,
            &r.output_text,
            &r.usage,
            &r.error,
            &r.pending_approval,
            &r.instance,
        ],
    )
    .await?;
    Ok(())
}

/// Writes a run's events and, when given, its row, in one transaction (the
/// state the events report: a GET is never behind them).
pub async fn record(
    c: &mut Object,
    id: &str,
    row: Option<&RunRow>,
    events: &[Arc<Event>],
) -> Result<(), StoreError> {
    let tx = c.transaction().await?;
    if let Some(r) = row {
        update(&tx, r).await?;
    }
    write_events(&tx, id, events).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes finished runs created before `min_created_at`, with their
/// events (runs are kept as long as stored responses); returns how many.
pub async fn evict(c: &mut Object, min_created_at: i64) -> Result<usize, StoreError> {
    let tx = c.transaction().await?;
    tx.execute(
        "DELETE FROM stream_events WHERE stream_id IN (SELECT id FROM runs
           WHERE created_at < $1 AND status <> ALL($2))",
        &[&min_created_at, &active_statuses()],
    )
    .await?;
    let n = tx
        .execute(
            "DELETE FROM runs WHERE created_at < $1 AND status <> ALL($2)",
            &[&min_created_at, &active_statuses()],
        )
        .await?;
    tx.commit().await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Ids of the runs that can still change (queued, running or waiting for an
/// approval), each with the instance running it.
pub async fn active(c: &Object) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let rows = c
        .query(
            "SELECT id, instance FROM runs WHERE status = ANY($1) ORDER BY created_at, id",
            &[&active_statuses()],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Ends a run whose instance is gone, if it is still active: `interrupted`,
/// with the text it had streamed as its output and a `run.interrupted`
/// event after its last one. A run that ended meanwhile is left alone.
pub async fn interrupt(c: &mut Object, id: &str, now: i64) -> Result<bool, StoreError> {
    let tx = c.transaction().await?;
    let text = streamed_text(&read_events_after(&tx, id, 0).await?);
    let n = tx
        .execute(
            "UPDATE runs SET status = 'interrupted', finished_at = $2, pending_approval = NULL,
               output_text = $3, instance = NULL WHERE id = $1 AND status = ANY($4)",
            &[&id, &now, &text, &active_statuses()],
        )
        .await?;
    if n == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    let last: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(seq), 0) FROM stream_events WHERE stream_id = $1",
            &[&id],
        )
        .await?
        .get(0);
    write_events(&tx, id, &[interrupted_event(id, last)]).await?;
    tx.commit().await?;
    Ok(true)
}
