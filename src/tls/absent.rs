//! A build without TLS: the types exist so the reactor compiles the same
//! way, but none can be made.

use crate::settings::TlsSettings;
use std::io;
use std::net::TcpStream;

/// No TLS in this build: never made.
pub enum Server {}

impl Server {
    /// `-Z` is refused by the options in this build, so there is nothing
    /// to start.
    pub fn start(_: &TlsSettings) -> Result<Option<Server>, String> {
        Ok(None)
    }

    pub(crate) fn accept(&self, _: TcpStream) -> Result<TlsStream, Refused> {
        match *self {}
    }
}

/// No replication over TLS in this build (`-o repl_tls` is refused).
pub enum Link {}

impl Link {
    pub fn start(_: &TlsSettings) -> Result<Link, String> {
        Err("This server is not built with TLS support (-o repl_tls).\n".into())
    }

    pub(crate) fn accept(&self, _: TcpStream, _: Option<&str>) -> Result<TlsStream, Refused> {
        match *self {}
    }

    pub(crate) fn connect(&self, _: TcpStream, _: Option<&str>) -> Result<TlsStream, Refused> {
        match *self {}
    }
}

/// Why a socket got no session (never, in this build: the reactor's
/// match on it is all that uses it).
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Session,
    Handshake(i32),
}

/// Never made in this build.
pub(crate) enum TlsStream {}

impl TlsStream {
    pub(crate) fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
    pub(crate) fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }
    pub(crate) fn drain(&mut self) -> io::Result<bool> {
        match *self {}
    }
    pub(crate) fn holds_output(&self) -> bool {
        match *self {}
    }
    pub(crate) fn holds_input(&self) -> bool {
        match *self {}
    }
    pub(crate) fn tcp(&self) -> &TcpStream {
        match *self {}
    }
    pub(crate) fn ends_after_data(&self) -> bool {
        match *self {}
    }
    pub(crate) fn read_wants_write(&self) -> bool {
        match *self {}
    }
    pub(crate) fn write_wants_read(&self) -> bool {
        match *self {}
    }
    pub(crate) fn failed_in_handshake(&self) -> bool {
        match *self {}
    }
    pub(crate) fn close_notify(&mut self) {
        match *self {}
    }
    pub(crate) fn failure(&self) -> Option<&str> {
        match *self {}
    }
}
