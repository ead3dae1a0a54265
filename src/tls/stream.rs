//! One client's TLS session over its non-blocking socket.
//!
//! Reads and writes take and give plaintext. A read fills the buffer
//! from as many records as are there, so a short read means the socket
//! is drained, as with a plain socket (the reactor is edge-triggered and
//! relies on that; OpenSSL hands out one record per call). The handshake
//! happens inside the first reads; renegotiation is refused by the
//! context (`SSL_OP_NO_RENEGOTIATION`).

use openssl::ssl::{ErrorCode, ShutdownResult, Ssl, SslStream};
use std::io;
use std::net::TcpStream;

pub(crate) struct TlsStream {
    inner: SslStream<TcpStream>,
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

impl TlsStream {
    /// memcached's `SSL_accept` right after `accept`: usually the client's
    /// hello is not there yet and the handshake goes on in the reads. A
    /// socket that already failed it (garbage, a closed peer) is closed.
    pub(super) fn accept(ssl: Ssl, tcp: TcpStream) -> Result<TlsStream, Refused> {
        let mut inner = SslStream::new(ssl, tcp).map_err(|_| Refused::Session)?;
        match inner.accept() {
            Ok(()) => {}
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
            Err(e) => return Err(Refused::Handshake(e.code().as_raw())),
        }
        Ok(TlsStream {
            inner,
            read_wants_write: false,
            write_wants_read: false,
            end: None,
            handshake_failed: false,
        })
    }

    /// Plaintext into `buf`: as much as the socket has, up to its size.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(end) = self.end {
            return end.result();
        }
        let mut filled = 0;
        self.read_wants_write = false;
        while filled < buf.len() {
            match self.inner.ssl_read(&mut buf[filled..]) {
                Ok(n) => filled += n,
                Err(e) => {
                    let outcome = match e.code() {
                        ErrorCode::WANT_READ => Err(io::ErrorKind::WouldBlock.into()),
                        ErrorCode::WANT_WRITE => {
                            self.read_wants_write = true;
                            Err(io::ErrorKind::WouldBlock.into())
                        }
                        ErrorCode::ZERO_RETURN => self.ended(End::Closed),
                        ErrorCode::SYSCALL if e.io_error().is_none() => self.ended(End::Closed),
                        _ => self.ended(End::Broken),
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
        if matches!(end, End::Broken) && !self.inner.ssl().is_init_finished() {
            self.handshake_failed = true;
        }
        self.end = Some(end);
        end.result()
    }

    /// Plaintext out; as much as the socket takes.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_wants_read = false;
        match self.inner.ssl_write(buf) {
            Ok(n) => Ok(n),
            Err(e) => match e.code() {
                ErrorCode::WANT_WRITE => Err(io::ErrorKind::WouldBlock.into()),
                ErrorCode::WANT_READ => {
                    self.write_wants_read = true;
                    Err(io::ErrorKind::WouldBlock.into())
                }
                _ => {
                    if !self.inner.ssl().is_init_finished() {
                        self.handshake_failed = true;
                    }
                    Err(io::ErrorKind::BrokenPipe.into())
                }
            },
        }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        self.inner.get_ref()
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
        if self.inner.ssl().is_init_finished() && !matches!(self.end, Some(End::Broken)) {
            let _: Result<ShutdownResult, _> = self.inner.shutdown();
        }
    }
}

impl End {
    fn result(self) -> io::Result<usize> {
        match self {
            End::Closed => Ok(0),
            End::Broken => Err(io::ErrorKind::ConnectionAborted.into()),
        }
    }
}
