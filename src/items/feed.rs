//! The mutation feed: every successful change to the cache, from any
//! protocol, as a [`record`] appended to one outgoing
//! buffer, and `apply`, which makes a decoded record happen.
//!
//! **Where records come from.** The hooks sit in `Cache`'s own methods, not
//! in the protocol parsers, so the text, meta and binary protocols all feed
//! it alike: `link` (every new item state: a store of any mode, an
//! append/prepend result, an `incr` that outgrew its item, a vivified stub)
//! and the in-place changes (`incr`/`decr` rewriting a value, `touch`,
//! `gat`, meta `T`, `md ... I`) log a PUT or TOUCH of the resulting state;
//! `delete`, `md` and the removal of a value a failed `set` was meant to
//! replace log a DELETE; `flush_all` logs a FLUSH. Evictions, expiry
//! reclaims and page moves are not logged: they are the cache's own
//! business, and a replayed item that is later evicted again is still a
//! correct cache. Setting the recache-token marker on a fetch is not logged
//! either (it is transient, handed out once per stale value).
//!
//! **Cost when off.** The feed is an `Option`; every hook is one branch on
//! it. When on, the buffer's capacity is kept between loop turns, so
//! logging does not allocate in the steady state.
//!
//! **Consumers.** At the end of each loop turn the reactor
//! (`Reactor::aof_end_turn`) hands [`Cache::feed_bytes`] to the AOF writer
//! -- replication is meant to read it at the same point -- then calls
//! [`Cache::feed_clear`], then releases the replies it held back so that
//! no client hears of a change before its record is written.
//!
//! **apply.** Recovery and a replica apply records with [`Cache::apply`].
//! `to_feed` says whether the applied change is itself logged: recovery
//! replays the file it would be logging into, so it passes false; a replica
//! that keeps its own AOF passes true (and must not forward its feed to
//! other replicas, which is replication's choice, not the cache's).

use super::Cache;
use super::item::{self, KEY_BINARY, LINKED, STALE, TOKEN_SENT};
use crate::persist::record::{self, MF_KEY_BINARY, MF_STALE, MF_TOKEN_SENT, Op, Put, Record};
use crate::slab::{ChunkRef, NIL};

/// The outgoing buffer of encoded records.
#[derive(Debug, Default)]
pub struct Feed {
    buf: Vec<u8>,
    /// Records ever appended (for tests and stats).
    pub records: u64,
}

/// What `apply` did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// A PUT whose absolute expiry has passed: not stored (and any older
    /// value under its key removed).
    Expired,
    /// A PUT that could not be stored: no memory (`-M`) or over `-I`.
    DidNotFit,
}

impl Cache {
    // ----- the feed ----------------------------------------------------------

    /// Starts logging every mutation (AOF or replication on).
    pub fn enable_feed(&mut self) {
        if self.feed.is_none() {
            self.feed = Some(Box::default());
        }
    }

    pub fn feed_enabled(&self) -> bool {
        self.feed.is_some()
    }

    /// Records appended since the last `feed_clear`.
    pub fn feed_bytes(&self) -> &[u8] {
        self.feed.as_ref().map_or(&[], |f| &f.buf)
    }

    pub fn feed_len(&self) -> usize {
        self.feed.as_ref().map_or(0, |f| f.buf.len())
    }

    pub fn feed_clear(&mut self) {
        if let Some(f) = &mut self.feed {
            f.buf.clear();
            // A burst of large values should not pin memory.
            if f.buf.capacity() > 64 << 20 {
                f.buf = Vec::new();
            }
        }
    }

    /// Unix seconds now, as the cache's clock sees it.
    pub fn unix_now(&self) -> u64 {
        self.clock.to_unix(self.now()).max(0) as u64
    }

    /// A relative expiry as a unix time (0 stays "never").
    fn exptime_to_unix(&self, exptime: u32) -> u64 {
        if exptime == 0 {
            0
        } else {
            self.clock.to_unix(exptime).max(1) as u64
        }
    }

