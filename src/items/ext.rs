//! Items whose value lives on flash (memcached's `storage.c`).
//!
//! A cold item with a large value is written out as one record (see
//! `extstore/record.rs`) and replaced in RAM by a small header item: the
//! same key, flags, expiry, CAS and `nbytes`, `xflags` EXT, and for a body
//! the record's location. Deleting, replacing, expiring or evicting the
//! header tells the store the record is no longer needed.
//!
//! A fetch of a header is two steps, so that a read never blocks the
//! loop: `ext_prepare` (before the protocol counts anything) starts the
//! read and says whether the connection must wait; once the I/O thread has
//! it, the request runs again and `ext_take` hands over the value, or
//! unlinks the header if the record was gone or damaged (a miss). A record
//! still in a write buffer or in the page cache is in hand at once (see
//! `ExtStore::read`): the request goes on without waiting, and `ext_take`
//! checks it as it checks one an I/O thread read.

use super::Cache;
use super::item::{self, EXT, FETCHED, PINNED};
use crate::extstore::{
    BUCKET_CHUNKED, BUCKET_DEFAULT, BUCKET_LOWTTL, ExtStore, Loc, ReadStart, Ticket, record,
};
use crate::settings::ExtSettings;
use crate::slab::{ChunkRef, NIL};

/// How many items one class may write out per call.
const WRITES_PER_CLASS: usize = 256;
/// memcached's `MIN_PAGES_FREE`: below this many pages' worth of free
/// chunks (and no page in the global pool), age no longer matters.
const MIN_PAGES_FREE: usize = 3;
/// Pages of the global pool that classes of values leave to the others
/// (the item headers' above all) when extstore is on.
const EXT_POOL_RESERVE: usize = 8;

/// The store and what the cache keeps about reads in flight.
pub(crate) struct ExtTier {
    pub(crate) store: ExtStore,
    /// Reads started for a connection: (descriptor, location, whether the
    /// header had been fetched before).
    waiting: Vec<(i32, Loc, bool)>,
    /// Reads finished and not yet taken: None for a miss. `fetched`: the
    /// header had been fetched before, which a recache requires.
    results: Vec<Result_>,
    /// memcached's per-connection `recache_counter`, by descriptor: its
    /// connection objects are kept per descriptor and never reset, so
    /// neither is this.
    recache_counters: Vec<u32>,
    compact: Option<Compaction>,
    /// Cold items wait to go out and every write buffer is on its way to
    /// disk (see `ext_backpressure`).
    stalled: bool,
    /// A compaction read came back.
    compact_span: Option<Option<Vec<u8>>>,
    /// The settings a write-out made by an allocation needs (copied from
    /// each `ext_write_out`: `extstore item_size` may change them).
    item_size: u32,
    low_ttl: u32,
    /// An allocation is writing an item out (its header's allocation must
    /// not write out another).
    writing: bool,
    /// The full copy's reads (see `ext_copy_fetch`), in flight or back.
    copy_reads: Vec<CopyRead>,
}

/// A value the replication full copy reads from flash before it sends
/// the item.
struct CopyRead {
    /// The header's chunk: the walk goes in chunk order, so a read for a
    /// chunk it has passed is no longer wanted.
    chunk: ChunkRef,
    loc: Loc,
    /// None while in flight; then the record, or None if it was gone.
    data: Option<Option<Vec<u8>>>,
}

/// Flash reads the full copy keeps in flight ahead of its walk.
pub(crate) const COPY_READ_AHEAD: usize = 32;

/// Whether the full copy may send a flash item now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CopyFetch {
    /// Its value is in hand (or its record is known gone).
    Ready,
    /// Its read is in flight: the walk waits at it.
    Pending,
}

struct Result_ {
    fd: i32,
    loc: Loc,
    data: Option<Vec<u8>>,
    fetched: bool,
    /// The I/O thread's verdict on the CRC (None: not checked yet).
    crc_ok: Option<bool>,
}

/// A page being compacted: read a write buffer at a time.
struct Compaction {
    page: u16,
    version: u32,
    offset: u32,
    drop_unread: bool,
    reading: bool,
}

