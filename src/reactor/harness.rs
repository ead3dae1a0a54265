//! A connection without a network, for the fuzz targets (`fuzz/`) and
//! their regression tests, which push millions of inputs per minute through
//! the parsers and the cache semantics without sockets or threads.
//!
//! A session runs a byte stream through the reactor's own turn
//! (`turn::step`), against a real (small) `Cache`, and collects the
//! replies. Only the socket is faked: the [`Wire`] a step reads from hands
//! out the session's reads in order (each cut to what the reactor asks for
//! at once, so line-length limits trigger the same way), and the client
//! reads every reply as soon as it is written. Between turns the cache's
//! background work runs as the reactor runs it (`turn::between_turns`).
//! The socket the connection owns is one end of a loopback pair made once
//! per process and never read or written.

use super::conn::{Conn, READ_SIZE};
use super::stream::Stream;
use super::turn::{self, Action, Wire};
use crate::items::Cache;
use crate::items::crawler::CrawlKind;
use crate::proto::request::Ctx;
use crate::settings::Settings;
use crate::stats::Stats;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

/// How many steps one read may take before the harness declares the
/// connection stuck: a parser that neither consumes input nor stops is a
/// bug the fuzzer should report, not hang on.
const MAX_ROUNDS: usize = 1 << 20;

pub struct Feeder {
    cache: Cache,
    stats: Stats,
    settings: Settings,
    /// The connected end of a loopback pair: each session's `Conn` owns a
    /// duplicate of it.
    stream: TcpStream,
}

/// One loopback pair for the whole process (a fuzzer makes a `Feeder` per
/// input): the client end, and the server end that stays open so the
/// client end stays connected.
fn loopback() -> io::Result<TcpStream> {
    static PAIR: OnceLock<(TcpStream, TcpStream)> = OnceLock::new();
    if PAIR.get().is_none() {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let stream = TcpStream::connect(listener.local_addr()?)?;
        let (peer, _) = listener.accept()?;
        let _ = PAIR.set((stream, peer));
    }
    match PAIR.get() {
        Some((stream, _)) => stream.try_clone(),
        None => Err(io::ErrorKind::NotConnected.into()),
    }
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every byte was offered and the connection is still open.
    Open,
    /// The server closed the connection.
    Closed,
    /// `shutdown` was accepted.
    Shutdown,
}

/// The client at the other end of the fake socket: what it has sent that
/// the server has not read yet, and everything it has received.
struct Client<'a> {
    sent: &'a [u8],
    replies: &'a mut Vec<u8>,
}

impl Wire for Client<'_> {
    fn read(&mut self, _: &mut Stream, buf: &mut [u8]) -> io::Result<usize> {
        if self.sent.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.sent.len());
        buf[..n].copy_from_slice(&self.sent[..n]);
        self.sent = &self.sent[n..];
        Ok(n)
    }

    fn write(&mut self, _: &mut Stream, bytes: &[u8]) -> io::Result<usize> {
        self.replies.extend_from_slice(bytes);
        Ok(bytes.len())
    }
}

impl Feeder {
    /// A cache built from `settings` as the server would build it.
    pub fn new(settings: Settings) -> io::Result<Feeder> {
        let mut cache = Cache::new(crate::items::CacheConfig::from_settings(&settings))?;
        cache.crawler_running = settings.lru_crawler;
        Ok(Feeder {
            cache,
            stats: Stats::default(),
            settings,
            stream: loopback()?,
        })
    }

