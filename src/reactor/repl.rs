//! Replication: repcached-style pairs.

/// Splits `-x host[:port]` (or `[v6]:port`) into host and optional port;
/// None when the shape is wrong (empty host, bad port).
pub fn split_peer(peer: &str) -> Option<(&str, Option<u16>)> {
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
