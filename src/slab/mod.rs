//! Slab allocation inside one preallocated arena.
//!
//! The arena is cut into 1 MB pages. A page is handed to a size class the
//! first time that class runs out of chunks, and then carved into chunks of
//! the class's size. Freed chunks go onto the class's free list. Like
//! memcached, a class may always take its first page even when `-m` is
//! exhausted (so every size stays storable), which is why the open part of
//! the arena has one page of headroom per class; past that, `alloc` fails
//! and the caller must evict or report out of memory.
//!
//! `cache_memlimit` moves the limit as memcached's does: a higher one opens
//! more of the arena's reservation (see `arena`), a lower one stops growth
//! and gives pages in the global pool back to the kernel while more than
//! the limit is handed out (memcached's `memory_release`).
//!
//! A chunk is named by a `ChunkRef`: its arena offset in 8-byte units. Four
//! bytes per reference keeps item headers and the hash table small; it caps
//! the arena at 32 GiB.

pub(crate) mod arena;
pub(crate) mod classes;
pub(crate) mod warm;

use arena::Arena;
use classes::{ClassSize, class_sizes};
use std::io;

/// Arena offset / 8 of a chunk; `NIL` (0) names no chunk, which is why page
/// 0 of the arena is never used.
pub(crate) type ChunkRef = u32;
pub(crate) const NIL: ChunkRef = 0;
const UNIT: usize = 8;
/// The most an arena can address with 32-bit chunk references.
pub(crate) const MAX_ARENA_BYTES: usize = (u32::MAX as usize) * UNIT;

#[derive(Debug, Default)]
pub(crate) struct SlabClass {
    pub(crate) size: usize,
    pub(crate) perslab: usize,
    /// Pages owned by this class.
    pub(crate) pages: usize,
    /// Chunks handed out and not yet freed.
    pub(crate) used_chunks: usize,
    free_head: ChunkRef,
    free_count: usize,
    /// The part of the newest page not yet carved into chunks: carving
    /// lazily means a page costs RSS only as it fills.
    carve_off: usize,
    carve_left: usize,
}

impl SlabClass {
    /// Chunks available without taking another page.
    pub(crate) fn free_chunks(&self) -> usize {
        self.free_count + self.carve_left
    }

    pub(crate) fn total_chunks(&self) -> usize {
        self.pages * self.perslab
    }
}

pub(crate) struct Slabs {
    pub(crate) arena: Arena,
    classes: Vec<SlabClass>,
    page_size: usize,
    /// Owning class of each page (0 = not handed out).
    page_class: Vec<u8>,
    next_page: usize,
    mem_limit: usize,
    mem_malloced: usize,
    /// Pages given back by their class, ready for any class.
    free_pages: Vec<usize>,
    /// The page a move is emptying (see `start_drain`), if any.
    draining: Option<Drain>,
    /// Free chunks of the draining page, not yet walked, that a rescue
    /// took off the free list and set aside (memcached's
    /// `slab_reassign_inline_reclaim`).
    pub(crate) inline_reclaim: u64,
    /// Pages given back to the kernel under a lowered limit: no longer
    /// counted in `mem_malloced`, and taken again before `next_page`.
    returned_pages: Vec<usize>,
    /// memcached's `mem_base`: with `-L` or `-e` the memory is laid out
    /// once, so the limit cannot move and no page goes back.
    preallocated: bool,
}

/// A page being emptied by a move, and how far its walk has come.
#[derive(Clone, Copy, Debug)]
struct Drain {
    page: usize,
    /// Arena offset up to which the walk has looked at every chunk (the
    /// furthest it got, should it go round again).
    walked: usize,
}

impl Drain {
    /// Whether a free chunk at arena offset `off` may be handed out: never
    /// to a rescue (which would move an item into the page it is leaving),
    /// and to a client only ahead of the walk, which will come to the new
    /// item and move it out as it moves the others. Behind the walk it
    /// would stay and be lost with the page.
    #[inline]
    fn withholds(&self, off: usize, page_size: usize, rescue: bool) -> bool {
        off / page_size == self.page && (rescue || off < self.walked)
    }
}

