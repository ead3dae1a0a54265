//! The flash tier (memcached's extstore): a page store over one or more
//! files (JBOD), below the cache.
//!
//! The files are cut into `ext_page_size` pages, interleaved across the
//! files. A page is written front to back through `ext_wbuf_size` write
//! buffers, one page open per bucket (default, compaction, chunked, low
//! TTL); a full buffer goes to an I/O thread and comes back once written.
//! Every allocation of a page gives it a new version, so a location
//! (page, version, offset) names one record for as long as the page holds
//! it and reads as gone afterwards. Deletes only count: a page whose
//! records are all deleted is freed; when no page is free the oldest
//! (lowest version) is evicted whole, with whatever it still holds. As in
//! memcached, page 0 is never used.
//!
//! Only the reactor thread calls this; `io.rs`'s threads do the blocking
//! reads and writes and hand results back through an eventfd. What is
//! still in a write buffer (open or being written) is read from memory at
//! once, and so is a record the page cache holds whole: one `preadv2` with
//! `RWF_NOWAIT` on the loop, which the kernel answers from the cache or
//! refuses (`EAGAIN`) rather than wait for the disk; only then does an I/O
//! thread read it. Which items go out and how they come back is
//! `items/ext.rs`'s.

pub(crate) mod io;
pub(crate) mod record;
#[cfg(test)]
mod tests;

use crate::settings::ExtSettings;
pub(crate) use io::Ticket;
use io::{Done, Io, Job};
use std::fs::File;
use std::sync::Arc;

/// memcached's page buckets.
pub(crate) const BUCKET_DEFAULT: usize = 0;
pub(crate) const BUCKET_COMPACT: usize = 1;
pub(crate) const BUCKET_CHUNKED: usize = 2;
pub(crate) const BUCKET_LOWTTL: usize = 3;
const BUCKETS: usize = 4;
/// Write buffers: memcached has one per bucket.
const WBUFS: usize = BUCKETS;

/// Where a record lies: what an item header in RAM keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) page: u16,
    pub(crate) version: u32,
    pub(crate) offset: u32,
}

impl Loc {
    pub(crate) const SIZE: usize = 12;

    pub(crate) fn to_bytes(self) -> [u8; Loc::SIZE] {
        let mut b = [0u8; Loc::SIZE];
        b[0..2].copy_from_slice(&self.page.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.offset.to_le_bytes());
        b
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Loc {
        Loc {
            page: u16::from_le_bytes([b[0], b[1]]),
            version: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            offset: u32::from_le_bytes(b[8..12].try_into().unwrap()),
        }
    }
}

/// A write buffer: `offset` is where in its page it starts.
struct Wbuf {
    buf: Arc<Vec<u8>>,
    offset: u32,
    used: u32,
}

#[derive(Default)]
struct Page {
    file: usize,
    base: u64,
    /// 0 while free.
    version: u32,
    obj_count: u64,
    bytes_used: u64,
    allocated: u32,
    written: u32,
    bucket: usize,
    active: bool,
    closed: bool,
    free: bool,
    wbuf: Option<Wbuf>,
    /// Buffers handed to an I/O thread and not yet written.
    flushing: Vec<Wbuf>,
    /// Reads in flight.
    refcount: u32,
}

/// memcached's extstore counters (`stats`), and its per-thread ones for
/// reads of flash items.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) page_allocs: u64,
    pub(crate) page_evictions: u64,
    pub(crate) page_reclaims: u64,
    pub(crate) objects_evicted: u64,
    pub(crate) objects_read: u64,
    pub(crate) objects_written: u64,
    pub(crate) objects_used: u64,
    pub(crate) bytes_evicted: u64,
    pub(crate) bytes_written: u64,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_used: u64,
    pub(crate) compact_lost: u64,
    pub(crate) compact_rescues: u64,
    pub(crate) compact_skipped: u64,
    pub(crate) get_extstore: u64,
    pub(crate) get_aborted: u64,
    pub(crate) get_oom: u64,
    pub(crate) recache: u64,
    pub(crate) miss: u64,
    pub(crate) badcrc: u64,
}

