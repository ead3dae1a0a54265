//! Replay: makes a decoded [`record`] happen to the cache -- recovery at
//! start, and a replica applying what its peer sends.
//!
//! Replay is in file (or stream) order, and the records carry when they
//! happened (`ts`), which is what a delayed flush needs: a FLUSH whose time
//! has come removes every item stored by an earlier record, and one still
//! pending when a record newer than its time arrives takes effect just
//! before that record. That pending flush is the only state a replay keeps
//! between records, so each consumer (a recovery, a replication node) has
//! its own [`Replay`].
//!
//! `to_feed` says whether the applied change is itself logged: recovery
//! replays the file it would be logging into, so it passes false; a replica
//! that keeps its own AOF passes true (and must not forward its feed to
//! other replicas, which is replication's choice, not the cache's). A change
//! fed that way is marked as given, not this node's own: a delete is not
//! one of its tombstones (see `mutations.rs`).

use super::mutations;
use super::record::{Op, Put, Record};
use crate::items::{Cache, GivenItem};

/// What `apply` did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    Done,
    /// A PUT whose absolute expiry has passed: not stored (and any older
    /// value under its key removed).
    Expired,
    /// A PUT that could not be stored: no memory (`-M`) or over `-I`.
    DidNotFit,
}

/// A replay in progress.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// A replayed delayed flush whose time has passed, not yet applied.
    pending_flush: Option<u64>,
    /// Recovery only: the keys of PUTs that had expired by the time they
    /// were replayed, stored anyway (dead to every reader) because a later
    /// TOUCH may have extended them -- `set k 0 1` then `touch k 1000`,
    /// replayed two seconds later, must give back `k`. [`Replay::finish`]
    /// removes those no TOUCH brought back. `None`: expired PUTs are
    /// dropped at once (a replica's stream, which comes as it happens).
    ghosts: Option<Vec<Vec<u8>>>,
}

impl Replay {
    /// A replay of a whole file at start: expired PUTs are kept until
    /// [`Replay::finish`] in case a later TOUCH extended them.
    pub(crate) fn recovery() -> Replay {
        Replay {
            pending_flush: None,
            ghosts: Some(Vec::new()),
        }
    }

    /// Makes `rec` happen; logs it to the feed only if `to_feed`. Call
    /// [`Replay::finish`] after the last one.
    pub(crate) fn apply(&mut self, cache: &mut Cache, rec: &Record<'_>, to_feed: bool) -> Applied {
        let feed = if to_feed {
            mutations::set_given(cache, true);
            None
        } else {
            cache.take_change_sink()
        };
        if let Some(at) = self.pending_flush
            && at <= rec.ts
        {
            self.pending_flush = None;
            cache.remove_all();
        }
        let result = match rec.op {
            Op::Put(p) => self.apply_put(cache, &p),
            Op::Delete { key, .. } => {
                cache.discard(key);
                Applied::Done
            }
            Op::Touch { key, exptime } => {
                if self.ghosts.is_some() {
                    cache.touch_given_even_expired(key, exptime);
                } else {
                    cache.touch_given(key, exptime);
                }
                Applied::Done
            }
            Op::Flush { at } => {
                self.apply_flush(cache, rec.ts, at);
                Applied::Done
            }
        };
        match feed {
            Some(feed) => cache.set_change_sink(feed),
            None => {
                mutations::set_given(cache, false);
                mutations::catch_up(cache);
            }
        }
        result
    }

    fn apply_flush(&mut self, cache: &mut Cache, ts: u64, at: u64) {
        let now = cache.unix_now();
        if at <= ts {
            cache.flush_given_now();
        } else if at > now {
            // Still in the future: the same cut-off the command set.
            cache.flush_given_at(at);
        } else {
            // Its time passed while the log was not being replayed: it
            // removes what was stored before `at`, decided record by record.
            self.pending_flush = Some(at);
        }
    }

    /// After the last `apply`: a delayed flush whose time came during the
    /// replay takes effect now.
    /// Expired PUTs that no TOUCH brought back go too.
    pub(crate) fn finish(&mut self, cache: &mut Cache) {
        if self.pending_flush.take().is_some() {
            cache.remove_all();
        }
        for key in self.ghosts.iter_mut().flat_map(std::mem::take) {
            cache.discard_if_dead(&key);
        }
    }

    /// Forgets a pending flush (the cache was wiped for a full copy).
    pub(crate) fn reset(&mut self) {
        self.pending_flush = None;
    }
}

