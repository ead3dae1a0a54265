//! The families: prometheus/memcached_exporter's (`pkg/exporter`), each
//! computed from the same `stats` field the exporter reads and skipped
//! when that field is absent, as there; then this server's own.

use super::exposition::{Desc, Exposition, Kind};
use std::collections::BTreeMap;

type Fields = BTreeMap<String, String>;

/// The reports, split the way the exporter's client splits them: `STAT
/// name value` lines only (exactly three fields), `a:b` names per slab
/// class, `items:N:name` per class LRU.
#[derive(Default)]
pub(crate) struct Reports {
    general: Fields,
    slabs: BTreeMap<u32, Fields>,
    items: BTreeMap<u32, Fields>,
    settings: Fields,
}

impl Reports {
    /// `stats` + `stats slabs` + `stats items` in `general`, `stats
    /// settings` in `settings`.
    pub(crate) fn parse(general: &str, settings: &str) -> Reports {
        let mut r = Reports::default();
        for line in general.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let [stat, name, value] = fields[..] else {
                continue;
            };
            if !stat.starts_with("STAT") {
                continue;
            }
            let value = value.trim().to_string();
            let parts: Vec<&str> = name.split(':').collect();
            match parts[..] {
                [name] => {
                    r.general.insert(name.to_string(), value);
                }
                [class, name] => {
                    if let Ok(id) = class.parse() {
                        let class = r.slabs.entry(id).or_default();
                        class.insert(name.to_string(), value);
                    }
                }
                [_, class, name] => {
                    if let Ok(id) = class.parse() {
                        let class = r.items.entry(id).or_default();
                        class.insert(name.to_string(), value);
                    }
                }
                _ => {}
            }
        }
        for line in settings.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if let [_, name, value] = fields[..] {
                r.settings
                    .insert(name.to_string(), value.trim().to_string());
            }
        }
        r
    }

    pub(crate) fn emit(&self, out: &mut Exposition) {
        self.emit_general(out);
        self.emit_items(out);
        self.emit_slabs(out);
        self.emit_settings(out);
        self.emit_own(out);
        out.add(&UP, Kind::Gauge, 1.0, &[]);
    }

    fn emit_general(&self, out: &mut Exposition) {
        let s = &self.general;
        if let Some(v) = s.get("version") {
            out.add(&VERSION, Kind::Gauge, 1.0, &[v]);
        }
        for op in ["get", "delete", "incr", "decr", "cas", "touch"] {
            put(
                out,
                &COMMANDS,
                Kind::Counter,
                s,
                &format!("{op}_hits"),
                &[op, "hit"],
            );
            put(
                out,
                &COMMANDS,
                Kind::Counter,
                s,
                &format!("{op}_misses"),
                &[op, "miss"],
            );
        }
        put(out, &UPTIME, Kind::Counter, s, "uptime", &[]);
        put(out, &TIME, Kind::Gauge, s, "time", &[]);
        put(
            out,
            &COMMANDS,
            Kind::Counter,
            s,
            "cas_badval",
            &["cas", "badval"],
        );
        put(
            out,
            &COMMANDS,
            Kind::Counter,
            s,
            "cmd_flush",
            &["flush", "hit"],
        );
        // memcached counts CAS commands again in cmd_set.
        if let (Some(set), Some(cas)) = (
            number(s, "cmd_set"),
            sum(s, &["cas_misses", "cas_hits", "cas_badval"]),
        ) {
            out.add(&COMMANDS, Kind::Counter, set - cas, &["set", "hit"]);
        }
        for (desc, key) in [
            (&RUSAGE_USER, "rusage_user"),
            (&RUSAGE_SYSTEM, "rusage_system"),
        ] {
            if let Some(v) = s.get(key).and_then(|v| timeval(v)) {
                out.add(desc, Kind::Counter, v, &[]);
            }
        }
        // The exporter takes extstore_limit_maxbytes as the sign that
        // extstore is on and every extstore line is there.
        if s.contains_key("extstore_limit_maxbytes") {
            for (desc, kind, key) in EXTSTORE {
                put(out, desc, *kind, s, key, &[]);
            }
        }
        for (desc, kind, key) in GENERAL {
            put(out, desc, *kind, s, key, &[]);
        }
    }

    fn emit_items(&self, out: &mut Exposition) {
        for (id, u) in &self.items {
            let slab = id.to_string();
            let slab = slab.as_str();
            put(out, &SLAB_ITEMS, Kind::Gauge, u, "number", &[slab]);
            put(out, &SLAB_AGE, Kind::Gauge, u, "age", &[slab]);
            for (key, lru) in [
                ("hits_to_hot", "hot"),
                ("hits_to_warm", "warm"),
                ("hits_to_cold", "cold"),
                ("hits_to_temp", "temporary"),
            ] {
                put(out, &SLAB_LRU_HITS, Kind::Counter, u, key, &[slab, lru]);
            }
            for (key, desc) in ITEM_COUNTERS {
                put(out, desc, Kind::Counter, u, key, &[slab]);
            }
            for (key, desc) in ITEM_GAUGES {
                put(out, desc, Kind::Gauge, u, key, &[slab]);
            }
        }
    }

    fn emit_slabs(&self, out: &mut Exposition) {
        for (id, v) in &self.slabs {
            let slab = id.to_string();
            let slab = slab.as_str();
            for op in ["get", "delete", "incr", "decr", "cas", "touch"] {
                let key = format!("{op}_hits");
                put(
                    out,
                    &SLAB_COMMANDS,
                    Kind::Counter,
                    v,
                    &key,
                    &[slab, op, "hit"],
                );
            }
            put(
                out,
                &SLAB_COMMANDS,
                Kind::Counter,
                v,
                "cas_badval",
                &[slab, "cas", "badval"],
            );
            if let (Some(set), Some(cas)) =
                (number(v, "cmd_set"), sum(v, &["cas_hits", "cas_badval"]))
            {
                out.add(
                    &SLAB_COMMANDS,
                    Kind::Counter,
                    set - cas,
                    &[slab, "set", "hit"],
                );
            }
            for (key, desc) in SLAB_GAUGES {
                put(out, desc, Kind::Gauge, v, key, &[slab]);
            }
        }
    }

    fn emit_settings(&self, out: &mut Exposition) {
        let s = &self.settings;
        put(out, &MAX_CONNECTIONS, Kind::Gauge, s, "maxconns", &[]);
        if s.get("lru_crawler").map(String::as_str) != Some("yes") {
            return;
        }
        for (desc, key) in [
            (&LRU_CRAWLER_ENABLED, "lru_crawler"),
            (&LRU_MAINTAINER_THREAD, "lru_maintainer_thread"),
        ] {
            if let Some(v) = s.get(key).and_then(|v| yes_no(v)) {
                out.add(desc, Kind::Gauge, v, &[]);
            }
        }
        for (desc, key) in LRU_SETTINGS {
            put(out, desc, Kind::Gauge, s, key, &[]);
        }
    }

    /// This server's lines that the exporter does not know.
    fn emit_own(&self, out: &mut Exposition) {
        let s = &self.general;
        if s.contains_key("aof_enabled") {
            for (desc, kind, key) in AOF {
                put(out, desc, *kind, s, key, &[]);
            }
            if let Some(ms) = number(s, "aof_last_fsync_ms") {
                out.add(&AOF_LAST_FSYNC, Kind::Gauge, ms / 1000.0, &[]);
            }
            if let Some(status) = s.get("aof_last_write_status") {
                let ok = if status == "ok" { 1.0 } else { 0.0 };
                out.add(&AOF_LAST_WRITE_OK, Kind::Gauge, ok, &[]);
            }
        }
        if let (Some(role), Some(peer)) = (s.get("repl_role"), s.get("repl_peer")) {
            out.add(&REPL_INFO, Kind::Gauge, 1.0, &[role, peer]);
            for (desc, kind, key) in REPL {
                put(out, desc, *kind, s, key, &[]);
            }
        }
    }
}

