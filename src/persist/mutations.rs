//! The mutation feed: every successful change to the cache, from any
//! protocol, as a [`record`] appended to one outgoing buffer.
//!
//! The cache reports its changes through its change sink
//! (`items/changes.rs`); the feed is that sink when the append-only file or
//! replication is on, and encodes each change as the record both of them
//! write. Installed, it costs the cache one branch per change when off and
//! no allocation in the steady state when on: the buffer's capacity is
//! kept between loop turns.
//!
//! **Consumers.** At the end of each loop turn the reactor
//! (`Reactor::clear_feed`) lets replication take the turn's records, hands
//! the buffer to the AOF writer, then empties it with [`clear`] and
//! releases the replies it held back, so that no client hears of a change
//! before its record is written.
//!
//! **Own deletes and given ones.** With replication on, the feed also
//! keeps this node's tombstones (`tombs.rs`): a delete of its own clients
//! is written as a DELETE carrying its stamp -- the highest CAS the feed
//! has seen, every PUT passing through it, caught up with the cache's
//! counter whenever a peer's change is applied -- and remembered; a change
//! replayed from a peer (`Replay::apply`, which marks it given) is a plain
//! DELETE, the peer's to remember. Because the stamp travels in the
//! record, the append-only file holds the tombstones and recovery rebuilds
//! them.

use super::record::{self, MF_KEY_BINARY, MF_STALE, MF_TOKEN_SENT, Put};
use super::tombs::Tombs;
use crate::items::{Cache, Change, ChangeSink, ItemState, Marks};

/// The outgoing buffer of encoded records.
#[derive(Default)]
pub(crate) struct MutationFeed {
    buf: Vec<u8>,
    /// The changes being made are a peer's (see `Replay::apply`).
    given: bool,
    /// The highest CAS of a write this node knew of: an own delete's stamp.
    stamp: u64,
    /// This node's recent deletes, when kept (replication on).
    tombs: Option<Tombs>,
    /// How many times the cache was replaced by a full copy: the file no
    /// longer describes it until a rewrite (see `request_snapshot`).
    snapshot_requests: u64,
}

impl ChangeSink for MutationFeed {
    fn change(&mut self, ts: u64, change: Change<'_>) {
        let out = &mut self.buf;
        match change {
            Change::Put(item) => {
                self.stamp = self.stamp.max(item.cas);
                encode_item(out, ts, item)
            }
            Change::Delete { key } => match &mut self.tombs {
                Some(tombs) if !self.given => {
                    tombs.record(key, self.stamp);
                    record::encode_stamped_delete(out, ts, key, self.stamp)
                }
                _ => record::encode_delete(out, ts, key),
            },
            Change::Touch { key, exptime } => record::encode_touch(out, ts, key, exptime),
            Change::Flush { at } => record::encode_flush(out, ts, at),
        };
    }
}

/// A PUT of `item` at the end of `out` (also the AOF rewrite's and the
/// full copy's encoding).
pub(crate) fn encode_item(out: &mut Vec<u8>, ts: u64, item: ItemState<'_>) -> usize {
    let put = Put {
        flags: item.flags,
        exptime: item.exptime,
        cas: item.cas,
        mflags: mflags(item.marks),
        key: item.key,
        value: &[],
    };
    match &item.flash {
        Some(Some(value)) => record::encode_put(out, ts, &put, std::iter::once(&value[..])),
        // A flash item whose record is gone is absent: nothing to write.
        Some(None) => 0,
        None => record::encode_put(out, ts, &put, item.value),
    }
}

/// An item's markers as a PUT's `mflags`.
fn mflags(marks: Marks) -> u8 {
    let mut mflags = 0;
    for (marked, mf) in [
        (marks.stale, MF_STALE),
        (marks.token_sent, MF_TOKEN_SENT),
        (marks.key_binary, MF_KEY_BINARY),
    ] {
        if marked {
            mflags |= mf;
        }
    }
    mflags
}

