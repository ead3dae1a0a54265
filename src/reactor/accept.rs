//! Taking new clients off the listeners, and memcached's "listen
//! disabled": when no client can be taken now -- the process or the
//! system is out of descriptors, or `-c` is reached without
//! `maxconns_fast` -- accepting pauses, is counted in
//! `listen_disabled_num` and `time_in_listen_disabled_us`, and is retried
//! every 10 ms (memcached's interval) and as soon as a client closes.
//!
//! The listeners are edge-triggered: a connection that arrived while
//! accepting was paused raises no new event, so the retry accepts from
//! every listener itself. Clients waiting in the backlog are served as
//! soon as a descriptor or a slot is free, without a new connection
//! arriving to wake the listener. As memcached does, the backlog shrinks
//! to its least while paused (`listen(fd, 0)`: the kernel still queues
//! one) and grows back to `-b` on resuming, so clients that come while
//! the server cannot take them wait in their own SYN retries rather than
//! in a queue that only grows.

use super::conn::Conn;
use super::stream::Stream;
use super::{Reactor, Slot};
use crate::settings::Protocol;
use crate::sys;
use crate::tls::Refused;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// memcached's `maxconns_handler` polls this often while listening is off.
const RETRY: Duration = Duration::from_millis(10);

/// Accepting is paused.
pub(super) struct Pause {
    since: Instant,
    next_try: Instant,
    /// A client closed: a slot or a descriptor may be free now.
    try_now: bool,
}

/// Why a listener's backlog could not be emptied.
enum Blocked {
    /// `-c` clients are connected (without `maxconns_fast`) and another
    /// one waits.
    Limit,
    /// accept failed for want of a resource (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM) or for a reason that says nothing about one connection.
    Failed(io::Error),
}

/// What an accept error means.
enum Failure {
    /// The backlog is empty.
    Drained,
    /// That one connection failed (the peer reset it, a network error
    /// accept passes on); the next may be fine.
    Next,
    Stop,
}

fn classify(e: &io::Error) -> Failure {
    if e.kind() == io::ErrorKind::WouldBlock {
        return Failure::Drained;
    }
    match e.raw_os_error() {
        Some(
            libc::EINTR
            | libc::ECONNABORTED
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH,
        ) => Failure::Next,
        _ => Failure::Stop,
    }
}

impl Reactor {
    /// A listener is readable. While accepting is paused the retry takes
    /// its clients.
    pub(super) fn on_listener(&mut self, lfd: RawFd) {
        if self.paused.is_some() {
            return;
        }
        if let (_, Some(why)) = self.accept_from(lfd) {
            self.pause_accepting(why);
        }
    }

    /// Without `maxconns_fast`, memcached's descriptor limit (`-c`) is
    /// what stops it: it takes clients up to descriptor `-c` - 1, one more
    /// than `maxconns_fast` lets stay, then accept fails with EMFILE.
    fn has_room(&self) -> bool {
        self.settings.maxconns_fast || self.clients < self.max_clients + 1
    }

    /// Accepts until the backlog is empty or something blocks; returns
    /// how many connections were taken and what blocked, if anything.
    fn accept_from(&mut self, lfd: RawFd) -> (usize, Option<Blocked>) {
        let mut taken = 0;
        loop {
            let Some(&Slot::Listener(ref l, protocol, tls)) = self.slots.get(lfd as usize) else {
                return (taken, None);
            };
            if !self.has_room() {
                // memcached is level-triggered and stops only when a
                // client is actually waiting.
                let waiting = sys::readable_now(lfd);
                return (taken, waiting.then_some(Blocked::Limit));
            }
            match l.accept() {
                Ok(stream) => {
                    taken += 1;
                    self.admit(stream, protocol, tls);
                }
                Err(e) => match classify(&e) {
                    Failure::Drained => return (taken, None),
                    Failure::Next => continue,
                    // accept takes a descriptor before it looks at the
                    // backlog, so EMFILE comes with nobody waiting too;
                    // memcached, level-triggered, stops only for a client.
                    Failure::Stop if !sys::readable_now(lfd) => return (taken, None),
                    Failure::Stop => return (taken, Some(Blocked::Failed(e))),
                },
            }
        }
    }

    /// memcached's `accept_new_conns(false)`, with its messages.
    fn pause_accepting(&mut self, why: Blocked) {
        let emfile = match &why {
            Blocked::Limit => true,
            Blocked::Failed(e) => e.raw_os_error() == Some(libc::EMFILE),
        };
        let text = match &why {
            Blocked::Limit => sys::strerror(&io::Error::from_raw_os_error(libc::EMFILE)),
            Blocked::Failed(e) => sys::strerror(e),
        };
        eprintln!("accept4(): {text}");
        if !emfile {
            eprintln!("accept(): {text}");
        } else if self.settings.verbose > 0 {
            eprintln!("Too many open connections");
        }
        self.set_backlogs(0);
        self.stats.listen_disabled_num += 1;
        self.stats.accepting_conns = false;
        let now = Instant::now();
        self.paused = Some(Pause {
            since: now,
            next_try: now + RETRY,
            try_now: false,
        });
    }

    /// memcached's `accept_new_conns(true)`: the time spent paused is
    /// counted when accepting resumes.
    fn resume_accepting(&mut self) {
        if let Some(p) = self.paused.take() {
            self.set_backlogs(self.settings.backlog);
            let us = p.since.elapsed().as_micros().min(u64::MAX as u128) as u64;
            self.stats.time_in_listen_disabled_us += us;
            self.stats.accepting_conns = true;
        }
    }

