//! Listening sockets, opened the way memcached 1.6.18 opens them: a unix
//! socket under `-s` (and nothing else), otherwise TCP on `-p` and UDP on
//! `-U`, on every `-l` entry (or on every address when there is none).

use super::stream::{self, Stream};
use crate::settings::{Protocol, Settings};
use crate::sys;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;

/// memcached's ceiling for a UDP socket's send buffer.
const MAX_SENDBUF_SIZE: i32 = 256 * 1024 * 1024;

/// A socket that accepts stream connections.
pub(super) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub(super) fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    /// memcached's `addr` text for a listener in `stats conns`.
    pub(super) fn addr_text(&self) -> Option<String> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| stream::addr_text("tcp", a)),
            Listener::Unix(l) => l.local_addr().ok().map(|a| listening_unix_text(&a)),
        }
    }
}

/// memcached reads a listener's address into a `sockaddr_in6`, so a unix
/// listener's path shows cut to the 26 bytes that fit after the family.
fn listening_unix_text(addr: &std::os::unix::net::SocketAddr) -> String {
    const FITS: usize = 28 - 2;
    let Some(path) = addr.as_pathname() else {
        return stream::unix_text(addr);
    };
    let bytes = path.as_os_str().as_encoded_bytes();
    let cut = &bytes[..bytes.len().min(FITS)];
    format!("unix:{}", String::from_utf8_lossy(cut))
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// Everything the options ask the server to listen on, in memcached's
/// order of creation.
#[derive(Default)]
pub(super) struct Bound {
    /// Stream listeners, the protocol each speaks (`proto[...]:`), and
    /// whether over TLS (`-Z` unless `notls:`).
    pub(crate) streams: Vec<(Listener, Protocol, bool)>,
    pub(crate) udp: Vec<UdpPort>,
    /// The HTTP endpoint for `GET /metrics`, when asked for.
    pub(crate) metrics: Option<TcpListener>,
}

pub(super) struct UdpPort {
    pub(crate) socket: UdpSocket,
    /// Further descriptors for the socket, made right after it as
    /// memcached makes one per worker thread (they number the same way).
    pub(crate) shadows: Vec<OwnedFd>,
    /// The send buffer's size before and after enlarging it, for `-vv`.
    pub(crate) send_buffer: Option<(i32, i32)>,
}

/// One `-l` entry taken apart the way memcached's `server_sockets` does.
#[derive(Debug, PartialEq)]
pub(super) struct Entry {
    /// None for `*`: every address.
    pub(super) host: Option<String>,
    port: Option<u16>,
    protocol: Option<Protocol>,
    /// `notls:`: plaintext on a server with `-Z` (a build with TLS only).
    notls: bool,
}

/// Why an entry could not be used: memcached prints `message` itself, then
/// its "failed to listen" line with whatever errno was (here, none).
pub(super) struct BadEntry(String);

pub(super) fn parse_entry(mut p: &str) -> Result<Entry, BadEntry> {
    let mut protocol = None;
    // memcached skips the word and the character after it, whatever it is.
    let notls = cfg!(feature = "tls") && p.starts_with("notls");
    if notls {
        p = p.get("notls".len() + 1..).unwrap_or("");
    }
    if let Some(rest) = p.strip_prefix("proto[") {
        // memcached quotes the spec from its bracket on.
        let (name, after) = rest
            .split_once(']')
            .ok_or_else(|| BadEntry(format!("Invalid protocol spec: \"[{rest}\"\n")))?;
        // memcached compares a prefix of each name, so `proto[]` is ascii.
        protocol = [
            ("ascii", Protocol::Ascii),
            ("binary", Protocol::Binary),
            ("negotiating", Protocol::Negotiating),
        ]
        .into_iter()
        .find(|(full, _)| full.starts_with(name))
        .map(|(_, proto)| proto);
        p = after.get(1..).unwrap_or("");
    }
    if let Some(rest) = p.strip_prefix("tag[") {
        let (tag, after) = rest
            .split_once(']')
            .ok_or_else(|| BadEntry(format!("Invalid tag in socket config: \"[{rest}\"\n")))?;
        if tag.is_empty() || tag.len() > 8 {
            let msg = format!("Listener tags must be between 1 and 8 characters: \"{tag}\"\n");
            return Err(BadEntry(msg));
        }
        p = after.get(1..).unwrap_or("");
    }
    let mut bracketed = None;
    if let Some(rest) = p.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| BadEntry(format!("Invalid IPV6 address: \"{p}\"")))?;
        bracketed = Some(h);
        p = after;
    }
    let mut port = None;
    if let Some(colon) = p.find(':') {
        // One colon is a port; several are a bare IPv6 address, unless the
        // address was bracketed.
        let after = &p[colon + 1..];
        if !after.contains(':') || bracketed.is_some() {
            port = Some(parse_port(after)?);
            p = &p[..colon];
        }
    }
    let host = bracketed.unwrap_or(p);
    Ok(Entry {
        host: (host != "*").then(|| host.to_string()),
        port,
        protocol,
        notls,
    })
}

