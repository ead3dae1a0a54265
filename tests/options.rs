//! The command line, compared with the real memcached 1.6.18: for each bad
//! invocation both binaries must print the same stdout and stderr and exit
//! with the same code; `-h` must equal memcached's minus the TLS lines
//! (filtered from memcached's own output, so the expectation stays
//! honest). Both are started with argv[0] "memcached" because getopt
//! prefixes its messages with it.
//!
//! The oracle is `$MEMCACHED_ORACLE` or `/usr/bin/memcached`; without it the
//! comparisons are skipped. No case may start a server: a binary still
//! running after a few seconds is killed and the case fails.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const OURS: &str = env!("CARGO_BIN_EXE_memcached");
const TIMEOUT: Duration = Duration::from_secs(5);

fn oracle() -> Option<PathBuf> {
    let path = std::env::var_os("MEMCACHED_ORACLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/memcached"));
    if path.exists() {
        Some(path)
    } else {
        eprintln!("{} not found: comparison skipped", path.display());
        None
    }
}

/// A space-separated command line; `''` stands for an empty argument.
fn argv(spec: &str) -> Vec<&str> {
    spec.split(' ')
        .filter(|a| !a.is_empty())
        .map(|a| if a == "''" { "" } else { a })
        .collect()
}

#[derive(Debug, PartialEq)]
struct Run {
    /// The exit code, or 128 + signal (as a shell reports it).
    code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Run {
    fn render(&self) -> String {
        format!(
            "exit {}\n  stdout: {:?}\n  stderr: {:?}",
            self.code,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// Runs `binary` to completion; panics if it is still running (serving)
/// after `TIMEOUT`. The outputs are small enough for the pipe buffers.
fn run(binary: &std::path::Path, args: &[&str]) -> Run {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(binary)
        .arg0("memcached")
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} did not exit: it must not start a server",
                binary.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |pipe: Option<&mut dyn Read>| {
        let mut bytes = Vec::new();
        pipe.expect("piped").read_to_end(&mut bytes).expect("read");
        bytes
    };
    let stdout = read(child.stdout.as_mut().map(|p| p as &mut dyn Read));
    let stderr = read(child.stderr.as_mut().map(|p| p as &mut dyn Read));
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Run {
        code,
        stdout,
        stderr,
    }
}

/// Runs every case on both binaries; returns the report of mismatches.
fn compare(oracle: &std::path::Path, cases: &[&str]) -> Vec<String> {
    let mut mismatches = Vec::new();
    for spec in cases {
        let args = argv(spec);
        let (theirs, ours) = (run(oracle, &args), run(OURS.as_ref(), &args));
        if theirs != ours {
            mismatches.push(format!(
                "memcached {spec}\n memcached: {}\n ours:      {}",
                theirs.render(),
                ours.render()
            ));
        }
    }
    mismatches
}

fn assert_no_mismatch(mismatches: Vec<String>) {
    assert!(
        mismatches.is_empty(),
        "{} case(s) differ from memcached:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// Each fails during option parsing, before any root or start-up step.
const BAD_OPTIONS: &[&str] = &[
    // getopt's own complaints
    "-u root -q",
    "-u root -p",
    "--bogus",
    "--bogus=5",
    "--disable",
    "--disable=3",
    "--help=3",
    "--port",
    "--ver",
    "--=3",
    "--list=x",
    "-vq",
    "-v2",
    "-é",
    "-q -f 0.5",
    "-f 0.5 -q",
    "-f 0 -h",
    "-uroot -p0 -f 0.5",
    "-u root -p 0 foo -f 0.5",
    "-u root -p 0 - -f 0.5",
    "--verbose=3 --po=1 -f 0.5",
    // values
    "-f 0.5",
    "-f 1",
    "-f abc",
    "-f -inf",
    "-n 0",
    "-n abc",
    "-t 0",
    "-t -1",
    "-t 100 -n 0",
    "-R 0",
    "-R abc",
    "-c 0",
    "-c -5",
    "-c abc",
    "-B foo",
    "-B ''",
    "-D ''",
    "-I 2000m",
    "-I 1025m -m 4096",
    "-I 40m",
    "-I 1000",
    "-I 1k",
    "-I 2k",
    "-I 600k",
    "-I 1025k -m 4096",
    "-I 4096m",
    "-I 2048m",
    "-I -1m",
    "-I ''",
    "-I 3g",
    "-m 0",
    "-m 1g",
    "-m abc",
    "-N 0",
    "-N 8",
    "-t 65 -N 70",
    "-N x",
    "-N",
    "--napi-ids=-1",
    "--napi_ids=1",
    "-t 2 -N 3",
    "-p 70000",
    "-U 70000",
    "-U 5 -p 65536",
    "-S -B ascii",
    "-S -U 5",
    "-Y /nonexistent -B binary",
    "-S -Y /nonexistent -B binary",
    // -o
    "-o bogus",
    "-o bogus=5",
    "-o bogus,maxconns_fast",
    "-o maxconns_fast,bogus",
    "-o ,",
    "-o MAXCONNS_FAST",
    "-o proxy_config=x",
    "-o resp_obj_mem_limit,bogus",
    "-o hashpower",
    "-o hashpower=",
    "-o hashpower=11",
    "-o hashpower=33",
    "-o hashpower=abc",
    "-o slab_automove=3",
    "-o slab_automove=-1",
    "-o slab_automove_ratio",
    "-o slab_automove_ratio=0",
    "-o slab_automove_ratio=1.5",
    "-o slab_automove_window",
    "-o slab_automove_window=2",
    "-o tail_repair_time",
    "-o tail_repair_time=5",
    "-o hash_algorithm",
    "-o hash_algorithm=foo",
    "-o lru_crawler_sleep",
    "-o lru_crawler_sleep=-1",
    "-o lru_crawler_sleep=1000001",
    "-o lru_crawler_tocrawl",
    "-o lru_crawler_tocrawl=abc",
    "-o lru_crawler_tocrawl=-1",
    "-o lru_crawler_tocrawl=99999999999",
    // memcached's safe_strtoul looks for a minus sign in the whole value
    "-o lru_crawler_tocrawl=18446744073709551615\t-",
    "-o read_buf_mem_limit=18446744073709551615\t-",
    "-o hot_lru_pct",
    "-o hot_lru_pct=0",
    "-o hot_lru_pct=80",
    "-o warm_lru_pct=90",
    "-o hot_lru_pct=50,warm_lru_pct=40",
    "-o hot_max_factor",
    "-o hot_max_factor=0",
    "-o warm_max_factor=-1",
    "-o temporary_ttl",
    "-o temporary_ttl=5,no_lru_maintainer",
    "-o no_modern,temporary_ttl=5",
    "-o idle_timeout",
    "-o watcher_logbuf_size",
    "-o watcher_logbuf_size=x",
    "-o worker_logbuf_size=x",
    "-o worker_logbuf_size=10",
    "-o read_buf_mem_limit",
    "-o read_buf_mem_limit=-1",
    "-o read_buf_mem_limit=x",
    "-o slab_sizes=",
    "-o slab_sizes=10",
    "-o slab_sizes=abc",
    "-o slab_sizes=100-50",
    "-o slab_sizes=100-104",
    "-o slab_sizes=100-200-600000",
    "-n -5 -o slab_sizes=100",
    "-n 200 -o slab_sizes=100-300",
    "-o slab_sizes=100-200x",
    "-o slab_sizes=-100-50-",
    "-o slab_chunk_max=3000",
    "-o slab_chunk_max=2000000",
    "-o slab_chunk_max=-3",
    "-o slab_chunk_max=2097152 -I 4m",
    "-o no_chunked_items -I 512k",
    "-o slab_chunk_max=1048576,no_modern -I 512k",
    "-o slab_chunk_max=524288 -o no_chunked_items -I 512k",
];

#[test]
fn bad_options_fail_like_memcached() {
    let Some(oracle) = oracle() else { return };
    let sizes: Vec<String> = (0..70).map(|i| (100 + 16 * i).to_string()).collect();
    let too_many_classes = format!("-o slab_sizes={}", sizes.join("-"));
    let mut cases = BAD_OPTIONS.to_vec();
    cases.push(&too_many_classes);
    assert_no_mismatch(compare(&oracle, &cases));
}

/// Failures after parsing that do not depend on who runs them: the file
/// limit comes before the root check, and the ascii-auth UDP check after
/// it (as non-root `-u` is ignored, as root it switches to root).
#[test]
fn start_up_failures_match_memcached() {
    let Some(oracle) = oracle() else { return };
    let mut cases = vec![
        "-u root -p 0 -U 5 -Y /nonexistent",
        // Sockets that cannot be made: perror's line, then memcached's.
        "-u root -s /nonexistent/dir/mc.sock",
        "-u root -s /nonexistent/dir/mc.sock -p 1 -U 1",
        "-u root -p 1 -l 192.0.2.1",
        "-u root -p 0 -U 1 -l 192.0.2.1",
        "-u root -p 1 -l 127.0.0.1:x",
        "-u root -p 1 -l [::1",
    ];
    // Past the kernel's ceiling even root cannot raise the limit.
    let ceiling: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(u64::MAX);
    if ceiling < 2_000_000 {
        cases.push("-p 0 -c 2000000");
    }
    assert_no_mismatch(compare(&oracle, &cases));
}

#[test]
fn root_without_a_user_fails_like_memcached() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let Some(oracle) = oracle() else { return };
    let cases = ["-p 0", "-u '' -p 0", "-p 0 -u memcached-no-such-user"];
    assert_no_mismatch(compare(&oracle, &cases));
}

/// memcached's help text without what this server does not build: the
/// in a build without TLS, the TLS notes under `-l`, `-Z` and `ssl_*`. An
/// entry's continuation lines are indented by 26 spaces.
fn without_unbuilt_features(help: &[u8]) -> Vec<u8> {
    let tls = cfg!(feature = "tls");
    let dropped_entries: &[&str] = if tls { &[] } else { &["-Z,", "   - ssl_"] };
    let text = String::from_utf8_lossy(help);
    let mut kept = Vec::new();
    let mut in_dropped_entry = false;
    for line in text.split('\n') {
        let continuation = line.starts_with(&" ".repeat(26));
        if in_dropped_entry && continuation {
            continue;
        }
        in_dropped_entry = dropped_entries.iter().any(|head| line.starts_with(head));
        let tls_note = !tls && (line.contains("TLS/SSL is enabled") || line.contains("(-l notls:"));
        if !in_dropped_entry && !tls_note {
            kept.push(line);
        }
    }
    kept.join("\n").into_bytes()
}

/// Our help text without the blocks of options memcached does not have,
/// each under a "... (not in memcached):" header, which end it.
fn without_our_additions(help: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(help);
    let cut = text
        .find(" (not in memcached):\n")
        .and_then(|at| text[..at].rfind('\n').map(|nl| nl + 1))
        .unwrap_or(text.len());
    text[..cut].as_bytes().to_vec()
}

#[test]
fn help_is_memcached_help_without_unbuilt_features() {
    let Some(oracle) = oracle() else { return };
    let cases = [
        "-h",
        "--help",
        // memcached shows the values set so far as the defaults ...
        "-p 5 -c 7 -f 1.5 -a 644 -D x -t 8 -R 5 -b 10 -m 128 -n 64 -B binary -h",
        "-I 512k -o hashpower=20,slab_chunk_max=1024,hot_lru_pct=30,no_maxconns_fast -h",
        "-o lru_crawler_sleep=5,temporary_ttl=30,watcher_logbuf_size=128 -h",
        "-o worker_logbuf_size=32,hot_max_factor=0.125,warm_max_factor=3.14159 -h",
        "-f nan -m -1 -a -1 -h",
        "-t 100 -h",
        // ... and stops (exit 1) where a hard-coded default has changed.
        "-U 5 -h",
        "-o tail_repair_time=20 -h",
        "-o read_buf_mem_limit=5 -h",
        "-o idle_timeout=5 -h",
        "-o lru_crawler_tocrawl=5 -h",
    ];
    let mut mismatches = Vec::new();
    for spec in cases {
        let args = argv(spec);
        let mut theirs = run(&oracle, &args);
        theirs.stdout = without_unbuilt_features(&theirs.stdout);
        let mut ours = run(OURS.as_ref(), &args);
        ours.stdout = without_our_additions(&ours.stdout);
        if theirs != ours {
            mismatches.push(format!(
                "memcached {spec}\n memcached: {}\n ours:      {}",
                theirs.render(),
                ours.render()
            ));
        }
    }
    assert_no_mismatch(mismatches);
    // Without TLS the filter must have had something to drop, or it tests
    // nothing; with it, the help texts are compared whole.
    let full = run(&oracle, &["-h"]).stdout;
    let filtered = without_unbuilt_features(&full).len();
    assert_eq!(filtered < full.len(), !cfg!(feature = "tls"));
}

#[test]
fn version_is_memcached_version() {
    let Some(oracle) = oracle() else { return };
    assert_no_mismatch(compare(&oracle, &["-V", "--version", "-V -q", "-vV"]));
}

#[test]
fn license_is_our_own_notice() {
    let run = run(OURS.as_ref(), &["-i"]);
    assert_eq!(run.code, 0);
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.starts_with("memcached 1.6.18\n\n"), "{text}");
    assert!(text.contains("Rust"), "{text}");
    assert!(!text.contains("Danga"), "{text}");
}

/// Where this server deliberately differs: built without the `tls` feature
/// it has no TLS, and
/// it reports the `-o` values memcached crashes on.
#[test]
fn unbuilt_features_and_memcached_crashes_are_refused_clearly() {
    let cases: [(&str, i32, &str); 7] = [
        ("-Z", 64, "This server is not built with TLS support.\n"),
        (
            "--enable-ssl",
            64,
            "This server is not built with TLS support.\n",
        ),
        (
            "-o ssl_key=/x",
            64,
            "This server is not built with TLS support (-o ssl_key).\n",
        ),
        ("-o slab_chunk_max", 1, "Missing slab_chunk_max argument\n"),
        (
            "-o slab_chunk_max=abc",
            1,
            "could not parse argument to slab_chunk_max\n",
        ),
        (
            "-o slab_chunk_max=0",
            64,
            "slab_chunk_max (bytes: 0) must be greater than 0\n",
        ),
        ("-o slab_sizes", 1, "Missing slab_sizes argument\n"),
    ];
    // A build with TLS takes -Z and ssl_* (tests/python/test_tls.py).
    let tls_case = |spec: &str| spec.contains("ssl");
    for (spec, code, stderr) in cases {
        if cfg!(feature = "tls") && (tls_case(spec) || spec == "-Z") {
            continue;
        }
        let run = run(OURS.as_ref(), &argv(spec));
        assert_eq!(
            (run.code, String::from_utf8_lossy(&run.stderr).as_ref()),
            (code, stderr),
            "memcached {spec}"
        );
    }
}

/// memcached's test suite (t/lib/MemcachedTest.pm) starts every server with
/// `-o relaxed_privileges`, which only memcached's debug builds accept (the
/// release build, the oracle, refuses it as an illegal suboption). Ours
/// accepts it as a no-op, so the suite runs unmodified.
#[test]
fn relaxed_privileges_is_accepted_for_memcached_test_suite() {
    let run = run(OURS.as_ref(), &argv("-o relaxed_privileges,bogus"));
    assert_eq!(
        (run.code, String::from_utf8_lossy(&run.stderr).as_ref()),
        (1, "Illegal suboption \"bogus\"\n"),
    );
}