/// What a read found at once.
pub(crate) enum ReadStart {
    /// Still in a write buffer: here it is.
    Ready(Vec<u8>),
    /// Handed to an I/O thread; [`ExtStore::complete`] gives it back.
    Pending,
    /// The page no longer holds it (freed, evicted, reused).
    Gone,
}

/// A read the I/O threads finished; `data` is None if the page changed
/// meanwhile or the read failed.
pub(crate) struct Finished {
    pub(crate) ticket: Ticket,
    pub(crate) loc: Loc,
    pub(crate) data: Option<Vec<u8>>,
    /// Whether the I/O thread found the record's CRC good (None: not
    /// checked there).
    pub(crate) crc_ok: Option<bool>,
}

/// A page as `stats extstore` and the compactor see it: version 0 for a
/// page that is free, open or closed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PageRow {
    pub(crate) version: u32,
    pub(crate) bytes_used: u64,
    pub(crate) bucket: usize,
}

/// The page table as a warm restart (`-e`) keeps it, taken once every
/// write buffer is on disk (`flush_for_restart`): with the files, it is
/// all the store is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SavedPages {
    /// The files and geometry it belongs to (filled and compared by the
    /// warm restart's metadata).
    pub(crate) layout: String,
    pub(crate) next_version: u32,
    /// Free pages, the next to hand out last.
    pub(crate) free: Vec<u16>,
    /// Each bucket's open page.
    pub(crate) buckets: Vec<Option<u16>>,
    /// Each file's length: a file that changed since is not trusted.
    pub(crate) file_lens: Vec<u64>,
    pub(crate) pages: Vec<SavedPage>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SavedPage {
    pub(crate) version: u32,
    pub(crate) obj_count: u64,
    pub(crate) bytes_used: u64,
    /// Bytes written from the page's start (every buffer was).
    pub(crate) allocated: u32,
    pub(crate) bucket: u8,
    pub(crate) active: bool,
    pub(crate) closed: bool,
    pub(crate) free: bool,
}

pub(crate) struct ExtStore {
    files: Vec<Arc<File>>,
    pages: Vec<Page>,
    /// Free pages, the next to hand out last.
    free: Vec<u16>,
    buckets: [Option<u16>; BUCKETS],
    spare: Vec<Vec<u8>>,
    page_size: u32,
    wbuf_size: u32,
    next_version: u32,
    pub(crate) counters: Counters,
    /// None in unit tests: jobs run at once on the calling thread.
    io: Option<Io>,
    done_inline: Vec<Done>,
    /// Write buffers handed to the I/O threads and not yet back.
    writes_in_flight: usize,
    /// Per file: a read may first be tried on the loop from the page
    /// cache (`RWF_NOWAIT`); false once the file system said it cannot.
    nowait: Vec<bool>,
    /// Read buffers given back once their value was sent (see `recycle`).
    read_bufs: Vec<Vec<u8>>,
}

/// Read buffers kept for reuse, and the largest kept: values above it
/// are rare enough to allocate, and the pool stays small beside `-m`.
const READ_BUFS_KEPT: usize = 32;
const READ_BUF_KEPT_MAX: usize = 64 << 10;

/// Why the store could not start, in memcached's words.
#[derive(Debug)]
pub(crate) enum InitError {
    /// memcached's `extstore_err` text.
    Config(&'static str),
    /// Opening, locking or truncating a file failed.
    Open(std::io::Error),
    /// A warm restart's saved page table does not fit the files as they
    /// are now.
    Changed,
}

impl ExtStore {
    /// Opens (creating and emptying) every file, as memcached's
    /// `extstore_init`: each is locked against a second server.
    pub(crate) fn open(s: &ExtSettings, threads: bool) -> Result<ExtStore, InitError> {
        ExtStore::open_keeping(s, threads, None)
    }

