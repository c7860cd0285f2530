//! Event journals: the numbered events of work that outlives its connection
//! (a stored Responses API response, a `/v1/runs` run), kept so any number
//! of readers can come and go and each sees every event once, in order.
//!
//! The writer of a stream (the task that drives the run) writes each batch
//! of events to the store first and only then publishes it to the live
//! [`Journal`]: an event a client saw is on disk, with the same number, after
//! a crash. A live journal holds every event of its run in memory, so a
//! reader that comes back while the run goes on replays from memory and then
//! waits for more, with no gap and no duplicate. Once the run ended (its last
//! event written, the journal closed and dropped from [`Journals`]) readers
//! replay from the database. The journal is dropped from the registry only
//! after its last write committed, so a reader that misses it there always
//! finds every event on disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use rusqlite::{Connection, params};
use tokio::sync::watch;

use crate::db::StoreError;
use crate::run_db::RunRow;
use crate::store::Store;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its number in the stream (responses count from 0, runs from 1).
    pub seq: u64,
    /// The SSE event name (`response.output_text.delta`, `run.completed`).
    pub kind: String,
    /// The JSON payload.
    pub data: String,
}

#[derive(Debug, Default)]
struct State {
    events: Vec<Arc<Event>>,
    closed: bool,
}

/// The events of one live stream.
#[derive(Debug)]
pub struct Journal {
    state: Mutex<State>,
    /// Bumped on every publish and at close; readers wait on it.
    changed: watch::Sender<u64>,
}

impl Default for Journal {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
        }
    }
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the Vec half-updated.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes events already written to the database.
    pub fn publish(&self, events: &[Arc<Event>]) {
        self.lock().events.extend(events.iter().cloned());
        self.changed.send_modify(|n| *n += 1);
    }

    /// No more events will come.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.send_modify(|n| *n += 1);
    }

    /// Events after `after` and whether the journal is closed.
    fn after(&self, after: i64) -> (Vec<Arc<Event>>, bool) {
        let st = self.lock();
        let start = st.events.partition_point(|e| (e.seq as i64) <= after);
        (st.events[start..].to_vec(), st.closed)
    }

    /// The events published so far.
    pub fn snapshot(&self) -> Vec<Arc<Event>> {
        self.after(-1).0
    }

    /// Every event after `after`, then each new one as it is published,
    /// ending when the journal closes.
    pub fn follow(self: Arc<Self>, after: i64) -> impl Stream<Item = Arc<Event>> + use<> {
        let rx = self.changed.subscribe();
        let start = (self, rx, after, Vec::<Arc<Event>>::new().into_iter());
        futures_util::stream::unfold(start, |(j, mut rx, mut after, mut pending)| async move {
            loop {
                if let Some(e) = pending.next() {
                    after = e.seq as i64;
                    return Some((e, (j, rx, after, pending)));
                }
                rx.borrow_and_update();
                let (batch, closed) = j.after(after);
                if !batch.is_empty() {
                    pending = batch.into_iter();
                    continue;
                }
                if closed || rx.changed().await.is_err() {
                    return None;
                }
            }
        })
    }
}

/// The live journals of this process, by stream id.
#[derive(Debug, Default)]
pub struct Journals {
    live: Mutex<HashMap<String, Arc<Journal>>>,
}

impl Journals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Journal>>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new live stream.
    pub fn open(&self, id: &str) -> Arc<Journal> {
        let j = Arc::new(Journal::default());
        self.lock().insert(id.to_string(), j.clone());
        j
    }

    /// The live journal of `id`, if its run is still going.
    pub fn get(&self, id: &str) -> Option<Arc<Journal>> {
        self.lock().get(id).cloned()
    }

    /// Ends a stream: closes its journal and forgets it. Call only after
    /// its last events were written.
    pub fn finish(&self, id: &str) {
        if let Some(j) = self.lock().remove(id) {
            j.close();
        }
    }

    /// Streams open now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

/// Writes events of a stream in one transaction.
pub fn write(c: &mut Connection, id: &str, events: &[Arc<Event>]) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    write_in(&tx, id, events)?;
    tx.commit()?;
    Ok(())
}

/// Writes events of a stream inside the caller's transaction (with the
/// state they go with: a run's row, a response's final object).
pub fn write_in(c: &Connection, id: &str, events: &[Arc<Event>]) -> Result<(), StoreError> {
    let mut ins = c.prepare_cached(
        // The first event written with a number keeps it: a writer that was
        // cut off (its run ended as interrupted by another gateway) never
        // overwrites the event that ended it.
        "INSERT OR IGNORE INTO stream_events (stream_id, seq, kind, data) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for e in events {
        ins.execute(params![id, e.seq as i64, e.kind, e.data])?;
    }
    Ok(())
}

