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
//! Without the `tls` cargo feature this room holds only uninhabited
//! types: `-Z` and `-o ssl_*` are refused by `options` as memcached built
//! without TLS refuses them, so no server or stream is ever made.

#[cfg(feature = "tls")]
mod context;
#[cfg(feature = "tls")]
mod stream;

#[cfg(feature = "tls")]
pub use context::Server;
#[cfg(feature = "tls")]
pub(crate) use stream::{Refused, TlsStream};

#[cfg(not(feature = "tls"))]
mod absent;
#[cfg(not(feature = "tls"))]
pub use absent::Server;
#[cfg(not(feature = "tls"))]
pub(crate) use absent::{Refused, TlsStream};
