//! The LRU crawler: walks class LRUs from the tail, a bounded batch per
//! reactor turn, to reclaim expired items with no traffic (`lru_crawler
//! crawl`, and automatically) or to list live items (`lru_crawler
//! metadump`).
//!
//! memcached runs this as a thread that parks a placeholder item in each
//! LRU; here it is a cursor advanced between requests, walking each of a
//! class's segments (HOT, WARM, COLD, TEMP) in turn. A cursor whose item
//! went away meanwhile (deleted, evicted, moved to another segment,
//! reused) restarts that list from its tail; a per-list budget (the
//! list's length when it was started, or `tocrawl`) guarantees the walk
//! ends.

use super::{Cache, item, lru};
use crate::slab::{ChunkRef, NIL};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrawlKind {
    /// Reclaim expired and flushed items.
    Expired,
    /// Write a line per live item to connection `fd`.
    Metadump { fd: i32 },
}

#[derive(Debug)]
pub(crate) struct CrawlJob {
    pub(crate) kind: CrawlKind,
    /// Lists (class | segment) still to walk, the next one last.
    pending: Vec<u8>,
    /// The list being walked.
    list: u8,
    cursor: ChunkRef,
    left: usize,
    limit: u32,
    /// Whether any item seen has an expiry (drives the automatic schedule).
    pub(crate) saw_ttl: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrawlStart {
    Ok,
    Busy,
    NotStarted,
}

/// Which classes a `lru_crawler crawl|metadump` argument names: `all`,
/// `hash` (treated as all), or a comma list of ids.
pub(crate) fn parse_classes(arg: &[u8], largest: u8) -> Option<Vec<u8>> {
    if arg == b"all" || arg == b"hash" {
        return Some((1..=largest).collect());
    }
    let mut ids = Vec::new();
    for part in arg.split(|&b| b == b',').filter(|p| !p.is_empty()) {
        let id = crate::numbers::safe_strtoul(part)?;
        if id < 1 || id >= crate::slab::classes::MAX_CLASSES as u32 {
            return None;
        }
        if id <= largest as u32 && !ids.contains(&(id as u8)) {
            ids.push(id as u8);
        }
    }
    ids.sort_unstable();
    Some(ids)
}

/// memcached's URI encoding of keys in metadump lines.
fn uriencode(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

impl Cache {
    pub(crate) fn crawl_busy(&self) -> bool {
        self.crawl.is_some()
    }

    pub(crate) fn crawl_kind(&self) -> Option<CrawlKind> {
        self.crawl.as_ref().map(|j| j.kind)
    }

    /// Starts a crawl of `classes` (those with items); memcached's answers
    /// when one is already running or none has items.
    pub(crate) fn crawl_start(
        &mut self,
        classes: &[u8],
        kind: CrawlKind,
        limit: u32,
    ) -> CrawlStart {
        if self.crawl.is_some() {
            return CrawlStart::Busy;
        }
        let started = classes.iter().filter(|&&c| self.lru_len(c) > 0).count();
        if started == 0 && kind == CrawlKind::Expired {
            return CrawlStart::NotStarted;
        }
        let mut pending: Vec<u8> = classes
            .iter()
            .flat_map(|&c| lru::SEGMENTS.map(|seg| c | seg))
            .filter(|&l| self.segment_len(l & lru::CLASS_MASK, lru::segment(l)) > 0)
            .collect();
        pending.reverse();
        self.stats.lru_crawler_starts += started as u64;
        self.crawl = Some(CrawlJob {
            kind,
            pending,
            list: 0,
            cursor: NIL,
            left: 0,
            limit,
            saw_ttl: false,
        });
        CrawlStart::Ok
    }

    /// A page move put the item at `old` at `new`: a crawl standing on it
    /// goes on from the copy.
    pub(crate) fn crawl_moved(&mut self, old: ChunkRef, new: ChunkRef) {
        if let Some(job) = &mut self.crawl
            && job.cursor == old
        {
            job.cursor = new;
        }
    }

    /// Advances the crawl by up to `budget` items, appending metadump lines
    /// to `out`. Returns the finished job once it is done.
    pub(crate) fn crawl_step(&mut self, budget: usize, out: &mut Vec<u8>) -> Option<CrawlJob> {
        let mut job = self.crawl.take()?;
        let mut budget = budget;
        while budget > 0 {
            if job.left == 0 || job.cursor == NIL {
                let Some(list) = job.pending.pop() else {
                    if let CrawlKind::Metadump { .. } = job.kind {
                        out.extend_from_slice(b"END\r\n");
                    }
                    return Some(job);
                };
                job.list = list;
                job.cursor = self.lrus[lru::index(list)].tail;
                let len = self.lrus[lru::index(list)].len;
                job.left = if job.limit == 0 {
                    len
                } else {
                    len.min(job.limit as usize)
                };
                continue;
            }
            let it = job.cursor;
            let v = self.view(it);
            if !v.is(item::LINKED) || v.lru() != job.list {
                // The item went away under the cursor: start the list over.
                let list = &self.lrus[lru::index(job.list)];
                job.cursor = list.tail;
                job.left = job.left.min(list.len);
                continue;
            }
            job.cursor = v.prev();
            job.left -= 1;
            budget -= 1;
            self.crawl_visit(&mut job, it, out);
        }
        self.crawl = Some(job);
        None
    }

    fn crawl_visit(&mut self, job: &mut CrawlJob, it: ChunkRef, out: &mut Vec<u8>) {
        let v = self.view(it);
        let exp = v.exptime();
        let gone = (exp != 0 && exp < self.now()) || self.is_flushed(it);
        job.saw_ttl |= exp != 0;
        let class = job.list & lru::CLASS_MASK;
        let c = class as usize;
        match job.kind {
            CrawlKind::Expired => {
                self.stats.crawler_items_checked += 1;
                self.stats.classes[c].crawler_items_checked += 1;
                if gone {
                    if self.verbose > 1 {
                        let v = self.view(it);
                        eprintln!(
                            "LRU crawler found an expired item (flags: {}, slab: {}): {}",
                            v.iflags(),
                            class,
                            String::from_utf8_lossy(v.key())
                        );
                    }
                    self.stats.crawler_reclaimed += 1;
                    self.stats.classes[c].crawler_reclaimed += 1;
                    self.unlink(it);
                }
            }
            CrawlKind::Metadump { .. } => {
                if gone {
                    return;
                }
                let v = self.view(it);
                let size = self.memcached_size(it);
                out.extend_from_slice(b"key=");
                uriencode(v.key(), out);
                let exp = if exp == 0 {
                    -1
                } else {
                    self.clock.to_unix(exp)
                };
                let line = format!(
                    " exp={} la={} cas={} fetch={} cls={} size={}\n",
                    exp,
                    self.clock.to_unix(v.time()),
                    v.cas(),
                    if v.is(item::FETCHED) { "yes" } else { "no" },
                    class,
                    size
                );
                out.extend_from_slice(line.as_bytes());
            }
        }
    }

    /// Ends a metadump whose connection went away.
    pub(crate) fn crawl_cancel_for(&mut self, fd: i32) {
        if let Some(job) = &self.crawl
            && job.kind == (CrawlKind::Metadump { fd })
        {
            self.crawl = None;
        }
    }
}
