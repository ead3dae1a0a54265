//! The one memory reservation behind every item: an anonymous reservation
//! of all the address space the 32-bit chunk references can name, made once
//! at start, of which the first `-m` megabytes (plus a little headroom) are
//! open and the rest is opened as `cache_memlimit` raises the limit -- or,
//! with `-e PATH`, a shared mapping of that file, so the items outlive the
//! process (see `crate::persist::warm`), which never grows.
//!
//! Reserving address space costs nothing until a page is written, so an idle
//! server stays small however large `-m` is. Everything above this file
//! addresses the arena by byte offset; this is the only place that turns an
//! offset into a pointer, which is also why a file-backed arena can be
//! mapped at a different address by the next process.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use nix::sys::mman::{MlockAllFlags, mlockall, munlockall};

pub(crate) struct Arena {
    base: *mut u8,
    /// Bytes readable and writable from `base`; the rest of the
    /// reservation is PROT_NONE until `grow` opens it.
    len: usize,
    /// Bytes of address space reserved from `base` (`len` for a file).
    reserved: usize,
    /// Whether opened ranges are locked as they open (`-k`; see `reserve`).
    lock_by_hand: bool,
    /// The memory file, when the arena is one (`-e`).
    file: Option<File>,
}

/// Asks the CPU to start loading the cache line holding `r`: a lookup
/// that is about to happen (the next pipelined get's hash bucket) finds it
/// there instead of waiting on memory. A hint only.
#[inline]
pub(crate) fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a reference always points at live memory; a prefetch reads
    // nothing into the program and cannot fault (SSE is x86_64 baseline).
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(r).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

impl Arena {
    /// Reserves `reserved` bytes of address space and opens the first
    /// `len` of them: zero-filled, private, lazily backed memory. The
    /// reservation is PROT_NONE, which costs neither RSS nor commit charge
    /// (even under `vm.overcommit_memory=2`), so `cache_memlimit` can later
    /// open more of it without moving what is mapped. Where the reservation
    /// itself is refused (a `ulimit -v` below it), only `len` is reserved
    /// and the arena cannot grow.
    ///
    /// `lock` (`-k`): the reservation is mapped with mlockall's future
    /// locking suspended -- locked, all of it would count against
    /// RLIMIT_MEMLOCK and in VmLck -- and each range is locked as it is
    /// opened, on fault, so locked memory grows with use as memcached's.
    pub(crate) fn reserve(len: usize, reserved: usize, lock: bool) -> io::Result<Arena> {
        assert!(len > 0 && len <= reserved);
        let map = |bytes| {
            if lock {
                map_unlocked(bytes)
            } else {
                map_anonymous(bytes)
            }
        };
        let (base, reserved) = match map(reserved) {
            Ok(base) => (base, reserved),
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && reserved > len => (map(len)?, len),
            Err(e) => return Err(e),
        };
        let mut arena = Arena {
            base,
            len: 0,
            reserved,
            lock_by_hand: lock,
            file: None,
        };
        arena.grow(len)?;
        Ok(arena)
    }

