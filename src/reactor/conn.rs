//! One client connection: its buffers and its state machine.
//!
//! Bytes are parsed where they were read. A connection keeps only what a
//! read left unfinished (part of a line, usually nothing), so an idle
//! connection costs a socket and a few words; values are read straight into
//! the item they will be stored in. Replies accumulate in `out` and are
//! written once per batch of requests. When `out` grows past the high-water
//! mark the connection stops taking requests until the client reads, which
//! bounds what a client that never reads can make the server hold.

use super::stream::Stream;
use crate::logger::CloseReason;
use crate::proto::auth::{Gate, GateStep};
use crate::proto::binary::{self, REQUEST_MAGIC as BINARY_REQUEST_MAGIC};
use crate::proto::request::{Ctx, Next, OUTPUT_HIGH_WATER, Pending};
use crate::proto::text;
use crate::settings::Protocol;

/// memcached's read buffer size: how much one read takes while parsing
/// lines, which decides when an over-long line is refused.
pub const READ_SIZE: usize = 16 * 1024;
/// A line longer than this without a newline closes the connection,
/// unless it is a multi-key get.
const LINE_LIMIT: usize = 2048;
/// The longest multi-key get line accepted, to keep memory bounded.
const GET_LINE_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Debug)]
pub enum State {
    /// Waiting for a request line.
    Cmd,
    /// Reading a data block into an item, then its CRLF.
    Value {
        pending: Pending,
        filled: usize,
        crlf: [u8; 2],
        crlf_got: usize,
    },
    /// Discarding a refused data block.
    Swallow(usize),
    /// Done; close without sending more.
    Closing,
    /// A `watch` log stream: input is read and ignored (`reactor/log_streams.rs`).
    Watch,
}

/// memcached's connection states. This server's state machine is smaller,
/// but at `-vvv` memcached traces every change of its own state
/// ("N: going from conn_new_cmd to conn_parse_cmd"), and the trace is part
/// of what users compare; so the equivalent state is tracked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    NewCmd,
    Waiting,
    Read,
    ParseCmd,
    Nread,
    Swallow,
    Mwrite,
    Closing,
    Closed,
    Watch,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::NewCmd => "conn_new_cmd",
            Phase::Waiting => "conn_waiting",
            Phase::Read => "conn_read",
            Phase::ParseCmd => "conn_parse_cmd",
            Phase::Nread => "conn_nread",
            Phase::Swallow => "conn_swallow",
            Phase::Mwrite => "conn_mwrite",
            Phase::Closing => "conn_closing",
            Phase::Closed => "conn_closed",
            Phase::Watch => "conn_watch",
        }
    }
}

pub struct Conn {
    pub stream: Stream,
    pub fd: i32,
    /// Unparsed input carried from one read to the next.
    pub input: Vec<u8>,
    /// `input` has been parsed as far as it goes; only more bytes help.
    pub input_seen: bool,
    /// Leading bytes of `input` known to hold no newline, so a long line
    /// arriving in many reads is scanned once, not once per read.
    line_scanned: usize,
    pub out: Vec<u8>,
    /// How much of `out` has been written.
    pub out_pos: usize,
    /// End of the replies memcached would already have written. A close
    /// for a protocol violation drops what lies past it, as memcached
    /// drops replies it had not yet sent.
    pub flush_mark: usize,
    pub state: State,
    /// Edge-triggered readiness as last reported by epoll.
    pub readable: bool,
    /// The peer has shut down its side: read until end of file, since no
    /// further edge will come.
    pub peer_closed: bool,
    pub writable: bool,
    pub close_after_write: bool,
    /// Whether the protocol has been chosen (first bytes seen).
    pub negotiated: bool,
    /// Keys of a paused multi-get already answered.
    pub resume: usize,
    /// Queued to run again without waiting for epoll (fairness yield).
    pub queued: bool,
    /// When the last request line was taken (not the last read: a client
    /// trickling bytes without finishing a line counts as idle).
    pub last_active: u32,
    /// memcached's equivalent state, for the `-vvv` trace.
    pub phase: Phase,
    /// An `lru_crawler metadump` is being written to this connection.
    pub dumping: bool,
    /// `-Y`: the gate a client passes by sending valid credentials; `None`
    /// without an authfile and once passed. Boxed because it is rarely
    /// there, and idle connections should stay small.
    pub auth: Option<Box<Gate>>,
    /// With the AOF on: output from this offset on answers mutations not yet
    /// written to it, and waits for the end of the turn.
    pub hold: Option<usize>,
    /// UDP only: where each request's replies end in `out` (memcached
    /// frames every response separately).
    pub marks: Option<Box<Vec<Mark>>>,
    /// memcached holds a response for a request since its last write
    /// point (even an empty one, for noreply), so it passes through
    /// conn_mwrite when it runs out of input (traced at `-vvv`).
    replies_queued: bool,
    /// Binary-protocol state (whether this connection speaks it, SASL).
    pub bin: binary::Session,
    /// Why it closes, for `watch connevents`.
    pub close_reason: CloseReason,
}

