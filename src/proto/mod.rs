//! Protocol parsers and reply writers: one file per protocol (`text`,
//! `meta`, `binary`, the `-Y` gate in `auth`) or command family (`tuning`,
//! `watch`), all built on `request`, which holds what they share with the
//! connection that runs them.

pub mod auth;
pub mod base64;
pub mod binary;
pub mod meta;
pub mod request;
pub mod text;
pub mod tokens;
pub mod tuning;
pub mod watch;
