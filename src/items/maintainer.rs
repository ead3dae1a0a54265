//! The segmented LRU's rules and memcached's LRU maintainer, on the one
//! thread.
//!
//! memcached 1.6 (`items.c`: `do_item_bump`, `do_item_update`,
//! `lru_pull_tail`, `lru_maintainer_juggle`, `lru_maintainer_thread`)
//! keeps four lists per class (see `lru.rs`) and a background thread that
//! moves items between them: HOT and WARM are capped by a share of the
//! class's bytes and by an age relative to COLD's tail, active items are
//! rescued into WARM, expired ones are reclaimed wherever they reach a
//! tail. Here that thread is a tick the event loop calls between turns: it
//! does what memcached's thread does in one wake-up, each class on its own
//! adaptive schedule (from every millisecond while it has work to once a
//! second when idle), but stops after `TICK_BUDGET` items so no tick holds
//! the clients up for long; a class it did not finish is due again at once.
//!
//! A fetch of an item in COLD marks it active and queues a bump, as
//! memcached's worker threads hand bumps to the maintainer: the move to
//! WARM happens at the next tick (so the hit counts toward COLD, as in
//! memcached), and a full queue drops the bump (`lru_bumps_dropped`).

use super::lru::{self, COLD, HOT, TEMP, WARM};
use super::{Cache, clock, item};
use crate::logger;
use crate::settings::Tuning;
use crate::slab::{ChunkRef, NIL};

/// The LRU knobs the cache obeys, from `-o` and the `lru` command.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LruTuning {
    /// memcached's `lru_maintainer_thread`: the maintainer runs.
    pub(crate) maintainer: bool,
    /// memcached's `lru_segmented`; flat: one list (COLD) per class.
    pub(crate) segmented: bool,
    pub(crate) hot_lru_pct: u32,
    pub(crate) warm_lru_pct: u32,
    pub(crate) hot_max_factor: f64,
    pub(crate) warm_max_factor: f64,
    /// Items whose TTL is at most `temporary_ttl` go to TEMP.
    pub(crate) temp_lru: bool,
    pub(crate) temporary_ttl: u32,
}

impl LruTuning {
    pub(crate) fn from_settings(t: &Tuning) -> LruTuning {
        LruTuning {
            maintainer: t.lru_maintainer,
            segmented: t.lru_segmented,
            // memcached keeps the percentages as C integers: a value
            // `lru tune` took through its unsigned wrap-around stays as
            // wrapped.
            hot_lru_pct: t.hot_lru_pct as u32,
            warm_lru_pct: t.warm_lru_pct as u32,
            hot_max_factor: t.hot_max_factor,
            warm_max_factor: t.warm_max_factor,
            temp_lru: t.temp_lru,
            temporary_ttl: t.temporary_ttl as u32,
        }
    }
}

impl Default for LruTuning {
    fn default() -> Self {
        LruTuning::from_settings(&Tuning::default())
    }
}

/// Items at a tail one pull looks at (memcached's `tries`).
const TAIL_SEARCH: usize = 5;
/// Rounds of pulls one juggle of a class makes at most.
const JUGGLE_ROUNDS: usize = 500;
/// A class's wait between juggles, in microseconds: never below this
/// once it backs off...
const MIN_SLEEP: u64 = 1_000;
/// ...and never above this.
const MAX_SLEEP: u64 = 1_000_000;
/// memcached's per-thread bump buffer holds this many.
const BUMP_QUEUE: usize = 8192;

/// How many bumps ahead `apply_bumps` loads the neighbours it will write:
/// enough to cover a miss with the moves in between, few enough that the
/// lines are still in the L1 cache when their move comes.
const BUMP_PREFETCH: usize = 8;
/// Items one tick may look at: a few hundred microseconds of work at most.
pub(super) const TICK_BUDGET: usize = 2_000;

/// What a pull at a tail may do besides reclaiming and moving.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Pull {
    /// Move or leave live items (the maintainer, or a flat LRU's reclaim).
    Juggle,
    /// Evict the first live item of COLD (an allocation that found no chunk).
    Evict,
}

/// Times are the clock's monotonic microseconds (`Clock::mono_us`), read
/// once per turn: plain integers, compared on every turn.
#[derive(Debug, Default)]
pub(super) struct Maintainer {
    /// Per class: when it is next juggled (0: at once) and its backoff.
    next: Vec<u64>,
    backoff: Vec<u64>,
    /// When the next tick has work (0: at the next turn).
    wake: u64,
    /// When the first class is due to be juggled; a tick before then only
    /// applies the queued bumps.
    classes_due: u64,
    /// When the last tick ran.
    last_tick: u64,
    /// COLD items fetched while active, with their CAS to tell them from a
    /// later item in the same chunk; moved to WARM at the next tick.
    bumps: Vec<(ChunkRef, u64)>,
    pub(super) bumps_dropped: u64,
}

