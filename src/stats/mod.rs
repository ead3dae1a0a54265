//! Server counters and the `stats` reports built from them.
//!
//! Counters that belong to items (evictions, per-class hits) live in
//! `items::ItemStats`; the ones that belong to connections and commands
//! live here. The reports print memcached 1.6's field names in its order,
//! leaving out what only exists with its worker threads or extstore.

pub(crate) mod prefix;
pub(crate) mod repl;

use crate::items::{Cache, ClassStats};
use crate::numbers::c_fixed;
use crate::settings::{Settings, VERSION};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// `ssl_new_sessions`: counted by OpenSSL's new-session callback, which
/// runs inside a read on some connection and is given no context of ours.
static TLS_NEW_SESSIONS: AtomicU64 = AtomicU64::new(0);

/// A new TLS session was made (with `-o ssl_session_cache`).
#[cfg(feature = "tls")]
pub(crate) fn count_new_tls_session() {
    TLS_NEW_SESSIONS.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Open connections including listening sockets, as memcached counts.
    pub(crate) curr_conns: u64,
    pub(crate) total_conns: u64,
    pub(crate) rejected_conns: u64,
    pub(crate) conn_structures: u64,
    pub(crate) get_cmds: u64,
    pub(crate) get_misses: u64,
    pub(crate) touch_cmds: u64,
    pub(crate) touch_misses: u64,
    pub(crate) delete_misses: u64,
    pub(crate) incr_misses: u64,
    pub(crate) decr_misses: u64,
    pub(crate) cas_misses: u64,
    pub(crate) flush_cmds: u64,
    pub(crate) meta_cmds: u64,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_written: u64,
    pub(crate) conn_yields: u64,
    pub(crate) store_too_large: u64,
    pub(crate) store_no_memory: u64,
    pub(crate) auth_cmds: u64,
    pub(crate) auth_errors: u64,
    /// Connections closed by `-o idle_timeout`.
    pub(crate) idle_kicks: u64,
    /// Connections closed because `-o read_buf_mem_limit` was reached.
    pub(crate) read_buf_oom: u64,
    /// TLS sessions that failed before their handshake finished.
    pub(crate) tls_handshake_errors: u64,
    /// When the certificates were last loaded (relative time; memcached
    /// loads them at start before its clock runs: 0).
    pub(crate) tls_cert_refreshed: u32,
    /// Requests refused a response object under `-o read_buf_mem_limit`
    /// (memcached's `response_obj_oom`).
    pub(crate) response_obj_oom: u64,
    pub(crate) listen_disabled_num: u64,
    /// Time accepting was paused, counted when it resumes (memcached's).
    pub(crate) time_in_listen_disabled_us: u64,
    pub(crate) accepting_conns: bool,
    pub(crate) prefixes: prefix::PrefixStats,
    /// Present while the append-only file is on.
    pub(crate) aof: Option<AofStats>,
    /// Present when replication is configured.
    pub(crate) repl: Option<repl::ReplStats>,
}

/// The append-only file's figures, printed after memcached's own.
#[derive(Debug, Default, Clone)]
pub(crate) struct AofStats {
    /// Current size of the file.
    pub(crate) bytes: u64,
    pub(crate) rewrites: u64,
    /// How long the last fdatasync took, in milliseconds.
    pub(crate) last_fsync_ms: u64,
    /// Live items after the replay at start.
    pub(crate) recovered_items: u64,
    pub(crate) rewrite_in_progress: bool,
    /// Rewrites that failed (the child failed or was killed, or the new
    /// file could not be completed); the old file was kept.
    pub(crate) rewrite_failures: u64,
    /// Writes, syncs and retries of the file that failed.
    pub(crate) write_errors: u64,
    /// The errno of the last failure (0: none, or a short write).
    pub(crate) last_write_errno: i32,
    /// The last write or sync failed, and none has succeeded since.
    pub(crate) last_write_failed: bool,
    /// Mutations are refused until the file takes writes again.
    pub(crate) refusing_writes: bool,
}

