//! What every protocol shares with the connection that runs it: the
//! request context (`Ctx`), the storage command left waiting for its data
//! block (`Pending`), what the connection does next (`Next`), the ascii
//! reply writer (`Reply`) and the small rules every parser applies the
//! same way (key length, negative expiry, `noreply`, the output bound).
//!
//! The parsers (`text.rs`, `meta.rs`, `binary.rs`, `auth.rs`, `tuning.rs`,
//! `watch.rs`) import this file and nothing imports them back, so a
//! protocol can be read, or changed, without the others.

use super::tokens::Tokens;
use crate::items::clock::REALTIME_MAXDELTA;
use crate::items::{Cache, StoreMode};
use crate::settings::Settings;
use crate::slab::ChunkRef;
use crate::stats::Stats;

/// memcached's `KEY_MAX_LENGTH`: a longer key is a bad command.
pub(crate) const KEY_MAX_LENGTH: usize = 250;
/// Output above this pauses a multi-key get until the client reads, so a
/// client that never reads cannot make the server buffer without bound.
pub(crate) const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// memcached's `MFLAG_MAX_OPAQUE_LENGTH`, counting the `O`: the longest
/// opaque token an `ms` echoes.
pub(super) const MAX_OPAQUE: usize = 32;

/// What one request needs from the rest of the server.
pub(crate) struct Ctx<'a> {
    pub(crate) cache: &'a mut Cache,
    pub(crate) stats: &'a mut Stats,
    pub(crate) settings: &'a mut Settings,
    /// The connection's descriptor, for `-vv` traces.
    pub(crate) fd: i32,
    /// How many more response objects the connection may take before its
    /// replies are next written (see [`resp_cap`]); `usize::MAX` without
    /// `-o read_buf_mem_limit`.
    pub(crate) resp_room: usize,
    /// The request runs again (a paused get, or one that waited for
    /// flash): what it traced the first time is not traced again.
    pub(crate) rerun: bool,
    /// `-Z`'s context, for `refresh_certs` (set for client connections).
    pub(crate) tls: Option<&'a mut crate::tls::Server>,
}

impl<'a> Ctx<'a> {
    /// A connection's context, with no response objects charged yet (the
    /// batch sets its room from `resp_cap` when it starts).
    pub(crate) fn new(
        cache: &'a mut Cache,
        stats: &'a mut Stats,
        settings: &'a mut Settings,
        fd: i32,
    ) -> Ctx<'a> {
        Ctx {
            cache,
            stats,
            settings,
            fd,
            resp_room: usize::MAX,
            rerun: false,
            tls: None,
        }
    }
}

/// memcached's response objects held in one 16 KB buffer
/// (`MAX_RESP_PER_BUNDLE`, measured on Debian's build).
const RESPS_PER_BUFFER: usize = 13;
/// memcached's `READ_BUFFER_SIZE`: the unit its buffer pool counts in.
const BUFFER_SIZE: usize = 16 * 1024;

/// The response objects a connection may hold between two writes under
/// `-o read_buf_mem_limit`.
///
/// memcached answers every request with a response object (one per key
/// of a multi-key get) taken from its worker thread's pool of 16 KB
/// buffers, `max(1, limit / threads / 16 KB)` of them, 13 objects each,
/// and gives them back once the replies are written. A connection running
/// requests holds one of those buffers for its input, so a client alone
/// on its thread has the rest: a get of more keys than that is refused
/// with `SERVER_ERROR out of memory writing get response`, and a request
/// finding none left closes the connection. This server charges each
/// connection as if it were alone on its worker thread (clients sharing
/// one in memcached may find less).
pub(crate) fn resp_cap(settings: &Settings) -> usize {
    let limit = settings.read_buf_mem_limit;
    if limit == 0 {
        return usize::MAX;
    }
    let buffers = (limit / settings.num_threads.max(1) / BUFFER_SIZE).max(1);
    (buffers - 1) * RESPS_PER_BUFFER
}

/// A storage command waiting for its data block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    pub(crate) item: ChunkRef,
    pub(crate) mode: StoreMode,
    pub(crate) cas: u64,
    pub(crate) noreply: bool,
    pub(crate) nbytes: usize,
    /// For `ms`: what its reply echoes back.
    pub(crate) meta: Option<SetEcho>,
}

/// What an `ms` reply echoes, kept while its data block is read: the
/// `O`, `k` and `c` flags in request order, and the opaque token. It rides
/// in `Pending` so the connection can hold it without knowing the meta
/// protocol; only `meta.rs` fills and reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SetEcho {
    pub(super) quiet: bool,
    /// `I` on a CAS store: an older CAS stores a stale value.
    pub(super) stale: bool,
    pub(super) order: [u8; 3],
    pub(super) opaque: [u8; MAX_OPAQUE],
    pub(super) opaque_len: u8,
}

