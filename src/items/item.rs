//! Item layout inside a slab chunk.
//!
//! ```text
//!  0  h_next   u32   next item in the same hash bucket
//!  4  prev     u32   LRU neighbour toward the head (newer)
//!  8  next     u32   LRU neighbour toward the tail (older)
//! 12  time     u32   last access, relative seconds
//! 16  exptime  u32   relative expiry, 0 = never
//! 20  nbytes   u32   value length (no trailing CRLF is stored)
//! 24  cas      u64
//! 32  flags    u32   client flags
//! 36  nkey     u8
//! 37  iflags   u8    LINKED, FETCHED, CHUNKED, the meta protocol's
//!                    STALE, TOKEN_SENT, KEY_BINARY, PINNED, and ALLOCATED
//! 38  lru      u8    the LRU that holds the item: its class in the low six
//!                    bits, its segment (HOT, WARM, COLD, TEMP) in the top
//!                    two, as memcached's `slabs_clsid`
//! 39  xflags   u8    EXT: the value is on flash, the body is its location;
//!                    ACTIVE (memcached's ITEM_ACTIVE; no room in iflags)
//! 40  key, then the value -- or, for a chunked item, one u32 chunk
//!     reference per `chunk_max` bytes of value
//! ```
//!
//! 40 bytes of header against memcached's 56 (with CAS) is most of why an
//! item here often fits a smaller class than the same item in memcached.

use crate::slab::{ChunkRef, NIL, Slabs, arena::Arena};

pub(crate) const HEADER: usize = 40;

pub(crate) const LINKED: u8 = 1;
pub(crate) const FETCHED: u8 = 2;
pub(crate) const CHUNKED: u8 = 4;
/// Marked stale by `md <key> I` (memcached's ITEM_STALE): `mg` answers X.
pub(crate) const STALE: u8 = 8;
/// A client was handed the recache win (W) for this item (ITEM_TOKEN_SENT):
/// later `mg`s answer Z.
pub(crate) const TOKEN_SENT: u8 = 16;
/// Stored by `ms` with a base64 (`b`) key (ITEM_KEY_BINARY): `k` returns
/// the key base64 encoded.
pub(crate) const KEY_BINARY: u8 = 32;
/// Referenced by an `mg` reply not yet written (see `items/meta.rs`).
pub(crate) const PINNED: u8 = 64;
/// Set on every item header from allocation until the chunk is freed, so a
/// page being emptied can tell items (even unlinked, in-flight ones) from
/// free chunks.
pub(crate) const ALLOCATED: u8 = 0x80;
/// Where `iflags` lies in a chunk, for clearing it on chunks that held raw
/// value bytes.
pub(crate) const IFLAGS_OFFSET: usize = IFLAGS;

const H_NEXT: usize = 0;
const PREV: usize = 4;
const NEXT: usize = 8;
const TIME: usize = 12;
const EXPTIME: usize = 16;
const NBYTES: usize = 20;
const CAS: usize = 24;
const FLAGS: usize = 32;
const NKEY: usize = 36;
const IFLAGS: usize = 37;
const LRU: usize = 38;
const XFLAGS: usize = 39;

/// The class bits of the `lru` byte (the top two name the segment, see
/// `lru.rs`).
pub(crate) const CLASS_MASK: u8 = 63;

/// In `xflags`: the value lives in extstore; the body holds its
/// [`crate::extstore::Loc`], and `nbytes` is still the value's length.
pub(crate) const EXT: u8 = 1;
/// In `xflags`: fetched again since it last moved (memcached's
/// ITEM_ACTIVE), the segmented LRU's sign that an item is worth keeping.
pub(crate) const ACTIVE: u8 = 2;

/// Typed access to the header fields of the item at `it`.
pub(crate) struct View<'a> {
    arena: &'a Arena,
    base: usize,
}

pub(crate) struct ViewMut<'a> {
    arena: &'a mut Arena,
    base: usize,
}

pub(crate) fn view(arena: &Arena, it: ChunkRef) -> View<'_> {
    View {
        arena,
        base: Slabs::offset(it),
    }
}

pub(crate) fn view_mut(arena: &mut Arena, it: ChunkRef) -> ViewMut<'_> {
    ViewMut {
        arena,
        base: Slabs::offset(it),
    }
}

