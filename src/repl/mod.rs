//! Replication: repcached-style pairs, inside the one reactor.
//!
//! Two nodes name each other with `-x` (or one is given only `-X <port>`
//! and waits for the other); each serves clients, and every
//! change made on either reaches the other over one TCP link, in the
//! master's order, as records of the mutation feed
//! (`crate::persist::mutations`). The event loop owns a `Repl` and calls
//! it once per turn (`Repl::turn`), on its sockets' events
//! (`Repl::event`) and before it empties the feed
//! (`Repl::collect_feed`); each call borrows what it works on (`Ctx`).
//!
//! - `roles.rs`: who connects and who listens; losing and regaining the
//!   peer.
//! - `candidates.rs`: newcomers on the replication port while a link is
//!   alive.
//! - `link.rs`: the connection and the frames it carries.
//! - `receive.rs`: what the peer sends, and the conflict rule.
//! - `copy.rs`: the replica's upload, the full copy a replica starts from;
//!   the buffer bound.
//! - this node's tombstones, the recent deletes a heal must not undo, are
//!   kept by the mutation feed (`crate::persist::tombs`), so that they are
//!   in the append-only file and survive a restart.
//! - `peer.rs`: the peer's address, and the `-Y` digest.
//! - `stats.rs`: the `repl_*` lines of `stats`.

mod candidates;
mod copy;
mod link;
mod peer;
mod receive;
mod roles;

pub(crate) use peer::split_peer;

use crate::items::Cache;
use crate::persist::mutations;
use crate::persist::replay::Replay;
use crate::settings::Settings;
use crate::stats::repl::ReplStats;
use crate::sys;
use copy::MAX_BUFFER;
use link::{COPY_LOW_WATER, Link, Wire, count_records};
use peer::{link_secret, resolve_peer};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

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