/// One sample from one field, if the field is there and a number (the
/// exporter's `parseAndNewMetric`).
fn put(
    out: &mut Exposition,
    desc: &'static Desc,
    kind: Kind,
    f: &Fields,
    key: &str,
    labels: &[&str],
) {
    if let Some(v) = number(f, key) {
        out.add(desc, kind, v, labels);
    }
}

fn number(f: &Fields, key: &str) -> Option<f64> {
    f.get(key)?.parse().ok()
}

fn sum(f: &Fields, keys: &[&str]) -> Option<f64> {
    keys.iter().map(|k| number(f, k)).sum()
}

/// `sec.usec`, as memcached prints rusage.
fn timeval(v: &str) -> Option<f64> {
    let (sec, usec) = v.split_once('.')?;
    Some(sec.parse::<f64>().ok()? + usec.parse::<f64>().ok()? / 1e6)
}

fn yes_no(v: &str) -> Option<f64> {
    match v {
        "yes" => Some(1.0),
        "no" => Some(0.0),
        _ => None,
    }
}

macro_rules! desc {
    ($id:ident, $name:literal, $help:literal) => {
        desc!($id, $name, $help, []);
    };
    ($id:ident, $name:literal, $help:literal, [$($l:literal),*]) => {
        static $id: Desc = Desc {
            name: $name,
            help: $help,
            labels: &[$($l),*],
        };
    };
}

