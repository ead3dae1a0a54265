//! `GET /metrics`: the server's statistics in the Prometheus text
//! exposition format (version 0.0.4), so that it can be scraped without
//! prometheus/memcached_exporter running beside it.
//!
//! The families are the exporter's -- its names, labels, types and HELP
//! texts -- and are computed the way it computes them: from the `stats`,
//! `stats slabs`, `stats items` and `stats settings` reports (built by the
//! `stats` room, parsed here as the exporter parses them off the wire), so
//! a dashboard built on the exporter works unchanged and /metrics can never
//! disagree with `stats`. This server's own lines (the append-only file,
//! replication) become `memcached_aof_*` and `memcached_repl_*`.
//!
//! `http.rs` is the request side: a bounded HTTP/1.1 request parser and
//! the responses; the reactor owns the sockets.

pub(crate) mod exposition;
pub(crate) mod families;
pub(crate) mod http;

use crate::items::Cache;
use crate::settings::Settings;
use crate::stats::{self, Stats};

/// The whole /metrics body.
pub(crate) fn render(stats: &Stats, cache: &Cache, settings: &Settings) -> String {
    let mut reports = stats::general(stats, cache, settings);
    reports.push_str(&stats::slabs(cache));
    reports.push_str(&stats::items(cache, settings));
    let parsed = families::Reports::parse(&reports, &stats::settings(settings));
    let mut out = exposition::Exposition::default();
    parsed.emit(&mut out);
    out.finish()
}
