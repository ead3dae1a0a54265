//! memcached's log streams (`watch`): what happens inside the cache,
//! formatted as memcached 1.6.18 formats it, for the connections that asked.
//!
//! memcached has each worker log binary entries into its own buffer and a
//! logger thread format them into every interested watcher's buffer. Here
//! there is one thread, so an entry is formatted once, when it happens, and
//! appended to each interested watcher's buffer; the reactor writes those
//! buffers to the watchers' sockets (`reactor/watch.rs`).
//!
//! Nothing is formatted, timed or counted while nobody watches: every hook
//! first tests `wants`, one branch on a word that is 0 without watchers.
//!
//! A watcher that does not read is bounded as memcached bounds it: a line
//! goes in only if its length plus 128 bytes fit in what is left of the
//! watcher's buffer (`-o watcher_logbuf_size`); otherwise it is counted as
//! skipped, and the next line that fits is preceded by `skipped=N`.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// What a watcher asks for: memcached's `LOG_*` flags, same bit values.
pub const SYSEVENTS: u16 = 1 << 1;
pub const FETCHERS: u16 = 1 << 2;
pub const MUTATIONS: u16 = 1 << 3;
pub const CONNEVENTS: u16 = 1 << 5;
pub const EVICTIONS: u16 = 1 << 6;
pub const RAWCMDS: u16 = 1 << 9;
pub const PROXYREQS: u16 = 1 << 10;
pub const PROXYEVENTS: u16 = 1 << 11;
pub const PROXYUSER: u16 = 1 << 12;

/// memcached's limit on simultaneous watchers.
pub const WATCHER_LIMIT: usize = 20;
/// Room a line must leave free in a watcher's buffer (memcached reserves
/// it for the `skipped=` line that may precede it).
const SKIP_RESERVE: usize = 128;

/// The flag a `watch` argument names, as 1.6.18 (built without the proxy,
/// whose arguments it still accepts) parses them; None for anything else.
pub fn flag_for(arg: &[u8]) -> Option<u16> {
    Some(match arg {
        b"rawcmds" => RAWCMDS,
        b"evictions" => EVICTIONS,
        b"fetchers" => FETCHERS,
        b"mutations" => MUTATIONS,
        b"sysevents" => SYSEVENTS,
        b"connevents" => CONNEVENTS,
        b"proxyreqs" => PROXYREQS,
        b"proxyevents" => PROXYEVENTS,
        b"proxyuser" => PROXYUSER,
        _ => return None,
    })
}

/// How a fetch went, as `item_get` lines name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchStatus {
    NotFound,
    Found,
    Flushed,
    Expired,
}

impl FetchStatus {
    fn name(self) -> &'static str {
        match self {
            FetchStatus::NotFound => "not_found",
            FetchStatus::Found => "found",
            FetchStatus::Flushed => "flushed",
            FetchStatus::Expired => "expired",
        }
    }
}

/// A store's outcome, as `item_store` lines name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreStatus {
    NotStored,
    Stored,
    Exists,
    NotFound,
    TooLarge,
    NoMemory,
}

impl StoreStatus {
    fn name(self) -> &'static str {
        match self {
            StoreStatus::NotStored => "not_stored",
            StoreStatus::Stored => "stored",
            StoreStatus::Exists => "exists",
            StoreStatus::NotFound => "not_found",
            StoreStatus::TooLarge => "too_large",
            StoreStatus::NoMemory => "no_memory",
        }
    }
}

/// Why a connection closed, as `conn_close` lines name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CloseReason {
    /// memcached's default: anything not named below (read errors,
    /// protocol violations, a watcher going away).
    #[default]
    Error,
    Normal,
    IdleTimeout,
    Shutdown,
}