desc!(UP, "memcached_up", "Could the memcached server be reached.");
desc!(
    UPTIME,
    "memcached_uptime_seconds",
    "Number of seconds since the server started."
);
desc!(
    TIME,
    "memcached_time_seconds",
    "current UNIX time according to the server."
);
desc!(
    VERSION,
    "memcached_version",
    "The version of this memcached server.",
    ["version"]
);
desc!(
    RUSAGE_USER,
    "memcached_process_user_cpu_seconds_total",
    "Accumulated user time for this process."
);
desc!(
    RUSAGE_SYSTEM,
    "memcached_process_system_cpu_seconds_total",
    "Accumulated system time for this process."
);
desc!(
    BYTES_READ,
    "memcached_read_bytes_total",
    "Total number of bytes read by this server from network."
);
desc!(
    BYTES_WRITTEN,
    "memcached_written_bytes_total",
    "Total number of bytes sent by this server to network."
);
desc!(
    CURRENT_CONNECTIONS,
    "memcached_current_connections",
    "Current number of open connections."
);
desc!(
    MAX_CONNECTIONS,
    "memcached_max_connections",
    "Maximum number of clients allowed."
);
desc!(
    CONNECTIONS_TOTAL,
    "memcached_connections_total",
    "Total number of connections opened since the server started running."
);
desc!(
    REJECTED_CONNECTIONS,
    "memcached_connections_rejected_total",
    "Total number of connections rejected due to hitting the memcached's -c limit in maxconns_fast mode."
);
desc!(
    CONNS_YIELDED,
    "memcached_connections_yielded_total",
    "Total number of connections yielded running due to hitting the memcached's -R limit."
);
desc!(
    LISTENER_DISABLED,
    "memcached_connections_listener_disabled_total",
    "Number of times that memcached has hit its connections limit and disabled its listener."
);
desc!(
    CURRENT_BYTES,
    "memcached_current_bytes",
    "Current number of bytes used to store items."
);
desc!(
    LIMIT_BYTES,
    "memcached_limit_bytes",
    "Number of bytes this server is allowed to use for storage."
);
desc!(
    COMMANDS,
    "memcached_commands_total",
    "Total number of all requests broken down by command (get, set, etc.) and status.",
    ["command", "status"]
);
desc!(
    ITEMS,
    "memcached_current_items",
    "Current number of items stored by this instance."
);
desc!(
    ITEMS_TOTAL,
    "memcached_items_total",
    "Total number of items stored during the life of this instance."
);
desc!(
    EVICTIONS,
    "memcached_items_evicted_total",
    "Total number of valid items removed from cache to free memory for new items."
);
desc!(
    RECLAIMED,
    "memcached_items_reclaimed_total",
    "Total number of times an entry was stored using memory from an expired entry."
);
desc!(
    STORE_TOO_LARGE,
    "memcached_item_too_large_total",
    "The number of times an item exceeded the max-item-size when being stored."
);
desc!(
    STORE_NO_MEMORY,
    "memcached_item_no_memory_total",
    "The number of times an item could not be stored due to no more memory."
);
desc!(
    DIRECT_RECLAIMS,
    "memcached_direct_reclaims_total",
    "Times worker threads had to directly reclaim or evict items."
);
desc!(
    LRU_CRAWLER_ENABLED,
    "memcached_lru_crawler_enabled",
    "Whether the LRU crawler is enabled."
);
desc!(
    LRU_CRAWLER_SLEEP,
    "memcached_lru_crawler_sleep",
    "Microseconds to sleep between LRU crawls."
);
desc!(
    LRU_CRAWLER_TO_CRAWL,
    "memcached_lru_crawler_to_crawl",
    "Max items to crawl per slab per run."
);
desc!(
    LRU_MAINTAINER_THREAD,
    "memcached_lru_crawler_maintainer_thread",
    "Split LRU mode and background threads."
);
desc!(
    LRU_HOT_PERCENT,
    "memcached_lru_crawler_hot_percent",
    "Percent of slab memory reserved for HOT LRU."
);
desc!(
    LRU_WARM_PERCENT,
    "memcached_lru_crawler_warm_percent",
    "Percent of slab memory reserved for WARM LRU."
);
desc!(
    LRU_HOT_MAX_FACTOR,
    "memcached_lru_crawler_hot_max_factor",
    "Set idle age of HOT LRU to COLD age * this"
);
desc!(
    LRU_WARM_MAX_FACTOR,
    "memcached_lru_crawler_warm_max_factor",
    "Set idle age of WARM LRU to COLD age * this"
);
desc!(
    LRU_CRAWLER_STARTS,
    "memcached_lru_crawler_starts_total",
    "Times an LRU crawler was started."
);
desc!(
    LRU_CRAWLER_RECLAIMED,
    "memcached_lru_crawler_reclaimed_total",
    "Total items freed by LRU Crawler."
);
desc!(
    LRU_CRAWLER_ITEMS_CHECKED,
    "memcached_lru_crawler_items_checked_total",
    "Total items examined by LRU Crawler."
);
desc!(
    LRU_CRAWLER_MOVES_TO_COLD,
    "memcached_lru_crawler_moves_to_cold_total",
    "Total number of items moved from HOT/WARM to COLD LRU's."
);
desc!(
    LRU_CRAWLER_MOVES_TO_WARM,
    "memcached_lru_crawler_moves_to_warm_total",
    "Total number of items moved from COLD to WARM LRU."
);
desc!(
    LRU_CRAWLER_MOVES_WITHIN_LRU,
    "memcached_lru_crawler_moves_within_lru_total",
    "Total number of items reshuffled within HOT or WARM LRU's."
);
desc!(
    MALLOCED,
    "memcached_malloced_bytes",
    "Number of bytes of memory allocated to slab pages."
);
desc!(
    ACCEPTING_CONNECTIONS,
    "memcached_accepting_connections",
    "The Memcached server is currently accepting new connections."
);
desc!(
    SLAB_ITEMS,
    "memcached_slab_current_items",
    "Number of items currently stored in this slab class.",
    ["slab"]
);
desc!(
    SLAB_AGE,
    "memcached_slab_items_age_seconds",
    "Number of seconds the oldest item has been in the slab class.",
    ["slab"]
);
desc!(
    SLAB_CRAWLER_RECLAIMED,
    "memcached_slab_items_crawler_reclaimed_total",
    "Number of items freed by the LRU Crawler.",
    ["slab"]
);
desc!(
    SLAB_EVICTED,
    "memcached_slab_items_evicted_total",
    "Total number of times an item had to be evicted from the LRU before it expired.",
    ["slab"]
);
desc!(
    SLAB_EVICTED_NONZERO,
    "memcached_slab_items_evicted_nonzero_total",
    "Total number of times an item which had an explicit expire time set had to be evicted from the LRU before it expired.",
    ["slab"]
);
desc!(
    SLAB_EVICTED_TIME,
    "memcached_slab_items_evicted_time_seconds",
    "Seconds since the last access for the most recent item evicted from this class.",
    ["slab"]
);
desc!(
    SLAB_EVICTED_UNFETCHED,
    "memcached_slab_items_evicted_unfetched_total",
    "Total nmber of items evicted and never fetched.",
    ["slab"]
);
desc!(
    SLAB_EXPIRED_UNFETCHED,
    "memcached_slab_items_expired_unfetched_total",
    "Total number of valid items evicted from the LRU which were never touched after being set.",
    ["slab"]
);
desc!(
    SLAB_OUTOFMEMORY,
    "memcached_slab_items_outofmemory_total",
    "Total number of items for this slab class that have triggered an out of memory error.",
    ["slab"]
);
desc!(
    SLAB_RECLAIMED,
    "memcached_slab_items_reclaimed_total",
    "Total number of items reclaimed.",
    ["slab"]
);
desc!(
    SLAB_TAILREPAIRS,
    "memcached_slab_items_tailrepairs_total",
    "Total number of times the entries for a particular ID need repairing.",
    ["slab"]
);
desc!(
    SLAB_MOVES_TO_COLD,
    "memcached_slab_items_moves_to_cold",
    "Number of items moved from HOT or WARM into COLD.",
    ["slab"]
);
desc!(
    SLAB_MOVES_TO_WARM,
    "memcached_slab_items_moves_to_warm",
    "Number of items moves from COLD into WARM.",
    ["slab"]
);
desc!(
    SLAB_MOVES_WITHIN_LRU,
    "memcached_slab_items_moves_within_lru",
    "Number of times active items were bumped within HOT or WARM.",
    ["slab"]
);
desc!(
    SLAB_HOT_ITEMS,
    "memcached_slab_hot_items",
    "Number of items presently stored in the HOT LRU.",
    ["slab"]
);
desc!(
    SLAB_WARM_ITEMS,
    "memcached_slab_warm_items",
    "Number of items presently stored in the WARM LRU.",
    ["slab"]
);
desc!(
    SLAB_COLD_ITEMS,
    "memcached_slab_cold_items",
    "Number of items presently stored in the COLD LRU.",
    ["slab"]
);
desc!(
    SLAB_TEMPORARY_ITEMS,
    "memcached_slab_temporary_items",
    "Number of items presently stored in the TEMPORARY LRU.",
    ["slab"]
);
desc!(
    SLAB_HOT_AGE,
    "memcached_slab_hot_age_seconds",
    "Age of the oldest item in HOT LRU.",
    ["slab"]
);
desc!(
    SLAB_WARM_AGE,
    "memcached_slab_warm_age_seconds",
    "Age of the oldest item in HOT LRU.",
    ["slab"]
);
desc!(
    SLAB_LRU_HITS,
    "memcached_slab_lru_hits_total",
    "Number of get_hits to the LRU.",
    ["slab", "lru"]
);
desc!(
    SLAB_CHUNK_SIZE,
    "memcached_slab_chunk_size_bytes",
    "Number of bytes allocated to each chunk within this slab class.",
    ["slab"]
);
desc!(
    SLAB_CHUNKS_PER_PAGE,
    "memcached_slab_chunks_per_page",
    "Number of chunks within a single page for this slab class.",
    ["slab"]
);
desc!(
    SLAB_CURRENT_PAGES,
    "memcached_slab_current_pages",
    "Number of pages allocated to this slab class.",
    ["slab"]
);
desc!(
    SLAB_CURRENT_CHUNKS,
    "memcached_slab_current_chunks",
    "Number of chunks allocated to this slab class.",
    ["slab"]
);
desc!(
    SLAB_CHUNKS_USED,
    "memcached_slab_chunks_used",
    "Number of chunks allocated to an item.",
    ["slab"]
);
desc!(
    SLAB_CHUNKS_FREE,
    "memcached_slab_chunks_free",
    "Number of chunks not yet allocated items.",
    ["slab"]
);
desc!(
    SLAB_CHUNKS_FREE_END,
    "memcached_slab_chunks_free_end",
    "Number of free chunks at the end of the last allocated page.",
    ["slab"]
);
desc!(
    SLAB_MEM_REQUESTED,
    "memcached_slab_mem_requested_bytes",
    "Number of bytes of memory actual items take up within a slab.",
    ["slab"]
);
desc!(
    SLAB_COMMANDS,
    "memcached_slab_commands_total",
    "Total number of all requests broken down by command (get, set, etc.) and status per slab.",
    ["slab", "command", "status"]
);