    /// Runs one connection that receives `reads` in that order, each
    /// arriving whole before the server looks (cut further if the reactor
    /// would read less at once), and appends every reply byte to `replies`.
    pub fn session(&mut self, reads: &[&[u8]], replies: &mut Vec<u8>) -> io::Result<Ending> {
        let stream = self.stream.try_clone()?;
        let fd = stream.as_raw_fd();
        let stream = Stream::Tcp(stream);
        let authenticating = self.settings.auth.is_some();
        let mut conn = Conn::new(stream, fd, self.cache.now(), authenticating);
        conn.choose_protocol(self.settings.protocol);
        let mut client = Client { sent: &[], replies };
        let mut scratch = vec![0; READ_SIZE];
        let mut ending = Ending::Open;
        for read in reads.iter().filter(|r| !r.is_empty()) {
            client.sent = read;
            // The edge epoll would report.
            conn.readable = true;
            if let Some(end) = self.drive(&mut client, &mut conn, &mut scratch) {
                ending = end;
                break;
            }
        }
        client.replies.extend_from_slice(&conn.out[conn.out_pos..]);
        self.cache.crawl_cancel_for(fd);
        // As the reactor's close does: a watcher stops being one.
        self.cache.logger.remove_watcher(fd);
        let mut ctx = Ctx::new(&mut self.cache, &mut self.stats, &mut self.settings, fd);
        conn.shut(&mut ctx);
        Ok(ending)
    }

    /// The reactor's `drive` for the one connection: steps until the read
    /// is used up (`None`) or the connection ends. The turn's budget is
    /// renewed where the reactor would run the connection again after the
    /// others.
    fn drive(
        &mut self,
        client: &mut Client,
        conn: &mut Conn,
        scratch: &mut [u8],
    ) -> Option<Ending> {
        let per_turn = self.settings.reqs_per_event.max(1);
        let mut budget = per_turn + usize::from(conn.starts_by_reading());
        for _ in 0..MAX_ROUNDS {
            let mut ctx = Ctx::new(
                &mut self.cache,
                &mut self.stats,
                &mut self.settings,
                conn.fd,
            );
            let action = turn::step(client, conn, &mut ctx, scratch, &mut budget, None);
            // `verbosity 2` would make every later request print a trace,
            // which slows a fuzzer to a crawl; the trace code already ran.
            self.settings.verbose = 0;
            match action {
                Action::Again => continue,
                // The other connections' part of the report is the reactor's.
                Action::ConnsReport => conn.out.extend_from_slice(b"END\r\n"),
                Action::Close => return Some(Ending::Closed),
                Action::Shutdown(_) => return Some(Ending::Shutdown),
                // Idle waiting for a metadump: the crawler writes it.
                Action::Idle if !conn.readable && !conn.blocked_on_output() => return None,
                Action::Idle | Action::Yield => {
                    self.between_turns(conn);
                    budget = per_turn;
                }
            }
        }
        panic!("connection made no progress in {MAX_ROUNDS} rounds");
    }

    /// What the reactor does for the cache between turns; a metadump goes
    /// to this connection.
    fn between_turns(&mut self, conn: &mut Conn) {
        let dump_to = match self.cache.crawl_kind() {
            Some(CrawlKind::Metadump { fd }) if fd == conn.fd => Some(conn),
            _ => None,
        };
        turn::between_turns(&mut self.cache, true, dump_to);
    }
}

/// The fuzz targets' entry points, kept here (not in `fuzz/`) so the
/// regression tests in `tests/fuzz_regressions.rs` run crashing inputs
/// through exactly the code the fuzzer ran.
pub mod fuzz {
    use super::Feeder;
    use crate::authfile::Credentials;
    use crate::logger;
    use crate::persist::record::{self, End, Reader};
    use crate::persist::{mutations, replay::Replay, snapshot};
    use crate::settings::{Protocol, Settings};

    /// The first byte of a fuzz input picks the server's switches and how
    /// the rest is cut into reads; the rest is what the client sends.
    fn settings_for(selector: u8) -> Settings {
        let mut s = Settings {
            // Two pages of memory and 1 KB items: evictions, chained
            // values and out-of-memory paths are all a few commands away.
            max_bytes: 2 * 1024 * 1024,
            item_size_max: 1024 * 1024,
            hashpower_init: 12,
            reqs_per_event: 4,
            ..Settings::default()
        };
        s.evict_to_free = selector & 1 == 0;
        s.use_cas = selector & 2 == 0;
        s.flush_enabled = selector & 4 == 0;
        s.dump_enabled = selector & 8 == 0;
        s.shutdown_command = selector & 16 != 0;
        s
    }

