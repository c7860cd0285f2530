//! Stored Responses API responses in the embedded database: plain functions
//! on a connection, run on the database thread by the `ResponseStoreActor`.
//!
//! A row holds one response's own turn (its input items, the chat messages of
//! the turn, the response object) and the id of its predecessor. A chain is
//! rebuilt with one recursive query, oldest turn first. Beside it: an index
//! of the item ids each response holds (so `item_reference` finds them, per
//! API key), and the approvals a paused turn waits for.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::db::StoreError;

/// One stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub id: String,
    pub previous_id: Option<String>,
    pub session_id: String,
    pub created_at: i64,
    /// The instructions in effect (inherited along the chain).
    pub instructions: Option<String>,
    /// This turn's input items as a JSON array (each with an `id`).
    pub input_items: String,
    /// This turn's chat messages as a JSON array (input, tool calls, results, answer).
    pub turn_messages: String,
    /// The response object exactly as `GET` returns it.
    pub response: String,
    /// The API key (by name) that created it.
    pub owner: String,
    /// Ids of the items it holds (inputs and outputs), for `item_reference`.
    pub item_ids: Vec<String>,
    /// Approvals its turn paused on.
    pub approvals: Vec<StoredApproval>,
    /// Still running: a restart finds it and ends it as interrupted.
    pub live: bool,
    /// The gateway instance running it while it is live (another instance
    /// ends it as interrupted only once that one is gone).
    pub instance: Option<String>,
}

/// A dangerous call a paused turn waits on, and the client's approval id for it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredApproval {
    pub approval_id: String,
    pub response_id: String,
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    /// Already answered by an earlier request.
    pub answered: bool,
}

/// Inserts a response and, when `conversation` is given, points the name at
/// it; `events` of the response are written in the same transaction.
pub fn insert(
    c: &mut Connection,
    r: &StoredResponse,
    conversation: Option<&str>,
    events: &[std::sync::Arc<crate::journal::Event>],
) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    tx.execute(
        "INSERT OR REPLACE INTO responses
         (id, previous_id, session_id, created_at, instructions, input_items, turn_messages, response, owner, live, instance)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            r.id,
            r.previous_id,
            r.session_id,
            r.created_at,
            r.instructions,
            r.input_items,
            r.turn_messages,
            r.response,
            r.owner,
            r.live,
            r.instance
        ],
    )?;
    {
        // The first response to hold an id keeps it (a client may resend an
        // item with the id it had).
        let mut item = tx.prepare_cached(
            "INSERT OR IGNORE INTO response_items (owner, item_id, response_id) VALUES (?1, ?2, ?3)",
        )?;
        for id in &r.item_ids {
            item.execute(params![r.owner, id, r.id])?;
        }
        let mut approval = tx.prepare_cached(
            "INSERT INTO approvals (approval_id, owner, response_id, call_id, name, arguments)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for a in &r.approvals {
            approval.execute(params![
                a.approval_id,
                r.owner,
                r.id,
                a.call_id,
                a.name,
                a.arguments
            ])?;
        }
    }
    if let Some(name) = conversation {
        tx.execute(
            "INSERT INTO conversations (name, response_id, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET response_id = ?2, updated_at = ?3",
            params![name, r.id, r.created_at],
        )?;
    }
    crate::journal::write_in(&tx, &r.id, events)?;
    tx.commit()?;
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredResponse> {
    Ok(StoredResponse {
        id: r.get(0)?,
        previous_id: r.get(1)?,
        session_id: r.get(2)?,
        created_at: r.get(3)?,
        instructions: r.get(4)?,
        input_items: r.get(5)?,
        turn_messages: r.get(6)?,
        response: r.get(7)?,
        owner: r.get(8)?,
        item_ids: Vec::new(),
        approvals: Vec::new(),
        live: r.get(9)?,
        instance: r.get(10)?,
    })
}

const COLUMNS: &str = "id, previous_id, session_id, created_at, instructions, input_items, turn_messages, response, owner, live, instance";

