//! Replication: repcached-style pairs, inside the one reactor.
//!
//! Two nodes name each other with `-x`. At start a node tries to connect
//! to its peer's replication port; if that works it is the **replica**,
//! otherwise it becomes the **master** and listens on its own replication
//! port (`--repl-port`, default 11212) for the peer. A master without a
//! replica keeps trying the peer with backoff (a pair split by a network
//! fault heals that way); a replica that loses its master tries it once
//! more and then becomes master itself, so the survivor of a pair always
//! listens and the other node, restarted with the same options, rejoins.
//!
//! **The link** carries records of the mutation feed (`items/record.rs`)
//! both ways, framed as in the AOF, plus a few link-control frames in the
//! same frame layout with kinds from 0x80 up: HELLO (the replica's first
//! frame), RESYNC (a full copy follows: the replica wipes its cache),
//! SYNCED (the copy is complete) and ACK (records applied so far; also the
//! heartbeat, once a second).
//!
//! **Who may take the link.** A connection to the listener while no live
//! link exists becomes the link at once. While one is alive, a newcomer is
//! a candidate: heard only until its first frame, which must be the
//! authfile digest under `-Y` (else HELLO), and only then put in the
//! link's place; anything else, or silence, gets it closed.
//!
//! **Full copy.** On HELLO, and whenever the replica falls too far behind,
//! the master sends RESYNC and walks its arena a bounded batch per loop
//! turn (`items/snapshot.rs`), only while less than a megabyte is waiting
//! for the socket, so clients are never stalled and memory stays bounded.
//! Mutations made meanwhile go into the same ordered channel after the
//! items already sent; an item the walk reaches later is sent as it then
//! is.
//!
//! **Two-way and the conflict rule.** Writes on either node are applied
//! there, answered, and sent to the other. The master logs what it applies
//! from the replica into its own feed, so every change reaches the replica
//! in the master's order (the replica's own writes come back to it). A PUT
//! is applied only if the key has no live item with an equal or higher
//! CAS: CAS values are Lamport clocks (applying one moves the local counter
//! past it) and the master hands out odd values, the replica even ones, so
//! they never tie. For two writes to one key at once the one with the
//! higher CAS wins on both nodes; deletes, touches and flushes apply in the
//! master's order. Either way both nodes end with the same value and CAS.
//!
//! **Bounded buffering.** More than `MAX_BUFFER` bytes waiting for a slow
//! replica make the master drop them (after the record being written) and
//! start a fresh full copy on the same connection; a replica whose master
//! does not keep up closes the link and rejoins.

use crate::reactor::sys;
pub(crate) mod stats;

use crate::items::Cache;
use crate::persist::mutations;
use crate::persist::record::{self, Decoded, Encoder, FRAME, Op};
use crate::persist::replay::Replay;
use crate::persist::snapshot::SnapshotCursor;
use crate::settings::Settings;
use stats::ReplStats;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

const KIND_HELLO: u8 = 0x81;
const KIND_RESYNC: u8 = 0x82;
const KIND_SYNCED: u8 = 0x83;
const KIND_ACK: u8 = 0x84;
/// Under `-Y`, the first frame each side sends: proof that it read the
/// same authfile (see [`link_secret`]).
const KIND_AUTH: u8 = 0x85;

/// The most that may wait for a peer before it is resynced (or, for a
/// replica, before the link is dropped); at least four of the largest
/// items.
const MAX_BUFFER: usize = 64 << 20;
/// The full copy is produced only while less than this waits to be sent.
const COPY_LOW_WATER: usize = 1 << 20;
/// Arena chunks the full copy looks at per loop turn.
const COPY_STEP: usize = 4096;
/// Bytes already written that are dropped from the front of the buffer.
const COMPACT_AT: usize = 1 << 20;
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from the peer per loop turn, so a fast peer (a full copy
/// arriving) cannot keep the loop from clients.
const READ_PER_TURN: usize = 1 << 20;
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A peer silent this long is taken for dead.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A link heard from this recently is alive: a new connection to the
/// listener must prove it is the peer before it may replace it.
const LIVE_WINDOW: Duration = Duration::from_secs(3);
/// Connections waiting to prove themselves, at most; more are closed.
const MAX_CANDIDATES: usize = 4;
/// What a candidate may send before its first frame is complete.
const CANDIDATE_INPUT_MAX: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Trying the peer (at start, or after losing the master): success
    /// makes a replica, failure a master.
    Connecting,
    Master,
    Replica,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Connecting => "connecting",
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}

