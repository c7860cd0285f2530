//! Who may talk to the bot, and the de-duplication of inbound messages.
//!
//! Default deny: a sender is let in only when listed in the platform's
//! `*_ALLOWED_USERS` or `GATEWAY_ALLOWED_USERS`, or when `*_ALLOW_ALL_USERS` /
//! `GATEWAY_ALLOW_ALL_USERS` is true. A denied direct message gets at most
//! one "this bot is private" reply per user per hour ([`DenyNotices`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

/// At most one "this bot is private" reply per user in this long.
pub const PRIVATE_REPLY_EVERY: Duration = Duration::from_secs(3600);
/// Inbound message ids remembered per platform for de-duplication.
pub const DEDUP_CAPACITY: usize = 4096;

/// One platform's allowlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allowlist {
    users: HashSet<String>,
    all: bool,
    /// The variable an operator sets to let someone in (for the reply).
    variable: String,
}

impl Allowlist {
    /// The allowlist of `platform` (`telegram`, ...) from configuration.
    pub fn from_config(c: &Config, platform: &str) -> Self {
        let p = c.platform(platform);
        let users = p
            .map_or(&[][..], |p| p.allowed_users)
            .iter()
            .chain(&c.gateway.allowed_users)
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        Self {
            users,
            all: p.is_some_and(|p| p.allow_all_users) || c.gateway.allow_all_users,
            variable: format!("{}_ALLOWED_USERS", platform.to_ascii_uppercase()),
        }
    }

    /// Whether `user` may talk to the bot.
    pub fn allows(&self, user: &str) -> bool {
        self.all || self.users.contains(user)
    }

    /// The reply a denied direct message gets.
    pub fn private_reply(&self, user: &str) -> String {
        format!(
            "This bot is private. Ask its operator to add your user id {user} to {}.",
            self.variable
        )
    }
}

/// When each denied user last got the private-bot reply.
#[derive(Debug, Default)]
pub struct DenyNotices {
    last: HashMap<String, Instant>,
}

impl DenyNotices {
    /// Whether `user` should get the reply now (and records it if so).
    pub fn should_reply(&mut self, user: &str, now: Instant) -> bool {
        if self.last.len() > DEDUP_CAPACITY {
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < PRIVATE_REPLY_EVERY);
        }
        match self.last.get(user) {
            Some(t) if now.saturating_duration_since(*t) < PRIVATE_REPLY_EVERY => false,
            _ => {
                self.last.insert(user.to_string(), now);
                true
            }
        }
    }
}

/// Recently seen inbound message ids, bounded, oldest forgotten first.
#[derive(Debug, Default)]
pub struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Dedup {
    /// True the first time `id` is seen; false for a repeat.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= DEDUP_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_deny_and_both_lists() {
        let mut c = Config::defaults();
        c.telegram.allowed_users = vec!["1".into()];
        c.gateway.allowed_users = vec!["2".into()];
        let a = Allowlist::from_config(&c, "telegram");
        assert!(a.allows("1") && a.allows("2") && !a.allows("3"));
        assert!(!Allowlist::from_config(&c, "discord").allows("1"));
        c.gateway.allow_all_users = true;
        assert!(Allowlist::from_config(&c, "telegram").allows("3"));
        assert_eq!(
            a.private_reply("42"),
            "This bot is private. Ask its operator to add your user id 42 to TELEGRAM_ALLOWED_USERS."
        );
    }

    #[test]
    fn one_private_reply_per_hour() {
        let now = Instant::now();
        let mut d = DenyNotices::default();
        assert!(d.should_reply("u", now));
        assert!(!d.should_reply("u", now + Duration::from_secs(3599)));
        assert!(d.should_reply("v", now));
        assert!(d.should_reply("u", now + Duration::from_secs(3600)));
    }

    #[test]
    fn dedup_is_bounded() {
        let mut d = Dedup::default();
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        for i in 0..DEDUP_CAPACITY {
            d.first_time(&i.to_string());
        }
        assert!(d.first_time("a"), "the oldest id is forgotten");
        assert!(d.seen.len() <= DEDUP_CAPACITY);
    }
}
