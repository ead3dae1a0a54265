//! The server's TLS context: built from the settings as memcached's
//! `ssl_init` builds it, with its error messages, and built again by
//! `refresh_certs`.

use super::stream::{Refused, TlsStream};
use crate::settings::TlsSettings;
use openssl::error::ErrorStack;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode, SslOptions,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::x509::X509Name;
use std::net::TcpStream;

/// memcached's session id context (`SESSION_ID_CONTEXT`).
const SESSION_ID_CONTEXT: &[u8] = b"memcached";
/// OpenSSL 3's `SSL_OP_ENABLE_KTLS` (the crate has no name for it).
const SSL_OP_ENABLE_KTLS: u64 = 1 << 3;

/// The TLS side of the server: the context new connections are made from.
pub struct Server {
    context: SslContext,
    /// `ssl_wbuf_size`: the most plaintext given to OpenSSL at once.
    chunk: usize,
}

/// A failed certificate load: memcached's one-line message for the client
/// or the terminal (ending in CRLF, as memcached builds it), and the rest
/// of OpenSSL's error queue, which it prints to stderr.
pub(super) struct LoadError {
    message: String,
    queue: String,
}

impl Server {
    /// memcached's `ssl_init`: `None` without `-Z`; an error is the text
    /// memcached prints before it exits with `EX_USAGE`.
    pub fn start(settings: &TlsSettings) -> Result<Option<Server>, String> {
        if !settings.enabled {
            return Ok(None);
        }
        match build(settings) {
            Ok(context) => Ok(Some(Server {
                context,
                chunk: settings.wbuf_size as usize,
            })),
            Err(e) => Err(e.at_start(settings)),
        }
    }

    /// `refresh_certs`: the certificates, key and CA file read again; new
    /// connections get them, open ones keep what they have. On failure the
    /// old context stays, OpenSSL's queue goes to stderr and the error is
    /// the client's reply.
    pub(crate) fn refresh(&mut self, settings: &TlsSettings) -> Result<(), String> {
        match build(settings) {
            Ok(context) => {
                self.context = context;
                Ok(())
            }
            Err(Failure::Certificates(e)) => {
                eprint!("{}", e.queue);
                Err(e.message)
            }
            // The cipher list was accepted at start and has not changed.
            Err(Failure::Ciphers) => Err("Error setting the provided cipher(s)\r\n".into()),
        }
    }

    /// A TLS session on an accepted socket, its handshake started as
    /// memcached starts it (`SSL_accept` once); the socket is closed if
    /// that fails.
    pub(crate) fn accept(&self, tcp: TcpStream) -> Result<TlsStream, Refused> {
        let ssl = Ssl::new(&self.context).map_err(|_| Refused::Session)?;
        TlsStream::accept(ssl, tcp, self.chunk)
    }
}

pub(super) enum Failure {
    Certificates(LoadError),
    Ciphers,
}

impl Failure {
    /// The text memcached prints before it exits with `EX_USAGE`.
    pub(super) fn at_start(self, settings: &TlsSettings) -> String {
        match self {
            Failure::Certificates(e) => e.queue + &e.message,
            Failure::Ciphers => format!(
                "Error setting the provided cipher(s): {}\n",
                settings.ciphers.as_deref().unwrap_or("")
            ),
        }
    }
}

/// A context as memcached's `ssl_init` makes it, in its order.
fn build(s: &TlsSettings) -> Result<SslContext, Failure> {
    let mut b = configured(SslMethod::tls_server(), s)?;
    b.set_verify(SslVerifyMode::from_bits_truncate(s.verify_mode));
    // One recv takes all the socket has, not a record's header and then
    // its body, and tells the stream when the socket is empty (see
    // `stream.rs`). Clients' sessions only: their handshake ends inside a
    // read, which goes on to hand out whatever came with it, whereas the
    // replication link's connecting side may finish its handshake in a
    // write, which would leave bytes read ahead with no event to come.
    // Not with kernel TLS either: OpenSSL does not give receiving to the
    // kernel while it holds bytes read ahead, and a kernel read returns
    // one record whatever is asked, so a short one says nothing.
    if !s.kernel_tls {
        b.set_read_ahead(true);
    }
    if s.session_cache {
        b.set_new_session_callback(|_, _| crate::stats::count_new_tls_session());
        b.set_session_cache_mode(SslSessionCacheMode::SERVER);
        let _ = b.set_session_id_context(SESSION_ID_CONTEXT);
    } else {
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
    }
    Ok(b.build())
}

