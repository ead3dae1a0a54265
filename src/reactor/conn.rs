//! One client connection: its buffers and its state machine.
//!
//! Bytes are parsed where they were read. A connection keeps only what a
//! read left unfinished (part of a line, usually nothing), so an idle
//! connection costs a socket and a few words; values are read straight into
//! the item they will be stored in. Replies accumulate in `out` and are
//! written once per batch of requests. When `out` grows past the high-water
//! mark the connection stops taking requests until the client reads, which
//! bounds what a client that never reads can make the server hold.
//! Finding whole requests in the input is `text_conn.rs`'s and
//! `binary_conn.rs`'s; running a turn on the socket is `turn.rs`'s.
//!
//! # The state machine
//!
//! A connection is always in one [`State`]. The states are memcached's
//! `conn_*` states, because at `-vvv` memcached traces every change of its
//! own ("12: going from conn_new_cmd to conn_parse_cmd") and users compare
//! that trace; a few carry what only they need (the value being read, the
//! bytes left to swallow...). Every change is decided in [`Conn::on`], from
//! an [`Event`], and traced in one place (`go`). memcached passes through
//! some states on the way to another (conn_mwrite when it writes): `on`
//! walks the same path, so the trace shows each step.
//!
//! ```text
//!              Reading             Reading
//!   NewCmd -------------> Waiting ----------> Read
//!    ^  ^                  ^   ^   Drained     |
//!    |  |                  |   +---------------+
//!    |  |                  |                   | Arrived
//!    |  |      OutOfInput  |                   v
//!    |  |   (via Mwrite) --+-------------- ParseCmd <-- Parsing (from NewCmd,
//!    |  |                                     |         Waiting, Paused)
//!    |  +--- Continue, Flush (via Mwrite) ----+ Handled(next):
//!    |                                        |
//!    +-- Stored ----- Nread    <--------------+ ReadValue
//!    +-- Swallowed -- Swallow  <--------------+ Swallow
//!    +-- Dumped ----- Dumping  <--------------+ Dump
//!                     Paused   <--------------+ Suspend (a get waits for the client)
//!                     ExtWait  <--------------+ AwaitExt (a get waits for flash)
//!                     Watch    <--------------+ Watch
//!                     Draining <--------------+ CloseAfterWrite (quit: write, close)
//!                     Closing  <--------------+ Close, Shutdown; Junk from any state
//!
//!   any --Close--> Closing --> Closed      (the reactor closes the connection)
//!   any --DatagramDone--> Read             (UDP, after each datagram)
//! ```

use super::stream::Stream;
use crate::logger::CloseReason;
use crate::proto::auth::Gate;
use crate::proto::binary::{self, REQUEST_MAGIC as BINARY_REQUEST_MAGIC};
use crate::proto::request::{Ctx, Next, OUTPUT_HIGH_WATER, Pending, resp_cap};
use crate::proto::text;
use crate::settings::Protocol;
use crate::slab::ChunkRef;

/// memcached's read buffer size: how much one read takes while parsing
/// lines, which decides when an over-long line is refused.
pub(crate) const READ_SIZE: usize = 16 * 1024;

/// What a connection is doing: memcached's connection states (see the
/// module doc), with what each needs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum State {
    /// conn_new_cmd: ready for the next request.
    NewCmd,
    /// conn_waiting: out of complete requests; waiting for the socket.
    Waiting,
    /// conn_read: reading the socket.
    Read,
    /// conn_parse_cmd: a request is in hand.
    ParseCmd,
    /// conn_mwrite: replies are written out (only passed through; see
    /// `Draining`).
    Mwrite,
    /// A multi-key get stopped after `keys_done` keys until the client
    /// reads; its line then runs again from there. memcached is still in
    /// conn_parse_cmd.
    Paused { keys_done: usize },
    /// A get waits for a value being read from flash (memcached's
    /// conn_io_queue); its request then runs again from key `keys_done`.
    ExtWait { keys_done: usize },
    /// `lru_crawler metadump` is being written: no requests until the
    /// crawler has finished it (memcached: conn_new_cmd).
    Dumping,
    /// conn_nread: a data block being read into its item (the connection's
    /// `value`, kept outside the state so that every other state change
    /// stores a few bytes, not the whole block's bookkeeping).
    Nread,
    /// conn_swallow: discarding `left` more bytes of a refused data block.
    Swallow { left: usize },
    /// The replies go out, then the connection closes (`quit`, or a binary
    /// request that ends the connection). memcached is in conn_mwrite
    /// meanwhile, or conn_new_cmd for binary.
    Draining { binary: bool },
    /// conn_closing: done; close without sending more.
    Closing,
    /// conn_closed: gone.
    Closed,
    /// conn_watch: a `watch` log stream; input is read and ignored
    /// (`reactor/log_streams.rs`).
    Watch,
}

