//! The parser against memcached 1.6.18's behaviour, case by case (the
//! comparison with the real binary is tests/options.rs).

use super::*;
use crate::process::{EX_USAGE, Exit};
use crate::settings::{HashAlgorithm, Protocol, Tuning, VERSION};

fn parse(args: &[&str]) -> Result<Parsed, Exit> {
    let mut argv = vec!["memcached"];
    argv.extend_from_slice(args);
    parse_args(&argv)
}

fn ok(args: &[&str]) -> Parsed {
    match parse(args) {
        Ok(parsed) => parsed,
        Err(exit) => panic!(
            "{args:?} failed ({}): {}",
            exit.code,
            String::from_utf8_lossy(&exit.stderr)
        ),
    }
}

fn settings(args: &[&str]) -> Settings {
    ok(args).settings
}

/// The exit code and stderr of a command line that must not start.
fn err(args: &[&str]) -> (i32, String) {
    match parse(args) {
        Ok(_) => panic!("{args:?} was accepted"),
        Err(exit) => (
            exit.code,
            String::from_utf8_lossy(&exit.stderr).into_owned(),
        ),
    }
}

fn stdout(args: &[&str]) -> (i32, String) {
    match parse(args) {
        Ok(_) => panic!("{args:?} was accepted"),
        Err(exit) => (
            exit.code,
            String::from_utf8_lossy(&exit.stdout).into_owned(),
        ),
    }
}

#[test]
fn no_options_gives_the_defaults() {
    let parsed = ok(&[]);
    let (s, d) = (&parsed.settings, Settings::default());
    assert_eq!(s.port, d.port);
    assert_eq!(s.max_bytes, d.max_bytes);
    assert_eq!(s.item_size_max, d.item_size_max);
    assert_eq!(s.slab_chunk_size_max, d.slab_chunk_size_max);
    assert_eq!(s.protocol, Protocol::Negotiating);
    assert!(s.listen.is_empty());
    assert_eq!(parsed.settings.tuning, Tuning::default());
    assert!(parsed.warnings.is_empty());
}

#[test]
fn verbose_counts_every_v() {
    assert_eq!(settings(&["-v"]).verbose, 1);
    assert_eq!(settings(&["-vv"]).verbose, 2);
    assert_eq!(settings(&["-vvv"]).verbose, 3);
    assert_eq!(
        settings(&["-v", "-v", "--verbose", "--verbose=x"]).verbose,
        4
    );
    assert_eq!(settings(&["-vvd"]).verbose, 2);
}

#[test]
fn short_options_take_attached_or_next_values() {
    assert_eq!(settings(&["-p1234"]).port, 1234);
    assert_eq!(settings(&["-p", "1234"]).port, 1234);
    assert_eq!(settings(&["-vp", "99"]).port, 99);
    assert_eq!(settings(&["-c", "10", "-m", "128"]).max_conns, 10);
    // A value is taken even when it looks like an option.
    assert_eq!(settings(&["-u", "-p"]).user.as_deref(), Some("-p"));
}

#[test]
fn long_options_and_abbreviations() {
    assert_eq!(settings(&["--port=1234"]).port, 1234);
    assert_eq!(settings(&["--port", "1234"]).port, 1234);
    assert_eq!(settings(&["--po=77"]).port, 77);
    assert_eq!(settings(&["--memory-limit=128"]).max_bytes, 128 << 20);
    assert!(!settings(&["--disable-cas"]).use_cas);
    assert_eq!(settings(&["--napi-ids=2"]).port, 11211);
}

#[test]
fn non_options_are_skipped_and_double_dash_ends_options() {
    assert_eq!(settings(&["foo", "-p", "5", "-"]).port, 5);
    assert_eq!(settings(&["--", "-f", "0.5"]).factor, 1.25);
}

#[test]
fn numbers_parse_like_atoi() {
    assert_eq!(settings(&["-p", "abc"]).port, 0);
    assert_eq!(settings(&["-p", " 12x"]).port, 12);
    assert_eq!(settings(&["-p", "+7"]).port, 7);
    assert_eq!(settings(&["-m", "1g", "-I", "512k"]).max_bytes, 1 << 20);
    assert_eq!(settings(&["-b", "-1"]).backlog, -1);
    assert_eq!(settings(&["-a", "644"]).access_mask, 0o644);
    assert_eq!(settings(&["-a", "9"]).access_mask, 0);
    // A UDP port above 65535 is kept as given (memcached's `stats settings`
    // prints it); the listener wraps it to 16 bits, as memcached's bind does.
    assert_eq!(settings(&["-p", "0", "-U", "70000"]).udp_port, 70000);
}

