//! One chat session's state machine: idle or busy, what waits behind a
//! running turn, its generation, and when it went idle. Pure: the router
//! holds one per chat and acts on what the transitions answer.
//!
//! - A message for an idle session starts a turn; for a busy one it waits
//!   (and with `busy_policy: interrupt` the running turn is interrupted).
//! - When a turn ends, what waited goes next: one message at a time with
//!   `queue`; with `interrupt`, everything that piled up at once, merged
//!   into one input.
//! - A reset (`/new`, or idle expiry) bumps the generation: a turn of an
//!   older generation is delivered but never stored.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BusyPolicy;

/// What to do with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// The session was idle: start a turn with it (the session is busy now).
    Start(T),
    /// A turn runs; the message waits. `interrupt`: stop the running turn.
    Wait { interrupt: bool },
}

/// One session.
#[derive(Debug)]
pub struct Session<T> {
    generation: u64,
    busy: bool,
    queue: VecDeque<T>,
    last_active: Instant,
}

impl<T> Session<T> {
    /// A new, idle session.
    pub fn new(now: Instant) -> Self {
        Self {
            generation: 0,
            busy: false,
            queue: VecDeque::new(),
            last_active: now,
        }
    }

    /// A message arrived.
    pub fn admit(&mut self, item: T, policy: BusyPolicy) -> Admit<T> {
        if self.busy {
            self.queue.push_back(item);
            return Admit::Wait {
                interrupt: policy == BusyPolicy::Interrupt,
            };
        }
        self.busy = true;
        Admit::Start(item)
    }

    /// The turn could not start (its history did not load): idle again.
    pub fn abandon(&mut self) {
        self.busy = false;
    }

    /// The running turn ended at `now`. Answers what goes next (the session
    /// stays busy with it); when `policy` interrupts, what piled up is merged
    /// by `merge(earlier, last)`.
    pub fn finished(
        &mut self,
        now: Instant,
        policy: BusyPolicy,
        merge: impl FnOnce(Vec<T>, T) -> T,
    ) -> Option<T> {
        self.last_active = now;
        let next = match policy {
            BusyPolicy::Queue => self.queue.pop_front(),
            BusyPolicy::Interrupt => self.queue.pop_back().map(|last| {
                let earlier: Vec<T> = self.queue.drain(..).collect();
                if earlier.is_empty() {
                    last
                } else {
                    merge(earlier, last)
                }
            }),
        };
        self.busy = next.is_some();
        next
    }

    /// `/new`: a new conversation. Answers whether a turn was running (the
    /// caller interrupts it); what waited is dropped.
    pub fn reset(&mut self, now: Instant) -> bool {
        self.generation += 1;
        self.queue.clear();
        self.last_active = now;
        self.busy
    }

    /// `/stop`: what waited is dropped; answers whether a turn runs.
    pub fn stop(&mut self) -> bool {
        self.queue.clear();
        self.busy
    }

    /// The current generation (a turn records the one it started in).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a turn is starting or running.
    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// How long the session has been idle, when that reaches `limit` (it
    /// should start fresh); `None` without a limit or before it.
    pub fn stale_for(&self, now: Instant, limit: Option<Duration>) -> Option<Duration> {
        let idle = now.saturating_duration_since(self.last_active);
        limit.filter(|l| idle >= *l).map(|_| idle)
    }

    /// Idle and quiet for `after`: the session may leave memory.
    pub fn evictable(&self, now: Instant, after: Duration) -> bool {
        !self.busy && now.saturating_duration_since(self.last_active) >= after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(mut earlier: Vec<&'static str>, last: &'static str) -> &'static str {
        earlier.push(last);
        Box::leak(earlier.join("+").into_boxed_str())
    }

    #[test]
    fn interrupt_merges_what_piled_up() {
        let now = Instant::now();
        let mut s = Session::new(now);
        assert_eq!(s.admit("a", BusyPolicy::Interrupt), Admit::Start("a"));
        assert_eq!(
            s.admit("b", BusyPolicy::Interrupt),
            Admit::Wait { interrupt: true }
        );
        let _ = s.admit("c", BusyPolicy::Interrupt);
        assert_eq!(s.finished(now, BusyPolicy::Interrupt, join), Some("b+c"));
        assert!(s.is_busy(), "busy with the merged input");
        assert_eq!(s.finished(now, BusyPolicy::Interrupt, join), None);
        assert!(!s.is_busy());
    }

    #[test]
    fn queue_takes_one_at_a_time_without_interrupting() {
        let now = Instant::now();
        let mut s = Session::new(now);
        let _ = s.admit("a", BusyPolicy::Queue);
        assert_eq!(
            s.admit("b", BusyPolicy::Queue),
            Admit::Wait { interrupt: false }
        );
        let _ = s.admit("c", BusyPolicy::Queue);
        assert_eq!(s.finished(now, BusyPolicy::Queue, join), Some("b"));
        assert_eq!(s.finished(now, BusyPolicy::Queue, join), Some("c"));
        assert_eq!(s.finished(now, BusyPolicy::Queue, join), None);
    }

    #[test]
    fn reset_bumps_the_generation_and_drops_the_queue() {
        let now = Instant::now();
        let mut s = Session::new(now);
        let _ = s.admit("a", BusyPolicy::Queue);
        let _ = s.admit("b", BusyPolicy::Queue);
        let g = s.generation();
        assert!(s.reset(now), "a turn was running");
        assert_eq!(s.generation(), g + 1);
        assert_eq!(
            s.finished(now, BusyPolicy::Queue, join),
            None,
            "b was dropped"
        );
        assert!(!s.stop());
    }

    #[test]
    fn staleness_and_eviction() {
        let t0 = Instant::now();
        let mut s: Session<&str> = Session::new(t0);
        let hour = Duration::from_secs(3600);
        assert_eq!(s.stale_for(t0 + hour, None), None);
        assert_eq!(s.stale_for(t0 + hour / 2, Some(hour)), None);
        assert_eq!(s.stale_for(t0 + hour * 2, Some(hour)), Some(hour * 2));
        assert!(s.evictable(t0 + hour, hour));
        let _ = s.admit("x", BusyPolicy::Queue);
        assert!(!s.evictable(t0 + hour * 5, hour), "never while busy");
    }
}
