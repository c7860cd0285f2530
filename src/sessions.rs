//! Session transcripts in the embedded database: load a session's history,
//! append a turn's messages, reset a session. Used by the HTTP API
//! (`X-Hermes-Session-Id`) and the chat platforms.

use crate::db::{Db, StoreError};
use crate::openai::{Message, Usage};

fn now() -> i64 {
    crate::clock::unix_now() as i64
}

/// The session's messages in order (empty for an unknown session).
pub fn load(db: &Db, key: &str) -> impl Future<Output = Result<Vec<Message>, StoreError>> + use<> {
    let key = key.to_string();
    db.call(move |c| {
        let mut stmt =
            c.prepare_cached("SELECT body FROM messages WHERE session_key = ?1 ORDER BY id")?;
        let rows = stmt.query_map([&key], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            let body = body?;
            match serde_json::from_str::<Message>(&body) {
                Ok(m) => out.push(m),
                Err(e) => log::warn!("session {key}: skipping an unreadable stored message: {e}"),
            }
        }
        Ok(out)
    })
}

/// Appends messages to a session (creating it), in one transaction.
/// The write is queued at once: a later `load` always sees it.
pub fn append(
    db: &Db,
    key: &str,
    messages: Vec<Message>,
    usage: Usage,
) -> impl Future<Output = Result<(), StoreError>> + use<> {
    let key = key.to_string();
    db.call(move |c| {
        let tx = c.transaction()?;
        let t = now();
        tx.execute(
            "INSERT INTO sessions (key, created_at, updated_at, prompt_tokens, completion_tokens, turns)
             VALUES (?1, ?2, ?2, ?3, ?4, 1)
             ON CONFLICT(key) DO UPDATE SET updated_at = ?2,
               prompt_tokens = prompt_tokens + ?3, completion_tokens = completion_tokens + ?4, turns = turns + 1",
            rusqlite::params![key, t, usage.prompt_tokens as i64, usage.completion_tokens as i64],
        )?;
        {
            let mut ins =
                tx.prepare_cached("INSERT INTO messages (session_key, created_at, body) VALUES (?1, ?2, ?3)")?;
            for m in &messages {
                let body = serde_json::to_string(m).map_err(|e| StoreError::Encode(e.to_string()))?;
                ins.execute(rusqlite::params![key, t, body])?;
            }
        }
        tx.commit()?;
        Ok(())
    })
}

/// What `/status` shows about a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub created_at: u64,
    /// Unix time of the last turn.
    pub updated_at: u64,
    pub title: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub turns: u64,
    pub messages: u64,
}

/// A session's summary (`None` for a session never written).
pub fn info(
    db: &Db,
    key: &str,
) -> impl Future<Output = Result<Option<SessionInfo>, StoreError>> + use<> {
    let key = key.to_string();
    db.call(move |c| {
        let row = c.query_row(
            "SELECT created_at, updated_at, title, prompt_tokens, completion_tokens, turns,
               (SELECT COUNT(*) FROM messages WHERE session_key = ?1)
             FROM sessions WHERE key = ?1",
            [&key],
            |r| {
                Ok(SessionInfo {
                    created_at: r.get::<_, i64>(0)?.max(0) as u64,
                    updated_at: r.get::<_, i64>(1)?.max(0) as u64,
                    title: r.get(2)?,
                    prompt_tokens: r.get::<_, i64>(3)?.max(0) as u64,
                    completion_tokens: r.get::<_, i64>(4)?.max(0) as u64,
                    turns: r.get::<_, i64>(5)?.max(0) as u64,
                    messages: r.get::<_, i64>(6)?.max(0) as u64,
                })
            },
        );
        match row {
            Ok(i) => Ok(Some(i)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
}

/// Names a session (creating its row when it has none yet).
pub fn set_title(
    db: &Db,
    key: &str,
    title: &str,
) -> impl Future<Output = Result<(), StoreError>> + use<> {
    let (key, title) = (key.to_string(), title.to_string());
    db.call(move |c| {
        let t = now();
        c.execute(
            "INSERT INTO sessions (key, created_at, updated_at, title) VALUES (?1, ?2, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET title = ?3",
            rusqlite::params![key, t, title],
        )?;
        Ok(())
    })
}

/// The keys of the stored sessions under `prefix` (the prefix itself, or
/// keys that continue it with `:`), e.g. every thread of one channel.
pub fn keys_under(
    db: &Db,
    prefix: &str,
) -> impl Future<Output = Result<Vec<String>, StoreError>> + use<> {
    let prefix = prefix.to_string();
    db.call(move |c| {
        // `substr` rather than LIKE: keys may hold `%` or `_`.
        let mut stmt = c.prepare_cached(
            "SELECT key FROM sessions WHERE key = ?1 OR substr(key, 1, length(?1) + 1) = ?1 || ':' ORDER BY key",
        )?;
        let rows = stmt.query_map([&prefix], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

/// Forgets a session's history.
pub fn reset(db: &Db, key: &str) -> impl Future<Output = Result<(), StoreError>> + use<> {
    let key = key.to_string();
    db.call(move |c| {
        c.execute("DELETE FROM sessions WHERE key = ?1", [&key])?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_under_a_prefix_are_that_chats_threads_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = Db::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
        for k in [
            "a:c:C1",
            "a:c:C1:1.0",
            "a:c:C1:2.0",
            "a:c:C10:1.0",
            "a:c:C2:1.0",
        ] {
            append(&db, k, vec![Message::user("x")], Usage::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let keys = keys_under(&db, "a:c:C1").await.unwrap_or_default();
        assert_eq!(keys, vec!["a:c:C1", "a:c:C1:1.0", "a:c:C1:2.0"]);
    }

    #[tokio::test]
    async fn append_load_reset_survive_reopen() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        {
            let db = Db::open(&path).unwrap_or_else(|e| panic!("{e}"));
            append(
                &db,
                "s1",
                vec![Message::user("hi"), Message::assistant("hello")],
                Usage::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            append(&db, "s1", vec![Message::user("again")], Usage::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let db = Db::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let h = load(&db, "s1").await.unwrap_or_default();
        assert_eq!(
            h.iter().map(Message::text).collect::<Vec<_>>(),
            vec!["hi", "hello", "again"]
        );
        let i = info(&db, "s1")
            .await
            .unwrap_or_default()
            .unwrap_or_default();
        assert_eq!((i.turns, i.messages, i.title), (2, 3, None));
        set_title(&db, "s1", "Trip plans")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let i = info(&db, "s1")
            .await
            .unwrap_or_default()
            .unwrap_or_default();
        assert_eq!(i.title.as_deref(), Some("Trip plans"));
        reset(&db, "s1").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info(&db, "s1").await.unwrap_or_default(), None);
        assert!(load(&db, "s1").await.unwrap_or_default().is_empty());
    }
}
