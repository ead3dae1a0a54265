//! The append-only file: the cache's mutation feed written to disk, once
//! per loop turn, and rewritten as a snapshot when it has grown.
//!
//! **Writing.** At the end of every loop turn the records the turn
//! produced (see `mutations.rs`) go to the file in one `write`, and only
//! then are the replies that followed those mutations released to their
//! connections (`Conn::hold`): whatever the policy, a client never hears
//! of a change the kernel does not have, so killing the process loses
//! nothing acknowledged. What a machine crash may lose is `-o aof_sync`'s
//! business:
//!
//! - `always`: one `fdatasync` for all of the turn's records (group
//!   commit) before the replies are released. The fdatasync blocks the
//!   loop -- there are no threads to hand it to -- exactly as Redis's
//!   `appendfsync always` does; pipelined and concurrent clients share it,
//!   so its cost is per turn, not per write.
//! - `everysec`: `fdatasync` at most once a second, also inline (a second's
//!   worth of writes is what a crash may lose).
//! - `no`: the kernel writes back when it likes.
//!
//! **Failures.** A write is all or nothing (`tail.rs` cuts a torn record
//! off), and a failing file is retried once a second (`health.rs`):
//!
//! - `always`: the replies held for the records of a turn whose write or
//!   sync failed become errors (the reactor's business), and mutations are
//!   refused until a retry succeeds.
//! - `everysec` and `no`: the replies go out, within the grace `health.rs`
//!   gives, after which mutations are refused the same way.
//!
//! Whatever the policy, every record of a failing spell waits in memory
//! (the backlog) and is written first when the file takes writes again:
//! the file must describe what the cache holds. A refused change was made
//! in memory before its record failed (readers may see it, the peer has
//! it); a peer's change applied meanwhile was acknowledged by the peer. If
//! they were dropped, nothing would ever write them, and a restart would
//! bring back what they replaced -- an acknowledged delete among them.
//! The backlog is bounded ([`BACKLOG_MAX`]): past it, this node's own
//! mutations are refused and replication stops reading the peer
//! ([`Aof::backlog_full`]), which keeps its records until then.
//!
//! **Rewrite.** When the file is over `aof_rewrite_min` and has grown
//! `aof_rewrite_pct` percent since the last rewrite (or the start), a
//! snapshot replaces it (see `rewrite.rs`). So does a full copy received
//! from a replication peer, whatever the size: the wipe before it is no
//! record, so until a snapshot replaces the file, the file still holds
//! what the copy did not (`mutations::request_snapshot`). A rewrite that
//! fails keeps the old file, is counted, and is tried again after a
//! back-off.

use super::health::{BACKLOG_MAX, Health};
use super::mutations;
use super::recover::recover;
use super::rewrite::{self, Rewrite};
use super::tail::Tail;
use crate::items::Cache;
use crate::settings::{AofSettings, AofSync};
use crate::stats::AofStats;
use crate::sys::ChildEnd;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often a running rewrite is checked on while the loop is idle.
const REWRITE_POLL: Duration = Duration::from_millis(50);
/// The wait before a failed rewrite is tried again; it doubles with each
/// failure in a row, up to [`REWRITE_BACKOFF_MAX`].
const REWRITE_BACKOFF: Duration = Duration::from_secs(5);
const REWRITE_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What the end of a turn means for the replies held for its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Turn {
    /// The records are in the file (or, within the grace, kept to be).
    Acknowledge,
    /// The records were not written: the replies must not say they were.
    Refuse,
}

pub(super) struct Aof {
    path: PathBuf,
    file: File,
    sync: AofSync,
    rewrite_pct: u32,
    rewrite_min: u64,
    /// File size after the last rewrite (or at start).
    base: u64,
    /// Where the last whole record ends.
    tail: Tail,
    /// Records were written since the last fdatasync.
    unsynced: bool,
    last_sync: Instant,
    /// Records of changes in memory that the failing file has not taken
    /// yet: written first when it recovers.
    backlog: Vec<u8>,
    health: Health,
    rewrite: Option<Rewrite>,
    /// No rewrite starts before this (after failures).
    rewrite_not_before: Option<Instant>,
    rewrite_backoff: Duration,
    /// Snapshots asked for (`mutations::snapshot_requests`) that the
    /// running rewrite answers, and that installed rewrites have answered.
    snapshots_running: u64,
    snapshots_done: u64,
    pub(super) stats: AofStats,
}

