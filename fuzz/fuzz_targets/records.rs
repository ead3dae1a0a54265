//! Persistence and replication records: the decoder, then replay into a cache.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| memcached::reactor::harness::fuzz::records(data));
