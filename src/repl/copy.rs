//! The replica's upload, the full copy a replica starts from, and the
//! bound on what may wait for the peer.
//!
//! **Upload, so a heal loses nothing.** A node joining as replica may hold
//! writes the master never saw (both took writes while apart). Before the
//! master's copy replaces its data, it sends its tombstones for keys it no
//! longer holds (`crate::persist::tombs`), then walks its own arena exactly
//! as the master's copy does, then UPLOADED. The master applies all of it under
//! the conflict rule (`receive.rs`) and answers UPLOADED with RESYNC: the
//! wipe that follows loses nothing the master does not now hold or
//! supersede.
//!
//! **Full copy.** On UPLOADED, and whenever the replica falls too far behind,
//! the master sends RESYNC and walks its arena a bounded batch per loop
//! turn (`crate::persist::snapshot`), only while less than a megabyte is
//! waiting for the socket, so clients are never stalled and memory stays
//! bounded.
//! Mutations made meanwhile go into the same ordered channel after the
//! items already sent; an item the walk reaches later is sent as it then
//! is.
//!
//! **Bounded buffering.** More than `MAX_BUFFER` bytes waiting for a slow
//! replica make the master drop them (after the record being written) and
//! start a fresh full copy on the same connection; a replica whose master
//! does not keep up closes the link and rejoins.

use super::link::{COPY_LOW_WATER, KIND_RESYNC, KIND_SYNCED, KIND_UPLOADED};
use super::{BACKOFF_MIN, Ctx, Repl, Role};
use crate::items::Cache;
use crate::persist::mutations;
use crate::persist::snapshot::SnapshotCursor;

/// The most that may wait for a peer before it is resynced (or, for a
/// replica, before the link is dropped); at least four of the largest
/// items.
pub(super) const MAX_BUFFER: usize = 64 << 20;
/// Arena chunks the full copy looks at per loop turn.
const COPY_STEP: usize = 4096;

impl Repl {
    /// Master: RESYNC, then the arena walk from the start.
    pub(super) fn start_copy(&mut self, cache: &mut Cache) {
        // The copy covers everything changed before it starts.
        self.feed_mark = mutations::len(cache);
        self.resyncs += 1;
        self.log("sending a full copy");
        let link = self.link.as_mut().expect("a link is up");
        link.control(KIND_RESYNC, 0);
        link.copy = Some(SnapshotCursor::default());
        link.synced = false;
        cache.ext_copy_forget();
    }

    /// Replica, on joining: its tombstones for keys it holds no item for,
    /// then the walk of its arena (`copy_step`), then UPLOADED. The master
    /// applies all of it under the conflict rule before its own full copy.
    pub(super) fn start_upload(&mut self, cache: &mut Cache) {
        let link = self.link.as_mut().expect("a link is up");
        for (key, cas) in mutations::tombstones(cache)
            .into_iter()
            .flat_map(|t| t.iter())
        {
            if cache.cas_of(key).is_none() {
                link.tomb(key, cas);
            }
        }
        link.copy = Some(SnapshotCursor::default());
        cache.ext_copy_forget();
        self.log("sending what this node holds");
    }

    pub(super) fn copy_step(&mut self, ctx: &mut Ctx) {
        let Some(link) = &mut self.link else { return };
        let Some(mut cursor) = link.copy.take() else {
            return;
        };
        if link.unsent() >= COPY_LOW_WATER {
            link.copy = Some(cursor);
            return;
        }
        let room = COPY_LOW_WATER.saturating_sub(link.unsent()) + link.out.len();
        let (items, done) = cursor.step(ctx.cache, &mut link.out, COPY_STEP, room);
        link.sent += items as u64;
        if done {
            ctx.cache.ext_copy_forget();
        }
        if done && self.role == Role::Replica {
            link.control(KIND_UPLOADED, 0);
            self.log("sent what this node holds");
        } else if done {
            link.control(KIND_SYNCED, 0);
            link.synced = true;
            self.backoff = BACKOFF_MIN;
            self.log("full copy sent");
            self.publish(ctx);
        } else {
            link.copy = Some(cursor);
        }
    }

    /// A peer too far behind: the master restarts the copy, a replica
    /// drops the link.
    pub(super) fn bound(&mut self, ctx: &mut Ctx) {
        let Some(link) = &mut self.link else { return };
        if link.unsent() <= self.buffer_limit {
            return;
        }
        if self.role != Role::Master {
            return self.link_lost("the master is too far behind", ctx);
        }
        let dropped = link.cut_after_current();
        link.sent -= dropped;
        link.acked = link.acked.min(link.sent);
        self.start_copy(ctx.cache);
        self.publish(ctx);
    }
}