impl Stats {
    /// `stats reset`: zero what memcached zeroes (not gauges like
    /// curr_connections).
    pub(crate) fn reset(&mut self) {
        let keep = (self.curr_conns, self.conn_structures, self.accepting_conns);
        let cert_refresh = self.tls_cert_refreshed;
        let (aof, repl) = (self.aof.take(), self.repl.take());
        *self = Stats {
            aof,
            repl,
            ..Stats::default()
        };
        TLS_NEW_SESSIONS.store(0, Ordering::Relaxed);
        // memcached clears per-prefix counts on reset too.
        (self.curr_conns, self.conn_structures, self.accepting_conns) = keep;
        self.tls_cert_refreshed = cert_refresh;
    }
}

fn stat(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "STAT {name} {value}\r\n");
}

fn rusage() -> (String, String) {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(ru) => {
            let fmt = |tv: nix::sys::time::TimeVal| format!("{}.{:06}", tv.tv_sec(), tv.tv_usec());
            (fmt(ru.user_time()), fmt(ru.system_time()))
        }
        Err(_) => ("0.000000".into(), "0.000000".into()),
    }
}

/// The general `stats` report: memcached 1.6.18's fields in its order.
/// `libevent` is left out (there is none); fields for machinery this
/// server does not have (worker-thread response objects, logger threads,
/// NAPI) are reported as 0.
pub(crate) fn general(stats: &Stats, cache: &Cache, settings: &Settings) -> String {
    let mut o = String::with_capacity(4096);
    let now = cache.now();
    let is = &cache.stats;
    let sum = |f: fn(&crate::items::ClassStats) -> u64| is.classes.iter().map(f).sum::<u64>();
    let (user, system) = rusage();
    stat(&mut o, "pid", std::process::id());
    stat(&mut o, "uptime", now.saturating_sub(60));
    stat(&mut o, "time", cache.clock.to_unix(now));
    stat(&mut o, "version", VERSION);
    // memcached prints the version of the libevent it runs on; there is
    // none here (one epoll reactor). The line stays, so the field count
    // and order are memcached's, with a value that does not pretend:
    // monitoring tools (memcached-tool, memcached_exporter, libmemcached's
    // memcstat) read no number from it.
    stat(&mut o, "libevent", "none");
    stat(&mut o, "pointer_size", 8 * std::mem::size_of::<usize>());
    stat(&mut o, "rusage_user", user);
    stat(&mut o, "rusage_system", system);
    stat(&mut o, "max_connections", settings.max_conns);
    // memcached counts its listening sockets as connections and then
    // subtracts one when reporting; so does this.
    stat(
        &mut o,
        "curr_connections",
        stats.curr_conns.saturating_sub(1),
    );
    stat(&mut o, "total_connections", stats.total_conns);
    if settings.maxconns_fast {
        stat(&mut o, "rejected_connections", stats.rejected_conns);
    }
    stat(&mut o, "connection_structures", stats.conn_structures);
    stat(&mut o, "response_obj_oom", stats.response_obj_oom);
    for name in ["response_obj_count", "response_obj_bytes"] {
        stat(&mut o, name, 0);
    }
    for name in ["read_buf_count", "read_buf_bytes", "read_buf_bytes_free"] {
        stat(&mut o, name, 0);
    }
    stat(&mut o, "read_buf_oom", stats.read_buf_oom);
    stat(&mut o, "reserved_fds", 5 * settings.num_threads);
    stat(&mut o, "cmd_get", stats.get_cmds);
    stat(&mut o, "cmd_set", sum(|c| c.set_cmds));
    stat(&mut o, "cmd_flush", stats.flush_cmds);
    stat(&mut o, "cmd_touch", stats.touch_cmds);
    stat(&mut o, "cmd_meta", stats.meta_cmds);
    stat(&mut o, "get_hits", sum(|c| c.get_hits));
    stat(&mut o, "get_misses", stats.get_misses);
    stat(&mut o, "get_expired", is.get_expired);
    stat(&mut o, "get_flushed", is.get_flushed);
    if let Some(tier) = &cache.ext {
        let c = &tier.store.counters;
        stat(&mut o, "get_extstore", c.get_extstore);
        stat(&mut o, "get_aborted_extstore", c.get_aborted);
        stat(&mut o, "get_oom_extstore", c.get_oom);
        stat(&mut o, "recache_from_extstore", c.recache);
        stat(&mut o, "miss_from_extstore", c.miss);
        stat(&mut o, "badcrc_from_extstore", c.badcrc);
    }
    stat(&mut o, "delete_misses", stats.delete_misses);
    stat(&mut o, "delete_hits", sum(|c| c.delete_hits));
    stat(&mut o, "incr_misses", stats.incr_misses);
    stat(&mut o, "incr_hits", sum(|c| c.incr_hits));
    stat(&mut o, "decr_misses", stats.decr_misses);
    stat(&mut o, "decr_hits", sum(|c| c.decr_hits));
    stat(&mut o, "cas_misses", stats.cas_misses);
    stat(&mut o, "cas_hits", sum(|c| c.cas_hits));
    stat(&mut o, "cas_badval", sum(|c| c.cas_badval));
    stat(&mut o, "touch_hits", sum(|c| c.touch_hits));
    stat(&mut o, "touch_misses", stats.touch_misses);
    stat(&mut o, "store_too_large", stats.store_too_large);
    stat(&mut o, "store_no_memory", stats.store_no_memory);
    stat(&mut o, "auth_cmds", stats.auth_cmds);
    stat(&mut o, "auth_errors", stats.auth_errors);
    if settings.idle_timeout > 0 {
        stat(&mut o, "idle_kicks", stats.idle_kicks);
    }
    stat(&mut o, "bytes_read", stats.bytes_read);
    stat(&mut o, "bytes_written", stats.bytes_written);
    stat(&mut o, "limit_maxbytes", settings.max_bytes);
    stat(&mut o, "accepting_conns", stats.accepting_conns as u8);
    stat(&mut o, "listen_disabled_num", stats.listen_disabled_num);
    stat(
        &mut o,
        "time_in_listen_disabled_us",
        stats.time_in_listen_disabled_us,
    );
    // One thread serves every connection, whatever -t said.
    stat(&mut o, "threads", 1);
    stat(&mut o, "conn_yields", stats.conn_yields);
    stat(&mut o, "hash_power_level", cache.hash.power());
    stat(&mut o, "hash_bytes", cache.hash.bytes());
    stat(&mut o, "hash_is_expanding", cache.hash.is_expanding() as u8);
    stat(&mut o, "slab_reassign_rescues", is.slab_reassign_rescues);
    stat(
        &mut o,
        "slab_reassign_chunk_rescues",
        is.slab_reassign_chunk_rescues,
    );
    stat(
        &mut o,
        "slab_reassign_evictions_nomem",
        is.slab_reassign_evictions_nomem,
    );
    stat(
        &mut o,
        "slab_reassign_inline_reclaim",
        cache.slabs.inline_reclaim,
    );
    stat(
        &mut o,
        "slab_reassign_busy_items",
        is.slab_reassign_busy_items,
    );
    stat(&mut o, "slab_reassign_busy_deletes", 0);
    stat(
        &mut o,
        "slab_reassign_running",
        cache.rebalance.is_some() as u8,
    );
    stat(&mut o, "slabs_moved", is.slabs_moved);
    // memcached prints the crawler's and the maintainer's lines only while
    // they are on (`-o no_lru_crawler`, `no_lru_maintainer`).
    if settings.lru_crawler {
        stat(&mut o, "lru_crawler_running", 0);
        stat(&mut o, "lru_crawler_starts", is.lru_crawler_starts);
    }
    let maintainer = settings.tuning.lru_maintainer;
    if maintainer {
        stat(&mut o, "lru_maintainer_juggles", is.lru_maintainer_juggles);
    }
    stat(&mut o, "malloc_fails", 0);
    let ls = cache.logger.stats;
    stat(&mut o, "log_worker_dropped", ls.worker_dropped);
    stat(&mut o, "log_worker_written", ls.worker_written);
    stat(&mut o, "log_watcher_skipped", ls.watcher_skipped);
    stat(&mut o, "log_watcher_sent", ls.watcher_sent);
    stat(&mut o, "log_watchers", cache.logger.watcher_count());
    if let Some(tier) = &cache.ext {
        extstore_lines(&mut o, &tier.store);
    }
    if cfg!(feature = "tls") && settings.tls.enabled {
        if settings.tls.session_cache {
            let sessions = TLS_NEW_SESSIONS.load(Ordering::Relaxed);
            stat(&mut o, "ssl_new_sessions", sessions);
        }
        stat(&mut o, "ssl_handshake_errors", stats.tls_handshake_errors);
        let since = now.wrapping_sub(stats.tls_cert_refreshed);
        stat(&mut o, "time_since_server_cert_refresh", since);
    }
    for name in ["unexpected_napi_ids", "round_robin_fallback"] {
        stat(&mut o, name, 0);
    }
    stat(&mut o, "bytes", is.bytes);
    stat(&mut o, "curr_items", is.curr_items);
    stat(&mut o, "total_items", is.total_items);
    stat(&mut o, "slab_global_page_pool", cache.slabs.free_pages());
    stat(&mut o, "expired_unfetched", is.expired_unfetched);
    stat(&mut o, "evicted_unfetched", is.evicted_unfetched);
    let sum = |f: fn(&ClassStats) -> u64| is.classes.iter().map(f).sum::<u64>();
    if maintainer {
        stat(&mut o, "evicted_active", sum(|c| c.evicted_active));
    }
    stat(&mut o, "evictions", is.evictions);
    stat(&mut o, "reclaimed", is.reclaimed);
    stat(&mut o, "crawler_reclaimed", is.crawler_reclaimed);
    stat(&mut o, "crawler_items_checked", is.crawler_items_checked);
    stat(&mut o, "lrutail_reflocked", 0);
    if maintainer {
        stat(&mut o, "moves_to_cold", sum(|c| c.moves_to_cold));
        stat(&mut o, "moves_to_warm", sum(|c| c.moves_to_warm));
        stat(&mut o, "moves_within_lru", sum(|c| c.moves_within_lru));
        stat(&mut o, "direct_reclaims", sum(|c| c.direct_reclaims));
        stat(&mut o, "lru_bumps_dropped", cache.lru_bumps_dropped());
    }
    if let Some(a) = &stats.aof {
        stat(&mut o, "aof_enabled", 1);
        stat(&mut o, "aof_bytes", a.bytes);
        stat(&mut o, "aof_rewrites", a.rewrites);
        stat(
            &mut o,
            "aof_rewrite_in_progress",
            u8::from(a.rewrite_in_progress),
        );
        stat(&mut o, "aof_last_fsync_ms", a.last_fsync_ms);
        stat(&mut o, "aof_recovered_items", a.recovered_items);
        stat(&mut o, "aof_rewrite_failures", a.rewrite_failures);
        let status = if a.last_write_failed { "err" } else { "ok" };
        stat(&mut o, "aof_last_write_status", status);
        stat(&mut o, "aof_write_errors", a.write_errors);
        stat(&mut o, "aof_last_write_errno", a.last_write_errno);
        stat(&mut o, "aof_refusing_writes", u8::from(a.refusing_writes));
    }
    if let Some(r) = &stats.repl {
        repl::lines(&mut o, r);
    }
    o.push_str("END\r\n");
    o
}

