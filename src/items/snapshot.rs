//! A full copy of the live items, taken a bounded batch at a time from
//! inside the event loop (replication's initial sync).
//!
//! The walk goes through the arena in address order -- page by page, chunk
//! by chunk -- rather than through the hash table or the LRUs: chunks never
//! move, so a cursor of (page, chunk) stays valid whatever happens between
//! two batches (hash expansion, LRU bumps, evictions, page moves). An item
//! changed after the cursor passed it is not sent again by the walk: the
//! mutation stream that follows in the same ordered channel carries the
//! change. Each item is encoded as it is at the moment it is visited, so
//! everything sent is current when it is sent.

use super::Cache;
use super::hash;
use super::item::{self, LINKED};
use crate::slab::ChunkRef;

/// Where a walk is: the next chunk to look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotCursor {
    page: usize,
    chunk: usize,
}

impl Cache {
    /// The linked item whose header is `chunk`, if any: a chunk holding
    /// part of a large value is raw data whatever its flag byte says.
    fn item_at(&self, chunk: ChunkRef) -> Option<ChunkRef> {
        let linked = item::view(&self.slabs.arena, chunk).is(LINKED);
        (linked && self.body_owner(chunk).is_none()).then_some(chunk)
    }

    /// Encodes live items from `cursor` on into `out`, looking at no more
    /// than `max_chunks` chunks and stopping once `out` holds `max_out`
    /// bytes. Returns the number of items encoded and whether the walk has
    /// reached the end of the arena.
    pub fn snapshot_step(
        &mut self,
        cursor: &mut SnapshotCursor,
        out: &mut Vec<u8>,
        max_chunks: usize,
        max_out: usize,
    ) -> (usize, bool) {
        let ts = self.unix_now();
        let mut encoded = 0;
        let mut looked = 0;
        while cursor.page < self.slabs.page_count() {
            let id = self.slabs.page_owner(cursor.page);
            let perslab = if id == 0 {
                0
            } else {
                self.slabs.class(id).perslab
            };
            if cursor.chunk >= perslab {
                cursor.page += 1;
                cursor.chunk = 0;
                continue;
            }
            if looked >= max_chunks || out.len() >= max_out {
                return (encoded, false);
            }
            let chunk = self.slabs.page_chunk(cursor.page, id, cursor.chunk);
            cursor.chunk += 1;
            looked += 1;
            let Some(it) = self.item_at(chunk) else {
                continue;
            };
            // Reading through the usual lookup rules would bump the item;
            // the walk only skips what a lookup would no longer find.
            if self.is_expired(it) || self.is_flushed(it) {
                continue;
            }
            self.encode_item(out, ts, it);
            encoded += 1;
        }
        (encoded, true)
    }

    /// Removes every item at once (a replica about to receive a full copy
    /// starts from nothing), and forgets any pending `flush_all`.
    pub fn wipe(&mut self) {
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
        self.replay_flush = None;
    }

    /// Under replication the master hands out odd CAS values and the
    /// replica even ones, so two writes made at once on the two nodes can
    /// never carry the same CAS (which the conflict rule compares).
    pub fn set_cas_lane(&mut self, odd: bool) {
        self.cas_lane = Some(u64::from(odd));
    }

    /// The CAS of the live item under `key`, without touching it.
    pub fn cas_of(&self, key: &[u8]) -> Option<u64> {
        let hv = hash::hash(key, self.hash.seed);
        let it = self.hash.find(&self.slabs.arena, key, hv)?;
        let gone = self.is_expired(it) || self.is_flushed(it);
        (!gone).then(|| self.view(it).cas())
    }

