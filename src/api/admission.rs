//! Admission control: at most `API_SERVER_MAX_CONCURRENT_RUNS` agent runs at
//! once over every route that starts one. A [`Permit`] is held for the whole
//! run (for streams, until the stream ends) and released on drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts running agent runs against a limit (0 = unlimited).
#[derive(Clone, Debug)]
pub struct Admission {
    running: Arc<AtomicUsize>,
    limit: Arc<AtomicUsize>,
}

/// One admitted run; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    running: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// A counter with this limit.
    pub fn new(limit: usize) -> Self {
        Self {
            running: Arc::new(AtomicUsize::new(0)),
            limit: Arc::new(AtomicUsize::new(limit)),
        }
    }

    /// Changes the limit (configuration reload); running runs are not affected.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Admits a run, or returns `None` at the limit.
    pub fn try_admit(&self) -> Option<Permit> {
        let limit = self.limit();
        let mut cur = self.running.load(Ordering::Acquire);
        loop {
            if limit != 0 && cur >= limit {
                return None;
            }
            match self.running.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Permit {
                        running: self.running.clone(),
                    });
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Runs in flight.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_releases() {
        let a = Admission::new(2);
        let p1 = a.try_admit();
        let p2 = a.try_admit();
        assert!(p1.is_some() && p2.is_some());
        assert!(a.try_admit().is_none());
        drop(p1);
        assert!(a.try_admit().is_some());
        let unlimited = Admission::new(0);
        let held: Vec<_> = (0..100).filter_map(|_| unlimited.try_admit()).collect();
        assert_eq!(held.len(), 100);
        assert_eq!(unlimited.running(), 100);
    }
}
