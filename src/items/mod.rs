//! Items: where values live, how they are found, and how they leave.
//!
//! `Cache` ties the slab arena to a hash table and one LRU list per slab
//! class. It implements memcached's storage semantics (set/add/replace/
//! append/prepend/cas, incr/decr, touch, delete, flush_all) and its memory
//! policy: a class that cannot get a chunk first reclaims expired items at
//! its LRU tail, then evicts the tail -- or, with `-M`, fails so the client
//! sees `SERVER_ERROR out of memory storing object` and nothing stored is
//! lost.
//!
//! There is one thread and no reference counts: every operation finishes
//! before the next begins, and callers copy what they read before calling
//! again. Whatever may evict (an allocation) is done before an existing
//! item is looked up, never between the lookup and its use.

pub(crate) mod automove;
mod changes;
pub(crate) mod clock;
pub(crate) mod crawler;
mod ext;
mod given;
pub(crate) mod hash;
pub(crate) mod item;
mod log;
pub(crate) mod lru;
pub(crate) mod maintainer;
mod meta;
mod pair;
pub(crate) mod rebalance;
pub(crate) mod warm;

pub(crate) use crate::extstore::{SavedPage, SavedPages};
use crate::logger::{self, FetchStatus, Logger};
use crate::settings::Settings;
use crate::slab::{ChunkRef, NIL, SlabConfig, Slabs};
pub(crate) use changes::{Change, ChangeSink, ItemState, Marks};
use clock::Clock;
pub(crate) use ext::{COPY_READ_AHEAD, CopyFetch, ExtFetch, ExtTier};
pub(crate) use given::GivenItem;
use hash::HashTable;
use item::{CHUNKED, LINKED};
use lru::Lru;
use maintainer::LruTuning;
pub(crate) use meta::{MetaDelete, MetaDelta};
use std::io::{self, Write as _};

pub(crate) struct CacheConfig {
    pub(crate) slab: SlabConfig,
    pub(crate) item_size_max: usize,
    pub(crate) use_cas: bool,
    pub(crate) evict_to_free: bool,
    pub(crate) hashpower: u32,
    pub(crate) hash_expand: bool,
    pub(crate) hash_seed: u64,
}

impl CacheConfig {
    /// The cache the server's command line asks for, with a fresh random
    /// hash seed.
    pub(crate) fn from_settings(s: &Settings) -> CacheConfig {
        CacheConfig {
            slab: SlabConfig {
                mem_limit: s.max_bytes,
                min_space: s.chunk_size,
                factor: s.factor,
                page_size: s.slab_page_size,
                chunk_max: s.slab_chunk_size_max,
                initial_malloced: initial_malloced(),
                preallocated: s.large_pages || s.memory_file.is_some(),
                lock_memory: s.lock_memory,
            },
            item_size_max: s.item_size_max,
            use_cas: s.use_cas,
            evict_to_free: s.evict_to_free,
            hashpower: s.hashpower_init,
            hash_expand: s.hash_expand,
            hash_seed: random_seed(),
        }
    }
}

/// memcached's hook for its test suite, read by release builds too:
/// `T_MEMD_INITIAL_MALLOC` fakes how many bytes of pages are already
/// handed out (shown as `total_malloced`, counted against `-m`), so a
/// test can reach a multi-gigabyte limit without touching the memory.
/// Unset or not a number: 0. (1.6.18's `t/64bit.t` also sets
/// `T_MEMD_SLABS_ALLOC`, which that memcached no longer reads: pages are
/// not preallocated without `-L`, here or there.)
fn initial_malloced() -> usize {
    std::env::var_os("T_MEMD_INITIAL_MALLOC")
        .and_then(|v| crate::numbers::safe_strtoll(v.as_encoded_bytes()))
        .map_or(0, |v| v as usize)
}

/// Eight bytes from the kernel, or the time and pid when it has none.
pub(crate) fn random_seed() -> u64 {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ (std::process::id() as u64) << 32;
    }
    u64::from_ne_bytes(buf)
}

