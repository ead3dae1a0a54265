//! One client's TLS session over its non-blocking socket.
//!
//! The session reads and writes the socket itself (OpenSSL's socket BIO,
//! set with `SSL_set_fd` as memcached does: `crate::sys::ssl`), so that
//! with `ssl_kernel_tls` OpenSSL can hand the record layer to the kernel
//! where the kernel offers it.
//!
//! Reads and writes take and give plaintext. A read fills the buffer
//! from as many records as are there, so a short read means the socket
//! is drained, as with a plain socket (the reactor is edge-triggered and
//! relies on that; OpenSSL hands out one record per call). With read
//! ahead (client sessions without kernel TLS) OpenSSL asks the socket for
//! all it has, and a read stops as soon as the socket came back short (in
//! that read) and OpenSSL holds none of its bytes: one `recv` per batch
//! of records, where reading on until `WANT_READ` cost a record header's,
//! a body's and an empty one's. The handshake happens inside the first reads;
//! renegotiation is refused by the context (`SSL_OP_NO_RENEGOTIATION`).

use crate::sys::ssl::{self as ffi, Session};
use openssl::error::ErrorStack;
use openssl::ssl::{ErrorCode, Ssl, SslRef};
use openssl::x509::X509VerifyResult;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

pub(crate) struct TlsStream {
    /// Declared before the socket: the session is freed before the
    /// descriptor it reads closes.
    session: Session,
    tcp: TcpStream,
    /// The last read stopped because OpenSSL must write first (a
    /// handshake record into a full socket): retry it when writable.
    read_wants_write: bool,
    /// The last write stopped because OpenSSL must read first.
    write_wants_read: bool,
    /// What a read found after the data it returned: the next read
    /// reports it.
    end: Option<End>,
    /// The session failed before its handshake finished.
    handshake_failed: bool,
    /// Plaintext OpenSSL was given and has not finished sending: after
    /// `WANT_WRITE` it must be offered again, the same bytes, which the
    /// caller's buffer need not still hold (memcached's `ssl_wbuf`).
    unsent: Vec<u8>,
    /// The largest plaintext given to OpenSSL at once (`ssl_wbuf_size`).
    chunk: usize,
    /// Why the session broke, in OpenSSL's words (for the replication
    /// link's log line; made only when it breaks).
    failure: Option<String>,
}

/// Why an accepted socket got no session (it is closed either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// OpenSSL could not make one (memcached: "Failed to created the SSL
    /// object").
    Session,
    /// The handshake failed at once (OpenSSL's `SSL_get_error` code):
    /// counted in `ssl_handshake_errors`.
    Handshake(i32),
}

#[derive(Clone, Copy)]
enum End {
    /// close_notify or end of file.
    Closed,
    Broken,
}

/// A call that did not complete: its code, with what OpenSSL and the
/// system said (taken at once, before anything else can change them).
struct Failed {
    code: ErrorCode,
    stack: Option<ErrorStack>,
    os: Option<io::Error>,
}

impl Failed {
    fn take(code: ffi::Code) -> Failed {
        let code = ErrorCode::from_raw(code);
        let os = (code == ErrorCode::SYSCALL)
            .then(io::Error::last_os_error)
            .filter(|e| e.raw_os_error() != Some(0));
        // Drained on every failure that may have queued errors, so the
        // next call's SSL_get_error sees only its own. `WANT_READ` and
        // `WANT_WRITE` leave none: SSL_get_error says them only when the
        // queue is empty.
        let would_block = matches!(code, ErrorCode::WANT_READ | ErrorCode::WANT_WRITE);
        let stack = (!would_block).then(ErrorStack::get);
        Failed { code, stack, os }
    }

    fn would_block(&self) -> bool {
        matches!(self.code, ErrorCode::WANT_READ | ErrorCode::WANT_WRITE)
    }
}

