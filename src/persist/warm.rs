//! memcached's restartable cache (`-e PATH`): the item arena is the file
//! PATH, mapped shared, and a graceful stop (SIGUSR1, `shutdown graceful`)
//! writes what the next process needs beside it, in `PATH.meta`.
//!
//! A start with `-e` reads and deletes `PATH.meta`. When it is there, was
//! written completely, and names the same memory options, the cache comes
//! back as it was: every item with its value, flags, CAS and expiry (the
//! clock resumes from the stopped one plus the downtime, so TTLs stay
//! honest). Otherwise the file is emptied and the cache starts clean, with
//! memcached's message saying why. A crash leaves no `PATH.meta` (it was
//! deleted at start), so a crashed cache is never trusted; nor does a
//! crash during the save leave a partial one (see `save`). As in
//! memcached, a `PATH.meta` that does not begin with a section tag (an
//! empty file above all) stops the start.
//!
//! `PATH.meta` is text: memcached's "main" section (`T` tag lines, `K`
//! key/value lines, the same keys checked in the same order, so a mismatch
//! is reported in the same words), then this server's own "arena" section,
//! then a checksum line over everything before it.
//!
//! What the arena section holds is the cache's and the allocator's own
//! tables (`items/warm.rs`, `slab/warm.rs`), which also rebuild the cache
//! over the kept arena; this file is the metadata's format, its checks, and
//! the order of open, resume and save.

use crate::items::warm::{CacheState, LRUS_PER_CLASS, LruEnds, Recovered};
use crate::items::{Cache, CacheConfig, SavedPage, SavedPages};
use crate::settings::Settings;
use crate::slab::arena::Arena;
use crate::slab::warm::{ClassState, SlabState};
use crate::slab::{ChunkRef, Slabs};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;

/// memcached refuses metadata with fewer of its keys than this.
const REQUIRED_MAIN_KEYS: usize = 17;

/// The arena this process will map: saved tables must fit it exactly.
struct Shape {
    bytes: usize,
    pages: usize,
    /// Class entries, including the unused class 0.
    classes: usize,
}

/// What a valid `PATH.meta` carries besides the cache's own state.
#[derive(Debug)]
pub(crate) struct Saved {
    state: CacheState,
    current_time: u32,
    process_started: i64,
    downtime: u32,
    old_base: usize,
    /// extstore's page table, when the cache ran with it.
    ext: Option<SavedPages>,
}

impl Saved {
    /// extstore's page table, for the store to open with.
    pub(crate) fn take_ext(&mut self) -> Option<SavedPages> {
        self.ext.take()
    }
}

fn meta_path(path: &str) -> String {
    format!("{path}.meta")
}

/// Opens the memory file and maps the arena over it, reading `PATH.meta`
/// first. Returns the cache (empty) and, when the file's contents may be
/// reused, what `resume` needs to bring them back.
pub(crate) fn open(
    path: &str,
    settings: &mut Settings,
    mut cfg: CacheConfig,
) -> io::Result<(Cache, Option<Saved>)> {
    let len = Slabs::arena_len(&cfg.slab)?;
    let shape = Shape {
        bytes: len,
        pages: len / cfg.slab.page_size,
        classes: Slabs::class_count(&cfg.slab),
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o700)
        .open(path)
        .map_err(|e| {
            io::Error::other(format!(
                "failed to open file for mmap: {}",
                crate::sys::strerror(&e)
            ))
        })?;
    let mut saved = check(path, settings, &shape);
    if saved.is_some() && file.metadata()?.len() != len as u64 {
        eprintln!(
            "[restart] memory file is not the size it was saved at, starting with a clean cache"
        );
        saved = None;
    }
    if let Some(s) = &saved
        && settings.ext.enabled()
        && s.ext
            .as_ref()
            .is_none_or(|e| e.layout != ext_layout(settings))
    {
        // memcached 1.6.18 cannot bring back headers whose values are on
        // flash (its issue #871): it starts clean. Here a cache saved with
        // the same extstore files and layout comes back with them (see
        // `ExtStore::flush_for_restart`); any other starts clean, with
        // memcached's words.
        eprintln!("[restart] memory restart with extstore not presently supported.");
        saved = None;
    }
    prepare_file(&file, len, saved.is_some())
        .map_err(|e| io::Error::other(format!("ftruncate failed: {}", crate::sys::strerror(&e))))?;
    let arena = Arena::map_file(file, len).map_err(|e| {
        io::Error::other(format!(
            "failed to mmap, aborting: {}",
            crate::sys::strerror(&e)
        ))
    })?;
    if let Some(saved) = &saved {
        // memcached sizes the new hash table as the old one had grown.
        settings.hashpower_init = saved.state.hashpower;
        cfg.hashpower = saved.state.hashpower;
    }
    let slabs = Slabs::with_arena(cfg.slab, arena);
    Ok((Cache::with_slabs(cfg, slabs), saved))
}

