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
//!   writing and syncing, rewriting, replaying at start; `tail.rs` keeps
//!   a failed write from leaving a torn record behind, `health.rs` decides
//!   when a failing file means refusing writes.
//! - `tombs.rs`: this node's recent deletes (replication's tombstones),
//!   kept by the feed and, through its records, in the file.
//! - `warm.rs`: warm restart (`-e`), the metadata saved beside the arena.
//!
//! The event loop reaches the append-only file through [`Durability`]
//! only; it knows neither the record format nor the sync policy.

mod aof;
mod health;
pub(crate) mod mutations;
pub(crate) mod record;
mod recover;
pub(crate) mod replay;
mod rewrite;
pub(crate) mod snapshot;
mod tail;
pub(crate) mod tombs;
pub(crate) mod warm;

use crate::items::Cache;
use crate::settings::Settings;
use crate::stats::AofStats;
use aof::{Aof, Turn};
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
    /// Connections whose changes a write earlier in the turn (before a UDP
    /// reply) took.
    written: Vec<RawFd>,
    /// Connections whose held replies answer changes the file did not
    /// take: they must not go out.
    refused: Vec<RawFd>,
}

/// The connections whose held replies [`Durability::release`] lets go.
pub(crate) struct Released {
    /// Their changes are in the file: the replies go out.
    pub(crate) written: Vec<RawFd>,
    /// Their changes are not: the replies must become an error.
    pub(crate) refused: Vec<RawFd>,
}

impl Durability {
    /// With `-o aof`, replays the file into `cache` and logs every change
    /// from now on. Runs before any listener is open.
    pub(crate) fn open(settings: &Settings, cache: &mut Cache) -> io::Result<Durability> {
        let aof = match &settings.aof.path {
            Some(_) => Some(Aof::open(
                &settings.aof,
                cache,
                settings.verbose,
                settings.repl.enabled(),
            )?),
            None => None,
        };
        Ok(Durability {
            aof,
            held: Vec::new(),
            written: Vec::new(),
            refused: Vec::new(),
        })
    }

    /// Whether a reply to a change waits until the change is written.
    pub(crate) fn holds_replies(&self) -> bool {
        self.aof.is_some()
    }

    /// `fd`'s replies wait for the end of this turn's write. Called each
    /// time its requests log changes, so that a write that fails refuses
    /// it even if an earlier write in the same turn took its first ones.
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

    /// Whether mutations are to be refused before they change anything:
    /// the file has been failing for longer than its sync policy allows.
    pub(crate) fn refusing(&self) -> bool {
        self.aof.as_ref().is_some_and(Aof::refusing)
    }

    /// Whether changes from a replication peer must wait (their reader
    /// stops reading): the failing file's backlog is at its bound.
    pub(crate) fn peer_must_wait(&self) -> bool {
        self.aof.as_ref().is_some_and(Aof::backlog_full)
    }

    /// Writes the changes so far (the end of a turn, or before a UDP reply,
    /// which cannot be held). None when there is no file: then nothing was
    /// read from the feed. Some(false) when the changes were not written
    /// (`aof_sync=always` and a failing file): the replies held so far are
    /// then refused, and a UDP reply must not go out.
    pub(crate) fn write(&mut self, cache: &Cache) -> Option<bool> {
        let a = self.aof.as_mut()?;
        match a.end_turn(cache) {
            Turn::Acknowledge => {
                self.written.append(&mut self.held);
                Some(true)
            }
            Turn::Refuse => {
                self.refused.append(&mut self.held);
                Some(false)
            }
        }
    }

    /// After the end-of-turn write: the connections whose replies may go
    /// now, and those whose replies must become an error.
    pub(crate) fn release(&mut self) -> Released {
        self.written.append(&mut self.held);
        Released {
            written: std::mem::take(&mut self.written),
            refused: std::mem::take(&mut self.refused),
        }
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