#[cfg(test)]
impl CacheConfig {
    /// memcached's default class table over `mb` megabytes: what unit
    /// tests start from, overriding a field or two.
    pub(crate) fn for_tests(mb: usize) -> CacheConfig {
        CacheConfig {
            slab: SlabConfig {
                mem_limit: mb << 20,
                min_space: 48,
                factor: 1.25,
                page_size: 1 << 20,
                chunk_max: 512 << 10,
                initial_malloced: 0,
                preallocated: false,
                lock_memory: false,
            },
            item_size_max: 1 << 20,
            use_cas: true,
            evict_to_free: true,
            hashpower: 0,
            hash_expand: true,
            hash_seed: 7,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AllocError {
    /// Bigger than `-I` allows.
    TooLarge,
    /// No chunk could be had (only possible with `-M`, or for large items).
    NoMemory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreResult {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delta {
    /// The new value; `len` bytes of decimal text.
    Value(u64),
    NonNumeric,
    NoMemory,
    NotFound,
}

/// Per-class counters memcached reports in `stats slabs` / `stats items`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClassStats {
    pub(crate) set_cmds: u64,
    pub(crate) get_hits: u64,
    pub(crate) touch_hits: u64,
    pub(crate) delete_hits: u64,
    pub(crate) cas_hits: u64,
    pub(crate) cas_badval: u64,
    pub(crate) incr_hits: u64,
    pub(crate) decr_hits: u64,
    pub(crate) evicted: u64,
    pub(crate) evicted_nonzero: u64,
    pub(crate) evicted_time: u32,
    pub(crate) evicted_unfetched: u64,
    pub(crate) outofmemory: u64,
    pub(crate) reclaimed: u64,
    pub(crate) expired_unfetched: u64,
    /// Sum of memcached's size formula over the class's items.
    pub(crate) mem_requested: u64,
    pub(crate) crawler_reclaimed: u64,
    pub(crate) crawler_items_checked: u64,
    pub(crate) evicted_active: u64,
    pub(crate) moves_to_cold: u64,
    pub(crate) moves_to_warm: u64,
    pub(crate) moves_within_lru: u64,
    pub(crate) direct_reclaims: u64,
    /// `get` hits by the segment the item was in (HOT, WARM, COLD, TEMP).
    pub(crate) lru_hits: [u64; 4],
}

#[derive(Debug, Default)]
pub(crate) struct ItemStats {
    pub(crate) curr_items: u64,
    pub(crate) total_items: u64,
    /// Sum of memcached's size formula over linked items (`bytes`).
    pub(crate) bytes: u64,
    pub(crate) evictions: u64,
    pub(crate) reclaimed: u64,
    pub(crate) expired_unfetched: u64,
    pub(crate) evicted_unfetched: u64,
    pub(crate) get_expired: u64,
    pub(crate) get_flushed: u64,
    pub(crate) crawler_reclaimed: u64,
    pub(crate) crawler_items_checked: u64,
    pub(crate) lru_crawler_starts: u64,
    pub(crate) lru_maintainer_juggles: u64,
    pub(crate) slabs_moved: u64,
    pub(crate) slab_reassign_rescues: u64,
    pub(crate) slab_reassign_chunk_rescues: u64,
    pub(crate) slab_reassign_evictions_nomem: u64,
    pub(crate) slab_reassign_busy_items: u64,
    pub(crate) classes: Vec<ClassStats>,
}

/// `stats sizes`: live items by size (memcached's formula), 32-byte buckets.
#[derive(Debug)]
pub(crate) struct SizeHistogram {
    pub(crate) buckets: Vec<u32>,
    /// Items older than the histogram (by CAS) were never counted in it.
    cas_min: u64,
}

impl SizeHistogram {
    fn bucket(ntotal: usize) -> usize {
        ntotal.div_ceil(32)
    }
}

pub(crate) struct Cache {
    pub(crate) slabs: Slabs,
    pub(crate) hash: HashTable,
    /// Four per class (see `lru.rs`), indexed by `lru::index`.
    lrus: Vec<Lru>,
    pub(crate) clock: Clock,
    cfg: CacheConfig,
    cas_id: u64,
    oldest_live: u32,
    oldest_cas: u64,
    pub(crate) stats: ItemStats,
    /// The server's `-v` level, for memcached's item-level traces.
    pub(crate) verbose: u8,
    /// Present while size tracking is on (`-o track_sizes`, `stats
    /// sizes_enable`).
    pub(crate) sizes: Option<SizeHistogram>,
    /// The LRU crawler's current walk, if any.
    crawl: Option<crawler::CrawlJob>,
    /// Whether the crawler runs (`lru_crawler enable|disable`).
    pub(crate) crawler_running: bool,
    /// A `flush_all` left every item in place, flushed: the automatic crawl
    /// should come at once rather than on its schedule, so their chunks
    /// free up (and `slabs automove` can give idle pages back to the pool).
    pub(crate) crawl_soon: bool,
    /// The LRU's knobs: segmented or flat, the segments' shares, the
    /// maintainer on or off (see `maintainer.rs`).
    lru: LruTuning,
    /// The maintainer's schedule and queued bumps.
    maint: maintainer::Maintainer,
    /// For each largest-class chunk position (arena offset / chunk_max): the
    /// header of the chunked item whose value it holds, or NIL.
    body_owner: Vec<ChunkRef>,
    /// A page move asked for and not yet done.
    pub(crate) rebalance: Option<rebalance::Move>,
    /// Per class, the eviction count seen by the last `slabs automove 2`
    /// check.
    automove_seen: Vec<u64>,
    /// `slabs automove 1`'s window of history.
    automove: automove::Automove,
    /// Items referenced by `mg` replies not yet written (see `meta.rs`).
    pins: Vec<ChunkRef>,
    /// Where changes are reported, when persistence or replication is on
    /// (see `changes.rs`).
    changes: Option<Box<dyn ChangeSink>>,
    /// The relative time a delayed `flush_all` takes effect.
    flush_at: Option<u32>,
    /// The `watch` log streams (see `logger/`); idle without
    /// watchers.
    pub(crate) logger: Logger,
    /// Why the last lookup found nothing, for the fetch log.
    last_miss: FetchStatus,
    /// Under replication, the parity of every CAS value this node hands out.
    cas_lane: Option<u64>,
    /// The append-only file is failing: the protocols answer mutations with
    /// an error before they change anything (set by the event loop).
    pub(crate) writes_refused: bool,
    /// The flash tier, with `-o ext_path` (see `ext.rs`).
    pub(crate) ext: Option<Box<ExtTier>>,
}

/// How many times an allocation retries after freeing something.
const ALLOC_TRIES: usize = 10;

impl Cache {
    pub(crate) fn new(cfg: CacheConfig) -> io::Result<Cache> {
        let slabs = Slabs::new(cfg.slab)?;
        Ok(Cache::with_slabs(cfg, slabs))
    }

    /// A cache over slabs made by the caller (for `-e`, over a memory file).
    pub(crate) fn with_slabs(cfg: CacheConfig, slabs: Slabs) -> Cache {
        let nclasses = slabs.largest() as usize + 1;
        let power = if cfg.hashpower == 0 {
            16
        } else {
            cfg.hashpower
        };
        Cache {
            hash: HashTable::new(power, cfg.hash_expand, cfg.hash_seed),
            lrus: (0..nclasses * lru::SEGMENTS.len())
                .map(|_| Lru::default())
                .collect(),
            clock: Clock::new(),
            cas_id: 0,
            oldest_live: 0,
            oldest_cas: 0,
            stats: ItemStats {
                classes: vec![ClassStats::default(); nclasses],
                ..ItemStats::default()
            },
            slabs,
            cfg,
            verbose: 0,
            sizes: None,
            crawl: None,
            crawler_running: false,
            crawl_soon: false,
            lru: LruTuning::default(),
            maint: maintainer::Maintainer::default(),
            body_owner: Vec::new(),
            rebalance: None,
            automove_seen: Vec::new(),
            automove: automove::Automove::default(),
            pins: Vec::new(),
            changes: None,
            flush_at: None,
            logger: Logger::new(256 * 1024),
            last_miss: FetchStatus::NotFound,
            cas_lane: None,
            writes_refused: false,
            ext: None,
        }
    }

    pub(crate) fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    pub(crate) fn now(&self) -> u32 {
        self.clock.now
    }

    /// Items of class `id`, in all its segments.
    pub(crate) fn lru_len(&self, id: u8) -> usize {
        lru::SEGMENTS.iter().map(|&s| self.segment_len(id, s)).sum()
    }

    /// The items of class `id`'s COLD segment, newest first (what
    /// memcached's `stats cachedump` walks; flat, every item).
    pub(crate) fn lru_iter(&self, id: u8) -> impl Iterator<Item = ChunkRef> + '_ {
        self.segment_iter(id, lru::COLD)
    }

    /// The items of segment `seg` of class `id`, newest first.
    pub(crate) fn segment_iter(&self, id: u8, seg: u8) -> impl Iterator<Item = ChunkRef> + '_ {
        let mut it = self.lrus[lru::index(id | seg)].head;
        std::iter::from_fn(move || {
            if it == NIL {
                return None;
            }
            let cur = it;
            it = self.view(cur).next();
            Some(cur)
        })
    }

    /// Age in seconds of the oldest item in class `id`'s COLD segment
    /// (memcached's `age`, and what its page mover compares).
    pub(crate) fn lru_tail_age(&self, id: u8) -> u32 {
        self.segment_tail_age(id, lru::COLD)
    }

    /// The key of `it`, copied into `buf`.
    fn key_copy<'b>(&self, it: ChunkRef, buf: &'b mut [u8; 256]) -> &'b [u8] {
        let key = self.view(it).key();
        buf[..key.len()].copy_from_slice(key);
        &buf[..key.len()]
    }