    /// Cuts `body` into reads of `1 + selector / 32 * 7` bytes (selector
    /// below 32: one read).
    fn reads(selector: u8, body: &[u8]) -> Vec<&[u8]> {
        match selector / 32 {
            0 => vec![body],
            n => body.chunks(1 + usize::from(n) * 7).collect(),
        }
    }

    /// Runs `data` as one connection's input; panics only on a bug.
    pub fn text(data: &[u8]) {
        session(data, Protocol::Negotiating);
    }

    /// Like [`text`] on a `-B binary` server: every byte is binary frames.
    pub fn binary(data: &[u8]) {
        session(data, Protocol::Binary);
    }

    /// Like [`text`] on a `-Y` server whose authfile holds `user:pass` and
    /// `u:p`: the gate's own parser (credentials `set`s and their data
    /// blocks, replies replacing one another) and, past it, the protocol.
    /// A second connection must then be able to log in and be served.
    pub fn auth(data: &[u8]) {
        let Some((&selector, body)) = data.split_first() else {
            return;
        };
        let credentials = Credentials::parse(b"user:pass\nu:p\n").expect("a valid authfile");
        let settings = Settings {
            auth_file: Some("fuzz".into()),
            auth: Some(credentials),
            ..settings_for(selector)
        };
        let mut feeder = Feeder::new(settings).expect("loopback pair");
        let mut replies = Vec::new();
        let _ = feeder.session(&reads(selector, body), &mut replies);
        let mut second = Vec::new();
        // Two reads: replies to one batch of unauthenticated input replace
        // one another (memcached's quirk), so only the last would show.
        let login: [&[u8]; 2] = [
            b"set a 0 0 6\r\nu pass\r\n",
            b"set a 0 0 3\r\nu p\r\nmn\r\n",
        ];
        let _ = feeder.session(&login, &mut second);
        assert_eq!(
            second, b"CLIENT_ERROR authentication failure\r\nSTORED\r\nMN\r\n",
            "a later connection got {second:?}"
        );
    }

