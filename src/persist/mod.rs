//! Persistence: the record format every change is written in, shared by
//! the append-only file and replication.

pub(crate) mod aof;
pub(crate) mod record;
mod recover;
pub(crate) mod warm;