impl Maintainer {
    /// The queue was empty: the tick that applies it comes at most
    /// `MIN_SLEEP` after the last one, as memcached's maintainer thread
    /// sleeps at most that long while it has bumps (not at the next turn:
    /// under load that would be a tick per turn).
    fn first_bump_queued(&mut self) {
        if self.bumps.capacity() == 0 {
            self.bumps.reserve_exact(BUMP_QUEUE);
        }
        self.wake = self.wake.min(self.last_tick + MIN_SLEEP);
    }
}

impl Cache {
    /// memcached's `do_item_bump`: a fetch. Segmented, the first fetch marks
    /// the item fetched and the second active (bumping its time, or in COLD
    /// queueing its move to WARM); flat, a fetch refreshes its place at most
    /// once per `ITEM_UPDATE_INTERVAL`.
    pub(super) fn bump(&mut self, it: ChunkRef) {
        if !self.lru.segmented {
            item::view_mut(&mut self.slabs.arena, it).add_flag(item::FETCHED);
            self.update(it);
            return;
        }
        let now = self.now();
        let h = item::header(&self.slabs.arena, it);
        let (xflags, iflags, lru_id, cas) = (h.xflags(), h.iflags(), h.lru(), h.cas());
        if xflags & item::ACTIVE != 0 {
            return;
        }
        let mut v = item::header_mut(&mut self.slabs.arena, it);
        if iflags & item::FETCHED == 0 {
            v.set_iflags(iflags | item::FETCHED);
            return;
        }
        if lru::segment(lru_id) != COLD {
            v.set_xflags(xflags | item::ACTIVE);
            v.set_time(now);
        } else if self.maint.bumps.len() < BUMP_QUEUE {
            v.set_xflags(xflags | item::ACTIVE);
            if self.maint.bumps.is_empty() {
                self.maint.first_bump_queued();
            }
            self.maint.bumps.push((it, cas));
        } else {
            // memcached sets the flag and takes it back: no trace.
            self.maint.bumps_dropped += 1;
        }
    }

    /// memcached's `do_item_update` (`add` on an existing key, `incr` in
    /// place, a queued bump). Segmented: an active item in COLD moves to
    /// WARM, any other gets its time refreshed. Flat: time and place are
    /// refreshed at most once per `ITEM_UPDATE_INTERVAL`.
    pub(super) fn update(&mut self, it: ChunkRef) {
        let now = self.now();
        let h = item::header(&self.slabs.arena, it);
        let (iflags, lru_id, xflags, time) = (h.iflags(), h.lru(), h.xflags(), h.time());
        if iflags & item::LINKED == 0 {
            return;
        }
        if self.lru.segmented {
            let mut v = item::header_mut(&mut self.slabs.arena, it);
            v.set_time(now);
            if lru::segment(lru_id) == COLD && xflags & item::ACTIVE != 0 {
                v.set_xflags(xflags & !item::ACTIVE);
                self.move_to(it, WARM);
                self.stats.classes[(lru_id & lru::CLASS_MASK) as usize].moves_to_warm += 1;
            }
        } else if time < now.saturating_sub(clock::ITEM_UPDATE_INTERVAL) {
            let idx = lru::index(lru_id);
            item::view_mut(&mut self.slabs.arena, it).set_time(now);
            self.lrus[idx].move_to_head(&mut self.slabs.arena, it);
        }
    }

    /// The list a new item with this expiry enters (memcached's
    /// `do_item_alloc`): TEMP for a short TTL, else HOT, or COLD when flat.
    pub(super) fn entry_segment(&self, exptime: u32) -> u8 {
        if self.lru.temp_lru && exptime.wrapping_sub(self.now()) <= self.lru.temporary_ttl {
            TEMP
        } else if self.lru.segmented {
            HOT
        } else {
            COLD
        }
    }

    /// Moves a linked item to the head of another segment of its class,
    /// keeping its time (memcached's moves do not touch it).
    fn move_to(&mut self, it: ChunkRef, segment: u8) {
        let h = item::header(&self.slabs.arena, it);
        let (nkey, nbytes) = (h.nkey() as usize, h.nbytes() as usize);
        let size = item::memcached_ntotal(nkey, nbytes, h.flags(), self.cfg.use_cas) as u64;
        let from = h.lru();
        let to = (from & lru::CLASS_MASK) | segment;
        let old = &mut self.lrus[lru::index(from)];
        old.detach(&mut self.slabs.arena, it);
        old.bytes -= size;
        let new = &mut self.lrus[lru::index(to)];
        new.push_head_as(&mut self.slabs.arena, it, to);
        new.bytes += size;
    }