    fn session(data: &[u8], protocol: Protocol) {
        let Some((&selector, body)) = data.split_first() else {
            return;
        };
        let settings = Settings {
            protocol,
            ..settings_for(selector)
        };
        let mut feeder = Feeder::new(settings).expect("loopback pair");
        let mut replies = Vec::new();
        let _ = feeder.session(&reads(selector, body), &mut replies);
        // A second connection sees what the first left behind: a value
        // half-written, a dump cut off or a lock left held would show here.
        let mut second = Vec::new();
        let probe: &[u8] = match protocol {
            // A binary `get` of key "a", then `noop`.
            Protocol::Binary => &[
                0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'a',
                0x80, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            _ => b"get a b c\r\nmg a v\r\nstats\r\n",
        };
        let _ = feeder.session(&[probe], &mut second);
        let sane = match protocol {
            Protocol::Binary => second.first() == Some(&0x81),
            _ => second.starts_with(b"END\r\n") || second.starts_with(b"VALUE "),
        };
        assert!(sane, "a later connection got {second:?}");
    }

    /// Like [`binary`] (arbitrary key bytes) with a `watch` of every
    /// stream attached from the start, so each lookup, store, eviction and
    /// refusal is formatted into the watcher's bounded buffer: every byte
    /// there (after its `OK`) must form whole lines, each a log entry or a
    /// `skipped=` note.
    pub fn watch(data: &[u8]) {
        const WATCHER_FD: i32 = -2;
        let Some((&selector, body)) = data.split_first() else {
            return;
        };
        let settings = Settings {
            protocol: if selector & 1 == 0 {
                Protocol::Binary
            } else {
                Protocol::Negotiating
            },
            ..settings_for(selector & !1)
        };
        let mut feeder = Feeder::new(settings).expect("loopback pair");
        let every = logger::FETCHERS | logger::MUTATIONS | logger::EVICTIONS | logger::SYSEVENTS;
        feeder
            .cache
            .logger
            .add_watcher(WATCHER_FD, every)
            .expect("the first watcher");
        let mut replies = Vec::new();
        let _ = feeder.session(&reads(selector, body), &mut replies);
        // The watcher's stream opens with the `watch` command's own reply.
        let stream = feeder.cache.logger.pending(WATCHER_FD);
        let stream = stream.strip_prefix(b"OK\r\n").unwrap_or(stream);
        assert!(stream.is_empty() || stream.ends_with(b"\n"), "a torn line");
        for line in stream.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                line.starts_with(b"ts=") || line.starts_with(b"skipped="),
                "not a log line: {:?} in {:?}",
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(stream)
            );
        }
    }

    /// Persistence and replication records (`persist::record`), two ways.
    /// First the raw bytes go to the decoder, and every record it accepts
    /// must re-encode to exactly the bytes it came from. Then the same bytes
    /// are cut into bodies and sealed with a good checksum, so the fuzzer
    /// gets past the CRC to what AOF recovery and a replica do with a record
    /// that decodes: apply it to a cache. The cache must then still answer a
    /// connection sanely, and its snapshot (an AOF rewrite, a full copy)
    /// must decode cleanly.
    pub fn records(data: &[u8]) {
        let Some((&selector, body)) = data.split_first() else {
            return;
        };
        records_round_trip(body);
        let sealed = seal_bodies(body);
        let mut feeder = Feeder::new(settings_for(selector)).expect("loopback pair");
        if selector & 32 != 0 {
            mutations::enable(&mut feeder.cache);
        }
        let mut replay = Replay::default();
        let mut reader = Reader::new(&sealed, 0);
        while let Ok(rec) = reader.next_record() {
            let _ = replay.apply(&mut feeder.cache, &rec, selector & 64 != 0);
        }
        replay.finish(&mut feeder.cache);
        let mut rewritten = Vec::new();
        snapshot::rewrite(&feeder.cache, &mut Vec::new(), 64, |batch| {
            rewritten.append(batch);
            Ok(())
        })
        .expect("a snapshot into memory cannot fail");
        let mut reader = Reader::new(&rewritten, 0);
        let end = loop {
            if let Err(end) = reader.next_record() {
                break end;
            }
        };
        assert_eq!(end, End::Clean, "the snapshot does not decode");
        let mut replies = Vec::new();
        let _ = feeder.session(&[b"get a b c\r\nmg a v\r\nstats\r\n"], &mut replies);
        assert!(
            replies.starts_with(b"END\r\n") || replies.starts_with(b"VALUE "),
            "after replay a connection got {replies:?}"
        );
    }

    /// Every record the decoder accepts from arbitrary bytes re-encodes to
    /// the same bytes: the format has one spelling per record.
    fn records_round_trip(bytes: &[u8]) {
        let mut reader = Reader::new(bytes, 0);
        let mut again = Vec::new();
        loop {
            let start = reader.offset() as usize;
            let Ok(rec) = reader.next_record() else {
                return;
            };
            let end = reader.offset() as usize;
            again.clear();
            record::encode(&mut again, &rec);
            assert_eq!(again, &bytes[start..end], "{rec:?} re-encodes differently");
        }
    }

    /// Cuts `bytes` into bodies (a two-byte length, then that many bytes;
    /// the first byte's kind folded onto the four real kinds) and frames
    /// each with its true length and checksum.
    fn seal_bodies(mut bytes: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::with_capacity(bytes.len() + bytes.len() / 4);
        while bytes.len() >= 2 {
            let want = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
            let n = want.min(bytes.len() - 2);
            let mut body = bytes[2..2 + n].to_vec();
            bytes = &bytes[2 + n..];
            if let Some(kind) = body.first_mut() {
                *kind = 1 + *kind % 4;
            }
            sealed.extend_from_slice(&(body.len() as u32).to_le_bytes());
            sealed.extend_from_slice(&record::crc32c(&body).to_le_bytes());
            sealed.extend_from_slice(&body);
        }
        sealed
    }

    /// Like [`text`], but every line is turned into a meta command: the
    /// first byte of each line picks `mg`, `ms`, `md`, `ma`, `me` or `mn`,
    /// so the fuzzer spends its time on meta flags, not on finding names.
    pub fn meta(data: &[u8]) {
        const NAMES: [&[u8]; 6] = [b"mg ", b"ms ", b"md ", b"ma ", b"me ", b"mn"];
        let Some((&selector, body)) = data.split_first() else {
            return;
        };
        let mut stream = Vec::with_capacity(body.len() * 2);
        for line in body.split_inclusive(|&b| b == b'\n') {
            let Some((&pick, rest)) = line.split_first() else {
                continue;
            };
            stream.extend_from_slice(NAMES[usize::from(pick) % NAMES.len()]);
            stream.extend_from_slice(rest);
        }
        let mut probe = vec![selector];
        probe.extend_from_slice(&stream);
        text(&probe);
    }
}

