//! Delivery obligations: one per chat answer, kept in `state.db` from
//! before the first send until the answer is delivered, so an answer a
//! restart cut off is finished (or its user told) instead of silently lost.
//!
//! An obligation records where the answer goes (platform, session, chat,
//! the user's message), the ids of the messages written so far, the message
//! still being typed out (its id and the text it shows, without the
//! cursor; or the native stream it is), and, once the turn ended, its final
//! text. The turn driver opens and closes it; the preview records progress
//! after every write the platform accepted. Each process has a run id: at
//! start-up, each platform finishes the obligations of earlier runs
//! ([`recovery`]) and leaves this run's alone.
//!
//! [`OpenSet`] is the in-memory view for `/health/detailed`, `/metrics`
//! and the log line about old obligations. No actix here.
//!
//! Obligations are kept behind the storage interface ([`Store`]); on either
//! backend each write is queued at once and lands in the order it was made.
//! With several instances, the left-over obligations of a platform are taken
//! up by the instance that takes its consumer lease (`platforms::consumer`):
//! only the lease holder answers that platform, so every other run's open
//! obligations there belong to an instance that stopped or died.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::params;
use serde_json::{Value, json};

use crate::db::StoreError;
use crate::platforms::{ChatKind, ChatRef};
use crate::store::{Answer, Store};

/// An obligation older than this gets a log line (once).
pub const OLD_AFTER: Duration = Duration::from_secs(60);
/// What a cut-off preview's last text is marked with.
pub const RESTART_MARK: &str = " (interrupted by a restart)";
/// The notice a user gets for a turn a restart cut off.
pub const CUT_OFF_NOTICE: &str = "⚠️ The gateway restarted while answering this, so the answer was cut off. Please send your message again.";

/// The obligations open in this process, by id: when each was opened (unix
/// seconds) and whether its age was already logged.
#[derive(Debug, Default)]
pub struct OpenSet(Mutex<BTreeMap<i64, (u64, bool)>>);

impl OpenSet {
    fn insert(&self, id: i64, at: u64) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (at, false));
    }

    fn remove(&self, id: i64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// How many are open, and the age of the oldest (seconds).
    pub fn summary(&self, now: u64) -> (usize, u64) {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = m.values().map(|(at, _)| now.saturating_sub(*at)).max();
        (m.len(), oldest.unwrap_or(0))
    }

    /// Ids older than [`OLD_AFTER`] not reported before (each once).
    pub fn newly_old(&self, now: u64) -> Vec<(i64, u64)> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (id, (at, told)) in m.iter_mut() {
            let age = now.saturating_sub(*at);
            if !*told && age >= OLD_AFTER.as_secs() {
                *told = true;
                out.push((*id, age));
            }
        }
        out
    }
}

/// Opens obligations for one process.
#[derive(Clone)]
pub struct Deliveries {
    db: Store,
    open: Arc<OpenSet>,
    run: Arc<str>,
    /// The gateway instance this process is (see `platforms::consumer`).
    instance: Arc<str>,
    /// Platforms whose left-over obligations were taken up (once each).
    recovered: Arc<Mutex<Vec<String>>>,
}

impl Deliveries {
    /// The obligations of this process (`run` tells them from earlier
    /// ones), recorded as opened by gateway `instance`.
    pub fn new(db: Store, open: Arc<OpenSet>, run: &str, instance: &str) -> Self {
        Self {
            db,
            open,
            run: run.into(),
            instance: instance.into(),
            recovered: Arc::default(),
        }
    }

    /// True the first time `platform` asks: it finishes what earlier runs
    /// left (later reconnects do not).
    pub fn claim_recovery(&self, platform: &str) -> bool {
        let mut r = self.recovered.lock().unwrap_or_else(|p| p.into_inner());
        if r.iter().any(|p| p == platform) {
            return false;
        }
        r.push(platform.to_string());
        true
    }

