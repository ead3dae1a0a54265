//! The entries of memcached's log streams, each formatted as memcached
//! 1.6.18 prints it: `ts=<secs>.<usecs> gid=<n> type=<kind>` and then the
//! entry's fields in memcached's order, keys URI-encoded. Each entry is
//! formatted once and handed to the watchers that asked for its kind
//! (`Logger::publish`, in `mod.rs`).

use super::{CONNEVENTS, EVICTIONS, FETCHERS, Logger, MUTATIONS, SYSEVENTS};
use std::fmt::Write as _;
use std::net::SocketAddr;

/// How a fetch went, as `item_get` lines name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FetchStatus {
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
pub(crate) enum StoreStatus {
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
pub(crate) enum CloseReason {
    /// memcached's default: anything not named below (read errors,
    /// protocol violations, a watcher going away).
    #[default]
    Error,
    Normal,
    IdleTimeout,
    /// memcached's reason for the connection that sent `shutdown`; never
    /// set here yet (that connection closes as `error`).
    #[allow(dead_code)]
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
pub(crate) enum Peer {
    Tcp(SocketAddr),
    /// A unix socket: memcached prints `rip=unix rport=0 transport=local`.
    Local,
}

/// One `item_store` entry's fields.
pub(crate) struct StoreEntry<'k> {
    pub(crate) key: &'k [u8],
    pub(crate) status: StoreStatus,
    /// memcached's command number: 1 add, 2 set, 3 replace, 4 append,
    /// 5 prepend, 6 cas, 0 when it is not known.
    pub(crate) cmd: u8,
    /// Relative expiry time (0: none).
    pub(crate) exptime: u32,
    pub(crate) clsid: u8,
    pub(crate) cfd: i32,
    /// Value length without its CRLF.
    pub(crate) size: usize,
}

/// One `eviction` entry's fields.
pub(crate) struct EvictEntry<'k> {
    pub(crate) key: &'k [u8],
    pub(crate) fetched: bool,
    pub(crate) exptime: u32,
    pub(crate) time: u32,
    pub(crate) clsid: u8,
    pub(crate) size: usize,
}

impl Logger {
    /// memcached's `do_item_get` entry.
    pub(crate) fn item_get(
        &mut self,
        key: &[u8],
        found: FetchStatus,
        clsid: u8,
        cfd: i32,
        size: usize,
    ) {
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
    pub(crate) fn item_store(&mut self, e: &StoreEntry, now: u32) {
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
    pub(crate) fn eviction(&mut self, e: &EvictEntry, now: u32) {
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
    pub(crate) fn slab_move(&mut self, src: i32, dst: i32) {
        let l = self.start("slab_move");
        let _ = writeln!(l, " src={src} dst={dst}");
        self.publish(SYSEVENTS);
    }

    pub(crate) fn conn_new(&mut self, peer: Peer, cfd: i32) {
        let l = self.start("conn_new");
        push_peer(l, peer);
        let _ = writeln!(l, " cfd={cfd}");
        self.publish(CONNEVENTS);
    }

    pub(crate) fn conn_close(&mut self, peer: Peer, reason: CloseReason, cfd: i32) {
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
}

fn push_peer(l: &mut String, peer: Peer) {
    let _ = match peer {
        Peer::Tcp(a) => write!(l, " rip={} rport={} transport=tcp", a.ip(), a.port()),
        Peer::Local => write!(l, " rip=unix rport=0 transport=local"),
    };
}

/// memcached's key encoding: letters, digits and `-._~` as they are, every
/// other byte as `%XX` (upper-case hex).
fn uriencode(key: &[u8], out: &mut String) {
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
    use super::super::tests::lines;
    use super::*;

    #[test]
    fn keys_are_uri_encoded_as_memcached_does() {
        let mut s = String::new();
        uriencode(b"a-b._~Z9 %,\x01\xff", &mut s);
        assert_eq!(s, "a-b._~Z9%20%25%2C%01%FF");
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
}
