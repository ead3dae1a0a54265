//! memcached's binary protocol, as 1.6.18's `proto_bin.c` serves it: a
//! 24-byte header, then extras, key and value. Requests are parsed where
//! they were read; replies are written straight into the connection's
//! output buffer.
//!
//! Quiet commands (`getq`, `setq`, ...) send nothing on success (`getq`:
//! nothing on a miss), but errors are always sent; replies are held back
//! until a `noop`, an error or the end of the input, which is when memcached
//! writes them -- and so which of them a close for a bad frame loses.
//!
//! SASL (`-S`): only PLAIN, checked against the file named by
//! `MEMCACHED_SASL_PWDB` (`user:password` lines), as memcached does when
//! built with `--enable-sasl-pwdb`.

use super::request::{Ctx, KEY_MAX_LENGTH, Next, Pending, REFUSED_TEXT};
use crate::items::item::CHUNKED;
use crate::items::{AllocError, ExtFetch, MetaDelete, MetaDelta, StoreMode, StoreResult};
use crate::settings::VERSION;
use crate::stats;
use std::io::Write as _;

pub(crate) const REQUEST_MAGIC: u8 = 0x80;
const RESPONSE_MAGIC: u8 = 0x81;
pub(crate) const HEADER_LEN: usize = 24;
/// memcached's `MAX_SASL_MECH_LEN`.
const MAX_SASL_MECH_LEN: usize = 32;
/// The mechanisms offered; memcached lists what its SASL library is
/// configured for (Debian's with `mech_list: plain` lists just this).
const SASL_MECHANISMS: &[u8] = b"PLAIN";

mod op {
    pub(super) const GET: u8 = 0x00;
    pub(super) const SET: u8 = 0x01;
    pub(super) const ADD: u8 = 0x02;
    pub(super) const REPLACE: u8 = 0x03;
    pub(super) const DELETE: u8 = 0x04;
    pub(super) const INCREMENT: u8 = 0x05;
    pub(super) const DECREMENT: u8 = 0x06;
    pub(super) const QUIT: u8 = 0x07;
    pub(super) const FLUSH: u8 = 0x08;
    pub(super) const GETQ: u8 = 0x09;
    pub(super) const NOOP: u8 = 0x0a;
    pub(super) const VERSION: u8 = 0x0b;
    pub(super) const GETK: u8 = 0x0c;
    pub(super) const GETKQ: u8 = 0x0d;
    pub(super) const APPEND: u8 = 0x0e;
    pub(super) const PREPEND: u8 = 0x0f;
    pub(super) const STAT: u8 = 0x10;
    pub(super) const SETQ: u8 = 0x11;
    pub(super) const ADDQ: u8 = 0x12;
    pub(super) const REPLACEQ: u8 = 0x13;
    pub(super) const DELETEQ: u8 = 0x14;
    pub(super) const INCREMENTQ: u8 = 0x15;
    pub(super) const DECREMENTQ: u8 = 0x16;
    pub(super) const QUITQ: u8 = 0x17;
    pub(super) const FLUSHQ: u8 = 0x18;
    pub(super) const APPENDQ: u8 = 0x19;
    pub(super) const PREPENDQ: u8 = 0x1a;
    pub(super) const TOUCH: u8 = 0x1c;
    pub(super) const GAT: u8 = 0x1d;
    pub(super) const GATQ: u8 = 0x1e;
    pub(super) const SASL_LIST_MECHS: u8 = 0x20;
    pub(super) const SASL_AUTH: u8 = 0x21;
    pub(super) const SASL_STEP: u8 = 0x22;
    pub(super) const GATK: u8 = 0x23;
    pub(super) const GATKQ: u8 = 0x24;
}

/// Response status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Success = 0x00,
    KeyEnoent = 0x01,
    KeyEexists = 0x02,
    E2big = 0x03,
    Einval = 0x04,
    NotStored = 0x05,
    DeltaBadval = 0x06,
    AuthError = 0x20,
    AuthContinue = 0x21,
    UnknownCommand = 0x81,
    Enomem = 0x82,
    /// memcached's PROTOCOL_BINARY_RESPONSE_EINTERNAL: a mutation refused
    /// while the append-only file is failing.
    Einternal = 0x84,
}

impl Status {
    /// memcached's generic text for an error status.
    fn text(self) -> &'static str {
        match self {
            Status::Enomem => "Out of memory",
            Status::Einternal => REFUSED_TEXT,
            Status::UnknownCommand => "Unknown command",
            Status::KeyEnoent => "Not found",
            Status::Einval => "Invalid arguments",
            Status::KeyEexists => "Data exists for key.",
            Status::E2big => "Too large.",
            Status::DeltaBadval => "Non-numeric server-side value for incr or decr",
            Status::NotStored => "Not stored.",
            Status::AuthError => "Auth failure.",
            Status::Success | Status::AuthContinue => "",
        }
    }
}

/// A request header, in host order except `opaque`, which is echoed back
/// exactly as it came.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Header {
    pub(crate) magic: u8,
    pub(crate) opcode: u8,
    pub(crate) keylen: u16,
    pub(crate) extlen: u8,
    pub(crate) bodylen: u32,
    pub(crate) opaque: [u8; 4],
    pub(crate) cas: u64,
}

