//! memcached's log streams (`watch`): what happens inside the cache,
//! formatted as memcached 1.6.18 formats it, for the connections that asked.
//! This file keeps the watchers and their buffers; `entries.rs` formats
//! the entries.
//!
//! memcached has each worker log binary entries into its own buffer and a
//! logger thread format them into every interested watcher's buffer. Here
//! there is one thread, so an entry is formatted once, when it happens, and
//! appended to each interested watcher's buffer; the reactor writes those
//! buffers to the watchers' sockets (`reactor/log_streams.rs`).
//!
//! The room sits below the ones that log: the cache (`items`), the
//! reactor, and `stats`, which reports the logger's counters.
//!
//! Nothing is formatted, timed or counted while nobody watches: every hook
//! first tests `wants`, one branch on a word that is 0 without watchers.
//!
//! A watcher that does not read is bounded as memcached bounds it: a line
//! goes in only if its length plus 128 bytes fit in what is left of the
//! watcher's buffer (`-o watcher_logbuf_size`); otherwise it is counted as
//! skipped, and the next line that fits is preceded by `skipped=N`.

mod entries;

pub(crate) use entries::CloseReason;
pub(crate) use entries::{EvictEntry, FetchStatus, Peer, StoreEntry, StoreStatus};
use std::fmt::Write as _;

/// What a watcher asks for: memcached's `LOG_*` flags, same bit values.
pub(crate) const SYSEVENTS: u16 = 1 << 1;
pub(crate) const FETCHERS: u16 = 1 << 2;
pub(crate) const MUTATIONS: u16 = 1 << 3;
pub(crate) const CONNEVENTS: u16 = 1 << 5;
pub(crate) const EVICTIONS: u16 = 1 << 6;
pub(crate) const RAWCMDS: u16 = 1 << 9;
pub(crate) const PROXYREQS: u16 = 1 << 10;
pub(crate) const PROXYEVENTS: u16 = 1 << 11;
pub(crate) const PROXYUSER: u16 = 1 << 12;

/// memcached's limit on simultaneous watchers.
pub(crate) const WATCHER_LIMIT: usize = 20;
/// Room a line must leave free in a watcher's buffer (memcached reserves
/// it for the `skipped=` line that may precede it).
const SKIP_RESERVE: usize = 128;

struct Watcher {
    fd: i32,
    flags: u16,
    /// Formatted lines not yet written; `buf[sent..]` is pending.
    buf: Vec<u8>,
    sent: usize,
    skipped: u64,
    /// Writing out a full buffer failed this turn: skip without trying
    /// again until the next (memcached's `failed_flush`), so a watcher
    /// that does not read costs no system call per line.
    stalled: bool,
    /// The sink may write to its socket (not over TLS, where only the
    /// connection's session may write).
    sink_ok: bool,
}

impl Watcher {
    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }
}

/// The counters `stats` shows for the logger.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LoggerStats {
    /// Entries that could not be logged (memcached: a worker's buffer was
    /// full; entries here never wait in between, so it stays 0).
    pub(crate) worker_dropped: u64,
    /// Entries logged (once each, however many watchers took them).
    pub(crate) worker_written: u64,
    pub(crate) watcher_skipped: u64,
    pub(crate) watcher_sent: u64,
}

/// The log streams: who watches what, and what each watcher has not been
/// sent yet. The cache owns it, so every room that logs reaches it there.
#[derive(Default)]
pub(crate) struct Logger {
    /// Union of every watcher's flags: what is worth logging at all.
    flags: u16,
    /// memcached's global id, one per entry (and one per new watcher).
    gid: u64,
    watchers: Vec<Watcher>,
    /// Bytes a watcher's buffer may hold.
    capacity: usize,
    pub(crate) stats: LoggerStats,
    /// The connection whose request is running (the `cfd` of entries
    /// logged from inside the cache).
    pub(crate) cfd: i32,
    /// The line being formatted (kept to avoid allocating per entry).
    line: String,
    /// Where a full watcher's buffer is written before a line is skipped.
    sink: Option<Sink>,
}

/// A non-blocking write of a watcher's bytes to its socket, returning
/// what `send` returns; the reactor provides it (syscalls stay there).
pub(crate) type Sink = fn(i32, &[u8]) -> isize;

/// Why `add_watcher` refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AddError {
    TooMany,
}

