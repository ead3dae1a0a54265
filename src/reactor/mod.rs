//! The reactor: one thread, one epoll set, every socket non-blocking.
//!
//! Each descriptor is registered once, edge-triggered, for both reading and
//! writing, so readiness changes never cost an `epoll_ctl`. A connection
//! handles at most `-R` requests per turn; if it has more, it is queued to
//! run again after the others have had theirs (memcached's `conn_yields`).
//! The clock ticks once a second from the loop's own timeout.

mod accept;
mod binary_conn;
mod conn;
mod ext;
pub mod harness;
mod idle;
mod inherited;
mod listen;
mod log_streams;
mod metrics_io;
mod port_file;
mod readbuf;
mod repl_io;
mod shutdown;
mod stream;
mod text_conn;
mod turn;
mod udp;

use crate::authfile::Credentials;
use crate::items::crawler::{CrawlKind, CrawlStart};
use crate::items::maintainer::LruTuning;
use crate::items::{Cache, CacheConfig};
use crate::persist::Durability;
use crate::proto::request::{Ctx, OUTPUT_HIGH_WATER, WRITES_REFUSED};
use crate::repl;
use crate::settings::{Protocol, Settings};
use crate::stats::Stats;
use crate::sys::{self, Epoll};
use crate::tls;
use conn::{Conn, READ_SIZE, State};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;
use stream::Stream;
use turn::{Action, Socket};

pub use inherited::Inherited;

/// memcached refuses a client whose descriptor number reaches `-c` - 1, and
/// before its first client it holds 7 descriptors plus 4 per worker thread
/// plus one per listener. Counting the same way makes `-c` admit exactly as
/// many clients as memcached does with the same `-t`.
fn max_clients(settings: &Settings, listeners: usize) -> usize {
    let held = 7 + 4 * settings.num_threads + listeners;
    settings.max_conns.saturating_sub(held)
}

/// How the loop ended, for memcached's farewell line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Running,
    Normal,
    Graceful,
}
const EVENTS_PER_WAIT: usize = 256;
/// Seconds between automatic expiry crawls while items with a TTL exist,
/// and while none do.
const AUTO_CRAWL_SOON: u32 = 5;
const AUTO_CRAWL_IDLE: u32 = 60;

enum Slot {
    Empty,
    /// A listening socket, the protocol its clients speak (`-B`, or the
    /// `-l` entry's `proto[...]`), and whether they speak it over TLS
    /// (`-Z`, unless the entry says `notls:`).
    Listener(listen::Listener, Protocol, bool),
    Signals,
    /// extstore's eventfd: its I/O threads finished something.
    ExtIo,
    Client(Box<Conn>),
    /// A replication socket: its listener, the link, a connection attempt
    /// or a candidate; the socket itself is held by `Reactor::repl`.
    Repl,
    /// A UDP socket and the connection its datagrams run on.
    Udp(Box<Conn>),
    /// A further descriptor of a UDP socket: memcached has one per worker
    /// thread and lists each in `stats conns`.
    UdpShadow {
        /// Held open only to be listed.
        _fd: OwnedFd,
        /// Boxed to keep every slot (one per descriptor) small.
        addr: Option<Box<std::net::SocketAddr>>,
    },
    /// The metrics endpoint's listener (`--metrics-port`).
    MetricsListener(std::net::TcpListener),
    /// An HTTP connection to the metrics endpoint.
    Http(Box<metrics_io::HttpConn>),
}

