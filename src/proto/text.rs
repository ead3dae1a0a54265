//! The classic ascii protocol: one request line in, replies appended to the
//! connection's output. Every reply string, error text and edge case follows
//! memcached 1.6's `proto_text.c`; the dispatch below mirrors its shape
//! (first letter, then exact name, then token counts) so that malformed
//! lines fail the same way.

use super::find_byte;
use super::request::{
    Ctx, KEY_MAX_LENGTH, Next, OUTPUT_HIGH_WATER, Pending, Reply, positive_exptime, resp_cap,
    set_noreply_maybe,
};
use super::tokens::Tokens;
use super::{meta, tuning, watch};
use crate::items::{
    AllocError, Cache, Delta, ExtFetch, KeyHint, StoreMode, StoreResult, format_u64,
};
use crate::numbers::{safe_strtod, safe_strtol, safe_strtoul, safe_strtoull};
use crate::settings::VERSION;
use crate::stats;
use std::io::Write as _;

/// A get naming a too-long key discards every reply not yet sent, then
/// sends only this.
pub(crate) const GET_KEY_TOO_LONG: &[u8] = b"CLIENT_ERROR bad command line format\r\n";

/// Handles one request line (without its line ending). `out[..written]`
/// holds replies memcached would already have sent; the rest are still
/// queued (see `process_get` for why that matters).
pub(crate) fn process_line(
    ctx: &mut Ctx,
    line: &[u8],
    out: &mut Vec<u8>,
    written: usize,
    resume: usize,
) -> Next {
    // memcached treats the line as a C string.
    let line = match find_byte(0, line) {
        Some(n) => &line[..n],
        None => line,
    };
    let trace = ctx.settings.verbose > 1;
    ctx.cache.verbose = ctx.settings.verbose;
    if trace && resume == 0 && !ctx.rerun {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "<{} ", ctx.fd);
        let _ = err.write_all(line);
        let _ = err.write_all(b"\n");
    }
    let mut r = Reply {
        out,
        written,
        noreply: false,
        trace,
        fd: ctx.fd,
    };
    // The retrievals read their keys straight from the line: splitting it
    // into tokens first would only be thrown away.
    if let Some((return_cas, touch, args)) = retrieval(line) {
        if args.iter().all(|&b| b == b' ') {
            return r.line("ERROR");
        }
        return process_get(ctx, args, &mut r, return_cas, touch, resume);
    }
    let t = Tokens::new(line);
    let n = t.ntokens();
    let cmd = t.get(0);
    if n < 2 || cmd.len() < 2 {
        return r.line("ERROR");
    }
    let want = |lo: usize, hi: usize| n >= lo && n <= hi;
    match cmd[0] {
        b'm' if cmd.len() == 2 => match cmd[1] {
            b'n' => {
                r.line("MN");
                Next::FlushAfterLine
            }
            b'g' => meta::process_mget(ctx, &t, &mut r),
            b's' => meta::process_mset(ctx, &t, &mut r),
            b'd' => meta::process_mdelete(ctx, &t, &mut r),
            b'a' => meta::process_marithmetic(ctx, &t, &mut r),
            b'e' => meta::process_meta_debug(ctx, &t, &mut r),
            _ => r.line("ERROR"),
        },
        // The retrievals were served above.
        b'g' => r.line("ERROR"),
        b's' => match cmd {
            b"set" if want(6, 7) => process_update(ctx, &t, &mut r, StoreMode::Set),
            b"stats" => process_stats(ctx, &t, &mut r),
            b"shutdown" => process_shutdown(ctx, &t, &mut r),
            b"slabs" => process_slabs(ctx, &t, &mut r),
            _ => r.line("ERROR"),
        },
        b'a' => match cmd {
            b"add" if want(6, 7) => process_update(ctx, &t, &mut r, StoreMode::Add),
            b"append" if want(6, 7) => process_update(ctx, &t, &mut r, StoreMode::Append),
            _ => r.line("ERROR"),
        },
        b'c' => match cmd {
            b"cas" if want(7, 8) => process_update(ctx, &t, &mut r, StoreMode::Cas),
            b"cache_memlimit" if want(3, 4) => tuning::process_memlimit(ctx, &t, &mut r),
            _ => r.line("ERROR"),
        },
        b'i' => match cmd {
            b"incr" if want(4, 5) => process_arithmetic(ctx, &t, &mut r, true),
            _ => r.line("ERROR"),
        },
        b'd' => match cmd {
            b"delete" if want(3, 5) => process_delete(ctx, &t, &mut r),
            b"decr" if want(4, 5) => process_arithmetic(ctx, &t, &mut r, false),
            _ => r.line("ERROR"),
        },
        b't' => match cmd {
            b"touch" if want(4, 5) => process_touch(ctx, &t, &mut r),
            _ => r.line("ERROR"),
        },
        _ => match cmd {
            b"prepend" if want(6, 7) => process_update(ctx, &t, &mut r, StoreMode::Prepend),
            b"replace" if want(6, 7) => process_update(ctx, &t, &mut r, StoreMode::Replace),
            b"bget" if n >= 3 => {
                process_get(ctx, after_command(line), &mut r, false, false, resume)
            }
            b"flush_all" if want(2, 4) => process_flush_all(ctx, &t, &mut r),
            b"version" => r.line(&format!("VERSION {VERSION}")),
            b"quit" => Next::CloseAfterWrite,
            b"verbosity" if want(3, 4) => process_verbosity(ctx, &t, &mut r),
            b"watch" => watch::process_watch(ctx, &t, &mut r),
            b"lru_crawler" => process_lru_crawler(ctx, &t, &mut r),
            b"extstore" => process_extstore(ctx, &t, &mut r),
            b"lru" if n >= 3 => tuning::process_lru(ctx, &t, &mut r),
            #[cfg(feature = "tls")]
            b"refresh_certs" => process_refresh_certs(ctx, &t, &mut r),
            _ if t.get(n - 2).starts_with(b"HTTP/") => Next::Close,
            _ => r.line("ERROR"),
        },
    }
}