/// A PUT's `mflags` as an item's markers.
pub(crate) fn marks(mflags: u8) -> Marks {
    Marks {
        stale: mflags & MF_STALE != 0,
        token_sent: mflags & MF_TOKEN_SENT != 0,
        key_binary: mflags & MF_KEY_BINARY != 0,
    }
}

/// Starts logging every change of `cache` (AOF or replication on).
pub(crate) fn enable(cache: &mut Cache) {
    if !enabled(cache) {
        let feed = MutationFeed {
            stamp: cache.cas_counter(),
            ..MutationFeed::default()
        };
        cache.set_change_sink(Box::new(feed));
    }
}

/// Keeps this node's tombstones from now on (replication on), starting
/// from `recovered` (rebuilt from the file) if given.
pub(crate) fn keep_tombstones(cache: &mut Cache, recovered: Option<Tombs>) {
    enable(cache);
    let feed = cache.change_sink_mut::<MutationFeed>().expect("enabled");
    match (&mut feed.tombs, recovered) {
        (_, Some(t)) => feed.tombs = Some(t),
        (None, None) => feed.tombs = Some(Tombs::new()),
        (Some(_), None) => {}
    }
}

/// This node's recent deletes, when kept.
pub(crate) fn tombstones(cache: &Cache) -> Option<&Tombs> {
    cache.change_sink::<MutationFeed>()?.tombs.as_ref()
}

/// The CAS counter may have moved without a PUT passing through the feed
/// (a peer's tombstone was observed): own deletes from now on sort after it.
pub(crate) fn catch_up(cache: &mut Cache) {
    let counter = cache.cas_counter();
    if let Some(f) = cache.change_sink_mut::<MutationFeed>() {
        f.stamp = f.stamp.max(counter);
    }
}

/// Marks the changes made from now on as a peer's (true) or this node's
/// own (false).
pub(super) fn set_given(cache: &mut Cache, given: bool) {
    if let Some(f) = cache.change_sink_mut::<MutationFeed>() {
        f.given = given;
    }
}

/// The cache's content was replaced wholesale (a replica's full copy is
/// complete): the records of the file no longer describe it (the wipe
/// before the copy is not a record), and only a rewrite -- a snapshot of
/// the cache as it now is -- makes them do so again.
pub(crate) fn request_snapshot(cache: &mut Cache) {
    if let Some(f) = cache.change_sink_mut::<MutationFeed>() {
        f.snapshot_requests += 1;
    }
}

/// How many snapshots have been asked for so far (`request_snapshot`).
pub(crate) fn snapshot_requests(cache: &Cache) -> u64 {
    cache
        .change_sink::<MutationFeed>()
        .map_or(0, |f| f.snapshot_requests)
}

pub(crate) fn enabled(cache: &Cache) -> bool {
    cache.change_sink::<MutationFeed>().is_some()
}

/// Records appended since the last [`clear`].
pub(crate) fn bytes(cache: &Cache) -> &[u8] {
    cache.change_sink::<MutationFeed>().map_or(&[], |f| &f.buf)
}

pub(crate) fn len(cache: &Cache) -> usize {
    cache
        .change_sink::<MutationFeed>()
        .map_or(0, |f| f.buf.len())
}