    /// memcached's `lru_pull_tail` for segment `seg` of class `id`: reclaims
    /// expired and flushed items at the tail, then deals with the first live
    /// one: HOT and WARM send an active item to WARM (WARM keeps it, at its
    /// head) and one while the segment holds over `limit` bytes (its share
    /// of the class's, `segment_limit`, computed once per juggle) or older
    /// than `max_age` to COLD; COLD evicts it (`Pull::Evict`) or sends it to
    /// WARM if active; TEMP leaves it. Returns how many items it removed or
    /// moved. Each item looked at costs one of `budget`.
    #[inline]
    pub(super) fn pull_tail(
        &mut self,
        id: u8,
        seg: u8,
        limit: u64,
        pull: Pull,
        max_age: u32,
        budget: &mut usize,
    ) -> usize {
        // A juggle pulls at every segment each round, most often at an
        // empty one (HOT, when only gets come): no call for those.
        if self.lrus[lru::index(id | seg)].tail == NIL {
            return 0;
        }
        self.pull_tail_items(id, seg, limit, pull, max_age, budget)
    }

    #[inline(never)]
    fn pull_tail_items(
        &mut self,
        id: u8,
        seg: u8,
        limit: u64,
        pull: Pull,
        max_age: u32,
        budget: &mut usize,
    ) -> usize {
        let lru_id = id | seg;
        let idx = lru::index(lru_id);
        let c = id as usize;
        let now = self.now();
        let mut removed = 0;
        let mut search = self.lrus[idx].tail;
        for _ in 0..TAIL_SEARCH {
            if search == NIL {
                break;
            }
            *budget = budget.saturating_sub(1);
            let h = item::header(&self.slabs.arena, search);
            let next_it = h.prev();
            // The next tail: read at the next pull, its links written by
            // this one's move.
            item::prefetch_links(&self.slabs.arena, next_it);
            let (exp, time, fetched, active) =
                (h.exptime(), h.time(), h.is(item::FETCHED), h.is_active());
            if (exp != 0 && exp < now) || self.is_flushed(search) {
                self.stats.reclaimed += 1;
                self.stats.classes[c].reclaimed += 1;
                if !fetched {
                    self.stats.expired_unfetched += 1;
                    self.stats.classes[c].expired_unfetched += 1;
                }
                self.unlink(search);
                removed += 1;
                search = next_it;
                continue;
            }
            match seg {
                HOT | WARM => {
                    if active {
                        item::view_mut(&mut self.slabs.arena, search).set_active(false);
                        removed += 1;
                        if seg == WARM {
                            self.stats.classes[c].moves_within_lru += 1;
                            self.lrus[idx].move_to_head(&mut self.slabs.arena, search);
                            search = next_it;
                            continue;
                        }
                        self.stats.classes[c].moves_to_warm += 1;
                        self.move_to(search, WARM);
                    } else if self.lrus[idx].bytes > limit || now.wrapping_sub(time) > max_age {
                        self.stats.classes[c].moves_to_cold += 1;
                        self.move_to(search, COLD);
                        removed += 1;
                    }
                }
                // With `-M` nothing is evicted: the allocation fails.
                COLD if pull == Pull::Evict && !self.cfg.evict_to_free => {}
                COLD if pull == Pull::Evict => {
                    self.evict(search, c, exp, time, fetched, active);
                    removed += 1;
                }
                COLD if active && self.lru.segmented => {
                    self.stats.classes[c].moves_to_warm += 1;
                    item::view_mut(&mut self.slabs.arena, search).set_active(false);
                    self.move_to(search, WARM);
                    removed += 1;
                }
                _ => {}
            }
            break;
        }
        removed
    }

    /// HOT's or WARM's share of the class's bytes past which its tail goes
    /// to COLD (HOT's own, or WARM's when HOT's is zero).
    fn segment_limit(&self, seg: u8, total_bytes: u64) -> u64 {
        let share = |pct: u32| total_bytes.wrapping_mul(u64::from(pct)) / 100;
        match seg {
            HOT if share(self.lru.hot_lru_pct) != 0 => share(self.lru.hot_lru_pct),
            _ => share(self.lru.warm_lru_pct),
        }
    }

