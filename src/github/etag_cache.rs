//! The pages kept for conditional requests: a 304 for one of them costs no rate-limit credit.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use reqwest::Url;

/// How many pages the conditional-request cache keeps, least recently used evicted first.
/// One entry is one page for one token; the reconciler touches a few per repository.
pub const CACHE_MAX_ENTRIES: usize = 50_000;
/// The cache's byte budget. Pages are kept re-serialized from our slim models (a job is a few
/// hundred bytes, not GitHub's several kilobytes), so this is rarely the binding limit.
pub const CACHE_MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CacheKey {
    /// The token's SHA-256: pages are per authorization (see the client's documentation).
    pub(super) token: [u8; 32],
    pub(super) url: String,
}

#[derive(Debug, Clone)]
pub(super) struct CachedPage {
    pub(super) etag: String,
    pub(super) body: Bytes,
    pub(super) next: Option<Url>,
}

struct CacheSlot {
    page: CachedPage,
    used: u64,
    bytes: usize,
}

/// Least-recently-used pages by token and URL, bounded in entries and bytes.
pub(super) struct EtagCache {
    slots: HashMap<CacheKey, CacheSlot>,
    recency: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl EtagCache {
    pub(super) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self { slots: HashMap::new(), recency: BTreeMap::new(), tick: 0, bytes: 0, max_entries, max_bytes }
    }

    pub(super) fn get(&mut self, key: &CacheKey) -> Option<CachedPage> {
        self.tick += 1;
        let slot = self.slots.get_mut(key)?;
        self.recency.remove(&slot.used);
        slot.used = self.tick;
        self.recency.insert(self.tick, key.clone());
        Some(slot.page.clone())
    }

    pub(super) fn insert(&mut self, key: CacheKey, etag: String, body: Bytes, next: Option<Url>) {
        self.remove(&key);
        // The key is held twice (map and recency order); the rest is the page.
        let bytes = 2 * key.url.len() + etag.len() + body.len() + next.as_ref().map_or(0, |u| u.as_str().len()) + 128;
        if bytes > self.max_bytes || self.max_entries == 0 {
            return;
        }
        self.tick += 1;
        self.recency.insert(self.tick, key.clone());
        self.slots.insert(key, CacheSlot { page: CachedPage { etag, body, next }, used: self.tick, bytes });
        self.bytes += bytes;
        while self.slots.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.recency.pop_first() else { break };
            if let Some(slot) = self.slots.remove(&oldest) {
                self.bytes -= slot.bytes;
            }
        }
    }

    pub(super) fn remove(&mut self, key: &CacheKey) {
        if let Some(slot) = self.slots.remove(key) {
            self.recency.remove(&slot.used);
            self.bytes -= slot.bytes;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> CacheKey {
        CacheKey { token: [1; 32], url: url.to_string() }
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used_page() {
        let mut cache = EtagCache::new(2, usize::MAX);
        cache.insert(key("a"), "\"1\"".into(), Bytes::from_static(b"A"), None);
        cache.insert(key("b"), "\"2\"".into(), Bytes::from_static(b"B"), None);
        assert!(cache.get(&key("a")).is_some());
        cache.insert(key("c"), "\"3\"".into(), Bytes::from_static(b"C"), None);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("b")).is_none());
        assert_eq!(cache.get(&key("a")).unwrap().body, Bytes::from_static(b"A"));
        assert_eq!(cache.get(&key("c")).unwrap().etag, "\"3\"");
    }

    #[test]
    fn the_cache_keeps_within_its_byte_budget() {
        let mut cache = EtagCache::new(100, 1000);
        for i in 0..10 {
            cache.insert(key(&i.to_string()), "e".into(), Bytes::from(vec![b'x'; 300]), None);
        }
        assert!(cache.bytes <= 1000);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("9")).is_some());
        // A page larger than the whole budget is not kept, and does not flush the others.
        cache.insert(key("huge"), "e".into(), Bytes::from(vec![b'x'; 2000]), None);
        assert!(cache.get(&key("huge")).is_none());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn replacing_a_page_keeps_the_accounting_straight() {
        let mut cache = EtagCache::new(10, usize::MAX);
        cache.insert(key("a"), "\"1\"".into(), Bytes::from_static(b"old"), None);
        cache.insert(key("a"), "\"2\"".into(), Bytes::from_static(b"new"), None);
        assert_eq!((cache.len(), cache.recency.len()), (1, 1));
        cache.remove(&key("a"));
        assert_eq!((cache.len(), cache.recency.len(), cache.bytes), (0, 0, 0));
    }
}
