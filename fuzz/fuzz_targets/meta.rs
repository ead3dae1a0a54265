//! Meta commands (`mg`, `ms`, `md`, `ma`, `me`, `mn`) with arbitrary flags.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| memcached::reactor::harness::fuzz::meta(data));
