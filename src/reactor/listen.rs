//! Listening sockets from `-l`/`-p`, bound the way memcached binds them.

use super::sys;
use crate::settings::Settings;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;

/// One `-l` entry: `host`, `host:port`, `[v6]` or `[v6]:port`.
pub(super) fn parse_listen(entry: &str, default_port: u16) -> io::Result<Vec<SocketAddr>> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad address"))?;
        let port = after.strip_prefix(':').map(str::to_string);
        (h.to_string(), port)
    } else if entry.matches(':').count() == 1 {
        let (h, p) = entry.split_once(':').unwrap();
        (h.to_string(), Some(p.to_string()))
    } else {
        (entry.to_string(), None)
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad port"))?,
        None => default_port,
    };
    Ok((host.as_str(), port).to_socket_addrs()?.collect())
}

fn bind(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    sys::relisten(l.as_raw_fd(), backlog)?;
    Ok(l)
}

/// Every TCP listener the options ask for; none when `-p 0` or `-s`.
pub fn bind_all(s: &Settings) -> io::Result<Vec<TcpListener>> {
    if s.port == 0 && s.listen.iter().all(|l| !l.contains(':')) || s.socket_path.is_some() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    if s.listen.is_empty() {
        let any4: SocketAddr = ([0, 0, 0, 0], s.port).into();
        out.push(bind(any4, s.backlog).map_err(|e| listen_error(s, e))?);
        // IPv6 is optional on the host; memcached skips it when absent.
        let any6: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, s.port).into();
        if let Ok(l) = bind_v6only(any6, s.backlog) {
            out.push(l);
        }
        return Ok(out);
    }
    for entry in &s.listen {
        for addr in parse_listen(entry, s.port).map_err(|e| listen_error(s, e))? {
            let l = if addr.is_ipv6() {
                bind_v6only(addr, s.backlog)
            } else {
                bind(addr, s.backlog)
            };
            out.push(l.map_err(|e| listen_error(s, e))?);
        }
    }
    Ok(out)
}

/// std binds IPv6 sockets dual-stack; beside an IPv4 wildcard that would
/// collide, so v6 listeners are v6-only, as memcached makes them.
fn bind_v6only(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let l = sys::bind_v6only(addr)?;
    l.set_nonblocking(true)?;
    sys::relisten(l.as_raw_fd(), backlog)?;
    Ok(l)
}

fn listen_error(s: &Settings, e: io::Error) -> io::Error {
    let msg = if s.listen.is_empty() {
        format!("failed to listen on TCP port {}: {}", s.port, strerror(&e))
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
fn strerror(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
