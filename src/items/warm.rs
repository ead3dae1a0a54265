//! Warm restart (`-e`): what the cache must remember besides the arena, and
//! how it is rebuilt over an arena that kept its bytes.
//!
//! Item headers, values, the chunk lists of large values, the LRU links and
//! the free lists all live in the arena and so survive as they are; chunk
//! references are offsets, so nothing needs fixing for a new address. What
//! is only in this process is saved in a `CacheState`: the allocator's
//! tables, each LRU's ends, which full-size chunks hold parts of large
//! values, the CAS counter and `flush_all`'s marks. On start the hash table
//! is rebuilt by scanning every carved chunk for linked items; chunks a
//! connection was still filling when the server stopped are freed; items
//! that expired (or were flushed) meanwhile are unlinked, never served.
//!
//! Both halves need the cache's private tables (LRU ends, the chunk lists'
//! owners, the CAS counter) and the rebuild scan its hash table and
//! counters, so they stay here, behind two calls (`save_state`, `restore`);
//! the metadata file, its checks and when to save are
//! `crate::persist::warm`'s.

use super::{Cache, item};
use crate::slab::warm::SlabState;
use crate::slab::{ChunkRef, NIL, Slabs};

/// LRU lists per class (its segments), each saved as its own `LruEnds`.
pub(crate) const LRUS_PER_CLASS: usize = super::lru::SEGMENTS.len();

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LruEnds {
    pub(crate) head: ChunkRef,
    pub(crate) tail: ChunkRef,
    pub(crate) len: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheState {
    pub(crate) slabs: SlabState,
    /// Indexed by `lru::index`: four lists per class id.
    pub(crate) lrus: Vec<LruEnds>,
    /// (full-size chunk position, header of the large item it belongs to).
    pub(crate) body_owners: Vec<(usize, ChunkRef)>,
    /// The next CAS value would be this plus one.
    pub(crate) cas_id: u64,
    pub(crate) oldest_live: u32,
    pub(crate) oldest_cas: u64,
    pub(crate) hashpower: u32,
}

/// What a restore found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub(crate) items: u64,
    /// Linked when the server stopped, but expired or flushed since.
    pub(crate) expired: u64,
    /// Allocated but never stored (a value still arriving at the stop).
    pub(crate) orphans: u64,
}

impl Cache {
    /// Everything `restore` needs besides the arena. Takes a CAS value, as
    /// memcached's metadata save does, so the next process never reuses one.
    pub(crate) fn save_state(&mut self) -> CacheState {
        let cas_id = if self.cfg.use_cas { self.next_cas() } else { 0 };
        CacheState {
            slabs: self.slabs.state(),
            lrus: self
                .lrus
                .iter()
                .map(|l| LruEnds {
                    head: l.head,
                    tail: l.tail,
                    len: l.len,
                })
                .collect(),
            body_owners: self
                .body_owner
                .iter()
                .enumerate()
                .filter(|&(_, &o)| o != NIL)
                .map(|(i, &o)| (i, o))
                .collect(),
            cas_id,
            oldest_live: self.oldest_live,
            oldest_cas: self.oldest_cas,
            hashpower: self.hash.power(),
        }
    }