    fn evict(&mut self, it: ChunkRef, c: usize, exp: u32, time: u32, fetched: bool, active: bool) {
        let cs = &mut self.stats.classes[c];
        cs.evicted += 1;
        cs.evicted_time = self.clock.now.wrapping_sub(time);
        if exp != 0 {
            cs.evicted_nonzero += 1;
        }
        if !fetched {
            cs.evicted_unfetched += 1;
            self.stats.evicted_unfetched += 1;
        }
        if active {
            cs.evicted_active += 1;
        }
        self.stats.evictions += 1;
        if self.logger.wants(logger::EVICTIONS) {
            self.log_eviction(it);
        }
        self.unlink(it);
    }

    /// memcached's `do_item_alloc_pull`: a chunk of class `id`, evicting
    /// from COLD (segmented: pulling HOT's tail down into COLD when COLD is
    /// empty) up to ten times. Flat, every try first reclaims what is
    /// expired or flushed at the tail, even while free chunks remain. The
    /// tries it took count as `direct_reclaims`.
    pub(super) fn alloc_pull(&mut self, id: u8) -> Option<ChunkRef> {
        let mut budget = usize::MAX;
        let mut tries = 0;
        let mut got = None;
        let mut writes = 0;
        while tries < super::ALLOC_TRIES {
            if !self.lru.segmented {
                self.pull_tail(id, COLD, 0, Pull::Juggle, 0, &mut budget);
            }
            // With extstore, a class of values that reaches the global
            // pool's reserve sends its oldest value to flash rather than
            // take a page the headers' classes will need; failing that
            // (every write buffer on its way to disk) it evicts from
            // itself, but for its last try.
            let reserved = tries + 1 < super::ALLOC_TRIES
                && self.cfg.evict_to_free
                && self.ext_pool_reserved(id);
            if reserved && writes < super::ALLOC_TRIES && self.ext_write_for_alloc(id) {
                writes += 1;
            }
            if !reserved || !self.ext_pool_reserved(id) {
                got = self.slabs.alloc(id);
                if got.is_some() {
                    break;
                }
                // A value at COLD's tail goes to flash rather than being
                // evicted, when it can.
                if writes < super::ALLOC_TRIES && self.ext_write_for_alloc(id) {
                    writes += 1;
                    continue;
                }
            }
            if self.pull_tail(id, COLD, 0, Pull::Evict, 0, &mut budget) == 0 {
                if !self.lru.segmented {
                    break;
                }
                self.pull_tail(id, HOT, 0, Pull::Juggle, 0, &mut budget);
            }
            tries += 1;
        }
        self.stats.classes[id as usize].direct_reclaims += tries as u64;
        got
    }

    /// memcached's `lru_maintainer_juggle` for class `id`: reclaims at
    /// TEMP's tail, then pulls HOT, WARM and COLD until none moves anything.
    /// Returns the rounds that did something, and whether it finished
    /// within `budget`.
    fn juggle(&mut self, id: u8, budget: &mut usize) -> (usize, bool) {
        let mut did_moves = 0;
        if self.lru.temp_lru {
            for _ in 0..JUGGLE_ROUNDS {
                if *budget == 0 {
                    return (did_moves, false);
                }
                if self.pull_tail(id, TEMP, 0, Pull::Juggle, 0, budget) == 0 {
                    break;
                }
                did_moves += 1;
            }
        }
        // Flat, HOT and WARM drain into COLD: an age limit of 0.
        let (mut hot_limit, mut warm_limit, mut hot_age, mut warm_age) = (0, 0, 0, 0);
        if self.lru.segmented {
            let cold_age = self.segment_tail_age(id, COLD);
            let total = [HOT, WARM, COLD]
                .iter()
                .map(|&s| self.lrus[lru::index(id | s)].bytes)
                .sum();
            hot_limit = self.segment_limit(HOT, total);
            warm_limit = self.segment_limit(WARM, total);
            hot_age = (f64::from(cold_age) * self.lru.hot_max_factor) as u32;
            warm_age = (f64::from(cold_age) * self.lru.warm_max_factor) as u32;
        }
        // Within a juggle nothing enters HOT, and COLD's tail changes only
        // by what a COLD pull does (moves land at a head; an item landing
        // in an empty COLD is live and inactive): a HOT or COLD pull that
        // did nothing would do nothing again, so it is not repeated.
        let (mut hot_still, mut cold_still) = (false, false);
        for _ in 0..JUGGLE_ROUNDS {
            if *budget == 0 {
                return (did_moves, false);
            }
            let mut more = 0;
            let hot = if hot_still {
                0
            } else {
                self.pull_tail(id, HOT, hot_limit, Pull::Juggle, hot_age, budget)
            };
            hot_still = hot == 0;
            if hot > 0 || self.pull_tail(id, WARM, warm_limit, Pull::Juggle, warm_age, budget) > 0 {
                more += 1;
            }
            if self.lru.segmented && !cold_still {
                let cold = self.pull_tail(id, COLD, 0, Pull::Juggle, 0, budget);
                cold_still = cold == 0;
                more += cold;
            }
            if more == 0 {
                break;
            }
            did_moves += 1;
        }
        (did_moves, true)
    }

