//! Stored Responses API responses and runs behind the storage interface:
//! each operation once per backend ([`crate::response_db`] and
//! [`crate::run_db`] on SQLite, [`super::pg_responses`] and
//! [`super::pg_runs`] on PostgreSQL).
//!
//! On PostgreSQL these go through the pool, not the ordered lane: each is
//! awaited by the request or task that made it before it makes the next, and
//! requests of different clients need not wait for each other.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Answer, Store, pg_responses, pg_runs};
use crate::journal::Event;
use crate::response_db::{self, StoredApproval, StoredResponse};
use crate::run_db::{self, Claim, RunRow};

/// One operation on either backend: `$sqlite` is a closure on the SQLite
/// connection, `$pg` one on a pooled PostgreSQL connection (`mut c`).
macro_rules! either {
    ($store:expr, |$c:ident| $sqlite:expr, |mut $p:ident| $pg:expr) => {
        match $store {
            Store::Sqlite(db) => Box::pin(db.call(move |$c| $sqlite)),
            Store::Postgres(pg) => Box::pin(pg.call(move |$p| async move {
                #[allow(unused_mut)]
                let mut $p = $p;
                $pg
            })),
        }
    };
}

impl Store {
    /// Stores a response (and points `conversation` at it), with its events.
    pub fn insert_response(
        &self,
        r: StoredResponse,
        conversation: Option<String>,
        events: Vec<Arc<Event>>,
    ) -> Answer<()> {
        either!(
            self,
            |c| response_db::insert(c, &r, conversation.as_deref(), &events),
            |mut c| pg_responses::insert(&mut c, &r, conversation.as_deref(), &events).await
        )
    }

    /// One response by id.
    pub fn response(&self, id: &str) -> Answer<Option<StoredResponse>> {
        let id = id.to_string();
        either!(self, |c| response_db::get(c, &id), |mut c| {
            pg_responses::get(&c, &id).await
        })
    }

    /// Whether response `id` is stored (a cheap check before a cached copy
    /// is served: another instance may have deleted it).
    pub fn response_exists(&self, id: &str) -> Answer<bool> {
        const SQL: &str = "SELECT 1 FROM responses WHERE id = $1";
        let id = id.to_string();
        either!(
            self,
            |c| Ok(c.prepare_cached(SQL)?.exists([&id])?),
            |mut c| Ok(c.query_opt(SQL, &[&id]).await?.is_some())
        )
    }

    /// The turns of a response and its ancestors, oldest first.
    pub fn response_chain(&self, id: &str) -> Answer<Vec<String>> {
        let id = id.to_string();
        either!(self, |c| response_db::chain(c, &id), |mut c| {
            pg_responses::chain(&c, &id).await
        })
    }

    /// Whether `id` is `head` or one of its ancestors.
    pub fn in_chain(&self, head: &str, id: &str) -> Answer<bool> {
        let (head, id) = (head.to_string(), id.to_string());
        either!(self, |c| response_db::in_chain(c, &head, &id), |mut c| {
            pg_responses::in_chain(&c, &head, &id).await
        })
    }

    /// Deletes a response with everything that belongs to it; whether it existed.
    pub fn delete_response(&self, id: &str) -> Answer<bool> {
        let id = id.to_string();
        either!(self, |c| response_db::delete(c, &id), |mut c| {
            pg_responses::delete(&mut c, &id).await
        })
    }

    /// The items with these ids among `owner`'s stored responses.
    pub fn response_items(&self, owner: &str, ids: Vec<String>) -> Answer<HashMap<String, Value>> {
        let owner = owner.to_string();
        either!(self, |c| response_db::items(c, &owner, &ids), |mut c| {
            pg_responses::items(&c, &owner, &ids).await
        })
    }

    /// `owner`'s approvals with these ids.
    pub fn approvals(&self, owner: &str, ids: Vec<String>) -> Answer<Vec<StoredApproval>> {
        let owner = owner.to_string();
        either!(
            self,
            |c| response_db::approvals(c, &owner, &ids),
            |mut c| pg_responses::approvals(&c, &owner, &ids).await
        )
    }

    /// Marks approvals answered; true only when every one was still open.
    pub fn answer_approvals(&self, ids: Vec<String>) -> Answer<bool> {
        either!(self, |c| response_db::answer_approvals(c, &ids), |mut c| {
            pg_responses::answer_approvals(&mut c, &ids).await
        })
    }