/// A file to reuse keeps its bytes; any other is emptied first, since a
/// crashed or differently shaped cache's leftovers mean nothing now.
fn prepare_file(file: &File, len: usize, reuse: bool) -> io::Result<()> {
    if !reuse {
        file.set_len(0)?;
    }
    file.set_len(len as u64)
}

/// Brings the saved items back (or, with nothing saved, gives every class
/// its first page, as memcached preallocates a memory file).
pub(crate) fn resume(cache: &mut Cache, saved: Option<Saved>, verbose: u8) -> io::Result<()> {
    let Some(saved) = saved else {
        if !cache.slabs.preallocate() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "Error while preallocating slab memory!\n\
                     If using -L or other prealloc options, max memory must be at least {} megabytes.",
                    cache.slabs.largest()
                ),
            ));
        }
        return Ok(());
    };
    if verbose > 0 {
        eprintln!(
            "[restart] original memory base: [{:#x}] new base: [{:#x}]",
            saved.old_base,
            cache.slabs.arena.base_address()
        );
        eprintln!("[restart] recovery start [{}]", unix_micros());
    }
    cache
        .clock
        .resume(saved.process_started, saved.current_time, saved.downtime);
    let found = cache.restore(&saved.state);
    if verbose > 0 {
        eprintln!("[restart] recovery end [{}]", unix_micros());
    }
    found
        .map(|_: Recovered| ())
        .map_err(|why| io::Error::other(format!("[restart] {why}")))
}

/// memcached's `sec.usec` stamp (microseconds not zero-padded, as there).
fn unix_micros() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{}", now.as_secs(), now.subsec_micros())
}

/// Writes the arena to its file and `PATH.meta` beside it, after a
/// graceful stop.
///
/// The order makes a kill or a power cut at any step harmless: the arena's
/// pages are on disk before any metadata names them; the metadata is
/// written whole under a temporary name and synced, and only then renamed
/// over `PATH.meta`, whose directory is synced so that the rename itself
/// lasts. The start deleted the previous `PATH.meta`, so a save cut short
/// leaves none (the next start is clean) and a finished one leaves a
/// complete file -- never the truncated file that an in-place write leaves
/// (memcached's, which the next start then refuses, again and again).
pub(crate) fn save(path: &str, cache: &mut Cache, settings: &Settings) -> io::Result<()> {
    // Values on flash first: the headers the arena keeps point at them.
    let ext = cache.ext_flush_for_restart()?;
    cache.slabs.arena.sync()?;
    let text = render(settings, cache, ext.as_ref());
    let meta = meta_path(path);
    let tmp = tmp_path(path);
    if let Err(e) = write_synced(&tmp, text.as_bytes()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &meta)?;
    sync_parent(&meta)
}

/// Where the metadata is written before it is renamed into place: beside
/// it, so the rename stays within one filesystem.
fn tmp_path(path: &str) -> String {
    format!("{path}.meta.tmp")
}

/// Creates `tmp` afresh and writes `bytes` to it, synced. A leftover of
/// an earlier save is removed first; the new file is created exclusively,
/// so a symlink planted under its name (the memory file often lives in a
/// shared directory such as `/dev/shm` or `/tmp`) is never followed. It is
/// readable by its owner only, as memcached's is.
fn write_synced(tmp: &str, bytes: &[u8]) -> io::Result<()> {
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Syncs the directory holding `file`, so that a rename into it survives
/// a crash of the machine.
fn sync_parent(file: &str) -> io::Result<()> {
    let dir = match std::path::Path::new(file).parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    File::open(dir)?.sync_all()
}

// ----- the metadata text ---------------------------------------------------

/// Builds `T` and `K` lines.
#[derive(Default)]
struct MetaText(String);

impl MetaText {
    fn tag(&mut self, name: &str) {
        let _ = writeln!(self.0, "T{name}");
    }

    fn kv(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "K{key} {value}");
    }

    /// The text, closed by its checksum line.
    fn finish(self) -> String {
        let sum = checksum(self.0.as_bytes());
        format!("{}C{sum:016x}\n", self.0)
    }
}