/// memcached's `safe_strtol` on the port text; like memcached, a number
/// that is no port wraps into one when it is bound.
/// The port a `-p`/`-U` value binds: memcached turns -1 into 0 (the kernel
/// picks a free port, which `MEMCACHED_PORT_FILENAME` then reports); any
/// other value reaches `bind` truncated to 16 bits.
fn bind_port(given: i32) -> u16 {
    if given == -1 { 0 } else { given as u16 }
}

fn parse_port(text: &str) -> Result<u16, BadEntry> {
    let bad = || BadEntry(format!("Invalid port number: \"{text}\"\n"));
    let trimmed = text.trim_start();
    let n: i64 = trimmed.parse().map_err(|_| bad())?;
    i32::try_from(n).map_err(|_| bad())?;
    Ok(n as u16)
}

/// The metrics port, on `metrics_addr`, else on the first `-l` host, else
/// on every IPv4 address.
pub(super) fn bind_metrics(s: &Settings) -> io::Result<TcpListener> {
    let port = s.metrics.port;
    let first_listen = s.listen.first().and_then(|l| l.split(',').next());
    let host = match (&s.metrics.addr, first_listen) {
        (Some(addr), _) => addr.clone(),
        (None, Some(entry)) => parse_entry(entry)
            .ok()
            .and_then(|e| e.host)
            .unwrap_or_else(|| "0.0.0.0".into()),
        (None, None) => "0.0.0.0".into(),
    };
    let failed = |e: io::Error| {
        let msg = format!(
            "failed to listen on metrics port {host}:{port}: {}",
            strerror(&e)
        );
        io::Error::new(e.kind(), msg)
    };
    let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .map_err(failed)?
        .next()
        .ok_or_else(|| failed(io::ErrorKind::AddrNotAvailable.into()))?;
    bind_tcp(addr, s.backlog).map_err(failed)
}

/// Every socket the options ask for.
pub(super) fn bind_all(s: &Settings) -> io::Result<Bound> {
    let mut bound = Bound::default();
    if let Some(path) = &s.socket_path {
        let l = bind_unix(path, s.access_mask, s.backlog)?;
        bound.streams.push((Listener::Unix(l), s.protocol, false));
        return Ok(bound);
    }
    if s.port != 0 {
        let port = bind_port(s.port);
        for (addr, proto, tls) in addresses(s, port, "TCP")? {
            let l = bind_tcp(addr, s.backlog).map_err(|e| bind_error(s, "TCP", port, e))?;
            bound.streams.push((Listener::Tcp(l), proto, tls));
        }
    }
    if s.udp_port != 0 {
        let port = bind_port(s.udp_port);
        for (addr, ..) in addresses(s, port, "UDP")? {
            let socket = bind_udp(addr).map_err(|e| bind_error(s, "UDP", port, e))?;
            bound.udp.push(udp_port(s, socket)?);
        }
    }
    Ok(bound)
}

