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
//! - `settings`: the command-line options every room reads.
//! - `numbers`: C's number parsers (`strtoul`, `strtod`, ...) as memcached
//!   calls them, for the protocol and the command line alike.

pub mod items;
pub mod numbers;
pub(crate) mod persist;
pub mod proto;
pub mod reactor;
pub mod repl;
pub mod settings;
pub mod slab;
pub mod stats;
