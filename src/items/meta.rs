//! Item operations of the meta protocol (`mg`, `ms`, `md`, `ma`, `me`), as
//! memcached 1.6.18 does them: fetches whose LRU bump can be delayed or
//! skipped, stub items created on a miss (autovivify), the stale and
//! recache-token markers of stale-while-revalidate, deletion as
//! invalidation, arithmetic with a CAS check, and storing with "set stale
//! if the CAS is older".
//!
//! **Pins.** memcached keeps a reference to every item an `mg` hit answers
//! with until that reply has been written, and an `incr`/`decr`/`ma` on a
//! referenced item cannot rewrite it in place: it replaces the item (so the
//! value is not space padded, and `ma`'s `T` lands on the old copy and is
//! lost). Replies are written at the same points as memcached's, so the
//! connection clears the pins there; an item freed meanwhile is unpinned.

use super::item::{self, KEY_BINARY, PINNED, STALE, TOKEN_SENT};
use super::{Cache, StoreMode, StoreResult, format_u64};
use crate::numbers::safe_strtoull;
use crate::slab::ChunkRef;

/// What `md` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetaDelete {
    Deleted,
    /// `I`: kept, marked stale, given a new CAS.
    MarkedStale,
    /// `C` did not match.
    CasMismatch,
    NotFound,
}

/// What `ma` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetaDelta {
    /// The new value, the CAS and expiry to report, and the item that a
    /// later `T` changes: None when the value was too long to rewrite in
    /// place (or the item was pinned) and it was replaced -- memcached then
    /// applies `T` to the replaced copy, so the new TTL is lost.
    Value {
        value: u64,
        cas: u64,
        exptime: u32,
        item: Option<ChunkRef>,
    },
    NonNumeric,
    NoMemory,
    NotFound,
    CasMismatch,
}

impl Cache {
    // ----- pins ------------------------------------------------------------

    /// An `mg` reply references `it` until the next write point.
    pub(crate) fn pin(&mut self, it: ChunkRef) {
        if !self.view(it).is(PINNED) {
            item::view_mut(&mut self.slabs.arena, it).add_flag(PINNED);
            self.pins.push(it);
        }
    }

    /// Replies were written: nothing is referenced any more.
    pub(crate) fn unpin_all(&mut self) {
        for i in 0..self.pins.len() {
            let it = self.pins[i];
            item::view_mut(&mut self.slabs.arena, it).clear_flag(PINNED);
        }
        self.pins.clear();
    }

    /// Before `it` is freed.
    pub(super) fn unpin(&mut self, it: ChunkRef) {
        if self.view(it).is(PINNED) {
            self.pins.retain(|&p| p != it);
        }
    }

    pub(super) fn is_pinned(&self, it: ChunkRef) -> bool {
        self.view(it).is(PINNED)
    }

    // ----- mg / me -----------------------------------------------------------

    /// memcached's `do_item_get` for a meta command: a live item, bumped
    /// (marked fetched) when `bump`. Traced at `-vvv`.
    pub(crate) fn meta_find(&mut self, key: &[u8], bump: bool) -> Option<ChunkRef> {
        self.find(key, bump)
    }

    /// `mg`'s delayed bump, once `h` and `l` have been read.
    pub(crate) fn meta_bump(&mut self, it: ChunkRef) {
        self.bump(it);
    }

    /// `mg ... N`: a linked stub with an empty value, no flags, no expiry
    /// (the caller sets it). None when memory cannot be had.
    pub(crate) fn vivify(&mut self, key: &[u8]) -> Option<ChunkRef> {
        let it = self.alloc(key, 0, 0, 0).ok()?;
        self.link(it);
        Some(it)
    }

    /// `ma ... N` on a miss: an item holding `value`, stored as memcached's
    /// `add` does it (looking the key up again first).
    pub(crate) fn vivify_number(&mut self, key: &[u8], value: &[u8]) -> Option<ChunkRef> {
        let it = self.alloc(key, 0, 0, value.len()).ok()?;
        self.value_window_mut(it, 0).copy_from_slice(value);
        if self.find(key, false).is_some() {
            // Cannot happen on one thread: the caller just missed.
            self.free_unlinked(it);
            return None;
        }
        self.link(it);
        Some(it)
    }

