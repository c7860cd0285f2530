//! Session transcripts behind the storage interface: load a session's
//! history, append a turn's messages, reset a session, and what the sessions
//! API lists. Used by the HTTP API (`X-Hermes-Session-Id`) and the chat
//! platforms. The SQLite statements are here; the PostgreSQL ones are in
//! [`crate::store::pg_sessions`]. On either backend every operation is
//! queued at once and they run in the order they were queued, so a turn's
//! history always has the turn before it, awaited or not.

use crate::db::StoreError;
use crate::openai::{Message, Usage};
use crate::store::{Answer, Store, pg_sessions};

fn now() -> i64 {
    crate::clock::unix_now() as i64
}

/// The session's messages in order (empty for an unknown session).
pub fn load(store: &Store, key: &str) -> Answer<Vec<Message>> {
    let key = key.to_string();
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT body FROM messages WHERE session_key = ?1 ORDER BY id")?;
            let rows = stmt.query_map([&key], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for body in rows {
                let body = body?;
                match serde_json::from_str::<Message>(&body) {
                    Ok(m) => out.push(m),
                    Err(e) => {
                        log::warn!("session {key}: skipping an unreadable stored message: {e}")
                    }
                }
            }
            Ok(out)
        })),
        Store::Postgres(pg) => Box::pin(pg.call_ordered(move |c| pg_sessions::load(c, key))),
    }
}

/// Appends messages to a session (creating it), in one transaction.
/// The write is queued at once: a later `load` always sees it. `owner`: the
/// API key (by name) that created the session; the first one written stays.
pub fn append(
    store: &Store,
    key: &str,
    messages: Vec<Message>,
    usage: Usage,
    owner: Option<String>,
) -> Answer<()> {
    let key = key.to_string();
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
        let tx = c.transaction()?;
        let t = now();
        tx.execute(
            "INSERT INTO sessions (key, created_at, updated_at, prompt_tokens, completion_tokens, turns, owner)
             VALUES (?1, ?2, ?2, ?3, ?4, 1, ?5)
             ON CONFLICT(key) DO UPDATE SET updated_at = ?2,
               prompt_tokens = prompt_tokens + ?3, completion_tokens = completion_tokens + ?4, turns = turns + 1,
               owner = COALESCE(owner, ?5)",
            rusqlite::params![key, t, usage.prompt_tokens as i64, usage.completion_tokens as i64, owner],
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
    })),
        Store::Postgres(pg) => Box::pin(pg.call_ordered(move |c| pg_sessions::append(c, key, now(), messages, usage, owner))),
    }
}

/// Creates an empty session owned by `owner` (nothing when it exists).
pub fn open(store: &Store, key: &str, owner: &str) -> Answer<()> {
    let (key, owner) = (key.to_string(), owner.to_string());
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            let t = now();
            c.execute(
                "INSERT INTO sessions (key, created_at, updated_at, owner) VALUES (?1, ?2, ?2, ?3)
             ON CONFLICT(key) DO NOTHING",
                rusqlite::params![key, t, owner],
            )?;
            Ok(())
        })),
        Store::Postgres(pg) => {
            Box::pin(pg.call_ordered(move |c| pg_sessions::open(c, key, now(), owner)))
        }
    }
}

/// The API key (by name) that created a session: `None` for an unknown
/// session, `Some(None)` for one no key owns (a chat platform's).
pub fn owner(store: &Store, key: &str) -> Answer<Option<Option<String>>> {
    let key = key.to_string();
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            let mut stmt = c.prepare_cached("SELECT owner FROM sessions WHERE key = ?1")?;
            let row = stmt.query_row([&key], |r| r.get::<_, Option<String>>(0));
            match row {
                Ok(o) => Ok(Some(o)),
                Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })),
        Store::Postgres(pg) => Box::pin(pg.call_ordered(move |c| pg_sessions::owner(c, key))),
    }
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
pub fn info(store: &Store, key: &str) -> Answer<Option<SessionInfo>> {
    let key = key.to_string();
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
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
        })),
        Store::Postgres(pg) => Box::pin(pg.call_ordered(move |c| pg_sessions::info(c, key))),
    }
}

