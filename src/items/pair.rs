//! What a replicated pair needs of the cache (see `crate::repl`): CAS
//! values that never tie between the two nodes, a CAS counter that keeps
//! ahead of the peer's, the CAS of a key for the conflict rule, and a wipe
//! before a full copy.

use super::Cache;

impl Cache {
    /// Removes every item at once (a replica about to receive a full copy
    /// starts from nothing), and forgets any pending `flush_all`.
    pub(crate) fn wipe(&mut self) {
        for page in 0..self.slabs.page_count() {
            let id = self.slabs.page_owner(page);
            if id == 0 {
                continue;
            }
            for chunk in self.slabs.page_chunks(page, id) {
                if let Some(it) = self.item_at(chunk) {
                    self.unlink(it);
                }
            }
        }
        self.oldest_live = 0;
        self.oldest_cas = 0;
        self.flush_at = None;
    }

    /// Under replication the master hands out odd CAS values and the
    /// replica even ones, so two writes made at once on the two nodes can
    /// never carry the same CAS (which the conflict rule compares).
    pub(crate) fn set_cas_lane(&mut self, odd: bool) {
        self.cas_lane = Some(u64::from(odd));
    }

    /// The CAS of the live item under `key`, without touching it.
    pub(crate) fn cas_of(&self, key: &[u8]) -> Option<u64> {
        self.peek(key).map(|it| self.view(it).cas())
    }

    /// The CAS counter: the highest CAS handed out or taken from the peer.
    /// A delete is stamped with it (replication's tombstones), so it sorts
    /// after every write this node knew of when it deleted.
    pub(crate) fn cas_counter(&self) -> u64 {
        self.cas_id
    }

    /// Keeps the CAS counter ahead of a CAS value taken from the peer, so
    /// values this node hands out later never repeat one it has stored
    /// (`put_given` does this for every item it stores; replication for a
    /// peer's tombstone).
    pub(crate) fn observe_cas(&mut self, cas: u64) {
        self.cas_id = self.cas_id.max(cas);
    }
}

#[cfg(test)]
mod tests {
    use crate::items::{Cache, CacheConfig, StoreMode};

    fn cache() -> Cache {
        Cache::new(CacheConfig::for_tests(16)).unwrap()
    }

    fn set(c: &mut Cache, key: &str, value: &[u8], exptime: u32) {
        let it = c.alloc(key.as_bytes(), 3, exptime, value.len()).unwrap();
        c.value_window_mut(it, 0).copy_from_slice(value);
        c.store(it, StoreMode::Set, 0);
    }

    #[test]
    fn wipe_empties_the_cache_and_cas_lanes_keep_parity() {
        let mut c = cache();
        c.set_cas_lane(true);
        for i in 0..50 {
            set(&mut c, &format!("k{i}"), b"v", 0);
            assert_eq!(c.cas_of(format!("k{i}").as_bytes()).unwrap() % 2, 1);
        }
        c.observe_cas(1000);
        c.set_cas_lane(false);
        set(&mut c, "even", b"v", 0);
        assert_eq!(c.cas_of(b"even"), Some(1002));
        c.wipe();
        assert_eq!(c.stats.curr_items, 0);
        assert_eq!(c.cas_of(b"k1"), None);
        set(&mut c, "after", b"v", 0);
        assert!(c.cas_of(b"after").is_some());
    }

    #[test]
    fn an_immediate_flush_under_replication_removes_items_at_once() {
        let mut c = cache();
        c.set_cas_lane(true);
        set(&mut c, "a", b"v", 0);
        c.flush_all(0);
        assert_eq!(c.stats.curr_items, 0);
        // An item with a low CAS from the peer is not taken for flushed.
        c.observe_cas(1);
        set(&mut c, "b", b"v", 0);
        assert!(c.cas_of(b"b").is_some());
    }
}
