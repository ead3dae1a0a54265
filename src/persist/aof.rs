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
//! - `always`: the records of a turn whose write or sync failed are taken
//!   back; the replies held for them become errors (the reactor's
//!   business), and mutations are refused until a retry succeeds.
//! - `everysec` and `no`: the records wait in memory (the backlog) and are
//!   written first when the file takes writes again; the replies go out,
//!   within the grace `health.rs` gives, after which mutations are refused.
//!
//! **Rewrite.** When the file is over `aof_rewrite_min` and has grown
//! `aof_rewrite_pct` percent since the last rewrite (or the start), a
//! snapshot replaces it (see `rewrite.rs`). A rewrite that fails keeps the
//! old file, is counted, and is tried again after a back-off.

use super::health::Health;
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
    /// Acknowledged records the failing file has not taken yet
    /// (`everysec` and `no`).
    backlog: Vec<u8>,
    health: Health,
    rewrite: Option<Rewrite>,
    /// No rewrite starts before this (after failures).
    rewrite_not_before: Option<Instant>,
    rewrite_backoff: Duration,
    pub(super) stats: AofStats,
}

impl Aof {
    /// Replays the file into `cache`, then starts logging to it.
    pub(super) fn open(settings: &AofSettings, cache: &mut Cache, verbose: u8) -> io::Result<Aof> {
        let path = PathBuf::from(settings.path.as_deref().unwrap_or_default());
        // A rewrite cut short by a crash left an incomplete snapshot; the
        // file itself is whole.
        let _ = fs::remove_file(rewrite::rewrite_path(&path));
        let recovered = recover(&path, settings.fix, cache, verbose)?;
        mutations::enable(cache);
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
        if !self.health.failing() && self.rewrite_due(now) {
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
                // (if the cut fails, the next append retries it).
                let _ = self.tail.forget_since(&mut self.file, before);
                self.stats.bytes = self.tail.len();
                return Turn::Refuse;
            }
        }
        self.stats.bytes = self.tail.len();
        if let Some(r) = &mut self.rewrite {
            r.copy(records);
        }
        Turn::Acknowledge
    }

    /// A failing file: `always` acknowledges nothing it has not synced;
    /// the others keep the records to write them first once it recovers.
    fn while_failing(&mut self, records: &[u8]) -> Turn {
        if records.is_empty() {
            return Turn::Acknowledge;
        }
        if self.sync == AofSync::Always {
            return Turn::Refuse;
        }
        self.backlog.extend_from_slice(records);
        Turn::Acknowledge
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

    fn rewrite_due(&self, now: Instant) -> bool {
        let grown = self.base.saturating_mul(100 + self.rewrite_pct as u64) / 100;
        self.rewrite.is_none()
            && self.rewrite_pct > 0
            && self.stats.bytes >= self.rewrite_min
            && self.stats.bytes >= grown
            && self.rewrite_not_before.is_none_or(|t| now >= t)
    }

    /// Forks the snapshot writer. The feed was just drained, so the child's
    /// image holds exactly what the file holds.
    fn start_rewrite(&mut self, cache: &Cache) {
        match Rewrite::start(&self.path, cache) {
            Ok(r) => {
                self.stats.rewrite_in_progress = true;
                self.rewrite = Some(r);
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
