//! `-o read_buf_mem_limit=MB`: a bound on the memory connections hold for
//! requests they have not finished sending.
//!
//! memcached gives each connection that is reading a 16 KB buffer from a
//! pool capped at the limit, and closes a connection that cannot get one
//! (counted as `read_buf_oom`). This server parses input where it was
//! read, so a connection holds memory only for a partial request left at
//! the end of a read; each such connection is charged at least one
//! memcached-sized buffer, and one whose charge grows past the limit is
//! closed and counted the same way. Without the option nothing is counted.

use super::conn::{Conn, READ_SIZE};
use super::{Reactor, Slot};
use std::os::fd::RawFd;

/// What `c` is charged for its unparsed input.
pub(super) fn charge(c: &Conn) -> usize {
    match c.input.capacity() {
        0 => 0,
        n => n.max(READ_SIZE),
    }
}

impl Reactor {
    /// The charge of connection `fd` (0 when the limit is off).
    pub(super) fn read_buf_charge(&self, fd: RawFd) -> usize {
        match self.slots.get(fd as usize) {
            Some(Slot::Client(c)) if self.settings.read_buf_mem_limit > 0 => charge(c),
            _ => 0,
        }
    }

    /// Accounts a turn of connection `fd` that started with charge `before`;
    /// true if its growth took the total past the limit (the caller closes
    /// it, which gives its charge back).
    pub(super) fn over_read_buf_limit(&mut self, fd: RawFd, before: usize) -> bool {
        let limit = self.settings.read_buf_mem_limit;
        if limit == 0 {
            return false;
        }
        let after = self.read_buf_charge(fd);
        self.read_buf_bytes = self.read_buf_bytes.saturating_sub(before) + after;
        if after > before && self.read_buf_bytes > limit {
            self.stats.read_buf_oom += 1;
            return true;
        }
        false
    }
}
