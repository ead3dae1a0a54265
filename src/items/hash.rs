//! The key hash and the hash table that finds items by key.
//!
//! The table is an array of bucket heads; items in a bucket are chained
//! through their `h_next` field, so the table costs 4 bytes per bucket and
//! nothing per item. When it gets too full it doubles *incrementally*: a new
//! array is made and old buckets are moved a few at a time, by every insert
//! and by the reactor when idle, so no single request pays for a full
//! rehash. While moving, a bucket index below `migrated` has already moved
//! to the new array.

use super::item;
use crate::slab::arena::{Arena, prefetch};
use crate::slab::{ChunkRef, NIL};

/// A keyed multiply-fold hash; the seed is random per process, so clients
/// cannot aim keys at one bucket.
pub(crate) fn hash(key: &[u8], seed: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(K);
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        h = fold(h ^ u64::from_le_bytes(w.try_into().unwrap()), K);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = fold(h ^ u64::from_le_bytes(buf), K);
    }
    fold(h, 0x2d35_8dcc_aa6c_78a5)
}

#[inline]
fn fold(x: u64, k: u64) -> u64 {
    let m = (x as u128).wrapping_mul(k as u128);
    (m as u64) ^ ((m >> 64) as u64)
}

pub(crate) struct HashTable {
    buckets: Vec<ChunkRef>,
    /// The previous, smaller array while an expansion is in progress.
    old: Vec<ChunkRef>,
    migrated: usize,
    power: u32,
    items: usize,
    expand: bool,
    pub(crate) seed: u64,
}

impl HashTable {
    pub(crate) fn new(power: u32, expand: bool, seed: u64) -> HashTable {
        HashTable {
            buckets: vec![NIL; 1 << power],
            old: Vec::new(),
            migrated: 0,
            power,
            items: 0,
            expand,
            seed,
        }
    }

    pub(crate) fn power(&self) -> u32 {
        self.power
    }

    pub(crate) fn is_expanding(&self) -> bool {
        !self.old.is_empty()
    }

    /// Bytes held by the bucket arrays.
    pub(crate) fn bytes(&self) -> usize {
        (self.buckets.len() + self.old.len()) * std::mem::size_of::<ChunkRef>()
    }

    /// The head slot for hash `hv`: (in old array?, index).
    #[inline]
    fn slot(&self, hv: u64) -> (bool, usize) {
        if !self.old.is_empty() {
            let i = (hv as usize) & (self.old.len() - 1);
            if i >= self.migrated {
                return (true, i);
            }
        }
        (false, (hv as usize) & (self.buckets.len() - 1))
    }

    #[inline]
    fn head(&self, hv: u64) -> ChunkRef {
        match self.slot(hv) {
            (true, i) => self.old[i],
            (false, i) => self.buckets[i],
        }
    }

    /// Starts loading the bucket of `hv` (see `Cache::prefetch_key`).
    #[inline]
    pub(crate) fn prefetch(&self, hv: u64) {
        match self.slot(hv) {
            (true, i) => prefetch(&self.old[i]),
            (false, i) => prefetch(&self.buckets[i]),
        }
    }

    /// Starts loading the first item of `hv`'s chain: its header and the
    /// key after it (see `Cache::prefetch_item`).
    #[inline]
    pub(crate) fn prefetch_head(&self, arena: &Arena, hv: u64) {
        item::prefetch_item(arena, self.head(hv));
    }

    fn set_head(&mut self, hv: u64, it: ChunkRef) {
        match self.slot(hv) {
            (true, i) => self.old[i] = it,
            (false, i) => self.buckets[i] = it,
        }
    }

    pub(crate) fn find(&self, arena: &Arena, key: &[u8], hv: u64) -> Option<ChunkRef> {
        let mut it = self.head(hv);
        while it != NIL {
            let v = item::view(arena, it);
            if v.key() == key {
                return Some(it);
            }
            it = v.h_next();
        }
        None
    }

    pub(crate) fn insert(&mut self, arena: &mut Arena, it: ChunkRef, hv: u64) {
        let head = self.head(hv);
        item::view_mut(arena, it).set_h_next(head);
        self.set_head(hv, it);
        self.items += 1;
        if self.is_expanding() {
            self.migrate(arena, 4);
        } else if self.expand && self.items > self.buckets.len() * 3 / 2 && self.power < 32 {
            self.start_expansion();
        }
    }

    pub(crate) fn remove(&mut self, arena: &mut Arena, it: ChunkRef, hv: u64) {
        let next = item::view(arena, it).h_next();
        let mut cur = self.head(hv);
        if cur == it {
            self.set_head(hv, next);
            self.items -= 1;
            return;
        }
        while cur != NIL {
            let after = item::view(arena, cur).h_next();
            if after == it {
                item::view_mut(arena, cur).set_h_next(next);
                self.items -= 1;
                return;
            }
            cur = after;
        }
        debug_assert!(false, "removing an item that is not in the table");
    }

    /// Puts `new`, a copy of `old` (same key, same `h_next`), in `old`'s
    /// place in its chain: a page move, so the count does not change.
    pub(crate) fn replace(&mut self, arena: &mut Arena, old: ChunkRef, new: ChunkRef, hv: u64) {
        let mut cur = self.head(hv);
        if cur == old {
            self.set_head(hv, new);
            return;
        }
        while cur != NIL {
            let after = item::view(arena, cur).h_next();
            if after == old {
                item::view_mut(arena, cur).set_h_next(new);
                return;
            }
            cur = after;
        }
        debug_assert!(false, "moving an item that is not in the table");
    }

    fn start_expansion(&mut self) {
        self.power += 1;
        self.old = std::mem::replace(&mut self.buckets, vec![NIL; 1 << self.power]);
        self.migrated = 0;
    }

    /// Moves up to `n` old buckets into the new array; true while more remain.
    pub(crate) fn migrate(&mut self, arena: &mut Arena, n: usize) -> bool {
        let mut left = n;
        while left > 0 && self.migrated < self.old.len() {
            let mut it = self.old[self.migrated];
            self.old[self.migrated] = NIL;
            while it != NIL {
                let v = item::view(arena, it);
                let next = v.h_next();
                let i = (hash(v.key(), self.seed) as usize) & (self.buckets.len() - 1);
                item::view_mut(arena, it).set_h_next(self.buckets[i]);
                self.buckets[i] = it;
                it = next;
            }
            self.migrated += 1;
            left -= 1;
        }
        if self.migrated >= self.old.len() && !self.old.is_empty() {
            self.old = Vec::new();
            self.migrated = 0;
        }
        self.is_expanding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_byte_and_the_seed() {
        let a = hash(b"key:0001", 1);
        assert_ne!(a, hash(b"key:0002", 1));
        assert_ne!(a, hash(b"key:0001", 2));
        assert_ne!(hash(b"", 1), hash(b"\0", 1));
        assert_eq!(a, hash(b"key:0001", 1));
    }
}
