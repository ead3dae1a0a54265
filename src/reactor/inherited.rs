//! Sockets handed to the server at start instead of bound by it: systemd's
//! socket activation (the `sd_listen_fds` protocol, read here without
//! libsystemd), and anything else that speaks it (einhorn,
//! `systemd-socket-activate`).
//!
//! The protocol: descriptors 3 .. 3+`LISTEN_FDS` are open sockets meant for
//! the process whose pid is `LISTEN_PID`; `LISTEN_FDNAMES` optionally
//! names them, colon-separated. A `LISTEN_PID` that is not ours means the
//! variables were inherited by mistake (from a parent that was activated),
//! and they are ignored. Either way the variables are removed, as
//! `sd_listen_fds(1)` does, so a child of the server never takes the
//! sockets for its own.
//!
//! Each socket serves in the role its type and address say: a TCP or unix
//! stream socket is a memcached port, a UDP socket the UDP port, and a TCP
//! socket named `metrics` (or on `--metrics-port`) the metrics endpoint.
//! The listening socket belongs to whoever passed it (systemd holds it
//! across restarts), so it is never unlinked, and connections queued while
//! the server restarts wait in its backlog instead of being refused.

use super::listen::{self, Bound, Listener};
use crate::settings::Settings;
use crate::sys;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

/// The first descriptor the protocol hands over.
const FIRST_FD: RawFd = 3;

/// Sockets taken at start, before anything else could open a descriptor.
pub struct Inherited {
    pub(super) sockets: Vec<InheritedSocket>,
}

pub(super) struct InheritedSocket {
    pub(super) fd: OwnedFd,
    /// Its `LISTEN_FDNAMES` entry (systemd's `FileDescriptorName=`).
    pub(super) name: String,
    pub(super) kind: sys::SocketKind,
}

impl Inherited {
    /// Reads and removes the `LISTEN_*` variables; the sockets they give
    /// this process, if any. A descriptor that is no socket is reported
    /// and left alone.
    pub fn take() -> Option<Inherited> {
        let vars = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"].map(std::env::var);
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            sys::unset_env(name);
        }
        let [pid, count, names] = vars;
        let count = for_us(pid.ok()?.as_str(), count.ok()?.as_str())?;
        let names = names.unwrap_or_default();
        let mut names = names.split(':');
        let mut sockets = Vec::new();
        for fd in FIRST_FD..FIRST_FD + count {
            let name = names.next().unwrap_or("").to_string();
            match sys::socket_kind(fd).and_then(|kind| Ok((kind, sys::adopt_inherited(fd)?))) {
                Ok((kind, fd)) => sockets.push(InheritedSocket { fd, name, kind }),
                Err(e) => eprintln!(
                    "inherited descriptor {fd} (LISTEN_FDS) is not usable: {}",
                    sys::strerror(&e)
                ),
            }
        }
        Some(Inherited { sockets })
    }
}

impl Inherited {
    /// The sockets in their roles, in descriptor order (the order of the
    /// socket unit's `Listen*=` lines). Stream sockets not yet listening
    /// are made to, with `-b`; all are made non-blocking.
    pub(super) fn into_bound(self, s: &Settings) -> io::Result<Bound> {
        let mut bound = Bound::default();
        for socket in self.sockets {
            let fd = socket.fd.as_raw_fd();
            let port = local_port(&socket.fd);
            let role = socket.role(s.metrics.port, port);
            let socket_name = socket.name.clone();
            if let Role::Tcp | Role::Unix | Role::Metrics = role
                && !socket.listening()
            {
                sys::relisten(fd, s.backlog)?;
            }
            match role {
                Role::Tcp => {
                    let l = nonblocking_tcp(socket.fd)?;
                    // -Z applies to inherited TCP sockets too, except one named "notls".
                    let tls = s.tls.enabled && socket_name != "notls";
                    bound.streams.push((Listener::Tcp(l), s.protocol, tls));
                }
                Role::Unix => {
                    let l = UnixListener::from(socket.fd);
                    l.set_nonblocking(true)?;
                    bound.streams.push((Listener::Unix(l), s.protocol, false));
                }
                Role::Udp => {
                    let u = UdpSocket::from(socket.fd);
                    u.set_nonblocking(true)?;
                    bound.udp.push(listen::udp_port(s, u)?);
                }
                Role::Metrics if bound.metrics.is_none() => {
                    bound.metrics = Some(nonblocking_tcp(socket.fd)?);
                }
                Role::Metrics => {
                    eprintln!("inherited descriptor {fd}: a second metrics socket, not used")
                }
                Role::Unusable(what) => {
                    eprintln!("inherited descriptor {fd} is {what}: not used")
                }
            }
        }
        if bound.streams.is_empty() && bound.udp.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "failed to listen: LISTEN_FDS gave no TCP, UDP or unix socket to serve",
            ));
        }
        Ok(bound)
    }
}

