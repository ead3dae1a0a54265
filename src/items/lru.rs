//! One LRU list: items doubly linked through their `prev`/`next` header
//! fields, newest at the head, eviction candidates at the tail.
//!
//! Each slab class has four, memcached's segments (see its
//! `doc/new_lru.txt`): new items enter HOT, items fetched again move to
//! WARM, both drain into COLD, and evictions come from COLD's tail; TEMP
//! holds items whose TTL is short (`-o temporary_ttl`), never bumped nor
//! evicted. With the LRU flat (`-o no_lru_maintainer`, `lru mode flat`)
//! every new item goes to COLD, the one list memcached keeps then. An
//! item's header names its list as memcached's `slabs_clsid` does: the
//! class in the low six bits, the segment in the top two.

use super::item;
use crate::slab::{ChunkRef, NIL, arena::Arena};

pub(crate) const HOT: u8 = 0;
pub(crate) const WARM: u8 = 64;
pub(crate) const COLD: u8 = 128;
pub(crate) const TEMP: u8 = 192;
pub(crate) use super::item::CLASS_MASK;
const SEGMENT_MASK: u8 = 192;
/// Lists per class, in the order memcached reports them.
pub(crate) const SEGMENTS: [u8; 4] = [HOT, WARM, COLD, TEMP];

/// The segment bits of an item's `lru` byte.
pub(crate) fn segment(lru: u8) -> u8 {
    lru & SEGMENT_MASK
}

/// Where the list `lru` (class | segment) sits in the cache's table:
/// a class's four segments side by side.
pub(crate) fn index(lru: u8) -> usize {
    (lru & CLASS_MASK) as usize * SEGMENTS.len() + (lru >> 6) as usize
}

/// 0 for HOT .. 3 for TEMP: a segment's place in per-segment arrays.
pub(crate) fn ordinal(lru: u8) -> usize {
    (lru >> 6) as usize
}

#[derive(Debug, Default)]
pub(super) struct Lru {
    pub(crate) head: ChunkRef,
    pub(crate) tail: ChunkRef,
    pub(crate) len: usize,
    /// memcached's size formula summed over the list (its `sizes_bytes`):
    /// what HOT and WARM are capped by.
    pub(crate) bytes: u64,
}

impl Lru {
    #[inline]
    pub(super) fn push_head(&mut self, arena: &mut Arena, it: ChunkRef) {
        let mut h = item::header_mut(arena, it);
        h.set_prev(NIL);
        h.set_next(self.head);
        self.link_head(arena, it);
    }

    /// `push_head` for an item coming from another list: its header names
    /// this one (`lru`) in the same write.
    #[inline]
    pub(super) fn push_head_as(&mut self, arena: &mut Arena, it: ChunkRef, lru: u8) {
        let mut h = item::header_mut(arena, it);
        h.set_lru(lru);
        h.set_prev(NIL);
        h.set_next(self.head);
        self.link_head(arena, it);
    }

    /// The list's side of a push at the head, once `it` points at the old head.
    #[inline]
    fn link_head(&mut self, arena: &mut Arena, it: ChunkRef) {
        if self.head != NIL {
            item::view_mut(arena, self.head).set_prev(it);
        }
        self.head = it;
        if self.tail == NIL {
            self.tail = it;
        }
        self.len += 1;
    }

    #[inline]
    pub(super) fn unlink(&mut self, arena: &mut Arena, it: ChunkRef) {
        self.detach(arena, it);
        let mut h = item::header_mut(arena, it);
        h.set_prev(NIL);
        h.set_next(NIL);
    }

    /// Takes `it` out of the list, leaving its own links stale: for a move,
    /// whose `push_head` rewrites them.
    #[inline]
    pub(super) fn detach(&mut self, arena: &mut Arena, it: ChunkRef) {
        let h = item::header(arena, it);
        let (prev, next) = (h.prev(), h.next());
        if prev != NIL {
            item::view_mut(arena, prev).set_next(next);
        } else {
            debug_assert_eq!(self.head, it);
            self.head = next;
        }
        if next != NIL {
            item::view_mut(arena, next).set_prev(prev);
        } else {
            debug_assert_eq!(self.tail, it);
            self.tail = prev;
        }
        self.len -= 1;
    }

    /// Moves `it` to the head of its own list (memcached's
    /// `moves_within_lru`); nothing to do when it is there already.
    #[inline]
    pub(super) fn move_to_head(&mut self, arena: &mut Arena, it: ChunkRef) {
        if self.head != it {
            self.detach(arena, it);
            self.push_head(arena, it);
        }
    }

    /// Puts `new`, a copy of `old`'s header, in `old`'s place (a page
    /// move): the neighbours and ends point at the copy.
    pub(super) fn replace(&mut self, arena: &mut Arena, old: ChunkRef, new: ChunkRef) {
        let v = item::view(arena, new);
        let (prev, next) = (v.prev(), v.next());
        if prev != NIL {
            item::view_mut(arena, prev).set_next(new);
        } else {
            debug_assert_eq!(self.head, old);
            self.head = new;
        }
        if next != NIL {
            item::view_mut(arena, next).set_prev(new);
        } else {
            debug_assert_eq!(self.tail, old);
            self.tail = new;
        }
    }
}