impl Aof {
    /// Replays the file into `cache`, then starts logging to it.
    /// With `keep_tombs` (replication on), this node's deletes in the file
    /// are its tombstones again.
    pub(super) fn open(
        settings: &AofSettings,
        cache: &mut Cache,
        verbose: u8,
        keep_tombs: bool,
    ) -> io::Result<Aof> {
        let path = PathBuf::from(settings.path.as_deref().unwrap_or_default());
        // A rewrite cut short by a crash left an incomplete snapshot; the
        // file itself is whole.
        let _ = fs::remove_file(rewrite::rewrite_path(&path));
        let mut recovered = recover(&path, settings.fix, cache, verbose, keep_tombs)?;
        mutations::enable(cache);
        if keep_tombs {
            mutations::keep_tombstones(cache, recovered.tombs.take());
        }
        let now = Instant::now();
        Ok(Aof {
            path,
            file: recovered.file,
            sync: settings.sync,
            rewrite_pct: settings.rewrite_pct,
            rewrite_min: settings.rewrite_min,
            base: recovered.bytes,
            tail: Tail::new(recovered.bytes),
            unsynced: false,
            last_sync: now,
            backlog: Vec::new(),
            health: Health::new(settings.sync, now),
            rewrite: None,
            rewrite_not_before: None,
            rewrite_backoff: REWRITE_BACKOFF,
            snapshots_running: 0,
            snapshots_done: mutations::snapshot_requests(cache),
            stats: AofStats {
                bytes: recovered.bytes,
                recovered_items: cache.stats.curr_items,
                ..AofStats::default()
            },
        })
    }

    /// Whether mutations are refused (the file has failed for longer than
    /// the policy allows).
    pub(super) fn refusing(&self) -> bool {
        self.health.refusing()
    }

    /// Whether the records waiting for a failing file have reached their
    /// bound: no more changes may be taken from a peer until it recovers.
    pub(super) fn backlog_full(&self) -> bool {
        self.backlog.len() >= BACKLOG_MAX
    }

    /// How long the loop may sleep before this needs it again.
    pub(super) fn timeout(&self) -> Option<Duration> {
        let sync = (self.unsynced && self.sync == AofSync::EverySec)
            .then(|| Duration::from_secs(1).saturating_sub(self.last_sync.elapsed()));
        let poll = self.rewrite.as_ref().map(|_| REWRITE_POLL);
        let retry = self.health.until_retry(Instant::now());
        [sync, poll, retry].into_iter().flatten().min()
    }

    /// The end of a loop turn: finish a rewrite whose child is done, retry
    /// a failing file when due, write the turn's records, sync as the
    /// policy says, start a rewrite if the file has grown enough. Says
    /// whether the replies held for the records may go out.
    pub(super) fn end_turn(&mut self, cache: &Cache) -> Turn {
        let now = Instant::now();
        self.poll_rewrite(now);
        if self.health.retry_due(now) {
            self.retry(now);
        }
        let records = mutations::bytes(cache);
        let turn = if self.health.failing() {
            self.while_failing(records)
        } else {
            self.write(now, records)
        };
        if !self.health.failing() && self.rewrite_due(now, cache) {
            self.start_rewrite(cache);
        }
        self.health
            .update(Instant::now(), self.backlog.len(), &mut self.stats);
        turn
    }

    /// A healthy file: the turn's records written (and synced when due).
    fn write(&mut self, now: Instant, records: &[u8]) -> Turn {
        let before = self.tail.len();
        if !records.is_empty() {
            if let Err(e) = self.tail.append(&mut self.file, records) {
                self.health.failed(now, "write", &e, &mut self.stats);
                return self.while_failing(records);
            }
            self.unsynced = true;
        }
        if self.sync_due()
            && let Err(e) = self.sync_now()
        {
            self.health.failed(now, "sync", &e, &mut self.stats);
            if self.sync == AofSync::Always {
                // Not known to be durable, so not acknowledged: taken back
                // (if the cut fails, the next append retries it) and kept
                // to be written again -- after a failed fdatasync the
                // kernel may have dropped the pages, so a later sync of
                // the same bytes proves nothing.
                let _ = self.tail.forget_since(&mut self.file, before);
                self.stats.bytes = self.tail.len();
                self.backlog.extend_from_slice(records);
                return Turn::Refuse;
            }
        }
        self.stats.bytes = self.tail.len();
        if let Some(r) = &mut self.rewrite {
            r.copy(records);
        }
        Turn::Acknowledge
    }

    /// A failing file: the records are kept to be written first once it
    /// recovers; `always` acknowledges nothing it has not synced, the
    /// others acknowledge within their grace (after it, `health.rs` has
    /// mutations refused before they change anything).
    fn while_failing(&mut self, records: &[u8]) -> Turn {
        if records.is_empty() {
            return Turn::Acknowledge;
        }
        self.backlog.extend_from_slice(records);
        match self.sync {
            AofSync::Always => Turn::Refuse,
            _ => Turn::Acknowledge,
        }
    }

    fn sync_due(&self) -> bool {
        match self.sync {
            AofSync::Always => self.unsynced,
            AofSync::EverySec => {
                self.unsynced && self.last_sync.elapsed() >= Duration::from_secs(1)
            }
            AofSync::No => false,
        }
    }