impl Header {
    pub(crate) fn parse(b: &[u8]) -> Header {
        Header {
            magic: b[0],
            opcode: b[1],
            keylen: u16::from_be_bytes([b[2], b[3]]),
            extlen: b[4],
            bodylen: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            opaque: [b[12], b[13], b[14], b[15]],
            cas: u64::from_be_bytes(b[16..24].try_into().unwrap()),
        }
    }

    /// Header, extras and key: what must be buffered before dispatch.
    pub(crate) fn frame_len(&self) -> usize {
        HEADER_LEN + self.extlen as usize + self.keylen as usize
    }
}

/// What a reply needs of its request.
#[derive(Clone, Copy, Debug, Default)]
struct Request {
    opcode: u8,
    opaque: [u8; 4],
    cas: u64,
}

/// A binary connection's protocol state.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Session {
    /// This connection speaks the binary protocol.
    pub(crate) binary: bool,
    /// The request being served (kept while its value is read).
    req: Request,
    /// A quiet command: successes (and `getq` misses) are not answered.
    noreply: bool,
    authenticated: bool,
    sasl_started: bool,
    /// PLAIN was started without a message: the next step carries it.
    plain_awaited: bool,
    /// Why the connection is closing after this request, for the `-vvv`
    /// trace (memcached passes through different states).
    pub(crate) closing: Closing,
}

/// How a request that closes the connection ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Closing {
    #[default]
    No,
    /// `quit`: a normal reply, then the close.
    Quit,
    /// An error reply, then the close.
    Error,
    /// A malformed request: memcached notes it (at `-v`) once the error
    /// reply is queued.
    ProtocolError,
}

impl Session {
    /// Takes the trace-only note of why the connection closes, printing
    /// memcached's protocol-error line, which comes after its state change.
    pub(crate) fn take_closing(&mut self, fd: i32, verbose: u8) -> Closing {
        let closing = std::mem::take(&mut self.closing);
        if closing == Closing::ProtocolError && verbose > 0 {
            eprintln!(
                "Protocol error (opcode {:02x}), close connection {fd}",
                self.req.opcode
            );
        }
        closing
    }
}

/// memcached's `-vv` dump of a header as it arrives.
pub(crate) fn trace_request_header(fd: i32, bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "<{fd} Read binary protocol data:");
    for (i, b) in bytes[..HEADER_LEN].iter().enumerate() {
        if i % 4 == 0 {
            let _ = write!(err, "\n<{fd}   ");
        }
        let _ = write!(err, " 0x{b:02x}");
    }
    let _ = writeln!(err);
}

/// Where replies go, and how this request's are written.
struct Reply<'a> {
    out: &'a mut Vec<u8>,
    fd: i32,
    trace: bool,
    /// The CAS the reply header carries (memcached's `c->cas`).
    cas: u64,
}

impl Reply<'_> {
    /// memcached's `add_bin_header`; `traced_cas` is what the `-vv` dump
    /// shows (memcached patches a fetched item's CAS in after dumping).
    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        s: &Session,
        status: Status,
        extlen: u8,
        keylen: u16,
        bodylen: u32,
        cas: u64,
        traced_cas: u64,
    ) {
        let mut h = [0u8; HEADER_LEN];
        h[0] = RESPONSE_MAGIC;
        h[1] = s.req.opcode;
        h[2..4].copy_from_slice(&keylen.to_be_bytes());
        h[4] = extlen;
        h[6..8].copy_from_slice(&(status as u16).to_be_bytes());
        h[8..12].copy_from_slice(&bodylen.to_be_bytes());
        h[12..16].copy_from_slice(&s.req.opaque);
        h[16..24].copy_from_slice(&traced_cas.to_be_bytes());
        if self.trace {
            let fd = self.fd;
            let mut err = std::io::stderr().lock();
            let _ = write!(err, ">{fd} Writing bin response:");
            for (i, b) in h.iter().enumerate() {
                if i % 4 == 0 {
                    let _ = write!(err, "\n>{fd}  ");
                }
                let _ = write!(err, " 0x{b:02x}");
            }
            let _ = writeln!(err);
        }
        h[16..24].copy_from_slice(&cas.to_be_bytes());
        self.out.extend_from_slice(&h);
    }

    /// memcached's `write_bin_response`: suppressed for quiet commands.
    fn success(&mut self, s: &Session, body: &[u8]) -> Next {
        if !s.noreply {
            self.header(
                s,
                Status::Success,
                0,
                0,
                body.len() as u32,
                self.cas,
                self.cas,
            );
            self.out.extend_from_slice(body);
        }
        Next::Continue
    }

    /// memcached's `write_bin_error`: always sent, and written out at once.
    fn error(&mut self, s: &Session, status: Status) -> Next {
        self.error_text(s, status, status.text())
    }

    fn error_text(&mut self, s: &Session, status: Status, text: &str) -> Next {
        if self.trace {
            eprintln!(">{} Writing an error: {}", self.fd, text);
        }
        self.header(s, status, 0, 0, text.len() as u32, self.cas, self.cas);
        self.out.extend_from_slice(text.as_bytes());
        Next::Flush
    }

    /// An error whose request body must still be discarded.
    fn error_swallow(&mut self, s: &Session, status: Status, swallow: usize) -> Next {
        self.error(s, status);
        swallow_or_flush(swallow)
    }

    /// memcached's `out_of_memory` on a binary connection.
    fn out_of_memory(&mut self, s: &Session, text: &str) -> Next {
        self.error_text(s, Status::Enomem, text)
    }
}

