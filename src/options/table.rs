//! Which options there are: memcached 1.6.18's `getopt_long` tables, in its
//! order, plus this server's own (the append-only file, replication, metrics).

use super::getopt::{HasArg, LongOpt, OptionTable, long};

pub(super) const OPTIONS: OptionTable = OptionTable {
    short: SHORT_OPTS,
    long: LONG_OPTS,
};

/// memcached's short option string
/// "a:AZp:s:U:m:Mc:khiVrvdl:u:P:f:n:t:D:LR:Cb:B:I:SFXWY:e:o:N:", plus our
/// `x:` (repcached's replication peer; memcached has no `-x`).
const SHORT_OPTS: &[u8] = b"a:AZp:s:U:m:Mc:khiVrvdl:u:P:f:n:t:D:LR:Cb:B:I:SFXWY:e:o:N:x:";

/// The values getopt returns for `--aof-file` and `--repl-port`: not
/// short option letters.
pub(super) const AOF_FILE: u8 = 1;
pub(super) const REPL_PORT: u8 = 0x80;
/// The value getopt returns for `--metrics-port`.
pub(super) const METRICS_PORT: u8 = 0x81;

/// memcached's `longopts`, in its order (the order of getopt's
/// "possibilities" list for an ambiguous abbreviation).
const LONG_OPTS: &[LongOpt] = &[
    long("unix-mask", HasArg::Required, b'a'),
    long("enable-shutdown", HasArg::No, b'A'),
    long("enable-ssl", HasArg::No, b'Z'),
    long("port", HasArg::Required, b'p'),
    long("unix-socket", HasArg::Required, b's'),
    long("udp-port", HasArg::Required, b'U'),
    long("memory-limit", HasArg::Required, b'm'),
    long("disable-evictions", HasArg::No, b'M'),
    long("conn-limit", HasArg::Required, b'c'),
    long("lock-memory", HasArg::No, b'k'),
    long("help", HasArg::No, b'h'),
    long("license", HasArg::No, b'i'),
    long("version", HasArg::No, b'V'),
    long("enable-coredumps", HasArg::No, b'r'),
    long("verbose", HasArg::Optional, b'v'),
    long("daemon", HasArg::No, b'd'),
    long("listen", HasArg::Required, b'l'),
    long("user", HasArg::Required, b'u'),
    long("pidfile", HasArg::Required, b'P'),
    long("slab-growth-factor", HasArg::Required, b'f'),
    long("slab-min-size", HasArg::Required, b'n'),
    long("threads", HasArg::Required, b't'),
    long("enable-largepages", HasArg::No, b'L'),
    long("max-reqs-per-event", HasArg::Required, b'R'),
    long("disable-cas", HasArg::No, b'C'),
    long("listen-backlog", HasArg::Required, b'b'),
    long("protocol", HasArg::Required, b'B'),
    long("max-item-size", HasArg::Required, b'I'),
    long("enable-sasl", HasArg::No, b'S'),
    long("disable-flush-all", HasArg::No, b'F'),
    long("disable-dumping", HasArg::No, b'X'),
    long("disable-watch", HasArg::No, b'W'),
    long("auth-file", HasArg::Required, b'Y'),
    long("memory-file", HasArg::Required, b'e'),
    long("extended", HasArg::Required, b'o'),
    long("napi-ids", HasArg::Required, b'N'),
    // Not memcached's: this server's append-only file and replication.
    // Never abbreviated, so every abbreviation means what it means to
    // memcached.
    long("aof-file", HasArg::Required, AOF_FILE).never_abbreviated(),
    long("repl-peer", HasArg::Required, b'x').never_abbreviated(),
    long("repl-port", HasArg::Required, REPL_PORT).never_abbreviated(),
    long("metrics-port", HasArg::Required, METRICS_PORT).never_abbreviated(),
];
