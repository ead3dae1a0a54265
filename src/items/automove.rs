//! `slabs automove 1`: deciding which page to move, as memcached's
//! `slab_automove.c` does.
//!
//! Each check (once a second, or on the next loop turn after a page went
//! to the global pool) records per class a window slot: the age of its
//! oldest item, whether it evicted or ran out of memory ("evicted"), and
//! whether it evicted, ran out or grew ("dirty"). Then, in class order:
//!
//! - a class with more than 2.5 pages of free chunks and no dirty slot in
//!   its window gives a page to the global pool (and the check stops);
//! - otherwise the class with the oldest average age (and more than two
//!   pages) is the source, the youngest that evicted in more than half its
//!   window the destination, moved when the youngest is younger than the
//!   oldest by `slab_automove_ratio` and evicted in this very check.
//!
//! Decisions wait until the window has filled once.

use super::Cache;

/// A class needs more than this many pages to give one to another class.
const MIN_PAGES_FOR_SOURCE: usize = 2;
/// Pages' worth of free chunks past which a class gives a page back.
const MIN_PAGES_FOR_RECLAIM: f64 = 2.5;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    age: u64,
    dirty: bool,
    evicted: bool,
}

/// What a class looked like at the last check.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    evicted: u64,
    outofmemory: u64,
    pages: usize,
}

/// The decision state of `slabs automove 1`.
#[derive(Debug, Default)]
pub(crate) struct Automove {
    window: usize,
    cur: usize,
    /// `window` slots per class, class after class.
    slots: Vec<Slot>,
    seen: Vec<Seen>,
}

impl Cache {
    fn automove_seen(&self, c: usize) -> Seen {
        Seen {
            evicted: self.stats.classes[c].evicted,
            outofmemory: self.stats.classes[c].outofmemory,
            pages: self.slabs.class(c as u8).pages,
        }
    }

    /// One check of `slabs automove 1`: the move to make, if any (a
    /// destination of 0 is the global pool). `window` is
    /// `slab_automove_window`, `ratio` `slab_automove_ratio`.
    pub(crate) fn automove_decide(&mut self, window: usize, ratio: f64) -> Option<(u8, u8)> {
        let window = window.max(1);
        let n = self.slabs.largest() as usize + 1;
        let mut am = std::mem::take(&mut self.automove);
        if am.window != window || am.seen.len() != n {
            // First check (or a new window): the counters so far are the
            // baseline.
            am = Automove {
                window,
                cur: 0,
                slots: vec![Slot::default(); n * window],
                seen: (0..n).map(|c| self.automove_seen(c)).collect(),
            };
        }
        am.cur += 1;
        let decision = self.automove_scan(&mut am, ratio);
        self.automove = am;
        decision
    }

    fn automove_scan(&self, am: &mut Automove, ratio: f64) -> Option<(u8, u8)> {
        let (window, n) = (am.window, am.seen.len());
        let (mut oldest, mut oldest_age) = (None, 0u64);
        let (mut youngest, mut youngest_age, mut youngest_evicting) = (None, u64::MAX, false);
        let mut reclaim = None;
        for c in 1..n {
            let base = c * window;
            let cur = base + am.cur % window;
            am.slots[cur] = Slot::default();
            let (mut age_sum, mut dirty, mut evicted) = (0u64, 0usize, 0usize);
            for s in &am.slots[base..base + window] {
                age_sum += s.age;
                dirty += usize::from(s.dirty);
                evicted += usize::from(s.evicted);
            }
            let now = self.automove_seen(c);
            let before = am.seen[c];
            let slot = &mut am.slots[cur];
            if now.evicted > before.evicted || now.outofmemory > before.outofmemory {
                slot.evicted = true;
                slot.dirty = true;
            }
            if now.pages > before.pages {
                slot.dirty = true;
            }
            slot.age = u64::from(self.lru_tail_age(c as u8));
            let age = age_sum / window as u64;
            let class = self.slabs.class(c as u8);
            let spare = class.perslab as f64 * MIN_PAGES_FOR_RECLAIM;
            if class.free_chunks() as f64 > spare && dirty == 0 {
                reclaim = Some((c as u8, 0));
                break;
            }
            if age > oldest_age && class.pages > MIN_PAGES_FOR_SOURCE {
                (oldest, oldest_age) = (Some(c as u8), age);
            }
            if age < youngest_age && evicted > window / 2 {
                (youngest, youngest_age) = (Some(c as u8), age);
                youngest_evicting = slot.evicted;
            }
        }
        for c in 1..n {
            am.seen[c] = self.automove_seen(c);
        }
        if reclaim.is_some() {
            return reclaim;
        }
        let (src, dst) = (oldest?, youngest?);
        let filled = am.cur > window;
        (filled && youngest_evicting && (youngest_age as f64) < oldest_age as f64 * ratio)
            .then_some((src, dst))
    }
}
