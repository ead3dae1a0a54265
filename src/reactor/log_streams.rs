//! The reactor's side of the logger (`logger/`): it writes the log
//! streams to the watchers' sockets and logs connection opens and closes.
//!
//! A watcher is a client connection in the `Watch` state whose output is
//! its log stream, kept by the cache's logger. Each loop turn writes what
//! the streams hold as far as the sockets take; what a watcher sends is
//! read and dropped, and when it goes away it is closed, as memcached's
//! logger thread does.

use super::conn::{Conn, Event};
use super::stream::Stream;
use super::{Reactor, Slot};
use crate::logger::{CONNEVENTS, CloseReason, Peer};
use std::io::{self, Write};
use std::os::fd::RawFd;

impl Reactor {
    /// Writes every watcher's pending log lines; a watcher whose socket
    /// fails is closed.
    pub(super) fn flush_watchers(&mut self) {
        if self.cache.logger.watcher_count() == 0 {
            return;
        }
        self.cache.logger.new_turn();
        let backlogged: Vec<RawFd> = self.cache.logger.backlogged().collect();
        for fd in backlogged {
            if self.write_watcher(fd).is_err() {
                self.close(fd);
            }
        }
    }

    fn write_watcher(&mut self, fd: RawFd) -> io::Result<()> {
        let Some(Slot::Client(c)) = self.slots.get_mut(fd as usize) else {
            // `watch` over UDP: a datagram socket cannot carry a stream
            // (memcached's logger fails to write it and drops the watcher).
            self.cache.logger.remove_watcher(fd);
            return Ok(());
        };
        if matches!(c.stream, Stream::Tls(_)) {
            // Its bytes go through the TLS session, never straight out.
            self.cache.logger.no_sink_for(fd);
        }
        while c.writable {
            let pending = self.cache.logger.pending(fd);
            if pending.is_empty() {
                break;
            }
            match c.stream.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.cache.logger.written(fd, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// memcached's `conn_new` entry, for an accepted client.
    pub(super) fn log_conn_new(&mut self, fd: RawFd) {
        if !self.cache.logger.wants(CONNEVENTS) {
            return;
        }
        if let Some(Slot::Client(c)) = self.slots.get(fd as usize)
            && let Some(peer) = peer_of(&c.stream)
        {
            self.cache.logger.conn_new(peer, fd);
        }
    }

    /// Before a client's socket closes: a watcher stops being one (and
    /// closes as memcached closes it from its logger thread: traced so, and
    /// for no reason it names), then the close is logged to the remaining
    /// watchers.
    pub(super) fn note_close(&mut self, fd: RawFd, c: &mut Conn) {
        if self.cache.logger.is_watcher(fd) {
            self.cache.logger.remove_watcher(fd);
            c.close_reason = CloseReason::Error;
            c.on(Event::WatcherGone, self.settings.verbose);
        }
        if self.cache.logger.wants(CONNEVENTS)
            && let Some(peer) = peer_of(&c.stream)
        {
            self.cache.logger.conn_close(peer, c.close_reason, fd);
        }
    }
}

/// The peer as memcached records it at accept; UDP ports are never logged.
fn peer_of(stream: &Stream) -> Option<Peer> {
    match stream {
        // A peer already gone (reset) has no address left to ask for.
        Stream::Tcp(s) => Some(tcp_peer(s)),
        Stream::Tls(s) => Some(tcp_peer(s.tcp())),
        Stream::Unix(_) => Some(Peer::Local),
        Stream::Udp(_) => None,
    }
}

fn tcp_peer(s: &std::net::TcpStream) -> Peer {
    Peer::Tcp(
        s.peer_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
    )
}