#[test]
fn listen_accumulates_and_splits() {
    let s = settings(&["-l", "127.0.0.1", "-l", "10.0.0.1:1,10.0.0.2;[::1]:3"]);
    assert_eq!(s.listen, ["127.0.0.1", "10.0.0.1:1", "10.0.0.2", "[::1]:3"]);
    // memcached drops a value that is a substring of earlier ones.
    let s = settings(&["-l", "10.0.0.10", "-l", "10.0.0.1", "-l", "10.0.0.10"]);
    assert_eq!(s.listen, ["10.0.0.10"]);
}

#[test]
fn item_size_suffixes_and_chunk_rules() {
    let s = settings(&["-I", "512k"]);
    assert_eq!(
        (s.item_size_max, s.slab_chunk_size_max),
        (512 << 10, 512 << 10)
    );
    let s = settings(&["-I", "2m"]);
    assert_eq!(
        (s.item_size_max, s.slab_chunk_size_max),
        (2 << 20, 512 << 10)
    );
    let s = settings(&["-I", "3M", "-m", "64"]);
    assert_eq!(s.item_size_max, 3 << 20);
    let s = settings(&["-I", "1048576"]);
    assert_eq!(s.item_size_max, 1 << 20);
    // An explicit slab_chunk_max survives -I above 1m.
    let s = settings(&["-I", "2m", "-o", "slab_chunk_max=1048576"]);
    assert_eq!(s.slab_chunk_size_max, 1 << 20);
    assert_eq!(
        settings(&["-o", "no_chunked_items"]).slab_chunk_size_max,
        1 << 20
    );
    assert_eq!(
        settings(&["-o", "no_chunked_items", "-I", "2m"]).slab_chunk_size_max,
        512 << 10
    );
    assert_eq!(
        settings(&["-o", "slab_chunk_max=16384"]).slab_chunk_size_max,
        16384
    );
}

#[test]
fn item_size_errors() {
    let usage = |m: &str| (EX_USAGE, format!("{m}\n"));
    assert_eq!(
        err(&["-I", "2k"]),
        usage("slab_chunk_max (bytes: 524288) cannot be larger than -I (item_size_max 2048)")
    );
    assert_eq!(
        err(&["-I", "1000"]),
        usage("Item max size cannot be less than 1024 bytes.")
    );
    assert_eq!(
        err(&["-I", "2048m"]),
        usage("Item max size cannot be less than 1024 bytes.")
    );
    assert_eq!(
        err(&["-I", ""]),
        usage("Item max size cannot be less than 1024 bytes.")
    );
    assert_eq!(
        err(&["-I", "40m"]),
        usage("Cannot set item size limit higher than 1/2 of memory max.")
    );
    assert_eq!(
        err(&["-I", "1025m", "-m", "4096"]),
        usage("Cannot set item size limit higher than a gigabyte.")
    );
    assert_eq!(
        err(&["-I", "600k"]),
        usage(
            "-I (item_size_max: 614400) must be evenly divisible by slab_chunk_max (bytes: 524288)"
        )
    );
    assert_eq!(
        err(&["-I", "4m", "-o", "slab_chunk_max=2097152"]),
        usage("slab_chunk_max (bytes: 2097152) must divide evenly into 1048576 (slab_page_size)")
    );
    assert_eq!(err(&["-o", "slab_chunk_max=-2"]).0, EX_USAGE);
    assert_eq!(err(&["-o", "slab_chunk_max=0"]).0, EX_USAGE);
}