fn nonblocking_tcp(fd: OwnedFd) -> io::Result<TcpListener> {
    let l = TcpListener::from(fd);
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The port an IP socket is bound to.
fn local_port(fd: &OwnedFd) -> Option<u16> {
    let l = TcpListener::from(fd.try_clone().ok()?);
    l.local_addr().ok().map(|a| a.port())
}

/// Every socket to serve: the inherited ones when the server was started
/// with some (socket activation), else those the options ask for; and the
/// metrics endpoint, bound here unless it came inherited.
pub(super) fn open_all(s: &Settings, inherited: Option<Inherited>) -> io::Result<Bound> {
    let mut bound = match inherited {
        Some(sockets) => sockets.into_bound(s)?,
        None => listen::bind_all(s)?,
    };
    if bound.metrics.is_none() && s.metrics.port != 0 {
        bound.metrics = Some(listen::bind_metrics(s)?);
    }
    Ok(bound)
}

/// How many descriptors the variables give this process: none when
/// `LISTEN_PID` names another process or either value is not a number.
fn for_us(pid: &str, count: &str) -> Option<RawFd> {
    let pid: u32 = pid.trim().parse().ok()?;
    let count: RawFd = count.trim().parse().ok()?;
    (pid == std::process::id() && count > 0).then_some(count.min(RawFd::MAX - FIRST_FD))
}

/// The role an inherited socket takes, from its type, family and name.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Role {
    Tcp,
    Unix,
    Udp,
    Metrics,
    /// Something the server has no use for (a unix datagram socket, a raw
    /// socket, ...): reported, closed.
    Unusable(&'static str),
}

impl InheritedSocket {
    /// `metrics_port`: a TCP socket on it serves /metrics even unnamed.
    pub(super) fn role(&self, metrics_port: u16, local_port: Option<u16>) -> Role {
        let k = &self.kind;
        let inet = k.family == libc::AF_INET || k.family == libc::AF_INET6;
        if k.connected && !k.listening {
            return Role::Unusable("a connection, not a socket to listen on (Accept=yes)");
        }
        match (k.kind, inet, k.family == libc::AF_UNIX) {
            (libc::SOCK_STREAM, true, _)
                if self.name == "metrics"
                    || (metrics_port != 0 && local_port == Some(metrics_port)) =>
            {
                Role::Metrics
            }
            (libc::SOCK_STREAM, true, _) => Role::Tcp,
            (libc::SOCK_STREAM, _, true) => Role::Unix,
            (libc::SOCK_DGRAM, true, _) => Role::Udp,
            (libc::SOCK_DGRAM, _, true) => Role::Unusable("a unix datagram socket"),
            _ => Role::Unusable("neither a stream nor a datagram socket"),
        }
    }

    /// Whether the kernel already queues connections on it (systemd's
    /// `Accept=no` stream sockets are listening; a bare bound one is not).
    pub(super) fn listening(&self) -> bool {
        self.kind.listening
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(family: i32, kind: i32, name: &str) -> InheritedSocket {
        let fd = sys::dup(0).unwrap();
        let kind = sys::SocketKind {
            family,
            kind,
            listening: true,
            connected: false,
        };
        InheritedSocket {
            fd,
            name: name.into(),
            kind,
        }
    }

    #[test]
    fn roles_follow_type_family_name_and_port() {
        let (inet, inet6, unix) = (libc::AF_INET, libc::AF_INET6, libc::AF_UNIX);
        let (stream, dgram) = (libc::SOCK_STREAM, libc::SOCK_DGRAM);
        assert_eq!(socket(inet, stream, "").role(0, Some(11211)), Role::Tcp);
        assert_eq!(socket(inet6, stream, "mc").role(0, Some(11211)), Role::Tcp);
        assert_eq!(socket(unix, stream, "").role(0, None), Role::Unix);
        assert_eq!(socket(inet, dgram, "").role(0, Some(11211)), Role::Udp);
        assert_eq!(
            socket(inet, stream, "metrics").role(0, Some(1)),
            Role::Metrics
        );
        assert_eq!(
            socket(inet, stream, "").role(9150, Some(9150)),
            Role::Metrics
        );
        assert_eq!(socket(inet, stream, "").role(9150, Some(11211)), Role::Tcp);
        assert!(matches!(
            socket(unix, dgram, "").role(0, None),
            Role::Unusable(_)
        ));
        let mut accepted = socket(inet, stream, "connection");
        (accepted.kind.listening, accepted.kind.connected) = (false, true);
        assert!(matches!(accepted.role(0, Some(1)), Role::Unusable(_)));
    }

    #[test]
    fn variables_for_another_process_are_ignored() {
        let me = std::process::id().to_string();
        assert_eq!(for_us(&me, "2"), Some(2));
        assert_eq!(for_us(&me, "0"), None);
        assert_eq!(for_us(&me, "x"), None);
        assert_eq!(for_us("1", "2"), None);
        assert_eq!(for_us("", "2"), None);
    }
}