    /// Seconds since the item at the tail of segment `seg` of class `id`
    /// was last touched (0 when empty).
    pub(crate) fn segment_tail_age(&self, id: u8, seg: u8) -> u32 {
        let tail = self.lrus[lru::index(id | seg)].tail;
        if tail == NIL {
            return 0;
        }
        self.now().wrapping_sub(self.view(tail).time())
    }

    /// Items in segment `seg` of class `id`.
    pub(crate) fn segment_len(&self, id: u8, seg: u8) -> usize {
        self.lrus[lru::index(id | seg)].len
    }

    /// How long (microseconds) the event loop may sleep at `now` before
    /// the maintainer has work: None when it is off, zero when it has work.
    pub(crate) fn maintainer_timeout(&self, now: u64) -> Option<u64> {
        if !self.lru.maintainer {
            return None;
        }
        Some(self.maint.wake.saturating_sub(now))
    }

    /// One wake-up of memcached's maintainer thread, if one is due: each
    /// class whose time has come is juggled, then the queued bumps are
    /// applied.
    /// `now`: the clock's `mono_us` of this turn.
    pub(crate) fn lru_maintain(&mut self, now: u64) {
        if !self.lru.maintainer || now < self.maint.wake {
            return;
        }
        self.stats.lru_maintainer_juggles += 1;
        self.maint.last_tick = now;
        if now >= self.maint.classes_due {
            self.maint.classes_due = self.juggle_due_classes(now);
        }
        let mut wake = self.maint.classes_due;
        if self.apply_bumps() {
            wake = wake.min(now + MIN_SLEEP);
        }
        self.maint.wake = wake;
    }

    /// Applies the queued bumps at once (a tick, juggling only the classes
    /// that are due): the event loop is about to wait, and would otherwise
    /// wake within `MIN_SLEEP` for them.
    pub(crate) fn lru_apply_bumps_now(&mut self, now: u64) {
        if !self.maint.bumps.is_empty() {
            self.maint.wake = 0;
            self.lru_maintain(now);
        }
    }

    /// Juggles each class whose time has come, then halves its wait if it
    /// did work or grows it by an eighth if not. Returns when the first
    /// class is due again.
    fn juggle_due_classes(&mut self, now: u64) -> u64 {
        let classes = self.slabs.largest() as usize + 1;
        if self.maint.next.len() != classes {
            self.maint.next = vec![0; classes];
            self.maint.backoff = vec![0; classes];
        }
        let mut budget = TICK_BUDGET;
        let mut wake = now + MAX_SLEEP;
        let mut id = 1;
        loop {
            // Most classes are idle, backed off: a scan with no call in it
            // passes them, keeping the earliest time one is due.
            while let Some(&at) = self.maint.next.get(id) {
                if at <= now {
                    break;
                }
                wake = wake.min(at);
                id += 1;
            }
            if id >= classes {
                return wake;
            }
            if budget == 0 {
                return now;
            }
            let (did_moves, finished) = self.juggle(id as u8, &mut budget);
            let backoff = &mut self.maint.backoff[id];
            if !finished {
                *backoff = 0;
            } else if did_moves == 0 {
                *backoff = if *backoff == 0 {
                    MIN_SLEEP
                } else {
                    (*backoff + *backoff / 8).min(MAX_SLEEP)
                };
            } else if *backoff != 0 {
                *backoff /= 2;
                if *backoff < MIN_SLEEP {
                    *backoff = 0;
                }
            }
            let at = now + *backoff;
            self.maint.next[id] = at;
            wake = wake.min(at);
            id += 1;
        }
    }

