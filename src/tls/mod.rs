//! TLS for client connections (`-Z`, `-o ssl_*`, `refresh_certs`), as
//! memcached 1.6.18 built with OpenSSL does it: one server context built
//! from the settings at start-up (before `-u` drops root, so a key only
//! root can read works), a TLS session per accepted connection, and the
//! certificates loaded again on `refresh_certs` for new connections while
//! the ones already open keep theirs.
//!
//! Everything runs inside the one reactor: a [`TlsStream`] is a
//! non-blocking socket that reads and writes plaintext, doing the
//! handshake as part of the first reads (memcached does the same:
//! `SSL_accept` once at accept time, then `SSL_read` finishes it). When
//! OpenSSL needs the socket the other way round (a read that must write a
//! handshake record, a write that must read), the stream says so and the
//! reactor retries it on the other readiness.
//!
//! The replication link may run over TLS too (`-o repl_tls`, ours, not
//! memcached's): `link.rs` builds its two contexts, and its sessions are
//! the same [`TlsStream`].
//!
//! Without the `tls` cargo feature this room holds only uninhabited
//! types: `-Z` and `-o ssl_*` are refused by `options` as memcached built
//! without TLS refuses them, so no server or stream is ever made.

#[cfg(feature = "tls")]
mod context;
#[cfg(feature = "tls")]
mod link;
#[cfg(feature = "tls")]
mod stream;

#[cfg(feature = "tls")]
pub use context::Server;
#[cfg(feature = "tls")]
pub use link::Link;
#[cfg(feature = "tls")]
pub(crate) use stream::{Refused, TlsStream};

#[cfg(not(feature = "tls"))]
mod absent;
#[cfg(not(feature = "tls"))]
pub use absent::{Link, Server};
#[cfg(not(feature = "tls"))]
pub(crate) use absent::{Refused, TlsStream};

use crate::settings::Settings;

/// What TLS start-up made: the clients' context under `-Z`, the
/// replication link's under `-o repl_tls`.
pub struct Contexts {
    pub server: Option<Server>,
    pub link: Option<Link>,
}

/// Builds the contexts the settings ask for, reading the certificates
/// (memcached does it before `-u` drops root). An error is the text to
/// print before exiting with `EX_USAGE`.
pub fn start(settings: &Settings) -> Result<Contexts, String> {
    let server = Server::start(&settings.tls)?;
    let link = match settings.repl.tls {
        true => Some(Link::start(&settings.tls)?),
        false => None,
    };
    Ok(Contexts { server, link })
}
