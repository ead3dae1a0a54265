//! What the cache tells the outside about each change to it: the narrow
//! interface between items and whatever keeps a copy (the append-only file,
//! a replication peer; see `crate::persist::mutations`).
//!
//! **Where changes come from.** The hooks sit in `Cache`'s own methods, not
//! in the protocol parsers, so the text, meta and binary protocols all
//! report alike: `link` (every new item state: a store of any mode, an
//! append/prepend result, an `incr` that outgrew its item, a vivified stub)
//! and the in-place changes (`incr`/`decr` rewriting a value, `touch`,
//! `gat`, meta `T`, `md ... I`) report a PUT or TOUCH of the resulting
//! state; `delete`, `md` and the removal of a value a failed `set` was meant
//! to replace report a DELETE; `flush_all` reports a FLUSH. Evictions,
//! expiry reclaims and page moves are not reported: they are the cache's
//! own business, and a replayed item that is later evicted again is still a
//! correct cache. Setting the recache-token marker on a fetch is not
//! reported either (it is transient, handed out once per stale value).
//!
//! **Plain data, absolute times.** A change is handed over as borrowed
//! views of the item (key, value segments, flags, CAS, markers) with unix
//! times, so a listener needs nothing of the cache to keep it; items knows
//! nothing of how it is kept.
//!
//! **Cost when off.** The sink is an `Option`; every hook is one branch on
//! it.

use super::item::{KEY_BINARY, LINKED, STALE, TOKEN_SENT};
use super::{Cache, Segments};
use crate::slab::{ChunkRef, NIL};
use std::any::Any;
use std::borrow::Cow;

/// The meta protocol's item markers that are part of an item's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Marks {
    /// Marked stale by `md ... I`.
    pub(crate) stale: bool,
    /// The recache token was handed out.
    pub(crate) token_sent: bool,
    /// The key was given base64 encoded.
    pub(crate) key_binary: bool,
}

/// An item as it is, borrowed from the arena.
pub(crate) struct ItemState<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) flags: u32,
    /// Unix time, 0 for never.
    pub(crate) exptime: u64,
    pub(crate) cas: u64,
    pub(crate) marks: Marks,
    /// The value, one slice per chunk it is stored in.
    pub(crate) value: Segments<'a>,
    /// For an item whose value is on flash: the value read back, or None
    /// when its record is gone (the item then reads as absent).
    pub(crate) flash: Option<Option<Cow<'a, [u8]>>>,
}

/// One change, as it stands once made.
pub(crate) enum Change<'a> {
    /// The item as it is after a store or an in-place change.
    Put(ItemState<'a>),
    Delete {
        key: &'a [u8],
    },
    /// A new expiry (unix time, 0 for never).
    Touch {
        key: &'a [u8],
        exptime: u64,
    },
    /// `flush_all`, taking effect at this unix time (never before the
    /// change itself).
    Flush {
        at: u64,
    },
}

/// Whatever keeps a copy of the cache's changes. `Any` lets its owner get
/// its own type back from [`Cache::change_sink`].
pub(crate) trait ChangeSink: Any {
    /// `ts`: the unix time of the change.
    fn change(&mut self, ts: u64, change: Change<'_>);
}

impl Cache {
    // ----- the sink ----------------------------------------------------------

    /// Starts reporting every change to `sink` (replacing any other).
    pub(crate) fn set_change_sink(&mut self, sink: Box<dyn ChangeSink>) {
        self.changes = Some(sink);
    }

    /// Stops reporting changes; returns the sink that had them.
    pub(crate) fn take_change_sink(&mut self) -> Option<Box<dyn ChangeSink>> {
        self.changes.take()
    }

    /// The sink, if it is a `T`.
    pub(crate) fn change_sink<T: ChangeSink>(&self) -> Option<&T> {
        let sink: &dyn Any = self.changes.as_deref()?;
        sink.downcast_ref()
    }

    pub(crate) fn change_sink_mut<T: ChangeSink>(&mut self) -> Option<&mut T> {
        let sink: &mut dyn Any = self.changes.as_deref_mut()?;
        sink.downcast_mut()
    }

    /// Hands the change `tell` makes of the cache as it is (and the time)
    /// to the sink, if there is one.
    /// With no sink this is the one branch a hook costs. The sink is taken
    /// out while it works so it can read the cache.
    #[inline]
    fn report(&mut self, tell: impl FnOnce(&Cache, u64, &mut dyn ChangeSink)) {
        if self.changes.is_none() {
            return;
        }
        let mut sink = self.changes.take().expect("checked above");
        tell(self, self.unix_now(), sink.as_mut());
        self.changes = Some(sink);
    }

    // ----- the hooks ---------------------------------------------------------

    /// Reports `it` as it now is.
    pub(super) fn log_put(&mut self, it: ChunkRef) {
        self.report(|c, ts, sink| sink.change(ts, Change::Put(c.item_state(it))));
    }