    /// Opens the reservation up to `new_len` bytes (never closes any).
    /// Fails when `new_len` is past the reservation, for a file-backed
    /// arena, or when the kernel refuses the commit charge.
    pub(crate) fn grow(&mut self, new_len: usize) -> io::Result<()> {
        if new_len <= self.len {
            return Ok(());
        }
        if new_len > self.reserved || self.file.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "item memory cannot grow past its reservation",
            ));
        }
        let (start, more) = (self.len, new_len - self.len);
        // SAFETY: `start..new_len` lies inside our own reservation and
        // beyond every byte handed out so far (it was PROT_NONE, so no
        // reference into it can exist); making it writable moves nothing.
        let rc = unsafe {
            libc::mprotect(
                self.base.add(start) as *mut libc::c_void,
                more,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.len = new_len;
        if self.lock_by_hand {
            self.lock_range(start, more);
        }
        Ok(())
    }

    /// `-k`: locks a newly opened range as it is touched (MLOCK_ONFAULT,
    /// Linux 4.4+; before that, all at once, as mlockall did). Past
    /// RLIMIT_MEMLOCK it stays unlocked, with a warning, as `-k` is only a
    /// wish in memcached too.
    fn lock_range(&mut self, start: usize, len: usize) {
        let addr = self.base.wrapping_add(start) as *const libc::c_void;
        // SAFETY: the range is inside our mapping; mlock2 and mlock change
        // only how its pages are kept, not their contents.
        let mut rc = unsafe { libc::mlock2(addr, len, libc::MLOCK_ONFAULT) };
        if rc != 0
            && matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS)
            )
        {
            // SAFETY: as above.
            rc = unsafe { libc::mlock(addr, len) };
        }
        if rc != 0 {
            let e = io::Error::last_os_error();
            eprintln!(
                "warning: -k: {len} bytes of item memory are not locked (ulimit -l is too small): {e}"
            );
        }
    }

    /// Maps the first `len` bytes of `file` (already at least that long),
    /// shared, so every write lands in the file's pages.
    pub(crate) fn map_file(file: File, len: usize) -> io::Result<Arena> {
        assert!(len > 0);
        // SAFETY: a shared mapping of a file we hold open, at an address the
        // kernel picks, touches no existing memory; the result is checked.
        // Nothing else in this process maps the file, and other processes
        // writing it concurrently is outside what `-e` supports (as in
        // memcached).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Arena {
            base: base as *mut u8,
            len,
            reserved: len,
            lock_by_hand: false,
            file: Some(file),
        })
    }

    /// Where the arena is mapped in this process (printed by `-v` on a
    /// restart, as memcached prints its old and new memory base).
    pub(crate) fn base_address(&self) -> usize {
        self.base as usize
    }

    /// Writes every dirty page of a file-backed arena to the file and waits
    /// for it; nothing to do for an anonymous one.
    pub(crate) fn sync(&self) -> io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        // SAFETY: `base`/`len` are exactly our live mapping; msync reads the
        // page tables only.
        let rc = unsafe { libc::msync(self.base as *mut libc::c_void, self.len, libc::MS_SYNC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every header field read or written passes here: one add and one
    /// compare on the hot path, the panic's formatting out of line.
    #[inline]
    fn check(&self, off: usize, len: usize) {
        match off.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => out_of_bounds(off, len, self.len),
        }
    }

    /// The bytes `off..off+len`.
    #[inline]
    pub(crate) fn bytes(&self, off: usize, len: usize) -> &[u8] {
        self.check(off, len);
        // SAFETY: the range was bounds-checked against the live mapping, and
        // the shared borrow of `self` excludes writers for the slice's life.
        unsafe { std::slice::from_raw_parts(self.base.add(off), len) }
    }

    /// The bytes `off..off+len`, writable.
    #[inline]
    pub(crate) fn bytes_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        self.check(off, len);
        // SAFETY: bounds-checked as above; the exclusive borrow of `self`
        // guarantees no other slice of the arena is alive meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(off), len) }
    }

    /// Two disjoint ranges at once, the first writable: lets a value be copied
    /// from one item into another without a bounce buffer.
    pub(crate) fn copy_within(&mut self, src: usize, dst: usize, len: usize) {
        self.check(src, len);
        self.check(dst, len);
        // SAFETY: both ranges are inside the mapping; `ptr::copy` allows overlap.
        unsafe { std::ptr::copy(self.base.add(src), self.base.add(dst), len) }
    }

    #[inline]
    pub(crate) fn read_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.bytes(off, 4).try_into().unwrap())
    }

    #[inline]
    pub(crate) fn write_u32(&mut self, off: usize, v: u32) {
        self.bytes_mut(off, 4).copy_from_slice(&v.to_ne_bytes());
    }

    #[inline]
    pub(crate) fn read_u64(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.bytes(off, 8).try_into().unwrap())
    }

    #[inline]
    pub(crate) fn write_u64(&mut self, off: usize, v: u64) {
        self.bytes_mut(off, 8).copy_from_slice(&v.to_ne_bytes());
    }

    /// Asks the CPU to start loading the cache line holding `off`, for a
    /// write soon after: the LRU's moves write the links of items nothing
    /// has read lately (a bumped item's neighbours, the next tail), and
    /// asking early lets those misses overlap instead of stalling one by
    /// one. A hint only; an offset outside the open range is ignored.
    #[inline]
    pub(crate) fn prefetch_for_write(&self, off: usize) {
        if off >= self.len {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `off` is inside the mapping, so the pointer is in bounds;
        // a prefetch reads nothing into the program and cannot fault (SSE,
        // which it needs, is part of the x86_64 baseline).
        unsafe {
            use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_ET0>(self.base.add(off).cast::<i8>());
        }
    }

    /// Tells the kernel a range is no longer needed, so its pages stop
    /// counting toward RSS; the range reads back as zeros.
    pub(crate) fn release(&mut self, off: usize, len: usize) {
        self.check(off, len);
        // A shared file mapping would read the file's old bytes back after
        // MADV_DONTNEED: there the range is punched out of the file instead
        // (MADV_REMOVE), or zeroed by hand where the filesystem cannot.
        let advice = if self.file.is_some() {
            libc::MADV_REMOVE
        } else {
            libc::MADV_DONTNEED
        };
        // SAFETY: the range lies inside our own mapping; both advices only
        // discard contents we no longer use, and any page touched later
        // reads as zeros.
        let rc = unsafe { libc::madvise(self.base.add(off) as *mut libc::c_void, len, advice) };
        if rc != 0 {
            self.bytes_mut(off, len).fill(0);
        }
    }
}