    /// The latest response of a conversation name.
    pub fn conversation(&self, name: &str) -> Answer<Option<String>> {
        let name = name.to_string();
        either!(self, |c| response_db::conversation(c, &name), |mut c| {
            pg_responses::conversation(&c, &name).await
        })
    }

    /// The responses still running, with the instance running each.
    pub fn live_responses(&self) -> Answer<Vec<(String, Option<String>)>> {
        either!(self, |c| response_db::live(c), |mut c| pg_responses::live(
            &c
        )
        .await)
    }

    /// Ends a running response: its object, no longer running, with closing
    /// events; `false` when it ended meanwhile (nothing is written).
    pub fn settle_response(
        &self,
        id: &str,
        object: String,
        events: Vec<Arc<Event>>,
    ) -> Answer<bool> {
        let id = id.to_string();
        either!(
            self,
            |c| response_db::settle(c, &id, &object, &events),
            |mut c| pg_responses::settle(&mut c, &id, &object, &events).await
        )
    }

    /// How many responses are stored.
    pub fn response_count(&self) -> Answer<usize> {
        either!(self, |c| response_db::count(c), |mut c| {
            pg_responses::count(&c).await
        })
    }

    /// Deletes responses older than `min_created_at` and the oldest beyond
    /// `max_count` (running ones stay); the ids deleted.
    pub fn evict_responses(&self, max_count: usize, min_created_at: i64) -> Answer<Vec<String>> {
        either!(
            self,
            |c| response_db::evict(c, max_count, min_created_at),
            |mut c| pg_responses::evict(&mut c, max_count, min_created_at).await
        )
    }

    /// A run by id.
    pub fn run(&self, id: &str) -> Answer<Option<RunRow>> {
        let id = id.to_string();
        either!(self, |c| run_db::get(c, &id), |mut c| pg_runs::get(&c, &id)
            .await)
    }

    /// Inserts a new run, claiming `idempotency` (key, body hash) for it.
    pub fn insert_run(
        &self,
        run: RunRow,
        idempotency: Option<(String, String)>,
        now: i64,
    ) -> Answer<Claim> {
        either!(
            self,
            |c| {
                let idem = idempotency.as_ref().map(|(k, h)| (k.as_str(), h.as_str()));
                run_db::insert(c, &run, idem, now)
            },
            |mut c| {
                let idem = idempotency.as_ref().map(|(k, h)| (k.as_str(), h.as_str()));
                pg_runs::insert(&mut c, &run, idem, now).await
            }
        )
    }

    /// Forgets a run that never started, with its events.
    pub fn remove_run(&self, id: &str) -> Answer<()> {
        let id = id.to_string();
        either!(self, |c| run_db::remove(c, &id), |mut c| pg_runs::remove(
            &mut c, &id
        )
        .await)
    }

    /// Deletes finished runs created before `min_created_at`; how many.
    pub fn evict_runs(&self, min_created_at: i64) -> Answer<usize> {
        either!(self, |c| run_db::evict(c, min_created_at), |mut c| {
            pg_runs::evict(&mut c, min_created_at).await
        })
    }

    /// The runs still active, with the instance running each.
    pub fn active_runs(&self) -> Answer<Vec<(String, Option<String>)>> {
        either!(self, |c| run_db::active(c), |mut c| pg_runs::active(&c)
            .await)
    }

    /// Ends run `id`, cut off while active, as interrupted; `false` when it
    /// was no longer active.
    pub fn interrupt_run(&self, id: &str, now: i64) -> Answer<bool> {
        let id = id.to_string();
        either!(self, |c| run_db::interrupt(c, &id, now), |mut c| {
            pg_runs::interrupt(&mut c, &id, now).await
        })
    }
}

/// The behaviour of stored responses, runs and their events, on both
/// backends.
#[cfg(test)]
mod tests {
    use super::super::test_backends;
    use super::*;
    use crate::db::StoreError;