impl TlsStream {
    /// memcached's `SSL_accept` right after `accept`: usually the client's
    /// hello is not there yet and the handshake goes on in the reads. A
    /// socket that already failed it (garbage, a closed peer) is closed.
    pub(super) fn accept(ssl: Ssl, tcp: TcpStream, chunk: usize) -> Result<TlsStream, Refused> {
        let mut stream = TlsStream::begin(ssl, tcp, chunk)?;
        stream.session.ssl_mut().set_accept_state();
        match stream.session.handshake() {
            Ok(()) => {}
            Err(code) => {
                let failed = Failed::take(code);
                if !failed.would_block() {
                    return Err(Refused::Handshake(failed.code.as_raw()));
                }
            }
        }
        Ok(stream)
    }

    /// A session on `tcp` whose handshake (in the role `ssl` was or will
    /// be set to) happens entirely inside its first reads and writes, so
    /// that a failure, the very first one included, is seen there with
    /// its reason.
    pub(super) fn begin(ssl: Ssl, tcp: TcpStream, chunk: usize) -> Result<TlsStream, Refused> {
        let Some(session) = Session::on_socket(ssl, tcp.as_raw_fd()) else {
            drop(ErrorStack::get());
            return Err(Refused::Session);
        };
        Ok(TlsStream {
            session,
            tcp,
            read_wants_write: false,
            write_wants_read: false,
            end: None,
            handshake_failed: false,
            unsent: Vec::new(),
            chunk: chunk.max(1),
            failure: None,
        })
    }