/// Values read ahead for keys a multi-get had not reached are kept until
/// it does; if the item changed meanwhile they are never taken. Past this
/// many, the oldest go (a later request reads again).
const RESULTS_KEPT: usize = 4096;

fn push_result(results: &mut Vec<Result_>, r: Result_) {
    if results.len() >= RESULTS_KEPT {
        results.remove(0);
    }
    results.push(r);
}

/// A flash item's value as a get hands it over: the record read back and
/// where the value starts in it (no copy), and whether the header had been
/// fetched before (memcached recaches only items read more than once).
/// Given back with `Cache::ext_recycle` once sent, its buffer serves the
/// next read.
pub(crate) struct ExtValue {
    record: Vec<u8>,
    start: usize,
    pub(crate) fetched: bool,
}

impl ExtValue {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.record[self.start..]
    }
}

/// Whether a get may go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExtFetch {
    /// Not a flash item, or its value (or miss) is in hand.
    Ready,
    /// A read is in flight: wait for it.
    Wait,
    /// No memory for the value read back (memcached's
    /// `get_oom_extstore`): the get fails.
    Oom,
}

impl ExtTier {
    pub(crate) fn new(store: ExtStore) -> ExtTier {
        ExtTier {
            store,
            waiting: Vec::new(),
            results: Vec::new(),
            recache_counters: Vec::new(),
            compact: None,
            stalled: false,
            compact_span: None,
            item_size: u32::MAX,
            low_ttl: 0,
            writing: false,
            copy_reads: Vec::new(),
        }
    }
}

impl Cache {
    pub(crate) fn is_ext(&self, it: ChunkRef) -> bool {
        self.view(it).xflags() & EXT != 0
    }

    fn ext_loc(&self, it: ChunkRef) -> Loc {
        let off = self.view(it).body_offset();
        Loc::from_bytes(self.slabs.arena.bytes(off, Loc::SIZE))
    }

    fn ext_record_len(&self, it: ChunkRef) -> usize {
        let v = self.view(it);
        record::len(v.nkey() as usize, v.nbytes() as usize)
    }

    /// The header is going away: its record is no longer needed.
    pub(super) fn ext_forget_item(&mut self, it: ChunkRef) {
        if !self.is_ext(it) {
            return;
        }
        let (loc, len) = (self.ext_loc(it), self.ext_record_len(it));
        if let Some(tier) = &mut self.ext {
            tier.store.delete(loc, len);
        }
    }

    /// A connection closed: what it waited for is dropped when it comes.
    pub(crate) fn ext_forget_conn(&mut self, fd: i32) {
        if let Some(tier) = &mut self.ext {
            let before = tier.waiting.len();
            tier.waiting.retain(|w| w.0 != fd);
            tier.store.counters.get_aborted += (before - tier.waiting.len()) as u64;
            tier.results.retain(|r| r.fd != fd);
        }
    }

    /// Before a get of `key` for connection `fd`: starts the read of a
    /// flash item's value unless it is in hand. Called for every key of a
    /// get: without extstore it is one test, inlined.
    #[inline]
    pub(crate) fn ext_prepare(&mut self, key: &[u8], fd: i32) -> ExtFetch {
        if self.ext.is_none() {
            return ExtFetch::Ready;
        }
        self.ext_prepare_flash(key, fd)
    }