/// What the connection does after a request: every protocol's parser
/// returns one, and the connection's state machine (`reactor/conn.rs`)
/// acts on it. Only the parsers decide; the connection only carries out.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Next {
    Continue,
    /// Done, and memcached would write its replies out at this point
    /// (after a retrieval or `mn`); matters when the connection closes
    /// before the next write point.
    Flush,
    /// `mn`: like `Flush`, but memcached first passes through its
    /// new-command state (its reply went through `out_string`), which the
    /// `-vvv` trace shows.
    FlushAfterLine,
    /// Read the data block into `Pending::item`, then its CRLF.
    ReadValue(Pending),
    /// Discard this many bytes of input (a refused data block).
    Swallow(usize),
    /// Close now, sending nothing more.
    Close,
    /// Close once pending replies are written (`quit`).
    CloseAfterWrite,
    /// Stop the server (`shutdown` with `-A`); true for `shutdown graceful`.
    Shutdown(bool),
    /// `lru_crawler metadump` started: the connection takes no requests
    /// until the crawler has written the dump.
    Dump,
    /// `stats conns`: the reactor appends the report, which needs every
    /// connection.
    StatsConns,
    /// `watch` was accepted: the connection is a log stream from now on
    /// (the reactor writes it; input is ignored).
    Watch,
    /// A get paused after this many keys; run the same line again with
    /// `resume` set once output has drained.
    Suspend(usize),
    /// The value of the key after this many is being read from flash: run
    /// the same request again from there once it has come (memcached's
    /// conn_io_queue).
    AwaitExt(usize),
}

/// The answer to a mutation while the append-only file is failing (see
/// `persist/health.rs`), in the ascii and meta protocols; the binary
/// protocol answers status 0x0084 (internal error) with [`REFUSED_TEXT`].
pub(crate) const WRITES_REFUSED: &str = "SERVER_ERROR aof write failed; writes refused";
pub(crate) const REFUSED_TEXT: &str = "aof write failed; writes refused";

/// Where an ascii reply goes, and how memcached would have sent it.
pub(super) struct Reply<'o> {
    pub(super) out: &'o mut Vec<u8>,
    /// Length of `out` at memcached's last write point.
    pub(super) written: usize,
    pub(super) noreply: bool,
    pub(super) trace: bool,
    pub(super) fd: i32,
}

impl Reply<'_> {
    /// memcached's `out_string`: a line, unless the command said noreply.
    pub(super) fn line(&mut self, s: &str) -> Next {
        if self.noreply {
            if self.trace {
                eprintln!(">{} NOREPLY {}", self.fd, s);
            }
            self.noreply = false;
            return Next::Continue;
        }
        if self.trace {
            eprintln!(">{} {}", self.fd, s);
        }
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        Next::Continue
    }
}

impl Reply<'_> {
    /// A mutation refused while the append-only file is failing: an error,
    /// sent even under noreply (as memcached's `out_errstring` is).
    pub(super) fn refused(&mut self) -> Next {
        self.noreply = false;
        self.line(WRITES_REFUSED)
    }
}

/// memcached's `set_noreply_maybe`: a last token `noreply` silences the
/// command's reply line.
pub(super) fn set_noreply_maybe(t: &Tokens, r: &mut Reply) -> bool {
    if t.last() == b"noreply" {
        r.noreply = true;
    }
    r.noreply
}

/// memcached's `EXPTIME_TO_POSITIVE_TIME`: negative means "already expired",
/// expressed as an absolute time in the past.
pub(super) fn positive_exptime(e: i32) -> i64 {
    if e < 0 {
        REALTIME_MAXDELTA + 1
    } else {
        e as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(limit_mb: usize, threads: usize) -> usize {
        let settings = Settings {
            read_buf_mem_limit: limit_mb << 20,
            num_threads: threads,
            ..Settings::default()
        };
        resp_cap(&settings)
    }

    #[test]
    fn resp_cap_follows_memcached_pools() {
        // Measured on Debian's memcached: a get fails first at 14 keys with
        // -t 32 and at 196 with -t 4 (1 MB).
        assert_eq!(cap(1, 32), 13);
        assert_eq!(cap(1, 4), 195);
        // One buffer per thread is the read buffer's: nothing is left.
        assert_eq!(cap(1, 64), 0);
        assert_eq!(cap(1, 1000), 0);
        assert_eq!(cap(0, 4), usize::MAX);
    }
}
