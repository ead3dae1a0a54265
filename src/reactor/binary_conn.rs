//! Framing for binary-protocol connections: find whole requests (header,
//! extras and key) in the input, hand them to `proto::binary`, and read
//! values and discarded bodies with the same states the ascii protocol uses.

use super::conn::{Conn, Phase, READ_SIZE, State, Stop};
use crate::proto::binary::{self, HEADER_LEN, REQUEST_MAGIC};
use crate::proto::request::{Ctx, Next};

impl Conn {
    /// `consume` for a binary connection.
    pub(super) fn consume_binary(
        &mut self,
        ctx: &mut Ctx,
        data: &[u8],
        budget: &mut usize,
    ) -> (usize, Stop) {
        let mut pos = 0;
        let v = ctx.settings.verbose;
        loop {
            match &mut self.state {
                State::Closing => return (pos, Stop::Close),
                State::Watch => return (data.len(), Stop::NeedInput),
                State::Swallow(_) => {
                    pos += self.swallow(&data[pos..], v);
                    if matches!(self.state, State::Swallow(_)) {
                        return (pos, Stop::NeedInput);
                    }
                }
                State::Value { .. } => {
                    let mark = self.flush_mark;
                    pos += self.fill_value(ctx, &data[pos..]);
                    if matches!(self.state, State::Value { .. }) {
                        return (pos, Stop::NeedInput);
                    }
                    // An error reply is written at once.
                    if self.flush_mark != mark {
                        self.go(Phase::Mwrite, v);
                    }
                    self.go(Phase::NewCmd, v);
                }
                State::Cmd => {
                    if self.blocked_on_output() {
                        return (pos, Stop::Blocked);
                    }
                    if *budget == 0 {
                        return (pos, Stop::Budget);
                    }
                    let rest = &data[pos..];
                    if !rest.is_empty() {
                        self.go(Phase::ParseCmd, v);
                    }
                    match self.next_frame(ctx, rest) {
                        Ok(Some(len)) => {
                            *budget -= 1;
                            let before = self.out.len();
                            let next =
                                binary::process(ctx, &mut self.bin, &rest[..len], &mut self.out);
                            if !matches!(next, Next::ReadValue(_)) {
                                let wrote = matches!(next, Next::Flush | Next::FlushAfterLine);
                                self.mark(pos, before, wrote);
                            }
                            pos += len;
                            self.trace_binary_next(next, v);
                            if matches!(next, Next::Flush | Next::FlushAfterLine) {
                                // Written out now: fetched items are free
                                // to change in place again.
                                ctx.cache.unpin_all();
                            }
                            if let Some(stop) = self.apply(next) {
                                return (pos, stop);
                            }
                        }
                        Ok(None) => {
                            self.go_wait(!rest.is_empty(), *budget, ctx);
                            return (pos, Stop::NeedInput);
                        }
                        Err(()) => {
                            self.state = State::Closing;
                            self.go(Phase::Closing, v);
                            return (pos, Stop::Close);
                        }
                    }
                }
            }
        }
    }

    /// The length of the complete request frame at the start of `rest`, if
    /// there is one; an error if the connection must close (bad magic, or
    /// a frame larger than memcached's read buffer can ever hold).
    fn next_frame(&self, ctx: &Ctx, rest: &[u8]) -> Result<Option<usize>, ()> {
        if rest.len() < HEADER_LEN {
            return Ok(None);
        }
        if ctx.settings.verbose > 1 {
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

    /// memcached's state after a binary request, for the `-vvv` trace.
    fn trace_binary_next(&mut self, next: Next, v: u8) {
        match next {
            Next::ReadValue(_) => self.go(Phase::Nread, v),
            Next::Swallow(_) => self.go(Phase::Swallow, v),
            Next::Flush => {
                self.go(Phase::Mwrite, v);
                self.go(Phase::NewCmd, v);
            }
            Next::FlushAfterLine => {
                self.go(Phase::NewCmd, v);
                self.go(Phase::Mwrite, v);
                self.go(Phase::NewCmd, v);
            }
            Next::CloseAfterWrite => {
                if self.bin.closing == binary::Closing::Quit {
                    self.close_reason = crate::logger::CloseReason::Normal;
                    self.go(Phase::NewCmd, v);
                }
                self.go(Phase::Mwrite, v);
                self.bin.take_closing(self.fd, v);
                // After writing, memcached's close passes through here.
                self.go(Phase::NewCmd, v);
            }
            Next::Close => self.go(Phase::Closing, v),
            _ => self.go(Phase::NewCmd, v),
        }
    }
}
