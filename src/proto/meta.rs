//! memcached 1.6.18's meta protocol: `mg`, `ms`, `md`, `ma`, `me` (and
//! `mn`, answered in `text.rs`), following `proto_text.c`.
//!
//! The shape every command shares: `<cm> <key> [<datalen>] <flag>*`,
//! where a flag is one character, possibly followed by a token. The flags
//! are checked once up front (memcached's `_meta_flag_preparse`: a repeated
//! first character is a "duplicate flag", an unknown one an "invalid
//! flag", number tokens must parse), then walked again in request order to
//! build the reply, so reply flags come back in the order they were asked
//! for, interleaved with their effects (`mg k t T30` reports the TTL before
//! the touch, `mg k T30 t` after).
//!
//! Replies other than errors do not go through memcached's `out_string`,
//! so unlike the classic replies they are not traced at `-vv`; `q`
//! suppresses only the nominal reply (`HD` for ms/md/ma, `EN` for mg;
//! an `mg` hit is still answered). Errors always reach the client.

use super::base64;
use super::request::{
    Ctx, KEY_MAX_LENGTH, MAX_OPAQUE, Next, Pending, Reply, SetEcho, WRITES_REFUSED,
    positive_exptime,
};
use super::tokens::Tokens;
use crate::items::clock::Clock;
use crate::items::{
    AllocError, ExtFetch, MetaDelete, MetaDelta, StoreMode, StoreResult, format_u64,
};
use crate::numbers::{safe_strtol, safe_strtoul, safe_strtoull};
use std::io::Write as _;

/// memcached's `MFLAG_MAX_OPT_LENGTH`: more tokens than this is refused.
const MAX_OPT_TOKENS: usize = 20;

const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";

/// The flags of one meta command, as `_meta_flag_preparse` reads them.
#[derive(Default)]
struct Flags {
    no_update: bool,
    /// The item is looked up without a bump, which comes after the reply
    /// was built (so `h` and `l` report the state before this fetch).
    locked: bool,
    vivify: bool,
    value: bool,
    set_stale: bool,
    no_reply: bool,
    has_cas: bool,
    new_ttl: bool,
    key_binary: bool,
    mode: u8,
    exptime: u32,
    autoviv_exptime: u32,
    recache_time: u32,
    client_flags: u32,
    req_cas_id: u64,
    delta: u64,
    initial: u64,
    /// Length of the decoded key (with `b`).
    nkey: usize,
}

/// Reads the flags from token `start` on. With `b` the key is decoded into
/// `kbuf`. On failure, memcached's error string for it.
fn preparse(
    t: &Tokens,
    start: usize,
    clock: &Clock,
    kbuf: &mut [u8; KEY_MAX_LENGTH],
) -> Result<Flags, &'static str> {
    let mut of = Flags {
        delta: 1,
        ..Flags::default()
    };
    let mut seen = [false; 127];
    let mut errstr = BAD_FORMAT;
    let mut has_error = false;
    let exptime = |tok: &[u8]| safe_strtol(&tok[1..]).map(|e| clock.realtime(positive_exptime(e)));
    for i in start..t.len() {
        let tok = t.get(i);
        let o = tok[0];
        if o >= 127 || seen[o as usize] {
            return Err("CLIENT_ERROR duplicate flag");
        }
        seen[o as usize] = true;
        match o {
            b'b' => {
                let key = t.get(1);
                let n = base64::decode(key, &mut kbuf[..key.len()]);
                if n == 0 {
                    errstr = "CLIENT_ERROR error decoding key";
                    has_error = true;
                }
                of.nkey = n;
                of.key_binary = true;
            }
            b'N' => {
                of.locked = true;
                of.vivify = true;
                match exptime(tok) {
                    Some(e) => of.autoviv_exptime = e,
                    None => {
                        errstr = "CLIENT_ERROR bad token in command line format";
                        has_error = true;
                    }
                }
            }
            b'T' => {
                of.locked = true;
                match exptime(tok) {
                    Some(e) => {
                        of.exptime = e;
                        of.new_ttl = true;
                    }
                    None => {
                        errstr = "CLIENT_ERROR bad token in command line format";
                        has_error = true;
                    }
                }
            }
            b'R' => {
                of.locked = true;
                match exptime(tok) {
                    Some(e) => of.recache_time = e,
                    None => {
                        errstr = "CLIENT_ERROR bad token in command line format";
                        has_error = true;
                    }
                }
            }
            b'l' | b'h' => of.locked = true,
            b'O' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' => {}
            b'v' => of.value = true,
            b'u' => of.no_update = true,
            b'q' => of.no_reply = true,
            b'F' => match safe_strtoul(&tok[1..]) {
                Some(f) => of.client_flags = f,
                None => has_error = true,
            },
            b'C' => match safe_strtoull(&tok[1..]) {
                Some(c) => {
                    of.req_cas_id = c;
                    of.has_cas = true;
                }
                None => {
                    errstr = "CLIENT_ERROR bad token in command line format";
                    has_error = true;
                }
            },
            b'M' => {
                if tok.len() != 2 {
                    errstr = "CLIENT_ERROR incorrect length for M token";
                    has_error = true;
                } else {
                    of.mode = tok[1];
                }
            }
            b'J' => match safe_strtoull(&tok[1..]) {
                Some(v) => of.initial = v,
                None => {
                    errstr = "CLIENT_ERROR invalid numeric initial value";
                    has_error = true;
                }
            },
            b'D' => match safe_strtoull(&tok[1..]) {
                Some(v) => of.delta = v,
                None => {
                    errstr = "CLIENT_ERROR invalid numeric delta value";
                    has_error = true;
                }
            },
            b'I' => of.set_stale = true,
            _ => return Err("CLIENT_ERROR invalid flag"),
        }
    }
    if has_error { Err(errstr) } else { Ok(of) }
}

