//! Run-time settings: the values of memcached's command-line options.
//!
//! One plain struct, filled by `options` from the command line and then
//! handed (by reference) to every room. The defaults are memcached 1.6's,
//! so `Settings::default()` is what a bare `memcached` would run with.

/// Which protocol a listener speaks (`-B`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Ascii,
    Binary,
    Negotiating,
}

impl Protocol {
    /// The name memcached prints in traces and `stats settings`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ascii => "ascii",
            Protocol::Binary => "binary",
            Protocol::Negotiating => "auto-negotiate",
        }
    }
}

/// `-o hash_algorithm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    Jenkins,
    Murmur3,
    Xxh3,
}

impl HashAlgorithm {
    /// The name `stats settings` prints. (The cache's own table uses its
    /// keyed hash whatever is chosen; the option is kept for compatibility.)
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Jenkins => "jenkins",
            HashAlgorithm::Murmur3 => "murmur3",
            HashAlgorithm::Xxh3 => "xxh3",
        }
    }
}

/// memcached's tuning knobs for machinery this server does differently
/// (segmented LRU, logging threads, ...): parsed and validated exactly as
/// memcached does, and reported by `stats settings`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    pub hash_algorithm: HashAlgorithm,
    /// `-o lru_maintainer` / `no_lru_maintainer` (default on).
    pub lru_maintainer: bool,
    /// Segmented (hot/warm/cold) LRU; off with `no_lru_maintainer`.
    pub lru_segmented: bool,
    pub hot_lru_pct: i32,
    pub warm_lru_pct: i32,
    pub hot_max_factor: f64,
    pub warm_max_factor: f64,
    /// Set by `-o temporary_ttl`.
    pub temp_lru: bool,
    pub temporary_ttl: i32,
    pub slab_automove_ratio: f64,
    pub slab_automove_window: i32,
    /// In bytes (the option is in kilobytes).
    pub watcher_logbuf_size: u32,
    /// In bytes (the option is in kilobytes).
    pub worker_logbuf_size: u32,
    /// `-o slab_sizes=a-b-c`: explicit slab class sizes, validated.
    pub slab_sizes: Option<Vec<u32>>,
    pub drop_privileges: bool,
    /// `-W` clears it.
    pub watch_enabled: bool,
    /// `-N`: accepted and validated; meaningless with one worker thread.
    pub napi_ids: i32,
    /// `-o sock_cookie_id` (SO_MARK on listeners).
    pub sock_cookie_id: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            hash_algorithm: HashAlgorithm::Murmur3,
            lru_maintainer: true,
            lru_segmented: true,
            hot_lru_pct: 20,
            warm_lru_pct: 40,
            hot_max_factor: 0.2,
            warm_max_factor: 2.0,
            temp_lru: false,
            temporary_ttl: 61,
            slab_automove_ratio: 0.8,
            slab_automove_window: 30,
            watcher_logbuf_size: 256 * 1024,
            worker_logbuf_size: 64 * 1024,
            slab_sizes: None,
            drop_privileges: false,
            watch_enabled: true,
            napi_ids: 0,
            sock_cookie_id: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// `-p`: TCP port; 0 disables TCP, -1 asks for an ephemeral one. Kept
    /// as memcached's `int` so `stats settings` prints what was given.
    pub port: i32,
    /// `-U`: UDP port; 0 (the default) disables UDP, -1 is ephemeral.
    pub udp_port: i32,
    /// `-s`: unix socket path (disables network listeners).
    pub socket_path: Option<String>,
    /// `-a`: permission mask of the unix socket.
    pub access_mask: u32,
    /// `-A`: whether the ascii `shutdown` command is honoured.
    pub shutdown_command: bool,
    /// `-l`: interfaces to listen on, each `host` or `host:port`; empty means all.
    pub listen: Vec<String>,
    /// `-d`
    pub daemonize: bool,
    /// `-r`
    pub max_core: bool,
    /// `-u`
    pub user: Option<String>,
    /// `-m`: item memory in bytes.
    pub max_bytes: usize,
    /// `-M`: false means "return an error instead of evicting".
    pub evict_to_free: bool,
    /// `-c`
    pub max_conns: usize,
    /// `-k`
    pub lock_memory: bool,
    /// `-v` count: 1 errors, 2 commands and replies, 3 state transitions.
    pub verbose: u8,
    /// `-P`
    pub pid_file: Option<String>,
    /// `-f`
    pub factor: f64,
    /// `-n`: minimum space for key + value + flags in the smallest class.
    pub chunk_size: usize,
    /// `-t`: accepted and reported; this server has one worker thread.
    pub num_threads: usize,
    /// `-D`
    pub prefix_delimiter: u8,
    /// Per-prefix stats on (`-D` given or `stats detail on`).
    pub detail_enabled: bool,
    /// `-R`
    pub reqs_per_event: usize,
    /// `-C` clears it.
    pub use_cas: bool,
    /// `-b`
    pub backlog: i32,
    /// `-B`
    pub protocol: Protocol,
    /// `-I`: the largest item (value plus overhead) that may be stored.
    pub item_size_max: usize,
    /// Size of one slab page.
    pub slab_page_size: usize,
    /// `-o slab_chunk_max`: the largest slab chunk; bigger items are chained.
    pub slab_chunk_size_max: usize,
    /// `-S`
    pub sasl: bool,
    /// `-F` clears it.
    pub flush_enabled: bool,
    /// `-X` clears it.
    pub dump_enabled: bool,
    /// `-Y`
    pub auth_file: Option<String>,
    /// The pairs read from `auth_file` at start (`main.rs` loads them).
    pub auth: Option<crate::authfile::Credentials>,
    /// `-e`
    pub memory_file: Option<String>,
    /// The `-f` or `-o slab_sizes` text as given (default "1.25"): a warm
    /// restart (`-e`) requires the same text, as memcached does.
    pub slab_config: String,
    /// `-L`
    pub large_pages: bool,
    /// `-o maxconns_fast` (default on): refuse new connections at the limit
    /// with an error instead of pausing accept.
    pub maxconns_fast: bool,
    /// `-o hashpower`: initial hash table size as a power of two (0 = default 16).
    pub hashpower_init: u32,
    /// `-o hashexpand` (default on).
    pub hash_expand: bool,
    /// `-o idle_timeout` in seconds; 0 disables.
    pub idle_timeout: u32,
    /// `-o read_buf_mem_limit` in bytes; 0 means unlimited.
    pub read_buf_mem_limit: usize,
    /// `-o lru_crawler` (default on).
    pub lru_crawler: bool,
    /// `-o lru_crawler_sleep` in microseconds.
    pub lru_crawler_sleep: u32,
    /// `-o lru_crawler_tocrawl`
    pub lru_crawler_tocrawl: u32,
    /// `-o track_sizes`
    pub track_sizes: bool,
    /// `-o slab_reassign` (default on).
    pub slab_reassign: bool,
    /// `-o slab_automove` (default 1).
    pub slab_automove: u8,
    /// `-o tail_repair_time`
    pub tail_repair_time: u32,
    /// The remaining `-o` knobs.
    pub tuning: Tuning,
    /// The append-only file (this server's addition).
    pub aof: AofSettings,
    /// `-o ext_*`: the flash tier (extstore).
    pub ext: ExtSettings,
    /// Replication (`-x`, `--repl-peer`, `--repl-port`, `-X <port>`); off by
    /// default.
    pub repl: ReplSettings,
    /// `-Z` and the `ssl_*` options.
    pub tls: TlsSettings,
    /// The Prometheus endpoint (`--metrics-port`, `-o metrics_port=`,
    /// `-o metrics_addr=`); off by default.
    pub metrics: MetricsSettings,
    /// Started with sockets to serve (LISTEN_FDS): `-l`, `-p`, `-U` and
    /// `-s` bind nothing.
    pub socket_activated: bool,
}

