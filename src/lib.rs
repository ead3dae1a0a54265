#![warn(unreachable_pub)]
//! A memcached-compatible cache server: one thread, one epoll reactor, one
//! slab arena. Each module is a room with one concern:
//!
//! - `reactor`: epoll, listeners, the clock, connection state machines.
//! - `slab`: the preallocated `-m` arena, its pages and size classes.
//! - `items`: item layout inside slab chunks, the hash table, LRU, expiry.
//! - `proto`: request parsers and reply writers.
//! - `persist`: the append-only file, warm restart's metadata, and the
//!   record format every change is written in.
//! - `repl`: replication between a pair of servers.
//! - `stats`: counters and their reports.
//! - `metrics`: the Prometheus endpoint's exposition and HTTP requests.
//! - `logger`: the `watch` log streams, entries formatted as memcached's.
//! - `options`: the command line, parsed exactly as memcached parses it.
//! - `process`: limits, `-u`, `-d`, `-P`, `-k` and how the process exits.
//! - `settings`: the command-line options every room reads.
//! - `authfile`: the `-Y` file of `user:password` pairs, loaded and checked.
//! - `tls`: TLS for client connections (`-Z`), over the system's OpenSSL.
//! - `numbers`: C's number parsers (`strtoul`, `strtod`, ...) as memcached
//!   calls them, for the protocol and the command line alike.

pub mod authfile;
mod extstore;
mod items;
mod logger;
mod metrics;
mod numbers;
pub mod options;
mod persist;
pub mod process;
mod proto;
pub mod reactor;
mod repl;
pub mod settings;
mod slab;
mod stats;
mod sys;
pub mod tls;