/// Names a session (creating its row when it has none yet).
pub fn set_title(store: &Store, key: &str, title: &str) -> Answer<()> {
    let (key, title) = (key.to_string(), title.to_string());
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            let t = now();
            c.execute(
                "INSERT INTO sessions (key, created_at, updated_at, title) VALUES (?1, ?2, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET title = ?3",
                rusqlite::params![key, t, title],
            )?;
            Ok(())
        })),
        Store::Postgres(pg) => {
            Box::pin(pg.call_ordered(move |c| pg_sessions::set_title(c, key, now(), title)))
        }
    }
}

/// The keys of the stored sessions under `prefix` (the prefix itself, or
/// keys that continue it with `:`), e.g. every thread of one channel.
pub fn keys_under(store: &Store, prefix: &str) -> Answer<Vec<String>> {
    let prefix = prefix.to_string();
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
        // `substr` rather than LIKE: keys may hold `%` or `_`.
        let mut stmt = c.prepare_cached(
            "SELECT key FROM sessions WHERE key = ?1 OR substr(key, 1, length(?1) + 1) = ?1 || ':' ORDER BY key",
        )?;
        let rows = stmt.query_map([&prefix], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })),
        Store::Postgres(pg) => Box::pin(pg.call_ordered(move |c| pg_sessions::keys_under(c, prefix))),
    }
}

/// Forgets a session's history.
pub fn reset(store: &Store, key: &str) -> Answer<()> {
    let key = key.to_string();
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            c.execute("DELETE FROM sessions WHERE key = ?1", [&key])?;
            Ok(())
        })),
        Store::Postgres(pg) => Box::pin(pg.call_ordered(move |c| pg_sessions::reset(c, key))),
    }
}

/// Whose stored sessions a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// Every session, chat platforms' too (`api_server.admin_keys`).
    All,
    /// Only the sessions this API key (by name) created.
    Key(String),
}

impl Viewer {
    /// The owner to filter on (`?n IS NULL OR owner = ?n` in SQL).
    fn owner(&self) -> Option<&str> {
        match self {
            Self::All => None,
            Self::Key(k) => Some(k),
        }
    }
}

/// A stored session as the sessions API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub key: String,
    pub title: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last turn (or rename).
    pub updated_at: u64,
    pub messages: u64,
}

/// A stored message with the Unix time its turn was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub message: Message,
    pub created_at: u64,
}

/// One page of sessions, most recently updated first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub sessions: Vec<Summary>,
    /// More sessions follow the last one.
    pub has_more: bool,
}

/// The columns of a [`Summary`], for `SELECT ... FROM sessions s`.
const SUMMARY_COLUMNS: &str = "s.key, s.title, s.created_at, s.updated_at,
    (SELECT COUNT(*) FROM messages m WHERE m.session_key = s.key)";

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Summary> {
    Ok(Summary {
        key: r.get(0)?,
        title: r.get(1)?,
        created_at: r.get::<_, i64>(2)?.max(0) as u64,
        updated_at: r.get::<_, i64>(3)?.max(0) as u64,
        messages: r.get::<_, i64>(4)?.max(0) as u64,
    })
}

fn summary_of(c: &rusqlite::Connection, key: &str) -> rusqlite::Result<Option<Summary>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM sessions s WHERE s.key = ?1"
    ))?;
    match stmt.query_row([key], summary_row) {
        Ok(s) => Ok(Some(s)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The first of `keys` that is a stored session `viewer` may see.
pub fn find(store: &Store, keys: Vec<String>, viewer: Viewer) -> Answer<Option<String>> {
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT 1 FROM sessions WHERE key = ?1 AND (?2 IS NULL OR owner = ?2)",
            )?;
            for key in keys {
                if stmt.exists(rusqlite::params![key, viewer.owner()])? {
                    return Ok(Some(key));
                }
            }
            Ok(None)
        })),
        Store::Postgres(pg) => {
            let owner = viewer.owner().map(String::from);
            Box::pin(pg.call_ordered(move |c| pg_sessions::find(c, keys, owner)))
        }
    }
}