impl Replay {
    fn apply_put(&mut self, cache: &mut Cache, p: &Put<'_>) -> Applied {
        let expired = p.exptime != 0 && p.exptime <= cache.unix_now();
        if expired && self.ghosts.is_none() {
            cache.discard(p.key);
            return Applied::Expired;
        }
        let given = GivenItem {
            key: p.key,
            flags: p.flags,
            exptime: p.exptime,
            cas: p.cas,
            marks: mutations::marks(p.mflags),
            value: p.value,
        };
        match cache.put_given(&given) {
            Ok(()) if expired => {
                if let Some(ghosts) = &mut self.ghosts {
                    ghosts.push(p.key.to_vec());
                }
                Applied::Expired
            }
            Ok(()) => Applied::Done,
            Err(_) => {
                // As a failed `set` does: the older value goes too.
                cache.discard(p.key);
                Applied::DidNotFit
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{CacheConfig, StoreMode, StoreResult};
    use crate::persist::record::{self, End, Reader};
    use crate::persist::snapshot;

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
        let mut replay = Replay::default();
        let mut r = Reader::new(log, 0);
        loop {
            match r.next_record() {
                Ok(rec) => {
                    replay.apply(into, &rec, false);
                }
                Err(End::Clean) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        replay.finish(into);
    }

    /// A live item's value.
    fn value_of(c: &Cache, key: &[u8]) -> Option<Vec<u8>> {
        let it = c.peek(key)?;
        Some(c.value_segments(it).flatten().copied().collect())
    }

    #[test]
    fn every_mutation_replays_to_the_same_cache() {
        let mut c = cache(8, true);
        mutations::enable(&mut c);
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
        let log = mutations::bytes(&c).to_vec();
        let mut r = cache(8, true);
        replay(&log, &mut r);
        for key in [&b"a"[..], b"n", b"t", b"big", b"gone"] {
            assert_eq!(value_of(&r, key), value_of(&c, key), "{key:?}");
        }
        assert_eq!(value_of(&r, b"a").unwrap(), b">hello world");
        assert_eq!(value_of(&r, b"n").unwrap(), b"142");
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
        mutations::enable(&mut src);
        set(&mut src, b"k", b"v", 0, StoreMode::Set);
        let log = mutations::bytes(&src).to_vec();
        let mut r = cache(4, true);
        mutations::enable(&mut r);
        replay(&log, &mut r);
        assert!(mutations::bytes(&r).is_empty());
        let rec = Reader::new(&log, 0).next_record().unwrap();
        Replay::default().apply(&mut r, &rec, true);
        assert_eq!(mutations::bytes(&r), &log[..]);
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
        assert!(value_of(&c, b"past").is_none());
        assert!(value_of(&c, b"future").is_some());
        assert!(value_of(&c, b"never").is_some());
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
        assert!(value_of(&c, b"before_immediate").is_none());
        assert!(value_of(&c, b"after_immediate").is_none());
        assert!(value_of(&c, b"before_delayed").is_none());
        assert!(value_of(&c, b"after_delayed").is_some());
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
        let mut replay = Replay::default();
        let mut missed = 0;
        while let Ok(rec) = r.next_record() {
            if replay.apply(&mut c, &rec, false) == Applied::DidNotFit {
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
        let n = snapshot::rewrite(&c, &mut out, 16, |b| {
            all.extend_from_slice(b);
            b.clear();
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
        let mut r = cache(4, true);
        replay(&all, &mut r);
        assert!(value_of(&r, b"live").is_some());
        assert!(value_of(&r, b"dead").is_none());
    }

    #[test]
    fn recovery_keeps_an_expired_put_that_a_later_touch_extended() {
        let mut c = cache(4, true);
        let now = c.unix_now();
        let mut log = Vec::new();
        // `set k 0 1` ten seconds ago, `touch k 1000` right after; `gone`
        // expired with nothing to extend it; `ended` was touched to a time
        // that has passed too.
        for key in [&b"k"[..], b"gone", b"ended"] {
            let put = Put {
                flags: 0,
                exptime: now - 9,
                cas: 1,
                mflags: 0,
                key,
                value: b"v",
            };
            record::encode_put(&mut log, now - 10, &put, std::iter::once(&b"v"[..]));
        }
        record::encode_touch(&mut log, now - 10, b"k", now + 990);
        record::encode_touch(&mut log, now - 10, b"ended", now - 2);
        let items_before = c.stats.curr_items;
        let mut replay = Replay::recovery();
        let mut r = Reader::new(&log, 0);
        while let Ok(rec) = r.next_record() {
            replay.apply(&mut c, &rec, false);
        }
        replay.finish(&mut c);
        assert_eq!(value_of(&c, b"k").as_deref(), Some(&b"v"[..]));
        assert!(c.peek(b"gone").is_none());
        assert!(c.peek(b"ended").is_none());
        assert_eq!(c.stats.curr_items, items_before + 1);
        // A replica's stream drops an expired PUT at once: its TOUCH finds
        // nothing, as before.
        let mut d = cache(4, true);
        replay_without_ghosts(&log, &mut d);
        assert!(d.peek(b"k").is_none());
    }

    fn replay_without_ghosts(log: &[u8], into: &mut Cache) {
        let mut replay = Replay::default();
        let mut r = Reader::new(log, 0);
        while let Ok(rec) = r.next_record() {
            replay.apply(into, &rec, false);
        }
        replay.finish(into);
    }
}