impl CloseReason {
    fn name(self) -> &'static str {
        match self {
            CloseReason::Error => "error",
            CloseReason::Normal => "normal",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// A client's remote end for `conn_*` lines.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A unix socket: memcached prints `rip=unix rport=0 transport=local`.
    Local,
}

/// One `item_store` entry's fields.
pub struct StoreEntry<'k> {
    pub key: &'k [u8],
    pub status: StoreStatus,
    /// memcached's command number: 1 add, 2 set, 3 replace, 4 append,
    /// 5 prepend, 6 cas, 0 when it is not known.
    pub cmd: u8,
    /// Relative expiry time (0: none).
    pub exptime: u32,
    pub clsid: u8,
    pub cfd: i32,
    /// Value length without its CRLF.
    pub size: usize,
}

/// One `eviction` entry's fields.
pub struct EvictEntry<'k> {
    pub key: &'k [u8],
    pub fetched: bool,
    pub exptime: u32,
    pub time: u32,
    pub clsid: u8,
    pub size: usize,
}

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
}

impl Watcher {
    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }
}

/// The counters `stats` shows for the logger.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoggerStats {
    /// Entries that could not be logged (memcached: a worker's buffer was
    /// full; entries here never wait in between, so it stays 0).
    pub worker_dropped: u64,
    /// Entries logged (once each, however many watchers took them).
    pub worker_written: u64,
    pub watcher_skipped: u64,
    pub watcher_sent: u64,
}

#[derive(Default)]
pub struct Logger {
    /// Union of every watcher's flags: what is worth logging at all.
    flags: u16,
    /// memcached's global id, one per entry (and one per new watcher).
    gid: u64,
    watchers: Vec<Watcher>,
    /// Bytes a watcher's buffer may hold.
    capacity: usize,
    pub stats: LoggerStats,
    /// The connection whose request is running (the `cfd` of entries
    /// logged from inside the cache).
    pub cfd: i32,
    /// The line being formatted (kept to avoid allocating per entry).
    line: String,
    /// Where a full watcher's buffer is written before a line is skipped.
    sink: Option<Sink>,
}

/// A non-blocking write of a watcher's bytes to its socket, returning
/// what `send` returns; the reactor provides it (syscalls stay there).
pub type Sink = fn(i32, &[u8]) -> isize;

/// Why `add_watcher` refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AddError {
    TooMany,
}

impl Logger {
    pub fn new(watcher_buf_size: usize) -> Logger {
        Logger {
            capacity: watcher_buf_size,
            ..Logger::default()
        }
    }

