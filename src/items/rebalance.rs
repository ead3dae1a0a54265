//! Moving slab pages between classes: `slabs reassign` and `slabs
//! automove`, so memory follows a workload whose value sizes shift.
//!
//! A move empties the source class's oldest page and gives it to the
//! destination (or, for destination 0, to the global pool). Items in the
//! page are evicted -- the whole item, for a chunk that holds part of a
//! large value -- unless one is still being written by a connection, in
//! which case the move waits and is retried on a later loop turn. Everything
//! happens between requests, so no reference to an item is outstanding.

use super::{Cache, item};
use crate::slab::ChunkRef;

/// A page move asked for and not yet done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) src: u8,
    pub(crate) dst: u8,
}

/// memcached's answers to `slabs reassign`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reassign {
    Ok,
    Running,
    BadClass,
    NoSpare,
    Same,
}

impl Reassign {
    pub(crate) fn reply(self) -> &'static str {
        match self {
            Reassign::Ok => "OK",
            Reassign::Running => "BUSY currently processing reassign request",
            Reassign::BadClass => "BADCLASS invalid src or dst class id",
            Reassign::NoSpare => "NOSPARE source class has no spare pages",
            Reassign::Same => "SAME src and dst class are identical",
        }
    }
}

/// What a chunk of a page being emptied holds.
enum Holder {
    Free,
    /// A linked item (for a value chunk: the item it belongs to).
    Item(ChunkRef),
    /// An item still being written: the page cannot be emptied yet.
    Busy,
}

impl Cache {
    /// `slabs reassign <src> <dst>` (src -1: any class with a spare page;
    /// dst 0: the global pool). The move itself runs on the next turn.
    pub(crate) fn reassign(&mut self, src: i32, dst: i32) -> Reassign {
        if self.rebalance.is_some() {
            return Reassign::Running;
        }
        if src == dst {
            return Reassign::Same;
        }
        let largest = self.slabs.largest() as i32;
        let src = if src == -1 {
            self.pick_source(dst)
        } else {
            src
        };
        if !(0..=largest).contains(&src) || !(0..=largest).contains(&dst) {
            return Reassign::BadClass;
        }
        let pages = if src == 0 {
            self.slabs.free_pages()
        } else {
            self.slabs.class(src as u8).pages
        };
        if pages < 2 {
            return Reassign::NoSpare;
        }
        self.rebalance = Some(Move {
            src: src as u8,
            dst: dst as u8,
        });
        Reassign::Ok
    }

    /// The class a page is best taken from for `dst`: among those with a
    /// spare page, the one whose oldest item is oldest.
    fn pick_source(&self, dst: i32) -> i32 {
        (1..=self.slabs.largest())
            .filter(|&c| c as i32 != dst && self.slabs.class(c).pages >= 2)
            .max_by_key(|&c| self.lru_tail_age(c))
            .map_or(-1, |c| c as i32)
    }

    /// Tries to carry out the pending move; true once none is pending.
    pub(crate) fn rebalance_step(&mut self) -> bool {
        let Some(Move { src, dst }) = self.rebalance else {
            return true;
        };
        if src == 0 {
            // From the global pool: no items to move out.
            if let Some(p) = self.slabs.take_pool_page() {
                self.slabs.give_page(p, dst);
            }
            self.finish_move();
            return true;
        }
        let Some(page) = self.slabs.first_page(src) else {
            self.rebalance = None;
            return true;
        };
        let holders: Vec<Holder> = self
            .slabs
            .page_chunks(page, src)
            .map(|c| self.holder(c, src))
            .collect();
        if holders.iter().any(|h| matches!(h, Holder::Busy)) {
            self.stats.slab_reassign_busy_items += 1;
            return false;
        }
        for h in holders {
            if let Holder::Item(it) = h {
                // A large item may own several chunks of the page: only the
                // first sighting unlinks it.
                if self.view(it).is(item::LINKED) {
                    self.stats.slab_reassign_evictions_nomem += 1;
                    self.unlink(it);
                }
            }
        }
        self.slabs.take_page(page, src);
        self.slabs.give_page(page, dst);
        self.finish_move();
        true
    }

    fn finish_move(&mut self) {
        self.stats.slabs_moved += 1;
        self.rebalance = None;
    }

    fn holder(&self, chunk: ChunkRef, class: u8) -> Holder {
        let owner = if class == self.slabs.largest() {
            self.body_owner(chunk)
        } else {
            None
        };
        let it = match owner {
            Some(owner) => owner,
            None => {
                if !self.view(chunk).is(item::ALLOCATED) {
                    return Holder::Free;
                }
                chunk
            }
        };
        if self.view(it).is(item::LINKED) {
            Holder::Item(it)
        } else {
            Holder::Busy
        }
    }

    /// `slabs automove` 1: once a second, give a class that is evicting a
    /// page from the class whose oldest item is oldest (and older than the
    /// evicting class's, by the `slab_automove_ratio` margin). With 2, any
    /// eviction asks for a page at once. Returns whether a move was queued.
    pub(crate) fn automove_tick(&mut self, mode: u8, ratio: f64) -> bool {
        let n = self.stats.classes.len();
        if self.automove_seen.len() != n {
            self.automove_seen = self.stats.classes.iter().map(|c| c.evicted).collect();
            return false;
        }
        let evicting: Vec<u8> = (1..n as u8)
            .filter(|&c| self.stats.classes[c as usize].evicted > self.automove_seen[c as usize])
            .collect();
        for (seen, c) in self.automove_seen.iter_mut().zip(&self.stats.classes) {
            *seen = c.evicted;
        }
        if mode == 0 || self.rebalance.is_some() {
            return false;
        }
        let Some(&dst) = evicting.iter().min_by_key(|&&c| self.lru_tail_age(c)) else {
            return false;
        };
        let src = self.pick_source(dst as i32);
        if src <= 0 {
            return false;
        }
        let (src_age, dst_age) = (self.lru_tail_age(src as u8), self.lru_tail_age(dst));
        if mode == 1 && (src_age as f64) * ratio <= dst_age as f64 {
            return false;
        }
        let moved = self.reassign(src, dst as i32) == Reassign::Ok;
        // memcached logs the moves automove 1 decides (not 2's).
        if moved && mode == 1 && self.logger.wants(crate::logger::SYSEVENTS) {
            self.logger.slab_move(src, dst as i32);
        }
        moved
    }
}