/// Up to `limit` sessions `viewer` may see, most recently updated first
/// (ties by key), after the session `after` in that order. `None` when
/// `after` is not a session `viewer` sees.
pub fn list(
    store: &Store,
    viewer: Viewer,
    after: Option<String>,
    limit: usize,
) -> Answer<Option<Page>> {
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            let owner = viewer.owner();
            let cursor = match &after {
                None => None,
                Some(key) => {
                    let mut stmt = c.prepare_cached(
                    "SELECT updated_at FROM sessions WHERE key = ?1 AND (?2 IS NULL OR owner = ?2)",
                )?;
                    match stmt.query_row(rusqlite::params![key, owner], |r| r.get::<_, i64>(0)) {
                        Ok(t) => Some((key.as_str(), t)),
                        Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM sessions s
             WHERE (?1 IS NULL OR s.owner = ?1)
               AND (?2 IS NULL OR s.updated_at < ?3 OR (s.updated_at = ?3 AND s.key > ?2))
             ORDER BY s.updated_at DESC, s.key
             LIMIT ?4"
            ))?;
            // One more than asked: whether it exists is `has_more`.
            let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let rows = stmt.query_map(
                rusqlite::params![owner, cursor.map(|(k, _)| k), cursor.map(|(_, t)| t), fetch],
                summary_row,
            )?;
            let mut sessions = rows.collect::<Result<Vec<_>, _>>()?;
            let has_more = sessions.len() > limit;
            sessions.truncate(limit);
            Ok(Some(Page { sessions, has_more }))
        })),
        Store::Postgres(pg) => {
            let owner = viewer.owner().map(String::from);
            Box::pin(pg.call_ordered(move |c| pg_sessions::list(c, owner, after, limit)))
        }
    }
}

/// A session's summary and its messages in order, each with the time its
/// turn was written (`None` for an unknown session).
pub fn detail(store: &Store, key: &str) -> Answer<Option<(Summary, Vec<Stamped>)>> {
    let key = key.to_string();
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            // One transaction: the count and the messages agree.
            let tx = c.transaction()?;
            let Some(summary) = summary_of(&tx, &key)? else {
                return Ok(None);
            };
            let mut messages = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT created_at, body FROM messages WHERE session_key = ?1 ORDER BY id",
                )?;
                let rows = stmt.query_map([&key], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?;
                for row in rows {
                    let (t, body) = row?;
                    match serde_json::from_str::<Message>(&body) {
                        Ok(message) => messages.push(Stamped {
                            message,
                            created_at: t.max(0) as u64,
                        }),
                        Err(e) => {
                            log::warn!("session {key}: skipping an unreadable stored message: {e}")
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(Some((summary, messages)))
        })),
        Store::Postgres(pg) => Box::pin(pg.call_ordered(move |c| pg_sessions::detail(c, key))),
    }
}

/// Renames a session `viewer` may see; its summary after, or `None` when
/// there is no such session. `updated_at` stays the time of the last turn.
pub fn rename(store: &Store, key: &str, viewer: Viewer, title: &str) -> Answer<Option<Summary>> {
    let (key, title) = (key.to_string(), title.to_string());
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            let tx = c.transaction()?;
            let changed = tx.execute(
                "UPDATE sessions SET title = ?1 WHERE key = ?2 AND (?3 IS NULL OR owner = ?3)",
                rusqlite::params![title, key, viewer.owner()],
            )?;
            let summary = if changed == 0 {
                None
            } else {
                summary_of(&tx, &key)?
            };
            tx.commit()?;
            Ok(summary)
        })),
        Store::Postgres(pg) => {
            let owner = viewer.owner().map(String::from);
            Box::pin(pg.call_ordered(move |c| pg_sessions::rename(c, key, owner, title)))
        }
    }
}

