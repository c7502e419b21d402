//! Memory of client assertion ids: an assertion is accepted once; its `jti` is remembered until
//! the assertion has expired (plus leeway), so it cannot be replayed while it could still be
//! valid. Bounded: when full, new assertions are refused rather than forgotten early.

use crate::TokenError;
use std::collections::{BTreeSet, HashSet};

/// Default capacity: unexpired assertions remembered at once.
pub const REPLAY_CAPACITY_DEFAULT: usize = 1_000_000;

/// Assertion ids seen, with the time after which each can be forgotten.
#[derive(Debug, Clone)]
pub struct ReplayCache {
    seen: HashSet<(String, String)>,
    by_expiry: BTreeSet<(u64, String, String)>,
    capacity: usize,
}

impl ReplayCache {
    /// An empty memory of at most `capacity` assertions.
    pub fn new(capacity: usize) -> Self {
        Self { seen: HashSet::new(), by_expiry: BTreeSet::new(), capacity }
    }

    /// Number of assertions remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Accepts `(agent, jti)` once until `forget_after_secs`; refuses it again before then.
    pub fn check_and_remember(
        &mut self,
        agent: &str,
        jti: &str,
        forget_after_secs: u64,
        now_secs: u64,
    ) -> Result<(), TokenError> {
        self.forget_expired(now_secs);
        let key = (agent.to_owned(), jti.to_owned());
        if self.seen.contains(&key) {
            return Err(TokenError::Replayed(jti.to_owned()));
        }
        if self.seen.len() >= self.capacity {
            return Err(TokenError::ReplayMemoryFull(self.capacity));
        }
        self.by_expiry.insert((forget_after_secs, key.0.clone(), key.1.clone()));
        self.seen.insert(key);
        Ok(())
    }

    /// Remembers `(agent, jti)` without checking (rebuilding the memory after a restart).
    pub fn remember(&mut self, agent: &str, jti: &str, forget_after_secs: u64) {
        if self.seen.insert((agent.to_owned(), jti.to_owned())) {
            self.by_expiry.insert((forget_after_secs, agent.to_owned(), jti.to_owned()));
        }
    }

    fn forget_expired(&mut self, now_secs: u64) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 >= now_secs {
                break;
            }
            if let Some((_, agent, jti)) = self.by_expiry.pop_first() {
                self.seen.remove(&(agent, jti));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_accepted_once_until_it_expires() {
        let mut cache = ReplayCache::new(10);
        cache.check_and_remember("a", "j1", 100, 50).unwrap();
        assert_eq!(cache.check_and_remember("a", "j1", 100, 60), Err(TokenError::Replayed("j1".into())));
        // Another agent may use the same jti.
        cache.check_and_remember("b", "j1", 100, 60).unwrap();
        // After it can no longer be valid, it is forgotten.
        cache.check_and_remember("a", "j1", 200, 101).unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_memory_refuses_instead_of_forgetting() {
        let mut cache = ReplayCache::new(2);
        cache.check_and_remember("a", "1", 100, 0).unwrap();
        cache.check_and_remember("a", "2", 100, 0).unwrap();
        assert_eq!(cache.check_and_remember("a", "3", 100, 0), Err(TokenError::ReplayMemoryFull(2)));
        cache.check_and_remember("a", "3", 200, 101).unwrap();
    }
}