    /// Whether any watcher wants entries of `flag`: the one branch every
    /// hook pays.
    #[inline]
    pub fn wants(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Lets a full buffer be written out before a line is given up, as
    /// memcached's logger thread tries to write before it skips.
    pub fn set_sink(&mut self, sink: Sink) {
        self.sink = Some(sink);
    }

    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// Makes connection `fd` a watcher of `flags`; its stream starts with
    /// memcached's `OK`. Entries logged from now on reach it.
    pub fn add_watcher(&mut self, fd: i32, flags: u16) -> Result<(), AddError> {
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
        });
        self.flags |= flags;
        Ok(())
    }

    pub fn remove_watcher(&mut self, fd: i32) {
        self.watchers.retain(|w| w.fd != fd);
        self.flags = self.watchers.iter().fold(0, |f, w| f | w.flags);
    }

    pub fn is_watcher(&self, fd: i32) -> bool {
        self.watchers.iter().any(|w| w.fd == fd)
    }

    /// The bytes waiting for watcher `fd`.
    pub fn pending(&self, fd: i32) -> &[u8] {
        match self.watchers.iter().find(|w| w.fd == fd) {
            Some(w) => &w.buf[w.sent..],
            None => &[],
        }
    }

    /// A new loop turn: full watchers may be tried again.
    pub fn new_turn(&mut self) {
        for w in &mut self.watchers {
            w.stalled = false;
        }
    }

    /// Watchers with bytes waiting.
    pub fn backlogged(&self) -> impl Iterator<Item = i32> + '_ {
        self.watchers
            .iter()
            .filter(|w| w.pending() > 0)
            .map(|w| w.fd)
    }

    /// Notes that `n` bytes of watcher `fd`'s stream were written.
    pub fn written(&mut self, fd: i32, n: usize) {
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

    pub fn reset_stats(&mut self) {
        self.stats = LoggerStats::default();
    }

    /// memcached's `do_item_get` entry.
    pub fn item_get(&mut self, key: &[u8], found: FetchStatus, clsid: u8, cfd: i32, size: usize) {
        let l = self.start("item_get");
        l.push_str(" key=");
        uriencode(key, l);
        let _ = writeln!(
            l,
            " status={} clsid={clsid} cfd={cfd} size={size}",
            found.name()
        );
        self.publish(FETCHERS);
    }

    /// memcached's `do_store_item` entry (and its refused-store entries).
    pub fn item_store(&mut self, e: &StoreEntry, now: u32) {
        const CMDS: [&str; 7] = ["null", "add", "set", "replace", "append", "prepend", "cas"];
        let cmd = CMDS.get(e.cmd as usize).copied().unwrap_or("na");
        // memcached prints the remaining lifetime as unsigned: an expiry
        // already past shows as a wrapped-around number.
        let ttl = if e.exptime == 0 {
            0
        } else {
            e.exptime.wrapping_sub(now)
        };
        let l = self.start("item_store");
        l.push_str(" key=");
        uriencode(e.key, l);
        let _ = writeln!(
            l,
            " status={} cmd={cmd} ttl={ttl} clsid={} cfd={} size={}",
            e.status.name(),
            e.clsid,
            e.cfd,
            e.size
        );
        self.publish(MUTATIONS);
    }

    /// memcached's eviction entry: `ttl` is -1 for an item without expiry,
    /// `la` the seconds since its last access.
    pub fn eviction(&mut self, e: &EvictEntry, now: u32) {
        // memcached subtracts unsigned: a past expiry wraps around.
        let ttl = if e.exptime == 0 {
            -1
        } else {
            e.exptime.wrapping_sub(now) as i64
        };
        let la = now.wrapping_sub(e.time) as i32;
        let l = self.start("eviction");
        l.push_str(" key=");
        uriencode(e.key, l);
        let fetch = if e.fetched { "yes" } else { "no" };
        let _ = writeln!(
            l,
            " fetch={fetch} ttl={ttl} la={la} clsid={} size={}",
            e.clsid, e.size
        );
        self.publish(EVICTIONS);
    }

    /// A page move `slabs automove 1` decided.
    pub fn slab_move(&mut self, src: i32, dst: i32) {
        let l = self.start("slab_move");
        let _ = writeln!(l, " src={src} dst={dst}");
        self.publish(SYSEVENTS);
    }

    pub fn conn_new(&mut self, peer: Peer, cfd: i32) {
        let l = self.start("conn_new");
        push_peer(l, peer);
        let _ = writeln!(l, " cfd={cfd}");
        self.publish(CONNEVENTS);
    }

    pub fn conn_close(&mut self, peer: Peer, reason: CloseReason, cfd: i32) {
        let l = self.start("conn_close");
        push_peer(l, peer);
        let _ = writeln!(l, " reason={} cfd={cfd}", reason.name());
        self.publish(CONNEVENTS);
    }

    /// Starts a line with memcached's prefix: wall-clock time (microseconds
    /// not zero-padded, as memcached prints them), the entry's gid, type.
    fn start(&mut self, kind: &str) -> &mut String {
        self.gid += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.line.clear();
        let _ = write!(
            self.line,
            "ts={}.{} gid={} type={kind}",
            now.as_secs(),
            now.subsec_micros(),
            self.gid
        );
        &mut self.line
    }

    /// Hands the formatted line to every watcher of `flag`.
    fn publish(&mut self, flag: u16) {
        self.stats.worker_written += 1;
        let line = self.line.as_bytes();
        for w in self.watchers.iter_mut().filter(|w| w.flags & flag != 0) {
            let fits = |w: &Watcher| w.pending() + line.len() + SKIP_RESERVE <= self.capacity;
            if !fits(w)
                && !w.stalled
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

fn push_peer(l: &mut String, peer: Peer) {
    let _ = match peer {
        Peer::Tcp(a) => write!(l, " rip={} rport={} transport=tcp", a.ip(), a.port()),
        Peer::Local => write!(l, " rip=unix rport=0 transport=local"),
    };
}

/// memcached's key encoding: letters, digits and `-._~` as they are, every
/// other byte as `%XX` (upper-case hex).
pub fn uriencode(key: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watcher's stream without the `OK` and with ts/gid stripped.
    fn lines(l: &Logger, fd: i32) -> Vec<String> {
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
    fn keys_are_uri_encoded_as_memcached_does() {
        let mut s = String::new();
        uriencode(b"a-b._~Z9 %,\x01\xff", &mut s);
        assert_eq!(s, "a-b._~Z9%20%25%2C%01%FF");
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
    fn lines_have_memcached_fields_in_its_order() {
        let mut l = Logger::new(64 * 1024);
        l.add_watcher(7, FETCHERS | MUTATIONS | EVICTIONS | CONNEVENTS)
            .unwrap();
        l.item_get(b"k 1", FetchStatus::Found, 1, 9, 3);
        let store = StoreEntry {
            key: b"k",
            status: StoreStatus::Stored,
            cmd: 2,
            exptime: 110,
            clsid: 1,
            cfd: 9,
            size: 5,
        };
        l.item_store(&store, 100);
        l.item_store(
            &StoreEntry {
                exptime: 1,
                ..store
            },
            100,
        );
        let evicted = EvictEntry {
            key: b"e",
            fetched: false,
            exptime: 0,
            time: 90,
            clsid: 2,
            size: 10,
        };
        l.eviction(&evicted, 100);
        let peer = Peer::Tcp("127.0.0.1:4000".parse().unwrap());
        l.conn_new(peer, 9);
        l.conn_close(peer, CloseReason::Normal, 9);
        l.conn_close(Peer::Local, CloseReason::IdleTimeout, 10);
        l.add_watcher(8, SYSEVENTS).unwrap();
        l.slab_move(3, 7);
        assert_eq!(lines(&l, 8), ["type=slab_move src=3 dst=7"]);
        assert_eq!(
            lines(&l, 7),
            [
                "type=item_get key=k%201 status=found clsid=1 cfd=9 size=3",
                "type=item_store key=k status=stored cmd=set ttl=10 clsid=1 cfd=9 size=5",
                "type=item_store key=k status=stored cmd=set ttl=4294967197 clsid=1 cfd=9 size=5",
                "type=eviction key=e fetch=no ttl=-1 la=10 clsid=2 size=10",
                "type=conn_new rip=127.0.0.1 rport=4000 transport=tcp cfd=9",
                "type=conn_close rip=127.0.0.1 rport=4000 transport=tcp reason=normal cfd=9",
                "type=conn_close rip=unix rport=0 transport=local reason=idle_timeout cfd=10",
            ]
        );
        assert_eq!(l.stats.worker_written, 8);
        assert_eq!(l.stats.watcher_sent, 8);
    }

    #[test]
    fn prefix_is_time_then_gid() {
        let mut l = Logger::new(4096);
        l.add_watcher(3, FETCHERS).unwrap();
        l.item_get(b"a", FetchStatus::NotFound, 0, 4, 0);
        let text = String::from_utf8(l.pending(3).to_vec()).unwrap();
        let line = text.strip_prefix("OK\r\n").unwrap();
        let (ts, rest) = line.split_once(' ').unwrap();
        let (secs, usecs) = ts.strip_prefix("ts=").unwrap().split_once('.').unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000);
        assert!(usecs.parse::<u32>().unwrap() < 1_000_000);
        // The watcher took gid 1; its first entry is 2.
        assert!(rest.starts_with("gid=2 type=item_get "), "{rest}");
        assert!(line.ends_with("size=0\n"));
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