/// A bound UDP socket made ready to serve: a large send buffer, and a
/// descriptor per `-t` thread as memcached has.
pub(super) fn udp_port(s: &Settings, socket: UdpSocket) -> io::Result<UdpPort> {
    let send_buffer = maximize_send_buffer(socket.as_raw_fd());
    let shadows = (1..s.udp_conns_per_port())
        .map(|_| sys::dup(socket.as_raw_fd()))
        .collect::<io::Result<_>>()?;
    Ok(UdpPort {
        socket,
        shadows,
        send_buffer,
    })
}

/// The addresses to bind for one transport, each with its protocol and
/// whether it speaks TLS (TCP only).
fn addresses(
    s: &Settings,
    port: u16,
    transport: &str,
) -> io::Result<Vec<(SocketAddr, Protocol, bool)>> {
    let wildcard = || -> Vec<SocketAddr> {
        vec![
            (std::net::Ipv4Addr::UNSPECIFIED, port).into(),
            (std::net::Ipv6Addr::UNSPECIFIED, port).into(),
        ]
    };
    if s.listen.is_empty() {
        return Ok(with_ipv6_if_present(wildcard())
            .into_iter()
            .map(|a| (a, s.protocol, s.tls.enabled))
            .collect());
    }
    let mut out = Vec::new();
    for text in &s.listen {
        let bad = |BadEntry(msg)| {
            eprint!("{msg}");
            let e = io::Error::from_raw_os_error(0);
            listen_error(s, transport, port, e)
        };
        let entry = parse_entry(text).map_err(bad)?;
        if entry.notls && !s.tls.enabled {
            let msg = "'notls' option is valid only when SSL is enabled\n";
            return Err(bad(BadEntry(msg.into())));
        }
        let port = entry.port.unwrap_or(port);
        let addrs = match &entry.host {
            None => with_ipv6_if_present(wildcard()),
            Some(h) => (h.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| lookup_error(s, transport, port, e))?
                .collect(),
        };
        let proto = entry.protocol.unwrap_or(s.protocol);
        let tls = s.tls.enabled && !entry.notls;
        out.extend(addrs.into_iter().map(|a| (a, proto, tls)));
    }
    Ok(out)
}

/// IPv6 is optional on the host: like memcached (which skips addresses it
/// cannot make a socket for), the wildcard leaves `::` out when absent.
fn with_ipv6_if_present(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let has_v6 = std::path::Path::new("/proc/net/if_inet6").exists();
    addrs
        .into_iter()
        .filter(|a| a.is_ipv4() || has_v6)
        .collect()
}

fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let l = if addr.is_ipv6() {
        TcpListener::from(sys::bind_v6only(addr, true)?)
    } else {
        TcpListener::bind(addr)?
    };
    l.set_nonblocking(true)?;
    sys::relisten(l.as_raw_fd(), backlog)?;
    Ok(l)
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = if addr.is_ipv6() {
        UdpSocket::from(sys::bind_v6only(addr, false)?)
    } else {
        UdpSocket::bind(addr)?
    };
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// memcached's `maximize_sndbuf`: binary-search the largest send buffer
/// the kernel accepts (it clamps rather than refuses, so this ends at the
/// ceiling), so bursts of reply datagrams are not dropped.
fn maximize_send_buffer(fd: RawFd) -> Option<(i32, i32)> {
    let old = sys::send_buffer(fd).ok()?;
    let (mut min, mut max, mut last_good) = (old, MAX_SENDBUF_SIZE, 0);
    while min <= max {
        let avg = ((min as u32 + max as u32) / 2) as i32;
        if sys::set_send_buffer(fd, avg) {
            last_good = avg;
            min = avg + 1;
        } else {
            max = avg - 1;
        }
    }
    Some((old, last_good))
}

/// `-s`: a stale socket file is removed (anything else at the path is
/// left, and the bind fails); the file's mode is `-a`, applied through the
/// umask at bind time as memcached does.
fn bind_unix(path: &str, mask: u32, backlog: i32) -> io::Result<UnixListener> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
    let unix_error = |e: io::Error, call: &str| {
        let after = errno_after_perror(&e);
        let msg = format!(
            "{call}(): {}\nfailed to listen on UNIX socket: {path}: {}",
            strerror(&e),
            strerror(&after)
        );
        io::Error::new(e.kind(), msg)
    };
    let l = sys::with_umask(!(mask & 0o777) & 0o777, || UnixListener::bind(path))
        .map_err(|e| unix_error(e, "bind"))?;
    l.set_nonblocking(true)?;
    sys::relisten(l.as_raw_fd(), backlog).map_err(|e| unix_error(e, "listen"))?;
    Ok(l)
}

