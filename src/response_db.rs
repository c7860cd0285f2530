//! Stored Responses API responses in the embedded database: plain functions
//! on a connection, run on the database thread by the `ResponseStoreActor`.
//!
//! A row holds one response's own turn (its input items, the chat messages of
//! the turn, the response object) and the id of its predecessor. A chain is
//! rebuilt with one recursive query, oldest turn first.

use rusqlite::{Connection, OptionalExtension, params};

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
}

/// Inserts a response and, when `conversation` is given, points the name at it.
pub fn insert(
    c: &mut Connection,
    r: &StoredResponse,
    conversation: Option<&str>,
) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    tx.execute(
        "INSERT OR REPLACE INTO responses
         (id, previous_id, session_id, created_at, instructions, input_items, turn_messages, response)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            r.id,
            r.previous_id,
            r.session_id,
            r.created_at,
            r.instructions,
            r.input_items,
            r.turn_messages,
            r.response
        ],
    )?;
    if let Some(name) = conversation {
        tx.execute(
            "INSERT INTO conversations (name, response_id, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET response_id = ?2, updated_at = ?3",
            params![name, r.id, r.created_at],
        )?;
    }
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
    })
}

const COLUMNS: &str =
    "id, previous_id, session_id, created_at, instructions, input_items, turn_messages, response";

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

/// Deletes a response and the conversation names pointing at it; true when it existed.
pub fn delete(c: &mut Connection, id: &str) -> Result<bool, StoreError> {
    let tx = c.transaction()?;
    let n = tx.execute("DELETE FROM responses WHERE id = ?1", [id])?;
    tx.execute("DELETE FROM conversations WHERE response_id = ?1", [id])?;
    tx.commit()?;
    Ok(n > 0)
}

/// The latest response of a conversation name.
pub fn conversation(c: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT response_id FROM conversations WHERE name = ?1")?;
    Ok(stmt.query_row([name], |r| r.get(0)).optional()?)
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
        let mut stmt = tx.prepare("SELECT id FROM responses WHERE created_at < ?1")?;
        stmt.query_map([min_created_at], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    let total: i64 = tx.query_row("SELECT COUNT(*) FROM responses", [], |r| r.get(0))?;
    let over = (total as usize)
        .saturating_sub(ids.len())
        .saturating_sub(max_count);
    if over > 0 {
        let mut stmt = tx.prepare(
            "SELECT id FROM responses WHERE created_at >= ?1 ORDER BY created_at, rowid LIMIT ?2",
        )?;
        let more: Vec<String> = stmt
            .query_map(params![min_created_at, over as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.extend(more);
    }
    {
        let mut del = tx.prepare_cached("DELETE FROM responses WHERE id = ?1")?;
        let mut names = tx.prepare_cached("DELETE FROM conversations WHERE response_id = ?1")?;
        for id in &ids {
            del.execute([id])?;
            names.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> Connection {
        let mut c = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let tx = c.transaction().unwrap_or_else(|e| panic!("{e}"));
        tx.execute_batch(
            "CREATE TABLE responses (id TEXT PRIMARY KEY, previous_id TEXT, session_id TEXT NOT NULL,
              created_at INTEGER NOT NULL, instructions TEXT, input_items TEXT NOT NULL,
              turn_messages TEXT NOT NULL, response TEXT NOT NULL);
             CREATE TABLE conversations (name TEXT PRIMARY KEY, response_id TEXT NOT NULL, updated_at INTEGER NOT NULL);",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        tx.commit().unwrap_or_else(|e| panic!("{e}"));
        c
    }

    fn resp(id: &str, prev: Option<&str>, at: i64) -> StoredResponse {
        StoredResponse {
            id: id.into(),
            previous_id: prev.map(String::from),
            session_id: "s".into(),
            created_at: at,
            instructions: None,
            input_items: "[]".into(),
            turn_messages: format!("[\"{id}\"]"),
            response: "{}".into(),
        }
    }

    #[test]
    fn chain_delete_and_eviction() {
        let mut c = open();
        insert(&mut c, &resp("a", None, 1), Some("conv")).unwrap_or_default();
        insert(&mut c, &resp("b", Some("a"), 2), Some("conv")).unwrap_or_default();
        insert(&mut c, &resp("c", Some("b"), 3), None).unwrap_or_default();
        assert_eq!(
            chain(&c, "c").unwrap_or_default(),
            vec!["[\"a\"]", "[\"b\"]", "[\"c\"]"]
        );
        assert_eq!(
            conversation(&c, "conv").unwrap_or_default().as_deref(),
            Some("b")
        );
        // Capacity 2: the oldest goes; a name pointing at it would be cleared.
        assert_eq!(
            evict(&mut c, 2, 0).unwrap_or_default(),
            vec!["a".to_string()]
        );
        assert_eq!(count(&c).unwrap_or(0), 2);
        assert!(delete(&mut c, "b").unwrap_or(false));
        assert_eq!(
            conversation(&c, "conv").unwrap_or_default(),
            None,
            "deleting clears the name"
        );
        assert!(!delete(&mut c, "b").unwrap_or(true));
        // Age: everything created before 4 goes.
        assert_eq!(
            evict(&mut c, 100, 4).unwrap_or_default(),
            vec!["c".to_string()]
        );
    }
}
