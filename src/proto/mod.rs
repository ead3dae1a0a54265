//! Protocol parsers and reply writers.

pub mod numbers;
pub mod text;
pub mod tokens;