fn render(settings: &Settings, cache: &mut Cache, ext: Option<&SavedPages>) -> String {
    let state = cache.save_state();
    let clock = &cache.clock;
    let yes = |b: bool| if b { "true" } else { "false" };
    let mut m = MetaText::default();
    // memcached's keys, in its order.
    m.tag("main");
    m.kv("slab_config", &settings.slab_config);
    m.kv("maxbytes", settings.max_bytes);
    m.kv("chunk_size", settings.chunk_size);
    m.kv("item_size_max", settings.item_size_max);
    m.kv("slab_chunk_size_max", settings.slab_chunk_size_max);
    m.kv("slab_page_size", settings.slab_page_size);
    m.kv("use_cas", yes(settings.use_cas));
    m.kv("slab_reassign", yes(settings.slab_reassign));
    m.kv("current_time", clock.now);
    m.kv("process_started", clock.process_started);
    m.kv("stop_time", crate::items::clock::Clock::unix_now());
    m.kv("current_cas", state.cas_id);
    m.kv("oldest_cas", state.oldest_cas);
    m.kv("logger_gid", 0);
    m.kv("hashpower", state.hashpower);
    m.kv("oldest_live", state.oldest_live);
    m.kv(
        "mmap_oldbase",
        format_args!("{:#x}", cache.slabs.arena.base_address()),
    );
    // What only this server keeps outside the arena.
    m.tag("arena");
    m.kv("arena_bytes", cache.slabs.arena.len());
    render_slabs(&mut m, &state.slabs);
    for (id, l) in state.lrus.iter().enumerate().skip(1) {
        m.kv("lru", format_args!("{id} {} {} {}", l.head, l.tail, l.len));
    }
    let owners: Vec<String> = state
        .body_owners
        .iter()
        .map(|(i, o)| format!("{i}:{o}"))
        .collect();
    m.kv("body_owners", list(&owners));
    if let Some(e) = ext {
        render_ext(&mut m, settings, e);
    }
    m.finish()
}

/// The files and page geometry a saved page table belongs to.
fn ext_layout(settings: &Settings) -> String {
    let e = &settings.ext;
    let files: Vec<String> = e
        .paths
        .iter()
        .map(|p| format!("{}:{}", p.file.display(), p.page_count))
        .collect();
    format!("{} {} {}", e.page_size, e.wbuf_size, files.join(","))
}

/// extstore's page table, in the arena section (`ext_` keys).
fn render_ext(m: &mut MetaText, settings: &Settings, e: &SavedPages) {
    let join = |v: Vec<String>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    m.kv("ext_layout", ext_layout(settings));
    m.kv("ext_next_version", e.next_version);
    m.kv(
        "ext_free",
        join(e.free.iter().map(u16::to_string).collect()),
    );
    m.kv(
        "ext_buckets",
        join(
            e.buckets
                .iter()
                .map(|b| b.map_or("x".to_string(), |p| p.to_string()))
                .collect(),
        ),
    );
    m.kv(
        "ext_file_lens",
        join(e.file_lens.iter().map(u64::to_string).collect()),
    );
    for p in &e.pages {
        let flags = u8::from(p.active) | u8::from(p.closed) << 1 | u8::from(p.free) << 2;
        m.kv(
            "ext_page",
            format_args!(
                "{} {} {} {} {} {}",
                p.version, p.obj_count, p.bytes_used, p.allocated, p.bucket, flags
            ),
        );
    }
}

