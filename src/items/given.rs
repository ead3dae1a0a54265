//! Changes given from outside the protocols -- a record replayed from the
//! append-only file, a replication peer's write -- made exactly as given:
//! the item with its own CAS and markers, expiry and flush times as unix
//! times. Each is reported to the change sink like any other change (see
//! `changes.rs`), so a replica that keeps its own log logs them too.
//!
//! What to make of a record (its format, whether an older CAS loses, when
//! a replayed delayed flush takes effect) is the caller's business; these
//! are the few cache operations it needs.

use super::changes::Marks;
use super::item::{self, KEY_BINARY, STALE, TOKEN_SENT};
use super::{AllocError, Cache};
use crate::slab::NIL;

/// An item to store as it is (a replayed or replicated PUT).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GivenItem<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) flags: u32,
    /// Unix time, 0 for never.
    pub(crate) exptime: u64,
    /// 0: take a new one, as a store would.
    pub(crate) cas: u64,
    pub(crate) marks: Marks,
    pub(crate) value: &'a [u8],
}

impl Cache {
    /// Stores `given` in place of any item under its key, keeping its CAS
    /// (and moving the CAS counter past it). When it cannot be stored (no
    /// memory under `-M`, over `-I`) nothing changes.
    pub(crate) fn put_given(&mut self, given: &GivenItem<'_>) -> Result<(), AllocError> {
        let exptime = self.exptime_from_unix(given.exptime);
        let it = self.alloc(given.key, given.flags, exptime, given.value.len())?;
        let mut done = 0;
        while done < given.value.len() {
            let window = self.value_window_mut(it, done);
            let n = window.len().min(given.value.len() - done);
            window[..n].copy_from_slice(&given.value[done..done + n]);
            done += n;
        }
        let mut v = item::view_mut(&mut self.slabs.arena, it);
        for (marked, bit) in [
            (given.marks.stale, STALE),
            (given.marks.token_sent, TOKEN_SENT),
            (given.marks.key_binary, KEY_BINARY),
        ] {
            if marked {
                v.add_flag(bit);
            }
        }
        let cas = if self.cfg.use_cas && given.cas != 0 {
            self.cas_id = self.cas_id.max(given.cas);
            Some(given.cas)
        } else {
            None
        };
        if let Some(old) = self.lookup(given.key, false, false) {
            self.unlink(old);
        }
        self.link_with(it, cas);
        Ok(())
    }

    /// Removes the live item under `key`, if any, without counting it as a
    /// client's delete.
    pub(crate) fn discard(&mut self, key: &[u8]) {
        if let Some(it) = self.lookup(key, false, false) {
            self.unlink(it);
            self.log_delete(key);
        }
    }

    /// A new expiry (unix time, 0 for never) for the live item under `key`.
    pub(crate) fn touch_given(&mut self, key: &[u8], exptime: u64) {
        if let Some(it) = self.lookup(key, false, false) {
            let rel = self.exptime_from_unix(exptime);
            item::view_mut(&mut self.slabs.arena, it).set_exptime(rel);
            self.log_touch(it);
        }
    }

    /// Recovery's TOUCH: sets the expiry of the item under `key` even if
    /// it had expired when its PUT was replayed (the TOUCH, made while it
    /// was live, is what kept it). A flushed item stays dead.
    pub(crate) fn touch_given_even_expired(&mut self, key: &[u8], exptime: u64) {
        let hv = self.hv(key);
        let Some(it) = self.hash.find(&self.slabs.arena, key, hv) else {
            return;
        };
        if self.is_flushed(it) {
            return;
        }
        let rel = self.exptime_from_unix(exptime);
        item::view_mut(&mut self.slabs.arena, it).set_exptime(rel);
        self.log_touch(it);
    }

    /// Unlinks the item under `key` if it is expired or flushed, counting
    /// nothing: no client asked for it (recovery's leftover expired PUTs).
    pub(crate) fn discard_if_dead(&mut self, key: &[u8]) {
        let hv = self.hv(key);
        if let Some(it) = self.hash.find(&self.slabs.arena, key, hv)
            && (self.is_expired(it) || self.is_flushed(it))
        {
            self.unlink(it);
        }
    }

    /// An immediate `flush_all`: every item goes now.
    pub(crate) fn flush_given_now(&mut self) {
        self.remove_all();
        let rel = self.now();
        self.log_flush(rel);
    }

    /// A delayed `flush_all` taking effect at unix time `at`, still to
    /// come: the same cut-off the command sets.
    pub(crate) fn flush_given_at(&mut self, at: u64) {
        let rel = self.exptime_from_unix(at);
        self.flush_from(rel, true);
    }

    /// Unlinks every item, reporting nothing (a replayed delayed flush
    /// whose time came).
    pub(crate) fn remove_all(&mut self) {
        for list in 0..self.lrus.len() {
            while self.lrus[list].tail != NIL {
                let it = self.lrus[list].tail;
                self.unlink(it);
            }
        }
    }
}