    fn ok<T>(r: Result<T, StoreError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
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
            owner: "k".into(),
            item_ids: Vec::new(),
            approvals: Vec::new(),
            live: false,
            instance: None,
        }
    }

    fn ev(seq: u64, kind: &str, data: &str) -> Arc<Event> {
        Arc::new(Event {
            seq,
            kind: kind.into(),
            data: data.into(),
        })
    }

    /// The numbers and kinds of stream `id`'s stored events after `after`.
    async fn kinds(s: &Store, id: &str, after: i64) -> Vec<(u64, String)> {
        ok(s.events_after(id, after).await)
            .into_iter()
            .map(|e| (e.seq, e.kind))
            .collect()
    }

    fn run(id: &str, owner: &str, at: i64) -> RunRow {
        RunRow {
            id: id.into(),
            owner: owner.into(),
            session_id: "s".into(),
            status: "queued".into(),
            created_at: at,
            ..RunRow::default()
        }
    }

    #[tokio::test]
    async fn chain_delete_and_eviction() {
        for b in test_backends::all().await {
            let s = &b.store;
            ok(
                s.insert_response(resp("a", None, 1), Some("conv".into()), vec![])
                    .await,
            );
            ok(
                s.insert_response(resp("b", Some("a"), 2), Some("conv".into()), vec![])
                    .await,
            );
            ok(s.insert_response(resp("c", Some("b"), 3), None, vec![])
                .await);
            assert_eq!(
                ok(s.response_chain("c").await),
                vec!["[\"a\"]", "[\"b\"]", "[\"c\"]"]
            );
            assert_eq!(ok(s.conversation("conv").await).as_deref(), Some("b"));
            assert_eq!(
                ok(s.response("b").await).map(|r| r.previous_id),
                Some(Some("a".into()))
            );
            // Capacity 2: the oldest goes.
            assert_eq!(ok(s.evict_responses(2, 0).await), vec!["a".to_string()]);
            assert_eq!(ok(s.response_count().await), 2);
            assert!(ok(s.response_exists("b").await));
            assert!(ok(s.delete_response("b").await));
            assert!(!ok(s.response_exists("b").await));
            assert_eq!(
                ok(s.conversation("conv").await),
                None,
                "deleting clears the name"
            );
            assert!(!ok(s.delete_response("b").await));
            // Age: everything created before 4 goes; a running one stays.
            let mut live = resp("d", None, 1);
            live.live = true;
            ok(s.insert_response(live, None, vec![]).await);
            assert_eq!(
                ok(s.evict_responses(100, 4).await),
                vec!["c".to_string()],
                "{}",
                s.backend()
            );
        }
    }

    #[tokio::test]
    async fn items_and_approvals_belong_to_their_key() {
        for b in test_backends::all().await {
            let s = &b.store;
            let mut r = resp("r1", None, 1);
            r.input_items =
                r#"[{"id":"msg_in","type":"message","role":"user","content":"hi"}]"#.into();
            r.response = r#"{"output":[{"id":"mcp_1","type":"mcp_call","name":"t"},{"id":"mcpr_1","type":"mcp_approval_request"}]}"#.into();
            r.item_ids = vec!["msg_in".into(), "mcp_1".into(), "mcpr_1".into()];
            r.approvals = vec![StoredApproval {
                approval_id: "mcpr_1".into(),
                response_id: "r1".into(),
                call_id: "call_9".into(),
                name: "terminal".into(),
                arguments: "{}".into(),
                answered: false,
            }];
            ok(s.insert_response(r, None, vec![]).await);
            ok(s.insert_response(resp("r2", Some("r1"), 2), None, vec![])
                .await);
            let ids = vec![
                "mcp_1".to_string(),
                "msg_in".to_string(),
                "nope".to_string(),
            ];
            let found = ok(s.response_items("k", ids.clone()).await);
            assert_eq!(found.len(), 2);
            assert_eq!(found["mcp_1"]["type"], "mcp_call");
            assert!(ok(s.response_items("other-key", ids).await).is_empty());
            assert!(ok(s.in_chain("r2", "r1").await));
            assert!(!ok(s.in_chain("r1", "r2").await));

            let ids = vec!["mcpr_1".to_string()];
            assert_eq!(ok(s.approvals("k", ids.clone()).await).len(), 1);
            assert!(ok(s.approvals("other-key", ids.clone()).await).is_empty());
            assert!(ok(s.answer_approvals(ids.clone()).await));
            assert!(!ok(s.answer_approvals(ids.clone()).await), "answered once");
            assert!(ok(s.approvals("k", ids.clone()).await)[0].answered);
            // Deleting the response takes its items and approvals with it.
            assert!(ok(s.delete_response("r1").await));
            assert!(ok(s.response_items("k", vec!["mcp_1".into()]).await).is_empty());
            assert!(ok(s.approvals("k", ids).await).is_empty());
        }
    }

    #[tokio::test]
    async fn a_live_response_keeps_its_instance_until_settled_with_its_last_event() {
        for b in test_backends::all().await {
            let s = &b.store;
            let mut r = resp("r", None, 1);
            (r.live, r.instance) = (true, Some("gw-a".into()));
            ok(
                s.insert_response(r, None, vec![ev(0, "response.created", "{}")])
                    .await,
            );
            ok(s.insert_response(resp("done", None, 1), None, vec![]).await);
            assert_eq!(
                ok(s.live_responses().await),
                vec![("r".to_string(), Some("gw-a".to_string()))]
            );
            assert!(ok(s
                .settle_response(
                    "r",
                    "{\"status\":\"incomplete\"}".into(),
                    vec![ev(1, "response.incomplete", "{}")],
                )
                .await));
            assert!(ok(s.live_responses().await).is_empty());
            // Ended already (by its own instance, say): settling again
            // writes nothing, neither the object nor an event.
            let again =
                s.settle_response("r", "{}".into(), vec![ev(2, "response.incomplete", "{}")]);
            assert!(!ok(again.await), "{}", s.backend());
            assert_eq!(ok(s.events_after("r", 1).await), vec![]);
            assert_eq!(
                ok(s.response("r").await).map(|r| r.response),
                Some("{\"status\":\"incomplete\"}".into())
            );
            let kinds = kinds(s, "r", -1).await;
            assert_eq!(
                kinds,
                vec![
                    (0, "response.created".into()),
                    (1, "response.incomplete".into())
                ]
            );
            // Deleting a response deletes its events.
            assert!(ok(s.delete_response("r").await));
            assert!(ok(s.events_after("r", -1).await).is_empty());
        }
    }

    #[tokio::test]
    async fn an_idempotency_key_replays_conflicts_and_expires_per_owner() {
        for b in test_backends::all().await {
            let s = &b.store;
            let ins =
                |r: RunRow, hash: &str, now| s.insert_run(r, Some(("k1".into(), hash.into())), now);
            assert_eq!(
                ok(ins(run("run_a", "alice", 100), "h", 100).await),
                Claim::Inserted
            );
            match ok(ins(run("run_b", "alice", 200), "h", 200).await) {
                Claim::Replay(r) => assert_eq!(r.id, "run_a"),
                other => panic!("{other:?}"),
            }
            assert_eq!(
                ok(ins(run("run_c", "alice", 200), "other", 200).await),
                Claim::Conflict
            );
            // Another key's namespace is its own.
            assert_eq!(
                ok(ins(run("run_d", "bob", 200), "x", 200).await),
                Claim::Inserted
            );
            // After 24 h the key is free again.
            let later = 100 + run_db::IDEMPOTENCY_TTL_SECS + 1;
            assert_eq!(
                ok(ins(run("run_e", "alice", later), "other", later).await),
                Claim::Inserted
            );
            // A run that never started is forgotten, key and all.
            ok(s.remove_run("run_e").await);
            assert_eq!(ok(s.run("run_e").await), None);
            assert_eq!(
                ok(ins(run("run_f", "alice", later), "h2", later).await),
                Claim::Inserted
            );
        }
    }

    #[tokio::test]
    async fn racing_requests_with_one_key_make_one_run() {
        for b in test_backends::all().await {
            let s = &b.store;
            let tries = (0..8).map(|i| {
                s.insert_run(
                    run(&format!("run_{i}"), "alice", 100),
                    Some(("k".into(), "h".into())),
                    100,
                )
            });
            let claims = futures_util::future::join_all(tries).await;
            let inserted = claims
                .iter()
                .filter(|c| matches!(c, Ok(Claim::Inserted)))
                .count();
            let replayed = claims
                .iter()
                .filter(|c| matches!(c, Ok(Claim::Replay(_))))
                .count();
            assert_eq!((inserted, replayed), (1, 7), "{}: {claims:?}", s.backend());
        }
    }

    #[tokio::test]
    async fn runs_cut_off_end_interrupted_with_a_last_event() {
        for b in test_backends::all().await {
            let s = &b.store;
            let mut a = run("run_a", "k", 1);
            a.instance = Some("gw-a".into());
            ok(s.insert_run(a.clone(), None, 1).await);
            let mut done = run("run_b", "k", 1);
            ok(s.insert_run(done.clone(), None, 1).await);
            done.status = "completed".into();
            ok(s.record_events("run_b", Some(done), vec![]).await);
            a.status = "running".into();
            ok(s.record_events(
                "run_a",
                Some(a),
                vec![
                    ev(1, "run.started", "{}"),
                    ev(2, "message.delta", r#"{"delta":"Hel"}"#),
                    ev(3, "message.delta", r#"{"delta":"lo"}"#),
                ],
            )
            .await);
            assert_eq!(
                ok(s.active_runs().await),
                vec![("run_a".to_string(), Some("gw-a".to_string()))]
            );
            ok(s.interrupt_run("run_a", 5).await);
            let a = ok(s.run("run_a").await)
                .map(|r| (r.status, r.finished_at, r.output_text, r.instance));
            assert_eq!(
                a,
                Some(("interrupted".into(), Some(5), "Hello".into(), None))
            );
            let stored = kinds(s, "run_a", 0).await;
            assert_eq!(
                stored,
                vec![
                    (1, "run.started".into()),
                    (2, "message.delta".into()),
                    (3, "message.delta".into()),
                    (4, "run.interrupted".into()),
                ]
            );
            // Once ended, interrupting again adds nothing.
            assert!(!ok(s.interrupt_run("run_a", 6).await));
            assert_eq!(ok(s.events_after("run_a", 3).await).len(), 1);
            // Its gateway, not dead after all, writes on: the run stays
            // interrupted and the event that ended it keeps its number.
            let mut late = run("run_a", "k", 1);
            late.status = "completed".into();
            ok(
                s.record_events("run_a", Some(late), vec![ev(4, "run.completed", "{}")])
                    .await,
            );
            let kept = ok(s.run("run_a").await).map(|r| r.status);
            assert_eq!(kept.as_deref(), Some("interrupted"), "{}", s.backend());
            assert_eq!(
                kinds(s, "run_a", 3).await,
                vec![(4, "run.interrupted".to_string())]
            );
            // Old finished runs go with their events; active ones stay.
            ok(s.insert_run(run("run_c", "k", 1), None, 1).await);
            assert_eq!(ok(s.evict_runs(2).await), 2);
            assert!(ok(s.run("run_c").await).is_some());
            assert!(ok(s.events_after("run_a", 0).await).is_empty());
        }
    }

    #[tokio::test]
    async fn a_reader_on_another_instance_follows_a_stream_to_its_end() {
        let Some(url) = test_backends::postgres_url() else {
            return;
        };
        use futures_util::StreamExt;
        let url = test_backends::fresh_postgres_db(&url).await;
        let writer = Store::Postgres(ok(super::super::Pg::connect(&url, 2).await));
        let reader = Store::Postgres(ok(super::super::Pg::connect(&url, 2).await));
        let mut r = run("run_x", "k", 1);
        ok(writer.insert_run(r.clone(), None, 1).await);
        ok(writer
            .record_events("run_x", None, vec![ev(1, "run.started", "{}")])
            .await);
        // The reader has no live journal: it replays, then follows the store.
        let journals = crate::journal::Journals::default();
        let mut stream = ok(reader.read_stream(&journals, "run_x", 0).await);
        assert_eq!(stream.next().await.map(|e| e.seq), Some(1));
        ok(writer
            .record_events("run_x", None, vec![ev(2, "message.delta", "{}")])
            .await);
        assert_eq!(stream.next().await.map(|e| e.seq), Some(2));
        r.status = "completed".into();
        ok(writer
            .record_events("run_x", Some(r), vec![ev(3, "run.completed", "{}")])
            .await);
        assert_eq!(stream.next().await.map(|e| e.seq), Some(3));
        assert_eq!(stream.next().await, None, "ends with the run");
        // Resumed after its end: what is left, then the end.
        let rest: Vec<u64> = ok(reader.read_stream(&journals, "run_x", 1).await)
            .map(|e| e.seq)
            .collect()
            .await;
        assert_eq!(rest, vec![2, 3]);
    }
}
