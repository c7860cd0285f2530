//! Stored Responses API responses on PostgreSQL: the same operations as the
//! SQLite side in [`crate::response_db`], one transaction each where they
//! have more than one statement. A response's events are written and
//! deleted with it through [`super::pg_runs`], where the event journal's
//! functions live.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{GenericClient, Object, Transaction};
use serde_json::Value;

use super::pg_runs;
use crate::db::StoreError;
use crate::journal::Event;
use crate::response_db::{StoredApproval, StoredResponse};

/// Inserts (or replaces) a response with the ids of the items it holds and
/// the approvals it waits on and, when `conversation` is given, points the
/// name at it; `events` of the response are written in the same transaction.
pub async fn insert(
    c: &mut Object,
    r: &StoredResponse,
    conversation: Option<&str>,
    events: &[Arc<Event>],
) -> Result<(), StoreError> {
    let live: i32 = r.live.into();
    let tx = c.transaction().await?;
    // A replaced response gets a new `seq`, as `INSERT OR REPLACE` gives it a
    // new rowid on SQLite: it is the newest of its second.
    tx.execute(
        "INSERT INTO responses
         (id, previous_id, session_id, created_at, instructions, input_items, turn_messages,
          response, owner, live, instance)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (id) DO UPDATE SET previous_id = EXCLUDED.previous_id,
           session_id = EXCLUDED.session_id, created_at = EXCLUDED.created_at,
           instructions = EXCLUDED.instructions, input_items = EXCLUDED.input_items,
           turn_messages = EXCLUDED.turn_messages, response = EXCLUDED.response,
           owner = EXCLUDED.owner, live = EXCLUDED.live, instance = EXCLUDED.instance,
           seq = DEFAULT",
        &[
            &r.id,
            &r.previous_id,
            &r.session_id,
            &r.created_at,
            &r.instructions,
            &r.input_items,
            &r.turn_messages,
            &r.response,
            &r.owner,
            &live,
            &r.instance,
        ],
    )
    .await?;
    if !r.item_ids.is_empty() {
        // The first response to hold an id keeps it (a client may resend an
        // item with the id it had).
        tx.execute(
            "INSERT INTO response_items (owner, item_id, response_id)
             SELECT $1, item_id, $2 FROM unnest($3::text[]) AS t(item_id)
             ON CONFLICT DO NOTHING",
            &[&r.owner, &r.id, &r.item_ids],
        )
        .await?;
    }
    if !r.approvals.is_empty() {
        let column =
            |f: fn(&StoredApproval) -> &str| -> Vec<&str> { r.approvals.iter().map(f).collect() };
        let ids = column(|a| &a.approval_id);
        let calls = column(|a| &a.call_id);
        let names = column(|a| &a.name);
        let arguments = column(|a| &a.arguments);
        tx.execute(
            "INSERT INTO approvals (approval_id, owner, response_id, call_id, name, arguments)
             SELECT approval_id, $1, $2, call_id, name, arguments
             FROM unnest($3::text[], $4::text[], $5::text[], $6::text[])
               AS t(approval_id, call_id, name, arguments)",
            &[&r.owner, &r.id, &ids, &calls, &names, &arguments],
        )
        .await?;
    }
    if let Some(name) = conversation {
        tx.execute(
            "INSERT INTO conversations (name, response_id, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET response_id = EXCLUDED.response_id,
               updated_at = EXCLUDED.updated_at",
            &[&name, &r.id, &r.created_at],
        )
        .await?;
    }
    pg_runs::write_events(&tx, &r.id, events).await?;
    tx.commit().await?;
    Ok(())
}

