//! The replication lines of `stats`, present only when replication is
//! configured so that a default `stats` stays memcached's. The counters
//! are plain data here, below `repl`, which keeps them up to date (as
//! `persist` keeps `AofStats`): `stats` reports every room's counters and
//! depends on none of the rooms that count.

use std::fmt::Write as _;

/// What the replication link reports; kept up to date by `crate::repl::Repl`.
/// Public because `Stats`, which is public, holds one.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReplStats {
    /// `master`, `replica`, or `connecting` (trying the peer: at start, or
    /// after losing the master).
    pub(crate) role: &'static str,
    /// The configured peer, as given.
    pub(crate) peer: String,
    pub(crate) connected: bool,
    /// Records sent to the peer that it has not yet said it applied.
    pub(crate) lag_records: u64,
    /// Full copies sent or received.
    pub(crate) resyncs: u64,
}

/// Appends the `STAT repl_*` lines.
pub(crate) fn lines(out: &mut String, r: &ReplStats) {
    let _ = write!(
        out,
        "STAT repl_role {}\r\nSTAT repl_peer {}\r\nSTAT repl_connected {}\r\n\
         STAT repl_lag_records {}\r\nSTAT repl_resyncs {}\r\n",
        r.role,
        r.peer,
        u8::from(r.connected),
        r.lag_records,
        r.resyncs
    );
}
