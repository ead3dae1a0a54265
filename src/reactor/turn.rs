//! A connection's turn, a step at a time: write what is pending, run the
//! requests already buffered, then read the socket and run what came,
//! within the turn's request budget; and the cache's work between turns.
//!
//! The reactor's `drive` repeats `step` until it says to stop, and decides
//! what happens to the connection then (wait, queue it behind the others,
//! close it). The socket is reached only through [`Wire`], so the fuzz
//! harness (`harness.rs`) runs this very code with a scripted client in
//! place of the socket.

use super::conn::{BatchEnd, Conn, Event};
use super::stream::Stream;
use crate::items::Cache;
use crate::items::crawler::{CrawlJob, CrawlKind};
use crate::logger::CloseReason;
use crate::persist::{Durability, mutations};
use crate::proto::request::Ctx;
use crate::stats::Stats;
use std::io::{self, Read, Write};

/// Hash buckets moved per loop turn while the table is growing.
pub(crate) const REHASH_STEP: usize = 1024;
/// Items the LRU crawler examines per loop turn.
pub(crate) const CRAWL_STEP: usize = 1000;

/// The two things a turn does with a socket.
pub(crate) trait Wire {
    fn read(&mut self, stream: &mut Stream, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&mut self, stream: &mut Stream, bytes: &[u8]) -> io::Result<usize>;
    /// Output the stream itself still holds (TLS); true once it is out.
    fn drain(&mut self, _stream: &mut Stream) -> io::Result<bool> {
        Ok(true)
    }
}

/// The connection's own socket.
pub(crate) struct Socket;

impl Wire for Socket {
    fn read(&mut self, stream: &mut Stream, buf: &mut [u8]) -> io::Result<usize> {
        stream.read(buf)
    }

    fn write(&mut self, stream: &mut Stream, bytes: &[u8]) -> io::Result<usize> {
        stream.write(bytes)
    }

    fn drain(&mut self, stream: &mut Stream) -> io::Result<bool> {
        stream.drain()
    }
}

/// What the reactor does with a connection after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Keep going with this connection.
    Again,
    /// Nothing more until epoll reports readiness.
    Idle,
    /// Budget spent with work left: run again after the others.
    Yield,
    /// Append the `stats conns` report, then keep going.
    ConnsReport,
    Close,
    /// `shutdown` (true: graceful): stop the server, closing this first.
    Shutdown(bool),
}

/// One step of connection `c`'s turn. `durability` keeps the replies
/// that must wait for the AOF's end-of-turn write (`None` when none do).
pub(crate) fn step(
    wire: &mut impl Wire,
    c: &mut Conn,
    ctx: &mut Ctx,
    scratch: &mut [u8],
    budget: &mut usize,
    mut durability: Option<&mut Durability>,
) -> Action {
    // 1. Output first: it may unblock input.
    if c.has_output() && c.writable && flush(wire, c, ctx.stats).is_err() {
        return Action::Close;
    }
    if c.close_after_write {
        return if c.unsent() == 0 {
            Action::Close
        } else {
            Action::Idle
        };
    }
    if c.state().closing() {
        return Action::Close;
    }
    if c.blocked_on_output() {
        return Action::Idle;
    }
    // 2. Requests already buffered (or a paused multi-get).
    if (!c.input.is_empty() && !c.input_seen) || c.is_paused() {
        let input = std::mem::take(&mut c.input);
        let (used, end) = consume(c, ctx, &input, budget, durability.as_deref_mut());
        c.input = input;
        c.input.drain(..used);
        if end == BatchEnd::AwaitIo {
            return finish_turn(wire, c, ctx.stats);
        }
        if let Some(action) = after_batch(c, end) {
            return action;
        }
    }
    if *budget == 0 {
        return if c.readable || !c.input.is_empty() {
            Action::Yield
        } else {
            finish_turn(wire, c, ctx.stats)
        };
    }
    // 3. Fresh input.
    if !c.readable {
        return finish_turn(wire, c, ctx.stats);
    }
    if let Some((item, filled)) = c.direct_value_read() {
        let window = ctx.cache.value_window_mut(item, filled);
        return match read_into(wire, c, window) {
            ReadOutcome::Data(n) => {
                ctx.stats.bytes_read += n as u64;
                c.value_read_directly(n);
                Action::Again
            }
            ReadOutcome::WouldBlock => finish_turn(wire, c, ctx.stats),
            ReadOutcome::Eof => closed_by_peer(c),
            ReadOutcome::Closed => Action::Close,
        };
    }
    let want = c.read_size().min(scratch.len());
    let v = ctx.settings.verbose;
    c.on(Event::Reading, v);
    let n = match read_into(wire, c, &mut scratch[..want]) {
        ReadOutcome::Data(n) => n,
        ReadOutcome::WouldBlock => {
            c.on(Event::Drained, v);
            return finish_turn(wire, c, ctx.stats);
        }
        ReadOutcome::Eof => return closed_by_peer(c),
        ReadOutcome::Closed => return Action::Close,
    };
    ctx.stats.bytes_read += n as u64;
    let end = if c.input.is_empty() {
        // The usual case: parsed where it was read, only a partial
        // request left over is kept.
        let (used, end) = consume(c, ctx, &scratch[..n], budget, durability);
        c.input.extend_from_slice(&scratch[used..n]);
        end
    } else {
        c.input.extend_from_slice(&scratch[..n]);
        let input = std::mem::take(&mut c.input);
        let (used, end) = consume(c, ctx, &input, budget, durability);
        c.input = input;
        c.input.drain(..used);
        end
    };
    if end == BatchEnd::AwaitIo {
        return finish_turn(wire, c, ctx.stats);
    }
    after_batch(c, end).unwrap_or(Action::Again)
}