/// `stats slabs`: per-class chunk geometry and counters.
pub(crate) fn slabs(cache: &Cache) -> String {
    let mut o = String::new();
    let mut active = 0;
    for id in 1..=cache.slabs.largest() {
        let c = cache.slabs.class(id);
        if c.pages == 0 {
            continue;
        }
        active += 1;
        let cs = &cache.stats.classes[id as usize];
        let p = |o: &mut String, name: &str, v: u64| {
            let _ = write!(o, "STAT {id}:{name} {v}\r\n");
        };
        p(&mut o, "chunk_size", c.size as u64);
        p(&mut o, "chunks_per_page", c.perslab as u64);
        p(&mut o, "total_pages", c.pages as u64);
        p(&mut o, "total_chunks", c.total_chunks() as u64);
        p(&mut o, "used_chunks", c.used_chunks as u64);
        p(&mut o, "free_chunks", c.free_chunks() as u64);
        p(&mut o, "free_chunks_end", 0);
        p(&mut o, "get_hits", cs.get_hits);
        p(&mut o, "cmd_set", cs.set_cmds);
        p(&mut o, "delete_hits", cs.delete_hits);
        p(&mut o, "incr_hits", cs.incr_hits);
        p(&mut o, "decr_hits", cs.decr_hits);
        p(&mut o, "cas_hits", cs.cas_hits);
        p(&mut o, "cas_badval", cs.cas_badval);
        p(&mut o, "touch_hits", cs.touch_hits);
    }
    stat(&mut o, "active_slabs", active);
    stat(&mut o, "total_malloced", cache.slabs.malloced());
    o.push_str("END\r\n");
    o
}