/// memcached keeps the count of bytes to discard in an `int`: a body of
/// 2 GiB or more reads as negative, and nothing is discarded at all.
fn swallow_or_flush(n: usize) -> Next {
    if n > 0 && n <= i32::MAX as usize {
        Next::Swallow(n)
    } else {
        Next::Flush
    }
}

/// memcached's `realtime` for a 32-bit unsigned expiry from a request.
fn exptime_of(ctx: &Ctx, raw: u32) -> u32 {
    ctx.cache.clock.realtime(raw as i64)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

fn trace_key(fd: i32, what: &str, key: &[u8], tail: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "<{fd} {what} ");
    let _ = err.write_all(key);
    let _ = writeln!(err, "{tail}");
}

/// Serves one request whose header, extras and key are in `frame`.
pub(crate) fn process(ctx: &mut Ctx, s: &mut Session, frame: &[u8], out: &mut Vec<u8>) -> Next {
    let h = Header::parse(frame);
    s.req = Request {
        opcode: h.opcode,
        opaque: h.opaque,
        cas: h.cas,
    };
    let ext = &frame[HEADER_LEN..HEADER_LEN + h.extlen as usize];
    let key = &frame[HEADER_LEN + h.extlen as usize..h.frame_len()];
    ctx.cache.verbose = ctx.settings.verbose;
    let mut r = Reply {
        out,
        fd: ctx.fd,
        trace: ctx.settings.verbose > 1,
        cas: 0,
    };
    let (extlen, keylen, bodylen) = (h.extlen as u32, h.keylen as u32, h.bodylen);
    if keylen > bodylen || keylen + extlen > bodylen {
        r.error(s, Status::UnknownCommand);
        s.closing = Closing::Error;
        return Next::CloseAfterWrite;
    }
    if ctx.settings.sasl && !authenticated(ctx, s) {
        r.error(s, Status::AuthError);
        s.closing = Closing::Error;
        return Next::CloseAfterWrite;
    }
    let (cmd, quiet) = unquiet(h.opcode);
    s.noreply = quiet;
    if keylen as usize > KEY_MAX_LENGTH {
        return protocol_error(s, &mut r);
    }
    let no_body = extlen == 0 && keylen == 0 && bodylen == 0;
    let valid = match cmd {
        op::VERSION | op::NOOP | op::QUIT | op::SASL_LIST_MECHS => no_body,
        op::FLUSH => keylen == 0 && bodylen == extlen && (extlen == 0 || extlen == 4),
        op::SET | op::ADD | op::REPLACE => extlen == 8 && keylen != 0 && bodylen >= keylen + 8,
        op::GET | op::GETK => extlen == 0 && bodylen == keylen && keylen > 0,
        op::DELETE => keylen > 0 && extlen == 0 && bodylen == keylen,
        op::INCREMENT | op::DECREMENT => keylen > 0 && extlen == 20 && bodylen == keylen + extlen,
        op::APPEND | op::PREPEND => keylen > 0 && extlen == 0,
        op::STAT => extlen == 0,
        op::SASL_AUTH | op::SASL_STEP => extlen == 0 && keylen != 0,
        op::TOUCH | op::GAT | op::GATK => extlen == 4 && keylen != 0,
        _ => return r.error_swallow(s, Status::UnknownCommand, bodylen as usize),
    };
    if !valid {
        return protocol_error(s, &mut r);
    }
    let value_len = (bodylen - keylen - extlen) as usize;
    if ctx.cache.writes_refused && mutates(cmd) {
        return r.error_swallow(s, Status::Einternal, value_len);
    }
    match cmd {
        op::VERSION => r.success(s, VERSION.as_bytes()),
        op::NOOP => {
            r.success(s, b"");
            // Written at once, after the usual end of a command.
            Next::FlushAfterLine
        }
        op::QUIT => {
            r.success(s, b"");
            s.closing = Closing::Quit;
            Next::CloseAfterWrite
        }
        op::FLUSH => flush(ctx, s, &mut r, ext),
        op::SET | op::ADD | op::REPLACE => update(ctx, s, &mut r, cmd, ext, key, value_len),
        op::APPEND | op::PREPEND => append_prepend(ctx, s, &mut r, cmd, key, value_len),
        op::GET | op::GETK | op::TOUCH | op::GAT | op::GATK => {
            get_or_touch(ctx, s, &mut r, cmd, ext, key)
        }
        op::DELETE => delete(ctx, s, &mut r, key),
        op::INCREMENT | op::DECREMENT => arithmetic(ctx, s, &mut r, cmd, ext, key),
        op::STAT => stat(ctx, s, &mut r, key),
        op::SASL_LIST_MECHS => list_mechanisms(ctx, s, &mut r),
        _ => sasl_auth_start(ctx, s, &mut r, key, value_len),
    }
}

