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
            let chunk = self.slabs.chunk_at(cursor.page, id, cursor.chunk);
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