    /// Records a new obligation, committed before it returns. `None` when
    /// the store failed (logged; the answer still goes out).
    pub async fn open(
        &self,
        platform: &str,
        session_key: &str,
        chat: &ChatRef,
        reply_to: Option<&str>,
    ) -> Option<Obligation> {
        let now = crate::clock::unix_now();
        let (platform, key, chat_json, reply_to, run) = (
            platform.to_string(),
            session_key.to_string(),
            chat_to_json(chat).to_string(),
            reply_to.map(String::from),
            self.run.to_string(),
        );
        let instance = self.instance.to_string();
        let now = now as i64;
        let inserted = match &self.db {
            Store::Sqlite(db) => {
                db.call(move |c| {
                    c.execute(
                        "INSERT INTO deliveries (platform, session_key, chat, reply_to, created_at, updated_at, run, instance)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)",
                        params![platform, key, chat_json, reply_to, now, run, instance],
                    )?;
                    Ok(c.last_insert_rowid())
                })
                .await
            }
            Store::Postgres(pg) => {
                pg.call_ordered(move |c| async move {
                    let row = c
                        .query_one(
                            "INSERT INTO deliveries (platform, session_key, chat, reply_to, created_at, updated_at, run, instance)
                             VALUES ($1, $2, $3, $4, $5, $5, $6, $7) RETURNING id",
                            &[&platform, &key, &chat_json, &reply_to, &now, &run, &instance],
                        )
                        .await?;
                    Ok(row.get(0))
                })
                .await
            }
        };
        match inserted {
            Ok(id) => {
                self.open.insert(id, now as u64);
                Some(Obligation {
                    db: self.db.clone(),
                    open: self.open.clone(),
                    id,
                })
            }
            Err(e) => {
                log::error!("cannot record a delivery obligation: {e}");
                None
            }
        }
    }

    /// The open obligations of `platform` left by earlier runs.
    pub fn left_over(&self, platform: &str) -> Answer<Vec<Pending>> {
        let (platform, run) = (platform.to_string(), self.run.to_string());
        match &self.db {
            Store::Sqlite(db) => Box::pin(db.call(move |c| {
                let mut stmt = c.prepare_cached(&format!("{LEFT_OVER_SQL} ORDER BY id"))?;
                let rows = stmt.query_map(params![platform, run], |r| {
                    Ok(Row {
                        id: r.get(0)?,
                        chat: r.get(1)?,
                        reply_to: r.get(2)?,
                        messages: r.get(3)?,
                        current_id: r.get(4)?,
                        current_text: r.get(5)?,
                        current_stream: r.get(6)?,
                        final_text: r.get(7)?,
                        instance: r.get(8)?,
                    })
                })?;
                Ok(pending(rows.collect::<Result<Vec<_>, _>>()?))
            })),
            Store::Postgres(pg) => Box::pin(pg.call_ordered(move |c| async move {
                let rows = c
                    .query(&format!("{LEFT_OVER_SQL} ORDER BY id"), &[&platform, &run])
                    .await?;
                Ok(pending(
                    rows.iter()
                        .map(|r| Row {
                            id: r.get(0),
                            chat: r.get(1),
                            reply_to: r.get(2),
                            messages: r.get(3),
                            current_id: r.get(4),
                            current_text: r.get(5),
                            current_stream: r.get::<_, i32>(6) != 0,
                            final_text: r.get(7),
                            instance: r.get(8),
                        })
                        .collect(),
                ))
            })),
        }
    }

    /// Forgets an obligation of an earlier run, once it was finished.
    pub fn finished(&self, id: i64) -> Answer<()> {
        close_row(&self.db, id)
    }
}

/// The columns of a left-over obligation, for both backends (SQLite numbers
/// `$n` parameters in the order they first appear, which is `n` here).
const LEFT_OVER_SQL: &str =
    "SELECT id, chat, reply_to, messages, current_id, current_text, current_stream, final_text,
       instance FROM deliveries WHERE platform = $1 AND run != $2";

/// A stored obligation as read, before its JSON is decoded.
struct Row {
    id: i64,
    instance: Option<String>,
    chat: String,
    reply_to: Option<String>,
    messages: String,
    current_id: Option<String>,
    current_text: Option<String>,
    current_stream: bool,
    final_text: Option<String>,
}

/// Decodes stored obligations; one whose chat cannot be read is dropped.
fn pending(rows: Vec<Row>) -> Vec<Pending> {
    let mut out = Vec::new();
    for row in rows {
        let id = row.id;
        let Some(chat) = serde_json::from_str(&row.chat)
            .ok()
            .and_then(|v| chat_from_json(&v))
        else {
            log::warn!("delivery {id}: unreadable chat; dropped");
            continue;
        };
        out.push(Pending {
            id,
            chat,
            reply_to: row.reply_to,
            messages: serde_json::from_str(&row.messages).unwrap_or_default(),
            current: row.current_id.map(|i| Current {
                id: i,
                text: row.current_text.unwrap_or_default(),
                stream: row.current_stream,
            }),
            final_text: row.final_text,
            instance: row.instance,
        });
    }
    out
}
/// Runs one write on either backend, queued at once and in order. Most
/// are not waited for, so a failure is logged here.
fn write(db: &Store, sqlite: &'static str, pg: &'static str, args: Args) -> Answer<()> {
    let logged = |r: Result<(), StoreError>| {
        if let Err(e) = &r {
            log::warn!("cannot record a delivery obligation: {e}");
        }
        r
    };
    match db {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            let params = rusqlite::params_from_iter(args.iter().map(Arg::sqlite));
            logged(
                c.execute(sqlite, params)
                    .map(drop)
                    .map_err(StoreError::from),
            )
        })),
        Store::Postgres(pg_db) => Box::pin(pg_db.call_ordered(move |c| async move {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                args.iter().map(Arg::pg).collect();
            logged(
                c.execute(pg, &params)
                    .await
                    .map(drop)
                    .map_err(StoreError::from),
            )
        })),
    }
}