#[test]
fn option_value_errors() {
    assert_eq!(
        err(&["-f", "0.5"]),
        (1, "Factor must be greater than 1\n".into())
    );
    assert_eq!(
        err(&["-f", "abc"]),
        (1, "Factor must be greater than 1\n".into())
    );
    assert!(settings(&["-f", "nan"]).factor.is_nan());
    assert_eq!(
        err(&["-c", "0"]),
        (1, "Maximum connections must be greater than 0\n".into())
    );
    assert_eq!(
        err(&["-t", "0"]),
        (1, "Number of threads must be greater than 0\n".into())
    );
    assert_eq!(
        err(&["-n", "0"]),
        (1, "Chunk size must be greater than 0\n".into())
    );
    assert_eq!(
        err(&["-R", "0"]).1,
        "Number of requests per event must be greater than 0\n"
    );
    assert_eq!(err(&["-D", ""]), (1, "No delimiter specified\n".into()));
    assert_eq!(
        err(&["-B", "foo"]),
        (
            EX_USAGE,
            "Invalid value for binding protocol: foo\n -- should be one of auto, binary, or ascii\n"
                .into()
        )
    );
    assert_eq!(
        err(&["-p", "70000"]),
        (EX_USAGE, "ERROR: Invalid port number 70000.\n".into())
    );
    assert_eq!(
        err(&["-U", "70000"]).1,
        "ERROR: Invalid port number 70000.\n"
    );
    assert_eq!(
        err(&["-N", "8"]).1,
        "Number of napi_ids(8) cannot be greater than number of threads(4)\n"
    );
    if cfg!(feature = "tls") {
        assert_eq!(
            err(&["-Z", "-p", "0"]),
            (
                EX_USAGE,
                "ERROR: You cannot enable SSL without a TCP port.\n".into()
            )
        );
    } else {
        assert_eq!(
            err(&["-Z"]),
            (
                EX_USAGE,
                "This server is not built with TLS support.\n".into()
            )
        );
    }
}

#[test]
fn first_error_wins_and_warnings_come_first() {
    assert_eq!(
        err(&["-f", "0.5", "-q"]).1,
        "Factor must be greater than 1\n"
    );
    assert_eq!(
        err(&["-q", "-f", "0.5"]).1,
        "memcached: invalid option -- 'q'\nIllegal argument \"?\"\n"
    );
    let (code, text) = err(&["-t", "100", "-n", "0"]);
    assert_eq!(code, 1);
    assert_eq!(
        text,
        "WARNING: Setting a high number of workerthreads is not recommended.\n \
         Set this value to the number of cores in your machine or less.\n\
         Chunk size must be greater than 0\n"
    );
    assert!(!ok(&["-t", "100"]).warnings.is_empty());
}

#[test]
fn getopt_errors() {
    let bad = |args: &[&str], first: &str| {
        assert_eq!(
            err(args),
            (1, format!("memcached: {first}\nIllegal argument \"?\"\n"))
        );
    };
    bad(&["-q"], "invalid option -- 'q'");
    bad(&["-p"], "option requires an argument -- 'p'");
    bad(&["--bogus=5"], "unrecognized option '--bogus=5'");
    bad(&["--help=3"], "option '--help' doesn't allow an argument");
    bad(&["--port"], "option '--port' requires an argument");
    bad(
        &["--ver"],
        "option '--ver' is ambiguous; possibilities: '--version' '--verbose'",
    );
    bad(
        &["--list=x"],
        "option '--list=x' is ambiguous; possibilities: '--listen' '--listen-backlog'",
    );
}

#[test]
fn extended_options_fill_settings() {
    let parsed = ok(&[
        "-o",
        "no_maxconns_fast,hashpower=20,no_hashexpand,idle_timeout=30,read_buf_mem_limit=2",
        "-o",
        "no_lru_crawler,lru_crawler_sleep=50,lru_crawler_tocrawl=9,track_sizes",
        "--extended=no_slab_reassign,slab_automove=2,tail_repair_time=60,hash_algorithm=xxh3",
    ]);
    let s = &parsed.settings;
    assert!(!s.maxconns_fast && !s.hash_expand && !s.lru_crawler && !s.slab_reassign);
    assert!(s.track_sizes);
    assert_eq!(s.hashpower_init, 20);
    assert_eq!(s.idle_timeout, 30);
    assert_eq!(s.read_buf_mem_limit, 2 << 20);
    assert_eq!((s.lru_crawler_sleep, s.lru_crawler_tocrawl), (50, 9));
    assert_eq!((s.slab_automove, s.tail_repair_time), (2, 60));
    assert_eq!(parsed.settings.tuning.hash_algorithm, HashAlgorithm::Xxh3);
    assert_eq!(settings(&["-o", "slab_automove"]).slab_automove, 1);
    // Order matters: the last word wins.
    assert!(settings(&["-o", "no_lru_crawler,lru_crawler"]).lru_crawler);
    assert!(ok(&["-o", ""]).warnings.is_empty());
}

