//! Protocol parsers and reply writers.

pub mod auth;
pub mod base64;
pub mod binary;
pub mod meta;
pub mod request;
pub mod text;
pub mod tokens;
pub mod tuning;
pub mod watch;
