//! memcached's UDP framing (`-U`).
//!
//! Every datagram starts with an 8-byte header: request id, sequence
//! number, total datagrams in the message, and two reserved bytes, each a
//! 16-bit big-endian number. A request must fit in one datagram (memcached
//! drops the others unanswered); its commands run like a TCP connection's,
//! and nothing carries over to the next datagram. Each *response* is sent
//! as its own message: its own sequence numbers from 0, its own total,
//! split every 1392 bytes, with the request's id echoed. memcached makes a
//! response per command and, in a multi-key get, one per key (the `END`
//! rides on the last key's response if that key was found).

use super::conn::{BatchEnd, Conn, Mark};
use super::{Slot, StopReason};
use crate::proto::binary::REQUEST_MAGIC as BINARY_REQUEST_MAGIC;
use crate::proto::request::Ctx;
use crate::sys;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;

pub(super) const HEADER_SIZE: usize = 8;
/// memcached's UDP_MAX_PAYLOAD_SIZE: header included.
pub(super) const MAX_PAYLOAD_SIZE: usize = 1400;
/// Reply bytes per datagram.
pub(super) const DATA_SIZE: usize = MAX_PAYLOAD_SIZE - HEADER_SIZE;
/// memcached's UDP read buffer: longer datagrams are cut to this.
pub(super) const READ_BUFFER_SIZE: usize = 65536;
/// Datagrams taken from one socket per loop turn, so a flood on one port
/// cannot starve the others (the socket stays readable; epoll reports it
/// again).
pub(super) const DATAGRAMS_PER_TURN: usize = 64;

/// The request id of a datagram memcached would serve, or None: it must
/// carry more than the header and say it is the only datagram of its
/// request.
pub(super) fn request_id(datagram: &[u8]) -> Option<u16> {
    if datagram.len() <= HEADER_SIZE {
        return None;
    }
    let total = u16::from_be_bytes([datagram[4], datagram[5]]);
    (total == 1).then(|| u16::from_be_bytes([datagram[0], datagram[1]]))
}

/// The header of datagram `seq` of `total` for request `id`.
pub(super) fn header(id: u16, seq: u16, total: u16) -> [u8; HEADER_SIZE] {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    let [e, f] = total.to_be_bytes();
    [a, b, c, d, e, f, 0, 0]
}

/// Sends one response as a message of as many datagrams as it needs.
/// Returns bytes sent. A datagram the kernel will not take now is lost,
/// as UDP may lose any datagram.
pub(super) fn send_response(fd: RawFd, id: u16, to: &SocketAddr, response: &[u8]) -> u64 {
    let total = response.len().div_ceil(DATA_SIZE).min(u16::MAX as usize) as u16;
    let mut sent = 0;
    for (seq, chunk) in response.chunks(DATA_SIZE).take(total as usize).enumerate() {
        let head = header(id, seq as u16, total);
        if let Ok(n) = sys::send_datagram(fd, &head, chunk, to) {
            sent += n as u64;
        }
    }
    sent
}

/// One of memcached's response objects, as the UDP path sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// Bytes to send.
    Data,
    /// Nothing to say, yet memcached sends a bare header (a total of 0)
    /// for it when it is first in line to be written: a get's missed key,
    /// `quit`, any quiet binary request.
    Empty,
    /// Nothing at all (noreply, a quiet meta miss).
    Skip,
}

/// Splits the replies of one request into memcached's responses, pushing
/// their byte ranges (relative to `reply`) onto `out`. `line` is the
/// request line, to tell retrievals apart; a binary request makes one
/// response, empty or not.
pub(super) fn responses(
    line: &[u8],
    reply: &[u8],
    binary: bool,
    out: &mut Vec<(Range<usize>, Part)>,
) {
    if binary {
        let part = if reply.is_empty() {
            Part::Empty
        } else {
            Part::Data
        };
        return out.push((0..reply.len(), part));
    }
    if let Some(keys) = retrieval_keys(line)
        && reply.ends_with(b"END\r\n")
    {
        return split_retrieval(reply, keys, out);
    }
    let part = match (reply.is_empty(), first_word(line)) {
        (false, _) => Part::Data,
        (true, b"quit") => Part::Empty,
        (true, _) => Part::Skip,
    };
    out.push((0..reply.len(), part));
}

fn first_word(line: &[u8]) -> &[u8] {
    words(line).next().unwrap_or_default()
}

fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    line.split(|&b| b == b' ' || b == b'\r')
        .filter(|w| !w.is_empty())
}