#[test]
fn no_modern_restores_old_defaults() {
    let parsed = ok(&["-o", "no_modern"]);
    let s = &parsed.settings;
    assert_eq!(s.slab_chunk_size_max, s.slab_page_size);
    assert!(!s.slab_reassign && !s.maxconns_fast && !s.lru_crawler);
    assert_eq!(s.slab_automove, 0);
    assert_eq!(
        parsed.settings.tuning.hash_algorithm,
        HashAlgorithm::Jenkins
    );
}

#[test]
fn extended_option_errors() {
    let e = |o: &str| err(&["-o", o]);
    assert_eq!(e("bogus"), (1, "Illegal suboption \"bogus\"\n".into()));
    assert_eq!(
        e("maxconns_fast,bogus=5").1,
        "Illegal suboption \"bogus=5\"\n"
    );
    assert_eq!(e(",").1, "Illegal suboption \"\"\n");
    assert_eq!(e("hashpower").1, "Missing numeric argument for hashpower\n");
    assert_eq!(
        e("hashpower=abc").1,
        "Initial hashtable multiplier of 0 is too low\n"
    );
    assert!(
        e("hashpower=33")
            .1
            .starts_with("Initial hashtable multiplier of 33 is too high\n")
    );
    assert_eq!(
        e("slab_automove=3").1,
        "slab_automove must be between 0 and 2\n"
    );
    assert_eq!(
        e("tail_repair_time=5").1,
        "Cannot set tail_repair_time to less than 10 seconds\n"
    );
    assert_eq!(
        e("hash_algorithm=md5").1,
        "Unknown hash_algorithm option (jenkins, murmur3, xxh3)\n"
    );
    assert_eq!(
        e("lru_crawler_tocrawl=-1").1,
        "lru_crawler_tocrawl takes a numeric 32bit value\n"
    );
    assert_eq!(e("hot_lru_pct=80").1, "hot_lru_pct must be > 1 and < 80\n");
    assert_eq!(
        e("hot_lru_pct=50,warm_lru_pct=40"),
        (
            EX_USAGE,
            "hot_lru_pct + warm_lru_pct cannot be more than 80% combined\n".into()
        )
    );
    assert_eq!(
        e("temporary_ttl=5,no_lru_maintainer").1,
        "temporary_ttl requires lru_maintainer to be enabled\n"
    );
    assert_eq!(
        e("read_buf_mem_limit=x").1,
        "could not parse argument to read_buf_mem_limit\n"
    );
    assert_eq!(
        e("slab_chunk_max=abc").1,
        "could not parse argument to slab_chunk_max\n"
    );
    assert_eq!(
        e("slab_sizes=100-104").1,
        "slab size 104 must be at least 8 bytes larger than previous class\n"
    );
    assert_eq!(
        e("worker_logbuf_size=10").1,
        "slab size 10 is out of valid range\n"
    );
    assert_eq!(
        e("ext_path=/tmp/x:1G,ext_page_size=8").1,
        "Must specify ext_page_size before any ext_path arguments\n"
    );
    assert_eq!(
        e("ext_threads=x").1,
        "could not parse argument to ext_threads\n"
    );
    assert_eq!(e("ext_max_frag").1, "Missing ext_max_frag argument\n");
    assert_eq!(
        e("ext_path").1,
        "missing argument to ext_path, ie: ext_path=/d/file:5G\n"
    );
    assert_eq!(
        e("ext_path=/tmp/x").1,
        "must supply size to ext_path, ie: ext_path=/f/e:64m (M|G|T|P supported)\nfailed to parse ext_path argument\n"
    );
    if cfg!(feature = "tls") {
        assert_eq!(e("ssl_verify_mode=4").0, 1);
        assert_eq!(e("ssl_min_version").1, "Missing ssl_min_version argument\n");
    } else {
        assert_eq!(e("ssl_key=x").0, EX_USAGE);
    }
    assert_eq!(
        e("proxy_config=x").1,
        "Illegal suboption \"proxy_config=x\"\n"
    );
}

