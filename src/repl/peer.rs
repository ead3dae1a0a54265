//! Who the peer is: `-x host[:port]` parsed and resolved once at start, and,
//! under `-Y`, the digest both nodes must show before anything else counts.

use crate::persist::record;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Under `-Y`, what a replication peer must send first: a 64-bit digest of
/// the authfile's bytes (two CRC32Cs over differently salted copies), so
/// only a node given the same file is heard. Like `-Y` itself, this keeps
/// out clients without the credentials; it is no defence against a
/// listener on the wire, who sees the passwords of ascii clients too.
pub(super) fn link_secret(authfile: &[u8]) -> u64 {
    let salted = |salt: u32| record::crc32c_update(record::crc32c(&salt.to_le_bytes()), authfile);
    (u64::from(salted(0x5265_706c)) << 32) | u64::from(salted(0x4175_7468))
}

/// Splits `-x host[:port]` (or `[v6]:port`) into host and optional port;
/// None when the shape is wrong (empty host, bad port).
pub(crate) fn split_peer(peer: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = peer.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else if peer.matches(':').count() == 1 {
        let (host, port) = peer.split_once(':')?;
        (host, Some(port))
    } else {
        (peer, None)
    };
    if host.is_empty() {
        return None;
    }
    match port {
        None => Some((host, None)),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some((host, Some(n))),
            _ => None,
        },
    }
}

/// The peer's address, resolved once at start (the loop must not block on
/// name lookups later).
pub(super) fn resolve_peer(text: &str, default_port: u16) -> io::Result<SocketAddr> {
    let bad = || {
        let message = format!("failed to resolve replication peer {text}");
        io::Error::new(io::ErrorKind::InvalidInput, message)
    };
    let (host, port) = split_peer(text).ok_or_else(bad)?;
    let port = port.unwrap_or(default_port);
    (host, port)
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_host_with_an_optional_port() {
        assert_eq!(split_peer("db1"), Some(("db1", None)));
        assert_eq!(split_peer("db1:7000"), Some(("db1", Some(7000))));
        assert_eq!(split_peer("[::1]:9"), Some(("::1", Some(9))));
        assert_eq!(split_peer("[::1]"), Some(("::1", None)));
        assert_eq!(split_peer("::1"), Some(("::1", None)));
        for bad in ["", ":80", "h:0", "h:65536", "h:x", "[::1]x", "[::1"] {
            assert_eq!(split_peer(bad), None, "{bad}");
        }
    }
}
