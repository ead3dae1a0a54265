//! Whether the append-only file takes writes, and what follows from that:
//! when to retry, when mutations are refused, what `stats` and the log say.
//!
//! - A failed write or sync starts a *failing* spell, logged once.
//! - While failing, the writer retries once a second (see `aof.rs`); the
//!   first success ends the spell, logged once with its length.
//! - Mutations are *refused* (the protocols answer with an error before
//!   changing anything) while the spell has lasted longer than the sync
//!   policy promises: at once with `always`, after [`GRACE`] with
//!   `everysec` and `no`, or as soon as the records waiting in memory pass
//!   [`BACKLOG_MAX`]. The start of a refusal is logged once too.

use crate::settings::AofSync;
use crate::stats::AofStats;
use std::io;
use std::time::{Duration, Instant};

/// How often a failing file is tried again.
pub(super) const RETRY: Duration = Duration::from_secs(1);
/// How long `everysec` and `no` acknowledge changes the file has not
/// taken: `everysec`'s promise (a crash loses about a second or two).
pub(super) const GRACE: Duration = Duration::from_secs(2);
/// Records acknowledged during the grace are kept in memory up to this
/// much; past it, mutations are refused at once.
pub(super) const BACKLOG_MAX: usize = 64 << 20;

#[derive(Debug)]
pub(super) struct Health {
    /// How long unwritten changes may be acknowledged (None: never).
    grace: Option<Duration>,
    /// When the current failing spell began.
    failing_since: Option<Instant>,
    last_try: Instant,
    refusing: bool,
}

impl Health {
    pub(super) fn new(sync: AofSync, now: Instant) -> Health {
        Health {
            grace: (sync != AofSync::Always).then_some(GRACE),
            failing_since: None,
            last_try: now,
            refusing: false,
        }
    }

    pub(super) fn failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// Whether mutations are refused.
    pub(super) fn refusing(&self) -> bool {
        self.refusing
    }

    /// A write, sync or retry failed. `what` names it for the log.
    pub(super) fn failed(&mut self, now: Instant, what: &str, e: &io::Error, stats: &mut AofStats) {
        stats.write_errors += 1;
        stats.last_write_errno = e.raw_os_error().unwrap_or(0);
        stats.last_write_failed = true;
        self.last_try = now;
        if self.failing_since.is_none() {
            self.failing_since = Some(now);
            let then = match self.grace {
                None => "refusing writes until it succeeds again".to_string(),
                Some(g) => format!(
                    "acknowledging writes from memory for {} s, then refusing them",
                    g.as_secs()
                ),
            };
            eprintln!("AOF {what} failed: {e}; retrying every second, {then}");
        }
    }

    /// A write succeeded: the spell, if any, is over.
    pub(super) fn succeeded(&mut self, now: Instant, stats: &mut AofStats) {
        stats.last_write_failed = false;
        stats.refusing_writes = false;
        self.refusing = false;
        if let Some(since) = self.failing_since.take() {
            eprintln!(
                "AOF writes succeed again after {} ms of failures; accepting writes",
                now.duration_since(since).as_millis()
            );
        }
    }

    /// Whether a retry is due.
    pub(super) fn retry_due(&self, now: Instant) -> bool {
        self.failing() && now.duration_since(self.last_try) >= RETRY
    }

    /// How long the loop may sleep before the next retry.
    pub(super) fn until_retry(&self, now: Instant) -> Option<Duration> {
        self.failing()
            .then(|| RETRY.saturating_sub(now.duration_since(self.last_try)))
    }

    /// Decides whether mutations are refused from now on.
    pub(super) fn update(&mut self, now: Instant, backlog: usize, stats: &mut AofStats) {
        let Some(since) = self.failing_since else {
            return;
        };
        let refuse = match self.grace {
            None => true,
            Some(g) => now.duration_since(since) >= g || backlog > BACKLOG_MAX,
        };
        if refuse && !self.refusing {
            if self.grace.is_some() {
                eprintln!(
                    "AOF still failing after {} ms; refusing writes until it succeeds again",
                    now.duration_since(since).as_millis()
                );
            }
            self.refusing = true;
            stats.refusing_writes = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enospc() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOSPC)
    }

    #[test]
    fn always_refuses_at_once_and_accepts_after_a_success() {
        let t0 = Instant::now();
        let mut stats = AofStats::default();
        let mut h = Health::new(AofSync::Always, t0);
        h.failed(t0, "write", &enospc(), &mut stats);
        h.update(t0, 0, &mut stats);
        assert!(h.refusing() && stats.refusing_writes);
        assert_eq!(
            (stats.write_errors, stats.last_write_errno),
            (1, libc::ENOSPC)
        );
        assert!(!h.retry_due(t0 + Duration::from_millis(500)));
        assert!(h.retry_due(t0 + RETRY));
        h.succeeded(t0 + RETRY, &mut stats);
        assert!(!h.refusing() && !h.failing() && !stats.last_write_failed);
    }

    #[test]
    fn everysec_refuses_only_after_the_grace() {
        let t0 = Instant::now();
        let mut stats = AofStats::default();
        let mut h = Health::new(AofSync::EverySec, t0);
        h.failed(t0, "write", &enospc(), &mut stats);
        h.update(t0 + GRACE / 2, 0, &mut stats);
        assert!(!h.refusing(), "within the grace");
        h.update(t0 + GRACE / 2, BACKLOG_MAX + 1, &mut stats);
        assert!(h.refusing(), "backlog too large");
        let mut h = Health::new(AofSync::No, t0);
        h.failed(t0, "write", &enospc(), &mut stats);
        h.update(t0 + GRACE, 0, &mut stats);
        assert!(h.refusing());
    }

    #[test]
    fn a_healthy_file_never_refuses() {
        let t0 = Instant::now();
        let mut stats = AofStats::default();
        let mut h = Health::new(AofSync::Always, t0);
        h.update(t0 + GRACE * 10, BACKLOG_MAX * 2, &mut stats);
        assert!(!h.refusing() && h.until_retry(t0).is_none());
    }
}