desc!(
    EXT_COMPACT_LOST,
    "memcached_extstore_compact_lost_total",
    "Total number of items lost because they were locked during extstore compaction."
);
desc!(
    EXT_COMPACT_RESCUES,
    "memcached_extstore_compact_rescued_total",
    "Total number of items moved to a new page during extstore compaction,"
);
desc!(
    EXT_COMPACT_SKIPPED,
    "memcached_extstore_compact_skipped_total",
    "Total number of items dropped due to inactivity during extstore compaction."
);
desc!(
    EXT_PAGE_ALLOCS,
    "memcached_extstore_pages_allocated_total",
    "Total number of times a page was allocated in extstore."
);
desc!(
    EXT_PAGE_EVICTIONS,
    "memcached_extstore_pages_evicted_total",
    "Total number of times a page was evicted from extstore."
);
desc!(
    EXT_PAGE_RECLAIMS,
    "memcached_extstore_pages_reclaimed_total",
    "Total number of times an empty extstore page was freed."
);
desc!(
    EXT_PAGES_FREE,
    "memcached_extstore_pages_free",
    "Number of extstore pages not yet containing any items."
);
desc!(
    EXT_PAGES_USED,
    "memcached_extstore_pages_used",
    "Number of extstore pages containing at least one item."
);
desc!(
    EXT_OBJECTS_EVICTED,
    "memcached_extstore_objects_evicted_total",
    "Total number of items evicted from extstore to free up space."
);
desc!(
    EXT_OBJECTS_READ,
    "memcached_extstore_objects_read_total",
    "Total number of items read from extstore."
);
desc!(
    EXT_OBJECTS_WRITTEN,
    "memcached_extstore_objects_written_total",
    "Total number of items written to extstore."
);
desc!(
    EXT_OBJECTS_USED,
    "memcached_extstore_objects_used",
    "Number of items stored in extstore."
);
desc!(
    EXT_BYTES_EVICTED,
    "memcached_extstore_bytes_evicted_total",
    "Total number of bytes evicted from extstore to free up space."
);
desc!(
    EXT_BYTES_WRITTEN,
    "memcached_extstore_bytes_written_total",
    "Total number of bytes written to extstore."
);
desc!(
    EXT_BYTES_READ,
    "memcached_extstore_bytes_read_total",
    "Total number of bytes read from extstore."
);
desc!(
    EXT_BYTES_USED,
    "memcached_extstore_bytes_used",
    "Current number of bytes used to store items in extstore."
);
desc!(
    EXT_BYTES_FRAGMENTED,
    "memcached_extstore_bytes_fragmented",
    "Current number of bytes in extstore pages allocated but not used to store an object."
);
desc!(
    EXT_BYTES_LIMIT,
    "memcached_extstore_bytes_limit",
    "Number of bytes of external storage allocated for this server."
);
desc!(
    EXT_IO_QUEUE,
    "memcached_extstore_io_queue_depth",
    "Number of items in the I/O queue waiting to be processed."
);

