//! What the peer sends: records and link-control frames, read a bounded
//! amount per turn and applied in order.
//!
//! **Two-way and the conflict rule.** Writes on either node are applied
//! there, answered, and sent to the other. The master logs what it applies
//! from the replica into its own feed, so every change reaches the replica
//! in the master's order (the replica's own writes come back to it). A PUT
//! is applied only if the key has no live item with an equal or higher
//! CAS: CAS values are Lamport clocks (applying one moves the local counter
//! past it) and the master hands out odd values, the replica even ones, so
//! they never tie. For two writes to one key at once the one with the
//! higher CAS wins on both nodes; deletes, touches and flushes apply in the
//! master's order. Either way both nodes end with the same value and CAS.
//!
//! **During the replica's upload** (`copy.rs`) the master also weighs its
//! own tombstones (`crate::persist::tombs`): a key it holds no item for
//! but deleted after the write the replica sends stays deleted; and a TOMB
//! frame from the replica removes the master's item if the delete came
//! after it. Only then, in the steady state, do deletes simply apply in the
//! master's order.

use super::link::{
    KIND_ACK, KIND_AUTH, KIND_HELLO, KIND_RESYNC, KIND_SYNCED, KIND_TOMB, KIND_UPLOADED,
    control_frame, frame_len, tomb_frame,
};
use super::{BACKOFF_MIN, Ctx, Repl, Role};
use crate::persist::mutations;
use crate::persist::record::{self, Decoded, FRAME, Op};
use std::io::{self, Read};
use std::time::Instant;