/// The connection to the peer, in either direction.
struct Link {
    stream: TcpStream,
    fd: RawFd,
    out: Vec<u8>,
    out_pos: usize,
    input: Vec<u8>,
    writable: bool,
    /// The socket may hold more input (edge-triggered: until a read would
    /// block).
    readable: bool,
    /// Master: the full copy being sent.
    copy: Option<SnapshotCursor>,
    /// Master: HELLO came and records flow. Replica: always.
    streaming: bool,
    /// The full copy is complete (master: sent; replica: received).
    synced: bool,
    /// Records queued for the peer, and how many it says it applied.
    sent: u64,
    acked: u64,
    /// Records applied from the peer, and the count last told to it.
    applied: u64,
    told: u64,
    last_heard: Instant,
    last_told: Instant,
    /// The peer has proved it knows the authfile (always true without -Y).
    trusted: bool,
}

impl Link {
    /// A link that, under `-Y` (`secret`), first proves itself to the peer
    /// and trusts nothing the peer sends until the peer has done the same.
    fn new(stream: TcpStream, streaming: bool, secret: Option<u64>) -> Link {
        let now = Instant::now();
        let mut link = Link {
            fd: stream.as_raw_fd(),
            stream,
            out: Vec::new(),
            out_pos: 0,
            input: Vec::new(),
            writable: true,
            readable: true,
            copy: None,
            streaming,
            synced: false,
            sent: 0,
            acked: 0,
            applied: 0,
            told: 0,
            last_heard: now,
            last_told: now,
            trusted: secret.is_none(),
        };
        if let Some(secret) = secret {
            link.control(KIND_AUTH, secret);
        }
        link
    }

    fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn control(&mut self, kind: u8, value: u64) {
        Encoder::begin(&mut self.out, kind, 0).u64(value).finish();
    }