/// One response by id (without its item ids and approvals, as on SQLite).
pub async fn get(c: &Object, id: &str) -> Result<Option<StoredResponse>, StoreError> {
    let found = c
        .query_opt(
            "SELECT id, previous_id, session_id, created_at, instructions, input_items,
               turn_messages, response, owner, live, instance
             FROM responses WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(found.map(|r| StoredResponse {
        id: r.get(0),
        previous_id: r.get(1),
        session_id: r.get(2),
        created_at: r.get(3),
        instructions: r.get(4),
        input_items: r.get(5),
        turn_messages: r.get(6),
        response: r.get(7),
        owner: r.get(8),
        item_ids: Vec::new(),
        approvals: Vec::new(),
        live: r.get::<_, i32>(9) != 0,
        instance: r.get(10),
    }))
}

/// The `turn_messages` of a response and all its ancestors, oldest first.
pub async fn chain(c: &Object, id: &str) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query(
            "WITH RECURSIVE chain(id, previous_id, turn_messages, depth) AS (
                SELECT id, previous_id, turn_messages, 0 FROM responses WHERE id = $1
                UNION ALL
                SELECT r.id, r.previous_id, r.turn_messages, chain.depth + 1
                FROM responses r JOIN chain ON r.id = chain.previous_id
            )
            SELECT turn_messages FROM chain ORDER BY depth DESC",
            &[&id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether `id` is `head` or one of its ancestors.
pub async fn in_chain(c: &Object, head: &str, id: &str) -> Result<bool, StoreError> {
    let found = c
        .query_opt(
            "WITH RECURSIVE chain(id, previous_id) AS (
                SELECT id, previous_id FROM responses WHERE id = $1
                UNION ALL
                SELECT r.id, r.previous_id FROM responses r JOIN chain ON r.id = chain.previous_id
            )
            SELECT 1 FROM chain WHERE id = $2 LIMIT 1",
            &[&head, &id],
        )
        .await?;
    Ok(found.is_some())
}

/// Removes everything that belongs to one response (in a transaction);
/// returns how many responses went (0 or 1).
async fn remove(tx: &Transaction<'_>, id: &str) -> Result<u64, StoreError> {
    let n = tx
        .execute("DELETE FROM responses WHERE id = $1", &[&id])
        .await?;
    tx.execute("DELETE FROM conversations WHERE response_id = $1", &[&id])
        .await?;
    tx.execute("DELETE FROM response_items WHERE response_id = $1", &[&id])
        .await?;
    tx.execute("DELETE FROM approvals WHERE response_id = $1", &[&id])
        .await?;
    pg_runs::delete_events(tx, id).await?;
    Ok(n)
}

/// Deletes a response with its items, approvals and events and the
/// conversation names pointing at it; true when it existed.
pub async fn delete(c: &mut Object, id: &str) -> Result<bool, StoreError> {
    let tx = c.transaction().await?;
    let n = remove(&tx, id).await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// The items with these ids among `owner`'s stored responses, as stored
/// (input items and output items alike); ids not found are absent.
pub async fn items(
    c: &Object,
    owner: &str,
    ids: &[String],
) -> Result<HashMap<String, Value>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let held = c
        .query(
            "SELECT item_id, response_id FROM response_items
             WHERE owner = $1 AND item_id = ANY($2)",
            &[&owner, &ids],
        )
        .await?;
    let mut by_response: HashMap<String, Vec<String>> = HashMap::new();
    for r in &held {
        by_response
            .entry(r.get(1))
            .or_default()
            .push(r.get::<_, String>(0));
    }
    if by_response.is_empty() {
        return Ok(HashMap::new());
    }
    let response_ids: Vec<&str> = by_response.keys().map(String::as_str).collect();
    let rows = c
        .query(
            "SELECT id, input_items, response FROM responses WHERE id = ANY($1)",
            &[&response_ids],
        )
        .await?;
    let mut found = HashMap::new();
    for r in &rows {
        let Some(wanted) = by_response.get(r.get::<_, &str>(0)) else {
            continue;
        };
        crate::response_db::pick_items(
            r.get(1),
            r.get(2),
            |id| wanted.iter().any(|w| w == id),
            &mut found,
        );
    }
    Ok(found)
}

/// `owner`'s approvals with these ids (answered or not), in the order of
/// `ids`; unknown ids are absent.
pub async fn approvals(
    c: &Object,
    owner: &str,
    ids: &[String],
) -> Result<Vec<StoredApproval>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = c
        .query(
            "SELECT approval_id, response_id, call_id, name, arguments, answered
             FROM approvals WHERE owner = $1 AND approval_id = ANY($2)",
            &[&owner, &ids],
        )
        .await?;
    let by_id: HashMap<String, StoredApproval> = rows
        .iter()
        .map(|r| {
            let a = StoredApproval {
                approval_id: r.get(0),
                response_id: r.get(1),
                call_id: r.get(2),
                name: r.get(3),
                arguments: r.get(4),
                answered: r.get::<_, i32>(5) != 0,
            };
            (a.approval_id.clone(), a)
        })
        .collect();
    Ok(ids.iter().filter_map(|id| by_id.get(id).cloned()).collect())
}

