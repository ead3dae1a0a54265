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

use super::record::{self, MF_KEY_BINARY, MF_STALE, MF_TOKEN_SENT, Put};
use crate::items::{Cache, Change, ChangeSink, ItemState, Marks};

/// The outgoing buffer of encoded records.
#[derive(Debug, Default)]
pub(crate) struct MutationFeed {
    buf: Vec<u8>,
}

impl ChangeSink for MutationFeed {
    fn change(&mut self, ts: u64, change: Change<'_>) {
        let out = &mut self.buf;
        match change {
            Change::Put(item) => encode_item(out, ts, item),
            Change::Delete { key } => record::encode_delete(out, ts, key),
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
        cache.set_change_sink(Box::<MutationFeed>::default());
    }
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
}
