//! The arbiter pool: a few worker threads (arbiters) that actors are spread
//! over, so sessions run in parallel instead of all on the main thread.
//!
//! Actors are placed round-robin. Each arbiter thread has its own upstream
//! HTTP client (awc is single-threaded), built on first use and reused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;

/// The most arbiters started, whatever the core count.
const MAX_ARBITERS: usize = 8;

/// A fixed set of arbiters; cheap to clone.
#[derive(Clone)]
pub struct ArbiterPool {
    arbiters: Arc<Vec<ArbiterHandle>>,
    next: Arc<AtomicUsize>,
}

impl ArbiterPool {
    /// Starts `n` arbiters (at least one; by default one per core, capped).
    /// Must be called from inside a running actix system.
    pub fn new(n: Option<usize>) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let n = n.unwrap_or(cores).clamp(1, MAX_ARBITERS);
        let arbiters = (0..n).map(|_| Arbiter::new().handle()).collect();
        Self {
            arbiters: Arc::new(arbiters),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The arbiter the next actor should start on.
    pub fn pick(&self) -> ArbiterHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        self.arbiters[i].clone()
    }

    /// Stops every arbiter (at shutdown).
    pub fn stop(&self) {
        for a in self.arbiters.iter() {
            a.stop();
        }
    }
}
