//! Binary-protocol frames (`-B binary`): headers, extras, keys, values.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| memcached::reactor::harness::fuzz::binary(data));