/// `-Z` and `-o ssl_*`, held as memcached holds them (OpenSSL's numbers
/// for the verify mode, key format and protocol version), so `stats
/// settings` prints the same values. Plain data: `src/tls` builds the
/// server's TLS context from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// `-Z`: TCP listeners speak TLS (except those under `notls:`).
    pub enabled: bool,
    pub chain_cert: Option<String>,
    pub key: Option<String>,
    /// OpenSSL's `SSL_VERIFY_*` bits: 0, 1 (peer), 3 (+fail if no
    /// certificate), 7 (+client once).
    pub verify_mode: i32,
    /// OpenSSL's `SSL_FILETYPE_*`: 1 PEM, 2 ASN1 (DER); memcached passes any
    /// number through.
    pub keyformat: i32,
    pub ciphers: Option<String>,
    pub ca_cert: Option<String>,
    /// In bytes (the option is in kilobytes).
    pub wbuf_size: u32,
    pub session_cache: bool,
    pub kernel_tls: bool,
    /// OpenSSL's protocol version number (`TLS1_2_VERSION` is 0x303).
    pub min_version: i32,
}

/// OpenSSL's `TLS1_VERSION`; `TLS1_1_VERSION` .. `TLS1_3_VERSION` follow.
pub const TLS1_VERSION: i32 = 0x301;

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            enabled: false,
            chain_cert: None,
            key: None,
            verify_mode: 0,
            keyformat: 1,
            ciphers: None,
            ca_cert: None,
            wbuf_size: 16 * 1024,
            session_cache: false,
            kernel_tls: false,
            min_version: TLS1_VERSION + 2,
        }
    }
}