/// memcached reports a failed `bind` with `perror` and then names errno
/// again in its "failed to listen" line. An address already in use is not
/// reported by itself (memcached tries the next address first).
fn bind_error(s: &Settings, transport: &str, port: u16, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        return listen_error(s, transport, port, e);
    }
    let after = listen_error(s, transport, port, errno_after_perror(&e));
    io::Error::new(e.kind(), format!("bind(): {}\n{after}", strerror(&e)))
}

/// A name that does not resolve: memcached prints getaddrinfo's message,
/// and errno is still clear.
fn lookup_error(s: &Settings, transport: &str, port: u16, e: io::Error) -> io::Error {
    let text = e.to_string();
    let why = text
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text);
    let after = listen_error(s, transport, port, io::Error::from_raw_os_error(0));
    io::Error::new(e.kind(), format!("getaddrinfo(): {why}\n{after}"))
}

/// errno after glibc's `perror`: it writes through a "w+" duplicate of
/// stderr, and making one fails with EINVAL unless stderr is open for
/// reading too -- not so for a pipe or a redirected file. memcached's next
/// message then says "Invalid argument".
fn errno_after_perror(e: &io::Error) -> io::Error {
    if sys::stderr_is_read_write() {
        io::Error::new(e.kind(), strerror(e))
    } else {
        io::Error::from_raw_os_error(libc::EINVAL)
    }
}

fn listen_error(s: &Settings, transport: &str, port: u16, e: io::Error) -> io::Error {
    let msg = if s.listen.is_empty() {
        format!(
            "failed to listen on {transport} port {port}: {}",
            strerror(&e)
        )
    } else {
        format!(
            "failed to listen on one of interface(s) {}: {}",
            s.listen.join(","),
            strerror(&e)
        )
    };
    io::Error::new(e.kind(), msg)
}

/// The C library's wording of an errno, as memcached prints it.
pub(super) fn strerror(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_bind_as_memcached_binds_them() {
        assert_eq!(bind_port(-1), 0);
        assert_eq!(bind_port(11211), 11211);
        assert_eq!(bind_port(70000), 4464);
    }

    use super::*;

    fn entry(text: &str) -> Entry {
        parse_entry(text).unwrap_or_else(|BadEntry(m)| panic!("{text}: {m}"))
    }

    #[test]
    fn entries_parse_as_memcached_parses_them() {
        let e = entry("127.0.0.1:5000");
        assert_eq!((e.host.as_deref(), e.port), (Some("127.0.0.1"), Some(5000)));
        let e = entry("::1");
        assert_eq!((e.host.as_deref(), e.port), (Some("::1"), None));
        let e = entry("[::1]:7");
        assert_eq!((e.host.as_deref(), e.port), (Some("::1"), Some(7)));
        let e = entry("[::1]");
        assert_eq!((e.host.as_deref(), e.port), (Some("::1"), None));
        assert_eq!(entry("*").host, None);
        let e = entry("proto[ascii]:tag[ab]:10.0.0.1:9");
        assert_eq!(e.protocol, Some(Protocol::Ascii));
        assert_eq!((e.host.as_deref(), e.port), (Some("10.0.0.1"), Some(9)));
    }

    #[test]
    fn bad_entries_have_memcacheds_messages() {
        let msg = |t: &str| parse_entry(t).err().map(|BadEntry(m)| m);
        assert_eq!(msg("1.2.3.4:x").unwrap(), "Invalid port number: \"x\"\n");
        assert_eq!(msg("[::1").unwrap(), "Invalid IPV6 address: \"[::1\"");
        assert!(
            msg("tag[123456789]:1.2.3.4")
                .unwrap()
                .contains("between 1 and 8")
        );
    }
}