    /// Every listener's accept queue, as memcached resizes them.
    fn set_backlogs(&self, backlog: i32) {
        for (fd, slot) in self.slots.iter().enumerate() {
            if matches!(slot, Slot::Listener(..))
                && let Err(e) = sys::relisten(fd as RawFd, backlog)
            {
                eprintln!("listen: {}", sys::strerror(&e));
            }
        }
    }

    /// A client closed: while paused, the retry runs on this turn.
    pub(super) fn descriptor_freed(&mut self) {
        if let Some(p) = &mut self.paused {
            p.try_now = true;
        }
    }

    /// The longest the loop may wait for events before the retry is due.
    pub(super) fn accept_timeout(&self, timeout_ms: i32) -> i32 {
        match &self.paused {
            None => timeout_ms,
            Some(p) if p.try_now => 0,
            Some(p) => {
                let left = p.next_try.saturating_duration_since(Instant::now());
                // Rounded up, so the wait does not end just short of it.
                let ms = left.as_micros().div_ceil(1000) as i32;
                timeout_ms.min(ms)
            }
        }
    }

    /// While paused, once due: accepts from every listener. Accepting
    /// resumes when every backlog is empty; a client taken and then a
    /// block again is a resume and a new pause, as in memcached (which
    /// resumes after a close and pauses at the next EMFILE); a block with
    /// no client taken is the same pause going on.
    pub(super) fn retry_accepting(&mut self) {
        // The clock is read only while paused: this runs every turn.
        let Some(p) = &self.paused else {
            return;
        };
        let now = Instant::now();
        if !p.try_now && now < p.next_try {
            return;
        }
        let mut taken = 0;
        let mut blocked = None;
        for fd in 0..self.slots.len() {
            if matches!(self.slots[fd], Slot::Listener(..)) {
                let (n, why) = self.accept_from(fd as RawFd);
                taken += n;
                if why.is_some() {
                    blocked = why;
                    break;
                }
            }
        }
        match blocked {
            None => self.resume_accepting(),
            Some(why) if taken > 0 => {
                self.resume_accepting();
                self.pause_accepting(why);
            }
            Some(_) => {
                if let Some(p) = &mut self.paused {
                    p.try_now = false;
                    p.next_try = now + RETRY;
                }
            }
        }
    }

    /// A client of a TLS listener gets its session, its handshake started
    /// as memcached starts it; one that fails it at once is closed and
    /// counted, as memcached does.
    fn secure(&mut self, stream: Stream, tls: bool) -> Option<Stream> {
        let server = match (&self.tls, tls) {
            (Some(server), true) => server,
            _ => return Some(stream),
        };
        let tcp = match stream {
            Stream::Tcp(tcp) => tcp,
            other => return Some(other),
        };
        match server.accept(tcp) {
            Ok(session) => Some(Stream::Tls(Box::new(session))),
            Err(Refused::Session) => {
                if self.settings.verbose > 0 {
                    eprintln!("Failed to created the SSL object");
                }
                None
            }
            Err(Refused::Handshake(code)) => {
                if self.settings.verbose > 0 {
                    let errno = sys::strerror(&io::Error::last_os_error());
                    eprintln!("SSL connection failed with error code : {code} : {errno}");
                }
                self.stats.tls_handshake_errors += 1;
                None
            }
        }
    }

    /// Registers an accepted client, or turns it away with memcached's
    /// line when `maxconns_fast` is on and `-c` is reached.
    fn admit(&mut self, stream: Stream, protocol: Protocol, tls: bool) {
        let fd = stream.as_raw_fd();
        if self.settings.maxconns_fast && self.clients >= self.max_clients {
            sys::send_nosignal(fd, b"ERROR Too many open connections\r\n");
            self.stats.rejected_conns += 1;
            return;
        }
        if stream.set_nonblocking().is_err() {
            return;
        }
        stream.set_nodelay();
        let Some(stream) = self.secure(stream, tls) else {
            return;
        };
        let authenticating = self.settings.auth_file.is_some();
        let mut conn = Conn::new(stream, fd, self.cache.now(), authenticating);
        conn.choose_protocol(protocol);
        // Registering reports the socket writable at once, so the
        // connection gets its first turn and reads what TLS holds.
        conn.readable = conn.stream.holds_input();
        if self
            .register(
                fd,
                Slot::Client(Box::new(conn)),
                sys::READ | sys::WRITE | sys::EDGE,
            )
            .is_err()
        {
            self.slots[fd as usize] = Slot::Empty;
            return;
        }
        if self.settings.verbose > 1 {
            let what = match protocol {
                Protocol::Negotiating => "auto-negotiating client connection",
                Protocol::Ascii => "ascii client connection.",
                Protocol::Binary => "binary client connection.",
            };
            eprintln!("<{fd} new {what}");
        }
        self.clients += 1;
        self.stats.curr_conns += 1;
        self.stats.total_conns += 1;
        self.stats.conn_structures = self.stats.conn_structures.max(self.stats.curr_conns);
        self.log_conn_new(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(errno: i32) -> &'static str {
        match classify(&io::Error::from_raw_os_error(errno)) {
            Failure::Drained => "drained",
            Failure::Next => "next",
            Failure::Stop => "stop",
        }
    }

    #[test]
    fn only_a_lack_of_resources_or_the_unknown_stops_accepting() {
        assert_eq!(verdict(libc::EAGAIN), "drained");
        for e in [
            libc::EINTR,
            libc::ECONNABORTED,
            libc::EPROTO,
            libc::ENETUNREACH,
        ] {
            assert_eq!(verdict(e), "next", "errno {e}");
        }
        for e in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EBADF,
        ] {
            assert_eq!(verdict(e), "stop", "errno {e}");
        }
    }
}
