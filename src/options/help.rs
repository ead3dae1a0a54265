//! `-h` and `-i`: memcached's help text, printed with the values parsed
//! *so far* as the defaults (as memcached does), followed by blocks for this
//! server's own options; and our license notice.

use std::io::Write as _;

use super::checks::{ITEM_SIZE_MAX_LOWER_LIMIT, ITEM_SIZE_MAX_UPPER_LIMIT};
use super::state::ParseState;
use crate::numbers::c_fixed;
use crate::settings::{AofSettings, VERSION};

/// The `-l` note and the `-Z` line of a build with TLS.
#[cfg(feature = "tls")]
const TLS_LISTEN_LINES: &str = "                          if TLS/SSL is enabled, 'notls' prefix can be used to\n                          \
     disable for specific listeners (-l notls:<ip>:<port>) \n";
#[cfg(feature = "tls")]
const TLS_ENABLE_LINE: &str = "-Z, --enable-ssl          enable TLS/SSL\n";
#[cfg(not(feature = "tls"))]
const TLS_LISTEN_LINES: &str = "";
#[cfg(not(feature = "tls"))]
const TLS_ENABLE_LINE: &str = "";

impl ParseState {
    /// memcached's `usage()`, which prints the *current* values as the
    /// defaults and gives up (exit 1) when some of them differ from the
    /// defaults its text hard-codes. TLS lines are there in a build with
    /// TLS.
    pub(super) fn usage(&self) -> (Vec<u8>, i32) {
        let mut out = Vec::new();
        if let Err(param) = self.usage_into(&mut out) {
            let _ = writeln!(
                out,
                "Default value of [{param}] has changed. Modify the help text and default value check."
            );
            return (out, 1);
        }
        (out, 0)
    }

    fn usage_into(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        self.usage_basics(out);
        verify_default("udp-port", self.c_ints.udp_port == 0)?;
        self.usage_tuning(out);
        self.usage_extended(out);
        verify_default("read_buf_mem_limit", self.c_ints.read_buf_mem_limit == 0)?;
        self.usage_lru(out);
        verify_default("tail_repair_time", self.c_ints.tail_repair_time == 0)?;
        verify_default("lru_crawler_tocrawl", self.c_ints.lru_crawler_tocrawl == 0)?;
        verify_default("idle_timeout", self.c_ints.idle_timeout == 0)?;
        out.extend_from_slice(
            b"   - sock_cookie_id:      attributes an ID to a socket for ip filtering/firewalls \n",
        );
        self.usage_ext(out);
        verify_default("ext_item_age", self.settings.ext.item_age == u32::MAX)?;
        self.usage_tls(out)?;
        // memcached's last line (after its TLS ones), its text kept whole.
        out.extend_from_slice(
            b"-N, --napi_ids            number of napi ids. see doc/napi_ids.txt for more details\n",
        );
        self.usage_aof(out);
        self.usage_replication(out);
        usage_operations(out);
        Ok(())
    }

    fn usage_basics(&self, out: &mut Vec<u8>) {
        let (settings, ints) = (&self.settings, &self.c_ints);
        let _ = write!(
            out,
            "memcached {VERSION}\n\
             -p, --port=<num>          TCP port to listen on (default: {})\n\
             -U, --udp-port=<num>      UDP port to listen on (default: {}, off)\n\
             -s, --unix-socket=<file>  UNIX socket to listen on (disables network support)\n\
             -a, --unix-mask=<mask>    access mask for UNIX socket, in octal (default: {:o})\n\
             -A, --enable-shutdown     enable ascii \"shutdown\" command\n\
             -l, --listen=<addr>       interface to listen on (default: INADDR_ANY)\n{}\
             -d, --daemon              run as a daemon\n\
             -r, --enable-coredumps    maximize core file limit\n\
             -u, --user=<user>         assume identity of <username> (only when run as root)\n\
             -m, --memory-limit=<num>  item memory in megabytes (default: {})\n\
             -M, --disable-evictions   return error on memory exhausted instead of evicting\n\
             -c, --conn-limit=<num>    max simultaneous connections (default: {})\n\
             -k, --lock-memory         lock down all paged memory\n\
             -v, --verbose             verbose (print errors/warnings while in event loop)\n\
             -vv                       very verbose (also print client commands/responses)\n\
             -vvv                      extremely verbose (internal state transitions)\n\
             -h, --help                print this help and exit\n\
             -i, --license             print memcached and libevent license\n\
             -V, --version             print version and exit\n\
             -P, --pidfile=<file>      save PID in <file>, only used with -d option\n\
             -f, --slab-growth-factor=<num> chunk size growth factor (default: {:>2})\n\
             -n, --slab-min-size=<bytes> min space used for key+value+flags (default: {})\n",
            ints.port,
            ints.udp_port,
            ints.access as u32,
            TLS_LISTEN_LINES,
            settings.max_bytes / (1 << 20),
            ints.max_conns,
            c_fixed(settings.factor, 2),
            ints.chunk_size,
        );
    }