impl Logger {
    pub(crate) fn new(watcher_buf_size: usize) -> Logger {
        Logger {
            capacity: watcher_buf_size,
            ..Logger::default()
        }
    }

    /// Whether any watcher wants entries of `flag`: the one branch every
    /// hook pays.
    #[inline]
    pub(crate) fn wants(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Lets a full buffer be written out before a line is given up, as
    /// memcached's logger thread tries to write before it skips.
    pub(crate) fn set_sink(&mut self, sink: Sink) {
        self.sink = Some(sink);
    }

    /// Watcher `fd` is written only through its connection (TLS).
    pub(crate) fn no_sink_for(&mut self, fd: i32) {
        if let Some(w) = self.watchers.iter_mut().find(|w| w.fd == fd) {
            w.sink_ok = false;
        }
    }

    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// Makes connection `fd` a watcher of `flags`; its stream starts with
    /// memcached's `OK`. Entries logged from now on reach it.
    pub(crate) fn add_watcher(&mut self, fd: i32, flags: u16) -> Result<(), AddError> {
        if self.watchers.len() >= WATCHER_LIMIT {
            return Err(AddError::TooMany);
        }
        // memcached takes a gid as the new watcher's starting point.
        self.gid += 1;
        self.watchers.push(Watcher {
            fd,
            flags,
            buf: b"OK\r\n".to_vec(),
            sent: 0,
            skipped: 0,
            stalled: false,
            sink_ok: true,
        });
        self.flags |= flags;
        Ok(())
    }

    pub(crate) fn remove_watcher(&mut self, fd: i32) {
        self.watchers.retain(|w| w.fd != fd);
        self.flags = self.watchers.iter().fold(0, |f, w| f | w.flags);
    }

    pub(crate) fn is_watcher(&self, fd: i32) -> bool {
        self.watchers.iter().any(|w| w.fd == fd)
    }

    /// The bytes waiting for watcher `fd`.
    pub(crate) fn pending(&self, fd: i32) -> &[u8] {
        match self.watchers.iter().find(|w| w.fd == fd) {
            Some(w) => &w.buf[w.sent..],
            None => &[],
        }
    }

    /// A new loop turn: full watchers may be tried again.
    pub(crate) fn new_turn(&mut self) {
        for w in &mut self.watchers {
            w.stalled = false;
        }
    }

    /// Watchers with bytes waiting.
    pub(crate) fn backlogged(&self) -> impl Iterator<Item = i32> + '_ {
        self.watchers
            .iter()
            .filter(|w| w.pending() > 0)
            .map(|w| w.fd)
    }

    /// Notes that `n` bytes of watcher `fd`'s stream were written.
    pub(crate) fn written(&mut self, fd: i32, n: usize) {
        if let Some(w) = self.watchers.iter_mut().find(|w| w.fd == fd) {
            w.sent += n;
            if w.sent == w.buf.len() {
                w.buf.clear();
                w.sent = 0;
                if w.buf.capacity() > 64 * 1024 {
                    w.buf = Vec::new();
                }
            } else if w.sent >= 64 * 1024 {
                // A watcher that never quite catches up: drop what was
                // written, or the buffer would grow without end.
                w.buf.drain(..w.sent);
                w.sent = 0;
            }
        }
    }

    pub(crate) fn reset_stats(&mut self) {
        self.stats = LoggerStats::default();
    }

    /// Hands the formatted line to every watcher of `flag`.
    fn publish(&mut self, flag: u16) {
        self.stats.worker_written += 1;
        let line = self.line.as_bytes();
        for w in self.watchers.iter_mut().filter(|w| w.flags & flag != 0) {
            let fits = |w: &Watcher| w.pending() + line.len() + SKIP_RESERVE <= self.capacity;
            if !fits(w)
                && !w.stalled
                && w.sink_ok
                && let Some(sink) = self.sink
            {
                let n = sink(w.fd, &w.buf[w.sent..]);
                if n > 0 {
                    w.sent += n as usize;
                    w.buf.drain(..w.sent);
                    w.sent = 0;
                }
            }
            if !fits(w) {
                w.stalled = true;
                w.skipped += 1;
                self.stats.watcher_skipped += 1;
                continue;
            }
            if w.skipped > 0 {
                let _ = writeln!(SliceSink(&mut w.buf), "skipped={}", w.skipped);
                w.skipped = 0;
            }
            w.buf.extend_from_slice(line);
            self.stats.watcher_sent += 1;
        }
    }
}