/// `Conn::consume`, and with the AOF on, holding back the replies to any
/// mutations it logged.
fn consume(
    c: &mut Conn,
    ctx: &mut Ctx,
    data: &[u8],
    budget: &mut usize,
    durability: Option<&mut Durability>,
) -> (usize, BatchEnd) {
    let mark = HoldMark::before(c, ctx.cache);
    let (used, end) = c.consume(ctx, data, budget);
    if let Some(durability) = durability {
        mark.after(c, ctx.cache, durability);
    }
    (used, end)
}

/// With the AOF on: notes where a connection's output stood before it ran
/// requests, so that if they logged mutations, everything from there on is
/// held until the end-of-turn write (and sync, with `always`).
struct HoldMark {
    feed_len: usize,
    out_len: usize,
}

impl HoldMark {
    fn before(c: &Conn, cache: &Cache) -> HoldMark {
        HoldMark {
            feed_len: mutations::len(cache),
            out_len: c.out.len(),
        }
    }

    fn after(self, c: &mut Conn, cache: &Cache, durability: &mut Durability) {
        if mutations::len(cache) != self.feed_len {
            if c.hold.is_none() {
                c.hold = Some(self.out_len.max(c.out_pos));
            }
            // Every time, not only the first: a write that fails after an
            // earlier one this turn (before a UDP reply) must refuse every
            // connection whose changes it carried.
            durability.hold(c.fd);
        }
    }
}

/// What follows a batch that ended this way; `None`: read for more.
fn after_batch(c: &Conn, end: BatchEnd) -> Option<Action> {
    Some(match end {
        BatchEnd::NeedInput => return None,
        BatchEnd::Budget => Action::Yield,
        BatchEnd::Blocked => Action::Again,
        // Woken by the reactor when the read comes.
        BatchEnd::AwaitIo => Action::Idle,
        BatchEnd::ConnsReport => Action::ConnsReport,
        // Writes first (the next step), then closes.
        BatchEnd::Close if c.close_after_write => Action::Again,
        BatchEnd::Close => Action::Close,
        BatchEnd::Shutdown(graceful) => Action::Shutdown(graceful),
    })
}

/// The client closed its end: memcached's "normal" close.
fn closed_by_peer(c: &mut Conn) -> Action {
    c.close_reason = CloseReason::Normal;
    Action::Close
}

/// Writes what is pending at the end of a turn.
pub(crate) fn finish_turn(wire: &mut impl Wire, c: &mut Conn, stats: &mut Stats) -> Action {
    if c.has_output() && c.writable && flush(wire, c, stats).is_err() {
        return Action::Close;
    }
    Action::Idle
}

enum ReadOutcome {
    Data(usize),
    WouldBlock,
    /// End of stream: the client closed (memcached's "normal" close).
    Eof,
    Closed,
}

fn read_into(wire: &mut impl Wire, c: &mut Conn, buf: &mut [u8]) -> ReadOutcome {
    loop {
        match wire.read(&mut c.stream, buf) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => {
                // A short read drained the socket and epoll will report more
                // -- unless the peer has closed, when only reading on finds
                // the end of file.
                if n < buf.len() && !c.peer_closed && !c.stream.end_pending() {
                    c.readable = false;
                }
                return ReadOutcome::Data(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                return ReadOutcome::WouldBlock;
            }
            Err(_) => return ReadOutcome::Closed,
        }
    }
}

/// Writes as much pending output as the socket takes.
pub(crate) fn flush(wire: &mut impl Wire, c: &mut Conn, stats: &mut Stats) -> io::Result<()> {
    // Replies held for the AOF sync stay put.
    let end = c.hold.map_or(c.out.len(), |h| h.min(c.out.len()));
    while c.out_pos < end {
        match wire.write(&mut c.stream, &c.out[c.out_pos..end]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.out_pos += n;
                stats.bytes_written += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.writable = false;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if c.unsent() == 0 && c.writable && !wire.drain(&mut c.stream)? {
        c.writable = false;
    }
    if c.unsent() == 0 {
        c.out.clear();
        c.out_pos = 0;
        c.flush_mark = 0;
        if c.hold.is_some() {
            c.hold = Some(0);
        }
        // A burst of large replies should not pin memory on an idle client.
        if c.out.capacity() > 1 << 20 {
            c.out = Vec::new();
        }
    }
    // Like memcached's read buffers, returned when nothing is left in them
    // (only clients that leave partial requests ever allocate one).
    if c.input.is_empty() && c.input.capacity() > 0 {
        c.input = Vec::new();
    }
    Ok(())
}

/// The cache's work between turns: a step of hash-table growth, then, if
/// `crawl`, a batch of the LRU crawler. A metadump is written into its
/// connection (`dump_to`; `None` if it is gone, which drops the dump),
/// which takes requests again once the dump is done. Returns the crawl
/// that finished, if one did.
pub(crate) fn between_turns(
    cache: &mut Cache,
    crawl: bool,
    dump_to: Option<&mut Conn>,
) -> Option<CrawlJob> {
    if cache.hash.is_expanding() {
        cache.rehash_step(REHASH_STEP);
    }
    if !crawl {
        return None;
    }
    match cache.crawl_kind()? {
        CrawlKind::Metadump { fd } => {
            let Some(c) = dump_to else {
                cache.crawl_cancel_for(fd);
                return None;
            };
            let done = cache.crawl_step(CRAWL_STEP, &mut c.out);
            if done.is_some() {
                c.on(Event::Dumped, cache.verbose);
            }
            done
        }
        CrawlKind::Expired => cache.crawl_step(CRAWL_STEP, &mut Vec::new()),
    }
}