/// What the arena needs to know from the options.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlabConfig {
    pub(crate) mem_limit: usize,
    pub(crate) min_space: usize,
    pub(crate) factor: f64,
    pub(crate) page_size: usize,
    pub(crate) chunk_max: usize,
    /// Bytes counted as handed out before the first page is (memcached's
    /// `T_MEMD_INITIAL_MALLOC` test hook); 0 normally.
    pub(crate) initial_malloced: usize,
    /// `-L` or `-e`: memcached's preallocated memory, whose limit is fixed.
    pub(crate) preallocated: bool,
    /// `-k`: item memory is locked as it is touched.
    pub(crate) lock_memory: bool,
}

impl Slabs {
    pub(crate) fn new(cfg: SlabConfig) -> io::Result<Slabs> {
        let len = Self::arena_len(&cfg)?;
        let reserved = MAX_ARENA_BYTES / cfg.page_size * cfg.page_size;
        let arena = Arena::reserve(len, reserved.max(len), cfg.lock_memory).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("failed to reserve {len} bytes of item memory: {e}"),
            )
        })?;
        Ok(Self::with_arena(cfg, arena))
    }

    /// Bytes of arena `cfg` needs: page 0 is the NIL page; then the -m
    /// budget; then one page per class for the "first page is always
    /// granted" rule.
    pub(crate) fn arena_len(cfg: &SlabConfig) -> io::Result<usize> {
        let nclasses = Self::class_count(cfg);
        Self::pages_for(cfg.mem_limit, cfg.page_size, nclasses)
            .checked_mul(cfg.page_size)
            .filter(|&len| len <= MAX_ARENA_BYTES)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "memory limit too large: this server addresses at most 32 GiB of item memory (-m 32767)",
                )
            })
    }

    /// Pages of arena a limit of `bytes` needs open: the NIL page, the
    /// budget, and a page per class entry.
    fn pages_for(bytes: usize, page_size: usize, nclasses: usize) -> usize {
        1 + bytes.div_ceil(page_size).max(1) + nclasses
    }

    /// How many class entries (including the unused class 0) `cfg` makes.
    pub(crate) fn class_count(cfg: &SlabConfig) -> usize {
        class_sizes(cfg.min_space, cfg.factor, cfg.page_size, cfg.chunk_max).len()
    }

    /// Slabs over an arena of `arena_len(&cfg)` bytes, all of it unused.
    pub(crate) fn with_arena(cfg: SlabConfig, arena: Arena) -> Slabs {
        let sizes = class_sizes(cfg.min_space, cfg.factor, cfg.page_size, cfg.chunk_max);
        let total_pages = arena.len() / cfg.page_size;
        let classes = sizes
            .iter()
            .map(|&ClassSize { size, perslab }| SlabClass {
                size,
                perslab,
                ..SlabClass::default()
            })
            .collect();
        Slabs {
            arena,
            classes,
            page_size: cfg.page_size,
            page_class: vec![0; total_pages],
            next_page: 1,
            mem_limit: cfg.mem_limit,
            mem_malloced: cfg.initial_malloced,
            free_pages: Vec::new(),
            draining: None,
            inline_reclaim: 0,
            returned_pages: Vec::new(),
            preallocated: cfg.preallocated,
        }
    }

    /// The largest class id (its chunks are `slab_chunk_max` bytes).
    pub(crate) fn largest(&self) -> u8 {
        (self.classes.len() - 1) as u8
    }

    /// Size of the largest chunk; values beyond it are chained.
    pub(crate) fn chunk_max(&self) -> usize {
        self.classes.last().unwrap().size
    }

    pub(crate) fn class(&self, id: u8) -> &SlabClass {
        &self.classes[id as usize]
    }

    /// The smallest class whose chunks hold `size` bytes, if any does.
    pub(crate) fn class_for(&self, size: usize) -> Option<u8> {
        if size == 0 || size > self.classes.last().unwrap().size {
            return None;
        }
        // Few classes and a hot path: binary search over the sorted sizes.
        let idx = self.classes[1..].partition_point(|c| c.size < size);
        Some((idx + 1) as u8)
    }

    /// Pages returned to the global pool, free for any class.
    pub(crate) fn free_pages(&self) -> usize {
        self.free_pages.len()
    }

    /// Bytes of pages handed out so far (memcached's `total_malloced`).
    pub(crate) fn malloced(&self) -> usize {
        self.mem_malloced
    }

    /// `cache_memlimit`: pages are handed out up to `bytes` from now on
    /// (memcached's `slabs_adjust_mem_limit`). A higher limit opens more of
    /// the arena; a lower one leaves handed-out pages where they are and
    /// gives back what the global pool holds beyond it. Refused for
    /// preallocated memory (`-L`, `-e`), as in memcached, and past the 32
    /// GiB the chunk references can address.
    pub(crate) fn set_mem_limit(&mut self, bytes: usize) -> bool {
        if self.preallocated {
            return false;
        }
        let pages = Self::pages_for(bytes, self.page_size, self.classes.len());
        if pages > self.page_class.len() {
            let Some(len) = pages.checked_mul(self.page_size) else {
                return false;
            };
            if self.arena.grow(len).is_err() {
                return false;
            }
            self.page_class.resize(pages, 0);
        }
        self.mem_limit = bytes;
        self.memory_release();
        true
    }

    /// memcached's `memory_release`: while more than the limit is handed
    /// out, pages in the global pool go back to the kernel (their memory
    /// was already released when they entered the pool).
    fn memory_release(&mut self) {
        if self.preallocated {
            return;
        }
        while self.mem_malloced > self.mem_limit {
            let Some(page) = self.free_pages.pop() else {
                break;
            };
            self.returned_pages.push(page);
            self.mem_malloced = self.mem_malloced.wrapping_sub(self.page_size);
        }
    }

    /// Byte offset of a chunk in the arena.
    #[inline]
    pub(crate) fn offset(chunk: ChunkRef) -> usize {
        chunk as usize * UNIT
    }

    /// The chunk that starts at byte offset `off` (a multiple of 8).
    #[inline]
    pub(crate) fn chunk_at(off: usize) -> ChunkRef {
        debug_assert_eq!(off % UNIT, 0);
        (off / UNIT) as ChunkRef
    }

    /// The class that owns the page a chunk lies in.
    pub(crate) fn class_of(&self, chunk: ChunkRef) -> u8 {
        self.page_class[Self::offset(chunk) / self.page_size]
    }

    /// A chunk of class `id`, or `None` when the memory limit is reached.
    pub(crate) fn alloc(&mut self, id: u8) -> Option<ChunkRef> {
        if let Some(chunk) = self.pop_free(id, false).0 {
            return Some(chunk);
        }
        let class = &self.classes[id as usize];
        if class.carve_left == 0 && !self.grant_page(id) {
            return None;
        }
        Some(self.carve(id))
    }

    /// A chunk of class `id` for an item a move rescues: only from what the
    /// class already has (its free list, the rest of the page it carves),
    /// never a new page, and never one in the page being emptied.
    pub(crate) fn alloc_rescue(&mut self, id: u8) -> Option<ChunkRef> {
        let (chunk, set_aside) = self.pop_free(id, true);
        self.inline_reclaim += set_aside;
        if chunk.is_some() {
            return chunk;
        }
        (self.classes[id as usize].carve_left > 0).then(|| self.carve(id))
    }

    /// The head of class `id`'s free list, passing over (and setting aside)
    /// the chunks of the page being emptied that it may not have (see
    /// `Drain::withholds`); how many of those were ahead of the walk (the
    /// others the walk has already dealt with, as memcached's mover takes
    /// the free chunks it passes off the free list).
    #[inline]
    fn pop_free(&mut self, id: u8, rescue: bool) -> (Option<ChunkRef>, u64) {
        let mut set_aside = 0;
        loop {
            let class = &mut self.classes[id as usize];
            let chunk = class.free_head;
            if chunk == NIL {
                return (None, set_aside);
            }
            class.free_head = self.arena.read_u32(Self::offset(chunk));
            class.free_count -= 1;
            let off = Self::offset(chunk);
            if let Some(d) = self.draining
                && d.withholds(off, self.page_size, rescue)
            {
                set_aside += u64::from(off >= d.walked);
                continue;
            }
            class.used_chunks += 1;
            return (Some(chunk), set_aside);
        }
    }

    /// The next chunk of the page class `id` is carving (it has one).
    fn carve(&mut self, id: u8) -> ChunkRef {
        let class = &mut self.classes[id as usize];
        let chunk = (class.carve_off / UNIT) as ChunkRef;
        class.carve_off += class.size;
        class.carve_left -= 1;
        class.used_chunks += 1;
        chunk
    }

    /// Returns a chunk to its class's free list.
    pub(crate) fn free(&mut self, chunk: ChunkRef, id: u8) {
        debug_assert_eq!(self.class_of(chunk), id);
        let class = &mut self.classes[id as usize];
        let head = class.free_head;
        class.free_head = chunk;
        class.free_count += 1;
        class.used_chunks -= 1;
        self.arena.write_u32(Self::offset(chunk), head);
    }

    /// Marks a chunk of the page being emptied free without threading it
    /// onto the free list: the page is about to leave the class.
    pub(crate) fn release_draining(&mut self, chunk: ChunkRef, id: u8) {
        debug_assert_eq!(
            self.draining.map(|d| d.page),
            Some(Self::offset(chunk) / self.page_size)
        );
        self.classes[id as usize].used_chunks -= 1;
    }

    // ----- moving pages between classes (`slabs reassign`) -------------

    /// Starts emptying `page` of class `id`, which a move walks over
    /// several loop turns while clients keep allocating. As under
    /// memcached's mover, a client may still be given a free chunk of the
    /// page ahead of the walk (the walk moves its item out when it gets
    /// there): a store that must evict the class's oldest items, which lie
    /// in this page, gets the chunks it frees. Rescues never land in it,
    /// nothing is handed out behind the walk (see `drain_walked`), and
    /// carving stops if it is the page being carved.
    pub(crate) fn start_drain(&mut self, page: usize, id: u8) {
        let class = &mut self.classes[id as usize];
        if class.carve_left > 0 && class.carve_off / self.page_size == page {
            class.carve_left = 0;
        }
        self.draining = Some(Drain {
            page,
            walked: page * self.page_size,
        });
    }

    /// The walk of the draining page has looked at every chunk before
    /// chunk `index` (of class `id`): none of those is handed out again.
    pub(crate) fn drain_walked(&mut self, id: u8, index: usize) {
        let size = self.classes[id as usize].size;
        if let Some(d) = &mut self.draining {
            d.walked = d.walked.max(d.page * self.page_size + index * size);
        }
    }

    /// Gives up emptying `page` of class `id` (a warm shutdown mid-move):
    /// its free chunks, `free` (those the caller found unused), go back on
    /// the free list so that none is lost.
    pub(crate) fn abandon_drain(&mut self, page: usize, id: u8, free: &[ChunkRef]) {
        self.unthread_page(page, id);
        for &c in free {
            let class = &mut self.classes[id as usize];
            let head = class.free_head;
            class.free_head = c;
            class.free_count += 1;
            self.arena.write_u32(Self::offset(c), head);
        }
        self.draining = None;
    }

    /// memcached's `slabs_prefill_global`, done when extstore is on: every
    /// page up to the limit goes to the global pool at start, so page moves
    /// (and its writer's test for a class short of memory) see all of `-m`
    /// as handed out. The pages are not touched: no RSS until used.
    pub(crate) fn prefill_global(&mut self) {
        while self.mem_malloced < self.mem_limit && self.next_page < self.page_class.len() {
            let page = self.next_page;
            self.next_page += 1;
            self.mem_malloced = self.mem_malloced.wrapping_add(self.page_size);
            self.free_pages.push(page);
        }
        // The first pages are handed out first, as from a fresh arena.
        self.free_pages.reverse();
    }

    /// A page from the global pool, if any.
    pub(crate) fn take_pool_page(&mut self) -> Option<usize> {
        self.free_pages.pop()
    }

    /// How many pages the arena has room for.
    pub(crate) fn page_count(&self) -> usize {
        self.page_class.len()
    }

    /// The class that owns `page`, or 0 if none does.
    pub(crate) fn page_owner(&self, page: usize) -> u8 {
        self.page_class[page]
    }

    /// Chunk number `index` of `page`, which belongs to class `id`.
    pub(crate) fn page_chunk(&self, page: usize, id: u8, index: usize) -> ChunkRef {
        let size = self.classes[id as usize].size;
        Self::chunk_at(page * self.page_size + index * size)
    }

    /// The page a move takes from class `id`: its oldest (lowest) page.
    pub(crate) fn first_page(&self, id: u8) -> Option<usize> {
        self.page_class.iter().position(|&c| c == id)
    }

    /// The chunks of `page`, which belongs to class `id`.
    pub(crate) fn page_chunks(
        &self,
        page: usize,
        id: u8,
    ) -> impl Iterator<Item = ChunkRef> + use<> {
        let size = self.classes[id as usize].size;
        let base = page * self.page_size;
        (0..self.classes[id as usize].perslab).map(move |i| ((base + i * size) / UNIT) as ChunkRef)
    }

    /// Takes `page` away from class `src`. Every chunk in it must be free:
    /// they are unthreaded from the free list (and carving stops if the
    /// page is the one being carved).
    pub(crate) fn take_page(&mut self, page: usize, src: u8) {
        self.unthread_page(page, src);
        let class = &mut self.classes[src as usize];
        if class.carve_left > 0 && class.carve_off / self.page_size == page {
            class.carve_left = 0;
        }
        class.pages -= 1;
        self.page_class[page] = 0;
        if self.draining.is_some_and(|d| d.page == page) {
            self.draining = None;
        }
    }

    /// Takes every chunk of `page` off class `src`'s free list.
    fn unthread_page(&mut self, page: usize, src: u8) {
        let page_size = self.page_size;
        let in_page = |c: ChunkRef| Self::offset(c) / page_size == page;
        let class = &self.classes[src as usize];
        let mut kept = Vec::with_capacity(class.free_count);
        let mut c = class.free_head;
        while c != NIL {
            let next = self.arena.read_u32(Self::offset(c));
            if !in_page(c) {
                kept.push(c);
            }
            c = next;
        }
        let class = &mut self.classes[src as usize];
        class.free_count = kept.len();
        class.free_head = NIL;
        for &c in kept.iter().rev() {
            let head = self.classes[src as usize].free_head;
            self.arena.write_u32(Self::offset(c), head);
            self.classes[src as usize].free_head = c;
        }
    }

    /// Gives a page taken with `take_page` to class `dst`, or to the
    /// global pool when `dst` is 0. Its memory is handed back to the
    /// kernel first, so it reads as zeros and costs no RSS until used.
    pub(crate) fn give_page(&mut self, page: usize, dst: u8) {
        self.arena.release(page * self.page_size, self.page_size);
        if dst == 0 {
            self.free_pages.push(page);
            self.memory_release();
            return;
        }
        self.page_class[page] = dst;
        let class = &mut self.classes[dst as usize];
        class.pages += 1;
        if class.carve_left == 0 {
            class.carve_off = page * self.page_size;
            class.carve_left = class.perslab;
            return;
        }
        let chunks: Vec<ChunkRef> = self.page_chunks(page, dst).collect();
        for c in chunks {
            let class = &mut self.classes[dst as usize];
            let head = class.free_head;
            class.free_head = c;
            class.free_count += 1;
            self.arena.write_u32(Self::offset(c), head);
        }
    }

    /// Hands a page to class `id`, following memcached's limit rule.
    fn grant_page(&mut self, id: u8) -> bool {
        let page = if let Some(page) = self.free_pages.pop() {
            page
        } else {
            let class = &self.classes[id as usize];
            // size_t arithmetic, as memcached's: a faked total near the
            // top (T_MEMD_INITIAL_MALLOC) wraps rather than overflows.
            let over = self.mem_malloced.wrapping_add(self.page_size) > self.mem_limit;
            if over && class.pages > 0 {
                return false;
            }
            let page = match self.returned_pages.pop() {
                Some(page) => page,
                None if self.next_page < self.page_class.len() => {
                    self.next_page += 1;
                    self.next_page - 1
                }
                None => return false,
            };
            self.mem_malloced = self.mem_malloced.wrapping_add(self.page_size);
            page
        };
        self.page_class[page] = id;
        let class = &mut self.classes[id as usize];
        class.pages += 1;
        class.carve_off = page * self.page_size;
        class.carve_left = class.perslab;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mb: usize) -> SlabConfig {
        SlabConfig {
            mem_limit: mb << 20,
            min_space: 48,
            factor: 1.25,
            page_size: 1 << 20,
            chunk_max: 512 * 1024,
            initial_malloced: 0,
            preallocated: false,
            lock_memory: false,
        }
    }

    fn slabs(mb: usize) -> Slabs {
        Slabs::new(cfg(mb)).unwrap()
    }

    #[test]
    fn picks_the_smallest_fitting_class() {
        let s = slabs(8);
        assert_eq!(s.class_for(1), Some(1));
        assert_eq!(s.class_for(96), Some(1));
        assert_eq!(s.class_for(97), Some(2));
        assert_eq!(s.class_for(10300), Some(22));
        assert_eq!(s.class_for(512 * 1024), Some(39));
        assert_eq!(s.class_for(512 * 1024 + 1), None);
    }

    #[test]
    fn three_megabytes_hold_282_chunks_of_class_22() {
        // The seed's `-m 3 -M` run: 10 KB values land in 11104-byte chunks,
        // 94 to a page, and the fourth page is refused.
        let mut s = slabs(3);
        let mut n = 0;
        while s.alloc(22).is_some() {
            n += 1;
        }
        assert_eq!(n, 282);
        assert_eq!(s.malloced(), 3 << 20);
    }

    #[test]
    fn first_page_of_a_class_is_granted_past_the_limit() {
        let mut s = slabs(1);
        assert!(s.alloc(1).is_some());
        assert!(s.alloc(5).is_some());
        assert_eq!(s.malloced(), 2 << 20);
    }

    #[test]
    fn a_free_page_moves_to_another_class() {
        let mut s = slabs(2);
        let a = s.alloc(1).unwrap();
        s.free(a, 1);
        let page = s.first_page(1).unwrap();
        s.take_page(page, 1);
        assert_eq!(s.class(1).pages, 0);
        assert_eq!(s.class(1).free_chunks(), 0);
        s.give_page(page, 22);
        assert_eq!(s.class(22).pages, 1);
        let n = std::iter::from_fn(|| s.alloc(22)).take(200).count();
        // One page moved, one more granted under the 2 MB limit.
        assert_eq!(n, 94 * 2);
        assert_eq!(s.malloced(), 2 << 20);
    }

    #[test]
    fn a_raised_limit_opens_more_pages_in_place() {
        let mut s = slabs(3);
        let first = s.alloc(22).unwrap();
        while s.alloc(22).is_some() {}
        assert_eq!(s.malloced(), 3 << 20);
        let base = s.arena.base_address();
        assert!(s.set_mem_limit(8 << 20));
        assert_eq!(s.arena.base_address(), base);
        let more = std::iter::from_fn(|| s.alloc(22)).count();
        assert_eq!(more, 94 * 5, "five more pages of 94 chunks");
        assert_eq!(s.malloced(), 8 << 20);
        assert_eq!(s.class_of(first), 22);
        assert!(!s.set_mem_limit(40 << 30), "past what 32-bit refs address");
        assert!(s.alloc(22).is_none(), "the refused limit left 8 MB");
    }

    #[test]
    fn a_lowered_limit_gives_pooled_pages_back_and_takes_them_again() {
        let mut s = slabs(16);
        let chunks: Vec<_> = std::iter::from_fn(|| s.alloc(22)).take(94 * 10).collect();
        assert_eq!(s.malloced(), 10 << 20);
        assert!(s.set_mem_limit(8 << 20));
        assert_eq!(s.malloced(), 10 << 20, "handed-out pages stay");
        for &c in &chunks[..94] {
            s.free(c, 22);
        }
        let page = s.first_page(22).unwrap();
        s.take_page(page, 22);
        s.give_page(page, 0);
        assert_eq!((s.malloced(), s.free_pages()), (9 << 20, 0), "given back");
        assert!(s.alloc(22).is_none(), "9 MB handed out, limit 8");
        assert!(s.set_mem_limit(16 << 20));
        assert!(s.alloc(22).is_some());
        assert_eq!(
            s.first_page(22),
            Some(page),
            "the page given back is reused"
        );
        assert_eq!(s.malloced(), 10 << 20);
    }

    #[test]
    fn a_preallocated_limit_does_not_move() {
        let mut s = Slabs::new(SlabConfig {
            preallocated: true,
            ..cfg(8)
        })
        .unwrap();
        assert!(!s.set_mem_limit(16 << 20));
        assert!(!s.set_mem_limit(8 << 20));
    }

    #[test]
    fn freed_chunks_are_reused_before_new_pages() {
        let mut s = slabs(4);
        let a = s.alloc(3).unwrap();
        let b = s.alloc(3).unwrap();
        assert_ne!(a, b);
        assert_eq!(s.class_of(a), 3);
        s.free(a, 3);
        assert_eq!(s.alloc(3), Some(a));
        assert_eq!(s.class(3).used_chunks, 2);
    }
}
