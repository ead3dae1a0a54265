//! `MEMCACHED_PORT_FILENAME`: memcached's way of telling whoever started it
//! which ports it bound (its test suite starts it on `-p -1` / `-U -1` and
//! reads the ephemeral ports back).
//!
//! As memcached 1.6.18 does it: unless `-s` is given, `NAME.lck` is opened
//! for appending before the sockets are bound; once every TCP and UDP
//! socket is bound, one line per socket bound to an IP address goes in,
//! `TCP INET: <port>` or `UDP INET6: <port>` (TCP first, in binding order,
//! the port as the kernel reports it), and the file is renamed to `NAME`,
//! so a reader polling for `NAME` never sees it half written. A file that
//! cannot be opened is reported and the server starts anyway.

use super::listen::{Bound, Listener, strerror};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;

/// The variable memcached reads.
const VARIABLE: &str = "MEMCACHED_PORT_FILENAME";

/// The open `.lck` file and the name it will be given.
pub(super) struct PortFile {
    file: File,
    temp: String,
    path: String,
}

impl PortFile {
    /// Opens `NAME.lck` if the variable is set and the server listens on
    /// ports (not under `-s`); memcached's message if it cannot.
    pub(super) fn open(unix_socket: bool) -> Option<PortFile> {
        if unix_socket {
            return None;
        }
        let path = std::env::var_os(VARIABLE)?.to_string_lossy().into_owned();
        let temp = format!("{path}.lck");
        match OpenOptions::new().append(true).create(true).open(&temp) {
            Ok(file) => Some(PortFile { file, temp, path }),
            Err(e) => {
                eprintln!("Failed to open \"{temp}\": {}", strerror(&e));
                None
            }
        }
    }

    /// Writes the bound ports and renames the file into place. Like
    /// memcached, a failed write or rename is not reported.
    pub(super) fn publish(mut self, bound: &Bound) {
        let mut text = String::new();
        for (listener, ..) in &bound.streams {
            if let Listener::Tcp(l) = listener
                && let Ok(addr) = l.local_addr()
            {
                text.push_str(&line("TCP", addr));
            }
        }
        for port in &bound.udp {
            if let Ok(addr) = port.socket.local_addr() {
                text.push_str(&line("UDP", addr));
            }
        }
        let _ = self.file.write_all(text.as_bytes());
        drop(self.file);
        let _ = std::fs::rename(&self.temp, &self.path);
    }
}

/// memcached's `"%s INET: %u\n"` / `"%s INET6: %u\n"`.
fn line(transport: &str, addr: SocketAddr) -> String {
    let family = if addr.is_ipv4() { "INET" } else { "INET6" };
    format!("{transport} {family}: {}\n", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_memcacheds_format() {
        assert_eq!(
            line("TCP", "0.0.0.0:11211".parse().unwrap()),
            "TCP INET: 11211\n"
        );
        assert_eq!(line("UDP", "[::]:7".parse().unwrap()), "UDP INET6: 7\n");
    }
}
