//! `Idempotency-Key` for non-streaming runs.
//!
//! The same key with the same body within [`IDEMPOTENCY_TTL`] gets the first
//! run's response; a duplicate that arrives while the first still runs waits
//! for it instead of starting another; the same key with another body is a
//! 409. Keys are scoped to the API key that sent them. A run that ends without
//! a response (client gone, admission refused) frees its key for a retry.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

/// How long a result is replayed.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);
/// Keys remembered at most; the oldest finished ones go first.
/// (Bytes are bounded too: `api_server.idempotency_cache_mb`.)
const MAX_KEYS: usize = 10_000;

/// A finished response to replay.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

enum Entry {
    Running {
        body_hash: u64,
        done: watch::Receiver<Option<Stored>>,
    },
    Done {
        body_hash: u64,
        at: Instant,
        response: Stored,
    },
}

type Key = (String, String);

/// Bytes a finished entry takes (its body and headers, plus the key).
fn size_of(key: &Key, s: &Stored) -> usize {
    key.0.len()
        + key.1.len()
        + s.body.len()
        + s.headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

struct Table {
    map: HashMap<Key, Entry>,
    /// Finished keys, oldest first (an entry here may be gone or newer in
    /// `map`; its `at` tells).
    order: VecDeque<(Instant, Key)>,
    /// Bytes of the finished entries.
    bytes: usize,
    budget: usize,
}

impl Table {
    fn remove(&mut self, key: &Key) {
        if let Some(Entry::Done { response, .. }) = self.map.remove(key) {
            self.bytes -= size_of(key, &response);
        }
    }

    /// Forgets expired results, then the oldest until both limits hold.
    fn shrink(&mut self, now: Instant, incoming: usize) {
        while let Some((at, key)) = self.order.front().cloned() {
            let expired = now.duration_since(at) > IDEMPOTENCY_TTL;
            let full = self.map.len() >= MAX_KEYS || self.bytes + incoming > self.budget;
            if !expired && !full {
                break;
            }
            self.order.pop_front();
            if matches!(self.map.get(&key), Some(Entry::Done { at: a, .. }) if *a == at) {
                self.remove(&key);
            }
        }
    }
}

/// The table of keys, bounded by [`MAX_KEYS`] and by a byte budget for the
/// results it keeps.
#[derive(Clone)]
pub struct Idempotency {
    inner: Arc<Mutex<Table>>,
}

/// What to do with a request.
pub enum Begin {
    /// First of its key: run it and hand the result to the [`Claim`].
    Fresh(Claim),
    /// Same key and body as a finished run: answer this.
    Replay(Stored),
    /// Same key and body as a running run: wait on this.
    Wait(watch::Receiver<Option<Stored>>),
    /// Same key, different body.
    Conflict,
}

/// The right and duty to produce the response for a key.
pub struct Claim {
    table: Idempotency,
    key: Key,
    body_hash: u64,
    tx: Option<watch::Sender<Option<Stored>>>,
}

impl Claim {
    /// Records the response and wakes the waiters. A result larger than the
    /// whole budget is handed to the waiters but not kept for replay.
    pub fn complete(mut self, response: Stored) {
        if let Some(tx) = self.tx.take() {
            let mut t = self.table.lock();
            t.map.remove(&self.key);
            let size = size_of(&self.key, &response);
            if size <= t.budget {
                let now = Instant::now();
                t.shrink(now, size);
                t.bytes += size;
                t.order.push_back((now, self.key.clone()));
                t.map.insert(
                    self.key.clone(),
                    Entry::Done {
                        body_hash: self.body_hash,
                        at: now,
                        response: response.clone(),
                    },
                );
            }
            let _ = tx.send(Some(response));
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Dropped without a response: forget the key so a retry runs again.
        if self.tx.take().is_some() {
            self.table.lock().remove(&self.key);
        }
    }
}

/// Hash of a request body.
pub fn body_hash(body: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

impl Idempotency {
    /// A table keeping at most `budget` bytes of results.
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Table {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                budget,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes of results kept (for metrics and tests).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Looks up `key` (scoped by `principal`, the API key's name).
    pub fn begin(&self, principal: &str, key: &str, body_hash: u64) -> Begin {
        let mut t = self.lock();
        let now = Instant::now();
        t.shrink(now, 0);
        let k = (principal.to_string(), key.to_string());
        match t.map.get(&k) {
            Some(Entry::Done {
                body_hash: h,
                at,
                response,
            }) if now.duration_since(*at) <= IDEMPOTENCY_TTL => {
                return if *h == body_hash {
                    Begin::Replay(response.clone())
                } else {
                    Begin::Conflict
                };
            }
            Some(Entry::Running { body_hash: h, done }) => {
                return if *h == body_hash {
                    Begin::Wait(done.clone())
                } else {
                    Begin::Conflict
                };
            }
            _ => {}
        }
        t.remove(&k);
        let (tx, rx) = watch::channel(None);
        t.map.insert(
            k.clone(),
            Entry::Running {
                body_hash,
                done: rx,
            },
        );
        Begin::Fresh(Claim {
            table: self.clone(),
            key: k,
            body_hash,
            tx: Some(tx),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(s: &str) -> Stored {
        Stored {
            status: 200,
            headers: vec![],
            body: Bytes::from(s.to_string()),
        }
    }

    #[tokio::test]
    async fn replay_wait_conflict_and_release() {
        let t = Idempotency::new(1 << 20);
        let Begin::Fresh(claim) = t.begin("k", "a", 1) else {
            panic!("fresh expected")
        };
        let Begin::Wait(mut rx) = t.begin("k", "a", 1) else {
            panic!("wait expected")
        };
        assert!(matches!(t.begin("k", "a", 2), Begin::Conflict));
        assert!(
            matches!(t.begin("other", "a", 2), Begin::Fresh(_)),
            "keys are scoped per API key"
        );
        claim.complete(stored("first"));
        let _ = rx.changed().await;
        assert_eq!(
            rx.borrow().as_ref().map(|s| s.body.clone()),
            Some(Bytes::from("first"))
        );
        assert!(matches!(t.begin("k", "a", 1), Begin::Replay(s) if s.body == "first"));
        // A claim dropped without a result frees the key.
        let Begin::Fresh(c) = t.begin("k", "b", 1) else {
            panic!("fresh expected")
        };
        drop(c);
        assert!(matches!(t.begin("k", "b", 1), Begin::Fresh(_)));
    }

    #[test]
    fn results_are_bounded_by_bytes_oldest_first() {
        let t = Idempotency::new(2_500);
        for key in ["a", "b", "c"] {
            let Begin::Fresh(claim) = t.begin("k", key, 1) else {
                panic!("fresh expected")
            };
            claim.complete(stored(&"x".repeat(1_000)));
        }
        assert!(t.bytes() <= 2_500, "{}", t.bytes());
        assert!(
            matches!(t.begin("k", "a", 1), Begin::Fresh(_)),
            "the oldest went"
        );
        assert!(matches!(t.begin("k", "c", 1), Begin::Replay(_)));
        // A result larger than the budget is answered but not kept.
        let Begin::Fresh(claim) = t.begin("k", "big", 1) else {
            panic!("fresh expected")
        };
        claim.complete(stored(&"x".repeat(5_000)));
        assert!(matches!(t.begin("k", "big", 1), Begin::Fresh(_)));
        assert!(t.bytes() <= 2_500);
    }
}
