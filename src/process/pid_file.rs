//! `-P`: the pid file, written once the server listens and removed when it
//! stops, as memcached's `save_pid` and `remove_pidfile` do.

use nix::sys::signal::kill;
use nix::unistd::{Pid, getpid};

use super::errno::io_strerror;
use crate::numbers::safe_strtoul;
use crate::settings::Settings;

/// The `-P` file of one server run.
pub struct PidFile {
    path: Option<String>,
    /// Only a server that daemonized itself removes its pid file: a
    /// foreground server leaves it for whoever supervises it.
    daemonized: bool,
    /// Whether the server started (`save` ran).
    started: bool,
}

impl PidFile {
    pub fn new(settings: &Settings) -> PidFile {
        PidFile {
            path: settings.pid_file.clone(),
            daemonized: settings.daemonize,
            started: false,
        }
    }

    /// The server listens: write the file. memcached writes it once its
    /// sockets are bound, so a server that fails to start leaves none.
    pub fn save(&mut self) {
        self.started = true;
        if let Some(path) = &self.path {
            save_pid(path);
        }
    }

    /// The server stopped. Like memcached, the pid file is removed when
    /// the server stops after it started (SIGTERM, SIGINT, SIGUSR1,
    /// `shutdown`, a failed event loop), and only if it daemonized itself.
    pub fn remove(&self) {
        if let (true, true, Some(path)) = (self.started, self.daemonized, &self.path) {
            remove_pid(path);
        }
    }
}

/// memcached's `save_pid`: warn if the file names a live process, then
/// write `<path>.tmp` and rename it over `path` so readers never see it
/// empty. Failures are reported and start-up goes on.
fn save_pid(path: &str) {
    if let Some(pid) = running_pid(path) {
        eprintln!("WARNING: The pid file contained the following (running) pid: {pid}");
    }
    let tmp = format!("{path}.tmp");
    if let Err(e) = std::fs::write(&tmp, format!("{}\n", getpid())) {
        eprintln!(
            "Could not open the pid file {tmp} for writing: {}",
            io_strerror(&e)
        );
        return;
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        eprintln!(
            "Could not rename the pid file from {tmp} to {path}: {}",
            io_strerror(&e)
        );
    }
}

/// memcached's `remove_pidfile`, run as the user `-u` switched to: the pid
/// file's directory must be writable by that user (or the file stays).
fn remove_pid(path: &str) {
    if let Err(e) = std::fs::remove_file(path) {
        eprintln!("Could not remove the pid file {path}: {}", io_strerror(&e));
    }
}

/// The pid in an existing pid file's first line (memcached reads it with
/// `fgets` and `safe_strtoul`), if that process exists.
fn running_pid(path: &str) -> Option<u32> {
    let text = std::fs::read(path).ok()?;
    let line = text.split_inclusive(|&b| b == b'\n').next()?;
    let pid = safe_strtoul(line)?;
    kill(Pid::from_raw(pid as i32), None).ok()?;
    Some(pid)
}