/// One response by id.
pub fn get(c: &Connection, id: &str) -> Result<Option<StoredResponse>, StoreError> {
    let mut stmt = c.prepare_cached(&format!("SELECT {COLUMNS} FROM responses WHERE id = ?1"))?;
    Ok(stmt.query_row([id], row).optional()?)
}

/// The `turn_messages` of a response and all its ancestors, oldest first.
pub fn chain(c: &Connection, id: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = c.prepare_cached(
        "WITH RECURSIVE chain(id, previous_id, turn_messages, depth) AS (
            SELECT id, previous_id, turn_messages, 0 FROM responses WHERE id = ?1
            UNION ALL
            SELECT r.id, r.previous_id, r.turn_messages, chain.depth + 1
            FROM responses r JOIN chain ON r.id = chain.previous_id
        )
        SELECT turn_messages FROM chain ORDER BY depth DESC",
    )?;
    let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Whether `id` is `head` or one of its ancestors.
pub fn in_chain(c: &Connection, head: &str, id: &str) -> Result<bool, StoreError> {
    let mut stmt = c.prepare_cached(
        "WITH RECURSIVE chain(id, previous_id) AS (
            SELECT id, previous_id FROM responses WHERE id = ?1
            UNION ALL
            SELECT r.id, r.previous_id FROM responses r JOIN chain ON r.id = chain.previous_id
        )
        SELECT 1 FROM chain WHERE id = ?2 LIMIT 1",
    )?;
    Ok(stmt.exists(params![head, id])?)
}

/// Removes everything that belongs to one response (in a transaction).
fn remove(tx: &rusqlite::Transaction<'_>, id: &str) -> Result<usize, StoreError> {
    let n = tx.execute("DELETE FROM responses WHERE id = ?1", [id])?;
    tx.execute("DELETE FROM conversations WHERE response_id = ?1", [id])?;
    tx.execute("DELETE FROM response_items WHERE response_id = ?1", [id])?;
    tx.execute("DELETE FROM approvals WHERE response_id = ?1", [id])?;
    crate::journal::delete(tx, id)?;
    Ok(n)
}

/// Deletes a response and the conversation names pointing at it; true when it existed.
pub fn delete(c: &mut Connection, id: &str) -> Result<bool, StoreError> {
    let tx = c.transaction()?;
    let n = remove(&tx, id)?;
    tx.commit()?;
    Ok(n > 0)
}

/// The items with these ids among `owner`'s stored responses, as stored
/// (input items and output items alike); ids not found are absent.
pub fn items(
    c: &Connection,
    owner: &str,
    ids: &[String],
) -> Result<HashMap<String, Value>, StoreError> {
    let mut by_response: HashMap<String, Vec<&String>> = HashMap::new();
    {
        let mut stmt = c.prepare_cached(
            "SELECT response_id FROM response_items WHERE owner = ?1 AND item_id = ?2",
        )?;
        for id in ids {
            if let Some(r) = stmt
                .query_row(params![owner, id], |r| r.get::<_, String>(0))
                .optional()?
            {
                by_response.entry(r).or_default().push(id);
            }
        }
    }
    let mut found = HashMap::new();
    let mut stmt = c.prepare_cached("SELECT input_items, response FROM responses WHERE id = ?1")?;
    for (response_id, wanted) in by_response {
        let Some((inputs, object)) = stmt
            .query_row([&response_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?
        else {
            continue;
        };
        pick_items(
            &inputs,
            &object,
            |id| wanted.iter().any(|w| *w == id),
            &mut found,
        );
    }
    Ok(found)
}

/// Adds to `found` the items of one stored response (its input items, then
/// its object's output) whose id is `wanted`; the first holder of an id wins.
pub fn pick_items(
    input_items: &str,
    object: &str,
    wanted: impl Fn(&str) -> bool,
    found: &mut HashMap<String, Value>,
) {
    let inputs: Value = serde_json::from_str(input_items).unwrap_or(Value::Null);
    let object: Value = serde_json::from_str(object).unwrap_or(Value::Null);
    let all = inputs
        .as_array()
        .into_iter()
        .flatten()
        .chain(object["output"].as_array().into_iter().flatten());
    for item in all {
        if let Some(id) = item["id"].as_str()
            && wanted(id)
        {
            found.entry(id.to_string()).or_insert_with(|| item.clone());
        }
    }
}

/// `owner`'s approvals with these ids (answered or not); unknown ids are absent.
pub fn approvals(
    c: &Connection,
    owner: &str,
    ids: &[String],
) -> Result<Vec<StoredApproval>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT approval_id, response_id, call_id, name, arguments, answered
         FROM approvals WHERE owner = ?1 AND approval_id = ?2",
    )?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(a) = stmt
            .query_row(params![owner, id], |r| {
                Ok(StoredApproval {
                    approval_id: r.get(0)?,
                    response_id: r.get(1)?,
                    call_id: r.get(2)?,
                    name: r.get(3)?,
                    arguments: r.get(4)?,
                    answered: r.get::<_, i64>(5)? != 0,
                })
            })
            .optional()?
        {
            out.push(a);
        }
    }
    Ok(out)
}