/// A header field: a getter on `View`, a setter on `ViewMut`, and with
/// `also_read_mut` a getter on `ViewMut` too (for the fields that are read
/// while the item is being changed).
macro_rules! field {
    ($ty:ty, $read:ident, $write:ident, $get:ident, $set:ident, $off:expr) => {
        impl View<'_> {
            #[inline]
            pub(crate) fn $get(&self) -> $ty {
                $read(self.arena, self.base + $off)
            }
        }
        impl ViewMut<'_> {
            #[inline]
            pub(crate) fn $set(&mut self, v: $ty) {
                $write(self.arena, self.base + $off, v)
            }
        }
    };
    ($ty:ty, $read:ident, $write:ident, $get:ident, $set:ident, $off:expr, also_read_mut) => {
        field!($ty, $read, $write, $get, $set, $off);
        impl ViewMut<'_> {
            #[inline]
            pub(crate) fn $get(&self) -> $ty {
                $read(self.arena, self.base + $off)
            }
        }
    };
}

fn read_u32(arena: &Arena, at: usize) -> u32 {
    arena.read_u32(at)
}

fn write_u32(arena: &mut Arena, at: usize, v: u32) {
    arena.write_u32(at, v)
}

fn read_u8(arena: &Arena, at: usize) -> u8 {
    arena.bytes(at, 1)[0]
}

fn write_u8(arena: &mut Arena, at: usize, v: u8) {
    arena.bytes_mut(at, 1)[0] = v
}

field!(u32, read_u32, write_u32, h_next, set_h_next, H_NEXT);
field!(u32, read_u32, write_u32, prev, set_prev, PREV);
field!(u32, read_u32, write_u32, next, set_next, NEXT);
field!(u32, read_u32, write_u32, time, set_time, TIME);
field!(u32, read_u32, write_u32, exptime, set_exptime, EXPTIME);
field!(u32, read_u32, write_u32, nbytes, set_nbytes, NBYTES);
field!(u32, read_u32, write_u32, flags, set_flags, FLAGS);
field!(u8, read_u8, write_u8, nkey, set_nkey, NKEY);
field!(
    u8,
    read_u8,
    write_u8,
    iflags,
    set_iflags,
    IFLAGS,
    also_read_mut
);
field!(u8, read_u8, write_u8, lru, set_lru, LRU, also_read_mut);
field!(
    u8,
    read_u8,
    write_u8,
    xflags,
    set_xflags,
    XFLAGS,
    also_read_mut
);

impl<'a> View<'a> {
    pub(crate) fn cas(&self) -> u64 {
        self.arena.read_u64(self.base + CAS)
    }

    pub(crate) fn key(&self) -> &'a [u8] {
        let n = self.nkey() as usize;
        self.arena.bytes(self.base + HEADER, n)
    }

    pub(crate) fn is(&self, flag: u8) -> bool {
        self.iflags() & flag != 0
    }

    /// The slab class whose statistics the item counts toward.
    pub(crate) fn class(&self) -> u8 {
        self.lru() & CLASS_MASK
    }

    #[cfg(test)]
    pub(crate) fn is_active(&self) -> bool {
        self.xflags() & ACTIVE != 0
    }

    /// Byte offset of the value (or of the chunk list) in the arena.
    pub(crate) fn body_offset(&self) -> usize {
        self.base + HEADER + self.nkey() as usize
    }
}

impl ViewMut<'_> {
    pub(crate) fn set_cas(&mut self, v: u64) {
        self.arena.write_u64(self.base + CAS, v)
    }

    pub(crate) fn set_key(&mut self, key: &[u8]) {
        self.set_nkey(key.len() as u8);
        self.arena
            .bytes_mut(self.base + HEADER, key.len())
            .copy_from_slice(key);
    }

    pub(crate) fn add_flag(&mut self, flag: u8) {
        let f = self.iflags();
        self.set_iflags(f | flag);
    }

    pub(crate) fn clear_flag(&mut self, flag: u8) {
        let f = self.iflags();
        self.set_iflags(f & !flag);
    }

    pub(crate) fn set_active(&mut self, on: bool) {
        let f = self.xflags();
        self.set_xflags(if on { f | ACTIVE } else { f & !ACTIVE });
    }
}

/// Starts loading the line of `it`'s LRU links ahead of a write to them
/// (see `Arena::prefetch_for_write`); `NIL` and stale references are
/// harmless.
#[inline]
pub(crate) fn prefetch_links(arena: &Arena, it: ChunkRef) {
    if it != NIL {
        arena.prefetch_for_write(Slabs::offset(it) + PREV);
    }
}

/// Starts loading `it`'s header and the start of its key, which a lookup
/// compares and a hit then writes (its flags and time).
#[inline]
pub(crate) fn prefetch_item(arena: &Arena, it: ChunkRef) {
    if it != NIL {
        let off = Slabs::offset(it);
        arena.prefetch_for_write(off);
        arena.prefetch_for_write(off + HEADER);
    }
}