/// The extstore lines, as the exporter reads them (bytes_used as a
/// counter: the exporter's type).
static EXTSTORE: &[(&Desc, Kind, &str)] = &[
    (&EXT_COMPACT_LOST, Kind::Counter, "extstore_compact_lost"),
    (
        &EXT_COMPACT_RESCUES,
        Kind::Counter,
        "extstore_compact_rescues",
    ),
    (
        &EXT_COMPACT_SKIPPED,
        Kind::Counter,
        "extstore_compact_skipped",
    ),
    (&EXT_PAGE_ALLOCS, Kind::Counter, "extstore_page_allocs"),
    (
        &EXT_PAGE_EVICTIONS,
        Kind::Counter,
        "extstore_page_evictions",
    ),
    (&EXT_PAGE_RECLAIMS, Kind::Counter, "extstore_page_reclaims"),
    (&EXT_PAGES_FREE, Kind::Gauge, "extstore_pages_free"),
    (&EXT_PAGES_USED, Kind::Gauge, "extstore_pages_used"),
    (
        &EXT_OBJECTS_EVICTED,
        Kind::Counter,
        "extstore_objects_evicted",
    ),
    (&EXT_OBJECTS_READ, Kind::Counter, "extstore_objects_read"),
    (
        &EXT_OBJECTS_WRITTEN,
        Kind::Counter,
        "extstore_objects_written",
    ),
    (&EXT_OBJECTS_USED, Kind::Gauge, "extstore_objects_used"),
    (&EXT_BYTES_EVICTED, Kind::Counter, "extstore_bytes_evicted"),
    (&EXT_BYTES_WRITTEN, Kind::Counter, "extstore_bytes_written"),
    (&EXT_BYTES_READ, Kind::Counter, "extstore_bytes_read"),
    (&EXT_BYTES_USED, Kind::Counter, "extstore_bytes_used"),
    (
        &EXT_BYTES_FRAGMENTED,
        Kind::Gauge,
        "extstore_bytes_fragmented",
    ),
    (&EXT_BYTES_LIMIT, Kind::Gauge, "extstore_limit_maxbytes"),
    (&EXT_IO_QUEUE, Kind::Gauge, "extstore_io_queue"),
];

