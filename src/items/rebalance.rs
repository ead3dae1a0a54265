//! Moving slab pages between classes: `slabs reassign` and `slabs
//! automove`, so memory follows a workload whose value sizes shift.
//!
//! A move empties the source class's oldest page and gives it to the
//! destination (or, for destination 0, to the global pool, from which any
//! class takes pages before new memory is counted). As memcached's page
//! mover, it walks the page chunk by chunk: a live item is rescued -- its
//! header, or one chunk of a large value, copied into a free chunk of the
//! same class elsewhere, keeping key, value, flags, CAS, expiry and LRU
//! place -- and evicted only when the class has no free chunk
//! (`slab_reassign_evictions_nomem`); an expired or flushed one is just
//! dropped. A rescue is a move in memory, not a write: nothing is told to
//! the change feed (AOF, replication), since nothing a client sees changed.
//!
//! The walk is bounded per loop turn (`STEP_BYTES` of chunks) and runs
//! between requests. Meanwhile (`Slabs::start_drain`) rescues never land in
//! the page, and clients are given its free chunks only ahead of the walk,
//! as under memcached's mover: a store that evicts the class's oldest items
//! (which this page, the class's first, tends to hold) must be able to use
//! the chunks it frees, or it fails with `SERVER_ERROR out of memory`
//! where memcached stores. The walk comes to the new item later and moves
//! it out like the others. An item still being written by a connection, or
//! referenced by an unsent `mg` reply, makes the page busy: the walk goes
//! round again on later turns until it is not.

use super::{Cache, item};
use crate::slab::{ChunkRef, Slabs};

/// Bytes of page walked per loop turn: a 1 MB page takes some sixteen
/// turns, each well under a millisecond.
const STEP_BYTES: usize = 64 * 1024;