/// Whether a (loud) opcode changes the cache.
fn mutates(cmd: u8) -> bool {
    matches!(
        cmd,
        op::SET
            | op::ADD
            | op::REPLACE
            | op::APPEND
            | op::PREPEND
            | op::DELETE
            | op::INCREMENT
            | op::DECREMENT
            | op::TOUCH
            | op::GAT
            | op::GATK
            | op::FLUSH
    )
}

/// The loud opcode a quiet one stands for, and whether it was quiet.
fn unquiet(opcode: u8) -> (u8, bool) {
    let loud = match opcode {
        op::SETQ => op::SET,
        op::ADDQ => op::ADD,
        op::REPLACEQ => op::REPLACE,
        op::DELETEQ => op::DELETE,
        op::INCREMENTQ => op::INCREMENT,
        op::DECREMENTQ => op::DECREMENT,
        op::QUITQ => op::QUIT,
        op::FLUSHQ => op::FLUSH,
        op::APPENDQ => op::APPEND,
        op::PREPENDQ => op::PREPEND,
        op::GETQ => op::GET,
        op::GETKQ => op::GETK,
        op::GATQ => op::GAT,
        op::GATKQ => op::GATK,
        other => return (other, false),
    };
    (loud, true)
}

/// A malformed request: answered, then the connection closes.
fn protocol_error(s: &mut Session, r: &mut Reply) -> Next {
    r.error(s, Status::Einval);
    s.closing = Closing::ProtocolError;
    Next::CloseAfterWrite
}

/// With `-S`, only these commands are allowed before authentication.
fn authenticated(ctx: &Ctx, s: &Session) -> bool {
    let cmd = s.req.opcode;
    let ok = matches!(
        cmd,
        op::SASL_LIST_MECHS | op::SASL_AUTH | op::SASL_STEP | op::VERSION
    ) || s.authenticated;
    if ctx.settings.verbose > 1 {
        let word = if ok { "true" } else { "false" };
        eprintln!("authenticated() in cmd 0x{cmd:02x} is {word}");
    }
    ok
}

fn flush(ctx: &mut Ctx, s: &Session, r: &mut Reply, ext: &[u8]) -> Next {
    if !ctx.settings.flush_enabled {
        return r.error(s, Status::AuthError);
    }
    let exptime = if ext.len() == 4 { be32(ext) } else { 0 };
    ctx.cache.flush_all(exptime.min(i32::MAX as u32) as i32);
    ctx.stats.flush_cmds += 1;
    r.success(s, b"")
}

/// set/add/replace: allocate, then read the value into the item.
fn update(
    ctx: &mut Ctx,
    s: &Session,
    r: &mut Reply,
    cmd: u8,
    ext: &[u8],
    key: &[u8],
    vlen: usize,
) -> Next {
    let (flags, raw_exptime) = (be32(ext), be32(&ext[4..]));
    if r.trace {
        let what = match cmd {
            op::ADD => "ADD",
            op::SET => "SET",
            _ => "REPLACE",
        };
        trace_key(ctx.fd, what, key, &format!(" Value len is {vlen}"));
    }
    if ctx.settings.detail_enabled {
        let delim = ctx.settings.prefix_delimiter;
        ctx.stats.prefixes.record_set(key, delim);
    }
    let exptime = exptime_of(ctx, raw_exptime);
    match ctx.cache.alloc(key, flags, exptime, vlen) {
        Ok(item) => {
            let mode = match cmd {
                _ if s.req.cas != 0 => StoreMode::Cas,
                op::ADD => StoreMode::Add,
                op::SET => StoreMode::Set,
                _ => StoreMode::Replace,
            };
            Next::ReadValue(pending(item, mode, s, vlen))
        }
        Err(e) => {
            let next = refuse_value(s, r, e, vlen);
            ctx.cache
                .log_refused_store(key, None, e == AllocError::TooLarge);
            // A set that cannot be stored must not leave the old value.
            if cmd == op::SET {
                ctx.cache.delete_quietly(key);
            }
            next
        }
    }
}

fn pending(item: crate::slab::ChunkRef, mode: StoreMode, s: &Session, nbytes: usize) -> Pending {
    Pending {
        item,
        mode,
        cas: s.req.cas,
        noreply: s.noreply,
        nbytes,
        meta: None,
    }
}

/// The reply to a value that gets no item; its bytes are discarded.
fn refuse_value(s: &Session, r: &mut Reply, e: AllocError, vlen: usize) -> Next {
    if e == AllocError::TooLarge {
        r.error(s, Status::E2big);
    } else {
        r.out_of_memory(s, "Out of memory allocating item");
    }
    swallow_or_flush(vlen)
}