pub(crate) struct Reactor {
    epoll: Epoll,
    slots: Vec<Slot>,
    ready: VecDeque<RawFd>,
    cache: Cache,
    stats: Stats,
    settings: Settings,
    scratch: Vec<u8>,
    /// UDP's buffers and in-between state.
    udp: udp::Scratch,
    stop: StopReason,
    clients: usize,
    max_clients: usize,
    /// Read-buffer memory held by connections, for `-o read_buf_mem_limit`.
    read_buf_bytes: usize,
    /// Clock reading at start (listeners' "last command" time).
    started: u32,
    /// When the next automatic expiry crawl starts.
    next_auto_crawl: u32,
    /// Second of the last automove check.
    last_automove: u32,
    /// `slabs automove 1` gave a page back to the global pool: check again
    /// on the next turn, not in a second (there may be more to give).
    automove_again: bool,
    /// Replication, when `-x` is given.
    repl: Option<repl::Repl>,
    /// The append-only file, and the replies waiting for it.
    durability: Durability,
    /// Set while accepting is paused (memcached's "listen disabled").
    paused: Option<accept::Pause>,
    /// The metrics endpoint's connections.
    metrics: metrics_io::MetricsState,
    /// Second of the last extstore maintenance pass.
    /// When extstore's maintenance and compaction pick run next (see
    /// `ext_turn`).
    ext_next_tick: Instant,
    /// extstore has more cold items to write out right away.
    ext_busy: bool,
    /// Clients held back until extstore has a write buffer again.
    ext_deferred: Vec<RawFd>,
    /// `-Z`: the context TLS listeners' clients get their sessions from.
    tls: Option<tls::Server>,
}

/// Runs the server until SIGTERM/SIGINT or `shutdown`. `listening` runs
/// once the sockets are bound and the cache is ready, before the first
/// request (memcached writes its pid file at that point). `tls`: the
/// contexts `-Z` and `-o repl_tls` built at start-up (`tls::start`). `inherited`:
/// the sockets passed by systemd or another activator
/// ([`Inherited::take`]), served instead of binding `-l`/`-p`/`-U`/`-s`.
pub fn serve(
    settings: Settings,
    tls: tls::Contexts,
    inherited: Option<Inherited>,
    listening: impl FnOnce(),
) -> io::Result<()> {
    let mut reactor = Reactor::new(settings, inherited)?;
    reactor.tls = tls.server;
    reactor.repl_tls(tls.link);
    listening();
    reactor.run()
}