fn process_get(
    ctx: &mut Ctx,
    args: &[u8],
    r: &mut Reply,
    return_cas: bool,
    touch: bool,
    resume: usize,
) -> Next {
    let mut words = Words::new(args);
    let mut exptime = None;
    if touch {
        let arg = words.next().unwrap_or(&[]);
        match safe_strtol(arg) {
            Some(e) => exptime = Some(ctx.cache.clock.realtime(positive_exptime(e))),
            None => return r.line("CLIENT_ERROR invalid exptime argument"),
        }
        if ctx.cache.writes_refused && resume == 0 {
            return r.refused();
        }
    }
    // Each key past the first needs a response object of its own.
    let room = ctx.resp_room;
    // The usual get names one key: nothing to stop at, and its line is
    // not walked twice.
    let (keys, nkeys, stop) = match words.clone().only_word() {
        Some(key) if key.len() <= KEY_MAX_LENGTH => (Keys::One(Some(key)), 1, None),
        _ => {
            let (nkeys, stop) = first_stop(words.clone(), room);
            (Keys::Many(words), nkeys, stop)
        }
    };
    if let (0, Some(stop)) = (resume, stop) {
        // memcached looks up the keys before the one it stopped at
        // (counted, bumped, traced), then discards every reply it has not
        // yet sent -- this get's hits and the replies of earlier pipelined
        // commands alike -- and sends only the error.
        for key in keys.take(stop.at) {
            let mark = r.out.len();
            ctx.cache.ext_abort(key);
            get_one(ctx, key, r, return_cas, exptime);
            r.out.truncate(mark);
        }
        if r.trace {
            eprintln!(">{} END", r.fd);
        }
        r.out.truncate(r.written);
        // Every response object the connection held went back; the error
        // takes one.
        ctx.resp_room = resp_cap(ctx.settings).saturating_sub(1);
        if !stop.too_long {
            ctx.stats.response_obj_oom += 1;
            return r.line("SERVER_ERROR out of memory writing get response");
        }
        return r.line("CLIENT_ERROR bad command line format");
    }
    // A paused get keeps the objects of the keys it has answered: the
    // first one was taken again for the line, the rest are taken here.
    ctx.resp_room = room.saturating_sub(nkeys.saturating_sub(1));
    let mut ahead = Lookahead::new(ctx.cache, &keys, resume);
    for (i, key) in keys.enumerate().skip(resume) {
        ahead.step(ctx.cache);
        if r.out.len() > OUTPUT_HIGH_WATER && i > resume {
            return Next::Suspend(i);
        }
        match ctx.cache.ext_prepare(key, ctx.fd) {
            ExtFetch::Wait => {
                // Start the reads of the keys after it too: they come back
                // together instead of one wait per key.
                for later in words_after(args, touch, i + 1) {
                    ctx.cache.ext_prepare(later, ctx.fd);
                }
                return Next::AwaitExt(i);
            }
            ExtFetch::Oom => {
                // As memcached: the replies not yet sent go, the error
                // takes their place.
                if r.trace {
                    eprintln!(">{} END", r.fd);
                }
                r.out.truncate(r.written);
                ctx.resp_room = resp_cap(ctx.settings).saturating_sub(1);
                return r.line("SERVER_ERROR out of memory writing get response");
            }
            ExtFetch::Ready => {}
        }
        get_one(ctx, key, r, return_cas, exptime);
    }
    if r.trace {
        eprintln!(">{} END", r.fd);
    }
    r.out.extend_from_slice(b"END\r\n");
    Next::Flush
}

