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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::params;
use serde_json::{Value, json};

use crate::db::{Db, StoreError};
use crate::platforms::{ChatKind, ChatRef};

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
    db: Db,
    open: Arc<OpenSet>,
    run: Arc<str>,
    /// Platforms whose left-over obligations were taken up (once each).
    recovered: Arc<Mutex<Vec<String>>>,
}

impl Deliveries {
    /// The obligations of this process (`run` tells them from earlier ones).
    pub fn new(db: Db, open: Arc<OpenSet>, run: &str) -> Self {
        Self {
            db,
            open,
            run: run.into(),
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
        let inserted = self
            .db
            .call(move |c| {
                c.execute(
                    "INSERT INTO deliveries (platform, session_key, chat, reply_to, created_at, updated_at, run)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
                    params![platform, key, chat_json, reply_to, now as i64, run],
                )?;
                Ok(c.last_insert_rowid())
            })
            .await;
        match inserted {
            Ok(id) => {
                self.open.insert(id, now);
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
    pub fn left_over(
        &self,
        platform: &str,
    ) -> impl Future<Output = Result<Vec<Pending>, StoreError>> + use<> {
        let (platform, run) = (platform.to_string(), self.run.to_string());
        self.db.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, chat, reply_to, messages, current_id, current_text, current_stream, final_text
                 FROM deliveries WHERE platform = ?1 AND run != ?2 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![platform, run], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, chat, reply_to, messages, cur_id, cur_text, stream, final_text) = row?;
                let Some(chat) = serde_json::from_str(&chat).ok().and_then(|v| chat_from_json(&v)) else {
                    log::warn!("delivery {id}: unreadable chat; dropped");
                    continue;
                };
                out.push(Pending {
                    id,
                    chat,
                    reply_to,
                    messages: serde_json::from_str(&messages).unwrap_or_default(),
                    current: cur_id.map(|i| Current {
                        id: i,
                        text: cur_text.unwrap_or_default(),
                        stream,
                    }),
                    final_text,
                });
            }
            Ok(out)
        })
    }

    /// Forgets an obligation of an earlier run, once it was finished.
    pub fn finished(&self, id: i64) -> impl Future<Output = Result<(), StoreError>> + use<> {
        close_row(&self.db, id)
    }
}

fn close_row(db: &Db, id: i64) -> impl Future<Output = Result<(), StoreError>> + use<> {
    db.call(move |c| {
        c.execute("DELETE FROM deliveries WHERE id = ?1", [id])?;
        Ok(())
    })
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
    db: Db,
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
        drop(self.db.call(move |c| {
            let (cid, ctext, cstream) = match current {
                Some(cur) => (Some(cur.id), Some(cur.text), cur.stream),
                None => (None, None, false),
            };
            c.execute(
                "UPDATE deliveries SET messages = ?2, current_id = ?3, current_text = ?4,
                   current_stream = ?5, updated_at = ?6 WHERE id = ?1",
                params![id, messages, cid, ctext, cstream, now],
            )?;
            Ok(())
        }));
    }

    /// The turn ended with this answer (what a restart before its delivery
    /// still delivers).
    pub fn answered(&self, final_text: &str) {
        let (id, text) = (self.id, final_text.to_string());
        drop(self.db.call(move |c| {
            c.execute(
                "UPDATE deliveries SET final_text = ?2 WHERE id = ?1",
                params![id, text],
            )?;
            Ok(())
        }));
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

    fn chat() -> ChatRef {
        ChatRef {
            id: "C1".into(),
            kind: ChatKind::Channel,
            thread: Some("1.0".into()),
        }
    }

    #[tokio::test]
    async fn obligations_survive_a_restart_and_are_another_runs_to_finish() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.db");
        let open = Arc::new(OpenSet::default());
        {
            let db = Db::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let d = Deliveries::new(db, open.clone(), "run-1");
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
        let db = Db::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let d = Deliveries::new(db, Arc::new(OpenSet::default()), "run-2");
        let left = d.left_over("slack").await.unwrap_or_default();
        assert_eq!(left.len(), 2);
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