    fn usage_tuning(&self, out: &mut Vec<u8>) {
        let (settings, ints) = (&self.settings, &self.c_ints);
        out.extend_from_slice(
            b"-L, --enable-largepages  try to use large memory pages (if available)\n\
              -D <char>     Use <char> as the delimiter between key prefixes and IDs.\n\
              \x20             This is used for per-prefix stats reporting. The default is\n\
              \x20             \"",
        );
        out.push(settings.prefix_delimiter);
        let _ = write!(
            out,
            "\" (colon). If this option is specified, stats collection\n              \
             is turned on automatically; if not, then it may be turned on\n              \
             by sending the \"stats detail on\" command to the server.\n\
             -t, --threads=<num>       number of threads to use (default: {})\n\
             -R, --max-reqs-per-event  maximum number of requests per event, limits the\n                          \
             requests processed per connection to prevent \n                          \
             starvation (default: {})\n\
             -C, --disable-cas         disable use of CAS\n\
             -b, --listen-backlog=<num> set the backlog queue limit (default: {})\n\
             -B, --protocol=<name>     protocol - one of ascii, binary, or auto (default: {})\n\
             -I, --max-item-size=<num> adjusts max item size\n                          \
             (default: {}m, min: {}k, max: {}m)\n\
             -S, --enable-sasl         turn on Sasl authentication\n\
             -F, --disable-flush-all   disable flush_all command\n\
             -X, --disable-dumping     disable stats cachedump and lru_crawler metadump\n\
             -W  --disable-watch       disable watch commands (live logging)\n\
             -Y, --auth-file=<file>    (EXPERIMENTAL) enable ASCII protocol authentication. format:\n                          \
             user:pass\\nuser2:pass2\\n\n\
             -e, --memory-file=<file>  (EXPERIMENTAL) mmap a file for item memory.\n                          \
             use only in ram disks or persistent memory mounts!\n                          \
             enables restartable cache (stop with SIGUSR1)\n{}",
            ints.num_threads,
            ints.reqs_per_event,
            settings.backlog,
            settings.protocol.name(),
            ints.item_size_max / (1 << 20),
            ITEM_SIZE_MAX_LOWER_LIMIT / (1 << 10),
            ITEM_SIZE_MAX_UPPER_LIMIT / (1 << 20),
            TLS_ENABLE_LINE,
        );
    }

    /// memcached's `-o ssl_*` lines (a build with TLS only), with its
    /// checks that the defaults printed are the defaults.
    #[cfg(feature = "tls")]
    fn usage_tls(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        let tls = &self.settings.tls;
        let _ = write!(
            out,
            "   - ssl_chain_cert:      certificate chain file in PEM format\n   \
             - ssl_key:             private key, if not part of the -ssl_chain_cert\n   \
             - ssl_keyformat:       private key format (PEM, DER or ENGINE) (default: PEM)\n   \
             - ssl_verify_mode:     peer certificate verification mode, default is 0(None).\n                          \
             valid values are 0(None), 1(Request), 2(Require)\n                          \
             or 3(Once)\n   \
             - ssl_ciphers:         specify cipher list to be used\n   \
             - ssl_ca_cert:         PEM format file of acceptable client CA's\n   \
             - ssl_wbuf_size:       size in kilobytes of per-connection SSL output buffer\n                          \
             (default: {})\n   \
             - ssl_session_cache:   enable server-side SSL session cache, to support session\n                          \
             resumption\n   \
             - ssl_kernel_tls:      enable kernel TLS offload\n   \
             - ssl_min_version:     minimum protocol version to accept (default: {})\n                          \
             valid values are 0(tlsv1.0), 1(tlsv1.1), 2(tlsv1.2), or 3(tlsv1.3).\n",
            tls.wbuf_size / (1 << 10),
            tls.min_version_name(),
        );
        let defaults = crate::settings::TlsSettings::default();
        verify_default("ssl_keyformat", tls.keyformat == defaults.keyformat)?;
        verify_default("ssl_verify_mode", tls.verify_mode == defaults.verify_mode)?;
        verify_default("ssl_min_version", tls.min_version == defaults.min_version)
    }