/// UDP: one request's place in the input and in the replies.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    /// Where the request starts in the input `consume` was given
    /// (`usize::MAX` for the end of a data block).
    pub at: usize,
    /// Where its replies end in `out`.
    pub end: usize,
    /// memcached writes the replies out right after this request (a
    /// retrieval, `mn`, a binary error...).
    pub wrote: bool,
}

/// Why `consume` stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Everything usable was consumed; more input is needed.
    NeedInput,
    /// The request budget for this turn is spent.
    Budget,
    /// Output is over the high-water mark; wait for the client to read.
    Blocked,
    /// The connection must close (after writing, if `close_after_write`).
    Close,
    /// `stats conns` was asked: the reactor must append its report.
    ConnsReport,
    /// `shutdown` was requested (true: `shutdown graceful`).
    Shutdown(bool),
}

impl Conn {
    /// `authenticating`: `-Y` is on, so the client must authenticate first.
    pub fn new(stream: Stream, fd: i32, now: u32, authenticating: bool) -> Conn {
        Conn {
            stream,
            fd,
            input: Vec::new(),
            input_seen: false,
            line_scanned: 0,
            out: Vec::new(),
            out_pos: 0,
            flush_mark: 0,
            state: State::Cmd,
            readable: false,
            peer_closed: false,
            writable: true,
            close_after_write: false,
            negotiated: false,
            resume: 0,
            queued: false,
            last_active: now,
            phase: Phase::NewCmd,
            dumping: false,
            auth: authenticating.then(Box::<Gate>::default),
            hold: None,
            marks: None,
            replies_queued: false,
            bin: binary::Session::default(),
            close_reason: CloseReason::Error,
        }
    }

    /// A listener with `-B ascii|binary` fixes the protocol up front.
    pub fn choose_protocol(&mut self, protocol: Protocol) {
        self.negotiated = protocol != Protocol::Negotiating;
        self.bin.binary = protocol == Protocol::Binary;
    }

    /// UDP: every datagram starts afresh; nothing carries over from the
    /// last one (a data block it left unfinished is dropped).
    pub fn start_datagram(&mut self, ctx: &mut Ctx) {
        if let State::Value { pending, .. } = self.state {
            ctx.cache.free_unlinked(pending.item);
        }
        self.state = State::Cmd;
        self.input.clear();
        self.input_seen = false;
        self.line_scanned = 0;
        self.out.clear();
        self.out_pos = 0;
        self.flush_mark = 0;
        self.resume = 0;
        self.dumping = false;
        self.close_after_write = false;
        self.negotiated = true;
        self.marks.get_or_insert_with(Box::default).clear();
    }

    /// UDP: notes that the replies so far end a response. `before` is
    /// where the output stood before the request ran.
    pub(super) fn mark(&mut self, at: usize, before: usize, wrote: bool) {
        let Some(marks) = &mut self.marks else {
            return;
        };
        // A get with a too-long key cut the output back to the last write
        // point: responses marked past it are gone.
        let cut = self.flush_mark;
        if before > cut && self.out.get(cut..) == Some(text::GET_KEY_TOO_LONG) {
            marks.retain(|m| m.end <= cut);
        }
        marks.push(Mark {
            at,
            end: self.out.len(),
            wrote,
        });
    }

    /// Moves to memcached's state `to`, tracing the change at `-vvv`.
    pub fn go(&mut self, to: Phase, verbose: u8) {
        if verbose > 2 && self.phase != to {
            eprintln!(
                "{}: going from {} to {}",
                self.fd,
                self.phase.name(),
                to.name()
            );
        }
        self.phase = to;
    }

