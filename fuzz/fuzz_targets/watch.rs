//! Client bytes (binary frames, or negotiated) with a `watch` of every
//! stream attached: the log formatting of arbitrary keys and outcomes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| memcached::reactor::harness::fuzz::watch(data));