    /// Writes what the socket takes; Err when the link is broken.
    fn flush(&mut self) -> io::Result<()> {
        while self.writable && self.unsent() > 0 {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.unsent() == 0 {
            self.out.clear();
            self.out_pos = 0;
            // A full copy or a burst should not pin memory once sent.
            if self.out.capacity() > 4 * COPY_LOW_WATER {
                self.out = Vec::new();
            }
        } else if self.out_pos >= COMPACT_AT {
            // Only whole records leave the front, so the buffer always
            // starts at a frame (which `cut_after_current` relies on).
            let keep = frame_end_at_or_before(&self.out, self.out_pos);
            self.out.drain(..keep);
            self.out_pos -= keep;
        }
        Ok(())
    }

    /// Drops everything queued after the record now being written; returns
    /// how many records were dropped.
    fn cut_after_current(&mut self) -> u64 {
        let mut at = 0;
        while at < self.out_pos {
            at += FRAME + frame_len(&self.out[at..]);
        }
        let dropped = count_records(&self.out[at..]);
        self.out.truncate(at);
        dropped
    }
}

fn frame_len(buf: &[u8]) -> usize {
    u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// The end of the last whole frame that ends at or before `pos`.
fn frame_end_at_or_before(buf: &[u8], pos: usize) -> usize {
    let mut at = 0;
    loop {
        let next = at + FRAME + frame_len(&buf[at..]);
        if next > pos {
            return at;
        }
        at = next;
    }
}

/// Mutation records (not link-control frames) among whole frames.
fn count_records(mut buf: &[u8]) -> u64 {
    let mut n = 0;
    while buf.len() >= FRAME {
        let total = FRAME + frame_len(buf);
        n += u64::from(buf.get(FRAME).is_some_and(|&k| k < 0x80));
        buf = &buf[total.min(buf.len())..];
    }
    n
}

/// Replication state, owned by the reactor.
pub(crate) struct Repl {
    peer_text: String,
    peer: SocketAddr,
    port: u16,
    role: Role,
    listener: Option<TcpListener>,
    link: Option<Link>,
    /// Master with a live link: newer connections to the listener, heard
    /// only until their first frame (see `candidate_read`).
    candidates: Vec<Link>,
    connecting: Option<(TcpStream, Instant)>,
    next_attempt: Instant,
    backoff: Duration,
    /// Bytes at the front of the cache's feed already handled this turn.
    feed_mark: usize,
    /// Applies what the peer sends.
    replay: Replay,
    resyncs: u64,
    verbose: u8,
    jitter: u64,
    /// Random per process: a HELLO carrying our own id means `-x` names
    /// this very server.
    node_id: u64,
    /// Where the replication listener binds: the first `-l` interface, or
    /// all of them.
    listen_ip: IpAddr,
    /// Under `-Y`: what both nodes must show before anything else counts.
    secret: Option<u64>,
    /// The most that may wait for the peer (see `MAX_BUFFER`).
    buffer_limit: usize,
}

/// Under `-Y`, what a replication peer must send first: a 64-bit digest of
/// the authfile's bytes (two CRC32Cs over differently salted copies), so
/// only a node given the same file is heard. Like `-Y` itself, this keeps
/// out clients without the credentials; it is no defence against a
/// listener on the wire, who sees the passwords of ascii clients too.
fn link_secret(authfile: &[u8]) -> u64 {
    let salted = |salt: u32| record::crc32c_update(record::crc32c(&salt.to_le_bytes()), authfile);
    (u64::from(salted(0x5265_706c)) << 32) | u64::from(salted(0x4175_7468))
}

/// Splits `-x host[:port]` (or `[v6]:port`) into host and optional port;
/// None when the shape is wrong (empty host, bad port).
pub fn split_peer(peer: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = peer.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else if peer.matches(':').count() == 1 {
        let (host, port) = peer.split_once(':')?;
        (host, Some(port))
    } else {
        (peer, None)
    };
    if host.is_empty() {
        return None;
    }
    match port {
        None => Some((host, None)),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some((host, Some(n))),
            _ => None,
        },
    }
}

/// The peer's address, resolved once at start (the loop must not block on
/// name lookups later).
fn resolve_peer(text: &str, default_port: u16) -> io::Result<SocketAddr> {
    let bad = || {
        let message = format!("failed to resolve replication peer {text}");
        io::Error::new(io::ErrorKind::InvalidInput, message)
    };
    let (host, port) = split_peer(text).ok_or_else(bad)?;
    let port = port.unwrap_or(default_port);
    (host, port)
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

impl Repl {
    /// The reactor emptied the feed (every consumer has its records).
    pub(crate) fn feed_cleared(&mut self) {
        self.feed_mark = 0;
    }

    fn stats(&self) -> ReplStats {
        let link = self.link.as_ref();
        ReplStats {
            role: self.role.name(),
            peer: self.peer_text.clone(),
            connected: link.is_some_and(|l| l.synced),
            lag_records: link.map_or(0, |l| l.sent.saturating_sub(l.acked)),
            resyncs: self.resyncs,
        }
    }

    fn log(&self, what: &str) {
        if self.verbose > 0 {
            eprintln!("replication: {what}");
        }
    }

    /// The next retry after a failure, doubling up to `BACKOFF_MAX`, with
    /// some jitter so two nodes retrying each other do not stay in step.
    fn schedule_retry(&mut self) {
        self.jitter = self
            .jitter
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1);
        let spread = (self.jitter >> 33) % 1000;
        let wait = self.backoff + self.backoff * spread as u32 / 1000;
        self.next_attempt = Instant::now() + wait;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

/// What replication needs of the event loop: its sockets watched, and
/// forgotten when it closes them.
pub(crate) trait Sockets {
    /// Adds a replication socket to the epoll set: the listener (`listener`)
    /// for incoming peers, else a link or an attempt, both ways.
    fn watch(&mut self, fd: RawFd, listener: bool) -> io::Result<()>;
    /// `fd` is being closed by replication: the loop forgets it.
    fn forget(&mut self, fd: RawFd);
}

/// What a replication call works on, lent by the event loop.
pub(crate) struct Ctx<'a> {
    pub(crate) cache: &'a mut Cache,
    pub(crate) sockets: &'a mut dyn Sockets,
    /// The `repl_*` lines of `stats`, kept up to date here.
    pub(crate) stats: &'a mut Option<ReplStats>,
}

impl Repl {
    /// Sets replication up when `-x` is given: resolves the peer, turns the
    /// mutation feed on and starts the attempt that decides the role. The
    /// listener, when this node becomes master, binds `listen_ip`.
    pub(crate) fn start(
        settings: &Settings,
        listen_ip: IpAddr,
        ctx: &mut Ctx,
    ) -> io::Result<Option<Repl>> {
        let Some(peer_text) = settings.repl.peer.clone() else {
            return Ok(None);
        };
        let port = settings.repl.port;
        let peer = resolve_peer(&peer_text, port)?;
        let seed = crate::items::random_seed();
        let secret = match &settings.auth_file {
            Some(path) => Some(link_secret(&std::fs::read(path)?)),
            None => None,
        };
        mutations::enable(ctx.cache);
        let mut r = Repl {
            peer_text,
            peer,
            port,
            role: Role::Connecting,
            listener: None,
            link: None,
            candidates: Vec::new(),
            connecting: None,
            next_attempt: Instant::now(),
            backoff: BACKOFF_MIN,
            feed_mark: 0,
            replay: Replay::default(),
            resyncs: 0,
            verbose: settings.verbose,
            jitter: seed,
            node_id: seed | 1,
            listen_ip,
            secret,
            // One record may be as large as the largest item.
            buffer_limit: MAX_BUFFER.max(4 * settings.item_size_max),
        };
        r.connect(ctx);
        r.publish(ctx);
        Ok(Some(r))
    }

    /// Whether replication has work for the next loop turn right away.
    pub(crate) fn busy(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.readable || (l.copy.is_some() && l.unsent() < COPY_LOW_WATER))
    }

    fn publish(&self, ctx: &mut Ctx) {
        *ctx.stats = Some(self.stats());
    }

    /// Starts a non-blocking connection to the peer.
    fn connect(&mut self, ctx: &mut Ctx) {
        if self.connecting.is_some() || self.link.is_some() {
            return;
        }
        match sys::connect_nonblocking(self.peer) {
            Ok(stream) => {
                let fd = stream.as_raw_fd();
                self.connecting = Some((stream, Instant::now()));
                if ctx.sockets.watch(fd, false).is_err() {
                    self.connect_failed(ctx);
                }
            }
            Err(_) => self.connect_failed(ctx),
        }
    }

    fn connect_failed(&mut self, ctx: &mut Ctx) {
        if let Some((stream, _)) = self.connecting.take() {
            let fd = stream.as_raw_fd();
            drop(stream);
            ctx.sockets.forget(fd);
        }
        self.schedule_retry();
        if self.role != Role::Master {
            self.become_master(ctx);
        }
    }

    fn become_master(&mut self, ctx: &mut Ctx) {
        self.role = Role::Master;
        self.log("master");
        ctx.cache.set_cas_lane(true);
        self.listen(ctx);
        self.publish(ctx);
    }

    /// Opens the replication listener if it is not open (a failure, such
    /// as the port still being in use, is retried on later turns).
    fn listen(&mut self, ctx: &mut Ctx) {
        if self.listener.is_some() {
            return;
        }
        let addr = SocketAddr::new(self.listen_ip, self.port);
        let listener = match TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        }) {
            Ok(l) => l,
            Err(e) => {
                self.log(&format!("cannot listen on port {}: {e}", self.port));
                return;
            }
        };
        let fd = listener.as_raw_fd();
        if ctx.sockets.watch(fd, true).is_ok() {
            self.listener = Some(listener);
        } else {
            drop(listener);
            ctx.sockets.forget(fd);
        }
    }

    fn unlisten(&mut self, ctx: &mut Ctx) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        // Dropping the listener closes it (and takes it out of epoll).
        let fd = listener.as_raw_fd();
        drop(listener);
        ctx.sockets.forget(fd);
    }

    /// Epoll reported something on one of replication's sockets: the
    /// listener, the connecting socket, a candidate or the link.
    pub(crate) fn event(&mut self, fd: RawFd, bits: u32, ctx: &mut Ctx) {
        if self.listener.as_ref().is_some_and(|l| l.as_raw_fd() == fd) {
            return self.accept(ctx);
        }
        if let Some((stream, _)) = &self.connecting
            && stream.as_raw_fd() == fd
        {
            // A connection attempt is decided when the socket becomes
            // writable (connected) or reports an error.
            if bits & (sys::WRITE | sys::HANGUP) == 0 {
                return;
            }
            let failed = bits & sys::HANGUP != 0
                || !matches!(stream.take_error(), Ok(None))
                || stream.peer_addr().is_err();
            return if failed {
                self.connect_failed(ctx)
            } else {
                self.connected(ctx)
            };
        }
        if let Some(i) = self.candidates.iter().position(|c| c.fd == fd) {
            let c = &mut self.candidates[i];
            c.writable |= bits & sys::WRITE != 0;
            c.readable |= bits & (libc::EPOLLIN as u32 | sys::HANGUP) != 0;
            return self.candidate_read(i, ctx);
        }
        let Some(link) = &mut self.link else { return };
        if link.fd != fd {
            return;
        }
        if bits & sys::WRITE != 0 {
            link.writable = true;
        }
        if bits & (libc::EPOLLIN as u32 | sys::HANGUP) != 0 {
            link.readable = true;
        }
        if let Err(e) = self.read(ctx) {
            return self.read_failed(e, ctx);
        }
        self.flush(ctx);
    }

    /// A read error ends the link. A peer that failed `-Y` authentication
    /// is not our pair at all: rather than rejoin it at once as its
    /// replica, serve alone as master and try it again only after backoff.
    fn read_failed(&mut self, e: io::Error, ctx: &mut Ctx) {
        if e.kind() != io::ErrorKind::PermissionDenied {
            return self.link_lost("the peer went away", ctx);
        }
        if !self.drop_link(&e.to_string(), ctx) {
            return;
        }
        self.schedule_retry();
        if self.role != Role::Master {
            self.become_master(ctx);
        }
        self.publish(ctx);
    }

    /// Our connection to the peer is up: we are its replica.
    fn connected(&mut self, ctx: &mut Ctx) {
        let (stream, _) = self.connecting.take().expect("a connection was pending");
        if self.link.is_some() {
            // The peer connected to us first: keep that link.
            let fd = stream.as_raw_fd();
            drop(stream);
            return ctx.sockets.forget(fd);
        }
        let _ = stream.set_nodelay(true);
        let mut link = Link::new(stream, true, self.secret);
        link.control(KIND_HELLO, self.node_id);
        self.link = Some(link);
        self.role = Role::Replica;
        self.feed_mark = mutations::len(ctx.cache);
        self.log("replica");
        ctx.cache.set_cas_lane(false);
        self.unlisten(ctx);
        self.flush(ctx);
        self.publish(ctx);
    }

    /// The peer connects to our replication listener.
    fn accept(&mut self, ctx: &mut Ctx) {
        loop {
            let Some(l) = &self.listener else {
                return;
            };
            let stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if self.role == Role::Replica || stream.set_nonblocking(true).is_err() {
                // Dropping the stream closes it.
                continue;
            }
            if self
                .link
                .as_ref()
                .is_some_and(|l| l.last_heard.elapsed() < LIVE_WINDOW)
            {
                self.add_candidate(stream, ctx);
                continue;
            }
            if self.link.is_some() {
                // The peer connecting again means the link we hold is dead
                // (its host went away without a word): the new one wins.
                self.drop_link("the peer connected again", ctx);
            }
            if let Some((pending, _)) = self.connecting.take() {
                let fd = pending.as_raw_fd();
                drop(pending);
                ctx.sockets.forget(fd);
            }
            let _ = stream.set_nodelay(true);
            let fd = stream.as_raw_fd();
            self.link = Some(Link::new(stream, false, self.secret));
            self.log("replica connected");
            if ctx.sockets.watch(fd, false).is_err() {
                self.link_lost("cannot watch the replica's socket", ctx);
            }
            // Under -Y our proof goes out before we read the peer's, so a
            // peer we refuse learns why (its own check of ours fails)
            // rather than seeing only a closed socket.
            self.flush(ctx);
            self.publish(ctx);
        }
    }

    /// A connection to the listener while the link is alive. Taking every
    /// newcomer as the peer would let anything that reaches the port (a
    /// scanner, a client at the wrong port, a stranger under `-Y`) cut the
    /// pair apart; a restarted peer, though, must get in even before the
    /// old link times out. So the newcomer is heard until its first frame,
    /// which must be what a joining peer sends first (our authfile's
    /// digest under `-Y`, else HELLO), and only then replaces the link.
    fn add_candidate(&mut self, stream: TcpStream, ctx: &mut Ctx) {
        if self.candidates.len() >= MAX_CANDIDATES {
            return self.log("refused a connection: too many waiting to prove themselves");
        }
        let _ = stream.set_nodelay(true);
        let fd = stream.as_raw_fd();
        // Our own proof goes out at once, as on any link: the peer checks
        // it before it trusts what we send.
        self.candidates.push(Link::new(stream, false, self.secret));
        if ctx.sockets.watch(fd, false).is_err() {
            return self.drop_candidate(fd, "cannot watch its socket", ctx);
        }
        if let Some(c) = self.candidates.last_mut()
            && c.flush().is_err()
        {
            self.drop_candidate(fd, "it went away", ctx);
        }
    }

    fn drop_candidate(&mut self, fd: RawFd, why: &str, ctx: &mut Ctx) {
        self.candidates.retain(|c| c.fd != fd);
        self.log(&format!("refused a connection: {why}"));
        ctx.sockets.forget(fd);
    }

    /// Reads a candidate's first frame; promotes it to the link if it is
    /// the peer's.
    fn candidate_read(&mut self, i: usize, ctx: &mut Ctx) {
        let secret = self.secret;
        let c = &mut self.candidates[i];
        let fd = c.fd;
        let mut chunk = [0u8; 512];
        while c.readable && c.input.len() < CANDIDATE_INPUT_MAX {
            match c.stream.read(&mut chunk) {
                Ok(0) => return self.drop_candidate(fd, "it closed", ctx),
                Ok(n) => c.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.drop_candidate(fd, "it went away", ctx),
            }
        }
        let first = c.input.get(..FRAME).map(|h| FRAME + frame_len(h));
        let Some(end) = first.filter(|&end| end <= c.input.len()) else {
            if c.input.len() >= CANDIDATE_INPUT_MAX {
                self.drop_candidate(fd, "its first frame is too long", ctx);
            }
            return;
        };
        let proved = match (control_frame(&c.input[..end]), secret) {
            (Some((KIND_AUTH, value)), Some(secret)) => value == secret,
            (Some((KIND_HELLO, _)), None) => true,
            _ => false,
        };
        if !proved {
            return self.drop_candidate(fd, "it is not the peer", ctx);
        }
        let c = self.candidates.remove(i);
        self.drop_link("the peer connected again", ctx);
        self.link = Some(c);
        self.log("replica connected");
        // The frames already read (the proof, HELLO) go the usual way.
        if let Err(e) = self.apply_input(ctx) {
            return self.read_failed(e, ctx);
        }
        if let Err(e) = self.read(ctx) {
            return self.read_failed(e, ctx);
        }
        self.flush(ctx);
        self.publish(ctx);
    }

    /// Reads and applies everything the peer has sent.
    fn read(&mut self, ctx: &mut Ctx) -> io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut budget = READ_PER_TURN;
        loop {
            let Some(link) = self.link.as_mut() else {
                return Ok(());
            };
            if !link.readable || budget == 0 {
                return Ok(());
            }
            match link.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    link.input.extend_from_slice(&chunk[..n]);
                    link.last_heard = Instant::now();
                    self.apply_input(ctx)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    link.readable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies every whole frame in the link's input.
    fn apply_input(&mut self, ctx: &mut Ctx) -> io::Result<()> {
        let mut input = std::mem::take(&mut self.link.as_mut().expect("link").input);
        let mut at = 0;
        let result = loop {
            let rest = &input[at..];
            if rest.len() < FRAME + 1 {
                break Ok(());
            }
            let total = FRAME + frame_len(rest);
            let trusted = self.link.as_ref().is_some_and(|l| l.trusted);
            if !trusted && rest[FRAME] != KIND_AUTH {
                break Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the peer did not authenticate",
                ));
            }
            if rest[FRAME] >= 0x80 {
                if rest.len() < total {
                    break Ok(());
                }
                if let Err(e) = self.control(&rest[..total], ctx) {
                    break Err(e);
                }
                at += total;
                continue;
            }
            match record::decode(rest) {
                Decoded::Complete(rec, used) => {
                    self.apply(&rec, ctx);
                    at += used;
                }
                Decoded::Torn(_) => break Ok(()),
                Decoded::Corrupt { why, .. } => {
                    break Err(io::Error::new(io::ErrorKind::InvalidData, why));
                }
            }
        };
        input.drain(..at);
        if let Some(link) = self.link.as_mut() {
            link.input = input;
        }
        result
    }

    /// A link-control frame (HELLO, RESYNC, SYNCED, ACK).
    fn control(&mut self, frame: &[u8], ctx: &mut Ctx) -> io::Result<()> {
        let Some((kind, value)) = control_frame(frame) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad control frame",
            ));
        };
        let role = self.role;
        let own_id = self.node_id;
        let secret = self.secret;
        let link = self.link.as_mut().expect("a link is up");
        match (kind, role) {
            (KIND_AUTH, _) if !link.trusted && Some(value) == secret => {
                link.trusted = true;
                return Ok(());
            }
            (KIND_AUTH, _) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the peer's authfile differs",
                ));
            }
            (KIND_HELLO, Role::Master) if value == own_id => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "-x names this server itself",
                ));
            }
            (KIND_HELLO, Role::Master) if !link.streaming => {
                link.streaming = true;
                self.start_copy(ctx.cache);
            }
            (KIND_RESYNC, Role::Replica) => {
                // Our own writes not yet sent go first: the master will
                // apply them and send them back after the copy.
                self.collect_feed(ctx.cache);
                ctx.cache.wipe();
                self.replay.reset();
                self.resyncs += 1;
                self.log("receiving a full copy");
                if let Some(link) = &mut self.link {
                    link.synced = false;
                }
            }
            (KIND_SYNCED, Role::Replica) => {
                link.synced = true;
                self.backoff = BACKOFF_MIN;
                self.log("in sync");
            }
            (KIND_ACK, _) => {
                // The lag it changes is published every turn.
                link.acked = value;
                return Ok(());
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected frame",
                ));
            }
        }
        self.publish(ctx);
        Ok(())
    }

    /// One record from the peer, under the conflict rule.
    fn apply(&mut self, rec: &record::Record<'_>, ctx: &mut Ctx) {
        // The replica's own writes so far go to the master before this
        // record's effects enter the feed.
        let replica = self.role == Role::Replica;
        if replica {
            self.collect_feed(ctx.cache);
        }
        let older = match rec.op {
            Op::Put(p) if p.cas != 0 => ctx.cache.cas_of(p.key).is_some_and(|c| c >= p.cas),
            _ => false,
        };
        if !older {
            self.replay.apply(ctx.cache, rec, true);
        }
        let feed_len = mutations::len(ctx.cache);
        if let Some(link) = &mut self.link {
            link.applied += 1;
        }
        if replica {
            // What the master sent is not sent back to it.
            self.feed_mark = feed_len;
        }
    }

    /// Master: RESYNC, then the arena walk from the start.
    fn start_copy(&mut self, cache: &Cache) {
        // The copy covers everything changed before it starts.
        self.feed_mark = mutations::len(cache);
        self.resyncs += 1;
        self.log("sending a full copy");
        let link = self.link.as_mut().expect("a link is up");
        link.control(KIND_RESYNC, 0);
        link.copy = Some(SnapshotCursor::default());
        link.synced = false;
    }

    /// Moves the feed's new records into the link (or past them when no
    /// peer is streaming). The event loop calls it before it empties the
    /// feed, so the records reach the peer whoever else reads them.
    pub(crate) fn collect_feed(&mut self, cache: &Cache) {
        let feed = mutations::bytes(cache);
        let new = feed.get(self.feed_mark..).unwrap_or_default();
        if let Some(link) = &mut self.link
            && link.streaming
        {
            link.out.extend_from_slice(new);
            link.sent += count_records(new);
        }
        self.feed_mark = feed.len();
    }

    fn flush(&mut self, ctx: &mut Ctx) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.flush().is_err() {
            self.link_lost("cannot write to the peer", ctx);
        }
    }

    /// Closes the link; false if there was none.
    fn drop_link(&mut self, why: &str, ctx: &mut Ctx) -> bool {
        let Some(link) = self.link.take() else {
            return false;
        };
        self.log(&format!("link lost: {why}"));
        let fd = link.fd;
        drop(link);
        ctx.sockets.forget(fd);
        true
    }

    fn link_lost(&mut self, why: &str, ctx: &mut Ctx) {
        if !self.drop_link(why, ctx) {
            return;
        }
        // A link that never got in sync does not earn a quick retry.
        let healthy = self.backoff == BACKOFF_MIN;
        self.schedule_retry();
        if self.role == Role::Replica {
            // Try the master once more (at once if the link was healthy);
            // if that fails, take over.
            self.role = Role::Connecting;
            if healthy {
                self.connect(ctx);
            }
        }
        self.publish(ctx);
    }

    /// Once per loop turn: forward the feed, advance a full copy, enforce
    /// the buffer bound, heartbeats, timeouts and retries.
    pub(crate) fn turn(&mut self, ctx: &mut Ctx) {
        if let Err(e) = self.read(ctx) {
            self.read_failed(e, ctx);
        }
        self.collect_feed(ctx.cache);
        self.copy_step(ctx);
        self.bound(ctx);
        self.heartbeat();
        self.flush(ctx);
        self.timers(ctx);
        let lag = self
            .link
            .as_ref()
            .map_or(0, |l| l.sent.saturating_sub(l.acked));
        if let Some(s) = ctx.stats {
            s.lag_records = lag;
        }
    }

    fn copy_step(&mut self, ctx: &mut Ctx) {
        let Some(link) = &mut self.link else { return };
        let Some(mut cursor) = link.copy.take() else {
            return;
        };
        if link.unsent() >= COPY_LOW_WATER {
            link.copy = Some(cursor);
            return;
        }
        let room = COPY_LOW_WATER.saturating_sub(link.unsent()) + link.out.len();
        let (items, done) = cursor.step(ctx.cache, &mut link.out, COPY_STEP, room);
        link.sent += items as u64;
        if done {
            link.control(KIND_SYNCED, 0);
            link.synced = true;
            self.backoff = BACKOFF_MIN;
            self.log("full copy sent");
            self.publish(ctx);
        } else {
            link.copy = Some(cursor);
        }
    }

    /// A peer too far behind: the master restarts the copy, a replica
    /// drops the link.
    fn bound(&mut self, ctx: &mut Ctx) {
        let Some(link) = &mut self.link else { return };
        if link.unsent() <= self.buffer_limit {
            return;
        }
        if self.role != Role::Master {
            return self.link_lost("the master is too far behind", ctx);
        }
        let dropped = link.cut_after_current();
        link.sent -= dropped;
        link.acked = link.acked.min(link.sent);
        self.start_copy(ctx.cache);
        self.publish(ctx);
    }

    fn heartbeat(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let due = link.last_told.elapsed() >= HEARTBEAT;
        if link.streaming && (due || link.applied != link.told) {
            link.told = link.applied;
            link.last_told = Instant::now();
            let applied = link.applied;
            link.control(KIND_ACK, applied);
        }
    }

    fn timers(&mut self, ctx: &mut Ctx) {
        let slow = self
            .candidates
            .iter()
            .find(|c| c.last_heard.elapsed() > CONNECT_TIMEOUT)
            .map(|c| c.fd);
        if let Some(fd) = slow {
            self.drop_candidate(fd, "it did not prove itself in time", ctx);
        }
        if let Some(link) = &self.link
            && link.last_heard.elapsed() > PEER_TIMEOUT
        {
            return self.link_lost("the peer stopped answering", ctx);
        }
        if let Some((_, started)) = &self.connecting
            && started.elapsed() > CONNECT_TIMEOUT
        {
            return self.connect_failed(ctx);
        }
        if self.role == Role::Master && self.listener.is_none() {
            self.listen(ctx);
        }
        // A master alone retries its peer; so does a replica that lost it.
        if self.role != Role::Replica
            && self.link.is_none()
            && self.connecting.is_none()
            && Instant::now() >= self.next_attempt
        {
            self.connect(ctx);
        }
    }
}

