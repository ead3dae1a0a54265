//! Candidates: newcomers on the replication port while the link is alive.
//!
//! **Who may take the link.** A connection to the listener while no live
//! link exists becomes the link at once. While one is alive, a newcomer is
//! a candidate: heard only until its first frame, which must be the
//! authfile digest under `-Y` (else HELLO), and only then put in the
//! link's place; anything else, or silence, gets it closed.

use super::link::{KIND_AUTH, KIND_HELLO, Link, Wire, control_frame, frame_len};
use super::{Ctx, Repl};
use crate::persist::record::FRAME;
use std::io::{self, Read};
use std::os::fd::RawFd;

/// Connections waiting to prove themselves, at most; more are closed.
const MAX_CANDIDATES: usize = 4;
/// What a candidate may send before its first frame is complete.
const CANDIDATE_INPUT_MAX: usize = 4096;

impl Repl {
    /// A connection to the listener while the link is alive. Taking every
    /// newcomer as the peer would let anything that reaches the port (a
    /// scanner, a client at the wrong port, a stranger under `-Y`) cut the
    /// pair apart; a restarted peer, though, must get in even before the
    /// old link times out. So the newcomer is heard until its first frame,
    /// which must be what a joining peer sends first (our authfile's
    /// digest under `-Y`, else HELLO), and only then replaces the link.
    pub(super) fn add_candidate(&mut self, stream: Wire, ctx: &mut Ctx) {
        if self.candidates.len() >= MAX_CANDIDATES {
            return self.log("refused a connection: too many waiting to prove themselves");
        }
        // Our own proof goes out at once, as on any link: the peer checks
        // it before it trusts what we send.
        let candidate = Link::new(stream, false, self.secret);
        let fd = candidate.fd;
        self.candidates.push(candidate);
        if ctx.sockets.watch(fd, false).is_err() {
            return self.drop_candidate(fd, "cannot watch its socket", ctx);
        }
        if let Some(c) = self.candidates.last_mut()
            && c.flush().is_err()
        {
            let why = candidate_failure(c);
            self.drop_candidate(fd, &why, ctx);
        }
    }

    pub(super) fn drop_candidate(&mut self, fd: RawFd, why: &str, ctx: &mut Ctx) {
        self.candidates.retain(|c| c.fd != fd);
        self.log(&format!("refused a connection: {why}"));
        ctx.sockets.forget(fd);
    }

    /// Reads a candidate's first frame; promotes it to the link if it is
    /// the peer's.
    pub(super) fn candidate_read(&mut self, i: usize, ctx: &mut Ctx) {
        let secret = self.secret;
        let c = &mut self.candidates[i];
        let fd = c.fd;
        let mut chunk = [0u8; 512];
        while c.readable && c.input.len() < CANDIDATE_INPUT_MAX {
            match c.stream.read(&mut chunk) {
                Ok(0) => return self.drop_candidate(fd, "it closed", ctx),
                Ok(n) => c.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let why = candidate_failure(c);
                    return self.drop_candidate(fd, &why, ctx);
                }
            }
        }
        let first = c.input.get(..FRAME).map(|h| FRAME + frame_len(h));
        let Some(end) = first.filter(|&end| end <= c.input.len()) else {
            if c.input.len() >= CANDIDATE_INPUT_MAX {
                self.drop_candidate(fd, "its first frame is too long", ctx);
            }
            return;
        };
        let proved = match (control_frame(&c.input[..end]), secret) {
            (Some((KIND_AUTH, value)), Some(secret)) => value == secret,
            (Some((KIND_HELLO, _)), None) => true,
            _ => false,
        };
        if !proved {
            return self.drop_candidate(fd, "it is not the peer", ctx);
        }
        let c = self.candidates.remove(i);
        self.drop_link("the peer connected again", ctx);
        self.link = Some(c);
        self.log("replica connected");
        // The frames already read (the proof, HELLO) go the usual way.
        if let Err(e) = self.apply_input(ctx) {
            return self.read_failed(e, ctx);
        }
        if let Err(e) = self.read(ctx) {
            return self.read_failed(e, ctx);
        }
        self.flush(ctx);
        self.publish(ctx);
    }
}

/// Why a candidate's socket failed: its TLS session's reason, if that is
/// what broke.
fn candidate_failure(c: &Link) -> String {
    match c.stream.tls_failure() {
        Some(why) => format!("TLS failed: {why}"),
        None => "it went away".to_string(),
    }
}
