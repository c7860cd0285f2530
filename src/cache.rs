//! A least-recently-used cache bounded by bytes as well as by entries.
//!
//! Every in-memory cache of the gateway holds what clients sent (images,
//! tool arguments, tool results), so counting entries is not enough: 256
//! conversations of 8 MB each are 2 GB. [`ByteLru`] keeps the sum of its
//! entries' sizes (as the caller measures them) within a budget, dropping the
//! least recently used first; an entry larger than the whole budget is not
//! kept at all. Pure logic, no locking: owners wrap it as they need.

use std::hash::Hash;

use lru::LruCache;

/// An LRU map with a byte budget and an entry cap.
pub struct ByteLru<K: Hash + Eq, V> {
    map: LruCache<K, (V, usize)>,
    bytes: usize,
    budget: usize,
    max_entries: usize,
}

impl<K: Hash + Eq, V> ByteLru<K, V> {
    /// A cache holding at most `budget` bytes in at most `max_entries` entries.
    pub fn new(budget: usize, max_entries: usize) -> Self {
        Self {
            map: LruCache::unbounded(),
            bytes: 0,
            budget,
            max_entries: max_entries.max(1),
        }
    }

    /// Inserts (or replaces) `key`, evicting the least recently used entries
    /// until both limits hold. Returns false, keeping nothing for `key`, when
    /// the entry alone is larger than the budget.
    pub fn put(&mut self, key: K, value: V, size: usize) -> bool {
        self.pop(&key);
        if size > self.budget {
            return false;
        }
        while !self.map.is_empty()
            && (self.bytes + size > self.budget || self.map.len() >= self.max_entries)
        {
            if let Some((_, (_, s))) = self.map.pop_lru() {
                self.bytes -= s;
            }
        }
        self.bytes += size;
        self.map.put(key, (value, size));
        true
    }

    /// The value of `key`, marked as recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    /// The value of `key`, leaving the order alone.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.map.peek(key).map(|(v, _)| v)
    }

    /// Removes `key` and returns its value.
    pub fn pop(&mut self, key: &K) -> Option<V> {
        let (v, s) = self.map.pop(key)?;
        self.bytes -= s;
        Some(v)
    }

    /// Removes every entry `keep` says no to.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool)
    where
        K: Clone,
    {
        // Collected first: the map cannot change while it is iterated.
        let gone: Vec<K> = self
            .map
            .iter()
            .filter(|(k, (v, _))| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.pop(&k);
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_bounded_and_the_oldest_go_first() {
        let mut c = ByteLru::new(100, 1000);
        assert!(c.put("a", 1, 40));
        assert!(c.put("b", 2, 40));
        assert_eq!(c.get(&"a"), Some(&1), "a is now the most recent");
        assert!(c.put("c", 3, 40));
        assert_eq!(c.peek(&"b"), None, "b was least recently used");
        assert_eq!((c.bytes(), c.len()), (80, 2));
        assert!(!c.put("huge", 9, 101), "larger than the budget: not kept");
        assert_eq!(c.bytes(), 80, "and nothing else was evicted for it");
        assert!(c.put("a", 4, 10), "replacing counts the new size only");
        assert_eq!(c.bytes(), 50);
        assert_eq!(c.pop(&"a"), Some(4));
        assert_eq!(c.bytes(), 40);
        c.retain(|_, v| *v != 3);
        assert_eq!((c.bytes(), c.len()), (0, 0));
    }

    #[test]
    fn entries_are_bounded_too() {
        let mut c = ByteLru::new(1 << 20, 2);
        for k in 0..5 {
            c.put(k, k, 1);
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.peek(&4), Some(&4));
        assert_eq!(c.peek(&2), None);
    }
}
