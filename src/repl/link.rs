//! The link: one TCP connection to the peer, in either direction, and the
//! frames it carries.
//!
//! **The link** carries records of the mutation feed
//! (`crate::persist::record`) both ways, framed as in the AOF, plus a few
//! link-control frames in the same frame layout with kinds from 0x80 up:
//! HELLO (the replica's first frame), TOMB (a key the replica deleted, and
//! the CAS counter then), UPLOADED (the replica has sent everything it
//! holds), RESYNC (a full copy follows: the replica wipes its cache),
//! SYNCED (the copy is complete) and ACK (records applied so far; also the
//! heartbeat, once a second).
//!
//! **The wire** is the TCP socket itself, or under `-o repl_tls` a TLS
//! session over it (`crate::tls`): the frames are the same either way.

use crate::persist::record::{self, Encoder, FRAME};
use crate::persist::snapshot::SnapshotCursor;
use crate::tls::TlsStream;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

pub(super) const KIND_HELLO: u8 = 0x81;
pub(super) const KIND_RESYNC: u8 = 0x82;
pub(super) const KIND_SYNCED: u8 = 0x83;
pub(super) const KIND_ACK: u8 = 0x84;
/// Under `-Y`, the first frame each side sends: proof that it read the
/// same authfile (see `peer::link_secret`).
pub(super) const KIND_AUTH: u8 = 0x85;
/// The replica's upload (everything it holds, see `copy.rs`) is complete.
pub(super) const KIND_UPLOADED: u8 = 0x86;
/// A tombstone sent in the replica's upload: `cas:u64 nkey:u8 key`.
pub(super) const KIND_TOMB: u8 = 0x87;
/// The full copy is produced only while less than this waits to be sent;
/// a buffer grown past four times this is let go once it is sent.
pub(super) const COPY_LOW_WATER: usize = 1 << 20;
/// Bytes already written that are dropped from the front of the buffer.
const COMPACT_AT: usize = 1 << 20;
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The link's socket: plain TCP, or a TLS session over it.
pub(super) enum Wire {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Wire {
    fn fd(&self) -> RawFd {
        match self {
            Wire::Plain(s) => s.as_raw_fd(),
            Wire::Tls(s) => s.tcp().as_raw_fd(),
        }
    }

    /// TLS may need the socket the other way round (a read that must
    /// write a handshake record, a write that must read one), so its
    /// readiness is not one-to-one with the socket's.
    pub(super) fn is_tls(&self) -> bool {
        matches!(self, Wire::Tls(_))
    }

    /// Offers TLS what it holds and could not send yet; true once all is
    /// sent (always, in plaintext).
    fn drain(&mut self) -> io::Result<bool> {
        match self {
            Wire::Plain(_) => Ok(true),
            Wire::Tls(s) => s.drain(),
        }
    }