/// The keys a `get`/`gets`/`gat`/`gats` names.
fn retrieval_keys(line: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
    let mut words = words(line);
    let skip = match words.next()? {
        b"get" | b"gets" => 0,
        b"gat" | b"gats" => 1, // the expiry time
        _ => return None,
    };
    Some(words.skip(skip))
}

/// A retrieval reply: one response per key, a `VALUE` block for a hit and
/// nothing for a miss; `END` joins the last key's response.
fn split_retrieval<'a>(
    reply: &[u8],
    keys: impl Iterator<Item = &'a [u8]>,
    out: &mut Vec<(Range<usize>, Part)>,
) {
    let first = out.len();
    let mut pos = 0;
    for key in keys {
        match value_block(reply, pos) {
            Some((hit, end)) if hit == key => {
                out.push((pos..end, Part::Data));
                pos = end;
            }
            _ => out.push((pos..pos, Part::Empty)),
        }
    }
    let named_keys = out.len() > first;
    match out.last_mut() {
        Some(last) if named_keys => *last = (last.0.start..reply.len(), Part::Data),
        _ => out.push((pos..reply.len(), Part::Data)),
    }
}

/// The key and end of a `VALUE key flags bytes [cas]\r\n<data>\r\n` block
/// starting at `at`.
fn value_block(reply: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = reply.get(at..)?;
    if !rest.starts_with(b"VALUE ") {
        return None;
    }
    let eol = rest.iter().position(|&b| b == b'\n')?;
    let mut fields = rest[..eol].trim_ascii_end().split(|&b| b == b' ');
    let key = fields.nth(1)?;
    let bytes: usize = std::str::from_utf8(fields.nth(1)?).ok()?.parse().ok()?;
    let end = at + eol + 1 + bytes + 2;
    (end <= reply.len()).then_some((key, end))
}

/// Where the complete `VALUE` blocks of an unfinished retrieval reply end,
/// all but the last: those responses are final and may go out while the
/// rest of the reply is made (the last may still take the `END`).
fn settled_blocks(reply: &[u8], out: &mut Vec<(Range<usize>, Part)>) {
    let mut pos = 0;
    while let Some((_, end)) = value_block(reply, pos) {
        out.push((pos..end, Part::Data));
        pos = end;
    }
    out.pop();
}

/// The UDP path's reusable buffers, and what memcached keeps between
/// datagrams.
#[derive(Default)]
pub(super) struct Scratch {
    datagram: Vec<u8>,
    parts: Vec<(Range<usize>, Part)>,
    /// The sender of the datagram being served (`stats conns` shows it).
    serving: Option<SocketAddr>,
    /// A paused multi-get has sent some of its responses already: its
    /// misses cannot be placed any more, and are not sent as bare headers.
    resumed: bool,
}

impl Scratch {
    pub(super) fn serving_peer(&self) -> Option<SocketAddr> {
        self.serving
    }
}

impl super::Reactor {
    /// Serves the datagrams waiting on a UDP socket, a bounded number per
    /// turn.
    pub(super) fn serve_datagrams(&mut self, fd: RawFd) {
        let mut buf = std::mem::take(&mut self.udp.datagram);
        buf.resize(READ_BUFFER_SIZE, 0);
        for _ in 0..DATAGRAMS_PER_TURN {
            let Some(Slot::Udp(c)) = self.slots.get(fd as usize) else {
                break;
            };
            let (n, peer) = match c.stream.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            // memcached counts every datagram longer than a header, even
            // one it then drops.
            if n > HEADER_SIZE {
                self.stats.bytes_read += n as u64;
            }
            let Some(id) = request_id(&buf[..n]) else {
                continue;
            };
            let request = Request { fd, id, peer };
            self.serve_datagram(&request, &buf[HEADER_SIZE..n]);
            if self.stop != StopReason::Running {
                break;
            }
        }
        self.udp.datagram = buf;
    }

