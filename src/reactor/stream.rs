//! A client connection's socket: TCP, TLS over TCP (`-Z`), or a
//! unix-domain stream under `-s`. All read and write alike; they differ
//! only in how `stats conns` names their addresses, and TLS in what it
//! may need from the socket the other way round (`tls::TlsStream`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::tls::TlsStream;

pub(super) enum Stream {
    Tcp(TcpStream),
    /// A TLS session over TCP; set non-blocking before the session began.
    /// Boxed: a connection stays small (see `Conn`'s size bound).
    Tls(Box<TlsStream>),
    Unix(UnixStream),
    /// A UDP port's connection: its datagrams are read and answered by the
    /// reactor's UDP path, never through `Read`/`Write`.
    Udp(UdpSocket),
}

impl Stream {
    pub(super) fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(true),
            Stream::Tls(s) => s.tcp().set_nonblocking(true),
            Stream::Unix(s) => s.set_nonblocking(true),
            Stream::Udp(s) => s.set_nonblocking(true),
        }
    }

    /// Small replies go out at once (TCP only; unix sockets never delay).
    pub(super) fn set_nodelay(&self) {
        match self {
            Stream::Tcp(s) => drop(s.set_nodelay(true)),
            Stream::Tls(s) => drop(s.tcp().set_nodelay(true)),
            _ => {}
        }
    }

    /// memcached's `addr` text for the peer. A unix client has no address
    /// memcached can name, and it prints `?:<AF 0>` for it.
    pub(super) fn peer_text(&self) -> Option<String> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok().map(|a| addr_text("tcp", a)),
            Stream::Tls(s) => s.tcp().peer_addr().ok().map(|a| addr_text("tcp", a)),
            Stream::Unix(_) => Some("?:<AF 0>".to_string()),
            Stream::Udp(s) => s.local_addr().ok().map(|a| addr_text("udp", a)),
        }
    }

    /// memcached's `listen_addr` text: the local end.
    pub(super) fn local_text(&self) -> Option<String> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok().map(|a| addr_text("tcp", a)),
            Stream::Tls(s) => s.tcp().local_addr().ok().map(|a| addr_text("tcp", a)),
            Stream::Unix(s) => s.local_addr().ok().map(|a| unix_text(&a)),
            Stream::Udp(s) => s.local_addr().ok().map(|a| addr_text("udp", a)),
        }
    }

    pub(super) fn udp_local_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Udp(s) => s.local_addr().ok(),
            _ => None,
        }
    }

    /// The next datagram and its sender (UDP only).
    pub(super) fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Stream::Udp(s) => s.recv_from(buf),
            _ => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// A read that returned less than asked for drained the socket --
    /// unless TLS found the session's end after the data, which the next
    /// read reports without the socket signalling again.
    #[inline]
    pub(super) fn end_pending(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.ends_after_data())
    }

    /// Readiness that TLS turns around: a read waiting for the socket to
    /// take a handshake record resumes when it is writable, and a write
    /// waiting for a record to arrive, when it is readable.
    #[inline]
    pub(super) fn turned_around(&self) -> (bool, bool) {
        match self {
            Stream::Tls(s) => (s.read_wants_write(), s.write_wants_read()),
            _ => (false, false),
        }
    }

    /// TLS: sends what OpenSSL was given and could not send yet; true
    /// once nothing is left.
    #[inline]
    pub(super) fn drain(&mut self) -> io::Result<bool> {
        match self {
            Stream::Tls(s) => s.drain(),
            _ => Ok(true),
        }
    }

    /// TLS holds input already taken from the socket (see
    /// `TlsStream::holds_input`): read it without waiting for an event.
    pub(super) fn holds_input(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.holds_input())
    }

    /// TLS holds output the connection's buffer no longer has.
    #[inline]
    pub(super) fn holds_output(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.holds_output())
    }

    /// Before the descriptor closes: TLS says goodbye (close_notify) and
    /// tells whether the session died in its handshake.
    pub(super) fn finish(&mut self) -> bool {
        match self {
            Stream::Tls(s) => {
                s.close_notify();
                s.failed_in_handshake()
            }
            _ => false,
        }
    }
}

impl Stream {
    #[inline(never)]
    fn read_other(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Udp(s) => s.recv(buf),
        }
    }

    #[inline(never)]
    fn write_other(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Udp(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

/// memcached's text for an inet address: `tcp:1.2.3.4:5`, `udp6:[::1]:5`.
pub(super) fn addr_text(proto: &str, addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{proto}:{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("{proto}6:[{}]:{}", a.ip(), a.port()),
    }
}

/// memcached's text for a unix socket address: `unix:/the/path`.
pub(super) fn unix_text(addr: &std::os::unix::net::SocketAddr) -> String {
    match addr.as_pathname() {
        Some(p) => format!("unix:{}", p.display()),
        None => "?:<AF 0>".to_string(),
    }
}

// Plain TCP is the common case and its read and write are one syscall
// each: inlined where the turn reads and flushes, with the other kinds
// (TLS above all, whose session code is large) behind a call.
impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            _ => self.read_other(buf),
        }
    }
}

impl Write for Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            _ => self.write_other(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.tcp().as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Udp(s) => s.as_raw_fd(),
        }
    }
}