/// A multi-key get's lookups wait on memory, for the bucket and then the
/// item: while one key is looked up, the next one's item and the one after
/// that's bucket start loading, so each wait overlaps the work on the keys
/// before it. A get of one key has nothing to overlap and skips this.
struct Lookahead<'a> {
    /// The keys after the next one; `None` for a get of one key.
    rest: Option<Keys<'a>>,
    /// The next key's hint: its bucket is loading.
    next: Option<KeyHint>,
}

impl<'a> Lookahead<'a> {
    /// For the keys from `first` on.
    fn new(cache: &Cache, keys: &Keys<'a>, first: usize) -> Self {
        let Keys::Many(_) = keys else {
            return Lookahead {
                rest: None,
                next: None,
            };
        };
        let mut rest = keys.clone();
        let next = rest.nth(first + 1).map(|key| cache.prefetch_key(key));
        Lookahead {
            rest: Some(rest),
            next,
        }
    }

    /// Before looking up a key: the next one's item, the one after's bucket.
    #[inline]
    fn step(&mut self, cache: &Cache) {
        let Some(rest) = &mut self.rest else {
            return;
        };
        if let Some(hint) = self.next.take() {
            cache.prefetch_item(hint);
        }
        self.next = rest.next().map(|key| cache.prefetch_key(key));
    }
}

/// A hint from the connection while it runs one request line: when the
/// next one is there already and is a one-key `get` or `gets` (a
/// pipelined batch), its key's hash bucket starts loading now, to be in
/// the CPU's cache when its turn comes. Only a guess at the key: a wrong
/// one costs a wasted hint, never a wrong answer.
/// Two lines ahead the bucket is hinted, one line ahead (its bucket
/// hinted by the line before) the item.
#[inline]
pub(crate) fn prefetch_next_get(cache: &Cache, following: &[u8]) {
    let Some((key, after)) = one_key_get(following) else {
        return;
    };
    // Its bucket was hinted by the line before (hinting it again is cheap).
    cache.prefetch_item(cache.prefetch_key(key));
    if let Some((key, _)) = one_key_get(after) {
        cache.prefetch_key(key);
    }
}

/// The key of a `get KEY` or `gets KEY` line at the start of `buf`, and
/// what follows that line (only when the key ends within a key's length
/// and the line's end is in sight: a guess, never parsed for real).
#[inline]
fn one_key_get(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = match buf {
        [b'g', b'e', b't', b' ', rest @ ..] => rest,
        [b'g', b'e', b't', b's', b' ', rest @ ..] => rest,
        _ => return None,
    };
    let window = &rest[..rest.len().min(KEY_MAX_LENGTH + 2)];
    let end = window
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))?;
    let nl = end + find_byte(b'\n', &window[end..])?;
    (end > 0).then(|| (&rest[..end], &rest[nl + 1..]))
}

/// `get`, `gets`, `gat` or `gats` as the line's first word: whether it
/// returns CAS values, whether it touches, and the rest of the line.
fn retrieval(line: &[u8]) -> Option<(bool, bool, &[u8])> {
    let start = line.iter().position(|&b| b != b' ')?;
    let word = &line[start..];
    let end = find_byte(b' ', word).unwrap_or(word.len());
    let args = &word[end..];
    match &word[..end] {
        b"get" => Some((false, false, args)),
        b"gets" => Some((true, false, args)),
        b"gat" => Some((false, true, args)),
        b"gats" => Some((true, true, args)),
        _ => None,
    }
}

/// The line after its first word.
fn after_command(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|&b| b != b' ').unwrap_or(line.len());
    let word = &line[start..];
    &word[find_byte(b' ', word).unwrap_or(word.len())..]
}