    /// A unix expiry as relative time; 1 ("already expired") if it passed.
    fn exptime_from_unix(&self, exptime: u64) -> u32 {
        if exptime == 0 {
            return 0;
        }
        // A record is outside input (a file, a peer): any u64 may come.
        let rel = i64::try_from(exptime)
            .unwrap_or(i64::MAX)
            .saturating_sub(self.clock.process_started);
        rel.clamp(1, u32::MAX as i64) as u32
    }

    /// Logs `it` as it now is.
    pub(super) fn log_put(&mut self, it: ChunkRef) {
        if self.feed.is_none() {
            return;
        }
        let ts = self.unix_now();
        let mut f = self.feed.take().expect("checked above");
        self.encode_item(&mut f.buf, ts, it);
        f.records += 1;
        self.feed = Some(f);
    }

    /// A PUT of `it` at the end of `out` (also used by the AOF rewrite).
    pub fn encode_item(&self, out: &mut Vec<u8>, ts: u64, it: ChunkRef) {
        let v = self.view(it);
        let mut mflags = 0;
        for (bit, mf) in [
            (STALE, MF_STALE),
            (TOKEN_SENT, MF_TOKEN_SENT),
            (KEY_BINARY, MF_KEY_BINARY),
        ] {
            if v.is(bit) {
                mflags |= mf;
            }
        }
        let put = Put {
            flags: v.flags(),
            exptime: self.exptime_to_unix(v.exptime()),
            cas: v.cas(),
            mflags,
            key: v.key(),
            value: &[],
        };
        record::encode_put(out, ts, &put, self.value_segments(it));
    }

    pub(super) fn log_delete(&mut self, key: &[u8]) {
        let ts = self.unix_now();
        if let Some(f) = &mut self.feed {
            record::encode_delete(&mut f.buf, ts, key);
            f.records += 1;
        }
    }

    pub(super) fn log_touch(&mut self, it: ChunkRef) {
        if self.feed.is_none() {
            return;
        }
        let ts = self.unix_now();
        let exptime = self.exptime_to_unix(self.view(it).exptime());
        let mut f = self.feed.take().expect("checked above");
        record::encode_touch(&mut f.buf, ts, self.view(it).key(), exptime);
        f.records += 1;
        self.feed = Some(f);
    }

    pub(super) fn log_flush(&mut self, at_relative: u32) {
        let ts = self.unix_now();
        let at = self.clock.to_unix(at_relative).max(0) as u64;
        if let Some(f) = &mut self.feed {
            record::encode_flush(&mut f.buf, ts, at.max(ts));
            f.records += 1;
        }
    }

