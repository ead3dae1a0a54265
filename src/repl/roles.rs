//! Roles: who connects, who listens, and what happens when the link is
//! lost.
//!
//! Two nodes name each other with `-x`. At start a node tries to connect
//! to its peer's replication port; if that works it is the **replica**,
//! otherwise it becomes the **master** and listens on its own replication
//! port (`--repl-port`, default 11212) for the peer. A master without a
//! replica keeps trying the peer with backoff (a pair split by a network
//! fault heals that way); a replica that loses its master tries it once
//! more and then becomes master itself, so the survivor of a pair always
//! listens and the other node, restarted with the same options, rejoins.
//! A node given only a port (`-X <port>`) has no peer to try: it is master
//! from the start.
//!
//! **CAS lanes.** A master hands out odd CAS values and its replica even
//! ones. A replica that takes over keeps its lane while it is alone, so
//! the two sides of a cut never hand out the same value; a master takes
//! the odd lane when a replica joins.

use super::link::{KIND_HELLO, Link};
use super::{BACKOFF_MIN, Ctx, Repl, Role};
use crate::persist::mutations;
use crate::sys;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// A peer silent this long is taken for dead.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A link heard from this recently is alive: a new connection to the
/// listener must prove it is the peer before it may replace it.
const LIVE_WINDOW: Duration = Duration::from_secs(3);

impl Repl {
    /// Starts a non-blocking connection to the peer.
    pub(super) fn connect(&mut self, ctx: &mut Ctx) {
        if self.connecting.is_some() || self.link.is_some() {
            return;
        }
        let Some(peer) = self.peer else {
            // Only a port was given: wait for the peer as master.
            if self.role != Role::Master {
                self.become_master(ctx);
            }
            return;
        };
        match sys::connect_nonblocking(peer) {
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

    pub(super) fn connect_failed(&mut self, ctx: &mut Ctx) {
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

    pub(super) fn become_master(&mut self, ctx: &mut Ctx) {
        self.role = Role::Master;
        self.log("master");
        // A node that was a replica keeps its even CAS values while it is
        // master alone: if its old master is alive on the other side of a
        // cut, the two keep handing out different values, so two writes
        // of one key made while apart never tie. A master takes the odd
        // lane when a replica joins (`receive.rs`, HELLO).
        if !self.lane_chosen {
            self.lane_chosen = true;
            ctx.cache.set_cas_lane(true);
        }
        self.listen(ctx);
        self.publish(ctx);
    }

    /// Opens the replication listener if it is not open (a failure, such
    /// as the port still being in use, is retried on later turns).
    pub(super) fn listen(&mut self, ctx: &mut Ctx) {
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

    pub(super) fn unlisten(&mut self, ctx: &mut Ctx) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        // Dropping the listener closes it (and takes it out of epoll).
        let fd = listener.as_raw_fd();
        drop(listener);
        ctx.sockets.forget(fd);
    }

    /// A read error ends the link. A peer that failed `-Y` authentication
    /// is not our pair at all: rather than rejoin it at once as its
    /// replica, serve alone as master and try it again only after backoff.
    pub(super) fn read_failed(&mut self, e: io::Error, ctx: &mut Ctx) {
        if e.kind() != io::ErrorKind::PermissionDenied {
            let why = self.tls_failure().unwrap_or("the peer went away".into());
            return self.link_lost(&why, ctx);
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
    pub(super) fn connected(&mut self, ctx: &mut Ctx) {
        let (stream, _) = self.connecting.take().expect("a connection was pending");
        if self.link.is_some() {
            // The peer connected to us first: keep that link.
            let fd = stream.as_raw_fd();
            drop(stream);
            return ctx.sockets.forget(fd);
        }
        let _ = stream.set_nodelay(true);
        let fd = stream.as_raw_fd();
        let Some(wire) = self.wire(stream, false) else {
            ctx.sockets.forget(fd);
            return self.connect_failed(ctx);
        };
        let mut link = Link::new(wire, true, self.secret);
        link.control(KIND_HELLO, self.node_id);
        self.link = Some(link);
        self.role = Role::Replica;
        self.feed_mark = mutations::len(ctx.cache);
        self.log("replica");
        self.lane_chosen = true;
        ctx.cache.set_cas_lane(false);
        self.start_upload(ctx.cache);
        self.unlisten(ctx);
        self.flush(ctx);
        self.publish(ctx);
    }

    /// The peer connects to our replication listener.
    pub(super) fn accept(&mut self, ctx: &mut Ctx) {
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
            let _ = stream.set_nodelay(true);
            let Some(wire) = self.wire(stream, true) else {
                continue;
            };
            if self
                .link
                .as_ref()
                .is_some_and(|l| l.last_heard.elapsed() < LIVE_WINDOW)
            {
                self.add_candidate(wire, ctx);
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
            let link = Link::new(wire, false, self.secret);
            let fd = link.fd;
            self.link = Some(link);
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

    /// Closes the link; false if there was none.
    pub(super) fn drop_link(&mut self, why: &str, ctx: &mut Ctx) -> bool {
        let Some(link) = self.link.take() else {
            return false;
        };
        self.log(&format!("link lost: {why}"));
        let fd = link.fd;
        drop(link);
        ctx.sockets.forget(fd);
        true
    }

    pub(super) fn link_lost(&mut self, why: &str, ctx: &mut Ctx) {
        let synced = self.link.as_ref().is_some_and(|l| l.synced);
        if !self.drop_link(why, ctx) {
            return;
        }
        // A link that never got in sync does not earn a quick retry.
        let healthy = self.backoff == BACKOFF_MIN;
        self.schedule_retry();
        if self.role == Role::Replica {
            if healthy && synced {
                // Try the master once more at once; if that fails, take
                // over.
                self.role = Role::Connecting;
                self.connect(ctx);
            } else {
                // A link that closed before it was in sync counts as a
                // failed attempt (something in between -- a proxy, a NAT
                // -- may accept for a peer that is not there): serve as
                // master and retry with backoff.
                self.become_master(ctx);
            }
        }
        self.publish(ctx);
    }

    pub(super) fn timers(&mut self, ctx: &mut Ctx) {
        let slow = self
            .candidates
            .iter()
            .find(|c| c.last_heard.elapsed() > CONNECT_TIMEOUT)
            .map(|c| c.fd);
        if let Some(fd) = slow {
            self.drop_candidate(fd, "it did not prove itself in time", ctx);
        }
        if let Some(link) = &self.link
            && !self.held
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

#[cfg(test)]
mod tests {
    use crate::sys;
    use std::net::TcpListener;

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
}
