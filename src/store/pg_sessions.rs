//! Session transcripts on PostgreSQL: the same operations as the SQLite
//! side in [`crate::sessions`], one transaction each where they have more
//! than one statement. Each takes its pooled connection; the caller queues
//! it on the ordered lane ([`super::Pg::call_ordered`]) so that, as on
//! SQLite, a read queued after a write sees it.

use deadpool_postgres::Object;
use tokio_postgres::Row;

use crate::db::StoreError;
use crate::openai::{Message, Usage};
use crate::sessions::{Page, SessionInfo, Stamped, Summary};

/// Seconds as the schema stores them.
fn secs(v: i64) -> u64 {
    v.max(0) as u64
}

/// Decodes stored messages, skipping (with a warning) what cannot be read.
fn decode(key: &str, body: &str) -> Option<Message> {
    match serde_json::from_str::<Message>(body) {
        Ok(m) => Some(m),
        Err(e) => {
            log::warn!("session {key}: skipping an unreadable stored message: {e}");
            None
        }
    }
}

pub async fn load(c: Object, key: String) -> Result<Vec<Message>, StoreError> {
    let rows = c
        .query(
            "SELECT body FROM messages WHERE session_key = $1 ORDER BY id",
            &[&key],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| decode(&key, r.get::<_, &str>(0)))
        .collect())
}

