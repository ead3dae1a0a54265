//! Snapshots: the live items as PUT records, for the AOF rewrite (all at
//! once, in a forked child) and for replication's full copy (a bounded
//! batch at a time, from inside the event loop).
//!
//! **The rewrite** starts with this node's tombstones, if it keeps them
//! (stamped DELETEs, oldest first: recovery rebuilds them, and replaying
//! them before the items cannot remove a key set again after its delete),
//! then walks each class's LRU from its oldest item, so a replay links the
//! items in their LRU order, and ends with the delayed `flush_all` still
//! to come, if any.
//!
//! **The full copy** walks the arena in address order -- page by page,
//! chunk by chunk -- rather than the hash table or the LRUs: chunks never
//! move, so a cursor of (page, chunk) stays valid whatever happens between
//! two batches (hash expansion, LRU bumps, evictions, page moves). An item
//! changed after the cursor passed it is not sent again by the walk: the
//! mutation stream that follows in the same ordered channel carries the
//! change. Each item is encoded as it is at the moment it is visited, so
//! everything sent is current when it is sent.

use super::mutations::{self, encode_item};
use super::record;
use crate::items::{COPY_READ_AHEAD, Cache, CopyFetch};

/// The snapshot of a rewrite: the tombstones, a PUT per live item, then
/// the delayed `flush_all` still to come, if any. Calls `sink` whenever `out` holds
/// more than `batch` bytes (and once at the end), so memory stays bounded.
pub(crate) fn rewrite(
    cache: &Cache,
    out: &mut Vec<u8>,
    batch: usize,
    mut sink: impl FnMut(&mut Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let ts = cache.unix_now();
    let mut items = 0;
    for (key, stamp) in mutations::tombstones(cache)
        .into_iter()
        .flat_map(|t| t.iter())
    {
        record::encode_stamped_delete(out, ts, key, stamp);
        if out.len() >= batch {
            sink(out)?;
        }
    }
    for it in cache.live_items_oldest_first() {
        encode_item(out, ts, cache.item_state_reading(it));
        items += 1;
        if out.len() >= batch {
            sink(out)?;
        }
    }
    if let Some(at) = cache.pending_flush_at()
        && at > ts
    {
        record::encode_flush(out, ts, at);
    }
    sink(out)?;
    Ok(items)
}

/// Where a full copy's walk is: the next chunk to look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapshotCursor {
    page: usize,
    chunk: usize,
    /// The walk stopped at a flash item whose value is being read.
    waiting: bool,
}

impl SnapshotCursor {
    /// Encodes live items from here on into `out`, looking at no more than
    /// `max_chunks` chunks and stopping once `out` holds `max_out` bytes.
    /// Returns the number of items encoded and whether the walk has reached
    /// the end of the arena.
    ///
    /// A flash item is sent once its value has been read through the I/O
    /// threads: the walk stops at it (`waiting`), with the reads of the
    /// next flash items started too, and goes on when the loop comes back
    /// after the reads.
    pub(crate) fn step(
        &mut self,
        cache: &mut Cache,
        out: &mut Vec<u8>,
        max_chunks: usize,
        max_out: usize,
    ) -> (usize, bool) {
        let ts = cache.unix_now();
        let mut encoded = 0;
        let mut looked = 0;
        self.waiting = false;
        loop {
            if looked >= max_chunks || out.len() >= max_out {
                return (encoded, !self.skip_empty(cache));
            }
            let here = *self;
            let Some(chunk) = self.next_chunk(cache) else {
                return (encoded, true);
            };
            looked += 1;
            // Reading through the usual lookup rules would bump the item;
            // the walk only skips what a lookup would no longer find.
            let Some(it) = cache.live_item_at(chunk) else {
                continue;
            };
            if cache.is_ext(it) && cache.ext_copy_fetch(it, false) == CopyFetch::Pending {
                *self = here;
                self.read_ahead(cache, max_chunks);
                self.waiting = true;
                return (encoded, false);
            }
            encode_item(out, ts, cache.item_state(it));
            encoded += 1;
        }
    }

    /// The walk is waiting for a flash read (the loop need not hurry).
    pub(crate) fn waiting(&self) -> bool {
        self.waiting
    }

    /// Moves past empty pages; whether a chunk is left.
    fn skip_empty(&mut self, cache: &Cache) -> bool {
        let slabs = &cache.slabs;
        while self.page < slabs.page_count() {
            let id = slabs.page_owner(self.page);
            let perslab = if id == 0 { 0 } else { slabs.class(id).perslab };
            if self.chunk < perslab {
                return true;
            }
            self.page += 1;
            self.chunk = 0;
        }
        false
    }

    /// The chunk here, and the cursor past it.
    fn next_chunk(&mut self, cache: &Cache) -> Option<crate::slab::ChunkRef> {
        if !self.skip_empty(cache) {
            return None;
        }
        let id = cache.slabs.page_owner(self.page);
        let chunk = cache.slabs.page_chunk(self.page, id, self.chunk);
        self.chunk += 1;
        Some(chunk)
    }

    /// Starts the reads of the flash items after the one the walk waits
    /// at, so they come back together rather than one loop turn each.
    fn read_ahead(&self, cache: &mut Cache, max_chunks: usize) {
        let mut ahead = *self;
        for _ in 0..max_chunks {
            if cache.ext_copy_reads() >= COPY_READ_AHEAD {
                return;
            }
            let Some(chunk) = ahead.next_chunk(cache) else {
                return;
            };
            if let Some(it) = cache.live_item_at(chunk)
                && cache.is_ext(it)
            {
                cache.ext_copy_fetch(it, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{CacheConfig, StoreMode};
    use crate::persist::record::{End, Reader};

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
        let (_, done) = cursor.step(c, &mut out, max_chunks, usize::MAX);
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
}
