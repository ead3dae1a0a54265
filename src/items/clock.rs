//! memcached's relative clock.
//!
//! Times inside the cache are seconds since shortly before the process
//! started (`u32`), advanced once per second by the reactor from a
//! monotonic source, so wall-clock jumps never expire or resurrect items.
//! The epoch is set 62 seconds in the past exactly as memcached does
//! (`ITEM_UPDATE_INTERVAL + 2`), which keeps "now" above every value with a
//! special meaning (0 never, 1 already expired).

use std::time::Instant;

/// Relative expiry times above this are absolute unix times (30 days).
pub(crate) const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;
/// An item is moved to the LRU head at most this often (seconds).
pub(crate) const ITEM_UPDATE_INTERVAL: u32 = 60;

pub(crate) struct Clock {
    /// Seconds since the relative epoch.
    pub(crate) now: u32,
    /// Unix time of the relative epoch (memcached's `process_started`).
    pub(crate) process_started: i64,
    /// Where the monotonic microseconds count from (never moves).
    origin: Instant,
    /// Microseconds since `origin` at the last tick: the LRU maintainer's
    /// timeline.
    pub(crate) mono_us: u64,
    /// `mono_us` of the relative epoch's start-up reading.
    start_us: u64,
    /// `now` at `start_us`.
    base: u32,
}

fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let back = ITEM_UPDATE_INTERVAL + 2;
        Clock {
            now: back,
            process_started: unix_secs() - back as i64,
            origin: Instant::now(),
            mono_us: 0,
            start_us: 0,
            base: back,
        }
    }

    /// Carries on the clock of a process that stopped at relative time
    /// `stopped_at`, `downtime` seconds ago, as memcached does on a warm
    /// restart: the epoch stays where it was, so every stored time keeps
    /// its meaning and the downtime counts toward expiry.
    pub(crate) fn resume(&mut self, process_started: i64, stopped_at: u32, downtime: u32) {
        self.process_started = process_started;
        self.base = stopped_at.saturating_add(downtime);
        self.tick_at(Instant::now());
        self.start_us = self.mono_us;
        self.now = self.base;
    }

    /// The wall-clock unix time now.
    pub(crate) fn unix_now() -> i64 {
        unix_secs()
    }

    /// The clock at `now`, a monotonic reading (the event loop reads the
    /// time once per turn); true when the second changed.
    pub(crate) fn tick_at(&mut self, now: Instant) -> bool {
        let since = now.saturating_duration_since(self.origin);
        self.mono_us = since.as_secs() * 1_000_000 + u64::from(since.subsec_micros());
        let elapsed = (self.mono_us.saturating_sub(self.start_us) / 1_000_000) as u32;
        let now = self.base + elapsed;
        let changed = now != self.now;
        self.now = now;
        changed
    }

    /// memcached's `realtime()`: a protocol exptime to relative time.
    pub(crate) fn realtime(&self, exptime: i64) -> u32 {
        if exptime == 0 {
            return 0;
        }
        if exptime < 0 {
            return 1;
        }
        if exptime > REALTIME_MAXDELTA {
            if exptime <= self.process_started {
                return 1;
            }
            (exptime - self.process_started).min(u32::MAX as i64) as u32
        } else {
            (exptime + self.now as i64).min(u32::MAX as i64) as u32
        }
    }

    /// The unix time of relative time `t`.
    pub(crate) fn to_unix(&self, t: u32) -> i64 {
        self.process_started + t as i64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realtime_follows_memcached() {
        let c = Clock::new();
        assert_eq!(c.realtime(0), 0);
        assert_eq!(c.realtime(-5), 1);
        assert_eq!(c.realtime(10), c.now + 10);
        assert_eq!(c.realtime(c.process_started), 1);
        assert_eq!(c.realtime(c.process_started + 100), 100);
        assert!(c.now >= ITEM_UPDATE_INTERVAL + 2);
    }

    #[test]
    fn a_resumed_clock_counts_the_downtime() {
        let mut c = Clock::new();
        c.resume(1_000_000, 500, 30);
        assert_eq!(c.now, 530);
        assert_eq!(c.to_unix(530), 1_000_530);
        assert_eq!(c.realtime(10), 540);
        c.tick_at(Instant::now());
        assert!(c.now >= 530 && c.now <= 531);
    }
}
