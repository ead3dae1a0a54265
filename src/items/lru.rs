//! One LRU list: items doubly linked through their `prev`/`next` header
//! fields, newest at the head, eviction candidates at the tail.

use super::item;
use crate::slab::{ChunkRef, NIL, arena::Arena};

#[derive(Debug, Default)]
pub(super) struct Lru {
    pub(crate) head: ChunkRef,
    pub(crate) tail: ChunkRef,
    pub(crate) len: usize,
}

impl Lru {
    pub(super) fn push_head(&mut self, arena: &mut Arena, it: ChunkRef) {
        let mut v = item::view_mut(arena, it);
        v.set_prev(NIL);
        v.set_next(self.head);
        if self.head != NIL {
            item::view_mut(arena, self.head).set_prev(it);
        }
        self.head = it;
        if self.tail == NIL {
            self.tail = it;
        }
        self.len += 1;
    }

    pub(super) fn unlink(&mut self, arena: &mut Arena, it: ChunkRef) {
        let v = item::view(arena, it);
        let (prev, next) = (v.prev(), v.next());
        if prev != NIL {
            item::view_mut(arena, prev).set_next(next);
        } else {
            debug_assert_eq!(self.head, it);
            self.head = next;
        }
        if next != NIL {
            item::view_mut(arena, next).set_prev(prev);
        } else {
            debug_assert_eq!(self.tail, it);
            self.tail = prev;
        }
        let mut v = item::view_mut(arena, it);
        v.set_prev(NIL);
        v.set_next(NIL);
        self.len -= 1;
    }

    /// Puts `new`, a copy of `old`'s header, in `old`'s place (a page
    /// move): the neighbours and ends point at the copy.
    pub(super) fn replace(&mut self, arena: &mut Arena, old: ChunkRef, new: ChunkRef) {
        let v = item::view(arena, new);
        let (prev, next) = (v.prev(), v.next());
        if prev != NIL {
            item::view_mut(arena, prev).set_next(new);
        } else {
            debug_assert_eq!(self.head, old);
            self.head = new;
        }
        if next != NIL {
            item::view_mut(arena, next).set_prev(new);
        } else {
            debug_assert_eq!(self.tail, old);
            self.tail = new;
        }
    }
}