/// Marks approvals answered; true only when every one of them was still
/// open (a concurrent request that answered one first wins, and then none
/// is marked).
pub async fn answer_approvals(c: &mut Object, ids: &[String]) -> Result<bool, StoreError> {
    let tx = c.transaction().await?;
    let mut all = true;
    for id in ids {
        let n = tx
            .execute(
                "UPDATE approvals SET answered = 1 WHERE approval_id = $1 AND answered = 0",
                &[id],
            )
            .await?;
        all &= n == 1;
    }
    if all {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(all)
}

/// The latest response of a conversation name.
pub async fn conversation(c: &Object, name: &str) -> Result<Option<String>, StoreError> {
    let found = c
        .query_opt(
            "SELECT response_id FROM conversations WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(found.map(|r| r.get(0)))
}

/// Ids of the responses still running, each with the instance running it
/// (one that is gone left them cut off).
pub async fn live(c: &Object) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let rows = c
        .query(
            "SELECT id, instance FROM responses WHERE live = 1 ORDER BY created_at, seq",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Writes a response's last events and replaces its object, marking it no
/// longer running, in one transaction.
pub async fn settle(
    c: &mut Object,
    id: &str,
    response: &str,
    events: &[Arc<Event>],
) -> Result<bool, StoreError> {
    let tx = c.transaction().await?;
    let n = tx
        .execute(
            "UPDATE responses SET response = $2, live = 0, instance = NULL
             WHERE id = $1 AND live = 1",
            &[&id, &response],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    pg_runs::write_events(&tx, id, events).await?;
    tx.commit().await?;
    Ok(true)
}

/// Number of stored responses.
pub async fn count(c: &Object) -> Result<usize, StoreError> {
    let n: i64 = c
        .query_one("SELECT COUNT(*) FROM responses", &[])
        .await?
        .get(0);
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Deletes responses older than `min_created_at` and, beyond `max_count`, the
/// oldest ones, with everything that belongs to them; running responses stay
/// (their task writes them again when they end). Returns the evicted ids (so
/// caches can drop them).
pub async fn evict(
    c: &mut Object,
    max_count: usize,
    min_created_at: i64,
) -> Result<Vec<String>, StoreError> {
    let tx = c.transaction().await?;
    let mut ids: Vec<String> = tx
        .query(
            "SELECT id FROM responses WHERE created_at < $1 AND live = 0",
            &[&min_created_at],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let total: i64 = tx
        .query_one("SELECT COUNT(*) FROM responses", &[])
        .await?
        .get(0);
    let over = usize::try_from(total)
        .unwrap_or(0)
        .saturating_sub(ids.len())
        .saturating_sub(max_count);
    if over > 0 {
        let limit = i64::try_from(over).unwrap_or(i64::MAX);
        let more = tx
            .query(
                "SELECT id FROM responses WHERE created_at >= $1 AND live = 0
                 ORDER BY created_at, seq LIMIT $2",
                &[&min_created_at, &limit],
            )
            .await?;
        ids.extend(more.iter().map(|r| r.get::<_, String>(0)));
    }
    if !ids.is_empty() {
        // Everything of every evicted response, one statement per table.
        tx.execute("DELETE FROM responses WHERE id = ANY($1)", &[&ids])
            .await?;
        tx.execute(
            "DELETE FROM conversations WHERE response_id = ANY($1)",
            &[&ids],
        )
        .await?;
        tx.execute(
            "DELETE FROM response_items WHERE response_id = ANY($1)",
            &[&ids],
        )
        .await?;
        tx.execute("DELETE FROM approvals WHERE response_id = ANY($1)", &[&ids])
            .await?;
        tx.execute(
            "DELETE FROM stream_events WHERE stream_id = ANY($1)",
            &[&ids],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(ids)
}