    #[cfg(not(feature = "tls"))]
    fn usage_tls(&self, _: &mut Vec<u8>) -> Result<(), &'static str> {
        Ok(())
    }

    fn usage_extended(&self, out: &mut Vec<u8>) {
        let (settings, ints) = (&self.settings, &self.c_ints);
        let _ = write!(
            out,
            "-o, --extended            comma separated list of extended options\n                          \
             most options have a 'no_' prefix to disable\n   \
             - maxconns_fast:       immediately close new connections after limit (default: {})\n   \
             - hashpower:           an integer multiplier for how large the hash\n                          \
             table should be. normally grows at runtime. (default starts at: {})\n                          \
             set based on \"STAT hash_power_level\"\n   \
             - tail_repair_time:    time in seconds for how long to wait before\n                          \
             forcefully killing LRU tail item.\n                          \
             disabled by default; very dangerous option.\n   \
             - hash_algorithm:      the hash table algorithm\n                          \
             default is murmur3 hash. options: jenkins, murmur3, xxh3\n   \
             - no_lru_crawler:      disable LRU Crawler background thread.\n   \
             - lru_crawler_sleep:   microseconds to sleep between items\n                          \
             default is {}.\n   \
             - lru_crawler_tocrawl: max items to crawl per slab per run\n                          \
             default is {} (unlimited)\n   \
             - read_buf_mem_limit:  limit in megabytes for connection read/response buffers.\n                          \
             do not adjust unless you have high (20k+) conn. limits.\n                          \
             0 means unlimited (default: {})\n",
            if settings.maxconns_fast {
                "enabled"
            } else {
                "disabled"
            },
            ints.hashpower,
            ints.lru_crawler_sleep,
            ints.lru_crawler_tocrawl,
            ints.read_buf_mem_limit,
        );
    }

    fn usage_lru(&self, out: &mut Vec<u8>) {
        let (ints, tuning) = (&self.c_ints, &self.tuning);
        let _ = write!(
            out,
            "   - no_lru_maintainer:   disable new LRU system + background thread.\n   \
             - hot_lru_pct:         pct of slab memory to reserve for hot lru.\n                          \
             (requires lru_maintainer, default pct: {})\n   \
             - warm_lru_pct:        pct of slab memory to reserve for warm lru.\n                          \
             (requires lru_maintainer, default pct: {})\n   \
             - hot_max_factor:      items idle > cold lru age * drop from hot lru. (default: {})\n   \
             - warm_max_factor:     items idle > cold lru age * this drop from warm. (default: {})\n   \
             - temporary_ttl:       TTL's below get separate LRU, can't be evicted.\n                          \
             (requires lru_maintainer, default: {})\n   \
             - idle_timeout:        timeout for idle connections. (default: {}, no timeout)\n   \
             - slab_chunk_max:      (EXPERIMENTAL) maximum slab size in kilobytes. use extreme care. (default: {})\n   \
             - watcher_logbuf_size: size in kilobytes of per-watcher write buffer. (default: {})\n   \
             - worker_logbuf_size:  size in kilobytes of per-worker-thread buffer\n                          \
             read by background thread, then written to watchers. (default: {})\n   \
             - track_sizes:         enable dynamic reports for 'stats sizes' command.\n   \
             - no_hashexpand:       disables hash table expansion (dangerous)\n   \
             - modern:              enables options which will be default in future.\n                          \
             currently: nothing\n   \
             - no_modern:           uses defaults of previous major version (1.4.x)\n",
            tuning.hot_lru_pct,
            tuning.warm_lru_pct,
            c_fixed(tuning.hot_max_factor, 2),
            c_fixed(tuning.warm_max_factor, 2),
            tuning.temporary_ttl,
            ints.idle_timeout,
            ints.slab_chunk_max / (1 << 10),
            tuning.watcher_logbuf_size / (1 << 10),
            tuning.worker_logbuf_size / (1 << 10),
        );
    }

    /// Our replication options (not memcached's), after all of its text so
    /// that everything before them stays memcached's byte for byte.
    fn usage_replication(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            "Replication (not in memcached):\n\
             -x, --repl-peer=<host[:port]> replicate with the peer node (repcached's -x);\n                          \
             <port> defaults to the replication port\n    \
             --repl-port=<num>     replication port to listen on (default: {})\n\
             -X <num>                  the same as --repl-port (repcached's -X): -X followed\n                          \
             by a number; a bare -X is --disable-dumping. A port\n                          \
             without -x: listen for the peer as its master. The\n                          \
             port is bound on the first -l address\n   \
             - repl_peer:           the same as -x\n   \
             - repl_port:           the same as --repl-port\n",
            self.settings.repl.port,
        );
        if cfg!(feature = "tls") {
            out.extend_from_slice(
                b"   - repl_tls:            the link speaks TLS: ssl_chain_cert and ssl_key shown\n                          \
                  to the peer, its certificate checked against ssl_ca_cert\n   \
                  - repl_tls_name:       the name (DNS or IP) the peer's certificate must\n                          \
                  carry (default: the host of -x)\n",
            );
        }
    }

    /// This server's additions, after memcached's own text.
    fn usage_aof(&self, out: &mut Vec<u8>) {
        let a = AofSettings::default();
        let _ = write!(
            out,
            "Persistence (not in memcached):\n\
             --aof-file=<file>         append every change to <file>; replay it at start\n   \
             - aof:                 the same as --aof-file\n   \
             - aof_sync:            always, everysec or no (default: {})\n   \
             - aof_rewrite_pct:     rewrite the file when it grew this many percent\n                          \
             since the last rewrite; 0 never (default: {})\n   \
             - aof_rewrite_min:     ... and is at least this big (default: {}m)\n   \
             - aof_fix:             cut a corrupt file at its last good record\n",
            a.sync.name(),
            a.rewrite_pct,
            a.rewrite_min >> 20,
        );
    }
}

