//! Tombstones: the most recent deletes, each stamped with the CAS counter
//! at the time, so that a pair healing after a cut can tell "deleted here"
//! from "never seen here".
//!
//! **The stamp.** A delete is stamped with the highest CAS among the writes
//! this node knew of when it deleted (CAS values are Lamport clocks, see
//! `receive.rs`): a write with a CAS at or below the stamp came before the
//! delete and is superseded by it; a higher one did not (it came after, or
//! concurrently on the other node, where CAS order decides as between two
//! writes).
//!
//! **Why.** When two nodes that both took writes while apart link up
//! again, the one becoming replica first sends the master everything it
//! holds (see `copy.rs`). A key the master holds and the replica deleted
//! during the cut, or the other way round, would come back unless the
//! delete is remembered: the replica sends its tombstones for keys it no
//! longer holds, and the master drops an item older (by CAS) than the
//! tombstone; the master in turn refuses a PUT of a key it has no item
//! for but a newer tombstone. Keys written on one side and deleted on the
//! other while apart are decided by CAS, as two writes are.
//!
//! **Bound.** The last `TOMBS` deletes are kept (older ones are
//! forgotten first), in memory allocated once when replication starts
//! (about 2.3 MB); recording one allocates nothing. A cut with more
//! deletes than that may bring back keys deleted early in it.
//!
//! **Where deletes come from.** The DELETE records of this node's own
//! clients, read from its mutation feed (`Repl::collect_feed`, and before
//! each record applied from the peer). A delete applied from the peer is
//! the peer's to remember.

use crate::persist::record::{FRAME, KIND_DELETE, KIND_PUT};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// Deletes remembered, at most.
pub(super) const TOMBS: usize = 8192;
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
pub(super) struct Tombs {
    ring: Vec<Tomb>,
    /// The slot the next delete takes.
    next: usize,
    /// Hash of a key to the slot of its newest tombstone.
    index: HashMap<u64, u32>,
    hasher: RandomState,
    /// The highest CAS of a write this node knew of (see `note_feed`).
    stamp: u64,
}

impl Tombs {
    pub(super) fn new() -> Tombs {
        Tombs {
            ring: Vec::with_capacity(TOMBS),
            next: 0,
            index: HashMap::with_capacity(TOMBS),
            hasher: RandomState::new(),
            stamp: 0,
        }
    }

    /// Remembers that `key` was deleted when the CAS counter was `cas`.
    pub(super) fn record(&mut self, key: &[u8], cas: u64) {
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
    pub(super) fn cas_of(&self, key: &[u8]) -> Option<u64> {
        let slot = *self.index.get(&self.hasher.hash_one(key))?;
        let tomb = &self.ring[slot as usize];
        (tomb.key() == key).then_some(tomb.cas)
    }

    /// Every remembered key with the stamp of its newest delete.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.index.values().map(|&slot| {
            let tomb = &self.ring[slot as usize];
            (tomb.key(), tomb.cas)
        })
    }

    /// Reads the whole records in `feed`: a PUT's CAS raises the stamp
    /// (the highest CAS of a write this node knew of); a DELETE, when it is
    /// this node's own (`own`: made by its clients, not applied from the
    /// peer), is remembered with the stamp as it was then, so that exactly
    /// the writes that came before the delete sort below it. Only the frame,
    /// kind and these fields are read: no checksum on the hot path.
    pub(super) fn note_feed(&mut self, mut feed: &[u8], own: bool) {
        while feed.len() > FRAME {
            let len = u32::from_le_bytes([feed[0], feed[1], feed[2], feed[3]]) as usize;
            let Some(body) = feed.get(FRAME..FRAME + len) else {
                return;
            };
            match body[0] {
                // PUT body: kind, ts (8), flags (4), exptime (8), cas (8), ...
                KIND_PUT => {
                    if let Some(cas) = body.get(21..29) {
                        let cas = u64::from_le_bytes(cas.try_into().expect("8 bytes"));
                        self.stamp = self.stamp.max(cas);
                    }
                }
                // DELETE body: kind, ts (8), nkey, key.
                KIND_DELETE if own => {
                    if let Some(&nkey) = body.get(9)
                        && let Some(key) = body.get(10..10 + nkey as usize)
                    {
                        self.record(key, self.stamp);
                    }
                }
                _ => {}
            }
            feed = &feed[FRAME + len..];
        }
    }

    /// The cache's CAS counter now: every write so far has been read.
    pub(super) fn caught_up(&mut self, cas_counter: u64) {
        self.stamp = self.stamp.max(cas_counter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::record;

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
    fn own_deletes_are_picked_out_of_a_feed_with_the_writes_before_them() {
        let put = |out: &mut Vec<u8>, key: &[u8], cas| {
            let p = record::Put {
                flags: 0,
                exptime: 0,
                cas,
                mflags: 0,
                key,
                value: b"v",
            };
            record::encode_put(out, 1, &p, std::iter::once(&b"v"[..]));
        };
        let mut feed = Vec::new();
        put(&mut feed, b"x", 7);
        record::encode_delete(&mut feed, 1, b"gone");
        record::encode_flush(&mut feed, 1, 1);
        put(&mut feed, b"y", 9);
        record::encode_touch(&mut feed, 1, b"kept", 5);
        record::encode_delete(&mut feed, 1, b"also");
        let mut t = Tombs::new();
        t.caught_up(3);
        t.note_feed(&feed, true);
        assert_eq!(t.iter().count(), 2);
        assert_eq!((t.cas_of(b"gone"), t.cas_of(b"also")), (Some(7), Some(9)));
        // The peer's deletes only move the stamp along.
        let mut peer = Vec::new();
        put(&mut peer, b"z", 11);
        record::encode_delete(&mut peer, 1, b"theirs");
        t.note_feed(&peer, false);
        assert_eq!(t.cas_of(b"theirs"), None);
        // A torn tail is left alone.
        t.note_feed(&feed[..feed.len() - 1], true);
        assert_eq!(t.cas_of(b"also"), Some(9));
        assert_eq!(t.cas_of(b"gone"), Some(11));
    }
}