    /// Runs the commands of one datagram and sends their responses.
    fn serve_datagram(&mut self, request: &Request, payload: &[u8]) {
        // memcached picks the protocol per datagram, by its first byte.
        let binary = payload.first() == Some(&BINARY_REQUEST_MAGIC);
        let fd = request.fd;
        self.udp.serving = Some(request.peer);
        self.udp.resumed = false;
        let now = self.cache.now();
        self.with_udp_conn(fd, |c, _| {
            c.start_datagram();
            c.bin.binary = binary;
            c.last_active = now;
        });
        let per_turn = self.settings.reqs_per_event.max(1);
        // A turn that starts with a read gets memcached's one extra request.
        let mut budget = per_turn + 1;
        let mut pos = 0;
        loop {
            let (used, why) = self
                .with_udp_conn(fd, |c, ctx| c.consume(ctx, &payload[pos..], &mut budget))
                .unwrap_or((0, BatchEnd::Close));
            if why == BatchEnd::ConnsReport {
                self.append_conns_report(fd);
                self.extend_last_mark(fd);
            }
            let paused =
                why == BatchEnd::Blocked && self.udp_conn(fd).is_some_and(|c| c.is_paused());
            let unwritten = self.replies_unwritten(fd);
            // A datagram's replies cannot wait for the end of the turn.
            if crate::persist::mutations::len(&self.cache) > 0 && !self.aof_write() {
                // Changes the file did not take get no reply at all.
                if let Some(c) = self.udp_conn(fd) {
                    c.out.clear();
                    c.out_pos = 0;
                    c.flush_mark = 0;
                    if let Some(m) = &mut c.marks {
                        m.clear();
                    }
                }
            }
            self.transmit(request, &payload[pos..], paused);
            pos += used;
            match why {
                BatchEnd::ConnsReport => {}
                BatchEnd::Blocked if paused => {}
                BatchEnd::Budget => {
                    // memcached yields here and carries on with the
                    // datagram on its next turn.
                    self.stats.conn_yields += 1;
                    if pos >= payload.len() {
                        break;
                    }
                    budget = per_turn;
                }
                BatchEnd::NeedInput => {
                    // Replies not yet written (the last request was not a
                    // retrieval, which writes at once) make memcached pass
                    // its request count once more to write them, and yield
                    // if that was the turn's last.
                    if unwritten && budget <= 1 {
                        self.stats.conn_yields += 1;
                    }
                    break;
                }
                BatchEnd::Shutdown(graceful) => {
                    self.stop = if graceful {
                        StopReason::Graceful
                    } else {
                        StopReason::Normal
                    };
                    break;
                }
                _ => break,
            }
        }
        // A data block the datagram did not finish is dropped with it; so
        // is a metadump, which has no connection to stream to. `quit` is
        // written, then closed, which for UDP means reading again.
        self.with_udp_conn(fd, |c, ctx| c.end_datagram(ctx));
        self.cache.crawl_cancel_for(fd);
        self.udp.serving = None;
    }

    /// Whether the last request `consume` ran leaves replies unwritten:
    /// any but a retrieval or `mn`, which memcached writes at once.
    fn replies_unwritten(&mut self, fd: RawFd) -> bool {
        let Some(c) = self.udp_conn(fd) else {
            return false;
        };
        c.marks
            .as_ref()
            .and_then(|m| m.last())
            .is_some_and(|m| !m.wrote)
    }

    fn udp_conn(&mut self, fd: RawFd) -> Option<&mut Conn> {
        match self.slots.get_mut(fd as usize) {
            Some(Slot::Udp(c)) => Some(c),
            _ => None,
        }
    }

    fn with_udp_conn<T>(
        &mut self,
        fd: RawFd,
        f: impl FnOnce(&mut Conn, &mut Ctx) -> T,
    ) -> Option<T> {
        let super::Reactor {
            slots,
            cache,
            stats,
            settings,
            ..
        } = self;
        let Some(Slot::Udp(c)) = slots.get_mut(fd as usize) else {
            return None;
        };
        let mut ctx = Ctx::new(cache, stats, settings, fd);
        Some(f(c, &mut ctx))
    }

    /// `stats conns` asked over UDP: its report belongs to its response.
    fn extend_last_mark(&mut self, fd: RawFd) {
        if let Some(c) = self.udp_conn(fd) {
            let len = c.out.len();
            if let Some(last) = c.marks.as_mut().and_then(|m| m.last_mut()) {
                last.end = len;
            }
        }
    }

