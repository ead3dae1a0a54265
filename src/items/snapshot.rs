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

use super::item::{self, KEY_BINARY, LINKED, STALE, TOKEN_SENT};
use super::record::{self, MF_KEY_BINARY, MF_STALE, MF_TOKEN_SENT, Put};
use super::Cache;
use crate::slab::ChunkRef;

/// Where a walk is: the next chunk to look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotCursor {
    page: usize,
    chunk: usize,
}

impl Cache {
    /// Unix seconds now (the clock's second, as a record's `ts`).
    pub fn unix_now(&self) -> u64 {
        (self.clock.process_started + i64::from(self.now())) as u64
    }

    /// An item's relative expiry as a unix time (0: never).
    fn unix_exptime(&self, exptime: u32) -> u64 {
        match exptime {
            0 => 0,
            rel => (self.clock.process_started + i64::from(rel)).max(1) as u64,
        }
    }

    /// Appends `it` to `out` as a PUT record of its current state.
    pub fn encode_item(&self, it: ChunkRef, out: &mut Vec<u8>) -> usize {
        let v = self.view(it);
        let mflags = [
            (STALE, MF_STALE),
            (TOKEN_SENT, MF_TOKEN_SENT),
            (KEY_BINARY, MF_KEY_BINARY),
        ]
        .iter()
        .filter(|(flag, _)| v.is(*flag))
        .fold(0, |acc, (_, bit)| acc | bit);
        let put = Put {
            flags: v.flags(),
            exptime: self.unix_exptime(v.exptime()),
            cas: v.cas(),
            mflags,
            key: v.key(),
            value: &[],
        };
        record::encode_put(out, self.unix_now(), &put, self.value_segments(it))
    }

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
            self.encode_item(it, out);
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
    }

    /// Keeps the CAS counter ahead of a CAS value taken from the peer, so
    /// values this node hands out later never repeat one it has stored.
    pub fn observe_cas(&mut self, cas: u64) {
        self.cas_id = self.cas_id.max(cas);
    }
}