/// A statement's argument, for either backend.
enum Arg {
    Int(i64),
    Text(Option<String>),
}

type Args = Vec<Arg>;

impl Arg {
    fn sqlite(&self) -> rusqlite::types::Value {
        match self {
            Arg::Int(v) => rusqlite::types::Value::Integer(*v),
            Arg::Text(Some(t)) => rusqlite::types::Value::Text(t.clone()),
            Arg::Text(None) => rusqlite::types::Value::Null,
        }
    }

    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Arg::Int(v) => v,
            Arg::Text(t) => t,
        }
    }
}

fn close_row(db: &Store, id: i64) -> Answer<()> {
    write(
        db,
        "DELETE FROM deliveries WHERE id = ?1",
        "DELETE FROM deliveries WHERE id = $1",
        vec![Arg::Int(id)],
    )
}

/// The message still being typed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub id: String,
    /// What it shows, without the cursor.
    pub text: String,
    /// A native streaming message (stopped, not edited).
    pub stream: bool,
}

/// One open obligation of this process.
#[derive(Clone)]
pub struct Obligation {
    db: Store,
    open: Arc<OpenSet>,
    id: i64,
}

impl Obligation {
    /// Records what is on screen after a write the platform accepted:
    /// every message written, and the one still being typed out. Queued at
    /// once (writes land in order); not waited for.
    pub fn progress(&self, messages: &[String], current: Option<Current>) {
        let (id, messages) = (self.id, json!(messages).to_string());
        let now = crate::clock::unix_now() as i64;
        let (cid, ctext, cstream) = match current {
            Some(cur) => (Some(cur.id), Some(cur.text), cur.stream),
            None => (None, None, false),
        };
        drop(write(
            &self.db,
            "UPDATE deliveries SET messages = ?2, current_id = ?3, current_text = ?4,
               current_stream = ?5, updated_at = ?6 WHERE id = ?1",
            "UPDATE deliveries SET messages = $2, current_id = $3, current_text = $4,
               current_stream = $5::bigint, updated_at = $6 WHERE id = $1",
            vec![
                Arg::Int(id),
                Arg::Text(Some(messages)),
                Arg::Text(cid),
                Arg::Text(ctext),
                Arg::Int(i64::from(cstream)),
                Arg::Int(now),
            ],
        ));
    }

    /// The turn ended with this answer (what a restart before its delivery
    /// still delivers).
    pub fn answered(&self, final_text: &str) {
        drop(write(
            &self.db,
            "UPDATE deliveries SET final_text = ?2 WHERE id = ?1",
            "UPDATE deliveries SET final_text = $2 WHERE id = $1",
            vec![Arg::Int(self.id), Arg::Text(Some(final_text.to_string()))],
        ));
    }

    /// The answer was delivered: the obligation is gone.
    pub fn close(&self) {
        self.open.remove(self.id);
        drop(close_row(&self.db, self.id));
    }
}

/// An obligation an earlier run left open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: i64,
    /// The gateway instance that opened it (`None`: before instances were
    /// recorded).
    pub instance: Option<String>,
    pub chat: ChatRef,
    pub reply_to: Option<String>,
    pub messages: Vec<String>,
    pub current: Option<Current>,
    pub final_text: Option<String>,
}

/// What finishing a left-over obligation takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The turn was complete but nothing was shown: send its answer.
    Deliver(String),
    /// The turn was cut off: finalise the message being typed out (if any:
    /// edit it to this text, or stop the stream with the mark) and send one
    /// notice.
    CutOff { finalise: Option<Current> },
}

/// What to do with a left-over obligation.
pub fn recovery(p: &Pending) -> Recovery {
    match (&p.final_text, p.messages.is_empty()) {
        (Some(text), true) if !text.trim().is_empty() => Recovery::Deliver(text.clone()),
        _ => Recovery::CutOff {
            finalise: p.current.clone().map(|mut c| {
                if !c.stream {
                    c.text.truncate(c.text.trim_end().len());
                    c.text.push_str(RESTART_MARK);
                }
                c
            }),
        },
    }
}

fn chat_to_json(chat: &ChatRef) -> Value {
    let kind = match chat.kind {
        ChatKind::Dm => "dm",
        ChatKind::Group => "group",
        ChatKind::Channel => "channel",
    };
    json!({"id": chat.id, "kind": kind, "thread": chat.thread})
}

