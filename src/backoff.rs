//! Exponential back-off with jitter: the one implementation every retry
//! loop uses (the upstream client, platform connections, the courier).

use std::time::Duration;

/// Waits that double from `first` up to `max`, each with ±25 % jitter so
/// many clients that failed together do not come back together.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A back-off starting at `first`, never waiting longer than `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The next wait (and doubles the one after).
    pub fn next_wait(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        jitter(d).min(self.max)
    }

    /// Starts again from the first wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// `d` scaled by a random factor in [0.75, 1.25].
pub fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
    } else {
        0.5
    };
    d.mul_f64(0.75 + r * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(8));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(750) && waits[0] <= Duration::from_millis(1250));
        assert!(waits[1] >= Duration::from_millis(1500));
        assert!(waits.iter().all(|w| *w <= s(8)));
        assert!(waits[5] >= s(6), "capped, still near the cap: {waits:?}");
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(1250));
    }
}