    /// The snapshot of a rewrite: a PUT per live item, then the delayed
    /// `flush_all` still to come, if any. Calls `sink` whenever `out` holds
    /// more than `batch` bytes (and once at the end), so memory stays
    /// bounded.
    pub fn snapshot(
        &self,
        out: &mut Vec<u8>,
        batch: usize,
        mut sink: impl FnMut(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<u64> {
        let ts = self.unix_now();
        let mut items = 0;
        for id in 1..=self.slabs.largest() {
            // Oldest first, so a replay links them in their LRU order.
            let mut it = self.lrus[id as usize].tail;
            while it != NIL {
                let v = self.view(it);
                let prev = v.prev();
                if v.is(LINKED) && !self.is_flushed(it) && !self.is_expired(it) {
                    self.encode_item(out, ts, it);
                    items += 1;
                    if out.len() >= batch {
                        sink(out)?;
                    }
                }
                it = prev;
            }
        }
        if let Some(at) = self.pending_flush_at()
            && at > ts
        {
            record::encode_flush(out, ts, at);
        }
        sink(out)?;
        Ok(items)
    }

    /// The unix time of a delayed `flush_all` that has not taken effect.
    fn pending_flush_at(&self) -> Option<u64> {
        let at = self.flush_at?;
        (at > self.now()).then(|| self.clock.to_unix(at).max(0) as u64)
    }

    // ----- apply -------------------------------------------------------------

    /// Makes `rec` happen; logs it to the feed only if `to_feed`.
    ///
    /// Replay is in file order, and the records carry when they happened
    /// (`ts`), which is what a delayed flush needs: a FLUSH whose time has
    /// come removes every item stored by an earlier record, and one still
    /// pending when a record newer than its time arrives takes effect just
    /// before that record. Call [`Cache::apply_finish`] after the last one.
    pub fn apply(&mut self, rec: &Record<'_>, to_feed: bool) -> Applied {
        let feed = if to_feed { None } else { self.feed.take() };
        if let Some(at) = self.replay_flush
            && at <= rec.ts
        {
            self.replay_flush = None;
            self.remove_all();
        }
        let result = match rec.op {
            Op::Put(p) => self.apply_put(&p),
            Op::Delete { key } => {
                if let Some(it) = self.lookup(key, false, false) {
                    self.unlink(it);
                    self.log_delete(key);
                }
                Applied::Done
            }
            Op::Touch { key, exptime } => {
                if let Some(it) = self.lookup(key, false, false) {
                    let rel = self.exptime_from_unix(exptime);
                    item::view_mut(&mut self.slabs.arena, it).set_exptime(rel);
                    self.log_touch(it);
                }
                Applied::Done
            }
            Op::Flush { at } => {
                self.apply_flush(rec.ts, at);
                Applied::Done
            }
        };
        if !to_feed {
            self.feed = feed;
        }
        result
    }

    fn apply_flush(&mut self, ts: u64, at: u64) {
        let now = self.unix_now();
        if at <= ts {
            self.remove_all();
            let rel = self.now();
            self.log_flush(rel);
        } else if at > now {
            // Still in the future: the same cut-off the command set.
            let rel = self.exptime_from_unix(at);
            self.flush_from(rel, true);
        } else {
            // Its time passed while the log was not being replayed: it
            // removes what was stored before `at`, decided record by record.
            self.replay_flush = Some(at);
        }
    }

    /// After the last `apply`: a delayed flush whose time came during the
    /// replay takes effect now.
    pub fn apply_finish(&mut self) {
        if self.replay_flush.take().is_some() {
            self.remove_all();
        }
    }

    fn apply_put(&mut self, p: &Put<'_>) -> Applied {
        if p.exptime != 0 && p.exptime <= self.unix_now() {
            if let Some(old) = self.lookup(p.key, false, false) {
                self.unlink(old);
                self.log_delete(p.key);
            }
            return Applied::Expired;
        }
        let exptime = self.exptime_from_unix(p.exptime);
        let it = match self.alloc(p.key, p.flags, exptime, p.value.len()) {
            Ok(it) => it,
            Err(_) => {
                // As a failed `set` does: the older value goes too.
                if let Some(old) = self.lookup(p.key, false, false) {
                    self.unlink(old);
                    self.log_delete(p.key);
                }
                return Applied::DidNotFit;
            }
        };
        let mut done = 0;
        while done < p.value.len() {
            let window = self.value_window_mut(it, done);
            let n = window.len().min(p.value.len() - done);
            window[..n].copy_from_slice(&p.value[done..done + n]);
            done += n;
        }
        let mut v = item::view_mut(&mut self.slabs.arena, it);
        for (mf, bit) in [
            (MF_STALE, STALE),
            (MF_TOKEN_SENT, TOKEN_SENT),
            (MF_KEY_BINARY, KEY_BINARY),
        ] {
            if p.mflags & mf != 0 {
                v.add_flag(bit);
            }
        }
        let cas = if self.cfg.use_cas && p.cas != 0 {
            self.cas_id = self.cas_id.max(p.cas);
            Some(p.cas)
        } else {
            None
        };
        if let Some(old) = self.lookup(p.key, false, false) {
            self.unlink(old);
        }
        self.link_with(it, cas);
        Applied::Done
    }

    /// Unlinks every item (a replayed immediate `flush_all`).
    fn remove_all(&mut self) {
        for id in 1..=self.slabs.largest() {
            while self.lrus[id as usize].tail != NIL {
                let it = self.lrus[id as usize].tail;
                self.unlink(it);
            }
        }
    }

    /// A live item's value, for tests.
    #[cfg(test)]
    pub(crate) fn value_of(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let it = self.peek(key)?;
        let mut v = Vec::new();
        for s in self.value_segments(it) {
            v.extend_from_slice(s);
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::record::{End, Reader};
    use crate::items::{CacheConfig, StoreMode, StoreResult};

    fn cache(mb: usize, evict: bool) -> Cache {
        Cache::new(CacheConfig {
            evict_to_free: evict,
            hash_expand: false,
            ..CacheConfig::for_tests(mb)
        })
        .unwrap()
    }

    fn set(c: &mut Cache, key: &[u8], value: &[u8], exptime: u32, mode: StoreMode) -> StoreResult {
        let it = c.alloc(key, 5, exptime, value.len()).unwrap();
        let mut done = 0;
        while done < value.len() {
            let w = c.value_window_mut(it, done);
            let n = w.len().min(value.len() - done);
            w[..n].copy_from_slice(&value[done..done + n]);
            done += n;
        }
        c.store(it, mode, 0)
    }

    /// Replays everything `from` logged into a fresh cache.
    fn replay(log: &[u8], into: &mut Cache) {
        let mut r = Reader::new(log, 0);
        loop {
            match r.next_record() {
                Ok(rec) => {
                    into.apply(&rec, false);
                }
                Err(End::Clean) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        into.apply_finish();
    }

    #[test]
    fn nothing_is_logged_while_the_feed_is_off() {
        let mut c = cache(4, true);
        set(&mut c, b"a", b"1", 0, StoreMode::Set);
        assert!(c.feed_bytes().is_empty());
        assert!(!c.feed_enabled());
    }

    #[test]
    fn every_mutation_replays_to_the_same_cache() {
        let mut c = cache(8, true);
        c.enable_feed();
        set(&mut c, b"a", b"hello", 0, StoreMode::Set);
        set(&mut c, b"a", b" world", 0, StoreMode::Append);
        set(&mut c, b"a", b">", 0, StoreMode::Prepend);
        set(&mut c, b"n", b"41", 0, StoreMode::Set);
        c.add_delta(b"n", true, 1);
        c.add_delta(b"n", true, 100); // outgrows the item: replaced
        set(&mut c, b"gone", b"x", 0, StoreMode::Set);
        assert!(c.delete(b"gone"));
        set(&mut c, b"t", b"x", 0, StoreMode::Set);
        let later = c.now() + 1000;
        assert!(c.touch(b"t", later));
        let big = vec![b'z'; 700 << 10]; // chunked
        set(&mut c, b"big", &big, 0, StoreMode::Set);
        assert_eq!(
            set(&mut c, b"a", b"no", 0, StoreMode::Add),
            StoreResult::NotStored
        );
        let log = c.feed_bytes().to_vec();
        let mut r = cache(8, true);
        replay(&log, &mut r);
        for key in [&b"a"[..], b"n", b"t", b"big", b"gone"] {
            assert_eq!(r.value_of(key), c.value_of(key), "{key:?}");
        }
        assert_eq!(r.value_of(b"a").unwrap(), b">hello world");
        assert_eq!(r.value_of(b"n").unwrap(), b"142");
        assert_eq!(r.stats.curr_items, c.stats.curr_items);
        // Compared as unix times: the two caches' relative clocks started
        // at different moments and may be a second apart.
        let (ri, ci) = (r.peek(b"t").unwrap(), c.peek(b"t").unwrap());
        assert_eq!(
            r.clock.to_unix(r.view(ri).exptime()),
            c.clock.to_unix(c.view(ci).exptime())
        );
        let (ra, ca) = (r.peek(b"a").unwrap(), c.peek(b"a").unwrap());
        assert_eq!(r.view(ra).cas(), c.view(ca).cas());
        assert_eq!(r.view(ra).flags(), 5);
    }

    #[test]
    fn applying_without_feed_does_not_log_and_with_feed_does() {
        let mut src = cache(4, true);
        src.enable_feed();
        set(&mut src, b"k", b"v", 0, StoreMode::Set);
        let log = src.feed_bytes().to_vec();
        let mut r = cache(4, true);
        r.enable_feed();
        replay(&log, &mut r);
        assert!(r.feed_bytes().is_empty());
        let rec = Reader::new(&log, 0).next_record().unwrap();
        r.apply(&rec, true);
        assert_eq!(r.feed_bytes(), &log[..]);
    }

    #[test]
    fn expired_items_are_not_resurrected() {
        let mut c = cache(4, true);
        let mut log = Vec::new();
        let now = c.unix_now();
        for (key, exp) in [
            (&b"past"[..], now - 5),
            (b"future", now + 500),
            (b"never", 0),
        ] {
            let put = Put {
                flags: 0,
                exptime: exp,
                cas: 1,
                mflags: 0,
                key,
                value: b"v",
            };
            record::encode_put(&mut log, now - 10, &put, std::iter::once(&b"v"[..]));
        }
        replay(&log, &mut c);
        assert!(c.value_of(b"past").is_none());
        assert!(c.value_of(b"future").is_some());
        assert!(c.value_of(b"never").is_some());
        let it = c.peek(b"future").unwrap();
        let rel = c.view(it).exptime();
        assert!(rel >= c.now() + 495 && rel <= c.now() + 505, "{rel}");
    }

    #[test]
    fn flushes_replay_by_time() {
        let mut c = cache(4, true);
        let now = c.unix_now();
        let mut log = Vec::new();
        let put = |log: &mut Vec<u8>, ts, key: &[u8]| {
            let p = Put {
                flags: 0,
                exptime: 0,
                cas: 0,
                mflags: 0,
                key,
                value: b"v",
            };
            record::encode_put(log, ts, &p, std::iter::once(&b"v"[..]));
        };
        put(&mut log, now - 100, b"before_immediate");
        record::encode_flush(&mut log, now - 90, now - 90);
        put(&mut log, now - 90, b"after_immediate");
        // A flush delayed until now - 50, whose time came long ago.
        record::encode_flush(&mut log, now - 80, now - 50);
        put(&mut log, now - 60, b"before_delayed");
        put(&mut log, now - 40, b"after_delayed");
        // And one still in the future.
        record::encode_flush(&mut log, now - 30, now + 100);
        replay(&log, &mut c);
        assert!(c.value_of(b"before_immediate").is_none());
        assert!(c.value_of(b"after_immediate").is_none());
        assert!(c.value_of(b"before_delayed").is_none());
        assert!(c.value_of(b"after_delayed").is_some());
        assert!(c.pending_flush_at().is_some());
    }

    #[test]
    fn a_put_that_does_not_fit_is_counted_and_removes_the_old_value() {
        let mut c = cache(1, false);
        let big = vec![b'x'; 100_000];
        let mut log = Vec::new();
        for i in 0..40 {
            let key = format!("k{i}");
            let p = Put {
                flags: 0,
                exptime: 0,
                cas: 0,
                mflags: 0,
                key: key.as_bytes(),
                value: &big,
            };
            record::encode_put(&mut log, 1, &p, std::iter::once(&big[..]));
        }
        let mut r = Reader::new(&log, 0);
        let mut missed = 0;
        while let Ok(rec) = r.next_record() {
            if c.apply(&rec, false) == Applied::DidNotFit {
                missed += 1;
            }
        }
        assert!(missed > 0);
        assert_eq!(c.stats.curr_items + missed, 40);
    }

    #[test]
    fn the_snapshot_holds_live_items_only() {
        let mut c = cache(4, true);
        set(&mut c, b"live", b"1", 0, StoreMode::Set);
        set(&mut c, b"dead", b"2", 1, StoreMode::Set);
        let mut out = Vec::new();
        let mut all = Vec::new();
        let n = c
            .snapshot(&mut out, 16, |b| {
                all.extend_from_slice(b);
                b.clear();
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 1);
        let mut r = cache(4, true);
        replay(&all, &mut r);
        assert!(r.value_of(b"live").is_some());
        assert!(r.value_of(b"dead").is_none());
    }
}