/// The stored events of a stream after `after`, in order.
pub fn read_after(c: &Connection, id: &str, after: i64) -> Result<Vec<Event>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT seq, kind, data FROM stream_events WHERE stream_id = ?1 AND seq > ?2 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![id, after], |r| {
        Ok(Event {
            seq: r.get::<_, i64>(0)?.max(0) as u64,
            kind: r.get(1)?,
            data: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Forgets a stream's events.
pub fn delete(c: &Connection, id: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM stream_events WHERE stream_id = ?1", [id])?;
    Ok(())
}

/// The writing side of one stream: numbers events, writes them, publishes.
pub struct Writer {
    store: Store,
    id: String,
    journal: Arc<Journal>,
    next: u64,
}

impl Writer {
    /// A writer for a new stream whose first event has number `first`.
    pub fn new(store: Store, journals: &Journals, id: &str, first: u64) -> Self {
        Self {
            store,
            id: id.to_string(),
            journal: journals.open(id),
            next: first,
        }
    }

    /// The number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The live journal (for readers that start with the run).
    pub fn journal(&self) -> Arc<Journal> {
        self.journal.clone()
    }

    /// The stream's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Numbers events in order. Write them (with [`write_in`], in the
    /// transaction of what they go with), then [`Writer::publish`] them, or
    /// [`Writer::rewind`] when the write failed, so numbers never skip.
    pub fn number<I>(&mut self, events: I) -> Vec<Arc<Event>>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        events
            .into_iter()
            .map(|(kind, data)| {
                let seq = self.next;
                self.next += 1;
                Arc::new(Event { seq, kind, data })
            })
            .collect()
    }

    /// Hands written events to the readers.
    pub fn publish(&self, batch: &[Arc<Event>]) {
        if !batch.is_empty() {
            self.journal.publish(batch);
        }
    }

    /// Gives back the numbers of a batch that was not written.
    pub fn rewind(&mut self, batch: &[Arc<Event>]) {
        if let Some(first) = batch.first() {
            self.next = first.seq;
        }
    }

    /// Writes events (numbered in order), committed before readers see them.
    pub async fn emit<I>(&mut self, events: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        self.emit_with(events, None).await
    }

    /// [`Writer::emit`], with the run's row written in the same transaction
    /// when given (the state the events report: a GET is never behind them,
    /// a crash never splits them).
    pub async fn emit_with<I>(&mut self, events: I, run: Option<RunRow>) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let batch = self.number(events);
        let written = self.store.record_events(&self.id, run, batch.clone()).await;
        match written {
            Ok(()) => {
                self.publish(&batch);
                Ok(())
            }
            Err(e) => {
                self.rewind(&batch);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn ev(seq: u64) -> Arc<Event> {
        Arc::new(Event {
            seq,
            kind: "k".into(),
            data: seq.to_string(),
        })
    }

    #[tokio::test]
    async fn a_reader_gets_what_was_published_then_what_comes_then_ends() {
        let j = Arc::new(Journal::default());
        j.publish(&[ev(0), ev(1), ev(2)]);
        let mut r = Box::pin(j.clone().follow(0));
        assert_eq!(r.next().await.map(|e| e.seq), Some(1));
        assert_eq!(r.next().await.map(|e| e.seq), Some(2));
        let later = tokio::spawn({
            let j = j.clone();
            async move {
                j.publish(&[ev(3)]);
                j.close();
            }
        });
        assert_eq!(r.next().await.map(|e| e.seq), Some(3));
        assert_eq!(r.next().await, None);
        later.await.unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn many_readers_each_see_every_event_once() {
        let j = Arc::new(Journal::default());
        let readers: Vec<_> = (0..3)
            .map(|_| tokio::spawn(j.clone().follow(-1).map(|e| e.seq).collect::<Vec<_>>()))
            .collect();
        for s in 0..50 {
            j.publish(&[ev(s)]);
            tokio::task::yield_now().await;
        }
        j.close();
        for r in readers {
            let got = r.await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, (0..50).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn an_ended_stream_replays_from_the_database() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db =
            crate::db::Db::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::from(db);
        let journals = Journals::default();
        let mut w = Writer::new(store.clone(), &journals, "run_1", 1);
        let mut live = Box::pin(
            store
                .read_stream(&journals, "run_1", 0)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        w.emit([("a".to_string(), "1".to_string()), ("b".into(), "2".into())])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(live.next().await.map(|e| e.seq), Some(1));
        journals.finish("run_1");
        assert_eq!(live.next().await.map(|e| e.seq), Some(2));
        assert_eq!(live.next().await, None);
        assert_eq!(journals.count(), 0);
        let replay: Vec<u64> = store
            .read_stream(&journals, "run_1", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|e| e.seq)
            .collect()
            .await;
        assert_eq!(replay, vec![2]);
    }
}