/// `write!` into a byte vector.
struct SliceSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for SliceSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watcher's stream without the `OK` and with ts/gid stripped.
    pub(super) fn lines(l: &Logger, fd: i32) -> Vec<String> {
        let text = String::from_utf8(l.pending(fd).to_vec()).unwrap();
        text.strip_prefix("OK\r\n")
            .unwrap()
            .lines()
            .map(|s| match s.find(" type=") {
                Some(i) => s[i + 1..].to_string(),
                None => s.to_string(),
            })
            .collect()
    }

    #[test]
    fn nothing_is_logged_without_watchers() {
        let mut l = Logger::new(1024);
        assert!(!l.wants(FETCHERS));
        l.add_watcher(5, MUTATIONS).unwrap();
        assert!(!l.wants(FETCHERS) && l.wants(MUTATIONS));
        l.remove_watcher(5);
        assert!(!l.wants(MUTATIONS));
    }

    #[test]
    fn each_watcher_gets_only_what_it_asked_for() {
        let mut l = Logger::new(4096);
        l.add_watcher(3, FETCHERS).unwrap();
        l.add_watcher(4, MUTATIONS).unwrap();
        l.item_get(b"a", FetchStatus::NotFound, 0, 9, 0);
        assert_eq!(lines(&l, 3).len(), 1);
        assert!(lines(&l, 4).is_empty());
        assert_eq!(l.stats.watcher_sent, 1);
    }

    #[test]
    fn a_full_watcher_skips_lines_then_says_how_many() {
        let mut l = Logger::new(400);
        l.add_watcher(3, FETCHERS).unwrap();
        for _ in 0..10 {
            l.item_get(b"key", FetchStatus::NotFound, 0, 9, 0);
        }
        let kept = lines(&l, 3).len();
        assert!(kept > 0 && kept < 10, "{kept}");
        assert_eq!(l.stats.watcher_skipped, 10 - kept as u64);
        // The watcher reads everything: the next line reports the skips.
        let n = l.pending(3).len();
        l.written(3, n);
        l.item_get(b"key", FetchStatus::NotFound, 0, 9, 0);
        let text = String::from_utf8(l.pending(3).to_vec()).unwrap();
        assert!(
            text.starts_with(&format!("skipped={}\n", 10 - kept)),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn a_watcher_that_lags_behind_keeps_a_bounded_buffer() {
        let mut l = Logger::new(8 * 1024);
        l.add_watcher(3, FETCHERS).unwrap();
        for _ in 0..20_000 {
            l.item_get(b"key", FetchStatus::NotFound, 0, 9, 0);
            // Writes all but the last line each time.
            let n = l.pending(3).len();
            l.written(3, n.saturating_sub(80));
        }
        let w = &l.watchers[0];
        assert!(w.buf.len() < 80 * 1024, "{}", w.buf.len());
        assert_eq!(l.stats.watcher_skipped, 0);
    }

    #[test]
    fn a_full_watcher_is_written_out_once_per_turn_at_most() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static TRIES: AtomicUsize = AtomicUsize::new(0);
        fn would_block(_fd: i32, _bytes: &[u8]) -> isize {
            TRIES.fetch_add(1, Ordering::Relaxed);
            -1
        }
        let mut l = Logger::new(400);
        l.set_sink(would_block);
        l.add_watcher(3, FETCHERS).unwrap();
        for _ in 0..100 {
            l.item_get(b"key", FetchStatus::NotFound, 0, 9, 0);
        }
        assert_eq!(TRIES.load(Ordering::Relaxed), 1);
        l.new_turn();
        l.item_get(b"key", FetchStatus::NotFound, 0, 9, 0);
        assert_eq!(TRIES.load(Ordering::Relaxed), 2);
        assert!(l.stats.watcher_skipped > 90);
    }

    #[test]
    fn the_watcher_limit_is_memcacheds() {
        let mut l = Logger::new(4096);
        for fd in 0..WATCHER_LIMIT as i32 {
            l.add_watcher(fd, FETCHERS).unwrap();
        }
        assert_eq!(l.add_watcher(99, FETCHERS), Err(AddError::TooMany));
        l.remove_watcher(0);
        assert!(l.add_watcher(99, FETCHERS).is_ok());
    }
}