    /// Why the TLS session broke (the handshake: a certificate refused, a
    /// peer that does not speak TLS), in OpenSSL's words.
    pub(super) fn tls_failure(&self) -> Option<&str> {
        match self {
            Wire::Plain(_) => None,
            Wire::Tls(s) => s.failure(),
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The connection to the peer, in either direction.
pub(super) struct Link {
    pub(super) stream: Wire,
    pub(super) fd: RawFd,
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    pub(super) input: Vec<u8>,
    pub(super) writable: bool,
    /// The socket may hold more input (edge-triggered: until a read would
    /// block).
    pub(super) readable: bool,
    /// Master: the full copy being sent.
    pub(super) copy: Option<SnapshotCursor>,
    /// Master: the replica's upload is complete and records flow.
    /// Replica: always.
    pub(super) streaming: bool,
    /// Master: HELLO came (the replica's upload follows). Replica: always.
    pub(super) joined: bool,
    /// The full copy is complete (master: sent; replica: received).
    pub(super) synced: bool,
    /// Records queued for the peer, and how many it says it applied.
    pub(super) sent: u64,
    pub(super) acked: u64,
    /// Records applied from the peer, and the count last told to it.
    pub(super) applied: u64,
    pub(super) told: u64,
    pub(super) last_heard: Instant,
    pub(super) last_told: Instant,
    /// The peer has proved it knows the authfile (always true without -Y).
    pub(super) trusted: bool,
}

impl Link {
    /// A link that, under `-Y` (`secret`), first proves itself to the peer
    /// and trusts nothing the peer sends until the peer has done the same.
    pub(super) fn new(stream: Wire, streaming: bool, secret: Option<u64>) -> Link {
        let now = Instant::now();
        let mut link = Link {
            fd: stream.fd(),
            stream,
            out: Vec::new(),
            out_pos: 0,
            input: Vec::new(),
            writable: true,
            readable: true,
            copy: None,
            streaming,
            joined: streaming,
            synced: false,
            sent: 0,
            acked: 0,
            applied: 0,
            told: 0,
            last_heard: now,
            last_told: now,
            trusted: secret.is_none(),
        };
        if let Some(secret) = secret {
            link.control(KIND_AUTH, secret);
        }
        link
    }

    /// Epoll's readiness bits for the socket. TLS may need the socket the
    /// other way round, so any event there retries both directions (a try
    /// that finds nothing just reports `WouldBlock` again).
    pub(super) fn ready(&mut self, bits: u32) {
        let tls = self.stream.is_tls();
        self.writable |= tls || bits & crate::sys::WRITE != 0;
        self.readable |= tls || bits & (libc::EPOLLIN as u32 | crate::sys::HANGUP) != 0;
    }

    pub(super) fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }

    pub(super) fn control(&mut self, kind: u8, value: u64) {
        Encoder::begin(&mut self.out, kind, 0).u64(value).finish();
    }

    /// A TOMB frame: `key` was deleted when the CAS counter was `cas`.
    pub(super) fn tomb(&mut self, key: &[u8], cas: u64) {
        Encoder::begin(&mut self.out, KIND_TOMB, 0)
            .u64(cas)
            .key(key)
            .finish();
    }

    /// Writes what the socket takes; Err when the link is broken.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        while self.writable && self.unsent() > 0 {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.writable && !self.stream.drain()? {
            self.writable = false;
        }
        if self.unsent() == 0 {
            self.out.clear();
            self.out_pos = 0;
            // A full copy or a burst should not pin memory once sent.
            if self.out.capacity() > 4 * COPY_LOW_WATER {
                self.out = Vec::new();
            }
        } else if self.out_pos >= COMPACT_AT {
            // Only whole records leave the front, so the buffer always
            // starts at a frame (which `cut_after_current` relies on).
            let keep = frame_end_at_or_before(&self.out, self.out_pos);
            self.out.drain(..keep);
            self.out_pos -= keep;
        }
        Ok(())
    }

    /// Tells the peer how many records were applied: when that changed,
    /// and once a second anyway (the heartbeat that keeps the link alive).
    pub(super) fn heartbeat(&mut self) {
        let due = self.last_told.elapsed() >= HEARTBEAT;
        if self.joined && (due || self.applied != self.told) {
            self.told = self.applied;
            self.last_told = Instant::now();
            let applied = self.applied;
            self.control(KIND_ACK, applied);
        }
    }

    /// Drops everything queued after the record now being written; returns
    /// how many records were dropped.
    pub(super) fn cut_after_current(&mut self) -> u64 {
        let mut at = 0;
        while at < self.out_pos {
            at += FRAME + frame_len(&self.out[at..]);
        }
        let dropped = count_records(&self.out[at..]);
        self.out.truncate(at);
        dropped
    }
}

pub(super) fn frame_len(buf: &[u8]) -> usize {
    u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// The end of the last whole frame that ends at or before `pos`.
pub(super) fn frame_end_at_or_before(buf: &[u8], pos: usize) -> usize {
    let mut at = 0;
    loop {
        let next = at + FRAME + frame_len(&buf[at..]);
        if next > pos {
            return at;
        }
        at = next;
    }
}

/// Mutation records (not link-control frames) among whole frames.
pub(super) fn count_records(mut buf: &[u8]) -> u64 {
    let mut n = 0;
    while buf.len() >= FRAME {
        let total = FRAME + frame_len(buf);
        n += u64::from(buf.get(FRAME).is_some_and(|&k| k < 0x80));
        buf = &buf[total.min(buf.len())..];
    }
    n
}

fn frame_crc(frame: &[u8]) -> u32 {
    u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]])
}