    fn ext_prepare_flash(&mut self, key: &[u8], fd: i32) -> ExtFetch {
        let Some(tier) = &self.ext else {
            return ExtFetch::Ready;
        };
        let hv = self.hv(key);
        let Some(it) = self.hash.find(&self.slabs.arena, key, hv) else {
            return ExtFetch::Ready;
        };
        if !self.is_ext(it) || self.is_flushed(it) || self.is_expired(it) {
            return ExtFetch::Ready;
        }
        let loc = self.ext_loc(it);
        if tier.results.iter().any(|r| r.fd == fd && r.loc == loc) {
            return ExtFetch::Ready;
        }
        if tier.waiting.iter().any(|w| (w.0, w.1) == (fd, loc)) {
            return ExtFetch::Wait;
        }
        // memcached reads the value into an item it allocates (which may
        // evict): without room for one, the get fails. Here the value is
        // read into a buffer of its own, so the item is only tried.
        let v = self.view(it);
        let (flags, exptime, nbytes) = (v.flags(), v.exptime(), v.nbytes() as usize);
        match self.alloc(key, flags, exptime, nbytes) {
            Ok(probe) => self.free_unlinked(probe),
            Err(_) => {
                self.ext.as_mut().unwrap().store.counters.get_oom += 1;
                return ExtFetch::Oom;
            }
        }
        // The allocation may have evicted the header.
        match self.hash.find(&self.slabs.arena, key, hv) {
            Some(found) if found == it => {}
            _ => return ExtFetch::Ready,
        }
        let len = self.ext_record_len(it);
        let fetched = self.view(it).is(FETCHED);
        let tier = self.ext.as_mut().unwrap();
        tier.store.counters.get_extstore += 1;
        let data = match tier.store.read(loc, len, Ticket::Conn(fd)) {
            ReadStart::Pending => {
                tier.waiting.push((fd, loc, fetched));
                return ExtFetch::Wait;
            }
            ReadStart::Ready(data) => Some(data),
            ReadStart::Gone => None,
        };
        push_result(
            &mut tier.results,
            Result_ {
                fd,
                loc,
                data,
                fetched,
                crc_ok: None,
            },
        );
        ExtFetch::Ready
    }

    /// A get that memcached refuses after looking its keys up (a key too
    /// long further on): it had started a read for each flash item before
    /// it, and aborts them (`get_aborted_extstore`).
    pub(crate) fn ext_abort(&mut self, key: &[u8]) {
        if self.ext.is_none() {
            return;
        }
        let hv = self.hv(key);
        let Some(it) = self.hash.find(&self.slabs.arena, key, hv) else {
            return;
        };
        if self.is_ext(it) && !self.is_flushed(it) && !self.is_expired(it) {
            let c = &mut self.ext.as_mut().unwrap().store.counters;
            c.get_extstore += 1;
            c.get_aborted += 1;
        }
    }