impl Flags {
    /// The key to look up: the token, or what `b` decoded it to.
    fn key<'a>(&self, t: &Tokens<'a>, kbuf: &'a [u8; KEY_MAX_LENGTH]) -> &'a [u8] {
        if self.key_binary {
            &kbuf[..self.nkey]
        } else {
            t.get(1)
        }
    }
}

/// memcached's `out_errstring`: an error is sent even under `q`.
fn error(r: &mut Reply, s: &str) -> Next {
    r.noreply = false;
    r.line(s)
}

fn push_num(out: &mut Vec<u8>, v: u64) {
    let mut num = [0u8; 20];
    out.extend_from_slice(format_u64(v, &mut num));
}

/// ` <flag><number>`
fn push_flag_num(out: &mut Vec<u8>, flag: u8, v: u64) {
    out.push(b' ');
    out.push(flag);
    push_num(out, v);
}

/// memcached's `META_KEY`: ` k<key>`, base64 encoded and followed by ` b`
/// for a binary key.
fn push_key(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    if binary {
        base64::encode_into(key, out);
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

/// ` t<seconds left>`, `-1` for never, as memcached's unsigned arithmetic
/// computes it.
fn push_ttl(out: &mut Vec<u8>, exptime: u32, now: u32) {
    if exptime == 0 {
        out.extend_from_slice(b" t-1");
    } else {
        push_flag_num(out, b't', exptime.wrapping_sub(now) as u64);
    }
}

/// ` O<opaque>`: the opaque token echoed.
fn push_opaque(out: &mut Vec<u8>, tok: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(tok);
}

const OPAQUE_TOO_LONG: &str = "CLIENT_ERROR opaque token too long";

/// The flags every meta reply echoes whatever else it carries: `O` (the
/// opaque token) and `k` (the key), in request order. Err when an opaque
/// token is too long, which refuses the whole request.
fn echo_opaque_and_key(out: &mut Vec<u8>, t: &Tokens, key: &[u8], binary: bool) -> Result<(), ()> {
    for i in 2..t.len() {
        let tok = t.get(i);
        match tok[0] {
            b'O' if tok.len() > MAX_OPAQUE => return Err(()),
            b'O' => push_opaque(out, tok),
            b'k' => push_key(out, key, binary),
            _ => {}
        }
    }
    Ok(())
}

/// Lines with no effect before an error that needs the `-vvv` trace of a
/// refused data block: memcached reports the error, then swallows.
fn trace_swallow(ctx: &Ctx) {
    if ctx.settings.verbose > 2 {
        eprintln!("{}: going from conn_parse_cmd to conn_new_cmd", ctx.fd);
        eprintln!("{}: going from conn_new_cmd to conn_swallow", ctx.fd);
    }
}

// ---------------------------------------------------------------------------
// mg
// ---------------------------------------------------------------------------

pub(super) fn process_mget(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    let n = t.ntokens();
    if n < 3 {
        return r.line("ERROR");
    }
    if t.get(1).len() > KEY_MAX_LENGTH {
        return error(r, BAD_FORMAT);
    }
    if n > MAX_OPT_TOKENS {
        return error(r, "CLIENT_ERROR options flags are too long");
    }
    let mut kbuf = [0u8; KEY_MAX_LENGTH];
    let of = match preparse(t, 2, &ctx.cache.clock, &mut kbuf) {
        Ok(of) => of,
        Err(e) => return error(r, e),
    };
    // A read is a read, but one that may touch or create an item is not.
    if ctx.cache.writes_refused && (of.new_ttl || of.vivify) {
        return error(r, WRITES_REFUSED);
    }
    let key = of.key(t, &kbuf);
    let fd = ctx.fd;
    if of.value && ctx.cache.ext_prepare(key, fd) == ExtFetch::Wait {
        return Next::AwaitExt(0);
    }
    let cache = &mut *ctx.cache;
    let mut found = cache.meta_find(key, !of.locked && !of.no_update);
    // A flash item whose record is gone reads as a miss (its header goes).
    let flash = match found {
        Some(it) if of.value && cache.is_ext(it) => Some(cache.ext_take(it, fd)),
        _ => None,
    };
    if let Some(None) = flash {
        found = None;
    }
    let mut created = false;
    if found.is_none() && of.vivify {
        found = cache.vivify(key);
        created = found.is_some();
    }
    let start = r.out.len();
    let Some(it) = found else {
        ctx.stats.get_misses += 1;
        ctx.stats.get_cmds += 1;
        let out = &mut *r.out;
        out.extend_from_slice(b"EN");
        if echo_opaque_and_key(out, t, key, of.key_binary).is_err() {
            out.truncate(start);
            return error(r, OPAQUE_TOO_LONG);
        }
        if of.no_reply {
            out.truncate(start);
        } else {
            out.extend_from_slice(b"\r\n");
        }
        return Next::Continue;
    };
    let now = cache.now();
    let out = &mut *r.out;
    if of.value {
        out.extend_from_slice(b"VA ");
        push_num(out, cache.view(it).nbytes() as u64);
    } else {
        out.extend_from_slice(b"HD");
    }
    let mut won = false;
    let mut ttl_set = false;
    for i in 2..t.len() {
        let tok = t.get(i);
        match tok[0] {
            b'T' => {
                ttl_set = true;
                cache.set_exptime(it, of.exptime);
            }
            b'N' if created => {
                cache.set_exptime(it, of.autoviv_exptime);
                won = true;
            }
            b'R' => {
                let e = cache.view(it).exptime();
                if !cache.token_sent(it) && !created && e != 0 && e < of.recache_time {
                    won = true;
                }
            }
            b's' => push_flag_num(out, b's', cache.view(it).nbytes() as u64),
            b't' => push_ttl(out, cache.view(it).exptime(), now),
            b'c' => push_flag_num(out, b'c', cache.view(it).cas()),
            b'f' => push_flag_num(out, b'f', cache.view(it).flags() as u64),
            b'l' => {
                let la = now.wrapping_sub(cache.view(it).time());
                push_flag_num(out, b'l', la as u64);
            }
            b'h' => {
                let fetched = cache.view(it).is(crate::items::item::FETCHED);
                out.extend_from_slice(if fetched { b" h1" } else { b" h0" });
            }
            b'O' if tok.len() > MAX_OPAQUE => {
                out.truncate(start);
                return error(r, OPAQUE_TOO_LONG);
            }
            b'O' => push_opaque(out, tok),
            b'k' => push_key(out, cache.view(it).key(), cache.key_is_binary(it)),
            _ => {}
        }
    }
    let (sent, stale, win) = cache.recache_markers(it, won);
    if sent {
        out.extend_from_slice(b" Z");
    }
    if stale {
        out.extend_from_slice(b" X");
    }
    if win {
        out.extend_from_slice(b" W");
    }
    out.extend_from_slice(b"\r\n");
    if of.value {
        match &flash {
            Some(Some(value)) => out.extend_from_slice(value.bytes()),
            _ => {
                for seg in cache.value_segments(it) {
                    out.extend_from_slice(seg);
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    // The reply holds the item until it is written.
    cache.pin(it);
    if of.locked && !of.no_update {
        cache.meta_bump(it);
    }
    if ttl_set {
        ctx.stats.touch_cmds += 1;
        let class = cache.class_of(it) as usize;
        cache.stats.classes[class].touch_hits += 1;
    } else {
        ctx.stats.get_cmds += 1;
        cache.count_get_hit(it);
    }
    // As a text get: a value read from flash may come back into RAM.
    if let Some(Some(value)) = flash {
        let rate = ctx.settings.ext.recache_rate;
        cache.ext_recache(key, value.bytes(), rate, value.fetched, fd);
        cache.ext_recycle(value);
    }
    Next::Continue
}

// ---------------------------------------------------------------------------
// ms
// ---------------------------------------------------------------------------

pub(super) fn process_mset(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    let n = t.ntokens();
    if n < 3 {
        return r.line("ERROR");
    }
    if t.get(1).len() > KEY_MAX_LENGTH || n == 3 {
        return error(r, BAD_FORMAT);
    }
    if n > MAX_OPT_TOKENS {
        return error(r, "CLIENT_ERROR options flags too long");
    }
    let vlen = match safe_strtol(t.get(2)) {
        Some(v) if (0..=i32::MAX - 2).contains(&v) => v as usize,
        _ => return error(r, BAD_FORMAT),
    };
    // From here on an error swallows the data block.
    let swallow = |ctx: &Ctx, r: &mut Reply, e: &str| {
        error(r, e);
        trace_swallow(ctx);
        Next::Swallow(vlen + 2)
    };
    let mut kbuf = [0u8; KEY_MAX_LENGTH];
    let of = match preparse(t, 3, &ctx.cache.clock, &mut kbuf) {
        Ok(of) => of,
        Err(e) => return swallow(ctx, r, e),
    };
    if ctx.cache.writes_refused {
        return swallow(ctx, r, WRITES_REFUSED);
    }
    let key = of.key(t, &kbuf);
    let mut echo = SetEcho {
        quiet: of.no_reply,
        stale: false,
        order: [0; 3],
        opaque: [0; MAX_OPAQUE],
        opaque_len: 0,
    };
    let mut nechoed = 0;
    let mut errstr = None;
    for i in 2..t.len() {
        let tok = t.get(i);
        match tok[0] {
            b'O' if tok.len() > MAX_OPAQUE => errstr = Some(OPAQUE_TOO_LONG),
            b'O' => {
                echo.opaque[..tok.len()].copy_from_slice(tok);
                echo.opaque_len = tok.len() as u8;
            }
            b'k' | b'c' => {}
            _ => continue,
        }
        echo.order[nechoed] = tok[0];
        nechoed += 1;
    }
    let mut mode = match of.mode {
        0 | b'S' => StoreMode::Set,
        b'E' => StoreMode::Add,
        b'A' => StoreMode::Append,
        b'P' => StoreMode::Prepend,
        b'R' => StoreMode::Replace,
        _ => return swallow(ctx, r, "CLIENT_ERROR invalid mode for ms M token"),
    };
    if of.has_cas && matches!(mode, StoreMode::Set | StoreMode::Replace) {
        mode = StoreMode::Cas;
    }
    if let Some(e) = errstr {
        return swallow(ctx, r, e);
    }
    echo.stale = of.set_stale && mode == StoreMode::Cas;
    match ctx.cache.alloc(key, of.client_flags, of.exptime, vlen) {
        Ok(item) => {
            if of.key_binary {
                ctx.cache.mark_key_binary(item);
            }
            let use_cas = ctx.cache.config().use_cas;
            Next::ReadValue(Pending {
                item,
                mode,
                cas: if use_cas { of.req_cas_id } else { 0 },
                noreply: false,
                nbytes: vlen,
                meta: Some(echo),
            })
        }
        Err(e) => {
            let msg = if e == AllocError::TooLarge {
                ctx.stats.store_too_large += 1;
                "SERVER_ERROR object too large for cache"
            } else {
                ctx.stats.store_no_memory += 1;
                "SERVER_ERROR out of memory storing object"
            };
            ctx.cache
                .log_refused_store(key, Some(mode), e == AllocError::TooLarge);
            // Whatever the mode, the old value must not stay readable.
            ctx.cache.delete_quietly(key);
            swallow(ctx, r, msg)
        }
    }
}

/// Finishes an `ms` once its data block has arrived.
pub(super) fn complete_mset(
    ctx: &mut Ctx,
    p: Pending,
    echo: SetEcho,
    crlf_ok: bool,
    r: &mut Reply,
) {
    if !crlf_ok {
        ctx.cache.count_set(p.item);
        ctx.cache.free_unlinked(p.item);
        error(r, "CLIENT_ERROR bad data chunk");
        return;
    }
    let mut kbuf = [0u8; 256];
    let v = ctx.cache.view(p.item);
    let nkey = v.nkey() as usize;
    kbuf[..nkey].copy_from_slice(v.key());
    let binary = ctx.cache.key_is_binary(p.item);
    let (result, cas) = ctx.cache.meta_store(p.item, p.mode, p.cas, echo.stale);
    let code: &[u8] = match result {
        StoreResult::Stored if echo.quiet => return,
        StoreResult::Stored => b"HD",
        StoreResult::Exists => b"EX",
        StoreResult::NotFound => {
            ctx.stats.cas_misses += 1;
            b"NF"
        }
        StoreResult::NotStored => b"NS",
    };
    let out = &mut *r.out;
    out.extend_from_slice(code);
    for &f in echo.order.iter().take_while(|&&f| f != 0) {
        match f {
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(&echo.opaque[..echo.opaque_len as usize]);
            }
            b'k' => push_key(out, &kbuf[..nkey], binary),
            _ => push_flag_num(out, b'c', cas),
        }
    }
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------------------
// md
// ---------------------------------------------------------------------------

/// The checks `md` and `ma` share before their flags mean anything: token
/// counts, key length, and memcached's flag pre-parse (whose error text
/// differs from `mg`/`ms`).
fn md_ma_flags(
    ctx: &Ctx,
    t: &Tokens,
    r: &mut Reply,
    kbuf: &mut [u8; KEY_MAX_LENGTH],
) -> Result<Flags, Next> {
    let n = t.ntokens();
    if n < 3 {
        return Err(r.line("ERROR"));
    }
    if t.get(1).len() > KEY_MAX_LENGTH {
        return Err(r.line(BAD_FORMAT));
    }
    if n > MAX_OPT_TOKENS {
        return Err(r.line("CLIENT_ERROR options flags too long"));
    }
    preparse(t, 2, &ctx.cache.clock, kbuf)
        .map_err(|_| error(r, "CLIENT_ERROR invalid or duplicate flag"))
}

pub(super) fn process_mdelete(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    let mut kbuf = [0u8; KEY_MAX_LENGTH];
    let of = match md_ma_flags(ctx, t, r, &mut kbuf) {
        Ok(of) => of,
        Err(next) => return next,
    };
    if ctx.cache.writes_refused {
        return error(r, WRITES_REFUSED);
    }
    let key = of.key(t, &kbuf);
    // A flash item marked stale is reported with its value: read it first.
    if of.set_stale && ctx.cache.ext_read_for_change(key, ctx.fd) == ExtFetch::Wait {
        return Next::AwaitExt(0);
    }
    let start = r.out.len();
    let out = &mut *r.out;
    // The code is written over this once known.
    out.extend_from_slice(b"HD");
    if echo_opaque_and_key(out, t, key, of.key_binary).is_err() {
        out.truncate(start);
        return error(r, OPAQUE_TOO_LONG);
    }
    let cas = of.has_cas.then_some(of.req_cas_id);
    let exptime = of.new_ttl.then_some(of.exptime);
    let deleted = ctx.cache.meta_delete(key, cas, of.set_stale, exptime);
    if of.set_stale {
        ctx.cache.ext_done_with_reads(ctx.fd);
    }
    let code = match deleted {
        MetaDelete::Deleted | MetaDelete::MarkedStale if of.no_reply => {
            out.truncate(start);
            return Next::Continue;
        }
        MetaDelete::Deleted | MetaDelete::MarkedStale => b"HD",
        MetaDelete::CasMismatch => {
            ctx.stats.delete_misses += 1;
            b"EX"
        }
        MetaDelete::NotFound => {
            ctx.stats.delete_misses += 1;
            b"NF"
        }
    };
    out[start..start + 2].copy_from_slice(code);
    out.extend_from_slice(b"\r\n");
    Next::Continue
}

// ---------------------------------------------------------------------------
// ma
// ---------------------------------------------------------------------------

pub(super) fn process_marithmetic(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    let mut kbuf = [0u8; KEY_MAX_LENGTH];
    let of = match md_ma_flags(ctx, t, r, &mut kbuf) {
        Ok(of) => of,
        Err(next) => return next,
    };
    if ctx.cache.writes_refused {
        return error(r, WRITES_REFUSED);
    }
    let key = of.key(t, &kbuf);
    let incr = match of.mode {
        0 | b'I' | b'+' => true,
        b'D' | b'-' => false,
        _ => return error(r, "CLIENT_ERROR invalid mode for ma M token"),
    };
    let cache = &mut *ctx.cache;
    let mut digits = [0u8; 20];
    // (number, cas, exptime, the item T and N change, created)
    let mut hit = None;
    let mut miss: &[u8] = b"";
    match cache.meta_add_delta(key, incr, of.delta, of.req_cas_id) {
        MetaDelta::Value {
            value,
            cas,
            exptime,
            item,
        } => hit = Some((value, cas, exptime, item, false)),
        MetaDelta::NonNumeric => {
            return error(
                r,
                "CLIENT_ERROR cannot increment or decrement non-numeric value",
            );
        }
        MetaDelta::NoMemory => return error(r, "SERVER_ERROR out of memory"),
        MetaDelta::NotFound if of.vivify => {
            let text = format_u64(of.initial, &mut digits);
            let Some(it) = cache.vivify_number(key, text) else {
                return error(r, "SERVER_ERROR Out of memory allocating new item");
            };
            let v = cache.view(it);
            hit = Some((of.initial, v.cas(), v.exptime(), Some(it), true));
        }
        MetaDelta::NotFound => {
            if incr {
                ctx.stats.incr_misses += 1;
            } else {
                ctx.stats.decr_misses += 1;
            }
            miss = b"NF";
        }
        MetaDelta::CasMismatch => miss = b"EX",
    }
    // `q` hides a successful reply (not one for a created item).
    let quiet = of.no_reply && matches!(hit, Some((.., false)));
    let start = r.out.len();
    let out = &mut *r.out;
    let now = cache.now();
    match hit {
        Some((value, cas, mut exptime, item, created)) => {
            let text = format_u64(value, &mut digits);
            if of.value {
                out.extend_from_slice(b"VA ");
                push_num(out, text.len() as u64);
            } else {
                out.extend_from_slice(b"HD");
            }
            for i in 2..t.len() {
                let tok = t.get(i);
                match tok[0] {
                    b'c' => push_flag_num(out, b'c', cas),
                    b't' => push_ttl(out, exptime, now),
                    b'T' => {
                        exptime = of.exptime;
                        if let Some(it) = item {
                            cache.set_exptime(it, exptime);
                        }
                    }
                    b'N' => {
                        if let (Some(it), true) = (item, created) {
                            exptime = of.autoviv_exptime;
                            cache.set_exptime(it, exptime);
                        }
                    }
                    b'O' if tok.len() > MAX_OPAQUE => {
                        out.truncate(start);
                        return error(r, OPAQUE_TOO_LONG);
                    }
                    b'O' => push_opaque(out, tok),
                    b'k' => push_key(out, key, of.key_binary),
                    _ => {}
                }
            }
            if of.value {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(text);
            }
        }
        None => {
            out.extend_from_slice(miss);
            if echo_opaque_and_key(out, t, key, of.key_binary).is_err() {
                out.truncate(start);
                return error(r, OPAQUE_TOO_LONG);
            }
        }
    }
    if quiet {
        out.truncate(start);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    Next::Continue
}

// ---------------------------------------------------------------------------
// me
// ---------------------------------------------------------------------------

pub(super) fn process_meta_debug(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    if t.ntokens() < 3 || t.get(1).len() > KEY_MAX_LENGTH {
        return r.line(BAD_FORMAT);
    }
    let mut kbuf = [0u8; KEY_MAX_LENGTH];
    let mut key = t.get(1);
    if t.ntokens() >= 4 && t.get(2) == b"b" {
        let n = base64::decode(key, &mut kbuf[..key.len()]);
        if n == 0 {
            return r.line(BAD_FORMAT);
        }
        key = &kbuf[..n];
    }
    let cache = &mut *ctx.cache;
    match cache.meta_find(key, false) {
        Some(it) => {
            let now = cache.now();
            let v = cache.view(it);
            let out = &mut *r.out;
            out.extend_from_slice(b"ME ");
            if cache.key_is_binary(it) {
                base64::encode_into(v.key(), out);
            } else {
                out.extend_from_slice(v.key());
            }
            let exp = if v.exptime() == 0 {
                -1
            } else {
                now.wrapping_sub(v.exptime()) as i32
            };
            let fetched = if v.is(crate::items::item::FETCHED) {
                "yes"
            } else {
                "no"
            };
            let _ = write!(
                out,
                " exp={exp} la={} cas={} fetch={fetched} cls={} size={}\r\n",
                now.wrapping_sub(v.time()),
                v.cas(),
                cache.memcached_class(it),
                cache.memcached_size(it),
            );
        }
        None => {
            r.line("EN");
        }
    }
    ctx.stats.meta_cmds += 1;
    Next::Continue
}