    /// As `open`, but with `saved` (a warm restart's page table) the files
    /// keep what they hold, if each is the length it was saved at; if not,
    /// `Err(None)`-like: the caller opens them afresh.
    pub(crate) fn open_keeping(
        s: &ExtSettings,
        threads: bool,
        saved: Option<&SavedPages>,
    ) -> Result<ExtStore, InitError> {
        check_config(s)?;
        let mut files = Vec::new();
        for (i, path) in s.paths.iter().enumerate() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path.file)
                .map_err(InitError::Open)?;
            use std::os::fd::AsRawFd as _;
            crate::sys::lock_whole_file(file.as_raw_fd()).map_err(InitError::Open)?;
            match saved {
                Some(sp) => {
                    let len = file.metadata().map_err(InitError::Open)?.len();
                    if sp.file_lens.get(i) != Some(&len) {
                        return Err(InitError::Changed);
                    }
                }
                None => file.set_len(0).map_err(InitError::Open)?,
            }
            files.push(Arc::new(file));
        }
        let counts: Vec<u32> = s.paths.iter().map(|p| p.page_count).collect();
        let total: u64 = counts.iter().map(|&c| c as u64).sum();
        if total >= u16::MAX as u64 {
            return Err(InitError::Config(
                "page_count must total to < 65536. Increase page_size or lower path sizes",
            ));
        }
        let io = if threads {
            Some(Io::start(s.threads as usize, s.io_depth as usize).map_err(InitError::Open)?)
        } else {
            None
        };
        let mut store = ExtStore::with_files(files, &counts, s.page_size, s.wbuf_size, io);
        if let Some(sp) = saved {
            store.restore(sp).map_err(|()| InitError::Changed)?;
        }
        Ok(store)
    }

    /// Takes back a saved page table (checked against this layout).
    fn restore(&mut self, sp: &SavedPages) -> Result<(), ()> {
        let n = self.pages.len();
        let fits = |p: u16| (1..n).contains(&(p as usize));
        if sp.pages.len() != n
            || sp.buckets.len() != BUCKETS
            || !sp.free.iter().all(|&p| fits(p))
            || !sp.buckets.iter().flatten().all(|&p| fits(p))
            || sp
                .pages
                .iter()
                .any(|p| p.allocated > self.page_size || p.bucket as usize >= BUCKETS)
        {
            return Err(());
        }
        for (page, s) in self.pages.iter_mut().zip(&sp.pages).skip(1) {
            page.version = s.version;
            page.obj_count = s.obj_count;
            page.bytes_used = s.bytes_used;
            page.allocated = s.allocated;
            page.written = s.allocated;
            page.bucket = s.bucket as usize;
            page.active = s.active;
            page.closed = s.closed;
            page.free = s.free;
        }
        self.free = sp.free.clone();
        for (b, p) in self.buckets.iter_mut().zip(&sp.buckets) {
            *b = *p;
        }
        self.skip_versions_to(sp.next_version);
        self.counters.objects_used = self.pages.iter().map(|p| p.obj_count).sum();
        self.counters.bytes_used = self.pages.iter().map(|p| p.bytes_used).sum();
        Ok(())
    }

    /// Page versions from here on are at least `v`: a location a kept
    /// header names can never match a page handed out anew.
    pub(crate) fn skip_versions_to(&mut self, v: u32) {
        self.next_version = self.next_version.max(v);
    }

    /// Before a warm restart's save: every open write buffer goes to disk
    /// and the call waits until all are written and synced (at shutdown,
    /// when blocking stalls nobody).
    pub(crate) fn flush_for_restart(&mut self) -> std::io::Result<()> {
        for p in 0..self.pages.len() {
            if self.pages[p].wbuf.as_ref().is_some_and(|w| w.used > 0) {
                self.submit_wbuf(p as u16);
            }
        }
        while self.writes_in_flight > 0 {
            if let Some(fd) = self.wake_fd() {
                crate::sys::wait_readable(fd, 1000);
            }
            self.complete();
        }
        for f in &self.files {
            f.sync_data()?;
        }
        Ok(())
    }

    /// The page table for a warm restart's save (after
    /// `flush_for_restart`).
    pub(crate) fn saved_pages(&self) -> SavedPages {
        SavedPages {
            layout: String::new(),
            next_version: self.next_version,
            free: self.free.clone(),
            buckets: self.buckets.to_vec(),
            file_lens: self
                .files
                .iter()
                .map(|f| f.metadata().map_or(u64::MAX, |m| m.len()))
                .collect(),
            pages: self
                .pages
                .iter()
                .map(|p| SavedPage {
                    version: p.version,
                    obj_count: p.obj_count,
                    bytes_used: p.bytes_used,
                    allocated: p.written.min(p.allocated),
                    bucket: p.bucket as u8,
                    active: p.active,
                    closed: p.closed,
                    free: p.free,
                })
                .collect(),
        }
    }

    fn with_files(
        files: Vec<Arc<File>>,
        counts: &[u32],
        page_size: u32,
        wbuf_size: u32,
        io: Option<Io>,
    ) -> ExtStore {
        let pages = interleave(counts, page_size);
        let free = (1..pages.len() as u16).rev().collect();
        ExtStore {
            pages,
            free,
            buckets: [None; BUCKETS],
            spare: (0..WBUFS).map(|_| vec![0u8; wbuf_size as usize]).collect(),
            page_size,
            wbuf_size,
            next_version: 1,
            counters: Counters::default(),
            nowait: vec![!io::test_gate::is_set(); files.len()],
            files,
            io,
            done_inline: Vec::new(),
            writes_in_flight: 0,
            read_bufs: Vec::new(),
        }
    }

    /// The files' descriptors (a forked AOF rewrite keeps them open).
    pub(crate) fn file_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd as _;
        self.files.iter().map(|f| f.as_raw_fd()).collect()
    }

    pub(crate) fn page_size(&self) -> u32 {
        self.page_size
    }

    pub(crate) fn wbuf_size(&self) -> u32 {
        self.wbuf_size
    }

    pub(crate) fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// The eventfd the reactor watches for finished I/O.
    pub(crate) fn wake_fd(&self) -> Option<std::os::fd::RawFd> {
        self.io.as_ref().map(Io::wake_fd)
    }

    /// Whether a write buffer is free (all may be on their way to disk).
    pub(crate) fn has_spare_wbuf(&self) -> bool {
        !self.spare.is_empty()
    }

    pub(crate) fn pages_free(&self) -> usize {
        self.free.len()
    }

    pub(crate) fn io_queue(&self) -> usize {
        self.io.as_ref().map_or(0, |io| io.in_flight)
    }

    /// Appends a record of `len` bytes to `bucket`'s open page; `fill`
    /// writes it. None when no page or write buffer can be had now (the
    /// caller tries again later, as memcached's writer does).
    pub(crate) fn write(
        &mut self,
        bucket: usize,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Option<Loc> {
        if len > self.wbuf_size as usize || len == 0 {
            return None;
        }
        for _ in 0..3 {
            let p = match self.buckets[bucket] {
                Some(p) => p,
                None => self.allocate(bucket)?,
            };
            let page = &self.pages[p as usize];
            if page.closed || !page.active || page.version == 0 {
                self.buckets[bucket] = None;
                continue;
            }
            if page
                .wbuf
                .as_ref()
                .is_some_and(|w| (w.used as usize) + len > self.wbuf_size as usize)
            {
                self.submit_wbuf(p);
            }
            let page = &mut self.pages[p as usize];
            if page.wbuf.is_none() {
                if page.allocated >= self.page_size {
                    // Full: the next write opens another page.
                    self.buckets[bucket] = None;
                    continue;
                }
                let Some(buf) = self.spare.pop() else {
                    // Every buffer is open in another bucket or on its way
                    // to disk. With none on its way, nothing would come
                    // back: send the fullest open one, so a later write
                    // finds it.
                    if self.writes_in_flight == 0 {
                        self.flush_fullest_open(bucket);
                    }
                    return None;
                };
                page.wbuf = Some(Wbuf {
                    buf: Arc::new(buf),
                    offset: page.allocated,
                    used: 0,
                });
                page.allocated += self.wbuf_size;
            }
            let w = page.wbuf.as_mut().unwrap();
            let at = w.used as usize;
            let buf = Arc::get_mut(&mut w.buf).expect("an open buffer is not shared");
            fill(&mut buf[at..at + len]);
            let loc = Loc {
                page: p,
                version: page.version,
                offset: w.offset + w.used,
            };
            w.used += len as u32;
            page.bytes_used += len as u64;
            page.obj_count += 1;
            let c = &mut self.counters;
            c.bytes_written += len as u64;
            c.bytes_used += len as u64;
            c.objects_written += 1;
            c.objects_used += 1;
            return Some(loc);
        }
        None
    }

    fn flush_fullest_open(&mut self, except: usize) {
        let fullest = (0..BUCKETS)
            .filter(|&b| b != except)
            .filter_map(|b| self.buckets[b])
            .filter_map(|p| Some((self.pages[p as usize].wbuf.as_ref()?.used, p)))
            .filter(|&(used, _)| used > 0)
            .max();
        if let Some((_, p)) = fullest {
            self.submit_wbuf(p);
        }
    }

    fn allocate(&mut self, bucket: usize) -> Option<u16> {
        if self.free.is_empty() {
            self.maint();
        }
        let p = self.free.pop()?;
        let version = self.next_version;
        self.next_version = self.next_version.wrapping_add(1).max(1);
        let page = &mut self.pages[p as usize];
        page.version = version;
        page.active = true;
        page.free = false;
        page.closed = false;
        page.bucket = bucket;
        page.allocated = 0;
        page.written = 0;
        page.obj_count = 0;
        page.bytes_used = 0;
        self.buckets[bucket] = Some(p);
        self.counters.page_allocs += 1;
        Some(p)
    }

    fn submit_wbuf(&mut self, p: u16) {
        let page = &mut self.pages[p as usize];
        let Some(mut w) = page.wbuf.take() else {
            return;
        };
        // Zero the unused end, so a reader walking the page stops there.
        let used = w.used as usize;
        Arc::get_mut(&mut w.buf).unwrap()[used..].fill(0);
        let job = Job::Write {
            file: Arc::clone(&self.files[page.file]),
            pos: page.base + w.offset as u64,
            buf: Arc::clone(&w.buf),
            page: p,
            offset: w.offset,
        };
        page.flushing.push(w);
        self.writes_in_flight += 1;
        self.run(job);
    }

    fn run(&mut self, job: Job) {
        match &mut self.io {
            Some(io) => io.submit(job),
            None => self.done_inline.push(io::run_job(job)),
        }
    }

    /// Starts reading `len` bytes at `loc` for `ticket`: from a write
    /// buffer or the page cache at once if it is there, else through an
    /// I/O thread.
    pub(crate) fn read(&mut self, loc: Loc, len: usize, ticket: Ticket) -> ReadStart {
        if !self.holds(loc) {
            return ReadStart::Gone;
        }
        self.counters.objects_read += 1;
        self.counters.bytes_read += len as u64;
        let mut buf = self.read_buf(len);
        let page = &self.pages[loc.page as usize];
        let end = loc.offset as usize + len;
        let in_buffer = page
            .wbuf
            .iter()
            .chain(page.flushing.iter())
            .find(|w| loc.offset >= w.offset && end <= (w.offset + w.used) as usize);
        if let Some(w) = in_buffer {
            let at = (loc.offset - w.offset) as usize;
            buf.copy_from_slice(&w.buf[at..at + len]);
            return ReadStart::Ready(buf);
        }
        let (file, pos) = (page.file, page.base + loc.offset as u64);
        if self.read_cached(file, pos, &mut buf) {
            return ReadStart::Ready(buf);
        }
        let job = Job::Read {
            file: Arc::clone(&self.files[file]),
            pos,
            buf,
            ticket,
            page: loc.page,
            version: loc.version,
            offset: loc.offset,
        };
        self.pages[loc.page as usize].refcount += 1;
        self.run(job);
        ReadStart::Pending
    }

    /// Fills `buf` from file `file` at `pos` on the calling thread (the
    /// loop) if the page cache holds all of it: one `preadv2` that never
    /// waits for the disk. What it reads is handed over exactly as a write
    /// buffer's bytes are (`ReadStart::Ready`), so the request goes on at
    /// once; false sends the read to an I/O thread, as memcached sends
    /// every read. Never tried with the test gate set (its reads must be
    /// held in a thread).
    fn read_cached(&mut self, file: usize, pos: u64, buf: &mut [u8]) -> bool {
        if !self.nowait[file] {
            return false;
        }
        use std::os::fd::AsRawFd as _;
        match crate::sys::pread_nowait(self.files[file].as_raw_fd(), buf, pos) {
            crate::sys::NowaitRead::Whole => true,
            crate::sys::NowaitRead::NotNow => false,
            crate::sys::NowaitRead::Unsupported => {
                self.nowait[file] = false;
                false
            }
        }
    }

    /// A buffer of `len` bytes to read a record into: one given back
    /// before if there is one (its old bytes are overwritten whole).
    fn read_buf(&mut self, len: usize) -> Vec<u8> {
        let mut buf = self.read_bufs.pop().unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        } else {
            buf.truncate(len);
        }
        buf
    }

    /// A record's buffer whose value has been sent: kept for the next
    /// read unless the pool is full or the buffer large.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if self.read_bufs.len() < READ_BUFS_KEPT && buf.capacity() <= READ_BUF_KEPT_MAX {
            self.read_bufs.push(buf);
        }
    }

    fn live_page(&self, loc: Loc) -> Option<&Page> {
        let page = self.pages.get(loc.page as usize)?;
        (page.version == loc.version && !page.closed && !page.free).then_some(page)
    }

    /// Whether `loc` still names a record (memcached's `extstore_check`).
    pub(crate) fn holds(&self, loc: Loc) -> bool {
        self.live_page(loc).is_some()
    }

    /// A record is no longer needed: its page's counts drop.
    pub(crate) fn delete(&mut self, loc: Loc, len: usize) {
        let Some(page) = self.pages.get_mut(loc.page as usize) else {
            return;
        };
        if page.closed || page.version != loc.version {
            return;
        }
        page.bytes_used = page.bytes_used.saturating_sub(len as u64);
        page.obj_count = page.obj_count.saturating_sub(1);
        self.counters.bytes_used = self.counters.bytes_used.saturating_sub(len as u64);
        self.counters.objects_used = self.counters.objects_used.saturating_sub(1);
    }

    /// The compactor is done with a page: it frees once unread.
    pub(crate) fn close_page(&mut self, p: u16, version: u32) {
        let page = &mut self.pages[p as usize];
        if !page.closed && page.version == version {
            page.closed = true;
        }
    }

    /// Everything the I/O threads finished: written buffers come back,
    /// reads are returned to be handed to whoever asked.
    pub(crate) fn complete(&mut self) -> Vec<Finished> {
        let done = match &mut self.io {
            Some(io) => io.take_done(),
            None => std::mem::take(&mut self.done_inline),
        };
        let mut finished = Vec::new();
        for d in done {
            match d {
                Done::Write { page, offset, ok } => self.written(page, offset, ok),
                Done::Read {
                    ticket,
                    page,
                    version,
                    offset,
                    data,
                    crc_ok,
                } => {
                    let loc = Loc {
                        page,
                        version,
                        offset,
                    };
                    let pg = &mut self.pages[page as usize];
                    pg.refcount = pg.refcount.saturating_sub(1);
                    let data = if self.holds(loc) { data.ok() } else { None };
                    finished.push(Finished {
                        ticket,
                        loc,
                        data,
                        crc_ok,
                    });
                }
            }
        }
        finished
    }

    fn written(&mut self, p: u16, offset: u32, ok: bool) {
        self.writes_in_flight -= 1;
        let page = &mut self.pages[p as usize];
        if let Some(i) = page.flushing.iter().position(|w| w.offset == offset) {
            let w = page.flushing.swap_remove(i);
            if let Ok(buf) = Arc::try_unwrap(w.buf) {
                self.spare.push(buf);
            }
        }
        page.written += self.wbuf_size;
        if !ok {
            // What could not be written reads as gone: the page closes.
            page.closed = true;
        }
        if page.written >= self.page_size || (page.closed && page.flushing.is_empty()) {
            page.active = false;
            if page.closed && page.wbuf.is_none() {
                page.active = false;
            }
        }
    }

    /// memcached's maintenance pass: frees pages that hold nothing (or were
    /// closed) and nobody reads; with no page free, evicts the oldest.
    /// With nothing being written, the spare write buffers but one give
    /// their memory back: a fill touches every buffer, an idle store needs
    /// none of them resident (they are touched again when next used).
    pub(crate) fn release_idle_buffers(&mut self) {
        if self.writes_in_flight > 0 {
            return;
        }
        for buf in self.spare.iter_mut().skip(1) {
            crate::sys::discard_pages(buf);
        }
    }

    pub(crate) fn maint(&mut self) {
        let mut evict = self.free.is_empty();
        let mut oldest: Option<(u32, u16)> = None;
        for i in 1..self.pages.len() {
            let page = &self.pages[i];
            if page.active || page.free {
                continue;
            }
            if page.obj_count > 0 && !page.closed && oldest.is_none_or(|(v, _)| page.version < v) {
                oldest = Some((page.version, i as u16));
            }
            if (page.obj_count == 0 || page.closed) && page.refcount == 0 {
                self.free_page(i as u16);
                evict = false;
            }
        }
        if let (true, Some((_, p))) = (evict, oldest) {
            let page = &mut self.pages[p as usize];
            page.closed = true;
            self.counters.page_evictions += 1;
            self.counters.objects_evicted += page.obj_count;
            self.counters.bytes_evicted += page.bytes_used;
            if page.refcount == 0 {
                self.free_page(p);
            }
        }
    }

    fn free_page(&mut self, p: u16) {
        let page = &mut self.pages[p as usize];
        let c = &mut self.counters;
        c.objects_used = c.objects_used.saturating_sub(page.obj_count);
        c.bytes_used = c.bytes_used.saturating_sub(page.bytes_used);
        c.page_reclaims += 1;
        page.version = 0;
        page.obj_count = 0;
        page.bytes_used = 0;
        page.allocated = 0;
        page.written = 0;
        page.bucket = 0;
        page.active = false;
        page.closed = false;
        page.free = true;
        for b in self.buckets.iter_mut() {
            if *b == Some(p) {
                *b = None;
            }
        }
        self.free.push(p);
    }

    /// Each page as `stats extstore` shows it.
    pub(crate) fn page_rows(&self) -> Vec<PageRow> {
        self.pages
            .iter()
            .map(|p| {
                if p.active || p.free || p.closed || p.obj_count == 0 {
                    PageRow::default()
                } else {
                    PageRow {
                        version: p.version,
                        bytes_used: p.bytes_used,
                        bucket: p.bucket,
                    }
                }
            })
            .collect()
    }

    /// memcached's `storage_compact_check`: the oldest page fragmented past
    /// the limit, or with `drop_unread` and few pages free, the oldest
    /// page at all (the bool: drop what was not read).
    pub(crate) fn compact_pick(&self, s: &ExtSettings) -> Option<(u16, u32, bool)> {
        let pages_used = self.pages.len() - self.free.len();
        if pages_used == 0 || self.free.len() > s.compact_under as usize {
            return None;
        }
        let rate = (1.0 - self.free.len() as f64 / self.pages.len() as f64) * s.max_frag;
        let frag_limit = (self.page_size as f64 * rate) as u64;
        let mut low: Option<(u32, u16)> = None;
        let mut lowest: Option<(u32, u16)> = None;
        for (i, row) in self.page_rows().iter().enumerate() {
            if row.version == 0 || row.bucket == BUCKET_LOWTTL {
                continue;
            }
            if lowest.is_none_or(|(v, _)| row.version < v) {
                lowest = Some((row.version, i as u16));
            }
            if row.bytes_used < frag_limit && low.is_none_or(|(v, _)| row.version < v) {
                low = Some((row.version, i as u16));
            }
        }
        if let Some((v, p)) = low {
            return Some((p, v, false));
        }
        match lowest {
            Some((v, p)) if s.drop_unread && self.free.len() <= s.drop_under as usize => {
                Some((p, v, true))
            }
            _ => None,
        }
    }

    /// Reads one write buffer's worth of a page for the compactor.
    pub(crate) fn read_span(&mut self, p: u16, version: u32, offset: u32) -> ReadStart {
        let loc = Loc {
            page: p,
            version,
            offset,
        };
        let Some(page) = self.live_page(loc) else {
            return ReadStart::Gone;
        };
        let job = Job::Read {
            file: Arc::clone(&self.files[page.file]),
            pos: page.base + offset as u64,
            buf: vec![0u8; self.wbuf_size as usize],
            ticket: Ticket::Compact,
            page: p,
            version,
            offset,
        };
        self.pages[p as usize].refcount += 1;
        self.run(job);
        ReadStart::Pending
    }
}

