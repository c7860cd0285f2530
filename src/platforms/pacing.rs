//! Per-chat send pacing: platforms accept only so many messages per chat
//! (Telegram about one a second in a chat and twenty a minute in a group).
//! [`Pacer::reserve`] hands out the next free slot for a chat, so bursts
//! queue instead of earning a rate limit, and a rate limit the platform
//! answers holds one chat or, when global, every chat. Pure logic over
//! caller-supplied instants; the courier sleeps.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// The spacing rules of one platform.
#[derive(Debug, Clone, Copy)]
pub struct PaceRules {
    /// Minimum gap between two calls in one chat.
    pub per_chat: Duration,
    /// Minimum gap between two calls in one group (averaged rate, e.g. 20/min).
    pub per_group: Duration,
}

/// Chats not written to for this long are forgotten (keeps the map small).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Next free slot per chat.
#[derive(Debug, Default)]
pub struct Pacer {
    next: HashMap<String, Instant>,
    /// Nothing goes to any chat before this (a global rate limit).
    all_until: Option<Instant>,
}

impl Pacer {
    /// Reserves the next slot for `chat` and returns when it starts
    /// (`now` when the chat is idle).
    pub fn reserve(&mut self, chat: &str, group: bool, rules: PaceRules, now: Instant) -> Instant {
        if self.next.len() > 1024 {
            self.next
                .retain(|_, t| now.saturating_duration_since(*t) < FORGET_AFTER);
        }
        let gap = if group {
            rules.per_group
        } else {
            rules.per_chat
        };
        let mut slot = self.next.get(chat).copied().unwrap_or(now).max(now);
        if let Some(all) = self.all_until {
            slot = slot.max(all);
        }
        self.next.insert(chat.to_string(), slot + gap);
        slot
    }

    /// The platform asked us to wait (`retry_after`): nothing goes to this
    /// chat before `until`.
    pub fn hold(&mut self, chat: &str, until: Instant) {
        let e = self.next.entry(chat.to_string()).or_insert(until);
        *e = (*e).max(until);
    }

    /// A global rate limit: nothing goes to any chat before `until`.
    pub fn hold_all(&mut self, until: Instant) {
        self.all_until = Some(self.all_until.map_or(until, |t| t.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: PaceRules = PaceRules {
        per_chat: Duration::from_secs(1),
        per_group: Duration::from_secs(3),
    };

    #[test]
    fn bursts_are_spaced_per_chat() {
        let now = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.reserve("a", false, RULES, now), now);
        assert_eq!(
            p.reserve("a", false, RULES, now),
            now + Duration::from_secs(1)
        );
        assert_eq!(
            p.reserve("b", false, RULES, now),
            now,
            "other chats are independent"
        );
        assert_eq!(p.reserve("g", true, RULES, now), now);
        assert_eq!(
            p.reserve("g", true, RULES, now),
            now + Duration::from_secs(3)
        );
        // Idle long enough: no wait.
        let later = now + Duration::from_secs(10);
        assert_eq!(p.reserve("a", false, RULES, later), later);
    }

    #[test]
    fn hold_pushes_the_next_slot() {
        let now = Instant::now();
        let mut p = Pacer::default();
        p.hold("a", now + Duration::from_secs(5));
        assert_eq!(
            p.reserve("a", false, RULES, now),
            now + Duration::from_secs(5)
        );
        p.hold_all(now + Duration::from_secs(7));
        assert_eq!(
            p.reserve("b", false, RULES, now),
            now + Duration::from_secs(7),
            "a global hold holds every chat"
        );
    }
}