// This server's own families.
desc!(
    AOF_BYTES,
    "memcached_aof_bytes",
    "Current size of the append-only file."
);
desc!(
    AOF_REWRITES,
    "memcached_aof_rewrites_total",
    "Completed rewrites of the append-only file."
);
desc!(
    AOF_REWRITE_IN_PROGRESS,
    "memcached_aof_rewrite_in_progress",
    "Whether a rewrite of the append-only file is running."
);
desc!(
    AOF_LAST_FSYNC,
    "memcached_aof_last_fsync_seconds",
    "How long the last sync of the append-only file took."
);
desc!(
    AOF_RECOVERED_ITEMS,
    "memcached_aof_recovered_items",
    "Live items after the replay of the append-only file at start."
);
desc!(
    AOF_REWRITE_FAILURES,
    "memcached_aof_rewrite_failures_total",
    "Rewrites of the append-only file that failed (the old file was kept)."
);
desc!(
    AOF_WRITE_ERRORS,
    "memcached_aof_write_errors_total",
    "Writes, syncs and retries of the append-only file that failed."
);
desc!(
    AOF_LAST_WRITE_OK,
    "memcached_aof_last_write_ok",
    "Whether the last write or sync of the append-only file succeeded."
);
desc!(
    AOF_LAST_WRITE_ERRNO,
    "memcached_aof_last_write_errno",
    "The errno of the last failed write of the append-only file (0: none)."
);
desc!(
    AOF_REFUSING_WRITES,
    "memcached_aof_refusing_writes",
    "Whether changes are refused until the append-only file takes writes again."
);
desc!(
    REPL_INFO,
    "memcached_repl_info",
    "This node's replication role and its configured peer.",
    ["role", "peer"]
);
desc!(
    REPL_CONNECTED,
    "memcached_repl_connected",
    "Whether the replication link to the peer is up."
);
desc!(
    REPL_LAG_RECORDS,
    "memcached_repl_lag_records",
    "Records sent to the peer that it has not yet acknowledged."
);
desc!(
    REPL_RESYNCS,
    "memcached_repl_resyncs_total",
    "Full copies sent to or received from the peer."
);

