//! Framing for binary-protocol connections: find whole requests (header,
//! extras and key) in the input and hand them to `proto::binary`; values
//! and discarded bodies are read with the states the ascii protocol uses.

use super::conn::{BatchEnd, Conn, Event, READ_SIZE, writes_now};
use crate::proto::binary::{self, HEADER_LEN, REQUEST_MAGIC};
use crate::proto::request::{Ctx, Next};

impl Conn {
    /// One binary request from `data[at..]`. Returns the bytes it took
    /// and, if the batch ends here, why.
    pub(super) fn binary_request(
        &mut self,
        ctx: &mut Ctx,
        data: &[u8],
        at: usize,
        budget: &mut usize,
    ) -> (usize, Option<BatchEnd>) {
        let v = ctx.settings.verbose;
        let rest = &data[at..];
        // A request run again after its flash read was traced the first time.
        let traced = self.awaits_ext();
        if !rest.is_empty() {
            self.on(Event::Parsing, v);
        }
        match self.next_frame(ctx, rest, traced) {
            Ok(Some(len)) => {
                *budget -= 1;
                if !super::text_conn::take_response(ctx) {
                    self.on(Event::Junk, v);
                    return (0, Some(BatchEnd::Close));
                }
                let before = self.out.len();
                ctx.rerun = self.is_paused();
                let next = binary::process(ctx, &mut self.bin, &rest[..len], &mut self.out);
                if let Next::AwaitExt(_) = next {
                    // The frame stays, to run again once the value is read.
                    return (0, self.handled(ctx, next));
                }
                if !matches!(next, Next::ReadValue(_)) {
                    self.mark(at, before, writes_now(next));
                }
                (len, self.handled(ctx, next))
            }
            Ok(None) => {
                self.wait_for_input(ctx, !rest.is_empty(), *budget);
                (0, Some(BatchEnd::NeedInput))
            }
            Err(()) => {
                self.on(Event::Junk, v);
                (0, Some(BatchEnd::Close))
            }
        }
    }

    /// The length of the complete request frame at the start of `rest`, if
    /// there is one; an error if the connection must close (bad magic, or
    /// a frame larger than memcached's read buffer can ever hold).
    fn next_frame(&self, ctx: &Ctx, rest: &[u8], traced: bool) -> Result<Option<usize>, ()> {
        if rest.len() < HEADER_LEN {
            return Ok(None);
        }
        if ctx.settings.verbose > 1 && !traced {
            binary::trace_request_header(self.fd, rest);
        }
        let header = binary::Header::parse(rest);
        if header.magic != REQUEST_MAGIC {
            if ctx.settings.verbose > 0 {
                eprintln!("Invalid magic:  {:x}", header.magic);
            }
            return Err(());
        }
        let len = header.frame_len();
        if len > READ_SIZE {
            return Err(());
        }
        Ok((rest.len() >= len).then_some(len))
    }
}