impl Reactor {
    pub(crate) fn new(mut settings: Settings, inherited: Option<Inherited>) -> io::Result<Reactor> {
        let cfg = CacheConfig::from_settings(&settings);
        let (mut cache, saved) = match settings.memory_file.clone() {
            Some(path) => crate::persist::warm::open(&path, &mut settings, cfg)?,
            None => (Cache::new(cfg)?, None),
        };
        cache.crawler_running = settings.lru_crawler;
        cache.set_lru_tuning(LruTuning::from_settings(&settings.tuning));
        if settings.verbose > 1 {
            for id in 1..=cache.slabs.largest() {
                let c = cache.slabs.class(id);
                eprintln!(
                    "slab class {:3}: chunk size {:9} perslab {:7}",
                    id, c.size, c.perslab
                );
            }
        }
        let mut saved = saved;
        let ext_saved = saved
            .as_mut()
            .and_then(crate::persist::warm::Saved::take_ext);
        if settings.memory_file.is_some() {
            crate::persist::warm::resume(&mut cache, saved, settings.verbose)?;
        }
        if settings.ext.enabled() {
            ext::open(&mut cache, &mut settings, ext_saved)?;
        }
        // AOF recovery comes before any listener is open.
        let durability = Durability::open(&settings, &mut cache)?;
        if settings.track_sizes {
            cache.start_sizes();
        }
        cache.logger = crate::logger::Logger::new(settings.tuning.watcher_logbuf_size as usize);
        cache.logger.set_sink(sys::send_nosignal);
        let mut r = Reactor {
            epoll: Epoll::new()?,
            slots: Vec::new(),
            ready: VecDeque::new(),
            cache,
            stats: Stats {
                accepting_conns: true,
                aof: durability.stats(),
                ..Stats::default()
            },
            settings,
            scratch: vec![0; READ_SIZE],
            udp: udp::Scratch::default(),
            stop: StopReason::Running,
            clients: 0,
            max_clients: 0,
            read_buf_bytes: 0,
            started: 0,
            next_auto_crawl: 0,
            last_automove: 0,
            automove_again: false,
            repl: None,
            durability,
            paused: None,
            metrics: metrics_io::MetricsState::default(),
            ext_next_tick: Instant::now(),
            ext_busy: false,
            ext_deferred: Vec::new(),
            tls: None,
        };
        r.started = r.cache.now();
        r.next_auto_crawl = r.started + AUTO_CRAWL_SOON;
        // memcached reloads its authfile on SIGHUP, unless it daemonized
        // (it ignores SIGHUP then).
        let sigfd = sys::termination_signals(!r.settings.daemonize)?;
        r.register(sigfd, Slot::Signals, sys::READ)?;
        if let Some(fd) = r.cache.ext.as_ref().and_then(|t| t.store.wake_fd()) {
            r.register(fd, Slot::ExtIo, sys::READ)?;
        }
        r.open_listeners(inherited)?;
        let listeners = r.stats.curr_conns as usize;
        // memcached's start-up check: its own descriptors must leave room.
        if listeners + 5 * r.settings.num_threads >= r.settings.max_conns.saturating_sub(1) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Maxconns setting is too low, use -c to increase.",
            ));
        }
        r.max_clients = max_clients(&r.settings, listeners);
        r.repl_start()?;
        Ok(r)
    }

    fn register(&mut self, fd: RawFd, slot: Slot, events: u32) -> io::Result<()> {
        self.place(fd, slot);
        self.epoll.add(fd, events, fd as u64)
    }

    fn place(&mut self, fd: RawFd, slot: Slot) {
        let i = fd as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || Slot::Empty);
        }
        self.slots[i] = slot;
    }

    /// Opens every listener and counts each as a connection, as memcached
    /// does; traces them at `-vv` in memcached's order.
    fn open_listeners(&mut self, inherited: Option<Inherited>) -> io::Result<()> {
        let port_file = port_file::PortFile::open(self.settings.socket_path.is_some());
        let mut bound = inherited::open_all(&self.settings, inherited)?;
        if let Some(f) = port_file {
            f.publish(&bound);
        }
        let v = self.settings.verbose;
        for (listener, protocol, tls) in bound.streams {
            let fd = listener.as_raw_fd();
            if v > 1 {
                eprintln!("<{fd} server listening ({})", protocol.name());
            }
            self.count_listener();
            self.register(
                fd,
                Slot::Listener(listener, protocol, tls),
                sys::READ | sys::EDGE,
            )?;
        }
        let mut udp_fds = Vec::new();
        for port in bound.udp {
            let fd = port.socket.as_raw_fd();
            if let (true, Some((was, now))) = (v > 1, port.send_buffer) {
                eprintln!("<{fd} send buffer was {was}, now {now}");
            }
            for shadow in port.shadows {
                let shadow_fd = shadow.as_raw_fd();
                udp_fds.push(shadow_fd);
                let addr = port.socket.local_addr().ok().map(Box::new);
                self.place(shadow_fd, Slot::UdpShadow { _fd: shadow, addr });
            }
            udp_fds.push(fd);
            let conn = Conn::datagrams(Stream::Udp(port.socket), fd, self.cache.now());
            // Level-triggered: a turn takes a bounded number of datagrams
            // and epoll reports the rest on the next.
            self.register(fd, Slot::Udp(Box::new(conn)), sys::READ)?;
        }
        udp_fds.sort_unstable();
        for fd in udp_fds {
            if v > 1 {
                eprintln!("<{fd} server listening (udp)");
            }
            self.count_listener();
        }
        if let Some(listener) = bound.metrics.take() {
            self.register_metrics(listener)?;
        }
        Ok(())
    }

    fn count_listener(&mut self) {
        self.stats.curr_conns += 1;
        self.stats.total_conns += 1;
        self.stats.conn_structures += 1;
    }

    pub(crate) fn run(&mut self) -> io::Result<()> {
        let mut events = vec![sys::empty_event(); EVENTS_PER_WAIT];
        while self.stop == StopReason::Running {
            let busy = !self.ready.is_empty()
                || self.cache.hash.is_expanding()
                || self.crawl_can_progress()
                || self.repl.as_ref().is_some_and(repl::Repl::busy)
                || self.cache.rebalance_pending()
                || self.automove_again
                || self.ext_busy;
            let timeout = match self.durability.timeout() {
                _ if busy => 0,
                Some(t) => t.as_millis().min(1000) as i32,
                None => 1000,
            };
            let timeout = self.accept_timeout(timeout);
            let timeout = self.maintainer_timeout(timeout);
            let timeout = self.ext_timeout(timeout);
            let n = self.epoll.wait(&mut events, timeout)?;
            // The one clock reading of the turn (the LRU maintainer's too).
            if self.cache.clock.tick_at(Instant::now()) {
                self.kick_idle();
                self.http_tick();
            }
            for ev in &events[..n] {
                let (fd, bits) = (ev.u64 as RawFd, ev.events);
                self.dispatch(fd, bits);
            }
            self.run_ready();
            self.ext_turn();
            self.retry_accepting();
            self.auto_crawl();
            self.between_turns();
            self.rebalance();
            self.cache.lru_maintain(self.cache.clock.mono_us);
            self.with_repl(|r, ctx| r.turn(ctx));
            self.aof_end_turn();
            self.clear_feed();
            self.flush_watchers();
        }
        // The last turn's changes go to the peer as far as its socket takes.
        self.with_repl(|r, ctx| r.turn(ctx));
        if self.durability.shutdown(&self.cache)? {
            self.clear_feed();
        }
        match self.stop {
            StopReason::Graceful => {
                eprintln!("Gracefully stopping");
                return self.stop_gracefully();
            }
            _ if self.settings.verbose > 0 => eprintln!("Exiting normally"),
            _ => {}
        }
        Ok(())
    }

    /// Empties the mutation feed. Every place that does (the end of a
    /// turn, the AOF write before a UDP reply) comes here, so replication,
    /// which keeps its place in the feed, takes its records first.
    fn clear_feed(&mut self) {
        if let Some(r) = &mut self.repl {
            r.collect_feed(&self.cache);
        }
        crate::persist::mutations::clear(&mut self.cache);
        if let Some(r) = &mut self.repl {
            r.feed_cleared();
        }
    }

    /// Writes the turn's records to the AOF and lets the replies that
    /// waited for them go -- or, for changes the file did not take
    /// (`aof_sync=always` on a failing file), turns them into an error.
    /// Every consumer of the mutation feed reads it before this clears it.
    fn aof_end_turn(&mut self) {
        self.aof_write();
        let released = self.durability.release();
        // A connection may be in both lists (a write before a UDP reply
        // took its first changes): refused wins, its hold point being the
        // earlier one.
        for fd in released.refused {
            if let Some(Slot::Client(c)) = self.slots.get_mut(fd as usize) {
                refuse_held(c);
                self.drive(fd, 0);
            }
        }
        for fd in released.written {
            if let Some(Slot::Client(c)) = self.slots.get_mut(fd as usize) {
                c.hold = None;
                if c.close_after_write {
                    // Writes what it can, then closes (now or once the
                    // client has read it); reads nothing more.
                    self.drive(fd, 0);
                } else if turn::finish_turn(&mut Socket, c, &mut self.stats) == Action::Close {
                    self.close(fd);
                }
            }
        }
    }

    /// The AOF's part of the end of a turn (also run before a UDP reply,
    /// which cannot be held). The feed is emptied once the file has had
    /// it. False when the file did not take the changes.
    fn aof_write(&mut self) -> bool {
        let Some(written) = self.durability.write(&self.cache) else {
            return true;
        };
        self.stats.aof = self.durability.stats();
        self.cache.writes_refused = self.durability.refusing();
        if let Some(r) = &mut self.repl {
            r.hold_peer(self.durability.peer_must_wait());
        }
        self.clear_feed();
        written
    }

    fn dispatch(&mut self, fd: RawFd, bits: u32) {
        match self.slots.get_mut(fd as usize) {
            Some(Slot::Listener(..)) => self.on_listener(fd),
            Some(Slot::Udp(_)) => self.serve_datagrams(fd),
            Some(Slot::Signals) => self.handle_signals(fd),
            Some(Slot::MetricsListener(_)) => self.on_metrics_listener(fd),
            Some(Slot::Http(_)) => self.drive_http(fd),
            Some(Slot::ExtIo) => self.ext_io_done(),
            Some(Slot::Repl) => self.with_repl(|r, ctx| r.event(fd, bits, ctx)),
            Some(Slot::Client(c)) => {
                if bits & (libc::EPOLLIN as u32 | sys::HANGUP) != 0 {
                    c.readable = true;
                }
                if bits & sys::HANGUP != 0 {
                    c.peer_closed = true;
                }
                if bits & sys::WRITE != 0 {
                    c.writable = true;
                }
                let (read_on_write, write_on_read) = c.stream.turned_around();
                if read_on_write && bits & sys::WRITE != 0 {
                    c.readable = true;
                }
                if write_on_read && bits & libc::EPOLLIN as u32 != 0 {
                    c.writable = true;
                }
                // A yielded connection waits for its turn in the ready
                // queue; the event only updates its readiness.
                if c.queued {
                    return;
                }
                // A turn that starts by reading gets memcached's one extra
                // request; one that continues buffered input does not.
                let extra = usize::from(c.starts_by_reading());
                self.drive(fd, extra);
            }
            _ => {}
        }
    }

    /// The loop's wait, shortened to when the LRU maintainer is next due
    /// (rounded up to the millisecond, so it never wakes early and spins).
    fn maintainer_timeout(&mut self, timeout: i32) -> i32 {
        if timeout != 0 {
            // The loop may sleep: bumps queued since the last tick are
            // applied now, not by a wake-up for them alone.
            self.cache.lru_apply_bumps_now(self.cache.clock.mono_us);
        }
        match self.cache.maintainer_timeout(self.cache.clock.mono_us) {
            Some(us) => {
                let ms = us.div_ceil(1000).min(i32::MAX as u64) as i32;
                if timeout < 0 { ms } else { timeout.min(ms) }
            }
            None => timeout,
        }
    }

    /// Carries out page moves, and asks for them under `slabs automove`
    /// (once a second; on every turn in mode 2, which reacts to each
    /// eviction).
    fn rebalance(&mut self) {
        if !self.settings.slab_reassign {
            return;
        }
        let mode = self.settings.slab_automove;
        let now = self.cache.now();
        if mode == 2 || now != self.last_automove || self.automove_again {
            self.last_automove = now;
            let ratio = self.settings.tuning.slab_automove_ratio;
            let window = self.settings.tuning.slab_automove_window.max(1) as usize;
            self.automove_again = self.cache.automove_tick(mode, ratio, window);
        }
        if self.cache.rebalance.is_some() {
            self.cache.rebalance_step();
        }
    }

    /// Whether the crawler has work it can do now (a metadump waits while
    /// its client is behind on reading).
    fn crawl_can_progress(&self) -> bool {
        match self.cache.crawl_kind() {
            None => false,
            Some(CrawlKind::Expired) => true,
            Some(CrawlKind::Metadump { fd }) => match self.slots.get(fd as usize) {
                Some(Slot::Client(c)) => c.unsent() <= OUTPUT_HIGH_WATER,
                _ => true,
            },
        }
    }

    /// Starts an expiry crawl of every class on memcached's background
    /// schedule: often while items with a TTL exist, rarely otherwise.
    fn auto_crawl(&mut self) {
        let now = self.cache.now();
        let soon = self.cache.crawl_soon;
        if !self.cache.crawler_running
            || self.cache.crawl_busy()
            || (now < self.next_auto_crawl && !soon)
        {
            return;
        }
        self.cache.crawl_soon = false;
        let all: Vec<u8> = (1..=self.cache.slabs.largest()).collect();
        let limit = self.settings.lru_crawler_tocrawl;
        let started = self.cache.crawl_start(&all, CrawlKind::Expired, limit);
        // An empty cache is looked at again soon: items may arrive.
        self.next_auto_crawl = match started {
            CrawlStart::NotStarted => now + AUTO_CRAWL_SOON,
            _ => now + AUTO_CRAWL_IDLE,
        };
    }

    /// The cache's work between turns (`turn::between_turns`): the
    /// connection a metadump batch went to runs next.
    fn between_turns(&mut self) {
        let crawl = self.crawl_can_progress();
        let dump_to = match self.cache.crawl_kind() {
            Some(CrawlKind::Metadump { fd }) if crawl => match self.slots.get_mut(fd as usize) {
                Some(Slot::Client(c)) => Some(&mut **c),
                _ => None,
            },
            _ => None,
        };
        let dumped = dump_to.as_ref().map(|c| c.fd);
        let finished = turn::between_turns(&mut self.cache, crawl, dump_to);
        if let Some(fd) = dumped {
            self.drive(fd, 0);
        }
        if let Some(job) = finished
            && job.kind == CrawlKind::Expired
            && job.saw_ttl
        {
            let now = self.cache.now();
            self.next_auto_crawl = self.next_auto_crawl.min(now + AUTO_CRAWL_SOON);
        }
    }

    fn handle_signals(&mut self, fd: RawFd) {
        while let Some(sig) = sys::read_signal(fd) {
            if sig == libc::SIGUSR1 as u32 {
                self.stop = StopReason::Graceful;
            } else if sig == libc::SIGTERM as u32 || sig == libc::SIGINT as u32 {
                self.stop = StopReason::Normal;
            } else if sig == libc::SIGHUP as u32 {
                Credentials::reload(self.settings.auth_file.as_deref(), &mut self.settings.auth);
            }
        }
    }

    fn run_ready(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(fd) = self.ready.pop_front() else {
                break;
            };
            if let Some(Slot::Client(c)) = self.slots.get_mut(fd as usize) {
                c.queued = false;
                self.drive(fd, 0);
            }
        }
    }

    fn close(&mut self, fd: RawFd) {
        // Replies held for the AOF sync (`... quit` in one read) go out
        // first: the close waits for the end of the turn.
        if let Some(Slot::Client(c)) = self.slots.get_mut(fd as usize)
            && c.hold.is_some()
            && !matches!(c.state(), State::Watch)
        {
            c.close_after_write = true;
            return;
        }
        let slot = std::mem::replace(&mut self.slots[fd as usize], Slot::Empty);
        if let Slot::Client(mut c) = slot {
            if self.settings.read_buf_mem_limit > 0 {
                self.read_buf_bytes = self.read_buf_bytes.saturating_sub(readbuf::charge(&c));
            }
            // Replies memcached would already have written still go out;
            // a peer that is not reading them loses them.
            if c.unsent() > 0 {
                let _ = turn::flush(&mut Socket, &mut c, &mut self.stats);
            }
            if c.stream.finish() {
                self.stats.tls_handshake_errors += 1;
            }
            self.cache.crawl_cancel_for(fd);
            self.cache.ext_forget_conn(fd);
            self.note_close(fd, &mut c);
            let mut ctx = Ctx::new(&mut self.cache, &mut self.stats, &mut self.settings, fd);
            c.shut(&mut ctx);
            self.stats.curr_conns -= 1;
            self.clients -= 1;
            self.descriptor_freed();
            // Dropping the stream closes the descriptor, which also removes
            // it from the epoll set.
        }
    }

    /// Runs one connection as far as it can go: write what is pending, take
    /// buffered and newly readable requests within the budget.
    ///
    /// memcached runs one request before it starts counting `-R`, so a turn
    /// that begins with fresh input gets one extra.
    fn drive(&mut self, fd: RawFd, extra: usize) {
        let mut budget = self.settings.reqs_per_event.max(1) + extra;
        loop {
            if self.ext_hold(fd) {
                return;
            }
            let held = self.read_buf_charge(fd);
            let action = self.step(fd, &mut budget);
            if let Action::Shutdown(graceful) = action {
                self.stop = if graceful {
                    StopReason::Graceful
                } else {
                    StopReason::Normal
                };
            }
            if self.over_read_buf_limit(fd, held) {
                return self.close(fd);
            }
            match action {
                Action::Again => continue,
                Action::ConnsReport => self.append_conns_report(fd),
                Action::Idle => return,
                Action::Close | Action::Shutdown(_) => return self.close(fd),
                Action::Yield => {
                    self.stats.conn_yields += 1;
                    if let Some(Slot::Client(c)) = self.slots.get_mut(fd as usize)
                        && !c.queued
                    {
                        c.queued = true;
                        self.ready.push_back(fd);
                    }
                    return;
                }
            }
        }
    }

    /// `stats conns`: one block per descriptor, in descriptor order, as
    /// memcached prints it. The asking connection is mid-command, which
    /// memcached calls conn_parse_cmd.
    fn append_conns_report(&mut self, asker: RawFd) {
        let report = self.conns_report(asker);
        match self.slots.get_mut(asker as usize) {
            Some(Slot::Client(c)) | Some(Slot::Udp(c)) => {
                c.out.extend_from_slice(report.as_bytes())
            }
            _ => {}
        }
    }

    fn conns_report(&self, asker: RawFd) -> String {
        let now = self.cache.now();
        let mut report = String::new();
        let mut line = |fd: usize, name: &str, value: &dyn std::fmt::Display| {
            report.push_str(&format!("STAT {fd}:{name} {value}\r\n"));
        };
        for (fd, slot) in self.slots.iter().enumerate() {
            match slot {
                Slot::Listener(l, ..) => {
                    if let Some(addr) = l.addr_text() {
                        line(fd, "addr", &addr);
                    }
                    line(fd, "state", &"conn_listening");
                    line(fd, "secs_since_last_cmd", &now.saturating_sub(self.started));
                }
                Slot::Udp(_) if fd == asker as usize => {
                    // Mid-request, memcached shows whom it is serving.
                    line(fd, "UDP", &"UDP");
                    if let Some(peer) = self.udp.serving_peer() {
                        line(fd, "addr", &stream::addr_text("udp", peer));
                    }
                    if let Some(addr) = self.udp_local_text(fd) {
                        line(fd, "listen_addr", &addr);
                    }
                    line(fd, "state", &"conn_parse_cmd");
                    line(fd, "secs_since_last_cmd", &0);
                }
                Slot::Udp(_) | Slot::UdpShadow { .. } => {
                    // Between datagrams memcached shows a UDP connection
                    // reading, under its listening address.
                    line(fd, "UDP", &"UDP");
                    if let Some(addr) = self.udp_local_text(fd) {
                        line(fd, "addr", &addr);
                    }
                    line(fd, "state", &"conn_read");
                    let last = match slot {
                        Slot::Udp(c) => c.last_active,
                        _ => self.started,
                    };
                    line(fd, "secs_since_last_cmd", &now.saturating_sub(last));
                }
                Slot::Client(c) => {
                    if let (Some(peer), Some(local)) = (c.stream.peer_text(), c.stream.local_text())
                    {
                        line(fd, "addr", &peer);
                        line(fd, "listen_addr", &local);
                    }
                    let state = if fd == asker as usize {
                        "conn_parse_cmd"
                    } else {
                        c.state_name()
                    };
                    line(fd, "state", &state);
                    line(
                        fd,
                        "secs_since_last_cmd",
                        &now.saturating_sub(c.last_active),
                    );
                }
                _ => {}
            }
        }
        report.push_str("END\r\n");
        report
    }

    /// `udp:addr:port` of the socket behind a UDP descriptor.
    fn udp_local_text(&self, fd: usize) -> Option<String> {
        let addr = match self.slots.get(fd)? {
            Slot::Udp(c) => c.stream.udp_local_addr()?,
            Slot::UdpShadow { addr, .. } => **addr.as_ref()?,
            _ => return None,
        };
        Some(stream::addr_text("udp", addr))
    }

    /// One step of client `fd`'s turn (`turn::step`), on its socket.
    fn step(&mut self, fd: RawFd, budget: &mut usize) -> Action {
        let Reactor {
            slots,
            cache,
            stats,
            settings,
            scratch,
            durability,
            tls,
            ..
        } = self;
        let Some(Slot::Client(c)) = slots.get_mut(fd as usize) else {
            return Action::Idle;
        };
        let mut ctx = Ctx::new(cache, stats, settings, fd);
        ctx.tls = tls.as_mut();
        let held = durability.holds_replies().then_some(durability);
        turn::step(&mut Socket, c, &mut ctx, scratch, budget, held)
    }
}

/// The replies held for changes the append-only file did not take must
/// not claim success: they are dropped, an ascii or meta client gets
/// [`WRITES_REFUSED`] in their place, and the connection closes, since
/// what followed them in the pipeline can no longer be answered in order.
/// (A binary reply needs the request's opaque and opcode, gone by now: a
/// binary client sees the connection close.)
fn refuse_held(c: &mut Conn) {
    let from = c.hold.take().unwrap_or(0).max(c.out_pos).min(c.out.len());
    c.out.truncate(from);
    if !c.bin.binary {
        c.out.extend_from_slice(WRITES_REFUSED.as_bytes());
        c.out.extend_from_slice(b"\r\n");
    }
    c.close_after_write = true;
}
