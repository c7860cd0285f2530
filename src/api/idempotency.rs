//! `Idempotency-Key` for non-streaming runs.
//!
//! The same key with the same body within [`IDEMPOTENCY_TTL`] gets the first
//! run's response; a duplicate that arrives while the first still runs waits
//! for it instead of starting another; the same key with another body is a
//! 409. Keys are scoped to the API key that sent them. A run that ends without
//! a response (client gone, admission refused) frees its key for a retry.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

/// How long a result is replayed.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);
/// Keys remembered at most; the oldest finished ones go first.
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

/// The table of keys.
#[derive(Clone, Default)]
pub struct Idempotency {
    inner: Arc<Mutex<HashMap<Key, Entry>>>,
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
    /// Records the response and wakes the waiters.
    pub fn complete(mut self, response: Stored) {
        if let Some(tx) = self.tx.take() {
            let mut map = self.table.lock();
            map.insert(
                self.key.clone(),
                Entry::Done {
                    body_hash: self.body_hash,
                    at: Instant::now(),
                    response: response.clone(),
                },
            );
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks up `key` (scoped by `principal`, the API key's name).
    pub fn begin(&self, principal: &str, key: &str, body_hash: u64) -> Begin {
        let mut map = self.lock();
        let now = Instant::now();
        if map.len() >= MAX_KEYS {
            map.retain(|_, e| !matches!(e, Entry::Done { at, .. } if now.duration_since(*at) > IDEMPOTENCY_TTL));
            if map.len() >= MAX_KEYS {
                let oldest = map
                    .iter()
                    .filter_map(|(k, e)| {
                        if let Entry::Done { at, .. } = e {
                            Some((k.clone(), *at))
                        } else {
                            None
                        }
                    })
                    .min_by_key(|(_, at)| *at)
                    .map(|(k, _)| k);
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
        }
        let k = (principal.to_string(), key.to_string());
        match map.get(&k) {
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
        let (tx, rx) = watch::channel(None);
        map.insert(
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
        let t = Idempotency::default();
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
}
