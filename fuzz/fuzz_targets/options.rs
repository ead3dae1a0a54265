//! Arbitrary command lines through the library's option parser
//! (`src/options/`). Arguments are separated by NUL bytes, as they are in
//! `/proc/*/cmdline`.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use memcached::options;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut argv: Vec<&OsStr> = vec![OsStr::new("memcached")];
    argv.extend(data.split(|&b| b == 0).map(OsStr::from_bytes));
    match options::parse_args(&argv) {
        Ok(parsed) => assert!(parsed.settings.max_conns > 0 || parsed.settings.max_conns == 0),
        Err(exit) => assert!(exit.code >= 0),
    }
});