pub(crate) fn clear(cache: &mut Cache) {
    if let Some(f) = cache.change_sink_mut::<MutationFeed>() {
        f.buf.clear();
        // A burst of large values should not pin memory.
        if f.buf.capacity() > 64 << 20 {
            f.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{CacheConfig, StoreMode};

    #[test]
    fn nothing_is_logged_while_the_feed_is_off() {
        let mut c = Cache::new(CacheConfig::for_tests(4)).unwrap();
        let it = c.alloc(b"a", 5, 0, 1).unwrap();
        c.value_window_mut(it, 0).copy_from_slice(b"1");
        c.store(it, StoreMode::Set, 0);
        assert!(bytes(&c).is_empty());
        assert!(!enabled(&c));
    }

    #[test]
    fn markers_round_trip_through_mflags() {
        for bits in 0..8u8 {
            assert_eq!(mflags(marks(bits)), bits);
        }
    }

    fn set(c: &mut Cache, key: &[u8]) {
        let it = c.alloc(key, 0, 0, 1).unwrap();
        c.value_window_mut(it, 0).copy_from_slice(b"1");
        c.store(it, StoreMode::Set, 0);
    }

    fn ops(feed: &[u8]) -> Vec<String> {
        let mut r = record::Reader::new(feed, 0);
        let mut out = Vec::new();
        while let Ok(rec) = r.next_record() {
            out.push(match rec.op {
                record::Op::Put(p) => format!("put {} {}", p.key[0] as char, p.cas),
                record::Op::Delete { key, stamp } => format!("del {} {stamp:?}", key[0] as char),
                other => format!("{other:?}"),
            });
        }
        out
    }

    #[test]
    fn own_deletes_carry_their_stamp_and_a_peers_do_not() {
        let mut c = Cache::new(CacheConfig::for_tests(4)).unwrap();
        keep_tombstones(&mut c, None);
        set(&mut c, b"a");
        set(&mut c, b"b");
        assert!(c.delete(b"a"));
        // The peer's change, given: its delete is not ours, its PUT's CAS
        // moves the stamp on.
        let mut replay = crate::persist::replay::Replay::default();
        for op in [
            record::Op::Put(Put {
                flags: 0,
                exptime: 0,
                cas: 40,
                mflags: 0,
                key: b"p",
                value: b"v",
            }),
            record::Op::Delete {
                key: b"b",
                stamp: Some(7),
            },
        ] {
            let rec = record::Record { ts: 1, op };
            replay.apply(&mut c, &rec, true);
        }
        assert!(c.delete(b"p"));
        assert_eq!(
            ops(bytes(&c)),
            [
                "put a 1",
                "put b 2",
                "del a Some(2)",
                "put p 40",
                "del b None",
                "del p Some(40)"
            ]
        );
        let t = tombstones(&c).unwrap();
        assert_eq!(
            (t.cas_of(b"a"), t.cas_of(b"b"), t.cas_of(b"p")),
            (Some(2), None, Some(40))
        );
        // A peer's tombstone observed without a PUT still moves the stamp.
        c.observe_cas(90);
        catch_up(&mut c);
        set(&mut c, b"q");
        assert!(c.delete(b"q"));
        assert_eq!(tombstones(&c).unwrap().cas_of(b"q"), Some(91));
    }

    #[test]
    fn without_tombstones_deletes_are_plain() {
        let mut c = Cache::new(CacheConfig::for_tests(4)).unwrap();
        enable(&mut c);
        set(&mut c, b"a");
        assert!(c.delete(b"a"));
        assert_eq!(ops(bytes(&c)), ["put a 1", "del a None"]);
        assert!(tombstones(&c).is_none());
    }

    #[test]
    fn a_rewrite_starts_with_the_tombstones() {
        let mut c = Cache::new(CacheConfig::for_tests(4)).unwrap();
        keep_tombstones(&mut c, None);
        set(&mut c, b"a");
        assert!(c.delete(b"a"));
        set(&mut c, b"a");
        set(&mut c, b"z");
        assert!(c.delete(b"z"));
        let mut out = Vec::new();
        crate::persist::snapshot::rewrite(&c, &mut out, usize::MAX, |_| Ok(())).unwrap();
        assert_eq!(ops(&out), ["del a Some(1)", "del z Some(3)", "put a 2"]);
        // Replayed with tombstones kept, they come back.
        let mut again = Cache::new(CacheConfig::for_tests(4)).unwrap();
        let mut rebuilt = Tombs::new();
        let mut r = record::Reader::new(&out, 0);
        let mut replay = crate::persist::replay::Replay::recovery();
        while let Ok(rec) = r.next_record() {
            if let record::Op::Delete {
                key,
                stamp: Some(s),
            } = rec.op
            {
                rebuilt.record(key, s);
            }
            replay.apply(&mut again, &rec, false);
        }
        assert_eq!(
            (rebuilt.cas_of(b"a"), rebuilt.cas_of(b"z")),
            (Some(1), Some(3))
        );
        assert_eq!(again.cas_of(b"a"), Some(2));
    }
}
