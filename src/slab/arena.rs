//! The one memory reservation behind every item: an anonymous mapping of
//! `-m` megabytes (plus a little headroom) made once at start.
//!
//! Reserving address space costs nothing until a page is written, so an idle
//! server stays small however large `-m` is. Everything above this file
//! addresses the arena by byte offset; this is the only place that turns an
//! offset into a pointer.

use std::io;

use nix::sys::mman::{MlockAllFlags, mlockall, munlockall};

pub struct Arena {
    base: *mut u8,
    len: usize,
}

impl Arena {
    /// Reserves `len` bytes of zero-filled, private, lazily backed memory.
    pub fn reserve(len: usize) -> io::Result<Arena> {
        assert!(len > 0);
        let base = match map_anonymous(len) {
            // EAGAIN from an anonymous mapping means `-k` (mlockall with
            // MCL_FUTURE) asked to lock it and RLIMIT_MEMLOCK has no room.
            // memcached in that case runs with whatever it manages to lock;
            // this server warns and maps the arena unlocked instead.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                eprintln!(
                    "warning: -k: item memory ({len} bytes) is larger than the locked-memory \
                     limit allows (ulimit -l); it is not locked"
                );
                map_unlocked(len)?
            }
            mapped => mapped?,
        };
        Ok(Arena { base, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn check(&self, off: usize, len: usize) {
        assert!(
            off <= self.len && len <= self.len - off,
            "arena access out of bounds: {off}+{len} > {}",
            self.len
        );
    }

    /// The bytes `off..off+len`.
    #[inline]
    pub fn bytes(&self, off: usize, len: usize) -> &[u8] {
        self.check(off, len);
        // SAFETY: the range was bounds-checked against the live mapping, and
        // the shared borrow of `self` excludes writers for the slice's life.
        unsafe { std::slice::from_raw_parts(self.base.add(off), len) }
    }

    /// The bytes `off..off+len`, writable.
    #[inline]
    pub fn bytes_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        self.check(off, len);
        // SAFETY: bounds-checked as above; the exclusive borrow of `self`
        // guarantees no other slice of the arena is alive meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(off), len) }
    }

    /// Two disjoint ranges at once, the first writable: lets a value be copied
    /// from one item into another without a bounce buffer.
    pub fn copy_within(&mut self, src: usize, dst: usize, len: usize) {
        self.check(src, len);
        self.check(dst, len);
        // SAFETY: both ranges are inside the mapping; `ptr::copy` allows overlap.
        unsafe { std::ptr::copy(self.base.add(src), self.base.add(dst), len) }
    }

    #[inline]
    pub fn read_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.bytes(off, 4).try_into().unwrap())
    }

    #[inline]
    pub fn write_u32(&mut self, off: usize, v: u32) {
        self.bytes_mut(off, 4).copy_from_slice(&v.to_ne_bytes());
    }

    #[inline]
    pub fn read_u64(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.bytes(off, 8).try_into().unwrap())
    }

    #[inline]
    pub fn write_u64(&mut self, off: usize, v: u64) {
        self.bytes_mut(off, 8).copy_from_slice(&v.to_ne_bytes());
    }

    /// Tells the kernel a range is no longer needed, so its pages stop
    /// counting toward RSS; the range reads back as zeros.
    pub fn release(&mut self, off: usize, len: usize) {
        self.check(off, len);
        // SAFETY: the range lies inside our own private anonymous mapping;
        // MADV_DONTNEED on it only discards contents we no longer use.
        unsafe {
            libc::madvise(
                self.base.add(off) as *mut libc::c_void,
                len,
                libc::MADV_DONTNEED,
            );
        }
    }
}

fn map_anonymous(len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping with no fixed address touches no
    // existing memory; the result is checked before use.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(base as *mut u8)
}

/// Maps with future-locking suspended: `mlockall` without MCL_FUTURE turns
/// it off (keeping what is locked now locked), and MCL_FUTURE alone turns
/// it back on without touching existing mappings, so memory allocated later
/// (connection buffers, hash table growth) is still locked.
fn map_unlocked(len: usize) -> io::Result<*mut u8> {
    let on_fault = MlockAllFlags::from_bits_retain(libc::MCL_ONFAULT);
    let current = MlockAllFlags::MCL_CURRENT;
    if mlockall(current | on_fault).is_err() && mlockall(current).is_err() {
        // Cannot keep the current locks while dropping the future flag.
        let _ = munlockall();
    }
    let mapped = map_anonymous(len);
    let future = MlockAllFlags::MCL_FUTURE;
    if mlockall(future | on_fault).is_err() {
        let _ = mlockall(future);
    }
    mapped
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `reserve`, and
        // no borrow of the arena can outlive `self`.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written() {
        let mut a = Arena::reserve(1 << 20).unwrap();
        a.write_u32(8, 0xdead_beef);
        a.write_u64(16, u64::MAX - 1);
        assert_eq!(a.read_u32(8), 0xdead_beef);
        assert_eq!(a.read_u64(16), u64::MAX - 1);
        assert_eq!(a.bytes(100, 4), &[0, 0, 0, 0]);
    }

    #[test]
    #[should_panic]
    fn refuses_out_of_bounds() {
        let a = Arena::reserve(4096).unwrap();
        a.bytes(4090, 8);
    }
}
