//! The events of streams (stored responses and runs) behind the storage
//! interface, and following a stream another instance is writing.
//!
//! On SQLite the writer of a stream is always this process, and its live
//! [`crate::journal::Journal`] is what readers follow. On PostgreSQL a
//! stream may be written by another instance: a reader here replays what is
//! stored and then follows the store, woken by the writer's `NOTIFY` on
//! [`pg_listen::EVENTS`] (sent in the transaction that writes the events)
//! and, should a notification be lost, by a timer every [`FOLLOW_POLL`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::broadcast;

use super::pg_listen::{self, Notice};
use super::{Answer, Store, pg_runs};
use crate::db::StoreError;
use crate::journal::{self, Event};
use crate::run_db::RunRow;

/// How often a reader following another instance's stream re-reads the
/// store without news (the spec: nothing polls faster than once a second).
pub const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// Whether stream `id` may still get events: a run still active, or a
/// response still live.
const OPEN_SQL: &str = "SELECT 1 FROM runs WHERE id = $1
        AND status IN ('queued', 'running', 'requires_approval')
    UNION ALL SELECT 1 FROM responses WHERE id = $1 AND live = 1";

impl Store {
    /// Writes events of stream `id`, with its run's row when given, in one
    /// transaction (a GET is never behind an event sent, a crash never
    /// splits them).
    pub fn record_events(
        &self,
        id: &str,
        run: Option<RunRow>,
        events: Vec<Arc<Event>>,
    ) -> Answer<()> {
        let id = id.to_string();
        match self {
            Store::Sqlite(db) => Box::pin(db.call(move |c| {
                let tx = c.transaction()?;
                if let Some(r) = &run {
                    crate::run_db::update(&tx, r)?;
                }
                journal::write_in(&tx, &id, &events)?;
                tx.commit()?;
                Ok(())
            })),
            // Not the ordered lane: each stream's writer waits for its
            // batch before the next, and streams need not wait for each other.
            Store::Postgres(pg) => Box::pin(pg.call(move |mut c| async move {
                pg_runs::record(&mut c, &id, run.as_ref(), &events).await
            })),
        }
    }

    /// The stored events of stream `id` after `after`, in order.
    pub fn events_after(&self, id: &str, after: i64) -> Answer<Vec<Event>> {
        let id = id.to_string();
        match self {
            Store::Sqlite(db) => Box::pin(db.call(move |c| journal::read_after(c, &id, after))),
            Store::Postgres(pg) => Box::pin(
                pg.call(move |c| async move { pg_runs::read_events_after(&c, &id, after).await }),
            ),
        }
    }

    /// Every event of stream `id` after `after`, as one stream: this
    /// instance's live journal when it writes the stream; else what is
    /// stored, then (PostgreSQL) what another instance still writes.
    pub async fn read_stream(
        &self,
        journals: &journal::Journals,
        id: &str,
        after: i64,
    ) -> Result<Pin<Box<dyn Stream<Item = Arc<Event>>>>, StoreError> {
        if let Some(j) = journals.get(id) {
            return Ok(Box::pin(j.follow(after)));
        }
        let Store::Postgres(pg) = self else {
            let stored = self.events_after(id, after).await?;
            return Ok(Box::pin(futures_util::stream::iter(
                stored.into_iter().map(Arc::new),
            )));
        };
        // Subscribed before the first read: nothing written after it is missed.
        let news = pg.subscribe();
        // Whether it is open is read before the events: the events a closing
        // write adds are then in this read (or followed after it).
        let open = self.stream_open(id).await?;
        let stored = self.events_after(id, after).await?;
        if !open {
            return Ok(Box::pin(futures_util::stream::iter(
                stored.into_iter().map(Arc::new),
            )));
        }
        let follow = Follow {
            store: self.clone(),
            id: id.to_string(),
            news,
            after,
            pending: stored.into_iter(),
            done: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            follow,
            |mut f| async move {
                let e = f.next().await?;
                Some((e, f))
            },
        )))
    }

    /// Waits (up to `limit`) until stream `id` has written its last event,
    /// here or on another instance (a stopped run, a cancelled response);
    /// says so in the log when it did not.
    pub async fn wait_until_ended(
        &self,
        journals: &journal::Journals,
        id: &str,
        limit: std::time::Duration,
    ) {
        use futures_util::StreamExt;
        match self.read_stream(journals, id, i64::MAX).await {
            Ok(rest) => {
                if tokio::time::timeout(limit, rest.for_each(|_| async {}))
                    .await
                    .is_err()
                {
                    log::warn!("{id}: still running {limit:?} after it was stopped");
                }
            }
            Err(e) => log::warn!("{id}: cannot wait for its end: {e}"),
        }
    }

    /// Whether stream `id` may still get events (PostgreSQL; see [`OPEN_SQL`]).
    async fn stream_open(&self, id: &str) -> Result<bool, StoreError> {
        let Store::Postgres(pg) = self else {
            return Ok(false);
        };
        let id = id.to_string();
        pg.call(move |c| async move { Ok(!c.query(OPEN_SQL, &[&id]).await?.is_empty()) })
            .await
    }
}

/// A reader following a stream another instance writes.
struct Follow {
    store: Store,
    id: String,
    news: broadcast::Receiver<Notice>,
    /// The number of the last event handed out.
    after: i64,
    pending: std::vec::IntoIter<Event>,
    /// The stream was seen closed and read to its end.
    done: bool,
}

impl Follow {
    /// The next event, waiting for it as long as the stream is open.
    async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(e) = self.pending.next() {
                self.after = e.seq as i64;
                return Some(Arc::new(e));
            }
            if self.done {
                return None;
            }
            self.wait().await;
            // Whether it was open is read before the events: the events a
            // closing write adds are then always in this read or the next.
            let open = match self.store.stream_open(&self.id).await {
                Ok(open) => open,
                Err(e) => {
                    log::warn!("stream {}: cannot follow it: {e}", self.id);
                    return None;
                }
            };
            match self.store.events_after(&self.id, self.after).await {
                Ok(events) => self.pending = events.into_iter(),
                Err(e) => {
                    log::warn!("stream {}: cannot follow it: {e}", self.id);
                    return None;
                }
            }
            self.done = !open;
        }
    }

    /// Waits for news of this stream, or [`FOLLOW_POLL`].
    async fn wait(&mut self) {
        pg_listen::wait_for(&mut self.news, pg_listen::EVENTS, &self.id, FOLLOW_POLL).await;
    }
}