    pub(super) fn log_delete(&mut self, key: &[u8]) {
        self.report(|_, ts, sink| sink.change(ts, Change::Delete { key }));
    }

    pub(super) fn log_touch(&mut self, it: ChunkRef) {
        self.report(|c, ts, sink| {
            let exptime = c.exptime_to_unix(c.view(it).exptime());
            sink.change(
                ts,
                Change::Touch {
                    key: c.view(it).key(),
                    exptime,
                },
            );
        });
    }

    pub(super) fn log_flush(&mut self, at_relative: u32) {
        self.report(|c, ts, sink| {
            let at = c.clock.to_unix(at_relative).max(0) as u64;
            sink.change(ts, Change::Flush { at: at.max(ts) });
        });
    }

    // ----- reading items as the outside sees them ---------------------------

    /// Unix seconds now, as the cache's clock sees it.
    pub(crate) fn unix_now(&self) -> u64 {
        self.clock.to_unix(self.now()).max(0) as u64
    }

    /// A relative expiry as a unix time (0 stays "never").
    pub(super) fn exptime_to_unix(&self, exptime: u32) -> u64 {
        if exptime == 0 {
            0
        } else {
            self.clock.to_unix(exptime).max(1) as u64
        }
    }

    /// A unix expiry as relative time; 1 ("already expired") if it passed.
    pub(super) fn exptime_from_unix(&self, exptime: u64) -> u32 {
        if exptime == 0 {
            return 0;
        }
        // A record is outside input (a file, a peer): any u64 may come.
        let rel = i64::try_from(exptime)
            .unwrap_or(i64::MAX)
            .saturating_sub(self.clock.process_started);
        rel.clamp(1, u32::MAX as i64) as u32
    }

    /// `it` as a change would report it; a flash item's value was read
    /// beforehand (see `ext_value_in_hand`).
    pub(crate) fn item_state(&self, it: ChunkRef) -> ItemState<'_> {
        self.item_state_with(it, |c| c.ext_value_in_hand(it))
    }

    /// `it` as the AOF rewrite's forked child writes it: a flash value is
    /// read there and then (the child blocks no client).
    pub(crate) fn item_state_reading(&self, it: ChunkRef) -> ItemState<'_> {
        self.item_state_with(it, |c| c.ext_value_blocking(it).map(Cow::Owned))
    }

    fn item_state_with<'a>(
        &'a self,
        it: ChunkRef,
        flash: impl FnOnce(&'a Cache) -> Option<Cow<'a, [u8]>>,
    ) -> ItemState<'a> {
        let v = self.view(it);
        ItemState {
            key: v.key(),
            flags: v.flags(),
            exptime: self.exptime_to_unix(v.exptime()),
            cas: v.cas(),
            marks: Marks {
                stale: v.is(STALE),
                token_sent: v.is(TOKEN_SENT),
                key_binary: v.is(KEY_BINARY),
            },
            value: self.value_segments(it),
            flash: self.is_ext(it).then(|| flash(self)),
        }
    }

    /// Every item a lookup would find, class by class, each class's oldest
    /// first (COLD, WARM, HOT, then TEMP, each from its tail), so a replay
    /// links them in about their LRU order.
    pub(crate) fn live_items_oldest_first(&self) -> impl Iterator<Item = ChunkRef> + '_ {
        use super::lru::{COLD, HOT, TEMP, WARM, index};
        let lists = (1..=self.slabs.largest())
            .flat_map(|id| [COLD, WARM, HOT, TEMP].map(move |seg| index(id | seg)));
        lists.flat_map(move |list| {
            let mut it = self.lrus[list].tail;
            std::iter::from_fn(move || {
                while it != NIL {
                    let cur = it;
                    let v = self.view(cur);
                    it = v.prev();
                    if v.is(LINKED) && !self.is_flushed(cur) && !self.is_expired(cur) {
                        return Some(cur);
                    }
                }
                None
            })
        })
    }

    /// The live item whose header is `chunk`, if any: a chunk holding part
    /// of a large value is raw data whatever its flag byte says, and an
    /// item a lookup would no longer find (expired, flushed) is skipped
    /// without being touched.
    pub(crate) fn live_item_at(&self, chunk: ChunkRef) -> Option<ChunkRef> {
        let it = self.item_at(chunk)?;
        (!self.is_expired(it) && !self.is_flushed(it)).then_some(it)
    }

    /// The linked item whose header is `chunk`, if any.
    pub(super) fn item_at(&self, chunk: ChunkRef) -> Option<ChunkRef> {
        let linked = self.view(chunk).is(LINKED);
        (linked && self.body_owner(chunk).is_none()).then_some(chunk)
    }

    /// The unix time of a delayed `flush_all` that has not taken effect.
    pub(crate) fn pending_flush_at(&self) -> Option<u64> {
        let at = self.flush_at?;
        (at > self.now()).then(|| self.clock.to_unix(at).max(0) as u64)
    }
}
