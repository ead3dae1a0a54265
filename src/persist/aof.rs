//! The append-only file: the cache's mutation feed written to disk, once
//! per loop turn, and rewritten as a snapshot when it has grown.
//!
//! **Writing.** At the end of every loop turn the records the turn
//! produced (see `items/feed.rs`) go to the file in one `write`, and only
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
//! `aof_rewrite_pct` percent since the last rewrite (or the start), the
//! process forks. The child sees a copy-on-write image of the arena and
//! writes a PUT for every live item to `<path>.rewrite`, then exits; the
//! parent goes on serving, still appending to the old file, and keeps a
//! copy of every record written meanwhile. When the child has exited
//! (polled with a non-blocking `waitpid` each turn), the parent appends
//! that copy to the new file, syncs it, and renames it over the old one.
//! Every record reaches both files, so nothing written during the rewrite
//! can be lost, and a crash at any point leaves one complete file.

use super::record::MAGIC;
use super::{mutations, snapshot};
use crate::items::Cache;
use crate::reactor::sys::{self, ChildEnd, Forked};
use crate::settings::{AofSettings, AofSync};
use crate::stats::AofStats;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use super::recover::recover;

/// The snapshot is written in pieces of this size.
const SNAPSHOT_BATCH: usize = 1 << 20;
/// How often a running rewrite is checked on while the loop is idle.
const REWRITE_POLL: Duration = Duration::from_millis(50);

pub struct Aof {
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
    pub stats: AofStats,
}

/// A rewrite whose child is still writing the snapshot.
struct Rewrite {
    pid: libc::pid_t,
    tmp: PathBuf,
    /// Every record written to the old file since the fork.
    since_fork: Vec<u8>,
}

impl Aof {
    /// Replays the file into `cache`, then starts logging to it.
    pub fn open(settings: &AofSettings, cache: &mut Cache, verbose: u8) -> io::Result<Aof> {
        let path = PathBuf::from(settings.path.as_deref().unwrap_or_default());
        // A rewrite cut short by a crash left an incomplete snapshot; the
        // file itself is whole.
        let _ = fs::remove_file(rewrite_path(&path));
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
    pub fn syncs_before_replies(&self) -> bool {
        self.sync == AofSync::Always
    }

    /// How long the loop may sleep before this needs it again.
    pub fn timeout(&self) -> Option<Duration> {
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
    pub fn end_turn(&mut self, cache: &Cache) -> io::Result<bool> {
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
            r.since_fork.extend_from_slice(bytes);
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
    pub fn shutdown(&mut self, cache: &Cache) -> io::Result<()> {
        self.append(cache)?;
        if self.unsynced {
            self.sync_now()?;
        }
        if let Some(r) = self.rewrite.take() {
            sys::kill_child(r.pid);
            let _ = fs::remove_file(&r.tmp);
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
        let tmp = rewrite_path(&self.path);
        match sys::fork() {
            Ok(Forked::Child) => {
                sys::close_inherited_fds();
                let code = match write_snapshot(&tmp, cache) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("AOF rewrite: writing {}: {e}", tmp.display());
                        1
                    }
                };
                sys::exit_child(code)
            }
            Ok(Forked::Parent(pid)) => {
                self.stats.rewrite_in_progress = true;
                self.rewrite = Some(Rewrite {
                    pid,
                    tmp,
                    since_fork: Vec::new(),
                });
            }
            Err(e) => {
                eprintln!("AOF rewrite: fork failed: {e}");
                self.base = self.stats.bytes;
            }
        }
    }

    fn poll_rewrite(&mut self) {
        let Some(r) = &self.rewrite else { return };
        let end = match sys::try_wait(r.pid) {
            Ok(None) => return,
            Ok(Some(end)) => end,
            Err(e) => {
                eprintln!("AOF rewrite: waitpid: {e}");
                ChildEnd::Exited(-1)
            }
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
            let _ = fs::remove_file(&r.tmp);
            // Try again only after as much growth again.
            self.base = self.stats.bytes;
        }
    }

    /// Completes the new file with what arrived during the rewrite and puts
    /// it in place of the old one.
    fn install(&mut self, r: &Rewrite) -> io::Result<()> {
        let mut file = OpenOptions::new().read(true).append(true).open(&r.tmp)?;
        file.write_all(&r.since_fork)?;
        file.sync_data()?;
        fs::rename(&r.tmp, &self.path)?;
        sync_parent_dir(&self.path);
        let len = file.metadata()?.len();
        self.file = file;
        self.stats.bytes = len;
        self.stats.rewrites += 1;
        self.base = len;
        Ok(())
    }
}

fn rewrite_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".rewrite");
    PathBuf::from(name)
}

/// The child's work: the magic and a PUT per live item, synced.
fn write_snapshot(tmp: &Path, cache: &Cache) -> io::Result<()> {
    let mut file = File::create(tmp)?;
    file.write_all(MAGIC)?;
    let mut buf = Vec::with_capacity(SNAPSHOT_BATCH * 2);
    snapshot::rewrite(cache, &mut buf, SNAPSHOT_BATCH, |b| {
        file.write_all(b)?;
        b.clear();
        Ok(())
    })?;
    file.sync_data()
}

/// Makes a rename durable. Best effort: some file systems refuse to sync a
/// directory, and the rename has happened either way.
pub(super) fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