/// The plain fields of `stats`, in the exporter's order.
static GENERAL: &[(&Desc, Kind, &str)] = &[
    (&CURRENT_BYTES, Kind::Gauge, "bytes"),
    (&LIMIT_BYTES, Kind::Gauge, "limit_maxbytes"),
    (&ITEMS, Kind::Gauge, "curr_items"),
    (&ITEMS_TOTAL, Kind::Counter, "total_items"),
    (&BYTES_READ, Kind::Counter, "bytes_read"),
    (&BYTES_WRITTEN, Kind::Counter, "bytes_written"),
    (&CURRENT_CONNECTIONS, Kind::Gauge, "curr_connections"),
    (&CONNECTIONS_TOTAL, Kind::Counter, "total_connections"),
    (&REJECTED_CONNECTIONS, Kind::Counter, "rejected_connections"),
    (&CONNS_YIELDED, Kind::Counter, "conn_yields"),
    (&LISTENER_DISABLED, Kind::Counter, "listen_disabled_num"),
    (&EVICTIONS, Kind::Counter, "evictions"),
    (&RECLAIMED, Kind::Counter, "reclaimed"),
    (&STORE_TOO_LARGE, Kind::Counter, "store_too_large"),
    (&STORE_NO_MEMORY, Kind::Counter, "store_no_memory"),
    (&LRU_CRAWLER_STARTS, Kind::Counter, "lru_crawler_starts"),
    (&DIRECT_RECLAIMS, Kind::Counter, "direct_reclaims"),
    (
        &LRU_CRAWLER_ITEMS_CHECKED,
        Kind::Counter,
        "crawler_items_checked",
    ),
    (&LRU_CRAWLER_RECLAIMED, Kind::Counter, "crawler_reclaimed"),
    (&LRU_CRAWLER_MOVES_TO_COLD, Kind::Counter, "moves_to_cold"),
    (&LRU_CRAWLER_MOVES_TO_WARM, Kind::Counter, "moves_to_warm"),
    (
        &LRU_CRAWLER_MOVES_WITHIN_LRU,
        Kind::Counter,
        "moves_within_lru",
    ),
    (&MALLOCED, Kind::Gauge, "total_malloced"),
    (&ACCEPTING_CONNECTIONS, Kind::Gauge, "accepting_conns"),
];

/// `stats items` fields the exporter reads as counters when present
/// (`mem_requested` among them, under the slab family's name).
static ITEM_COUNTERS: &[(&str, &Desc)] = &[
    ("crawler_reclaimed", &SLAB_CRAWLER_RECLAIMED),
    ("evicted", &SLAB_EVICTED),
    ("evicted_nonzero", &SLAB_EVICTED_NONZERO),
    ("evicted_time", &SLAB_EVICTED_TIME),
    ("evicted_unfetched", &SLAB_EVICTED_UNFETCHED),
    ("expired_unfetched", &SLAB_EXPIRED_UNFETCHED),
    ("outofmemory", &SLAB_OUTOFMEMORY),
    ("reclaimed", &SLAB_RECLAIMED),
    ("tailrepairs", &SLAB_TAILREPAIRS),
    ("mem_requested", &SLAB_MEM_REQUESTED),
    ("moves_to_cold", &SLAB_MOVES_TO_COLD),
    ("moves_to_warm", &SLAB_MOVES_TO_WARM),
    ("moves_within_lru", &SLAB_MOVES_WITHIN_LRU),
];