    /// Rebuilds an empty cache over an arena holding the items `state`
    /// describes. The clock must already be resumed, so expiry is judged
    /// against the real time.
    pub(crate) fn restore(&mut self, state: &CacheState) -> Result<Recovered, &'static str> {
        if state.lrus.len() != self.lrus.len() {
            return Err("LRU count differs");
        }
        self.slabs.restore(&state.slabs)?;
        for &(i, owner) in &state.body_owners {
            let chunk = Slabs::chunk_at(i * self.slabs.chunk_max());
            self.set_body_owner(chunk, owner);
        }
        for (lru, saved) in self.lrus.iter_mut().zip(&state.lrus) {
            lru.head = saved.head;
            lru.tail = saved.tail;
            lru.len = saved.len;
            lru.bytes = 0;
        }
        self.cas_id = state.cas_id;
        self.oldest_live = state.oldest_live;
        self.oldest_cas = state.oldest_cas;
        let mut found = Recovered::default();
        let (orphans, dead) = self.relink_all(&mut found);
        for it in orphans {
            self.free_unlinked(it);
        }
        // Unlinked only once every item is back, so LRU neighbours and hash
        // chains are whole while they are edited.
        for &it in &dead {
            self.unlink(it);
        }
        found.expired = dead.len() as u64;
        found.items -= found.expired;
        Ok(found)
    }

    /// Puts every linked item of every carved chunk back in the hash table
    /// and the counters; returns the chunks that hold unlinked items, and
    /// the items that expired (or were flushed) meanwhile.
    fn relink_all(&mut self, found: &mut Recovered) -> (Vec<ChunkRef>, Vec<ChunkRef>) {
        let largest = self.slabs.largest();
        let pages: Vec<(usize, u8)> = self.slabs.owned_pages().collect();
        let mut orphans = Vec::new();
        let mut dead = Vec::new();
        for (page, id) in pages {
            for chunk in self.slabs.carved_chunks(page, id) {
                // A chunk that holds part of a large value holds raw bytes
                // where a header's flags would be.
                if id == largest && self.body_owner(chunk).is_some() {
                    continue;
                }
                let flags = self.view(chunk).iflags();
                if flags & item::LINKED != 0 {
                    self.relink(chunk);
                    found.items += 1;
                    if self.is_expired(chunk) || self.is_flushed(chunk) {
                        dead.push(chunk);
                    }
                } else if flags & item::ALLOCATED != 0 {
                    orphans.push(chunk);
                    found.orphans += 1;
                }
            }
        }
        (orphans, dead)
    }

    /// `link` for an item already in its LRU: hash it and count it.
    fn relink(&mut self, it: ChunkRef) {
        item::view_mut(&mut self.slabs.arena, it).clear_flag(item::PINNED);
        let hv = self.hv(self.view(it).key());
        self.hash.insert(&mut self.slabs.arena, it, hv);
        let size = self.memcached_size(it) as u64;
        let lru_id = self.view(it).lru();
        self.lrus[super::lru::index(lru_id)].bytes += size;
        let id = (lru_id & super::lru::CLASS_MASK) as usize;
        self.stats.curr_items += 1;
        self.stats.total_items += 1;
        self.stats.bytes += size;
        self.stats.classes[id].mem_requested += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{CacheConfig, StoreMode, StoreResult};

    fn cache() -> Cache {
        Cache::new(CacheConfig {
            item_size_max: 4 << 20,
            ..CacheConfig::for_tests(8)
        })
        .unwrap()
    }

    fn set(c: &mut Cache, key: &[u8], flags: u32, exptime: u32, val: &[u8]) {
        let it = c.alloc(key, flags, exptime, val.len()).unwrap();
        let mut at = 0;
        while at < val.len() {
            let w = c.value_window_mut(it, at);
            let n = w.len();
            w.copy_from_slice(&val[at..at + n]);
            at += n;
        }
        assert_eq!(c.store(it, StoreMode::Set, 0), StoreResult::Stored);
    }

    /// (flags, cas, value) of a live item.
    fn read(c: &mut Cache, key: &[u8]) -> Option<(u32, u64, Vec<u8>)> {
        let it = c.get(key, None)?;
        let v = c.view(it);
        let (flags, cas) = (v.flags(), v.cas());
        Some((
            flags,
            cas,
            c.value_segments(it).flatten().copied().collect(),
        ))
    }

    /// What a new process over the same (copied) arena would see.
    fn restart(old: &mut Cache, downtime: u32) -> (Cache, Recovered) {
        let state = old.save_state();
        let mut new = cache();
        let len = old.slabs.arena.len();
        new.slabs
            .arena
            .bytes_mut(0, len)
            .copy_from_slice(old.slabs.arena.bytes(0, len));
        let (started, now) = (old.clock.process_started, old.clock.now);
        new.clock.resume(started, now, downtime);
        let found = new.restore(&state).unwrap();
        (new, found)
    }

    #[test]
    fn items_come_back_whole_and_the_expired_do_not() {
        let mut a = cache();
        let big: Vec<u8> = (0..1_300_000u32).map(|i| (i % 251) as u8).collect();
        set(&mut a, b"small", 7, 0, b"hello");
        set(&mut a, b"big", 9, 0, &big);
        let soon = a.now() + 5;
        set(&mut a, b"brief", 1, soon, b"bye");
        let later = a.now() + 1000;
        set(&mut a, b"lasting", 2, later, b"stay");
        // A value still being read when the server stopped.
        let orphan = a.alloc(b"partial", 0, 0, 900_000).unwrap();
        let _ = orphan;
        let before: Vec<_> = [&b"small"[..], b"big", b"lasting"]
            .iter()
            .map(|k| read(&mut a, k).unwrap())
            .collect();
        let used = a.slabs.class(a.slabs.largest()).used_chunks;

        let (mut b, found) = restart(&mut a, 10);
        assert_eq!(
            found,
            Recovered {
                items: 3,
                expired: 1,
                orphans: 1
            }
        );
        for (k, want) in [&b"small"[..], b"big", b"lasting"].iter().zip(&before) {
            assert_eq!(read(&mut b, k).as_ref(), Some(want));
        }
        assert!(read(&mut b, b"brief").is_none());
        assert_eq!(b.stats.curr_items, 3);
        // The orphan's two full-size chunks are free again.
        assert_eq!(b.slabs.class(b.slabs.largest()).used_chunks, used - 2);
        // The next CAS follows the one the save took.
        let newest = before.iter().map(|(_, cas, _)| *cas).max().unwrap();
        set(&mut b, b"new", 0, 0, b"n");
        assert_eq!(read(&mut b, b"new").unwrap().1, newest + 2);
        // And the restored cache restarts again.
        let (mut c, found) = restart(&mut b, 0);
        assert_eq!(found.items, 4);
        assert_eq!(read(&mut c, b"big").unwrap(), before[1]);
    }
}