/// The kind and value of a whole control frame, if its shape and checksum
/// are right.
pub(super) fn control_frame(frame: &[u8]) -> Option<(u8, u64)> {
    let body = frame.get(FRAME..)?;
    if body.len() != 1 + 8 + 8 || record::crc32c(body) != frame_crc(frame) {
        return None;
    }
    Some((body[0], u64::from_le_bytes(body[9..17].try_into().ok()?)))
}

/// The CAS and key of a whole TOMB frame, if its shape and checksum are
/// right.
pub(super) fn tomb_frame(frame: &[u8]) -> Option<(u64, &[u8])> {
    let body = frame.get(FRAME..)?;
    if body.len() < 1 + 8 + 8 + 1 || record::crc32c(body) != frame_crc(frame) {
        return None;
    }
    let cas = u64::from_le_bytes(body[9..17].try_into().ok()?);
    let key = &body[18..];
    (body[0] == KIND_TOMB && key.len() == body[17] as usize).then_some((cas, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn frames() -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        record::encode_delete(&mut buf, 1, b"first");
        ends.push(buf.len());
        Encoder::begin(&mut buf, KIND_ACK, 0).u64(5).finish();
        ends.push(buf.len());
        record::encode_flush(&mut buf, 2, 2);
        ends.push(buf.len());
        record::encode_delete(&mut buf, 3, b"third");
        ends.push(buf.len());
        (buf, ends)
    }

    #[test]
    fn a_candidate_proves_itself_only_with_a_whole_sound_control_frame() {
        let mut buf = Vec::new();
        Encoder::begin(&mut buf, KIND_AUTH, 0).u64(42).finish();
        assert_eq!(control_frame(&buf), Some((KIND_AUTH, 42)));
        assert_eq!(control_frame(&buf[..buf.len() - 1]), None);
        for bit in 0..(buf.len() - FRAME) * 8 {
            let mut bad = buf.clone();
            bad[FRAME + bit / 8] ^= 1 << (bit % 8);
            assert_eq!(control_frame(&bad), None, "bit {bit} flipped");
        }
        assert_eq!(control_frame(&buf[..FRAME - 1]), None);
    }

    #[test]
    fn tomb_frames_carry_a_key_and_a_cas_and_are_not_records() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut link = Link::new(Wire::Plain(stream), true, None);
        link.tomb(b"gone", 77);
        assert_eq!(tomb_frame(&link.out), Some((77, &b"gone"[..])));
        assert_eq!(count_records(&link.out), 0);
        let mut bad = link.out.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(tomb_frame(&bad), None);
        assert_eq!(control_frame(&link.out), None);
    }

    #[test]
    fn control_frames_are_not_counted_as_records() {
        let (buf, ends) = frames();
        assert_eq!(count_records(&buf), 3);
        assert_eq!(count_records(&buf[ends[0]..ends[1]]), 0);
        assert_eq!(frame_end_at_or_before(&buf, ends[1] + 3), ends[1]);
        assert_eq!(frame_end_at_or_before(&buf, ends[1]), ends[1]);
        assert_eq!(frame_end_at_or_before(&buf, 3), 0);
    }

    #[test]
    fn a_resync_keeps_the_record_being_written_and_drops_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut link = Link::new(Wire::Plain(stream), true, None);
        let (buf, ends) = frames();
        link.out = buf;
        link.out_pos = ends[1] + 1;
        assert_eq!(link.cut_after_current(), 1);
        assert_eq!(link.out.len(), ends[2]);
        link.out_pos = 0;
        assert_eq!(link.cut_after_current(), 2);
        assert!(link.out.is_empty());
    }
}