/// The keys of a get's arguments from index `from` on.
fn words_after(args: &[u8], touch: bool, from: usize) -> impl Iterator<Item = &[u8]> {
    Words::new(args).skip(usize::from(touch) + from)
}

/// The words of a line, split at runs of spaces (as memcached's
/// tokenizer splits), found with plain byte loops: the get path walks its
/// line this way for every key.
#[derive(Clone)]
struct Words<'a> {
    rest: &'a [u8],
}

impl<'a> Words<'a> {
    fn new(line: &'a [u8]) -> Words<'a> {
        Words { rest: line }
    }
}

impl<'a> Words<'a> {
    /// The next word, if no other follows it.
    fn only_word(mut self) -> Option<&'a [u8]> {
        let word = self.next()?;
        self.rest.iter().all(|&b| b == b' ').then_some(word)
    }
}

/// A get's keys: the one it names, or its words.
#[derive(Clone)]
enum Keys<'a> {
    One(Option<&'a [u8]>),
    Many(Words<'a>),
}

impl<'a> Iterator for Keys<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Keys::One(key) => key.take(),
            Keys::Many(words) => words.next(),
        }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest;
        let mut start = 0;
        while start < rest.len() && rest[start] == b' ' {
            start += 1;
        }
        let end = start + find_byte(b' ', &rest[start..]).unwrap_or(rest.len() - start);
        self.rest = &rest[end..];
        (start < end).then(|| &rest[start..end])
    }
}

/// Where a get stops short: the key at index `at` is too long, or there
/// is no response object left for it.
struct Stop {
    at: usize,
    too_long: bool,
}

/// The number of keys, and the first one memcached would stop at given
/// `room` response objects beyond the first key's.
fn first_stop<'k>(keys: impl Iterator<Item = &'k [u8]>, room: usize) -> (usize, Option<Stop>) {
    let mut n = 0;
    for (i, key) in keys.enumerate() {
        if i > room {
            return (
                i,
                Some(Stop {
                    at: i,
                    too_long: false,
                }),
            );
        }
        if key.len() > KEY_MAX_LENGTH {
            return (
                i,
                Some(Stop {
                    at: i,
                    too_long: true,
                }),
            );
        }
        n = i + 1;
    }
    (n, None)
}