    pub(crate) fn set_exptime(&mut self, it: ChunkRef, exptime: u32) {
        item::view_mut(&mut self.slabs.arena, it).set_exptime(exptime);
        self.log_touch(it);
    }

    /// Whether the item's key was stored base64 encoded (`ms ... b`).
    pub(crate) fn key_is_binary(&self, it: ChunkRef) -> bool {
        self.view(it).is(KEY_BINARY)
    }

    pub(crate) fn mark_key_binary(&mut self, it: ChunkRef) {
        item::view_mut(&mut self.slabs.arena, it).add_flag(KEY_BINARY);
    }

    /// Whether a client already holds the recache win for `it`.
    pub(crate) fn token_sent(&self, it: ChunkRef) -> bool {
        self.view(it).is(TOKEN_SENT)
    }

    /// The markers `mg` ends its flags with: (Z, X, W). Z: a win was
    /// already handed out; X: the item is stale; W: this client wins
    /// (`won` from N or R, or a stale item nobody won yet), which marks
    /// the token as sent.
    pub(crate) fn recache_markers(&mut self, it: ChunkRef, won: bool) -> (bool, bool, bool) {
        let v = self.view(it);
        let (sent, stale) = (v.is(TOKEN_SENT), v.is(STALE));
        let win = won || (stale && !sent);
        if win {
            item::view_mut(&mut self.slabs.arena, it).add_flag(TOKEN_SENT);
        }
        (sent, stale, win)
    }

    /// The slab class memcached would report for the item (`ITEM_clsid`),
    /// from its own size formula; large items count in the largest class.
    pub(crate) fn memcached_class(&self, it: ChunkRef) -> u8 {
        let size = self.memcached_size(it);
        match self.slabs.class_for(size) {
            Some(id) if size <= self.slabs.chunk_max() => id,
            _ => self.slabs.largest(),
        }
    }

    /// memcached's `ITEM_ntotal` for the item.
    pub(crate) fn memcached_size(&self, it: ChunkRef) -> usize {
        let v = self.view(it);
        item::memcached_ntotal(
            v.nkey() as usize,
            v.nbytes() as usize,
            v.flags(),
            self.cfg.use_cas,
        )
    }

    // ----- md ----------------------------------------------------------------

    /// `md`: delete, or with `stale` mark stale (then `exptime`, from `T`,
    /// replaces the expiry), in both cases only if `cas` (from `C`)
    /// matches. Counts delete hits; misses are the caller's.
    pub(crate) fn meta_delete(
        &mut self,
        key: &[u8],
        cas: Option<u64>,
        stale: bool,
        exptime: Option<u32>,
    ) -> MetaDelete {
        let Some(it) = self.find(key, false) else {
            return MetaDelete::NotFound;
        };
        if let Some(c) = cas
            && self.view(it).cas() != c
        {
            return MetaDelete::CasMismatch;
        }
        if stale {
            let cas = if self.cfg.use_cas { self.next_cas() } else { 0 };
            let mut v = item::view_mut(&mut self.slabs.arena, it);
            if let Some(e) = exptime {
                v.set_exptime(e);
            }
            v.add_flag(STALE);
            // The next fetch may win the recache.
            v.clear_flag(TOKEN_SENT);
            v.set_cas(cas);
            self.log_put(it);
            return MetaDelete::MarkedStale;
        }
        let c = self.class_of(it) as usize;
        self.stats.classes[c].delete_hits += 1;
        self.unlink(it);
        self.log_delete(key);
        MetaDelete::Deleted
    }

    // ----- ma ----------------------------------------------------------------