/// Marks approvals answered; true only when every one of them was still
/// open (a concurrent request that answered one first wins).
pub fn answer_approvals(c: &mut Connection, ids: &[String]) -> Result<bool, StoreError> {
    let tx = c.transaction()?;
    let mut all = true;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE approvals SET answered = 1 WHERE approval_id = ?1 AND answered = 0",
        )?;
        for id in ids {
            all &= stmt.execute([id])? == 1;
        }
    }
    if all {
        tx.commit()?;
    }
    Ok(all)
}

/// The latest response of a conversation name.
pub fn conversation(c: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT response_id FROM conversations WHERE name = ?1")?;
    Ok(stmt.query_row([name], |r| r.get(0)).optional()?)
}

/// The responses still running, with the instance running each.
pub fn live(c: &Connection) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let mut stmt = c.prepare("SELECT id, instance FROM responses WHERE live = 1")?;
    Ok(stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

/// Replaces the object of a response that is still running and marks it
/// no longer running, with the events that close it, in one transaction;
/// `false` (nothing written) when it ended meanwhile.
pub fn settle(
    c: &mut Connection,
    id: &str,
    response: &str,
    events: &[std::sync::Arc<crate::journal::Event>],
) -> Result<bool, StoreError> {
    let tx = c.transaction()?;
    let n = tx.execute(
        "UPDATE responses SET response = ?2, live = 0, instance = NULL WHERE id = ?1 AND live = 1",
        params![id, response],
    )?;
    if n == 0 {
        return Ok(false);
    }
    crate::journal::write_in(&tx, id, events)?;
    tx.commit()?;
    Ok(true)
}

/// Number of stored responses.
pub fn count(c: &Connection) -> Result<usize, StoreError> {
    Ok(c.query_row("SELECT COUNT(*) FROM responses", [], |r| r.get::<_, i64>(0))? as usize)
}

/// Deletes responses older than `min_created_at` and, beyond `max_count`, the
/// oldest ones; clears conversation names that pointed at them. Returns the
/// evicted ids (so caches can drop them).
pub fn evict(
    c: &mut Connection,
    max_count: usize,
    min_created_at: i64,
) -> Result<Vec<String>, StoreError> {
    let tx = c.transaction()?;
    let mut ids: Vec<String> = {
        // Running responses stay: their task writes them again when they end.
        let mut stmt = tx.prepare("SELECT id FROM responses WHERE created_at < ?1 AND live = 0")?;
        stmt.query_map([min_created_at], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    let total: i64 = tx.query_row("SELECT COUNT(*) FROM responses", [], |r| r.get(0))?;
    let over = (total as usize)
        .saturating_sub(ids.len())
        .saturating_sub(max_count);
    if over > 0 {
        let mut stmt = tx.prepare(
            "SELECT id FROM responses WHERE created_at >= ?1 AND live = 0
             ORDER BY created_at, rowid LIMIT ?2",
        )?;
        let more: Vec<String> = stmt
            .query_map(params![min_created_at, over as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.extend(more);
    }
    for id in &ids {
        remove(&tx, id)?;
    }
    tx.commit()?;
    Ok(ids)
}