/// An item's header read after one bounds check: for the LRU's loops, which
/// look at several fields of each item they pass.
pub(crate) struct Header<'a>(&'a [u8; HEADER]);

#[inline]
pub(crate) fn header(arena: &Arena, it: ChunkRef) -> Header<'_> {
    let bytes = arena.bytes(Slabs::offset(it), HEADER);
    Header(bytes.try_into().expect("a header's bytes"))
}

impl Header<'_> {
    #[inline]
    fn u32_at(&self, at: usize) -> u32 {
        let b = self.0;
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[inline]
    pub(crate) fn prev(&self) -> u32 {
        self.u32_at(PREV)
    }

    #[inline]
    pub(crate) fn next(&self) -> u32 {
        self.u32_at(NEXT)
    }

    #[inline]
    pub(crate) fn time(&self) -> u32 {
        self.u32_at(TIME)
    }

    #[inline]
    pub(crate) fn exptime(&self) -> u32 {
        self.u32_at(EXPTIME)
    }

    #[inline]
    pub(crate) fn nbytes(&self) -> u32 {
        self.u32_at(NBYTES)
    }

    #[inline]
    pub(crate) fn flags(&self) -> u32 {
        self.u32_at(FLAGS)
    }

    #[inline]
    pub(crate) fn cas(&self) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0[CAS..CAS + 8]);
        u64::from_ne_bytes(b)
    }

    #[inline]
    pub(crate) fn nkey(&self) -> u8 {
        self.0[NKEY]
    }

    #[inline]
    pub(crate) fn iflags(&self) -> u8 {
        self.0[IFLAGS]
    }

    #[inline]
    pub(crate) fn lru(&self) -> u8 {
        self.0[LRU]
    }

    #[inline]
    pub(crate) fn xflags(&self) -> u8 {
        self.0[XFLAGS]
    }

    #[inline]
    pub(crate) fn is(&self, flag: u8) -> bool {
        self.iflags() & flag != 0
    }

    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.xflags() & ACTIVE != 0
    }
}

/// An item's header, writable after one bounds check.
pub(crate) struct HeaderMut<'a>(&'a mut [u8; HEADER]);

#[inline]
pub(crate) fn header_mut(arena: &mut Arena, it: ChunkRef) -> HeaderMut<'_> {
    let bytes = arena.bytes_mut(Slabs::offset(it), HEADER);
    HeaderMut(bytes.try_into().expect("a header's bytes"))
}

impl HeaderMut<'_> {
    #[inline]
    fn set_u32_at(&mut self, at: usize, v: u32) {
        let b = v.to_ne_bytes();
        self.0[at..at + 4].copy_from_slice(&b);
    }

    #[inline]
    pub(crate) fn set_prev(&mut self, v: u32) {
        self.set_u32_at(PREV, v)
    }

    #[inline]
    pub(crate) fn set_next(&mut self, v: u32) {
        self.set_u32_at(NEXT, v)
    }

    #[inline]
    pub(crate) fn set_time(&mut self, v: u32) {
        self.set_u32_at(TIME, v)
    }

    #[inline]
    pub(crate) fn set_iflags(&mut self, v: u8) {
        self.0[IFLAGS] = v
    }

    #[inline]
    pub(crate) fn set_lru(&mut self, v: u8) {
        self.0[LRU] = v
    }

    #[inline]
    pub(crate) fn set_xflags(&mut self, v: u8) {
        self.0[XFLAGS] = v
    }
}

/// Bytes an item of this shape needs in its own chunk: the whole item when
/// it fits one chunk, otherwise header, key and the chunk list.
pub(crate) fn inline_size(nkey: usize, nbytes: usize) -> usize {
    HEADER + nkey + nbytes
}

pub(crate) fn chunked_header_size(nkey: usize, nbytes: usize, chunk_max: usize) -> usize {
    HEADER + nkey + 4 * nbytes.div_ceil(chunk_max)
}

/// What memcached 1.6 would count as this item's size (`ITEM_ntotal`): used
/// where its behaviour depends on that number (the `-I` limit and the
/// `bytes` statistic), so those match it byte for byte.
pub(crate) fn memcached_ntotal(nkey: usize, nbytes: usize, flags: u32, use_cas: bool) -> usize {
    crate::slab::classes::MEMCACHED_ITEM_HEADER
        + nkey
        + 1
        + nbytes
        + 2
        + if flags != 0 { 4 } else { 0 }
        + if use_cas { 8 } else { 0 }
}