    /// memcached's `do_add_delta` with a CAS to compare (0: none), shared by
    /// `incr`/`decr` and `ma`. It reports the CAS and expiry of the result
    /// and which item a following `T` may change. memcached parses the value
    /// with its CRLF after it; the end of the slice reads the same to
    /// `safe_strtoull`.
    pub(crate) fn meta_add_delta(
        &mut self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas_in: u64,
    ) -> MetaDelta {
        let Some(it) = self.find(key, false) else {
            return MetaDelta::NotFound;
        };
        let v = self.view(it);
        let len = v.nbytes() as usize;
        if len == 0 || v.is(item::CHUNKED) || v.xflags() & item::EXT != 0 {
            return MetaDelta::NonNumeric;
        }
        if cas_in != 0 && v.cas() != cas_in {
            return MetaDelta::CasMismatch;
        }
        let (off, flags, exptime) = (v.body_offset(), v.flags(), v.exptime());
        let Some(current) = safe_strtoull(self.slabs.arena.bytes(off, len)) else {
            return MetaDelta::NonNumeric;
        };
        let value = if incr {
            current.wrapping_add(delta)
        } else {
            current.saturating_sub(delta)
        };
        let c = self.class_of(it) as usize;
        if incr {
            self.stats.classes[c].incr_hits += 1;
        } else {
            self.stats.classes[c].decr_hits += 1;
        }
        let mut digits = [0u8; 20];
        let text = format_u64(value, &mut digits);
        if text.len() <= len && !self.is_pinned(it) {
            let cas = if self.cfg.use_cas { self.next_cas() } else { 0 };
            let dst = self.slabs.arena.bytes_mut(off, len);
            dst[..text.len()].copy_from_slice(text);
            dst[text.len()..].fill(b' ');
            item::view_mut(&mut self.slabs.arena, it).set_cas(cas);
            self.update(it);
            self.log_put(it);
            return MetaDelta::Value {
                value,
                cas,
                exptime,
                item: Some(it),
            };
        }
        let new = match self.alloc(key, flags, exptime, text.len()) {
            Ok(new) => new,
            Err(_) => return MetaDelta::NoMemory,
        };
        self.value_window_mut(new, 0).copy_from_slice(text);
        match self.lookup(key, false, false) {
            Some(old) => self.replace(old, new),
            None => self.link(new),
        }
        MetaDelta::Value {
            value,
            cas: self.view(new).cas(),
            exptime,
            item: None,
        }
    }

    // ----- ms ----------------------------------------------------------------

    /// `store` for `ms`: with `stale_ok` (the `I` flag on a CAS store), a
    /// CAS older than the item's still stores, and the new value keeps the
    /// old expiry and is marked stale (keeping a handed-out win). Returns
    /// the result and the new item's CAS (0 when not stored).
    pub(super) fn meta_store_unlogged(
        &mut self,
        it: ChunkRef,
        mode: StoreMode,
        cas_in: u64,
        stale_ok: bool,
    ) -> (StoreResult, u64) {
        let stale_old = if stale_ok && mode == StoreMode::Cas && cas_in != 0 {
            let mut kbuf = [0u8; 256];
            let key = self.key_copy(it, &mut kbuf);
            self.peek(key).filter(|&old| cas_in < self.view(old).cas())
        } else {
            None
        };
        let result = match stale_old {
            Some(_) => {
                let c = self.class_of(it) as usize;
                self.stats.classes[c].set_cmds += 1;
                let mut kbuf = [0u8; 256];
                let key = self.key_copy(it, &mut kbuf);
                // The same lookup `store` would make (and trace).
                let old = self.find(key, false).expect("peeked live item");
                let ov = self.view(old);
                let (exptime, sent) = (ov.exptime(), ov.is(TOKEN_SENT));
                let mut v = item::view_mut(&mut self.slabs.arena, it);
                v.set_exptime(exptime);
                v.add_flag(STALE);
                if sent {
                    v.add_flag(TOKEN_SENT);
                }
                let oc = self.class_of(old) as usize;
                self.stats.classes[oc].cas_hits += 1;
                self.replace(old, it);
                StoreResult::Stored
            }
            None => self.store_unlogged(it, mode, cas_in),
        };
        let cas = if result == StoreResult::Stored && self.cfg.use_cas {
            self.cas_id
        } else {
            0
        };
        (result, cas)
    }

    /// The live item under `key`, without any side effect (no unlinking of
    /// an expired item, no trace).
    pub(crate) fn peek(&self, key: &[u8]) -> Option<ChunkRef> {
        let hv = self.hv(key);
        self.hash
            .find(&self.slabs.arena, key, hv)
            .filter(|&it| !self.is_flushed(it) && !self.is_expired(it))
    }
}
