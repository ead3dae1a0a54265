//! `-o idle_timeout=N`: connections that have sent no request line for
//! more than N seconds are closed, as memcached's idle-timeout thread does:
//! only connections waiting for a request (not ones reading a value, nor
//! ones whose replies are still queued) are closed, checked once a second,
//! counted in `stats` as `idle_kicks`, and traced at `-vv` as
//! "Closing idle fd N" before the usual close line.

use super::{Reactor, Slot};
use std::os::fd::RawFd;

impl Reactor {
    pub(super) fn kick_idle(&mut self) {
        let limit = self.settings.idle_timeout;
        if limit == 0 {
            return;
        }
        let now = self.cache.now();
        let idle: Vec<RawFd> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(fd, slot)| match slot {
                Slot::Client(c)
                    if c.state().between_requests()
                        && c.unsent() == 0
                        && now.saturating_sub(c.last_active) > limit =>
                {
                    Some(fd as RawFd)
                }
                _ => None,
            })
            .collect();
        for fd in idle {
            if self.settings.verbose > 1 {
                eprintln!("Closing idle fd {fd}");
            }
            self.stats.idle_kicks += 1;
            if let Some(super::Slot::Client(c)) = self.slots.get_mut(fd as usize) {
                c.close_reason = crate::logger::CloseReason::IdleTimeout;
            }
            self.close(fd);
        }
    }
}
