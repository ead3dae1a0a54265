//! The allocator's bookkeeping as plain data, so a warm restart (`-e`) can
//! put it back over an arena that kept its bytes.
//!
//! Free lists are threaded through the free chunks themselves, so they are
//! already in the arena; what lives only in this process is which class
//! owns each page, each class's counters and carving position, and the
//! global page pool. That is all `SlabState` holds.
//!
//! The tables are the allocator's own (taking them and putting them back
//! needs every private field), so they are made here; the file they are
//! saved in is `crate::persist::warm`'s business.

use super::{ChunkRef, Slabs, UNIT};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClassState {
    pub(crate) pages: usize,
    pub(crate) used_chunks: usize,
    pub(crate) free_head: ChunkRef,
    pub(crate) free_count: usize,
    pub(crate) carve_off: usize,
    pub(crate) carve_left: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlabState {
    pub(crate) next_page: usize,
    pub(crate) malloced: usize,
    pub(crate) free_pages: Vec<usize>,
    /// Owning class of each page, 0 for none.
    pub(crate) page_class: Vec<u8>,
    /// Indexed by class id (entry 0 unused).
    pub(crate) classes: Vec<ClassState>,
}

impl Slabs {
    pub(crate) fn state(&self) -> SlabState {
        SlabState {
            next_page: self.next_page,
            malloced: self.mem_malloced,
            free_pages: self.free_pages.clone(),
            page_class: self.page_class.clone(),
            classes: self
                .classes
                .iter()
                .map(|c| ClassState {
                    pages: c.pages,
                    used_chunks: c.used_chunks,
                    free_head: c.free_head,
                    free_count: c.free_count,
                    carve_off: c.carve_off,
                    carve_left: c.carve_left,
                })
                .collect(),
        }
    }

    /// Puts back a state saved by a process with the same configuration;
    /// refuses one that cannot belong to this arena (then nothing changed).
    pub(crate) fn restore(&mut self, state: &SlabState) -> Result<(), &'static str> {
        let pages = self.page_class.len();
        let fits = state.page_class.len() == pages
            && state.classes.len() == self.classes.len()
            && (1..=pages).contains(&state.next_page)
            && state.free_pages.iter().all(|&p| (1..pages).contains(&p))
            && state
                .page_class
                .iter()
                .all(|&c| (c as usize) < self.classes.len())
            && state.classes.iter().all(|c| {
                c.carve_off <= self.arena.len() && Slabs::offset(c.free_head) < self.arena.len()
            });
        if !fits {
            return Err("slab state does not fit this arena");
        }
        self.next_page = state.next_page;
        self.mem_malloced = state.malloced;
        self.free_pages = state.free_pages.clone();
        self.page_class = state.page_class.clone();
        for (class, saved) in self.classes.iter_mut().zip(&state.classes) {
            class.pages = saved.pages;
            class.used_chunks = saved.used_chunks;
            class.free_head = saved.free_head;
            class.free_count = saved.free_count;
            class.carve_off = saved.carve_off;
            class.carve_left = saved.carve_left;
        }
        Ok(())
    }

    /// Every page handed to a class, with its class.
    pub(crate) fn owned_pages(&self) -> impl Iterator<Item = (usize, u8)> + '_ {
        self.page_class
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c != 0)
            .map(|(page, &c)| (page, c))
    }

    /// The chunks of `page` (owned by class `id`) that were ever carved:
    /// all of them, except in the page the class is still carving.
    pub(crate) fn carved_chunks(
        &self,
        page: usize,
        id: u8,
    ) -> impl Iterator<Item = ChunkRef> + use<> {
        let class = &self.classes[id as usize];
        let base = page * self.page_size;
        let carving = class.carve_left > 0 && class.carve_off / self.page_size == page;
        let count = if carving {
            (class.carve_off - base) / class.size
        } else {
            class.perslab
        };
        let size = class.size;
        (0..count).map(move |i| ((base + i * size) / UNIT) as ChunkRef)
    }

    /// Gives every class its first page now and the rest of `-m` to the
    /// global pool, as memcached does when its memory is a file (`-e`):
    /// false when `-m` is too small for a page per class.
    pub(crate) fn preallocate(&mut self) -> bool {
        for id in 1..self.classes.len() {
            if self.classes[id].pages > 0 {
                continue;
            }
            if self.mem_malloced + self.page_size > self.mem_limit || !self.grant_page(id as u8) {
                return false;
            }
        }
        let first_pooled = self.free_pages.len();
        while self.mem_malloced + self.page_size <= self.mem_limit
            && self.next_page < self.page_class.len()
        {
            self.free_pages.push(self.next_page);
            self.next_page += 1;
            self.mem_malloced += self.page_size;
        }
        // The pool is a stack: lowest pages are handed out first.
        self.free_pages[first_pooled..].reverse();
        true
    }

    /// Whether `chunk` is on its class's free list (a slow walk, for tests).
    #[cfg(test)]
    pub(crate) fn is_free(&self, chunk: ChunkRef) -> bool {
        use super::NIL;
        let mut c = self.classes[self.class_of(chunk) as usize].free_head;
        while c != NIL {
            if c == chunk {
                return true;
            }
            c = self.arena.read_u32(Slabs::offset(c));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::SlabConfig;
    use super::*;

    fn cfg() -> SlabConfig {
        SlabConfig {
            mem_limit: 4 << 20,
            min_space: 48,
            factor: 1.25,
            page_size: 1 << 20,
            chunk_max: 512 * 1024,
            initial_malloced: 0,
            preallocated: false,
            lock_memory: false,
        }
    }

    #[test]
    fn a_restored_state_allocates_where_the_old_one_would_have() {
        let mut a = Slabs::new(cfg()).unwrap();
        let x = a.alloc(3).unwrap();
        let y = a.alloc(3).unwrap();
        a.alloc(7).unwrap();
        a.free(x, 3);
        let state = a.state();
        // A second arena gets the first one's bytes and state.
        let mut b = Slabs::new(cfg()).unwrap();
        let len = a.arena.len();
        b.arena
            .bytes_mut(0, len)
            .copy_from_slice(a.arena.bytes(0, len));
        b.restore(&state).unwrap();
        assert_eq!(b.state(), state);
        assert!(b.is_free(x));
        assert_eq!(b.alloc(3), a.alloc(3));
        assert_eq!(b.alloc(3), a.alloc(3));
        assert_ne!(b.alloc(3), Some(y));
        let carved: Vec<_> = b.carved_chunks(b.first_page(3).unwrap(), 3).collect();
        assert_eq!(carved.len(), 4);
        assert_eq!(carved[1], y);
    }

    #[test]
    fn a_state_from_another_shape_is_refused() {
        let a = Slabs::new(cfg()).unwrap();
        let mut state = a.state();
        state.page_class.push(0);
        let mut b = Slabs::new(cfg()).unwrap();
        assert!(b.restore(&state).is_err());
    }

    #[test]
    fn preallocation_needs_a_page_per_class() {
        let mut small = Slabs::new(cfg()).unwrap();
        assert!(!small.preallocate());
        let mut big = Slabs::new(SlabConfig {
            mem_limit: 64 << 20,
            ..cfg()
        })
        .unwrap();
        assert!(big.preallocate());
        assert_eq!(big.malloced(), 64 << 20);
        assert_eq!(big.owned_pages().count(), 39);
        assert_eq!(big.free_pages(), 64 - 39);
        // Pool pages go to classes that fill up, and the limit holds.
        let n = std::iter::from_fn(|| big.alloc(39)).count();
        assert_eq!(n, 2 * (64 - 39 + 1));
    }
}