    /// The states memcached passes through when it runs out of complete
    /// requests: flush pending replies, then wait. Writing them costs
    /// memcached one more pass through conn_new_cmd, and if that pass was
    /// over the turn's `-R` budget it counts a yield there and stops (it
    /// goes on to conn_waiting only at the next event, which `go_read`
    /// traces). UDP counts its own yields per datagram.
    pub(super) fn go_wait(&mut self, partial: bool, budget: usize, ctx: &mut Ctx) {
        let verbose = ctx.settings.verbose;
        if partial {
            self.go(Phase::ParseCmd, verbose);
        }
        if std::mem::take(&mut self.replies_queued)
            || self.out.len() > self.flush_mark.max(self.out_pos)
        {
            self.go(Phase::Mwrite, verbose);
            self.go(Phase::NewCmd, verbose);
            if budget <= 1 && self.marks.is_none() {
                ctx.stats.conn_yields += 1;
                return;
            }
            if partial {
                self.go(Phase::ParseCmd, verbose);
            }
        }
        self.go(Phase::Waiting, verbose);
    }

    /// Before reading the socket for a new request.
    pub fn go_read(&mut self, verbose: u8) {
        if self.phase == Phase::NewCmd {
            self.go(Phase::Waiting, verbose);
        }
        if self.phase == Phase::Waiting {
            self.go(Phase::Read, verbose);
        }
    }

