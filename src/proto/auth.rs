//! ASCII authentication (`-Y authfile`), as memcached 1.6 has it.
//!
//! The pairs come from the authfile (`authfile.rs`). Until a
//! connection has authenticated, every request line must look like a `set`
//! whose data block is "user password": the key, flags and TTL are
//! ignored, only the byte count matters. Anything else is answered with
//! `CLIENT_ERROR unauthenticated` and the connection stays open; a right
//! pair gets `STORED` and the connection is served normally from then on.

use super::request::{Ctx, Reply};
use super::tokens::Tokens;
use crate::numbers::safe_strtoul;

/// An auth line without a newline past this many bytes closes the
/// connection (memcached: "getting junk data").
const AUTH_LINE_LIMIT: usize = 2048;
/// How much of a credentials data block is kept for checking. Entries are
/// shorter than 256 bytes, so a longer block can only fail; its bytes are
/// still consumed (without being kept) so the stream stays in step.
const PAYLOAD_KEPT: usize = 1024;

/// What a connection that has not authenticated yet is doing.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Valid credentials arrived: from now on requests go to the protocol
    /// (the connection then drops its gate).
    pub(crate) open: bool,
    /// Reading the data block of a credentials `set`.
    payload: Option<Payload>,
    /// Where the last reply starts in the output and where it ends. memcached
    /// answers every unauthenticated request in the same response object
    /// until that is written out, so a reply replaces the one before it
    /// when both come from one batch of input: pipelined, only the last
    /// answer arrives.
    last_reply: Option<(usize, usize)>,
    /// How much of the output the client has been sent (set per call).
    sent: usize,
}

#[derive(Debug)]
struct Payload {
    /// Bytes of the block still to come, its CRLF included.
    left: u64,
    /// The first `PAYLOAD_KEPT` bytes of the block's value.
    kept: Vec<u8>,
    /// The last two bytes seen, which must be CRLF.
    tail: [u8; 2],
}

/// What the gate did with the input it was offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GateStep {
    /// Nothing complete yet: more bytes are needed.
    NeedInput,
    /// One request was answered.
    Answered,
    /// Junk: close the connection.
    Close,
}

impl Gate {
    /// Takes what it can from `data` (the start of the unparsed input);
    /// returns the bytes used and what happened. `out[..sent]` has been
    /// written to the client already.
    pub(crate) fn consume(
        &mut self,
        ctx: &mut Ctx,
        data: &[u8],
        out: &mut Vec<u8>,
        sent: usize,
    ) -> (usize, GateStep) {
        self.sent = sent;
        if self.payload.is_some() {
            return self.read_payload(ctx, data, out);
        }
        // memcached waits for two bytes: no auth command is shorter.
        if data.len() < 2 {
            return (0, GateStep::NeedInput);
        }
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            let step = if data.len() > AUTH_LINE_LIMIT {
                GateStep::Close
            } else {
                GateStep::NeedInput
            };
            return (0, step);
        };
        // memcached leaves the CR in: the byte count then ends with it,
        // which its number parser accepts as trailing white space.
        let line = c_string(&data[..nl]);
        let t = Tokens::new(line);
        let size = (t.ntokens() >= 6 && t.get(0) == b"set")
            .then(|| safe_strtoul(t.get(4)))
            .flatten();
        let Some(size) = size else {
            self.reply(ctx, out, "CLIENT_ERROR unauthenticated");
            return (nl + 1, GateStep::Answered);
        };
        self.payload = Some(Payload {
            left: u64::from(size) + 2,
            kept: Vec::new(),
            tail: [0; 2],
        });
        let (used, step) = self.read_payload(ctx, &data[nl + 1..], out);
        (nl + 1 + used, step)
    }

    fn read_payload(&mut self, ctx: &mut Ctx, data: &[u8], out: &mut Vec<u8>) -> (usize, GateStep) {
        let Some(p) = &mut self.payload else {
            return (0, GateStep::NeedInput);
        };
        let n = data
            .len()
            .min(usize::try_from(p.left).unwrap_or(usize::MAX));
        let chunk = &data[..n];
        // Keep value bytes only (not the CRLF), and only the first few.
        let value_left = usize::try_from(p.left - 2.min(p.left)).unwrap_or(usize::MAX);
        let room = PAYLOAD_KEPT
            .saturating_sub(p.kept.len())
            .min(n)
            .min(value_left);
        p.kept.extend_from_slice(&chunk[..room]);
        for &b in chunk.iter().rev().take(2).rev() {
            p.tail = [p.tail[1], b];
        }
        p.left -= n as u64;
        if p.left > 0 {
            return (n, GateStep::NeedInput);
        }
        let (kept, tail) = (std::mem::take(&mut p.kept), p.tail);
        self.payload = None;
        self.judge(ctx, &kept, tail, out);
        (n, GateStep::Answered)
    }

    /// Appends `text`, replacing the previous reply if it is still the
    /// unsent end of `out` (see `last_reply`).
    fn reply(&mut self, ctx: &mut Ctx, out: &mut Vec<u8>, text: &str) {
        if let Some((start, end)) = self.last_reply
            && end == out.len()
            && start >= self.sent
        {
            out.truncate(start);
        }
        let start = out.len();
        let mut r = Reply {
            out,
            written: start,
            noreply: false,
            trace: ctx.settings.verbose > 1,
            fd: ctx.fd,
        };
        r.line(text);
        self.last_reply = Some((start, out.len()));
    }

    /// The reply to a complete credentials block.
    fn judge(&mut self, ctx: &mut Ctx, block: &[u8], tail: [u8; 2], out: &mut Vec<u8>) {
        if tail != *b"\r\n" {
            self.reply(ctx, out, "CLIENT_ERROR bad command line termination");
            return;
        }
        let t = Tokens::new(c_string(block));
        if t.ntokens() < 3 {
            self.reply(ctx, out, "CLIENT_ERROR bad authentication token format");
            return;
        }
        ctx.stats.auth_cmds += 1;
        let known = ctx
            .settings
            .auth
            .as_ref()
            .is_some_and(|c| c.check(t.get(0), t.get(1)));
        if known {
            self.open = true;
            self.reply(ctx, out, "STORED");
        } else {
            ctx.stats.auth_errors += 1;
            self.reply(ctx, out, "CLIENT_ERROR authentication failure");
        }
    }
}

/// memcached handles the line as a C string: it ends at the first NUL.
fn c_string(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => &bytes[..n],
        None => bytes,
    }
}