fn append_prepend(
    ctx: &mut Ctx,
    s: &Session,
    r: &mut Reply,
    cmd: u8,
    key: &[u8],
    vlen: usize,
) -> Next {
    if r.trace {
        eprintln!("Value len is {vlen}");
    }
    if ctx.settings.detail_enabled {
        let delim = ctx.settings.prefix_delimiter;
        ctx.stats.prefixes.record_set(key, delim);
    }
    match ctx.cache.alloc(key, 0, 0, vlen) {
        Ok(item) => {
            let mode = if cmd == op::APPEND {
                StoreMode::Append
            } else {
                StoreMode::Prepend
            };
            Next::ReadValue(pending(item, mode, s, vlen))
        }
        Err(e) => refuse_value(s, r, e, vlen),
    }
}

/// Finishes a request whose value has been read into `p.item`.
pub(crate) fn complete_nread(
    ctx: &mut Ctx,
    s: &mut Session,
    p: Pending,
    out: &mut Vec<u8>,
) -> Next {
    let mut r = Reply {
        out,
        fd: ctx.fd,
        trace: ctx.settings.verbose > 1,
        cas: 0,
    };
    if matches!(s.req.opcode, op::SASL_AUTH | op::SASL_STEP) {
        let next = sasl_auth_complete(ctx, s, &mut r, p.item);
        ctx.cache.free_unlinked(p.item);
        return next;
    }
    let (result, cas) = ctx.cache.meta_store(p.item, p.mode, p.cas, false);
    match result {
        StoreResult::Stored => {
            r.cas = cas;
            r.success(s, b"")
        }
        StoreResult::Exists => r.error(s, Status::KeyEexists),
        StoreResult::NotFound => {
            ctx.stats.cas_misses += 1;
            r.error(s, Status::KeyEnoent)
        }
        StoreResult::NotStored => match p.mode {
            StoreMode::Add => r.error(s, Status::KeyEexists),
            StoreMode::Replace => r.error(s, Status::KeyEnoent),
            _ => r.error(s, Status::NotStored),
        },
    }
}

fn get_or_touch(
    ctx: &mut Ctx,
    s: &Session,
    r: &mut Reply,
    cmd: u8,
    ext: &[u8],
    key: &[u8],
) -> Next {
    let touch = matches!(cmd, op::TOUCH | op::GAT | op::GATK);
    let return_key = matches!(cmd, op::GETK | op::GATK);
    if cmd != op::TOUCH && ctx.cache.ext_prepare(key, ctx.fd) == ExtFetch::Wait {
        return Next::AwaitExt(0);
    }
    if r.trace && !ctx.rerun {
        trace_key(ctx.fd, if touch { "TOUCH" } else { "GET" }, key, "");
    }
    let exptime = touch.then(|| exptime_of(ctx, be32(ext)));
    let found = ctx.cache.get(key, exptime);
    if ctx.settings.detail_enabled {
        let delim = ctx.settings.prefix_delimiter;
        ctx.stats.prefixes.record_get(key, delim, found.is_some());
    }
    // A flash item whose record is gone reads as a miss (its header goes).
    let flash = found
        .filter(|&it| cmd != op::TOUCH && ctx.cache.is_ext(it))
        .map(|it| ctx.cache.ext_take(it, ctx.fd));
    let Some(it) = found.filter(|_| !matches!(flash, Some(None))) else {
        if touch {
            ctx.stats.touch_cmds += 1;
            ctx.stats.touch_misses += 1;
        } else {
            ctx.stats.get_cmds += 1;
            ctx.stats.get_misses += 1;
        }
        return match () {
            _ if s.noreply => Next::Continue,
            _ if return_key => {
                let n = key.len();
                r.header(s, Status::KeyEnoent, 0, n as u16, n as u32, 0, 0);
                r.out.extend_from_slice(key);
                Next::Continue
            }
            _ => r.error(s, Status::KeyEnoent),
        };
    };
    if touch {
        ctx.stats.touch_cmds += 1;
        let class = ctx.cache.class_of(it) as usize;
        ctx.cache.stats.classes[class].touch_hits += 1;
    } else {
        ctx.stats.get_cmds += 1;
        ctx.cache.count_get_hit(it);
    }
    // Referenced by the reply until it is written, as memcached holds it.
    ctx.cache.pin(it);
    let v = ctx.cache.view(it);
    let (flags, nbytes, cas) = (v.flags(), v.nbytes() as usize, v.cas());
    let with_value = cmd != op::TOUCH;
    let keylen = if return_key { key.len() } else { 0 };
    let bodylen = 4 + keylen + if with_value { nbytes } else { 0 };
    r.header(s, Status::Success, 4, keylen as u16, bodylen as u32, cas, 0);
    r.out.extend_from_slice(&flags.to_be_bytes());
    if return_key {
        r.out.extend_from_slice(key);
    }
    if with_value {
        match &flash {
            Some(Some(value)) => r.out.extend_from_slice(value.bytes()),
            _ => {
                for seg in ctx.cache.value_segments(it) {
                    r.out.extend_from_slice(seg);
                }
            }
        }
    }
    if let Some(Some(value)) = flash {
        let rate = ctx.settings.ext.recache_rate;
        ctx.cache
            .ext_recache(key, value.bytes(), rate, value.fetched, ctx.fd);
        ctx.cache.ext_recycle(value);
    }
    Next::Continue
}