impl TlsSettings {
    /// memcached's `ssl_proto_text`.
    pub fn min_version_name(&self) -> &'static str {
        match self.min_version - TLS1_VERSION {
            0 => "tlsv1.0",
            1 => "tlsv1.1",
            2 => "tlsv1.2",
            3 => "tlsv1.3",
            _ => "unknown",
        }
    }
}

/// Where `GET /metrics` is served (not a memcached option).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// 0: no metrics endpoint (unless a socket named `metrics` is
    /// inherited).
    pub port: u16,
    /// The address to bind; none means the first `-l` address, or every
    /// address when there is no `-l`.
    pub addr: Option<String>,
}

/// Port a replication peer is reached on and the replication listener
/// binds when none is given (repcached's `-X` default).
pub const REPL_DEFAULT_PORT: u16 = 11212;

/// repcached-style pair replication: on when a peer or a port is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplSettings {
    /// `-x host[:port]`: the other node of the pair.
    pub peer: Option<String>,
    /// `--repl-port` or repcached's `-X <port>`: where this node listens
    /// for its peer.
    pub port: u16,
    /// The port was given: replication is on even without `-x` (the node
    /// listens and is master, as repcached's master started with `-X`).
    pub listen: bool,
    /// `-o repl_tls`: the link speaks TLS both ways, with the `ssl_*`
    /// certificate and key, each side checking the other's certificate
    /// against `ssl_ca_cert`.
    pub tls: bool,
    /// `-o repl_tls_name`: the name (DNS or IP) the peer's certificate
    /// must carry; by default the host of `-x`.
    pub tls_name: Option<String>,
}

impl Default for ReplSettings {
    fn default() -> Self {
        ReplSettings {
            peer: None,
            port: REPL_DEFAULT_PORT,
            listen: false,
            tls: false,
            tls_name: None,
        }
    }
}

