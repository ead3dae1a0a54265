//! The event loop's side of replication (`crate::repl`): the sockets it asks
//! the loop to watch and forget, what it borrows for each call, and the
//! interface its listener binds.

use super::{Reactor, Slot};
use crate::repl::{self, Repl};
use crate::sys;
use std::io;
use std::net::ToSocketAddrs;
use std::os::fd::RawFd;

/// The loop's epoll set and descriptor table, lent to replication.
struct LoopSockets<'a> {
    epoll: &'a sys::Epoll,
    slots: &'a mut Vec<Slot>,
}

impl repl::Sockets for LoopSockets<'_> {
    fn watch(&mut self, fd: RawFd, listener: bool) -> io::Result<()> {
        let i = fd as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || Slot::Empty);
        }
        self.slots[i] = Slot::Repl;
        let events = if listener {
            sys::READ | sys::EDGE
        } else {
            sys::READ | sys::WRITE | sys::EDGE
        };
        self.epoll.add(fd, events, fd as u64)
    }

    fn forget(&mut self, fd: RawFd) {
        if let Some(slot) = self.slots.get_mut(fd as usize) {
            *slot = Slot::Empty;
        }
    }
}

impl Reactor {
    /// Sets replication up when `-x` is given.
    pub(super) fn repl_start(&mut self) -> io::Result<()> {
        let listen_ip = first_listen_ip(&self.settings.listen);
        let Reactor {
            epoll,
            slots,
            cache,
            stats,
            settings,
            repl,
            ..
        } = self;
        let mut sockets = LoopSockets { epoll, slots };
        let mut ctx = repl::Ctx {
            cache,
            sockets: &mut sockets,
            stats: &mut stats.repl,
        };
        *repl = Repl::start(settings, listen_ip, &mut ctx)?;
        Ok(())
    }

    /// `-o repl_tls`: the link's TLS contexts, handed over before the
    /// first event (a link is made only on one).
    pub(super) fn repl_tls(&mut self, link: Option<crate::tls::Link>) {
        if let (Some(repl), Some(link)) = (&mut self.repl, link) {
            repl.use_tls(link);
        }
    }

    /// Runs `f` on replication, when it is on, with what it borrows from
    /// the loop.
    pub(super) fn with_repl(&mut self, f: impl FnOnce(&mut Repl, &mut repl::Ctx)) {
        let Reactor {
            epoll,
            slots,
            cache,
            stats,
            repl,
            ..
        } = self;
        let Some(repl) = repl else {
            return;
        };
        let mut sockets = LoopSockets { epoll, slots };
        let mut ctx = repl::Ctx {
            cache,
            sockets: &mut sockets,
            stats: &mut stats.repl,
        };
        f(repl, &mut ctx);
    }
}

/// The interface of the first `-l` entry, where the replication listener
/// binds; every interface when there is none (or it is `*`).
fn first_listen_ip(listen: &[String]) -> std::net::IpAddr {
    listen
        .first()
        .and_then(|entry| super::listen::parse_entry(entry).ok()?.host)
        .and_then(|host| (host.as_str(), 0).to_socket_addrs().ok()?.next())
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_binds_the_first_listen_interface() {
        let ip = |entries: &[&str]| {
            let v: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
            first_listen_ip(&v).to_string()
        };
        assert_eq!(ip(&[]), "0.0.0.0");
        assert_eq!(ip(&["*"]), "0.0.0.0");
        assert_eq!(ip(&["127.0.0.1:11211", "10.0.0.1"]), "127.0.0.1");
        assert_eq!(ip(&["[::1]:5"]), "::1");
        assert_eq!(ip(&["proto[ascii]:127.0.0.2"]), "127.0.0.2");
    }
}