    fn next_cas(&mut self) -> u64 {
        self.cas_id += 1;
        // A replicated pair keeps to odd or even values (see pair.rs).
        if let Some(lane) = self.cas_lane
            && self.cas_id % 2 != lane
        {
            self.cas_id += 1;
        }
        self.cas_id
    }

    fn hv(&self, key: &[u8]) -> u64 {
        hash::hash(key, self.hash.seed)
    }

    /// A hint that `key` is looked up soon (the next keys of a multi-key
    /// get, of a pipelined batch): its hash bucket starts loading now, so
    /// that lookup does not wait on memory. Nothing changes. The key's
    /// hash comes back for `prefetch_item`.
    #[inline]
    pub(crate) fn prefetch_key(&self, key: &[u8]) -> KeyHint {
        let hv = self.hv(key);
        self.hash.prefetch(hv);
        KeyHint(hv)
    }

    /// The second step after `prefetch_key`, once its bucket is likely in
    /// the cache: the first item of the key's chain starts loading (the
    /// item itself unless the bucket is shared).
    #[inline]
    pub(crate) fn prefetch_item(&self, hint: KeyHint) {
        self.hash.prefetch_head(&self.slabs.arena, hint.0);
    }

    // ----- reading items -------------------------------------------------

    pub(crate) fn view(&self, it: ChunkRef) -> item::View<'_> {
        item::view(&self.slabs.arena, it)
    }

    /// The class whose statistics an item counts toward.
    pub(crate) fn class_of(&self, it: ChunkRef) -> u8 {
        self.view(it).class()
    }

    /// Counts a `get` hit on `it` toward its class and the segment it is in
    /// (memcached's `lru_hits`, shown as `hits_to_hot` ...).
    pub(crate) fn count_get_hit(&mut self, it: ChunkRef) {
        let v = self.view(it);
        let (c, seg) = (v.class() as usize, lru::ordinal(v.lru()));
        let cs = &mut self.stats.classes[c];
        cs.get_hits += 1;
        cs.lru_hits[seg] += 1;
    }

    /// The value of `it`, as one slice per chunk it is stored in.
    pub(crate) fn value_segments(&self, it: ChunkRef) -> Segments<'_> {
        let v = self.view(it);
        // A flash item's value is not in the arena (see `ext.rs`).
        let left = if v.xflags() & item::EXT != 0 {
            0
        } else {
            v.nbytes() as usize
        };
        Segments {
            cache: self,
            body: v.body_offset(),
            chunked: v.is(CHUNKED),
            left,
            index: 0,
        }
    }

    /// The writable run of value bytes starting at `pos`, up to the end of
    /// the chunk that holds `pos`: lets the reactor read a value from the
    /// socket straight into the item.
    pub(crate) fn value_window_mut(&mut self, it: ChunkRef, pos: usize) -> &mut [u8] {
        let (off, len) = self.window(it, pos);
        self.slabs.arena.bytes_mut(off, len)
    }

    fn is_flushed(&self, it: ChunkRef) -> bool {
        let oldest = self.oldest_live;
        if oldest == 0 || oldest > self.now() {
            return false;
        }
        let v = self.view(it);
        let cas = v.cas();
        v.time() <= oldest || (self.oldest_cas != 0 && cas != 0 && cas < self.oldest_cas)
    }

    fn is_expired(&self, it: ChunkRef) -> bool {
        let exp = self.view(it).exptime();
        exp != 0 && exp <= self.now()
    }

    /// memcached's `do_item_get`: finds a live item, unlinking one that has
    /// expired or been flushed. `bump` marks it fetched and refreshes its
    /// LRU position. Traced at `-vvv` as memcached traces it.
    /// Logged to `watch fetchers` as memcached logs it.
    fn find(&mut self, key: &[u8], bump: bool) -> Option<ChunkRef> {
        let live = self.lookup(key, bump, self.verbose > 2);
        if self.logger.wants(logger::FETCHERS) {
            self.log_fetch(key, live);
        }
        live
    }

    /// memcached logs a fetch after the lookup: with the item's class and
    /// size when live, else why not (the lookup left its verdict).
    fn log_fetch(&mut self, key: &[u8], live: Option<ChunkRef>) {
        let cfd = self.logger.cfd;
        let (found, clsid, size) = match live {
            Some(it) => (
                FetchStatus::Found,
                self.memcached_class(it),
                self.view(it).nbytes() as usize,
            ),
            None => (self.last_miss, 0, 0),
        };
        self.logger.item_get(key, found, clsid, cfd, size);
    }

    fn lookup(&mut self, key: &[u8], bump: bool, trace: bool) -> Option<ChunkRef> {
        let hv = self.hv(key);
        let found = self.hash.find(&self.slabs.arena, key, hv);
        self.last_miss = FetchStatus::NotFound;
        let mut note = "";
        let live = match found {
            Some(it) if self.is_flushed(it) => {
                self.unlink(it);
                self.stats.get_flushed += 1;
                self.last_miss = FetchStatus::Flushed;
                note = " -nuked by flush";
                None
            }
            Some(it) if self.is_expired(it) => {
                self.unlink(it);
                self.stats.get_expired += 1;
                self.last_miss = FetchStatus::Expired;
                note = " -nuked by expire";
                None
            }
            other => other,
        };
        if trace {
            let what = if found.is_some() {
                "FOUND KEY"
            } else {
                "NOT FOUND"
            };
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "> {what} ");
            let _ = err.write_all(key);
            let _ = writeln!(err, "{note}");
        }
        if let (Some(it), true) = (live, bump) {
            self.bump(it);
        }
        live
    }

    /// A fetch (`get`/`gets`, or `gat`/`gats` with a new expiry).
    pub(crate) fn get(&mut self, key: &[u8], touch: Option<u32>) -> Option<ChunkRef> {
        let it = self.find(key, true)?;
        if let Some(exptime) = touch {
            item::view_mut(&mut self.slabs.arena, it).set_exptime(exptime);
            self.log_touch(it);
        }
        Some(it)
    }

    /// `touch`: a new expiry without fetching the value.
    pub(crate) fn touch(&mut self, key: &[u8], exptime: u32) -> bool {
        match self.find(key, true) {
            Some(it) => {
                item::view_mut(&mut self.slabs.arena, it).set_exptime(exptime);
                self.log_touch(it);
                let c = self.class_of(it) as usize;
                self.stats.classes[c].touch_hits += 1;
                true
            }
            None => false,
        }
    }

    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        match self.find(key, false) {
            Some(it) => {
                let c = self.class_of(it) as usize;
                self.stats.classes[c].delete_hits += 1;
                self.unlink(it);
                self.log_delete(key);
                true
            }
            None => false,
        }
    }

    /// `flush_all [delay]`, with memcached's arithmetic: items last touched
    /// at or before the cut-off (or, for an immediate flush, with an older
    /// CAS) read as absent from the cut-off on.
    pub(crate) fn flush_all(&mut self, delay: i32) {
        // Under replication CAS values come from two nodes, so "older than
        // the flush's CAS" cannot tell flushed items from new ones: an
        // immediate flush removes every item at once instead.
        if self.cas_lane.is_some() && delay <= 0 {
            self.wipe();
            self.log_flush(self.now());
            return;
        }
        let new_oldest = if delay > 0 {
            self.clock.realtime(delay as i64)
        } else {
            self.now()
        };
        self.flush_from(new_oldest, delay > 0);
    }

    /// Sets the flush cut-off (relative time); `delayed` if it lies ahead.
    fn flush_from(&mut self, new_oldest: u32, delayed: bool) {
        if self.cfg.use_cas {
            self.oldest_live = new_oldest.wrapping_sub(1);
            if self.oldest_live <= self.now() {
                self.oldest_cas = self.next_cas();
            }
        } else {
            self.oldest_live = new_oldest;
        }
        self.flush_at = delayed.then_some(new_oldest);
        self.crawl_soon |= !delayed;
        self.log_flush(new_oldest);
    }

    /// Unlinks `key` if present, counting nothing: a `set` that could not
    /// be stored removes the value it was meant to replace.
    pub(crate) fn delete_quietly(&mut self, key: &[u8]) {
        if let Some(it) = self.find(key, false) {
            self.unlink(it);
            self.log_delete(key);
        }
    }

    /// Counts a storage command against the class of its item, for a data
    /// block that was refused before `store`.
    pub(crate) fn count_set(&mut self, it: ChunkRef) {
        let c = self.class_of(it) as usize;
        self.stats.classes[c].set_cmds += 1;
    }

    /// `stats reset` for item counters (not gauges such as curr_items).
    pub(crate) fn reset_stats(&mut self) {
        let s = &mut self.stats;
        s.total_items = 0;
        s.evictions = 0;
        s.reclaimed = 0;
        s.expired_unfetched = 0;
        s.evicted_unfetched = 0;
        s.get_expired = 0;
        s.get_flushed = 0;
        s.lru_maintainer_juggles = 0;
        self.logger.reset_stats();
        for c in s.classes.iter_mut() {
            // mem_requested is a gauge, not a counter.
            *c = ClassStats {
                mem_requested: c.mem_requested,
                ..ClassStats::default()
            };
        }
    }

    /// Moves some hash buckets while the table grows (called when idle).
    pub(crate) fn rehash_step(&mut self, buckets: usize) -> bool {
        self.hash.migrate(&mut self.slabs.arena, buckets)
    }

    // ----- making items --------------------------------------------------

    /// Whether an item of this shape is within `-I`, judged with
    /// memcached's own size formula so the boundary is the same.
    pub(crate) fn size_ok(&self, nkey: usize, nbytes: usize, flags: u32) -> bool {
        item::memcached_ntotal(nkey, nbytes, flags, self.cfg.use_cas) <= self.cfg.item_size_max
    }

    /// A new, unlinked item with room for `nbytes` of value. Its value must
    /// be filled in, then it is either stored or freed.
    pub(crate) fn alloc(
        &mut self,
        key: &[u8],
        flags: u32,
        exptime: u32,
        nbytes: usize,
    ) -> Result<ChunkRef, AllocError> {
        if !self.size_ok(key.len(), nbytes, flags) {
            return Err(AllocError::TooLarge);
        }
        let chunk_max = self.slabs.chunk_max();
        let inline = item::inline_size(key.len(), nbytes);
        let it = if inline <= chunk_max {
            let id = self.slabs.class_for(inline).unwrap();
            let it = self.alloc_chunk(id).ok_or(AllocError::NoMemory)?;
            self.init_header(it, key, flags, exptime, nbytes, id, 0);
            it
        } else {
            self.alloc_chunked(key, flags, exptime, nbytes)?
        };
        Ok(it)
    }

    #[allow(clippy::too_many_arguments)]
    fn init_header(
        &mut self,
        it: ChunkRef,
        key: &[u8],
        flags: u32,
        exptime: u32,
        nbytes: usize,
        lru: u8,
        iflags: u8,
    ) {
        let now = self.now();
        let lru = lru | self.entry_segment(exptime);
        let mut v = item::view_mut(&mut self.slabs.arena, it);
        v.set_h_next(NIL);
        v.set_prev(NIL);
        v.set_next(NIL);
        v.set_time(now);
        v.set_exptime(exptime);
        v.set_nbytes(nbytes as u32);
        v.set_cas(0);
        v.set_flags(flags);
        v.set_iflags(iflags | item::ALLOCATED);
        v.set_xflags(0);
        v.set_lru(lru);
        v.set_key(key);
    }

    /// A value bigger than the largest chunk: a header chunk holding the
    /// key and a list of full-size chunks from the largest class. Large
    /// items sit in the largest class's LRU, so evicting there frees the
    /// chunks they need.
    fn alloc_chunked(
        &mut self,
        key: &[u8],
        flags: u32,
        exptime: u32,
        nbytes: usize,
    ) -> Result<ChunkRef, AllocError> {
        let largest = self.slabs.largest();
        let chunk_max = self.slabs.chunk_max();
        let head_size = item::chunked_header_size(key.len(), nbytes, chunk_max);
        let head_class = self
            .slabs
            .class_for(head_size)
            .ok_or(AllocError::TooLarge)?;
        let nchunks = nbytes.div_ceil(chunk_max);
        let head = self.alloc_chunk(head_class).ok_or(AllocError::NoMemory)?;
        self.init_header(head, key, flags, exptime, nbytes, largest, CHUNKED);
        let list = item::view(&self.slabs.arena, head).body_offset();
        for i in 0..nchunks {
            match self.alloc_chunk(largest) {
                Some(c) => {
                    self.slabs.arena.write_u32(list + 4 * i, c);
                    self.set_body_owner(c, head);
                }
                None => {
                    for j in 0..i {
                        let c = self.slabs.arena.read_u32(list + 4 * j);
                        self.free_body(c);
                    }
                    item::view_mut(&mut self.slabs.arena, head).set_iflags(0);
                    self.slabs.free(head, head_class);
                    return Err(AllocError::NoMemory);
                }
            }
        }
        Ok(head)
    }

    /// A chunk of class `id`, reclaiming or evicting from its LRU as needed
    /// (see `maintainer.rs`).
    fn alloc_chunk(&mut self, id: u8) -> Option<ChunkRef> {
        let got = self.alloc_pull(id);
        if got.is_none() {
            self.stats.classes[id as usize].outofmemory += 1;
        }
        got
    }

    /// Frees an item that was never linked (a failed or abandoned store).
    pub(crate) fn free_unlinked(&mut self, it: ChunkRef) {
        debug_assert!(!self.view(it).is(LINKED));
        self.free_chunks(it);
    }

    fn free_chunks(&mut self, it: ChunkRef) {
        self.unpin(it);
        let v = self.view(it);
        if v.is(CHUNKED) {
            let chunk_max = self.slabs.chunk_max();
            let list = v.body_offset();
            let n = (v.nbytes() as usize).div_ceil(chunk_max);
            for i in 0..n {
                let c = self.slabs.arena.read_u32(list + 4 * i);
                self.free_body(c);
            }
        }
        item::view_mut(&mut self.slabs.arena, it).set_iflags(0);
        let id = self.slabs.class_of(it);
        self.slabs.free(it, id);
    }

    fn body_index(&self, chunk: ChunkRef) -> usize {
        Slabs::offset(chunk) / self.slabs.chunk_max()
    }

    fn set_body_owner(&mut self, chunk: ChunkRef, owner: ChunkRef) {
        let i = self.body_index(chunk);
        if self.body_owner.len() <= i {
            let len = self.slabs.arena.len() / self.slabs.chunk_max() + 1;
            self.body_owner.resize(len, NIL);
        }
        self.body_owner[i] = owner;
    }

    /// The chunked item whose value `chunk` holds, if it holds one.
    pub(crate) fn body_owner(&self, chunk: ChunkRef) -> Option<ChunkRef> {
        let owner = *self.body_owner.get(self.body_index(chunk))?;
        (owner != NIL).then_some(owner)
    }

    /// Frees a chunk that held value bytes of a chunked item; its header
    /// byte positions held raw data, so the flags byte is cleared.
    fn clear_body_owner(&mut self, chunk: ChunkRef) {
        let i = self.body_index(chunk);
        self.body_owner[i] = NIL;
    }

    fn free_body(&mut self, chunk: ChunkRef) {
        self.clear_body_owner(chunk);
        self.slabs
            .arena
            .bytes_mut(Slabs::offset(chunk) + item::IFLAGS_OFFSET, 1)[0] = 0;
        let largest = self.slabs.largest();
        self.slabs.free(chunk, largest);
    }

    fn link(&mut self, it: ChunkRef) {
        self.link_with(it, None);
    }

    /// Links `it` with the given CAS, or a new one; logs it to the feed.
    fn link_with(&mut self, it: ChunkRef, cas: Option<u64>) {
        let cas = match cas {
            Some(cas) => cas,
            None if self.cfg.use_cas => self.next_cas(),
            None => 0,
        };
        let now = self.now();
        let hv = self.hv(self.view(it).key());
        let mut v = item::view_mut(&mut self.slabs.arena, it);
        v.add_flag(LINKED);
        v.set_time(now);
        v.set_cas(cas);
        let lru_id = v.lru();
        let id = lru_id & lru::CLASS_MASK;
        self.hash.insert(&mut self.slabs.arena, it, hv);
        let size = self.memcached_size(it);
        let list = &mut self.lrus[lru::index(lru_id)];
        list.push_head(&mut self.slabs.arena, it);
        list.bytes += size as u64;
        self.stats.curr_items += 1;
        self.stats.total_items += 1;
        self.stats.bytes += size as u64;
        self.stats.classes[id as usize].mem_requested += size as u64;
        self.count_size(size, cas, true);
        self.log_put(it);
    }

    /// Adds or removes an item of memcached size `ntotal` in the size
    /// histogram, when it is on.
    fn count_size(&mut self, ntotal: usize, cas: u64, add: bool) {
        if let Some(h) = &mut self.sizes
            && cas >= h.cas_min
        {
            let b = SizeHistogram::bucket(ntotal);
            if let Some(n) = h.buckets.get_mut(b) {
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
            }
        }
    }

    /// Turns size tracking on (`stats sizes_enable`); false if CAS is off,
    /// which memcached needs to tell old items from new.
    pub(crate) fn enable_sizes(&mut self) -> bool {
        if !self.cfg.use_cas {
            return false;
        }
        self.start_sizes();
        true
    }

    /// Size tracking from start-up (`-o track_sizes`), when every item is
    /// new; takes a CAS id as memcached does.
    pub(crate) fn start_sizes(&mut self) {
        if self.sizes.is_none() {
            let cas_min = if self.cfg.use_cas { self.next_cas() } else { 0 };
            self.sizes = Some(SizeHistogram {
                buckets: vec![0; self.cfg.item_size_max / 32 + 1],
                cas_min,
            });
        }
    }

    fn unlink(&mut self, it: ChunkRef) {
        let v = self.view(it);
        let hv = self.hv(v.key());
        let (lru_id, id) = (v.lru(), v.class());
        let size = self.memcached_size(it);
        let cas = v.cas();
        self.hash.remove(&mut self.slabs.arena, it, hv);
        let list = &mut self.lrus[lru::index(lru_id)];
        list.unlink(&mut self.slabs.arena, it);
        list.bytes -= size as u64;
        self.stats.curr_items -= 1;
        self.stats.bytes -= size as u64;
        self.stats.classes[id as usize].mem_requested -= size as u64;
        self.count_size(size, cas, false);
        self.ext_forget_item(it);
        self.free_chunks(it);
    }

    fn replace(&mut self, old: ChunkRef, new: ChunkRef) {
        self.unlink(old);
        self.link(new);
    }

    /// Stores a filled-in item under `mode`; the item is consumed either
    /// way (linked, or freed when not stored). `cas_in` is the client's
    /// CAS for `cas` (0 otherwise). Not logged (`store` logs it).
    fn store_unlogged(&mut self, it: ChunkRef, mode: StoreMode, cas_in: u64) -> StoreResult {
        let c = self.class_of(it) as usize;
        self.stats.classes[c].set_cmds += 1;
        // Appending allocates, which may evict: do it before looking up the
        // old item so the lookup cannot go stale.
        if matches!(mode, StoreMode::Append | StoreMode::Prepend) {
            return self.store_concat(it, mode, cas_in);
        }
        // The key is copied out of the arena (onto the stack) because the
        // lookup needs the cache mutably.
        let mut kbuf = [0u8; 256];
        let key = self.key_copy(it, &mut kbuf);
        let old = self.find(key, false);
        let result = match (old, mode) {
            (Some(old), StoreMode::Add) => {
                self.update(old);
                StoreResult::NotStored
            }
            (Some(old), StoreMode::Cas) => {
                let oc = self.class_of(old) as usize;
                if cas_in != 0 && cas_in == self.view(old).cas() {
                    self.stats.classes[oc].cas_hits += 1;
                    self.replace(old, it);
                    return StoreResult::Stored;
                }
                self.stats.classes[oc].cas_badval += 1;
                if self.verbose > 1 {
                    let expected = self.view(old).cas();
                    eprintln!("CAS:  failure: expected {expected}, got {cas_in}");
                }
                StoreResult::Exists
            }
            (Some(old), _) => {
                self.replace(old, it);
                return StoreResult::Stored;
            }
            (None, StoreMode::Set | StoreMode::Add) => {
                self.link(it);
                return StoreResult::Stored;
            }
            (None, StoreMode::Cas) => StoreResult::NotFound,
            (None, _) => StoreResult::NotStored,
        };
        self.free_unlinked(it);
        result
    }

    fn store_concat(&mut self, it: ChunkRef, mode: StoreMode, cas_in: u64) -> StoreResult {
        let mut kbuf = [0u8; 256];
        let key = self.key_copy(it, &mut kbuf);
        let add_len = self.view(it).nbytes() as usize;
        // Size the new item from the current value, allocate, and only then
        // take the old item (an eviction in between just means NOT_STORED).
        let Some(old) = self.find(key, false) else {
            self.free_unlinked(it);
            return StoreResult::NotStored;
        };
        let ov = self.view(old);
        if ov.xflags() & item::EXT != 0 {
            // As memcached: the value would have to come back first.
            self.free_unlinked(it);
            return StoreResult::NotStored;
        }
        if cas_in != 0 && cas_in != ov.cas() {
            self.free_unlinked(it);
            return StoreResult::Exists;
        }
        let (flags, exptime, old_len) = (ov.flags(), ov.exptime(), ov.nbytes() as usize);
        let new = match self.alloc(key, flags, exptime, old_len + add_len) {
            Ok(new) => new,
            Err(_) => {
                self.free_unlinked(it);
                return StoreResult::NotStored;
            }
        };
        let old = match self.lookup(key, false, false) {
            Some(o) if self.view(o).nbytes() as usize == old_len => o,
            _ => {
                self.free_unlinked(new);
                self.free_unlinked(it);
                return StoreResult::NotStored;
            }
        };
        let (first, second) = if mode == StoreMode::Append {
            (old, it)
        } else {
            (it, old)
        };
        let first_len = self.view(first).nbytes() as usize;
        self.copy_value(first, new, 0);
        self.copy_value(second, new, first_len);
        self.free_unlinked(it);
        self.replace(old, new);
        StoreResult::Stored
    }

    /// Copies the whole value of `from` into `to` at value position `at`.
    fn copy_value(&mut self, from: ChunkRef, to: ChunkRef, at: usize) {
        let total = self.view(from).nbytes() as usize;
        let mut done = 0;
        while done < total {
            let (src, src_len) = self.window(from, done);
            let (dst, dst_len) = self.window(to, at + done);
            let n = src_len.min(dst_len);
            self.slabs.arena.copy_within(src, dst, n);
            done += n;
        }
    }

    /// Arena offset of value position `pos` of `it`, and how many value
    /// bytes follow it contiguously.
    fn window(&self, it: ChunkRef, pos: usize) -> (usize, usize) {
        let v = self.view(it);
        let nbytes = v.nbytes() as usize;
        debug_assert!(pos <= nbytes);
        if !v.is(CHUNKED) {
            return (v.body_offset() + pos, nbytes - pos);
        }
        let chunk_max = self.slabs.chunk_max();
        let index = pos / chunk_max;
        let chunk = self.slabs.arena.read_u32(v.body_offset() + 4 * index);
        let seg_len = chunk_max.min(nbytes - index * chunk_max);
        let within = pos % chunk_max;
        (Slabs::offset(chunk) + within, seg_len - within)
    }

    /// `incr`/`decr` as memcached does them: the value must read as an
    /// unsigned decimal; incr wraps at 2^64, decr stops at 0; a result that
    /// fits is written in place (space padded, new CAS), otherwise a new
    /// item replaces the old. The same operation as `ma`, without a CAS.
    pub(crate) fn add_delta(&mut self, key: &[u8], incr: bool, delta: u64) -> Delta {
        match self.meta_add_delta(key, incr, delta, 0) {
            MetaDelta::Value { value, .. } => Delta::Value(value),
            MetaDelta::NonNumeric => Delta::NonNumeric,
            MetaDelta::NoMemory => Delta::NoMemory,
            MetaDelta::NotFound => Delta::NotFound,
            MetaDelta::CasMismatch => unreachable!("no CAS was given to compare"),
        }
    }
}

/// Decimal text of `v` in `buf`, without allocating. Two digits a step:
/// every VALUE line writes two or three numbers.
#[inline]
pub(crate) fn format_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    const PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    let mut i = buf.len();
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    &buf[i..]
}

/// Iterator over the stored pieces of one value.
pub(crate) struct Segments<'a> {
    cache: &'a Cache,
    body: usize,
    chunked: bool,
    left: usize,
    index: usize,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let arena = &self.cache.slabs.arena;
        if !self.chunked {
            let n = self.left;
            self.left = 0;
            return Some(arena.bytes(self.body, n));
        }
        let chunk_max = self.cache.slabs.chunk_max();
        let chunk = arena.read_u32(self.body + 4 * self.index);
        let n = self.left.min(chunk_max);
        self.index += 1;
        self.left -= n;
        Some(arena.bytes(Slabs::offset(chunk), n))
    }
}

#[cfg(test)]
mod tests;

/// A key announced by `Cache::prefetch_key`: its hash, kept for the second
/// step so the key is not hashed again.
#[derive(Clone, Copy)]
pub(crate) struct KeyHint(u64);