const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from the peer per loop turn, so a fast peer (a full copy
/// arriving) cannot keep the loop from clients.
const READ_PER_TURN: usize = 1 << 20;

impl Repl {
    /// Reads and applies everything the peer has sent.
    pub(super) fn read(&mut self, ctx: &mut Ctx) -> io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut budget = READ_PER_TURN;
        loop {
            let Some(link) = self.link.as_mut() else {
                return Ok(());
            };
            if !link.readable || budget == 0 || self.held {
                return Ok(());
            }
            match link.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    link.input.extend_from_slice(&chunk[..n]);
                    link.last_heard = Instant::now();
                    self.apply_input(ctx)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    link.readable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies every whole frame in the link's input.
    pub(super) fn apply_input(&mut self, ctx: &mut Ctx) -> io::Result<()> {
        let mut input = std::mem::take(&mut self.link.as_mut().expect("link").input);
        let mut at = 0;
        let result = loop {
            let rest = &input[at..];
            if rest.len() < FRAME + 1 {
                break Ok(());
            }
            let total = FRAME + frame_len(rest);
            let trusted = self.link.as_ref().is_some_and(|l| l.trusted);
            if !trusted && rest[FRAME] != KIND_AUTH {
                break Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the peer did not authenticate",
                ));
            }
            if rest[FRAME] >= 0x80 {
                if rest.len() < total {
                    break Ok(());
                }
                let frame = &rest[..total];
                let done = if frame[FRAME] == KIND_TOMB {
                    self.tomb(frame, ctx)
                } else {
                    self.control(frame, ctx)
                };
                if let Err(e) = done {
                    break Err(e);
                }
                at += total;
                continue;
            }
            match record::decode(rest) {
                Decoded::Complete(rec, used) => {
                    self.apply(&rec, ctx);
                    at += used;
                }
                Decoded::Torn(_) => break Ok(()),
                Decoded::Corrupt { why, .. } => {
                    break Err(io::Error::new(io::ErrorKind::InvalidData, why));
                }
            }
        };
        input.drain(..at);
        if let Some(link) = self.link.as_mut() {
            link.input = input;
        }
        result
    }

    /// A link-control frame (HELLO, RESYNC, SYNCED, ACK).
    pub(super) fn control(&mut self, frame: &[u8], ctx: &mut Ctx) -> io::Result<()> {
        let Some((kind, value)) = control_frame(frame) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad control frame",
            ));
        };
        let role = self.role;
        let own_id = self.node_id;
        let secret = self.secret;
        let link = self.link.as_mut().expect("a link is up");
        match (kind, role) {
            (KIND_AUTH, _) if !link.trusted && Some(value) == secret => {
                link.trusted = true;
                return Ok(());
            }
            (KIND_AUTH, _) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the peer's authfile differs",
                ));
            }
            (KIND_HELLO, Role::Master) if value == own_id => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "-x names this server itself",
                ));
            }
            (KIND_HELLO, Role::Master) if !link.joined => {
                // What the replica holds comes first (see `copy.rs`).
                link.joined = true;
                ctx.cache.set_cas_lane(true);
                self.log("receiving what the replica holds");
            }
            (KIND_UPLOADED, Role::Master) if link.joined && !link.streaming => {
                link.streaming = true;
                self.start_copy(ctx.cache);
            }
            (KIND_RESYNC, Role::Replica) => {
                // Our own writes not yet sent go first: the master will
                // apply them and send them back after the copy.
                self.collect_feed(ctx.cache);
                ctx.cache.wipe();
                self.replay.reset();
                self.resyncs += 1;
                self.log("receiving a full copy");
                if let Some(link) = &mut self.link {
                    link.synced = false;
                    link.copy = None;
                }
            }
            (KIND_SYNCED, Role::Replica) => {
                // The copy replaced the cache; the wipe before it is in no
                // file: a rewrite makes the file describe the cache again.
                mutations::request_snapshot(ctx.cache);
                link.synced = true;
                self.backoff = BACKOFF_MIN;
                self.log("in sync");
            }
            (KIND_ACK, _) => {
                // The lag it changes is published every turn.
                link.acked = value;
                return Ok(());
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected frame",
                ));
            }
        }
        self.publish(ctx);
        Ok(())
    }

    /// One record from the peer, under the conflict rule.
    pub(super) fn apply(&mut self, rec: &record::Record<'_>, ctx: &mut Ctx) {
        // The replica's own writes so far go to the master before this
        // record's effects enter the feed.
        let replica = self.role == Role::Replica;
        if replica {
            self.collect_feed(ctx.cache);
        }
        // Master, while the replica sends what it holds: a key we have no
        // item for but deleted after the write it sends stays deleted.
        let uploading = !replica && self.link.as_ref().is_some_and(|l| !l.streaming);
        let older = match rec.op {
            Op::Put(p) if p.cas != 0 => match ctx.cache.cas_of(p.key) {
                Some(c) => c >= p.cas,
                None => {
                    uploading
                        && mutations::tombstones(ctx.cache)
                            .and_then(|t| t.cas_of(p.key))
                            .is_some_and(|t| t >= p.cas)
                }
            },
            _ => false,
        };
        if !older {
            self.replay.apply(ctx.cache, rec, true);
        }
        let feed_len = mutations::len(ctx.cache);
        if let Some(link) = &mut self.link {
            link.applied += 1;
        }
        if replica {
            // What the master sent is not sent back to it.
            self.feed_mark = feed_len;
        }
    }

    /// Master, during the replica's upload: a key the replica deleted (and
    /// holds no item for). Our item goes if the delete came after it (its
    /// CAS is at or below the tombstone's stamp); a newer item stays.
    fn tomb(&mut self, frame: &[u8], ctx: &mut Ctx) -> io::Result<()> {
        let Some((cas, key)) = tomb_frame(frame) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad tombstone"));
        };
        let uploading = self.link.as_ref().is_some_and(|l| l.joined && !l.streaming);
        if self.role != Role::Master || !uploading {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected tombstone",
            ));
        }
        ctx.cache.observe_cas(cas);
        // Our own deletes from now on sort after the peer's.
        mutations::catch_up(ctx.cache);
        if ctx.cache.cas_of(key).is_some_and(|c| c != 0 && c <= cas) {
            let rec = record::Record {
                ts: ctx.cache.unix_now(),
                op: Op::Delete { key, stamp: None },
            };
            self.replay.apply(ctx.cache, &rec, true);
        }
        Ok(())
    }
}