/// `stats items`: per-class LRU contents and eviction counters, the
/// segments' lines (and `number_temp` with a temporary LRU) only while the
/// LRU maintainer is on, as memcached prints them.
pub(crate) fn items(cache: &Cache, settings: &Settings) -> String {
    use crate::items::lru::{COLD, HOT, TEMP, WARM};
    let maintainer = settings.tuning.lru_maintainer;
    let mut o = String::new();
    for id in 1..=cache.slabs.largest() {
        let n = cache.lru_len(id);
        if n == 0 {
            continue;
        }
        let cs = &cache.stats.classes[id as usize];
        let p = |o: &mut String, name: &str, v: u64| {
            let _ = write!(o, "STAT items:{id}:{name} {v}\r\n");
        };
        let len = |seg: u8| cache.segment_len(id, seg) as u64;
        let age = |seg: u8| u64::from(cache.segment_tail_age(id, seg));
        p(&mut o, "number", n as u64);
        if maintainer {
            p(&mut o, "number_hot", len(HOT));
            p(&mut o, "number_warm", len(WARM));
            p(&mut o, "number_cold", len(COLD));
            if settings.tuning.temp_lru {
                p(&mut o, "number_temp", len(TEMP));
            }
            p(&mut o, "age_hot", age(HOT));
            p(&mut o, "age_warm", age(WARM));
        }
        p(&mut o, "age", age(COLD));
        p(&mut o, "mem_requested", cs.mem_requested);
        p(&mut o, "evicted", cs.evicted);
        p(&mut o, "evicted_nonzero", cs.evicted_nonzero);
        p(&mut o, "evicted_time", cs.evicted_time as u64);
        p(&mut o, "outofmemory", cs.outofmemory);
        p(&mut o, "tailrepairs", 0);
        p(&mut o, "reclaimed", cs.reclaimed);
        p(&mut o, "expired_unfetched", cs.expired_unfetched);
        p(&mut o, "evicted_unfetched", cs.evicted_unfetched);
        if maintainer {
            p(&mut o, "evicted_active", cs.evicted_active);
        }
        p(&mut o, "crawler_reclaimed", cs.crawler_reclaimed);
        p(&mut o, "crawler_items_checked", cs.crawler_items_checked);
        p(&mut o, "lrutail_reflocked", 0);
        if maintainer {
            p(&mut o, "moves_to_cold", cs.moves_to_cold);
            p(&mut o, "moves_to_warm", cs.moves_to_warm);
            p(&mut o, "moves_within_lru", cs.moves_within_lru);
            p(&mut o, "direct_reclaims", cs.direct_reclaims);
            p(&mut o, "hits_to_hot", cs.lru_hits[0]);
            p(&mut o, "hits_to_warm", cs.lru_hits[1]);
            p(&mut o, "hits_to_cold", cs.lru_hits[2]);
            p(&mut o, "hits_to_temp", cs.lru_hits[3]);
        }
    }
    o.push_str("END\r\n");
    o
}