#[cfg(test)]
mod tests {
    use super::{Ending, Feeder};
    use crate::settings::Settings;

    fn session(settings: Settings, reads: &[&[u8]]) -> (Vec<u8>, Ending) {
        let mut feeder = Feeder::new(settings).expect("loopback pair");
        let mut replies = Vec::new();
        let ending = feeder.session(reads, &mut replies).expect("a session");
        (replies, ending)
    }

    /// A value longer than a read buffer is read straight into its item,
    /// as the reactor reads it.
    #[test]
    fn a_large_value_is_read_into_its_item() {
        let value = vec![b'v'; 100_000];
        let block = [&value[..], b"\r\n"].concat();
        let reads: [&[u8]; 3] = [b"set big 0 0 100000\r\n", &block, b"get big\r\n"];
        let (replies, ending) = session(Settings::default(), &reads);
        let want = [
            &b"STORED\r\nVALUE big 0 100000\r\n"[..],
            &value,
            b"\r\nEND\r\n",
        ]
        .concat();
        assert_eq!(ending, Ending::Open);
        assert!(replies == want, "got {} bytes", replies.len());
    }

    /// Past its budget a turn yields, and the next goes on with what is
    /// buffered: every request is answered, in order.
    #[test]
    fn a_yielding_connection_answers_everything() {
        let settings = Settings {
            reqs_per_event: 1,
            ..Settings::default()
        };
        let mut read = Vec::new();
        let mut want = Vec::new();
        for i in 0..50 {
            read.extend_from_slice(
                format!("set k{i} 0 0 1\r\n{}\r\nget k{i}\r\n", i % 10).as_bytes(),
            );
            want.extend_from_slice(
                format!("STORED\r\nVALUE k{i} 0 1\r\n{}\r\nEND\r\n", i % 10).as_bytes(),
            );
        }
        let (replies, _) = session(settings, &[&read]);
        assert_eq!(
            String::from_utf8_lossy(&replies),
            String::from_utf8_lossy(&want)
        );
    }

    /// A metadump is written in full between turns; then the connection
    /// takes requests again.
    #[test]
    fn a_metadump_ends_and_requests_resume() {
        let reads: [&[u8]; 2] = [
            b"set a 0 0 1\r\na\r\n",
            b"lru_crawler metadump all\r\nget a\r\n",
        ];
        let (replies, _) = session(Settings::default(), &reads);
        let text = String::from_utf8_lossy(&replies);
        assert!(text.starts_with("STORED\r\nkey=a exp=-1 "), "{text}");
        assert!(
            text.ends_with("\nEND\r\nVALUE a 0 1\r\na\r\nEND\r\n"),
            "{text}"
        );
    }

    /// `quit` is answered after what came before it, then the connection
    /// closes: nothing after it runs.
    #[test]
    fn quit_writes_then_closes() {
        let reads: [&[u8]; 1] = [b"set q 0 0 1\r\nq\r\nquit\r\nget q\r\n"];
        let (replies, ending) = session(Settings::default(), &reads);
        assert_eq!(ending, Ending::Closed);
        assert_eq!(replies, b"STORED\r\n");
    }
}