fn delete(ctx: &mut Ctx, s: &Session, r: &mut Reply, key: &[u8]) -> Next {
    if r.trace {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"Deleting ");
        let _ = err.write_all(key);
        let _ = err.write_all(b"\n");
    }
    if ctx.settings.detail_enabled {
        let delim = ctx.settings.prefix_delimiter;
        ctx.stats.prefixes.record_delete(key, delim);
    }
    let cas = (s.req.cas != 0).then_some(s.req.cas);
    match ctx.cache.meta_delete(key, cas, false, None) {
        MetaDelete::Deleted | MetaDelete::MarkedStale => r.success(s, b""),
        MetaDelete::CasMismatch => r.error(s, Status::KeyEexists),
        MetaDelete::NotFound => {
            ctx.stats.delete_misses += 1;
            r.error(s, Status::KeyEnoent)
        }
    }
}

/// An initial-value expiry of all ones means "do not create".
const NO_INITIAL: u32 = 0xffff_ffff;

fn arithmetic(ctx: &mut Ctx, s: &Session, r: &mut Reply, cmd: u8, ext: &[u8], key: &[u8]) -> Next {
    let (delta, initial, raw_exptime) = (be64(ext), be64(&ext[8..]), be32(&ext[16..]));
    if r.trace {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"incr ");
        let _ = err.write_all(key);
        let _ = writeln!(
            err,
            " {}, {}, {}",
            delta as i64, initial, raw_exptime as i32
        );
    }
    let incr = cmd == op::INCREMENT;
    match ctx.cache.meta_add_delta(key, incr, delta, s.req.cas) {
        MetaDelta::Value { value, cas, .. } => {
            r.cas = cas;
            r.success(s, &value.to_be_bytes())
        }
        MetaDelta::NonNumeric => r.error(s, Status::DeltaBadval),
        MetaDelta::NoMemory => r.out_of_memory(s, "Out of memory incrementing value"),
        MetaDelta::CasMismatch => r.error(s, Status::KeyEexists),
        MetaDelta::NotFound if raw_exptime == NO_INITIAL => {
            if incr {
                ctx.stats.incr_misses += 1;
            } else {
                ctx.stats.decr_misses += 1;
            }
            r.error(s, Status::KeyEnoent)
        }
        MetaDelta::NotFound => create_initial(ctx, s, r, key, initial, raw_exptime),
    }
}

/// incr/decr on a missing key with an expiry: store the initial value.
fn create_initial(
    ctx: &mut Ctx,
    s: &Session,
    r: &mut Reply,
    key: &[u8],
    initial: u64,
    raw_exptime: u32,
) -> Next {
    let mut digits = [0u8; 20];
    let text = crate::items::format_u64(initial, &mut digits);
    let exptime = exptime_of(ctx, raw_exptime);
    let Ok(item) = ctx.cache.alloc(key, 0, exptime, text.len()) else {
        return r.out_of_memory(s, "Out of memory allocating new item");
    };
    ctx.cache.value_window_mut(item, 0).copy_from_slice(text);
    match ctx.cache.meta_store(item, StoreMode::Add, 0, false) {
        (StoreResult::Stored, cas) => {
            r.cas = cas;
            r.success(s, &initial.to_be_bytes())
        }
        _ => r.error(s, Status::NotStored),
    }
}

fn stat(ctx: &mut Ctx, s: &Session, r: &mut Reply, key: &[u8]) -> Next {
    if r.trace {
        trace_key(ctx.fd, "STATS", key, "");
    }
    let report: Vec<u8> = if key.is_empty() {
        stats::general(ctx.stats, ctx.cache, ctx.settings).into_bytes()
    } else if key.starts_with(b"reset") {
        ctx.stats.reset();
        ctx.cache.reset_stats();
        b"END\r\n".to_vec()
    } else if key.starts_with(b"settings") {
        stats::settings(ctx.settings).into_bytes()
    } else if let Some(sub) = key.strip_prefix(b"detail") {
        if sub.starts_with(b" dump") {
            let dump = ctx.stats.prefixes.dump();
            append_stat(r.out, s, b"detailed", &dump);
            append_stat(r.out, s, b"", b"");
            return Next::Continue;
        } else if sub.starts_with(b" on") {
            ctx.settings.detail_enabled = true;
        } else if sub.starts_with(b" off") {
            ctx.settings.detail_enabled = false;
        } else {
            return r.error(s, Status::KeyEnoent);
        }
        b"END\r\n".to_vec()
    } else {
        match key {
            b"items" => stats::items(ctx.cache, ctx.settings).into_bytes(),
            b"slabs" => stats::slabs(ctx.cache).into_bytes(),
            b"sizes" => stats::sizes(ctx.cache).into_bytes(),
            b"sizes_enable" if ctx.cache.enable_sizes() => {
                b"STAT sizes_status enabled\r\n".to_vec()
            }
            b"sizes_enable" => {
                b"STAT sizes_status error\r\nSTAT sizes_error cas_support_disabled\r\n".to_vec()
            }
            b"sizes_disable" => {
                ctx.cache.sizes = None;
                b"STAT sizes_status disabled\r\n".to_vec()
            }
            _ => return r.error(s, Status::KeyEnoent),
        }
    };
    append_ascii_report(r.out, s, &report);
    Next::Continue
}