/// A data block being read into its item, then its CRLF.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Value {
    pending: Pending,
    /// Value bytes read so far.
    filled: usize,
    /// The two bytes after the value, which must be CRLF.
    crlf: [u8; 2],
    crlf_got: u8,
}

impl Value {
    /// A binary value has no line ending after it: it starts as if read.
    fn new(pending: Pending, binary: bool) -> Value {
        Value {
            pending,
            filled: 0,
            crlf: *b"\r\n",
            crlf_got: if binary { 2 } else { 0 },
        }
    }
}

impl State {
    /// memcached's name for the state, as the `-vvv` trace prints it.
    fn name(&self) -> &'static str {
        use State::*;
        match self {
            NewCmd | Dumping | Draining { binary: true } => "conn_new_cmd",
            Waiting => "conn_waiting",
            Read => "conn_read",
            ParseCmd | Paused { .. } => "conn_parse_cmd",
            ExtWait { .. } => "conn_io_queue",
            Mwrite | Draining { binary: false } => "conn_mwrite",
            Nread => "conn_nread",
            Swallow { .. } => "conn_swallow",
            Closing => "conn_closing",
            Closed => "conn_closed",
            Watch => "conn_watch",
        }
    }

    /// Closing, or closing once the replies are out.
    pub(crate) fn closing(&self) -> bool {
        matches!(
            self,
            State::Draining { .. } | State::Closing | State::Closed
        )
    }

    /// Between requests and not held by a dump: what `-o idle_timeout`
    /// may close.
    pub(crate) fn between_requests(&self) -> bool {
        use State::*;
        matches!(
            self,
            NewCmd | Waiting | Read | ParseCmd | Mwrite | Paused { .. } | ExtWait { .. }
        )
    }
}

/// What moves a connection from one state to another (see [`Conn::on`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    /// The reactor is about to read the socket for requests.
    Reading,
    /// The socket had nothing more.
    Drained,
    /// `consume` was given bytes.
    Arrived,
    /// A request is in hand (ascii: a whole line; binary: any bytes).
    Parsing,
    /// The protocol handled a request, and says what comes next.
    Handled(Next),
    /// A data block is complete and stored; `wrote`: its reply is written
    /// out at once (a binary error).
    Stored { wrote: bool },
    /// The refused data block is gone.
    Swallowed,
    /// No complete request is left: `partial` if part of one is, `budget`
    /// what is left of the turn's.
    OutOfInput { partial: bool, budget: usize },
    /// The input breaks the protocol: close, sending nothing more.
    Junk,
    /// The metadump is written.
    Dumped,
    /// A watcher went away: memcached's logger thread closes it, untraced.
    WatcherGone,
    /// UDP: the datagram is served; back to reading the socket.
    DatagramDone,
    /// The reactor closes the connection.
    Close,
}

/// Why `consume` stopped taking requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BatchEnd {
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
    /// A get waits for a flash read; nothing more until it comes.
    AwaitIo,
}

pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) fd: i32,
    /// Changed only by `on`.
    state: State,
    /// The data block being read while `state` is `Nread`.
    value: Option<Box<Value>>,
    /// Unparsed input carried from one read to the next.
    pub(crate) input: Vec<u8>,
    /// `input` has been parsed as far as it goes; only more bytes help.
    pub(crate) input_seen: bool,
    /// Leading bytes of `input` known to hold no newline, so a long line
    /// arriving in many reads is scanned once, not once per read.
    pub(super) line_scanned: usize,
    pub(crate) out: Vec<u8>,
    /// How much of `out` has been written.
    pub(crate) out_pos: usize,
    /// End of the replies memcached would already have written. A close
    /// for a protocol violation drops what lies past it, as memcached
    /// drops replies it had not yet sent.
    pub(crate) flush_mark: usize,
    /// Edge-triggered readiness as last reported by epoll.
    pub(crate) readable: bool,
    /// The peer has shut down its side: read until end of file, since no
    /// further edge will come.
    pub(crate) peer_closed: bool,
    pub(crate) writable: bool,
    /// Close once the replies are written: after `quit` (as memcached's
    /// flag of that name), or when a close must wait for the AOF.
    pub(crate) close_after_write: bool,
    /// Whether the protocol has been chosen (first bytes seen).
    negotiated: bool,
    /// Queued to run again without waiting for epoll (fairness yield).
    pub(crate) queued: bool,
    /// When the last request line was taken (not the last read: a client
    /// trickling bytes without finishing a line counts as idle).
    pub(crate) last_active: u32,
    /// `-Y`: the gate a client passes by sending valid credentials; `None`
    /// without an authfile and once passed. Boxed because it is rarely
    /// there, and idle connections should stay small.
    pub(super) auth: Option<Box<Gate>>,
    /// With the AOF on: output from this offset on answers mutations not yet
    /// written to it, and waits for the end of the turn.
    pub(crate) hold: Option<usize>,
    /// UDP only: where each request's replies end in `out` (memcached
    /// frames every response separately). Boxed: one word, not three, in
    /// every TCP connection, which never has any.
    #[allow(clippy::box_collection)]
    pub(crate) marks: Option<Box<Vec<Mark>>>,
    /// memcached holds a response for a request since its last write
    /// point (even an empty one, for noreply), so it passes through
    /// conn_mwrite when it runs out of input (traced at `-vvv`).
    replies_queued: bool,
    /// Binary-protocol state (whether this connection speaks it, SASL).
    pub(crate) bin: binary::Session,
    /// Why it closes, for `watch connevents`.
    pub(crate) close_reason: CloseReason,
}

// Every client costs one of these: keep it small.
const _: () = assert!(size_of::<Conn>() <= 256);

/// UDP: one request's place in the input and in the replies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    /// Where the request starts in the input `consume` was given
    /// (`usize::MAX` for the end of a data block).
    pub(crate) at: usize,
    /// Where its replies end in `out`.
    pub(crate) end: usize,
    /// memcached writes the replies out right after this request (a
    /// retrieval, `mn`, a binary error...).
    pub(crate) wrote: bool,
}

impl Conn {
    /// `authenticating`: `-Y` is on, so the client must authenticate first.
    pub(crate) fn new(stream: Stream, fd: i32, now: u32, authenticating: bool) -> Conn {
        Conn {
            stream,
            fd,
            state: State::NewCmd,
            value: None,
            input: Vec::new(),
            input_seen: false,
            line_scanned: 0,
            out: Vec::new(),
            out_pos: 0,
            flush_mark: 0,
            readable: false,
            peer_closed: false,
            writable: true,
            close_after_write: false,
            negotiated: false,
            queued: false,
            last_active: now,
            auth: authenticating.then(Box::<Gate>::default),
            hold: None,
            marks: None,
            replies_queued: false,
            bin: binary::Session::default(),
            close_reason: CloseReason::Error,
        }
    }

    /// The connection a UDP socket's datagrams run on. memcached's sits in
    /// conn_read between datagrams; the protocol is picked per datagram.
    /// (UDP and -Y are refused together at start: no authentication here.)
    pub(crate) fn datagrams(stream: Stream, fd: i32, now: u32) -> Conn {
        Conn {
            state: State::Read,
            negotiated: true,
            ..Conn::new(stream, fd, now, false)
        }
    }

