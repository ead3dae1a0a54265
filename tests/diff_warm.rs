//! `-e` (a memory file) against memcached 1.6.18: the stats a freshly
//! started restartable cache shows -- memcached preallocates a page for
//! every class and puts the rest of `-m` in the global pool, which shows in
//! `stats slabs` and `total_malloced` -- and the replies of a fixed script,
//! CAS values included. Restarts themselves are in
//! tests/python/test_warm_restart.py.

mod common;

use common::*;

fn names(reply: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(reply)
        .lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// Each server with its own memory file, removed afterwards.
struct WarmPair {
    oracle: Server,
    ours: Server,
    dir: std::path::PathBuf,
}

impl WarmPair {
    fn start(test: &str, extra: &[&str]) -> WarmPair {
        let dir = std::env::temp_dir().join(format!("diff-warm-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |kind: &str| dir.join(kind).to_string_lossy().into_owned();
        let (o, u) = (file("oracle.mem"), file("ours.mem"));
        let args = |path: &str| {
            let mut a = vec!["-m", "64", "-e"];
            a.push(Box::leak(path.to_string().into_boxed_str()));
            a.extend_from_slice(extra);
            a
        };
        WarmPair {
            oracle: Server::start(Kind::Oracle, &args(&o)),
            ours: Server::start(Kind::Ours, &args(&u)),
            dir,
        }
    }

    fn both(&self, cmd: &str) -> (Vec<u8>, Vec<u8>) {
        let s = Script::from(cmd);
        (self.oracle.run(&s).reply, self.ours.run(&s).reply)
    }
}

impl Drop for WarmPair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_memory_file_preallocates_like_memcached() {
    if !oracle_available() {
        return;
    }
    let pair = WarmPair::start("prealloc", &[]);
    let script = "set a 0 0 1\r\n1\r\nset b 3 0 3000\r\n".to_string()
        + &"x".repeat(3000)
        + "\r\ngets a b\r\nincr a 4\r\ngets a\r\n";
    let (o, u) = pair.both(&script);
    assert_eq!(String::from_utf8_lossy(&u), String::from_utf8_lossy(&o));
    let (o, u) = pair.both("stats slabs\r\n");
    assert_eq!(names(&u), names(&o), "stats slabs names");
    let keep = [
        "total_malloced",
        "active_slabs",
        "1:total_pages",
        "1:used_chunks",
        "5:total_pages",
        "39:total_pages",
    ];
    assert_eq!(filter_stats(&u, &keep), filter_stats(&o, &keep));
    let (o, u) = pair.both("stats\r\n");
    let keep = ["limit_maxbytes", "curr_items", "bytes", "total_items"];
    assert_eq!(filter_stats(&u, &keep), filter_stats(&o, &keep));
}

#[test]
fn stats_settings_names_the_memory_file() {
    if !oracle_available() {
        return;
    }
    let pair = WarmPair::start("settings", &[]);
    let (o, u) = pair.both("stats settings\r\n");
    let line = |r: &[u8]| filter_stats(r, &["memory_file"]);
    assert!(line(&o).contains("oracle.mem"));
    assert_eq!(line(&u), line(&o).replace("oracle.mem", "ours.mem"));
    // memcached lists settings this server leaves out (README, "Stats");
    // the rest must be the same names in the same order.
    let built = |n: &String| cfg!(feature = "tls") || !n.starts_with("ssl_");
    let want: Vec<String> = names(&o).into_iter().filter(built).collect();
    assert_eq!(names(&u), want);
}