#[test]
fn slab_sizes_are_parsed() {
    let parsed = ok(&["-o", "slab_sizes=100-200--400"]);
    assert_eq!(parsed.settings.tuning.slab_sizes, Some(vec![100, 200, 400]));
    let (code, text) = err(&["-n", "-5", "-o", "slab_sizes=100"]);
    assert_eq!(
        (code, text.as_str()),
        (EX_USAGE, "slab size 100 is out of valid range\n")
    );
}

#[test]
fn deprecated_option_warns_and_goes_on() {
    let parsed = ok(&["-o", "resp_obj_mem_limit"]);
    assert_eq!(
        parsed.warnings,
        b"DEPRECATED: resp_obj_mem_limit no longer used. See read_buf_mem_limit,\n"
    );
}

#[test]
fn sasl_and_auth_file_choose_the_protocol() {
    assert_eq!(settings(&["-S"]).protocol, Protocol::Binary);
    assert_eq!(settings(&["-Y", "f"]).protocol, Protocol::Ascii);
    assert_eq!(settings(&["-S", "-Y", "f"]).protocol, Protocol::Ascii);
    assert_eq!(
        err(&["-S", "-B", "ascii"]).1,
        "ERROR: You cannot allow the ASCII protocol while using SASL.\n"
    );
    assert_eq!(
        err(&["-S", "-U", "5"]).1,
        "ERROR: Cannot enable UDP while using binary SASL authentication.\n"
    );
}

#[test]
fn udp_port_alone_moves_the_tcp_port() {
    let s = settings(&["-U", "5000"]);
    assert_eq!((s.port, s.udp_port), (5000, 5000));
    let s = settings(&["-U", "5000", "-p", "6000"]);
    assert_eq!((s.port, s.udp_port), (6000, 5000));
}

#[test]
fn simple_flags_and_strings() {
    let s = settings(&[
        "-A", "-d", "-r", "-M", "-k", "-C", "-F", "-X", "-S", "-u", "nobody", "-P", "/tmp/p", "-s",
        "/tmp/s", "-e", "/tmp/e", "-D", "#x", "-t", "8", "-R", "5",
    ]);
    assert!(s.shutdown_command && s.daemonize && s.max_core && s.lock_memory && s.sasl);
    assert!(!s.evict_to_free && !s.use_cas && !s.flush_enabled && !s.dump_enabled);
    assert_eq!(s.user.as_deref(), Some("nobody"));
    assert_eq!(s.pid_file.as_deref(), Some("/tmp/p"));
    assert_eq!(s.socket_path.as_deref(), Some("/tmp/s"));
    assert_eq!(s.memory_file.as_deref(), Some("/tmp/e"));
    assert_eq!((s.prefix_delimiter, s.detail_enabled), (b'#', true));
    assert_eq!((s.num_threads, s.reqs_per_event), (8, 5));
    assert!(!ok(&["-W"]).settings.tuning.watch_enabled);
}

