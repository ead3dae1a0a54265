//! Tombstones: this node's most recent deletes, each stamped with the CAS
//! counter at the time, so that a pair healing after a cut (or after both
//! nodes restarted) can tell "deleted here" from "never seen here".
//!
//! **The stamp.** A delete is stamped with the highest CAS among the writes
//! this node knew of when it deleted (CAS values are Lamport clocks, see
//! `crate::repl`): a write with a CAS at or below the stamp came before the
//! delete and is superseded by it; a higher one did not (it came after, or
//! concurrently on the other node, where CAS order decides as between two
//! writes).
//!
//! **Why.** When two nodes that both took writes while apart link up
//! again, the one becoming replica first sends the master everything it
//! holds. A key the master holds and the replica deleted while apart, or
//! the other way round, would come back unless the delete is remembered:
//! the replica sends its tombstones for keys it no longer holds, and the
//! master drops an item older (by CAS) than the tombstone; the master in
//! turn refuses a PUT of a key it has no item for but a newer tombstone.
//!
//! **Whose deletes.** Only this node's own: its clients' deletes (and the
//! removal of a value a failed `set` was meant to replace). A delete
//! applied from the peer is the peer's to remember -- stamped here it
//! would carry this node's counter, which may be past writes the peer made
//! after its delete, and a heal would then drop those.
//!
//! **Durable.** The mutation feed keeps the set (`mutations.rs`): it writes
//! each own delete as a DELETE record carrying its stamp, so the
//! append-only file holds the tombstones; recovery rebuilds the set from
//! those records, and a rewrite writes the set at the head of the new file
//! (before the live items, so that a key set again after its delete is
//! replayed as deleted, then set). A node killed with an acknowledged
//! delete its peer never heard of keeps it across the restart.
//!
//! **Bound.** The last `TOMBS` deletes are kept (older ones are forgotten
//! first), in memory allocated once (about 2.3 MB); recording one
//! allocates nothing. A cut with more deletes than that may bring back
//! keys deleted early in it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// Deletes remembered, at most.
pub(crate) const TOMBS: usize = 8192;
/// memcached's longest key.
const KEY_MAX: usize = 250;

#[derive(Clone, Copy)]
struct Tomb {
    hash: u64,
    cas: u64,
    len: u8,
    key: [u8; KEY_MAX],
}

impl Tomb {
    fn key(&self) -> &[u8] {
        &self.key[..self.len as usize]
    }
}

/// The last `TOMBS` deletes, in a ring, with an index by key.
pub(crate) struct Tombs {
    ring: Vec<Tomb>,
    /// The slot the next delete takes.
    next: usize,
    /// Hash of a key to the slot of its newest tombstone.
    index: HashMap<u64, u32>,
    hasher: RandomState,
}

impl Tombs {
    pub(crate) fn new() -> Tombs {
        Tombs {
            ring: Vec::with_capacity(TOMBS),
            next: 0,
            index: HashMap::with_capacity(TOMBS),
            hasher: RandomState::new(),
        }
    }

    /// Remembers that `key` was deleted when the CAS counter was `cas`.
    pub(crate) fn record(&mut self, key: &[u8], cas: u64) {
        if key.len() > KEY_MAX {
            return;
        }
        let slot = self.next;
        self.next = (slot + 1) % TOMBS;
        if let Some(old) = self.ring.get(slot)
            && self.index.get(&old.hash) == Some(&(slot as u32))
        {
            self.index.remove(&old.hash);
        }
        let mut tomb = Tomb {
            hash: self.hasher.hash_one(key),
            cas,
            len: key.len() as u8,
            key: [0; KEY_MAX],
        };
        tomb.key[..key.len()].copy_from_slice(key);
        self.index.insert(tomb.hash, slot as u32);
        match self.ring.get_mut(slot) {
            Some(t) => *t = tomb,
            None => self.ring.push(tomb),
        }
    }

    /// The stamp of the newest remembered delete of `key`.
    pub(crate) fn cas_of(&self, key: &[u8]) -> Option<u64> {
        let slot = *self.index.get(&self.hasher.hash_one(key))?;
        let tomb = &self.ring[slot as usize];
        (tomb.key() == key).then_some(tomb.cas)
    }

    /// Every remembered key with the stamp of its newest delete, the
    /// oldest delete first (the order a rewrite writes them in, so that
    /// recovery rebuilds the same ring).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        let len = self.ring.len();
        let start = if len < TOMBS { 0 } else { self.next };
        (0..len)
            .map(move |i| (start + i) % len)
            .filter(|&slot| {
                let tomb = &self.ring[slot];
                self.index.get(&tomb.hash) == Some(&(slot as u32))
            })
            .map(|slot| {
                let tomb = &self.ring[slot];
                (tomb.key(), tomb.cas)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_delete_of_a_key_is_found_and_the_oldest_forgotten() {
        let mut t = Tombs::new();
        t.record(b"a", 5);
        t.record(b"b", 6);
        t.record(b"a", 9);
        assert_eq!(
            (t.cas_of(b"a"), t.cas_of(b"b"), t.cas_of(b"c")),
            (Some(9), Some(6), None)
        );
        let mut all: Vec<_> = t.iter().map(|(k, c)| (k.to_vec(), c)).collect();
        all.sort();
        assert_eq!(all, [(b"a".to_vec(), 9), (b"b".to_vec(), 6)]);
        // Slots 0..2 hold a (older), b, a; the ring wraps onto slot 0.
        for i in 0..TOMBS - 2 {
            t.record(format!("k{i}").as_bytes(), 100);
        }
        assert_eq!((t.cas_of(b"a"), t.cas_of(b"b")), (Some(9), Some(6)));
        assert_eq!(t.iter().count(), TOMBS);
        t.record(b"one more", 101);
        assert_eq!((t.cas_of(b"a"), t.cas_of(b"b")), (Some(9), None));
        t.record(b"and another", 102);
        assert_eq!(t.cas_of(b"a"), None);
        assert_eq!(t.iter().count(), TOMBS);
        assert_eq!(t.cas_of(b"k0"), Some(100));
        t.record(&[b'x'; 251], 1);
        assert_eq!(t.cas_of(&[b'x'; 251]), None);
    }

    #[test]
    fn iteration_is_oldest_first_so_a_rebuild_keeps_the_same_ring() {
        let mut t = Tombs::new();
        for i in 0..TOMBS + 3 {
            t.record(format!("k{i}").as_bytes(), i as u64);
        }
        t.record(b"k5", 999);
        let keys: Vec<_> = t.iter().map(|(k, c)| (k.to_vec(), c)).collect();
        assert_eq!(
            keys.len(),
            TOMBS - 1,
            "k5 is there once, with its newest stamp"
        );
        assert_eq!(keys[0], (b"k4".to_vec(), 4));
        assert_eq!(keys[1], (b"k6".to_vec(), 6));
        assert_eq!(keys.last().unwrap(), &(b"k5".to_vec(), 999));
        let mut again = Tombs::new();
        for (k, c) in &keys {
            again.record(k, *c);
        }
        let rebuilt: Vec<_> = again.iter().map(|(k, c)| (k.to_vec(), c)).collect();
        assert_eq!(rebuilt, keys);
    }
}