static ITEM_GAUGES: &[(&str, &Desc)] = &[
    ("number_hot", &SLAB_HOT_ITEMS),
    ("number_warm", &SLAB_WARM_ITEMS),
    ("number_cold", &SLAB_COLD_ITEMS),
    ("number_temp", &SLAB_TEMPORARY_ITEMS),
    ("age_hot", &SLAB_HOT_AGE),
    ("age_warm", &SLAB_WARM_AGE),
];

static SLAB_GAUGES: &[(&str, &Desc)] = &[
    ("chunk_size", &SLAB_CHUNK_SIZE),
    ("chunks_per_page", &SLAB_CHUNKS_PER_PAGE),
    ("total_pages", &SLAB_CURRENT_PAGES),
    ("total_chunks", &SLAB_CURRENT_CHUNKS),
    ("used_chunks", &SLAB_CHUNKS_USED),
    ("free_chunks", &SLAB_CHUNKS_FREE),
    ("free_chunks_end", &SLAB_CHUNKS_FREE_END),
    ("mem_requested", &SLAB_MEM_REQUESTED),
];

static LRU_SETTINGS: &[(&Desc, &str)] = &[
    (&LRU_CRAWLER_SLEEP, "lru_crawler_sleep"),
    (&LRU_CRAWLER_TO_CRAWL, "lru_crawler_tocrawl"),
    (&LRU_HOT_PERCENT, "hot_lru_pct"),
    (&LRU_WARM_PERCENT, "warm_lru_pct"),
    (&LRU_HOT_MAX_FACTOR, "hot_max_factor"),
    (&LRU_WARM_MAX_FACTOR, "warm_max_factor"),
];

static AOF: &[(&Desc, Kind, &str)] = &[
    (&AOF_BYTES, Kind::Gauge, "aof_bytes"),
    (&AOF_REWRITES, Kind::Counter, "aof_rewrites"),
    (
        &AOF_REWRITE_IN_PROGRESS,
        Kind::Gauge,
        "aof_rewrite_in_progress",
    ),
    (&AOF_RECOVERED_ITEMS, Kind::Gauge, "aof_recovered_items"),
    (&AOF_REWRITE_FAILURES, Kind::Counter, "aof_rewrite_failures"),
    (&AOF_WRITE_ERRORS, Kind::Counter, "aof_write_errors"),
    (&AOF_LAST_WRITE_ERRNO, Kind::Gauge, "aof_last_write_errno"),
    (&AOF_REFUSING_WRITES, Kind::Gauge, "aof_refusing_writes"),
];

static REPL: &[(&Desc, Kind, &str)] = &[
    (&REPL_CONNECTED, Kind::Gauge, "repl_connected"),
    (&REPL_LAG_RECORDS, Kind::Gauge, "repl_lag_records"),
    (&REPL_RESYNCS, Kind::Counter, "repl_resyncs"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn render(general: &str, settings: &str) -> String {
        let mut out = Exposition::default();
        Reports::parse(general, settings).emit(&mut out);
        out.finish()
    }

    #[test]
    fn cas_commands_are_taken_out_of_set_as_the_exporter_does() {
        let text = render(
            "STAT cmd_set 10\r\nSTAT cas_misses 1\r\nSTAT cas_hits 2\r\nSTAT cas_badval 3\r\nEND\r\n",
            "",
        );
        assert!(text.contains("memcached_commands_total{command=\"set\",status=\"hit\"} 4\n"));
        assert!(text.contains("memcached_commands_total{command=\"cas\",status=\"badval\"} 3\n"));
    }

    #[test]
    fn per_class_lines_and_settings_land_in_their_families() {
        let text = render(
            "STAT 1:chunk_size 96\r\nSTAT items:1:number 5\r\nSTAT rusage_user 1.500000\r\n",
            "STAT maxconns 1024\r\nSTAT lru_crawler yes\r\nSTAT lru_maintainer_thread no\r\n",
        );
        assert!(text.contains("memcached_slab_chunk_size_bytes{slab=\"1\"} 96\n"));
        assert!(text.contains("memcached_slab_current_items{slab=\"1\"} 5\n"));
        assert!(text.contains("memcached_process_user_cpu_seconds_total 1.5\n"));
        assert!(text.contains("memcached_max_connections 1024\n"));
        assert!(text.contains("memcached_lru_crawler_enabled 1\n"));
        assert!(text.contains("memcached_lru_crawler_maintainer_thread 0\n"));
        assert!(text.ends_with("memcached_up 1\n"));
    }
}