    /// memcached's name for what this connection is doing, for `stats conns`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Cmd => "conn_waiting",
            State::Value { .. } => "conn_nread",
            State::Swallow(_) => "conn_swallow",
            State::Closing => "conn_closing",
            State::Watch => "conn_watch",
        }
    }

    pub fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }

    pub fn blocked_on_output(&self) -> bool {
        self.unsent() > OUTPUT_HIGH_WATER || self.dumping
    }

    /// How much the next read may take while parsing lines, mirroring
    /// memcached's fixed read buffer.
    pub fn read_size(&self) -> usize {
        if self.input.len() >= READ_SIZE {
            // A multi-key get line longer than the buffer: memcached grows
            // its buffer and keeps reading in full.
            return READ_SIZE;
        }
        READ_SIZE - self.input.len()
    }

    /// The value bytes still to come, if a large data block is being read
    /// and nothing is buffered: the reactor then reads it straight into the
    /// item.
    pub fn direct_value_read(&self) -> Option<(Pending, usize)> {
        match self.state {
            State::Value {
                pending, filled, ..
            } if self.input.is_empty()
                && !self.bin.binary
                && pending.nbytes - filled >= READ_SIZE =>
            {
                Some((pending, filled))
            }
            _ => None,
        }
    }

    /// Frees what an unfinished request holds (a half-read item).
    pub fn abandon(&mut self, ctx: &mut Ctx) {
        if let State::Value { pending, .. } = self.state {
            ctx.cache.free_unlinked(pending.item);
        }
        self.state = State::Closing;
    }

    /// Parses and executes requests from `data`; returns bytes consumed and
    /// why it stopped. `budget` counts down once per request.
    pub fn consume(&mut self, ctx: &mut Ctx, data: &[u8], budget: &mut usize) -> (usize, Stop) {
        ctx.cache.logger.cfd = ctx.fd;
        let (used, why) = self.consume_inner(ctx, data, budget);
        // Replies are written (or dropped) now: items that `mg` replies
        // referenced are free to change in place again.
        ctx.cache.unpin_all();
        self.input_seen = why == Stop::NeedInput;
        match why {
            Stop::Close if !self.close_after_write => self.out.truncate(self.flush_mark),
            Stop::Shutdown(_) => self.out.truncate(self.flush_mark),
            _ => self.flush_mark = self.out.len(),
        }
        (used, why)
    }

    fn consume_inner(&mut self, ctx: &mut Ctx, data: &[u8], budget: &mut usize) -> (usize, Stop) {
        let mut pos = 0;
        if self.phase == Phase::Read && !data.is_empty() {
            self.go(Phase::ParseCmd, ctx.settings.verbose);
        }
        if !self.negotiated && !data.is_empty() {
            self.negotiated = true;
            // memcached picks the binary protocol on a first byte of 0x80.
            let binary = data[0] == BINARY_REQUEST_MAGIC;
            if ctx.settings.verbose > 1 {
                let name = if binary { "binary" } else { "ascii" };
                eprintln!("{}: Client using the {name} protocol", self.fd);
            }
            self.bin.binary = binary;
        }
        if self.bin.binary {
            return self.consume_binary(ctx, data, budget);
        }
        loop {
            match &mut self.state {
                State::Closing => return (pos, Stop::Close),
                State::Watch => return (data.len(), Stop::NeedInput),
                State::Swallow(_) => {
                    pos += self.swallow(&data[pos..], ctx.settings.verbose);
                    if matches!(self.state, State::Swallow(_)) {
                        return (pos, Stop::NeedInput);
                    }
                }
                State::Value { .. } => {
                    pos += self.fill_value(ctx, &data[pos..]);
                    if matches!(self.state, State::Value { .. }) {
                        return (pos, Stop::NeedInput);
                    }
                    self.go(Phase::NewCmd, ctx.settings.verbose);
                }
                State::Cmd => {
                    if self.blocked_on_output() {
                        return (pos, Stop::Blocked);
                    }
                    if *budget == 0 {
                        return (pos, Stop::Budget);
                    }
                    if let Some(gate) = self.auth.as_mut() {
                        match gate.consume(ctx, &data[pos..], &mut self.out, self.out_pos) {
                            (used, GateStep::Answered) => {
                                pos += used;
                                *budget -= 1;
                                if gate.open {
                                    self.auth = None;
                                }
                                continue;
                            }
                            (used, GateStep::NeedInput) => {
                                self.go_wait(used < data.len() - pos, *budget, ctx);
                                return (pos + used, Stop::NeedInput);
                            }
                            (_, GateStep::Close) => {
                                self.state = State::Closing;
                                return (pos, Stop::Close);
                            }
                        }
                    }
                    let rest = &data[pos..];
                    let scanned = self.line_scanned.min(rest.len());
                    let Some(nl) = memchr(b'\n', &rest[scanned..]).map(|i| i + scanned) else {
                        self.line_scanned = rest.len();
                        if rest.len() > LINE_LIMIT && !self.may_grow_line(rest) {
                            self.state = State::Closing;
                            self.go(Phase::ParseCmd, ctx.settings.verbose);
                            self.go(Phase::Closing, ctx.settings.verbose);
                            return (pos, Stop::Close);
                        }
                        self.go_wait(!rest.is_empty(), *budget, ctx);
                        return (pos, Stop::NeedInput);
                    };
                    self.go(Phase::ParseCmd, ctx.settings.verbose);
                    self.line_scanned = 0;
                    // memcached's last_cmd_time, which `-o idle_timeout`
                    // and `stats conns` measure from.
                    self.last_active = ctx.cache.now();
                    let mut line = &rest[..nl];
                    if line.len() > 1 && line[line.len() - 1] == b'\r' {
                        line = &line[..line.len() - 1];
                    }
                    *budget -= 1;
                    let before = self.out.len();
                    match text::process_line(ctx, line, &mut self.out, self.flush_mark, self.resume)
                    {
                        Next::Suspend(done) => {
                            self.resume = done;
                            return (pos, Stop::Blocked);
                        }
                        next => {
                            self.resume = 0;
                            self.mark(
                                pos,
                                before,
                                matches!(next, Next::Flush | Next::FlushAfterLine),
                            );
                            pos += nl + 1;
                            self.trace_next(next, ctx.settings.verbose);
                            if matches!(next, Next::Flush | Next::FlushAfterLine) {
                                ctx.cache.unpin_all();
                            }
                            if let Some(stop) = self.apply(next) {
                                return (pos, stop);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Discards what is left of a refused value (ascii) or body (binary)
    /// from `data`; returns the bytes taken. The next command starts once
    /// all of it is gone.
    pub(super) fn swallow(&mut self, data: &[u8], verbose: u8) -> usize {
        let State::Swallow(left) = &mut self.state else {
            return 0;
        };
        let n = (*left).min(data.len());
        *left -= n;
        if *left == 0 {
            self.state = State::Cmd;
            self.go(Phase::NewCmd, verbose);
        }
        n
    }

    /// memcached's state after a request line.
    fn trace_next(&mut self, next: Next, v: u8) {
        if v <= 2 {
            return;
        }
        match next {
            Next::Continue | Next::Suspend(_) | Next::StatsConns | Next::Dump => {
                self.go(Phase::NewCmd, v)
            }
            Next::Watch => self.go(Phase::Watch, v),
            Next::Flush => {
                self.go(Phase::Mwrite, v);
                self.go(Phase::NewCmd, v);
            }
            Next::FlushAfterLine => {
                self.go(Phase::NewCmd, v);
                self.go(Phase::Mwrite, v);
                self.go(Phase::NewCmd, v);
            }
            Next::ReadValue(_) => self.go(Phase::Nread, v),
            // Traced by the protocol layer, which knows the order.
            Next::Swallow(_) => self.phase = Phase::Swallow,
            Next::CloseAfterWrite => self.go(Phase::Mwrite, v),
            Next::Close | Next::Shutdown(_) => self.go(Phase::Closing, v),
        }
    }

    /// memcached keeps reading a long line only if it is a multi-key get.
    fn may_grow_line(&self, rest: &[u8]) -> bool {
        let spaces = rest.iter().take_while(|&&b| b == b' ').count();
        let body = &rest[spaces..];
        spaces <= 100
            && (body.starts_with(b"get ") || body.starts_with(b"gets "))
            && rest.len() <= GET_LINE_LIMIT
    }

    pub(super) fn apply(&mut self, next: Next) -> Option<Stop> {
        self.replies_queued = !matches!(next, Next::Flush | Next::FlushAfterLine);
        match next {
            Next::Continue | Next::Suspend(_) => None,
            Next::StatsConns => Some(Stop::ConnsReport),
            Next::Dump => {
                self.dumping = true;
                Some(Stop::Blocked)
            }
            Next::Watch => {
                self.state = State::Watch;
                None
            }
            Next::Flush | Next::FlushAfterLine => {
                self.flush_mark = self.out.len();
                None
            }
            Next::ReadValue(pending) => {
                // A binary value has no line ending after it: start as if
                // it had been read.
                let crlf_got = if self.bin.binary { 2 } else { 0 };
                self.state = State::Value {
                    pending,
                    filled: 0,
                    crlf: *b"\r\n",
                    crlf_got,
                };
                None
            }
            Next::Swallow(n) => {
                self.state = State::Swallow(n);
                None
            }
            Next::Close => {
                self.state = State::Closing;
                Some(Stop::Close)
            }
            Next::CloseAfterWrite => {
                if !self.bin.binary {
                    // Only `quit` gets here in ascii.
                    self.close_reason = CloseReason::Normal;
                }
                self.close_after_write = true;
                self.state = State::Closing;
                Some(Stop::Close)
            }
            Next::Shutdown(graceful) => {
                self.state = State::Closing;
                Some(Stop::Shutdown(graceful))
            }
        }
    }

    /// Copies data-block bytes into the pending item; returns bytes used.
    pub(super) fn fill_value(&mut self, ctx: &mut Ctx, data: &[u8]) -> usize {
        let State::Value {
            pending,
            filled,
            crlf,
            crlf_got,
        } = &mut self.state
        else {
            return 0;
        };
        let mut used = 0;
        while *filled < pending.nbytes && used < data.len() {
            let window = ctx.cache.value_window_mut(pending.item, *filled);
            let n = window.len().min(data.len() - used);
            window[..n].copy_from_slice(&data[used..used + n]);
            *filled += n;
            used += n;
        }
        while *filled == pending.nbytes && *crlf_got < 2 && used < data.len() {
            crlf[*crlf_got] = data[used];
            *crlf_got += 1;
            used += 1;
        }
        if *filled == pending.nbytes && *crlf_got == 2 {
            let (pending, ok) = (*pending, crlf == b"\r\n");
            self.state = State::Cmd;
            if self.bin.binary {
                // Binary values carry no line ending (the state starts with
                // it "read").
                let next = binary::complete_nread(ctx, &mut self.bin, pending, &mut self.out);
                let wrote = matches!(next, Next::Flush);
                if wrote {
                    self.flush_mark = self.out.len();
                    ctx.cache.unpin_all();
                }
                self.mark(usize::MAX, 0, wrote);
            } else {
                text::complete_store(ctx, pending, ok, &mut self.out);
                self.mark(usize::MAX, 0, false);
            }
        }
        used
    }

    /// Records `n` value bytes read directly into the item by the reactor.
    pub fn value_read_directly(&mut self, n: usize) {
        if let State::Value { filled, .. } = &mut self.state {
            *filled += n;
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}
