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
    /// When it was last stored or read (clock seconds).
    used_at: i64,
    bytes: usize,
}

/// Least-recently-used pages by token and URL, bounded in entries and bytes, and rid of pages
/// nothing asks for any more ([`EtagCache::remove_pages`], [`EtagCache::expire`]): the bounds
/// alone let the pages of every finished run pile up for hours.
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

    pub(super) fn get(&mut self, key: &CacheKey, now: i64) -> Option<CachedPage> {
        self.tick += 1;
        let slot = self.slots.get_mut(key)?;
        self.recency.remove(&slot.used);
        slot.used = self.tick;
        slot.used_at = now;
        self.recency.insert(self.tick, key.clone());
        Some(slot.page.clone())
    }

    pub(super) fn insert(&mut self, key: CacheKey, etag: String, body: Bytes, next: Option<Url>, now: i64) {
        self.remove(&key);
        // The key is held twice (map and recency order); the rest is the page.
        let bytes = 2 * key.url.len() + etag.len() + body.len() + next.as_ref().map_or(0, |u| u.as_str().len()) + 128;
        if bytes > self.max_bytes || self.max_entries == 0 {
            return;
        }
        self.tick += 1;
        self.recency.insert(self.tick, key.clone());
        self.slots
            .insert(key, CacheSlot { page: CachedPage { etag, body, next }, used: self.tick, used_at: now, bytes });
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

    /// Removes the page at `key` and the pages its `next` links lead to (the rest of a list).
    pub(super) fn remove_pages(&mut self, key: &CacheKey) {
        let mut next = Some(key.clone());
        let mut left = self.slots.len();
        while let Some(key) = next.take() {
            next = self
                .slots
                .get(&key)
                .and_then(|slot| slot.page.next.as_ref())
                .map(|url| CacheKey { token: key.token, url: url.as_str().to_string() });
            self.remove(&key);
            // A `next` link that loops back ends here: every page was removed once.
            left = left.saturating_sub(1);
            if left == 0 {
                break;
            }
        }
    }

    /// Drops the pages not stored or read since `before` (clock seconds); returns how many.
    pub(super) fn expire(&mut self, before: i64) -> usize {
        let mut expired = 0;
        // Least recently used first: the first page used since `before` ends the sweep.
        while let Some((_, key)) = self.recency.first_key_value() {
            if self.slots.get(key).is_some_and(|slot| slot.used_at >= before) {
                break;
            }
            let key = key.clone();
            self.remove(&key);
            expired += 1;
        }
        expired
    }

    pub(super) fn len(&self) -> usize {
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
        cache.insert(key("a"), "\"1\"".into(), Bytes::from_static(b"A"), None, 0);
        cache.insert(key("b"), "\"2\"".into(), Bytes::from_static(b"B"), None, 0);
        assert!(cache.get(&key("a"), 0).is_some());
        cache.insert(key("c"), "\"3\"".into(), Bytes::from_static(b"C"), None, 0);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("b"), 0).is_none());
        assert_eq!(cache.get(&key("a"), 0).unwrap().body, Bytes::from_static(b"A"));
        assert_eq!(cache.get(&key("c"), 0).unwrap().etag, "\"3\"");
    }

    #[test]
    fn the_cache_keeps_within_its_byte_budget() {
        let mut cache = EtagCache::new(100, 1000);
        for i in 0..10 {
            cache.insert(key(&i.to_string()), "e".into(), Bytes::from(vec![b'x'; 300]), None, 0);
        }
        assert!(cache.bytes <= 1000);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("9"), 0).is_some());
        // A page larger than the whole budget is not kept, and does not flush the others.
        cache.insert(key("huge"), "e".into(), Bytes::from(vec![b'x'; 2000]), None, 0);
        assert!(cache.get(&key("huge"), 0).is_none());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn replacing_a_page_keeps_the_accounting_straight() {
        let mut cache = EtagCache::new(10, usize::MAX);
        cache.insert(key("a"), "\"1\"".into(), Bytes::from_static(b"old"), None, 0);
        cache.insert(key("a"), "\"2\"".into(), Bytes::from_static(b"new"), None, 0);
        assert_eq!((cache.len(), cache.recency.len()), (1, 1));
        cache.remove(&key("a"));
        assert_eq!((cache.len(), cache.recency.len(), cache.bytes), (0, 0, 0));
    }

    #[test]
    fn pages_unused_since_the_cutoff_expire_and_pages_used_since_stay() {
        let mut cache = EtagCache::new(10, usize::MAX);
        cache.insert(key("old"), "e".into(), Bytes::from_static(b"1"), None, 100);
        cache.insert(key("read"), "e".into(), Bytes::from_static(b"2"), None, 100);
        cache.insert(key("new"), "e".into(), Bytes::from_static(b"3"), None, 200);
        assert!(cache.get(&key("read"), 250).is_some());
        assert_eq!(cache.expire(150), 1);
        assert!(cache.get(&key("old"), 300).is_none());
        assert_eq!((cache.len(), cache.recency.len()), (2, 2));
        assert_eq!(cache.expire(400), 2);
        assert_eq!((cache.len(), cache.recency.len(), cache.bytes), (0, 0, 0));
    }

    #[test]
    fn removing_a_list_removes_the_pages_its_links_lead_to() {
        let mut cache = EtagCache::new(10, usize::MAX);
        let page = |n: u32| Url::parse(&format!("http://gh/list?page={n}")).unwrap();
        cache.insert(key(page(1).as_str()), "e".into(), Bytes::from_static(b"1"), Some(page(2)), 0);
        cache.insert(key(page(2).as_str()), "e".into(), Bytes::from_static(b"2"), Some(page(1)), 0);
        cache.insert(key("other"), "e".into(), Bytes::from_static(b"3"), None, 0);
        cache.remove_pages(&key(page(1).as_str()));
        assert_eq!(cache.len(), 1, "both pages of the list, looping links and all");
        assert!(cache.get(&key("other"), 0).is_some());
    }
}
