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
//! **Rewrite.** When the file is over `aof_rewrite_min` and has grown
//! `aof_rewrite_pct` percent since the last rewrite (or the start), a
//! snapshot replaces it (see `rewrite.rs`).

use super::mutations;
use super::recover::recover;
use super::rewrite::{self, Rewrite};
use crate::items::Cache;
use crate::settings::{AofSettings, AofSync};
use crate::stats::AofStats;
use crate::sys::ChildEnd;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often a running rewrite is checked on while the loop is idle.
const REWRITE_POLL: Duration = Duration::from_millis(50);

pub(super) struct Aof {
    path: PathBuf,
    file: File,
    sync: AofSync,
    rewrite_pct: u32,
    rewrite_min: u64,
    /// File size after the last rewrite (or at start).
    base: u64,
    /// Records were written since the last fdatasync.
    unsynced: bool,
    last_sync: Instant,
    rewrite: Option<Rewrite>,
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
        Ok(Aof {
            path,
            file: recovered.file,
            sync: settings.sync,
            rewrite_pct: settings.rewrite_pct,
            rewrite_min: settings.rewrite_min,
            base: recovered.bytes,
            unsynced: false,
            last_sync: Instant::now(),
            rewrite: None,
            stats: AofStats {
                bytes: recovered.bytes,
                recovered_items: cache.stats.curr_items,
                ..AofStats::default()
            },
        })
    }

    /// Whether acknowledging before the sync would be a lie (a failed
    /// write is then fatal).
    pub(super) fn syncs_before_replies(&self) -> bool {
        self.sync == AofSync::Always
    }

    /// How long the loop may sleep before this needs it again.
    pub(super) fn timeout(&self) -> Option<Duration> {
        let sync = (self.unsynced && self.sync == AofSync::EverySec)
            .then(|| Duration::from_secs(1).saturating_sub(self.last_sync.elapsed()));
        let poll = self.rewrite.as_ref().map(|_| REWRITE_POLL);
        match (sync, poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The end of a loop turn: finish a rewrite whose child is done, write
    /// the turn's records, sync as the policy says, start a rewrite if the
    /// file has grown enough. Ok(true) when held replies may go out.
    pub(super) fn end_turn(&mut self, cache: &Cache) -> io::Result<bool> {
        self.poll_rewrite();
        let wrote = self.append(cache)?;
        let due = match self.sync {
            AofSync::Always => self.unsynced,
            AofSync::EverySec => {
                self.unsynced && self.last_sync.elapsed() >= Duration::from_secs(1)
            }
            AofSync::No => false,
        };
        if due {
            self.sync_now()?;
        }
        if self.rewrite_due() {
            self.start_rewrite(cache);
        }
        Ok(wrote)
    }

    /// Writes the feed to the file in one call; true if there was any. The
    /// feed is left for the reactor to clear, after every consumer.
    fn append(&mut self, cache: &Cache) -> io::Result<bool> {
        let bytes = mutations::bytes(cache);
        if bytes.is_empty() {
            return Ok(false);
        }
        self.file.write_all(bytes)?;
        self.stats.bytes += bytes.len() as u64;
        if let Some(r) = &mut self.rewrite {
            r.copy(bytes);
        }
        self.unsynced = true;
        Ok(true)
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
        self.append(cache)?;
        if self.unsynced {
            self.sync_now()?;
        }
        if let Some(r) = self.rewrite.take() {
            r.abandon();
        }
        Ok(())
    }

    // ----- rewrite -----------------------------------------------------------

    fn rewrite_due(&self) -> bool {
        let grown = self.base.saturating_mul(100 + self.rewrite_pct as u64) / 100;
        self.rewrite.is_none()
            && self.rewrite_pct > 0
            && self.stats.bytes >= self.rewrite_min
            && self.stats.bytes >= grown
    }

    /// Forks the snapshot writer. The feed was just drained, so the child's
    /// image holds exactly what the file holds.
    fn start_rewrite(&mut self, cache: &Cache) {
        match Rewrite::start(&self.path, cache) {
            Ok(r) => {
                self.stats.rewrite_in_progress = true;
                self.rewrite = Some(r);
            }
            Err(e) => {
                eprintln!("AOF rewrite: fork failed: {e}");
                self.base = self.stats.bytes;
            }
        }
    }

    fn poll_rewrite(&mut self) {
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
        if let Err(e) = result {
            eprintln!("AOF rewrite failed, keeping the old file: {e}");
            r.discard();
            // Try again only after as much growth again.
            self.base = self.stats.bytes;
        }
    }

    /// Puts the new file in place of the old one and goes on with it.
    fn install(&mut self, r: &Rewrite) -> io::Result<()> {
        let (file, len) = r.install(&self.path)?;
        self.file = file;
        self.stats.bytes = len;
        self.stats.rewrites += 1;
        self.base = len;
        Ok(())
    }
}
