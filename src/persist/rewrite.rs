//! The AOF rewrite: a fresh file holding only what the cache holds now.
//!
//! The process forks. The child sees a copy-on-write image of the arena and
//! writes a PUT for every live item to `<path>.rewrite`, then exits; the
//! parent goes on serving, still appending to the old file, and keeps a
//! copy of every record written meanwhile. When the child has exited
//! (polled with a non-blocking `waitpid` each turn), the parent appends
//! that copy to the new file, syncs it, and renames it over the old one.
//! Every record reaches both files, so nothing written during the rewrite
//! can be lost, and a crash at any point leaves one complete file.
//!
//! When to rewrite, and what to do with the result, is the writer's
//! business (`aof.rs`).
//!
//! **Test hook.** With `MEMCACHED_TEST_REWRITE_STALL` set to `child`,
//! `install` or `renamed`, the rewrite stops for a minute at that phase
//! (the child after its first piece of snapshot; the parent with the new
//! file complete but not yet renamed; the parent right after the rename),
//! after saying so on stderr, so that a test can kill the process there.

use super::record::MAGIC;
use super::snapshot;
use crate::items::Cache;
use crate::sys::{self, ChildEnd, Forked};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The snapshot is written in pieces of this size.
const SNAPSHOT_BATCH: usize = 1 << 20;

/// A rewrite whose child is still writing the snapshot.
pub(super) struct Rewrite {
    pid: libc::pid_t,
    tmp: PathBuf,
    /// Every record written to the old file since the fork.
    since_fork: Vec<u8>,
}

impl Rewrite {
    /// Forks the snapshot writer for the file at `path`.
    pub(super) fn start(path: &Path, cache: &Cache) -> io::Result<Rewrite> {
        let tmp = rewrite_path(path);
        match sys::fork()? {
            Forked::Child => {
                // The values on flash are read from extstore's files.
                sys::close_inherited_fds(&cache.ext_file_fds());
                let code = match write_snapshot(&tmp, cache) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("AOF rewrite: writing {}: {e}", tmp.display());
                        1
                    }
                };
                sys::exit_child(code)
            }
            Forked::Parent(pid) => Ok(Rewrite {
                pid,
                tmp,
                since_fork: Vec::new(),
            }),
        }
    }

    /// Keeps a copy of records written to the old file meanwhile.
    pub(super) fn copy(&mut self, records: &[u8]) {
        self.since_fork.extend_from_slice(records);
    }

    /// How the child ended, once it has.
    pub(super) fn ended(&self) -> Option<ChildEnd> {
        match sys::try_wait(self.pid) {
            Ok(end) => end,
            Err(e) => {
                eprintln!("AOF rewrite: waitpid: {e}");
                Some(ChildEnd::Exited(-1))
            }
        }
    }

    /// Completes the new file with what arrived during the rewrite and puts
    /// it in place of the file at `path`; returns it and its length.
    pub(super) fn install(&self, path: &Path) -> io::Result<(File, u64)> {
        let mut file = OpenOptions::new().read(true).append(true).open(&self.tmp)?;
        file.write_all(&self.since_fork)?;
        file.sync_data()?;
        test_stall("install");
        fs::rename(&self.tmp, path)?;
        test_stall("renamed");
        sync_parent_dir(path);
        let len = file.metadata()?.len();
        Ok((file, len))
    }

    /// Removes what a failed rewrite left.
    pub(super) fn discard(self) {
        let _ = fs::remove_file(&self.tmp);
    }

    /// Stops a child still writing (the process is exiting) and removes
    /// its file.
    pub(super) fn abandon(self) {
        sys::kill_child(self.pid);
        self.discard();
    }
}

pub(super) fn rewrite_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".rewrite");
    PathBuf::from(name)
}

/// The child's work: the magic and a PUT per live item, synced.
fn write_snapshot(tmp: &Path, cache: &Cache) -> io::Result<()> {
    let mut file = File::create(tmp)?;
    file.write_all(MAGIC)?;
    let mut buf = Vec::with_capacity(SNAPSHOT_BATCH * 2);
    let mut first = true;
    snapshot::rewrite(cache, &mut buf, SNAPSHOT_BATCH, |b| {
        file.write_all(b)?;
        b.clear();
        if std::mem::take(&mut first) {
            test_stall("child");
        }
        Ok(())
    })?;
    file.sync_data()
}

/// The test hook (see the top of this file): read only when a rewrite
/// reaches one of its phases, which is rare.
fn test_stall(phase: &str) {
    if std::env::var("MEMCACHED_TEST_REWRITE_STALL").is_ok_and(|p| p == phase) {
        eprintln!("AOF rewrite test stall: {phase}");
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Makes a rename durable. Best effort: some file systems refuse to sync a
/// directory, and the rename has happened either way.
fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
