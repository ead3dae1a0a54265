//! A graceful stop (SIGUSR1, `shutdown graceful`): memcached's farewell
//! trace, every connection closed, and with `-e` the cache saved for the
//! next process.

use super::{Reactor, Slot};
use std::io;

impl Reactor {
    /// memcached's `stop_threads` as `-v` shows it: the same lines, in the
    /// same order, for the threads it would be stopping.
    pub(super) fn stop_gracefully(&mut self) -> io::Result<()> {
        let v = self.settings.verbose;
        let say = |line: &str| {
            if v > 0 {
                eprintln!("{line}");
            }
        };
        say("stopped assoc");
        say("asking workers to stop");
        say("asking background threads to stop");
        say("stopped lru crawler");
        if self.settings.tuning.lru_maintainer {
            say("stopped maintainer");
        }
        if self.settings.slab_reassign {
            say("stopped slab mover");
        }
        say("stopped logger thread");
        say("stopped idle timeout thread");
        say("closing connections");
        self.close_all();
        say("reaping worker threads");
        say("all background threads stopped");
        // A page half emptied stays with its class, nothing set aside lost.
        self.cache.abandon_move();
        match self.settings.memory_file.clone() {
            Some(path) => crate::persist::warm::save(&path, &mut self.cache, &self.settings)
                .map_err(|e| io::Error::other(format!("[restart] failed to save metadata: {e}"))),
            None => Ok(()),
        }
    }

    /// Closes clients (freeing any value still arriving) and listeners, in
    /// descriptor order as memcached's `conn_close_all` does.
    fn close_all(&mut self) {
        for fd in 0..self.slots.len() {
            match &self.slots[fd] {
                Slot::Client(_) => self.close(fd as i32),
                Slot::Listener(..) => {
                    if self.settings.verbose > 1 {
                        eprintln!("<{fd} connection closed.");
                    }
                    self.slots[fd] = Slot::Empty;
                }
                Slot::MetricsListener(_) | Slot::Http(_) => self.slots[fd] = Slot::Empty,
                _ => {}
            }
        }
    }
}