/// The `ext_` keys back into a page table (None: malformed).
fn parse_ext(lines: &[(&str, &str)]) -> Option<SavedPages> {
    let list = |v: &str| -> Option<Vec<u64>> {
        if v == "-" {
            return Some(Vec::new());
        }
        v.split(',').map(|n| n.parse().ok()).collect()
    };
    let mut e = SavedPages::default();
    for &(key, val) in lines {
        match key {
            "ext_layout" => e.layout = val.to_string(),
            "ext_next_version" => e.next_version = val.parse().ok()?,
            "ext_free" => {
                e.free = list(val)?
                    .into_iter()
                    .map(|p| u16::try_from(p).ok())
                    .collect::<Option<_>>()?;
            }
            "ext_buckets" => {
                e.buckets = val
                    .split(',')
                    .map(|b| match b {
                        "x" => Some(None),
                        p => p.parse().ok().map(Some),
                    })
                    .collect::<Option<_>>()?;
            }
            "ext_file_lens" => e.file_lens = list(val)?,
            "ext_page" => {
                let n: Vec<u64> = numbers(val)?;
                let [version, obj_count, bytes_used, allocated, bucket, flags] = n[..] else {
                    return None;
                };
                e.pages.push(SavedPage {
                    version: u32::try_from(version).ok()?,
                    obj_count,
                    bytes_used,
                    allocated: u32::try_from(allocated).ok()?,
                    bucket: u8::try_from(bucket).ok()?,
                    active: flags & 1 != 0,
                    closed: flags & 2 != 0,
                    free: flags & 4 != 0,
                });
            }
            _ => return None,
        }
    }
    Some(e)
}