    /// A listener with `-B ascii|binary` fixes the protocol up front.
    pub(crate) fn choose_protocol(&mut self, protocol: Protocol) {
        self.negotiated = protocol != Protocol::Negotiating;
        self.bin.binary = protocol == Protocol::Binary;
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// The state machine: where `event` takes the connection from its
    /// state, through the states memcached passes on the way.
    ///
    /// The events every request brings are told apart here, inlined where
    /// each is raised; the rest go to `on_any`, which knows them all.
    #[inline(always)]
    pub(crate) fn on(&mut self, event: Event, v: u8) {
        use State::*;
        match (event, &self.state) {
            (Event::Reading, NewCmd) => self.path([Waiting, Read], v),
            (Event::Reading, Waiting) => self.go(Read, v),
            (Event::Arrived, Read) | (Event::Parsing, _) => self.go(ParseCmd, v),
            (Event::Reading | Event::Arrived, _) => {}
            (Event::Handled(Next::Flush), _) => self.path([Mwrite, NewCmd], v),
            (Event::Handled(Next::Continue), _) => self.go(NewCmd, v),
            (Event::Handled(Next::ReadValue(pending)), _) => self.read_value(pending, v),
            (Event::Stored { wrote: false }, _) => self.go(NewCmd, v),
            (Event::OutOfInput { partial, budget }, _) => self.out_of_input(partial, budget, v),
            _ => self.on_any(event, v),
        }
    }

    /// A data block follows: conn_nread.
    fn read_value(&mut self, pending: Pending, v: u8) {
        let value = Value::new(pending, self.bin.binary);
        // Boxed once per connection, reused by its next blocks.
        match &mut self.value {
            Some(held) => **held = value,
            None => self.value = Some(Box::new(value)),
        }
        self.go(State::Nread, v)
    }

    /// No complete request is left in the input.
    fn out_of_input(&mut self, partial: bool, budget: usize, v: u8) {
        use State::*;
        // Writing what memcached holds costs it one more pass through
        // conn_new_cmd; if that pass was over the turn's budget it yields
        // there, and waits at the next event (`Reading`). UDP counts its
        // own yields per datagram.
        let unwritten = std::mem::take(&mut self.replies_queued)
            || self.out.len() > self.flush_mark.max(self.out_pos);
        let yields = unwritten && budget <= 1 && self.marks.is_none();
        match (partial, unwritten) {
            (true, true) if yields => self.path([ParseCmd, Mwrite, NewCmd], v),
            (false, true) if yields => self.path([Mwrite, NewCmd], v),
            (true, true) => self.path([ParseCmd, Mwrite, NewCmd, ParseCmd, Waiting], v),
            (false, true) => self.path([Mwrite, NewCmd, Waiting], v),
            (true, false) => self.path([ParseCmd, Waiting], v),
            (false, false) => self.go(Waiting, v),
        }
    }

    #[inline(never)]
    fn on_any(&mut self, event: Event, v: u8) {
        use State::*;
        let binary = self.bin.binary;
        match (event, &self.state) {
            (Event::Reading, NewCmd) => self.path([Waiting, Read], v),
            (Event::Reading, Waiting) => self.go(Read, v),
            (Event::Drained, Read) => self.go(Waiting, v),
            (Event::Arrived, Read) | (Event::Parsing, _) => self.go(ParseCmd, v),
            (Event::Handled(next), _) => match next {
                Next::Continue | Next::StatsConns => self.go(NewCmd, v),
                Next::Suspend(keys_done) => self.go(Paused { keys_done }, v),
                Next::AwaitExt(keys_done) => self.go(ExtWait { keys_done }, v),
                Next::Dump => self.go(Dumping, v),
                Next::Watch => self.go(Watch, v),
                Next::Flush => self.path([Mwrite, NewCmd], v),
                // `mn`: its reply went through out_string first.
                Next::FlushAfterLine => self.path([NewCmd, Mwrite, NewCmd], v),
                Next::ReadValue(pending) => self.read_value(pending, v),
                // The text protocol traced the way here itself: memcached
                // swallows before the lookup that clears the old value.
                Next::Swallow(left) if !binary => self.state = Swallow { left },
                Next::Swallow(left) => self.go(Swallow { left }, v),
                Next::CloseAfterWrite if !binary => self.go(Draining { binary }, v),
                Next::CloseAfterWrite if self.bin.closing == binary::Closing::Quit => {
                    self.path([NewCmd, Mwrite, Draining { binary }], v)
                }
                Next::CloseAfterWrite => self.path([Mwrite, Draining { binary }], v),
                Next::Close | Next::Shutdown(_) => self.go(Closing, v),
            },
            (Event::Stored { wrote: true }, _) => self.path([Mwrite, NewCmd], v),
            (Event::Stored { .. } | Event::Swallowed, _) | (Event::Dumped, Dumping) => {
                self.go(NewCmd, v)
            }
            (Event::OutOfInput { partial, budget }, _) => self.out_of_input(partial, budget, v),
            (Event::Junk, _) => self.go(Closing, v),
            (Event::WatcherGone, _) => {
                if v > 1 {
                    eprintln!("<{} connection closing from side thread.", self.fd);
                }
                self.state = Closing;
            }
            (Event::DatagramDone, Draining { .. }) => self.path([NewCmd, Closing, Read], v),
            (Event::DatagramDone, _) => self.go(Read, v),
            (Event::Close, _) => self.path([Closing, Closed], v),
            (Event::Reading | Event::Drained | Event::Arrived | Event::Dumped, _) => {}
        }
    }

    /// Passes through `through` in order. Untraced, only the last store
    /// is seen, so it is the only one made.
    #[inline]
    fn path<const N: usize>(&mut self, through: [State; N], v: u8) {
        let quiet = |to: &State| !matches!(to, State::Draining { binary: true });
        if v <= 1 && through.iter().all(quiet) {
            self.state = through[N - 1];
            return;
        }
        for to in through {
            self.go(to, v);
        }
    }

    /// Enters `to`, tracing the change at `-vvv` as memcached does, with
    /// the lines memcached prints along the way. Every request passes here
    /// two or three times: without `-vv` and the binary protocol's closing
    /// it is one store, inlined.
    #[inline]
    fn go(&mut self, to: State, v: u8) {
        if v <= 1 && !matches!(to, State::Draining { binary: true }) {
            self.state = to;
            return;
        }
        self.go_traced(to, v);
    }

    #[inline(never)]
    fn go_traced(&mut self, to: State, v: u8) {
        match to {
            // Why a binary connection closes is told on the way out of
            // conn_mwrite.
            State::Draining { binary: true } => {
                self.bin.take_closing(self.fd, v);
            }
            State::Closed if v > 1 => eprintln!("<{} connection closed.", self.fd),
            _ => {}
        }
        if v > 2 && self.state.name() != to.name() {
            let (fd, from, to) = (self.fd, self.state.name(), to.name());
            eprintln!("{fd}: going from {from} to {to}");
        }
        self.state = to;
    }

    /// UDP: every datagram starts afresh; nothing carries over from the
    /// last one (see `end_datagram`).
    pub(crate) fn start_datagram(&mut self) {
        self.input.clear();
        self.input_seen = false;
        self.line_scanned = 0;
        self.out.clear();
        self.out_pos = 0;
        self.flush_mark = 0;
        self.close_after_write = false;
        self.negotiated = true;
        self.marks.get_or_insert_with(Box::default).clear();
    }

    /// UDP: the datagram is served. What it left unfinished (a data block,
    /// a dump) is dropped with it, and memcached goes back to reading.
    pub(crate) fn end_datagram(&mut self, ctx: &mut Ctx) {
        self.free_value(ctx);
        self.on(Event::DatagramDone, ctx.settings.verbose);
        self.start_datagram();
    }

    /// The connection is closing: frees what an unfinished request holds
    /// (a half-read item) and traces the close.
    pub(crate) fn shut(&mut self, ctx: &mut Ctx) {
        self.free_value(ctx);
        self.on(Event::Close, ctx.settings.verbose);
    }

    /// Frees a half-read item; the caller moves the state on at once.
    fn free_value(&mut self, ctx: &mut Ctx) {
        if let (State::Nread, Some(value)) = (&self.state, self.value.as_deref()) {
            ctx.cache.free_unlinked(value.pending.item);
        }
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

    /// memcached's name for what this connection is doing, for `stats conns`.
    pub(crate) fn state_name(&self) -> &'static str {
        match self.state {
            State::Nread => "conn_nread",
            State::Swallow { .. } => "conn_swallow",
            State::Draining { .. } | State::Closing | State::Closed => "conn_closing",
            State::Watch => "conn_watch",
            _ => "conn_waiting",
        }
    }

    pub(crate) fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Replies not yet written, in `out` or held by the TLS session.
    pub(crate) fn has_output(&self) -> bool {
        self.unsent() > 0 || self.stream.holds_output()
    }

    pub(crate) fn blocked_on_output(&self) -> bool {
        self.unsent() > OUTPUT_HIGH_WATER || matches!(self.state, State::Dumping)
    }

    pub(crate) fn is_paused(&self) -> bool {
        matches!(self.state, State::Paused { .. } | State::ExtWait { .. })
    }

    /// Waiting for a flash read: the reactor runs it again when it comes.
    pub(crate) fn awaits_ext(&self) -> bool {
        matches!(self.state, State::ExtWait { .. })
    }

    /// The keys a paused multi-key get has answered (0: none is paused).
    pub(super) fn keys_done(&self) -> usize {
        match self.state {
            State::Paused { keys_done } | State::ExtWait { keys_done } => keys_done,
            _ => 0,
        }
    }

    /// Whether a turn now would start by reading, not with buffered input
    /// or a paused get: memcached runs one request of such a turn before it
    /// starts counting `-R`, so it gets one extra.
    pub(crate) fn starts_by_reading(&self) -> bool {
        self.input.is_empty() && !self.is_paused()
    }

    /// How much the next read may take while parsing lines, mirroring
    /// memcached's fixed read buffer.
    pub(crate) fn read_size(&self) -> usize {
        if self.input.len() >= READ_SIZE {
            // A multi-key get line longer than the buffer: memcached grows
            // its buffer and keeps reading in full.
            return READ_SIZE;
        }
        READ_SIZE - self.input.len()
    }

    /// The item and how much of its value is in, if a large data block is
    /// being read and nothing is buffered: the reactor then reads it
    /// straight into the item.
    pub(crate) fn direct_value_read(&self) -> Option<(ChunkRef, usize)> {
        match (self.state, self.value.as_deref()) {
            (
                State::Nread,
                Some(&Value {
                    pending, filled, ..
                }),
            ) if self.input.is_empty()
                && !self.bin.binary
                && pending.nbytes - filled >= READ_SIZE =>
            {
                Some((pending.item, filled))
            }
            _ => None,
        }
    }

    /// Records `n` value bytes read directly into the item by the reactor.
    pub(crate) fn value_read_directly(&mut self, n: usize) {
        if let (State::Nread, Some(value)) = (&self.state, self.value.as_deref_mut()) {
            value.filled += n;
        }
    }

    /// Parses and executes requests from `data`; returns bytes consumed and
    /// why it stopped. `budget` counts down once per request.
    pub(crate) fn consume(
        &mut self,
        ctx: &mut Ctx,
        data: &[u8],
        budget: &mut usize,
    ) -> (usize, BatchEnd) {
        ctx.cache.logger.cfd = ctx.fd;
        // memcached wrote the replies out at the end of the last batch,
        // which gave their response objects back.
        ctx.resp_room = resp_cap(ctx.settings);
        let (used, end) = self.run_requests(ctx, data, budget);
        // Replies are written (or dropped) now: items that `mg` replies
        // referenced are free to change in place again.
        ctx.cache.unpin_all();
        self.input_seen = end == BatchEnd::NeedInput;
        match end {
            BatchEnd::Close if !self.close_after_write => self.out.truncate(self.flush_mark),
            BatchEnd::Shutdown(_) => self.out.truncate(self.flush_mark),
            _ => self.flush_mark = self.out.len(),
        }
        (used, end)
    }

    fn run_requests(
        &mut self,
        ctx: &mut Ctx,
        data: &[u8],
        budget: &mut usize,
    ) -> (usize, BatchEnd) {
        let v = ctx.settings.verbose;
        if let Some(&first) = data.first() {
            self.on(Event::Arrived, v);
            if !self.negotiated {
                self.negotiate(first, v);
            }
        }
        let mut pos = 0;
        loop {
            let (used, end) = match self.state {
                State::Draining { .. } | State::Closing | State::Closed => {
                    return (pos, BatchEnd::Close);
                }
                State::Watch => return (data.len(), BatchEnd::NeedInput),
                State::Swallow { .. } => {
                    let used = self.swallow(&data[pos..], v);
                    let more = matches!(self.state, State::Swallow { .. });
                    (used, more.then_some(BatchEnd::NeedInput))
                }
                State::Nread => {
                    let used = self.fill_value(ctx, &data[pos..]);
                    let more = matches!(self.state, State::Nread);
                    (used, more.then_some(BatchEnd::NeedInput))
                }
                _ if self.blocked_on_output() => (0, Some(BatchEnd::Blocked)),
                _ if *budget == 0 => (0, Some(BatchEnd::Budget)),
                _ if self.bin.binary => self.binary_request(ctx, data, pos, budget),
                _ => self.text_request(ctx, data, pos, budget),
            };
            pos += used;
            if let Some(end) = end {
                return (pos, end);
            }
        }
    }

    /// memcached picks the binary protocol on a first byte of 0x80.
    fn negotiate(&mut self, first: u8, v: u8) {
        self.negotiated = true;
        let binary = first == BINARY_REQUEST_MAGIC;
        if v > 1 {
            let name = if binary { "binary" } else { "ascii" };
            eprintln!("{}: Client using the {name} protocol", self.fd);
        }
        self.bin.binary = binary;
    }

    /// Out of complete requests (`partial`: part of one is there).
    pub(super) fn wait_for_input(&mut self, ctx: &mut Ctx, partial: bool, budget: usize) {
        self.on(Event::OutOfInput { partial, budget }, ctx.settings.verbose);
        // Stopped short of conn_waiting: memcached yielded on the way.
        if matches!(self.state, State::NewCmd) {
            ctx.stats.conn_yields += 1;
        }
    }

    /// After a request (ascii or binary): what its `next` means for the
    /// output and the batch; the state moves on.
    pub(super) fn handled(&mut self, ctx: &mut Ctx, next: Next) -> Option<BatchEnd> {
        let wrote = writes_now(next);
        self.replies_queued = !wrote;
        if wrote {
            self.flush_mark = self.out.len();
            ctx.resp_room = resp_cap(ctx.settings);
            // Written out now: fetched items are free to change in place
            // again.
            ctx.cache.unpin_all();
        }
        if let Next::CloseAfterWrite = next {
            // Only `quit` gets here in ascii; binary errors get here too.
            if !self.bin.binary || self.bin.closing == binary::Closing::Quit {
                self.close_reason = CloseReason::Normal;
            }
            self.close_after_write = true;
        }
        self.on(Event::Handled(next), ctx.settings.verbose);
        match next {
            Next::StatsConns => Some(BatchEnd::ConnsReport),
            Next::Dump | Next::Suspend(_) => Some(BatchEnd::Blocked),
            Next::AwaitExt(_) => Some(BatchEnd::AwaitIo),
            Next::Close | Next::CloseAfterWrite => Some(BatchEnd::Close),
            Next::Shutdown(graceful) => Some(BatchEnd::Shutdown(graceful)),
            _ => None,
        }
    }

    /// Discards what is left of a refused value (ascii) or body (binary)
    /// from `data`; returns the bytes taken. The next command starts once
    /// all of it is gone.
    fn swallow(&mut self, data: &[u8], v: u8) -> usize {
        let State::Swallow { left } = &mut self.state else {
            return 0;
        };
        let n = (*left).min(data.len());
        *left -= n;
        if *left == 0 {
            self.on(Event::Swallowed, v);
        }
        n
    }

    /// Copies data-block bytes into the pending item; returns bytes used.
    fn fill_value(&mut self, ctx: &mut Ctx, data: &[u8]) -> usize {
        let (
            State::Nread,
            Some(Value {
                pending,
                filled,
                crlf,
                crlf_got,
            }),
        ) = (&self.state, self.value.as_deref_mut())
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
            crlf[usize::from(*crlf_got)] = data[used];
            *crlf_got += 1;
            used += 1;
        }
        if *filled < pending.nbytes || *crlf_got < 2 {
            return used;
        }
        let (pending, ok) = (*pending, crlf == b"\r\n");
        let wrote = if self.bin.binary {
            let next = binary::complete_nread(ctx, &mut self.bin, pending, &mut self.out);
            let wrote = matches!(next, Next::Flush);
            if wrote {
                // An error reply is written at once.
                self.flush_mark = self.out.len();
                ctx.cache.unpin_all();
            }
            wrote
        } else {
            text::complete_store(ctx, pending, ok, &mut self.out);
            false
        };
        self.mark(usize::MAX, 0, wrote);
        self.on(Event::Stored { wrote }, ctx.settings.verbose);
        used
    }
}

/// memcached writes the replies out right after such a request (a
/// retrieval, `mn`, a binary error).
pub(super) fn writes_now(next: Next) -> bool {
    matches!(next, Next::Flush | Next::FlushAfterLine)
}