fn chat_from_json(v: &Value) -> Option<ChatRef> {
    let kind = match v["kind"].as_str()? {
        "dm" => ChatKind::Dm,
        "group" => ChatKind::Group,
        "channel" => ChatKind::Channel,
        _ => return None,
    };
    Some(ChatRef {
        id: v["id"].as_str()?.to_string(),
        kind,
        thread: v["thread"].as_str().map(String::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends;

    fn chat() -> ChatRef {
        ChatRef {
            id: "C1".into(),
            kind: ChatKind::Channel,
            thread: Some("1.0".into()),
        }
    }

    #[tokio::test]
    async fn obligations_survive_a_restart_and_are_another_runs_to_finish() {
        for b in test_backends::all().await {
            survive_and_are_another_runs(&b.store).await;
        }
    }

    /// One run opens obligations; "after a restart" (a new run id on the
    /// same store) they are left over for the next run to finish.
    async fn survive_and_are_another_runs(db: &Store) {
        let open = Arc::new(OpenSet::default());
        {
            let d = Deliveries::new(db.clone(), open.clone(), "run-1", "gw");
            let a = d
                .open("slack", "k", &chat(), Some("1.0"))
                .await
                .unwrap_or_else(|| panic!("not opened"));
            a.progress(
                &["m1".into()],
                Some(Current {
                    id: "m1".into(),
                    text: "half an ans".into(),
                    stream: false,
                }),
            );
            let b = d
                .open("slack", "k2", &chat(), None)
                .await
                .unwrap_or_else(|| panic!("not opened"));
            b.answered("all of it");
            let c = d
                .open("slack", "k3", &chat(), None)
                .await
                .unwrap_or_else(|| panic!("not opened"));
            c.close();
            assert_eq!(open.summary(crate::clock::unix_now()).0, 2);
            // Its own run's obligations are not left over.
            assert!(d.left_over("slack").await.unwrap_or_default().is_empty());
        }
        let d = Deliveries::new(db.clone(), Arc::new(OpenSet::default()), "run-2", "gw");
        let left = d.left_over("slack").await.unwrap_or_default();
        assert_eq!(left.len(), 2, "{}", db.backend());
        assert_eq!(left[0].chat, chat());
        assert_eq!(left[0].reply_to.as_deref(), Some("1.0"));
        assert_eq!(
            recovery(&left[0]),
            Recovery::CutOff {
                finalise: Some(Current {
                    id: "m1".into(),
                    text: format!("half an ans{RESTART_MARK}"),
                    stream: false,
                })
            }
        );
        assert_eq!(recovery(&left[1]), Recovery::Deliver("all of it".into()));
        assert!(d.left_over("telegram").await.unwrap_or_default().is_empty());
        d.finished(left[0].id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.left_over("slack").await.unwrap_or_default().len(), 1);
    }

    #[tokio::test]
    async fn obligations_are_kept_in_the_sqlite_file_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        let open = |run| {
            let db = crate::db::Db::open(&path).unwrap_or_else(|e| panic!("{e}"));
            Deliveries::new(db.into(), Arc::default(), run, "gw")
        };
        let d = open("run-1");
        let a = d.open("slack", "k", &chat(), None).await;
        a.unwrap_or_else(|| panic!("not opened")).answered("kept");
        drop(d);
        let left = open("run-2").left_over("slack").await.unwrap_or_default();
        assert_eq!(left.len(), 1);
        assert_eq!(recovery(&left[0]), Recovery::Deliver("kept".into()));
    }

    #[test]
    fn old_obligations_are_told_once() {
        let s = OpenSet::default();
        s.insert(1, 100);
        s.insert(2, 150);
        assert_eq!(s.summary(200), (2, 100));
        assert!(s.newly_old(159).is_empty());
        assert_eq!(s.newly_old(170), vec![(1, 70)]);
        assert!(s.newly_old(171).is_empty());
        assert_eq!(s.newly_old(300), vec![(2, 150)]);
        s.remove(1);
        s.remove(2);
        assert_eq!(s.summary(400), (0, 0));
    }

    #[test]
    fn a_cut_off_stream_is_stopped_and_an_empty_answer_is_a_cut_off() {
        let p = Pending {
            id: 1,
            instance: None,
            chat: chat(),
            reply_to: None,
            messages: vec!["s1".into()],
            current: Some(Current {
                id: "s1".into(),
                text: "so far".into(),
                stream: true,
            }),
            final_text: None,
        };
        assert_eq!(
            recovery(&p),
            Recovery::CutOff {
                finalise: p.current.clone()
            }
        );
        let empty = Pending {
            messages: vec![],
            current: None,
            final_text: Some(" ".into()),
            ..p
        };
        assert_eq!(recovery(&empty), Recovery::CutOff { finalise: None });
    }
}