fn render_slabs(m: &mut MetaText, s: &SlabState) {
    m.kv("next_page", s.next_page);
    m.kv("malloced", s.malloced);
    let free: Vec<String> = s.free_pages.iter().map(|p| p.to_string()).collect();
    m.kv("free_pages", list(&free));
    let hex: String = s.page_class.iter().map(|c| format!("{c:02x}")).collect();
    m.kv("page_class", hex);
    for (id, c) in s.classes.iter().enumerate().skip(1) {
        m.kv(
            "class",
            format_args!(
                "{id} {} {} {} {} {} {}",
                c.pages, c.used_chunks, c.free_head, c.free_count, c.carve_off, c.carve_left
            ),
        );
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

/// FNV-1a, 64 bits: enough to tell a torn or edited file from a whole one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

// ----- reading it back -----------------------------------------------------

/// memcached's `restart_check`: reads and deletes `PATH.meta`, printing
/// why the cache cannot be reused when it cannot.
fn check(path: &str, settings: &Settings, shape: &Shape) -> Option<Saved> {
    let meta = meta_path(path);
    // What a save cut short left behind is never read.
    let _ = std::fs::remove_file(tmp_path(path));
    let Ok(text) = std::fs::read(&meta) else {
        eprintln!("[restart] no metadata save file, starting with a clean cache");
        return None;
    };
    let _ = std::fs::remove_file(&meta);
    if let Err(why) = first_tag(&text) {
        refuse(&why);
    }
    let saved = verify(&text).and_then(|body| parse(body, settings, shape));
    if saved.is_none() {
        eprintln!("[restart] failed to validate metadata, starting with a clean cache");
    }
    saved
}

/// memcached reads the first line before anything else and aborts unless
/// it is a section tag it knows: an empty file (which its in-place save
/// leaves when killed) stops the start. These are its messages.
fn first_tag(text: &[u8]) -> Result<(), Vec<String>> {
    let corrupt = "[restart] corrupt metadata file".to_string();
    if text.is_empty() {
        return Err(vec![
            "[restart] Failed to read a tag from metadata file".to_string(),
        ]);
    }
    let end = text.iter().position(|&b| b == b'\n').unwrap_or(text.len());
    let line = String::from_utf8_lossy(&text[..end]);
    match line.as_bytes().first() {
        Some(b'T') if matches!(&line[1..], "main" | "arena") => Ok(()),
        Some(b'T') => Err(vec![
            format!(
                "[restart] internal handler for metadata tag not found: {}:",
                &line[1..]
            ),
            corrupt,
        ]),
        Some(b'K') => Err(vec![corrupt]),
        _ => Err(vec![
            format!("[restart] invalid metadata line:\n\n{line}"),
            corrupt,
        ]),
    }
}

/// Stops the start as memcached does (its `abort()`), after its words.
/// Unlike memcached, the file was already deleted: it held nothing to
/// keep, and a supervisor's next start begins clean instead of refusing
/// again in a loop.
fn refuse(why: &[String]) -> ! {
    for line in why {
        eprintln!("{line}");
    }
    std::process::abort()
}

/// The text before a correct checksum line.
fn verify(text: &[u8]) -> Option<&str> {
    let fail = || {
        eprintln!("[restart] corrupt metadata file");
        None
    };
    let Some(body_len) = text[..text.len().saturating_sub(1)]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
    else {
        return fail();
    };
    let (body, last) = text.split_at(body_len);
    let sum = std::str::from_utf8(last)
        .ok()
        .and_then(|l| l.strip_prefix('C'))
        .and_then(|l| l.strip_suffix('\n'))
        .and_then(|h| u64::from_str_radix(h, 16).ok());
    match (sum, std::str::from_utf8(body)) {
        (Some(sum), Ok(body)) if sum == checksum(body.as_bytes()) => Some(body),
        _ => fail(),
    }
}

/// The `K` lines of one section, as (key, value).
type Lines<'a> = Vec<(&'a str, &'a str)>;

/// Splits the text into its sections' key/value lines.
fn sections(body: &str) -> Option<(Lines<'_>, Lines<'_>)> {
    let mut main = Vec::new();
    let mut arena = Vec::new();
    let mut current: Option<&mut Lines> = None;
    for line in body.lines() {
        if let Some(tag) = line.strip_prefix('T') {
            current = match tag {
                "main" => Some(&mut main),
                "arena" => Some(&mut arena),
                _ => {
                    eprintln!("[restart] internal handler for metadata tag not found: {tag}:");
                    return None;
                }
            };
        } else if let Some(kv) = line.strip_prefix('K') {
            let (k, v) = kv.split_once(' ').unwrap_or((kv, ""));
            current.as_mut()?.push((k, v));
        } else {
            eprintln!("[restart] invalid metadata line:\n\n{line}\n");
            return None;
        }
    }
    Some((main, arena))
}

fn parse(body: &str, settings: &Settings, shape: &Shape) -> Option<Saved> {
    let (main, arena) = sections(body)?;
    let mut saved = Saved {
        state: CacheState::default(),
        current_time: 0,
        process_started: 0,
        downtime: 0,
        old_base: 0,
        ext: None,
    };
    check_main(&main, settings, &mut saved)?;
    let (ext, arena): (Lines, Lines) = arena.into_iter().partition(|(k, _)| k.starts_with("ext_"));
    let corrupt = || eprintln!("[restart] corrupt metadata file");
    if parse_arena(&arena, shape, &mut saved.state).is_none() {
        corrupt();
        return None;
    }
    if !ext.is_empty() {
        let Some(e) = parse_ext(&ext) else {
            corrupt();
            return None;
        };
        saved.ext = Some(e);
    }
    Some(saved)
}

/// memcached's `_mc_meta_load_cb`: every key must parse and the settings
/// must be the ones this process runs with; the first that is not ends the
/// check with memcached's words.
fn check_main(lines: &[(&str, &str)], s: &Settings, saved: &mut Saved) -> Option<()> {
    let yes = |b: bool| if b { "true" } else { "false" };
    let mut seen = 0;
    let mut ok = true;
    for &(key, val) in lines {
        let same = |want: String| val == want;
        let good = match key {
            "mmap_oldbase" => parse_hex(val).map(|b| saved.old_base = b).is_some(),
            "maxbytes" => same(s.max_bytes.to_string()),
            "chunk_size" => same(s.chunk_size.to_string()),
            "item_size_max" => same(s.item_size_max.to_string()),
            "slab_chunk_size_max" => same(s.slab_chunk_size_max.to_string()),
            "slab_page_size" => same(s.slab_page_size.to_string()),
            "slab_config" => val == s.slab_config,
            "use_cas" => val == yes(s.use_cas),
            "slab_reassign" => val == yes(s.slab_reassign),
            "current_cas" => val.parse().map(|v| saved.state.cas_id = v).is_ok(),
            "oldest_cas" => val.parse().map(|v| saved.state.oldest_cas = v).is_ok(),
            "oldest_live" => val.parse().map(|v| saved.state.oldest_live = v).is_ok(),
            "logger_gid" => val.parse::<u64>().is_ok(),
            "current_time" => val.parse().map(|v| saved.current_time = v).is_ok(),
            "process_started" => val.parse().map(|v| saved.process_started = v).is_ok(),
            // memcached also refuses a stop in the same second as this start;
            // here only a clock that went backwards is refused.
            "stop_time" => val
                .parse::<i64>()
                .ok()
                .map(|stop| crate::items::clock::Clock::unix_now() - stop)
                .filter(|&delta| delta >= 0)
                .map(|delta| saved.downtime = delta.min(u32::MAX as i64) as u32)
                .is_some(),
            "hashpower" => val
                .parse()
                .ok()
                .filter(|&p: &u32| (1..=32).contains(&p))
                .map(|p| saved.state.hashpower = p)
                .is_some(),
            _ => {
                eprintln!("[restart] unknown/unhandled key: {key}");
                continue;
            }
        };
        seen += 1;
        if !good {
            eprintln!(
                "[restart] restart incompatible due to setting for [{key}] [old value: {val}]"
            );
            ok = false;
            break;
        }
    }
    if seen < REQUIRED_MAIN_KEYS {
        eprintln!("[restart] missing some metadata lines");
        ok = false;
    }
    ok.then_some(())
}

fn parse_hex(v: &str) -> Option<usize> {
    usize::from_str_radix(v.strip_prefix("0x").unwrap_or(v), 16).ok()
}

fn numbers<T: std::str::FromStr>(v: &str) -> Option<Vec<T>> {
    v.split(' ').map(|n| n.parse().ok()).collect()
}

/// This server's own section: the allocator's tables, the LRU ends, and
/// which full-size chunks belong to which large item.
fn parse_arena(lines: &[(&str, &str)], shape: &Shape, state: &mut CacheState) -> Option<()> {
    let mut len_ok = false;
    state.slabs.classes.push(ClassState::default());
    state.lrus.push(LruEnds::default());
    for &(key, val) in lines {
        match key {
            "arena_bytes" => len_ok = val.parse() == Ok(shape.bytes),
            "next_page" => state.slabs.next_page = val.parse().ok()?,
            "malloced" => state.slabs.malloced = val.parse().ok()?,
            "free_pages" if val == "-" => {}
            "free_pages" => {
                state.slabs.free_pages = val
                    .split(',')
                    .map(|p| p.parse().ok())
                    .collect::<Option<_>>()?;
            }
            "page_class" => state.slabs.page_class = parse_hex_bytes(val)?,
            "class" => {
                let n: Vec<usize> = numbers(val)?;
                let [
                    id,
                    pages,
                    used,
                    free_head,
                    free_count,
                    carve_off,
                    carve_left,
                ] = n[..]
                else {
                    return None;
                };
                (id == state.slabs.classes.len()).then_some(())?;
                state.slabs.classes.push(ClassState {
                    pages,
                    used_chunks: used,
                    free_head: ChunkRef::try_from(free_head).ok()?,
                    free_count,
                    carve_off,
                    carve_left,
                });
            }
            "lru" => {
                let n: Vec<usize> = numbers(val)?;
                let [id, head, tail, len] = n[..] else {
                    return None;
                };
                (id == state.lrus.len()).then_some(())?;
                state.lrus.push(LruEnds {
                    head: ChunkRef::try_from(head).ok()?,
                    tail: ChunkRef::try_from(tail).ok()?,
                    len,
                });
            }
            "body_owners" if val == "-" => {}
            "body_owners" => {
                for pair in val.split(',') {
                    let (i, o) = pair.split_once(':')?;
                    state.body_owners.push((i.parse().ok()?, o.parse().ok()?));
                }
            }
            _ => return None,
        }
    }
    let fits = len_ok
        && state.slabs.page_class.len() == shape.pages
        && state.slabs.classes.len() == shape.classes
        && state.lrus.len() == shape.classes * LRUS_PER_CLASS;
    fits.then_some(())
}

fn parse_hex_bytes(v: &str) -> Option<Vec<u8>> {
    if !v.len().is_multiple_of(2) {
        return None;
    }
    (0..v.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(v.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_catches_a_torn_or_edited_file() {
        let body = "Tmain\nKmaxbytes 1\n";
        let whole = format!("{body}C{:016x}\n", checksum(body.as_bytes()));
        assert_eq!(verify(whole.as_bytes()), Some(body));
        assert_eq!(verify(&whole.as_bytes()[..whole.len() - 5]), None);
        let edited = whole.replace("maxbytes 1", "maxbytes 2");
        assert_eq!(verify(edited.as_bytes()), None);
        assert_eq!(verify(b""), None);
    }

    fn cache_for(s: &Settings) -> (Cache, Shape) {
        // The server's own configuration, made deterministic for a test.
        let cfg = CacheConfig {
            evict_to_free: true,
            hashpower: 0,
            hash_expand: true,
            hash_seed: 1,
            ..CacheConfig::from_settings(s)
        };
        let bytes = Slabs::arena_len(&cfg.slab).unwrap();
        let shape = Shape {
            bytes,
            pages: bytes / cfg.slab.page_size,
            classes: Slabs::class_count(&cfg.slab),
        };
        (Cache::new(cfg).unwrap(), shape)
    }

    #[test]
    fn metadata_round_trips_and_a_changed_setting_is_refused() {
        let settings = Settings::default();
        let (mut cache, shape) = cache_for(&settings);
        let it = cache.alloc(b"k", 3, 0, 700_000).unwrap();
        cache.store(it, crate::items::StoreMode::Set, 0);
        let ext = SavedPages {
            layout: String::new(),
            next_version: 9,
            free: vec![3, 2],
            buckets: vec![Some(1), None, None, Some(4)],
            file_lens: vec![4 << 20],
            pages: (0..5)
                .map(|i| SavedPage {
                    version: i,
                    obj_count: 10 * i as u64,
                    bytes_used: 1000 * i as u64,
                    allocated: 2 << 20,
                    bucket: (i % 4) as u8,
                    active: i == 1,
                    closed: i == 2,
                    free: i == 3,
                })
                .collect(),
        };
        let text = render(&settings, &mut cache, Some(&ext));
        let body = verify(text.as_bytes()).unwrap();
        let saved = parse(body, &settings, &shape).unwrap();
        // The page table comes back, with the layout it was saved under.
        assert_eq!(
            saved.ext,
            Some(SavedPages {
                layout: ext_layout(&settings),
                ..ext
            })
        );
        let mut again = cache.save_state();
        again.cas_id -= 1; // this second save took one more
        assert_eq!(saved.state, again);
        assert_eq!(saved.current_time, cache.clock.now);
        assert!(saved.state.body_owners.len() == 2);

        let other = Settings {
            max_bytes: settings.max_bytes * 2,
            ..Settings::default()
        };
        assert!(parse(body, &other, &shape).is_none());
        let torn = &body[..body.len() - 40];
        assert!(parse(torn, &settings, &shape).is_none());
    }

    #[test]
    fn a_file_must_begin_with_a_known_tag() {
        assert_eq!(first_tag(b"Tmain\nKmaxbytes 1\n"), Ok(()));
        assert_eq!(first_tag(b"Tarena"), Ok(()));
        let empty = first_tag(b"").unwrap_err();
        assert_eq!(empty, ["[restart] Failed to read a tag from metadata file"]);
        let key_first = first_tag(b"Kmaxbytes 1\n").unwrap_err();
        assert_eq!(key_first, ["[restart] corrupt metadata file"]);
        let unknown = first_tag(b"Textstore\n").unwrap_err();
        assert_eq!(
            unknown[0],
            "[restart] internal handler for metadata tag not found: extstore:"
        );
        let junk = first_tag(b"\nTmain\n").unwrap_err();
        assert_eq!(
            junk,
            [
                "[restart] invalid metadata line:\n\n",
                "[restart] corrupt metadata file"
            ]
        );
    }

    #[test]
    fn the_save_replaces_a_leftover_and_never_follows_a_symlink() {
        let dir = std::env::temp_dir().join(format!("warm-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join("m.meta.tmp");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_synced(tmp.to_str().unwrap(), b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(&tmp).unwrap().is_symlink());
        write_synced(tmp.to_str().unwrap(), b"again").unwrap();
        assert_eq!(std::fs::read(&tmp).unwrap(), b"again");
        sync_parent(tmp.to_str().unwrap()).unwrap();
        sync_parent("relative-file").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_tables_round_trip() {
        assert_eq!(parse_hex_bytes("00ff27"), Some(vec![0, 255, 39]));
        assert_eq!(parse_hex_bytes("0"), None);
        assert_eq!(parse_hex("0x7f00"), Some(0x7f00));
    }
}
