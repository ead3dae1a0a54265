//! The one memory reservation behind every item: an anonymous mapping of
//! `-m` megabytes (plus a little headroom) made once at start -- or, with
//! `-e PATH`, a shared mapping of that file, so the items outlive the
//! process (see `crate::persist::warm`).
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
    len: usize,
    /// The memory file, when the arena is one (`-e`).
    file: Option<File>,
}

impl Arena {
    /// Reserves `len` bytes of zero-filled, private, lazily backed memory.
    pub(crate) fn reserve(len: usize) -> io::Result<Arena> {
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
        Ok(Arena {
            base,
            len,
            file: None,
        })
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
    /// Unmapping a file-backed arena does not lose writes: the kernel keeps
    /// the dirty pages of a shared mapping and writes them back.
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
        let a = Arena::reserve(4096).unwrap();
        a.bytes(4090, 8);
    }
}
