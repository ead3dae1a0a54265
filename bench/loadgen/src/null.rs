//! The null server: speaks just enough of the text protocol to answer the
//! load generator, with canned replies and no cache. `get`/`gets` answer
//! every key with a canned `VALUE` of `value_size` bytes (or, with
//! `miss`, only `END`); storage commands skip their data block and answer
//! `STORED`. Same shape as the real servers (one thread, edge-triggered
//! epoll, one read and one write per batch of requests), so its throughput
//! marks what the loopback and the load generator allow.

use crate::sys::{self, Epoll};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

struct Conn {
    stream: TcpStream,
    inb: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Data-block bytes (with their CRLF) still to skip.
    swallow: usize,
    writable: bool,
}

pub fn serve(listen: &str, value_size: usize, miss: bool, lifetime: f64) -> io::Result<()> {
    sys::raise_nofile();
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let epoll = Epoll::new()?;
    const LISTENER: u64 = u64::MAX;
    epoll.add(listener.as_raw_fd(), sys::IN, LISTENER)?;
    // The VALUE line's tail, the data block and its CRLF, canned.
    let mut value = format!(" 0 {value_size}\r\n").into_bytes();
    value.resize(value.len() + value_size, b'v');
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut events = sys::empty_events(256);
    let end = Instant::now() + Duration::from_secs_f64(lifetime);
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < end {
        let n = epoll.wait(&mut events, 1000)?;
        for ev in &events[..n] {
            if ev.u64 == LISTENER {
                while let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true)?;
                    s.set_nodelay(true)?;
                    let fd = s.as_raw_fd() as usize;
                    epoll.add(fd as i32, sys::IN | sys::OUT | sys::ET, fd as u64)?;
                    if conns.len() <= fd {
                        conns.resize_with(fd + 1, || None);
                    }
                    conns[fd] = Some(Conn {
                        stream: s,
                        inb: Vec::new(),
                        out: Vec::new(),
                        out_pos: 0,
                        swallow: 0,
                        writable: true,
                    });
                }
                continue;
            }
            let slot = &mut conns[ev.u64 as usize];
            let Some(c) = slot.as_mut() else { continue };
            if ev.events & sys::OUT != 0 {
                c.writable = true;
            }
            let readable = ev.events & (sys::IN | sys::ERR) != 0;
            if !c.turn(readable, &mut buf, &value, miss) {
                *slot = None;
            }
        }
    }
    Ok(())
}

impl Conn {
    /// Reads (if epoll said so: an EPOLLOUT-only edge must not cost a
    /// read), answers, writes; false when the connection is done.
    fn turn(&mut self, readable: bool, buf: &mut [u8], value: &[u8], miss: bool) -> bool {
        let mut open = true;
        if readable {
            loop {
                match self.stream.read(buf) {
                    Ok(0) => {
                        open = false;
                        break;
                    }
                    Ok(n) => {
                        self.inb.extend_from_slice(&buf[..n]);
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        }
        let used = self.answer(value, miss);
        self.inb.drain(..used);
        while self.out_pos < self.out.len() && self.writable {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        open
    }

    /// `value` is what follows the key in a hit, up to the data block's
    /// CRLF (excluded).
    fn answer(&mut self, value: &[u8], miss: bool) -> usize {
        let mut pos = 0;
        let data = &self.inb[..];
        loop {
            if self.swallow > 0 {
                let n = self.swallow.min(data.len() - pos);
                self.swallow -= n;
                pos += n;
                if self.swallow > 0 {
                    return pos;
                }
            }
            let Some(nl) = data[pos..].iter().position(|&b| b == b'\n') else {
                return pos;
            };
            let mut line = &data[pos..pos + nl];
            pos += nl + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
            match words.next().unwrap_or(b"") {
                b"get" | b"gets" => {
                    if !miss {
                        for key in words {
                            self.out.extend_from_slice(b"VALUE ");
                            self.out.extend_from_slice(key);
                            self.out.extend_from_slice(value);
                            self.out.extend_from_slice(b"\r\n");
                        }
                    }
                    self.out.extend_from_slice(b"END\r\n");
                }
                b"set" | b"add" | b"replace" | b"append" | b"prepend" => {
                    let f: Vec<&[u8]> = words.collect();
                    let len = f
                        .get(3)
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.parse::<usize>().ok());
                    match len {
                        Some(n) => {
                            self.swallow = n + 2;
                            if f.get(4) != Some(&&b"noreply"[..]) {
                                self.out.extend_from_slice(b"STORED\r\n");
                            }
                        }
                        None => self
                            .out
                            .extend_from_slice(b"CLIENT_ERROR bad command line format\r\n"),
                    }
                }
                b"version" => self.out.extend_from_slice(b"VERSION 0-null\r\n"),
                _ => self.out.extend_from_slice(b"ERROR\r\n"),
            }
        }
    }
}