/// `stats sizes` (and `sizes_enable`/`sizes_disable`).
pub(crate) fn sizes(cache: &Cache) -> String {
    let mut o = String::new();
    match &cache.sizes {
        Some(h) => {
            for (i, &n) in h.buckets.iter().enumerate() {
                if n != 0 {
                    stat(&mut o, &(i * 32).to_string(), n);
                }
            }
        }
        None => stat(&mut o, "sizes_status", "disabled"),
    }
    o.push_str("END\r\n");
    o
}

/// `stats settings`: memcached 1.6.18's fields in its order, including
/// the knobs of machinery done differently here (reported as set).
/// The `ssl_*` lines of `stats settings` (a build with TLS), in
/// memcached's words: an unset certificate or key is C's "(null)".
fn tls_settings(o: &mut String, t: &crate::settings::TlsSettings) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    stat(o, "ssl_enabled", yes(t.enabled));
    stat(
        o,
        "ssl_chain_cert",
        t.chain_cert.as_deref().unwrap_or("(null)"),
    );
    stat(o, "ssl_key", t.key.as_deref().unwrap_or("(null)"));
    stat(o, "ssl_verify_mode", t.verify_mode);
    stat(o, "ssl_keyformat", t.keyformat);
    stat(o, "ssl_ciphers", t.ciphers.as_deref().unwrap_or("NULL"));
    stat(o, "ssl_ca_cert", t.ca_cert.as_deref().unwrap_or("NULL"));
    stat(o, "ssl_wbuf_size", t.wbuf_size);
    stat(o, "ssl_session_cache", yes(t.session_cache));
    stat(o, "ssl_kernel_tls", yes(t.kernel_tls));
    stat(o, "ssl_min_version", t.min_version_name());
}

