//! Arbitrary bytes from one client through the text protocol and the cache.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| memcached::reactor::harness::fuzz::text(data));
