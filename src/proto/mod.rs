//! Protocol parsers and reply writers.

pub mod numbers;