pub(crate) fn settings(s: &Settings) -> String {
    let mut o = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let t = &s.tuning;
    stat(&mut o, "maxbytes", s.max_bytes);
    stat(&mut o, "maxconns", s.max_conns);
    stat(&mut o, "tcpport", s.port);
    stat(&mut o, "udpport", s.udp_port);
    let inter = if s.listen.is_empty() {
        "NULL".to_string()
    } else {
        s.listen.join(",")
    };
    stat(&mut o, "inter", inter);
    stat(&mut o, "verbosity", s.verbose);
    stat(&mut o, "oldest", 0);
    stat(
        &mut o,
        "evictions",
        if s.evict_to_free { "on" } else { "off" },
    );
    stat(
        &mut o,
        "domain_socket",
        s.socket_path.as_deref().unwrap_or("NULL"),
    );
    stat(&mut o, "umask", format!("{:o}", s.access_mask));
    stat(&mut o, "shutdown_command", yes(s.shutdown_command));
    stat(&mut o, "growth_factor", c_fixed(s.factor, 2));
    stat(&mut o, "chunk_size", s.chunk_size);
    stat(&mut o, "num_threads", s.num_threads);
    stat(&mut o, "num_threads_per_udp", s.udp_conns_per_port());
    stat(&mut o, "stat_key_prefix", s.prefix_delimiter as char);
    stat(&mut o, "detail_enabled", yes(s.detail_enabled));
    stat(&mut o, "reqs_per_event", s.reqs_per_event);
    stat(&mut o, "cas_enabled", yes(s.use_cas));
    stat(&mut o, "tcp_backlog", s.backlog);
    stat(&mut o, "binding_protocol", s.protocol.name());
    stat(&mut o, "auth_enabled_sasl", yes(s.sasl));
    // memcached prints the authfile's path here, or "no".
    stat(
        &mut o,
        "auth_enabled_ascii",
        s.auth_file.as_deref().unwrap_or("no"),
    );
    stat(&mut o, "item_size_max", s.item_size_max);
    stat(&mut o, "maxconns_fast", yes(s.maxconns_fast));
    stat(&mut o, "hashpower_init", s.hashpower_init);
    stat(&mut o, "slab_reassign", yes(s.slab_reassign));
    stat(&mut o, "slab_automove", s.slab_automove);
    stat(
        &mut o,
        "slab_automove_ratio",
        c_fixed(t.slab_automove_ratio, 2),
    );
    stat(&mut o, "slab_automove_window", t.slab_automove_window);
    stat(&mut o, "slab_chunk_max", s.slab_chunk_size_max);
    stat(&mut o, "lru_crawler", yes(s.lru_crawler));
    stat(&mut o, "lru_crawler_sleep", s.lru_crawler_sleep);
    stat(&mut o, "lru_crawler_tocrawl", s.lru_crawler_tocrawl);
    stat(&mut o, "tail_repair_time", s.tail_repair_time);
    stat(&mut o, "flush_enabled", yes(s.flush_enabled));
    stat(&mut o, "dump_enabled", yes(s.dump_enabled));
    stat(&mut o, "hash_algorithm", t.hash_algorithm.name());
    stat(&mut o, "lru_maintainer_thread", yes(t.lru_maintainer));
    stat(&mut o, "lru_segmented", yes(t.lru_segmented));
    stat(&mut o, "hot_lru_pct", t.hot_lru_pct);
    stat(&mut o, "warm_lru_pct", t.warm_lru_pct);
    stat(&mut o, "hot_max_factor", c_fixed(t.hot_max_factor, 2));
    stat(&mut o, "warm_max_factor", c_fixed(t.warm_max_factor, 2));
    stat(&mut o, "temp_lru", yes(t.temp_lru));
    stat(&mut o, "temporary_ttl", t.temporary_ttl);
    stat(&mut o, "idle_timeout", s.idle_timeout);
    stat(&mut o, "watcher_logbuf_size", t.watcher_logbuf_size);
    stat(&mut o, "worker_logbuf_size", t.worker_logbuf_size);
    stat(&mut o, "read_buf_mem_limit", s.read_buf_mem_limit);
    stat(&mut o, "track_sizes", yes(s.track_sizes));
    stat(&mut o, "inline_ascii_response", "no");
    // Debian's memcached is built with extstore: these are printed whether
    // or not `ext_path` is given.
    let e = &s.ext;
    stat(&mut o, "ext_item_size", e.item_size);
    stat(&mut o, "ext_item_age", e.item_age);
    stat(&mut o, "ext_low_ttl", e.low_ttl);
    stat(&mut o, "ext_recache_rate", e.recache_rate);
    stat(&mut o, "ext_wbuf_size", e.wbuf_size);
    stat(&mut o, "ext_compact_under", e.compact_under);
    stat(&mut o, "ext_drop_under", e.drop_under);
    stat(&mut o, "ext_max_sleep", e.max_sleep);
    stat(&mut o, "ext_max_frag", c_fixed(e.max_frag, 2));
    stat(
        &mut o,
        "slab_automove_freeratio",
        c_fixed(e.slab_automove_freeratio, 3),
    );
    stat(&mut o, "ext_drop_unread", yes(e.drop_unread));
    if cfg!(feature = "tls") {
        tls_settings(&mut o, &s.tls);
    }
    // memcached prints `settings.num_napi_ids` with `%s`: "(null)" for the
    // default 0 (and it crashes for any `-N`). The count is printed here.
    // One thread serves every connection, so `-N` changes nothing else.
    match t.napi_ids {
        0 => stat(&mut o, "num_napi_ids", "(null)"),
        n => stat(&mut o, "num_napi_ids", n),
    }
    stat(
        &mut o,
        "memory_file",
        s.memory_file.as_deref().unwrap_or("(null)"),
    );
    if let Some(path) = &s.aof.path {
        stat(&mut o, "aof_file", path);
        stat(&mut o, "aof_sync", s.aof.sync.name());
        stat(&mut o, "aof_rewrite_pct", s.aof.rewrite_pct);
        stat(&mut o, "aof_rewrite_min", s.aof.rewrite_min);
        stat(&mut o, "aof_fix", yes(s.aof.fix));
    }
    if s.repl.enabled() {
        stat(
            &mut o,
            "repl_peer",
            s.repl.peer.as_deref().unwrap_or("(none)"),
        );
        stat(&mut o, "repl_port", s.repl.port);
        if s.repl.tls {
            stat(&mut o, "repl_tls", "yes");
        }
    }
    // Only when asked for, so a default `stats settings` stays memcached's.
    if s.metrics.port != 0 {
        stat(&mut o, "metrics_port", s.metrics.port);
        stat(
            &mut o,
            "metrics_addr",
            s.metrics.addr.as_deref().unwrap_or("(default)"),
        );
    }
    o.push_str("END\r\n");
    o
}