pub async fn append(
    mut c: Object,
    key: String,
    now: i64,
    messages: Vec<Message>,
    usage: Usage,
    owner: Option<String>,
) -> Result<(), StoreError> {
    let bodies = messages
        .iter()
        .map(|m| serde_json::to_string(m).map_err(|e| StoreError::Encode(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let tx = c.transaction().await?;
    let (prompt, completion) = (usage.prompt_tokens as i64, usage.completion_tokens as i64);
    tx.execute(
        "INSERT INTO sessions (key, created_at, updated_at, prompt_tokens, completion_tokens, turns, owner)
         VALUES ($1, $2, $2, $3, $4, 1, $5)
         ON CONFLICT (key) DO UPDATE SET updated_at = $2,
           prompt_tokens = sessions.prompt_tokens + $3,
           completion_tokens = sessions.completion_tokens + $4,
           turns = sessions.turns + 1,
           owner = COALESCE(sessions.owner, $5)",
        &[&key, &now, &prompt, &completion, &owner],
    )
    .await?;
    if !bodies.is_empty() {
        // One statement for the whole turn, in order (`id` follows the array).
        tx.execute(
            "INSERT INTO messages (session_key, created_at, body)
             SELECT $1, $2, body FROM unnest($3::text[]) WITH ORDINALITY AS t(body, n) ORDER BY n",
            &[&key, &now, &bodies],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn open(c: Object, key: String, now: i64, owner: String) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO sessions (key, created_at, updated_at, owner) VALUES ($1, $2, $2, $3)
         ON CONFLICT (key) DO NOTHING",
        &[&key, &now, &owner],
    )
    .await?;
    Ok(())
}

pub async fn owner(c: Object, key: String) -> Result<Option<Option<String>>, StoreError> {
    let row = c
        .query_opt("SELECT owner FROM sessions WHERE key = $1", &[&key])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub async fn info(c: Object, key: String) -> Result<Option<SessionInfo>, StoreError> {
    let row = c
        .query_opt(
            "SELECT created_at, updated_at, title, prompt_tokens, completion_tokens, turns,
               (SELECT COUNT(*) FROM messages WHERE session_key = $1)
             FROM sessions WHERE key = $1",
            &[&key],
        )
        .await?;
    Ok(row.map(|r| SessionInfo {
        created_at: secs(r.get(0)),
        updated_at: secs(r.get(1)),
        title: r.get(2),
        prompt_tokens: secs(r.get(3)),
        completion_tokens: secs(r.get(4)),
        turns: secs(r.get(5)),
        messages: secs(r.get(6)),
    }))
}

pub async fn set_title(c: Object, key: String, now: i64, title: String) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO sessions (key, created_at, updated_at, title) VALUES ($1, $2, $2, $3)
         ON CONFLICT (key) DO UPDATE SET title = $3",
        &[&key, &now, &title],
    )
    .await?;
    Ok(())
}

pub async fn keys_under(c: Object, prefix: String) -> Result<Vec<String>, StoreError> {
    // `substr` rather than LIKE: keys may hold `%` or `_`. `COLLATE "C"`:
    // byte order, as SQLite sorts.
    let rows = c
        .query(
            "SELECT key FROM sessions
             WHERE key = $1 OR substr(key, 1, length($1) + 1) = $1 || ':'
             ORDER BY key COLLATE \"C\"",
            &[&prefix],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn reset(c: Object, key: String) -> Result<(), StoreError> {
    c.execute("DELETE FROM sessions WHERE key = $1", &[&key])
        .await?;
    Ok(())
}

/// The columns of a [`Summary`], for `SELECT ... FROM sessions s`.
const SUMMARY_COLUMNS: &str = "s.key, s.title, s.created_at, s.updated_at,
    (SELECT COUNT(*) FROM messages m WHERE m.session_key = s.key)";

fn summary_row(r: &Row) -> Summary {
    Summary {
        key: r.get(0),
        title: r.get(1),
        created_at: secs(r.get(2)),
        updated_at: secs(r.get(3)),
        messages: secs(r.get(4)),
    }
}

async fn summary_of(
    c: &impl deadpool_postgres::GenericClient,
    key: &str,
) -> Result<Option<Summary>, StoreError> {
    let row = c
        .query_opt(
            &format!("SELECT {SUMMARY_COLUMNS} FROM sessions s WHERE s.key = $1"),
            &[&key],
        )
        .await?;
    Ok(row.as_ref().map(summary_row))
}

pub async fn find(
    c: Object,
    keys: Vec<String>,
    owner: Option<String>,
) -> Result<Option<String>, StoreError> {
    for key in keys {
        let row = c
            .query_opt(
                "SELECT 1 FROM sessions WHERE key = $1 AND ($2::text IS NULL OR owner = $2)",
                &[&key, &owner],
            )
            .await?;
        if row.is_some() {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

pub async fn list(
    c: Object,
    owner: Option<String>,
    after: Option<String>,
    limit: usize,
) -> Result<Option<Page>, StoreError> {
    let cursor: Option<(String, i64)> = match after {
        None => None,
        Some(key) => {
            let row = c
                .query_opt(
                    "SELECT updated_at FROM sessions WHERE key = $1 AND ($2::text IS NULL OR owner = $2)",
                    &[&key, &owner],
                )
                .await?;
            match row {
                Some(r) => Some((key, r.get(0))),
                None => return Ok(None),
            }
        }
    };
    // One more than asked: whether it exists is `has_more`.
    let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    let (after_key, after_time) = match &cursor {
        Some((k, t)) => (Some(k.as_str()), Some(*t)),
        None => (None, None),
    };
    let rows = c
        .query(
            &format!(
                "SELECT {SUMMARY_COLUMNS} FROM sessions s
                 WHERE ($1::text IS NULL OR s.owner = $1)
                   AND ($2::text IS NULL OR s.updated_at < $3
                        OR (s.updated_at = $3 AND s.key COLLATE \"C\" > $2))
                 ORDER BY s.updated_at DESC, s.key COLLATE \"C\"
                 LIMIT $4"
            ),
            &[&owner, &after_key, &after_time, &fetch],
        )
        .await?;
    let mut sessions: Vec<Summary> = rows.iter().map(summary_row).collect();
    let has_more = sessions.len() > limit;
    sessions.truncate(limit);
    Ok(Some(Page { sessions, has_more }))
}

pub async fn detail(
    mut c: Object,
    key: String,
) -> Result<Option<(Summary, Vec<Stamped>)>, StoreError> {
    // One snapshot: the count and the messages agree.
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let Some(summary) = summary_of(&tx, &key).await? else {
        return Ok(None);
    };
    let rows = tx
        .query(
            "SELECT created_at, body FROM messages WHERE session_key = $1 ORDER BY id",
            &[&key],
        )
        .await?;
    tx.commit().await?;
    let messages = rows
        .iter()
        .filter_map(|r| {
            decode(&key, r.get::<_, &str>(1)).map(|message| Stamped {
                message,
                created_at: secs(r.get(0)),
            })
        })
        .collect();
    Ok(Some((summary, messages)))
}

pub async fn rename(
    mut c: Object,
    key: String,
    owner: Option<String>,
    title: String,
) -> Result<Option<Summary>, StoreError> {
    let tx = c.transaction().await?;
    let changed = tx
        .execute(
            "UPDATE sessions SET title = $1 WHERE key = $2 AND ($3::text IS NULL OR owner = $3)",
            &[&title, &key, &owner],
        )
        .await?;
    let summary = if changed == 0 {
        None
    } else {
        summary_of(&tx, &key).await?
    };
    tx.commit().await?;
    Ok(summary)
}

pub async fn delete(c: Object, key: String, owner: Option<String>) -> Result<bool, StoreError> {
    let n = c
        .execute(
            "DELETE FROM sessions WHERE key = $1 AND ($2::text IS NULL OR owner = $2)",
            &[&key, &owner],
        )
        .await?;
    Ok(n > 0)
}
