//! The flash tier in the loop: opening it at start (memcached's messages
//! when it cannot), its eventfd (a finished read wakes the connection that
//! waits for it) and its share of every loop turn (writing cold items out,
//! compacting, freeing pages).

use super::{Reactor, Slot};
use crate::extstore::{ExtStore, InitError, SavedPages};
use crate::items::{Cache, ExtTier};
use crate::settings::Settings;
use std::io;
use std::time::{Duration, Instant};

/// memcached's `MIN_STORAGE_COMPACT_SLEEP`: the compaction thread's pause
/// while it works through a page.
const MIN_COMPACT_SLEEP_US: u32 = 10_000;

/// Items written out in one turn beyond which the next turn comes at once.
const EXT_BATCH: usize = 64;

/// memcached's `storage_init`: the compaction thresholds default to a
/// quarter of the first file's pages; a failure is its message and exit 1.
///
/// With `saved` (a warm restart's page table) the files keep their records
/// for the headers the arena kept; if they changed since, they are opened
/// afresh and those headers read as misses.
pub(super) fn open(
    cache: &mut Cache,
    settings: &mut Settings,
    saved: Option<SavedPages>,
) -> io::Result<()> {
    let ext = &mut settings.ext;
    if ext.compact_under == 0 {
        let pages = ext.paths[0].page_count;
        ext.compact_under = pages / 4;
        ext.drop_under = pages / 4;
    }
    let opened = match &saved {
        Some(sp) => match ExtStore::open_keeping(ext, true, Some(sp)) {
            Err(InitError::Changed) => {
                eprintln!("[restart] extstore files changed since the save, their values are lost");
                ExtStore::open(ext, true).map(|mut store| {
                    store.skip_versions_to(sp.next_version);
                    store
                })
            }
            other => other,
        },
        None => ExtStore::open(ext, true),
    };
    match opened {
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
        Err(InitError::Changed) => Err(io::Error::other(
            "Failed to initialize external storage: the files changed",
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
        self.cache.ext_compact_step(&self.settings.ext, false);
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

    /// Every loop turn: cold items out, a compaction step. Every
    /// `ext_max_sleep` (10 ms while a page is being compacted), the store's
    /// maintenance and the look for a page to compact: what memcached's
    /// compaction thread does between its sleeps. The loop wakes for it
    /// (`ext_timeout`), so the writer too looks at the LRU tails at least
    /// that often, as memcached's writer thread sleeps at most that long.
    pub(super) fn ext_turn(&mut self) {
        if self.cache.ext.is_none() {
            return;
        }
        // A full batch written: more may be waiting, so the loop should
        // not sleep.
        self.ext_busy = self.cache.ext_write_out(&self.settings.ext) >= EXT_BATCH;
        let now = Instant::now();
        let tick = now >= self.ext_next_tick;
        if tick {
            self.cache.ext_tick();
        }
        self.cache.ext_compact_step(&self.settings.ext, tick);
        if tick {
            let us = if self.cache.ext_compacting() {
                MIN_COMPACT_SLEEP_US
            } else {
                self.settings.ext.max_sleep
            };
            self.ext_next_tick = now + Duration::from_micros(us as u64);
        }
    }

    /// The loop's wait, cut short for extstore's next tick.
    pub(super) fn ext_timeout(&self, timeout: i32) -> i32 {
        if self.cache.ext.is_none() {
            return timeout;
        }
        let left = self.ext_next_tick.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        if timeout < 0 { ms } else { timeout.min(ms) }
    }
}