    /// memcached's `lru_maintainer_bumps`: the queued COLD hits move to
    /// WARM. An entry whose chunk no longer holds that item (deleted,
    /// evicted, moved by the page mover, reused) is dropped.
    fn apply_bumps(&mut self) -> bool {
        if self.maint.bumps.is_empty() {
            return false;
        }
        let mut bumps = std::mem::take(&mut self.maint.bumps);
        let largest = self.slabs.largest();
        for &(it, _) in bumps.iter().take(BUMP_PREFETCH) {
            self.prefetch_neighbours(it);
        }
        for (i, &(it, cas)) in bumps.iter().enumerate() {
            if let Some(&(ahead, _)) = bumps.get(i + BUMP_PREFETCH) {
                self.prefetch_neighbours(ahead);
            }
            // The header test first (a chunk holding a chunked value's bytes
            // reads as anything); the page lookup only for what passes it.
            let h = item::header(&self.slabs.arena, it);
            let linked = item::LINKED | item::ALLOCATED;
            if h.iflags() & linked != linked || h.cas() != cas {
                continue;
            }
            if self.slabs.class_of(it) == largest && self.body_owner(it).is_some() {
                continue;
            }
            self.update(it);
        }
        bumps.clear();
        self.maint.bumps = bumps;
        true
    }

    /// The move of a bumped item out of COLD writes the links of its two
    /// neighbours, random items of a large cache that are rarely in the
    /// CPU's cache: loading them a few bumps ahead overlaps those misses.
    /// The header read here is the bumped item's own, which its fetch
    /// touched moments ago; a chunk reused since only wastes the hint.
    #[inline]
    fn prefetch_neighbours(&self, it: ChunkRef) {
        let h = item::header(&self.slabs.arena, it);
        item::prefetch_links(&self.slabs.arena, h.prev());
        item::prefetch_links(&self.slabs.arena, h.next());
    }

    /// Changes the LRU's knobs (start-up, `lru mode|tune|temp_ttl`).
    pub(crate) fn set_lru_tuning(&mut self, tuning: LruTuning) {
        self.lru = tuning;
        self.maint.wake = 0;
        self.maint.classes_due = 0;
    }

