//! Persistence: the record format every change is written in, shared by
//! the append-only file and replication.

pub(crate) mod aof;
pub(crate) mod mutations;
pub(crate) mod record;
mod recover;
pub(crate) mod replay;
pub(crate) mod snapshot;
pub(crate) mod warm;