/// The metrics endpoint and socket activation (not in memcached).
fn usage_operations(out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"Operations (not in memcached):\n    \
          --metrics-port=<num>  serve GET /metrics (Prometheus text format) on this\n                          \
          TCP port (default: 0, off)\n   \
          - metrics_port:        the same as --metrics-port\n   \
          - metrics_addr:        address for the metrics port (default: the first\n                          \
          -l address, or every address)\n\
          Started with LISTEN_FDS and LISTEN_PID (systemd socket activation), the\n\
          server serves the sockets it inherits instead of binding -l/-p/-U/-s:\n\
          TCP and unix streams as memcached ports, UDP as the UDP port, and one\n\
          named \"metrics\" (LISTEN_FDNAMES) or on the metrics port as /metrics.\n",
    );
}

impl ParseState {
    /// memcached's extstore block, with the values parsed so far.
    fn usage_ext(&self, out: &mut Vec<u8>) {
        let e = &self.settings.ext;
        let _ = write!(
            out,
            "\n   - External storage (ext_*) related options (see: https://memcached.org/extstore)\n\
             \x20  - ext_path:            file to write to for external storage.\n\
             \x20                         ie: ext_path=/mnt/d1/extstore:1G\n\
             \x20  - ext_page_size:       size in megabytes of storage pages. (default: {})\n\
             \x20  - ext_wbuf_size:       size in megabytes of page write buffers. (default: {})\n\
             \x20  - ext_threads:         number of IO threads to run. (default: {})\n\
             \x20  - ext_item_size:       store items larger than this (bytes, default {})\n\
             \x20  - ext_item_age:        store items idle at least this long (seconds, default: no age limit)\n\
             \x20  - ext_low_ttl:         consider TTLs lower than this specially (default: {})\n\
             \x20  - ext_drop_unread:     don't re-write unread values during compaction (default: {})\n\
             \x20  - ext_recache_rate:    recache an item every N accesses (default: {})\n\
             \x20  - ext_compact_under:   compact when fewer than this many free pages\n\
             \x20                         (default: 1/4th of the assigned storage)\n\
             \x20  - ext_drop_under:      drop COLD items when fewer than this many free pages\n\
             \x20                         (default: 1/4th of the assigned storage)\n\
             \x20  - ext_max_frag:        max page fragmentation to tolerate (default: {})\n\
             \x20  - ext_max_sleep:       max sleep time of background threads in us (default: {})\n\
             \x20  - slab_automove_freeratio: ratio of memory to hold free as buffer.\n\
             \x20                         (see doc/storage.txt for more info, default: {})\n",
            e.page_size >> 20,
            self.settings.ext.wbuf_size >> 20,
            e.threads,
            e.item_size,
            e.low_ttl,
            if e.drop_unread { "enabled" } else { "disabled" },
            e.recache_rate,
            c_fixed(e.max_frag, 2),
            e.max_sleep,
            c_fixed(e.slab_automove_freeratio, 3),
        );
    }
}

fn verify_default(param: &'static str, holds: bool) -> Result<(), &'static str> {
    if holds { Ok(()) } else { Err(param) }
}

/// `-i`: our own notice (memcached's prints its BSD license and
/// libevent's, neither of which this program contains).
pub(super) fn license() -> Vec<u8> {
    format!(
        "memcached {VERSION}\n\n\
         This program is an independent reimplementation of the memcached server\n\
         in Rust. It reproduces the command line, protocols and messages of\n\
         memcached {VERSION} so that it can stand in for it, but it contains no code\n\
         from memcached or from libevent: it is a single-threaded epoll server\n\
         written from scratch. It is provided as is, without warranty of any kind.\n"
    )
    .into_bytes()
}
