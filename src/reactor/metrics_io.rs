//! The metrics endpoint's sockets in the loop: its listener and the HTTP
//! connections it accepts, driven like clients (non-blocking, edge-
//! triggered) and bounded like them: a request head is at most
//! `metrics::http::MAX_HEAD` bytes, must arrive whole within
//! [`REQUEST_SECONDS`], a connection idle (or not reading its response)
//! for [`IDLE_SECONDS`] is closed, at most [`MAX_HTTP_CONNS`] are open at
//! once, and a new request is read only once the last response is written.
//! They are not memcached connections: `stats` does not count them.

use super::{Reactor, Slot};
use crate::metrics::{self, http};
use crate::sys;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

/// Seconds a request head may take to arrive, from its first byte.
const REQUEST_SECONDS: u32 = 10;
/// Seconds a connection may sit between requests, or with a response its
/// client does not read.
const IDLE_SECONDS: u32 = 60;
/// HTTP connections open at once; more are answered 503 and closed.
const MAX_HTTP_CONNS: usize = 16;
const READ_CHUNK: usize = 4096;

pub(super) struct HttpConn {
    stream: TcpStream,
    input: Vec<u8>,
    /// How far the pending request's head has been scanned.
    scan: http::HeadScan,
    out: Vec<u8>,
    out_pos: usize,
    /// The second the pending request's first byte came, or the last
    /// activity when none is pending.
    since: u32,
    /// The response is the last: close once it is written.
    close_after: bool,
    /// The last response is written and our side shut: what the client
    /// still sends is read and dropped until it closes (closing with
    /// unread input would reset the connection, and the client could lose
    /// the response), for at most [`DRAIN_SECONDS`].
    draining: bool,
}

/// Seconds a finished connection waits for its client to close.
const DRAIN_SECONDS: u32 = 2;

/// What the loop keeps for the endpoint.
#[derive(Default)]
pub(super) struct MetricsState {
    pub(super) conns: usize,
    /// Accepting failed for want of a resource: try again on the next tick
    /// (the listener is edge-triggered and will not say so again).
    retry_accept: bool,
}

impl Reactor {
    pub(super) fn register_metrics(&mut self, listener: TcpListener) -> io::Result<()> {
        let fd = listener.as_raw_fd();
        if self.settings.verbose > 1 {
            eprintln!("<{fd} server listening (metrics http)");
        }
        self.register(fd, Slot::MetricsListener(listener), sys::READ | sys::EDGE)
    }

    pub(super) fn on_metrics_listener(&mut self, lfd: RawFd) {
        loop {
            let Some(Slot::MetricsListener(l)) = self.slots.get(lfd as usize) else {
                return;
            };
            match l.accept() {
                Ok((stream, _)) => self.admit_http(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(_) => {
                    self.metrics.retry_accept = true;
                    return;
                }
            }
        }
    }

    fn admit_http(&mut self, stream: TcpStream) {
        if self.metrics.conns >= MAX_HTTP_CONNS {
            let mut out = Vec::new();
            http::refuse(&mut out, http::Status::Busy);
            sys::send_nosignal(stream.as_raw_fd(), &out);
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let fd = stream.as_raw_fd();
        let conn = HttpConn {
            stream,
            input: Vec::new(),
            scan: http::HeadScan::default(),
            out: Vec::new(),
            out_pos: 0,
            since: self.cache.now(),
            close_after: false,
            draining: false,
        };
        let events = sys::READ | sys::WRITE | sys::EDGE;
        if self
            .register(fd, Slot::Http(Box::new(conn)), events)
            .is_err()
        {
            self.slots[fd as usize] = Slot::Empty;
            return;
        }
        self.metrics.conns += 1;
    }

    /// Writes what is pending, answers the next complete request, reads:
    /// until the socket would block or the connection is done.
    pub(super) fn drive_http(&mut self, fd: RawFd) {
        let Reactor {
            slots,
            cache,
            stats,
            settings,
            scratch,
            ..
        } = self;
        let Some(Slot::Http(c)) = slots.get_mut(fd as usize) else {
            return;
        };
        let now = cache.now();
        let done = loop {
            match c.flush() {
                Ok(true) => {}
                Ok(false) => break false,
                Err(_) => break true,
            }
            if c.close_after && !c.draining {
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
                c.draining = true;
                c.input.clear();
                c.since = now;
            }
            if c.draining {
                match c.stream.read(&mut scratch[..READ_CHUNK]) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break true,
                }
            }
            if let http::Parsed::Request { len, answer } = http::parse(&c.input, &mut c.scan) {
                c.input.drain(..len.min(c.input.len()));
                c.scan = http::HeadScan::default();
                http::respond(&mut c.out, &answer, || {
                    metrics::render(stats, cache, settings)
                });
                c.close_after = answer.close;
                c.since = now;
                continue;
            }
            let chunk = &mut scratch[..READ_CHUNK];
            match c.stream.read(chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    if c.input.is_empty() {
                        c.since = now;
                    }
                    c.input.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if done {
            self.close_http(fd);
        }
    }

    fn close_http(&mut self, fd: RawFd) {
        if let Slot::Http(_) = std::mem::replace(&mut self.slots[fd as usize], Slot::Empty) {
            self.metrics.conns -= 1;
        }
    }

    /// Once a second: slow requests get 408 and close, idle connections
    /// close; a failed accept is retried.
    pub(super) fn http_tick(&mut self) {
        let now = self.cache.now();
        let (mut expired, mut timed_out) = (Vec::new(), Vec::new());
        for (fd, slot) in self.slots.iter_mut().enumerate() {
            if let Slot::Http(c) = slot {
                let age = now.saturating_sub(c.since);
                if c.draining {
                    if age > DRAIN_SECONDS {
                        expired.push(fd as RawFd);
                    }
                } else if !c.input.is_empty() && c.out.is_empty() && age > REQUEST_SECONDS {
                    http::refuse(&mut c.out, http::Status::RequestTimeout);
                    c.input.clear();
                    c.close_after = true;
                    timed_out.push(fd as RawFd);
                } else if age > IDLE_SECONDS {
                    expired.push(fd as RawFd);
                }
            }
        }
        for fd in expired {
            self.close_http(fd);
        }
        for fd in timed_out {
            self.drive_http(fd);
        }
        if std::mem::take(&mut self.metrics.retry_accept) {
            let listeners: Vec<RawFd> = (0..self.slots.len())
                .filter(|&fd| matches!(self.slots[fd], Slot::MetricsListener(_)))
                .map(|fd| fd as RawFd)
                .collect();
            for fd in listeners {
                self.on_metrics_listener(fd);
            }
        }
    }
}

impl HttpConn {
    /// Writes the pending response: true once it is all out.
    fn flush(&mut self) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(true)
    }
}
