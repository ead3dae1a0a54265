//! The cache's entries for `watch` (see `logger/`): stores, as
//! memcached's `do_store_item` logs them, refused stores, and evictions.
//! Fetches are logged by `Cache::find`, where memcached's `do_item_get`
//! logs them.

use super::{Cache, StoreMode, StoreResult};
use crate::logger::{EvictEntry, MUTATIONS, StoreEntry, StoreStatus};
use crate::slab::ChunkRef;

/// memcached's command number for a store mode (its `NREAD_*`).
fn cmd_number(mode: StoreMode) -> u8 {
    match mode {
        StoreMode::Add => 1,
        StoreMode::Set => 2,
        StoreMode::Replace => 3,
        StoreMode::Append => 4,
        StoreMode::Prepend => 5,
        StoreMode::Cas => 6,
    }
}

fn stored_as(r: StoreResult) -> StoreStatus {
    match r {
        StoreResult::Stored => StoreStatus::Stored,
        StoreResult::NotStored => StoreStatus::NotStored,
        StoreResult::Exists => StoreStatus::Exists,
        StoreResult::NotFound => StoreStatus::NotFound,
    }
}

/// What an item being stored looks like before `store` consumes it.
struct Probe {
    key: [u8; 256],
    nkey: usize,
    exptime: u32,
    clsid: u8,
    size: usize,
}

impl Cache {
    /// Stores a filled-in item under `mode` (see `store_unlogged`), logged
    /// to `watch mutations`.
    pub(crate) fn store(&mut self, it: ChunkRef, mode: StoreMode, cas_in: u64) -> StoreResult {
        if !self.logger.wants(MUTATIONS) {
            return self.store_unlogged(it, mode, cas_in);
        }
        let probe = self.probe(it);
        let result = self.store_unlogged(it, mode, cas_in);
        self.log_store(&probe, mode, result);
        result
    }

    /// `store` for `ms` (see `meta_store_unlogged`), logged the same way.
    pub(crate) fn meta_store(
        &mut self,
        it: ChunkRef,
        mode: StoreMode,
        cas_in: u64,
        stale_ok: bool,
    ) -> (StoreResult, u64) {
        if !self.logger.wants(MUTATIONS) {
            return self.meta_store_unlogged(it, mode, cas_in, stale_ok);
        }
        let probe = self.probe(it);
        let done = self.meta_store_unlogged(it, mode, cas_in, stale_ok);
        self.log_store(&probe, mode, done.0);
        done
    }

    fn probe(&self, it: ChunkRef) -> Probe {
        let v = self.view(it);
        let mut key = [0u8; 256];
        let nkey = v.key().len();
        key[..nkey].copy_from_slice(v.key());
        Probe {
            key,
            nkey,
            exptime: v.exptime(),
            clsid: self.memcached_class(it),
            size: v.nbytes() as usize,
        }
    }

    /// memcached logs the item it ended with: a stored append is the joined
    /// value (with the old item's expiry); anything else is the client's.
    fn log_store(&mut self, p: &Probe, mode: StoreMode, result: StoreResult) {
        let key = &p.key[..p.nkey];
        let (mut exptime, mut clsid, mut size) = (p.exptime, p.clsid, p.size);
        if result == StoreResult::Stored
            && let Some(now) = self.peek(key)
        {
            let v = self.view(now);
            (exptime, size) = (v.exptime(), v.nbytes() as usize);
            clsid = self.memcached_class(now);
        }
        let entry = StoreEntry {
            key,
            status: stored_as(result),
            cmd: cmd_number(mode),
            exptime,
            clsid,
            cfd: self.logger.cfd,
            size,
        };
        let now = self.now();
        self.logger.item_store(&entry, now);
    }

    /// A store refused before its value was read (too large, no memory).
    /// memcached 1.6.18 passes this entry too few arguments: its class
    /// field shows the connection's descriptor, its `cfd` whatever was
    /// left in a register (here 0), its size and TTL 0. The binary
    /// protocol gives no mode (`cmd=null`); there memcached reads the class
    /// of an item it does not have and crashes, which this does not copy.
    pub(crate) fn log_refused_store(
        &mut self,
        key: &[u8],
        mode: Option<StoreMode>,
        too_large: bool,
    ) {
        if !self.logger.wants(MUTATIONS) {
            return;
        }
        let cfd = self.logger.cfd;
        let entry = StoreEntry {
            key,
            status: if too_large {
                StoreStatus::TooLarge
            } else {
                StoreStatus::NoMemory
            },
            cmd: mode.map_or(0, cmd_number),
            exptime: 0,
            clsid: cfd as u8,
            cfd: 0,
            size: 0,
        };
        let now = self.now();
        self.logger.item_store(&entry, now);
    }

    /// memcached's eviction entry, for an item about to be evicted.
    pub(super) fn log_eviction(&mut self, it: ChunkRef) {
        let v = self.view(it);
        let mut key = [0u8; 256];
        let nkey = v.key().len();
        key[..nkey].copy_from_slice(v.key());
        let entry = EvictEntry {
            key: &key[..nkey],
            fetched: v.is(super::item::FETCHED),
            exptime: v.exptime(),
            time: v.time(),
            clsid: self.memcached_class(it),
            size: v.nbytes() as usize,
        };
        let now = self.now();
        self.logger.eviction(&entry, now);
    }
}