impl ReplSettings {
    pub fn enabled(&self) -> bool {
        self.peer.is_some() || self.listen
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port: 11211,
            udp_port: 0,
            socket_path: None,
            access_mask: 0o700,
            shutdown_command: false,
            listen: Vec::new(),
            daemonize: false,
            max_core: false,
            user: None,
            max_bytes: 64 * 1024 * 1024,
            evict_to_free: true,
            max_conns: 1024,
            lock_memory: false,
            verbose: 0,
            pid_file: None,
            factor: 1.25,
            chunk_size: 48,
            num_threads: 4,
            prefix_delimiter: b':',
            detail_enabled: false,
            reqs_per_event: 20,
            use_cas: true,
            backlog: 1024,
            protocol: Protocol::Negotiating,
            item_size_max: 1024 * 1024,
            slab_page_size: 1024 * 1024,
            slab_chunk_size_max: 512 * 1024,
            sasl: false,
            flush_enabled: true,
            dump_enabled: true,
            auth_file: None,
            auth: None,
            memory_file: None,
            slab_config: "1.25".to_string(),
            large_pages: false,
            maxconns_fast: true,
            hashpower_init: 0,
            hash_expand: true,
            idle_timeout: 0,
            read_buf_mem_limit: 0,
            lru_crawler: true,
            lru_crawler_sleep: 100,
            lru_crawler_tocrawl: 0,
            track_sizes: false,
            slab_reassign: true,
            slab_automove: 1,
            tail_repair_time: 0,
            tuning: Tuning::default(),
            repl: ReplSettings::default(),
            aof: AofSettings::default(),
            metrics: MetricsSettings::default(),
            socket_activated: false,
            ext: ExtSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

impl Settings {
    /// memcached gives each UDP port one connection per worker thread,
    /// but only one when several interfaces are listed.
    pub fn udp_conns_per_port(&self) -> usize {
        if self.listen.len() > 1 {
            1
        } else {
            self.num_threads
        }
    }
}

/// The memcached release whose wire behaviour this server reproduces; it is
/// what `version` and `stats` report, so clients that feature-detect by
/// version treat us like it.
pub const VERSION: &str = "1.6.18";

/// `-o aof_sync`: when appended records reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AofSync {
    /// A mutation's reply waits until its record is on disk (group commit:
    /// one write and one fdatasync per loop turn).
    Always,
    /// fdatasync at most once a second.
    EverySec,
    /// Left to the kernel.
    No,
}

impl AofSync {
    pub fn name(self) -> &'static str {
        match self {
            AofSync::Always => "always",
            AofSync::EverySec => "everysec",
            AofSync::No => "no",
        }
    }
}

/// The append-only file (not a memcached option: `-o aof=PATH` or
/// `--aof-file=PATH` turns it on).
#[derive(Clone, Debug, PartialEq)]
pub struct AofSettings {
    pub path: Option<String>,
    pub sync: AofSync,
    /// Rewrite when the file grew this many percent since the last rewrite
    /// (0: never rewrite automatically).
    pub rewrite_pct: u32,
    /// ... and is at least this many bytes.
    pub rewrite_min: u64,
    /// `-o aof_fix`: truncate a corrupt file at its last good record instead
    /// of refusing to start.
    pub fix: bool,
}

impl Default for AofSettings {
    fn default() -> Self {
        AofSettings {
            path: None,
            sync: AofSync::EverySec,
            rewrite_pct: 100,
            rewrite_min: 64 << 20,
            fix: false,
        }
    }
}

/// One `-o ext_path=FILE:SIZE`: a file and the whole pages it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtPath {
    pub file: std::path::PathBuf,
    pub page_count: u32,
}

/// memcached's `ext_*` settings (its `storage_init_config` defaults), and
/// `slab_automove_freeratio`, which memcached parses with them.
#[derive(Clone, Debug, PartialEq)]
pub struct ExtSettings {
    /// In the order memcached keeps them: the last given first.
    pub paths: Vec<ExtPath>,
    /// In bytes (the option is in megabytes).
    pub page_size: u32,
    /// In bytes (the option is in megabytes).
    pub wbuf_size: u32,
    pub threads: u32,
    pub io_depth: u32,
    pub item_size: u32,
    pub item_age: u32,
    pub low_ttl: u32,
    pub recache_rate: u32,
    /// 0 until start-up sets memcached's default (a quarter of the pages).
    pub compact_under: u32,
    pub drop_under: u32,
    pub max_sleep: u32,
    pub max_frag: f64,
    pub drop_unread: bool,
    pub slab_automove_freeratio: f64,
}

impl ExtSettings {
    pub fn enabled(&self) -> bool {
        !self.paths.is_empty()
    }
}

impl Default for ExtSettings {
    fn default() -> Self {
        ExtSettings {
            paths: Vec::new(),
            page_size: 64 << 20,
            wbuf_size: 4 << 20,
            threads: 1,
            io_depth: 1,
            item_size: 512,
            item_age: u32::MAX,
            low_ttl: 0,
            recache_rate: 2000,
            compact_under: 0,
            drop_under: 0,
            max_sleep: 1_000_000,
            max_frag: 0.8,
            drop_unread: false,
            slab_automove_freeratio: 0.01,
        }
    }
}