impl ExtStore {
    /// A record's bytes read on the calling thread (None if gone): for
    /// the AOF rewrite's forked child and the replication full copy, which
    /// need every value in order (a read of one record, from the page
    /// cache more often than not).
    pub(crate) fn read_blocking(&self, loc: Loc, len: usize) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt as _;
        let page = self.live_page(loc)?;
        let end = loc.offset as usize + len;
        if let Some(w) = page
            .wbuf
            .iter()
            .chain(page.flushing.iter())
            .find(|w| loc.offset >= w.offset && end <= (w.offset + w.used) as usize)
        {
            let at = (loc.offset - w.offset) as usize;
            return Some(w.buf[at..at + len].to_vec());
        }
        let mut data = vec![0u8; len];
        self.files[page.file]
            .read_exact_at(&mut data, page.base + loc.offset as u64)
            .ok()?;
        Some(data)
    }
}

/// memcached's `extstore_init` checks, in its order.
fn check_config(s: &ExtSettings) -> Result<(), InitError> {
    let (page, wbuf) = (s.page_size, s.wbuf_size);
    if wbuf == 0 || page % wbuf != 0 {
        return Err(InitError::Config(
            "page_size must be divisible by wbuf_size",
        ));
    }
    if page % (2 << 20) != 0 || wbuf % (2 << 20) != 0 {
        return Err(InitError::Config(
            "page_size and wbuf_size must be divisible by 1024*1024*2",
        ));
    }
    Ok(())
}

/// memcached interleaves pages across the files: page i comes from the
/// next file (in its order) that still has pages to give.
fn interleave(counts: &[u32], page_size: u32) -> Vec<Page> {
    let mut left = counts.to_vec();
    let mut offsets = vec![0u64; counts.len()];
    let total: u32 = counts.iter().sum();
    let mut pages = Vec::with_capacity(total as usize);
    let mut f = counts.len() - 1;
    for _ in 0..total {
        loop {
            f = (f + 1) % counts.len();
            if left[f] > 0 {
                left[f] -= 1;
                break;
            }
        }
        pages.push(Page {
            file: f,
            base: offsets[f],
            free: true,
            ..Page::default()
        });
        offsets[f] += page_size as u64;
    }
    pages
}