/// `stats cachedump <class> <limit>`: keys from the head of a class's LRU,
/// with value size and absolute expiry, at most 2 MB of report.
pub(crate) fn cachedump(cache: &Cache, id: u32, limit: u32) -> Vec<u8> {
    const MEMLIMIT: usize = 2 * 1024 * 1024;
    let mut out = Vec::new();
    if id > 0 && id <= cache.slabs.largest() as u32 {
        for (shown, it) in cache.lru_iter(id as u8).enumerate() {
            if limit != 0 && shown >= limit as usize {
                break;
            }
            let v = cache.view(it);
            let exp = match v.exptime() {
                0 => 0,
                e => cache.clock.to_unix(e),
            };
            let tail = format!(" [{} b; {} s]\r\n", v.nbytes(), exp);
            if out.len() + 5 + v.key().len() + tail.len() + 6 > MEMLIMIT {
                break;
            }
            out.extend_from_slice(b"ITEM ");
            out.extend_from_slice(v.key());
            out.extend_from_slice(tail.as_bytes());
        }
    }
    out.extend_from_slice(b"END\r\n");
    out
}

/// memcached's `storage_stats`: the `extstore_*` lines of `stats`.
fn extstore_lines(o: &mut String, store: &crate::extstore::ExtStore) {
    let c = &store.counters;
    let pages = store.page_count() as u64;
    let free = store.pages_free() as u64;
    let page_size = store.page_size() as u64;
    stat(o, "extstore_compact_lost", c.compact_lost);
    stat(o, "extstore_compact_rescues", c.compact_rescues);
    stat(o, "extstore_compact_skipped", c.compact_skipped);
    stat(o, "extstore_page_allocs", c.page_allocs);
    stat(o, "extstore_page_evictions", c.page_evictions);
    stat(o, "extstore_page_reclaims", c.page_reclaims);
    stat(o, "extstore_pages_free", free);
    stat(o, "extstore_pages_used", pages - free);
    stat(o, "extstore_objects_evicted", c.objects_evicted);
    stat(o, "extstore_objects_read", c.objects_read);
    stat(o, "extstore_objects_written", c.objects_written);
    stat(o, "extstore_objects_used", c.objects_used);
    stat(o, "extstore_bytes_evicted", c.bytes_evicted);
    stat(o, "extstore_bytes_written", c.bytes_written);
    stat(o, "extstore_bytes_read", c.bytes_read);
    stat(o, "extstore_bytes_used", c.bytes_used);
    // Open and half-filled pages count as fragmented, as in memcached.
    let fragmented = ((pages - free) * page_size).saturating_sub(c.bytes_used);
    stat(o, "extstore_bytes_fragmented", fragmented);
    stat(o, "extstore_limit_maxbytes", pages * page_size);
    stat(o, "extstore_io_queue", store.io_queue());
}

/// `stats extstore`: each page's version, bytes, bucket and free bucket
/// (nothing without extstore).
pub(crate) fn extstore(cache: &Cache) -> String {
    let mut o = String::new();
    if let Some(tier) = &cache.ext {
        for (i, row) in tier.store.page_rows().iter().enumerate() {
            let _ = write!(o, "STAT {i}:version {}\r\n", row.version);
            let _ = write!(o, "STAT {i}:bytes {}\r\n", row.bytes_used);
            let _ = write!(o, "STAT {i}:bucket {}\r\n", row.bucket);
            let _ = write!(o, "STAT {i}:free_bucket 0\r\n");
        }
    }
    o.push_str("END\r\n");
    o
}
