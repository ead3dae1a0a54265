//! Protocol parsers and reply writers: one file per protocol (`text`,
//! `meta`, `binary`, the `-Y` gate in `auth`) or command family (`tuning`,
//! `watch`), all built on `request`, which holds what they share with the
//! connection that runs them.

pub(crate) mod auth;
mod base64;
pub(crate) mod binary;
mod meta;
pub(crate) mod request;
pub(crate) mod text;
mod tokens;
mod tuning;
mod watch;