#[test]
fn replication_options() {
    assert!(!settings(&[]).repl.enabled());
    assert_eq!(settings(&[]).repl.port, 11212);
    let s = settings(&["-x", "10.0.0.2:7000", "--repl-port", "7001"]);
    assert_eq!(
        (s.repl.peer.as_deref(), s.repl.port),
        (Some("10.0.0.2:7000"), 7001)
    );
    let s = settings(&["-o", "repl_peer=[::1]:9,repl_port=10", "-X"]);
    assert_eq!((s.repl.peer.as_deref(), s.repl.port), (Some("[::1]:9"), 10));
    // A bare -X is still memcached's.
    assert!(!s.dump_enabled);
    // repcached's command line: a number after -X is the replication port,
    // and dumping stays on.
    let s = settings(&["-d", "-x", "10.0.0.2", "-X", "12345", "-m", "64"]);
    assert_eq!(
        (s.repl.peer.as_deref(), s.repl.port),
        (Some("10.0.0.2"), 12345)
    );
    assert!(s.dump_enabled && s.daemonize && s.repl.enabled());
    // -X <port> alone turns replication on (the master of repcached).
    let s = settings(&["-X", "7000"]);
    assert!(s.repl.enabled() && s.repl.peer.is_none() && s.dump_enabled);
    assert_eq!(s.repl.port, 7000);
    // No number after -X: memcached's meaning, whatever follows.
    for line in [
        &["-X"][..],
        &["-X", "-p", "5"],
        &["-vX", "-m", "64"],
        &["-X", "x12"],
        &["--disable-dumping", "12"],
        &["-Xv", "12"],
    ] {
        let s = settings(line);
        assert!(!s.dump_enabled && !s.repl.enabled(), "{line:?}");
    }
    // -vX 9 ends its element with X: repcached's port too.
    assert_eq!(settings(&["-vX", "9"]).repl.port, 9);
    assert!(parse(&["-X", "0"]).is_err() && parse(&["-X", "70000"]).is_err());
    assert_eq!(
        settings(&["--repl-peer=peer"]).repl.peer.as_deref(),
        Some("peer")
    );
    for bad in [
        &["-x", "h:0"][..],
        &["-x", ":1"],
        &["-x", "h:x"],
        &["--repl-port", "0"],
        &["--repl-port", "65536"],
        &["-o", "repl_port"],
        // Ours are never abbreviated.
        &["--repl-p=5"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn metrics_options() {
    let s = settings(&["--metrics-port=9150"]);
    assert_eq!(s.metrics.port, 9150);
    let s = settings(&["-o", "metrics_port=9151,metrics_addr=127.0.0.2"]);
    assert_eq!(
        (s.metrics.port, s.metrics.addr.as_deref()),
        (9151, Some("127.0.0.2"))
    );
    assert_eq!(settings(&[]).metrics, Default::default());
    assert_eq!(
        err(&["--metrics-port=x"]),
        (64, "Invalid metrics port \"x\"\n".to_string())
    );
    // Never abbreviated: memcached's own prefixes keep their meaning.
    assert!(parse(&["--metrics"]).is_err());
}

#[test]
fn help_version_and_license() {
    let (code, text) = stdout(&["-h"]);
    assert_eq!(code, 0);
    assert!(text.starts_with(&format!("memcached {VERSION}\n-p, --port=<num>")));
    assert_eq!(text.contains("TLS"), cfg!(feature = "tls"));
    assert!(
        text.contains(
            "   - ext_page_size:       size in megabytes of storage pages. (default: 64)\n"
        )
    );
    // memcached's text ends there; blocks of our own options follow.
    let last =
        "-N, --napi_ids            number of napi ids. see doc/napi_ids.txt for more details\n";
    let theirs_end = text.find(last).unwrap() + last.len();
    let next_line = text[theirs_end..].lines().next().unwrap();
    assert!(next_line.ends_with(" (not in memcached):"), "{next_line}");
    assert!(text.contains("Replication (not in memcached):\n-x, --repl-peer="));
    assert!(text.contains("- repl_port:           the same as --repl-port\n"));
    let after_repl = if cfg!(feature = "tls") {
        "carry (default: the host of -x)\nOperations (not in memcached):\n"
    } else {
        "- repl_port:           the same as --repl-port\nOperations (not in memcached):\n"
    };
    assert!(text.contains(after_repl));
    assert!(text.contains("    --metrics-port=<num>  serve GET /metrics"));
    assert!(text.ends_with("on the metrics port as /metrics.\n"));
    assert!(text.contains("more details\nPersistence (not in memcached):\n"));
    // The current values are shown, as memcached does.
    assert!(
        stdout(&["-c", "7", "-h"])
            .1
            .contains("connections (default: 7)\n")
    );
    let (code, text) = stdout(&["-U", "5", "-h"]);
    assert_eq!(code, 1);
    assert!(text.ends_with(
        "Default value of [udp-port] has changed. Modify the help text and default value check.\n"
    ));
    assert_eq!(stdout(&["-V"]), (0, format!("memcached {VERSION}\n")));
    let (code, text) = stdout(&["--license"]);
    assert_eq!(code, 0);
    assert!(text.contains("Rust"));
    // -h acts when reached: an earlier error wins.
    assert_eq!(err(&["-f", "0", "-h"]).1, "Factor must be greater than 1\n");
}