    /// Why the session broke, if it did: OpenSSL's reason, and the
    /// certificate check's when that is what failed.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Plaintext into `buf`: as much as the socket has, up to its size.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(end) = self.end {
            return end.result();
        }
        let mut filled = 0;
        self.read_wants_write = false;
        // Only a short read from the socket within this call says it is
        // empty: one from an earlier call may predate data whose event the
        // reactor has handled already (a read that filled its buffer and
        // left records inside OpenSSL, then more came).
        self.session.forget_last_read();
        while filled < buf.len() {
            match self.session.read(&mut buf[filled..]) {
                Ok(n) => {
                    filled += n;
                    if self.session.drained() {
                        break;
                    }
                }
                Err(code) => {
                    let e = Failed::take(code);
                    let outcome = match e.code {
                        ErrorCode::WANT_READ => Err(io::ErrorKind::WouldBlock.into()),
                        ErrorCode::WANT_WRITE => {
                            self.read_wants_write = true;
                            Err(io::ErrorKind::WouldBlock.into())
                        }
                        ErrorCode::ZERO_RETURN => self.ended(End::Closed),
                        ErrorCode::SYSCALL if e.os.is_none() => self.ended(End::Closed),
                        ErrorCode::SSL if unexpected_eof(&e) => self.ended(End::Closed),
                        _ => {
                            self.failure = Some(describe(&e, self.session.ssl()));
                            self.ended(End::Broken)
                        }
                    };
                    if filled == 0 {
                        return outcome;
                    }
                    break;
                }
            }
        }
        Ok(filled)
    }

    /// A handshake that breaks (not one whose peer just went away, as a
    /// port probe does) counts as an `ssl_handshake_errors`; memcached
    /// counts only those that break in its first `SSL_accept`, which a
    /// client sending garbage right after connecting may or may not reach.
    fn ended(&mut self, end: End) -> io::Result<usize> {
        if matches!(end, End::Broken) && !self.session.ssl().is_init_finished() {
            self.handshake_failed = true;
        }
        self.end = Some(end);
        end.result()
    }

    /// Plaintext out, at most `ssl_wbuf_size` bytes of it: what OpenSSL
    /// took, or copied to be offered again when the socket takes it (so
    /// the caller may change or drop its buffer after any call).
    /// `WouldBlock` only when nothing new could be taken.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.drain()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let chunk = &buf[..buf.len().min(self.chunk)];
        match self.ssl_write(chunk)? {
            Some(n) => Ok(n),
            None => {
                self.unsent.extend_from_slice(chunk);
                Ok(chunk.len())
            }
        }
    }

    /// Offers OpenSSL what it is waiting to send; true once all is sent.
    pub(crate) fn drain(&mut self) -> io::Result<bool> {
        while !self.unsent.is_empty() {
            let unsent = std::mem::take(&mut self.unsent);
            let written = self.ssl_write(&unsent);
            self.unsent = unsent;
            match written? {
                Some(n) => drop(self.unsent.drain(..n)),
                None => return Ok(false),
            }
        }
        self.unsent = Vec::new();
        Ok(true)
    }

    /// Bytes OpenSSL still has to be offered.
    pub(crate) fn holds_output(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Input OpenSSL has read from the socket and not handed out: after
    /// a handshake that finished outside a read (the one `accept` starts
    /// can take the client's Finished and, read ahead, the request right
    /// behind it), only a read finds it; the socket will not signal it.
    pub(crate) fn holds_input(&self) -> bool {
        self.session.has_pending()
    }

    /// One `SSL_write`: `None` when it must be retried with the same bytes.
    fn ssl_write(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        self.write_wants_read = false;
        match self.session.write(buf) {
            Ok(n) => Ok(Some(n)),
            Err(code) => {
                let e = Failed::take(code);
                match e.code {
                    ErrorCode::WANT_WRITE => Ok(None),
                    ErrorCode::WANT_READ => {
                        self.write_wants_read = true;
                        Ok(None)
                    }
                    _ => {
                        if !self.session.ssl().is_init_finished() {
                            self.handshake_failed = true;
                        }
                        self.failure = Some(describe(&e, self.session.ssl()));
                        Err(io::ErrorKind::BrokenPipe.into())
                    }
                }
            }
        }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The last read returned data and found the session's end after it:
    /// the next read says so at once (the socket may not signal again).
    pub(crate) fn ends_after_data(&self) -> bool {
        self.end.is_some()
    }

    pub(crate) fn read_wants_write(&self) -> bool {
        self.read_wants_write
    }

    pub(crate) fn write_wants_read(&self) -> bool {
        self.write_wants_read
    }

    /// For `ssl_handshake_errors`.
    pub(crate) fn failed_in_handshake(&self) -> bool {
        self.handshake_failed
    }

    /// memcached's `SSL_shutdown` before closing: one try at sending
    /// close_notify, not waiting for the peer's.
    pub(crate) fn close_notify(&mut self) {
        if self.session.ssl().is_init_finished()
            && !matches!(self.end, Some(End::Broken))
            && matches!(self.drain(), Ok(true))
        {
            self.session.shutdown();
        }
    }
}

/// A broken session in a few words: OpenSSL's first reason
/// ("certificate verify failed", "wrong version number", "tlsv1 alert
/// unknown ca"), with the certificate check's own ("hostname mismatch")
/// when that failed.
fn describe(e: &Failed, ssl: &SslRef) -> String {
    let first = e.stack.as_ref().and_then(|s| s.errors().first());
    let mut text = match (first, &e.os) {
        (Some(first), _) => first.reason().unwrap_or("unknown TLS error").to_string(),
        (None, Some(os)) => os.to_string(),
        (None, None) => format!("TLS error {}", e.code.as_raw()),
    };
    let verified = ssl.verify_result();
    if verified != X509VerifyResult::OK {
        text = format!("{text} ({})", verified.error_string());
    }
    text
}

/// OpenSSL 3 reports a peer that closed without close_notify as an SSL
/// error (`SSL_R_UNEXPECTED_EOF_WHILE_READING`): a peer gone, not one
/// that broke the protocol.
fn unexpected_eof(failed: &Failed) -> bool {
    const SSL_R_UNEXPECTED_EOF_WHILE_READING: i32 = 294;
    failed.stack.as_ref().is_some_and(|stack| {
        stack
            .errors()
            .iter()
            .any(|e| e.reason_code() == SSL_R_UNEXPECTED_EOF_WHILE_READING)
    })
}

impl End {
    fn result(self) -> io::Result<usize> {
        match self {
            End::Closed => Ok(0),
            End::Broken => Err(io::ErrorKind::ConnectionAborted.into()),
        }
    }
}
