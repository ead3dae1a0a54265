//! Client bytes through the `-Y` authentication gate, then the text protocol.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| memcached::reactor::harness::fuzz::auth(data));