fn get_one(ctx: &mut Ctx, key: &[u8], r: &mut Reply, return_cas: bool, touch: Option<u32>) {
    // gat/gats count as touches, not as gets.
    if touch.is_some() {
        ctx.stats.touch_cmds += 1;
    } else {
        ctx.stats.get_cmds += 1;
    }
    let found = ctx.cache.get(key, touch);
    if ctx.settings.detail_enabled {
        let delim = ctx.settings.prefix_delimiter;
        ctx.stats.prefixes.record_get(key, delim, found.is_some());
    }
    // A flash item whose record is gone reads as a miss (its header goes).
    let flash = found
        .filter(|&it| ctx.cache.is_ext(it))
        .map(|it| ctx.cache.ext_take(it, ctx.fd));
    let Some(it) = found.filter(|_| !matches!(flash, Some(None))) else {
        if touch.is_some() {
            ctx.stats.touch_misses += 1;
        } else {
            ctx.stats.get_misses += 1;
        }
        return;
    };
    if touch.is_some() {
        let class = ctx.cache.class_of(it) as usize;
        ctx.cache.stats.classes[class].touch_hits += 1;
    } else {
        ctx.cache.count_get_hit(it);
    }
    let v = ctx.cache.view(it);
    let mut num = [0u8; 20];
    let out = &mut *r.out;
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    out.extend_from_slice(format_u64(v.flags() as u64, &mut num));
    out.push(b' ');
    out.extend_from_slice(format_u64(v.nbytes() as u64, &mut num));
    if return_cas {
        out.push(b' ');
        out.extend_from_slice(format_u64(v.cas(), &mut num));
    }
    out.extend_from_slice(b"\r\n");
    match &flash {
        Some(Some(value)) => out.extend_from_slice(value.bytes()),
        _ => {
            for seg in ctx.cache.value_segments(it) {
                out.extend_from_slice(seg);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    if let Some(Some(value)) = flash {
        let rate = ctx.settings.ext.recache_rate;
        ctx.cache
            .ext_recache(key, value.bytes(), rate, value.fetched, ctx.fd);
        ctx.cache.ext_recycle(value);
    }
    if r.trace {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, ">{} sending key ", r.fd);
        let _ = err.write_all(key);
        let _ = err.write_all(b"\n");
    }
}

fn process_update(ctx: &mut Ctx, t: &Tokens, r: &mut Reply, mode: StoreMode) -> Next {
    set_noreply_maybe(t, r);
    let key = t.get(1);
    if key.len() > KEY_MAX_LENGTH {
        return r.line("CLIENT_ERROR bad command line format");
    }
    let (Some(flags), Some(exptime), Some(vlen)) = (
        safe_strtoul(t.get(2)),
        safe_strtol(t.get(3)),
        safe_strtol(t.get(4)),
    ) else {
        return r.line("CLIENT_ERROR bad command line format");
    };
    let exptime = ctx.cache.clock.realtime(positive_exptime(exptime));
    let mut cas = 0;
    if mode == StoreMode::Cas {
        match safe_strtoull(t.get(5)) {
            Some(c) => cas = c,
            None => return r.line("CLIENT_ERROR bad command line format"),
        }
    }
    if !(0..=i32::MAX - 2).contains(&vlen) {
        return r.line("CLIENT_ERROR bad command line format");
    }
    let nbytes = vlen as usize;
    if ctx.cache.writes_refused {
        r.refused();
        return Next::Swallow(nbytes + 2);
    }
    if ctx.settings.detail_enabled {
        let delim = ctx.settings.prefix_delimiter;
        ctx.stats.prefixes.record_set(key, delim);
    }
    match ctx.cache.alloc(key, flags, exptime, nbytes) {
        Ok(item) => Next::ReadValue(Pending {
            item,
            mode,
            cas,
            noreply: r.noreply,
            nbytes,
            meta: None,
        }),
        Err(e) => {
            if e == AllocError::TooLarge {
                ctx.stats.store_too_large += 1;
                r.line("SERVER_ERROR object too large for cache");
            } else {
                ctx.stats.store_no_memory += 1;
                r.line("SERVER_ERROR out of memory storing object");
            }
            if ctx.settings.verbose > 2 {
                // memcached enters its swallow state before the lookup
                // below, and its -vvv trace shows it in that order.
                eprintln!("{}: going from conn_parse_cmd to conn_new_cmd", ctx.fd);
                eprintln!("{}: going from conn_new_cmd to conn_swallow", ctx.fd);
            }
            ctx.cache
                .log_refused_store(key, Some(mode), e == AllocError::TooLarge);
            // A set that cannot be stored must not leave the old value
            // readable.
            if mode == StoreMode::Set {
                ctx.cache.delete_quietly(key);
            }
            Next::Swallow(nbytes + 2)
        }
    }
}

/// Finishes a storage command once its data block (and the two bytes after
/// it) have arrived.
pub(crate) fn complete_store(ctx: &mut Ctx, p: Pending, crlf_ok: bool, out: &mut Vec<u8>) {
    let written = out.len();
    let mut r = Reply {
        out,
        written,
        noreply: p.noreply,
        trace: ctx.settings.verbose > 1,
        fd: ctx.fd,
    };
    if let Some(echo) = p.meta {
        return meta::complete_mset(ctx, p, echo, crlf_ok, &mut r);
    }
    if !crlf_ok {
        ctx.cache.count_set(p.item);
        ctx.cache.free_unlinked(p.item);
        r.line("CLIENT_ERROR bad data chunk");
        return;
    }
    let reply = match ctx.cache.store(p.item, p.mode, p.cas) {
        StoreResult::Stored => "STORED",
        StoreResult::Exists => "EXISTS",
        StoreResult::NotFound => {
            ctx.stats.cas_misses += 1;
            "NOT_FOUND"
        }
        StoreResult::NotStored => "NOT_STORED",
    };
    r.line(reply);
}

fn process_arithmetic(ctx: &mut Ctx, t: &Tokens, r: &mut Reply, incr: bool) -> Next {
    set_noreply_maybe(t, r);
    let key = t.get(1);
    if key.len() > KEY_MAX_LENGTH {
        return r.line("CLIENT_ERROR bad command line format");
    }
    let Some(delta) = safe_strtoull(t.get(2)) else {
        return r.line("CLIENT_ERROR invalid numeric delta argument");
    };
    if ctx.cache.writes_refused {
        return r.refused();
    }
    match ctx.cache.add_delta(key, incr, delta) {
        Delta::Value(v) => {
            let mut num = [0u8; 20];
            let text = format_u64(v, &mut num);
            r.line(std::str::from_utf8(text).unwrap())
        }
        Delta::NonNumeric => r.line("CLIENT_ERROR cannot increment or decrement non-numeric value"),
        Delta::NoMemory => r.line("SERVER_ERROR out of memory"),
        Delta::NotFound => {
            if incr {
                ctx.stats.incr_misses += 1;
            } else {
                ctx.stats.decr_misses += 1;
            }
            r.line("NOT_FOUND")
        }
    }
}

fn process_delete(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    let n = t.ntokens();
    if n > 3 {
        let hold_is_zero = t.get(2) == b"0";
        let sets_noreply = set_noreply_maybe(t, r);
        let valid =
            (n == 4 && (hold_is_zero || sets_noreply)) || (n == 5 && hold_is_zero && sets_noreply);
        if !valid {
            return r.line("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]");
        }
    }
    let key = t.get(1);
    if key.len() > KEY_MAX_LENGTH {
        return r.line("CLIENT_ERROR bad command line format");
    }
    if ctx.cache.writes_refused {
        return r.refused();
    }
    if ctx.settings.detail_enabled {
        let delim = ctx.settings.prefix_delimiter;
        ctx.stats.prefixes.record_delete(key, delim);
    }
    if ctx.cache.delete(key) {
        r.line("DELETED")
    } else {
        ctx.stats.delete_misses += 1;
        r.line("NOT_FOUND")
    }
}

fn process_touch(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    set_noreply_maybe(t, r);
    let key = t.get(1);
    if key.len() > KEY_MAX_LENGTH {
        return r.line("CLIENT_ERROR bad command line format");
    }
    let Some(e) = safe_strtol(t.get(2)) else {
        return r.line("CLIENT_ERROR invalid exptime argument");
    };
    if ctx.cache.writes_refused {
        return r.refused();
    }
    let exptime = ctx.cache.clock.realtime(positive_exptime(e));
    ctx.stats.touch_cmds += 1;
    if ctx.cache.touch(key, exptime) {
        r.line("TOUCHED")
    } else {
        ctx.stats.touch_misses += 1;
        r.line("NOT_FOUND")
    }
}

fn process_flush_all(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    set_noreply_maybe(t, r);
    ctx.stats.flush_cmds += 1;
    if !ctx.settings.flush_enabled {
        return r.line("CLIENT_ERROR flush_all not allowed");
    }
    let mut delay = 0;
    if t.ntokens() != if r.noreply { 3 } else { 2 } {
        match safe_strtol(t.get(1)) {
            Some(d) => delay = d,
            None => return r.line("CLIENT_ERROR invalid exptime argument"),
        }
    }
    if ctx.cache.writes_refused {
        return r.refused();
    }
    ctx.cache.flush_all(delay);
    r.line("OK")
}

fn process_verbosity(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    set_noreply_maybe(t, r);
    let Some(level) = safe_strtoul(t.get(1)) else {
        return r.line("CLIENT_ERROR bad command line format");
    };
    ctx.settings.verbose = level.min(2) as u8;
    // The new level already applies to this reply's trace.
    r.trace = ctx.settings.verbose > 1;
    r.line("OK")
}

/// `refresh_certs`: the certificates read again for new connections. A
/// failure's text is memcached's, CRLF included, sent even under noreply;
/// a server without `-Z` has no context to refresh.
#[cfg(feature = "tls")]
fn process_refresh_certs(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    set_noreply_maybe(t, r);
    let refreshed = match ctx.tls.as_deref_mut() {
        Some(server) => server.refresh(&ctx.settings.tls),
        None => Err("Error TLS not enabled\r\n".to_string()),
    };
    match refreshed {
        Ok(()) => {
            ctx.stats.tls_cert_refreshed = ctx.cache.now();
            r.line("OK")
        }
        Err(text) => {
            r.noreply = false;
            r.out.extend_from_slice(text.as_bytes());
            Next::Continue
        }
    }
}

fn process_shutdown(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    if !ctx.settings.shutdown_command {
        return r.line("ERROR: shutdown not enabled");
    }
    match t.ntokens() {
        2 => Next::Shutdown(false),
        3 if t.get(1) == b"graceful" => Next::Shutdown(true),
        _ => r.line("CLIENT_ERROR invalid shutdown mode"),
    }
}

fn process_stats(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    let n = t.ntokens();
    let report: Vec<u8> = match t.get(1) {
        _ if n == 2 => stats::general(ctx.stats, ctx.cache, ctx.settings).into_bytes(),
        b"reset" => {
            ctx.stats.reset();
            ctx.cache.reset_stats();
            return r.line("RESET");
        }
        b"detail" => {
            let sub = if n < 4 { &b""[..] } else { t.get(2) };
            match sub {
                b"on" | b"off" => {
                    ctx.settings.detail_enabled = sub == b"on";
                    return r.line("OK");
                }
                b"dump" => ctx.stats.prefixes.dump(),
                _ => return r.line("CLIENT_ERROR usage: stats detail on|off|dump"),
            }
        }
        b"settings" => stats::settings(ctx.settings).into_bytes(),
        b"cachedump" => {
            if !ctx.settings.dump_enabled {
                return r.line("CLIENT_ERROR stats cachedump not allowed");
            }
            if n < 5 {
                return r.line("CLIENT_ERROR bad command line");
            }
            let (Some(id), Some(limit)) = (safe_strtoul(t.get(2)), safe_strtoul(t.get(3))) else {
                return r.line("CLIENT_ERROR bad command line format");
            };
            if id >= crate::slab::classes::MAX_CLASSES as u32 {
                return r.line("CLIENT_ERROR Illegal slab id");
            }
            stats::cachedump(ctx.cache, id, limit)
        }
        b"slabs" => stats::slabs(ctx.cache).into_bytes(),
        b"extstore" => stats::extstore(ctx.cache).into_bytes(),
        // Needs every connection: the reactor writes it.
        b"conns" => return Next::StatsConns,
        b"items" => stats::items(ctx.cache, ctx.settings).into_bytes(),
        b"sizes" => stats::sizes(ctx.cache).into_bytes(),
        // memcached answers these two without a closing END.
        b"sizes_enable" => {
            if ctx.cache.enable_sizes() {
                b"STAT sizes_status enabled\r\n".to_vec()
            } else {
                b"STAT sizes_status error\r\nSTAT sizes_error cas_support_disabled\r\n".to_vec()
            }
        }
        b"sizes_disable" => {
            ctx.cache.sizes = None;
            b"STAT sizes_status disabled\r\n".to_vec()
        }
        _ => return r.line("ERROR"),
    };
    // Reports are written without a trace line, as memcached writes them.
    r.out.extend_from_slice(&report);
    Next::Continue
}

fn process_lru_crawler(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    use crate::items::crawler::{CrawlKind, CrawlStart, parse_classes};
    let n = t.ntokens();
    let sub = t.get(1);
    match (n, sub) {
        (4, b"crawl") | (4, b"metadump") => {
            if !ctx.settings.lru_crawler {
                return r.line("CLIENT_ERROR lru crawler disabled");
            }
            let dump = sub == b"metadump";
            if dump && !ctx.settings.dump_enabled {
                return r.line("ERROR metadump not allowed");
            }
            if dump && r.out.len() > r.written {
                return r.line("ERROR cannot pipeline other commands before metadump");
            }
            let Some(classes) = parse_classes(t.get(2), ctx.cache.slabs.largest()) else {
                return r.line("BADCLASS invalid class id");
            };
            if !ctx.cache.crawler_running {
                return r.line("ERROR an unknown error happened");
            }
            let (kind, limit) = if dump {
                (CrawlKind::Metadump { fd: ctx.fd }, 0)
            } else {
                (CrawlKind::Expired, ctx.settings.lru_crawler_tocrawl)
            };
            match ctx.cache.crawl_start(&classes, kind, limit) {
                CrawlStart::Ok if dump => Next::Dump,
                CrawlStart::Ok => r.line("OK"),
                CrawlStart::Busy => r.line("BUSY currently processing crawler request"),
                CrawlStart::NotStarted => r.line("NOTSTARTED no items to crawl"),
            }
        }
        (4, b"tocrawl") => match safe_strtoul(t.get(2)) {
            Some(v) => {
                ctx.settings.lru_crawler_tocrawl = v;
                r.line("OK")
            }
            None => r.line("CLIENT_ERROR bad command line format"),
        },
        (4, b"sleep") => match safe_strtoul(t.get(2)) {
            Some(v) if v > 1_000_000 => r.line("CLIENT_ERROR sleep must be one second or less"),
            Some(v) => {
                ctx.settings.lru_crawler_sleep = v;
                r.line("OK")
            }
            None => r.line("CLIENT_ERROR bad command line format"),
        },
        // As memcached: `enable` fails while the crawler runs; `disable`
        // stops it (a crawl under way finishes) and `stats settings` then
        // says `lru_crawler no`, crawls are refused until `enable`.
        (3, b"enable") if ctx.settings.lru_crawler => {
            r.line("ERROR failed to start lru crawler thread")
        }
        (3, b"enable") => {
            ctx.settings.lru_crawler = true;
            ctx.cache.crawler_running = true;
            r.line("OK")
        }
        (3, b"disable") => {
            ctx.settings.lru_crawler = false;
            ctx.cache.crawler_running = false;
            r.line("OK")
        }
        _ => r.line("ERROR"),
    }
}

fn process_slabs(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    let n = t.ntokens();
    if n == 5 && t.get(1) == b"reassign" {
        if !ctx.settings.slab_reassign {
            return r.line("CLIENT_ERROR slab reassignment disabled");
        }
        let (Some(src), Some(dst)) = (safe_strtol(t.get(2)), safe_strtol(t.get(3))) else {
            return r.line("CLIENT_ERROR bad command line format");
        };
        let result = ctx.cache.reassign(src, dst);
        return r.line(result.reply());
    }
    if n >= 4 && t.get(1) == b"automove" {
        set_noreply_maybe(t, r);
        if t.get(2) == b"ratio" {
            match safe_strtod(t.get(3)) {
                Some(v) if n >= 5 => ctx.settings.tuning.slab_automove_ratio = v,
                _ => return r.line("ERROR"),
            }
        } else {
            match safe_strtoul(t.get(2)) {
                Some(level @ 0..=2) => ctx.settings.slab_automove = level as u8,
                Some(_) => return r.line("ERROR"),
                None => return r.line("CLIENT_ERROR bad command line format"),
            }
        }
        return r.line("OK");
    }
    r.line("ERROR")
}

/// memcached's `extstore` command: changes an `ext_*` setting at run time
/// (`free_memchunks` is accepted and ignored, as in 1.6.18).
fn process_extstore(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    set_noreply_maybe(t, r);
    let e = &mut ctx.settings.ext;
    let (what, value) = (t.get(1), t.get(2));
    let num = |v: &mut u32| safe_strtoul(value).map(|n| *v = n).is_some();
    let ok = t.ntokens() >= 4
        && match what {
            b"free_memchunks" => {
                t.ntokens() > 4
                    && safe_strtoul(value).is_some_and(|c| c < 64)
                    && safe_strtoul(t.get(3)).is_some()
            }
            b"item_size" => num(&mut e.item_size),
            b"item_age" => num(&mut e.item_age),
            b"low_ttl" => num(&mut e.low_ttl),
            b"recache_rate" => num(&mut e.recache_rate),
            b"compact_under" => num(&mut e.compact_under),
            b"drop_under" => num(&mut e.drop_under),
            b"max_sleep" => num(&mut e.max_sleep),
            b"max_frag" => safe_strtod(value).map(|f| e.max_frag = f).is_some(),
            b"drop_unread" => safe_strtoul(value)
                .map(|v| e.drop_unread = v != 0)
                .is_some(),
            _ => false,
        };
    r.line(if ok { "OK" } else { "ERROR" })
}

#[cfg(test)]
mod tests {
    use super::one_key_get;

    #[test]
    fn next_get_key_is_guessed_from_a_whole_line_only() {
        let (key, after) = one_key_get(b"get foo\r\nget bar\r\n").unwrap();
        assert_eq!((key, after), (&b"foo"[..], &b"get bar\r\n"[..]));
        assert_eq!(one_key_get(b"gets k\n").unwrap().0, b"k");
        // The first key of a multi-key get, the rest of its line skipped.
        assert_eq!(
            one_key_get(b"get a b\r\nx").unwrap(),
            (&b"a"[..], &b"x"[..])
        );
        // No end of line yet, an empty key, other commands: no guess.
        assert!(one_key_get(b"get foo").is_none());
        assert!(one_key_get(b"get \r\n").is_none());
        assert!(one_key_get(b"set foo 0 0 1\r\n").is_none());
        let long = [b"get ".as_slice(), &[b'k'; 300], b"\r\n"].concat();
        assert!(one_key_get(&long).is_none());
    }
}
