//! A small per-instance cache of something loaded per merchant from Postgres (templates, segment names), so that
//! rendering a nudge does not cost a query each time.
//!
//! An entry is trusted for a fixed time ([`STALE_AFTER`]): a change saved through this instance removes the entry at
//! once, and a change saved through another instance is seen here at the latest that long after. The cache holds at
//! most [`CAPACITY`] merchants; when it is full, expired entries go first, then an arbitrary one, since any
//! merchant can be loaded again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use streams::MerchantId;

/// How long an entry is used before it is loaded again: the most a change saved on another instance waits to be
/// seen here.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The most merchants kept.
pub const CAPACITY: usize = 10_000;

pub struct MerchantCache<V> {
    entries: DashMap<MerchantId, (Instant, Arc<V>)>,
    stale_after: Duration,
    capacity: usize,
}

impl<V> Default for MerchantCache<V> {
    fn default() -> Self {
        MerchantCache::new(STALE_AFTER, CAPACITY)
    }
}

impl<V> MerchantCache<V> {
    pub fn new(stale_after: Duration, capacity: usize) -> Self {
        MerchantCache {
            entries: DashMap::new(),
            stale_after,
            capacity: capacity.max(1),
        }
    }

    /// The entry of `merchant` if it is still fresh at `now`.
    pub fn fresh(&self, merchant: &MerchantId, now: Instant) -> Option<Arc<V>> {
        let entry = self.entries.get(merchant)?;
        let (loaded, value) = entry.value();
        (now.saturating_duration_since(*loaded) < self.stale_after).then(|| value.clone())
    }

    /// Keeps `value` for `merchant`, loaded at `loaded` (taken before the load began, so an entry never looks
    /// fresher than the data in it).
    pub fn insert(&self, merchant: MerchantId, loaded: Instant, value: Arc<V>) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&merchant) {
            self.make_room(loaded);
        }
        self.entries.insert(merchant, (loaded, value));
    }

    /// Forgets `merchant`: its next read loads again.
    pub fn remove(&self, merchant: &MerchantId) {
        self.entries.remove(merchant);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&self, now: Instant) {
        let stale_after = self.stale_after;
        self.entries
            .retain(|_, (loaded, _)| now.saturating_duration_since(*loaded) < stale_after);
        if self.entries.len() >= self.capacity {
            let victim = self.entries.iter().next().map(|e| e.key().clone());
            if let Some(victim) = victim {
                self.entries.remove(&victim);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(n: u32) -> MerchantId {
        MerchantId::parse(&format!("shop-{n}.myshopify.com")).unwrap()
    }

    #[test]
    fn entries_expire_and_can_be_removed() {
        let cache = MerchantCache::new(Duration::from_secs(30), 10);
        let t0 = Instant::now();
        cache.insert(shop(1), t0, Arc::new("a"));
        assert_eq!(
            cache
                .fresh(&shop(1), t0 + Duration::from_secs(29))
                .as_deref(),
            Some(&"a")
        );
        assert_eq!(cache.fresh(&shop(1), t0 + Duration::from_secs(30)), None);
        assert_eq!(cache.fresh(&shop(2), t0), None);
        cache.remove(&shop(1));
        assert_eq!(cache.fresh(&shop(1), t0), None);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = MerchantCache::new(Duration::from_secs(30), 3);
        let t0 = Instant::now();
        cache.insert(shop(1), t0, Arc::new(1));
        for n in 2..=3 {
            cache.insert(shop(n), t0 + Duration::from_secs(40), Arc::new(n));
        }
        cache.insert(shop(4), t0 + Duration::from_secs(40), Arc::new(4));
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.fresh(&shop(1), t0),
            None,
            "the expired entry went first"
        );
        for n in 5..50 {
            cache.insert(shop(n), t0 + Duration::from_secs(40), Arc::new(n));
            assert!(cache.len() <= 3);
            assert!(cache
                .fresh(&shop(n), t0 + Duration::from_secs(40))
                .is_some());
        }
    }
}
