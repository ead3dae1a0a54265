//! Persistence: the record format every change is written in, shared by
//! the append-only file and replication.

pub(crate) mod record;