    pub(crate) fn lru_bumps_dropped(&self) -> u64 {
        self.maint.bumps_dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{CacheConfig, StoreMode, StoreResult};

    fn cache(mb: usize, tuning: LruTuning) -> Cache {
        let mut c = Cache::new(CacheConfig::for_tests(mb)).unwrap();
        c.set_lru_tuning(tuning);
        c
    }

    fn segmented() -> LruTuning {
        LruTuning::default()
    }

    fn set_ttl(c: &mut Cache, key: &str, len: usize, exptime: u32) {
        let it = c.alloc(key.as_bytes(), 0, exptime, len).unwrap();
        assert_eq!(c.store(it, StoreMode::Set, 0), StoreResult::Stored);
    }

    fn set(c: &mut Cache, key: &str, len: usize) {
        set_ttl(c, key, len, 0);
    }

    /// The segment `key` is in (its top two `lru` bits).
    fn segment_of(c: &mut Cache, key: &str) -> Option<u8> {
        let it = c.find(key.as_bytes(), false)?;
        Some(lru::segment(c.view(it).lru()))
    }

    fn fetch(c: &mut Cache, key: &str) {
        let it = c.get(key.as_bytes(), None).unwrap();
        c.count_get_hit(it);
    }

    /// Runs maintainer ticks a second apart, so every class is juggled at
    /// each: what the maintainer does given the time.
    fn settle(c: &mut Cache) {
        for _ in 0..100 {
            c.clock.mono_us += MAX_SLEEP;
            c.lru_maintain(c.clock.mono_us);
        }
    }

    fn class_of_key(c: &mut Cache, key: &str) -> usize {
        let it = c.find(key.as_bytes(), false).unwrap();
        c.class_of(it) as usize
    }

    #[test]
    fn new_items_enter_hot_cold_when_flat_temp_when_short_lived() {
        let mut c = cache(8, segmented());
        set(&mut c, "a", 10);
        assert_eq!(segment_of(&mut c, "a"), Some(HOT));
        let now = c.now();
        c.set_lru_tuning(LruTuning {
            temp_lru: true,
            temporary_ttl: 61,
            ..segmented()
        });
        set_ttl(&mut c, "short", 10, now + 61);
        set_ttl(&mut c, "long", 10, now + 62);
        assert_eq!(segment_of(&mut c, "short"), Some(TEMP));
        assert_eq!(segment_of(&mut c, "long"), Some(HOT));
        c.set_lru_tuning(LruTuning {
            segmented: false,
            ..segmented()
        });
        set(&mut c, "flat", 10);
        assert_eq!(segment_of(&mut c, "flat"), Some(COLD));
    }

    #[test]
    fn the_second_fetch_makes_an_item_active_and_the_maintainer_moves_it_to_warm() {
        let mut c = cache(8, segmented());
        set(&mut c, "a", 10);
        for i in 0..9 {
            set(&mut c, &format!("other{i}"), 10);
        }
        fetch(&mut c, "a");
        let it = c.find(b"a", false).unwrap();
        assert!(c.view(it).is(item::FETCHED) && !c.view(it).is_active());
        fetch(&mut c, "a");
        assert!(c.view(it).is_active());
        assert_eq!(segment_of(&mut c, "a"), Some(HOT), "no move on fetch");
        let id = class_of_key(&mut c, "a");
        assert_eq!(c.stats.classes[id].lru_hits, [2, 0, 0, 0]);
        // HOT is over its share: its active tail item is rescued into WARM
        // rather than sent to COLD, and stays (WARM is under its share).
        settle(&mut c);
        assert_eq!(segment_of(&mut c, "a"), Some(WARM));
        assert_eq!(c.stats.classes[id].moves_to_warm, 1);
        assert!(c.stats.lru_maintainer_juggles > 0);
    }

    #[test]
    fn hot_drains_into_cold_and_a_cold_hit_is_bumped_to_warm_at_the_next_tick() {
        let mut c = cache(8, segmented());
        for i in 0..20 {
            set(&mut c, &format!("k{i}"), 100);
        }
        settle(&mut c);
        let id = class_of_key(&mut c, "k0");
        assert!(c.stats.classes[id].moves_to_cold > 0);
        // HOT keeps at most its share of the class's bytes.
        assert!(c.segment_len(id as u8, HOT) <= 20 * 20 / 100);
        assert_eq!(segment_of(&mut c, "k0"), Some(COLD));
        fetch(&mut c, "k0");
        fetch(&mut c, "k0");
        // The hits count toward COLD; the move waits for the maintainer.
        assert_eq!(c.stats.classes[id].lru_hits[2], 2);
        assert_eq!(segment_of(&mut c, "k0"), Some(COLD));
        // Applied by the tick due MIN_SLEEP after the last one, not before.
        let last = c.clock.mono_us;
        assert_eq!(c.maintainer_timeout(last), Some(MIN_SLEEP));
        let warm_before = c.stats.classes[id].moves_to_warm;
        c.lru_maintain(last + MIN_SLEEP - 1);
        assert_eq!(segment_of(&mut c, "k0"), Some(COLD));
        c.lru_maintain(last + MIN_SLEEP);
        assert_eq!(segment_of(&mut c, "k0"), Some(WARM));
        assert_eq!(c.stats.classes[id].moves_to_warm, warm_before + 1);
    }

    #[test]
    fn a_full_bump_queue_drops_the_bump_and_clears_active() {
        let mut c = cache(8, segmented());
        set(&mut c, "a", 10);
        c.set_lru_tuning(LruTuning {
            segmented: false,
            ..segmented()
        });
        let it = c.find(b"a", false).unwrap();
        c.move_to(it, COLD);
        c.set_lru_tuning(segmented());
        c.maint.bumps = vec![(NIL, 0); BUMP_QUEUE];
        fetch(&mut c, "a");
        fetch(&mut c, "a");
        assert_eq!(c.lru_bumps_dropped(), 1);
        assert!(!c.view(it).is_active());
    }

    #[test]
    fn a_stale_queued_bump_is_ignored() {
        let mut c = cache(8, segmented());
        set(&mut c, "a", 10);
        let it = c.find(b"a", false).unwrap();
        c.move_to(it, COLD);
        fetch(&mut c, "a");
        fetch(&mut c, "a");
        assert_eq!(c.maint.bumps.len(), 1);
        // Deleted and its chunk reused by another item in COLD.
        assert!(c.delete(b"a"));
        c.set_lru_tuning(LruTuning {
            segmented: false,
            ..segmented()
        });
        set(&mut c, "b", 10);
        c.set_lru_tuning(segmented());
        let b = c.find(b"b", false).unwrap();
        assert_eq!(b, it, "the chunk was reused");
        item::view_mut(&mut c.slabs.arena, b).set_active(true);
        c.maint.next = vec![MAX_SLEEP; c.slabs.largest() as usize + 1];
        c.lru_maintain(0);
        assert_eq!(segment_of(&mut c, "b"), Some(COLD), "not b's bump");
    }

    /// A cache-aside client: a hit, or a miss and a set.
    fn read_through(c: &mut Cache, key: &str) -> bool {
        match c.get(key.as_bytes(), None) {
            Some(it) => {
                c.count_get_hit(it);
                true
            }
            None => {
                set(c, key, 1000);
                false
            }
        }
    }

    /// The scan-resistance workload in small: 2 MB of 1 KB items (about
    /// 1 700), a hot set of 300 read through after every 100 writes of a
    /// batch of 10 000 one-hit keys. Returns the hot set's misses.
    fn hot_set_misses(tuning: LruTuning) -> usize {
        let mut c = cache(2, tuning);
        let mut misses = 0;
        for i in 0..10_000 {
            set(&mut c, &format!("scan{i}"), 1000);
            if i % 100 == 0 {
                misses += (0..300)
                    .filter(|h| !read_through(&mut c, &format!("hot{h}")))
                    .count();
                settle(&mut c);
            }
        }
        assert!(c.stats.evictions > 5_000);
        let id = class_of_key(&mut c, "scan9999");
        assert_eq!(c.stats.classes[id].evicted, c.stats.evictions);
        misses
    }

    /// Segmented, the hot set reaches WARM and misses only its first read;
    /// flat (within a minute no hit moves an item), the scan keeps pushing
    /// it out.
    #[test]
    fn evictions_come_from_cold_and_keep_the_warm_hot_set() {
        assert_eq!(hot_set_misses(segmented()), 300);
        let flat = LruTuning {
            segmented: false,
            ..segmented()
        };
        assert!(hot_set_misses(flat) > 1_000);
    }

    #[test]
    fn flat_lru_evicts_in_plain_lru_order_and_bumps_once_a_minute() {
        let flat = LruTuning {
            maintainer: false,
            segmented: false,
            ..segmented()
        };
        let mut c = cache(2, flat);
        set(&mut c, "first", 1000);
        set(&mut c, "second", 1000);
        fetch(&mut c, "first");
        // Within ITEM_UPDATE_INTERVAL a fetch does not move the item...
        let it = c.find(b"first", false).unwrap();
        let tail = c.lrus[lru::index(c.view(it).lru())].tail;
        assert_eq!(tail, it);
        // ...after it, it goes to the head.
        c.clock.now += clock::ITEM_UPDATE_INTERVAL + 1;
        fetch(&mut c, "first");
        let tail = c.lrus[lru::index(c.view(it).lru())].tail;
        assert_ne!(tail, it);
        assert_eq!(c.maintainer_timeout(0), None);
        for i in 0..5_000 {
            set(&mut c, &format!("scan{i}"), 1000);
        }
        assert!(c.find(b"first", false).is_none());
    }

    #[test]
    fn temp_items_are_reclaimed_by_the_maintainer_never_evicted() {
        let tuning = LruTuning {
            temp_lru: true,
            temporary_ttl: 61,
            ..segmented()
        };
        let mut c = cache(2, tuning);
        let now = c.now();
        set_ttl(&mut c, "temp", 1000, now + 30);
        for i in 0..5_000 {
            set_ttl(&mut c, &format!("long{i}"), 1000, now + 3600);
        }
        assert_eq!(segment_of(&mut c, "temp"), Some(TEMP));
        c.clock.now += 31;
        settle(&mut c);
        assert!(c.find(b"temp", false).is_none());
        assert_eq!(c.stats.reclaimed, 1);
    }

    #[test]
    fn expired_items_at_a_tail_are_reclaimed_by_the_maintainer() {
        let mut c = cache(8, segmented());
        let now = c.now();
        set_ttl(&mut c, "a", 10, now + 1);
        c.clock.now += 3;
        settle(&mut c);
        assert_eq!(c.stats.reclaimed, 1);
        assert_eq!(c.stats.curr_items, 0);
    }

    #[test]
    fn one_tick_looks_at_a_bounded_number_of_items_then_asks_to_run_again() {
        let mut c = cache(64, segmented());
        for i in 0..20_000 {
            set(&mut c, &format!("k{i}"), 100);
        }
        let id = class_of_key(&mut c, "k0");
        c.lru_maintain(0);
        let moved = c.stats.classes[id].moves_to_cold;
        assert!(moved > 0 && moved as usize <= TICK_BUDGET, "{moved}");
        assert_eq!(c.maintainer_timeout(0), Some(0));
        settle(&mut c);
        assert!(c.stats.classes[id].moves_to_cold > moved);
    }

    #[test]
    fn an_idle_maintainer_backs_off_to_about_a_second() {
        let mut c = cache(8, segmented());
        let mut t = 0;
        let mut gap = 0;
        for _ in 0..200 {
            c.lru_maintain(t);
            gap = c.maintainer_timeout(t).unwrap();
            t += gap;
        }
        assert!(gap > 500_000 && gap <= MAX_SLEEP, "{gap}");
    }
}
