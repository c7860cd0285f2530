//! Log lines leave through a writer thread, never from the thread that logs.
//!
//! Every HTTP request logs a line. Written straight to stderr, that line
//! blocks the async worker (and every request on it) whenever stderr is
//! slow: journald behind on a busy machine, or a log file on a disk that
//! throttles writers during write-back. So
//! `env_logger` formats a record into a buffer on the logging thread and
//! hands it to a bounded queue; one thread writes the queue to stderr. When
//! the queue is full, the line is dropped and counted (the next line that
//! fits says how many were lost) instead of stalling requests. Lines that
//! arrive together are written together, one write per batch. [`flush`]
//! waits, bounded, until everything queued was written (at exit).

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

/// Log lines that may wait for the writer thread.
const QUEUE_LINES: usize = 16_384;
/// How long the writer lets lines gather when they come fast.
const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// How long [`flush`] waits for the writer at most.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Item {
    Line(Vec<u8>),
    /// Answered once every line queued before it was written.
    Flush(SyncSender<()>),
}

struct Queue {
    tx: SyncSender<Item>,
    dropped: AtomicU64,
}

static QUEUE: OnceLock<&'static Queue> = OnceLock::new();

/// The writer `env_logger` writes each formatted record to.
struct QueueWriter {
    /// One record's bytes until `flush` (env_logger flushes each record).
    pending: Vec<u8>,
    queue: &'static Queue,
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.pending);
        let q = self.queue;
        let lost = q.dropped.swap(0, Ordering::Relaxed);
        let line = if lost > 0 {
            let mut l =
                format!("[hermes::logging] {lost} log line(s) dropped: stderr was too slow\n")
                    .into_bytes();
            l.extend_from_slice(&line);
            l
        } else {
            line
        };
        match q.tx.try_send(Item::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                q.dropped.fetch_add(1 + lost, Ordering::Relaxed);
            }
            // The writer is gone (it cannot panic, but never lose the line).
            Err(TrySendError::Disconnected(Item::Line(l))) => {
                let _ = std::io::stderr().write_all(&l);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
        Ok(())
    }
}

/// Writes queued lines to `out` until every sender is gone. A line that
/// comes alone is written at once. When lines come faster than one per
/// `window`, the writer waits out the window before it writes everything
/// queued by then: loggers then find this thread busy instead of waiting (no
/// wake-up per line), and `out` gets one write per batch instead of one per
/// line.
fn write_all(rx: Receiver<Item>, out: &mut impl Write, window: Duration) {
    let mut batch = Vec::new();
    let mut flushed = Vec::new();
    let mut last_write: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        if last_write.is_some_and(|t| t.elapsed() < window) {
            std::thread::sleep(window);
        }
        for item in std::iter::once(first).chain(rx.try_iter().take(QUEUE_LINES)) {
            match item {
                Item::Line(l) => batch.extend_from_slice(&l),
                Item::Flush(done) => flushed.push(done),
            }
        }
        let _ = out.write_all(&batch);
        let _ = out.flush();
        last_write = Some(Instant::now());
        batch.clear();
        // Every line queued before these flushes is written now.
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Sets up logging: `RUST_LOG` if set, else `default`; lines are written
/// by a thread of their own.
pub fn init(default: &str) {
    let env = env_logger::Env::default().default_filter_or(default);
    let (tx, rx) = sync_channel(QUEUE_LINES);
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_all(rx, &mut std::io::stderr(), BATCH_WINDOW));
    let mut builder = env_logger::Builder::from_env(env);
    builder.format_timestamp_millis();
    if spawned.is_ok() {
        // Lives as long as the process, like the logger that uses it.
        let queue: &'static Queue = Box::leak(Box::new(Queue {
            tx,
            dropped: AtomicU64::new(0),
        }));
        let _ = QUEUE.set(queue);
        builder.target(env_logger::Target::Pipe(Box::new(QueueWriter {
            pending: Vec::new(),
            queue,
        })));
    }
    let _ = builder.try_init();
}

/// Waits (at most [`FLUSH_WAIT`]) until every queued line was written.
pub fn flush() {
    let Some(q) = QUEUE.get() else { return };
    let (done, wait) = sync_channel(1);
    if q.tx.send(Item::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(FLUSH_WAIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that records each `write` call.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_queued_together_are_written_in_one_write_and_flush_waits_for_them() {
        let (tx, rx) = sync_channel(16);
        for l in ["one\n", "two\n", "three\n"] {
            tx.send(Item::Line(l.as_bytes().to_vec()))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let (done, flushed) = sync_channel(1);
        tx.send(Item::Flush(done)).unwrap_or_else(|e| panic!("{e}"));
        drop(tx);
        let mut out = Writes::default();
        write_all(rx, &mut out, Duration::ZERO);
        assert_eq!(out.0, vec![b"one\ntwo\nthree\n".to_vec()]);
        assert!(flushed.try_recv().is_ok(), "the flush was answered");
    }

    #[test]
    fn a_line_that_comes_alone_is_written_at_once() {
        let (tx, rx) = sync_channel(16);
        let (wrote, written) = sync_channel(1);
        /// Reports each write as it happens.
        struct Tell(SyncSender<Vec<u8>>);
        impl Write for Tell {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.send(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // A window far longer than the test: waiting it out would fail.
        let writer = std::thread::spawn(move || {
            write_all(rx, &mut Tell(wrote), Duration::from_secs(3600));
        });
        tx.send(Item::Line(b"alone\n".to_vec()))
            .unwrap_or_else(|e| panic!("{e}"));
        let got = written
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("not written at once: {e}"));
        assert_eq!(got, b"alone\n");
        drop(tx);
        writer.join().unwrap_or_else(|_| panic!("writer panicked"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking_then_says_so() {
        // A queue of one line that nobody reads yet.
        let (tx, rx) = sync_channel(1);
        let queue: &'static Queue = Box::leak(Box::new(Queue {
            tx,
            dropped: AtomicU64::new(0),
        }));
        let mut w = QueueWriter {
            pending: Vec::new(),
            queue,
        };
        let mut log = |text: &str| {
            w.write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            w.flush().unwrap_or_else(|e| panic!("{e}"));
        };
        log("first\n");
        log("second\n"); // returns at once: the queue is full
        log("third\n");
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 2);
        let line = |item: Item| match item {
            Item::Line(l) => String::from_utf8_lossy(&l).into_owned(),
            Item::Flush(_) => String::new(),
        };
        assert_eq!(rx.try_recv().map(line).ok().as_deref(), Some("first\n"));
        log("fourth\n");
        let next = rx.try_recv().map(line).unwrap_or_default();
        assert_eq!(
            next,
            "[hermes::logging] 2 log line(s) dropped: stderr was too slow\nfourth\n"
        );
    }
}