/// Deletes a session `viewer` may see, messages and all; `false` when there
/// is no such session.
pub fn delete(store: &Store, key: &str, viewer: Viewer) -> Answer<bool> {
    let key = key.to_string();
    match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            let n = c.execute(
                "DELETE FROM sessions WHERE key = ?1 AND (?2 IS NULL OR owner = ?2)",
                rusqlite::params![key, viewer.owner()],
            )?;
            Ok(n > 0)
        })),
        Store::Postgres(pg) => {
            let owner = viewer.owner().map(String::from);
            Box::pin(pg.call_ordered(move |c| pg_sessions::delete(c, key, owner)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::store::test_backends;

    #[tokio::test]
    async fn keys_under_a_prefix_are_that_chats_threads_only() {
        for b in test_backends::all().await {
            let db = &b.store;
            for k in [
                "a:c:C1",
                "a:c:C1:1.0",
                "a:c:C1:2.0",
                "a:c:C10:1.0",
                "a:c:C2:1.0",
                "a:c:C1%:1.0",
            ] {
                append(db, k, vec![Message::user("x")], Usage::default(), None)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let keys = keys_under(db, "a:c:C1").await.unwrap_or_default();
            assert_eq!(
                keys,
                vec!["a:c:C1", "a:c:C1:1.0", "a:c:C1:2.0"],
                "{}",
                db.backend()
            );
        }
    }

    #[tokio::test]
    async fn a_turn_queued_without_waiting_is_in_the_next_load() {
        for b in test_backends::all().await {
            let db = &b.store;
            for i in 0..20 {
                let turn = vec![Message::user(format!("q{i}")), Message::assistant("a")];
                drop(append(db, "s", turn, Usage::default(), None));
            }
            let h = load(db, "s").await.unwrap_or_default();
            assert_eq!(h.len(), 40, "{}", db.backend());
            assert_eq!(h[38].text(), "q19");
        }
    }

    #[tokio::test]
    async fn append_load_reset_survive_reopen() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        {
            let db = Store::from(Db::open(&path).unwrap_or_else(|e| panic!("{e}")));
            append(
                &db,
                "s1",
                vec![Message::user("hi"), Message::assistant("hello")],
                Usage::default(),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            append(
                &db,
                "s1",
                vec![Message::user("again")],
                Usage::default(),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let db = Store::from(Db::open(&path).unwrap_or_else(|e| panic!("{e}")));
        check_history_info_title_reset(&db).await;
        if let Some(b) = test_backends::all().await.into_iter().nth(1) {
            let pg = &b.store;
            let turns = [
                vec![Message::user("hi"), Message::assistant("hello")],
                vec![Message::user("again")],
            ];
            for turn in turns {
                append(pg, "s1", turn, Usage::default(), None)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            check_history_info_title_reset(pg).await;
        }
    }

    /// Session `s1` holds the turns `hi`/`hello` and `again`.
    async fn check_history_info_title_reset(db: &Store) {
        let h = load(db, "s1").await.unwrap_or_default();
        assert_eq!(
            h.iter().map(Message::text).collect::<Vec<_>>(),
            vec!["hi", "hello", "again"]
        );
        let i = info(db, "s1").await.unwrap_or_default().unwrap_or_default();
        assert_eq!((i.turns, i.messages, i.title), (2, 3, None));
        set_title(db, "s1", "Trip plans")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let i = info(db, "s1").await.unwrap_or_default().unwrap_or_default();
        assert_eq!(i.title.as_deref(), Some("Trip plans"));
        reset(db, "s1").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info(db, "s1").await.unwrap_or_default(), None);
        assert!(load(db, "s1").await.unwrap_or_default().is_empty());
    }

    /// A database with sessions `a1`, `a2` (owned by `alice`), `b1` (by
    /// `bob`) and `telegram:7` (nobody's), updated in that order at times
    /// 100, 200, 200, 300.
    async fn owned_sessions(db: &Store) {
        for (key, owner, t) in [
            ("a1", Some("alice"), 100),
            ("a2", Some("alice"), 200),
            ("b1", Some("bob"), 200),
            ("telegram:7", None, 300),
        ] {
            append(
                db,
                key,
                vec![Message::user("q"), Message::assistant("a")],
                Usage::default(),
                owner.map(String::from),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let key = key.to_string();
            const SQL: &str = "UPDATE sessions SET updated_at = $1 WHERE key = $2";
            let set = match db {
                Store::Sqlite(db) => {
                    db.call(move |c| Ok(c.execute(SQL, rusqlite::params![t, key]).map(drop)?))
                        .await
                }
                Store::Postgres(pg) => {
                    pg.call(move |c| async move {
                        Ok(c.execute(SQL, &[&i64::from(t), &key]).await.map(drop)?)
                    })
                    .await
                }
            };
            set.unwrap_or_else(|e| panic!("{e}"));
        }
    }

    fn keys(page: &Option<Page>) -> Vec<&str> {
        page.iter()
            .flat_map(|p| p.sessions.iter().map(|s| s.key.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn lists_page_by_update_time_within_what_the_viewer_sees() {
        for b in test_backends::all().await {
            lists_page(&b.store).await;
        }
    }

    async fn lists_page(db: &Store) {
        owned_sessions(db).await;
        let alice = || Viewer::Key("alice".into());
        let all = list(db, Viewer::All, None, 10).await.unwrap_or_default();
        assert_eq!(keys(&all), vec!["telegram:7", "a2", "b1", "a1"]);
        assert_eq!(all.map(|p| p.has_more), Some(false));
        let first = list(db, Viewer::All, None, 2).await.unwrap_or_default();
        assert_eq!(keys(&first), vec!["telegram:7", "a2"]);
        assert_eq!(first.map(|p| p.has_more), Some(true));
        // A tie on the time goes by key, so a page starting after `a2` has `b1`.
        let next = list(db, Viewer::All, Some("a2".into()), 2)
            .await
            .unwrap_or_default();
        assert_eq!(keys(&next), vec!["b1", "a1"]);
        assert_eq!(next.map(|p| p.has_more), Some(false));
        let own = list(db, alice(), None, 10).await.unwrap_or_default();
        assert_eq!(keys(&own), vec!["a2", "a1"]);
        let own = list(db, alice(), Some("a2".into()), 10)
            .await
            .unwrap_or_default();
        assert_eq!(keys(&own), vec!["a1"]);
        // Paging after a session one cannot see, or one that does not exist.
        for after in ["b1", "nope"] {
            let page = list(db, alice(), Some(after.into()), 10).await;
            assert!(matches!(page, Ok(None)), "{after}: {page:?}");
        }
    }

    #[tokio::test]
    async fn find_rename_delete_respect_the_owner() {
        for b in test_backends::all().await {
            find_rename_delete(&b.store).await;
        }
    }

    async fn find_rename_delete(db: &Store) {
        owned_sessions(db).await;
        let alice = || Viewer::Key("alice".into());
        let found = find(db, vec!["b1".into(), "a1".into()], alice()).await;
        assert_eq!(found.ok().flatten().as_deref(), Some("a1"));
        let found = find(db, vec!["telegram:7".into()], alice()).await;
        assert_eq!(found.ok().flatten(), None);
        let found = find(db, vec!["telegram:7".into()], Viewer::All).await;
        assert_eq!(found.ok().flatten().as_deref(), Some("telegram:7"));

        let renamed = rename(db, "b1", alice(), "mine now").await;
        assert_eq!(renamed.ok().flatten(), None);
        let renamed = rename(db, "a1", alice(), "Trip").await.ok().flatten();
        let s = renamed.unwrap_or_else(|| panic!("a1 renamed"));
        assert_eq!(
            (s.title.as_deref(), s.updated_at, s.messages),
            (Some("Trip"), 100, 2)
        );

        let (summary, messages) = detail(db, "a1")
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a1 exists"));
        assert_eq!(summary, s);
        assert_eq!(
            messages
                .iter()
                .map(|m| m.message.text())
                .collect::<Vec<_>>(),
            vec!["q", "a"]
        );
        assert!(messages.iter().all(|m| m.created_at > 0));

        assert!(!delete(db, "b1", alice()).await.unwrap_or(true));
        assert!(delete(db, "a1", alice()).await.unwrap_or(false));
        assert_eq!(detail(db, "a1").await.ok().flatten(), None);
        assert!(load(db, "a1").await.unwrap_or_default().is_empty());
        assert!(delete(db, "telegram:7", Viewer::All).await.unwrap_or(false));
    }
}