fn map_anonymous(len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping with no fixed address touches no
    // existing memory; the result is checked before use. PROT_NONE: the
    // arena opens it with mprotect as the limit allows.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
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

#[cold]
#[inline(never)]
fn out_of_bounds(off: usize, len: usize, arena_len: usize) -> ! {
    panic!("arena access out of bounds: {off}+{len} > {arena_len}");
}

impl Drop for Arena {
    /// Unmapping a file-backed arena does not lose writes: the kernel keeps
    /// the dirty pages of a shared mapping and writes them back.
    fn drop(&mut self) {
        // SAFETY: `base`/`reserved` are exactly the mapping made in
        // `reserve` or `map_file`, and no borrow of the arena can outlive
        // `self`.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written() {
        let mut a = Arena::reserve(1 << 20, 1 << 20, false).unwrap();
        a.write_u32(8, 0xdead_beef);
        a.write_u64(16, u64::MAX - 1);
        assert_eq!(a.read_u32(8), 0xdead_beef);
        assert_eq!(a.read_u64(16), u64::MAX - 1);
        assert_eq!(a.bytes(100, 4), &[0, 0, 0, 0]);
    }

    #[test]
    fn a_file_backed_arena_keeps_its_bytes_across_mappings() {
        let path = std::env::temp_dir().join(format!("arena-test-{}", std::process::id()));
        let open = || {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap();
            f.set_len(1 << 20).unwrap();
            f
        };
        let mut a = Arena::map_file(open(), 1 << 20).unwrap();
        a.write_u64(4096, 0x0123_4567_89ab_cdef);
        a.write_u32(8192, 7);
        a.release(8192, 4096);
        a.sync().unwrap();
        drop(a);
        let b = Arena::map_file(open(), 1 << 20).unwrap();
        assert_eq!(b.read_u64(4096), 0x0123_4567_89ab_cdef);
        assert_eq!(b.read_u32(8192), 0, "a released range reads as zeros");
        drop(b);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    #[should_panic]
    fn refuses_out_of_bounds() {
        let a = Arena::reserve(4096, 8192, false).unwrap();
        a.bytes(4090, 8);
    }

    #[test]
    fn grows_within_its_reservation_keeping_its_bytes() {
        let mut a = Arena::reserve(1 << 20, 8 << 20, false).unwrap();
        let base = a.base_address();
        a.write_u64(1024, 42);
        a.grow(4 << 20).unwrap();
        assert_eq!(a.len(), 4 << 20);
        assert_eq!(a.base_address(), base, "growing moves nothing");
        assert_eq!(a.read_u64(1024), 42);
        a.write_u64((4 << 20) - 8, 7);
        assert_eq!(a.read_u64((4 << 20) - 8), 7);
        a.grow(2 << 20).unwrap();
        assert_eq!(a.len(), 4 << 20, "a smaller length closes nothing");
        assert!(a.grow(9 << 20).is_err(), "past the reservation");
        assert_eq!(a.len(), 4 << 20);
    }

    #[test]
    fn a_reservation_of_32_gib_costs_no_memory() {
        // The size a server reserves at start, whatever its -m.
        let a = Arena::reserve(1 << 20, 32 << 30, false).unwrap();
        assert_eq!(a.len(), 1 << 20);
        assert!(a.bytes(0, 1 << 20).iter().all(|&b| b == 0));
    }
}