/// Re-frames an ascii stats report ("STAT name value" lines, then "END")
/// as memcached's binary stat packets and the empty closing packet.
fn append_ascii_report(out: &mut Vec<u8>, s: &Session, report: &[u8]) {
    for line in report.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == b"END" {
            append_stat(out, s, b"", b"");
        } else if let Some(stat) = line.strip_prefix(b"STAT ") {
            let (name, value) = match stat.iter().position(|&b| b == b' ') {
                Some(at) => (&stat[..at], &stat[at + 1..]),
                None => (stat, &b""[..]),
            };
            append_stat(out, s, name, value);
        }
    }
}

/// memcached's `append_bin_stats`: written without a `-vv` dump.
fn append_stat(out: &mut Vec<u8>, s: &Session, name: &[u8], value: &[u8]) {
    let mut h = [0u8; HEADER_LEN];
    h[0] = RESPONSE_MAGIC;
    h[1] = op::STAT;
    h[2..4].copy_from_slice(&(name.len() as u16).to_be_bytes());
    h[8..12].copy_from_slice(&((name.len() + value.len()) as u32).to_be_bytes());
    h[12..16].copy_from_slice(&s.req.opaque);
    out.extend_from_slice(&h);
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

// ----- SASL ------------------------------------------------------------------

/// Cyrus SASL result codes memcached traces.
const SASL_CONTINUE: i32 = 1;
const SASL_OK: i32 = 0;
const SASL_FAIL: i32 = -1;
const SASL_NOMECH: i32 = -4;
const SASL_BADPROT: i32 = -5;
const SASL_NOAUTHZ: i32 = -14;
const SASL_NOUSER: i32 = -20;

fn list_mechanisms(ctx: &Ctx, s: &mut Session, r: &mut Reply) -> Next {
    if !ctx.settings.sasl {
        return r.error(s, Status::UnknownCommand);
    }
    s.authenticated = false;
    r.success(s, SASL_MECHANISMS)
}

/// SASL auth/step: the mechanism is the key, the data follows as a value,
/// read into a scratch item as memcached reads it.
fn sasl_auth_start(ctx: &mut Ctx, s: &Session, r: &mut Reply, mech: &[u8], vlen: usize) -> Next {
    if !ctx.settings.sasl {
        return r.error_swallow(s, Status::UnknownCommand, vlen);
    }
    if mech.len() > MAX_SASL_MECH_LEN {
        return r.error_swallow(s, Status::Einval, vlen);
    }
    match ctx.cache.alloc(mech, 0, 0, vlen) {
        Ok(it) if !ctx.cache.view(it).is(CHUNKED) => {
            Next::ReadValue(pending(it, StoreMode::Set, s, vlen))
        }
        Ok(it) => {
            ctx.cache.free_unlinked(it);
            r.error_swallow(s, Status::Enomem, vlen)
        }
        Err(_) => r.error_swallow(s, Status::Enomem, vlen),
    }
}

fn sasl_auth_complete(
    ctx: &mut Ctx,
    s: &mut Session,
    r: &mut Reply,
    it: crate::slab::ChunkRef,
) -> Next {
    s.authenticated = false;
    let verbose = ctx.settings.verbose;
    let v = ctx.cache.view(it);
    let mech = v.key().to_vec();
    let data: Vec<u8> = ctx.cache.value_segments(it).flatten().copied().collect();
    if verbose > 0 {
        eprintln!(
            "mech:  ``{}'' with {} bytes of data",
            String::from_utf8_lossy(&mech),
            data.len()
        );
    }
    let result = if s.req.opcode == op::SASL_AUTH {
        let result = sasl_start(s, &mech, &data, verbose);
        s.sasl_started = matches!(result, SASL_OK | SASL_CONTINUE);
        result
    } else if !s.sasl_started {
        if verbose > 0 {
            eprintln!(
                "{}: SASL_STEP called but sasl_server_start not called for this connection!",
                ctx.fd
            );
        }
        SASL_FAIL
    } else if s.plain_awaited {
        // Until a message passes, each step is another try.
        let result = sasl_log(verbose, check_plain(&data));
        s.plain_awaited = result != SASL_OK;
        result
    } else {
        // The exchange is over: PLAIN has no further step.
        SASL_FAIL
    };
    if verbose > 0 {
        eprintln!("sasl result code:  {result}");
    }
    if result == SASL_CONTINUE {
        // An empty challenge; the client's next step carries its message.
        r.header(s, Status::AuthContinue, 0, 0, 0, 0, 0);
        return Next::Flush;
    }
    ctx.stats.auth_cmds += 1;
    if result == SASL_OK {
        s.authenticated = true;
        return r.success(s, b"Authenticated");
    }
    if verbose > 0 {
        eprintln!("Unknown sasl response:  {result}");
    }
    ctx.stats.auth_errors += 1;
    r.error(s, Status::AuthError)
}

/// `sasl_server_start`: PLAIN with its message, or with none yet (the
/// client then sends it in a step).
fn sasl_start(s: &mut Session, mech: &[u8], data: &[u8], verbose: u8) -> i32 {
    s.plain_awaited = false;
    if !mech.eq_ignore_ascii_case(SASL_MECHANISMS) {
        let name = String::from_utf8_lossy(mech);
        return sasl_log(
            verbose,
            (SASL_NOMECH, Some(&format!("Couldn't find mech {name}"))),
        );
    }
    if data.is_empty() {
        s.plain_awaited = true;
        return SASL_CONTINUE;
    }
    sasl_log(verbose, check_plain(data))
}

/// A SASL result, printing its library's log line as memcached's logger
/// does (`-v`).
fn sasl_log(verbose: u8, (result, message): (i32, Option<&str>)) -> i32 {
    if let Some(message) = message
        && verbose > 0
    {
        eprintln!("SASL (severity 2): {message}");
    }
    result
}

/// Cyrus SASL's PLAIN server: `[authzid] NUL authcid NUL password`, the
/// password checked against the password file. Returns the result and the
/// library's log message for a failure.
fn check_plain(data: &[u8]) -> (i32, Option<&'static str>) {
    let mut parts = data.split(|&b| b == 0);
    let (authzid, user, password) = match (parts.next(), parts.next(), parts.next()) {
        (Some(_), None, _) => return (SASL_BADPROT, Some("Can only find author (no password)")),
        (Some(_), Some(_), None) => {
            return (SASL_BADPROT, Some("Can only find author/en (no password)"));
        }
        (Some(a), Some(u), Some(p)) => (a, u, p),
        _ => unreachable!("split yields at least one part"),
    };
    if parts.next().is_some() {
        let message = "Got more data than we were expecting in the PLAIN plugin\n";
        return (SASL_BADPROT, Some(message));
    }
    if user.is_empty() {
        return (SASL_FAIL, Some("All-whitespace username."));
    }
    if !password_matches(user, password) {
        return (SASL_NOUSER, Some("Password verification failed"));
    }
    if !authzid.is_empty() && authzid != user {
        // Acting for another user needs a proxy policy; there is none.
        return (SASL_NOAUTHZ, None);
    }
    (SASL_OK, None)
}

/// memcached's pwdb check: the first line for `user` decides; its password
/// ends at a `:`, a line end or the end of the file.
fn password_matches(user: &[u8], password: &[u8]) -> bool {
    let Some(path) = std::env::var_os("MEMCACHED_SASL_PWDB") else {
        return false;
    };
    let Ok(db) = std::fs::read(path) else {
        return false;
    };
    for line in db.split(|&b| b == b'\n') {
        let Some(rest) = line.strip_prefix(user) else {
            continue;
        };
        let Some(stored) = rest.strip_prefix(b":") else {
            continue;
        };
        let Some(after) = stored.strip_prefix(password) else {
            return false;
        };
        return matches!(after.first(), None | Some(b':' | b'\r' | 0));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_are_big_endian() {
        let mut b = [0u8; 24];
        b[0] = 0x80;
        b[1] = op::SET;
        b[2..4].copy_from_slice(&3u16.to_be_bytes());
        b[4] = 8;
        b[8..12].copy_from_slice(&16u32.to_be_bytes());
        b[12..16].copy_from_slice(&[1, 2, 3, 4]);
        b[16..24].copy_from_slice(&77u64.to_be_bytes());
        let h = Header::parse(&b);
        assert_eq!((h.magic, h.opcode, h.keylen, h.extlen), (0x80, 1, 3, 8));
        assert_eq!((h.bodylen, h.opaque, h.cas), (16, [1, 2, 3, 4], 77));
        assert_eq!(h.frame_len(), 35);
    }

    #[test]
    fn a_connections_binary_state_stays_small() {
        // Every connection carries one, idle or not.
        assert!(std::mem::size_of::<Session>() <= 24);
    }

    #[test]
    fn quiet_opcodes_map_to_loud_ones() {
        assert_eq!(unquiet(op::GETKQ), (op::GETK, true));
        assert_eq!(unquiet(op::GATQ), (op::GAT, true));
        assert_eq!(unquiet(op::GET), (op::GET, false));
        assert_eq!(unquiet(0x1b), (0x1b, false));
    }

    #[test]
    fn plain_needs_two_separators_and_the_mechanism() {
        let mut s = Session::default();
        assert_eq!(sasl_start(&mut s, b"CRAM-MD5", b"\0a\0b", 0), SASL_NOMECH);
        assert_eq!(
            sasl_start(&mut s, b"PLAIN", b"no separators", 0),
            SASL_BADPROT
        );
        assert_eq!(sasl_start(&mut s, b"PLAIN", b"\0a", 0), SASL_BADPROT);
        assert_eq!(sasl_start(&mut s, b"PLAIN", b"\0a\0b\0c", 0), SASL_BADPROT);
        assert_eq!(sasl_start(&mut s, b"PLAIN", b"a\0\0pw", 0), SASL_FAIL);
        assert!(!s.plain_awaited);
        assert_eq!(sasl_start(&mut s, b"plain", b"", 0), SASL_CONTINUE);
        assert!(s.plain_awaited);
    }
}
