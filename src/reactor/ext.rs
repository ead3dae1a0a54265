//! The flash tier in the loop: opening it at start (memcached's messages
//! when it cannot), its eventfd (a finished read wakes the connection that
//! waits for it) and its share of every loop turn (writing cold items out,
//! compacting, freeing pages).

use super::{Reactor, Slot};
use crate::extstore::{ExtStore, InitError};
use crate::items::{Cache, ExtTier};
use crate::settings::Settings;
use std::io;

/// Items written out in one turn beyond which the next turn comes at once.
const EXT_BATCH: usize = 64;

/// memcached's `storage_init`: the compaction thresholds default to a
/// quarter of the first file's pages; a failure is its message and exit 1.
pub(super) fn open(cache: &mut Cache, settings: &mut Settings) -> io::Result<()> {
    let ext = &mut settings.ext;
    if ext.compact_under == 0 {
        let pages = ext.paths[0].page_count;
        ext.compact_under = pages / 4;
        ext.drop_under = pages / 4;
    }
    match ExtStore::open(ext, true) {
        Ok(store) => {
            cache.ext = Some(Box::new(ExtTier::new(store)));
            // memcached: "page mover algorithm for extstore needs memory
            // prefilled".
            cache.slabs.prefill_global();
            Ok(())
        }
        Err(InitError::Config(why)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("Failed to initialize external storage: {why}"),
        )),
        Err(InitError::Open(e)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "Failed to initialize external storage: failed to open file\nextstore open: {}",
                crate::sys::strerror(&e)
            ),
        )),
    }
}

impl Reactor {
    /// The I/O threads finished something: connections whose reads came
    /// back run again.
    pub(super) fn ext_io_done(&mut self) {
        let woken = self.cache.ext_complete();
        if !self.ext_deferred.is_empty() {
            // Make room first, then let the held clients go on.
            self.cache.ext_write_out(&self.settings.ext);
            if !self.cache.ext_backpressure() {
                for fd in std::mem::take(&mut self.ext_deferred) {
                    if let Some(Slot::Client(c)) = self.slots.get_mut(fd as usize)
                        && !c.queued
                    {
                        c.queued = true;
                        self.ready.push_back(fd);
                    }
                }
            }
        }
        for fd in woken {
            if let Some(Slot::Client(c)) = self.slots.get_mut(fd as usize)
                && c.awaits_ext()
                && !c.queued
            {
                c.queued = true;
                self.ready.push_back(fd);
            }
        }
        self.cache.ext_compact_step(&self.settings.ext);
    }

    /// Holds client `fd` back while extstore applies backpressure (see
    /// `Cache::ext_backpressure`); it runs again when a buffer returns.
    pub(super) fn ext_hold(&mut self, fd: std::os::fd::RawFd) -> bool {
        if !self.cache.ext_backpressure() {
            return false;
        }
        if !self.ext_deferred.contains(&fd) {
            self.ext_deferred.push(fd);
        }
        true
    }

    /// Every loop turn: cold items out, a compaction step; once a second
    /// the store's maintenance.
    pub(super) fn ext_turn(&mut self) {
        if self.cache.ext.is_none() {
            return;
        }
        // A full batch written: more may be waiting, so the loop should
        // not sleep.
        self.ext_busy = self.cache.ext_write_out(&self.settings.ext) >= EXT_BATCH;
        self.cache.ext_compact_step(&self.settings.ext);
        let now = self.cache.now();
        if now != self.ext_last_tick {
            self.ext_last_tick = now;
            self.cache.ext_tick();
        }
    }
}