/// What every context of this server shares, clients' and the
/// replication link's: the protocol floor, the certificate, key and CA
/// file, the ciphers, no renegotiation, kernel TLS when asked for.
pub(super) fn configured(method: SslMethod, s: &TlsSettings) -> Result<SslContextBuilder, Failure> {
    let mut b = SslContextBuilder::new(method)
        .map_err(|e| Failure::Certificates(load_error("Error creating the context: ", &e)))?;
    let _ = b.set_min_proto_version(version(s.min_version));
    load_certificates(&mut b, s).map_err(Failure::Certificates)?;
    if let Some(ciphers) = &s.ciphers
        && b.set_cipher_list(ciphers).is_err()
    {
        return Err(Failure::Ciphers);
    }
    if s.kernel_tls {
        b.set_options(SslOptions::from_bits_retain(SSL_OP_ENABLE_KTLS as _));
    }
    b.set_options(SslOptions::NO_RENEGOTIATION);
    // Idle connections give their TLS buffers back; partial writes may
    // resume from a buffer that has moved (the reply buffer grows).
    b.set_mode(
        SslMode::RELEASE_BUFFERS
            | SslMode::ENABLE_PARTIAL_WRITE
            | SslMode::ACCEPT_MOVING_WRITE_BUFFER,
    );
    Ok(b)
}

/// memcached's `load_server_certificates`: chain, key, their match, the
/// CA file; the first failure's message names the file and OpenSSL's
/// first error.
fn load_certificates(b: &mut SslContextBuilder, s: &TlsSettings) -> Result<(), LoadError> {
    let chain = s.chain_cert.as_deref();
    let Some(chain_path) = chain else {
        // memcached hands OpenSSL a NULL path, which fopen refuses.
        return Err(LoadError {
            message: "Error loading the certificate chain: (null) : \
                      error:8000000E:system library::Bad address\r\n"
                .into(),
            queue: String::new(),
        });
    };
    b.set_certificate_chain_file(chain_path).map_err(|e| {
        load_error(
            &format!("Error loading the certificate chain: {chain_path} : "),
            &e,
        )
    })?;
    let key = s.key.as_deref().unwrap_or("(null)");
    b.set_private_key_file(key, SslFiletype::from_raw(s.keyformat))
        .map_err(|e| load_error(&format!("Error loading the key: {key} : "), &e))?;
    b.check_private_key()
        .map_err(|e| load_error("Error validating the certificate: ", &e))?;
    if let Some(ca) = &s.ca_cert {
        b.set_ca_file(ca)
            .map_err(|e| load_error(&format!("Error loading the CA certificate: {ca} : "), &e))?;
        if let Ok(names) = X509Name::load_client_ca_file(ca) {
            b.set_client_ca_list(names);
        }
    }
    Ok(())
}

/// `what` followed by OpenSSL's first error as `ERR_error_string_n` words
/// it; the rest of the queue as `ERR_print_errors_fp` prints it.
fn load_error(what: &str, stack: &ErrorStack) -> LoadError {
    let errors = stack.errors();
    let first = errors
        .first()
        .map(|e| {
            format!(
                "error:{:08X}:{}::{}",
                e.code(),
                e.library().unwrap_or(""),
                reason(e)
            )
        })
        .unwrap_or_default();
    let tid = crate::sys::thread_id_hex();
    let queue = errors
        .iter()
        .skip(1)
        .map(|e| {
            format!(
                "{tid}:error:{:08X}:{}:{}:{}:{}:{}:{}\n",
                e.code(),
                e.library().unwrap_or(""),
                e.function().unwrap_or(""),
                reason(e),
                e.file(),
                e.line(),
                e.data().unwrap_or("")
            )
        })
        .collect();
    LoadError {
        message: format!("{what}{first}\r\n"),
        queue,
    }
}

/// OpenSSL's reason text; for the system library, the C library's text
/// for the errno the reason code is.
fn reason(e: &openssl::error::Error) -> String {
    match e.reason() {
        Some(text) => text.to_string(),
        None if e.library_code() == ERR_LIB_SYS => {
            crate::sys::strerror(&std::io::Error::from_raw_os_error(e.reason_code()))
        }
        None => String::new(),
    }
}

/// OpenSSL's `ERR_LIB_SYS`.
const ERR_LIB_SYS: i32 = 2;

fn version(v: i32) -> Option<SslVersion> {
    Some(match v - crate::settings::TLS1_VERSION {
        0 => SslVersion::TLS1,
        1 => SslVersion::TLS1_1,
        2 => SslVersion::TLS1_2,
        _ => SslVersion::TLS1_3,
    })
}
