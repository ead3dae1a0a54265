//! Framing for ascii connections: the `-Y` gate until the client has
//! authenticated, then request lines, found where they were read (a line
//! arriving in many reads is scanned once) and handed to `proto::text`;
//! how long a line may grow before the connection is refused.

use super::conn::{BatchEnd, Conn, Event, writes_now};
use crate::proto::auth::GateStep;
use crate::proto::find_byte;
use crate::proto::request::{Ctx, Next};
use crate::proto::text;

/// A line longer than this without a newline closes the connection,
/// unless it is a multi-key get.
const LINE_LIMIT: usize = 2048;
/// The longest multi-key get line accepted, to keep memory bounded.
const GET_LINE_LIMIT: usize = 8 * 1024 * 1024;

impl Conn {
    /// One ascii request from `data[at..]`: the authentication gate's, or a
    /// request line. Returns the bytes it took and, if the batch ends
    /// here, why.
    pub(super) fn text_request(
        &mut self,
        ctx: &mut Ctx,
        data: &[u8],
        at: usize,
        budget: &mut usize,
    ) -> (usize, Option<BatchEnd>) {
        let v = ctx.settings.verbose;
        let rest = &data[at..];
        if let Some(gate) = self.auth.as_mut() {
            return match gate.consume(ctx, rest, &mut self.out, self.out_pos) {
                (used, GateStep::Answered) => {
                    *budget -= 1;
                    if gate.open {
                        self.auth = None;
                    }
                    (used, None)
                }
                (used, GateStep::NeedInput) => {
                    self.wait_for_input(ctx, used < rest.len(), *budget);
                    (used, Some(BatchEnd::NeedInput))
                }
                (_, GateStep::Close) => {
                    self.on(Event::Junk, v);
                    (0, Some(BatchEnd::Close))
                }
            };
        }
        let scanned = self.line_scanned.min(rest.len());
        let Some(nl) = find_byte(b'\n', &rest[scanned..]).map(|i| i + scanned) else {
            self.line_scanned = rest.len();
            if rest.len() > LINE_LIMIT && !may_grow_line(rest) {
                self.on(Event::Parsing, v);
                self.on(Event::Junk, v);
                return (0, Some(BatchEnd::Close));
            }
            self.wait_for_input(ctx, !rest.is_empty(), *budget);
            return (0, Some(BatchEnd::NeedInput));
        };
        let resume = self.keys_done();
        ctx.rerun = self.is_paused();
        self.on(Event::Parsing, v);
        self.line_scanned = 0;
        // memcached's last_cmd_time, which `-o idle_timeout` and `stats
        // conns` measure from.
        self.last_active = ctx.cache.now();
        let mut line = &rest[..nl];
        if line.len() > 1 && line[line.len() - 1] == b'\r' {
            line = &line[..line.len() - 1];
        }
        *budget -= 1;
        if !take_response(ctx) {
            if v > 1 {
                trace_line(ctx.fd, line);
            }
            self.on(Event::Junk, v);
            return (0, Some(BatchEnd::Close));
        }
        text::prefetch_next_get(ctx.cache, &rest[nl + 1..]);
        let before = self.out.len();
        let next = text::process_line(ctx, line, &mut self.out, self.flush_mark, resume);
        if let Next::Suspend(_) | Next::AwaitExt(_) = next {
            // The line stays, to run again.
            self.on(Event::Handled(next), ctx.settings.verbose);
            let end = match next {
                Next::AwaitExt(_) => BatchEnd::AwaitIo,
                _ => BatchEnd::Blocked,
            };
            return (0, Some(end));
        }
        self.mark(at, before, writes_now(next));
        (nl + 1, self.handled(ctx, next))
    }
}

/// Takes the response object every request needs (see
/// [`crate::proto::request::resp_cap`]); false if none is left, which
/// memcached counts and answers by closing the connection.
pub(super) fn take_response(ctx: &mut Ctx) -> bool {
    if ctx.resp_room == 0 {
        ctx.stats.response_obj_oom += 1;
        return false;
    }
    ctx.resp_room -= 1;
    true
}

/// memcached's `-vv` trace of a request line, printed before it looks
/// for a response object.
fn trace_line(fd: i32, line: &[u8]) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "<{fd} ");
    let _ = err.write_all(line);
    let _ = err.write_all(b"\n");
}

/// memcached keeps reading a long line only if it is a multi-key get.
fn may_grow_line(rest: &[u8]) -> bool {
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    let body = &rest[spaces..];
    spaces <= 100
        && (body.starts_with(b"get ") || body.starts_with(b"gets "))
        && rest.len() <= GET_LINE_LIMIT
}