/// A page move asked for and not yet done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) src: u8,
    pub(crate) dst: u8,
    /// The page being emptied, once the walk has started.
    page: Option<usize>,
    /// The next chunk of the page to look at.
    pos: usize,
    /// Whether this pass over the page met an item it could not move.
    busy: bool,
    /// The last pass ended busy: the next waits for the loop's next turn
    /// that has something else to do (or its one-second tick) rather than
    /// spinning on a connection that may be slow to finish its item.
    waiting: bool,
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
            page: None,
            pos: 0,
            busy: false,
            waiting: false,
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

    /// Carries the pending move on by one bounded step; true once none is
    /// pending.
    pub(crate) fn rebalance_step(&mut self) -> bool {
        let Some(mut mv) = self.rebalance else {
            return true;
        };
        if mv.src == 0 {
            // From the global pool: no items to move out.
            if let Some(p) = self.slabs.take_pool_page() {
                self.slabs.give_page(p, mv.dst);
            }
            self.finish_move();
            return true;
        }
        let page = match mv.page {
            Some(page) => page,
            None => {
                let Some(page) = self.slabs.first_page(mv.src) else {
                    self.rebalance = None;
                    return true;
                };
                self.slabs.start_drain(page, mv.src);
                mv.page = Some(page);
                page
            }
        };
        let class = self.slabs.class(mv.src);
        let (perslab, size) = (class.perslab, class.size);
        let end = perslab.min(mv.pos + (STEP_BYTES / size).max(1));
        // Before anything below frees a chunk: what this step walks is
        // behind the walk for every allocation from here on.
        self.slabs.drain_walked(mv.src, end);
        for i in mv.pos..end {
            let chunk = self.slabs.page_chunk(page, mv.src, i);
            match self.holder(chunk, mv.src) {
                Holder::Free => {}
                Holder::Busy => {
                    self.stats.slab_reassign_busy_items += 1;
                    mv.busy = true;
                }
                Holder::Item(it) => self.empty_chunk(chunk, it, mv.src),
            }
        }
        mv.pos = end;
        if end < perslab || mv.busy {
            if end == perslab {
                // Round again for what was busy.
                (mv.pos, mv.busy, mv.waiting) = (0, false, true);
            } else {
                mv.waiting = false;
            }
            self.rebalance = Some(mv);
            return false;
        }
        self.slabs.take_page(page, mv.src);
        self.slabs.give_page(page, mv.dst);
        self.finish_move();
        true
    }

    /// Whether a move has work it can do at once (the event loop does not
    /// sleep while it has).
    pub(crate) fn rebalance_pending(&self) -> bool {
        self.rebalance.is_some_and(|m| !m.waiting)
    }

    /// Moves out what `chunk` (of the page being emptied, class `class`)
    /// holds for the linked item `it`: a rescue if the class has a free
    /// chunk, else an eviction; an expired or flushed item is dropped.
    fn empty_chunk(&mut self, chunk: ChunkRef, it: ChunkRef, class: u8) {
        let v = self.view(it);
        let exp = v.exptime();
        if (exp != 0 && exp < self.now()) || self.is_flushed(it) {
            self.unlink(it);
            return;
        }
        let Some(new) = self.slabs.alloc_rescue(class) else {
            self.stats.slab_reassign_evictions_nomem += 1;
            self.unlink(it);
            return;
        };
        if chunk == it {
            self.move_item(it, new, class);
            self.stats.slab_reassign_rescues += 1;
        } else {
            self.move_body(it, chunk, new);
            self.stats.slab_reassign_chunk_rescues += 1;
        }
    }

    /// Copies the item at `old` to the free chunk `new` and puts the copy
    /// in its place everywhere the item is reachable from: its hash chain,
    /// its LRU, its value chunks' owner entries, a crawl standing on it.
    fn move_item(&mut self, old: ChunkRef, new: ChunkRef, class: u8) {
        let size = self.slabs.class(class).size;
        let arena = &mut self.slabs.arena;
        arena.copy_within(Slabs::offset(old), Slabs::offset(new), size);
        let v = self.view(new);
        let (hv, lru, chunked) = (self.hv(v.key()), v.lru(), v.is(item::CHUNKED));
        self.hash.replace(&mut self.slabs.arena, old, new, hv);
        self.lrus[super::lru::index(lru)].replace(&mut self.slabs.arena, old, new);
        if chunked {
            let chunk_max = self.slabs.chunk_max();
            let v = self.view(new);
            let list = v.body_offset();
            let n = (v.nbytes() as usize).div_ceil(chunk_max);
            for i in 0..n {
                let c = self.slabs.arena.read_u32(list + 4 * i);
                self.set_body_owner(c, new);
            }
        }
        self.crawl_moved(old, new);
        item::view_mut(&mut self.slabs.arena, old).set_iflags(0);
        self.slabs.release_draining(old, class);
    }

    /// Copies value chunk `old` of the chunked item `owner` to the free
    /// largest-class chunk `new`, and points the item's chunk list at it.
    fn move_body(&mut self, owner: ChunkRef, old: ChunkRef, new: ChunkRef) {
        let chunk_max = self.slabs.chunk_max();
        let arena = &mut self.slabs.arena;
        arena.copy_within(Slabs::offset(old), Slabs::offset(new), chunk_max);
        let v = self.view(owner);
        let list = v.body_offset();
        let n = (v.nbytes() as usize).div_ceil(chunk_max);
        if let Some(i) = (0..n).find(|&i| self.slabs.arena.read_u32(list + 4 * i) == old) {
            self.slabs.arena.write_u32(list + 4 * i, new);
        }
        self.set_body_owner(new, owner);
        self.clear_body_owner(old);
        // The chunk held raw value bytes where a header keeps its flags.
        self.slabs
            .arena
            .bytes_mut(Slabs::offset(old) + item::IFLAGS_OFFSET, 1)[0] = 0;
        let largest = self.slabs.largest();
        self.slabs.release_draining(old, largest);
    }

    /// A warm shutdown in the middle of a move: the page stays with its
    /// class, its free chunks back on the free list.
    pub(crate) fn abandon_move(&mut self) {
        let Some(Move {
            src,
            page: Some(page),
            ..
        }) = self.rebalance.take()
        else {
            return;
        };
        let free: Vec<ChunkRef> = self
            .slabs
            .page_chunks(page, src)
            .filter(|&c| matches!(self.holder(c, src), Holder::Free))
            .collect();
        self.slabs.abandon_drain(page, src, &free);
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
        let v = self.view(it);
        if v.is(item::LINKED) && !v.is(item::PINNED) {
            Holder::Item(it)
        } else {
            Holder::Busy
        }
    }

    /// One automove check. Mode 1 decides as memcached's
    /// `slab_automove.c` (see `automove.rs`): `window` checks of history,
    /// pages given back to the global pool from classes with many free
    /// chunks, and from the oldest class to the youngest evicting one.
    /// Mode 2 moves a page, from the class whose oldest item is oldest, to
    /// a class as soon as it evicts. Returns whether to check again on the
    /// next turn rather than in a second: as memcached, a class giving a
    /// page back to the pool may have more to give.
    pub(crate) fn automove_tick(&mut self, mode: u8, ratio: f64, window: usize) -> bool {
        match mode {
            1 => {
                let Some((src, dst)) = self.automove_decide(window, ratio) else {
                    return false;
                };
                let moved = self.reassign(src as i32, dst as i32) == Reassign::Ok;
                // memcached logs the moves automove 1 decides (not 2's).
                if moved && self.logger.wants(crate::logger::SYSEVENTS) {
                    self.logger.slab_move(src as i32, dst as i32);
                }
                // Checking each turn is only worth it while a move runs.
                dst == 0 && self.rebalance_pending()
            }
            2 => {
                self.automove_evictions();
                false
            }
            _ => false,
        }
    }

    /// `slabs automove 2`: a class that evicted since the last check takes
    /// a page from the class whose oldest item is oldest.
    fn automove_evictions(&mut self) {
        let n = self.stats.classes.len();
        if self.automove_seen.len() != n {
            self.automove_seen = self.stats.classes.iter().map(|c| c.evicted).collect();
            return;
        }
        let evicting = (1..n as u8)
            .filter(|&c| self.stats.classes[c as usize].evicted > self.automove_seen[c as usize])
            .min_by_key(|&c| self.lru_tail_age(c));
        for (seen, c) in self.automove_seen.iter_mut().zip(&self.stats.classes) {
            *seen = c.evicted;
        }
        let Some(dst) = evicting else {
            return;
        };
        if self.rebalance.is_some() {
            return;
        }
        let src = self.pick_source(dst as i32);
        if src > 0 {
            self.reassign(src, dst as i32);
        }
    }
}
