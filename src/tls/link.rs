//! TLS for the replication link (`-o repl_tls`, ours): the pair's two
//! nodes are each other's client and server, so there are two contexts,
//! one for the link a node accepts on its replication port and one for
//! the link it opens to its peer. Both show this node's `ssl_chain_cert`
//! and `ssl_key` and check the other side's certificate against
//! `ssl_ca_cert`, whatever `ssl_verify_mode` says for memcached's
//! clients: a link that takes writes from the other side must know who
//! is there. With an expected name (`repl_tls_name`, else the host of
//! `-x`) the certificate must also carry it, in either direction.
//!
//! The handshake is non-blocking like the rest of the link: it runs
//! inside the link's first reads and writes, and fails there with
//! OpenSSL's reason, which the replication log prints.

use super::context::configured;
use super::stream::{Refused, TlsStream};
use crate::settings::TlsSettings;
use openssl::ssl::{Ssl, SslContext, SslMethod, SslSessionCacheMode, SslVerifyMode};
use std::net::{IpAddr, TcpStream};

/// The replication link's TLS contexts, built once at start (before `-u`
/// drops root, as the clients' are).
pub struct Link {
    /// For a peer that connects to our replication port.
    accepting: SslContext,
    /// For our connection to the peer's.
    connecting: SslContext,
    chunk: usize,
}

impl Link {
    /// The contexts for `-o repl_tls`; an error is the text printed before
    /// exiting with `EX_USAGE` (memcached's certificate messages, prefixed
    /// with what they were for).
    pub fn start(settings: &TlsSettings) -> Result<Link, String> {
        let build = |method| {
            let mut b = configured(method, settings)
                .map_err(|e| format!("repl_tls: {}", e.at_start(settings)))?;
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
            b.set_session_cache_mode(SslSessionCacheMode::OFF);
            Ok::<_, String>(b.build())
        };
        Ok(Link {
            accepting: build(SslMethod::tls_server())?,
            connecting: build(SslMethod::tls_client())?,
            chunk: settings.wbuf_size as usize,
        })
    }

    /// A session over a socket the peer connected to us on.
    pub(crate) fn accept(&self, tcp: TcpStream, name: Option<&str>) -> Result<TlsStream, Refused> {
        let mut ssl = session(&self.accepting, name)?;
        ssl.set_accept_state();
        TlsStream::begin(ssl, tcp, self.chunk)
    }

    /// A session over our (connected) socket to the peer.
    pub(crate) fn connect(&self, tcp: TcpStream, name: Option<&str>) -> Result<TlsStream, Refused> {
        let mut ssl = session(&self.connecting, name)?;
        if let Some(host) = name.filter(|n| n.parse::<IpAddr>().is_err()) {
            // SNI, for a peer behind something that routes on it.
            let _ = ssl.set_hostname(host);
        }
        ssl.set_connect_state();
        TlsStream::begin(ssl, tcp, self.chunk)
    }
}

/// A session from `context` whose peer certificate must name `name`
/// (a host name, or an IP address as IP addresses are matched).
fn session(context: &SslContext, name: Option<&str>) -> Result<Ssl, Refused> {
    let mut ssl = Ssl::new(context).map_err(|_| Refused::Session)?;
    if let Some(name) = name {
        let param = ssl.param_mut();
        let set = match name.parse::<IpAddr>() {
            Ok(ip) => param.set_ip(ip),
            Err(_) => param.set_host(name),
        };
        set.map_err(|_| Refused::Session)?;
    }
    Ok(ssl)
}