/// Replication state, owned by the reactor.
pub(crate) struct Repl {
    peer_text: String,
    /// None for a node given only a replication port (`-X <port>`): it
    /// never connects, it listens and is master.
    peer: Option<SocketAddr>,
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
    /// The peer's records must wait: this node's append-only file is
    /// failing and its backlog is full (see `hold_peer`).
    held: bool,
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
    /// This node has taken a CAS lane (see `become_master`).
    lane_chosen: bool,
    /// Under `-Y`: what both nodes must show before anything else counts.
    secret: Option<u64>,
    /// The most that may wait for the peer (see `MAX_BUFFER`).
    buffer_limit: usize,
    /// `-o repl_tls`: the link is TLS or nothing.
    tls_wanted: bool,
    /// Its contexts (`use_tls`); while missing, no link is made.
    tls: Option<crate::tls::Link>,
    /// The name the peer's certificate must carry (`repl_tls_name`, else
    /// the host of `-x`); none for a node given only a port.
    tls_name: Option<String>,
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
    /// Sets replication up when `-x` or a replication port is given:
    /// resolves the peer, turns the mutation feed on and starts the attempt
    /// that decides the role (without a peer: master at once). The
    /// listener, when this node becomes master, binds `listen_ip`.
    pub(crate) fn start(
        settings: &Settings,
        listen_ip: IpAddr,
        ctx: &mut Ctx,
    ) -> io::Result<Option<Repl>> {
        if !settings.repl.enabled() {
            return Ok(None);
        }
        let port = settings.repl.port;
        let peer_text = settings.repl.peer.clone();
        let peer = match &peer_text {
            Some(text) => Some(resolve_peer(text, port)?),
            None => None,
        };
        let tls_name = settings.repl.tls_name.clone().or_else(|| {
            let text = peer_text.as_deref()?;
            split_peer(text).map(|(host, _)| host.to_string())
        });
        let peer_text = peer_text.unwrap_or_else(|| "(none)".to_string());
        let seed = crate::items::random_seed();
        let secret = match &settings.auth_file {
            Some(path) => Some(link_secret(&std::fs::read(path)?)),
            None => None,
        };
        mutations::keep_tombstones(ctx.cache, None);
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
            held: false,
            replay: Replay::default(),
            resyncs: 0,
            verbose: settings.verbose,
            jitter: seed,
            node_id: seed | 1,
            listen_ip,
            lane_chosen: false,
            secret,
            // One record may be as large as the largest item.
            buffer_limit: MAX_BUFFER.max(4 * settings.item_size_max),
            tls_wanted: settings.repl.tls,
            tls: None,
            tls_name,
        };
        r.connect(ctx);
        r.publish(ctx);
        Ok(Some(r))
    }

    /// `-o repl_tls`: the contexts every link's session is made from.
    pub(crate) fn use_tls(&mut self, tls: crate::tls::Link) {
        self.tls = Some(tls);
    }

    /// The link's wire over `tcp`: under `-o repl_tls` a TLS session, as
    /// the side that `accepted` it or connected, else the socket itself.
    /// None (the socket closed) when no session could be made: a link
    /// that must be TLS never falls back to plaintext.
    fn wire(&self, tcp: TcpStream, accepted: bool) -> Option<Wire> {
        if !self.tls_wanted {
            return Some(Wire::Plain(tcp));
        }
        let tls = self.tls.as_ref()?;
        let name = self.tls_name.as_deref();
        let session = match accepted {
            true => tls.accept(tcp, name),
            false => tls.connect(tcp, name),
        };
        match session {
            Ok(session) => Some(Wire::Tls(Box::new(session))),
            Err(_) => {
                self.log("cannot make a TLS session for the link");
                None
            }
        }
    }

    /// Whether replication has work for the next loop turn right away.
    pub(crate) fn busy(&self) -> bool {
        self.link.as_ref().is_some_and(|l| {
            let copying = l.copy.is_some_and(|c| !c.waiting());
            (l.readable && !self.held) || (copying && l.unsent() < COPY_LOW_WATER)
        })
    }

    /// Stops (or resumes) reading the peer. A change applied here must
    /// reach this node's append-only file; while the file fails, its
    /// records wait in the file's backlog, and once that is full (`hold`)
    /// the peer's changes are left where they are -- in the socket, then
    /// in the peer's buffer, which its bound turns into a full copy if the
    /// file stays down that long. The peer's heartbeats wait with them, so
    /// its silence does not count while held.
    pub(crate) fn hold_peer(&mut self, hold: bool) {
        if self.held == hold {
            return;
        }
        self.held = hold;
        if hold {
            self.log("the AOF cannot take more: not reading the peer until it can");
        } else {
            self.log("the AOF takes writes again: reading the peer");
            if let Some(link) = &mut self.link {
                link.last_heard = Instant::now();
            }
        }
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
        if self.held {
            // Newcomers wait too (their first frames would be applied);
            // one that waits too long is dropped and tries again.
            if let Some(c) = self.candidates.iter_mut().find(|c| c.fd == fd) {
                return c.ready(bits);
            }
        }
        if let Some(i) = self.candidates.iter().position(|c| c.fd == fd) {
            self.candidates[i].ready(bits);
            return self.candidate_read(i, ctx);
        }
        let Some(link) = &mut self.link else { return };
        if link.fd != fd {
            return;
        }
        link.ready(bits);
        if let Err(e) = self.read(ctx) {
            return self.read_failed(e, ctx);
        }
        self.flush(ctx);
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
        if let Some(link) = &mut self.link {
            link.heartbeat();
        }
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

    /// The reactor emptied the feed (every consumer has its records).
    pub(crate) fn feed_cleared(&mut self) {
        self.feed_mark = 0;
    }

    pub(super) fn flush(&mut self, ctx: &mut Ctx) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.flush().is_err() {
            let why = self
                .tls_failure()
                .unwrap_or("cannot write to the peer".into());
            self.link_lost(&why, ctx);
        }
    }

    /// The link's TLS session broke: why, for the log.
    pub(super) fn tls_failure(&self) -> Option<String> {
        let failure = self.link.as_ref()?.stream.tls_failure()?;
        Some(format!("TLS with the peer failed: {failure}"))
    }

    pub(super) fn publish(&self, ctx: &mut Ctx) {
        *ctx.stats = Some(self.stats());
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

    pub(super) fn log(&self, what: &str) {
        if self.verbose > 0 {
            eprintln!("replication: {what}");
        }
    }

    /// The next retry after a failure, doubling up to `BACKOFF_MAX`, with
    /// some jitter so two nodes retrying each other do not stay in step.
    pub(super) fn schedule_retry(&mut self) {
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
