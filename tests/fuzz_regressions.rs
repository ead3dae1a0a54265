//! Replays the fuzz seeds (`fuzz/corpus/<target>/`) and every input that
//! once crashed a fuzz target (`fuzz/regressions/<target>/`) through the
//! same entry points the fuzzer calls, so `cargo test` on the stable
//! toolchain keeps them fixed. See fuzz/README.md.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() && path.file_name() != Some(OsStr::new(".gitkeep")) {
                let data = std::fs::read(&path).unwrap();
                found.push((path.display().to_string(), data));
            }
        }
    }
    found.sort();
    found
}

/// Runs each input, reporting every one that panics (not just the first).
fn replay(target: &str, run: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let all = inputs(target);
    assert!(!all.is_empty(), "no seeds for {target}");
    let failed: Vec<&String> = all
        .iter()
        .filter(|(_, data)| std::panic::catch_unwind(|| run(data)).is_err())
        .map(|(name, _)| name)
        .collect();
    assert!(failed.is_empty(), "{target}: {failed:?}");
}

#[test]
fn text_seeds_and_regressions() {
    replay("text", memcached::reactor::harness::fuzz::text);
}

#[test]
fn meta_seeds_and_regressions() {
    replay("meta", memcached::reactor::harness::fuzz::meta);
}

#[test]
fn binary_seeds_and_regressions() {
    replay("binary", memcached::reactor::harness::fuzz::binary);
}

#[test]
fn auth_seeds_and_regressions() {
    replay("auth", memcached::reactor::harness::fuzz::auth);
}

#[test]
fn watch_seeds_and_regressions() {
    replay("watch", memcached::reactor::harness::fuzz::watch);
}

#[test]
fn records_seeds_and_regressions() {
    replay("records", memcached::reactor::harness::fuzz::records);
}

#[test]
fn options_seeds_and_regressions() {
    replay("options", |data| {
        let mut argv: Vec<&OsStr> = vec![OsStr::new("memcached")];
        argv.extend(data.split(|&b| b == 0).map(OsStr::from_bytes));
        let _ = memcached::options::parse_args(&argv);
    });
}

/// The harness itself: a session's replies are what a socket would carry.
#[test]
fn feeder_replies_like_a_connection() {
    use memcached::reactor::harness::{Ending, Feeder};
    use memcached::settings::Settings;
    let mut f = Feeder::new(Settings::default()).unwrap();
    let mut out = Vec::new();
    let reads: [&[u8]; 3] = [b"set k 0 0 5\r\nhel", b"lo\r\nget k\r\n", b"quit\r\n"];
    assert_eq!(f.session(&reads, &mut out).unwrap(), Ending::Closed);
    assert_eq!(out, b"STORED\r\nVALUE k 0 5\r\nhello\r\nEND\r\n");
    // A second connection sees the first one's item.
    let mut out = Vec::new();
    assert_eq!(f.session(&[b"get k\r\n"], &mut out).unwrap(), Ending::Open);
    assert_eq!(out, b"VALUE k 0 5\r\nhello\r\nEND\r\n");
}

/// With an authfile, the harness's connections must authenticate first.
#[test]
fn feeder_authenticates_like_a_connection() {
    use memcached::authfile::Credentials;
    use memcached::reactor::harness::Feeder;
    use memcached::settings::Settings;
    let settings = Settings {
        auth_file: Some("inline".into()),
        auth: Some(Credentials::parse(b"u:p\n").unwrap()),
        ..Settings::default()
    };
    let mut f = Feeder::new(settings).unwrap();
    let mut out = Vec::new();
    let reads: [&[u8]; 2] = [b"get k\r\n", b"set x 0 0 3\r\nu p\r\nget k\r\n"];
    f.session(&reads, &mut out).unwrap();
    assert_eq!(out, b"CLIENT_ERROR unauthenticated\r\nSTORED\r\nEND\r\n");
}