    /// Sends the responses finished so far (`input` is what the last
    /// `consume` was given, which the marks point into). With `paused`, a
    /// multi-get is half done: its settled blocks go too.
    fn transmit(&mut self, request: &Request, input: &[u8], paused: bool) {
        let Some(Slot::Udp(c)) = self.slots.get_mut(request.fd as usize) else {
            return;
        };
        let mut parts = std::mem::take(&mut self.udp.parts);
        parts.clear();
        // Whether the next response is first in line to be written: at the
        // start, and after each of memcached's write points.
        let mut fresh = true;
        let mut start = 0;
        let marks = c.marks.take().unwrap_or_default();
        let binary = c.bin.binary;
        for &Mark { at, end, wrote } in marks.iter() {
            let end = end.min(c.out.len()).max(start);
            let line = input.get(at..).unwrap_or_default();
            let first = parts.len();
            responses(line, &c.out[start..end], binary, &mut parts);
            let resumed = std::mem::take(&mut self.udp.resumed);
            for (range, part) in &mut parts[first..] {
                *range = range.start + start..range.end + start;
                if *part == Part::Empty && resumed {
                    *part = Part::Skip;
                }
            }
            start = end;
            self.stats.bytes_written += send_parts(request, &c.out, &parts[first..], fresh);
            fresh = wrote || (fresh && parts[first..].iter().all(|p| p.1 == Part::Skip));
        }
        parts.clear();
        if paused {
            settled_blocks(&c.out[start..], &mut parts);
            for (range, _) in &mut parts {
                *range = range.start + start..range.end + start;
            }
            start = parts.last().map_or(start, |(r, _)| r.end);
            self.udp.resumed = true;
        } else if start < c.out.len() {
            parts.push((start..c.out.len(), Part::Data));
            start = c.out.len();
        }
        self.stats.bytes_written += send_parts(request, &c.out, &parts, fresh);
        parts.clear();
        self.udp.parts = parts;
        c.out.drain(..start);
        // What is left is a paused reply's unsettled tail; it does not
        // count against the output limit, which is for unsent bytes.
        c.out_pos = c.out.len();
        c.flush_mark = c.out.len();
        let mut marks = marks;
        marks.clear();
        c.marks = Some(marks);
    }
}

/// Sends responses in order. An empty one first in line goes out as a
/// bare header (memcached builds a datagram for the head of its queue
/// whatever it holds); one after a sent response is retired with it.
/// Returns bytes sent.
fn send_parts(request: &Request, out: &[u8], parts: &[(Range<usize>, Part)], fresh: bool) -> u64 {
    let mut first_in_line = fresh;
    let mut sent = 0;
    for (range, part) in parts {
        match part {
            Part::Skip => continue,
            Part::Empty if first_in_line => {
                let head = header(request.id, 0, 0);
                if let Ok(n) = sys::send_datagram(request.fd, &head, &[], &request.peer) {
                    sent += n as u64;
                }
            }
            Part::Empty => {}
            Part::Data => {
                sent += send_response(request.fd, request.id, &request.peer, &out[range.clone()]);
            }
        }
        first_in_line = false;
    }
    sent
}

/// The datagram being answered.
struct Request {
    fd: RawFd,
    id: u16,
    peer: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str, reply: &str) -> Vec<String> {
        let mut parts = Vec::new();
        responses(line.as_bytes(), reply.as_bytes(), false, &mut parts);
        parts
            .into_iter()
            .map(|(r, part)| match part {
                Part::Data => reply[r].to_string(),
                Part::Empty => "<empty>".to_string(),
                Part::Skip => "<skip>".to_string(),
            })
            .collect()
    }

    #[test]
    fn only_single_datagram_requests_are_served() {
        assert_eq!(request_id(b"\x12\x34\0\0\0\x01\0\0get a\r\n"), Some(0x1234));
        assert_eq!(request_id(b"\x12\x34\0\x03\0\x01\x00\x09v"), Some(0x1234));
        assert_eq!(request_id(b"\x12\x34\0\0\0\x02\0\0get a\r\n"), None);
        assert_eq!(request_id(b"\x12\x34\0\0\0\x01\0\0"), None);
    }

    #[test]
    fn header_is_big_endian() {
        assert_eq!(header(0x1234, 2, 0x0104), [0x12, 0x34, 0, 2, 1, 4, 0, 0]);
    }

    #[test]
    fn retrievals_split_per_key() {
        let v = "VALUE a 0 1\r\nx\r\n";
        assert_eq!(
            split("get a", &format!("{v}END\r\n")),
            [format!("{v}END\r\n")]
        );
        assert_eq!(split("get a b", &format!("{v}END\r\n")), [v, "END\r\n"]);
        assert_eq!(
            split("get a b a", &format!("{v}{v}END\r\n")),
            [v.to_string(), "<empty>".to_string(), format!("{v}END\r\n")]
        );
        assert_eq!(
            split("gat 10 b a", &format!("{v}END\r\n")),
            ["<empty>".to_string(), format!("{v}END\r\n")]
        );
        assert_eq!(split("get b", "END\r\n"), ["END\r\n"]);
        assert_eq!(split("version", "VERSION 1\r\n"), ["VERSION 1\r\n"]);
        assert_eq!(split("quit", ""), ["<empty>"]);
        assert_eq!(split("set a 0 0 1 noreply", ""), ["<skip>"]);
        // A value that looks like a header is data, not a block.
        let tricky = "VALUE a 0 8\r\nVALUE b\n\r\nEND\r\n";
        assert_eq!(split("gets a", tricky), [tricky]);
        // A get refused whole is one response.
        let refused = "CLIENT_ERROR bad command line format\r\n";
        assert_eq!(split("get a b", refused), [refused]);
    }
}