    /// Keeps the CAS counter ahead of a CAS value taken from the peer, so
    /// values this node hands out later never repeat one it has stored.
    pub fn observe_cas(&mut self, cas: u64) {
        self.cas_id = self.cas_id.max(cas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::record::{self, End, Reader};
    use crate::items::{CacheConfig, StoreMode};

    fn cache() -> Cache {
        Cache::new(CacheConfig::for_tests(16)).unwrap()
    }

    fn set(c: &mut Cache, key: &str, value: &[u8], exptime: u32) {
        let it = c.alloc(key.as_bytes(), 3, exptime, value.len()).unwrap();
        let mut done = 0;
        while done < value.len() {
            let w = c.value_window_mut(it, done);
            let n = w.len().min(value.len() - done);
            w[..n].copy_from_slice(&value[done..done + n]);
            done += n;
        }
        c.store(it, StoreMode::Set, 0);
    }

    /// Every key (and its value and CAS) that `records` holds.
    fn keys_in(records: &[u8]) -> Vec<(Vec<u8>, usize, u64)> {
        let mut r = Reader::new(records, 0);
        let mut out = Vec::new();
        loop {
            match r.next_record() {
                Ok(rec) => match rec.op {
                    record::Op::Put(p) => out.push((p.key.to_vec(), p.value.len(), p.cas)),
                    other => panic!("unexpected {other:?}"),
                },
                Err(End::Clean) => return out,
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    fn walk(c: &mut Cache, cursor: &mut SnapshotCursor, max_chunks: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let (_, done) = c.snapshot_step(cursor, &mut out, max_chunks, usize::MAX);
        (out, done)
    }

    #[test]
    fn the_walk_finds_every_live_item_once_in_small_batches() {
        let mut c = cache();
        for i in 0..3000 {
            set(&mut c, &format!("key{i}"), format!("v{i}").as_bytes(), 0);
        }
        set(&mut c, "big", &vec![b'b'; 700 << 10], 0);
        set(&mut c, "dead", b"x", 1);
        let mut cursor = SnapshotCursor::default();
        let mut all = Vec::new();
        let mut batches = 0;
        loop {
            let (out, done) = walk(&mut c, &mut cursor, 100);
            all.extend_from_slice(&out);
            batches += 1;
            if done {
                break;
            }
        }
        assert!(batches > 30, "{batches}");
        let mut keys: Vec<_> = keys_in(&all).into_iter().map(|(k, ..)| k).collect();
        keys.sort();
        assert_eq!(keys.len(), 3001);
        keys.dedup();
        assert_eq!(keys.len(), 3001);
        let big = keys_in(&all).into_iter().find(|(k, ..)| k == b"big");
        assert_eq!(big.map(|(_, n, _)| n), Some(700 << 10));
    }

    #[test]
    fn changes_behind_the_cursor_are_left_to_the_stream() {
        let mut c = cache();
        for i in 0..200 {
            set(&mut c, &format!("k{i}"), b"old", 0);
        }
        let mut cursor = SnapshotCursor::default();
        let (first, _) = walk(&mut c, &mut cursor, 100);
        let seen: Vec<_> = keys_in(&first).into_iter().map(|(k, ..)| k).collect();
        // Delete one already sent and one not yet reached, grow the table.
        let behind = String::from_utf8(seen[0].clone()).unwrap();
        let ahead = (0..200)
            .map(|i| format!("k{i}"))
            .find(|k| !seen.contains(&k.as_bytes().to_vec()))
            .unwrap();
        assert!(c.delete(behind.as_bytes()));
        assert!(c.delete(ahead.as_bytes()));
        for i in 0..5000 {
            set(&mut c, &format!("new{i}"), b"n", 0);
        }
        let (rest, done) = walk(&mut c, &mut cursor, usize::MAX);
        assert!(done);
        let later: Vec<_> = keys_in(&rest).into_iter().map(|(k, ..)| k).collect();
        assert!(!later.contains(&ahead.into_bytes()));
        assert!(!later.contains(&behind.into_bytes()));
        let old = seen.len() + later.iter().filter(|k| k.starts_with(b"k")).count();
        assert_eq!(old, 199);
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