fn frame_crc(frame: &[u8]) -> u32 {
    u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]])
}

/// The kind and value of a whole control frame, if its shape and checksum
/// are right.
fn control_frame(frame: &[u8]) -> Option<(u8, u64)> {
    let body = frame.get(FRAME..)?;
    if body.len() != 1 + 8 + 8 || record::crc32c(body) != frame_crc(frame) {
        return None;
    }
    Some((body[0], u64::from_le_bytes(body[9..17].try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_blocking_connects_reach_v4_and_v6_listeners() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(host) else {
                continue; // no IPv6 on this host
            };
            let addr = listener.local_addr().unwrap();
            let stream = sys::connect_nonblocking(addr).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            assert_eq!(accepted.peer_addr().unwrap(), stream.local_addr().unwrap());
            assert!(matches!(stream.take_error(), Ok(None)));
        }
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let refused = sys::connect_nonblocking(closed);
        assert!(refused.is_err() || refused.unwrap().peer_addr().is_err());
    }

    #[test]
    fn peers_are_host_with_an_optional_port() {
        assert_eq!(split_peer("db1"), Some(("db1", None)));
        assert_eq!(split_peer("db1:7000"), Some(("db1", Some(7000))));
        assert_eq!(split_peer("[::1]:9"), Some(("::1", Some(9))));
        assert_eq!(split_peer("[::1]"), Some(("::1", None)));
        assert_eq!(split_peer("::1"), Some(("::1", None)));
        for bad in ["", ":80", "h:0", "h:65536", "h:x", "[::1]x", "[::1"] {
            assert_eq!(split_peer(bad), None, "{bad}");
        }
    }

    fn frames() -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        record::encode_delete(&mut buf, 1, b"first");
        ends.push(buf.len());
        Encoder::begin(&mut buf, KIND_ACK, 0).u64(5).finish();
        ends.push(buf.len());
        record::encode_flush(&mut buf, 2, 2);
        ends.push(buf.len());
        record::encode_delete(&mut buf, 3, b"third");
        ends.push(buf.len());
        (buf, ends)
    }

    #[test]
    fn a_candidate_proves_itself_only_with_a_whole_sound_control_frame() {
        let mut buf = Vec::new();
        Encoder::begin(&mut buf, KIND_AUTH, 0).u64(42).finish();
        assert_eq!(control_frame(&buf), Some((KIND_AUTH, 42)));
        assert_eq!(control_frame(&buf[..buf.len() - 1]), None);
        for bit in 0..(buf.len() - FRAME) * 8 {
            let mut bad = buf.clone();
            bad[FRAME + bit / 8] ^= 1 << (bit % 8);
            assert_eq!(control_frame(&bad), None, "bit {bit} flipped");
        }
        assert_eq!(control_frame(&buf[..FRAME - 1]), None);
    }

    #[test]
    fn control_frames_are_not_counted_as_records() {
        let (buf, ends) = frames();
        assert_eq!(count_records(&buf), 3);
        assert_eq!(count_records(&buf[ends[0]..ends[1]]), 0);
        assert_eq!(frame_end_at_or_before(&buf, ends[1] + 3), ends[1]);
        assert_eq!(frame_end_at_or_before(&buf, ends[1]), ends[1]);
        assert_eq!(frame_end_at_or_before(&buf, 3), 0);
    }

    #[test]
    fn a_resync_keeps_the_record_being_written_and_drops_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut link = Link::new(stream, true, None);
        let (buf, ends) = frames();
        link.out = buf;
        link.out_pos = ends[1] + 1;
        assert_eq!(link.cut_after_current(), 1);
        assert_eq!(link.out.len(), ends[2]);
        link.out_pos = 0;
        assert_eq!(link.cut_after_current(), 2);
        assert!(link.out.is_empty());
    }
}