    /// The value of the flash item `it` (found by a get after
    /// `ext_prepare`), or None: the record is gone, and so is the header.
    pub(crate) fn ext_take(&mut self, it: ChunkRef, fd: i32) -> Option<ExtValue> {
        let loc = self.ext_loc(it);
        let Some(tier) = self.ext.as_mut() else {
            // A header kept by `-e` from a run with extstore: its value is
            // out of reach.
            self.unlink(it);
            return None;
        };
        let Some(i) = tier.results.iter().position(|r| r.fd == fd && r.loc == loc) else {
            // Not prepared (a get memcached refuses after looking its keys
            // up): the header stays, and the caller drops its reply.
            return None;
        };
        let result = Some(tier.results.swap_remove(i));
        let value = match result {
            Some(Result_ {
                data: Some(data),
                fetched,
                crc_ok,
                ..
            }) => {
                let key = self.view(it).key();
                let verdict = match crc_ok {
                    Some(true) => record::parse(&data),
                    Some(false) => match record::parse(&data) {
                        record::Check::Good(_) => record::Check::BadCrc,
                        other => other,
                    },
                    None => record::check(&data),
                };
                match verdict {
                    record::Check::Good(p) if p.key == key => {
                        let start = data.len() - p.value.len();
                        Some((data, start, fetched))
                    }
                    record::Check::BadCrc => {
                        self.ext.as_mut().unwrap().store.counters.badcrc += 1;
                        None
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((record, start, fetched)) = value else {
            self.ext.as_mut().unwrap().store.counters.miss += 1;
            self.unlink(it);
            return None;
        };
        Some(ExtValue {
            record,
            start,
            fetched,
        })
    }

    /// A value from `ext_take` has been copied into its reply: its buffer
    /// goes back for the next read.
    pub(crate) fn ext_recycle(&mut self, value: ExtValue) {
        if let Some(tier) = &mut self.ext {
            tier.store.recycle(value.record);
        }
    }

    /// memcached's recache: every `rate`th fetch of a flash item fetched
    /// before brings the value back into RAM (after the reply is built,
    /// since allocating may evict).
    pub(crate) fn ext_recache(
        &mut self,
        key: &[u8],
        value: &[u8],
        rate: u32,
        was_fetched: bool,
        fd: i32,
    ) {
        if self.ext.is_none() || rate == 0 || !was_fetched {
            return;
        }
        let hv = self.hv(key);
        let Some(old) = self.hash.find(&self.slabs.arena, key, hv) else {
            return;
        };
        let v = self.view(old);
        // memcached's test that the header was touched lately, with its
        // unsigned arithmetic: in a process's first minute the bound wraps
        // and nothing is recached. Only then does the counter move.
        let recent = self.now().wrapping_sub(super::clock::ITEM_UPDATE_INTERVAL);
        if v.time() <= recent {
            return;
        }
        let tier = self.ext.as_mut().unwrap();
        let slot = fd.max(0) as usize;
        if tier.recache_counters.len() <= slot {
            tier.recache_counters.resize(slot + 1, 0);
        }
        let turn = tier.recache_counters[slot];
        tier.recache_counters[slot] = turn.wrapping_add(1);
        if !turn.is_multiple_of(rate) {
            return;
        }
        let v = self.view(old);
        let (flags, exptime, cas) = (v.flags(), v.exptime(), v.cas());
        let Ok(new) = self.alloc(key, flags, exptime, value.len()) else {
            return;
        };
        // The allocation may have evicted the header: look again.
        match self.hash.find(&self.slabs.arena, key, hv) {
            Some(o) if o == old && self.is_ext(o) => {}
            _ => return self.free_unlinked(new),
        }
        let mut at = 0;
        while at < value.len() {
            let window = self.value_window_mut(new, at);
            let n = window.len().min(value.len() - at);
            window[..n].copy_from_slice(&value[at..at + n]);
            at += n;
        }
        item::view_mut(&mut self.slabs.arena, new).add_flag(FETCHED);
        self.unlink(old);
        self.link_quietly(new, cas);
        self.ext.as_mut().unwrap().store.counters.recache += 1;
    }

    /// Links an item as a replacement made by the cache itself (a write-out,
    /// a recache): counted as memcached's `item_replace` counts, but not a
    /// change the AOF or the peer should hear of.
    fn link_quietly(&mut self, it: ChunkRef, cas: u64) {
        let sink = self.changes.take();
        self.link_with(it, Some(cas));
        self.changes = sink;
    }

    /// Applies what the I/O threads finished; returns the connections whose
    /// reads came back.
    pub(crate) fn ext_complete(&mut self) -> Vec<i32> {
        let Some(tier) = &mut self.ext else {
            return Vec::new();
        };
        let mut woken = Vec::new();
        let finished = tier.store.complete();
        if tier.store.has_spare_wbuf() {
            tier.stalled = false;
        }
        for f in finished {
            match f.ticket {
                Ticket::Compact => tier.compact_span = Some(f.data),
                Ticket::Copy => {
                    let read = tier.copy_reads.iter_mut().find(|r| r.loc == f.loc);
                    if let Some(r) = read.filter(|r| r.data.is_none()) {
                        r.data = Some(f.data);
                    }
                }
                Ticket::Conn(fd) => {
                    let Some(i) = tier.waiting.iter().position(|w| (w.0, w.1) == (fd, f.loc))
                    else {
                        continue;
                    };
                    let (_, _, fetched) = tier.waiting.swap_remove(i);
                    push_result(
                        &mut tier.results,
                        Result_ {
                            fd,
                            loc: f.loc,
                            data: f.data,
                            fetched,
                            crc_ok: f.crc_ok,
                        },
                    );
                    woken.push(fd);
                }
            }
        }
        woken
    }

    /// memcached's storage writer, run by the loop: for each class holding
    /// values above `ext_item_size`, the items at its LRU tail that have
    /// been idle longer than `ext_item_age` (any age when the class is
    /// short of memory) go to flash. Returns how many went.
    pub(crate) fn ext_write_out(&mut self, s: &ExtSettings) -> usize {
        let Some(tier) = self.ext.as_mut() else {
            return 0;
        };
        tier.item_size = s.item_size;
        tier.low_ttl = s.low_ttl;
        let Some(min_class) = self.slabs.class_for(s.item_size.max(1) as usize) else {
            return 0;
        };
        let mut moved = 0;
        for class in min_class..=self.slabs.largest() {
            for _ in 0..WRITES_PER_CLASS {
                let it = self.ext_candidate(class);
                if it == NIL || !self.ext_ready(it, class, s) || !self.ext_write_item(it, s) {
                    break;
                }
                moved += 1;
            }
        }
        moved
    }

    /// An allocation of class `class` found no free chunk: rather than
    /// evict the item at COLD's tail, write its value out if it is large
    /// enough (memory is short, so its age does not matter, as for
    /// memcached's writer). False if nothing went (the caller evicts).
    /// memcached's writer thread races its workers and loses during a fast
    /// fill (they evict); here the cache is the writer's only client.
    pub(super) fn ext_write_for_alloc(&mut self, class: u8) -> bool {
        let Some(tier) = self.ext.as_ref() else {
            return false;
        };
        if tier.writing {
            return false;
        }
        let s = ExtSettings {
            item_size: tier.item_size,
            low_ttl: tier.low_ttl,
            ..ExtSettings::default()
        };
        let it = self.ext_candidate(class);
        if it == NIL {
            return false;
        }
        let v = self.view(it);
        if v.xflags() & EXT != 0
            || v.is(PINNED)
            || self.is_expired(it)
            || self.is_flushed(it)
            || (v.nbytes() as usize) < s.item_size as usize
        {
            return false;
        }
        self.ext.as_mut().unwrap().writing = true;
        let written = self.ext_write_item(it, &s);
        self.ext.as_mut().unwrap().writing = false;
        written
    }

    /// Whether an allocation in `class` should leave the global pool's
    /// last pages alone: extstore is on, `class` holds values that go to
    /// flash, it has no free chunk, and the pool is down to its reserve.
    pub(super) fn ext_pool_reserved(&self, class: u8) -> bool {
        let Some(tier) = self.ext.as_ref() else {
            return false;
        };
        let c = self.slabs.class(class);
        c.free_chunks() == 0
            && c.size >= tier.item_size as usize
            && self.slabs.free_pages() <= EXT_POOL_RESERVE
    }

    /// The item of class `class` to write out next: the tail of its LRU.
    /// The one place that knows which list that is (with a segmented LRU,
    /// the COLD tail).
    fn ext_candidate(&self, class: u8) -> ChunkRef {
        self.lrus[super::lru::index(class | super::lru::COLD)].tail
    }

    fn ext_ready(&self, it: ChunkRef, class: u8, s: &ExtSettings) -> bool {
        let v = self.view(it);
        if v.xflags() & EXT != 0 || v.is(PINNED) || self.is_expired(it) || self.is_flushed(it) {
            return false;
        }
        if (v.nbytes() as usize) < s.item_size as usize {
            return false;
        }
        let short = self.slabs.free_pages() == 0 && {
            let c = self.slabs.class(class);
            c.free_chunks() < c.perslab * MIN_PAGES_FREE
        };
        let age = self.now().saturating_sub(v.time());
        short || s.item_age == 0 || age > s.item_age
    }

    /// Writes one item's record and swaps it for a header.
    fn ext_write_item(&mut self, it: ChunkRef, s: &ExtSettings) -> bool {
        let mut kbuf = [0u8; 256];
        let key = self.key_copy(it, &mut kbuf);
        let v = self.view(it);
        let (flags, exptime, nbytes, cas) = (v.flags(), v.exptime(), v.nbytes() as usize, v.cas());
        let chunked = v.is(item::CHUNKED);
        let len = record::len(key.len(), nbytes);
        let Some(hdr_class) = self
            .slabs
            .class_for(item::inline_size(key.len(), Loc::SIZE))
        else {
            return false;
        };
        let Some(hdr) = self.alloc_chunk(hdr_class) else {
            return false;
        };
        let hv = self.hv(key);
        if self.hash.find(&self.slabs.arena, key, hv) != Some(it) {
            // The allocation evicted it.
            self.slabs.free(hdr, hdr_class);
            return false;
        }
        let now = self.now();
        let bucket = if exptime != 0 && exptime.saturating_sub(now) < s.low_ttl {
            BUCKET_LOWTTL
        } else if chunked {
            BUCKET_CHUNKED
        } else {
            BUCKET_DEFAULT
        };
        let mut tier = self.ext.take().unwrap();
        let loc = tier.store.write(bucket, len, |buf| {
            record::begin(buf, key, nbytes);
            let mut at = record::HEADER + key.len();
            for seg in self.value_segments(it) {
                buf[at..at + seg.len()].copy_from_slice(seg);
                at += seg.len();
            }
            record::seal(buf);
        });
        if loc.is_none() && !tier.store.has_spare_wbuf() {
            tier.stalled = true;
        }
        self.ext = Some(tier);
        let Some(loc) = loc else {
            self.slabs.free(hdr, hdr_class);
            return false;
        };
        self.init_header(hdr, key, flags, exptime, nbytes, hdr_class, 0);
        item::view_mut(&mut self.slabs.arena, hdr).set_xflags(EXT);
        let body = self.view(hdr).body_offset();
        self.slabs
            .arena
            .bytes_mut(body, Loc::SIZE)
            .copy_from_slice(&loc.to_bytes());
        self.unlink(it);
        self.link_quietly(hdr, cas);
        true
    }

    /// memcached's compaction thread, a step per call: picks a page, reads
    /// it a write buffer at a time, rewrites what is still referenced (or
    /// drops what was never read, with `ext_drop_unread`), then closes it.
    /// `may_pick`: a page may be picked if none is being compacted.
    pub(crate) fn ext_compact_step(&mut self, s: &ExtSettings, may_pick: bool) {
        let Some(tier) = &mut self.ext else {
            return;
        };
        if tier.compact.is_none() {
            if !may_pick {
                return;
            }
            let Some((page, version, drop_unread)) = tier.store.compact_pick(s) else {
                return;
            };
            tier.compact = Some(Compaction {
                page,
                version,
                offset: 0,
                drop_unread,
                reading: false,
            });
        }
        let c = tier.compact.as_mut().unwrap();
        if c.offset >= tier.store.page_size() {
            tier.store.close_page(c.page, c.version);
            tier.compact = None;
            tier.store.maint();
            return;
        }
        if !c.reading {
            let (page, version, offset) = (c.page, c.version, c.offset);
            match tier.store.read_span(page, version, offset) {
                ReadStart::Pending => c.reading = true,
                _ => tier.compact = None,
            }
            return;
        }
        let Some(span) = tier.compact_span.take() else {
            return;
        };
        let Some(span) = span else {
            tier.compact = None;
            return;
        };
        let (page, version, offset, drop_unread) = (c.page, c.version, c.offset, c.drop_unread);
        c.reading = false;
        c.offset += tier.store.wbuf_size();
        self.ext_rescue_span(&span, page, version, offset, drop_unread);
    }

    /// Rewrites the records of one span that their headers still point at.
    fn ext_rescue_span(&mut self, span: &[u8], page: u16, version: u32, offset: u32, drop: bool) {
        let (mut rescues, mut lost, mut skipped) = (0, 0, 0);
        let mut at = 0;
        while let Some(len) = record::next_len(span, at) {
            let rec = &span[at..at + len];
            let here = Loc {
                page,
                version,
                offset: offset + at as u32,
            };
            at += len;
            let record::Check::Good(parsed) = record::check(rec) else {
                continue;
            };
            let hv = self.hv(parsed.key);
            let Some(hdr) = self.hash.find(&self.slabs.arena, parsed.key, hv) else {
                continue;
            };
            if !self.is_ext(hdr)
                || self.ext_loc(hdr) != here
                || self.is_flushed(hdr)
                || self.is_expired(hdr)
            {
                continue;
            }
            let unread = !self.view(hdr).is(FETCHED);
            let tier = self.ext.as_mut().unwrap();
            tier.store.delete(here, len);
            if drop && unread {
                skipped += 1;
                continue;
            }
            match tier.store.write(crate::extstore::BUCKET_COMPACT, len, |b| {
                b.copy_from_slice(rec)
            }) {
                Some(loc) => {
                    let body = self.view(hdr).body_offset();
                    self.slabs
                        .arena
                        .bytes_mut(body, Loc::SIZE)
                        .copy_from_slice(&loc.to_bytes());
                    rescues += 1;
                }
                None => lost += 1,
            }
        }
        let c = &mut self.ext.as_mut().unwrap().store.counters;
        c.compact_rescues += rescues;
        c.compact_lost += lost;
        c.compact_skipped += skipped;
    }

    /// A page is being compacted.
    pub(crate) fn ext_compacting(&self) -> bool {
        self.ext.as_ref().is_some_and(|t| t.compact.is_some())
    }

    /// The loop should take no more requests for now: memory is short (no
    /// page left in the global pool) and cold items cannot go to flash
    /// until a write buffer comes back. memcached's writer thread runs
    /// beside its workers; here the loop holds clients back for the
    /// moment a buffer takes to be written rather than evict what would
    /// have gone to flash.
    pub(crate) fn ext_backpressure(&self) -> bool {
        // Something must be on its way to disk, or nothing would end it.
        self.ext
            .as_ref()
            .is_some_and(|t| t.stalled && t.store.io_queue() > 0)
            && self.slabs.free_pages() <= EXT_POOL_RESERVE
    }

    /// Once a second: memcached's maintenance pass and its default for
    /// idle buffers.
    pub(crate) fn ext_tick(&mut self) {
        if let Some(tier) = &mut self.ext {
            tier.store.maint();
            tier.store.release_idle_buffers();
        }
    }

    /// The value of a flash item read on the calling thread (None if its
    /// record is gone): what the AOF rewrite's forked child writes, where
    /// blocking stalls no client.
    pub(crate) fn ext_value_blocking(&self, it: ChunkRef) -> Option<Vec<u8>> {
        let tier = self.ext.as_ref()?;
        let data = tier
            .store
            .read_blocking(self.ext_loc(it), self.ext_record_len(it))?;
        self.ext_value_of(it, &data).map(<[u8]>::to_vec)
    }

    /// The value in the record `data`, if it is `it`'s and whole.
    fn ext_value_of<'d>(&self, it: ChunkRef, data: &'d [u8]) -> Option<&'d [u8]> {
        match record::check(data) {
            record::Check::Good(p) if p.key == self.view(it).key() => Some(p.value),
            _ => None,
        }
    }

    /// The value of flash item `it` for a change record (`md ... I`) or
    /// the full copy: read beforehand through the I/O threads
    /// (`ext_read_for_change`, `ext_copy_fetch`), so nothing blocks here.
    /// None: its record is gone.
    pub(crate) fn ext_value_in_hand(&self, it: ChunkRef) -> Option<std::borrow::Cow<'_, [u8]>> {
        let loc = self.ext_loc(it);
        let tier = self.ext.as_ref()?;
        let copied = tier
            .copy_reads
            .iter()
            .find(|r| r.loc == loc && r.chunk == it);
        let record = match copied.and_then(|r| r.data.as_ref()) {
            Some(data) => data.as_deref(),
            None => match tier.results.iter().find(|r| r.loc == loc) {
                Some(r) => r.data.as_deref(),
                None => {
                    // Every path that reports a flash item reads it first;
                    // a new one that does not still gets the value.
                    debug_assert!(false, "a flash value was not read beforehand");
                    return self.ext_value_blocking(it).map(std::borrow::Cow::Owned);
                }
            },
        };
        record
            .and_then(|d| self.ext_value_of(it, d))
            .map(std::borrow::Cow::Borrowed)
    }

    /// Before `md ... I` marks flash item `key` stale: the change it
    /// reports to the AOF or the peer carries the value, so with a change
    /// sink the value is read first (the connection waits, as for a get;
    /// no get is counted). Without one nothing is read, as in memcached.
    pub(crate) fn ext_read_for_change(&mut self, key: &[u8], fd: i32) -> ExtFetch {
        if self.ext.is_none() || self.changes.is_none() {
            return ExtFetch::Ready;
        }
        let hv = self.hv(key);
        let Some(it) = self.hash.find(&self.slabs.arena, key, hv) else {
            return ExtFetch::Ready;
        };
        if !self.is_ext(it) || self.is_flushed(it) || self.is_expired(it) {
            return ExtFetch::Ready;
        }
        let (loc, len) = (self.ext_loc(it), self.ext_record_len(it));
        let tier = self.ext.as_mut().unwrap();
        if tier.results.iter().any(|r| r.fd == fd && r.loc == loc) {
            return ExtFetch::Ready;
        }
        if tier.waiting.iter().any(|w| (w.0, w.1) == (fd, loc)) {
            return ExtFetch::Wait;
        }
        let data = match tier.store.read(loc, len, Ticket::Conn(fd)) {
            ReadStart::Pending => {
                tier.waiting.push((fd, loc, false));
                return ExtFetch::Wait;
            }
            ReadStart::Ready(data) => Some(data),
            ReadStart::Gone => None,
        };
        let r = Result_ {
            fd,
            loc,
            data,
            fetched: false,
            crc_ok: None,
        };
        push_result(&mut tier.results, r);
        ExtFetch::Ready
    }

    /// A request of connection `fd` is done with what was read for it.
    pub(crate) fn ext_done_with_reads(&mut self, fd: i32) {
        if let Some(tier) = &mut self.ext {
            tier.results.retain(|r| r.fd != fd);
        }
    }

    /// The full copy's walk has reached flash item `it` (`ahead`: it only
    /// looks ahead of where it waits): starts reading its value unless in
    /// hand or in flight. Reads for chunks the walk has passed are dropped.
    pub(crate) fn ext_copy_fetch(&mut self, it: ChunkRef, ahead: bool) -> CopyFetch {
        let (loc, len) = (self.ext_loc(it), self.ext_record_len(it));
        let Some(tier) = self.ext.as_mut() else {
            return CopyFetch::Ready;
        };
        if !ahead {
            tier.copy_reads
                .retain(|r| r.chunk >= it || r.data.is_none());
        }
        let known = tier
            .copy_reads
            .iter()
            .find(|r| r.chunk == it && r.loc == loc);
        if let Some(r) = known {
            return match r.data {
                Some(_) => CopyFetch::Ready,
                None => CopyFetch::Pending,
            };
        }
        let data = match tier.store.read(loc, len, Ticket::Copy) {
            ReadStart::Pending => None,
            ReadStart::Ready(data) => Some(Some(data)),
            ReadStart::Gone => Some(None),
        };
        let pending = data.is_none();
        tier.copy_reads.push(CopyRead {
            chunk: it,
            loc,
            data,
        });
        if pending {
            CopyFetch::Pending
        } else {
            CopyFetch::Ready
        }
    }

    /// Full-copy reads in flight or waiting to be sent.
    pub(crate) fn ext_copy_reads(&self) -> usize {
        self.ext.as_ref().map_or(0, |t| t.copy_reads.len())
    }

    /// The full copy ended or starts again: its reads are no longer
    /// wanted (one still in flight is dropped when it comes back).
    pub(crate) fn ext_copy_forget(&mut self) {
        if let Some(tier) = &mut self.ext {
            tier.copy_reads.clear();
        }
    }

    /// Before a warm restart's save: every value still in a write buffer
    /// goes to disk (see `ExtStore::flush_for_restart`); then the page
    /// table the headers' locations need.
    pub(crate) fn ext_flush_for_restart(
        &mut self,
    ) -> std::io::Result<Option<crate::extstore::SavedPages>> {
        let Some(tier) = &mut self.ext else {
            return Ok(None);
        };
        tier.compact = None;
        tier.store.flush_for_restart()?;
        Ok(Some(tier.store.saved_pages()))
    }

    /// extstore's file descriptors, if any.
    pub(crate) fn ext_file_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.ext.as_ref().map_or(Vec::new(), |t| t.store.file_fds())
    }
}
