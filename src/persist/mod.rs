//! Persistence: what keeps the cache's contents beyond the process.
//!
//! - `record.rs`: the binary record every change is written as, shared by
//!   the append-only file and replication.
//! - `mutations.rs`: the mutation feed, the cache's change sink that
//!   encodes each change as a record.
//! - `replay.rs`: a decoded record made to happen (recovery, a replica).
//! - `snapshot.rs`: the live items as records (the AOF rewrite, the full
//!   copy a replica starts from).
//! - `aof.rs`, `rewrite.rs`, `recover.rs`: the append-only file (`-o aof`):
//!   writing and syncing, rewriting, replaying at start.
//! - `warm.rs`: warm restart (`-e`), the metadata saved beside the arena.
//!
//! The event loop reaches the append-only file through [`Durability`]
//! only; it knows neither the record format nor the sync policy.

mod aof;
pub(crate) mod mutations;
pub(crate) mod record;
mod recover;
pub(crate) mod replay;
mod rewrite;
pub(crate) mod snapshot;
pub(crate) mod warm;

use crate::items::Cache;
use crate::settings::Settings;
use crate::stats::AofStats;
use aof::Aof;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// The append-only file as the event loop sees it: the turn's changes are
/// written (and synced, as the policy says) at the end of the turn, and
/// the replies that followed them wait until then.
pub(crate) struct Durability {
    /// The append-only file, when on.
    aof: Option<Aof>,
    /// Connections whose replies wait for this turn's write.
    held: Vec<RawFd>,
    /// A write or sync failure with `aof_sync=always`: ends the server.
    failed: Option<io::Error>,
}

impl Durability {
    /// With `-o aof`, replays the file into `cache` and logs every change
    /// from now on. Runs before any listener is open.
    pub(crate) fn open(settings: &Settings, cache: &mut Cache) -> io::Result<Durability> {
        let aof = match &settings.aof.path {
            Some(_) => Some(Aof::open(&settings.aof, cache, settings.verbose)?),
            None => None,
        };
        Ok(Durability {
            aof,
            held: Vec::new(),
            failed: None,
        })
    }

    /// Whether a reply to a change waits until the change is written.
    pub(crate) fn holds_replies(&self) -> bool {
        self.aof.is_some()
    }

    /// `fd`'s replies wait for the end of this turn's write.
    pub(crate) fn hold(&mut self, fd: RawFd) {
        self.held.push(fd);
    }

    /// How long the loop may sleep before the file needs it again.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.aof.as_ref().and_then(|a| a.timeout())
    }

    /// The numbers of the `aof_*` stats lines, when the file is on.
    pub(crate) fn stats(&self) -> Option<AofStats> {
        self.aof.as_ref().map(|a| a.stats.clone())
    }

    /// Writes the changes so far (the end of a turn, or before a UDP reply,
    /// which cannot be held). False when there is no file: then nothing was
    /// read from the feed. A write error is kept for [`Durability::release`]
    /// with `aof_sync=always` (acknowledging would be a lie); otherwise it
    /// is reported and those records are lost to the file.
    pub(crate) fn write(&mut self, cache: &Cache) -> bool {
        let Some(a) = &mut self.aof else {
            return false;
        };
        if let Err(e) = a.end_turn(cache) {
            if a.syncs_before_replies() {
                self.failed = Some(io::Error::other(format!("AOF write failed: {e}")));
            } else {
                eprintln!("AOF write failed: {e}");
            }
        }
        true
    }

    /// After the end-of-turn write: the connections whose replies may go
    /// now, or the failure that ends the server.
    pub(crate) fn release(&mut self) -> io::Result<Vec<RawFd>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        Ok(std::mem::take(&mut self.held))
    }

    /// Before the process exits: everything written and synced. False when
    /// there is no file.
    pub(crate) fn shutdown(&mut self, cache: &Cache) -> io::Result<bool> {
        match &mut self.aof {
            Some(a) => a.shutdown(cache).map(|()| true),
            None => Ok(false),
        }
    }
}