    /// Tries the failing file again: the backlog if there is one (else a
    /// probe), then the sync the policy wants.
    fn retry(&mut self, now: Instant) {
        let wrote = if self.backlog.is_empty() {
            self.tail.probe(&mut self.file)
        } else {
            self.tail.append(&mut self.file, &self.backlog).map(|()| {
                self.unsynced = true;
                if let Some(r) = &mut self.rewrite {
                    r.copy(&self.backlog);
                }
                self.backlog = Vec::new();
            })
        };
        self.stats.bytes = self.tail.len();
        let synced = wrote.and_then(|()| match self.sync {
            AofSync::No => Ok(()),
            _ if self.unsynced => self.sync_now(),
            _ => Ok(()),
        });
        match synced {
            Ok(()) => self.health.succeeded(now, &mut self.stats),
            Err(e) => self.health.failed(now, "retry", &e, &mut self.stats),
        }
    }

    fn sync_now(&mut self) -> io::Result<()> {
        let started = Instant::now();
        self.file.sync_data()?;
        self.stats.last_fsync_ms = started.elapsed().as_millis() as u64;
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    /// Before the process exits: everything written and synced, and a
    /// rewrite in progress abandoned (the old file is complete).
    pub(super) fn shutdown(&mut self, cache: &Cache) -> io::Result<()> {
        let mut records = std::mem::take(&mut self.backlog);
        records.extend_from_slice(mutations::bytes(cache));
        let written = match records.is_empty() {
            true => Ok(()),
            false => self.tail.append(&mut self.file, &records),
        };
        if let Some(r) = self.rewrite.take() {
            r.abandon();
        }
        written?;
        if self.unsynced || !records.is_empty() {
            self.sync_now()?;
        }
        Ok(())
    }

    // ----- rewrite -----------------------------------------------------------

    /// Grown enough, or asked for by a full copy (even with automatic
    /// rewrites off: the file must describe the cache).
    fn rewrite_due(&self, now: Instant, cache: &Cache) -> bool {
        let grown = self.base.saturating_mul(100 + self.rewrite_pct as u64) / 100;
        let by_size = self.rewrite_pct > 0
            && self.stats.bytes >= self.rewrite_min
            && self.stats.bytes >= grown;
        let asked = mutations::snapshot_requests(cache) > self.snapshots_done;
        self.rewrite.is_none()
            && (by_size || asked)
            && self.rewrite_not_before.is_none_or(|t| now >= t)
    }

    /// Forks the snapshot writer. The feed was just drained, so the child's
    /// image holds exactly what the file holds.
    fn start_rewrite(&mut self, cache: &Cache) {
        match Rewrite::start(&self.path, cache) {
            Ok(r) => {
                self.stats.rewrite_in_progress = true;
                self.rewrite = Some(r);
                // A snapshot asked for after this fork is not this one.
                self.snapshots_running = mutations::snapshot_requests(cache);
            }
            Err(e) => self.rewrite_failed(Instant::now(), &format!("fork failed: {e}")),
        }
    }

    fn poll_rewrite(&mut self, now: Instant) {
        let Some(end) = self.rewrite.as_ref().and_then(Rewrite::ended) else {
            return;
        };
        let r = self.rewrite.take().expect("checked above");
        self.stats.rewrite_in_progress = false;
        let result = match end {
            ChildEnd::Exited(0) => self.install(&r),
            other => Err(io::Error::other(format!(
                "snapshot writer ended: {other:?}"
            ))),
        };
        match result {
            Ok(()) => {
                self.rewrite_not_before = None;
                self.rewrite_backoff = REWRITE_BACKOFF;
                self.snapshots_done = self.snapshots_done.max(self.snapshots_running);
            }
            Err(e) => {
                r.discard();
                self.rewrite_failed(now, &e.to_string());
            }
        }
    }

    /// Counts a failed rewrite and puts the next attempt off, for longer
    /// after each failure in a row. The old file is whole and in use.
    fn rewrite_failed(&mut self, now: Instant, why: &str) {
        self.stats.rewrite_failures += 1;
        let wait = self.rewrite_backoff;
        eprintln!(
            "AOF rewrite failed, keeping the old file: {why}; next attempt in {} s",
            wait.as_secs()
        );
        self.rewrite_not_before = Some(now + wait);
        self.rewrite_backoff = (wait * 2).min(REWRITE_BACKOFF_MAX);
    }

    /// Puts the new file in place of the old one and goes on with it.
    fn install(&mut self, r: &Rewrite) -> io::Result<()> {
        let (file, len) = r.install(&self.path)?;
        self.file = file;
        self.tail = Tail::new(len);
        self.stats.bytes = len;
        self.stats.rewrites += 1;
        self.base = len;
        Ok(())
    }
}
